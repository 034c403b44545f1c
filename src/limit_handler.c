/*
 * GET/POST/HEAD /limit: the decision endpoint.
 *
 * Everything that can be answered without the store is answered first, in the order that
 * costs least: method, header size, key presence and syntax, the limits table, the deny
 * cache. Only then does one increment go to the store; the request waits for it without
 * blocking the loop. The decision context lives in the request's pool with a destructor, so
 * a client that disconnects mid-decision cancels the store callback instead of leaving it
 * pointing at freed memory.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "ratelimitd/error.h"
#include "ratelimitd/http1_park.h"
#include "ratelimitd/http_reply.h"
#include "ratelimitd/log.h"
#include "ratelimitd/server.h"

typedef struct st_rl_decision_ctx_t {
    h2o_req_t *req; /* NULL once answered or cancelled */
    rl_worker_t *worker;
    rl_store_op_t *op;
    h2o_socket_t *parked; /* the HTTP/1 client socket while the store has not answered */
    rl_limit_t limit;
    uint64_t limits_generation; /* the worker's when `limit` was looked up */
    rl_window_t window;
    rl_keyhash_t hash;
} rl_decision_ctx_t;

static void add_header(h2o_req_t *req, const char *name, size_t name_len, const char *value, size_t value_len)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, name_len, 0, NULL, value, value_len);
}

static void count(rl_worker_t *worker, rl_outcome_t outcome)
{
    rl_metrics_count_request(worker->metrics, outcome);
}

/* Sends the SPEC's decision answer: rate-limit fields, Retry-After on 429, JSON body. */
/* Appends helpers for the decision text: no printf on the hot path, every length bounded. */
static char *put_bytes(char *p, const char *s, size_t len)
{
    memcpy(p, s, len);
    return p + len;
}

static char *put_uint(char *p, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n != 0)
        *p++ = digits[--n];
    return p;
}

static char *put_int(char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return put_uint(p, (uint64_t)0 - (uint64_t)v);
    }
    return put_uint(p, (uint64_t)v);
}

/* `"<policy>";` */
static char *put_policy(char *p, const rl_limit_t *limit)
{
    *p++ = '"';
    p = put_bytes(p, limit->policy, limit->policy_len);
    return put_bytes(p, H2O_STRLIT("\";"));
}

/* One pool block holds every header value and the body; tier names are at most 64 bytes. */
#define RL_DECISION_TEXT_MAX (2 * (64 + 48) + 24 + 160)

/* Sends the SPEC's decision answer: rate-limit fields, Retry-After on 429, JSON body. */
static void send_decision(h2o_req_t *req, const rl_limit_t *limit, const rl_window_t *window,
                          const rl_decision_t *decision)
{
    char *text = h2o_mem_alloc_pool(&req->pool, RL_DECISION_TEXT_MAX), *p = text, *start;

    start = p;
    p = put_policy(p, limit);
    p = put_bytes(p, H2O_STRLIT("q="));
    p = put_uint(p, decision->limit);
    p = put_bytes(p, H2O_STRLIT(";w=1"));
    add_header(req, H2O_STRLIT("ratelimit-policy"), start, (size_t)(p - start));

    start = p;
    p = put_policy(p, limit);
    p = put_bytes(p, H2O_STRLIT("r="));
    p = put_uint(p, decision->remaining);
    p = put_bytes(p, H2O_STRLIT(";t="));
    p = put_uint(p, (window->reset_ms + 999) / 1000);
    add_header(req, H2O_STRLIT("ratelimit"), start, (size_t)(p - start));

    if (!decision->allowed) {
        start = p;
        p = put_uint(p, decision->retry_after);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, start, (size_t)(p - start));
    }

    start = p;
    p = decision->allowed ? put_bytes(p, H2O_STRLIT("{\"allowed\":true,\"limit\":"))
                          : put_bytes(p, H2O_STRLIT("{\"allowed\":false,\"limit\":"));
    p = put_uint(p, decision->limit);
    p = put_bytes(p, H2O_STRLIT(",\"remaining\":"));
    p = put_uint(p, decision->remaining);
    p = put_bytes(p, H2O_STRLIT(",\"window\":"));
    p = put_int(p, window->window);
    p = put_bytes(p, H2O_STRLIT(",\"reset_ms\":"));
    p = put_uint(p, window->reset_ms);
    *p++ = '}';
    assert((size_t)(p - text) <= RL_DECISION_TEXT_MAX);
    h2o_iovec_t body = h2o_iovec_init(start, (size_t)(p - start));
    if (decision->allowed)
        rl_reply_json_pooled(req, 200, "OK", body);
    else
        rl_reply_json_pooled(req, 429, "Too Many Requests", body);
}

