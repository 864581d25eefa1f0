/* ntc/train.h - training: the training executor (forward + reverse-mode
 * autodiff), losses, SGD with schedules, NetTailor's distillation and
 * complexity terms, and the training loop with checkpoints.
 *
 * Tutorial (one step by hand; ntc_train() below does all of it):
 *
 *   ntc_trainer *t = ntc_trainer_new(g, 128, 0, &err);     // all CPUs
 *   ntc_sgd_opts so = {.momentum = 0.9, .weight_decay = 5e-4};
 *   ntc_sgd *opt = ntc_sgd_new(t, &so, &err);
 *   ntc_trainer_forward(t, (const float *[]){x}, n, true, &err);
 *   const float *z = ntc_trainer_value(t, g->outputs[0].value);
 *   double loss = ntc_loss_cross_entropy(z, y, n, 10, 1.0f, ntc_trainer_output_grad(t, 0));
 *   ntc_trainer_backward(t, &err);                          // grads of every trainable param
 *   ntc_sgd_step(opt, lr);                                  // updates g's parameters in place
 *
 * Gradients exist only where needed: a parameter is trainable unless it is
 * a running statistic or belongs to a frozen block (ntc_value_frozen); an
 * activation gets a gradient only if some trainable parameter lies
 * upstream of it.  Batchnorm runs in training mode (whole-batch
 * statistics, running statistics updated) outside frozen blocks, and in
 * inference mode inside them and whenever the forward is not `train`.
 *
 * Local terms (a stop-gradient): a loss term on value v whose gradient
 * reaches only the parameters of a given set of nodes, its scope.  Values
 * produced outside the scope receive nothing from it, while the main loss
 * (seeded at the graph outputs) flows everywhere.  NetTailor's
 * distillation term of layer l is a local term on the layer's output
 * whose scope is the layer's own nodes.
 */
#ifndef NTC_TRAIN_H
#define NTC_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ntc/data.h"
#include "ntc/ir.h"

/* ---- the training executor (runtime/autodiff.c) ----------------------------- */

typedef struct ntc_trainer ntc_trainer;

/* Prepares g for training steps on batches of 1..max_batch with `threads`
 * threads (0: one per online CPU).  Infers shapes; every parameter must
 * have data.  Every node output keeps its own buffer until the next
 * forward, so backward reads the forward's activations.  g must outlive
 * the trainer; its parameter data is read at every step (an optimiser may
 * update it in place between steps).  NULL with err filled on failure. */
ntc_trainer *ntc_trainer_new(ntc_graph *g, int max_batch, int threads, ntc_err *err);
void ntc_trainer_free(ntc_trainer *t);
int ntc_trainer_threads(const ntc_trainer *t);
ntc_graph *ntc_trainer_graph(const ntc_trainer *t);

/* Registers a local term on value v (a node output) with scope nodes
 * scope[0..n).  v must be produced by a scope node.  Returns the term's
 * index (0, 1, ...), or -1 with err filled. */
int ntc_trainer_add_local(ntc_trainer *t, int v, const int *scope, int n, ntc_err *err);

/* Runs the graph forward on `batch` items.  inputs[i] is graph input i,
 * [batch, ...]; it is copied.  train: batchnorm of non-frozen blocks in
 * training mode (running statistics updated); otherwise every batchnorm
 * in inference mode.  Zeroes the output and local-term gradients.
 * Returns 0, or -1 with err filled. */
int ntc_trainer_forward(ntc_trainer *t, const float *const *inputs, int batch, bool train,
                        ntc_err *err);

/* Value v ([batch, ...]) of the last forward: any graph input or node output. */
const float *ntc_trainer_value(const ntc_trainer *t, int v);
/* dL/d(graph output i), [batch, ...]: zero after the forward, the caller
 * adds its loss's gradient.  Consumed (overwritten) by the backward. */
float *ntc_trainer_output_grad(ntc_trainer *t, int i);
/* dL_k/dv of local term k, [batch, ...]: zero after the forward. */
float *ntc_trainer_local_grad(ntc_trainer *t, int k);

/* Backward of the last forward: the main pass from the output gradients
 * through every node, then each local term's pass through its scope.
 * Afterwards ntc_trainer_grad holds the parameter gradients (overwritten,
 * not accumulated across steps).  0, or -1 with err filled. */
