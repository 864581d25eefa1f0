/* The weights sidecar: safetensors files (https://github.com/huggingface/safetensors).
 *
 * Layout: an unsigned 64-bit little-endian header length N, N bytes of JSON
 * (an object: tensor name -> {"dtype", "shape", "data_offsets": [begin, end]},
 * plus an optional "__metadata__" object of strings), then the data section;
 * offsets count from the start of the data section, tensors are row-major
 * and little-endian.
 *
 * Loading maps the file privately and copy-on-write: parameters point
 * straight into the mapping, so untouched pages stay shared by every process
 * that maps the same universal weights, and training may update parameters
 * in place without ever writing to the file.  Every number in the header is
 * checked before it is used; a bad file leaves the graph unchanged.
 * Tensors the graph does not use are ignored, so a pruned graph can keep
 * pointing at the larger file of the network it was cut from.
 *
 * Loading again replaces every parameter's data: owned buffers are freed and
 * a mapping no value points into any more is unmapped, so pointers into old
 * parameter data must not be kept across a load.  Saving over the file a
 * graph has mapped is safe: the new file is renamed into place and the old
 * mapping keeps the old contents.
 *
 * Beyond the JSON, names must be unique (JSON readers differ on which of two
 * equal keys wins) and byte ranges disjoint and inside the data section.
 * The reference reader also wants the ranges to cover the data section
 * without gaps; this one allows gaps, and accepts dtypes it does not know
 * for tensors the graph does not use.
 */
#include "ntc/ir.h"
#include "ir/internal.h"
#include "ir/json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Parameters are used in place, so the file's byte order must be ours. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ntc reads and writes safetensors data in place and needs a little-endian host"
#endif

#define METADATA_KEY "__metadata__"

/* One tensor of the header, offsets already checked against the data section. */
typedef struct {
    const char *name;
    const char *dtype;
    const ntc_json *shape;       /* array of non-negative integers */
    uint64_t begin, end;         /* relative to the data section */
} tensor;

/* Bytes per element of safetensors' dtypes; 0 for names we do not know (a
 * newer writer's), whose sizes then cannot be checked against the shape. */
