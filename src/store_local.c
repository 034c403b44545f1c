/*
 * The local store: window counters in this process, for a single ratelimitd instance with no
 * memcached. All loop threads share one table, so a key's count is exact however its
 * connections are spread over threads.
 *
 * Layout. The table is cut into shards (up to 256, a power of two, picked by hash bits), each
 * behind its own mutex: two threads contend only when they count keys of the same shard at the
 * same instant, and a lock is held for one probe sequence, never across a callback. Each shard
 * is a fixed array of {hash, window, count} slots with linear probing over at most
 * RL_LOCAL_MAX_PROBE slots; all memory (backend.local_max_keys slots) is allocated at
 * create, so memory is bounded whatever the key count.
 *
 * Reclaiming. Slots are never emptied. A counter whose window is older than the window being
 * counted is dead, and an insert overwrites the oldest dead slot in its probe range (an unused
 * slot counts as oldest). So there is no sweeper, and the previous window's counters survive
 * as long as the probe range has anything older: a request decided at x.999 s and counted at
 * (x+1).000 s still finds its counter. When the probe range holds only counters of the current
 * or newer windows, the increment fails with RL_ERR_STORE_FULL (the operator raises
 * local_max_keys); it is never counted in a wrong slot.
 *
 * Lookup stops at the first unused slot, which is sound because a slot, once used, is never
 * unused again: an entry is always placed at or before the first unused slot of its range.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ratelimitd/error.h"
#include "ratelimitd/store.h"

#define RL_LOCAL_MAX_SHARDS 256
/* Fewer, larger shards for small stores, so one shard's share of a window's keys stays well
 * below its size and probe ranges do not fill by chance. */
#define RL_LOCAL_MIN_SHARD_SLOTS 256
#define RL_LOCAL_MAX_PROBE 32
#define RL_LOCAL_CACHE_LINE 64

typedef struct st_rl_local_slot_t {
    rl_keyhash_t hash;
    int64_t window;
    uint32_t count; /* 0 = never used */
} rl_local_slot_t;

typedef struct st_rl_local_shard_t {
    _Alignas(RL_LOCAL_CACHE_LINE) pthread_mutex_t lock;
    rl_local_slot_t *slots; /* `num_slots` entries inside the store's one allocation */
} rl_local_shard_t;

typedef struct st_rl_local_store_t {
    rl_store_t super;
    rl_local_shard_t *shards;
    size_t shard_mask;
    uint32_t shard_slots; /* slots per shard */
    uint32_t max_probe;
    rl_local_slot_t *slots;
} rl_local_store_t;

typedef struct st_rl_local_thread_t {
    rl_store_thread_t super;
    rl_metrics_thread_t *metrics; /* may be NULL */
} rl_local_thread_t;

static const rl_store_vtable_t vtable;

/* ---- table ---- */

static inline uint64_t hash_word(const rl_keyhash_t *hash, size_t at)
{
    uint64_t word;
    memcpy(&word, hash->bytes + at, sizeof(word));
    return word;
}

static inline rl_local_shard_t *shard_of(rl_local_store_t *store, const rl_keyhash_t *hash)
{
    return &store->shards[hash_word(hash, 0) & store->shard_mask];
}

/* First slot of the probe range: bits independent of the shard bits, scaled without a division. */
static inline uint32_t home_of(const rl_local_store_t *store, const rl_keyhash_t *hash)
{
    return (uint32_t)(((hash_word(hash, 8) >> 32) * store->shard_slots) >> 32);
}

/*
 * Shard lock held: returns the slot counting (hash, window), claiming one if it is not there yet,
 * or NULL when the probe range has no slot older than `window`.
 */
static rl_local_slot_t *find_or_claim(rl_local_store_t *store, rl_local_shard_t *shard, const rl_keyhash_t *hash,
                                      int64_t window)
{
    rl_local_slot_t *victim = NULL;
    uint32_t at = home_of(store, hash);
    for (uint32_t i = 0; i != store->max_probe; ++i) {
        rl_local_slot_t *slot = &shard->slots[at];
        if (slot->count == 0) {
            victim = slot;
            break;
        }
        if (slot->window == window && memcmp(slot->hash.bytes, hash->bytes, sizeof(hash->bytes)) == 0)
            return slot;
        if (slot->window < window && (victim == NULL || slot->window < victim->window))
            victim = slot;
        if (++at == store->shard_slots)
            at = 0;
    }
    if (victim != NULL) {
        victim->hash = *hash;
        victim->window = window;
        victim->count = 0;
    }
    return victim;
}

