/* End-to-end tests of the commands new, check, stats and dot: run the ntc
 * binary ($NTC_BIN) and compare what it prints and writes with the same
 * graph built in this process. */
#include "testutil.h"
#include "ntc/frontends.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static int files_in(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The in-process twin of `ntc new resnet --depth D --input IN --classes K --seed S`. */
static ntc_graph *twin(int depth, const char *input, int classes, uint64_t seed)
{
    ntc_resnet_opts o;
    ntc_err err = {0};
    ntc_resnet_opts_default(&o);
    o.depth = depth;
    o.classes = classes;
    o.seed = seed;
    ck_assert_int_eq(ntc_resnet_set_input(&o, input, &err), 0);
    ntc_graph *g = ntc_resnet_build(&o, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    return g;
}

/* The integer after `"key": ` at or after `from` in JSON text. */
static long long json_int(const char *from, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(from, pat);
    ck_assert_msg(p != NULL, "no %s in JSON", key);
    return strtoll(p + strlen(pat), NULL, 10);
}

static char *new_resnet20(const char *dir, const char *file)
{
    static char path[512];
    char *out;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int rc = tu_ntc(&out, "new resnet --depth 20 --input 1x28x28 --classes 10 --seed 3 -o %s", path);
    ck_assert_msg(rc == 0, "ntc new failed: %s", out);
    free(out);
    return path;
}

START_TEST(new_then_check)
{
    const char *dir = tu_tmpdir();
    char *out, xml[512], st[512];
    snprintf(xml, sizeof xml, "%s/backbone.xml", dir);
    snprintf(st, sizeof st, "%s/backbone.safetensors", dir);
    int rc = tu_ntc(&out, "new resnet --depth 20 --input 1x28x28 --classes 10 --seed 3 -o %s", xml);
    ck_assert_msg(rc == 0, "%s", out);
    ck_assert_msg(strstr(out, "272,186 parameters"), "%s", out);
    ck_assert_msg(strstr(out, "backbone.safetensors"), "%s", out);
    free(out);
    ck_assert(exists(xml) && exists(st));
    ck_assert_int_eq(files_in(dir), 2);   /* no temporary files left behind */

    rc = tu_ntc(&out, "check %s", xml);
    ck_assert_msg(rc == 0 && strstr(out, "ok:"), "%s", out);
    free(out);

    /* the written weights are exactly the builder's */
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml(xml, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    ntc_graph *t = twin(20, "1x28x28", 10, 3);
    int params = 0;
    for (int i = 0; i < t->n_values; i++) {
        const ntc_value *tv = &t->values[i];
        if (tv->kind != NTC_VAL_PARAM)
            continue;
        int v = ntc_graph_find_value(g, tv->name);
        ck_assert_msg(v >= 0 && g->values[v].data, "%s missing", tv->name);
        size_t n = (size_t)ntc_shape_numel(&tv->shape);
        ck_assert_int_eq(ntc_shape_numel(&g->values[v].shape), (int64_t)n);
        ck_assert_msg(!memcmp(g->values[v].data, tv->data, n * sizeof(float)), "%s differs", tv->name);
        params++;
    }
    ck_assert_int_gt(params, 0);
    ck_assert_int_eq(g->n_nodes, t->n_nodes);
    ck_assert_int_eq(g->n_blocks, t->n_blocks);
    ck_assert_str_eq(g->blocks[3].layer, "s1.b2");
    ntc_graph_free(g);
    ntc_graph_free(t);
}
END_TEST

START_TEST(new_is_deterministic)
{
    const char *dir = tu_tmpdir();
    char a[512], b[512], c[512];
    snprintf(a, sizeof a, "%s", new_resnet20(dir, "a.xml"));
    snprintf(b, sizeof b, "%s", new_resnet20(dir, "b.xml"));
    char *out;
    snprintf(c, sizeof c, "%s/c.xml", dir);
    ck_assert_int_eq(tu_ntc(&out, "new resnet --depth 20 --input 1x28x28 --classes 10 --seed 4 -o %s", c), 0);
    free(out);
    const char *names[2][2] = {{"a.safetensors", "b.safetensors"}, {"a.safetensors", "c.safetensors"}};
    for (int k = 0; k < 2; k++) {
        char p[512], q[512];
        size_t lp, lq;
        ntc_err err = {0};
        snprintf(p, sizeof p, "%s/%s", dir, names[k][0]);
        snprintf(q, sizeof q, "%s/%s", dir, names[k][1]);
        char *x = ntc_read_file(p, &lp, &err), *y = ntc_read_file(q, &lq, &err);
        ck_assert(x && y);
        ck_assert_int_eq(lp, lq);
        bool same = !memcmp(x, y, lp);
        ck_assert_msg(same == (k == 0), "seed 3 vs %s", k == 0 ? "seed 3" : "seed 4");
        ntc_free(x);
        ntc_free(y);
    }
}
END_TEST

START_TEST(stats_json_matches_graph)
{
    const char *dir = tu_tmpdir();
    const char *xml = new_resnet20(dir, "backbone.xml");
    char *out;
    int rc = tu_ntc(&out, "stats --json %s", xml);
    ck_assert_msg(rc == 0, "%s", out);
    ntc_graph *t = twin(20, "1x28x28", 10, 3);
    long long params = 0, macs = 0, universal = 0, task = 0;
    for (int b = 0; b < t->n_blocks; b++) {
        long long bp = 0, bm = 0, nodes = 0;
        for (int i = 0; i < t->n_nodes; i++)
            if (t->nodes[i].block == b) {
                bp += ntc_node_params(t, i);
                bm += ntc_node_macs(t, i);
                nodes++;
            }
        char key[128];
        snprintf(key, sizeof key, "{\"name\": \"%s\", \"role\": \"%s\", \"frozen\": false", t->blocks[b].name,
                 ntc_role_name(t->blocks[b].role));
        const char *row = strstr(out, key);
        ck_assert_msg(row != NULL, "no row %s in %s", key, out);
        ck_assert_int_eq(json_int(row, "nodes"), nodes);
        ck_assert_int_eq(json_int(row, "params"), bp);
        ck_assert_int_eq(json_int(row, "macs"), bm);
        params += bp;
        macs += bm;
        *(t->blocks[b].role == NTC_ROLE_UNIVERSAL ? &universal : &task) += bp;
    }
    ck_assert_ptr_null(strstr(out, "(no block)"));   /* every node is in a block */
    const char *tot = strstr(out, "\"totals\"");
    ck_assert_ptr_nonnull(tot);
    ck_assert_int_eq(json_int(tot, "params"), params);
    ck_assert_int_eq(json_int(tot, "macs"), macs);
    ck_assert_int_eq(json_int(tot, "universal_params"), universal);
    ck_assert_int_eq(json_int(tot, "task_params"), task);
    ck_assert_int_eq(task, 64 * 10 + 10);
    ck_assert_int_eq(count(out, "\"macs_share\""), t->n_blocks);
    free(out);

    /* the text table: one line per block, readable numbers, totals */
    rc = tu_ntc(&out, "stats %s", xml);
    ck_assert_msg(rc == 0, "%s", out);
    ck_assert_msg(strstr(out, "272,186"), "%s", out);
    ck_assert_msg(strstr(out, "universal 271,536, task 650"), "%s", out);
    for (int b = 0; b < t->n_blocks; b++) {
        char line[128];
        snprintf(line, sizeof line, "\n%s ", t->blocks[b].name);
        ck_assert_msg(strstr(out, line), "no line for %s", t->blocks[b].name);
    }
    free(out);
    ntc_graph_free(t);
}
END_TEST

/* Nodes outside blocks get their own row; frozen blocks say so. */
START_TEST(stats_no_block_row)
{
    const char *dir = tu_tmpdir();
    char xml[512];
    snprintf(xml, sizeof xml, "%s/g.xml", dir);
    ntc_graph *g = twin(8, "1x8x8", 3, 0);
    g->nodes[ntc_graph_find_node(g, "head.fc")].block = -1;
    g->blocks[ntc_graph_find_block(g, "stem")].frozen = true;
    ntc_err err = {0};
    char wname[4096];
    snprintf(wname, sizeof wname, "%.*s.safetensors", (int)(strrchr(xml, '.') - xml), xml);
    ck_assert_msg(ntc_graph_write_xml(g, xml, wname, &err) == 0, "%s", ntc_err_str(&err));
    char *out;
    ck_assert_int_eq(tu_ntc(&out, "stats --json %s", xml), 0);
    const char *row = strstr(out, "{\"name\": \"(no block)\", \"role\": \"none\"");
    ck_assert_msg(row != NULL, "%s", out);
    ck_assert_int_eq(json_int(row, "nodes"), 1);
    ck_assert_int_eq(json_int(row, "params"), 64 * 3 + 3);
    ck_assert_int_eq(json_int(strstr(out, "\"totals\""), "other_params"), 64 * 3 + 3);
    ck_assert_ptr_nonnull(strstr(out, "{\"name\": \"stem\", \"role\": \"universal\", \"frozen\": true"));
    free(out);
    ntc_graph_free(g);
}
END_TEST

START_TEST(dot_structure)
{
    const char *dir = tu_tmpdir();
    const char *xml = new_resnet20(dir, "backbone.xml");
    char *out, dotfile[512];
    int rc = tu_ntc(&out, "dot %s", xml);
    ck_assert_msg(rc == 0, "%s", out);
    ntc_graph *t = twin(20, "1x28x28", 10, 3);
    int edges = t->n_outputs;
    for (int i = 0; i < t->n_nodes; i++)
        edges += t->nodes[i].n_in;
    ck_assert_ptr_nonnull(strstr(out, "digraph \"resnet20\" {"));
    ck_assert_int_eq(count(out, "subgraph cluster_"), t->n_blocks);
    ck_assert_int_eq(count(out, "(universal)\""), t->n_blocks - 1);
    ck_assert_int_eq(count(out, "\"head (task)\""), 1);
    ck_assert_int_eq(count(out, " -> "), edges);
    ck_assert_int_eq(count(out, "tooltip="), t->n_nodes);
    ck_assert_int_eq(count(out, "shape=invhouse"), 1);
    ck_assert_int_eq(count(out, "shape=house"), 1);
    ck_assert_int_eq(count(out, "{"), count(out, "}"));
    ck_assert_ptr_nonnull(strstr(out, "label=\"conv2d\\nN,64,7,7\""));
    ck_assert_ptr_nonnull(strstr(out, "label=\"image\\nN,1,28,28\""));
    ck_assert_ptr_null(strstr(out, "weight"));   /* parameters are not drawn */
    /* -o writes the same text atomically */
    snprintf(dotfile, sizeof dotfile, "%s/g.dot", dir);
    char *quiet;
    ck_assert_int_eq(tu_ntc(&quiet, "dot %s -o %s", xml, dotfile), 0);
    ck_assert_str_eq(quiet, "");
    size_t len;
    ntc_err err = {0};
    char *text = ntc_read_file(dotfile, &len, &err);
    ck_assert_ptr_nonnull(text);
    ck_assert_str_eq(text, out);
    ntc_free(text);
    free(quiet);
    free(out);
    ntc_graph_free(t);
}
END_TEST

START_TEST(imagenet_arch)
{
    const char *dir = tu_tmpdir();
    char *out;
    int rc = tu_ntc(&out, "new resnet --arch resnet18 -o %s/r18.xml", dir);
    ck_assert_msg(rc == 0, "%s", out);
    ck_assert_msg(strstr(out, "image [N,3,224,224] -> logits [N,1000]"), "%s", out);
    ck_assert_msg(strstr(out, "11,689,512 parameters, 1,814,073,344 MACs"), "%s", out);
    free(out);
    rc = tu_ntc(&out, "stats --json %s/r18.xml", dir);
    ck_assert_msg(rc == 0, "%s", out);
    const char *tot = strstr(out, "\"totals\"");
    ck_assert_int_eq(json_int(tot, "params"), 11689512);
    ck_assert_int_eq(json_int(tot, "macs"), 1814073344);
    ck_assert_int_eq(json_int(tot, "task_params"), 512 * 1000 + 1000);
    free(out);
}
END_TEST

/* Usage errors exit 2 with one `ntc: error:` line and write nothing. */
START_TEST(bad_flags)
{
    const char *dir = tu_tmpdir();
    struct { const char *args, *says; } cases[] = {
        {"new resnet --depth 21 -o %s/x.xml", "6n+2"},
        {"new resnet --depth twenty -o %s/x.xml", "--depth"},
        {"new resnet --input 1x28 -o %s/x.xml", "CxHxW"},
        {"new resnet --input 0x28x28 -o %s/x.xml", "CxHxW"},
        {"new resnet --classes 0 -o %s/x.xml", "--classes"},
        {"new resnet --widths 16,32 -o %s/x.xml", "widths"},
        {"new resnet --widths 16,,32 -o %s/x.xml", "widths"},
        {"new resnet --arch resnet50 -o %s/x.xml", "resnet50"},
        {"new resnet --arch resnet18 --depth 20 -o %s/x.xml", "--depth"},
        {"new resnet --seed -1 -o %s/x.xml", "--seed"},
        {"new resnet --frobnicate -o %s/x.xml", "--frobnicate"},
        {"new resnet -o %s/x.xml --classes", "needs a value"},
        {"new resnet --depth 20", "-o"},
        {"new vgg -o %s/x.xml", "vgg"},
        {"new resnet -o %s/x.safetensors", "both the graph and its weights"},
        {"new", "which network"},
        {"stats", "no graph"},
        {"stats --frob %s/x.xml", "--frob"},
        {"dot", "no graph"},
        {"dot %s/x.xml -o", "-o"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out;
        char args[512];
        snprintf(args, sizeof args, cases[i].args, dir);
        int rc = tu_ntc(&out, "%s", args);
        ck_assert_msg(rc == 2, "'%s' exited %d: %s", args, rc, out);
        ck_assert_msg(!strncmp(out, "ntc: error: ", 12), "'%s': %s", args, out);
        ck_assert_msg(strstr(out, cases[i].says), "'%s' does not mention '%s': %s", args, cases[i].says, out);
        free(out);
    }
    ck_assert_int_eq(files_in(dir), 0);
    /* --help is not an error */
    const char *helps[] = {"new --help", "new resnet --help", "stats --help", "dot --help"};
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        char *out;
        ck_assert_int_eq(tu_ntc(&out, "%s", helps[i]), 0);
        ck_assert_msg(!strncmp(out, "usage: ntc ", 11), "%s", out);
        free(out);
    }
}
END_TEST

/* Files that cannot be read or written: exit 1, a clear message, nothing left behind. */
START_TEST(bad_paths)
{
    const char *dir = tu_tmpdir();
    char *out;
    int rc = tu_ntc(&out, "new resnet --depth 8 -o %s/missing/b.xml", dir);
    ck_assert_msg(rc == 1, "exit %d: %s", rc, out);
    ck_assert_msg(!strncmp(out, "ntc: error: ", 12) && strstr(out, "missing"), "%s", out);
    free(out);
    ck_assert_int_eq(files_in(dir), 0);

    rc = tu_ntc(&out, "stats %s/none.xml", dir);
    ck_assert_msg(rc == 1 && !strncmp(out, "ntc: error: ", 12) && strstr(out, "none.xml"), "%s", out);
    free(out);

    const char *xml = new_resnet20(dir, "g.xml");
    rc = tu_ntc(&out, "dot %s -o %s/missing/g.dot", xml, dir);
    ck_assert_msg(rc == 1 && !strncmp(out, "ntc: error: ", 12) && strstr(out, "missing"), "%s", out);
    free(out);
    ck_assert_int_eq(files_in(dir), 2);   /* g.xml and g.safetensors only */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("commands");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, new_then_check);
    tcase_add_test(tc, new_is_deterministic);
    tcase_add_test(tc, stats_json_matches_graph);
    tcase_add_test(tc, stats_no_block_row);
    tcase_add_test(tc, dot_structure);
    tcase_add_test(tc, imagenet_arch);
    tcase_add_test(tc, bad_flags);
    tcase_add_test(tc, bad_paths);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
