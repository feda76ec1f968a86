/* lower_sched.c — the convolution schedules of the lowering (lower.h):
 * the row schedules (convolution forward, transposed convolution: upconv
 * forward and a convolution's input gradient) and the register-tiled
 * convolution forward.  lower.c's lower_conv / lower_upconv and
 * lower_grad.c's input gradient pick one of them. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "lower_internal.h"

/* The tensor a row-schedule convolution accumulates in: its own output,
 * or (fused) the first tensor of the kernel stored with the anchor's shape.
 * -1 if there is none (then the per-element schedule is used). */
int conv_accumulator(Lo *L)
{
    int out = L->n->out;
    if (!L->fp) return out;
    if (L->fp->materialized[out]) return out;
    for (int i = 0; i < L->kern->nouts; i++) {
        int t = L->kern->outs[i], p = L->g->tensors[t].producer;
        if (p >= 0 && L->in_kern[p] && shape_equal(&L->g->tensors[t].shape, tshape(L, out)) &&
            !(L->fp->inlined && L->fp->inlined[p]))
            return t;
    }
    return -1;
}

/* Convolution, row schedule: for each (n, co) plane and each output row,
 * the row starts at the bias and accumulates x * w over input channels and
 * taps with the innermost loop running along the row, over exactly the
 * outputs whose input position is inside the image (the last axis's taps
 * are unrolled, so every bound is a constant): a contiguous, vectorizable
 * multiply-add with no bounds tests.  The row lives in the kernel's output
 * buffer; the epilogue then runs over it.  The (n, co) planes are the
 * parallel axis. */
bool lower_conv_rows(Lo *L, int acc_t)
{
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int sr = os->rank - 2, last = sr - 1;
    int w = param_buf(L, 0, false), bb = at->bias ? param_buf(L, 1, false) : -1;
    int ab = buf(L, acc_t, true, "acc");
    int64_t G = at->groups > 0 ? at->groups : 1, cpg = is->d[1] / G, opg = os->d[1] / G;
    int64_t OW = os->d[2 + last], IW = is->d[2 + last], s = at->stride[last], dl = at->dilation[last], lo = at->pad.lo[last];
    Shape ws = L->g->tensors[L->g->params[L->n->params[0]].tensor].shape;
    int pv;
    L3Block *b = loop(L, &L->k->body, "nco", os->d[0] * os->d[1], &pv, L3_PARALLEL);
    L3Expr *c[MAX_RANK];
    c[0] = dv(L, V(L, pv), I(L, os->d[1]));
    c[1] = bin(L, L3_MOD, V(L, pv), I(L, os->d[1]));
    for (int i = 0; i < last; i++) {   /* the rows */
        int v;
        b = loop(L, b, i == 0 ? "od" : "oh", os->d[2 + i], &v, 0);
        c[2 + i] = V(L, v);
    }
    int ov;
    L3Block *init = loop(L, b, "ow", OW, &ov, L3_VECTORIZE);
    c[2 + last] = V(L, ov);
    l3_store(L->m, init, ab, lin(L, os, c), bb >= 0 ? load(L, bb, c[1]) : F(L, 0), false);
    int ci;
    L3Block *body = loop(L, b, "ci", cpg, &ci, 0);
    L3Expr *ic[MAX_RANK], *wc[MAX_RANK];
    ic[0] = c[0];
    ic[1] = add(L, mul(L, dv(L, c[1], I(L, opg)), I(L, cpg)), V(L, ci));
    wc[0] = c[1];
    wc[1] = V(L, ci);
    for (int i = 0; i < last; i++) {   /* taps of the row axes: bounds tested once per row */
        int tv;
        body = loop(L, body, "t", at->kernel[i], &tv, 0);
        wc[2 + i] = V(L, tv);
        L3Expr *p = add(L, sub(L, mul(L, c[2 + i], I(L, at->stride[i])), I(L, at->pad.lo[i])),
                        mul(L, V(L, tv), I(L, at->dilation[i])));
        ic[2 + i] = p;
        body = &l3_if(L->m, body, bin(L, L3_AND, bin(L, L3_LE, I(L, 0), p), bin(L, L3_LT, p, I(L, is->d[2 + i]))))->body;
    }
    for (int64_t kw = 0; kw < at->kernel[last]; kw++) {
        /* outputs ow with 0 <= ow*s - lo + kw*dl < IW */
        int64_t off = kw * dl - lo, o0 = 0, o1 = OW;
        while (o0 < OW && o0 * s + off < 0) o0++;
        while (o1 > o0 && (o1 - 1) * s + off >= IW) o1--;
        if (o1 <= o0) continue;
        wc[2 + last] = I(L, kw);
        int wv = l3_var(L->m, L->k, "wv", L3_F32, false);
        l3_local(L->m, body, wv, load(L, w, lin(L, &ws, wc)));
        int v;
        L3Block *row = loop(L, body, "ow", o1 - o0, &v, L3_VECTORIZE);
        L3Expr *owe = add(L, V(L, v), I(L, o0));
        ic[2 + last] = add(L, mul(L, owe, I(L, s)), I(L, off));
        L3Expr *oc[MAX_RANK];
        for (int i = 0; i < os->rank; i++) oc[i] = c[i];
        oc[2 + last] = owe;
        L3Expr *oi = lin(L, os, oc);
        l3_store(L->m, row, ab, oi, l3_fma(L->m, val(L, L->n->in[0], ic), V(L, wv), load(L, ab, oi)), false);
    }
    /* the epilogue over the finished row */
    L3Block *fin = loop(L, b, "ow", OW, &ov, L3_VECTORIZE);
    c[2 + last] = V(L, ov);
    int r = l3_var(L->m, L->k, "y", L3_F32, false);
    l3_local(L->m, fin, r, load(L, ab, lin(L, os, c)));
    emit(L, fin, c, V(L, r));
    return true;
}

