/* Shared by the ONNX importer's files: onnx.c (reading the model, values
 * and constants, the node loop), onnx_ops.c (one translator per ONNX
 * operator), onnx_shapes.c (shape computations folded into constants)
 * and onnx_blocks.c (residual blocks, stem and head). */
#ifndef NTC_ONNX_INTERNAL_H
#define NTC_ONNX_INTERNAL_H

#include "ntc/frontends.h"
#include "frontends/onnx.pb-c.h"

#include <stdbool.h>
#include <stdint.h>

#define ONNX_MIN_OPSET 9
#define ONNX_MAX_OPSET 17

/* The batch size inside an int64 shape constant (onnx_shapes.c): the
 * result of Shape on a computed tensor, known only when it runs. */
#define ONNX_BATCH_DIM INT64_MIN

/* A constant tensor: an initializer, the output of a Constant node, or a
 * shape computation folded at import.  Floats and int64s are the only
 * element types ntc reads. */
typedef struct {
    bool is_int;                 /* int64 (shapes), else float32 */
    int rank;
    int64_t dims[NTC_MAX_RANK];
    int64_t count;               /* product of dims (1 for a scalar) */
    float *f;                    /* count floats, owned, when !is_int */
    int64_t *i;                  /* count int64s, owned, when is_int */
} onnx_const;

/* What an ONNX value name stands for: an ntc activation or a constant. */
typedef struct {
    const char *name;            /* points into the unpacked model */
    int value;                   /* ntc value handle, or -1 */
    int constant;                /* index into importer.consts, or -1 */
    int uses;                    /* ONNX nodes reading it, plus graph outputs */
} onnx_binding;

typedef struct {
    ntc_graph *g;
    ntc_err *err;
    const char *file;            /* for error messages */
    int64_t opset;               /* of the default domain */
    int64_t export_batch;        /* fixed batch size of the first input, 0 if symbolic */
    onnx_binding *env;
    int n_env, cap_env;
    onnx_const *consts;
    int n_consts, cap_consts;
} onnx_importer;

/* ---- onnx.c: services for the translators ---- */

/* Fails with "FILE: node 'NAME' (OpType): <fmt>" and returns -1. */
int onnx_node_fail(onnx_importer *im, const Onnx__NodeProto *np, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The name used for the node in messages and in ntc: its name, else its
 * first output's name. */
const char *onnx_node_label(const Onnx__NodeProto *np);

/* Binding of an ONNX value name, or NULL if nothing defines it. */
onnx_binding *onnx_lookup(onnx_importer *im, const char *name);
/* Input i of np as an activation / a constant; fails naming the input
 * when it is missing, undefined or of the other kind. */
int onnx_input_act(onnx_importer *im, const Onnx__NodeProto *np, size_t i);
const onnx_const *onnx_input_const(onnx_importer *im, const Onnx__NodeProto *np, size_t i);
/* True if input i is given (present and non-empty). */
bool onnx_has_input(const Onnx__NodeProto *np, size_t i);
/* Binds np's first output to ntc value v / to constant c. */
int onnx_bind_act(onnx_importer *im, const Onnx__NodeProto *np, int v);
int onnx_bind_const(onnx_importer *im, const Onnx__NodeProto *np, onnx_const *c);
/* Binds np's first output to whatever b stands for (Identity). */
int onnx_bind_same(onnx_importer *im, const Onnx__NodeProto *np, const onnx_binding *b);
/* ONNX readers of ntc value v under any of its names (aliases included). */
int onnx_value_uses(const onnx_importer *im, int v);
/* Converts a TensorProto to a constant (float32 or int64 only). */
int onnx_tensor_to_const(onnx_importer *im, const Onnx__TensorProto *t, const char *what, onnx_const *out);
void onnx_const_free(onnx_const *c);

/* Adds an ntc node for np reading ins, named after np (made unique). */
int onnx_add_node(onnx_importer *im, const Onnx__NodeProto *np, ntc_op op, const int *ins, int n_in);
/* Runs node's shape rule; errors are reported against np. */
int onnx_infer_node(onnx_importer *im, const Onnx__NodeProto *np, int node);
/* Creates parameter `slot` of node and fills it with data, whose shape
 * must be the one the op's rule gives (call after onnx_infer_node). */
int onnx_set_param(onnx_importer *im, const Onnx__NodeProto *np, int node, const char *slot,
                   const float *data, int64_t count);

/* ---- attributes ---- */

/* Fails if np carries an attribute not in `known` (NULL-terminated). */
int onnx_check_attrs(onnx_importer *im, const Onnx__NodeProto *np, const char *const *known);
const Onnx__AttributeProto *onnx_attr(const Onnx__NodeProto *np, const char *name);
int onnx_attr_int(onnx_importer *im, const Onnx__NodeProto *np, const char *name, int64_t def, int64_t *out);
int onnx_attr_float(onnx_importer *im, const Onnx__NodeProto *np, const char *name, float def, float *out);
/* Reads an INTS attribute of exactly `n` entries into out; absent: *given = false. */
int onnx_attr_ints(onnx_importer *im, const Onnx__NodeProto *np, const char *name, int n, int64_t *out,
                   bool *given);
/* A STRING attribute or def; the result points into the model. */
int onnx_attr_string(onnx_importer *im, const Onnx__NodeProto *np, const char *name, const char *def,
                     const char **out);

/* ---- onnx_ops.c ---- */

/* Translates one node; the error names np, its op and the opset. */
int onnx_translate_node(onnx_importer *im, const Onnx__NodeProto *np);

/* ---- onnx_shapes.c: shape computations on constants ---- */

int onnx_shape(onnx_importer *im, const Onnx__NodeProto *np);
int onnx_gather(onnx_importer *im, const Onnx__NodeProto *np);
int onnx_unsqueeze(onnx_importer *im, const Onnx__NodeProto *np);
int onnx_concat(onnx_importer *im, const Onnx__NodeProto *np);

/* ---- onnx_blocks.c ---- */

/* Groups the nodes into the stem, the residual blocks and the head. */
int onnx_assign_blocks(onnx_importer *im);

#endif
