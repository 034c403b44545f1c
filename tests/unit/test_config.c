/*
 * Unit tests for src/config.c: the SPEC example and every documented default, then each kind of
 * error with the exact FILE:LINE:COLUMN an operator's editor would jump to.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include "ratelimitd/config.h"

/* Parses `yaml` as "conf/t.yaml"; on failure stores the error text in *errors for the caller to free. */
static rl_config_t *parse(const char *yaml, char **errors)
{
    *errors = NULL;
    return rl_config_parse("conf/t.yaml", yaml, strlen(yaml), errors);
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *c = text; *c != '\0'; ++c)
        n += *c == '\n';
    return n;
}

/* Fails unless some line of `errors` starts with `prefix`. */
static void assert_has_error(const char *errors, const char *prefix)
{
    assert_non_null(errors);
    for (const char *line = errors; *line != '\0';) {
        if (strncmp(line, prefix, strlen(prefix)) == 0)
            return;
        const char *end = strchr(line, '\n');
        if (end == NULL)
            break;
        line = end + 1;
    }
    fail_msg("no error starting with \"%s\" in:\n%s", prefix, errors);
}

/* Parsing must fail with exactly one error, starting with `prefix`. */
static void assert_single_error(const char *yaml, const char *prefix)
{
    char *errors;
    rl_config_t *config = parse(yaml, &errors);
    assert_null(config);
    assert_has_error(errors, prefix);
    if (count_lines(errors) != 1)
        fail_msg("expected one error, got:\n%s", errors);
    free(errors);
}

static const char spec_example[] = "listen:\n"
                                   "  - address: 127.0.0.1\n"
                                   "    port: 8080\n"
                                   "  - port: 8443\n"
                                   "    tls: { certificate: cert.pem, key: key.pem }\n"
                                   "threads: 0\n"
                                   "api_key_header: X-API-Key\n"
                                   "limits:\n"
                                   "  default: 10\n"
                                   "  tiers: { free: 10, premium: 100 }\n"
                                   "  keys: { \"premium-key-1\": premium }\n"
                                   "  unknown_keys: allow\n"
                                   "backend:\n"
                                   "  type: memcached\n"
                                   "  servers: [\"127.0.0.1:11211\", \"127.0.0.1:11212\", \"127.0.0.1:11213\"]\n"
                                   "  timeout_ms: 20\n"
                                   "  on_failure: open\n"
                                   "  key_prefix: \"rl:\"\n"
                                   "  key_hash_secret: \"\"\n"
                                   "shutdown_grace_ms: 5000\n";

static void test_spec_example_sets_every_field(void **state)
{
    (void)state;
    char *errors;
    rl_config_t *config = parse(spec_example, &errors);
    assert_null(errors);
    assert_non_null(config);
    assert_string_equal(config->path, "conf/t.yaml");
    assert_int_equal(config->num_listen, 2);
    assert_string_equal(config->listen[0].address, "127.0.0.1");
    assert_int_equal(config->listen[0].port, 8080);
    assert_null(config->listen[0].tls_certificate);
    assert_null(config->listen[0].tls_key);
    assert_string_equal(config->listen[1].address, "0.0.0.0");
    assert_int_equal(config->listen[1].port, 8443);
    assert_string_equal(config->listen[1].tls_certificate, "conf/cert.pem");
    assert_string_equal(config->listen[1].tls_key, "conf/key.pem");
    assert_int_equal(config->threads, 0);
    assert_string_equal(config->api_key_header, "x-api-key");
    assert_int_equal(config->limits.default_limit, 10);
    assert_int_equal(config->limits.num_tiers, 2);
    assert_string_equal(config->limits.tiers[0].name, "free");
    assert_int_equal(config->limits.tiers[0].limit, 10);
    assert_string_equal(config->limits.tiers[1].name, "premium");
    assert_int_equal(config->limits.tiers[1].limit, 100);
    assert_int_equal(config->limits.num_keys, 1);
    assert_string_equal(config->limits.keys[0].api_key, "premium-key-1");
    assert_int_equal(config->limits.keys[0].tier_index, 1);
    assert_int_equal(config->limits.unknown_keys, RL_UNKNOWN_KEYS_ALLOW);
    assert_int_equal(config->backend.type, RL_BACKEND_MEMCACHED);
    assert_int_equal(config->backend.num_servers, 3);
    for (size_t i = 0; i < 3; ++i) {
        char name[32];
        snprintf(name, sizeof(name), "127.0.0.1:%zu", 11211 + i);
        assert_string_equal(config->backend.servers[i].host, "127.0.0.1");
        assert_int_equal(config->backend.servers[i].port, 11211 + i);
        assert_int_equal(config->backend.servers[i].weight, 1);
        assert_string_equal(config->backend.servers[i].name, name);
    }
    assert_int_equal(config->backend.timeout_ms, 20);
    assert_int_equal(config->backend.on_failure, RL_ON_FAILURE_OPEN);
    assert_string_equal(config->backend.key_prefix, "rl:");
    assert_string_equal(config->backend.key_hash_secret, "");
    assert_int_equal(config->shutdown_grace_ms, 5000);
    rl_config_destroy(config);
}

static void test_extra_fields_are_parsed(void **state)
{
    (void)state;
    char *errors;
    rl_config_t *config = parse("threads: 256\n"
                                "backend:\n"
                                "  type: local\n"
                                "  timeout_ms: 60000\n"
                                "  on_failure: closed\n"
                                "  key_hash_secret: s3cret\n"
                                "  window_ttl_s: 5\n"
                                "  failure_limit: 7\n"
                                "  retry_interval_ms: 250\n"
                                "  max_pending: 100\n"
                                "  local_max_keys: 2048\n"
                                "limits: {unknown_keys: reject, default: 1000000000}\n"
                                "server:\n"
                                "  max_connections: 50\n"
                                "  idle_timeout_ms: 100\n"
                                "  max_header_bytes: 262144\n"
                                "log_level: debug\n"
                                "shutdown_grace_ms: 0\n",
                                &errors);
    assert_null(errors);
    assert_non_null(config);
    assert_int_equal(config->threads, 256);
    assert_int_equal(config->backend.type, RL_BACKEND_LOCAL);
    assert_int_equal(config->backend.timeout_ms, 60000);
    assert_int_equal(config->backend.on_failure, RL_ON_FAILURE_CLOSED);
    assert_string_equal(config->backend.key_hash_secret, "s3cret");
    assert_int_equal(config->backend.window_ttl_s, 5);
    assert_int_equal(config->backend.failure_limit, 7);
    assert_int_equal(config->backend.retry_interval_ms, 250);
    assert_int_equal(config->backend.max_pending, 100);
    assert_int_equal(config->backend.local_max_keys, 2048);
    assert_int_equal(config->limits.unknown_keys, RL_UNKNOWN_KEYS_REJECT);
    assert_int_equal(config->limits.default_limit, RL_CONFIG_MAX_LIMIT);
    assert_int_equal(config->server.max_connections, 50);
    assert_int_equal(config->server.idle_timeout_ms, 100);
    assert_int_equal(config->server.max_header_bytes, 262144);
    assert_string_equal(config->log_level, "debug");
    assert_int_equal(config->shutdown_grace_ms, 0);
    rl_config_destroy(config);
}

