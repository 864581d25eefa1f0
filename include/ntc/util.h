/* ntc/util.h - errors, allocation and arenas shared by every module.
 *
 * Every allocation of libntc goes through ntc_malloc/ntc_realloc/ntc_free,
 * which call one replaceable hook: tests fail the N-th allocation and check
 * that the library reports an error and leaks nothing.
 */
#ifndef NTC_UTIL_H
#define NTC_UTIL_H

#include <stddef.h>
#include <stdarg.h>

/* An error: where (file and line, when known) and what. */
typedef struct {
    char file[512];
    int line;
    char msg[1024];
} ntc_err;

/* Formats msg; file/line may be NULL/0.  Returns -1 for `return ntc_error(...)`. */
int ntc_error(ntc_err *err, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "FILE:LINE: msg", "FILE: msg" or "msg" (static buffer in err). */
const char *ntc_err_str(const ntc_err *err);

/* ---- allocation -------------------------------------------------------- */

/* The hook: realloc semantics (ptr NULL allocates, size 0 frees). */
typedef void *(*ntc_alloc_fn)(void *ptr, size_t size, void *ud);
void ntc_set_allocator(ntc_alloc_fn fn, void *ud);

void *ntc_malloc(size_t size);          /* NULL on failure */
void *ntc_calloc(size_t n, size_t size);
void *ntc_realloc(void *ptr, size_t size);
void ntc_free(void *ptr);
char *ntc_strdup(const char *s);
/* Grows *arr (element size elt) so it holds at least n; 0 ok, -1 no memory. */
int ntc_grow(void **arr, int *cap, int n, size_t elt);

/* ---- arenas ------------------------------------------------------------- */

typedef struct ntc_arena ntc_arena;
ntc_arena *ntc_arena_new(void);
void *ntc_arena_alloc(ntc_arena *a, size_t size);   /* 16-byte aligned, zeroed */
char *ntc_arena_strdup(ntc_arena *a, const char *s);
void ntc_arena_free(ntc_arena *a);

/* ---- files ------------------------------------------------------------- */

/* Writes len bytes to path through "path.tmp.PID" + fsync + rename, so a
 * reader sees the old file or the new one, never half of one. */
int ntc_write_file_atomic(const char *path, const void *data, size_t len, ntc_err *err);
/* ntc_write_file_atomic in two steps, for files that must change together
 * (a graph and its weights, a task .so and its weights): stage writes and fsyncs
 * "path.tmp.PID" (named in tmp, 4096 bytes) and leaves path alone; commit
 * renames it into place; abandon removes it.  Both report like
 * ntc_write_file_atomic. */

int ntc_file_stage(const char *path, const void *data, size_t len, char *tmp, ntc_err *err);
int ntc_file_commit(const char *tmp, const char *path, ntc_err *err);
void ntc_file_abandon(const char *tmp);
/* Reads a whole file into a malloc'ed buffer (NUL-terminated). */
char *ntc_read_file(const char *path, size_t *len, ntc_err *err);
/* dir of path joined with name ("a/b.xml", "w.st" -> "a/w.st"); malloc'ed. */
char *ntc_path_sibling(const char *path, const char *name);

#endif
