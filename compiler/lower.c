/* lower.c — L1 graph to L3 loop IR.
 *
 * Each op has a lowering that writes its loop nest into a kernel.  Forward
 * ops follow the reference executor's definitions (runtime/ref*.c) exactly,
 * in float32 arithmetic (the reference accumulates in double; the backend
 * tests state the tolerance).
 *
 * This first lowering makes one kernel per node ("unfused"); the fusion plan
 * (fuse.h) will decide kernels, and elementwise consumers will then be
 * inlined as expressions.  Ops without a lowering yet are reported by
 * lower_graph's error message, never silently skipped.
 */
#define _POSIX_C_SOURCE 200809L
#include "lower.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#include "lower_internal.h"

/* ---- pointwise ops ----------------------------------------------------------------------------- */

static L3Expr *gt0(Lo *L, L3Expr *x) { return bin(L, L3_LT, F(L, 0), x); }

static bool lower_pointwise(Lo *L, char *err, size_t errlen)
{
    const Node *n = L->n;
    const OpAttrs *at = &n->at;
    const Shape *os = tshape(L, n->out);
    L3Expr *c[MAX_RANK];
    int y = out_buf(L);
    int xs[64];
    for (int j = 0; j < n->nin && j < 64; j++) xs[j] = in_buf(L, j);
    int pw = n->op == OP_PRELU ? param_buf(L, 0, false) : -1;
    L3Block *b = loops_over(L, &L->k->body, os, c);
    L3Expr *x = n->nin > 0 ? load(L, xs[0], bcast_index(L, tshape(L, n->in[0]), os, c)) : NULL;
    L3Expr *r = NULL;
    switch (n->op) {
    case OP_ADD:
    case OP_MUL:
        r = x;
        for (int j = 1; j < n->nin; j++)
            r = bin(L, n->op == OP_ADD ? L3_ADD : L3_MUL, r, load(L, xs[j], bcast_index(L, tshape(L, n->in[j]), os, c)));
        break;
    case OP_SCALE: r = mul(L, x, F(L, at->factor)); break;
    case OP_RELU: r = l3_select(L->m, gt0(L, x), x, F(L, 0)); break;
    case OP_LEAKY_RELU: r = l3_select(L->m, bin(L, L3_LE, F(L, 0), x), x, mul(L, x, F(L, at->slope))); break;
    case OP_PRELU: {
        L3Expr *a = load(L, pw, at->shared || os->rank < 2 ? I(L, 0) : c[1]);
        r = l3_select(L->m, bin(L, L3_LE, F(L, 0), x), x, mul(L, a, x));
        break;
    }
    case OP_ELU: r = l3_select(L->m, gt0(L, x), x, mul(L, F(L, at->alpha), l3_un(L->m, L3_EXPM1, x))); break;
    case OP_SIGMOID: r = dv(L, F(L, 1), add(L, F(L, 1), l3_un(L->m, L3_EXP, l3_un(L->m, L3_NEG, x)))); break;
    case OP_TANH: r = l3_un(L->m, L3_TANH, x); break;
    case OP_DROPOUT:
        if (L->training) {
            snprintf(err, errlen, "%s: dropout in training is not lowered yet (its random stream)", n->name);
            return false;
        }
        r = x;
        break;
    default:
        snprintf(err, errlen, "%s: no pointwise lowering for %s", n->name, op_table[n->op].name);
        return false;
    }
    l3_store(L->m, b, y, lin(L, os, c), r, false);
    return true;
}

/* ---- movement ---------------------------------------------------------------------------------- */

static bool lower_concat(Lo *L)
{
    const Shape *os = tshape(L, L->n->out);
    int y = out_buf(L);
    int64_t c0 = 0;
    for (int j = 0; j < L->n->nin; j++) {
        const Shape *is = tshape(L, L->n->in[j]);
        int x = in_buf(L, j);
        L3Expr *c[MAX_RANK];
        L3Block *b = loops_over(L, &L->k->body, is, c);
        L3Expr *oc[MAX_RANK];
        for (int i = 0; i < os->rank; i++) oc[i] = c[i];
        oc[1] = add(L, c[1], I(L, c0));
        l3_store(L->m, b, y, lin(L, os, oc), load(L, x, lin(L, is, c)), false);
        c0 += is->d[1];
    }
    return true;
}

