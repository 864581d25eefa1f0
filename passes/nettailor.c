/* NetTailor structure analysis and the expected complexity E[C]
 * (see ntc/nettailor.h for the formulas). */
#include "ntc/nettailor.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t ntc_graph_macs(const ntc_graph *g)
{
    int64_t total = 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead)
            total += ntc_node_macs(g, i);
    return total;
}

void ntc_nt_free(ntc_nt_model *m)
{
    if (!m)
        return;
    for (int l = 0; l < m->n_layers; l++)
        ntc_free(m->layers[l].br);
    ntc_free(m->layers);
    ntc_free(m);
}

/* The one value block b reads from outside itself, or -1 (none or several). */
static int block_source(const ntc_graph *g, int b)
{
    int src = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead || n->block != b)
            continue;
        for (int j = 0; j < n->n_in; j++) {
            int p = g->values[n->in[j]].producer;
            if (p >= 0 && g->nodes[p].block == b)
                continue;
            if (src >= 0 && src != n->in[j])
                return -1;
            src = n->in[j];
        }
    }
    return src;
}

/* The layer output: the relu that is the mix's only reader, else the mix. */
static int layer_output(const ntc_graph *g, int mix)
{
    int out = g->nodes[mix].out, reader = -1, readers = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] == out) {
                reader = i;
                readers++;
            }
    }
    if (readers == 1 && g->nodes[reader].op == NTC_OP_relu && g->nodes[reader].block < 0)
        return g->nodes[reader].out;
    return out;
}

ntc_nt_model *ntc_nt_analyze(const ntc_graph *g, ntc_err *err)
{
    ntc_nt_model *m = ntc_calloc(1, sizeof *m);
    int *order = ntc_malloc(sizeof(int) * ((size_t)g->n_nodes + 1));
    if (!m || !order) {
        ntc_free(order);
        ntc_free(m);
        ntc_error(err, g->path, 0, "out of memory");
        return NULL;
    }
    int count = ntc_graph_topo_order(g, order, err);
    if (count < 0)
        goto fail;
    int n_mix = 0;
    for (int k = 0; k < count; k++)
        n_mix += g->nodes[order[k]].op == NTC_OP_mix;
    m->layers = ntc_calloc((size_t)n_mix + 1, sizeof(ntc_nt_layer));
    if (!m->layers)
        goto oom;
    for (int k = 0; k < count; k++) {
        const ntc_node *mix = &g->nodes[order[k]];
        if (mix->op != NTC_OP_mix)
            continue;
        ntc_nt_layer *l = &m->layers[m->n_layers++];
        l->mix = order[k];
        l->out = layer_output(g, order[k]);
        l->alpha = mix->par[0];
        l->name = mix->name;
        l->n_branches = mix->n_in;
        l->br = ntc_calloc((size_t)mix->n_in, sizeof(ntc_nt_branch));
        if (!l->br)
            goto oom;
        for (int j = 0; j < mix->n_in; j++) {
            ntc_nt_branch *b = &l->br[j];
            b->value = mix->in[j];
            int p = g->values[b->value].producer;
            b->block = p >= 0 ? g->nodes[p].block : -1;
            if (b->block < 0) {
                ntc_error(err, g->path, mix->line, "mix '%s': input %d is not produced by a block",
                          mix->name, j + 1);
                goto fail;
            }
            b->universal = g->blocks[b->block].role == NTC_ROLE_UNIVERSAL;
            /* The layer's name: its blocks' layer attribute (set by the
             * tailor pass; survives the universal block's pruning), else
             * the universal block's name, else the mix node's. */
            if (g->blocks[b->block].layer)
                l->name = g->blocks[b->block].layer;
            else if (b->universal && l->name == mix->name)
                l->name = g->blocks[b->block].name;
            b->src_value = block_source(g, b->block);
            if (b->src_value < 0) {
                ntc_error(err, g->path, g->blocks[b->block].line,
                          "block '%s' must read exactly one value from outside itself",
                          g->blocks[b->block].name);
                goto fail;
            }
            b->src_layer = -1;
            for (int i = 0; i < g->n_nodes; i++)
                if (!g->nodes[i].dead && g->nodes[i].block == b->block) {
                    b->macs += ntc_node_macs(g, i);
                    b->params += ntc_node_params(g, i);
                }
        }
    }
    /* Link sources to layers, and find layers read from outside the branches. */
    for (int l = 0; l < m->n_layers; l++)
        for (int j = 0; j < m->layers[l].n_branches; j++)
            for (int s = 0; s < m->n_layers; s++)
                if (m->layers[l].br[j].src_value == m->layers[s].out)
                    m->layers[l].br[j].src_layer = s;
    for (int s = 0; s < m->n_layers; s++) {
        ntc_nt_layer *ls = &m->layers[s];
        for (int o = 0; o < g->n_outputs; o++)
            ls->fixed_reader |= g->outputs[o].value == ls->out;
        for (int i = 0; i < g->n_nodes && !ls->fixed_reader; i++) {
            const ntc_node *n = &g->nodes[i];
            if (n->dead)
                continue;
            for (int j = 0; j < n->n_in; j++) {
                if (n->in[j] != ls->out)
                    continue;
                bool in_branch = false;
                for (int l = 0; l < m->n_layers && !in_branch; l++)
                    for (int b = 0; b < m->layers[l].n_branches; b++)
                        if (m->layers[l].br[b].block == n->block && n->block >= 0)
                            in_branch = true;
                if (!in_branch)
                    ls->fixed_reader = true;
            }
        }
    }
    const char *bm = ntc_graph_get_meta(g, NTC_META_BACKBONE_MACS);
    m->backbone_macs = bm ? strtoll(bm, NULL, 10) : 0;
    if (m->backbone_macs <= 0)
        m->backbone_macs = ntc_graph_macs(g);
    for (int l = 0; l < m->n_layers; l++)
        for (int j = 0; j < m->layers[l].n_branches; j++)
            m->layers[l].br[j].cost = m->backbone_macs > 0
                ? (double)m->layers[l].br[j].macs / (double)m->backbone_macs : 0;
    ntc_free(order);
    return m;
oom:
    ntc_error(err, g->path, 0, "out of memory");
fail:
    ntc_free(order);
    ntc_nt_free(m);
    return NULL;
}

