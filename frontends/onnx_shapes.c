/* Shape computations folded at import time.
 *
 * PyTorch exports `x.view(x.size(0), -1)` with a dynamic batch as
 *
 *     Shape(x) -> Gather(0) -> Unsqueeze -> Concat(with [-1]) -> Reshape(x, .)
 *
 * None of these is an ntc op, and none needs to be: every size but the
 * batch is known at import, so the chain is evaluated here into an int64
 * constant whose batch entry is the marker ONNX_BATCH_DIM, and Reshape
 * (onnx_ops.c) reads that as "the batch".  Shape, Gather, Unsqueeze and
 * Concat are imported only on such constants; on computed tensors they
 * are refused like any operator without an ntc op. */
#include "onnx_internal.h"

#include <inttypes.h>
#include <string.h>

static int out_of_memory(onnx_importer *im) { return ntc_error(im->err, im->file, 0, "out of memory"); }

/* True if input i of np is a computed tensor (not a constant). */
static bool computed(onnx_importer *im, const Onnx__NodeProto *np, size_t i)
{
    const onnx_binding *b = onnx_has_input(np, i) ? onnx_lookup(im, np->input[i]) : NULL;
    return b && b->value >= 0;
}

/* A new int64 constant of the given shape (data uninitialised). */
static int new_int_const(onnx_importer *im, onnx_const *c, int rank, const int64_t *dims)
{
    memset(c, 0, sizeof *c);
    c->is_int = true;
    c->rank = rank;
    c->count = 1;
    for (int d = 0; d < rank; d++) {
        c->dims[d] = dims[d];
        c->count *= dims[d];
    }
    c->i = ntc_malloc(sizeof(int64_t) * (size_t)(c->count ? c->count : 1));
    return c->i ? 0 : out_of_memory(im);
}

/* Shape: the sizes of a computed tensor, the batch as ONNX_BATCH_DIM;
 * opset 15's start and end select a range of axes. */
int onnx_shape(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"start", "end", NULL};
    int64_t start, end;
    int x = onnx_input_act(im, np, 0);
    if (x < 0 || onnx_check_attrs(im, np, attrs))
        return -1;
    const ntc_shape *s = &im->g->values[x].shape;
    if (onnx_attr_int(im, np, "start", 0, &start) || onnx_attr_int(im, np, "end", s->rank, &end))
        return -1;
    start = start < 0 ? start + s->rank : start;
    end = end < 0 ? end + s->rank : end;
    start = start < 0 ? 0 : start > s->rank ? s->rank : start;
    end = end < start ? start : end > s->rank ? s->rank : end;
    int64_t n = end - start;
    onnx_const c;
    if (new_int_const(im, &c, 1, &n))
        return -1;
    for (int64_t d = start; d < end; d++)
        c.i[d - start] = s->dims[d] == NTC_BATCH ? ONNX_BATCH_DIM : s->dims[d];
    return onnx_bind_const(im, np, &c);
}

/* Gather along axis 0 of a 1-D int64 constant at constant indices. */
int onnx_gather(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"axis", NULL};
    int64_t axis;
    if (onnx_check_attrs(im, np, attrs) || onnx_attr_int(im, np, "axis", 0, &axis))
        return -1;
    if (computed(im, np, 0))
        return onnx_node_fail(im, np, "Gather of a computed tensor is not supported (opset %" PRId64 "); ntc "
                              "folds Gather only in shape computations", im->opset);
    const onnx_const *data = onnx_input_const(im, np, 0), *idx = data ? onnx_input_const(im, np, 1) : NULL;
    if (!idx)
        return -1;
    if (!data->is_int || data->rank != 1 || !idx->is_int || idx->rank > 1 || (axis != 0 && axis != -1))
        return onnx_node_fail(im, np, "only Gather of int64 shape values (1-D, axis 0) is folded");
    onnx_const c;
    if (new_int_const(im, &c, idx->rank, idx->dims))
        return -1;
    for (int64_t k = 0; k < idx->count; k++) {
        int64_t i = idx->i[k] < 0 ? idx->i[k] + data->count : idx->i[k];
        if (i < 0 || i >= data->count) {
            onnx_const_free(&c);
            return onnx_node_fail(im, np, "index %" PRId64 " is out of range for %" PRId64 " values", idx->i[k],
                                  data->count);
        }
        c.i[k] = data->i[i];
    }
    return onnx_bind_const(im, np, &c);
}

