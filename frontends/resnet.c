/* ResNet backbones as IR graphs: the CIFAR family of He et al. 2016
 * (depth 6n+2) and torchvision's resnet18/resnet34.
 *
 * Shortcuts.  When a residual block changes the shape (stride 2 or a new
 * width) its shortcut is a 1x1 strided convolution + batchnorm: the
 * "projection" shortcut, option B of the ResNet paper.  The paper's CIFAR
 * experiments used option A instead (subsample by stride and zero-pad the
 * new channels, no parameters).  We use B everywhere because it is made of
 * the ops every other part of ntc already handles (conv2d, batchnorm), it
 * is what torchvision-style networks and their ONNX exports contain, so
 * imported and built backbones look alike, and it costs only a few
 * percent more parameters (ResNet-20: 272,186 instead of 269,434 weights
 * on 1x28x28 inputs with 10 classes).
 *
 * Initialisation (as torchvision's ResNet):
 *   conv2d weight   normal(0, sqrt(2 / fan_out)), fan_out = filters*kh*kw
 *                   (He et al. 2015, the "fan_out" mode torchvision uses)
 *   batchnorm       scale 1, bias 0, running mean 0, running var 1
 *   linear          weight and bias uniform(-1/sqrt(in), 1/sqrt(in)),
 *                   PyTorch's nn.Linear default
 * Every parameter draws from its own ntc_rng stream keyed by (seed,
 * parameter name), so a parameter's values do not depend on the other layers: two
 * networks that differ only in their classes share every backbone weight.
 */
#include "ntc/frontends.h"
#include "ntc/rng.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Limits that keep every size well inside int and int64 arithmetic; far
 * above anything a 2-core machine trains. */
#define MAX_DIM 65536
#define MAX_CLASSES 1000000

static const int cifar_widths[] = {16, 32, 64};
static const int imagenet_widths[] = {64, 128, 256, 512};
static const int resnet18_blocks[] = {2, 2, 2, 2};
static const int resnet34_blocks[] = {3, 4, 6, 3};

void ntc_resnet_opts_default(ntc_resnet_opts *o)
{
    memset(o, 0, sizeof *o);
    o->arch = NTC_RESNET_CIFAR;
    o->depth = 20;
    o->channels = 3;
    o->height = o->width = 32;
    o->classes = 10;
}

int ntc_resnet_stages(ntc_resnet_arch arch) { return arch == NTC_RESNET_CIFAR ? 3 : 4; }

/* ---- option parsing -------------------------------------------------------- */

/* A positive decimal integer <= MAX_DIM at *p, advancing *p past it. */
static int parse_dim(const char **p, long *out)
{
    if (**p < '0' || **p > '9')
        return -1;
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (errno || v < 1 || v > MAX_DIM)
        return -1;
    *p = end;
    *out = v;
    return 0;
}

/* Splits s at sep into between 1 and max positive integers. */
static int parse_dims(const char *s, char sep, long *dims, int max)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        if (n == max || parse_dim(&p, &dims[n++]))
            return -1;
        if (!*p)
            return n;
        if (*p++ != sep)
            return -1;
    }
}

int ntc_resnet_set_arch(ntc_resnet_opts *o, const char *s, ntc_err *err)
{
    if (!strcmp(s, "cifar"))
        o->arch = NTC_RESNET_CIFAR;
    else if (!strcmp(s, "resnet18"))
        o->arch = NTC_RESNET18;
    else if (!strcmp(s, "resnet34"))
        o->arch = NTC_RESNET34;
    else
        return ntc_error(err, NULL, 0, "unknown ResNet arch '%s' (known: cifar, resnet18, resnet34)", s);
    return 0;
}

int ntc_resnet_set_input(ntc_resnet_opts *o, const char *s, ntc_err *err)
{
    long d[3];
    if (parse_dims(s, 'x', d, 3) != 3)
        return ntc_error(err, NULL, 0,
                         "bad input shape '%s': expected CxHxW with each dimension in 1..%d, e.g. 1x28x28",
                         s, MAX_DIM);
    o->channels = (int)d[0];
    o->height = (int)d[1];
    o->width = (int)d[2];
    return 0;
}

