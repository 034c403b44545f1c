/*
 * The generic half of configuration parsing: YAML syntax (exactly one document, libyaml's own
 * marks on failure), typed scalar accessors, the error list, and the directive-table engine that
 * applies a mapping to a struct row by row. config.c holds only our schema and its meaning.
 * Every value is hostile: scalars are read with their explicit lengths, quoted back through a
 * bounded escaping excerpt, and the error text grows on the heap so no message can overflow.
 * We use libyaml's document loader (iterative in 0.2.5) rather than events because the builder
 * looks around (keys before the tiers they name, the tls pair); holding the tree costs nothing
 * at a config's size. The engine only descends into sections its tables name, so its recursion
 * depth is the schema's, whatever the input nests.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ratelimitd/error.h"
#include "ratelimitd/config_yaml.h"

static int reserve(rl_cfg_errors_t *errors, size_t extra)
{
    if (errors->cap - errors->len > extra)
        return 1;
    size_t cap = errors->cap != 0 ? errors->cap : 256;
    while (cap - errors->len <= extra) {
        if (cap > SIZE_MAX / 2)
            goto NoMem;
        cap *= 2;
    }
    char *text = realloc(errors->text, cap);
    if (text == NULL)
        goto NoMem;
    errors->text = text;
    errors->cap = cap;
    return 1;
NoMem:
    errors->nomem = 1;
    return 0;
}

static void append_v(rl_cfg_errors_t *errors, const char *fmt, va_list args)
{
    va_list measure;
    va_copy(measure, args);
    int need = vsnprintf(NULL, 0, fmt, measure);
    va_end(measure);
    if (errors->nomem || need < 0 || !reserve(errors, (size_t)need))
        return;
    vsnprintf(errors->text + errors->len, errors->cap - errors->len, fmt, args);
    errors->len += (size_t)need;
}

__attribute__((format(printf, 2, 3))) static void append(rl_cfg_errors_t *errors, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    append_v(errors, fmt, args);
    va_end(args);
}

/* Escapes `bytes` into dst[cap] (cap >= 8), truncating with "..."; returns the length written. */
static size_t escape_into(char *dst, size_t cap, const char *bytes, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t at = 0;
    for (size_t i = 0; i < len; ++i) {
        /* room for the widest escape, "..." and the NUL */
        if (at + 4 + 3 + 1 > cap) {
            memcpy(dst + at, "...", 3);
            at += 3;
            break;
        }
        unsigned char c = (unsigned char)bytes[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            dst[at++] = (char)c;
        } else {
            dst[at++] = '\\';
            dst[at++] = 'x';
            dst[at++] = hex[c >> 4];
            dst[at++] = hex[c & 15];
        }
    }
    dst[at] = '\0';
    return at;
}

const char *rl_cfg_excerpt(rl_cfg_excerpt_t *out, const char *bytes, size_t len)
{
    escape_into(out->text, sizeof(out->text), bytes, len);
    return out->text;
}

/* Recursion depth is the path's, which the schema bounds (listen[0].tls.key is the deepest). */
static void append_path(rl_cfg_errors_t *errors, const rl_cfg_path_t *path)
{
    if (path->parent != NULL)
        append_path(errors, path->parent);
    if (path->name == NULL) {
        append(errors, "[%zu]", path->index);
    } else {
        /* an empty key would otherwise vanish from the path */
        rl_cfg_excerpt_t name;
        append(errors, "%s%s", path->parent != NULL ? "." : "",
               path->name_len == 0 ? "\"\"" : rl_cfg_excerpt(&name, path->name, path->name_len));
    }
}

void rl_cfg_error(rl_cfg_errors_t *errors, yaml_mark_t mark, const rl_cfg_path_t *path, const char *fmt, ...)
{
    if (errors->count++ >= RL_CFG_MAX_ERRORS)
        return;
    append(errors, "%s:%zu:%zu: ", errors->file, mark.line + 1, mark.column + 1);
    if (path != NULL) {
        append_path(errors, path);
        append(errors, ": ");
    }
    va_list args;
    va_start(args, fmt);
    append_v(errors, fmt, args);
    va_end(args);
    append(errors, "\n");
}