static bool lower_crop(Lo *L)
{
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int y = out_buf(L), x = in_buf(L, 0);
    L3Expr *c[MAX_RANK], *ic[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, os, c);
    for (int i = 0; i < os->rank; i++) ic[i] = i < 2 ? c[i] : add(L, c[i], I(L, L->n->at.pad.lo[i - 2]));
    l3_store(L->m, b, y, lin(L, os, c), load(L, x, lin(L, is, ic)), false);
    return true;
}

/* pad: source index per axis (zero: fill outside; reflect; replicate). */
static bool lower_pad(Lo *L)
{
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int y = out_buf(L), x = in_buf(L, 0);
    L3Expr *c[MAX_RANK], *ic[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, os, c);
    L3Expr *inside = NULL;
    for (int i = 0; i < os->rank; i++) {
        if (i < 2) { ic[i] = c[i]; continue; }
        int64_t nlen = is->d[i];
        L3Expr *s = sub(L, c[i], I(L, at->pad.lo[i - 2]));
        if (at->mode == 0) {
            L3Expr *ok = bin(L, L3_AND, bin(L, L3_LE, I(L, 0), s), bin(L, L3_LT, s, I(L, nlen)));
            inside = inside ? bin(L, L3_AND, inside, ok) : ok;
            ic[i] = l3_select(L->m, ok, s, I(L, 0));
        } else if (at->mode == 2) {
            ic[i] = bin(L, L3_MIN, bin(L, L3_MAX, s, I(L, 0)), I(L, nlen - 1));
        } else {   /* reflect: -i before 0, 2(n-1) - i after */
            ic[i] = l3_select(L->m, bin(L, L3_LT, s, I(L, 0)), l3_un(L->m, L3_NEG, s),
                              l3_select(L->m, bin(L, L3_LT, s, I(L, nlen)), s, sub(L, I(L, 2 * (nlen - 1)), s)));
        }
    }
    L3Expr *v = load(L, x, lin(L, is, ic));
    if (inside) v = l3_select(L->m, inside, v, F(L, at->value));
    l3_store(L->m, b, y, lin(L, os, c), v, false);
    return true;
}

/* ---- convolution --------------------------------------------------------------------------------- */

static bool lower_conv(Lo *L)
{
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int sr = os->rank - 2;
    int y = out_buf(L), x = in_buf(L, 0), w = param_buf(L, 0, false), bb = at->bias ? param_buf(L, 1, false) : -1;
    int64_t G = at->groups > 0 ? at->groups : 1, cpg = is->d[1] / G, opg = os->d[1] / G;
    L3Expr *c[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, os, c);
    int acc = l3_var(L->m, L->k, "acc", L3_F32, false);
    l3_local(L->m, b, acc, bb >= 0 ? load(L, bb, c[1]) : F(L, 0));
    int ci;
    L3Block *body = loop(L, b, "ci", cpg, &ci, 0);
    L3Expr *ic[MAX_RANK], *t[MAX_SPATIAL];
    ic[0] = c[0];
    ic[1] = add(L, mul(L, dv(L, c[1], I(L, opg)), I(L, cpg)), V(L, ci));
    for (int i = 0; i < sr; i++) {
        int tv;
        body = loop(L, body, "t", at->kernel[i], &tv, 0);
        t[i] = V(L, tv);
        L3Expr *p = add(L, sub(L, mul(L, c[2 + i], I(L, at->stride[i])), I(L, at->pad.lo[i])),
                        mul(L, t[i], I(L, at->dilation[i])));
        ic[2 + i] = p;
        /* skip taps in the padding (only when padding can put them there) */
        bool can_under = at->pad.lo[i] > 0;
        bool can_over = (os->d[2 + i] - 1) * at->stride[i] - at->pad.lo[i] + (at->kernel[i] - 1) * at->dilation[i] >= is->d[2 + i];
        L3Expr *ok = NULL;
        if (can_under) ok = bin(L, L3_LE, I(L, 0), p);
        if (can_over) {
            L3Expr *o2 = bin(L, L3_LT, p, I(L, is->d[2 + i]));
            ok = ok ? bin(L, L3_AND, ok, o2) : o2;
        }
        if (ok) body = &l3_if(L->m, body, ok)->body;
    }
    /* w[co, ci, t...] */
    Shape ws = L->g->tensors[L->g->params[L->n->params[0]].tensor].shape;
    L3Expr *wc[MAX_RANK];
    wc[0] = c[1];
    wc[1] = V(L, ci);
    for (int i = 0; i < sr; i++) wc[2 + i] = t[i];
    l3_assign(L->m, body, acc, l3_fma(L->m, load(L, x, lin(L, is, ic)), load(L, w, lin(L, &ws, wc)), V(L, acc)));
    l3_store(L->m, b, y, lin(L, os, c), V(L, acc), false);
    return true;
}

