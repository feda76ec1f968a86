/* lower_grad.c — L3 lowering of the training-step nodes: `grad` nodes (one
 * operand's vector-Jacobian product), the losses (forward and gradient),
 * the loss seed (`ones`) and the optimizer updates.
 *
 * The formulas are those of runtime/ref_backward.c, ref_loss.c and
 * ref_optim.c (proven against PyTorch).  Where the gradient is a gather
 * (every output element computed from its own inputs: elementwise ops,
 * convolution input and weight gradients, normalization) the outer loop is
 * marked parallel; where it is a scatter (pool and upsample gradients,
 * reflect/replicate padding) the kernel zeroes its output and accumulates
 * serially, with no parallel annotation, so every backend stays correct.
 *
 * A grad node's inputs are: dy, the forward node's inputs, its parameters,
 * its output (compiler/autodiff.c).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>

#include "lower_internal.h"

/* ---- elementwise, softmax, add/mul ---------------------------------------------------------------- */

static bool grad_pointwise(Lo *L, char *err, size_t errlen)
{
    const Node *f = fwd(L);
    const OpAttrs *at = &f->at;
    int k = L->n->at.grad_operand;
    const Shape *xs = tshape(L, t_x(L, 0));
    if (f->op == OP_PRELU && k == 1) {   /* d weight[c] = sum over x < 0 of dy * x */
        int w_rows = at->shared ? 1 : (int)xs->d[1];
        int cv;
        L3Block *b = loop(L, &L->k->body, "c", w_rows, &cv, L3_PARALLEL);
        int acc = local(L, b, "acc", L3_F32, F(L, 0));
        L3Expr *c[MAX_RANK];
        int64_t ext[MAX_RANK];   /* blocked over the summed axes (sum_loops) */
        const char *nms[MAX_RANK];
        unsigned ann[MAX_RANK];
        int rv[MAX_RANK], ax[MAX_RANK], nr = 0;
        for (int i = 0; i < xs->rank; i++) {
            if (i == 1 && !at->shared) { c[1] = V(L, cv); continue; }
            ext[nr] = xs->d[i], nms[nr] = "i", ann[nr] = i == xs->rank - 1 ? L3_VECTORIZE : 0, ax[nr++] = i;
        }
        int a[SUM_MAX_ACC] = { acc };
        L3Block *in = sum_loops(L, b, nr, ext, nms, ann, rv, 1, a);
        for (int q = 0; q < nr; q++) c[ax[q]] = V(L, rv[q]);
        L3Expr *xi = val(L, t_x(L, 0), c);
        accum(L, in, a[0], sel(L, lt(L, xi, F(L, 0)), mul(L, val(L, t_dy(L), c), xi), F(L, 0)));
        emitf(L, b, V(L, cv), V(L, acc));
        return true;
    }
    L3Expr *c[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, xs, c);
    L3Expr *v = val(L, t_x(L, 0), c), *d = val(L, t_dy(L), c), *r;
    switch (f->op) {
    case OP_SCALE: r = mul(L, d, F(L, at->factor)); break;
    case OP_RELU: r = sel(L, lt(L, F(L, 0), v), d, F(L, 0)); break;
    case OP_LEAKY_RELU: r = sel(L, le(L, F(L, 0), v), d, mul(L, d, F(L, at->slope))); break;
    case OP_PRELU: {
        int pw = b_p(L, 0, "weight");
        L3Expr *a = ld(L, pw, at->shared || xs->rank < 2 ? I(L, 0) : c[1]);
        r = sel(L, le(L, F(L, 0), v), d, mul(L, a, d));
        break;
    }
    case OP_ELU: r = sel(L, lt(L, F(L, 0), v), d, mul(L, d, mul(L, F(L, at->alpha), ex(L, v)))); break;
    case OP_SIGMOID: {
        int s = local(L, b, "s", L3_F32, dv(L, F(L, 1), add(L, F(L, 1), ex(L, l3_un(L->m, L3_NEG, v)))));
        r = mul(L, d, mul(L, V(L, s), sub(L, F(L, 1), V(L, s))));
        break;
    }
    case OP_TANH: {
        int t = local(L, b, "t", L3_F32, l3_un(L->m, L3_TANH, v));
        r = mul(L, d, sub(L, F(L, 1), mul(L, V(L, t), V(L, t))));
        break;
    }
    case OP_DROPOUT: r = L->training ? dropout_value(L, L->n->at.grad_node, xs, c, d) : d; break;   /* the forward's mask */
    default:
        snprintf(err, errlen, "%s: no gradient lowering for %s", L->n->name, op_table[f->op].name);
        return false;
    }
    emit(L, b, c, r);
    return true;
}

static bool grad_softmax(Lo *L)
{
    const Shape *xs = tshape(L, t_x(L, 0));
    int64_t N = xs->d[0], C = xs->d[1], sp = numel0(xs) / (N * C);
    int dy = t_dy(L), y = t_y(L);
    int nv, pv, cv;
    L3Block *b = loop(L, &L->k->body, "n", N, &nv, L3_PARALLEL);
    b = loop(L, b, "p", sp, &pv, L3_VECTORIZE);
    #define AT(cc) add(L, mul(L, add(L, mul(L, V(L, nv), I(L, C)), (cc)), I(L, sp)), V(L, pv))
    int dot = local(L, b, "dot", L3_F32, F(L, 0));
    L3Block *cb = loop(L, b, "c", C, &cv, 0);
    accum(L, cb, dot, mul(L, valf(L, dy, AT(V(L, cv))), valf(L, y, AT(V(L, cv)))));
    cb = loop(L, b, "c", C, &cv, 0);
    emitf(L, cb, AT(V(L, cv)), mul(L, valf(L, y, AT(V(L, cv))), sub(L, valf(L, dy, AT(V(L, cv))), V(L, dot))));
    #undef AT
    return true;
}