int ntc_trainer_backward(ntc_trainer *t, ntc_err *err);

/* Trainable parameters: count, value handle of the i-th, the i-th's
 * gradient (numel of the parameter floats), and the index of value v
 * (-1 if v is not a trainable parameter). */
int ntc_trainer_n_params(const ntc_trainer *t);
int ntc_trainer_param(const ntc_trainer *t, int i);
float *ntc_trainer_grad(const ntc_trainer *t, int i);
int ntc_trainer_param_index(const ntc_trainer *t, int v);
/* Whether the main pass computes a gradient for value v. */
bool ntc_trainer_needs_grad(const ntc_trainer *t, int v);

/* ---- losses (runtime/loss.c) ---------------------------------------------------- */

/* Mean over n items of -log softmax(z_i)[y_i] for logits z [n, k], with a
 * max-shifted log-sum-exp.  When grad is non-NULL adds weight * dL/dz.
 * Labels must lie in [0, k).  A non-finite logit gives a non-finite loss. */
double ntc_loss_cross_entropy(const float *z, const int32_t *y, int n, int k, float weight,
                              float *grad);
/* Mean over `count` elements of (x - target)^2; adds weight * dL/dx to
 * grad when non-NULL. */
double ntc_loss_mse(const float *x, const float *target, int64_t count, float weight, float *grad);
/* Items whose largest logit (the first, on ties) is the label. */
int ntc_count_correct(const float *z, const int32_t *y, int n, int k);

/* ---- SGD and learning-rate schedules (runtime/optim.c) ------------------------- */

typedef enum {
    NTC_SCHED_CONSTANT,
    NTC_SCHED_STEP,              /* x0.1 at 50% and at 75% of the steps */
    NTC_SCHED_COSINE,            /* lr * (1 + cos(pi * progress)) / 2 */
} ntc_schedule_kind;

typedef struct {
    ntc_schedule_kind kind;
    double lr;                   /* the base learning rate */
    int64_t total_steps;         /* optimiser steps of the whole run */
    int64_t warmup_steps;        /* linear ramp from lr/warmup to lr first; 0 = none */
} ntc_schedule;

/* The learning rate of step `step` (0-based), per iteration. */
double ntc_schedule_lr(const ntc_schedule *s, int64_t step);
/* "constant", "step", "cosine" -> kind; 0 ok, -1 unknown. */
int ntc_schedule_parse(const char *s, ntc_schedule_kind *out);
const char *ntc_schedule_name(ntc_schedule_kind k);

/* Parameter groups: weights (convolution and linear weights and biases)
 * get weight decay; batchnorm scale/bias and NetTailor's alpha logits do
 * not, and alphas may have their own learning rate. */
typedef enum { NTC_GROUP_WEIGHT, NTC_GROUP_NORM, NTC_GROUP_ALPHA } ntc_param_group;
ntc_param_group ntc_param_group_of(const ntc_graph *g, int v);

typedef struct {
    double momentum;             /* 0.9 usually; 0 = plain SGD */
    double weight_decay;         /* L2 on the weight group */
    double alpha_lr_scale;       /* alphas' lr = scheduled lr * this; 0 means 1 */
} ntc_sgd_opts;

typedef struct ntc_sgd ntc_sgd;

/* SGD over t's trainable parameters (PyTorch's update, no dampening):
 *     d = grad + wd * w;  buf = momentum * buf + d;  w -= lr * buf
 * NULL with err on out of memory. */
ntc_sgd *ntc_sgd_new(ntc_trainer *t, const ntc_sgd_opts *o, ntc_err *err);
void ntc_sgd_free(ntc_sgd *s);
/* One update with learning rate lr from t's current gradients. */
void ntc_sgd_step(ntc_sgd *s, double lr);
/* The momentum buffers, all parameters back to back in trainer order
 * (ntc_sgd_state_floats floats): saved and restored by checkpoints. */
float *ntc_sgd_state(ntc_sgd *s);
int64_t ntc_sgd_state_floats(const ntc_sgd *s);

/* ---- NetTailor terms (runtime/distill.c) --------------------------------------- */

typedef struct ntc_distill ntc_distill;

