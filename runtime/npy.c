/* NumPy .npy files: the format of numpy.lib.format (version 1.0, 2.0, 3.0).
 *
 *   "\x93NUMPY" MAJOR MINOR HEADER_LEN (uint16 LE for 1.x, uint32 LE for 2.x/3.x)
 *   HEADER: a Python dict literal, e.g.
 *       {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 *   padded with spaces and a '\n' so the data starts 64-byte aligned,
 *   then the raw elements.
 *
 * Only what ntc computes with is accepted (float32, uint8, and int32/int64
 * for labels; C order, little-endian); everything else is refused with a
 * message that names the file and what it holds, never guessed at.
 */
#include "ntc/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

size_t ntc_dtype_size(ntc_dtype t)
{
    switch (t) {
    case NTC_DT_F32: return 4;
    case NTC_DT_U8: return 1;
    case NTC_DT_I32: return 4;
    case NTC_DT_I64: return 8;
    }
    return 0;
}

const char *ntc_dtype_name(ntc_dtype t)
{
    switch (t) {
    case NTC_DT_F32: return "float32";
    case NTC_DT_U8: return "uint8";
    case NTC_DT_I32: return "int32";
    case NTC_DT_I64: return "int64";
    }
    return "?";
}

static const char *dtype_descr(ntc_dtype t)
{
    switch (t) {
    case NTC_DT_F32: return "<f4";
    case NTC_DT_U8: return "|u1";
    case NTC_DT_I32: return "<i4";
    case NTC_DT_I64: return "<i8";
    }
    return "?";
}

int64_t ntc_array_numel(const ntc_array *a)
{
    int64_t n = 1;
    for (int i = 0; i < a->shape.rank; i++)
        n *= a->shape.dims[i];
    return n;
}

void ntc_array_free(ntc_array *a)
{
    ntc_free(a->data);
    memset(a, 0, sizeof *a);
}

/* ---- the header dict ----------------------------------------------------- */

typedef struct {
    const char *s, *end;         /* the header text */
    const char *path;
    ntc_err *err;
} hparser;

static void skip_ws(hparser *p)
{
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n'))
        p->s++;
}

static int bad_header(hparser *p, const char *what)
{
    return ntc_error(p->err, p->path, 0, "bad .npy header: %s", what);
}

static int expect(hparser *p, char c)
{
    skip_ws(p);
    if (p->s >= p->end || *p->s != c) {
        char what[64];
        snprintf(what, sizeof what, "expected '%c'", c);
        return bad_header(p, what);
    }
    p->s++;
    return 0;
}

/* A quoted Python string (no escapes: numpy never writes any) into buf. */
static int parse_string(hparser *p, char *buf, size_t len)
{
    skip_ws(p);
    if (p->s >= p->end || (*p->s != '\'' && *p->s != '"'))
        return bad_header(p, "expected a quoted string");
    char q = *p->s++;
    size_t n = 0;
    while (p->s < p->end && *p->s != q) {
        if (n + 1 >= len)
            return bad_header(p, "string too long");
        buf[n++] = *p->s++;
    }
    if (p->s >= p->end)
        return bad_header(p, "unterminated string");
    p->s++;
    buf[n] = 0;
    return 0;
}

static int parse_bool(hparser *p, bool *out)
{
    skip_ws(p);
    size_t left = (size_t)(p->end - p->s);
    if (left >= 4 && !memcmp(p->s, "True", 4)) {
        *out = true;
        p->s += 4;
        return 0;
    }
    if (left >= 5 && !memcmp(p->s, "False", 5)) {
        *out = false;
        p->s += 5;
        return 0;
    }
    return bad_header(p, "fortran_order must be True or False");
}

/* "(3, 4)", "(5,)", "()" */
static int parse_shape(hparser *p, ntc_shape *sh)
{
    if (expect(p, '('))
        return -1;
    sh->rank = 0;
    for (;;) {
        skip_ws(p);
        if (p->s < p->end && *p->s == ')') {
            p->s++;
            return 0;
        }
        if (p->s >= p->end || *p->s < '0' || *p->s > '9')
            return bad_header(p, "shape must be a tuple of non-negative integers");
        int64_t v = 0;
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return bad_header(p, "shape dimension too large");
            v = v * 10 + (*p->s++ - '0');
        }
        while (p->s < p->end && *p->s == 'L')   /* Python 2 longs */
            p->s++;
        if (sh->rank == NTC_MAX_RANK) {
            char what[80];
            snprintf(what, sizeof what, "more than %d dimensions", NTC_MAX_RANK);
            return bad_header(p, what);
        }
        sh->dims[sh->rank++] = v;
        skip_ws(p);
        if (p->s < p->end && *p->s == ',')
            p->s++;
        else if (p->s >= p->end || *p->s != ')')
            return bad_header(p, "expected ',' or ')' in shape");
    }
}

