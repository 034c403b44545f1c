/*
 * Unit tests for src/limiter.c: window arithmetic at the edges of a second, the decision at
 * and around the limit, and the deny cache (hits, window expiry, set eviction, distinct keys).
 * Time is an argument everywhere, so no clock is read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "ratelimitd/limiter.h"

#define WINDOW 1795412345
#define WINDOW_MS 1795412345000ull

static void test_window_start_has_full_second_to_reset(void **state)
{
    (void)state;
    rl_window_t w = rl_window_at(WINDOW_MS);
    assert_int_equal(w.window, WINDOW);
    assert_int_equal(w.reset_ms, 1000);
}

static void test_window_last_millisecond_resets_in_1(void **state)
{
    (void)state;
    rl_window_t w = rl_window_at(WINDOW_MS + 999);
    assert_int_equal(w.window, WINDOW);
    assert_int_equal(w.reset_ms, 1);
    w = rl_window_at(WINDOW_MS + 1000);
    assert_int_equal(w.window, WINDOW + 1);
    assert_int_equal(w.reset_ms, 1000);
}

static void test_window_reset_counts_down_within_second(void **state)
{
    (void)state;
    assert_int_equal(rl_window_at(WINDOW_MS + 1).reset_ms, 999);
    assert_int_equal(rl_window_at(WINDOW_MS + 420).reset_ms, 580);
    assert_int_equal(rl_window_at(0).window, 0);
    assert_int_equal(rl_window_at(0).reset_ms, 1000);
}

static void test_count_below_limit_is_allowed_with_remaining(void **state)
{
    (void)state;
    rl_window_t w = rl_window_at(WINDOW_MS + 420);
    rl_decision_t d = rl_decide(9, 10, &w);
    assert_true(d.allowed);
    assert_int_equal(d.limit, 10);
    assert_int_equal(d.remaining, 1);
}

static void test_count_at_limit_is_allowed_with_zero_remaining(void **state)
{
    (void)state;
    rl_window_t w = rl_window_at(WINDOW_MS + 420);
    rl_decision_t d = rl_decide(10, 10, &w);
    assert_true(d.allowed);
    assert_int_equal(d.remaining, 0);
}

static void test_count_over_limit_is_denied_with_retry_after(void **state)
{
    (void)state;
    rl_window_t w = rl_window_at(WINDOW_MS + 420);
    rl_decision_t d = rl_decide(11, 10, &w);
    assert_false(d.allowed);
    assert_int_equal(d.limit, 10);
    assert_int_equal(d.remaining, 0);
    assert_int_equal(d.retry_after, 1);
    /* counts far beyond 32 bits are still denied, not wrapped */
    d = rl_decide(UINT64_MAX, 10, &w);
    assert_false(d.allowed);
    assert_int_equal(d.remaining, 0);
    d = rl_decide((uint64_t)UINT32_MAX + 5, UINT32_MAX, &w);
    assert_false(d.allowed);
}

static void test_retry_after_is_at_least_one_second(void **state)
{
    (void)state;
    for (uint64_t ms = 0; ms != 1000; ++ms) {
        rl_window_t w = rl_window_at(WINDOW_MS + ms);
        rl_decision_t d = rl_decide(2, 1, &w);
        assert_int_equal(d.retry_after, 1);
        assert_true(d.retry_after * 1000 >= w.reset_ms);
    }
    /* a hand-built window with nothing left still tells the client to wait */
    rl_window_t edge = {.window = WINDOW, .reset_ms = 0};
    assert_int_equal(rl_decide_denied(5, &edge).retry_after, 1);
}

static void test_denied_decision_from_cache(void **state)
{
    (void)state;
    rl_window_t w = rl_window_at(WINDOW_MS + 999);
    rl_decision_t d = rl_decide_denied(100, &w);
    assert_false(d.allowed);
    assert_int_equal(d.limit, 100);
    assert_int_equal(d.remaining, 0);
    assert_int_equal(d.retry_after, 1);
}

static void test_window_seen_later_has_what_is_left_of_it(void **state)
{
    (void)state;
    rl_window_t w = rl_window_seen_at(WINDOW, WINDOW_MS + 420);
    assert_int_equal(w.window, WINDOW);
    assert_int_equal(w.reset_ms, 580);
    /* answered after its window ended (a slow backend): nothing left, yet Retry-After stays >= 1 */
    w = rl_window_seen_at(WINDOW, WINDOW_MS + 4500);
    assert_int_equal(w.window, WINDOW);
    assert_int_equal(w.reset_ms, 0);
    assert_int_equal(rl_decide(11, 10, &w).retry_after, 1);
    assert_int_equal(rl_window_seen_at(WINDOW, WINDOW_MS + 1000).reset_ms, 0);
    assert_int_equal(rl_window_seen_at(WINDOW, WINDOW_MS + 999).reset_ms, 1);
    /* a clock set back behind the window: the whole window is left */
    assert_int_equal(rl_window_seen_at(WINDOW, WINDOW_MS - 3000).reset_ms, 1000);
}

