/* The execution plan: a topological schedule and one arena shared by the
 * intermediate values, laid out from their lifetimes.
 *
 * A value lives from the step that produces it to the last step that reads
 * it, both inclusive, so a node's output never shares memory with its own
 * inputs.  Values are placed largest first, each at the lowest offset that
 * does not overlap any already placed value whose lifetime overlaps its
 * own (first fit by decreasing size, the usual heuristic for this offline
 * problem; graphs have at most a few thousand values, so the O(n^2 log n)
 * scan is fine). */
#include "ntc/plan.h"

#include <stdlib.h>

/* Offsets are multiples of 16 floats so every buffer is 64-byte aligned
 * for any batch size. */
#define ALIGN_FLOATS 16

static int64_t round_up(int64_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

void ntc_plan_free(ntc_plan *p)
{
    if (!p)
        return;
    ntc_free(p->order);
    ntc_free(p->first);
    ntc_free(p->last);
    ntc_free(p->offset);
    ntc_free(p->size);
    ntc_free(p);
}

/* Lifetimes of node outputs from the schedule. */
static void lifetimes(const ntc_graph *g, ntc_plan *p)
{
    for (int v = 0; v < g->n_values; v++)
        p->first[v] = p->last[v] = -1, p->offset[v] = -1, p->size[v] = 0;
    for (int s = 0; s < p->n_steps; s++) {
        const ntc_node *n = &g->nodes[p->order[s]];
        p->first[n->out] = p->last[n->out] = s;
        p->size[n->out] = round_up(ntc_shape_numel(&g->values[n->out].shape));
        for (int j = 0; j < n->n_in; j++)
            if (p->first[n->in[j]] >= 0)
                p->last[n->in[j]] = s;
    }
    for (int o = 0; o < g->n_outputs; o++) {
        int v = g->outputs[o].value;
        if (p->first[v] >= 0)
            p->last[v] = p->n_steps;        /* read by the caller after the run */
    }
}

static bool is_output(const ntc_graph *g, int v)
{
    for (int o = 0; o < g->n_outputs; o++)
        if (g->outputs[o].value == v)
            return true;
    return false;
}

static int by_size_desc(const void *a, const void *b, void *ctx)
{
    int u = *(const int *)a, v = *(const int *)b;
    const ntc_plan *p = ctx;
    if (p->size[u] != p->size[v])
        return p->size[u] > p->size[v] ? -1 : 1;
    if (p->first[u] != p->first[v])
        return p->first[u] < p->first[v] ? -1 : 1;
    return u < v ? -1 : u > v;
}

typedef struct {
    int64_t lo, hi;
} range;

static int by_lo(const void *a, const void *b)
{
    const range *r = a, *s = b;
    return r->lo < s->lo ? -1 : r->lo > s->lo;
}

/* Places the arena values; `vals` lists them, `busy` has room for as many ranges. */
static void place(ntc_plan *p, int *vals, int n, range *busy)
{
    qsort_r(vals, (size_t)n, sizeof *vals, by_size_desc, p);
    for (int i = 0; i < n; i++) {
        int v = vals[i], nb = 0;
        for (int j = 0; j < i; j++) {
            int u = vals[j];
            if (p->first[u] <= p->last[v] && p->first[v] <= p->last[u])
                busy[nb++] = (range){p->offset[u], p->offset[u] + p->size[u]};
        }
        qsort(busy, (size_t)nb, sizeof *busy, by_lo);
        int64_t at = 0;
        for (int j = 0; j < nb; j++) {
            if (busy[j].lo - at >= p->size[v])
                break;
            if (busy[j].hi > at)
                at = busy[j].hi;
        }
        p->offset[v] = at;
        if (at + p->size[v] > p->arena_floats)
            p->arena_floats = at + p->size[v];
    }
}

ntc_plan *ntc_plan_new(const ntc_graph *g, ntc_err *err)
{
    ntc_plan *p = ntc_calloc(1, sizeof *p);
    size_t nv = (size_t)g->n_values + 1;
    int *vals = NULL;
    range *busy = NULL;
    if (!p || !(p->order = ntc_malloc(sizeof(int) * ((size_t)g->n_nodes + 1))) ||
        !(p->first = ntc_malloc(sizeof(int) * nv)) || !(p->last = ntc_malloc(sizeof(int) * nv)) ||
        !(p->offset = ntc_malloc(sizeof(int64_t) * nv)) || !(p->size = ntc_malloc(sizeof(int64_t) * nv)) ||
        !(vals = ntc_malloc(sizeof(int) * nv)) || !(busy = ntc_malloc(sizeof(range) * nv))) {
        ntc_error(err, g->path, 0, "out of memory planning the graph");
        goto fail;
    }
    p->n_steps = ntc_graph_topo_order(g, p->order, err);
    if (p->n_steps < 0)
        goto fail;
    lifetimes(g, p);
    int n = 0;
    for (int v = 0; v < g->n_values; v++) {
        if (p->first[v] < 0)
            continue;
        p->naive_floats += p->size[v];
        if (is_output(g, v))
            p->output_floats += p->size[v];
        else
            vals[n++] = v;
    }
    place(p, vals, n, busy);
    ntc_free(vals);
    ntc_free(busy);
    return p;
fail:
    ntc_free(vals);
    ntc_free(busy);
    ntc_plan_free(p);
    return NULL;
}

int64_t ntc_plan_peak_bytes(const ntc_graph *g, int64_t *naive_bytes, ntc_err *err)
{
    ntc_plan *p = ntc_plan_new(g, err);
    if (!p)
        return -1;
    int64_t peak = (p->arena_floats + p->output_floats) * (int64_t)sizeof(float);
    if (naive_bytes)
        *naive_bytes = p->naive_floats * (int64_t)sizeof(float);
    ntc_plan_free(p);
    return peak;
}
