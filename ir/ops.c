/* The ir columns of the ops table: attributes, parameter slots, shape
 * rules and MAC counts.  The rows themselves are listed in ntc/ops.def;
 * this file gives each row its ir facts, in the same order.
 *
 * MACs count multiply-accumulates of conv2d, linear and mix (the work that
 * dominates and that NetTailor's complexity measure compares); elementwise
 * ops, batchnorm and pooling count 0, as in the published ResNet figures. */
#include "ntc/ir.h"

#include <stddef.h>
#include <string.h>

#define A(field) offsetof(ntc_attrs, field)

static const ntc_attr_spec no_attrs[] = {{0}};
static const ntc_param_spec no_params[] = {{0}};

/* ---- shape helpers ------------------------------------------------------- */

static int need_rank(const ntc_shape *s, int rank, const char *what, ntc_err *err)
{
    if (s->rank != rank)
        return ntc_error(err, NULL, 0, "%s expects a rank-%d input, got rank %d", what, rank, s->rank);
    return 0;
}

static ntc_shape shape1(int64_t d0)
{
    ntc_shape s = {1, {d0}};
    return s;
}

static int check_window(const ntc_attrs *a, bool dilation, ntc_err *err)
{
    for (int i = 0; i < 2; i++) {
        if (a->kernel[i] < 1)
            return ntc_error(err, NULL, 0, "kernel must be >= 1");
        if (a->stride[i] < 1)
            return ntc_error(err, NULL, 0, "stride must be >= 1");
        if (dilation && a->dilation[i] < 1)
            return ntc_error(err, NULL, 0, "dilation must be >= 1");
    }
    for (int i = 0; i < 4; i++)
        if (a->pad[i] < 0)
            return ntc_error(err, NULL, 0, "pad must be >= 0");
    return 0;
}

/* Spatial output size along axis i (0: H, 1: W) of a sliding window. */
static int64_t window_out(const ntc_attrs *a, int i, int64_t in, int dil, bool ceil_mode)
{
    int64_t span = (int64_t)dil * (a->kernel[i] - 1) + 1;
    int64_t padded = in + a->pad[i] + a->pad[i + 2];
    if (padded < span)
        return 0;
    int64_t num = padded - span;
    int64_t out = (ceil_mode ? (num + a->stride[i] - 1) / a->stride[i] : num / a->stride[i]) + 1;
    /* ceil mode: the last window must start inside the input or the
     * leading padding (PyTorch and ONNX runtimes agree on this). */
    if (ceil_mode && (out - 1) * a->stride[i] >= in + a->pad[i])
        out--;
    return out;
}

static int window_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                        bool dilation, bool ceil_mode, ntc_err *err)
{
    if (need_rank(in, 4, ntc_op_name(n->op), err) || check_window(&n->a, dilation, err))
        return -1;
    *out = *in;
    for (int i = 0; i < 2; i++) {
        int64_t o = window_out(&n->a, i, in->dims[2 + i], dilation ? n->a.dilation[i] : 1, ceil_mode);
        if (o < 1)
            return ntc_error(err, NULL, 0, "window larger than the padded input (%lld)",
                             (long long)in->dims[2 + i]);
        out->dims[2 + i] = o;
    }
    return 0;
}

static int same_shapes(const ntc_node *n, const ntc_shape *in, ntc_err *err)
{
    for (int i = 1; i < n->n_in; i++) {
        if (in[i].rank != in[0].rank || memcmp(in[i].dims, in[0].dims, sizeof(int64_t) * (size_t)in[0].rank)) {
            char a[128], b[128];
            ntc_shape_format(&in[0], a, sizeof a);
            ntc_shape_format(&in[i], b, sizeof b);
            return ntc_error(err, NULL, 0, "input %d has shape %s, input 1 has %s", i + 1, b, a);
        }
    }
    return 0;
}

/* ---- conv2d -------------------------------------------------------------- */

static const ntc_attr_spec conv2d_attrs[] = {
    {"filters", NTC_ATTR_INT, A(filters), true, 0},
    {"kernel", NTC_ATTR_INT2, A(kernel), true, 0},
    {"stride", NTC_ATTR_INT2, A(stride), false, 1},
    {"pad", NTC_ATTR_INT4, A(pad), false, 0},
    {"dilation", NTC_ATTR_INT2, A(dilation), false, 1},
    {0}};
static const ntc_param_spec conv2d_params[] = {{"weight", false, false}, {"bias", true, false}, {0}};

static int conv2d_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                        ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    if (n->a.filters < 1)
        return ntc_error(err, NULL, 0, "filters must be >= 1");
    if (window_shape(n, in, out, true, false, err))
        return -1;
    out->dims[1] = n->a.filters;
    par[0] = (ntc_shape){4, {n->a.filters, in->dims[1], n->a.kernel[0], n->a.kernel[1]}};
    par[1] = shape1(n->a.filters);
    return 0;
}

static int64_t conv2d_macs(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    return n->a.filters * out->dims[2] * out->dims[3] * in->dims[1] * n->a.kernel[0] * n->a.kernel[1];
}

