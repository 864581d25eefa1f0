/* The ResNet builders: parameter and MAC counts against published and
 * hand-derived figures, shapes per stage, block structure, initial weights,
 * option validation and behaviour when memory runs out. */
#include "testutil.h"
#include "ntc/frontends.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ntc_graph *build(ntc_resnet_arch arch, int depth, const char *input, int classes, uint64_t seed)
{
    ntc_resnet_opts o;
    ntc_err err = {0};
    ntc_resnet_opts_default(&o);
    o.arch = arch;
    o.depth = depth;
    o.classes = classes;
    o.seed = seed;
    ck_assert_msg(ntc_resnet_set_input(&o, input, &err) == 0, "%s", ntc_err_str(&err));
    ntc_graph *g = ntc_resnet_build(&o, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    return g;
}

static int64_t total_params(const ntc_graph *g)
{
    int64_t t = 0;
    for (int i = 0; i < g->n_nodes; i++)
        t += ntc_node_params(g, i);
    return t;
}

static int64_t total_macs(const ntc_graph *g)
{
    int64_t t = 0;
    for (int i = 0; i < g->n_nodes; i++)
        t += ntc_node_macs(g, i);
    return t;
}

static const char *shape_of(const ntc_graph *g, const char *value)
{
    static char buf[128];
    int v = ntc_graph_find_value(g, value);
    ck_assert_msg(v >= 0, "no value '%s'", value);
    ntc_shape_format(&g->values[v].shape, buf, sizeof buf);
    return buf;
}

/* torchvision's resnet18/34 report these counts (sum of p.numel() over
 * model.parameters()); batchnorm running statistics are not parameters. */
START_TEST(imagenet_param_counts)
{
    ntc_graph *g = build(NTC_RESNET18, 0, "3x224x224", 1000, 0);
    ck_assert_int_eq(total_params(g), 11689512);
    ntc_graph_free(g);
    g = build(NTC_RESNET34, 0, "3x224x224", 1000, 0);
    ck_assert_int_eq(total_params(g), 21797672);
    ntc_graph_free(g);
}
END_TEST

/* resnet18 on 3x224x224, MACs of conv and fc layers:
 *   stem 7x7 conv 3->64 at 112x112:       64*112*112*3*49       = 118,013,952
 *   s1: 4 convs 3x3 64->64 at 56x56:      4 * 64*56*56*576      = 462,422,016
 *   s2: 3x3 64->128 s2 at 28x28:              128*28*28*576     =  57,802,752
 *       3 convs 3x3 128->128 at 28x28:    3 * 128*28*28*1152    = 346,816,512
 *       1x1 downsample 64->128 at 28x28:      128*28*28*64      =   6,422,528
 *                                                          stage = 411,041,792
 *   s3, s4: each stage has the same count as s2 (channels double,
 *       area quarters)                                         2 * 411,041,792
 *   fc 512->1000:                                                       512,000
 *   total = 118,013,952 + 462,422,016 + 3*411,041,792 + 512,000 = 1,814,073,344
 * which is the "1.82 G" usually quoted (within 1%). */
START_TEST(resnet18_macs)
{
    ntc_graph *g = build(NTC_RESNET18, 0, "3x224x224", 1000, 0);
    int64_t macs = total_macs(g);
    ck_assert_int_eq(macs, 1814073344);
    ck_assert(fabs((double)macs - 1.82e9) < 0.01 * 1.82e9);
    ck_assert_int_eq(ntc_node_macs(g, ntc_graph_find_node(g, "stem.conv")), 118013952);
    ntc_graph_free(g);
}
END_TEST

/* Parameters of a CIFAR ResNet, derived from the architecture without the
 * builder: conv k*k*in*out (no bias), batchnorm 2*channels learnable. */
static int64_t cifar_params_formula(int depth, int in_c, const int w[3], int classes)
{
    int n = (depth - 2) / 6;
    int64_t p = 9LL * in_c * w[0] + 2 * w[0];                  /* stem conv + bn */
    int c = w[0];
    for (int s = 0; s < 3; s++)
        for (int b = 0; b < n; b++) {
            int stride = s > 0 && b == 0 ? 2 : 1;
            int64_t block = 9LL * c * w[s] + 2 * w[s]              /* conv1 + bn1 */
                          + 9LL * w[s] * w[s] + 2 * w[s];          /* conv2 + bn2 */
            if (stride != 1 || c != w[s])
                block += (int64_t)c * w[s] + 2 * w[s];             /* projection + bn */
            p += block;
            c = w[s];
        }
    return p + (int64_t)c * classes + classes;                    /* fc */
}

START_TEST(cifar_param_counts)
{
    static const int def[3] = {16, 32, 64}, narrow[3] = {8, 16, 24};
    ntc_graph *g = build(NTC_RESNET_CIFAR, 20, "1x28x28", 10, 0);
    ck_assert_int_eq(total_params(g), cifar_params_formula(20, 1, def, 10));
    ck_assert_int_eq(total_params(g), 272186);   /* DESIGN.md: "0.27M parameters" */
    ntc_graph_free(g);

    g = build(NTC_RESNET_CIFAR, 56, "3x32x32", 100, 0);
    ck_assert_int_eq(total_params(g), cifar_params_formula(56, 3, def, 100));
    ntc_graph_free(g);

    ntc_resnet_opts o;
    ntc_err err = {0};
    ntc_resnet_opts_default(&o);
    o.depth = 8;
    ck_assert_int_eq(ntc_resnet_set_widths(&o, "8,16,24", &err), 0);
    g = ntc_resnet_build(&o, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    ck_assert_int_eq(total_params(g), cifar_params_formula(8, 3, narrow, 10));
    ck_assert_str_eq(shape_of(g, "s3.b0.relu"), "N,24,8,8");
    ntc_graph_free(g);
}
END_TEST

START_TEST(stage_shapes)
{
    ntc_graph *g = build(NTC_RESNET_CIFAR, 20, "1x28x28", 10, 0);
    ck_assert_str_eq(shape_of(g, "image"), "N,1,28,28");
    ck_assert_str_eq(shape_of(g, "stem.relu"), "N,16,28,28");
    ck_assert_str_eq(shape_of(g, "s1.b2.relu"), "N,16,28,28");
    ck_assert_str_eq(shape_of(g, "s2.b0.relu"), "N,32,14,14");
    ck_assert_str_eq(shape_of(g, "s2.b2.relu"), "N,32,14,14");
    ck_assert_str_eq(shape_of(g, "s3.b2.relu"), "N,64,7,7");
    ck_assert_str_eq(shape_of(g, "head.flatten"), "N,64");
    ck_assert_str_eq(shape_of(g, "head.fc"), "N,10");
    ck_assert_int_lt(ntc_graph_find_value(g, "s4.b0.relu"), 0);
    ntc_graph_free(g);

    g = build(NTC_RESNET34, 0, "3x224x224", 1000, 0);
    ck_assert_str_eq(shape_of(g, "stem.relu"), "N,64,112,112");
    ck_assert_str_eq(shape_of(g, "stem.pool"), "N,64,56,56");
    ck_assert_str_eq(shape_of(g, "s1.b2.relu"), "N,64,56,56");
    ck_assert_str_eq(shape_of(g, "s2.b3.relu"), "N,128,28,28");
    ck_assert_str_eq(shape_of(g, "s3.b5.relu"), "N,256,14,14");
    ck_assert_str_eq(shape_of(g, "s4.b2.relu"), "N,512,7,7");
    ck_assert_int_lt(ntc_graph_find_value(g, "s4.b3.relu"), 0);
    ck_assert_str_eq(shape_of(g, "head.fc"), "N,1000");
    ntc_graph_free(g);
}
END_TEST

/* The block structure NetTailor relies on. */
START_TEST(blocks_and_names)
{
    ntc_graph *g = build(NTC_RESNET18, 0, "3x64x64", 7, 0);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(g->n_blocks, 1 + 8 + 1);
    for (int i = 0; i < g->n_blocks; i++) {
        const ntc_block *b = &g->blocks[i];
        bool is_head = !strcmp(b->name, "head");
        ck_assert_int_eq(b->role, is_head ? NTC_ROLE_TASK : NTC_ROLE_UNIVERSAL);
        ck_assert(!b->frozen);
        if (is_head || !strcmp(b->name, "stem")) {
            ck_assert_ptr_null(b->layer);
            continue;
        }
        /* a residual block: its own NetTailor layer; its final relu is the
         * only value other blocks read */
        ck_assert_str_eq(b->layer, b->name);
        char name[128];
        snprintf(name, sizeof name, "%s.relu", b->name);
        int out = ntc_graph_find_node(g, name);
        ck_assert_int_ge(out, 0);
        ck_assert_int_eq(g->nodes[out].block, i);
        ck_assert_int_ge(ntc_graph_count_uses(g, g->nodes[out].out), 1);
        for (int k = 0; k < g->n_nodes; k++)
            for (int j = 0; j < g->nodes[k].n_in; j++) {
                int p = g->values[g->nodes[k].in[j]].producer;
                if (g->nodes[k].block != i && p >= 0 && g->nodes[p].block == i)
                    ck_assert_int_eq(p, out);
            }
    }
    for (int i = 0; i < g->n_nodes; i++)
        ck_assert_msg(g->nodes[i].block >= 0, "node %s outside blocks", g->nodes[i].name);
    /* projections exactly where the shape changes */
    ck_assert_int_lt(ntc_graph_find_node(g, "s1.b0.down.conv"), 0);
    ck_assert_int_ge(ntc_graph_find_node(g, "s2.b0.down.conv"), 0);
    ck_assert_int_ge(ntc_graph_find_node(g, "s2.b0.down.bn"), 0);
    ck_assert_int_lt(ntc_graph_find_node(g, "s2.b1.down.conv"), 0);
    int add = ntc_graph_find_node(g, "s2.b0.add");
    ck_assert_int_eq(g->nodes[add].n_in, 2);
    ck_assert_int_eq(g->nodes[add].in[0], ntc_graph_find_value(g, "s2.b0.bn2"));
    ck_assert_int_eq(g->nodes[add].in[1], ntc_graph_find_value(g, "s2.b0.down.bn"));
    add = ntc_graph_find_node(g, "s2.b1.add");
    ck_assert_int_eq(g->nodes[add].in[1], ntc_graph_find_value(g, "s2.b0.relu"));
    /* torchvision's strides: on the first conv of the block and on the projection */
    ck_assert_int_eq(g->nodes[ntc_graph_find_node(g, "s3.b0.conv1")].a.stride[0], 2);
    ck_assert_int_eq(g->nodes[ntc_graph_find_node(g, "s3.b0.conv2")].a.stride[0], 1);
    ck_assert_int_eq(g->nodes[ntc_graph_find_node(g, "s3.b0.down.conv")].a.stride[1], 2);
    ck_assert_int_eq(g->n_inputs, 1);
    ck_assert_int_eq(g->n_outputs, 1);
    ck_assert_str_eq(g->outputs[0].name, "logits");
    ck_assert_int_eq(g->outputs[0].value, ntc_graph_find_value(g, "head.fc"));
    ck_assert_str_eq(g->name, "resnet18");
    ntc_graph_free(g);
}
END_TEST

static const float *data_of(const ntc_graph *g, const char *name)
{
    int v = ntc_graph_find_value(g, name);
    ck_assert_msg(v >= 0 && g->values[v].data, "no data for '%s'", name);
    return g->values[v].data;
}

START_TEST(weights_initialised)
{
    ntc_graph *g = build(NTC_RESNET18, 0, "3x32x32", 1000, 5);
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].kind == NTC_VAL_PARAM)
            ck_assert_msg(g->values[i].data && g->values[i].owned, "%s", g->values[i].name);
    /* He (fan_out) normal: std sqrt(2 / (512*3*3)), mean 0; 2.4M samples */
    const float *w = data_of(g, "s4.b1.conv2.weight");
    int64_t n = 512LL * 512 * 9;
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++)
        sum += w[i], sq += (double)w[i] * w[i];
    double want = sqrt(2.0 / (512 * 9)), mean = sum / n, std = sqrt(sq / n - mean * mean);
    ck_assert_msg(fabs(std - want) < 0.01 * want, "std %g want %g", std, want);
    ck_assert_msg(fabs(mean) < 0.01 * want, "mean %g", mean);
    /* linear: uniform within +-1/sqrt(512), spread over the whole range */
    const float *fc = data_of(g, "head.fc.weight");
    double bound = 1 / sqrt(512.0), lo = 1, hi = -1;
    for (int64_t i = 0; i < 512 * 1000; i++) {
        lo = fc[i] < lo ? fc[i] : lo;
        hi = fc[i] > hi ? fc[i] : hi;
    }
    ck_assert(lo >= -bound && hi <= bound);
    ck_assert(lo < -0.99 * bound && hi > 0.99 * bound);
    const float *fb = data_of(g, "head.fc.bias");
    for (int i = 0; i < 1000; i++)
        ck_assert(fabs(fb[i]) <= bound);
    /* batchnorm starts as the identity */
    const char *slot[] = {"scale", "bias", "mean", "var"};
    const float fill[] = {1, 0, 0, 1};
    for (int s = 0; s < 4; s++) {
        char name[64];
        snprintf(name, sizeof name, "s2.b0.down.bn.%s", slot[s]);
        const float *p = data_of(g, name);
        for (int i = 0; i < 128; i++)
            ck_assert_float_eq(p[i], fill[s]);
    }
    ntc_graph_free(g);
}
END_TEST

