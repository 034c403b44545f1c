/*
 * The local store: window counters in this process, for a single ratelimitd instance with no
 * memcached. All loop threads share one table, so a key's count is exact however its
 * connections are spread over threads.
 *
 * Layout. The table is cut into shards (up to 256, a power of two), each behind its own mutex:
 * two threads contend only when they count keys of the same shard at the same instant, and a
 * lock is held for one lookup, never across a callback. Each shard is a fixed array of
 * {hash, window, count} slots. A key may live in either of two probe ranges of
 * RL_LOCAL_MAX_PROBE slots, and a new counter goes to the range with more room: with one range,
 * clusters turned keys away from a table only 45 % full. All memory (1.5 slots per
 * backend.local_max_keys) is allocated at create, so memory is bounded whatever the key count.
 *
 * Placement is secret. The key hash is public when key_hash_secret is (it is empty by default),
 * so shard and ranges come from a second SipHash of it under a random key drawn at create:
 * nobody can choose API keys that fill one key's ranges and leave it without room. No other
 * process has to agree on where a key lives, since a local store is never shared.
 *
 * Reclaiming. Slots are never emptied. A counter of a window older than the one being counted
 * is dead (so is one stamped far ahead, see rl_window_is_dead), and a new counter
 * overwrites an unused slot or else the oldest dead one of its range. So there is no sweeper,
 * and the previous window's counters survive as long as their range has anything older: a
 * request decided at x.999 s and counted at (x+1).000 s still finds its counter. When both
 * ranges hold only live counters, the increment fails with RL_ERR_STORE_FULL, which the handler
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
 * below its size and probe ranges do not fill by chance. */
#define RL_LOCAL_MIN_SHARD_SLOTS 256
#define RL_LOCAL_MAX_PROBE 32
/*
 * Slots per counter, as a fraction. In simulations of a full window (every one of
 * local_max_keys keys placed at random, two ranges of 32), this headroom turned one key away in
 * 12 of 300,000 stores of 1,024 keys (always past the 980th), 22 of 100,000 of 4,096, and 1 of
 * 200 of 65,536 or of 131,072; with 1.25 slots it was a few keys per million.
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
    uint32_t shard_slots; /* slots per shard */
    uint32_t max_probe;
    rl_local_slot_t *slots;
    rl_hash_secret_t placement_key; /* random, drawn at create */
} rl_local_store_t;

typedef struct st_rl_local_thread_t {
    rl_store_thread_t super;
    rl_metrics_thread_t *metrics; /* may be NULL */
} rl_local_thread_t;

/* Where a key may live: its shard and the first slots of its two probe ranges. */
typedef struct st_rl_local_place_t {
    rl_local_shard_t *shard;
    uint32_t home[2];
} rl_local_place_t;

/* Room in one probe range for a new counter. */
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
    out->home[0] = scale(low >> 32, store->shard_slots);
    out->home[1] = scale(high >> 32, store->shard_slots);
}

/* Order in which free slots are claimed, lowest first: unused, then stamped ahead by a clock
 * that was set back, then the oldest window. */
static inline int64_t claim_order(const rl_local_slot_t *slot, int64_t window)
{
    if (slot->count == 0 || slot->window > window + RL_WINDOW_MAX_AHEAD)
        return INT64_MIN;
    return slot->window;
}

/* Shard lock held: the slot counting (hash, window) in the range starting at `at`, or NULL and
 * the range's room for a new counter. */
static rl_local_slot_t *scan_range(const rl_local_store_t *store, rl_local_slot_t *slots, uint32_t at,
                                   const rl_keyhash_t *hash, int64_t window, rl_local_room_t *room)
{
    room->victim = NULL;
    room->num_free = 0;
    for (uint32_t i = 0; i != store->max_probe; ++i) {
        rl_local_slot_t *slot = &slots[at];
        if (slot->count != 0 && slot->window == window &&
            memcmp(slot->hash.bytes, hash->bytes, sizeof(hash->bytes)) == 0)
            return slot;
        if (slot->count == 0 || rl_window_is_dead(slot->window, window)) {
            ++room->num_free;
            if (room->victim == NULL || claim_order(slot, window) < claim_order(room->victim, window))
                room->victim = slot;
        }
        if (++at == store->shard_slots)
            at = 0;
    }
    return NULL;
}

/*
 * Shard lock held: returns the slot counting (hash, window), claiming one in the range with more
 * room if it is not there yet, or NULL when neither range has a free slot.
 */
static rl_local_slot_t *find_or_claim(const rl_local_store_t *store, const rl_local_place_t *place,
                                      const rl_keyhash_t *hash, int64_t window)
{
    rl_local_room_t room[2];
    for (size_t r = 0; r != 2; ++r) {
        rl_local_slot_t *slot = scan_range(store, place->shard->slots, place->home[r], hash, window, &room[r]);
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

/* Counts one request; returns the new count, or 0 when the key's ranges have no room. */
static uint32_t count_one(rl_local_store_t *store, const rl_keyhash_t *hash, int64_t window)
{
    rl_local_place_t where;
    place(store, hash, &where);
    uint32_t value = 0;
    pthread_mutex_lock(&where.shard->lock);
    rl_local_slot_t *slot = find_or_claim(store, &where, hash, window);
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
    /* rounded up so the total is never below the headroom asked for (at most num_shards - 1 more) */
    store->shard_slots = (uint32_t)((num_slots + num_shards - 1) / num_shards);
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
