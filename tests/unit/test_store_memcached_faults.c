/*
 * The memcached store against fake nodes served from the test's own loop, which answer well,
 * garbage, a truncated reply then close, nothing, late, a close, or probes well and increments
 * with garbage, on command; and against a port nobody listens on. Proves the error codes and
 * their counting, ejection after failure_limit (and not after unrelated failures), keys moving
 * while a node is out, re-admission after retry_interval_ms, and that no deadline fires early.
 */
#define _GNU_SOURCE /* memmem */
#include "store_memcached_fixture.h"
#include "ratelimitd/mc_node.h"

typedef enum {
    FAKE_GOOD = 0,
    FAKE_GARBAGE,
    FAKE_TRUNCATE,
    FAKE_SILENT,
    FAKE_LATE,
    FAKE_CLOSE,
    FAKE_MN_OK,
    FAKE_WRONG_OPAQUE,
    FAKE_NO_OPAQUE,
    FAKE_ZERO,
} fake_mode_t;

#define FAKE_LATE_MS 120

typedef struct st_fake_t {
    h2o_socket_t *listener;
    h2o_socket_t *conn;
    uint16_t port;
    fake_mode_t mode;
    char out[65536];
    size_t out_len;
    bool close_after_write;
    size_t accepted;
    h2o_loop_t *loop;
    h2o_timeout_t late_timeout; /* FAKE_LATE: good answers, FAKE_LATE_MS after the request */
    h2o_timeout_entry_t late_entry;
} fake_t;

static void fake_on_write(h2o_socket_t *sock, const char *err);

static void fake_send_late(h2o_timeout_entry_t *entry)
{
    fake_t *fake = H2O_STRUCT_FROM_MEMBER(fake_t, late_entry, entry);
    if (fake->conn == NULL)
        return;
    h2o_iovec_t buf = h2o_iovec_init(fake->out, fake->out_len);
    h2o_socket_write(fake->conn, &buf, 1, fake_on_write);
}

static void fake_on_write(h2o_socket_t *sock, const char *err)
{
    fake_t *fake = sock->data;
    (void)err;
    if (fake->close_after_write) {
        h2o_socket_close(sock);
        fake->conn = NULL;
    }
}

/* Answers every complete command line the way memcached would: VA 1 for `ma`, MN for `mn`;
 * FAKE_MN_OK answers `ma` with garbage, and FAKE_WRONG_OPAQUE, FAKE_NO_OPAQUE and FAKE_ZERO with
 * a well-formed VA that is still not an answer to it (another request's, or a count of 0). */
static size_t fake_answer(fake_t *fake, h2o_buffer_t *in, size_t *consumed)
{
    size_t at = 0, len = 0;
    while (at < in->size) {
        char *eol = memchr(in->bytes + at, '\n', in->size - at);
        if (eol == NULL)
            break;
        size_t line_len = (size_t)(eol - (in->bytes + at)) + 1;
        const char *line = in->bytes + at;
        if (line_len >= 4 && memcmp(line, "mn\r\n", 4) == 0) {
            len += (size_t)snprintf(fake->out + len, sizeof(fake->out) - len, "MN\r\n");
        } else if (fake->mode == FAKE_MN_OK) {
            len += (size_t)snprintf(fake->out + len, sizeof(fake->out) - len, "garbage\r\n");
        } else {
            const char *o = memmem(line, line_len, " O", 2);
            assert_non_null(o);
            unsigned long opaque = strtoul(o + 2, NULL, 10);
            char *out = fake->out + len;
            size_t cap = sizeof(fake->out) - len;
            if (fake->mode == FAKE_WRONG_OPAQUE)
                len += (size_t)snprintf(out, cap, "VA 1 O%lu\r\n1\r\n", opaque + 1);
            else if (fake->mode == FAKE_NO_OPAQUE)
                len += (size_t)snprintf(out, cap, "VA 1\r\n1\r\n");
            else if (fake->mode == FAKE_ZERO)
                len += (size_t)snprintf(out, cap, "VA 1 O%lu\r\n0\r\n", opaque);
            else
                len += (size_t)snprintf(out, cap, "VA 1 O%lu\r\n1\r\n", opaque);
        }
        at += line_len;
    }
    *consumed = at;
    return len;
}

