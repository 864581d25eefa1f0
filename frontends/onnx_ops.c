/* One translator per ONNX operator ntc imports.  Each reads its node's
 * attributes with the ONNX spec's defaults, checks that the node means
 * what the ntc op computes, and either adds that op or refuses the node
 * with a message naming it, its op and the opset.  docs/onnx.md lists
 * what each translator accepts. */
#include "onnx_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WINDOW 65536         /* kernel, stride, dilation and padding limit */

typedef int (*translator)(onnx_importer *im, const Onnx__NodeProto *np);

static int finish(onnx_importer *im, const Onnx__NodeProto *np, int node)
{
    return onnx_bind_act(im, np, im->g->nodes[node].out);
}

static int int_in(onnx_importer *im, const Onnx__NodeProto *np, const char *what, int64_t v, int64_t lo,
                  int64_t hi, int *out)
{
    if (v < lo || v > hi)
        return onnx_node_fail(im, np, "%s %" PRId64 " is out of range %" PRId64 "..%" PRId64, what, v, lo, hi);
    *out = (int)v;
    return 0;
}

static const ntc_shape *act_shape(onnx_importer *im, int v) { return &im->g->values[v].shape; }

static void shape_str(const ntc_shape *s, char *buf, size_t len)
{
    buf[0] = '[';
    ntc_shape_format(s, buf + 1, len - 2);
    strcat(buf, "]");
}

/* ---- windows: Conv and the pools ---- */

typedef struct {
    int kernel[2], stride[2], dilation[2], pad[4];
} window;

/* Resolves the padding of a sliding window over input x per ONNX: explicit
 * `pads` (begin h, begin w, end h, end w) when auto_pad is NOTSET; none for
 * VALID; for SAME_UPPER / SAME_LOWER the total padding that makes the
 * output ceil(in / stride), the odd unit at the end / at the beginning. */
static int resolve_pads(onnx_importer *im, const Onnx__NodeProto *np, int x, window *w)
{
    const char *auto_pad;
    int64_t pads[4] = {0, 0, 0, 0};
    bool given;
    if (onnx_attr_string(im, np, "auto_pad", "NOTSET", &auto_pad) ||
        onnx_attr_ints(im, np, "pads", 4, pads, &given))
        return -1;
    bool same_upper = !strcmp(auto_pad, "SAME_UPPER"), same_lower = !strcmp(auto_pad, "SAME_LOWER");
    if (!same_upper && !same_lower && strcmp(auto_pad, "VALID") && strcmp(auto_pad, "NOTSET"))
        return onnx_node_fail(im, np, "auto_pad '%s' is unknown (NOTSET, SAME_UPPER, SAME_LOWER or VALID)",
                              auto_pad);
    if (given && strcmp(auto_pad, "NOTSET"))
        return onnx_node_fail(im, np, "'pads' cannot be given together with auto_pad %s", auto_pad);
    if (!same_upper && !same_lower) {
        for (int i = 0; i < 4; i++)
            if (int_in(im, np, "padding", pads[i], 0, MAX_WINDOW, &w->pad[i]))
                return -1;
        return 0;
    }
    const ntc_shape *s = act_shape(im, x);
    if (s->rank != 4)
        return onnx_node_fail(im, np, "expects a 4-D [N,C,H,W] input");
    for (int i = 0; i < 2; i++) {
        int64_t in = s->dims[2 + i], out = (in + w->stride[i] - 1) / w->stride[i];
        int64_t span = (int64_t)w->dilation[i] * (w->kernel[i] - 1) + 1;
        int64_t total = (out - 1) * w->stride[i] + span - in;
        total = total > 0 ? total : 0;
        int64_t small = total / 2, big = total - small;
        w->pad[i] = (int)(same_upper ? small : big);
        w->pad[i + 2] = (int)(same_upper ? big : small);
    }
    return 0;
}

/* kernel_shape (required unless `kernel` gives it), strides, dilations
 * and the padding of a 2-D window. */
