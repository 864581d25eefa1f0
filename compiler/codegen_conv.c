/* conv2d: a register-blocked direct convolution.
 *
 * 1. Pack.  The input is copied once into `phases`: zero padding made
 *    explicit, and for a stride s the padded image split into s_h x s_w
 *    phase images (phase (py, px) holds padded pixels (y*s_h+py, x*s_w+px)).
 *    A tap (ky, kx) of the strided, dilated convolution then reads one
 *    phase at a fixed offset, so every tap is a stride-1 shift.
 * 2. Compute.  Within a phase plane of width PWs, output pixel (oy, ox)
 *    sits at p = oy*PWs + ox and tap t reads p + qy*PWs + qx: the whole
 *    output plane is one contiguous run of p, computed in vectors.  Columns
 *    ox >= OW are computed and thrown away (PWs - OW of every PWs).  A tile
 *    is FB filters x XB vectors of p held in registers, accumulated over
 *    input channels (a loop) and taps (unrolled), each step one vector load
 *    per p-vector, one broadcast weight per filter and FB x XB FMAs.
 * 3. Compact.  Tiles go to a scratch plane of PWs-wide rows; the valid
 *    columns are copied out (in place when the rows have no waste and the
 *    plane is a whole number of tiles, e.g. 1x1 convolutions on 28x28),
 *    applying the fused batchnorm/add/relu epilogue on the way.
 *
 * Steps 1 and 2 form a "core" function shared by every convolution of the
 * same shape whatever its epilogue; step 3 is emitted per step.
 *
 * The copy and the compaction are O(C*H*W) and O(F*OH*OW) against the
 * convolution's O(F*C*KH*KW*OH*OW), and the packed input lets the inner
 * loop run without any bounds checks. */
#include "codegen_conv.h"

#include <stdio.h>



/* Offset of tap (ky, kx) in the packed input, from the position read. */
int64_t conv_tap_offset(const conv_geom *g, int ky, int kx)
{
    int64_t Y = (int64_t)ky * g->DH, X = (int64_t)kx * g->DW;
    int64_t phase = (Y % g->SH) * g->SW + X % g->SW;
    return phase * g->C * g->plane + (Y / g->SH) * g->PWs + X / g->SW;
}

/* Cycles per input channel and tap of an nf x nx tile: FMAs (two per
 * cycle), FMA latency (4 cycles, so at least 8 accumulators keep both
 * pipes busy), loads (two per cycle: a broadcast weight is one, an input
 * vector two, as a shifted 64-byte load nearly always straddles two cache
 * lines) and instruction issue (about five per cycle).  Measured on the
 * ResNet shapes (Xeon, AVX-512): the tiles this picks are within a few
 * percent of the best of 8x3, 6x4, 12x2, 8x2, 16x1, 4x6; loading the
 * inputs aligned and shifting them with shuffles (valignd/vpermt2ps) was
 * slower, the shuffles compete with the FMAs for port 5. */
static double tile_cycles(int nf, int nx)
{
    double c = nf * nx / 2.0, loads = (nf + 2 * nx) / 2.0, issue = (nf * nx + nf + nx + 2) / 5.0;
    c = c > 4.0 ? c : 4.0;
    c = c > loads ? c : loads;
    return c > issue ? c : issue;
}

/* Picks the tile (FB filters x XB vectors) with the least estimated time
 * for the whole plane, counting the positions wasted by rounding P up to
 * whole tiles and the filter tail (a second, smaller tile: 3% extra for
 * the code it adds); ties go to the larger tile.  The budget leaves room
 * for the XB input vectors and a broadcast weight: 32 vector registers
 * with AVX-512, 16 otherwise. */
