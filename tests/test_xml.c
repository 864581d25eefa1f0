/* The XML form of the IR: byte-stable round trips, the writer's canonical
 * form, weights sidecars, every validation error with its line, `ntc check`,
 * and error paths that leak nothing (checked with a counting allocator). */
#include "testutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *slurp(const char *path)
{
    ntc_err err = {0};
    char *s = ntc_read_file(path, NULL, &err);
    ck_assert_msg(s != NULL, "%s", ntc_err_str(&err));
    return s;
}

static ntc_graph *read_ok(const char *path, bool no_weights)
{
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml_opts(path, no_weights, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    return g;
}

static char *to_xml(const ntc_graph *g)
{
    char *s = ntc_graph_to_xml(g, NULL);
    ck_assert_ptr_nonnull(s);
    return s;
}

static void set2(int *f, int a, int b) { f[0] = a, f[1] = b; }

/* A graph built in memory with everything the writer must handle: a block
 * whose nodes are not contiguous, a dead node and a dead block, an empty
 * block, renamed parameters, an optional bias, non-default floats. */
static ntc_graph *built_graph(void)
{
    ntc_graph *g = ntc_graph_new("built");
    ntc_shape s;
    ck_assert_int_eq(ntc_shape_parse("N,2,6,6", &s), 0);
    int x = ntc_graph_add_input(g, "x", &s);
    int body = ntc_graph_add_block(g, "body", NTC_ROLE_UNIVERSAL);
    int gone = ntc_graph_add_block(g, "gone", NTC_ROLE_TASK);
    int empty = ntc_graph_add_block(g, "empty", NTC_ROLE_TASK);
    g->blocks[body].frozen = true;
    g->blocks[body].layer = ntc_graph_strdup(g, "L1");
    g->blocks[empty].reads = ntc_graph_strdup(g, "L0");

    int c = ntc_graph_add_node(g, NTC_OP_conv2d, "conv", &x, 1, body);
    g->nodes[c].a.filters = 3;
    set2(g->nodes[c].a.kernel, 3, 3);
    set2(g->nodes[c].a.stride, 2, 1);
    for (int i = 0; i < 4; i++)
        g->nodes[c].a.pad[i] = i < 2 ? 1 : 0;   /* top, left 1; bottom, right 0 */
    ck_assert_int_ge(ntc_node_add_param(g, c, "weight", "conv.W"), 0);
    ck_assert_int_ge(ntc_node_add_param(g, c, "bias", NULL), 0);
    int cv = g->nodes[c].out;
    int outside = ntc_graph_add_node(g, NTC_OP_relu, "outside", &cv, 1, -1);
    int bn = ntc_graph_add_node(g, NTC_OP_batchnorm, "bn", &cv, 1, body);
    g->nodes[bn].a.epsilon = 1e-3f;
    g->nodes[bn].a.momentum = 1.0f / 3.0f;
    const char *slots[] = {"scale", "bias", "mean", "var"};
    for (int i = 0; i < 4; i++)
        ck_assert_int_ge(ntc_node_add_param(g, bn, slots[i], NULL), 0);
    int dead = ntc_graph_add_node(g, NTC_OP_relu, "dead", &cv, 1, gone);
    ntc_graph_remove_node(g, dead);
    g->blocks[gone].dead = true;
    int sum_in[2] = {g->nodes[bn].out, g->nodes[outside].out};
    int sum = ntc_graph_add_node(g, NTC_OP_add, "sum", sum_in, 2, -1);
    ck_assert_int_eq(ntc_graph_set_meta(g, "backbone_macs", "1234"), 0);
    ck_assert_int_eq(ntc_graph_set_meta(g, "note", "a \"quoted\" <line>\n\tand & more"), 0);
    ck_assert_int_ge(ntc_graph_add_output(g, "y", g->nodes[sum].out), 0);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
    return g;
}

START_TEST(roundtrip_built_graph)
{
    ntc_graph *g = built_graph();
    char *first = to_xml(g);
    const char *expected =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<graph name=\"built\" ir-version=\"1\">\n"
        "  <meta key=\"backbone_macs\" value=\"1234\"/>\n"
        "  <meta key=\"note\" value=\"a &quot;quoted&quot; &lt;line&gt;&#10;&#9;and &amp; more\"/>\n"
        "  <input name=\"x\" shape=\"N,2,6,6\"/>\n"
        "  <block name=\"body\" role=\"universal\" frozen=\"true\" layer=\"L1\">\n"
        "    <node op=\"conv2d\" name=\"conv\" in=\"x\" filters=\"3\" kernel=\"3\" stride=\"2,1\" pad=\"1,1,0,0\""
        " weight=\"conv.W\" bias=\"conv.bias\"/>\n"
        "    <node op=\"batchnorm\" name=\"bn\" in=\"conv\" epsilon=\"0.001\" momentum=\"0.33333334\"/>\n"
        "  </block>\n"
        "  <node op=\"relu\" name=\"outside\" in=\"conv\"/>\n"
        "  <node op=\"add\" name=\"sum\" in=\"bn,outside\"/>\n"
        "  <block name=\"empty\" role=\"task\" reads=\"L0\"/>\n"
        "  <output name=\"y\" from=\"sum\"/>\n"
        "</graph>\n";
    ck_assert_str_eq(first, expected);

    const char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/built.xml", dir);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_write_xml(g, path, NULL, &err) == 0, "%s", ntc_err_str(&err));
    char *file = slurp(path);
    ck_assert_str_eq(file, first);
    ntc_graph *back = read_ok(path, false);
    char *second = to_xml(back);
    ck_assert_str_eq(second, first);
    /* The attributes survive, not only their text. */
    const ntc_node *c = &back->nodes[ntc_graph_find_node(back, "conv")];
    ck_assert_int_eq(c->a.stride[0], 2);
    ck_assert_int_eq(c->a.stride[1], 1);
    ck_assert_int_eq(c->a.pad[2], 0);
    ck_assert_str_eq(back->values[c->par[0]].name, "conv.W");
    ck_assert_int_eq(c->line, 7);
    ck_assert_str_eq(ntc_graph_get_meta(back, "note"), "a \"quoted\" <line>\n\tand & more");
    const ntc_node *b = &back->nodes[ntc_graph_find_node(back, "bn")];
    ck_assert(b->a.momentum == 1.0f / 3.0f);
    ck_assert_int_eq(ntc_graph_find_block(back, "gone"), -1);
    ck_assert(back->blocks[ntc_graph_find_block(back, "body")].frozen);
    ntc_free(first);
    ntc_free(second);
    ntc_free(file);
    ntc_graph_free(back);
    ntc_graph_free(g);
}
END_TEST

/* Files the writer produced read and write back unchanged. */
static const char *canonical_fixtures[] = {
    "tests/fixtures/xml/good_student.xml",
    "tests/fixtures/xml/good_attrs.xml",
    "tests/fixtures/xml/good_messy.expected.xml",
};

START_TEST(roundtrip_fixture)
{
    const char *path = tu_src(canonical_fixtures[_i]);
    char *file = slurp(path);
    ntc_graph *g = read_ok(path, false);
    char *text = to_xml(g);
    ck_assert_str_eq(text, file);
    ntc_free(text);
    ntc_free(file);
    ntc_graph_free(g);
}
END_TEST

/* Two graphs are the same when every live node has a counterpart with the
 * same op, attributes, inputs, parameter names and block. */
static void assert_same_graph(const ntc_graph *a, const ntc_graph *b)
{
    ck_assert_int_eq(a->n_nodes, b->n_nodes);
    for (int i = 0; i < a->n_nodes; i++) {
        const ntc_node *x = &a->nodes[i];
        int k = ntc_graph_find_node(b, x->name);
        ck_assert_msg(k >= 0, "node %s missing", x->name);
        const ntc_node *y = &b->nodes[k];
        ck_assert_int_eq(x->op, y->op);
        ck_assert_msg(!memcmp(&x->a, &y->a, sizeof x->a), "attributes of %s differ", x->name);
        ck_assert_int_eq(x->n_in, y->n_in);
        for (int j = 0; j < x->n_in; j++)
            ck_assert_str_eq(a->values[x->in[j]].name, b->values[y->in[j]].name);
        for (int j = 0; j < NTC_MAX_PARAMS; j++) {
            ck_assert_int_eq(x->par[j] < 0, y->par[j] < 0);
            if (x->par[j] >= 0)
                ck_assert_str_eq(a->values[x->par[j]].name, b->values[y->par[j]].name);
        }
        ck_assert_int_eq(x->block < 0, y->block < 0);
        if (x->block >= 0)
            ck_assert_str_eq(a->blocks[x->block].name, b->blocks[y->block].name);
    }
}

/* A hand-written file (forward references, explicit defaults, comments)
 * means the same graph as the canonical one and is written canonically. */
START_TEST(messy_file_is_canonicalised)
{
    ntc_graph *messy = read_ok(tu_src("tests/fixtures/xml/good_messy.xml"), false);
    ntc_graph *clean = read_ok(tu_src("tests/fixtures/xml/good_student.xml"), false);
    char *text = to_xml(messy);
    char *expected = slurp(tu_src("tests/fixtures/xml/good_messy.expected.xml"));
    ck_assert_str_eq(text, expected);
    /* head.prob reads head.fc, defined on the next line */
    const ntc_node *p = &messy->nodes[ntc_graph_find_node(messy, "head.prob")];
    ck_assert_str_eq(messy->values[p->in[0]].name, "head.fc");
    ck_assert_int_eq(p->line, 9);
    assert_same_graph(clean, messy);
    ntc_free(text);
    ntc_free(expected);
    ntc_graph_free(messy);
    ntc_graph_free(clean);
}
END_TEST

START_TEST(floats_read_back_exactly)
{
    const float values[] = {1e-3f, 0.1f, 1.0f / 3.0f, 1.17549435e-38f, 3.40282347e38f, 0.0f, 0.875f};
    const char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/f.xml", dir);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        ntc_graph *g = ntc_graph_new("f");
        ntc_shape s = {2, {NTC_BATCH, 3}};
        int x = ntc_graph_add_input(g, "x", &s);
        int bn = ntc_graph_add_node(g, NTC_OP_batchnorm, "bn", &x, 1, -1);
        g->nodes[bn].a.epsilon = values[i] > 0 ? values[i] : 1e-5f;
        g->nodes[bn].a.momentum = values[i] <= 1 ? values[i] : 0.5f;
        const char *slots[] = {"scale", "bias", "mean", "var"};
        for (int k = 0; k < 4; k++)
            ntc_node_add_param(g, bn, slots[k], NULL);
        ntc_graph_add_output(g, "y", g->nodes[bn].out);
        ntc_err err = {0};
        ck_assert_msg(ntc_graph_write_xml(g, path, NULL, &err) == 0, "%s", ntc_err_str(&err));
        ntc_graph *back = read_ok(path, false);
        const ntc_node *n = &back->nodes[0];
        ck_assert(n->a.epsilon == g->nodes[bn].a.epsilon);
        ck_assert(n->a.momentum == g->nodes[bn].a.momentum);
        ntc_graph_free(back);
        ntc_graph_free(g);
    }
    /* The shortest exact form, not %.9g noise. */
    ntc_graph *g = read_ok(tu_src("tests/fixtures/xml/good_attrs.xml"), false);
    char *text = to_xml(g);
    ck_assert_ptr_nonnull(strstr(text, " epsilon=\"0.001\" momentum=\"0.01\""));
    ntc_free(text);
    ntc_graph_free(g);
}
END_TEST

