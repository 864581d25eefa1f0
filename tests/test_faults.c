/* Allocation-failure injection along a representative path of ntc:
 *
 *   read a graph with its weights -> tailor it (training mode) -> run the
 *   interpreter forward -> one training step (forward, loss, backward,
 *   SGD) -> JIT-compile and run the tailored graph.
 *
 * Every allocation of libntc goes through the hook of ntc/util.h.  The test
 * first runs the path with a counting hook (N allocations), then, for
 * every n = 1, 2, ..., runs it again failing the n-th allocation, until a
 * run no longer reaches allocation n.  Each failing run must return an
 * error whose message says memory ran out, and leave no ntc allocation
 * alive.  (libxml2, OpenBLAS and LLVM allocate through their own
 * allocators; only ntc's own allocations are exercised here.)
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ntc/frontends.h"
#include "ntc/jit.h"
#include "ntc/pass.h"
#include "ntc/runtime.h"
#include "ntc/train.h"
#include "testutil.h"

/* ---- the hook: counts live blocks, fails allocation number fail_at ---------- */

/* Atomic: the interpreter's and the JIT's worker threads allocate too. */
static atomic_long live_blocks, alloc_calls;
static long fail_at;                     /* 0: never fail */

static void *faulty_alloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    if (size == 0) {
        if (ptr)
            atomic_fetch_sub(&live_blocks, 1);
        free(ptr);
        return NULL;
    }
    if (atomic_fetch_add(&alloc_calls, 1) + 1 == fail_at)
        return NULL;
    void *p = realloc(ptr, size);
    if (p && !ptr)
        atomic_fetch_add(&live_blocks, 1);
    return p;
}

static void hook(long fail)
{
    atomic_store(&live_blocks, 0);
    atomic_store(&alloc_calls, 0);
    fail_at = fail;
    ntc_set_allocator(faulty_alloc, NULL);
}

static void unhook(void) { ntc_set_allocator(NULL, NULL); }

/* ---- the path ---------------------------------------------------------------- */

enum { BATCH = 2, CLASSES = 3 };

typedef enum { STEP_READ, STEP_TAILOR, STEP_FORWARD, STEP_TRAIN, STEP_JIT, STEP_DONE } step;
static const char *const step_names[] = {"read", "tailor", "forward", "train", "jit", "done"};

/* A ResNet-8 backbone on 1x8x8 images with narrow stages, written with its
 * weights to a fresh directory (without the hook).  Returns the XML path. */