/* Transposed convolution, row schedule (upconv forward, and a
 * convolution's input gradient): destination position p receives source
 * position q through tap t when p = q*s + t*dil - lo, with the weight
 * w[source channel][destination channel in group][t...].  Per destination
 * (n, c) plane and row: the row starts at the bias (or 0), every source
 * channel and row tap with an integral, in-range source row adds its row
 * (last axis's taps unrolled over exactly the valid positions, so the
 * innermost loop runs with constant bounds), then the epilogue runs over the
 * row.  The planes are the parallel axis.  Stride 1 on every axis: the
 * register tiles instead (transposed_tiled), unless NETC_CONV_ROWS is set. */
static bool transposed_tiled(Lo *L, const OpAttrs *at, int src_t, int w_tensor, int bias_buf, int acc_t);

bool lower_transposed_rows(Lo *L, int src_t, int w_tensor, int bias_buf, int acc_t)
{
    const OpAttrs *at = L->n->op == OP_GRAD ? &L->g->nodes[L->n->at.grad_node].at : &L->n->at;
    if (!getenv("NETC_CONV_ROWS") && transposed_tiled(L, at, src_t, w_tensor, bias_buf, acc_t)) return true;
    const Shape *ds = tshape(L, L->n->out), *ss = tshape(L, src_t), *ws = tshape(L, w_tensor);
    int sr = ds->rank - 2, last = sr - 1;
    int w = buf(L, w_tensor, false, "weight"), ab = buf(L, acc_t, true, "acc");
    int64_t G = at->groups > 0 ? at->groups : 1, dpg = ds->d[1] / G, spg = ss->d[1] / G;
    int pv;
    L3Block *b = loop(L, &L->k->body, "nc", ds->d[0] * ds->d[1], &pv, L3_PARALLEL);
    L3Expr *c[MAX_RANK];
    c[0] = dv(L, V(L, pv), I(L, ds->d[1]));
    c[1] = bin(L, L3_MOD, V(L, pv), I(L, ds->d[1]));
    for (int i = 0; i < last; i++) {
        int v;
        b = loop(L, b, i == 0 ? "pd" : "ph", ds->d[2 + i], &v, 0);
        c[2 + i] = V(L, v);
    }
    int lv;
    L3Block *init = loop(L, b, "pw", ds->d[2 + last], &lv, L3_VECTORIZE);
    c[2 + last] = V(L, lv);
    l3_store(L->m, init, ab, lin(L, ds, c), bias_buf >= 0 ? load(L, bias_buf, c[1]) : F(L, 0), false);
    L3Expr *grp = dv(L, c[1], I(L, dpg));
    int jv;
    L3Block *body = loop(L, b, "cs", spg, &jv, 0);
    L3Expr *sc[MAX_RANK], *wc[MAX_RANK];
    sc[0] = c[0];
    sc[1] = add(L, mul(L, grp, I(L, spg)), V(L, jv));
    wc[0] = sc[1];
    wc[1] = sub(L, c[1], mul(L, grp, I(L, dpg)));
    for (int i = 0; i < last; i++) {
        int tv;
        body = loop(L, body, "t", at->kernel[i], &tv, 0);
        wc[2 + i] = V(L, tv);
        int64_t st = at->stride[i];
        L3Expr *q = sub(L, add(L, c[2 + i], I(L, at->pad.lo[i])), mul(L, V(L, tv), I(L, at->dilation[i])));
        L3Expr *ok = bin(L, L3_LE, I(L, 0), q);
        if (st != 1) ok = bin(L, L3_AND, ok, bin(L, L3_EQ, bin(L, L3_MOD, q, I(L, st)), I(L, 0)));
        ok = bin(L, L3_AND, ok, bin(L, L3_LT, q, I(L, st * ss->d[2 + i])));
        body = &l3_if(L->m, body, ok)->body;
        sc[2 + i] = dv(L, q, I(L, st));
    }
    int64_t Dw = ds->d[2 + last], Sw = ss->d[2 + last], st = at->stride[last], dl = at->dilation[last], lo = at->pad.lo[last];
    for (int64_t t = 0; t < at->kernel[last]; t++) {
        /* source q with 0 <= q*s + t*dl - lo < Dw */
        int64_t off = t * dl - lo, q0 = 0, q1 = Sw;
        while (q0 < Sw && q0 * st + off < 0) q0++;
        while (q1 > q0 && (q1 - 1) * st + off >= Dw) q1--;
        if (q1 <= q0) continue;
        wc[2 + last] = I(L, t);
        int wv = l3_var(L->m, L->k, "wv", L3_F32, false);
        l3_local(L->m, body, wv, load(L, w, lin(L, ws, wc)));
        int v;
        L3Block *row = loop(L, body, "q", q1 - q0, &v, L3_VECTORIZE);
        L3Expr *qe = add(L, V(L, v), I(L, q0));
        sc[2 + last] = qe;
        L3Expr *dc[MAX_RANK];
        for (int i = 0; i < ds->rank; i++) dc[i] = c[i];
        dc[2 + last] = add(L, mul(L, qe, I(L, st)), I(L, off));
        L3Expr *di = lin(L, ds, dc);
        l3_store(L->m, row, ab, di, l3_fma(L->m, val(L, src_t, sc), V(L, wv), load(L, ab, di)), false);
    }
    L3Block *fin = loop(L, b, "pw", Dw, &lv, L3_VECTORIZE);
    c[2 + last] = V(L, lv);
    int r = l3_var(L->m, L->k, "y", L3_F32, false);
    l3_local(L->m, fin, r, load(L, ab, lin(L, ds, c)));
    emit(L, fin, c, V(L, r));
    return true;
}

/* ---- register-tiled convolution forward ------------------------------------------------------- */