/* ---- weights sidecars ---------------------------------------------------------------- */

/* x [N,4] -> linear(3, with bias), every parameter filled with known data. */
static ntc_graph *graph_with_weights(void)
{
    ntc_graph *g = ntc_graph_new("w");
    ntc_shape s = {2, {NTC_BATCH, 4}};
    int x = ntc_graph_add_input(g, "x", &s);
    int fc = ntc_graph_add_node(g, NTC_OP_linear, "fc", &x, 1, -1);
    g->nodes[fc].a.units = 3;
    ntc_node_add_param(g, fc, "weight", NULL);
    ntc_node_add_param(g, fc, "bias", NULL);
    ntc_graph_add_output(g, "y", g->nodes[fc].out);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
    unsigned seed = 7;
    for (int v = 0; v < g->n_values; v++) {
        if (g->values[v].kind != NTC_VAL_PARAM)
            continue;
        int64_t n = ntc_shape_numel(&g->values[v].shape);
        g->values[v].data = ntc_malloc(sizeof(float) * (size_t)n);
        g->values[v].owned = true;
        for (int64_t i = 0; i < n; i++)
            g->values[v].data[i] = tu_randf(&seed);
    }
    return g;
}

static void assert_same_data(const ntc_graph *a, const ntc_graph *b)
{
    for (int v = 0; v < a->n_values; v++) {
        if (a->values[v].kind != NTC_VAL_PARAM)
            continue;
        int w = ntc_graph_find_value(b, a->values[v].name);
        ck_assert_int_ge(w, 0);
        ck_assert_ptr_nonnull(b->values[w].data);
        int64_t n = ntc_shape_numel(&a->values[v].shape);
        ck_assert(!memcmp(a->values[v].data, b->values[w].data, sizeof(float) * (size_t)n));
    }
}

