/* The fork/join thread pool: a generation counter under one mutex.  A run
 * bumps the generation and wakes the workers; worker i runs task i if
 * there is one, then counts itself done; the caller runs task 0 and waits
 * until every worker has checked in.
 *
 * Waiting spins before it sleeps: a worker that finished a run watches the
 * generation for SPIN_NS (with pause) before it blocks on the condition
 * variable, and the caller watches `pending` as long before it does.  A
 * sleeping worker's CPU goes idle, and on a virtual machine waking an idle
 * vCPU took 0.1-0.7 ms here -- as long as a whole batch-64 forward pass of
 * a small network, which then ran on one core (measured: 0.65 ms with the
 * worker spinning, up to 1.5 ms without).  Back-to-back runs (a training
 * loop, a serving loop, a benchmark) keep the workers awake; an idle pool
 * costs SPIN_NS of CPU per worker after its last run.  OpenMP runtimes do
 * the same (GOMP_SPINCOUNT, KMP_BLOCKTIME). */
#include "pool.h"

#include <string.h>
#include "ntc/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

enum { SPIN_NS = 2000000 };

typedef struct worker_arg {
    struct ntc_pool *p;
    int index;
} worker_arg;

struct ntc_pool {
    int threads;
    pthread_t *tid;
    worker_arg *args;            /* what each worker is started with */
    int started;                 /* workers actually created */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_ulong generation;     /* written under mu; read without it to spin */
    atomic_int pending;          /* workers still busy with this generation (ditto) */
    bool quit;
    ntc_task_fn fn;
    void *ctx;
    int ntasks;
};

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins up to SPIN_NS while *v == value; returns whether it changed. */
static bool spin_ulong(atomic_ulong *v, unsigned long value)
{
    int64_t until = 0;
    for (int i = 0;; i++) {
        if (atomic_load_explicit(v, memory_order_acquire) != value)
            return true;
        cpu_relax();
        if ((i & 255) == 0) {   /* clock_gettime every 256 pauses */
            int64_t t = now_ns();
            if (!until)
                until = t + SPIN_NS;
            else if (t > until)
                return false;
        }
    }
}

static bool spin_zero(atomic_int *v)
{
    int64_t until = 0;
    for (int i = 0;; i++) {
        if (atomic_load_explicit(v, memory_order_acquire) == 0)
            return true;
        cpu_relax();
        if ((i & 255) == 0) {
            int64_t t = now_ns();
            if (!until)
                until = t + SPIN_NS;
            else if (t > until)
                return false;
        }
    }
}

static void *worker(void *arg)
{
    ntc_pool *p = ((worker_arg *)arg)->p;
    int index = ((worker_arg *)arg)->index;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (!p->quit && p->generation == seen) {
            pthread_mutex_unlock(&p->mu);
            spin_ulong(&p->generation, seen);
            pthread_mutex_lock(&p->mu);
        }
        while (!p->quit && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->quit)
            break;
        seen = p->generation;
        ntc_task_fn fn = p->fn;
        void *ctx = p->ctx;
        int run = index < p->ntasks;
        pthread_mutex_unlock(&p->mu);
        if (run)
            fn(ctx, index);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int ntc_pool_default_threads(int requested)
{
    if (requested > 0)
        return requested;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

ntc_pool *ntc_pool_new(int threads, ntc_err *err)
{
    ntc_pool *p = ntc_calloc(1, sizeof *p);
    if (!p) {
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    p->threads = threads < 1 ? 1 : threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (p->threads > 1 && (!(p->tid = ntc_calloc((size_t)p->threads, sizeof(pthread_t))) ||
                           !(p->args = ntc_calloc((size_t)p->threads, sizeof(worker_arg))))) {
        ntc_pool_free(p);
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    for (int i = 1; i < p->threads; i++) {
        p->args[i] = (worker_arg){p, i};
        int e = pthread_create(&p->tid[i], NULL, worker, &p->args[i]);
        if (e) {
            ntc_pool_free(p);
            ntc_error(err, NULL, 0, "cannot start thread %d of %d: %s", i + 1, threads, strerror(e));
            return NULL;
        }
        p->started = i;
    }
    return p;
}

void ntc_pool_run(ntc_pool *p, int ntasks, ntc_task_fn fn, void *ctx)
{
    if (p->threads == 1 || ntasks <= 1) {
        for (int i = 0; i < ntasks; i++)
            fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    p->pending = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0);
    spin_zero(&p->pending);
    pthread_mutex_lock(&p->mu);
    while (p->pending)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int ntc_pool_threads(const ntc_pool *p) { return p->threads; }

void ntc_pool_free(ntc_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    p->generation++;   /* ends the workers' spinning at once */
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i <= p->started; i++)
        pthread_join(p->tid[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    ntc_free(p->tid);
    ntc_free(p->args);
    ntc_free(p);
}
