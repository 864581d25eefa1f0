/* Deploying compiled graphs, as a user does it from the command line:
 * `ntc run --jit` and `ntc eval --jit` against the interpreter, and the C
 * example examples/classify.c built with cc (no libntc) on two task shared
 * objects from `ntc compile` that share one universal weights file.
 * Agreement of outputs is normwise, as in the jit suite:
 *     max_i |got_i - want_i| / max_i |want_i|   <= 1e-4 */
#include "testutil.h"

#include "ntc/data.h"
#include "ntc/jit.h"
#include "ntc/runtime.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOL 1e-4
#define FASHION "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"

static int64_t argmax(const float *z, int64_t k)
{
    int64_t best = 0;
    for (int64_t j = 1; j < k; j++)
        best = z[j] > z[best] ? j : best;
    return best;
}

/* Runs a shell command; stdout and stderr into *out (malloc'ed).  Returns
 * the exit status. */
static int shell(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int shell(char **out, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "%s", cmd);
    size_t len = 0, cap = 4096;
    char *s = malloc(cap);
    for (size_t got; (got = fread(s + len, 1, cap - len - 1, p)) > 0;)
        if ((len += got) + 1 == cap)
            s = realloc(s, cap *= 2);
    s[len] = 0;
    int st = pclose(p);
    *out = s;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Writes n items of the given item shape (rank 4, dims[0] ignored) to
 * path: pixels of varying scale and offset per item, so that random
 * networks do not give every item the same class. */
static void write_images(const char *path, int n, int c, int h, int w, unsigned seed)
{
    ntc_array a = {.dtype = NTC_DT_F32, .shape = {.rank = 4, .dims = {n, c, h, w}}};
    int64_t item = (int64_t)c * h * w;
    float *x = malloc(sizeof(float) * (size_t)(item * n));
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < item; k++)
            x[i * item + k] = (0.5f + 8.0f * (float)i / (float)n) * tu_randf(&seed) + 4.0f * (float)(i % 5 - 2);
    a.data = x;
    ntc_err err = {0};
    ck_assert_msg(ntc_npy_write(path, &a, &err) == 0, "%s", ntc_err_str(&err));
    free(x);
}

static ntc_array read_npy(const char *path)
{
    ntc_array a = {0};
    ntc_err err = {0};
    ck_assert_msg(ntc_npy_read(path, &a, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(a.dtype, NTC_DT_F32);
    return a;
}

/* Runs `ntc ARGS`, which must succeed. */
static void ntc_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void ntc_ok(const char *fmt, ...)
{
    char args[2048], *out = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int rc = tu_ntc(&out, "%s", args);
    ck_assert_msg(rc == 0, "ntc %s: exit %d\n%s", args, rc, out);
    free(out);
}

/* ---- ntc run --jit ---------------------------------------------------------- */

/* The JIT's outputs equal the interpreter's, in one batch and in chunks
 * that do not divide the batch; --threads is refused with --jit. */
START_TEST(run_jit)
{
    const char *dir = tu_tmpdir();
    ntc_ok("new resnet --depth 8 --input 2x14x14 --classes 6 -o %s/bb.xml", dir);
    char x[512], y[512], yj[512], yc[512];
    snprintf(x, sizeof x, "%s/x.npy", dir);
    snprintf(y, sizeof y, "%s/y.npy", dir);
    snprintf(yj, sizeof yj, "%s/yj.npy", dir);
    snprintf(yc, sizeof yc, "%s/yc.npy", dir);
    write_images(x, 23, 2, 14, 14, 5u);
    ntc_ok("run %s/bb.xml --input %s -o %s", dir, x, y);
    ntc_ok("run %s/bb.xml --jit --input %s -o %s", dir, x, yj);
    ntc_ok("run %s/bb.xml --jit --input %s -o %s --batch 7 --repeat 2", dir, x, yc);
    ntc_array want = read_npy(y), got = read_npy(yj), chunked = read_npy(yc);
    ck_assert_int_eq(got.shape.rank, 2);
    ck_assert_int_eq(got.shape.dims[0], 23);
    ck_assert_int_eq(got.shape.dims[1], 6);
    double e = tu_rel_error(got.data, want.data, 23 * 6), ec = tu_rel_error(chunked.data, want.data, 23 * 6);
    ck_assert_msg(e <= TOL && ec <= TOL, "run --jit vs interpreter: relative error %g (batch 23), %g (chunks of 7)",
                  e, ec);
    /* the outputs are not degenerate: the items do not all get one class */
    const float *z = want.data;
    int64_t c0 = argmax(z, 6), differ = 0;
    for (int i = 1; i < 23; i++)
        differ += argmax(z + i * 6, 6) != c0;
    ck_assert_int_gt(differ, 0);
    ntc_array_free(&want);
    ntc_array_free(&got);
    ntc_array_free(&chunked);

    char *out = NULL;
    ck_assert_int_eq(tu_ntc(&out, "run %s/bb.xml --jit --threads 2 --input %s -o %s", dir, x, yj), 2);
    ck_assert_msg(strstr(out, "--threads does not apply to --jit"), "%s", out);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "run %s/bb.xml --jit --time --input %s -o %s", dir, x, yj), 0);
    ck_assert_msg(strstr(out, "JIT compile") && strstr(out, "23 items in"), "%s", out);
    free(out);
}
END_TEST

