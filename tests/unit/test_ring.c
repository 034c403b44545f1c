/*
 * Unit tests for the ketama ring (src/ring.c). The reference is a libmemcached client configured
 * the way an operator would (server list parsed from a string, pushed, then behaviours set), asked
 * with memcached_server_by_key — the same lookup a libmemcached set/get uses. No server is
 * contacted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <libmemcached/memcached.h>
#include "ratelimitd/ring.h"

#define NUM_KEYS 100000

static char keys[NUM_KEYS][48];
static size_t key_lens[NUM_KEYS];

/* Keys shaped like ours: prefix, 22 base64url characters, ':' and a window. */
static int setup_keys(void **state)
{
    (void)state;
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i != NUM_KEYS; ++i) {
        char hash[23];
        for (size_t j = 0; j != 22; ++j) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            hash[j] = alphabet[x % 64];
        }
        hash[22] = '\0';
        key_lens[i] = (size_t)snprintf(keys[i], sizeof(keys[i]), "rl:%s:%llu", hash, 1795412345ull + i % 7);
    }
    return 0;
}

static rl_node_config_t node(const char *host, uint16_t port, uint32_t weight, char *name)
{
    return (rl_node_config_t){.host = (char *)host, .port = port, .weight = weight, .name = name};
}

/* An independently configured libmemcached client over `servers` ("host:port[:weight],..."). */
static memcached_st *reference_client(const char *servers, bool weighted)
{
    memcached_st *memc = memcached_create(NULL);
    assert_non_null(memc);
    memcached_server_st *list = memcached_servers_parse(servers);
    assert_non_null(list);
    assert_int_equal(memcached_server_push(memc, list), MEMCACHED_SUCCESS);
    memcached_server_list_free(list);
    assert_int_equal(
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA),
        MEMCACHED_SUCCESS);
    if (weighted)
        assert_int_equal(memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1), MEMCACHED_SUCCESS);
    return memc;
}

/* "host:port" of the server the reference client stores `key` on. */
static void reference_server(memcached_st *memc, size_t i, char *out, size_t cap)
{
    memcached_return_t rc = MEMCACHED_SUCCESS;
    const memcached_instance_st *server = memcached_server_by_key(memc, keys[i], key_lens[i], &rc);
    assert_non_null(server);
    assert_int_equal(rc, MEMCACHED_SUCCESS);
    snprintf(out, cap, "%s:%u", memcached_server_name(server), (unsigned)memcached_server_port(server));
}

static void assert_ring_matches(const rl_node_config_t *nodes, size_t n, const bool *live, const char *servers,
                                bool weighted)
{
    rl_ring_t *ring = rl_ring_create(nodes, n, live);
    assert_non_null(ring);
    memcached_st *memc = reference_client(servers, weighted);
    size_t per_node[8] = {0};
    for (size_t i = 0; i != NUM_KEYS; ++i) {
        int index = rl_ring_lookup(ring, keys[i], key_lens[i]);
        assert_true(index >= 0 && (size_t)index < n);
        assert_true(live == NULL || live[index]);
        char expected[128];
        reference_server(memc, i, expected, sizeof(expected));
        if (strcmp(expected, nodes[index].name) != 0)
            fail_msg("key %s: ring says %s, libmemcached says %s", keys[i], nodes[index].name, expected);
        ++per_node[index];
    }
    /* every live node owns a share: the test would be vacuous otherwise */
    for (size_t j = 0; j != n; ++j)
        assert_true(live == NULL || live[j] ? per_node[j] > NUM_KEYS / 20 : per_node[j] == 0);
    memcached_free(memc);
    rl_ring_destroy(ring);
}

static void test_equal_weights_match_libmemcached_on_100000_keys(void **state)
{
    (void)state;
    char n0[] = "10.0.0.1:11211", n1[] = "10.0.0.2:11211", n2[] = "memcached-2.cache.svc:11212";
    rl_node_config_t nodes[] = {node("10.0.0.1", 11211, 1, n0), node("10.0.0.2", 11211, 1, n1),
                                node("memcached-2.cache.svc", 11212, 1, n2)};
    assert_ring_matches(nodes, 3, NULL, "10.0.0.1:11211,10.0.0.2:11211,memcached-2.cache.svc:11212", false);
}

