/* The backward kernels (runtime/grad_*.c) against central finite
 * differences of the forward kernels, for every op's inputs and
 * parameters over several shapes and attributes, plus batchnorm's
 * training-mode phases (runtime/bn_train.h) on a batch split into slices.
 *
 * The loss is L = sum_i w_i * out_i with fixed random w, so dL/d(out) = w.
 * Numerical gradient: (L(p + h) - L(p - h)) / 2h with L summed in double
 * from the float forward.  Only outputs that depend on p change between
 * the two forwards and the kernels are deterministic, so the float noise
 * is that of a few outputs; h = 1e-2 keeps it below 1e-3 of the gradient
 * while the truncation error (h^2/6 times a third derivative) stays
 * smaller still for inputs of magnitude ~1.  Kinks are kept more than h
 * away: relu inputs avoid (-0.1, 0.1), maxpool inputs are distinct values
 * 0.05 apart, so no perturbation changes which branch the forward takes.
 *
 * Every analytic gradient is taken by accumulating onto a random base
 * value, so a backward that overwrites instead of adding fails every check. */
#include "testutil.h"
#include "runtime/bn_train.h"
#include "runtime/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IN 8
#define STEP 1e-2
/* Most elements of one tensor checked by finite differences (evenly spread). */
#define MAX_PROBES 400

/* ---- one-node graphs --------------------------------------------------------------- */

typedef struct {
    ntc_graph *g;
    int node;
} one;

static ntc_node *node(one o) { return &o.g->nodes[o.node]; }

/* A graph with n_in inputs of shape `in` (batch symbolic) feeding one node. */
static one make(ntc_op op, const char *in, int n_in)
{
    one o = {ntc_graph_new("grad"), -1};
    ntc_shape s;
    ck_assert_int_eq(ntc_shape_parse(in, &s), 0);
    int ins[MAX_IN];
    for (int i = 0; i < n_in; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        ins[i] = ntc_graph_add_input(o.g, name, &s);
    }
    o.node = ntc_graph_add_node(o.g, op, "n", ins, n_in, -1);
    ck_assert_int_ge(o.node, 0);
    return o;
}

/* Adds the parameter slots (NULL-terminated), infers shapes and fills
 * every parameter with uniform values from [-1, 1). */
static void finish(one o, const char *const *slots, unsigned seed)
{
    for (int i = 0; slots && slots[i]; i++)
        ck_assert_int_ge(ntc_node_add_param(o.g, o.node, slots[i], NULL), 0);
    ntc_graph_add_output(o.g, "y", node(o)->out);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_infer_shapes(o.g, &err) == 0, "%s", ntc_err_str(&err));
    for (int p = 0; p < NTC_MAX_PARAMS; p++) {
        if (node(o)->par[p] < 0)
            continue;
        ntc_value *pv = &o.g->values[node(o)->par[p]];
        int64_t n = ntc_shape_numel(&pv->shape);
        pv->data = ntc_malloc(sizeof(float) * (size_t)n);
        pv->owned = true;
        for (int64_t i = 0; i < n; i++)
            pv->data[i] = tu_randf(&seed);
    }
}

static float *par_data(one o, int slot)
{
    return node(o)->par[slot] >= 0 ? o.g->values[node(o)->par[slot]].data : NULL;
}

static int64_t par_numel(one o, int slot)
{
    return ntc_shape_numel(&o.g->values[node(o)->par[slot]].shape);
}

static int64_t item_numel(one o, int v) { return ntc_shape_numel(&o.g->values[v].shape); }

/* ---- calling kernels on a slice of a batch -------------------------------------------- */

/* The arguments of one kernel call on items [b0, b0 + batch) of full-batch
 * arrays; k points into the struct, so it is filled in place. */
typedef struct {
    ntc_kargs k;
    const float *in[MAX_IN];
    ntc_shape in_shape[MAX_IN], par_shape[NTC_MAX_PARAMS];
    int64_t work_n;
} call;

static void call_init(call *c, one o, const float *const *in, float *out, int b0, int batch)
{
    const ntc_node *n = node(o);
    memset(c, 0, sizeof *c);
    ntc_shape item[MAX_IN];
    for (int j = 0; j < n->n_in; j++) {
        c->in_shape[j] = item[j] = o.g->values[n->in[j]].shape;
        c->in_shape[j].dims[0] = batch, item[j].dims[0] = 1;
        c->in[j] = in[j] + b0 * item_numel(o, n->in[j]);
    }
    c->k = (ntc_kargs){.node = n, .batch = batch, .n_in = n->n_in, .in = c->in,
                       .in_shape = c->in_shape, .par_shape = c->par_shape};
    for (int p = 0; p < NTC_MAX_PARAMS; p++)
        if (n->par[p] >= 0) {
            c->k.par[p] = o.g->values[n->par[p]].data;
            c->par_shape[p] = o.g->values[n->par[p]].shape;
        }
    c->k.out_shape = o.g->values[n->out].shape;
    c->k.out_shape.dims[0] = batch;
    c->k.out = out + b0 * item_numel(o, n->out);
    ntc_shape out1 = c->k.out_shape;
    out1.dims[0] = 1;
    c->work_n = ntc_kernels[n->op].work ? ntc_kernels[n->op].work(n, item, &out1) : 0;
    /* Exactly the promised size (at least one float for malloc), so ASan
     * catches a kernel that reaches past it. */
    c->k.work = malloc(sizeof(float) * (size_t)(c->work_n ? c->work_n : 1));
}

