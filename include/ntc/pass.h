/* ntc/pass.h - optimisation passes: the public, versioned pass API.
 *
 * A pass is a function over an ntc_graph with a name.  Built-in passes
 * (in passes/) and passes loaded from plugins (`ntc opt --load-pass
 * my.so`) are written against this header and nothing else, and run
 * under the same pass manager.
 *
 * Tutorial: a pass that removes every relu that follows another relu.
 *
 *   #include <ntc/pass.h>
 *
 *   static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
 *   {
 *       (void)ctx, (void)err;
 *       int changed = 0;
 *       for (int i = 0; i < g->n_nodes; i++) {        // iterate nodes
 *           ntc_node *n = &g->nodes[i];
 *           if (n->dead || n->op != NTC_OP_relu)
 *               continue;
 *           int p = g->values[n->in[0]].producer;      // -1 for inputs
 *           if (p < 0 || g->nodes[p].op != NTC_OP_relu)
 *               continue;
 *           ntc_graph_replace_uses(g, n->out, n->in[0]); // rewire readers
 *           ntc_graph_remove_node(g, i);               // node + its output
 *           changed = 1;
 *       }
 *       return changed;        // 1 changed, 0 unchanged, -1 error (err filled)
 *   }
 *
 *   static const ntc_pass relu_relu = {
 *       .api_version = NTC_PASS_API_VERSION,
 *       .name = "relu-relu",
 *       .description = "remove a relu that reads a relu",
 *       .modes = NTC_PASS_ANY,
 *       .fixed_point = true,   // rerun until it returns 0
 *       .run = run,
 *   };
 *   NTC_PASS_PLUGIN(&relu_relu);                        // the plugin's entry
 *
 *   $ cc -shared -fPIC -o relu_relu.so relu_relu.c $(pkg-config --cflags ntc)
 *   $ ntc opt in.xml --load-pass ./relu_relu.so --passes=relu-relu,dce -o out.xml
 *
 * docs/passes.md walks through a longer example.
 *
 * What a pass may rely on and must guarantee:
 * - On entry the graph is valid and every value's shape is inferred
 *   (g->values[v].shape).  After a pass changed the graph, the manager
 *   infers shapes again before the next pass; a pass that needs the shapes
 *   of nodes it just created calls ntc_graph_infer_shapes itself.
 * - On return the graph must pass ntc_graph_verify.  Under --verify-each
 *   (the default in debug builds) a graph left invalid is reported as
 *   "pass 'NAME' left an invalid graph: <what the verifier found>".
 * - Removed nodes and values are only marked dead (n->dead, v->dead) and
 *   skipped by every reader; handles stay valid until ntc_graph_compact,
 *   which renumbers everything.  Call it last, if at all (dce does).
 * - Adding values, nodes or blocks may move g->values, g->nodes and
 *   g->blocks: take pointers into them again after an ntc_graph_add_*.
 *   Names are unique (ntc_graph_add_node returns -1 for a taken one).
 * - A pass owns nothing of the graph's memory; parameter data it creates
 *   comes from ntc_param_data_alloc so the graph frees it.
 * - Errors: fill err (ntc_node_error gives the node's source location)
 *   and return -1.  Never print errors or exit.  Analysis passes print
 *   their reports to ntc_pass_out(ctx).
 *
 * The graph-editing API lives in ntc/ir.h.  Iterate g->nodes[0..n_nodes)
 * and g->blocks[0..n_blocks) skipping dead entries; a node's block is
 * n->block (-1 outside blocks).  Edit with ntc_graph_add_node,
 * ntc_node_add_param, ntc_graph_add_block, ntc_graph_replace_uses,
 * ntc_graph_count_uses, ntc_graph_remove_node, ntc_graph_compact,
 * ntc_graph_topo_order, ntc_graph_infer_shapes, ntc_node_macs,
 * ntc_node_params; attributes are fields of n->a (ntc_attrs), parameter
 * slots are n->par[] in the op's row order (ntc_ops[op].params), weights
 * are g->values[v].data (float32, row-major, ntc_shape_numel elements).
 * This header adds the helpers below for what ir.h leaves to the caller.
 *
 * Versioning: NTC_PASS_API_VERSION covers this header and the layout of
 * the structures of ntc/ir.h that a pass reads directly.  It is bumped
 * whenever either changes incompatibly; a plugin built for another
 * version is refused at load time with a message naming both versions.
 * As a second line of defence a plugin also records NTC_PASS_LAYOUT, a
 * fingerprint of the struct sizes and the number of ops, so a plugin built
 * against changed headers is refused even if somebody forgot the bump.
 */
#ifndef NTC_PASS_H
#define NTC_PASS_H

#include <stdbool.h>
#include <stdio.h>

#include "ntc/ir.h"

#define NTC_PASS_API_VERSION 1

/* The kinds of graph a pass applies to (ntc_pass.modes, a bit set). */
#define NTC_PASS_TRAINING  1u    /* graphs that will be trained further */
#define NTC_PASS_INFERENCE 2u    /* fixed graphs that only run forward */
#define NTC_PASS_ANY       (NTC_PASS_TRAINING | NTC_PASS_INFERENCE)

