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

/* ---- values and results (fusion) ---------------------------------------------------------------- */

static L3Expr *node_expr(Lo *L, int p, L3Expr *const *c);

static const char *short_name(const char *name, char *buf, size_t n)
{
    const char *dot = strrchr(name, '.');
    snprintf(buf, n, "%s", dot ? dot + 1 : name);
    for (char *q = buf; *q; q++) if (!isalnum((unsigned char)*q)) *q = '_';
    if (!isalpha((unsigned char)buf[0])) snprintf(buf, n, "t");
    return buf;
}

static int tbuf(Lo *L, int t, bool written)
{
    char nm[48];
    return buf(L, t, written, short_name(L->g->tensors[t].name, nm, sizeof nm));
}

L3Expr *val(Lo *L, int t, L3Expr *const *c)
{
    const Tensor *te = &L->g->tensors[t];
    if (L->fp) {
        if (L->ovr && t == L->n->out) return L->ovr;
        int p = te->producer;
        if (p >= 0 && L->in_kern[p] && p != L->index) return node_expr(L, p, c);
    }
    return load(L, tbuf(L, t, false), lin(L, &te->shape, c));
}

/* Coordinates of a flat index (only needed when a flat-indexed read meets
 * a value computed inside the kernel). */
static void unflatten(Lo *L, const Shape *s, L3Expr *flat, L3Expr **c)
{
    int64_t stride = 1;
    for (int i = s->rank - 1; i >= 0; i--) {
        c[i] = bin(L, L3_MOD, dv(L, flat, I(L, stride)), I(L, s->d[i]));
        stride *= s->d[i];
    }
}

L3Expr *valf(Lo *L, int t, L3Expr *flat)
{
    const Tensor *te = &L->g->tensors[t];
    bool inside = L->fp && ((L->ovr && t == L->n->out) ||
                            (te->producer >= 0 && L->in_kern[te->producer] && te->producer != L->index));
    if (!inside) return load(L, tbuf(L, t, false), flat);
    L3Expr *c[MAX_RANK];
    unflatten(L, &te->shape, flat, c);
    return val(L, t, c);
}

void emit(Lo *L, L3Block *b, L3Expr *const *c, L3Expr *v)
{
    int out = L->n->out;
    const Shape *os = tshape(L, out);
    if (!L->fp) {
        l3_store(L->m, b, out_buf(L), lin(L, os, c), v, false);
        return;
    }
    int r = l3_var(L->m, L->k, "r", L3_F32, false);
    l3_local(L->m, b, r, v);
    L->ovr = l3_varref(L->m, L->k, r);
    for (int i = 0; i < L->kern->nouts; i++) {
        int t = L->kern->outs[i], p = L->g->tensors[t].producer;
        if (p < 0 || !L->in_kern[p] || !shape_equal(&L->g->tensors[t].shape, os)) continue;
        if (p != L->index && L->fp->inlined && L->fp->inlined[p]) continue;
        l3_store(L->m, b, tbuf(L, t, true), lin(L, os, c), val(L, t, c), false);
    }
    L->ovr = NULL;
}

void emitf(Lo *L, L3Block *b, L3Expr *flat, L3Expr *v)
{
    if (!L->fp) {
        l3_store(L->m, b, out_buf(L), flat, v, false);
        return;
    }
    L3Expr *c[MAX_RANK];
    unflatten(L, tshape(L, L->n->out), flat, c);
    emit(L, b, c, v);
}

/* ---- dropout (training) ---------------------------------------------------------------------------
 *
 * The reference's random stream (runtime/ref.h): dropout node i draws from
 * splitmix64 with state s0 = seed ^ (0xD1B54A32D192ED03 * (i + 1)); element
 * j (row-major) takes the generator's (j + 1)-th output, whose state is
 * s0 + (j + 1) * 0x9E3779B97F4A7C15, mixed (L3_MIX64): a closed form, so
 * every element is computed on its own (any loop order, any number of
 * threads, the same mask).  The element is zeroed when its draw
 * u = (z >> 11) * 2^-53 < p, which for the integer z >> 11 is exactly
 * (z >> 11) < ceil(p * 2^53): the kernels compare integers and never round.
 * The backward pass recomputes the same mask (the forward node's index, the
 * same element index).
 *
 * The seed of a step is the value of the `train.step` input (1, 2, ... as
 * the trainer feeds it for the optimizer; exact in float32 up to 2^24
 * steps), or 0 in a training graph without one: the generated step draws
 * what ref_forward(g, s, true, step) draws. */
