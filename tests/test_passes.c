/* The pass API: dce, pipelines, the manager (verifier between passes,
 * fixed points, modes, options, timing, dumps), plugins loaded in process
 * and through `ntc opt`, and the example plugin's effect on a graph. */
#include "testutil.h"
#include "ntc/pass.h"
#include "ntc/frontends.h"
#include "ntc/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- graphs ---------------------------------------------------------------- */

static int node(ntc_graph *g, ntc_op op, const char *name, int in, int block)
{
    int n = ntc_graph_add_node(g, op, name, &in, 1, block);
    ck_assert_int_ge(n, 0);
    return n;
}

static int out(const ntc_graph *g, int n) { return g->nodes[n].out; }

static int conv(ntc_graph *g, const char *name, int in, int block, int filters, int k, bool bias)
{
    int c = node(g, NTC_OP_conv2d, name, in, block);
    g->nodes[c].a.filters = filters;
    g->nodes[c].a.kernel[0] = g->nodes[c].a.kernel[1] = k;
    for (int i = 0; i < 4; i++)
        g->nodes[c].a.pad[i] = k / 2;
    ck_assert_int_ge(ntc_node_add_param(g, c, "weight", NULL), 0);
    if (bias)
        ck_assert_int_ge(ntc_node_add_param(g, c, "bias", NULL), 0);
    return c;
}

/* x [N,3,8,8] -> b0{conv -> relu} -> gap -> flatten -> fc(4) = logits, plus
 * a dead branch dead{dconv(+bias) -> drelu} reading b0's relu. */
static ntc_graph *net_with_dead_branch(void)
{
    ntc_graph *g = ntc_graph_new("dead-branch");
    ntc_shape s;
    ck_assert_int_eq(ntc_shape_parse("N,3,8,8", &s), 0);
    int x = ntc_graph_add_input(g, "x", &s);
    int b0 = ntc_graph_add_block(g, "b0", NTC_ROLE_UNIVERSAL);
    int dead = ntc_graph_add_block(g, "dead", NTC_ROLE_TASK);
    int c = conv(g, "conv", x, b0, 4, 3, false);
    int r = node(g, NTC_OP_relu, "relu", out(g, c), b0);
    int dc = conv(g, "dconv", out(g, r), dead, 4, 1, true);
    node(g, NTC_OP_relu, "drelu", out(g, dc), dead);
    int gap = node(g, NTC_OP_global_avgpool, "gap", out(g, r), -1);
    int fl = node(g, NTC_OP_flatten, "flat", out(g, gap), -1);
    int fc = node(g, NTC_OP_linear, "fc", out(g, fl), -1);
    g->nodes[fc].a.units = 4;
    ntc_node_add_param(g, fc, "weight", NULL);
    ck_assert_int_ge(ntc_graph_add_output(g, "logits", out(g, fc)), 0);
    return g;
}

/* x -> conv -> relu1 -> relu2 -> relu3 = y */
static ntc_graph *relu_chain(void)
{
    ntc_graph *g = ntc_graph_new("relus");
    ntc_shape s;
    ntc_shape_parse("N,2,4,4", &s);
    int x = ntc_graph_add_input(g, "x", &s);
    int c = conv(g, "conv", x, -1, 2, 1, false);
    int r1 = node(g, NTC_OP_relu, "relu1", out(g, c), -1);
    int r2 = node(g, NTC_OP_relu, "relu2", out(g, r1), -1);
    int r3 = node(g, NTC_OP_relu, "relu3", out(g, r2), -1);
    ntc_graph_add_output(g, "y", out(g, r3));
    return g;
}

static int count_live_nodes(const ntc_graph *g)
{
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n += !g->nodes[i].dead;
    return n;
}

static void assert_valid(ntc_graph *g)
{
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
}

/* Runs `pipeline` with the given registry and verify_each; returns rc. */
static int run(ntc_pass_registry *r, ntc_graph *g, const char *pipeline, bool verify_each,
               ntc_err *err, ntc_pipeline **keep)
{
    ntc_pipeline *p = ntc_pipeline_parse(r, pipeline, err);
    ck_assert_msg(p != NULL, "%s", err->msg);
    ntc_pipeline_opts o;
    ntc_pipeline_opts_default(&o);
    o.verify_each = verify_each;
    int rc = ntc_pipeline_run(p, g, &o, err);
    if (keep)
        *keep = p;
    else
        ntc_pipeline_free(p);
    return rc;
}

static ntc_pass_registry *registry(void)
{
    ntc_err err = {0};
    ntc_pass_registry *r = ntc_pass_registry_new(&err);
    ck_assert_msg(r != NULL, "%s", err.msg);
    return r;
}

/* ---- dce --------------------------------------------------------------------- */

