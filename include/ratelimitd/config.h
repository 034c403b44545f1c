/*
 * The configuration as plain, immutable data. rl_config_load() parses a YAML file with
 * libyaml in three phases (syntax, build through a table of directives, meaning checks)
 * and never touches live state; a reload builds a new rl_config_t and the caller swaps.
 * Every error names file:line:column (1-based) and the key path.
 */
#ifndef RATELIMITD_CONFIG_H
#define RATELIMITD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define RL_CONFIG_DEFAULT_PATH "conf/ratelimitd.yaml"
#define RL_CONFIG_MAX_LIMIT 1000000000u
#define RL_CONFIG_MAX_KEY_PREFIX 64
/* libmemcached 1.1.4 aborts (an assert in update_continuum) when a ketama ring has more than 100
 * servers: a larger pool is a config error, and the ring refuses one too. */
#define RL_CONFIG_MAX_SERVERS 100
/* h2o 2.2.5 answers 400 itself to an HTTP/1.1 request head over H2O_MAX_REQLEN (417,792
 * bytes), so a larger server.max_header_bytes could never produce the 431 it promises. */
#define RL_CONFIG_MAX_HEADER_BYTES 262144u

/*
 * Connections an admin listener (role: admin) holds open at most, in the whole process, besides
 * server.max_connections: Prometheus servers, kubelet probes and an operator's curl need a few, and
 * they must get in while the API's connections are exhausted, when the metrics matter most.
 */
#define RL_ADMIN_MAX_CONNECTIONS 64

typedef enum { RL_UNKNOWN_KEYS_ALLOW = 0, RL_UNKNOWN_KEYS_REJECT } rl_unknown_keys_t;
typedef enum { RL_BACKEND_LOCAL = 0, RL_BACKEND_MEMCACHED } rl_backend_type_t;
typedef enum { RL_ON_FAILURE_OPEN = 0, RL_ON_FAILURE_CLOSED } rl_on_failure_t;
/* What a listener serves: the API (/limit and the operational endpoints) or only the operational
 * endpoints, on connections that do not count against server.max_connections. */
typedef enum { RL_LISTEN_API = 0, RL_LISTEN_ADMIN, RL_LISTEN_ROLES } rl_listen_role_t;

typedef struct st_rl_listen_config_t {
    char *address;         /* default "0.0.0.0" */
    uint16_t port;         /* required, 1-65535 */
    char *tls_certificate; /* NULL for a cleartext listener; absolute or relative to the config file */
    char *tls_key;         /* set iff tls_certificate is set */
    rl_listen_role_t role; /* default RL_LISTEN_API */
} rl_listen_config_t;

typedef struct st_rl_tier_config_t {
    char *name;
    uint32_t limit; /* requests per second, 1..RL_CONFIG_MAX_LIMIT */
} rl_tier_config_t;

typedef struct st_rl_key_config_t {
    char *api_key;     /* validated like a request's key: 1-256 bytes, 0x21-0x7E */
    size_t tier_index; /* index into limits.tiers */
} rl_key_config_t;

typedef struct st_rl_node_config_t {
    char *host;      /* as written; no DNS lookup happens during parsing */
    uint16_t port;   /* default 11211 */
    uint32_t weight; /* default 1, 1..1000 */
    char *name;      /* "host:port", used in metrics and logs */
} rl_node_config_t;

typedef struct st_rl_config_t {
    char *path; /* the file this was loaded from */

    rl_listen_config_t *listen; /* at least one; default one cleartext 0.0.0.0:8080 */
    size_t num_listen;
    uint32_t threads;     /* 0 = one per CPU; at most 256 */
    char *api_key_header; /* default "X-API-Key"; stored lower-cased */

    struct {
        uint32_t default_limit; /* default 10 */
        rl_tier_config_t *tiers;
        size_t num_tiers;
        rl_key_config_t *keys;
        size_t num_keys;
        rl_unknown_keys_t unknown_keys; /* default allow */
    } limits;

    struct {
        rl_backend_type_t type; /* default local when the section is omitted */
        rl_node_config_t *servers;
        size_t num_servers;
        uint32_t timeout_ms;        /* default 20, 1..60000 */
        rl_on_failure_t on_failure; /* default open */
        char *key_prefix;           /* default "rl:", at most RL_CONFIG_MAX_KEY_PREFIX bytes, no spaces/controls */
        char *key_hash_secret;      /* default "" */
        uint32_t window_ttl_s;      /* TTL of a window's counter, default 3, 3..3600 */
        uint32_t failure_limit;     /* consecutive failures that eject a node, default 3, 1..1000 */
        uint32_t retry_interval_ms; /* how long an ejected node stays out, default 1000, 10..600000 */
        uint32_t max_pending;       /* requests waiting on one node per thread, default 8192, 1..1000000 */
        uint32_t local_max_keys;    /* capacity of the local store, default 1048576, 1024..100000000 */
    } backend;

    struct {
        uint32_t max_connections;  /* per process, default 10000, 1..1000000 */
        uint32_t idle_timeout_ms;  /* keep-alive / HTTP/2 idle, default 10000, 100..3600000 */
        uint32_t max_header_bytes; /* request head size limit, default 16384, 1024..RL_CONFIG_MAX_HEADER_BYTES */
    } server;

    char *log_level;            /* default "info" */
    uint32_t shutdown_grace_ms; /* default 5000, 0..600000 */
} rl_config_t;

/*
 * Loads and validates the YAML file at `path`.
 * Returns a new config owned by the caller (free with rl_config_destroy), or NULL. On NULL,
 * *errors (if errors != NULL) is set to a malloc'd, NUL-terminated string holding every error,
 * one per line, each "FILE:LINE:COLUMN: key.path: message"; the caller frees it.
 */
rl_config_t *rl_config_load(const char *path, char **errors);

/*
 * Same as rl_config_load() on a buffer in memory; `name` is used as FILE in messages and to
 * resolve relative TLS paths. Does no I/O beyond that. Used by tests and the fuzz target.
 */
rl_config_t *rl_config_parse(const char *name, const char *yaml, size_t len, char **errors);

/*
 * Names the top-level sections other than `limits` whose values differ between the running
 * config and a freshly loaded one, in file order, at most `max_names` of them (7 exist). The
 * comparison follows the parser's tables, so a new field is compared as soon as it is parsed. A
 * SIGHUP reload applies only `limits`; these need a restart, and the operator is told so.
 */
size_t rl_config_restart_sections(const rl_config_t *running, const rl_config_t *loaded, const char **names,
                                  size_t max_names);

/* Frees a config; accepts NULL. */
void rl_config_destroy(rl_config_t *config);

#endif