static L3Expr *dropout_seed(Lo *L)
{
    for (int i = 0; i < L->g->ninputs; i++) {
        int t = L->g->inputs[i].tensor;
        const Tensor *te = &L->g->tensors[t];
        if (te->kind == TK_HYPER && te->dtype == DT_F32 && strcmp(te->name, "train.step") == 0)
            return l3_cast(L->m, L3_U64, load(L, buf(L, t, false, "step"), I(L, 0)));
    }
    return l3_u64(L->m, 0);
}

/* x * mask / (1 - p) with dropout node `node`'s mask at coordinates c of
 * shape s (its output's, or its gradient's: the same); lower_grad.c
 * declares it too. */
L3Expr *dropout_value(Lo *L, int node, const Shape *s, L3Expr *const *c, L3Expr *x)
{
    double p = L->g->nodes[node].at.p;
    if (!(p > 0)) return x;   /* nothing is dropped */
    const uint64_t gamma = 0x9E3779B97F4A7C15ull, key = 0xD1B54A32D192ED03ull * (uint64_t)(node + 1);
    L3Expr *j1 = add(L, l3_cast(L->m, L3_U64, lin(L, s, c)), l3_u64(L->m, 1));
    L3Expr *state = add(L, bin(L, L3_XOR, dropout_seed(L), l3_u64(L->m, key)), mul(L, j1, l3_u64(L->m, gamma)));
    L3Expr *z = l3_un(L->m, L3_MIX64, state);
    uint64_t below = (uint64_t)ceil(p * 9007199254740992.0);   /* ceil(p * 2^53) */
    L3Expr *drop = bin(L, L3_LT, bin(L, L3_SHR, z, I(L, 11)), l3_u64(L->m, below));
    return l3_select(L->m, drop, F(L, 0), mul(L, x, F(L, 1.0 / (1.0 - p))));
}

/* The value of node p's output at coordinates c, as an expression: the
 * nodes a kernel computes besides its anchor (epilogue chains and inlined
 * movement ops).  Every load stays in bounds whichever way a select goes
 * (backends may evaluate both sides). */
static L3Expr *clampi(Lo *L, L3Expr *e, int64_t hi) { return bin(L, L3_MIN, bin(L, L3_MAX, e, I(L, 0)), I(L, hi - 1)); }

static L3Expr *pointwise_value(Lo *L, const Node *n, L3Expr *x, L3Expr *const *c, const Shape *os)
{
    const OpAttrs *at = &n->at;
    switch (n->op) {
    case OP_SCALE: return mul(L, x, F(L, at->factor));
    case OP_RELU: return l3_select(L->m, bin(L, L3_LT, F(L, 0), x), x, F(L, 0));
    case OP_LEAKY_RELU: return l3_select(L->m, bin(L, L3_LE, F(L, 0), x), x, mul(L, x, F(L, at->slope)));
    case OP_PRELU: {
        const Param *pw = &L->g->params[n->params[0]];
        L3Expr *a = load(L, buf(L, pw->tensor, false, "prelu_weight"), at->shared || os->rank < 2 ? I(L, 0) : c[1]);
        return l3_select(L->m, bin(L, L3_LE, F(L, 0), x), x, mul(L, a, x));
    }
    case OP_ELU: return l3_select(L->m, bin(L, L3_LT, F(L, 0), x), x, mul(L, F(L, at->alpha), l3_un(L->m, L3_EXPM1, x)));
    case OP_SIGMOID: return dv(L, F(L, 1), add(L, F(L, 1), l3_un(L->m, L3_EXP, l3_un(L->m, L3_NEG, x))));
    case OP_TANH: return l3_un(L->m, L3_TANH, x);
    case OP_DROPOUT: return L->training ? dropout_value(L, (int)(n - L->g->nodes), os, c, x) : x;
    default: return NULL;
    }
}

