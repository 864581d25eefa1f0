/* Internals of the code generator shared by compiler/codegen*.c, jit.c and
 * aot.c.
 *
 * ntc_codegen lowers a graph to one object file exporting
 *
 *   void ntc_task_run(const float *const *params, const float *input,
 *                     float *output, int64_t batch, float *workspace);
 *
 * which runs `batch` items one after the other; `params` holds the
 * parameter pointers in the order of ntc_cg_result.params, `workspace`
 * holds ws_floats floats (64-byte aligned) for the intermediate values and
 * the convolutions' scratch of one item.  Callers split big batches over
 * threads, one workspace each.  And
 *
 *   void ntc_task_run_team(const float *const *params, const float *input,
 *                          float *output, float *workspace, float *own_workspace,
 *                          int64_t tid, int64_t nthreads, int32_t *barrier);
 *
 * which computes one item with a team of threads calling it together:
 * convolutions split their tiles, other steps run on thread 0, a barrier
 * (two zeroed i32 shared by the team) ends each step; the values live in
 * thread 0's workspace, each thread's scratch in its own (callers use it
 * for batches smaller than their thread count, see jit.c).
 *
 * codegen_plan.c groups the nodes into steps (a conv2d absorbs a following
 * batchnorm -> add -> relu chain) and lays out the workspace; each step
 * becomes an internal function emitted by its head op's row in the emitter
 * table (codegen.c); the emitters live in codegen_ops.c and codegen_conv.c
 * and use the loop-building helpers of codegen_build.c declared below.
 * docs/compiler.md tells the whole story. */
#ifndef NTC_COMPILER_CODEGEN_H
#define NTC_COMPILER_CODEGEN_H

#include "ntc/ir.h"

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#define NTC_CG_ENTRY "ntc_task_run"
#define NTC_CG_ENTRY_TEAM "ntc_task_run_team"

typedef struct {
    bool hidden_entry;          /* hidden visibility (shared objects: no interposition) */
    bool keep_ir;               /* keep the optimised IR text in the result */
} ntc_cg_opts;

typedef struct {
    int n_params;
    int *params;                /* value handles, in the table order of the entry */
    int *layout;                /* per parameter: 0, read as stored; or b, a conv weight
                                 * [F][C][KH][KW] packed as [F/b][C][KH][KW][b]
                                 * (codegen_conv_oc.c; ntc_cg_param_data packs it) */
    int input, output;          /* value handles */
    int64_t in_numel, out_numel;/* floats per item */
    int64_t ws_floats;          /* workspace floats one thread needs */
    void *obj;                  /* object file bytes (ntc_malloc'ed) */
    size_t obj_len;
    char *ir;                   /* optimised IR text if keep_ir, else NULL */
    double t_ir, t_opt, t_emit; /* seconds */
} ntc_cg_result;

/* Lowers g (verified; shapes inferred here) to an object file for the host
 * CPU with position-independent code.  Returns 0, or -1 with err filled
 * (the node's name and source line for unsupported nodes). */
int ntc_codegen(ntc_graph *g, const ntc_cg_opts *o, ntc_cg_result *r, ntc_err *err);
void ntc_cg_result_free(ntc_cg_result *r);

/* Parameter i of r's table as the generated code reads it: the value's
 * data (*owned NULL), or a packed copy (*owned, ntc_malloc'ed, the
 * caller frees it); NULL when out of memory.  dims/rank: its shape. */
const float *ntc_cg_param_data(const ntc_graph *g, const ntc_cg_result *r, int i, float **owned, int64_t dims[8],
                               int *rank);

/* Prepares LLVM's native target once (thread-safe). */
void ntc_cg_init_llvm(void);

/* ---- for the emitters ------------------------------------------------------ */

struct cg;

/* One call of the entry: a node, or a conv2d with its fused epilogue
 * (see cg_node).  Node handles, -1 when absent. */
typedef struct {
    int head;                   /* the node emitted */
    int bn, add, relu;          /* fused into a conv2d head */
    int residual;               /* value handle: the add's other input, or -1 */
    int tail;                   /* the node whose output the step writes */
} cg_step;

typedef struct {
    int n_steps;
    cg_step *steps;             /* in run order; only nodes reaching the output */
    int64_t *offset;            /* per value: workspace offset in floats, -1 if none */
    int64_t *scratch_off;       /* per step: its scratch offset, -1 if none */
    int64_t ws_floats;          /* workspace floats per item */
    bool *blocked;              /* per value: stored [C/vw][H][W][vw] rather than NCHW
                                 * (codegen_conv_oc.c; see plan_layouts) */
} cg_plan;

