/* conv2d with vectors over output channels, for convolutions whose filter
 * count is a multiple of the vector width and which have at least 16
 * weights per filter (every convolution of a ResNet after its stem).
 *
 * codegen_conv.c vectorises over output positions: its vectors straddle
 * rows, so the columns a row's end wastes are computed too (7x7 maps fill
 * 49 of 64 lanes), and every input vector load is unaligned.  Here a
 * vector holds vw consecutive filters of one output pixel, as in oneDNN's
 * direct convolution:
 *
 * 1. Pack the input into phase planes exactly as codegen_conv.c does
 *    (padding explicit, strides split into phases).
 * 2. A tile is nv filter vectors x XB output columns of one row (RB = 1,
 *    see conv_oc_tile), held in registers and accumulated over input
 *    channels (a loop) and taps (unrolled): per input channel and tap
 *    group, the group's weight vectors, then one broadcast input scalar
 *    per input column feeding every FMA that reads it.  Only real output
 *    pixels are computed.
 *    The weights must be laid out [F/vw][C][KH][KW][vw] for that: the
 *    code generator hands this emitter a packed copy (ntc_cg_param_data),
 *    made once when the task is compiled, which is what the universal
 *    weights file stores for such convolutions.
 * 3. Tiles go to scratch as [F/vw][OH*OW][vw]; the epilogue reads vw
 *    pixels of one filter block, applies the batchnorm (a per-channel
 *    vector here), transposes the vw x vw block in registers, adds the
 *    NCHW residual, applies the relu and stores vw pixels of each channel
 *    into the NCHW output.  The transpose costs about a quarter cycle per
 *    output element against 4.5 or more for the convolution itself.
 *
 * Between two such convolutions the value stays in the tiles' layout,
 * "blocked" [C/vw][H][W][vw] (the plan decides, codegen_plan.c): the tiles
 * are the output, the epilogue runs in place without transposes (the
 * residual is blocked too; a blocked residual of an NCHW output is added
 * before the transpose), and the next convolution packs whole vectors
 * into blocked phases, [C/vw][phase][PHs][PWs][vw], broadcasting from
 * them with a stride of vw floats between positions.
 *
 * A team of threads splits the row tiles: each thread packs the whole
 * input into its own scratch and transposes the rows it computed. */
#include "codegen_conv.h"

#include <stdio.h>

/* The taps of one kernel row that read the same phase plane row, at
 * column offsets qx[0..n): a group shares its broadcast input loads (tap k
 * at pixel x reads the column tap k' reads at pixel x + qx[k] - qx[k']). */
typedef struct {
    int n, t[16];               /* taps ky*KW + kx */
    int64_t phase, qy, qx[16];  /* tap t reads phase plane `phase`, position + qy*PWs + qx */
} tap_group;

static int tap_groups(const conv_geom *g, tap_group *grp)
{
    int n = 0;
    for (int ky = 0; ky < g->KH; ky++)
        for (int px = 0; px < g->SW; px++) {
            tap_group *gr = &grp[n];
            gr->n = 0;
            for (int kx = 0; kx < g->KW && gr->n < 16; kx++) {
                int64_t Y = (int64_t)ky * g->DH, X = (int64_t)kx * g->DW;
                if (X % g->SW != px)
                    continue;
                gr->phase = (Y % g->SH) * g->SW + px, gr->qy = Y / g->SH;
                gr->t[gr->n] = ky * g->KW + kx;
                gr->qx[gr->n++] = X / g->SW;
            }
            n += gr->n > 0;
        }
    return n;
}

/* Cycles of one input channel of a tile of nv filter vectors x rb x xb
 * pixels: per tap group FMAs (two per cycle), loads (two per cycle: the
 * weight vectors, one broadcast per input column) and the FMA latency
 * (4 cycles: an accumulator's FMAs of one group wait for each other). */
static double tile_cycles(const tap_group *grp, int n_grp, int nv, int rb, int xb)
{
    double total = 0;
    for (int i = 0; i < n_grp; i++) {
        const tap_group *gr = &grp[i];
        int64_t lo = gr->qx[0], hi = gr->qx[0];
        for (int k = 1; k < gr->n; k++)
            lo = gr->qx[k] < lo ? gr->qx[k] : lo, hi = gr->qx[k] > hi ? gr->qx[k] : hi;
        double fma = (double)nv * gr->n * rb * xb / 2.0, loads = (nv * gr->n + rb * (xb + hi - lo)) / 2.0;
        double t = fma > loads ? fma : loads;
        total += t > 4.0 * gr->n ? t : 4.0 * gr->n;
    }
    return total;
}