static L3Expr *node_expr(Lo *L, int p, L3Expr *const *c)
{
    const Node *n = &L->g->nodes[p];
    const OpAttrs *at = &n->at;
    const Shape *os = tshape(L, n->out);
    L3Expr *cc[MAX_RANK];
    for (int i = 0; i < os->rank; i++) cc[i] = c[i];
    switch (n->op) {
    case OP_ONES: return F(L, 1);
    case OP_ADD: case OP_MUL: {
        L3Expr *r = NULL;
        for (int j = 0; j < n->nin; j++) {
            const Shape *js = tshape(L, n->in[j]);
            L3Expr *jc[MAX_RANK];
            for (int i = 0; i < js->rank; i++) jc[i] = js->d[i] == 1 && os->d[i] != 1 ? I(L, 0) : c[i];
            L3Expr *v = val(L, n->in[j], jc);
            r = r ? bin(L, n->op == OP_ADD ? L3_ADD : L3_MUL, r, v) : v;
        }
        return r;
    }
    case OP_BATCHNORM: {   /* inference: the running statistics, folded to scale and shift */
        int j = 0;
        const Graph *g = L->g;
        L3Expr *ch = c[1];
        L3Expr *w = at->affine ? load(L, buf(L, g->params[n->params[j++]].tensor, false, "bn_weight"), ch) : F(L, 1);
        L3Expr *b = at->affine ? load(L, buf(L, g->params[n->params[j++]].tensor, false, "bn_bias"), ch) : F(L, 0);
        L3Expr *rm = load(L, buf(L, g->params[n->params[j++]].tensor, false, "running_mean"), ch);
        L3Expr *rv = load(L, buf(L, g->params[n->params[j]].tensor, false, "running_var"), ch);
        L3Expr *sc = dv(L, w, l3_un(L->m, L3_SQRT, add(L, rv, F(L, at->eps))));
        return l3_fma(L->m, val(L, n->in[0], c), sc, sub(L, b, mul(L, rm, sc)));
    }
    case OP_CONCAT: {
        L3Expr *r = NULL;
        int64_t c0 = tshape(L, n->out)->d[1];
        for (int j = n->nin - 1; j >= 0; j--) {
            const Shape *js = tshape(L, n->in[j]);
            c0 -= js->d[1];
            cc[1] = clampi(L, sub(L, c[1], I(L, c0)), js->d[1]);
            L3Expr *v = val(L, n->in[j], cc);
            r = r ? l3_select(L->m, bin(L, L3_LT, c[1], I(L, c0 + js->d[1])), v, r) : v;
        }
        return r;
    }
    case OP_CROP:
        for (int i = 2; i < os->rank; i++) cc[i] = add(L, c[i], I(L, at->pad.lo[i - 2]));
        return val(L, n->in[0], cc);
    case OP_PAD: {
        const Shape *is = tshape(L, n->in[0]);
        L3Expr *inside = NULL;
        for (int i = 2; i < os->rank; i++) {
            int64_t len = is->d[i];
            L3Expr *q = sub(L, c[i], I(L, at->pad.lo[i - 2]));
            if (at->mode == 0) {
                L3Expr *ok = bin(L, L3_AND, bin(L, L3_LE, I(L, 0), q), bin(L, L3_LT, q, I(L, len)));
                inside = inside ? bin(L, L3_AND, inside, ok) : ok;
                cc[i] = clampi(L, q, len);
            } else if (at->mode == 2)
                cc[i] = clampi(L, q, len);
            else
                cc[i] = l3_select(L->m, bin(L, L3_LT, q, I(L, 0)), l3_un(L->m, L3_NEG, q),
                                  l3_select(L->m, bin(L, L3_LT, q, I(L, len)), q, sub(L, I(L, 2 * (len - 1)), q)));
        }
        L3Expr *v = val(L, n->in[0], cc);
        return inside ? l3_select(L->m, inside, v, F(L, at->value)) : v;
    }
    case OP_UPSAMPLE: {   /* nearest (linear is a kernel of its own) */
        const Shape *is = tshape(L, n->in[0]);
        for (int i = 2; i < os->rank; i++)
            cc[i] = bin(L, L3_MIN, dv(L, mul(L, c[i], I(L, is->d[i])), I(L, os->d[i])), I(L, is->d[i] - 1));
        return val(L, n->in[0], cc);
    }
    case OP_GRAD: {
        const Node *f = &L->g->nodes[at->grad_node];
        int k = at->grad_operand;
        L3Expr *dy = NULL;
        switch (f->op) {
        case OP_CONCAT: {   /* a slice of dy */
            int64_t c0 = 0;
            for (int j = 0; j < k; j++) c0 += tshape(L, f->in[j])->d[1];
            cc[1] = add(L, c[1], I(L, c0));
            return val(L, n->in[0], cc);
        }
        case OP_CROP: {     /* dy padded back */
            const Shape *ys = tshape(L, f->out);
            L3Expr *inside = NULL;
            for (int i = 2; i < os->rank; i++) {
                L3Expr *q = sub(L, c[i], I(L, f->at.pad.lo[i - 2]));
                L3Expr *ok = bin(L, L3_AND, bin(L, L3_LE, I(L, 0), q), bin(L, L3_LT, q, I(L, ys->d[i])));
                inside = inside ? bin(L, L3_AND, inside, ok) : ok;
                cc[i] = clampi(L, q, ys->d[i]);
            }
            L3Expr *v = val(L, n->in[0], cc);
            return inside ? l3_select(L->m, inside, v, F(L, 0)) : v;
        }
        case OP_PAD:        /* zero padding: dy cropped */
            for (int i = 2; i < os->rank; i++) cc[i] = add(L, c[i], I(L, f->at.pad.lo[i - 2]));
            return val(L, n->in[0], cc);
        case OP_ADD: case OP_MUL: {   /* same shape as dy (a broadcast operand is a reduction kernel) */
            L3Expr *r = val(L, n->in[0], c);
            if (f->op == OP_MUL)
                for (int j = 0; j < f->nin; j++) {
                    if (j == k) continue;
                    const Shape *js = tshape(L, f->in[j]);
                    L3Expr *jc[MAX_RANK];
                    for (int i = 0; i < js->rank; i++) jc[i] = js->d[i] == 1 && os->d[i] != 1 ? I(L, 0) : c[i];
                    r = mul(L, r, val(L, n->in[1 + j], jc));
                }
            return r;
        }
        default: break;
        }
        if (k != 0) return NULL;
        dy = val(L, n->in[0], c);
        L3Expr *x = val(L, n->in[1], c);
        switch (f->op) {
        case OP_SCALE: return mul(L, dy, F(L, f->at.factor));
        case OP_RELU: return l3_select(L->m, bin(L, L3_LT, F(L, 0), x), dy, F(L, 0));
        case OP_LEAKY_RELU: return l3_select(L->m, bin(L, L3_LE, F(L, 0), x), dy, mul(L, dy, F(L, f->at.slope)));
        case OP_PRELU: {
            L3Expr *a = load(L, buf(L, n->in[1 + f->nin], false, "prelu_weight"),
                             f->at.shared || os->rank < 2 ? I(L, 0) : c[1]);
            return l3_select(L->m, bin(L, L3_LE, F(L, 0), x), dy, mul(L, a, dy));
        }
        case OP_ELU:
            return l3_select(L->m, bin(L, L3_LT, F(L, 0), x), dy, mul(L, dy, mul(L, F(L, f->at.alpha), l3_un(L->m, L3_EXP, x))));
        case OP_SIGMOID: {
            L3Expr *sg = dv(L, F(L, 1), add(L, F(L, 1), l3_un(L->m, L3_EXP, l3_un(L->m, L3_NEG, x))));
            return mul(L, dy, mul(L, sg, sub(L, F(L, 1), sg)));
        }
        case OP_TANH: {
            L3Expr *t = l3_un(L->m, L3_TANH, x);
            return mul(L, dy, sub(L, F(L, 1), mul(L, t, t)));
        }
        case OP_DROPOUT: return L->training ? dropout_value(L, at->grad_node, os, c, dy) : dy;
        default: return NULL;
        }
    }
    default: {
        if (n->nin < 1) return NULL;
        const Shape *is = tshape(L, n->in[0]);
        L3Expr *jc[MAX_RANK];
        for (int i = 0; i < is->rank; i++) jc[i] = is->d[i] == 1 && os->d[i] != 1 ? I(L, 0) : c[i];
        return pointwise_value(L, n, val(L, n->in[0], jc), c, os);
    }
    }
}