/* What the pass manager gives a running pass (opaque: read it through the
 * accessors below, so it can grow without breaking plugins). */
typedef struct ntc_pass_ctx ntc_pass_ctx;

/* One option a pass accepts: given in a pipeline as NAME:KEY=VALUE. */
typedef struct {
    const char *name;
    const char *help;            /* one line, shown by `ntc opt --list-passes` */
} ntc_pass_option;

/* A pass descriptor.  The layout is part of the versioned API. */
typedef struct ntc_pass {
    int api_version;             /* NTC_PASS_API_VERSION */
    const char *name;            /* letters, digits, '-', '_', '.' */
    const char *description;     /* one line */
    unsigned modes;              /* NTC_PASS_TRAINING and/or NTC_PASS_INFERENCE */
    bool fixed_point;            /* rerun until it reports no change (bounded) */
    const ntc_pass_option *options; /* NULL, or an array ending with {NULL} */
    /* Returns 1 if it changed the graph, 0 if not, -1 on error (err filled). */
    int (*run)(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err);
} ntc_pass;

/* ---- what a running pass can ask the manager ----------------------------- */

/* The mode of the pipeline: NTC_PASS_TRAINING or NTC_PASS_INFERENCE. */
unsigned ntc_pass_mode(const ntc_pass_ctx *ctx);
/* 0 by default; each -v on the command line adds one. */
int ntc_pass_verbosity(const ntc_pass_ctx *ctx);
/* Where analysis passes print their reports (stdout for `ntc opt`). */
FILE *ntc_pass_out(const ntc_pass_ctx *ctx);
/* The value given for option `key`, or NULL if it was not given.  The
 * manager has already refused keys the descriptor does not list. */
const char *ntc_pass_opt(const ntc_pass_ctx *ctx, const char *key);
/* The option as a number / integer, `def` when absent.  A malformed value
 * returns -1 with err filled ("option 'KEY' expects a number, got 'x'"). */
int ntc_pass_opt_double(const ntc_pass_ctx *ctx, const char *key, double def,
                        double *out, ntc_err *err);
int ntc_pass_opt_int(const ntc_pass_ctx *ctx, const char *key, long def,
                     long *out, ntc_err *err);

/* ---- graph helpers for pass writers ---------------------------------------- */

/* Live nodes reading value v as an activation input, each listed once, in
 * node order.  Writes at most `max` handles to `nodes` (may be NULL when
 * max is 0) and returns how many there are in total. */
int ntc_value_users(const ntc_graph *g, int v, int *nodes, int max);
/* Replaces the activation inputs of a node (the old array stays in the
 * graph's arena).  Returns 0, or -1 when out of memory. */
int ntc_node_set_inputs(ntc_graph *g, int node, const int *in, int n_in);
/* Reads attribute `attr` (its XML name, e.g. "kernel") of a node into
 * vals[0..]; returns the number of elements (1, 2 or 4), or -1 if the op
 * has no such attribute.  Writes at most max elements. */
int ntc_node_get_attr(const ntc_graph *g, int node, const char *attr, double *vals, int max);
/* Sets attribute `attr` from n values: n == 1 broadcasts to every element,
 * otherwise n must equal the attribute's element count.  Integer
 * attributes must get integral values.  Returns 0, or -1 with err filled
 * (unknown attribute, wrong count, non-integer). */
int ntc_node_set_attr(ntc_graph *g, int node, const char *attr, const double *vals, int n,
                      ntc_err *err);
/* Fills err with "node 'NAME' (OP): <formatted>" at the node's source
 * location (the graph's file and the node's line, when known); returns -1. */