START_TEST(dce_removes_dead_branch)
{
    ntc_graph *g = net_with_dead_branch();
    ntc_err err = {0};
    ck_assert_msg(ntc_run_passes(g, "dce", NTC_PASS_INFERENCE, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(g->n_nodes, 5);
    ck_assert_int_lt(ntc_graph_find_node(g, "dconv"), 0);
    ck_assert_int_lt(ntc_graph_find_node(g, "drelu"), 0);
    ck_assert_int_lt(ntc_graph_find_value(g, "dconv.weight"), 0);
    ck_assert_int_lt(ntc_graph_find_value(g, "dconv.bias"), 0);
    ck_assert_int_lt(ntc_graph_find_block(g, "dead"), 0);
    /* everything the output needs stays, with its parameters and block */
    const char *kept[] = {"conv", "relu", "gap", "flat", "fc"};
    for (int i = 0; i < 5; i++)
        ck_assert_int_ge(ntc_graph_find_node(g, kept[i]), 0);
    ck_assert_int_ge(ntc_graph_find_value(g, "conv.weight"), 0);
    ck_assert_int_ge(ntc_graph_find_value(g, "fc.weight"), 0);
    ck_assert_int_eq(g->n_blocks, 1);
    ck_assert_str_eq(g->blocks[0].name, "b0");
    ck_assert_int_eq(g->n_outputs, 1);
    ck_assert_int_eq(g->outputs[0].value, ntc_graph_find_value(g, "fc"));
    ck_assert_int_eq(g->n_values, 1 + 5 + 2);    /* x, node outputs, two weights */
    assert_valid(g);
    ntc_graph_free(g);
}
END_TEST

START_TEST(dce_is_idempotent)
{
    ntc_graph *g = net_with_dead_branch();
    ntc_pass_registry *r = registry();
    ntc_err err = {0};
    ntc_pipeline *p;
    ck_assert_int_eq(run(r, g, "dce", true, &err, &p), 0);
    ck_assert(ntc_pipeline_changed(p, 0));
    ntc_pipeline_free(p);
    char *once = ntc_graph_to_xml(g, NULL);
    ck_assert_int_eq(run(r, g, "dce", true, &err, &p), 0);
    ck_assert(!ntc_pipeline_changed(p, 0));
    char *twice = ntc_graph_to_xml(g, NULL);
    ck_assert_str_eq(once, twice);
    free(once);
    free(twice);
    ntc_pipeline_free(p);
    ntc_pass_registry_free(r);
    ntc_graph_free(g);
}
END_TEST

/* A value that is a graph output keeps its producers alive even if no
 * node reads it; an unused graph input stays: it is the interface. */
START_TEST(dce_keeps_outputs_and_inputs)
{
    ntc_graph *g = net_with_dead_branch();
    ntc_shape s;
    ntc_shape_parse("N,5", &s);
    ntc_graph_add_input(g, "unused", &s);
    ntc_graph_add_output(g, "features", ntc_graph_find_value(g, "drelu"));
    ntc_err err = {0};
    ck_assert_msg(ntc_run_passes(g, "dce", NTC_PASS_TRAINING, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(g->n_nodes, 7);
    ck_assert_int_ge(ntc_graph_find_value(g, "dconv.bias"), 0);
    ck_assert_int_ge(ntc_graph_find_block(g, "dead"), 0);
    ck_assert_int_eq(g->n_inputs, 2);
    ck_assert_int_ge(ntc_graph_find_value(g, "unused"), 0);
    ntc_graph_free(g);
}
END_TEST

/* A parameter no node reads makes the graph invalid; dce removes it.  With
 * --verify-each the manager refuses the invalid input up front. */
START_TEST(dce_removes_stray_params)
{
    ntc_pass_registry *r = registry();
    ntc_err err = {0};
    ntc_graph *g = net_with_dead_branch();
    ntc_graph_add_param(g, "stray");
    ck_assert_int_ne(run(r, g, "dce", true, &err, NULL), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "input graph is invalid"));
    ck_assert_ptr_nonnull(strstr(err.msg, "stray"));
    ntc_graph_free(g);

    g = net_with_dead_branch();
    ntc_graph_add_param(g, "stray");
    ck_assert_msg(run(r, g, "dce", false, &err, NULL) == 0, "%s", err.msg);
    ck_assert_int_lt(ntc_graph_find_value(g, "stray"), 0);
    ntc_graph_free(g);
    ntc_pass_registry_free(r);
}
END_TEST

/* ---- test passes ------------------------------------------------------------------ */

/* Removes one relu that reads a relu per run (a fixed point needs reruns). */
static int peel_relu(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)ctx, (void)err;
    for (int i = 0; i < g->n_nodes; i++) {
        ntc_node *n = &g->nodes[i];
        if (n->dead || n->op != NTC_OP_relu)
            continue;
        int p = g->values[n->in[0]].producer;
        if (p >= 0 && g->nodes[p].op == NTC_OP_relu) {
            ntc_graph_replace_uses(g, n->out, n->in[0]);
            ntc_graph_remove_node(g, i);
            return 1;
        }
    }
    return 0;
}

static int always_changed(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)g, (void)ctx, (void)err;
    return 1;
}

static int unwire_relu(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)ctx, (void)err;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].op == NTC_OP_relu) {
            ntc_graph_remove_node(g, i);
            return 1;
        }
    return 0;
}

static int fail_on_conv(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)ctx;
    int c = ntc_graph_find_node(g, "conv");
    return ntc_node_error(err, g, c, "cannot handle %d filters", g->nodes[c].a.filters);
}

static int bad_status(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)g, (void)ctx, (void)err;
    return 7;
}

static struct {
    double factor;
    long count;
    char label[16];
    unsigned mode;
} seen;

static int record_options(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)g;
    const char *label = ntc_pass_opt(ctx, "label");
    snprintf(seen.label, sizeof seen.label, "%s", label ? label : "(none)");
    seen.mode = ntc_pass_mode(ctx);
    if (ntc_pass_opt_double(ctx, "factor", 1.0, &seen.factor, err) ||
        ntc_pass_opt_int(ctx, "count", 3, &seen.count, err))
        return -1;
    return 0;
}

static const ntc_pass_option record_opts[] = {
    {"factor", "a number"}, {"count", "an integer"}, {"label", "a string"}, {NULL, NULL}};

#define TEST_PASS(var, nm, fn, md, fixed, opts)                                             \
    static const ntc_pass var = {.api_version = NTC_PASS_API_VERSION, .name = nm,          \
                                 .description = "test pass " nm, .modes = md,              \
                                 .fixed_point = fixed, .options = opts, .run = fn}
TEST_PASS(peel, "peel-relu", peel_relu, NTC_PASS_ANY, true, NULL);
TEST_PASS(peel_once, "peel-relu-once", peel_relu, NTC_PASS_ANY, false, NULL);
TEST_PASS(never_settles, "never-settles", always_changed, NTC_PASS_ANY, true, NULL);
TEST_PASS(unwire, "unwire-relu", unwire_relu, NTC_PASS_ANY, false, NULL);
TEST_PASS(fails, "fails", fail_on_conv, NTC_PASS_ANY, false, NULL);
TEST_PASS(bad_rc, "bad-status", bad_status, NTC_PASS_ANY, false, NULL);
TEST_PASS(record, "record", record_options, NTC_PASS_ANY, false, record_opts);
TEST_PASS(infer_only, "inference-only", peel_relu, NTC_PASS_INFERENCE, false, NULL);

