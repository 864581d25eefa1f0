/* ONNX import: a ModelProto (parsed by protobuf-c, whose C code is
 * generated at build time from the onnx.proto that Debian's libonnx-dev
 * ships) becomes an ntc graph with its weights.
 *
 * The walk follows the file's node order, which ONNX requires to be
 * topological.  An environment maps every ONNX value name to what it
 * stands for in ntc: an activation (a graph input or a node's output) or
 * a constant (an initializer, a Constant node's output, or a shape
 * computation onnx_shapes.c folds).  Constants never become nodes: the
 * translators in onnx_ops.c fold them into the parameters of the ntc
 * node that uses them (Conv weights, Gemm matrices, a bias after MatMul,
 * the target shape of a Reshape).  Identity and multiplication by 1 only
 * rebind a name.  onnx_blocks.c then groups the nodes into the stem, the
 * residual blocks and the classifier head.
 */
#include "onnx_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- protobuf-c allocation through ntc's allocator (fault injection) ---- */

/* allocator_data points to a bool set when an allocation fails, which
 * protobuf-c's unpack does not report apart from malformed input. */
static void *pb_alloc(void *failed, size_t size)
{
    void *p = ntc_malloc(size ? size : 1);
    if (!p)
        *(bool *)failed = true;
    return p;
}

static void pb_free(void *failed, void *p)
{
    (void)failed;
    ntc_free(p);
}

/* ---- errors ---- */

const char *onnx_node_label(const Onnx__NodeProto *np)
{
    if (np->name && *np->name)
        return np->name;
    if (np->n_output && *np->output[0])
        return np->output[0];
    return "(unnamed)";
}

int onnx_node_fail(onnx_importer *im, const Onnx__NodeProto *np, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ntc_error(im->err, im->file, 0, "node '%s' (%s): %s", onnx_node_label(np), np->op_type, msg);
}

/* ---- the environment ---- */

onnx_binding *onnx_lookup(onnx_importer *im, const char *name)
{
    /* Latest first: ONNX names are unique (SSA), so this only matters for
     * an invalid model that redefines a name, where the newest wins. */
    for (int i = im->n_env - 1; i >= 0; i--)
        if (!strcmp(im->env[i].name, name))
            return &im->env[i];
    return NULL;
}

static int bind(onnx_importer *im, const char *name, int value, int constant)
{
    if (ntc_grow((void **)&im->env, &im->cap_env, im->n_env + 1, sizeof(onnx_binding)))
        return ntc_error(im->err, im->file, 0, "out of memory");
    im->env[im->n_env++] = (onnx_binding){name, value, constant, 0};
    return 0;
}

/* Takes ownership of *c's data (also on failure). */
static int add_const(onnx_importer *im, const char *name, onnx_const *c)
{
    if (ntc_grow((void **)&im->consts, &im->cap_consts, im->n_consts + 1, sizeof(onnx_const))) {
        onnx_const_free(c);
        return ntc_error(im->err, im->file, 0, "out of memory");
    }
    im->consts[im->n_consts] = *c;
    return bind(im, name, -1, im->n_consts++);
}

static int output_name(onnx_importer *im, const Onnx__NodeProto *np, const char **out)
{
    if (np->n_output < 1 || !*np->output[0])
        return onnx_node_fail(im, np, "the node has no output");
    for (size_t k = 1; k < np->n_output; k++)
        if (*np->output[k])
            return onnx_node_fail(im, np, "output %zu ('%s') is not supported: ntc reads only the first output",
                                  k + 1, np->output[k]);
    *out = np->output[0];
    return 0;
}

int onnx_bind_act(onnx_importer *im, const Onnx__NodeProto *np, int v)
{
    const char *name = NULL;
    return output_name(im, np, &name) ? -1 : bind(im, name, v, -1);
}

int onnx_bind_same(onnx_importer *im, const Onnx__NodeProto *np, const onnx_binding *b)
{
    const char *name = NULL;
    int value = b->value, constant = b->constant; /* b may move when env grows */
    return output_name(im, np, &name) ? -1 : bind(im, name, value, constant);
}

int onnx_value_uses(const onnx_importer *im, int v)
{
    int uses = 0;
    for (int k = 0; k < im->n_env; k++)
        if (im->env[k].value == v)
            uses += im->env[k].uses;
    return uses;
}

