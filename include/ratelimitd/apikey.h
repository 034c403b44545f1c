/*
 * API keys: validation of the bytes a client sent, and the keyed 128-bit hash that stands
 * for the key everywhere after the HTTP handler (memcached keys, the deny cache, logs), so no
 * raw key ever leaves the process. The hash is SipHash-2-4 with 128-bit output, keyed by a
 * 16-byte secret derived from `key_hash_secret` (SHA-256, first 16 bytes): instances that share
 * the secret agree on every key's counter; without the secret the hash reveals nothing useful.
 */
#ifndef RATELIMITD_APIKEY_H
#define RATELIMITD_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#define RL_APIKEY_MAX_LEN 256
/* base64url without padding of 16 bytes */
#define RL_KEYHASH_ENCODED_LEN 22
/* prefix + encoded hash + ':' + up to 20 digits; memcached's own limit is 250 */
#define RL_MCKEY_MAX_LEN (64 + RL_KEYHASH_ENCODED_LEN + 1 + 20)

typedef struct st_rl_keyhash_t {
    uint8_t bytes[16];
} rl_keyhash_t;

typedef struct st_rl_hash_secret_t {
    uint8_t bytes[16];
} rl_hash_secret_t;

/*
 * Checks a key as received. Returns RL_OK, RL_ERR_KEY_MISSING (len == 0) or RL_ERR_KEY_INVALID
 * (longer than RL_APIKEY_MAX_LEN or any byte outside 0x21-0x7E). `key` need not be NUL-terminated.
 */
int rl_apikey_validate(const char *key, size_t len);

/* Derives the SipHash key from the configured secret string (any length, may be empty). */
void rl_hash_secret_init(rl_hash_secret_t *secret, const char *text, size_t len);

/* SipHash-2-4-128 of `key` under `secret`. Pure; safe on any thread. */
void rl_apikey_hash(const rl_hash_secret_t *secret, const char *key, size_t len, rl_keyhash_t *out);

/* Writes the base64url (no padding) form of `hash`: exactly RL_KEYHASH_ENCODED_LEN bytes, no NUL. */
void rl_keyhash_encode(const rl_keyhash_t *hash, char out[RL_KEYHASH_ENCODED_LEN]);

/*
 * Formats the memcached key `prefix || encoded hash || ':' || window` into `buf`.
 * Returns its length, or 0 if it does not fit in `cap` (no NUL is written either way).
 */
size_t rl_mckey_format(char *buf, size_t cap, const char *prefix, size_t prefix_len, const rl_keyhash_t *hash,
                       int64_t window);

/* Length of the part of such a key that names the API key alone, `prefix || encoded hash`: the
 * same in every window, so it is what places the key on a memcached node. */
static inline size_t rl_mckey_group_len(size_t prefix_len)
{
    return prefix_len + RL_KEYHASH_ENCODED_LEN;
}

#endif
