/* The C side of a task compiled by `ntc compile`: create, run and destroy
 * around the generated ntc_task_run.
 *
 * aot.c copies this file into the task's C source, putting the task's
 * tables at the @META@ line, and links it with the generated object into
 * the shared object.  It needs libc, libdl and pthreads only: no libntc.
 *
 * The weights: create maps the task's own weights file and the shared
 * universal weights file read-only (MAP_SHARED, so every task and every
 * process using the same universal file shares its pages), checks that
 * every tensor lies inside its file, and compares an FNV-1a 64 checksum of
 * the tensors it reads with the one recorded at compile time, so a task
 * never runs on another backbone's weights. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int file;               /* 0: the task's weights, 1: the universal weights */
    uint64_t offset;        /* bytes from the start of the file */
    uint64_t count;         /* floats */
} task_param;

void ntc_task_run(const float *const *params, const float *input, float *output, int64_t batch,
                  float *workspace) __attribute__((visibility("hidden")));
/* One item on a team of nthreads threads calling it together (see
 * compiler/codegen.h). */
void ntc_task_run_team(const float *const *params, const float *input, float *output, float *workspace,
                       float *own_workspace, int64_t tid, int64_t nthreads, int32_t *barrier)
    __attribute__((visibility("hidden")));

/* @META@ */

static const char *const file_role[2] = {"task weights", "universal weights"};

struct NTC_TASK(task) {
    void *map[2];
    size_t len[2];
    const float *params[TASK_N_PARAMS + 1];
    int threads;
    void *ws_block;
    float *ws;              /* threads x (TASK_WS_FLOATS + 16) floats, 64-byte aligned */
    int32_t barrier[16];    /* the team barrier's state (zeroed by calloc) */
    /* Batches smaller than the thread count: seconds per item on the team
     * and on one thread (0 until measured), calls, when and how often the
     * slower is timed again (see choose_team). */
    double team_s, solo_s;
    unsigned long small_calls, next_probe, probe_gap;
    /* The workers (threads - 1, started by the first run that needs them)
     * and the job they share; see the pool below. */
    pthread_t worker[64];
    int n_workers;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_ulong generation;
    atomic_int pending;
    int quit;
    void (*job)(struct NTC_TASK(task) *, int tid, int n);
    const float *input;
    float *output;
    int64_t batch;
    int job_threads;
};

static void say(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && len)
        vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* The default file `name` resolved next to this shared object. */
static char *beside_me(const char *name)
{
    Dl_info info;
    if (name[0] == '/' || !dladdr((void *)beside_me, &info) || !info.dli_fname)
        return strdup(name);
    const char *slash = strrchr(info.dli_fname, '/');
    size_t dir = slash ? (size_t)(slash - info.dli_fname) + 1 : 0;
    char *p = malloc(dir + strlen(name) + 1);
    if (p) {
        memcpy(p, info.dli_fname, dir);
        strcpy(p + dir, name);
    }
    return p;
}

static int map_file(const char *path, void **addr, size_t *len, char *err, size_t errlen, int role)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        say(err, errlen, "%s: cannot open the %s", path, file_role[role]);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *len = (size_t)st.st_size;
    *addr = *len ? mmap(NULL, *len, PROT_READ, MAP_SHARED, fd, 0) : NULL;
    close(fd);
    if (*addr == MAP_FAILED || !*len) {
        *addr = NULL;
        say(err, errlen, "%s: cannot map the %s (empty file?)", path, file_role[role]);
        return -1;
    }
    return 0;
}

