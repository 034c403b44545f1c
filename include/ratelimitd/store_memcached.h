/*
 * Introspection of the memcached store's per-thread state, for tests and debugging. The
 * constructor and the vtable live in store.h; nothing here is needed on the request path.
 */
#ifndef RATELIMITD_STORE_MEMCACHED_H
#define RATELIMITD_STORE_MEMCACHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ratelimitd/store.h"

typedef struct st_rl_mc_node_stats_t {
    bool connected; /* TCP connection established */
    bool ejected;   /* out of this thread's ring */
    bool healthy;   /* the last reply or probe within the timeout succeeded */
    size_t pending; /* ops in the FIFO, abandoned ones included */
    uint32_t consecutive_failures;
    /* Increments only: a probe's write or reply would pass an idle node off as traffic. */
    uint64_t writes;         /* socket writes that carried an increment */
    uint64_t write_requests; /* increments carried by those writes */
    uint64_t reads;          /* reads that completed at least one increment's reply */
    uint64_t replies;        /* increments answered */
    uint64_t failures;       /* connection-level failures and timeouts */
    uint64_t ejections;
    uint64_t probes;          /* `mn` sent */
    uint64_t lookups;         /* re-resolutions of the host name started before a reconnect */
    uint64_t address_changes; /* lookups that moved the node to another address */
} rl_mc_node_stats_t;

/*
 * Loop thread: copies the counters of node `node` (index into config->backend.servers) of a
 * thread handle created by the memcached store. Returns RL_OK or RL_ERR_INVALID (not a memcached
 * store thread, or no such node).
 */
int rl_store_memcached_node_stats(rl_store_thread_t *thread, size_t node, rl_mc_node_stats_t *stats);

/* Loop thread: the node this thread's current ring maps `key` to, or -1 when none is live. */
int rl_store_memcached_node_of(rl_store_thread_t *thread, const char *key, size_t len);

#endif