/* ---- pointwise ops ----------------------------------------------------------------------------- */

static bool lower_pointwise(Lo *L, char *err, size_t errlen)
{
    const Node *n = L->n;
    const Shape *os = tshape(L, n->out);
    L3Expr *c[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, os, c);
    L3Expr *x = n->nin > 0 ? val(L, n->in[0], bcoords(L, tshape(L, n->in[0]), os, c)) : NULL;
    L3Expr *r = NULL;
    switch (n->op) {
    case OP_ADD:
    case OP_MUL:
        r = x;
        for (int j = 1; j < n->nin; j++)
            r = bin(L, n->op == OP_ADD ? L3_ADD : L3_MUL, r, val(L, n->in[j], bcoords(L, tshape(L, n->in[j]), os, c)));
        break;
    case OP_BATCHNORM:   /* inference, as an elementwise kernel of its own */
        r = node_expr(L, L->index, c);
        break;
    case OP_DROPOUT:
        r = L->training ? dropout_value(L, L->index, os, c, x) : x;
        break;
    case OP_SCALE: case OP_RELU: case OP_LEAKY_RELU: case OP_PRELU: case OP_ELU: case OP_SIGMOID: case OP_TANH:
        r = pointwise_value(L, n, x, c, os);
        break;
    default:
        snprintf(err, errlen, "%s: no pointwise lowering for %s", n->name, op_table[n->op].name);
        return false;
    }
    emit(L, b, c, r);
    return true;
}

