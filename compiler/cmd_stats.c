/* ntc stats: what a graph costs, per block and in total.
 *
 * The report is a list of sections; each section is one function for the
 * text table and one for its JSON member, both reading the same gathered
 * numbers (struct stats).  Later sections (alphas per layer, expected
 * complexity, peak activation memory) are a gather step plus a row in
 * `sections`. */
#include "driver.h"
#include "ntc/nettailor.h"
#include "ntc/runtime.h"

#include <inttypes.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char stats_help[] =
    "usage: ntc stats GRAPH.xml [--json]\n"
    "\n"
    "Prints per block: role, whether it is frozen, live nodes, learnable\n"
    "parameters, multiply-accumulates per image (conv2d, linear, mix) and the\n"
    "block's share of all MACs; nodes outside blocks form the row \"(no block)\".\n"
    "Then the totals, with the parameters of universal and of task blocks, and\n"
    "the activation memory per image of the interpreter's buffer plan.  For a\n"
    "NetTailor graph: every layer's branches with their alpha, MACs share (c_ij)\n"
    "and parameters, the branches pruning removed, and E[C].  The weights file\n"
    "is read only for the alphas.\n"
    "\n"
    "options:\n"
    "  --json   print the same numbers as one JSON object\n";

typedef struct {
    const char *name;            /* block name, or "(no block)" */
    ntc_role role;
    bool frozen;
    int nodes;
    int64_t params, macs;
} block_row;

typedef struct {
    const ntc_graph *g;
    int n_rows;
    block_row *rows;             /* live blocks in file order, then "(no block)" if used */
    int64_t params, macs;
    int64_t params_by_role[3];   /* indexed by ntc_role */
    /* NetTailor (tailored graphs): layers, alphas when the weights load,
     * and the branches the prune pass recorded as removed. */
    ntc_nt_model *nt;
    bool have_alphas;
    /* activation memory per image of the interpreter's plan */
    int64_t peak_bytes, naive_bytes;
} stats;

/* ---- gathering ------------------------------------------------------------ */

static int gather(const ntc_graph *g, stats *s)
{
    memset(s, 0, sizeof *s);
    s->g = g;
    /* Row of each block handle; the extra last row collects nodes outside blocks. */
    int *row_of = malloc(sizeof(int) * ((size_t)g->n_blocks + 1));
    s->rows = calloc((size_t)g->n_blocks + 1, sizeof(block_row));
    if (!row_of || !s->rows) {
        free(row_of);
        free(s->rows);
        return -1;
    }
    for (int b = 0; b < g->n_blocks; b++) {
        row_of[b] = -1;
        if (g->blocks[b].dead)
            continue;
        block_row *r = &s->rows[s->n_rows];
        r->name = g->blocks[b].name;
        r->role = g->blocks[b].role;
        r->frozen = g->blocks[b].frozen;
        row_of[b] = s->n_rows++;
    }
    block_row outside = {"(no block)", NTC_ROLE_NONE, false, 0, 0, 0};
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        block_row *r = n->block >= 0 ? &s->rows[row_of[n->block]] : &outside;
        int64_t p = ntc_node_params(g, i), m = ntc_node_macs(g, i);
        r->nodes++;
        r->params += p;
        r->macs += m;
        s->params += p;
        s->macs += m;
        s->params_by_role[r->role] += p;
    }
    if (outside.nodes)
        s->rows[s->n_rows++] = outside;
    free(row_of);
    return 0;
}

/* ---- formatting helpers ----------------------------------------------------- */

static double share(int64_t part, int64_t whole) { return whole ? (double)part / (double)whole : 0.0; }

/* ---- section: blocks ------------------------------------------------------- */

static void blocks_text(const stats *s, FILE *f)
{
    int w = (int)strlen("block");
    for (int i = 0; i < s->n_rows; i++)
        if ((int)strlen(s->rows[i].name) > w)
            w = (int)strlen(s->rows[i].name);
    fprintf(f, "%-*s  %-9s  %-6s  %5s  %13s  %15s  %6s\n", w, "block", "role", "frozen", "nodes", "params",
            "MACs/image", "share");
    for (int i = 0; i < s->n_rows; i++) {
        const block_row *r = &s->rows[i];
        char p[32], m[32];
        fprintf(f, "%-*s  %-9s  %-6s  %5d  %13s  %15s  %5.1f%%\n", w, r->name, ntc_role_name(r->role),
                r->frozen ? "yes" : "no", r->nodes, drv_grouped(r->params, p), drv_grouped(r->macs, m),
                100.0 * share(r->macs, s->macs));
    }
}