int onnx_bind_const(onnx_importer *im, const Onnx__NodeProto *np, onnx_const *c)
{
    const char *name = NULL;
    if (output_name(im, np, &name)) {
        onnx_const_free(c);
        return -1;
    }
    return add_const(im, name, c);
}

bool onnx_has_input(const Onnx__NodeProto *np, size_t i) { return i < np->n_input && *np->input[i]; }

static onnx_binding *input_binding(onnx_importer *im, const Onnx__NodeProto *np, size_t i)
{
    if (!onnx_has_input(np, i)) {
        onnx_node_fail(im, np, "input %zu is missing", i + 1);
        return NULL;
    }
    onnx_binding *b = onnx_lookup(im, np->input[i]);
    if (!b)
        onnx_node_fail(im, np, "input %zu reads '%s', which no graph input, initializer or earlier node defines "
                       "(ONNX lists nodes in topological order)", i + 1, np->input[i]);
    return b;
}

int onnx_input_act(onnx_importer *im, const Onnx__NodeProto *np, size_t i)
{
    onnx_binding *b = input_binding(im, np, i);
    if (!b)
        return -1;
    if (b->value < 0)
        return onnx_node_fail(im, np, "input %zu ('%s') is a constant where ntc needs a computed tensor",
                              i + 1, np->input[i]);
    return b->value;
}

const onnx_const *onnx_input_const(onnx_importer *im, const Onnx__NodeProto *np, size_t i)
{
    onnx_binding *b = input_binding(im, np, i);
    if (!b)
        return NULL;
    if (b->constant < 0) {
        onnx_node_fail(im, np, "input %zu ('%s') must be a constant (an initializer or a Constant node): "
                       "ntc folds it into the node's parameters", i + 1, np->input[i]);
        return NULL;
    }
    return &im->consts[b->constant];
}

/* ---- tensors ---- */

void onnx_const_free(onnx_const *c)
{
    ntc_free(c->f);
    ntc_free(c->i);
    c->f = NULL;
    c->i = NULL;
}

static const char *dtype_name(int32_t t)
{
    static const char *const names[] = {"UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32",
                                        "INT64", "STRING", "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64",
                                        "COMPLEX64", "COMPLEX128", "BFLOAT16"};
    return t >= 0 && (size_t)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

int onnx_tensor_to_const(onnx_importer *im, const Onnx__TensorProto *t, const char *what, onnx_const *out)
{
    memset(out, 0, sizeof *out);
    const char *f = im->file;
    if (t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL || t->n_external_data)
        return ntc_error(im->err, f, 0, "%s: weights in external files are not supported; save the model "
                         "with its weights inside (onnx.save(model, path, save_as_external_data=False))", what);
    if (t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__INT64)
        return ntc_error(im->err, f, 0, "%s has data type %s: ntc reads float32 weights and int64 shapes only",
                         what, dtype_name(t->data_type));
    if (t->n_dims > NTC_MAX_RANK)
        return ntc_error(im->err, f, 0, "%s has rank %zu, more than %d", what, t->n_dims, NTC_MAX_RANK);
    out->is_int = t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    out->rank = (int)t->n_dims;
    out->count = 1;
    for (size_t k = 0; k < t->n_dims; k++) {
        /* 2^31 elements is far beyond any weight ntc can use. */
        if (t->dims[k] < 0 || (t->dims[k] && out->count > (INT64_C(1) << 31) / t->dims[k]))
            return ntc_error(im->err, f, 0, "%s: bad or huge dimension %" PRId64, what, t->dims[k]);
        out->dims[k] = t->dims[k];
        out->count *= t->dims[k];
    }
    size_t elt = out->is_int ? sizeof(int64_t) : sizeof(float);
    size_t have = t->has_raw_data ? t->raw_data.len / elt : out->is_int ? t->n_int64_data : t->n_float_data;
    if ((t->has_raw_data && t->raw_data.len % elt) || have != (size_t)out->count)
        return ntc_error(im->err, f, 0, "%s: %zu %s values for a tensor of %" PRId64 " elements", what,
                         t->has_raw_data ? t->raw_data.len : have, t->has_raw_data ? "bytes of" : "stored",
                         out->count);
    void *data = ntc_malloc(elt * (size_t)(out->count ? out->count : 1));
    if (!data)
        return ntc_error(im->err, f, 0, "out of memory for %s", what);
    /* raw_data is little-endian, as is every host ntc runs on. */
    const void *src = t->has_raw_data ? (const void *)t->raw_data.data
                    : out->is_int ? (const void *)t->int64_data : (const void *)t->float_data;
    if (out->count)
        memcpy(data, src, elt * (size_t)out->count);
    if (out->is_int)
        out->i = data;
    else
        out->f = data;
    return 0;
}

/* ---- nodes ---- */

/* name, made a valid ntc name (no ',' or whitespace or control character)
 * and unique among values by a numeric suffix. */
static char *unique_name(onnx_importer *im, const char *name, char *buf, size_t len)
{
    char base[400];
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && n + 1 < sizeof base; p++)
        base[n++] = *p <= ' ' || *p == 0x7f || *p == ',' ? '_' : (char)*p;
    base[n] = 0;
    snprintf(buf, len, "%s", n ? base : "node");
    for (int k = 2; ntc_graph_find_value(im->g, buf) >= 0 || ntc_graph_find_block(im->g, buf) >= 0; k++)
        snprintf(buf, len, "%s_%d", n ? base : "node", k);
    return buf;
}