static void test_omitted_fields_get_header_defaults_and_local_backend(void **state)
{
    (void)state;
    char *errors;
    rl_config_t *config = parse("log_level: info\n", &errors);
    assert_null(errors);
    assert_non_null(config);
    assert_int_equal(config->num_listen, 1);
    assert_string_equal(config->listen[0].address, "0.0.0.0");
    assert_int_equal(config->listen[0].port, 8080);
    assert_null(config->listen[0].tls_certificate);
    assert_int_equal(config->threads, 0);
    assert_string_equal(config->api_key_header, "x-api-key");
    assert_int_equal(config->limits.default_limit, 10);
    assert_int_equal(config->limits.num_tiers, 0);
    assert_int_equal(config->limits.num_keys, 0);
    assert_int_equal(config->limits.unknown_keys, RL_UNKNOWN_KEYS_ALLOW);
    assert_int_equal(config->backend.type, RL_BACKEND_LOCAL);
    assert_int_equal(config->backend.num_servers, 0);
    assert_int_equal(config->backend.timeout_ms, 20);
    assert_int_equal(config->backend.on_failure, RL_ON_FAILURE_OPEN);
    assert_string_equal(config->backend.key_prefix, "rl:");
    assert_string_equal(config->backend.key_hash_secret, "");
    assert_int_equal(config->backend.window_ttl_s, 3);
    assert_int_equal(config->backend.failure_limit, 3);
    assert_int_equal(config->backend.retry_interval_ms, 1000);
    assert_int_equal(config->backend.max_pending, 8192);
    assert_int_equal(config->backend.local_max_keys, 1048576);
    assert_int_equal(config->server.max_connections, 10000);
    assert_int_equal(config->server.idle_timeout_ms, 10000);
    assert_int_equal(config->server.max_header_bytes, 16384);
    assert_string_equal(config->log_level, "info");
    assert_int_equal(config->shutdown_grace_ms, 5000);
    rl_config_destroy(config);
}

static void test_memcached_servers_accept_weights_default_port_and_ipv6(void **state)
{
    (void)state;
    char *errors;
    rl_config_t *config = parse("backend:\n"
                                "  type: memcached\n"
                                "  servers: [\"mc-0.mc:11300:5\", \"mc-1\", \"[::1]:11211\", \"[fe80::2]:1:1000\"]\n",
                                &errors);
    assert_null(errors);
    assert_non_null(config);
    assert_int_equal(config->backend.num_servers, 4);
    assert_string_equal(config->backend.servers[0].host, "mc-0.mc");
    assert_int_equal(config->backend.servers[0].port, 11300);
    assert_int_equal(config->backend.servers[0].weight, 5);
    assert_string_equal(config->backend.servers[0].name, "mc-0.mc:11300");
    assert_string_equal(config->backend.servers[1].host, "mc-1");
    assert_int_equal(config->backend.servers[1].port, 11211);
    assert_string_equal(config->backend.servers[1].name, "mc-1:11211");
    assert_string_equal(config->backend.servers[2].host, "::1");
    assert_string_equal(config->backend.servers[2].name, "[::1]:11211");
    assert_int_equal(config->backend.servers[3].port, 1);
    assert_int_equal(config->backend.servers[3].weight, 1000);
    rl_config_destroy(config);
}

static void test_tls_paths_resolve_against_the_config_directory(void **state)
{
    (void)state;
    const char *yaml = "listen:\n"
                       "  - port: 1\n"
                       "    tls: {certificate: tls/cert.pem, key: /etc/key.pem}\n";
    char *errors = NULL;
    rl_config_t *config = rl_config_parse("/etc/rl/x.yaml", yaml, strlen(yaml), &errors);
    assert_non_null(config);
    assert_string_equal(config->listen[0].tls_certificate, "/etc/rl/tls/cert.pem");
    assert_string_equal(config->listen[0].tls_key, "/etc/key.pem");
    rl_config_destroy(config);

    config = rl_config_parse("x.yaml", yaml, strlen(yaml), &errors);
    assert_non_null(config);
    assert_string_equal(config->listen[0].tls_certificate, "tls/cert.pem");
    rl_config_destroy(config);

    config = rl_config_parse("/x.yaml", yaml, strlen(yaml), &errors);
    assert_non_null(config);
    assert_string_equal(config->listen[0].tls_certificate, "/tls/cert.pem");
    rl_config_destroy(config);
}

static void test_api_key_header_is_stored_lower_cased(void **state)
{
    (void)state;
    char *errors;
    rl_config_t *config = parse("api_key_header: X-My_Key.v2\n", &errors);
    assert_non_null(config);
    assert_string_equal(config->api_key_header, "x-my_key.v2");
    rl_config_destroy(config);
    assert_single_error("api_key_header: \"X API Key\"\n", "conf/t.yaml:1:17: api_key_header: must be an HTTP header");
    assert_single_error("api_key_header: \"X:Key\"\n", "conf/t.yaml:1:17: api_key_header: must be an HTTP header");
    assert_single_error("api_key_header: \"\"\n", "conf/t.yaml:1:17: api_key_header: must be an HTTP header");
}

static void test_empty_file_is_an_error(void **state)
{
    (void)state;
    assert_single_error("", "conf/t.yaml:1:1: the configuration is empty");
    assert_single_error("# only a comment\n", "conf/t.yaml:");
}

static void test_top_level_that_is_not_a_mapping_is_an_error(void **state)
{
    (void)state;
    assert_single_error("- port: 1\n", "conf/t.yaml:1:1: the top level must be a mapping of settings, got a sequence");
    assert_single_error("\n  hello\n", "conf/t.yaml:2:3: the top level must be a mapping of settings, got \"hello\"");
}

static void test_yaml_syntax_error_reports_libyaml_mark(void **state)
{
    (void)state;
    assert_single_error("threads: 1\nlimits: {default: 1\n", "conf/t.yaml:3:1: YAML syntax error:");
    assert_single_error("threads: 1\n  bad: [\n", "conf/t.yaml:2:6: YAML syntax error:");
}

