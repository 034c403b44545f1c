/*
 * One set of status codes for every fallible call in ratelimitd. Library codes
 * (memcached_return_t, libyaml, errno) are translated where they arise and never
 * cross a module boundary. rl_strerror() is backed by a table indexed by the code,
 * so the two cannot drift apart.
 */
#ifndef RATELIMITD_ERROR_H
#define RATELIMITD_ERROR_H

enum {
    RL_OK = 0,
    RL_ERR_NOMEM = -1,
    RL_ERR_INVALID = -2,          /* bad argument or value */
    RL_ERR_KEY_MISSING = -3,      /* API key header absent or empty */
    RL_ERR_KEY_INVALID = -4,      /* API key too long or with bytes outside 0x21-0x7E */
    RL_ERR_BACKEND_TIMEOUT = -5,  /* no reply within timeout_ms */
    RL_ERR_BACKEND_DOWN = -6,     /* node unreachable, ejected, or connection lost */
    RL_ERR_BACKEND_PROTOCOL = -7, /* garbage, truncated or unexpected reply */
    RL_ERR_BACKEND_OVERLOAD = -8, /* too many requests pending on a node */
    RL_ERR_STORE_FULL = -9,       /* local store has no free slot for a new counter */
    RL_ERR_CONFIG = -10,          /* configuration rejected */
    RL_ERR_IO = -11,              /* system call failed */
    RL_ERR_NEED_MORE = -12,       /* parser needs more bytes */
    RL_ERR_CANCELLED = -13,       /* operation cancelled by its owner */
    RL_ERR__COUNT = 14
};

/* Returns a static, human-readable description of `code` (never NULL). */
const char *rl_strerror(int code);

#endif