static void call_free(call *c) { free(c->k.work); }

static float *uniform(int64_t n, unsigned *seed)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++)
        p[i] = tu_randf(seed);
    return p;
}

/* ---- the generic check ----------------------------------------------------------------- */

typedef enum {
    FILL_UNIFORM,            /* [-1, 1) */
    FILL_AWAY_FROM_ZERO,     /* |x| in [0.1, 1): relu's kink out of reach */
    FILL_DISTINCT,           /* a shuffle of values 0.05 apart: no near-ties in any window */
} fill;

static float *make_input(int64_t n, fill how, unsigned *seed)
{
    float *x = uniform(n, seed);
    if (how == FILL_AWAY_FROM_ZERO) {
        for (int64_t i = 0; i < n; i++)
            x[i] = (x[i] < 0 ? -1.0f : 1.0f) * (0.1f + 0.9f * fabsf(x[i]));
    } else if (how == FILL_DISTINCT) {
        for (int64_t i = 0; i < n; i++)
            x[i] = 0.05f * (float)(i - n / 2);
        for (int64_t i = n - 1; i > 0; i--) {          /* Fisher-Yates */
            *seed = *seed * 1664525u + 1013904223u;
            int64_t j = (int64_t)((*seed >> 8) % (unsigned)(i + 1));
            float t = x[i];
            x[i] = x[j], x[j] = t;
        }
    }
    return x;
}

/* A node with its batch of inputs and the loss weights. */
typedef struct {
    one o;
    int batch;
    float *x[MAX_IN];
    float *w;                /* dL/d(out), one per output element */
    int64_t out_n;
} problem;

static problem problem_new(one o, int batch, fill how, unsigned seed)
{
    problem p = {.o = o, .batch = batch};
    for (int j = 0; j < node(o)->n_in; j++)
        p.x[j] = make_input(batch * item_numel(o, node(o)->in[j]), how, &seed);
    p.out_n = batch * item_numel(o, node(o)->out);
    p.w = uniform(p.out_n, &seed);
    return p;
}

static void problem_free(problem *p)
{
    for (int j = 0; j < node(p->o)->n_in; j++)
        free(p->x[j]);
    free(p->w);
    ntc_graph_free(p->o.g);
}

/* Runs the forward on the whole batch; returns the output (malloc'ed). */
static float *forward(const problem *p)
{
    float *out = malloc(sizeof(float) * (size_t)p->out_n);
    call c;
    call_init(&c, p->o, (const float *const *)p->x, out, 0, p->batch);
    ntc_kernels[node(p->o)->op].forward(&c.k);
    call_free(&c);
    return out;
}

static double loss(const problem *p)
{
    float *out = forward(p);
    double l = 0.0;
    for (int64_t i = 0; i < p->out_n; i++)
        l += (double)p->w[i] * out[i];
    free(out);
    return l;
}

/* The gradient buffers of one backward call: per input and per parameter
 * slot, NULL where not requested. */
typedef struct {
    float *in[MAX_IN];
    float *par[NTC_MAX_PARAMS];
} grads;

static void grads_free(grads *g)
{
    for (int j = 0; j < MAX_IN; j++)
        free(g->in[j]);
    for (int s = 0; s < NTC_MAX_PARAMS; s++)
        free(g->par[s]);
}

static int64_t in_numel(const problem *p, int j) { return p->batch * item_numel(p->o, node(p->o)->in[j]); }

/* Buffers for the requested gradients, each filled from `base`: a copy of
 * base's buffer when given, else zeros. */
static grads grads_alloc(const problem *p, bool want_in, bool want_par, const grads *base)
{
    grads g = {{0}};
    const ntc_node *n = node(p->o);
    for (int j = 0; want_in && j < n->n_in; j++) {
        size_t bytes = sizeof(float) * (size_t)in_numel(p, j);
        g.in[j] = calloc(1, bytes);
        if (base)
            memcpy(g.in[j], base->in[j], bytes);
    }
    for (int s = 0; want_par && s < NTC_MAX_PARAMS; s++)
        if (n->par[s] >= 0) {
            size_t bytes = sizeof(float) * (size_t)par_numel(p->o, s);
            g.par[s] = calloc(1, bytes);
            if (base)
                memcpy(g.par[s], base->par[s], bytes);
        }
    return g;
}

/* One backward call on the whole batch, accumulating into g; the arrays
 * themselves are passed as NULL when nothing of their kind is wanted. */
static void backward(const problem *p, grads *g, bool pass_in, bool pass_par)
{
    float *out = forward(p);
    call c;
    call_init(&c, p->o, (const float *const *)p->x, out, 0, p->batch);
    for (int64_t i = 0; i < c.work_n; i++)        /* the backward must not read the forward's scratch */
        c.k.work[i] = NAN;
    ntc_kernels[node(p->o)->op].backward(&c.k, p->w, pass_in ? g->in : NULL, pass_par ? g->par : NULL);
    call_free(&c);
    free(out);
}

/* The backward as a threaded executor calls it: items [0, 1) and [1, batch)
 * as two calls, each slice's input gradients at its place in g->in, each
 * slice's parameter gradients in a buffer of its own, summed into g->par
 * afterwards. */
