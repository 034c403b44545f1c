/*
 * The memcached store: a pool of memcached nodes shared by every ratelimitd instance, each
 * counter on the node the ketama ring picks for its key.
 *
 * Split of work: the process-wide rl_mc_store_t holds settings and the addresses resolved at
 * start-up, here on the main thread. A name that does not resolve yet (a memcached pod still
 * pending) starts its node down, and its first connect looks it up again.
 * Each loop thread builds its own rl_mc_thread_t on its own loop: one pipelined connection per
 * node (mc_node.c) with its own copy of the node's address, which a reconnect refreshes when the
 * host is a name (asynchronously, through the thread's resolver: a loop thread must never block
 * in DNS); its own ring (a memcached_st is not thread-safe), its own timers and a free list
 * of ops, so the request path takes no lock and, in steady state, no malloc. Ejection is per
 * thread: each thread learns on its own that a node is down, which costs at most failure_limit
 * errors per thread and avoids any cross-thread signalling.
 */
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ratelimitd/error.h"
#include "ratelimitd/log.h"
#include "ratelimitd/mc_node.h"
#include "ratelimitd/resolver.h"

#define RL_MC_CONNECT_TIMEOUT_MS 1000

static const rl_store_vtable_t vtable;

uint64_t rl_mc_now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

rl_mc_op_t *rl_mc_op_alloc(rl_mc_thread_t *thread)
{
    rl_mc_op_t *op;
    if (!h2o_linklist_is_empty(&thread->free_ops)) {
        op = H2O_STRUCT_FROM_MEMBER(rl_mc_op_t, link, thread->free_ops.next);
        h2o_linklist_unlink(&op->link);
    } else if ((op = malloc(sizeof(*op))) == NULL) {
        return NULL;
    }
    memset(op, 0, sizeof(*op));
    return op;
}

void rl_mc_op_free(rl_mc_thread_t *thread, rl_mc_op_t *op)
{
    h2o_linklist_insert(&thread->free_ops, &op->link);
}

void rl_mc_count_error(rl_mc_thread_t *thread, size_t node, int status)
{
    if (thread->metrics != NULL)
        rl_metrics_count_backend_error(thread->metrics, node, status);
}

void rl_mc_thread_rebuild_ring(rl_mc_thread_t *thread)
{
    const rl_mc_store_t *store = thread->store;
    bool live[store->num_nodes];
    for (size_t i = 0; i != store->num_nodes; ++i)
        live[i] = !thread->nodes[i].ejected;
    rl_ring_t *ring = rl_ring_create(store->nodes, store->num_nodes, live);
    if (ring == NULL) {
        /* incr() still refuses ejected nodes, so a stale ring only costs their keys errors */
        rl_log_error("memcached", "cannot rebuild the ring: out of memory");
        return;
    }
    rl_ring_destroy(thread->ring);
    thread->ring = ring;
}

/* Loop thread. Probes the nodes that have been idle, then re-arms itself. */
static void on_probe_tick(h2o_timeout_entry_t *entry)
{
    rl_mc_thread_t *thread = H2O_STRUCT_FROM_MEMBER(rl_mc_thread_t, probe_entry, entry);
    uint64_t now_ms = h2o_now(thread->loop);
    for (size_t i = 0; i != thread->store->num_nodes; ++i)
        rl_mc_node_probe_if_idle(&thread->nodes[i], now_ms);
    h2o_timeout_link(thread->loop, &thread->probe_timeout, &thread->probe_entry);
}

/*
 * Reconnect delays: 10 ms doubling up to the retry interval. h2o 2.2.5 timeouts have one fixed
 * duration each, so each level is its own h2o_timeout_t. The jitter (0-20%) is drawn once per
 * thread: enough to keep threads and pods from reconnecting in lockstep.
 */
static void init_backoff(rl_mc_thread_t *thread)
{
    uint64_t retry = thread->store->retry_interval_ms;
    unsigned seed = (unsigned)(rl_mc_now_usec() ^ (uintptr_t)thread);
    uint64_t delay = RL_MC_BACKOFF_MIN_MS;
    thread->num_backoff = 0;
    while (thread->num_backoff != RL_MC_BACKOFF_LEVELS) {
        uint64_t base = delay < retry ? delay : retry;
        uint64_t jittered = base + base * (uint64_t)(rand_r(&seed) % 21) / 100;
        h2o_timeout_init(thread->loop, &thread->backoff[thread->num_backoff++], jittered);
        if (base == retry)
            break;
        delay *= 2;
    }
}

