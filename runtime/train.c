/* The training loop of ntc/train.h: epochs of SGD steps over a batcher,
 * validation, logging, checkpoints and resume.
 *
 * Checkpoints.  A checkpoint is a directory run_dir/ckpt-<step> holding
 *     model.xml + model.safetensors   the graph and every parameter (running
 *                                     statistics included)
 *     momentum.safetensors            the optimiser's buffers, by parameter name
 *     state.txt                       "key value" lines: position (epoch,
 *                                     step, batcher state), the options that
 *                                     shape the trajectory, the partial
 *                                     epoch's sums
 *     train.jsonl                     the epoch log so far
 * written file by file (each atomically), and then published by rewriting
 * run_dir/checkpoint (the directory's name) atomically; only then is the
 * previous checkpoint removed.  A crash at any moment leaves `checkpoint`
 * naming a complete directory.  The batcher's permutation and augmentation
 * derive from (seed, epoch, batch index) only, so its state (epoch, pos) is
 * the whole random state of a run: resuming with the same options gives
 * the weights an uninterrupted run gives, bit for bit (with the same
 * thread count, which fixes the order of the sums). */
#include "ntc/train.h"
#include "ntc/runtime.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void ntc_train_opts_default(ntc_train_opts *o)
{
    *o = (ntc_train_opts){0};
    ntc_data_opts_default(&o->data);
    o->epochs = 15;
    o->batch = 128;
    o->seed = 1;
    o->augment_pad = 2;
    o->schedule = NTC_SCHED_COSINE;
    o->lr = 0.1;
    o->sgd = (ntc_sgd_opts){.momentum = 0.9, .weight_decay = 5e-4};
    o->lambda_teacher = 10.0;
    o->lambda_complexity = 0.3;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- evaluation ---------------------------------------------------------------------- */

int ntc_evaluate(ntc_graph *g, const ntc_dataset *ds, int batch, int threads, int64_t limit,
                 double *loss, double *acc, ntc_err *err)
{
    int64_t total = limit > 0 && limit < ds->n ? limit : ds->n;
    if (total < 1)
        return ntc_error(err, NULL, 0, "%s is empty", ds->name);
    if (batch > total)
        batch = (int)total;
    ntc_exec *x = ntc_exec_new_threads(g, batch, threads, err);
    if (!x)
        return -1;
    int k = (int)g->values[g->outputs[0].value].shape.dims[1];
    float *images = ntc_malloc(sizeof(float) * ntc_dataset_example_size(ds) * (size_t)batch);
    int32_t *labels = ntc_malloc(sizeof(int32_t) * (size_t)batch);
    int64_t *idx = ntc_malloc(sizeof(int64_t) * (size_t)batch);
    int rc = -1;
    if (!images || !labels || !idx) {
        ntc_error(err, NULL, 0, "out of memory for a batch of %d", batch);
        goto done;
    }
    double sum = 0.0;
    int64_t hits = 0;
    for (int64_t at = 0; at < total; at += batch) {
        int n = (int)(total - at < batch ? total - at : batch);
        for (int i = 0; i < n; i++)
            idx[i] = at + i;
        ntc_dataset_fill(ds, idx, n, images, labels);
        if (ntc_exec_run(x, (const float *[]){images}, n, err))
            goto done;
        const float *z = ntc_exec_output(x, 0);
        sum += ntc_loss_cross_entropy(z, labels, n, k, 1.0f, NULL) * n;
        hits += ntc_count_correct(z, labels, n, k);
    }
    *loss = sum / (double)total;
    *acc = (double)hits / (double)total;
    rc = 0;
done:
    ntc_free(images);
    ntc_free(labels);
    ntc_free(idx);
    ntc_exec_free(x);
    return rc;
}

/* ---- the run's state ----------------------------------------------------------------- */

/* Everything a checkpoint records besides weights and momentum. */
typedef struct {
    int64_t epoch;               /* epochs completed */
    int64_t step;                /* optimiser steps taken */
    int64_t pos;                 /* examples consumed in the current epoch */
    /* The partial epoch (so a resumed epoch reports the whole epoch). */
    double loss_sum, busy, teacher_sum;
    int64_t hits, seen;
} run_pos;

typedef struct {
    const ntc_train_opts *o;
    ntc_graph *g;
    ntc_dataset *train, *val;
    ntc_trainer *tr;
    ntc_sgd *opt;
    ntc_distill *dist;
    ntc_batcher *bat;
    ntc_schedule sched;
    int64_t steps_per_epoch;
    int classes;
    float *x;
    int32_t *y;
    run_pos at;
    char *log;                   /* the JSONL lines so far */
    size_t log_len;
    char last_ckpt[256];         /* directory name under run_dir, "" if none */
    char last_good[64];          /* "epoch N" of the last checkpoint */
} run;

/* The options a checkpoint must agree with to continue the same run. */
#define TRAJECTORY(X)                                  \
    X(epochs, "%d", o->epochs)                         \
    X(batch, "%d", o->batch)                           \
    X(limit, "%lld", (long long)o->limit)              \
    X(seed, "%llu", (unsigned long long)o->seed)       \
    X(augment_pad, "%d", o->augment_pad)               \
    X(val_size, "%lld", (long long)o->data.val_size)   \
    X(schedule, "%s", ntc_schedule_name(o->schedule))  \
    X(lr, "%.17g", o->lr)                              \
    X(warmup_epochs, "%.17g", o->warmup_epochs)        \
    X(momentum, "%.17g", o->sgd.momentum)              \
    X(weight_decay, "%.17g", o->sgd.weight_decay)      \
    X(alpha_lr_scale, "%.17g", o->sgd.alpha_lr_scale)  \
    X(lambda_teacher, "%.17g", o->lambda_teacher)      \
    X(lambda_complexity, "%.17g", o->lambda_complexity)

static char *path_join(const char *dir, const char *a, const char *b)
{
    size_t n = strlen(dir) + strlen(a) + (b ? strlen(b) : 0) + 3;
    char *p = ntc_malloc(n);
    if (p)
        snprintf(p, n, "%s/%s%s%s", dir, a, b ? "/" : "", b ? b : "");
    return p;
}

static int write_state(const run *r, const char *path, ntc_err *err)
{
    const ntc_train_opts *o = r->o;
    char buf[4096];
    int len = snprintf(buf, sizeof buf,
                       "format ntc-train-checkpoint-1\n"
                       "epoch %lld\nstep %lld\npos %lld\n"
                       "loss_sum %.17g\nbusy %.17g\nteacher_sum %.17g\nhits %lld\nseen %lld\n"
                       "threads %d\n",
                       (long long)r->at.epoch, (long long)r->at.step, (long long)r->at.pos, r->at.loss_sum,
                       r->at.busy, r->at.teacher_sum, (long long)r->at.hits, (long long)r->at.seen, ntc_trainer_threads(r->tr));
#define X(name, fmt, expr) len += snprintf(buf + len, sizeof buf - (size_t)len, #name " " fmt "\n", expr);
    TRAJECTORY(X)
#undef X
    return ntc_write_file_atomic(path, buf, (size_t)len, err);
}

/* Finds "key value" in text; the value into out (at most cap-1 chars). */
static bool state_get(const char *text, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (!strncmp(l, key, kl) && l[kl] == ' ') {
            const char *v = l + kl + 1, *e = strchr(v, '\n');
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return true;
        }
    }
    return false;
}