static void backward_in_two_slices(const problem *p, grads *g)
{
    const ntc_node *n = node(p->o);
    float *out = forward(p);
    grads part[2];
    const int cut[3] = {0, 1, p->batch};
    for (int s = 0; s < 2; s++) {
        part[s] = grads_alloc(p, false, true, NULL);
        float *gin[MAX_IN] = {0};
        for (int j = 0; j < n->n_in; j++)
            gin[j] = g->in[j] + cut[s] * item_numel(p->o, n->in[j]);
        call c;
        call_init(&c, p->o, (const float *const *)p->x, out, cut[s], cut[s + 1] - cut[s]);
        ntc_kernels[n->op].backward(&c.k, p->w + cut[s] * item_numel(p->o, n->out), gin, part[s].par);
        call_free(&c);
    }
    for (int sl = 0; sl < NTC_MAX_PARAMS; sl++)
        for (int64_t i = 0; g->par[sl] && i < par_numel(p->o, sl); i++)
            g->par[sl][i] += part[0].par[sl][i] + part[1].par[sl][i];
    grads_free(&part[0]), grads_free(&part[1]);
    free(out);
}

/* |got - want| <= 1e-2 |want| + tol_abs * max(max |want|, 0.1) element by element. */
static void expect_grad(const float *got, const double *want, int64_t n, double tol_abs,
                        const char *what, const char *which)
{
    double scale = 0.1;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= 1e-2 * fabs(want[i]) + tol_abs * scale,
                      "%s, %s[%lld]: backward %.7g, expected %.7g", what, which, (long long)i,
                      got[i], want[i]);
}

/* Central differences of the loss with respect to every probed element of
 * v (n floats, modified in place and restored); compares with `ana`. */
static void check_fd(const problem *p, float *v, int64_t n, const float *ana, const char *what,
                     const char *which)
{
    int64_t stride = n > MAX_PROBES ? (n + MAX_PROBES - 1) / MAX_PROBES : 1;
    int64_t probes = (n + stride - 1) / stride;
    double *num = malloc(sizeof(double) * (size_t)probes);
    float *got = malloc(sizeof(float) * (size_t)probes);
    for (int64_t q = 0; q < probes; q++) {
        int64_t i = q * stride;
        const float keep = v[i];
        v[i] = keep + (float)STEP;
        double hi = loss(p);
        v[i] = keep - (float)STEP;
        double lo = loss(p);
        v[i] = keep;
        /* the step actually taken in float */
        double h2 = (double)(keep + (float)STEP) - (double)(keep - (float)STEP);
        num[q] = (hi - lo) / h2;
        got[q] = ana[i];
    }
    expect_grad(got, num, probes, 2e-3, what, which);
    free(num), free(got);
}

static void expect_same(const float *got, const float *want, int64_t n, double factor,
                        const char *what, const char *which)
{
    double *w = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        w[i] = factor * want[i];
    expect_grad(got, w, n, 1e-5, what, which);
    free(w);
}

/* The whole check for one node: the gradient of every input and every
 * parameter against finite differences; accumulation onto a random base;
 * the same values when only inputs or only parameters are requested;
 * twice the gradient from two calls; the same values from the batch split
 * into two calls. */
static void check_node(one o, int batch, fill how, unsigned seed, const char *what)
{
    problem p = problem_new(o, batch, how, seed);
    const ntc_node *n = node(o);
    unsigned bseed = seed * 7 + 1;

    /* g = (base + backward) - base */
    grads base = grads_alloc(&p, true, true, NULL);
    for (int j = 0; j < n->n_in; j++)
        for (int64_t i = 0; i < in_numel(&p, j); i++)
            base.in[j][i] = 0.5f * tu_randf(&bseed);
    for (int s = 0; s < NTC_MAX_PARAMS; s++)
        for (int64_t i = 0; base.par[s] && i < par_numel(o, s); i++)
            base.par[s][i] = 0.5f * tu_randf(&bseed);
    grads g = grads_alloc(&p, true, true, &base);
    backward(&p, &g, true, true);
    for (int j = 0; j < n->n_in; j++)
        for (int64_t i = 0; i < in_numel(&p, j); i++)
            g.in[j][i] -= base.in[j][i];
    for (int s = 0; s < NTC_MAX_PARAMS; s++)
        for (int64_t i = 0; g.par[s] && i < par_numel(o, s); i++)
            g.par[s][i] -= base.par[s][i];

    char which[32];
    for (int j = 0; j < n->n_in; j++) {
        snprintf(which, sizeof which, "d input %d", j);
        check_fd(&p, p.x[j], in_numel(&p, j), g.in[j], what, which);
    }
    for (int s = 0; s < NTC_MAX_PARAMS; s++)
        if (g.par[s]) {
            snprintf(which, sizeof which, "d %s", ntc_ops[n->op].params[s].name);
            check_fd(&p, par_data(o, s), par_numel(o, s), g.par[s], what, which);
        }

    /* Inputs only, parameters only (the other array NULL), and two calls. */
    grads only_in = grads_alloc(&p, true, false, NULL), only_par = grads_alloc(&p, false, true, NULL);
    grads twice = grads_alloc(&p, true, true, NULL);
    backward(&p, &only_in, true, false);
    backward(&p, &only_par, false, true);
    backward(&p, &twice, true, true);
    backward(&p, &twice, true, true);
    for (int j = 0; j < n->n_in; j++) {
        expect_same(only_in.in[j], g.in[j], in_numel(&p, j), 1.0, what, "inputs only");
        expect_same(twice.in[j], g.in[j], in_numel(&p, j), 2.0, what, "two calls, input");
    }
    for (int s = 0; s < NTC_MAX_PARAMS; s++)
        if (g.par[s]) {
            expect_same(only_par.par[s], g.par[s], par_numel(o, s), 1.0, what, "parameters only");
            expect_same(twice.par[s], g.par[s], par_numel(o, s), 2.0, what, "two calls, parameter");
        }
    /* Split across two calls, as the executor's threads do. */
    if (batch >= 2) {
        grads sliced = grads_alloc(&p, true, true, NULL);
        backward_in_two_slices(&p, &sliced);
        for (int j = 0; j < n->n_in; j++)
            expect_same(sliced.in[j], g.in[j], in_numel(&p, j), 1.0, what, "two slices, input");
        for (int s = 0; s < NTC_MAX_PARAMS; s++)
            if (g.par[s])
                expect_same(sliced.par[s], g.par[s], par_numel(o, s), 1.0, what, "two slices, parameter");
        grads_free(&sliced);
    }
    grads_free(&base), grads_free(&g), grads_free(&only_in), grads_free(&only_par), grads_free(&twice);
    problem_free(&p);
}

