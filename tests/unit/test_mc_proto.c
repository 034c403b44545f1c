/* Unit tests for the meta protocol encoder and the incremental reply parser (src/mc_proto.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "ratelimitd/error.h"
#include "ratelimitd/mc_proto.h"

static int parse(const char *s, size_t len, rl_mc_reply_t *reply, size_t *consumed)
{
    return rl_mc_parse_reply(s, len, reply, consumed);
}

#define PARSE_STR(s, reply, consumed) parse((s), strlen(s), (reply), (consumed))

static void test_encode_incr_exact_bytes(void **state)
{
    (void)state;
    char buf[RL_MC_INCR_MAX_LEN];
    size_t len = rl_mc_encode_incr(buf, sizeof(buf), "rl:abc:1795412345", 17, 3, 77);
    const char expected[] = "ma rl:abc:1795412345 N3 J1 v O77\r\n";
    assert_int_equal(len, sizeof(expected) - 1);
    assert_memory_equal(buf, expected, len);

    len = rl_mc_encode_incr(buf, sizeof(buf), "k", 1, 3600, 0);
    assert_int_equal(len, strlen("ma k N3600 J1 v O0\r\n"));
    assert_memory_equal(buf, "ma k N3600 J1 v O0\r\n", len);

    len = rl_mc_encode_incr(buf, sizeof(buf), "k", 1, UINT32_MAX, UINT32_MAX);
    assert_memory_equal(buf, "ma k N4294967295 J1 v O4294967295\r\n", len);
}

static void test_encode_incr_rejects_bad_keys_and_small_buffers(void **state)
{
    (void)state;
    char buf[RL_MC_INCR_MAX_LEN + 8];
    char key[RL_MC_MAX_KEY_LEN + 1];
    memset(key, 'a', sizeof(key));
    assert_int_equal(rl_mc_encode_incr(buf, sizeof(buf), key, 0, 3, 1), 0);
    assert_int_equal(rl_mc_encode_incr(buf, sizeof(buf), key, RL_MC_MAX_KEY_LEN + 1, 3, 1), 0);
    assert_true(rl_mc_encode_incr(buf, sizeof(buf), key, RL_MC_MAX_KEY_LEN, UINT32_MAX, UINT32_MAX) <=
                RL_MC_INCR_MAX_LEN);
    assert_int_equal(rl_mc_encode_incr(buf, sizeof(buf), "a b", 3, 3, 1), 0);
    assert_int_equal(rl_mc_encode_incr(buf, sizeof(buf), "a\r\n", 3, 3, 1), 0);
    assert_int_equal(rl_mc_encode_incr(buf, sizeof(buf), "a\0", 2, 3, 1), 0);
    assert_int_equal(rl_mc_encode_incr(buf, 10, "a", 1, 3, 1), 0);
}

static void test_encode_noop(void **state)
{
    (void)state;
    char buf[8];
    assert_int_equal(rl_mc_encode_noop(buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "mn\r\n", 4);
    assert_int_equal(rl_mc_encode_noop(buf, 3), 0);
}

static void test_parse_va_with_value_and_opaque(void **state)
{
    (void)state;
    rl_mc_reply_t reply;
    size_t consumed;
    assert_int_equal(PARSE_STR("VA 1 O77\r\n1\r\n", &reply, &consumed), RL_OK);
    assert_int_equal(consumed, 13);
    assert_int_equal(reply.kind, RL_MC_REPLY_VA);
    assert_true(reply.has_value);
    assert_int_equal(reply.value, 1);
    assert_true(reply.has_opaque);
    assert_int_equal(reply.opaque, 77);

    assert_int_equal(PARSE_STR("VA 20 t3 O4294967295 c9\r\n18446744073709551615\r\nHD\r\n", &reply, &consumed), RL_OK);
    assert_int_equal(consumed, 47);
    assert_true(reply.value == UINT64_MAX);
    assert_int_equal(reply.opaque, UINT32_MAX);
}

static void test_parse_simple_codes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        rl_mc_reply_kind_t kind;
        bool has_opaque;
    } cases[] = {
        {"HD\r\n", RL_MC_REPLY_HD, false},
        {"HD O5\r\n", RL_MC_REPLY_HD, true},
        {"NF O5\r\n", RL_MC_REPLY_NF, true},
        {"NS\r\n", RL_MC_REPLY_NS, false},
        {"EX O5 k\r\n", RL_MC_REPLY_EX, true},
        {"MN\r\n", RL_MC_REPLY_MN, false},
        {"ERROR\r\n", RL_MC_REPLY_ERROR, false},
        {"CLIENT_ERROR bad command line format\r\n", RL_MC_REPLY_ERROR, false},
        {"SERVER_ERROR out of memory\r\n", RL_MC_REPLY_ERROR, false},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        rl_mc_reply_t reply;
        size_t consumed;
        assert_int_equal(PARSE_STR(cases[i].text, &reply, &consumed), RL_OK);
        assert_int_equal(consumed, strlen(cases[i].text));
        assert_int_equal(reply.kind, cases[i].kind);
        assert_int_equal(reply.has_opaque, cases[i].has_opaque);
        assert_false(reply.has_value);
        if (cases[i].has_opaque)
            assert_int_equal(reply.opaque, 5);
    }
}

static void test_parse_consumes_one_reply_of_a_pipeline(void **state)
{
    (void)state;
    const char stream[] = "VA 1 O1\r\n1\r\nVA 1 O2\r\n2\r\nMN\r\n";
    size_t at = 0, len = sizeof(stream) - 1;
    rl_mc_reply_t reply;
    size_t consumed;
    assert_int_equal(parse(stream + at, len - at, &reply, &consumed), RL_OK);
    assert_int_equal(reply.opaque, 1);
    at += consumed;
    assert_int_equal(parse(stream + at, len - at, &reply, &consumed), RL_OK);
    assert_int_equal(reply.opaque, 2);
    assert_int_equal(reply.value, 2);
    at += consumed;
    assert_int_equal(parse(stream + at, len - at, &reply, &consumed), RL_OK);
    assert_int_equal(reply.kind, RL_MC_REPLY_MN);
    assert_int_equal(at + consumed, len);
}

static void test_truncated_reply_needs_more_at_every_offset(void **state)
{
    (void)state;
    static const char *replies[] = {
        "VA 1 O77\r\n1\r\n", "VA 3 O9 t-1\r\n123\r\n", "HD O1\r\n", "MN\r\n", "SERVER_ERROR busy\r\n", "ERROR\r\n"};
    for (size_t r = 0; r != sizeof(replies) / sizeof(replies[0]); ++r) {
        size_t len = strlen(replies[r]);
        for (size_t cut = 0; cut != len; ++cut) {
            rl_mc_reply_t reply;
            size_t consumed = 12345;
            assert_int_equal(parse(replies[r], cut, &reply, &consumed), RL_ERR_NEED_MORE);
            assert_int_equal(consumed, 12345);
        }
        rl_mc_reply_t reply;
        size_t consumed;
        assert_int_equal(parse(replies[r], len, &reply, &consumed), RL_OK);
        assert_int_equal(consumed, len);
    }
}

static void test_garbage_is_a_protocol_error(void **state)
{
    (void)state;
    static const char *garbage[] = {
        "hello\r\n",                            /* unknown code, rejected from its first byte */
        "X",                                    /* even before a line end */
        "VAX 1\r\n1\r\n",                       /* code must end at a space */
        "HD\n",                                 /* bare LF */
        "HD\rX",                                /* CR without LF */
        "VA\r\n1\r\n",                          /* no size */
        "VA x1 O1\r\n1\r\n",                    /* non-digit size */
        "VA -1 O1\r\n1\r\n",                    /* signed size */
        "VA 0 O1\r\n\r\n",                      /* empty value */
        "VA 21 O1\r\n",                         /* more digits than a uint64 has */
        "VA 2 O1\r\n1a\r\n",                    /* non-digit value */
        "VA 1 O1\r\n12\r\n",                    /* data longer than announced */
        "VA 2 O1\r\n1\r\n\r\n",                 /* data shorter than announced */
        "VA 1 O1\r\n1\rX",                      /* CR without LF after the data */
        "VA 1 O1\r\n1\r1",                      /* ... even a digit, which must not be swallowed */
        "VA 1 O1\rX1\r\n",                      /* CR without LF on the header line */
        "VA 20 O1\r\n18446744073709551616\r\n", /* uint64 overflow */
        "VA 1 Oabc\r\n1\r\n",                   /* non-digit opaque */
        "VA 1 O4294967296\r\n1\r\n",            /* opaque overflow */
        "VA 1 O\r\n1\r\n",                      /* empty opaque */
        "HD 5\r\n",                             /* flag must start with a letter */
        "MN O1\r\n",                            /* MN carries nothing */
        "\r\n",                                 /* empty line */
        " HD\r\n",                              /* leading space */
        "HD O1\x01\r\n",                        /* control byte in a flag */
    };
    for (size_t i = 0; i != sizeof(garbage) / sizeof(garbage[0]); ++i) {
        rl_mc_reply_t reply;
        size_t consumed;
        int ret = PARSE_STR(garbage[i], &reply, &consumed);
        if (ret != RL_ERR_BACKEND_PROTOCOL)
            fail_msg("case %zu \"%s\": got %d", i, garbage[i], ret);
    }
}

