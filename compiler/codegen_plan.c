/* The code generator's plan: which nodes run (those reaching the output),
 * in which steps (a conv2d absorbs a following batchnorm -> add -> relu
 * chain, a mix a following relu, when nobody else reads the values in
 * between), and where each value and each step's scratch lives in the
 * per-item workspace. */
#include "codegen.h"

#include <stdlib.h>

/* The one needed node reading v, or -1 if v has no reader, several, or is
 * the graph output (the caller reads it). */
static int single_reader(const ntc_graph *g, const int *order, int n, const bool *needed, int v, int output)
{
    if (v == output)
        return -1;
    int reader = -1, count = 0;
    for (int s = 0; s < n; s++) {
        const ntc_node *nd = &g->nodes[order[s]];
        if (!needed[nd->out])
            continue;
        for (int j = 0; j < nd->n_in; j++)
            if (nd->in[j] == v)
                count++, reader = order[s];
    }
    return count == 1 ? reader : -1;
}

/* The step headed by conv: conv2d [-> batchnorm] [-> add of two] [-> relu],
 * each follower the single reader of the value before it and not yet
 * claimed by another chain (member[] >= 0). */
static cg_step conv_chain(const ntc_graph *g, const int *order, int n, const bool *needed, const int *member,
                          int conv, int output)
{
    cg_step st = {conv, -1, -1, -1, -1, conv};
    int cur = g->nodes[conv].out;
    int r = single_reader(g, order, n, needed, cur, output);
    if (r >= 0 && member[r] < 0 && g->nodes[r].op == NTC_OP_batchnorm) {
        st.bn = st.tail = r;
        cur = g->nodes[r].out;
        r = single_reader(g, order, n, needed, cur, output);
    }
    if (r >= 0 && member[r] < 0 && g->nodes[r].op == NTC_OP_add && g->nodes[r].n_in == 2) {
        const ntc_node *a = &g->nodes[r];
        st.add = st.tail = r;
        st.residual = a->in[0] == cur ? a->in[1] : a->in[0];
        cur = a->out;
        r = single_reader(g, order, n, needed, cur, output);
    }
    if (r >= 0 && member[r] < 0 && g->nodes[r].op == NTC_OP_relu)
        st.relu = st.tail = r;
    return st;
}

/* The step headed by mix: mix [-> relu], the relu the mix's single
 * reader (every NetTailor layer's output: its alpha-weighted branches,
 * then a relu). */
static cg_step mix_chain(const ntc_graph *g, const int *order, int n, const bool *needed, const int *member, int mix,
                         int output)
{
    cg_step st = {mix, -1, -1, -1, -1, mix};
    int r = single_reader(g, order, n, needed, g->nodes[mix].out, output);
    if (r >= 0 && member[r] < 0 && g->nodes[r].op == NTC_OP_relu)
        st.relu = st.tail = r;
    return st;
}

/* An interval of steps [first, last] and a size: a workspace tenant. */
typedef struct {
    int first, last;
    int64_t size, *at;
} tenant;

static int by_size_desc(const void *a, const void *b)
{
    const tenant *x = a, *y = b;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    return x->first - y->first;
}

static int by_offset(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* First fit by decreasing size: each tenant goes to the lowest offset that
 * overlaps no placed tenant whose lifetime overlaps its own. */
static int64_t place(tenant *t, int n, int64_t (*busy)[2])
{
    qsort(t, (size_t)n, sizeof *t, by_size_desc);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        int nb = 0;
        for (int j = 0; j < i; j++)
            if (t[j].first <= t[i].last && t[i].first <= t[j].last)
                busy[nb][0] = *t[j].at, busy[nb][1] = *t[j].at + t[j].size, nb++;
        qsort(busy, (size_t)nb, sizeof *busy, by_offset);
        int64_t at = 0;
        for (int j = 0; j < nb && busy[j][0] < at + t[i].size; j++)
            if (busy[j][1] > at)
                at = busy[j][1];
        *t[i].at = at;
        if (at + t[i].size > total)
            total = at + t[i].size;
    }
    return total;
}

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