static uint64_t dtype_size(const char *dtype)
{
    static const struct {
        const char *name;
        uint64_t size;
    } table[] = {
        {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1},
        {"I16", 2}, {"U16", 2}, {"F16", 2}, {"BF16", 2},
        {"I32", 4}, {"U32", 4}, {"F32", 4},
        {"I64", 8}, {"U64", 8}, {"F64", 8},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (strcmp(table[i].name, dtype) == 0)
            return table[i].size;
    return 0;
}

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* "[16,3,3,3]" from a header's shape array. */
static void format_json_shape(const ntc_json *shape, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "[");
    for (const ntc_json *d = shape->first; d && at < len; d = d->next)
        at += (size_t)snprintf(buf + at, len - at, "%s%llu", d == shape->first ? "" : ",",
                               (unsigned long long)d->uint);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

static void format_shape(const ntc_shape *s, char *buf, size_t len)
{
    char dims[128];
    ntc_shape_format(s, dims, sizeof dims);
    snprintf(buf, len, "[%s]", dims);
}

/* Checks one header entry and fills *t.  data_len is the data section's size. */
static int parse_tensor(const char *path, const ntc_json *m, uint64_t data_len, tensor *t, ntc_err *err)
{
    const char *name = m->key;
    if (m->type != NTC_JSON_OBJECT)
        return ntc_error(err, path, 0, "tensor '%s': expected an object in the header, found %s",
                         name, ntc_json_type_name(m->type));
    const ntc_json *dtype = ntc_json_get(m, "dtype");
    const ntc_json *shape = ntc_json_get(m, "shape");
    const ntc_json *offs = ntc_json_get(m, "data_offsets");
    if (!dtype || dtype->type != NTC_JSON_STRING)
        return ntc_error(err, path, 0, "tensor '%s': \"dtype\" must be a string", name);
    if (!shape || shape->type != NTC_JSON_ARRAY)
        return ntc_error(err, path, 0, "tensor '%s': \"shape\" must be an array", name);
    if (!offs || offs->type != NTC_JSON_ARRAY || offs->n != 2 ||
        !offs->first->is_uint || !offs->first->next->is_uint)
        return ntc_error(err, path, 0, "tensor '%s': \"data_offsets\" must be [begin, end], two integers >= 0",
                         name);
    uint64_t numel = 1;
    bool overflow = false;
    for (const ntc_json *d = shape->first; d; d = d->next) {
        if (!d->is_uint)
            return ntc_error(err, path, 0, "tensor '%s': \"shape\" must hold integers >= 0", name);
        overflow |= __builtin_mul_overflow(numel, d->uint, &numel);
    }
    t->name = name;
    t->dtype = dtype->string;
    t->shape = shape;
    t->begin = offs->first->uint;
    t->end = offs->first->next->uint;
    if (t->begin > t->end)
        return ntc_error(err, path, 0, "tensor '%s': data_offsets [%llu,%llu] end before they begin", name,
                         (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_len)
        return ntc_error(err, path, 0,
                         "tensor '%s': data_offsets [%llu,%llu] lie outside the data section (%llu bytes)",
                         name, (unsigned long long)t->begin, (unsigned long long)t->end,
                         (unsigned long long)data_len);
    uint64_t esize = dtype_size(t->dtype), bytes = 0;
    if (esize && (overflow || __builtin_mul_overflow(numel, esize, &bytes) || bytes != t->end - t->begin)) {
        char s[256];
        format_json_shape(shape, s, sizeof s);
        return ntc_error(err, path, 0,
                         "tensor '%s': shape %s of %s needs %s%llu bytes, data_offsets [%llu,%llu] hold %llu",
                         name, s, t->dtype, overflow ? "more than " : "",
                         overflow ? (unsigned long long)UINT64_MAX : (unsigned long long)bytes,
                         (unsigned long long)t->begin, (unsigned long long)t->end,
                         (unsigned long long)(t->end - t->begin));
    }
    return 0;
}

static int by_begin(const void *a, const void *b)
{
    const tensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const tensor *)a)->name, ((const tensor *)b)->name);
}

/* The tensors of a parsed header, checked: types, sizes against shapes,
 * ranges inside the data section, no two ranges sharing a byte, no name
 * twice.  Returns them sorted by name (ntc_malloc'ed), or NULL. */
static tensor *header_tensors(const char *path, const ntc_json *root, uint64_t data_len, int *count,
                              ntc_err *err)
{
    if (root->type != NTC_JSON_OBJECT) {
        ntc_error(err, path, 0, "header is not a JSON object but %s", ntc_json_type_name(root->type));
        return NULL;
    }
    tensor *ts = ntc_malloc(sizeof(tensor) * (size_t)(root->n ? root->n : 1));
    if (!ts) {
        ntc_error(err, path, 0, "out of memory");
        return NULL;
    }
    int n = 0;
    for (const ntc_json *m = root->first; m; m = m->next) {
        if (strcmp(m->key, METADATA_KEY) == 0) {
            bool ok = m->type == NTC_JSON_OBJECT;
            for (const ntc_json *kv = ok ? m->first : NULL; kv; kv = kv->next)
                ok &= kv->type == NTC_JSON_STRING;
            if (!ok) {
                ntc_error(err, path, 0, "\"" METADATA_KEY "\" must be an object of strings");
                goto fail;
            }
            continue;
        }
        if (parse_tensor(path, m, data_len, &ts[n], err))
            goto fail;
        n++;
    }
    /* JSON readers disagree on which of two equal keys wins: refuse them. */
    qsort(ts, (size_t)n, sizeof *ts, by_name);
    for (int i = 1; i < n; i++)
        if (strcmp(ts[i].name, ts[i - 1].name) == 0) {
            ntc_error(err, path, 0, "tensor '%s' appears twice in the header", ts[i].name);
            goto fail;
        }
    /* Sorted by offset, a range overlaps another iff it begins before the
     * end of the one sorted just before it. */
    qsort(ts, (size_t)n, sizeof *ts, by_begin);
    for (int i = 1; i < n; i++)
        if (ts[i].begin < ts[i - 1].end) {
            ntc_error(err, path, 0, "tensors '%s' [%llu,%llu] and '%s' [%llu,%llu] overlap", ts[i - 1].name,
                      (unsigned long long)ts[i - 1].begin, (unsigned long long)ts[i - 1].end, ts[i].name,
                      (unsigned long long)ts[i].begin, (unsigned long long)ts[i].end);
            goto fail;
        }
    qsort(ts, (size_t)n, sizeof *ts, by_name);
    *count = n;
    return ts;
fail:
    ntc_free(ts);
    return NULL;
}

