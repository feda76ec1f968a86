/* lower_loss.c — L3 lowering of the losses (ce, dice, focal: forward and
 * the gradient w.r.t. the logits), with class weights, an ignore label, a
 * voxel weight map and labels resampled to each output (runtime/ref_loss.c
 * and ref_backward.c are the definitions). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>

#include "lower_internal.h"

/* ---- losses ---------------------------------------------------------------------------------------- */

typedef struct {
    const Shape *xs, *ls;
    int tx, lab, wm;        /* the logits tensor; buffers (wm -1: no weight map) */
    int64_t N, C, S[MAX_SPATIAL], sr, sp;
} LossIO;

/* The label (and weight map) index for logits position (n, spatial coords):
 * an integer multiple is downsampled (every k-th), any other larger size
 * centre-cropped (ref_prepare_labels). */
static L3Expr *label_index(Lo *L, const LossIO *io, L3Expr *n, L3Expr *const *sc)
{
    L3Expr *c[MAX_RANK];
    c[0] = n;
    c[1] = I(L, 0);
    for (int i = 0; i < io->sr; i++) {
        int64_t Lz = io->ls->d[2 + i], S = io->S[i];
        c[2 + i] = Lz % S == 0 ? mul(L, sc[i], I(L, Lz / S)) : add(L, sc[i], I(L, (Lz - S) / 2));
    }
    return lin(L, io->ls, c);
}

static LossIO loss_io(Lo *L, const Node *lossnode, int t_logits, int t_labels, int t_wmap)
{
    LossIO io;
    memset(&io, 0, sizeof io);
    (void)lossnode;
    io.xs = tshape(L, t_logits);
    io.ls = tshape(L, t_labels);
    io.tx = t_logits;
    io.lab = buf(L, t_labels, false, "labels");
    io.wm = t_wmap >= 0 ? buf(L, t_wmap, false, "weightmap") : -1;
    io.N = io.xs->d[0];
    io.C = io.xs->d[1];
    io.sr = io.xs->rank - 2;
    io.sp = 1;
    for (int i = 0; i < io.sr; i++) io.S[i] = io.xs->d[2 + i], io.sp *= io.S[i];
    return io;
}

/* Loops over n and the spatial positions; *n, sc[] the coordinates, *p the
 * flat spatial index.  The nacc sums acc[] (locals declared in `in`) are
 * blocked (sum_loops: a partial per n, per plane, per row, so a loss over a
 * large volume rounds with the extents, not with every voxel one after
 * another); on return acc[] names the partials to accumulate into. */
static L3Block *voxels(Lo *L, L3Block *in, const LossIO *io, L3Expr **n, L3Expr **sc, L3Expr **p, bool n_loop, int64_t fixed_n,
                       int nacc, int *acc)
{
    int64_t ext[MAX_SPATIAL + 1];
    const char *nms[MAX_SPATIAL + 1];
    unsigned ann[MAX_SPATIAL + 1];
    int vars[MAX_SPATIAL + 1], nl = 0;
    if (n_loop) ext[nl] = io->N, nms[nl] = "n", ann[nl++] = 0;
    for (int i = 0; i < io->sr; i++) ext[nl] = io->S[i], nms[nl] = "s", ann[nl++] = i == io->sr - 1 ? L3_VECTORIZE : 0;
    L3Block *b = sum_loops(L, in, nl, ext, nms, ann, vars, nacc, acc);
    *n = n_loop ? V(L, vars[0]) : I(L, fixed_n);
    L3Expr *flat = NULL;
    for (int i = 0; i < io->sr; i++) {
        sc[i] = V(L, vars[(n_loop ? 1 : 0) + i]);
        flat = flat ? add(L, mul(L, flat, I(L, io->S[i])), sc[i]) : sc[i];
    }
    *p = flat ? flat : I(L, 0);
    return b;
}

static L3Expr *xat(Lo *L, const LossIO *io, L3Expr *n, L3Expr *c, L3Expr *p)
{
    return valf(L, io->tx, add(L, mul(L, add(L, mul(L, n, I(L, io->C)), c), I(L, io->sp)), p));
}

/* In block b at voxel (n, p): locals y (label, I64), keep (bool expr), m
 * (voxel weight), lse (log-sum-exp over channels).  Returns the block to
 * continue in (inside `if keep`). */
