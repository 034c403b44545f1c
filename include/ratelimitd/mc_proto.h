/*
 * The memcached meta text protocol, as far as ratelimitd speaks it: one command to encode
 * (`ma` = arithmetic with auto-create and a TTL), one probe (`mn`), and an incremental reply
 * parser. Pure functions over explicit lengths: no I/O, no allocation, no NUL hunting, so the
 * same code runs on the event loop, in unit tests and under the fuzzer.
 *
 * Replies come from the network and are hostile: the parser never reads past `len`, never asks
 * for more than RL_MC_MAX_LINE bytes of a header line, and rejects anything it does not fully
 * understand (RL_ERR_BACKEND_PROTOCOL) rather than guessing.
 */
#ifndef RATELIMITD_MC_PROTO_H
#define RATELIMITD_MC_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* memcached's own key limit */
#define RL_MC_MAX_KEY_LEN 250
/* Longest header line accepted; a longer one without CRLF is garbage, not something to buffer. */
#define RL_MC_MAX_LINE 512
/* A counter is a uint64: at most 20 decimal digits. */
#define RL_MC_MAX_VALUE_DIGITS 20
/* Upper bound of an encoded increment: "ma " key " N" ttl " J1 v O" opaque "\r\n". */
#define RL_MC_INCR_MAX_LEN (3 + RL_MC_MAX_KEY_LEN + 2 + 10 + 7 + 10 + 2)

typedef enum {
    RL_MC_REPLY_VA = 0, /* value follows: the counter after the increment */
    RL_MC_REPLY_HD,     /* success, no value */
    RL_MC_REPLY_NF,     /* not found */
    RL_MC_REPLY_NS,     /* not stored */
    RL_MC_REPLY_EX,     /* exists (CAS mismatch) */
    RL_MC_REPLY_MN,     /* answer to `mn` */
    RL_MC_REPLY_ERROR   /* ERROR, CLIENT_ERROR ..., SERVER_ERROR ... */
} rl_mc_reply_kind_t;

typedef struct st_rl_mc_reply_t {
    rl_mc_reply_kind_t kind;
    bool has_value; /* VA only */
    uint64_t value;
    bool has_opaque; /* an O<digits> flag was echoed */
    uint32_t opaque;
} rl_mc_reply_t;

/*
 * Writes `ma <key> N<ttl_s> J1 v O<opaque>\r\n` into `buf` (no NUL): increment by one, creating
 * the key with value 1 and TTL `ttl_s` if absent (N sets the TTL only on create), return the new
 * value. Returns the length written, or 0 if `cap` is too small or the key is empty, longer than
 * RL_MC_MAX_KEY_LEN, or holds a byte outside 0x21-0x7E (which would split the command).
 */
size_t rl_mc_encode_incr(char *buf, size_t cap, const char *key, size_t key_len, uint32_t ttl_s, uint32_t opaque);

/* Writes `mn\r\n` into `buf`. Returns 4, or 0 if `cap` < 4. */
size_t rl_mc_encode_noop(char *buf, size_t cap);

/*
 * Parses the reply at the start of `buf` (`len` bytes, not NUL-terminated).
 * Returns RL_OK with *reply filled and *consumed = the reply's length in bytes (<= len);
 * RL_ERR_NEED_MORE if the bytes so far are a valid but incomplete reply (call again with more);
 * RL_ERR_BACKEND_PROTOCOL if they can never become a valid reply. *reply and *consumed are only
 * written on RL_OK.
 */
int rl_mc_parse_reply(const char *buf, size_t len, rl_mc_reply_t *reply, size_t *consumed);

#endif
