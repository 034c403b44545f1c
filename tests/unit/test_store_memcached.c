/*
 * The memcached store against a real memcached started by the test on a free loopback port
 * (`memcached -l 127.0.0.1 -p PORT -U 0`, as `-u nobody` when root), killed by PID at the end.
 * The test fails, not skips, when memcached is missing: it proves nothing otherwise.
 */
#include <fcntl.h>
#include <sys/time.h>
#include "store_memcached_fixture.h"
#include "ratelimitd/mc_node.h"

extern char **environ;

static pid_t memcached_pid;
static uint16_t memcached_port;
static long long wall_clock_offset_us;

/* libh2o's loop clock is gettimeofday; this definition interposes it, so that a test can step the
 * wall clock as NTP would, for h2o only (the tests' own deadlines use CLOCK_MONOTONIC). */
int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    (void)tz;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long us = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 + wall_clock_offset_us;
    tv->tv_sec = us / 1000000;
    tv->tv_usec = us % 1000000;
    return 0;
}

static bool memcached_listening(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {
        .sin_family = AF_INET, .sin_port = htons(memcached_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
    close(fd);
    return ok;
}

/* A test whose loop may never return (a corrupt timeout list) fails within WATCHDOG_S instead, and
 * one that aborts (an assert in the code under test) still takes its memcached with it rather than
 * leaving it to init. */
#define WATCHDOG_S 30

static void on_watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "watchdog: the test did not finish; killing memcached\n";
    ssize_t written = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)written;
    if (memcached_pid > 0)
        kill(memcached_pid, SIGKILL);
    _exit(1);
}

static void on_abort(int sig)
{
    if (memcached_pid > 0)
        kill(memcached_pid, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int start_memcached(void **state)
{
    (void)state;
    memcached_port = free_port();
    char port[8];
    snprintf(port, sizeof(port), "%u", memcached_port);
    char *argv[] = {"memcached", "-l", "127.0.0.1", "-p", port, "-U", "0", "-u", "nobody", NULL};
    if (geteuid() != 0)
        argv[7] = NULL; /* -u is only accepted (and needed) as root */
    /* memcached must not hold the test's stdout: ctest waits for that pipe to close */
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    int err = posix_spawnp(&memcached_pid, "memcached", &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) {
        fprintf(stderr, "cannot start memcached: %s (install it: the test must not pass without it)\n", strerror(err));
        return -1;
    }
    for (int i = 0; i != 200 && !memcached_listening(); ++i)
        usleep(10000);
    if (!memcached_listening()) {
        fprintf(stderr, "memcached did not start listening on port %u\n", memcached_port);
        return -1;
    }
    signal(SIGABRT, on_abort); /* a failed assert in the code under test */
    return 0;
}

static void arm_watchdog(void)
{
    signal(SIGALRM, on_watchdog);
    alarm(WATCHDOG_S);
}

static void disarm_watchdog(void)
{
    alarm(0);
    signal(SIGALRM, SIG_DFL);
}

static int stop_memcached(void **state)
{
    (void)state;
    if (memcached_pid > 0) {
        kill(memcached_pid, SIGTERM);
        waitpid(memcached_pid, NULL, 0);
        memcached_pid = 0;
    }
    return 0;
}

static void unique_key(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "rl:test-%s-%d-%llu:1795412345", name, (int)getpid(), (unsigned long long)now_ms());
}

static void test_real_memcached_counts_1_2_3_and_queues_while_connecting(void **state)
{
    (void)state;
    fixture_t f;
    fixture_init(&f, &memcached_port, 1);
    fixture_start(&f, NULL);
    char key[128];
    unique_key(key, sizeof(key), "count");
    /* issued before the loop ever ran: the connection is still being made */
    result_t first = {0};
    assert_non_null(incr(&f, key, &first));
    assert_true(run_until(f.loop, result_done, &first, 3000));
    assert_int_equal(first.status, RL_OK);
    assert_int_equal(first.value, 1);
    uint64_t value;
    assert_int_equal(incr_wait(&f, key, &value), RL_OK);
    assert_int_equal(value, 2);
    assert_int_equal(incr_wait(&f, key, &value), RL_OK);
    assert_int_equal(value, 3);
    assert_true(store_is_ready(f.thread));
    fixture_dispose(&f);
}

static void test_real_memcached_pipelines_one_loop_turn_into_one_write(void **state)
{
    (void)state;
    enum { N = 200 };
    fixture_t f;
    fixture_init(&f, &memcached_port, 1);
    rl_metrics_t *metrics = fixture_start_with_metrics(&f);
    assert_true(run_until(f.loop, store_ready, f.thread, 3000));
    rl_mc_node_stats_t before = stats_of(&f, 0);

    static result_t results[N];
    memset(results, 0, sizeof(results));
    char base[96];
    unique_key(base, sizeof(base), "pipe");
    for (size_t i = 0; i != N; ++i) {
        char key[128];
        snprintf(key, sizeof(key), "%s-%zu", base, i);
        assert_non_null(incr(&f, key, &results[i]));
    }
    assert_true(run_until(f.loop, result_done, &results[N - 1], 3000));
    for (size_t i = 0; i != N; ++i) {
        assert_int_equal(results[i].calls, 1);
        assert_int_equal(results[i].status, RL_OK);
        assert_int_equal(results[i].value, 1);
    }
    rl_mc_node_stats_t after = stats_of(&f, 0);
    assert_int_equal(after.writes - before.writes, 1);
    assert_int_equal(after.write_requests - before.write_requests, N);
    assert_int_equal(after.replies - before.replies, N);
    print_message("%d increments: %llu write(s), %llu read(s) carrying replies\n", N,
                  (unsigned long long)(after.writes - before.writes), (unsigned long long)(after.reads - before.reads));

    size_t len;
    char *text = rl_metrics_render(metrics, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "ratelimitd_backend_write_requests_total"));
    free(text);
    fixture_dispose(&f);
    rl_metrics_destroy(metrics);
}

