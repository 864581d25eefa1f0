/* ntc/runtime.h - the interpreter: run a graph forward on a batch.
 *
 *   ntc_err err = {0};
 *   ntc_graph *g = ntc_graph_read_xml("backbone.xml", &err);
 *   ntc_exec *x = ntc_exec_new(g, 64, &err);           // batches up to 64
 *   const float *in[] = {images};                       // one per graph input
 *   if (ntc_exec_run(x, in, 64, &err)) ...              // [64, 1, 28, 28]
 *   const float *logits = ntc_exec_output(x, 0);        // [64, 10]
 *   ntc_exec_free(x);                                   // before the graph
 *
 * Semantics are ONNX's, op by op (see ntc/ops.def and runtime/kern_*.c),
 * float32, batch-major C order.
 *
 * Execution plan: nodes run in ntc_graph_topo_order's order; every
 * intermediate value gets an offset in one arena from its lifetime (from
 * the step that produces it to the last step that reads it), and values
 * whose lifetimes overlap never share bytes.  Graph outputs get their own
 * buffers.
 *
 * Threading model: ntc's own thread pool, and nothing else.  With T
 * threads a batch of at least T items is cut into T contiguous slices and
 * each thread runs the whole schedule on its slice (in chunks of items
 * whose activations fit in the core's cache), in its own arena, with no
 * synchronisation between nodes (one fork/join per run).  A smaller
 * batch (batch 1 on two cores) runs as one slice on the calling thread and
 * each convolution splits its output rows over the pool instead (one
 * fork/join per convolution).  OpenBLAS is pinned to one thread so it
 * never competes with the pool: the GEMMs of a 28x28 ResNet are too small
 * for OpenBLAS's own threading to pay.  Each item's result does not depend
 * on the split, so runs are deterministic for a given batch and thread count.
 */
#ifndef NTC_RUNTIME_H
#define NTC_RUNTIME_H

#include "ntc/ir.h"
#include "ntc/plan.h"

/* ---- the executor -------------------------------------------------------- */

typedef struct ntc_exec ntc_exec;

/* Prepares g to run batches of 1..max_batch on all online CPUs.  Infers
 * g's shapes; every parameter must have data (the error names the first
 * that has none).  g must outlive the executor and not change meanwhile. */
ntc_exec *ntc_exec_new(ntc_graph *g, int max_batch, ntc_err *err);
/* As ntc_exec_new with `threads` workers (0: one per online CPU). */
ntc_exec *ntc_exec_new_threads(ntc_graph *g, int max_batch, int threads, ntc_err *err);

/* Runs the graph on `batch` items (1..max_batch).  inputs[i] is graph input
 * i (g->inputs order), batch-major with the input's shape.  Returns 0, or
 * -1 with err filled. */
int ntc_exec_run(ntc_exec *x, const float *const *inputs, int batch, ntc_err *err);

/* Graph output i (g->outputs order) of the last run: batch-major, valid
 * until the next run or free.  NULL before the first run or if i is out
 * of range. */
const float *ntc_exec_output(const ntc_exec *x, int i);
/* Shape of output i for the last run's batch (dims[0] = batch). */
ntc_shape ntc_exec_output_shape(const ntc_exec *x, int i);
/* Threads the executor uses and the plan it runs. */
int ntc_exec_threads(const ntc_exec *x);
const ntc_plan *ntc_exec_plan(const ntc_exec *x);

void ntc_exec_free(ntc_exec *x);

#endif