/* Writes g to dir/xml_rel with weights at dir/w_rel; checks the recorded
 * name and that the graph reads back with the same data. */
static void weights_case(const char *dir, const char *xml_rel, const char *w_rel, const char *recorded)
{
    ntc_graph *g = graph_with_weights();
    char xml[512], w[512];
    snprintf(xml, sizeof xml, "%s/%s", dir, xml_rel);
    snprintf(w, sizeof w, "%s/%s", dir, w_rel);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_write_xml(g, xml, w, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_str_eq(g->weights, recorded);
    char *text = slurp(xml);
    char attr[256];
    snprintf(attr, sizeof attr, "<graph name=\"w\" ir-version=\"1\" weights=\"%s\">\n", recorded);
    ck_assert_ptr_nonnull(strstr(text, attr));
    ntc_graph *back = read_ok(xml, false);
    assert_same_data(g, back);
    char *again = to_xml(back);
    ck_assert_str_eq(again, text);
    ntc_graph *bare = read_ok(xml, true);
    ck_assert_ptr_null(bare->values[ntc_graph_find_value(bare, "fc.weight")].data);
    ntc_graph_free(bare);
    ntc_free(again);
    ntc_free(text);
    ntc_graph_free(back);
    ntc_graph_free(g);
}

START_TEST(weights_named_relative_to_the_xml)
{
    const char *tmp = tu_tmpdir();
    char dir[512], sub[600];
    snprintf(dir, sizeof dir, "%s", tmp);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    snprintf(sub, sizeof sub, "%s/other", dir);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    weights_case(dir, "g.xml", "g.safetensors", "g.safetensors");
    weights_case(dir, "g2.xml", "sub/p.safetensors", "sub/p.safetensors");
    weights_case(dir, "sub/g3.xml", "p3.safetensors", "../p3.safetensors");
    weights_case(dir, "sub/g4.xml", "other/p4.safetensors", "../other/p4.safetensors");
    /* The same directory spelt differently still gives the base name. */
    weights_case(dir, "sub/../g5.xml", "./g5.safetensors", "g5.safetensors");
}
END_TEST

START_TEST(writer_rejects_unwritable_names)
{
    const char *bad_names[] = {"a,b", "two words", "", "tab\there"};
    const char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/bad.xml", dir);
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        ntc_graph *g = ntc_graph_new("g");
        ntc_shape s = {2, {NTC_BATCH, 3}};
        int x = ntc_graph_add_input(g, "x", &s);
        int r = ntc_graph_add_node(g, NTC_OP_relu, bad_names[i], &x, 1, -1);
        ntc_graph_add_output(g, "y", g->nodes[r].out);
        ck_assert_ptr_null(ntc_graph_to_xml(g, NULL));
        ntc_err err = {0};
        ck_assert_int_eq(ntc_graph_write_xml(g, path, NULL, &err), -1);
        ck_assert_ptr_nonnull(strstr(err.msg, "cannot write node name"));
        ck_assert_int_ne(access(path, F_OK), 0);   /* nothing half-written */
        /* With a weights file: the XML fails before the weights are
         * replaced, so an earlier pair on disk stays a matching pair. */
        char wpath[600];
        snprintf(wpath, sizeof wpath, "%s/bad.safetensors", dir);
        FILE *f = fopen(wpath, "wb");
        ck_assert_ptr_nonnull(f);
        fputs("earlier weights", f);
        fclose(f);
        ck_assert_int_eq(ntc_graph_write_xml(g, path, wpath, &err), -1);
        size_t len;
        char *kept = ntc_read_file(wpath, &len, NULL);
        ck_assert_str_eq(kept, "earlier weights");
        ntc_free(kept);
        ck_assert_int_ne(access(path, F_OK), 0);
        ntc_graph_free(g);
    }
}
END_TEST