char *rl_cfg_errors_take(rl_cfg_errors_t *errors)
{
    if (errors->count > RL_CFG_MAX_ERRORS)
        append(errors, "%s: %zu more errors not shown\n", errors->file, errors->count - RL_CFG_MAX_ERRORS);
    if (errors->nomem) {
        free(errors->text);
        *errors = (rl_cfg_errors_t){.file = errors->file};
        append(errors, "%s: out of memory\n", errors->file);
    }
    char *text = errors->text;
    *errors = (rl_cfg_errors_t){.file = errors->file};
    return text;
}

void rl_cfg_errors_dispose(rl_cfg_errors_t *errors)
{
    free(errors->text);
    errors->text = NULL;
    errors->len = errors->cap = 0;
}

/* Length of the line break at yaml[i] as libyaml counts breaks (CR LF, CR, LF, NEL, LS, PS), or 0. */
static size_t line_break_at(const char *yaml, size_t len, size_t i)
{
    const unsigned char *c = (const unsigned char *)yaml + i;
    size_t left = len - i;
    if (c[0] == '\r')
        return left >= 2 && c[1] == '\n' ? 2 : 1;
    if (c[0] == '\n')
        return 1;
    if (left >= 2 && c[0] == 0xC2 && c[1] == 0x85)
        return 2;
    if (left >= 3 && c[0] == 0xE2 && c[1] == 0x80 && (c[2] == 0xA8 || c[2] == 0xA9))
        return 3;
    return 0;
}

