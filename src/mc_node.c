/*
 * One loop thread's pipelined connection to one memcached node, and the node's failure policy.
 *
 * Pipelining: a command is encoded into `out` at rl_store_incr() time and the node is flushed
 * from a 0 ms timeout. h2o 2.2.5's evloop runs timeouts after the loop turn's socket callbacks
 * (h2o_evloop_run: poll, run_pending, then every h2o_timeout_t), so every increment that the
 * turn's requests produced for this node leaves in one write, or with the next turn's when the
 * batch is small (on_flush: it waits RL_MC_HOLD_TURNS turns at most). memcached charges per read(), not
 * per command: measured, ~70 us of its CPU per single-request round trip versus ~2.75 us per
 * request in batches of 64. h2o allows one write in flight, so `writing` is what the socket
 * owns and `out` accumulates meanwhile; on_write_complete sends the accumulation in one write.
 *
 * Replies come back in order, so ops wait in a FIFO and each reply completes the head, which
 * must echo the head's opaque. A timed-out or cancelled op loses its callback but keeps its
 * place, because its reply will still arrive and must be consumed in turn.
 *
 * Failure policy (twemproxy's server_failure_limit / server_retry_timeout, as data): a lost
 * connection, a connect error, garbage, or a stall (timeouts within one timeout_ms) is one
 * failure; `failure_limit` in a row eject the node from this thread's ring for
 * `retry_interval_ms`; a correct increment reply in time resets the count, and so does a probe's,
 * on the terms of on_success. A closed node that is not ejected reconnects after an exponential
 * backoff (10 ms doubling, per-thread jitter); an ejected one after the retry interval, and
 * rejoins the ring on its first correct reply (the `mn` sent on connect).
 *
 * Re-resolution: a memcached host given by name can move (a rescheduled pod gets a new IP), so a
 * reconnect of such a node first looks the name up again on a thread of its own (resolver.c: a
 * loop thread never blocks in DNS, and one slow name never delays another) and connects to the
 * answer. The node stays CLOSED meanwhile, so requests for it fail fast as during any reconnect.
 * A lookup that fails is a failure like a refused connect. The first connect uses the start-up
 * resolution (or looks the name up, if it did not resolve at start-up), and IP literals are never
 * looked up again.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include "ratelimitd/error.h"
#include "ratelimitd/log.h"
#include "ratelimitd/mc_node.h"
#include "ratelimitd/mc_proto.h"

#define RL_MC_INITIAL_BUFFER 4096

static void on_read(h2o_socket_t *sock, const char *err);
static void on_write_complete(h2o_socket_t *sock, const char *err);
static void node_fail(rl_mc_node_t *node, int cause);

static int bytes_reserve(rl_mc_bytes_t *bytes, size_t extra)
{
    if (bytes->cap - bytes->len >= extra)
        return RL_OK;
    size_t cap = bytes->cap == 0 ? RL_MC_INITIAL_BUFFER : bytes->cap;
    while (cap - bytes->len < extra)
        cap *= 2;
    char *base = realloc(bytes->base, cap);
    if (base == NULL)
        return RL_ERR_NOMEM;
    bytes->base = base;
    bytes->cap = cap;
    return RL_OK;
}

static const rl_mc_store_t *store_of(const rl_mc_node_t *node)
{
    return node->thread->store;
}

/* Links `entry` into a 0 ms timeout, due in the next timeout pass whatever the wall clock does.
 * h2o's loop clock is the wall clock and it stamps an entry with it: an entry linked after its
 * timeout's pass in this turn (from a later timeout's callback, or a held batch) would, after a
 * step back (NTP), not be due until the clock came back to that time, and every increment queued
 * for the node would wait behind it. */
static void link_due(h2o_loop_t *loop, h2o_timeout_t *timeout, h2o_timeout_entry_t *entry)
{
    h2o_timeout_link(loop, timeout, entry);
    entry->registered_at = 0;
}

