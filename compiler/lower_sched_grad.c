/* lower_sched_grad.c — the register-tiled weight gradient of a convolution
 * and of a transposed convolution (upconv), picked by lower_grad.c's
 * grad_conv (NETC_WGRAD_LANES=1 or NETC_CONV_ELEMENTWISE=1: the older
 * schedules there instead).
 *
 * Both are one sum.  With A the tensor whose positions p are summed over
 * and B the tensor read at p*s + t*dil - lo,
 *
 *     dW[a, b, t...] = sum over n and p of A[n, a, p] * B[n, g*Bpg + b, p*s + t*dil - lo]
 *
 * (g = the group of channel a): for a convolution A is dy and B its input x
 * (w[co][ci][t]); for an upconv A is its input x and B is dy (w[ci][col][t]).
 *
 * Schedule.  A task is a tile of `noc` A channels and `nci` B channels
 * (1 x 1 by default, see below; the last tile of a group or concat part may
 * have fewer): it owns the noc x nci x taps weight elements dW[a0 .., b0 ..,
 * *] (no other task writes them, so the result is the same for any number
 * of threads), and the tasks are the parallel loop (CUDA: one thread
 * each).  The sum runs over n and blocks of R consecutive rows (the row
 * axes, all but the last spatial axis, flattened; R * row length is about
 * 2048 positions, so the block's rows of A and B stay in L1 while every tap
 * passes over them): per row tap (runtime loops) and last-axis tap kw
 * (unrolled: one pass each) the block's sum is kept in noc x nci x W
 * register accumulators (W = 32 lanes, fewer for shorter rows), lane l
 * taking the positions w0 + l of each chunk of W positions along the row,
 * so the innermost statements are W independent multiply-adds of a run of
 * A by the run of B shifted by the tap, which LLVM's SLP vectorizer turns
 * into vector FMAs on register accumulators (2 zmm with AVX-512).  Chunks
 * whose every lane reads inside B run as a loop with no bounds tests; the
 * chunks at the row's ends are at constant positions, where each lane knows
 * at compile time whether its tap is inside (outside, it multiplies 0, as
 * zero padding does).  Row taps are tested once per row.
 *
 * Why 1 x 1: the accumulators' only consumer is the lane sum below, and
 * with several channel pairs in one loop LLVM 16's SLP vectorizer (seeded by
 * the loop's phis, there being no stores along the lanes to seed it) bundles
 * the phis of different pairs together, so their operands become gathers
 * (measured: no vector FMAs at 4 x 4 x 16, masked gathers at 2 x 1 x 16 and
 * 4 x 1 x 16).  One pair per task costs two vector loads per FMA, still
 * 3 to 4 times faster than the lane schedule (NETC_WGRAD_LANES=1).
 * NETC_WGRAD_TILE=OCxCIxW selects larger tiles (correct, for experiments).
 *
 * Accuracy: after each block pass every accumulator's W lanes are added
 * pairwise and the result added into the weight element's sum, kept in the
 * gradient's buffer (zeroed when the task starts): a lane sums about
 * 2048 / W terms and a weight element's sum gets one term per n and block,
 * so the float rounding grows with those counts, not with the number of
 * positions (as sum_loops does in lower_internal.h).  The finished sums then
 * go through emit (the kernel's epilogue, if any).
 *
 * A convolution input made by a concat inlined into the kernel is read
 * part by part (the task's B tile picks the part's code), so no lane
 * selects between tensors.  lower_conv_wgrad_tiled returns false for a
 * geometry it does not handle (nothing emitted). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "lower_internal.h"

enum { WG_MAX_OC = 16, WG_MAX_W = 32, WG_MAX_ACC = 512, WG_MAX_PARTS = 16 };

typedef struct {
    int tensor;          /* the tensor these B channels come from */
    int64_t c0, n;       /* channels c0 .. c0+n-1 of B's group are its channels 0 .. n-1 */
    bool whole;          /* B itself (channel g*Bpg + b), not a concat part */
} WPart;

