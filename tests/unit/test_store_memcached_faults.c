/*
 * The memcached store against fake nodes served from the test's own loop, which answer well,
 * garbage, a truncated reply then close, or nothing, on command; and against a port nobody
 * listens on. Proves the error codes, ejection after failure_limit, keys moving while a node is
 * out, and re-admission after retry_interval_ms.
 */
#define _GNU_SOURCE /* memmem */
#include "store_memcached_fixture.h"

typedef enum { FAKE_GOOD = 0, FAKE_GARBAGE, FAKE_TRUNCATE, FAKE_SILENT, FAKE_LATE } fake_mode_t;

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

/* Answers every complete command line the way memcached would: VA 1 for `ma`, MN for `mn`. */
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
        } else {
            const char *o = memmem(line, line_len, " O", 2);
            assert_non_null(o);
            unsigned long opaque = strtoul(o + 2, NULL, 10);
            len += (size_t)snprintf(fake->out + len, sizeof(fake->out) - len, "VA 1 O%lu\r\n1\r\n", opaque);
        }
        at += line_len;
    }
    *consumed = at;
    return len;
}

static void fake_on_read(h2o_socket_t *sock, const char *err)
{
    fake_t *fake = sock->data;
    if (err != NULL) {
        h2o_socket_close(sock);
        if (fake->conn == sock)
            fake->conn = NULL;
        return;
    }
    if (h2o_socket_is_writing(sock)) {
        h2o_buffer_consume(&sock->input, sock->input->size);
        return;
    }
    size_t len = 0, consumed = sock->input->size;
    switch (fake->mode) {
    case FAKE_GOOD:
        len = fake_answer(fake, sock->input, &consumed);
        break;
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

/* After any config tweaks: starts the store and waits until the fake answered the probe. */
static void start_and_wait_ready(fixture_t *f)
{
    fixture_start(f, NULL);
    assert_true(run_until(f->loop, store_ready, f->thread, 3000));
}

static void test_garbage_reply_is_a_protocol_error_and_drops_the_connection(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_on_fake(&f, &fake);
    start_and_wait_ready(&f);
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

static void test_truncated_reply_then_close_is_backend_down(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_on_fake(&f, &fake);
    start_and_wait_ready(&f);
    fake.mode = FAKE_TRUNCATE;
    result_t r[3] = {{0}};
    incr_all_expect(&f, "rl:t:1", r, 3, RL_ERR_BACKEND_DOWN);
    assert_int_equal(stats_of(&f, 0).pending, 0);
    fake_stop(&fake);
    fixture_dispose(&f);
}

static void test_silent_node_times_out_and_is_not_ready(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_on_fake(&f, &fake);
    f.config.backend.timeout_ms = 50;
    start_and_wait_ready(&f);
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
    start_on_fake(&f, &fake);
    f.config.backend.timeout_ms = 50;
    f.config.backend.failure_limit = 3;
    f.config.backend.retry_interval_ms = 60000;
    start_and_wait_ready(&f);
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
    start_on_fake(&f, &fake);
    f.config.backend.timeout_ms = 50;
    start_and_wait_ready(&f);
    uint64_t probes = stats_of(&f, 0).probes;
    fake.mode = FAKE_SILENT;
    run_for(f.loop, 1800);
    assert_true(stats_of(&f, 0).probes > probes);
    assert_false(store_is_ready(f.thread));
    fake_stop(&fake);
    fixture_dispose(&f);
}

/* Idle probes answered late (over timeout_ms) each count a failure, but the late answer proves
 * the node answers and ends the streak: isolated late probes never add up to an ejection. */
static void test_late_idle_probes_do_not_add_up_to_an_ejection(void **state)
{
    (void)state;
    fixture_t f;
    fake_t fake;
    start_on_fake(&f, &fake);
    f.config.backend.timeout_ms = 50;
    f.config.backend.failure_limit = 2;
    start_and_wait_ready(&f);
    rl_mc_node_stats_t before = stats_of(&f, 0);
    fake.mode = FAKE_LATE;
    uint64_t started = now_ms();
    while (stats_of(&f, 0).failures < before.failures + 3 && now_ms() - started < 8000)
        run_for(f.loop, 50);
    run_for(f.loop, FAKE_LATE_MS);
    rl_mc_node_stats_t after = stats_of(&f, 0);
    assert_true(after.failures >= before.failures + 3); /* three probes timed out ... */
    assert_int_equal(after.ejections, 0);               /* ... yet none followed another */
    assert_false(after.ejected);
    assert_int_equal(after.consecutive_failures, 0);
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

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_garbage_reply_is_a_protocol_error_and_drops_the_connection),
        cmocka_unit_test(test_truncated_reply_then_close_is_backend_down),
        cmocka_unit_test(test_silent_node_times_out_and_is_not_ready),
        cmocka_unit_test(test_a_short_stall_is_one_failure_and_a_long_one_ejects),
        cmocka_unit_test(test_idle_probe_detects_a_stalled_node_without_traffic),
        cmocka_unit_test(test_late_idle_probes_do_not_add_up_to_an_ejection),
        cmocka_unit_test(test_unreachable_node_is_ejected_and_fails_synchronously),
        cmocka_unit_test(test_ejection_moves_only_its_keys_and_readmission_brings_them_back),
    };
    return cmocka_run_group_tests_name("fake nodes", tests, NULL, NULL);
}