static int read_state(run *r, const char *path, ntc_err *err)
{
    const ntc_train_opts *o = r->o;
    char *text = ntc_read_file(path, NULL, err);
    if (!text)
        return -1;
    char v[256], want[256];
    int rc = -1;
    if (!state_get(text, "format", v, sizeof v) || strcmp(v, "ntc-train-checkpoint-1")) {
        ntc_error(err, path, 0, "not an ntc training checkpoint");
        goto done;
    }
    /* The run must be the same run. */
#define X(name, fmt, expr)                                                                       \
    snprintf(want, sizeof want, fmt, expr);                                                      \
    if (!state_get(text, #name, v, sizeof v) || strcmp(v, want)) {                               \
        ntc_error(err, path, 0, "the checkpoint was made with " #name " %s, this run has %s; resume " \
                  "with the options of the interrupted run", v, want);                          \
        goto done;                                                                               \
    }
    TRAJECTORY(X)
#undef X
    long long e, s, p, h, n;
    double ls, busy, ts;
    if (!state_get(text, "epoch", v, sizeof v) || sscanf(v, "%lld", &e) != 1 ||
        !state_get(text, "step", v, sizeof v) || sscanf(v, "%lld", &s) != 1 ||
        !state_get(text, "pos", v, sizeof v) || sscanf(v, "%lld", &p) != 1 ||
        !state_get(text, "hits", v, sizeof v) || sscanf(v, "%lld", &h) != 1 ||
        !state_get(text, "seen", v, sizeof v) || sscanf(v, "%lld", &n) != 1 ||
        !state_get(text, "loss_sum", v, sizeof v) || sscanf(v, "%lf", &ls) != 1 ||
        !state_get(text, "busy", v, sizeof v) || sscanf(v, "%lf", &busy) != 1 ||
        !state_get(text, "teacher_sum", v, sizeof v) || sscanf(v, "%lf", &ts) != 1) {
        ntc_error(err, path, 0, "checkpoint state is incomplete");
        goto done;
    }
    r->at = (run_pos){.epoch = e, .step = s, .pos = p, .loss_sum = ls, .busy = busy, .teacher_sum = ts,
                   .hits = h, .seen = n};
    if (state_get(text, "threads", v, sizeof v) && atoi(v) != ntc_trainer_threads(r->tr) && o->log)
        fprintf(o->log, "note: the checkpoint ran on %s threads, this run on %d: sums are ordered "
                        "differently, so results differ by rounding\n", v, ntc_trainer_threads(r->tr));
    rc = 0;
done:
    ntc_free(text);
    return rc;
}

/* The checkpoint directory run_dir/checkpoint names, into name; false if none. */
static bool current_checkpoint(const char *run_dir, char *name, size_t cap)
{
    char *p = path_join(run_dir, "checkpoint", NULL);
    char *text = p ? ntc_read_file(p, NULL, NULL) : NULL;
    ntc_free(p);
    if (!text)
        return false;
    size_t n = strcspn(text, "\n");
    bool ok = n > 0 && n < cap && !strchr(text, '/');
    if (ok) {
        memcpy(name, text, n);
        name[n] = 0;
    }
    ntc_free(text);
    return ok;
}

ntc_graph *ntc_train_checkpoint_graph(const char *run_dir, ntc_err *err)
{
    char name[256];
    if (!current_checkpoint(run_dir, name, sizeof name)) {
        ntc_error(err, run_dir, 0, "no checkpoint to resume from (no readable '%s/checkpoint')", run_dir);
        return NULL;
    }
    char *xml = path_join(run_dir, name, "model.xml");
    ntc_graph *g = xml ? ntc_graph_read_xml(xml, err) : NULL;
    ntc_free(xml);
    return g;
}

static void remove_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *f = path_join(path, e->d_name, NULL);
        if (f)
            unlink(f);
        ntc_free(f);
    }
    closedir(d);
    rmdir(path);
}