/* add / mul: operand j gets dy (times the other factors) summed over the
 * axes it was broadcast along. */
static bool grad_add_mul(Lo *L)
{
    const Node *f = fwd(L);
    int j = L->n->at.grad_operand;
    const Shape *os = tshape(L, f->out), *js = tshape(L, t_x(L, j));
    L3Expr *c[MAX_RANK], *oc[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, js, c);
    int acc = local(L, b, "acc", L3_F32, F(L, 0));
    /* the reduced axes: blocked (sum_loops) */
    int64_t ext[MAX_RANK];
    const char *nms[MAX_RANK];
    int rv[MAX_RANK], ax[MAX_RANK], nr = 0;
    for (int i = 0; i < os->rank; i++) {
        bool red = js->rank == 0 || (js->d[i] == 1 && os->d[i] != 1);
        if (!red) { oc[i] = c[i]; continue; }
        ext[nr] = os->d[i], nms[nr] = "r", ax[nr++] = i;
    }
    int a[SUM_MAX_ACC] = { acc };
    L3Block *in = sum_loops(L, b, nr, ext, nms, NULL, rv, 1, a);
    for (int q = 0; q < nr; q++) oc[ax[q]] = V(L, rv[q]);
    L3Expr *d = val(L, t_dy(L), oc);
    for (int i = 0; i < f->nin; i++)
        if (f->op == OP_MUL && i != j) d = mul(L, d, val(L, t_x(L, i), bcoords(L, tshape(L, t_x(L, i)), os, oc)));
    accum(L, in, a[0], d);
    if (js->rank == 0) emitf(L, b, I(L, 0), V(L, acc));
    else emit(L, b, c, V(L, acc));
    return true;
}

/* ---- movement ------------------------------------------------------------------------------------ */

static bool grad_movement(Lo *L)
{
    const Node *f = fwd(L);
    const OpAttrs *at = &f->at;
    int j = L->n->at.grad_operand;
    const Shape *os = tshape(L, f->out), *is = tshape(L, t_x(L, j));
    int o = out_buf(L);
    L3Expr *c[MAX_RANK], *oc[MAX_RANK];
    if (f->op == OP_PAD && at->mode != 0) {   /* reflect / replicate: scatter */
        zero(L, o, numel0(is));
        L3Block *b = serial_over(L, &L->k->body, os, c);
        L3Expr *ic[MAX_RANK];
        for (int i = 0; i < os->rank; i++) {
            if (i < 2) { ic[i] = c[i]; continue; }
            int64_t nlen = is->d[i];
            L3Expr *s = sub(L, c[i], I(L, at->pad.lo[i - 2]));
            if (at->mode == 2) ic[i] = bin(L, L3_MIN, bin(L, L3_MAX, s, I(L, 0)), I(L, nlen - 1));
            else ic[i] = sel(L, lt(L, s, I(L, 0)), l3_un(L->m, L3_NEG, s),
                             sel(L, lt(L, s, I(L, nlen)), s, sub(L, I(L, 2 * (nlen - 1)), s)));
        }
        l3_store(L->m, b, o, lin(L, is, ic), val(L, t_dy(L), c), true);
        return true;
    }
    L3Block *b = loops_over(L, &L->k->body, is, c);
    L3Expr *ok = NULL;
    for (int i = 0; i < is->rank; i++) oc[i] = c[i];
    if (f->op == OP_CONCAT) {
        int64_t c0 = 0;
        for (int i = 0; i < j; i++) c0 += tshape(L, t_x(L, i))->d[1];
        oc[1] = add(L, c[1], I(L, c0));
    } else if (f->op == OP_CROP) {   /* input position i came from output i - lo, if inside */
        for (int i = 2; i < is->rank; i++) {
            oc[i] = sub(L, c[i], I(L, at->pad.lo[i - 2]));
            ok = and_(L, ok, and_(L, le(L, I(L, 0), oc[i]), lt(L, oc[i], I(L, os->d[i]))));
            oc[i] = sel(L, ok, oc[i], I(L, 0));
        }
    } else {   /* zero pad: output i + lo */
        for (int i = 2; i < is->rank; i++) oc[i] = add(L, c[i], I(L, at->pad.lo[i - 2]));
    }
    L3Expr *v = val(L, t_dy(L), oc);
    if (ok) v = sel(L, ok, v, F(L, 0));
    emit(L, b, c, v);
    return true;
}

/* ---- convolution ---------------------------------------------------------------------------------- */

/* A convolution's weight gradient, vectorizable: per weight row (co, ci,
 * row taps) and last-axis tap kw (unrolled), the sum over n, output rows and
 * exactly the in-image positions of the last axis, kept in LANES
 * independent accumulators (the innermost statements are LANES unrolled
 * multiply-adds on consecutive positions, which vectorizers turn into one
 * vector FMA), blocked per n and per plane (each lane's partial sum added
 * into the level above after each loop) and added pairwise at the end.  The
 * order of the sum differs from the reference's; the tolerance covers it. */
