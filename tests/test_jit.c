/* The LLVM code generator and JIT (ntc/jit.h): every op on random small
 * shapes, strides, paddings and dilations, checked three ways: against
 * naive loops written here, against the interpreter (ntc/runtime.h), and
 * (shared objects) against the JIT.  Agreement is measured as
 *     max_i |got_i - want_i| / max_i |want_i|   <= 1e-4
 * (normwise, so outputs near zero do not blow the ratio up). */
#include "testutil.h"

#include "ntc/frontends.h"
#include "ntc/jit.h"
#include "ntc/pass.h"
#include "ntc/runtime.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOL 1e-4

/* ---- building graphs ------------------------------------------------------ */

static int node1(ntc_graph *g, ntc_op op, const char *name, int in)
{
    int n = ntc_graph_add_node(g, op, name, &in, 1, -1);
    ck_assert_int_ge(n, 0);
    return n;
}

static int out_of(ntc_graph *g, int node) { return g->nodes[node].out; }

static void set2(int *a, int x, int y) { a[0] = x, a[1] = y; }

static int conv(ntc_graph *g, const char *name, int in, int filters, int k, int s, int p, bool bias)
{
    int c = node1(g, NTC_OP_conv2d, name, in);
    g->nodes[c].a.filters = filters;
    set2(g->nodes[c].a.kernel, k, k);
    set2(g->nodes[c].a.stride, s, s);
    for (int i = 0; i < 4; i++)
        g->nodes[c].a.pad[i] = p;
    ntc_node_add_param(g, c, "weight", NULL);
    if (bias)
        ntc_node_add_param(g, c, "bias", NULL);
    return c;
}

static int batchnorm(ntc_graph *g, const char *name, int in)
{
    int n = node1(g, NTC_OP_batchnorm, name, in);
    const char *slots[] = {"scale", "bias", "mean", "var"};
    for (int i = 0; i < 4; i++)
        ntc_node_add_param(g, n, slots[i], NULL);
    return n;
}

/* Verifies g and fills every parameter from a seeded generator: uniform
 * [-1, 1), except batchnorm variances in [0.5, 1.5). */
static void fill_params(ntc_graph *g, unsigned seed)
{
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_infer_shapes(g, &err) == 0, "%s", ntc_err_str(&err));
    for (int v = 0; v < g->n_values; v++) {
        ntc_value *val = &g->values[v];
        if (val->kind != NTC_VAL_PARAM)
            continue;
        int64_t n = ntc_shape_numel(&val->shape);
        val->data = ntc_malloc(sizeof(float) * (size_t)n);
        val->owned = true;
        for (int64_t i = 0; i < n; i++)
            val->data[i] = tu_randf(&seed);
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == NTC_OP_batchnorm) {
            ntc_value *var = &g->values[g->nodes[i].par[3]];
            for (int64_t k = 0; k < ntc_shape_numel(&var->shape); k++)
                var->data[k] = 1.0f + 0.5f * var->data[k];
        }
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
}

/* ---- naive reference --------------------------------------------------------- */

static int64_t numel(const ntc_graph *g, int v) { return ntc_shape_numel(&g->values[v].shape); }

static void ref_conv(const ntc_node *n, const ntc_shape *is, const ntc_shape *os, const float *x, const float *w,
                     const float *b, float *y, int batch)
{
    const ntc_attrs *a = &n->a;
    int64_t C = is->dims[1], H = is->dims[2], W = is->dims[3], F = os->dims[1], OH = os->dims[2], OW = os->dims[3];
    for (int i = 0; i < batch; i++)
        for (int64_t f = 0; f < F; f++)
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    double acc = b ? b[f] : 0;
                    for (int64_t c = 0; c < C; c++)
                        for (int ky = 0; ky < a->kernel[0]; ky++)
                            for (int kx = 0; kx < a->kernel[1]; kx++) {
                                int64_t iy = oy * a->stride[0] - a->pad[0] + ky * a->dilation[0];
                                int64_t ix = ox * a->stride[1] - a->pad[1] + kx * a->dilation[1];
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                acc += (double)w[((f * C + c) * a->kernel[0] + ky) * a->kernel[1] + kx] *
                                       x[((i * C + c) * H + iy) * W + ix];
                            }
                    y[((i * F + f) * OH + oy) * OW + ox] = (float)acc;
                }
}

static void ref_pool(const ntc_node *n, const ntc_shape *is, const ntc_shape *os, const float *x, float *y, int batch)
{
    const ntc_attrs *a = &n->a;
    bool is_max = n->op == NTC_OP_maxpool;
    int64_t H = is->dims[2], W = is->dims[3], OH = os->dims[2], OW = os->dims[3];
    for (int64_t pl = 0; pl < batch * is->dims[1]; pl++)
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                double acc = is_max ? -INFINITY : 0;
                int64_t inside = 0, padded = 0;
                for (int ky = 0; ky < a->kernel[0]; ky++)
                    for (int kx = 0; kx < a->kernel[1]; kx++) {
                        int64_t iy = oy * a->stride[0] - a->pad[0] + ky, ix = ox * a->stride[1] - a->pad[1] + kx;
                        if (iy < H + a->pad[2] && ix < W + a->pad[3])
                            padded++;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                            continue;
                        inside++;
                        double v = x[(pl * H + iy) * W + ix];
                        acc = is_max ? fmax(acc, v) : acc + v;
                    }
                if (!is_max)
                    acc /= (double)(a->count_include_pad ? padded : inside);
                y[(pl * OH + oy) * OW + ox] = (float)acc;
            }
}

/* Runs g on `batch` items with naive loops; returns the output (malloc'ed). */
static float *reference(ntc_graph *g, const float *input, int batch)
{
    float **val = calloc((size_t)g->n_values, sizeof *val);
    val[g->inputs[0]] = (float *)input;
    int *order = malloc(sizeof(int) * (size_t)g->n_nodes);
    ntc_err err = {0};
    int n_order = ntc_graph_topo_order(g, order, &err);
    ck_assert_int_ge(n_order, 0);
    for (int s = 0; s < n_order; s++) {
        const ntc_node *n = &g->nodes[order[s]];
        const ntc_shape *is = &g->values[n->in[0]].shape, *os = &g->values[n->out].shape;
        int64_t m = numel(g, n->out), k = numel(g, n->in[0]);
        float *y = val[n->out] = calloc((size_t)(m * batch), sizeof(float));
        const float *x = val[n->in[0]];
        const float *p[NTC_MAX_PARAMS];
        for (int j = 0; j < NTC_MAX_PARAMS; j++)
            p[j] = n->par[j] >= 0 ? g->values[n->par[j]].data : NULL;
        switch (n->op) {
        case NTC_OP_conv2d:
            ref_conv(n, is, os, x, p[0], p[1], y, batch);
            break;
        case NTC_OP_batchnorm: {
            int64_t C = is->dims[1], inner = k / C;
            for (int64_t i = 0; i < k * batch; i++) {
                int64_t c = i / inner % C;
                y[i] = (float)((x[i] - p[2][c]) / sqrt((double)p[3][c] + n->a.epsilon) * p[0][c] + p[1][c]);
            }
            break;
        }
        case NTC_OP_relu:
            for (int64_t i = 0; i < m * batch; i++)
                y[i] = x[i] > 0 ? x[i] : 0;
            break;
        case NTC_OP_add:
        case NTC_OP_mix: {
            double w[16], sum = 0;
            for (int j = 0; j < n->n_in; j++)
                sum += w[j] = n->op == NTC_OP_mix ? exp(p[0][j]) : 1.0;
            for (int j = 0; j < n->n_in; j++)
                for (int64_t i = 0; i < m * batch; i++)
                    y[i] += (float)(w[j] / (n->op == NTC_OP_mix ? sum : 1.0) * val[n->in[j]][i]);
            break;
        }
        case NTC_OP_maxpool:
        case NTC_OP_avgpool:
            ref_pool(n, is, os, x, y, batch);
            break;
        case NTC_OP_global_avgpool: {
            int64_t hw = is->dims[2] * is->dims[3];
            for (int64_t pl = 0; pl < m * batch; pl++) {
                double acc = 0;
                for (int64_t i = 0; i < hw; i++)
                    acc += x[pl * hw + i];
                y[pl] = (float)(acc / (double)hw);
            }
            break;
        }
        case NTC_OP_flatten:
            memcpy(y, x, sizeof(float) * (size_t)(m * batch));
            break;
        case NTC_OP_linear:
            for (int i = 0; i < batch; i++)
                for (int64_t u = 0; u < m; u++) {
                    double acc = p[1] ? p[1][u] : 0;
                    for (int64_t j = 0; j < k; j++)
                        acc += (double)p[0][u * k + j] * x[i * k + j];
                    y[i * m + u] = (float)acc;
                }
            break;
        case NTC_OP_softmax: {
            int axis = n->a.axis < 0 ? n->a.axis + is->rank : n->a.axis;
            int64_t len = is->dims[axis], inner = 1;
            for (int d = axis + 1; d < is->rank; d++)
                inner *= is->dims[d];
            for (int64_t o = 0; o < m * batch / (len * inner); o++)
                for (int64_t in = 0; in < inner; in++) {
                    const float *xs = x + o * len * inner + in;
                    double mx = -INFINITY, sum = 0;
                    for (int64_t j = 0; j < len; j++)
                        mx = fmax(mx, xs[j * inner]);
                    for (int64_t j = 0; j < len; j++)
                        sum += exp(xs[j * inner] - mx);
                    for (int64_t j = 0; j < len; j++)
                        y[o * len * inner + in + j * inner] = (float)(exp(xs[j * inner] - mx) / sum);
                }
            break;
        }
        default:
            ck_abort_msg("no reference for %s", ntc_op_name(n->op));
        }
    }
    int outv = g->outputs[0].value;
    float *result = val[outv];
    for (int v = 0; v < g->n_values; v++)
        if (v != outv && v != g->inputs[0])
            free(val[v]);
    free(val);
    free(order);
    return result;
}