/* Reader errors (bad UTF-8, control bytes) carry a byte offset, not a mark: count as libyaml does. */
static yaml_mark_t mark_at_offset(const char *yaml, size_t len, size_t offset)
{
    yaml_mark_t mark = {0};
    /* libyaml's marks do not count a UTF-8 byte order mark */
    size_t i = len >= 3 && memcmp(yaml, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    while (i < offset && i < len) {
        size_t line_break = line_break_at(yaml, len, i);
        if (line_break != 0) {
            ++mark.line;
            mark.column = 0;
            i += line_break;
            continue;
        }
        /* columns count characters, as libyaml's marks do: UTF-8 continuation bytes add none */
        if (((unsigned char)yaml[i] & 0xC0) != 0x80)
            ++mark.column;
        ++i;
    }
    return mark;
}

static void report_syntax(rl_cfg_errors_t *errors, const yaml_parser_t *parser, const char *yaml, size_t len)
{
    if (parser->error == YAML_MEMORY_ERROR) {
        errors->nomem = 1;
        return;
    }
    const char *problem = parser->problem != NULL ? parser->problem : "malformed input";
    if (parser->error == YAML_READER_ERROR) {
        yaml_mark_t mark = mark_at_offset(yaml, len, parser->problem_offset);
        if (parser->problem_value >= 0)
            rl_cfg_error(errors, mark, NULL, "YAML syntax error: %s (#%x)", problem, (unsigned)parser->problem_value);
        else
            rl_cfg_error(errors, mark, NULL, "YAML syntax error: %s", problem);
    } else if (parser->context != NULL) {
        rl_cfg_error(errors, parser->problem_mark, NULL, "YAML syntax error: %s (%s started on line %zu)", problem,
                     parser->context, parser->context_mark.line + 1);
    } else {
        rl_cfg_error(errors, parser->problem_mark, NULL, "YAML syntax error: %s", problem);
    }
}

/*
 * The schema is 4 levels deep (listen[0].tls.key); anything much deeper is a mistake or an attack.
 * libyaml's scanner walks its whole stack of open levels for each token, so 60,000 nested "["
 * (120 KB) took 21 s to refuse, during which a SIGHUP'd daemon did not take SIGTERM.
 */
#define RL_CFG_MAX_DEPTH 16

/*
 * One pass over the events, before the document is built. Aliases are refused: libyaml's loader
 * resolves an alias to the anchored node, so every later message about the value would point at
 * the anchor, not at the line that uses it, and a chain of aliases is walked once per use. Tags are
 * refused too (!!float, !!binary would be silently ignored, since the schema reads every scalar as
 * plain text), but the document is still checked, so every other error is reported as well.
 * Returns false when the document must not be built: an alias, or nesting past RL_CFG_MAX_DEPTH,
 * where the scan stops. Syntax errors are left to the loader, which reports them.
 */
static bool scan_events(rl_cfg_errors_t *errors, const char *yaml, size_t len)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        errors->nomem = 1;
        return false;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    bool buildable = true, end = false;
    unsigned depth = 0;
    while (!end) {
        yaml_event_t event;
        if (!yaml_parser_parse(&parser, &event))
            break;
        const yaml_char_t *tag = NULL;
        if (event.type == YAML_ALIAS_EVENT) {
            rl_cfg_error(errors, event.start_mark, NULL, "aliases (*%.64s) are not supported; write the value out",
                         (const char *)event.data.alias.anchor);
            buildable = false;
        } else if (event.type == YAML_SCALAR_EVENT) {
            tag = event.data.scalar.tag;
        } else if (event.type == YAML_SEQUENCE_START_EVENT || event.type == YAML_MAPPING_START_EVENT) {
            tag =
                event.type == YAML_SEQUENCE_START_EVENT ? event.data.sequence_start.tag : event.data.mapping_start.tag;
            if (++depth > RL_CFG_MAX_DEPTH) {
                rl_cfg_error(errors, event.start_mark, NULL, "nested more than %d levels deep", RL_CFG_MAX_DEPTH);
                buildable = false;
                end = true;
            }
        } else if (event.type == YAML_SEQUENCE_END_EVENT || event.type == YAML_MAPPING_END_EVENT) {
            --depth;
        }
        if (tag != NULL)
            rl_cfg_error(errors, event.start_mark, NULL, "YAML tags (%.64s) are not supported", (const char *)tag);
        end = end || event.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    return buildable;
}

int rl_cfg_load_document(rl_cfg_errors_t *errors, const char *yaml, size_t len, yaml_document_t *doc)
{
    int ret = RL_ERR_CONFIG;
    yaml_parser_t parser;
    memset(doc, 0, sizeof(*doc));
    /* libyaml would read UTF-16 too, but report_syntax's positions count UTF-8 bytes; and a
     * configuration is text an operator edits, which on this platform is UTF-8 */
    if (len >= 2 && (memcmp(yaml, "\xFF\xFE", 2) == 0 || memcmp(yaml, "\xFE\xFF", 2) == 0)) {
        rl_cfg_error(errors, (yaml_mark_t){0}, NULL,
                     "the file is UTF-16 (it starts with a UTF-16 byte order mark); "
                     "write it as UTF-8");
        return RL_ERR_CONFIG;
    }
    bool buildable = scan_events(errors, yaml, len);
    if (errors->nomem)
        return RL_ERR_NOMEM;
    if (!buildable)
        return RL_ERR_CONFIG;
    if (!yaml_parser_initialize(&parser)) {
        errors->nomem = 1;
        return RL_ERR_NOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    /* on failure libyaml has already deleted the half-built document */
    if (!yaml_parser_load(&parser, doc)) {
        report_syntax(errors, &parser, yaml, len);
        goto Exit;
    }
    /* a second document would be silently ignored by a naive loader: an error, but the first is
     * still checked, so that its own errors are reported too */
    yaml_document_t next;
    if (!yaml_parser_load(&parser, &next)) {
        report_syntax(errors, &parser, yaml, len);
        yaml_document_delete(doc);
        goto Exit;
    }
    if (yaml_document_get_root_node(&next) != NULL)
        rl_cfg_error(errors, next.start_mark, NULL, "more than one YAML document; a configuration is one document");
    yaml_document_delete(&next);
    ret = RL_OK;
Exit:
    yaml_parser_delete(&parser);
    return ret;
}

static int is_null(const yaml_node_t *node)
{
    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    static const char *const spellings[] = {"", "~", "null", "Null", "NULL"};
    for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); ++i) {
        if (node->data.scalar.length == strlen(spellings[i]) &&
            memcmp(node->data.scalar.value, spellings[i], node->data.scalar.length) == 0)
            return 1;
    }
    return 0;
}