#define LANES 8
static bool conv_weight_grad_lanes(Lo *L, int dy, int x, const Shape *ws)
{
    const Node *f = fwd(L);
    const OpAttrs *at = &f->at;
    const Shape *os = tshape(L, f->out), *is = tshape(L, t_x(L, 0));
    int sr = os->rank - 2, last = sr - 1;
    int64_t G = at->groups > 0 ? at->groups : 1, cpg = is->d[1] / G, opg = os->d[1] / G;
    int pv;
    L3Block *b = loop(L, &L->k->body, "cc", ws->d[0] * ws->d[1], &pv, L3_PARALLEL);
    L3Expr *wc[MAX_RANK];
    wc[0] = dv(L, V(L, pv), I(L, ws->d[1]));
    wc[1] = bin(L, L3_MOD, V(L, pv), I(L, ws->d[1]));
    L3Block *tb = b;
    for (int i = 0; i < last; i++) {
        int tv;
        tb = loop(L, tb, "t", at->kernel[i], &tv, 0);
        wc[2 + i] = V(L, tv);
    }
    int64_t OW = os->d[2 + last], IW = is->d[2 + last], st = at->stride[last], dl = at->dilation[last], lo = at->pad.lo[last];
    for (int64_t kw = 0; kw < at->kernel[last]; kw++) {
        int64_t off = kw * dl - lo, o0 = 0, o1 = OW;
        while (o0 < OW && o0 * st + off < 0) o0++;
        while (o1 > o0 && (o1 - 1) * st + off >= IW) o1--;
        int acc[LANES];
        for (int j = 0; j < LANES; j++) acc[j] = local(L, tb, "acc", L3_F32, F(L, 0));
        if (o1 > o0) {
            /* blocked: partial lanes per n and (3D) per plane, so the float
             * rounding grows with the extents, not their product.  A partial
             * per row (or per block of rows) measured 1.8x slower on 128- and
             * 256-wide rows (the vectorized row loses its speed), so a 2D
             * lane sums one image (H x W / 8 terms) before it is added up */
            int cur[LANES];
            for (int j = 0; j < LANES; j++) cur[j] = acc[j];
            int nv;
            L3Block *body = loop(L, tb, "n", os->d[0], &nv, 0);
            int64_t outer = os->d[0];
            L3Expr *xc[MAX_RANK], *oc[MAX_RANK];
            xc[0] = oc[0] = V(L, nv);
            oc[1] = wc[0];
            xc[1] = add(L, mul(L, dv(L, wc[0], I(L, opg)), I(L, cpg)), wc[1]);
            for (int i = 0; i < last; i++) {
                int ov, part[LANES];
                bool split = outer > 1;
                if (split)
                    for (int j = 0; j < LANES; j++) part[j] = local(L, body, "part", L3_F32, F(L, 0));
                L3Block *ob = loop(L, body, "o", os->d[2 + i], &ov, 0);
                if (split)
                    for (int j = 0; j < LANES; j++) {
                        accum(L, body, cur[j], V(L, part[j]));
                        cur[j] = part[j];
                    }
                body = ob;
                outer = os->d[2 + i];
                oc[2 + i] = V(L, ov);
                L3Expr *p = add(L, sub(L, mul(L, V(L, ov), I(L, at->stride[i])), I(L, at->pad.lo[i])),
                                mul(L, wc[2 + i], I(L, at->dilation[i])));
                body = &l3_if(L->m, body, and_(L, le(L, I(L, 0), p), lt(L, p, I(L, is->d[2 + i]))))->body;
                xc[2 + i] = p;
            }
            int64_t len = o1 - o0, nb = len / LANES, rest = len % LANES;
            int *row = cur;
            if (nb > 0) {
                int vv;
                L3Block *vb = loop(L, body, "v", nb, &vv, 0);
                for (int j = 0; j < LANES; j++) {
                    L3Expr *ow = add(L, mul(L, V(L, vv), I(L, LANES)), I(L, o0 + j));
                    oc[2 + last] = ow;
                    xc[2 + last] = add(L, mul(L, ow, I(L, st)), I(L, off));
                    set(L, vb, row[j], l3_fma(L->m, val(L, dy, oc), val(L, x, xc), V(L, row[j])));
                }
            }
            for (int64_t u = 0; u < rest; u++) {
                L3Expr *ow = I(L, o0 + nb * LANES + u);
                oc[2 + last] = ow;
                xc[2 + last] = add(L, mul(L, ow, I(L, st)), I(L, off));
                set(L, body, row[u % LANES], l3_fma(L->m, val(L, dy, oc), val(L, x, xc), V(L, row[u % LANES])));
            }
        }
        L3Expr *half[LANES];   /* the lanes added pairwise */
        for (int j = 0; j < LANES; j++) half[j] = V(L, acc[j]);
        for (int w = LANES; w > 1; w /= 2)
            for (int j = 0; j < w / 2; j++) half[j] = add(L, half[2 * j], half[2 * j + 1]);
        L3Expr *sum = half[0];
        wc[2 + last] = I(L, kw);
        emit(L, tb, wc, sum);
    }
    return true;
}

/* conv:   y[n, co, o] = b[co] + sum x[n, g*cpg + ci, o*s - lo + t*dil] w[co, ci, t]
 * upconv: y[n, co, o] = b[co] + sum_{o = i*s + t*dil - lo} x[n, ci, i] w[ci, col, t]
 * Input and weight gradients are gathers; the bias gradient sums dy. */