/* Steps in topological order: a chain runs at its tail's position, where
 * every value it reads (the conv's input, the residual) exists. */
static void make_steps(const ntc_graph *g, const int *all, int n_all, const bool *needed, int output, int *member,
                       cg_step *chain, cg_plan *p)
{
    for (int i = 0; i < g->n_nodes; i++)
        member[i] = -1;
    for (int s = 0; s < n_all; s++) {
        int h = all[s];
        ntc_op op = g->nodes[h].op;
        if (!needed[g->nodes[h].out] || (op != NTC_OP_conv2d && op != NTC_OP_mix) || member[h] >= 0)
            continue;
        chain[h] = op == NTC_OP_mix ? mix_chain(g, all, n_all, needed, member, h, output)
                                    : conv_chain(g, all, n_all, needed, member, h, output);
        int parts[4] = {h, chain[h].bn, chain[h].add, chain[h].relu};
        for (int k = 0; k < 4; k++)
            if (parts[k] >= 0)
                member[parts[k]] = h;
    }
    p->n_steps = 0;
    for (int s = 0; s < n_all; s++) {
        int v = all[s];
        if (!needed[g->nodes[v].out])
            continue;
        if (member[v] < 0)
            p->steps[p->n_steps++] = (cg_step){v, -1, -1, -1, -1, v};
        else if (chain[member[v]].tail == v)
            p->steps[p->n_steps++] = chain[member[v]];
    }
}

static bool step_is_oc(const cg *c, const ntc_graph *g, const cg_step *st)
{
    const ntc_node *h = &g->nodes[st->head];
    return cg_conv_packs_weights(c->vw, h, &g->values[h->in[0]].shape, &g->values[h->out].shape);
}

/* The value step st adds as its residual (fused chains: st->residual;
 * fused_conv2d: its input 1), or -1. */
int cg_step_residual(const ntc_graph *g, const cg_step *st)
{
    const ntc_node *h = &g->nodes[st->head];
    if (st->residual >= 0)
        return st->residual;
    return h->op == NTC_OP_fused_conv2d && h->n_in == 2 ? h->in[1] : -1;
}

/* Which values stay blocked, [C/vw][H][W][vw]: those an output-channel
 * convolution step writes (its tiles are that layout) and only such steps
 * read, as the convolution's input or as a residual -- never the graph
 * output.  Between two such convolutions this saves the transposes to NCHW
 * and back (the pack of a blocked input copies whole vectors).  A step
 * whose output is NCHW adds a blocked residual before its transpose; one
 * whose output is blocked needs a blocked residual.  From every candidate,
 * readers that need NCHW clear values until nothing changes. */
static void plan_layouts(const cg *c, const ntc_graph *g, int output, cg_plan *p)
{
    for (int v = 0; v < g->n_values; v++)
        p->blocked[v] = false;
    for (int s = 0; s < p->n_steps; s++) {
        int out = g->nodes[p->steps[s].tail].out;
        if (out != output && step_is_oc(c, g, &p->steps[s]))
            p->blocked[out] = true;
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (int s = 0; s < p->n_steps; s++) {
            const cg_step *st = &p->steps[s];
            const ntc_node *h = &g->nodes[st->head];
            bool oc = step_is_oc(c, g, st);
            int res = cg_step_residual(g, st), out = g->nodes[st->tail].out;
            for (int j = 0; j < h->n_in; j++)
                if (!oc && p->blocked[h->in[j]])
                    p->blocked[h->in[j]] = false, changed = true;
            if (oc && h->op == NTC_OP_fused_conv2d && h->n_in > 2)
                for (int j = 2; j < h->n_in; j++)
                    if (p->blocked[h->in[j]])
                        p->blocked[h->in[j]] = false, changed = true;
            if (res >= 0 && p->blocked[out] && !p->blocked[res])
                p->blocked[out] = false, changed = true;
        }
    }
}