/* ---- ntc eval --jit --------------------------------------------------------- */

/* The "accuracy A%  loss L" of ntc eval's output. */
static void parse_eval(const char *out, double *acc, double *loss)
{
    const char *p = strstr(out, "accuracy ");
    ck_assert_msg(p && sscanf(p, "accuracy %lf%%  loss %lf", acc, loss) == 2, "%s", out);
}

/* A briefly trained ResNet-8 (so its predictions vary) on 300 fashion-mnist
 * test images: the JIT's logits equal the interpreter's, so do its
 * predictions, and ntc eval --jit prints the interpreter's accuracy. */
START_TEST(eval_jit)
{
    if (access(FASHION, R_OK)) {
        printf("eval_jit: skipped, %s absent (apt-get install dataset-fashion-mnist)\n", FASHION);
        return;
    }
    const char *dir = tu_tmpdir();
    ntc_ok("new resnet --depth 8 --input 1x28x28 --classes 10 -o %s/bb.xml", dir);
    ntc_ok("train %s/bb.xml --data fashion-mnist --epochs 1 --limit 1024 --batch 64 --no-test "
           "--run-dir %s/run -o %s/trained.xml", dir, dir, dir);

    char path[512];
    snprintf(path, sizeof path, "%s/trained.xml", dir);
    ntc_err err = {0};
    ntc_graph *g = ntc_graph_read_xml(path, &err);
    ck_assert_msg(g != NULL, "%s", ntc_err_str(&err));
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = "fashion-mnist";
    o.split = NTC_SPLIT_TEST;
    o.channels = 1, o.height = 28, o.width = 28;
    ntc_dataset *ds = ntc_dataset_open(&o, &err);
    ck_assert_msg(ds != NULL, "%s", ntc_err_str(&err));
    enum { N = 300, K = 10 };
    float *x = malloc(sizeof(float) * ntc_dataset_example_size(ds) * N), *zj = malloc(sizeof(float) * N * K);
    int32_t y[N];
    int64_t idx[N];
    for (int i = 0; i < N; i++)
        idx[i] = i;
    ntc_dataset_fill(ds, idx, N, x, y);

    ntc_exec *ex = ntc_exec_new(g, N, &err);
    ck_assert_msg(ex != NULL, "%s", ntc_err_str(&err));
    const float *in[] = {x};
    ck_assert_msg(ntc_exec_run(ex, in, N, &err) == 0, "%s", ntc_err_str(&err));
    const float *zi = ntc_exec_output(ex, 0);
    ntc_jit *j = ntc_jit_compile(g, &err);
    ck_assert_msg(j != NULL, "%s", ntc_err_str(&err));
    ck_assert_msg(ntc_jit_run(j, x, N, zj, &err) == 0, "%s", ntc_err_str(&err));
    double e = tu_rel_error(zj, zi, N * K);
    ck_assert_msg(e <= TOL, "eval logits, JIT vs interpreter: relative error %g", e);
    int hits = 0, classes_seen = 0;
    bool seen[K] = {false};
    for (int i = 0; i < N; i++) {
        int64_t p = argmax(zi + i * K, K);
        ck_assert_msg(argmax(zj + i * K, K) == p, "image %d: JIT predicts %lld, the interpreter %lld", i,
                      (long long)argmax(zj + i * K, K), (long long)p);
        hits += p == y[i];
        classes_seen += !seen[p];
        seen[p] = true;
    }
    ck_assert_int_ge(classes_seen, 3);   /* trained enough that predictions vary */

    char *out = NULL;
    double acc_i, loss_i, acc_j, loss_j;
    ck_assert_int_eq(tu_ntc(&out, "eval %s --data fashion-mnist --limit %d --batch 128", path, N), 0);
    parse_eval(out, &acc_i, &loss_i);
    free(out);
    ck_assert_int_eq(tu_ntc(&out, "eval %s --data fashion-mnist --limit %d --batch 128 --jit", path, N), 0);
    parse_eval(out, &acc_j, &loss_j);
    ck_assert_msg(strstr(out, "JIT)"), "%s", out);
    free(out);
    /* eval prints two decimals: compare with the interpreter's count printed the same way */
    char want[32];
    snprintf(want, sizeof want, "%.2f", 100.0 * hits / N);
    ck_assert_msg(acc_i == strtod(want, NULL), "eval says %.2f%%, the interpreter %s%%", acc_i, want);
    ck_assert_msg(acc_j == acc_i && fabs(loss_j - loss_i) <= 1e-4 * fabs(loss_i) + 1e-4,
                  "eval --jit: accuracy %.2f%% loss %.4f, interpreter %.2f%% loss %.4f", acc_j, loss_j, acc_i,
                  loss_i);
    ck_assert_int_eq(tu_ntc(&out, "eval %s --data fashion-mnist --jit --threads 1", path), 2);
    free(out);

    ntc_jit_free(j);
    ntc_exec_free(ex);
    ntc_dataset_free(ds);
    ntc_graph_free(g);
    free(x);
    free(zj);
}
END_TEST

