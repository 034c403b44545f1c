/*
 * The counter store: one atomic "increment this window's counter, creating it with a TTL"
 * per decision. Two backends implement it: store_memcached (a pool of memcached nodes chosen by
 * ketama, shared by every instance) and store_local (in-process, one instance only).
 *
 * A store is created once per process on the main thread; each loop thread then creates its own
 * rl_store_thread_t on its own loop (own connections, own buffers), so the request path takes no
 * lock. All rl_store_thread_* calls must be made on the owning loop thread.
 */
#ifndef RATELIMITD_STORE_H
#define RATELIMITD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include "ratelimitd/apikey.h"
#include "ratelimitd/config.h"
#include "ratelimitd/metrics.h"

typedef struct st_rl_store_t rl_store_t;
typedef struct st_rl_store_thread_t rl_store_thread_t;
typedef struct st_rl_store_op_t rl_store_op_t;

typedef struct st_rl_counter_key_t {
    rl_keyhash_t hash; /* the API key's keyed hash */
    int64_t window;    /* Unix second */
    const char *mckey; /* prefix || hash || ':' || window; valid only during rl_store_incr() */
    size_t mckey_len;
    /* Leading bytes of mckey that pick its memcached node: prefix || hash, without the window, so
     * an API key stays on one node from second to second (libmemcached's `_by_key` group key). */
    size_t placement_len;
} rl_counter_key_t;

/*
 * Completion of one increment, on the loop thread. `status` is RL_OK with the counter's new
 * value (>= 1), or RL_ERR_BACKEND_TIMEOUT / _DOWN / _PROTOCOL / _OVERLOAD / RL_ERR_STORE_FULL.
 */
typedef void (*rl_store_cb)(void *cbdata, int status, uint64_t value);

typedef struct st_rl_store_vtable_t {
    const char *name;
    rl_store_thread_t *(*thread_create)(rl_store_t *store, h2o_loop_t *loop, rl_metrics_thread_t *metrics);
    void (*thread_destroy)(rl_store_thread_t *thread);
    void (*incr)(rl_store_thread_t *thread, const rl_counter_key_t *key, rl_store_cb cb, void *cbdata,
                 rl_store_op_t **op);
    void (*cancel)(rl_store_thread_t *thread, rl_store_op_t *op);
    bool (*ready)(rl_store_thread_t *thread);
    void (*destroy)(rl_store_t *store);
} rl_store_vtable_t;

/* Backends embed these as their first member. */
struct st_rl_store_t {
    const rl_store_vtable_t *vt;
};
struct st_rl_store_thread_t {
    rl_store_t *store;
};

/* Constructors; `config` is not retained. NULL on failure with a message in err. Main thread. */
rl_store_t *rl_store_local_create(const rl_config_t *config, char *err, size_t errlen);
rl_store_t *rl_store_memcached_create(const rl_config_t *config, char *err, size_t errlen);
/* Picks the backend named by config->backend.type. */
rl_store_t *rl_store_create(const rl_config_t *config, char *err, size_t errlen);
/* After every thread handle is destroyed. Accepts NULL. */
void rl_store_destroy(rl_store_t *store);

/* Loop thread: opens this thread's view of the store (memcached: starts connecting). NULL on failure. */
rl_store_thread_t *rl_store_thread_create(rl_store_t *store, h2o_loop_t *loop, rl_metrics_thread_t *metrics);
/* Loop thread: closes connections; pending operations complete with RL_ERR_CANCELLED first. Accepts NULL. */
void rl_store_thread_destroy(rl_store_thread_t *thread);

/*
 * Loop thread: counts one request for `key`. `cb` is called exactly once, unless the op is
 * cancelled first; it may be called before this function returns (local store, or an immediate
 * failure such as every node ejected), in which case *op is set to NULL. Otherwise *op is a
 * handle valid until the callback runs or rl_store_cancel() is called.
 */
void rl_store_incr(rl_store_thread_t *thread, const rl_counter_key_t *key, rl_store_cb cb, void *cbdata,
                   rl_store_op_t **op);
/* Loop thread: the callback of `op` will not be called (the HTTP request went away). */
void rl_store_cancel(rl_store_thread_t *thread, rl_store_op_t *op);
/* Loop thread: true while at least one backend node answers (always true for the local store). */
bool rl_store_ready(rl_store_thread_t *thread);

#endif
