/* json.c - a strict RFC 8259 JSON reader.
 *
 * Two passes over the same recursive-descent code: the first validates the text and
 * counts the nodes and the bytes of decoded strings, the second fills one malloc'd
 * block [nodes | strings]. The root is the first node of the block, so freeing the
 * root frees the whole tree, and a document that fails never allocates anything.
 *
 * Strictness: exactly the RFC grammar (no comments, no trailing commas, no single
 * quotes, no leading zeros or '+', no NaN/Infinity), whitespace = space, tab, CR, LF;
 * strings must be valid UTF-8 (no overlong forms, no encoded surrogates, nothing
 * above U+10FFFF) without raw control characters; \uXXXX escapes must pair surrogates
 * correctly. Limits: nesting depth 64; numbers that overflow a double are rejected;
 * \u0000 is rejected (decoded strings are NUL-terminated C strings). Duplicate object
 * keys are accepted, as the RFC allows; tt_json_get returns the first.
 *
 * The reader never looks at text[len] or beyond: the input need not be NUL-terminated.
 * Errors read "JSON error at byte <offset>: <reason>".
 */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct parser {
    const unsigned char *s;
    size_t len, pos;
    bool fill;              /* second pass: write nodes and strings               */
    size_t n_nodes;         /* nodes used so far                                  */
    size_t n_chars;         /* string bytes used so far (each string + its NUL)   */
    tt_json *nodes;         /* second pass only                                   */
    char *chars;            /* second pass only                                   */
    char *err;
    size_t errlen;
    bool failed;
} parser;

static void fail(parser *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(parser *p, size_t at, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = true;
    if (!p->err || p->errlen == 0) return;
    char reason[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "JSON error at byte %zu: %s", at, reason);
}

/* a printable rendering of the byte at pos for messages */
static const char *show_byte(const parser *p, size_t pos, char buf[8]) {
    if (pos >= p->len) return "end of input";
    unsigned c = p->s[pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, 8, "'%c'", (char)c);
    else
        snprintf(buf, 8, "0x%02x", c);
    return buf;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static tt_json *new_node(parser *p, tt_json_type type) {
    size_t i = p->n_nodes++;
    if (!p->fill) return NULL;
    tt_json *j = &p->nodes[i];
    memset(j, 0, sizeof *j);
    j->type = type;
    return j;
}

static bool literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) {
        fail(p, p->pos, "invalid literal (expected '%s')", word);
        return false;
    }
    p->pos += n;
    return true;
}

static int hex4(parser *p, size_t at) {
    if (p->len - at < 4) {
        fail(p, at, "unterminated \\u escape");
        return -1;
    }
    int v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p->s[at + (size_t)k];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else {
            fail(p, at + (size_t)k, "invalid hex digit in \\u escape");
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* Length of the valid UTF-8 sequence starting at pos (1..4), or 0 if invalid. */
static size_t utf8_seq(const parser *p, size_t pos) {
    const unsigned char *s = p->s + pos;
    size_t avail = p->len - pos;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t n;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07, min = 0x10000;
    else return 0; /* continuation byte, C0/C1 (overlong), F5..FF */
    if (avail < n) return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parse a string at p->pos (which is '"'). On the fill pass, writes the decoded bytes
 * plus a NUL into the string area and returns it (and its length in *out_len). */
static char *parse_string(parser *p, size_t *out_len) {
    size_t start = p->pos;
    p->pos++; /* opening quote */
    char *out = p->fill ? p->chars + p->n_chars : NULL;
    size_t n = 0;
    for (;;) {
        if (p->pos >= p->len) {
            fail(p, start, "unterminated string");
            return NULL;
        }
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            fail(p, p->pos, "control character 0x%02x in string (must be escaped)", c);
            return NULL;
        }
        if (c == '\\') {
            size_t esc = p->pos;
            if (p->pos + 1 >= p->len) {
                fail(p, start, "unterminated string");
                return NULL;
            }
            unsigned char e = p->s[p->pos + 1];
            p->pos += 2;
            char simple = 0;
            switch (e) {
            case '"': simple = '"'; break;
            case '\\': simple = '\\'; break;
            case '/': simple = '/'; break;
            case 'b': simple = '\b'; break;
            case 'f': simple = '\f'; break;
            case 'n': simple = '\n'; break;
            case 'r': simple = '\r'; break;
            case 't': simple = '\t'; break;
            case 'u': break;
            default:
                fail(p, esc, "invalid escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
                return NULL;
            }
            if (simple) {
                if (out) out[n] = simple;
                n++;
                continue;
            }
            int hi = hex4(p, p->pos);
            if (hi < 0) return NULL;
            p->pos += 4;
            uint32_t cp = (uint32_t)hi;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(p, esc, "unpaired low surrogate \\u%04X", (unsigned)cp);
                return NULL;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    fail(p, esc, "high surrogate \\u%04X not followed by a low surrogate",
                         (unsigned)cp);
                    return NULL;
                }
                int lo = hex4(p, p->pos + 2);
                if (lo < 0) return NULL;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    fail(p, esc, "high surrogate \\u%04X not followed by a low surrogate",
                         (unsigned)cp);
                    return NULL;
                }
                p->pos += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
            }
            if (cp == 0) {
                fail(p, esc, "\\u0000 in a string is not supported");
                return NULL;
            }
            char tmp[4];
            size_t k = put_utf8(tmp, cp);
            if (out) memcpy(out + n, tmp, k);
            n += k;
            continue;
        }
        size_t k = utf8_seq(p, p->pos);
        if (k == 0) {
            fail(p, p->pos, "invalid UTF-8 in string");
            return NULL;
        }
        if (out) memcpy(out + n, p->s + p->pos, k);
        n += k;
        p->pos += k;
    }
    if (out) out[n] = 0;
    p->n_chars += n + 1;
    if (out_len) *out_len = n;
    return out;
}

