/*
 * Shared by the memcached store tests: an h2o evloop driven by the test, a hand-built config
 * (config.c is not needed), and calls through the store's vtable so exactly the memcached
 * backend is exercised. Functions are static inline: each test program uses a subset.
 */
#ifndef RATELIMITD_TEST_STORE_MEMCACHED_FIXTURE_H
#define RATELIMITD_TEST_STORE_MEMCACHED_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <cmocka.h>
#include <h2o.h>
#include "ratelimitd/error.h"
#include "ratelimitd/store.h"
#include "ratelimitd/store_memcached.h"

/* Through the vtable, so this test exercises exactly the memcached backend. */
#define store_thread_create(store, loop, metrics) (store)->vt->thread_create((store), (loop), (metrics))
#define store_thread_destroy(thread) (thread)->store->vt->thread_destroy(thread)
#define store_incr(thread, key, cb, cbdata, op) (thread)->store->vt->incr((thread), (key), (cb), (cbdata), (op))
#define store_cancel(thread, op) (thread)->store->vt->cancel((thread), (op))
#define store_is_ready(thread) (thread)->store->vt->ready(thread)
#define store_destroy(store) (store)->vt->destroy(store)

/* ---- loop helpers ---- */

typedef struct st_result_t {
    int calls;
    int status;
    uint64_t value;
} result_t;

static inline void on_result(void *cbdata, int status, uint64_t value)
{
    result_t *r = cbdata;
    ++r->calls;
    r->status = status;
    r->value = value;
}

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

typedef bool (*cond_fn)(void *arg);

static inline bool run_until(h2o_loop_t *loop, cond_fn cond, void *arg, uint64_t timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    while (!cond(arg)) {
        if (now_ms() > deadline)
            return false;
        h2o_evloop_run(loop, 5);
    }
    return true;
}

static inline void run_for(h2o_loop_t *loop, uint64_t ms)
{
    uint64_t deadline = now_ms() + ms;
    while (now_ms() < deadline)
        h2o_evloop_run(loop, 5);
}

static inline bool result_done(void *arg)
{
    return ((result_t *)arg)->calls != 0;
}

typedef struct st_results_t {
    const result_t *r;
    size_t n;
} results_t;

static inline bool results_all_done(void *arg)
{
    const results_t *results = arg;
    for (size_t i = 0; i != results->n; ++i)
        if (results->r[i].calls == 0)
            return false;
    return true;
}

static inline bool store_ready(void *arg)
{
    rl_store_thread_t *thread = arg;
    return store_is_ready(thread);
}

static inline uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* ---- configuration ---- */

typedef struct st_fixture_t {
    rl_config_t config;
    rl_node_config_t nodes[3];
    char names[3][32];
    h2o_loop_t *loop;
    rl_store_t *store;
    rl_store_thread_t *thread;
} fixture_t;

/* A loop and default settings; nodes come from fixture_nodes(). */
static inline void fixture_new(fixture_t *f)
{
    memset(f, 0, sizeof(*f));
    f->loop = h2o_evloop_create();
    f->config.backend.type = RL_BACKEND_MEMCACHED;
    f->config.backend.servers = f->nodes;
    f->config.backend.timeout_ms = 200;
    f->config.backend.window_ttl_s = 3;
    f->config.backend.failure_limit = 3;
    f->config.backend.retry_interval_ms = 1000;
    f->config.backend.max_pending = 8192;
}

static inline void fixture_nodes(fixture_t *f, const uint16_t *ports, size_t n)
{
    for (size_t i = 0; i != n; ++i) {
        snprintf(f->names[i], sizeof(f->names[i]), "127.0.0.1:%u", ports[i]);
        f->nodes[i] = (rl_node_config_t){.host = "127.0.0.1", .port = ports[i], .weight = 1, .name = f->names[i]};
    }
    f->config.backend.num_servers = n;
}

static inline void fixture_init(fixture_t *f, const uint16_t *ports, size_t n)
{
    fixture_new(f);
    fixture_nodes(f, ports, n);
}

static inline void fixture_start(fixture_t *f, rl_metrics_thread_t *metrics)
{
    char err[256];
    f->store = rl_store_memcached_create(&f->config, err, sizeof(err));
    if (f->store == NULL)
        fail_msg("store: %s", err);
    f->thread = store_thread_create(f->store, f->loop, metrics);
    assert_non_null(f->thread);
}

/* fixture_start with a metrics registry of one thread, which the caller destroys after the fixture. */
static inline rl_metrics_t *fixture_start_with_metrics(fixture_t *f)
{
    rl_metrics_t *metrics = rl_metrics_create(1, &f->config);
    assert_non_null(metrics);
    fixture_start(f, rl_metrics_thread(metrics, 0));
    return metrics;
}

static inline void fixture_stop(fixture_t *f)
{
    store_thread_destroy(f->thread);
    store_destroy(f->store);
    f->thread = NULL;
    f->store = NULL;
}

/* Call after closing the test's own sockets on this loop: the loop frees closed sockets. */
static inline void fixture_dispose(fixture_t *f)
{
    if (f->thread != NULL)
        fixture_stop(f);
    h2o_evloop_run(f->loop, 0); /* frees closed sockets */
    h2o_evloop_destroy(f->loop);
}

static inline rl_mc_node_stats_t stats_of(fixture_t *f, size_t node)
{
    rl_mc_node_stats_t stats;
    assert_int_equal(rl_store_memcached_node_stats(f->thread, node, &stats), RL_OK);
    return stats;
}

/* The value of one node's series in the exposition: `reason` NULL for a series without it. */
static inline uint64_t node_metric(rl_metrics_t *metrics, const char *name, const char *node, const char *reason)
{
    char series[256];
    if (reason != NULL)
        snprintf(series, sizeof(series), "%s{node=\"%s\",reason=\"%s\"} ", name, node, reason);
    else
        snprintf(series, sizeof(series), "%s{node=\"%s\"} ", name, node);
    size_t len;
    char *text = rl_metrics_render(metrics, &len);
    assert_non_null(text);
    const char *at = strstr(text, series);
    if (at == NULL)
        fail_msg("series %s not found", series);
    uint64_t value = strtoull(at + strlen(series), NULL, 10);
    free(text);
    return value;
}

static inline rl_store_op_t *incr(fixture_t *f, const char *key, result_t *r)
{
    rl_counter_key_t counter = {
        .window = 1795412345, .mckey = key, .mckey_len = strlen(key), .placement_len = strlen(key)};
    rl_store_op_t *op = (rl_store_op_t *)1;
    store_incr(f->thread, &counter, on_result, r, &op);
    return op;
}

/* Waits for one increment and returns its status. */
static inline int incr_wait(fixture_t *f, const char *key, uint64_t *value)
{
    result_t r = {0};
    incr(f, key, &r);
    assert_true(run_until(f->loop, result_done, &r, 3000));
    assert_int_equal(r.calls, 1);
    if (value != NULL)
        *value = r.value;
    return r.status;
}

/* Issues `n` increments of `key` in one loop turn, waits for them all, and checks that every one
 * completed once with `status`. Timeouts may complete them out of order: each is failed at its own
 * deadline, measured from its issue, and a slow turn (valgrind) can find a later one due first. */
static inline void incr_all_expect(fixture_t *f, const char *key, result_t *r, size_t n, int status)
{
    for (size_t i = 0; i != n; ++i)
        incr(f, key, &r[i]);
    results_t all = {r, n};
    assert_true(run_until(f->loop, results_all_done, &all, 3000));
    for (size_t i = 0; i != n; ++i) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, status);
    }
}

#endif
