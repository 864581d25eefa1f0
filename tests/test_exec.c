/* The execution plan and the executor.
 *
 * - The plan never lets two values with overlapping lifetimes share bytes:
 *   checked pair by pair, with lifetimes recomputed here from the graph, on
 *   the ResNet-20 backbone, a NetTailor-style graph and random DAGs.
 * - The executor (shared arena, batch slices, threads) computes what a
 *   plain interpreter written here computes with one buffer per value.
 * - A ResNet forward is deterministic: bitwise equal across runs, and equal
 *   to 1e-6 across batch splits and thread counts. */
#include "testutil.h"
#include "ntc/data.h"
#include "ntc/frontends.h"
#include "ntc/runtime.h"
#include "runtime/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- graphs -------------------------------------------------------------------- */

/* Uniform in [0, 1) (tu_randf is uniform in [-1, 1)). */
static float unit(unsigned *seed) { return 0.5f * (tu_randf(seed) + 1.0f); }

/* Gives every parameter without data values from [-s, s), and batchnorm
 * variances positive values, so batchnorm and mix are not identities. */
static void fill_params(ntc_graph *g, unsigned seed, float s)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        for (int p = 0; p < NTC_MAX_PARAMS; p++) {
            if (n->par[p] < 0)
                continue;
            ntc_value *v = &g->values[n->par[p]];
            int64_t cnt = ntc_shape_numel(&v->shape);
            if (!v->owned) {
                v->data = ntc_malloc(sizeof(float) * (size_t)cnt);
                v->owned = true;
            }
            bool var = n->op == NTC_OP_batchnorm && p == 3;
            for (int64_t k = 0; k < cnt; k++)
                v->data[k] = var ? 0.5f + unit(&seed) : s * tu_randf(&seed);
        }
    }
}

static int node1(ntc_graph *g, ntc_op op, const char *name, int in)
{
    int n = ntc_graph_add_node(g, op, name, &in, 1, -1);
    ck_assert_int_ge(n, 0);
    return n;
}

/* The output value of node n (read after n is made: adding nodes moves g->nodes). */
static int out_of(const ntc_graph *g, int n) { return g->nodes[n].out; }

static int add_params(ntc_graph *g, int n, const char *const *slots)
{
    for (int i = 0; slots[i]; i++)
        ck_assert_int_ge(ntc_node_add_param(g, n, slots[i], NULL), 0);
    return g->nodes[n].out;
}

static int conv(ntc_graph *g, const char *name, int in, int filters, int k, int stride)
{
    int n = node1(g, NTC_OP_conv2d, name, in);
    ntc_attrs *a = &g->nodes[n].a;
    a->filters = filters;
    a->kernel[0] = a->kernel[1] = k;
    a->stride[0] = a->stride[1] = stride;
    for (int i = 0; i < 4; i++)
        a->pad[i] = k / 2;
    return add_params(g, n, (const char *[]){"weight", "bias", NULL});
}

static int bn(ntc_graph *g, const char *name, int in)
{
    return add_params(g, node1(g, NTC_OP_batchnorm, name, in), (const char *[]){"scale", "bias", "mean", "var", NULL});
}

/* A NetTailor-style student: a universal path and a proxy (maxpool with
 * k = stride+1, 1x1 conv, bn) mixed by alphas, then avgpool, the head and
 * a softmax; uses every op of the table. */
