/* ntc/plan.h - static buffer planning: which bytes each value of a graph
 * lives in.  Pure IR analysis: the interpreter runs on it, the `plan`
 * pass reports it, `ntc stats` shows its peak.
 *
 * Values are planned per batch item: an offset and a size in floats,
 * scaled by the number of items a buffer holds. */
#ifndef NTC_PLAN_H
#define NTC_PLAN_H

#include "ntc/ir.h"

typedef struct ntc_plan {
    int n_steps;
    int *order;              /* node handle run at each step */
    /* Per value handle (g->n_values entries): */
    int *first, *last;       /* steps producing and last reading it; -1 if not planned */
    int64_t *offset;         /* arena offset in floats per item, -1 outside the arena */
    int64_t *size;           /* floats per item (planned values; 0 otherwise) */
    int64_t arena_floats;    /* arena size per item (a multiple of 16: 64-byte aligned) */
    int64_t output_floats;   /* graph outputs' own buffers per item */
    int64_t naive_floats;    /* every node output in its own buffer, per item */
} ntc_plan;

/* Plans g, whose shapes must be inferred and whose activations all have
 * the symbolic batch as dimension 0.  Intermediate values (node outputs
 * that are not graph outputs) go in the arena by first fit in decreasing
 * size, so values with overlapping lifetimes [first, last] never overlap
 * in memory.  Returns NULL with err filled on a cycle or out of memory. */
ntc_plan *ntc_plan_new(const ntc_graph *g, ntc_err *err);
void ntc_plan_free(ntc_plan *p);

/* Activation bytes per item the plan needs (arena plus output buffers),
 * and in *naive_bytes (if non-NULL) what one buffer per node output would
 * take.  For `ntc stats`.  Returns -1 with err filled on failure. */
int64_t ntc_plan_peak_bytes(const ntc_graph *g, int64_t *naive_bytes, ntc_err *err);

#endif
