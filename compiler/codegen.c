/* Code generation driver: picks the nodes that reach the output, plans one
 * workspace for their values and scratch, emits one function per node
 * through the op's row of the emitter table and an entry that runs them in
 * order for every batch item, optimises the module at O3 for the host CPU
 * and emits a position-independent object file. */
#include "codegen.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the emitter table --------------------------------------------------- */

/* Ops that need no scratch besides their output. */
#define cg_scratch_batchnorm NULL
#define cg_scratch_relu NULL
#define cg_scratch_add NULL
#define cg_scratch_mix NULL
#define cg_scratch_maxpool NULL
#define cg_scratch_avgpool NULL
#define cg_scratch_global_avgpool NULL
#define cg_scratch_flatten NULL
#define cg_scratch_linear NULL
#define cg_scratch_softmax NULL
/* fused_conv2d is the conv2d emitter with its epilogue (codegen_fused.c). */
#define cg_scratch_fused_conv2d cg_scratch_conv2d

/* One row per op of ntc/ops.def: an op without cg_emit_<op> and
 * cg_scratch_<op> does not compile. */
static const struct {
    cg_emit_fn emit;
    cg_scratch_fn scratch;
} emitters[NTC_OP_COUNT] = {
#define OP(name, min_in, max_in, doc) [NTC_OP_##name] = {cg_emit_##name, cg_scratch_##name},
#include "ntc/ops.def"
#undef OP
};

/* ---- LLVM setup ------------------------------------------------------------ */

static pthread_once_t llvm_once = PTHREAD_ONCE_INIT;

static void init_llvm_once(void)
{
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
}

void ntc_cg_init_llvm(void) { pthread_once(&llvm_once, init_llvm_once); }

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The host CPU's target machine (PIC: the object may become a .so). */
static LLVMTargetMachineRef host_machine(char **features_out, ntc_err *err)
{
    char *triple = LLVMGetDefaultTargetTriple();
    char *cpu = LLVMGetHostCPUName();
    char *features = LLVMGetHostCPUFeatures();
    LLVMTargetRef target;
    char *msg = NULL;
    LLVMTargetMachineRef tm = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &msg))
        ntc_error(err, NULL, 0, "no LLVM target for %s: %s", triple, msg ? msg : "?");
    else
        tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
                                     LLVMRelocPIC, LLVMCodeModelDefault);
    if (msg)
        LLVMDisposeMessage(msg);
    LLVMDisposeMessage(triple);
    LLVMDisposeMessage(cpu);
    if (!tm && err->msg[0] == 0)
        ntc_error(err, NULL, 0, "cannot create the LLVM target machine");
    *features_out = features;
    return tm;
}

static int host_vector_width(const char *features);

/* Floats per vector register: 16 with AVX-512, 8 with AVX, else 4.
 * NTC_JIT_VECTOR_WIDTH=4|8|16 narrows it (tests run the narrower code
 * shapes on a wide machine; a width wider than the host's is ignored). */
static int vector_width(const char *features)
{
    int host = host_vector_width(features);
    const char *force = getenv("NTC_JIT_VECTOR_WIDTH");
    int w = force ? atoi(force) : 0;
    return (w == 4 || w == 8 || w == 16) && w <= host ? w : host;
}

static int host_vector_width(const char *features)
{
    if (strstr(features, "+avx512f"))
        return 16;
    if (strstr(features, "+avx"))
        return 8;
    return 4;
}

int64_t cg_node_scratch(const cg *c, const ntc_graph *g, int node)
{
    const ntc_node *n = &g->nodes[node];
    cg_scratch_fn fn = emitters[n->op].scratch;
    if (!fn)
        return 0;
    ntc_shape in[CG_MAX_INPUTS];
    for (int j = 0; j < n->n_in && j < CG_MAX_INPUTS; j++)
        in[j] = g->values[n->in[j]].shape;
    return fn(c, n, in, &g->values[n->out].shape);
}

/* ---- checks ------------------------------------------------------------------ */

static bool batch_major(const ntc_shape *s) { return s->rank >= 1 && s->dims[0] == NTC_BATCH; }