static void blocks_json(const stats *s, FILE *f)
{
    fputs("\"blocks\": [", f);
    for (int i = 0; i < s->n_rows; i++) {
        const block_row *r = &s->rows[i];
        fputs(i ? ",\n    {\"name\": " : "\n    {\"name\": ", f);
        drv_json_string(f, r->name);
        fprintf(f, ", \"role\": \"%s\", \"frozen\": %s, \"nodes\": %d, \"params\": %lld, \"macs\": %lld, "
                   "\"macs_share\": %.6f}",
                ntc_role_name(r->role), r->frozen ? "true" : "false", r->nodes, (long long)r->params,
                (long long)r->macs, share(r->macs, s->macs));
    }
    fputs("\n  ]", f);
}

/* ---- section: totals ---------------------------------------------------------- */

static void totals_text(const stats *s, FILE *f)
{
    char a[32], b[32], c[32], d[32], e[32];
    fprintf(f, "params      %15s  (%s; universal %s, task %s", drv_grouped(s->params, a), drv_human(s->params, b),
            drv_grouped(s->params_by_role[NTC_ROLE_UNIVERSAL], c), drv_grouped(s->params_by_role[NTC_ROLE_TASK], d));
    if (s->params_by_role[NTC_ROLE_NONE])
        fprintf(f, ", outside blocks %s", drv_grouped(s->params_by_role[NTC_ROLE_NONE], e));
    fputs(")\n", f);
    fprintf(f, "MACs/image  %15s  (%s)\n", drv_grouped(s->macs, a), drv_human(s->macs, b));
}

static void totals_json(const stats *s, FILE *f)
{
    fprintf(f, "\"totals\": {\"params\": %lld, \"macs\": %lld, \"universal_params\": %lld, "
               "\"task_params\": %lld, \"other_params\": %lld}",
            (long long)s->params, (long long)s->macs, (long long)s->params_by_role[NTC_ROLE_UNIVERSAL],
            (long long)s->params_by_role[NTC_ROLE_TASK], (long long)s->params_by_role[NTC_ROLE_NONE]);
}

/* ---- the report ---------------------------------------------------------------- */

/* ---- section: NetTailor ---------------------------------------------------------- */

/* A removed branch as recorded by the prune pass. */
typedef struct {
    char block[256], layer[256], reads[256], role[32];
    double alpha;
    int64_t macs, params;
} pruned_branch;

static bool parse_pruned(const ntc_meta *m, pruned_branch *p)
{
    size_t n = strlen(NTC_META_PRUNED);
    if (strncmp(m->key, NTC_META_PRUNED, n))
        return false;
    snprintf(p->block, sizeof p->block, "%s", m->key + n);
    long long macs = 0, params = 0;
    if (sscanf(m->value, "layer=%255s reads=%255s role=%31s alpha=%lf macs=%lld params=%lld", p->layer, p->reads,
               p->role, &p->alpha, &macs, &params) != 6)
        return false;
    p->macs = macs;
    p->params = params;
    return true;
}

typedef struct {
    int universal_kept, universal_total, proxies_kept, proxies_total;
    int64_t task_params;
} nt_summary;

static nt_summary summarise(const stats *s)
{
    nt_summary sum = {0};
    const ntc_graph *g = s->g;
    for (int l = 0; l < s->nt->n_layers; l++)
        for (int b = 0; b < s->nt->layers[l].n_branches; b++) {
            bool u = s->nt->layers[l].br[b].universal;
            sum.universal_kept += u;
            sum.universal_total += u;
            sum.proxies_kept += !u;
            sum.proxies_total += !u;
        }
    for (int i = 0; i < g->n_meta; i++) {
        pruned_branch p;
        if (parse_pruned(&g->meta[i], &p)) {
            bool u = !strcmp(p.role, "universal");
            sum.universal_total += u;
            sum.proxies_total += !u;
        }
    }
    sum.task_params = s->params_by_role[NTC_ROLE_TASK] + s->params_by_role[NTC_ROLE_NONE];
    return sum;
}

