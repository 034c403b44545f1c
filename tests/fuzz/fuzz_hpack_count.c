/*
 * libFuzzer target for the HPACK field counter (src/hpack_count.c), which reads header blocks
 * straight from HTTP/2 clients. Two checks per input:
 *  - the input as a block: the walk stays inside it (ASan), and stopping early agrees with the
 *    full count (a bound of L gives min(count, L + 1));
 *  - the input as a recipe: its bytes drive an encoder of RFC 7541 representations (indexed,
 *    the three literal kinds, table size updates, strings of 0-300 bytes, integers that need
 *    continuation bytes), and the counter must find exactly the fields encoded, and call every
 *    cut inside the last representation malformed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ratelimitd/error.h"
#include "ratelimitd/hpack_count.h"

/* Not assert(): a build with NDEBUG would check nothing. */
#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            abort();                                                                                                   \
    } while (0)

#define BLOCK_MAX 65536
#define NO_LIMIT (SIZE_MAX - 1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const uint8_t *data;
    size_t size, pos;
} recipe_t;

static unsigned take(recipe_t *r)
{
    return r->pos < r->size ? r->data[r->pos++] : 0;
}

/* RFC 7541 5.1, with `high` in the bits above the prefix. */
static size_t put_int(uint8_t *out, unsigned bits, uint8_t high, size_t value)
{
    size_t max = ((size_t)1 << bits) - 1, n = 0;
    if (value < max) {
        out[n++] = (uint8_t)(high | value);
        return n;
    }
    out[n++] = (uint8_t)(high | max);
    for (value -= max; value >= 0x80; value >>= 7)
        out[n++] = (uint8_t)(0x80 | (value & 0x7f));
    out[n++] = (uint8_t)value;
    return n;
}

static size_t put_string(uint8_t *out, recipe_t *r)
{
    size_t len = take(r) + (take(r) & 1 ? 45 : 0); /* 0-300: one- and two-byte lengths */
    uint8_t huffman = take(r) & 1 ? 0x80 : 0;
    size_t n = put_int(out, 7, huffman, len);
    memset(out + n, 'a' + (int)(len % 26), len);
    return n + len;
}

/* One representation at out; *fields counts the header fields among them. */
static size_t put_representation(uint8_t *out, recipe_t *r, size_t *fields)
{
    unsigned kind = take(r) % 5;
    size_t index = 0, n;
    /* 0 (a new name), up to 4095, or up to 2^27 - 1: four continuation bytes, the most a valid
     * integer may have */
    unsigned width = take(r) % 4;
    for (unsigned i = 0; width != 0 && i != (width == 3 ? 4u : 2u); ++i)
        index = index << 8 | take(r);
    index &= width == 3 ? ((size_t)1 << 27) - 1 : 4095;
    switch (kind) {
    case 0: /* indexed */
        ++*fields;
        return put_int(out, 7, 0x80, index);
    case 1: /* dynamic table size update */
        return put_int(out, 5, 0x20, index);
    default: /* literal: with incremental indexing, without indexing, never indexed */
        ++*fields;
        n = kind == 2 ? put_int(out, 6, 0x40, index) : put_int(out, 4, kind == 3 ? 0x00 : 0x10, index);
        if (index == 0)
            n += put_string(out + n, r);
        return n + put_string(out + n, r);
    }
}

static void check_as_block(const uint8_t *data, size_t size)
{
    size_t all, bounded;
    if (rl_hpack_count_fields(data, size, NO_LIMIT, &all) != RL_OK)
        return;
    size_t limits[] = {0, 1, all / 2, all};
    for (size_t i = 0; i != sizeof(limits) / sizeof(limits[0]); ++i) {
        CHECK(rl_hpack_count_fields(data, size, limits[i], &bounded) == RL_OK);
        CHECK(bounded == (all < limits[i] + 1 ? all : limits[i] + 1));
    }
}

static void check_as_recipe(const uint8_t *data, size_t size)
{
    static uint8_t block[BLOCK_MAX];
    recipe_t r = {data, size, 0};
    size_t len = 0, last = 0, fields = 0, counted;
    /* a representation takes at most an index of 5 bytes and 2 strings of 2 + 300 bytes */
    while (r.pos < r.size && len + 700 < sizeof(block)) {
        last = len;
        len += put_representation(block + len, &r, &fields);
    }
    CHECK(rl_hpack_count_fields(block, len, NO_LIMIT, &counted) == RL_OK);
    CHECK(counted == fields);
    /* the walk reaches `last` whatever follows it, so the last representation's cuts are checked
     * alone: walking the whole prefix again for each cut made the target ~10x slower */
    for (size_t cut = last + 1; cut < len; ++cut)
        CHECK(rl_hpack_count_fields(block + last, cut - last, NO_LIMIT, &counted) == RL_ERR_INVALID);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_as_block(data, size);
    check_as_recipe(data, size);
    return 0;
}
