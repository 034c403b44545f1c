/*
 * One line per event to stderr: "<ISO-8601 UTC> <level> <module>: <message>".
 * The level is process-wide and set once at start-up (before threads start).
 * Callers must never pass a raw API key: log the key hash prefix instead.
 *
 * An event-loop thread declares itself with rl_log_never_block(): its lines are dropped, and
 * counted, when stderr cannot take them at once (a pipe whose reader fell behind). The next line
 * written, by any thread, is preceded by one saying how many were lost. Other threads wait for
 * stderr, up to 2 s a line, so a slow reader loses nothing they say.
 */
#ifndef RATELIMITD_LOG_H
#define RATELIMITD_LOG_H

#include <stdint.h>

typedef enum { RL_LOG_DEBUG = 0, RL_LOG_INFO, RL_LOG_WARN, RL_LOG_ERROR } rl_log_level_t;

/* Parses "debug", "info", "warn", "error"; returns RL_OK or RL_ERR_INVALID. */
int rl_log_parse_level(const char *name, rl_log_level_t *level);
void rl_log_set_level(rl_log_level_t level);
int rl_log_enabled(rl_log_level_t level);
void rl_log(rl_log_level_t level, const char *module, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Makes `fd` (STDERR_FILENO in the daemon; the caller keeps owning it) where lines go, and finds
 * how to write to it without waiting: for a pipe, this opens a second, non-blocking description
 * of it. Call before any other thread logs (main, at start-up); a later call replaces the earlier
 * one. Until it is called, lines go to fd 2 and rl_log_never_block() threads wait like the others.
 * Returns RL_OK, or RL_ERR_IO when `fd` is a pipe that cannot be opened again: that is logged
 * here (an error line naming the errno), and loop threads then wait for the pipe's reader as others do.
 */
int rl_log_open(int fd);
/* Declares the calling thread an event-loop thread: from now on rl_log never waits for stderr on
 * it. Call once, first thing in the thread. */
void rl_log_never_block(void);
/* Lines lost since start: dropped by loop threads on a full stderr, or failed to write. Any thread. */
uint64_t rl_log_lines_dropped(void);

#define rl_log_debug(mod, ...) rl_log(RL_LOG_DEBUG, mod, __VA_ARGS__)
#define rl_log_info(mod, ...) rl_log(RL_LOG_INFO, mod, __VA_ARGS__)
#define rl_log_warn(mod, ...) rl_log(RL_LOG_WARN, mod, __VA_ARGS__)
#define rl_log_error(mod, ...) rl_log(RL_LOG_ERROR, mod, __VA_ARGS__)

#endif
