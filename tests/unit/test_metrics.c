/*
 * Metrics: counts from several thread slots add up in the exposition, histogram buckets are
 * cumulative, and node state follows the "up only if nobody holds it down" rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "ratelimitd/error.h"
#include "ratelimitd/log.h"
#include "ratelimitd/metrics.h"

static rl_config_t two_node_config(void)
{
    static rl_node_config_t nodes[2] = {{.name = "127.0.0.1:11211"}, {.name = "127.0.0.1:11212"}};
    rl_config_t config = {0};
    config.backend.type = RL_BACKEND_MEMCACHED;
    config.backend.servers = nodes;
    config.backend.num_servers = 2;
    return config;
}

/* Returns the value of the exposition line that starts with `series` followed by a space. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = strchr(line, '\n');
        if (line != NULL)
            ++line;
    }
    fail_msg("series %s not found", series);
    return -1;
}

static char *render(rl_metrics_t *metrics)
{
    size_t len;
    char *text = rl_metrics_render(metrics, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

static void test_request_counts_sum_over_threads(void **state)
{
    (void)state;
    rl_config_t config = two_node_config();
    rl_metrics_t *metrics = rl_metrics_create(2, &config);
    assert_non_null(metrics);
    for (int i = 0; i < 3; ++i)
        rl_metrics_count_request(rl_metrics_thread(metrics, 0), RL_OUTCOME_ALLOWED);
    rl_metrics_count_request(rl_metrics_thread(metrics, 1), RL_OUTCOME_ALLOWED);
    rl_metrics_count_request(rl_metrics_thread(metrics, 1), RL_OUTCOME_LIMITED);
    rl_metrics_count_deny_cache_hit(rl_metrics_thread(metrics, 1));
    char *text = render(metrics);
    assert_int_equal(value_of(text, "ratelimitd_requests_total{decision=\"allowed\"}"), 4);
    assert_int_equal(value_of(text, "ratelimitd_requests_total{decision=\"limited\"}"), 1);
    assert_int_equal(value_of(text, "ratelimitd_requests_total{decision=\"backend_error\"}"), 0);
    assert_int_equal(value_of(text, "ratelimitd_deny_cache_hits_total"), 1);
    free(text);
    rl_metrics_destroy(metrics);
}

static void test_latency_histogram_is_cumulative(void **state)
{
    (void)state;
    rl_config_t config = two_node_config();
    rl_metrics_t *metrics = rl_metrics_create(1, &config);
    rl_metrics_thread_t *mt = rl_metrics_thread(metrics, 0);
    rl_metrics_observe_backend_latency(mt, 40);      /* <= 50 us */
    rl_metrics_observe_backend_latency(mt, 700);     /* <= 1 ms */
    rl_metrics_observe_backend_latency(mt, 500000);  /* <= 0.5 s: a slow node under a long timeout_ms */
    rl_metrics_observe_backend_latency(mt, 3000000); /* +Inf */
    char *text = render(metrics);
    assert_int_equal(value_of(text, "ratelimitd_backend_request_duration_seconds_bucket{le=\"5e-05\"}"), 1);
    assert_int_equal(value_of(text, "ratelimitd_backend_request_duration_seconds_bucket{le=\"0.001\"}"), 2);
    assert_int_equal(value_of(text, "ratelimitd_backend_request_duration_seconds_bucket{le=\"0.1\"}"), 2);
    assert_int_equal(value_of(text, "ratelimitd_backend_request_duration_seconds_bucket{le=\"0.25\"}"), 2);
    assert_int_equal(value_of(text, "ratelimitd_backend_request_duration_seconds_bucket{le=\"0.5\"}"), 3);
    assert_int_equal(value_of(text, "ratelimitd_backend_request_duration_seconds_bucket{le=\"2.5\"}"), 3);
    assert_int_equal(value_of(text, "ratelimitd_backend_request_duration_seconds_bucket{le=\"+Inf\"}"), 4);
    assert_int_equal(value_of(text, "ratelimitd_backend_request_duration_seconds_count"), 4);
    assert_true(value_of(text, "ratelimitd_backend_request_duration_seconds_sum") > 3.50073);
    free(text);
    rl_metrics_destroy(metrics);
}

static void test_node_up_only_when_no_thread_holds_it_down(void **state)
{
    (void)state;
    rl_config_t config = two_node_config();
    rl_metrics_t *metrics = rl_metrics_create(2, &config);
    char *text = render(metrics);
    assert_int_equal(value_of(text, "ratelimitd_backend_node_up{node=\"127.0.0.1:11211\"}"), 0);
    free(text);
    rl_metrics_set_node_up(rl_metrics_thread(metrics, 0), 0, true);
    text = render(metrics);
    assert_int_equal(value_of(text, "ratelimitd_backend_node_up{node=\"127.0.0.1:11211\"}"), 1);
    free(text);
    rl_metrics_set_node_up(rl_metrics_thread(metrics, 1), 0, false);
    text = render(metrics);
    assert_int_equal(value_of(text, "ratelimitd_backend_node_up{node=\"127.0.0.1:11211\"}"), 0);
    free(text);
    rl_metrics_destroy(metrics);
}