static void dispose_timeouts(rl_mc_thread_t *thread)
{
    h2o_timeout_unlink(&thread->probe_entry);
    h2o_timeout_dispose(thread->loop, &thread->request_timeout);
    h2o_timeout_dispose(thread->loop, &thread->recheck_timeout);
    h2o_timeout_dispose(thread->loop, &thread->connect_timeout);
    h2o_timeout_dispose(thread->loop, &thread->flush_timeout);
    h2o_timeout_dispose(thread->loop, &thread->hold_timeout);
    h2o_timeout_dispose(thread->loop, &thread->retry_timeout);
    h2o_timeout_dispose(thread->loop, &thread->probe_timeout);
    for (size_t i = 0; i != thread->num_backoff; ++i)
        h2o_timeout_dispose(thread->loop, &thread->backoff[i]);
}

static void thread_destroy(rl_store_thread_t *super)
{
    rl_mc_thread_t *thread = (rl_mc_thread_t *)super;
    if (thread == NULL)
        return;
    thread->closing = true;
    if (thread->nodes != NULL) {
        for (size_t i = 0; i != thread->store->num_nodes; ++i)
            rl_mc_node_dispose(&thread->nodes[i], RL_ERR_CANCELLED);
    }
    rl_resolver_dispose(thread->resolver);
    dispose_timeouts(thread);
    while (!h2o_linklist_is_empty(&thread->free_ops)) {
        rl_mc_op_t *op = H2O_STRUCT_FROM_MEMBER(rl_mc_op_t, link, thread->free_ops.next);
        h2o_linklist_unlink(&op->link);
        free(op);
    }
    rl_ring_destroy(thread->ring);
    rl_ring_destroy(thread->full_ring);
    free(thread->nodes);
    free(thread);
}

static bool any_name(const rl_mc_store_t *store)
{
    for (size_t i = 0; i != store->num_nodes; ++i)
        if (store->is_name[i])
            return true;
    return false;
}

/* Loop thread: builds this thread's ring, timers and nodes, and starts connecting. */
static rl_store_thread_t *thread_create(rl_store_t *super, h2o_loop_t *loop, rl_metrics_thread_t *metrics)
{
    const rl_mc_store_t *store = (const rl_mc_store_t *)super;
    rl_mc_thread_t *thread = calloc(1, sizeof(*thread));
    if (thread == NULL)
        return NULL;
    thread->super.store = super;
    thread->store = store;
    thread->loop = loop;
    thread->metrics = metrics;
    h2o_linklist_init_anchor(&thread->free_ops);
    h2o_timeout_init(loop, &thread->request_timeout, store->timeout_ms);
    h2o_timeout_init(loop, &thread->recheck_timeout, RL_MC_RECHECK_MS);
    h2o_timeout_init(loop, &thread->connect_timeout,
                     store->timeout_ms > RL_MC_CONNECT_TIMEOUT_MS ? store->timeout_ms : RL_MC_CONNECT_TIMEOUT_MS);
    /* the order matters: h2o runs a loop's timeouts in the order they were initialised */
    h2o_timeout_init(loop, &thread->hold_timeout, 0);
    h2o_timeout_init(loop, &thread->flush_timeout, 0);
    h2o_timeout_init(loop, &thread->retry_timeout, store->retry_interval_ms);
    h2o_timeout_init(loop, &thread->probe_timeout, RL_MC_PROBE_TICK_MS);
    init_backoff(thread);
    thread->probe_entry.cb = on_probe_tick;
    /* only names need a resolver: an all-literal pool costs no queue, no pipe, no resolver thread.
     * The nodes come last: thread_destroy disposes every node of a non-NULL array. */
    if ((thread->ring = rl_ring_create(store->nodes, store->num_nodes, NULL)) == NULL ||
        (thread->full_ring = rl_ring_create(store->nodes, store->num_nodes, NULL)) == NULL ||
        (any_name(store) && (thread->resolver = rl_resolver_create(loop)) == NULL) ||
        (thread->nodes = calloc(store->num_nodes, sizeof(*thread->nodes))) == NULL) {
        thread_destroy(&thread->super);
        return NULL;
    }
    /* node_up stays unknown (rendered 0) until the node first answers. */
    for (size_t i = 0; i != store->num_nodes; ++i)
        rl_mc_node_init(&thread->nodes[i], thread, i);
    for (size_t i = 0; i != store->num_nodes; ++i)
        rl_mc_node_start(&thread->nodes[i]);
    h2o_timeout_link(loop, &thread->probe_timeout, &thread->probe_entry);
    return &thread->super;
}