/* libyaml resolves an alias to its anchor's node, so a message about the value would point at
 * the anchor; aliases are refused where they are used instead, and tags (which the schema would
 * silently ignore) where they are written. */
static void test_aliases_and_tags_are_refused_where_written(void **state)
{
    (void)state;
    assert_single_error("a: *nowhere\n", "conf/t.yaml:1:4: aliases (*nowhere) are not supported");
    assert_single_error("threads: &n 0\nserver:\n  max_connections: *n\n",
                        "conf/t.yaml:3:20: aliases (*n) are not supported; write the value out");
    assert_single_error("threads: !!float 4\n",
                        "conf/t.yaml:1:10: YAML tags (tag:yaml.org,2002:float) are not supported");
    assert_single_error("threads: !!str 4\n", "conf/t.yaml:1:10: YAML tags (tag:yaml.org,2002:str) are not supported");
    assert_single_error("listen: !!set [{port: 8080}]\n", "conf/t.yaml:1:9: YAML tags (tag:yaml.org,2002:set)");
    assert_single_error("backend: {type: local, key_hash_secret: !!binary aGVsbG8=}\n",
                        "conf/t.yaml:1:41: YAML tags (tag:yaml.org,2002:binary)");
    /* an anchor that nothing refers to changes nothing */
    char *errors = NULL;
    rl_config_t *config = parse("threads: &n 3\n", &errors);
    assert_non_null(config);
    assert_int_equal(config->threads, 3);
    rl_config_destroy(config);
}

/* SPEC: --check-config prints every error. A tag or a second document leaves the first document
 * checkable, so they must not hide its errors. */
static void test_tags_and_second_documents_do_not_hide_other_errors(void **state)
{
    (void)state;
    char *errors;
    assert_null(parse("threads: !!int 4\nfoo: 1\nlimits:\n  default: 0\n", &errors));
    assert_has_error(errors, "conf/t.yaml:1:10: YAML tags (tag:yaml.org,2002:int) are not supported");
    assert_has_error(errors, "conf/t.yaml:2:1: foo: unknown field");
    assert_has_error(errors, "conf/t.yaml:4:12: limits.default: must be between 1 and 1000000000");
    assert_int_equal(count_lines(errors), 3);
    free(errors);
    assert_null(parse("threads: 1\nfoo: 1\n---\nbar: 2\n", &errors));
    assert_has_error(errors, "conf/t.yaml:3:1: more than one YAML document");
    assert_has_error(errors, "conf/t.yaml:2:1: foo: unknown field");
    assert_int_equal(count_lines(errors), 2);
    free(errors);
}

/* libyaml's scanner costs time quadratic in the nesting depth: 60,000 levels took 21 s, and a
 * SIGHUP with such a file kept the daemon from taking SIGTERM. The schema needs 4 levels. */
static void test_nesting_deeper_than_16_levels_is_refused(void **state)
{
    (void)state;
    enum { DEPTH = 60000 };
    static char yaml[2 * DEPTH + 64];
    int at = snprintf(yaml, sizeof(yaml), "a: ");
    memset(yaml + at, '[', DEPTH);
    memset(yaml + at + DEPTH, ']', DEPTH);
    strcpy(yaml + at + 2 * DEPTH, "\n");
    /* the top mapping is the first level, so the 16th "[" (column 3 + 16) opens the 17th */
    assert_single_error(yaml, "conf/t.yaml:1:19: nested more than 16 levels deep");
    assert_single_error("a: {b: {c: [[[[[[[[[[[[[1]]]]]]]]]]]]]}}\n", "conf/t.yaml:1:1: a: unknown field");
    assert_single_error("limits:\n  tiers:\n    - - - - - - - - - - - - - - - - x\n",
                        "conf/t.yaml:3:33: nested more than 16 levels deep");
}

static void test_invalid_utf8_is_a_syntax_error_with_position(void **state)
{
    (void)state;
    char *errors;
    assert_single_error("threads: 1\nlog_level: \xff\n", "conf/t.yaml:2:12: YAML syntax error:");
    /* columns count characters, as libyaml's own marks and editors do: "é" is one column */
    assert_single_error("threads: 1\nlog_level: \"\xc3\xa9\xc3\xa9\xff\"\n", "conf/t.yaml:2:15: YAML syntax error:");
    /* nor does a byte order mark, which libyaml's marks skip too */
    assert_single_error("\xef\xbb\xbfthreads: 1\x01\n", "conf/t.yaml:1:11: YAML syntax error:");
    /* lines end where libyaml's do: CR LF, a lone CR, NEL and LS each end one */
    assert_single_error("limits:\r  default: 5\r  foo: \"\x01\"\r", "conf/t.yaml:3:9: YAML syntax error:");
    assert_single_error("a: 1\r\nb: \"\x01\"\r\n", "conf/t.yaml:2:5: YAML syntax error:");
    assert_single_error("limits:\n  default: 5\xc2\x85  foo: \"\x01\"\n", "conf/t.yaml:3:9: YAML syntax error:");
    assert_single_error("a: 1\xe2\x80\xa8"
                        "b: \"x\x01\"\n",
                        "conf/t.yaml:2:6: YAML syntax error:");
    /* UTF-16, which libyaml would read but positions could not be given for, is refused at once */
    const char utf16[] = "\xff\xfet\0:\0 \0x\0";
    assert_null(rl_config_parse("conf/t.yaml", utf16, sizeof(utf16) - 1, &errors));
    assert_has_error(errors, "conf/t.yaml:1:1: the file is UTF-16");
    assert_int_equal(count_lines(errors), 1);
    free(errors);
    const char yaml[] = "threads: 1\0\n";
    assert_null(rl_config_parse("conf/t.yaml", yaml, sizeof(yaml) - 1, &errors));
    assert_has_error(errors, "conf/t.yaml:1:11: YAML syntax error:");
    free(errors);
}

static void test_multiple_documents_are_an_error(void **state)
{
    (void)state;
    assert_single_error("threads: 1\n---\nthreads: 2\n", "conf/t.yaml:2:1: more than one YAML document");
}

static void test_unknown_field_reports_line_and_column(void **state)
{
    (void)state;
    assert_single_error("threads: 1\n"
                        "backend:\n"
                        "  type: local\n"
                        "  timeout: 20\n",
                        "conf/t.yaml:4:3: backend.timeout: unknown field");
    assert_single_error("tls: {}\n", "conf/t.yaml:1:1: tls: unknown field");
    assert_single_error("listen:\n  - port: 1\n    tsl: {}\n", "conf/t.yaml:3:5: listen[0].tsl: unknown field");
}