static ntc_graph *student(void)
{
    ntc_graph *g = ntc_graph_new("student");
    ntc_shape s;
    ntc_shape_parse("N,2,9,9", &s);
    int x = ntc_graph_add_input(g, "image", &s);
    int stem = out_of(g, node1(g, NTC_OP_relu, "stem.relu", bn(g, "stem.bn", conv(g, "stem", x, 4, 3, 1))));
    int u = bn(g, "u.bn", conv(g, "u.conv", stem, 6, 3, 2));
    int pool = node1(g, NTC_OP_maxpool, "p.pool", stem);
    ntc_attrs *pa = &g->nodes[pool].a;
    pa->kernel[0] = pa->kernel[1] = 3;
    pa->stride[0] = pa->stride[1] = 2;
    for (int i = 0; i < 4; i++)
        pa->pad[i] = 1;
    int p = bn(g, "p.bn", conv(g, "p.conv", g->nodes[pool].out, 6, 1, 1));
    int branches[] = {u, p};
    int mix = ntc_graph_add_node(g, NTC_OP_mix, "mix", branches, 2, -1);
    add_params(g, mix, (const char *[]){"alpha", NULL});
    int r = out_of(g, node1(g, NTC_OP_relu, "relu", g->nodes[mix].out));
    int sum_in[] = {r, g->nodes[mix].out};
    int sum = out_of(g, ntc_graph_add_node(g, NTC_OP_add, "sum", sum_in, 2, -1));
    int avg = node1(g, NTC_OP_avgpool, "avg", sum);
    ntc_attrs *aa = &g->nodes[avg].a;
    aa->kernel[0] = aa->kernel[1] = 2;
    aa->stride[0] = aa->stride[1] = 2;
    aa->ceil_mode = 1;
    aa->count_include_pad = 1;
    int gap = out_of(g, node1(g, NTC_OP_global_avgpool, "gap", g->nodes[avg].out));
    int flat = out_of(g, node1(g, NTC_OP_flatten, "flat", gap));
    int fc = node1(g, NTC_OP_linear, "fc", flat);
    g->nodes[fc].a.units = 5;
    int logits = add_params(g, fc, (const char *[]){"weight", "bias", NULL});
    int prob = out_of(g, node1(g, NTC_OP_softmax, "prob", logits));
    ntc_graph_add_output(g, "logits", logits);   /* also read by softmax */
    ntc_graph_add_output(g, "prob", prob);
    ntc_graph_add_output(g, "features", r);      /* an output in the middle */
    ntc_graph_add_output(g, "echo", x);          /* an input passed through */
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
    fill_params(g, 5, 1.0f);
    return g;
}

/* A random DAG over rank-2 values: linear layers of random widths (so
 * sizes vary), relus, and adds/mixes of earlier values of equal width,
 * reading values from anywhere before them; a few random outputs. */
static ntc_graph *random_dag(unsigned seed, int nodes)
{
    ntc_graph *g = ntc_graph_new("dag");
    ntc_shape s = {2, {NTC_BATCH, 8}};
    int vals[256], width[256], nv = 0;
    vals[nv] = ntc_graph_add_input(g, "x", &s), width[nv++] = 8;
    for (int i = 0; i < nodes; i++) {
        char name[16];
        snprintf(name, sizeof name, "n%d", i);
        int a = (int)(unit(&seed) * nv), kind = (int)(unit(&seed) * 3), n;
        int b = -1;
        for (int j = nv - 1; j >= 0 && kind == 2; j--)
            if (j != a && width[j] == width[a] && unit(&seed) < 0.5f)
                b = j;
        if (kind == 2 && b >= 0) {
            int in[] = {vals[a], vals[b]};
            bool use_mix = unit(&seed) < 0.5f;
            n = ntc_graph_add_node(g, use_mix ? NTC_OP_mix : NTC_OP_add, name, in, 2, -1);
            if (use_mix)
                add_params(g, n, (const char *[]){"alpha", NULL});
            width[nv] = width[a];
        } else if (kind == 1) {
            n = node1(g, NTC_OP_relu, name, vals[a]);
            width[nv] = width[a];
        } else {
            n = node1(g, NTC_OP_linear, name, vals[a]);
            g->nodes[n].a.units = width[nv] = 1 + (int)(unit(&seed) * 40);
            add_params(g, n, (const char *[]){"weight", "bias", NULL});
        }
        vals[nv++] = g->nodes[n].out;
    }
    ntc_graph_add_output(g, "last", vals[nv - 1]);
    for (int k = 0; k < 2; k++) {
        char name[16];
        snprintf(name, sizeof name, "out%d", k);
        ntc_graph_add_output(g, name, vals[1 + (int)(unit(&seed) * (nv - 1))]);
    }
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_verify(g, &err) == 0, "%s", ntc_err_str(&err));
    fill_params(g, seed, 0.3f);
    return g;
}