/* Picks nv (dividing F/vw, at most 4) and XB with the least estimated
 * time for the plane, counting the smaller tile of the last columns;
 * accumulators, the nv weight vectors of each tap of a group and a
 * broadcast must fit the register file (32 vectors with AVX-512, 16 with
 * AVX2).  Ties go to the bigger tile (fewer loop trips).
 *
 * One row per tile (RB = 1): with several, tap row ky of output row r + 1
 * reads the input row tap row ky + 1 of row r reads, LLVM merges those
 * broadcasts and keeps them live from one tap group to the next, and the
 * accumulators spill (64x7x7 at 4 rows x 7 columns: 113 stack accesses
 * per tile body; at one row none). */
void conv_oc_tile(conv_geom *g, int vw)
{
    tap_group grp[64];
    int n_grp = tap_groups(g, grp), widest = 1;
    for (int i = 0; i < n_grp; i++)
        widest = grp[i].n > widest ? grp[i].n : widest;
    int regs = vw >= 16 ? 32 : 16, blocks = (int)(g->F / vw);
    double best = -1;
    for (int nv = 1; nv <= 4 && nv <= blocks; nv++) {
        if (blocks % nv)
            continue;
        for (int rb = 1; rb <= 1; rb++)
            for (int xb = 1; xb <= g->OW; xb++) {
                int acc = nv * rb * xb;
                if (acc + nv * widest + 1 > regs)
                    break;
                int64_t fr = g->OH / rb, rr = g->OH % rb, fc = g->OW / xb, rc = g->OW % xb;
                double row = (double)fc * tile_cycles(grp, n_grp, nv, rb, xb) +
                             (rc ? tile_cycles(grp, n_grp, nv, rb, (int)rc) : 0);
                double last = rr ? (double)fc * tile_cycles(grp, n_grp, nv, (int)rr, xb) +
                                       (rc ? tile_cycles(grp, n_grp, nv, (int)rr, (int)rc) : 0)
                                 : 0;
                double t = (double)(blocks / nv) * ((double)fr * row + last);
                if (rc)
                    t *= 1.1;   /* a second tile body: measured slower than the model says */
                if (best < 0 || t < best - 1e-9 || (t < best + 1e-9 && acc > g->NV * g->RB * g->XBo))
                    best = t, g->NV = nv, g->RB = rb, g->XBo = xb;
            }
    }
}

bool cg_conv_packs_weights(int vw, const ntc_node *n, const ntc_shape *in, const ntc_shape *out)
{
    if ((n->op != NTC_OP_conv2d && n->op != NTC_OP_fused_conv2d) || vw < 8)
        return false;
    int64_t C = in->dims[1], F = out->dims[1];
    /* With fewer than 16 weights per filter (the stem: 9) a pixel has too
     * few FMAs to pay for the transpose; codegen_conv.c's kernel is as
     * good there.  16 takes in the 1x1 shortcuts of 16 channels, so that
     * the values around them can stay blocked. */
    return F % vw == 0 && C * n->a.kernel[0] * n->a.kernel[1] >= 16;
}

/* Floats of the packed input: NCHW phases as codegen_conv.c sizes them;
 * blocked ones hold the same data, vw floats per position, and reads run
 * past the last plane by at most a row and the widest column shift. */
static int64_t phases_floats(const conv_geom *g, int vw)
{
    int64_t blocked = g->n_phases * g->C * g->plane + (g->PWs + (int64_t)(g->KW - 1) * g->DW + 1) * vw;
    return ceil_div(g->phases_floats > blocked ? g->phases_floats : blocked, 16) * 16;
}

int64_t conv_oc_scratch(const conv_geom *g, int vw)
{
    /* the phases (either layout), then the tiles and a block of read slack */
    return phases_floats(g, vw) + g->F * g->OH * g->OW + (int64_t)vw * vw;
}

/* dst[(lo..hi)*vw + lane] = 0: positions [lo, hi) of blocked phases. */
static void emit_zero_positions(cg *c, LLVMValueRef dst, LLVMValueRef lo, LLVMValueRef hi)
{
    cg_loop z = cg_for(c, lo, hi, 1, "z");
    cg_vstore(c, LLVMConstNull(c->vec), dst, cg_mul(c, z.iv, cg_i64(c, c->vw)));
    cg_end(c, &z);
}