static ntc_pass_registry *test_registry(void)
{
    ntc_pass_registry *r = registry();
    const ntc_pass *all[] = {&peel, &peel_once, &never_settles, &unwire, &fails, &bad_rc, &record, &infer_only};
    ntc_err err = {0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ck_assert_msg(ntc_pass_register(r, all[i], &err) == 0, "%s", err.msg);
    return r;
}

/* ---- registry and pipelines ------------------------------------------------------- */

START_TEST(pipeline_parse_errors)
{
    ntc_pass_registry *r = test_registry();
    struct { const char *text, *want; } cases[] = {
        {"", "empty pass pipeline"},
        {"  ", "empty pass pipeline"},
        {",dce", "item 1 names no pass"},
        {"dce,,dce", "item 2 names no pass"},
        {"dce,", "item 2 names no pass"},
        {"dce,nope", "unknown pass 'nope'; known passes: dce"},
        {"dce:x=1", "pass 'dce' takes no options, got 'x'"},
        {"record:factor", "option 'factor' is not KEY=VALUE"},
        {"record:=2", "option '=2' is not KEY=VALUE"},
        {"record:factor=1:factor=2", "option 'factor' given twice"},
        {"record:size=2", "pass 'record' has no option 'size' (its options: factor, count, label)"},
        {":factor=2", "item 1 names no pass"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ntc_err err = {0};
        ntc_pipeline *p = ntc_pipeline_parse(r, cases[i].text, &err);
        ck_assert_msg(p == NULL, "'%s' parsed", cases[i].text);
        ck_assert_msg(strstr(err.msg, cases[i].want), "'%s': got '%s', want '%s'", cases[i].text,
                      err.msg, cases[i].want);
    }
    ntc_err err = {0};
    ck_assert_ptr_null(ntc_pipeline_parse(r, "nope", &err));
    for (int i = 0; i < ntc_pass_count(r); i++)      /* every known pass is listed */
        ck_assert_msg(strstr(err.msg, ntc_pass_at(r, i, NULL)->name), "%s", err.msg);
    ntc_pipeline *p = ntc_pipeline_parse(r, " dce , peel-relu,record:factor=2:label=a b ", &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    ck_assert_int_eq(ntc_pipeline_length(p), 3);
    ck_assert_str_eq(ntc_pipeline_pass(p, 1)->name, "peel-relu");
    ntc_pipeline_free(p);
    ntc_pass_registry_free(r);
}
END_TEST

START_TEST(register_checks)
{
    ntc_pass_registry *r = registry();
    ntc_err err = {0};
    int before = ntc_pass_count(r);
    ntc_pass p = peel;
    p.api_version = NTC_PASS_API_VERSION + 1;
    ck_assert_int_ne(ntc_pass_register(r, &p, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "API version"));
    p = peel;
    p.name = "a,b";
    ck_assert_int_ne(ntc_pass_register(r, &p, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "not valid"));
    p = peel;
    p.name = "dce";
    ck_assert_int_ne(ntc_pass_register(r, &p, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "'dce' is already registered (built in)"));
    p = peel;
    p.run = NULL;
    ck_assert_int_ne(ntc_pass_register(r, &p, &err), 0);
    p = peel;
    p.modes = 0;
    ck_assert_int_ne(ntc_pass_register(r, &p, &err), 0);
    ntc_pass_option dup[] = {{"k", ""}, {"k", ""}, {NULL, NULL}};
    p = peel;
    p.options = dup;
    ck_assert_int_ne(ntc_pass_register(r, &p, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "twice"));
    ck_assert_int_eq(ntc_pass_count(r), before);
    const char *origin = "x";
    ck_assert_str_eq(ntc_pass_at(r, 0, &origin)->name, "dce");
    ck_assert_ptr_null(origin);
    ck_assert_ptr_null(ntc_pass_find(r, "peel-relu"));
    ck_assert_ptr_nonnull(ntc_pass_find(r, "dce"));
    ntc_pass_registry_free(r);
}
END_TEST

START_TEST(options_reach_the_pass)
{
    ntc_pass_registry *r = test_registry();
    ntc_graph *g = relu_chain();
    ntc_err err = {0};
    memset(&seen, 0, sizeof seen);
    ck_assert_msg(run(r, g, "record:factor=2.5:label=hi", true, &err, NULL) == 0, "%s", err.msg);
    ck_assert_double_eq(seen.factor, 2.5);
    ck_assert_int_eq(seen.count, 3);               /* the default */
    ck_assert_str_eq(seen.label, "hi");
    ck_assert_uint_eq(seen.mode, NTC_PASS_INFERENCE);
    ck_assert_int_ne(run(r, g, "record:factor=abc", true, &err, NULL), 0);
    ck_assert_str_eq(err.msg, "pass 'record': option 'factor' expects a number, got 'abc'");
    ck_assert_int_ne(run(r, g, "record:count=1.5", true, &err, NULL), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "expects an integer"));
    ntc_graph_free(g);
    ntc_pass_registry_free(r);
}
END_TEST

/* ---- the manager ------------------------------------------------------------------ */

START_TEST(fixed_point_reruns_until_unchanged)
{
    ntc_pass_registry *r = test_registry();
    ntc_err err = {0};
    ntc_pipeline *p;
    ntc_graph *g = relu_chain();
    ck_assert_msg(run(r, g, "peel-relu,dce", true, &err, &p) == 0, "%s", err.msg);
    /* two relus go (one per run), the third run finds nothing */
    ck_assert_int_eq(ntc_pipeline_runs(p, 0), 3);
    ck_assert(ntc_pipeline_changed(p, 0));
    ck_assert_int_eq(ntc_pipeline_runs(p, 1), 1);
    ck_assert_int_eq(g->n_nodes, 2);
    ntc_pipeline_free(p);
    ntc_graph_free(g);

    g = relu_chain();
    ck_assert_int_eq(run(r, g, "peel-relu-once,dce", true, &err, &p), 0);
    ck_assert_int_eq(ntc_pipeline_runs(p, 0), 1);
    ck_assert_int_eq(g->n_nodes, 3);
    ntc_pipeline_free(p);
    ntc_graph_free(g);

    g = relu_chain();
    ck_assert_int_ne(run(r, g, "never-settles", false, &err, &p), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "pass 'never-settles' still changed the graph after"));
    ck_assert_int_eq(ntc_pipeline_runs(p, 0), NTC_PASS_MAX_ROUNDS);
    ntc_pipeline_free(p);
    ntc_graph_free(g);
    ntc_pass_registry_free(r);
}
END_TEST

START_TEST(verifier_blames_the_broken_pass)
{
    ntc_pass_registry *r = test_registry();
    ntc_err err = {0};
    ntc_pipeline *p;
    ntc_graph *g = relu_chain();
    ck_assert_int_ne(run(r, g, "dce,unwire-relu,dce", true, &err, &p), 0);
    ck_assert_msg(strstr(err.msg, "pass 'unwire-relu' left an invalid graph: ") == err.msg, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "removed value"), "%s", err.msg);
    ck_assert_int_eq(ntc_pipeline_runs(p, 0), 1);
    ck_assert_int_eq(ntc_pipeline_runs(p, 2), 0);   /* nothing runs after the culprit */
    ntc_pipeline_free(p);
    ntc_graph_free(g);
    /* without --verify-each the final check still refuses the result */
    g = relu_chain();
    ck_assert_int_ne(run(r, g, "unwire-relu", false, &err, NULL), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "invalid after the pipeline (rerun with --verify-each"));
    ntc_graph_free(g);
    ntc_pass_registry_free(r);
}
END_TEST

