/* ntc/ir.h - the dataflow-graph IR of ntc.
 *
 * A graph is three arrays: values, nodes and blocks.  They refer to each
 * other by small integer handles (indices), never by pointers, so that
 * copying, compacting and serialising a graph is array work.
 *
 *   values  every tensor: graph inputs, parameters (weights, batchnorm
 *           statistics, alphas) and node outputs.  Activations have a
 *           symbolic batch dimension (dims[0] == NTC_BATCH).
 *   nodes   one op each (see ops.def), activation inputs `in`, parameter
 *           slots `par` (named by the op's row), exactly one output `out`.
 *   blocks  named groups of nodes with a role: universal blocks are shared
 *           by every task, task blocks belong to one task.
 *
 * Tutorial:
 *
 *   ntc_err err = {0};
 *   ntc_graph *g = ntc_graph_read_xml("backbone.xml", &err);   // + weights
 *   if (!g) { fprintf(stderr, "ntc: error: %s\n", ntc_err_str(&err)); ... }
 *   for (int i = 0; i < g->n_nodes; i++) {
 *       ntc_node *n = &g->nodes[i];
 *       if (n->dead) continue;
 *       printf("%s %s\n", ntc_op_name(n->op), n->name);
 *   }
 *   ntc_graph_write_xml(g, "out.xml", NULL, &err);  // + out.safetensors
 *   ntc_graph_free(g);
 *
 * Library functions never exit: they return NULL / non-zero and fill an
 * ntc_err with the file, line and what is wrong; only the driver exits.
 */
#ifndef NTC_IR_H
#define NTC_IR_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "ntc/util.h"

#define NTC_IR_VERSION 1
#define NTC_MAX_RANK 6
#define NTC_BATCH (-1)           /* the symbolic batch dimension "N" */
#define NTC_MAX_PARAMS 4         /* most parameter slots of any op */

typedef enum {
#define OP(name, min_in, max_in, doc) NTC_OP_##name,
#include "ntc/ops.def"
#undef OP
    NTC_OP_COUNT
} ntc_op;

typedef enum {
    NTC_VAL_INPUT,               /* graph input, fed by the caller */
    NTC_VAL_PARAM,               /* parameter, stored in the weights file */
    NTC_VAL_ACT,                 /* output of a node */
} ntc_value_kind;

typedef enum {
    NTC_ROLE_NONE,               /* node outside any block */
    NTC_ROLE_UNIVERSAL,          /* shared by every task; frozen once tailored */
    NTC_ROLE_TASK,               /* task-specific: proxies, classifier head */
} ntc_role;

typedef struct {
    int rank;
    int64_t dims[NTC_MAX_RANK];  /* dims[0] may be NTC_BATCH */
} ntc_shape;

typedef struct {
    char *name;
    ntc_value_kind kind;
    ntc_shape shape;             /* known after ntc_graph_infer_shapes */
    int producer;                /* node index for NTC_VAL_ACT, else -1 */
    float *data;                 /* parameters: the weights, or NULL */
    bool owned;                  /* data was malloc'ed (else mapped/borrowed) */
    bool dead;                   /* removed; skipped by writers, reclaimed by compact */
} ntc_value;

/* Attributes of every op in one struct; each op's row lists the ones it
 * uses (ntc_op_info.attrs), so readers, writers and verifiers are generic. */
typedef struct {
    int filters;                 /* conv2d: output channels */
    int units;                   /* linear: output features */
    int kernel[2];               /* conv2d, pools: kh, kw */
    int stride[2];               /* conv2d, pools: sh, sw */
    int pad[4];                  /* top, left, bottom, right (ONNX order: begin h,w, end h,w) */
    int dilation[2];             /* conv2d */
    int ceil_mode;               /* pools: 1 rounds output size up */
    int count_include_pad;       /* avgpool */
    int axis;                    /* flatten, softmax (negative counts from the end) */
    float epsilon;               /* batchnorm */
    float momentum;              /* batchnorm: running = (1-m)*running + m*batch */
    int relu;                    /* fused_conv2d: 1 applies relu last */
} ntc_attrs;