static int read_window(onnx_importer *im, const Onnx__NodeProto *np, int x, const int64_t *kernel, window *w)
{
    int64_t k[2], s[2] = {1, 1}, d[2] = {1, 1};
    bool has_k, has_s, has_d;
    if (onnx_attr_ints(im, np, "kernel_shape", 2, k, &has_k) || onnx_attr_ints(im, np, "strides", 2, s, &has_s) ||
        onnx_attr_ints(im, np, "dilations", 2, d, &has_d))
        return -1;
    if (kernel) {
        if (has_k && (k[0] != kernel[0] || k[1] != kernel[1]))
            return onnx_node_fail(im, np, "kernel_shape %" PRId64 "x%" PRId64 " differs from the weight's %"
                                  PRId64 "x%" PRId64, k[0], k[1], kernel[0], kernel[1]);
        k[0] = kernel[0], k[1] = kernel[1];
    } else if (!has_k) {
        return onnx_node_fail(im, np, "the required attribute 'kernel_shape' is missing");
    }
    for (int i = 0; i < 2; i++)
        if (int_in(im, np, "kernel size", k[i], 1, MAX_WINDOW, &w->kernel[i]) ||
            int_in(im, np, "stride", s[i], 1, MAX_WINDOW, &w->stride[i]) ||
            int_in(im, np, "dilation", d[i], 1, MAX_WINDOW, &w->dilation[i]))
            return -1;
    return resolve_pads(im, np, x, w);
}

static void set_window(ntc_attrs *a, const window *w)
{
    memcpy(a->kernel, w->kernel, sizeof a->kernel);
    memcpy(a->stride, w->stride, sizeof a->stride);
    memcpy(a->pad, w->pad, sizeof a->pad);
}

static int conv(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides", NULL};
    int64_t group;
    if (onnx_check_attrs(im, np, attrs) || onnx_attr_int(im, np, "group", 1, &group))
        return -1;
    int x = onnx_input_act(im, np, 0);
    const onnx_const *wt = x < 0 ? NULL : onnx_input_const(im, np, 1);
    const onnx_const *b = NULL;
    if (!wt || (onnx_has_input(np, 2) && !(b = onnx_input_const(im, np, 2))))
        return -1;
    if (group != 1)
        return onnx_node_fail(im, np, "group=%" PRId64 " (grouped or depthwise convolution) is not supported: "
                              "ntc's conv2d has group 1", group);
    if (wt->is_int || wt->rank != 4)
        return onnx_node_fail(im, np, "the weight must be a float tensor of rank 4 (a 2-D convolution), it has "
                              "rank %d", wt->rank);
    if (b && b->is_int)
        return onnx_node_fail(im, np, "the bias must be a float tensor");
    window w;
    int filters = 0;
    if (read_window(im, np, x, wt->dims + 2, &w) ||
        int_in(im, np, "number of filters", wt->dims[0], 1, INT32_MAX, &filters))
        return -1;
    int n = onnx_add_node(im, np, NTC_OP_conv2d, &x, 1);
    if (n < 0)
        return -1;
    ntc_attrs *a = &im->g->nodes[n].a;
    a->filters = filters;
    set_window(a, &w);
    memcpy(a->dilation, w.dilation, sizeof a->dilation);
    if (onnx_infer_node(im, np, n) || onnx_set_param(im, np, n, "weight", wt->f, wt->count))
        return -1;
    if (b && onnx_set_param(im, np, n, "bias", b->f, b->count))
        return -1;
    return finish(im, np, n);
}

static int pool(onnx_importer *im, const Onnx__NodeProto *np, ntc_op op)
{
    static const char *const max_attrs[] = {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                                            "storage_order", "strides", NULL};
    static const char *const avg_attrs[] = {"auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads",
                                            "strides", NULL};
    int64_t ceil_mode, count_include_pad;
    if (onnx_check_attrs(im, np, op == NTC_OP_maxpool ? max_attrs : avg_attrs) ||
        onnx_attr_int(im, np, "ceil_mode", 0, &ceil_mode) ||
        onnx_attr_int(im, np, "count_include_pad", 0, &count_include_pad))
        return -1;
    int x = onnx_input_act(im, np, 0);
    window w;
    if (x < 0 || read_window(im, np, x, NULL, &w))
        return -1;
    if (w.dilation[0] != 1 || w.dilation[1] != 1)
        return onnx_node_fail(im, np, "dilated pooling is not supported");
    if ((ceil_mode != 0 && ceil_mode != 1) || (count_include_pad != 0 && count_include_pad != 1))
        return onnx_node_fail(im, np, "ceil_mode and count_include_pad must be 0 or 1");
    int n = onnx_add_node(im, np, op, &x, 1);
    if (n < 0)
        return -1;
    ntc_attrs *a = &im->g->nodes[n].a;
    set_window(a, &w);
    a->ceil_mode = (int)ceil_mode;
    a->count_include_pad = (int)count_include_pad;
    return onnx_infer_node(im, np, n) ? -1 : finish(im, np, n);
}

