/* The fork/join thread pool: a generation counter under one mutex.  A run
 * bumps the generation and wakes the workers; worker i runs task i if
 * there is one, then counts itself done; the caller runs task 0 and waits
 * until every worker has checked in.  One run costs two condition-variable
 * round trips, which is nothing next to a forward pass. */
#include "pool.h"

#include <string.h>
#include "ntc/util.h"

#include <pthread.h>
#include <unistd.h>
#include <stdbool.h>

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
    unsigned long generation;
    int pending;                 /* workers still busy with this generation */
    bool quit;
    ntc_task_fn fn;
    void *ctx;
    int ntasks;
};

static void *worker(void *arg)
{
    ntc_pool *p = ((worker_arg *)arg)->p;
    int index = ((worker_arg *)arg)->index;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
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