/* A held batch is not flushed: on_hold looks at it, with whatever joined it, in the next turn. An
 * increment can join it within the very flush pass that held it (a failed write to another node
 * answers its requests from that pass, and their connections' next requests come in at once);
 * linking the flush then would run on_flush again in that pass and link the held entry twice. */
static void schedule_flush(rl_mc_node_t *node)
{
    if (node->state == RL_MC_NODE_CONNECTED && !h2o_timeout_is_linked(&node->flush_entry) &&
        !h2o_timeout_is_linked(&node->hold_entry))
        link_due(node->thread->loop, &node->thread->flush_timeout, &node->flush_entry);
}

/* Only writes that carried an increment count: the counters measure pipelining depth, which an
 * idle node's lone probes would dilute (and make an idle daemon look busy). */
static void count_write(rl_mc_node_t *node, size_t increments)
{
    if (increments == 0)
        return;
    ++node->stats.writes;
    node->stats.write_requests += increments;
    if (node->thread->metrics != NULL)
        rl_metrics_count_backend_write(node->thread->metrics, node->index, increments);
}

/* Hands `out` to the socket unless a write is already in flight (then on_write_complete will). */
static void write_out(rl_mc_node_t *node)
{
    if (node->state != RL_MC_NODE_CONNECTED || h2o_socket_is_writing(node->sock) || node->out.len == 0)
        return;
    rl_mc_bytes_t swap = node->writing;
    node->writing = node->out;
    node->out = swap;
    node->out.len = 0;
    count_write(node, node->out_increments);
    node->out_increments = 0;
    node->held_turns = 0;
    h2o_iovec_t buf = h2o_iovec_init(node->writing.base, node->writing.len);
    h2o_socket_write(node->sock, &buf, 1, on_write_complete);
}

/* A small batch that shows concurrency (2 or more increments) waits for the next loop turns'
 * increments for this node to join it: each write costs memcached a wake-up, a read and a send,
 * and on a shared core two context switches, whatever it carries (docs/BENCHMARKS.md, finding 10).
 * A lone increment (an idle daemon) and a batch of RL_MC_HOLD_BELOW leave at once, and nothing
 * waits more than RL_MC_HOLD_TURNS turns: the held entry is due at once (link_due), so the loop
 * polls without sleeping and runs it in the next turn, before that turn's flushes. */
static bool may_hold(const rl_mc_node_t *node)
{
    return node->out_increments >= 2 && node->out_increments < RL_MC_HOLD_BELOW && node->held_turns < RL_MC_HOLD_TURNS;
}

static void on_flush(h2o_timeout_entry_t *entry)
{
    rl_mc_node_t *node = H2O_STRUCT_FROM_MEMBER(rl_mc_node_t, flush_entry, entry);
    if (may_hold(node)) {
        ++node->held_turns;
        link_due(node->thread->loop, &node->thread->hold_timeout, &node->hold_entry);
        return;
    }
    write_out(node);
}

/* Runs in the turn after a hold, before that turn's flushes (no flush is linked for a held node:
 * schedule_flush). A batch still small may wait another turn; it is held again from this turn's
 * flush, which runs after this turn's increments have joined it (relinking it here would run it
 * again in this very pass of hold_timeout). */
static void on_hold(h2o_timeout_entry_t *entry)
{
    rl_mc_node_t *node = H2O_STRUCT_FROM_MEMBER(rl_mc_node_t, hold_entry, entry);
    if (may_hold(node))
        schedule_flush(node);
    else
        write_out(node);
}

static void on_write_complete(h2o_socket_t *sock, const char *err)
{
    rl_mc_node_t *node = sock->data;
    if (node == NULL)
        return;
    if (err != NULL) {
        rl_log_debug("memcached", "write to %s failed: %s", store_of(node)->nodes[node->index].name, err);
        node_fail(node, RL_ERR_BACKEND_DOWN);
        return;
    }
    node->writing.len = 0;
    write_out(node);
}

