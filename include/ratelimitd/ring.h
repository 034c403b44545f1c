/*
 * The ketama ring: which memcached node holds a counter key. Every ratelimitd instance and any
 * libmemcached client configured with the same server list must agree, or two pods would count
 * the same key on different nodes and each admit `limit` requests. So the ring is not our own
 * ketama implementation: it is libmemcached 1.1.4's continuum itself
 * (MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA, plus MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED when any
 * weight is not 1), held in a memcached_st that is only ever configured, never connected.
 *
 * A ring is built over the live subset of the configured nodes; ejecting a node means building
 * a new ring without it, which moves only that node's keys (to the next point on the circle).
 * A ring is not thread-safe: each loop thread owns its own.
 */
#ifndef RATELIMITD_RING_H
#define RATELIMITD_RING_H

#include <stdbool.h>
#include <stddef.h>
#include "ratelimitd/config.h"

typedef struct st_rl_ring_t rl_ring_t;

/*
 * Builds the ring over nodes[i] for which live[i] is true (`live` NULL = all). `nodes` is not
 * retained. Returns a ring owned by the caller, or NULL on allocation failure, an invalid host
 * name or more than RL_CONFIG_MAX_SERVERS nodes. No I/O and no DNS: host names are hashed as written.
 */
rl_ring_t *rl_ring_create(const rl_node_config_t *nodes, size_t num_nodes, const bool *live);

/*
 * Index (into the `nodes` given to rl_ring_create) of the node owning `key` (`len` bytes: the
 * group key that places a counter, see rl_counter_key_t), or -1 when no node is live. Pure and
 * non-blocking (a binary search over the continuum): safe on an event loop.
 */
int rl_ring_lookup(const rl_ring_t *ring, const char *key, size_t len);

/* Number of live nodes on the ring. */
size_t rl_ring_num_live(const rl_ring_t *ring);

/* Frees the ring; accepts NULL. */
void rl_ring_destroy(rl_ring_t *ring);

#endif
