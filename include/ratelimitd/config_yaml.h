/*
 * Private to the config module (config.c, config_yaml.c): the libyaml side of parsing and the
 * directive-table engine. It turns bytes into a yaml_document_t (phase one, syntax), applies
 * mappings through tables of rl_cfg_directive_t (phase two, build), and gives the schema code
 * typed accessors that report every problem with file:line:column and the key path instead of
 * stopping at the first. Paths are chains of rl_cfg_path_t on the caller's stack, rendered only
 * when an error is reported, so the success path never formats or allocates a path.
 */
#ifndef RATELIMITD_CONFIG_YAML_H
#define RATELIMITD_CONFIG_YAML_H

#include <stddef.h>
#include <stdint.h>
#include <yaml.h>
#include "ratelimitd/config.h"

/* Errors beyond this many are counted, not listed: an operator fixes the first ones first. */
#define RL_CFG_MAX_ERRORS 100

typedef struct st_rl_cfg_path_t {
    const struct st_rl_cfg_path_t *parent;
    const char *name; /* a field name, or NULL for a sequence element */
    size_t name_len;
    size_t index; /* the element's index when name is NULL */
} rl_cfg_path_t;

/* The collected error text, one "FILE:LINE:COLUMN: path: message" per line. */
typedef struct st_rl_cfg_errors_t {
    const char *file;
    char *text;
    size_t len, cap;
    size_t count;
    int nomem; /* an allocation failed somewhere: the result is an error whatever else happened */
} rl_cfg_errors_t;

/* Bounded, escaped copy of untrusted bytes for a message; never overflows, truncates with "...". */
typedef struct st_rl_cfg_excerpt_t {
    char text[100];
} rl_cfg_excerpt_t;

static inline rl_cfg_path_t rl_cfg_path_field(const rl_cfg_path_t *parent, const char *name, size_t len)
{
    return (rl_cfg_path_t){.parent = parent, .name = name, .name_len = len};
}

static inline rl_cfg_path_t rl_cfg_path_index(const rl_cfg_path_t *parent, size_t index)
{
    return (rl_cfg_path_t){.parent = parent, .index = index};
}