/* The momentum buffers as a safetensors file with one tensor per
 * parameter, named like the parameter: a graph read back from a
 * checkpoint may order its parameters differently. */
static ntc_graph *momentum_graph(const run *r, ntc_err *err)
{
    ntc_graph *m = ntc_graph_new("momentum");
    if (!m) {
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    float *buf = ntc_sgd_state(r->opt);
    int64_t off = 0;
    for (int i = 0; i < ntc_trainer_n_params(r->tr); i++) {
        const ntc_value *pv = &r->g->values[ntc_trainer_param(r->tr, i)];
        int v = ntc_graph_add_param(m, pv->name);
        if (v < 0) {
            ntc_graph_free(m);
            ntc_error(err, NULL, 0, "out of memory");
            return NULL;
        }
        m->values[v].shape = pv->shape;
        m->values[v].data = buf + off;       /* borrowed */
        off += ntc_shape_numel(&pv->shape);
    }
    return m;
}

static int save_momentum(const run *r, const char *path, ntc_err *err)
{
    ntc_graph *m = momentum_graph(r, err);
    if (!m)
        return -1;
    int rc = ntc_weights_save(m, path, err);
    ntc_graph_free(m);
    return rc;
}

static int load_momentum(const run *r, const char *path, ntc_err *err)
{
    ntc_graph *m = momentum_graph(r, err);
    if (!m)
        return -1;
    float *buf = ntc_sgd_state(r->opt);
    for (int v = 0; v < m->n_values; v++)
        m->values[v].data = NULL;
    int rc = ntc_weights_load(m, path, err);
    int64_t off = 0;
    for (int v = 0; !rc && v < m->n_values; v++) {
        int64_t cnt = ntc_shape_numel(&m->values[v].shape);
        if (!m->values[v].data)
            rc = ntc_error(err, path, 0, "no momentum for parameter '%s'", m->values[v].name);
        else
            memcpy(buf + off, m->values[v].data, sizeof(float) * (size_t)cnt);
        off += cnt;
    }
    ntc_graph_free(m);
    return rc;
}

/* "the last good checkpoint, DIR/NAME (epoch N), is kept", or that there
 * is none yet. */
static void describe_kept(const run *r, char *buf, size_t cap)
{
    if (r->last_ckpt[0])
        snprintf(buf, cap, "the last good checkpoint, %s/%s (%s), is kept", r->o->run_dir, r->last_ckpt,
                 r->last_good);
    else
        snprintf(buf, cap, "no checkpoint was written yet");
}

/* Appends to err's message what a failed checkpoint leaves behind. */
static void checkpoint_failed(const run *r, const char *name, ntc_err *err)
{
    if (!err)
        return;
    char kept[1400];
    describe_kept(r, kept, sizeof kept);
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof err->msg - n, "; checkpoint %s (epoch %lld) is not written, %s%s%s",
             name, (long long)r->at.epoch, kept, r->last_ckpt[0] ? ": make room, then resume with --resume " : "",
             r->last_ckpt[0] ? r->o->run_dir : "");
}