/* Transposed convolution as a gather: output position o receives input
 * position i through tap t when i*s + t*dil - lo = o. */
static bool lower_upconv(Lo *L)
{
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int sr = os->rank - 2;
    int y = out_buf(L), x = in_buf(L, 0), w = param_buf(L, 0, false), bb = at->bias ? param_buf(L, 1, false) : -1;
    int64_t G = at->groups > 0 ? at->groups : 1, cpg = is->d[1] / G, opg = os->d[1] / G;
    L3Expr *c[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, os, c);
    int acc = l3_var(L->m, L->k, "acc", L3_F32, false);
    l3_local(L->m, b, acc, bb >= 0 ? load(L, bb, c[1]) : F(L, 0));
    int ci;
    L3Block *body = loop(L, b, "ci", cpg, &ci, 0);
    L3Expr *ic[MAX_RANK], *t[MAX_SPATIAL];
    ic[0] = c[0];
    L3Expr *grp = dv(L, c[1], I(L, opg));
    ic[1] = add(L, mul(L, grp, I(L, cpg)), V(L, ci));
    for (int i = 0; i < sr; i++) {
        int tv;
        body = loop(L, body, "t", at->kernel[i], &tv, 0);
        t[i] = V(L, tv);
        /* q = o + lo - t*dil must be >= 0, divisible by s, and q/s < in */
        L3Expr *q = sub(L, add(L, c[2 + i], I(L, at->pad.lo[i])), mul(L, t[i], I(L, at->dilation[i])));
        int64_t s = at->stride[i];
        L3Expr *ok = bin(L, L3_LE, I(L, 0), q);
        if (s != 1) ok = bin(L, L3_AND, ok, bin(L, L3_EQ, bin(L, L3_MOD, q, I(L, s)), I(L, 0)));
        ok = bin(L, L3_AND, ok, bin(L, L3_LT, q, I(L, s * is->d[2 + i])));
        body = &l3_if(L->m, body, ok)->body;
        ic[2 + i] = dv(L, q, I(L, s));
    }
    /* w[ci_global, co_local, t...] */
    Shape ws = L->g->tensors[L->g->params[L->n->params[0]].tensor].shape;
    L3Expr *wc[MAX_RANK];
    wc[0] = ic[1];
    wc[1] = sub(L, c[1], mul(L, grp, I(L, opg)));
    for (int i = 0; i < sr; i++) wc[2 + i] = t[i];
    l3_assign(L->m, body, acc, l3_fma(L->m, load(L, x, lin(L, is, ic)), load(L, w, lin(L, &ws, wc)), V(L, acc)));
    l3_store(L->m, b, y, lin(L, os, c), V(L, acc), false);
    return true;
}

/* ---- pooling, upsampling ----------------------------------------------------------------------------- */

/* max/avg pool: the window on each axis is [o*s - lo, min(o*s - lo + k, in + hi)),
 * clipped to the input (PyTorch; see ref_pool_win). */