/* Does the file's shape equal the parameter's?  A parameter whose shape is
 * not inferred yet (rank 0) takes the file's, which the shape inference
 * checks later; `adopt` receives it. */
static bool shape_matches(const ntc_json *shape, const ntc_shape *want, ntc_shape *adopt)
{
    if (want->rank == 0) {
        if (shape->n < 1 || shape->n > NTC_MAX_RANK)
            return false;
        adopt->rank = 0;
        for (const ntc_json *d = shape->first; d; d = d->next) {
            if (d->uint == 0 || d->uint > INT64_MAX)
                return false;
            adopt->dims[adopt->rank++] = (int64_t)d->uint;
        }
        return true;
    }
    if (shape->n != want->rank)
        return false;
    int i = 0;
    for (const ntc_json *d = shape->first; d; d = d->next, i++)
        if (want->dims[i] < 0 || d->uint != (uint64_t)want->dims[i])
            return false;
    *adopt = *want;
    return true;
}

/* What a load will do to one parameter: decided for all before any is changed. */
typedef struct {
    int value;
    float *data;
    bool owned;                  /* data is a copy (the tensor was misaligned) */
    ntc_shape shape;
} binding;

/* Binds value v, if it is a live parameter, to its tensor: b->data becomes
 * the mapped bytes, or an aligned copy.  Returns 1 if bound, 0 for values
 * that are not live parameters, -1 with err filled. */
static int bind_one(ntc_graph *g, int v, const char *path, const tensor *ts, int nt, unsigned char *data,
                    binding *b, ntc_err *err)
{
    const ntc_value *pv = &g->values[v];
    if (pv->dead || pv->kind != NTC_VAL_PARAM)
        return 0;
    tensor key = {.name = pv->name};
    const tensor *t = bsearch(&key, ts, (size_t)nt, sizeof *ts, by_name);
    if (!t)
        return ntc_error(err, path, 0, "parameter '%s' is missing from the file", pv->name);
    if (strcmp(t->dtype, "F32") != 0)
        return ntc_error(err, path, 0, "parameter '%s' has dtype %s in the file, ntc needs F32",
                         pv->name, t->dtype);
    ntc_shape shape;
    if (!shape_matches(t->shape, &pv->shape, &shape)) {
        char have[256], want[256];
        format_json_shape(t->shape, have, sizeof have);
        if (pv->shape.rank)
            format_shape(&pv->shape, want, sizeof want);
        else
            snprintf(want, sizeof want, "rank 1 to %d with positive sizes", NTC_MAX_RANK);
        return ntc_error(err, path, 0, "parameter '%s' is %s in the file, the graph needs %s",
                         pv->name, have, want);
    }
    unsigned char *at = data + t->begin;
    float *p = (float *)(void *)at;
    bool copy = ((uintptr_t)at & (_Alignof(float) - 1)) != 0;
    if (copy) {
        size_t bytes = (size_t)(t->end - t->begin);
        if (!(p = ntc_malloc(bytes)))
            return ntc_error(err, path, 0, "out of memory");
        memcpy(p, at, bytes);
    }
    *b = (binding){.value = v, .data = p, .owned = copy, .shape = shape};
    return 1;
}

static void free_copies(binding *binds, int n)
{
    for (int i = 0; i < n; i++)
        if (binds[i].owned)
            ntc_free(binds[i].data);
}

/* Matches every live parameter of g to its tensor and checks it.  Fills
 * binds (one per parameter) and returns their count, or -1 with nothing
 * left allocated. */
