/*
 * Logging: rl_log writes exactly one line "<ISO-8601 UTC>Z <level> <module>: <message>\n" to
 * stderr, drops events below the process-wide level, and cuts an over-long message short while
 * still ending it in exactly one newline. stderr is captured by pointing fd 2 at a temporary
 * file for the duration of one call; it is restored before any assertion, so cmocka's own
 * failure messages still reach the terminal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include "ratelimitd/error.h"
#include "ratelimitd/log.h"

#define CAPTURE_MAX 8192

typedef struct {
    char text[CAPTURE_MAX + 1];
    size_t len;
    time_t before, after; /* wall clock around the call, to check the timestamp */
} captured_t;

static int saved_stderr = -1;
static FILE *capture_file;

/* The logger's clock. time() reads the coarse clock, which can still show the previous second
 * for a tick after CLOCK_REALTIME has moved on, so a stamp could fall after `after`. */
static time_t wall_seconds(void)
{
    struct timespec now;
    assert_int_equal(clock_gettime(CLOCK_REALTIME, &now), 0);
    return now.tv_sec;
}

/* Points fd 2 at a fresh temporary file. */
static void capture_begin(captured_t *out)
{
    fflush(stderr);
    capture_file = tmpfile();
    assert_non_null(capture_file);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
    out->before = wall_seconds();
}

/* Restores fd 2 and reads back everything written to it since capture_begin(). */
static void capture_end(captured_t *out)
{
    out->after = wall_seconds();
    int restored = dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    assert_true(restored >= 0);
    rewind(capture_file);
    out->len = fread(out->text, 1, CAPTURE_MAX, capture_file);
    out->text[out->len] = '\0';
    fclose(capture_file);
    capture_file = NULL;
}

static size_t count_newlines(const captured_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < out->len; ++i)
        n += out->text[i] == '\n';
    return n;
}

static int is_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/*
 * Checks that `line` starts with "YYYY-MM-DDTHH:MM:SS[.fff]Z " naming a second within
 * [before, after]; returns the length of that prefix including the space.
 */
static size_t check_timestamp(const char *line, time_t before, time_t after)
{
    assert_true(is_digits(line, 4));
    assert_int_equal(line[4], '-');
    assert_true(is_digits(line + 5, 2));
    assert_int_equal(line[7], '-');
    assert_true(is_digits(line + 8, 2));
    assert_int_equal(line[10], 'T');
    assert_true(is_digits(line + 11, 2));
    assert_int_equal(line[13], ':');
    assert_true(is_digits(line + 14, 2));
    assert_int_equal(line[16], ':');
    assert_true(is_digits(line + 17, 2));
    size_t pos = 19;
    if (line[pos] == '.') {
        ++pos;
        size_t digits = 0;
        while (line[pos] >= '0' && line[pos] <= '9')
            ++pos, ++digits;
        assert_true(digits >= 1 && digits <= 9);
    }
    assert_int_equal(line[pos], 'Z');
    assert_int_equal(line[pos + 1], ' ');

    struct tm tm = {0};
    tm.tm_year = atoi(line) - 1900;
    tm.tm_mon = atoi(line + 5) - 1;
    tm.tm_mday = atoi(line + 8);
    tm.tm_hour = atoi(line + 11);
    tm.tm_min = atoi(line + 14);
    tm.tm_sec = atoi(line + 17);
    time_t stamped = timegm(&tm);
    assert_in_range(stamped, before, after);
    return pos + 2;
}

static void test_line_has_time_level_module_and_message(void **state)
{
    (void)state;
    rl_log_set_level(RL_LOG_DEBUG);
    captured_t out;
    capture_begin(&out);
    rl_log(RL_LOG_WARN, "server", "listening on %s:%d", "127.0.0.1", 8080);
    capture_end(&out);

    assert_int_equal(count_newlines(&out), 1);
    assert_int_equal(out.text[out.len - 1], '\n');
    size_t prefix = check_timestamp(out.text, out.before, out.after);
    assert_string_equal(out.text + prefix, "warn server: listening on 127.0.0.1:8080\n");
}

static void test_each_level_is_named_in_the_line(void **state)
{
    (void)state;
    static const struct {
        rl_log_level_t level;
        const char *expected;
    } cases[] = {
        {RL_LOG_DEBUG, "debug m: x\n"},
        {RL_LOG_INFO, "info m: x\n"},
        {RL_LOG_WARN, "warn m: x\n"},
        {RL_LOG_ERROR, "error m: x\n"},
    };
    rl_log_set_level(RL_LOG_DEBUG);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        captured_t out;
        capture_begin(&out);
        rl_log(cases[i].level, "m", "x");
        capture_end(&out);
        assert_int_equal(count_newlines(&out), 1);
        size_t prefix = check_timestamp(out.text, out.before, out.after);
        assert_string_equal(out.text + prefix, cases[i].expected);
    }
}

static void test_convenience_macros_log_at_their_level(void **state)
{
    (void)state;
    rl_log_set_level(RL_LOG_DEBUG);
    captured_t out;
    capture_begin(&out);
    rl_log_error("main", "code %d", -6);
    capture_end(&out);
    size_t prefix = check_timestamp(out.text, out.before, out.after);
    assert_string_equal(out.text + prefix, "error main: code -6\n");
}