/* ---- comparing ------------------------------------------------------------------ */

static float *random_input(const ntc_graph *g, int batch, unsigned seed)
{
    int64_t n = numel(g, g->inputs[0]) * batch;
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        x[i] = tu_randf(&seed);
    return x;
}

/* JIT vs naive loops vs interpreter on `batch` random items. */
static void check_graph(ntc_graph *g, int batch, const char *what)
{
    ntc_err err = {0};
    ntc_jit *j = ntc_jit_compile(g, &err);
    ck_assert_msg(j != NULL, "%s: %s", what, ntc_err_str(&err));
    int64_t on = numel(g, g->outputs[0].value);
    ck_assert_int_eq(ntc_jit_output_numel(j), on);
    float *x = random_input(g, batch, 7u + (unsigned)batch);
    float *y = malloc(sizeof(float) * (size_t)(on * batch) + 1);
    ck_assert_msg(ntc_jit_run(j, x, batch, y, &err) == 0, "%s", ntc_err_str(&err));
    float *want = reference(g, x, batch);
    double e = tu_rel_error(y, want, on * batch);
    ck_assert_msg(e <= TOL, "%s: JIT vs naive loops: relative error %g", what, e);

    ntc_exec *ex = ntc_exec_new(g, batch, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    const float *ins[] = {x};
    ck_assert_msg(ntc_exec_run(ex, ins, batch, &err) == 0, "%s", ntc_err_str(&err));
    e = tu_rel_error(y, ntc_exec_output(ex, 0), on * batch);
    ck_assert_msg(e <= TOL, "%s: JIT vs interpreter: relative error %g", what, e);
    ntc_exec_free(ex);
    ntc_jit_free(j);
    free(x);
    free(y);
    free(want);
}

static int live_nodes(const ntc_graph *g)
{
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n += !g->nodes[i].dead;
    return n;
}

/* JIT vs interpreter only (graphs too big for the naive loops). */
static void check_graph_interp(ntc_graph *g, int batch, const char *what)
{
    ntc_err err = {0};
    ntc_jit *j = ntc_jit_compile(g, &err);
    ck_assert_msg(j != NULL, "%s: %s", what, ntc_err_str(&err));
    int64_t on = numel(g, g->outputs[0].value);
    float *x = random_input(g, batch, 5u), *y = malloc(sizeof(float) * (size_t)(on * batch));
    ck_assert_int_eq(ntc_jit_run(j, x, batch, y, &err), 0);
    ntc_exec *ex = ntc_exec_new(g, batch, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    const float *ins[] = {x};
    ck_assert_msg(ntc_exec_run(ex, ins, batch, &err) == 0, "%s", ntc_err_str(&err));
    double e = tu_rel_error(y, ntc_exec_output(ex, 0), on * batch);
    ck_assert_msg(e <= TOL, "%s: JIT vs interpreter: relative error %g", what, e);
    ntc_exec_free(ex);
    ntc_jit_free(j);
    free(x);
    free(y);
}

static ntc_graph *input_graph(const char *shape, int *x)
{
    ntc_graph *g = ntc_graph_new("t");
    ntc_shape s;
    ck_assert_int_eq(ntc_shape_parse(shape, &s), 0);
    *x = ntc_graph_add_input(g, "x", &s);
    return g;
}

static int rnd(unsigned *st, int lo, int hi)
{
    *st = *st * 1103515245u + 12345u;
    return lo + (int)((*st >> 16) % (unsigned)(hi - lo + 1));
}

/* A graph x [N,C,H,W] -> conv: F filters of kh x kw, dilation dh x dw,
 * random strides 1..3, pads 0..2 and bias; *x is the input value, *c the
 * convolution node, `what` describes it. */
static ntc_graph *random_conv(unsigned *st, int C, int H, int W, int F, int kh, int kw, int dh, int dw, int *x,
                              int *c, char *what, size_t what_size)
{
    char shape[64];
    snprintf(shape, sizeof shape, "N,%d,%d,%d", C, H, W);
    ntc_graph *g = input_graph(shape, x);
    *c = conv(g, "conv", *x, F, 1, 1, 0, rnd(st, 0, 1));
    ntc_attrs *a = &g->nodes[*c].a;
    set2(a->kernel, kh, kw);
    set2(a->stride, rnd(st, 1, 3), rnd(st, 1, 3));
    set2(a->dilation, dh, dw);
    for (int i = 0; i < 4; i++)
        a->pad[i] = rnd(st, 0, 2);
    snprintf(what, what_size, "conv C%d F%d %dx%d k%dx%d s%dx%d d%dx%d p%d,%d,%d,%d", C, F, H, W, kh, kw, a->stride[0],
             a->stride[1], dh, dw, a->pad[0], a->pad[1], a->pad[2], a->pad[3]);
    return g;
}

/* ---- tests ------------------------------------------------------------------------ */

/* Random convolutions: kernel 1..5, stride 1..3, asymmetric pads,
 * dilation 1..2, with and without bias, odd channel counts. */
START_TEST(conv_random)
{
    unsigned st = 1234u + (unsigned)_i;
    for (int t = 0; t < 6; t++) {
        int C = rnd(&st, 1, 7), F = rnd(&st, 1, 21), H = rnd(&st, 5, 17), W = rnd(&st, 5, 17);
        int kh = rnd(&st, 1, 5), kw = rnd(&st, 1, 4), dh = rnd(&st, 1, 2), dw = rnd(&st, 1, 2);
        int x, c;
        char what[256];
        ntc_graph *g = random_conv(&st, C, H, W, F, kh, kw, dh, dw, &x, &c, what, sizeof what);
        ntc_graph_add_output(g, "y", out_of(g, c));
        fill_params(g, st);
        check_graph(g, 1 + t % 3, what);
        ntc_graph_free(g);
    }
}
END_TEST

/* JIT vs interpreter over `calls` runs of the same compiled graph: runs
 * of fewer items than threads alternate between the team entry (the
 * first run) and one thread (see ntc_jit_run), so both are checked. */
static void check_calls(ntc_graph *g, int batch, int calls, const char *what)
{
    ntc_err err = {0};
    ntc_jit *j = ntc_jit_compile(g, &err);
    ck_assert_msg(j != NULL, "%s: %s", what, ntc_err_str(&err));
    int64_t on = numel(g, g->outputs[0].value);
    float *x = random_input(g, batch, 9u), *y = malloc(sizeof(float) * (size_t)(on * batch));
    ntc_exec *ex = ntc_exec_new(g, batch, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    const float *ins[] = {x};
    ck_assert_msg(ntc_exec_run(ex, ins, batch, &err) == 0, "%s", ntc_err_str(&err));
    for (int k = 0; k < calls; k++) {
        memset(y, 0xff, sizeof(float) * (size_t)(on * batch));   /* NaN: every output must be written */
        ck_assert_int_eq(ntc_jit_run(j, x, batch, y, &err), 0);
        double e = tu_rel_error(y, ntc_exec_output(ex, 0), on * batch);
        ck_assert_msg(e <= TOL, "%s, batch %d, run %d: JIT vs interpreter: relative error %g", what, batch, k, e);
    }
    ntc_exec_free(ex);
    ntc_jit_free(j);
    free(x);
    free(y);
}

/* Stride-1 planes share a padding column between rows when the right
 * padding is no wider than the left and the output row fits in W + left
 * columns: equal pads, left wider, right wider (not shared), no padding,
 * a 1x1 kernel with padding (output wider than W + left: not shared),
 * dilation 2, and widths around the vector lengths (masked pack and
 * compaction), each at 16, 8 and 4 floats per vector and on a team. */
START_TEST(conv_padding_layouts)
{
    static const int cfg[][8] = {
        /* C, F, H, W, k, dilation, pad left, pad right */
        {3, 5, 9, 28, 3, 1, 1, 1}, {2, 7, 6, 17, 3, 1, 2, 1}, {3, 4, 7, 15, 3, 1, 1, 2}, {4, 3, 5, 16, 3, 1, 0, 0},
        {5, 6, 8, 9, 1, 1, 1, 1},  {2, 9, 11, 13, 3, 2, 2, 2}, {1, 3, 4, 33, 5, 1, 2, 1}, {6, 17, 3, 7, 3, 1, 1, 0},
    };
    static const char *width[] = {NULL, "8", "4"};
    for (int v = 0; v < 3; v++) {
        if (width[v])
            setenv("NTC_JIT_VECTOR_WIDTH", width[v], 1);
        for (size_t t = 0; t < sizeof cfg / sizeof cfg[0]; t++) {
            const int *k = cfg[t];
            char shape[64];
            snprintf(shape, sizeof shape, "N,%d,%d,%d", k[0], k[2], k[3]);
            int x;
            ntc_graph *g = input_graph(shape, &x);
            int c = conv(g, "conv", x, k[1], k[4], 1, 1, t % 2);
            ntc_attrs *a = &g->nodes[c].a;
            set2(a->dilation, k[5], k[5]);
            a->pad[1] = k[6], a->pad[3] = k[7];
            ntc_graph_add_output(g, "y", out_of(g, c));
            fill_params(g, 40u + (unsigned)t);
            char what[128];
            snprintf(what, sizeof what, "conv %dx%dx%d k%d d%d pads l%d r%d, vector width %s", k[0], k[2], k[3], k[4],
                     k[5], k[6], k[7], width[v] ? width[v] : "host");
            check_graph(g, 1 + (int)t % 3, what);
            setenv("NTC_JIT_THREADS", "3", 1);
            check_calls(g, 1, 2, what);
            unsetenv("NTC_JIT_THREADS");
            ntc_graph_free(g);
        }
    }
    unsetenv("NTC_JIT_VECTOR_WIDTH");
}
END_TEST

/* The same for the code shapes of narrower vector units (AVX2: 8 floats
 * and 16 registers; SSE: 4). */
START_TEST(conv_narrow_vectors)
{
    setenv("NTC_JIT_VECTOR_WIDTH", _i ? "4" : "8", 1);
    unsigned st = 777u + (unsigned)_i;
    for (int t = 0; t < 4; t++) {
        int C = rnd(&st, 1, 9), F = rnd(&st, 1, 19), H = rnd(&st, 5, 15), W = rnd(&st, 5, 15);
        char shape[64];
        snprintf(shape, sizeof shape, "N,%d,%d,%d", C, H, W);
        int x;
        ntc_graph *g = input_graph(shape, &x);
        int c = conv(g, "conv", x, F, rnd(&st, 1, 3) * 2 - 1, rnd(&st, 1, 2), rnd(&st, 0, 1), t % 2);
        ntc_graph_add_output(g, "y", out_of(g, c));
        fill_params(g, st);
        check_graph(g, 2, _i ? "conv, 4-float vectors" : "conv, 8-float vectors");
        ntc_graph_free(g);
    }
    unsetenv("NTC_JIT_VECTOR_WIDTH");
}
END_TEST

/* A convolution of a 28x28 ResNet, cfg = {C, F, H = W, kernel, stride},
 * padding kernel / 2, bias on odd t; with batchnorm + relu after it when
 * bn_relu.  Parameters filled from seed t. */
static ntc_graph *resnet_conv(const int cfg[5], size_t t, bool bn_relu)
{
    char shape[64];
    snprintf(shape, sizeof shape, "N,%d,%d,%d", cfg[0], cfg[2], cfg[2]);
    int x;
    ntc_graph *g = input_graph(shape, &x);
    int y = out_of(g, conv(g, "conv", x, cfg[1], cfg[3], cfg[4], cfg[3] / 2, t % 2));
    if (bn_relu)
        y = out_of(g, node1(g, NTC_OP_relu, "r", out_of(g, batchnorm(g, "bn", y))));
    ntc_graph_add_output(g, "y", y);
    fill_params(g, (unsigned)t);
    return g;
}

/* The shapes of a 28x28 ResNet: 3x3 stride 1 and 2, 1x1 shortcuts. */
START_TEST(conv_resnet_shapes)
{
    static const int cfg[][5] = {{1, 16, 28, 3, 1}, {16, 16, 28, 3, 1}, {16, 32, 28, 3, 2}, {16, 32, 28, 1, 2},
                                 {32, 32, 14, 3, 1}, {32, 64, 14, 3, 2}, {64, 64, 7, 3, 1}, {64, 64, 7, 1, 1}};
    for (size_t t = 0; t < sizeof cfg / sizeof cfg[0]; t++) {
        ntc_graph *g = resnet_conv(cfg[t], t, false);
        check_graph(g, 3, "resnet conv");
        ntc_graph_free(g);
    }
}
END_TEST

/* Items computed by a team of 2, 3 and 5 threads (NTC_JIT_THREADS):
 * convolutions split their tiles, so every thread count must cover each
 * output exactly once, including teams larger than the tile count, with
 * fused epilogues, strides and a batch of 2 (two items in turn). */
START_TEST(team_split)
{
    static const char *threads[] = {"2", "3", "5"};
    setenv("NTC_JIT_THREADS", threads[_i], 1);
    static const int cfg[][5] = {{1, 16, 28, 3, 1}, {16, 16, 28, 3, 1}, {16, 32, 28, 3, 2},
                                 {32, 32, 14, 3, 1}, {64, 64, 7, 3, 1}, {64, 64, 7, 1, 1}};
    for (size_t t = 0; t < sizeof cfg / sizeof cfg[0]; t++) {
        ntc_graph *g = resnet_conv(cfg[t], t, true);
        check_calls(g, 1 + (int)t % 2, 3, "team conv");
        ntc_graph_free(g);
    }
    unsigned st = 31u + (unsigned)_i;
    for (int t = 0; t < 4; t++) {
        int C = rnd(&st, 1, 7), F = rnd(&st, 1, 40), H = rnd(&st, 3, 17), W = rnd(&st, 3, 17);
        char shape[64];
        snprintf(shape, sizeof shape, "N,%d,%d,%d", C, H, W);
        int x;
        ntc_graph *g = input_graph(shape, &x);
        int c = conv(g, "conv", x, F, rnd(&st, 1, 2) * 2 - 1, rnd(&st, 1, 2), rnd(&st, 0, 1), t % 2);
        ntc_graph_add_output(g, "y", out_of(g, c));
        fill_params(g, st);
        check_calls(g, 1, 3, "team random conv");
        ntc_graph_free(g);
    }
    ntc_graph *g = tu_resnet(20, 0);
    check_calls(g, 1, 4, "team resnet20");
    ntc_graph_free(g);
    unsetenv("NTC_JIT_THREADS");
}
END_TEST

/* The output-channel kernel (codegen_conv_oc.c: filter counts a multiple
 * of the vector width, at least 16 weights per filter): random input
 * channels, kernels 1..5, strides 1..3, dilations, asymmetric pads, with
 * the epilogues it fuses (batchnorm, relu, a residual add), at the host's
 * width and at 8 floats (AVX2: 16 registers), on one thread and on a team
 * of 3.  The optimised IR shows which kernel ran. */
START_TEST(conv_channel_vectors)
{
    setenv("NTC_JIT_KEEP_IR", "1", 1);
    if (_i)
        setenv("NTC_JIT_VECTOR_WIDTH", "8", 1);
    unsigned st = 4242u + (unsigned)_i;
    int oc_seen = 0;
    for (int t = 0; t < 8; t++) {
        int C = rnd(&st, 2, 40), F = 16 * rnd(&st, 1, 4), kh = rnd(&st, 1, 5), kw = rnd(&st, 1, 5);
        int dh = rnd(&st, 1, 2), dw = rnd(&st, 1, 2);
        int H = rnd(&st, (kh - 1) * dh + 1, 20), W = rnd(&st, (kw - 1) * dw + 1, 20);   /* the window fits */
        int x, c;
        char what[256];
        ntc_graph *g = random_conv(&st, C, H, W, F, kh, kw, dh, dw, &x, &c, what, sizeof what);
        ntc_attrs *a = &g->nodes[c].a;
        int y = out_of(g, c);
        if (t % 3 >= 1)
            y = out_of(g, batchnorm(g, "bn", y));
        if (t % 3 == 2) {
            int r = conv(g, "shortcut", x, F, 1, 1, 0, false);
            g->nodes[r].a = *a;
            int in[2] = {y, out_of(g, r)};
            y = out_of(g, ntc_graph_add_node(g, NTC_OP_add, "add", in, 2, -1));
        }
        if (t % 3 >= 1)
            y = out_of(g, node1(g, NTC_OP_relu, "relu", y));
        ntc_graph_add_output(g, "y", y);
        fill_params(g, st);
        snprintf(what + strlen(what), sizeof what - strlen(what), " epilogue %d", t % 3);
        ntc_err err = {0};
        ntc_jit *j = ntc_jit_compile(g, &err);
        ck_assert_msg(j != NULL, "%s: %s", what, ntc_err_str(&err));
        bool oc = strstr(ntc_jit_ir(j), "conv.oc") != NULL, want = C * a->kernel[0] * a->kernel[1] >= 16;
        ck_assert_msg(oc == want, "%s: output-channel kernel %s", what, oc ? "used" : "not used");
        oc_seen += oc;
        ntc_jit_free(j);
        check_graph(g, 1 + t % 3, what);
        setenv("NTC_JIT_THREADS", "3", 1);
        check_calls(g, 1, 2, what);
        unsetenv("NTC_JIT_THREADS");
        ntc_graph_free(g);
    }
    ck_assert_int_ge(oc_seen, 4);
    unsetenv("NTC_JIT_VECTOR_WIDTH");
    unsetenv("NTC_JIT_KEEP_IR");
}
END_TEST

/* Values between output-channel convolutions stay blocked (see
 * plan_layouts in codegen_plan.c).  A chain where they do: a blocked
 * convolution input (conv.ocb in the IR), blocked residuals into blocked
 * and into NCHW outputs, an NCHW residual (the graph input) forcing an
 * NCHW output, a stride-2 and a 1x1 convolution; and with `side` a
 * three-input add reading three of those values, which must then be NCHW
 * for it.  JIT vs naive loops vs interpreter, on one thread and a team. */
static ntc_graph *blocked_chain(bool side)
{
    int x;
    ntc_graph *g = input_graph("N,32,9,9", &x);
    int r0 = out_of(g, node1(g, NTC_OP_relu, "r0", out_of(g, conv(g, "c0", x, 32, 3, 1, 1, true))));
    int in0[2] = {out_of(g, conv(g, "c1", r0, 32, 3, 1, 1, false)), x};   /* residual: the input, NCHW */
    int v1 = out_of(g, ntc_graph_add_node(g, NTC_OP_add, "a1", in0, 2, -1));
    int c2 = out_of(g, batchnorm(g, "bn2", out_of(g, conv(g, "c2", v1, 32, 3, 1, 1, true))));
    int in2[2] = {c2, v1};
    int v2 = out_of(g, node1(g, NTC_OP_relu, "r2", out_of(g, ntc_graph_add_node(g, NTC_OP_add, "a2", in2, 2, -1))));
    int v3 = out_of(g, node1(g, NTC_OP_relu, "r3", out_of(g, conv(g, "c3", v2, 32, 1, 1, 0, false))));
    int in4[2] = {out_of(g, conv(g, "c4", v3, 32, 3, 1, 1, false)), v2};
    int v4 = out_of(g, ntc_graph_add_node(g, NTC_OP_add, "a4", in4, 2, -1));
    if (side) {
        int three[3] = {v4, v1, v3};
        v4 = out_of(g, ntc_graph_add_node(g, NTC_OP_add, "side", three, 3, -1));
    }
    int y = out_of(g, conv(g, "c5", v4, 64, 3, 2, 1, true));
    int in6[2] = {out_of(g, conv(g, "c6", y, 64, 3, 1, 1, false)), y};
    ntc_graph_add_output(g, "y", out_of(g, ntc_graph_add_node(g, NTC_OP_add, "a6", in6, 2, -1)));
    fill_params(g, side ? 91u : 92u);
    return g;
}

START_TEST(conv_blocked_layouts)
{
    setenv("NTC_JIT_KEEP_IR", "1", 1);
    for (int side = 0; side < 2; side++) {
        ntc_graph *g = blocked_chain(side);
        ntc_err err = {0};
        ntc_jit *j = ntc_jit_compile(g, &err);
        ck_assert_msg(j != NULL, "%s", ntc_err_str(&err));
        /* c1, c3, c4, c6 read blocked values without the side add; with it
         * c2, c3 and c5 read NCHW ones (c4's and c6's inputs stay blocked) */
        ck_assert_msg(strstr(ntc_jit_ir(j), "conv.ocb") != NULL, "no convolution reads a blocked input");
        ntc_jit_free(j);
        check_graph(g, 2, side ? "blocked chain with a side reader" : "blocked chain");
        setenv("NTC_JIT_THREADS", "3", 1);
        check_calls(g, 1, 2, side ? "team, blocked chain with a side reader" : "team, blocked chain");
        unsetenv("NTC_JIT_THREADS");
        ntc_graph_free(g);
    }
    unsetenv("NTC_JIT_KEEP_IR");
}
END_TEST

/* Pools with every combination of ceil_mode and count_include_pad. */
START_TEST(pool_random)
{
    unsigned st = 99u + (unsigned)_i;
    for (int t = 0; t < 8; t++) {
        int C = rnd(&st, 1, 4), H = rnd(&st, 4, 13), W = rnd(&st, 4, 13);
        char shape[64];
        snprintf(shape, sizeof shape, "N,%d,%d,%d", C, H, W);
        int x;
        ntc_graph *g = input_graph(shape, &x);
        int p = node1(g, t % 2 ? NTC_OP_avgpool : NTC_OP_maxpool, "pool", x);
        ntc_attrs *a = &g->nodes[p].a;
        set2(a->kernel, rnd(&st, 2, 4), rnd(&st, 1, 4));
        set2(a->stride, rnd(&st, 1, 3), rnd(&st, 1, 3));
        for (int i = 0; i < 4; i++)
            a->pad[i] = rnd(&st, 0, a->kernel[i % 2] - 1);
        a->ceil_mode = t / 2 % 2;
        if (t % 2)
            a->count_include_pad = t / 4 % 2;
        ntc_graph_add_output(g, "y", out_of(g, p));
        fill_params(g, st);
        char what[128];
        snprintf(what, sizeof what, "%s %dx%d k%dx%d s%dx%d ceil %d incl %d", ntc_op_name(g->nodes[p].op), H, W,
                 a->kernel[0], a->kernel[1], a->stride[0], a->stride[1], a->ceil_mode, a->count_include_pad);
        check_graph(g, 2, what);
        ntc_graph_free(g);
    }
}
END_TEST

/* Max pools in codegen_pool.c's vector form (column stride 1 or 2) and
 * its scalar form (stride 3), at the host's width and at 8 floats: the
 * JIT's output equals the interpreter's exactly, NaN for NaN, on inputs
 * with NaNs, ties and -0.0 next to 0.0, rows of several vectors, every
 * pad up to kernel - 1 and ceil mode. */
START_TEST(maxpool_vector_form)
{
    setenv("NTC_JIT_KEEP_IR", "1", 1);
    if (_i)
        setenv("NTC_JIT_VECTOR_WIDTH", "8", 1);
    unsigned st = 777u + (unsigned)_i;
    int vector_seen = 0;
    for (int t = 0; t < 10; t++) {
        int C = rnd(&st, 1, 3), H = rnd(&st, 4, 20), W = rnd(&st, 4, 45);
        char shape[64];
        snprintf(shape, sizeof shape, "N,%d,%d,%d", C, H, W);
        int x;
        ntc_graph *g = input_graph(shape, &x);
        int p = node1(g, NTC_OP_maxpool, "pool", x);
        ntc_attrs *a = &g->nodes[p].a;
        set2(a->kernel, rnd(&st, 1, 4), rnd(&st, 1, 4));
        set2(a->stride, rnd(&st, 1, 3), t % 4 == 3 ? 3 : rnd(&st, 1, 2));
        for (int i = 0; i < 4; i++)
            a->pad[i] = rnd(&st, 0, a->kernel[i % 2] - 1);
        a->ceil_mode = rnd(&st, 0, 1);
        ntc_graph_add_output(g, "y", out_of(g, p));
        char what[128];
        snprintf(what, sizeof what, "maxpool C%d %dx%d k%dx%d s%dx%d p%d,%d,%d,%d ceil %d", C, H, W, a->kernel[0],
                 a->kernel[1], a->stride[0], a->stride[1], a->pad[0], a->pad[1], a->pad[2], a->pad[3], a->ceil_mode);
        ntc_err err = {0};
        ntc_jit *j = ntc_jit_compile(g, &err);
        ck_assert_msg(j != NULL, "%s: %s", what, ntc_err_str(&err));
        bool vector = strstr(ntc_jit_ir(j), "maxpool.vector") != NULL;
        ck_assert_msg(vector == (a->stride[1] <= 2), "%s: vector form %s", what, vector ? "used" : "not used");
        vector_seen += vector;

        const int batch = 2;
        int64_t n_in = numel(g, x) * batch, n_out = numel(g, g->outputs[0].value) * batch;
        float *in = random_input(g, batch, st), *y = malloc(sizeof(float) * (size_t)n_out);
        for (int64_t i = 0; i < n_in; i++) {
            unsigned r = (unsigned)rnd(&st, 0, 99);
            if (r < 3)
                in[i] = NAN;
            else if (r < 13)
                in[i] = 0.5f;   /* ties */
            else if (r < 18)
                in[i] = r % 2 ? 0.0f : -0.0f;
        }
        ntc_exec *ex = ntc_exec_new(g, batch, &err);
        ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
        const float *ins[] = {in};
        ck_assert_msg(ntc_exec_run(ex, ins, batch, &err) == 0, "%s", ntc_err_str(&err));
        ck_assert_int_eq(ntc_jit_run(j, in, batch, y, &err), 0);
        const float *ref = ntc_exec_output(ex, 0);
        for (int64_t i = 0; i < n_out; i++) {
            bool same = isnan(ref[i]) ? isnan(y[i]) : memcmp(&ref[i], &y[i], sizeof(float)) == 0;
            ck_assert_msg(same, "%s: output %lld is %g, the interpreter's %g", what, (long long)i, y[i], ref[i]);
        }
        ntc_exec_free(ex);
        ntc_jit_free(j);
        free(in);
        free(y);
        ntc_graph_free(g);
    }
    ck_assert_int_ge(vector_seen, 5);
    unsetenv("NTC_JIT_VECTOR_WIDTH");
    unsetenv("NTC_JIT_KEEP_IR");
}
END_TEST

/* x -> conv -> bn -> relu -> {conv -> bn, proxy: maxpool -> conv} -> mix
 *   -> add(shortcut) -> relu -> gap -> flatten -> linear -> softmax */
static ntc_graph *small_net(int C, int HW)
{
    char shape[64];
    snprintf(shape, sizeof shape, "N,%d,%d,%d", C, HW, HW);
    int x;
    ntc_graph *g = input_graph(shape, &x);
    int c1 = conv(g, "c1", x, 8, 3, 1, 1, false);
    int r1 = node1(g, NTC_OP_relu, "r1", out_of(g, batchnorm(g, "bn1", out_of(g, c1))));
    int u = batchnorm(g, "bn2", out_of(g, conv(g, "c2", out_of(g, r1), 8, 3, 1, 1, false)));
    int mp = node1(g, NTC_OP_maxpool, "mp", out_of(g, r1));
    set2(g->nodes[mp].a.kernel, 3, 3);
    for (int i = 0; i < 4; i++)
        g->nodes[mp].a.pad[i] = 1;
    int pr = conv(g, "proxy", out_of(g, mp), 8, 1, 1, 0, true);
    int ins[2] = {out_of(g, u), out_of(g, pr)};
    int mix = ntc_graph_add_node(g, NTC_OP_mix, "mix", ins, 2, -1);
    ntc_node_add_param(g, mix, "alpha", NULL);
    int sc[2] = {out_of(g, mix), out_of(g, r1)};
    int add = ntc_graph_add_node(g, NTC_OP_add, "add", sc, 2, -1);
    int r2 = node1(g, NTC_OP_relu, "r2", out_of(g, add));
    int gap = node1(g, NTC_OP_global_avgpool, "gap", out_of(g, r2));
    int fl = node1(g, NTC_OP_flatten, "flat", out_of(g, gap));
    int fc = node1(g, NTC_OP_linear, "fc", out_of(g, fl));
    g->nodes[fc].a.units = 10;
    ntc_node_add_param(g, fc, "weight", NULL);
    ntc_node_add_param(g, fc, "bias", NULL);
    int sm = node1(g, NTC_OP_softmax, "sm", out_of(g, fc));
    ntc_graph_add_output(g, "probs", out_of(g, sm));
    fill_params(g, 42u);
    return g;
}

START_TEST(small_network)
{
    ntc_graph *g = small_net(3, 12);
    check_graph(g, 1, "small net, batch 1");
    check_graph(g, 5, "small net, batch 5");
    check_graph(g, 64, "small net, batch 64");
    ntc_graph_free(g);
}
END_TEST

/* Batchnorm, softmax over a middle axis and avgpool on non-square input. */
START_TEST(misc_ops)
{
    int x;
    ntc_graph *g = input_graph("N,5,6,7", &x);
    int bn = batchnorm(g, "bn", x);
    int ap = node1(g, NTC_OP_avgpool, "ap", out_of(g, bn));
    set2(g->nodes[ap].a.kernel, 2, 3);
    set2(g->nodes[ap].a.stride, 2, 2);
    g->nodes[ap].a.ceil_mode = 1;
    int sm = node1(g, NTC_OP_softmax, "sm", out_of(g, ap));
    g->nodes[sm].a.axis = 1;
    ntc_graph_add_output(g, "y", out_of(g, sm));
    fill_params(g, 5u);
    check_graph(g, 3, "bn, avgpool, softmax axis 1");
    ntc_graph_free(g);
}
END_TEST

/* How many functions the IR defines whose name contains `part`. */
static int defines(const char *ir, const char *part)
{
    int n = 0;
    for (const char *line = ir; line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        const char *end = strchr(line, '\n'), *at = strstr(line, part);
        n += strncmp(line, "define ", 7) == 0 && at && (!end || at < end);
    }
    return n;
}

/* A mix whose single reader is a relu runs as one step (codegen_plan.c,
 * mix_chain): x -> {conv a, conv b} -> mix -> relu, and a second mix
 * read by a relu and by the add after it, which stays a step of its own. */
START_TEST(mix_relu_fused)
{
    setenv("NTC_JIT_KEEP_IR", "1", 1);
    int x;
    ntc_graph *g = input_graph("N,3,9,11", &x);
    int a = conv(g, "a", x, 4, 3, 1, 1, true), b = conv(g, "b", x, 4, 1, 1, 0, false);
    int ab[2] = {out_of(g, a), out_of(g, b)};
    int m1 = ntc_graph_add_node(g, NTC_OP_mix, "m1", ab, 2, -1);
    ntc_node_add_param(g, m1, "alpha", NULL);
    int r1 = node1(g, NTC_OP_relu, "r1", out_of(g, m1));
    int two[2] = {out_of(g, r1), out_of(g, a)};
    int m2 = ntc_graph_add_node(g, NTC_OP_mix, "m2", two, 2, -1);
    ntc_node_add_param(g, m2, "alpha", NULL);
    int r2 = node1(g, NTC_OP_relu, "r2", out_of(g, m2));
    int sum[2] = {out_of(g, r2), out_of(g, m2)};
    int add = ntc_graph_add_node(g, NTC_OP_add, "add", sum, 2, -1);
    ntc_graph_add_output(g, "y", out_of(g, add));
    fill_params(g, 21u);
    ntc_err err = {0};
    ntc_jit *j = ntc_jit_compile(g, &err);
    ck_assert_msg(j != NULL, "%s", ntc_err_str(&err));
    const char *ir = ntc_jit_ir(j);
    ck_assert_msg(defines(ir, ".mix.fused(") == 1, "m1 -> r1 is not one step, or m2 -> r2 is although add reads m2");
    ck_assert_msg(defines(ir, ".mix(") == 1 && defines(ir, ".relu(") == 1, "m2 and r2 are not steps of their own");
    ntc_jit_free(j);
    check_graph(g, 3, "mix -> relu fused, mix read twice");
    ntc_graph_free(g);
    unsetenv("NTC_JIT_KEEP_IR");
}
END_TEST

/* A 2-D graph: linear -> relu -> linear (no bias) -> softmax, with a mix
 * of three inputs and an add of three in between. */
START_TEST(mlp)
{
    int x;
    ntc_graph *g = input_graph("N,37", &x);
    int l1 = node1(g, NTC_OP_linear, "l1", x);
    g->nodes[l1].a.units = 19;
    ntc_node_add_param(g, l1, "weight", NULL);
    ntc_node_add_param(g, l1, "bias", NULL);
    int r = node1(g, NTC_OP_relu, "r", out_of(g, l1));
    int three[3] = {out_of(g, l1), out_of(g, r), out_of(g, l1)};
    int mix = ntc_graph_add_node(g, NTC_OP_mix, "mix", three, 3, -1);
    ntc_node_add_param(g, mix, "alpha", NULL);
    int sum3[3] = {out_of(g, mix), out_of(g, r), out_of(g, mix)};
    int add = ntc_graph_add_node(g, NTC_OP_add, "add", sum3, 3, -1);
    int l2 = node1(g, NTC_OP_linear, "l2", out_of(g, add));
    g->nodes[l2].a.units = 7;
    ntc_node_add_param(g, l2, "weight", NULL);
    int sm = node1(g, NTC_OP_softmax, "sm", out_of(g, l2));
    ntc_graph_add_output(g, "p", out_of(g, sm));
    fill_params(g, 9u);
    check_graph(g, 4, "mlp");
    ntc_graph_free(g);
}
END_TEST

/* Nodes that do not reach the output are not compiled (so their missing
 * weights do not matter); a missing weight on the path is named. */
START_TEST(errors)
{
    ntc_graph *g = small_net(2, 6);
    int dead = conv(g, "unused", g->inputs[0], 4, 3, 1, 1, false);
    ntc_err err = {0};
    ck_assert_int_eq(ntc_graph_infer_shapes(g, &err), 0);
    (void)dead;
    ntc_jit *j = ntc_jit_compile(g, &err);
    ck_assert_msg(j != NULL, "%s", ntc_err_str(&err));
    ntc_jit_free(j);

    ntc_value *w = &g->values[ntc_graph_find_value(g, "c2.weight")];
    float *keep = w->data;
    w->data = NULL;
    ck_assert_ptr_null(ntc_jit_compile(g, &err));
    ck_assert_msg(strstr(err.msg, "c2") && strstr(err.msg, "c2.weight"), "%s", err.msg);
    w->data = keep;

    ntc_graph_add_output(g, "second", g->nodes[ntc_graph_find_node(g, "r1")].out);
    ck_assert_ptr_null(ntc_jit_compile(g, &err));
    ck_assert_msg(strstr(err.msg, "one output"), "%s", err.msg);
    ntc_graph_free(g);
}
END_TEST

/* The generated convolution is vector code with fused multiply-adds
 * (NTC_JIT_KEEP_IR keeps the optimised IR). */
START_TEST(vector_code)
{
    setenv("NTC_JIT_KEEP_IR", "1", 1);
    int x;
    ntc_graph *g = input_graph("N,16,14,14", &x);
    ntc_graph_add_output(g, "y", out_of(g, conv(g, "conv", x, 16, 3, 1, 1, true)));
    fill_params(g, 3u);
    ntc_err err = {0};
    ntc_jit *j = ntc_jit_compile(g, &err);
    ck_assert_msg(j != NULL, "%s", ntc_err_str(&err));
    const char *ir = ntc_jit_ir(j);
    ck_assert_ptr_nonnull(ir);
    ck_assert_msg(strstr(ir, "x float> @llvm.fmuladd.v") || strstr(ir, "x float> @llvm.fma.v"),
                  "no vector FMA in the generated code");
    ntc_jit_free(j);
    ntc_graph_free(g);
    unsetenv("NTC_JIT_KEEP_IR");
}
END_TEST

/* The demo backbone: ResNet-20 on 1x28x28 images, against the interpreter
 * (the naive loops are too slow for it at this batch). */
START_TEST(resnet20)
{
    ntc_err err = {0};
    ntc_graph *g = tu_resnet(20, 11);
    /* Non-trivial batchnorm statistics, so folding them wrongly shows. */
    unsigned st = 5u;
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == NTC_OP_batchnorm)
            for (int k = 0; k < 4; k++) {
                ntc_value *v = &g->values[g->nodes[i].par[k]];
                for (int64_t e = 0; e < ntc_shape_numel(&v->shape); e++)
                    v->data[e] = k == 3 ? 1.0f + 0.5f * tu_randf(&st) : v->data[e] + 0.2f * tu_randf(&st);
            }
    ntc_jit *j = ntc_jit_compile(g, &err);
    ck_assert_msg(j != NULL, "%s", ntc_err_str(&err));
    const int batch = 7;
    float *x = random_input(g, batch, 3u);
    int64_t on = numel(g, g->outputs[0].value);
    float *y = malloc(sizeof(float) * (size_t)(on * batch));
    ck_assert_int_eq(ntc_jit_run(j, x, batch, y, &err), 0);
    ntc_exec *ex = ntc_exec_new(g, batch, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    const float *ins[] = {x};
    ck_assert_int_eq(ntc_exec_run(ex, ins, batch, &err), 0);
    double e = tu_rel_error(y, ntc_exec_output(ex, 0), on * batch);
    ck_assert_msg(e <= TOL, "resnet20: JIT vs interpreter: relative error %g", e);
    /* batch 1 gives the same first item as the batch of 7 */
    float y1[64];
    ck_assert_int_le(on, 64);
    ck_assert_int_eq(ntc_jit_run(j, x, 1, y1, &err), 0);
    ck_assert_int_eq(memcmp(y1, y, sizeof(float) * (size_t)on), 0);
    ntc_exec_free(ex);
    ntc_jit_free(j);
    ntc_graph_free(g);
    free(x);
    free(y);
}
END_TEST

/* ---- shared objects ------------------------------------------------------------ */

/* x -> universal block u1 (conv, bn, relu) [-> universal block u2 (conv,
 * relu) if extra] -> task block head (gap, flatten, linear).  Parameters
 * are a function of their name (universal ones identical in every graph
 * built here); the head's also of task_seed. */
static ntc_graph *block_net(bool extra, unsigned task_seed)
{
    int x;
    ntc_graph *g = input_graph("N,2,9,9", &x);
    int u1 = ntc_graph_add_block(g, "u1", NTC_ROLE_UNIVERSAL);
    int c = ntc_graph_add_node(g, NTC_OP_conv2d, "u1.conv", &x, 1, u1);
    g->nodes[c].a.filters = 6;
    set2(g->nodes[c].a.kernel, 3, 3);
    ntc_node_add_param(g, c, "weight", NULL);
    int v = out_of(g, c);
    int bn = ntc_graph_add_node(g, NTC_OP_batchnorm, "u1.bn", &v, 1, u1);
    const char *slots[] = {"scale", "bias", "mean", "var"};
    for (int i = 0; i < 4; i++)
        ntc_node_add_param(g, bn, slots[i], NULL);
    v = out_of(g, bn);
    v = out_of(g, ntc_graph_add_node(g, NTC_OP_relu, "u1.relu", &v, 1, u1));
    if (extra) {
        int u2 = ntc_graph_add_block(g, "u2", NTC_ROLE_UNIVERSAL);
        int c2 = ntc_graph_add_node(g, NTC_OP_conv2d, "u2.conv", &v, 1, u2);
        g->nodes[c2].a.filters = 6;
        set2(g->nodes[c2].a.kernel, 3, 3);
        for (int i = 0; i < 4; i++)
            g->nodes[c2].a.pad[i] = 1;
        ntc_node_add_param(g, c2, "weight", NULL);
        v = out_of(g, c2);
        v = out_of(g, ntc_graph_add_node(g, NTC_OP_relu, "u2.relu", &v, 1, u2));
    }
    int head = ntc_graph_add_block(g, "head", NTC_ROLE_TASK);
    v = out_of(g, ntc_graph_add_node(g, NTC_OP_global_avgpool, "gap", &v, 1, head));
    v = out_of(g, ntc_graph_add_node(g, NTC_OP_flatten, "flat", &v, 1, head));
    int fc = ntc_graph_add_node(g, NTC_OP_linear, "fc", &v, 1, head);
    g->nodes[fc].a.units = 4;
    ntc_node_add_param(g, fc, "weight", NULL);
    ntc_node_add_param(g, fc, "bias", NULL);
    ntc_graph_add_output(g, "y", out_of(g, fc));
    fill_params(g, 0);
    for (int p = 0; p < g->n_values; p++) {
        ntc_value *val = &g->values[p];
        if (val->kind != NTC_VAL_PARAM)
            continue;
        unsigned st = 2166136261u ^ (strncmp(val->name, "fc.", 3) ? 0 : task_seed);
        for (const char *ch = val->name; *ch; ch++)
            st = (st ^ (unsigned char)*ch) * 16777619u;
        for (int64_t i = 0; i < ntc_shape_numel(&val->shape); i++)
            val->data[i] = strstr(val->name, ".var") ? 1.0f + 0.5f * tu_randf(&st) : tu_randf(&st);
    }
    return g;
}

typedef void *(*create_fn)(const char *, const char *, char *, size_t);
typedef int (*run_fn)(void *, const float *, int64_t, float *);
typedef void (*destroy_fn)(void *);

typedef struct {
    void *lib, *task;
    run_fn run;
    destroy_fn destroy;
    char err[512];
} loaded;

/* dlopens dir/name.so and creates its task (default weight files unless
 * universal is given); task NULL with l->err on failure. */
static loaded load_task(const char *dir, const char *name, const char *universal)
{
    loaded l = {0};
    char path[512], sym[128];
    snprintf(path, sizeof path, "%s/%s.so", dir, name);
    l.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(l.lib != NULL, "dlopen %s: %s", path, dlerror());
    snprintf(sym, sizeof sym, "%s_create", name);
    create_fn create = (create_fn)dlsym(l.lib, sym);
    snprintf(sym, sizeof sym, "%s_run", name);
    l.run = (run_fn)dlsym(l.lib, sym);
    snprintf(sym, sizeof sym, "%s_destroy", name);
    l.destroy = (destroy_fn)dlsym(l.lib, sym);
    ck_assert(create && l.run && l.destroy);
    ck_assert_ptr_null(dlsym(l.lib, "ntc_task_run"));   /* the generated code stays hidden */
    l.task = create(NULL, universal, l.err, sizeof l.err);
    return l;
}

static void unload(loaded *l)
{
    if (l->task)
        l->destroy(l->task);
    dlclose(l->lib);
}

/* The loaded task's outputs equal the JIT's on the same graph. */
static void check_task(loaded *l, ntc_graph *g, int batch)
{
    ck_assert_msg(l->task != NULL, "%s", l->err);
    ntc_err err = {0};
    ntc_jit *j = ntc_jit_compile(g, &err);
    ck_assert_msg(j != NULL, "%s", ntc_err_str(&err));
    int64_t on = ntc_jit_output_numel(j);
    float *x = random_input(g, batch, 77u), *y = malloc(sizeof(float) * (size_t)(on * batch)),
          *z = malloc(sizeof(float) * (size_t)(on * batch));
    ck_assert_int_eq(ntc_jit_run(j, x, batch, y, &err), 0);
    ck_assert_int_eq(l->run(l->task, x, batch, z), 0);
    double e = tu_rel_error(z, y, on * batch);
    ck_assert_msg(e <= TOL, ".so vs JIT: relative error %g", e);
    /* Single items: with several CPUs the task runs them on a team of
     * threads or on one, timing both (the first calls try each). */
    int64_t in = ntc_jit_input_numel(j);
    for (int k = 0; k < 4; k++) {
        int i = k % batch;
        memset(z, 0xff, sizeof(float) * (size_t)on);   /* NaN: every output must be written */
        ck_assert_int_eq(l->run(l->task, x + i * in, 1, z), 0);
        e = tu_rel_error(z, y + i * on, on);
        ck_assert_msg(e <= TOL, ".so vs JIT, item %d alone, call %d: relative error %g", i, k, e);
    }
    ntc_jit_free(j);
    free(x);
    free(y);
    free(z);
}

static long file_size(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void compile_to(ntc_graph *g, const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.so", dir, name);
    ntc_err err = {0};
    ck_assert_msg(ntc_aot_compile(g, path, NULL, &err) == 0, "%s", ntc_err_str(&err));
}

/* Two tasks over one universal weights file: the second reuses every
 * universal tensor (file unchanged), a third with an extra universal block
 * appends without breaking the first two, and all three agree with the JIT. */
START_TEST(aot_shared_universal)
{
    const char *dir = tu_tmpdir();
    ntc_graph *a = block_net(false, 1), *b = block_net(false, 2), *c = block_net(true, 3);
    compile_to(a, dir, "task_a");
    long uni = file_size(dir, "universal.weights");
    ck_assert_int_lt(file_size(dir, "task_a.weights"), uni);
    compile_to(b, dir, "task_b");
    ck_assert_int_eq(file_size(dir, "universal.weights"), uni);
    compile_to(c, dir, "task_c");
    ck_assert_int_gt(file_size(dir, "universal.weights"), uni);

    loaded la = load_task(dir, "task_a", NULL), lb = load_task(dir, "task_b", NULL), lc = load_task(dir, "task_c", NULL);
    check_task(&la, a, 5);
    check_task(&lb, b, 1);
    check_task(&lc, c, 3);
    unload(&la);
    unload(&lb);
    unload(&lc);
    ntc_graph_free(a);
    ntc_graph_free(b);
    ntc_graph_free(c);
}
END_TEST

/* The demo backbone as a shared object. */
START_TEST(aot_resnet20)
{
    const char *dir = tu_tmpdir();
    ntc_graph *g = tu_resnet(20, 0);
    compile_to(g, dir, "resnet");
    loaded l = load_task(dir, "resnet", NULL);
    check_task(&l, g, 9);
    unload(&l);
    ntc_graph_free(g);
}
END_TEST

/* Different universal weights are refused at compile time; a universal
 * file changed after compilation is refused at load time; a failing link
 * names the command. */
START_TEST(aot_errors)
{
    const char *dir = tu_tmpdir();
    ntc_graph *a = block_net(false, 1);
    compile_to(a, dir, "task_a");

    ntc_graph *other = block_net(false, 1);
    other->values[ntc_graph_find_value(other, "u1.conv.weight")].data[3] += 1.0f;
    char path[512];
    snprintf(path, sizeof path, "%s/other.so", dir);
    ntc_err err = {0};
    ck_assert_int_eq(ntc_aot_compile(other, path, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "u1.conv.weight") && strstr(err.msg, "another backbone"), "%s", err.msg);

    /* A universal file from another compilation, then the right one. */
    char uni2[512];
    snprintf(uni2, sizeof uni2, "%s/other.weights.universal", dir);
    ntc_aot_opts o = {.universal_weights = uni2};
    ck_assert_msg(ntc_aot_compile(other, path, &o, &err) == 0, "%s", ntc_err_str(&err));
    loaded l = load_task(dir, "task_a", uni2);
    ck_assert_ptr_null(l.task);
    ck_assert_msg(strstr(l.err, "checksum mismatch"), "%s", l.err);
    unload(&l);
    l = load_task(dir, "task_a", NULL);
    check_task(&l, a, 2);
    unload(&l);

    o = (ntc_aot_opts){.cc = "false"};
    snprintf(path, sizeof path, "%s/nolink.so", dir);
    ck_assert_int_eq(ntc_aot_compile(a, path, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "false -shared") && strstr(err.msg, "nolink"), "%s", err.msg);
    char f[600];
    snprintf(f, sizeof f, "%s/nolink.weights", dir);
    ck_assert_int_ne(access(f, F_OK), 0);   /* a failed link writes nothing of the task */
    snprintf(f, sizeof f, "%s/nolink.h", dir);
    ck_assert_int_ne(access(f, F_OK), 0);
    /* Another task compiled over task_a fails to link: task_a's .so, .h and
     * weights stay a matching set and still compute task_a. */
    ntc_graph *b = block_net(false, 7);
    snprintf(path, sizeof path, "%s/task_a.so", dir);
    ck_assert_int_eq(ntc_aot_compile(b, path, &o, &err), -1);
    l = load_task(dir, "task_a", NULL);
    check_task(&l, a, 2);
    unload(&l);
    ntc_graph_free(b);
    ntc_graph_free(a);
    ntc_graph_free(other);
}
END_TEST

/* A NetTailor student (mix nodes of up to four branches, proxies with
 * strided max pooling and 1x1 convolutions) with random alphas, before and
 * after pruning: JIT vs interpreter. */
START_TEST(tailored_and_pruned)
{
    ntc_err err = {0};
    ntc_graph *g = tu_resnet(20, 0);
    ck_assert_msg(ntc_run_passes(g, "tailor:max-skip=3", NTC_PASS_TRAINING, &err) == 0, "%s", ntc_err_str(&err));
    unsigned st = 31u;
    int mixes = 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].op == NTC_OP_mix) {
            ntc_value *a = &g->values[g->nodes[i].par[0]];
            for (int k = 0; k < g->nodes[i].n_in; k++)
                a->data[k] = 3.0f * tu_randf(&st);
            mixes++;
        }
    ck_assert_int_gt(mixes, 5);
    ck_assert_int_eq(ntc_graph_infer_shapes(g, &err), 0);
    check_graph_interp(g, 3, "tailored student");
    int live = live_nodes(g);
    ck_assert_msg(ntc_run_passes(g, "prune:universal=3:proxy-threshold=0.2", NTC_PASS_INFERENCE, &err) == 0, "%s",
                  ntc_err_str(&err));
    ck_assert_int_eq(ntc_graph_infer_shapes(g, &err), 0);
    ck_assert_int_lt(live_nodes(g), live);
    check_graph_interp(g, 3, "pruned student");
    /* and as a shared object */
    const char *dir = tu_tmpdir();
    compile_to(g, dir, "pruned");
    loaded l = load_task(dir, "pruned", NULL);
    check_task(&l, g, 4);
    unload(&l);
    ntc_graph_free(g);
}
END_TEST

/* The command line: ntc compile writes the .so, header and weights; usage
 * errors exit 2 and name the problem. */
START_TEST(cli_compile)
{
    const char *dir = tu_tmpdir();
    char *out = NULL;
    ck_assert_int_eq(tu_ntc(&out, "new resnet --depth 8 --input 1x12x12 --classes 3 -o %s/bb.xml", dir), 0);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "compile %s/bb.xml -o %s/task.so --universal-weights %s/u.weights", dir, dir, dir), 0);
    free(out);
    const char *files[] = {"task.so", "task.h", "task.weights", "u.weights"};
    for (int i = 0; i < 4; i++)
        ck_assert_int_gt(file_size(dir, files[i]), 0);
    ck_assert_int_eq(tu_ntc(&out, "compile %s/bb.xml", dir), 2);
    ck_assert_msg(strstr(out, "-o TASK.so"), "%s", out);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "compile %s/bb.xml -o %s/x.so --cc false", dir, dir), 1);
    ck_assert_msg(strstr(out, "ntc: error: linking the task failed") && strstr(out, "false -shared"), "%s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jit");
    TCase *tc = tcase_create("jit");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, conv_random, 0, 4);
    tcase_add_test(tc, conv_resnet_shapes);
    tcase_add_loop_test(tc, team_split, 0, 3);
    tcase_add_test(tc, conv_padding_layouts);
    tcase_add_loop_test(tc, conv_narrow_vectors, 0, 2);
    tcase_add_loop_test(tc, conv_channel_vectors, 0, 2);
    tcase_add_test(tc, conv_blocked_layouts);
    tcase_add_loop_test(tc, pool_random, 0, 3);
    tcase_add_loop_test(tc, maxpool_vector_form, 0, 2);
    tcase_add_test(tc, small_network);
    tcase_add_test(tc, misc_ops);
    tcase_add_test(tc, mix_relu_fused);
    tcase_add_test(tc, mlp);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, vector_code);
    tcase_add_test(tc, resnet20);
    tcase_add_test(tc, tailored_and_pruned);
    tcase_add_test(tc, aot_shared_universal);
    tcase_add_test(tc, aot_resnet20);
    tcase_add_test(tc, aot_errors);
    tcase_add_test(tc, cli_compile);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