static int check_graph(const ntc_graph *g, ntc_err *err)
{
    if (g->n_inputs != 1 || g->n_outputs != 1)
        return ntc_error(err, g->path, 0, "code generation needs exactly one graph input and one output "
                         "(the graph has %d and %d)", g->n_inputs, g->n_outputs);
    const ntc_value *in = &g->values[g->inputs[0]], *out = &g->values[g->outputs[0].value];
    if (!batch_major(&in->shape) || !batch_major(&out->shape))
        return ntc_error(err, g->path, 0, "code generation needs the batch N as dimension 0 of '%s' and '%s'",
                         in->name, out->name);
    if (out->kind != NTC_VAL_ACT)
        return ntc_error(err, g->path, 0, "output '%s' is not computed by a node", g->outputs[0].name);
    return 0;
}

static int check_node(const ntc_graph *g, const ntc_node *n, ntc_err *err)
{
    if (n->n_in > CG_MAX_INPUTS)
        return ntc_error(err, g->path, n->line, "%s node '%s' has %d inputs; code generation supports %d",
                         ntc_op_name(n->op), n->name, n->n_in, CG_MAX_INPUTS);
    for (int j = 0; j < n->n_in; j++)
        if (!batch_major(&g->values[n->in[j]].shape))
            return ntc_error(err, g->path, n->line, "%s node '%s': input '%s' has no batch dimension",
                             ntc_op_name(n->op), n->name, g->values[n->in[j]].name);
    for (int k = 0; k < NTC_MAX_PARAMS; k++)
        if (n->par[k] >= 0 && !g->values[n->par[k]].data)
            return ntc_error(err, g->path, n->line, "%s node '%s': parameter '%s' has no data (weights not loaded)",
                             ntc_op_name(n->op), n->name, g->values[n->par[k]].name);
    return 0;
}

/* ---- emission ------------------------------------------------------------------ */

void cg_add_attr(cg *c, LLVMValueRef fn, unsigned idx, const char *name)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(c->ctx, kind, 0));
}

void cg_function_attrs(cg *c, LLVMValueRef fn)
{
    cg_add_attr(c, fn, LLVMAttributeFunctionIndex, "nounwind");
    if (c->vw >= 16) {
        LLVMAttributeRef a = LLVMCreateStringAttribute(c->ctx, "prefer-vector-width", 19, "512", 3);
        LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, a);
    }
}

#define CG_MAX_OPERANDS (CG_MAX_INPUTS + 2 * NTC_MAX_PARAMS + 1)

/* The values a step's function takes after (out, scratch), in order: the
 * head's inputs, its present parameters, the fused batchnorm's parameters
 * and the residual.  Returns how many. */
static int step_operands(const ntc_graph *g, const cg_step *st, int *v)
{
    const ntc_node *h = &g->nodes[st->head];
    int n = 0;
    for (int j = 0; j < h->n_in; j++)
        v[n++] = h->in[j];
    for (int k = 0; k < NTC_MAX_PARAMS; k++)
        if (h->par[k] >= 0)
            v[n++] = h->par[k];
    if (st->bn >= 0)
        for (int k = 0; k < NTC_MAX_PARAMS; k++)
            if (g->nodes[st->bn].par[k] >= 0)
                v[n++] = g->nodes[st->bn].par[k];
    if (st->residual >= 0)
        v[n++] = st->residual;
    return n;
}

/* void step(ptr out, ptr scratch, i64 tid, i64 nthreads, ptr operands...)
 * with every pointer noalias: the plan never lets an output or scratch
 * overlap an input, and parameters and inputs are only read.  tid and
 * nthreads: the part of the work to do (see cg_node). */