/* Counts one request; returns the new count, or 0 when the shard has no room. */
static uint32_t count_one(rl_local_store_t *store, const rl_keyhash_t *hash, int64_t window)
{
    rl_local_shard_t *shard = shard_of(store, hash);
    uint32_t value = 0;
    pthread_mutex_lock(&shard->lock);
    rl_local_slot_t *slot = find_or_claim(store, shard, hash, window);
    if (slot != NULL) {
        /* saturate: a wrap to 0 would both admit and mark the slot unused */
        if (slot->count != UINT32_MAX)
            ++slot->count;
        value = slot->count;
    }
    pthread_mutex_unlock(&shard->lock);
    return value;
}

/* ---- vtable ---- */

static rl_store_thread_t *thread_create(rl_store_t *store, h2o_loop_t *loop, rl_metrics_thread_t *metrics)
{
    (void)loop; /* every operation completes synchronously */
    rl_local_thread_t *thread = calloc(1, sizeof(*thread));
    if (thread == NULL)
        return NULL;
    thread->super.store = store;
    thread->metrics = metrics;
    /* the in-process store is always there; an unknown state would read as down */
    if (metrics != NULL)
        rl_metrics_set_node_up(metrics, 0, true);
    return &thread->super;
}

static void thread_destroy(rl_store_thread_t *thread)
{
    free(thread);
}

static void incr(rl_store_thread_t *super, const rl_counter_key_t *key, rl_store_cb cb, void *cbdata,
                 rl_store_op_t **op)
{
    rl_local_thread_t *thread = (rl_local_thread_t *)super;
    uint32_t value = count_one((rl_local_store_t *)super->store, &key->hash, key->window);
    /* cleared before the callback, which may free the memory holding *op */
    *op = NULL;
    if (value == 0) {
        if (thread->metrics != NULL)
            rl_metrics_count_backend_error(thread->metrics, 0, RL_ERR_STORE_FULL);
        cb(cbdata, RL_ERR_STORE_FULL, 0);
        return;
    }
    cb(cbdata, RL_OK, value);
}

static void cancel(rl_store_thread_t *thread, rl_store_op_t *op)
{
    /* nothing is ever pending: incr() has always called back before returning */
    (void)thread;
    (void)op;
}

static bool ready(rl_store_thread_t *thread)
{
    (void)thread;
    return true;
}

static void destroy(rl_store_t *super)
{
    rl_local_store_t *store = (rl_local_store_t *)super;
    if (store == NULL)
        return;
    if (store->shards != NULL) {
        for (size_t i = 0; i <= store->shard_mask; ++i)
            pthread_mutex_destroy(&store->shards[i].lock);
    }
    free(store->shards);
    free(store->slots);
    free(store);
}

static const rl_store_vtable_t vtable = {
    .name = "local",
    .thread_create = thread_create,
    .thread_destroy = thread_destroy,
    .incr = incr,
    .cancel = cancel,
    .ready = ready,
    .destroy = destroy,
};

/* ---- construction ---- */

static size_t num_shards_for(size_t capacity)
{
    size_t shards = 1;
    while (shards < RL_LOCAL_MAX_SHARDS && capacity / (shards * 2) >= RL_LOCAL_MIN_SHARD_SLOTS)
        shards *= 2;
    return shards;
}

rl_store_t *rl_store_local_create(const rl_config_t *config, char *err, size_t errlen)
{
    size_t capacity = config->backend.local_max_keys;
    if (capacity == 0) {
        snprintf(err, errlen, "local store: backend.local_max_keys must be at least 1");
        return NULL;
    }
    rl_local_store_t *store = calloc(1, sizeof(*store));
    if (store == NULL)
        goto nomem;
    store->super.vt = &vtable;
    size_t num_shards = num_shards_for(capacity);
    store->shard_mask = num_shards - 1;
    /* rounded up so the total is never below what was asked for (at most num_shards - 1 more) */
    store->shard_slots = (uint32_t)((capacity + num_shards - 1) / num_shards);
    store->max_probe = store->shard_slots < RL_LOCAL_MAX_PROBE ? store->shard_slots : RL_LOCAL_MAX_PROBE;

    /* calloc: the pages of a large, mostly idle table stay untouched until used */
    store->slots = calloc(num_shards * (size_t)store->shard_slots, sizeof(rl_local_slot_t));
    store->shards = aligned_alloc(RL_LOCAL_CACHE_LINE, num_shards * sizeof(rl_local_shard_t));
    if (store->slots == NULL || store->shards == NULL) {
        free(store->shards);
        store->shards = NULL;
        goto nomem;
    }
    for (size_t i = 0; i != num_shards; ++i) {
        pthread_mutex_init(&store->shards[i].lock, NULL);
        store->shards[i].slots = store->slots + i * store->shard_slots;
    }
    return &store->super;

nomem:
    snprintf(err, errlen, "local store: out of memory for %zu counters", capacity);
    destroy(store == NULL ? NULL : &store->super);
    return NULL;
}