/* ---- an independent reference: one buffer per value, whole batch at once ---------- */

static float **reference_run(ntc_graph *g, float *const *inputs, int batch)
{
    float **buf = calloc((size_t)g->n_values, sizeof(float *));
    for (int i = 0; i < g->n_inputs; i++)
        buf[g->inputs[i]] = inputs[i];
    int *order = malloc(sizeof(int) * (size_t)g->n_nodes);
    ntc_err err = {0};
    int steps = ntc_graph_topo_order(g, order, &err);
    ck_assert_int_eq(steps, g->n_nodes);
    for (int s = 0; s < steps; s++) {
        const ntc_node *n = &g->nodes[order[s]];
        const float *in[8];
        ntc_shape in_shape[8], item[8], par_shape[NTC_MAX_PARAMS] = {{0}};
        for (int j = 0; j < n->n_in; j++) {
            in[j] = buf[n->in[j]];
            in_shape[j] = item[j] = g->values[n->in[j]].shape;
            in_shape[j].dims[0] = batch, item[j].dims[0] = 1;
        }
        ntc_shape os = g->values[n->out].shape, os1 = os;
        os.dims[0] = batch, os1.dims[0] = 1;
        ntc_kargs k = {.node = n, .batch = batch, .n_in = n->n_in, .in = in, .in_shape = in_shape,
                       .par_shape = par_shape, .out_shape = os};
        for (int p = 0; p < NTC_MAX_PARAMS; p++)
            k.par[p] = n->par[p] >= 0 ? g->values[n->par[p]].data : NULL;
        int64_t w = ntc_kernels[n->op].work ? ntc_kernels[n->op].work(n, item, &os1) : 0;
        k.work = malloc(sizeof(float) * (size_t)(w + 1));
        k.out = buf[n->out] = malloc(sizeof(float) * (size_t)(ntc_shape_numel(&os1) * batch));
        ntc_kernels[n->op].forward(&k);
        free(k.work);
    }
    free(order);
    return buf;
}

static void reference_free(ntc_graph *g, float **buf)
{
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].kind == NTC_VAL_ACT)
            free(buf[v]);
    free(buf);
}

/* |a - b| <= tol relative to the largest magnitude in b (at least 1). */
static void expect_close(const float *a, const float *b, int64_t n, double tol, const char *what)
{
    double scale = 1;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(a[i] - b[i]) <= tol * scale, "%s: element %lld: %.9g vs %.9g", what,
                      (long long)i, a[i], b[i]);
}

static float *random_input(const ntc_graph *g, int i, int batch, unsigned seed)
{
    int64_t n = ntc_shape_numel(&g->values[g->inputs[i]].shape) * batch;
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t k = 0; k < n; k++)
        x[k] = tu_randf(&seed);
    return x;
}