typedef struct {
    Lo *L;
    const OpAttrs *at;
    int ta;                       /* A: summed over its positions */
    const Shape *as, *bs;         /* the shapes of A and B */
    int sr, last;
    int64_t apg, bpg;             /* A and B channels per group */
    int64_t K, s, dl, lo;         /* the last axis's geometry */
    int64_t RT, TR, R, nb;        /* row taps, rows, rows per block, blocks */
    int64_t RTK;                  /* taps per weight row (RT * K) */
    int W;                        /* lanes */
    int ab;                       /* the buffer the sums accumulate in */
    WPart parts[WG_MAX_PARTS];
    int nparts;
    /* while emitting */
    const WPart *part;
    int64_t kw;                   /* the pass's last-axis tap */
    L3Expr *n, *grp, *a0, *b0;    /* batch, group, the tile's first A channel and first B channel in the group */
    L3Expr *bch0;                 /* the tile's first B channel in part->tensor */
    L3Expr *rows[MAX_SPATIAL];    /* A's row coordinates */
    L3Expr *brows[MAX_SPATIAL];   /* B's */
    int acc[WG_MAX_OC][WG_MAX_OC][WG_MAX_W];
} WG;

/* Whether last-axis position p of A reads an in-range B through tap kw. */
static bool wg_inside(const WG *T, int64_t p, int64_t kw)
{
    int64_t q = p * T->s + kw * T->dl - T->lo;
    return q >= 0 && q < T->bs->d[2 + T->last];
}

/* One chunk of the pass's tap: `wd` positions from w0 (w0c: the same as
 * a constant, -1 for a runtime chunk whose every lane is inside), into
 * lanes 0 .. wd-1. */
static void wg_chunk(WG *T, L3Block *b, int noc, int nci, L3Expr *w0, int64_t w0c, int wd)
{
    Lo *L = T->L;
    int last = T->last;
    bool any = w0c < 0;
    for (int l = 0; l < wd && !any; l++) any = wg_inside(T, w0c + l, T->kw);
    if (!any) return;
    L3Expr *ac[MAX_RANK], *bc[MAX_RANK];
    ac[0] = bc[0] = T->n;
    for (int i = 0; i < last; i++) ac[2 + i] = T->rows[i], bc[2 + i] = T->brows[i];
    /* the runs of B, loaded once for all noc channels of A */
    int xv[WG_MAX_OC][WG_MAX_W];
    for (int c = 0; c < nci; c++) {
        bc[1] = add(L, T->bch0, I(L, c));
        for (int l = 0; l < wd; l++) {
            L3Expr *x = F(L, 0);
            if (w0c < 0 || wg_inside(T, w0c + l, T->kw)) {
                bc[2 + last] = add(L, mul(L, add(L, w0, I(L, l)), I(L, T->s)), I(L, T->kw * T->dl - T->lo));
                x = val(L, T->part->tensor, bc);
            }
            xv[c][l] = local(L, b, "x", L3_F32, x);
        }
    }
    for (int o = 0; o < noc; o++) {
        int dv_[WG_MAX_W];
        ac[1] = add(L, T->a0, I(L, o));
        for (int l = 0; l < wd; l++) {
            ac[2 + last] = add(L, w0, I(L, l));
            dv_[l] = local(L, b, "d", L3_F32, val(L, T->ta, ac));
        }
        for (int c = 0; c < nci; c++)
            for (int l = 0; l < wd; l++)
                set(L, b, T->acc[o][c][l], l3_fma(L->m, V(L, dv_[l]), V(L, xv[c][l]), V(L, T->acc[o][c][l])));
    }
}

/* Constant chunks over positions r0 .. r1-1. */
static void wg_const_chunks(WG *T, L3Block *b, int noc, int nci, int64_t r0, int64_t r1)
{
    while (r0 < r1) {
        int64_t wd = r1 - r0 < T->W ? r1 - r0 : T->W;
        wg_chunk(T, b, noc, nci, I(T->L, r0), r0, (int)wd);
        r0 += wd;
    }
}