static void on_op_timeout(h2o_timeout_entry_t *entry);

/* Links `op` at the tail of the FIFO with its deadline. */
static void enqueue(rl_mc_node_t *node, rl_mc_op_t *op)
{
    op->node = node;
    op->issued_usec = rl_mc_now_usec();
    op->timed_out = false;
    op->timeout.cb = on_op_timeout;
    h2o_linklist_insert(&node->fifo, &op->link);
    ++node->num_pending;
    h2o_timeout_link(node->thread->loop, &node->thread->request_timeout, &op->timeout);
    node->last_activity_ms = h2o_now(node->thread->loop);
    schedule_flush(node);
}

int rl_mc_node_send_incr(rl_mc_node_t *node, rl_mc_op_t *op, const char *key, size_t key_len)
{
    if (bytes_reserve(&node->out, RL_MC_INCR_MAX_LEN) != RL_OK)
        return RL_ERR_NOMEM;
    uint32_t opaque = node->next_opaque++;
    size_t len = rl_mc_encode_incr(node->out.base + node->out.len, node->out.cap - node->out.len, key, key_len,
                                   store_of(node)->window_ttl_s, opaque);
    if (len == 0)
        return RL_ERR_INVALID;
    node->out.len += len;
    ++node->out_increments;
    op->opaque = opaque;
    op->is_probe = false;
    enqueue(node, op);
    return RL_OK;
}

static void send_probe(rl_mc_node_t *node)
{
    rl_mc_op_t *op;
    if (node->probe_in_flight || bytes_reserve(&node->out, 4) != RL_OK || (op = rl_mc_op_alloc(node->thread)) == NULL)
        return;
    node->out.len += rl_mc_encode_noop(node->out.base + node->out.len, node->out.cap - node->out.len);
    op->cb = NULL;
    op->cbdata = NULL;
    op->is_probe = true;
    node->probe_in_flight = true;
    ++node->stats.probes;
    enqueue(node, op);
}

void rl_mc_node_probe_if_idle(rl_mc_node_t *node, uint64_t now_ms)
{
    if (node->state == RL_MC_NODE_CONNECTED && now_ms - node->last_activity_ms >= RL_MC_PROBE_IDLE_MS)
        send_probe(node);
}

/* Removes `op` from its list and the timer, frees it; returns its callback (NULL if abandoned). */
static rl_store_cb unlink_op(rl_mc_node_t *node, rl_mc_op_t *op, void **cbdata)
{
    h2o_linklist_unlink(&op->link);
    h2o_timeout_unlink(&op->timeout);
    if (op->is_probe)
        node->probe_in_flight = false;
    rl_store_cb cb = op->cb;
    *cbdata = op->cbdata;
    rl_mc_op_free(node->thread, op);
    return cb;
}

/*
 * Completes every op in the FIFO: the first with `first_status`, the rest with `status`. The
 * FIFO is detached first, so callbacks that issue new increments see an empty node. Returns
 * whether a callback received `first_status` (the head may be a probe, or abandoned).
 */
static bool fail_pending(rl_mc_node_t *node, int first_status, int status)
{
    h2o_linklist_t detached;
    h2o_linklist_init_anchor(&detached);
    h2o_linklist_insert_list(&detached, &node->fifo);
    node->num_pending = 0;
    node->probe_in_flight = false;
    bool delivered = false;
    for (bool head = true; !h2o_linklist_is_empty(&detached); head = false) {
        rl_mc_op_t *op = H2O_STRUCT_FROM_MEMBER(rl_mc_op_t, link, detached.next);
        int current = head ? first_status : status;
        void *cbdata;
        rl_store_cb cb = unlink_op(node, op, &cbdata);
        if (cb != NULL) {
            if (current != RL_ERR_CANCELLED)
                rl_mc_count_error(node->thread, node->index, current);
            delivered |= head;
            cb(cbdata, current, 0);
        }
    }
    return delivered;
}