static void choose_tile(conv_geom *g, int vw)
{
    int budget = vw >= 16 ? 24 : 12, max_xb = vw >= 16 ? 4 : 3;
    double best = -1;
    for (int xb = 1; xb <= max_xb && xb <= g->Pv; xb++)
        for (int fb = 1; fb <= 16 && fb <= g->F && fb * xb <= budget; fb++) {
            int64_t rest = g->F % fb;
            double t = (double)ceil_div(g->Pv, xb) *
                       ((double)(g->F / fb) * tile_cycles(fb, xb) + (rest ? tile_cycles((int)rest, xb) : 0));
            if (rest)
                t *= 1.03;
            if (best < 0 || t < best - 1e-9 || (t < best + 1e-9 && fb * xb > g->FB * g->XB))
                best = t, g->FB = fb, g->XB = xb;
        }
}

conv_geom conv_geometry(int vw, const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    const ntc_attrs *a = &n->a;
    conv_geom g = {0};
    g.C = in->dims[1], g.H = in->dims[2], g.W = in->dims[3];
    g.F = out->dims[1], g.OH = out->dims[2], g.OW = out->dims[3];
    g.KH = a->kernel[0], g.KW = a->kernel[1], g.SH = a->stride[0], g.SW = a->stride[1];
    g.DH = a->dilation[0], g.DW = a->dilation[1], g.PT = a->pad[0], g.PL = a->pad[1];
    int64_t PH = g.H + a->pad[0] + a->pad[2], PW = g.W + a->pad[1] + a->pad[3];
    g.PHs = ceil_div(PH, g.SH), g.PWs = ceil_div(PW, g.SW);
    /* Stride 1 with the right padding no wider than the left: a row's
     * right padding columns are the next row's left ones (a read past a
     * row's end lands in the next row's zeros, or the next plane's, or
     * the zeroed slack), so rows are W + PL wide and fewer wasted columns
     * are computed (28x28: 29 of 30 per row).  The output row must still
     * fit in a row. */
    if (g.SH == 1 && g.SW == 1 && a->pad[3] <= a->pad[1] && g.W + a->pad[1] >= g.OW)
        g.PWs = g.W + a->pad[1];
    g.plane = g.PHs * g.PWs;
    g.n_phases = (int64_t)g.SH * g.SW;
    g.P = g.OH * g.PWs;
    g.Pv = ceil_div(g.P, vw);
    g.oc = cg_conv_packs_weights(vw, n, in, out);
    if (g.oc)
        conv_oc_tile(&g, vw);
    choose_tile(&g, vw);
    g.P_comp = ceil_div(g.Pv, g.XB) * g.XB * vw;
    /* Reads run past a plane's end by at most the largest column shift
     * plus what the last tile computes beyond P (see the header comment);
     * the last plane needs that much slack, which the pack zeroes
     * (garbage there only reaches discarded columns, but could be slow
     * denormals). */
    int64_t max_qx = (int64_t)(g.KW - 1) * g.DW / g.SW;
    g.phases_floats = g.n_phases * g.C * g.plane + max_qx + (g.P_comp - g.P) + vw;
    g.direct = g.PWs == g.OW && g.P_comp == g.P;
    return g;
}

int64_t cg_scratch_conv2d(const cg *c, const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    conv_geom g = conv_geometry(c->vw, n, in, out);
    if (g.oc)
        return conv_oc_scratch(&g, c->vw);
    /* The tile scratch starts on a 16-float boundary after the phases. */
    return ceil_div(g.phases_floats, 16) * 16 + (g.direct ? 0 : g.F * g.P_comp);
}

/* dst[lo..hi) = 0 */
static void emit_zero(cg *c, LLVMValueRef dst, int64_t lo, int64_t hi)
{
    if (lo >= hi)
        return;
    cg_loop i = cg_for(c, cg_i64(c, lo), cg_i64(c, hi), 1, "z");
    cg_store(c, cg_f32(c, 0), dst, i.iv);
    cg_end(c, &i);
}

/* Range [lo, hi) of phase coordinates t in [0, n) whose input coordinate
 * t*s + phase - pad falls inside [0, size). */