static int maxpool(onnx_importer *im, const Onnx__NodeProto *np) { return pool(im, np, NTC_OP_maxpool); }
static int avgpool(onnx_importer *im, const Onnx__NodeProto *np) { return pool(im, np, NTC_OP_avgpool); }

/* ---- single-input ops ---- */

static int unary(onnx_importer *im, const Onnx__NodeProto *np, ntc_op op)
{
    static const char *const none[] = {NULL};
    if (onnx_check_attrs(im, np, none))
        return -1;
    int x = onnx_input_act(im, np, 0);
    int n = x < 0 ? -1 : onnx_add_node(im, np, op, &x, 1);
    return n < 0 || onnx_infer_node(im, np, n) ? -1 : finish(im, np, n);
}

static int relu(onnx_importer *im, const Onnx__NodeProto *np) { return unary(im, np, NTC_OP_relu); }
static int global_avgpool(onnx_importer *im, const Onnx__NodeProto *np)
{
    return unary(im, np, NTC_OP_global_avgpool);
}

static int batchnorm(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"epsilon", "momentum", "spatial", "training_mode", NULL};
    static const char *const slots[] = {"scale", "bias", "mean", "var"};
    float eps, momentum;
    int64_t spatial, training;
    if (onnx_check_attrs(im, np, attrs) || onnx_attr_float(im, np, "epsilon", 1e-5f, &eps) ||
        onnx_attr_float(im, np, "momentum", 0.9f, &momentum) || onnx_attr_int(im, np, "spatial", 1, &spatial) ||
        onnx_attr_int(im, np, "training_mode", 0, &training))
        return -1;
    if (training)
        return onnx_node_fail(im, np, "training_mode=1 (batch statistics) is not supported: ntc imports the "
                              "inference form; export the model in eval mode");
    if (spatial != 1)
        return onnx_node_fail(im, np, "spatial=0 (per-activation statistics) is not supported");
    int x = onnx_input_act(im, np, 0);
    const onnx_const *p[4];
    for (int k = 0; k < 4; k++)
        if (x < 0 || !(p[k] = onnx_input_const(im, np, (size_t)k + 1)))
            return -1;
    int n = onnx_add_node(im, np, NTC_OP_batchnorm, &x, 1);
    if (n < 0)
        return -1;
    /* ONNX: running = running * momentum + batch * (1 - momentum); ntc
     * weighs the batch by its momentum, as PyTorch does.  The complement
     * is taken of the float's shortest decimal form, so an exported 0.9
     * becomes 0.1 rather than 1 - 0.9f = 0.100000024. */
    char dec[32];
    snprintf(dec, sizeof dec, "%.7g", momentum);
    im->g->nodes[n].a.epsilon = eps;
    im->g->nodes[n].a.momentum = (float)(1.0 - strtod(dec, NULL));
    if (onnx_infer_node(im, np, n))
        return -1;
    for (int k = 0; k < 4; k++) {
        if (p[k]->is_int)
            return onnx_node_fail(im, np, "input %d must be float", k + 2);
        if (onnx_set_param(im, np, n, slots[k], p[k]->f, p[k]->count))
            return -1;
    }
    return finish(im, np, n);
}

static int flatten(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"axis", NULL};
    int64_t axis;
    if (onnx_check_attrs(im, np, attrs) || onnx_attr_int(im, np, "axis", 1, &axis))
        return -1;
    int x = onnx_input_act(im, np, 0);
    if (x < 0)
        return -1;
    int rank = act_shape(im, x)->rank;
    if (axis != 1 && axis != 1 - rank)
        return onnx_node_fail(im, np, "axis %" PRId64 " is not supported: ntc flattens at axis 1 only (keeping "
                              "the batch axis first)", axis);
    int n = onnx_add_node(im, np, NTC_OP_flatten, &x, 1);
    if (n < 0)
        return -1;
    im->g->nodes[n].a.axis = 1;
    return onnx_infer_node(im, np, n) ? -1 : finish(im, np, n);
}

