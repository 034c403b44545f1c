/*
 * Prometheus metrics without locks on the request path.
 *
 * Every loop thread owns one slot and is the only writer of it. A counter update is a relaxed
 * atomic load followed by a relaxed store: on x86 both are plain moves, so counting costs no
 * locked instruction, yet a concurrent scrape never reads a torn value. The scrape (any thread)
 * sums the slots. Slots are cache-line aligned so threads never share a line.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ratelimitd/error.h"
#include "ratelimitd/log.h"
#include "ratelimitd/metrics.h"

#define RL_LATENCY_BUCKETS 16

typedef enum {
    RL_NODE_UNKNOWN = 0,
    RL_NODE_UP,
    RL_NODE_DOWN,
} rl_node_state_t;

enum { RL_REASON_TIMEOUT, RL_REASON_DOWN, RL_REASON_PROTOCOL, RL_REASON_OVERLOAD, RL_REASON_FULL, RL_REASON__COUNT };

typedef struct st_rl_node_counters_t {
    _Atomic uint64_t errors[RL_REASON__COUNT];
    _Atomic uint64_t ejections;
    _Atomic uint64_t writes;
    _Atomic uint64_t write_requests;
    _Atomic uint64_t reads;
    _Atomic uint64_t read_replies;
    _Atomic int state;
} rl_node_counters_t;

struct st_rl_metrics_thread_t {
    _Alignas(64) _Atomic uint64_t requests[RL_OUTCOME__COUNT];
    _Atomic uint64_t deny_cache_hits;
    _Atomic int64_t open_connections[RL_LISTEN_ROLES];
    _Atomic uint64_t connections_shed[RL_LISTEN_ROLES];
    _Atomic uint64_t accept_pauses;
    _Atomic uint64_t header_blocks_refused;
    _Atomic uint64_t latency_buckets[RL_LATENCY_BUCKETS]; /* not cumulative; summed at render */
    _Atomic uint64_t latency_sum_usec;
    rl_node_counters_t *nodes;
};

struct st_rl_metrics_t {
    rl_metrics_thread_t *threads;
    size_t num_threads;
    char **node_names;
    size_t num_nodes;
    const char *backend_name;
    uint32_t max_connections; /* set before the loop threads start, never after */
    _Atomic int draining;
    _Atomic uint64_t reloads_ok;
    _Atomic uint64_t reloads_failed;
};

/* Upper bounds in microseconds; the last bucket is +Inf. Up to 2.5 s, because timeout_ms may be up
 * to 1000 at the default TTL and late replies are observed too: with a top bucket below the
 * timeout, a p99 read from the histogram could never show how slow a node has become. */
static const uint64_t latency_bounds_usec[RL_LATENCY_BUCKETS - 1] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000};

static const char *const outcome_names[RL_OUTCOME__COUNT] = {
    [RL_OUTCOME_ALLOWED] = "allowed",           [RL_OUTCOME_LIMITED] = "limited",
    [RL_OUTCOME_UNAUTHORIZED] = "unauthorized", [RL_OUTCOME_BAD_REQUEST] = "bad_request",
    [RL_OUTCOME_FORBIDDEN] = "forbidden",       [RL_OUTCOME_BACKEND_ERROR] = "backend_error",
};

static const char *const reason_names[RL_REASON__COUNT] = {"timeout", "unreachable", "protocol", "overload",
                                                           "store_full"};

static inline void bump(_Atomic uint64_t *counter, uint64_t delta)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + delta, memory_order_relaxed);
}

static inline uint64_t read_counter(_Atomic uint64_t *counter)
{
    return atomic_load_explicit(counter, memory_order_relaxed);
}

rl_metrics_t *rl_metrics_create(size_t num_threads, const rl_config_t *config)
{
    rl_metrics_t *metrics = calloc(1, sizeof(*metrics));
    if (metrics == NULL)
        return NULL;
    int memcached = config->backend.type == RL_BACKEND_MEMCACHED;
    metrics->backend_name = memcached ? "memcached" : "local";
    metrics->num_nodes = memcached ? config->backend.num_servers : 1;
    metrics->num_threads = num_threads;
    if ((metrics->node_names = calloc(metrics->num_nodes, sizeof(char *))) == NULL)
        goto fail;
    for (size_t i = 0; i < metrics->num_nodes; ++i) {
        metrics->node_names[i] = strdup(memcached ? config->backend.servers[i].name : "local");
        if (metrics->node_names[i] == NULL)
            goto fail;
    }
    if ((metrics->threads = aligned_alloc(64, sizeof(rl_metrics_thread_t) * num_threads)) == NULL)
        goto fail;
    memset(metrics->threads, 0, sizeof(rl_metrics_thread_t) * num_threads);
    for (size_t t = 0; t < num_threads; ++t) {
        if ((metrics->threads[t].nodes = calloc(metrics->num_nodes, sizeof(rl_node_counters_t))) == NULL)
            goto fail;
    }
    return metrics;
fail:
    rl_metrics_destroy(metrics);
    return NULL;
}

