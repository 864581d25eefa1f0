/* NetTailor's training terms (DESIGN.md, stage 2): distillation from a
 * teacher with a stop-gradient per layer, and the expected complexity.
 *
 *     L = L_ce + lambda_t * L_t + lambda_c * E[C]
 *     L_t = (1/L) sum_l MSE(x_l, t_l) + MSE(z, z_teacher)
 *
 * Each layer's MSE is a local term of the trainer (ntc/train.h) on the
 * layer's output x_l whose scope is the layer itself: its mix node, the
 * nodes of its branch blocks and its relu.  So the term trains the
 * layer's proxies and alphas and treats the layer's inputs as constants,
 * as the reference implementation does by running every layer a second
 * time on detached inputs; here each layer runs once and only the
 * backward of its scope is repeated.  The logits term is a local term
 * whose scope is the head (every node downstream of the last layer's
 * output; the whole graph when there are no layers).
 *
 * The teacher is a clone of the teacher graph with the layer outputs
 * (found by the student's value names) added as graph outputs, run in
 * inference mode by the forward executor on the same batch. */
#include "ntc/train.h"
#include "ntc/nettailor.h"
#include "ntc/runtime.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    int value;                   /* student value */
    int teacher_out;             /* teacher graph output index */
    int term;                    /* trainer local term */
    float weight;                /* of this term's MSE in L (lambda_t / L or lambda_t) */
} distill_term;

struct ntc_distill {
    ntc_trainer *tr;
    ntc_graph *g;
    ntc_nt_model *m;
    double lambda_t, lambda_c;
    ntc_graph *teacher;          /* the clone, NULL without a teacher */
    ntc_exec *tx;
    int n_terms;
    distill_term *terms;
    float **ec_grad;             /* per layer: dE[C]/dlogits */
};

/* The scope of layer l: mix, branch blocks, and the nodes from the mix to
 * the layer output (the relu). */
static int layer_scope(const ntc_graph *g, const ntc_nt_layer *l, int *scope)
{
    int n = 0;
    scope[n++] = l->mix;
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *nd = &g->nodes[i];
        if (nd->dead || nd->block < 0)
            continue;
        for (int j = 0; j < l->n_branches; j++)
            if (nd->block == l->br[j].block) {
                scope[n++] = i;
                break;
            }
    }
    /* Walk back from the output to the mix (a relu, possibly nothing). */
    for (int v = l->out; v >= 0 && g->values[v].producer >= 0 && g->values[v].producer != l->mix;) {
        const ntc_node *nd = &g->nodes[g->values[v].producer];
        scope[n++] = g->values[v].producer;
        v = nd->n_in == 1 ? nd->in[0] : -1;
    }
    return n;
}

/* Nodes downstream of value `from` (every live node when from < 0). */
static int head_scope(const ntc_graph *g, int from, int *scope, ntc_err *err)
{
    int *order = ntc_malloc(sizeof(int) * ((size_t)g->n_nodes + 1));
    bool *reached = ntc_calloc((size_t)g->n_values + 1, sizeof(bool));
    int n = -1;
    if (!order || !reached) {
        ntc_error(err, g->path, 0, "out of memory");
        goto done;
    }
    int count = ntc_graph_topo_order(g, order, err);
    if (count < 0)
        goto done;
    if (from >= 0)
        reached[from] = true;
    n = 0;
    for (int k = 0; k < count; k++) {
        const ntc_node *nd = &g->nodes[order[k]];
        if (nd->dead)
            continue;
        bool in = from < 0;
        for (int j = 0; j < nd->n_in; j++)
            in |= reached[nd->in[j]];
        if (in) {
            reached[nd->out] = true;
            scope[n++] = order[k];
        }
    }
done:
    ntc_free(order);
    ntc_free(reached);
    return n;
}

/* Makes the teacher's value named like student value v an output of the
 * teacher clone; its index into *out.  The shapes must agree. */
static int teacher_output(ntc_distill *d, int v, int *out, ntc_err *err)
{
    const ntc_value *sv = &d->g->values[v];
    int tv = ntc_graph_find_value(d->teacher, sv->name);
    if (tv < 0)
        return ntc_error(err, d->teacher->path, 0, "the teacher has no value '%s' (the student's layer output)",
                         sv->name);
    const ntc_value *t = &d->teacher->values[tv];
    char a[128], b[128];
    ntc_shape_format(&sv->shape, a, sizeof a);
    ntc_shape_format(&t->shape, b, sizeof b);
    if (strcmp(a, b))
        return ntc_error(err, d->teacher->path, 0, "teacher value '%s' is [%s], the student's [%s]", sv->name, b, a);
    char name[512];
    snprintf(name, sizeof name, "distill.%s", sv->name);
    if (ntc_graph_add_output(d->teacher, name, tv) < 0)
        return ntc_error(err, d->teacher->path, 0, "out of memory");
    *out = d->teacher->n_outputs - 1;
    return 0;
}

static int add_term(ntc_distill *d, int v, const int *scope, int n, float weight, ntc_err *err)
{
    distill_term *t = &d->terms[d->n_terms];
    t->value = v;
    t->weight = weight;
    if (teacher_output(d, v, &t->teacher_out, err))
        return -1;
    if ((t->term = ntc_trainer_add_local(d->tr, v, scope, n, err)) < 0)
        return -1;
    d->n_terms++;
    return 0;
}