/* One row for the pass's tap: constant chunks at the ends, the full
 * chunks between them (every lane inside) as a loop. */
static void wg_row(WG *T, L3Block *b, int noc, int nci)
{
    Lo *L = T->L;
    int64_t OW = T->as->d[2 + T->last], W = T->W;
    int64_t a = -1, e = -1;   /* the positions whose tap is inside: a .. e-1 */
    for (int64_t p = 0; p < OW; p++)
        if (wg_inside(T, p, T->kw)) {
            if (a < 0) a = p;
            e = p + 1;
        }
    if (a < 0) return;
    /* a border at least one full chunk wide (so it vectorizes), the full
     * chunks, the rest at constant positions */
    int64_t e1 = a == 0 ? 0 : a > W ? a : W;
    if (e1 > OW) e1 = OW;
    int64_t nk = e > e1 ? (e - e1) / W : 0;
    wg_const_chunks(T, b, noc, nci, 0, e1);
    if (nk > 0) {
        int v;
        L3Block *lb = loop(L, b, "wt", nk, &v, 0);
        wg_chunk(T, lb, noc, nci, add(L, mul(L, V(L, v), I(L, W)), I(L, e1)), -1, (int)W);
    }
    wg_const_chunks(T, b, noc, nci, e1 + nk * W, OW);
}

/* The W lanes of local acc[0..W-1] added pairwise. */
static L3Expr *wg_lanes_sum(WG *T, const int *acc)
{
    Lo *L = T->L;
    L3Expr *h[WG_MAX_W];
    int w = T->W;
    for (int j = 0; j < w; j++) h[j] = V(L, acc[j]);
    while (w > 1) {
        int k = 0;
        for (int j = 0; j + 1 < w; j += 2) h[k++] = add(L, h[j], h[j + 1]);
        if (w % 2) h[k++] = h[w - 1];
        w = k;
    }
    return h[0];
}

/* The flat index of weight element (a0 + o, b0 + c, j). */
static L3Expr *wg_index(WG *T, int o, int c, L3Expr *j)
{
    Lo *L = T->L;
    L3Expr *bc = add(L, mul(L, add(L, T->a0, I(L, o)), I(L, T->bpg)), add(L, T->b0, I(L, c)));
    return add(L, mul(L, bc, I(L, T->RTK)), j);
}

/* The sums of one task: noc A channels from a0 x nci B channels from b0,
 * zeroed, summed over n, the blocks, the row taps and (one pass each) the
 * last axis's taps, then emitted. */