static void test_lines_below_the_level_are_dropped(void **state)
{
    (void)state;
    rl_log_set_level(RL_LOG_WARN);
    captured_t out;
    capture_begin(&out);
    rl_log_debug("m", "dropped debug");
    rl_log_info("m", "dropped info");
    rl_log_warn("m", "kept warn");
    rl_log_error("m", "kept error");
    capture_end(&out);

    assert_int_equal(count_newlines(&out), 2);
    assert_null(strstr(out.text, "dropped"));
    const char *warn = strstr(out.text, "warn m: kept warn\n");
    const char *error = strstr(out.text, "error m: kept error\n");
    assert_non_null(warn);
    assert_non_null(error);
    assert_true(warn < error);
    rl_log_set_level(RL_LOG_INFO);
}

static void test_error_level_drops_everything_else(void **state)
{
    (void)state;
    rl_log_set_level(RL_LOG_ERROR);
    assert_false(rl_log_enabled(RL_LOG_DEBUG));
    assert_false(rl_log_enabled(RL_LOG_INFO));
    assert_false(rl_log_enabled(RL_LOG_WARN));
    assert_true(rl_log_enabled(RL_LOG_ERROR));
    captured_t out;
    capture_begin(&out);
    rl_log_warn("m", "dropped");
    capture_end(&out);
    assert_int_equal(out.len, 0);

    rl_log_set_level(RL_LOG_DEBUG);
    assert_true(rl_log_enabled(RL_LOG_DEBUG));
    rl_log_set_level(RL_LOG_INFO);
}

static void test_parse_level_accepts_the_four_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        rl_log_level_t level;
    } cases[] = {
        {"debug", RL_LOG_DEBUG},
        {"info", RL_LOG_INFO},
        {"warn", RL_LOG_WARN},
        {"error", RL_LOG_ERROR},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        rl_log_level_t level = (rl_log_level_t)-1;
        assert_int_equal(rl_log_parse_level(cases[i].name, &level), RL_OK);
        assert_int_equal(level, cases[i].level);
    }
}

static void test_parse_level_rejects_other_names(void **state)
{
    (void)state;
    static const char *const rejected[] = {"", "warning", "err", "inf", "debugx", "fatal", "trace", " info", "info "};
    for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); ++i) {
        rl_log_level_t level = RL_LOG_ERROR;
        assert_int_equal(rl_log_parse_level(rejected[i], &level), RL_ERR_INVALID);
        assert_int_equal(level, RL_LOG_ERROR); /* untouched on rejection */
    }
}

static void test_long_message_is_truncated_to_one_line(void **state)
{
    (void)state;
    static char message[4001];
    for (size_t i = 0; i < sizeof(message) - 1; ++i)
        message[i] = (char)('a' + i % 26);
    message[sizeof(message) - 1] = '\0';

    rl_log_set_level(RL_LOG_DEBUG);
    captured_t out;
    capture_begin(&out);
    rl_log_info("m", "%s", message);
    capture_end(&out);

    assert_int_equal(count_newlines(&out), 1);
    assert_int_equal(out.text[out.len - 1], '\n');
    assert_true(out.len < sizeof(message)); /* actually cut */
    assert_true(out.len >= 256);            /* but not to nothing */
    size_t prefix = check_timestamp(out.text, out.before, out.after);
    assert_memory_equal(out.text + prefix, "info m: ", 8);
    size_t body = out.len - prefix - 8 - 1;
    assert_memory_equal(out.text + prefix + 8, message, body);
    rl_log_set_level(RL_LOG_INFO);
}

/* Every length around the buffer size ends in exactly one newline: no off-by-one at the edge. */
static void test_messages_near_the_buffer_size_end_in_one_newline(void **state)
{
    (void)state;
    static char message[1200];
    memset(message, 'x', sizeof(message));
    rl_log_set_level(RL_LOG_DEBUG);
    for (int n = 900; n < (int)sizeof(message); ++n) {
        captured_t out;
        capture_begin(&out);
        rl_log_info("m", "%.*s", n, message);
        capture_end(&out);
        assert_int_equal(count_newlines(&out), 1);
        assert_int_equal(out.text[out.len - 1], '\n');
        size_t prefix = check_timestamp(out.text, out.before, out.after);
        size_t body = out.len - prefix - strlen("info m: ") - 1;
        assert_true(body <= (size_t)n);
        assert_int_equal(strspn(out.text + prefix + strlen("info m: "), "x"), body);
    }
    rl_log_set_level(RL_LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_has_time_level_module_and_message),
        cmocka_unit_test(test_each_level_is_named_in_the_line),
        cmocka_unit_test(test_convenience_macros_log_at_their_level),
        cmocka_unit_test(test_lines_below_the_level_are_dropped),
        cmocka_unit_test(test_error_level_drops_everything_else),
        cmocka_unit_test(test_parse_level_accepts_the_four_names),
        cmocka_unit_test(test_parse_level_rejects_other_names),
        cmocka_unit_test(test_long_message_is_truncated_to_one_line),
        cmocka_unit_test(test_messages_near_the_buffer_size_end_in_one_newline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
