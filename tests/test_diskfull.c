/* A full disk or an unwritable directory is reported before training
 * starts or when it happens, never a silently truncated file.
 *
 * No test here needs root or a small file system: a full disk is played
 * by the file size limit (RLIMIT_FSIZE) of a real `ntc` child, under which
 * write and fallocate fail with EFBIG where a full disk gives ENOSPC; both
 * take the same paths in ntc.  Unwritable places are paths below a
 * regular file (which stop root too) and, when not root, chmod 0555
 * directories. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* A tiny ResNet on the 8x8 digits, one step per epoch: each epoch adds a
 * line of about 200 bytes to the checkpoint's train.jsonl while every other
 * checkpoint file keeps its size, so a file size limit a little above the
 * largest of those lets the first checkpoints through and stops a later
 * one: the disk "fills up" in the middle of the run. */
#define EPOCHS 40
#define TRAIN_OPTS "--data digits --epochs 40 --limit 64 --batch 64 --threads 1 --seed 3 --no-test"

/* When not 0, run_ntc's children drop to this user (and group) before
 * they exec ntc: how a test running as root sees permission bits. */
static uid_t child_uid;
static gid_t child_gid;

/* Runs `ntc ARGS` in a child with the file size limit `fsize` bytes (0:
 * none) and SIGXFSZ ignored or at its default; stdout and stderr into *out
 * (malloc'ed).  Returns the exit status, or 128 + the signal that ended it. */
static int __attribute__((format(printf, 4, 5)))
run_ntc(char **out, long fsize, bool ignore_xfsz, const char *fmt, ...)
{
    char args[8192], cmd[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "exec %s %s", getenv("NTC_BIN"), args);
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        signal(SIGXFSZ, ignore_xfsz ? SIG_IGN : SIG_DFL);   /* kept across exec */
        struct rlimit lim = {(rlim_t)fsize, (rlim_t)fsize};
        if (fsize > 0 && setrlimit(RLIMIT_FSIZE, &lim))
            _exit(126);
        if (child_uid && (setgroups(0, NULL) || setgid(child_gid) || setuid(child_uid)))
            _exit(126);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fds[0], buf + n, cap - n - 1)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        n += (size_t)r;
        if (n + 1 >= cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    close(fds[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The whole file, NUL-terminated; its length in *len. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0, r;
    char *buf = malloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0)
        if ((n += r) == cap - 1)
            buf = realloc(buf, cap *= 2);
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) ? -1 : (long)sb.st_size;
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* Every file name under dir (recursively) that is a temp file of the
 * atomic writer or a probe of the pre-flight: names the first one in
 * found, or returns false. */
static bool find_leftover(const char *dir, char *found, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool hit = false;
    struct dirent *e;
    while (!hit && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (strstr(e->d_name, ".tmp.") || strstr(e->d_name, ".ntc-probe")) {
            snprintf(found, cap, "%s", p);
            hit = true;
        } else if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            hit = find_leftover(p, found, cap);
        }
    }
    closedir(d);
    return hit;
}

static void assert_no_leftover(const char *dir)
{
    char found[4096];
    ck_assert_msg(!find_leftover(dir, found, sizeof found), "left behind: %s", found);
}

/* The files of a checkpoint directory, concatenated in a fixed order with
 * their names, so two snapshots compare byte for byte. */
static char *snapshot_checkpoint(const char *ckpt, size_t *len)
{
    static const char *files[] = {"model.xml", "model.safetensors", "momentum.safetensors", "state.txt",
                                  "train.jsonl"};
    size_t cap = 1 << 16, n = 0;
    char *all = malloc(cap);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", ckpt, files[i]);
        size_t fl;
        char *f = slurp(p, &fl);
        ck_assert_msg(f != NULL, "%s is missing", p);
        size_t need = n + strlen(files[i]) + 1 + fl;
        while (need > cap)
            all = realloc(all, cap *= 2);
        memcpy(all + n, files[i], strlen(files[i]) + 1);
        n += strlen(files[i]) + 1;
        memcpy(all + n, f, fl);
        n += fl;
        free(f);
    }
    *len = n;
    return all;
}