/* ---- conv2d ---------------------------------------------------------------------------- */

typedef struct {
    int batch, c, h, w, f, kh, kw, sh, sw, pad[4], dh, dw, bias;
} conv_case;

START_TEST(conv_gradients)
{
    const conv_case cases[] = {
        {2, 3, 8, 8, 4, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 1},   /* resnet 3x3 */
        {2, 3, 7, 9, 5, 3, 3, 2, 2, {1, 1, 1, 1}, 1, 1, 0},   /* odd sizes, stride 2 */
        {2, 4, 5, 6, 3, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1, 1},   /* pointwise fast path */
        {2, 4, 5, 5, 3, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1, 0},   /* pointwise, no bias */
        {2, 4, 7, 7, 3, 1, 1, 2, 2, {0, 0, 0, 0}, 1, 1, 0},   /* 1x1 stride-2 projection */
        {1, 2, 9, 7, 3, 3, 2, 1, 2, {0, 1, 2, 0}, 1, 1, 1},   /* asymmetric pads, rect kernel */
        {2, 2, 9, 8, 2, 3, 3, 1, 1, {2, 2, 2, 2}, 2, 2, 1},   /* dilation 2 */
        {1, 2, 12, 11, 3, 3, 2, 3, 2, {1, 0, 0, 2}, 2, 3, 0}, /* everything at once */
        {1, 3, 4, 4, 2, 3, 3, 4, 4, {3, 3, 3, 3}, 1, 1, 1},   /* windows mostly padding */
        {3, 1, 5, 5, 2, 5, 5, 1, 1, {0, 0, 0, 0}, 1, 1, 1},   /* kernel = image */
        {2, 3, 7, 6, 5, 3, 3, 1, 1, {0, 1, 1, 1}, 1, 1, 1},   /* stride 1, output shorter than input */
        {2, 16, 6, 6, 16, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 0}, /* full vector blocks of filters */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *t = &cases[i];
        char s[64], what[32];
        snprintf(s, sizeof s, "N,%d,%d,%d", t->c, t->h, t->w);
        one o = make(NTC_OP_conv2d, s, 1);
        ntc_attrs *a = &node(o)->a;
        a->filters = t->f;
        a->kernel[0] = t->kh, a->kernel[1] = t->kw;
        a->stride[0] = t->sh, a->stride[1] = t->sw;
        memcpy(a->pad, t->pad, sizeof a->pad);
        a->dilation[0] = t->dh, a->dilation[1] = t->dw;
        finish(o, t->bias ? (const char *[]){"weight", "bias", NULL} : (const char *[]){"weight", NULL},
               40 + (unsigned)i);
        snprintf(what, sizeof what, "conv case %zu", i);
        check_node(o, t->batch, FILL_UNIFORM, 100 + (unsigned)i, what);
    }
}
END_TEST

/* ---- pooling ---------------------------------------------------------------------------- */

typedef struct {
    int batch, c, h, w, kh, kw, sh, sw, pad[4], ceil, include_pad;
} pool_case;

static const pool_case pool_cases[] = {
    {2, 3, 8, 8, 2, 2, 2, 2, {0, 0, 0, 0}, 0, 0},
    {2, 2, 7, 9, 3, 3, 2, 2, {1, 1, 1, 1}, 0, 0},  /* proxy pool k=stride+1, pad=stride/2: overlapping */
    {2, 2, 7, 9, 3, 3, 2, 2, {1, 1, 1, 1}, 0, 1},
    {1, 2, 7, 7, 2, 2, 2, 2, {0, 0, 0, 0}, 1, 0},  /* ceil mode: last window half outside */
    {1, 2, 7, 7, 2, 2, 2, 2, {0, 0, 0, 0}, 1, 1},
    {2, 1, 6, 5, 3, 2, 2, 1, {1, 0, 2, 1}, 1, 1},  /* asymmetric pads, ceil */
    {1, 3, 10, 11, 3, 3, 3, 3, {1, 2, 0, 1}, 1, 0},
    {1, 1, 5, 5, 3, 3, 1, 1, {2, 2, 2, 2}, 0, 1},  /* pad = kernel - 1 */
    {1, 1, 4, 4, 2, 2, 2, 2, {1, 1, 1, 1}, 1, 1},  /* ceil: the last window reaches into the end pad */
};