static bool grad_conv(Lo *L)
{
    const Node *f = fwd(L);
    const OpAttrs *at = &f->at;
    bool up = f->op == OP_UPCONV;
    int k = L->n->at.grad_operand;
    const Shape *os = tshape(L, f->out), *is = tshape(L, t_x(L, 0));
    int sr = os->rank - 2;
    int64_t G = at->groups > 0 ? at->groups : 1, cpg = is->d[1] / G, opg = os->d[1] / G;
    int dy = t_dy(L);
    if (k == 2) {   /* bias: sum of dy over n and space */
        int64_t sp = numel0(os) / (os->d[0] * os->d[1]);
        /* blocked (sum_loops: a partial per n, per plane, per row), so a
         * large image's float rounding grows with the extents, not with
         * every voxel one after another */
        int64_t ext[MAX_RANK + 1];
        const char *nms[MAX_RANK + 1];
        unsigned ann[MAX_RANK + 1];
        int sv[MAX_RANK + 1];
        int nl = sum_levels(os, true, ext, nms, ann);
        int cv;
        L3Block *b = loop(L, &L->k->body, "c", os->d[1], &cv, L3_PARALLEL);
        int acc = local(L, b, "acc", L3_F32, F(L, 0));
        int a[SUM_MAX_ACC] = { acc };
        L3Block *in = sum_loops(L, b, nl, ext, nms, ann, sv, 1, a);
        L3Expr *flat = add(L, mul(L, add(L, mul(L, V(L, sv[0]), I(L, os->d[1])), V(L, cv)), I(L, sp)),
                           sum_spatial(L, os, true, sv));
        accum(L, in, a[0], valf(L, dy, flat));
        emitf(L, b, V(L, cv), V(L, acc));
        return true;
    }
    int x = t_x(L, 0), w = b_p(L, 0, "weight");
    const Shape *ws = tshape(L, t_p(L, 0));
    if (k == 0 && !up && !getenv("NETC_CONV_ELEMENTWISE")) {   /* a transposed convolution of dy, row schedule */
        int acc = conv_accumulator(L);
        if (acc >= 0) return lower_transposed_rows(L, dy, t_p(L, 0), -1, acc);
    }
    /* an upconv's input gradient, a convolution of dy: register tiles (lower_sched.c);
     * NETC_UPCONV_GRAD_ELEMENTWISE=1: the elementwise gather below */
    if (k == 0 && up && !getenv("NETC_CONV_ELEMENTWISE") && !getenv("NETC_UPCONV_GRAD_ELEMENTWISE")) {
        if (lower_upconv_input_grad_tiled(L, dy, t_p(L, 0), conv_accumulator(L))) return true;
    }
    if (k == 0) {   /* input gradient */
        L3Expr *c[MAX_RANK];
        L3Block *b = loops_over(L, &L->k->body, is, c);
        int acc = local(L, b, "acc", L3_F32, F(L, 0));
        L3Expr *grp = dv(L, c[1], I(L, cpg)), *cil = sub(L, c[1], mul(L, grp, I(L, cpg)));
        int cl;
        L3Block *body = loop(L, b, "co", opg, &cl, 0);
        L3Expr *co = add(L, mul(L, grp, I(L, opg)), V(L, cl));
        L3Expr *oc[MAX_RANK], *t[MAX_SPATIAL];
        oc[0] = c[0];
        oc[1] = co;
        for (int i = 0; i < sr; i++) {
            int tv;
            body = loop(L, body, "t", at->kernel[i], &tv, 0);
            t[i] = V(L, tv);
            int64_t s = at->stride[i];
            if (!up) {   /* o*s = i + lo - t*dil */
                L3Expr *q = sub(L, add(L, c[2 + i], I(L, at->pad.lo[i])), mul(L, t[i], I(L, at->dilation[i])));
                L3Expr *ok = le(L, I(L, 0), q);
                if (s != 1) ok = and_(L, ok, bin(L, L3_EQ, bin(L, L3_MOD, q, I(L, s)), I(L, 0)));
                ok = and_(L, ok, lt(L, q, I(L, s * os->d[2 + i])));
                body = &l3_if(L->m, body, ok)->body;
                oc[2 + i] = dv(L, q, I(L, s));
            } else {     /* o = i*s + t*dil - lo */
                L3Expr *q = sub(L, add(L, mul(L, c[2 + i], I(L, s)), mul(L, t[i], I(L, at->dilation[i]))), I(L, at->pad.lo[i]));
                body = &l3_if(L->m, body, and_(L, le(L, I(L, 0), q), lt(L, q, I(L, os->d[2 + i]))))->body;
                oc[2 + i] = q;
            }
        }
        L3Expr *wc[MAX_RANK];
        wc[0] = up ? c[1] : co;
        wc[1] = up ? V(L, cl) : cil;
        for (int i = 0; i < sr; i++) wc[2 + i] = t[i];
        set(L, body, acc, l3_fma(L->m, val(L, dy, oc), ld(L, w, lin(L, ws, wc)), V(L, acc)));
        emit(L, b, c, V(L, acc));
        return true;
    }
    /* weight gradient: register tiles (lower_sched_grad.c); NETC_WGRAD_LANES=1: the lane schedule */
    if (!getenv("NETC_CONV_ELEMENTWISE") && !getenv("NETC_WGRAD_LANES") && lower_conv_wgrad_tiled(L)) return true;
    if (!up && !getenv("NETC_CONV_ELEMENTWISE")) return conv_weight_grad_lanes(L, dy, x, ws);
    /* weight gradient: w[a, b, t] summed over n and the positions the tap touches */
    L3Expr *wc[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, ws, wc);
    int total = local(L, b, "acc", L3_F32, F(L, 0)), acc = total;
    int nv;
    L3Block *body = loop(L, b, "n", os->d[0], &nv, 0);
    int64_t outer = os->d[0];   /* blocked: a partial per n and per row (see sum_loops) */
    L3Expr *xc[MAX_RANK], *oc[MAX_RANK];
    xc[0] = oc[0] = V(L, nv);
    if (!up) {   /* w[co, ci, t]: x channel g*cpg + ci, output channel co */
        oc[1] = wc[0];
        xc[1] = add(L, mul(L, dv(L, wc[0], I(L, opg)), I(L, cpg)), wc[1]);
    } else {     /* w[ci, col, t]: x channel ci, output channel g*opg + col */
        xc[1] = wc[0];
        oc[1] = add(L, mul(L, dv(L, wc[0], I(L, cpg)), I(L, opg)), wc[1]);
    }
    for (int i = 0; i < sr; i++) {
        int pv;
        int64_t ext = up ? is->d[2 + i] : os->d[2 + i];
        if (outer > 1) {
            int part = local(L, body, "part", L3_F32, F(L, 0));
            L3Block *lb = loop(L, body, up ? "i" : "o", ext, &pv, 0);
            accum(L, body, acc, V(L, part));
            acc = part;
            body = lb;
        } else
            body = loop(L, body, up ? "i" : "o", ext, &pv, 0);
        outer = ext;
        if (!up) {   /* over outputs o: x at o*s - lo + t*dil */
            oc[2 + i] = V(L, pv);
            L3Expr *p = add(L, sub(L, mul(L, V(L, pv), I(L, at->stride[i])), I(L, at->pad.lo[i])), mul(L, wc[2 + i], I(L, at->dilation[i])));
            body = &l3_if(L->m, body, and_(L, le(L, I(L, 0), p), lt(L, p, I(L, is->d[2 + i]))))->body;
            xc[2 + i] = p;
        } else {     /* over inputs i: y at i*s + t*dil - lo */
            xc[2 + i] = V(L, pv);
            L3Expr *q = sub(L, add(L, mul(L, V(L, pv), I(L, at->stride[i])), mul(L, wc[2 + i], I(L, at->dilation[i]))), I(L, at->pad.lo[i]));
            body = &l3_if(L->m, body, and_(L, le(L, I(L, 0), q), lt(L, q, I(L, os->d[2 + i]))))->body;
            oc[2 + i] = q;
        }
    }
    set(L, body, acc, l3_fma(L->m, val(L, dy, oc), val(L, x, xc), V(L, acc)));
    emit(L, b, wc, V(L, total));
    return true;
}