static void close_socket(rl_mc_node_t *node)
{
    if (node->sock != NULL) {
        node->sock->data = NULL;
        h2o_socket_close(node->sock);
        node->sock = NULL;
    }
    node->state = RL_MC_NODE_CLOSED;
    node->healthy = false;
    node->out.len = 0;
    node->writing.len = 0;
    node->out_increments = 0;
    node->held_turns = 0;
    h2o_timeout_unlink(&node->flush_entry);
    h2o_timeout_unlink(&node->hold_entry);
    h2o_timeout_unlink(&node->connect_entry);
}

static void eject(rl_mc_node_t *node)
{
    rl_mc_thread_t *thread = node->thread;
    node->ejected = true;
    ++node->stats.ejections;
    rl_log_warn("memcached", "node %s ejected after %u consecutive failures; retrying in %u ms",
                store_of(node)->nodes[node->index].name, node->consecutive_failures, store_of(node)->retry_interval_ms);
    if (thread->metrics != NULL) {
        rl_metrics_set_node_up(thread->metrics, node->index, false);
        rl_metrics_count_node_ejection(thread->metrics, node->index);
    }
    rl_mc_thread_rebuild_ring(thread);
}

static void schedule_reconnect(rl_mc_node_t *node)
{
    rl_mc_thread_t *thread = node->thread;
    h2o_timeout_unlink(&node->reconnect_entry);
    if (node->ejected) {
        h2o_timeout_link(thread->loop, &thread->retry_timeout, &node->reconnect_entry);
        return;
    }
    size_t level = node->backoff_level < thread->num_backoff ? node->backoff_level : thread->num_backoff - 1;
    if (node->backoff_level < thread->num_backoff)
        ++node->backoff_level;
    h2o_timeout_link(thread->loop, &thread->backoff[level], &node->reconnect_entry);
}

/*
 * Closes the connection after a failure already counted, ejects at the limit, fails the FIFO.
 * Returns whether a request was failed with `cause` (and so counted it as an error).
 */
static bool drop_connection(rl_mc_node_t *node, int cause)
{
    node->streak_dropped = true;
    close_socket(node);
    if (!node->ejected && node->consecutive_failures >= store_of(node)->failure_limit)
        eject(node);
    schedule_reconnect(node);
    return fail_pending(node, cause, RL_ERR_BACKEND_DOWN);
}

static void node_fail(rl_mc_node_t *node, int cause)
{
    ++node->stats.failures;
    ++node->consecutive_failures;
    /* A failure is an error even when no request hears of it (nothing waits, or only a probe or
     * an abandoned op): errors_total must show a node that fails its every connect probe. A
     * stall's drop (on_op_timeout) is not a new failure: its timeouts were counted already. */
    if (!drop_connection(node, cause))
        rl_mc_count_error(node->thread, node->index, cause);
}

/* One line per counted stall (at most failure_limit before the node is ejected): how long the
 * request waited and when the node last answered tell a silent node from a late loop, and a
 * connect that never completes (a host gone without a reset) from a node that stopped talking. */
static void log_stall(rl_mc_node_t *node, const rl_mc_op_t *op)
{
    uint64_t now = rl_mc_now_usec();
    char last[64];
    if (node->state == RL_MC_NODE_CONNECTING)
        snprintf(last, sizeof(last), "still connecting");
    else if (node->last_reply_usec == 0)
        snprintf(last, sizeof(last), "no reply yet");
    else
        snprintf(last, sizeof(last), "last reply %llu ms ago",
                 (unsigned long long)((now - node->last_reply_usec) / 1000));
    rl_log_warn("memcached", "node %s: no reply for %llu ms (timeout_ms %u, %zu requests waiting, %s)",
                store_of(node)->nodes[node->index].name, (unsigned long long)((now - op->issued_usec) / 1000),
                store_of(node)->timeout_ms, node->num_pending, last);
}

