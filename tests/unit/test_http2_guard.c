/*
 * Unit test for src/http2_guard.c's start-up check, in a program linked like ratelimitd: its
 * definition of h2o_hpack_parse_headers must be the one libh2o's relocations hold, and the
 * parser handed back must be libh2o's own. (The refusals, for libraries linked -Bsymbolic or bound
 * lazily, are checked with modified copies of libh2o by test_hostile_clients.py.)
 */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "ratelimitd/error.h"
#include "ratelimitd/http2_guard.h"

static void test_resolve_finds_libh2o_parser_behind_the_guard(void **state)
{
    (void)state;
    rl_hpack_parser_fn parser = NULL;
    char err[512] = "";
    assert_int_equal(rl_http2_guard_resolve(&parser, err, sizeof(err)), RL_OK);
    assert_string_equal(err, "");
    assert_non_null(parser);
    Dl_info info;
    assert_int_not_equal(dladdr((void *)parser, &info), 0);
    assert_non_null(strstr(info.dli_fname, "libh2o-evloop.so"));
    assert_string_equal(info.dli_sname, "h2o_hpack_parse_headers");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_finds_libh2o_parser_behind_the_guard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