static LLVMValueRef emit_step(cg *c, const ntc_graph *g, const cg_plan *p, const cg_step *st, int index, ntc_err *err)
{
    const ntc_node *n = &g->nodes[st->head];
    int operands[CG_MAX_OPERANDS];
    int n_args = 4 + step_operands(g, st, operands);
    LLVMTypeRef args[4 + CG_MAX_OPERANDS];
    for (int i = 0; i < n_args; i++)
        args[i] = i == 2 || i == 3 ? c->i64 : c->ptr;
    char name[64];
    snprintf(name, sizeof name, "node%d.%s%s", index, ntc_op_name(n->op), st->tail != st->head ? ".fused" : "");
    LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(c->ctx), args, (unsigned)n_args, 0);
    LLVMValueRef fn = LLVMAddFunction(c->mod, name, ft);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_function_attrs(c, fn);
    cg_add_attr(c, fn, LLVMAttributeFunctionIndex, "noinline");
    for (int i = 0; i < n_args; i++)
        if (i != 2 && i != 3)
            cg_add_attr(c, fn, (unsigned)i + 1, "noalias");

    cg_node nd = {.n = n, .out_shape = &g->values[n->out].shape};
    ntc_shape in_shape[CG_MAX_INPUTS];
    nd.tid = LLVMGetParam(fn, 2);
    nd.nthreads = LLVMGetParam(fn, 3);
    unsigned a = 4;
    for (int j = 0; j < n->n_in; j++) {
        in_shape[j] = g->values[n->in[j]].shape;
        nd.in[j] = LLVMGetParam(fn, a++);
    }
    nd.in_shape = in_shape;
    nd.out = LLVMGetParam(fn, 0);
    nd.scratch = LLVMGetParam(fn, 1);
    for (int k = 0; k < NTC_MAX_PARAMS; k++)
        nd.par[k] = n->par[k] >= 0 ? LLVMGetParam(fn, a++) : NULL;
    if (st->bn >= 0) {
        nd.bn = &g->nodes[st->bn];
        for (int k = 0; k < NTC_MAX_PARAMS; k++)
            nd.bn_par[k] = nd.bn->par[k] >= 0 ? LLVMGetParam(fn, a++) : NULL;
    }
    nd.residual = st->residual >= 0 ? LLVMGetParam(fn, a++) : NULL;
    nd.relu = st->relu >= 0;
    nd.in_blocked = n->n_in > 0 && p->blocked[n->in[0]];
    nd.out_blocked = p->blocked[g->nodes[st->tail].out];
    nd.res_blocked = cg_step_residual(g, st) >= 0 && p->blocked[cg_step_residual(g, st)];

    c->fn = fn;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
    if (emitters[n->op].emit(c, &nd, err)) {
        if (!err->line)
            err->line = n->line;
        return NULL;
    }
    LLVMBuildRetVoid(c->b);
    return fn;
}

/* Two nodes can share one function when everything the emitters
 * specialise on is equal: op, attributes, shapes and which parameter slots
 * are present (the parameters themselves are arguments). */
bool cg_same_node_code(const ntc_graph *g, const ntc_node *a, const ntc_node *b)
{
    if (a->op != b->op || a->n_in != b->n_in || memcmp(&a->a, &b->a, sizeof a->a))
        return false;
    for (int k = 0; k < NTC_MAX_PARAMS; k++)
        if ((a->par[k] >= 0) != (b->par[k] >= 0))
            return false;
    for (int j = 0; j < a->n_in; j++)
        if (memcmp(&g->values[a->in[j]].shape, &g->values[b->in[j]].shape, sizeof(ntc_shape)))
            return false;
    return !memcmp(&g->values[a->out].shape, &g->values[b->out].shape, sizeof(ntc_shape));
}

/* ... and two steps when their heads and fused parts can. */
static bool same_code(const ntc_graph *g, const cg_plan *p, const cg_step *a, const cg_step *b)
{
    const ntc_node *ha = &g->nodes[a->head], *hb = &g->nodes[b->head];
    int ra = cg_step_residual(g, a), rb = cg_step_residual(g, b);
    if (p->blocked[g->nodes[a->tail].out] != p->blocked[g->nodes[b->tail].out] ||
        (ha->n_in > 0 && hb->n_in > 0 && p->blocked[ha->in[0]] != p->blocked[hb->in[0]]) ||
        (ra >= 0 && rb >= 0 && p->blocked[ra] != p->blocked[rb]))
        return false;
    if ((a->bn >= 0) != (b->bn >= 0) || (a->add >= 0) != (b->add >= 0) || (a->relu >= 0) != (b->relu >= 0))
        return false;
    if (a->bn >= 0 && !cg_same_node_code(g, &g->nodes[a->bn], &g->nodes[b->bn]))
        return false;
    return cg_same_node_code(g, &g->nodes[a->head], &g->nodes[b->head]);
}