/* ---- examples/classify.c --------------------------------------------------- */

/* Two NetTailor students of one backbone (different class counts and
 * seeds) compiled to task .so files over one universal weights file;
 * classify, built with plain cc, prints for every image the argmax of each
 * task's outputs from `ntc run` on the same images. */
START_TEST(classify_example)
{
    const char *dir = tu_tmpdir();
    char *out = NULL;
    const char *cc = getenv("CC") ? getenv("CC") : "cc";
    int rc = shell(&out, "%s -std=c11 -Wall -Wextra -Werror -O2 %s -o %s/classify -ldl", cc,
                   tu_src("examples/classify.c"), dir);
    ck_assert_msg(rc == 0, "building examples/classify.c: exit %d\n%s", rc, out);
    free(out);

    ntc_ok("new resnet --depth 8 --input 1x12x12 --classes 3 -o %s/bb.xml", dir);
    ntc_ok("tailor %s/bb.xml --classes 4 --seed 1 -o %s/s1.xml", dir, dir);
    ntc_ok("tailor %s/bb.xml --classes 5 --seed 2 -o %s/s2.xml", dir, dir);
    char dir_u[600];
    snprintf(dir_u, sizeof dir_u, "%s/u.weights", dir);
    ntc_ok("compile %s/s1.xml -o %s/digits-a.so --universal-weights %s", dir, dir, dir_u);
    ntc_ok("compile %s/s2.xml -o %s/b.so --universal-weights %s", dir, dir, dir_u);

    enum { N = 40 };
    char x[512];
    snprintf(x, sizeof x, "%s/x.npy", dir);
    write_images(x, N, 1, 12, 12, 9u);
    const char *students[2] = {"s1", "s2"};
    ntc_array want[2];
    for (int t = 0; t < 2; t++) {
        char y[512];
        snprintf(y, sizeof y, "%s/%s.out.npy", dir, students[t]);
        ntc_ok("run %s/%s.xml --input %s -o %s", dir, students[t], x, y);
        want[t] = read_npy(y);
        ck_assert_int_eq(want[t].shape.dims[1], 4 + t);
    }

    /* run from the directory with bare file names, as the README shows */
    rc = shell(&out, "cd %s && ./classify digits-a.so ./b.so x.npy", dir);
    ck_assert_msg(rc == 0, "classify: exit %d\n%s", rc, out);
    ck_assert_msg(!strncmp(out, "image\tdigits_a\tb\n", 17), "%s", out);
    const char *line = strchr(out, '\n') + 1;
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        int idx, ca, cb, used = 0;
        ck_assert_msg(sscanf(line, "%d\t%d\t%d\n%n", &idx, &ca, &cb, &used) == 3 && used > 0,
                      "line %d of\n%s", i + 1, out);
        ck_assert_int_eq(idx, i);
        ck_assert_msg(ca == argmax((float *)want[0].data + i * 4, 4) && cb == argmax((float *)want[1].data + i * 5, 5),
                      "image %d: classify says %d, %d; ntc run %lld, %lld", i, ca, cb,
                      (long long)argmax((float *)want[0].data + i * 4, 4),
                      (long long)argmax((float *)want[1].data + i * 5, 5));
        distinct += i > 0 && ca != argmax((float *)want[0].data, 4);
        line += used;
    }
    ck_assert_int_eq(*line, 0);
    ck_assert_int_gt(distinct, 0);   /* the comparison can tell classes apart */
    free(out);

    /* --memory: the same classes, and the resident memory it took */
    rc = shell(&out, "cd %s && ./classify --memory digits-a.so b.so x.npy", dir);
    long long after = 0, before = 0;
    const char *m = strstr(out, "classify: PSS ");
    ck_assert_msg(rc == 0 && m && sscanf(m, "classify: PSS %lld kB with 2 tasks loaded and run, %lld kB before", &after,
                                         &before) == 2, "%s", out);
    ck_assert_msg(before > 0 && after > before, "%s", out);
    free(out);

    /* errors name the file and say what is wrong */
    ck_assert_int_eq(shell(&out, "cd %s && ./classify b.so bb.xml", dir), 1);
    ck_assert_msg(strstr(out, "bb.xml: not a .npy file"), "%s", out);
    free(out);
    ck_assert_int_eq(shell(&out, "cd %s && ./classify missing.so x.npy", dir), 1);
    ck_assert_msg(strstr(out, "missing.h: cannot open the task's header"), "%s", out);
    free(out);
    ck_assert_int_eq(shell(&out, "cd %s && ./classify x.npy", dir), 2);
    ck_assert_msg(strstr(out, "usage:"), "%s", out);
    free(out);
    ntc_array_free(&want[0]);
    ntc_array_free(&want[1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("deploy");
    TCase *tc = tcase_create("deploy");
    tcase_set_timeout(tc, 600);   /* training, JIT and cc on a loaded machine */
    tcase_add_test(tc, run_jit);
    tcase_add_test(tc, eval_jit);
    tcase_add_test(tc, classify_example);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