static void parse_number(parser *p, tt_json *j) {
    size_t start = p->pos, i = p->pos;
    const unsigned char *s = p->s;
    if (i < p->len && s[i] == '-') i++;
    if (i >= p->len || !(s[i] >= '0' && s[i] <= '9')) {
        fail(p, start, "invalid number");
        return;
    }
    if (s[i] == '0') {
        i++;
        if (i < p->len && s[i] >= '0' && s[i] <= '9') {
            fail(p, start, "invalid number (leading zero)");
            return;
        }
    } else {
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->len && s[i] == '.') {
        i++;
        if (i >= p->len || !(s[i] >= '0' && s[i] <= '9')) {
            fail(p, start, "invalid number (digit expected after '.')");
            return;
        }
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->len || !(s[i] >= '0' && s[i] <= '9')) {
            fail(p, start, "invalid number (digit expected in exponent)");
            return;
        }
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    size_t n = i - start;
    /* strtod needs a NUL-terminated copy; the grammar above already validated it */
    char small[128], *buf = small;
    if (n >= sizeof small) {
        buf = malloc(n + 1);
        if (!buf) {
            fail(p, start, "out of memory");
            return;
        }
    }
    memcpy(buf, s + start, n);
    buf[n] = 0;
    double v = strtod(buf, NULL);
    if (buf != small) free(buf);
    if (!isfinite(v)) {
        fail(p, start, "number out of range");
        return;
    }
    p->pos = i;
    if (j) j->number = v;
}

static tt_json *parse_value(parser *p, int depth);

