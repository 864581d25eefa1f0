/* SGD with momentum and weight decay, per parameter group, and the
 * learning-rate schedules of ntc/train.h.
 *
 * The update is PyTorch's torch.optim.SGD (dampening 0, not Nesterov):
 *     d = grad + wd * w;   buf = momentum * buf + d;   w -= lr * buf
 * with buf starting at zero, which makes the first buf equal d as in
 * PyTorch.  Groups (ntc_param_group_of) follow common practice and the
 * NetTailor reference: no decay on batchnorm's affine parameters, which
 * only rescale, nor on the alpha logits, whose size is the architecture
 * choice itself. */
#include "ntc/train.h"

#include <math.h>
#include <string.h>

struct ntc_sgd {
    ntc_trainer *t;
    ntc_sgd_opts o;
    int n;
    int64_t *off;                /* per parameter: offset in buf */
    ntc_param_group *group;
    int64_t floats;
    float *buf;                  /* momentum, all parameters back to back */
};

ntc_param_group ntc_param_group_of(const ntc_graph *g, int v)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int s = 0; s < NTC_MAX_PARAMS; s++)
            if (n->par[s] == v)
                return n->op == NTC_OP_batchnorm ? NTC_GROUP_NORM
                       : n->op == NTC_OP_mix     ? NTC_GROUP_ALPHA
                                                 : NTC_GROUP_WEIGHT;
    }
    return NTC_GROUP_WEIGHT;
}

ntc_sgd *ntc_sgd_new(ntc_trainer *t, const ntc_sgd_opts *o, ntc_err *err)
{
    const ntc_graph *g = ntc_trainer_graph(t);
    ntc_sgd *s = ntc_calloc(1, sizeof *s);
    int n = ntc_trainer_n_params(t);
    if (!s || !(s->off = ntc_malloc(sizeof(int64_t) * ((size_t)n + 1))) ||
        !(s->group = ntc_malloc(sizeof(ntc_param_group) * ((size_t)n + 1)))) {
        ntc_sgd_free(s);
        ntc_error(err, g->path, 0, "out of memory");
        return NULL;
    }
    s->t = t;
    s->o = *o;
    s->n = n;
    for (int i = 0; i < n; i++) {
        int v = ntc_trainer_param(t, i);
        s->off[i] = s->floats;
        s->floats += ntc_shape_numel(&g->values[v].shape);
        s->group[i] = ntc_param_group_of(g, v);
    }
    if (!(s->buf = ntc_calloc((size_t)s->floats + 1, sizeof(float)))) {
        ntc_sgd_free(s);
        ntc_error(err, g->path, 0, "out of memory");
        return NULL;
    }
    return s;
}

void ntc_sgd_free(ntc_sgd *s)
{
    if (!s)
        return;
    ntc_free(s->off);
    ntc_free(s->group);
    ntc_free(s->buf);
    ntc_free(s);
}

void ntc_sgd_step(ntc_sgd *s, double lr)
{
    const ntc_graph *g = ntc_trainer_graph(s->t);
    const float m = (float)s->o.momentum;
    for (int i = 0; i < s->n; i++) {
        ntc_value *v = &g->values[ntc_trainer_param(s->t, i)];
        const float *gr = ntc_trainer_grad(s->t, i);
        float *w = v->data, *buf = s->buf + s->off[i];
        const float wd = s->group[i] == NTC_GROUP_WEIGHT ? (float)s->o.weight_decay : 0.0f;
        double scale = s->group[i] == NTC_GROUP_ALPHA && s->o.alpha_lr_scale > 0 ? s->o.alpha_lr_scale : 1.0;
        const float step = (float)(lr * scale);
        const int64_t cnt = ntc_shape_numel(&v->shape);
        for (int64_t j = 0; j < cnt; j++) {
            const float d = gr[j] + wd * w[j];
            buf[j] = m * buf[j] + d;
            w[j] -= step * buf[j];
        }
    }
}

float *ntc_sgd_state(ntc_sgd *s) { return s->buf; }
int64_t ntc_sgd_state_floats(const ntc_sgd *s) { return s->floats; }

/* ---- schedules ------------------------------------------------------------------ */

double ntc_schedule_lr(const ntc_schedule *s, int64_t step)
{
    if (s->warmup_steps > 0 && step < s->warmup_steps)
        return s->lr * (double)(step + 1) / (double)s->warmup_steps;
    const int64_t span = s->total_steps - s->warmup_steps;
    const double progress = span > 0 ? (double)(step - s->warmup_steps) / (double)span : 1.0;
    switch (s->kind) {
    case NTC_SCHED_STEP:
        return s->lr * (progress >= 0.75 ? 0.01 : progress >= 0.5 ? 0.1 : 1.0);
    case NTC_SCHED_COSINE:
        return s->lr * 0.5 * (1.0 + cos(M_PI * (progress > 1.0 ? 1.0 : progress)));
    case NTC_SCHED_CONSTANT:
    default:
        return s->lr;
    }
}

static const char *const sched_names[] = {"constant", "step", "cosine"};

int ntc_schedule_parse(const char *s, ntc_schedule_kind *out)
{
    for (int k = 0; k < 3; k++)
        if (!strcmp(s, sched_names[k])) {
            *out = (ntc_schedule_kind)k;
            return 0;
        }
    return -1;
}

const char *ntc_schedule_name(ntc_schedule_kind k)
{
    return k >= 0 && k <= NTC_SCHED_COSINE ? sched_names[k] : "?";
}
