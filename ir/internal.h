/* Internals of the ir module shared between its files. */
#ifndef NTC_IR_INTERNAL_H
#define NTC_IR_INTERNAL_H

#include "ntc/util.h"

#include <stddef.h>

struct ntc_graph;

/* A mapped weights file; the graph unmaps them all when freed. */
struct ntc_mapping {
    void *addr;
    size_t len;
    struct ntc_mapping *next;
};

int ntc_mappings_add(struct ntc_graph *g, void *addr, size_t len);
void ntc_mappings_release(struct ntc_mapping *m);

/* ntc_write_file_atomic in two steps, for a pair of files that must change
 * together (a graph and its weights): stage writes and fsyncs
 * "path.tmp.PID" (named in tmp, 4096 bytes) and leaves path alone; commit
 * renames it into place; abandon removes it.  Both report like
 * ntc_write_file_atomic. */

int ntc_file_stage(const char *path, const void *data, size_t len, char *tmp, ntc_err *err);
int ntc_file_commit(const char *tmp, const char *path, ntc_err *err);
void ntc_file_abandon(const char *tmp);

/* The directory part of path into out (size n): "." for a bare name, "/"
 * for a file in the root.  -1 if it does not fit. */
int ntc_path_dir(const char *path, char *out, size_t n);

#endif
