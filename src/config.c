/*
 * YAML -> rl_config_t, in twemproxy's three phases but with line numbers:
 *   1. syntax: libyaml builds a document tree (config_yaml.c), so every node keeps its mark;
 *   2. build: each mapping is applied through a TABLE of directives (name, type, bounds,
 *      default, offset or setter), so adding a setting is adding a row, and unknown fields,
 *      duplicates and missing required fields are caught in one place; the tables and the
 *      custom setters (listeners, tiers, servers) are here, the engine in config_yaml.c;
 *   3. meaning: checks that span sections (keys name existing tiers, memcached has servers).
 * Nothing stops at the first problem: every error is collected with file:line:column and the
 * key path, because an operator fixing a config wants the whole list in one --check-config run.
 * The walk only ever descends into fields the schema knows, so its depth is the schema's (four)
 * whatever the input nests, and YAML aliases (even cyclic ones) cannot make it loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ratelimitd/apikey.h"
#include "ratelimitd/config.h"
#include "ratelimitd/error.h"
#include "ratelimitd/log.h"
#include "ratelimitd/config_yaml.h"

/* Generous bounds that keep a hostile file from costing more than a moment to reject. */
#define RL_CONFIG_MAX_FILE_BYTES (64u << 20)
#define RL_CONFIG_MAX_LISTENERS 1024
#define RL_CONFIG_MAX_TIER_NAME 64
#define RL_CONFIG_MAX_HEADER_NAME 256
#define RL_CONFIG_DEFAULT_PORT 8080
#define RL_CONFIG_MEMCACHED_PORT 11211

#define RL_CFG_UINT_ROW(T, key, field, lo, hi, def)                                                                    \
    {                                                                                                                  \
        .name = key, .type = RL_CFG_UINT, .offset = offsetof(T, field), .size = sizeof(((T *)0)->field), .min = lo,    \
        .max = hi, .default_uint = def                                                                                 \
    }
#define RL_CFG_STRING_ROW(T, key, field, def, fn)                                                                      \
    {                                                                                                                  \
        .name = key, .type = RL_CFG_STRING, .offset = offsetof(T, field), .default_string = def, .check = fn           \
    }
#define RL_CFG_ENUM_ROW(T, key, field, spellings)                                                                      \
    {                                                                                                                  \
        .name = key, .type = RL_CFG_ENUM, .offset = offsetof(T, field), .names = spellings                             \
    }

/* Enum fields are written as int; every enum in config.h starts at 0 and has no negative value. */
_Static_assert(sizeof(rl_unknown_keys_t) == sizeof(int) && sizeof(rl_backend_type_t) == sizeof(int) &&
                   sizeof(rl_on_failure_t) == sizeof(int) && sizeof(rl_listen_role_t) == sizeof(int),
               "config enums are stored as int");

static const char *check_not_empty(char *value);
static const char *check_ip_address(char *value);
static const char *check_header_name(char *value);
static const char *check_key_prefix(char *value);
static const char *check_log_level(char *value);
static void set_listen(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base);
static void set_tls(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base);
static void set_tiers(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base);
static void set_keys(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base);
static void set_servers(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base);

static const char *const unknown_keys_names[] = {
    [RL_UNKNOWN_KEYS_ALLOW] = "allow", [RL_UNKNOWN_KEYS_REJECT] = "reject", NULL};
static const char *const backend_names[] = {[RL_BACKEND_LOCAL] = "local", [RL_BACKEND_MEMCACHED] = "memcached", NULL};
static const char *const on_failure_names[] = {[RL_ON_FAILURE_OPEN] = "open", [RL_ON_FAILURE_CLOSED] = "closed", NULL};
static const char *const listen_role_names[] = {[RL_LISTEN_API] = "api", [RL_LISTEN_ADMIN] = "admin", NULL};

static const rl_cfg_directive_t tls_table[] = {
    RL_CFG_STRING_ROW(rl_listen_config_t, "certificate", tls_certificate, NULL, check_not_empty),
    RL_CFG_STRING_ROW(rl_listen_config_t, "key", tls_key, NULL, check_not_empty),
    {.name = NULL}};

static const rl_cfg_directive_t listen_table[] = {
    RL_CFG_STRING_ROW(rl_listen_config_t, "address", address, "0.0.0.0", check_ip_address),
    {.name = "port",
     .type = RL_CFG_UINT,
     .offset = offsetof(rl_listen_config_t, port),
     .size = sizeof(uint16_t),
     .min = 1,
     .max = 65535,
     .required = 1},
    {.name = "tls", .type = RL_CFG_CUSTOM, .setter = set_tls},
    RL_CFG_ENUM_ROW(rl_listen_config_t, "role", role, listen_role_names),
    {.name = NULL}};

static const rl_cfg_directive_t limits_table[] = {
    RL_CFG_UINT_ROW(rl_config_t, "default", limits.default_limit, 1, RL_CONFIG_MAX_LIMIT, 10),
    {.name = "tiers", .type = RL_CFG_CUSTOM, .setter = set_tiers},
    {.name = "keys", .type = RL_CFG_CUSTOM, .setter = set_keys},
    RL_CFG_ENUM_ROW(rl_config_t, "unknown_keys", limits.unknown_keys, unknown_keys_names),
    {.name = NULL}};

