/* Pass plugins that are wrong on purpose, one per VARIANT_* macro, for the
 * passes suite: the loader and the manager must refuse or blame each one
 * with a clear message. */
#include "ntc/pass.h"

#if defined(VARIANT_UNRESOLVED)
/* Calls a function no ntc has: RTLD_NOW must refuse it at load time. */
int ntc_no_such_function(ntc_graph *g);

static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)ctx, (void)err;
    return ntc_no_such_function(g);
}
#else
/* Removes the first relu without rewiring its readers: the graph left
 * behind reads a value that no longer exists. */
static int run(ntc_graph *g, const ntc_pass_ctx *ctx, ntc_err *err)
{
    (void)ctx, (void)err;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].op == NTC_OP_relu) {
            ntc_graph_remove_node(g, i);
            return 1;
        }
    return 0;
}
#endif

static const ntc_pass pass = {
    .api_version = NTC_PASS_API_VERSION,
#if defined(VARIANT_DUPLICATE)
    .name = "dce",                       /* taken by the built-in pass */
#else
    .name = "unwire-relu",
#endif
    .description = "remove the first relu and leave its readers dangling",
    .modes = NTC_PASS_ANY,
    .run = run,
};

#if defined(VARIANT_FUTURE_API)
/* What a plugin built against the headers of a later ntc exports. */
__attribute__((visibility("default"))) const ntc_pass_plugin ntc_pass_plugin_info = {
    NTC_PASS_API_VERSION + 1, NTC_PASS_LAYOUT, (const ntc_pass *const[]){&pass, NULL}};
#elif defined(VARIANT_OTHER_LAYOUT)
/* Same version, but IR structures of another size: headers changed
 * without the version bump. */
__attribute__((visibility("default"))) const ntc_pass_plugin ntc_pass_plugin_info = {
    NTC_PASS_API_VERSION, NTC_PASS_LAYOUT + 1, (const ntc_pass *const[]){&pass, NULL}};
#elif defined(VARIANT_NO_ENTRY)
/* Defines a pass but forgets NTC_PASS_PLUGIN. */
const ntc_pass *plugin_pass = &pass;
#else /* VARIANT_BROKEN, VARIANT_DUPLICATE, VARIANT_UNRESOLVED */
NTC_PASS_PLUGIN(&pass);
#endif