int onnx_add_node(onnx_importer *im, const Onnx__NodeProto *np, ntc_op op, const int *ins, int n_in)
{
    char name[512];
    unique_name(im, onnx_node_label(np), name, sizeof name);
    int n = ntc_graph_add_node(im->g, op, name, ins, n_in, -1);
    if (n < 0)
        return ntc_error(im->err, im->file, 0, "out of memory");
    return n;
}

int onnx_infer_node(onnx_importer *im, const Onnx__NodeProto *np, int node)
{
    ntc_graph *g = im->g;
    ntc_node *n = &g->nodes[node];
    ntc_shape in[8], par[NTC_MAX_PARAMS] = {{0}};
    if (n->n_in > 8)
        return onnx_node_fail(im, np, "more than 8 inputs");
    for (int j = 0; j < n->n_in; j++)
        in[j] = g->values[n->in[j]].shape;
    ntc_err e = {0};
    if (ntc_ops[n->op].shape(n, in, &g->values[n->out].shape, par, &e))
        return onnx_node_fail(im, np, "%s", e.msg);
    for (int j = 0; j < NTC_MAX_PARAMS; j++)
        if (n->par[j] >= 0)
            g->values[n->par[j]].shape = par[j];
    return 0;
}

int onnx_set_param(onnx_importer *im, const Onnx__NodeProto *np, int node, const char *slot,
                   const float *data, int64_t count)
{
    ntc_graph *g = im->g;
    int s = ntc_op_param_slot(g->nodes[node].op, slot);
    int v = s < 0 ? -1 : g->nodes[node].par[s];
    if (v < 0) {
        char name[600];
        snprintf(name, sizeof name, "%s.%s", g->nodes[node].name, slot);
        if (ntc_graph_find_value(g, name) >= 0)
            return onnx_node_fail(im, np, "its parameter name '%s' is taken by another value", name);
        if ((v = ntc_node_add_param(g, node, slot, NULL)) < 0)
            return ntc_error(im->err, im->file, 0, "out of memory");
        if (onnx_infer_node(im, np, node))
            return -1;
    }
    ntc_value *pv = &g->values[v];
    if (ntc_shape_numel(&pv->shape) != count) {
        char want[128];
        ntc_shape_format(&pv->shape, want, sizeof want);
        return onnx_node_fail(im, np, "its %s has %" PRId64 " values, the op needs [%s]", slot, count, want);
    }
    float *w = ntc_malloc(sizeof(float) * (size_t)(count ? count : 1));
    if (!w)
        return ntc_error(im->err, im->file, 0, "out of memory");
    memcpy(w, data, sizeof(float) * (size_t)count);
    if (pv->owned)
        ntc_free(pv->data);
    pv->data = w;
    pv->owned = true;
    return 0;
}

/* ---- attributes ---- */

const Onnx__AttributeProto *onnx_attr(const Onnx__NodeProto *np, const char *name)
{
    for (size_t k = 0; k < np->n_attribute; k++)
        if (np->attribute[k]->name && !strcmp(np->attribute[k]->name, name))
            return np->attribute[k];
    return NULL;
}

int onnx_check_attrs(onnx_importer *im, const Onnx__NodeProto *np, const char *const *known)
{
    for (size_t k = 0; k < np->n_attribute; k++) {
        const char *a = np->attribute[k]->name ? np->attribute[k]->name : "";
        bool ok = false;
        for (const char *const *p = known; *p && !ok; p++)
            ok = !strcmp(*p, a);
        if (!ok)
            return onnx_node_fail(im, np, "attribute '%s' is not supported (opset %" PRId64 ")", a, im->opset);
        if (np->attribute[k]->ref_attr_name && *np->attribute[k]->ref_attr_name)
            return onnx_node_fail(im, np, "attribute '%s' refers to a function attribute", a);
    }
    return 0;
}

