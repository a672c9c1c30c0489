/* safetensors.c - reading and writing huggingface safetensors files.
 *
 *   [8 bytes: N, little-endian u64][N bytes: JSON header, space-padded][tensor bytes]
 *
 * Writing is atomic: everything goes to "<path>.tmp.<pid>", which is flushed, fsync'ed
 * and renamed over <path>; on any failure the temporary is removed and an existing
 * <path> is left as it was. A process killed mid-save (SIGKILL, power loss) leaves its
 * "<path>.tmp.<pid>" behind; the next save of the same path removes every such file
 * whose process no longer exists, so they never pile up. Reading validates the whole header (sizes, JSON, dtypes,
 * shapes, offsets, overlaps, duplicates) before allocating a single tensor, so hostile
 * files produce a TT_ERR_FORMAT message, never a crash. Tensor bytes are converted
 * from/to little-endian explicitly, so the files are the same on every host.
 */
#include "safetensors.h"

#include "../internal.h"
#include "json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u * 1000u * 1000u) /* 100 MB, the limit of the reference impl. */
#define ST_MAX_INT 9007199254740992.0       /* 2^53: integers a double holds exactly    */

/* ---- small helpers ------------------------------------------------------------------- */

static void store_le32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
}

static uint32_t load_le32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* True if s[0..n) is valid UTF-8 without control characters we could not escape. */
static bool utf8_valid(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s;
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) {
            s++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07, min = 0x10000;
        else return false;
        for (size_t k = 1; k < n; k++) {
            if ((s[k] & 0xC0) != 0x80) return false; /* also stops at the NUL */
            cp = (cp << 6) | (s[k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        s += n;
    }
    return true;
}

/* A growable byte buffer for the header. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void buf_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->n + n + 1 > cap) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) abort();
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void buf_str(sbuf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(sbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string literal: quotes, backslash and control characters escaped. */
static void buf_json_string(sbuf *b, const char *s) {
    buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"': buf_put(b, "\\\"", 2); break;
        case '\\': buf_put(b, "\\\\", 2); break;
        case '\n': buf_put(b, "\\n", 2); break;
        case '\r': buf_put(b, "\\r", 2); break;
        case '\t': buf_put(b, "\\t", 2); break;
        case '\b': buf_put(b, "\\b", 2); break;
        case '\f': buf_put(b, "\\f", 2); break;
        default:
            if (c < 0x20)
                buf_printf(b, "\\u%04x", c);
            else
                buf_put(b, (const char *)&c, 1);
        }
    }
    buf_put(b, "\"", 1);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first duplicate among n strings, or NULL (sorts a scratch copy of the pointers). */
static const char *find_duplicate(const char **names, int n) {
    if (n < 2) return NULL;
    const char **s = malloc((size_t)n * sizeof *s);
    if (!s) abort();
    memcpy(s, names, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_str_ptr);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(s[i - 1], s[i]) == 0) dup = s[i];
    free(s);
    return dup;
}

static const char *dtype_name(tt_dtype d) { return d == TT_I32 ? "I32" : "F32"; }

/* ---- writing ------------------------------------------------------------------------- */

/* fsync the directory holding path so that the rename itself is durable (best effort). */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return;
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Remove "<path>.tmp.<pid>" files left by saves of `path` that were killed before their
 * rename: those whose pid is not ours and names no existing process (kill(pid, 0) fails
 * with ESRCH). A live pid keeps its file: a concurrent save of the same path (or an
 * unrelated process that reused the pid: the file then waits for a later save). Best
 * effort, errors are ignored. Caveat: a process in another pid namespace (a container
 * sharing the directory) looks dead; its save then fails cleanly at the rename (ENOENT),
 * and <path> is still the previous complete file. */
static void remove_stale_temporaries(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return;
    const size_t blen = strlen(base);
    if (blen == 0) return;
    DIR *d = opendir(dir);
    if (!d) return;
    const long self = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp.", 5) != 0) continue;
        const char *digits = name + blen + 5;
        long pid = 0;
        bool ok = *digits != 0;
        for (const char *c = digits; ok && *c; c++) {
            ok = *c >= '0' && *c <= '9' && pid < 100000000L;
            pid = pid * 10 + (*c - '0');
        }
        if (!ok || pid <= 0 || pid == self) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours) */
        char full[4096 + 256];
        snprintf(full, sizeof full, "%s/%s", dir, name);
        (void)unlink(full);
    }
    closedir(d);
}

