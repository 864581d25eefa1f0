/* The weights files of compiled tasks (".weights"), internal to aot.c.
 *
 * Made to be mapped read-only by a compiled task and shared by many: a
 * file is an 64-byte header ("NTCW" 1) and then records, each
 *     "TENS", u32 name length, u32 rank, u32 0, i64 dims[rank], name,
 *     zero padding to 64 bytes, the float32 data, padding to 64 bytes
 * (little-endian).  Data therefore starts 64-byte aligned, and records
 * are only ever appended: a task records the offsets of its tensors at
 * compile time, and tensors added later for other tasks never move them.
 */
#ifndef NTC_COMPILER_AOT_WEIGHTS_H
#define NTC_COMPILER_AOT_WEIGHTS_H

#include "ntc/util.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    char *name;
    int rank;
    int64_t dims[8];
    uint64_t offset;        /* of the data, from the start of the file */
    uint64_t count;         /* floats */
} ntcw_tensor;

typedef struct {
    unsigned char *bytes;   /* the whole file as built so far */
    size_t len, cap;
    ntcw_tensor *t;
    int n, cap_t;
} ntcw_file;

/* An empty file (header only).  0, or -1 out of memory. */
int ntcw_init(ntcw_file *f, ntc_err *err);
/* Reads path into f; a missing file gives an empty one (*existed false).
 * -1 with err on a malformed file. */
int ntcw_read(ntcw_file *f, const char *path, bool *existed, ntc_err *err);
/* Index of the tensor called name, or -1. */
int ntcw_find(const ntcw_file *f, const char *name);
/* Appends a record; returns its index or -1 (out of memory). */
int ntcw_append(ntcw_file *f, const char *name, int rank, const int64_t *dims, const float *data, ntc_err *err);
void ntcw_free(ntcw_file *f);

/* FNV-1a 64 of n bytes, continuing from h (start with NTCW_FNV_INIT). */
#define NTCW_FNV_INIT 0xcbf29ce484222325ull
uint64_t ntcw_fnv(uint64_t h, const void *p, size_t n);

#endif