/* Convolution, register tiles: a tile is `noc` output channels (OC_T = 4,
 * 8 in 3D: see tile_shape; the last tile of a group may have fewer) x `width` consecutive outputs of
 * one output row (W_T = 32; the last axis).  Its noc x width accumulators
 * are scalar locals that start at the bias; for every input channel and tap
 * each of the `width` input values is loaded once and multiplied into all
 * noc channels with a broadcast weight, so the innermost statements are noc
 * groups of `width` independent multiply-adds over consecutive outputs,
 * which LLVM's SLP vectorizer turns into vector FMAs on register
 * accumulators (2 zmm per channel with AVX-512, 8 or 16 in all, no spills) with
 * one broadcast weight per channel.  4 x 32 measured as fast as 8 x 32 on
 * the single-conv benchmark and compiles in half the time (the JIT time
 * grows with the tile's size); NETC_CONV_TILE=OCxW overrides it.
 *
 * Padding: the row splits at compile time into tiles whose every tap is
 * inside the input (a runtime loop over full-width tiles, no bounds tests;
 * when the interior is not a multiple of W_T the last one overlaps the one
 * before) and constant-position tiles at both ends (the borders, W_T/2
 * wide: wide enough to vectorize along the row, narrow enough that their
 * shifted loads stay in registers; a row too short for a full interior
 * tile is all constant tiles).  In
 * a constant tile the last-axis taps inside for every lane run as a loop,
 * the others are unrolled so each lane knows at compile time whether its
 * tap is in the image: outside, the lane multiplies 0 (as zero padding
 * does).  Row taps (the other spatial axes) are tested once per row and tap.
 * An input made by a concat inlined into the kernel is read part by part
 * (the input channel loop splits at the parts' boundaries) so no lane
 * selects between tensors.  Parallel over (n, group, channel tile) x rows.
 * Results: see epilogue_buffer.
 *
 * Accuracy: an output adds C_in x taps products (512 x 9 = 4608 at
 * unet2d's bottleneck); added one after another into one float, the
 * rounding error grows with that count (measured there: 1.9e-6 of the
 * largest output, 8x PyTorch's float32 convolution on the same inputs).
 * The input channels are summed in blocks of 16 (chan_block): each block
 * into partial accumulators that start at 0 and are added into the tile's
 * accumulators after the block, so the error grows with about 16 x taps +
 * C_in / 16 terms (measured 2.5e-7, as PyTorch).  The partials double the
 * tile's accumulator registers and cost one add per output and block: no
 * measurable time. */

enum { TILE_MAX_OC = 16, TILE_MAX_W = 64 };

/* Where a tile's results go: -1 straight to emit when storing the value is
 * all emit does (no fused consumer); otherwise the buffer of the tensor the
 * kernel accumulates in (conv_accumulator), the tiles store their raw sums
 * there and the epilogue runs once per output row as a vector loop over
 * it (one copy of the epilogue per row instead of one per tile lane). */
static int epilogue_buffer(Lo *L, int acc)
{
    if (acc < 0 || !L->fp) return -1;
    const Shape *os = tshape(L, L->n->out);
    bool trivial = acc == L->n->out;
    for (int i = 0; i < L->kern->nouts && trivial; i++) {
        int t = L->kern->outs[i], p = L->g->tensors[t].producer;
        if (t == L->n->out || p < 0 || !L->in_kern[p] || !shape_equal(&L->g->tensors[t].shape, os)) continue;
        if (p != L->index && L->fp->inlined && L->fp->inlined[p]) continue;
        trivial = false;
    }
    return trivial ? -1 : buf(L, acc, true, "acc");
}

/* A finished value at output coordinates c: into the accumulator buffer
 * ab, or through emit when ab is -1. */
static void put(Lo *L, L3Block *b, int ab, L3Expr *const *c, L3Expr *v)
{
    if (ab >= 0) l3_store(L->m, b, ab, lin(L, tshape(L, L->n->out), c), v, false);
    else emit(L, b, c, v);
}

/* The epilogue over one output row of noc channels from co (ab >= 0). */
static void row_epilogue(Lo *L, L3Block *b, int ab, L3Expr *n, L3Expr *co, L3Expr *const *rows, int noc)
{
    const Shape *os = tshape(L, L->n->out);
    int last = os->rank - 3, ov, wv;
    L3Block *ob = loop(L, b, "o", noc, &ov, 0);
    L3Block *wb = loop(L, ob, "ow", os->d[2 + last], &wv, L3_VECTORIZE);
    L3Expr *c[MAX_RANK];
    c[0] = n;
    c[1] = add(L, co, V(L, ov));
    for (int i = 0; i < last; i++) c[2 + i] = rows[i];
    c[2 + last] = V(L, wv);
    int r = local(L, wb, "y", L3_F32, load(L, ab, lin(L, os, c)));
    emit(L, wb, c, V(L, r));
}

typedef struct {
    int tensor;          /* the tensor these input channels come from */
    int64_t c0, n;       /* channels c0 .. c0+n-1 of the group's input are its channels 0 .. n-1 */
    bool whole;          /* the conv's own input (channel = group * cpg + ci), not a concat part */
} InPart;

#define TILE_MAX_PARTS 16

typedef struct {
    Lo *L;
    const OpAttrs *at;            /* the geometry (&geo) */
    OpAttrs geo;                  /* kernel, stride, dilation, pad.lo: source p = o*s + t*dil - lo */
    bool flip;                    /* transposed: weight [source channel][destination in group][K-1-t...] */
    const Shape *os, *is;
    Shape ws;
    int sr, last;
    int w, bb, ab;                /* weight, bias (-1: none), accumulator (-1: emit directly) buffers */
    int64_t cpg, opg, tw;         /* input / output channels per group; the tile width W_T */
    InPart parts[TILE_MAX_PARTS];
    int nparts;
    L3Expr *n, *grp, *co;         /* batch index, group, the tile's first output channel */
    L3Expr *rows[MAX_SPATIAL];    /* output coordinates of the row axes */
} Tile;