static void wg_task(WG *T, L3Block *b, int noc, int nci)
{
    Lo *L = T->L;
    const OpAttrs *at = T->at;
    int last = T->last;
    for (int o = 0; o < noc; o++)
        for (int c = 0; c < nci; c++) {
            int j;
            L3Block *z = loop(L, b, "z", T->RTK, &j, L3_VECTORIZE);
            l3_store(L->m, z, T->ab, wg_index(T, o, c, V(L, j)), F(L, 0), false);
        }
    int nv, bv;
    L3Block *nb = loop(L, b, "n", T->as->d[0], &nv, 0);
    T->n = V(L, nv);
    L3Block *kb = loop(L, nb, "blk", T->nb, &bv, 0);
    L3Expr *tap[MAX_SPATIAL], *rt = I(L, 0);
    for (int i = 0; i < last; i++) {   /* the row taps */
        int tv;
        kb = loop(L, kb, "t", at->kernel[i], &tv, 0);
        tap[i] = V(L, tv);
        rt = add(L, mul(L, rt, I(L, at->kernel[i])), tap[i]);
    }
    for (T->kw = 0; T->kw < T->K; T->kw++) {   /* one pass per last-axis tap */
        for (int o = 0; o < noc; o++)
            for (int c = 0; c < nci; c++)
                for (int l = 0; l < T->W; l++) T->acc[o][c][l] = local(L, kb, "acc", L3_F32, F(L, 0));
        int rv;
        L3Block *rb = loop(L, kb, "r", T->R, &rv, 0);
        L3Expr *row = add(L, mul(L, V(L, bv), I(L, T->R)), V(L, rv));
        if (T->TR % T->R) rb = &l3_if(L->m, rb, bin(L, L3_LT, row, I(L, T->TR)))->body;
        int64_t below = 1;
        for (int i = last - 1; i >= 0; i--) {
            int64_t d = T->as->d[2 + i];
            L3Expr *c = row;
            if (below > 1) c = dv(L, c, I(L, below));
            if (i > 0) c = bin(L, L3_MOD, c, I(L, d));
            below *= d;
            T->rows[i] = V(L, local(L, rb, i == last - 1 ? "oh" : "od", L3_I64, c));
        }
        L3Expr *ok = NULL;
        for (int i = 0; i < last; i++) {
            L3Expr *p = add(L, sub(L, mul(L, T->rows[i], I(L, at->stride[i])), I(L, at->pad.lo[i])),
                            mul(L, tap[i], I(L, at->dilation[i])));
            T->brows[i] = V(L, local(L, rb, "p", L3_I64, p));
            ok = and_(L, ok, and_(L, le(L, I(L, 0), T->brows[i]), lt(L, T->brows[i], I(L, T->bs->d[2 + i]))));
        }
        if (ok) rb = &l3_if(L->m, rb, ok)->body;
        wg_row(T, rb, noc, nci);
        /* the pass's lanes into the weight elements' sums (elements RTK
         * apart: no two of these stores are neighbours, so LLVM's SLP
         * vectorizer starts from the accumulators, along the lanes) */
        for (int o = 0; o < noc; o++)
            for (int c = 0; c < nci; c++)
                l3_store(L->m, kb, T->ab, wg_index(T, o, c, add(L, mul(L, rt, I(L, T->K)), I(L, T->kw))),
                         wg_lanes_sum(T, T->acc[o][c]), true);
    }
    for (int o = 0; o < noc; o++)
        for (int c = 0; c < nci; c++) {
            int j;
            L3Block *eb = loop(L, b, "j", T->RTK, &j, L3_VECTORIZE);
            L3Expr *flat = wg_index(T, o, c, V(L, j));
            int r = local(L, eb, "dw", L3_F32, load(L, T->ab, flat));
            emitf(L, eb, flat, V(L, r));
        }
}

/* The tasks of one A tile (noc channels from a0) and B tile index bt: the
 * B tiles of every part (nci channels, the last of a part fewer). */
static void wg_btiles(WG *T, L3Block *b, int noc, int64_t nci, L3Expr *bt)
{
    Lo *L = T->L;
    L3Block *pb = b;
    int64_t t0 = 0;
    for (int pi = 0; pi < T->nparts; pi++) {
        const WPart *P = &T->parts[pi];
        int64_t nt = (P->n + nci - 1) / nci, full = P->n / nci, rem = P->n % nci;
        L3Block *here = pb;
        if (pi + 1 < T->nparts) {
            L3Stmt *s = l3_if(L->m, pb, bin(L, L3_LT, bt, I(L, t0 + nt)));
            here = &s->body;
            pb = &s->els;
        }
        T->part = P;
        L3Expr *cb = sub(L, bt, I(L, t0));   /* the tile within the part */
        if (nt > 1) cb = V(L, local(L, here, "cb", L3_I64, cb));
        L3Expr *first = mul(L, cb, I(L, nci));
        T->b0 = V(L, local(L, here, "b0", L3_I64, add(L, first, I(L, P->c0))));
        T->bch0 = P->whole ? V(L, local(L, here, "bc", L3_I64, add(L, mul(L, T->grp, I(L, T->bpg)), T->b0))) : first;
        if (rem == 0) {
            wg_task(T, here, noc, (int)nci);
        } else if (full == 0) {
            wg_task(T, here, noc, (int)rem);
        } else {
            L3Stmt *s = l3_if(L->m, here, bin(L, L3_LT, cb, I(L, full)));
            wg_task(T, &s->body, noc, (int)nci);
            wg_task(T, &s->els, noc, (int)rem);
        }
        t0 += nt;
    }
}

