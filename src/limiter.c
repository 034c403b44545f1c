/*
 * Windows, decisions and the deny cache: the part of a decision that needs no I/O.
 *
 * The deny cache lets a key that is already over its limit be answered 429 with no backend
 * call until its window ends, which is what keeps an abusive client from costing memcached a
 * round trip per request. It is owned by one loop thread, so it takes no lock. Layout: a
 * power-of-two array of 4-way sets; a key's set is picked by the first 8 bytes of its hash
 * (uniform, since the hash is SipHash), and a way matches on the full 16 bytes and the window.
 * Nothing is ever deleted: an entry of an earlier window (or one stamped far ahead by a wall
 * clock that was set back) simply stops matching and is the first to be overwritten. A set
 * full of current-window denials evicts round-robin; the evicted key costs one backend call,
 * after which it is cached again.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ratelimitd/limiter.h"

#define RL_MS_PER_WINDOW 1000
#define RL_DENY_CACHE_WAYS 4
#define RL_DENY_CACHE_MIN_SLOTS 64
/* Never a real window (those are Unix seconds), so an unused way never matches. */
#define RL_DENY_CACHE_UNUSED INT64_MIN

rl_window_t rl_window_at(uint64_t now_ms)
{
    rl_window_t w = {
        .window = (int64_t)(now_ms / RL_MS_PER_WINDOW),
        .reset_ms = (uint32_t)(RL_MS_PER_WINDOW - now_ms % RL_MS_PER_WINDOW),
    };
    return w;
}

rl_window_t rl_window_seen_at(int64_t window, uint64_t now_ms)
{
    rl_window_t w = {.window = window, .reset_ms = RL_MS_PER_WINDOW};
    int64_t end_ms = (window + 1) * RL_MS_PER_WINDOW;
    if ((int64_t)now_ms >= end_ms)
        w.reset_ms = 0;
    else if (end_ms - (int64_t)now_ms < RL_MS_PER_WINDOW)
        w.reset_ms = (uint32_t)(end_ms - (int64_t)now_ms);
    return w;
}

/* Whole seconds a denied client should wait: the rest of the window rounded up, never 0. */
static uint32_t retry_after_of(const rl_window_t *window)
{
    uint32_t secs = (window->reset_ms + RL_MS_PER_WINDOW - 1) / RL_MS_PER_WINDOW;
    return secs == 0 ? 1 : secs;
}

rl_decision_t rl_decide(uint64_t count, uint32_t limit, const rl_window_t *window)
{
    bool allowed = count <= limit;
    rl_decision_t d = {
        .allowed = allowed,
        .limit = limit,
        .remaining = allowed ? (uint32_t)(limit - count) : 0,
        .retry_after = retry_after_of(window),
    };
    return d;
}

rl_decision_t rl_decide_denied(uint32_t limit, const rl_window_t *window)
{
    rl_decision_t d = {.allowed = false, .limit = limit, .remaining = 0, .retry_after = retry_after_of(window)};
    return d;
}

/* ---- deny cache ---- */

typedef struct st_rl_deny_entry_t {
    rl_keyhash_t hash;
    int64_t window;
} rl_deny_entry_t;

typedef struct st_rl_deny_set_t {
    rl_deny_entry_t ways[RL_DENY_CACHE_WAYS];
    uint8_t next_victim; /* round-robin among ways when all hold the current window */
} rl_deny_set_t;

struct st_rl_deny_cache_t {
    size_t set_mask;
    /* The newest window anything was denied in. Until a key is denied in the current window a
     * probe cannot hit, and skipping it saves a likely cache miss on every admitted request. */
    int64_t newest_window;
    rl_deny_set_t sets[];
};

static size_t round_up_pow2(size_t n)
{
    size_t p = RL_DENY_CACHE_MIN_SLOTS;
    while (p < n && p <= SIZE_MAX / 2)
        p *= 2;
    return p;
}

rl_deny_cache_t *rl_deny_cache_create(size_t slots)
{
    size_t num_sets = round_up_pow2(slots) / RL_DENY_CACHE_WAYS;
    if (num_sets > (SIZE_MAX - sizeof(rl_deny_cache_t)) / sizeof(rl_deny_set_t))
        return NULL;
    rl_deny_cache_t *cache = malloc(sizeof(*cache) + num_sets * sizeof(rl_deny_set_t));
    if (cache == NULL)
        return NULL;
    cache->set_mask = num_sets - 1;
    rl_deny_cache_clear(cache);
    return cache;
}

void rl_deny_cache_clear(rl_deny_cache_t *cache)
{
    cache->newest_window = RL_DENY_CACHE_UNUSED;
    for (size_t i = 0; i <= cache->set_mask; ++i) {
        rl_deny_set_t *set = &cache->sets[i];
        memset(set, 0, sizeof(*set));
        for (size_t w = 0; w != RL_DENY_CACHE_WAYS; ++w)
            set->ways[w].window = RL_DENY_CACHE_UNUSED;
    }
}

void rl_deny_cache_destroy(rl_deny_cache_t *cache)
{
    free(cache);
}

static inline size_t set_index(const rl_deny_cache_t *cache, const rl_keyhash_t *hash)
{
    uint64_t head;
    memcpy(&head, hash->bytes, sizeof(head));
    return (size_t)head & cache->set_mask;
}

static inline bool entry_is(const rl_deny_entry_t *entry, const rl_keyhash_t *hash, int64_t window)
{
    return entry->window == window && memcmp(entry->hash.bytes, hash->bytes, sizeof(hash->bytes)) == 0;
}

bool rl_deny_cache_contains(const rl_deny_cache_t *cache, const rl_keyhash_t *hash, int64_t window)
{
    if (window > cache->newest_window)
        return false;
    const rl_deny_set_t *set = &cache->sets[set_index(cache, hash)];
    for (size_t w = 0; w != RL_DENY_CACHE_WAYS; ++w) {
        if (entry_is(&set->ways[w], hash, window))
            return true;
    }
    return false;
}

void rl_deny_cache_add(rl_deny_cache_t *cache, const rl_keyhash_t *hash, int64_t window, int64_t current)
{
    if (window < current)
        return;
    if (rl_window_is_dead(cache->newest_window, window))
        cache->newest_window = window;
    rl_deny_set_t *set = &cache->sets[set_index(cache, hash)];
    size_t victim = 0;
    for (size_t w = 0; w != RL_DENY_CACHE_WAYS; ++w) {
        if (entry_is(&set->ways[w], hash, window))
            return;
        if (rl_window_age(set->ways[w].window, window) < rl_window_age(set->ways[victim].window, window))
            victim = w;
    }
    /*
     * A denial decided just before a window ended can arrive after newer ones: it is worth less
     * than any of them (its window is nearly over), so it never displaces a newer window.
     */
    int64_t victim_age = rl_window_age(set->ways[victim].window, window);
    if (victim_age > window)
        return;
    if (victim_age == window) {
        /* no older way to reuse: rotate over the ways of this same window only (the oldest is
         * one of them), since the others hold newer windows */
        for (size_t i = 0; i != RL_DENY_CACHE_WAYS; ++i) {
            size_t w = (set->next_victim + i) % RL_DENY_CACHE_WAYS;
            if (set->ways[w].window == window) {
                victim = w;
                break;
            }
        }
        set->next_victim = (uint8_t)((victim + 1) % RL_DENY_CACHE_WAYS);
    }
    set->ways[victim].hash = *hash;
    set->ways[victim].window = window;
}