static void test_wrong_type_reports_what_was_expected(void **state)
{
    (void)state;
    assert_single_error("threads: many\n",
                        "conf/t.yaml:1:10: threads: expected a decimal integer (digits only: no sign, exponent or "
                        "leading zero), got \"many\"");
    assert_single_error("threads: \"4\"\n", "conf/t.yaml:1:10: threads: expected an integer, got the string \"4\"");
    assert_single_error("threads:\n", "conf/t.yaml:1:9: threads: expected an integer, got null");
    assert_single_error("log_level: {a: b}\n", "conf/t.yaml:1:12: log_level: expected a string, got a mapping");
    assert_single_error("backend: [memcached]\n", "conf/t.yaml:1:10: backend: expected a mapping, got a sequence");
    assert_single_error("listen: {port: 1}\n",
                        "conf/t.yaml:1:9: listen: expected a sequence of listeners, got a mapping");
    assert_single_error("listen: [8080]\n", "conf/t.yaml:1:10: listen[0]: expected a mapping, got \"8080\"");
    assert_single_error("limits: {tiers: [free]}\n", "conf/t.yaml:1:17: limits.tiers: expected a mapping");
    assert_single_error("limits:\n  keys: k\n", "conf/t.yaml:2:9: limits.keys: expected a mapping");
    assert_single_error("backend: {type: memcached, servers: \"a:1\"}\n",
                        "conf/t.yaml:1:37: backend.servers: expected a sequence");
}

static void test_integer_garbage_is_rejected(void **state)
{
    (void)state;
    static const char *const garbage[] = {"12abc", "-1", "1e3", "0x10", "010", "+5", "1.0", "1_000"};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); ++i) {
        char yaml[64], expected[128];
        snprintf(yaml, sizeof(yaml), "shutdown_grace_ms: %s\n", garbage[i]);
        snprintf(expected, sizeof(expected), "conf/t.yaml:1:20: shutdown_grace_ms: expected a decimal integer");
        assert_single_error(yaml, expected);
    }
}

static void test_out_of_range_and_overflowing_integers_are_rejected(void **state)
{
    (void)state;
    assert_single_error("listen:\n  - port: 65536\n",
                        "conf/t.yaml:2:11: listen[0].port: must be between 1 and 65535, got \"65536\"");
    assert_single_error("listen:\n  - port: 0\n", "conf/t.yaml:2:11: listen[0].port: must be between 1 and 65535");
    assert_single_error("threads: 257\n", "conf/t.yaml:1:10: threads: must be between 0 and 256");
    assert_single_error("threads: 99999999999999999999999\n", "conf/t.yaml:1:10: threads: must be between 0 and 256");
    assert_single_error("backend: {type: local, window_ttl_s: 2}\n",
                        "conf/t.yaml:1:38: backend.window_ttl_s: must be between 3 and 3600");
    assert_single_error("backend: {type: local, timeout_ms: 60001}\n",
                        "conf/t.yaml:1:36: backend.timeout_ms: must be between 1 and 60000");
    assert_single_error("backend: {type: local, timeout_ms: 0}\n",
                        "conf/t.yaml:1:36: backend.timeout_ms: must be between 1 and 60000");
    assert_single_error("limits: {default: 0}\n", "conf/t.yaml:1:19: limits.default: must be between 1 and 1000000000");
    assert_single_error("limits: {tiers: {gold: 1000000001}}\n",
                        "conf/t.yaml:1:24: limits.tiers.gold: must be between 1 and 1000000000");
    assert_single_error("server: {max_header_bytes: 1023}\n",
                        "conf/t.yaml:1:28: server.max_header_bytes: must be between 1024 and 262144");
    assert_single_error("server: {max_header_bytes: 262145}\n",
                        "conf/t.yaml:1:28: server.max_header_bytes: must be between 1024 and 262144");
}

static void test_bad_enum_value_lists_the_choices(void **state)
{
    (void)state;
    assert_single_error("limits:\n  unknown_keys: deny\n",
                        "conf/t.yaml:2:17: limits.unknown_keys: must be one of allow, reject, got \"deny\"");
    assert_single_error("backend: {type: redis}\n",
                        "conf/t.yaml:1:17: backend.type: must be one of local, memcached, got \"redis\"");
    assert_single_error("backend: {type: local, on_failure: yes}\n",
                        "conf/t.yaml:1:36: backend.on_failure: must be one of open, closed");
    assert_single_error("log_level: verbose\n", "conf/t.yaml:1:12: log_level: must be one of debug, info, warn, error");
}

static void test_duplicate_key_reports_the_second_occurrence(void **state)
{
    (void)state;
    assert_single_error("threads: 1\nlog_level: info\nthreads: 2\n",
                        "conf/t.yaml:3:1: threads: duplicate key (first on line 1)");
    assert_single_error("limits:\n  tiers:\n    free: 1\n    free: 2\n",
                        "conf/t.yaml:4:5: limits.tiers.free: duplicate key (first on line 3)");
    assert_single_error("limits:\n  keys:\n    k1: free\n    k1: free\n  tiers: {free: 1}\n",
                        "conf/t.yaml:4:5: limits.keys: duplicate key (first on line 3)");
}

static void test_missing_listen_port_is_reported_at_the_listener(void **state)
{
    (void)state;
    assert_single_error("listen:\n  - address: 127.0.0.1\n", "conf/t.yaml:2:5: listen[0].port: missing required field");
    assert_single_error("listen: []\n", "conf/t.yaml:1:9: listen: must list 1 to 1024 listeners, got 0");
    assert_single_error("backend: {}\n", "conf/t.yaml:1:10: backend.type: missing required field");
}

static void test_listener_roles_default_to_api_and_need_one_api_listener(void **state)
{
    (void)state;
    char *errors;
    rl_config_t *config = parse("listen:\n  - port: 8080\n  - {port: 9090, role: admin}\n", &errors);
    assert_non_null(config);
    assert_int_equal(config->listen[0].role, RL_LISTEN_API);
    assert_int_equal(config->listen[1].role, RL_LISTEN_ADMIN);
    rl_config_destroy(config);
    assert_single_error("listen:\n  - {port: 9090, role: admin}\n",
                        "conf/t.yaml:2:3: listen: needs at least one listener with role api");
    /* reported with the other listeners' errors, which do not hide it */
    char *errors2;
    assert_null(parse("listen:\n  - {port: 9090, role: admin}\n  - {port: 0, role: admin}\n", &errors2));
    assert_has_error(errors2, "conf/t.yaml:3:12: listen[1].port: must be between 1 and 65535");
    assert_has_error(errors2, "conf/t.yaml:2:3: listen: needs at least one listener with role api");
    free(errors2);
    assert_single_error("listen:\n  - {port: 9090, role: metrics}\n",
                        "conf/t.yaml:2:24: listen[0].role: must be one of api, admin, got \"metrics\"");
}