static bool write_all(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n; }

/* Tensor payload in little-endian order, converted through a small buffer. */
static bool write_tensor_data(FILE *f, const tt_tensor *t) {
    unsigned char chunk[4096 * 4];
    const uint32_t *src = (const uint32_t *)(const void *)t->data;
    size_t i = 0;
    while (i < t->size) {
        size_t k = t->size - i < 4096 ? t->size - i : 4096;
        for (size_t j = 0; j < k; j++) {
            uint32_t v;
            memcpy(&v, src + i + j, 4);
            store_le32(chunk + 4 * j, v);
        }
        if (!write_all(f, chunk, 4 * k)) return false;
        i += k;
    }
    return true;
}

tt_status tt_safetensors_save(const char *path, int n, tt_tensor *const *tensors, int n_meta,
                              const tt_kv *meta) {
    if (!path || n < 0 || n_meta < 0 || (n && !tensors) || (n_meta && !meta))
        return tt_fail(TT_ERR_ARG, "safetensors_save: invalid arguments");
    for (int i = 0; i < n; i++) {
        const tt_tensor *t = tensors[i];
        if (!t) return tt_fail(TT_ERR_ARG, "safetensors_save '%s': tensor %d is NULL", path, i);
        if (!t->name[0])
            return tt_fail(TT_ERR_ARG, "safetensors_save '%s': tensor %d has no name", path, i);
        if (strcmp(t->name, "__metadata__") == 0)
            return tt_fail(TT_ERR_ARG, "safetensors_save '%s': '__metadata__' is reserved", path);
        if (t->dtype != TT_F32 && t->dtype != TT_I32)
            return tt_fail(TT_ERR_ARG, "safetensors_save '%s': tensor '%s' has an unknown dtype",
                           path, t->name);
        if (!utf8_valid(t->name))
            return tt_fail(TT_ERR_ARG, "safetensors_save '%s': tensor name '%s' is not UTF-8", path,
                           t->name);
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value)
            return tt_fail(TT_ERR_ARG, "safetensors_save '%s': metadata entry %d is NULL", path, i);
        if (!utf8_valid(meta[i].key) || !utf8_valid(meta[i].value))
            return tt_fail(TT_ERR_ARG,
                           "safetensors_save '%s': metadata '%s' is not valid UTF-8", path,
                           meta[i].key);
    }
    /* unique names and keys */
    const char **names = malloc(((size_t)(n > n_meta ? n : n_meta) + 1) * sizeof *names);
    if (!names) abort();
    for (int i = 0; i < n; i++) names[i] = tensors[i]->name;
    const char *dup = find_duplicate(names, n);
    if (dup) {
        tt_status s = tt_fail(TT_ERR_ARG, "safetensors_save '%s': duplicate tensor name '%s'",
                              path, dup);
        free(names);
        return s;
    }
    for (int i = 0; i < n_meta; i++) names[i] = meta[i].key;
    dup = find_duplicate(names, n_meta);
    if (dup) {
        tt_status s = tt_fail(TT_ERR_ARG, "safetensors_save '%s': duplicate metadata key '%s'",
                              path, dup);
        free(names);
        return s;
    }
    free(names);

    /* header JSON */
    sbuf h = {0};
    buf_str(&h, "{");
    if (n_meta) {
        buf_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) buf_str(&h, ",");
            buf_json_string(&h, meta[i].key);
            buf_str(&h, ":");
            buf_json_string(&h, meta[i].value);
        }
        buf_str(&h, "}");
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        const tt_tensor *t = tensors[i];
        if (n_meta || i) buf_str(&h, ",");
        buf_json_string(&h, t->name);
        buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) buf_printf(&h, d ? ",%d" : "%d", t->shape[d]);
        size_t bytes = t->size * 4;
        buf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", offset, offset + bytes);
        offset += bytes;
    }
    buf_str(&h, "}");
    while (h.n % 8) buf_str(&h, " "); /* the tensor data starts 8-byte aligned */

    /* leftovers of killed saves first (on a full disk that frees their space), then
     * write "<path>.tmp.<pid>", fsync, rename */
    remove_stale_temporaries(path);
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) abort();
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    int err = 0;
    const char *what = "open";
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        err = errno;
    } else {
        unsigned char len8[8];
        uint64_t hn = h.n;
        for (int k = 0; k < 8; k++) len8[k] = (unsigned char)(hn >> (8 * k));
        what = "write";
        errno = 0;
        bool ok = write_all(f, len8, 8) && write_all(f, h.p, h.n);
        for (int i = 0; ok && i < n; i++) ok = write_tensor_data(f, tensors[i]);
        if (ok && fflush(f) != 0) ok = false;
        if (!ok) err = errno ? errno : EIO;
        if (ok) {
            what = "fsync";
            if (fsync(fileno(f)) != 0) err = errno;
        }
        if (fclose(f) != 0 && !err) {
            what = "close";
            err = errno ? errno : EIO;
        }
        if (!err) {
            what = "rename";
            if (rename(tmp, path) != 0) err = errno;
        }
        if (err) remove(tmp);
    }
    free(h.p);
    free(tmp);
    if (err)
        return tt_fail(TT_ERR_IO, "cannot write '%s' (%s failed): %s", path, what, strerror(err));
    sync_parent_dir(path);
    return TT_OK;
}