START_TEST(pass_errors_name_pass_and_node)
{
    ntc_pass_registry *r = test_registry();
    ntc_err err = {0};
    ntc_graph *g = relu_chain();
    g->path = ntc_graph_strdup(g, "relus.xml");
    g->nodes[ntc_graph_find_node(g, "conv")].line = 42;
    ck_assert_int_ne(run(r, g, "fails", true, &err, NULL), 0);
    ck_assert_str_eq(ntc_err_str(&err), "relus.xml:42: pass 'fails': node 'conv' (conv2d): cannot handle 2 filters");
    ck_assert_int_ne(run(r, g, "bad-status", true, &err, NULL), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "pass 'bad-status' returned 7"));
    ntc_graph_free(g);
    ntc_pass_registry_free(r);
}
END_TEST

START_TEST(modes_are_enforced)
{
    ntc_pass_registry *r = test_registry();
    ntc_err err = {0};
    ntc_graph *g = relu_chain();
    ntc_pipeline *p = ntc_pipeline_parse(r, "dce,inference-only", &err);
    ntc_pipeline_opts o;
    ntc_pipeline_opts_default(&o);
    ck_assert_uint_eq(o.mode, NTC_PASS_INFERENCE);
    o.mode = NTC_PASS_TRAINING;
    ck_assert_int_ne(ntc_pipeline_run(p, g, &o, &err), 0);
    ck_assert_str_eq(err.msg, "pass 'inference-only' applies to inference graphs only, and this "
                              "pipeline runs in training mode");
    ck_assert_int_eq(ntc_pipeline_runs(p, 0), 0);   /* refused before anything ran */
    ck_assert_int_eq(count_live_nodes(g), 4);
    o.mode = NTC_PASS_INFERENCE;
    ck_assert_msg(ntc_pipeline_run(p, g, &o, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(count_live_nodes(g), 3);
    ntc_pipeline_free(p);
    ntc_graph_free(g);
    ntc_pass_registry_free(r);
}
END_TEST

START_TEST(time_table_lists_every_pass)
{
    ntc_pass_registry *r = test_registry();
    ntc_err err = {0};
    ntc_pipeline *p;
    ntc_graph *g = relu_chain();
    ck_assert_int_eq(run(r, g, "peel-relu,dce", true, &err, &p), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ntc_pipeline_print_times(p, f);
    fclose(f);
    /* runs column then name: "   3  peel-relu" */
    ck_assert_msg(strstr(text, "     3  peel-relu\n"), "%s", text);
    ck_assert_msg(strstr(text, "     1  dce\n"), "%s", text);
    ck_assert_ptr_nonnull(strstr(text, "(verifier)"));
    ck_assert_ptr_nonnull(strstr(text, "100.0%"));
    free(text);
    ntc_pipeline_free(p);
    ntc_graph_free(g);
    ntc_pass_registry_free(r);
}
END_TEST

static void fill_weights(ntc_graph *g)
{
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_infer_shapes(g, &err) == 0, "%s", err.msg);
    unsigned seed = 7;
    for (int v = 0; v < g->n_values; v++)
        if (!g->values[v].dead && g->values[v].kind == NTC_VAL_PARAM) {
            float *d = ntc_param_data_alloc(g, v, &err);
            ck_assert_msg(d != NULL, "%s", err.msg);
            for (int64_t i = 0; i < ntc_shape_numel(&g->values[v].shape); i++)
                d[i] = tu_randf(&seed);
        }
}

START_TEST(dump_after_writes_reloadable_graphs)
{
    ntc_pass_registry *r = test_registry();
    ntc_err err = {0};
    ntc_graph *g = relu_chain();
    fill_weights(g);
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s/out", tu_tmpdir());
    ntc_pipeline *p = ntc_pipeline_parse(r, "peel-relu,dce", &err);
    ntc_pipeline_opts o;
    ntc_pipeline_opts_default(&o);
    o.dump_after = "nope";
    o.dump_prefix = prefix;
    ck_assert_int_ne(ntc_pipeline_run(p, g, &o, &err), 0);
    ck_assert_str_eq(err.msg, "--dump-after=nope names no pass of the pipeline");
    o.dump_after = "all";
    ck_assert_msg(ntc_pipeline_run(p, g, &o, &err) == 0, "%s", err.msg);
    char path[600];
    snprintf(path, sizeof path, "%s.after-01-peel-relu.xml", prefix);
    ntc_graph *d = ntc_graph_read_xml(path, &err);
    ck_assert_msg(d != NULL, "%s", ntc_err_str(&err));
    /* peel-relu left one relu and dead entries; dce had not run yet */
    ck_assert_int_eq(count_live_nodes(d), 2);
    int conv_w = ntc_graph_find_value(d, "conv.weight");
    ck_assert_float_eq(d->values[conv_w].data[1], g->values[ntc_graph_find_value(g, "conv.weight")].data[1]);
    ntc_graph_free(d);
    snprintf(path, sizeof path, "%s.after-02-dce.xml", prefix);
    d = ntc_graph_read_xml(path, &err);
    ck_assert_msg(d != NULL, "%s", ntc_err_str(&err));
    ck_assert_int_eq(d->n_nodes, 2);
    ntc_graph_free(d);
    ntc_pipeline_free(p);
    ntc_graph_free(g);
    ntc_pass_registry_free(r);
}
END_TEST

/* ---- helpers of the pass API ---------------------------------------------------- */

START_TEST(graph_helpers)
{
    ntc_graph *g = net_with_dead_branch();
    ntc_err err = {0};
    int relu = ntc_graph_find_value(g, "relu");
    int users[4];
    ck_assert_int_eq(ntc_value_users(g, relu, users, 4), 2);
    ck_assert_int_eq(users[0], ntc_graph_find_node(g, "dconv"));
    ck_assert_int_eq(users[1], ntc_graph_find_node(g, "gap"));
    ck_assert_int_eq(ntc_value_users(g, relu, NULL, 0), 2);

    int c = ntc_graph_find_node(g, "conv");
    double v[4];
    ck_assert_int_eq(ntc_node_get_attr(g, c, "kernel", v, 4), 2);
    ck_assert_double_eq(v[1], 3);
    ck_assert_int_eq(ntc_node_get_attr(g, c, "units", v, 4), -1);
    double pads[4] = {0, 1, 2, 3};
    ck_assert_int_eq(ntc_node_set_attr(g, c, "pad", pads, 4, &err), 0);
    ck_assert_int_eq(g->nodes[c].a.pad[3], 3);
    double one = 2;
    ck_assert_int_eq(ntc_node_set_attr(g, c, "stride", &one, 1, &err), 0);
    ck_assert_int_eq(g->nodes[c].a.stride[0], 2);
    ck_assert_int_eq(g->nodes[c].a.stride[1], 2);
    double half = 1.5;
    ck_assert_int_ne(ntc_node_set_attr(g, c, "stride", &half, 1, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "integers"));
    ck_assert_int_ne(ntc_node_set_attr(g, c, "stride", pads, 3, &err), 0);
    ck_assert_int_ne(ntc_node_set_attr(g, c, "epsilon", &one, 1, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "node 'conv' (conv2d): conv2d has no attribute 'epsilon'"));

    /* bypass dconv: drelu now reads relu directly */
    int dr = ntc_graph_find_node(g, "drelu");
    ck_assert_int_eq(ntc_node_set_inputs(g, dr, &relu, 1), 0);
    ck_assert_int_eq(ntc_value_users(g, relu, users, 4), 3);

    int w = ntc_graph_find_value(g, "fc.weight");
    ck_assert_ptr_null(ntc_param_data_alloc(g, w, &err));   /* shape not inferred yet */
    ck_assert_int_eq(ntc_graph_infer_shapes(g, &err), 0);
    float *d = ntc_param_data_alloc(g, w, &err);
    ck_assert_ptr_nonnull(d);
    ck_assert_float_eq(d[4 * 4 - 1], 0);
    ck_assert_ptr_eq(g->values[w].data, d);
    ntc_graph_free(g);
}
END_TEST

/* ---- plugins -------------------------------------------------------------------------- */

static const char *plugin(const char *name)
{
    static char buf[4][1024];
    static int next;
    const char *dir = getenv("NTC_PLUGIN_DIR");
    ck_assert_msg(dir != NULL, "NTC_PLUGIN_DIR is not set (run through meson test)");
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s.so", dir, name);
    return b;
}

START_TEST(plugin_loads_in_process)
{
    ntc_pass_registry *r = registry();
    ntc_err err = {0};
    const char *path = plugin("task_blocks");
    ck_assert_msg(ntc_pass_load_plugin(r, path, &err) == 2, "%s", ntc_err_str(&err));
    const char *origin = NULL;
    const ntc_pass *p = ntc_pass_at(r, ntc_pass_count(r) - 1, &origin);
    ck_assert_str_eq(p->name, "drop-small-task-blocks");
    ck_assert_str_eq(origin, path);
    ck_assert_ptr_nonnull(ntc_pass_find(r, "flop-profile"));
    /* loading it again would register the same names twice */
    int before = ntc_pass_count(r);
    ck_assert_int_lt(ntc_pass_load_plugin(r, path, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "already registered (by plugin "));
    ck_assert_int_eq(ntc_pass_count(r), before);
    ntc_pass_registry_free(r);
}
END_TEST

START_TEST(bad_plugins_are_refused)
{
    ntc_pass_registry *r = registry();
    ntc_err err = {0};
    int before = ntc_pass_count(r);
    char version_msg[256];
    snprintf(version_msg, sizeof version_msg, "built for pass API version %d, but this ntc implements version %d",
             NTC_PASS_API_VERSION + 1, NTC_PASS_API_VERSION);
    struct { const char *file, *want; } cases[] = {
        {"no_such_plugin", "cannot load pass plugin: No such file or directory"},
        {"plugin_no_entry", "not an ntc pass plugin: it defines no 'ntc_pass_plugin_info'"},
        {"plugin_future_api", version_msg},
        {"plugin_other_layout", "other IR structures or another ops table than this ntc's"},
        {"plugin_unresolved", "undefined symbol: ntc_no_such_function"},
        {"plugin_duplicate", "pass 'dce' is already registered (built in)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = plugin(cases[i].file);
        ck_assert_int_lt(ntc_pass_load_plugin(r, path, &err), 0);
        ck_assert_str_eq(err.file, path);
        ck_assert_msg(strstr(err.msg, cases[i].want), "%s: got '%s'", cases[i].file, err.msg);
        ck_assert_int_eq(ntc_pass_count(r), before);
    }
    ntc_pass_registry_free(r);
}
END_TEST

/* A NetTailor-like student: layer L1 mixes a universal block with two task
 * proxies, a cheap 1x1 one (fed by a node only it reads) and a 3x3 one;
 * a task-specific head makes the logits.
 *
 *   x -> stem{conv3x3 -> relu} -+-> L1.u{conv3x3 -> relu} ------+
 *                               +-> feed -> L1.p1{conv1x1} -----+-> mix -> head{gap, flat, fc}
 *                               +-> L1.p2{conv3x3} -------------+                     */
static ntc_graph *student(void)
{
    ntc_graph *g = ntc_graph_new("student");
    ntc_shape s;
    ntc_shape_parse("N,4,8,8", &s);
    int x = ntc_graph_add_input(g, "x", &s);
    int stem = ntc_graph_add_block(g, "stem", NTC_ROLE_UNIVERSAL);
    int u = ntc_graph_add_block(g, "L1.u", NTC_ROLE_UNIVERSAL);
    int p1 = ntc_graph_add_block(g, "L1.p1", NTC_ROLE_TASK);
    int p2 = ntc_graph_add_block(g, "L1.p2", NTC_ROLE_TASK);
    int head = ntc_graph_add_block(g, "head", NTC_ROLE_TASK);
    g->blocks[u].layer = g->blocks[p1].layer = g->blocks[p2].layer = ntc_graph_strdup(g, "L1");
    g->blocks[p1].reads = g->blocks[p2].reads = ntc_graph_strdup(g, "stem");
    int sr = out(g, node(g, NTC_OP_relu, "stem.relu", out(g, conv(g, "stem.conv", x, stem, 8, 3, true)), stem));
    int ur = out(g, node(g, NTC_OP_relu, "L1.u.relu", out(g, conv(g, "L1.u.conv", sr, u, 8, 3, true)), u));
    int feed = out(g, node(g, NTC_OP_relu, "feed", sr, -1));
    int c1 = out(g, conv(g, "L1.p1.conv", feed, p1, 8, 1, true));
    int c2 = out(g, conv(g, "L1.p2.conv", sr, p2, 8, 3, true));
    int ins[3] = {ur, c1, c2};
    int mix = ntc_graph_add_node(g, NTC_OP_mix, "L1.mix", ins, 3, -1);
    ntc_node_add_param(g, mix, "alpha", NULL);
    int gap = node(g, NTC_OP_global_avgpool, "head.gap", out(g, mix), head);
    int fl = node(g, NTC_OP_flatten, "head.flat", out(g, gap), head);
    int fc = node(g, NTC_OP_linear, "head.fc", out(g, fl), head);
    g->nodes[fc].a.units = 3;
    ntc_node_add_param(g, fc, "weight", NULL);
    ntc_node_add_param(g, fc, "bias", NULL);
    ntc_graph_add_output(g, "logits", out(g, fc));
    fill_weights(g);
    assert_valid(g);
    return g;
}

static int64_t block_macs(const ntc_graph *g, const char *block)
{
    int b = ntc_graph_find_block(g, block);
    int64_t m = 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].block == b)
            m += ntc_node_macs(g, i);
    return m;
}

static int64_t total_macs(const ntc_graph *g)
{
    int64_t m = 0;
    for (int i = 0; i < g->n_nodes; i++)
        m += g->nodes[i].dead ? 0 : ntc_node_macs(g, i);
    return m;
}

/* Writes the student to a fresh directory; returns its path. */
static const char *write_student(ntc_graph *g)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/student.xml", tu_tmpdir());
    char weights[600];
    snprintf(weights, sizeof weights, "%.*s.safetensors", (int)strlen(path) - 4, path);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_write_xml(g, path, weights, &err) == 0, "%s", ntc_err_str(&err));
    return path;
}

