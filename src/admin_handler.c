/*
 * Operational endpoints: /healthz (the process runs), /readyz (this instance can decide: its
 * thread reaches at least one backend node and it is not draining), /metrics (Prometheus
 * text), and the fallback that answers 404 for every other path.
 *
 * /readyz asks the store view of the thread that serves the probe. Threads connect to the
 * same nodes independently, so one thread's view is a fair sample, and asking it costs no
 * cross-thread traffic.
 */
#include <stdlib.h>
#include <string.h>
#include "ratelimitd/http_reply.h"
#include "ratelimitd/server.h"

/* Common checks of the admin endpoints. Returns 1 when the request was answered. */
static int answered_early(h2o_req_t *req, const char *path, size_t len)
{
    if (rl_reply_if_bad_head(req, rl_worker_of(req)->config->server.max_header_bytes))
        return 1;
    if (!rl_request_path_is(req, path, len)) {
        rl_reply_error(req, 404, "Not Found", "not found");
        return 1;
    }
    if (!rl_request_method_is(req, 0)) {
        rl_reply_method_not_allowed(req, "GET, HEAD");
        return 1;
    }
    return 0;
}

static int on_healthz(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (!answered_early(req, H2O_STRLIT("/healthz")))
        rl_reply_json(req, 200, "OK", H2O_STRLIT("{\"status\":\"ok\"}"));
    return 0;
}

static int on_readyz(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (answered_early(req, H2O_STRLIT("/readyz")))
        return 0;
    rl_worker_t *worker = rl_worker_of(req);
    if (worker->draining || rl_server_draining(worker->server))
        rl_reply_error(req, 503, "Service Unavailable", "shutting down");
    else if (!rl_store_ready(worker->store))
        rl_reply_error(req, 503, "Service Unavailable", "backend unavailable");
    else
        rl_reply_json(req, 200, "OK", H2O_STRLIT("{\"status\":\"ready\"}"));
    return 0;
}

static int on_metrics(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (answered_early(req, H2O_STRLIT("/metrics")))
        return 0;
    size_t len;
    char *text = rl_metrics_render(rl_server_metrics(rl_worker_of(req)->server), &len);
    if (text == NULL) {
        rl_reply_error(req, 500, "Internal Server Error", "out of memory");
        return 0;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_send_inline(req, text, len); /* copies into the pool */
    free(text);
    return 0;
}

static int on_not_found(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (!rl_reply_if_bad_head(req, rl_worker_of(req)->config->server.max_header_bytes))
        rl_reply_error(req, 404, "Not Found", "not found");
    return 0;
}

static void register_handler(h2o_hostconf_t *host, const char *path, int (*on_req)(h2o_handler_t *, h2o_req_t *))
{
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, path, 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = on_req;
}

void rl_admin_handlers_register(h2o_hostconf_t *host)
{
    register_handler(host, "/healthz", on_healthz);
    register_handler(host, "/readyz", on_readyz);
    register_handler(host, "/metrics", on_metrics);
    register_handler(host, "/", on_not_found);
}