/* Plans g's steps and workspace (codegen_plan.c).  Returns 0, or -1 with
 * err filled. */
int cg_make_plan(const struct cg *c, const ntc_graph *g, int output, cg_plan *p, ntc_err *err);
/* The value step st adds as its residual, or -1. */
int cg_step_residual(const ntc_graph *g, const cg_step *st);
void cg_plan_free(cg_plan *p);
/* Scratch floats the node's emitter needs (0 for most ops). */
int64_t cg_node_scratch(const struct cg *c, const ntc_graph *g, int node);

typedef struct cg {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef i1, i32, i64, f32, ptr, vec; /* vec: <vw x float> */
    int vw;                     /* floats per vector register of the host */
    LLVMValueRef fn;            /* function being emitted */
    const ntc_graph *g;
    /* Convolution cores already emitted (codegen_conv.c), shared by every
     * conv2d of the same code whatever its fused epilogue. */
    int n_cores;
    const ntc_node *core_node[256];
    bool core_blocked[256];     /* ... and whether it reads a blocked input */
    LLVMValueRef core_fn[256];
} cg;

/* Whether nodes a and b of g compile to the same code: same op,
 * attributes, shapes and present parameter slots. */
bool cg_same_node_code(const ntc_graph *g, const ntc_node *a, const ntc_node *b);
/* Adds attributes every generated function gets (nounwind, vector width). */
void cg_function_attrs(cg *c, LLVMValueRef fn);
void cg_add_attr(cg *c, LLVMValueRef fn, unsigned idx, const char *name);

#define CG_MAX_INPUTS 64

/* What an emitter gets: the node and its operands as pointer values of the
 * node's function (one batch item; parameters absent from the node are
 * NULL, never dereferenced). */
typedef struct {
    const ntc_node *n;
    const ntc_shape *in_shape;  /* per input, dims[0] is the batch */
    const ntc_shape *out_shape;
    LLVMValueRef in[CG_MAX_INPUTS]; /* the node's n_in (codegen.c refuses more) */
    LLVMValueRef out, scratch;
    LLVMValueRef par[NTC_MAX_PARAMS];
    /* An epilogue fused into a conv2d: codegen.c finds conv2d ->
     * batchnorm -> add -> relu chains (each part optional) whose
     * intermediate values nobody else reads; the emitter applies them in
     * that order to every output element, exactly as the separate nodes
     * would. */
    const ntc_node *bn;         /* batchnorm, or NULL */
    LLVMValueRef bn_par[NTC_MAX_PARAMS];
    LLVMValueRef residual;      /* the add's other input, or NULL */
    bool relu;
    /* The team sharing this item (i64 values): a step whose emitter splits
     * its work (conv2d) does part tid of nthreads and must write only its
     * part of the output; other emitters ignore them (the team entry runs
     * those steps on thread 0 alone). */
    LLVMValueRef tid, nthreads;
    /* Layouts (cg_plan.blocked) of the input in[0], the output and the
     * residual: only output-channel convolutions see true, and never a
     * blocked output with an NCHW residual. */
    bool in_blocked, out_blocked, res_blocked;
} cg_node;

/* An emitter fills the node's function body at the builder's position and
 * returns 0, or -1 with err filled. */
typedef int (*cg_emit_fn)(cg *c, const cg_node *nd, ntc_err *err);
/* Scratch floats per item a node needs besides its output. */
typedef int64_t (*cg_scratch_fn)(const cg *c, const ntc_node *n, const ntc_shape *in, const ntc_shape *out);

#define OP(name, min_in, max_in, doc) \
    int cg_emit_##name(cg *c, const cg_node *nd, ntc_err *err);
#include "ntc/ops.def"
#undef OP
int64_t cg_scratch_conv2d(const cg *c, const ntc_node *n, const ntc_shape *in, const ntc_shape *out);
/* Whether conv n (input and output shapes in, out) runs the output-channel
 * kernel of vector width vw, which reads its weight packed in blocks of
 * vw filters (codegen_conv_oc.c). */
bool cg_conv_packs_weights(int vw, const ntc_node *n, const ntc_shape *in, const ntc_shape *out);