static bool lower_pool(Lo *L, bool is_max)
{
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int sr = os->rank - 2;
    int y = out_buf(L), x = in_buf(L, 0);
    L3Expr *c[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, os, c);
    int acc = l3_var(L->m, L->k, is_max ? "m" : "sum", L3_F32, false);
    l3_local(L->m, b, acc, F(L, is_max ? -INFINITY : 0.0));
    L3Expr *ic[MAX_RANK], *cnt = NULL, *padded = NULL;
    ic[0] = c[0];
    ic[1] = c[1];
    L3Block *body = b;
    int svs[MAX_SPATIAL], evs[MAX_SPATIAL];
    for (int i = 0; i < sr; i++) {   /* the window bounds first, then the loops */
        int64_t k = at->kernel[i], s = at->stride[i], lo = at->pad.lo[i], hi = at->pad.hi[i], in = is->d[2 + i];
        L3Expr *start = sub(L, mul(L, c[2 + i], I(L, s)), I(L, lo));
        L3Expr *end = bin(L, L3_MIN, add(L, start, I(L, k)), I(L, in + hi));
        L3Expr *r0 = bin(L, L3_MAX, start, I(L, 0)), *r1 = bin(L, L3_MIN, end, I(L, in));
        int sv = l3_var(L->m, L->k, "r", L3_I64, false);
        l3_local(L->m, b, sv, r0);
        int ev = l3_var(L->m, L->k, "e", L3_I64, false);
        l3_local(L->m, b, ev, r1);
        L3Expr *len = sub(L, V(L, ev), V(L, sv)), *plen = sub(L, end, start);
        cnt = cnt ? mul(L, cnt, len) : len;
        padded = padded ? mul(L, padded, plen) : plen;
        svs[i] = sv;
        evs[i] = ev;
    }
    for (int i = 0; i < sr; i++) {
        int tv;
        body = loop(L, body, "t", at->kernel[i], &tv, 0);
        L3Expr *p = add(L, V(L, svs[i]), V(L, tv));
        body = &l3_if(L->m, body, bin(L, L3_LT, p, V(L, evs[i])))->body;
        ic[2 + i] = p;
    }
    L3Expr *v = load(L, x, lin(L, is, ic));
    if (is_max)   /* NaN propagates, as in the reference */
        l3_assign(L->m, body, acc, l3_select(L->m, bin(L, L3_OR, bin(L, L3_LT, V(L, acc), v), bin(L, L3_NE, v, v)),
                                             l3_select(L->m, bin(L, L3_NE, V(L, acc), V(L, acc)), V(L, acc), v), V(L, acc)));
    else
        l3_assign(L->m, body, acc, add(L, V(L, acc), v));
    L3Expr *r = V(L, acc);
    if (!is_max) r = dv(L, r, l3_cast(L->m, L3_F32, at->count_pad ? padded : cnt));
    l3_store(L->m, b, y, lin(L, os, c), r, false);
    return true;
}

static bool lower_global_avgpool(Lo *L)
{
    const Shape *is = tshape(L, L->n->in[0]);
    int64_t sp = numel0(is) / (is->d[0] * is->d[1]);
    int y = out_buf(L), x = in_buf(L, 0);
    int nc;
    L3Block *b = loop(L, &L->k->body, "nc", is->d[0] * is->d[1], &nc, L3_PARALLEL);
    int acc = l3_var(L->m, L->k, "sum", L3_F32, false);
    l3_local(L->m, b, acc, F(L, 0));
    int i;
    L3Block *body = loop(L, b, "i", sp, &i, L3_VECTORIZE);
    l3_assign(L->m, body, acc, add(L, V(L, acc), load(L, x, add(L, mul(L, V(L, nc), I(L, sp)), V(L, i)))));
    l3_store(L->m, b, y, V(L, nc), dv(L, V(L, acc), F(L, (double)sp)), false);
    return true;
}

/* upsample: nearest floor(o * in / out); linear: the reference's source
 * coordinate, interpolated axis by axis (separable weights). */
