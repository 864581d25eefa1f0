/* ntc train: SGD training of a classifier graph on a dataset, with
 * checkpoints, resume and clean interruption; with --teacher (or on a
 * graph with mix nodes) NetTailor's architecture training. */
#include "driver.h"
#include "preflight.h"
#include "ntc/data.h"
#include "ntc/train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char train_help[] =
    "usage: ntc train GRAPH.xml --data SOURCE -o OUT.xml [OPTIONS]\n"
    "       ntc train [GRAPH.xml] --resume RUN_DIR -o OUT.xml [the interrupted run's OPTIONS]\n"
    "\n"
    "Trains the graph (one image input [N,C,H,W], first output the logits [N,K])\n"
    "with SGD on the training split, evaluates it on the test split and writes\n"
    "OUT.xml and OUT.safetensors.  Every epoch writes a checkpoint and a line of\n"
    "RUN_DIR/train.jsonl; Ctrl-C (SIGINT) or SIGTERM finishes the current step,\n"
    "writes a checkpoint and stops; --resume continues exactly where it stopped.\n"
    "Before training, OUT's directory and RUN_DIR must be writable and have room\n"
    "for a checkpoint; a write that fails later (disk full) stops the run and\n"
    "keeps the last good checkpoint.\n"
    "\n"
    "options:\n"
    "  --data SOURCE        fashion-mnist, digits, a folder of PNGs per class, or\n"
    "                       IMAGES,LABELS (two .npy or two IDX files)\n"
    "  --epochs E           passes over the training data (default 15)\n"
    "  --batch B            examples per step (default 128)\n"
    "  --lr LR              base learning rate (default 0.1)\n"
    "  --schedule S         cosine (default), step (x0.1 at 50% and 75%) or constant\n"
    "  --warmup EPOCHS      linear learning-rate warm-up (default 0)\n"
    "  --momentum M         SGD momentum (default 0.9)\n"
    "  --wd WD              weight decay of conv/linear weights (default 5e-4;\n"
    "                       never on batchnorm parameters or alphas)\n"
    "  --alpha-lr LR        learning rate of the alpha logits (default: --lr)\n"
    "  --seed S             shuffling and augmentation seed (default 1)\n"
    "  --val N              hold N training examples out for validation (default 0)\n"
    "  --augment crop|none  random crop with 2 pixels of padding (default crop)\n"
    "  --threads T          worker threads (default: one per CPU)\n"
    "  --limit N            examples per epoch, for quick runs (default: all)\n"
    "  --resize             resample images to the graph's input size\n"
    "  --teacher T.xml      NetTailor: distil each layer and the logits from T\n"
    "  --lambda-teacher X   weight of the distillation loss (default 10)\n"
    "  --lambda-complexity X  weight of the expected complexity E[C] (default 0.3;\n"
    "                       0 when retraining a pruned network)\n"
    "  --run-dir DIR        checkpoints and log (default: OUT without .xml + .run)\n"
    "  --resume DIR         continue the run whose checkpoint is in DIR\n"
    "  --no-test            skip the final evaluation on the test split\n"
    "  -o OUT.xml           where to write the trained graph\n"
    "\n"
    "examples:\n"
    "  ntc train backbone.xml --data fashion-mnist --epochs 15 -o fmnist.xml\n"
    "  ntc train student.xml --teacher teacher.xml --data digits --lambda-teacher 10 \\\n"
    "      --lambda-complexity 0.3 -o tuned.xml\n";

typedef struct {
    const char *graph, *out, *teacher, *run_dir, *resume;
    ntc_train_opts t;
    bool no_test;
} train_cli;

static int parse_number(const char *opt, const char *v, double lo, double *out)
{
    if (drv_parse_float("train", opt, v, out))
        return 2;
    if (!(*out >= lo) || !isfinite(*out))
        return drv_usage("train", "%s must be a number >= %g, got '%s'", opt, lo, v);
    return 0;
}

static int parse_count(const char *opt, const char *v, long lo, long *out)
{
    if (drv_parse_int("train", opt, v, out))
        return 2;
    if (*out < lo)
        return drv_usage("train", "%s must be >= %ld, got %ld", opt, lo, *out);
    return 0;
}

