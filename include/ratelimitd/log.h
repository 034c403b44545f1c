/*
 * One line per event to stderr: "<ISO-8601 UTC> <level> <module>: <message>".
 * The level is process-wide and set once at start-up (before threads start).
 * Callers must never pass a raw API key: log the key hash prefix instead.
 */
#ifndef RATELIMITD_LOG_H
#define RATELIMITD_LOG_H

typedef enum { RL_LOG_DEBUG = 0, RL_LOG_INFO, RL_LOG_WARN, RL_LOG_ERROR } rl_log_level_t;

/* Parses "debug", "info", "warn", "error"; returns RL_OK or RL_ERR_INVALID. */
int rl_log_parse_level(const char *name, rl_log_level_t *level);
void rl_log_set_level(rl_log_level_t level);
int rl_log_enabled(rl_log_level_t level);
void rl_log(rl_log_level_t level, const char *module, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define rl_log_debug(mod, ...) rl_log(RL_LOG_DEBUG, mod, __VA_ARGS__)
#define rl_log_info(mod, ...) rl_log(RL_LOG_INFO, mod, __VA_ARGS__)
#define rl_log_warn(mod, ...) rl_log(RL_LOG_WARN, mod, __VA_ARGS__)
#define rl_log_error(mod, ...) rl_log(RL_LOG_ERROR, mod, __VA_ARGS__)

#endif