static void answer_backend_failure(rl_worker_t *worker, h2o_req_t *req, const rl_limit_t *limit,
                                   const rl_window_t *window)
{
    count(worker, RL_OUTCOME_BACKEND_ERROR);
    if (worker->config->backend.on_failure == RL_ON_FAILURE_CLOSED) {
        rl_reply_error(req, 503, "Service Unavailable", "backend unavailable");
        return;
    }
    /* Fail open: admitted without a count, so the whole quota is reported as remaining. */
    rl_decision_t decision = {.allowed = true, .limit = limit->limit, .remaining = limit->limit};
    send_decision(req, limit, window, &decision);
}

static void on_counted(void *cbdata, int status, uint64_t value)
{
    rl_decision_ctx_t *ctx = cbdata;
    h2o_req_t *req = ctx->req;
    ctx->op = NULL;
    ctx->req = NULL;
    --ctx->worker->inflight;
    if (req == NULL || status == RL_ERR_CANCELLED)
        return;
    if (ctx->parked != NULL) {
        rl_http1_unpark(ctx->parked);
        ctx->parked = NULL;
    }
    /* The answer may come long after the request (timeout_ms allows seconds): its reset time,
     * t= and Retry-After are what is left of the window now. */
    uint64_t now_ms = rl_now_wall_ms();
    rl_window_t window = rl_window_seen_at(ctx->window.window, now_ms);
    if (status != RL_OK) {
        answer_backend_failure(ctx->worker, req, &ctx->limit, &window);
        return;
    }
    rl_decision_t decision = rl_decide(value, ctx->limit.limit, &window);
    /* A reload while the store counted has emptied the deny cache for limits that may have been
     * raised: a denial under the old limit answers this request but must not go back in. */
    if (!decision.allowed && ctx->limits_generation == ctx->worker->limits_generation)
        rl_deny_cache_add(ctx->worker->deny_cache, &ctx->hash, window.window, rl_window_at(now_ms).window);
    count(ctx->worker, decision.allowed ? RL_OUTCOME_ALLOWED : RL_OUTCOME_LIMITED);
    send_decision(req, &ctx->limit, &window, &decision);
}

/* Runs when the request's pool is cleared; if the store has not answered, forget the callback. */
static void on_decision_dispose(void *p)
{
    rl_decision_ctx_t *ctx = p;
    if (ctx->op != NULL) {
        rl_store_cancel(ctx->worker->store, ctx->op);
        ctx->op = NULL;
        --ctx->worker->inflight;
    }
    ctx->req = NULL;
}

static bool ends_in_whitespace(h2o_iovec_t value)
{
    return value.len != 0 && (value.base[value.len - 1] == ' ' || value.base[value.len - 1] == '\t');
}

/*
 * Whether the header fields were sent as HTTP/1.1, where whitespace may pad a value: every HTTP/1.x
 * request, and the one an h2c Upgrade turns into HTTP/2's stream 1, which keeps its HTTP2-Settings
 * field (h2o refuses that field in a header block sent over HTTP/2 itself).
 */
static bool sent_as_http1(const h2o_req_t *req)
{
    return req->version < 0x200 || h2o_find_header(&req->headers, H2O_TOKEN_HTTP2_SETTINGS, -1) != -1;
}

/* The key header's value. Over HTTP/1.x, whitespace around a field value is not part of it (RFC
 * 9110, 5.5), and h2o 2.2.5's parser strips only the leading side: a gateway that pads the value
 * would otherwise get 400 for a valid key. HTTP/2 header blocks forbid that whitespace altogether
 * (RFC 9113, 8.2.1), so there it stays and the key is refused as invalid. */
static h2o_iovec_t key_value(const h2o_req_t *req, ssize_t at)
{
    if (at == -1)
        return h2o_iovec_init(NULL, 0);
    h2o_iovec_t value = req->headers.entries[at].value;
    if (ends_in_whitespace(value) && sent_as_http1(req))
        while (ends_in_whitespace(value))
            --value.len;
    return value;
}