static void fake_close(fake_t *fake, h2o_socket_t *sock)
{
    h2o_socket_close(sock);
    if (fake->conn == sock)
        fake->conn = NULL;
}

/* Closes the client's connection, as a node restarting or a proxy timing it out would. */
static void fake_drop(fake_t *fake)
{
    if (fake->conn != NULL)
        fake_close(fake, fake->conn);
}

static void fake_on_read(h2o_socket_t *sock, const char *err)
{
    fake_t *fake = sock->data;
    if (err != NULL) {
        fake_close(fake, sock);
        return;
    }
    if (h2o_socket_is_writing(sock)) {
        h2o_buffer_consume(&sock->input, sock->input->size);
        return;
    }
    size_t len = 0, consumed = sock->input->size;
    switch (fake->mode) {
    case FAKE_GOOD:
    case FAKE_MN_OK:
    case FAKE_WRONG_OPAQUE:
    case FAKE_NO_OPAQUE:
    case FAKE_ZERO:
        len = fake_answer(fake, sock->input, &consumed);
        break;
    case FAKE_CLOSE:
        fake_close(fake, sock);
        return;
    case FAKE_GARBAGE:
        len = (size_t)snprintf(fake->out, sizeof(fake->out), "garbage\r\n");
        break;
    case FAKE_TRUNCATE:
        len = (size_t)snprintf(fake->out, sizeof(fake->out), "VA 1 O");
        fake->close_after_write = true;
        break;
    case FAKE_SILENT:
        break;
    case FAKE_LATE:
        /* one answer in flight at a time is all the tests need (idle probes) */
        if (!h2o_timeout_is_linked(&fake->late_entry)) {
            fake->out_len = fake_answer(fake, sock->input, &consumed);
            h2o_timeout_link(fake->loop, &fake->late_timeout, &fake->late_entry);
        }
        break;
    }
    h2o_buffer_consume(&sock->input, consumed);
    if (len != 0) {
        h2o_iovec_t buf = h2o_iovec_init(fake->out, len);
        h2o_socket_write(sock, &buf, 1, fake_on_write);
    }
}

static void fake_on_accept(h2o_socket_t *listener, const char *err)
{
    fake_t *fake = listener->data;
    h2o_socket_t *sock;
    if (err != NULL)
        return;
    while ((sock = h2o_evloop_socket_accept(listener)) != NULL) {
        if (fake->conn != NULL) /* one client connection per fake: drop the stale one */
            h2o_socket_close(fake->conn);
        fake->conn = sock;
        fake->close_after_write = false;
        ++fake->accepted;
        sock->data = fake;
        h2o_socket_read_start(sock, fake_on_read);
    }
}

static void fake_start(fake_t *fake, h2o_loop_t *loop)
{
    memset(fake, 0, sizeof(*fake));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    fake->port = ntohs(sin.sin_port);
    fake->loop = loop;
    h2o_timeout_init(loop, &fake->late_timeout, FAKE_LATE_MS);
    fake->late_entry.cb = fake_send_late;
    fake->listener = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    fake->listener->data = fake;
    h2o_socket_read_start(fake->listener, fake_on_accept);
}

static void fake_stop(fake_t *fake)
{
    if (fake->conn != NULL)
        h2o_socket_close(fake->conn);
    if (fake->listener != NULL)
        h2o_socket_close(fake->listener);
    fake->conn = fake->listener = NULL;
    h2o_timeout_unlink(&fake->late_entry);
    h2o_timeout_dispose(fake->loop, &fake->late_timeout);
}

typedef struct st_node_cond_t {
    fixture_t *f;
    size_t node;
    bool ejected;
} node_cond_t;

static bool node_ejected_is(void *arg)
{
    node_cond_t *c = arg;
    return stats_of(c->f, c->node).ejected == c->ejected;
}

static bool node_connected(void *arg)
{
    node_cond_t *c = arg;
    return stats_of(c->f, c->node).connected;
}