/* Reshape is imported when it keeps the input (an alias) or flattens
 * [N, d1, ...] to [N, d1*...]: the target's first entry is 0 (copy), -1
 * or the batch size the model was exported with, the second -1 or the
 * product of the remaining sizes. */
static int reshape(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"allowzero", NULL};
    int64_t allowzero;
    if (onnx_check_attrs(im, np, attrs) || onnx_attr_int(im, np, "allowzero", 0, &allowzero))
        return -1;
    int x = onnx_input_act(im, np, 0);
    const onnx_const *t = x < 0 ? NULL : onnx_input_const(im, np, 1);
    if (!t)
        return -1;
    if (!t->is_int || t->rank != 1)
        return onnx_node_fail(im, np, "the target shape must be a 1-D int64 tensor");
    const ntc_shape *s = act_shape(im, x);
    int64_t inner = 1;
    for (int d = 1; d < s->rank; d++)
        inner *= s->dims[d];
    const int64_t *v = t->i;
    bool first_ok = t->count >= 1 && ((v[0] == 0 && !allowzero) || v[0] == -1 || v[0] == ONNX_BATCH_DIM ||
                                      (im->export_batch > 0 && v[0] == im->export_batch));
    bool flattens = t->count == 2 && first_ok && ((v[1] == -1 && v[0] != -1) || v[1] == inner);
    if (flattens && s->rank == 2)
        return onnx_bind_act(im, np, x);
    if (!flattens) {
        char in[128], target[256] = "[";
        shape_str(s, in, sizeof in);
        for (int64_t k = 0; k < t->count && strlen(target) < 200; k++)
            if (v[k] == ONNX_BATCH_DIM)
                snprintf(target + strlen(target), sizeof target - strlen(target), "%sN", k ? "," : "");
            else
                snprintf(target + strlen(target), sizeof target - strlen(target), "%s%" PRId64, k ? "," : "",
                         v[k]);
        strcat(target, "]");
        return onnx_node_fail(im, np, "Reshape of %s to %s is not supported: ntc imports a Reshape only when it "
                              "flattens [N,...] to [N,-1]", in, target);
    }
    int n = onnx_add_node(im, np, NTC_OP_flatten, &x, 1);
    if (n < 0)
        return -1;
    im->g->nodes[n].a.axis = 1;
    return onnx_infer_node(im, np, n) ? -1 : finish(im, np, n);
}

/* Softmax from opset 13 normalises along `axis` (default -1); before, it
 * coerced the input to 2-D at `axis` (default 1) and normalised each row,
 * which is the same thing when every axis after `axis` has size 1. */
static int softmax(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"axis", NULL};
    int64_t axis;
    if (onnx_check_attrs(im, np, attrs) || onnx_attr_int(im, np, "axis", im->opset >= 13 ? -1 : 1, &axis))
        return -1;
    int x = onnx_input_act(im, np, 0);
    if (x < 0)
        return -1;
    const ntc_shape *s = act_shape(im, x);
    int64_t a = axis < 0 ? axis + s->rank : axis;
    if (a < 1 || a >= s->rank)
        return onnx_node_fail(im, np, "axis %" PRId64 " is not supported for a rank-%d input (the batch axis 0 "
                              "cannot be normalised)", axis, s->rank);
    for (int d = (int)a + 1; im->opset < 13 && d < s->rank; d++)
        if (s->dims[d] != 1)
            return onnx_node_fail(im, np, "before opset 13 Softmax normalises over all axes from %" PRId64
                                  " on; ntc normalises over one axis, so the later axes must have size 1 "
                                  "(opset %" PRId64 ")", a, im->opset);
    int n = onnx_add_node(im, np, NTC_OP_softmax, &x, 1);
    if (n < 0)
        return -1;
    im->g->nodes[n].a.axis = (int)a;
    return onnx_infer_node(im, np, n) ? -1 : finish(im, np, n);
}

/* ---- matrix products ---- */

/* A linear node reading x with weight w [units, k] (row-major) and an
 * optional bias [units]. */