static void pool_gradients(ntc_op op)
{
    for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++) {
        const pool_case *t = &pool_cases[i];
        char s[64], what[48];
        snprintf(s, sizeof s, "N,%d,%d,%d", t->c, t->h, t->w);
        one o = make(op, s, 1);
        ntc_attrs *a = &node(o)->a;
        a->kernel[0] = t->kh, a->kernel[1] = t->kw;
        a->stride[0] = t->sh, a->stride[1] = t->sw;
        memcpy(a->pad, t->pad, sizeof a->pad);
        a->ceil_mode = t->ceil;
        a->count_include_pad = t->include_pad;
        finish(o, NULL, 0);
        snprintf(what, sizeof what, "%s case %zu", ntc_op_name(op), i);
        check_node(o, t->batch, op == NTC_OP_maxpool ? FILL_DISTINCT : FILL_UNIFORM, 7 + (unsigned)i, what);
    }
}

START_TEST(maxpool_gradients) { pool_gradients(NTC_OP_maxpool); }
END_TEST

START_TEST(avgpool_gradients) { pool_gradients(NTC_OP_avgpool); }
END_TEST

START_TEST(global_avgpool_gradients)
{
    const char *shapes[] = {"N,3,5,7", "N,2,1,1", "N,4,6,6"};
    for (int i = 0; i < 3; i++) {
        one o = make(NTC_OP_global_avgpool, shapes[i], 1);
        finish(o, NULL, 0);
        check_node(o, 2, FILL_UNIFORM, 3 + (unsigned)i, shapes[i]);
    }
}
END_TEST

START_TEST(maxpool_ties_go_to_the_first)
{
    /* One 2x2 window of equal values: the whole gradient goes to the first
     * element in window order, which the forward also picked. */
    one o = make(NTC_OP_maxpool, "N,1,2,2", 1);
    node(o)->a.kernel[0] = node(o)->a.kernel[1] = 2;
    node(o)->a.stride[0] = node(o)->a.stride[1] = 2;
    finish(o, NULL, 0);
    problem p = problem_new(o, 1, FILL_UNIFORM, 1);
    for (int i = 0; i < 4; i++)
        p.x[0][i] = 3.0f;
    p.w[0] = 2.0f;
    grads g = grads_alloc(&p, true, false, NULL);
    backward(&p, &g, true, false);
    ck_assert(g.in[0][0] == 2.0f && g.in[0][1] == 0.0f && g.in[0][2] == 0.0f && g.in[0][3] == 0.0f);
    /* The max later in the window wins when strictly larger. */
    p.x[0][3] = 4.0f;
    memset(g.in[0], 0, 4 * sizeof(float));
    backward(&p, &g, true, false);
    ck_assert(g.in[0][0] == 0.0f && g.in[0][3] == 2.0f);
    grads_free(&g), problem_free(&p);
}
END_TEST

/* ---- elementwise, mix, linear, softmax ----------------------------------------------- */

START_TEST(elementwise_gradients)
{
    const char *shapes[] = {"N,3,4,5", "N,7"};
    for (int i = 0; i < 2; i++) {
        one o = make(NTC_OP_relu, shapes[i], 1);
        finish(o, NULL, 0);
        check_node(o, 3, FILL_AWAY_FROM_ZERO, 11 + (unsigned)i, "relu");
        o = make(NTC_OP_flatten, shapes[i], 1);
        finish(o, NULL, 0);
        check_node(o, 2, FILL_UNIFORM, 13 + (unsigned)i, "flatten");
        for (int n_in = 2; n_in <= 3; n_in++) {
            o = make(NTC_OP_add, shapes[i], n_in);
            finish(o, NULL, 0);
            check_node(o, 2, FILL_UNIFORM, 17 + (unsigned)(i + n_in), n_in == 2 ? "add of two" : "add of three");
        }
    }
}
END_TEST

START_TEST(relu_gradient_is_zero_at_zero)
{
    one o = make(NTC_OP_relu, "N,3", 1);
    finish(o, NULL, 0);
    problem p = problem_new(o, 1, FILL_UNIFORM, 1);
    p.x[0][0] = 0.0f, p.x[0][1] = -2.0f, p.x[0][2] = 0.5f;
    p.w[0] = p.w[1] = p.w[2] = 1.0f;
    grads g = grads_alloc(&p, true, false, NULL);
    backward(&p, &g, true, false);
    ck_assert(g.in[0][0] == 0.0f && g.in[0][1] == 0.0f && g.in[0][2] == 1.0f);
    grads_free(&g), problem_free(&p);
}
END_TEST

START_TEST(mix_gradients)
{
    const int ns[] = {1, 2, 4};
    const char *shapes[] = {"N,3,4,4", "N,5", "N,2,3,3"};
    for (int i = 0; i < 3; i++) {
        one o = make(NTC_OP_mix, shapes[i], ns[i]);
        finish(o, (const char *[]){"alpha", NULL}, 5 + (unsigned)i);
        char what[32];
        snprintf(what, sizeof what, "mix of %d", ns[i]);
        check_node(o, 2, FILL_UNIFORM, 23 + (unsigned)i, what);
    }
    /* NetTailor's initial logits: +2 for the universal branch, -2 for proxies. */
    one o = make(NTC_OP_mix, "N,2,3,3", 3);
    finish(o, (const char *[]){"alpha", NULL}, 0);
    float *alpha = par_data(o, 0);
    alpha[0] = 2, alpha[1] = -2, alpha[2] = -2;
    check_node(o, 2, FILL_UNIFORM, 29, "mix at NetTailor's init");
}
END_TEST