static void make_backbone(const char *d)
{
    char *out;
    int rc = run_ntc(&out, 0, false, "new resnet --depth 8 --widths 1,1,1 --input 1x8x8 --classes 10 --seed 5 -o %s/b.xml",
                     d);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
}

/* The uninterrupted run every other run must end up equal to. */
static void reference_run(const char *d)
{
    char *out;
    int rc = run_ntc(&out, 0, false, "train %s/b.xml " TRAIN_OPTS " --run-dir %s/ref.run -o %s/ref.xml", d, d, d);
    ck_assert_msg(rc == 0, "reference run failed: %s", out);
    free(out);
}

START_TEST(checkpoint_fails_midrun_last_one_kept)
{
    const char *d = tu_tmpdir();
    make_backbone(d);
    reference_run(d);

    /* The limit: above every checkpoint file but the growing log; the
     * checkpoint of epoch k is the first whose log exceeds it. */
    char p[4096];
    long biggest = 0;
    const char *fixed[] = {"model.xml", "model.safetensors", "momentum.safetensors", "state.txt"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/ref.run/ckpt-%08d/%s", d, EPOCHS, fixed[i]);
        long s = file_size(p);
        ck_assert_msg(s > 0, "%s", p);
        biggest = s > biggest ? s : biggest;
    }
    long limit = biggest + 64;
    snprintf(p, sizeof p, "%s/ref.run/train.jsonl", d);
    size_t log_len;
    char *log = slurp(p, &log_len);
    ck_assert_ptr_nonnull(log);
    int k = 0, epoch = 0;
    long upto = 0;
    for (const char *l = log, *nl; !k && (nl = memchr(l, '\n', (size_t)(log + log_len - l))); l = nl + 1) {
        epoch++;
        upto += nl - l + 1;
        if (upto > limit)
            k = epoch;
    }
    free(log);
    ck_assert_msg(k >= 2 && k < EPOCHS, "the log crosses %ld bytes at epoch %d: pick other sizes", limit, k);

    /* The disk fills up at epoch k. */
    char *out;
    int rc = run_ntc(&out, limit, false, "train %s/b.xml " TRAIN_OPTS " --run-dir %s/lim.run -o %s/lim.xml", d, d, d);
    char kept[64], lost[64];
    snprintf(kept, sizeof kept, "ckpt-%08d", k - 1);
    snprintf(lost, sizeof lost, "ckpt-%08d", k);
    ck_assert_msg(rc == 1, "exit %d: %s", rc, out);
    ck_assert_msg(strstr(out, "ntc: error: ") && strstr(out, "File too large") && strstr(out, lost) &&
                      strstr(out, kept) && strstr(out, "is kept") && strstr(out, "--resume"),
                  "unclear message: %s", out);
    free(out);
    snprintf(p, sizeof p, "%s/lim.run/checkpoint", d);
    size_t len;
    char *ptr = slurp(p, &len);
    ck_assert_ptr_nonnull(ptr);
    ck_assert_msg(len == strlen(kept) + 1 && !memcmp(ptr, kept, strlen(kept)), "checkpoint names %.*s", (int)len, ptr);
    free(ptr);
    snprintf(p, sizeof p, "%s/lim.run/%s", d, lost);
    ck_assert_msg(!exists(p), "the failed checkpoint %s was left", p);
    snprintf(p, sizeof p, "%s/lim.xml", d);
    ck_assert_msg(!exists(p), "a failed run wrote %s", p);
    assert_no_leftover(d);

    /* Resumed on the still-full disk, it fails the same way, and the last
     * good checkpoint comes out of both failures byte for byte.  This time
     * a run killed while writing checkpoint k has left part of it: that
     * goes too. */
    char ckpt[4096], partial[8192];
    snprintf(ckpt, sizeof ckpt, "%s/lim.run/%s", d, kept);
    size_t before_len, after_len;
    char *before = snapshot_checkpoint(ckpt, &before_len);
    snprintf(p, sizeof p, "%s/lim.run/%s", d, lost);
    ck_assert_int_eq(mkdir(p, 0777), 0);
    snprintf(partial, sizeof partial, "%s/model.xml", p);
    put(partial, "<graph ir-version=\"1\" name=\"cut");
    rc = run_ntc(&out, limit, false, "train %s/b.xml " TRAIN_OPTS " --resume %s/lim.run -o %s/lim.xml", d, d, d);
    ck_assert_msg(rc == 1 && strstr(out, "File too large") && strstr(out, kept), "exit %d: %s", rc, out);
    free(out);
    ck_assert_msg(!exists(p), "the partial checkpoint %s was left", p);
    char *after = snapshot_checkpoint(ckpt, &after_len);
    ck_assert_msg(before_len == after_len && !memcmp(before, after, before_len), "%s changed", ckpt);
    free(before);
    free(after);
    assert_no_leftover(d);
    rc = run_ntc(&out, 0, false, "check %s/model.xml", ckpt);
    ck_assert_msg(rc == 0, "the kept checkpoint does not load: %s", out);
    free(out);

    /* With room again, resuming ends exactly where the uninterrupted run
     * did: the kept checkpoint held the whole state. */
    rc = run_ntc(&out, 0, false, "train %s/b.xml " TRAIN_OPTS " --resume %s/lim.run -o %s/lim.xml", d, d, d);
    ck_assert_msg(rc == 0, "resume failed: %s", out);
    free(out);
    size_t ref_len = 0, got_len = 0;
    snprintf(p, sizeof p, "%s/ref.safetensors", d);
    char *ref = slurp(p, &ref_len);
    snprintf(p, sizeof p, "%s/lim.safetensors", d);
    char *got = slurp(p, &got_len);
    ck_assert(ref && got);
    ck_assert_msg(ref_len == got_len && !memcmp(ref, got, ref_len),
                  "the run resumed after the failed checkpoint ends with other weights");
    free(ref);
    free(got);
}
END_TEST