/* Writes run_dir/ckpt-<step>/ and publishes it.  A write that fails (disk
 * full, quota, file size limit) removes the unpublished directory and
 * leaves the previous checkpoint published and untouched. */
static int write_checkpoint(run *r, ntc_err *err)
{
    const char *dir = r->o->run_dir;
    char name[64];
    snprintf(name, sizeof name, "ckpt-%08lld", (long long)r->at.step);
    char *cdir = path_join(dir, name, NULL), *xml = path_join(dir, name, "model.xml");
    char *wts = path_join(dir, name, "model.safetensors"), *mom = path_join(dir, name, "momentum.safetensors");
    char *st = path_join(dir, name, "state.txt"), *lg = path_join(dir, name, "train.jsonl");
    char *ptr = path_join(dir, "checkpoint", NULL), *top_log = path_join(dir, "train.jsonl", NULL);
    char *old = r->last_ckpt[0] ? path_join(dir, r->last_ckpt, NULL) : NULL;
    int rc = -1;
    if (!cdir || !xml || !wts || !mom || !st || !lg || !ptr || !top_log || (r->last_ckpt[0] && !old)) {
        ntc_error(err, dir, 0, "out of memory");
        goto done;
    }
    if (!strcmp(name, r->last_ckpt)) {
        rc = 0;                  /* already written at this step */
        goto done;
    }
    /* A directory of this name left by a run killed while writing it is
     * not published (only `checkpoint` publishes): it is rewritten. */
    if (mkdir(cdir, 0777) && errno != EEXIST) {
        ntc_error(err, cdir, 0, "cannot create the checkpoint directory: %s", strerror(errno));
        checkpoint_failed(r, name, err);
        goto done;
    }
    /* The graph's weights file name is recorded relative to the XML, so the
     * graph must be told where it now lives; its final name is restored by
     * the next write. */
    char line[80];
    int n = snprintf(line, sizeof line, "%s\n", name);
    if (ntc_graph_write_xml(r->g, xml, wts, err) || save_momentum(r, mom, err) ||
        ntc_write_file_atomic(lg, r->log ? r->log : "", r->log_len, err) || write_state(r, st, err) ||
        ntc_write_file_atomic(ptr, line, (size_t)n, err)) {
        /* Unless it is what `checkpoint` names (a fresh run started in an
         * old run's directory may reach the same step name), the partial
         * directory goes. */
        char published[256];
        if (!current_checkpoint(dir, published, sizeof published) || strcmp(published, name))
            remove_dir(cdir);
        checkpoint_failed(r, name, err);
        goto done;
    }
    /* Published: the previous checkpoint is no longer needed. */
    if (old)
        remove_dir(old);
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", name);
    snprintf(r->last_good, sizeof r->last_good, "epoch %lld%s", (long long)r->at.epoch,
             r->at.pos ? " + part of the next" : "");
    /* The run's log next to the checkpoints, for people and plots (resume
     * reads the checkpoint's copy). */
    if (ntc_write_file_atomic(top_log, r->log ? r->log : "", r->log_len, err)) {
        size_t len = err ? strlen(err->msg) : 0;
        if (err)
            snprintf(err->msg + len, sizeof err->msg - len, "; checkpoint %s/%s is written; make room, then "
                     "resume with --resume %s", dir, name, dir);
        goto done;
    }
    rc = 0;
done:
    ntc_free(cdir), ntc_free(xml), ntc_free(wts), ntc_free(mom), ntc_free(st), ntc_free(lg);
    ntc_free(ptr), ntc_free(top_log), ntc_free(old);
    return rc;
}

