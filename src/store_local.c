/*
 * The local store: window counters in this process, for a single ratelimitd instance with no
 * memcached. All loop threads share one table, so a key's count is exact however its
 * connections are spread over threads.
 *
 * Layout. The table is cut into shards (up to 256, a power of two), each behind its own mutex:
 * two threads contend only when they count keys of the same shard at the same instant, and a
 * lock is held for one lookup, never across a callback. Each shard is a fixed array of
 * {hash, window, count} slots cut into buckets of RL_LOCAL_BUCKET_SLOTS (8 cache lines). A key
 * may live in either of two buckets, and a new counter goes to the one with more room; a single
 * probe range per key turned keys away from a table only 45 % full. All memory (1.5 slots per
 * backend.local_max_keys) is allocated at create, so memory is bounded whatever the key count.
 *
 * Placement is secret. The key hash is public when key_hash_secret is (it is empty by default),
 * so shard and buckets come from a second SipHash of it under a random key drawn at create:
 * nobody can choose API keys that fill one key's buckets and leave it without room. No other
 * process has to agree on where a key lives, since a local store is never shared.
 *
 * Reclaiming. Slots are never emptied. A counter of a window older than the one being counted
 * is dead (so is one stamped far ahead, see rl_window_is_dead), and a new counter
 * overwrites an unused slot or else the oldest dead one of its bucket. So there is no sweeper,
 * and the previous window's counters survive as long as their bucket has anything older: a
 * request decided at x.999 s and counted at (x+1).000 s still finds its counter. When both
 * buckets hold only live counters, the increment fails with RL_ERR_STORE_FULL, which the handler
 * answers as `on_failure` says, like a backend failure; it is never counted in a wrong slot.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include "ratelimitd/error.h"
#include "ratelimitd/limiter.h"
#include "ratelimitd/store.h"

#define RL_LOCAL_MAX_SHARDS 256
/* Fewer, larger shards for small stores, so one shard's share of a window's keys stays well
 * below its size and buckets do not fill by chance. */
#define RL_LOCAL_MIN_SHARD_SLOTS 256
#define RL_LOCAL_BUCKET_SLOTS 16
/*
 * Slots per counter, as a fraction. Simulated full windows (local_max_keys keys placed at random,
 * each into the emptier of its two buckets of 16) turned no key away in 100,000 stores of 1,024
 * keys, 2,000 of 65,536 and 100 of 1,048,576. Buckets of 8 turned one key away in 2 of 50 stores
 * of 1,048,576; two overlapping ranges of 32 slots, in 12 of 300,000 stores of 1,024.
 */
#define RL_LOCAL_SLOTS_NUM 3
#define RL_LOCAL_SLOTS_DEN 2
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
    uint32_t shard_buckets; /* buckets per shard */
    void *memory;           /* the slots' allocation; `slots` is its first cache-line boundary */
    rl_local_slot_t *slots;
    rl_hash_secret_t placement_key; /* random, drawn at create */
} rl_local_store_t;

typedef struct st_rl_local_thread_t {
    rl_store_thread_t super;
    rl_metrics_thread_t *metrics; /* may be NULL */
} rl_local_thread_t;

/* Where a key may live: its shard and its two buckets there. */
typedef struct st_rl_local_place_t {
    rl_local_shard_t *shard;
    rl_local_slot_t *bucket[2];
} rl_local_place_t;

/* Room in one bucket for a new counter. */
typedef struct st_rl_local_room_t {
    rl_local_slot_t *victim; /* the slot to claim: unused first, then the oldest dead; NULL = none */
    uint32_t num_free;       /* unused or dead slots */
} rl_local_room_t;

static const rl_store_vtable_t vtable;

/* ---- table ---- */

static inline uint64_t hash_word(const rl_keyhash_t *hash, size_t at)
{
    uint64_t word;
    memcpy(&word, hash->bytes + at, sizeof(word));
    return word;
}

/* Scales 32 random bits to [0, n) without a division. */
static inline uint32_t scale(uint64_t bits32, uint32_t n)
{
    return (uint32_t)((bits32 * n) >> 32);
}

static void place(const rl_local_store_t *store, const rl_keyhash_t *hash, rl_local_place_t *out)
{
    rl_keyhash_t mixed;
    rl_apikey_hash(&store->placement_key, (const char *)hash->bytes, sizeof(hash->bytes), &mixed);
    uint64_t low = hash_word(&mixed, 0), high = hash_word(&mixed, 8);
    out->shard = &store->shards[low & store->shard_mask];
    out->bucket[0] = out->shard->slots + (size_t)scale(low >> 32, store->shard_buckets) * RL_LOCAL_BUCKET_SLOTS;
    out->bucket[1] = out->shard->slots + (size_t)scale(high >> 32, store->shard_buckets) * RL_LOCAL_BUCKET_SLOTS;
}

/* Order in which free slots are claimed, lowest first: unused, then stamped ahead by a clock
 * that was set back, then the oldest window (rl_window_age). */