/* ---- movement ---------------------------------------------------------------------------------- */

static bool lower_concat(Lo *L)
{
    const Shape *os = tshape(L, L->n->out);
    int64_t c0 = 0;
    for (int j = 0; j < L->n->nin; j++) {
        const Shape *is = tshape(L, L->n->in[j]);
        L3Expr *c[MAX_RANK];
        L3Block *b = loops_over(L, &L->k->body, is, c);
        L3Expr *oc[MAX_RANK];
        for (int i = 0; i < os->rank; i++) oc[i] = c[i];
        oc[1] = add(L, c[1], I(L, c0));
        emit(L, b, oc, val(L, L->n->in[j], c));
        c0 += is->d[1];
    }
    return true;
}

static bool lower_crop(Lo *L)
{
    const Shape *os = tshape(L, L->n->out);
    L3Expr *c[MAX_RANK], *ic[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, os, c);
    for (int i = 0; i < os->rank; i++) ic[i] = i < 2 ? c[i] : add(L, c[i], I(L, L->n->at.pad.lo[i - 2]));
    emit(L, b, c, val(L, L->n->in[0], ic));
    return true;
}

/* pad: source index per axis (zero: fill outside; reflect; replicate). */
static bool lower_pad(Lo *L)
{
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
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
    L3Expr *v = val(L, L->n->in[0], ic);
    if (inside) v = l3_select(L->m, inside, v, F(L, at->value));
    emit(L, b, c, v);
    return true;
}

/* ---- convolution --------------------------------------------------------------------------------- */

