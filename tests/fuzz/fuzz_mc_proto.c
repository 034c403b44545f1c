/*
 * libFuzzer target for the memcached reply parser: consumes replies from arbitrary bytes the
 * way the connection does (parse, consume, repeat) until the parser wants more or rejects them.
 * Checks the contract the connection relies on: progress on every RL_OK, never past the input.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include "ratelimitd/error.h"
#include "ratelimitd/mc_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    size_t at = 0;
    while (at < size) {
        rl_mc_reply_t reply;
        size_t consumed = 0;
        int ret = rl_mc_parse_reply(buf + at, size - at, &reply, &consumed);
        if (ret != RL_OK) {
            assert(ret == RL_ERR_NEED_MORE || ret == RL_ERR_BACKEND_PROTOCOL);
            /* NEED_MORE is only allowed while a header line could still end */
            assert(ret != RL_ERR_NEED_MORE || size - at < RL_MC_MAX_LINE + 2 + RL_MC_MAX_VALUE_DIGITS + 2);
            break;
        }
        assert(consumed > 0 && consumed <= size - at);
        assert(reply.kind <= RL_MC_REPLY_ERROR);
        assert(!reply.has_value || reply.kind == RL_MC_REPLY_VA);
        at += consumed;
    }
    /* encoding never overruns its bound, whatever the key */
    char out[RL_MC_INCR_MAX_LEN];
    size_t key_len = size < RL_MC_MAX_KEY_LEN + 8 ? size : RL_MC_MAX_KEY_LEN + 8;
    size_t len = rl_mc_encode_incr(out, sizeof(out), buf, key_len, 3, (uint32_t)size);
    assert(len <= sizeof(out));
    return 0;
}
