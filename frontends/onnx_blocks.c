/* Block recognition: which imported nodes form the stem, the residual
 * blocks and the classifier head, so that NetTailor can tailor an
 * imported backbone as it tailors one `ntc new` built.
 *
 * Nodes are in topological order (ONNX's order).  A *cut* is a position
 * after which exactly one computed value is still needed: the node's own
 * output (every earlier value is read by that node at the latest).  The
 * cuts split the graph into segments; inside a segment of a residual
 * network live the two paths of a residual block, so a segment holding an
 * add of two computed tensors (the residual join) is a residual block.
 *
 *   head      the last linear node, with the pooling and flatten nodes
 *             feeding only it, and everything after it: a task block
 *   stem      every segment before the first residual block: universal
 *   blocks    each residual segment, universal, its NetTailor layer
 *             itself.  A segment between two residual blocks that is a
 *             single relu (the activation after the join) closes the
 *             block before it; any other (the batchnorm and relu that
 *             open a pre-activation block) opens the block after it.
 *             Segments after the last block and before the head close
 *             the last block.
 *
 * A network without residual joins (an MLP) gets a stem and a head only.
 * Blocks are named after the scope PyTorch gives their nodes
 * ("/layer1/layer1.0/conv1/Conv" -> "layer1.0"), else "blockK". */
#include "onnx_internal.h"

#include <stdio.h>
#include <string.h>

static bool is_join(const ntc_node *n) { return n->op == NTC_OP_add && n->n_in >= 2; }

/* cut[k]: after node k only its output is live.  Graph outputs count as
 * read at the end. */
static int find_cuts(const ntc_graph *g, bool *cut)
{
    int n = g->n_nodes;
    int *last = ntc_malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
    if (!last)
        return -1;
    for (int v = 0; v < g->n_values; v++)
        last[v] = -1;
    for (int k = 0; k < n; k++)
        for (int j = 0; j < g->nodes[k].n_in; j++)
            last[g->nodes[k].in[j]] = k;
    for (int o = 0; o < g->n_outputs; o++)
        last[g->outputs[o].value] = n;
    int live_until = -1; /* latest read of any value made before node k */
    for (int i = 0; i < g->n_inputs; i++)
        live_until = last[g->inputs[i]] > live_until ? last[g->inputs[i]] : live_until;
    for (int k = 0; k < n; k++) {
        cut[k] = live_until <= k;
        int l = last[g->nodes[k].out];
        live_until = l > live_until ? l : live_until;
    }
    ntc_free(last);
    return 0;
}

/* First node of the head: the last linear node, preceded by the flatten
 * and pooling nodes that feed only it; g->n_nodes if there is no linear. */
static int head_start(const onnx_importer *im)
{
    const ntc_graph *g = im->g;
    int h = -1;
    for (int k = 0; k < g->n_nodes; k++)
        if (g->nodes[k].op == NTC_OP_linear)
            h = k;
    if (h < 0)
        return g->n_nodes;
    for (;;) {
        int p = g->values[g->nodes[h].in[0]].producer;
        if (p < 0 || ntc_graph_count_uses(g, g->nodes[p].out) != 1)
            return h;
        ntc_op op = g->nodes[p].op;
        if (op != NTC_OP_flatten && op != NTC_OP_global_avgpool && op != NTC_OP_avgpool && op != NTC_OP_maxpool)
            return h;
        h = p;
    }
}

/* The last path component of the common '/'-scope of the nodes of
 * segment `seg` (the residual segment itself, not the nodes attached to
 * it): "/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/Add" ->
 * "layer1.0".  Empty if they share no scope. */
static void scope_name(const ntc_graph *g, const int *seg_of, int h, int seg, char *buf, size_t len)
{
    const char *first = NULL;
    size_t common = 0;
    for (int k = 0; k < h; k++) {
        if (seg_of[k] != seg)
            continue;
        const char *s = g->nodes[k].name;
        if (!first) {
            first = s;
            common = strlen(s);
        }
        size_t i = 0;
        while (i < common && s[i] == first[i])
            i++;
        common = i;
    }
    buf[0] = 0;
    while (first && common > 0 && first[common - 1] != '/')
        common--;                          /* back to the end of a whole scope */
    if (!first || common < 2)
        return;
    size_t end = common - 1, begin = end;  /* first[end] == '/' */
    while (begin > 0 && first[begin - 1] != '/')
        begin--;
    if (end > begin)
        snprintf(buf, len, "%.*s", (int)(end - begin), first + begin);
}