/* Restores momentum, position and log from run_dir's checkpoint (the
 * weights came with the graph the caller loaded from it). */
static int load_checkpoint(run *r, ntc_err *err)
{
    const char *dir = r->o->run_dir;
    char name[256];
    if (!current_checkpoint(dir, name, sizeof name))
        return ntc_error(err, dir, 0, "no checkpoint to resume from");
    char *mom = path_join(dir, name, "momentum.safetensors"), *st = path_join(dir, name, "state.txt");
    char *lg = path_join(dir, name, "train.jsonl");
    int rc = -1;
    if (!mom || !st || !lg) {
        ntc_error(err, dir, 0, "out of memory");
        goto done;
    }
    if (read_state(r, st, err) || load_momentum(r, mom, err))
        goto done;
    size_t len = 0;
    char *text = ntc_read_file(lg, &len, err);
    if (!text)
        goto done;
    ntc_free(r->log);
    r->log = text;
    r->log_len = len;
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", name);
    snprintf(r->last_good, sizeof r->last_good, "epoch %lld", (long long)r->at.epoch);
    rc = 0;
done:
    ntc_free(mom), ntc_free(st), ntc_free(lg);
    return rc;
}

static int log_append(run *r, const char *line)
{
    size_t n = strlen(line);
    char *p = ntc_realloc(r->log, r->log_len + n + 1);
    if (!p)
        return -1;
    memcpy(p + r->log_len, line, n + 1);
    r->log = p;
    r->log_len += n;
    return 0;
}

/* ---- setup ------------------------------------------------------------------------------ */