/* Whether last-axis output ow reads an in-image input through tap kw. */
static bool tap_inside(const Tile *T, int64_t ow, int64_t kw)
{
    int64_t p = ow * T->at->stride[T->last] + kw * T->at->dilation[T->last] - T->at->pad.lo[T->last];
    return p >= 0 && p < T->is->d[2 + T->last];
}

/* Input channels c0 + 0 .. c0 + count-1 of part P (c0: an expression, NULL
 * for 0) times every tap, added into the tile's accumulators acc (noc x
 * width locals), one channel after another. */
static void tile_channels(Tile *T, L3Block *b, const InPart *P, L3Expr *c0, int64_t count, int noc, L3Expr *w0,
                          int64_t w0c, int width, int acc[][TILE_MAX_W])
{
    Lo *L = T->L;
    const OpAttrs *at = T->at;
    int last = T->last;
    int64_t K = at->kernel[last], s = at->stride[last], dl = at->dilation[last], lo = at->pad.lo[last];
    int ci;
    L3Block *body = loop(L, b, "ci", count, &ci, 0);
    L3Expr *cie = c0 ? add(L, c0, V(L, ci)) : V(L, ci);
    L3Expr *ic[MAX_RANK], *wc[MAX_RANK];
    ic[0] = T->n;
    ic[1] = P->whole ? add(L, mul(L, T->grp, I(L, T->cpg)), cie) : cie;
    if (T->flip) {   /* w[source channel][destination channel in the group][taps reversed] */
        wc[0] = ic[1];
        wc[1] = NULL;   /* per channel below */
    } else
        wc[1] = add(L, cie, I(L, P->c0));
    for (int i = 0; i < last; i++) {   /* row taps: tested once per row */
        int tv;
        body = loop(L, body, "t", at->kernel[i], &tv, 0);
        wc[2 + i] = T->flip ? sub(L, I(L, at->kernel[i] - 1), V(L, tv)) : V(L, tv);
        int64_t st = at->stride[i], d = at->dilation[i], pl = at->pad.lo[i], in = T->is->d[2 + i];
        L3Expr *p = add(L, sub(L, mul(L, T->rows[i], I(L, st)), I(L, pl)), mul(L, V(L, tv), I(L, d)));
        ic[2 + i] = p;
        L3Expr *ok = NULL;
        if (pl > 0) ok = bin(L, L3_LE, I(L, 0), p);
        if ((T->os->d[2 + i] - 1) * st - pl + (at->kernel[i] - 1) * d >= in) {
            L3Expr *o2 = bin(L, L3_LT, p, I(L, in));
            ok = ok ? bin(L, L3_AND, ok, o2) : o2;
        }
        if (ok) body = &l3_if(L->m, body, ok)->body;
    }
    /* last-axis taps: those inside for every lane as a loop (all of them
     * in a runtime tile), the others (constant tiles) unrolled, each
     * lane's test decided here */
    int64_t k0 = 0, k1 = K;
    if (w0c >= 0) {   /* the taps inside for every lane: an interval */
        k0 = k1 = -1;
        for (int64_t kw = 0; kw < K; kw++) {
            bool all = true;
            for (int l = 0; l < width && all; l++) all = tap_inside(T, w0c + l, kw);
            if (all && k0 < 0) k0 = kw;
            if (all) k1 = kw + 1;
        }
    }
    for (int64_t kw = -1; kw < K; kw++) {
        bool all = kw < 0;
        if (all && k1 <= k0) continue;
        if (!all && kw >= k0 && kw < k1) continue;
        bool any = all;
        for (int l = 0; l < width && !any; l++) any = tap_inside(T, w0c + l, kw);
        if (!any) continue;
        L3Block *kb = body;
        L3Expr *kwe = I(L, kw);
        if (all) {
            int kv;
            kb = loop(L, body, "kw", k1 - k0, &kv, 0);
            kwe = add(L, V(L, kv), I(L, k0));
        }
        wc[2 + last] = T->flip ? sub(L, I(L, K - 1), kwe) : kwe;
        int wv[TILE_MAX_OC], xv[TILE_MAX_W];
        for (int o = 0; o < noc; o++) {
            if (T->flip) wc[1] = sub(L, add(L, T->co, I(L, o)), mul(L, T->grp, I(L, T->opg)));
            else wc[0] = add(L, T->co, I(L, o));
            wv[o] = local(L, kb, "w", L3_F32, load(L, T->w, lin(L, &T->ws, wc)));
        }
        for (int l = 0; l < width; l++) {
            L3Expr *x = F(L, 0);
            if (all || tap_inside(T, w0c + l, kw)) {
                ic[2 + last] = add(L, mul(L, add(L, w0, I(L, l)), I(L, s)), sub(L, mul(L, kwe, I(L, dl)), I(L, lo)));
                x = val(L, P->tensor, ic);
            }
            xv[l] = local(L, kb, "x", L3_F32, x);
        }
        for (int o = 0; o < noc; o++)
            for (int l = 0; l < width; l++)
                set(L, kb, acc[o][l], l3_fma(L->m, V(L, xv[l]), V(L, wv[o]), V(L, acc[o][l])));
    }
}

/* Input channels per partial sum: 16 (the accuracy note above
 * epilogue_buffer); NETC_CONV_CBLOCK=N overrides it, for experiments (0: one
 * sum over every channel, as before). */
static int64_t chan_block(void)
{
    const char *e = getenv("NETC_CONV_CBLOCK");
    long v;
    char tail;
    if (e && sscanf(e, "%ld%c", &v, &tail) == 1 && v >= 0) return v;
    return 16;
}

/* One tile: noc channels from T->co, `width` outputs from w0 (w0c: the
 * same as a constant, -1 when it is a runtime value: then every tap of
 * every lane is known to be inside). */
