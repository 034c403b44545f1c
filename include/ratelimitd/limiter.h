/*
 * The pure core of a decision: the window a request falls in, what to answer for a counter
 * value, and the per-thread deny cache of keys already over their limit in this window.
 * Everything takes time as an argument and does no I/O, so it is tested without clocks.
 * Windows are wall-clock Unix seconds (instances must agree on them).
 */
#ifndef RATELIMITD_LIMITER_H
#define RATELIMITD_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ratelimitd/apikey.h"

typedef struct st_rl_window_t {
    int64_t window;    /* Unix second */
    uint32_t reset_ms; /* milliseconds until the window ends, 0..1000 (0 once it has ended) */
} rl_window_t;

typedef struct st_rl_decision_t {
    bool allowed;
    uint32_t limit;
    uint32_t remaining;   /* 0 when not allowed */
    uint32_t retry_after; /* whole seconds until the window ends, >= 1; meaningful when !allowed */
} rl_decision_t;

/* Window of the wall-clock instant `now_ms` (milliseconds since the epoch). */
rl_window_t rl_window_at(uint64_t now_ms);

/*
 * Window `window` as seen at `now_ms`, which may be later: a decision answered after waiting for
 * the backend tells the client how long is left then, not when the request arrived.
 */
rl_window_t rl_window_seen_at(int64_t window, uint64_t now_ms);

/*
 * How far ahead of the window being counted another thread's window can be: a second across a
 * boundary, and one more for a loop turn that ran late. Anything further ahead was stamped by a
 * wall clock that jumped and was set back.
 */
#define RL_WINDOW_MAX_AHEAD 2

/*
 * The age of a counter or cached denial stamped with window `stamped`, as seen when counting in
 * `window`, for choosing which slot to reuse (lowest first): its window, except that a stamp of a
 * clock that was set back ages to INT64_MIN, so that its slot does not stay taken until real time
 * catches up with it.
 */
static inline int64_t rl_window_age(int64_t stamped, int64_t window)
{
    return stamped > window + RL_WINDOW_MAX_AHEAD ? INT64_MIN : stamped;
}

/* Whether such a counter or denial is dead, its slot free to reuse: older than `window`. */
static inline bool rl_window_is_dead(int64_t stamped, int64_t window)
{
    return rl_window_age(stamped, window) < window;
}

/* Decision for a request that made the window's counter reach `count` (>= 1). */
rl_decision_t rl_decide(uint64_t count, uint32_t limit, const rl_window_t *window);

/* Decision when the request is known to be over its limit without counting (deny cache hit). */
rl_decision_t rl_decide_denied(uint32_t limit, const rl_window_t *window);

/*
 * Deny cache: fixed-size, set-associative, per thread (no locks). An entry holds a key hash and
 * the window in which it was denied; entries of past windows are dead and get overwritten.
 * A miss only costs a backend call, so collisions evict rather than grow.
 */
typedef struct st_rl_deny_cache_t rl_deny_cache_t;

/* `slots` is rounded up to a power of two (minimum 64). Returns NULL on allocation failure. */
rl_deny_cache_t *rl_deny_cache_create(size_t slots);
void rl_deny_cache_destroy(rl_deny_cache_t *cache);
bool rl_deny_cache_contains(const rl_deny_cache_t *cache, const rl_keyhash_t *hash, int64_t window);
/*
 * Caches that `hash` was denied in `window`. `current` is the window of the wall clock now: the
 * denial of a window that has ended is dropped, since no request will ask for it (and one that
 * comes several windows late, as a timeout_ms of up to a minute allows, must not look like a clock
 * that was set back).
 */
void rl_deny_cache_add(rl_deny_cache_t *cache, const rl_keyhash_t *hash, int64_t window, int64_t current);
/* Forgets every denial: after a reload, a key's new limit may admit what the old one denied. */
void rl_deny_cache_clear(rl_deny_cache_t *cache);

#endif
