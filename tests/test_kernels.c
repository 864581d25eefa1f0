/* The forward kernels (runtime/kern_*.c) against naive loops written here
 * independently of them, over several shapes, strides, paddings (also
 * asymmetric), dilations, odd sizes, ceil mode and count_include_pad, plus
 * tiny cases whose values are worked out by hand in the comments.
 *
 * Each case is a one-node graph: shape inference gives the output shape
 * (the rule under test elsewhere), the kernel is called directly on a
 * batch, and the result is compared element by element. */
#include "testutil.h"
#include "runtime/kernels.h"
#include "runtime/pool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- one-node graphs and calling a kernel ------------------------------------ */

typedef struct {
    ntc_graph *g;
    int node;
} one;

/* A graph with n_in inputs of shape `in` (the batch left symbolic) feeding
 * one node of op; returns it with the node's attributes at their defaults. */
static one make(ntc_op op, const char *in, int n_in)
{
    one o = {ntc_graph_new("k"), -1};
    ntc_shape s;
    ck_assert_int_eq(ntc_shape_parse(in, &s), 0);
    int ins[8];
    for (int i = 0; i < n_in; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        ins[i] = ntc_graph_add_input(o.g, name, &s);
    }
    o.node = ntc_graph_add_node(o.g, op, "n", ins, n_in, -1);
    ck_assert_int_ge(o.node, 0);
    return o;
}

static ntc_node *node(one o) { return &o.g->nodes[o.node]; }

static float *randn(int64_t n, unsigned *seed)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++)
        p[i] = tu_randf(seed);   /* [-1, 1) */
    return p;
}

/* Adds parameter slots (NULL-terminated names), infers shapes and fills the
 * parameters with values from [-1, 1) (or from `fixed` when given, in slot order). */
static void finish(one o, const char *const *slots, unsigned seed, const float *const *fixed)
{
    for (int i = 0; slots && slots[i]; i++)
        ck_assert_int_ge(ntc_node_add_param(o.g, o.node, slots[i], NULL), 0);
    ntc_graph_add_output(o.g, "y", node(o)->out);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_infer_shapes(o.g, &err) == 0, "%s", ntc_err_str(&err));
    int k = 0;
    for (int p = 0; p < NTC_MAX_PARAMS; p++) {
        int v = node(o)->par[p];
        if (v < 0)
            continue;
        ntc_value *pv = &o.g->values[v];
        int64_t n = ntc_shape_numel(&pv->shape);
        pv->data = ntc_malloc(sizeof(float) * (size_t)n);
        pv->owned = true;
        float *r = randn(n, &seed);
        memcpy(pv->data, fixed ? fixed[k] : r, sizeof(float) * (size_t)n);
        free(r);
        k++;
    }
}

static int64_t per_item(one o, int v) { return ntc_shape_numel(&o.g->values[v].shape); }

static ntc_shape concrete(one o, int v, int batch)
{
    ntc_shape s = o.g->values[v].shape;
    s.dims[0] = batch;
    return s;
}

/* Calls the node's forward kernel on `batch` items, letting it split its
 * work over `team` (NULL: single-threaded); returns the output (malloc'ed). */
static float *run_team(one o, float *const *in, int batch, ntc_pool *team)
{
    const ntc_node *n = node(o);
    ntc_shape in_shape[8], item[8];
    for (int j = 0; j < n->n_in; j++) {
        in_shape[j] = concrete(o, n->in[j], batch);
        item[j] = concrete(o, n->in[j], 1);
    }
    ntc_shape par_shape[NTC_MAX_PARAMS] = {{0}};
    ntc_kargs k = {.node = n, .batch = batch, .n_in = n->n_in, .in = (const float *const *)in,
                   .in_shape = in_shape, .par_shape = par_shape};
    for (int p = 0; p < NTC_MAX_PARAMS; p++)
        if (n->par[p] >= 0) {
            k.par[p] = o.g->values[n->par[p]].data;
            par_shape[p] = o.g->values[n->par[p]].shape;
        }
    k.out_shape = concrete(o, n->out, batch);
    k.out = malloc(sizeof(float) * (size_t)(per_item(o, n->out) * batch));
    ntc_shape out1 = concrete(o, n->out, 1);
    int64_t w = ntc_kernels[n->op].work ? ntc_kernels[n->op].work(n, item, &out1) : 0;
    k.work = malloc(sizeof(float) * (size_t)(w + 1));
    k.team = team;
    ntc_kernels[n->op].forward(&k);
    free(k.work);
    return k.out;
}