static bool lower_conv(Lo *L)
{
    if (!getenv("NETC_CONV_ELEMENTWISE")) {
        if (!getenv("NETC_CONV_ROWS") && lower_conv_tiled(L)) return true;
        int acc = conv_accumulator(L);
        if (acc >= 0) return lower_conv_rows(L, acc);
    }
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int sr = os->rank - 2;
    int w = param_buf(L, 0, false), bb = at->bias ? param_buf(L, 1, false) : -1;
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
    l3_assign(L->m, body, acc, l3_fma(L->m, val(L, L->n->in[0], ic), load(L, w, lin(L, &ws, wc)), V(L, acc)));
    emit(L, b, c, V(L, acc));
    return true;
}

/* Transposed convolution as a gather: output position o receives input
 * position i through tap t when i*s + t*dil - lo = o. */
static bool lower_upconv(Lo *L)
{
    if (!getenv("NETC_CONV_ELEMENTWISE")) {
        if (!getenv("NETC_CONV_ROWS") && lower_upconv_tiled(L)) return true;
        int acc = conv_accumulator(L);
        if (acc >= 0)
            return lower_transposed_rows(L, L->n->in[0], L->g->params[L->n->params[0]].tensor,
                                         L->n->at.bias ? param_buf(L, 1, false) : -1, acc);
    }
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int sr = os->rank - 2;
    int w = param_buf(L, 0, false), bb = at->bias ? param_buf(L, 1, false) : -1;
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
    l3_assign(L->m, body, acc, l3_fma(L->m, val(L, L->n->in[0], ic), load(L, w, lin(L, &ws, wc)), V(L, acc)));
    emit(L, b, c, V(L, acc));
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
    L3Expr *v = val(L, L->n->in[0], ic);
    if (is_max)   /* NaN propagates, as in the reference */
        l3_assign(L->m, body, acc, l3_select(L->m, bin(L, L3_OR, bin(L, L3_LT, V(L, acc), v), bin(L, L3_NE, v, v)),
                                             l3_select(L->m, bin(L, L3_NE, V(L, acc), V(L, acc)), V(L, acc), v), V(L, acc)));
    else
        l3_assign(L->m, body, acc, add(L, V(L, acc), v));
    L3Expr *r = V(L, acc);
    if (!is_max) r = dv(L, r, l3_cast(L->m, L3_F32, at->count_pad ? padded : cnt));
    emit(L, b, c, r);
    return true;
}

static bool lower_global_avgpool(Lo *L)
{
    const Shape *is = tshape(L, L->n->in[0]);
    int64_t sp = numel0(is) / (is->d[0] * is->d[1]);
    int nc;
    L3Block *b = loop(L, &L->k->body, "nc", is->d[0] * is->d[1], &nc, L3_PARALLEL);
    int acc = l3_var(L->m, L->k, "sum", L3_F32, false);
    l3_local(L->m, b, acc, F(L, 0));
    int i;
    L3Block *body = loop(L, b, "i", sp, &i, L3_VECTORIZE);
    l3_assign(L->m, body, acc, add(L, V(L, acc), valf(L, L->n->in[0], add(L, mul(L, V(L, nc), I(L, sp)), V(L, i)))));
    emitf(L, b, V(L, nc), dv(L, V(L, acc), F(L, (double)sp)));
    return true;
}

/* upsample: nearest floor(o * in / out); linear: the reference's source
 * coordinate, interpolated axis by axis (separable weights). */
