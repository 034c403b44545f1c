/*
 * Unit tests for src/store_local.c, through the public store API (src/store.c): exact counts
 * under concurrent threads, windows reclaimed in place so a small table serves many windows,
 * and RL_ERR_STORE_FULL (counted in metrics) when one window needs more counters than fit.
 * The local store never touches the loop, so thread handles are created with a NULL loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>
#include "ratelimitd/error.h"
#include "ratelimitd/metrics.h"
#include "ratelimitd/store.h"

#define WINDOW 1795412345

typedef struct st_result_t {
    int calls;
    int status;
    uint64_t value;
} result_t;

static void on_result(void *cbdata, int status, uint64_t value)
{
    result_t *r = cbdata;
    ++r->calls;
    r->status = status;
    r->value = value;
}

/* Key hashes are SipHash output in production: uniform bytes; splitmix64 stands in for them. */
static rl_keyhash_t key_hash(uint64_t index)
{
    rl_keyhash_t h;
    for (size_t half = 0; half != 2; ++half) {
        uint64_t z = index * 2 + half + 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        memcpy(h.bytes + 8 * half, &z, 8);
    }
    return h;
}

static rl_store_t *local_store(uint32_t max_keys)
{
    rl_config_t config;
    memset(&config, 0, sizeof(config));
    config.backend.type = RL_BACKEND_LOCAL;
    config.backend.local_max_keys = max_keys;
    char err[128];
    rl_store_t *store = rl_store_create(&config, err, sizeof(err));
    if (store == NULL)
        fail_msg("store: %s", err);
    return store;
}

/* One increment; asserts it completed before returning, with the op handle cleared. */
static int incr_hash(rl_store_thread_t *thread, const rl_keyhash_t *hash, int64_t window, uint64_t *value)
{
    rl_counter_key_t counter = {.hash = *hash, .window = window, .mckey = "unused", .mckey_len = 6, .placement_len = 6};
    result_t r = {0};
    rl_store_op_t *op = (rl_store_op_t *)&r; /* anything but NULL */
    rl_store_incr(thread, &counter, on_result, &r, &op);
    assert_int_equal(r.calls, 1);
    assert_null(op);
    if (value != NULL)
        *value = r.value;
    return r.status;
}

static int incr_now(rl_store_thread_t *thread, uint64_t key, int64_t window, uint64_t *value)
{
    rl_keyhash_t hash = key_hash(key);
    return incr_hash(thread, &hash, window, value);
}

static uint64_t incr_ok(rl_store_thread_t *thread, uint64_t key, int64_t window)
{
    uint64_t value = 0;
    assert_int_equal(incr_now(thread, key, window, &value), RL_OK);
    return value;
}

static void test_counts_per_key_and_window_from_one(void **state)
{
    (void)state;
    rl_store_t *store = local_store(1024);
    rl_store_thread_t *thread = rl_store_thread_create(store, NULL, NULL);
    assert_non_null(thread);
    assert_string_equal(store->vt->name, "local");
    assert_true(rl_store_ready(thread));

    assert_int_equal(incr_ok(thread, 1, WINDOW), 1);
    assert_int_equal(incr_ok(thread, 1, WINDOW), 2);
    assert_int_equal(incr_ok(thread, 2, WINDOW), 1);
    assert_int_equal(incr_ok(thread, 1, WINDOW + 1), 1);
    /* a request decided just before the boundary still finds the previous window's counter */
    assert_int_equal(incr_ok(thread, 1, WINDOW), 3);
    assert_int_equal(incr_ok(thread, 1, WINDOW + 1), 2);

    rl_store_cancel(thread, NULL); /* what a caller holding a completed op's handle does */
    rl_store_thread_destroy(thread);
    rl_store_destroy(store);
    rl_store_thread_destroy(NULL);
    rl_store_destroy(NULL);
}

static void test_create_rejects_zero_capacity(void **state)
{
    (void)state;
    rl_config_t config;
    memset(&config, 0, sizeof(config));
    char err[128] = "";
    assert_null(rl_store_local_create(&config, err, sizeof(err)));
    assert_non_null(strstr(err, "local_max_keys"));
}

/* ---- concurrency ---- */

#define NUM_THREADS 4
#define NUM_KEYS 64
#define NUM_WINDOWS 3
#define INCRS_PER_THREAD 60000

typedef struct st_worker_t {
    rl_store_t *store;
    size_t index;
    uint64_t counts[NUM_KEYS][NUM_WINDOWS];
    uint64_t sums[NUM_KEYS][NUM_WINDOWS];
    uint64_t last[NUM_KEYS][NUM_WINDOWS];
    int failures; /* cmocka asserts must not run off the main thread */
} worker_t;

