/* The in-memory IR: building graphs, shape rules, MACs, topological order,
 * the verifier, editing and compaction. */
#include "testutil.h"

#include <string.h>

static int add(ntc_graph *g, ntc_op op, const char *name, int in, int block)
{
    int n = ntc_graph_add_node(g, op, name, &in, 1, block);
    ck_assert_int_ge(n, 0);
    return n;
}

static int out(ntc_graph *g, int node) { return g->nodes[node].out; }

/* x [N,3,8,8] -> conv(4, k3, s2, p1) -> bn -> relu -> gap -> flatten -> linear(5) */
static ntc_graph *small_net(void)
{
    ntc_graph *g = ntc_graph_new("small");
    ntc_shape s;
    ck_assert_int_eq(ntc_shape_parse("N,3,8,8", &s), 0);
    int x = ntc_graph_add_input(g, "x", &s);
    int b = ntc_graph_add_block(g, "b0", NTC_ROLE_UNIVERSAL);
    int c = add(g, NTC_OP_conv2d, "conv", x, b);
    g->nodes[c].a.filters = 4;
    g->nodes[c].a.kernel[0] = g->nodes[c].a.kernel[1] = 3;
    g->nodes[c].a.stride[0] = g->nodes[c].a.stride[1] = 2;
    for (int i = 0; i < 4; i++)
        g->nodes[c].a.pad[i] = 1;
    ck_assert_int_ge(ntc_node_add_param(g, c, "weight", NULL), 0);
    int bn = add(g, NTC_OP_batchnorm, "bn", out(g, c), b);
    const char *slots[] = {"scale", "bias", "mean", "var"};
    for (int i = 0; i < 4; i++)
        ck_assert_int_ge(ntc_node_add_param(g, bn, slots[i], NULL), 0);
    int r = add(g, NTC_OP_relu, "relu", out(g, bn), b);
    int gap = add(g, NTC_OP_global_avgpool, "gap", out(g, r), -1);
    int fl = add(g, NTC_OP_flatten, "flat", out(g, gap), -1);
    int fc = add(g, NTC_OP_linear, "fc", out(g, fl), -1);
    g->nodes[fc].a.units = 5;
    ntc_node_add_param(g, fc, "weight", NULL);
    ntc_node_add_param(g, fc, "bias", NULL);
    ck_assert_int_ge(ntc_graph_add_output(g, "logits", out(g, fc)), 0);
    return g;
}

START_TEST(shapes_and_macs)
{
    ntc_graph *g = small_net();
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
    char buf[64];
    ntc_shape_format(&g->values[ntc_graph_find_value(g, "conv")].shape, buf, sizeof buf);
    ck_assert_str_eq(buf, "N,4,4,4");
    ntc_shape_format(&g->values[ntc_graph_find_value(g, "fc")].shape, buf, sizeof buf);
    ck_assert_str_eq(buf, "N,5");
    ntc_shape_format(&g->values[ntc_graph_find_value(g, "conv.weight")].shape, buf, sizeof buf);
    ck_assert_str_eq(buf, "4,3,3,3");
    /* conv: 4 filters * 4*4 outputs * 3*3*3 taps = 1728; fc: 5*4 = 20 */
    ck_assert_int_eq(ntc_node_macs(g, ntc_graph_find_node(g, "conv")), 1728);
    ck_assert_int_eq(ntc_node_macs(g, ntc_graph_find_node(g, "fc")), 20);
    ck_assert_int_eq(ntc_node_params(g, ntc_graph_find_node(g, "bn")), 8);
    ck_assert_int_eq(ntc_node_params(g, ntc_graph_find_node(g, "fc")), 25);
    ntc_graph_free(g);
}
END_TEST

START_TEST(shape_parse_format)
{
    ntc_shape s;
    char buf[64];
    ck_assert_int_eq(ntc_shape_parse("N,1,28,28", &s), 0);
    ck_assert_int_eq(s.rank, 4);
    ck_assert_int_eq(s.dims[0], NTC_BATCH);
    ntc_shape_format(&s, buf, sizeof buf);
    ck_assert_str_eq(buf, "N,1,28,28");
    ck_assert_int_eq(ntc_shape_parse("", &s), -1);
    ck_assert_int_eq(ntc_shape_parse("3,N", &s), -1);
    ck_assert_int_eq(ntc_shape_parse("3,,4", &s), -1);
    ck_assert_int_eq(ntc_shape_parse("3,0", &s), -1);
    ck_assert_int_eq(ntc_shape_parse("3,-2", &s), -1);
    ck_assert_int_eq(ntc_shape_parse("1,2,3,4,5,6,7", &s), -1);
    ck_assert_int_eq(ntc_shape_parse("12x", &s), -1);
}
END_TEST