static void nettailor_text(const stats *s, FILE *f)
{
    const ntc_graph *g = s->g;
    const ntc_nt_model *m = s->nt;
    if (!m || m->n_layers == 0) {
        fputs("NetTailor: not a tailored graph (no mix nodes)\n", f);
        return;
    }
    fprintf(f, "NetTailor layers (alpha = softmax of the layer's logits; MACs share = c_ij, of the backbone's %s MACs)\n",
            drv_human(m->backbone_macs, (char[32]){0}));
    fprintf(f, "%-12s %-18s %-12s %8s  %-7s %8s %10s\n", "layer", "branch", "reads", "alpha", "kept", "MACs", "params");
    for (int l = 0; l < m->n_layers; l++) {
        const ntc_nt_layer *ly = &m->layers[l];
        double alpha[64] = {0};
        if (s->have_alphas && ly->n_branches <= 64)
            ntc_nt_alphas(g, ly, alpha);
        for (int b = 0; b < ly->n_branches; b++) {
            const ntc_nt_branch *br = &ly->br[b];
            char a[16] = "?", p[32];
            if (s->have_alphas)
                snprintf(a, sizeof a, "%.3f", alpha[b]);
            fprintf(f, "%-12s %-18s %-12s %8s  %-7s %7.2f%% %10s\n", b ? "" : ly->name,
                    g->blocks[br->block].name, br->src_value >= 0 ? g->values[br->src_value].name : "?", a, "yes",
                    100 * br->cost, drv_grouped(br->params, p));
        }
    }
    bool header = false;
    for (int i = 0; i < g->n_meta; i++) {
        pruned_branch pb;
        if (!parse_pruned(&g->meta[i], &pb))
            continue;
        if (!header)
            fputs("removed by prune (alpha when pruned):\n", f);
        header = true;
        char a[16], p[32];
        snprintf(a, sizeof a, "%.3f", pb.alpha);
        fprintf(f, "%-12s %-18s %-12s %8s  %-7s %7.2f%% %10s\n", pb.layer, pb.block, pb.reads, a, "removed",
                m->backbone_macs ? 100.0 * (double)pb.macs / (double)m->backbone_macs : 0.0,
                drv_grouped(pb.params, p));
    }
    nt_summary sum = summarise(s);
    char t[32], mm[32];
    fprintf(f, "universal blocks kept %d/%d, proxies kept %d/%d, task-specific params %s, MACs %s = %.1f%% of the backbone\n",
            sum.universal_kept, sum.universal_total, sum.proxies_kept, sum.proxies_total,
            drv_grouped(sum.task_params, t), drv_grouped(s->macs, mm),
            m->backbone_macs ? 100.0 * (double)s->macs / (double)m->backbone_macs : 0.0);
    if (s->have_alphas)
        fprintf(f, "expected complexity E[C] = %.4f\n", ntc_nt_expected_complexity(m, g, NULL));
}

static void nettailor_json(const stats *s, FILE *f)
{
    const ntc_graph *g = s->g;
    const ntc_nt_model *m = s->nt;
    fputs("\"nettailor\": ", f);
    if (!m || m->n_layers == 0) {
        fputs("null", f);
        return;
    }
    fprintf(f, "{\"backbone_macs\": %" PRId64 ", \"layers\": [", m->backbone_macs);
    for (int l = 0; l < m->n_layers; l++) {
        const ntc_nt_layer *ly = &m->layers[l];
        double alpha[64] = {0};
        if (s->have_alphas && ly->n_branches <= 64)
            ntc_nt_alphas(g, ly, alpha);
        fputs(l ? ",\n    {\"name\": " : "\n    {\"name\": ", f);
        drv_json_string(f, ly->name);
        fputs(", \"branches\": [", f);
        for (int b = 0; b < ly->n_branches; b++) {
            const ntc_nt_branch *br = &ly->br[b];
            fputs(b ? ", {\"block\": " : "{\"block\": ", f);
            drv_json_string(f, g->blocks[br->block].name);
            fputs(", \"reads\": ", f);
            drv_json_string(f, br->src_value >= 0 ? g->values[br->src_value].name : "");
            fprintf(f, ", \"universal\": %s, \"alpha\": %.6g, \"cost\": %.6g, \"macs\": %" PRId64
                       ", \"params\": %" PRId64 "}",
                    br->universal ? "true" : "false", s->have_alphas ? alpha[b] : -1.0, br->cost, br->macs,
                    br->params);
        }
        fputs("]}", f);
    }
    fputs("\n  ], \"removed\": [", f);
    int k = 0;
    for (int i = 0; i < g->n_meta; i++) {
        pruned_branch pb;
        if (!parse_pruned(&g->meta[i], &pb))
            continue;
        fputs(k++ ? ", {\"block\": " : "{\"block\": ", f);
        drv_json_string(f, pb.block);
        fputs(", \"layer\": ", f);
        drv_json_string(f, pb.layer);
        fprintf(f, ", \"universal\": %s, \"alpha\": %.6g, \"macs\": %" PRId64 ", \"params\": %" PRId64 "}",
                strcmp(pb.role, "universal") ? "false" : "true", pb.alpha, pb.macs, pb.params);
    }
    nt_summary sum = summarise(s);
    fprintf(f, "], \"universal_kept\": %d, \"universal_total\": %d, \"proxies_kept\": %d, \"proxies_total\": %d, "
               "\"task_params\": %" PRId64 ", \"macs_share\": %.6f",
            sum.universal_kept, sum.universal_total, sum.proxies_kept, sum.proxies_total, sum.task_params,
            m->backbone_macs ? (double)s->macs / (double)m->backbone_macs : 0.0);
    if (s->have_alphas)
        fprintf(f, ", \"expected_complexity\": %.6g", ntc_nt_expected_complexity(m, g, NULL));
    fputs("}", f);
}