static void tile_code(Tile *T, L3Block *b, int noc, L3Expr *w0, int64_t w0c, int width)
{
    Lo *L = T->L;
    int last = T->last;
    int acc[TILE_MAX_OC][TILE_MAX_W];
    for (int o = 0; o < noc; o++) {
        L3Expr *init = F(L, 0);
        if (T->bb >= 0) init = V(L, local(L, b, "bias", L3_F32, load(L, T->bb, add(L, T->co, I(L, o)))));
        for (int l = 0; l < width; l++) acc[o][l] = local(L, b, "acc", L3_F32, init);
    }
    int64_t cb = chan_block();
    for (int pi = 0; pi < T->nparts; pi++) {
        const InPart *P = &T->parts[pi];
        if (cb <= 0 || P->n <= cb) {
            tile_channels(T, b, P, NULL, P->n, noc, w0, w0c, width, acc);
            continue;
        }
        /* blocks of cb input channels, each summed into partials that are
         * then added to the accumulators */
        int64_t nb = P->n / cb, rem = P->n % cb;
        for (int r = 0; r < 2; r++) {
            if (r == 1 && rem == 0) break;
            L3Block *pb = b;
            L3Expr *c0 = I(L, nb * cb);
            if (r == 0) {
                int bv;
                pb = loop(L, b, "cb", nb, &bv, 0);
                c0 = mul(L, V(L, bv), I(L, cb));
            }
            int part[TILE_MAX_OC][TILE_MAX_W];
            for (int o = 0; o < noc; o++)
                for (int l = 0; l < width; l++) part[o][l] = local(L, pb, "part", L3_F32, F(L, 0));
            tile_channels(T, pb, P, c0, r == 0 ? cb : rem, noc, w0, w0c, width, part);
            for (int o = 0; o < noc; o++)
                for (int l = 0; l < width; l++) accum(L, pb, acc[o][l], V(L, part[o][l]));
        }
    }
    /* the epilogue at the tile's stores */
    L3Expr *oc[MAX_RANK];
    oc[0] = T->n;
    for (int i = 0; i < last; i++) oc[2 + i] = T->rows[i];
    for (int o = 0; o < noc; o++)
        for (int l = 0; l < width; l++) {
            oc[1] = add(L, T->co, I(L, o));
            oc[2 + last] = add(L, w0, I(L, l));
            put(L, b, T->ab, oc, V(L, acc[o][l]));
        }
}

/* Constant tiles over outputs r0 .. r1-1 of the row. */
static int64_t const_width(const Tile *T) { return T->tw > 16 ? T->tw / 2 : T->tw; }

static void const_tiles(Tile *T, L3Block *b, int noc, int64_t r0, int64_t r1)
{
    int64_t cw = const_width(T);
    while (r0 < r1) {
        int64_t wdt = r1 - r0 < cw ? r1 - r0 : cw;
        tile_code(T, b, noc, I(T->L, r0), r0, (int)wdt);
        r0 += wdt;
    }
}

/* One output row of noc channels: the border and remainder tiles at
 * constant positions, the interior in full-width tiles. */
static void tile_row(Tile *T, L3Block *b, int noc)
{
    int64_t OW = T->os->d[2 + T->last], tw = T->tw, K = T->at->kernel[T->last];
    int64_t a = -1, e = -1;   /* interior outputs: a .. e-1 */
    for (int64_t ow = 0; ow < OW; ow++)
        if (tap_inside(T, ow, 0) && tap_inside(T, ow, K - 1)) {
            if (a < 0) a = ow;
            e = ow + 1;
        }
    /* constant tiles at least W_T/2 wide at both ends (a narrower one
     * would vectorize across its channels, gathering the weights), full
     * tiles between them */
    int64_t cw = const_width(T), e1 = a < 0 ? OW : a > cw ? a : cw;
    if (e1 > OW) e1 = OW;
    int64_t r0 = e < OW - cw ? e : OW - cw;
    if (r0 < e1) r0 = e1;
    if (r0 - e1 < tw) {   /* no full interior tile */
        const_tiles(T, b, noc, 0, OW);
    } else {
        /* the last full tile moved back to end at r0 when the interior is
         * not a multiple of W_T: it recomputes a few outputs of the one
         * before (the same sums in the same order, stored again) */
        Lo *L = T->L;
        int64_t nk = (r0 - e1) / tw;
        const_tiles(T, b, noc, 0, e1);
        int v;
        L3Block *lb = loop(L, b, "wt", nk, &v, 0);
        tile_code(T, lb, noc, add(L, mul(L, V(L, v), I(L, tw)), I(L, e1)), -1, (int)tw);
        if ((r0 - e1) % tw) tile_code(T, b, noc, I(L, r0 - tw), -1, (int)tw);   /* every tap inside: no tests */
        const_tiles(T, b, noc, r0, OW);
    }
    if (T->ab >= 0) row_epilogue(T->L, b, T->ab, T->n, T->co, T->rows, noc);
}

/* The tile shape: OC_T x W_T, for sr spatial axes.  3D convolutions read
 * 9 input rows per channel and tap row, more than L1 holds for a tile's
 * whole channel loop: 8 channels per tile halve those reloads (unet3d
 * measured about 25% faster than with 4, at twice the JIT time).
 * NETC_CONV_TILE=OCxW overrides it, for experiments (OC up to 16, W up to
 * 64). */
static void tile_shape(int sr, int64_t *oct, int64_t *tw)
{
    *oct = sr >= 3 ? 8 : 4;
    *tw = 32;
    const char *s = getenv("NETC_CONV_TILE");
    long a, b;
    char tail;
    if (s && sscanf(s, "%ldx%ld%c", &a, &b, &tail) == 2 && a >= 1 && a <= TILE_MAX_OC && b >= 1 && b <= TILE_MAX_W) {
        *oct = a;
        *tw = b;
    }
}

/* Tile setup shared by the convolution and the stride-1 transposed
 * convolution: source tensor src, weight tensor, geometry at (groups from
 * it).  false: not a shape the tiles handle. */
