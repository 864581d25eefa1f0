/* fused_conv2d: the conv2d emitter with its epilogue set from the node
 * itself.  The fuse pass (passes/fuse.c) turns conv2d -> add -> relu
 * chains into one fused_conv2d whose input 2 is the residual and whose
 * relu attribute says whether a relu follows; cg_emit_conv2d already
 * applies such an epilogue (batchnorm, residual, relu) to the chains the
 * code generator finds itself, so the fused node is that same code. */
#include "codegen.h"

int cg_emit_fused_conv2d(cg *c, const cg_node *nd, ntc_err *err)
{
    cg_node conv = *nd;
    conv.bn = NULL;
    conv.residual = nd->n->n_in == 2 ? nd->in[1] : NULL;
    conv.relu = nd->n->a.relu != 0;
    return cg_emit_conv2d(c, &conv, err);
}