static uint64_t fnv(uint64_t h, const unsigned char *b, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* ---- the pool --------------------------------------------------------------
 * The same fork/join pool as libntc's (runtime/pool.c), repeated because a
 * task links no libntc: thread 0 is the caller, workers wait for a new
 * generation by spinning SPIN_NS with pause, then on a condition variable
 * (a sleeping worker's CPU goes idle, and waking an idle vCPU took 0.1-0.7
 * ms on the machines ntc is measured on: a whole batch-64 pass); starting
 * a thread per run cost as much. */

enum { SPIN_NS = 2000000 };

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins up to SPIN_NS until done(arg, value) holds. */
static void spin(int (*done)(struct NTC_TASK(task) *, unsigned long), struct NTC_TASK(task) *t, unsigned long value)
{
    int64_t until = 0;
    for (int i = 0; !done(t, value); i++) {
        relax();
        if ((i & 255) == 0) {
            int64_t now = now_ns();
            if (!until)
                until = now + SPIN_NS;
            else if (now > until)
                return;
        }
    }
}

static int new_generation(struct NTC_TASK(task) *t, unsigned long seen)
{
    return atomic_load_explicit(&t->generation, memory_order_acquire) != seen;
}

static int all_done(struct NTC_TASK(task) *t, unsigned long unused)
{
    (void)unused;
    return atomic_load_explicit(&t->pending, memory_order_acquire) == 0;
}

static void *worker_main(void *arg)
{
    struct NTC_TASK(task) *t = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&t->mu);
    int tid = ++t->n_workers;   /* 1.. in start order */
    for (;;) {
        if (!t->quit && t->generation == seen) {
            pthread_mutex_unlock(&t->mu);
            spin(new_generation, t, seen);
            pthread_mutex_lock(&t->mu);
        }
        while (!t->quit && t->generation == seen)
            pthread_cond_wait(&t->wake, &t->mu);
        if (t->quit)
            break;
        seen = t->generation;
        int n = t->job_threads;
        pthread_mutex_unlock(&t->mu);
        if (tid < n)
            t->job(t, tid, n);
        pthread_mutex_lock(&t->mu);
        if (--t->pending == 0)
            pthread_cond_signal(&t->done);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* Starts the workers once; returns how many threads a job can use (1 if
 * none could start). */
static int start_workers(struct NTC_TASK(task) *t)
{
    const int max = (int)(sizeof t->worker / sizeof t->worker[0]);
    if (t->n_workers || t->threads < 2)
        return t->n_workers + 1;
    int want = t->threads - 1 > max ? max : t->threads - 1, started = 0;
    while (started < want && pthread_create(&t->worker[started], NULL, worker_main, t) == 0)
        started++;
    /* wait until each has taken its number (n_workers counts them) */
    for (;;) {
        pthread_mutex_lock(&t->mu);
        int n = t->n_workers;
        pthread_mutex_unlock(&t->mu);
        if (n == started)
            break;
        sched_yield();
    }
    return started + 1;
}

/* Runs job(t, tid, n) for tid = 0..n-1 on the caller and n - 1 workers. */
static void run_job(struct NTC_TASK(task) *t, void (*job)(struct NTC_TASK(task) *, int, int), int n)
{
    if (n <= 1) {
        job(t, 0, 1);
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->job = job, t->job_threads = n;
    t->pending = t->n_workers;
    t->generation++;
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->mu);
    job(t, 0, n);
    spin(all_done, t, 0);
    pthread_mutex_lock(&t->mu);
    while (t->pending)
        pthread_cond_wait(&t->done, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

void NTC_TASK(destroy)(struct NTC_TASK(task) *t)
{
    if (!t)
        return;
    if (t->n_workers) {
        pthread_mutex_lock(&t->mu);
        t->quit = 1;
        t->generation++;
        pthread_cond_broadcast(&t->wake);
        pthread_mutex_unlock(&t->mu);
        for (int i = 0; i < t->n_workers; i++)
            pthread_join(t->worker[i], NULL);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->wake);
    pthread_cond_destroy(&t->done);
    for (int f = 0; f < 2; f++)
        if (t->map[f])
            munmap(t->map[f], t->len[f]);
    free(t->ws_block);
    free(t);
}

struct NTC_TASK(task) *NTC_TASK(create)(const char *task_weights, const char *universal_weights, char *err,
                                        size_t errlen)
{
    struct NTC_TASK(task) *t = calloc(1, sizeof *t);
    if (!t) {
        say(err, errlen, "%s: out of memory", TASK_NAME);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->wake, NULL);
    pthread_cond_init(&t->done, NULL);
    const char *given[2] = {task_weights, universal_weights};
    for (int f = 0; f < 2; f++) {
        char *path = given[f] ? strdup(given[f]) : beside_me(task_files[f]);
        int bad = !path || map_file(path, &t->map[f], &t->len[f], err, errlen, f);
        if (!bad) {
            uint64_t h = 0xcbf29ce484222325ull;
            for (int i = 0; i < TASK_N_PARAMS; i++) {
                const task_param *p = &task_params[i];
                if (p->file != f)
                    continue;
                if (p->offset > t->len[f] || p->count * 4 > t->len[f] - p->offset) {
                    say(err, errlen, "%s: the %s file is too short for this task (truncated?)", path,
                        file_role[f]);
                    bad = 1;
                    break;
                }
                h = fnv(h, (const unsigned char *)t->map[f] + p->offset, p->count * 4);
                t->params[i] = (const float *)(const void *)((const char *)t->map[f] + p->offset);
            }
            if (!bad && h != task_sums[f]) {
                say(err, errlen, "%s: these %s do not match the ones %s was compiled with "
                    "(checksum mismatch); recompile the task, or use the file written when it was compiled",
                    path, file_role[f], TASK_NAME);
                bad = 1;
            }
        }
        free(path);
        if (bad) {
            NTC_TASK(destroy)(t);
            return NULL;
        }
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    t->threads = cpus > 1 ? (int)cpus : 1;
    size_t ws = sizeof(float) * (size_t)(TASK_WS_FLOATS + 16) * (size_t)t->threads;
    if (!(t->ws_block = malloc(ws + 64))) {
        say(err, errlen, "%s: out of memory", TASK_NAME);
        NTC_TASK(destroy)(t);
        return NULL;
    }
    t->ws = (float *)(((uintptr_t)t->ws_block + 63) & ~(uintptr_t)63);
    return t;
}

/* Slice tid of n of the batch, contiguous items, on workspace tid. */
static void slice_job(struct NTC_TASK(task) *t, int tid, int n)
{
    int64_t lo = t->batch * tid / n, hi = t->batch * (tid + 1) / n;
    if (hi > lo)
        ntc_task_run(t->params, t->input + lo * TASK_IN_NUMEL, t->output + lo * TASK_OUT_NUMEL, hi - lo,
                     t->ws + (size_t)tid * (TASK_WS_FLOATS + 16));
}

/* ---- batches smaller than the thread count --------------------------------
 * Each item runs on a team of all the threads, or on one thread, whichever
 * the timings say is faster: the team meets at a barrier after every step,
 * which costs nothing on an idle machine and a scheduling delay on one
 * with more runnable threads than CPUs.  The same policy as ntc_jit_run
 * (compiler/jit.c), repeated here because a task links no libntc. */

/* Member tid of a team of n, on every item in turn (values in thread 0's
 * workspace, scratch in its own). */
static void team_job(struct NTC_TASK(task) *t, int tid, int n)
{
    float *own = t->ws + (size_t)tid * (TASK_WS_FLOATS + 16);
    for (int64_t i = 0; i < t->batch; i++)
        ntc_task_run_team(t->params, t->input + i * TASK_IN_NUMEL, t->output + i * TASK_OUT_NUMEL, t->ws, own, tid, n,
                          t->barrier);
}

enum { PROBE_GAP = 16, PROBE_GAP_MAX = 4096 };

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void run_small(struct NTC_TASK(task) *t, const float *input, int64_t batch, float *output)
{
    unsigned long k = t->small_calls++;
    int probe = 0, team = t->team_s == 0;
    if (t->team_s != 0 && t->solo_s != 0) {
        team = t->team_s <= t->solo_s;
        if (k >= t->next_probe)
            probe = 1, team = !team;
    }
    double t0 = seconds();
    int n = team ? start_workers(t) : 1;
    t->input = input, t->output = output, t->batch = batch;
    if (n > 1) {
        run_job(t, team_job, n);
    } else {
        team = 0;
        ntc_task_run(t->params, input, output, batch, t->ws);
    }
    double per_item = (seconds() - t0) / (double)batch, *avg = team ? &t->team_s : &t->solo_s;
    *avg = *avg == 0 || probe ? per_item : 0.75 * *avg + 0.25 * per_item;
    if (probe || t->probe_gap == 0) {
        /* back off while the probed mode stays slower */
        int lost = team ? t->team_s > t->solo_s : t->solo_s >= t->team_s;
        t->probe_gap = !lost ? PROBE_GAP : t->probe_gap * 2 > PROBE_GAP_MAX ? PROBE_GAP_MAX : t->probe_gap * 2;
        t->next_probe = t->small_calls + t->probe_gap;
    }
}

int NTC_TASK(run)(struct NTC_TASK(task) *t, const float *input, int64_t batch, float *output)
{
    if (!t || batch < 0)
        return -1;
    if (batch > 0 && batch < t->threads) {
        run_small(t, input, batch, output);
        return 0;
    }
    t->input = input, t->output = output, t->batch = batch;
    run_job(t, slice_job, batch > 1 ? start_workers(t) : 1);
    return 0;
}