static const rl_cfg_directive_t backend_table[] = {
    /* required inside the section: guessing memcached-or-local from other fields would surprise someone */
    {.name = "type",
     .type = RL_CFG_ENUM,
     .offset = offsetof(rl_config_t, backend.type),
     .names = backend_names,
     .required = 1},
    {.name = "servers", .type = RL_CFG_CUSTOM, .setter = set_servers},
    RL_CFG_UINT_ROW(rl_config_t, "timeout_ms", backend.timeout_ms, 1, 60000, 20),
    RL_CFG_ENUM_ROW(rl_config_t, "on_failure", backend.on_failure, on_failure_names),
    RL_CFG_STRING_ROW(rl_config_t, "key_prefix", backend.key_prefix, "rl:", check_key_prefix),
    RL_CFG_STRING_ROW(rl_config_t, "key_hash_secret", backend.key_hash_secret, "", NULL),
    RL_CFG_UINT_ROW(rl_config_t, "window_ttl_s", backend.window_ttl_s, 3, 3600, 3),
    RL_CFG_UINT_ROW(rl_config_t, "failure_limit", backend.failure_limit, 1, 1000, 3),
    RL_CFG_UINT_ROW(rl_config_t, "retry_interval_ms", backend.retry_interval_ms, 10, 600000, 1000),
    RL_CFG_UINT_ROW(rl_config_t, "max_pending", backend.max_pending, 1, 1000000, 8192),
    RL_CFG_UINT_ROW(rl_config_t, "local_max_keys", backend.local_max_keys, 1024, 100000000, 1048576),
    {.name = NULL}};

static const rl_cfg_directive_t server_table[] = {
    RL_CFG_UINT_ROW(rl_config_t, "max_connections", server.max_connections, 1, 1000000, 10000),
    RL_CFG_UINT_ROW(rl_config_t, "idle_timeout_ms", server.idle_timeout_ms, 100, 3600000, 10000),
    RL_CFG_UINT_ROW(rl_config_t, "max_header_bytes", server.max_header_bytes, 1024, RL_CONFIG_MAX_HEADER_BYTES, 16384),
    {.name = NULL}};

static const rl_cfg_directive_t top_table[] = {
    {.name = "listen", .type = RL_CFG_CUSTOM, .setter = set_listen},
    RL_CFG_UINT_ROW(rl_config_t, "threads", threads, 0, 256, 0),
    /* "X-API-Key", already in the lower-cased form check_header_name stores */
    RL_CFG_STRING_ROW(rl_config_t, "api_key_header", api_key_header, "x-api-key", check_header_name),
    {.name = "limits", .type = RL_CFG_SECTION, .table = limits_table},
    {.name = "backend", .type = RL_CFG_SECTION, .table = backend_table},
    {.name = "server", .type = RL_CFG_SECTION, .table = server_table},
    RL_CFG_STRING_ROW(rl_config_t, "log_level", log_level, "info", check_log_level),
    RL_CFG_UINT_ROW(rl_config_t, "shutdown_grace_ms", shutdown_grace_ms, 0, 600000, 5000),
    {.name = NULL}};

__attribute__((format(printf, 1, 2))) static char *format_alloc(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    int need = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    char *text = need >= 0 ? malloc((size_t)need + 1) : NULL;
    if (text != NULL) {
        va_start(args, fmt);
        vsnprintf(text, (size_t)need + 1, fmt, args);
        va_end(args);
    }
    return text;
}

static const char *check_not_empty(char *value)
{
    return value[0] == '\0' ? "must not be empty" : NULL;
}

/* Listeners bind literal addresses: a DNS lookup at start-up would make the bind depend on a resolver. */
static const char *check_ip_address(char *value)
{
    struct in6_addr addr;
    if (inet_pton(AF_INET, value, &addr) == 1)
        return NULL;
    if (inet_pton(AF_INET6, value, &addr) != 1)
        return "must be an IPv4 or IPv6 address (no host names, no brackets)";
    /* IPv6 listeners are IPv6-only, where a mapped IPv4 address cannot be bound */
    return IN6_IS_ADDR_V4MAPPED(&addr) ? "must be written as an IPv4 address, not IPv4-mapped IPv6" : NULL;
}

static const char *check_header_name(char *value)
{
    static const char token_punctuation[] = "!#$%&'*+-.^_`|~";
    size_t len = strlen(value);
    if (len == 0 || len > RL_CONFIG_MAX_HEADER_NAME)
        return "must be an HTTP header name of 1-256 characters";
    for (char *c = value; *c != '\0'; ++c) {
        int alnum = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9');
        if (!alnum && strchr(token_punctuation, *c) == NULL)
            return "must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)";
    }
    /* h2o hands header names over lower-cased; comparing with a lower-cased name needs no case folding */
    for (char *c = value; *c != '\0'; ++c) {
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    }
    return NULL;
}