/* A store over one fake node that answers well until the test changes its mode. */
static void start_on_fake(fixture_t *f, fake_t *fake)
{
    fixture_new(f);
    fake_start(fake, f->loop);
    fixture_nodes(f, &fake->port, 1);
}

/* The failure policy a test runs with; a field left 0 keeps the fixture's default. */
typedef struct st_policy_t {
    uint32_t timeout_ms;
    uint32_t failure_limit;
    uint32_t retry_interval_ms;
} policy_t;

/* Starts the store on a fake node under `policy` and waits until the fake answered the probe. */
static void start_ready_on_fake(fixture_t *f, fake_t *fake, policy_t policy)
{
    start_on_fake(f, fake);
    if (policy.timeout_ms != 0)
        f->config.backend.timeout_ms = policy.timeout_ms;
    if (policy.failure_limit != 0)
        f->config.backend.failure_limit = policy.failure_limit;
    if (policy.retry_interval_ms != 0)
        f->config.backend.retry_interval_ms = policy.retry_interval_ms;
    fixture_start(f, NULL);
    assert_true(run_until(f->loop, store_ready, f->thread, 3000));
}

static void test_garbage_reply_is_a_protocol_error_and_drops_the_connection(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){0});
    uint64_t value;
    assert_int_equal(incr_wait(&f, "rl:g:1", &value), RL_OK);
    assert_int_equal(value, 1);

    fake.mode = FAKE_GARBAGE;
    assert_int_equal(incr_wait(&f, "rl:g:1", NULL), RL_ERR_BACKEND_PROTOCOL);
    rl_mc_node_stats_t stats = stats_of(&f, 0);
    assert_false(stats.healthy);
    assert_int_equal(stats.consecutive_failures, 1);
    assert_false(stats.ejected);
    assert_false(store_is_ready(f.thread));

    /* it reconnects after the first backoff step and answers the probe; only a good increment
     * ends the failure streak (a node that answers `mn` but garbles `ma` must not look healthy) */
    fake.mode = FAKE_GOOD;
    assert_true(run_until(f.loop, store_ready, f.thread, 3000));
    assert_int_equal(stats_of(&f, 0).consecutive_failures, 1);
    assert_int_equal(incr_wait(&f, "rl:g:2", &value), RL_OK);
    assert_int_equal(stats_of(&f, 0).consecutive_failures, 0);
    assert_int_equal(fake.accepted, 2);
    fake_stop(&fake);
    fixture_dispose(&f);
}

/*
 * A reply that parses but does not answer the head of the FIFO. Another request's opaque (or none)
 * means the node and the client disagree on which reply is whose: every later reply would be
 * credited to the wrong request. A count of 0 cannot follow `ma ... J1`; taking it would admit a
 * request that was never counted, with the whole quota still ahead of it. Either way the reply is
 * not delivered, and the connection goes, as for garbage.
 */
static void expect_unanswering_reply_is_a_protocol_error(fake_mode_t mode)
{
    fixture_t f;
    fake_t fake;
    start_on_fake(&f, &fake);
    rl_metrics_t *metrics = fixture_start_with_metrics(&f);
    assert_true(run_until(f.loop, store_ready, f.thread, 3000));

    fake.mode = mode;
    result_t r = {.value = UINT64_MAX}; /* so a callback passing the reply's value shows */
    incr(&f, "rl:o:1", &r);
    assert_true(run_until(f.loop, result_done, &r, 3000));
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, RL_ERR_BACKEND_PROTOCOL);
    assert_int_equal(r.value, 0);
    rl_mc_node_stats_t stats = stats_of(&f, 0);
    assert_false(stats.connected);
    assert_false(stats.healthy);
    assert_int_equal(stats.consecutive_failures, 1);
    assert_int_equal(stats.failures, 1);
    assert_int_equal(stats.replies, 0);
    assert_false(stats.ejected);
    assert_int_equal(node_metric(metrics, "ratelimitd_backend_errors_total", f.names[0], "protocol"), 1);

    fake.mode = FAKE_GOOD;
    assert_true(run_until(f.loop, store_ready, f.thread, 3000));
    assert_int_equal(fake.accepted, 2);
    uint64_t value;
    assert_int_equal(incr_wait(&f, "rl:o:1", &value), RL_OK);
    assert_int_equal(value, 1);
    assert_int_equal(stats_of(&f, 0).consecutive_failures, 0);
    fake_stop(&fake);
    fixture_dispose(&f);
    rl_metrics_destroy(metrics);
}

