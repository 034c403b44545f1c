/*
 * A bound h2o 2.2.5 lacks: how many header fields one HTTP/2 header block may name. h2o caps a
 * block at 417,792 bytes on the wire, but HPACK lets one byte stand for a 4 KB dynamic-table
 * entry, and h2o decodes every field into the request's memory before any handler runs: one
 * request of ~412,000 fields held ~36 MB, and a client sending such blocks back to back, or
 * without ending their streams, held gigabytes.
 *
 * ratelimitd therefore defines h2o_hpack_parse_headers itself. libh2o-evloop calls it through
 * its procedure linkage table, so the dynamic linker binds those calls to the executable's
 * definition; that one counts the block's fields (hpack_count.h), refuses a block of more than
 * RL_HTTP2_MAX_FIELDS with a connection error, and hands the others to libh2o's own parser.
 * rl_http2_guard_resolve() checks at start-up, in libh2o's relocations, that the binding is in
 * effect: a library linked with -Bsymbolic binds the calls to its own parser, which would bypass
 * the guard silently, and one bound lazily has nothing to check until its first call.
 */
#ifndef RATELIMITD_HTTP2_GUARD_H
#define RATELIMITD_HTTP2_GUARD_H

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include <h2o/cache_digests.h>

/* h2o's bound on an HTTP/1.1 head's header lines, plus HTTP/2's four request pseudo-fields. */
#define RL_HTTP2_MAX_FIELDS (H2O_MAX_HEADERS + 4)

struct st_h2o_hpack_header_table_t;

/* The signature of h2o 2.2.5's h2o_hpack_parse_headers (its http2_internal.h, which cannot be
 * included: it needs klib's khash.h, which Debian's libh2o-evloop-dev does not ship). */
typedef int (*rl_hpack_parser_fn)(h2o_req_t *req, struct st_h2o_hpack_header_table_t *header_table, const uint8_t *src,
                                  size_t len, int *pseudo_header_exists_map, size_t *content_length,
                                  h2o_cache_digests_t **digests, const char **err_desc);

/*
 * Finds libh2o's parser behind ratelimitd's into *parser. RL_OK, or RL_ERR_INVALID with a
 * message in err unless every relocation by which libh2o calls the parser holds the guard.
 */
int rl_http2_guard_resolve(rl_hpack_parser_fn *parser, char *err, size_t errlen);

#endif
