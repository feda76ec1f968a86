/* ref.c — reference executor: state, random numbers, parameter init, the
 * node dispatcher, and the movement / elementwise ops.  Windowed ops,
 * resampling and norms are in ref_ops.c, losses in ref_loss.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_internal.h"

/* ---- state ----------------------------------------------------------------- */

RefState *ref_new(const Graph *g)
{
    RefState *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->ntensors = g->ntensors;
    s->buf = calloc((size_t)(g->ntensors ? g->ntensors : 1), sizeof *s->buf);
    s->numel = calloc((size_t)(g->ntensors ? g->ntensors : 1), sizeof *s->numel);
    if (!s->buf || !s->numel) {
        ref_free(s);
        return NULL;
    }
    for (int t = 0; t < g->ntensors; t++) {
        int64_t n = g->tensors[t].shape.rank == 0 ? 1 : shape_numel(&g->tensors[t].shape);
        s->numel[t] = n;
        s->buf[t] = calloc((size_t)(n ? n : 1), sizeof(float));   /* int32 is the same size */
        if (!s->buf[t]) {
            ref_free(s);
            return NULL;
        }
    }
    return s;
}

void ref_free(RefState *s)
{
    if (!s) return;
    for (int t = 0; s->buf && t < s->ntensors; t++)
        free(s->buf[t]);
    free(s->buf);
    free(s->numel);
    free(s);
}

/* ---- random numbers (contract in ref.h) --------------------------------------- */

