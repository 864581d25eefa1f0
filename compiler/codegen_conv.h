/* What the two convolution emitters share (codegen_conv.c: vectors over
 * output positions; codegen_conv_oc.c: vectors over output channels). */
#ifndef NTC_COMPILER_CODEGEN_CONV_H
#define NTC_COMPILER_CODEGEN_CONV_H

#include "codegen.h"

typedef struct {
    int64_t C, H, W, F, OH, OW;
    int KH, KW, SH, SW, DH, DW, PT, PL;
    int64_t PHs, PWs, plane, n_phases;  /* phase plane rows, columns, size */
    int64_t P, Pv;                      /* positions OH*PWs, in vectors */
    int64_t P_comp;                     /* positions computed: whole tiles */
    int64_t phases_floats;              /* packed input + read slack */
    bool direct;                        /* tiles are stored straight into the output */
    int FB, XB;                         /* tile: filters x vectors */
    /* The output-channel kernel (codegen_conv_oc.c), when oc: tiles of NV
     * filter vectors x RB rows x XBo columns. */
    bool oc;
    int NV, RB, XBo;
} conv_geom;

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

conv_geom conv_geometry(int vw, const ntc_node *n, const ntc_shape *in, const ntc_shape *out);
/* Offset of tap (ky, kx) in the packed input, from the position read. */
int64_t conv_tap_offset(const conv_geom *g, int ky, int kx);
/* Range [lo, hi) of phase coordinates t in [0, n) whose input coordinate
 * t*s + phase - pad falls inside [0, size). */
void conv_inside(int64_t n, int s, int64_t phase, int64_t pad, int64_t size, int64_t *lo, int64_t *hi);
/* Packs the input into the phase planes (see codegen_conv.c). */
void conv_emit_pack(cg *c, const conv_geom *g, LLVMValueRef in, LLVMValueRef phases);
/* A convolution's core function,
 *   void core(ptr tiles, ptr phases, ptr in, i64 t_lo, i64 t_hi, ptr weight[, ptr bias])
 * one per distinct convolution code and input layout, whatever epilogue
 * the callers fuse.  conv_core_begin returns false with fn set when it
 * exists; else it adds fn, moves the builder into it, gives its
 * parameters (core: nd with in[0] and par[] replaced) and returns true;
 * the caller emits the body and calls conv_core_end. */
typedef struct {
    LLVMValueRef fn, caller, tiles, phases, t_lo, t_hi;
    LLVMBasicBlockRef at;
    cg_node core;
} conv_core_fn;
bool conv_core_begin(cg *c, const cg_node *nd, bool blocked, const char *prefix, conv_core_fn *k);
void conv_core_end(cg *c, const cg_node *nd, bool blocked, conv_core_fn *k);
/* The fused batchnorm's affine form for the channels at f (one, or a
 * vector of them): gain = gamma / sqrt(var + eps), shift = beta - mean *
 * gain, as the interpreter's batchnorm computes them.  NULLs without bn. */
void conv_bn_affine(cg *c, const cg_node *nd, LLVMValueRef f, bool vector, LLVMValueRef *gain, LLVMValueRef *shift);
/* The fused epilogue on one vector of outputs: x * gain + shift (when
 * gain), + res (when not NULL), relu (when nd->relu), in that order. */
LLVMValueRef conv_epilogue(cg *c, const cg_node *nd, LLVMValueRef x, LLVMValueRef gain, LLVMValueRef shift,
                           LLVMValueRef res);
/* Part tid of nthreads of [0, total): [total*tid/n, total*(tid+1)/n). */
void conv_team_part(cg *c, const cg_node *nd, int64_t total, LLVMValueRef *lo, LLVMValueRef *hi);

/* The output-channel kernel (codegen_conv_oc.c), for the convolutions
 * cg_conv_packs_weights accepts: its scratch and its emitter. */
int64_t conv_oc_scratch(const conv_geom *g, int vw);
void conv_oc_tile(conv_geom *g, int vw);
int conv_oc_emit(cg *c, const cg_node *nd, const conv_geom *g);

#endif