/* Runs g through the executor and the reference; every output must agree. */
static void expect_matches_reference(ntc_graph *g, int batch, int threads, const char *what)
{
    float *x[4];
    for (int i = 0; i < g->n_inputs; i++)
        x[i] = random_input(g, i, batch, 100 + (unsigned)i);
    ntc_err err = {0};
    ntc_exec *ex = ntc_exec_new_threads(g, batch, threads, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    ck_assert_msg(ntc_exec_run(ex, (const float *const *)x, batch, &err) == 0, "%s", ntc_err_str(&err));
    float **ref = reference_run(g, x, batch);
    for (int o = 0; o < g->n_outputs; o++) {
        int v = g->outputs[o].value;
        ntc_shape s = ntc_exec_output_shape(ex, o);
        ck_assert_int_eq(s.dims[0], batch);
        char msg[96];
        snprintf(msg, sizeof msg, "%s: output %s, %d threads", what, g->outputs[o].name, threads);
        expect_close(ntc_exec_output(ex, o), ref[v], ntc_shape_numel(&s), 1e-6, msg);
    }
    reference_free(g, ref);
    ntc_exec_free(ex);
    for (int i = 0; i < g->n_inputs; i++)
        free(x[i]);
}

/* ---- plan checks ----------------------------------------------------------------- */

/* Recomputes every planned value's lifetime from the graph and the plan's
 * schedule, then checks each pair of arena values: overlapping lifetimes
 * must mean disjoint bytes.  Also checks the schedule is topological. */
static void expect_plan_sound(const ntc_graph *g, const ntc_plan *p)
{
    int *step_of = malloc(sizeof(int) * (size_t)g->n_nodes);
    for (int i = 0; i < g->n_nodes; i++)
        step_of[i] = -1;
    for (int s = 0; s < p->n_steps; s++)
        step_of[p->order[s]] = s;
    int *first = malloc(sizeof(int) * (size_t)g->n_values), *last = malloc(sizeof(int) * (size_t)g->n_values);
    for (int v = 0; v < g->n_values; v++) {
        const ntc_value *val = &g->values[v];
        first[v] = last[v] = val->kind == NTC_VAL_ACT ? step_of[val->producer] : -1;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        ck_assert_int_ge(step_of[i], 0);
        for (int j = 0; j < n->n_in; j++) {
            int v = n->in[j];
            if (g->values[v].kind != NTC_VAL_ACT)
                continue;
            ck_assert_msg(first[v] < step_of[i], "%s runs before its input %s", n->name, g->values[v].name);
            if (step_of[i] > last[v])
                last[v] = step_of[i];
        }
    }
    int64_t sum = 0;
    for (int v = 0; v < g->n_values; v++) {
        if (p->offset[v] < 0)
            continue;
        ck_assert_int_ge(p->size[v], ntc_shape_numel(&g->values[v].shape));
        ck_assert_int_le(p->offset[v] + p->size[v], p->arena_floats);
        ck_assert_int_eq(p->offset[v] % 16, 0);
        ck_assert_int_ge(p->last[v], last[v]);
        ck_assert_int_le(p->first[v], first[v]);
        sum += p->size[v];
        for (int u = 0; u < v; u++) {
            if (p->offset[u] < 0 || first[u] > last[v] || first[v] > last[u])
                continue;
            bool disjoint = p->offset[u] + p->size[u] <= p->offset[v] || p->offset[v] + p->size[v] <= p->offset[u];
            ck_assert_msg(disjoint, "%s [%d,%d] and %s [%d,%d] are live together and share memory",
                          g->values[u].name, first[u], last[u], g->values[v].name, first[v], last[v]);
        }
    }
    /* Graph outputs live in their own buffers. */
    for (int o = 0; o < g->n_outputs; o++)
        ck_assert_int_eq(p->offset[g->outputs[o].value], -1);
    ck_assert_int_le(p->arena_floats, sum);
    free(step_of), free(first), free(last);
}

START_TEST(plan_resnet)
{
    ntc_graph *g = tu_resnet(20, 3);
    ntc_err err = {0};
    ntc_plan *p = ntc_plan_new(g, &err);
    ck_assert_msg(p != NULL, "%s", ntc_err_str(&err));
    expect_plan_sound(g, p);
    int64_t naive = 0, peak = ntc_plan_peak_bytes(g, &naive, &err);
    ck_assert_int_eq(peak, (p->arena_floats + p->output_floats) * 4);
    ck_assert_int_eq(naive, p->naive_floats * 4);
    /* A chain-like network needs a few live activations at a time, not
     * one buffer for each of its ~60 node outputs. */
    ck_assert_msg(peak * 5 < naive, "peak %lld bytes vs naive %lld", (long long)peak, (long long)naive);
    ntc_plan_free(p);
    ntc_graph_free(g);
}
END_TEST

START_TEST(plan_random_dags)
{
    for (unsigned seed = 1; seed <= 60; seed++) {
        ntc_graph *g = random_dag(seed, 10 + (int)(seed % 50));
        ntc_err err = {0};
        ntc_plan *p = ntc_plan_new(g, &err);
        ck_assert_msg(p != NULL, "%s", ntc_err_str(&err));
        expect_plan_sound(g, p);
        ntc_plan_free(p);
        if (seed % 6 == 0)
            expect_matches_reference(g, 5, 2, "random dag");
        ntc_graph_free(g);
    }
}
END_TEST

/* ---- executor ------------------------------------------------------------------ */

START_TEST(exec_matches_reference)
{
    ntc_graph *g = student();
    ntc_err err = {0};
    ntc_exec *x = ntc_exec_new(g, 7, &err);
    ck_assert_msg(x != NULL, "%s", ntc_err_str(&err));
    expect_plan_sound(g, ntc_exec_plan(x));
    ntc_exec_free(x);
    for (int threads = 1; threads <= 3; threads++)
        expect_matches_reference(g, 7, threads, "student");
    expect_matches_reference(g, 1, 2, "student, batch 1");
    ntc_graph_free(g);
}
END_TEST

START_TEST(resnet_deterministic)
{
    ntc_graph *g = tu_resnet(20, 3);
    fill_params(g, 9, 0.2f);   /* non-trivial batchnorm statistics */
    const int B = 8;
    float *x = random_input(g, 0, B, 42);
    const float *in[] = {x};
    ntc_err err = {0};
    ntc_exec *two = ntc_exec_new_threads(g, B, 2, &err), *one = ntc_exec_new_threads(g, B, 1, &err);
    ck_assert_msg(two && one, "%s", ntc_err_str(&err));
    const int64_t n = 10 * B;
    float first[10 * 8], again[10 * 8], single[10 * 8], split[10 * 8];
    ck_assert_int_eq(ntc_exec_run(two, in, B, &err), 0);
    memcpy(first, ntc_exec_output(two, 0), sizeof first);
    ck_assert_int_eq(ntc_exec_run(two, in, B, &err), 0);
    memcpy(again, ntc_exec_output(two, 0), sizeof again);
    ck_assert_msg(!memcmp(first, again, sizeof first), "two runs of the same batch differ");
    ck_assert_int_eq(ntc_exec_run(one, in, B, &err), 0);
    memcpy(single, ntc_exec_output(one, 0), sizeof single);
    expect_close(single, first, n, 1e-6, "1 thread vs 2 threads");
    /* Eight batches of one through the same executor. */
    for (int b = 0; b < B; b++) {
        const float *xb[] = {x + b * 28 * 28};
        ck_assert_int_eq(ntc_exec_run(two, xb, 1, &err), 0);
        ck_assert_int_eq(ntc_exec_output_shape(two, 0).dims[0], 1);
        memcpy(split + b * 10, ntc_exec_output(two, 0), sizeof(float) * 10);
    }
    expect_close(split, first, n, 1e-6, "batch 8 vs 8 batches of 1");
    /* The logits are not all equal (the network is not degenerate). */
    bool varied = false;
    for (int i = 1; i < n; i++)
        varied |= first[i] != first[0];
    ck_assert(varied);
    ntc_exec_free(two);
    ntc_exec_free(one);
    expect_matches_reference(g, 3, 2, "resnet20");
    free(x);
    ntc_graph_free(g);
}
END_TEST

START_TEST(exec_errors)
{
    ntc_graph *g = student();
    int w = ntc_graph_find_value(g, "p.conv.weight");
    ck_assert_int_ge(w, 0);
    ntc_free(g->values[w].data);
    g->values[w].data = NULL;
    g->values[w].owned = false;
    ntc_err err = {0};
    ck_assert_ptr_null(ntc_exec_new(g, 4, &err));
    ck_assert_msg(strstr(err.msg, "'p.conv.weight'") && strstr(err.msg, "no data"), "%s", err.msg);
    fill_params(g, 1, 1.0f);
    ck_assert_ptr_null(ntc_exec_new(g, 0, &err));
    ntc_exec *x = ntc_exec_new(g, 4, &err);
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_null(ntc_exec_output(x, 0));          /* nothing ran yet */
    float *in = random_input(g, 0, 5, 1);
    const float *ins[] = {in};
    ck_assert_int_eq(ntc_exec_run(x, ins, 5, &err), -1);
    ck_assert_msg(strstr(err.msg, "batch 5"), "%s", err.msg);
    ck_assert_int_eq(ntc_exec_run(x, ins, 4, &err), 0);
    ck_assert_ptr_null(ntc_exec_output(x, g->n_outputs));
    ck_assert_ptr_null(ntc_exec_output(x, -1));
    /* "echo" passes the input through. */
    ck_assert(!memcmp(ntc_exec_output(x, 3), in, sizeof(float) * 4 * 2 * 9 * 9));
    ntc_exec_free(x);
    free(in);
    ntc_graph_free(g);
}
END_TEST

/* ---- the commands ------------------------------------------------------------------ */

/* Writes a resnet20 with seed 3 to DIR/bb.xml; returns the graph read back. */
static ntc_graph *write_backbone(const char *dir, char *xml, size_t len)
{
    snprintf(xml, len, "%s/bb.xml", dir);
    char *out = NULL;
    int rc = tu_ntc(&out, "new resnet --depth 20 --input 1x28x28 --classes 10 --seed 3 -o %s", xml);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml(xml, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    return g;
}

static void write_npy(const char *path, ntc_dtype t, ntc_shape s, void *data)
{
    ntc_array a = {t, s, data};
    ntc_err err = {0};
    ck_assert_msg(ntc_npy_write(path, &a, &err) == 0, "%s", ntc_err_str(&err));
}

START_TEST(run_command)
{
    const char *dir = tu_tmpdir();
    char xml[512], xpath[512], ypath[512], u8path[512];
    ntc_graph *g = write_backbone(dir, xml, sizeof xml);
    const int B = 5;
    float *x = random_input(g, 0, B, 8);
    snprintf(xpath, sizeof xpath, "%s/x.npy", dir);
    snprintf(ypath, sizeof ypath, "%s/y.npy", dir);
    write_npy(xpath, NTC_DT_F32, (ntc_shape){4, {B, 1, 28, 28}}, x);
    /* Chunks of 2 (2 + 2 + 1) through the command equal one batch of 5 here. */
    char *out = NULL;
    int rc = tu_ntc(&out, "run %s --input image=%s -o %s --batch 2", xml, xpath, ypath);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    ntc_array y = {0};
    ntc_err err = {0};
    ck_assert_msg(ntc_npy_read(ypath, &y, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(y.dtype, NTC_DT_F32);
    ck_assert_int_eq(y.shape.rank, 2);
    ck_assert_int_eq(y.shape.dims[0], B);
    ck_assert_int_eq(y.shape.dims[1], 10);
    ntc_exec *ex = ntc_exec_new(g, B, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    ck_assert_int_eq(ntc_exec_run(ex, (const float *const *)&x, B, &err), 0);
    expect_close(y.data, ntc_exec_output(ex, 0), 10 * B, 1e-6, "ntc run vs ntc_exec_run");
    ntc_exec_free(ex);
    ntc_array_free(&y);

    /* Raw uint8 pixels are refused with the reason; so are wrong shapes,
     * unknown inputs and missing options. */
    snprintf(u8path, sizeof u8path, "%s/u8.npy", dir);
    uint8_t pixels[2 * 28 * 28] = {0};
    write_npy(u8path, NTC_DT_U8, (ntc_shape){4, {2, 1, 28, 28}}, pixels);
    rc = tu_ntc(&out, "run %s --input %s -o %s", xml, u8path, ypath);
    ck_assert_msg(rc != 0 && strstr(out, "must be float32") && strstr(out, "uint8"), "%s", out);
    free(out);
    write_npy(u8path, NTC_DT_F32, (ntc_shape){4, {1, 1, 28, 27}}, x);
    rc = tu_ntc(&out, "run %s --input %s -o %s", xml, u8path, ypath);
    ck_assert_msg(rc != 0 && strstr(out, "1,1,28,27") && strstr(out, "N,1,28,28"), "%s", out);
    free(out);
    rc = tu_ntc(&out, "run %s --input nosuch=%s -o %s", xml, xpath, ypath);
    ck_assert_msg(rc == 2 && strstr(out, "no input 'nosuch'"), "%s", out);
    free(out);
    rc = tu_ntc(&out, "run %s --input %s", xml, xpath);
    ck_assert_msg(rc == 2 && strstr(out, "no -o"), "%s", out);
    free(out);
    free(x);
    ntc_graph_free(g);
}
END_TEST

START_TEST(eval_command)
{
    const char *dir = tu_tmpdir();
    char xml[512], ipath[512], lpath[512];
    ntc_graph *g = write_backbone(dir, xml, sizeof xml);
    /* 6 images with labels chosen so the expected accuracy and loss can be
     * computed here from the executor's logits. */
    const int n = 6;
    uint8_t img[6 * 28 * 28];
    unsigned seed = 2;
    for (int i = 0; i < n * 28 * 28; i++)
        img[i] = (uint8_t)(unit(&seed) * 255);
    int32_t lab[6] = {0, 1, 2, 3, 4, 5};
    snprintf(ipath, sizeof ipath, "%s/img.npy", dir);
    snprintf(lpath, sizeof lpath, "%s/lab.npy", dir);
    write_npy(ipath, NTC_DT_U8, (ntc_shape){4, {n, 1, 28, 28}}, img);
    write_npy(lpath, NTC_DT_I32, (ntc_shape){1, {n}}, lab);
    /* The command normalises with mean 0.5, std 0.25: x = (p/255 - 0.5) / 0.25. */
    float *x = malloc(sizeof(float) * n * 28 * 28);
    for (int i = 0; i < n * 28 * 28; i++)
        x[i] = ((float)img[i] * (1.0f / 255) - 0.5f) / 0.25f;
    ntc_err err = {0};
    ntc_exec *ex = ntc_exec_new(g, n, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    ck_assert_int_eq(ntc_exec_run(ex, (const float *const *)&x, n, &err), 0);
    const float *z = ntc_exec_output(ex, 0);
    int hits = 0;
    double loss = 0;
    for (int i = 0; i < n; i++) {
        int best = 0;
        double sum = 0;
        for (int j = 0; j < 10; j++)
            best = z[i * 10 + j] > z[i * 10 + best] ? j : best;
        for (int j = 0; j < 10; j++)
            sum += exp(z[i * 10 + j]);
        hits += best == lab[i];
        loss += log(sum) - z[i * 10 + lab[i]];
    }
    char want[64], *out = NULL;
    snprintf(want, sizeof want, "accuracy %.2f%%  loss %.4f", 100.0 * hits / n, loss / n);
    int rc = tu_ntc(&out, "eval %s --data %s,%s --batch 4 --mean 0.5 --std 0.25", xml, ipath, lpath);
    ck_assert_msg(rc == 0 && strstr(out, want) && strstr(out, "6 images") && strstr(out, "images/s"),
                  "want '%s' in:\n%s", want, out);
    free(out);
    /* --limit takes the first examples only. */
    rc = tu_ntc(&out, "eval %s --data %s,%s --limit 3 --mean 0.5 --std 0.25", xml, ipath, lpath);
    ck_assert_msg(rc == 0 && strstr(out, "3 images"), "%s", out);
    free(out);
    rc = tu_ntc(&out, "eval %s --data %s,%s --mean 0.5", xml, ipath, lpath);
    ck_assert_msg(rc == 2 && strstr(out, "--mean and --std go together"), "%s", out);
    free(out);
    rc = tu_ntc(&out, "eval %s", xml);
    ck_assert_msg(rc == 2 && strstr(out, "no --data"), "%s", out);
    free(out);
    ntc_exec_free(ex);
    free(x);
    ntc_graph_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("exec");
    TCase *tc = tcase_create("plan+exec");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, plan_resnet);
    tcase_add_test(tc, plan_random_dags);
    tcase_add_test(tc, exec_matches_reference);
    tcase_add_test(tc, resnet_deterministic);
    tcase_add_test(tc, exec_errors);
    suite_add_tcase(s, tc);
    TCase *cmd = tcase_create("commands");
    tcase_set_timeout(cmd, 300);
    tcase_add_test(cmd, run_command);
    tcase_add_test(cmd, eval_command);
    suite_add_tcase(s, cmd);
    return tu_run(s);
}
