/*
 * A loop thread's client connections (see connections.h).
 *
 * Each accepted connection gets a small tracking record, linked in its thread's list: the drain
 * half-closes through it, and the watchdog reads each connection's TCP_INFO through it to find
 * the ones whose peer has stopped sending and acknowledging.
 */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "ratelimitd/connections.h"
#include "ratelimitd/log.h"
#include "ratelimitd/server.h"

/*
 * When accept() finds no descriptor left, the connection stays in the kernel's backlog and the
 * listener stays readable: a thread stops accepting this long instead of spinning on it.
 */
#define RL_ACCEPT_PAUSE_MS 100
#define RL_ACCEPT_ERROR_LOG_EVERY_MS 1000

/* Tracks one accepted connection so a draining thread can half-close the idle ones. */
typedef struct st_rl_connection_t {
    h2o_linklist_t link;
    rl_worker_t *worker;
    rl_listen_role_t role; /* of its listener: which connection limit it counts against */
    h2o_socket_t *sock;
    uint64_t acked, received, progress_ms;
} rl_connection_t;

/* glibc's struct tcp_info ends before these fields of Linux >= 4.1, which follow it in the
 * kernel's layout; getsockopt says how much it filled, so an older kernel is noticed. */
struct rl_tcp_info {
    struct tcp_info base;
    uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
};

/*
 * How long a connection may go without its peer sending a byte or acknowledging one. h2o 2.2.5
 * times out idle connections only: one whose answer cannot be written (a client that never
 * reads, an HTTP/2 stream whose window is zero) or whose request never ends is not idle to it,
 * and would hold its max_connections slot and its buffers forever. Twice idle_timeout_ms, plus
 * the longest a decision may wait for memcached, leaves h2o's own timers to act first.
 */
static uint64_t stuck_after_ms(const rl_config_t *config)
{
    return 2 * (uint64_t)config->server.idle_timeout_ms +
           (config->backend.type == RL_BACKEND_MEMCACHED ? config->backend.timeout_ms : 0);
}

/* A quarter of idle_timeout_ms, at least 250 ms: one getsockopt per connection per check. */
static uint64_t watchdog_interval_ms(const rl_config_t *config)
{
    uint64_t quarter = config->server.idle_timeout_ms / 4;
    return quarter > 250 ? quarter : 250;
}

/* Whether the peer made progress since the last check; false when TCP_INFO cannot tell. */
static bool made_progress(rl_connection_t *conn, uint64_t now_ms)
{
    int fd = h2o_socket_get_fd(conn->sock);
    struct rl_tcp_info info;
    socklen_t len = sizeof(info);
    if (fd == -1 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
        len < offsetof(struct rl_tcp_info, bytes_received) + sizeof(info.bytes_received))
        return true;
    if (info.bytes_acked == conn->acked && info.bytes_received == conn->received)
        return false;
    conn->acked = info.bytes_acked;
    conn->received = info.bytes_received;
    conn->progress_ms = now_ms;
    return true;
}

/* Shuts stuck connections down; h2o then closes them through its own error path. */
static void on_watchdog(h2o_timeout_entry_t *entry)
{
    rl_worker_t *worker = H2O_STRUCT_FROM_MEMBER(rl_worker_t, watchdog_entry, entry);
    /* monotonic: h2o 2.2.5's loop time is the wall clock, and a step of it must not look stuck */
    uint64_t now = rl_now_mono_ms();
    uint64_t limit = stuck_after_ms(worker->config);
    for (h2o_linklist_t *node = worker->connection_list.next; node != &worker->connection_list; node = node->next) {
        rl_connection_t *conn = H2O_STRUCT_FROM_MEMBER(rl_connection_t, link, node);
        if (!made_progress(conn, now) && now - conn->progress_ms >= limit)
            shutdown(h2o_socket_get_fd(conn->sock), SHUT_RDWR);
    }
    h2o_timeout_link(worker->ctx.loop, &worker->watchdog_timeout, &worker->watchdog_entry);
}

static void on_connection_close(void *data)
{
    rl_connection_t *conn = data;
    rl_worker_t *worker = conn->worker;
    /* the gauge first: once the slot is free another thread may count a new connection in it */
    rl_metrics_connection_closed(worker->metrics, conn->role);
    atomic_fetch_sub_explicit(&worker->connection_limits[conn->role].open, 1, memory_order_relaxed);
    h2o_linklist_unlink(&conn->link);
    free(conn);
    --worker->connections;
}

/* Returns false when the connection must be shed (over its limit or out of memory). */
static bool track_connection(rl_worker_t *worker, rl_listen_role_t role, h2o_socket_t *sock)
{
    rl_connection_limit_t *limit = &worker->connection_limits[role];
    size_t open = atomic_fetch_add_explicit(&limit->open, 1, memory_order_relaxed);
    rl_connection_t *conn = malloc(sizeof(*conn));
    if (conn == NULL || open >= limit->max) {
        atomic_fetch_sub_explicit(&limit->open, 1, memory_order_relaxed);
        free(conn);
        return false;
    }
    *conn = (rl_connection_t){.worker = worker, .role = role, .sock = sock, .progress_ms = rl_now_mono_ms()};
    h2o_linklist_insert(&worker->connection_list, &conn->link);
    ++worker->connections;
    rl_metrics_connection_opened(worker->metrics, role);
    sock->on_close.cb = on_connection_close;
    sock->on_close.data = conn;
    return true;
}

