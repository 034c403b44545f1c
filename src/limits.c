/*
 * The limits in force: an immutable open-addressing hash table from raw API key to its tier's
 * limit and policy name, built once per (re)load and shared by every loop thread.
 *
 * Why this layout: the lookup runs on every request, so it must not allocate, lock or chase
 * more pointers than needed. Linear probing over a power-of-two array kept at most half full
 * gives short, cache-friendly probe runs; the table never changes after creation, so readers need
 * no synchronisation at all. The keys come from the operator's file, not from clients, so a
 * simple unseeded FNV-1a hash is enough: clients can only probe, never insert.
 * Lifetime is a C11 atomic reference count; the last rl_limits_release() frees everything.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "ratelimitd/limits.h"

#define RL_LIMITS_DEFAULT_POLICY "default"

typedef struct st_rl_limits_slot_t {
    const char *key; /* NULL: empty slot */
    size_t len;
    const rl_limit_t *limit; /* the tier's entry in rl_limits_t.tiers */
} rl_limits_slot_t;

struct st_rl_limits_t {
    atomic_size_t refs;
    rl_unknown_keys_t unknown_keys;
    rl_limit_t default_limit;
    rl_limit_t *tiers; /* policy strings owned here */
    size_t num_tiers;
    rl_limits_slot_t *slots;
    size_t mask; /* number of slots - 1 */
    char **keys; /* owned copies of the listed keys */
    size_t num_keys;
};

static uint64_t hash_key(const char *key, size_t len)
{
    uint64_t hash = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; ++i) {
        hash ^= (unsigned char)key[i];
        hash *= 0x100000001b3u;
    }
    return hash;
}

static rl_limits_slot_t *find_slot(const rl_limits_t *limits, const char *key, size_t len)
{
    for (size_t i = (size_t)hash_key(key, len) & limits->mask;; i = (i + 1) & limits->mask) {
        rl_limits_slot_t *slot = &limits->slots[i];
        if (slot->key == NULL || (slot->len == len && memcmp(slot->key, key, len) == 0))
            return slot;
    }
}

static void destroy(rl_limits_t *limits)
{
    for (size_t i = 0; i < limits->num_tiers; ++i)
        free((char *)limits->tiers[i].policy);
    free(limits->tiers);
    for (size_t i = 0; i < limits->num_keys; ++i)
        free(limits->keys[i]);
    free(limits->keys);
    free(limits->slots);
    free(limits);
}

static int copy_tiers(rl_limits_t *limits, const rl_config_t *config)
{
    size_t n = config->limits.num_tiers;
    if (n != 0 && (limits->tiers = calloc(n, sizeof(*limits->tiers))) == NULL)
        return 0;
    for (size_t i = 0; i < n; ++i) {
        const rl_tier_config_t *tier = &config->limits.tiers[i];
        char *policy = strdup(tier->name);
        if (policy == NULL)
            return 0;
        limits->tiers[limits->num_tiers++] =
            (rl_limit_t){.limit = tier->limit, .policy = policy, .policy_len = strlen(policy)};
    }
    return 1;
}

static int insert_keys(rl_limits_t *limits, const rl_config_t *config)
{
    size_t n = config->limits.num_keys, num_slots = 16;
    /* at most half full: unlisted keys, the common probe, stop at the first empty slot */
    while (num_slots < n * 2)
        num_slots *= 2;
    limits->slots = calloc(num_slots, sizeof(*limits->slots));
    if (limits->slots == NULL || (n != 0 && (limits->keys = calloc(n, sizeof(*limits->keys))) == NULL))
        return 0;
    limits->mask = num_slots - 1;
    for (size_t i = 0; i < n; ++i) {
        const rl_key_config_t *entry = &config->limits.keys[i];
        /* the config guarantees both; a stale index must not become an out-of-bounds read */
        if (entry->api_key == NULL || entry->tier_index >= limits->num_tiers)
            continue;
        size_t len = strlen(entry->api_key);
        rl_limits_slot_t *slot = find_slot(limits, entry->api_key, len);
        if (slot->key != NULL)
            continue; /* a repeated key keeps its first tier, as the config parser does */
        if ((limits->keys[limits->num_keys] = strdup(entry->api_key)) == NULL)
            return 0;
        *slot = (rl_limits_slot_t){
            .key = limits->keys[limits->num_keys++], .len = len, .limit = &limits->tiers[entry->tier_index]};
    }
    return 1;
}

rl_limits_t *rl_limits_create(const rl_config_t *config)
{
    if (config == NULL)
        return NULL;
    rl_limits_t *limits = calloc(1, sizeof(*limits));
    if (limits == NULL)
        return NULL;
    atomic_init(&limits->refs, 1);
    limits->unknown_keys = config->limits.unknown_keys;
    limits->default_limit = (rl_limit_t){.limit = config->limits.default_limit,
                                         .policy = RL_LIMITS_DEFAULT_POLICY,
                                         .policy_len = sizeof(RL_LIMITS_DEFAULT_POLICY) - 1};
    if (!copy_tiers(limits, config) || !insert_keys(limits, config)) {
        destroy(limits);
        return NULL;
    }
    return limits;
}

rl_limit_lookup_t rl_limits_lookup(const rl_limits_t *limits, const char *key, size_t len, rl_limit_t *out)
{
    const rl_limits_slot_t *slot = find_slot(limits, key, len);
    if (slot->key != NULL) {
        *out = *slot->limit;
        return RL_LIMIT_FOUND;
    }
    if (limits->unknown_keys == RL_UNKNOWN_KEYS_REJECT)
        return RL_LIMIT_REJECTED;
    *out = limits->default_limit;
    return RL_LIMIT_FOUND;
}

void rl_limits_retain(rl_limits_t *limits)
{
    /* a new reference is always taken from an existing one, so no ordering is needed here */
    atomic_fetch_add_explicit(&limits->refs, 1, memory_order_relaxed);
}

void rl_limits_release(rl_limits_t *limits)
{
    if (limits == NULL)
        return;
    /* release/acquire: every thread's last reads of the table happen before the free. acq_rel on
     * the decrement rather than an acquire fence after it: the same ordering (and no extra cost on
     * x86, where the decrement is a full barrier), but one ThreadSanitizer can see, so a TSan build
     * does not report every reload as a race. */
    if (atomic_fetch_sub_explicit(&limits->refs, 1, memory_order_acq_rel) == 1)
        destroy(limits);
}