/* The blocked pack: phases[((cb*n_phases + phase)*plane + y*PWs + x)*vw +
 * lane] = padded input channel cb*vw + lane, read from the blocked input
 * in[((cb*H + iy)*W + ix)*vw + lane], a vector per position, every
 * position written once (zeros where the padding is), then the read
 * slack after the last plane zeroed. */
static void emit_pack_blocked(cg *c, const conv_geom *g, LLVMValueRef in, LLVMValueRef phases)
{
    const int vw = c->vw;
    int64_t planes = g->n_phases * (g->C / vw), slack = g->PWs + (int64_t)(g->KW - 1) * g->DW + 1;
    emit_zero_positions(c, phases, cg_i64(c, planes * g->plane), cg_i64(c, planes * g->plane + slack));
    cg_loop cb = cg_for(c, cg_i64(c, 0), cg_i64(c, g->C / vw), 1, "cb");
    for (int py = 0; py < g->SH; py++)
        for (int px = 0; px < g->SW; px++) {
            int64_t y_lo, y_hi, x_lo, x_hi, phase = (int64_t)py * g->SW + px;
            conv_inside(g->PHs, g->SH, py, g->PT, g->H, &y_lo, &y_hi);
            conv_inside(g->PWs, g->SW, px, g->PL, g->W, &x_lo, &x_hi);
            if (x_lo >= x_hi)
                y_lo = y_hi = 0;   /* no column holds input: all zeros */
            /* the plane's first position */
            LLVMValueRef dst = cg_mul(c, cg_add(c, cg_mul(c, cb.iv, cg_i64(c, g->n_phases)), cg_i64(c, phase)),
                                      cg_i64(c, g->plane));
            emit_zero_positions(c, phases, dst, cg_add(c, dst, cg_i64(c, y_lo * g->PWs)));
            emit_zero_positions(c, phases, cg_add(c, dst, cg_i64(c, y_hi * g->PWs)),
                                cg_add(c, dst, cg_i64(c, g->plane)));
            if (y_lo >= y_hi)
                continue;
            LLVMValueRef src = cg_mul(c, cb.iv, cg_i64(c, g->H));
            cg_loop y = cg_for(c, cg_i64(c, y_lo), cg_i64(c, y_hi), 1, "y");
            /* input row iy = y*SH + py - PT, column ix = x*SW + px - PL */
            LLVMValueRef iy = cg_add(c, cg_mul(c, y.iv, cg_i64(c, g->SH)), cg_i64(c, py - g->PT));
            LLVMValueRef in_row = cg_mul(c, cg_add(c, src, iy), cg_i64(c, g->W));
            LLVMValueRef out_row = cg_add(c, dst, cg_mul(c, y.iv, cg_i64(c, g->PWs)));
            emit_zero_positions(c, phases, out_row, cg_add(c, out_row, cg_i64(c, x_lo)));
            cg_loop x = cg_for(c, cg_i64(c, x_lo), cg_i64(c, x_hi), 1, "x");
            LLVMValueRef ix = cg_add(c, cg_mul(c, x.iv, cg_i64(c, g->SW)), cg_i64(c, px - g->PL));
            LLVMValueRef v = cg_vload(c, in, cg_mul(c, cg_add(c, in_row, ix), cg_i64(c, vw)));
            cg_vstore(c, v, phases, cg_mul(c, cg_add(c, out_row, x.iv), cg_i64(c, vw)));
            cg_end(c, &x);
            emit_zero_positions(c, phases, cg_add(c, out_row, cg_i64(c, x_hi)), cg_add(c, out_row, cg_i64(c, g->PWs)));
            cg_end(c, &y);
        }
    cg_end(c, &cb);
}

/* One tile: filter blocks fb0..fb0+nv-1, output rows oy0..oy0+rb-1,
 * columns ox0..ox0+xb-1, into tiles[fb][oy*OW + ox][vw].  Per input
 * channel and tap group: the group's nv x n weight vectors, then input
 * column by column one broadcast feeding every (tap, pixel) that reads it
 * -- each broadcast is used at once, so nothing but the accumulators and
 * the weights stays live. */
