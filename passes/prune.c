/* prune: NetTailor's third stage, on a tailored and trained graph.
 *
 * Excludes (alpha = softmax over a layer's current branches):
 *   - the `universal` universal blocks with the lowest alpha, and any whose
 *     alpha is <= `universal-threshold`;
 *   - every proxy whose alpha is <= `proxy-threshold`.
 * Then propagates until nothing changes:
 *   - a layer with no kept branch is dead, and so is every branch that
 *     reads its output;
 *   - a layer whose output no kept branch reads (and nothing else, such as
 *     the classifier) is dead: its branches go too.
 * Finally the excluded blocks' nodes are removed, each mix keeps the
 * inputs and alpha logits of its kept branches (the softmax renormalises
 * over them), dead layers lose their mix and relu, and every removed
 * branch is recorded in the metadata (nettailor.pruned.BLOCK = "layer=..
 * reads=.. role=.. alpha=.. macs=.. params=..") so `ntc stats` and `ntc
 * dot` can still show it.  Run dce afterwards to drop what was left unread. */
#include "ntc/nettailor.h"
#include "ntc/pass.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    ntc_nt_model *m;
    double **alpha;              /* per layer, per branch */
    bool **cut;                  /* per layer, per branch: excluded */
    bool *dead;                  /* per layer */
} prune_state;

static void state_free(prune_state *s)
{
    if (s->m)
        for (int l = 0; l < s->m->n_layers; l++) {
            ntc_free(s->alpha ? s->alpha[l] : NULL);
            ntc_free(s->cut ? s->cut[l] : NULL);
        }
    ntc_free(s->alpha);
    ntc_free(s->cut);
    ntc_free(s->dead);
    ntc_nt_free(s->m);
}

/* Marks the n kept universal branches with the lowest alpha as cut. */
static void cut_lowest_universal(prune_state *s, long n)
{
    for (long k = 0; k < n; k++) {
        int bl = -1, bb = -1;
        for (int l = 0; l < s->m->n_layers; l++)
            for (int b = 0; b < s->m->layers[l].n_branches; b++)
                if (s->m->layers[l].br[b].universal && !s->cut[l][b] &&
                    (bl < 0 || s->alpha[l][b] < s->alpha[bl][bb]))
                    bl = l, bb = b;
        if (bl < 0)
            return;
        s->cut[bl][bb] = true;
    }
}

/* One round of propagation; returns whether anything changed. */
static bool propagate(prune_state *s)
{
    bool changed = false;
    ntc_nt_model *m = s->m;
    for (int l = 0; l < m->n_layers; l++) {
        if (s->dead[l])
            continue;
        bool any_kept = false, read = m->layers[l].fixed_reader;
        for (int b = 0; b < m->layers[l].n_branches; b++)
            any_kept |= !s->cut[l][b];
        for (int r = 0; r < m->n_layers && !read; r++)
            for (int b = 0; b < m->layers[r].n_branches; b++)
                if (m->layers[r].br[b].src_layer == l && !s->cut[r][b] && !s->dead[r])
                    read = true;
        if (!any_kept || !read) {
            s->dead[l] = changed = true;
            for (int b = 0; b < m->layers[l].n_branches; b++)
                s->cut[l][b] = true;
        }
    }
    for (int l = 0; l < m->n_layers; l++)
        for (int b = 0; b < m->layers[l].n_branches; b++) {
            int src = m->layers[l].br[b].src_layer;
            if (src >= 0 && s->dead[src] && !s->cut[l][b])
                s->cut[l][b] = changed = true;
        }
    return changed;
}

static int record(ntc_graph *g, const ntc_nt_layer *l, const ntc_nt_branch *b, double alpha)
{
    char key[600], val[1024];
    const ntc_block *blk = &g->blocks[b->block];
    snprintf(key, sizeof key, "%s%s", NTC_META_PRUNED, blk->name);
    snprintf(val, sizeof val, "layer=%s reads=%s role=%s alpha=%.6g macs=%" PRId64 " params=%" PRId64,
             l->name, b->src_value >= 0 ? g->values[b->src_value].name : "?",
             ntc_role_name(blk->role), alpha, b->macs, b->params);
    return ntc_graph_set_meta(g, key, val);
}