/* ---- section: activation memory --------------------------------------------------- */

static void memory_text(const stats *s, FILE *f)
{
    char a[32], b[32];
    if (s->peak_bytes < 0) {
        fputs("activation memory: unknown (the graph cannot be planned)\n", f);
        return;
    }
    fprintf(f, "activations per image: %s bytes peak with the buffer plan, %s bytes without (%.1fx less)\n",
            drv_grouped(s->peak_bytes, a), drv_grouped(s->naive_bytes, b),
            s->peak_bytes ? (double)s->naive_bytes / (double)s->peak_bytes : 0.0);
}

static void memory_json(const stats *s, FILE *f)
{
    fprintf(f, "\"memory\": {\"peak_bytes_per_image\": %" PRId64 ", \"naive_bytes_per_image\": %" PRId64 "}",
            s->peak_bytes, s->naive_bytes);
}

static const struct {
    void (*text)(const stats *, FILE *);
    void (*json)(const stats *, FILE *);    /* writes one `"key": value` member */
} sections[] = {
    {blocks_text, blocks_json},
    {totals_text, totals_json},
    {memory_text, memory_json},
    {nettailor_text, nettailor_json},
};

static void report_text(const stats *s, FILE *f)
{
    const ntc_graph *g = s->g;
    fprintf(f, "graph %s:", g->name);
    for (int i = 0; i < g->n_inputs; i++) {
        char sh[128];
        ntc_shape_format(&g->values[g->inputs[i]].shape, sh, sizeof sh);
        fprintf(f, "%s %s [%s]", i ? "," : "", g->values[g->inputs[i]].name, sh);
    }
    fputs(" ->", f);
    for (int i = 0; i < g->n_outputs; i++) {
        char sh[128];
        ntc_shape_format(&g->values[g->outputs[i].value].shape, sh, sizeof sh);
        fprintf(f, "%s %s [%s]", i ? "," : "", g->outputs[i].name, sh);
    }
    fputs("\n", f);
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        fputc('\n', f);
        sections[i].text(s, f);
    }
}

static void report_json(const stats *s, FILE *f)
{
    fputs("{\n  \"graph\": ", f);
    drv_json_string(f, s->g->name);
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        fputs(",\n  ", f);
        sections[i].json(s, f);
    }
    fputs("\n}\n", f);
}

int cmd_stats(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(stats_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-') {
            return drv_usage("stats", "unknown option '%s'", argv[i]);
        } else if (path) {
            return drv_usage("stats", "one graph at a time ('%s' and '%s')", path, argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path)
        return drv_usage("stats", "no graph given");
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml_opts(path, true, &err);
    if (!g)
        return drv_fail(&err);
    stats s;
    if (gather(g, &s)) {
        ntc_graph_free(g);
        return drv_failf("out of memory");
    }
    s.peak_bytes = ntc_plan_peak_bytes(g, &s.naive_bytes, &err);
    s.nt = ntc_nt_analyze(g, &err);
    if (s.nt && s.nt->n_layers && g->weights) {
        /* The alphas live in the weights file; without it the table shows '?'. */
        char *w = ntc_path_sibling(path, g->weights);
        s.have_alphas = w && ntc_weights_load(g, w, &err) == 0;
        if (!s.have_alphas)
            fprintf(stderr, "ntc: warning: alphas unknown: %s\n", ntc_err_str(&err));
        ntc_free(w);
    }
    if (json)
        report_json(&s, stdout);
    else
        report_text(&s, stdout);
    free(s.rows);
    ntc_nt_free(s.nt);
    ntc_graph_free(g);
    return 0;
}