static int param_index(const ntc_cg_result *r, int v, int layout)
{
    for (int i = 0; i < r->n_params; i++)
        if (r->params[i] == v && r->layout[i] == layout)
            return i;
    return -1;
}

/* How step st reads its operand v: packed (the vector width) when v is
 * the weight of a convolution on the output-channel kernel, else 0. */
static int operand_layout(const cg *c, const ntc_graph *g, const cg_step *st, int v)
{
    const ntc_node *h = &g->nodes[st->head];
    if (v != h->par[0] || !cg_conv_packs_weights(c->vw, h, &g->values[h->in[0]].shape, &g->values[h->out].shape))
        return 0;
    return c->vw;
}

/* Whether a step splits its work over a team (see cg_node). */
static bool step_splits(const ntc_graph *g, const cg_step *st)
{
    ntc_op op = g->nodes[st->head].op;
    return op == NTC_OP_conv2d || op == NTC_OP_fused_conv2d;
}

/* Calls step s on one item: values in the workspace ws, the step's scratch
 * in own_ws (each thread of a team has its own), part tid of nthreads. */
static void call_step(cg *c, const ntc_graph *g, const cg_plan *p, int s, LLVMValueRef fn, const ntc_cg_result *r,
                      LLVMValueRef *par, LLVMValueRef in, LLVMValueRef out_item, LLVMValueRef ws, LLVMValueRef own_ws,
                      LLVMValueRef tid, LLVMValueRef nthreads)
{
    int operands[CG_MAX_OPERANDS], out = g->nodes[p->steps[s].tail].out;
    int n = step_operands(g, &p->steps[s], operands);
    LLVMValueRef a[4 + CG_MAX_OPERANDS];
    a[0] = out == r->output ? out_item : cg_gep(c, ws, cg_i64(c, p->offset[out]));
    a[1] = p->scratch_off[s] >= 0 ? cg_gep(c, own_ws, cg_i64(c, p->scratch_off[s])) : LLVMConstNull(c->ptr);
    a[2] = tid;
    a[3] = nthreads;
    for (int i = 0; i < n; i++) {
        int v = operands[i];
        a[4 + i] = g->values[v].kind == NTC_VAL_PARAM ? par[param_index(r, v, operand_layout(c, g, &p->steps[s], v))]
                   : v == r->input                    ? in
                   : v == r->output                   ? out_item
                                                      : cg_gep(c, ws, cg_i64(c, p->offset[v]));
    }
    LLVMBuildCall2(c->b, LLVMGlobalGetValueType(fn), fn, a, (unsigned)(4 + n), "");
}

/* The parameter pointers of the table, loaded once at the entry. */
static void load_params(cg *c, LLVMValueRef params, const ntc_cg_result *r, LLVMValueRef *par)
{
    for (int i = 0; i < r->n_params; i++) {
        LLVMValueRef idx = cg_i64(c, i);
        par[i] = LLVMBuildLoad2(c->b, c->ptr, LLVMBuildInBoundsGEP2(c->b, c->ptr, params, &idx, 1, ""), "");
    }
}

static LLVMValueRef add_entry(cg *c, const char *name, LLVMTypeRef *args, unsigned n, bool hidden)
{
    LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(LLVMVoidTypeInContext(c->ctx), args, n, 0));
    cg_function_attrs(c, fn);
    if (hidden)
        LLVMSetVisibility(fn, LLVMHiddenVisibility);
    c->fn = fn;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
    return fn;
}

/* The entry: for b in [0, batch): run every step on item b. */
static int emit_entry(cg *c, const ntc_graph *g, const cg_plan *p, LLVMValueRef *step_fns,
                      const ntc_cg_result *r, bool hidden, ntc_err *err)
{
    LLVMValueRef *par = ntc_calloc((size_t)r->n_params + 1, sizeof *par);
    if (!par)
        return ntc_error(err, g->path, 0, "out of memory");
    LLVMTypeRef args[5] = {c->ptr, c->ptr, c->ptr, c->i64, c->ptr};
    LLVMValueRef fn = add_entry(c, NTC_CG_ENTRY, args, 5, hidden);
    LLVMValueRef input = LLVMGetParam(fn, 1), output = LLVMGetParam(fn, 2), ws = LLVMGetParam(fn, 4);
    load_params(c, LLVMGetParam(fn, 0), r, par);
    cg_loop b = cg_for(c, cg_i64(c, 0), LLVMGetParam(fn, 3), 1, "item");
    LLVMValueRef in_b = cg_gep(c, input, cg_mul(c, b.iv, cg_i64(c, r->in_numel)));
    LLVMValueRef out_b = cg_gep(c, output, cg_mul(c, b.iv, cg_i64(c, r->out_numel)));
    for (int s = 0; s < p->n_steps; s++)
        call_step(c, g, p, s, step_fns[s], r, par, in_b, out_b, ws, ws, cg_i64(c, 0), cg_i64(c, 1));
    cg_end(c, &b);
    LLVMBuildRetVoid(c->b);
    ntc_free(par);
    return 0;
}