typedef struct {
    char *name;
    ntc_op op;
    int n_in;
    int *in;                     /* value handles of the activation inputs */
    int par[NTC_MAX_PARAMS];     /* value handles per parameter slot, -1 if absent */
    int out;                     /* value handle of the output */
    int block;                   /* block handle, -1 outside any block */
    ntc_attrs a;
    int line;                    /* source line in the XML file, 0 if made in memory */
    bool dead;
} ntc_node;

typedef struct {
    char *name;
    ntc_role role;
    bool frozen;                 /* parameters get no gradient; batchnorm in inference mode */
    char *layer;                 /* NetTailor layer this block belongs to, or NULL */
    char *reads;                 /* NetTailor layer whose output it reads, or NULL */
    int line;
    bool dead;
} ntc_block;

typedef struct {
    char *name;                  /* output name */
    int value;                   /* value handle */
} ntc_output;

/* Free-form graph metadata, kept in the XML as <meta key=".." value=".."/>.
 * Passes record facts later stages need, e.g. NetTailor's backbone MACs
 * and the branches the prune pass removed (for `ntc stats` and `ntc dot`). */
typedef struct {
    char *key;
    char *value;
} ntc_meta;

typedef struct ntc_graph {
    char *name;
    char *weights;               /* weights file name, relative to the XML file */
    char *path;                  /* where the graph was read from, or NULL */
    int n_values, n_nodes, n_blocks, n_inputs, n_outputs;
    ntc_value *values;
    ntc_node *nodes;
    ntc_block *blocks;
    int *inputs;                 /* value handles */
    ntc_output *outputs;
    int n_meta, cap_meta;
    ntc_meta *meta;              /* in insertion order */
    int cap_values, cap_nodes, cap_blocks, cap_inputs, cap_outputs;
    ntc_arena *arena;            /* strings and input lists live here */
    struct ntc_mapping *mappings; /* mapped weight files, unmapped on free */
} ntc_graph;

/* ---- the ops table --------------------------------------------------- */

typedef enum { NTC_ATTR_INT, NTC_ATTR_INT2, NTC_ATTR_INT4, NTC_ATTR_FLOAT } ntc_attr_type;

typedef struct {
    const char *name;            /* XML attribute name */
    ntc_attr_type type;
    size_t offset;               /* offsetof(ntc_attrs, field) */
    bool required;
    double def;                  /* default, broadcast to every element */
} ntc_attr_spec;

typedef struct {
    const char *name;            /* slot name, e.g. "weight"; the XML attribute */
    bool optional;
    bool frozen_stat;            /* running statistic: updated, never trained */
} ntc_param_spec;

/* One row of the ops table: the name and arity from ops.def, the ir facts
 * from ir/ops.c (where each op defines <op>_attrs, <op>_params, <op>_shape
 * and <op>_macs; a row missing one of them does not compile). */
typedef struct ntc_op_info {
    const char *name;
    int min_in, max_in;          /* max_in 0: variadic */
    const char *doc;
    const ntc_attr_spec *attrs;  /* terminated by name == NULL */
    const ntc_param_spec *params;/* terminated by name == NULL */
    /* Output shape from input shapes; fills param shapes for the node's
     * present slots.  Returns 0, or -1 with err filled (no location). */
    int (*shape)(const ntc_node *n, const ntc_shape *in, ntc_shape *out,
                 ntc_shape par[NTC_MAX_PARAMS], ntc_err *err);
    /* Multiply-accumulates for one batch item (N = 1); NULL counts 0. */
    int64_t (*macs)(const ntc_node *n, const ntc_shape *in, const ntc_shape *out);
} ntc_op_info;

extern const ntc_op_info ntc_ops[NTC_OP_COUNT];

const char *ntc_op_name(ntc_op op);
int ntc_op_lookup(const char *name);            /* -1 if unknown */
int ntc_op_param_slot(ntc_op op, const char *slot); /* -1 if none */
void ntc_attrs_default(ntc_op op, ntc_attrs *a);
const char *ntc_role_name(ntc_role r);

/* ---- building and editing -------------------------------------------- */

ntc_graph *ntc_graph_new(const char *name);
void ntc_graph_free(ntc_graph *g);
ntc_graph *ntc_graph_clone(const ntc_graph *g);  /* deep copy; parameter data copied */