static void test_weighted_nodes_match_libmemcached_on_100000_keys(void **state)
{
    (void)state;
    char n0[] = "10.0.0.1:11211", n1[] = "10.0.0.2:11213", n2[] = "10.0.0.3:11214";
    rl_node_config_t nodes[] = {node("10.0.0.1", 11211, 1, n0), node("10.0.0.2", 11213, 2, n1),
                                node("10.0.0.3", 11214, 5, n2)};
    assert_ring_matches(nodes, 3, NULL, "10.0.0.1:11211:1,10.0.0.2:11213:2,10.0.0.3:11214:5", true);
}

static void test_ejected_node_ring_matches_libmemcached_without_it(void **state)
{
    (void)state;
    char n0[] = "10.0.0.1:11211", n1[] = "10.0.0.2:11211", n2[] = "10.0.0.3:11211";
    rl_node_config_t nodes[] = {node("10.0.0.1", 11211, 1, n0), node("10.0.0.2", 11211, 1, n1),
                                node("10.0.0.3", 11211, 1, n2)};
    bool live[] = {true, false, true};
    assert_ring_matches(nodes, 3, live, "10.0.0.1:11211,10.0.0.3:11211", false);
}

static void test_removing_one_of_three_moves_only_its_keys(void **state)
{
    (void)state;
    char n0[] = "10.0.0.1:11211", n1[] = "10.0.0.2:11211", n2[] = "10.0.0.3:11211";
    rl_node_config_t nodes[] = {node("10.0.0.1", 11211, 1, n0), node("10.0.0.2", 11211, 1, n1),
                                node("10.0.0.3", 11211, 1, n2)};
    bool live[] = {true, false, true};
    rl_ring_t *all = rl_ring_create(nodes, 3, NULL);
    rl_ring_t *without = rl_ring_create(nodes, 3, live);
    assert_non_null(all);
    assert_non_null(without);
    assert_int_equal(rl_ring_num_live(all), 3);
    assert_int_equal(rl_ring_num_live(without), 2);
    size_t moved = 0;
    for (size_t i = 0; i != NUM_KEYS; ++i) {
        int before = rl_ring_lookup(all, keys[i], key_lens[i]);
        int after = rl_ring_lookup(without, keys[i], key_lens[i]);
        if (before == 1) {
            assert_true(after == 0 || after == 2);
            ++moved;
        } else {
            assert_int_equal(after, before);
        }
    }
    /* about a third of the keys lived on the removed node */
    assert_true(moved > NUM_KEYS / 4 && moved < NUM_KEYS * 5 / 12);
    rl_ring_destroy(all);
    rl_ring_destroy(without);
}

/* Ejecting the only node whose weight is not 1 keeps the ring weighted, as a libmemcached client
 * that ejects a server keeps its weighted flag: the survivors keep nearly all their keys. */
static void test_ejecting_the_weighted_node_keeps_the_weighted_ring(void **state)
{
    (void)state;
    char n0[] = "10.0.0.1:11211", n1[] = "10.0.0.2:11211", n2[] = "10.0.0.3:11211";
    rl_node_config_t nodes[] = {node("10.0.0.1", 11211, 1, n0), node("10.0.0.2", 11211, 1, n1),
                                node("10.0.0.3", 11211, 2, n2)};
    bool live[] = {true, true, false};
    assert_ring_matches(nodes, 3, live, "10.0.0.1:11211:1,10.0.0.2:11211:1", true);
    rl_ring_t *all = rl_ring_create(nodes, 3, NULL);
    rl_ring_t *without = rl_ring_create(nodes, 3, live);
    assert_non_null(all);
    assert_non_null(without);
    size_t survivors = 0, moved = 0;
    for (size_t i = 0; i != NUM_KEYS; ++i) {
        int before = rl_ring_lookup(all, keys[i], key_lens[i]);
        if (before == 2)
            continue;
        ++survivors;
        moved += rl_ring_lookup(without, keys[i], key_lens[i]) != before;
    }
    printf("ejecting the weight-2 node moved %zu of the survivors' %zu keys\n", moved, survivors);
    /* weighted ketama recomputes each survivor's number of points from its share of the live
     * weight, so a few keys change survivor; the switch to the unweighted hash moved about half */
    assert_true(survivors > NUM_KEYS / 3);
    assert_true(moved < survivors / 10);
    rl_ring_destroy(all);
    rl_ring_destroy(without);
}