void rl_metrics_destroy(rl_metrics_t *metrics)
{
    if (metrics == NULL)
        return;
    if (metrics->threads != NULL) {
        for (size_t t = 0; t < metrics->num_threads; ++t)
            free(metrics->threads[t].nodes);
        free(metrics->threads);
    }
    if (metrics->node_names != NULL) {
        for (size_t i = 0; i < metrics->num_nodes; ++i)
            free(metrics->node_names[i]);
        free(metrics->node_names);
    }
    free(metrics);
}

rl_metrics_thread_t *rl_metrics_thread(rl_metrics_t *metrics, size_t index)
{
    return index < metrics->num_threads ? &metrics->threads[index] : NULL;
}

void rl_metrics_count_request(rl_metrics_thread_t *mt, rl_outcome_t outcome)
{
    bump(&mt->requests[outcome], 1);
}

void rl_metrics_count_deny_cache_hit(rl_metrics_thread_t *mt)
{
    bump(&mt->deny_cache_hits, 1);
}

static void add_gauge(_Atomic int64_t *gauge, int64_t delta)
{
    atomic_store_explicit(gauge, atomic_load_explicit(gauge, memory_order_relaxed) + delta, memory_order_relaxed);
}

void rl_metrics_connection_opened(rl_metrics_thread_t *mt, rl_listen_role_t role)
{
    add_gauge(&mt->open_connections[role], 1);
}

void rl_metrics_connection_closed(rl_metrics_thread_t *mt, rl_listen_role_t role)
{
    add_gauge(&mt->open_connections[role], -1);
}

void rl_metrics_count_connection_shed(rl_metrics_thread_t *mt, rl_listen_role_t role)
{
    bump(&mt->connections_shed[role], 1);
}

void rl_metrics_count_accept_pause(rl_metrics_thread_t *mt)
{
    bump(&mt->accept_pauses, 1);
}

void rl_metrics_count_header_block_refused(rl_metrics_thread_t *mt)
{
    bump(&mt->header_blocks_refused, 1);
}

void rl_metrics_observe_backend_latency(rl_metrics_thread_t *mt, uint64_t usec)
{
    size_t bucket = 0;
    while (bucket < RL_LATENCY_BUCKETS - 1 && usec > latency_bounds_usec[bucket])
        ++bucket;
    bump(&mt->latency_buckets[bucket], 1);
    bump(&mt->latency_sum_usec, usec);
}

static int reason_of(int error)
{
    switch (error) {
    case RL_ERR_BACKEND_TIMEOUT:
        return RL_REASON_TIMEOUT;
    case RL_ERR_BACKEND_PROTOCOL:
        return RL_REASON_PROTOCOL;
    case RL_ERR_BACKEND_OVERLOAD:
        return RL_REASON_OVERLOAD;
    case RL_ERR_STORE_FULL:
        return RL_REASON_FULL;
    default:
        return RL_REASON_DOWN;
    }
}

void rl_metrics_count_backend_error(rl_metrics_thread_t *mt, size_t node, int error)
{
    bump(&mt->nodes[node].errors[reason_of(error)], 1);
}

void rl_metrics_set_node_up(rl_metrics_thread_t *mt, size_t node, bool up)
{
    atomic_store_explicit(&mt->nodes[node].state, up ? RL_NODE_UP : RL_NODE_DOWN, memory_order_relaxed);
}

void rl_metrics_count_node_ejection(rl_metrics_thread_t *mt, size_t node)
{
    bump(&mt->nodes[node].ejections, 1);
}

void rl_metrics_count_backend_write(rl_metrics_thread_t *mt, size_t node, size_t requests)
{
    bump(&mt->nodes[node].writes, 1);
    bump(&mt->nodes[node].write_requests, requests);
}