static int make_linear(onnx_importer *im, const Onnx__NodeProto *np, int x, const float *w, int64_t units,
                       int64_t k, const float *bias)
{
    const ntc_shape *s = act_shape(im, x);
    if (s->rank != 2)
        return onnx_node_fail(im, np, "the input has rank %d: ntc imports products of a [N,K] matrix (batched "
                              "matrix products are not supported)", s->rank);
    if (s->dims[1] != k)
        return onnx_node_fail(im, np, "the input has %" PRId64 " features, the weight expects %" PRId64,
                              s->dims[1], k);
    int units_i = 0;
    if (int_in(im, np, "number of units", units, 1, INT32_MAX, &units_i))
        return -1;
    int n = onnx_add_node(im, np, NTC_OP_linear, &x, 1);
    if (n < 0)
        return -1;
    im->g->nodes[n].a.units = units_i;
    if (onnx_infer_node(im, np, n) || onnx_set_param(im, np, n, "weight", w, units * k) ||
        (bias && onnx_set_param(im, np, n, "bias", bias, units)))
        return -1;
    return finish(im, np, n);
}

/* b [k, units] transposed into a new [units, k] array scaled by alpha. */
static float *transposed(onnx_importer *im, const onnx_const *b, float alpha)
{
    int64_t k = b->dims[0], units = b->dims[1];
    float *w = ntc_malloc(sizeof(float) * (size_t)(b->count ? b->count : 1));
    if (!w) {
        ntc_error(im->err, im->file, 0, "out of memory");
        return NULL;
    }
    for (int64_t r = 0; r < k; r++)
        for (int64_t c = 0; c < units; c++)
            w[c * k + r] = alpha * b->f[r * units + c];
    return w;
}

/* A constant that broadcasts along output axis `axis` of a rank-`rank`
 * result with `channels` entries there and size 1 elsewhere (ONNX's
 * right-aligned broadcasting), as `channels` values times scale in a new
 * array *out.  Returns 0, 1 if c has another shape, -1 out of memory. */
static int per_channel(onnx_importer *im, const onnx_const *c, int rank, int axis, int64_t channels, float scale,
                       float **out)
{
    *out = NULL;
    if (c->is_int || c->rank > rank)
        return 1;
    bool per = false;
    for (int d = 0; d < c->rank; d++) {
        int out_axis = rank - c->rank + d;
        if (out_axis == axis && c->dims[d] == channels)
            per = true;
        else if (c->dims[d] != 1)
            return 1;
    }
    float *v = ntc_malloc(sizeof(float) * (size_t)channels);
    if (!v)
        return ntc_error(im->err, im->file, 0, "out of memory");
    for (int64_t k = 0; k < channels; k++)
        v[k] = scale * c->f[per ? k : 0];
    *out = v;
    return 0;
}

static int gemm(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"alpha", "beta", "transA", "transB", NULL};
    float alpha, beta;
    int64_t trans_a, trans_b;
    if (onnx_check_attrs(im, np, attrs) || onnx_attr_float(im, np, "alpha", 1.0f, &alpha) ||
        onnx_attr_float(im, np, "beta", 1.0f, &beta) || onnx_attr_int(im, np, "transA", 0, &trans_a) ||
        onnx_attr_int(im, np, "transB", 0, &trans_b))
        return -1;
    if (trans_a)
        return onnx_node_fail(im, np, "transA=1 is not supported: it would transpose the batch axis");
    int x = onnx_input_act(im, np, 0);
    const onnx_const *b = x < 0 ? NULL : onnx_input_const(im, np, 1), *c = NULL;
    if (!b || (onnx_has_input(np, 2) && !(c = onnx_input_const(im, np, 2))))
        return -1;
    if (b->is_int || b->rank != 2)
        return onnx_node_fail(im, np, "B must be a float matrix");
    /* ntc's linear is y = x W^T + b: W is B with transB=1, else B^T; alpha
     * scales W and beta the bias, which is the same product. */
    int64_t units = trans_b ? b->dims[0] : b->dims[1], k = trans_b ? b->dims[1] : b->dims[0];
    float *w = NULL, *bias = NULL;
    if (trans_b) {
        if (!(w = ntc_malloc(sizeof(float) * (size_t)(b->count ? b->count : 1))))
            return ntc_error(im->err, im->file, 0, "out of memory");
        for (int64_t i = 0; i < b->count; i++)
            w[i] = alpha * b->f[i];
    } else if (!(w = transposed(im, b, alpha))) {
        return -1;
    }
    int rc = c ? per_channel(im, c, 2, 1, units, beta, &bias) : 0;
    if (rc > 0)
        rc = onnx_node_fail(im, np, "C must be a float scalar or hold one value per unit (%" PRId64 "); a C "
                            "that varies along the batch is not supported", units);
    if (!rc)
        rc = make_linear(im, np, x, w, units, k, beta == 0.0f ? NULL : bias);
    ntc_free(w);
    ntc_free(bias);
    return rc;
}