static int open_data(run *r, ntc_err *err)
{
    const ntc_train_opts *o = r->o;
    ntc_graph *g = r->g;
    if (g->n_inputs != 1 || g->values[g->inputs[0]].shape.rank != 4)
        return ntc_error(err, g->path, 0, "training needs a graph with one image input [N,C,H,W]");
    if (g->n_outputs < 1 || g->values[g->outputs[0].value].shape.rank != 2)
        return ntc_error(err, g->path, 0, "training needs logits [N,K] as the graph's first output");
    const ntc_shape *s = &g->values[g->inputs[0]].shape;
    ntc_data_opts d = o->data;
    d.channels = (int)s->dims[1], d.height = (int)s->dims[2], d.width = (int)s->dims[3];
    d.split = NTC_SPLIT_TRAIN;
    if (!(r->train = ntc_dataset_open(&d, err)))
        return -1;
    r->classes = (int)g->values[g->outputs[0].value].shape.dims[1];
    if (r->train->n_classes > r->classes)
        return ntc_error(err, g->path, 0, "%s has %d classes, the graph's logits only %d", r->train->name,
                         r->train->n_classes, r->classes);
    if (d.val_size > 0) {
        d.split = NTC_SPLIT_VAL;
        if (!(r->val = ntc_dataset_open(&d, err)))
            return -1;
    }
    ntc_batch_opts bo = {.batch = o->batch, .shuffle = true, .seed = o->seed, .aug = {.pad = o->augment_pad}};
    if (!(r->bat = ntc_batcher_new(r->train, &bo, err)))
        return -1;
    r->steps_per_epoch = ntc_batcher_batches_per_epoch(r->bat);
    if (o->limit > 0) {
        int64_t lim = (o->limit + o->batch - 1) / o->batch;
        r->steps_per_epoch = lim < r->steps_per_epoch ? lim : r->steps_per_epoch;
    }
    if (!(r->x = ntc_malloc(sizeof(float) * ntc_dataset_example_size(r->train) * (size_t)o->batch)) ||
        !(r->y = ntc_malloc(sizeof(int32_t) * (size_t)o->batch)))
        return ntc_error(err, NULL, 0, "out of memory");
    return 0;
}

static int setup(run *r, ntc_err *err)
{
    const ntc_train_opts *o = r->o;
    if (o->epochs < 1 || o->batch < 1 || !(o->lr > 0))
        return ntc_error(err, NULL, 0, "epochs and batch must be >= 1 and lr > 0");
    if (open_data(r, err))
        return -1;
    if (!(r->tr = ntc_trainer_new(r->g, o->batch, o->threads, err)) || !(r->opt = ntc_sgd_new(r->tr, &o->sgd, err)))
        return -1;
    if (ntc_trainer_n_params(r->tr) == 0)
        return ntc_error(err, r->g->path, 0, "nothing to train: every parameter is frozen");
    if (o->nettailor && !(r->dist = ntc_distill_new(r->tr, o->teacher, o->lambda_teacher, o->lambda_complexity,
                                                     o->batch, o->threads, err)))
        return -1;
    r->sched = (ntc_schedule){.kind = o->schedule, .lr = o->lr, .total_steps = r->steps_per_epoch * o->epochs,
                              .warmup_steps = (int64_t)(o->warmup_epochs * (double)r->steps_per_epoch)};
    if (o->resume && load_checkpoint(r, err))
        return -1;
    return 0;
}

static void teardown(run *r)
{
    ntc_distill_free(r->dist);
    ntc_sgd_free(r->opt);
    ntc_trainer_free(r->tr);
    ntc_batcher_free(r->bat);
    ntc_dataset_free(r->train);
    ntc_dataset_free(r->val);
    ntc_free(r->x);
    ntc_free(r->y);
    ntc_free(r->log);
}

/* ---- steps and epochs ------------------------------------------------------------------ */

/* One SGD step on n examples; the loss (cross-entropy plus the NetTailor
 * terms) into *loss. */
static int step(run *r, int n, double lr, double *ce, double *lt, double *total, ntc_err *err)
{
    ntc_graph *g = r->g;
    const float *in[] = {r->x};
    if (ntc_trainer_forward(r->tr, in, n, true, err))
        return -1;
    const float *z = ntc_trainer_value(r->tr, g->outputs[0].value);
    for (int i = 0; i < n; i++)
        if (r->y[i] < 0 || r->y[i] >= r->classes)
            return ntc_error(err, NULL, 0, "label %d out of range 0..%d", r->y[i], r->classes - 1);
    *ce = ntc_loss_cross_entropy(z, r->y, n, r->classes, 1.0f, ntc_trainer_output_grad(r->tr, 0));
    r->at.hits += ntc_count_correct(z, r->y, n, r->classes);
    double ec = 0.0;
    *lt = 0.0;
    if (r->dist && ntc_distill_forward(r->dist, in, n, lt, err))
        return -1;
    *total = *ce + r->o->lambda_teacher * *lt;
    if (!isfinite(*total))
        return 0;                /* the caller stops before touching the weights */
    if (ntc_trainer_backward(r->tr, err))
        return -1;
    if (r->dist) {
        ec = ntc_distill_complexity(r->dist, true);
        *total += r->o->lambda_complexity * ec;
    }
    ntc_sgd_step(r->opt, lr);
    return 0;
}