static int make_block(onnx_importer *im, const char *name, const char *fallback, ntc_role role, bool layer)
{
    ntc_graph *g = im->g;
    const char *use = *name && ntc_graph_find_block(g, name) < 0 ? name : fallback;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", use);
    for (int k = 2; ntc_graph_find_block(g, buf) >= 0; k++)
        snprintf(buf, sizeof buf, "%s_%d", use, k);
    int b = ntc_graph_add_block(g, buf, role);
    if (b < 0 || (layer && !(g->blocks[b].layer = ntc_graph_strdup(g, g->blocks[b].name))))
        return ntc_error(im->err, im->file, 0, "out of memory");
    return b;
}

/* Segment ids per node, residual flags per segment: fills seg_of[0..h) and
 * residual[], returns the number of segments. */
static int segments(const ntc_graph *g, const bool *cut, int h, int *seg_of, bool *residual)
{
    int s = 0;
    for (int k = 0; k < h; k++) {
        seg_of[k] = s;
        residual[s] = residual[s] || is_join(&g->nodes[k]);
        if (cut[k] || k == h - 1)
            s++;
    }
    return s;
}

/* Group id per segment: -1 stem, else the residual segment it joins. */
static void group_segments(const ntc_graph *g, const int *seg_of, const bool *residual, int n_seg, int h,
                           int *group)
{
    int first = -1, last = -1;
    for (int s = 0; s < n_seg; s++)
        if (residual[s]) {
            first = first < 0 ? s : first;
            last = s;
        }
    for (int s = 0; s < n_seg; s++) {
        if (first < 0 || s < first) {
            group[s] = -1;
        } else if (residual[s] || s > last) {
            group[s] = residual[s] ? s : last;
        } else {
            /* Between two residual blocks: a lone relu closes the previous
             * one, anything else opens the next. */
            int count = 0, node = -1;
            for (int k = 0; k < h; k++)
                if (seg_of[k] == s)
                    count++, node = k;
            bool lone_relu = count == 1 && g->nodes[node].op == NTC_OP_relu && residual[s - 1];
            int next = s + 1;
            while (!residual[next])
                next++;
            group[s] = lone_relu ? group[s - 1] : next;
        }
    }
}

int onnx_assign_blocks(onnx_importer *im)
{
    ntc_graph *g = im->g;
    int n = g->n_nodes, rc = -1;
    if (n == 0)
        return ntc_error(im->err, im->file, 0, "the graph computes nothing (no node ntc imports)");
    bool *cut = ntc_calloc((size_t)n, sizeof(bool)), *residual = ntc_calloc((size_t)n, sizeof(bool));
    int *seg_of = ntc_calloc((size_t)n, sizeof(int)), *group = ntc_calloc((size_t)n, sizeof(int));
    int *block_of = ntc_calloc((size_t)n + 1, sizeof(int)), *block_for_group = ntc_calloc((size_t)n + 1, sizeof(int));
    if (!cut || !residual || !seg_of || !group || !block_of || !block_for_group || find_cuts(g, cut)) {
        ntc_error(im->err, im->file, 0, "out of memory");
        goto done;
    }
    int h = head_start(im);
    int n_seg = segments(g, cut, h, seg_of, residual);
    group_segments(g, seg_of, residual, n_seg, h, group);
    /* Group ids in order: the stem (group -1) is 0, then residual
     * segment s is s + 1; the head is n + 1. */
    for (int k = 0; k < n; k++)
        block_of[k] = k < h ? group[seg_of[k]] + 1 : n + 1;
    int blocks = 0;
    for (int gid = 0; gid <= n; gid++) {
        bool used = false;
        for (int k = 0; k < h && !used; k++)
            used = block_of[k] == gid;
        if (!used)
            continue;
        char scope[200] = "", fallback[32];
        int b;
        if (gid == 0) {
            b = make_block(im, "stem", "stem", NTC_ROLE_UNIVERSAL, false);
        } else {
            scope_name(g, seg_of, h, gid - 1, scope, sizeof scope);
            snprintf(fallback, sizeof fallback, "block%d", ++blocks);
            b = make_block(im, scope, fallback, NTC_ROLE_UNIVERSAL, true);
        }
        if (b < 0)
            goto done;
        block_for_group[gid] = b;
    }
    for (int k = 0; k < h; k++)
        g->nodes[k].block = block_for_group[block_of[k]];
    if (h < n) {
        int b = make_block(im, "head", "head", NTC_ROLE_TASK, false);
        if (b < 0)
            goto done;
        for (int k = h; k < n; k++)
            g->nodes[k].block = b;
    }
    rc = 0;
done:
    ntc_free(cut);
    ntc_free(residual);
    ntc_free(seg_of);
    ntc_free(group);
    ntc_free(block_of);
    ntc_free(block_for_group);
    return rc;
}