/* ---- malformed files ---------------------------------------------------------------- */

typedef struct {
    const char *file;      /* under tests/fixtures/xml/ */
    const char *err_file;  /* the file the error names: the fixture unless a weights file */
    int line;
    const char *msg;
} bad_case;

static const bad_case bad_cases[] = {
    {"bad_malformed.xml", NULL, 5, "malformed XML: Couldn't find end of Start Tag node"},
    {"bad_root.xml", NULL, 2, "root element must be <graph>"},
    {"bad_version.xml", NULL, 2, "unsupported ir-version '2'"},
    {"bad_no_version.xml", NULL, 2, "lacks the required attribute 'ir-version'"},
    {"bad_element.xml", NULL, 4, "unknown element <nodes>"},
    {"bad_meta.xml", NULL, 5, "duplicate meta key 'macs'"},
    {"bad_text.xml", NULL, 5, "unexpected text 'relu' inside <graph>"},
    {"bad_nested.xml", NULL, 6, "blocks cannot be nested"},
    {"bad_op.xml", NULL, 4, "unknown op 'conv3d' (known ops: conv2d, batchnorm,"},
    {"bad_attr_typo.xml", NULL, 5, "node 'fc': unknown attribute 'unit' (op linear takes: op, name, in, units,"},
    {"bad_missing_attr.xml", NULL, 4, "node 'fc': op linear needs the attribute 'units'"},
    {"bad_typo_required.xml", NULL, 4, "unknown attribute 'nmae' on <node> (op relu takes: op, name, in)"},
    {"bad_no_output.xml", NULL, 0, "graph has no output"},
    {"bad_int_value.xml", NULL, 4, "units='ten' must be an integer"},
    {"bad_negative.xml", NULL, 5, "pad='-1' must not be negative"},
    {"bad_arity.xml", NULL, 5, "stride='2,2,2' must be 1 or 2 (h,w) integers"},
    {"bad_float.xml", NULL, 4, "epsilon='1e-5x' is not a finite number"},
    {"bad_inputs.xml", NULL, 4, "op relu takes 1 input(s), got 2"},
    {"bad_empty_name.xml", NULL, 4, "bad value name '' in in='x,,x'"},
    {"bad_undefined.xml", NULL, 5, "node 's' reads 'q', which is not defined"},
    {"bad_dup_node.xml", NULL, 5, "duplicate name 'r' (node on line 4)"},
    {"bad_dup_param.xml", NULL, 4, "duplicate name 'x'"},
    {"bad_dup_block.xml", NULL, 7, "duplicate block name 'b' (block on line 4)"},
    {"bad_dup_output.xml", NULL, 6, "duplicate output name 'y'"},
    {"bad_param_as_act.xml", NULL, 5, "'fc.weight', a parameter where an activation is expected"},
    {"bad_cycle.xml", NULL, 4, "cycle through node 'a'"},
    {"bad_shape.xml", NULL, 6, "node 's' (add): input 2 has shape N,5, input 1 has N,4"},
    {"bad_attr_shape.xml", NULL, 5, "node 'c' (conv2d): window larger than the padded input"},
    {"bad_shape_string.xml", NULL, 4, "input 'img': bad shape 'N,3,x,8'"},
    {"bad_role.xml", NULL, 4, "unknown role 'shared' (expected universal or task)"},
    {"bad_frozen.xml", NULL, 4, "frozen='yes' must be true or false"},
    {"bad_weights_file.xml", "absent.safetensors", 0, "cannot open weights"},
    {"bad_weights_missing.xml", "bad_weights.safetensors", 0, "parameter 'a.bias' is missing"},
    {"bad_weights_shape.xml", "bad_weights.safetensors", 0, "'b.weight' is [2,5] in the file, the graph needs [2,3]"},
};