static void test_memcached_backend_without_servers_is_an_error(void **state)
{
    (void)state;
    assert_single_error("backend:\n  type: memcached\n",
                        "conf/t.yaml:2:9: backend.servers: the memcached backend needs at least one server");
    assert_single_error("backend:\n  type: memcached\n  servers: []\n",
                        "conf/t.yaml:3:12: backend.servers: the memcached backend needs at least one server");
}

static void test_bad_server_entries_are_rejected(void **state)
{
    (void)state;
    static const struct {
        const char *entry, *message;
    } cases[] = {
        {"\":11211\"", "the host must be 1-253 characters"},
        {"\"::1\"", "the host must be 1-253 characters (IPv6 in brackets"},
        {"\"h:0\"", "the port must be 1-65535"},
        {"\"h:65536\"", "the port must be 1-65535"},
        {"\"h:\"", "the port must be 1-65535"},
        {"\"h:11211:0\"", "the weight must be 1-1000"},
        {"\"h:11211:1001\"", "the weight must be 1-1000"},
        {"\"h:11211:1:2\"", "the weight must be 1-1000"},
        {"\"h:x\"", "the port must be 1-65535"},
        {"\"ho st:1\"", "the host must be a DNS name or an IPv4 address"},
        {"\"[::1\"", "an IPv6 address must be in brackets"},
        {"\"[zz::1]:1\"", "not a valid IPv6 address"},
        {"\"[::1]x\"", "expected host:port[:weight]"},
        {"{a: b}", "expected a string, got a mapping"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        char yaml[128], expected[160];
        snprintf(yaml, sizeof(yaml), "backend:\n  type: memcached\n  servers:\n    - %s\n", cases[i].entry);
        snprintf(expected, sizeof(expected), "conf/t.yaml:4:7: backend.servers[0]: %s", cases[i].message);
        assert_single_error(yaml, expected);
    }
    assert_single_error("backend: {type: memcached, servers: [\"a:1\", \"b:1\", \"a:1:2\"]}\n",
                        "conf/t.yaml:1:52: backend.servers[2]: duplicate server a:1");
    assert_single_error("backend: {type: memcached, servers: [\"cache-A:1\", \"Cache-a:1\"]}\n",
                        "conf/t.yaml:1:51: backend.servers[1]: duplicate server Cache-a:1");
}

/* Writes a memcached backend of `n` servers 10.0.0.1:1 .. 10.0.0.1:n into `yaml`. */
static void write_pool(char *yaml, size_t cap, size_t n)
{
    size_t at = (size_t)snprintf(yaml, cap, "backend:\n  type: memcached\n  servers:\n");
    for (size_t i = 1; i <= n && at < cap; ++i)
        at += (size_t)snprintf(yaml + at, cap - at, "    - 10.0.0.1:%zu\n", i);
    assert_true(at < cap);
}

/* libmemcached's ketama ring aborts the process above 100 servers: the config must refuse them. */
static void test_more_servers_than_the_ring_holds_is_an_error(void **state)
{
    (void)state;
    char yaml[4096], *errors;
    write_pool(yaml, sizeof(yaml), 100);
    rl_config_t *config = parse(yaml, &errors);
    assert_non_null(config);
    assert_int_equal(config->backend.num_servers, 100);
    rl_config_destroy(config);
    write_pool(yaml, sizeof(yaml), 101);
    assert_single_error(yaml, "conf/t.yaml:4:5: backend.servers: at most 100 servers (libmemcached's ketama ring holds "
                              "no more), got 101");
}

static void test_key_naming_an_unknown_tier_is_an_error(void **state)
{
    (void)state;
    assert_single_error("limits:\n  tiers: {free: 1}\n  keys:\n    k1: free\n    k2: gold\n",
                        "conf/t.yaml:5:9: limits.keys: unknown tier \"gold\" (not in limits.tiers)");
    /* keys may come before the tiers they name */
    char *errors;
    rl_config_t *config = parse("limits:\n  keys: {k1: gold}\n  tiers: {free: 1, gold: 5}\n", &errors);
    assert_non_null(config);
    assert_int_equal(config->limits.keys[0].tier_index, 1);
    rl_config_destroy(config);
    /* a tier whose own error is reported is not unknown: the key naming it is not blamed too */
    assert_null(parse("limits:\n  tiers: {free: 1, gold: 0}\n  keys: {k1: gold, k2: silver}\n", &errors));
    assert_has_error(errors, "conf/t.yaml:2:26: limits.tiers.gold: must be between 1 and 1000000000");
    assert_has_error(errors, "conf/t.yaml:3:24: limits.keys: unknown tier \"silver\" (not in limits.tiers)");
    assert_int_equal(count_lines(errors), 2);
    free(errors);
}

/* Keys find their tiers by binary search over sorted names: each key must get its own tier. */
static void test_many_keys_each_get_the_tier_they_name(void **state)
{
    (void)state;
    enum { TIERS = 40, KEYS = 200 };
    static char yaml[16384];
    size_t at = (size_t)snprintf(yaml, sizeof(yaml), "limits:\n  tiers:\n");
    /* written out of order, so that the sorted order differs from the document's */
    for (size_t i = 0; i < TIERS; ++i)
        at += (size_t)snprintf(yaml + at, sizeof(yaml) - at, "    t%zu: %zu\n", (i * 7) % TIERS, 100 + (i * 7) % TIERS);
    at += (size_t)snprintf(yaml + at, sizeof(yaml) - at, "  keys:\n");
    for (size_t k = 0; k < KEYS; ++k)
        at += (size_t)snprintf(yaml + at, sizeof(yaml) - at, "    key%zu: t%zu\n", k, (k * 13) % TIERS);
    assert_true(at < sizeof(yaml));
    char *errors;
    rl_config_t *config = parse(yaml, &errors);
    assert_non_null(config);
    assert_int_equal(config->limits.num_keys, KEYS);
    for (size_t k = 0; k < KEYS; ++k) {
        char name[16];
        snprintf(name, sizeof(name), "t%zu", (k * 13) % TIERS);
        const rl_tier_config_t *tier = &config->limits.tiers[config->limits.keys[k].tier_index];
        assert_string_equal(tier->name, name);
        assert_int_equal(tier->limit, 100 + (k * 13) % TIERS);
    }
    rl_config_destroy(config);
}

static void test_invalid_api_key_is_rejected_without_echoing_it(void **state)
{
    (void)state;
    char long_key[300];
    memset(long_key, 'k', 257);
    long_key[257] = '\0';
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "limits:\n  tiers: {free: 1}\n  keys:\n    \"secret key\": free\n    %s: free\n",
             long_key);
    char *errors;
    assert_null(parse(yaml, &errors));
    assert_has_error(errors, "conf/t.yaml:4:5: limits.keys: an API key must be 1-256 bytes of 0x21-0x7E");
    assert_has_error(errors, "conf/t.yaml:5:5: limits.keys: an API key must be 1-256 bytes of 0x21-0x7E");
    assert_null(strstr(errors, "secret"));
    assert_null(strstr(errors, "kkkk"));
    free(errors);
    assert_single_error("limits:\n  tiers: {free: 1}\n  keys: {\"\": free}\n",
                        "conf/t.yaml:3:10: limits.keys: an API key must be");
}