static void test_overlong_line_is_a_protocol_error_not_buffered(void **state)
{
    (void)state;
    char line[RL_MC_MAX_LINE + 16];
    memcpy(line, "SERVER_ERROR ", 13);
    memset(line + 13, 'x', sizeof(line) - 13);
    rl_mc_reply_t reply;
    size_t consumed;
    /* short of the limit, it might still end */
    assert_int_equal(parse(line, RL_MC_MAX_LINE - 1, &reply, &consumed), RL_ERR_NEED_MORE);
    assert_int_equal(parse(line, RL_MC_MAX_LINE, &reply, &consumed), RL_ERR_BACKEND_PROTOCOL);
    assert_int_equal(parse(line, sizeof(line), &reply, &consumed), RL_ERR_BACKEND_PROTOCOL);

    /* a line of exactly RL_MC_MAX_LINE bytes including CRLF is accepted */
    line[RL_MC_MAX_LINE - 2] = '\r';
    line[RL_MC_MAX_LINE - 1] = '\n';
    assert_int_equal(parse(line, RL_MC_MAX_LINE, &reply, &consumed), RL_OK);
    assert_int_equal(consumed, RL_MC_MAX_LINE);
}

static void test_many_spaces_between_flags_are_tolerated(void **state)
{
    (void)state;
    rl_mc_reply_t reply;
    size_t consumed;
    assert_int_equal(PARSE_STR("VA 1  O3 \r\n7\r\n", &reply, &consumed), RL_OK);
    assert_int_equal(reply.opaque, 3);
    assert_int_equal(reply.value, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_incr_exact_bytes),
        cmocka_unit_test(test_encode_incr_rejects_bad_keys_and_small_buffers),
        cmocka_unit_test(test_encode_noop),
        cmocka_unit_test(test_parse_va_with_value_and_opaque),
        cmocka_unit_test(test_parse_simple_codes),
        cmocka_unit_test(test_parse_consumes_one_reply_of_a_pipeline),
        cmocka_unit_test(test_truncated_reply_needs_more_at_every_offset),
        cmocka_unit_test(test_garbage_is_a_protocol_error),
        cmocka_unit_test(test_overlong_line_is_a_protocol_error_not_buffered),
        cmocka_unit_test(test_many_spaces_between_flags_are_tolerated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
