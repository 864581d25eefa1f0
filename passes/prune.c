/* prune: NetTailor's third stage, on a tailored and trained graph.
 *
 * Excludes (alpha = softmax over a layer's current branches):
 *   - every proxy whose alpha is <= `proxy-threshold`, and every universal
 *     block whose alpha is <= `universal-threshold`;
 *   - then the `universal` universal blocks with the lowest alpha, lowest
 *     first, skipping any whose removal would leave a layer the network
 *     needs (the one the classifier reads) without branches: a network
 *     cannot lose its output, so such a block stays and the pass says so.
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
    bool **cut;                  /* per layer, per branch: excluded (rows of cut_flat) */
    bool *cut_flat, *saved_cut;  /* n_branches_total entries */
    bool *dead, *saved_dead;     /* per layer */
    int n_branches;              /* over all layers */
} prune_state;

static void state_free(prune_state *s)
{
    if (s->m)
            for (int l = 0; l < s->m->n_layers; l++)
            ntc_free(s->alpha ? s->alpha[l] : NULL);
    ntc_free(s->alpha);
    ntc_free(s->cut);
    ntc_free(s->cut_flat);
    ntc_free(s->saved_cut);
    ntc_free(s->dead);
    ntc_free(s->saved_dead);
    ntc_nt_free(s->m);
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

static void settle(prune_state *s)
{
    while (propagate(s))
        ;
}

/* A layer the network needs (read by the classifier or a graph output) is dead. */
static int needed_layer_dead(const prune_state *s)
{
    for (int l = 0; l < s->m->n_layers; l++)
        if (s->dead[l] && s->m->layers[l].fixed_reader)
            return l;
    return -1;
}

/* Cuts the n lowest-alpha universal blocks, lowest first, skipping any
 * whose removal (after propagation) would kill a layer the network needs:
 * removing it would disconnect the classifier.  Returns how many it cut;
 * the skipped ones are reported on ctx's output. */
static long cut_lowest_universal(prune_state *s, long n, const ntc_pass_ctx *ctx)
{
    size_t nb = (size_t)s->n_branches, nl = (size_t)s->m->n_layers;
    long done = 0;
    double floor_alpha = -1;
    int floor_l = -1, floor_b = -1;
    while (done < n) {
        /* the next candidate: lowest alpha above the last one tried */
        int bl = -1, bb = -1;
        for (int l = 0; l < s->m->n_layers; l++)
            for (int b = 0; b < s->m->layers[l].n_branches; b++) {
                double a = s->alpha[l][b];
                bool after = a > floor_alpha || (a == floor_alpha && (l > floor_l || (l == floor_l && b > floor_b)));
                if (s->m->layers[l].br[b].universal && !s->cut[l][b] && after &&
                    (bl < 0 || a < s->alpha[bl][bb]))
                    bl = l, bb = b;
            }
        if (bl < 0)
            break;
        floor_alpha = s->alpha[bl][bb], floor_l = bl, floor_b = bb;
        memcpy(s->saved_cut, s->cut_flat, nb);
        memcpy(s->saved_dead, s->dead, nl);
        s->cut[bl][bb] = true;
        settle(s);
        if (needed_layer_dead(s) >= 0) {
            memcpy(s->cut_flat, s->saved_cut, nb);
            memcpy(s->dead, s->saved_dead, nl);
            fprintf(ntc_pass_out(ctx), "prune: kept universal block of layer '%s' (alpha %.3f): removing it "
                    "would disconnect the classifier\n", s->m->layers[bl].name, s->alpha[bl][bb]);
            continue;
        }
        done++;
    }
    return done;
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
    for (int l = 0; l < L; l++)
        s.n_branches += s.m->layers[l].n_branches;
    s.alpha = ntc_calloc((size_t)L, sizeof(double *));
    s.cut = ntc_calloc((size_t)L, sizeof(bool *));
    s.cut_flat = ntc_calloc((size_t)s.n_branches + 1, sizeof(bool));
    s.saved_cut = ntc_calloc((size_t)s.n_branches + 1, sizeof(bool));
    s.dead = ntc_calloc((size_t)L, sizeof(bool));
    s.saved_dead = ntc_calloc((size_t)L, sizeof(bool));
    if (!s.alpha || !s.cut || !s.cut_flat || !s.saved_cut || !s.dead || !s.saved_dead)
        goto oom;
    for (int l = 0, at = 0; l < L; l++) {
        int nb = s.m->layers[l].n_branches;
        if (nb > 64) {
            ntc_node_error(err, g, s.m->layers[l].mix, "more than 64 branches");
            goto done;
        }
        s.alpha[l] = ntc_calloc((size_t)nb, sizeof(double));
        if (!s.alpha[l])
            goto oom;
        s.cut[l] = s.cut_flat + at;
        at += nb;
        ntc_nt_alphas(g, &s.m->layers[l], s.alpha[l]);
        for (int b = 0; b < nb; b++) {
            double thr = s.m->layers[l].br[b].universal ? u_thr : p_thr;
            s.cut[l][b] = s.alpha[l][b] <= thr;
        }
    }
    settle(&s);
    int dead_needed = needed_layer_dead(&s);
    if (dead_needed >= 0) {
        ntc_node_error(err, g, s.m->layers[dead_needed].mix,
                       "the thresholds remove every branch of layer '%s', whose output the network needs; "
                       "lower the thresholds", s.m->layers[dead_needed].name);
        goto done;
    }
    cut_lowest_universal(&s, n_universal, ctx);
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