/* The prefix goes verbatim into memcached keys, whose text protocol forbids spaces and controls. */
static const char *check_key_prefix(char *value)
{
    size_t len = strlen(value);
    for (size_t i = 0; i < len; ++i) {
        if ((unsigned char)value[i] < 0x21 || (unsigned char)value[i] > 0x7e)
            return "must be printable ASCII without spaces (0x21-0x7E)";
    }
    return len > RL_CONFIG_MAX_KEY_PREFIX ? "must be at most 64 bytes" : NULL;
}

static const char *check_log_level(char *value)
{
    rl_log_level_t level;
    return rl_log_parse_level(value, &level) == RL_OK ? NULL : "must be one of debug, info, warn, error";
}

/*
 * Two listeners on one address:port, or on one port where either address is the wildcard of
 * their family (0.0.0.0 or ::, which takes every address), would fail at bind time, long after
 * --check-config said ok. Returns 0, 1 for the same address or 2 for an overlap by wildcard.
 */
static int same_endpoint(const rl_listen_config_t *a, const rl_listen_config_t *b)
{
    static const unsigned char any[sizeof(struct in6_addr)] = {0};
    unsigned char x[sizeof(struct in6_addr)] = {0}, y[sizeof(struct in6_addr)] = {0};
    size_t len;
    if (a->port != b->port || a->address == NULL || b->address == NULL)
        return 0;
    if (inet_pton(AF_INET, a->address, x) == 1 && inet_pton(AF_INET, b->address, y) == 1)
        len = 4;
    else if (inet_pton(AF_INET6, a->address, x) == 1 && inet_pton(AF_INET6, b->address, y) == 1)
        len = sizeof(struct in6_addr);
    else
        return 0;
    if (memcmp(x, y, len) == 0)
        return 1;
    return memcmp(x, any, len) == 0 || memcmp(y, any, len) == 0 ? 2 : 0;
}

static void set_listen(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base)
{
    rl_config_t *config = base;
    if (!rl_cfg_expect(&parser->errors, node, path, YAML_SEQUENCE_NODE, "a sequence of listeners"))
        return;
    size_t n = rl_cfg_count_items(node);
    if (n == 0 || n > RL_CONFIG_MAX_LISTENERS) {
        rl_cfg_error(&parser->errors, node->start_mark, path, "must list 1 to %d listeners, got %zu",
                     RL_CONFIG_MAX_LISTENERS, n);
        return;
    }
    if ((config->listen = calloc(n, sizeof(*config->listen))) == NULL) {
        parser->errors.nomem = 1;
        return;
    }
    config->num_listen = n;
    /* listeners whose address and port parsed; others hold defaults that must not be compared */
    unsigned char clean[RL_CONFIG_MAX_LISTENERS] = {0};
    size_t api_listeners = 0;
    for (size_t i = 0; i < n; ++i) {
        rl_listen_config_t *listen = &config->listen[i];
        const yaml_node_t *item = yaml_document_get_node(&parser->doc, node->data.sequence.items.start[i]);
        rl_cfg_path_t at = rl_cfg_path_index(path, i);
        rl_cfg_apply_defaults(parser, listen_table, listen);
        /* a role that is missing or failed to parse keeps the default, api: no second error for it */
        if (item == NULL || !rl_cfg_expect(&parser->errors, item, &at, YAML_MAPPING_NODE, "a mapping")) {
            ++api_listeners;
            continue;
        }
        size_t errors_before = parser->errors.count;
        rl_cfg_apply_table(parser, listen_table, item, &at, listen);
        api_listeners += listen->role == RL_LISTEN_API;
        if (parser->errors.count != errors_before)
            continue;
        clean[i] = 1;
        for (size_t j = 0; j < i; ++j) {
            if (!clean[j])
                continue;
            int clash = same_endpoint(&config->listen[j], listen);
            if (clash != 0) {
                int ipv6 = strchr(listen->address, ':') != NULL;
                rl_cfg_error(&parser->errors, item->start_mark, &at, "%s listener %s%s%s:%u (%s listen[%zu]%s)",
                             clash == 1 ? "duplicate" : "overlapping", ipv6 ? "[" : "", listen->address,
                             ipv6 ? "]" : "", listen->port, clash == 1 ? "also" : "same port as", j,
                             clash == 1 ? "" : ", and one of the two is a wildcard address");
                break;
            }
        }
    }
    if (api_listeners == 0)
        rl_cfg_error(&parser->errors, node->start_mark, path, "needs at least one listener with role api");
}

static void resolve_path(rl_cfg_parser_t *parser, char **file)
{
    if (*file == NULL || (*file)[0] == '/' || parser->dir_len == 0)
        return;
    int slash = parser->dir[parser->dir_len - 1] != '/';
    char *joined = format_alloc("%.*s%s%s", (int)parser->dir_len, parser->dir, slash ? "/" : "", *file);
    if (joined == NULL) {
        parser->errors.nomem = 1;
        return;
    }
    free(*file);
    *file = joined;
}