static void test_bad_tier_name_is_rejected(void **state)
{
    (void)state;
    assert_single_error("limits:\n  tiers:\n    \"gold tier\": 5\n",
                        "conf/t.yaml:3:5: limits.tiers.gold tier: a tier name must be 1-64 characters");
    assert_single_error("limits:\n  tiers: {\"\": 5}\n", "conf/t.yaml:2:11: limits.tiers.\"\": a tier name must be");
    /* RateLimit-Policy would name two different limits "default" */
    assert_single_error("limits:\n  tiers: {free: 1, default: 5}\n",
                        "conf/t.yaml:2:20: limits.tiers.default: \"default\" is the policy name of limits.default");
    char yaml[128];
    snprintf(yaml, sizeof(yaml), "limits: {tiers: {%065d: 1}}\n", 0);
    assert_single_error(yaml, "conf/t.yaml:1:18: limits.tiers.");
    snprintf(yaml, sizeof(yaml), "limits: {tiers: {a%063d: 1}}\n", 0);
    char *errors;
    rl_config_t *config = parse(yaml, &errors);
    assert_non_null(config);
    rl_config_destroy(config);
}

static void test_timeout_must_end_before_the_counter_can_expire(void **state)
{
    (void)state;
    assert_single_error("backend:\n  type: memcached\n  servers: ['10.0.0.1:11211']\n  timeout_ms: 1001\n",
                        "conf/t.yaml:4:15: backend.timeout_ms: 1001 ms is longer than window_ttl_s 3 allows (at most "
                        "1000 ms");
    assert_single_error(
        "backend:\n  type: memcached\n  servers: ['10.0.0.1:11211']\n  window_ttl_s: 4\n"
        "  timeout_ms: 2500\n",
        "conf/t.yaml:5:15: backend.timeout_ms: 2500 ms is longer than window_ttl_s 4 allows (at most "
        "2000 ms, (window_ttl_s - 2) x 1000): a late count could outlive its window's counter and start "
        "it over; raise window_ttl_s to 5");
    static const char *fits[] = {
        "backend: {type: memcached, servers: ['10.0.0.1:11211'], timeout_ms: 1000}\n",
        "backend: {type: memcached, servers: ['10.0.0.1:11211'], timeout_ms: 2000, window_ttl_s: 4}\n",
        /* the local store has no network wait */
        "backend: {type: local, timeout_ms: 60000}\n",
    };
    for (size_t i = 0; i != sizeof(fits) / sizeof(fits[0]); ++i) {
        char *errors;
        rl_config_t *config = parse(fits[i], &errors);
        if (config == NULL)
            fail_msg("%s: %s", fits[i], errors);
        rl_config_destroy(config);
    }
}

static void test_tls_needs_both_certificate_and_key(void **state)
{
    (void)state;
    assert_single_error("listen:\n  - port: 443\n    tls: {certificate: c.pem}\n",
                        "conf/t.yaml:3:10: listen[0].tls: needs both certificate and key (key is missing)");
    assert_single_error("listen:\n  - port: 443\n    tls:\n      key: k.pem\n",
                        "conf/t.yaml:4:7: listen[0].tls: needs both certificate and key (certificate is missing)");
    assert_single_error("listen:\n  - port: 443\n    tls: {certificate: \"\", key: k}\n",
                        "conf/t.yaml:3:24: listen[0].tls.certificate: must not be empty");
}

static void test_key_prefix_must_be_short_printable_ascii(void **state)
{
    (void)state;
    assert_single_error("backend: {type: local, key_prefix: \"a b\"}\n",
                        "conf/t.yaml:1:36: backend.key_prefix: must be printable ASCII without spaces");
    assert_single_error("backend: {type: local, key_prefix: \"a\\tb\"}\n",
                        "conf/t.yaml:1:36: backend.key_prefix: must be printable ASCII");
    char yaml[160];
    snprintf(yaml, sizeof(yaml), "backend: {type: local, key_prefix: %065d}\n", 0);
    assert_single_error(yaml, "conf/t.yaml:1:36: backend.key_prefix: must be at most 64 bytes");
    snprintf(yaml, sizeof(yaml), "backend: {type: local, key_prefix: \"%064d\"}\n", 0);
    char *errors;
    rl_config_t *config = parse(yaml, &errors);
    assert_non_null(config);
    assert_int_equal(strlen(config->backend.key_prefix), 64);
    rl_config_destroy(config);
}

static void test_listen_address_must_be_an_ip_literal(void **state)
{
    (void)state;
    assert_single_error("listen:\n  - address: localhost\n    port: 1\n",
                        "conf/t.yaml:2:14: listen[0].address: must be an IPv4 or IPv6 address (no host names, no "
                        "brackets), got \"localhost\"");
    assert_single_error("listen:\n  - {address: \"[::1]\", port: 1}\n", "conf/t.yaml:2:15: listen[0].address:");
    char *errors;
    rl_config_t *config = parse("listen:\n  - {address: \"::\", port: 1}\n", &errors);
    assert_non_null(config);
    assert_string_equal(config->listen[0].address, "::");
    rl_config_destroy(config);
}

