/*
 * Unit tests for src/apikey.c: key syntax at its boundaries, SipHash-2-4-128 against the
 * reference vectors (veorq/SipHash vectors.h: key 00..0f, message 00 01 .. len-1), the
 * secret derivation, base64url, and the exact memcached key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "ratelimitd/apikey.h"
#include "ratelimitd/error.h"

static void fill(char *buf, size_t len, char c)
{
    memset(buf, c, len);
}

static void test_empty_key_is_missing(void **state)
{
    (void)state;
    assert_int_equal(rl_apikey_validate("", 0), RL_ERR_KEY_MISSING);
    assert_int_equal(rl_apikey_validate(NULL, 0), RL_ERR_KEY_MISSING);
}

static void test_key_length_bounds_1_and_256_ok_257_invalid(void **state)
{
    (void)state;
    char key[RL_APIKEY_MAX_LEN + 1];
    fill(key, sizeof(key), 'k');
    assert_int_equal(rl_apikey_validate(key, 1), RL_OK);
    assert_int_equal(rl_apikey_validate(key, 256), RL_OK);
    assert_int_equal(rl_apikey_validate(key, 257), RL_ERR_KEY_INVALID);
}

static void test_key_bytes_outside_0x21_0x7e_are_invalid(void **state)
{
    (void)state;
    static const struct {
        uint8_t byte;
        int expected;
    } cases[] = {
        {0x20, RL_ERR_KEY_INVALID},
        {0x21, RL_OK},
        {0x7e, RL_OK},
        {0x7f, RL_ERR_KEY_INVALID},
        {0x00, RL_ERR_KEY_INVALID},
        {0xff, RL_ERR_KEY_INVALID},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        /* the byte alone, and in the middle of otherwise good keys (first and last position too) */
        char key[5] = {'a', 'b', (char)cases[i].byte, 'c', 'd'};
        assert_int_equal(rl_apikey_validate(key + 2, 1), cases[i].expected);
        assert_int_equal(rl_apikey_validate(key, sizeof(key)), cases[i].expected);
        assert_int_equal(rl_apikey_validate(key + 2, 3), cases[i].expected);
        assert_int_equal(rl_apikey_validate(key, 3), cases[i].expected);
    }
}

static void test_validation_reads_only_len_bytes(void **state)
{
    (void)state;
    /* not NUL-terminated, followed by a bad byte that must not be looked at */
    char key[4] = {'a', 'b', 'c', ' '};
    assert_int_equal(rl_apikey_validate(key, 3), RL_OK);
}

static const rl_hash_secret_t reference_key = {
    {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f}};

static void check_vector(size_t len, const uint8_t expected[16])
{
    char msg[64] = {0};
    for (size_t i = 0; i != len; ++i)
        msg[i] = (char)i;
    rl_keyhash_t out;
    rl_apikey_hash(&reference_key, msg, len, &out);
    assert_memory_equal(out.bytes, expected, 16);
}

static void test_siphash_2_4_128_matches_reference_vectors(void **state)
{
    (void)state;
    /* vectors_sip128[len] from veorq/SipHash vectors.h */
    static const uint8_t v0[16] = {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6,
                                   0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93};
    static const uint8_t v1[16] = {0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44,
                                   0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc, 0x45};
    static const uint8_t v7[16] = {0xa1, 0xf1, 0xeb, 0xbe, 0xd8, 0xdb, 0xc1, 0x53,
                                   0xc0, 0xb8, 0x4a, 0xa6, 0x1f, 0xf0, 0x82, 0x39};
    static const uint8_t v8[16] = {0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61,
                                   0x0f, 0x83, 0xe2, 0x64, 0xf3, 0x14, 0x97, 0xb4};
    static const uint8_t v15[16] = {0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11,
                                    0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf, 0xc3, 0xd9};
    static const uint8_t v16[16] = {0x6e, 0xe2, 0xa4, 0xca, 0x67, 0xb0, 0x54, 0xbb,
                                    0xfd, 0x33, 0x15, 0xbf, 0x85, 0x23, 0x05, 0x77};
    static const uint8_t v63[16] = {0x51, 0x50, 0xd1, 0x77, 0x2f, 0x50, 0x83, 0x4a,
                                    0x50, 0x3e, 0x06, 0x9a, 0x97, 0x3f, 0xbd, 0x7c};
    check_vector(0, v0);
    check_vector(1, v1);
    check_vector(7, v7);
    check_vector(8, v8);
    check_vector(15, v15);
    check_vector(16, v16);
    check_vector(63, v63);
}

static void test_secret_is_sha256_prefix_of_text(void **state)
{
    (void)state;
    static const uint8_t sha_empty[16] = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14,
                                          0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24};
    static const uint8_t sha_abc[16] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                        0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23};
    rl_hash_secret_t secret;
    rl_hash_secret_init(&secret, "", 0);
    assert_memory_equal(secret.bytes, sha_empty, 16);
    /* only `len` bytes count */
    rl_hash_secret_init(&secret, "abcdef", 3);
    assert_memory_equal(secret.bytes, sha_abc, 16);
}

static void test_secret_changes_the_hash(void **state)
{
    (void)state;
    rl_hash_secret_t a, b, a_again;
    rl_hash_secret_init(&a, "secret-one", 10);
    rl_hash_secret_init(&b, "secret-two", 10);
    rl_hash_secret_init(&a_again, "secret-one", 10);
    rl_keyhash_t ha, hb, ha_again, other_key;
    rl_apikey_hash(&a, "premium-key-1", 13, &ha);
    rl_apikey_hash(&b, "premium-key-1", 13, &hb);
    rl_apikey_hash(&a_again, "premium-key-1", 13, &ha_again);
    rl_apikey_hash(&a, "premium-key-2", 13, &other_key);
    assert_memory_not_equal(ha.bytes, hb.bytes, 16);
    assert_memory_equal(ha.bytes, ha_again.bytes, 16);
    assert_memory_not_equal(ha.bytes, other_key.bytes, 16);
}

