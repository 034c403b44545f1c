/*
 * Line-oriented logging to stderr. Each event is formatted into one buffer and written with a
 * single write(2), so lines from different threads never interleave mid-line.
 *
 * An event-loop thread must never block, and a write to a pipe whose reader has fallen behind
 * (a container's log driver, `| tee` on a slow disk) blocks until the reader catches up: every
 * client of that thread would wait with it. So a thread that called rl_log_never_block() writes
 * without waiting and drops a line stderr cannot take at once. Drops are counted (for /metrics)
 * and the next line that is written, by any thread, is preceded by one giving their number, so
 * the gap shows in the log itself. Other threads (main: start-up, reloads, shutdown) wait, up to
 * RL_LOG_WAIT_MS a line: a slow reader loses none of their lines, one that stopped for good cannot
 * hold up a shutdown.
 *
 * How to write without waiting depends on what stderr is; rl_log_open() looks once:
 * - a pipe or FIFO: a second open file description of it, opened O_NONBLOCK through
 *   /proc/self/fd. Setting O_NONBLOCK on fd 2 would change the description we share with
 *   whoever gave it to us (a shell's pipeline) and our own waiting writes with it. A line is at
 *   most RL_LOG_LINE_MAX bytes, a report and a line together under PIPE_BUF, so a pipe takes
 *   them whole or not at all. Container runtimes hand a non-root process pipes it owns, so the
 *   open is allowed there; where it is not, the loop threads wait as before and start-up says so.
 * - a socket (journald's stream): send() with MSG_DONTWAIT, a flag of the call, not of the
 *   description. A Unix stream socket takes a line this short in one piece or not at all.
 * - anything else (a regular file, a terminal, /dev/null): write(2) on the fd itself. A file
 *   never returns EAGAIN, and opening it again would give a second offset writing over our lines.
 *   A terminal held with ^S still blocks: an interactive run is not what this guards against.
 * A writer thread behind a queue would cover terminals too, but costs a thread, a queue every loop
 * thread shares, and the queued lines at a crash, which are the ones that explain it.
 *
 * Process-wide state, each written before other threads start or kept in atomics: the level, the
 * destination, and the dropped-line counters. Whether a thread may wait is the thread's own.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "ratelimitd/error.h"
#include "ratelimitd/log.h"

#define RL_LOG_LINE_MAX 1024
#define RL_LOG_REPORT_MAX 192
/* How long a thread that may wait (not an event loop's) waits for stderr to take a line. */
#define RL_LOG_WAIT_MS 2000

_Static_assert(RL_LOG_LINE_MAX + RL_LOG_REPORT_MAX <= 4096, "a report and its line must fit in PIPE_BUF");

static _Atomic int current_level = RL_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Set by rl_log_open() before other threads log; read-only afterwards. */
static struct {
    int fd;             /* where lines go */
    int nonblocking_fd; /* a pipe's second description, O_NONBLOCK; -1 when not a pipe */
    bool is_socket;
} destination = {STDERR_FILENO, -1, false};

static _Atomic uint64_t lines_dropped;      /* since start: the metric */
static _Atomic uint64_t dropped_unreported; /* not yet announced in the log */

static _Thread_local bool never_block;

int rl_log_parse_level(const char *name, rl_log_level_t *level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); ++i) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (rl_log_level_t)i;
            return RL_OK;
        }
    }
    return RL_ERR_INVALID;
}

void rl_log_set_level(rl_log_level_t level)
{
    atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
}

int rl_log_enabled(rl_log_level_t level)
{
    return (int)level >= atomic_load_explicit(&current_level, memory_order_relaxed);
}

int rl_log_open(int fd)
{
    if (destination.nonblocking_fd >= 0)
        close(destination.nonblocking_fd);
    destination.fd = fd;
    destination.nonblocking_fd = -1;
    destination.is_socket = false;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return RL_OK; /* closed: every write fails at once, and there is nowhere to say so */
    destination.is_socket = S_ISSOCK(st.st_mode);
    if (!S_ISFIFO(st.st_mode))
        return RL_OK;
    char path[32];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if ((destination.nonblocking_fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)) < 0) {
        /* error, not warn: it must show at every log_level */
        rl_log_error("log",
                     "stderr is a pipe, but %s cannot be opened non-blocking (%s): event-loop threads will "
                     "wait for its reader when it falls behind",
                     path, strerror(errno));
        return RL_ERR_IO;
    }
    return RL_OK;
}

void rl_log_never_block(void)
{
    never_block = true;
}