static int matmul(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const none[] = {NULL};
    if (onnx_check_attrs(im, np, none))
        return -1;
    int x = onnx_input_act(im, np, 0);
    const onnx_const *b = x < 0 ? NULL : onnx_input_const(im, np, 1);
    if (!b)
        return -1;
    if (b->is_int || b->rank != 2)
        return onnx_node_fail(im, np, "the second input must be a constant float matrix [K, units]");
    float *w = transposed(im, b, 1.0f);
    int rc = w ? make_linear(im, np, x, w, b->dims[1], b->dims[0], NULL) : -1;
    ntc_free(w);
    return rc;
}

/* ---- sums and products ---- */

static int same_shapes(onnx_importer *im, const Onnx__NodeProto *np, const int *ins, int n)
{
    const ntc_shape *s0 = act_shape(im, ins[0]);
    for (int k = 1; k < n; k++) {
        const ntc_shape *s = act_shape(im, ins[k]);
        if (s->rank != s0->rank || memcmp(s->dims, s0->dims, sizeof(int64_t) * (size_t)s->rank)) {
            char a[128], b[128];
            shape_str(s0, a, sizeof a);
            shape_str(s, b, sizeof b);
            return onnx_node_fail(im, np, "input %d is %s, input 1 is %s: ntc adds tensors of one shape "
                                  "(broadcasting is not supported)", k + 1, b, a);
        }
    }
    return 0;
}

static int add_node(onnx_importer *im, const Onnx__NodeProto *np, const int *ins, int n_in)
{
    if (same_shapes(im, np, ins, n_in))
        return -1;
    int n = onnx_add_node(im, np, NTC_OP_add, ins, n_in);
    return n < 0 || onnx_infer_node(im, np, n) ? -1 : finish(im, np, n);
}

/* x + c where x is computed by a conv2d or linear node that nothing else
 * reads and c is constant per output channel: c joins that node's bias
 * (PyTorch exports Linear on rank > 2 and x @ W + b as MatMul + Add). */
static int fold_bias(onnx_importer *im, const Onnx__NodeProto *np, int x, const onnx_const *c)
{
    ntc_graph *g = im->g;
    int p = g->values[x].producer;
    if (p < 0 || (g->nodes[p].op != NTC_OP_conv2d && g->nodes[p].op != NTC_OP_linear))
        return onnx_node_fail(im, np, "adding a constant is supported only as the bias of the Conv, Gemm or "
                              "MatMul right before it");
    if (onnx_value_uses(im, x) != 1)
        return onnx_node_fail(im, np, "cannot fold the constant into the bias of '%s': its result is read "
                              "elsewhere too", g->nodes[p].name);
    bool is_conv = g->nodes[p].op == NTC_OP_conv2d;
    int64_t channels = is_conv ? g->nodes[p].a.filters : g->nodes[p].a.units;
    float *bias;
    int shape_rc = per_channel(im, c, is_conv ? 4 : 2, 1, channels, 1.0f, &bias);
    if (shape_rc)
        return shape_rc < 0 ? -1 : onnx_node_fail(im, np, "the constant must be a float scalar or hold one "
                                                  "value per output channel of '%s' (%" PRId64 ")",
                                                  g->nodes[p].name, channels);
    int slot = ntc_op_param_slot(g->nodes[p].op, "bias");
    int bv = g->nodes[p].par[slot];
    int rc = 0;
    if (bv >= 0) {
        for (int64_t k = 0; k < channels; k++)
            g->values[bv].data[k] += bias[k];
    } else {
        rc = onnx_set_param(im, np, p, "bias", bias, channels);
    }
    ntc_free(bias);
    return rc ? -1 : onnx_bind_act(im, np, x);
}