void conv_inside(int64_t n, int s, int64_t phase, int64_t pad, int64_t size, int64_t *lo, int64_t *hi)
{
    *lo = ceil_div(pad - phase > 0 ? pad - phase : 0, s);
    *hi = ceil_div(size + pad - phase > 0 ? size + pad - phase : 0, s);
    if (*hi > n)
        *hi = n;
    if (*lo > *hi)
        *lo = *hi;
}

/* Rows [lo, hi) of phase plane px (PWs wide) at dst: zeros (in_row0
 * NULL), or input rows, row lo's first at in_row0 and each next SH rows
 * further.  Column x holds input column x*SW + px - PL, or 0 outside the
 * input.  In vectors whose lanes outside the row or the input are masked:
 * with stride 1 one load per vector, with stride 2 two and a shuffle
 * taking their even lanes. */
static void emit_pack_rows(cg *c, const conv_geom *g, LLVMValueRef dst, int64_t lo, int64_t hi, LLVMValueRef in_row0,
                           int px)
{
    if (lo >= hi)
        return;
    cg_loop y = cg_for(c, cg_i64(c, lo), cg_i64(c, hi), 1, "y");
    LLVMValueRef row = cg_mul(c, y.iv, cg_i64(c, g->PWs));
    LLVMValueRef src = in_row0 ? cg_mul(c, LLVMBuildSub(c->b, y.iv, cg_i64(c, lo), ""), cg_i64(c, g->SH * g->W)) : NULL;
    LLVMValueRef zero = cg_i64(c, 0), width = cg_i64(c, g->W);
    for (int64_t x0 = 0; x0 < g->PWs; x0 += c->vw) {
        LLVMValueRef in_row = cg_lane_mask(c, x0, zero, cg_i64(c, g->PWs));
        LLVMValueRef v = LLVMConstNull(c->vec);
        int64_t ix0 = x0 * g->SW + px - g->PL;  /* input column of lane 0 */
        if (in_row0 && g->SW == 1) {
            v = cg_vload_masked(c, in_row0, cg_add(c, src, cg_i64(c, ix0)),
                                LLVMBuildAnd(c->b, in_row, cg_lane_mask(c, ix0, zero, width), ""));
        } else if (in_row0) {
            LLVMValueRef a = cg_vload_masked(c, in_row0, cg_add(c, src, cg_i64(c, ix0)), cg_lane_mask(c, ix0, zero, width));
            LLVMValueRef b = cg_vload_masked(c, in_row0, cg_add(c, src, cg_i64(c, ix0 + c->vw)),
                                             cg_lane_mask(c, ix0 + c->vw, zero, width));
            LLVMValueRef even[64];
            for (int k = 0; k < c->vw; k++)
                even[k] = LLVMConstInt(c->i32, (unsigned long long)(2 * k), 0);
            v = LLVMBuildShuffleVector(c->b, a, b, LLVMConstVector(even, (unsigned)c->vw), "");
        }
        cg_vstore_masked(c, v, dst, cg_add(c, row, cg_i64(c, x0)), in_row);
    }
    cg_end(c, &y);
}

/* phases[((py*SW + px)*C + c)*plane + y*PWs + x] = padded input, or 0.
 * The phases are unrolled, so the rows that hold input are a constant
 * range: zero rows, input rows (zero columns masked in), zero rows, all
 * in vectors for strides 1 and 2; larger strides copy float by float. */
