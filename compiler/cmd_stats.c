/* ntc stats: what a graph costs, per block and in total.
 *
 * The report is a list of sections; each section is one function for the
 * text table and one for its JSON member, both reading the same gathered
 * numbers (struct stats).  Later sections (alphas per layer, expected
 * complexity, peak activation memory) are a gather step plus a row in
 * `sections`. */
#include "driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char stats_help[] =
    "usage: ntc stats GRAPH.xml [--json]\n"
    "\n"
    "Prints per block: role, whether it is frozen, live nodes, learnable\n"
    "parameters, multiply-accumulates per image (conv2d, linear, mix) and the\n"
    "block's share of all MACs; nodes outside blocks form the row \"(no block)\".\n"
    "Then the totals, with the parameters of universal and of task blocks.\n"
    "The weights file is not read.\n"
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

/* "1234567" -> "1,234,567" */
static const char *grouped(int64_t v, char buf[32])
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%lld", (long long)(v < 0 ? -v : v));
    int at = 0;
    if (v < 0)
        buf[at++] = '-';
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0)
            buf[at++] = ',';
        buf[at++] = digits[i];
    }
    buf[at] = 0;
    return buf;
}

/* "1.81 G", "272.2 K": the magnitude at a glance, next to the exact count. */
static const char *human(int64_t v, char buf[32])
{
    static const char units[] = " KMGT";
    double x = (double)v;
    int u = 0;
    while (x >= 1000 && u < 4)
        x /= 1000, u++;
    if (u == 0)
        snprintf(buf, 32, "%lld", (long long)v);
    else
        snprintf(buf, 32, "%.*f %c", x < 10 ? 2 : 1, x, units[u]);
    return buf;
}

static double share(int64_t part, int64_t whole) { return whole ? (double)part / (double)whole : 0.0; }

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

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
                r->frozen ? "yes" : "no", r->nodes, grouped(r->params, p), grouped(r->macs, m),
                100.0 * share(r->macs, s->macs));
    }
}

static void blocks_json(const stats *s, FILE *f)
{
    fputs("\"blocks\": [", f);
    for (int i = 0; i < s->n_rows; i++) {
        const block_row *r = &s->rows[i];
        fputs(i ? ",\n    {\"name\": " : "\n    {\"name\": ", f);
        json_string(f, r->name);
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
    fprintf(f, "params      %15s  (%s; universal %s, task %s", grouped(s->params, a), human(s->params, b),
            grouped(s->params_by_role[NTC_ROLE_UNIVERSAL], c), grouped(s->params_by_role[NTC_ROLE_TASK], d));
    if (s->params_by_role[NTC_ROLE_NONE])
        fprintf(f, ", outside blocks %s", grouped(s->params_by_role[NTC_ROLE_NONE], e));
    fputs(")\n", f);
    fprintf(f, "MACs/image  %15s  (%s)\n", grouped(s->macs, a), human(s->macs, b));
}

static void totals_json(const stats *s, FILE *f)
{
    fprintf(f, "\"totals\": {\"params\": %lld, \"macs\": %lld, \"universal_params\": %lld, "
               "\"task_params\": %lld, \"other_params\": %lld}",
            (long long)s->params, (long long)s->macs, (long long)s->params_by_role[NTC_ROLE_UNIVERSAL],
            (long long)s->params_by_role[NTC_ROLE_TASK], (long long)s->params_by_role[NTC_ROLE_NONE]);
}

/* ---- the report ---------------------------------------------------------------- */

static const struct {
    void (*text)(const stats *, FILE *);
    void (*json)(const stats *, FILE *);    /* writes one `"key": value` member */
} sections[] = {
    {blocks_text, blocks_json},
    {totals_text, totals_json},
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
    json_string(f, s->g->name);
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
    if (json)
        report_json(&s, stdout);
    else
        report_text(&s, stdout);
    free(s.rows);
    ntc_graph_free(g);
    return 0;
}