static bool same_param(const ntc_graph *a, const ntc_graph *b, const char *name)
{
    int va = ntc_graph_find_value(a, name), vb = ntc_graph_find_value(b, name);
    int64_t n = ntc_shape_numel(&a->values[va].shape);
    return n == ntc_shape_numel(&b->values[vb].shape) &&
           !memcmp(a->values[va].data, b->values[vb].data, sizeof(float) * (size_t)n);
}

START_TEST(weights_deterministic)
{
    ntc_graph *a = build(NTC_RESNET_CIFAR, 14, "1x16x16", 10, 42);
    ntc_graph *b = build(NTC_RESNET_CIFAR, 14, "1x16x16", 10, 42);
    ntc_graph *c = build(NTC_RESNET_CIFAR, 14, "1x16x16", 10, 43);
    ntc_graph *d = build(NTC_RESNET_CIFAR, 14, "1x16x16", 5, 42);   /* other classes */
    ck_assert_int_eq(a->n_values, b->n_values);
    for (int i = 0; i < a->n_values; i++)
        if (a->values[i].kind == NTC_VAL_PARAM)
            ck_assert_msg(same_param(a, b, a->values[i].name), "%s differs", a->values[i].name);
    ck_assert(!same_param(a, c, "stem.conv.weight"));
    ck_assert(!same_param(a, c, "head.fc.weight"));
    /* each parameter has its own stream: the backbone does not depend on the head */
    ck_assert(same_param(a, d, "s3.b1.conv2.weight"));
    ck_assert(same_param(a, d, "stem.conv.weight"));
    /* and streams differ between parameters of equal shape */
    ck_assert_int_ne(memcmp(data_of(a, "s1.b0.conv1.weight"), data_of(a, "s1.b0.conv2.weight"),
                            16 * 16 * 9 * sizeof(float)), 0);
    ntc_graph_free(a);
    ntc_graph_free(b);
    ntc_graph_free(c);
    ntc_graph_free(d);
}
END_TEST