START_TEST(example_plugin_drops_small_task_blocks)
{
    ntc_graph *g = student();
    const char *in = write_student(g);
    /* between p1's share and p2's: only p1 is small enough */
    double p1 = (double)block_macs(g, "L1.p1") / (double)total_macs(g);
    double p2 = (double)block_macs(g, "L1.p2") / (double)total_macs(g);
    double head = (double)block_macs(g, "head") / (double)total_macs(g);
    ck_assert(head < p1 && p1 < p2);
    double below = (p1 + p2) / 2;
    char outp[600];
    snprintf(outp, sizeof outp, "%.*s/out.xml", (int)(strrchr(in, '/') - in), in);
    char *log = NULL;
    int rc = tu_ntc(&log, "opt %s --load-pass %s --passes=drop-small-task-blocks:below=%.6f,dce -v -o %s", in,
                    plugin("task_blocks"), below, outp);
    ck_assert_msg(rc == 0, "%s", log);
    ck_assert_msg(strstr(log, "dropped 'L1.p1'"), "%s", log);
    ck_assert_msg(strstr(log, "keeping 'head'") && strstr(log, "graph output"), "%s", log);
    free(log);

    ntc_err err = {0};
    ntc_graph *o = ntc_graph_read_xml(outp, &err);
    ck_assert_msg(o != NULL, "%s", ntc_err_str(&err));
    ck_assert_int_lt(ntc_graph_find_block(o, "L1.p1"), 0);
    ck_assert_int_lt(ntc_graph_find_node(o, "L1.p1.conv"), 0);
    ck_assert_int_lt(ntc_graph_find_value(o, "L1.p1.conv.weight"), 0);
    ck_assert_int_lt(ntc_graph_find_node(o, "feed"), 0);          /* dce: it fed only p1 */
    ck_assert_int_ge(ntc_graph_find_block(o, "L1.p2"), 0);
    ck_assert_int_ge(ntc_graph_find_block(o, "head"), 0);
    ck_assert_int_eq(o->n_nodes, g->n_nodes - 2);
    /* the mix keeps its other branches, with their alpha logits */
    const ntc_node *m = &o->nodes[ntc_graph_find_node(o, "L1.mix")];
    ck_assert_int_eq(m->n_in, 2);
    ck_assert_str_eq(o->values[m->in[0]].name, "L1.u.relu");
    ck_assert_str_eq(o->values[m->in[1]].name, "L1.p2.conv");
    const ntc_value *a = &o->values[m->par[0]];
    const float *was = g->values[ntc_graph_find_value(g, "L1.mix.alpha")].data;
    ck_assert_int_eq(a->shape.rank, 1);
    ck_assert_int_eq(a->shape.dims[0], 2);
    ck_assert_float_eq(a->data[0], was[0]);
    ck_assert_float_eq(a->data[1], was[2]);
    /* weights of what stayed are carried over unchanged */
    int w = ntc_graph_find_value(o, "L1.p2.conv.weight");
    ck_assert_float_eq(o->values[w].data[5], g->values[ntc_graph_find_value(g, "L1.p2.conv.weight")].data[5]);
    ntc_graph_free(o);

    /* a bound above p2's share drops both proxies; the mix keeps the universal branch */
    snprintf(outp + strlen(outp) - 4, 16, "2.xml");
    rc = tu_ntc(&log, "opt %s --load-pass %s --passes=drop-small-task-blocks:below=%.6f,dce -o %s", in,
                plugin("task_blocks"), (p2 + 1) / 2, outp);
    ck_assert_msg(rc == 0, "%s", log);
    free(log);
    o = ntc_graph_read_xml(outp, &err);
    ck_assert_msg(o != NULL, "%s", ntc_err_str(&err));
    ck_assert_int_eq(o->nodes[ntc_graph_find_node(o, "L1.mix")].n_in, 1);
    ck_assert_int_lt(ntc_graph_find_block(o, "L1.p2"), 0);
    ntc_graph_free(o);
    ntc_graph_free(g);
}
END_TEST