static void test_a_reply_with_another_requests_opaque_is_a_protocol_error(void **state)
{
    (void)state;
    expect_unanswering_reply_is_a_protocol_error(FAKE_WRONG_OPAQUE);
}

static void test_a_reply_without_an_opaque_is_a_protocol_error(void **state)
{
    (void)state;
    expect_unanswering_reply_is_a_protocol_error(FAKE_NO_OPAQUE);
}

static void test_a_count_of_zero_is_a_protocol_error(void **state)
{
    (void)state;
    expect_unanswering_reply_is_a_protocol_error(FAKE_ZERO);
}

/* The reply the node started is what failed (README: `protocol` is a "garbage or truncated
 * reply"); the requests queued behind it fail because the connection is gone. */
static void test_truncated_reply_then_close_is_a_protocol_error(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){0});
    fake.mode = FAKE_TRUNCATE;
    result_t r[3] = {{0}};
    for (size_t i = 0; i != 3; ++i)
        incr(&f, "rl:t:1", &r[i]);
    assert_true(run_until(f.loop, result_done, &r[2], 3000));
    int want[3] = {RL_ERR_BACKEND_PROTOCOL, RL_ERR_BACKEND_DOWN, RL_ERR_BACKEND_DOWN};
    for (size_t i = 0; i != 3; ++i) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, want[i]);
    }
    assert_int_equal(stats_of(&f, 0).pending, 0);
    fake_stop(&fake);
    fixture_dispose(&f);
}

static void test_silent_node_times_out_and_is_not_ready(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){.timeout_ms = 50});
    fake.mode = FAKE_SILENT;
    uint64_t started = now_ms();
    assert_int_equal(incr_wait(&f, "rl:s:1", NULL), RL_ERR_BACKEND_TIMEOUT);
    uint64_t elapsed = now_ms() - started;
    assert_true(elapsed >= 45 && elapsed < 1000);
    assert_false(store_is_ready(f.thread));
    /* the abandoned op keeps its place until its reply or the connection goes */
    assert_int_equal(stats_of(&f, 0).pending, 1);
    fake_stop(&fake);
    fixture_dispose(&f);
}

/* A stall is one failure per timeout_ms, however many requests were waiting behind it. */
static void test_a_short_stall_is_one_failure_and_a_long_one_ejects(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){.timeout_ms = 50, .failure_limit = 3, .retry_interval_ms = 60000});
    fake.mode = FAKE_SILENT;
    result_t r[20] = {{0}};
    incr_all_expect(&f, "rl:stall:1", r, 20, RL_ERR_BACKEND_TIMEOUT);
    rl_mc_node_stats_t stats = stats_of(&f, 0);
    assert_int_equal(stats.consecutive_failures, 1);
    assert_false(stats.ejected);

    /* still silent while requests keep coming: ejected once failure_limit deadlines have passed */
    uint64_t started = now_ms();
    result_t more[40] = {{0}};
    node_cond_t ejected = {&f, 0, true};
    for (size_t i = 0; i != 40 && !node_ejected_is(&ejected); ++i) {
        incr(&f, "rl:stall:2", &more[i]);
        run_for(f.loop, 10);
    }
    assert_true(node_ejected_is(&ejected));
    assert_true(now_ms() - started >= 2 * 50 - 10);
    assert_int_equal(stats_of(&f, 0).ejections, 1);
    fake_stop(&fake);
    fixture_dispose(&f);
}

static void test_idle_probe_detects_a_stalled_node_without_traffic(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){.timeout_ms = 50});
    uint64_t probes = stats_of(&f, 0).probes;
    fake.mode = FAKE_SILENT;
    run_for(f.loop, 1800);
    assert_true(stats_of(&f, 0).probes > probes);
    assert_false(store_is_ready(f.thread));
    fake_stop(&fake);
    fixture_dispose(&f);
}