/*
 * h2o 2.2.5 stamps a timeout entry with the loop's cached time (whole ms, taken when the loop
 * turn started) and fires it once that cached time reaches the stamp plus the timeout: an op
 * issued late in a turn, or within a ms, can fire up to that much early ("no reply for 0 ms" at
 * timeout_ms 1). Such an op waits out the rest of its deadline, looked at again every ms: the
 * deadline is measured from issue, as the stall line reports it.
 */
static bool rearm_if_early(rl_mc_thread_t *thread, h2o_timeout_entry_t *entry, uint64_t since_usec, uint64_t timeout_ms)
{
    if (rl_mc_now_usec() - since_usec >= timeout_ms * 1000)
        return false;
    h2o_timeout_link(thread->loop, &thread->recheck_timeout, entry);
    return true;
}

static void on_op_timeout(h2o_timeout_entry_t *entry)
{
    rl_mc_op_t *op = H2O_STRUCT_FROM_MEMBER(rl_mc_op_t, timeout, entry);
    if (rearm_if_early(op->node->thread, entry, op->issued_usec, op->node->thread->store->timeout_ms))
        return;
    rl_mc_node_t *node = op->node;
    rl_store_cb cb = op->cb;
    void *cbdata = op->cbdata;
    op->cb = NULL;
    op->timed_out = true;
    /* One stall times out every op queued behind it, within timeout_ms of each other. Counting
     * each as a failure would eject a node for one hiccup as soon as failure_limit requests were
     * waiting; so a stall counts once per timeout_ms it lasts, and failure_limit means "silent
     * for that many deadlines in a row" whatever the request rate. */
    uint64_t now_ms = h2o_now(node->thread->loop);
    if (node->consecutive_failures == 0 || now_ms - node->last_timeout_failure_ms >= store_of(node)->timeout_ms) {
        ++node->stats.failures;
        ++node->consecutive_failures;
        node->last_timeout_failure_ms = now_ms;
        log_stall(node, op);
    }
    node->healthy = false;
    /* The late reply, if any, is still matched in order; meanwhile the node may be probed again. */
    if (op->is_probe)
        node->probe_in_flight = false;
    if (cb != NULL) {
        rl_mc_count_error(node->thread, node->index, RL_ERR_BACKEND_TIMEOUT);
        cb(cbdata, RL_ERR_BACKEND_TIMEOUT, 0);
    } else if (op->is_probe) {
        rl_mc_count_error(node->thread, node->index, RL_ERR_BACKEND_TIMEOUT);
    }
    /* a node that stays silent must not keep its connection (and its FIFO) forever */
    if (node->ejected || node->consecutive_failures >= store_of(node)->failure_limit)
        drop_connection(node, RL_ERR_BACKEND_DOWN);
}

/*
 * A probe (`mn`) proves the node answers, which re-admits an ejected node; only an increment
 * proves it counts. A probe answered in time ends a streak of timeouts (a stall is over once the
 * node answers; otherwise timeouts hours apart on an idle connection would add up to an ejection).
 * It ends a streak in which a connection was dropped (garbage, a close) only once the connection
 * it arrived on has been up for retry_interval_ms. Not sooner: a node that answers `mn` but
 * garbles `ma` drops every connection that carries an increment, so the probe sent on connect must
 * not end its streak; it reaches failure_limit and is ejected again on its first bad increment
 * after re-admission instead of flapping. But a connection that stays up that long (as long as an
 * ejection lasts) has carried no bad reply, so failures before it are unrelated to what follows:
 * without that, on a connection no increment uses (an idle thread, a node few keys hash to),
 * closes hours apart would add up to an ejection. Timeouts on the connection do not restart that
 * wait: a garbling node drops the connection, it does not stall it.
 */
static bool ends_streak(const rl_mc_node_t *node, bool is_probe)
{
    if (!is_probe || !node->streak_dropped)
        return true;
    return h2o_now(node->thread->loop) - node->connected_at_ms >= store_of(node)->retry_interval_ms;
}