int cg_make_plan(const cg *c, const ntc_graph *g, int output, cg_plan *p, ntc_err *err)
{
    int nv = g->n_values, nn = g->n_nodes;
    int *all = ntc_malloc(sizeof(int) * ((size_t)nn + 1)), *member = ntc_malloc(sizeof(int) * ((size_t)nn + 1));
    cg_step *chain = ntc_malloc(sizeof(cg_step) * ((size_t)nn + 1));
    bool *needed = ntc_calloc((size_t)nv + 1, 1);
    int *first = ntc_malloc(sizeof(int) * ((size_t)nv + 1)), *last = ntc_malloc(sizeof(int) * ((size_t)nv + 1));
    tenant *t = ntc_malloc(sizeof(tenant) * ((size_t)nv + (size_t)nn + 1));
    int64_t(*busy)[2] = ntc_malloc(sizeof *busy * ((size_t)nv + (size_t)nn + 1));
    p->steps = ntc_malloc(sizeof(cg_step) * ((size_t)nn + 1));
    p->offset = ntc_malloc(sizeof(int64_t) * ((size_t)nv + 1));
    p->scratch_off = ntc_malloc(sizeof(int64_t) * ((size_t)nn + 1));
    p->blocked = ntc_malloc(sizeof(bool) * ((size_t)nv + 1));
    int rc = -1;
    if (!all || !member || !chain || !needed || !first || !last || !t || !busy || !p->steps || !p->offset ||
        !p->scratch_off || !p->blocked) {
        ntc_error(err, g->path, 0, "out of memory planning code generation");
        goto out;
    }
    int n_all = ntc_graph_topo_order(g, all, err);
    if (n_all < 0)
        goto out;
    /* Backwards from the output: a node is needed if a needed node (or
     * the caller) reads its output. */
    needed[output] = true;
    for (int s = n_all - 1; s >= 0; s--) {
        const ntc_node *n = &g->nodes[all[s]];
        if (needed[n->out])
            for (int j = 0; j < n->n_in; j++)
                needed[n->in[j]] = true;
    }
    make_steps(g, all, n_all, needed, output, member, chain, p);
    plan_layouts(c, g, output, p);

    /* Lifetimes: a step reads its head's inputs and the residual and
     * writes its tail's output; values inside a chain get no buffer. */
    for (int v = 0; v < nv; v++)
        first[v] = last[v] = -1, p->offset[v] = -1;
    for (int s = 0; s < p->n_steps; s++) {
        const cg_step *st = &p->steps[s];
        const ntc_node *h = &g->nodes[st->head];
        first[g->nodes[st->tail].out] = last[g->nodes[st->tail].out] = s;
        for (int j = 0; j < h->n_in; j++)
            last[h->in[j]] = s;
        if (st->residual >= 0)
            last[st->residual] = s;
    }
    int nt = 0;
    for (int v = 0; v < nv; v++)
        if (first[v] >= 0 && v != output)
            t[nt++] = (tenant){first[v], last[v], round16(ntc_shape_numel(&g->values[v].shape)), &p->offset[v]};
    for (int s = 0; s < p->n_steps; s++) {
        int64_t size = cg_node_scratch(c, g, p->steps[s].head);
        p->scratch_off[s] = -1;
        if (size > 0)
            t[nt++] = (tenant){s, s, round16(size), &p->scratch_off[s]};
    }
    p->ws_floats = place(t, nt, busy);
    rc = 0;
out:
    ntc_free(all);
    ntc_free(member);
    ntc_free(chain);
    ntc_free(needed);
    ntc_free(first);
    ntc_free(last);
    ntc_free(t);
    ntc_free(busy);
    return rc;
}

void cg_plan_free(cg_plan *p)
{
    ntc_free(p->steps);
    ntc_free(p->offset);
    ntc_free(p->scratch_off);
    ntc_free(p->blocked);
}