/* The NetTailor losses of a student being trained by trainer t:
 *     L = L_ce + lambda_t * L_t + lambda_c * E[C]
 *     L_t = mean over layers l of MSE(student x_l, teacher x_l) + MSE(logits)
 * Each layer's term is a local term of t whose scope is the layer (its mix
 * node, its branch blocks and its relu); the logits term's scope is the
 * head (the nodes after the last layer).  teacher may be NULL (then only
 * E[C]); it is cloned, its layer values (same names as the student's)
 * made outputs, and run with ntc_exec on each batch.  The student's first
 * output is its logits.  NULL with err on a missing teacher value or a
 * shape mismatch. */
ntc_distill *ntc_distill_new(ntc_trainer *t, const ntc_graph *teacher, double lambda_t,
                             double lambda_c, int max_batch, int threads, ntc_err *err);
void ntc_distill_free(ntc_distill *d);
/* After ntc_trainer_forward: runs the teacher on the same inputs and adds
 * lambda_t * dL_t to the local-term gradients; returns L_t in *lt (0
 * without a teacher).  0, or -1 with err filled. */
int ntc_distill_forward(ntc_distill *d, const float *const *inputs, int batch, double *lt,
                        ntc_err *err);
/* E[C] at the current alphas; after ntc_trainer_backward, when add_grad,
 * adds lambda_c * dE[C]/dlogits to the alpha gradients. */
double ntc_distill_complexity(ntc_distill *d, bool add_grad);
/* Layers (0 for a graph without mix nodes). */
int ntc_distill_layers(const ntc_distill *d);

/* ---- the training loop (runtime/train.c) ---------------------------------------- */

typedef struct {
    ntc_data_opts data;          /* source, shape (from the graph), val_size, norm */
    int epochs;
    int batch;
    int threads;                 /* 0: one per CPU */
    int64_t limit;               /* examples per epoch (0 = all), for quick runs */
    uint64_t seed;
    int augment_pad;             /* random crop with this padding; 0 = none */
    ntc_schedule_kind schedule;
    double lr, warmup_epochs;
    ntc_sgd_opts sgd;
    const ntc_graph *teacher;    /* NetTailor distillation, or NULL */
    double lambda_teacher, lambda_complexity;
    bool nettailor;              /* add the NetTailor terms (teacher or mix nodes) */
    const char *run_dir;         /* checkpoints and train.jsonl (must exist) */
    bool resume;                 /* continue from run_dir's checkpoint */
    FILE *log;                   /* progress and epoch lines; NULL = silent */
    bool progress;               /* \r-updated progress line (a terminal) */
    volatile sig_atomic_t *stop; /* set asynchronously: finish the step, checkpoint, stop */
    int64_t stop_after_steps;    /* stop as if interrupted after this many steps (0 = never) */
} ntc_train_opts;

/* Defaults: 15 epochs, batch 128, lr 0.1 cosine, momentum 0.9, wd 5e-4,
 * seed 1, crop padding 2, lambdas 10 and 0.3. */
void ntc_train_opts_default(ntc_train_opts *o);

typedef struct {
    int epochs_done;
    int64_t steps;
    double train_loss, train_acc, val_loss, val_acc;  /* last epoch (val: NaN without val) */
    double images_per_s, seconds;
    double complexity;           /* E[C] at the end (NetTailor), else 0 */
    char checkpoint[1024];       /* the last checkpoint written */
} ntc_train_result;

enum { NTC_TRAIN_DONE = 0, NTC_TRAIN_STOPPED = 1 };

/* Trains g in place (its parameters hold the result).  Writes a checkpoint
 * to o->run_dir after every epoch and when stopped, and one JSON line per
 * epoch to run_dir/train.jsonl.  Returns NTC_TRAIN_DONE, NTC_TRAIN_STOPPED
 * (o->stop or stop_after_steps: a checkpoint holds the state to resume
 * from), or -1 with err filled (bad data, a non-finite loss: the last
 * good checkpoint is left intact and named in the message). */
int ntc_train(ntc_graph *g, const ntc_train_opts *o, ntc_train_result *res, ntc_err *err);

/* The graph of the checkpoint in run_dir, with its weights (what --resume
 * continues from).  NULL with err if there is none. */
ntc_graph *ntc_train_checkpoint_graph(const char *run_dir, ntc_err *err);

/* Mean cross-entropy and accuracy of g on ds (inference mode). */
int ntc_evaluate(ntc_graph *g, const ntc_dataset *ds, int batch, int threads, int64_t limit,
                 double *loss, double *acc, ntc_err *err);

#endif