const char *rl_cfg_describe(const yaml_node_t *node, rl_cfg_excerpt_t *buf)
{
    switch (node->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    case YAML_SCALAR_NODE:
        break;
    default:
        return "nothing";
    }
    if (is_null(node))
        return "null";
    static const char quoted[] = "the string ";
    size_t at = 0;
    if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        memcpy(buf->text, quoted, sizeof(quoted) - 1);
        at = sizeof(quoted) - 1;
    }
    buf->text[at++] = '"';
    at += escape_into(buf->text + at, sizeof(buf->text) - at - 1, (const char *)node->data.scalar.value,
                      node->data.scalar.length);
    buf->text[at++] = '"';
    buf->text[at] = '\0';
    return buf->text;
}

int rl_cfg_expect(rl_cfg_errors_t *errors, const yaml_node_t *node, const rl_cfg_path_t *path, yaml_node_type_t type,
                  const char *what)
{
    if (node->type == type)
        return 1;
    rl_cfg_excerpt_t got;
    rl_cfg_error(errors, node->start_mark, path, "expected %s, got %s", what, rl_cfg_describe(node, &got));
    return 0;
}

/* 0: parsed, 1: not a decimal integer, 2: larger than max */
static int parse_decimal(const char *s, size_t len, uint32_t max, uint32_t *out)
{
    if (len == 0 || (len > 1 && s[0] == '0'))
        return 1;
    uint64_t value = 0;
    int too_large = 0;
    for (size_t i = 0; i < len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return 1;
        if (!too_large && (value = value * 10 + (uint64_t)(s[i] - '0')) > max)
            too_large = 1;
    }
    if (too_large)
        return 2;
    *out = (uint32_t)value;
    return 0;
}

int rl_cfg_parse_decimal(const char *s, size_t len, uint32_t max, uint32_t *out)
{
    return parse_decimal(s, len, max, out) == 0 ? RL_OK : RL_ERR_INVALID;
}

int rl_cfg_get_uint(rl_cfg_errors_t *errors, const yaml_node_t *node, const rl_cfg_path_t *path, uint32_t min,
                    uint32_t max, uint32_t *out)
{
    rl_cfg_excerpt_t got;
    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || is_null(node)) {
        rl_cfg_error(errors, node->start_mark, path, "expected an integer, got %s", rl_cfg_describe(node, &got));
        return RL_ERR_CONFIG;
    }
    uint32_t value = 0;
    int parsed = parse_decimal((const char *)node->data.scalar.value, node->data.scalar.length, max, &value);
    if (parsed == 1) {
        rl_cfg_error(errors, node->start_mark, path,
                     "expected a decimal integer (digits only: no sign, exponent or leading zero), got %s",
                     rl_cfg_describe(node, &got));
        return RL_ERR_CONFIG;
    }
    if (parsed == 2 || value < min) {
        rl_cfg_error(errors, node->start_mark, path, "must be between %u and %u, got %s", min, max,
                     rl_cfg_describe(node, &got));
        return RL_ERR_CONFIG;
    }
    *out = value;
    return RL_OK;
}