START_TEST(final_output_fails_checkpoint_kept)
{
    const char *d = tu_tmpdir();
    make_backbone(d);
    reference_run(d);
    /* An earlier output in the way, which a failed write must leave alone. */
    char xml[4096], wts[4096], p[4096];
    snprintf(xml, sizeof xml, "%s/out.xml", d);
    snprintf(wts, sizeof wts, "%s/out.safetensors", d);
    put(xml, "an earlier out.xml\n");
    put(wts, "an earlier out.safetensors\n");
    char ckpt[4096];
    snprintf(ckpt, sizeof ckpt, "%s/ref.run/ckpt-%08d", d, EPOCHS);
    size_t before_len, after_len;
    char *before = snapshot_checkpoint(ckpt, &before_len);

    /* The finished run resumed only writes its output: one byte short of
     * room for the weights. */
    snprintf(p, sizeof p, "%s/ref.safetensors", d);
    long limit = file_size(p) - 1;
    char *out;
    int rc = run_ntc(&out, limit, false, "train %s/b.xml " TRAIN_OPTS " --resume %s/ref.run -o %s", d, d, xml);
    ck_assert_msg(rc == 1, "exit %d: %s", rc, out);
    ck_assert_msg(strstr(out, "ntc: error: ") && strstr(out, "File too large") && strstr(out, d),
                  "unclear message: %s", out);
    free(out);
    size_t len;
    char *text = slurp(xml, &len);
    ck_assert_msg(text && !strcmp(text, "an earlier out.xml\n"), "out.xml was touched");
    free(text);
    text = slurp(wts, &len);
    ck_assert_msg(text && !strcmp(text, "an earlier out.safetensors\n"), "out.safetensors was touched");
    free(text);
    assert_no_leftover(d);
    char *after = snapshot_checkpoint(ckpt, &after_len);
    ck_assert_msg(before_len == after_len && !memcmp(before, after, before_len), "%s changed", ckpt);
    free(before);
    free(after);

    /* With room, the same command writes the trained weights. */
    rc = run_ntc(&out, 0, false, "train %s/b.xml " TRAIN_OPTS " --resume %s/ref.run -o %s", d, d, xml);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    size_t ref_len = 0, got_len = 0;
    char *ref = slurp(p, &ref_len), *got = slurp(wts, &got_len);
    ck_assert(ref && got);
    ck_assert_msg(ref_len == got_len && !memcmp(ref, got, ref_len), "rewritten weights differ from the run's");
    free(ref);
    free(got);
}
END_TEST

/* `ntc train ARGS` must fail before training with a message holding
 * `want` (and `want2` unless NULL), leaving no run directory it made. */
