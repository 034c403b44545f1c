/*
 * The server: its h2o configuration, the listening sockets (listener.c), and the loop threads.
 *
 * Every loop thread gets its own listening socket per configured port; all are bound on the
 * main thread before any thread starts. Each thread then runs its own h2o context, accepts on
 * its own sockets (connections.c) and keeps its own store connections and deny cache.
 *
 * The main thread talks to the loops only through h2o multithread queues: a reload message
 * carries new limits, a shutdown message starts the drain. A draining thread closes its
 * listeners, asks h2o to wind down its connections (GOAWAY on HTTP/2, no keep-alive on
 * HTTP/1.1), waits for in-flight decisions, and stops its loop; it never waits longer than
 * shutdown_grace_ms.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <openssl/ssl.h>
#include "ratelimitd/connections.h"
#include "ratelimitd/error.h"
#include "ratelimitd/fd_budget.h"
#include "ratelimitd/listener.h"
#include "ratelimitd/log.h"
#include "ratelimitd/server.h"

#define RL_DENY_CACHE_SLOTS 65536
#define RL_DRAIN_POLL_MS 20
/*
 * How long a drain waits before half-closing connections: h2o sends HTTP/2 clients a first
 * GOAWAY at once and the final one (with the real last stream) a second later; half-closing
 * before that would reset streams opened in between. Capped at half the grace period.
 */
#define RL_GOAWAY_RESEND_MS 1000
#define RL_HALF_CLOSE_AFTER_MS (RL_GOAWAY_RESEND_MS + 100)

typedef enum { RL_MSG_RELOAD, RL_MSG_SHUTDOWN } rl_message_kind_t;

typedef struct st_rl_message_t {
    h2o_multithread_message_t super;
    rl_message_kind_t kind;
    rl_limits_t *limits; /* RL_MSG_RELOAD: one reference, owned by the message */
} rl_message_t;

struct st_rl_server_t {
    const rl_config_t *config;
    h2o_globalconf_t globalconf;
    SSL_CTX **ssl_ctxs; /* per listener; NULL for cleartext */
    int *listen_fds;    /* num_workers * num_listen, -1 once handed to a loop */
    rl_store_t *store;
    rl_metrics_t *metrics;
    rl_limits_t *initial_limits;
    rl_hash_secret_t secret;
    rl_hpack_parser_fn hpack_parser; /* libh2o's, which the HTTP/2 guard calls */
    rl_worker_t *workers;
    size_t num_workers;
    h2o_hostconf_t *hosts[RL_LISTEN_ROLES][2]; /* per listener role, NULL-terminated for h2o_accept_ctx_t */
    rl_connection_limit_t connection_limits[RL_LISTEN_ROLES]; /* open client connections per role */
    _Atomic bool draining;
    bool running;
    /* The main thread waits until every loop it started can take messages. Not a barrier: when a
     * thread cannot be created, the ones that were must still be counted in, told to stop and
     * joined before the server they use is freed. */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    size_t num_started; /* threads created: those messages go to and joins wait for */
    size_t num_ready;   /* of those, threads whose loop exists (under start_lock) */
    _Atomic int setup_failures;
};

uint64_t rl_now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t rl_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

rl_metrics_t *rl_server_metrics(rl_server_t *server)
{
    return server->metrics;
}

size_t rl_server_num_threads(const rl_server_t *server)
{
    return server->num_workers;
}

bool rl_server_draining(const rl_server_t *server)
{
    return atomic_load_explicit(&server->draining, memory_order_relaxed);
}

/* threads: 0 means one loop per CPU this process may run on (its affinity mask, so taskset
 * and cpusets are honoured; a CFS quota is not visible here, which is why the chart sets it). */
static size_t resolve_threads(uint32_t configured)
{
    if (configured != 0)
        return configured;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (size_t)CPU_COUNT(&set);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 0 ? (size_t)cpus : 1;
}