void rl_metrics_count_backend_read(rl_metrics_thread_t *mt, size_t node, size_t replies)
{
    bump(&mt->nodes[node].reads, 1);
    bump(&mt->nodes[node].read_replies, replies);
}

void rl_metrics_set_max_connections(rl_metrics_t *metrics, uint32_t max_connections)
{
    metrics->max_connections = max_connections;
}

void rl_metrics_set_draining(rl_metrics_t *metrics, bool draining)
{
    atomic_store_explicit(&metrics->draining, draining, memory_order_relaxed);
}

void rl_metrics_count_reload(rl_metrics_t *metrics, bool ok)
{
    atomic_fetch_add_explicit(ok ? &metrics->reloads_ok : &metrics->reloads_failed, 1, memory_order_relaxed);
}

/* A growable text buffer; `failed` latches the first allocation failure so callers check once. */
typedef struct st_rl_text_t {
    char *buf;
    size_t len;
    size_t cap;
    int failed;
} rl_text_t;

__attribute__((format(printf, 2, 3))) static void text_printf(rl_text_t *text, const char *fmt, ...)
{
    if (text->failed)
        return;
    for (;;) {
        va_list args;
        va_start(args, fmt);
        int n = vsnprintf(text->buf + text->len, text->cap - text->len, fmt, args);
        va_end(args);
        if (n < 0) {
            text->failed = 1;
            return;
        }
        if ((size_t)n < text->cap - text->len) {
            text->len += (size_t)n;
            return;
        }
        size_t cap = (text->cap + (size_t)n) * 2;
        char *grown = realloc(text->buf, cap);
        if (grown == NULL) {
            text->failed = 1;
            return;
        }
        text->buf = grown;
        text->cap = cap;
    }
}

static uint64_t sum_thread_counter(rl_metrics_t *m, size_t offset)
{
    uint64_t sum = 0;
    for (size_t t = 0; t < m->num_threads; ++t)
        sum += read_counter((_Atomic uint64_t *)((char *)&m->threads[t] + offset));
    return sum;
}

static int64_t sum_thread_gauge(rl_metrics_t *m, size_t offset)
{
    int64_t sum = 0;
    for (size_t t = 0; t < m->num_threads; ++t)
        sum += atomic_load_explicit((_Atomic int64_t *)((char *)&m->threads[t] + offset), memory_order_relaxed);
    return sum;
}

static uint64_t sum_node_counter(rl_metrics_t *m, size_t node, size_t offset)
{
    uint64_t sum = 0;
    for (size_t t = 0; t < m->num_threads; ++t)
        sum += read_counter((_Atomic uint64_t *)((char *)&m->threads[t].nodes[node] + offset));
    return sum;
}

/* Up when at least one thread has seen the node answer and none currently holds it down. */
static int node_is_up(rl_metrics_t *m, size_t node)
{
    int up = 0;
    for (size_t t = 0; t < m->num_threads; ++t) {
        int state = atomic_load_explicit(&m->threads[t].nodes[node].state, memory_order_relaxed);
        if (state == RL_NODE_DOWN)
            return 0;
        up |= state == RL_NODE_UP;
    }
    return up;
}

