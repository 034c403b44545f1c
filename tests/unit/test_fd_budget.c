/*
 * The connection limit in force: server.max_connections while the open-file limit has room for
 * it and the process's own descriptors, lowered to that room otherwise, never 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "ratelimitd/fd_budget.h"

static void test_reserve_grows_with_threads_listeners_and_nodes(void **state)
{
    (void)state;
    uint64_t base = rl_fd_budget_reserved(1, 1, 0);
    assert_true(base > 3); /* more than the standard streams */
    assert_int_equal(rl_fd_budget_reserved(1, 1, 3), base + 3);
    assert_int_equal(rl_fd_budget_reserved(1, 2, 0), base + 1);
    /* a second thread has its own listeners, node connections and loop descriptors */
    uint64_t per_thread = rl_fd_budget_reserved(2, 1, 0) - base;
    assert_true(per_thread >= 1 + 2); /* listener, epoll, queue pipe at least */
    assert_int_equal(rl_fd_budget_reserved(4, 2, 3) - rl_fd_budget_reserved(3, 2, 3), per_thread + 1 + 3);
}

static void test_minimum_is_below_the_reserve_and_grows_per_thread(void **state)
{
    (void)state;
    /* 16 threads, one listener, the local store: more than `ulimit -n 64` holds */
    assert_true(rl_fd_budget_minimum(16, 1, 0) > 64);
    assert_true(rl_fd_budget_minimum(2, 1, 0) < 64);
    assert_true(rl_fd_budget_minimum(4, 2, 3) > rl_fd_budget_minimum(4, 1, 3));
    assert_true(rl_fd_budget_minimum(4, 2, 3) > rl_fd_budget_minimum(4, 2, 2));
    assert_true(rl_fd_budget_minimum(4, 2, 3) < rl_fd_budget_reserved(4, 2, 3));
}

static void test_configured_limit_kept_when_descriptors_allow_it(void **state)
{
    (void)state;
    uint64_t reserved = rl_fd_budget_reserved(2, 1, 3);
    assert_int_equal(rl_fd_budget_max_connections(1048576, reserved, 10000), 10000);
    assert_int_equal(rl_fd_budget_max_connections(10000 + reserved, reserved, 10000), 10000);
}

static void test_limit_lowered_to_what_descriptors_allow(void **state)
{
    (void)state;
    uint64_t reserved = rl_fd_budget_reserved(2, 1, 3);
    assert_int_equal(rl_fd_budget_max_connections(10000 + reserved - 1, reserved, 10000), 9999);
    assert_int_equal(rl_fd_budget_max_connections(1024, reserved, 10000), 1024 - reserved);
}

static void test_no_room_still_leaves_one_connection(void **state)
{
    (void)state;
    assert_int_equal(rl_fd_budget_max_connections(64, 64, 10000), 1);
    assert_int_equal(rl_fd_budget_max_connections(10, 64, 10000), 1);
    assert_int_equal(rl_fd_budget_max_connections(0, 64, 5), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_grows_with_threads_listeners_and_nodes),
        cmocka_unit_test(test_minimum_is_below_the_reserve_and_grows_per_thread),
        cmocka_unit_test(test_configured_limit_kept_when_descriptors_allow_it),
        cmocka_unit_test(test_limit_lowered_to_what_descriptors_allow),
        cmocka_unit_test(test_no_room_still_leaves_one_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