/* The Python name of a numpy descr such as '<f8' -> "float64", for errors. */
static void descr_name(const char *d, char *buf, size_t len)
{
    const char *kinds[][2] = {{"f", "float"}, {"i", "int"}, {"u", "uint"},
                              {"c", "complex"}, {"b", "bool"}};
    if (strlen(d) >= 3 && strchr("<>|=", d[0])) {
        long bytes = strtol(d + 2, NULL, 10);
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
            if (d[1] == kinds[k][0][0] && bytes > 0 && bytes <= 1024) {
                if (d[1] == 'b')
                    snprintf(buf, len, "bool");
                else
                    snprintf(buf, len, "%s%ld", kinds[k][1], bytes * 8);
                return;
            }
    }
    snprintf(buf, len, "'%s'", d);
}

static int parse_descr(hparser *p, const char *d, ntc_dtype *out)
{
    static const struct { char kind; int size; ntc_dtype t; } ok[] = {
        {'f', 4, NTC_DT_F32}, {'u', 1, NTC_DT_U8}, {'i', 4, NTC_DT_I32}, {'i', 8, NTC_DT_I64},
    };
    char name[64];
    descr_name(d, name, sizeof name);
    if (strlen(d) == 3 && strchr("<>|=", d[0]))
        for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
            if (d[1] != ok[k].kind || d[2] - '0' != ok[k].size)
                continue;
            /* A single byte has no order; wider types must be little-endian
             * ('=' is native, which on every machine ntc runs on is little). */
            if (d[0] == '>' && ok[k].size > 1)
                return ntc_error(p->err, p->path, 0,
                                 "big-endian %s data is not supported (save it with "
                                 "dtype '<%c%d', i.e. little-endian)", name, ok[k].kind, ok[k].size);
            *out = ok[k].t;
            return 0;
        }
    return ntc_error(p->err, p->path, 0,
                     "dtype %s is not supported: .npy files must hold float32 or uint8 "
                     "(int32 or int64 for labels)", name);
}

static int parse_header(hparser *p, ntc_dtype *dtype, ntc_shape *shape)
{
    bool have_descr = false, have_order = false, have_shape = false, fortran = false;
    char descr[64];
    if (expect(p, '{'))
        return -1;
    for (;;) {
        skip_ws(p);
        if (p->s < p->end && *p->s == '}') {
            p->s++;
            break;
        }
        char key[32];
        if (parse_string(p, key, sizeof key) || expect(p, ':'))
            return -1;
        if (!strcmp(key, "descr")) {
            skip_ws(p);
            if (p->s < p->end && *p->s == '[')
                return bad_header(p, "structured dtypes (record arrays) are not supported");
            if (parse_string(p, descr, sizeof descr))
                return -1;
            have_descr = true;
        } else if (!strcmp(key, "fortran_order")) {
            if (parse_bool(p, &fortran))
                return -1;
            have_order = true;
        } else if (!strcmp(key, "shape")) {
            if (parse_shape(p, shape))
                return -1;
            have_shape = true;
        } else {
            char what[80];
            snprintf(what, sizeof what, "unknown key '%s'", key);
            return bad_header(p, what);
        }
        skip_ws(p);
        if (p->s < p->end && *p->s == ',')
            p->s++;
        else if (p->s >= p->end || *p->s != '}')
            return bad_header(p, "expected ',' or '}'");
    }
    if (!have_descr || !have_order || !have_shape)
        return bad_header(p, !have_descr ? "no 'descr' key"
                             : !have_order ? "no 'fortran_order' key" : "no 'shape' key");
    if (parse_descr(p, descr, dtype))
        return -1;
    /* A Fortran-ordered array of rank <= 1 has the same bytes as a C one. */
    if (fortran && shape->rank > 1)
        return ntc_error(p->err, p->path, 0,
                         "Fortran-order arrays are not supported (save with "
                         "numpy.ascontiguousarray(x) to get C order)");
    return 0;
}

/* ---- reading -------------------------------------------------------------- */

/* Bytes of data for dtype and shape, or -1 if that overflows.  A zero
 * dimension makes the array empty but does not excuse the others: their
 * product must fit as well (as in NumPy), or the element count of an
 * empty (6, 2**61, 0) array overflows int64_t in ntc_array_numel. */
static int data_bytes(ntc_dtype t, const ntc_shape *s, size_t *out)
{
    size_t n = ntc_dtype_size(t);
    bool empty = false;
    for (int i = 0; i < s->rank; i++) {
        if (s->dims[i] == 0)
            empty = true;
        else if (s->dims[i] < 0 || __builtin_mul_overflow(n, (size_t)s->dims[i], &n) || n > (size_t)INT64_MAX)
            return -1;
    }
    *out = empty ? 0 : n;
    return 0;
}

static void format_shape(const ntc_shape *s, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < s->rank && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ", %lld" : "%lld", (long long)s->dims[i]);
    if (n < len)
        snprintf(buf + n, len - n, s->rank == 1 ? ",)" : ")");
}