/* Records one error at `mark` (0-based, printed 1-based); `path` may be NULL. */
void rl_cfg_error(rl_cfg_errors_t *errors, yaml_mark_t mark, const rl_cfg_path_t *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Returns the collected text (caller frees) and resets `errors`; NULL if allocation failed. */
char *rl_cfg_errors_take(rl_cfg_errors_t *errors);
/* Frees whatever `errors` holds; accepts a zeroed struct. */
void rl_cfg_errors_dispose(rl_cfg_errors_t *errors);

const char *rl_cfg_excerpt(rl_cfg_excerpt_t *out, const char *bytes, size_t len);

/*
 * Phase one: parses the first YAML document of `yaml`. Returns RL_OK with *doc filled (the caller
 * deletes it with yaml_document_delete, even when it has no root node), having recorded in
 * `errors` any tag or second document, which leave the document checkable; or RL_ERR_CONFIG
 * after recording a syntax error, an alias or too deep a nesting, *doc then empty.
 */
int rl_cfg_load_document(rl_cfg_errors_t *errors, const char *yaml, size_t len, yaml_document_t *doc);

/* A short description of what a node is, for "expected X, got Y" messages. */
const char *rl_cfg_describe(const yaml_node_t *node, rl_cfg_excerpt_t *buf);
/* Returns 1 if `node` has `type` (reporting "expected `what`" at it otherwise), else 0. */
int rl_cfg_expect(rl_cfg_errors_t *errors, const yaml_node_t *node, const rl_cfg_path_t *path, yaml_node_type_t type,
                  const char *what);

/* Parses a plain decimal integer in [min, max]; RL_OK or RL_ERR_CONFIG (reported). */
int rl_cfg_get_uint(rl_cfg_errors_t *errors, const yaml_node_t *node, const rl_cfg_path_t *path, uint32_t min,
                    uint32_t max, uint32_t *out);
/* Decimal digits only, no sign, no leading zero, <= max; RL_OK or RL_ERR_INVALID. Not reported. */
int rl_cfg_parse_decimal(const char *s, size_t len, uint32_t max, uint32_t *out);
/*
 * Copies a scalar string (quoted or plain, not null) into a new NUL-terminated string, rejecting
 * embedded NUL bytes. RL_OK, RL_ERR_CONFIG (reported) or RL_ERR_NOMEM (flagged in `errors`).
 */
int rl_cfg_get_string(rl_cfg_errors_t *errors, const yaml_node_t *node, const rl_cfg_path_t *path, char **out);

/*
 * Reports every key of `mapping` that repeats an earlier one, or is not a scalar. On RL_OK,
 * *skip is NULL (nothing to skip) or a calloc'd array with one flag per pair: set for a pair
 * the builder must ignore. `echo_keys` 0 keeps secret keys out of the messages.
 */
int rl_cfg_check_keys(rl_cfg_errors_t *errors, yaml_document_t *doc, const yaml_node_t *mapping,
                      const rl_cfg_path_t *path, int echo_keys, unsigned char **skip);

typedef struct st_rl_cfg_parser_t {
    rl_cfg_errors_t errors;
    yaml_document_t doc;
    rl_config_t *config;
    const char *dir; /* of the config file, for relative TLS paths; dir_len 0 = the working directory */
    size_t dir_len;
} rl_cfg_parser_t;

typedef enum { RL_CFG_UINT, RL_CFG_STRING, RL_CFG_ENUM, RL_CFG_SECTION, RL_CFG_CUSTOM } rl_cfg_type_t;

/* Builds a field from `node`; `base` is the struct the row's table describes. */
typedef void (*rl_cfg_setter_t)(rl_cfg_parser_t *parser, const yaml_node_t *node, const rl_cfg_path_t *path,
                                void *base);
/* Checks (and may normalize in place) a string value; returns NULL or what is wrong with it. */
typedef const char *(*rl_cfg_check_t)(char *value);

typedef struct st_rl_cfg_directive_t {
    const char *name;
    rl_cfg_type_t type;
    size_t offset;
    size_t size; /* RL_CFG_UINT: width of the field, 2 or 4 bytes */
    uint32_t min, max, default_uint;
    const char *default_string;
    const char *const *names;                  /* RL_CFG_ENUM: spelling of each value, by value */
    const struct st_rl_cfg_directive_t *table; /* RL_CFG_SECTION: its rows, same base */
    rl_cfg_setter_t setter;                    /* RL_CFG_CUSTOM */
    rl_cfg_check_t check;                      /* RL_CFG_STRING, optional */
    int required;
} rl_cfg_directive_t;

/* A copy of `len` bytes plus a NUL, or NULL (flagged in parser->errors). */
char *rl_cfg_copy_bytes(rl_cfg_parser_t *parser, const void *bytes, size_t len);
/* Items of a sequence or pairs of a mapping; 0 for a scalar. */
size_t rl_cfg_count_items(const yaml_node_t *node);
/* The value of the first `name` key in `mapping` (the one the build applied), or NULL. */
const yaml_node_t *rl_cfg_find_value(rl_cfg_parser_t *parser, const yaml_node_t *mapping, const char *name);
/* Orders two scalar nodes by their bytes (memcmp, then length); a quoted scalar may hold a NUL. */
int rl_cfg_compare_scalars(const yaml_node_t *x, const yaml_node_t *y);
/* Stores every row's default into `base`, descending into sections. */
void rl_cfg_apply_defaults(rl_cfg_parser_t *parser, const rl_cfg_directive_t *table, void *base);
/*
 * Applies each pair of `mapping` through `table` into `base`: unknown fields, duplicate keys,
 * wrong types, bad values and missing required fields are all reported, none stops the walk.
 */
void rl_cfg_apply_table(rl_cfg_parser_t *parser, const rl_cfg_directive_t *table, const yaml_node_t *mapping,
                        const rl_cfg_path_t *path, void *base);

#endif