typedef struct { int y, mw, lse; } Vox;
static L3Block *voxel_setup(Lo *L, L3Block *b, const LossIO *io, const OpAttrs *at, L3Expr *n, L3Expr *const *sc,
                            L3Expr *p, Vox *v, bool want_lse)
{
    L3Expr *li = label_index(L, io, n, sc);
    v->y = local(L, b, "y", L3_I64, l3_cast(L->m, L3_I64, ld(L, io->lab, li)));
    /* labels outside [0, C) count as ignored (the data pipeline validates them) */
    L3Expr *keep = and_(L, le(L, I(L, 0), V(L, v->y)), lt(L, V(L, v->y), I(L, io->C)));
    if (at->ignore >= 0) keep = and_(L, keep, bin(L, L3_NE, V(L, v->y), I(L, at->ignore)));
    b = &l3_if(L->m, b, keep)->body;
    v->mw = local(L, b, "mw", L3_F32, io->wm >= 0 ? ld(L, io->wm, li) : F(L, 1));
    v->lse = -1;
    if (want_lse) {
        int mx = local(L, b, "mx", L3_F32, F(L, -INFINITY)), cv;
        L3Block *cb = loop(L, b, "c", io->C, &cv, 0);
        set(L, cb, mx, bin(L, L3_MAX, V(L, mx), xat(L, io, n, V(L, cv), p)));
        int s = local(L, b, "se", L3_F32, F(L, 0));
        cb = loop(L, b, "c", io->C, &cv, 0);
        accum(L, cb, s, ex(L, sub(L, xat(L, io, n, V(L, cv), p), V(L, mx))));
        v->lse = local(L, b, "lse", L3_F32, add(L, V(L, mx), l3_un(L->m, L3_LOG, V(L, s))));
    }
    return b;
}

/* class weight w[y] as a select chain (a handful of classes) */
static L3Expr *class_weight(Lo *L, const OpAttrs *at, L3Expr *y)
{
    if (!at->nweights) return F(L, 1);
    L3Expr *e = F(L, at->weights[at->nweights - 1]);
    for (int c = at->nweights - 2; c >= 0; c--) e = sel(L, bin(L, L3_EQ, y, I(L, c)), F(L, at->weights[c]), e);
    return e;
}

/* focal's per-voxel factor and loss: l = -a (1 - pt)^g log pt */
static L3Expr *alpha_t(Lo *L, const OpAttrs *at, L3Expr *y)
{
    return sel(L, le(L, I(L, 1), y), F(L, at->alpha), F(L, 1 - at->alpha));
}
static L3Expr *powg(Lo *L, L3Expr *base, double g)
{
    if (g == 0) return F(L, 1);
    if (g == 1) return base;
    if (g == 2) return mul(L, base, base);
    /* base^g = exp(g log base), 0 at base 0 */
    return sel(L, lt(L, F(L, 0), base), ex(L, mul(L, F(L, g), l3_un(L->m, L3_LOG, base))), F(L, 0));
}

/* dice statistics for row r (n fixed, or every n for batch dice) and class c
 * into locals tp, fp, fn. */
static void dice_stats(Lo *L, L3Block *b, const LossIO *io, const OpAttrs *at, int64_t row, int64_t c, int tp, int fp, int fn)
{
    for (int64_t n = at->batch_dice ? 0 : row; n < (at->batch_dice ? io->N : row + 1); n++) {
        L3Expr *nn, *sc[MAX_SPATIAL], *p;
        int a[SUM_MAX_ACC] = { tp, fp, fn };
        L3Block *vb = voxels(L, b, io, &nn, sc, &p, false, n, 3, a);
        Vox v;
        vb = voxel_setup(L, vb, io, at, nn, sc, p, &v, true);
        L3Expr *pc = ex(L, sub(L, xat(L, io, nn, I(L, c), p), V(L, v.lse)));
        int pcv = local(L, vb, "pc", L3_F32, pc);
        L3Expr *yc = sel(L, bin(L, L3_EQ, V(L, v.y), I(L, c)), F(L, 1), F(L, 0));
        int ycv = local(L, vb, "yc", L3_F32, yc);
        accum(L, vb, a[0], mul(L, V(L, v.mw), mul(L, V(L, pcv), V(L, ycv))));
        accum(L, vb, a[1], mul(L, V(L, v.mw), mul(L, V(L, pcv), sub(L, F(L, 1), V(L, ycv)))));
        accum(L, vb, a[2], mul(L, V(L, v.mw), mul(L, sub(L, F(L, 1), V(L, pcv)), V(L, ycv))));
    }
}

/* Forward loss (L->n is the loss node) or its logits gradient (L->n is the
 * grad node of a loss node). */