/* A node whose every answer comes after timeout_ms fails every decision. Each late reply was a
 * failure already, so it must not end the streak: the node is ejected after failure_limit
 * deadlines instead of staying in the ring for ever (timeout, late reply, timeout, ...). */
static void test_a_node_that_always_answers_late_is_ejected(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){.timeout_ms = 50, .failure_limit = 3, .retry_interval_ms = 60000});
    fake.mode = FAKE_LATE;
    node_cond_t ejected = {&f, 0, true};
    size_t timed_out = 0;
    for (size_t i = 0; i != 10 && !node_ejected_is(&ejected); ++i) {
        assert_int_equal(incr_wait(&f, "rl:late:1", NULL), RL_ERR_BACKEND_TIMEOUT);
        ++timed_out;
        run_for(f.loop, FAKE_LATE_MS); /* its reply arrives, late */
    }
    assert_true(node_ejected_is(&ejected));
    assert_int_equal(timed_out, 3);
    assert_int_equal(stats_of(&f, 0).ejections, 1);
    assert_false(store_is_ready(f.thread));
    fake_stop(&fake);
    fixture_dispose(&f);
}

/* Late answers each count a failure, but an answer in time between them ends the streak: isolated
 * slow answers never add up to an ejection. */
static void test_late_answers_between_answers_in_time_do_not_add_up(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){.timeout_ms = 50, .failure_limit = 2});
    rl_mc_node_stats_t before = stats_of(&f, 0);
    for (size_t i = 0; i != 3; ++i) {
        fake.mode = FAKE_LATE;
        assert_int_equal(incr_wait(&f, "rl:late:2", NULL), RL_ERR_BACKEND_TIMEOUT);
        run_for(f.loop, FAKE_LATE_MS);
        assert_int_equal(stats_of(&f, 0).consecutive_failures, 1);
        fake.mode = FAKE_GOOD;
        assert_int_equal(incr_wait(&f, "rl:late:2", NULL), RL_OK);
        assert_int_equal(stats_of(&f, 0).consecutive_failures, 0);
    }
    rl_mc_node_stats_t after = stats_of(&f, 0);
    assert_int_equal(after.failures, before.failures + 3);
    assert_int_equal(after.ejections, 0);
    assert_true(store_is_ready(f.thread));
    fake_stop(&fake);
    fixture_dispose(&f);
}

static void test_unreachable_node_is_ejected_and_fails_synchronously(void **state)
{
    (void)state;
    fixture_t f;
    uint16_t port = free_port(); /* nothing listens there */
    fixture_init(&f, &port, 1);
    f.config.backend.failure_limit = 2;
    f.config.backend.retry_interval_ms = 60000;
    fixture_start(&f, NULL);
    node_cond_t cond = {&f, 0, true};
    assert_true(run_until(f.loop, node_ejected_is, &cond, 3000));
    assert_int_equal(stats_of(&f, 0).ejections, 1);
    assert_false(store_is_ready(f.thread));
    assert_int_equal(rl_store_memcached_node_of(f.thread, "rl:u:1", 6), -1);
    result_t r = {0};
    assert_null(incr(&f, "rl:u:1", &r));
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, RL_ERR_BACKEND_DOWN);
    fixture_dispose(&f);
}

