/* runtime/pool.h - a small fork/join thread pool (internal to libntc).
 *
 * The executor's one threading mechanism: a run hands task i to thread i
 * (task 0 to the calling thread) and returns when all are done.  Workers
 * sleep on a condition variable between runs. */
#ifndef NTC_RUNTIME_POOL_H
#define NTC_RUNTIME_POOL_H

#include "ntc/util.h"

typedef struct ntc_pool ntc_pool;
typedef void (*ntc_task_fn)(void *ctx, int task);

/* A pool of `threads` threads counting the caller (threads - 1 workers);
 * NULL with err filled ("out of memory" or why a thread did not start). */
ntc_pool *ntc_pool_new(int threads, ntc_err *err);
/* `requested` when positive, else the number of online CPUs (at least 1):
 * the default thread count of every executor. */
int ntc_pool_default_threads(int requested);
/* Runs fn(ctx, i) for i in [0, ntasks), ntasks <= threads, each on its own
 * thread, and waits for all of them.  Not reentrant, except that a run of
 * one task happens inline without the workers, so that task may itself
 * run the pool. */
void ntc_pool_run(ntc_pool *p, int ntasks, ntc_task_fn fn, void *ctx);
int ntc_pool_threads(const ntc_pool *p);
void ntc_pool_free(ntc_pool *p);

#endif
