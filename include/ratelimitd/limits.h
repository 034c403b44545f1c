/*
 * The limits in force: tiers, the key -> tier table and the default for unlisted keys.
 * Built from a config, then immutable and shared by all loop threads; a SIGHUP reload builds a
 * new one and each thread swaps its pointer on its own loop. Lifetime is a reference count:
 * the creator holds one reference, each thread that adopts it takes one.
 */
#ifndef RATELIMITD_LIMITS_H
#define RATELIMITD_LIMITS_H

#include <stddef.h>
#include <stdint.h>
#include "ratelimitd/config.h"

typedef struct st_rl_limits_t rl_limits_t;

typedef enum {
    RL_LIMIT_FOUND = 0, /* key listed, or unlisted with unknown_keys: allow */
    RL_LIMIT_REJECTED   /* key unlisted and unknown_keys: reject */
} rl_limit_lookup_t;

typedef struct st_rl_limit_t {
    uint32_t limit;     /* requests per second */
    const char *policy; /* tier name, or "default"; owned by the rl_limits_t */
    size_t policy_len;
} rl_limit_t;

/* Builds the table from `config` (which is not retained). Returns NULL on allocation failure. */
rl_limits_t *rl_limits_create(const rl_config_t *config);
/* Lookup of a raw (already validated) key. Pure, lock-free, any thread. */
rl_limit_lookup_t rl_limits_lookup(const rl_limits_t *limits, const char *key, size_t len, rl_limit_t *out);
void rl_limits_retain(rl_limits_t *limits);
/* Drops one reference and frees on the last one; accepts NULL. Thread-safe. */
void rl_limits_release(rl_limits_t *limits);

#endif