/*
 * h2o 2.2.5 has no call that closes idle HTTP/1.1 keep-alive connections on shutdown. Once no
 * decision is in flight, shutting down the read side makes each connection see EOF at its
 * next read: h2o then closes it through its own path (freeing its state), while a response
 * still being written is not cut, because h2o does not read during a response.
 */
void rl_connections_half_close(rl_worker_t *worker)
{
    for (h2o_linklist_t *node = worker->connection_list.next; node != &worker->connection_list; node = node->next) {
        rl_connection_t *conn = H2O_STRUCT_FROM_MEMBER(rl_connection_t, link, node);
        int fd = h2o_socket_get_fd(conn->sock);
        if (fd != -1)
            shutdown(fd, SHUT_RD);
    }
}

static void on_accept(h2o_socket_t *listener, const char *err);

static void set_accepting(rl_worker_t *worker, bool accepting)
{
    for (size_t l = 0; l < worker->num_listeners; ++l) {
        if (worker->listeners[l] == NULL)
            continue;
        if (accepting)
            h2o_socket_read_start(worker->listeners[l], on_accept);
        else
            h2o_socket_read_stop(worker->listeners[l]);
    }
}

static void on_accept_pause_over(h2o_timeout_entry_t *entry)
{
    rl_worker_t *worker = H2O_STRUCT_FROM_MEMBER(rl_worker_t, accept_pause_entry, entry);
    set_accepting(worker, true);
}

/* Out of descriptors or kernel memory: stop accepting for a moment rather than spin. */
static void pause_accepting(rl_worker_t *worker, int error)
{
    rl_metrics_count_accept_pause(worker->metrics);
    uint64_t now = h2o_now(worker->ctx.loop);
    if (worker->last_accept_error_log_ms == 0 ||
        now - worker->last_accept_error_log_ms >= RL_ACCEPT_ERROR_LOG_EVERY_MS) {
        worker->last_accept_error_log_ms = now;
        rl_log_warn("server", "thread %zu: accept: %s with %zu connections open; not accepting for %d ms",
                    worker->index, strerror(error), worker->connections, RL_ACCEPT_PAUSE_MS);
    }
    set_accepting(worker, false);
    /* h2o clears the other listeners' pending readiness on read_stop, but a double link would
     * corrupt the timeout list, so do not rely on that */
    if (!h2o_timeout_is_linked(&worker->accept_pause_entry))
        h2o_timeout_link(worker->ctx.loop, &worker->accept_pause_timeout, &worker->accept_pause_entry);
}

/* accept() errors that leave the connection in the backlog until resources come back */
static bool accept_lacks_resources(int error)
{
    return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    h2o_accept_ctx_t *accept_ctx = listener->data;
    rl_worker_t *worker = H2O_STRUCT_FROM_MEMBER(rl_worker_t, ctx, accept_ctx->ctx);
    if (err != NULL)
        return;
    /* a listener's data is this worker's accept context of the same index as its config entry */
    size_t index = (size_t)(accept_ctx - worker->accept_ctxs);
    assert(index < worker->num_listeners);
    rl_listen_role_t role = worker->config->listen[index].role;
    /* Accept a bounded batch per wake-up so one busy listener cannot starve the loop. */
    for (int i = 0; i < 16; ++i) {
        errno = 0;
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL) {
            if (accept_lacks_resources(errno))
                pause_accepting(worker, errno);
            return;
        }
        if (!track_connection(worker, role, sock)) {
            rl_metrics_count_connection_shed(worker->metrics, role);
            h2o_socket_close(sock); /* shed before any parsing */
            continue;
        }
        h2o_accept(accept_ctx, sock);
    }
}

void rl_connections_close_listeners(rl_worker_t *worker)
{
    if (h2o_timeout_is_linked(&worker->accept_pause_entry))
        h2o_timeout_unlink(&worker->accept_pause_entry);
    for (size_t l = 0; l < worker->num_listeners; ++l) {
        if (worker->listeners[l] != NULL) {
            h2o_socket_read_stop(worker->listeners[l]);
            h2o_socket_close(worker->listeners[l]);
            worker->listeners[l] = NULL;
        }
    }
}

void rl_connections_init(rl_worker_t *worker)
{
    h2o_loop_t *loop = worker->ctx.loop;
    h2o_linklist_init_anchor(&worker->connection_list);
    h2o_timeout_init(loop, &worker->accept_pause_timeout, RL_ACCEPT_PAUSE_MS);
    worker->accept_pause_entry = (h2o_timeout_entry_t){.cb = on_accept_pause_over};
    h2o_timeout_init(loop, &worker->watchdog_timeout, watchdog_interval_ms(worker->config));
    worker->watchdog_entry = (h2o_timeout_entry_t){.cb = on_watchdog};
    h2o_timeout_link(loop, &worker->watchdog_timeout, &worker->watchdog_entry);
}

void rl_connections_accept(h2o_socket_t *listener)
{
    h2o_socket_read_start(listener, on_accept);
}

void rl_connections_stop(rl_worker_t *worker)
{
    rl_connections_close_listeners(worker);
    if (h2o_timeout_is_linked(&worker->watchdog_entry))
        h2o_timeout_unlink(&worker->watchdog_entry);
}

void rl_connections_dispose(rl_worker_t *worker)
{
    h2o_timeout_dispose(worker->ctx.loop, &worker->accept_pause_timeout);
    h2o_timeout_dispose(worker->ctx.loop, &worker->watchdog_timeout);
}