/* Which of np's two inputs is a constant: 0 or 1, -1 if neither; -2
 * (with the error filled) if both are or an input is undefined. */
static int const_operand(onnx_importer *im, const Onnx__NodeProto *np)
{
    if (np->n_input != 2) {
        onnx_node_fail(im, np, "expects 2 inputs, has %zu", np->n_input);
        return -2;
    }
    int which = -1;
    for (int k = 0; k < 2; k++) {
        onnx_binding *b = onnx_lookup(im, np->input[k]);
        if (!b) {
            onnx_node_fail(im, np, "input %d reads '%s', which nothing defines before it", k + 1, np->input[k]);
            return -2;
        }
        if (b->constant >= 0 && which >= 0) {
            onnx_node_fail(im, np, "both inputs are constants (constant folding is not supported)");
            return -2;
        }
        if (b->constant >= 0)
            which = k;
    }
    return which;
}

static int add(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const none[] = {NULL};
    if (onnx_check_attrs(im, np, none))
        return -1;
    int k = const_operand(im, np);
    if (k == -2)
        return -1;
    if (k >= 0) {
        int x = onnx_input_act(im, np, (size_t)(1 - k));
        const onnx_const *c = x < 0 ? NULL : onnx_input_const(im, np, (size_t)k);
        return c ? fold_bias(im, np, x, c) : -1;
    }
    int ins[2];
    for (int j = 0; j < 2; j++)
        if ((ins[j] = onnx_input_act(im, np, (size_t)j)) < 0)
            return -1;
    return add_node(im, np, ins, 2);
}

static int sum(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const none[] = {NULL};
    int ins[8];
    if (onnx_check_attrs(im, np, none))
        return -1;
    if (np->n_input < 1 || np->n_input > 8)
        return onnx_node_fail(im, np, "takes 1 to 8 inputs here, has %zu", np->n_input);
    for (size_t j = 0; j < np->n_input; j++)
        if ((ins[j] = onnx_input_act(im, np, j)) < 0)
            return -1;
    return np->n_input == 1 ? onnx_bind_act(im, np, ins[0]) : add_node(im, np, ins, (int)np->n_input);
}

/* ntc has no elementwise product: Mul is imported only where it changes
 * nothing, a product with a constant of ones that does not broadcast the
 * other input to a larger shape. */
static int mul(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const none[] = {NULL};
    if (onnx_check_attrs(im, np, none))
        return -1;
    int k = const_operand(im, np);
    if (k == -2)
        return -1;
    if (k == -1)
        return onnx_node_fail(im, np, "Mul of two computed tensors is not supported (opset %" PRId64 "): ntc has "
                              "no elementwise product op", im->opset);
    int x = onnx_input_act(im, np, (size_t)(1 - k));
    const onnx_const *c = x < 0 ? NULL : onnx_input_const(im, np, (size_t)k);
    if (!c)
        return -1;
    const ntc_shape *s = act_shape(im, x);
    bool ones = !c->is_int && c->rank <= s->rank;
    for (int d = 0; ones && d < c->rank; d++)
        ones = c->dims[d] == 1 || c->dims[d] == s->dims[s->rank - c->rank + d];
    for (int64_t i = 0; ones && i < c->count; i++)
        ones = c->f[i] == 1.0f;
    if (!ones)
        return onnx_node_fail(im, np, "Mul is supported only as a product with the constant 1 (opset %" PRId64
                              "): ntc has no elementwise product or scaling op", im->opset);
    return onnx_bind_act(im, np, x);
}

/* ---- names and constants ---- */

static int identity(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const none[] = {NULL};
    if (onnx_check_attrs(im, np, none))
        return -1;
    if (!onnx_has_input(np, 0))
        return onnx_node_fail(im, np, "input 1 is missing");
    const onnx_binding *b = onnx_lookup(im, np->input[0]);
    if (!b)
        return onnx_node_fail(im, np, "input 1 reads '%s', which nothing defines before it", np->input[0]);
    return onnx_bind_same(im, np, b);
}

