/* Errors, the allocation hook, arenas and atomic file writes. */
#include "ntc/util.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ntc_error(ntc_err *err, const char *file, int line, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    snprintf(err->file, sizeof err->file, "%s", file ? file : "");
    err->line = line;
    return -1;
}

const char *ntc_err_str(const ntc_err *err)
{
    static _Thread_local char buf[sizeof err->file + sizeof err->msg + 32];
    if (err->file[0] && err->line > 0)
        snprintf(buf, sizeof buf, "%s:%d: %s", err->file, err->line, err->msg);
    else if (err->file[0])
        snprintf(buf, sizeof buf, "%s: %s", err->file, err->msg);
    else
        snprintf(buf, sizeof buf, "%s", err->msg);
    return buf;
}

/* ---- allocation ---------------------------------------------------------- */

static void *default_alloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, size);
}

static ntc_alloc_fn alloc_fn = default_alloc;
static void *alloc_ud;

void ntc_set_allocator(ntc_alloc_fn fn, void *ud)
{
    alloc_fn = fn ? fn : default_alloc;
    alloc_ud = ud;
}

void *ntc_malloc(size_t size) { return alloc_fn(NULL, size ? size : 1, alloc_ud); }

void *ntc_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = ntc_malloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void *ntc_realloc(void *ptr, size_t size) { return alloc_fn(ptr, size ? size : 1, alloc_ud); }

void ntc_free(void *ptr)
{
    if (ptr)
        alloc_fn(ptr, 0, alloc_ud);
}

char *ntc_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ntc_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

int ntc_grow(void **arr, int *cap, int n, size_t elt)
{
    if (n <= *cap)
        return 0;
    int c = *cap ? *cap : 8;
    while (c < n)
        c *= 2;
    void *p = ntc_realloc(*arr, (size_t)c * elt);
    if (!p)
        return -1;
    memset((char *)p + (size_t)*cap * elt, 0, (size_t)(c - *cap) * elt);
    *arr = p;
    *cap = c;
    return 0;
}

/* ---- arenas: a chain of chunks, freed at once ---------------------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, size;
    _Alignas(16) unsigned char mem[];
} chunk;

struct ntc_arena {
    chunk *head;
};

ntc_arena *ntc_arena_new(void) { return ntc_calloc(1, sizeof(ntc_arena)); }

void *ntc_arena_alloc(ntc_arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (!a->head || a->head->used + size > a->head->size) {
        size_t cs = size > 16384 ? size : 16384;
        chunk *c = ntc_malloc(sizeof(chunk) + cs);
        if (!c)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->size = cs;
        a->head = c;
    }
    void *p = a->head->mem + a->head->used;
    a->head->used += size;
    memset(p, 0, size);
    return p;
}

char *ntc_arena_strdup(ntc_arena *a, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = ntc_arena_alloc(a, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void ntc_arena_free(ntc_arena *a)
{
    if (!a)
        return;
    for (chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        ntc_free(c);
    }
    ntc_free(a);
}

/* ---- files ---------------------------------------------------------------- */

/* Makes a rename in path's directory durable: without it a power cut can
 * lose the rename after the old file's directory entry (or, in the
 * trainer, the previous checkpoint) is already gone.  Best effort: the new
 * file is in place either way, and some file systems refuse fsync on a
 * directory. */
int ntc_path_dir(const char *path, char *out, size_t n)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, n, ".");
    else if (slash == path)
        snprintf(out, n, "/");
    else if ((size_t)(slash - path) < n)
        snprintf(out, n, "%.*s", (int)(slash - path), path);
    else
        return -1;
    return 0;
}

static void sync_parent_dir(const char *path)
{
    char dir[4096];
    if (ntc_path_dir(path, dir, sizeof dir))
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int ntc_file_stage(const char *path, const void *data, size_t len, char *tmp, ntc_err *err)
{
    if (snprintf(tmp, 4096, "%s.tmp.%ld", path, (long)getpid()) >= 4096)
        return ntc_error(err, path, 0, "path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return ntc_error(err, path, 0, "cannot write: %s", strerror(errno));
    /* A full disk, a quota or the file size limit (EFBIG, once SIGXFSZ is
     * ignored) shows up in write, in fsync (delayed allocation, NFS) or in
     * close: any of them abandons the temp file, and path keeps what it
     * held before. */
    const char *p = data;
    size_t left = len;
    int e = 0;
    while (left > 0 && !e) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            e = w < 0 ? errno : ENOSPC;
        else
            p += w, left -= (size_t)w;
    }
    if (!e && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && !e && errno != EINTR)
        e = errno;
    if (e) {
        unlink(tmp);
        return ntc_error(err, path, 0, "write failed: %s (%s)", strerror(e),
                         access(path, F_OK) == 0 ? "the file is unchanged" : "no file written");
    }
    return 0;
}

int ntc_file_commit(const char *tmp, const char *path, ntc_err *err)
{
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ntc_error(err, path, 0, "cannot rename into place: %s", strerror(e));
    }
    sync_parent_dir(path);
    return 0;
}

void ntc_file_abandon(const char *tmp)
{
    unlink(tmp);
}

int ntc_write_file_atomic(const char *path, const void *data, size_t len, ntc_err *err)
{
    char tmp[4096];
    if (ntc_file_stage(path, data, len, tmp, err))
        return -1;
    return ntc_file_commit(tmp, path, err);
}

char *ntc_read_file(const char *path, size_t *len, ntc_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ntc_error(err, path, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    size_t cap = 65536, n = 0;
    char *buf = ntc_malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *nb = ntc_realloc(buf, cap * 2);
        if (!nb) {
            ntc_free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (!buf) {
        fclose(f);
        ntc_error(err, path, 0, "out of memory");
        return NULL;
    }
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        ntc_free(buf);
        ntc_error(err, path, 0, "cannot read: %s", strerror(e));
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

char *ntc_path_sibling(const char *path, const char *name)
{
    if (name[0] == '/')
        return ntc_strdup(name);
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path + 1) : 0;
    char *r = ntc_malloc(dl + strlen(name) + 1);
    if (!r)
        return NULL;
    memcpy(r, path, dl);
    strcpy(r + dl, name);
    return r;
}