void ntc_nt_alphas(const ntc_graph *g, const ntc_nt_layer *l, double *out)
{
    const float *z = g->values[l->alpha].data;
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < l->n_branches; j++)
        mx = fmax(mx, z ? z[j] : 0);
    for (int j = 0; j < l->n_branches; j++)
        sum += out[j] = exp((z ? z[j] : 0) - mx);
    for (int j = 0; j < l->n_branches; j++)
        out[j] /= sum;
}

/* prod over branches of layer s of (1 - alpha), leaving out branch `skip`
 * (-1: none). */
static double prod_off(const ntc_nt_layer *ls, double *const *alpha, int s, int skip)
{
    double p = 1;
    for (int k = 0; k < ls->n_branches; k++)
        if (k != skip)
            p *= 1 - alpha[s][k];
    return p;
}

/* P_out(i) leaving out reader (rl, rb) (rl = -1: none). */
static double p_out(const ntc_nt_model *m, double *const *alpha, int i, int rl, int rb)
{
    if (m->layers[i].fixed_reader)
        return 0;
    double p = 1;
    for (int l = 0; l < m->n_layers; l++)
        for (int b = 0; b < m->layers[l].n_branches; b++)
            if (m->layers[l].br[b].src_layer == i && !(l == rl && b == rb))
                p *= 1 - alpha[l][b];
    return p;
}

double ntc_nt_expected_complexity(const ntc_nt_model *m, const ntc_graph *g, float *const *grad)
{
    int L = m->n_layers, maxb = 1;
    for (int l = 0; l < L; l++)
        maxb = m->layers[l].n_branches > maxb ? m->layers[l].n_branches : maxb;
    /* Small: layers * branches doubles on the stack would do, but the
     * number of layers is unbounded, so one allocation. */
    double *buf = ntc_malloc(sizeof(double) * (size_t)(2 * L * maxb + 1));
    double **alpha = ntc_malloc(sizeof(double *) * (size_t)(2 * L + 1));
    if (!buf || !alpha) {
        ntc_free(buf);
        ntc_free(alpha);
        return NAN;
    }
    double **dalpha = alpha + L;
    for (int l = 0; l < L; l++) {
        alpha[l] = buf + (size_t)l * maxb;
        dalpha[l] = buf + (size_t)(L + l) * maxb;
        ntc_nt_alphas(g, &m->layers[l], alpha[l]);
        for (int j = 0; j < maxb; j++)
            dalpha[l][j] = 0;
    }
    double e = 0;
    for (int i = 0; i < L; i++) {
        const ntc_nt_layer *li = &m->layers[i];
        double pout = p_out(m, alpha, i, -1, -1);
        for (int j = 0; j < li->n_branches; j++) {
            const ntc_nt_branch *b = &li->br[j];
            int s = b->src_layer;
            double pin = s >= 0 ? prod_off(&m->layers[s], alpha, s, -1) : 0;
            e += b->cost * (alpha[i][j] - pin - pout);
            if (!grad)
                continue;
            /* d/d alpha_ij of the self term */
            dalpha[i][j] += b->cost;
            /* d/d alpha_sk of -c_ij * P_in: + c_ij * prod_{k' != k} (1 - alpha_sk') */
            if (s >= 0)
                for (int k = 0; k < m->layers[s].n_branches; k++)
                    dalpha[s][k] += b->cost * prod_off(&m->layers[s], alpha, s, k);
            /* d/d alpha_r of -c_ij * P_out(i), r any branch reading x_i */
            if (!li->fixed_reader)
                for (int l = 0; l < L; l++)
                    for (int r = 0; r < m->layers[l].n_branches; r++)
                        if (m->layers[l].br[r].src_layer == i)
                            dalpha[l][r] += b->cost * p_out(m, alpha, i, l, r);
        }
    }
    if (grad) {
        /* Through the softmax: dz_k = a_k (da_k - sum_m a_m da_m). */
        for (int l = 0; l < L; l++) {
            double dot = 0;
            for (int k = 0; k < m->layers[l].n_branches; k++)
                dot += alpha[l][k] * dalpha[l][k];
            for (int k = 0; k < m->layers[l].n_branches; k++)
                grad[l][k] = (float)(alpha[l][k] * (dalpha[l][k] - dot));
        }
    }
    ntc_free(buf);
    ntc_free(alpha);
    return e;
}
