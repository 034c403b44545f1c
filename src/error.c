/*
 * Status code descriptions. The table is indexed by the negated code, so adding a code
 * without its text fails the static assertion below rather than printing garbage.
 */
#include <stddef.h>
#include "ratelimitd/error.h"

static const char *const descriptions[] = {
    [0] = "ok",
    [-RL_ERR_NOMEM] = "out of memory",
    [-RL_ERR_INVALID] = "invalid argument",
    [-RL_ERR_KEY_MISSING] = "API key missing",
    [-RL_ERR_KEY_INVALID] = "API key invalid",
    [-RL_ERR_BACKEND_TIMEOUT] = "backend timeout",
    [-RL_ERR_BACKEND_DOWN] = "backend unreachable",
    [-RL_ERR_BACKEND_PROTOCOL] = "backend protocol error",
    [-RL_ERR_BACKEND_OVERLOAD] = "backend overloaded",
    [-RL_ERR_STORE_FULL] = "local store full",
    [-RL_ERR_CONFIG] = "configuration error",
    [-RL_ERR_IO] = "I/O error",
    [-RL_ERR_NEED_MORE] = "incomplete input",
    [-RL_ERR_CANCELLED] = "cancelled",
};

_Static_assert(sizeof(descriptions) / sizeof(descriptions[0]) == RL_ERR__COUNT, "one description per status code");

const char *rl_strerror(int code)
{
    if (code > 0 || code <= -RL_ERR__COUNT || descriptions[-code] == NULL)
        return "unknown error";
    return descriptions[-code];
}
