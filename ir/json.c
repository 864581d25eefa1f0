/* A recursive-descent JSON reader building a tree in an arena (see json.h). */
#include "ir/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128

typedef struct {
    const unsigned char *s;
    size_t len, pos;
    int depth;
    ntc_arena *arena;
    ntc_json_error *e;
} parser;

static ntc_json *fail(parser *p, size_t at, const char *fmt, const char *arg)
{
    snprintf(p->e->msg, sizeof p->e->msg, fmt, arg);
    p->e->offset = at;
    p->e->out_of_memory = false;
    return NULL;
}

static ntc_json *no_memory(parser *p, size_t at)
{
    fail(p, at, "%s", "out of memory");
    p->e->out_of_memory = true;
    return NULL;
}

/* What stands at the cursor, for "expected X, found Y" messages. */
static const char *found(parser *p)
{
    static _Thread_local char buf[32];
    if (p->pos >= p->len)
        return "the end of the text";
    unsigned char c = p->s[p->pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, sizeof buf, "'%c'", c);
    else
        snprintf(buf, sizeof buf, "byte 0x%02x", c);
    return buf;
}

static void skip_space(parser *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static ntc_json *new_node(parser *p, ntc_json_type t, size_t at)
{
    ntc_json *j = ntc_arena_alloc(p->arena, sizeof *j);
    if (!j)
        return no_memory(p, at);
    j->type = t;
    j->offset = at;
    return j;
}

static bool literal(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return false;
    p->pos += n;
    return true;
}

/* Length of the well-formed UTF-8 sequence at s (at most avail bytes), or 0
 * for an invalid one: overlong forms, surrogates and values past U+10FFFF
 * are rejected as RFC 3629 requires. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    if (avail < n)
        return 0;
    unsigned cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static int hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static char *put_utf8(char *d, unsigned cp)
{
    if (cp < 0x80) {
        *d++ = (char)cp;
    } else if (cp < 0x800) {
        *d++ = (char)(0xc0 | cp >> 6);
        *d++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *d++ = (char)(0xe0 | cp >> 12);
        *d++ = (char)(0x80 | (cp >> 6 & 0x3f));
        *d++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *d++ = (char)(0xf0 | cp >> 18);
        *d++ = (char)(0x80 | (cp >> 12 & 0x3f));
        *d++ = (char)(0x80 | (cp >> 6 & 0x3f));
        *d++ = (char)(0x80 | (cp & 0x3f));
    }
    return d;
}

/* Decodes the string whose opening quote is at the cursor.  The decoded
 * text is never longer than the raw text (an escape of n bytes yields at
 * most n bytes of UTF-8), so one allocation of the raw length suffices. */
static const char *parse_string(parser *p)
{
    size_t start = p->pos++;
    size_t end = p->pos;
    while (end < p->len && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len)
        return (const char *)fail(p, start, "%s", "unterminated string");
    char *out = ntc_arena_alloc(p->arena, end - p->pos + 1);
    if (!out)
        return (const char *)no_memory(p, start);
    char *d = out;
    while (p->pos < end) {
        const unsigned char *c = p->s + p->pos;
        if (*c < 0x20)
            return (const char *)fail(p, p->pos, "%s", "control character inside a string");
        if (*c != '\\') {
            size_t n = utf8_seq(c, end - p->pos);
            if (!n)
                return (const char *)fail(p, p->pos, "%s", "invalid UTF-8 inside a string");
            memcpy(d, c, n);
            d += n;
            p->pos += n;
            continue;
        }
        unsigned char esc = c[1];
        const char *simple = strchr("\"\\/bfnrt", esc);
        if (esc && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            *d++ = decoded[simple - "\"\\/bfnrt"];
            p->pos += 2;
            continue;
        }
        unsigned cp;
        if (esc != 'u' || end - p->pos < 6 || hex4(c + 2, &cp))
            return (const char *)fail(p, p->pos, "%s", "bad escape sequence in a string");
        p->pos += 6;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            unsigned lo;
            if (end - p->pos < 6 || c[6] != '\\' || c[7] != 'u' || hex4(c + 8, &lo) ||
                lo < 0xdc00 || lo > 0xdfff)
                return (const char *)fail(p, p->pos - 6, "%s", "unpaired UTF-16 surrogate in a string");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            p->pos += 6;
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            return (const char *)fail(p, p->pos - 6, "%s", "unpaired UTF-16 surrogate in a string");
        } else if (cp == 0) {
            return (const char *)fail(p, p->pos - 6, "%s", "\\u0000 inside a string is not supported");
        }
        d = put_utf8(d, cp);
    }
    *d = 0;
    p->pos = end + 1;
    return out;
}