/* ---- pooling, upsampling (scatters) ----------------------------------------------------------------- */

static bool grad_pool(Lo *L, bool is_max)
{
    const Node *f = fwd(L);
    const OpAttrs *at = &f->at;
    const Shape *os = tshape(L, f->out), *is = tshape(L, t_x(L, 0));
    int sr = os->rank - 2;
    int o = out_buf(L);
    zero(L, o, numel0(is));
    L3Expr *c[MAX_RANK];
    /* windows that do not overlap scatter into disjoint elements: every
     * window is independent; otherwise only the (n, c) planes are */
    bool disjoint = true;
    for (int i = 0; i < sr; i++) disjoint = disjoint && at->stride[i] >= at->kernel[i];
    L3Block *b = disjoint ? flat_parallel_over(L, &L->k->body, os, c) : plane_parallel_over(L, &L->k->body, os, c);
    int d = local(L, b, "d", L3_F32, val(L, t_dy(L), c));
    int svs[MAX_SPATIAL], evs[MAX_SPATIAL];
    L3Expr *cnt = NULL, *padded = NULL;
    for (int i = 0; i < sr; i++) {
        int64_t k = at->kernel[i], s = at->stride[i], lo = at->pad.lo[i], hi = at->pad.hi[i], in = is->d[2 + i];
        L3Expr *start = sub(L, mul(L, c[2 + i], I(L, s)), I(L, lo));
        L3Expr *end = bin(L, L3_MIN, add(L, start, I(L, k)), I(L, in + hi));
        svs[i] = local(L, b, "r", L3_I64, bin(L, L3_MAX, start, I(L, 0)));
        evs[i] = local(L, b, "e", L3_I64, bin(L, L3_MIN, end, I(L, in)));
        L3Expr *len = sub(L, V(L, evs[i]), V(L, svs[i]));
        cnt = cnt ? mul(L, cnt, len) : len;
        padded = padded ? mul(L, padded, sub(L, end, start)) : sub(L, end, start);
    }
    int m = -1, arg = -1, div = -1;
    if (is_max) {
        m = local(L, b, "m", L3_F32, F(L, -INFINITY));
        arg = local(L, b, "arg", L3_I64, I(L, -1));
    } else
        div = local(L, b, "div", L3_F32, l3_cast(L->m, L3_F32, at->count_pad ? padded : cnt));
    L3Block *body = b;
    L3Expr *ic[MAX_RANK];
    ic[0] = c[0];
    ic[1] = c[1];
    for (int i = 0; i < sr; i++) {
        int tv;
        body = loop(L, body, "t", at->kernel[i], &tv, 0);
        L3Expr *p = add(L, V(L, svs[i]), V(L, tv));
        body = &l3_if(L->m, body, lt(L, p, V(L, evs[i])))->body;
        ic[2 + i] = p;
    }
    L3Expr *xi = lin(L, is, ic);
    if (is_max) {   /* the first maximum (row-major); a NaN wins */
        int v = local(L, body, "v", L3_F32, val(L, t_x(L, 0), ic));
        L3Expr *isnan_v = bin(L, L3_NE, V(L, v), V(L, v)), *isnan_m = bin(L, L3_NE, V(L, m), V(L, m));
        L3Expr *take = bin(L, L3_OR, bin(L, L3_OR, lt(L, V(L, arg), I(L, 0)), lt(L, V(L, m), V(L, v))),
                           bin(L, L3_AND, isnan_v, l3_un(L->m, L3_NOT, isnan_m)));
        L3Stmt *s = l3_if(L->m, body, take);
        set(L, &s->body, m, V(L, v));
        set(L, &s->body, arg, xi);
        L3Stmt *w = l3_if(L->m, b, le(L, I(L, 0), V(L, arg)));
        l3_store(L->m, &w->body, o, V(L, arg), V(L, d), true);
    } else
        l3_store(L->m, body, o, xi, dv(L, V(L, d), V(L, div)), true);
    return true;
}

