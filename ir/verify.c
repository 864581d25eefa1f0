/* Shape inference, topological order and the structural verifier. */
#include "ntc/ir.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t ntc_shape_numel(const ntc_shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++)
        n *= s->dims[i] == NTC_BATCH ? 1 : s->dims[i];
    return n;
}

int ntc_shape_format(const ntc_shape *s, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < s->rank && at < len; i++) {
        int w = s->dims[i] == NTC_BATCH ? snprintf(buf + at, len - at, "%sN", i ? "," : "")
                                        : snprintf(buf + at, len - at, "%s%" PRId64, i ? "," : "", s->dims[i]);
        if (w < 0)
            return -1;
        at += (size_t)w;
    }
    return at < len ? 0 : -1;
}

int ntc_shape_parse(const char *s, ntc_shape *out)
{
    memset(out, 0, sizeof *out);
    const char *p = s;
    if (!*p)
        return -1;
    for (;;) {
        if (out->rank == NTC_MAX_RANK)
            return -1;
        if (*p == 'N' && out->rank == 0) {
            out->dims[out->rank++] = NTC_BATCH;
            p++;
        } else {
            char *end;
            if (*p < '0' || *p > '9')
                return -1;
            long long d = strtoll(p, &end, 10);
            if (end == p || d < 1 || d > (1LL << 31))
                return -1;
            out->dims[out->rank++] = d;
            p = end;
        }
        if (!*p)
            return 0;
        if (*p != ',')
            return -1;
        p++;
    }
}

bool ntc_value_frozen(const ntc_graph *g, int v)
{
    const ntc_value *val = &g->values[v];
    if (val->kind != NTC_VAL_PARAM)
        return true;
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int j = 0; j < NTC_MAX_PARAMS; j++)
            if (n->par[j] == v) {
                if (ntc_ops[n->op].params[j].frozen_stat)
                    return true;
                return n->block >= 0 && g->blocks[n->block].frozen;
            }
    }
    return true;
}

/* ---- topological order: Kahn's algorithm, stable in file order ---------- */

int ntc_graph_topo_order(const ntc_graph *g, int *order, ntc_err *err)
{
    int nn = g->n_nodes;
    int *pending = ntc_calloc((size_t)nn + 1, sizeof(int));
    int *queue = ntc_malloc(sizeof(int) * ((size_t)nn + 1));
    if (!pending || !queue) {
        ntc_free(pending);
        ntc_free(queue);
        return ntc_error(err, g->path, 0, "out of memory");
    }
    int live = 0;
    for (int i = 0; i < nn; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        live++;
        for (int j = 0; j < n->n_in; j++) {
            int p = g->values[n->in[j]].producer;
            if (p >= 0 && !g->nodes[p].dead)
                pending[i]++;
        }
    }
    /* Repeated sweeps in file order keep the schedule close to what the
     * author wrote; graphs are small, so O(n^2) worst case is fine. */
    int head = 0, tail = 0;
    bool *done = ntc_calloc((size_t)nn + 1, sizeof(bool));
    if (!done) {
        ntc_free(pending);
        ntc_free(queue);
        return ntc_error(err, g->path, 0, "out of memory");
    }
    bool progress = true;
    while (progress) {
        progress = false;
        for (int i = 0; i < nn; i++) {
            if (g->nodes[i].dead || done[i] || pending[i])
                continue;
            done[i] = true;
            queue[tail++] = i;
            progress = true;
            while (head < tail) {
                int k = queue[head++];
                int out = g->nodes[k].out;
                for (int c = 0; c < nn; c++) {
                    const ntc_node *cn = &g->nodes[c];
                    if (cn->dead || done[c])
                        continue;
                    for (int j = 0; j < cn->n_in; j++)
                        if (cn->in[j] == out)
                            pending[c]--;
                }
            }
        }
    }
    int count = tail;
    if (count != live) {
        int culprit = -1;
        for (int i = 0; i < nn && culprit < 0; i++)
            if (!g->nodes[i].dead && !done[i])
                culprit = i;
        ntc_error(err, g->path, g->nodes[culprit].line, "cycle through node '%s'", g->nodes[culprit].name);
        count = -1;
    } else {
        memcpy(order, queue, sizeof(int) * (size_t)count);
    }
    ntc_free(pending);
    ntc_free(queue);
    ntc_free(done);
    return count;
}

/* ---- shapes ------------------------------------------------------------------ */

