/* Before a long job starts: can it write its outputs?  A training run
 * that only finds out at its first checkpoint, an hour in, that the
 * directory is read-only or the disk is full has wasted that hour. */
#ifndef NTC_PREFLIGHT_H
#define NTC_PREFLIGHT_H

#include "ntc/util.h"

#include <stdint.h>

/* One file the job will write. */
typedef struct {
    const char *dir;             /* the directory it goes to */
    int64_t bytes;               /* its size, or a lower bound (0: none) */
    const char *what;            /* for messages: "the trained graph" */
} preflight_file;

/* Creates a hidden probe file in dir for each of the n files and reserves
 * its bytes (fallocate), all of them at once since the job's files will
 * coexist, then removes the probes.  Fails naming the directory when it
 * does not exist, is not a directory, is not writable, is on a read-only
 * file system, or has not the room: disk full, quota, or a file size
 * limit (ulimit -f; reported only if SIGXFSZ is ignored, otherwise the
 * kernel kills the process).  On a file system without fallocate the
 * free space (statvfs) is compared instead, file by file.
 * 0, or -1 with err filled. */
int preflight(const preflight_file *files, int n, ntc_err *err);

#endif
