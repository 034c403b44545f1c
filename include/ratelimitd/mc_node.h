/*
 * Internal to the memcached store (store_memcached.c and mc_node.c); no other module includes
 * this. One rl_mc_node_t is one loop thread's connection to one memcached node: its socket, its
 * output buffers, the FIFO of operations awaiting a reply, and the failure bookkeeping that the
 * thread's ejection policy reads. All of it is touched only by the owning loop thread.
 */
#ifndef RATELIMITD_MC_NODE_H
#define RATELIMITD_MC_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <h2o.h>
#include "ratelimitd/config.h"
#include "ratelimitd/metrics.h"
#include "ratelimitd/resolver.h"
#include "ratelimitd/ring.h"
#include "ratelimitd/store.h"
#include "ratelimitd/store_memcached.h"

/* Idle time after which a node is sent `mn`, and how often idleness is checked. */
#define RL_MC_PROBE_IDLE_MS 1000
#define RL_MC_PROBE_TICK_MS 500
/* First reconnect delay; doubles up to retry_interval_ms. */
#define RL_MC_BACKOFF_MIN_MS 10
#define RL_MC_BACKOFF_LEVELS 20
/* How often an op whose deadline h2o fired early is looked at again (see on_op_timeout). */
#define RL_MC_RECHECK_MS 1
/* A batch of 2 to RL_MC_HOLD_BELOW - 1 increments waits up to RL_MC_HOLD_TURNS loop turns for
 * more (mc_node.c). */
#define RL_MC_HOLD_BELOW 16
#define RL_MC_HOLD_TURNS 2

typedef struct st_rl_mc_thread_t rl_mc_thread_t;
typedef struct st_rl_mc_node_t rl_mc_node_t;

/* The process-wide part: settings and the start-up addresses, read-only once created. */
typedef struct st_rl_mc_store_t {
    rl_store_t super;
    rl_node_config_t *nodes;        /* deep copy of config->backend.servers */
    struct sockaddr_storage *addrs; /* resolved at start-up; each thread's nodes start from these */
    /* 0: the name did not resolve at start-up */
    socklen_t *addrlens;
    bool *is_name; /* the host is a DNS name, not an IP literal: reconnects resolve it again */
    size_t num_nodes;
    uint32_t timeout_ms;
    uint32_t window_ttl_s;
    uint32_t failure_limit;
    uint32_t retry_interval_ms;
    uint32_t max_pending;
} rl_mc_store_t;

/* One increment or probe. Lives in a node's FIFO from issue to reply (or failure). */
typedef struct st_rl_mc_op_t {
    h2o_linklist_t link; /* node FIFO, or the thread's free list */
    h2o_timeout_entry_t timeout;
    rl_mc_node_t *node;
    rl_store_cb cb; /* NULL once cancelled, timed out, or for a probe */
    void *cbdata;
    uint64_t issued_usec;
    uint32_t opaque;
    bool is_probe;
    bool timed_out; /* its deadline passed first: its reply proves nothing about the node */
} rl_mc_op_t;

/* A growable byte buffer. */
typedef struct st_rl_mc_bytes_t {
    char *base;
    size_t len;
    size_t cap;
} rl_mc_bytes_t;

typedef enum { RL_MC_NODE_CLOSED = 0, RL_MC_NODE_CONNECTING, RL_MC_NODE_CONNECTED } rl_mc_node_state_t;

