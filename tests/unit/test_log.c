/*
 * Logging: rl_log writes exactly one line "<ISO-8601 UTC>Z <level> <module>: <message>\n" to
 * stderr, drops events below the process-wide level, and cuts an over-long message short while
 * still ending it in exactly one newline. stderr is captured by pointing fd 2 at a temporary
 * file for the duration of one call; it is restored before any assertion, so cmocka's own
 * failure messages still reach the terminal.
 *
 * An event-loop thread (rl_log_never_block) never waits for stderr: the logger is pointed with
 * rl_log_open at a pipe shrunk to one page, or a socket with a small send buffer, that nobody
 * reads, and filled from such a thread. A watchdog (alarm) ends the program if rl_log waits, so a
 * regression fails instead of hanging. Other threads still wait, and the first line written after
 * a drop is preceded by one giving the count.
 */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
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

/* ---- a destination that cannot keep up ---- */

#define FILL_LINES 200
#define WATCHDOG_SECONDS 10
#define DROP_REPORT " lines dropped before this one: "

/* A log whose destination is `write_fd`; the test reads `read_fd`. */
typedef struct {
    int write_fd;
    int read_fd;
} sink_t;

static void on_watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "test_log: watchdog: rl_log waited on an event-loop thread, or a line never came\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(1);
}

/* A regression makes rl_log wait for ever; the watchdog turns that into a failure. */
static void arm_watchdog(void)
{
    struct sigaction sa = {.sa_handler = on_watchdog};
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
    alarm(WATCHDOG_SECONDS);
}

static void disarm_watchdog(void)
{
    alarm(0);
}

/* Everything readable from `fd` now, without waiting, NUL-terminated; returns its length. */
static size_t read_available(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (len < cap - 1 && poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN)) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return len;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (; *text != '\0'; ++text)
        n += *text == '\n';
    return n;
}

static void point_log_at(sink_t *sink, int write_fd, int read_fd)
{
    sink->write_fd = write_fd;
    sink->read_fd = read_fd;
    assert_int_equal(rl_log_open(write_fd), RL_OK);
    rl_log_set_level(RL_LOG_INFO);
}

/* A pipe of one page (PIPE_BUF): a few dozen lines fill it. */
static int setup_small_pipe(void **state)
{
    static sink_t sink;
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    assert_int_equal(fcntl(fds[1], F_SETPIPE_SZ, 4096), 4096);
    point_log_at(&sink, fds[1], fds[0]);
    *state = &sink;
    return 0;
}

/* journald's kind of stderr: a Unix stream socket, here with the smallest send buffer. */
static int setup_small_socket(void **state)
{
    static sink_t sink;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int size = 1;
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
    point_log_at(&sink, sv[0], sv[1]);
    *state = &sink;
    return 0;
}

/* Drains, lets one line carry any report still owed (so the next test starts with none), and puts
 * the log back on fd 2. */
static int teardown_sink(void **state)
{
    sink_t *sink = *state;
    static char text[65536];
    read_available(sink->read_fd, text, sizeof(text));
    rl_log_info("test", "teardown");
    read_available(sink->read_fd, text, sizeof(text));
    assert_int_equal(rl_log_open(STDERR_FILENO), RL_OK);
    close(sink->write_fd);
    close(sink->read_fd);
    return 0;
}

static void *log_from_loop_thread(void *arg)
{
    int lines = *(const int *)arg;
    rl_log_never_block();
    for (int i = 0; i < lines; ++i)
        rl_log_warn("memcached", "line %03d: node n1 sent an invalid or unexpected reply: \"HTTP/1.1 200 OK\"", i);
    return NULL;
}