static bool grad_global_avgpool(Lo *L)
{
    const Shape *is = tshape(L, t_x(L, 0));
    int64_t sp = numel0(is) / (is->d[0] * is->d[1]);
    int nc, i;
    L3Block *b = loop(L, &L->k->body, "nc", is->d[0] * is->d[1], &nc, L3_PARALLEL);
    b = loop(L, b, "i", sp, &i, L3_VECTORIZE);
    emitf(L, b, add(L, mul(L, V(L, nc), I(L, sp)), V(L, i)), dv(L, valf(L, t_dy(L), V(L, nc)), F(L, (double)sp)));
    return true;
}

static bool grad_upsample(Lo *L)
{
    const Node *f = fwd(L);
    const OpAttrs *at = &f->at;
    const Shape *os = tshape(L, f->out), *is = tshape(L, t_x(L, 0));
    int sr = os->rank - 2;
    int o = out_buf(L);
    zero(L, o, numel0(is));
    L3Expr *c[MAX_RANK];
    L3Block *b = plane_parallel_over(L, &L->k->body, os, c);
    int d = local(L, b, "d", L3_F32, val(L, t_dy(L), c));
    if (at->mode != 1) {
        L3Expr *ic[MAX_RANK];
        ic[0] = c[0];
        ic[1] = c[1];
        for (int i = 0; i < sr; i++)
            ic[2 + i] = bin(L, L3_MIN, dv(L, mul(L, c[2 + i], I(L, is->d[2 + i])), I(L, os->d[2 + i])), I(L, is->d[2 + i] - 1));
        l3_store(L->m, b, o, lin(L, is, ic), V(L, d), true);
        return true;
    }
    L3Expr *i0[MAX_SPATIAL], *i1[MAX_SPATIAL], *l1[MAX_SPATIAL];
    for (int i = 0; i < sr; i++) {
        int64_t in = is->d[2 + i], out = os->d[2 + i];
        L3Expr *oo = l3_cast(L->m, L3_F32, c[2 + i]), *src;
        if (at->align_corners) src = out > 1 ? dv(L, mul(L, oo, F(L, (double)(in - 1))), F(L, (double)(out - 1))) : F(L, 0);
        else src = bin(L, L3_MAX, sub(L, mul(L, add(L, oo, F(L, 0.5)), F(L, (double)in / (double)out)), F(L, 0.5)), F(L, 0));
        int sv = local(L, b, "src", L3_F32, src);
        int iv = local(L, b, "i0_", L3_I64, bin(L, L3_MIN, l3_cast(L->m, L3_I64, l3_un(L->m, L3_FLOOR, V(L, sv))), I(L, in - 1)));
        i0[i] = V(L, iv);
        i1[i] = bin(L, L3_MIN, add(L, V(L, iv), I(L, 1)), I(L, in - 1));
        l1[i] = sub(L, V(L, sv), l3_cast(L->m, L3_F32, V(L, iv)));
    }
    for (int corner = 0; corner < (1 << sr); corner++) {
        L3Expr *ic[MAX_RANK], *wt = NULL;
        ic[0] = c[0];
        ic[1] = c[1];
        for (int i = 0; i < sr; i++) {
            bool hi = (corner >> (sr - 1 - i)) & 1;
            ic[2 + i] = hi ? i1[i] : i0[i];
            L3Expr *fa = hi ? l1[i] : sub(L, F(L, 1), l1[i]);
            wt = wt ? mul(L, wt, fa) : fa;
        }
        l3_store(L->m, b, o, lin(L, is, ic), mul(L, wt, V(L, d)), true);
    }
    return true;
}

/* ---- normalization --------------------------------------------------------------------------------- */

/* dx = w inv (dy - [stats from x] (sum dy + xhat sum dy xhat) / count);
 * d weight[c] = sum dy xhat; d bias[c] = sum dy. */
