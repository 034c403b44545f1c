/*
 * libFuzzer target for the API key path: validation, hash, base64url and the memcached key, on
 * arbitrary bytes. Input layout: byte 0 picks the prefix length (0..65, one past the configured
 * maximum), then the prefix, then 8 bytes of window (any int64, negative and extreme ones too),
 * then the key. Checks what the handler and the store rely on: validation agrees with the rule
 * in apikey.h, the encoding round-trips, and the memcached key is exactly the promised bytes and
 * never written past its length or its buffer.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "ratelimitd/apikey.h"
#include "ratelimitd/error.h"

#define MAX_PREFIX 65

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int expected_validity(const uint8_t *key, size_t len)
{
    if (len == 0)
        return RL_ERR_KEY_MISSING;
    if (len > RL_APIKEY_MAX_LEN)
        return RL_ERR_KEY_INVALID;
    for (size_t i = 0; i < len; ++i) {
        if (key[i] < 0x21 || key[i] > 0x7e)
            return RL_ERR_KEY_INVALID;
    }
    return RL_OK;
}

static int base64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes the 22 characters back into 16 bytes; every character must be in the alphabet. */
static void check_roundtrip(const char encoded[RL_KEYHASH_ENCODED_LEN], const rl_keyhash_t *hash)
{
    uint8_t decoded[16];
    size_t out = 0;
    uint32_t bits = 0;
    int nbits = 0;
    for (size_t i = 0; i < RL_KEYHASH_ENCODED_LEN; ++i) {
        int v = base64url_value(encoded[i]);
        assert(v >= 0);
        bits = bits << 6 | (uint32_t)v;
        nbits += 6;
        if (nbits >= 8) {
            nbits -= 8;
            decoded[out++] = (uint8_t)(bits >> nbits);
        }
    }
    assert(out == 16);
    assert((bits & ((1u << nbits) - 1)) == 0); /* unpadded form leaves no stray bits */
    assert(memcmp(decoded, hash->bytes, 16) == 0);
}

static size_t decimal_len(int64_t window)
{
    uint64_t magnitude = window < 0 ? 0 - (uint64_t)window : (uint64_t)window;
    size_t len = window < 0 ? 2 : 1;
    while (magnitude >= 10) {
        magnitude /= 10;
        ++len;
    }
    return len;
}

static int64_t parse_decimal(const char *p, size_t len)
{
    int negative = len > 0 && p[0] == '-';
    uint64_t magnitude = 0;
    for (size_t i = negative; i < len; ++i) {
        assert(p[i] >= '0' && p[i] <= '9');
        magnitude = magnitude * 10 + (uint64_t)(p[i] - '0');
    }
    return negative ? (int64_t)(0 - magnitude) : (int64_t)magnitude;
}

static void check_mckey(const char *prefix, size_t prefix_len, const rl_keyhash_t *hash, int64_t window)
{
    char buf[RL_MCKEY_MAX_LEN + MAX_PREFIX + 1];
    memset(buf, '#', sizeof(buf));
    size_t expected = prefix_len + RL_KEYHASH_ENCODED_LEN + 1 + decimal_len(window);
    size_t len = rl_mckey_format(buf, RL_MCKEY_MAX_LEN, prefix, prefix_len, hash, window);
    if (expected > RL_MCKEY_MAX_LEN) {
        assert(len == 0);
        assert(prefix_len > 64); /* every configurable prefix fits with any window */
    } else {
        assert(len == expected);
    }
    len = rl_mckey_format(buf, sizeof(buf) - 1, prefix, prefix_len, hash, window);
    assert(len == expected);
    assert(buf[len] == '#');
    assert(memcmp(buf, prefix, prefix_len) == 0);
    check_roundtrip(buf + prefix_len, hash);
    assert(buf[prefix_len + RL_KEYHASH_ENCODED_LEN] == ':');
    size_t digits_at = prefix_len + RL_KEYHASH_ENCODED_LEN + 1;
    assert(parse_decimal(buf + digits_at, len - digits_at) == window);

    /* one byte short: nothing */
    char small[RL_MCKEY_MAX_LEN + MAX_PREFIX + 1];
    memset(small, '#', sizeof(small));
    assert(rl_mckey_format(small, expected - 1, prefix, prefix_len, hash, window) == 0);
    for (size_t i = 0; i < sizeof(small); ++i)
        assert(small[i] == '#');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t prefix_len = data[0] % (MAX_PREFIX + 1);
    ++data, --size;
    if (prefix_len > size)
        prefix_len = size;
    const char *prefix = (const char *)data;
    data += prefix_len, size -= prefix_len;
    int64_t window = 0;
    if (size >= 8) {
        memcpy(&window, data, 8);
        data += 8, size -= 8;
    }
    const char *key = (const char *)data;

    assert(rl_apikey_validate(key, size) == expected_validity(data, size));

    rl_hash_secret_t secret;
    rl_hash_secret_init(&secret, prefix, prefix_len);
    rl_keyhash_t hash, again;
    rl_apikey_hash(&secret, key, size, &hash);
    rl_apikey_hash(&secret, key, size, &again);
    assert(memcmp(hash.bytes, again.bytes, 16) == 0);

    char encoded[RL_KEYHASH_ENCODED_LEN];
    rl_keyhash_encode(&hash, encoded);
    check_roundtrip(encoded, &hash);

    check_mckey(prefix, prefix_len, &hash, window);
    return 0;
}