static float *run(one o, float *const *in, int batch) { return run_team(o, in, batch, NULL); }

static const float *par(one o, int slot) { return o.g->values[node(o)->par[slot]].data; }

/* |got - want| <= 1e-5 relative to the reference's magnitude (at least 1). */
static void expect_close(const float *got, const double *want, int64_t n, const char *what)
{
    double scale = 1.0;
    for (int64_t i = 0; i < n; i++)
        scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= 1e-5 * scale, "%s: element %lld: got %.9g, want %.9g",
                      what, (long long)i, got[i], want[i]);
}

static void expect_values(const float *got, const float *want, int n, const char *what)
{
    double *w = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++)
        w[i] = want[i];
    expect_close(got, w, n, what);
    free(w);
}

/* ---- conv2d --------------------------------------------------------------------- */

typedef struct {
    int batch, c, h, w, f, kh, kw, sh, sw, pad[4], dh, dw, bias;
} conv_case;

/* Direct convolution: every output is the sum over channels and taps whose
 * input position lies inside the image, in double. */
static double *naive_conv(const conv_case *t, const float *x, const float *w, const float *b,
                          int oh_n, int ow_n)
{
    double *y = malloc(sizeof(double) * (size_t)(t->batch * t->f * oh_n * ow_n));
    for (int n = 0; n < t->batch; n++)
        for (int f = 0; f < t->f; f++)
            for (int oh = 0; oh < oh_n; oh++)
                for (int ow = 0; ow < ow_n; ow++) {
                    double acc = b ? b[f] : 0.0;
                    for (int c = 0; c < t->c; c++)
                        for (int i = 0; i < t->kh; i++)
                            for (int j = 0; j < t->kw; j++) {
                                int ih = oh * t->sh - t->pad[0] + i * t->dh;
                                int iw = ow * t->sw - t->pad[1] + j * t->dw;
                                if (ih < 0 || ih >= t->h || iw < 0 || iw >= t->w)
                                    continue;
                                acc += (double)x[((n * t->c + c) * t->h + ih) * t->w + iw] *
                                       w[((f * t->c + c) * t->kh + i) * t->kw + j];
                            }
                    y[((n * t->f + f) * oh_n + oh) * ow_n + ow] = acc;
                }
    return y;
}

static one conv_graph(const conv_case *t, unsigned seed, const float *const *fixed)
{
    char s[64];
    snprintf(s, sizeof s, "N,%d,%d,%d", t->c, t->h, t->w);
    one o = make(NTC_OP_conv2d, s, 1);
    ntc_attrs *a = &node(o)->a;
    a->filters = t->f;
    a->kernel[0] = t->kh, a->kernel[1] = t->kw;
    a->stride[0] = t->sh, a->stride[1] = t->sw;
    memcpy(a->pad, t->pad, sizeof a->pad);
    a->dilation[0] = t->dh, a->dilation[1] = t->dw;
    const char *with_bias[] = {"weight", "bias", NULL}, *no_bias[] = {"weight", NULL};
    finish(o, t->bias ? with_bias : no_bias, seed, fixed);
    return o;
}