static int setup_teacher(ntc_distill *d, const ntc_graph *teacher, int max_batch, int threads, ntc_err *err)
{
    ntc_graph *g = d->g;
    if (!(d->teacher = ntc_graph_clone(teacher)) ||
        !(d->terms = ntc_calloc((size_t)d->m->n_layers + 1, sizeof(distill_term))))
        return ntc_error(err, g->path, 0, "out of memory");
    if (ntc_graph_infer_shapes(d->teacher, err))
        return -1;
    if (d->teacher->n_inputs != 1 || d->teacher->n_outputs < 1)
        return ntc_error(err, teacher->path, 0, "the teacher needs one input and its logits as first output");
    int *scope = ntc_malloc(sizeof(int) * ((size_t)g->n_nodes + 1));
    if (!scope)
        return ntc_error(err, g->path, 0, "out of memory");
    int L = d->m->n_layers, rc = -1;
    for (int l = 0; l < L; l++) {
        const ntc_nt_layer *ly = &d->m->layers[l];
        int n = layer_scope(g, ly, scope);
        if (add_term(d, ly->out, scope, n, (float)(d->lambda_t / L), err))
            goto done;
    }
    int logits = g->outputs[0].value;
    int n = head_scope(g, L ? d->m->layers[L - 1].out : -1, scope, err);
    if (n < 0)
        goto done;
    /* The logits term compares with the teacher's own first output. */
    distill_term *t = &d->terms[d->n_terms];
    t->value = logits;
    t->weight = (float)d->lambda_t;
    t->teacher_out = 0;
    const ntc_shape *ts = &d->teacher->values[d->teacher->outputs[0].value].shape;
    const ntc_shape *ss = &g->values[logits].shape;
    if (ts->rank != 2 || ts->dims[1] != ss->dims[1]) {
        ntc_error(err, teacher->path, 0, "the teacher's logits have %lld classes, the student's %lld",
                  (long long)(ts->rank == 2 ? ts->dims[1] : 0), (long long)ss->dims[1]);
        goto done;
    }
    if ((t->term = ntc_trainer_add_local(d->tr, logits, scope, n, err)) < 0)
        goto done;
    d->n_terms++;
    if (!(d->tx = ntc_exec_new_threads(d->teacher, max_batch, threads, err)))
        goto done;
    rc = 0;
done:
    ntc_free(scope);
    return rc;
}

ntc_distill *ntc_distill_new(ntc_trainer *t, const ntc_graph *teacher, double lambda_t,
                             double lambda_c, int max_batch, int threads, ntc_err *err)
{
    ntc_graph *g = ntc_trainer_graph(t);
    ntc_distill *d = ntc_calloc(1, sizeof *d);
    if (!d) {
        ntc_error(err, g->path, 0, "out of memory");
        return NULL;
    }
    d->tr = t;
    d->g = g;
    d->lambda_t = lambda_t;
    d->lambda_c = lambda_c;
    if (!(d->m = ntc_nt_analyze(g, err)))
        goto fail;
    if (!(d->ec_grad = ntc_calloc((size_t)d->m->n_layers + 1, sizeof(float *)))) {
        ntc_error(err, g->path, 0, "out of memory");
        goto fail;
    }
    for (int l = 0; l < d->m->n_layers; l++)
        if (!(d->ec_grad[l] = ntc_calloc((size_t)d->m->layers[l].n_branches, sizeof(float)))) {
            ntc_error(err, g->path, 0, "out of memory");
            goto fail;
        }
    if (teacher && setup_teacher(d, teacher, max_batch, threads, err))
        goto fail;
    return d;
fail:
    ntc_distill_free(d);
    return NULL;
}

void ntc_distill_free(ntc_distill *d)
{
    if (!d)
        return;
    ntc_exec_free(d->tx);
    ntc_graph_free(d->teacher);
    for (int l = 0; d->m && d->ec_grad && l < d->m->n_layers; l++)
        ntc_free(d->ec_grad[l]);
    ntc_free(d->ec_grad);
    ntc_nt_free(d->m);
    ntc_free(d->terms);
    ntc_free(d);
}

int ntc_distill_forward(ntc_distill *d, const float *const *inputs, int batch, double *lt,
                        ntc_err *err)
{
    *lt = 0.0;
    if (!d->tx)
        return 0;
    if (ntc_exec_run(d->tx, inputs, batch, err))
        return -1;
    int L = d->m->n_layers;
    for (int k = 0; k < d->n_terms; k++) {
        const distill_term *t = &d->terms[k];
        int64_t count = batch * ntc_shape_numel(&d->g->values[t->value].shape);
        double mse = ntc_loss_mse(ntc_trainer_value(d->tr, t->value), ntc_exec_output(d->tx, t->teacher_out), count,
                                  t->weight, ntc_trainer_local_grad(d->tr, t->term));
        /* Layers are averaged, the logits term is added whole. */
        *lt += k < L ? mse / L : mse;
    }
    return 0;
}

double ntc_distill_complexity(ntc_distill *d, bool add_grad)
{
    if (!d->m->n_layers)
        return 0.0;
    double ec = ntc_nt_expected_complexity(d->m, d->g, add_grad ? d->ec_grad : NULL);
    for (int l = 0; add_grad && l < d->m->n_layers; l++) {
        int i = ntc_trainer_param_index(d->tr, d->m->layers[l].alpha);
        if (i < 0)
            continue;
        float *gr = ntc_trainer_grad(d->tr, i);
        for (int j = 0; j < d->m->layers[l].n_branches; j++)
            gr[j] += (float)d->lambda_c * d->ec_grad[l][j];
    }
    return ec;
}

int ntc_distill_layers(const ntc_distill *d) { return d->m->n_layers; }