static bool is_digit(parser *p) { return p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9'; }

static ntc_json *parse_number(parser *p)
{
    size_t start = p->pos;
    bool integral = true, negative = false;
    if (p->s[p->pos] == '-')
        p->pos++, negative = true;
    if (!is_digit(p))
        return fail(p, p->pos, "expected a digit, found %s", found(p));
    if (p->s[p->pos] == '0')
        p->pos++;
    else
        while (is_digit(p))
            p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++, integral = false;
        if (!is_digit(p))
            return fail(p, p->pos, "expected a digit after '.', found %s", found(p));
        while (is_digit(p))
            p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++, integral = false;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (!is_digit(p))
            return fail(p, p->pos, "expected a digit in the exponent, found %s", found(p));
        while (is_digit(p))
            p->pos++;
    }
    ntc_json *j = new_node(p, NTC_JSON_NUMBER, start);
    if (!j)
        return NULL;
    size_t n = p->pos - start;
    /* The text is not NUL-terminated: strtod reads a copy. */
    char *copy = ntc_arena_alloc(p->arena, n + 1);
    if (!copy)
        return no_memory(p, start);
    memcpy(copy, p->s + start, n);
    j->number = strtod(copy, NULL);
    if (integral && !negative) {
        uint64_t v = 0;
        bool fits = true;
        for (size_t i = 0; i < n && fits; i++)
            fits = !__builtin_mul_overflow(v, 10, &v) && !__builtin_add_overflow(v, (uint64_t)(copy[i] - '0'), &v);
        j->is_uint = fits;
        j->uint = fits ? v : 0;
    }
    return j;
}

static ntc_json *parse_value(parser *p);

/* Array or object: the cursor is on '[' or '{'. */
static ntc_json *parse_container(parser *p)
{
    bool object = p->s[p->pos] == '{';
    char close = object ? '}' : ']';
    ntc_json *j = new_node(p, object ? NTC_JSON_OBJECT : NTC_JSON_ARRAY, p->pos);
    if (!j)
        return NULL;
    if (++p->depth > MAX_DEPTH)
        return fail(p, p->pos, "%s", "nesting is too deep");
    p->pos++;
    skip_space(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        p->depth--;
        return j;
    }
    ntc_json **tail = &j->first;
    for (;;) {
        const char *key = NULL;
        if (object) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return fail(p, p->pos, "expected a member name in quotes, found %s", found(p));
            if (!(key = parse_string(p)))
                return NULL;
            skip_space(p);
            if (p->pos >= p->len || p->s[p->pos] != ':')
                return fail(p, p->pos, "expected ':' after a member name, found %s", found(p));
            p->pos++;
        }
        ntc_json *item = parse_value(p);
        if (!item)
            return NULL;
        item->key = key;
        *tail = item;
        tail = &item->next;
        j->n++;
        skip_space(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            skip_space(p);
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            p->depth--;
            return j;
        }
        return fail(p, p->pos, object ? "expected ',' or '}' in an object, found %s"
                                      : "expected ',' or ']' in an array, found %s", found(p));
    }
}

static ntc_json *parse_value(parser *p)
{
    skip_space(p);
    if (p->pos >= p->len)
        return fail(p, p->pos, "%s", "expected a value, found the end of the text");
    size_t at = p->pos;
    unsigned char c = p->s[p->pos];
    ntc_json *j;
    switch (c) {
    case '{':
    case '[':
        return parse_container(p);
    case '"': {
        const char *s = parse_string(p);
        if (!s || !(j = new_node(p, NTC_JSON_STRING, at)))
            return NULL;
        j->string = s;
        return j;
    }
    case 't':
    case 'f':
        if (!literal(p, c == 't' ? "true" : "false"))
            break;
        if ((j = new_node(p, NTC_JSON_BOOL, at)))
            j->boolean = c == 't';
        return j;
    case 'n':
        if (!literal(p, "null"))
            break;
        return new_node(p, NTC_JSON_NULL, at);
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return parse_number(p);
    }
    return fail(p, at, "expected a value, found %s", found(p));
}

ntc_json *ntc_json_parse(ntc_arena *a, const char *text, size_t len, ntc_json_error *e)
{
    parser p = {.s = (const unsigned char *)text, .len = len, .arena = a, .e = e};
    ntc_json *root = parse_value(&p);
    if (!root)
        return NULL;
    skip_space(&p);
    if (p.pos != len)
        return fail(&p, p.pos, "unexpected %s after the JSON value", found(&p));
    return root;
}

const ntc_json *ntc_json_get(const ntc_json *obj, const char *key)
{
    if (!obj || obj->type != NTC_JSON_OBJECT)
        return NULL;
    for (const ntc_json *m = obj->first; m; m = m->next)
        if (strcmp(m->key, key) == 0)
            return m;
    return NULL;
}

const char *ntc_json_type_name(ntc_json_type t)
{
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}