static void progress(run *r, double t0, double ce)
{
    const ntc_train_opts *o = r->o;
    if (!o->log)
        return;
    int64_t done = r->at.pos / o->batch;
    double ips = r->at.busy > 0 ? (double)r->at.seen / r->at.busy : 0.0;
    double acc = r->at.seen ? 100.0 * (double)r->at.hits / (double)r->at.seen : 0.0;
    if (o->progress) {
        fprintf(o->log, "\repoch %lld/%d  step %lld/%lld  loss %.4f  acc %.2f%%  %.0f img/s   ",
                (long long)r->at.epoch + 1, o->epochs, (long long)done, (long long)r->steps_per_epoch,
                r->at.seen ? r->at.loss_sum / (double)r->at.seen : ce, acc, ips);
        fflush(o->log);
    } else if (done % 100 == 0) {
        fprintf(o->log, "epoch %lld/%d step %lld/%lld loss %.4f acc %.2f%% %.0f img/s (%.0f s)\n",
                (long long)r->at.epoch + 1, o->epochs, (long long)done, (long long)r->steps_per_epoch,
                r->at.loss_sum / (double)r->at.seen, acc, ips, now() - t0);
    }
}

/* Validation, the epoch's log line and JSONL record. */
static int end_epoch(run *r, double lr, ntc_train_result *res, ntc_err *err)
{
    const ntc_train_opts *o = r->o;
    double vl = NAN, va = NAN;
    if (r->val && ntc_evaluate(r->g, r->val, o->batch, o->threads, 0, &vl, &va, err))
        return -1;
    double tl = r->at.loss_sum / (double)r->at.seen, ta = (double)r->at.hits / (double)r->at.seen;
    double ips = r->at.busy > 0 ? (double)r->at.seen / r->at.busy : 0.0;
    double ec = r->dist ? ntc_distill_complexity(r->dist, false) : 0.0;
    if (o->log) {
        fprintf(o->log, "%sepoch %lld/%d  lr %.4g  train loss %.4f acc %.2f%%", o->progress ? "\r" : "",
                (long long)r->at.epoch + 1, o->epochs, lr, tl, 100 * ta);
        if (r->val)
            fprintf(o->log, "  val loss %.4f acc %.2f%%", vl, 100 * va);
        if (r->o->teacher)
            fprintf(o->log, "  L_t %.4f", r->at.teacher_sum / (double)r->at.seen);
        if (r->dist && ntc_distill_layers(r->dist))
            fprintf(o->log, "  E[C] %.4f", ec);
        fprintf(o->log, "  %.1f s  %.0f img/s      \n", r->at.busy, ips);
        fflush(o->log);
    }
    char line[512], val[128] = "\"val_loss\": null, \"val_acc\": null";
    if (r->val)
        snprintf(val, sizeof val, "\"val_loss\": %.6f, \"val_acc\": %.6f", vl, va);
    snprintf(line, sizeof line,
             "{\"epoch\": %lld, \"lr\": %.6g, \"train_loss\": %.6f, \"train_acc\": %.6f, %s, "
             "\"teacher_loss\": %.6f, \"complexity\": %.6f, \"time\": %.3f, \"images_per_s\": %.1f}\n",
             (long long)r->at.epoch + 1, lr, tl, ta, val, r->at.teacher_sum / (double)r->at.seen, ec, r->at.busy, ips);
    if (log_append(r, line))
        return ntc_error(err, NULL, 0, "out of memory");
    *res = (ntc_train_result){.epochs_done = (int)r->at.epoch + 1, .steps = r->at.step, .train_loss = tl,
                              .train_acc = ta, .val_loss = vl, .val_acc = va, .images_per_s = ips,
                              .seconds = r->at.busy, .complexity = ec};
    return 0;
}