/* Issues `n` increments of fresh keys into results[first..first+n). */
static void incr_fresh(fixture_t *f, const char *name, result_t *results, size_t first, size_t n)
{
    char base[96];
    unique_key(base, sizeof(base), name);
    for (size_t i = first; i != first + n; ++i) {
        char key[128];
        snprintf(key, sizeof(key), "%s-%zu", base, i);
        assert_non_null(incr(f, key, &results[i]));
    }
}

static uint64_t writes_since(fixture_t *f, const rl_mc_node_stats_t *before)
{
    return stats_of(f, 0).writes - before->writes;
}

/* One node, connected. */
static void start_one_node(fixture_t *f)
{
    fixture_init(f, &memcached_port, 1);
    fixture_start(f, NULL);
    assert_true(run_until(f->loop, store_ready, f->thread, 3000));
}

static void await_all(fixture_t *f, const result_t *results, size_t n)
{
    results_t all = {results, n};
    assert_true(run_until(f->loop, results_all_done, &all, 3000));
}

/* A small batch (2 to RL_MC_HOLD_BELOW - 1 increments) waits up to RL_MC_HOLD_TURNS (2) loop turns
 * and leaves with those turns' increments in one write; it never waits a third turn, and it leaves
 * in the turn it reaches RL_MC_HOLD_BELOW. */