static bool lower_upsample(Lo *L)
{
    const OpAttrs *at = &L->n->at;
    const Shape *os = tshape(L, L->n->out), *is = tshape(L, L->n->in[0]);
    int sr = os->rank - 2;
    L3Expr *c[MAX_RANK];
    L3Block *b = loops_over(L, &L->k->body, os, c);
    if (at->mode != 1) {
        L3Expr *ic[MAX_RANK];
        ic[0] = c[0];
        ic[1] = c[1];
        for (int i = 0; i < sr; i++)
            ic[2 + i] = bin(L, L3_MIN, dv(L, mul(L, c[2 + i], I(L, is->d[2 + i])), I(L, os->d[2 + i])), I(L, is->d[2 + i] - 1));
        emit(L, b, c, val(L, L->n->in[0], ic));
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
        L3Expr *term = mul(L, wt, val(L, L->n->in[0], ic));
        acc = acc ? add(L, acc, term) : term;
    }
    emit(L, b, c, acc);
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
        /* blocked sums (sum_loops: a partial per n, per plane, per row), so
         * the float rounding grows with the extents, not with N x space */
        int64_t ext[MAX_RANK + 1];
        const char *nms[MAX_RANK + 1];
        unsigned ann[MAX_RANK + 1];
        int sv[MAX_RANK + 1];
        int nl = sum_levels(is, batch, ext, nms, ann);
        #define SIDX sum_element(L, is, batch, sv, nv, cv)
        l3_local(L->m, outer, mean, F(L, 0));
        int a[SUM_MAX_ACC] = { mean };
        L3Block *ib = sum_loops(L, outer, nl, ext, nms, ann, sv, 1, a);
        l3_assign(L->m, ib, a[0], add(L, V(L, a[0]), valf(L, L->n->in[0], SIDX)));
        l3_assign(L->m, outer, mean, dv(L, V(L, mean), F(L, (double)count)));
        /* the second pass also sums the deviations, which corrects the mean
         * and the variance for the first pass's rounding (the corrected
         * two-pass algorithm; lower_grad.c grad_norm does the same) */
        l3_local(L->m, outer, var, F(L, 0));
        int dev = l3_var(L->m, L->k, "dev", L3_F32, false);
        l3_local(L->m, outer, dev, F(L, 0));
        a[0] = var, a[1] = dev;
        ib = sum_loops(L, outer, nl, ext, nms, ann, sv, 2, a);
        int dvar = l3_var(L->m, L->k, "d", L3_F32, false);
        l3_local(L->m, ib, dvar, sub(L, valf(L, L->n->in[0], SIDX), V(L, mean)));
        l3_assign(L->m, ib, a[0], l3_fma(L->m, V(L, dvar), V(L, dvar), V(L, a[0])));
        l3_assign(L->m, ib, a[1], add(L, V(L, a[1]), V(L, dvar)));
        l3_assign(L->m, outer, dev, dv(L, V(L, dev), F(L, (double)count)));
        l3_assign(L->m, outer, var, l3_fma(L->m, l3_un(L->m, L3_NEG, V(L, dev)), V(L, dev),
                                          dv(L, V(L, var), F(L, (double)count))));
        l3_assign(L->m, outer, mean, add(L, V(L, mean), V(L, dev)));
        #undef SIDX
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
    emitf(L, ab, BASE(V(L, nn)), l3_fma(L->m, valf(L, L->n->in[0], BASE(V(L, nn))), V(L, sc), V(L, sh)));
    #undef BASE
    return true;
}

static bool lower_softmax(Lo *L)
{
    const Shape *is = tshape(L, L->n->in[0]);
    int64_t N = is->d[0], C = is->d[1], sp = numel0(is) / (N * C);
    int x = L->n->in[0];
    int nv, pv, cv;
    L3Block *b = loop(L, &L->k->body, "n", N, &nv, L3_PARALLEL);
    b = loop(L, b, "p", sp, &pv, L3_VECTORIZE);
    #define AT(cc) add(L, mul(L, add(L, mul(L, V(L, nv), I(L, C)), (cc)), I(L, sp)), V(L, pv))
    int m = l3_var(L->m, L->k, "m", L3_F32, false), s = l3_var(L->m, L->k, "sum", L3_F32, false);
    l3_local(L->m, b, m, F(L, -INFINITY));
    L3Block *cb = loop(L, b, "c", C, &cv, 0);
    l3_assign(L->m, cb, m, bin(L, L3_MAX, V(L, m), valf(L, x, AT(V(L, cv)))));
    l3_local(L->m, b, s, F(L, 0));
    cb = loop(L, b, "c", C, &cv, 0);
    l3_assign(L->m, cb, s, add(L, V(L, s), l3_un(L->m, L3_EXP, sub(L, valf(L, x, AT(V(L, cv))), V(L, m)))));
    cb = loop(L, b, "c", C, &cv, 0);
    emitf(L, cb, AT(V(L, cv)), dv(L, l3_un(L->m, L3_EXP, sub(L, valf(L, x, AT(V(L, cv))), V(L, m))), V(L, s)));
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
        int v;
        L3Block *b = loop(L, &L->k->body, "i", numel0(os), &v, 0);
        emitf(L, b, V(L, v), F(L, 1));
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
        Lo L = { m, k, g, &g->nodes[i], i, training, NULL, NULL, NULL, NULL };
        if (!lower_node(&L, err, errlen)) {
            l3_module_free(m);
            return NULL;
        }
        l3_entry_call(e, m->nkernels - 1);
    }
    return m;
}