START_TEST(linear_gradients)
{
    const struct { int k, u, batch, bias; } cases[] = {{16, 10, 5, 1}, {7, 3, 1, 0}, {33, 17, 4, 1}, {9, 4, 3, 0}};
    for (int i = 0; i < 4; i++) {
        char s[32], what[32];
        snprintf(s, sizeof s, "N,%d", cases[i].k);
        one o = make(NTC_OP_linear, s, 1);
        node(o)->a.units = cases[i].u;
        finish(o, cases[i].bias ? (const char *[]){"weight", "bias", NULL} : (const char *[]){"weight", NULL},
               31 + (unsigned)i);
        snprintf(what, sizeof what, "linear case %d", i);
        check_node(o, cases[i].batch, FILL_UNIFORM, 37 + (unsigned)i, what);
    }
}
END_TEST

START_TEST(softmax_gradients)
{
    const int axes[] = {1, 2, 3, -1, -3};
    for (int i = 0; i < 5; i++) {
        one o = make(NTC_OP_softmax, "N,3,4,5", 1);
        node(o)->a.axis = axes[i];
        finish(o, NULL, 0);
        char what[32];
        snprintf(what, sizeof what, "softmax axis %d", axes[i]);
        check_node(o, 2, FILL_UNIFORM, 41 + (unsigned)i, what);
    }
    one o = make(NTC_OP_softmax, "N,10", 1);
    finish(o, NULL, 0);
    check_node(o, 4, FILL_UNIFORM, 47, "softmax of logits");
}
END_TEST

/* ---- batchnorm, inference mode --------------------------------------------------------- */

static one bn_graph(const char *shape, unsigned seed)
{
    one o = make(NTC_OP_batchnorm, shape, 1);
    node(o)->a.epsilon = 1e-3f;
    finish(o, (const char *[]){"scale", "bias", "mean", "var", NULL}, seed);
    /* Variances well above 0, where 1/sqrt(var + eps) is smooth at the step size. */
    float *var = par_data(o, 3);
    for (int64_t c = 0; c < par_numel(o, 3); c++)
        var[c] = fabsf(var[c]) + 0.5f;
    return o;
}

START_TEST(batchnorm_inference_gradients)
{
    const char *shapes[] = {"N,3,4,5", "N,6", "N,2,3"};
    for (int i = 0; i < 3; i++)
        check_node(bn_graph(shapes[i], 3 + (unsigned)i), 3, FILL_UNIFORM, 51 + (unsigned)i, shapes[i]);
}
END_TEST

/* ---- batchnorm, training mode ------------------------------------------------------------- */

/* The training-mode phases run on the batch cut into slices at cuts[]
 * (from 0 to batch), reducing between phases as an executor would. */
typedef struct {
    int n_slices;
    int cut[9];                          /* n_slices + 1 entries */
} split;

typedef struct {
    float *out, *mean, *invstd;
    float *running_mean, *running_var;   /* updated copies of the node's statistics */
    grads g;                             /* input and scale/bias gradients */
} bn_result;

static void bn_result_free(bn_result *r)
{
    free(r->out), free(r->mean), free(r->invstd), free(r->running_mean), free(r->running_var);
    grads_free(&r->g);
}

/* One training step's forward on p (split as given) into r->out; the
 * running statistics start from the node's mean and var parameters. */
static void bn_train_forward(const problem *p, const split *sp, bn_result *r)
{
    one o = p->o;
    const int64_t C = par_numel(o, 0);
    r->out = malloc(sizeof(float) * (size_t)p->out_n);
    r->mean = malloc(sizeof(float) * (size_t)C), r->invstd = malloc(sizeof(float) * (size_t)C);
    r->running_mean = malloc(sizeof(float) * (size_t)C), r->running_var = malloc(sizeof(float) * (size_t)C);
    memcpy(r->running_mean, par_data(o, 2), sizeof(float) * (size_t)C);
    memcpy(r->running_var, par_data(o, 3), sizeof(float) * (size_t)C);
    double *sum = calloc((size_t)C, sizeof(double)), *sumsq = calloc((size_t)C, sizeof(double));
    double *ps = malloc(sizeof(double) * (size_t)C), *pq = malloc(sizeof(double) * (size_t)C);
    call c;
    for (int s = 0; s < sp->n_slices; s++) {     /* per slice into its own sums, then reduce */
        memset(ps, 0, sizeof(double) * (size_t)C), memset(pq, 0, sizeof(double) * (size_t)C);
        call_init(&c, o, (const float *const *)p->x, r->out, sp->cut[s], sp->cut[s + 1] - sp->cut[s]);
        bn_train_stats(&c.k, ps, pq);
        call_free(&c);
        for (int64_t ch = 0; ch < C; ch++)
            sum[ch] += ps[ch], sumsq[ch] += pq[ch];
    }
    int64_t count = bn_train_count(&o.g->values[node(o)->in[0]].shape, p->batch);
    bn_train_finish(node(o), C, count, sum, sumsq, r->mean, r->invstd, r->running_mean, r->running_var);
    for (int s = 0; s < sp->n_slices; s++) {
        call_init(&c, o, (const float *const *)p->x, r->out, sp->cut[s], sp->cut[s + 1] - sp->cut[s]);
        bn_train_apply(&c.k, r->mean, r->invstd);
        call_free(&c);
    }
    free(sum), free(sumsq), free(ps), free(pq);
}

/* Forward and backward of one training step (dL/dy = p->w); the gradients
 * accumulate onto `base` when given. */