static bool tile_setup(Tile *T, Lo *L, const OpAttrs *at, int src, int w_tensor, int64_t *oct)
{
    memset(T, 0, sizeof *T);
    T->L = L;
    T->geo = *at;
    T->at = &T->geo;
    T->os = tshape(L, L->n->out);
    T->is = tshape(L, src);
    T->sr = T->os->rank - 2;
    T->last = T->sr - 1;
    if (T->sr < 1 || T->sr > MAX_SPATIAL || T->is->rank != T->os->rank) return false;
    int64_t G = at->groups > 0 ? at->groups : 1;
    T->cpg = T->is->d[1] / G;
    T->opg = T->os->d[1] / G;
    tile_shape(T->sr, oct, &T->tw);
    if (*oct > T->opg) *oct = T->opg;
    if (T->cpg < 1 || *oct < 1) return false;
    T->ws = *tshape(L, w_tensor);
    T->parts[T->nparts++] = (InPart){ src, 0, T->cpg, true };
    return true;
}

static bool tiled(Lo *L, Tile *T, int64_t G, int64_t oct);

bool lower_conv_tiled(Lo *L)
{
    const OpAttrs *at = &L->n->at;
    Tile T;
    int64_t oct;
    int x = L->n->in[0], wt = L->g->params[L->n->params[0]].tensor;
    if (!tile_setup(&T, L, at, x, wt, &oct)) return false;
    int64_t G = at->groups > 0 ? at->groups : 1;
    /* an inlined concat as the input: its parts, channel ranges of their own */
    int p = L->g->tensors[x].producer;
    if (L->fp && G == 1 && p >= 0 && p != L->index && L->in_kern[p] && L->g->nodes[p].op == OP_CONCAT &&
        L->g->nodes[p].nin <= TILE_MAX_PARTS) {
        int64_t c0 = 0;
        T.nparts = 0;
        for (int j = 0; j < L->g->nodes[p].nin; j++) {
            int t = L->g->nodes[p].in[j];
            T.parts[T.nparts++] = (InPart){ t, c0, tshape(L, t)->d[1], false };
            c0 += tshape(L, t)->d[1];
        }
    }
    T.w = param_buf(L, 0, false);
    T.bb = at->bias ? param_buf(L, 1, false) : -1;
    T.ab = epilogue_buffer(L, conv_accumulator(L));
    return tiled(L, &T, G, oct);
}

/* A transposed convolution with stride 1 on every axis (a stride-1 upconv,
 * the input gradient of a stride-1 convolution) is a convolution of the
 * source with the taps reversed: destination p reads source
 * p + lo - t*dil = p + t'*dil - ((K-1)*dil - lo) for t' = K-1-t. */
static bool transposed_tiled(Lo *L, const OpAttrs *at, int src_t, int w_tensor, int bias_buf, int acc_t)
{
    for (int i = 0; i < tshape(L, L->n->out)->rank - 2; i++)
        if (at->stride[i] != 1) return false;
    Tile T;
    int64_t oct;
    if (!tile_setup(&T, L, at, src_t, w_tensor, &oct)) return false;
    for (int i = 0; i < T.sr; i++) T.geo.pad.lo[i] = (at->kernel[i] - 1) * at->dilation[i] - at->pad.lo[i];
    T.flip = true;
    T.w = buf(L, w_tensor, false, "weight");
    T.bb = bias_buf;
    T.ab = epilogue_buffer(L, acc_t);
    return tiled(L, &T, at->groups > 0 ? at->groups : 1, oct);
}

/* The tiled loop nest: parallel over (n, group, channel tile) x rows. */
static bool tiled(Lo *L, Tile *Tp, int64_t G, int64_t oct)
{
    Tile T = *Tp;
    int64_t ntiles = (T.opg + oct - 1) / oct, full = T.opg / oct, rem = T.opg % oct;
    int pv;
    L3Block *b = loop(L, &L->k->body, "ntile", T.os->d[0] * G * ntiles, &pv, L3_PARALLEL);
    T.n = dv(L, V(L, pv), I(L, G * ntiles));
    T.grp = G == 1 ? I(L, 0) : bin(L, L3_MOD, dv(L, V(L, pv), I(L, ntiles)), I(L, G));
    L3Expr *tile = ntiles == 1 ? I(L, 0) : bin(L, L3_MOD, V(L, pv), I(L, ntiles));
    T.co = add(L, mul(L, T.grp, I(L, T.opg)), mul(L, tile, I(L, oct)));
    for (int i = 0; i < T.last; i++) {
        int v;
        b = loop(L, b, i == T.last - 1 ? "oh" : "od", T.os->d[2 + i], &v, 0);
        T.rows[i] = V(L, v);
    }
    /* batch, group and first channel as locals of the row (short indices) */
    T.n = V(L, local(L, b, "nb", L3_I64, T.n));
    if (G > 1) T.grp = V(L, local(L, b, "grp", L3_I64, T.grp));
    T.co = V(L, local(L, b, "co", L3_I64, T.co));
    if (rem == 0) {
        tile_row(&T, b, (int)oct);
    } else {
        L3Stmt *s = l3_if(L->m, b, bin(L, L3_LT, tile, I(L, full)));
        tile_row(&T, &s->body, (int)oct);
        tile_row(&T, &s->els, (int)rem);
    }
    return true;
}

/* ---- register-tiled transposed convolution forward (upconv) ------------------------------------ */

/* Upconv whose taps do not overlap (kernel == stride, dilation 1 on every
 * axis, as U-Nets' 2x2 stride-2 up-convolutions): destination p receives
 * exactly one source q and tap t, p + lo = q*s + t.  Per destination row
 * the row taps are fixed (q and t of each row axis), and along the last
 * axis a tile is noc output channels x `width` consecutive source positions
 * x every last-axis tap: noc * K * width register accumulators, each source
 * value loaded once for all of them; the stores interleave the taps.
 * Destination rows and positions no source reaches (output padding beyond
 * the image) get the bias. */