/* Unsqueeze of a constant: new axes of size 1 (the attribute `axes`
 * before opset 13, the second input from 13 on). */
int onnx_unsqueeze(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const old_attrs[] = {"axes", NULL};
    static const char *const none[] = {NULL};
    if (onnx_check_attrs(im, np, im->opset < 13 ? old_attrs : none))
        return -1;
    if (computed(im, np, 0))
        return onnx_node_fail(im, np, "Unsqueeze of a computed tensor is not supported (opset %" PRId64 "); ntc "
                              "folds Unsqueeze only in shape computations", im->opset);
    const onnx_const *data = onnx_input_const(im, np, 0);
    if (!data)
        return -1;
    if (!data->is_int)
        return onnx_node_fail(im, np, "only int64 shape values are folded");
    int64_t axes[NTC_MAX_RANK];
    size_t n_axes;
    if (im->opset < 13) {
        const Onnx__AttributeProto *a = onnx_attr(np, "axes");
        if (!a || a->n_ints < 1 || a->n_ints > NTC_MAX_RANK)
            return onnx_node_fail(im, np, "needs 1 to %d axes", NTC_MAX_RANK);
        n_axes = a->n_ints;
        memcpy(axes, a->ints, sizeof(int64_t) * n_axes);
    } else {
        const onnx_const *ax = onnx_input_const(im, np, 1);
        if (!ax)
            return -1;
        if (!ax->is_int || ax->rank > 1 || ax->count < 1 || ax->count > NTC_MAX_RANK)
            return onnx_node_fail(im, np, "axes must be 1 to %d int64 values", NTC_MAX_RANK);
        n_axes = (size_t)ax->count;
        memcpy(axes, ax->i, sizeof(int64_t) * n_axes);
    }
    int rank = data->rank + (int)n_axes;
    if (rank > NTC_MAX_RANK)
        return onnx_node_fail(im, np, "the result would have rank %d, more than %d", rank, NTC_MAX_RANK);
    bool is_new[NTC_MAX_RANK] = {false};
    for (size_t k = 0; k < n_axes; k++) {
        int64_t a = axes[k] < 0 ? axes[k] + rank : axes[k];
        if (a < 0 || a >= rank || is_new[a])
            return onnx_node_fail(im, np, "axis %" PRId64 " is out of range or repeated", axes[k]);
        is_new[a] = true;
    }
    int64_t dims[NTC_MAX_RANK];
    for (int d = 0, from = 0; d < rank; d++)
        dims[d] = is_new[d] ? 1 : data->dims[from++];
    onnx_const c;
    if (new_int_const(im, &c, rank, dims))
        return -1;
    memcpy(c.i, data->i, sizeof(int64_t) * (size_t)data->count);
    return onnx_bind_const(im, np, &c);
}

/* Concat of 1-D int64 constants.  A computed input is refused: ntc has no
 * concatenation op. */
int onnx_concat(onnx_importer *im, const Onnx__NodeProto *np)
{
    static const char *const attrs[] = {"axis", NULL};
    int64_t axis;
    if (onnx_check_attrs(im, np, attrs) || onnx_attr_int(im, np, "axis", 0, &axis))
        return -1;
    int64_t total = 0;
    for (size_t k = 0; k < np->n_input; k++) {
        if (computed(im, np, k))
            return onnx_node_fail(im, np, "operator Concat (opset %" PRId64 ") is not supported on computed "
                                  "tensors: ntc has no concatenation op, so DenseNet- or Inception-style graphs "
                                  "cannot be imported", im->opset);
        const onnx_const *c = onnx_input_const(im, np, k);
        if (!c)
            return -1;
        if (!c->is_int || c->rank != 1 || (axis != 0 && axis != -1))
            return onnx_node_fail(im, np, "only Concat of 1-D int64 shape values is folded");
        total += c->count;
    }
    if (np->n_input < 1)
        return onnx_node_fail(im, np, "has no inputs");
    onnx_const out;
    if (new_int_const(im, &out, 1, &total))
        return -1;
    int64_t at = 0;
    for (size_t k = 0; k < np->n_input; k++) {
        const onnx_const *c = &im->consts[onnx_lookup(im, np->input[k])->constant];
        memcpy(out.i + at, c->i, sizeof(int64_t) * (size_t)c->count);
        at += c->count;
    }
    return onnx_bind_const(im, np, &out);
}
