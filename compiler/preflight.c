/* The probes of preflight.h. */
#include "preflight.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Reserves bytes in the open file fd: 0, or the errno that says why not. */
static int reserve(int fd, int64_t bytes)
{
    if (bytes <= 0)
        return 0;
    int rc;
    while ((rc = fallocate(fd, 0, 0, (off_t)bytes)) != 0 && errno == EINTR)
        ;
    if (rc == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return errno;
    /* No fallocate here (some network and FUSE file systems): what the
     * file system and the file size limit say instead. */
    struct rlimit lim;
    if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && (uint64_t)bytes > lim.rlim_cur)
        return EFBIG;
    struct statvfs fs;
    if (fstatvfs(fd, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < (uint64_t)bytes)
        return ENOSPC;
    return 0;
}

static void format_size(char *buf, size_t cap, int64_t bytes)
{
    if (bytes < 1000000)
        snprintf(buf, cap, "%lld bytes", (long long)bytes);
    else
        snprintf(buf, cap, "%.1f MB", (double)bytes / 1e6);
}

int preflight(const preflight_file *files, int n, ntc_err *err)
{
    char **probes = calloc((size_t)(n > 0 ? n : 1), sizeof *probes);
    if (!probes)
        return ntc_error(err, NULL, 0, "out of memory");
    int rc = 0, made = 0;
    for (int i = 0; i < n && !rc; i++) {
        const preflight_file *f = &files[i];
        if (asprintf(&probes[i], "%s/.ntc-probe.%ld.%d", f->dir, (long)getpid(), i) < 0) {
            probes[i] = NULL;
            rc = ntc_error(err, NULL, 0, "out of memory");
            break;
        }
        int fd = open(probes[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            rc = ntc_error(err, f->dir, 0, "cannot write %s there: %s", f->what, strerror(errno));
            break;
        }
        made = i + 1;
        int e = reserve(fd, f->bytes);
        close(fd);
        if (e) {
            char size[64];
            format_size(size, sizeof size, f->bytes);
            rc = ntc_error(err, f->dir, 0, "no room for %s (%s): %s", f->what, size, strerror(e));
        }
    }
    for (int i = 0; i < n; i++) {
        if (i < made)
            unlink(probes[i]);
        free(probes[i]);
    }
    free(probes);
    return rc;
}