/* The tile: OC A channels x CI B channels x W lanes, 1 x 1 x 32 (see the
 * top of the file: with more than one channel pair LLVM's SLP vectorizer
 * bundles the accumulators across the pairs, into gathers), and the
 * positions per block (2048: 1 x 1 x 32 and 2048 measured fastest of
 * W 16, 32, 64 and blocks 1024 to 4096 on the 3D and 2D convolutions).
 * NETC_WGRAD_TILE=OCxCIxW (OC, CI up to 16, W up to 32, OC*CI*W up to 512)
 * and NETC_WGRAD_BLOCK=positions override them, for experiments. */
static void wg_shape(int64_t *noc, int64_t *nci, int64_t *w, int64_t *blk)
{
    *noc = 1;
    *nci = 1;
    *w = 32;
    *blk = 2048;
    const char *s = getenv("NETC_WGRAD_TILE");
    long a, b, c;
    char tail;
    if (s && sscanf(s, "%ldx%ldx%ld%c", &a, &b, &c, &tail) == 3 && a >= 1 && a <= WG_MAX_OC && b >= 1 &&
        b <= WG_MAX_OC && c >= 1 && c <= WG_MAX_W && a * b * c <= WG_MAX_ACC) {
        *noc = a;
        *nci = b;
        *w = c;
    }
    s = getenv("NETC_WGRAD_BLOCK");
    if (s && atol(s) >= 1) *blk = atol(s);
}