/* Completes an increment before incr() returns: *op is cleared first, as store.h promises. */
static void complete_now(rl_mc_thread_t *thread, int node, int status, rl_store_cb cb, void *cbdata, rl_store_op_t **op)
{
    *op = NULL;
    if (node >= 0 && status != RL_ERR_CANCELLED)
        rl_mc_count_error(thread, (size_t)node, status);
    cb(cbdata, status, 0);
}

static void incr(rl_store_thread_t *super, const rl_counter_key_t *key, rl_store_cb cb, void *cbdata,
                 rl_store_op_t **handle)
{
    rl_mc_thread_t *thread = (rl_mc_thread_t *)super;
    if (thread->closing) {
        complete_now(thread, -1, RL_ERR_CANCELLED, cb, cbdata, handle);
        return;
    }
    int index = rl_ring_lookup(thread->ring, key->mckey, key->placement_len);
    if (index < 0) {
        /* Every node is ejected. The error is charged to the key's own node, so that errors by
         * node add up to the decisions that failed. */
        index = rl_ring_lookup(thread->full_ring, key->mckey, key->placement_len);
        complete_now(thread, index, RL_ERR_BACKEND_DOWN, cb, cbdata, handle);
        return;
    }
    rl_mc_node_t *node = &thread->nodes[index];
    /* closed and not yet ejected: failing fast beats queueing behind a reconnect backoff */
    if (node->ejected || node->state == RL_MC_NODE_CLOSED) {
        complete_now(thread, index, RL_ERR_BACKEND_DOWN, cb, cbdata, handle);
        return;
    }
    rl_mc_op_t *op;
    if (node->num_pending >= thread->store->max_pending || (op = rl_mc_op_alloc(thread)) == NULL) {
        complete_now(thread, index, RL_ERR_BACKEND_OVERLOAD, cb, cbdata, handle);
        return;
    }
    op->cb = cb;
    op->cbdata = cbdata;
    int ret = rl_mc_node_send_incr(node, op, key->mckey, key->mckey_len);
    if (ret != RL_OK) {
        rl_mc_op_free(thread, op);
        complete_now(thread, index, ret == RL_ERR_NOMEM ? RL_ERR_BACKEND_OVERLOAD : RL_ERR_BACKEND_PROTOCOL, cb, cbdata,
                     handle);
        return;
    }
    *handle = (rl_store_op_t *)op;
}

/* The op keeps its place in the FIFO (its reply is still coming); only the callback goes. */
static void cancel(rl_store_thread_t *super, rl_store_op_t *handle)
{
    (void)super;
    rl_mc_op_t *op = (rl_mc_op_t *)handle;
    op->cb = NULL;
    op->cbdata = NULL;
}

static bool ready(rl_store_thread_t *super)
{
    rl_mc_thread_t *thread = (rl_mc_thread_t *)super;
    for (size_t i = 0; i != thread->store->num_nodes; ++i) {
        const rl_mc_node_t *node = &thread->nodes[i];
        if (node->state == RL_MC_NODE_CONNECTED && !node->ejected && node->healthy)
            return true;
    }
    return false;
}

static void destroy(rl_store_t *super)
{
    rl_mc_store_t *store = (rl_mc_store_t *)super;
    if (store == NULL)
        return;
    for (size_t i = 0; store->nodes != NULL && i != store->num_nodes; ++i) {
        free(store->nodes[i].host);
        free(store->nodes[i].name);
    }
    free(store->nodes);
    free(store->addrs);
    free(store->addrlens);
    free(store->is_name);
    free(store);
}

