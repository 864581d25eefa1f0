/* new-head: replace a network's classifier (its last linear node) by a
 * freshly initialised one with `classes` outputs, e.g. to fine-tune a
 * backbone pre-trained on one task as the teacher of another.  The tailor
 * pass uses the same functions for the student's classifier. */
#include "ntc/pass.h"
#include "ntc/rng.h"
#include "nettailor_internal.h"

#include <math.h>
#include <string.h>

/* He-normal for conv weights, PyTorch's uniform bound for linear layers,
 * identity batchnorm; alphas set by the caller. */
int ntc_nt_init_params(ntc_graph *g, int first_value, uint64_t seed, ntc_err *err)
{
    ntc_rng rng;
    ntc_rng_seed(&rng, seed);
    for (int i = 0; i < g->n_nodes; i++) {
        ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int s = 0; ntc_ops[n->op].params[s].name; s++) {
            int v = n->par[s];
            if (v < first_value || g->values[v].data)
                continue;
            float *w = ntc_param_data_alloc(g, v, err);
            if (!w)
                return -1;
            const ntc_shape *sh = &g->values[v].shape;
            int64_t numel = ntc_shape_numel(sh);
            const char *slot = ntc_ops[n->op].params[s].name;
            if (n->op == NTC_OP_conv2d && !strcmp(slot, "weight")) {
                double fan_in = (double)(sh->dims[1] * sh->dims[2] * sh->dims[3]);
                float sd = (float)sqrt(2.0 / fan_in);
                for (int64_t k = 0; k < numel; k++)
                    w[k] = sd * ntc_rng_normal(&rng);
            } else if (n->op == NTC_OP_linear) {
                int64_t fan_in = g->values[n->in[0]].shape.dims[1];
                float bound = (float)(1.0 / sqrt((double)fan_in));
                for (int64_t k = 0; k < numel; k++)
                    w[k] = bound * (2 * ntc_rng_uniform(&rng) - 1);
            } else if (n->op == NTC_OP_batchnorm && (!strcmp(slot, "scale") || !strcmp(slot, "var"))) {
                for (int64_t k = 0; k < numel; k++)
                    w[k] = 1;
            }
        }
    }
    return 0;
}

int ntc_nt_replace_classifier(ntc_graph *g, long classes, ntc_err *err)
{
    int fc = -1;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].op == NTC_OP_linear)
            fc = i;
    if (fc < 0)
        return ntc_error(err, g->path, 0, "tailor: the backbone has no linear classifier");
    ntc_node old = g->nodes[fc];
    if (classes <= 0)
        classes = old.a.units;
    bool bias = old.par[1] >= 0;
    int in = old.in[0], old_out = old.out;
    /* The new classifier takes the old one's name: remove first, then add. */
    char name[512];
    snprintf(name, sizeof name, "%s", old.name);
    int new_fc = -1;
    ntc_graph_remove_node(g, fc);
    new_fc = ntc_graph_add_node(g, NTC_OP_linear, name, &in, 1, old.block);
    if (new_fc < 0)
        return ntc_error(err, g->path, 0, "out of memory");
    g->nodes[new_fc].a.units = (int)classes;
    if (ntc_node_add_param(g, new_fc, "weight", NULL) < 0 ||
        (bias && ntc_node_add_param(g, new_fc, "bias", NULL) < 0))
        return ntc_error(err, g->path, 0, "out of memory");
    ntc_graph_replace_uses(g, old_out, g->nodes[new_fc].out);
    return 0;
}

static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    long classes, seed;
    if (ntc_pass_opt_int(ctx, "classes", 0, &classes, err) || ntc_pass_opt_int(ctx, "seed", 1, &seed, err))
        return -1;
    if (classes < 0)
        return ntc_error(err, NULL, 0, "new-head: classes must be positive, got %ld", classes);
    int first_new_value = g->n_values;
    if (ntc_nt_replace_classifier(g, classes, err) || ntc_graph_infer_shapes(g, err) ||
        ntc_nt_init_params(g, first_new_value, (uint64_t)seed, err))
        return -1;
    ntc_graph_compact(g);
    return 1;
}

static const ntc_pass_option options[] = {
    {"classes", "outputs of the new classifier (default: as the old one's)"},
    {"seed", "seed of the new weights (default 1)"},
    {NULL, NULL},
};

const ntc_pass ntc_pass_new_head = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "new-head",
    .description = "replace the classifier (last linear node) by a fresh one with N classes",
    .modes = NTC_PASS_TRAINING,
    .fixed_point = false,
    .options = options,
    .run = run,
};
