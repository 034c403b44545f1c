/*
 * Shared answer builders, so every endpoint sends the same headers and error format.
 * Bodies are copied into the request pool by h2o_send_inline, or already live there
 * (rl_reply_json_pooled, the decision path); nothing here allocates on the heap.
 */
#include <string.h>
#include "ratelimitd/http_reply.h"

static void set_json_head(h2o_req_t *req, int status, const char *reason, size_t len)
{
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
}

void rl_reply_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len)
{
    set_json_head(req, status, reason, len);
    h2o_send_inline(req, body, len);
}

void rl_reply_json_pooled(h2o_req_t *req, int status, const char *reason, h2o_iovec_t body)
{
    /* A generator without callbacks: the whole body goes out in the one final h2o_send(). */
    static h2o_generator_t generator = {NULL, NULL};
    set_json_head(req, status, reason, body.len);
    h2o_start_response(req, &generator);
    if (h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else
        h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

void rl_reply_error(h2o_req_t *req, int status, const char *reason, const char *message)
{
    /* 401/400/404 are what a flood of bad requests gets: one pool concatenation, no printf. */
    h2o_iovec_t body = h2o_concat(&req->pool, h2o_iovec_init(H2O_STRLIT("{\"error\":\"")),
                                  h2o_iovec_init(message, strlen(message)), h2o_iovec_init(H2O_STRLIT("\"}")));
    rl_reply_json_pooled(req, status, reason, body);
}

void rl_reply_method_not_allowed(h2o_req_t *req, const char *allow)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
    rl_reply_error(req, 405, "Method Not Allowed", "method not allowed");
}

int rl_request_method_is(const h2o_req_t *req, int allow_post)
{
    return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
           h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")) ||
           (allow_post && h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")));
}

/* Bytes of the request's header fields and path, as server.max_header_bytes counts them. */
static size_t header_bytes(const h2o_req_t *req)
{
    size_t total = req->input.path.len;
    for (size_t i = 0; i != req->headers.size; ++i)
        total += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    return total;
}

static int lacks_host(const h2o_req_t *req)
{
    /* h2o 2.2.5 moves Host into input.authority and, when there is none, points input.authority
     * at the host config's own name: that pointer is how a missing Host shows. HTTP/1.0 predates
     * Host, and HTTP/2 (stream 1 of an h2c Upgrade included, version 2.0 once upgraded) names the
     * authority its own way. A second Host line is not caught: h2o keeps the last one and does
     * not say there were two. */
    return req->version == 0x101 && req->input.authority.base == req->hostconf->authority.hostport.base;
}

int rl_reply_if_bad_head(h2o_req_t *req, size_t max_header_bytes)
{
    /* h2o's HTTP/1.1 parser refuses more header lines than H2O_MAX_HEADERS itself; an HTTP/2
     * request can bring a few more past the HTTP/2 guard (http2_guard.h), or more in a trailer. */
    if (header_bytes(req) > max_header_bytes || req->headers.size > H2O_MAX_HEADERS) {
        rl_reply_error(req, 431, "Request Header Fields Too Large", "request headers too large");
        return 1;
    }
    if (lacks_host(req)) {
        rl_reply_error(req, 400, "Bad Request", "missing Host header");
        return 1;
    }
    return 0;
}

int rl_request_path_is(const h2o_req_t *req, const char *path, size_t len)
{
    /* h2o's normalisation puts a "/" before a target that lacks one ("GET limit"), which is no
     * origin-form target; such a target, like an absolute-form one, names no path of ours */
    return req->input.path.len != 0 && req->input.path.base[0] == '/' &&
           h2o_memis(req->path_normalized.base, req->path_normalized.len, path, len);
}