START_TEST(conv_vs_naive)
{
    const conv_case cases[] = {
        {2, 3, 8, 8, 4, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 1},   /* resnet 3x3 */
        {3, 5, 7, 9, 6, 3, 3, 2, 2, {1, 1, 1, 1}, 1, 1, 0},   /* odd sizes, stride 2 */
        {2, 4, 6, 6, 8, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1, 1},   /* pointwise: no im2col */
        {2, 4, 7, 7, 3, 1, 1, 2, 2, {0, 0, 0, 0}, 1, 1, 0},   /* 1x1 stride 2 projection */
        {1, 2, 9, 7, 3, 3, 2, 1, 2, {0, 1, 2, 0}, 1, 1, 1},   /* asymmetric pads, rect kernel */
        {2, 3, 11, 10, 2, 3, 3, 1, 1, {2, 2, 2, 2}, 2, 2, 1}, /* dilation 2 */
        {1, 2, 12, 13, 4, 3, 2, 3, 2, {1, 0, 0, 2}, 2, 3, 0}, /* everything at once */
        {2, 1, 5, 5, 2, 5, 5, 1, 1, {0, 0, 0, 0}, 1, 1, 1},   /* kernel = image */
        {1, 3, 4, 4, 2, 3, 3, 4, 4, {3, 3, 3, 3}, 1, 1, 1},   /* windows mostly padding */
        {2, 1, 28, 28, 16, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 0},/* the stem of the backbone */
        {3, 16, 14, 14, 16, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 1},/* full vector blocks, stage 2 */
        {2, 3, 7, 6, 5, 3, 3, 1, 1, {0, 1, 1, 1}, 1, 1, 1},   /* stride 1, output shorter than input */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *t = &cases[i];
        one o = conv_graph(t, 11 + (unsigned)i, NULL);
        const ntc_shape *os = &o.g->values[node(o)->out].shape;
        unsigned seed = 99 + (unsigned)i;
        float *x = randn((int64_t)t->batch * t->c * t->h * t->w, &seed);
        double *want = naive_conv(t, x, par(o, 0), t->bias ? par(o, 1) : NULL, (int)os->dims[2], (int)os->dims[3]);
        /* Alone, and with each item's output rows split over 3 threads
         * (uneven shares, more threads than rows in some cases). */
        ntc_pool *team = ntc_pool_new(3, NULL);
        for (int split = 0; split < 2; split++) {
            float *y = run_team(o, &x, t->batch, split ? team : NULL);
            char what[48];
            snprintf(what, sizeof what, "conv case %zu%s", i, split ? " (rows split)" : "");
            expect_close(y, want, t->batch * per_item(o, node(o)->out), what);
            free(y);
        }
        ntc_pool_free(team);
        free(x), free(want);
        ntc_graph_free(o.g);
    }
}
END_TEST

START_TEST(conv_by_hand)
{
    /* x = [1 2 3; 4 5 6; 7 8 9], one 2x2 filter of ones, no bias. */
    float x[] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, ones[] = {1, 1, 1, 1};
    const float *fixed[] = {ones};
    float *in[] = {x};
    /* No padding: the four 2x2 window sums 1+2+4+5, 2+3+5+6, 4+5+7+8, 5+6+8+9. */
    conv_case plain = {1, 1, 3, 3, 1, 2, 2, 1, 1, {0, 0, 0, 0}, 1, 1, 0};
    one o = conv_graph(&plain, 1, fixed);
    float *y = run(o, in, 1);
    expect_values(y, (float[]){12, 16, 24, 28}, 4, "conv plain");
    free(y), ntc_graph_free(o.g);
    /* Padding only at the bottom and right (ONNX pads [0,0,1,1]): 3x3 output
     * whose last row/column windows see zeros: 3+6 = 9, 6+9 = 15, 7+8 = 15, 8+9 = 17, 9. */
    conv_case asym = {1, 1, 3, 3, 1, 2, 2, 1, 1, {0, 0, 1, 1}, 1, 1, 0};
    o = conv_graph(&asym, 1, fixed);
    y = run(o, in, 1);
    expect_values(y, (float[]){12, 16, 9, 24, 28, 15, 15, 17, 9}, 9, "conv asymmetric pad");
    free(y), ntc_graph_free(o.g);
    /* Dilation 2: the 2x2 kernel touches the corners, 1+3+7+9 = 20. */
    conv_case dil = {1, 1, 3, 3, 1, 2, 2, 1, 1, {0, 0, 0, 0}, 2, 2, 0};
    o = conv_graph(&dil, 1, fixed);
    y = run(o, in, 1);
    expect_values(y, (float[]){20}, 1, "conv dilation");
    free(y), ntc_graph_free(o.g);
    /* Pointwise with bias: two input channels [1 2] and [3 4], weights (2, -1),
     * bias 0.5: 2*1 - 3 + 0.5 = -0.5 and 2*2 - 4 + 0.5 = 0.5. */
    float x2[] = {1, 2, 3, 4}, w2[] = {2, -1}, b2[] = {0.5f};
    const float *fixed2[] = {w2, b2};
    conv_case pw = {1, 2, 1, 2, 1, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1, 1};
    o = conv_graph(&pw, 1, fixed2);
    float *in2[] = {x2};
    y = run(o, in2, 1);
    expect_values(y, (float[]){-0.5f, 0.5f}, 2, "conv pointwise");
    free(y), ntc_graph_free(o.g);
}
END_TEST