static int parse(int argc, char **argv, train_cli *c)
{
    ntc_train_opts_default(&c->t);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(train_help, stdout);
            return -1;
        }
        if (!strcmp(a, "--resize")) {
            c->t.data.resize = true;
            continue;
        }
        if (!strcmp(a, "--no-test")) {
            c->no_test = true;
            continue;
        }
        if (a[0] != '-') {
            if (c->graph)
                return drv_usage("train", "more than one graph ('%s' and '%s')", c->graph, a);
            c->graph = a;
            continue;
        }
        if (i + 1 >= argc)
            return drv_usage("train", "%s needs a value", a);
        const char *v = argv[++i];
        long n = 0;
        double f = 0;
        int rc = 0;
        if (!strcmp(a, "--data"))
            c->t.data.source = v;
        else if (!strcmp(a, "-o"))
            c->out = v;
        else if (!strcmp(a, "--teacher"))
            c->teacher = v;
        else if (!strcmp(a, "--run-dir"))
            c->run_dir = v;
        else if (!strcmp(a, "--resume"))
            c->resume = v;
        else if (!strcmp(a, "--epochs")) {
            if (!(rc = parse_count(a, v, 1, &n)))
                c->t.epochs = (int)n;
        } else if (!strcmp(a, "--batch")) {
            if (!(rc = parse_count(a, v, 2, &n)))
                c->t.batch = (int)n;
        } else if (!strcmp(a, "--threads")) {
            if (!(rc = parse_count(a, v, 1, &n)))
                c->t.threads = (int)n;
        } else if (!strcmp(a, "--limit")) {
            if (!(rc = parse_count(a, v, 1, &n)))
                c->t.limit = n;
        } else if (!strcmp(a, "--val")) {
            if (!(rc = parse_count(a, v, 0, &n)))
                c->t.data.val_size = n;
        } else if (!strcmp(a, "--seed")) {
            if (!(rc = parse_count(a, v, 0, &n)))
                c->t.seed = (uint64_t)n;
        } else if (!strcmp(a, "--lr")) {
            if (!(rc = parse_number(a, v, 0, &f)) && !(f > 0))
                rc = drv_usage("train", "--lr must be > 0");
            c->t.lr = f;
        } else if (!strcmp(a, "--alpha-lr")) {
            if (!(rc = parse_number(a, v, 0, &f)))
                c->t.sgd.alpha_lr_scale = f;   /* made relative to --lr below */
        } else if (!strcmp(a, "--momentum")) {
            if (!(rc = parse_number(a, v, 0, &f)) && f >= 1)
                rc = drv_usage("train", "--momentum must be below 1");
            c->t.sgd.momentum = f;
        } else if (!strcmp(a, "--wd")) {
            if (!(rc = parse_number(a, v, 0, &f)))
                c->t.sgd.weight_decay = f;
        } else if (!strcmp(a, "--warmup")) {
            if (!(rc = parse_number(a, v, 0, &f)))
                c->t.warmup_epochs = f;
        } else if (!strcmp(a, "--lambda-teacher")) {
            if (!(rc = parse_number(a, v, 0, &f)))
                c->t.lambda_teacher = f;
        } else if (!strcmp(a, "--lambda-complexity")) {
            if (!(rc = parse_number(a, v, 0, &f)))
                c->t.lambda_complexity = f;
        } else if (!strcmp(a, "--schedule")) {
            if (ntc_schedule_parse(v, &c->t.schedule))
                rc = drv_usage("train", "--schedule must be cosine, step or constant, got '%s'", v);
        } else if (!strcmp(a, "--augment")) {
            if (!strcmp(v, "crop"))
                c->t.augment_pad = 2;
            else if (!strcmp(v, "none"))
                c->t.augment_pad = 0;
            else
                rc = drv_usage("train", "--augment must be crop or none, got '%s'", v);
        } else {
            rc = drv_usage("train", "unknown option '%s'", a);
        }
        if (rc)
            return rc;
    }
    if (!c->graph && !c->resume)
        return drv_usage("train", "no graph given");
    if (!c->t.data.source)
        return drv_usage("train", "no --data given");
    if (!c->out)
        return drv_usage("train", "no output given (-o OUT.xml)");
    if (c->resume && c->run_dir && strcmp(c->resume, c->run_dir))
        return drv_usage("train", "--resume and --run-dir name different directories");
    if (c->t.sgd.alpha_lr_scale > 0)
        c->t.sgd.alpha_lr_scale /= c->t.lr;
    return 0;
}

/* The directory part of path ("." for a bare name), malloc'ed. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* The bytes of every tensor the weights file holds (running statistics
 * included): a lower bound of that file's size. */
static int64_t weights_bytes(const ntc_graph *g)
{
    int64_t n = 0;
    for (int v = 0; v < g->n_values; v++)
        if (!g->values[v].dead && g->values[v].kind == NTC_VAL_PARAM)
            n += ntc_shape_numel(&g->values[v].shape) * (int64_t)sizeof(float);
    return n;
}

/* The run directory: --resume's or --run-dir's, else OUT without its
 * extension + ".run"; malloc'ed. */
static char *run_dir_name(const train_cli *c)
{
    if (c->resume || c->run_dir)
        return strdup(c->resume ? c->resume : c->run_dir);
    const char *dot = strrchr(c->out, '.'), *slash = strrchr(c->out, '/');
    size_t n = dot && (!slash || dot > slash) ? (size_t)(dot - c->out) : strlen(c->out);
    char *d = malloc(n + 5);
    if (d)
        snprintf(d, n + 5, "%.*s.run", (int)n, c->out);
    return d;
}

/* Fails, naming the path, unless the output can be written and the run
 * directory exists (made here) and has room for a checkpoint: all checked
 * before any training, so a typo in -o or a full disk costs seconds, not
 * the run.  A checkpoint holds the weights and the momentum (no larger
 * than the weights); reserving twice the weights never asks for more than
 * the run needs, which is two checkpoints while one replaces the other. */