START_TEST(example_plugin_profiles_blocks)
{
    ntc_graph *g = student();
    const char *in = write_student(g);
    char *log = NULL;
    int rc = tu_ntc(&log, "opt %s --load-pass %s --passes=flop-profile", in, plugin("task_blocks"));
    ck_assert_msg(rc == 0, "%s", log);
    int64_t total = total_macs(g);
    const char *blocks[] = {"stem", "L1.u", "L1.p1", "L1.p2", "head"};
    for (int i = 0; i < 5; i++) {
        char want[128];
        int64_t m = block_macs(g, blocks[i]);
        snprintf(want, sizeof want, "%lld %6.2f%%", (long long)m, 100.0 * (double)m / (double)total);
        const char *line = strstr(log, blocks[i]);
        ck_assert_msg(line && strstr(line, want), "no '%s' for %s in\n%s", want, blocks[i], log);
    }
    ck_assert_ptr_nonnull(strstr(log, "(outside blocks)"));
    free(log);
    ntc_graph_free(g);
}
END_TEST

/* Counts live allocations and fails the fail_at-th request. */
static long live_blocks, alloc_calls, fail_at;

static void *counting_alloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    if (size == 0) {
        live_blocks -= ptr != NULL;
        free(ptr);
        return NULL;
    }
    if (++alloc_calls == fail_at)
        return NULL;
    void *p = realloc(ptr, size);
    live_blocks += p && !ptr;
    return p;
}

