/*
 * Counting the header fields of an HTTP/2 header block (RFC 7541, section 6) without decoding
 * it: no Huffman, no dynamic table, no allocation. The HTTP/2 guard (http2_guard.h) uses it to
 * refuse a block that names more fields than any real request does, before h2o decodes it.
 */
#ifndef RATELIMITD_HPACK_COUNT_H
#define RATELIMITD_HPACK_COUNT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Counts the field representations (indexed and literal) in `src`, stopping at `limit + 1`:
 * *count is then the number seen, at most limit + 1. Dynamic table size updates are not fields.
 * Returns RL_OK, or RL_ERR_INVALID when the block ends inside a representation or an integer
 * needs more than 28 bits (*count then holds the fields before it); whether such a block is an
 * error is left to the decoder.
 */
int rl_hpack_count_fields(const uint8_t *src, size_t len, size_t limit, size_t *count);

#endif