int ntc_resnet_set_widths(ntc_resnet_opts *o, const char *s, ntc_err *err)
{
    long d[NTC_RESNET_MAX_STAGES];
    int n = parse_dims(s, ',', d, NTC_RESNET_MAX_STAGES);
    if (n < 0)
        return ntc_error(err, NULL, 0,
                         "bad widths '%s': expected up to %d comma-separated channel counts in 1..%d, e.g. 16,32,64",
                         s, NTC_RESNET_MAX_STAGES, MAX_DIM);
    o->n_widths = n;
    for (int i = 0; i < n; i++)
        o->widths[i] = (int)d[i];
    return 0;
}

int ntc_resnet_check(const ntc_resnet_opts *o, ntc_err *err)
{
    if (o->arch != NTC_RESNET_CIFAR && o->arch != NTC_RESNET18 && o->arch != NTC_RESNET34)
        return ntc_error(err, NULL, 0, "unknown ResNet arch %d", (int)o->arch);
    if (o->arch == NTC_RESNET_CIFAR && (o->depth < 8 || (o->depth - 2) % 6 != 0))
        return ntc_error(err, NULL, 0,
                         "CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got %d",
                         o->depth);
    if (o->channels < 1 || o->channels > MAX_DIM || o->height < 1 || o->height > MAX_DIM ||
        o->width < 1 || o->width > MAX_DIM)
        return ntc_error(err, NULL, 0, "input %dx%dx%d: every dimension must be in 1..%d",
                         o->channels, o->height, o->width, MAX_DIM);
    if (o->classes < 1 || o->classes > MAX_CLASSES)
        return ntc_error(err, NULL, 0, "classes must be in 1..%d, got %d", MAX_CLASSES, o->classes);
    int stages = ntc_resnet_stages(o->arch);
    if (o->n_widths && o->n_widths != stages)
        return ntc_error(err, NULL, 0, "%s has %d stages, so it needs %d widths, got %d",
                         o->arch == NTC_RESNET_CIFAR ? "a CIFAR ResNet" : "this ResNet", stages, stages,
                         o->n_widths);
    for (int i = 0; i < o->n_widths; i++)
        if (o->widths[i] < 1 || o->widths[i] > MAX_DIM)
            return ntc_error(err, NULL, 0, "width %d of stage %d must be in 1..%d", o->widths[i], i + 1, MAX_DIM);
    return 0;
}

/* ---- graph construction ------------------------------------------------------ */

typedef struct {
    ntc_graph *g;
    ntc_err *err;
} builder;

/* Adds a node reading `in` and returns its output value, or -1. */
static int node(builder *b, ntc_op op, int block, int in, const char *prefix, const char *suffix)
{
    char name[256];
    snprintf(name, sizeof name, "%s%s", prefix, suffix);
    int n = ntc_graph_add_node(b->g, op, name, &in, 1, block);
    if (n < 0)
        return ntc_error(b->err, NULL, 0, "cannot add node '%s': out of memory", name);
    return n;
}

static int add_params(builder *b, int n, const char *const *slots)
{
    for (; *slots; slots++)
        if (ntc_node_add_param(b->g, n, *slots, NULL) < 0)
            return ntc_error(b->err, NULL, 0, "cannot add parameter '%s.%s': out of memory",
                             b->g->nodes[n].name, *slots);
    return 0;
}

static int conv(builder *b, int block, int in, const char *prefix, const char *suffix,
                int filters, int kernel, int stride, int pad)
{
    static const char *const slots[] = {"weight", NULL};
    int n = node(b, NTC_OP_conv2d, block, in, prefix, suffix);
    if (n < 0 || add_params(b, n, slots))
        return -1;
    ntc_attrs *a = &b->g->nodes[n].a;
    a->filters = filters;
    a->kernel[0] = a->kernel[1] = kernel;
    a->stride[0] = a->stride[1] = stride;
    for (int i = 0; i < 4; i++)
        a->pad[i] = pad;
    return b->g->nodes[n].out;
}

static int batchnorm(builder *b, int block, int in, const char *prefix, const char *suffix)
{
    static const char *const slots[] = {"scale", "bias", "mean", "var", NULL};
    int n = node(b, NTC_OP_batchnorm, block, in, prefix, suffix);
    if (n < 0 || add_params(b, n, slots))
        return -1;
    return b->g->nodes[n].out;
}

static int relu(builder *b, int block, int in, const char *prefix, const char *suffix)
{
    int n = node(b, NTC_OP_relu, block, in, prefix, suffix);
    return n < 0 ? -1 : b->g->nodes[n].out;
}