static const char *write_backbone(void)
{
    static char path[1024];
    ntc_resnet_opts o;
    ntc_err err = {0};
    ntc_resnet_opts_default(&o);
    o.depth = 8;
    o.classes = 4;
    ck_assert_int_eq(ntc_resnet_set_input(&o, "1x8x8", &err), 0);
    ck_assert_int_eq(ntc_resnet_set_widths(&o, "4,8,8", &err), 0);
    ntc_graph *g = ntc_resnet_build(&o, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    const char *dir = tu_tmpdir();
    char weights[1024];
    snprintf(path, sizeof path, "%s/backbone.xml", dir);
    snprintf(weights, sizeof weights, "%s/backbone.safetensors", dir);
    ck_assert_msg(ntc_graph_write_xml(g, path, weights, &err) == 0, "%s", ntc_err_str(&err));
    ntc_graph_free(g);
    return path;
}

/* One SGD step on the trainer's graph with fixed inputs and labels. */
static int train_step(ntc_graph *g, const float *x, ntc_err *err)
{
    static const int32_t labels[BATCH] = {0, 2};
    ntc_trainer *t = ntc_trainer_new(g, BATCH, 1, err);
    if (!t)
        return -1;
    ntc_sgd_opts so = {.momentum = 0.9, .weight_decay = 1e-4};
    ntc_sgd *sgd = ntc_sgd_new(t, &so, err);
    int rc = -1;
    if (sgd && ntc_trainer_forward(t, &x, BATCH, true, err) == 0) {
        int out = g->outputs[0].value;
        ntc_loss_cross_entropy(ntc_trainer_value(t, out), labels, BATCH, CLASSES, 1.0f,
                               ntc_trainer_output_grad(t, 0));
        if (ntc_trainer_backward(t, err) == 0) {
            ntc_sgd_step(sgd, 0.01);
            rc = 0;
        }
    }
    ntc_sgd_free(sgd);
    ntc_trainer_free(t);
    return rc;
}

/* Runs the whole path on the backbone at xml; frees everything it made.
 * Returns the step that failed (err filled) or STEP_DONE. */
static step run_path(const char *xml, ntc_err *err)
{
    float x[BATCH * 64], logits[BATCH * CLASSES];
    unsigned seed = 7;
    for (int i = 0; i < BATCH * 64; i++)
        x[i] = tu_randf(&seed);
    const float *inputs[] = {x};

    step s = STEP_READ;
    ntc_exec *ex = NULL;
    ntc_jit *jit = NULL;
    ntc_graph *g = ntc_graph_read_xml(xml, err);
    if (!g)
        goto out;
    s = STEP_TAILOR;
    if (ntc_run_passes(g, "tailor:classes=3", NTC_PASS_TRAINING, err))
        goto out;
    s = STEP_FORWARD;
    if (!(ex = ntc_exec_new_threads(g, BATCH, 1, err)) || ntc_exec_run(ex, inputs, BATCH, err))
        goto out;
    s = STEP_TRAIN;
    if (train_step(g, x, err))
        goto out;
    s = STEP_JIT;
    if (!(jit = ntc_jit_compile(g, err)) || ntc_jit_run(jit, x, BATCH, logits, err))
        goto out;
    s = STEP_DONE;
out:
    ntc_jit_free(jit);
    ntc_exec_free(ex);
    ntc_graph_free(g);
    return s;
}

/* ---- tests ----------------------------------------------------------------------- */

/* The path works, and leaves nothing behind, without injected failures. */
START_TEST(path_succeeds)
{
    const char *xml = write_backbone();
    ntc_err err = {0};
    ck_assert_msg(run_path(xml, &err) == STEP_DONE, "%s", ntc_err_str(&err));  /* warm-up */
    hook(0);
    step s = run_path(xml, &err);
    unhook();
    ck_assert_msg(s == STEP_DONE, "%s: %s", step_names[s], ntc_err_str(&err));
    ck_assert_int_eq(atomic_load(&live_blocks), 0);
    ck_assert_int_gt(atomic_load(&alloc_calls), 100);
}
END_TEST

START_TEST(every_allocation_failure_is_clean)
{
    const char *xml = write_backbone();
    ntc_err err = {0};
    /* Warm-up: anything a first call sets up once for the process (pass
     * registry, LLVM targets) is not a leak of the path. */
    ck_assert_msg(run_path(xml, &err) == STEP_DONE, "%s", ntc_err_str(&err));
    hook(0);
    run_path(xml, &err);
    unhook();
    long total = atomic_load(&alloc_calls);
    int failures[STEP_DONE + 1] = {0}, problems = 0;
    for (long n = 1;; n++) {
        memset(&err, 0, sizeof err);
        hook(n);
        step s = run_path(xml, &err);
        unhook();
        long calls = atomic_load(&alloc_calls), live = atomic_load(&live_blocks);
        if (calls < n) {                 /* the path no longer reaches allocation n */
            ck_assert_msg(s == STEP_DONE, "step %s failed without an injected failure: %s",
                          step_names[s], ntc_err_str(&err));
            ck_assert_int_eq(live, 0);
            break;
        }
        ck_assert_int_le(n, total + 1);
        /* Every problem is printed (all of them, not only the first, so a
         * run shows the whole list), then the test fails at the end. */
        if (live != 0) {
            printf("faults: failing allocation %ld (step %s, error '%s') leaks %ld blocks\n", n,
                   step_names[s], ntc_err_str(&err), live);
            fflush(stdout);
            problems++;
        }
        if (s == STEP_DONE)
            continue;                    /* the failure was absorbed (e.g. an optional cache) */
        failures[s]++;
        if (!strstr(err.msg, "memory")) {
            printf("faults: failing allocation %ld in step %s gives '%s', not out of memory\n", n,
                   step_names[s], ntc_err_str(&err));
            fflush(stdout);
            problems++;
        }
    }
    printf("faults: %ld allocations on the path; failures reported by", total);
    for (int s = 0; s < STEP_DONE; s++)
        printf(" %s %d%s", step_names[s], failures[s], s + 1 < STEP_DONE ? "," : "\n");
    fflush(stdout);
    ck_assert_msg(problems == 0, "%d allocation failures were not clean (listed above)", problems);
    for (int s = 0; s < STEP_DONE; s++)
        ck_assert_msg(failures[s] > 0, "no allocation failure reached step %s", step_names[s]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");
    /* Thousands of runs of the path, a few hundred of them with a JIT compile. */
    tcase_set_timeout(tc, 1800);
    tcase_add_test(tc, path_succeeds);
    tcase_add_test(tc, every_allocation_failure_is_clean);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
