/*
 * Status codes: every RL_ERR_* code has its own non-empty description, and any value outside
 * the enum (positive, or below the lowest code) reads "unknown error" rather than garbage.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "ratelimitd/error.h"

/* Every code the header defines, listed by name so a renumbering cannot hide a missing row. */
static const int all_codes[] = {
    RL_OK,
    RL_ERR_NOMEM,
    RL_ERR_INVALID,
    RL_ERR_KEY_MISSING,
    RL_ERR_KEY_INVALID,
    RL_ERR_BACKEND_TIMEOUT,
    RL_ERR_BACKEND_DOWN,
    RL_ERR_BACKEND_PROTOCOL,
    RL_ERR_BACKEND_OVERLOAD,
    RL_ERR_STORE_FULL,
    RL_ERR_CONFIG,
    RL_ERR_IO,
    RL_ERR_NEED_MORE,
    RL_ERR_CANCELLED,
};

#define NUM_CODES (sizeof(all_codes) / sizeof(all_codes[0]))

static void test_code_list_covers_the_whole_enum(void **state)
{
    (void)state;
    assert_int_equal(NUM_CODES, RL_ERR__COUNT);
    /* The codes are 0, -1, ..., -(RL_ERR__COUNT - 1), each exactly once. */
    for (int expected = 0; expected > -RL_ERR__COUNT; --expected) {
        size_t seen = 0;
        for (size_t i = 0; i < NUM_CODES; ++i)
            seen += all_codes[i] == expected;
        assert_int_equal(seen, 1);
    }
}

static void test_every_code_has_a_non_empty_description(void **state)
{
    (void)state;
    for (size_t i = 0; i < NUM_CODES; ++i) {
        const char *text = rl_strerror(all_codes[i]);
        assert_non_null(text);
        assert_true(strlen(text) > 0);
        assert_string_not_equal(text, "unknown error");
    }
}

static void test_descriptions_are_distinct(void **state)
{
    (void)state;
    for (size_t i = 0; i < NUM_CODES; ++i)
        for (size_t j = i + 1; j < NUM_CODES; ++j)
            assert_string_not_equal(rl_strerror(all_codes[i]), rl_strerror(all_codes[j]));
}

static void test_positive_codes_are_unknown(void **state)
{
    (void)state;
    assert_string_equal(rl_strerror(1), "unknown error");
    assert_string_equal(rl_strerror(RL_ERR__COUNT), "unknown error");
    assert_string_equal(rl_strerror(INT_MAX), "unknown error");
}

static void test_codes_below_the_range_are_unknown(void **state)
{
    (void)state;
    assert_string_equal(rl_strerror(-RL_ERR__COUNT), "unknown error");
    assert_string_equal(rl_strerror(-RL_ERR__COUNT - 1), "unknown error");
    assert_string_equal(rl_strerror(-1000), "unknown error");
    /* The most negative code whose negation is still an int. */
    assert_string_equal(rl_strerror(INT_MIN + 1), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_list_covers_the_whole_enum),
        cmocka_unit_test(test_every_code_has_a_non_empty_description),
        cmocka_unit_test(test_descriptions_are_distinct),
        cmocka_unit_test(test_positive_codes_are_unknown),
        cmocka_unit_test(test_codes_below_the_range_are_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
