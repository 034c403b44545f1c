/*
 * Unit tests for src/hpack_count.c: each representation of RFC 7541 section 6 counted (or not,
 * for table size updates), prefix integers with continuation bytes (the RFC's C.1 examples),
 * Huffman-flagged strings skipped by length, the early stop at limit + 1 that the HTTP/2 guard
 * relies on, and every way a block can end inside a representation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "ratelimitd/error.h"
#include "ratelimitd/hpack_count.h"

#define NO_LIMIT (SIZE_MAX - 1)

static size_t count_ok(const uint8_t *src, size_t len, size_t limit)
{
    size_t count = 12345;
    assert_int_equal(rl_hpack_count_fields(src, len, limit, &count), RL_OK);
    return count;
}

static void assert_malformed(const uint8_t *src, size_t len, size_t fields_before)
{
    size_t count = 12345;
    assert_int_equal(rl_hpack_count_fields(src, len, NO_LIMIT, &count), RL_ERR_INVALID);
    assert_int_equal(count, fields_before);
}

static void test_empty_block_has_no_fields(void **state)
{
    (void)state;
    assert_int_equal(count_ok((const uint8_t *)"", 0, NO_LIMIT), 0);
}

static void test_request_block_counts_every_representation(void **state)
{
    (void)state;
    /* RFC 7541 C.3.1 (:method GET, :scheme http, :path /, :authority www.example.com), then a
     * literal never indexed with a new name (x-api-key: k) */
    static const uint8_t block[] = {0x82, 0x86, 0x84, 0x41, 0x0f, 'w', 'w', 'w', '.', 'e',  'x',
                                    'a',  'm',  'p',  'l',  'e',  '.', 'c', 'o', 'm', 0x10, 0x09,
                                    'x',  '-',  'a',  'p',  'i',  '-', 'k', 'e', 'y', 0x01, 'k'};
    assert_int_equal(count_ok(block, sizeof(block), NO_LIMIT), 5);
}

static void test_table_size_updates_are_not_fields(void **state)
{
    (void)state;
    /* size 0, size 4096 (31 + 4065: 0x3f 0xe1 0x1f), then one indexed field */
    static const uint8_t block[] = {0x20, 0x3f, 0xe1, 0x1f, 0xbe};
    assert_int_equal(count_ok(block, sizeof(block), NO_LIMIT), 1);
    assert_int_equal(count_ok(block, 4, NO_LIMIT), 0);
}

static void test_prefix_integers_with_continuation_bytes(void **state)
{
    (void)state;
    /* RFC 7541 C.1.2: 1337 with a 5-bit prefix is 31 + (0x9a & 0x7f) + (0x0a << 7); here as a
     * table size update, then a literal without indexing whose name index (4-bit prefix, 15 +
     * 43 = 58) needs a continuation byte and whose value is 3 bytes */
    static const uint8_t block[] = {0x3f, 0x9a, 0x0a, 0x0f, 0x2b, 0x03, 'a', 'b', 'c'};
    assert_int_equal(count_ok(block, sizeof(block), NO_LIMIT), 1);
}

static void test_huffman_strings_are_skipped_by_length(void **state)
{
    (void)state;
    /* incremental indexing with a new Huffman-coded name of 3 bytes and value of 2 bytes: the
     * bytes themselves are never decoded, so any will do */
    static const uint8_t block[] = {0x40, 0x83, 0xff, 0xff, 0xff, 0x82, 0x00, 0x00, 0x82};
    assert_int_equal(count_ok(block, sizeof(block), NO_LIMIT), 2);
}

static void test_long_string_length(void **state)
{
    (void)state;
    /* a value of 200 bytes: 127 + 73 in the 7-bit prefix */
    uint8_t block[3 + 200 + 1];
    block[0] = 0x01; /* literal without indexing, name :authority */
    block[1] = 0x7f;
    block[2] = 73;
    memset(block + 3, 'v', 200);
    block[203] = 0x82;
    assert_int_equal(count_ok(block, sizeof(block), NO_LIMIT), 2);
    assert_malformed(block, 202, 0);
}

static void test_stops_at_limit_plus_one(void **state)
{
    (void)state;
    uint8_t bomb[5000];
    memset(bomb, 0xbe, sizeof(bomb)); /* one byte per field, as an HPACK bomb sends them */
    assert_int_equal(count_ok(bomb, sizeof(bomb), 104), 105);
    assert_int_equal(count_ok(bomb, 104, 104), 104);
    assert_int_equal(count_ok(bomb, 105, 104), 105);
    assert_int_equal(count_ok(bomb, sizeof(bomb), NO_LIMIT), 5000);
    /* a malformed tail after the bound is not read */
    bomb[200] = 0x7f;
    bomb[201] = 0xff;
    assert_int_equal(count_ok(bomb, 202, 104), 105);
}

static void test_block_ending_inside_a_representation_is_malformed(void **state)
{
    (void)state;
    static const uint8_t indexed_cut[] = {0x82, 0xff};                      /* integer needs more bytes */
    static const uint8_t name_missing[] = {0x82, 0x40};                     /* new name, no name string */
    static const uint8_t name_cut[] = {0x40, 0x05, 'a', 'b'};               /* 5-byte name, 2 sent */
    static const uint8_t value_missing[] = {0x10, 0x01, 'a'};               /* name, no value */
    static const uint8_t value_cut[] = {0x0f, 0x2b, 0x04, 'a'};             /* 4-byte value, 1 sent */
    static const uint8_t update_cut[] = {0x82, 0x82, 0x3f};                 /* size update cut */
    static const uint8_t overlong[] = {0xff, 0x80, 0x80, 0x80, 0x80, 0x01}; /* over 28 bits */
    static const uint8_t huge_length[] = {0x00, 0x01, 'a', 0x7f, 0xff, 0xff, 0xff, 0x7f};
    assert_malformed(indexed_cut, sizeof(indexed_cut), 1);
    assert_malformed(name_missing, sizeof(name_missing), 1);
    assert_malformed(name_cut, sizeof(name_cut), 0);
    assert_malformed(value_missing, sizeof(value_missing), 0);
    assert_malformed(value_cut, sizeof(value_cut), 0);
    assert_malformed(update_cut, sizeof(update_cut), 2);
    assert_malformed(overlong, sizeof(overlong), 0);
    assert_malformed(huge_length, sizeof(huge_length), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_block_has_no_fields),
        cmocka_unit_test(test_request_block_counts_every_representation),
        cmocka_unit_test(test_table_size_updates_are_not_fields),
        cmocka_unit_test(test_prefix_integers_with_continuation_bytes),
        cmocka_unit_test(test_huffman_strings_are_skipped_by_length),
        cmocka_unit_test(test_long_string_length),
        cmocka_unit_test(test_stops_at_limit_plus_one),
        cmocka_unit_test(test_block_ending_inside_a_representation_is_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
