/* Internals of the ir module shared between its files. */
#ifndef NTC_IR_INTERNAL_H
#define NTC_IR_INTERNAL_H

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

#endif