/* ---- pooling ------------------------------------------------------------------------ */

typedef struct {
    int batch, c, h, w, kh, kw, sh, sw, pad[4], ceil, include_pad;
} pool_case;

static one pool_graph(ntc_op op, const pool_case *t)
{
    char s[64];
    snprintf(s, sizeof s, "N,%d,%d,%d", t->c, t->h, t->w);
    one o = make(op, s, 1);
    ntc_attrs *a = &node(o)->a;
    a->kernel[0] = t->kh, a->kernel[1] = t->kw;
    a->stride[0] = t->sh, a->stride[1] = t->sw;
    memcpy(a->pad, t->pad, sizeof a->pad);
    a->ceil_mode = t->ceil;
    a->count_include_pad = t->include_pad;
    finish(o, NULL, 0, NULL);
    return o;
}

/* Walks every tap of every window: taps inside the image contribute, taps
 * inside the padded image [-pad_begin, size + pad_end) count for
 * count_include_pad, taps beyond that count for nothing. */
static double *naive_pool(const pool_case *t, bool is_max, const float *x, int oh_n, int ow_n)
{
    double *y = malloc(sizeof(double) * (size_t)(t->batch * t->c * oh_n * ow_n));
    for (int p = 0; p < t->batch * t->c; p++)
        for (int oh = 0; oh < oh_n; oh++)
            for (int ow = 0; ow < ow_n; ow++) {
                double best = -INFINITY, sum = 0;
                int inside = 0, padded = 0;
                for (int i = 0; i < t->kh; i++)
                    for (int j = 0; j < t->kw; j++) {
                        int ih = oh * t->sh - t->pad[0] + i, iw = ow * t->sw - t->pad[1] + j;
                        if (ih < t->h + t->pad[2] && iw < t->w + t->pad[3])
                            padded++;
                        if (ih < 0 || ih >= t->h || iw < 0 || iw >= t->w)
                            continue;
                        double v = x[(p * t->h + ih) * t->w + iw];
                        best = v > best ? v : best;
                        sum += v;
                        inside++;
                    }
                ck_assert_int_gt(inside, 0);
                y[(p * oh_n + oh) * ow_n + ow] = is_max ? best : sum / (t->include_pad ? padded : inside);
            }
    return y;
}