static void *run_worker(void *arg)
{
    worker_t *w = arg;
    rl_store_thread_t *thread = rl_store_thread_create(w->store, NULL, NULL);
    if (thread == NULL) {
        ++w->failures;
        return NULL;
    }
    for (size_t j = 0; j != INCRS_PER_THREAD; ++j) {
        /* every thread touches every key and window, in a different order */
        size_t key = (j * 7 + w->index * 13) % NUM_KEYS, window = (j + w->index) % NUM_WINDOWS;
        rl_counter_key_t counter = {.hash = key_hash(key), .window = WINDOW + (int64_t)window};
        result_t r = {0};
        rl_store_op_t *op;
        rl_store_incr(thread, &counter, on_result, &r, &op);
        /* a thread's own increments of one counter must see strictly increasing values */
        if (r.calls != 1 || r.status != RL_OK || op != NULL || r.value <= w->last[key][window]) {
            ++w->failures;
            continue;
        }
        w->last[key][window] = r.value;
        ++w->counts[key][window];
        w->sums[key][window] += r.value;
    }
    rl_store_thread_destroy(thread);
    return NULL;
}

static void test_concurrent_increments_are_exact(void **state)
{
    (void)state;
    rl_store_t *store = local_store(65536);
    static worker_t workers[NUM_THREADS];
    pthread_t tids[NUM_THREADS];
    for (size_t i = 0; i != NUM_THREADS; ++i) {
        memset(&workers[i], 0, sizeof(workers[i]));
        workers[i].store = store;
        workers[i].index = i;
        assert_int_equal(pthread_create(&tids[i], NULL, run_worker, &workers[i]), 0);
    }
    for (size_t i = 0; i != NUM_THREADS; ++i) {
        assert_int_equal(pthread_join(tids[i], NULL), 0);
        assert_int_equal(workers[i].failures, 0);
    }

    rl_store_thread_t *thread = rl_store_thread_create(store, NULL, NULL);
    uint64_t grand_total = 0;
    for (size_t key = 0; key != NUM_KEYS; ++key) {
        for (size_t window = 0; window != NUM_WINDOWS; ++window) {
            uint64_t n = 0, sum = 0;
            for (size_t i = 0; i != NUM_THREADS; ++i) {
                n += workers[i].counts[key][window];
                sum += workers[i].sums[key][window];
            }
            /* the values handed out were exactly 1..n: none lost, none given twice */
            assert_int_equal(sum, n * (n + 1) / 2);
            assert_int_equal(incr_ok(thread, key, WINDOW + (int64_t)window), n + 1);
            grand_total += n;
        }
    }
    assert_int_equal(grand_total, (uint64_t)NUM_THREADS * INCRS_PER_THREAD);
    rl_store_thread_destroy(thread);
    rl_store_destroy(store);
}

/* ---- capacity ---- */

/* Counts keys [first, first + n) once each in `window`: each must get a new counter. */
static void count_new_keys(rl_store_thread_t *thread, uint64_t first, uint64_t n, int64_t window)
{
    for (uint64_t key = first; key != first + n; ++key) {
        uint64_t value = 0;
        int status = incr_now(thread, key, window, &value);
        if (status != RL_OK)
            fail_msg("window %lld key %llu: %d", (long long)window, (unsigned long long)key, status);
        assert_int_equal(value, 1); /* a claimed slot starts from zero, whatever it held */
    }
}

static void test_expired_windows_are_reclaimed(void **state)
{
    (void)state;
    /* 500 keys a second for 100 seconds is 50000 counters through 1024 slots */
    rl_store_t *store = local_store(1024);
    rl_store_thread_t *thread = rl_store_thread_create(store, NULL, NULL);
    for (int64_t window = WINDOW; window != WINDOW + 100; ++window) {
        count_new_keys(thread, 0, 500, window);
        for (uint64_t key = 0; key != 500; ++key)
            assert_int_equal(incr_ok(thread, key, window), 2);
    }
    rl_store_thread_destroy(thread);
    rl_store_destroy(store);
}

static uint64_t store_full_errors(rl_metrics_t *metrics)
{
    size_t len;
    char *text = rl_metrics_render(metrics, &len);
    assert_non_null(text);
    static const char series[] = "ratelimitd_backend_errors_total{node=\"local\",reason=\"store_full\"} ";
    const char *at = strstr(text, series);
    assert_non_null(at);
    uint64_t n = strtoull(at + sizeof(series) - 1, NULL, 10);
    free(text);
    return n;
}