static inline int64_t claim_order(const rl_local_slot_t *slot, int64_t window)
{
    return slot->count == 0 ? INT64_MIN : rl_window_age(slot->window, window);
}

/* Shard lock held: the slot counting (hash, window) in `bucket`, or NULL and the bucket's room
 * for a new counter. */
static rl_local_slot_t *scan_bucket(rl_local_slot_t *bucket, const rl_keyhash_t *hash, int64_t window,
                                    rl_local_room_t *room)
{
    room->victim = NULL;
    room->num_free = 0;
    for (rl_local_slot_t *slot = bucket; slot != bucket + RL_LOCAL_BUCKET_SLOTS; ++slot) {
        if (slot->count != 0 && slot->window == window &&
            memcmp(slot->hash.bytes, hash->bytes, sizeof(hash->bytes)) == 0)
            return slot;
        if (claim_order(slot, window) < window) { /* unused or dead */
            ++room->num_free;
            if (room->victim == NULL || claim_order(slot, window) < claim_order(room->victim, window))
                room->victim = slot;
        }
    }
    return NULL;
}

/*
 * Shard lock held: returns the slot counting (hash, window), claiming one in the bucket with more
 * room if it is not there yet, or NULL when neither bucket has a free slot.
 */
static rl_local_slot_t *find_or_claim(const rl_local_place_t *place, const rl_keyhash_t *hash, int64_t window)
{
    rl_local_room_t room[2];
    for (size_t b = 0; b != 2; ++b) {
        rl_local_slot_t *slot = scan_bucket(place->bucket[b], hash, window, &room[b]);
        if (slot != NULL)
            return slot;
    }
    rl_local_slot_t *victim = room[room[1].num_free > room[0].num_free].victim;
    if (victim != NULL) {
        victim->hash = *hash;
        victim->window = window;
        victim->count = 0;
    }
    return victim;
}

/* Counts one request; returns the new count, or 0 when the key's buckets have no room. */
static uint32_t count_one(rl_local_store_t *store, const rl_keyhash_t *hash, int64_t window)
{
    rl_local_place_t where;
    place(store, hash, &where);
    uint32_t value = 0;
    pthread_mutex_lock(&where.shard->lock);
    rl_local_slot_t *slot = find_or_claim(&where, hash, window);
    if (slot != NULL) {
        /* saturate: a wrap to 0 would both admit and mark the slot unused */
        if (slot->count != UINT32_MAX)
            ++slot->count;
        value = slot->count;
    }
    pthread_mutex_unlock(&where.shard->lock);
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
    free(store->memory);
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
    if (getrandom(store->placement_key.bytes, sizeof(store->placement_key.bytes), 0) !=
        (ssize_t)sizeof(store->placement_key.bytes)) {
        snprintf(err, errlen, "local store: no random placement key: %s", strerror(errno));
        destroy(&store->super);
        return NULL;
    }
    size_t num_slots =
        capacity / RL_LOCAL_SLOTS_DEN * RL_LOCAL_SLOTS_NUM +
        (capacity % RL_LOCAL_SLOTS_DEN * RL_LOCAL_SLOTS_NUM + RL_LOCAL_SLOTS_DEN - 1) / RL_LOCAL_SLOTS_DEN;
    size_t num_shards = num_shards_for(num_slots);
    store->shard_mask = num_shards - 1;
    /* rounded up so the total is never below the headroom asked for */
    size_t per_shard = (num_slots + num_shards - 1) / num_shards;
    store->shard_buckets = (uint32_t)((per_shard + RL_LOCAL_BUCKET_SLOTS - 1) / RL_LOCAL_BUCKET_SLOTS);
    size_t shard_slots = (size_t)store->shard_buckets * RL_LOCAL_BUCKET_SLOTS;

    /* calloc: the pages of a large, mostly idle table stay untouched until used; one cache line
     * more, so that buckets start on a line */
    store->memory = calloc(num_shards * shard_slots * sizeof(rl_local_slot_t) + RL_LOCAL_CACHE_LINE, 1);
    store->shards = aligned_alloc(RL_LOCAL_CACHE_LINE, num_shards * sizeof(rl_local_shard_t));
    if (store->memory == NULL || store->shards == NULL) {
        free(store->shards);
        store->shards = NULL;
        goto nomem;
    }
    store->slots = (rl_local_slot_t *)(((uintptr_t)store->memory + RL_LOCAL_CACHE_LINE - 1) &
                                       ~(uintptr_t)(RL_LOCAL_CACHE_LINE - 1));
    for (size_t i = 0; i != num_shards; ++i) {
        pthread_mutex_init(&store->shards[i].lock, NULL);
        store->shards[i].slots = store->slots + i * shard_slots;
    }
    return &store->super;

nomem:
    snprintf(err, errlen, "local store: out of memory for %zu counters", capacity);
    destroy(store == NULL ? NULL : &store->super);
    return NULL;
}
