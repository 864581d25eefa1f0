/* The ONNX importer: models exported by PyTorch (tests/fixtures/onnx,
 * made by make_fixtures.py) run in the interpreter and agree with the
 * outputs PyTorch saved; the recognised blocks let `ntc tailor` work;
 * unsupported operators, attributes and opsets are refused with the node,
 * op and opset; truncated, malformed and randomly corrupted files fail
 * cleanly; failing allocations leak nothing. */
#include "testutil.h"
#include "ntc/data.h"
#include "ntc/frontends.h"
#include "ntc/runtime.h"
#include "frontends/onnx.pb-c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *fixture(const char *name)
{
    static char buf[1024];
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/onnx/%s", name);
    snprintf(buf, sizeof buf, "%s", tu_src(rel));
    return buf;
}

static ntc_graph *import_ok(const char *name)
{
    ntc_err err = {0};
    ntc_graph *g = ntc_onnx_import(fixture(name), &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    return g;
}

static ntc_array load_npy(const char *name)
{
    ntc_array a = {0};
    ntc_err err = {0};
    ck_assert_msg(ntc_npy_read(fixture(name), &a, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(a.dtype, NTC_DT_F32);
    return a;
}

/* Runs g on <model>_input.npy and compares with <model>_output.npy. */
static void check_against_pytorch(ntc_graph *g, const char *model)
{
    char in_name[128], out_name[128];
    snprintf(in_name, sizeof in_name, "%s_input.npy", model);
    snprintf(out_name, sizeof out_name, "%s_output.npy", model);
    ntc_array x = load_npy(in_name), want = load_npy(out_name);
    int batch = (int)x.shape.dims[0];
    ntc_err err = {0};
    ntc_exec *ex = ntc_exec_new_threads(g, batch, 1, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    const float *ins[] = {x.data};
    ck_assert_msg(ntc_exec_run(ex, ins, batch, &err) == 0, "%s", ntc_err_str(&err));
    ntc_shape s = ntc_exec_output_shape(ex, 0);
    ck_assert_int_eq(s.rank, want.shape.rank);
    for (int d = 0; d < s.rank; d++)
        ck_assert_int_eq(s.dims[d], want.shape.dims[d]);
    const float *y = ntc_exec_output(ex, 0), *w = want.data;
    double worst = 0;
    for (int64_t i = 0; i < ntc_array_numel(&want); i++)
        worst = fmax(worst, fabs((double)y[i] - (double)w[i]));
    ck_assert_msg(worst <= 1e-4, "%s: largest difference from PyTorch %g", model, worst);
    ntc_exec_free(ex);
    ntc_array_free(&x);
    ntc_array_free(&want);
}

static int block_of(const ntc_graph *g, const char *node)
{
    int n = ntc_graph_find_node(g, node);
    ck_assert_msg(n >= 0, "no node '%s'", node);
    return g->nodes[n].block;
}

static const char *block_name(const ntc_graph *g, const char *node)
{
    int b = block_of(g, node);
    return b < 0 ? "(none)" : g->blocks[b].name;
}

/* ---- agreement with PyTorch -------------------------------------------------- */

START_TEST(resnet_matches_pytorch)
{
    ntc_graph *g = import_ok("resnet8.onnx");
    ck_assert_str_eq(g->name, "resnet8");
    ck_assert_str_eq(ntc_graph_get_meta(g, "onnx.opset"), "13");
    ck_assert_int_eq(g->n_inputs, 1);
    ck_assert_str_eq(g->values[g->inputs[0]].name, "image");
    ck_assert_int_eq(g->values[g->inputs[0]].shape.dims[0], NTC_BATCH);
    ck_assert_str_eq(g->outputs[0].name, "logits");
    /* every Conv, BatchNormalization, Relu, Add, pool, flatten and Gemm became one node */
    ck_assert_int_eq(g->n_nodes, 31);
    int bn = ntc_graph_find_node(g, "/layer2/bn1/BatchNormalization");
    ck_assert_int_ge(bn, 0);
    ck_assert_float_eq(g->nodes[bn].a.momentum, 0.1f);
    check_against_pytorch(g, "resnet8");
    ntc_graph_free(g);
}
END_TEST

START_TEST(mlp_matches_pytorch)
{
    ntc_graph *g = import_ok("mlp.onnx");
    ck_assert_str_eq(ntc_graph_get_meta(g, "onnx.opset"), "9");
    /* MatMul + Add became one linear node with a bias */
    int mm = ntc_graph_find_node(g, "/MatMul");
    ck_assert_int_ge(mm, 0);
    ck_assert_int_eq(g->nodes[mm].op, NTC_OP_linear);
    ck_assert_int_ge(g->nodes[mm].par[1], 0);
    ck_assert_int_lt(ntc_graph_find_node(g, "/Add"), 0);
    check_against_pytorch(g, "mlp");
    ntc_graph_free(g);
}
END_TEST

/* auto_pad, Gemm's alpha/beta/transB, Sum, Identity, Constant, Mul by 1,
 * Reshape, ceil_mode and count_include_pad, against torch.nn.functional. */
START_TEST(ops_match_reference)
{
    ntc_graph *g = import_ok("ops.onnx");
    const ntc_attrs *conv = &g->nodes[ntc_graph_find_node(g, "conv")].a;
    const int conv_pad[4] = {1, 1, 0, 0}; /* SAME_LOWER: the odd unit in front */
    ck_assert_mem_eq(conv->pad, conv_pad, sizeof conv_pad);
    const ntc_attrs *mp = &g->nodes[ntc_graph_find_node(g, "maxpool")].a;
    const int mp_pad[4] = {0, 0, 1, 1};   /* SAME_UPPER: at the end */
    ck_assert_mem_eq(mp->pad, mp_pad, sizeof mp_pad);
    /* Identity, Constant and Mul by 1 leave no node; the Add folded into MatMul */
    const char *gone[] = {"same", "times_one", "one", "shape", "bias"};
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        ck_assert_msg(ntc_graph_find_node(g, gone[i]) < 0, "node '%s' was imported", gone[i]);
    ck_assert_int_eq(g->nodes[ntc_graph_find_node(g, "sum")].n_in, 3);
    check_against_pytorch(g, "ops");
    ntc_graph_free(g);
}
END_TEST

/* x.view(x.size(0), -1) with a dynamic batch: the Shape/Gather/Unsqueeze/
 * Concat chain folds into the Reshape's target, which becomes a flatten. */
START_TEST(view_flatten_folds)
{
    const char *models[] = {"view9.onnx", "view13.onnx"};
    for (int m = 0; m < 2; m++) {
        ntc_graph *g = import_ok(models[m]);
        ck_assert_int_eq(g->n_nodes, 4);
        int r = ntc_graph_find_node(g, "/Reshape");
        ck_assert_int_ge(r, 0);
        ck_assert_int_eq(g->nodes[r].op, NTC_OP_flatten);
        check_against_pytorch(g, "view");
        ntc_graph_free(g);
    }
}
END_TEST

/* ---- blocks ------------------------------------------------------------------ */

START_TEST(resnet_blocks)
{
    ntc_graph *g = import_ok("resnet8.onnx");
    ck_assert_int_eq(g->n_blocks, 5);
    const char *names[] = {"stem", "layer1", "layer2", "layer3", "head"};
    for (int b = 0; b < 5; b++) {
        ck_assert_str_eq(g->blocks[b].name, names[b]);
        ck_assert_int_eq(g->blocks[b].role, b < 4 ? NTC_ROLE_UNIVERSAL : NTC_ROLE_TASK);
        if (b >= 1 && b <= 3)
            ck_assert_str_eq(g->blocks[b].layer, names[b]);
    }
    ck_assert_str_eq(block_name(g, "/conv/Conv"), "stem");
    ck_assert_str_eq(block_name(g, "/Relu"), "stem");
    /* a block runs from the join before it to its own join and relu, shortcut included */
    ck_assert_str_eq(block_name(g, "/layer2/conv1/Conv"), "layer2");
    ck_assert_str_eq(block_name(g, "/layer2/down/down.0/Conv"), "layer2");
    ck_assert_str_eq(block_name(g, "/layer2/Add"), "layer2");
    ck_assert_str_eq(block_name(g, "/layer2/Relu_1"), "layer2");
    ck_assert_str_eq(block_name(g, "/GlobalAveragePool"), "head");
    ck_assert_str_eq(block_name(g, "/Flatten"), "head");
    ck_assert_str_eq(block_name(g, "/fc/Gemm"), "head");
    for (int i = 0; i < g->n_nodes; i++)
        ck_assert_msg(g->nodes[i].block >= 0, "node '%s' in no block", g->nodes[i].name);
    ntc_graph_free(g);

    /* no residual join: the MLP is a stem and a head (the last Gemm and the Softmax) */
    g = import_ok("mlp.onnx");
    ck_assert_int_eq(g->n_blocks, 2);
    ck_assert_str_eq(block_name(g, "/Relu_1"), "stem");
    ck_assert_str_eq(block_name(g, "/fc3/Gemm"), "head");
    ck_assert_str_eq(block_name(g, "/Softmax"), "head");
    ntc_graph_free(g);
}
END_TEST

/* Pre-activation blocks: the batchnorm and relu before the split belong to
 * the block they open, the final batchnorm and relu close the last block. */
START_TEST(preact_blocks)
{
    ntc_graph *g = import_ok("preact.onnx");
    ck_assert_int_eq(g->n_blocks, 4);
    ck_assert_str_eq(block_name(g, "/conv/Conv"), "stem");
    ck_assert_str_eq(block_name(g, "/layer1/bn1/BatchNormalization"), "layer1");
    ck_assert_str_eq(block_name(g, "/layer1/Add"), "layer1");
    ck_assert_str_eq(block_name(g, "/layer2/bn1/BatchNormalization"), "layer2");
    ck_assert_str_eq(block_name(g, "/layer2/Relu"), "layer2");
    ck_assert_str_eq(block_name(g, "/layer2/down/Conv"), "layer2");
    ck_assert_str_eq(block_name(g, "/bn/BatchNormalization"), "layer2");
    ck_assert_str_eq(block_name(g, "/Relu"), "layer2");
    ck_assert_str_eq(block_name(g, "/GlobalAveragePool"), "head");
    check_against_pytorch(g, "preact");
    ntc_graph_free(g);
}
END_TEST

/* ---- the command line: import, run, tailor, run ------------------------------ */

START_TEST(cli_import_tailor_run)
{
    const char *dir = tu_tmpdir();
    char *out = NULL;
    int rc = tu_ntc(&out, "import %s -o %s/backbone.xml", fixture("resnet8.onnx"), dir);
    ck_assert_msg(rc == 0, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "31 nodes, 5 blocks (4 universal), 77,754 parameters"));
    ck_assert_ptr_nonnull(strstr(out, "backbone.safetensors"));
    free(out);

    rc = tu_ntc(&out, "run %s/backbone.xml --input image=%s -o %s/y.npy", dir, fixture("resnet8_input.npy"), dir);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    char path[1200];
    snprintf(path, sizeof path, "%s/y.npy", dir);
    ntc_array y = {0}, want = load_npy("resnet8_output.npy");
    ntc_err err = {0};
    ck_assert_msg(ntc_npy_read(path, &y, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(ntc_array_numel(&y), ntc_array_numel(&want));
    for (int64_t i = 0; i < ntc_array_numel(&y); i++)
        ck_assert_msg(fabsf(((float *)y.data)[i] - ((float *)want.data)[i]) <= 1e-4f, "item %lld", (long long)i);
    ntc_array_free(&y);
    ntc_array_free(&want);

    rc = tu_ntc(&out, "tailor %s/backbone.xml --max-skip 2 --classes 5 -o %s/student.xml", dir, dir);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/student.xml", dir);
    ntc_graph *s = ntc_graph_read_xml(path, &err);
    ck_assert_msg(s != NULL, "%s", ntc_err_str(&err));
    /* layer1 reads the stem (one proxy), layers 2 and 3 get two each */
    const char *proxies[] = {"layer1.p1", "layer2.p1", "layer2.p2", "layer3.p1", "layer3.p2"};
    for (size_t i = 0; i < 5; i++)
        ck_assert_msg(ntc_graph_find_block(s, proxies[i]) >= 0, "no proxy %s", proxies[i]);
    ck_assert_int_lt(ntc_graph_find_block(s, "layer1.p2"), 0);
    ck_assert(s->blocks[ntc_graph_find_block(s, "layer3")].frozen);
    ntc_graph_free(s);
    rc = tu_ntc(&out, "run %s/student.xml --input %s -o %s/s.npy", dir, fixture("resnet8_input.npy"), dir);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/s.npy", dir);
    ck_assert_msg(ntc_npy_read(path, &y, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(y.shape.rank, 2);
    ck_assert_int_eq(y.shape.dims[0], 4);
    ck_assert_int_eq(y.shape.dims[1], 5);
    for (int64_t i = 0; i < ntc_array_numel(&y); i++)
        ck_assert(isfinite(((float *)y.data)[i]));
    ntc_array_free(&y);

    rc = tu_ntc(&out, "import %s -o %s/x.xml", fixture("logsoftmax.onnx"), dir);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(out, "ntc: error: "));
    ck_assert_ptr_nonnull(strstr(out, "(LogSoftmax)"));
    free(out);
    rc = tu_ntc(&out, "import %s", fixture("mlp.onnx"));
    ck_assert_int_eq(rc, 2);
    free(out);
}
END_TEST

/* The imported graph is an ordinary ntc graph: it checks, and the compiler's
 * passes (batchnorm folding, conv fusion) keep PyTorch's outputs. */
START_TEST(cli_check_and_optimise)
{
    const char *dir = tu_tmpdir();
    char *out = NULL;
    int rc = tu_ntc(&out, "import %s -o %s/b.xml", fixture("resnet8.onnx"), dir);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    rc = tu_ntc(&out, "check %s/b.xml", dir);
    ck_assert_msg(rc == 0 && strstr(out, "ok"), "%s", out);
    free(out);
    rc = tu_ntc(&out, "opt %s/b.xml --passes=fold-bn,fuse,dce -o %s/o.xml", dir, dir);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    char path[1200];
    snprintf(path, sizeof path, "%s/o.xml", dir);
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml(path, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    for (int i = 0; i < g->n_nodes; i++)
        ck_assert_msg(g->nodes[i].op != NTC_OP_batchnorm, "batchnorm '%s' left", g->nodes[i].name);
    check_against_pytorch(g, "resnet8");
    ntc_graph_free(g);
}
END_TEST

/* ONNX graphs may have several inputs: `ntc run` binds them by name, in any order. */
START_TEST(cli_two_named_inputs)
{
    const char *dir = tu_tmpdir();
    char *out = NULL;
    int rc = tu_ntc(&out, "import %s -o %s/two.xml", fixture("two_inputs.onnx"), dir);
    ck_assert_msg(rc == 0, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "input  a [N,6]"));
    ck_assert_ptr_nonnull(strstr(out, "input  b [N,3]"));
    free(out);
    char a[1024];
    snprintf(a, sizeof a, "%s", fixture("two_inputs_a.npy")); /* fixture() reuses its buffer */
    rc = tu_ntc(&out, "run %s/two.xml --input b=%s --input a=%s -o y=%s/y.npy", dir, fixture("two_inputs_b.npy"),
                a, dir);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    char path[1200];
    snprintf(path, sizeof path, "%s/y.npy", dir);
    ntc_array y = {0}, want = load_npy("two_inputs_output.npy");
    ntc_err err = {0};
    ck_assert_msg(ntc_npy_read(path, &y, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(ntc_array_numel(&y), ntc_array_numel(&want));
    for (int64_t i = 0; i < ntc_array_numel(&y); i++)
        ck_assert_msg(fabsf(((float *)y.data)[i] - ((float *)want.data)[i]) <= 1e-4f, "item %lld", (long long)i);
    ntc_array_free(&y);
    ntc_array_free(&want);
}
END_TEST

/* ---- refusals ------------------------------------------------------------------ */

static void expect_import_error(const char *name, const char *needle)
{
    ntc_err err = {0};
    ntc_graph *g = ntc_onnx_import(fixture(name), &err);
    ck_assert_msg(g == NULL, "%s imported", name);
    const char *msg = ntc_err_str(&err);
    ck_assert_msg(strstr(msg, needle), "'%s' does not say '%s'", msg, needle);
    ck_assert_msg(strstr(msg, name), "'%s' does not name the file", msg);
}

START_TEST(unsupported_op_and_opset)
{
    expect_import_error("logsoftmax.onnx", "node '/2/LogSoftmax' (LogSoftmax): operator LogSoftmax (opset 13) "
                                           "is not supported");
    expect_import_error("opset18.onnx", "opset 18 is not supported: ntc reads opsets 9 to 17");
}
END_TEST

/* An edit that points a string field at a literal records the old pointer
 * here, so the model can be freed as protobuf-c decoded it. */
static struct {
    char **slot;
    char *old;
} undo;

static void swap_string(char **slot, char *value)
{
    undo.slot = slot;
    undo.old = *slot;
    *slot = value;
}

/* Reads a fixture, lets `edit` change the decoded model, and imports the
 * re-encoded result, expecting an error that holds `needle`. */
static void expect_edit_error(const char *name, void (*edit)(Onnx__ModelProto *m), const char *needle)
{
    size_t len;
    ntc_err err = {0};
    char *data = ntc_read_file(fixture(name), &len, &err);
    ck_assert_msg(data != NULL, "%s", ntc_err_str(&err));
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, (const uint8_t *)data);
    ck_assert_ptr_nonnull(m);
    undo.slot = NULL;
    edit(m);
    size_t n = onnx__model_proto__get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    onnx__model_proto__pack(m, buf);
    if (undo.slot)
        *undo.slot = undo.old;
    ntc_graph *g = ntc_onnx_import_buffer(buf, n, name, &err);
    ck_assert_msg(g == NULL, "edited %s imported (expected '%s')", name, needle);
    ck_assert_msg(strstr(err.msg, needle), "'%s' does not say '%s'", ntc_err_str(&err), needle);
    free(buf);
    onnx__model_proto__free_unpacked(m, NULL);
    ntc_free(data);
}

static Onnx__NodeProto *node_named(Onnx__ModelProto *m, const char *name)
{
    for (size_t k = 0; k < m->graph->n_node; k++)
        if (!strcmp(m->graph->node[k]->name, name))
            return m->graph->node[k];
    ck_abort_msg("no node %s", name);
    return NULL;
}

static Onnx__AttributeProto *attr_named(Onnx__NodeProto *n, const char *name)
{
    for (size_t k = 0; k < n->n_attribute; k++)
        if (!strcmp(n->attribute[k]->name, name))
            return n->attribute[k];
    ck_abort_msg("no attribute %s", name);
    return NULL;
}

static char lit_ms[] = "com.microsoft", lit_concat[] = "Concat", lit_gather[] = "Gather";

static void opset8(Onnx__ModelProto *m) { m->opset_import[0]->version = 8; }
static void trans_a(Onnx__ModelProto *m) { attr_named(node_named(m, "/fc1/Gemm"), "transB")->name[5] = 'A'; }
static void tanh_op(Onnx__ModelProto *m) { memcpy(node_named(m, "/Relu")->op_type, "Tanh", 4); }
static void domain(Onnx__ModelProto *m) { swap_string(&node_named(m, "/Relu")->domain, lit_ms); }
static void no_opset(Onnx__ModelProto *m) { swap_string(&m->opset_import[0]->domain, lit_ms); }
static void concat(Onnx__ModelProto *m) { swap_string(&node_named(m, "/Add")->op_type, lit_concat); }
static void gather(Onnx__ModelProto *m) { swap_string(&node_named(m, "/Relu")->op_type, lit_gather); }
static void reshape_to_3d(Onnx__ModelProto *m)
{
    /* the target's second entry -1 -> 2: [N,2] does not flatten [N,2,4,4] */
    Onnx__TensorProto *t = attr_named(node_named(m, "/Constant_1"), "value")->t;
    ck_assert_int_eq(t->raw_data.len, 8);
    int64_t two = 2;
    memcpy(t->raw_data.data, &two, 8);
}
static void doubles(Onnx__ModelProto *m) { m->graph->initializer[0]->data_type = 11; }
static void softmax_axis0(Onnx__ModelProto *m) { attr_named(node_named(m, "/Softmax"), "axis")->i = 0; }
static void flatten_axis2(Onnx__ModelProto *m) { attr_named(node_named(m, "/Flatten"), "axis")->i = 2; }
static void unknown_attr(Onnx__ModelProto *m) { attr_named(node_named(m, "/fc1/Gemm"), "alpha")->name[0] = 'x'; }
static void undefined_input(Onnx__ModelProto *m) { node_named(m, "/Relu_1")->input[0][0] = 'X'; }
static void group2(Onnx__ModelProto *m) { attr_named(node_named(m, "/layer1/conv2/Conv"), "group")->i = 2; }
static void bn_training(Onnx__ModelProto *m)
{
    attr_named(node_named(m, "/bn/BatchNormalization"), "momentum")->name[0] = 'x';
}
static void bad_auto_pad(Onnx__ModelProto *m)
{
    Onnx__AttributeProto *a = attr_named(node_named(m, "conv"), "auto_pad");
    a->s.data[a->s.len - 1] = 'X';      /* SAME_LOWER -> SAME_LOWEX */
}
static void gemm_batch_bias(Onnx__ModelProto *m)
{
    Onnx__TensorProto *c = m->graph->initializer[3]; /* gc [8] -> [8,1]: varies along the batch */
    ck_assert_str_eq(c->name, "gc");
    c->dims[0] = 8;
    c->n_dims = 2;
    c->dims = realloc(c->dims, 2 * sizeof *c->dims);
    c->dims[1] = 1;
}
static void mul_by_two(Onnx__ModelProto *m)
{
    Onnx__TensorProto *t = attr_named(node_named(m, "one"), "value")->t;
    t->float_data[0] = 2.0f;
}

START_TEST(refused_edits)
{
    expect_edit_error("mlp.onnx", opset8, "opset 8 is not supported");
    expect_edit_error("mlp.onnx", trans_a, "node '/fc1/Gemm' (Gemm): transA=1 is not supported");
    expect_edit_error("mlp.onnx", tanh_op, "node '/Relu' (Tanh): operator Tanh (opset 9) is not supported");
    expect_edit_error("mlp.onnx", domain, "domain 'com.microsoft' is not supported");
    expect_edit_error("mlp.onnx", no_opset, "imports no opset of the default ONNX domain");
    expect_edit_error("mlp.onnx", doubles, "data type DOUBLE");
    expect_edit_error("mlp.onnx", concat, "node '/Add' (Concat): operator Concat (opset 9) is not supported on "
                                          "computed tensors: ntc has no concatenation op");
    expect_edit_error("mlp.onnx", gather, "node '/Relu' (Gather): Gather of a computed tensor is not supported");
    expect_edit_error("view13.onnx", reshape_to_3d, "node '/Reshape' (Reshape): Reshape of [N,2,4,4] to [N,2] is "
                                                    "not supported");
    expect_edit_error("mlp.onnx", softmax_axis0, "node '/Softmax' (Softmax): axis 0 is not supported");
    expect_edit_error("mlp.onnx", flatten_axis2, "node '/Flatten' (Flatten): axis 2 is not supported");
    expect_edit_error("mlp.onnx", unknown_attr, "attribute 'xlpha' is not supported (opset 9)");
    expect_edit_error("mlp.onnx", undefined_input, "reads 'XAdd_output_0', which no graph input");
    expect_edit_error("resnet8.onnx", group2, "group=2 (grouped or depthwise convolution) is not supported");
    expect_edit_error("resnet8.onnx", bn_training, "attribute 'xomentum' is not supported");
    expect_edit_error("ops.onnx", bad_auto_pad, "node 'conv' (Conv): auto_pad 'SAME_LOWEX' is unknown");
    expect_edit_error("ops.onnx", gemm_batch_bias, "node 'gemm' (Gemm): C must be a float scalar or hold one");
    expect_edit_error("ops.onnx", mul_by_two, "node 'times_one' (Mul): Mul is supported only as a product with "
                                              "the constant 1");
}
END_TEST

/* ---- damaged files ------------------------------------------------------------- */

START_TEST(truncated_files)
{
    size_t len;
    ntc_err err = {0};
    char *data = ntc_read_file(fixture("resnet8.onnx"), &len, &err);
    ck_assert_ptr_nonnull(data);
    /* A prefix of the file is never a model: nested messages are
     * length-prefixed and the top-level fields end with the opset list.
     * Every cut in the first and last bytes (headers, graph inputs and
     * outputs, opsets), every 997th in between (the weights). */
    for (size_t cut = 0; cut < len; cut += cut < 64 || cut + 400 >= len ? 1 : 997) {
        memset(&err, 0, sizeof err);
        ntc_graph *g = ntc_onnx_import_buffer(data, cut, "cut.onnx", &err);
        ck_assert_msg(g == NULL, "a %zu-byte prefix imported", cut);
        ck_assert_msg(!strncmp(ntc_err_str(&err), "cut.onnx: ", 10), "cut %zu: '%s'", cut, ntc_err_str(&err));
    }
    memset(&err, 0, sizeof err);
    ck_assert_ptr_null(ntc_onnx_import_buffer(data, len / 2, "half.onnx", &err));
    char want[256];
    snprintf(want, sizeof want, "half.onnx: not a valid ONNX model: the protobuf data is malformed or truncated "
             "(%zu bytes)", len / 2);
    ck_assert_str_eq(ntc_err_str(&err), want);
    ntc_free(data);

    expect_import_error("../xml/good_student.xml", "not a valid ONNX model");
    memset(&err, 0, sizeof err);
    ck_assert_ptr_null(ntc_onnx_import_buffer("", 0, "empty.onnx", &err));
    ck_assert_str_eq(ntc_err_str(&err), "empty.onnx: the model has no graph");
    ck_assert_ptr_null(ntc_onnx_import("/nonexistent/model.onnx", &err));
    ck_assert_ptr_nonnull(strstr(ntc_err_str(&err), "/nonexistent/model.onnx"));
}
END_TEST

/* Random byte flips may yield a model that still imports (a changed
 * weight) or one refused for any reason, but never a crash, a graph that
 * fails verification or a silent failure. */
START_TEST(random_flips_never_crash)
{
    const char *models[] = {"mlp.onnx", "ops.onnx"};
    unsigned seed = 12345;
    int refused = 0, imported = 0;
    for (size_t m = 0; m < 2; m++) {
        size_t len;
        ntc_err err = {0};
        char *data = ntc_read_file(fixture(models[m]), &len, &err);
        ck_assert_ptr_nonnull(data);
        char *copy = malloc(len);
        for (int trial = 0; trial < 1500; trial++) {
            memcpy(copy, data, len);
            int flips = 1 + (int)(tu_randf(&seed) * 4);
            for (int f = 0; f < flips; f++) {
                size_t at = (size_t)(tu_randf(&seed) * (float)len) % len;
                copy[at] = (char)(copy[at] ^ (1 + (int)(tu_randf(&seed) * 255)));
            }
            memset(&err, 0, sizeof err);
            ntc_graph *g = ntc_onnx_import_buffer(copy, len, models[m], &err);
            if (g) {
                imported++;
                ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
                ntc_graph_free(g);
            } else {
                refused++;
                ck_assert_msg(err.msg[0], "trial %d failed without a message", trial);
            }
        }
        free(copy);
        ntc_free(data);
    }
    ck_assert_int_gt(refused, 0);
    ck_assert_int_gt(imported, 0);
}
END_TEST

/* ---- out of memory: fail the N-th allocation for every N ----------------------- */

static long alloc_budget, live_blocks;

static void *failing_alloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    if (size == 0) {
        live_blocks -= ptr != NULL;
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
    const char *models[] = {"ops.onnx", "view13.onnx", "preact.onnx"};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        size_t len;
        ntc_err err = {0};
        char *data = ntc_read_file(fixture(models[m]), &len, &err);
        ck_assert_ptr_nonnull(data);
        bool succeeded = false;
        for (long n = 0; !succeeded; n++) {
            memset(&err, 0, sizeof err);
            alloc_budget = n;
            live_blocks = 0;
            ntc_set_allocator(failing_alloc, NULL);
            ntc_graph *g = ntc_onnx_import_buffer(data, len, models[m], &err);
            if (g) {
                succeeded = true;
                ntc_graph_free(g);
            }
            ntc_set_allocator(NULL, NULL);
            ck_assert_msg(g || strstr(err.msg, "out of memory"), "%s, allocation %ld: '%s'", models[m], n,
                          ntc_err_str(&err));
            ck_assert_msg(live_blocks == 0, "%s: failing allocation %ld leaks %ld blocks", models[m], n,
                          live_blocks);
        }
        ntc_free(data);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("onnx");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, resnet_matches_pytorch);
    tcase_add_test(tc, mlp_matches_pytorch);
    tcase_add_test(tc, ops_match_reference);
    tcase_add_test(tc, view_flatten_folds);
    tcase_add_test(tc, resnet_blocks);
    tcase_add_test(tc, preact_blocks);
    tcase_add_test(tc, cli_import_tailor_run);
    tcase_add_test(tc, cli_two_named_inputs);
    tcase_add_test(tc, cli_check_and_optimise);
    tcase_add_test(tc, unsupported_op_and_opset);
    tcase_add_test(tc, refused_edits);
    tcase_add_test(tc, truncated_files);
    tcase_add_test(tc, random_flips_never_crash);
    tcase_add_test(tc, out_of_memory);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