static int bind_params(ntc_graph *g, const char *path, const tensor *ts, int nt, unsigned char *data,
                       binding *binds, ntc_err *err)
{
    int nb = 0;
    for (int v = 0; v < g->n_values; v++) {
        int bound = bind_one(g, v, path, ts, nt, data, &binds[nb], err);
        if (bound < 0) {
            free_copies(binds, nb);
            return -1;
        }
        nb += bound;
    }
    return nb;
}

/* Unmaps every mapping of g that no value points into any more (an earlier
 * load whose parameters have all been replaced). */
static void release_unused_mappings(ntc_graph *g)
{
    struct ntc_mapping **link = &g->mappings;
    while (*link) {
        struct ntc_mapping *m = *link;
        uintptr_t lo = (uintptr_t)m->addr, hi = lo + m->len;
        bool used = false;
        for (int v = 0; v < g->n_values && !used; v++) {
            uintptr_t d = (uintptr_t)g->values[v].data;
            used = !g->values[v].owned && d >= lo && d < hi;
        }
        if (used) {
            link = &m->next;
            continue;
        }
        *link = m->next;
        m->next = NULL;
        ntc_mappings_release(m);
    }
}

/* Maps path privately (copy-on-write).  Returns the address, or NULL. */
static unsigned char *map_file(const char *path, size_t *len, ntc_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ntc_error(err, path, 0, "cannot open weights: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ntc_error(err, path, 0, "cannot read weights: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        ntc_error(err, path, 0, "cannot read weights: not a regular file");
        close(fd);
        return NULL;
    }
    if (st.st_size < 8) {
        ntc_error(err, path, 0, "file is too short for a safetensors header (%lld bytes, needs at least 8)",
                  (long long)st.st_size);
        close(fd);
        return NULL;
    }
    *len = (size_t)st.st_size;
    void *p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        ntc_error(err, path, 0, "cannot map weights: %s", strerror(e));
        return NULL;
    }
    return p;
}

int ntc_weights_load(ntc_graph *g, const char *path, ntc_err *err)
{
    size_t len;
    unsigned char *base = map_file(path, &len, err);
    if (!base)
        return -1;
    ntc_arena *arena = ntc_arena_new();
    tensor *ts = NULL;
    binding *binds = NULL;
    int nb = 0, rc = -1;
    if (!arena) {
        ntc_error(err, path, 0, "out of memory");
        goto done;
    }
    uint64_t hlen = read_le64(base);
    if (hlen > len - 8) {
        ntc_error(err, path, 0, "header length %llu runs past the end of the file (%zu bytes)",
                  (unsigned long long)hlen, len);
        goto done;
    }
    ntc_json_error je;
    ntc_json *root = ntc_json_parse(arena, (const char *)base + 8, (size_t)hlen, &je);
    if (!root) {
        if (je.out_of_memory)
            ntc_error(err, path, 0, "out of memory");
        else
            ntc_error(err, path, 0, "header is not valid JSON: %s (header byte %zu)", je.msg, je.offset);
        goto done;
    }
    int nt;
    size_t data_start = 8 + (size_t)hlen;
    if (!(ts = header_tensors(path, root, len - data_start, &nt, err)))
        goto done;
    if (!(binds = ntc_calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *binds))) {
        ntc_error(err, path, 0, "out of memory");
        goto done;
    }
    nb = bind_params(g, path, ts, nt, base + data_start, binds, err);
    if (nb < 0) {
        nb = 0;
        goto done;
    }
    if (ntc_mappings_add(g, base, len)) {
        ntc_error(err, path, 0, "out of memory");
        goto done;
    }
    base = NULL; /* the graph owns the mapping now */
    for (int i = 0; i < nb; i++) {
        ntc_value *pv = &g->values[binds[i].value];
        if (pv->owned)
            ntc_free(pv->data);
        pv->data = binds[i].data;
        pv->owned = binds[i].owned;
        pv->shape = binds[i].shape;
    }
    nb = 0;
    release_unused_mappings(g);
    rc = 0;