static void on_success(rl_mc_node_t *node, bool is_probe)
{
    if (ends_streak(node, is_probe)) {
        node->consecutive_failures = 0;
        node->backoff_level = 0;
        node->streak_dropped = false;
    }
    bool was_healthy = node->healthy;
    node->healthy = true;
    if (!was_healthy && !node->ejected && node->thread->metrics != NULL)
        rl_metrics_set_node_up(node->thread->metrics, node->index, true);
    if (node->ejected) {
        node->ejected = false;
        rl_log_info("memcached", "node %s re-admitted", store_of(node)->nodes[node->index].name);
        if (node->thread->metrics != NULL)
            rl_metrics_set_node_up(node->thread->metrics, node->index, true);
        rl_mc_thread_rebuild_ring(node->thread);
    }
}

/* Whether `reply` is the answer the head of the FIFO waits for (it must echo the head's opaque). */
static bool answers_head(rl_mc_node_t *node, const rl_mc_reply_t *reply)
{
    if (h2o_linklist_is_empty(&node->fifo))
        return false;
    const rl_mc_op_t *op = H2O_STRUCT_FROM_MEMBER(rl_mc_op_t, link, node->fifo.next);
    return op->is_probe
               ? reply->kind == RL_MC_REPLY_MN
               : reply->kind == RL_MC_REPLY_VA && reply->has_opaque && reply->opaque == op->opaque && reply->value != 0;
}

/* Completes the head of the FIFO with `reply`, which answers_head() accepted. Returns whether
 * it answered an increment (not a probe). */
static bool complete_head(rl_mc_node_t *node, const rl_mc_reply_t *reply, uint64_t now_usec)
{
    rl_mc_op_t *op = H2O_STRUCT_FROM_MEMBER(rl_mc_op_t, link, node->fifo.next);
    bool is_increment = !op->is_probe;
    node->last_reply_usec = now_usec;
    if (is_increment) {
        ++node->stats.replies;
        if (node->thread->metrics != NULL)
            rl_metrics_observe_backend_latency(node->thread->metrics, now_usec - op->issued_usec);
    }
    node->last_activity_ms = h2o_now(node->thread->loop);
    /* A reply after its deadline was a failure already. Letting it end the streak would keep a
     * node that always answers after timeout_ms, and so fails every decision, in the ring for
     * ever (timeout, late reply, timeout, ...); a node is healthy again on an answer in time. */
    if (!op->timed_out)
        on_success(node, op->is_probe);
    --node->num_pending;
    void *cbdata;
    rl_store_cb cb = unlink_op(node, op, &cbdata);
    if (cb != NULL)
        cb(cbdata, RL_OK, reply->value);
    return is_increment;
}

/*
 * Logs what the node sent instead of the expected reply: its first line, non-printable bytes as
 * '.', so "SERVER_ERROR Out of memory allocating new item" or a Redis "-ERR" reads as such.
 */
static void log_bad_reply(const rl_mc_node_t *node, const char *bytes, size_t len)
{
    char line[81];
    size_t n = 0;
    while (n < len && n < sizeof(line) - 1 && bytes[n] != '\r' && bytes[n] != '\n') {
        line[n] = bytes[n] >= 0x20 && bytes[n] <= 0x7e ? bytes[n] : '.';
        ++n;
    }
    line[n] = '\0';
    rl_log_warn("memcached", "node %s sent an invalid or unexpected reply: \"%s\"%s",
                store_of(node)->nodes[node->index].name, line,
                n < len && bytes[n] != '\r' && bytes[n] != '\n' ? "..." : "");
}

/* Only reads that completed an increment's reply count: partial reads and probes' replies say
 * nothing about batching. */