static int constant(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"value", "value_float", "value_floats", "value_int", "value_ints", NULL};
    if (onnx_check_attrs(im, np, attrs))
        return -1;
    if (np->n_attribute != 1)
        return onnx_node_fail(im, np, "needs exactly one value attribute, has %zu", np->n_attribute);
    const Onnx__AttributeProto *a = np->attribute[0];
    onnx_const c = {0};
    if (!strcmp(a->name, "value")) {
        if (!a->t)
            return onnx_node_fail(im, np, "attribute 'value' holds no tensor");
        char what[600];
        snprintf(what, sizeof what, "node '%s' (Constant): the value", onnx_node_label(np));
        if (onnx_tensor_to_const(im, a->t, what, &c))
            return -1;
        return onnx_bind_const(im, np, &c);
    }
    bool is_int = !strcmp(a->name, "value_int") || !strcmp(a->name, "value_ints");
    bool list = !strcmp(a->name, "value_floats") || !strcmp(a->name, "value_ints");
    size_t count = list ? (is_int ? a->n_ints : a->n_floats) : 1;
    c.is_int = is_int;
    c.rank = list;
    c.dims[0] = (int64_t)count;
    c.count = (int64_t)count;
    void *data = ntc_malloc((is_int ? sizeof(int64_t) : sizeof(float)) * (count ? count : 1));
    if (!data)
        return ntc_error(im->err, im->file, 0, "out of memory");
    if (is_int) {
        c.i = data;
        if (list && count)
            memcpy(c.i, a->ints, sizeof(int64_t) * count);
        else if (!list)
            c.i[0] = a->i;
    } else {
        c.f = data;
        if (list && count)
            memcpy(c.f, a->floats, sizeof(float) * count);
        else if (!list)
            c.f[0] = a->f;
    }
    return onnx_bind_const(im, np, &c);
}

/* ---- dispatch ---- */

static const struct {
    const char *op;
    translator fn;
} supported[] = {
    {"Conv", conv},
    {"BatchNormalization", batchnorm},
    {"Relu", relu},
    {"Add", add},
    {"Sum", sum},
    {"Mul", mul},
    {"MaxPool", maxpool},
    {"AveragePool", avgpool},
    {"GlobalAveragePool", global_avgpool},
    {"Gemm", gemm},
    {"MatMul", matmul},
    {"Flatten", flatten},
    {"Reshape", reshape},
    {"Softmax", softmax},
    {"Identity", identity},
    {"Constant", constant},
    {"Shape", onnx_shape},
    {"Gather", onnx_gather},
    {"Unsqueeze", onnx_unsqueeze},
    {"Concat", onnx_concat},
};

/* Operators users will meet whose refusal deserves a reason. */
static const struct {
    const char *op;
    const char *why;
} refused[] = {
    {"LogSoftmax", "ntc has no log-softmax op (log(softmax(x)) would lose the precision LogSoftmax keeps); "
                   "export the logits or a Softmax instead"},
    {"Dropout", "export the model in eval mode (torch.onnx.export drops Dropout then)"},
};

int onnx_translate_node(onnx_importer *im, const Onnx__NodeProto *np)
{
    if (np->domain && *np->domain && strcmp(np->domain, "ai.onnx"))
        return onnx_node_fail(im, np, "operator domain '%s' is not supported (ntc imports the default ONNX "
                              "domain, opsets %d to %d)", np->domain, ONNX_MIN_OPSET, ONNX_MAX_OPSET);
    for (size_t k = 0; k < sizeof supported / sizeof supported[0]; k++)
        if (!strcmp(np->op_type, supported[k].op))
            return supported[k].fn(im, np);
    for (size_t k = 0; k < sizeof refused / sizeof refused[0]; k++)
        if (!strcmp(np->op_type, refused[k].op))
            return onnx_node_fail(im, np, "operator %s (opset %" PRId64 ") is not supported: %s", np->op_type,
                                  im->opset, refused[k].why);
    char list[512] = "";
    for (size_t k = 0; k < sizeof supported / sizeof supported[0]; k++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", supported[k].op);
    return onnx_node_fail(im, np, "operator %s (opset %" PRId64 ") is not supported (ntc imports %s)", np->op_type,
                          im->opset, list);
}