static void test_duplicate_listen_address_and_port_is_an_error(void **state)
{
    (void)state;
    assert_single_error("listen:\n  - {address: \"::1\", port: 80}\n  - {address: 127.0.0.1, port: 80}\n"
                        "  - {address: \"0:0::1\", port: 80}\n",
                        "conf/t.yaml:4:5: listen[2]: duplicate listener [0:0::1]:80 (also listen[0])");
    assert_single_error("listen:\n  - port: 80\n  - port: 80\n    tls: {certificate: c, key: k}\n",
                        "conf/t.yaml:3:5: listen[1]: duplicate listener 0.0.0.0:80");
    /* a wildcard takes every address of its family, so binding both would fail at start */
    assert_single_error("listen:\n  - {address: 0.0.0.0, port: 80}\n  - {address: 127.0.0.1, port: 80}\n",
                        "conf/t.yaml:3:5: listen[1]: overlapping listener 127.0.0.1:80 (same port as listen[0], and "
                        "one of the two is a wildcard address)");
    assert_single_error("listen:\n  - {address: \"::1\", port: 80}\n  - {address: \"::\", port: 80}\n",
                        "conf/t.yaml:3:5: listen[1]: overlapping listener [::]:80");
    /* different families do not clash: IPv6 listeners are IPv6-only */
    char *errors = NULL;
    rl_config_t *config =
        parse("listen:\n  - {address: 0.0.0.0, port: 80}\n  - {address: \"::\", port: 80}\n", &errors);
    assert_non_null(config);
    rl_config_destroy(config);
    /* IPv6-only sockets cannot bind an IPv4-mapped address */
    assert_single_error("listen:\n  - {address: \"::ffff:127.0.0.1\", port: 80}\n",
                        "conf/t.yaml:2:15: listen[0].address: must be written as an IPv4 address");
}

/* A value already reported is not reported again through what depends on it. */
static void test_rejected_values_cause_no_follow_on_errors(void **state)
{
    (void)state;
    /* listeners whose port or address was rejected are not compared with the others */
    static const char *const two_bad[] = {"listen: [{port: 99999}, {port: 0}]\n",
                                          "listen: [{address: 127.0.0.1}, {address: 127.0.0.1}]\n"};
    for (size_t i = 0; i < 2; ++i) {
        char *errors = NULL;
        assert_null(parse(two_bad[i], &errors));
        assert_int_equal(count_lines(errors), 2); /* one per listener, no third "duplicate" */
        assert_null(strstr(errors, "duplicate"));
        free(errors);
    }
    assert_single_error("listen: [{port: 8080}, {address: localhost, port: 8080}]\n",
                        "conf/t.yaml:1:34: listen[1].address: must be an IPv4 or IPv6 address");
    /* a key naming a tier whose limit was rejected is not "unknown tier" */
    assert_single_error("limits: {tiers: {premium: 0}, keys: {\"premium-key-1\": premium}}\n",
                        "conf/t.yaml:1:27: limits.tiers.premium: must be between 1 and 1000000000");
}

static void test_several_errors_are_reported_at_once(void **state)
{
    (void)state;
    char *errors;
    rl_config_t *config = parse("listen:\n"
                                "  - port: 99999\n"
                                "threads: x\n"
                                "colour: blue\n"
                                "limits:\n"
                                "  keys: {k: gold}\n"
                                "backend:\n"
                                "  type: memcached\n",
                                &errors);
    assert_null(config);
    assert_has_error(errors, "conf/t.yaml:2:11: listen[0].port: must be between 1 and 65535");
    assert_has_error(errors, "conf/t.yaml:3:10: threads: expected a decimal integer");
    assert_has_error(errors, "conf/t.yaml:4:1: colour: unknown field");
    assert_has_error(errors, "conf/t.yaml:6:13: limits.keys: unknown tier \"gold\"");
    assert_has_error(errors, "conf/t.yaml:8:9: backend.servers: the memcached backend needs at least one server");
    assert_int_equal(count_lines(errors), 5);
    free(errors);
}

static void test_error_list_is_capped(void **state)
{
    (void)state;
    size_t cap = 200 * 16 + 1;
    char *yaml = malloc(cap);
    size_t at = 0;
    for (int i = 0; i < 200; ++i)
        at += (size_t)snprintf(yaml + at, cap - at, "x%03d: 1\n", i);
    char *errors;
    assert_null(rl_config_parse("t", yaml, at, &errors));
    assert_int_equal(count_lines(errors), 101);
    assert_non_null(strstr(errors, "t: 100 more errors not shown\n"));
    free(errors);
    free(yaml);
}

static void test_cyclic_alias_neither_hangs_nor_crashes(void **state)
{
    (void)state;
    char *errors;
    assert_null(parse("listen: &l [*l]\nlimits: &m {tiers: *m, keys: *m}\n", &errors));
    assert_non_null(errors);
    free(errors);
}

static void test_missing_file_reports_file_and_strerror(void **state)
{
    (void)state;
    char *errors = NULL;
    assert_null(rl_config_load("/nonexistent/ratelimitd.yaml", &errors));
    assert_string_equal(errors, "/nonexistent/ratelimitd.yaml: No such file or directory\n");
    free(errors);
    assert_null(rl_config_load("/", &errors));
    assert_string_equal(errors, "/: Is a directory\n");
    free(errors);
    assert_null(rl_config_load("/nonexistent", NULL));
}

/* A FIFO would block open() until a writer came, and SIGHUP reloads run on the thread that takes
 * SIGTERM: it must be refused at once, naming the file. */
static void test_fifo_is_refused_without_blocking(void **state)
{
    (void)state;
    char dir[] = "/tmp/rl_test_config_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/fifo.yaml", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    /* without the fix open() waits forever; end the test instead of hanging ctest until its timeout */
    alarm(10);
    char *errors = NULL, expected[128];
    assert_null(rl_config_load(path, &errors));
    alarm(0);
    snprintf(expected, sizeof(expected), "%s: not a regular file\n", path);
    assert_string_equal(errors, expected);
    free(errors);
    assert_null(rl_config_load("/dev/null", &errors));
    assert_string_equal(errors, "/dev/null: not a regular file\n");
    free(errors);
    remove(path);
    rmdir(dir);
}

static void test_load_reads_a_file_and_reports_its_name(void **state)
{
    (void)state;
    char path[] = "/tmp/rl_test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *file = fdopen(fd, "w");
    fputs("threads: 2\nthreds: 3\n", file);
    fclose(file);
    char *errors = NULL, expected[128];
    assert_null(rl_config_load(path, &errors));
    snprintf(expected, sizeof(expected), "%s:2:1: threds: unknown field\n", path);
    assert_string_equal(errors, expected);
    free(errors);
    remove(path);
}

static void load_shipped(const char *name, rl_backend_type_t backend, size_t num_listen)
{
    const char *root = getenv("RL_SOURCE_DIR");
    if (root == NULL)
        root = ".";
    char path[4096];
    snprintf(path, sizeof(path), "%s/conf/%s", root, name);
    char *errors = NULL;
    rl_config_t *config = rl_config_load(path, &errors);
    if (config == NULL)
        fail_msg("%s", errors != NULL ? errors : "out of memory");
    assert_int_equal(config->backend.type, backend);
    assert_int_equal(config->num_listen, num_listen);
    assert_int_equal(config->limits.num_keys, 1);
    rl_config_destroy(config);
}

static void test_shipped_configs_load_without_errors(void **state)
{
    (void)state;
    load_shipped("ratelimitd.yaml", RL_BACKEND_MEMCACHED, 2);
    load_shipped("ratelimitd-local.yaml", RL_BACKEND_LOCAL, 1);
}