static void count_read(rl_mc_node_t *node, size_t replies)
{
    if (replies == 0)
        return;
    ++node->stats.reads;
    if (node->thread->metrics != NULL)
        rl_metrics_count_backend_read(node->thread->metrics, node->index, replies);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    rl_mc_node_t *node = sock->data;
    if (node == NULL)
        return;
    if (err != NULL) {
        /* what the node sent before closing was the start of a reply: a truncated reply */
        bool truncated = sock->input->size != 0;
        if (truncated)
            log_bad_reply(node, sock->input->bytes, sock->input->size);
        node_fail(node, truncated ? RL_ERR_BACKEND_PROTOCOL : RL_ERR_BACKEND_DOWN);
        return;
    }
    uint64_t now_usec = rl_mc_now_usec();
    size_t replies = 0; /* to increments */
    while (sock->input->size != 0) {
        rl_mc_reply_t reply;
        size_t used;
        int ret = rl_mc_parse_reply(sock->input->bytes, sock->input->size, &reply, &used);
        if (ret == RL_ERR_NEED_MORE)
            break;
        if (ret != RL_OK || !answers_head(node, &reply)) {
            count_read(node, replies);
            log_bad_reply(node, sock->input->bytes, sock->input->size);
            node_fail(node, RL_ERR_BACKEND_PROTOCOL);
            return;
        }
        h2o_buffer_consume(&sock->input, used);
        replies += complete_head(node, &reply, now_usec);
        if (node->sock != sock) /* a callback tore the connection down */
            return;
    }
    count_read(node, replies);
}

static void on_connect(h2o_socket_t *sock, const char *err)
{
    rl_mc_node_t *node = sock->data;
    if (node == NULL)
        return;
    h2o_timeout_unlink(&node->connect_entry);
    if (err != NULL) {
        rl_log_debug("memcached", "connect to %s failed: %s", store_of(node)->nodes[node->index].name, err);
        node_fail(node, RL_ERR_BACKEND_DOWN);
        return;
    }
    node->state = RL_MC_NODE_CONNECTED;
    node->connected_at_ms = h2o_now(node->thread->loop);
    h2o_socket_read_start(sock, on_read);
    /* proves the node answers: readiness, and re-admission of an ejected node */
    send_probe(node);
    schedule_flush(node);
}

/* The connect deadline, like an op's, is a wall-clock timer in h2o 2.2.5: after a clock step
 * forward it fires at once, and would fail the increments queued behind the connect before their
 * own timeout_ms. So it too waits out the rest of its time on the monotonic clock. */
static void on_connect_timeout(h2o_timeout_entry_t *entry)
{
    rl_mc_node_t *node = H2O_STRUCT_FROM_MEMBER(rl_mc_node_t, connect_entry, entry);
    if (rearm_if_early(node->thread, entry, node->connect_started_usec, node->thread->connect_timeout.timeout))
        return;
    node_fail(node, RL_ERR_BACKEND_DOWN);
}