static int node_error(const ntc_graph *g, const ntc_node *n, ntc_err *err, const char *what)
{
    return ntc_error(err, g->path, n->line, "node '%s' (%s): %s", n->name, ntc_op_name(n->op), what);
}

int ntc_graph_infer_shapes(ntc_graph *g, ntc_err *err)
{
    int *order = ntc_malloc(sizeof(int) * ((size_t)g->n_nodes + 1));
    if (!order)
        return ntc_error(err, g->path, 0, "out of memory");
    int count = ntc_graph_topo_order(g, order, err);
    int rc = count < 0 ? -1 : 0;
    ntc_shape *in = NULL;
    for (int k = 0; k < count && rc == 0; k++) {
        ntc_node *n = &g->nodes[order[k]];
        ntc_free(in);
        in = ntc_malloc(sizeof(ntc_shape) * (size_t)(n->n_in ? n->n_in : 1));
        if (!in) {
            rc = ntc_error(err, g->path, 0, "out of memory");
            break;
        }
        for (int j = 0; j < n->n_in; j++)
            in[j] = g->values[n->in[j]].shape;
        ntc_shape par[NTC_MAX_PARAMS] = {{0}};
        ntc_err e = {0};
        if (ntc_ops[n->op].shape(n, in, &g->values[n->out].shape, par, &e)) {
            rc = node_error(g, n, err, e.msg);
            break;
        }
        for (int j = 0; j < NTC_MAX_PARAMS; j++) {
            int p = n->par[j];
            if (p < 0)
                continue;
            ntc_value *pv = &g->values[p];
            /* A parameter with data keeps the shape it was loaded with until
             * the check below compares it to the rule's. */
            if (pv->data && pv->shape.rank &&
                (pv->shape.rank != par[j].rank ||
                 memcmp(pv->shape.dims, par[j].dims, sizeof(int64_t) * (size_t)par[j].rank))) {
                char want[128], got[128], msg[512];
                ntc_shape_format(&par[j], want, sizeof want);
                ntc_shape_format(&pv->shape, got, sizeof got);
                snprintf(msg, sizeof msg, "parameter '%s' has shape [%s], the op needs [%s]",
                         pv->name, got, want);
                rc = node_error(g, n, err, msg);
                break;
            }
            pv->shape = par[j];
        }
    }
    ntc_free(in);
    ntc_free(order);
    return rc;
}

/* ---- the verifier --------------------------------------------------------------- */

typedef struct {
    const ntc_graph *g;
    bool blocks;
} name_key;

static const char *key_name(const name_key *k, int i)
{
    return k->blocks ? k->g->blocks[i].name : k->g->values[i].name;
}

static int by_name_then_index(const void *a, const void *b, void *key)
{
    int x = *(const int *)a, y = *(const int *)b;
    int c = strcmp(key_name(key, x), key_name(key, y));
    return c ? c : (x > y) - (x < y);
}

/* The smallest handle whose name an earlier live value (or block) has, -1
 * if names are unique, -2 when out of memory.  Sorting keeps it
 * O(n log n): graphs from importers have thousands of values. */
static int first_duplicate(const ntc_graph *g, bool blocks)
{
    int n = blocks ? g->n_blocks : g->n_values, k = 0;
    int *idx = ntc_malloc(sizeof(int) * ((size_t)n + 1));
    if (!idx)
        return -2;
    for (int i = 0; i < n; i++)
        if (!(blocks ? g->blocks[i].dead : g->values[i].dead))
            idx[k++] = i;
    name_key key = {g, blocks};
    qsort_r(idx, (size_t)k, sizeof(int), by_name_then_index, &key);
    int dup = -1;
    for (int i = 1; i < k; i++)
        if (!strcmp(key_name(&key, idx[i - 1]), key_name(&key, idx[i])) && (dup < 0 || idx[i] < dup))
            dup = idx[i];
    ntc_free(idx);
    return dup;
}