static int apply(ntc_graph *g, prune_state *s, ntc_err *err)
{
    ntc_nt_model *m = s->m;
    int changed = 0;
    for (int l = 0; l < m->n_layers; l++) {
        ntc_nt_layer *ly = &m->layers[l];
        int kept[64], n_kept = 0;
        float logits[64];
        const float *z = g->values[ly->alpha].data;
        for (int b = 0; b < ly->n_branches; b++) {
            if (!s->cut[l][b]) {
                if (n_kept < 64) {
                    logits[n_kept] = z ? z[b] : 0;
                    kept[n_kept++] = ly->br[b].value;
                }
                continue;
            }
            changed = 1;
            if (record(g, ly, &ly->br[b], s->alpha[l][b]))
                return ntc_error(err, NULL, 0, "out of memory");
            for (int i = 0; i < g->n_nodes; i++)
                if (!g->nodes[i].dead && g->nodes[i].block == ly->br[b].block)
                    ntc_graph_remove_node(g, i);
            g->blocks[ly->br[b].block].dead = true;
        }
        if (n_kept == ly->n_branches)
            continue;
        if (s->dead[l]) {
            /* The relu (if any) and the mix go; dce removes what only they read. */
            int relu = g->values[ly->out].producer;
            if (relu != ly->mix)
                ntc_graph_remove_node(g, relu);
            ntc_graph_remove_node(g, ly->mix);
            continue;
        }
        if (ntc_node_set_inputs(g, ly->mix, kept, n_kept))
            return ntc_error(err, NULL, 0, "out of memory");
        g->values[ly->alpha].shape = (ntc_shape){1, {n_kept}};
        float *a = ntc_param_data_alloc(g, ly->alpha, err);
        if (!a)
            return -1;
        memcpy(a, logits, sizeof(float) * (size_t)n_kept);
    }
    return changed;
}

static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    long n_universal;
    double u_thr, p_thr;
    if (ntc_pass_opt_int(ctx, "universal", 0, &n_universal, err) ||
        ntc_pass_opt_double(ctx, "universal-threshold", -1, &u_thr, err) ||
        ntc_pass_opt_double(ctx, "proxy-threshold", 0.075, &p_thr, err))
        return -1;
    if (n_universal < 0)
        return ntc_error(err, NULL, 0, "prune: universal must be >= 0, got %ld", n_universal);
    prune_state s = {0};
    s.m = ntc_nt_analyze(g, err);
    if (!s.m)
        return -1;
    int L = s.m->n_layers, rc = -1;
    if (L == 0) {
        ntc_error(err, g->path, 0, "prune: the graph has no NetTailor layers (run the tailor pass first)");
        goto done;
    }
    s.alpha = ntc_calloc((size_t)L, sizeof(double *));
    s.cut = ntc_calloc((size_t)L, sizeof(bool *));
    s.dead = ntc_calloc((size_t)L, sizeof(bool));
    if (!s.alpha || !s.cut || !s.dead)
        goto oom;
    for (int l = 0; l < L; l++) {
        int nb = s.m->layers[l].n_branches;
        if (nb > 64) {
            ntc_node_error(err, g, s.m->layers[l].mix, "more than 64 branches");
            goto done;
        }
        s.alpha[l] = ntc_calloc((size_t)nb, sizeof(double));
        s.cut[l] = ntc_calloc((size_t)nb, sizeof(bool));
        if (!s.alpha[l] || !s.cut[l])
            goto oom;
        ntc_nt_alphas(g, &s.m->layers[l], s.alpha[l]);
        for (int b = 0; b < nb; b++) {
            double thr = s.m->layers[l].br[b].universal ? u_thr : p_thr;
            s.cut[l][b] = s.alpha[l][b] <= thr;
        }
    }
    cut_lowest_universal(&s, n_universal);
    while (propagate(&s))
        ;
    for (int l = 0; l < L; l++)
        if (s.dead[l] && s.m->layers[l].fixed_reader) {
            ntc_node_error(err, g, s.m->layers[l].mix,
                           "pruning removes every branch of layer '%s', whose output the network needs; "
                           "prune fewer universal blocks or lower the thresholds", s.m->layers[l].name);
            goto done;
        }
    rc = apply(g, &s, err);
    goto done;
oom:
    ntc_error(err, NULL, 0, "out of memory");
done:
    state_free(&s);
    return rc;
}

static const ntc_pass_option options[] = {
    {"universal", "remove this many universal blocks, lowest alpha first (default 0)"},
    {"universal-threshold", "also remove universal blocks with alpha <= this (default: none)"},
    {"proxy-threshold", "remove proxies with alpha <= this (default 0.075)"},
    {NULL, NULL},
};

const ntc_pass ntc_pass_prune = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "prune",
    .description = "NetTailor pruning: drop low-alpha blocks, propagate dead layers, renormalise alphas",
    .modes = NTC_PASS_ANY,
    .fixed_point = false,
    .options = options,
    .run = run,
};