/* A hash whose first 8 bytes (the set selector) are `set` and last 8 are `tail`. */
static rl_keyhash_t hash_of(uint64_t set, uint64_t tail)
{
    rl_keyhash_t h;
    memcpy(h.bytes, &set, 8);
    memcpy(h.bytes + 8, &tail, 8);
    return h;
}

static void test_deny_cache_hits_in_same_window_only(void **state)
{
    (void)state;
    rl_deny_cache_t *cache = rl_deny_cache_create(1024);
    assert_non_null(cache);
    rl_keyhash_t h = hash_of(7, 1);
    assert_false(rl_deny_cache_contains(cache, &h, WINDOW));
    rl_deny_cache_add(cache, &h, WINDOW, WINDOW);
    assert_true(rl_deny_cache_contains(cache, &h, WINDOW));
    assert_false(rl_deny_cache_contains(cache, &h, WINDOW + 1));
    assert_false(rl_deny_cache_contains(cache, &h, WINDOW - 1));
    rl_deny_cache_add(cache, &h, WINDOW, WINDOW); /* adding twice keeps one entry */
    assert_true(rl_deny_cache_contains(cache, &h, WINDOW));
    rl_deny_cache_destroy(cache);
}

static void test_deny_cache_clear_forgets_every_denial(void **state)
{
    (void)state;
    rl_deny_cache_t *cache = rl_deny_cache_create(64);
    assert_non_null(cache);
    for (uint64_t k = 0; k != 64; ++k) {
        rl_keyhash_t h = hash_of(k, k);
        rl_deny_cache_add(cache, &h, WINDOW, WINDOW);
    }
    rl_keyhash_t last = hash_of(63, 63);
    assert_true(rl_deny_cache_contains(cache, &last, WINDOW));
    rl_deny_cache_clear(cache);
    for (uint64_t k = 0; k != 64; ++k) {
        rl_keyhash_t h = hash_of(k, k);
        assert_false(rl_deny_cache_contains(cache, &h, WINDOW));
    }
    /* and it still caches afterwards */
    rl_deny_cache_add(cache, &last, WINDOW, WINDOW);
    assert_true(rl_deny_cache_contains(cache, &last, WINDOW));
    rl_deny_cache_destroy(cache);
}

static void test_deny_cache_keeps_keys_distinct(void **state)
{
    (void)state;
    rl_deny_cache_t *cache = rl_deny_cache_create(64);
    assert_non_null(cache);
    rl_keyhash_t a = hash_of(3, 1), same_set = hash_of(3, 2), other_set = hash_of(4, 1);
    rl_deny_cache_add(cache, &a, WINDOW, WINDOW);
    assert_true(rl_deny_cache_contains(cache, &a, WINDOW));
    assert_false(rl_deny_cache_contains(cache, &same_set, WINDOW)); /* differs only past byte 8 */
    assert_false(rl_deny_cache_contains(cache, &other_set, WINDOW));
    rl_keyhash_t zero = hash_of(0, 0);
    assert_false(rl_deny_cache_contains(cache, &zero, 0)); /* an unused way is not a match */
    rl_deny_cache_destroy(cache);
}

static void test_deny_cache_full_set_evicts_round_robin(void **state)
{
    (void)state;
    rl_deny_cache_t *cache = rl_deny_cache_create(64);
    assert_non_null(cache);
    rl_keyhash_t keys[6];
    for (uint64_t i = 0; i != 6; ++i)
        keys[i] = hash_of(5, 100 + i); /* all in one 4-way set */
    for (size_t i = 0; i != 5; ++i)
        rl_deny_cache_add(cache, &keys[i], WINDOW, WINDOW);
    assert_false(rl_deny_cache_contains(cache, &keys[0], WINDOW));
    for (size_t i = 1; i != 5; ++i)
        assert_true(rl_deny_cache_contains(cache, &keys[i], WINDOW));
    rl_deny_cache_add(cache, &keys[5], WINDOW, WINDOW);
    assert_false(rl_deny_cache_contains(cache, &keys[1], WINDOW));
    for (size_t i = 2; i != 6; ++i)
        assert_true(rl_deny_cache_contains(cache, &keys[i], WINDOW));
    rl_deny_cache_destroy(cache);
}