void conv_emit_pack(cg *c, const conv_geom *g, LLVMValueRef in, LLVMValueRef phases)
{
    emit_zero(c, phases, g->n_phases * g->C * g->plane, g->phases_floats);
    for (int py = 0; py < g->SH; py++)
        for (int px = 0; px < g->SW; px++) {
            int64_t y_lo, y_hi, x_lo, x_hi;
            conv_inside(g->PHs, g->SH, py, g->PT, g->H, &y_lo, &y_hi);
            conv_inside(g->PWs, g->SW, px, g->PL, g->W, &x_lo, &x_hi);
            int64_t phase = (int64_t)py * g->SW + px;
            cg_loop ch = cg_for(c, cg_i64(c, 0), cg_i64(c, g->C), 1, "c");
            LLVMValueRef dst = cg_gep(c, phases, cg_mul(c, cg_add(c, cg_i64(c, phase * g->C), ch.iv), cg_i64(c, g->plane)));
            LLVMValueRef src = cg_gep(c, in, cg_mul(c, ch.iv, cg_i64(c, g->H * g->W)));
            if (g->SW <= 2) {
                /* input row iy = y*SH + py - PT */
                LLVMValueRef first = x_lo < x_hi ? cg_gep(c, src, cg_i64(c, (y_lo * g->SH + py - g->PT) * g->W)) : NULL;
                emit_pack_rows(c, g, dst, 0, y_lo, NULL, px);
                emit_pack_rows(c, g, dst, y_lo, y_hi, first, px);
                emit_pack_rows(c, g, dst, y_hi, g->PHs, NULL, px);
                cg_end(c, &ch);
                continue;
            }
            emit_zero(c, dst, 0, y_lo * g->PWs);
            if (y_lo < y_hi) {
                cg_loop y = cg_for(c, cg_i64(c, y_lo), cg_i64(c, y_hi), 1, "y");
                LLVMValueRef row = cg_gep(c, dst, cg_mul(c, y.iv, cg_i64(c, g->PWs)));
                /* input row iy = y*SH + py - PT, column ix = x*SW + px - PL */
                LLVMValueRef in_row = cg_gep(c, src, cg_mul(c, cg_add(c, cg_mul(c, y.iv, cg_i64(c, g->SH)),
                                                                      cg_i64(c, py - g->PT)), cg_i64(c, g->W)));
                emit_zero(c, row, 0, x_lo);
                if (x_lo < x_hi) {
                    cg_loop x = cg_for(c, cg_i64(c, x_lo), cg_i64(c, x_hi), 1, "x");
                    LLVMValueRef ix = cg_add(c, cg_mul(c, x.iv, cg_i64(c, g->SW)), cg_i64(c, px - g->PL));
                    cg_store(c, cg_load(c, in_row, ix), row, x.iv);
                    cg_end(c, &x);
                }
                emit_zero(c, row, x_hi, g->PWs);
                cg_end(c, &y);
            }
            emit_zero(c, dst, y_hi * g->PWs, g->plane);
            cg_end(c, &ch);
        }
}

/* One tile: filters f0..f0+nf-1, vectors p0.. p0+nx*vw-1 of the plane. */
static void emit_tile(cg *c, const conv_geom *g, const cg_node *nd, LLVMValueRef phases, LLVMValueRef dst,
                      int64_t dst_stride, LLVMValueRef f0, int nf, LLVMValueRef p0, int nx)
{
    const int KK = g->KH * g->KW;
    LLVMValueRef init[CG_MAX_CARRY];
    for (int f = 0; f < nf; f++) {
        LLVMValueRef b = nd->par[1] ? cg_splat(c, cg_load(c, nd->par[1], cg_add(c, f0, cg_i64(c, f))))
                                    : LLVMConstNull(c->vec);
        for (int x = 0; x < nx; x++)
            init[f * nx + x] = b;
    }
    cg_loop ch;
    cg_for_carry(c, &ch, cg_i64(c, 0), cg_i64(c, g->C), 1, "c", nf * nx, init);
    LLVMValueRef acc[CG_MAX_CARRY];
    for (int k = 0; k < nf * nx; k++)
        acc[k] = ch.carry[k];
    LLVMValueRef in_c = cg_add(c, cg_mul(c, ch.iv, cg_i64(c, g->plane)), p0);
    /* weight[(f0+f)*C*KK + c*KK + t] */
    LLVMValueRef w_c = cg_add(c, cg_mul(c, f0, cg_i64(c, g->C * KK)), cg_mul(c, ch.iv, cg_i64(c, KK)));
    for (int ky = 0; ky < g->KH; ky++)
        for (int kx = 0; kx < g->KW; kx++) {
            int64_t off = conv_tap_offset(g, ky, kx);
            LLVMValueRef v[8];
            for (int x = 0; x < nx; x++)
                v[x] = cg_vload(c, phases, cg_add(c, in_c, cg_i64(c, off + (int64_t)x * c->vw)));
            for (int f = 0; f < nf; f++) {
                LLVMValueRef w = cg_load(c, nd->par[0],
                                         cg_add(c, w_c, cg_i64(c, (int64_t)f * g->C * KK + ky * g->KW + kx)));
                LLVMValueRef ws = cg_splat(c, w);
                for (int x = 0; x < nx; x++)
                    acc[f * nx + x] = cg_fmuladd(c, ws, v[x], acc[f * nx + x]);
            }
        }
    cg_end_carry(c, &ch, acc);
    for (int f = 0; f < nf; f++) {
        LLVMValueRef row = cg_add(c, cg_mul(c, cg_add(c, f0, cg_i64(c, f)), cg_i64(c, dst_stride)), p0);
        for (int x = 0; x < nx; x++)
            cg_vstore(c, ch.carry[f * nx + x], dst, cg_add(c, row, cg_i64(c, (int64_t)x * c->vw)));
    }
}