static int read_npy_stream(FILE *f, const char *path, ntc_array *out, ntc_err *err)
{
    unsigned char pre[10];
    size_t got = fread(pre, 1, 10, f);
    if (ferror(f))
        return ntc_error(err, path, 0, "cannot read: %s", strerror(errno));
    if (got < 8 || memcmp(pre, npy_magic, 6))
        return ntc_error(err, path, 0, "not a .npy file (bad magic; expected \\x93NUMPY)");
    int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3)
        return ntc_error(err, path, 0, "unsupported .npy format version %d.%d", major, minor);
    size_t hlen;
    if (major == 1) {
        if (got < 10)
            return ntc_error(err, path, 0, "truncated .npy header");
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    } else {
        unsigned char b[2];
        if (got < 10 || fread(b, 1, 2, f) != 2)
            return ntc_error(err, path, 0, "truncated .npy header");
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)b[0] << 16 | (size_t)b[1] << 24;
    }
    /* NumPy's headers are a few hundred bytes; a huge one is a corrupt file */
    if (hlen > (1u << 20))
        return ntc_error(err, path, 0, "bad .npy header: %zu bytes long", hlen);
    char *text = ntc_malloc(hlen + 1);
    if (!text)
        return ntc_error(err, path, 0, "out of memory");
    if (fread(text, 1, hlen, f) != hlen) {
        ntc_free(text);
        return ntc_error(err, path, 0, "truncated .npy header (%zu bytes announced)", hlen);
    }
    text[hlen] = 0;
    hparser p = {text, text + hlen, path, err};
    ntc_dtype dtype = NTC_DT_F32;
    ntc_shape shape = {0};
    int rc = parse_header(&p, &dtype, &shape);
    ntc_free(text);
    if (rc)
        return -1;

    size_t nbytes;
    if (data_bytes(dtype, &shape, &nbytes))
        return ntc_error(err, path, 0, "array too large");
    void *data = ntc_malloc(nbytes ? nbytes : 1);
    if (!data)
        return ntc_error(err, path, 0, "out of memory for %zu bytes of data", nbytes);
    size_t have = fread(data, 1, nbytes, f);
    if (have != nbytes) {
        char sh[160];
        format_shape(&shape, sh, sizeof sh);
        ntc_free(data);
        return ntc_error(err, path, 0, "truncated data: shape %s %s needs %zu bytes, file has %zu",
                         sh, ntc_dtype_name(dtype), nbytes, have);
    }
    if (fgetc(f) != EOF) {
        ntc_free(data);
        return ntc_error(err, path, 0, "trailing bytes after the array data");
    }
    out->dtype = dtype;
    out->shape = shape;
    out->data = data;
    return 0;
}

int ntc_npy_read(const char *path, ntc_array *out, ntc_err *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return ntc_error(err, path, 0, "cannot open: %s", strerror(errno));
    int rc = read_npy_stream(f, path, out, err);
    if (!rc && ferror(f)) {
        ntc_array_free(out);
        rc = ntc_error(err, path, 0, "read error: %s", strerror(errno));
    }
    fclose(f);
    return rc;
}

/* ---- writing -------------------------------------------------------------- */

int ntc_npy_write(const char *path, const ntc_array *a, ntc_err *err)
{
    if (a->shape.rank < 0 || a->shape.rank > NTC_MAX_RANK)
        return ntc_error(err, path, 0, "cannot write an array of rank %d", a->shape.rank);
    size_t nbytes;
    if (data_bytes(a->dtype, &a->shape, &nbytes))
        return ntc_error(err, path, 0, "cannot write an array with a negative or huge dimension");
    char sh[200], dict[300];
    format_shape(&a->shape, sh, sizeof sh);
    int dlen = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                        dtype_descr(a->dtype), sh);
    /* Version 1.0 unless the header length does not fit in 16 bits (it
     * always fits with NTC_MAX_RANK dims, but the rule is numpy's). */
    int major = dlen + 1 + 10 > 65535 ? 2 : 1;
    size_t pre = major == 1 ? 10 : 12;
    size_t total_hdr = (pre + (size_t)dlen + 1 + 63) / 64 * 64;
    size_t hlen = total_hdr - pre;
    unsigned char *buf = ntc_malloc(total_hdr + nbytes);
    if (!buf)
        return ntc_error(err, path, 0, "out of memory");
    memcpy(buf, npy_magic, 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + pre, dict, (size_t)dlen);
    memset(buf + pre + dlen, ' ', hlen - (size_t)dlen - 1);
    buf[total_hdr - 1] = '\n';
    if (nbytes)
        memcpy(buf + total_hdr, a->data, nbytes);
    int rc = ntc_write_file_atomic(path, buf, total_hdr + nbytes, err);
    ntc_free(buf);
    return rc;
}