static void assert_refused(const char *d, long fsize, const char *want, const char *want2, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void assert_refused(const char *d, long fsize, const char *want, const char *want2, const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *out;
    int rc = run_ntc(&out, fsize, false, "train %s/b.xml " TRAIN_OPTS " %s", d, args);
    ck_assert_msg(rc == 1, "%s: exit %d: %s", args, rc, out);
    ck_assert_msg(!strncmp(out, "ntc: error: ", 12), "%s: not an error line: %s", args, out);
    ck_assert_msg(strstr(out, want) && (!want2 || strstr(out, want2)), "%s: expected '%s' and '%s' in: %s", args,
                  want, want2 ? want2 : "", out);
    ck_assert_msg(!strstr(out, "epoch "), "%s: training started: %s", args, out);
    free(out);
    assert_no_leftover(d);
}

START_TEST(unwritable_paths_refused_before_training)
{
    const char *d = tu_tmpdir();
    make_backbone(d);
    char file[4096], p[4096];
    snprintf(file, sizeof file, "%s/plain", d);
    put(file, "a regular file\n");

    /* -o into a directory that does not exist, or below a regular file */
    assert_refused(d, 0, "/missing", "No such file or directory", "-o %s/missing/o.xml", d);
    assert_refused(d, 0, file, "Not a directory", "-o %s/o.xml", file);
    /* -o naming a directory */
    snprintf(p, sizeof p, "%s/adir.xml", d);
    ck_assert_int_eq(mkdir(p, 0777), 0);
    assert_refused(d, 0, p, "is a directory", "-o %s", p);
    /* --run-dir that is a regular file, or below one */
    assert_refused(d, 0, file, "Not a directory", "--run-dir %s -o %s/o1.xml", file, d);
    assert_refused(d, 0, file, "cannot create the run directory", "--run-dir %s/run -o %s/o2.xml", file, d);
    /* /proc takes no new files, not even from root */
    assert_refused(d, 0, "/proc/ntc-run", "cannot create the run directory", "--run-dir /proc/ntc-run -o %s/o3.xml",
                   d);
    /* No room for even one checkpoint: refused before any training, and
     * the run directory made for it is removed again. */
    assert_refused(d, 16, "no room", "File too large", "-o %s/o4.xml", d);
    snprintf(p, sizeof p, "%s/o4.run", d);
    ck_assert_msg(!exists(p), "%s was left behind", p);
    for (int i = 1; i <= 4; i++) {
        snprintf(p, sizeof p, "%s/o%d.xml", d, i);
        ck_assert_msg(!exists(p), "%s was written", p);
    }

    /* Permission bits.  Root ignores them: as root the runs below drop to
     * the user nobody, who may enter the scratch directory and write to
     * w/ but not to ro/. */
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        if (!pw || pw->pw_uid == 0) {
            fprintf(stderr, "diskfull: root without a user nobody: the chmod 0555 cases are skipped\n");
            return;
        }
        child_uid = pw->pw_uid;
        child_gid = pw->pw_gid;
        ck_assert_int_eq(chmod(d, 0755), 0);
        /* The build tree may sit where nobody cannot reach it (/root). */
        char *out;
        int rc = run_ntc(&out, 0, false, "--help");
        free(out);
        if (rc != 0) {
            child_uid = 0;
            fprintf(stderr, "diskfull: the user nobody cannot run %s: the chmod 0555 cases are skipped\n",
                    getenv("NTC_BIN"));
            return;
        }
    }
    char ro[4096], w[4096];
    snprintf(ro, sizeof ro, "%s/ro", d);
    snprintf(w, sizeof w, "%s/w", d);
    ck_assert_int_eq(mkdir(ro, 0555), 0);
    ck_assert_int_eq(mkdir(w, 0777), 0);
    ck_assert_int_eq(chmod(w, 0777), 0);     /* whatever the umask */
    assert_refused(d, 0, ro, "Permission denied", "-o %s/o.xml", ro);
    assert_refused(d, 0, ro, "Permission denied", "--run-dir %s -o %s/o5.xml", ro, w);
    assert_refused(d, 0, ro, "cannot create the run directory", "--run-dir %s/run -o %s/o6.xml", ro, w);
    /* the same user can train into w/, so the refusals above were about ro/ */
    char *out;
    int rc = run_ntc(&out, 0, false, "train %s/b.xml " TRAIN_OPTS " --epochs 1 -o %s/o7.xml", d, w);
    child_uid = 0;
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    chmod(ro, 0755);
}
END_TEST