static bool lower_upsample(Lo *L)
{
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int sr = os->rank - 2;
    int y = out_buf(L), x = in_buf(L, 0);
    L3Expr *c[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, os, c);
    if (at->mode != 1) {
        L3Expr *ic[MAX_RANK];
        ic[0] = c[0];
        ic[1] = c[1];
        for (int i = 0; i < sr; i++)
            ic[2 + i] = bin(L, L3_MIN, dv(L, mul(L, c[2 + i], I(L, is->d[2 + i])), I(L, os->d[2 + i])), I(L, is->d[2 + i] - 1));
        l3_store(L->m, b, y, lin(L, os, c), load(L, x, lin(L, is, ic)), false);
        return true;
    }
    L3Expr *i0[MAX_SPATIAL], *i1[MAX_SPATIAL], *l1[MAX_SPATIAL];
    for (int i = 0; i < sr; i++) {
        int64_t in = is->d[2 + i], out = os->d[2 + i];
        L3Expr *o = l3_cast(L->m, L3_F32, c[2 + i]), *src;
        if (at->align_corners) src = out > 1 ? dv(L, mul(L, o, F(L, (double)(in - 1))), F(L, (double)(out - 1))) : F(L, 0);
        else src = bin(L, L3_MAX, sub(L, mul(L, add(L, o, F(L, 0.5)), F(L, (double)in / (double)out)), F(L, 0.5)), F(L, 0));
        int sv = l3_var(L->m, L->k, "src", L3_F32, false);
        l3_local(L->m, b, sv, src);
        int iv = l3_var(L->m, L->k, "i0_", L3_I64, false);
        l3_local(L->m, b, iv, bin(L, L3_MIN, l3_cast(L->m, L3_I64, l3_un(L->m, L3_FLOOR, V(L, sv))), I(L, in - 1)));
        i0[i] = V(L, iv);
        i1[i] = bin(L, L3_MIN, add(L, V(L, iv), I(L, 1)), I(L, in - 1));
        l1[i] = sub(L, V(L, sv), l3_cast(L->m, L3_F32, V(L, iv)));
    }
    L3Expr *acc = NULL;
    for (int corner = 0; corner < (1 << sr); corner++) {
        L3Expr *ic[MAX_RANK], *wt = NULL;
        ic[0] = c[0];
        ic[1] = c[1];
        for (int i = 0; i < sr; i++) {
            bool hi = (corner >> (sr - 1 - i)) & 1;
            ic[2 + i] = hi ? i1[i] : i0[i];
            L3Expr *f = hi ? l1[i] : sub(L, F(L, 1), l1[i]);
            wt = wt ? mul(L, wt, f) : f;
        }
        L3Expr *term = mul(L, wt, load(L, x, lin(L, is, ic)));
        acc = acc ? add(L, acc, term) : term;
    }
    l3_store(L->m, b, y, lin(L, os, c), acc, false);
    return true;
}

/* ---- normalization, softmax ------------------------------------------------------------------------ */

/* instancenorm, and batchnorm (inference: running statistics; training:
 * batch statistics and the running-statistics update, as PyTorch). */