/* The team entry: one item computed by nthreads threads that all call it
 * at once with tid = 0..nthreads-1, the same ws (thread 0's workspace: the
 * values), each its own own_ws (for scratch) and the same barrier (two
 * zeroed i32, see cg_emit_barrier).  Convolutions split their tiles;
 * other steps run on thread 0; a barrier separates a step from the next
 * unless thread 0 runs both alone, and ends the item. */
static int emit_team_entry(cg *c, const ntc_graph *g, const cg_plan *p, LLVMValueRef *step_fns,
                           const ntc_cg_result *r, bool hidden, ntc_err *err)
{
    LLVMValueRef *par = ntc_calloc((size_t)r->n_params + 1, sizeof *par);
    if (!par)
        return ntc_error(err, g->path, 0, "out of memory");
    LLVMValueRef barrier = cg_emit_barrier(c);
    LLVMTypeRef args[8] = {c->ptr, c->ptr, c->ptr, c->ptr, c->ptr, c->i64, c->i64, c->ptr};
    LLVMValueRef fn = add_entry(c, NTC_CG_ENTRY_TEAM, args, 8, hidden);
    LLVMValueRef input = LLVMGetParam(fn, 1), output = LLVMGetParam(fn, 2);
    LLVMValueRef ws = LLVMGetParam(fn, 3), own = LLVMGetParam(fn, 4);
    LLVMValueRef tid = LLVMGetParam(fn, 5), nthreads = LLVMGetParam(fn, 6), state = LLVMGetParam(fn, 7);
    load_params(c, LLVMGetParam(fn, 0), r, par);
    LLVMValueRef first = LLVMBuildICmp(c->b, LLVMIntEQ, tid, cg_i64(c, 0), "");
    for (int s = 0; s < p->n_steps; s++) {
        bool split = step_splits(g, &p->steps[s]);
        if (split) {
            call_step(c, g, p, s, step_fns[s], r, par, input, output, ws, own, tid, nthreads);
        } else {
            LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(c->ctx, fn, "t0");
            LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(c->ctx, fn, "t0.done");
            LLVMBuildCondBr(c->b, first, run, next);
            LLVMPositionBuilderAtEnd(c->b, run);
            call_step(c, g, p, s, step_fns[s], r, par, input, output, ws, own, cg_i64(c, 0), cg_i64(c, 1));
            LLVMBuildBr(c->b, next);
            LLVMPositionBuilderAtEnd(c->b, next);
        }
        /* After the last step too: the next item's first step may
         * overwrite values this item's last step still reads. */
        if (s + 1 == p->n_steps || split || step_splits(g, &p->steps[s + 1])) {
            LLVMValueRef a[2] = {state, nthreads};
            LLVMBuildCall2(c->b, LLVMGlobalGetValueType(barrier), barrier, a, 2, "");
        }
    }
    LLVMBuildRetVoid(c->b);
    ntc_free(par);
    return 0;
}

/* Parameters read by the planned steps, in value-handle order, each in
 * every layout some step reads it in (as stored, packed). */