static void emit_oc_tile(cg *c, const conv_geom *g, const cg_node *nd, LLVMValueRef phases, LLVMValueRef tiles,
                         LLVMValueRef fb0, int nv, LLVMValueRef oy0, int rb, LLVMValueRef ox0, int xb)
{
    /* Input position p of channel ch in the phases: NCHW ch*plane + p;
     * blocked ((ch/vw)*n_phases*plane + p)*vw + ch%vw.  cs: floats from
     * one position to the next, ps: from one phase plane to the next. */
    const bool blk = nd->in_blocked;
    const int64_t cs = blk ? c->vw : 1, ps = blk ? g->plane * c->vw : g->C * g->plane;
    const int KK = g->KH * g->KW, vw = c->vw, px = rb * xb;
    tap_group grp[64];
    int n_grp = tap_groups(g, grp);
    LLVMValueRef init[CG_MAX_CARRY];
    for (int v = 0; v < nv; v++) {
        LLVMValueRef f = cg_mul(c, cg_add(c, fb0, cg_i64(c, v)), cg_i64(c, vw));
        LLVMValueRef b = nd->par[1] ? cg_vload(c, nd->par[1], f) : LLVMConstNull(c->vec);
        for (int k = 0; k < px; k++)
            init[v * px + k] = b;
    }
    LLVMValueRef p0 = cg_add(c, cg_mul(c, oy0, cg_i64(c, g->PWs)), ox0);
    cg_loop ch;
    cg_for_carry(c, &ch, cg_i64(c, 0), cg_i64(c, g->C), 1, "c", nv * px, init);
    LLVMValueRef acc[CG_MAX_CARRY];
    for (int k = 0; k < nv * px; k++)
        acc[k] = ch.carry[k];
    LLVMValueRef in_c;
    if (blk) {
        LLVMValueRef cb = LLVMBuildSDiv(c->b, ch.iv, cg_i64(c, vw), ""), lane = LLVMBuildSRem(c->b, ch.iv, cg_i64(c, vw), "");
        in_c = cg_add(c, cg_mul(c, cg_add(c, cg_mul(c, cb, cg_i64(c, g->n_phases * g->plane)), p0), cg_i64(c, vw)), lane);
    } else {
        in_c = cg_add(c, cg_mul(c, ch.iv, cg_i64(c, g->plane)), p0);
    }
    /* packed weight[((fb*C + c)*KK + t)*vw + lane] */
    LLVMValueRef w_c = cg_mul(c, cg_add(c, cg_mul(c, fb0, cg_i64(c, g->C)), ch.iv), cg_i64(c, (int64_t)KK * vw));
    for (int gi = 0; gi < n_grp; gi++) {
        const tap_group *gr = &grp[gi];
        LLVMValueRef w[64];
        int64_t q_lo = gr->qx[0], q_hi = gr->qx[0];
        for (int k = 0; k < gr->n; k++) {
            q_lo = gr->qx[k] < q_lo ? gr->qx[k] : q_lo, q_hi = gr->qx[k] > q_hi ? gr->qx[k] : q_hi;
            for (int v = 0; v < nv; v++)
                w[k * nv + v] =
                    cg_vload(c, nd->par[0], cg_add(c, w_c, cg_i64(c, ((int64_t)v * g->C * KK + gr->t[k]) * vw)));
        }
        for (int r = 0; r < rb; r++)
            for (int64_t j = q_lo; j < xb + q_hi; j++) {
                /* input column j (relative to ox0) of row r */
                int64_t at = gr->phase * ps + ((gr->qy + r) * g->PWs + j) * cs;
                LLVMValueRef s = NULL;
                for (int k = 0; k < gr->n; k++) {
                    int64_t x = j - gr->qx[k];
                    if (x < 0 || x >= xb)
                        continue;
                    if (!s)
                        s = cg_splat(c, cg_load(c, phases, cg_add(c, in_c, cg_i64(c, at))));
                    for (int v = 0; v < nv; v++)
                        acc[v * px + r * xb + x] = cg_fmuladd(c, w[k * nv + v], s, acc[v * px + r * xb + x]);
                }
            }
    }
    cg_end_carry(c, &ch, acc);
    int64_t plane_out = g->OH * g->OW;
    for (int v = 0; v < nv; v++) {
        LLVMValueRef base = cg_mul(c, cg_add(c, fb0, cg_i64(c, v)), cg_i64(c, plane_out));
        for (int r = 0; r < rb; r++) {
            LLVMValueRef row = cg_add(c, base, cg_add(c, cg_mul(c, cg_add(c, oy0, cg_i64(c, r)), cg_i64(c, g->OW)), ox0));
            for (int x = 0; x < xb; x++)
                cg_vstore(c, ch.carry[v * px + r * xb + x], tiles, cg_mul(c, cg_add(c, row, cg_i64(c, x)), cg_i64(c, vw)));
        }
    }
}