/* The number after "key": in a JSONL record of end_epoch; false if absent
 * or null. */
static bool record_number(const char *rec, const char *key, double *out)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(rec, pat);
    return p && sscanf(p + strlen(pat), "%lf", out) == 1;
}

/* A resumed run that had already finished trains no epoch: its result is
 * the last epoch of the log it resumed. */
static void result_from_log(const run *r, ntc_train_result *res)
{
    if (!r->log || !r->log_len)
        return;
    const char *rec = r->log + r->log_len;
    if (rec[-1] == '\n')
        rec--;
    while (rec > r->log && rec[-1] != '\n')
        rec--;
    double v;
    if (record_number(rec, "train_loss", &v))
        res->train_loss = v;
    if (record_number(rec, "train_acc", &v))
        res->train_acc = v;
    if (record_number(rec, "val_loss", &v))
        res->val_loss = v;
    if (record_number(rec, "val_acc", &v))
        res->val_acc = v;
    if (record_number(rec, "images_per_s", &v))
        res->images_per_s = v;
    if (record_number(rec, "time", &v))
        res->seconds = v;
}

static bool stop_requested(const run *r)
{
    const ntc_train_opts *o = r->o;
    return (o->stop && *o->stop) || (o->stop_after_steps > 0 && r->at.step >= o->stop_after_steps);
}

int ntc_train(ntc_graph *g, const ntc_train_opts *o, ntc_train_result *res, ntc_err *err)
{
    run r = {.o = o, .g = g};
    *res = (ntc_train_result){.val_loss = NAN, .val_acc = NAN};
    int rc = -1;
    if (setup(&r, err))
        goto done;
    double t0 = now();
    bool trained = false;
    while (r.at.epoch < o->epochs) {
        ntc_batcher_state bs = {.epoch = r.at.epoch, .pos = r.at.pos};
        if (ntc_batcher_set_state(r.bat, bs, err))
            goto done;
        double lr = ntc_schedule_lr(&r.sched, r.at.step);
        while (r.at.pos / o->batch < r.steps_per_epoch) {
            if (stop_requested(&r)) {
                if (write_checkpoint(&r, err))
                    goto done;
                snprintf(res->checkpoint, sizeof res->checkpoint, "%s/%s", o->run_dir, r.last_ckpt);
                res->steps = r.at.step;
                res->epochs_done = (int)r.at.epoch;
                rc = NTC_TRAIN_STOPPED;
                goto done;
            }
            int n = ntc_batcher_next(r.bat, r.x, r.y);
            if (n <= 0)
                break;
            lr = ntc_schedule_lr(&r.sched, r.at.step);
            double ce = 0, lt = 0, total = 0, ts = now();
            if (step(&r, n, lr, &ce, &lt, &total, err))
                goto done;
            if (!isfinite(total)) {
                char kept[1400];
                describe_kept(&r, kept, sizeof kept);
                ntc_error(err, NULL, 0, "the loss became %s at epoch %lld, step %lld (lr %.4g): training stopped; "
                          "%s; try a lower --lr", isnan(total) ? "NaN" : "infinite", (long long)r.at.epoch + 1,
                          (long long)r.at.step + 1, lr, kept);
                goto done;
            }
            r.at.busy += now() - ts;
            r.at.loss_sum += ce * n;
            r.at.teacher_sum += lt * n;
            r.at.seen += n;
            r.at.pos += n;
            r.at.step++;
            progress(&r, t0, ce);
        }
        if (end_epoch(&r, lr, res, err))
            goto done;
        trained = true;
        r.at = (run_pos){.epoch = r.at.epoch + 1, .step = r.at.step};
        if (write_checkpoint(&r, err))
            goto done;
    }
    if (!trained)
        result_from_log(&r, res);
    res->steps = r.at.step;
    res->epochs_done = (int)r.at.epoch;
    if (r.dist)
        res->complexity = ntc_distill_complexity(r.dist, false);
    snprintf(res->checkpoint, sizeof res->checkpoint, "%s/%s", o->run_dir, r.last_ckpt);
    rc = NTC_TRAIN_DONE;
done:
    teardown(&r);
    return rc;
}