static int attr_type(onnx_importer *im, const Onnx__NodeProto *np, const Onnx__AttributeProto *a,
                     Onnx__AttributeProto__AttributeType want, const char *what)
{
    /* Old exporters leave `type` unset (0); then the filled field decides. */
    if (a->type != want && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
        return onnx_node_fail(im, np, "attribute '%s' must be %s", a->name, what);
    return 0;
}

int onnx_attr_int(onnx_importer *im, const Onnx__NodeProto *np, const char *name, int64_t def, int64_t *out)
{
    const Onnx__AttributeProto *a = onnx_attr(np, name);
    *out = def;
    if (!a)
        return 0;
    if (attr_type(im, np, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, "an integer"))
        return -1;
    *out = a->i;
    return 0;
}

int onnx_attr_float(onnx_importer *im, const Onnx__NodeProto *np, const char *name, float def, float *out)
{
    const Onnx__AttributeProto *a = onnx_attr(np, name);
    *out = def;
    if (!a)
        return 0;
    if (attr_type(im, np, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, "a float"))
        return -1;
    *out = a->f;
    return 0;
}

int onnx_attr_ints(onnx_importer *im, const Onnx__NodeProto *np, const char *name, int n, int64_t *out,
                   bool *given)
{
    const Onnx__AttributeProto *a = onnx_attr(np, name);
    *given = a != NULL;
    if (!a)
        return 0;
    if (attr_type(im, np, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS, "a list of integers"))
        return -1;
    if (a->n_ints != (size_t)n)
        return onnx_node_fail(im, np, "attribute '%s' has %zu values, expected %d (ntc handles 2-D images)",
                              name, a->n_ints, n);
    for (int k = 0; k < n; k++)
        out[k] = a->ints[k];
    return 0;
}

int onnx_attr_string(onnx_importer *im, const Onnx__NodeProto *np, const char *name, const char *def,
                     const char **out)
{
    const Onnx__AttributeProto *a = onnx_attr(np, name);
    *out = def;
    if (!a)
        return 0;
    if (attr_type(im, np, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING, "a string"))
        return -1;
    if (!a->has_s || memchr(a->s.data, 0, a->s.len))
        return onnx_node_fail(im, np, "attribute '%s' is not a valid string", name);
    /* protobuf-c does not terminate bytes; copy into the graph's arena. */
    char *s = ntc_arena_alloc(im->g->arena, a->s.len + 1);
    if (!s)
        return ntc_error(im->err, im->file, 0, "out of memory");
    memcpy(s, a->s.data, a->s.len);
    *out = s;
    return 0;
}

/* ---- the model ---- */

static int read_opset(onnx_importer *im, const Onnx__ModelProto *m)
{
    im->opset = -1;
    for (size_t k = 0; k < m->n_opset_import; k++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[k];
        if (!o->domain || !*o->domain || !strcmp(o->domain, "ai.onnx"))
            im->opset = o->version;
    }
    if (im->opset < 0)
        return ntc_error(im->err, im->file, 0, "the model imports no opset of the default ONNX domain");
    if (im->opset < ONNX_MIN_OPSET || im->opset > ONNX_MAX_OPSET)
        return ntc_error(im->err, im->file, 0, "opset %" PRId64 " is not supported: ntc reads opsets %d to %d "
                         "(re-export the model, e.g. torch.onnx.export(..., opset_version=13))",
                         im->opset, ONNX_MIN_OPSET, ONNX_MAX_OPSET);
    return 0;
}

static int read_initializers(onnx_importer *im, const Onnx__GraphProto *gp)
{
    if (gp->n_sparse_initializer)
        return ntc_error(im->err, im->file, 0, "sparse initializers are not supported");
    for (size_t k = 0; k < gp->n_initializer; k++) {
        const Onnx__TensorProto *t = gp->initializer[k];
        if (!t->name || !*t->name)
            return ntc_error(im->err, im->file, 0, "initializer %zu has no name", k + 1);
        char what[400];
        snprintf(what, sizeof what, "initializer '%s'", t->name);
        onnx_const c;
        if (onnx_tensor_to_const(im, t, what, &c) || add_const(im, t->name, &c))
            return -1;
    }
    return 0;
}

/* A graph input's shape: dimension 0 is the batch (symbolic or not), the
 * others must be fixed sizes. */
static int input_shape(onnx_importer *im, const Onnx__ValueInfoProto *vi, ntc_shape *s)
{
    const Onnx__TypeProto *t = vi->type;
    if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
        return ntc_error(im->err, im->file, 0, "input '%s' is not a tensor", vi->name);
    const Onnx__TypeProto__Tensor *tt = t->tensor_type;
    if (tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return ntc_error(im->err, im->file, 0, "input '%s' has element type %s: ntc runs float32 tensors",
                         vi->name, dtype_name(tt->elem_type));
    if (!tt->shape)
        return ntc_error(im->err, im->file, 0, "input '%s' has no shape", vi->name);
    const Onnx__TensorShapeProto *sp = tt->shape;
    if (sp->n_dim < 1 || sp->n_dim > NTC_MAX_RANK)
        return ntc_error(im->err, im->file, 0, "input '%s' has rank %zu; ntc takes ranks 1 to %d", vi->name,
                         sp->n_dim, NTC_MAX_RANK);
    s->rank = (int)sp->n_dim;
    s->dims[0] = NTC_BATCH;
    if (sp->dim[0]->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && !im->export_batch)
        im->export_batch = sp->dim[0]->dim_value;
    int64_t item = 1;
    for (size_t d = 1; d < sp->n_dim; d++) {
        const Onnx__TensorShapeProto__Dimension *dim = sp->dim[d];
        if (dim->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE || dim->dim_value < 1)
            return ntc_error(im->err, im->file, 0, "input '%s': dimension %zu must be a fixed size (only the "
                             "first, the batch, may be symbolic)", vi->name, d);
        /* One item beyond 2^31 elements is far beyond what ntc runs. */
        if (dim->dim_value > (INT64_C(1) << 31) / item)
            return ntc_error(im->err, im->file, 0, "input '%s' is too large per item", vi->name);
        item *= dim->dim_value;
        s->dims[d] = dim->dim_value;
    }
    return 0;
}

static int read_inputs(onnx_importer *im, const Onnx__GraphProto *gp)
{
    for (size_t k = 0; k < gp->n_input; k++) {
        const Onnx__ValueInfoProto *vi = gp->input[k];
        if (!vi->name || !*vi->name)
            return ntc_error(im->err, im->file, 0, "graph input %zu has no name", k + 1);
        /* Before IR version 4 every initializer is also listed as an input. */
        if (onnx_lookup(im, vi->name))
            continue;
        ntc_shape s;
        char name[512];
        if (input_shape(im, vi, &s))
            return -1;
        unique_name(im, vi->name, name, sizeof name);
        int v = ntc_graph_add_input(im->g, name, &s);
        if (v < 0)
            return ntc_error(im->err, im->file, 0, "out of memory");
        if (bind(im, vi->name, v, -1))
            return -1;
    }
    if (im->g->n_inputs == 0)
        return ntc_error(im->err, im->file, 0, "the graph has no inputs besides its initializers");
    return 0;
}

static int read_outputs(onnx_importer *im, const Onnx__GraphProto *gp)
{
    if (gp->n_output == 0)
        return ntc_error(im->err, im->file, 0, "the graph has no outputs");
    for (size_t k = 0; k < gp->n_output; k++) {
        const char *on = gp->output[k]->name ? gp->output[k]->name : "";
        onnx_binding *b = onnx_lookup(im, on);
        if (!b)
            return ntc_error(im->err, im->file, 0, "graph output '%s' is not computed by any node", on);
        if (b->value < 0 || im->g->values[b->value].kind != NTC_VAL_ACT)
            return ntc_error(im->err, im->file, 0, "graph output '%s' is %s, not computed by a node; ntc "
                             "outputs are node results", on, b->value < 0 ? "a constant" : "a graph input");
        char name[512];
        size_t n = 0;
        for (const unsigned char *p = (const unsigned char *)on; *p && n + 1 < sizeof name; p++)
            name[n++] = *p <= ' ' || *p == 0x7f || *p == ',' ? '_' : (char)*p;
        name[n] = 0;
        if (!n)
            snprintf(name, sizeof name, "output%zu", k + 1);
        for (int o = 0; o < im->g->n_outputs; o++)
            if (!strcmp(im->g->outputs[o].name, name))
                return ntc_error(im->err, im->file, 0, "graph output '%s' is listed twice", name);
        if (ntc_graph_add_output(im->g, name, b->value) < 0)
            return ntc_error(im->err, im->file, 0, "out of memory");
    }
    return 0;
}

/* How often each value is read: the translators fold a bias into the node
 * before it only when that node's result has no other reader. */
static void count_uses(const Onnx__GraphProto *gp, const char *name, int *uses)
{
    *uses = 0;
    for (size_t k = 0; k < gp->n_node; k++)
        for (size_t j = 0; j < gp->node[k]->n_input; j++)
            *uses += !strcmp(gp->node[k]->input[j], name);
    for (size_t k = 0; k < gp->n_output; k++)
        *uses += gp->output[k]->name && !strcmp(gp->output[k]->name, name);
}

static int read_nodes(onnx_importer *im, const Onnx__GraphProto *gp)
{
    for (size_t k = 0; k < gp->n_node; k++) {
        const Onnx__NodeProto *np = gp->node[k];
        if (!np->op_type || !*np->op_type)
            return ntc_error(im->err, im->file, 0, "node %zu has no operator type", k + 1);
        int first = im->n_env;
        if (onnx_translate_node(im, np))
            return -1;
        for (int b = first; b < im->n_env; b++)
            count_uses(gp, im->env[b].name, &im->env[b].uses);
    }
    return 0;
}

static int record_provenance(onnx_importer *im, const Onnx__ModelProto *m)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%" PRId64, im->opset);
    int rc = ntc_graph_set_meta(im->g, "onnx.opset", buf);
    if (!rc && m->producer_name && *m->producer_name) {
        snprintf(buf, sizeof buf, "%s%s%s", m->producer_name, m->producer_version ? " " : "",
                 m->producer_version ? m->producer_version : "");
        rc = ntc_graph_set_meta(im->g, "onnx.producer", buf);
    }
    return rc ? ntc_error(im->err, im->file, 0, "out of memory") : 0;
}

/* The graph's name: the file's base name without its extension. */
static void graph_name(const char *file, char *buf, size_t len)
{
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    snprintf(buf, len, "%s", *base ? base : "onnx");
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf)
        *dot = 0;
}

