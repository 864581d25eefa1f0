/* ntc/jit.h - native code for a fixed graph through LLVM: a JIT and
 * shared objects ahead of time.
 *
 *   ntc_err err = {0};
 *   ntc_jit *j = ntc_jit_compile(g, &err);     // g verified, weights loaded
 *   if (!j || ntc_jit_run(j, images, 64, logits, &err)) ...
 *   ntc_jit_free(j);                           // before the graph
 *
 *   ntc_aot_opts o = {.universal_weights = "universal.weights"};
 *   ntc_aot_compile(g, "digits.so", &o, &err); // digits.so, digits.h, digits.weights
 *
 * Code generation: every live node reaching the output becomes a loop nest
 * specialised for its shapes and attributes (constants everywhere except
 * the batch), optimised at O3 for the host CPU (its name and features, so
 * AVX-512 when present).  Convolutions are register-blocked direct
 * convolutions over a zero-padded, stride-phase-split copy of their input.
 * Parameters are not baked into the code: the generated entry reads them
 * from a pointer table, so compiled tasks can share one mapped copy of the
 * universal weights.  Batch items are spread over the threads (one per
 * online CPU); a batch smaller than the thread count runs either item by
 * item on the whole team (each convolution splits its tiles, a barrier
 * between steps) or on one thread, whichever the JIT's own timings of the
 * two found faster (re-checked now and then).
 *
 * Environment: NTC_JIT_VECTOR_WIDTH=4|8 generates code for narrower
 * vectors than the host has (tests use it to cover AVX2/SSE code shapes);
 * NTC_JIT_THREADS=N sets the thread count (default: one per online CPU).
 *
 * Semantics are the interpreter's (ntc/runtime.h), which follows ONNX op
 * by op; batchnorm uses running statistics, mix uses softmax(alpha).  The
 * graph needs exactly one input and one output, both with the symbolic
 * batch as dimension 0.
 */
#ifndef NTC_JIT_H
#define NTC_JIT_H

#include "ntc/ir.h"

typedef struct ntc_jit ntc_jit;

/* Compiles g (verified; every parameter read by a node that reaches the
 * output must have data).  The parameter data is borrowed, not copied: g
 * must outlive the result and keep its weights unchanged.  Returns NULL
 * with err filled; an op without an emitter or an unsupported graph shape
 * names the node. */
ntc_jit *ntc_jit_compile(ntc_graph *g, ntc_err *err);

/* Runs `batch` items: input is batch-major with the graph input's shape,
 * output receives batch x (output item size) floats.  Thread-safe only for
 * distinct ntc_jit objects.  Returns 0, or -1 with err filled. */
int ntc_jit_run(ntc_jit *j, const float *input, int batch, float *output, ntc_err *err);

void ntc_jit_free(ntc_jit *j);

/* Floats per batch item of the input and of the output. */
int64_t ntc_jit_input_numel(const ntc_jit *j);
int64_t ntc_jit_output_numel(const ntc_jit *j);
/* Seconds spent building IR, optimising, and emitting/linking machine code. */
void ntc_jit_times(const ntc_jit *j, double *ir, double *opt, double *emit);
/* The optimised LLVM IR of the module (for tests asserting on the shape of
 * the generated code); NULL unless NTC_JIT_KEEP_IR was set in the
 * environment at compile time.  Owned by j. */
const char *ntc_jit_ir(const ntc_jit *j);

/* ---- ahead of time ------------------------------------------------------ */

typedef struct {
    double ir, opt, emit, link;         /* seconds: build IR, optimise, machine code, cc */
} ntc_aot_times;

typedef struct {
    /* The shared universal weights file; NULL: "universal.weights" next to the
     * shared object.  Created if missing; tensors this task needs that are
     * missing are appended (existing bytes never move, so tasks compiled
     * earlier stay valid); a tensor present with different bytes is an
     * error (the file belongs to another backbone). */
    const char *universal_weights;
    const char *cc;                     /* C compiler/linker; NULL: $CC or "cc" */
    bool keep_temps;                    /* leave the object and C files next to the .so */
    ntc_aot_times *times;               /* filled when non-NULL */
} ntc_aot_opts;

/* Writes so_path (a shared object), the header (so_path with ".h") and the
 * task's own weights (so_path with ".weights"), all atomically.  Symbols are
 * named after the file: "digits.so" exports digits_create, digits_run and
 * digits_destroy (see the generated header).  Universal parameters (those
 * of blocks with role universal) go to the universal weights file instead;
 * a checksum of the tensors the task reads from it is recorded in the .so
 * and checked when the task is created.  A failing link reports the
 * command.  Returns 0, or -1 with err filled. */
int ntc_aot_compile(ntc_graph *g, const char *so_path, const ntc_aot_opts *o, ntc_err *err);

#endif
