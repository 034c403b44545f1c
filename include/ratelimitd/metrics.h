/*
 * Counters for /metrics. Each loop thread owns one rl_metrics_thread_t and is its only writer:
 * increments are relaxed atomic load+store pairs (plain moves on x86), so the hot path takes no
 * lock and no locked instruction; the scrape sums every thread's slots with relaxed loads.
 */
#ifndef RATELIMITD_METRICS_H
#define RATELIMITD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ratelimitd/config.h"

typedef enum {
    RL_OUTCOME_ALLOWED = 0,
    RL_OUTCOME_LIMITED,
    RL_OUTCOME_UNAUTHORIZED,
    RL_OUTCOME_BAD_REQUEST,
    RL_OUTCOME_FORBIDDEN,
    RL_OUTCOME_BACKEND_ERROR,
    RL_OUTCOME__COUNT
} rl_outcome_t;

typedef struct st_rl_metrics_t rl_metrics_t;
typedef struct st_rl_metrics_thread_t rl_metrics_thread_t;

/* `config` supplies the backend node names (copied). Returns NULL on allocation failure. */
rl_metrics_t *rl_metrics_create(size_t num_threads, const rl_config_t *config);
void rl_metrics_destroy(rl_metrics_t *metrics);
/* The slot of loop thread `index` (0-based, < num_threads). */
rl_metrics_thread_t *rl_metrics_thread(rl_metrics_t *metrics, size_t index);

/* Writers: call only from the thread that owns `mt`. */
void rl_metrics_count_request(rl_metrics_thread_t *mt, rl_outcome_t outcome);
void rl_metrics_count_deny_cache_hit(rl_metrics_thread_t *mt);
/* A connection accepted on, or closed from, a listener of `role` (each role is exported apart). */
void rl_metrics_connection_opened(rl_metrics_thread_t *mt, rl_listen_role_t role);
void rl_metrics_connection_closed(rl_metrics_thread_t *mt, rl_listen_role_t role);
/* A connection closed at accept because its role's connection limit was reached: the API
 * listeners' (server.max_connections) or the admin listeners' own. */
void rl_metrics_count_connection_shed(rl_metrics_thread_t *mt, rl_listen_role_t role);
/* accept() found no descriptor left and the thread stopped accepting for a moment. */
void rl_metrics_count_accept_pause(rl_metrics_thread_t *mt);
/* An HTTP/2 header block refused for naming too many fields (http2_guard.h). */
void rl_metrics_count_header_block_refused(rl_metrics_thread_t *mt);
/* Backend: `node` is the index into config->backend.servers (0 for the local store). */
void rl_metrics_observe_backend_latency(rl_metrics_thread_t *mt, uint64_t usec);
/* `error` is one of RL_ERR_BACKEND_TIMEOUT/DOWN/PROTOCOL/OVERLOAD or RL_ERR_STORE_FULL. */
void rl_metrics_count_backend_error(rl_metrics_thread_t *mt, size_t node, int error);
void rl_metrics_set_node_up(rl_metrics_thread_t *mt, size_t node, bool up);
void rl_metrics_count_node_ejection(rl_metrics_thread_t *mt, size_t node);
/* One write(2) to a node carrying `requests` pipelined requests. */
void rl_metrics_count_backend_write(rl_metrics_thread_t *mt, size_t node, size_t requests);
/* One read from a node that completed `replies` replies. */
void rl_metrics_count_backend_read(rl_metrics_thread_t *mt, size_t node, size_t replies);

/* Process-wide state for the exposition, set by the main thread. The API listeners' connection
 * limit in force is set once, before the loop threads start. */
void rl_metrics_set_max_connections(rl_metrics_t *metrics, uint32_t max_connections);
void rl_metrics_set_draining(rl_metrics_t *metrics, bool draining);
void rl_metrics_count_reload(rl_metrics_t *metrics, bool ok);

/*
 * Renders the Prometheus text exposition (version 0.0.4). Returns a malloc'd buffer the caller
 * frees, its length in *len; NULL on allocation failure. Any thread.
 */
char *rl_metrics_render(rl_metrics_t *metrics, size_t *len);

#endif