static const pool_case pool_cases[] = {
    {2, 3, 8, 8, 2, 2, 2, 2, {0, 0, 0, 0}, 0, 0},
    {2, 2, 7, 9, 3, 3, 2, 2, {1, 1, 1, 1}, 0, 0},  /* proxy pool k=stride+1, pad=stride/2 */
    {2, 2, 7, 9, 3, 3, 2, 2, {1, 1, 1, 1}, 0, 1},
    {1, 2, 7, 7, 2, 2, 2, 2, {0, 0, 0, 0}, 1, 0},  /* ceil mode: last window half outside */
    {1, 2, 7, 7, 2, 2, 2, 2, {0, 0, 0, 0}, 1, 1},  /* ... and not charged for it */
    {2, 1, 6, 5, 3, 2, 2, 1, {1, 0, 2, 1}, 1, 1},  /* asymmetric pads, ceil */
    {1, 3, 10, 11, 3, 3, 3, 3, {1, 2, 0, 1}, 1, 0},
    {1, 1, 5, 5, 3, 3, 1, 1, {2, 2, 2, 2}, 0, 1},  /* pad = kernel - 1 */
    {3, 2, 4, 4, 4, 4, 1, 1, {0, 0, 0, 0}, 0, 0},  /* window = image */
    {1, 1, 4, 4, 2, 2, 2, 2, {1, 1, 1, 1}, 1, 1},  /* ceil: the last window reaches into the end pad */
};

static void pool_vs_naive(ntc_op op)
{
    for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++) {
        const pool_case *t = &pool_cases[i];
        one o = pool_graph(op, t);
        const ntc_shape *os = &o.g->values[node(o)->out].shape;
        unsigned seed = 7 + (unsigned)i;
        float *x = randn((int64_t)t->batch * t->c * t->h * t->w, &seed);
        float *y = run(o, &x, t->batch);
        double *want = naive_pool(t, op == NTC_OP_maxpool, x, (int)os->dims[2], (int)os->dims[3]);
        char what[48];
        snprintf(what, sizeof what, "%s case %zu", ntc_op_name(op), i);
        expect_close(y, want, t->batch * per_item(o, node(o)->out), what);
        free(x), free(y), free(want);
        ntc_graph_free(o.g);
    }
}

START_TEST(maxpool_vs_naive) { pool_vs_naive(NTC_OP_maxpool); }
END_TEST

START_TEST(avgpool_vs_naive) { pool_vs_naive(NTC_OP_avgpool); }
END_TEST