static int collect_params(const cg *c, const ntc_graph *g, const cg_plan *p, ntc_cg_result *r, ntc_err *err)
{
    unsigned char *used = ntc_calloc((size_t)g->n_values + 1, 1);   /* bit 0: as stored, bit 1: packed */
    r->params = ntc_malloc(sizeof(int) * 2 * ((size_t)g->n_values + 1));
    r->layout = ntc_malloc(sizeof(int) * 2 * ((size_t)g->n_values + 1));
    if (!used || !r->params || !r->layout) {
        ntc_free(used);
        return ntc_error(err, g->path, 0, "out of memory");
    }
    for (int s = 0; s < p->n_steps; s++) {
        int operands[CG_MAX_OPERANDS];
        int n = step_operands(g, &p->steps[s], operands);
        for (int i = 0; i < n; i++)
            if (g->values[operands[i]].kind == NTC_VAL_PARAM)
                used[operands[i]] |= operand_layout(c, g, &p->steps[s], operands[i]) ? 2 : 1;
    }
    r->n_params = 0;
    for (int v = 0; v < g->n_values; v++)
        for (int k = 0; k < 2; k++)
            if (used[v] & (1 << k))
                r->params[r->n_params] = v, r->layout[r->n_params++] = k ? c->vw : 0;
    ntc_free(used);
    return 0;
}

const float *ntc_cg_param_data(const ntc_graph *g, const ntc_cg_result *r, int i, float **owned, int64_t dims[8],
                               int *rank)
{
    const ntc_value *v = &g->values[r->params[i]];
    int b = r->layout[i];
    *owned = NULL;
    if (!b) {
        *rank = v->shape.rank > 8 ? 8 : v->shape.rank;
        memcpy(dims, v->shape.dims, sizeof(int64_t) * (size_t)*rank);
        return v->data;
    }
    int64_t F = v->shape.dims[0], C = v->shape.dims[1], KK = v->shape.dims[2] * v->shape.dims[3];
    float *w = ntc_malloc(sizeof(float) * (size_t)(F * C * KK) + 1);
    if (!w)
        return NULL;
    /* packed[((fb*C + c)*KK + t)*b + lane] = weight[fb*b + lane][c][t] */
    for (int64_t f = 0; f < F; f++)
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t t = 0; t < KK; t++)
                w[(((f / b) * C + ch) * KK + t) * b + f % b] = v->data[(f * C + ch) * KK + t];
    *rank = 5;
    dims[0] = F / b, dims[1] = C, dims[2] = v->shape.dims[2], dims[3] = v->shape.dims[3], dims[4] = b;
    *owned = w;
    return w;
}