static void test_ejection_moves_only_its_keys_and_readmission_brings_them_back(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fakes[2];
    fixture_new(&f);
    fake_start(&fakes[0], f.loop);
    fake_start(&fakes[1], f.loop);
    uint16_t ports[2] = {fakes[0].port, fakes[1].port};
    fixture_nodes(&f, ports, 2);
    f.config.backend.timeout_ms = 50;
    f.config.backend.failure_limit = 2;
    f.config.backend.retry_interval_ms = 300;
    fixture_start(&f, NULL);
    node_cond_t connected[2] = {{&f, 0, false}, {&f, 1, false}};
    assert_true(run_until(f.loop, node_connected, &connected[0], 3000));
    assert_true(run_until(f.loop, node_connected, &connected[1], 3000));

    /* one key on node 0, and the keys that live on node 1 */
    char key0[32] = "", keys1[64][32];
    size_t num_keys1 = 0;
    for (int i = 0; i != 1000; ++i) {
        char key[32];
        snprintf(key, sizeof(key), "rl:k%d:1795412345", i);
        int node = rl_store_memcached_node_of(f.thread, key, strlen(key));
        if (node == 0 && key0[0] == '\0')
            strcpy(key0, key);
        else if (node == 1 && num_keys1 != 64)
            strcpy(keys1[num_keys1++], key);
    }
    assert_true(key0[0] != '\0' && num_keys1 == 64);
    assert_int_equal(incr_wait(&f, key0, NULL), RL_OK);

    fakes[0].mode = FAKE_SILENT;
    assert_int_equal(incr_wait(&f, key0, NULL), RL_ERR_BACKEND_TIMEOUT);
    assert_false(stats_of(&f, 0).ejected);
    assert_int_equal(incr_wait(&f, key0, NULL), RL_ERR_BACKEND_TIMEOUT);
    uint64_t ejected_at = now_ms();
    rl_mc_node_stats_t stats = stats_of(&f, 0);
    assert_true(stats.ejected);
    assert_int_equal(stats.ejections, 1);
    assert_false(stats.connected);

    /* its key moved to the other node and is served there; node 1's keys did not move */
    assert_int_equal(rl_store_memcached_node_of(f.thread, key0, strlen(key0)), 1);
    uint64_t value;
    assert_int_equal(incr_wait(&f, key0, &value), RL_OK);
    for (size_t i = 0; i != num_keys1; ++i)
        assert_int_equal(rl_store_memcached_node_of(f.thread, keys1[i], strlen(keys1[i])), 1);
    assert_true(store_is_ready(f.thread));

    /* after retry_interval_ms it reconnects, answers the probe and takes its keys back */
    fakes[0].mode = FAKE_GOOD;
    node_cond_t readmitted = {&f, 0, false};
    assert_true(run_until(f.loop, node_ejected_is, &readmitted, 3000));
    assert_true(now_ms() - ejected_at >= 290);
    assert_int_equal(rl_store_memcached_node_of(f.thread, key0, strlen(key0)), 0);
    assert_int_equal(incr_wait(&f, key0, NULL), RL_OK);
    assert_int_equal(stats_of(&f, 0).consecutive_failures, 0);
    fake_stop(&fakes[0]);
    fake_stop(&fakes[1]);
    fixture_dispose(&f);
}

typedef struct st_failures_cond_t {
    fixture_t *f;
    uint64_t failures;
} failures_cond_t;

static bool failures_reached(void *arg)
{
    failures_cond_t *c = arg;
    return stats_of(c->f, 0).failures >= c->failures;
}

static bool streak_over(void *arg)
{
    rl_mc_node_stats_t stats = stats_of(arg, 0);
    return stats.connected && stats.consecutive_failures == 0;
}

/* Closes hours apart on a connection that carries no increments (an idle thread, a node few keys
 * hash to) are unrelated: once a reconnected connection has stayed up for retry_interval_ms, a
 * probe answered on it ends the streak, so they never add up to an ejection. */
static void test_closes_far_apart_do_not_add_up_to_an_ejection(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){.failure_limit = 3, .retry_interval_ms = 200});
    for (uint64_t i = 1; i <= 3; ++i) {
        fake_drop(&fake);
        failures_cond_t dropped = {&f, i};
        assert_true(run_until(f.loop, failures_reached, &dropped, 3000));
        /* reconnected at once; the next idle probe (RL_MC_PROBE_IDLE_MS later) ends the streak */
        assert_true(run_until(f.loop, streak_over, &f, 3000));
    }
    rl_mc_node_stats_t stats = stats_of(&f, 0);
    assert_int_equal(stats.failures, 3);
    assert_int_equal(stats.ejections, 0);
    assert_false(stats.ejected);
    assert_int_equal(fake.accepted, 4);
    fake_stop(&fake);
    fixture_dispose(&f);
}

/* Why a probe answered right after a reconnect must not end a streak of dropped connections: a
 * node that answers `mn` but garbles `ma` would never reach failure_limit, or, re-admitted, would
 * stay in the ring through failure_limit more bad increments. */