/* The n files concatenated (each must exist and exceed `min` bytes). */
static char *snapshot_files(char paths[][8192], int n, long min, size_t *len)
{
    size_t cap = 1 << 16, at = 0;
    char *all = malloc(cap);
    for (int i = 0; i < n; i++) {
        size_t fl;
        char *f = slurp(paths[i], &fl);
        ck_assert_msg(f != NULL && (long)fl > min, "%s is missing or too small to show a truncation", paths[i]);
        while (at + fl > cap)
            all = realloc(all, cap *= 2);
        memcpy(all + at, f, fl);
        at += fl;
        free(f);
    }
    *len = at;
    return all;
}

START_TEST(other_commands_never_half_write)
{
    const char *d = tu_tmpdir();
    make_backbone(d);
    struct {
        const char *args;      /* printf format: its output dir, the fixtures, the backbone's dir */
        const char *outs[4];
    } cmds[] = {
        {"opt %3$s/b.xml --passes=dce -o %1$s/opt.xml", {"opt.xml", "opt.safetensors"}},
        {"import %2$s/onnx/mlp.onnx -o %1$s/imp.xml", {"imp.xml", "imp.safetensors"}},
        {"compile %3$s/b.xml -o %1$s/task.so", {"task.so", "task.h", "task.weights", "universal.weights"}},
    };
    char fix[4096];
    snprintf(fix, sizeof fix, "%s", tu_src("tests/fixtures"));
    const long limit = 64;
    for (size_t c = 0; c < sizeof cmds / sizeof *cmds; c++) {
        char args[4096], paths[4][8192], dir[4096];
        snprintf(dir, sizeof dir, "%s/c%zu", d, c);
        ck_assert_int_eq(mkdir(dir, 0777), 0);
        snprintf(args, sizeof args, cmds[c].args, dir, fix, d);
        int n = 0;
        for (; n < 4 && cmds[c].outs[n]; n++)
            snprintf(paths[n], sizeof paths[n], "%s/%s", dir, cmds[c].outs[n]);
        /* A first run with room leaves outputs that are all larger than
         * the limit: a write in place under the limit would truncate one. */
        char *out;
        int rc = run_ntc(&out, 0, false, "%s", args);
        ck_assert_msg(rc == 0, "%s: %s", args, out);
        free(out);
        size_t before_len, after_len;
        char *before = snapshot_files(paths, n, limit, &before_len);
        /* With SIGXFSZ ignored the write fails with EFBIG: a message, a
         * non-zero exit, the earlier outputs as they were, no temp file. */
        rc = run_ntc(&out, limit, true, "%s", args);
        ck_assert_msg(rc == 1 && strstr(out, "ntc: error: ") && strstr(out, "File too large"), "%s: exit %d: %s",
                      args, rc, out);
        free(out);
        char *after = snapshot_files(paths, n, limit, &after_len);
        ck_assert_msg(before_len == after_len && !memcmp(before, after, before_len), "%s changed its outputs", args);
        free(after);
        assert_no_leftover(dir);
        /* At its default SIGXFSZ kills the process mid-write: still no
         * output is half-written (a temp file may stay behind). */
        rc = run_ntc(&out, limit, false, "%s", args);
        ck_assert_msg(rc != 0, "%s succeeded under a %ld-byte file size limit: %s", args, limit, out);
        free(out);
        after = snapshot_files(paths, n, limit, &after_len);
        ck_assert_msg(before_len == after_len && !memcmp(before, after, before_len), "%s, killed, changed its outputs",
                      args);
        free(after);
        free(before);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("diskfull");
    TCase *tc = tcase_create("diskfull");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, checkpoint_fails_midrun_last_one_kept);
    tcase_add_test(tc, final_output_fails_checkpoint_kept);
    tcase_add_test(tc, unwritable_paths_refused_before_training);
    tcase_add_test(tc, other_commands_never_half_write);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