static void expect_build_error(const ntc_resnet_opts *o, const char *needle)
{
    ntc_err err = {0};
    ntc_graph *g = ntc_resnet_build(o, &err);
    ck_assert_ptr_null(g);
    ck_assert_msg(strstr(err.msg, needle), "'%s' lacks '%s'", err.msg, needle);
}

START_TEST(options_validated)
{
    ntc_resnet_opts o;
    ntc_err err = {0};
    ntc_resnet_opts_default(&o);
    o.depth = 21;
    expect_build_error(&o, "6n+2");
    o.depth = 2;
    expect_build_error(&o, "6n+2");
    o.depth = 20;
    o.classes = 0;
    expect_build_error(&o, "classes");
    o.classes = 10;
    o.height = 0;
    expect_build_error(&o, "input");
    o.height = 32;
    ck_assert_int_eq(ntc_resnet_set_widths(&o, "16,32,64,128", &err), 0);
    expect_build_error(&o, "needs 3 widths");
    o.arch = NTC_RESNET18;                /* four widths fit resnet18 */
    ntc_graph *g = ntc_resnet_build(&o, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    ck_assert_str_eq(shape_of(g, "s4.b1.relu"), "N,128,1,1");
    ntc_graph_free(g);
    o.arch = (ntc_resnet_arch)7;
    expect_build_error(&o, "arch");

    /* parsers refuse and leave the options alone */
    ntc_resnet_opts_default(&o);
    const char *bad_inputs[] = {"", "1x28", "1x28x28x1", "0x28x28", "1x-28x28", "1x28x", "ax1x1",
                                "1,28,28", "1x28x28 ", "1x99999999999999999999x1"};
    for (size_t i = 0; i < sizeof bad_inputs / sizeof bad_inputs[0]; i++) {
        ck_assert_msg(ntc_resnet_set_input(&o, bad_inputs[i], &err) == -1, "accepted '%s'", bad_inputs[i]);
        ck_assert_ptr_nonnull(strstr(err.msg, "CxHxW"));
    }
    ck_assert_int_eq(o.channels, 3);
    ck_assert_int_eq(o.height, 32);
    const char *bad_widths[] = {"", "16,,64", "16,32,64,", "1,2,3,4,5", "16;32;64", "0,1,2"};
    for (size_t i = 0; i < sizeof bad_widths / sizeof bad_widths[0]; i++)
        ck_assert_msg(ntc_resnet_set_widths(&o, bad_widths[i], &err) == -1, "accepted '%s'", bad_widths[i]);
    ck_assert_int_eq(o.n_widths, 0);
    ck_assert_int_eq(ntc_resnet_set_arch(&o, "resnet50", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "resnet50"));
    ck_assert_int_eq(o.arch, NTC_RESNET_CIFAR);
    ck_assert_int_eq(ntc_resnet_set_arch(&o, "resnet34", &err), 0);
    ck_assert_int_eq(o.arch, NTC_RESNET34);
    ck_assert_int_eq(ntc_resnet_set_input(&o, "1x28x30", &err), 0);
    ck_assert_int_eq(o.width, 30);
}
END_TEST

/* ---- out of memory: fail the N-th allocation for every N ------------------- */

static long alloc_budget, live_blocks;

static void *failing_alloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    if (size == 0) {
        live_blocks--;
        free(ptr);
        return NULL;
    }
    if (alloc_budget-- <= 0)
        return NULL;
    void *p = realloc(ptr, size);
    if (p && !ptr)
        live_blocks++;
    return p;
}

START_TEST(out_of_memory)
{
    ntc_resnet_opts o;
    ntc_resnet_opts_default(&o);
    o.depth = 8;
    bool succeeded = false;
    for (long n = 0; !succeeded; n++) {
        ntc_err err = {0};
        alloc_budget = n;
        live_blocks = 0;
        ntc_set_allocator(failing_alloc, NULL);
        ntc_graph *g = ntc_resnet_build(&o, &err);
        if (g) {
            succeeded = true;
            ntc_graph_free(g);
        } else {
            ck_assert_msg(err.msg[0], "allocation %ld failed silently", n);
        }
        ntc_set_allocator(NULL, NULL);
        ck_assert_msg(live_blocks == 0, "failing allocation %ld leaks %ld blocks", n, live_blocks);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("resnet");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, imagenet_param_counts);
    tcase_add_test(tc, resnet18_macs);
    tcase_add_test(tc, cifar_param_counts);
    tcase_add_test(tc, stage_shapes);
    tcase_add_test(tc, blocks_and_names);
    tcase_add_test(tc, weights_initialised);
    tcase_add_test(tc, weights_deterministic);
    tcase_add_test(tc, options_validated);
    tcase_add_test(tc, out_of_memory);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