/* The p tiles [t_lo, t_hi), each for every filter: a tile's input window
 * stays in L1 while the filter blocks pass over it. */
static void emit_tiles(cg *c, const conv_geom *g, const cg_node *nd, LLVMValueRef phases, LLVMValueRef dst,
                       int64_t dst_stride, LLVMValueRef t_lo, LLVMValueRef t_hi)
{
    int64_t tile = (int64_t)g->XB * c->vw, full_f = g->F / g->FB * g->FB;
    cg_loop p = cg_for(c, cg_mul(c, t_lo, cg_i64(c, tile)), cg_mul(c, t_hi, cg_i64(c, tile)), tile, "p");
    cg_loop f = cg_for(c, cg_i64(c, 0), cg_i64(c, full_f), g->FB, "f");
    emit_tile(c, g, nd, phases, dst, dst_stride, f.iv, g->FB, p.iv, g->XB);
    cg_end(c, &f);
    if (g->F > full_f)
        emit_tile(c, g, nd, phases, dst, dst_stride, cg_i64(c, full_f), (int)(g->F - full_f), p.iv, g->XB);
    cg_end(c, &p);
}

bool conv_core_begin(cg *c, const cg_node *nd, bool blocked, const char *prefix, conv_core_fn *k)
{
    for (int i = 0; i < c->n_cores; i++)
        if (c->core_blocked[i] == blocked && cg_same_node_code(c->g, c->core_node[i], nd->n)) {
            k->fn = c->core_fn[i];
            return false;
        }
    int n_args = nd->par[1] ? 7 : 6;
    LLVMTypeRef args[7] = {c->ptr, c->ptr, c->ptr, c->i64, c->i64, c->ptr, c->ptr};
    char name[32];
    snprintf(name, sizeof name, "%s%d", prefix, c->n_cores);
    k->fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(LLVMVoidTypeInContext(c->ctx), args, (unsigned)n_args, 0));
    LLVMSetLinkage(k->fn, LLVMInternalLinkage);
    cg_function_attrs(c, k->fn);
    cg_add_attr(c, k->fn, LLVMAttributeFunctionIndex, "noinline");
    for (int i = 0; i < n_args; i++)
        if (i != 3 && i != 4)
            cg_add_attr(c, k->fn, (unsigned)i + 1, "noalias");
    k->caller = c->fn;
    k->at = LLVMGetInsertBlock(c->b);
    c->fn = k->fn;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, k->fn, "entry"));
    k->core = *nd;
    k->tiles = LLVMGetParam(k->fn, 0), k->phases = LLVMGetParam(k->fn, 1);
    k->core.in[0] = LLVMGetParam(k->fn, 2);
    k->t_lo = LLVMGetParam(k->fn, 3), k->t_hi = LLVMGetParam(k->fn, 4);
    k->core.par[0] = LLVMGetParam(k->fn, 5);
    k->core.par[1] = nd->par[1] ? LLVMGetParam(k->fn, 6) : NULL;
    return true;
}