/* conv -> batchnorm, named "<prefix><conv_suffix>" and "<prefix><bn_suffix>". */
static int conv_bn(builder *b, int block, int in, const char *prefix, const char *conv_suffix,
                   const char *bn_suffix, int filters, int kernel, int stride, int pad)
{
    int c = conv(b, block, in, prefix, conv_suffix, filters, kernel, stride, pad);
    return c < 0 ? -1 : batchnorm(b, block, c, prefix, bn_suffix);
}

/* A BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), both
 * convolutions 3x3, the first with the block's stride.  One universal block
 * named `name` whose NetTailor layer is itself. */
static int basic_block(builder *b, const char *name, int in, int in_c, int out_c, int stride)
{
    int blk = ntc_graph_add_block(b->g, name, NTC_ROLE_UNIVERSAL);
    if (blk < 0 || !(b->g->blocks[blk].layer = ntc_graph_strdup(b->g, name)))
        return ntc_error(b->err, NULL, 0, "cannot add block '%s': out of memory", name);
    int x = conv_bn(b, blk, in, name, ".conv1", ".bn1", out_c, 3, stride, 1);
    x = x < 0 ? -1 : relu(b, blk, x, name, ".relu1");
    x = x < 0 ? -1 : conv_bn(b, blk, x, name, ".conv2", ".bn2", out_c, 3, 1, 1);
    int shortcut = in;
    if (x >= 0 && (stride != 1 || in_c != out_c))
        shortcut = conv_bn(b, blk, in, name, ".down.conv", ".down.bn", out_c, 1, stride, 0);
    if (x < 0 || shortcut < 0)
        return -1;
    char add_name[256];
    snprintf(add_name, sizeof add_name, "%s.add", name);
    int ins[2] = {x, shortcut};
    int add = ntc_graph_add_node(b->g, NTC_OP_add, add_name, ins, 2, blk);
    if (add < 0)
        return ntc_error(b->err, NULL, 0, "cannot add node '%s': out of memory", add_name);
    return relu(b, blk, b->g->nodes[add].out, name, ".relu");
}

/* CIFAR: 3x3 conv, stride 1.  ImageNet: 7x7 conv stride 2 + 3x3 max pool
 * stride 2, both padded so that 224 -> 112 -> 56 as in torchvision. */
static int stem(builder *b, int image, int width, bool imagenet)
{
    int blk = ntc_graph_add_block(b->g, "stem", NTC_ROLE_UNIVERSAL);
    if (blk < 0)
        return ntc_error(b->err, NULL, 0, "cannot add block 'stem': out of memory");
    int x = imagenet ? conv_bn(b, blk, image, "stem", ".conv", ".bn", width, 7, 2, 3)
                     : conv_bn(b, blk, image, "stem", ".conv", ".bn", width, 3, 1, 1);
    x = x < 0 ? -1 : relu(b, blk, x, "stem", ".relu");
    if (x < 0 || !imagenet)
        return x;
    int p = node(b, NTC_OP_maxpool, blk, x, "stem", ".pool");
    if (p < 0)
        return -1;
    ntc_attrs *a = &b->g->nodes[p].a;
    a->kernel[0] = a->kernel[1] = 3;
    a->stride[0] = a->stride[1] = 2;
    for (int i = 0; i < 4; i++)
        a->pad[i] = 1;
    return b->g->nodes[p].out;
}

/* global average pool -> flatten -> linear, the task block "head". */
static int head(builder *b, int in, int classes)
{
    static const char *const slots[] = {"weight", "bias", NULL};
    int blk = ntc_graph_add_block(b->g, "head", NTC_ROLE_TASK);
    if (blk < 0)
        return ntc_error(b->err, NULL, 0, "cannot add block 'head': out of memory");
    int x = node(b, NTC_OP_global_avgpool, blk, in, "head", ".pool");
    x = x < 0 ? -1 : node(b, NTC_OP_flatten, blk, b->g->nodes[x].out, "head", ".flatten");
    int fc = x < 0 ? -1 : node(b, NTC_OP_linear, blk, b->g->nodes[x].out, "head", ".fc");
    if (fc < 0 || add_params(b, fc, slots))
        return -1;
    b->g->nodes[fc].a.units = classes;
    if (ntc_graph_add_output(b->g, "logits", b->g->nodes[fc].out) < 0)
        return ntc_error(b->err, NULL, 0, "cannot add output 'logits': out of memory");
    return 0;
}