static int optimise(cg *c, LLVMTargetMachineRef tm, ntc_err *err)
{
    LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(o, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(o, 1);
    LLVMPassBuilderOptionsSetLoopInterleaving(o, 1);
    /* No loop unroller: the emitters unroll what pays (register tiles, a
     * kernel's taps), and unrolling their loops again doubled the compile
     * time of the demo networks at the same run time (measured A/B). */
    LLVMPassBuilderOptionsSetLoopUnrolling(o, 0);
    LLVMErrorRef e = LLVMRunPasses(c->mod, "default<O3>", tm, o);
    LLVMDisposePassBuilderOptions(o);
    if (e) {
        char *m = LLVMGetErrorMessage(e);
        ntc_error(err, NULL, 0, "LLVM optimisation failed: %s", m);
        LLVMDisposeErrorMessage(m);
        return -1;
    }
    return 0;
}

static int emit_object(cg *c, LLVMTargetMachineRef tm, ntc_cg_result *r, ntc_err *err)
{
    char *msg = NULL;
    LLVMMemoryBufferRef buf;
    if (LLVMTargetMachineEmitToMemoryBuffer(tm, c->mod, LLVMObjectFile, &msg, &buf)) {
        ntc_error(err, NULL, 0, "LLVM object emission failed: %s", msg ? msg : "?");
        LLVMDisposeMessage(msg);
        return -1;
    }
    r->obj_len = LLVMGetBufferSize(buf);
    r->obj = ntc_malloc(r->obj_len);
    if (r->obj)
        memcpy(r->obj, LLVMGetBufferStart(buf), r->obj_len);
    LLVMDisposeMemoryBuffer(buf);
    return r->obj ? 0 : ntc_error(err, NULL, 0, "out of memory");
}

void ntc_cg_result_free(ntc_cg_result *r)
{
    ntc_free(r->params);
    ntc_free(r->layout);
    ntc_free(r->obj);
    ntc_free(r->ir);
    memset(r, 0, sizeof *r);
}

int ntc_codegen(ntc_graph *g, const ntc_cg_opts *o, ntc_cg_result *r, ntc_err *err)
{
    memset(r, 0, sizeof *r);
    double t0 = now();
    if (ntc_graph_infer_shapes(g, err) || check_graph(g, err))
        return -1;
    ntc_cg_init_llvm();

    char *features = NULL;
    LLVMTargetMachineRef tm = host_machine(&features, err);
    if (!tm) {
        LLVMDisposeMessage(features);
        return -1;
    }
    cg c = {0};
    c.g = g;
    c.vw = vector_width(features);
    LLVMDisposeMessage(features);
    c.ctx = LLVMContextCreate();
    c.mod = LLVMModuleCreateWithNameInContext(g->name ? g->name : "ntc", c.ctx);
    c.b = LLVMCreateBuilderInContext(c.ctx);
    c.i1 = LLVMInt1TypeInContext(c.ctx);
    c.i32 = LLVMInt32TypeInContext(c.ctx);
    c.i64 = LLVMInt64TypeInContext(c.ctx);
    c.f32 = LLVMFloatTypeInContext(c.ctx);
    c.ptr = LLVMPointerTypeInContext(c.ctx, 0);
    c.vec = LLVMVectorType(c.f32, (unsigned)c.vw);
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(c.mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(c.mod, dl);
    LLVMDisposeTargetData(dl);

    cg_plan p = {0};
    LLVMValueRef *fns = NULL;
    int rc = -1;
    r->input = g->inputs[0];
    r->output = g->outputs[0].value;
    r->in_numel = ntc_shape_numel(&g->values[r->input].shape);
    r->out_numel = ntc_shape_numel(&g->values[r->output].shape);
    if (cg_make_plan(&c, g, r->output, &p, err) || collect_params(&c, g, &p, r, err))
        goto out;
    r->ws_floats = p.ws_floats;
    if (!(fns = ntc_calloc((size_t)p.n_steps + 1, sizeof *fns))) {
        ntc_error(err, g->path, 0, "out of memory");
        goto out;
    }
    for (int s = 0; s < p.n_steps; s++) {
        const cg_step *st = &p.steps[s];
        int parts[4] = {st->head, st->bn, st->add, st->relu};
        for (int k = 0; k < 4; k++)
            if (parts[k] >= 0 && check_node(g, &g->nodes[parts[k]], err))
                goto out;
        for (int t = 0; t < s && !fns[s]; t++)
            if (same_code(g, &p, st, &p.steps[t]))
                fns[s] = fns[t];
        if (!fns[s] && !(fns[s] = emit_step(&c, g, &p, st, s, err))) {
            const ntc_node *n = &g->nodes[st->head];
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            ntc_error(err, g->path, n->line, "%s node '%s': %s", ntc_op_name(n->op), n->name, msg);
            goto out;
        }
    }
    if (emit_entry(&c, g, &p, fns, r, o && o->hidden_entry, err) ||
        emit_team_entry(&c, g, &p, fns, r, o && o->hidden_entry, err))
        goto out;
    char *msg = NULL;
    if (LLVMVerifyModule(c.mod, LLVMReturnStatusAction, &msg)) {
        ntc_error(err, g->path, 0, "internal error: generated LLVM IR does not verify: %.900s", msg);
        LLVMDisposeMessage(msg);
        goto out;
    }
    LLVMDisposeMessage(msg);
    double t1 = now();
    r->t_ir = t1 - t0;
    if (optimise(&c, tm, err))
        goto out;
    double t2 = now();
    r->t_opt = t2 - t1;
    if (o && o->keep_ir) {
        char *text = LLVMPrintModuleToString(c.mod);
        r->ir = ntc_strdup(text);
        LLVMDisposeMessage(text);
    }
    if (emit_object(&c, tm, r, err))
        goto out;
    r->t_emit = now() - t2;
    rc = 0;
out:
    ntc_free(fns);
    cg_plan_free(&p);
    LLVMDisposeBuilder(c.b);
    LLVMDisposeModule(c.mod);
    LLVMContextDispose(c.ctx);
    LLVMDisposeTargetMachine(tm);
    if (rc)
        ntc_cg_result_free(r);
    return rc;
}