/* Logs `lines` lines from a thread that declared itself an event-loop thread; returns once it has. */
static void run_loop_thread(int lines)
{
    pthread_t thread;
    arm_watchdog();
    assert_int_equal(pthread_create(&thread, NULL, log_from_loop_thread, &lines), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    disarm_watchdog();
}

/* The lines written are whole, in order, and with the dropped ones make up all FILL_LINES. */
static void check_whole_lines_and_drops(const char *text, uint64_t dropped)
{
    size_t written = count_lines(text);
    assert_true(written > 0);
    assert_true(dropped > 0);
    assert_int_equal(written + dropped, FILL_LINES);
    const char *line = text;
    for (size_t i = 0; i < written; ++i) {
        char expected[48];
        snprintf(expected, sizeof(expected), "warn memcached: line %03zu: ", i);
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        const char *found = strstr(line, expected);
        assert_true(found != NULL && found < end);
        assert_memory_equal(end - 1, "\"\n", 2);
        line = end + 1;
    }
}

/* Logs FILL_LINES from a loop thread into the sink, reads what got through into `text`; returns
 * how many lines were counted as dropped meanwhile. */
static uint64_t fill_from_loop_thread(sink_t *sink, char *text, size_t cap)
{
    uint64_t before = rl_log_lines_dropped();
    run_loop_thread(FILL_LINES);
    uint64_t dropped = rl_log_lines_dropped() - before;
    read_available(sink->read_fd, text, cap);
    return dropped;
}

/* The sink's description, shared with whoever holds it, stays blocking throughout. */
static void check_loop_thread_drops_whole_lines(sink_t *sink)
{
    assert_false(fcntl(sink->write_fd, F_GETFL) & O_NONBLOCK);
    static char text[65536];
    uint64_t dropped = fill_from_loop_thread(sink, text, sizeof(text));
    check_whole_lines_and_drops(text, dropped);
    assert_false(fcntl(sink->write_fd, F_GETFL) & O_NONBLOCK);
}

static void test_loop_thread_drops_and_counts_lines_a_full_pipe_cannot_take(void **state)
{
    check_loop_thread_drops_whole_lines(*state);
}

static void test_loop_thread_drops_and_counts_lines_a_full_socket_cannot_take(void **state)
{
    check_loop_thread_drops_whole_lines(*state);
}

/* Checks that `text` is the report of `dropped` lines followed by exactly `line`. */
static void check_report_then(const char *text, uint64_t dropped, const char *line)
{
    assert_int_equal(count_lines(text), 2);
    char report[64];
    snprintf(report, sizeof(report), " warn log: %llu" DROP_REPORT, (unsigned long long)dropped);
    const char *found = strstr(text, report);
    assert_non_null(found);
    assert_true(found < strchr(text, '\n'));
    assert_non_null(strstr(strchr(text, '\n') + 1, line));
}

static void test_first_line_after_a_drain_says_how_many_were_dropped(void **state)
{
    sink_t *sink = *state;
    uint64_t before = rl_log_lines_dropped();
    static char text[65536];
    uint64_t dropped = fill_from_loop_thread(sink, text, sizeof(text));

    run_loop_thread(1);
    read_available(sink->read_fd, text, sizeof(text));
    check_report_then(text, dropped, " warn memcached: line 000: ");
    /* said once */
    run_loop_thread(1);
    read_available(sink->read_fd, text, sizeof(text));
    assert_int_equal(count_lines(text), 1);
    assert_null(strstr(text, DROP_REPORT));
    assert_int_equal(rl_log_lines_dropped() - before, dropped);
}

static void *drain_until_marker(void *arg)
{
    sink_t *sink = arg;
    static char text[65536];
    size_t len = 0;
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL); /* so that the main thread's line meets a full pipe, most likely */
    while (len < sizeof(text) - 1) {
        ssize_t n = read(sink->read_fd, text + len, sizeof(text) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        text[len] = '\0';
        if (strstr(text, "waits for its reader\n") != NULL)
            return text;
    }
    return NULL;
}

static void test_other_threads_wait_for_a_full_pipe_and_lose_nothing(void **state)
{
    sink_t *sink = *state;
    uint64_t before = rl_log_lines_dropped();
    run_loop_thread(FILL_LINES);
    uint64_t dropped = rl_log_lines_dropped() - before;

    pthread_t drainer;
    assert_int_equal(pthread_create(&drainer, NULL, drain_until_marker, sink), 0);
    arm_watchdog(); /* if the drainer never found the line, rl_log still returns: the join would wait */
    rl_log_info("main", "SIGTERM received: this thread waits for its reader");
    void *text;
    assert_int_equal(pthread_join(drainer, &text), 0);
    disarm_watchdog();
    assert_non_null(text);
    assert_int_equal(rl_log_lines_dropped() - before, dropped);
    const char *report = strstr(text, DROP_REPORT);
    assert_non_null(report);
    assert_true(report < strstr(text, " info main: SIGTERM received: "));
}

static double monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A reader that stopped for good holds a waiting thread for a bounded time (2 s a line): main's
 * shutdown must go on. The line is then counted as dropped, and the next one through says so. */
static void test_other_threads_wait_a_bounded_time_for_a_reader_that_stopped(void **state)
{
    sink_t *sink = *state;
    run_loop_thread(FILL_LINES);
    uint64_t before = rl_log_lines_dropped();
    arm_watchdog();
    double start = monotonic_s();
    rl_log_info("main", "stopped");
    double waited = monotonic_s() - start;
    disarm_watchdog();
    assert_true(waited >= 1.9);
    assert_int_equal(rl_log_lines_dropped() - before, 1);
    static char text[65536];
    read_available(sink->read_fd, text, sizeof(text));
    assert_null(strstr(text, " info main: stopped\n"));
    rl_log_info("main", "after the reader came back");
    read_available(sink->read_fd, text, sizeof(text));
    assert_non_null(strstr(text, DROP_REPORT));
    assert_non_null(strstr(text, " info main: after the reader came back\n"));
}

/* A file is written through fd 2's own description: a second one would have an offset of its own
 * and write over the lines of the first. */
static void test_file_destination_keeps_every_line(void **state)
{
    (void)state;
    FILE *file = tmpfile();
    assert_non_null(file);
    assert_int_equal(rl_log_open(fileno(file)), RL_OK);
    rl_log_set_level(RL_LOG_INFO);
    rl_log_info("main", "first");
    run_loop_thread(3);
    rl_log_info("main", "last");
    assert_int_equal(rl_log_open(STDERR_FILENO), RL_OK);
    static char text[8192];
    rewind(file);
    text[fread(text, 1, sizeof(text) - 1, file)] = '\0';
    fclose(file);
    assert_int_equal(count_lines(text), 5);
    const char *first = strstr(text, " info main: first\n");
    const char *loop = strstr(text, " warn memcached: line 002: ");
    const char *last = strstr(text, " info main: last\n");
    assert_true(first != NULL && loop != NULL && last != NULL);
    assert_true(first < loop && loop < last);
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
        cmocka_unit_test_setup_teardown(test_loop_thread_drops_and_counts_lines_a_full_pipe_cannot_take,
                                        setup_small_pipe, teardown_sink),
        cmocka_unit_test_setup_teardown(test_loop_thread_drops_and_counts_lines_a_full_socket_cannot_take,
                                        setup_small_socket, teardown_sink),
        cmocka_unit_test_setup_teardown(test_first_line_after_a_drain_says_how_many_were_dropped, setup_small_pipe,
                                        teardown_sink),
        cmocka_unit_test_setup_teardown(test_other_threads_wait_for_a_full_pipe_and_lose_nothing, setup_small_pipe,
                                        teardown_sink),
        cmocka_unit_test_setup_teardown(test_other_threads_wait_a_bounded_time_for_a_reader_that_stopped,
                                        setup_small_pipe, teardown_sink),
        cmocka_unit_test(test_file_destination_keeps_every_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