static void test_a_node_that_answers_probes_but_garbles_increments_is_ejected_again_at_once(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){.failure_limit = 2, .retry_interval_ms = 300});
    fake.mode = FAKE_MN_OK;
    for (int i = 0; i != 2; ++i) {
        assert_true(run_until(f.loop, store_ready, f.thread, 3000)); /* reconnected, probe answered */
        assert_int_equal(incr_wait(&f, "rl:mn:1", NULL), RL_ERR_BACKEND_PROTOCOL);
    }
    rl_mc_node_stats_t stats = stats_of(&f, 0);
    assert_true(stats.ejected);
    assert_int_equal(stats.ejections, 1);

    node_cond_t readmitted = {&f, 0, false};
    assert_true(run_until(f.loop, node_ejected_is, &readmitted, 3000));
    assert_int_equal(stats_of(&f, 0).consecutive_failures, 2);
    assert_int_equal(incr_wait(&f, "rl:mn:1", NULL), RL_ERR_BACKEND_PROTOCOL);
    stats = stats_of(&f, 0);
    assert_true(stats.ejected);
    assert_int_equal(stats.ejections, 2);
    fake_stop(&fake);
    fixture_dispose(&f);
}

/* No increment waits, only the probe sent on connect: the close is still an error of the node
 * (README: `unreachable` counts "also while no request waits"), once per failure. */
static void test_a_close_while_only_the_probe_waits_counts_as_unreachable(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_on_fake(&f, &fake);
    fake.mode = FAKE_CLOSE;
    rl_metrics_t *metrics = fixture_start_with_metrics(&f);
    run_for(f.loop, 1500);
    rl_mc_node_stats_t stats = stats_of(&f, 0);
    assert_true(fake.accepted >= 1);
    assert_true(stats.failures >= 1);
    assert_int_equal(node_metric(metrics, "ratelimitd_backend_errors_total", f.names[0], "unreachable"),
                     stats.failures);
    fake_stop(&fake);
    fixture_dispose(&f);
    rl_metrics_destroy(metrics);
}

typedef struct st_timed_t {
    result_t result;
    uint64_t issued_usec;
    uint64_t done_usec;
} timed_t;

static uint64_t now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void on_timed(void *cbdata, int status, uint64_t value)
{
    timed_t *t = cbdata;
    t->done_usec = now_usec();
    on_result(&t->result, status, value);
}

static void incr_timed(fixture_t *f, const char *key, timed_t *t)
{
    rl_counter_key_t counter = {
        .window = 1795412345, .mckey = key, .mckey_len = strlen(key), .placement_len = strlen(key)};
    rl_store_op_t *op;
    t->issued_usec = now_usec();
    store_incr(f->thread, &counter, on_timed, t, &op);
}

#define TIMED_OPS 10

static bool all_timed_done(void *arg)
{
    timed_t *t = arg;
    for (size_t i = 0; i != TIMED_OPS; ++i)
        if (t[i].result.calls == 0)
            return false;
    return true;
}

/* h2o stamps a deadline with the loop's cached time, whole ms taken when the turn started: ops
 * issued later in the turn (here 300 us apart, as a turn serving many requests does) must still
 * wait their whole timeout_ms before they fail. */
static void test_no_increment_times_out_before_timeout_ms(void **state)
{
    (void)state;
    enum { TIMEOUT_MS = 2 };
    fixture_t f;
    fake_t fake;
    start_ready_on_fake(&f, &fake, (policy_t){.timeout_ms = TIMEOUT_MS, .failure_limit = 1000});
    fake.mode = FAKE_SILENT;
    for (int round = 0; round != 3; ++round) {
        timed_t t[TIMED_OPS];
        memset(t, 0, sizeof(t));
        h2o_evloop_run(f.loop, 0); /* a fresh turn: the loop's cached time is now */
        for (size_t i = 0; i != TIMED_OPS; ++i) {
            incr_timed(&f, "rl:early:1", &t[i]);
            for (uint64_t until = now_usec() + 300; now_usec() < until;)
                ;
        }
        assert_true(run_until(f.loop, all_timed_done, t, 3000));
        for (size_t i = 0; i != TIMED_OPS; ++i) {
            assert_int_equal(t[i].result.calls, 1);
            assert_int_equal(t[i].result.status, RL_ERR_BACKEND_TIMEOUT);
            if (t[i].done_usec - t[i].issued_usec < TIMEOUT_MS * 1000)
                fail_msg("round %d, op %zu timed out after %llu us (timeout_ms %d)", round, i,
                         (unsigned long long)(t[i].done_usec - t[i].issued_usec), TIMEOUT_MS);
        }
    }
    assert_false(stats_of(&f, 0).ejected);
    fake_stop(&fake);
    fixture_dispose(&f);
}