static void init_globalconf(rl_server_t *server)
{
    const rl_config_t *config = server->config;
    h2o_config_init(&server->globalconf);
    /* No Server header: it tells clients nothing they need, and libh2o 2.2.5 formats it with a
     * sprintf of its own on every HTTP/1.1 answer (~2 % of a hot-key answer's CPU). */
    server->globalconf.server_name = h2o_iovec_init(H2O_STRLIT(""));
    server->globalconf.http1.req_timeout = config->server.idle_timeout_ms;
    server->globalconf.http2.idle_timeout = config->server.idle_timeout_ms;
    /* h2o re-sends GOAWAY after one second, then closes what is left after this long: keep
     * that inside our own grace period. */
    server->globalconf.http2.graceful_shutdown_timeout =
        config->shutdown_grace_ms > RL_GOAWAY_RESEND_MS ? config->shutdown_grace_ms - RL_GOAWAY_RESEND_MS : 1;
    server->globalconf.handshake_timeout = config->server.idle_timeout_ms;
    /* No endpoint reads a body, and h2o buffers each stream's whole body before the handler runs:
     * at 64 KiB, 100 unfinished HTTP/2 streams pinned ~7 MiB per connection. */
    server->globalconf.max_request_entity_size = 1024;
    h2o_hostconf_t *api = h2o_config_register_host(&server->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    rl_limit_handler_register(api);
    rl_admin_handlers_register(api);
    /* An admin listener's requests never reach the API's host, whatever Host they name. */
    h2o_hostconf_t *admin = h2o_config_register_host(&server->globalconf, h2o_iovec_init(H2O_STRLIT("admin")), 65535);
    rl_admin_handlers_register(admin);
    server->hosts[RL_LISTEN_API][0] = api;
    server->hosts[RL_LISTEN_ADMIN][0] = admin;
}

static int open_listeners(rl_server_t *server, char *err, size_t errlen)
{
    size_t n = server->config->num_listen;
    if ((server->ssl_ctxs = calloc(n, sizeof(SSL_CTX *))) == NULL ||
        (server->listen_fds = malloc(sizeof(int) * n * server->num_workers)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return RL_ERR_NOMEM;
    }
    for (size_t i = 0; i < n * server->num_workers; ++i)
        server->listen_fds[i] = -1;
    for (size_t l = 0; l < n; ++l) {
        const rl_listen_config_t *listen = &server->config->listen[l];
        if (listen->tls_certificate != NULL &&
            (server->ssl_ctxs[l] = rl_listener_create_tls(listen, err, errlen)) == NULL)
            return RL_ERR_CONFIG;
        if (rl_listener_check_port_free(listen, err, errlen) != RL_OK)
            return RL_ERR_IO;
        for (size_t w = 0; w < server->num_workers; ++w) {
            int fd = rl_listener_open(listen, err, errlen);
            if (fd == -1)
                return RL_ERR_IO;
            server->listen_fds[w * n + l] = fd;
        }
    }
    return RL_OK;
}

/* server.max_connections, lowered (with a warning) to what RLIMIT_NOFILE leaves for clients. */
static uint32_t connections_in_force(const rl_config_t *config, size_t num_workers)
{
    uint32_t configured = config->server.max_connections;
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == RLIM_INFINITY)
        return configured;
    size_t nodes = config->backend.type == RL_BACKEND_MEMCACHED ? config->backend.num_servers : 0;
    uint64_t reserved = rl_fd_budget_reserved(num_workers, config->num_listen, nodes);
    for (size_t l = 0; l < config->num_listen; ++l) {
        if (config->listen[l].role == RL_LISTEN_ADMIN) {
            reserved += RL_ADMIN_MAX_CONNECTIONS;
            break;
        }
    }
    uint32_t allowed = rl_fd_budget_max_connections(nofile.rlim_cur, reserved, configured);
    if (allowed < configured)
        rl_log_warn(
            "server",
            "server.max_connections is %u but the open-file limit (%llu, %llu of them kept for "
            "listeners, memcached, the loops and admin connections) allows %u client connections: more are shed; "
            "raise the limit (ulimit -n, LimitNOFILE=) to allow more",
            configured, (unsigned long long)nofile.rlim_cur, (unsigned long long)reserved, allowed);
    return allowed;
}

/* Whether the open-file limit can hold the loops at all (h2o aborts when a loop cannot get its
 * descriptors); explains what to change in `err` when not. */
static bool fd_limit_holds_the_loops(const rl_config_t *config, size_t num_workers, char *err, size_t errlen)
{
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == RLIM_INFINITY)
        return true;
    size_t nodes = config->backend.type == RL_BACKEND_MEMCACHED ? config->backend.num_servers : 0;
    uint64_t need = rl_fd_budget_minimum(num_workers, config->num_listen, nodes);
    if (nofile.rlim_cur > need)
        return true;
    snprintf(err, errlen,
             "the open-file limit (%llu) cannot hold %zu loop threads (they need more than %llu descriptors); raise "
             "it (ulimit -n, LimitNOFILE=) or lower threads",
             (unsigned long long)nofile.rlim_cur, num_workers, (unsigned long long)need);
    return false;
}

