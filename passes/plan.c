/* plan: the static buffer plan of a graph, as a pass.
 *
 * Analysis only (the graph is not changed): computes the plan the
 * interpreter and `ntc stats` use (ntc/plan.h: lifetimes from the
 * topological schedule, one arena shared by values whose lifetimes do not
 * overlap), records its size in the graph's metadata ("plan.peak-bytes"
 * and "plan.naive-bytes", per batch item) so later tools read it without
 * planning again, and prints a summary; with -v, every value's step range
 * and arena offset. */
#include "ntc/pass.h"
#include "ntc/plan.h"

#include <inttypes.h>
#include <stdio.h>

static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    ntc_plan *p = ntc_plan_new(g, err);
    if (!p)
        return -1;
    FILE *out = ntc_pass_out(ctx);
    int64_t peak = 4 * (p->arena_floats + p->output_floats), naive = 4 * p->naive_floats;
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, peak);
    int rc = ntc_graph_set_meta(g, "plan.peak-bytes", buf);
    snprintf(buf, sizeof buf, "%" PRId64, naive);
    rc = rc ? rc : ntc_graph_set_meta(g, "plan.naive-bytes", buf);
    if (rc) {
        ntc_plan_free(p);
        return ntc_error(err, NULL, 0, "out of memory");
    }
    fprintf(out, "plan: %d steps, %" PRId64 " bytes of activations per item (arena %" PRId64
                 " + outputs %" PRId64 "), %" PRId64 " without sharing\n",
            p->n_steps, peak, 4 * p->arena_floats, 4 * p->output_floats, naive);
    if (ntc_pass_verbosity(ctx) > 0)
        for (int v = 0; v < g->n_values; v++)
            if (!g->values[v].dead && p->first[v] >= 0)
                fprintf(out, "  %-32s steps %3d..%-3d  offset %10" PRId64 "  floats %10" PRId64 "\n",
                        g->values[v].name, p->first[v], p->last[v], p->offset[v], p->size[v]);
    ntc_plan_free(p);
    return 0;
}

const ntc_pass ntc_pass_plan = {
    .api_version = NTC_PASS_API_VERSION,
    .name = "plan",
    .description = "static buffer plan: activation memory per item (recorded in the metadata; -v lists offsets)",
    .modes = NTC_PASS_ANY,
    .fixed_point = false,
    .options = NULL,
    .run = run,
};