static void test_real_memcached_small_batch_waits_up_to_two_turns(void **state)
{
    (void)state;
    fixture_t f;
    start_one_node(&f);
    rl_mc_node_stats_t before = stats_of(&f, 0);
    result_t results[9] = {{0}};

    incr_fresh(&f, "hold", results, 0, 3);
    h2o_evloop_run(f.loop, 0); /* the turn whose flush holds the 3 */
    assert_int_equal(writes_since(&f, &before), 0);
    incr_fresh(&f, "hold-next", results, 3, 3);
    h2o_evloop_run(f.loop, 0); /* 6: held a second turn */
    assert_int_equal(writes_since(&f, &before), 0);
    incr_fresh(&f, "hold-last", results, 6, 3);
    h2o_evloop_run(f.loop, 0); /* the third turn: one write of the three turns' increments */
    assert_int_equal(writes_since(&f, &before), 1);
    assert_int_equal(stats_of(&f, 0).write_requests - before.write_requests, 9);
    await_all(&f, results, 9);
    for (size_t i = 0; i != 9; ++i) {
        assert_int_equal(results[i].status, RL_OK);
        assert_int_equal(results[i].value, 1);
    }

    /* held, then nothing joins it: it leaves after its two turns all the same */
    result_t alone[2] = {{0}};
    before = stats_of(&f, 0);
    incr_fresh(&f, "hold-alone", alone, 0, 2);
    h2o_evloop_run(f.loop, 0);
    h2o_evloop_run(f.loop, 0);
    assert_int_equal(writes_since(&f, &before), 0);
    h2o_evloop_run(f.loop, 0);
    assert_int_equal(writes_since(&f, &before), 1);
    await_all(&f, alone, 2);

    /* held, then filled to RL_MC_HOLD_BELOW by the next turn: it leaves in that turn */
    result_t filled[RL_MC_HOLD_BELOW] = {{0}};
    before = stats_of(&f, 0);
    incr_fresh(&f, "hold-filled", filled, 0, 10);
    h2o_evloop_run(f.loop, 0);
    assert_int_equal(writes_since(&f, &before), 0);
    incr_fresh(&f, "hold-filled-next", filled, 10, RL_MC_HOLD_BELOW - 10);
    h2o_evloop_run(f.loop, 0);
    assert_int_equal(writes_since(&f, &before), 1);
    assert_int_equal(stats_of(&f, 0).write_requests - before.write_requests, RL_MC_HOLD_BELOW);
    await_all(&f, filled, RL_MC_HOLD_BELOW);
    fixture_dispose(&f);
}

/* An increment issued during the flush pass that held its node's batch (from a callback the pass
 * runs, as when a failed write to another node answers requests whose connections send their next
 * at once) joins the held batch: the pass does not flush the node again, which would hold it a
 * second time (both turns used up in one) and link its held entry twice. */
typedef struct st_join_in_pass_t {
    h2o_timeout_entry_t entry;
    fixture_t *f;
    result_t *result;
} join_in_pass_t;

static void incr_from_flush_pass(h2o_timeout_entry_t *entry)
{
    join_in_pass_t *join = H2O_STRUCT_FROM_MEMBER(join_in_pass_t, entry, entry);
    incr_fresh(join->f, "hold-in-pass", join->result, 0, 1);
}

static void test_real_memcached_increment_joining_in_the_holding_pass(void **state)
{
    (void)state;
    fixture_t f;
    start_one_node(&f);
    rl_mc_thread_t *thread = (rl_mc_thread_t *)f.thread;
    rl_mc_node_t *node = &thread->nodes[0];
    rl_mc_node_stats_t before = stats_of(&f, 0);
    result_t results[3] = {{0}}, joined[1] = {{0}};

    arm_watchdog();
    incr_fresh(&f, "hold-before-pass", results, 0, 3); /* links the node's flush entry */
    join_in_pass_t join = {{0}, &f, joined};
    join.entry.cb = incr_from_flush_pass;
    h2o_timeout_link(f.loop, &thread->flush_timeout, &join.entry); /* runs after the node's flush */
    h2o_evloop_run(f.loop, 0);
    assert_int_equal(joined[0].calls, 0);
    assert_true(h2o_timeout_is_linked(&node->hold_entry));
    assert_false(h2o_timeout_is_linked(&node->flush_entry));
    h2o_evloop_run(f.loop, 0); /* 4 increments: held a second turn */
    assert_int_equal(writes_since(&f, &before), 0);
    h2o_evloop_run(f.loop, 0);
    assert_int_equal(writes_since(&f, &before), 1);
    assert_int_equal(stats_of(&f, 0).write_requests - before.write_requests, 4);
    await_all(&f, results, 3);
    await_all(&f, joined, 1);
    disarm_watchdog();
    fixture_dispose(&f);
}

/* A batch of RL_MC_HOLD_BELOW issued before one loop turn leaves in that turn, after h2o's clock
 * stepped back by `step_back_us` (0: no step), and every increment of it is counted. */