/* Pool output sizes follow ONNX, including ceil_mode's rule that the last
 * window must start inside the input or the leading padding. */
START_TEST(pool_rules)
{
    struct { int in, k, s, pb, pe, ceil, want; } cases[] = {
        {112, 3, 2, 1, 1, 0, 56},  /* resnet18 stem pool */
        {5, 2, 2, 0, 0, 0, 2},
        {5, 2, 2, 0, 0, 1, 3},
        {6, 3, 2, 1, 1, 1, 4},     /* torch: ceil((6+2-3)/2)+1 = 4, last start 6 < 7 ok */
        {4, 3, 2, 1, 1, 1, 3},     /* ceil(3/2)+1 = 3; last start 4 < 4+1 keeps it */
        {3, 2, 2, 0, 0, 1, 2},     /* ceil(1/2)+1 = 2; last start 2 < 3 keeps it */
        {4, 2, 2, 1, 1, 1, 3},     /* ceil(4/2)+1 = 3; last start 4 >= 4+1? no: 3 */
        {3, 2, 2, 1, 0, 1, 2},     /* ceil(2/2)+1 = 2 */
        {2, 2, 2, 1, 1, 1, 2},     /* ceil(2/2)+1 = 2; last start 2 < 3 */
        {3, 3, 3, 1, 1, 1, 2},     /* ceil(2/3)+1 = 2; last start 3 < 4 */
        {1, 2, 2, 1, 1, 1, 1},     /* ceil(1/2)+1 = 2; last start 2 >= 1+1: dropped */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ntc_graph *g = ntc_graph_new("p");
        ntc_shape s = {4, {NTC_BATCH, 2, cases[i].in, cases[i].in}};
        int x = ntc_graph_add_input(g, "x", &s);
        int p = add(g, NTC_OP_maxpool, "p", x, -1);
        ntc_attrs *a = &g->nodes[p].a;
        a->kernel[0] = a->kernel[1] = cases[i].k;
        a->stride[0] = a->stride[1] = cases[i].s;
        a->pad[0] = a->pad[1] = cases[i].pb;
        a->pad[2] = a->pad[3] = cases[i].pe;
        a->ceil_mode = cases[i].ceil;
        ntc_graph_add_output(g, "y", out(g, p));
        ntc_err err = {0};
        ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
        ck_assert_int_eq(g->values[out(g, p)].shape.dims[2], cases[i].want);
        ntc_graph_free(g);
    }
}
END_TEST

