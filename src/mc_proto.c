/*
 * Memcached meta protocol: encoding of `ma`/`mn` and an incremental reply parser.
 *
 * The parser is restartable rather than stateful: each call looks at the bytes from the start
 * of a reply and either finishes it, asks for more, or rejects it. Replies are tiny (a header
 * line plus at most 20 digits), so re-scanning a partial reply costs nothing and saves a state
 * machine that would have to be fuzzed on its own. What keeps it safe against a hostile or
 * broken server: the header line must end within RL_MC_MAX_LINE bytes, an unknown reply code is
 * rejected as soon as its first bytes show it, and a value line must be exactly as long as
 * announced.
 */
#include <string.h>
#include "ratelimitd/error.h"
#include "ratelimitd/mc_proto.h"

typedef enum { RL_MC_REST_FLAGS = 0, RL_MC_REST_NONE, RL_MC_REST_TEXT } rl_mc_rest_t;

typedef struct st_rl_mc_code_t {
    const char *text;
    size_t len;
    rl_mc_reply_kind_t kind;
    rl_mc_rest_t rest; /* what may follow the code on the header line */
} rl_mc_code_t;

static const rl_mc_code_t codes[] = {
    {"VA", 2, RL_MC_REPLY_VA, RL_MC_REST_FLAGS},
    {"HD", 2, RL_MC_REPLY_HD, RL_MC_REST_FLAGS},
    {"NF", 2, RL_MC_REPLY_NF, RL_MC_REST_FLAGS},
    {"NS", 2, RL_MC_REPLY_NS, RL_MC_REST_FLAGS},
    {"EX", 2, RL_MC_REPLY_EX, RL_MC_REST_FLAGS},
    {"MN", 2, RL_MC_REPLY_MN, RL_MC_REST_NONE},
    {"ERROR", 5, RL_MC_REPLY_ERROR, RL_MC_REST_TEXT},
    {"CLIENT_ERROR", 12, RL_MC_REPLY_ERROR, RL_MC_REST_TEXT},
    {"SERVER_ERROR", 12, RL_MC_REPLY_ERROR, RL_MC_REST_TEXT},
};
#define RL_MC_NUM_CODES (sizeof(codes) / sizeof(codes[0]))

static size_t append(char *buf, size_t at, const char *bytes, size_t len)
{
    memcpy(buf + at, bytes, len);
    return at + len;
}

static size_t append_u32(char *buf, size_t at, uint32_t value)
{
    char digits[10];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    while (n != 0)
        buf[at++] = digits[--n];
    return at;
}

static bool key_is_valid(const char *key, size_t len)
{
    if (len == 0 || len > RL_MC_MAX_KEY_LEN)
        return false;
    for (size_t i = 0; i != len; ++i)
        if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
            return false;
    return true;
}

size_t rl_mc_encode_incr(char *buf, size_t cap, const char *key, size_t key_len, uint32_t ttl_s, uint32_t opaque)
{
    if (!key_is_valid(key, key_len) || cap < RL_MC_INCR_MAX_LEN)
        return 0;
    size_t at = append(buf, 0, "ma ", 3);
    at = append(buf, at, key, key_len);
    at = append(buf, at, " N", 2);
    at = append_u32(buf, at, ttl_s);
    at = append(buf, at, " J1 v O", 7);
    at = append_u32(buf, at, opaque);
    return append(buf, at, "\r\n", 2);
}