START_TEST(pool_by_hand)
{
    /* x = [-1 -2; -3 -4], k 2, stride 1, pad 1: a 3x3 output where each
     * window sees 1, 2 or 4 pixels.  Padding never wins, so the corners
     * are the lone pixels, not 0. */
    pool_case t = {1, 1, 2, 2, 2, 2, 1, 1, {1, 1, 1, 1}, 0, 0};
    float neg[] = {-1, -2, -3, -4}, pos[] = {1, 2, 3, 4};
    one o = pool_graph(NTC_OP_maxpool, &t);
    float *y = run(o, (float *[]){neg}, 1);
    expect_values(y, (float[]){-1, -1, -2, -1, -1, -2, -3, -3, -4}, 9, "maxpool padding never wins");
    free(y), ntc_graph_free(o.g);
    /* x = [1 2; 3 4], same windows, averaged over the pixels present:
     * corners 1, 2, 3, 4; edges (1+2)/2, (1+3)/2, (2+4)/2, (3+4)/2; centre 2.5. */
    o = pool_graph(NTC_OP_avgpool, &t);
    y = run(o, (float *[]){pos}, 1);
    expect_values(y, (float[]){1, 1.5f, 2, 2, 2.5f, 3, 3, 3.5f, 4}, 9, "avgpool count_include_pad 0");
    free(y), ntc_graph_free(o.g);
    /* count_include_pad 1: every window counts 4 taps: 1/4, 3/4, 2/4, ... */
    t.include_pad = 1;
    o = pool_graph(NTC_OP_avgpool, &t);
    y = run(o, (float *[]){pos}, 1);
    expect_values(y, (float[]){0.25f, 0.75f, 0.5f, 1, 2.5f, 1.5f, 0.75f, 1.75f, 1}, 9,
                  "avgpool count_include_pad 1");
    free(y), ntc_graph_free(o.g);
    /* Ceil mode: x = 1..9 as 3x3, k 2, stride 2: windows {1,2,4,5}, {3,6},
     * {7,8}, {9}; the overhanging windows average only what exists (no end
     * padding, so count_include_pad changes nothing): 3, 4.5, 7.5, 9. */
    float nine[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    pool_case c = {1, 1, 3, 3, 2, 2, 2, 2, {0, 0, 0, 0}, 1, 1};
    o = pool_graph(NTC_OP_avgpool, &c);
    y = run(o, (float *[]){nine}, 1);
    expect_values(y, (float[]){3, 4.5f, 7.5f, 9}, 4, "avgpool ceil mode");
    free(y), ntc_graph_free(o.g);
    o = pool_graph(NTC_OP_maxpool, &c);
    y = run(o, (float *[]){nine}, 1);
    expect_values(y, (float[]){5, 6, 8, 9}, 4, "maxpool ceil mode");
    free(y), ntc_graph_free(o.g);
}
END_TEST

START_TEST(global_avgpool_kernel)
{
    one o = make(NTC_OP_global_avgpool, "N,3,5,7", 1);
    finish(o, NULL, 0, NULL);
    unsigned seed = 5;
    float *x = randn(2 * 3 * 35, &seed);
    float *y = run(o, &x, 2);
    double want[6];
    for (int p = 0; p < 6; p++) {
        want[p] = 0;
        for (int i = 0; i < 35; i++)
            want[p] += x[p * 35 + i] / 35.0;
    }
    expect_close(y, want, 6, "global_avgpool");
    free(x), free(y), ntc_graph_free(o.g);
    /* (1 + 2 + 3 + 4) / 4 = 2.5 */
    o = make(NTC_OP_global_avgpool, "N,1,2,2", 1);
    finish(o, NULL, 0, NULL);
    y = run(o, (float *[]){(float[]){1, 2, 3, 4}}, 1);
    expect_values(y, (float[]){2.5f}, 1, "global_avgpool by hand");
    free(y), ntc_graph_free(o.g);
}
END_TEST

/* ---- batchnorm ----------------------------------------------------------------------- */

START_TEST(batchnorm_kernel)
{
    const char *slots[] = {"scale", "bias", "mean", "var", NULL};
    const char *shapes[] = {"N,3,4,5", "N,6", "N,2,3"};
    for (int s = 0; s < 3; s++) {
        one o = make(NTC_OP_batchnorm, shapes[s], 1);
        node(o)->a.epsilon = 1e-3f;
        finish(o, slots, 3 + (unsigned)s, NULL);
        ntc_value *var = &o.g->values[node(o)->par[3]];
        int64_t C = var->shape.dims[0];
        for (int64_t c = 0; c < C; c++)
            var->data[c] = fabsf(var->data[c]) + 0.1f;
        const int batch = 3;
        int64_t item = per_item(o, node(o)->out), inner = item / C;
        unsigned seed = 17;
        float *x = randn(batch * item, &seed);
        float *y = run(o, &x, batch);
        double *want = malloc(sizeof(double) * (size_t)(batch * item));
        for (int n = 0; n < batch; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t i = 0; i < inner; i++) {
                    int64_t at = (n * C + c) * inner + i;
                    want[at] = par(o, 0)[c] * (x[at] - par(o, 2)[c]) / sqrt(par(o, 3)[c] + 1e-3) + par(o, 1)[c];
                }
        expect_close(y, want, batch * item, shapes[s]);
        free(x), free(y), free(want), ntc_graph_free(o.g);
    }
    /* One channel, scale 2, bias 1, mean 1, var 3, eps 1: y = 2*(x-1)/2 + 1 = x;
     * the second channel: scale 1, bias 0, mean 4, var 15, eps 1: y = (x-4)/4. */
    one o = make(NTC_OP_batchnorm, "N,2,2", 1);
    node(o)->a.epsilon = 1.0f;
    const float *fixed[] = {(float[]){2, 1}, (float[]){1, 0}, (float[]){1, 4}, (float[]){3, 15}};
    finish(o, slots, 0, fixed);
    float *y = run(o, (float *[]){(float[]){5, -3, 8, 0}}, 1);
    expect_values(y, (float[]){5, -3, 1, -1}, 4, "batchnorm by hand");
    free(y), ntc_graph_free(o.g);
}
END_TEST

/* ---- elementwise, mix ------------------------------------------------------------------ */

START_TEST(elementwise_kernels)
{
    one o = make(NTC_OP_relu, "N,2,3", 1);
    finish(o, NULL, 0, NULL);
    float *y = run(o, (float *[]){(float[]){-1, 0, 2, -0.5f, 3, -7, 1, 1, 1, 1, 1, 1}}, 2);
    expect_values(y, (float[]){0, 0, 2, 0, 3, 0, 1, 1, 1, 1, 1, 1}, 12, "relu");
    free(y), ntc_graph_free(o.g);

    o = make(NTC_OP_add, "N,3", 3);
    finish(o, NULL, 0, NULL);
    y = run(o, (float *[]){(float[]){1, 2, 3}, (float[]){10, 20, 30}, (float[]){-1, 0, 0.5f}}, 1);
    expect_values(y, (float[]){10, 22, 33.5f}, 3, "add of three");
    free(y), ntc_graph_free(o.g);

    o = make(NTC_OP_flatten, "N,2,2,2", 1);
    finish(o, NULL, 0, NULL);
    ck_assert_int_eq(o.g->values[node(o)->out].shape.dims[1], 8);
    float seq[16];
    for (int i = 0; i < 16; i++)
        seq[i] = (float)i;
    y = run(o, (float *[]){seq}, 2);
    expect_values(y, seq, 16, "flatten keeps the order");
    free(y), ntc_graph_free(o.g);
}
END_TEST

START_TEST(mix_kernel)
{
    /* alpha = (0, ln 3): softmax = (1/4, 3/4); y = x1/4 + 3*x2/4:
     * (4, 8) and (0, 4) give (1, 5). */
    one o = make(NTC_OP_mix, "N,2", 2);
    const float *fixed[] = {(float[]){0, logf(3)}};
    finish(o, (const char *[]){"alpha", NULL}, 0, fixed);
    float *y = run(o, (float *[]){(float[]){4, 8}, (float[]){0, 4}}, 1);
    expect_values(y, (float[]){1, 5}, 2, "mix by hand");
    free(y), ntc_graph_free(o.g);
    /* Three branches with large logits (no overflow) against the formula. */
    o = make(NTC_OP_mix, "N,3,4,4", 3);
    const float *big[] = {(float[]){90, 88.5f, 91}};
    finish(o, (const char *[]){"alpha", NULL}, 0, big);
    unsigned seed = 3;
    float *x[3];
    for (int j = 0; j < 3; j++)
        x[j] = randn(2 * 48, &seed);
    y = run(o, x, 2);
    double e[3], z = 0, want[96];
    for (int j = 0; j < 3; j++)
        z += e[j] = exp(big[0][j] - 91.0);
    for (int i = 0; i < 96; i++) {
        want[i] = 0;
        for (int j = 0; j < 3; j++)
            want[i] += e[j] / z * x[j][i];
    }
    expect_close(y, want, 96, "mix of three");
    for (int j = 0; j < 3; j++)
        free(x[j]);
    free(y), ntc_graph_free(o.g);
}
END_TEST

/* ---- linear, softmax ----------------------------------------------------------------- */

START_TEST(linear_kernel)
{
    /* x = (1, 2), W = [1 0; 1 1; 0 -1], b = (0.5, 0, 1): (1.5, 3, -1). */
    one o = make(NTC_OP_linear, "N,2", 1);
    node(o)->a.units = 3;
    const float *fixed[] = {(float[]){1, 0, 1, 1, 0, -1}, (float[]){0.5f, 0, 1}};
    finish(o, (const char *[]){"weight", "bias", NULL}, 0, fixed);
    float *y = run(o, (float *[]){(float[]){1, 2}}, 1);
    expect_values(y, (float[]){1.5f, 3, -1}, 3, "linear by hand");
    free(y), ntc_graph_free(o.g);

    const struct { int k, u, batch, bias; } cases[] = {{64, 10, 5, 1}, {7, 3, 1, 0}, {33, 17, 9, 1}};
    for (int c = 0; c < 3; c++) {
        char s[32];
        snprintf(s, sizeof s, "N,%d", cases[c].k);
        o = make(NTC_OP_linear, s, 1);
        node(o)->a.units = cases[c].u;
        finish(o, cases[c].bias ? (const char *[]){"weight", "bias", NULL} : (const char *[]){"weight", NULL},
               21 + (unsigned)c, NULL);
        unsigned seed = 8;
        int B = cases[c].batch, K = cases[c].k, U = cases[c].u;
        float *x = randn(B * K, &seed);
        y = run(o, &x, B);
        double *want = malloc(sizeof(double) * (size_t)(B * U));
        for (int b = 0; b < B; b++)
            for (int u = 0; u < U; u++) {
                double acc = cases[c].bias ? par(o, 1)[u] : 0;
                for (int i = 0; i < K; i++)
                    acc += (double)x[b * K + i] * par(o, 0)[u * K + i];
                want[b * U + u] = acc;
            }
        expect_close(y, want, B * U, "linear");
        free(x), free(y), free(want), ntc_graph_free(o.g);
    }
}
END_TEST

START_TEST(softmax_kernel)
{
    /* (0, ln 3) -> (1/4, 3/4); (5, 5) -> (1/2, 1/2). */
    one o = make(NTC_OP_softmax, "N,2", 1);
    finish(o, NULL, 0, NULL);
    float *y = run(o, (float *[]){(float[]){0, logf(3), 5, 5}}, 2);
    expect_values(y, (float[]){0.25f, 0.75f, 0.5f, 0.5f}, 4, "softmax by hand");
    free(y), ntc_graph_free(o.g);
    /* Every axis of a rank-4 tensor, with large values. */
    for (int axis = 1; axis <= 3; axis++) {
        o = make(NTC_OP_softmax, "N,3,4,5", 1);
        node(o)->a.axis = axis == 3 ? -1 : axis;
        finish(o, NULL, 0, NULL);
        unsigned seed = 4;
        float *x = randn(2 * 60, &seed);
        for (int i = 0; i < 120; i++)
            x[i] *= 100;
        y = run(o, &x, 2);
        const int dims[4] = {2, 3, 4, 5};
        int64_t inner = 1;
        for (int d = axis + 1; d < 4; d++)
            inner *= dims[d];
        int n = dims[axis];
        double want[120];
        for (int i = 0; i < 120; i++) {
            /* the line through element i along the axis */
            int64_t base = i / (n * inner) * n * inner + i % inner;
            double m = -INFINITY, z = 0;
            for (int j = 0; j < n; j++)
                m = fmax(m, x[base + j * inner]);
            for (int j = 0; j < n; j++)
                z += exp(x[base + j * inner] - m);
            want[i] = exp(x[i] - m) / z;
        }
        expect_close(y, want, 120, "softmax axis");
        free(x), free(y), ntc_graph_free(o.g);
    }
}
END_TEST

START_TEST(every_op_has_a_kernel)
{
    for (int op = 0; op < NTC_OP_COUNT; op++)
        ck_assert_msg(ntc_kernels[op].forward != NULL, "%s has no forward kernel", ntc_op_name(op));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("forward");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_op_has_a_kernel);
    tcase_add_test(tc, conv_vs_naive);
    tcase_add_test(tc, conv_by_hand);
    tcase_add_test(tc, maxpool_vs_naive);
    tcase_add_test(tc, avgpool_vs_naive);
    tcase_add_test(tc, pool_by_hand);
    tcase_add_test(tc, global_avgpool_kernel);
    tcase_add_test(tc, batchnorm_kernel);
    tcase_add_test(tc, elementwise_kernels);
    tcase_add_test(tc, mix_kernel);
    tcase_add_test(tc, linear_kernel);
    tcase_add_test(tc, softmax_kernel);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