START_TEST(verifier_rejects)
{
    ntc_err err = {0};
    /* missing required parameter */
    ntc_graph *g = small_net();
    g->nodes[ntc_graph_find_node(g, "conv")].par[0] = -1;
    ck_assert_int_ne(ntc_graph_verify(g, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "weight"));
    ntc_graph_free(g);
    /* add with mismatched shapes */
    g = small_net();
    int conv = out(g, ntc_graph_find_node(g, "conv"));
    int x = g->inputs[0];
    int ins[2] = {conv, x};
    int a = ntc_graph_add_node(g, NTC_OP_add, "bad_add", ins, 2, -1);
    ntc_graph_add_output(g, "extra", out(g, a));
    ck_assert_int_ne(ntc_graph_verify(g, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad_add"));
    ntc_graph_free(g);
    /* a cycle: relu reads its own consumer */
    g = small_net();
    int relu = ntc_graph_find_node(g, "relu");
    g->nodes[relu].in[0] = out(g, ntc_graph_find_node(g, "gap"));
    ck_assert_int_ne(ntc_graph_verify(g, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "cycle"));
    ntc_graph_free(g);
    /* wrong arity */
    g = small_net();
    g->nodes[ntc_graph_find_node(g, "relu")].n_in = 0;
    ck_assert_int_ne(ntc_graph_verify(g, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "input"));
    ntc_graph_free(g);
    /* duplicate names are refused at creation */
    g = small_net();
    ck_assert_int_eq(ntc_graph_add_node(g, NTC_OP_relu, "conv", &x, 1, -1), -1);
    ck_assert_int_eq(ntc_graph_add_block(g, "b0", NTC_ROLE_TASK), -1);
    ntc_graph_free(g);
}
END_TEST

START_TEST(edit_and_compact)
{
    ntc_graph *g = small_net();
    ntc_err err = {0};
    /* bypass the relu, remove it, compact: the graph stays valid */
    int relu = ntc_graph_find_node(g, "relu");
    int bn_out = g->nodes[relu].in[0];
    ntc_graph_replace_uses(g, g->nodes[relu].out, bn_out);
    ck_assert_int_eq(ntc_graph_count_uses(g, g->nodes[relu].out), 0);
    ntc_graph_remove_node(g, relu);
    ntc_graph_compact(g);
    ck_assert_int_eq(g->n_nodes, 5);
    ck_assert_int_lt(ntc_graph_find_node(g, "relu"), 0);
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
    /* removing the conv drops its weight parameter too */
    int before = g->n_values;
    int conv = ntc_graph_find_node(g, "conv");
    ntc_graph_replace_uses(g, g->nodes[conv].out, g->inputs[0]);
    ntc_graph_remove_node(g, conv);
    ntc_graph_compact(g);
    ck_assert_int_eq(g->n_values, before - 2);
    ck_assert_int_lt(ntc_graph_find_value(g, "conv.weight"), 0);
    ntc_graph_free(g);
}
END_TEST

START_TEST(clone_is_deep)
{
    ntc_graph *g = small_net();
    ntc_err err = {0};
    ck_assert_int_eq(ntc_graph_verify(g, &err), 0);
    int w = ntc_graph_find_value(g, "fc.bias");
    g->values[w].data = ntc_calloc(5, sizeof(float));
    g->values[w].owned = true;
    g->values[w].data[2] = 7.0f;
    ntc_graph *c = ntc_graph_clone(g);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_ne(c->values[w].data, g->values[w].data);
    ck_assert_float_eq(c->values[w].data[2], 7.0f);
    ck_assert_ptr_ne(c->nodes[0].in, g->nodes[0].in);
    ck_assert_str_eq(c->nodes[0].name, "conv");
    ntc_graph_free(g);
    ck_assert_int_eq(ntc_graph_verify(c, &err), 0);
    ntc_graph_free(c);
}
END_TEST

START_TEST(metadata)
{
    ntc_graph *g = small_net();
    ck_assert_ptr_null(ntc_graph_get_meta(g, "a"));
    ck_assert_int_eq(ntc_graph_set_meta(g, "a", "1"), 0);
    ck_assert_int_eq(ntc_graph_set_meta(g, "b", "2"), 0);
    ck_assert_int_eq(ntc_graph_set_meta(g, "a", "3"), 0);
    ck_assert_int_eq(g->n_meta, 2);
    ck_assert_str_eq(ntc_graph_get_meta(g, "a"), "3");
    ntc_graph *c = ntc_graph_clone(g);
    ck_assert_int_eq(ntc_graph_set_meta(g, "a", NULL), 0);
    ck_assert_ptr_null(ntc_graph_get_meta(g, "a"));
    ck_assert_str_eq(ntc_graph_get_meta(g, "b"), "2");
    ck_assert_str_eq(ntc_graph_get_meta(c, "a"), "3");
    ntc_graph_free(g);
    ck_assert_str_eq(ntc_graph_get_meta(c, "b"), "2");
    ntc_graph_free(c);
}
END_TEST

START_TEST(ops_table)
{
    for (int i = 0; i < NTC_OP_COUNT; i++) {
        ck_assert_ptr_nonnull(ntc_ops[i].name);
        ck_assert_ptr_nonnull(ntc_ops[i].shape);
        ck_assert_int_eq(ntc_op_lookup(ntc_ops[i].name), i);
    }
    ck_assert_int_eq(ntc_op_lookup("nope"), -1);
    ntc_attrs a;
    ntc_attrs_default(NTC_OP_conv2d, &a);
    ck_assert_int_eq(a.stride[1], 1);
    ck_assert_int_eq(a.dilation[0], 1);
    ntc_attrs_default(NTC_OP_batchnorm, &a);
    ck_assert_float_eq_tol(a.epsilon, 1e-5f, 1e-12f);
    ntc_attrs_default(NTC_OP_softmax, &a);
    ck_assert_int_eq(a.axis, -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ir");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, shapes_and_macs);
    tcase_add_test(tc, shape_parse_format);
    tcase_add_test(tc, pool_rules);
    tcase_add_test(tc, verifier_rejects);
    tcase_add_test(tc, edit_and_compact);
    tcase_add_test(tc, clone_is_deep);
    tcase_add_test(tc, metadata);
    tcase_add_test(tc, ops_table);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
