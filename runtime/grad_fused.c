/* fused_conv2d backward, the unfused chain's backwards in reverse order.
 * With z = conv(x) + r and y = relu(z) (or y = z without relu):
 *     dL/dz = dL/dy where y > 0, else 0   (y > 0 exactly when z > 0; relu's
 *                                          subgradient 0 at 0, as bwd_relu)
 *     dL/dr += dL/dz                       (the residual passes it through)
 *     dx, dW, db from bwd_conv2d with dL/dz as the output gradient.
 * Items go one at a time so the masked gradient needs one item's floats
 * of workspace, after the convolution's own (work_fused_conv2d). */
#include "kernels.h"

void bwd_fused_conv2d(const ntc_kargs *k, const float *grad_out, float *const *grad_in,
                      float *const grad_par[NTC_MAX_PARAMS])
{
    const ntc_node *n = k->node;
    ntc_shape in1[2], out1 = k->out_shape;
    out1.dims[0] = 1;
    for (int j = 0; j < k->n_in; j++) {
        in1[j] = k->in_shape[j];
        in1[j].dims[0] = 1;
    }
    const int64_t in_item = ntc_numel_from(&in1[0], 1), out_item = ntc_numel_from(&out1, 1);
    float *dz = n->a.relu ? k->work + work_conv2d(n, &in1[0], &out1) : NULL;
    float *dr = k->n_in == 2 && grad_in ? grad_in[1] : NULL;
    for (int b = 0; b < k->batch; b++) {
        const float *g = grad_out + b * out_item;
        if (dz) {
            const float *y = k->out + b * out_item;
            for (int64_t i = 0; i < out_item; i++)
                dz[i] = y[i] > 0.0f ? g[i] : 0.0f;
            g = dz;
        }
        if (dr)
            for (int64_t i = 0; i < out_item; i++)
                dr[b * out_item + i] += g[i];
        const float *in[2] = {k->in[0] + b * in_item, k->n_in == 2 ? k->in[1] + b * out_item : NULL};
        ntc_kargs kb = *k;
        kb.batch = 1;
        kb.in = in;
        kb.in_shape = in1;
        kb.out = k->out + b * out_item;
        kb.out_shape = out1;
        float *dx[1] = {grad_in && grad_in[0] ? grad_in[0] + b * in_item : NULL};
        bwd_conv2d(&kb, g, grad_in ? dx : NULL, grad_par);
    }
}