uint64_t ref_rng_next(RefRng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double ref_rng_uniform(RefRng *r)
{
    return (double)(ref_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

double ref_rng_normal(RefRng *r)
{
    double u1 = ref_rng_uniform(r), u2 = ref_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

void ref_fill_uniform(RefState *s, int t, uint64_t seed, double lo, double hi)
{
    RefRng r = { seed };
    for (int64_t i = 0; i < s->numel[t]; i++)
        s->buf[t][i] = (float)(lo + (hi - lo) * ref_rng_uniform(&r));
}

void ref_init_params(const Graph *g, RefState *s, uint64_t seed)
{
    for (int p = 0; p < g->nparams; p++) {
        const Param *pa = &g->params[p];
        const InitRule *ir = &pa->init;
        RefRng r = { seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(p + 1)) };
        float *w = s->buf[pa->tensor];
        int64_t n = s->numel[pa->tensor];
        double fi = ir->fan_in > 0 ? (double)ir->fan_in : 1.0;
        double fo = ir->fan_out > 0 ? (double)ir->fan_out : 1.0;
        double gain = 2.0 / (1.0 + ir->a * ir->a);
        for (int64_t i = 0; i < n; i++) {
            double v = 0;
            switch (ir->kind) {
            case INIT_HE_NORMAL: v = sqrt(gain / fi) * ref_rng_normal(&r); break;
            case INIT_HE_UNIFORM: v = sqrt(3.0 * gain / fi) * (2 * ref_rng_uniform(&r) - 1); break;
            case INIT_XAVIER_NORMAL: v = sqrt(2.0 / (fi + fo)) * ref_rng_normal(&r); break;
            case INIT_XAVIER_UNIFORM: v = sqrt(6.0 / (fi + fo)) * (2 * ref_rng_uniform(&r) - 1); break;
            case INIT_ZEROS: v = 0; break;
            case INIT_ONES: v = 1; break;
            case INIT_CONST: v = ir->a; break;
            }
            w[i] = (float)v;
        }
    }
}

/* ---- helpers ---------------------------------------------------------------- */

Geo ref_geo(const Shape *s)
{
    Geo g = { 1, 1, { 1, 1, 1 } };
    if (s->rank >= 1) g.n = s->d[0];
    if (s->rank >= 2) g.c = s->d[1];
    int sr = s->rank - 2;
    for (int i = 0; i < sr && i < 3; i++)
        g.s[3 - sr + i] = s->d[2 + i];
    return g;
}

void ref_axes3(const int64_t *v, int sr, int64_t def, int64_t out[3])
{
    for (int i = 0; i < 3; i++)
        out[i] = def;
    for (int i = 0; i < sr && i < 3; i++)
        out[3 - sr + i] = v[i];
}

int ref_fail(const RefCtx *cx, const char *fmt, ...)
{
    if (cx->err && cx->errlen) {
        int k = snprintf(cx->err, cx->errlen, "%s: ", cx->node->name);
        if (k >= 0 && (size_t)k < cx->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(cx->err + k, cx->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

const float *ref_in(const RefCtx *cx, int j) { return cx->st->buf[cx->node->in[j]]; }
const Shape *ref_in_shape(const RefCtx *cx, int j) { return &cx->g->tensors[cx->node->in[j]].shape; }
float *ref_out(const RefCtx *cx) { return cx->st->buf[cx->node->out]; }
const Shape *ref_out_shape(const RefCtx *cx) { return &cx->g->tensors[cx->node->out].shape; }
float *ref_param(const RefCtx *cx, int j) { return cx->st->buf[cx->g->params[cx->node->params[j]].tensor]; }

static int64_t numel0(const Shape *s) { return s->rank == 0 ? 1 : shape_numel(s); }

/* ---- movement ------------------------------------------------------------------ */

static int ref_concat(const RefCtx *cx)
{
    Geo o = ref_geo(ref_out_shape(cx));
    float *y = ref_out(cx);
    int64_t sp = geo_sp(&o), c0 = 0;
    for (int j = 0; j < cx->node->nin; j++) {
        Geo a = ref_geo(ref_in_shape(cx, j));
        const float *x = ref_in(cx, j);
        for (int64_t n = 0; n < o.n; n++)
            for (int64_t c = 0; c < a.c; c++)
                memcpy(y + (n * o.c + c0 + c) * sp, x + (n * a.c + c) * sp, (size_t)sp * sizeof(float));
        c0 += a.c;
    }
    return 0;
}

/* crop: output[o] = input[o + pad.lo] on each spatial axis (the shape rule
 * stores the amounts removed at the start in pad.lo, also for crop(x, ref)). */
static int ref_crop(const RefCtx *cx)
{
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t lo[3];
    ref_axes3(cx->node->at.pad.lo, cx->g->tensors[cx->node->out].shape.rank - 2, 0, lo);
    const float *x = ref_in(cx, 0);
    float *y = ref_out(cx);
    for (int64_t n = 0; n < o.n; n++)
        for (int64_t c = 0; c < o.c; c++)
            for (int64_t d = 0; d < o.s[0]; d++)
                for (int64_t h = 0; h < o.s[1]; h++)
                    for (int64_t w = 0; w < o.s[2]; w++)
                        y[geo_at(&o, n, c, d, h, w)] = x[geo_at(&a, n, c, d + lo[0], h + lo[1], w + lo[2])];
    return 0;
}

/* Source index for output position i - lo of an axis of size n; -1 = fill. */
int64_t ref_pad_src(int64_t i, int64_t n, int mode)
{
    if (i >= 0 && i < n) return i;
    if (mode == 0) return -1;
    if (mode == 2) return i < 0 ? 0 : n - 1;           /* replicate */
    return i < 0 ? -i : 2 * (n - 1) - i;                /* reflect (amount < n) */
}

static int ref_pad(const RefCtx *cx)
{
    const OpAttrs *at = &cx->node->at;
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t lo[3];
    ref_axes3(at->pad.lo, ref_out_shape(cx)->rank - 2, 0, lo);
    const float *x = ref_in(cx, 0);
    float *y = ref_out(cx);
    for (int64_t n = 0; n < o.n; n++)
        for (int64_t c = 0; c < o.c; c++)
            for (int64_t d = 0; d < o.s[0]; d++)
                for (int64_t h = 0; h < o.s[1]; h++)
                    for (int64_t w = 0; w < o.s[2]; w++) {
                        int64_t sd = ref_pad_src(d - lo[0], a.s[0], at->mode);
                        int64_t sh = ref_pad_src(h - lo[1], a.s[1], at->mode);
                        int64_t sw = ref_pad_src(w - lo[2], a.s[2], at->mode);
                        y[geo_at(&o, n, c, d, h, w)] = sd < 0 || sh < 0 || sw < 0
                            ? (float)at->value : x[geo_at(&a, n, c, sd, sh, sw)];
                    }
    return 0;
}

/* ---- elementwise arithmetic ------------------------------------------------------ */

/* Offset into a broadcast input for the output position `idx` (row-major
 * unravelled): size-1 axes and rank-0 inputs stay at 0. */
int64_t ref_bcast_offset(const Shape *in, const Shape *out, int64_t idx)
{
    if (in->rank == 0) return 0;
    int64_t off = 0, stride = 1;
    for (int i = out->rank - 1; i >= 0; i--) {
        int64_t coord = idx % out->d[i];
        idx /= out->d[i];
        if (in->d[i] != 1) off += coord * stride;
        stride *= in->d[i];
    }
    return off;
}

static int ref_add_mul(const RefCtx *cx, bool mul)
{
    const Shape *os = ref_out_shape(cx);
    float *y = ref_out(cx);
    int64_t n = numel0(os);
    for (int64_t i = 0; i < n; i++) {
        double acc = mul ? 1.0 : 0.0;
        for (int j = 0; j < cx->node->nin; j++) {
            double v = ref_in(cx, j)[ref_bcast_offset(ref_in_shape(cx, j), os, i)];
            acc = mul ? acc * v : acc + v;
        }
        y[i] = (float)acc;
    }
    return 0;
}

static int ref_elementwise(const RefCtx *cx)
{
    const OpAttrs *at = &cx->node->at;
    const Shape *is = ref_in_shape(cx, 0);
    const float *x = ref_in(cx, 0);
    float *y = ref_out(cx);
    int64_t n = numel0(is);
    const float *pw = cx->node->op == OP_PRELU ? ref_param(cx, 0) : NULL;
    Geo g = ref_geo(is);
    int64_t sp = is->rank >= 2 ? numel0(is) / (g.n * g.c) : 1;
    RefRng rng = { cx->seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(cx->index + 1)) };
    for (int64_t i = 0; i < n; i++) {
        double v = x[i], r = v;
        switch (cx->node->op) {
        case OP_SCALE: r = v * at->factor; break;
        case OP_RELU: r = v > 0 ? v : 0; break;
        case OP_LEAKY_RELU: r = v >= 0 ? v : v * at->slope; break;
        case OP_PRELU: {
            double a = at->shared ? pw[0] : pw[(i / sp) % g.c];
            r = v >= 0 ? v : a * v;
            break;
        }
        case OP_ELU: r = v > 0 ? v : at->alpha * expm1(v); break;
        case OP_SIGMOID: r = 1.0 / (1.0 + exp(-v)); break;
        case OP_TANH: r = tanh(v); break;
        case OP_DROPOUT:
            if (cx->training) r = ref_rng_uniform(&rng) < at->p ? 0.0 : v / (1.0 - at->p);
            break;
        default: return ref_fail(cx, "not an elementwise op");
        }
        y[i] = (float)r;
    }
    return 0;
}

/* softmax over dim 1 (channels), max subtracted first. */
static int ref_softmax(const RefCtx *cx)
{
    const Shape *is = ref_in_shape(cx, 0);
    Geo g = ref_geo(is);
    int64_t sp = numel0(is) / (g.n * g.c);
    const float *x = ref_in(cx, 0);
    float *y = ref_out(cx);
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t p = 0; p < sp; p++) {
            const float *xp = x + n * g.c * sp + p;
            float *yp = y + n * g.c * sp + p;
            double m = -INFINITY, sum = 0;
            for (int64_t c = 0; c < g.c; c++)
                if (xp[c * sp] > m) m = xp[c * sp];
            for (int64_t c = 0; c < g.c; c++)
                sum += exp(xp[c * sp] - m);
            for (int64_t c = 0; c < g.c; c++)
                yp[c * sp] = (float)(exp(xp[c * sp] - m) / sum);
        }
    return 0;
}

/* ---- dispatch ---------------------------------------------------------------------- */

int ref_run_node(const Graph *g, RefState *s, int i, bool training, uint64_t seed, char *err,
                 size_t errlen)
{
    RefCtx cx = { g, &g->nodes[i], i, s, training, seed, err, errlen };
    switch (g->nodes[i].op) {
    case OP_CONV: return ref_conv(&cx);
    case OP_UPCONV: return ref_upconv(&cx);
    case OP_MAXPOOL: return ref_pool(&cx, true);
    case OP_AVGPOOL: return ref_pool(&cx, false);
    case OP_GLOBAL_AVGPOOL: return ref_global_avgpool(&cx);
    case OP_UPSAMPLE: return ref_upsample(&cx);
    case OP_CONCAT: return ref_concat(&cx);
    case OP_CROP: return ref_crop(&cx);
    case OP_PAD: return ref_pad(&cx);
    case OP_ADD: return ref_add_mul(&cx, false);
    case OP_MUL: return ref_add_mul(&cx, true);
    case OP_BATCHNORM: return ref_batchnorm(&cx);
    case OP_INSTANCENORM: return ref_instancenorm(&cx);
    case OP_SOFTMAX: return ref_softmax(&cx);
    case OP_SCALE: case OP_RELU: case OP_LEAKY_RELU: case OP_PRELU: case OP_ELU:
    case OP_SIGMOID: case OP_TANH: case OP_DROPOUT:
        return ref_elementwise(&cx);
    case OP_CE: case OP_DICE: case OP_FOCAL: return ref_loss(&cx);
    case OP_GRAD: {
        const Node *nd = &g->nodes[i];
        return ref_vjp(g, s, nd->at.grad_node, s->buf[nd->in[0]], nd->at.grad_operand, s->buf[nd->out],
                       training, seed, err, errlen);
    }
    case OP_SGD_UPDATE: case OP_ADAM_UPDATE: return ref_update_node(&cx);
    case OP_ONES:
        for (int64_t k = 0; k < s->numel[g->nodes[i].out]; k++) s->buf[g->nodes[i].out][k] = 1;
        return 0;
    case OP_COUNT: break;
    }
    return ref_fail(&cx, "op %d has no reference implementation", (int)g->nodes[i].op);
}

int ref_forward(const Graph *g, RefState *s, bool training, uint64_t seed, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (s->ntensors != g->ntensors) {
        if (err && errlen) snprintf(err, errlen, "state was made for another graph");
        return -1;
    }
    for (int i = 0; i < g->nnodes; i++)
        if (ref_run_node(g, s, i, training, seed, err, errlen) != 0) return -1;
    return 0;
}