static void test_full_window_reports_store_full(void **state)
{
    (void)state;
    rl_config_t config;
    memset(&config, 0, sizeof(config));
    config.backend.type = RL_BACKEND_LOCAL;
    rl_metrics_t *metrics = rl_metrics_create(1, &config);
    assert_non_null(metrics);
    rl_store_t *store = local_store(1024);
    rl_store_thread_t *thread = rl_store_thread_create(store, NULL, rl_metrics_thread(metrics, 0));

    /* more live counters than the 1536 slots (1.5 per local_max_keys) in one window */
    enum { NUM = 2000 };
    static bool stored[NUM];
    size_t num_stored = 0, num_full = 0;
    for (uint64_t key = 0; key != NUM; ++key) {
        uint64_t value = 0;
        int status = incr_now(thread, key, WINDOW, &value);
        if (status == RL_OK) {
            assert_int_equal(value, 1);
            stored[key] = true;
            ++num_stored;
        } else {
            assert_int_equal(status, RL_ERR_STORE_FULL);
            ++num_full;
        }
    }
    assert_true(num_stored <= 1536);
    assert_true(num_stored >= 1024); /* local_max_keys counters fit, with room to spare */
    assert_int_equal(store_full_errors(metrics), num_full);

    /* a full table never loses or moves what it holds */
    for (uint64_t key = 0; key != NUM; ++key) {
        if (stored[key])
            assert_int_equal(incr_ok(thread, key, WINDOW), 2);
    }
    /* the next window reclaims this one's slots */
    assert_int_equal(incr_ok(thread, NUM + 1, WINDOW + 1), 1);

    rl_store_thread_destroy(thread);
    rl_store_destroy(store);
    rl_metrics_destroy(metrics);
}

/* The promise behind local_max_keys: that many keys of one window all get a counter (placement is
 * random per store, and 100,000 simulated stores of 1,024 turned none away). A single probe range
 * in 1024 slots, as the store once had, failed here. */
static void test_a_window_of_local_max_keys_fits(void **state)
{
    (void)state;
    rl_store_t *store = local_store(1024);
    rl_store_thread_t *thread = rl_store_thread_create(store, NULL, NULL);
    count_new_keys(thread, 0, 1024, WINDOW);
    for (uint64_t key = 0; key != 1024; ++key)
        assert_int_equal(incr_ok(thread, key, WINDOW), 2);
    rl_store_thread_destroy(thread);
    rl_store_destroy(store);
}

/*
 * With an empty key_hash_secret anyone can compute key hashes, and so choose API keys whose hashes
 * agree wherever a fixed placement would look (here: everything but bytes 8-11). Placement under
 * the store's random key spreads them anyway; placement by the hash's own bits held 32 of them.
 */
static void test_chosen_key_hashes_cannot_crowd_one_range(void **state)
{
    (void)state;
    rl_store_t *store = local_store(1024);
    rl_store_thread_t *thread = rl_store_thread_create(store, NULL, NULL);
    rl_keyhash_t hash = key_hash(7);
    for (uint32_t i = 0; i != 500; ++i) {
        memcpy(hash.bytes + 8, &i, sizeof(i));
        uint64_t value = 0;
        int status = incr_hash(thread, &hash, WINDOW, &value);
        if (status != RL_OK)
            fail_msg("chosen hash %u: %d", i, status);
        assert_int_equal(value, 1);
    }
    rl_store_thread_destroy(thread);
    rl_store_destroy(store);
}

/* A wall clock that jumped an hour ahead and was set back leaves counters stamped in the
 * future; their slots serve the real windows at once instead of an hour later. */
static void test_counters_stamped_ahead_by_a_clock_step_are_reclaimed(void **state)
{
    (void)state;
    rl_store_t *store = local_store(1024);
    rl_store_thread_t *thread = rl_store_thread_create(store, NULL, NULL);
    count_new_keys(thread, 0, 1024, WINDOW + 3600);
    count_new_keys(thread, 2000, 1024, WINDOW + 1);
    rl_store_thread_destroy(thread);
    rl_store_destroy(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_per_key_and_window_from_one),
        cmocka_unit_test(test_create_rejects_zero_capacity),
        cmocka_unit_test(test_concurrent_increments_are_exact),
        cmocka_unit_test(test_expired_windows_are_reclaimed),
        cmocka_unit_test(test_full_window_reports_store_full),
        cmocka_unit_test(test_a_window_of_local_max_keys_fits),
        cmocka_unit_test(test_chosen_key_hashes_cannot_crowd_one_range),
        cmocka_unit_test(test_counters_stamped_ahead_by_a_clock_step_are_reclaimed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
