/* The pass API's helpers: what a running pass asks the manager (options,
 * mode, report stream) and graph edits that ir.h leaves to its callers. */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the pass context ----------------------------------------------------- */

unsigned ntc_pass_mode(const ntc_pass_ctx *ctx) { return ctx->mode; }
int ntc_pass_verbosity(const ntc_pass_ctx *ctx) { return ctx->verbosity; }
FILE *ntc_pass_out(const ntc_pass_ctx *ctx) { return ctx->out ? ctx->out : stdout; }

const char *ntc_pass_opt(const ntc_pass_ctx *ctx, const char *key)
{
    for (int i = 0; i < ctx->n_opts; i++)
        if (!strcmp(ctx->opts[i].key, key))
            return ctx->opts[i].value;
    return NULL;
}

int ntc_pass_opt_double(const ntc_pass_ctx *ctx, const char *key, double def,
                        double *out, ntc_err *err)
{
    const char *s = ntc_pass_opt(ctx, key);
    if (!s) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v))
        return ntc_error(err, NULL, 0, "option '%s' expects a number, got '%s'", key, s);
    *out = v;
    return 0;
}

int ntc_pass_opt_int(const ntc_pass_ctx *ctx, const char *key, long def,
                     long *out, ntc_err *err)
{
    const char *s = ntc_pass_opt(ctx, key);
    if (!s) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno)
        return ntc_error(err, NULL, 0, "option '%s' expects an integer, got '%s'", key, s);
    *out = v;
    return 0;
}

/* ---- graph helpers ------------------------------------------------------------ */

int ntc_value_users(const ntc_graph *g, int v, int *nodes, int max)
{
    int count = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] == v) {
                if (count < max)
                    nodes[count] = i;
                count++;
                break;
            }
    }
    return count;
}

int ntc_node_set_inputs(ntc_graph *g, int node, const int *in, int n_in)
{
    int *ins = ntc_arena_alloc(g->arena, sizeof(int) * (size_t)(n_in > 0 ? n_in : 1));
    if (!ins)
        return -1;
    memcpy(ins, in, sizeof(int) * (size_t)n_in);
    g->nodes[node].in = ins;
    g->nodes[node].n_in = n_in;
    return 0;
}

static const ntc_attr_spec *find_attr(ntc_op op, const char *attr)
{
    for (const ntc_attr_spec *s = ntc_ops[op].attrs; s->name; s++)
        if (!strcmp(s->name, attr))
            return s;
    return NULL;
}

static int attr_len(const ntc_attr_spec *s)
{
    return s->type == NTC_ATTR_INT2 ? 2 : s->type == NTC_ATTR_INT4 ? 4 : 1;
}

int ntc_node_get_attr(const ntc_graph *g, int node, const char *attr, double *vals, int max)
{
    const ntc_node *n = &g->nodes[node];
    const ntc_attr_spec *s = find_attr(n->op, attr);
    if (!s)
        return -1;
    const char *p = (const char *)&n->a + s->offset;
    int len = attr_len(s);
    for (int i = 0; i < len && i < max; i++)
        vals[i] = s->type == NTC_ATTR_FLOAT ? ((const float *)(const void *)p)[i]
                                            : ((const int *)(const void *)p)[i];
    return len;
}

int ntc_node_set_attr(ntc_graph *g, int node, const char *attr, const double *vals, int n,
                      ntc_err *err)
{
    ntc_node *nd = &g->nodes[node];
    const ntc_attr_spec *s = find_attr(nd->op, attr);
    if (!s)
        return ntc_node_error(err, g, node, "%s has no attribute '%s'", ntc_op_name(nd->op), attr);
    int len = attr_len(s);
    if (n != 1 && n != len)
        return ntc_node_error(err, g, node, "attribute '%s' takes 1 or %d values, got %d", attr, len, n);
    for (int i = 0; i < n; i++)
        if (s->type != NTC_ATTR_FLOAT &&
            (vals[i] != floor(vals[i]) || fabs(vals[i]) > 2147483647.0))
            return ntc_node_error(err, g, node, "attribute '%s' takes integers, got %g", attr, vals[i]);
    char *p = (char *)&nd->a + s->offset;
    for (int i = 0; i < len; i++) {
        double v = vals[n == 1 ? 0 : i];
        if (s->type == NTC_ATTR_FLOAT)
            ((float *)(void *)p)[i] = (float)v;
        else
            ((int *)(void *)p)[i] = (int)v;
    }
    return 0;
}

int ntc_node_error(ntc_err *err, const ntc_graph *g, int node, const char *fmt, ...)
{
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const ntc_node *n = &g->nodes[node];
    return ntc_error(err, g->path, n->line, "node '%s' (%s): %s", n->name, ntc_op_name(n->op), msg);
}

float *ntc_param_data_alloc(ntc_graph *g, int v, ntc_err *err)
{
    ntc_value *val = &g->values[v];
    if (val->kind != NTC_VAL_PARAM || val->shape.rank == 0) {
        ntc_error(err, g->path, 0, "parameter '%s' has no known shape to allocate", val->name);
        return NULL;
    }
    float *data = ntc_calloc((size_t)ntc_shape_numel(&val->shape), sizeof(float));
    if (!data) {
        ntc_error(err, g->path, 0, "out of memory for parameter '%s'", val->name);
        return NULL;
    }
    if (val->owned)
        ntc_free(val->data);
    val->data = data;
    val->owned = true;
    return data;
}
