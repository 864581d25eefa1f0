/* ntc/nettailor.h - the structure NetTailor gives a graph, and its
 * expected complexity E[C].
 *
 * A tailored graph (made by the `tailor` pass) has, for every layer i,
 *
 *     x_i = relu( mix( B_i0(x_{i-1}), B_i1(x_{i-1}), ..., B_ik(x_{i-k}) ) )
 *
 * where the mix node holds the layer's alpha logits, B_i0 is the universal
 * block (frozen, shared) and B_ij (j >= 1) are task blocks (proxies).  The
 * analysis below recovers that structure from any graph: a layer is a mix
 * node; branch j is the block producing mix input j; its source is the one
 * value the block reads from outside; a source that is another layer's
 * output links the two (the first universal block, the stem, and anything
 * else outside layers is a fixed source that is always there).
 *
 * Expected complexity (DESIGN.md), with c_ij = MACs(B_ij) / MACs(backbone):
 *
 *     E[C] = sum_ij c_ij * (alpha_ij - P_in(i,j) - P_out(i))
 *     P_in(i,j) = prod_k (1 - alpha_{s,k}),  s the source layer of B_ij
 *                 (0 for a fixed source: the true source layer, where the
 *                 reference code uses layer i-1 for every j)
 *     P_out(i)  = prod over every branch r reading x_i of (1 - alpha_r)
 *                 (0 when something outside the layers, e.g. the
 *                 classifier, reads x_i)
 *
 * alpha = softmax of a layer's logits.  The gradient flows back to the
 * logits through the softmax.
 */
#ifndef NTC_NETTAILOR_H
#define NTC_NETTAILOR_H

#include "ntc/ir.h"

/* Metadata keys the passes record on the graph (ntc_graph_get_meta). */
#define NTC_META_BACKBONE_MACS "nettailor.backbone-macs"   /* MACs of the full backbone per image */
#define NTC_META_MAX_SKIP "nettailor.max-skip"
#define NTC_META_PRUNED "nettailor.pruned."                /* + block name: what prune removed */

typedef struct {
    int block;                   /* block producing the mix input */
    int value;                   /* the mix input (the branch's output) */
    int src_value;               /* the value the branch reads */
    int src_layer;               /* layer index of src_value, -1 for a fixed source */
    bool universal;              /* a universal block */
    int64_t macs, params;        /* of the block's nodes, per image */
    double cost;                 /* c_ij: macs / backbone MACs */
} ntc_nt_branch;

typedef struct {
    const char *name;            /* its blocks' layer attribute, else the universal block's name, else the mix's */
    int mix;                     /* mix node handle */
    int out;                     /* layer output value (after the relu, if any) */
    int alpha;                   /* the mix's alpha parameter (logits) */
    int n_branches;
    ntc_nt_branch *br;           /* branch j = mix input j */
    bool fixed_reader;           /* read by something other than a branch (e.g. the head) */
} ntc_nt_layer;

typedef struct {
    int n_layers;
    ntc_nt_layer *layers;        /* in topological order */
    int64_t backbone_macs;       /* from the graph's metadata, else its own total */
} ntc_nt_model;

/* Finds the layers of a tailored graph (shapes must be inferred).  A graph
 * without mix nodes gives a model with no layers.  NULL with err on a
 * malformed structure (a branch block reading two outside values, ...). */
ntc_nt_model *ntc_nt_analyze(const ntc_graph *g, ntc_err *err);
void ntc_nt_free(ntc_nt_model *m);

/* alpha (softmax of the logits) of layer l into out[n_branches]. */
void ntc_nt_alphas(const ntc_graph *g, const ntc_nt_layer *l, double *out);

/* E[C] for the current alpha logits.  When grad is non-NULL, grad[l] (one
 * array per layer, n_branches floats) receives dE[C]/d(logits) (written,
 * not accumulated). */
double ntc_nt_expected_complexity(const ntc_nt_model *m, const ntc_graph *g, float *const *grad);

/* Sum of MACs of live nodes per image. */
int64_t ntc_graph_macs(const ntc_graph *g);

#endif