static const char *fixture(const char *file)
{
    static char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/xml/%s", file);
    return tu_src(rel);
}

START_TEST(bad_fixture)
{
    const bad_case *c = &bad_cases[_i];
    char path[4096];
    snprintf(path, sizeof path, "%s", fixture(c->file));
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml(path, &err);
    ck_assert_msg(g == NULL, "%s was accepted", c->file);
    char want_file[4096];
    snprintf(want_file, sizeof want_file, "%s", c->err_file ? fixture(c->err_file) : path);
    ck_assert_str_eq(err.file, want_file);
    ck_assert_msg(err.line == c->line, "%s: error on line %d, expected %d: %s", c->file, err.line, c->line,
                  err.msg);
    ck_assert_msg(strstr(err.msg, c->msg) != NULL, "%s: '%s' lacks '%s'", c->file, err.msg, c->msg);
}
END_TEST

/* Structure is checked even when weights are skipped; weights only when not. */
START_TEST(no_weights_skips_only_the_weights)
{
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml_opts(fixture("bad_weights_file.xml"), true, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    ck_assert_str_eq(g->weights, "absent.safetensors");
    ntc_graph_free(g);
    ck_assert_ptr_null(ntc_graph_read_xml_opts(fixture("bad_cycle.xml"), true, &err));
}
END_TEST

/* Every prefix of a good file, and copies with bytes replaced at random,
 * are refused with a located message or read as a verified graph; never a
 * crash (the suite also runs under ASan). */
START_TEST(damaged_files_fail_cleanly)
{
    char *good = slurp(tu_src("tests/fixtures/xml/good_attrs.xml"));
    size_t len = strlen(good);
    char path[512];
    snprintf(path, sizeof path, "%s/damaged.xml", tu_tmpdir());
    unsigned seed = 12345;
    static const char replacements[] = "<>\"=,/ -Nx0&;";
    for (size_t cut = 0; cut < len + 200; cut++) {
        char *text = malloc(len + 1);
        memcpy(text, good, len + 1);
        size_t n = cut;
        if (cut >= len) {   /* past the end: random replacements instead */
            n = len;
            for (int k = 0; k < 3; k++) {
                size_t at = (size_t)((tu_randf(&seed) + 1.0f) * 0.5f * (float)(len - 1));
                text[at] = replacements[(size_t)((tu_randf(&seed) + 1.0f) * 0.5f * (sizeof replacements - 2))];
            }
        }
        ntc_err err = {0};
        ck_assert_int_eq(ntc_write_file_atomic(path, text, n, &err), 0);
        ntc_graph *g = ntc_graph_read_xml(path, &err);
        if (g) {
            size_t whole = (size_t)(strstr(good, "</graph>") - good) + strlen("</graph>");
            ck_assert_msg(cut >= whole, "a file cut at byte %zu was accepted", cut);
            ck_assert_int_eq(ntc_graph_verify(g, &err), 0);
        } else {
            ck_assert_msg(err.msg[0] != 0, "no message at cut %zu", cut);
            ck_assert_str_eq(err.file, path);
        }
        ntc_graph_free(g);
        free(text);
    }
    ntc_free(good);
}
END_TEST

/* ---- ntc check ------------------------------------------------------------------------ */

START_TEST(check_command)
{
    char *out = NULL;
    const char *bad = fixture("bad_undefined.xml");
    char bad_path[4096];
    snprintf(bad_path, sizeof bad_path, "%s", bad);
    ck_assert_int_eq(tu_ntc(&out, "check %s", bad_path), 1);
    char want[4200];
    snprintf(want, sizeof want, "ntc: error: %s:5: node 's' reads 'q'", bad_path);
    ck_assert_msg(strstr(out, want) != NULL, "output: %s", out);
    free(out);

    ck_assert_int_eq(tu_ntc(&out, "check %s", fixture("good_student.xml")), 0);
    ck_assert_msg(strstr(out, "ok: ") && strstr(out, "graph 'student', 14 nodes") && strstr(out, "4 blocks"),
                  "output: %s", out);
    free(out);

    /* One bad file among good ones fails the command; the good ones still pass. */
    ck_assert_int_eq(tu_ntc(&out, "check %s %s", fixture("good_attrs.xml"), bad_path), 1);
    ck_assert_ptr_nonnull(strstr(out, "ok: "));
    ck_assert_ptr_nonnull(strstr(out, "ntc: error: "));
    free(out);

    ck_assert_int_eq(tu_ntc(&out, "check --help"), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: ntc check"));
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "check"), 2);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "check --bogus x.xml"), 2);
    free(out);
}
END_TEST