static int check_paths(const train_cli *c, const ntc_graph *g, const char *weights, const char *run_dir)
{
    const char *outs[] = {c->out, weights};
    for (int i = 0; i < 2; i++) {
        struct stat sb;
        if (stat(outs[i], &sb) == 0 && S_ISDIR(sb.st_mode))
            return drv_failf("%s: cannot write the trained %s there: it is a directory", outs[i],
                             i ? "weights" : "graph");
    }
    char *od = dir_of(c->out);
    if (!od)
        return drv_failf("out of memory");
    ntc_err err = {0};
    /* The output's directory first: the default run directory lies in it. */
    preflight_file out = {od, 0, "the trained graph"};
    int rc = preflight(&out, 1, &err);
    bool made = false;
    if (rc == 0 && !c->resume) {
        if (mkdir(run_dir, 0777) == 0)
            made = true;
        else if (errno != EEXIST)
            rc = ntc_error(&err, run_dir, 0, "cannot create the run directory: %s", strerror(errno));
    }
    if (rc == 0) {
        int64_t wb = weights_bytes(g);
        preflight_file files[] = {
            {od, wb, "the trained weights"},
            {run_dir, wb, "checkpoints"},
            {run_dir, wb, "checkpoints"},
        };
        if ((rc = preflight(files, 3, &err)) && made)
            rmdir(run_dir);
    }
    free(od);
    return rc ? drv_fail(&err) : 0;
}

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static bool has_mix(const ntc_graph *g)
{
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].op == NTC_OP_mix)
            return true;
    return false;
}

/* Final evaluation on the test split. */
static int test_eval(train_cli *c, ntc_graph *g)
{
    ntc_err err = {0};
    ntc_data_opts d = c->t.data;
    const ntc_shape *s = &g->values[g->inputs[0]].shape;
    d.channels = (int)s->dims[1], d.height = (int)s->dims[2], d.width = (int)s->dims[3];
    d.split = NTC_SPLIT_TEST;
    ntc_dataset *ds = ntc_dataset_open(&d, &err);
    double loss = 0, acc = 0;
    if (!ds || ntc_evaluate(g, ds, 256, c->t.threads, 0, &loss, &acc, &err)) {
        ntc_dataset_free(ds);
        return drv_fail(&err);
    }
    printf("test: accuracy %.2f%%  loss %.4f  on %s (%lld images)\n", 100 * acc, loss, ds->name, (long long)ds->n);
    ntc_dataset_free(ds);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    train_cli c = {0};
    int rc = parse(argc, argv, &c);
    if (rc)
        return rc < 0 ? 0 : rc;
    char *run_dir = NULL, *weights = NULL;
    ntc_graph *g = NULL, *teacher = NULL;
    ntc_err err = {0};
    rc = 1;
    if (c.resume) {
        if (!(g = ntc_train_checkpoint_graph(c.resume, &err))) {
            drv_fail(&err);
            goto done;
        }
    } else if (!(g = drv_read_graph(c.graph))) {
        goto done;
    }
    if (c.teacher && !(teacher = drv_read_graph(c.teacher)))
        goto done;
    if (!(weights = drv_weights_name(c.out)) || !(run_dir = run_dir_name(&c))) {
        drv_failf("out of memory");
        goto done;
    }
    if (check_paths(&c, g, weights, run_dir))
        goto done;
    c.t.teacher = teacher;
    c.t.nettailor = teacher || has_mix(g);
    c.t.run_dir = run_dir;
    c.t.resume = c.resume != NULL;
    c.t.log = stderr;
    c.t.progress = isatty(fileno(stderr));
    c.t.stop = &stop_flag;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    ntc_train_result res;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int st = ntc_train(g, &c.t, &res, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (st < 0) {
        drv_fail(&err);
        goto done;
    }
    if (st == NTC_TRAIN_STOPPED) {
        fprintf(stderr, "ntc: interrupted after %lld steps; checkpoint %s\n"
                        "ntc: resume with the same options plus: --resume %s\n",
                (long long)res.steps, res.checkpoint, run_dir);
        rc = 130;
        goto done;
    }
    printf("trained %d epochs (%lld steps) in %.1f s; last epoch: train loss %.4f acc %.2f%%, %.0f images/s\n",
           res.epochs_done, (long long)res.steps, wall, res.train_loss, 100 * res.train_acc, res.images_per_s);
    if (c.t.nettailor)
        printf("E[C] %.4f\n", res.complexity);
    if (!c.no_test && test_eval(&c, g))
        goto done;
    if (ntc_graph_write_xml(g, c.out, weights, &err)) {
        drv_fail(&err);
        fprintf(stderr, "ntc: the trained model is kept in the checkpoint %s; to write %s again, run the "
                        "same command with --resume %s\n", res.checkpoint, c.out, run_dir);
        goto done;
    }
    printf("wrote %s and %s\n", c.out, weights);
    rc = 0;
done:
    ntc_graph_free(teacher);
    ntc_graph_free(g);
    free(run_dir);
    free(weights);
    return rc;
}
