/* The pass manager: runs a pipeline over a graph, with the verifier after
 * each pass, fixed-point iteration, per-pass timing and XML dumps.
 *
 * Blame is precise: the input is verified before the first pass, so an
 * invalid graph found after a pass is that pass's doing and the message
 * names it. */
#include "internal.h"

#include <string.h>
#include <time.h>

void ntc_pipeline_opts_default(ntc_pipeline_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = NTC_PASS_INFERENCE;
#ifdef NDEBUG
    o->verify_each = false;
#else
    o->verify_each = true;
#endif
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *mode_name(unsigned mode)
{
    return mode == NTC_PASS_TRAINING ? "training" : "inference";
}

/* Everything that can be refused before a pass runs. */
static int check_run(const ntc_pipeline *p, const ntc_pipeline_opts *o, ntc_err *err)
{
    if (o->mode != NTC_PASS_TRAINING && o->mode != NTC_PASS_INFERENCE)
        return ntc_error(err, NULL, 0, "pipeline mode must be NTC_PASS_TRAINING or NTC_PASS_INFERENCE");
    for (int i = 0; i < p->n_items; i++) {
        const ntc_pass *ps = p->items[i].pass;
        if (!(ps->modes & o->mode))
            return ntc_error(err, NULL, 0, "pass '%s' applies to %s graphs only, and this pipeline runs in %s mode",
                             ps->name, mode_name(ps->modes), mode_name(o->mode));
    }
    if (o->dump_after && strcmp(o->dump_after, "all")) {
        bool found = false;
        for (int i = 0; i < p->n_items; i++)
            found |= !strcmp(p->items[i].pass->name, o->dump_after);
        if (!found)
            return ntc_error(err, NULL, 0, "--dump-after=%s names no pass of the pipeline", o->dump_after);
    }
    if (o->dump_after && !o->dump_prefix)
        return ntc_error(err, NULL, 0, "dumping after passes needs a file name prefix");
    return 0;
}

/* The check after pass `ps` failed with e: the graph it left is invalid,
 * unless the check itself ran out of memory, which is nobody's fault. */
static int blame(ntc_err *err, const ntc_graph *g, const ntc_pass *ps, const ntc_err *e)
{
    if (!strcmp(e->msg, "out of memory"))
        return ntc_error(err, e->file, e->line, "%s", e->msg);
    return ntc_error(err, g->path, 0, "pass '%s' left an invalid graph: %s", ps->name, e->msg);
}

/* Verifies g after pass ps, timed. */
static int verify_after(ntc_pipeline *p, ntc_graph *g, const ntc_pass *ps, ntc_err *err)
{
    double t0 = now();
    ntc_err e = {0};
    int rc = ntc_graph_verify(g, &e);
    p->verify_seconds += now() - t0;
    return rc ? blame(err, g, ps, &e) : 0;
}

static int dump(ntc_graph *g, const ntc_pipeline_opts *o, int index, const char *name, ntc_err *err)
{
    size_t n = strlen(o->dump_prefix) + strlen(name) + 64;
    char *xml = ntc_malloc(n), *weights = ntc_malloc(n);
    int rc = -1;
    if (!xml || !weights) {
        ntc_error(err, NULL, 0, "out of memory");
    } else {
        snprintf(xml, n, "%s.after-%02d-%s.xml", o->dump_prefix, index + 1, name);
        snprintf(weights, n, "%s.after-%02d-%s.safetensors", o->dump_prefix, index + 1, name);
        ntc_err e = {0};
        rc = ntc_graph_write_xml(g, xml, weights, &e);
        if (rc)
            ntc_error(err, e.file, e.line, "dumping the graph after pass '%s': %s", name, e.msg);
    }
    ntc_free(xml);
    ntc_free(weights);
    return rc;
}

/* Runs one item, rerunning a fixed-point pass until it settles. */
static int run_item(ntc_pipeline *p, ntc_pipeline_item *it, ntc_graph *g,
                    const ntc_pipeline_opts *o, ntc_err *err)
{
    const ntc_pass *ps = it->pass;
    ntc_pass_ctx ctx = {.pass = ps, .mode = o->mode, .verbosity = o->verbosity, .out = o->out,
                        .opts = it->opts, .n_opts = it->n_opts};
    for (;;) {
        ntc_err e = {0};
        double t0 = now();
        int rc = ps->run(g, &ctx, &e);
        it->seconds += now() - t0;
        it->runs++;
        if (rc < 0)
            return ntc_error(err, e.file[0] ? e.file : g->path, e.line, "pass '%s': %s", ps->name,
                             e.msg[0] ? e.msg : "failed without saying why");
        if (rc > 1)
            return ntc_error(err, g->path, 0, "pass '%s' returned %d (1 changed, 0 unchanged, -1 error)",
                             ps->name, rc);
        it->changed |= rc == 1;
        /* Without --verify-each, shape inference is the cheap check that
         * keeps the next pass's view of shapes true. */
        if (o->verify_each) {
            if (verify_after(p, g, ps, err))
                return -1;
        } else if (rc == 1 && ntc_graph_infer_shapes(g, &e)) {
            return blame(err, g, ps, &e);
        }
        if (!ps->fixed_point || rc == 0)
            return 0;
        if (it->runs == NTC_PASS_MAX_ROUNDS)
            return ntc_error(err, g->path, 0, "pass '%s' still changed the graph after %d runs; "
                             "a fixed-point pass must converge", ps->name, NTC_PASS_MAX_ROUNDS);
    }
}

int ntc_pipeline_run(ntc_pipeline *p, ntc_graph *g, const ntc_pipeline_opts *o, ntc_err *err)
{
    ntc_pipeline_opts defaults;
    if (!o) {
        ntc_pipeline_opts_default(&defaults);
        o = &defaults;
    }
    if (check_run(p, o, err))
        return -1;
    for (int i = 0; i < p->n_items; i++) {
        p->items[i].runs = 0;
        p->items[i].changed = false;
        p->items[i].seconds = 0;
    }
    p->verify_seconds = 0;
    p->verified = o->verify_each;
    ntc_err e = {0};
    bool oom;
    if (o->verify_each ? ntc_graph_verify(g, &e) : ntc_graph_infer_shapes(g, &e)) {
        oom = !strcmp(e.msg, "out of memory");
        return ntc_error(err, e.file, e.line, "%s%s", oom ? "" : "the input graph is invalid: ", e.msg);
    }
    for (int i = 0; i < p->n_items; i++) {
        ntc_pipeline_item *it = &p->items[i];
        if (run_item(p, it, g, o, err))
            return -1;
        if (o->dump_after && (!strcmp(o->dump_after, "all") || !strcmp(o->dump_after, it->pass->name)) &&
            dump(g, o, i, it->pass->name, err))
            return -1;
    }
    if (!o->verify_each && ntc_graph_verify(g, &e)) {
        oom = !strcmp(e.msg, "out of memory");
        return ntc_error(err, g->path, 0, "%s%s", oom ? "" : "the graph is invalid after the pipeline "
                         "(rerun with --verify-each to find the pass): ", e.msg);
    }
    return 0;
}

void ntc_pipeline_print_times(const ntc_pipeline *p, FILE *f)
{
    double total = p->verify_seconds;
    for (int i = 0; i < p->n_items; i++)
        total += p->items[i].seconds;
    double pct = total > 0 ? 100.0 / total : 0;
    fprintf(f, "===-- pass timing (wall clock) --===\n");
    fprintf(f, "  %10s  %6s  %4s  %s\n", "seconds", "share", "runs", "pass");
    for (int i = 0; i < p->n_items; i++) {
        const ntc_pipeline_item *it = &p->items[i];
        fprintf(f, "  %10.6f  %5.1f%%  %4d  %s\n", it->seconds, it->seconds * pct, it->runs, it->pass->name);
    }
    if (p->verified)
        fprintf(f, "  %10.6f  %5.1f%%  %4s  %s\n", p->verify_seconds, p->verify_seconds * pct, "", "(verifier)");
    fprintf(f, "  %10.6f  %5.1f%%  %4s  %s\n", total, total > 0 ? 100.0 : 0.0, "", "total");
}

int ntc_run_passes(ntc_graph *g, const char *pipeline, unsigned mode, ntc_err *err)
{
    ntc_pass_registry *r = ntc_pass_registry_new(err);
    if (!r)
        return -1;
    ntc_pipeline *p = ntc_pipeline_parse(r, pipeline, err);
    int rc = -1;
    if (p) {
        ntc_pipeline_opts o;
        ntc_pipeline_opts_default(&o);
        o.mode = mode;
        rc = ntc_pipeline_run(p, g, &o, err);
    }
    ntc_pipeline_free(p);
    ntc_pass_registry_free(r);
    return rc;
}