/* The tiles of rows oy0..oy0+rb-1, every column. */
static void emit_oc_row(cg *c, const conv_geom *g, const cg_node *nd, LLVMValueRef phases, LLVMValueRef tiles,
                        LLVMValueRef fb, LLVMValueRef oy0, int rb)
{
    int64_t full = g->OW / g->XBo * g->XBo;
    if (full) {
        cg_loop x = cg_for(c, cg_i64(c, 0), cg_i64(c, full), g->XBo, "ox");
        emit_oc_tile(c, g, nd, phases, tiles, fb, g->NV, oy0, rb, x.iv, g->XBo);
        cg_end(c, &x);
    }
    if (g->OW > full)
        emit_oc_tile(c, g, nd, phases, tiles, fb, g->NV, oy0, rb, cg_i64(c, full), (int)(g->OW - full));
}

/* The core: pack, then the row tiles [t_lo, t_hi) of every filter block
 * (conv_core_begin's signature). */
static LLVMValueRef oc_core(cg *c, const cg_node *nd, const conv_geom *g)
{
    conv_core_fn k;
    if (!conv_core_begin(c, nd, nd->in_blocked, nd->in_blocked ? "conv.ocb" : "conv.oc", &k))
        return k.fn;
    if (nd->in_blocked)
        emit_pack_blocked(c, g, k.core.in[0], k.phases);
    else
        conv_emit_pack(c, g, k.core.in[0], k.phases);
    /* Filter blocks outside, rows inside: a block's weights stay in cache
     * while the rows pass; the last row tile may be shorter (0 or 1 trips
     * of its loop, taken by the thread whose part holds it). */
    int64_t full = g->OH / g->RB;
    cg_loop fb = cg_for(c, cg_i64(c, 0), cg_i64(c, g->F / c->vw), g->NV, "fb");
    cg_loop rt = cg_for(c, k.t_lo, cg_smin(c, k.t_hi, cg_i64(c, full)), 1, "rt");
    emit_oc_row(c, g, &k.core, k.phases, k.tiles, fb.iv, cg_mul(c, rt.iv, cg_i64(c, g->RB)), g->RB);
    cg_end(c, &rt);
    if (g->OH > full * g->RB) {
        cg_loop last = cg_for(c, cg_smax(c, k.t_lo, cg_i64(c, full)), k.t_hi, 1, "rt");
        emit_oc_row(c, g, &k.core, k.phases, k.tiles, fb.iv, cg_i64(c, full * g->RB), (int)(g->OH - full * g->RB));
        cg_end(c, &last);
    }
    cg_end(c, &fb);
    conv_core_end(c, nd, nd->in_blocked, &k);
    return k.fn;
}

/* Transposes the vw x vw block v[row][lane] in place: log2(vw) rounds that
 * swap the off-diagonal d x d blocks of every 2d x 2d block (two-input
 * shuffles: vshuff32x4, vunpck*, vpermt2ps). */
static void transpose(cg *c, LLVMValueRef *v)
{
    int vw = c->vw;
    for (int d = vw / 2; d >= 1; d /= 2) {
        LLVMValueRef ma[64], mb[64];
        for (int l = 0; l < vw; l++) {
            ma[l] = LLVMConstInt(c->i32, (unsigned long long)(l & d ? vw + l - d : l), 0);
            mb[l] = LLVMConstInt(c->i32, (unsigned long long)(l & d ? vw + l : l + d), 0);
        }
        LLVMValueRef mask_a = LLVMConstVector(ma, (unsigned)vw), mask_b = LLVMConstVector(mb, (unsigned)vw);
        for (int i = 0; i < vw; i++)
            if (!(i & d)) {
                LLVMValueRef a = v[i], b = v[i + d];
                v[i] = LLVMBuildShuffleVector(c->b, a, b, mask_a, "");
                v[i + d] = LLVMBuildShuffleVector(c->b, a, b, mask_b, "");
            }
    }
}