done:
    free_copies(binds, nb);
    ntc_free(binds);
    ntc_free(ts);
    ntc_arena_free(arena);
    if (base)
        munmap(base, len);
    return rc;
}

/* ---- writing ------------------------------------------------------------------ */

/* A growing text buffer; on allocation failure it keeps failing (ok = false). */
typedef struct {
    char *buf;
    size_t len, cap;
    bool ok;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (!t->ok)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 1024;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *b = ntc_realloc(t->buf, cap);
        if (!b) {
            t->ok = false;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
}

static void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

static void putf(text *t, const char *fmt, unsigned long long v)
{
    char b[32];
    put(t, b, (size_t)snprintf(b, sizeof b, fmt, v));
}

/* A JSON string literal; names are UTF-8 and pass through unchanged. */
static void put_json_string(text *t, const char *s)
{
    put(t, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put(t, esc, 2);
        } else if (c < 0x20) {
            putf(t, "\\u%04llx", c);
        } else {
            put(t, s, 1);
        }
    }
    put(t, "\"", 1);
}

static int by_value_name(const void *a, const void *b, void *g_)
{
    const ntc_graph *g = g_;
    return strcmp(g->values[*(const int *)a].name, g->values[*(const int *)b].name);
}

int ntc_weights_save(const ntc_graph *g, const char *path, ntc_err *err)
{
    int *params = ntc_malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
    if (!params)
        return ntc_error(err, path, 0, "out of memory");
    int np = 0;
    for (int v = 0; v < g->n_values; v++) {
        const ntc_value *pv = &g->values[v];
        if (pv->dead || pv->kind != NTC_VAL_PARAM || !pv->data)
            continue;
        bool known = pv->shape.rank > 0;
        for (int i = 0; i < pv->shape.rank; i++)
            known &= pv->shape.dims[i] > 0;
        if (!known) {
            ntc_free(params);
            return ntc_error(err, path, 0, "parameter '%s' has data but no known shape", pv->name);
        }
        params[np++] = v;
    }
    /* Sorted by name, as the reference writer does, so equal graphs give equal files. */
    qsort_r(params, (size_t)np, sizeof *params, by_value_name, (void *)g);

    text h = {.ok = true};
    puts_(&h, "{\"" METADATA_KEY "\":{\"ntc-ir-version\":");
    putf(&h, "\"%llu\"}", NTC_IR_VERSION);
    uint64_t offset = 0;
    for (int i = 0; i < np; i++) {
        const ntc_value *pv = &g->values[params[i]];
        puts_(&h, ",");
        put_json_string(&h, pv->name);
        puts_(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < pv->shape.rank; d++)
            putf(&h, d ? ",%llu" : "%llu", (unsigned long long)pv->shape.dims[d]);
        uint64_t bytes = (uint64_t)ntc_shape_numel(&pv->shape) * sizeof(float);
        putf(&h, "],\"data_offsets\":[%llu,", offset);
        putf(&h, "%llu]}", offset + bytes);
        offset += bytes;
    }
    puts_(&h, "}");
    /* Spaces pad the header so the data section, and with it every tensor,
     * starts 8-byte aligned in the file and in any mapping of it. */
    while (h.ok && h.len % 8)
        puts_(&h, " ");
    size_t total = 8 + h.len + (size_t)offset;
    unsigned char *file = h.ok ? ntc_malloc(total) : NULL;
    if (!file) {
        ntc_free(h.buf);
        ntc_free(params);
        return ntc_error(err, path, 0, "out of memory");
    }
    for (int i = 0; i < 8; i++)
        file[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    memcpy(file + 8, h.buf, h.len);
    unsigned char *at = file + 8 + h.len;
    for (int i = 0; i < np; i++) {
        const ntc_value *pv = &g->values[params[i]];
        size_t bytes = (size_t)ntc_shape_numel(&pv->shape) * sizeof(float);
        memcpy(at, pv->data, bytes);
        at += bytes;
    }
    int rc = ntc_write_file_atomic(path, file, total, err);
    ntc_free(file);
    ntc_free(h.buf);
    ntc_free(params);
    return rc;
}
