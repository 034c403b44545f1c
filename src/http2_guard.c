/*
 * The definition of h2o_hpack_parse_headers that libh2o's HTTP/2 code calls (see http2_guard.h).
 * Only the field count is decided here; decoding, and every error about what the fields say,
 * stay libh2o's.
 */
#include <dlfcn.h>
#include <stdio.h>
#include "ratelimitd/error.h"
#include "ratelimitd/hpack_count.h"
#include "ratelimitd/http2_guard.h"
#include "ratelimitd/server.h"

#if H2O_LIBRARY_VERSION_MAJOR != 0 || H2O_LIBRARY_VERSION_MINOR != 13
#error "h2o_hpack_parse_headers is interposed with h2o 2.2.x's signature: check it against this libh2o"
#endif

#define PARSER_SYMBOL "h2o_hpack_parse_headers"

int h2o_hpack_parse_headers(h2o_req_t *req, struct st_h2o_hpack_header_table_t *header_table, const uint8_t *src,
                            size_t len, int *pseudo_header_exists_map, size_t *content_length,
                            h2o_cache_digests_t **digests, const char **err_desc);

int h2o_hpack_parse_headers(h2o_req_t *req, struct st_h2o_hpack_header_table_t *header_table, const uint8_t *src,
                            size_t len, int *pseudo_header_exists_map, size_t *content_length,
                            h2o_cache_digests_t **digests, const char **err_desc)
{
    rl_worker_t *worker = rl_worker_of(req);
    size_t fields;
    /* A malformed block goes on to libh2o, whose decoder reports it as it always did. */
    if (rl_hpack_count_fields(src, len, RL_HTTP2_MAX_FIELDS, &fields) == RL_OK && fields > RL_HTTP2_MAX_FIELDS) {
        /* Undecoded, the block leaves the connection's HPACK table behind the client's, so the
         * connection cannot go on (RFC 9113 4.3): COMPRESSION_ERROR, and h2o closes it. */
        rl_metrics_count_request(worker->metrics, RL_OUTCOME_BAD_REQUEST);
        *err_desc = "too many header fields";
        return H2O_HTTP2_ERROR_COMPRESSION;
    }
    return worker->hpack_parser(req, header_table, src, len, pseudo_header_exists_map, content_length, digests,
                                err_desc);
}

int rl_http2_guard_resolve(rl_hpack_parser_fn *parser, char *err, size_t errlen)
{
    /* libh2o binds its calls to the first definition in the global scope: it must be this one */
    void *first = dlsym(RTLD_DEFAULT, PARSER_SYMBOL);
    void *next = dlsym(RTLD_NEXT, PARSER_SYMBOL);
    if (first != (void *)h2o_hpack_parse_headers || next == NULL) {
        snprintf(err, errlen,
                 "libh2o-evloop's " PARSER_SYMBOL " cannot be interposed (%s), so HTTP/2 header blocks would "
                 "have no field limit; ratelimitd needs the shared libh2o-evloop 2.2.x",
                 next == NULL ? "no shared definition found" : "calls bind elsewhere");
        return RL_ERR_INVALID;
    }
    *parser = (rl_hpack_parser_fn)next;
    return RL_OK;
}