int rl_cfg_get_string(rl_cfg_errors_t *errors, const yaml_node_t *node, const rl_cfg_path_t *path, char **out)
{
    rl_cfg_excerpt_t got;
    if (node->type != YAML_SCALAR_NODE || is_null(node)) {
        rl_cfg_error(errors, node->start_mark, path, "expected a string, got %s", rl_cfg_describe(node, &got));
        return RL_ERR_CONFIG;
    }
    size_t len = node->data.scalar.length;
    if (memchr(node->data.scalar.value, '\0', len) != NULL) {
        rl_cfg_error(errors, node->start_mark, path, "must not contain NUL bytes");
        return RL_ERR_CONFIG;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        errors->nomem = 1;
        return RL_ERR_NOMEM;
    }
    memcpy(copy, node->data.scalar.value, len);
    copy[len] = '\0';
    *out = copy;
    return RL_OK;
}

typedef struct st_rl_cfg_key_ref_t {
    const yaml_node_t *node;
    size_t pair;
} rl_cfg_key_ref_t;

int rl_cfg_compare_scalars(const yaml_node_t *x, const yaml_node_t *y)
{
    size_t xl = x->data.scalar.length, yl = y->data.scalar.length;
    int c = memcmp(x->data.scalar.value, y->data.scalar.value, xl < yl ? xl : yl);
    if (c != 0 || xl == yl)
        return c;
    return xl < yl ? -1 : 1;
}

static int compare_keys(const void *a, const void *b)
{
    const rl_cfg_key_ref_t *x = a, *y = b;
    int c = rl_cfg_compare_scalars(x->node, y->node);
    if (c != 0)
        return c;
    /* equal keys stay in document order, so the first of a run is the original */
    return x->pair < y->pair ? -1 : x->pair > y->pair;
}

static void report_key(rl_cfg_errors_t *errors, const yaml_node_t *key, const yaml_node_t *first,
                       const rl_cfg_path_t *path, int echo_keys)
{
    if (first == NULL) {
        rl_cfg_excerpt_t got;
        rl_cfg_error(errors, key->start_mark, path, "a key must be a scalar, got %s", rl_cfg_describe(key, &got));
    } else if (echo_keys) {
        rl_cfg_path_t field = rl_cfg_path_field(path, (const char *)key->data.scalar.value, key->data.scalar.length);
        rl_cfg_error(errors, key->start_mark, &field, "duplicate key (first on line %zu)", first->start_mark.line + 1);
    } else {
        rl_cfg_error(errors, key->start_mark, path, "duplicate key (first on line %zu)", first->start_mark.line + 1);
    }
}

/* O(n log n): limits.keys may list many thousands of keys. */
int rl_cfg_check_keys(rl_cfg_errors_t *errors, yaml_document_t *doc, const yaml_node_t *mapping,
                      const rl_cfg_path_t *path, int echo_keys, unsigned char **skip)
{
    size_t n = (size_t)(mapping->data.mapping.pairs.top - mapping->data.mapping.pairs.start);
    rl_cfg_key_ref_t *refs = calloc(n + 1, sizeof(*refs));
    const yaml_node_t **first = calloc(n + 1, sizeof(*first));
    unsigned char *flags = calloc(n + 1, 1);
    int ret = RL_ERR_NOMEM, any = 0;
    if (refs == NULL || first == NULL || flags == NULL)
        goto Exit;
    size_t num_refs = 0;
    for (size_t i = 0; i < n; ++i) {
        const yaml_node_t *key = yaml_document_get_node(doc, mapping->data.mapping.pairs.start[i].key);
        if (key != NULL && key->type == YAML_SCALAR_NODE)
            refs[num_refs++] = (rl_cfg_key_ref_t){.node = key, .pair = i};
        else
            flags[i] = any = 1;
    }
    qsort(refs, num_refs, sizeof(*refs), compare_keys);
    for (size_t i = 1, run = 0; i < num_refs; ++i) {
        if (rl_cfg_compare_scalars(refs[i].node, refs[run].node) != 0) {
            run = i;
            continue;
        }
        first[refs[i].pair] = refs[run].node;
        flags[refs[i].pair] = any = 1;
    }
    /* report in document order, which is the order an operator reads */
    for (size_t i = 0; i < n; ++i) {
        if (!flags[i])
            continue;
        const yaml_node_t *key = yaml_document_get_node(doc, mapping->data.mapping.pairs.start[i].key);
        report_key(errors, key != NULL ? key : mapping, first[i], path, echo_keys);
    }
    ret = RL_OK;
Exit:
    if (ret != RL_OK)
        errors->nomem = 1;
    free(refs);
    free(first);
    if (ret == RL_OK && any) {
        *skip = flags;
    } else {
        free(flags);
        *skip = NULL;
    }
    return ret;
}

