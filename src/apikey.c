/*
 * API keys: syntax check, keyed hash, and the memcached key built from the hash.
 *
 * The hash is SipHash-2-4 with 128-bit output, written here from the published algorithm
 * (Aumasson & Bernstein) rather than taken from a library: OpenSSL 3.0 only offers it through
 * the EVP_MAC machinery, which allocates a context per call, and this runs once per request.
 * 128 bits make an accidental collision between two keys (which would make them share a
 * counter) negligible at any key count; the secret key makes the hash useless to anyone who
 * reads memcached or the logs but lacks `key_hash_secret`.
 *
 * rl_mckey_format is on the request path too, so it copies bytes and converts the window by
 * hand instead of going through snprintf's format parser.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/sha.h>
#include "ratelimitd/apikey.h"
#include "ratelimitd/error.h"
#include "ratelimitd/log.h"

/* Longest decimal int64: 19 digits and a sign. */
#define RL_WINDOW_MAX_DIGITS 20

int rl_apikey_validate(const char *key, size_t len)
{
    if (len == 0)
        return RL_ERR_KEY_MISSING;
    if (len > RL_APIKEY_MAX_LEN)
        return RL_ERR_KEY_INVALID;
    for (size_t i = 0; i != len; ++i) {
        uint8_t c = (uint8_t)key[i];
        if (c < 0x21 || c > 0x7e)
            return RL_ERR_KEY_INVALID;
    }
    return RL_OK;
}

void rl_hash_secret_init(rl_hash_secret_t *secret, const char *text, size_t len)
{
    uint8_t digest[SHA256_DIGEST_LENGTH];
    /*
     * OpenSSL 3 routes SHA256() through EVP, which can only fail if libcrypto itself is broken
     * (no default provider, no memory at start-up). A zero secret would silently make every
     * instance's hashes guessable, and this void API cannot report an error, so stop instead.
     */
    if (SHA256((const unsigned char *)text, len, digest) == NULL) {
        rl_log_error("apikey", "SHA-256 unavailable in libcrypto; cannot derive key_hash_secret");
        abort();
    }
    memcpy(secret->bytes, digest, sizeof(secret->bytes));
}

/* ---- SipHash-2-4-128 ---- */

typedef struct st_rl_sipstate_t {
    uint64_t v0, v1, v2, v3;
} rl_sipstate_t;

static inline uint64_t rotl64(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof(x));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return x;
}

static inline void store_le64(uint8_t *p, uint64_t x)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    memcpy(p, &x, sizeof(x));
}

static inline void sip_round(rl_sipstate_t *s)
{
    s->v0 += s->v1;
    s->v1 = rotl64(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = rotl64(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl64(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = rotl64(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = rotl64(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = rotl64(s->v2, 32);
}

/* One message word: c = 2 compression rounds. */
static inline void sip_compress(rl_sipstate_t *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

/* d = 4 finalization rounds, after `tag` is folded into v2. */
static inline uint64_t sip_finalize(rl_sipstate_t *s, uint64_t tag)
{
    s->v2 ^= tag;
    for (int i = 0; i != 4; ++i)
        sip_round(s);
    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

void rl_apikey_hash(const rl_hash_secret_t *secret, const char *key, size_t len, rl_keyhash_t *out)
{
    const uint8_t *in = (const uint8_t *)key;
    uint64_t k0 = load_le64(secret->bytes), k1 = load_le64(secret->bytes + 8);
    /* the 128-bit variant differs from SipHash-2-4-64 only by the 0xee in v1 and the 0xdd pass */
    rl_sipstate_t s = {
        .v0 = k0 ^ 0x736f6d6570736575ull,
        .v1 = k1 ^ 0x646f72616e646f6dull ^ 0xee,
        .v2 = k0 ^ 0x6c7967656e657261ull,
        .v3 = k1 ^ 0x7465646279746573ull,
    };

    size_t full = len - len % 8;
    for (size_t i = 0; i != full; i += 8)
        sip_compress(&s, load_le64(in + i));

    /* last word: the remaining 0..7 bytes, little-endian, with the length's low byte on top */
    uint64_t last = (uint64_t)(len & 0xff) << 56;
    for (size_t i = 0; i != len % 8; ++i)
        last |= (uint64_t)in[full + i] << (8 * i);
    sip_compress(&s, last);

    store_le64(out->bytes, sip_finalize(&s, 0xee));
    s.v1 ^= 0xdd;
    store_le64(out->bytes + 8, sip_finalize(&s, 0));
}

/* ---- encodings ---- */

static const char base64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void rl_keyhash_encode(const rl_keyhash_t *hash, char out[RL_KEYHASH_ENCODED_LEN])
{
    const uint8_t *in = hash->bytes;
    char *dst = out;
    /* 16 bytes = five 3-byte groups (4 characters each) and one byte left over (2 characters) */
    for (size_t i = 0; i != 15; i += 3) {
        uint32_t group = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *dst++ = base64url[group >> 18];
        *dst++ = base64url[(group >> 12) & 63];
        *dst++ = base64url[(group >> 6) & 63];
        *dst++ = base64url[group & 63];
    }
    *dst++ = base64url[in[15] >> 2];
    *dst++ = base64url[(in[15] & 3) << 4];
    assert(dst == out + RL_KEYHASH_ENCODED_LEN);
}

/* Writes `window` in decimal into `digits` (right-aligned in the buffer); returns its start. */
static char *format_window(char digits[RL_WINDOW_MAX_DIGITS], int64_t window)
{
    char *p = digits + RL_WINDOW_MAX_DIGITS;
    /* magnitude in unsigned arithmetic so INT64_MIN does not overflow */
    uint64_t magnitude = window < 0 ? 0 - (uint64_t)window : (uint64_t)window;
    do {
        *--p = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude != 0);
    if (window < 0)
        *--p = '-';
    return p;
}

size_t rl_mckey_format(char *buf, size_t cap, const char *prefix, size_t prefix_len, const rl_keyhash_t *hash,
                       int64_t window)
{
    char digits[RL_WINDOW_MAX_DIGITS];
    const char *window_text = format_window(digits, window);
    size_t window_len = (size_t)(digits + RL_WINDOW_MAX_DIGITS - window_text);
    size_t fixed = RL_KEYHASH_ENCODED_LEN + 1 + window_len;
    if (fixed > cap || prefix_len > cap - fixed)
        return 0;

    char *p = buf;
    if (prefix_len != 0) /* an empty prefix may come as NULL, which memcpy must not see */
        memcpy(p, prefix, prefix_len);
    p += prefix_len;
    rl_keyhash_encode(hash, p);
    p += RL_KEYHASH_ENCODED_LEN;
    *p++ = ':';
    memcpy(p, window_text, window_len);
    p += window_len;
    return (size_t)(p - buf);
}