static void test_deny_cache_reuses_past_windows_before_evicting(void **state)
{
    (void)state;
    rl_deny_cache_t *cache = rl_deny_cache_create(64);
    assert_non_null(cache);
    rl_keyhash_t old[4], fresh[4];
    for (uint64_t i = 0; i != 4; ++i) {
        old[i] = hash_of(9, i);
        fresh[i] = hash_of(9, 50 + i);
    }
    for (size_t i = 0; i != 4; ++i)
        rl_deny_cache_add(cache, &old[i], WINDOW, WINDOW);
    /* next window: one old key denied again, three new ones; the set holds all four */
    rl_deny_cache_add(cache, &old[2], WINDOW + 1, WINDOW + 1);
    for (size_t i = 0; i != 3; ++i)
        rl_deny_cache_add(cache, &fresh[i], WINDOW + 1, WINDOW + 1);
    assert_true(rl_deny_cache_contains(cache, &old[2], WINDOW + 1));
    for (size_t i = 0; i != 3; ++i)
        assert_true(rl_deny_cache_contains(cache, &fresh[i], WINDOW + 1));
    /* a late denial from the previous window, arriving in this one, is dropped */
    rl_deny_cache_add(cache, &fresh[3], WINDOW, WINDOW + 1);
    assert_false(rl_deny_cache_contains(cache, &fresh[3], WINDOW));
    assert_true(rl_deny_cache_contains(cache, &old[2], WINDOW + 1));
    for (size_t i = 0; i != 3; ++i)
        assert_true(rl_deny_cache_contains(cache, &fresh[i], WINDOW + 1));
    rl_deny_cache_destroy(cache);
}

/* A late denial whose window is the set's oldest rotates over that window's ways only: the
 * round-robin pointer, left on a way that now holds a newer window, must not evict it. */
static void test_deny_cache_late_denial_never_evicts_a_newer_window(void **state)
{
    (void)state;
    rl_deny_cache_t *cache = rl_deny_cache_create(64);
    assert_non_null(cache);
    rl_keyhash_t fill[5], x = hash_of(7, 200), newer[3], late = hash_of(7, 300);
    for (uint64_t i = 0; i != 5; ++i)
        fill[i] = hash_of(7, i); /* five in one 4-way set: the round-robin pointer moves to way 1 */
    for (uint64_t i = 0; i != 3; ++i)
        newer[i] = hash_of(7, 100 + i);
    for (size_t i = 0; i != 5; ++i)
        rl_deny_cache_add(cache, &fill[i], WINDOW - 1, WINDOW - 1);
    rl_deny_cache_add(cache, &x, WINDOW, WINDOW);
    for (size_t i = 0; i != 3; ++i)
        rl_deny_cache_add(cache, &newer[i], WINDOW + 1, WINDOW + 1);
    /* the set: x @WINDOW and three @WINDOW+1; a late denial @WINDOW may only replace x */
    rl_deny_cache_add(cache, &late, WINDOW, WINDOW); /* the clock was set back a second */
    assert_true(rl_deny_cache_contains(cache, &late, WINDOW));
    assert_false(rl_deny_cache_contains(cache, &x, WINDOW));
    for (size_t i = 0; i != 3; ++i)
        assert_true(rl_deny_cache_contains(cache, &newer[i], WINDOW + 1));
    rl_deny_cache_destroy(cache);
}

/* The "nothing denied in this window yet" shortcut must not hide a late request's older window. */
static void test_deny_cache_shortcut_keeps_older_windows_visible(void **state)
{
    (void)state;
    rl_deny_cache_t *cache = rl_deny_cache_create(1024);
    rl_keyhash_t a = hash_of(1, 1), b = hash_of(2, 2);
    assert_false(rl_deny_cache_contains(cache, &a, 100));
    rl_deny_cache_add(cache, &b, 100, 100);
    rl_deny_cache_add(cache, &a, 101, 101);
    assert_true(rl_deny_cache_contains(cache, &b, 100));
    assert_true(rl_deny_cache_contains(cache, &a, 101));
    assert_false(rl_deny_cache_contains(cache, &b, 101));
    assert_false(rl_deny_cache_contains(cache, &a, 102));
    rl_deny_cache_destroy(cache);
}

/* A wall clock that jumped an hour ahead and was set back leaves denials stamped in the future:
 * they must give way to the real window's denials at once, not in an hour. */
