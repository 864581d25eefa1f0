/* The runtime's kernel table, one row per op of ntc/ops.def.  An op
 * added to ops.def without a fwd_<op> and a bwd_<op> kernel fails to
 * compile here.
 * Every op also names its scratch rule: work_<op> from kernels.h, or NULL
 * below (no scratch), so a new op must decide. */
#include "kernels.h"

#define work_relu NULL
#define work_add NULL
#define work_maxpool NULL
#define work_avgpool NULL
#define work_global_avgpool NULL
#define work_flatten NULL
#define work_linear NULL
#define work_softmax NULL

const ntc_kernel ntc_kernels[NTC_OP_COUNT] = {
#define OP(name, min_in, max_in, doc) \
    [NTC_OP_##name] = {.forward = fwd_##name, .backward = bwd_##name, .work = work_##name},
#include "ntc/ops.def"
#undef OP
};

int64_t ntc_numel_from(const ntc_shape *s, int from)
{
    int64_t n = 1;
    for (int i = from; i < s->rank; i++)
        n *= s->dims[i];
    return n;
}