static void render_requests(rl_metrics_t *m, rl_text_t *out)
{
    text_printf(out, "# HELP ratelimitd_requests_total Requests to /limit by decision.\n"
                     "# TYPE ratelimitd_requests_total counter\n");
    for (int o = 0; o < RL_OUTCOME__COUNT; ++o)
        text_printf(out, "ratelimitd_requests_total{decision=\"%s\"} %llu\n", outcome_names[o],
                    (unsigned long long)sum_thread_counter(m, offsetof(rl_metrics_thread_t, requests[o])));
    text_printf(
        out,
        "# HELP ratelimitd_deny_cache_hits_total Requests answered 429 from the deny cache, without a "
        "backend call.\n# TYPE ratelimitd_deny_cache_hits_total counter\nratelimitd_deny_cache_hits_total %llu\n",
        (unsigned long long)sum_thread_counter(m, offsetof(rl_metrics_thread_t, deny_cache_hits)));
    text_printf(out,
                "# HELP ratelimitd_open_connections Connections to API listeners currently open.\n"
                "# TYPE ratelimitd_open_connections gauge\nratelimitd_open_connections %lld\n",
                (long long)sum_thread_gauge(m, offsetof(rl_metrics_thread_t, open_connections[RL_LISTEN_API])));
    text_printf(out,
                "# HELP ratelimitd_max_connections Connections API listeners may hold open: server.max_connections, "
                "or less if the open-file limit is lower.\n"
                "# TYPE ratelimitd_max_connections gauge\nratelimitd_max_connections %u\n",
                m->max_connections);
    text_printf(out,
                "# HELP ratelimitd_admin_open_connections Connections to admin listeners currently open.\n"
                "# TYPE ratelimitd_admin_open_connections gauge\nratelimitd_admin_open_connections %lld\n",
                (long long)sum_thread_gauge(m, offsetof(rl_metrics_thread_t, open_connections[RL_LISTEN_ADMIN])));
    text_printf(
        out,
        "# HELP ratelimitd_connections_shed_total Connections closed at accept: the connection limit "
        "(server.max_connections, or less if the open-file limit is lower) was reached.\n"
        "# TYPE ratelimitd_connections_shed_total counter\nratelimitd_connections_shed_total %llu\n",
        (unsigned long long)sum_thread_counter(m, offsetof(rl_metrics_thread_t, connections_shed[RL_LISTEN_API])));
    text_printf(
        out,
        "# HELP ratelimitd_admin_connections_shed_total Connections to admin listeners closed at accept: "
        "their own limit of %d per process was reached.\n"
        "# TYPE ratelimitd_admin_connections_shed_total counter\nratelimitd_admin_connections_shed_total %llu\n",
        RL_ADMIN_MAX_CONNECTIONS,
        (unsigned long long)sum_thread_counter(m, offsetof(rl_metrics_thread_t, connections_shed[RL_LISTEN_ADMIN])));
    text_printf(out,
                "# HELP ratelimitd_accept_pauses_total Times a loop thread stopped accepting for 100 ms because "
                "no file descriptor was left.\n"
                "# TYPE ratelimitd_accept_pauses_total counter\nratelimitd_accept_pauses_total %llu\n",
                (unsigned long long)sum_thread_counter(m, offsetof(rl_metrics_thread_t, accept_pauses)));
    text_printf(out,
                "# HELP ratelimitd_http2_header_blocks_refused_total HTTP/2 header blocks refused undecoded, with "
                "their connection, for naming too many fields.\n"
                "# TYPE ratelimitd_http2_header_blocks_refused_total counter\n"
                "ratelimitd_http2_header_blocks_refused_total %llu\n",
                (unsigned long long)sum_thread_counter(m, offsetof(rl_metrics_thread_t, header_blocks_refused)));
}