char *ntc_graph_strdup(ntc_graph *g, const char *s);  /* arena copy */
int ntc_graph_add_input(ntc_graph *g, const char *name, const ntc_shape *shape);
int ntc_graph_add_param(ntc_graph *g, const char *name);
int ntc_graph_add_block(ntc_graph *g, const char *name, ntc_role role);
/* Adds a node whose output value is named like the node.  `in` holds n_in
 * value handles.  Parameter slots start absent (-1); attributes start at
 * the op's defaults.  Returns the node handle, or -1 if the name is taken. */
int ntc_graph_add_node(ntc_graph *g, ntc_op op, const char *name,
                       const int *in, int n_in, int block);
/* Creates the parameter for `slot` of node n, named "<node>.<slot>" unless
 * name is given; returns the value handle. */
int ntc_node_add_param(ntc_graph *g, int node, const char *slot, const char *name);
int ntc_graph_add_output(ntc_graph *g, const char *name, int value);

/* Metadata: the value for key, or NULL; set replaces an existing key
 * (value NULL removes it).  0 ok, -1 out of memory. */
const char *ntc_graph_get_meta(const ntc_graph *g, const char *key);
int ntc_graph_set_meta(ntc_graph *g, const char *key, const char *value);

int ntc_graph_find_value(const ntc_graph *g, const char *name); /* -1 if none */
int ntc_graph_find_node(const ntc_graph *g, const char *name);
int ntc_graph_find_block(const ntc_graph *g, const char *name);

/* Replaces every use of value `from` (node inputs and graph outputs) by `to`. */
void ntc_graph_replace_uses(ntc_graph *g, int from, int to);
/* Number of live nodes reading value v, plus graph outputs naming it. */
int ntc_graph_count_uses(const ntc_graph *g, int v);
void ntc_graph_remove_node(ntc_graph *g, int node);  /* marks node and output dead */
/* Drops dead values, nodes and blocks and renumbers handles. */
void ntc_graph_compact(ntc_graph *g);

/* ---- analysis --------------------------------------------------------- */

/* Fills every value's shape and checks them against the ops' rules and the
 * loaded parameter data.  Errors carry the node's source line. */
int ntc_graph_infer_shapes(ntc_graph *g, ntc_err *err);
/* Node handles in an order where producers come first; -1 with err on a
 * cycle.  `order` must hold g->n_nodes entries; returns the count. */
int ntc_graph_topo_order(const ntc_graph *g, int *order, ntc_err *err);
/* Full structural check: names, references, arity, attributes, cycles,
 * shapes, parameters present with the right shapes. */
int ntc_graph_verify(ntc_graph *g, ntc_err *err);

int64_t ntc_shape_numel(const ntc_shape *s);     /* batch counted as 1 */
int64_t ntc_node_macs(const ntc_graph *g, int node);    /* per batch item */
/* Learnable parameters of a node (running statistics not counted, as in
 * PyTorch's parameters()). */
int64_t ntc_node_params(const ntc_graph *g, int node);
bool ntc_value_frozen(const ntc_graph *g, int v);       /* param in a frozen block */
int ntc_shape_format(const ntc_shape *s, char *buf, size_t len); /* "N,3,32,32" */
int ntc_shape_parse(const char *s, ntc_shape *out);      /* 0 ok, -1 bad */

/* ---- files ------------------------------------------------------------ */

/* Reads the XML graph and, unless no_weights, its weights file (mapped,
 * copy-on-write).  Verifies the result. */
ntc_graph *ntc_graph_read_xml(const char *path, ntc_err *err);
ntc_graph *ntc_graph_read_xml_opts(const char *path, bool no_weights, ntc_err *err);
/* Writes the XML atomically (temporary file + rename).  When weights_path is
 * non-NULL also writes every parameter with data there (atomically) and
 * records its name relative to the XML file in the graph. */
int ntc_graph_write_xml(ntc_graph *g, const char *path, const char *weights_path, ntc_err *err);
/* The XML text itself, malloc'ed (for tests and --dump-after). */
char *ntc_graph_to_xml(const ntc_graph *g, size_t *len);

/* safetensors: loads every tensor named like a parameter of g; shapes must
 * match the parameter's inferred shape when known. */
int ntc_weights_load(ntc_graph *g, const char *path, ntc_err *err);
int ntc_weights_save(const ntc_graph *g, const char *path, ntc_err *err);

#endif