typedef struct {
    Lo *L;
    const OpAttrs *at;
    const Shape *ds, *ss;
    Shape ws;
    int last;
    int x, w, bb, ab;
    int64_t cpg, opg, tw;
    L3Expr *n, *grp, *co, *col;      /* batch, group, first output channel (global, within the group) */
    L3Expr *prow[MAX_SPATIAL];       /* destination row coordinates */
    L3Expr *qrow[MAX_SPATIAL];       /* their source rows */
    L3Expr *trow[MAX_SPATIAL];       /* their taps */
} UpTile;

static bool up_inside(const UpTile *U, int64_t q, int64_t t)
{
    int64_t p = q * U->at->stride[U->last] + t - U->at->pad.lo[U->last];
    return p >= 0 && p < U->ds->d[2 + U->last];
}

static void up_tile(UpTile *U, L3Block *b, int noc, L3Expr *q0, int64_t q0c, int width)
{
    Lo *L = U->L;
    int last = U->last;
    int64_t K = U->at->kernel[last], s = U->at->stride[last], lo = U->at->pad.lo[last];
    enum { MAXACC = 512 };
    int acc[MAXACC];
#define ACC(o, t, l) acc[((o) * K + (t)) * width + (l)]
    for (int o = 0; o < noc; o++) {
        L3Expr *init = F(L, 0);
        if (U->bb >= 0) init = V(L, local(L, b, "bias", L3_F32, load(L, U->bb, add(L, U->co, I(L, o)))));
        for (int64_t t = 0; t < K; t++)
            for (int l = 0; l < width; l++) ACC(o, t, l) = local(L, b, "acc", L3_F32, init);
    }
    int ci;
    L3Block *body = loop(L, b, "ci", U->cpg, &ci, 0);
    L3Expr *xc[MAX_RANK], *wc[MAX_RANK];
    xc[0] = U->n;
    xc[1] = add(L, mul(L, U->grp, I(L, U->cpg)), V(L, ci));
    for (int i = 0; i < last; i++) xc[2 + i] = U->qrow[i], wc[2 + i] = U->trow[i];
    wc[0] = xc[1];
    int xv[TILE_MAX_W], wv[TILE_MAX_OC * 8];
    for (int l = 0; l < width; l++) {
        xc[2 + last] = add(L, q0, I(L, l));
        xv[l] = local(L, body, "x", L3_F32, val(L, U->x, xc));
    }
    for (int o = 0; o < noc; o++)
        for (int64_t t = 0; t < K; t++) {
            wc[1] = add(L, U->col, I(L, o));
            wc[2 + last] = I(L, t);
            wv[o * K + t] = local(L, body, "w", L3_F32, load(L, U->w, lin(L, &U->ws, wc)));
        }
    for (int o = 0; o < noc; o++)
        for (int64_t t = 0; t < K; t++)
            for (int l = 0; l < width; l++)
                set(L, body, ACC(o, t, l), l3_fma(L->m, V(L, xv[l]), V(L, wv[o * K + t]), V(L, ACC(o, t, l))));
    L3Expr *dc[MAX_RANK];
    dc[0] = U->n;
    for (int i = 0; i < last; i++) dc[2 + i] = U->prow[i];
    for (int o = 0; o < noc; o++)
        for (int l = 0; l < width; l++)   /* destination order: q*s + t */
            for (int64_t t = 0; t < K; t++) {
                if (q0c >= 0 && !up_inside(U, q0c + l, t)) continue;
                dc[1] = add(L, U->co, I(L, o));
                dc[2 + last] = add(L, mul(L, add(L, q0, I(L, l)), I(L, s)), I(L, t - lo));
                put(L, b, U->ab, dc, V(L, ACC(o, t, l)));
            }
#undef ACC
}

/* The bias (or 0) at destination coordinates dc for noc channels. */
static void up_bias(UpTile *U, L3Block *b, int noc, L3Expr **dc)
{
    for (int o = 0; o < noc; o++) {
        dc[1] = add(U->L, U->co, I(U->L, o));
        put(U->L, b, U->ab, dc, U->bb >= 0 ? load(U->L, U->bb, dc[1]) : F(U->L, 0));
    }
}

static void up_row(UpTile *U, L3Block *b, int noc)
{
    Lo *L = U->L;
    int last = U->last;
    int64_t Sw = U->ss->d[2 + last], Dw = U->ds->d[2 + last], s = U->at->stride[last], K = U->at->kernel[last];
    int64_t lo = U->at->pad.lo[last];
    int width = (int)U->tw;
    while (width > 1 && noc * K * width > 256) width /= 2;
    /* a row some source row reaches: the tiles over the source positions */
    L3Expr *ok = NULL;
    for (int i = 0; i < last; i++) {
        if ((U->ds->d[2 + i] - 1 + U->at->pad.lo[i]) / U->at->stride[i] < U->ss->d[2 + i]) continue;
        L3Expr *c = bin(L, L3_LT, U->qrow[i], I(L, U->ss->d[2 + i]));
        ok = ok ? bin(L, L3_AND, ok, c) : c;
    }
    L3Block *tb = b, *eb = NULL;
    if (ok) {
        L3Stmt *st = l3_if(L->m, b, ok);
        tb = &st->body;
        eb = &st->els;
    }
    int64_t a = -1, e = -1;   /* source positions all of whose taps land inside: a .. e-1 */
    for (int64_t q = 0; q < Sw; q++)
        if (up_inside(U, q, 0) && up_inside(U, q, K - 1)) {
            if (a < 0) a = q;
            e = q + 1;
        }
    int64_t q = 0;
    if (a >= 0 && e - a >= width) {
        for (; q < a; q += width) up_tile(U, tb, noc, I(L, q), q, (int)(a - q < width ? a - q : width));
        q = a;
        int64_t nk = (e - a) / width;
        int v;
        L3Block *lb = loop(L, tb, "qt", nk, &v, 0);
        up_tile(U, lb, noc, add(L, mul(L, V(L, v), I(L, width)), I(L, a)), -1, width);
        q = a + nk * width;
    }
    for (; q < Sw; q += width) up_tile(U, tb, noc, I(L, q), q, (int)(Sw - q < width ? Sw - q : width));
    L3Expr *dc[MAX_RANK];
    dc[0] = U->n;
    for (int i = 0; i < last; i++) dc[2 + i] = U->prow[i];
    int64_t p0 = Sw * s - lo;   /* positions past the last source's taps (output padding) */
    if (p0 < 0) p0 = 0;
    if (p0 < Dw) {
        int pv;
        L3Block *pb = loop(L, tb, "pw", Dw - p0, &pv, L3_VECTORIZE);
        dc[2 + last] = add(L, V(L, pv), I(L, p0));
        up_bias(U, pb, noc, dc);
    }
    if (eb) {
        int pv;
        L3Block *pb = loop(L, eb, "pw", Dw, &pv, L3_VECTORIZE);
        dc[2 + last] = V(L, pv);
        up_bias(U, pb, noc, dc);
    }
    if (U->ab >= 0) row_epilogue(L, b, U->ab, U->n, U->co, U->prow, noc);
}