static void render_latency(rl_metrics_t *m, rl_text_t *out)
{
    text_printf(out, "# HELP ratelimitd_backend_request_duration_seconds Backend round-trip time of one increment.\n"
                     "# TYPE ratelimitd_backend_request_duration_seconds histogram\n");
    uint64_t cumulative = 0;
    for (int b = 0; b < RL_LATENCY_BUCKETS; ++b) {
        cumulative += sum_thread_counter(m, offsetof(rl_metrics_thread_t, latency_buckets[b]));
        if (b < RL_LATENCY_BUCKETS - 1)
            text_printf(out, "ratelimitd_backend_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                        (double)latency_bounds_usec[b] / 1e6, (unsigned long long)cumulative);
        else
            text_printf(out, "ratelimitd_backend_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                        (unsigned long long)cumulative);
    }
    text_printf(out, "ratelimitd_backend_request_duration_seconds_sum %.6f\n",
                (double)sum_thread_counter(m, offsetof(rl_metrics_thread_t, latency_sum_usec)) / 1e6);
    /* the +Inf bucket's total, not a counter of its own: one read, so a scrape racing an
     * observation can never show a _count that differs from le="+Inf" */
    text_printf(out, "ratelimitd_backend_request_duration_seconds_count %llu\n", (unsigned long long)cumulative);
}

static void render_node_counter(rl_metrics_t *m, rl_text_t *out, const char *name, const char *help, size_t offset)
{
    text_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t n = 0; n < m->num_nodes; ++n)
        text_printf(out, "%s{node=\"%s\"} %llu\n", name, m->node_names[n],
                    (unsigned long long)sum_node_counter(m, n, offset));
}

static void render_nodes(rl_metrics_t *m, rl_text_t *out)
{
    text_printf(out,
                "# HELP ratelimitd_backend_errors_total Backend failures by node and reason: failed increments, and "
                "connects and probes that failed while no increment waited.\n"
                "# TYPE ratelimitd_backend_errors_total counter\n");
    for (size_t n = 0; n < m->num_nodes; ++n)
        for (int r = 0; r < RL_REASON__COUNT; ++r)
            text_printf(out, "ratelimitd_backend_errors_total{node=\"%s\",reason=\"%s\"} %llu\n", m->node_names[n],
                        reason_names[r],
                        (unsigned long long)sum_node_counter(m, n, offsetof(rl_node_counters_t, errors[r])));
    text_printf(out, "# HELP ratelimitd_backend_node_up 0 from the node's ejection by any loop thread until its "
                     "re-admission; 1 once a thread has had an answer from it (a stalled node not yet ejected "
                     "shows 1).\n"
                     "# TYPE ratelimitd_backend_node_up gauge\n");
    for (size_t n = 0; n < m->num_nodes; ++n)
        text_printf(out, "ratelimitd_backend_node_up{node=\"%s\"} %d\n", m->node_names[n], node_is_up(m, n));
    render_node_counter(m, out, "ratelimitd_backend_ejections_total",
                        "Times a loop thread took the node out of its ring (each thread ejects on its own, so one "
                        "outage counts up to once per thread).",
                        offsetof(rl_node_counters_t, ejections));
    render_node_counter(m, out, "ratelimitd_backend_writes_total", "Writes to a node (pipelined batches).",
                        offsetof(rl_node_counters_t, writes));
    render_node_counter(m, out, "ratelimitd_backend_write_requests_total", "Requests carried by those writes.",
                        offsetof(rl_node_counters_t, write_requests));
    render_node_counter(m, out, "ratelimitd_backend_reads_total",
                        "Reads from a node that completed replies to increments.", offsetof(rl_node_counters_t, reads));
    render_node_counter(m, out, "ratelimitd_backend_read_replies_total", "Replies completed by those reads.",
                        offsetof(rl_node_counters_t, read_replies));
}

static void render_process(rl_metrics_t *m, rl_text_t *out)
{
    text_printf(out,
                "# HELP ratelimitd_build_info Build and backend of this process.\n"
                "# TYPE ratelimitd_build_info gauge\nratelimitd_build_info{version=\"%s\",backend=\"%s\"} 1\n",
                RL_VERSION, m->backend_name);
    text_printf(out,
                "# HELP ratelimitd_draining 1 after SIGTERM/SIGINT while in-flight requests finish.\n"
                "# TYPE ratelimitd_draining gauge\nratelimitd_draining %d\n",
                atomic_load_explicit(&m->draining, memory_order_relaxed));
    text_printf(out,
                "# HELP ratelimitd_config_reloads_total SIGHUP reloads by result.\n"
                "# TYPE ratelimitd_config_reloads_total counter\n"
                "ratelimitd_config_reloads_total{result=\"ok\"} %llu\n"
                "ratelimitd_config_reloads_total{result=\"rejected\"} %llu\n",
                (unsigned long long)atomic_load_explicit(&m->reloads_ok, memory_order_relaxed),
                (unsigned long long)atomic_load_explicit(&m->reloads_failed, memory_order_relaxed));
    text_printf(out,
                "# HELP ratelimitd_threads Event-loop threads.\n# TYPE ratelimitd_threads gauge\n"
                "ratelimitd_threads %zu\n",
                m->num_threads);
    text_printf(out,
                "# HELP ratelimitd_log_lines_dropped_total Log lines lost: stderr was full and an event-loop "
                "thread does not wait for it, or the write failed. The log says how many were lost where.\n"
                "# TYPE ratelimitd_log_lines_dropped_total counter\nratelimitd_log_lines_dropped_total %llu\n",
                (unsigned long long)rl_log_lines_dropped());
}

char *rl_metrics_render(rl_metrics_t *metrics, size_t *len)
{
    rl_text_t out = {.cap = 8192};
    if ((out.buf = malloc(out.cap)) == NULL)
        return NULL;
    render_requests(metrics, &out);
    render_latency(metrics, &out);
    render_nodes(metrics, &out);
    render_process(metrics, &out);
    if (out.failed) {
        free(out.buf);
        return NULL;
    }
    *len = out.len;
    return out.buf;
}