/* "192.0.2.1:11211" or "[2001:db8::1]:11211"; no DNS (numeric only). */
static void format_address(const struct sockaddr_storage *addr, socklen_t addrlen, char *buf, size_t cap)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo((const struct sockaddr *)addr, addrlen, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(buf, cap, "(unprintable address)");
        return;
    }
    snprintf(buf, cap, addr->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

/* Makes `ai` the node's address for this and later connects, and says so if it moved. */
static void adopt_address(rl_mc_node_t *node, const struct addrinfo *ai)
{
    struct sockaddr_storage addr = {0};
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    /* compared as text: the same address can differ in bytes nobody reads (sin_zero, padding) */
    char now[NI_MAXHOST + 16], was[NI_MAXHOST + 16];
    format_address(&addr, ai->ai_addrlen, now, sizeof(now));
    if (node->addrlen == 0) {
        rl_log_info("memcached", "node %s resolved to %s", store_of(node)->nodes[node->index].name, now);
        node->addr = addr;
        node->addrlen = ai->ai_addrlen;
        return;
    }
    format_address(&node->addr, node->addrlen, was, sizeof(was));
    if (strcmp(now, was) == 0)
        return;
    rl_log_info("memcached", "node %s now at %s (was %s)", store_of(node)->nodes[node->index].name, now, was);
    node->addr = addr;
    node->addrlen = ai->ai_addrlen;
    ++node->stats.address_changes;
}

/* Loop thread: the answer to resolve_then_connect. */
static void on_lookup(void *cbdata, const char *errstr, const struct addrinfo *res)
{
    rl_mc_node_t *node = cbdata;
    const rl_node_config_t *config = &store_of(node)->nodes[node->index];
    node->lookup = NULL;
    if (errstr != NULL || res == NULL || res->ai_addrlen > sizeof(node->addr)) {
        rl_log_warn("memcached", "node %s: cannot resolve %s: %s", config->name, config->host,
                    errstr != NULL ? errstr : "no usable address");
        node_fail(node, RL_ERR_BACKEND_DOWN);
        return;
    }
    /* the first answer, as at start-up: getaddrinfo has already ordered them by preference */
    adopt_address(node, res);
    rl_mc_node_connect(node);
}

static void resolve_then_connect(rl_mc_node_t *node)
{
    const rl_node_config_t *config = &store_of(node)->nodes[node->index];
    ++node->stats.lookups;
    node->lookup = rl_resolver_lookup(node->thread->resolver, config->host, config->port, on_lookup, node);
    if (node->lookup == NULL) {
        rl_log_warn("memcached", "node %s: cannot start a lookup of %s: %s", config->name, config->host,
                    strerror(errno));
        node_fail(node, RL_ERR_BACKEND_DOWN);
    }
}

/* Every reconnect follows a failure, and a failure may mean the name now points elsewhere. */
static void on_reconnect(h2o_timeout_entry_t *entry)
{
    rl_mc_node_t *node = H2O_STRUCT_FROM_MEMBER(rl_mc_node_t, reconnect_entry, entry);
    if (store_of(node)->is_name[node->index] && node->thread->resolver != NULL)
        resolve_then_connect(node);
    else
        rl_mc_node_connect(node);
}

void rl_mc_node_start(rl_mc_node_t *node)
{
    if (node->addrlen == 0)
        resolve_then_connect(node);
    else
        rl_mc_node_connect(node);
}

void rl_mc_node_connect(rl_mc_node_t *node)
{
    h2o_socket_t *sock =
        h2o_socket_connect(node->thread->loop, (struct sockaddr *)&node->addr, node->addrlen, on_connect);
    if (sock == NULL) {
        node_fail(node, RL_ERR_BACKEND_DOWN);
        return;
    }
    sock->data = node;
    node->sock = sock;
    node->state = RL_MC_NODE_CONNECTING;
    node->connect_started_usec = rl_mc_now_usec();
    h2o_timeout_link(node->thread->loop, &node->thread->connect_timeout, &node->connect_entry);
}

void rl_mc_node_init(rl_mc_node_t *node, rl_mc_thread_t *thread, size_t index)
{
    memset(node, 0, sizeof(*node));
    node->thread = thread;
    node->index = index;
    h2o_linklist_init_anchor(&node->fifo);
    node->flush_entry.cb = on_flush;
    node->hold_entry.cb = on_hold;
    node->reconnect_entry.cb = on_reconnect;
    node->connect_entry.cb = on_connect_timeout;
    node->last_activity_ms = h2o_now(thread->loop);
    node->addr = thread->store->addrs[index];
    node->addrlen = thread->store->addrlens[index];
}

void rl_mc_node_dispose(rl_mc_node_t *node, int status)
{
    if (node->lookup != NULL) {
        /* from here on on_lookup is never called with this node */
        rl_lookup_cancel(node->lookup);
        node->lookup = NULL;
    }
    close_socket(node);
    h2o_timeout_unlink(&node->reconnect_entry);
    fail_pending(node, status, status);
    free(node->out.base);
    free(node->writing.base);
    node->out = (rl_mc_bytes_t){NULL, 0, 0};
    node->writing = (rl_mc_bytes_t){NULL, 0, 0};
}