static bn_result bn_train_step(const problem *p, const split *sp, const grads *base)
{
    one o = p->o;
    const int64_t C = par_numel(o, 0);
    bn_result r = {0};
    bn_train_forward(p, sp, &r);
    r.g = grads_alloc(p, true, false, base);
    r.g.par[0] = calloc((size_t)C, sizeof(float)), r.g.par[1] = calloc((size_t)C, sizeof(float));
    if (base)
        memcpy(r.g.par[0], base->par[0], sizeof(float) * (size_t)C),
            memcpy(r.g.par[1], base->par[1], sizeof(float) * (size_t)C);
    double *sdy = calloc((size_t)C, sizeof(double)), *sdx = calloc((size_t)C, sizeof(double));
    double *pdy = malloc(sizeof(double) * (size_t)C), *pdx = malloc(sizeof(double) * (size_t)C);
    call c;
    for (int s = 0; s < sp->n_slices; s++) {
        memset(pdy, 0, sizeof(double) * (size_t)C), memset(pdx, 0, sizeof(double) * (size_t)C);
        call_init(&c, o, (const float *const *)p->x, r.out, sp->cut[s], sp->cut[s + 1] - sp->cut[s]);
        int64_t at = sp->cut[s] * item_numel(o, node(o)->out);
        bn_train_grad_stats(&c.k, p->w + at, r.mean, r.invstd, pdy, pdx);
        call_free(&c);
        for (int64_t ch = 0; ch < C; ch++)
            sdy[ch] += pdy[ch], sdx[ch] += pdx[ch];
    }
    bn_train_grad_params(C, sdy, sdx, r.g.par[0], r.g.par[1]);
    int64_t count = bn_train_count(&o.g->values[node(o)->in[0]].shape, p->batch);
    for (int s = 0; s < sp->n_slices; s++) {
        call_init(&c, o, (const float *const *)p->x, r.out, sp->cut[s], sp->cut[s + 1] - sp->cut[s]);
        int64_t at = sp->cut[s] * item_numel(o, node(o)->out);
        bn_train_grad_apply(&c.k, p->w + at, r.mean, r.invstd, count, sdy, sdx, r.g.in[0] + at);
        call_free(&c);
    }
    free(sdy), free(sdx), free(pdy), free(pdx);
    return r;
}

static double bn_train_loss(const problem *p)
{
    const split whole = {1, {0, p->batch}};
    bn_result r = {0};
    bn_train_forward(p, &whole, &r);
    double l = 0.0;
    for (int64_t i = 0; i < p->out_n; i++)
        l += (double)p->w[i] * r.out[i];
    bn_result_free(&r);
    return l;
}

static void bn_check_fd(const problem *p, float *v, int64_t n, const float *ana, const char *what,
                        const char *which)
{
    double *num = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        const float keep = v[i];
        v[i] = keep + (float)STEP;
        double hi = bn_train_loss(p);
        v[i] = keep - (float)STEP;
        double lo = bn_train_loss(p);
        v[i] = keep;
        num[i] = (hi - lo) / ((double)(keep + (float)STEP) - (double)(keep - (float)STEP));
    }
    expect_grad(ana, num, n, 2e-3, what, which);
    free(num);
}

START_TEST(batchnorm_training_gradients)
{
    const char *shapes[] = {"N,3,4,5", "N,4", "N,2,3"};
    const int batches[] = {4, 5, 3};
    for (int i = 0; i < 3; i++) {
        one o = bn_graph(shapes[i], 61 + (unsigned)i);
        problem p = problem_new(o, batches[i], FILL_UNIFORM, 67 + (unsigned)i);
        const int64_t C = par_numel(o, 0), n_in = in_numel(&p, 0);
        /* A base to accumulate onto, then the step on the whole batch. */
        grads base = grads_alloc(&p, true, false, NULL);
        base.par[0] = calloc((size_t)C, sizeof(float)), base.par[1] = calloc((size_t)C, sizeof(float));
        unsigned bseed = 71;
        for (int64_t e = 0; e < n_in; e++)
            base.in[0][e] = 0.5f * tu_randf(&bseed);
        for (int64_t c = 0; c < C; c++)
            base.par[0][c] = tu_randf(&bseed), base.par[1][c] = tu_randf(&bseed);
        const split whole = {1, {0, batches[i]}};
        bn_result r = bn_train_step(&p, &whole, &base);
        for (int64_t e = 0; e < n_in; e++)
            r.g.in[0][e] -= base.in[0][e];
        for (int64_t c = 0; c < C; c++)
            r.g.par[0][c] -= base.par[0][c], r.g.par[1][c] -= base.par[1][c];

        bn_check_fd(&p, p.x[0], n_in, r.g.in[0], shapes[i], "training d input");
        bn_check_fd(&p, par_data(o, 0), C, r.g.par[0], shapes[i], "training d scale");
        bn_check_fd(&p, par_data(o, 1), C, r.g.par[1], shapes[i], "training d bias");

        /* Split unevenly (one item, then the rest; and one slice per item):
         * the same outputs, statistics and gradients as the whole batch. */
        split uneven = {2, {0, 1, batches[i]}}, single = {batches[i], {0}};
        for (int b = 0; b <= batches[i]; b++)
            single.cut[b] = b;
        const split *splits[] = {&uneven, &single};
        for (int s = 0; s < 2; s++) {
            bn_result q = bn_train_step(&p, splits[s], NULL);
            expect_same(q.out, r.out, p.out_n, 1.0, shapes[i], "split output");
            expect_same(q.running_mean, r.running_mean, C, 1.0, shapes[i], "split running mean");
            expect_same(q.running_var, r.running_var, C, 1.0, shapes[i], "split running var");
            expect_same(q.g.in[0], r.g.in[0], n_in, 1.0, shapes[i], "split d input");
            expect_same(q.g.par[0], r.g.par[0], C, 1.0, shapes[i], "split d scale");
            expect_same(q.g.par[1], r.g.par[1], C, 1.0, shapes[i], "split d bias");
            bn_result_free(&q);
        }
        bn_result_free(&r), grads_free(&base), problem_free(&p);
    }
}
END_TEST