/* Registry, plugin, pipeline and run with the n-th allocation failing, for
 * every n until nothing fails: nothing leaks, and a failure says why. */
START_TEST(allocation_failures_do_not_leak)
{
    ntc_graph *model = student();
    const char *path = plugin("task_blocks");
    for (fail_at = 1;; fail_at++) {
        alloc_calls = live_blocks = 0;
        ntc_set_allocator(counting_alloc, NULL);
        ntc_err err = {0};
        int rc = -1;
        ntc_graph *g = ntc_graph_clone(model);
        ntc_pass_registry *r = g ? ntc_pass_registry_new(&err) : NULL;
        ntc_pipeline *p = NULL;
        if (r && ntc_pass_load_plugin(r, path, &err) == 2 &&
            (p = ntc_pipeline_parse(r, "drop-small-task-blocks:below=0.3,dce", &err)))
            rc = ntc_pipeline_run(p, g, NULL, &err);
        ntc_pipeline_free(p);
        ntc_pass_registry_free(r);
        ntc_graph_free(g);
        ntc_set_allocator(NULL, NULL);
        ck_assert_msg(live_blocks == 0, "%ld blocks leaked with allocation %ld failing (%s)", live_blocks,
                      fail_at, err.msg);
        if (alloc_calls < fail_at) {
            ck_assert_msg(rc == 0, "%s", err.msg);
            break;
        }
        if (g && rc)
            ck_assert_msg(strstr(err.msg, "out of memory"), "allocation %ld failing gave '%s'", fail_at, err.msg);
    }
    ck_assert_int_gt(fail_at, 10);
    ntc_graph_free(model);
}
END_TEST

/* The example builds outside the tree with exactly the command a user
 * types (here against the build tree's uninstalled ntc.pc, which
 * pkg-config prefers when it is on the path), strict C11 and -Werror:
 * ntc/pass.h needs nothing but what pkg-config gives. */
START_TEST(example_builds_with_pkg_config)
{
    const char *bin = getenv("NTC_BIN");
    ck_assert_ptr_nonnull(bin);
    const char *dir = tu_tmpdir();
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd %s && export PKG_CONFIG_PATH=%.*s/meson-uninstalled && "
             "cc -std=c11 -Wall -Wextra -Werror -shared -fPIC -o my_pass.so %s $(pkg-config --cflags ntc) 2>&1",
             dir, (int)(strrchr(bin, '/') - bin), bin, tu_src("examples/passes/task_blocks.c"));
    ck_assert_msg(system(cmd) == 0, "failed: %s", cmd);
    char *log = NULL;
    ck_assert_int_eq(tu_ntc(&log, "opt --list-passes --load-pass %s/my_pass.so", dir), 0);
    ck_assert_msg(strstr(log, "drop-small-task-blocks"), "%s", log);
    free(log);
}
END_TEST

/* ---- ntc opt ---------------------------------------------------------------------------- */