/* A counted loop `for (iv = lo; iv < hi; iv += step)` (while form: runs zero
 * times when lo >= hi).  cg_for leaves the builder in the body; cg_end
 * closes the loop and leaves the builder after it.  Loop-carried values
 * (accumulators): cg_for_carry makes carry[k] start at init[k]; cg_end_carry
 * feeds next[k] back; after the loop carry[k] holds the final value. */
#define CG_MAX_CARRY 64
typedef struct {
    LLVMValueRef iv, step;
    LLVMBasicBlockRef header, exit;
    int n_carry;
    LLVMValueRef carry[CG_MAX_CARRY];
} cg_loop;

cg_loop cg_for(cg *c, LLVMValueRef lo, LLVMValueRef hi, int64_t step, const char *name);
void cg_end(cg *c, cg_loop *l);
void cg_for_carry(cg *c, cg_loop *l, LLVMValueRef lo, LLVMValueRef hi, int64_t step, const char *name,
                  int n, const LLVMValueRef *init);
void cg_end_carry(cg *c, cg_loop *l, const LLVMValueRef *next);

LLVMValueRef cg_i64(cg *c, int64_t v);
LLVMValueRef cg_f32(cg *c, double v);
/* &p[i] for float pointers, i an i64 value. */
LLVMValueRef cg_gep(cg *c, LLVMValueRef p, LLVMValueRef i);
LLVMValueRef cg_load(cg *c, LLVMValueRef p, LLVMValueRef i);             /* p[i] */
void cg_store(cg *c, LLVMValueRef v, LLVMValueRef p, LLVMValueRef i);    /* p[i] = v */
LLVMValueRef cg_vload(cg *c, LLVMValueRef p, LLVMValueRef i);            /* vector at &p[i] */
void cg_vstore(cg *c, LLVMValueRef v, LLVMValueRef p, LLVMValueRef i);
LLVMValueRef cg_splat(cg *c, LLVMValueRef scalar);
/* Lanes of a vector whose index first + k (k = 0..vw-1) lies in [lo, hi)
 * (i64 values) as a <vw x i1> mask. */
LLVMValueRef cg_lane_mask(cg *c, int64_t first, LLVMValueRef lo, LLVMValueRef hi);
/* The vector at &p[i], lanes outside mask read as 0 and never touched
 * (&p[i] may lie outside p's object); the store writes the mask's lanes. */
LLVMValueRef cg_vload_masked(cg *c, LLVMValueRef p, LLVMValueRef i, LLVMValueRef mask);
void cg_vstore_masked(cg *c, LLVMValueRef v, LLVMValueRef p, LLVMValueRef i, LLVMValueRef mask);
LLVMValueRef cg_add(cg *c, LLVMValueRef a, LLVMValueRef b);              /* i64 */
LLVMValueRef cg_mul(cg *c, LLVMValueRef a, LLVMValueRef b);              /* i64 */
LLVMValueRef cg_smax(cg *c, LLVMValueRef a, LLVMValueRef b);             /* i64 */
LLVMValueRef cg_smin(cg *c, LLVMValueRef a, LLVMValueRef b);             /* i64 */
/* Float arithmetic.  `reassoc` marks additions inside reductions that may
 * be reordered (so they vectorise); everything else keeps IEEE order. */
LLVMValueRef cg_fadd(cg *c, LLVMValueRef a, LLVMValueRef b, bool reassoc);
LLVMValueRef cg_fmul(cg *c, LLVMValueRef a, LLVMValueRef b);
/* a * b + c, fused when the target has FMA (llvm.fmuladd). */
LLVMValueRef cg_fmuladd(cg *c, LLVMValueRef a, LLVMValueRef b, LLVMValueRef acc);
/* Calls a one-argument float intrinsic ("llvm.exp", "llvm.sqrt") on a
 * scalar or a vector. */
LLVMValueRef cg_intrinsic1(cg *c, const char *name, LLVMValueRef x);
LLVMValueRef cg_maxnum(cg *c, LLVMValueRef a, LLVMValueRef b);
/* max(x, 0) as the interpreter's relu computes it (x > 0 ? x : 0, so NaN
 * gives 0), on a scalar or a vector. */
LLVMValueRef cg_relu(cg *c, LLVMValueRef x);

/* The team barrier: void sync(ptr state, i64 nthreads), emitted once per
 * module.  state: two i32 (arrivals, generation) shared by the team,
 * zeroed before the team's first call.  Waiters spin (with pause on x86)
 * for a short while, then call sched_yield between checks, so a machine
 * with more runnable threads than CPUs still makes progress. */
LLVMValueRef cg_emit_barrier(cg *c);

#endif