static void set_tls(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base)
{
    rl_listen_config_t *listen = base;
    if (!rl_cfg_expect(&parser->errors, node, path, YAML_MAPPING_NODE, "a mapping with certificate and key"))
        return;
    rl_cfg_apply_table(parser, tls_table, node, path, listen);
    /* only complain about a field that is absent; a present but bad one was reported already */
    const char *missing = rl_cfg_find_value(parser, node, "certificate") == NULL ? "certificate"
                          : rl_cfg_find_value(parser, node, "key") == NULL       ? "key"
                                                                                 : NULL;
    if (missing != NULL) {
        rl_cfg_error(&parser->errors, node->start_mark, path, "needs both certificate and key (%s is missing)",
                     missing);
        return;
    }
    resolve_path(parser, &listen->tls_certificate);
    resolve_path(parser, &listen->tls_key);
}

static int valid_tier_name(const yaml_node_t *key)
{
    size_t len = key->data.scalar.length;
    if (len == 0 || len > RL_CONFIG_MAX_TIER_NAME)
        return 0;
    for (size_t i = 0; i < len; ++i) {
        char c = (char)key->data.scalar.value[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return 1;
}

static void set_tiers(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base)
{
    rl_config_t *config = base;
    unsigned char *skip;
    if (!rl_cfg_expect(&parser->errors, node, path, YAML_MAPPING_NODE, "a mapping of tier name to limit") ||
        rl_cfg_check_keys(&parser->errors, &parser->doc, node, path, 1, &skip) != RL_OK)
        return;
    size_t n = rl_cfg_count_items(node);
    if (n != 0 && (config->limits.tiers = calloc(n, sizeof(*config->limits.tiers))) == NULL) {
        parser->errors.nomem = 1;
        goto Exit;
    }
    for (size_t i = 0; i < n; ++i) {
        const yaml_node_t *key = yaml_document_get_node(&parser->doc, node->data.mapping.pairs.start[i].key);
        const yaml_node_t *value = yaml_document_get_node(&parser->doc, node->data.mapping.pairs.start[i].value);
        if ((skip != NULL && skip[i]) || key == NULL || value == NULL)
            continue;
        rl_cfg_path_t field = rl_cfg_path_field(path, (const char *)key->data.scalar.value, key->data.scalar.length);
        if (!valid_tier_name(key)) {
            rl_cfg_error(&parser->errors, key->start_mark, &field,
                         "a tier name must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'");
            continue;
        }
        if (key->data.scalar.length == 7 && memcmp(key->data.scalar.value, "default", 7) == 0) {
            rl_cfg_error(&parser->errors, key->start_mark, &field,
                         "\"default\" is the policy name of limits.default; name this tier otherwise");
            continue;
        }
        rl_tier_config_t tier = {0};
        if (rl_cfg_get_uint(&parser->errors, value, &field, 1, RL_CONFIG_MAX_LIMIT, &tier.limit) != RL_OK ||
            (tier.name = rl_cfg_copy_bytes(parser, key->data.scalar.value, key->data.scalar.length)) == NULL)
            continue;
        config->limits.tiers[config->limits.num_tiers++] = tier;
    }
Exit:
    free(skip);
}

/* Keys name tiers that may come later in the file, so they are built in the meaning phase. */
static void set_keys(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base)
{
    (void)base;
    rl_cfg_expect(&parser->errors, node, path, YAML_MAPPING_NODE, "a mapping of API key to tier name");
}

static const char *parse_host(const char *text, const char **host, size_t *host_len, const char **rest, int *ipv6)
{
    *ipv6 = text[0] == '[';
    if (*ipv6) {
        const char *close = strchr(text, ']');
        char literal[INET6_ADDRSTRLEN + 1];
        struct in6_addr addr;
        if (close == NULL || (size_t)(close - text - 1) >= sizeof(literal))
            return "an IPv6 address must be in brackets: [::1]:11211";
        *host = text + 1;
        *host_len = (size_t)(close - *host);
        *rest = close + 1;
        memcpy(literal, *host, *host_len);
        literal[*host_len] = '\0';
        return inet_pton(AF_INET6, literal, &addr) == 1 ? NULL : "not a valid IPv6 address";
    }
    *host = text;
    *host_len = strcspn(text, ":");
    *rest = text + *host_len;
    if (*host_len == 0 || *host_len > 253)
        return "the host must be 1-253 characters (IPv6 in brackets: [::1]:11211)";
    for (size_t i = 0; i < *host_len; ++i) {
        char c = text[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_'))
            return "the host must be a DNS name or an IPv4 address (IPv6 in brackets: [::1]:11211)";
    }
    return NULL;
}

/* "host[:port[:weight]]", the port defaulting to memcached's. Returns NULL or what is wrong. */
static const char *parse_server(rl_cfg_parser_t *parser, const char *text, rl_node_config_t *out)
{
    const char *host, *rest;
    size_t host_len;
    int ipv6;
    const char *problem = parse_host(text, &host, &host_len, &rest, &ipv6);
    if (problem != NULL)
        return problem;
    uint32_t port = RL_CONFIG_MEMCACHED_PORT, weight = 1;
    if (*rest != '\0') {
        if (*rest != ':')
            return "expected host:port[:weight]";
        const char *port_text = rest + 1, *colon = strchr(port_text, ':');
        size_t port_len = colon != NULL ? (size_t)(colon - port_text) : strlen(port_text);
        if (rl_cfg_parse_decimal(port_text, port_len, 65535, &port) != RL_OK || port == 0)
            return "the port must be 1-65535";
        if (colon != NULL &&
            (rl_cfg_parse_decimal(colon + 1, strlen(colon + 1), 1000, &weight) != RL_OK || weight == 0))
            return "the weight must be 1-1000";
    }
    out->port = (uint16_t)port;
    out->weight = weight;
    out->host = rl_cfg_copy_bytes(parser, host, host_len);
    out->name = format_alloc(ipv6 ? "[%.*s]:%u" : "%.*s:%u", (int)host_len, host, port);
    if (out->name == NULL)
        parser->errors.nomem = 1;
    return NULL;
}

static void set_servers(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path, void *base)
{
    rl_config_t *config = base;
    if (!rl_cfg_expect(&parser->errors, node, path, YAML_SEQUENCE_NODE, "a sequence of \"host:port[:weight]\""))
        return;
    size_t n = rl_cfg_count_items(node);
    if (n > RL_CONFIG_MAX_SERVERS) {
        rl_cfg_error(&parser->errors, node->start_mark, path,
                     "at most %d servers (libmemcached's ketama ring holds no more), got %zu", RL_CONFIG_MAX_SERVERS,
                     n);
        return;
    }
    if (n != 0 && (config->backend.servers = calloc(n, sizeof(*config->backend.servers))) == NULL) {
        parser->errors.nomem = 1;
        return;
    }
    for (size_t i = 0; i < n; ++i) {
        const yaml_node_t *item = yaml_document_get_node(&parser->doc, node->data.sequence.items.start[i]);
        rl_cfg_path_t at = rl_cfg_path_index(path, i);
        char *text;
        if (item == NULL || rl_cfg_get_string(&parser->errors, item, &at, &text) != RL_OK)
            continue;
        rl_node_config_t *server = &config->backend.servers[config->backend.num_servers];
        const char *problem = parse_server(parser, text, server);
        free(text);
        rl_cfg_excerpt_t got;
        if (problem != NULL) {
            rl_cfg_error(&parser->errors, item->start_mark, &at, "%s, got %s", problem, rl_cfg_describe(item, &got));
            continue;
        }
        /* counted first, so rl_config_destroy frees it whatever happens next */
        ++config->backend.num_servers;
        for (size_t j = 0; server->name != NULL && j + 1 < config->backend.num_servers; ++j) {
            /* host names are case-insensitive: "A:1" and "a:1" are one server that would get two
             * shares of the ring */
            if (config->backend.servers[j].name != NULL &&
                strcasecmp(config->backend.servers[j].name, server->name) == 0) {
                rl_cfg_error(&parser->errors, item->start_mark, &at, "duplicate server %s", server->name);
                break;
            }
        }
    }
}

static int compare_tier_names(const void *a, const void *b)
{
    return strcmp((*(const rl_tier_config_t *const *)a)->name, (*(const rl_tier_config_t *const *)b)->name);
}

static int compare_written_names(const void *a, const void *b)
{
    return rl_cfg_compare_scalars(*(const yaml_node_t *const *)a, *(const yaml_node_t *const *)b);
}

/*
 * The tiers a key may name, sorted so that each key costs a binary search: a file of 50,000 tiers
 * and 50,000 keys took 15 s to check with a scan per key. `written` holds every tier name in
 * limits.tiers, rejected ones included: a key naming a tier whose own error is reported is not
 * blamed a second time.
 */
typedef struct st_rl_tier_index_t {
    rl_tier_config_t **built;
    const yaml_node_t **written;
    size_t num_built, num_written;
} rl_tier_index_t;

static int index_tiers(rl_cfg_parser_t *parser, const yaml_node_t *tiers, rl_tier_index_t *index)
{
    rl_config_t *config = parser->config;
    size_t n = tiers != NULL && tiers->type == YAML_MAPPING_NODE ? rl_cfg_count_items(tiers) : 0;
    *index = (rl_tier_index_t){.built = calloc(config->limits.num_tiers + 1, sizeof(*index->built)),
                               .written = calloc(n + 1, sizeof(*index->written))};
    if (index->built == NULL || index->written == NULL)
        return RL_ERR_NOMEM;
    for (size_t i = 0; i < config->limits.num_tiers; ++i)
        index->built[index->num_built++] = &config->limits.tiers[i];
    qsort(index->built, index->num_built, sizeof(*index->built), compare_tier_names);
    for (size_t i = 0; i < n; ++i) {
        const yaml_node_t *key = yaml_document_get_node(&parser->doc, tiers->data.mapping.pairs.start[i].key);
        if (key != NULL && key->type == YAML_SCALAR_NODE)
            index->written[index->num_written++] = key;
    }
    qsort(index->written, index->num_written, sizeof(*index->written), compare_written_names);
    return RL_OK;
}

static const rl_tier_config_t *find_tier(const rl_tier_index_t *index, const char *name, bool *written)
{
    rl_tier_config_t probe = {.name = (char *)name}, *probe_ptr = &probe;
    rl_tier_config_t **found = index->num_built == 0 ? NULL
                                                     : bsearch(&probe_ptr, index->built, index->num_built,
                                                               sizeof(*index->built), compare_tier_names);
    if (found != NULL)
        return *found;
    yaml_node_t node = {.type = YAML_SCALAR_NODE,
                        .data.scalar = {.value = (yaml_char_t *)name, .length = strlen(name)}};
    const yaml_node_t *node_ptr = &node;
    *written = index->num_written != 0 && bsearch(&node_ptr, index->written, index->num_written,
                                                  sizeof(*index->written), compare_written_names) != NULL;
    return NULL;
}

static void add_key(rl_cfg_parser_t *parser, const yaml_node_t *key, const yaml_node_t *value,
                    const rl_tier_index_t *index, const rl_cfg_path_t *path)
{
    rl_config_t *config = parser->config;
    /* the key itself is a secret: its line and column identify it, the message never quotes it */
    if (rl_apikey_validate((const char *)key->data.scalar.value, key->data.scalar.length) != RL_OK) {
        rl_cfg_error(&parser->errors, key->start_mark, path, "an API key must be 1-%d bytes of 0x21-0x7E",
                     RL_APIKEY_MAX_LEN);
        return;
    }
    char *tier_name;
    if (rl_cfg_get_string(&parser->errors, value, path, &tier_name) != RL_OK)
        return;
    bool written = false;
    const rl_tier_config_t *tier = find_tier(index, tier_name, &written);
    if (tier == NULL && written) {
        /* the tier's own error is reported already; a second one here would blame the key */
    } else if (tier == NULL) {
        rl_cfg_excerpt_t name;
        rl_cfg_error(&parser->errors, value->start_mark, path, "unknown tier \"%s\" (not in limits.tiers)",
                     rl_cfg_excerpt(&name, tier_name, strlen(tier_name)));
    } else {
        char *api_key = rl_cfg_copy_bytes(parser, key->data.scalar.value, key->data.scalar.length);
        if (api_key != NULL)
            config->limits.keys[config->limits.num_keys++] =
                (rl_key_config_t){.api_key = api_key, .tier_index = (size_t)(tier - config->limits.tiers)};
    }
    free(tier_name);
}

/* `tiers` is the limits.tiers node as written. */
static void build_keys(rl_cfg_parser_t *parser, const yaml_node_t *node, const yaml_node_t *tiers)
{
    static const rl_cfg_path_t limits = {.name = "limits", .name_len = 6};
    static const rl_cfg_path_t path = {.parent = &limits, .name = "keys", .name_len = 4};
    rl_config_t *config = parser->config;
    size_t n = rl_cfg_count_items(node);
    unsigned char *skip = NULL;
    rl_tier_index_t index;
    if (index_tiers(parser, tiers, &index) != RL_OK ||
        (n != 0 && (config->limits.keys = calloc(n, sizeof(*config->limits.keys))) == NULL)) {
        parser->errors.nomem = 1;
        goto Exit;
    }
    if (rl_cfg_check_keys(&parser->errors, &parser->doc, node, &path, 0, &skip) != RL_OK)
        goto Exit;
    for (size_t i = 0; i < n; ++i) {
        const yaml_node_t *key = yaml_document_get_node(&parser->doc, node->data.mapping.pairs.start[i].key);
        const yaml_node_t *value = yaml_document_get_node(&parser->doc, node->data.mapping.pairs.start[i].value);
        if ((skip == NULL || !skip[i]) && key != NULL && value != NULL)
            add_key(parser, key, value, &index, &path);
    }
Exit:
    free(skip);
    free(index.built);
    free(index.written);
}

/*
 * A count must reach memcached while its window's counter lives. The counter is created at the
 * earliest when its window starts and, with memcached's 1-second clock, may expire window_ttl_s - 1
 * seconds later; a request decided at the end of its window may wait timeout_ms more. A count
 * executed after the expiry would start the window over, and the key would get its limit twice.
 */
static void check_timeout_fits_ttl(rl_cfg_parser_t *parser, const yaml_node_t *backend)
{
    const rl_config_t *config = parser->config;
    uint64_t latest_ms = ((uint64_t)config->backend.window_ttl_s - 2) * 1000;
    if (config->backend.timeout_ms <= latest_ms)
        return;
    static const rl_cfg_path_t section = {.name = "backend", .name_len = 7};
    static const rl_cfg_path_t path = {.parent = &section, .name = "timeout_ms", .name_len = 10};
    /* the default timeout_ms (20) fits every window_ttl_s, so an error always has this line */
    const yaml_node_t *at = rl_cfg_find_value(parser, backend, "timeout_ms");
    if (at == NULL)
        return;
    rl_cfg_error(&parser->errors, at->start_mark, &path,
                 "%u ms is longer than window_ttl_s %u allows (at most %llu ms, (window_ttl_s - 2) x 1000): a late "
                 "count could outlive its window's counter and start it over; raise window_ttl_s to %u",
                 config->backend.timeout_ms, config->backend.window_ttl_s, (unsigned long long)latest_ms,
                 (config->backend.timeout_ms + 999) / 1000 + 2);
}

static void check_meaning(rl_cfg_parser_t *parser, const yaml_node_t *root)
{
    rl_config_t *config = parser->config;
    const yaml_node_t *limits = rl_cfg_find_value(parser, root, "limits");
    const yaml_node_t *keys = rl_cfg_find_value(parser, limits, "keys");
    if (keys != NULL && keys->type == YAML_MAPPING_NODE)
        build_keys(parser, keys, rl_cfg_find_value(parser, limits, "tiers"));

    const yaml_node_t *backend = rl_cfg_find_value(parser, root, "backend");
    const yaml_node_t *servers = rl_cfg_find_value(parser, backend, "servers");
    if (config->backend.type == RL_BACKEND_MEMCACHED && (servers == NULL || rl_cfg_count_items(servers) == 0)) {
        static const rl_cfg_path_t section = {.name = "backend", .name_len = 7};
        static const rl_cfg_path_t path = {.parent = &section, .name = "servers", .name_len = 7};
        const yaml_node_t *at = servers != NULL ? servers : rl_cfg_find_value(parser, backend, "type");
        if (at == NULL)
            at = root;
        if (servers == NULL || servers->type == YAML_SEQUENCE_NODE)
            rl_cfg_error(&parser->errors, at->start_mark, &path, "the memcached backend needs at least one server");
    }

    if (config->backend.type == RL_BACKEND_MEMCACHED)
        check_timeout_fits_ttl(parser, backend);

    if (rl_cfg_find_value(parser, root, "listen") == NULL) {
        if ((config->listen = calloc(1, sizeof(*config->listen))) == NULL) {
            parser->errors.nomem = 1;
            return;
        }
        config->num_listen = 1;
        rl_cfg_apply_defaults(parser, listen_table, config->listen);
        config->listen->port = RL_CONFIG_DEFAULT_PORT;
    }
}

static void build(rl_cfg_parser_t *parser)
{
    const yaml_node_t *root = yaml_document_get_root_node(&parser->doc);
    if (root == NULL) {
        rl_cfg_error(&parser->errors, parser->doc.start_mark, NULL, "the configuration is empty");
        return;
    }
    if (root->type != YAML_MAPPING_NODE) {
        rl_cfg_excerpt_t got;
        rl_cfg_error(&parser->errors, root->start_mark, NULL, "the top level must be a mapping of settings, got %s",
                     rl_cfg_describe(root, &got));
        return;
    }
    rl_cfg_apply_table(parser, top_table, root, NULL, parser->config);
    check_meaning(parser, root);
}

rl_config_t *rl_config_parse(const char *name, const char *yaml, size_t len, char **errors)
{
    if (name == NULL)
        name = "<config>";
    if (yaml == NULL)
        yaml = ""; /* libyaml asserts on a NULL input even when it is empty */
    rl_cfg_parser_t parser = {.errors = {.file = name}};
    const char *slash = strrchr(name, '/');
    parser.dir = name;
    parser.dir_len = slash == NULL ? 0 : slash == name ? 1 : (size_t)(slash - name);
    if (errors != NULL)
        *errors = NULL;

    rl_config_t *config = parser.config = calloc(1, sizeof(*config));
    if (config == NULL) {
        parser.errors.nomem = 1;
        goto Error;
    }
    config->path = rl_cfg_copy_bytes(&parser, name, strlen(name));
    rl_cfg_apply_defaults(&parser, top_table, config);
    if (rl_cfg_load_document(&parser.errors, yaml, len, &parser.doc) == RL_OK) {
        build(&parser);
        yaml_document_delete(&parser.doc);
    }
    if (parser.errors.count == 0 && !parser.errors.nomem) {
        rl_cfg_errors_dispose(&parser.errors);
        return config;
    }
Error:
    rl_config_destroy(config);
    if (errors != NULL)
        *errors = rl_cfg_errors_take(&parser.errors);
    rl_cfg_errors_dispose(&parser.errors);
    return NULL;
}

/* read_file()'s error for a path that names a FIFO, device or socket; not an errno value. */
#define RL_CONFIG_NOT_REGULAR (-1)

/* Reads all of `path` into a malloc'd buffer; returns 0, an errno value or RL_CONFIG_NOT_REGULAR. */
static int read_file(const char *path, char **out, size_t *out_len)
{
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer, and this runs on the thread
     * that takes SIGTERM, so a FIFO swapped in for the config and a SIGHUP would make the daemon
     * deaf to SIGTERM. Only regular files are read; on those O_NONBLOCK changes nothing. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), err = 0;
    if (fd < 0)
        return errno;
    struct stat st;
    if (fstat(fd, &st) != 0)
        err = errno;
    else if (S_ISDIR(st.st_mode))
        err = EISDIR; /* what read() said before: clearer than "not a regular file" */
    else if (!S_ISREG(st.st_mode))
        err = RL_CONFIG_NOT_REGULAR;
    if (err != 0) {
        close(fd);
        return err;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            /* room for one byte past the limit: reading it is how a file one byte too large is
             * told from one exactly at the limit */
            if (cap > RL_CONFIG_MAX_FILE_BYTES) {
                err = EFBIG;
                break;
            }
            size_t want = cap != 0 ? cap * 2 : 8192;
            if (want > RL_CONFIG_MAX_FILE_BYTES + 1)
                want = RL_CONFIG_MAX_FILE_BYTES + 1;
            char *grown = realloc(text, want);
            if (grown == NULL) {
                err = ENOMEM;
                break;
            }
            text = grown;
            cap = want;
        }
        ssize_t n = read(fd, text + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = errno;
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (err != 0) {
        free(text);
        return err;
    }
    *out = text;
    *out_len = len;
    return 0;
}

rl_config_t *rl_config_load(const char *path, char **errors)
{
    char *text = NULL;
    size_t len = 0;
    int err = read_file(path, &text, &len);
    if (err != 0) {
        if (errors != NULL)
            *errors =
                format_alloc("%s: %s\n", path, err == RL_CONFIG_NOT_REGULAR ? "not a regular file" : strerror(err));
        return NULL;
    }
    rl_config_t *config = rl_config_parse(path, text, len, errors);
    free(text);
    return config;
}

static int same_string(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int same_rows(const rl_cfg_directive_t *table, const void *a, const void *b);

static int same_servers(const rl_config_t *a, const rl_config_t *b)
{
    if (a->backend.num_servers != b->backend.num_servers)
        return 0;
    for (size_t i = 0; i < a->backend.num_servers; ++i) {
        const rl_node_config_t *x = &a->backend.servers[i], *y = &b->backend.servers[i];
        if (x->port != y->port || x->weight != y->weight || !same_string(x->host, y->host))
            return 0;
    }
    return 1;
}

static int same_listen(const rl_config_t *a, const rl_config_t *b)
{
    if (a->num_listen != b->num_listen)
        return 0;
    for (size_t i = 0; i < a->num_listen; ++i)
        if (!same_rows(listen_table, &a->listen[i], &b->listen[i]))
            return 0;
    return 1;
}

/* The fields a custom setter fills, compared by hand: the only ones the tables cannot describe. */
static int same_custom(const rl_cfg_directive_t *row, const void *a, const void *b)
{
    if (row->setter == set_listen)
        return same_listen(a, b);
    if (row->setter == set_tls)
        return same_rows(tls_table, a, b);
    if (row->setter == set_servers)
        return same_servers(a, b);
    /* tiers and keys: the limits, which a reload applies and no caller compares */
    return 1;
}

/*
 * Compares two structs field by field as `table` describes them, so a field added to a table is
 * compared without anyone remembering to.
 */
static int same_rows(const rl_cfg_directive_t *table, const void *a, const void *b)
{
    for (const rl_cfg_directive_t *row = table; row->name != NULL; ++row) {
        const char *x = (const char *)a + row->offset, *y = (const char *)b + row->offset;
        int same = 1;
        switch (row->type) {
        case RL_CFG_UINT:
            same = memcmp(x, y, row->size) == 0;
            break;
        case RL_CFG_STRING:
            same = same_string(*(char *const *)x, *(char *const *)y);
            break;
        case RL_CFG_ENUM:
            same = *(const int *)x == *(const int *)y;
            break;
        case RL_CFG_SECTION:
            same = same_rows(row->table, a, b);
            break;
        case RL_CFG_CUSTOM:
            same = same_custom(row, a, b);
            break;
        }
        if (!same)
            return 0;
    }
    return 1;
}

size_t rl_config_restart_sections(const rl_config_t *running, const rl_config_t *loaded, const char **names,
                                  size_t max_names)
{
    size_t n = 0;
    for (const rl_cfg_directive_t *row = top_table; row->name != NULL && n < max_names; ++row) {
        if (row->table == limits_table)
            continue;
        const rl_cfg_directive_t one[] = {*row, {.name = NULL}};
        if (!same_rows(one, running, loaded))
            names[n++] = row->name;
    }
    return n;
}

void rl_config_destroy(rl_config_t *config)
{
    if (config == NULL)
        return;
    for (size_t i = 0; i < config->num_listen; ++i) {
        free(config->listen[i].address);
        free(config->listen[i].tls_certificate);
        free(config->listen[i].tls_key);
    }
    free(config->listen);
    for (size_t i = 0; i < config->limits.num_tiers; ++i)
        free(config->limits.tiers[i].name);
    free(config->limits.tiers);
    for (size_t i = 0; i < config->limits.num_keys; ++i)
        free(config->limits.keys[i].api_key);
    free(config->limits.keys);
    for (size_t i = 0; i < config->backend.num_servers; ++i) {
        free(config->backend.servers[i].host);
        free(config->backend.servers[i].name);
    }
    free(config->backend.servers);
    free(config->backend.key_prefix);
    free(config->backend.key_hash_secret);
    free(config->api_key_header);
    free(config->log_level);
    free(config->path);
    free(config);
}