static void test_parse_accepts_null_name_and_buffer(void **state)
{
    (void)state;
    char *errors;
    assert_null(rl_config_parse(NULL, NULL, 0, &errors));
    assert_string_equal(errors, "<config>:1:1: the configuration is empty\n");
    free(errors);
    rl_config_destroy(NULL);
}

/* Parses `yaml` (which must be valid) and lists the sections that differ from `base`. */
static size_t changed_sections(const rl_config_t *base, const char *yaml, const char **names, size_t max)
{
    char *errors = NULL;
    rl_config_t *loaded = parse(yaml, &errors);
    assert_non_null(loaded);
    size_t n = rl_config_restart_sections(base, loaded, names, max);
    rl_config_destroy(loaded);
    return n;
}

static void test_restart_sections_name_what_a_reload_cannot_apply(void **state)
{
    (void)state;
    static const char base_yaml[] = "listen: [{port: 8080, tls: {certificate: c.pem, key: k.pem}}]\n"
                                    "backend: {type: memcached, servers: ['10.0.0.1:11211'], timeout_ms: 20}\n"
                                    "limits: {default: 10}\n";
    char *errors = NULL;
    rl_config_t *base = parse(base_yaml, &errors);
    assert_non_null(base);
    const char *names[8];

    assert_int_equal(changed_sections(base, base_yaml, names, 8), 0);
    /* limits are what a reload applies: never named */
    assert_int_equal(changed_sections(base,
                                      "listen: [{port: 8080, tls: {certificate: c.pem, key: k.pem}}]\n"
                                      "backend: {type: memcached, servers: ['10.0.0.1:11211'], timeout_ms: 20}\n"
                                      "limits: {default: 99, tiers: {gold: 5}, keys: {k1: gold}}\n",
                                      names, 8),
                     0);
    assert_int_equal(changed_sections(base,
                                      "listen: [{port: 8080, tls: {certificate: c.pem, key: other.pem}}]\n"
                                      "backend: {type: memcached, servers: ['10.0.0.1:11211:2'], timeout_ms: 20}\n",
                                      names, 8),
                     2);
    assert_string_equal(names[0], "listen");
    assert_string_equal(names[1], "backend");
    assert_int_equal(changed_sections(base,
                                      "listen: [{port: 8080, tls: {certificate: c.pem, key: k.pem}}]\n"
                                      "threads: 2\napi_key_header: X-Key\nlog_level: debug\n"
                                      "backend: {type: memcached, servers: ['10.0.0.1:11211'], timeout_ms: 21}\n"
                                      "server: {idle_timeout_ms: 500}\nshutdown_grace_ms: 1\n",
                                      names, 8),
                     6);
    const char *all[] = {"threads", "api_key_header", "backend", "server", "log_level", "shutdown_grace_ms"};
    for (size_t i = 0; i < 6; ++i)
        assert_string_equal(names[i], all[i]);
    /* at most max_names are written */
    assert_int_equal(changed_sections(base, "listen: [{port: 9090}]\nthreads: 2\n", names, 1), 1);
    assert_string_equal(names[0], "listen");
    rl_config_destroy(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_example_sets_every_field),
        cmocka_unit_test(test_extra_fields_are_parsed),
        cmocka_unit_test(test_omitted_fields_get_header_defaults_and_local_backend),
        cmocka_unit_test(test_memcached_servers_accept_weights_default_port_and_ipv6),
        cmocka_unit_test(test_tls_paths_resolve_against_the_config_directory),
        cmocka_unit_test(test_api_key_header_is_stored_lower_cased),
        cmocka_unit_test(test_empty_file_is_an_error),
        cmocka_unit_test(test_top_level_that_is_not_a_mapping_is_an_error),
        cmocka_unit_test(test_yaml_syntax_error_reports_libyaml_mark),
        cmocka_unit_test(test_aliases_and_tags_are_refused_where_written),
        cmocka_unit_test(test_tags_and_second_documents_do_not_hide_other_errors),
        cmocka_unit_test(test_nesting_deeper_than_16_levels_is_refused),
        cmocka_unit_test(test_invalid_utf8_is_a_syntax_error_with_position),
        cmocka_unit_test(test_multiple_documents_are_an_error),
        cmocka_unit_test(test_unknown_field_reports_line_and_column),
        cmocka_unit_test(test_wrong_type_reports_what_was_expected),
        cmocka_unit_test(test_integer_garbage_is_rejected),
        cmocka_unit_test(test_out_of_range_and_overflowing_integers_are_rejected),
        cmocka_unit_test(test_bad_enum_value_lists_the_choices),
        cmocka_unit_test(test_duplicate_key_reports_the_second_occurrence),
        cmocka_unit_test(test_missing_listen_port_is_reported_at_the_listener),
        cmocka_unit_test(test_listener_roles_default_to_api_and_need_one_api_listener),
        cmocka_unit_test(test_memcached_backend_without_servers_is_an_error),
        cmocka_unit_test(test_more_servers_than_the_ring_holds_is_an_error),
        cmocka_unit_test(test_bad_server_entries_are_rejected),
        cmocka_unit_test(test_key_naming_an_unknown_tier_is_an_error),
        cmocka_unit_test(test_many_keys_each_get_the_tier_they_name),
        cmocka_unit_test(test_invalid_api_key_is_rejected_without_echoing_it),
        cmocka_unit_test(test_bad_tier_name_is_rejected),
        cmocka_unit_test(test_timeout_must_end_before_the_counter_can_expire),
        cmocka_unit_test(test_tls_needs_both_certificate_and_key),
        cmocka_unit_test(test_key_prefix_must_be_short_printable_ascii),
        cmocka_unit_test(test_listen_address_must_be_an_ip_literal),
        cmocka_unit_test(test_duplicate_listen_address_and_port_is_an_error),
        cmocka_unit_test(test_rejected_values_cause_no_follow_on_errors),
        cmocka_unit_test(test_several_errors_are_reported_at_once),
        cmocka_unit_test(test_error_list_is_capped),
        cmocka_unit_test(test_cyclic_alias_neither_hangs_nor_crashes),
        cmocka_unit_test(test_missing_file_reports_file_and_strerror),
        cmocka_unit_test(test_fifo_is_refused_without_blocking),
        cmocka_unit_test(test_load_reads_a_file_and_reports_its_name),
        cmocka_unit_test(test_shipped_configs_load_without_errors),
        cmocka_unit_test(test_parse_accepts_null_name_and_buffer),
        cmocka_unit_test(test_restart_sections_name_what_a_reload_cannot_apply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