static void test_deny_cache_reuses_ways_stamped_ahead_by_a_clock_step(void **state)
{
    (void)state;
    rl_deny_cache_t *cache = rl_deny_cache_create(64);
    assert_non_null(cache);
    rl_keyhash_t ahead[4], now[4];
    for (uint64_t i = 0; i != 4; ++i) {
        ahead[i] = hash_of(6, i);
        now[i] = hash_of(6, 10 + i);
    }
    for (size_t i = 0; i != 4; ++i)
        rl_deny_cache_add(cache, &ahead[i], WINDOW + 3600, WINDOW + 3600);
    for (size_t i = 0; i != 4; ++i)
        rl_deny_cache_add(cache, &now[i], WINDOW, WINDOW);
    for (size_t i = 0; i != 4; ++i) {
        assert_true(rl_deny_cache_contains(cache, &now[i], WINDOW));
        assert_false(rl_deny_cache_contains(cache, &ahead[i], WINDOW + 3600));
    }
    /* a thread a window or two ahead is not a clock step: its denial is kept */
    rl_keyhash_t next = hash_of(6, 20);
    rl_deny_cache_add(cache, &next, WINDOW + RL_WINDOW_MAX_AHEAD, WINDOW + RL_WINDOW_MAX_AHEAD);
    rl_deny_cache_add(cache, &ahead[0], WINDOW, WINDOW);
    assert_true(rl_deny_cache_contains(cache, &next, WINDOW + RL_WINDOW_MAX_AHEAD));
    rl_deny_cache_destroy(cache);
}

/* A denial can come back long after its window (timeout_ms allows a minute): dropped, it neither
 * evicts the current window's denials nor turns off the shortcut that finds them. */
static void test_deny_cache_drops_a_denial_of_an_ended_window(void **state)
{
    (void)state;
    rl_deny_cache_t *cache = rl_deny_cache_create(64);
    assert_non_null(cache);
    rl_keyhash_t now[4], late = hash_of(3, 99);
    for (uint64_t i = 0; i != 4; ++i) {
        now[i] = hash_of(3, i);
        rl_deny_cache_add(cache, &now[i], WINDOW + 3, WINDOW + 3);
    }
    rl_deny_cache_add(cache, &late, WINDOW, WINDOW + 3);
    assert_false(rl_deny_cache_contains(cache, &late, WINDOW));
    for (size_t i = 0; i != 4; ++i)
        assert_true(rl_deny_cache_contains(cache, &now[i], WINDOW + 3));
    rl_deny_cache_destroy(cache);
}

static void test_deny_cache_rounds_slots_up_to_power_of_two(void **state)
{
    (void)state;
    /* 100 slots -> 128 = 32 sets of 4: 32 set selectors x 4 keys all fit */
    rl_deny_cache_t *cache = rl_deny_cache_create(100);
    assert_non_null(cache);
    for (uint64_t i = 0; i != 128; ++i) {
        rl_keyhash_t h = hash_of(i % 32, i);
        rl_deny_cache_add(cache, &h, WINDOW, WINDOW);
    }
    for (uint64_t i = 0; i != 128; ++i) {
        rl_keyhash_t h = hash_of(i % 32, i);
        assert_true(rl_deny_cache_contains(cache, &h, WINDOW));
    }
    rl_deny_cache_destroy(cache);
    /* tiny requests get the minimum; destroy accepts NULL */
    cache = rl_deny_cache_create(0);
    assert_non_null(cache);
    rl_deny_cache_destroy(cache);
    rl_deny_cache_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_start_has_full_second_to_reset),
        cmocka_unit_test(test_window_last_millisecond_resets_in_1),
        cmocka_unit_test(test_window_reset_counts_down_within_second),
        cmocka_unit_test(test_count_below_limit_is_allowed_with_remaining),
        cmocka_unit_test(test_count_at_limit_is_allowed_with_zero_remaining),
        cmocka_unit_test(test_count_over_limit_is_denied_with_retry_after),
        cmocka_unit_test(test_retry_after_is_at_least_one_second),
        cmocka_unit_test(test_denied_decision_from_cache),
        cmocka_unit_test(test_window_seen_later_has_what_is_left_of_it),
        cmocka_unit_test(test_deny_cache_hits_in_same_window_only),
        cmocka_unit_test(test_deny_cache_keeps_keys_distinct),
        cmocka_unit_test(test_deny_cache_clear_forgets_every_denial),
        cmocka_unit_test(test_deny_cache_full_set_evicts_round_robin),
        cmocka_unit_test(test_deny_cache_reuses_past_windows_before_evicting),
        cmocka_unit_test(test_deny_cache_reuses_ways_stamped_ahead_by_a_clock_step),
        cmocka_unit_test(test_deny_cache_drops_a_denial_of_an_ended_window),
        cmocka_unit_test(test_deny_cache_rounds_slots_up_to_power_of_two),
        cmocka_unit_test(test_deny_cache_late_denial_never_evicts_a_newer_window),
        cmocka_unit_test(test_deny_cache_shortcut_keeps_older_windows_visible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