void conv_core_end(cg *c, const cg_node *nd, bool blocked, conv_core_fn *k)
{
    LLVMBuildRetVoid(c->b);
    c->fn = k->caller;
    LLVMPositionBuilderAtEnd(c->b, k->at);
    if (c->n_cores < (int)(sizeof c->core_fn / sizeof c->core_fn[0])) {
        c->core_node[c->n_cores] = nd->n, c->core_blocked[c->n_cores] = blocked;
        c->core_fn[c->n_cores++] = k->fn;
    }
}

/* The core: pack, then the p tiles [t_lo, t_hi) of every filter into
 * `tiles` (rows of stride tile_stride).  A team of threads splits the
 * tiles (each packs the whole input into its own `phases`: O(C*H*W),
 * cheaper than a barrier). */
static LLVMValueRef conv_core(cg *c, const cg_node *nd, const conv_geom *g, int64_t tile_stride)
{
    conv_core_fn k;
    if (conv_core_begin(c, nd, false, "conv.core", &k)) {
        conv_emit_pack(c, g, k.core.in[0], k.phases);
        emit_tiles(c, g, &k.core, k.phases, k.tiles, tile_stride, k.t_lo, k.t_hi);
        conv_core_end(c, nd, false, &k);
    }
    return k.fn;
}

void conv_bn_affine(cg *c, const cg_node *nd, LLVMValueRef f, bool vector, LLVMValueRef *gain, LLVMValueRef *shift)
{
    *gain = *shift = NULL;
    if (!nd->bn)
        return;
    LLVMValueRef (*load)(cg *, LLVMValueRef, LLVMValueRef) = vector ? cg_vload : cg_load;
    LLVMValueRef eps = cg_f32(c, nd->bn->a.epsilon);
    LLVMValueRef sd = cg_intrinsic1(c, "llvm.sqrt", cg_fadd(c, load(c, nd->bn_par[3], f), vector ? cg_splat(c, eps) : eps, false));
    *gain = LLVMBuildFDiv(c->b, load(c, nd->bn_par[0], f), sd, "");
    *shift = LLVMBuildFSub(c->b, load(c, nd->bn_par[1], f), cg_fmul(c, load(c, nd->bn_par[2], f), *gain), "");
}

LLVMValueRef conv_epilogue(cg *c, const cg_node *nd, LLVMValueRef x, LLVMValueRef gain, LLVMValueRef shift,
                           LLVMValueRef res)
{
    if (gain)
        x = cg_fadd(c, cg_fmul(c, x, gain), shift, false);
    if (res)
        x = cg_fadd(c, x, res, false);
    return nd->relu ? cg_relu(c, x) : x;
}

/* Part tid of n of [0, total): [total*tid/n, total*(tid+1)/n). */
void conv_team_part(cg *c, const cg_node *nd, int64_t total, LLVMValueRef *lo, LLVMValueRef *hi)
{
    LLVMValueRef t = cg_i64(c, total);
    *lo = LLVMBuildSDiv(c->b, cg_mul(c, t, nd->tid), nd->nthreads, "");
    *hi = LLVMBuildSDiv(c->b, cg_mul(c, t, cg_add(c, nd->tid, cg_i64(c, 1))), nd->nthreads, "");
}