static void check_full_batch_leaves_in_its_turn(fixture_t *f, const char *name, long long step_back_us)
{
    rl_mc_node_stats_t before = stats_of(f, 0);
    result_t full[RL_MC_HOLD_BELOW] = {{0}};
    incr_fresh(f, name, full, 0, RL_MC_HOLD_BELOW);
    wall_clock_offset_us -= step_back_us;
    h2o_evloop_run(f->loop, 0);
    assert_int_equal(writes_since(f, &before), 1);
    assert_int_equal(stats_of(f, 0).write_requests - before.write_requests, RL_MC_HOLD_BELOW);
    await_all(f, full, RL_MC_HOLD_BELOW);
    for (size_t i = 0; i != RL_MC_HOLD_BELOW; ++i)
        assert_int_equal(full[i].status, RL_OK);
}

/* A lone increment (an idle daemon's) and a batch of RL_MC_HOLD_BELOW leave in their own turn. */
static void test_real_memcached_lone_increment_and_full_batch_leave_at_once(void **state)
{
    (void)state;
    fixture_t f;
    start_one_node(&f);
    rl_mc_node_stats_t before = stats_of(&f, 0);
    result_t one[1] = {{0}};
    incr_fresh(&f, "lone", one, 0, 1);
    h2o_evloop_run(f.loop, 0);
    assert_int_equal(writes_since(&f, &before), 1);
    assert_true(run_until(f.loop, result_done, &one[0], 3000));
    check_full_batch_leaves_in_its_turn(&f, "full", 0);
    fixture_dispose(&f);
}

/* A wall clock stepped back between two loop turns delays nothing: neither a batch held by the
 * first turn nor a flush the first turn left for the next (h2o stamps both with the wall clock). */
static void test_real_memcached_clock_step_back_strands_no_batch(void **state)
{
    (void)state;
    fixture_t f;
    start_one_node(&f);

    rl_mc_node_stats_t before = stats_of(&f, 0);
    result_t held[3] = {{0}};
    incr_fresh(&f, "step-held", held, 0, 3);
    h2o_evloop_run(f.loop, 0); /* held */
    wall_clock_offset_us -= 5 * 1000000LL;
    h2o_evloop_run(f.loop, 0); /* held again, from a flush linked after the step */
    wall_clock_offset_us -= 5 * 1000000LL;
    h2o_evloop_run(f.loop, 0);
    assert_int_equal(writes_since(&f, &before), 1);
    await_all(&f, held, 3);

    /* linked at the last turn's time, run after a step back: still this turn's write */
    check_full_batch_leaves_in_its_turn(&f, "step-flush", 5 * 1000000LL);
    wall_clock_offset_us = 0;
    fixture_dispose(&f);
}

/* A thread destroyed while a batch is held cancels it (and h2o's timeout list is left empty: its
 * dispose asserts so). */
static void test_real_memcached_destroy_while_a_batch_is_held(void **state)
{
    (void)state;
    fixture_t f;
    start_one_node(&f);
    rl_mc_node_stats_t before = stats_of(&f, 0);
    result_t held[3] = {{0}};
    incr_fresh(&f, "destroy-held", held, 0, 3);
    h2o_evloop_run(f.loop, 0);
    assert_int_equal(writes_since(&f, &before), 0);
    fixture_dispose(&f);
    for (size_t i = 0; i != 3; ++i) {
        assert_int_equal(held[i].calls, 1);
        assert_int_equal(held[i].status, RL_ERR_CANCELLED);
    }
}

