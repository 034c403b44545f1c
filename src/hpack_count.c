/*
 * HPACK representations are self-delimiting: a prefix integer, then for literals up to two
 * length-prefixed strings. Walking them needs no table, so the count is exact for any block
 * and costs a few byte loads per field.
 */
#include <stdbool.h>
#include "ratelimitd/error.h"
#include "ratelimitd/hpack_count.h"

/* h2o 2.2.5's decoder (decode_int in lib/http2/hpack.c) also gives up after 4 continuation bytes.
 * The two must agree: a block this walk calls malformed goes to h2o uncounted, so if h2o accepted
 * a longer integer, a bomb built with them would be decoded in full. */
#define MAX_INT_CONTINUATIONS 4

/* An integer of RFC 7541 5.1 with a `bits`-bit prefix in the byte at *pos (which exists). */
static bool read_int(const uint8_t *src, size_t len, size_t *pos, unsigned bits, size_t *value)
{
    size_t prefix_max = ((size_t)1 << bits) - 1;
    size_t v = src[(*pos)++] & prefix_max;
    if (v < prefix_max) {
        *value = v;
        return true;
    }
    for (unsigned i = 0; i != MAX_INT_CONTINUATIONS && *pos != len; ++i) {
        uint8_t b = src[(*pos)++];
        v += (size_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *value = v;
            return true;
        }
    }
    return false;
}

/* A string literal (5.2): Huffman flag and 7-bit length prefix, then that many bytes. */
static bool skip_string(const uint8_t *src, size_t len, size_t *pos)
{
    size_t n;
    if (*pos == len || !read_int(src, len, pos, 7, &n) || n > len - *pos)
        return false;
    *pos += n;
    return true;
}

/* A literal field (6.2): an index with a `bits`-bit prefix, a name string when it is 0, a value. */
static bool skip_literal(const uint8_t *src, size_t len, size_t *pos, unsigned bits)
{
    size_t index;
    if (!read_int(src, len, pos, bits, &index))
        return false;
    if (index == 0 && !skip_string(src, len, pos))
        return false;
    return skip_string(src, len, pos);
}

int rl_hpack_count_fields(const uint8_t *src, size_t len, size_t limit, size_t *count)
{
    size_t pos = 0, index;
    *count = 0;
    while (pos != len && *count <= limit) {
        uint8_t first = src[pos];
        bool ok;
        if (first & 0x80) { /* indexed field */
            ok = read_int(src, len, &pos, 7, &index);
        } else if (first & 0x40) { /* literal with incremental indexing */
            ok = skip_literal(src, len, &pos, 6);
        } else if (first & 0x20) { /* dynamic table size update: not a field */
            if (!read_int(src, len, &pos, 5, &index))
                return RL_ERR_INVALID;
            continue;
        } else { /* literal without indexing (0000) or never indexed (0001) */
            ok = skip_literal(src, len, &pos, 4);
        }
        if (!ok)
            return RL_ERR_INVALID;
        ++*count;
    }
    return RL_OK;
}
