/* Shared by the fuzz targets (tests/fuzz/fuzz_*.c).
 *
 * libFuzzer hands a target bytes, but ntc's readers take paths (they mmap,
 * stat or gunzip the file themselves), so each target writes its input to a
 * file in a private temporary directory and reads it back from there.  The
 * directory lives in $TMPDIR (default /tmp) and is removed at exit.
 *
 * Memory: a corrupt header can announce gigabytes.  The targets route
 * ntc's allocations through a hook that refuses anything above
 * FUZZ_ALLOC_CAP, as a machine with little memory would: the reader must
 * then report "out of memory" cleanly, which is itself a path worth
 * fuzzing, instead of tripping libFuzzer's malloc limit.
 */
#ifndef NTC_FUZZ_UTIL_H
#define NTC_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ntc/util.h"

#define FUZZ_ALLOC_CAP ((size_t)256 << 20)

static char fuzz_root[4096];
static char fuzz_made[8][4096];     /* files and subdirectories to remove at exit */
static int fuzz_n_made;

static inline void fuzz_cleanup(void)
{
    for (int i = fuzz_n_made - 1; i >= 0; i--)
        remove(fuzz_made[i]);
    if (fuzz_root[0])
        rmdir(fuzz_root);
}

static inline void *fuzz_capped_alloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    return size > FUZZ_ALLOC_CAP ? NULL : realloc(ptr, size);
}

/* Creates the private directory and installs the allocation cap; aborts
 * when the directory cannot be made (nothing can be fuzzed then). */
static inline void fuzz_init(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(fuzz_root, sizeof fuzz_root, "%s/ntc-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fuzz_root)) {
        perror(fuzz_root);
        abort();
    }
    atexit(fuzz_cleanup);
    ntc_set_allocator(fuzz_capped_alloc, NULL);
}

/* fuzz_root/rel as a path in a static buffer of the caller's choice;
 * aborts if it does not fit (a cut path would name another file). */
static inline const char *fuzz_path(const char *rel, char *buf, size_t len)
{
    if ((size_t)snprintf(buf, len, "%s/%s", fuzz_root, rel) >= len)
        abort();
    return buf;
}

/* Remembers a path for removal at exit (each path once). */
static inline void fuzz_remember(const char *path)
{
    for (int i = 0; i < fuzz_n_made; i++)
        if (!strcmp(fuzz_made[i], path))
            return;
    if (fuzz_n_made < (int)(sizeof fuzz_made / sizeof fuzz_made[0]))
        snprintf(fuzz_made[fuzz_n_made++], sizeof fuzz_made[0], "%s", path);
}

/* Makes the subdirectory fuzz_root/rel (if missing). */
static inline void fuzz_mkdir(const char *rel)
{
    char path[4096];
    fuzz_path(rel, path, sizeof path);
    if (mkdir(path, 0700) && access(path, F_OK)) {
        perror(path);
        abort();
    }
    fuzz_remember(path);
}

/* Writes data to fuzz_root/rel (replacing it) and returns its path, held
 * in a static buffer until the next call. */
static inline const char *fuzz_write(const char *rel, const uint8_t *data, size_t size)
{
    static char path[4096];
    fuzz_path(rel, path, sizeof path);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror(path);
        abort();
    }
    fuzz_remember(path);
    return path;
}

/* A reader failed: the error must say something (an empty message would
 * leave the user with "ntc: error: " and nothing else). */
static inline void fuzz_check_err(const ntc_err *err)
{
    if (!err->msg[0]) {
        fprintf(stderr, "reader failed without a message\n");
        abort();
    }
}

#endif