static int build_topology(builder *b, const ntc_resnet_opts *o)
{
    bool imagenet = o->arch != NTC_RESNET_CIFAR;
    int stages = ntc_resnet_stages(o->arch);
    const int *widths = o->n_widths ? o->widths : imagenet ? imagenet_widths : cifar_widths;
    int blocks[NTC_RESNET_MAX_STAGES];
    for (int s = 0; s < stages; s++)
        blocks[s] = o->arch == NTC_RESNET18 ? resnet18_blocks[s]
                  : o->arch == NTC_RESNET34 ? resnet34_blocks[s]
                                            : (o->depth - 2) / 6;

    ntc_shape in = {4, {NTC_BATCH, o->channels, o->height, o->width}};
    int x = ntc_graph_add_input(b->g, "image", &in);
    if (x < 0)
        return ntc_error(b->err, NULL, 0, "cannot add input 'image': out of memory");
    x = stem(b, x, widths[0], imagenet);
    int c = widths[0];
    for (int s = 0; s < stages && x >= 0; s++) {
        for (int k = 0; k < blocks[s] && x >= 0; k++) {
            char name[64];
            snprintf(name, sizeof name, "s%d.b%d", s + 1, k);
            int stride = s > 0 && k == 0 ? 2 : 1;
            x = basic_block(b, name, x, c, widths[s], stride);
            c = widths[s];
        }
    }
    return x < 0 ? -1 : head(b, x, o->classes);
}

/* ---- weights ----------------------------------------------------------------- */

/* The generator of one parameter: a stream of ntc_rng keyed by the seed
 * and the FNV-1a hash of the parameter's name. */
static void param_stream(ntc_rng *r, uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    ntc_rng_seed3(r, seed, h, 0);
}

static void init_param(const ntc_graph *g, const ntc_node *n, int slot, ntc_value *v, uint64_t seed)
{
    int64_t count = ntc_shape_numel(&v->shape);
    ntc_rng r;
    param_stream(&r, seed, v->name);
    const char *what = ntc_ops[n->op].params[slot].name;
    if (n->op == NTC_OP_conv2d) {
        double std = sqrt(2.0 / ((double)n->a.filters * n->a.kernel[0] * n->a.kernel[1]));
        for (int64_t i = 0; i < count; i++)
            v->data[i] = (float)(std * ntc_rng_normal(&r));
    } else if (n->op == NTC_OP_linear) {
        int64_t fan_in = g->values[n->in[0]].shape.dims[1];
        double bound = 1.0 / sqrt((double)fan_in);
        for (int64_t i = 0; i < count; i++)
            v->data[i] = (float)(bound * (2.0 * ntc_rng_uniform(&r) - 1.0));
    } else {
        /* batchnorm: the identity transform until trained */
        float fill = !strcmp(what, "scale") || !strcmp(what, "var") ? 1.0f : 0.0f;
        for (int64_t i = 0; i < count; i++)
            v->data[i] = fill;
    }
}

/* Allocates and fills every parameter; shapes must be inferred already. */
static int init_weights(ntc_graph *g, uint64_t seed, ntc_err *err)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        for (int j = 0; j < NTC_MAX_PARAMS; j++) {
            if (n->par[j] < 0)
                continue;
            ntc_value *v = &g->values[n->par[j]];
            v->data = ntc_malloc(sizeof(float) * (size_t)ntc_shape_numel(&v->shape));
            if (!v->data)
                return ntc_error(err, NULL, 0, "out of memory for parameter '%s'", v->name);
            v->owned = true;
            init_param(g, n, j, v, seed);
        }
    }
    return 0;
}

ntc_graph *ntc_resnet_build(const ntc_resnet_opts *o, ntc_err *err)
{
    if (ntc_resnet_check(o, err))
        return NULL;
    char name[64];
    if (o->arch == NTC_RESNET_CIFAR)
        snprintf(name, sizeof name, "resnet%d", o->depth);
    else
        snprintf(name, sizeof name, "resnet%d", o->arch == NTC_RESNET18 ? 18 : 34);
    ntc_graph *g = ntc_graph_new(o->name ? o->name : name);
    if (!g) {
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    builder b = {g, err};
    if (build_topology(&b, o) || ntc_graph_verify(g, err) || init_weights(g, o->seed, err)) {
        ntc_graph_free(g);
        return NULL;
    }
    return g;
}