int cg_emit_conv2d(cg *c, const cg_node *nd, ntc_err *err)
{
    (void)err;
    conv_geom g = conv_geometry(c->vw, nd->n, nd->in_shape, nd->out_shape);
    if (g.oc)
        return conv_oc_emit(c, nd, &g);
    LLVMValueRef tiles = g.direct ? nd->out : cg_gep(c, nd->scratch, cg_i64(c, ceil_div(g.phases_floats, 16) * 16));
    int64_t stride = g.direct ? g.OH * g.OW : g.P_comp, tile = (int64_t)g.XB * c->vw;
    LLVMValueRef core = conv_core(c, nd, &g, stride);
    LLVMValueRef t_lo, t_hi;
    conv_team_part(c, nd, g.P_comp / tile, &t_lo, &t_hi);
    LLVMValueRef args[7] = {tiles, nd->scratch, nd->in[0], t_lo, t_hi, nd->par[0], nd->par[1]};
    LLVMBuildCall2(c->b, LLVMGlobalGetValueType(core), core, args, nd->par[1] ? 7 : 6, "");

    bool epilogue = nd->bn || nd->residual || nd->relu;
    if (g.direct && !epilogue)
        return 0;
    /* Compaction (in place when direct) with the fused epilogue, each part
     * computed as its own node would (see codegen_ops.c), over the
     * positions [p_lo, p_hi) this thread's tiles computed: rows
     * [p_lo / width, ceil(p_hi / width)), in each the columns inside both
     * the range and the output. */
    int64_t width = g.direct ? g.OW : g.PWs;
    LLVMValueRef p_lo = cg_mul(c, t_lo, cg_i64(c, tile));
    LLVMValueRef p_hi = cg_smin(c, cg_mul(c, t_hi, cg_i64(c, tile)), cg_i64(c, g.OH * width));
    LLVMValueRef oy_lo = LLVMBuildSDiv(c->b, p_lo, cg_i64(c, width), "");
    LLVMValueRef oy_hi = LLVMBuildSDiv(c->b, cg_add(c, p_hi, cg_i64(c, width - 1)), cg_i64(c, width), "");
    cg_loop fo = cg_for(c, cg_i64(c, 0), cg_i64(c, g.F), 1, "f");
    LLVMValueRef gain, shift;
    conv_bn_affine(c, nd, fo.iv, false, &gain, &shift);
    LLVMValueRef gain_v = gain ? cg_splat(c, gain) : NULL, shift_v = shift ? cg_splat(c, shift) : NULL;
    cg_loop oy = cg_for(c, oy_lo, oy_hi, 1, "oy");
    LLVMValueRef row0 = cg_mul(c, oy.iv, cg_i64(c, width));
    LLVMValueRef ox_lo = cg_smax(c, cg_i64(c, 0), LLVMBuildSub(c->b, p_lo, row0, ""));
    LLVMValueRef ox_hi = cg_smin(c, cg_i64(c, g.OW), LLVMBuildSub(c->b, p_hi, row0, ""));
    LLVMValueRef src = cg_add(c, cg_mul(c, fo.iv, cg_i64(c, stride)), row0);
    LLVMValueRef dst = cg_add(c, cg_mul(c, fo.iv, cg_i64(c, g.OH * g.OW)), cg_mul(c, oy.iv, cg_i64(c, g.OW)));
    /* the row in vectors, the columns outside [ox_lo, ox_hi) masked off */
    for (int64_t x0 = 0; x0 < g.OW; x0 += c->vw) {
        LLVMValueRef mask = cg_lane_mask(c, x0, ox_lo, ox_hi);
        LLVMValueRef v = cg_vload_masked(c, tiles, cg_add(c, src, cg_i64(c, x0)), mask);
        LLVMValueRef at = cg_add(c, dst, cg_i64(c, x0));
        LLVMValueRef res = nd->residual ? cg_vload_masked(c, nd->residual, at, mask) : NULL;
        cg_vstore_masked(c, conv_epilogue(c, nd, v, gain_v, shift_v, res), nd->out, at, mask);
    }
    cg_end(c, &oy);
    cg_end(c, &fo);
    return 0;
}