/* ---- fused_conv2d: conv2d, + residual (input 2), relu ----------------------- */

static const ntc_attr_spec fused_conv2d_attrs[] = {
    {"filters", NTC_ATTR_INT, A(filters), true, 0},
    {"kernel", NTC_ATTR_INT2, A(kernel), true, 0},
    {"stride", NTC_ATTR_INT2, A(stride), false, 1},
    {"pad", NTC_ATTR_INT4, A(pad), false, 0},
    {"dilation", NTC_ATTR_INT2, A(dilation), false, 1},
    {"relu", NTC_ATTR_INT, A(relu), false, 0},
    {0}};
#define fused_conv2d_params conv2d_params
#define fused_conv2d_macs conv2d_macs

static int fused_conv2d_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                              ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    if (n->a.relu != 0 && n->a.relu != 1)
        return ntc_error(err, NULL, 0, "relu must be 0 or 1");
    if (conv2d_shape(n, in, out, par, err))
        return -1;
    if (n->n_in == 2 && (in[1].rank != out->rank ||
                         memcmp(in[1].dims, out->dims, sizeof(int64_t) * (size_t)out->rank))) {
        char a[128], b[128];
        ntc_shape_format(&in[1], a, sizeof a);
        ntc_shape_format(out, b, sizeof b);
        return ntc_error(err, NULL, 0, "the residual (input 2) has shape %s, the convolution's output %s", a, b);
    }
    return 0;
}

/* ---- batchnorm ------------------------------------------------------------- */

static const ntc_attr_spec batchnorm_attrs[] = {
    {"epsilon", NTC_ATTR_FLOAT, A(epsilon), false, 1e-5},
    {"momentum", NTC_ATTR_FLOAT, A(momentum), false, 0.1},
    {0}};
static const ntc_param_spec batchnorm_params[] = {
    {"scale", false, false}, {"bias", false, false}, {"mean", false, true}, {"var", false, true}, {0}};

static int batchnorm_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                           ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    if (in->rank < 2)
        return ntc_error(err, NULL, 0, "batchnorm expects rank >= 2, got %d", in->rank);
    if (!(n->a.epsilon > 0))
        return ntc_error(err, NULL, 0, "epsilon must be > 0");
    if (!(n->a.momentum >= 0 && n->a.momentum <= 1))
        return ntc_error(err, NULL, 0, "momentum must be in [0, 1]");
    *out = *in;
    for (int i = 0; i < 4; i++)
        par[i] = shape1(in->dims[1]);
    return 0;
}

/* ---- elementwise ----------------------------------------------------------- */

static int relu_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                      ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    (void)n, (void)par, (void)err;
    *out = *in;
    return 0;
}

static int add_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                     ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    (void)par;
    if (same_shapes(n, in, err))
        return -1;
    *out = in[0];
    return 0;
}

static const ntc_param_spec mix_params[] = {{"alpha", false, false}, {0}};

static int mix_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                     ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    if (same_shapes(n, in, err))
        return -1;
    *out = in[0];
    par[0] = shape1(n->n_in);
    return 0;
}

static int64_t mix_macs(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    (void)in;
    return n->n_in * ntc_shape_numel(out);
}

/* ---- pooling --------------------------------------------------------------- */

static const ntc_attr_spec maxpool_attrs[] = {
    {"kernel", NTC_ATTR_INT2, A(kernel), true, 0},
    {"stride", NTC_ATTR_INT2, A(stride), false, 1},
    {"pad", NTC_ATTR_INT4, A(pad), false, 0},
    {"ceil_mode", NTC_ATTR_INT, A(ceil_mode), false, 0},
    {0}};
static const ntc_attr_spec avgpool_attrs[] = {
    {"kernel", NTC_ATTR_INT2, A(kernel), true, 0},
    {"stride", NTC_ATTR_INT2, A(stride), false, 1},
    {"pad", NTC_ATTR_INT4, A(pad), false, 0},
    {"ceil_mode", NTC_ATTR_INT, A(ceil_mode), false, 0},
    {"count_include_pad", NTC_ATTR_INT, A(count_include_pad), false, 0},
    {0}};

static int pool_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                      ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    (void)par;
    if (n->a.ceil_mode != 0 && n->a.ceil_mode != 1)
        return ntc_error(err, NULL, 0, "ceil_mode must be 0 or 1");
    if (n->a.count_include_pad != 0 && n->a.count_include_pad != 1)
        return ntc_error(err, NULL, 0, "count_include_pad must be 0 or 1");
    for (int i = 0; i < 2; i++)
        if (n->a.pad[i] >= n->a.kernel[i] || n->a.pad[i + 2] >= n->a.kernel[i])
            return ntc_error(err, NULL, 0, "pad must be smaller than the kernel");
    return window_shape(n, in, out, false, n->a.ceil_mode, err);
}

