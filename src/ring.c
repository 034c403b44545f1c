/*
 * Ketama ring built from libmemcached's own continuum.
 *
 * Reimplementing ketama would be ~100 lines, but compatibility with libmemcached has sharp
 * edges (the point key omits ":11211" for the default port, the weighted mode switches the key
 * hash to MD5 and spreads 160 points in groups of four, the unweighted mode uses
 * one-at-a-time). Any divergence silently splits a key's count across nodes. Asking libmemcached
 * costs one memcached_st per ring and a rebuild (a few hundred hashes and a sort) per ejection,
 * which is rare; a lookup stays a binary search. The memcached_st is never connected:
 * memcached_server_add_with_weight only records the host name, and memcached_generate_hash only
 * hashes and searches.
 */
#include <stdlib.h>
#include <libmemcached/memcached.h>
#include "ratelimitd/ring.h"

struct st_rl_ring_t {
    memcached_st *memc; /* NULL when no node is live */
    size_t *node_of;    /* libmemcached server position -> our node index */
    size_t num_live;
};

/*
 * Over every configured node, live or not: the pool's mode is configuration, as it is for a
 * libmemcached client, whose weighted flag stays set when it ejects a server. Deciding it over
 * the live nodes would switch the whole ring to the unweighted hash when the only weighted node
 * is ejected, and move about half of the surviving nodes' keys with it.
 */
static bool any_weighted(const rl_node_config_t *nodes, size_t num_nodes)
{
    for (size_t i = 0; i != num_nodes; ++i)
        if (nodes[i].weight != 1)
            return true;
    return false;
}

/* Same calls, in the same order, that a libmemcached client of the pool makes. */
static memcached_st *configure(const rl_node_config_t *nodes, size_t num_nodes, const bool *live, size_t *node_of)
{
    memcached_st *memc = memcached_create(NULL);
    if (memc == NULL)
        return NULL;
    /* DISTRIBUTION resets the weighted flag, so it must come first. */
    if (memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA) !=
        MEMCACHED_SUCCESS)
        goto Error;
    if (any_weighted(nodes, num_nodes) &&
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1) != MEMCACHED_SUCCESS)
        goto Error;
    size_t position = 0;
    for (size_t i = 0; i != num_nodes; ++i) {
        if (live != NULL && !live[i])
            continue;
        if (memcached_server_add_with_weight(memc, nodes[i].host, nodes[i].port, nodes[i].weight) != MEMCACHED_SUCCESS)
            goto Error;
        node_of[position++] = i;
    }
    return memc;
Error:
    memcached_free(memc);
    return NULL;
}

rl_ring_t *rl_ring_create(const rl_node_config_t *nodes, size_t num_nodes, const bool *live)
{
    if (num_nodes > RL_CONFIG_MAX_SERVERS)
        return NULL;
    rl_ring_t *ring = calloc(1, sizeof(*ring));
    if (ring == NULL)
        return NULL;
    for (size_t i = 0; i != num_nodes; ++i)
        ring->num_live += live == NULL || live[i];
    if (ring->num_live == 0)
        return ring;
    if ((ring->node_of = calloc(ring->num_live, sizeof(*ring->node_of))) == NULL)
        goto Error;
    if ((ring->memc = configure(nodes, num_nodes, live, ring->node_of)) == NULL)
        goto Error;
    return ring;
Error:
    rl_ring_destroy(ring);
    return NULL;
}

int rl_ring_lookup(const rl_ring_t *ring, const char *key, size_t len)
{
    /* libmemcached dereferences an empty continuum, so "no live node" is answered here */
    if (ring->memc == NULL)
        return -1;
    uint32_t position = memcached_generate_hash(ring->memc, key, len);
    if (position >= ring->num_live)
        return -1;
    return (int)ring->node_of[position];
}

size_t rl_ring_num_live(const rl_ring_t *ring)
{
    return ring->num_live;
}

void rl_ring_destroy(rl_ring_t *ring)
{
    if (ring == NULL)
        return;
    if (ring->memc != NULL)
        memcached_free(ring->memc);
    free(ring->node_of);
    free(ring);
}