int ntc_node_error(ntc_err *err, const ntc_graph *g, int node, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Gives parameter v a fresh zeroed buffer of ntc_shape_numel(shape)
 * floats owned by the graph (its old data is released), and returns it;
 * the shape must be set (infer shapes first for new parameters).  NULL
 * with err filled when the shape is unknown or memory runs out. */
float *ntc_param_data_alloc(ntc_graph *g, int v, ntc_err *err);

/* ---- plugins -------------------------------------------------------------------- */

/* A fingerprint of the layout of the structures a pass reads directly. */
#define NTC_PASS_LAYOUT                                                                    \
    ((((((((unsigned long)sizeof(ntc_graph) * 131u + sizeof(ntc_node)) * 131u +           \
          sizeof(ntc_value)) * 131u + sizeof(ntc_block)) * 131u + sizeof(ntc_attrs)) *    \
       131u + sizeof(ntc_op_info)) * 131u + sizeof(ntc_pass)) * 131u + NTC_OP_COUNT)

/* What a plugin exports under the name ntc_pass_plugin_info.  The version
 * comes first and is read before anything else, so a future ntc can
 * refuse an old plugin without misreading the rest. */
typedef struct ntc_pass_plugin {
    int api_version;             /* NTC_PASS_API_VERSION of the headers it was built with */
    unsigned long layout;        /* NTC_PASS_LAYOUT of those headers */
    const ntc_pass *const *passes; /* NULL-terminated */
} ntc_pass_plugin;

#define NTC_PASS_PLUGIN_SYMBOL "ntc_pass_plugin_info"

/* Declares a plugin's passes: NTC_PASS_PLUGIN(&pass_a, &pass_b);
 * at file scope, once per plugin. */
#define NTC_PASS_PLUGIN(...)                                                               \
    __attribute__((visibility("default"))) const ntc_pass_plugin ntc_pass_plugin_info = { \
        NTC_PASS_API_VERSION, NTC_PASS_LAYOUT, (const ntc_pass *const[]){__VA_ARGS__, NULL}}

/* ---- hosts: the registry, pipelines and the manager ---------------------------- */

typedef struct ntc_pass_registry ntc_pass_registry;

/* A registry holding the built-in passes.  NULL with err filled when out
 * of memory. */
ntc_pass_registry *ntc_pass_registry_new(ntc_err *err);
/* Frees the registry and unloads its plugins (descriptors from plugins
 * are gone afterwards). */
void ntc_pass_registry_free(ntc_pass_registry *r);
/* Adds a pass.  The descriptor is borrowed and must outlive the registry.
 * Refuses another API version, a malformed descriptor (name, modes, run,
 * option names) and a name already registered. */
int ntc_pass_register(ntc_pass_registry *r, const ntc_pass *p, ntc_err *err);
/* dlopens a plugin (a path; a bare file name means ./NAME), checks its
 * version and layout and registers its passes.  Returns the number of
 * passes added, or -1 with err naming the file (missing file, no
 * ntc_pass_plugin_info symbol, version or layout mismatch, bad pass). */
int ntc_pass_load_plugin(ntc_pass_registry *r, const char *path, ntc_err *err);
/* The pass registered under `name`, or NULL. */
const ntc_pass *ntc_pass_find(const ntc_pass_registry *r, const char *name);
/* Registered passes in registration order (built-ins first); *origin
 * (if non-NULL) gets NULL for a built-in pass, else the plugin's path. */
int ntc_pass_count(const ntc_pass_registry *r);
const ntc_pass *ntc_pass_at(const ntc_pass_registry *r, int i, const char **origin);

/* A parsed pipeline: "NAME[:KEY=VALUE]...[,NAME...]", e.g.
 * "drop-small-task-blocks:below=0.02,dce". */
typedef struct ntc_pipeline ntc_pipeline;

/* Parses the text against the registry (which must outlive the pipeline).
 * Errors: empty pipeline or item, unknown pass (the message lists the
 * known ones), option not accepted by the pass, malformed or repeated
 * option. */
ntc_pipeline *ntc_pipeline_parse(const ntc_pass_registry *r, const char *text, ntc_err *err);
void ntc_pipeline_free(ntc_pipeline *p);

typedef struct {
    unsigned mode;               /* NTC_PASS_INFERENCE (default) or NTC_PASS_TRAINING */
    bool verify_each;            /* verify after every pass; default: on unless NDEBUG */
    const char *dump_after;      /* NULL, a pass of the pipeline, or "all" */
    const char *dump_prefix;     /* dumps go to PREFIX.after-NN-PASS.xml (+ .safetensors) */
    FILE *out;                   /* reports of analysis passes; NULL means stdout */
    int verbosity;
} ntc_pipeline_opts;

void ntc_pipeline_opts_default(ntc_pipeline_opts *o);

/* Runs the passes in order on g.  A fixed-point pass is rerun until it
 * reports no change (at most NTC_PASS_MAX_ROUNDS runs).  Refuses a pass
 * whose modes exclude o->mode before running anything.  The graph is
 * verified at the end whatever verify_each says, so success means a valid
 * graph.  Returns 0, or -1 with err saying which pass failed and how (the
 * graph is then in whatever state that pass left it). */
int ntc_pipeline_run(ntc_pipeline *p, ntc_graph *g, const ntc_pipeline_opts *o, ntc_err *err);

#define NTC_PASS_MAX_ROUNDS 64

/* Items of the pipeline and, after a run, what each did. */
int ntc_pipeline_length(const ntc_pipeline *p);
const ntc_pass *ntc_pipeline_pass(const ntc_pipeline *p, int i);
int ntc_pipeline_runs(const ntc_pipeline *p, int i);       /* times run() was called */
bool ntc_pipeline_changed(const ntc_pipeline *p, int i);   /* some run returned 1 */
/* The wall time of each pass (and of the verifier) of the last run, as a
 * table: what `--time-passes` prints on stderr. */
void ntc_pipeline_print_times(const ntc_pipeline *p, FILE *f);

/* Convenience for commands built on passes (tailor, prune): built-in
 * passes only, default options but the given mode.  0 or -1 with err. */
int ntc_run_passes(ntc_graph *g, const char *pipeline, unsigned mode, ntc_err *err);

#endif