struct st_rl_mc_node_t {
    rl_mc_thread_t *thread;
    size_t index;
    rl_mc_node_state_t state;
    h2o_socket_t *sock;
    rl_mc_bytes_t out;     /* accumulates commands until the next flush */
    rl_mc_bytes_t writing; /* handed to h2o_socket_write; stable until on_write_complete */
    size_t out_increments; /* increments in `out`; probes stay out of the pipelining counters */
    unsigned held_turns;   /* loop turns the batch in `out` has waited */
    h2o_linklist_t fifo;   /* rl_mc_op_t, in the order their commands were queued */
    size_t num_pending;
    uint32_t next_opaque;
    h2o_timeout_entry_t flush_entry;     /* in thread->flush_timeout while `out` waits */
    h2o_timeout_entry_t hold_entry;      /* in thread->hold_timeout while a small batch waits */
    h2o_timeout_entry_t reconnect_entry; /* in a backoff or the retry timeout while CLOSED */
    h2o_timeout_entry_t connect_entry;   /* connect deadline while CONNECTING */
    uint64_t connect_started_usec;       /* rl_mc_now_usec() when the connect began */
    uint32_t backoff_level;
    uint32_t consecutive_failures;
    bool streak_dropped;              /* a failure of the current streak closed the connection */
    uint64_t connected_at_ms;         /* loop time the current connection was established */
    uint64_t last_timeout_failure_ms; /* loop time of the last timeout counted as a failure */
    uint64_t last_reply_usec;         /* rl_mc_now_usec() of the last matched reply, 0 before any */
    bool ejected;
    bool healthy;
    bool probe_in_flight;
    uint64_t last_activity_ms;
    /* This thread's address of the node: the start-up one until a reconnect resolves the name to
     * another. Per thread, so that no lock is needed and each thread follows a move on its own. */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    rl_lookup_t *lookup; /* while CLOSED and resolving before a reconnect */
    rl_mc_node_stats_t stats;
};

struct st_rl_mc_thread_t {
    rl_store_thread_t super;
    const rl_mc_store_t *store;
    h2o_loop_t *loop;
    rl_metrics_thread_t *metrics; /* may be NULL (unit tests) */
    rl_ring_t *ring;              /* the nodes not ejected */
    rl_ring_t *full_ring;         /* every node: whose key it is when all are ejected */
    rl_mc_node_t *nodes;
    h2o_timeout_t request_timeout; /* timeout_ms, per op */
    h2o_timeout_t recheck_timeout; /* RL_MC_RECHECK_MS: ops whose request_timeout fired early */
    h2o_timeout_t connect_timeout;
    h2o_timeout_t hold_timeout;  /* 0 ms, linked before flush_timeout: runs first, so a batch held
                                    by this turn's flush is looked at in the next turn's */
    h2o_timeout_t flush_timeout; /* 0 ms: runs after the loop turn's I/O callbacks */
    h2o_timeout_t retry_timeout; /* retry_interval_ms: how long an ejected node stays out */
    h2o_timeout_t probe_timeout; /* RL_MC_PROBE_TICK_MS */
    h2o_timeout_entry_t probe_entry;
    h2o_timeout_t backoff[RL_MC_BACKOFF_LEVELS];
    size_t num_backoff;
    h2o_linklist_t free_ops;
    rl_resolver_t *resolver; /* NULL when every host is an IP literal */
    bool closing;            /* thread_destroy is failing ops: refuse new ones */
};

/* mc_node.c: the connection and its failure policy (ejection, backoff, re-admission). */
void rl_mc_node_init(rl_mc_node_t *node, rl_mc_thread_t *thread, size_t index);
/*
 * Fails every pending op with `status` (callbacks still set), cancels a lookup in flight, closes the
 * socket, unlinks timers, frees buffers.
 */
void rl_mc_node_dispose(rl_mc_node_t *node, int status);
/* Starts a non-blocking connect to the node's current address (node->addr). */
void rl_mc_node_connect(rl_mc_node_t *node);
/* The first connect: a name that did not resolve at start-up is looked up first. */
void rl_mc_node_start(rl_mc_node_t *node);
/* Queues an increment (op->cb/cbdata already set). RL_OK, or RL_ERR_NOMEM / RL_ERR_INVALID with nothing queued. */
int rl_mc_node_send_incr(rl_mc_node_t *node, rl_mc_op_t *op, const char *key, size_t key_len);
/* Sends `mn` to connected nodes idle for RL_MC_PROBE_IDLE_MS. */
void rl_mc_node_probe_if_idle(rl_mc_node_t *node, uint64_t now_ms);

/* store_memcached.c: what the connections share. */
rl_mc_op_t *rl_mc_op_alloc(rl_mc_thread_t *thread);
void rl_mc_op_free(rl_mc_thread_t *thread, rl_mc_op_t *op);
/* Counts one error into metrics (no-op without metrics). */
void rl_mc_count_error(rl_mc_thread_t *thread, size_t node, int status);
/* Rebuilds the thread's ring over the nodes not ejected; keeps the old ring if that fails. */
void rl_mc_thread_rebuild_ring(rl_mc_thread_t *thread);
/* CLOCK_MONOTONIC in microseconds. */
uint64_t rl_mc_now_usec(void);

#endif