static bool lower_norm(Lo *L, bool batch)
{
    const OpAttrs *at = &L->n->at;
    const Shape *is = tshape(L, L->n->in[0]);
    int64_t N = is->d[0], C = is->d[1], sp = numel0(is) / (N * C);
    int y = out_buf(L), x = in_buf(L, 0);
    int j = 0, w = -1, bb = -1;
    if (at->affine) { w = param_buf(L, j++, false); bb = param_buf(L, j++, false); }
    bool stats = !batch || L->training;
    int rm = batch ? param_buf(L, j++, batch && L->training) : -1, rv = batch ? param_buf(L, j++, batch && L->training) : -1;
    int cv;
    L3Block *b = loop(L, &L->k->body, "c", C, &cv, L3_PARALLEL);
    int nv = -1;
    L3Block *outer = b;
    if (!batch) outer = loop(L, b, "n", N, &nv, 0);
    int mean = l3_var(L->m, L->k, "mean", L3_F32, false), var = l3_var(L->m, L->k, "var", L3_F32, false);
    /* base offset of (n, c) slice */
    #define BASE(nn) add(L, mul(L, add(L, mul(L, (nn), I(L, C)), V(L, cv)), I(L, sp)), V(L, iv))
    int iv;
    if (stats) {
        int64_t count = batch ? N * sp : sp;
        l3_local(L->m, outer, mean, F(L, 0));
        L3Block *sb = outer;
        int nn = nv;
        if (batch) sb = loop(L, outer, "n", N, &nn, 0);
        L3Block *ib = loop(L, sb, "i", sp, &iv, L3_VECTORIZE);
        l3_assign(L->m, ib, mean, add(L, V(L, mean), load(L, x, BASE(V(L, nn)))));
        l3_assign(L->m, outer, mean, dv(L, V(L, mean), F(L, (double)count)));
        l3_local(L->m, outer, var, F(L, 0));
        sb = outer;
        if (batch) sb = loop(L, outer, "n", N, &nn, 0);
        ib = loop(L, sb, "i", sp, &iv, L3_VECTORIZE);
        L3Expr *d = sub(L, load(L, x, BASE(V(L, nn))), V(L, mean));
        l3_assign(L->m, ib, var, l3_fma(L->m, d, d, V(L, var)));
        l3_assign(L->m, outer, var, dv(L, V(L, var), F(L, (double)count)));
        if (batch) {
            double mo = at->momentum;
            l3_store(L->m, outer, rm, V(L, cv), add(L, mul(L, F(L, 1 - mo), load(L, rm, V(L, cv))), mul(L, F(L, mo), V(L, mean))), false);
            l3_store(L->m, outer, rv, V(L, cv),
                     add(L, mul(L, F(L, 1 - mo), load(L, rv, V(L, cv))),
                         mul(L, F(L, mo * (double)count / (double)(count - 1)), V(L, var))), false);
        }
    } else {
        l3_local(L->m, outer, mean, load(L, rm, V(L, cv)));
        l3_local(L->m, outer, var, load(L, rv, V(L, cv)));
    }
    int inv = l3_var(L->m, L->k, "inv", L3_F32, false);
    l3_local(L->m, outer, inv, dv(L, F(L, 1), l3_un(L->m, L3_SQRT, add(L, V(L, var), F(L, at->eps)))));
    int sc = l3_var(L->m, L->k, "scale", L3_F32, false), sh = l3_var(L->m, L->k, "shift", L3_F32, false);
    l3_local(L->m, outer, sc, w >= 0 ? mul(L, V(L, inv), load(L, w, V(L, cv))) : V(L, inv));
    l3_local(L->m, outer, sh, sub(L, bb >= 0 ? load(L, bb, V(L, cv)) : F(L, 0), mul(L, V(L, mean), V(L, sc))));
    L3Block *ab = outer;
    int nn = nv;
    if (batch) ab = loop(L, outer, "n", N, &nn, 0);
    ab = loop(L, ab, "i", sp, &iv, L3_VECTORIZE);
    l3_store(L->m, ab, y, BASE(V(L, nn)), l3_fma(L->m, load(L, x, BASE(V(L, nn))), V(L, sc), V(L, sh)), false);
    #undef BASE
    return true;
}

static bool lower_softmax(Lo *L)
{
    const Shape *is = tshape(L, L->n->in[0]);
    int64_t N = is->d[0], C = is->d[1], sp = numel0(is) / (N * C);
    int y = out_buf(L), x = in_buf(L, 0);
    int nv, pv, cv;
    L3Block *b = loop(L, &L->k->body, "n", N, &nv, L3_PARALLEL);
    b = loop(L, b, "p", sp, &pv, L3_VECTORIZE);
    #define AT(cc) add(L, mul(L, add(L, mul(L, V(L, nv), I(L, C)), (cc)), I(L, sp)), V(L, pv))
    int m = l3_var(L->m, L->k, "m", L3_F32, false), s = l3_var(L->m, L->k, "sum", L3_F32, false);
    l3_local(L->m, b, m, F(L, -INFINITY));
    L3Block *cb = loop(L, b, "c", C, &cv, 0);
    l3_assign(L->m, cb, m, bin(L, L3_MAX, V(L, m), load(L, x, AT(V(L, cv)))));
    l3_local(L->m, b, s, F(L, 0));
    cb = loop(L, b, "c", C, &cv, 0);
    l3_assign(L->m, cb, s, add(L, V(L, s), l3_un(L->m, L3_EXP, sub(L, load(L, x, AT(V(L, cv))), V(L, m)))));
    cb = loop(L, b, "c", C, &cv, 0);
    l3_store(L->m, cb, y, AT(V(L, cv)), dv(L, l3_un(L->m, L3_EXP, sub(L, load(L, x, AT(V(L, cv))), V(L, m))), V(L, s)), false);
    #undef AT
    return true;
}

