/*
 * The store's public entry points: pick a backend from the config, then dispatch every call
 * through the backend's vtable. Kept apart from the backends so callers (server, handlers) never
 * know which one runs, and so a test of one backend can link without the other.
 */
#include <stdio.h>
#include "ratelimitd/error.h"
#include "ratelimitd/store.h"

rl_store_t *rl_store_create(const rl_config_t *config, char *err, size_t errlen)
{
    switch (config->backend.type) {
    case RL_BACKEND_LOCAL:
        return rl_store_local_create(config, err, errlen);
    case RL_BACKEND_MEMCACHED:
        return rl_store_memcached_create(config, err, errlen);
    }
    snprintf(err, errlen, "unknown backend type %d", (int)config->backend.type);
    return NULL;
}

void rl_store_destroy(rl_store_t *store)
{
    if (store != NULL)
        store->vt->destroy(store);
}

rl_store_thread_t *rl_store_thread_create(rl_store_t *store, h2o_loop_t *loop, rl_metrics_thread_t *metrics)
{
    return store->vt->thread_create(store, loop, metrics);
}

void rl_store_thread_destroy(rl_store_thread_t *thread)
{
    if (thread != NULL)
        thread->store->vt->thread_destroy(thread);
}

void rl_store_incr(rl_store_thread_t *thread, const rl_counter_key_t *key, rl_store_cb cb, void *cbdata,
                   rl_store_op_t **op)
{
    thread->store->vt->incr(thread, key, cb, cbdata, op);
}

void rl_store_cancel(rl_store_thread_t *thread, rl_store_op_t *op)
{
    /* an op that completed inside rl_store_incr() left NULL behind; there is nothing to cancel */
    if (op != NULL)
        thread->store->vt->cancel(thread, op);
}

bool rl_store_ready(rl_store_thread_t *thread)
{
    return thread->store->vt->ready(thread);
}