/* Checks everything decided without the store. Returns true when the request was answered. */
static bool answer_without_store(rl_worker_t *worker, h2o_req_t *req, h2o_iovec_t *key)
{
    if (!rl_request_method_is(req, 1)) {
        rl_reply_method_not_allowed(req, "GET, POST, HEAD");
        return true;
    }
    if (rl_reply_if_bad_head(req, worker->config->server.max_header_bytes)) {
        count(worker, RL_OUTCOME_BAD_REQUEST);
        return true;
    }
    ssize_t at = h2o_find_header_by_str(&req->headers, worker->api_key_header.base, worker->api_key_header.len, -1);
    *key = key_value(req, at);
    /* Two keys are ambiguous: charging the first would let the client (or a proxy that appends
     * its own) pick which key pays. */
    if (at != -1 &&
        h2o_find_header_by_str(&req->headers, worker->api_key_header.base, worker->api_key_header.len, at) != -1) {
        count(worker, RL_OUTCOME_BAD_REQUEST);
        rl_reply_error(req, 400, "Bad Request", "more than one API key");
        return true;
    }
    switch (rl_apikey_validate(key->base, key->len)) {
    case RL_OK:
        return false;
    case RL_ERR_KEY_MISSING: {
        count(worker, RL_OUTCOME_UNAUTHORIZED);
        /* RFC 9110 (15.5.2): a 401 names how to authenticate; no scheme is registered for API
         * keys, so this one says which header carries it */
        h2o_iovec_t challenge = h2o_concat(&req->pool, h2o_iovec_init(H2O_STRLIT("ApiKey header=\"")),
                                           worker->api_key_header, h2o_iovec_init(H2O_STRLIT("\"")));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, challenge.base, challenge.len);
        rl_reply_error(req, 401, "Unauthorized", "missing API key");
        return true;
    }
    default:
        count(worker, RL_OUTCOME_BAD_REQUEST);
        rl_reply_error(req, 400, "Bad Request", "invalid API key");
        return true;
    }
}

/* Counts one request for `key` in the store; the answer is sent from on_counted. */
static void count_in_store(rl_worker_t *worker, h2o_req_t *req, const rl_limit_t *limit, const rl_window_t *window,
                           const rl_keyhash_t *hash)
{
    rl_decision_ctx_t *ctx = h2o_mem_alloc_shared(&req->pool, sizeof(*ctx), on_decision_dispose);
    *ctx = (rl_decision_ctx_t){.req = req,
                               .worker = worker,
                               .limit = *limit,
                               .limits_generation = worker->limits_generation,
                               .window = *window,
                               .hash = *hash};
    /* The tier name belongs to the limits in force now; a SIGHUP may free them before the store
     * answers, so the request keeps its own copy. */
    ctx->limit.policy = h2o_strdup(&req->pool, limit->policy, limit->policy_len).base;
    char mckey[RL_MCKEY_MAX_LEN];
    rl_counter_key_t counter = {.hash = *hash, .window = window->window, .mckey = mckey};
    counter.mckey_len =
        rl_mckey_format(mckey, sizeof(mckey), worker->key_prefix.base, worker->key_prefix.len, hash, window->window);
    counter.placement_len = rl_mckey_group_len(worker->key_prefix.len);
    ++worker->inflight;
    rl_store_incr(worker->store, &counter, on_counted, ctx, &ctx->op);
    if (ctx->op != NULL)
        ctx->parked = rl_http1_park(req);
}

static int on_limit(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    rl_worker_t *worker = rl_worker_of(req);
    if (!rl_request_path_is(req, H2O_STRLIT("/limit"))) {
        rl_reply_error(req, 404, "Not Found", "not found");
        return 0;
    }
    h2o_iovec_t key;
    if (answer_without_store(worker, req, &key))
        return 0;

    rl_limit_t limit;
    if (rl_limits_lookup(worker->limits, key.base, key.len, &limit) == RL_LIMIT_REJECTED) {
        count(worker, RL_OUTCOME_FORBIDDEN);
        rl_reply_error(req, 403, "Forbidden", "unknown API key");
        return 0;
    }
    rl_window_t window = rl_window_at(rl_now_wall_ms());
    rl_keyhash_t hash;
    rl_apikey_hash(worker->secret, key.base, key.len, &hash);
    if (rl_deny_cache_contains(worker->deny_cache, &hash, window.window)) {
        rl_metrics_count_deny_cache_hit(worker->metrics);
        count(worker, RL_OUTCOME_LIMITED);
        rl_decision_t decision = rl_decide_denied(limit.limit, &window);
        send_decision(req, &limit, &window, &decision);
        return 0;
    }
    count_in_store(worker, req, &limit, &window, &hash);
    return 0;
}

void rl_limit_handler_register(h2o_hostconf_t *host)
{
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/limit", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = on_limit;
}