/* ---- docs/ir.md tells the truth about the ops table ------------------------------------ */

static void append(char **buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char **buf, size_t *len, const char *fmt, ...)
{
    char piece[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(piece, sizeof piece, fmt, ap);
    va_end(ap);
    *buf = realloc(*buf, *len + strlen(piece) + 1);
    strcpy(*buf + *len, piece);
    *len += strlen(piece);
}

/* The op reference of docs/ir.md as the ops table states it. */
static char *ops_reference(void)
{
    static const char *types[] = {"int", "int2", "int4", "float"};
    char *doc = NULL;
    size_t len = 0;
    append(&doc, &len, "%s", "");
    for (int i = 0; i < NTC_OP_COUNT; i++) {
        const ntc_op_info *op = &ntc_ops[i];
        append(&doc, &len, "#### %s\n\n%s.\n\n", op->name, op->doc);
        if (op->max_in == op->min_in)
            append(&doc, &len, "Inputs: %d.\n\n", op->min_in);
        else if (op->max_in)
            append(&doc, &len, "Inputs: %d to %d.\n\n", op->min_in, op->max_in);
        else
            append(&doc, &len, "Inputs: %d or more.\n\n", op->min_in);
        if (op->attrs[0].name) {
            append(&doc, &len, "| attribute | type | default |\n|---|---|---|\n");
            for (const ntc_attr_spec *a = op->attrs; a->name; a++) {
                if (a->required)
                    append(&doc, &len, "| `%s` | %s | required |\n", a->name, types[a->type]);
                else
                    append(&doc, &len, "| `%s` | %s | %g |\n", a->name, types[a->type], a->def);
            }
            append(&doc, &len, "\n");
        } else {
            append(&doc, &len, "No attributes.\n\n");
        }
        if (op->params[0].name) {
            append(&doc, &len, "Parameter slots:");
            for (const ntc_param_spec *p = op->params; p->name; p++)
                append(&doc, &len, "%s `%s`%s", p == op->params ? "" : ",", p->name,
                       p->optional ? " (optional)" : p->frozen_stat ? " (running statistic)" : "");
            append(&doc, &len, ".\n\n");
        } else {
            append(&doc, &len, "No parameters.\n\n");
        }
    }
    return doc;
}

START_TEST(docs_match_the_ops_table)
{
    char *doc = slurp(tu_src("docs/ir.md"));
    char *want = ops_reference();
    ck_assert_ptr_nonnull(want);
    if (!strstr(doc, want))
        fprintf(stderr, "docs/ir.md must contain this op reference, generated from ir/ops.c:\n%s", want);
    ck_assert_msg(strstr(doc, want) != NULL, "docs/ir.md disagrees with the ops table (expected text on stderr)");
    free(want);

    /* The example reads and verifies (without its weights file, which the
     * docs do not ship). */
    const char *start = strstr(doc, "```xml\n");
    ck_assert_ptr_nonnull(start);
    start += strlen("```xml\n");
    const char *end = strstr(start, "```");
    ck_assert_ptr_nonnull(end);
    char path[512];
    snprintf(path, sizeof path, "%s/example.xml", tu_tmpdir());
    ntc_err err = {0};
    ck_assert_int_eq(ntc_write_file_atomic(path, start, (size_t)(end - start), &err), 0);
    ntc_graph *g = read_ok(path, true);
    int params = 0;
    for (int i = 0; i < g->n_values; i++)
        params += g->values[i].kind == NTC_VAL_PARAM;
    ck_assert_int_eq(params, 18);  /* as the text under the example says */
    ck_assert_int_ge(ntc_graph_find_value(g, "stem.conv.weight"), 0);
    ntc_graph_free(g);
    ntc_free(doc);
}
END_TEST

/* ---- error paths leak nothing ------------------------------------------------------------ */

/* Counts live allocations and fails the fail_at-th request (0: never). */
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

/* Reads path with the n-th allocation failing, for n = 1, 2, ... until the
 * read succeeds or fails for its own reason; every attempt must release
 * everything it took and report out of memory when that was the cause. */
static void read_under_failures(const char *path, bool expect_ok)
{
    for (fail_at = 1;; fail_at++) {
        alloc_calls = 0;
        live_blocks = 0;
        ntc_set_allocator(counting_alloc, NULL);
        ntc_err err = {0};
        ntc_graph *g = ntc_graph_read_xml(path, &err);
        char *text = g ? ntc_graph_to_xml(g, NULL) : NULL;
        ntc_free(text);
        ntc_graph_free(g);
        ntc_set_allocator(NULL, NULL);
        ck_assert_msg(live_blocks == 0, "%s: %ld blocks leaked with allocation %ld failing (%s)", path,
                      live_blocks, fail_at, err.msg);
        bool injected = alloc_calls >= fail_at;
        if (!injected) {
            ck_assert_msg((g != NULL) == expect_ok, "%s: %s", path, ntc_err_str(&err));
            return;
        }
        if (!g && strcmp(err.msg, "out of memory"))
            ck_assert_msg(!expect_ok, "%s: allocation %ld failing gave '%s'", path, fail_at, err.msg);
    }
}

START_TEST(allocation_failures_do_not_leak)
{
    read_under_failures(tu_src("tests/fixtures/xml/good_student.xml"), true);
    read_under_failures(tu_src("tests/fixtures/xml/good_attrs.xml"), true);
}
END_TEST

START_TEST(error_paths_do_not_leak)
{
    const bad_case *c = &bad_cases[_i];
    read_under_failures(fixture(c->file), false);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("xml");
    TCase *tc = tcase_create("xml");
    tcase_set_timeout(tc, 60);
    int n_bad = (int)(sizeof bad_cases / sizeof bad_cases[0]);
    int n_canon = (int)(sizeof canonical_fixtures / sizeof canonical_fixtures[0]);
    tcase_add_test(tc, roundtrip_built_graph);
    tcase_add_loop_test(tc, roundtrip_fixture, 0, n_canon);
    tcase_add_test(tc, messy_file_is_canonicalised);
    tcase_add_test(tc, floats_read_back_exactly);
    tcase_add_test(tc, weights_named_relative_to_the_xml);
    tcase_add_test(tc, writer_rejects_unwritable_names);
    tcase_add_loop_test(tc, bad_fixture, 0, n_bad);
    tcase_add_test(tc, no_weights_skips_only_the_weights);
    tcase_add_test(tc, damaged_files_fail_cleanly);
    tcase_add_test(tc, check_command);
    tcase_add_test(tc, docs_match_the_ops_table);
    tcase_add_test(tc, allocation_failures_do_not_leak);
    tcase_add_loop_test(tc, error_paths_do_not_leak, 0, n_bad);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