static tt_json *parse_container(parser *p, int depth, bool object) {
    size_t open = p->pos;
    if (depth >= JSON_MAX_DEPTH) {
        fail(p, open, "nesting deeper than %d", JSON_MAX_DEPTH);
        return NULL;
    }
    tt_json *j = new_node(p, object ? TT_JSON_OBJECT : TT_JSON_ARRAY);
    tt_json *last = NULL;
    size_t count = 0;
    char close = object ? '}' : ']';
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return j;
    }
    for (;;) {
        char *key = NULL;
        char b[8];
        skip_ws(p);
        if (object) {
            if (p->pos >= p->len) {
                fail(p, open, "unterminated object");
                return NULL;
            }
            if (p->s[p->pos] != '"') {
                fail(p, p->pos, "expected a string key, got %s", show_byte(p, p->pos, b));
                return NULL;
            }
            key = parse_string(p, NULL);
            if (p->failed) return NULL;
            skip_ws(p);
            if (p->pos >= p->len) {
                fail(p, open, "unterminated object");
                return NULL;
            }
            if (p->s[p->pos] != ':') {
                fail(p, p->pos, "expected ':' after key, got %s", show_byte(p, p->pos, b));
                return NULL;
            }
            p->pos++;
        }
        tt_json *child = parse_value(p, depth + 1);
        if (p->failed) return NULL;
        count++;
        if (j) {
            child->key = key;
            if (last) last->next = child;
            else j->child = child;
            last = child;
        }
        skip_ws(p);
        if (p->pos >= p->len) {
            fail(p, open, object ? "unterminated object" : "unterminated array");
            return NULL;
        }
        unsigned char c = p->s[p->pos];
        if (c == ',') {
            p->pos++;
            skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == close) {
                fail(p, p->pos, "trailing comma");
                return NULL;
            }
            continue;
        }
        if (c == close) {
            p->pos++;
            break;
        }
        fail(p, p->pos, "expected ',' or '%c', got %s", close, show_byte(p, p->pos, b));
        return NULL;
    }
    if (j) j->len = count;
    return j;
}

static tt_json *parse_value(parser *p, int depth) {
    skip_ws(p);
    if (p->pos >= p->len) {
        fail(p, p->pos, "unexpected end of input");
        return NULL;
    }
    unsigned char c = p->s[p->pos];
    tt_json *j;
    char b[8];
    switch (c) {
    case '{': return parse_container(p, depth, true);
    case '[': return parse_container(p, depth, false);
    case '"': {
        j = new_node(p, TT_JSON_STRING);
        size_t n = 0;
        char *s = parse_string(p, &n);
        if (j) {
            j->string = s;
            j->len = n;
        }
        return j;
    }
    case 't':
    case 'f':
        j = new_node(p, TT_JSON_BOOL);
        if (!literal(p, c == 't' ? "true" : "false")) return NULL;
        if (j) j->boolean = c == 't';
        return j;
    case 'n':
        j = new_node(p, TT_JSON_NULL);
        if (!literal(p, "null")) return NULL;
        return j;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            j = new_node(p, TT_JSON_NUMBER);
            parse_number(p, j);
            return j;
        }
        fail(p, p->pos, "unexpected character %s", show_byte(p, p->pos, b));
        return NULL;
    }
}

static tt_json *parse_document(parser *p) {
    tt_json *root = parse_value(p, 0);
    if (p->failed) return NULL;
    skip_ws(p);
    if (p->pos < p->len) {
        char b[8];
        fail(p, p->pos, "trailing characters after the JSON value (%s)", show_byte(p, p->pos, b));
        return NULL;
    }
    return root;
}

tt_json *tt_json_parse(const char *text, size_t len, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    parser p = {.s = (const unsigned char *)text, .len = len, .err = err, .errlen = errlen};
    if (!text) {
        fail(&p, 0, "no input");
        return NULL;
    }
    parse_document(&p); /* pass 1: validate and count */
    if (p.failed) return NULL;

    size_t n_nodes = p.n_nodes, n_chars = p.n_chars;
    if (n_nodes > (SIZE_MAX - n_chars) / sizeof(tt_json)) {
        fail(&p, 0, "document too large");
        return NULL;
    }
    unsigned char *block = malloc(n_nodes * sizeof(tt_json) + n_chars);
    if (!block) {
        fail(&p, 0, "out of memory");
        return NULL;
    }
    parser q = {.s = p.s, .len = len, .fill = true, .err = err, .errlen = errlen};
    q.nodes = (tt_json *)block;
    q.chars = (char *)(block + n_nodes * sizeof(tt_json));
    tt_json *root = parse_document(&q); /* pass 2: same input, cannot fail */
    if (q.failed || root != q.nodes || q.n_nodes != n_nodes || q.n_chars != n_chars) {
        free(block);
        fail(&p, 0, "internal error (second pass disagrees)");
        return NULL;
    }
    return root;
}

void tt_json_free(tt_json *j) { free(j); }

const tt_json *tt_json_get(const tt_json *obj, const char *key) {
    if (!obj || obj->type != TT_JSON_OBJECT) return NULL;
    for (const tt_json *c = obj->child; c; c = c->next)
        if (strcmp(c->key, key) == 0) return c;
    return NULL;
}
