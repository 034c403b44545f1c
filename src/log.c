/*
 * Line-oriented logging to stderr. Each event is formatted into one buffer and written with a
 * single write(2), so lines from different threads never interleave mid-line. The level is the
 * one process-wide setting here; it is written once before threads start and read with a
 * relaxed atomic load afterwards.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "ratelimitd/error.h"
#include "ratelimitd/log.h"

#define RL_LOG_LINE_MAX 1024

static _Atomic int current_level = RL_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

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

void rl_log(rl_log_level_t level, const char *module, const char *fmt, ...)
{
    if (!rl_log_enabled(level))
        return;

    char line[RL_LOG_LINE_MAX];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    int len =
        snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000, level_names[level], module);
    if (len < 0)
        return;
    if ((size_t)len > sizeof(line) / 2)
        len = (int)(sizeof(line) / 2); /* an absurd module name cannot push the message off the end */
    va_list args;
    va_start(args, fmt);
    int body = vsnprintf(line + len, sizeof(line) - (size_t)len - 1, fmt, args);
    va_end(args);
    if (body < 0)
        body = 0;
    len += body;
    if ((size_t)len > sizeof(line) - 2)
        len = (int)sizeof(line) - 2; /* truncated: still end the line */
    line[len++] = '\n';
    /* A failed log write has nowhere to be reported; the daemon goes on. */
    ssize_t written = write(STDERR_FILENO, line, (size_t)len);
    (void)written;
}
