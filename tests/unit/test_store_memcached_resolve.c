/*
 * Re-resolution on reconnect is for host names only: nodes given as IP literals (IPv4, and IPv6
 * whether or not this machine has it) fail, back off, get ejected and retry exactly as before,
 * and never start a lookup. Host names are covered by tests/integration/test_dns_reresolve.py,
 * which can move a name with its getaddrinfo() shim: a store with a name owns an h2o 2.2.5
 * multithread queue, whose memory h2o never frees, which valgrind would report here.
 */
#include "store_memcached_fixture.h"

typedef struct st_failures_cond_t {
    fixture_t *f;
    uint64_t failures; /* per node */
} failures_cond_t;

static bool every_node_failed(void *arg)
{
    failures_cond_t *c = arg;
    for (size_t i = 0; i != c->f->config.backend.num_servers; ++i)
        if (stats_of(c->f, i).failures < c->failures)
            return false;
    return true;
}

static void test_ip_literals_reconnect_without_a_lookup(void **state)
{
    (void)state;
    fixture_t f;
    uint16_t port = free_port(); /* nothing listens there */
    fixture_init(&f, &port, 1);
    snprintf(f.names[1], sizeof(f.names[1]), "[::1]:%u", port);
    f.nodes[1] = (rl_node_config_t){.host = "::1", .port = port, .weight = 1, .name = f.names[1]};
    f.config.backend.num_servers = 2;
    f.config.backend.failure_limit = 2;
    f.config.backend.retry_interval_ms = 20;
    fixture_start(&f, NULL);
    /* past the backoff, the ejection and two retries after it */
    failures_cond_t cond = {&f, 4};
    assert_true(run_until(f.loop, every_node_failed, &cond, 3000));
    for (size_t i = 0; i != 2; ++i) {
        rl_mc_node_stats_t stats = stats_of(&f, i);
        assert_true(stats.ejections >= 1);
        assert_int_equal(stats.lookups, 0);
        assert_int_equal(stats.address_changes, 0);
    }
    fixture_dispose(&f);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ip_literals_reconnect_without_a_lookup),
    };
    return cmocka_run_group_tests_name("memcached re-resolution", tests, NULL, NULL);
}