int conv_oc_emit(cg *c, const cg_node *nd, const conv_geom *g)
{
    const int vw = c->vw;
    /* a blocked output is the tiles' own layout: they go straight there */
    LLVMValueRef tiles = nd->out_blocked ? nd->out : cg_gep(c, nd->scratch, cg_i64(c, phases_floats(g, vw)));
    LLVMValueRef core = oc_core(c, nd, g);
    LLVMValueRef t_lo, t_hi;
    conv_team_part(c, nd, ceil_div(g->OH, g->RB), &t_lo, &t_hi);
    LLVMValueRef args[7] = {tiles, nd->scratch, nd->in[0], t_lo, t_hi, nd->par[0], nd->par[1]};
    LLVMBuildCall2(c->b, LLVMGlobalGetValueType(core), core, args, nd->par[1] ? 7 : 6, "");

    /* The epilogue over the pixels [q_lo, q_hi) of this thread's rows, vw
     * at a time (the last group masked). */
    int64_t plane_out = g->OH * g->OW;
    LLVMValueRef q_lo = cg_mul(c, cg_smin(c, cg_mul(c, t_lo, cg_i64(c, g->RB)), cg_i64(c, g->OH)), cg_i64(c, g->OW));
    LLVMValueRef q_hi = cg_mul(c, cg_smin(c, cg_mul(c, t_hi, cg_i64(c, g->RB)), cg_i64(c, g->OH)), cg_i64(c, g->OW));
    cg_loop fb = cg_for(c, cg_i64(c, 0), cg_i64(c, g->F / vw), 1, "fb");
    LLVMValueRef f0 = cg_mul(c, fb.iv, cg_i64(c, vw)), gain, shift;
    conv_bn_affine(c, nd, f0, true, &gain, &shift);   /* the block's vw channels at once */
    if (nd->out_blocked) {
        if (!nd->bn && !nd->residual && !nd->relu) {
            cg_end(c, &fb);   /* an empty loop, removed by the optimiser */
            return 0;
        }
        /* in place, a pixel's vw channels at a time; the residual is
         * blocked too */
        cg_loop q = cg_for(c, q_lo, q_hi, 1, "q");
        LLVMValueRef at = cg_mul(c, cg_add(c, cg_mul(c, fb.iv, cg_i64(c, plane_out)), q.iv), cg_i64(c, vw));
        LLVMValueRef res = nd->residual ? cg_vload(c, nd->residual, at) : NULL;
        cg_vstore(c, conv_epilogue(c, nd, cg_vload(c, nd->out, at), gain, shift, res), nd->out, at);
        cg_end(c, &q);
        cg_end(c, &fb);
        return 0;
    }
    cg_loop q = cg_for(c, q_lo, q_hi, vw, "q");
    LLVMValueRef v[64];
    LLVMValueRef src = cg_mul(c, cg_add(c, cg_mul(c, fb.iv, cg_i64(c, plane_out)), q.iv), cg_i64(c, vw));
    LLVMValueRef res = nd->res_blocked ? cg_mul(c, cg_add(c, cg_mul(c, fb.iv, cg_i64(c, plane_out)), q.iv), cg_i64(c, vw))
                                       : NULL;
    LLVMValueRef left = LLVMBuildSub(c->b, q_hi, q.iv, "");
    for (int j = 0; j < vw; j++) {
        /* pixels past q_hi read the slack or other rows: masked off below */
        v[j] = cg_vload(c, tiles, cg_add(c, src, cg_i64(c, (int64_t)j * vw)));
        if (gain)
            v[j] = cg_fadd(c, cg_fmul(c, v[j], gain), shift, false);
        if (res) {
            /* a blocked residual is added before the transpose (pixel j
             * exists when j < q_hi - q) */
            LLVMValueRef all = LLVMBuildICmp(c->b, LLVMIntSGT, left, cg_i64(c, j), "");
            LLVMValueRef m = cg_lane_mask(c, 0, cg_i64(c, 0), LLVMBuildSelect(c->b, all, cg_i64(c, vw), cg_i64(c, 0), ""));
            v[j] = cg_fadd(c, v[j], cg_vload_masked(c, nd->residual, cg_add(c, res, cg_i64(c, (int64_t)j * vw)), m), false);
        }
    }
    transpose(c, v);
    LLVMValueRef mask = cg_lane_mask(c, 0, cg_i64(c, 0), left);
    for (int l = 0; l < vw; l++) {
        LLVMValueRef at = cg_add(c, cg_mul(c, cg_add(c, f0, cg_i64(c, l)), cg_i64(c, plane_out)), q.iv);
        LLVMValueRef r = nd->residual && !res ? cg_vload_masked(c, nd->residual, at, mask) : NULL;
        cg_vstore_masked(c, conv_epilogue(c, nd, v[l], NULL, NULL, r), nd->out, at, mask);
    }
    cg_end(c, &q);
    cg_end(c, &fb);
    return 0;
}