/* The pipelining counters are about increments: an idle node's probes are no traffic. */
static void test_real_memcached_probes_are_not_counted_as_writes_or_reads(void **state)
{
    (void)state;
    enum { N = 10 };
    fixture_t f;
    fixture_init(&f, &memcached_port, 1);
    rl_metrics_t *metrics = fixture_start_with_metrics(&f);
    assert_true(run_until(f.loop, store_ready, f.thread, 3000));
    run_for(f.loop, 1700); /* idle long enough to be probed again */
    static const char *const series[] = {"ratelimitd_backend_writes_total", "ratelimitd_backend_write_requests_total",
                                         "ratelimitd_backend_reads_total", "ratelimitd_backend_read_replies_total"};
    rl_mc_node_stats_t stats = stats_of(&f, 0);
    assert_true(stats.probes >= 2);
    for (size_t i = 0; i != sizeof(series) / sizeof(series[0]); ++i)
        assert_int_equal(node_metric(metrics, series[i], f.names[0], NULL), 0);
    assert_int_equal(stats.writes + stats.write_requests + stats.reads + stats.replies, 0);

    result_t results[N] = {{0}};
    char key[128];
    unique_key(key, sizeof(key), "probes");
    for (size_t i = 0; i != N; ++i)
        assert_non_null(incr(&f, key, &results[i]));
    assert_true(run_until(f.loop, result_done, &results[N - 1], 3000));
    assert_int_equal(node_metric(metrics, "ratelimitd_backend_writes_total", f.names[0], NULL), 1);
    assert_int_equal(node_metric(metrics, "ratelimitd_backend_write_requests_total", f.names[0], NULL), N);
    assert_int_equal(node_metric(metrics, "ratelimitd_backend_read_replies_total", f.names[0], NULL), N);
    assert_true(node_metric(metrics, "ratelimitd_backend_reads_total", f.names[0], NULL) >= 1);
    stats = stats_of(&f, 0);
    assert_int_equal(stats.write_requests, N);
    assert_int_equal(stats.replies, N);
    fixture_dispose(&f);
    rl_metrics_destroy(metrics);
}

static void test_cancelled_op_never_calls_back_and_overload_is_immediate(void **state)
{
    (void)state;
    fixture_t f;
    fixture_init(&f, &memcached_port, 1);
    f.config.backend.max_pending = 4;
    fixture_start(&f, NULL);
    assert_true(run_until(f.loop, store_ready, f.thread, 3000));
    char key[128];
    unique_key(key, sizeof(key), "cancel");
    result_t r[6] = {{0}};
    rl_store_op_t *ops[6];
    for (size_t i = 0; i != 6; ++i)
        ops[i] = incr(&f, key, &r[i]);
    for (size_t i = 0; i != 4; ++i)
        assert_non_null(ops[i]);
    for (size_t i = 4; i != 6; ++i) {
        assert_null(ops[i]);
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, RL_ERR_BACKEND_OVERLOAD);
    }
    store_cancel(f.thread, ops[1]);
    assert_true(run_until(f.loop, result_done, &r[3], 3000));
    assert_int_equal(r[0].value, 1);
    assert_int_equal(r[1].calls, 0);
    assert_int_equal(r[2].value, 3); /* the cancelled op still counted, and its reply was skipped in order */
    assert_int_equal(r[3].value, 4);
    fixture_dispose(&f);
}

static void test_thread_destroy_cancels_pending_ops(void **state)
{
    (void)state;
    fixture_t f;
    fixture_init(&f, &memcached_port, 1);
    fixture_start(&f, NULL);
    char key[128];
    unique_key(key, sizeof(key), "destroy");
    result_t r = {0};
    assert_non_null(incr(&f, key, &r));
    fixture_stop(&f);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, RL_ERR_CANCELLED);
    fixture_dispose(&f);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_memcached_counts_1_2_3_and_queues_while_connecting),
        cmocka_unit_test(test_real_memcached_pipelines_one_loop_turn_into_one_write),
        cmocka_unit_test(test_real_memcached_small_batch_waits_up_to_two_turns),
        cmocka_unit_test(test_real_memcached_increment_joining_in_the_holding_pass),
        cmocka_unit_test(test_real_memcached_lone_increment_and_full_batch_leave_at_once),
        cmocka_unit_test(test_real_memcached_clock_step_back_strands_no_batch),
        cmocka_unit_test(test_real_memcached_destroy_while_a_batch_is_held),
        cmocka_unit_test(test_real_memcached_probes_are_not_counted_as_writes_or_reads),
        cmocka_unit_test(test_cancelled_op_never_calls_back_and_overload_is_immediate),
        cmocka_unit_test(test_thread_destroy_cancels_pending_ops),
    };
    return cmocka_run_group_tests_name("real memcached", tests, start_memcached, stop_memcached);
}