static bool grad_norm(Lo *L)
{
    const Node *f = fwd(L);
    const OpAttrs *at = &f->at;
    bool batch = f->op == OP_BATCHNORM, stats = !batch || L->training;
    int k = L->n->at.grad_operand;
    const Shape *is = tshape(L, t_x(L, 0));
    int64_t N = is->d[0], C = is->d[1], sp = numel0(is) / (N * C);
    int dy = t_dy(L), x = t_x(L, 0);
    int j = 0, w = -1;
    if (at->affine) { w = b_p(L, 0, "weight"); j = 2; }
    int rm = batch && !stats ? b_p(L, j, "running_mean") : -1, rv = batch && !stats ? b_p(L, j + 1, "running_var") : -1;
    int cv;
    L3Block *b = loop(L, &L->k->body, "c", C, &cv, L3_PARALLEL);
    int wacc = -1;
    if (k >= 1) wacc = local(L, b, "acc", L3_F32, F(L, 0));
    /* groups: (c) for batchnorm, (n, c) for instancenorm */
    int nv = -1;
    L3Block *g = b;
    if (!batch) g = loop(L, b, "n", N, &nv, 0);
    int64_t count = batch ? N * sp : sp;
    int iv, nn;
    #define IDX(nx) add(L, mul(L, add(L, mul(L, (nx), I(L, C)), V(L, cv)), I(L, sp)), V(L, iv))
    #define OVER(blk) (batch ? loop(L, loop(L, (blk), "n", N, &nn, 0), "i", sp, &iv, L3_VECTORIZE) \
                             : (nn = nv, loop(L, (blk), "i", sp, &iv, L3_VECTORIZE)))
    /* the sums over the group: blocked (sum_loops) over n and each spatial axis */
    int64_t ext[MAX_RANK + 1];
    const char *nms[MAX_RANK + 1];
    unsigned ann[MAX_RANK + 1];
    int sv[MAX_RANK + 1];
    int nl = sum_levels(is, batch, ext, nms, ann);
    #define SIDX sum_element(L, is, batch, sv, nv, cv)
    int mean, var;
    if (stats) {
        mean = local(L, g, "mean", L3_F32, F(L, 0));
        int a[SUM_MAX_ACC] = { mean };
        L3Block *s = sum_loops(L, g, nl, ext, nms, ann, sv, 1, a);
        accum(L, s, a[0], valf(L, x, SIDX));
        set(L, g, mean, dv(L, V(L, mean), F(L, (double)count)));
        /* corrected two-pass: the deviations' sum fixes the mean and the
         * variance for the first pass's rounding (as lower.c lower_norm) */
        var = local(L, g, "var", L3_F32, F(L, 0));
        int dev = local(L, g, "dev", L3_F32, F(L, 0));
        a[0] = var, a[1] = dev;
        s = sum_loops(L, g, nl, ext, nms, ann, sv, 2, a);
        int dd = local(L, s, "d", L3_F32, sub(L, valf(L, x, SIDX), V(L, mean)));
        set(L, s, a[0], l3_fma(L->m, V(L, dd), V(L, dd), V(L, a[0])));
        accum(L, s, a[1], V(L, dd));
        set(L, g, dev, dv(L, V(L, dev), F(L, (double)count)));
        set(L, g, var, l3_fma(L->m, l3_un(L->m, L3_NEG, V(L, dev)), V(L, dev), dv(L, V(L, var), F(L, (double)count))));
        set(L, g, mean, add(L, V(L, mean), V(L, dev)));
    } else {
        mean = local(L, g, "mean", L3_F32, ld(L, rm, V(L, cv)));
        var = local(L, g, "var", L3_F32, ld(L, rv, V(L, cv)));
    }
    int inv = local(L, g, "inv", L3_F32, dv(L, F(L, 1), l3_un(L->m, L3_SQRT, add(L, V(L, var), F(L, at->eps)))));
    int sdy = local(L, g, "sdy", L3_F32, F(L, 0)), sdx = local(L, g, "sdyxh", L3_F32, F(L, 0));
    int a2[SUM_MAX_ACC] = { sdy, sdx };
    L3Block *s = sum_loops(L, g, nl, ext, nms, ann, sv, 2, a2);
    L3Expr *xh = mul(L, sub(L, valf(L, x, SIDX), V(L, mean)), V(L, inv));
    L3Expr *d = valf(L, dy, SIDX);
    accum(L, s, a2[0], d);
    set(L, s, a2[1], l3_fma(L->m, d, xh, V(L, a2[1])));
    if (k == 1) accum(L, g, wacc, V(L, sdx));
    else if (k == 2) accum(L, g, wacc, V(L, sdy));
    else {
        L3Expr *sc = w >= 0 ? mul(L, V(L, inv), ld(L, w, V(L, cv))) : V(L, inv);
        s = OVER(g);
        L3Expr *xh2 = mul(L, sub(L, valf(L, x, IDX(V(L, nn))), V(L, mean)), V(L, inv));
        L3Expr *r = valf(L, dy, IDX(V(L, nn)));
        if (stats) r = sub(L, r, dv(L, add(L, V(L, sdy), mul(L, xh2, V(L, sdx))), F(L, (double)count)));
        emitf(L, s, IDX(V(L, nn)), mul(L, sc, r));
    }
    if (k >= 1) emitf(L, b, V(L, cv), V(L, wacc));
    #undef IDX
    #undef OVER
    #undef SIDX
    return true;
}

/* ---- optimizer updates ------------------------------------------------------------------------------ */

/* sgd_update / adam_update: inputs (param, grad, lr, step), state
 * parameters updated in place, the new parameter value as the output
 * (torch.optim's arithmetic, ref_optim.c). */
