/* Reading and appending the weights files of compiled tasks (format in
 * aot_weights.h). */
#include "aot_weights.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define HEADER 64
static const char magic[8] = {'N', 'T', 'C', 'W', 1, 0, 0, 0};

uint64_t ntcw_fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static size_t pad64(size_t n) { return (n + 63) & ~(size_t)63; }

static int reserve(ntcw_file *f, size_t more, ntc_err *err)
{
    if (f->len + more <= f->cap)
        return 0;
    size_t cap = f->cap ? f->cap : 4096;
    while (cap < f->len + more)
        cap *= 2;
    unsigned char *b = ntc_realloc(f->bytes, cap);
    if (!b)
        return ntc_error(err, NULL, 0, "out of memory building a weights file");
    f->bytes = b, f->cap = cap;
    return 0;
}

static int add_entry(ntcw_file *f, const char *name, int rank, const int64_t *dims, uint64_t offset,
                     uint64_t count, ntc_err *err)
{
    if (ntc_grow((void **)&f->t, &f->cap_t, f->n + 1, sizeof *f->t))
        return ntc_error(err, NULL, 0, "out of memory");
    ntcw_tensor *t = &f->t[f->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = ntc_strdup(name)))
        return ntc_error(err, NULL, 0, "out of memory");
    t->rank = rank;
    memcpy(t->dims, dims, sizeof(int64_t) * (size_t)rank);
    t->offset = offset, t->count = count;
    return f->n++;
}

int ntcw_init(ntcw_file *f, ntc_err *err)
{
    memset(f, 0, sizeof *f);
    if (reserve(f, HEADER, err))
        return -1;
    memset(f->bytes, 0, HEADER);
    memcpy(f->bytes, magic, sizeof magic);
    f->len = HEADER;
    return 0;
}

int ntcw_append(ntcw_file *f, const char *name, int rank, const int64_t *dims, const float *data, ntc_err *err)
{
    uint64_t count = 1;
    for (int i = 0; i < rank; i++)
        count *= (uint64_t)dims[i];
    uint32_t head[4] = {0x534e4554u /* "TENS" */, (uint32_t)strlen(name), (uint32_t)rank, 0};
    size_t meta = pad64(sizeof head + sizeof(int64_t) * (size_t)rank + strlen(name));
    size_t bytes = pad64((size_t)count * sizeof(float));
    if (reserve(f, meta + bytes, err))
        return -1;
    unsigned char *p = f->bytes + f->len;
    memset(p, 0, meta + bytes);
    memcpy(p, head, sizeof head);
    memcpy(p + sizeof head, dims, sizeof(int64_t) * (size_t)rank);
    memcpy(p + sizeof head + sizeof(int64_t) * (size_t)rank, name, strlen(name));
    memcpy(p + meta, data, (size_t)count * sizeof(float));
    int i = add_entry(f, name, rank, dims, f->len + meta, count, err);
    if (i >= 0)
        f->len += meta + bytes;
    return i;
}

int ntcw_read(ntcw_file *f, const char *path, bool *existed, ntc_err *err)
{
    struct stat st;
    *existed = stat(path, &st) == 0;
    if (!*existed) {
        if (errno != ENOENT)
            return ntc_error(err, path, 0, "cannot read: %s", strerror(errno));
        return ntcw_init(f, err);
    }
    memset(f, 0, sizeof *f);
    size_t len;
    char *data = ntc_read_file(path, &len, err);
    if (!data)
        return -1;
    f->bytes = (unsigned char *)data, f->len = f->cap = len;
    if (len < HEADER || memcmp(data, magic, sizeof magic)) {
        ntcw_free(f);
        return ntc_error(err, path, 0, "not an ntc weights file (bad magic)");
    }
    size_t at = HEADER;
    while (at < len) {
        uint32_t head[4];
        if (len - at < sizeof head)
            goto bad;
        memcpy(head, f->bytes + at, sizeof head);
        int64_t dims[8];
        if (head[0] != 0x534e4554u || head[2] > 8 || head[1] > 4096)
            goto bad;
        size_t fixed = sizeof head + sizeof(int64_t) * head[2];
        size_t meta = pad64(fixed + head[1]);
        if (len - at < meta)
            goto bad;
        memcpy(dims, f->bytes + at + sizeof head, sizeof(int64_t) * head[2]);
        uint64_t count = 1;
        for (uint32_t i = 0; i < head[2]; i++) {
            if (dims[i] < 1 || dims[i] > (int64_t)1 << 40)
                goto bad;
            count *= (uint64_t)dims[i];
        }
        size_t bytes = pad64((size_t)count * sizeof(float));
        if (count > (uint64_t)len || len - at - meta < bytes)
            goto bad;
        char name[4097];
        memcpy(name, f->bytes + at + fixed, head[1]);
        name[head[1]] = 0;
        if (add_entry(f, name, (int)head[2], dims, at + meta, count, err) < 0) {
            ntcw_free(f);
            return -1;
        }
        at += meta + bytes;
    }
    return 0;
bad:
    ntcw_free(f);
    return ntc_error(err, path, 0, "corrupt ntc weights file (record at a bad offset or truncated)");
}

int ntcw_find(const ntcw_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name))
            return i;
    return -1;
}

void ntcw_free(ntcw_file *f)
{
    for (int i = 0; i < f->n; i++)
        ntc_free(f->t[i].name);
    ntc_free(f->t);
    ntc_free(f->bytes);
    memset(f, 0, sizeof *f);
}
