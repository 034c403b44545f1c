/*
 * Unit tests for src/limits.c: listed keys get their tier, unlisted ones the default or a
 * rejection, and the reference count frees only on the last release (ASan catches the rest).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "ratelimitd/config.h"
#include "ratelimitd/limits.h"

static rl_config_t *config_from(const char *yaml)
{
    char *errors = NULL;
    rl_config_t *config = rl_config_parse("t.yaml", yaml, strlen(yaml), &errors);
    if (config == NULL)
        fail_msg("%s", errors != NULL ? errors : "out of memory");
    return config;
}

static rl_limits_t *limits_from(const char *yaml)
{
    rl_config_t *config = config_from(yaml);
    rl_limits_t *limits = rl_limits_create(config);
    /* the table must not borrow anything from the config */
    rl_config_destroy(config);
    assert_non_null(limits);
    return limits;
}

static void assert_limit(const rl_limits_t *limits, const char *key, uint32_t limit, const char *policy)
{
    rl_limit_t out = {0};
    assert_int_equal(rl_limits_lookup(limits, key, strlen(key), &out), RL_LIMIT_FOUND);
    assert_int_equal(out.limit, limit);
    assert_int_equal(out.policy_len, strlen(policy));
    assert_memory_equal(out.policy, policy, out.policy_len);
}

static const char tiers_yaml[] = "limits:\n"
                                 "  default: 7\n"
                                 "  tiers: {free: 10, premium: 100}\n"
                                 "  keys: {premium-key-1: premium, free-key: free, premium-key-2: premium}\n";

static void test_listed_key_gets_its_tier_limit_and_name(void **state)
{
    (void)state;
    rl_limits_t *limits = limits_from(tiers_yaml);
    assert_limit(limits, "premium-key-1", 100, "premium");
    assert_limit(limits, "premium-key-2", 100, "premium");
    assert_limit(limits, "free-key", 10, "free");
    rl_limits_release(limits);
}

static void test_unlisted_key_gets_default_limit_and_policy(void **state)
{
    (void)state;
    rl_limits_t *limits = limits_from(tiers_yaml);
    assert_limit(limits, "someone-else", 7, "default");
    /* a prefix or extension of a listed key is a different key */
    assert_limit(limits, "premium-key-", 7, "default");
    assert_limit(limits, "premium-key-12", 7, "default");
    /* lengths are explicit: the lookup must not read past len */
    rl_limit_t out;
    assert_int_equal(rl_limits_lookup(limits, "free-key-and-more", 8, &out), RL_LIMIT_FOUND);
    assert_int_equal(out.limit, 10);
    rl_limits_release(limits);
}

static void test_reject_mode_rejects_only_unlisted_keys(void **state)
{
    (void)state;
    rl_limits_t *limits = limits_from("limits:\n"
                                      "  tiers: {gold: 50}\n"
                                      "  keys: {k1: gold}\n"
                                      "  unknown_keys: reject\n");
    rl_limit_t out;
    assert_int_equal(rl_limits_lookup(limits, "k2", 2, &out), RL_LIMIT_REJECTED);
    assert_limit(limits, "k1", 50, "gold");
    rl_limits_release(limits);
}

static void test_empty_table_serves_the_default(void **state)
{
    (void)state;
    rl_limits_t *limits = limits_from("threads: 1\n");
    assert_limit(limits, "anything", 10, "default");
    rl_limits_release(limits);
}

static void test_many_keys_all_found(void **state)
{
    (void)state;
    rl_config_t *config = config_from("limits: {tiers: {a: 1, b: 2}}\n");
    size_t n = 5000;
    config->limits.keys = calloc(n, sizeof(*config->limits.keys));
    for (size_t i = 0; i < n; ++i) {
        char key[32];
        snprintf(key, sizeof(key), "key-%zu", i);
        config->limits.keys[i] = (rl_key_config_t){.api_key = strdup(key), .tier_index = i % 2};
    }
    config->limits.num_keys = n;
    rl_limits_t *limits = rl_limits_create(config);
    rl_config_destroy(config);
    assert_non_null(limits);
    for (size_t i = 0; i < n; ++i) {
        char key[32];
        snprintf(key, sizeof(key), "key-%zu", i);
        assert_limit(limits, key, (uint32_t)(i % 2 + 1), i % 2 ? "b" : "a");
    }
    assert_limit(limits, "key-5000", 10, "default");
    rl_limits_release(limits);
}

static void test_stale_tier_index_is_ignored_not_read(void **state)
{
    (void)state;
    rl_config_t *config = config_from("limits: {tiers: {a: 1}, keys: {k: a}}\n");
    config->limits.keys[0].tier_index = 5;
    rl_limits_t *limits = rl_limits_create(config);
    rl_config_destroy(config);
    assert_limit(limits, "k", 10, "default");
    rl_limits_release(limits);
}

static void test_retain_keeps_the_table_alive_until_the_last_release(void **state)
{
    (void)state;
    rl_limits_t *limits = limits_from(tiers_yaml);
    rl_limits_retain(limits);
    rl_limits_retain(limits);
    rl_limits_release(limits); /* the creator's reference */
    /* still two references: under ASan a premature free makes these reads fail */
    assert_limit(limits, "premium-key-1", 100, "premium");
    rl_limits_release(limits);
    assert_limit(limits, "free-key", 10, "free");
    rl_limits_release(limits); /* the last one frees; LeakSanitizer checks it did */
    rl_limits_release(NULL);
}

static void test_create_without_config_returns_null(void **state)
{
    (void)state;
    assert_null(rl_limits_create(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listed_key_gets_its_tier_limit_and_name),
        cmocka_unit_test(test_unlisted_key_gets_default_limit_and_policy),
        cmocka_unit_test(test_reject_mode_rejects_only_unlisted_keys),
        cmocka_unit_test(test_empty_table_serves_the_default),
        cmocka_unit_test(test_many_keys_all_found),
        cmocka_unit_test(test_stale_tier_index_is_ignored_not_read),
        cmocka_unit_test(test_retain_keeps_the_table_alive_until_the_last_release),
        cmocka_unit_test(test_create_without_config_returns_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