/* Main thread, at start-up: the only synchronous resolution (reconnects resolve on h2o's threads). */
static int resolve(const rl_node_config_t *node, struct sockaddr_storage *addr, socklen_t *addrlen, char *err,
                   size_t errlen)
{
    struct addrinfo *res;
    int gai = rl_resolve(node->host, node->port, &res);
    if (gai != 0) {
        snprintf(err, errlen, "backend server %s: %s", node->name, gai_strerror(gai));
        return RL_ERR_CONFIG;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return RL_OK;
}

/* True for an IP literal: getaddrinfo answers it without DNS, so there is nothing to re-resolve. */
static bool is_ip_literal(const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return false;
    freeaddrinfo(res);
    return true;
}

static int copy_nodes(rl_mc_store_t *store, const rl_config_t *config, char *err, size_t errlen)
{
    size_t n = config->backend.num_servers;
    store->nodes = calloc(n, sizeof(*store->nodes));
    store->addrs = calloc(n, sizeof(*store->addrs));
    store->addrlens = calloc(n, sizeof(*store->addrlens));
    store->is_name = calloc(n, sizeof(*store->is_name));
    if (store->nodes == NULL || store->addrs == NULL || store->addrlens == NULL || store->is_name == NULL)
        goto NoMem;
    store->num_nodes = n;
    for (size_t i = 0; i != n; ++i) {
        const rl_node_config_t *src = &config->backend.servers[i];
        store->nodes[i] = *src;
        store->nodes[i].host = strdup(src->host);
        store->nodes[i].name = strdup(src->name != NULL ? src->name : src->host);
        if (store->nodes[i].host == NULL || store->nodes[i].name == NULL)
            goto NoMem;
        store->is_name[i] = !is_ip_literal(store->nodes[i].host);
        int ret = resolve(&store->nodes[i], &store->addrs[i], &store->addrlens[i], err, errlen);
        if (ret != RL_OK) {
            if (!store->is_name[i])
                return ret;
            /* Failing start-up here would crash-loop every new pod while one memcached pod is
             * pending; the ring hashes names, so an unresolved node is just a down node. */
            rl_log_warn("memcached", "%s; the node starts down and is looked up again before each connect", err);
            store->addrlens[i] = 0;
            err[0] = '\0';
        }
    }
    return RL_OK;
NoMem:
    snprintf(err, errlen, "out of memory");
    return RL_ERR_NOMEM;
}

rl_store_t *rl_store_memcached_create(const rl_config_t *config, char *err, size_t errlen)
{
    if (config->backend.num_servers == 0) {
        snprintf(err, errlen, "backend.servers: the memcached backend needs at least one server");
        return NULL;
    }
    rl_mc_store_t *store = calloc(1, sizeof(*store));
    if (store == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    store->super.vt = &vtable;
    store->timeout_ms = config->backend.timeout_ms != 0 ? config->backend.timeout_ms : 20;
    /* below 3 s, memcached's 1 s clock tick can expire a counter inside its own window */
    store->window_ttl_s = config->backend.window_ttl_s >= 3 ? config->backend.window_ttl_s : 3;
    store->failure_limit = config->backend.failure_limit != 0 ? config->backend.failure_limit : 1;
    store->retry_interval_ms = config->backend.retry_interval_ms >= 10 ? config->backend.retry_interval_ms : 10;
    store->max_pending = config->backend.max_pending != 0 ? config->backend.max_pending : 1;
    if (copy_nodes(store, config, err, errlen) != RL_OK)
        goto Error;
    /* the same host names will be hashed on every loop thread: reject what libmemcached rejects now */
    rl_ring_t *ring = rl_ring_create(store->nodes, store->num_nodes, NULL);
    if (ring == NULL) {
        snprintf(err, errlen, "backend.servers: cannot build the ketama ring from these servers");
        goto Error;
    }
    rl_ring_destroy(ring);
    return &store->super;
Error:
    destroy(&store->super);
    return NULL;
}

int rl_store_memcached_node_stats(rl_store_thread_t *super, size_t index, rl_mc_node_stats_t *stats)
{
    if (super == NULL || super->store->vt != &vtable)
        return RL_ERR_INVALID;
    rl_mc_thread_t *thread = (rl_mc_thread_t *)super;
    if (index >= thread->store->num_nodes)
        return RL_ERR_INVALID;
    const rl_mc_node_t *node = &thread->nodes[index];
    *stats = node->stats;
    stats->connected = node->state == RL_MC_NODE_CONNECTED;
    stats->ejected = node->ejected;
    stats->healthy = node->healthy;
    stats->pending = node->num_pending;
    stats->consecutive_failures = node->consecutive_failures;
    return RL_OK;
}

int rl_store_memcached_node_of(rl_store_thread_t *super, const char *key, size_t len)
{
    if (super == NULL || super->store->vt != &vtable)
        return -1;
    return rl_ring_lookup(((rl_mc_thread_t *)super)->ring, key, len);
}

static const rl_store_vtable_t vtable = {
    .name = "memcached",
    .thread_create = thread_create,
    .thread_destroy = thread_destroy,
    .incr = incr,
    .cancel = cancel,
    .ready = ready,
    .destroy = destroy,
};