START_TEST(cli_list_and_errors)
{
    char *log = NULL;
    ck_assert_int_eq(tu_ntc(&log, "opt --list-passes --load-pass %s", plugin("task_blocks")), 0);
    ck_assert_msg(strstr(log, "built-in passes:\n  dce "), "%s", log);
    ck_assert_ptr_nonnull(strstr(log, "passes from "));
    ck_assert_ptr_nonnull(strstr(log, "flop-profile"));
    ck_assert_ptr_nonnull(strstr(log, ":below "));
    free(log);

    ntc_graph *g = relu_chain();
    fill_weights(g);
    const char *in = write_student(g);
    ck_assert_int_eq(tu_ntc(&log, "opt %s --passes=dce,fold-nothing -o x.xml", in), 2);
    ck_assert_msg(strstr(log, "ntc: error: --passes: unknown pass 'fold-nothing'; known passes: dce"), "%s", log);
    free(log);
    ck_assert_int_eq(tu_ntc(&log, "opt %s", in), 2);
    ck_assert_ptr_nonnull(strstr(log, "no --passes given"));
    free(log);
    ck_assert_int_eq(tu_ntc(&log, "opt %s --passes=dce --load-pass %s", in, plugin("plugin_future_api")), 1);
    ck_assert_msg(strstr(log, plugin("plugin_future_api")) && strstr(log, "API version"), "%s", log);
    free(log);
    ck_assert_int_eq(tu_ntc(&log, "opt %s --passes=dce --mode=eval", in), 2);
    free(log);
    ntc_graph_free(g);
}
END_TEST

START_TEST(cli_blames_broken_plugin)
{
    ntc_graph *g = relu_chain();
    fill_weights(g);
    const char *in = write_student(g);
    char outp[600];
    snprintf(outp, sizeof outp, "%.*s/out.xml", (int)(strrchr(in, '/') - in), in);
    char *log = NULL;
    int rc = tu_ntc(&log, "opt %s --load-pass %s --passes=dce,unwire-relu --verify-each -o %s", in,
                    plugin("plugin_broken"), outp);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(log, "ntc: error: ") && strstr(log, ": pass 'unwire-relu' left an invalid graph: "),
                  "%s", log);
    free(log);
    ck_assert_int_ne(access(outp, F_OK), 0);               /* nothing written */
    ntc_graph_free(g);
}
END_TEST

START_TEST(cli_time_and_dump)
{
    ntc_graph *g = relu_chain();
    fill_weights(g);
    const char *in = write_student(g);
    char outp[600];
    snprintf(outp, sizeof outp, "%.*s/o.xml", (int)(strrchr(in, '/') - in), in);
    char *log = NULL;
    int rc = tu_ntc(&log, "opt %s --passes=dce --time-passes --dump-after=dce -o %s", in, outp);
    ck_assert_msg(rc == 0, "%s", log);
    ck_assert_msg(strstr(log, "pass timing") && strstr(log, "  dce\n"), "%s", log);
    free(log);
    char dumped[640];
    snprintf(dumped, sizeof dumped, "%.*s.after-01-dce.xml", (int)strlen(outp) - 4, outp);
    ck_assert_int_eq(tu_ntc(&log, "check %s", dumped), 0);
    free(log);
    ck_assert_int_eq(tu_ntc(&log, "check %s", outp), 0);
    free(log);
    ntc_graph_free(g);
}
END_TEST

/* The plan pass records what the planner computes and leaves the graph
 * as it was; its peak is far below one buffer per value on a ResNet. */
START_TEST(plan_pass_records_the_plan)
{
    ntc_resnet_opts o;
    ntc_err err = {0};
    ntc_resnet_opts_default(&o);
    o.depth = 8;
    ntc_graph *g = ntc_resnet_build(&o, &err);
    ck_assert_ptr_nonnull(g);
    int64_t naive = 0, peak = ntc_plan_peak_bytes(g, &naive, &err);
    ck_assert_int_gt(peak, 0);
    char *before = ntc_graph_to_xml(g, NULL);
    ck_assert_msg(ntc_run_passes(g, "plan", NTC_PASS_INFERENCE, &err) == 0, "%s", ntc_err_str(&err));
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)peak);
    ck_assert_str_eq(ntc_graph_get_meta(g, "plan.peak-bytes"), want);
    snprintf(want, sizeof want, "%lld", (long long)naive);
    ck_assert_str_eq(ntc_graph_get_meta(g, "plan.naive-bytes"), want);
    ck_assert_int_lt(peak * 3, naive);
    ntc_graph_set_meta(g, "plan.peak-bytes", NULL);
    ntc_graph_set_meta(g, "plan.naive-bytes", NULL);
    char *after = ntc_graph_to_xml(g, NULL);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    ntc_graph_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("passes");
    TCase *tc = tcase_create("dce");
    tcase_add_test(tc, dce_removes_dead_branch);
    tcase_add_test(tc, dce_is_idempotent);
    tcase_add_test(tc, dce_keeps_outputs_and_inputs);
    tcase_add_test(tc, dce_removes_stray_params);
    suite_add_tcase(s, tc);
    tc = tcase_create("manager");
    tcase_add_test(tc, pipeline_parse_errors);
    tcase_add_test(tc, register_checks);
    tcase_add_test(tc, options_reach_the_pass);
    tcase_add_test(tc, fixed_point_reruns_until_unchanged);
    tcase_add_test(tc, verifier_blames_the_broken_pass);
    tcase_add_test(tc, pass_errors_name_pass_and_node);
    tcase_add_test(tc, modes_are_enforced);
    tcase_add_test(tc, time_table_lists_every_pass);
    tcase_add_test(tc, dump_after_writes_reloadable_graphs);
    tcase_add_test(tc, graph_helpers);
    suite_add_tcase(s, tc);
    tc = tcase_create("plugins");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, plugin_loads_in_process);
    tcase_add_test(tc, bad_plugins_are_refused);
    tcase_add_test(tc, example_plugin_drops_small_task_blocks);
    tcase_add_test(tc, example_plugin_profiles_blocks);
    tcase_add_test(tc, allocation_failures_do_not_leak);
    tcase_add_test(tc, example_builds_with_pkg_config);
    tcase_add_test(tc, cli_list_and_errors);
    tcase_add_test(tc, cli_blames_broken_plugin);
    tcase_add_test(tc, cli_time_and_dump);
    tcase_add_test(tc, plan_pass_records_the_plan);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