bool lower_upconv_tiled(Lo *L)
{
    const OpAttrs *at = &L->n->at;
    UpTile U;
    memset(&U, 0, sizeof U);
    U.L = L;
    U.at = at;
    U.ds = tshape(L, L->n->out);
    U.ss = tshape(L, L->n->in[0]);
    int sr = U.ds->rank - 2;
    U.last = sr - 1;
    if (sr < 1 || sr > MAX_SPATIAL) return false;
    for (int i = 0; i < sr; i++)
        if (at->kernel[i] != at->stride[i] || at->dilation[i] != 1 || at->pad.lo[i] < 0 || at->kernel[i] > 8) return false;
    int64_t G = at->groups > 0 ? at->groups : 1, oct;
    U.cpg = U.ss->d[1] / G;
    U.opg = U.ds->d[1] / G;
    tile_shape(sr, &oct, &U.tw);
    if (oct > U.opg) oct = U.opg;
    if (U.cpg < 1 || oct < 1 || oct * at->kernel[U.last] > TILE_MAX_OC * 8) return false;
    U.ws = L->g->tensors[L->g->params[L->n->params[0]].tensor].shape;
    U.x = L->n->in[0];
    U.w = param_buf(L, 0, false);
    U.bb = at->bias ? param_buf(L, 1, false) : -1;
    U.ab = epilogue_buffer(L, conv_accumulator(L));
    int64_t ntiles = (U.opg + oct - 1) / oct, full = U.opg / oct, rem = U.opg % oct;
    int pv;
    L3Block *b = loop(L, &L->k->body, "ntile", U.ds->d[0] * G * ntiles, &pv, L3_PARALLEL);
    U.n = dv(L, V(L, pv), I(L, G * ntiles));
    U.grp = G == 1 ? I(L, 0) : bin(L, L3_MOD, dv(L, V(L, pv), I(L, ntiles)), I(L, G));
    L3Expr *tile = ntiles == 1 ? I(L, 0) : bin(L, L3_MOD, V(L, pv), I(L, ntiles));
    U.col = mul(L, tile, I(L, oct));
    U.co = add(L, mul(L, U.grp, I(L, U.opg)), U.col);
    for (int i = 0; i < U.last; i++) {
        int v;
        b = loop(L, b, i == U.last - 1 ? "ph" : "pd", U.ds->d[2 + i], &v, 0);
        U.prow[i] = V(L, v);
        L3Expr *pe = add(L, V(L, v), I(L, at->pad.lo[i]));
        U.qrow[i] = dv(L, pe, I(L, at->stride[i]));
        U.trow[i] = bin(L, L3_MOD, pe, I(L, at->stride[i]));
    }
    U.n = V(L, local(L, b, "nb", L3_I64, U.n));
    if (G > 1) U.grp = V(L, local(L, b, "grp", L3_I64, U.grp));
    U.col = V(L, local(L, b, "col", L3_I64, U.col));
    U.co = V(L, local(L, b, "co", L3_I64, add(L, mul(L, U.grp, I(L, U.opg)), U.col)));
    for (int i = 0; i < U.last; i++) {
        U.qrow[i] = V(L, local(L, b, "q", L3_I64, U.qrow[i]));
        U.trow[i] = V(L, local(L, b, "t", L3_I64, U.trow[i]));
    }
    if (rem == 0) {
        up_row(&U, b, (int)oct);
    } else {
        L3Stmt *s = l3_if(L->m, b, bin(L, L3_LT, tile, I(L, full)));
        up_row(&U, &s->body, (int)oct);
        up_row(&U, &s->els, (int)rem);
    }
    return true;
}

/* ---- an upconv's input gradient ------------------------------------------------------------------ */

/* The input gradient of an upconv is a convolution of dy with the upconv's
 * weight as it is: dx[n, ci, i] = sum over col, t of
 * dy[n, g*opg + col, i*s + t*dil - lo] * w[ci, col, t], and w[ci][col][t] is
 * laid out as a convolution's w[out][in][t]: the register tiles above with
 * dy as the source and no bias (lower_grad.c's grad_conv; added for
 * lower_sched_grad.c's helper, the tiles themselves unchanged).  false: not
 * a shape the tiles handle (nothing emitted). */
bool lower_upconv_input_grad_tiled(Lo *L, int dy, int w_tensor, int acc_t)
{
    const OpAttrs *at = &L->g->nodes[L->n->at.grad_node].at;
    Tile T;
    int64_t oct;
    if (!tile_setup(&T, L, at, dy, w_tensor, &oct)) return false;
    if (T.ws.rank != T.os->rank || T.ws.d[0] != T.os->d[1] || T.ws.d[1] != T.cpg) return false;
    T.w = buf(L, w_tensor, false, "weight");
    T.bb = -1;
    T.ab = epilogue_buffer(L, acc_t);
    return tiled(L, &T, at->groups > 0 ? at->groups : 1, oct);
}