/* ---- driver ------------------------------------------------------------------------------------------ */

static bool lower_node(Lo *L, char *err, size_t errlen)
{
    switch (L->n->op) {
    case OP_CONV: return lower_conv(L);
    case OP_UPCONV: return lower_upconv(L);
    case OP_MAXPOOL: return lower_pool(L, true);
    case OP_AVGPOOL: return lower_pool(L, false);
    case OP_GLOBAL_AVGPOOL: return lower_global_avgpool(L);
    case OP_UPSAMPLE: return lower_upsample(L);
    case OP_CONCAT: return lower_concat(L);
    case OP_CROP: return lower_crop(L);
    case OP_PAD: return lower_pad(L);
    case OP_BATCHNORM: return lower_norm(L, true);
    case OP_INSTANCENORM: return lower_norm(L, false);
    case OP_SOFTMAX: return lower_softmax(L);
    case OP_ADD: case OP_MUL: case OP_SCALE: case OP_RELU: case OP_LEAKY_RELU: case OP_PRELU: case OP_ELU:
    case OP_SIGMOID: case OP_TANH: case OP_DROPOUT:
        return lower_pointwise(L, err, errlen);
    case OP_GRAD: return lower_grad_node(L, err, errlen);
    case OP_CE: case OP_DICE: case OP_FOCAL: return lower_loss(L, err, errlen);
    case OP_SGD_UPDATE: case OP_ADAM_UPDATE: return lower_update(L, err, errlen);
    case OP_ONES: {
        const Shape *os = tshape(L, L->n->out);
        int y = out_buf(L), v;
        L3Block *b = loop(L, &L->k->body, "i", numel0(os), &v, 0);
        l3_store(L->m, b, y, V(L, v), F(L, 1), false);
        return true;
    }
    default:
        snprintf(err, errlen, "%s: %s has no lowering to loops yet", L->n->name, L->n->op < OP_COUNT ? op_table[L->n->op].name : "?");
        return false;
    }
}

static void c_ident(char *out, size_t n, const char *name)
{
    size_t j = 0;
    for (const char *p = name; *p && j + 1 < n; p++) out[j++] = isalnum((unsigned char)*p) ? *p : '_';
    out[j] = 0;
}

L3Module *lower_graph(const Graph *g, bool training, char *err, size_t errlen)
{
    char name[256];
    snprintf(name, sizeof name, "%s for protocol %s", g->net_name ? g->net_name : "net",
             g->protocol_name ? g->protocol_name : "?");
    L3Module *m = l3_module_new(name, g->ntensors);
    L3Entry *e = l3_entry_new(m, training ? "netc_train_forward" : "netc_forward");
    for (int i = 0; i < g->nnodes; i++) {
        char kn[160], id[128];
        c_ident(id, sizeof id, g->nodes[i].name);
        snprintf(kn, sizeof kn, "k%d_%s", i, id);
        char comment[256];
        snprintf(comment, sizeof comment, "%s: %s", g->nodes[i].name, op_table[g->nodes[i].op].name);
        L3Kernel *k = l3_kernel_new(m, kn, comment);
        Lo L = { m, k, g, &g->nodes[i], i, training };
        if (!lower_node(&L, err, errlen)) {
            l3_module_free(m);
            return NULL;
        }
        l3_entry_call(e, m->nkernels - 1);
    }
    return m;
}