char *rl_cfg_copy_bytes(rl_cfg_parser_t *parser, const void *bytes, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        parser->errors.nomem = 1;
        return NULL;
    }
    memcpy(copy, bytes, len);
    copy[len] = '\0';
    return copy;
}

size_t rl_cfg_count_items(const yaml_node_t *node)
{
    if (node->type == YAML_SEQUENCE_NODE)
        return (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (node->type == YAML_MAPPING_NODE)
        return (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    return 0;
}

static int scalar_equals(const yaml_node_t *node, const char *text)
{
    size_t len = strlen(text);
    return node != NULL && node->type == YAML_SCALAR_NODE && node->data.scalar.length == len &&
           memcmp(node->data.scalar.value, text, len) == 0;
}

/* The value of the first `name` key in `mapping`, or NULL; the first is the one the build applied. */
const yaml_node_t *rl_cfg_find_value(rl_cfg_parser_t *parser, const yaml_node_t *mapping, const char *name)
{
    if (mapping == NULL || mapping->type != YAML_MAPPING_NODE)
        return NULL;
    for (const yaml_node_pair_t *pair = mapping->data.mapping.pairs.start; pair < mapping->data.mapping.pairs.top;
         ++pair) {
        if (scalar_equals(yaml_document_get_node(&parser->doc, pair->key), name))
            return yaml_document_get_node(&parser->doc, pair->value);
    }
    return NULL;
}

/* Fields are uint16_t (ports) or uint32_t; the row's max keeps the value within the width. */
static void store_uint(const rl_cfg_directive_t *row, char *field, uint32_t value)
{
    if (row->size == sizeof(uint16_t)) {
        assert(row->max <= UINT16_MAX);
        uint16_t narrow = (uint16_t)value;
        memcpy(field, &narrow, sizeof(narrow));
    } else {
        assert(row->size == sizeof(uint32_t));
        memcpy(field, &value, sizeof(value));
    }
}

void rl_cfg_apply_defaults(rl_cfg_parser_t *parser, const rl_cfg_directive_t *table, void *base)
{
    for (const rl_cfg_directive_t *row = table; row->name != NULL; ++row) {
        char *field = (char *)base + row->offset;
        switch (row->type) {
        case RL_CFG_UINT:
            store_uint(row, field, row->default_uint);
            break;
        case RL_CFG_STRING:
            if (row->default_string != NULL)
                *(char **)field = rl_cfg_copy_bytes(parser, row->default_string, strlen(row->default_string));
            break;
        case RL_CFG_ENUM:
            *(int *)field = 0;
            break;
        case RL_CFG_SECTION:
            rl_cfg_apply_defaults(parser, row->table, base);
            break;
        case RL_CFG_CUSTOM:
            break;
        }
    }
}

static void set_enum(rl_cfg_parser_t *parser, const rl_cfg_directive_t *row, const yaml_node_t *node,
                     const rl_cfg_path_t *path, int *field)
{
    for (int i = 0; row->names[i] != NULL; ++i) {
        if (node->type == YAML_SCALAR_NODE && scalar_equals(node, row->names[i])) {
            *field = i;
            return;
        }
    }
    /* the spellings are static and short, but bound the list anyway */
    char choices[128] = "";
    for (size_t i = 0, at = 0; row->names[i] != NULL; ++i) {
        int n = snprintf(choices + at, sizeof(choices) - at, "%s%s", i != 0 ? ", " : "", row->names[i]);
        if (n < 0 || (size_t)n >= sizeof(choices) - at)
            break;
        at += (size_t)n;
    }
    rl_cfg_excerpt_t got;
    rl_cfg_error(&parser->errors, node->start_mark, path, "must be one of %s, got %s", choices,
                 rl_cfg_describe(node, &got));
}

static void apply_row(rl_cfg_parser_t *parser, const rl_cfg_directive_t *row, const yaml_node_t *node,
                      const rl_cfg_path_t *path, void *base)
{
    char *field = (char *)base + row->offset;
    switch (row->type) {
    case RL_CFG_UINT: {
        uint32_t value;
        if (rl_cfg_get_uint(&parser->errors, node, path, row->min, row->max, &value) == RL_OK)
            store_uint(row, field, value);
        break;
    }
    case RL_CFG_STRING: {
        char *value;
        if (rl_cfg_get_string(&parser->errors, node, path, &value) != RL_OK)
            break;
        const char *problem = row->check != NULL ? row->check(value) : NULL;
        if (problem != NULL) {
            rl_cfg_excerpt_t got;
            rl_cfg_error(&parser->errors, node->start_mark, path, "%s, got %s", problem, rl_cfg_describe(node, &got));
            free(value);
            break;
        }
        free(*(char **)field);
        *(char **)field = value;
        break;
    }
    case RL_CFG_ENUM:
        set_enum(parser, row, node, path, (int *)field);
        break;
    case RL_CFG_SECTION:
        if (rl_cfg_expect(&parser->errors, node, path, YAML_MAPPING_NODE, "a mapping"))
            rl_cfg_apply_table(parser, row->table, node, path, base);
        break;
    case RL_CFG_CUSTOM:
        row->setter(parser, node, path, base);
        break;
    }
}

void rl_cfg_apply_table(rl_cfg_parser_t *parser, const rl_cfg_directive_t *table, const yaml_node_t *mapping,
                        const rl_cfg_path_t *path, void *base)
{
    unsigned char *skip;
    if (rl_cfg_check_keys(&parser->errors, &parser->doc, mapping, path, 1, &skip) != RL_OK)
        return;
    uint64_t seen = 0;
    size_t n = rl_cfg_count_items(mapping);
    for (size_t i = 0; i < n; ++i) {
        if (skip != NULL && skip[i])
            continue;
        const yaml_node_pair_t *pair = &mapping->data.mapping.pairs.start[i];
        const yaml_node_t *key = yaml_document_get_node(&parser->doc, pair->key);
        const yaml_node_t *value = yaml_document_get_node(&parser->doc, pair->value);
        if (key == NULL || value == NULL)
            continue;
        rl_cfg_path_t field = rl_cfg_path_field(path, (const char *)key->data.scalar.value, key->data.scalar.length);
        const rl_cfg_directive_t *row = table;
        while (row->name != NULL && !scalar_equals(key, row->name))
            ++row;
        if (row->name == NULL) {
            rl_cfg_error(&parser->errors, key->start_mark, &field, "unknown field");
            continue;
        }
        seen |= UINT64_C(1) << (row - table);
        apply_row(parser, row, value, &field, base);
    }
    for (const rl_cfg_directive_t *row = table; row->name != NULL; ++row) {
        if (row->required && (seen & (UINT64_C(1) << (row - table))) == 0) {
            rl_cfg_path_t field = rl_cfg_path_field(path, row->name, strlen(row->name));
            rl_cfg_error(&parser->errors, mapping->start_mark, &field, "missing required field");
        }
    }
    free(skip);
}