int ntc_graph_verify(ntc_graph *g, ntc_err *err)
{
    /* Names are unique among live values and among live blocks. */
    int dup = first_duplicate(g, false);
    if (dup == -2)
        return ntc_error(err, g->path, 0, "out of memory");
    if (dup >= 0) {
        int p = g->values[dup].producer;
        return ntc_error(err, g->path, p >= 0 ? g->nodes[p].line : 0, "duplicate name '%s'", g->values[dup].name);
    }
    dup = first_duplicate(g, true);
    if (dup == -2)
        return ntc_error(err, g->path, 0, "out of memory");
    if (dup >= 0)
        return ntc_error(err, g->path, g->blocks[dup].line, "duplicate block name '%s'", g->blocks[dup].name);

    for (int i = 0; i < g->n_nodes; i++) {
        ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        if ((unsigned)n->op >= NTC_OP_COUNT)
            return ntc_error(err, g->path, n->line, "node '%s': bad op", n->name);
        const ntc_op_info *op = &ntc_ops[n->op];
        if (n->n_in < op->min_in || (op->max_in && n->n_in > op->max_in)) {
            char want[64];
            if (op->max_in == op->min_in)
                snprintf(want, sizeof want, "%d", op->min_in);
            else if (op->max_in)
                snprintf(want, sizeof want, "%d to %d", op->min_in, op->max_in);
            else
                snprintf(want, sizeof want, "at least %d", op->min_in);
            return ntc_error(err, g->path, n->line, "node '%s' (%s) takes %s input(s), got %d",
                             n->name, op->name, want, n->n_in);
        }
        for (int j = 0; j < n->n_in; j++) {
            int v = n->in[j];
            if (v < 0 || v >= g->n_values || g->values[v].dead)
                return ntc_error(err, g->path, n->line, "node '%s': input %d refers to a removed value", n->name, j + 1);
            if (g->values[v].kind == NTC_VAL_PARAM)
                return ntc_error(err, g->path, n->line, "node '%s': input '%s' is a parameter, not an activation",
                                 n->name, g->values[v].name);
        }
        for (int j = 0; op->params[j].name; j++) {
            int p = n->par[j];
            if (p < 0) {
                if (!op->params[j].optional)
                    return ntc_error(err, g->path, n->line, "node '%s' (%s) lacks its %s parameter",
                                     n->name, op->name, op->params[j].name);
                continue;
            }
            if (p >= g->n_values || g->values[p].dead || g->values[p].kind != NTC_VAL_PARAM)
                return ntc_error(err, g->path, n->line, "node '%s': %s is not a parameter", n->name, op->params[j].name);
        }
        if (n->block >= g->n_blocks || (n->block >= 0 && g->blocks[n->block].dead))
            return ntc_error(err, g->path, n->line, "node '%s' belongs to a removed block", n->name);
    }
    /* A parameter is read by exactly one node: training updates it in one
     * place and the weights file holds it once. */
    int *uses = ntc_calloc((size_t)g->n_values + 1, sizeof(int));
    if (!uses)
        return ntc_error(err, g->path, 0, "out of memory");
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int j = 0; j < n->n_in; j++)
            uses[n->in[j]]++;
        for (int j = 0; j < NTC_MAX_PARAMS; j++)
            if (n->par[j] >= 0)
                uses[n->par[j]]++;
    }
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i].value >= 0 && g->outputs[i].value < g->n_values)
            uses[g->outputs[i].value]++;
    for (int i = 0; i < g->n_values; i++) {
        if (g->values[i].dead || g->values[i].kind != NTC_VAL_PARAM || uses[i] == 1)
            continue;
        int u = uses[i];
        ntc_free(uses);
        return ntc_error(err, g->path, 0, "parameter '%s' is used by %d nodes (must be exactly 1)",
                         g->values[i].name, u);
    }
    ntc_free(uses);
    for (int i = 0; i < g->n_outputs; i++) {
        int v = g->outputs[i].value;
        if (v < 0 || v >= g->n_values || g->values[v].dead || g->values[v].kind == NTC_VAL_PARAM)
            return ntc_error(err, g->path, 0, "output '%s' names no activation", g->outputs[i].name);
    }
    if (g->n_outputs == 0)
        return ntc_error(err, g->path, 0, "graph has no output");
    if (ntc_graph_infer_shapes(g, err))
        return -1;
    return 0;
}

int64_t ntc_node_macs(const ntc_graph *g, int node)
{
    const ntc_node *n = &g->nodes[node];
    if (!ntc_ops[n->op].macs)
        return 0;
    ntc_shape in[64];
    int k = n->n_in < 64 ? n->n_in : 64;
    for (int j = 0; j < k; j++)
        in[j] = g->values[n->in[j]].shape;
    return ntc_ops[n->op].macs(n, in, &g->values[n->out].shape);
}

int64_t ntc_node_params(const ntc_graph *g, int node)
{
    int64_t total = 0;
    const ntc_node *n = &g->nodes[node];
    for (int j = 0; j < NTC_MAX_PARAMS; j++)
        if (n->par[j] >= 0 && !ntc_ops[n->op].params[j].frozen_stat)
            total += ntc_shape_numel(&g->values[n->par[j]].shape);
    return total;
}