static void test_backend_errors_and_pipelining_counters_per_node(void **state)
{
    (void)state;
    rl_config_t config = two_node_config();
    rl_metrics_t *metrics = rl_metrics_create(1, &config);
    rl_metrics_thread_t *mt = rl_metrics_thread(metrics, 0);
    rl_metrics_count_backend_error(mt, 1, RL_ERR_BACKEND_TIMEOUT);
    rl_metrics_count_backend_error(mt, 1, RL_ERR_BACKEND_PROTOCOL);
    rl_metrics_count_backend_error(mt, 1, RL_ERR_BACKEND_DOWN);
    rl_metrics_count_node_ejection(mt, 1);
    rl_metrics_count_backend_write(mt, 0, 64);
    rl_metrics_count_backend_write(mt, 0, 36);
    rl_metrics_count_backend_read(mt, 0, 100);
    char *text = render(metrics);
    assert_int_equal(value_of(text, "ratelimitd_backend_errors_total{node=\"127.0.0.1:11212\",reason=\"timeout\"}"), 1);
    assert_int_equal(value_of(text, "ratelimitd_backend_errors_total{node=\"127.0.0.1:11212\",reason=\"protocol\"}"),
                     1);
    assert_int_equal(value_of(text, "ratelimitd_backend_errors_total{node=\"127.0.0.1:11212\",reason=\"unreachable\"}"),
                     1);
    assert_int_equal(value_of(text, "ratelimitd_backend_errors_total{node=\"127.0.0.1:11211\",reason=\"timeout\"}"), 0);
    assert_int_equal(value_of(text, "ratelimitd_backend_ejections_total{node=\"127.0.0.1:11212\"}"), 1);
    assert_int_equal(value_of(text, "ratelimitd_backend_writes_total{node=\"127.0.0.1:11211\"}"), 2);
    assert_int_equal(value_of(text, "ratelimitd_backend_write_requests_total{node=\"127.0.0.1:11211\"}"), 100);
    assert_int_equal(value_of(text, "ratelimitd_backend_read_replies_total{node=\"127.0.0.1:11211\"}"), 100);
    free(text);
    rl_metrics_destroy(metrics);
}

static void test_connections_gauge_and_process_series(void **state)
{
    (void)state;
    rl_config_t config = {0}; /* local backend */
    rl_metrics_t *metrics = rl_metrics_create(2, &config);
    rl_metrics_thread_t *mt = rl_metrics_thread(metrics, 0);
    rl_metrics_connection_opened(mt, RL_LISTEN_API);
    rl_metrics_connection_opened(mt, RL_LISTEN_API);
    rl_metrics_connection_closed(mt, RL_LISTEN_API);
    rl_metrics_connection_opened(rl_metrics_thread(metrics, 1), RL_LISTEN_ADMIN);
    rl_metrics_connection_opened(rl_metrics_thread(metrics, 1), RL_LISTEN_ADMIN);
    rl_metrics_connection_opened(rl_metrics_thread(metrics, 1), RL_LISTEN_API);
    rl_metrics_connection_closed(mt, RL_LISTEN_ADMIN); /* another thread's slot: only the sum is exported */
    rl_metrics_set_max_connections(metrics, 1234);
    rl_metrics_count_connection_shed(mt, RL_LISTEN_API);
    rl_metrics_count_connection_shed(rl_metrics_thread(metrics, 1), RL_LISTEN_API);
    rl_metrics_count_connection_shed(rl_metrics_thread(metrics, 1), RL_LISTEN_ADMIN);
    rl_metrics_count_accept_pause(mt);
    rl_metrics_count_header_block_refused(rl_metrics_thread(metrics, 1));
    rl_metrics_count_header_block_refused(rl_metrics_thread(metrics, 1));
    rl_metrics_set_draining(metrics, true);
    rl_metrics_count_reload(metrics, true);
    rl_metrics_count_reload(metrics, false);
    char *text = render(metrics);
    assert_int_equal(value_of(text, "ratelimitd_open_connections"), 2); /* API listeners only */
    assert_int_equal(value_of(text, "ratelimitd_admin_open_connections"), 1);
    assert_int_equal(value_of(text, "ratelimitd_max_connections"), 1234);
    assert_int_equal(value_of(text, "ratelimitd_connections_shed_total"), 2); /* summed over threads */
    assert_int_equal(value_of(text, "ratelimitd_admin_connections_shed_total"), 1);
    char admin_help[64]; /* the HELP text states the limit the server enforces, not a copy of it */
    snprintf(admin_help, sizeof(admin_help), "their own limit of %d per process", RL_ADMIN_MAX_CONNECTIONS);
    assert_non_null(strstr(text, admin_help));
    assert_int_equal(value_of(text, "ratelimitd_accept_pauses_total"), 1);
    assert_int_equal(value_of(text, "ratelimitd_http2_header_blocks_refused_total"), 2);
    assert_int_equal(value_of(text, "ratelimitd_draining"), 1);
    assert_int_equal(value_of(text, "ratelimitd_config_reloads_total{result=\"ok\"}"), 1);
    assert_int_equal(value_of(text, "ratelimitd_config_reloads_total{result=\"rejected\"}"), 1);
    assert_non_null(strstr(text, "ratelimitd_build_info{version=\"" RL_VERSION "\",backend=\"local\"} 1\n"));
    assert_int_equal(value_of(text, "ratelimitd_backend_node_up{node=\"local\"}"), 0);
    /* the log's own process-wide count, as rl_log_lines_dropped() gives it */
    assert_non_null(strstr(text, "# TYPE ratelimitd_log_lines_dropped_total counter\n"));
    assert_int_equal(value_of(text, "ratelimitd_log_lines_dropped_total"), rl_log_lines_dropped());
    free(text);
    rl_metrics_destroy(metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_counts_sum_over_threads),
        cmocka_unit_test(test_latency_histogram_is_cumulative),
        cmocka_unit_test(test_node_up_only_when_no_thread_holds_it_down),
        cmocka_unit_test(test_backend_errors_and_pipelining_counters_per_node),
        cmocka_unit_test(test_connections_gauge_and_process_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
