/*
 * The HTTP side: listeners, TLS, and one event-loop thread per `threads`, each with its own
 * h2o context, its own listening sockets on the shared ports (SO_REUSEPORT lets the kernel
 * spread connections), its own store connections and deny cache. Threads share nothing
 * mutable on the request path; the main thread talks to them only through h2o's
 * multithread queues (reload, shutdown).
 */
#ifndef RATELIMITD_SERVER_H
#define RATELIMITD_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include "ratelimitd/apikey.h"
#include "ratelimitd/config.h"
#include "ratelimitd/connections.h"
#include "ratelimitd/http2_guard.h"
#include "ratelimitd/limiter.h"
#include "ratelimitd/limits.h"
#include "ratelimitd/metrics.h"
#include "ratelimitd/store.h"

typedef struct st_rl_server_t rl_server_t;

/*
 * Per-thread context. Handlers reach it from a request with rl_worker_of(req). Every field is
 * read and written only by its own loop thread once the thread runs.
 */
typedef struct st_rl_worker_t {
    h2o_context_t ctx;
    rl_server_t *server;
    const rl_config_t *config;
    size_t index;
    pthread_t thread;
    h2o_accept_ctx_t *accept_ctxs; /* one per listener */
    h2o_socket_t **listeners;      /* NULL once closed for shutdown */
    size_t num_listeners;
    rl_store_thread_t *store;
    rl_deny_cache_t *deny_cache;
    rl_limits_t *limits;        /* holds one reference */
    uint64_t limits_generation; /* counts the reloads this thread adopted */
    rl_metrics_thread_t *metrics;
    const rl_hash_secret_t *secret;
    h2o_iovec_t api_key_header;               /* from config, lower-case */
    h2o_iovec_t key_prefix;                   /* from config */
    rl_hpack_parser_fn hpack_parser;          /* libh2o's, behind the HTTP/2 guard */
    rl_connection_limit_t *connection_limits; /* the server's, per listener role, shared by every thread */
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t receiver;
    h2o_timeout_t drain_timeout;
    h2o_timeout_entry_t drain_entry;
    h2o_timeout_t accept_pause_timeout; /* accepting stops a moment when descriptors run out */
    h2o_timeout_entry_t accept_pause_entry;
    h2o_timeout_t watchdog_timeout;
    h2o_timeout_entry_t watchdog_entry;
    uint64_t last_accept_error_log_ms;
    size_t inflight;                /* /limit requests waiting on the store */
    size_t connections;             /* open client connections on this thread */
    h2o_linklist_t connection_list; /* their tracking records */
    uint64_t drain_started_ms;
    bool draining;
    bool half_closed; /* idle connections were told to go */
    bool stopped;
} rl_worker_t;

static inline rl_worker_t *rl_worker_of(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(rl_worker_t, ctx, req->conn->ctx);
}

/*
 * Creates the server: metrics, store, TLS contexts and every listening socket (bound here, on
 * the calling thread, so a port in use is reported before anything starts). `config` must
 * outlive the server; `limits` is retained. NULL on failure with a message in err.
 */
rl_server_t *rl_server_create(const rl_config_t *config, rl_limits_t *limits, char *err, size_t errlen);
/* Starts the loop threads. RL_OK or RL_ERR_IO. */
int rl_server_start(rl_server_t *server);
/* Hands new limits to every thread (each retains them); the caller keeps its own reference. */
void rl_server_reload(rl_server_t *server, rl_limits_t *limits);
/* Stop accepting, turn /readyz to 503, let in-flight requests finish, stop the threads. */
void rl_server_shutdown(rl_server_t *server);
/*
 * Waits until every thread has stopped (at most shutdown_grace_ms after rl_server_shutdown).
 * Returns the number of client connections still open: h2o owns their memory and cannot
 * abort them, so the caller must not tear the server down when it is not 0.
 */
size_t rl_server_join(rl_server_t *server);
/* After join. Accepts NULL. */
void rl_server_destroy(rl_server_t *server);

rl_metrics_t *rl_server_metrics(rl_server_t *server);
bool rl_server_draining(const rl_server_t *server);
/* The loop threads in use: `threads` from the config, or one per CPU this process may run on. */
size_t rl_server_num_threads(const rl_server_t *server);

/* Handler registration (limit_handler.c, admin_handler.c). */
void rl_limit_handler_register(h2o_hostconf_t *host);
void rl_admin_handlers_register(h2o_hostconf_t *host);

/* Milliseconds since the epoch (wall clock): the windows' clock. */
uint64_t rl_now_wall_ms(void);
/* Monotonic milliseconds: timeouts and drain deadlines. */
uint64_t rl_now_mono_ms(void);

#endif