static void test_no_live_node_maps_to_minus_one(void **state)
{
    (void)state;
    char n0[] = "10.0.0.1:11211", n1[] = "10.0.0.2:11211";
    rl_node_config_t nodes[] = {node("10.0.0.1", 11211, 1, n0), node("10.0.0.2", 11211, 1, n1)};
    bool live[] = {false, false};
    rl_ring_t *ring = rl_ring_create(nodes, 2, live);
    assert_non_null(ring);
    assert_int_equal(rl_ring_num_live(ring), 0);
    assert_int_equal(rl_ring_lookup(ring, keys[0], key_lens[0]), -1);
    rl_ring_destroy(ring);

    ring = rl_ring_create(nodes, 0, NULL);
    assert_non_null(ring);
    assert_int_equal(rl_ring_lookup(ring, keys[0], key_lens[0]), -1);
    rl_ring_destroy(ring);
    rl_ring_destroy(NULL);
}

static void test_single_live_node_gets_every_key(void **state)
{
    (void)state;
    char n0[] = "10.0.0.1:11211", n1[] = "10.0.0.2:11211";
    rl_node_config_t nodes[] = {node("10.0.0.1", 11211, 1, n0), node("10.0.0.2", 11211, 1, n1)};
    bool live[] = {false, true};
    rl_ring_t *ring = rl_ring_create(nodes, 2, live);
    assert_non_null(ring);
    for (size_t i = 0; i != 1000; ++i)
        assert_int_equal(rl_ring_lookup(ring, keys[i], key_lens[i]), 1);
    rl_ring_destroy(ring);
}

/* libmemcached asserts (aborting the process) above 100 servers: the ring must refuse, not crash. */
static void test_a_ring_holds_at_most_100_nodes(void **state)
{
    (void)state;
    enum { N = RL_CONFIG_MAX_SERVERS + 1 };
    static char names[N][32];
    static rl_node_config_t nodes[N];
    for (size_t i = 0; i != N; ++i) {
        snprintf(names[i], sizeof(names[i]), "10.0.0.1:%zu", i + 1);
        nodes[i] = node("10.0.0.1", (uint16_t)(i + 1), 1, names[i]);
    }
    rl_ring_t *ring = rl_ring_create(nodes, N - 1, NULL);
    assert_non_null(ring);
    int index = rl_ring_lookup(ring, keys[0], key_lens[0]);
    assert_true(index >= 0 && index < N - 1);
    rl_ring_destroy(ring);
    assert_null(rl_ring_create(nodes, N, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_weights_match_libmemcached_on_100000_keys),
        cmocka_unit_test(test_weighted_nodes_match_libmemcached_on_100000_keys),
        cmocka_unit_test(test_ejected_node_ring_matches_libmemcached_without_it),
        cmocka_unit_test(test_removing_one_of_three_moves_only_its_keys),
        cmocka_unit_test(test_ejecting_the_weighted_node_keeps_the_weighted_ring),
        cmocka_unit_test(test_no_live_node_maps_to_minus_one),
        cmocka_unit_test(test_single_live_node_gets_every_key),
        cmocka_unit_test(test_a_ring_holds_at_most_100_nodes),
    };
    return cmocka_run_group_tests(tests, setup_keys, NULL);
}