bool lower_conv_wgrad_tiled(Lo *L)
{
    const Node *f = &L->g->nodes[L->n->at.grad_node];
    const OpAttrs *at = &f->at;
    bool up = f->op == OP_UPCONV;
    if (f->op != OP_CONV && !up) return false;
    int dy = L->n->in[0], x = L->n->in[1];
    int wt = L->n->in[1 + f->nin];   /* the forward's weight */
    int acc_t = conv_accumulator(L);
    if (acc_t < 0) return false;
    WG T;
    memset(&T, 0, sizeof T);
    T.L = L;
    T.at = at;
    T.ta = up ? x : dy;
    int tb = up ? dy : x;
    T.as = tshape(L, T.ta);
    T.bs = tshape(L, tb);
    const Shape *ws = tshape(L, wt);
    T.sr = T.as->rank - 2;
    T.last = T.sr - 1;
    if (T.sr < 1 || T.sr > MAX_SPATIAL || T.bs->rank != T.as->rank || ws->rank != T.as->rank) return false;
    if (!shape_equal(tshape(L, L->n->out), ws)) return false;
    int64_t G = at->groups > 0 ? at->groups : 1;
    T.apg = T.as->d[1] / G;
    T.bpg = T.bs->d[1] / G;
    if (T.apg < 1 || T.bpg < 1 || ws->d[0] != T.as->d[1] || ws->d[1] != T.bpg) return false;
    T.K = at->kernel[T.last];
    T.s = at->stride[T.last];
    T.dl = at->dilation[T.last];
    T.lo = at->pad.lo[T.last];
    /* B is read at p*s + t: with a last-axis stride the runs of B are
     * strided, which LLVM gathers (an upconv's 2x2 stride 2, U-Nets' up
     * convolutions, measured 1.5x slower than the elementwise schedule), so
     * those stay with the older schedules (NETC_WGRAD_STRIDED=1: here) */
    if (T.s != 1 && !getenv("NETC_WGRAD_STRIDED")) return false;
    T.RT = 1;
    T.TR = 1;
    for (int i = 0; i < T.last; i++) {
        T.RT *= at->kernel[i];
        T.TR *= T.as->d[2 + i];
    }
    T.RTK = T.RT * T.K;
    int64_t OW = T.as->d[2 + T.last], noc, nci, w, blk;
    if (T.K < 1 || T.K > 16 || T.TR < 1 || OW < 1) return false;
    wg_shape(&noc, &nci, &w, &blk);
    /* a pass's stores must not be neighbours in memory (see wg_task) */
    if (T.RTK == 1) nci = 1;
    if (T.RTK * T.bpg == 1) noc = 1;
    if (noc > T.apg) noc = T.apg;
    if (w > OW) w = OW;
    T.W = (int)w;
    T.R = blk / OW;
    if (T.R < 1) T.R = 1;
    if (T.R > T.TR) T.R = T.TR;
    for (int64_t r = T.R; r >= (T.R + 1) / 2; r--)   /* a divisor of the rows near R: no row test */
        if (T.TR % r == 0) {
            T.R = r;
            break;
        }
    T.nb = (T.TR + T.R - 1) / T.R;
    T.ab = buf(L, acc_t, true, "acc");
    T.parts[T.nparts++] = (WPart){ tb, 0, T.bpg, true };
    /* a convolution's input made by a concat inlined into this kernel: its parts */
    int p = L->g->tensors[tb].producer;
    if (!up && L->fp && G == 1 && p >= 0 && p != L->index && L->in_kern[p] && L->g->nodes[p].op == OP_CONCAT &&
        L->g->nodes[p].nin <= WG_MAX_PARTS) {
        int64_t c0 = 0;
        T.nparts = 0;
        for (int j = 0; j < L->g->nodes[p].nin; j++) {
            int t = L->g->nodes[p].in[j];
            T.parts[T.nparts++] = (WPart){ t, c0, tshape(L, t)->d[1], false };
            c0 += tshape(L, t)->d[1];
        }
    }
    int64_t nbt = 0;   /* B tiles over the parts */
    for (int i = 0; i < T.nparts; i++) {
        if (nci > T.parts[i].n && T.nparts == 1) nci = T.parts[i].n;
        nbt += (T.parts[i].n + nci - 1) / nci;
    }
    /* tasks: (group, A tile, B tile), the B tile fastest (neighbouring
     * tasks share the A tile's rows) */
    int64_t nat = (T.apg + noc - 1) / noc, full = T.apg / noc, rem = T.apg % noc;
    int pv;
    L3Block *b = loop(L, &L->k->body, "task", G * nat * nbt, &pv, L3_PARALLEL);
    L3Expr *bt = nbt == 1 ? I(L, 0) : V(L, local(L, b, "bt", L3_I64, bin(L, L3_MOD, V(L, pv), I(L, nbt))));
    L3Expr *tg = dv(L, V(L, pv), I(L, nbt));
    L3Expr *tile = nat == 1 ? I(L, 0) : V(L, local(L, b, "at", L3_I64, bin(L, L3_MOD, tg, I(L, nat))));
    T.grp = G == 1 ? I(L, 0) : V(L, local(L, b, "grp", L3_I64, dv(L, tg, I(L, nat))));
    T.a0 = V(L, local(L, b, "a0", L3_I64, add(L, mul(L, T.grp, I(L, T.apg)), mul(L, tile, I(L, noc)))));
    if (rem == 0) {
        wg_btiles(&T, b, (int)noc, nci, bt);
    } else if (full == 0) {
        wg_btiles(&T, b, (int)rem, nci, bt);
    } else {
        L3Stmt *s = l3_if(L->m, b, bin(L, L3_LT, tile, I(L, full)));
        wg_btiles(&T, &s->body, (int)noc, nci, bt);
        wg_btiles(&T, &s->els, (int)rem, nci, bt);
    }
    return true;
}
