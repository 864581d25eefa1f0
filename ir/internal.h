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


/* The directory part of path into out (size n): "." for a bare name, "/"
 * for a file in the root.  -1 if it does not fit. */
int ntc_path_dir(const char *path, char *out, size_t n);

#endif