static bool loss_common(Lo *L, bool grad)
{
    const Node *ln = grad ? fwd(L) : L->n;
    const OpAttrs *at = &ln->at;
    int tl = grad ? t_x(L, 0) : ln->in[0], tb = grad ? t_x(L, 1) : ln->in[1];
    int tw = ln->nin > 2 ? (grad ? t_x(L, 2) : ln->in[2]) : -1;
    LossIO io = loss_io(L, ln, tl, tb, tw);
    int o = grad ? out_buf(L) : -1;   /* the forward loss goes through emit */
    L3Block *top = &L->k->body;
    int64_t rows = at->batch_dice ? 1 : io.N;
    if (ln->op == OP_DICE) {
        int64_t c0 = at->background ? 0 : 1, cnt = (io.C - c0) * rows;
        /* per (row, class): 1/dd and dc/dd (gradient) or the sum of dc (forward) */
        int *inv = calloc((size_t)(rows * io.C), sizeof(int)), *dcdd = calloc((size_t)(rows * io.C), sizeof(int));
        int sum = grad ? -1 : local(L, top, "dsum", L3_F32, F(L, 0));
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < io.C; c++) {
                if (c < c0) continue;
                int tp = local(L, top, "tp", L3_F32, F(L, 0)), fp = local(L, top, "fp", L3_F32, F(L, 0)),
                    fn = local(L, top, "fn", L3_F32, F(L, 0));
                dice_stats(L, top, &io, at, r, c, tp, fp, fn);
                L3Expr *dd = add(L, add(L, add(L, mul(L, F(L, 2), V(L, tp)), V(L, fp)), V(L, fn)), F(L, at->smooth));
                int ddv = local(L, top, "dd", L3_F32, dd);
                L3Expr *clamp = lt(L, F(L, 1e-8), V(L, ddv));   /* !clamp when dd <= 1e-8 */
                int ddc = local(L, top, "ddc", L3_F32, sel(L, clamp, V(L, ddv), F(L, 1e-8)));
                int dc = local(L, top, "dc", L3_F32, dv(L, add(L, mul(L, F(L, 2), V(L, tp)), F(L, at->smooth)), V(L, ddc)));
                if (!grad) {
                    accum(L, top, sum, V(L, dc));
                    continue;
                }
                inv[r * io.C + c] = local(L, top, "rinv", L3_F32, dv(L, F(L, 1), V(L, ddc)));
                dcdd[r * io.C + c] = local(L, top, "rdc", L3_F32, sel(L, clamp, dv(L, V(L, dc), V(L, ddc)), F(L, 0)));
            }
        if (!grad) {
            emitf(L, top, I(L, 0), dv(L, l3_un(L->m, L3_NEG, V(L, sum)), F(L, (double)cnt)));
            free(inv);
            free(dcdd);
            return true;
        }
        int go = local(L, top, "go", L3_F32, valf(L, t_dy(L), I(L, 0)));
        zero(L, o, numel0(io.xs));
        for (int64_t n = 0; n < io.N; n++) {
            int64_t r = at->batch_dice ? 0 : n;
            L3Expr *nn, *sc[MAX_SPATIAL], *p;
            L3Block *vb = voxels(L, top, &io, &nn, sc, &p, false, n, 0, NULL);
            Vox v;
            vb = voxel_setup(L, vb, &io, at, nn, sc, p, &v, true);
            int gl[64], pcs[64];
            if (io.C > 64) { free(inv); free(dcdd); return false; }
            int dot = local(L, vb, "dot", L3_F32, F(L, 0));
            for (int64_t c = 0; c < io.C; c++) {
                pcs[c] = local(L, vb, "pc", L3_F32, ex(L, sub(L, xat(L, &io, nn, I(L, c), p), V(L, v.lse))));
                L3Expr *g = F(L, 0);
                if (c >= c0) {
                    L3Expr *two = sel(L, bin(L, L3_EQ, V(L, v.y), I(L, c)), F(L, 2), F(L, 0));
                    g = mul(L, mul(L, l3_un(L->m, L3_NEG, V(L, v.mw)), dv(L, V(L, go), F(L, (double)cnt))),
                            sub(L, mul(L, two, V(L, inv[r * io.C + c])), V(L, dcdd[r * io.C + c])));
                }
                gl[c] = local(L, vb, "gl", L3_F32, g);
                set(L, vb, dot, l3_fma(L->m, V(L, gl[c]), V(L, pcs[c]), V(L, dot)));
            }
            for (int64_t c = 0; c < io.C; c++) {
                L3Expr *idx = add(L, mul(L, add(L, mul(L, nn, I(L, io.C)), I(L, c)), I(L, io.sp)), p);
                l3_store(L->m, vb, o, idx, mul(L, V(L, pcs[c]), sub(L, V(L, gl[c]), V(L, dot))), false);
            }
        }
        free(inv);
        free(dcdd);
        return true;
    }
    /* ce, focal: num / den over kept voxels */
    int num = grad ? -1 : local(L, top, "num", L3_F32, F(L, 0)), den = local(L, top, "den", L3_F32, F(L, 0));
    {
        L3Expr *nn, *sc[MAX_SPATIAL], *p;
        int a[SUM_MAX_ACC] = { den, num };
        L3Block *vb = voxels(L, top, &io, &nn, sc, &p, true, 0, grad ? 1 : 2, a);
        int pden = a[0], pnum = a[1];
        Vox v;
        vb = voxel_setup(L, vb, &io, at, nn, sc, p, &v, !grad);
        L3Expr *y = V(L, v.y);
        if (ln->op == OP_CE) {
            int w = local(L, vb, "w", L3_F32, mul(L, V(L, v.mw), class_weight(L, at, y)));
            if (!grad) accum(L, vb, pnum, mul(L, l3_un(L->m, L3_NEG, V(L, w)), sub(L, xat(L, &io, nn, y, p), V(L, v.lse))));
            accum(L, vb, pden, V(L, w));
        } else {
            if (!grad) {
                int lpt = local(L, vb, "lpt", L3_F32, sub(L, xat(L, &io, nn, y, p), V(L, v.lse)));
                L3Expr *pt = ex(L, V(L, lpt));
                accum(L, vb, pnum, mul(L, l3_un(L->m, L3_NEG, mul(L, V(L, v.mw), alpha_t(L, at, y))),
                                       mul(L, powg(L, sub(L, F(L, 1), pt), at->gamma), V(L, lpt))));
            }
            accum(L, vb, pden, V(L, v.mw));
        }
    }
    if (!grad) {
        emitf(L, top, I(L, 0), dv(L, V(L, num), V(L, den)));
        return true;
    }
    int scale = local(L, top, "gscale", L3_F32, dv(L, valf(L, t_dy(L), I(L, 0)), V(L, den)));
    zero(L, o, numel0(io.xs));
    L3Expr *nn, *sc[MAX_SPATIAL], *p;
    L3Block *vb = voxels(L, top, &io, &nn, sc, &p, true, 0, 0, NULL);
    Vox v;
    vb = voxel_setup(L, vb, &io, at, nn, sc, p, &v, true);
    L3Expr *y = V(L, v.y);
    int fac;
    if (ln->op == OP_CE) {
        fac = local(L, vb, "fac", L3_F32, mul(L, mul(L, V(L, v.mw), class_weight(L, at, y)), V(L, scale)));
    } else {   /* dL = -a (1-pt)^g + a g pt log pt (1-pt)^(g-1), times -(dx_c = [c=y] - p_c) below */
        int lpt = local(L, vb, "lpt", L3_F32, sub(L, xat(L, &io, nn, y, p), V(L, v.lse)));
        int pt = local(L, vb, "pt", L3_F32, ex(L, V(L, lpt)));
        int a = local(L, vb, "a", L3_F32, alpha_t(L, at, y));
        L3Expr *omp = sub(L, F(L, 1), V(L, pt));
        L3Expr *dl = mul(L, l3_un(L->m, L3_NEG, V(L, a)), powg(L, omp, at->gamma));
        if (at->gamma != 0)
            dl = add(L, dl, sel(L, lt(L, F(L, 0), omp),
                                mul(L, mul(L, mul(L, V(L, a), F(L, at->gamma)), mul(L, V(L, pt), V(L, lpt))), powg(L, omp, at->gamma - 1)),
                                F(L, 0)));
        /* gradient w.r.t. x_c is dl * ([c = y] - p_c): written as fac * (p_c - [c = y]) with fac = -dl */
        fac = local(L, vb, "fac", L3_F32, l3_un(L->m, L3_NEG, mul(L, mul(L, dl, V(L, v.mw)), V(L, scale))));
    }
    int cv;
    L3Block *cb = loop(L, vb, "c", io.C, &cv, 0);
    L3Expr *pc = ex(L, sub(L, xat(L, &io, nn, V(L, cv), p), V(L, v.lse)));
    L3Expr *yc = sel(L, bin(L, L3_EQ, V(L, cv), y), F(L, 1), F(L, 0));
    L3Expr *idx = add(L, mul(L, add(L, mul(L, nn, I(L, io.C)), V(L, cv)), I(L, io.sp)), p);
    l3_store(L->m, cb, o, idx, mul(L, V(L, fac), sub(L, pc, yc)), false);
    return true;
}

bool lower_loss_grad(Lo *L) { return loss_common(L, true); }

bool lower_loss(Lo *L, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    return loss_common(L, false);
}