size_t rl_mc_encode_noop(char *buf, size_t cap)
{
    if (cap < 4)
        return 0;
    return append(buf, 0, "mn\r\n", 4);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Decimal digits only, no sign, no overflow past `max`. */
static bool parse_decimal(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0)
        return false;
    uint64_t value = 0;
    for (size_t i = 0; i != len; ++i) {
        if (!is_digit(s[i]))
            return false;
        uint64_t digit = (uint64_t)(s[i] - '0');
        if (value > (max - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    *out = value;
    return true;
}

/*
 * Matches the reply code at the start of the line. `avail` bytes are known; the code is complete
 * when followed by ' ' or '\r'. Returns the code, NULL with *incomplete set if the bytes so far
 * are a prefix of some code, or NULL for garbage.
 */
static const rl_mc_code_t *match_code(const char *buf, size_t avail, bool *incomplete)
{
    size_t end = 0;
    while (end != avail && buf[end] != ' ' && buf[end] != '\r')
        ++end;
    *incomplete = end == avail;
    for (size_t i = 0; i != RL_MC_NUM_CODES; ++i) {
        if (*incomplete ? end <= codes[i].len && memcmp(buf, codes[i].text, end) == 0
                        : end == codes[i].len && memcmp(buf, codes[i].text, end) == 0) {
            return *incomplete ? NULL : &codes[i];
        }
    }
    *incomplete = false;
    return NULL;
}

/*
 * Finds the CRLF that ends the header line. Returns RL_OK with *eol at the '\r', NEED_MORE, or
 * PROTOCOL for a bare '\n', a '\r' not followed by '\n', or a line longer than RL_MC_MAX_LINE.
 */
static int find_line_end(const char *buf, size_t len, size_t *eol)
{
    size_t limit = len < RL_MC_MAX_LINE ? len : RL_MC_MAX_LINE;
    for (size_t i = 0; i != limit; ++i) {
        if (buf[i] == '\n')
            return RL_ERR_BACKEND_PROTOCOL;
        if (buf[i] == '\r') {
            if (i + 1 == len)
                return RL_ERR_NEED_MORE;
            if (buf[i + 1] != '\n' || i + 2 > RL_MC_MAX_LINE)
                return RL_ERR_BACKEND_PROTOCOL;
            *eol = i;
            return RL_OK;
        }
    }
    return len < RL_MC_MAX_LINE ? RL_ERR_NEED_MORE : RL_ERR_BACKEND_PROTOCOL;
}

/* Next space-separated token of [*at, end); runs of spaces are tolerated. False at the end. */
static bool next_token(const char *line, size_t *at, size_t end, size_t *tok, size_t *tok_len)
{
    while (*at != end && line[*at] == ' ')
        ++*at;
    if (*at == end)
        return false;
    *tok = *at;
    while (*at != end && line[*at] != ' ')
        ++*at;
    *tok_len = *at - *tok;
    return true;
}

/* Flags are a letter and a printable token; only O (opaque) is interpreted. */
static int parse_flags(const char *line, size_t at, size_t end, rl_mc_reply_t *reply)
{
    size_t tok, tok_len;
    while (next_token(line, &at, end, &tok, &tok_len)) {
        char flag = line[tok];
        if (!((flag >= 'a' && flag <= 'z') || (flag >= 'A' && flag <= 'Z')))
            return RL_ERR_BACKEND_PROTOCOL;
        for (size_t i = tok + 1; i != tok + tok_len; ++i)
            if ((unsigned char)line[i] < 0x21 || (unsigned char)line[i] > 0x7e)
                return RL_ERR_BACKEND_PROTOCOL;
        if (flag == 'O') {
            uint64_t opaque;
            if (!parse_decimal(line + tok + 1, tok_len - 1, UINT32_MAX, &opaque))
                return RL_ERR_BACKEND_PROTOCOL;
            reply->has_opaque = true;
            reply->opaque = (uint32_t)opaque;
        }
    }
    return RL_OK;
}

/* The data block of a VA reply: exactly `size` digits then CRLF, starting at `at`. */
static int parse_value(const char *buf, size_t len, size_t at, uint64_t size, rl_mc_reply_t *reply, size_t *consumed)
{
    if (len - at < size + 2)
        return RL_ERR_NEED_MORE;
    if (buf[at + size] != '\r' || buf[at + size + 1] != '\n')
        return RL_ERR_BACKEND_PROTOCOL;
    if (!parse_decimal(buf + at, (size_t)size, UINT64_MAX, &reply->value))
        return RL_ERR_BACKEND_PROTOCOL;
    reply->has_value = true;
    *consumed = at + (size_t)size + 2;
    return RL_OK;
}

int rl_mc_parse_reply(const char *buf, size_t len, rl_mc_reply_t *out, size_t *consumed)
{
    bool incomplete;
    const rl_mc_code_t *code = match_code(buf, len < RL_MC_MAX_LINE ? len : RL_MC_MAX_LINE, &incomplete);
    if (code == NULL)
        return incomplete && len < RL_MC_MAX_LINE ? RL_ERR_NEED_MORE : RL_ERR_BACKEND_PROTOCOL;

    size_t eol;
    int ret = find_line_end(buf, len, &eol);
    if (ret != RL_OK)
        return ret;

    rl_mc_reply_t reply = {.kind = code->kind};
    size_t at = code->len;
    switch (code->rest) {
    case RL_MC_REST_NONE:
        if (at != eol)
            return RL_ERR_BACKEND_PROTOCOL;
        break;
    case RL_MC_REST_TEXT:
        /* the message is for humans; the line scan already rejected stray CR/LF */
        break;
    case RL_MC_REST_FLAGS:
        if (code->kind == RL_MC_REPLY_VA) {
            size_t tok, tok_len;
            uint64_t size;
            if (!next_token(buf, &at, eol, &tok, &tok_len) ||
                !parse_decimal(buf + tok, tok_len, RL_MC_MAX_VALUE_DIGITS, &size) || size == 0)
                return RL_ERR_BACKEND_PROTOCOL;
            if ((ret = parse_flags(buf, at, eol, &reply)) != RL_OK)
                return ret;
            if ((ret = parse_value(buf, len, eol + 2, size, &reply, consumed)) != RL_OK)
                return ret;
            *out = reply;
            return RL_OK;
        }
        if ((ret = parse_flags(buf, at, eol, &reply)) != RL_OK)
            return ret;
        break;
    }
    *out = reply;
    *consumed = eol + 2;
    return RL_OK;
}