/* ---- reading ------------------------------------------------------------------------- */

typedef struct entry {
    const char *name;
    tt_dtype dtype;
    int ndim, shape[TT_MAX_DIMS];
    size_t numel;
    uint64_t begin, end;
} entry;

static int cmp_entry_begin(const void *a, const void *b) {
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* A JSON number that is an integer in [0, 2^53]; *neg reports a negative integer. */
static bool json_uint(const tt_json *j, double *out, bool *neg) {
    *neg = false;
    if (!j || j->type != TT_JSON_NUMBER) return false;
    double v = j->number;
    if (v != floor(v)) return false;
    if (v < 0) {
        *neg = true;
        return false;
    }
    if (v > ST_MAX_INT) return false;
    *out = v;
    return true;
}

static void shape_text(const entry *e, char *b) {
    int n = snprintf(b, TT_SHAPE_STR_LEN, "[");
    for (int i = 0; i < e->ndim && n < TT_SHAPE_STR_LEN; i++)
        n += snprintf(b + n, (size_t)(TT_SHAPE_STR_LEN - n), i ? ", %d" : "%d", e->shape[i]);
    if (n < TT_SHAPE_STR_LEN) snprintf(b + n, (size_t)(TT_SHAPE_STR_LEN - n), "]");
}

/* Validate one tensor entry of the header into *e. data_len = bytes after the header. */
static tt_status parse_entry(const tt_json *m, size_t data_len, entry *e) {
    const char *name = m->key;
    memset(e, 0, sizeof *e);
    e->name = name;
    if (!name[0]) return tt_fail(TT_ERR_FORMAT, "empty tensor name");
    if (strlen(name) >= TT_NAME_LEN)
        return tt_fail(TT_ERR_FORMAT, "tensor name '%.80s' too long (max %d bytes)", name,
                       TT_NAME_LEN - 1);
    if (m->type != TT_JSON_OBJECT)
        return tt_fail(TT_ERR_FORMAT, "tensor '%s': entry is not an object", name);
    const tt_json *dt = tt_json_get(m, "dtype");
    if (!dt || dt->type != TT_JSON_STRING)
        return tt_fail(TT_ERR_FORMAT, "tensor '%s': missing or non-string \"dtype\"", name);
    if (strcmp(dt->string, "F32") == 0)
        e->dtype = TT_F32;
    else if (strcmp(dt->string, "I32") == 0)
        e->dtype = TT_I32;
    else
        return tt_fail(TT_ERR_FORMAT, "tensor '%s': unsupported dtype '%.16s' (only F32 and I32)",
                       name, dt->string);

    const tt_json *sh = tt_json_get(m, "shape");
    if (!sh || sh->type != TT_JSON_ARRAY)
        return tt_fail(TT_ERR_FORMAT, "tensor '%s': missing or non-array \"shape\"", name);
    if (sh->len > TT_MAX_DIMS)
        return tt_fail(TT_ERR_FORMAT, "tensor '%s': %zu dimensions (at most %d supported)", name,
                       sh->len, TT_MAX_DIMS);
    size_t numel = 1;
    int d = 0;
    for (const tt_json *c = sh->child; c; c = c->next, d++) {
        double v;
        bool neg;
        if (!json_uint(c, &v, &neg))
            return tt_fail(TT_ERR_FORMAT, neg ? "tensor '%s': negative dimension in shape"
                                              : "tensor '%s': shape entries must be integers in "
                                                "[0, 2^31)",
                           name);
        if (v > (double)INT_MAX)
            return tt_fail(TT_ERR_FORMAT, "tensor '%s': dimension %.0f too large", name, v);
        size_t dim = (size_t)v;
        /* same bound as tt_tensor_new: the byte count stays below 2^62 */
        if (dim && numel > ((size_t)1 << 60) / dim)
            return tt_fail(TT_ERR_FORMAT, "tensor '%s': shape too large (element count overflows)",
                           name);
        numel *= dim;
        e->shape[d] = (int)dim;
    }
    e->ndim = (int)sh->len;
    e->numel = numel;

    const tt_json *off = tt_json_get(m, "data_offsets");
    if (!off || off->type != TT_JSON_ARRAY || off->len != 2)
        return tt_fail(TT_ERR_FORMAT, "tensor '%s': \"data_offsets\" must be [begin, end]", name);
    double b, en;
    bool neg1, neg2;
    if (!json_uint(off->child, &b, &neg1) || !json_uint(off->child->next, &en, &neg2))
        return tt_fail(TT_ERR_FORMAT,
                       "tensor '%s': data_offsets must be non-negative integers below 2^53", name);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    if (e->begin > e->end)
        return tt_fail(TT_ERR_FORMAT, "tensor '%s': data_offsets [%llu, %llu] out of order", name,
                       (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_len)
        return tt_fail(TT_ERR_FORMAT,
                       "tensor '%s': data_offsets [%llu, %llu] past the end of the data (%zu bytes)",
                       name, (unsigned long long)e->begin, (unsigned long long)e->end, data_len);
    if (e->end - e->begin != (uint64_t)numel * 4) {
        char s[TT_SHAPE_STR_LEN];
        shape_text(e, s);
        return tt_fail(TT_ERR_FORMAT,
                       "tensor '%s': data_offsets span %llu bytes but shape %s %s needs %zu",
                       name, (unsigned long long)(e->end - e->begin), s, dtype_name(e->dtype),
                       numel * 4);
    }
    return TT_OK;
}

static tt_status parse_metadata(const tt_json *m, tt_safetensors *out) {
    if (m->type != TT_JSON_OBJECT)
        return tt_fail(TT_ERR_FORMAT, "\"__metadata__\" must be an object of strings");
    for (const tt_json *c = m->child; c; c = c->next)
        if (c->type != TT_JSON_STRING)
            return tt_fail(TT_ERR_FORMAT, "metadata value for '%.80s' must be a string", c->key);
    int n = (int)m->len;
    const char **keys = malloc(((size_t)n + 1) * sizeof *keys);
    if (!keys) abort();
    int i = 0;
    for (const tt_json *c = m->child; c; c = c->next) keys[i++] = c->key;
    const char *dup = find_duplicate(keys, n);
    if (dup) {
        tt_status s = tt_fail(TT_ERR_FORMAT, "duplicate metadata key '%.80s'", dup);
        free(keys);
        return s;
    }
    free(keys);
    out->n_meta = n;
    out->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    out->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (!out->meta_keys || !out->meta_values) abort();
    i = 0;
    for (const tt_json *c = m->child; c; c = c->next, i++) {
        out->meta_keys[i] = strdup(c->key);
        out->meta_values[i] = strdup(c->string);
        if (!out->meta_keys[i] || !out->meta_values[i]) abort();
    }
    return TT_OK;
}

tt_status tt_safetensors_parse(const unsigned char *bytes, size_t len, tt_safetensors *out) {
    memset(out, 0, sizeof *out);
    if (!bytes && len) return tt_fail(TT_ERR_ARG, "safetensors_parse: NULL buffer");
    if (len < 8)
        return tt_fail(TT_ERR_FORMAT, "file too short (%zu bytes): no 8-byte header length", len);
    uint64_t hn = 0;
    for (int k = 7; k >= 0; k--) hn = hn << 8 | bytes[k];
    if (hn > ST_MAX_HEADER)
        return tt_fail(TT_ERR_FORMAT, "header length %llu exceeds the 100 MB limit",
                       (unsigned long long)hn);
    if (hn > len - 8)
        return tt_fail(TT_ERR_FORMAT, "header length %llu larger than the file (%zu bytes)",
                       (unsigned long long)hn, len);
    const unsigned char *data = bytes + 8 + hn;
    size_t data_len = len - 8 - (size_t)hn;

    char jerr[256];
    tt_json *root = tt_json_parse((const char *)bytes + 8, (size_t)hn, jerr, sizeof jerr);
    if (!root) return tt_fail(TT_ERR_FORMAT, "header is not valid JSON: %s", jerr);
    tt_status st = TT_OK;
    entry *es = NULL, **by_begin = NULL;
    const char **names = NULL;
    if (root->type != TT_JSON_OBJECT) {
        st = tt_fail(TT_ERR_FORMAT, "header is not a JSON object");
        goto done;
    }
    es = calloc(root->len + 1, sizeof *es);
    by_begin = calloc(root->len + 1, sizeof *by_begin);
    names = calloc(root->len + 1, sizeof *names);
    if (!es || !by_begin || !names) abort();

    int n = 0, n_metadata = 0;
    for (const tt_json *m = root->child; m; m = m->next) {
        if (strcmp(m->key, "__metadata__") == 0) {
            if (n_metadata++) {
                st = tt_fail(TT_ERR_FORMAT, "duplicate \"__metadata__\"");
                goto done;
            }
            st = parse_metadata(m, out);
        } else {
            st = parse_entry(m, data_len, &es[n]);
            by_begin[n] = &es[n];
            names[n] = es[n].name;
            n++;
        }
        if (st != TT_OK) goto done;
    }
    const char *dup = find_duplicate(names, n);
    if (dup) {
        st = tt_fail(TT_ERR_FORMAT, "duplicate tensor name '%s'", dup);
        goto done;
    }
    qsort(by_begin, (size_t)n, sizeof *by_begin, cmp_entry_begin);
    for (int i = 1; i < n; i++) {
        const entry *a = by_begin[i - 1], *b = by_begin[i];
        if (b->begin < a->end) {
            st = tt_fail(TT_ERR_FORMAT,
                         "tensors '%s' and '%s' overlap (data_offsets [%llu, %llu] and [%llu, %llu])",
                         a->name, b->name, (unsigned long long)a->begin,
                         (unsigned long long)a->end, (unsigned long long)b->begin,
                         (unsigned long long)b->end);
            goto done;
        }
        if (b->begin > a->end) {
            st = tt_fail(TT_ERR_FORMAT,
                         "%llu unused bytes between tensors '%s' and '%s' (the format requires "
                         "the data to be packed)",
                         (unsigned long long)(b->begin - a->end), a->name, b->name);
            goto done;
        }
    }
    /* As the reference implementation: the tensors tile the data buffer exactly. */
    if (n > 0 && by_begin[0]->begin != 0) {
        st = tt_fail(TT_ERR_FORMAT, "%llu unused bytes before tensor '%s'",
                     (unsigned long long)by_begin[0]->begin, by_begin[0]->name);
        goto done;
    }
    size_t used = n > 0 ? (size_t)by_begin[n - 1]->end : 0;
    if (used != data_len) {
        st = tt_fail(TT_ERR_FORMAT, "%llu bytes of data after the last tensor",
                     (unsigned long long)(data_len - used));
        goto done;
    }

    /* everything is valid: build the tensors */
    out->n = n;
    out->tensors = calloc((size_t)n + 1, sizeof *out->tensors);
    if (!out->tensors) abort();
    for (int i = 0; i < n; i++) {
        const entry *e = &es[i];
        tt_tensor *t = tt_tensor_new(e->dtype, e->ndim, e->shape);
        memcpy(t->name, e->name, strlen(e->name) + 1);
        uint32_t *dst = (uint32_t *)(void *)t->data;
        const unsigned char *src = data + e->begin;
        for (size_t k = 0; k < e->numel; k++) {
            uint32_t v = load_le32(src + 4 * k);
            memcpy(dst + k, &v, 4);
        }
        out->tensors[i] = t;
    }
done:
    if (st != TT_OK) tt_safetensors_free(out);
    free(es);
    free(by_begin);
    free(names);
    tt_json_free(root);
    return st;
}

/* Prefix the current error message with the file name. */
static tt_status fail_in_file(tt_status st, const char *path) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", tt_last_error());
    return tt_fail(st, "'%s': %s", path, msg);
}

tt_status tt_safetensors_load(const char *path, tt_safetensors *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return tt_fail(TT_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        int e = errno;
        fclose(f);
        return tt_fail(TT_ERR_IO, "cannot read '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        fclose(f);
        return tt_fail(TT_ERR_IO, "cannot read '%s': not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    unsigned char *bytes = malloc(len ? len : 1);
    if (!bytes) {
        fclose(f);
        return tt_fail(TT_ERR_IO, "cannot read '%s': file of %zu bytes does not fit in memory",
                       path, len);
    }
    size_t got = fread(bytes, 1, len, f);
    int e = errno;
    bool err = ferror(f);
    fclose(f);
    if (got != len) {
        free(bytes);
        return tt_fail(TT_ERR_IO, "cannot read '%s': %s", path,
                       err ? strerror(e) : "file changed size while reading");
    }
    tt_status st = tt_safetensors_parse(bytes, len, out);
    free(bytes);
    return st == TT_OK ? TT_OK : fail_in_file(st, path);
}

void tt_safetensors_free(tt_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) tt_free(st->tensors[i]);
    free(st->tensors);
    for (int i = 0; i < st->n_meta; i++) {
        if (st->meta_keys) free(st->meta_keys[i]);
        if (st->meta_values) free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    memset(st, 0, sizeof *st);
}

tt_tensor *tt_safetensors_get(const tt_safetensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->tensors[i]->name, name) == 0) return st->tensors[i];
    return NULL;
}

const char *tt_safetensors_meta(const tt_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

/* ---- parameter lists ------------------------------------------------------------------- */

tt_status tt_params_save(const tt_params *p, const char *path, int n_meta, const tt_kv *meta) {
    return tt_safetensors_save(path, p->n, p->t, n_meta, meta);
}

/* The file name of parameter `name` under `prefix` ("prefix.name" or "name"). */
static tt_status file_name(char *buf, size_t cap, const char *prefix, const char *name) {
    int k = prefix && prefix[0] ? snprintf(buf, cap, "%s.%s", prefix, name)
                                : snprintf(buf, cap, "%s", name);
    if (k < 0 || (size_t)k >= cap)
        return tt_fail(TT_ERR_ARG, "tensor name '%s.%s' too long", prefix, name);
    return TT_OK;
}

tt_status tt_params_check(const tt_params *p, const tt_safetensors *st, const char *prefix,
                          bool strict) {
    char name[2 * TT_NAME_LEN + 8];
    for (int i = 0; i < p->n; i++) {
        const tt_tensor *t = p->t[i];
        tt_status s = file_name(name, sizeof name, prefix, t->name);
        if (s != TT_OK) return s;
        const tt_tensor *f = tt_safetensors_get(st, name);
        if (!f) return tt_fail(TT_ERR_MISMATCH, "missing tensor '%s'", name);
        if (f->dtype != t->dtype)
            return tt_fail(TT_ERR_MISMATCH, "tensor '%s': dtype %s in the file, parameter is %s",
                           name, dtype_name(f->dtype), dtype_name(t->dtype));
        if (!tt_same_shape(f, t)) {
            char a[TT_SHAPE_STR_LEN], b[TT_SHAPE_STR_LEN];
            return tt_fail(TT_ERR_MISMATCH,
                           "tensor '%s': shape %s in the file, but the parameter has shape %s",
                           name, tt_shape_str(f, a), tt_shape_str(t, b));
        }
    }
    if (strict) {
        size_t plen = prefix && prefix[0] ? strlen(prefix) : 0;
        for (int i = 0; i < st->n; i++) {
            const char *fn = st->tensors[i]->name;
            if (plen && (strncmp(fn, prefix, plen) != 0 || fn[plen] != '.')) continue;
            if (!tt_params_find(p, fn + (plen ? plen + 1 : 0)))
                return tt_fail(TT_ERR_MISMATCH,
                               "unexpected tensor '%s' in the file (no such parameter; strict)",
                               fn);
        }
    }
    return TT_OK;
}

tt_status tt_params_copy_from(tt_params *p, const tt_safetensors *st, const char *prefix,
                              bool strict) {
    tt_status s = tt_params_check(p, st, prefix, strict);
    if (s != TT_OK) return s;
    char name[2 * TT_NAME_LEN + 8];
    for (int i = 0; i < p->n; i++) {
        tt_tensor *t = p->t[i];
        file_name(name, sizeof name, prefix, t->name);
        const tt_tensor *f = tt_safetensors_get(st, name);
        if (t->size) memcpy(t->data, f->data, t->size * sizeof(float));
    }
    return TT_OK;
}

tt_status tt_params_load(tt_params *p, const char *path, bool strict) {
    tt_safetensors st;
    tt_status s = tt_safetensors_load(path, &st);
    if (s != TT_OK) return s;
    s = tt_params_copy_from(p, &st, NULL, strict);
    tt_safetensors_free(&st);
    return s == TT_OK ? TT_OK : fail_in_file(s, path);
}