static int global_avgpool_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                                ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    (void)par;
    if (need_rank(in, 4, ntc_op_name(n->op), err))
        return -1;
    *out = *in;
    out->dims[2] = out->dims[3] = 1;
    return 0;
}

/* ---- flatten, linear, softmax ------------------------------------------------ */

static const ntc_attr_spec axis1_attrs[] = {{"axis", NTC_ATTR_INT, A(axis), false, 1}, {0}};
static const ntc_attr_spec axis_last_attrs[] = {{"axis", NTC_ATTR_INT, A(axis), false, -1}, {0}};

static int flatten_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                         ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    (void)par;
    int axis = n->a.axis < 0 ? n->a.axis + in->rank : n->a.axis;
    /* Axis 0 would fold the symbolic batch into the features. */
    if (axis < 1 || axis > in->rank)
        return ntc_error(err, NULL, 0, "flatten axis %d out of range 1..%d", n->a.axis, in->rank);
    int64_t inner = 1;
    for (int i = axis; i < in->rank; i++)
        inner *= in->dims[i];
    out->rank = 2;
    out->dims[0] = in->dims[0];
    for (int i = 1; i < axis; i++)
        out->dims[0] = out->dims[0] == NTC_BATCH ? NTC_BATCH : out->dims[0] * in->dims[i];
    if (axis > 1 && in->dims[0] == NTC_BATCH)
        return ntc_error(err, NULL, 0, "flatten axis %d would fold dimensions into the batch", axis);
    out->dims[1] = inner;
    return 0;
}

static const ntc_attr_spec linear_attrs[] = {{"units", NTC_ATTR_INT, A(units), true, 0}, {0}};
static const ntc_param_spec linear_params[] = {{"weight", false, false}, {"bias", true, false}, {0}};

static int linear_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                        ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    if (need_rank(in, 2, "linear", err))
        return -1;
    if (n->a.units < 1)
        return ntc_error(err, NULL, 0, "units must be >= 1");
    *out = (ntc_shape){2, {in->dims[0], n->a.units}};
    par[0] = (ntc_shape){2, {n->a.units, in->dims[1]}};
    par[1] = shape1(n->a.units);
    return 0;
}

static int64_t linear_macs(const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    (void)out;
    return n->a.units * in->dims[1];
}

static int softmax_shape(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                         ntc_shape par[NTC_MAX_PARAMS], ntc_err *err)
{
    (void)par;
    int axis = n->a.axis < 0 ? n->a.axis + in->rank : n->a.axis;
    if (axis < 1 || axis >= in->rank)
        return ntc_error(err, NULL, 0, "softmax axis %d out of range (the batch axis cannot be used)", n->a.axis);
    *out = *in;
    return 0;
}

/* ---- the table -------------------------------------------------------------- */

#define relu_attrs no_attrs
#define relu_params no_params
#define relu_macs NULL
#define batchnorm_macs NULL
#define add_attrs no_attrs
#define add_params no_params
#define add_macs NULL
#define mix_attrs no_attrs
#define maxpool_params no_params
#define maxpool_shape pool_shape
#define maxpool_macs NULL
#define avgpool_params no_params
#define avgpool_shape pool_shape
#define avgpool_macs NULL
#define global_avgpool_attrs no_attrs
#define global_avgpool_params no_params
#define global_avgpool_macs NULL
#define flatten_attrs axis1_attrs
#define flatten_params no_params
#define flatten_macs NULL
#define softmax_attrs axis_last_attrs
#define softmax_params no_params
#define softmax_macs NULL

const ntc_op_info ntc_ops[NTC_OP_COUNT] = {
#define OP(op, min_in_, max_in_, doc_)                                                  \
    [NTC_OP_##op] = {#op, min_in_, max_in_, doc_, op##_attrs, op##_params, op##_shape, op##_macs},
#include "ntc/ops.def"
#undef OP
};

const char *ntc_op_name(ntc_op op) { return (unsigned)op < NTC_OP_COUNT ? ntc_ops[op].name : "?"; }

int ntc_op_lookup(const char *name)
{
    for (int i = 0; i < NTC_OP_COUNT; i++)
        if (!strcmp(ntc_ops[i].name, name))
            return i;
    return -1;
}

int ntc_op_param_slot(ntc_op op, const char *slot)
{
    const ntc_param_spec *p = ntc_ops[op].params;
    for (int i = 0; p[i].name; i++)
        if (!strcmp(p[i].name, slot))
            return i;
    return -1;
}

void ntc_attrs_default(ntc_op op, ntc_attrs *a)
{
    memset(a, 0, sizeof *a);
    for (const ntc_attr_spec *s = ntc_ops[op].attrs; s->name; s++) {
        char *p = (char *)a + s->offset;
        int n = s->type == NTC_ATTR_INT2 ? 2 : s->type == NTC_ATTR_INT4 ? 4 : 1;
        for (int i = 0; i < n; i++) {
            if (s->type == NTC_ATTR_FLOAT)
                ((float *)(void *)p)[i] = (float)s->def;
            else
                ((int *)(void *)p)[i] = (int)s->def;
        }
    }
}