static void check_encoding(const uint8_t bytes[16], const char *expected)
{
    rl_keyhash_t hash;
    memcpy(hash.bytes, bytes, 16);
    char out[RL_KEYHASH_ENCODED_LEN + 1];
    out[RL_KEYHASH_ENCODED_LEN] = '#';
    rl_keyhash_encode(&hash, out);
    assert_memory_equal(out, expected, RL_KEYHASH_ENCODED_LEN);
    assert_int_equal(out[RL_KEYHASH_ENCODED_LEN], '#'); /* exactly 22 bytes, no NUL */
}

static void test_keyhash_encodes_as_base64url_without_padding(void **state)
{
    (void)state;
    static const uint8_t counting[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    static const uint8_t url_chars[16] = {0xfb, 0xff, 0xbf, 0xfb, 0xff, 0xbf, 0xfb, 0xff,
                                          0xbf, 0xfb, 0xff, 0xbf, 0xfb, 0xff, 0xbf, 0xff};
    static const uint8_t last_byte[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfc};
    check_encoding(counting, "AAECAwQFBgcICQoLDA0ODw");
    check_encoding(url_chars, "-_-_-_-_-_-_-_-_-_-__w"); /* '-' and '_', never '+' or '/' */
    check_encoding(last_byte, "AAAAAAAAAAAAAAAAAAAA_A");
}

static const rl_keyhash_t counting_hash = {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}};
#define COUNTING_MCKEY "rl:AAECAwQFBgcICQoLDA0ODw:1795412345"

static void test_mckey_is_prefix_hash_colon_window(void **state)
{
    (void)state;
    char buf[RL_MCKEY_MAX_LEN + 1];
    memset(buf, '#', sizeof(buf));
    size_t len = rl_mckey_format(buf, RL_MCKEY_MAX_LEN, "rl:", 3, &counting_hash, 1795412345);
    assert_int_equal(len, strlen(COUNTING_MCKEY));
    assert_memory_equal(buf, COUNTING_MCKEY, len);
    assert_int_equal(buf[len], '#'); /* no NUL written */
    /* the group that places the key on a node: everything before ":<window>" */
    assert_int_equal(rl_mckey_group_len(3), strlen("rl:AAECAwQFBgcICQoLDA0ODw"));
    assert_int_equal(buf[rl_mckey_group_len(3)], ':');
}

static void test_mckey_with_empty_prefix_and_extreme_windows(void **state)
{
    (void)state;
    char buf[RL_MCKEY_MAX_LEN];
    size_t len = rl_mckey_format(buf, sizeof(buf), NULL, 0, &counting_hash, 0);
    assert_int_equal(len, 24);
    assert_memory_equal(buf, "AAECAwQFBgcICQoLDA0ODw:0", len);
    len = rl_mckey_format(buf, sizeof(buf), "p", 1, &counting_hash, INT64_MAX);
    assert_int_equal(len, 1 + 22 + 1 + 19);
    assert_memory_equal(buf + 24, "9223372036854775807", 19);
    len = rl_mckey_format(buf, sizeof(buf), "p", 1, &counting_hash, INT64_MIN);
    assert_int_equal(len, 1 + 22 + 1 + 20);
    assert_memory_equal(buf + 24, "-9223372036854775808", 20);
}

static void test_mckey_too_small_buffer_returns_0_and_writes_nothing(void **state)
{
    (void)state;
    size_t need = strlen(COUNTING_MCKEY);
    char buf[64];
    memset(buf, '#', sizeof(buf));
    assert_int_equal(rl_mckey_format(buf, need - 1, "rl:", 3, &counting_hash, 1795412345), 0);
    for (size_t i = 0; i != sizeof(buf); ++i)
        assert_int_equal(buf[i], '#');
    assert_int_equal(rl_mckey_format(buf, 0, "rl:", 3, &counting_hash, 1795412345), 0);
    /* a prefix longer than the whole buffer must not wrap the length arithmetic */
    assert_int_equal(rl_mckey_format(buf, sizeof(buf), "rl:", SIZE_MAX, &counting_hash, 1), 0);
    assert_int_equal(rl_mckey_format(buf, need, "rl:", 3, &counting_hash, 1795412345), need);
}

static void test_longest_prefix_fits_max_len(void **state)
{
    (void)state;
    char prefix[64], buf[RL_MCKEY_MAX_LEN];
    fill(prefix, sizeof(prefix), 'p');
    assert_int_equal(rl_mckey_format(buf, sizeof(buf), prefix, sizeof(prefix), &counting_hash, INT64_MIN),
                     RL_MCKEY_MAX_LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_key_is_missing),
        cmocka_unit_test(test_key_length_bounds_1_and_256_ok_257_invalid),
        cmocka_unit_test(test_key_bytes_outside_0x21_0x7e_are_invalid),
        cmocka_unit_test(test_validation_reads_only_len_bytes),
        cmocka_unit_test(test_siphash_2_4_128_matches_reference_vectors),
        cmocka_unit_test(test_secret_is_sha256_prefix_of_text),
        cmocka_unit_test(test_secret_changes_the_hash),
        cmocka_unit_test(test_keyhash_encodes_as_base64url_without_padding),
        cmocka_unit_test(test_mckey_is_prefix_hash_colon_window),
        cmocka_unit_test(test_mckey_with_empty_prefix_and_extreme_windows),
        cmocka_unit_test(test_mckey_too_small_buffer_returns_0_and_writes_nothing),
        cmocka_unit_test(test_longest_prefix_fits_max_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