rl_server_t *rl_server_create(const rl_config_t *config, rl_limits_t *limits, char *err, size_t errlen)
{
    rl_server_t *server = calloc(1, sizeof(*server));
    if (server == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    server->config = config;
    server->num_workers = resolve_threads(config->threads);
    if (!fd_limit_holds_the_loops(config, server->num_workers, err, errlen) ||
        rl_http2_guard_resolve(&server->hpack_parser, err, errlen) != RL_OK) {
        free(server);
        return NULL;
    }
    /* from here on every failure goes through rl_server_destroy, which destroys these */
    pthread_mutex_init(&server->start_lock, NULL);
    pthread_cond_init(&server->start_cond, NULL);
    server->connection_limits[RL_LISTEN_API].max = connections_in_force(config, server->num_workers);
    server->connection_limits[RL_LISTEN_ADMIN].max = RL_ADMIN_MAX_CONNECTIONS;
    rl_hash_secret_init(&server->secret, config->backend.key_hash_secret, strlen(config->backend.key_hash_secret));
    rl_limits_retain(limits);
    server->initial_limits = limits;
    init_globalconf(server);
    if ((server->metrics = rl_metrics_create(server->num_workers, config)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    rl_metrics_set_max_connections(server->metrics, server->connection_limits[RL_LISTEN_API].max);
    if ((server->store = rl_store_create(config, err, errlen)) == NULL)
        goto fail;
    if ((server->workers = calloc(server->num_workers, sizeof(rl_worker_t))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (open_listeners(server, err, errlen) != RL_OK)
        goto fail;
    return server;
fail:
    rl_server_destroy(server);
    return NULL;
}

/*
 * Drain: wait for in-flight decisions, then half-close what is left and wait for the
 * connections to go; stop at the latest when the grace period is over.
 */
static void on_drain_tick(h2o_timeout_entry_t *entry)
{
    rl_worker_t *worker = H2O_STRUCT_FROM_MEMBER(rl_worker_t, drain_entry, entry);
    uint64_t elapsed = rl_now_mono_ms() - worker->drain_started_ms;
    uint64_t half_close_after = worker->config->shutdown_grace_ms / 2;
    if (half_close_after > RL_HALF_CLOSE_AFTER_MS)
        half_close_after = RL_HALF_CLOSE_AFTER_MS;
    if (worker->inflight == 0 && elapsed >= half_close_after && !worker->half_closed) {
        rl_connections_half_close(worker);
        worker->half_closed = true;
    }
    if (worker->half_closed && worker->connections == 0) {
        worker->stopped = true;
        return;
    }
    if (elapsed >= worker->config->shutdown_grace_ms) {
        if (worker->inflight != 0 || worker->connections != 0)
            rl_log_warn("server", "thread %zu: grace period over with %zu decisions in flight, %zu connections open",
                        worker->index, worker->inflight, worker->connections);
        worker->stopped = true;
        return;
    }
    h2o_timeout_link(worker->ctx.loop, &worker->drain_timeout, &worker->drain_entry);
}

static void begin_drain(rl_worker_t *worker)
{
    if (worker->draining)
        return;
    worker->draining = true;
    worker->drain_started_ms = rl_now_mono_ms();
    rl_connections_close_listeners(worker);
    h2o_context_request_shutdown(&worker->ctx);
    h2o_timeout_link(worker->ctx.loop, &worker->drain_timeout, &worker->drain_entry);
}

static void adopt_limits(rl_worker_t *worker, rl_limits_t *limits)
{
    rl_limits_retain(limits);
    rl_limits_release(worker->limits);
    worker->limits = limits;
    ++worker->limits_generation;
    /* a key whose limit was raised must not stay denied for the rest of the window */
    rl_deny_cache_clear(worker->deny_cache);
}

static void on_message(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    rl_worker_t *worker = H2O_STRUCT_FROM_MEMBER(rl_worker_t, receiver, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        rl_message_t *msg = H2O_STRUCT_FROM_MEMBER(rl_message_t, super.link, messages->next);
        h2o_linklist_unlink(&msg->super.link);
        if (msg->kind == RL_MSG_RELOAD)
            adopt_limits(worker, msg->limits);
        else
            begin_drain(worker);
        rl_limits_release(msg->limits);
        free(msg);
    }
}

static int worker_setup(rl_worker_t *worker)
{
    rl_server_t *server = worker->server;
    size_t n = server->config->num_listen;
    h2o_context_init(&worker->ctx, h2o_evloop_create(), &server->globalconf);
    /* First what worker_teardown and the main thread's messages rely on (h2o allocates these or
     * aborts), so that a thread whose setup fails below still tears down and stops cleanly. */
    worker->queue = h2o_multithread_create_queue(worker->ctx.loop);
    h2o_multithread_register_receiver(worker->queue, &worker->receiver, on_message);
    h2o_timeout_init(worker->ctx.loop, &worker->drain_timeout, RL_DRAIN_POLL_MS);
    worker->drain_entry = (h2o_timeout_entry_t){.cb = on_drain_tick};
    rl_connections_init(worker);
    worker->metrics = rl_metrics_thread(server->metrics, worker->index);
    worker->deny_cache = rl_deny_cache_create(RL_DENY_CACHE_SLOTS);
    worker->store = rl_store_thread_create(server->store, worker->ctx.loop, worker->metrics);
    worker->accept_ctxs = calloc(n, sizeof(h2o_accept_ctx_t));
    worker->listeners = calloc(n, sizeof(h2o_socket_t *));
    if (worker->deny_cache == NULL || worker->store == NULL || worker->accept_ctxs == NULL || worker->listeners == NULL)
        return RL_ERR_NOMEM;
    worker->num_listeners = n;
    for (size_t l = 0; l < n; ++l) {
        h2o_accept_ctx_t *accept_ctx = &worker->accept_ctxs[l];
        accept_ctx->ctx = &worker->ctx;
        accept_ctx->hosts = server->hosts[server->config->listen[l].role];
        accept_ctx->ssl_ctx = server->ssl_ctxs[l];
        int fd = server->listen_fds[worker->index * n + l];
        server->listen_fds[worker->index * n + l] = -1;
        worker->listeners[l] = h2o_evloop_socket_create(worker->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        worker->listeners[l]->data = accept_ctx;
        rl_connections_accept(worker->listeners[l]);
    }
    return RL_OK;
}

static void worker_teardown(rl_worker_t *worker)
{
    h2o_loop_t *loop = worker->ctx.loop;
    rl_connections_stop(worker);
    if (h2o_timeout_is_linked(&worker->drain_entry))
        h2o_timeout_unlink(&worker->drain_entry);
    rl_store_thread_destroy(worker->store);
    worker->store = NULL;
    rl_deny_cache_destroy(worker->deny_cache);
    worker->deny_cache = NULL;
    rl_limits_release(worker->limits);
    worker->limits = NULL;
    if (worker->connections != 0) {
        /* h2o cannot abort a connection from outside; its memory goes with the process. */
        rl_log_warn("server", "thread %zu: exiting with %zu connections still open", worker->index,
                    worker->connections);
        return;
    }
    h2o_multithread_unregister_receiver(worker->queue, &worker->receiver);
    h2o_multithread_destroy_queue(worker->queue);
    h2o_timeout_dispose(loop, &worker->drain_timeout);
    rl_connections_dispose(worker);
    /* h2o_context_request_shutdown() arms a one-second GOAWAY resend that h2o 2.2.5's
     * h2o_context_dispose() does not disarm; with no connection left it has nothing to do. */
    if (h2o_timeout_is_linked(&worker->ctx.http2._graceful_shutdown_timeout))
        h2o_timeout_unlink(&worker->ctx.http2._graceful_shutdown_timeout);
    h2o_context_dispose(&worker->ctx);
    h2o_evloop_run(loop, 0); /* frees sockets closed above */
    h2o_evloop_destroy(loop);
}

static void *worker_main(void *arg)
{
    rl_worker_t *worker = arg;
    rl_log_never_block();
    /* A thread whose setup failed still runs its (listener-less) loop: start-up then fails and
     * the main thread's shutdown message stops it like the others, so no message is ever sent
     * to a queue that its thread has already destroyed. */
    if (worker_setup(worker) != RL_OK) {
        rl_log_error("server", "thread %zu: cannot set up its loop (out of memory)", worker->index);
        atomic_fetch_add(&worker->server->setup_failures, 1);
    }
    rl_server_t *server = worker->server;
    pthread_mutex_lock(&server->start_lock);
    ++server->num_ready;
    pthread_cond_signal(&server->start_cond);
    pthread_mutex_unlock(&server->start_lock);
    while (!worker->stopped)
        h2o_evloop_run(worker->ctx.loop, INT32_MAX);
    worker_teardown(worker);
    return NULL;
}

int rl_server_start(rl_server_t *server)
{
    for (size_t w = 0; w < server->num_workers; ++w) {
        rl_worker_t *worker = &server->workers[w];
        worker->server = server;
        worker->config = server->config;
        worker->index = w;
        worker->secret = &server->secret;
        worker->api_key_header = h2o_iovec_init(server->config->api_key_header, strlen(server->config->api_key_header));
        worker->key_prefix =
            h2o_iovec_init(server->config->backend.key_prefix, strlen(server->config->backend.key_prefix));
        worker->hpack_parser = server->hpack_parser;
        worker->connection_limits = server->connection_limits;
        rl_limits_retain(server->initial_limits);
        worker->limits = server->initial_limits;
    }
    /* Each thread creates its own loop and queue; they must exist before the main thread may send
     * a reload or shutdown message. */
    int rc = 0;
    while (server->num_started < server->num_workers) {
        rl_worker_t *worker = &server->workers[server->num_started];
        if ((rc = pthread_create(&worker->thread, NULL, worker_main, worker)) != 0) {
            /* the threads already running are stopped and joined by rl_server_destroy */
            rl_log_error("server", "cannot start loop thread %zu of %zu: pthread_create: %s", server->num_started + 1,
                         server->num_workers, strerror(rc));
            break;
        }
        ++server->num_started;
    }
    pthread_mutex_lock(&server->start_lock);
    while (server->num_ready != server->num_started)
        pthread_cond_wait(&server->start_cond, &server->start_lock);
    pthread_mutex_unlock(&server->start_lock);
    server->running = true;
    if (rc != 0)
        return RL_ERR_IO;
    return atomic_load(&server->setup_failures) == 0 ? RL_OK : RL_ERR_NOMEM;
}

static void send_message(rl_worker_t *worker, rl_message_kind_t kind, rl_limits_t *limits)
{
    rl_message_t *msg = calloc(1, sizeof(*msg));
    if (msg == NULL) {
        rl_log_error("server", "out of memory sending a message to thread %zu", worker->index);
        return;
    }
    msg->kind = kind;
    if (limits != NULL)
        rl_limits_retain(limits);
    msg->limits = limits;
    h2o_multithread_send_message(&worker->receiver, &msg->super);
}

void rl_server_reload(rl_server_t *server, rl_limits_t *limits)
{
    for (size_t w = 0; w < server->num_started; ++w)
        send_message(&server->workers[w], RL_MSG_RELOAD, limits);
}

void rl_server_shutdown(rl_server_t *server)
{
    atomic_store(&server->draining, true);
    rl_metrics_set_draining(server->metrics, true);
    for (size_t w = 0; w < server->num_started; ++w)
        send_message(&server->workers[w], RL_MSG_SHUTDOWN, NULL);
}

size_t rl_server_join(rl_server_t *server)
{
    size_t left_open = 0;
    for (size_t w = 0; w < server->num_started; ++w) {
        pthread_join(server->workers[w].thread, NULL);
        left_open += server->workers[w].connections;
    }
    server->running = false;
    return left_open;
}

void rl_server_destroy(rl_server_t *server)
{
    if (server == NULL)
        return;
    if (server->running) {
        rl_server_shutdown(server);
        rl_server_join(server);
    }
    pthread_cond_destroy(&server->start_cond);
    pthread_mutex_destroy(&server->start_lock);
    if (server->listen_fds != NULL) {
        for (size_t i = 0; i < server->config->num_listen * server->num_workers; ++i)
            if (server->listen_fds[i] != -1)
                close(server->listen_fds[i]);
        free(server->listen_fds);
    }
    if (server->ssl_ctxs != NULL) {
        for (size_t l = 0; l < server->config->num_listen; ++l)
            SSL_CTX_free(server->ssl_ctxs[l]);
        free(server->ssl_ctxs);
    }
    if (server->workers != NULL) {
        for (size_t w = 0; w < server->num_workers; ++w) {
            if (w >= server->num_started) /* never started: its teardown never released them */
                rl_limits_release(server->workers[w].limits);
            free(server->workers[w].accept_ctxs);
            free(server->workers[w].listeners);
        }
        free(server->workers);
    }
    rl_store_destroy(server->store);
    rl_metrics_destroy(server->metrics);
    rl_limits_release(server->initial_limits);
    h2o_config_dispose(&server->globalconf);
    free(server);
}