static int import_model(onnx_importer *im, const Onnx__ModelProto *m)
{
    if (!m->graph)
        return ntc_error(im->err, im->file, 0, "the model has no graph");
    const Onnx__GraphProto *gp = m->graph;
    if (read_opset(im, m) || read_initializers(im, gp) || read_inputs(im, gp))
        return -1;
    for (int b = 0; b < im->n_env; b++)
        count_uses(gp, im->env[b].name, &im->env[b].uses);
    if (read_nodes(im, gp) || read_outputs(im, gp) || record_provenance(im, m) || onnx_assign_blocks(im))
        return -1;
    return ntc_graph_verify(im->g, im->err);
}

ntc_graph *ntc_onnx_import_buffer(const void *data, size_t len, const char *file, ntc_err *err)
{
    bool out_of_memory = false;
    ProtobufCAllocator pb_allocator = {pb_alloc, pb_free, &out_of_memory};
    Onnx__ModelProto *m = onnx__model_proto__unpack(&pb_allocator, len, data);
    if (!m) {
        if (out_of_memory)
            ntc_error(err, file, 0, "out of memory decoding the ONNX model");
        else
            ntc_error(err, file, 0, "not a valid ONNX model: the protobuf data is malformed or truncated "
                      "(%zu bytes)", len);
        return NULL;
    }
    char name[256];
    graph_name(file, name, sizeof name);
    onnx_importer im = {.err = err, .file = file};
    im.g = ntc_graph_new(name);
    int rc = im.g ? import_model(&im, m) : ntc_error(err, file, 0, "out of memory");
    for (int k = 0; k < im.n_consts; k++)
        onnx_const_free(&im.consts[k]);
    ntc_free(im.consts);
    ntc_free(im.env);
    onnx__model_proto__free_unpacked(m, &pb_allocator);
    if (rc) {
        ntc_graph_free(im.g);
        return NULL;
    }
    return im.g;
}

ntc_graph *ntc_onnx_import(const char *path, ntc_err *err)
{
    size_t len;
    char *data = ntc_read_file(path, &len, err);
    if (!data)
        return NULL;
    ntc_graph *g = ntc_onnx_import_buffer(data, len, path, err);
    ntc_free(data);
    return g;
}