uint64_t rl_log_lines_dropped(void)
{
    return atomic_load_explicit(&lines_dropped, memory_order_relaxed);
}

/* Writes "<ISO-8601 UTC> <level> <module>: " into `buf` (`cap` bytes); returns its length, at most
 * half the buffer so that an absurd module name cannot push the message off the end. */
static size_t format_prefix(char *buf, size_t cap, const struct timespec *now, rl_log_level_t level, const char *module)
{
    struct tm tm;
    gmtime_r(&now->tv_sec, &tm);
    int len =
        snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, now->tv_nsec / 1000000, level_names[level], module);
    if (len < 0)
        return 0;
    return (size_t)len > cap / 2 ? cap / 2 : (size_t)len;
}

/* Formats one line, cut short if need be but always ending in one newline, into `buf`
 * (RL_LOG_LINE_MAX bytes); returns its length. */
static size_t format_line(char *buf, const struct timespec *now, rl_log_level_t level, const char *module,
                          const char *fmt, va_list args)
{
    size_t len = format_prefix(buf, RL_LOG_LINE_MAX, now, level, module);
    int body = vsnprintf(buf + len, RL_LOG_LINE_MAX - len - 1, fmt, args);
    if (body > 0)
        len += (size_t)body;
    if (len > RL_LOG_LINE_MAX - 2)
        len = RL_LOG_LINE_MAX - 2;
    buf[len++] = '\n';
    return len;
}

/* The line announcing `count` dropped lines, into `buf` (RL_LOG_REPORT_MAX bytes); returns its length. */
static size_t format_report(char *buf, const struct timespec *now, uint64_t count)
{
    size_t len = format_prefix(buf, RL_LOG_REPORT_MAX, now, RL_LOG_WARN, "log");
    int n = snprintf(buf + len, RL_LOG_REPORT_MAX - len,
                     "%llu lines dropped before this one: stderr was full (event-loop threads do not wait "
                     "for it) or failed\n",
                     (unsigned long long)count);
    return n < 0 || (size_t)n >= RL_LOG_REPORT_MAX - len ? 0 : len + (size_t)n;
}

/* One write that does not wait where the destination allows it (a pipe, a socket). */
static ssize_t write_once(const char *buf, size_t len)
{
    if (destination.nonblocking_fd >= 0)
        return write(destination.nonblocking_fd, buf, len);
    if (destination.is_socket)
        return send(destination.fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    return write(destination.fd, buf, len);
}

/* Whether all of `buf` went out without waiting. A short write (a TCP stderr) counts as a drop: the
 * rest could only be sent by waiting. */
static bool write_now(const char *buf, size_t len)
{
    return write_once(buf, len) == (ssize_t)len;
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether all of `buf` went out, waiting up to RL_LOG_WAIT_MS for stderr to take it. The bound keeps
 * a log reader that stopped for good from holding main's shutdown past its grace period; EAGAIN is
 * waited out too, on a description a parent made non-blocking as well as on our own. */
static bool write_waiting(const char *buf, size_t len)
{
    int64_t deadline = monotonic_ms() + RL_LOG_WAIT_MS;
    while (len != 0) {
        ssize_t n = write_once(buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return false;
        int64_t left = deadline - monotonic_ms();
        if (left <= 0)
            return false;
        struct pollfd pfd = {destination.nonblocking_fd >= 0 ? destination.nonblocking_fd : destination.fd, POLLOUT, 0};
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            return false;
    }
    return true;
}

void rl_log(rl_log_level_t level, const char *module, const char *fmt, ...)
{
    if (!rl_log_enabled(level))
        return;

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char out[RL_LOG_REPORT_MAX + RL_LOG_LINE_MAX];
    /* Taken, not read: of two threads writing at once, only one announces a given drop. Loaded
     * first so that threads logging while nothing was dropped do not all write the shared line. */
    uint64_t unreported = atomic_load_explicit(&dropped_unreported, memory_order_relaxed) != 0
                              ? atomic_exchange(&dropped_unreported, 0)
                              : 0;
    size_t len = unreported != 0 ? format_report(out, &now, unreported) : 0;
    va_list args;
    va_start(args, fmt);
    len += format_line(out + len, &now, level, module, fmt, args);
    va_end(args);
    /* One write for the report and the line, so that nothing can come between them. A failed
     * write has nowhere to be reported but the next line; the daemon goes on. */
    if (!(never_block ? write_now(out, len) : write_waiting(out, len))) {
        atomic_fetch_add_explicit(&lines_dropped, 1, memory_order_relaxed);
        atomic_fetch_add(&dropped_unreported, unreported + 1);
    }
}