/* A listener whose accept queue (backlog 0: one connection) is full: Linux drops the SYN of any
 * further connect, which stays in progress until the kernel retries a second later. */
static int full_listener(uint16_t *port, int *filler)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 0), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    *filler = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*filler, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

/* README, Clock skew: after a step forward no request fails before timeout_ms. h2o 2.2.5 stamps a
 * deadline with the wall clock, so a step of 10 s makes every deadline armed before it due at
 * once; moving the connect deadline's stamp 10 s back is the same to the loop. */
static void test_a_clock_step_forward_does_not_cut_a_connect_short(void **state)
{
    (void)state;
    enum { TIMEOUT_MS = 50 };
    uint16_t port;
    int filler, listener = full_listener(&port, &filler);
    fixture_t f;
    fixture_init(&f, &port, 1);
    f.config.backend.timeout_ms = TIMEOUT_MS;
    f.config.backend.failure_limit = 1000;
    fixture_start(&f, NULL);
    rl_mc_node_t *node = &((rl_mc_thread_t *)f.thread)->nodes[0];
    assert_int_equal(node->state, RL_MC_NODE_CONNECTING);
    node->connect_entry.registered_at -= 10000;
    timed_t t = {0};
    incr_timed(&f, "rl:step:1", &t);
    assert_true(run_until(f.loop, result_done, &t.result, 3000));
    assert_int_equal(t.result.status, RL_ERR_BACKEND_TIMEOUT);
    if (t.done_usec - t.issued_usec < TIMEOUT_MS * 1000)
        fail_msg("failed after %llu us (timeout_ms %d)", (unsigned long long)(t.done_usec - t.issued_usec), TIMEOUT_MS);
    /* the connect itself keeps its 1 s */
    assert_int_equal(node->state, RL_MC_NODE_CONNECTING);
    fixture_dispose(&f);
    close(filler);
    close(listener);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_clock_step_forward_does_not_cut_a_connect_short),
        cmocka_unit_test(test_garbage_reply_is_a_protocol_error_and_drops_the_connection),
        cmocka_unit_test(test_a_reply_with_another_requests_opaque_is_a_protocol_error),
        cmocka_unit_test(test_a_reply_without_an_opaque_is_a_protocol_error),
        cmocka_unit_test(test_a_count_of_zero_is_a_protocol_error),
        cmocka_unit_test(test_truncated_reply_then_close_is_a_protocol_error),
        cmocka_unit_test(test_silent_node_times_out_and_is_not_ready),
        cmocka_unit_test(test_a_short_stall_is_one_failure_and_a_long_one_ejects),
        cmocka_unit_test(test_idle_probe_detects_a_stalled_node_without_traffic),
        cmocka_unit_test(test_a_node_that_always_answers_late_is_ejected),
        cmocka_unit_test(test_late_answers_between_answers_in_time_do_not_add_up),
        cmocka_unit_test(test_unreachable_node_is_ejected_and_fails_synchronously),
        cmocka_unit_test(test_ejection_moves_only_its_keys_and_readmission_brings_them_back),
        cmocka_unit_test(test_closes_far_apart_do_not_add_up_to_an_ejection),
        cmocka_unit_test(test_a_node_that_answers_probes_but_garbles_increments_is_ejected_again_at_once),
        cmocka_unit_test(test_a_close_while_only_the_probe_waits_counts_as_unreachable),
        cmocka_unit_test(test_no_increment_times_out_before_timeout_ms),
    };
    return cmocka_run_group_tests_name("fake nodes", tests, NULL, NULL);
}