START_TEST(batchnorm_training_statistics)
{
    /* Against a two-pass computation in double: batch mean, biased variance
     * for normalising, running statistics with momentum 0.1 and the unbiased
     * variance.  The input sits on a large offset (100) so that the
     * E[x^2] - E[x]^2 form would show cancellation if it were done in float. */
    one o = bn_graph("N,3,2,2", 5);
    node(o)->a.momentum = 0.1f;
    problem p = problem_new(o, 5, FILL_UNIFORM, 9);
    const int64_t C = 3, inner = 4, M = 5 * inner;
    for (int64_t e = 0; e < in_numel(&p, 0); e++)
        p.x[0][e] += 100.0f;
    bn_result r = {0};
    const split sp = {2, {0, 2, 5}};
    bn_train_forward(&p, &sp, &r);
    for (int64_t c = 0; c < C; c++) {
        double mu = 0, ss = 0;
        for (int b = 0; b < 5; b++)
            for (int64_t i = 0; i < inner; i++)
                mu += p.x[0][(b * C + c) * inner + i];
        mu /= (double)M;
        for (int b = 0; b < 5; b++)
            for (int64_t i = 0; i < inner; i++)
                ss += pow(p.x[0][(b * C + c) * inner + i] - mu, 2);
        const double var = ss / (double)M, unbiased = ss / (double)(M - 1);
        const double rm = 0.9 * par_data(o, 2)[c] + 0.1 * mu, rv = 0.9 * par_data(o, 3)[c] + 0.1 * unbiased;
        ck_assert_msg(fabs(r.mean[c] - mu) <= 1e-6 * fabs(mu), "mean %g vs %g", r.mean[c], mu);
        ck_assert_msg(fabs(r.invstd[c] - 1 / sqrt(var + 1e-3)) <= 1e-5 / sqrt(var + 1e-3),
                      "invstd %g vs %g", r.invstd[c], 1 / sqrt(var + 1e-3));
        ck_assert_msg(fabs(r.running_mean[c] - rm) <= 1e-5 * fabs(rm), "running mean %g vs %g",
                      r.running_mean[c], rm);
        ck_assert_msg(fabs(r.running_var[c] - rv) <= 1e-5 * fabs(rv), "running var %g vs %g",
                      r.running_var[c], rv);
        /* The normalised output has mean bias and variance scale^2 (biased). */
        double om = 0, ov = 0;
        for (int b = 0; b < 5; b++)
            for (int64_t i = 0; i < inner; i++)
                om += r.out[(b * C + c) * inner + i];
        om /= (double)M;
        for (int b = 0; b < 5; b++)
            for (int64_t i = 0; i < inner; i++)
                ov += pow(r.out[(b * C + c) * inner + i] - om, 2);
        ov /= (double)M;
        const double scale = par_data(o, 0)[c], bias = par_data(o, 1)[c];
        ck_assert_msg(fabs(om - bias) <= 1e-4, "output mean %g, bias %g", om, bias);
        ck_assert_msg(fabs(ov - scale * scale * var / (var + 1e-3)) <= 1e-3 * scale * scale,
                      "output variance %g, scale^2 %g", ov, scale * scale);
    }
    bn_result_free(&r), problem_free(&p);
}
END_TEST

START_TEST(batchnorm_training_single_value)
{
    /* One value per channel: the batch variance is 0 and the running
     * variance is fed the biased estimate (0), not a division by zero. */
    one o = bn_graph("N,2", 3);
    problem p = problem_new(o, 1, FILL_UNIFORM, 4);
    bn_result r = {0};
    const split sp = {1, {0, 1}};
    const float rv0 = par_data(o, 3)[0];
    bn_train_forward(&p, &sp, &r);
    ck_assert(isfinite(r.running_var[0]));
    ck_assert_msg(fabsf(r.running_var[0] - 0.9f * rv0) <= 1e-6f, "running var %g", r.running_var[0]);
    ck_assert_msg(fabsf(r.out[0] - par_data(o, 1)[0]) <= 1e-6f, "output %g", r.out[0]);
    bn_result_free(&r), problem_free(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("grad");
    TCase *tc = tcase_create("backward");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, conv_gradients);
    tcase_add_test(tc, maxpool_gradients);
    tcase_add_test(tc, avgpool_gradients);
    tcase_add_test(tc, global_avgpool_gradients);
    tcase_add_test(tc, maxpool_ties_go_to_the_first);
    tcase_add_test(tc, elementwise_gradients);
    tcase_add_test(tc, relu_gradient_is_zero_at_zero);
    tcase_add_test(tc, mix_gradients);
    tcase_add_test(tc, linear_gradients);
    tcase_add_test(tc, softmax_gradients);
    tcase_add_test(tc, batchnorm_inference_gradients);
    tcase_add_test(tc, batchnorm_training_gradients);
    tcase_add_test(tc, batchnorm_training_statistics);
    tcase_add_test(tc, batchnorm_training_single_value);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