/* One L3 kernel per kernel of the fusion plan: the anchor's loop nest, its
 * epilogue applied where the anchor stores, movement ops read through as
 * index arithmetic; horizontal (update) kernels run their nodes one after
 * another. */
L3Module *lower_graph_fused(const Graph *g, const FusionPlan *fp, bool training, char *err, size_t errlen)
{
    char name[256];
    snprintf(name, sizeof name, "%s for protocol %s", g->net_name ? g->net_name : "net",
             g->protocol_name ? g->protocol_name : "?");
    L3Module *m = l3_module_new(name, g->ntensors);
    L3Entry *e = l3_entry_new(m, training ? "netc_train_forward" : "netc_forward");
    /* A training step also gets its two halves, so a trainer can look at the
     * gradients (clip them by their global norm) before the update. */
    bool updates = false;
    for (int ki = 0; ki < fp->nkernels; ki++) updates = updates || fp->kernels[ki].kind == KK_UPDATE;
    int e_grads = -1, e_update = -1;
    if (training && updates) {
        e_grads = l3_entry_new(m, "netc_grads") - m->entries;
        e_update = l3_entry_new(m, "netc_update") - m->entries;
        e = &m->entries[0];
    }
    bool *in_kern = calloc((size_t)(g->nnodes > 0 ? g->nnodes : 1), sizeof *in_kern);
    if (!in_kern) {
        snprintf(err, errlen, "out of memory");
        l3_module_free(m);
        return NULL;
    }
    for (int ki = 0; ki < fp->nkernels; ki++) {
        const Kernel *K = &fp->kernels[ki];
        char kn[160], id[128], comment[1024];
        c_ident(id, sizeof id, g->nodes[K->anchor].name);
        snprintf(kn, sizeof kn, "k%d_%s", ki, id);
        size_t used = (size_t)snprintf(comment, sizeof comment, "%s kernel:", kernel_kind_name(K->kind));
        for (int j = 0; j < K->nnodes && used < sizeof comment - 64; j++)
            used += (size_t)snprintf(comment + used, sizeof comment - used, " %s%s", g->nodes[K->nodes[j]].name,
                                     fp->inlined && fp->inlined[K->nodes[j]] ? " (inlined)" : "");
        if (used >= sizeof comment - 64) snprintf(comment + sizeof comment - 8, 8, " ...");
        L3Kernel *k = l3_kernel_new(m, kn, comment);
        for (int j = 0; j < K->nnodes; j++) in_kern[K->nodes[j]] = true;
        bool ok = true;
        if (K->kind == KK_UPDATE) {
            for (int j = 0; j < K->nnodes && ok; j++) {
                Lo L = { m, k, g, &g->nodes[K->nodes[j]], K->nodes[j], training, fp, K, in_kern, NULL };
                ok = lower_node(&L, err, errlen);
            }
        } else {
            Lo L = { m, k, g, &g->nodes[K->anchor], K->anchor, training, fp, K, in_kern, NULL };
            ok = lower_node(&L, err, errlen);
        }
        for (int j = 0; j < K->nnodes; j++) in_kern[K->nodes[j]] = false;
        if (!ok) {
            free(in_kern);
            l3_module_free(m);
            return NULL;
        }
        e = &m->entries[0];
        l3_entry_call(e, m->nkernels - 1);
        if (e_grads >= 0) l3_entry_call(&m->entries[K->kind == KK_UPDATE ? e_update : e_grads], m->nkernels - 1);
    }
    free(in_kern);
    return m;
}