bool lower_update(Lo *L, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    const Node *n = L->n;
    const OpAttrs *at = &n->at;
    bool sgd = n->op == OP_SGD_UPDATE;
    int64_t cnt = numel0(tshape(L, n->out));
    int o = out_buf(L), w = buf(L, n->in[0], false, "w"), gd = buf(L, n->in[1], false, "grad");
    int lr = buf(L, n->in[2], false, "lr"), st = buf(L, n->in[3], false, "step");
    int ms = n->nparams > 0 ? param_buf(L, 0, true) : -1, vs = n->nparams > 1 ? param_buf(L, 1, true) : -1;
    L3Block *top = &L->k->body;
    int lrv = local(L, top, "lr_", L3_F32, ld(L, lr, I(L, 0)));
    int stv = local(L, top, "step_", L3_F32, ld(L, st, I(L, 0)));
    int bc1 = -1, bc2 = -1;
    if (!sgd) {   /* 1 - beta^step = -expm1(step ln beta), accurate in float */
        bc1 = local(L, top, "bc1", L3_F32, l3_un(L->m, L3_NEG, l3_un(L->m, L3_EXPM1, mul(L, V(L, stv), F(L, log(at->opt_beta1))))));
        bc2 = local(L, top, "bc2", L3_F32, l3_un(L->m, L3_NEG, l3_un(L->m, L3_EXPM1, mul(L, V(L, stv), F(L, log(at->opt_beta2))))));
    }
    int iv;
    L3Block *b = loop(L, top, "i", cnt, &iv, L3_PARALLEL | L3_VECTORIZE);
    L3Expr *i = V(L, iv);
    int wv = local(L, b, "wv", L3_F32, ld(L, w, i));
    int d = local(L, b, "d", L3_F32, ld(L, gd, i));
    if (sgd) {
        if (at->opt_weight_decay != 0) set(L, b, d, l3_fma(L->m, F(L, at->opt_weight_decay), V(L, wv), V(L, d)));
        if (ms >= 0 && at->opt_momentum != 0) {
            L3Expr *first = bin(L, L3_EQ, V(L, stv), F(L, 1));
            int m = local(L, b, "m", L3_F32, sel(L, first, V(L, d), l3_fma(L->m, F(L, at->opt_momentum), ld(L, ms, i), V(L, d))));
            l3_store(L->m, b, ms, i, V(L, m), false);
            set(L, b, d, at->opt_nesterov ? l3_fma(L->m, F(L, at->opt_momentum), V(L, m), V(L, d)) : V(L, m));
        }
        l3_store(L->m, b, o, i, sub(L, V(L, wv), mul(L, V(L, lrv), V(L, d))), false);
        return true;
    }
    if (at->opt_decoupled) set(L, b, wv, mul(L, V(L, wv), sub(L, F(L, 1), mul(L, V(L, lrv), F(L, at->opt_weight_decay)))));
    else if (at->opt_weight_decay != 0) set(L, b, d, l3_fma(L->m, F(L, at->opt_weight_decay), V(L, wv), V(L, d)));
    int m = local(L, b, "m", L3_F32, add(L, mul(L, F(L, at->opt_beta1), ld(L, ms, i)), mul(L, F(L, 1 - at->opt_beta1), V(L, d))));
    int v = local(L, b, "v", L3_F32, add(L, mul(L, F(L, at->opt_beta2), ld(L, vs, i)), mul(L, F(L, 1 - at->opt_beta2), mul(L, V(L, d), V(L, d)))));
    l3_store(L->m, b, ms, i, V(L, m), false);
    l3_store(L->m, b, vs, i, V(L, v), false);
    L3Expr *denom = add(L, dv(L, l3_un(L->m, L3_SQRT, V(L, v)), l3_un(L->m, L3_SQRT, V(L, bc2))), F(L, at->opt_eps));
    l3_store(L->m, b, o, i, sub(L, V(L, wv), mul(L, dv(L, V(L, lrv), V(L, bc1)), dv(L, V(L, m), denom))), false);
    return true;
}

/* ---- grad dispatch ---------------------------------------------------------------------------------- */

bool lower_grad_node(Lo *L, char *err, size_t errlen)
{
    const Node *f = fwd(L);
    switch (f->op) {
    case OP_CONV: case OP_UPCONV: return grad_conv(L);
    case OP_MAXPOOL: return grad_pool(L, true);
    case OP_AVGPOOL: return grad_pool(L, false);
    case OP_GLOBAL_AVGPOOL: return grad_global_avgpool(L);
    case OP_UPSAMPLE: return grad_upsample(L);
    case OP_CONCAT: case OP_CROP: case OP_PAD: return grad_movement(L);
    case OP_ADD: case OP_MUL: return grad_add_mul(L);
    case OP_BATCHNORM: case OP_INSTANCENORM: return grad_norm(L);
    case OP_SOFTMAX: return grad_softmax(L);
    case OP_SCALE: case OP_RELU: case OP_LEAKY_RELU: case OP_PRELU: case OP_ELU: case OP_SIGMOID: case OP_TANH:
    case OP_DROPOUT:
        return grad_pointwise(L, err, errlen);
    case OP_CE: case OP_DICE: case OP_FOCAL:
        if (L->n->at.grad_operand != 0) break;
        return lower_loss_grad(L);
    default: break;
    }
    snprintf(err, errlen, "%s: the gradient of %s (operand %d) has no lowering", L->n->name, op_table[f->op].name,
             L->n->at.grad_operand);
    return false;
}
