/* ref_backward.c — reference backward pass: gradients of a scalar with
 * respect to every float tensor, the nodes visited in reverse topological
 * order.  Each op's gradient is written as the plain derivative of the
 * forward formula in ref.c / ref_ops.c / ref_loss.c, with the same loop
 * nests; gradients accumulate in double scratch buffers (one per tensor)
 * and are stored as float32 at the end. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_internal.h"

typedef struct {
    RefCtx cx;
    double **G;           /* gradient accumulators, per tensor */
} BCtx;

static double *g_out(const BCtx *b) { return b->G[b->cx.node->out]; }
static double *g_in(const BCtx *b, int j) { return b->G[b->cx.node->in[j]]; }
static double *g_param(const BCtx *b, int j) { return b->G[b->cx.g->params[b->cx.node->params[j]].tensor]; }
static int64_t numel0(const Shape *s) { return s->rank == 0 ? 1 : shape_numel(s); }
static int sr_of(const RefCtx *cx) { return ref_out_shape(cx)->rank - 2; }

/* ---- elementwise ------------------------------------------------------------- */

static int bw_elementwise(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    const OpAttrs *at = &cx->node->at;
    const Shape *is = ref_in_shape(cx, 0);
    const float *x = ref_in(cx, 0);
    const double *gy = g_out(b);
    double *gx = g_in(b, 0);
    int64_t n = numel0(is);
    bool prelu = cx->node->op == OP_PRELU;
    const float *pw = prelu ? ref_param(cx, 0) : NULL;
    double *gw = prelu ? g_param(b, 0) : NULL;
    Geo g = ref_geo(is);
    int64_t sp = is->rank >= 2 ? numel0(is) / (g.n * g.c) : 1;
    RefRng rng = { cx->seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(cx->index + 1)) };
    for (int64_t i = 0; i < n; i++) {
        double v = x[i], d = gy[i], r = d;
        switch (cx->node->op) {
        case OP_SCALE: r = d * at->factor; break;
        case OP_RELU: r = v > 0 ? d : 0; break;
        case OP_LEAKY_RELU: r = v >= 0 ? d : d * at->slope; break;
        case OP_PRELU: {
            int64_t k = at->shared ? 0 : (i / sp) % g.c;
            r = v >= 0 ? d : pw[k] * d;
            if (v < 0) gw[k] += d * v;
            break;
        }
        case OP_ELU: r = v > 0 ? d : d * at->alpha * exp(v); break;
        case OP_SIGMOID: {
            double s = 1.0 / (1.0 + exp(-v));
            r = d * s * (1 - s);
            break;
        }
        case OP_TANH: {
            double t = tanh(v);
            r = d * (1 - t * t);
            break;
        }
        case OP_DROPOUT:
            if (cx->training) r = ref_rng_uniform(&rng) < at->p ? 0.0 : d / (1.0 - at->p);
            break;
        default: return ref_fail(cx, "not an elementwise op");
        }
        gx[i] += r;
    }
    return 0;
}

/* softmax over channels: dx_c = y_c (dy_c - sum_k dy_k y_k), y recomputed in
 * double. */
static int bw_softmax(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    const Shape *is = ref_in_shape(cx, 0);
    Geo g = ref_geo(is);
    int64_t sp = numel0(is) / (g.n * g.c);
    const float *x = ref_in(cx, 0);
    const double *gy = g_out(b);
    double *gx = g_in(b, 0);
    double *y = malloc(sizeof *y * (size_t)(g.c ? g.c : 1));
    if (!y) return ref_fail(cx, "out of memory");
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t p = 0; p < sp; p++) {
            int64_t base = n * g.c * sp + p;
            double m = -INFINITY, sum = 0, dot = 0;
            for (int64_t c = 0; c < g.c; c++)
                if (x[base + c * sp] > m) m = x[base + c * sp];
            for (int64_t c = 0; c < g.c; c++)
                sum += (y[c] = exp(x[base + c * sp] - m));
            for (int64_t c = 0; c < g.c; c++) {
                y[c] /= sum;
                dot += gy[base + c * sp] * y[c];
            }
            for (int64_t c = 0; c < g.c; c++)
                gx[base + c * sp] += y[c] * (gy[base + c * sp] - dot);
        }
    free(y);
    return 0;
}

/* ---- arithmetic ------------------------------------------------------------------ */

/* add: every input gets dy summed over its broadcast axes; mul: times the
 * product of the other inputs. */
static int bw_add_mul(const BCtx *b, bool mul)
{
    const RefCtx *cx = &b->cx;
    const Shape *os = ref_out_shape(cx);
    const double *gy = g_out(b);
    int64_t n = numel0(os);
    int nin = cx->node->nin;
    for (int64_t i = 0; i < n; i++) {
        if (gy[i] == 0) continue;
        for (int j = 0; j < nin; j++) {
            double d = gy[i];
            if (mul)
                for (int k = 0; k < nin; k++)
                    if (k != j) d *= ref_in(cx, k)[ref_bcast_offset(ref_in_shape(cx, k), os, i)];
            g_in(b, j)[ref_bcast_offset(ref_in_shape(cx, j), os, i)] += d;
        }
    }
    return 0;
}

/* ---- movement ------------------------------------------------------------------- */

static int bw_concat(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    Geo o = ref_geo(ref_out_shape(cx));
    const double *gy = g_out(b);
    int64_t sp = geo_sp(&o), c0 = 0;
    for (int j = 0; j < cx->node->nin; j++) {
        Geo a = ref_geo(ref_in_shape(cx, j));
        double *gx = g_in(b, j);
        for (int64_t n = 0; n < o.n; n++)
            for (int64_t c = 0; c < a.c; c++)
                for (int64_t i = 0; i < sp; i++)
                    gx[(n * a.c + c) * sp + i] += gy[(n * o.c + c0 + c) * sp + i];
        c0 += a.c;
    }
    return 0;
}

static int bw_crop(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t lo[3];
    ref_axes3(cx->node->at.pad.lo, ref_out_shape(cx)->rank - 2, 0, lo);
    const double *gy = g_out(b);
    double *gx = g_in(b, 0);
    for (int64_t n = 0; n < o.n; n++)
        for (int64_t c = 0; c < o.c; c++)
            for (int64_t d = 0; d < o.s[0]; d++)
                for (int64_t h = 0; h < o.s[1]; h++)
                    for (int64_t w = 0; w < o.s[2]; w++)
                        gx[geo_at(&a, n, c, d + lo[0], h + lo[1], w + lo[2])] += gy[geo_at(&o, n, c, d, h, w)];
    return 0;
}

static int bw_pad(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    const OpAttrs *at = &cx->node->at;
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t lo[3];
    ref_axes3(at->pad.lo, ref_out_shape(cx)->rank - 2, 0, lo);
    const double *gy = g_out(b);
    double *gx = g_in(b, 0);
    for (int64_t n = 0; n < o.n; n++)
        for (int64_t c = 0; c < o.c; c++)
            for (int64_t d = 0; d < o.s[0]; d++)
                for (int64_t h = 0; h < o.s[1]; h++)
                    for (int64_t w = 0; w < o.s[2]; w++) {
                        int64_t sd = ref_pad_src(d - lo[0], a.s[0], at->mode);
                        int64_t sh = ref_pad_src(h - lo[1], a.s[1], at->mode);
                        int64_t sw = ref_pad_src(w - lo[2], a.s[2], at->mode);
                        if (sd < 0 || sh < 0 || sw < 0) continue;
                        gx[geo_at(&a, n, c, sd, sh, sw)] += gy[geo_at(&o, n, c, d, h, w)];
                    }
    return 0;
}

/* ---- conv, upconv ------------------------------------------------------------------ */

static int bw_conv(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    const OpAttrs *at = &cx->node->at;
    int sr = sr_of(cx);
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t k[3], st[3], dl[3], lo[3];
    ref_axes3(at->kernel, sr, 1, k);
    ref_axes3(at->stride, sr, 1, st);
    ref_axes3(at->dilation, sr, 1, dl);
    ref_axes3(at->pad.lo, sr, 0, lo);
    const float *x = ref_in(cx, 0), *w = ref_param(cx, 0);
    const double *gy = g_out(b);
    double *gx = g_in(b, 0), *gw = g_param(b, 0), *gb = at->bias ? g_param(b, 1) : NULL;
    int64_t G = at->groups, cpg = a.c / G, opg = o.c / G;
    for (int64_t n = 0; n < o.n; n++)
    for (int64_t co = 0; co < o.c; co++) {
        int64_t grp = co / opg;
        for (int64_t od = 0; od < o.s[0]; od++)
        for (int64_t oh = 0; oh < o.s[1]; oh++)
        for (int64_t ow = 0; ow < o.s[2]; ow++) {
            double d = gy[geo_at(&o, n, co, od, oh, ow)];
            if (gb) gb[co] += d;
            if (d == 0) continue;
            for (int64_t ci = 0; ci < cpg; ci++)
            for (int64_t td = 0; td < k[0]; td++) {
                int64_t id = od * st[0] - lo[0] + td * dl[0];
                if (id < 0 || id >= a.s[0]) continue;
                for (int64_t th = 0; th < k[1]; th++) {
                    int64_t ih = oh * st[1] - lo[1] + th * dl[1];
                    if (ih < 0 || ih >= a.s[1]) continue;
                    for (int64_t tw = 0; tw < k[2]; tw++) {
                        int64_t iw = ow * st[2] - lo[2] + tw * dl[2];
                        if (iw < 0 || iw >= a.s[2]) continue;
                        int64_t xi = geo_at(&a, n, grp * cpg + ci, id, ih, iw);
                        int64_t wi = (((co * cpg + ci) * k[0] + td) * k[1] + th) * k[2] + tw;
                        gx[xi] += d * w[wi];
                        gw[wi] += d * x[xi];
                    }
                }
            }
        }
    }
    return 0;
}

static int bw_upconv(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    const OpAttrs *at = &cx->node->at;
    int sr = sr_of(cx);
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t k[3], st[3], dl[3], lo[3];
    ref_axes3(at->kernel, sr, 1, k);
    ref_axes3(at->stride, sr, 1, st);
    ref_axes3(at->dilation, sr, 1, dl);
    ref_axes3(at->pad.lo, sr, 0, lo);
    const float *x = ref_in(cx, 0), *w = ref_param(cx, 0);
    const double *gy = g_out(b);
    double *gx = g_in(b, 0), *gw = g_param(b, 0), *gb = at->bias ? g_param(b, 1) : NULL;
    int64_t G = at->groups, cpg = a.c / G, opg = o.c / G;
    for (int64_t n = 0; n < a.n; n++)
    for (int64_t ci = 0; ci < a.c; ci++) {
        int64_t grp = ci / cpg;
        for (int64_t id = 0; id < a.s[0]; id++)
        for (int64_t ih = 0; ih < a.s[1]; ih++)
        for (int64_t iw = 0; iw < a.s[2]; iw++) {
            int64_t xi = geo_at(&a, n, ci, id, ih, iw);
            double xv = x[xi], acc = 0;
            for (int64_t cl = 0; cl < opg; cl++)
            for (int64_t td = 0; td < k[0]; td++) {
                int64_t od = id * st[0] + td * dl[0] - lo[0];
                if (od < 0 || od >= o.s[0]) continue;
                for (int64_t th = 0; th < k[1]; th++) {
                    int64_t oh = ih * st[1] + th * dl[1] - lo[1];
                    if (oh < 0 || oh >= o.s[1]) continue;
                    for (int64_t tw = 0; tw < k[2]; tw++) {
                        int64_t ow = iw * st[2] + tw * dl[2] - lo[2];
                        if (ow < 0 || ow >= o.s[2]) continue;
                        int64_t wi = (((ci * opg + cl) * k[0] + td) * k[1] + th) * k[2] + tw;
                        double d = gy[geo_at(&o, n, grp * opg + cl, od, oh, ow)];
                        acc += d * w[wi];
                        gw[wi] += d * xv;
                    }
                }
            }
            gx[xi] += acc;
        }
    }
    if (gb) {
        int64_t sp = geo_sp(&o);
        for (int64_t i = 0; i < o.n * o.c * sp; i++)
            gb[(i / sp) % o.c] += gy[i];
    }
    return 0;
}

/* ---- pools, upsample ------------------------------------------------------------------- */

/* maxpool: dy goes to the first maximum of the window (row-major), as
 * PyTorch's CPU kernel; avgpool: dy / divisor to every real element. */
static int bw_pool(const BCtx *b, bool is_max)
{
    const RefCtx *cx = &b->cx;
    const OpAttrs *at = &cx->node->at;
    int sr = sr_of(cx);
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t k[3], st[3], lo[3], hi[3];
    ref_axes3(at->kernel, sr, 1, k);
    ref_axes3(at->stride, sr, 1, st);
    ref_axes3(at->pad.lo, sr, 0, lo);
    ref_axes3(at->pad.hi, sr, 0, hi);
    const float *x = ref_in(cx, 0);
    const double *gy = g_out(b);
    double *gx = g_in(b, 0);
    for (int64_t n = 0; n < o.n; n++)
    for (int64_t c = 0; c < o.c; c++)
    for (int64_t od = 0; od < o.s[0]; od++) {
        RefWin wd = ref_pool_win(od, k[0], st[0], lo[0], hi[0], a.s[0]);
        for (int64_t oh = 0; oh < o.s[1]; oh++) {
            RefWin wh = ref_pool_win(oh, k[1], st[1], lo[1], hi[1], a.s[1]);
            for (int64_t ow = 0; ow < o.s[2]; ow++) {
                RefWin ww = ref_pool_win(ow, k[2], st[2], lo[2], hi[2], a.s[2]);
                double d = gy[geo_at(&o, n, c, od, oh, ow)];
                if (d == 0) continue;
                if (is_max) {
                    double m = -INFINITY;
                    int64_t arg = -1;
                    for (int64_t zd = wd.r0; zd < wd.r1; zd++)
                    for (int64_t zh = wh.r0; zh < wh.r1; zh++)
                    for (int64_t zw = ww.r0; zw < ww.r1; zw++) {
                        int64_t xi = geo_at(&a, n, c, zd, zh, zw);
                        double v = x[xi];
                        if (arg < 0 || v > m || (isnan(v) && !isnan(m))) {
                            m = v;
                            arg = xi;
                        }
                    }
                    if (arg >= 0) gx[arg] += d;
                } else {
                    int64_t cnt = (wd.r1 - wd.r0) * (wh.r1 - wh.r0) * (ww.r1 - ww.r0);
                    double div = (double)(at->count_pad ? wd.padded * wh.padded * ww.padded : cnt);
                    for (int64_t zd = wd.r0; zd < wd.r1; zd++)
                    for (int64_t zh = wh.r0; zh < wh.r1; zh++)
                    for (int64_t zw = ww.r0; zw < ww.r1; zw++)
                        gx[geo_at(&a, n, c, zd, zh, zw)] += d / div;
                }
            }
        }
    }
    return 0;
}

static int bw_global_avgpool(const BCtx *b)
{
    Geo a = ref_geo(ref_in_shape(&b->cx, 0));
    int64_t sp = geo_sp(&a);
    const double *gy = g_out(b);
    double *gx = g_in(b, 0);
    for (int64_t nc = 0; nc < a.n * a.c; nc++)
        for (int64_t i = 0; i < sp; i++)
            gx[nc * sp + i] += gy[nc] / (double)sp;
    return 0;
}

static int bw_upsample(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    const OpAttrs *at = &cx->node->at;
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    bool lin = at->mode == 1, al = at->align_corners;
    const double *gy = g_out(b);
    double *gx = g_in(b, 0);
    for (int64_t n = 0; n < o.n; n++)
    for (int64_t c = 0; c < o.c; c++)
    for (int64_t od = 0; od < o.s[0]; od++) {
        RefLerp ld = ref_upsample_src(od, a.s[0], o.s[0], lin, al);
        for (int64_t oh = 0; oh < o.s[1]; oh++) {
            RefLerp lh = ref_upsample_src(oh, a.s[1], o.s[1], lin, al);
            for (int64_t ow = 0; ow < o.s[2]; ow++) {
                RefLerp lw = ref_upsample_src(ow, a.s[2], o.s[2], lin, al);
                double d = gy[geo_at(&o, n, c, od, oh, ow)];
                for (int cd = 0; cd < 2; cd++)
                for (int ch = 0; ch < 2; ch++)
                for (int cw = 0; cw < 2; cw++) {
                    double wt = (cd ? ld.l1 : 1 - ld.l1) * (ch ? lh.l1 : 1 - lh.l1) *
                                (cw ? lw.l1 : 1 - lw.l1);
                    if (wt == 0) continue;
                    gx[geo_at(&a, n, c, cd ? ld.i1 : ld.i0, ch ? lh.i1 : lh.i0, cw ? lw.i1 : lw.i0)] += wt * d;
                }
            }
        }
    }
    return 0;
}

/* ---- norms -------------------------------------------------------------------------------- */

/* One normalized group: the `cnt` elements at idx(k) (k < cnt) normalized by
 * mean/var (batch: true when mean/var are statistics of these very
 * elements, so their dependence on x is differentiated). */
typedef struct {
    const Geo *g;
    int64_t c;          /* channel */
    int64_t n0, n1;     /* samples covered */
} Group;

static void bw_group(const BCtx *b, const Group *gr, double mean, double var, double eps, bool batch,
                     const float *w, double *gw, double *gb)
{
    const Geo *g = gr->g;
    const float *x = ref_in(&b->cx, 0);
    const double *gy = g_out(b);
    double *gx = g_in(b, 0);
    int64_t sp = geo_sp(g), c = gr->c;
    double inv = 1.0 / sqrt(var + eps), sc = w ? w[c] : 1.0;
    double sdy = 0, sdyxh = 0, cnt = (double)((gr->n1 - gr->n0) * sp);
    for (int64_t n = gr->n0; n < gr->n1; n++)
        for (int64_t i = 0; i < sp; i++) {
            int64_t j = (n * g->c + c) * sp + i;
            double xh = ((double)x[j] - mean) * inv;
            sdy += gy[j];
            sdyxh += gy[j] * xh;
        }
    if (gw) gw[c] += sdyxh;
    if (gb) gb[c] += sdy;
    for (int64_t n = gr->n0; n < gr->n1; n++)
        for (int64_t i = 0; i < sp; i++) {
            int64_t j = (n * g->c + c) * sp + i;
            double xh = ((double)x[j] - mean) * inv;
            double r = gy[j];
            if (batch) r -= (sdy + xh * sdyxh) / cnt;
            gx[j] += sc * inv * r;
        }
}

static void stats(const float *x, const Geo *g, int64_t c, int64_t n0, int64_t n1, double *mean, double *var)
{
    int64_t sp = geo_sp(g);
    double sum = 0, sq = 0, cnt = (double)((n1 - n0) * sp);
    for (int64_t n = n0; n < n1; n++)
        for (int64_t i = 0; i < sp; i++)
            sum += x[(n * g->c + c) * sp + i];
    *mean = sum / cnt;
    for (int64_t n = n0; n < n1; n++)
        for (int64_t i = 0; i < sp; i++) {
            double dv = x[(n * g->c + c) * sp + i] - *mean;
            sq += dv * dv;
        }
    *var = sq / cnt;
}

/* batchnorm training: the full batch-statistics backward
 * dx = w inv (dy - mean(dy) - xhat mean(dy xhat)); eval: affine with the
 * running statistics. */
static int bw_batchnorm(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    const OpAttrs *at = &cx->node->at;
    Geo g = ref_geo(ref_in_shape(cx, 0));
    int j = 0;
    const float *w = at->affine ? ref_param(cx, j) : NULL;
    double *gw = at->affine ? g_param(b, j++) : NULL;
    double *gb = at->affine ? g_param(b, j++) : NULL;
    const float *rm = ref_param(cx, j), *rv = ref_param(cx, j + 1);
    for (int64_t c = 0; c < g.c; c++) {
        double mean = rm[c], var = rv[c];
        if (cx->training) stats(ref_in(cx, 0), &g, c, 0, g.n, &mean, &var);
        Group gr = { &g, c, 0, g.n };
        bw_group(b, &gr, mean, var, at->eps, cx->training, w, gw, gb);
    }
    return 0;
}

static int bw_instancenorm(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    const OpAttrs *at = &cx->node->at;
    Geo g = ref_geo(ref_in_shape(cx, 0));
    const float *w = at->affine ? ref_param(cx, 0) : NULL;
    double *gw = at->affine ? g_param(b, 0) : NULL, *gb = at->affine ? g_param(b, 1) : NULL;
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t c = 0; c < g.c; c++) {
            double mean, var;
            stats(ref_in(cx, 0), &g, c, n, n + 1, &mean, &var);
            Group gr = { &g, c, n, n + 1 };
            bw_group(b, &gr, mean, var, at->eps, true, w, gw, gb);
        }
    return 0;
}

/* ---- losses ---------------------------------------------------------------------------------- */

/* probabilities and log-probabilities over channels at voxel (n, p) */
static void softmax_at(const float *x, const Geo *g, int64_t n, int64_t p, double *pr, double *lsm)
{
    ref_log_softmax_at(x, g, n, p, lsm);
    for (int64_t c = 0; c < g->c; c++) pr[c] = exp(lsm[c]);
}

/* ce:    dL/dx_c = m w_y (p_c - [c = y]) / sum m w (m: the voxel weight).
 * focal: l = -a (1 - pt)^g L with L = log pt; dl/dL = -a (1 - pt)^g +
 *        a g pt L (1 - pt)^(g - 1), dL/dx_c = [c = y] - p_c; / count.
 * dice:  dc = (2 tp + s) / dd with d(dd)/dp = 1 and d(2 tp + s)/dp = 2 y,
 *        so d dc/dp_c = 2 y / dd - dc / dd (0 / 1e-8 clamp: no dd term),
 *        times the voxel weight m;
 *        loss = -mean(dc); then through the softmax. */
static int bw_loss(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    const OpAttrs *at = &cx->node->at;
    OpKind op = cx->node->op;
    Geo g = ref_geo(ref_in_shape(cx, 0));
    int64_t sp = geo_sp(&g), C = g.c;
    const float *x = ref_in(cx, 0);
    double *gx = g_in(b, 0), go = g_out(b)[0];
    int32_t *lab = ref_prepare_labels(cx, &g);
    bool oom;
    float *wm = ref_prepare_weightmap(cx, &g, &oom);
    double *pr = malloc(sizeof *pr * (size_t)(2 * C + 1));
    int64_t rows = at->batch_dice ? 1 : g.n;
    double *st = op == OP_DICE ? calloc((size_t)(3 * rows * C), sizeof *st) : NULL;
    int rc = 0;
    if (!lab || oom || !pr || (op == OP_DICE && !st)) {
        rc = ref_fail(cx, "out of memory");
        goto done;
    }
    double *lsm = pr + C, *gl = pr + C;   /* gl reuses lsm's room in the dice pass */
    int64_t ignore = at->ignore;
    /* pass 1: normalizers (ce, focal) or dice statistics */
    double den = 0;
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t p = 0; p < sp; p++) {
            int64_t y = lab[n * sp + p];
            if (ignore >= 0 && y == ignore) continue;
            if (y < 0 || y >= C) {
                rc = ref_fail(cx, "label %lld out of range [0, %lld)", (long long)y, (long long)C);
                goto done;
            }
            double m = wm ? wm[n * sp + p] : 1.0;
            if (op == OP_CE) den += m * (at->nweights ? at->weights[y] : 1.0);
            else if (op == OP_FOCAL) den += m;
            else {
                softmax_at(x, &g, n, p, pr, lsm);
                double *row = st + 3 * C * (at->batch_dice ? 0 : n);
                for (int64_t c = 0; c < C; c++) {
                    double yc = c == y ? 1.0 : 0.0;
                    row[c] += m * pr[c] * yc;
                    row[C + c] += m * pr[c] * (1 - yc);
                    row[2 * C + c] += m * (1 - pr[c]) * yc;
                }
            }
        }
    int64_t cnt = 0;
    if (op == OP_DICE) {
        cnt = (at->background ? C : C - 1) * rows;
        /* turn each row into (1 / dd, dc / dd, unused) */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < C; c++) {
                double *row = st + 3 * C * r;
                double tp = row[c], fp = row[C + c], fn = row[2 * C + c];
                double dd = 2 * tp + fp + fn + at->smooth;
                bool clamp = !(dd > 1e-8);
                double ddc = clamp ? 1e-8 : dd;
                double dc = (2 * tp + at->smooth) / ddc;
                row[c] = 1.0 / ddc;
                row[C + c] = clamp ? 0.0 : dc / ddc;
            }
    }
    /* pass 2: gradients */
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t p = 0; p < sp; p++) {
            int64_t y = lab[n * sp + p];
            if (ignore >= 0 && y == ignore) continue;
            softmax_at(x, &g, n, p, pr, lsm);
            double *gp = gx + n * C * sp + p;
            double m = wm ? wm[n * sp + p] : 1.0;
            if (op == OP_CE) {
                double w = m * (at->nweights ? at->weights[y] : 1.0) * go / den;
                for (int64_t c = 0; c < C; c++)
                    gp[c * sp] += w * (pr[c] - (c == y ? 1.0 : 0.0));
            } else if (op == OP_FOCAL) {
                double pt = pr[y], L = lsm[y], a = y >= 1 ? at->alpha : 1 - at->alpha, gm = at->gamma;
                double dL = -a * pow(1 - pt, gm);
                if (gm != 0 && 1 - pt > 0) dL += a * gm * pt * L * pow(1 - pt, gm - 1);
                dL *= m * go / den;
                for (int64_t c = 0; c < C; c++)
                    gp[c * sp] += dL * ((c == y ? 1.0 : 0.0) - pr[c]);
            } else {
                double *row = st + 3 * C * (at->batch_dice ? 0 : n), dot = 0;
                for (int64_t c = 0; c < C; c++) {
                    double v = 0;
                    if (at->background || c > 0)
                        v = -m * go / (double)cnt * ((c == y ? 2.0 : 0.0) * row[c] - row[C + c]);
                    gl[c] = v;
                    dot += v * pr[c];
                }
                for (int64_t c = 0; c < C; c++)
                    gp[c * sp] += pr[c] * (gl[c] - dot);
            }
        }
done:
    free(lab);
    free(wm);
    free(pr);
    free(st);
    return rc;
}

/* ---- driver ----------------------------------------------------------------------------------------- */

static int bw_node(const BCtx *b)
{
    const RefCtx *cx = &b->cx;
    switch (cx->node->op) {
    case OP_CONV: return bw_conv(b);
    case OP_UPCONV: return bw_upconv(b);
    case OP_MAXPOOL: return bw_pool(b, true);
    case OP_AVGPOOL: return bw_pool(b, false);
    case OP_GLOBAL_AVGPOOL: return bw_global_avgpool(b);
    case OP_UPSAMPLE: return bw_upsample(b);
    case OP_CONCAT: return bw_concat(b);
    case OP_CROP: return bw_crop(b);
    case OP_PAD: return bw_pad(b);
    case OP_ADD: return bw_add_mul(b, false);
    case OP_MUL: return bw_add_mul(b, true);
    case OP_BATCHNORM: return bw_batchnorm(b);
    case OP_INSTANCENORM: return bw_instancenorm(b);
    case OP_SOFTMAX: return bw_softmax(b);
    case OP_SCALE: case OP_RELU: case OP_LEAKY_RELU: case OP_PRELU: case OP_ELU:
    case OP_SIGMOID: case OP_TANH: case OP_DROPOUT:
        return bw_elementwise(b);
    case OP_CE: case OP_DICE: case OP_FOCAL: return bw_loss(b);
    case OP_GRAD: case OP_ONES: case OP_SGD_UPDATE: case OP_ADAM_UPDATE: break;   /* second derivatives: not needed for training */
    case OP_COUNT: break;
    }
    return ref_fail(cx, "backward of %s is not implemented yet",
                    (unsigned)cx->node->op < (unsigned)OP_COUNT ? op_table[(unsigned)cx->node->op].name : "?");
}

static bool all_zero(const double *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (v[i] != 0) return false;
    return true;
}

int ref_backward_from(const Graph *g, const RefState *s, RefGrads *gr, int t, const float *dy,
                      bool training, uint64_t seed, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (s->ntensors != g->ntensors || gr->ntensors != g->ntensors || t < 0 || t >= g->ntensors ||
        g->tensors[t].dtype != DT_F32) {
        if (err && errlen) snprintf(err, errlen, "backward: state, gradients or tensor do not match the graph");
        return -1;
    }
    int rc = 0;
    double **G = calloc((size_t)(g->ntensors ? g->ntensors : 1), sizeof *G);
    if (!G) goto oom;
    for (int k = 0; k < g->ntensors; k++)
        if (!(G[k] = calloc((size_t)(s->numel[k] ? s->numel[k] : 1), sizeof **G))) goto oom;
    for (int64_t i = 0; i < s->numel[t]; i++)
        G[t][i] = dy[i];
    for (int i = g->nnodes - 1; i >= 0 && rc == 0; i--) {
        const Node *nd = &g->nodes[i];
        if (all_zero(G[nd->out], s->numel[nd->out])) continue;   /* off the path: nothing flows */
        BCtx b = { { g, nd, i, (RefState *)s, training, seed, err, errlen }, G };
        rc = bw_node(&b);
    }
    for (int k = 0; k < g->ntensors; k++) {
        const Tensor *te = &g->tensors[k];
        bool none = te->dtype != DT_F32;
        memset(gr->buf[k], 0, sizeof(float) * (size_t)gr->numel[k]);
        if (none || rc) continue;
        for (int64_t i = 0; i < gr->numel[k]; i++)
            gr->buf[k][i] = (float)G[k][i];
    }
    for (int p = 0; p < g->nparams; p++)
        if (!g->params[p].trainable || g->params[p].frozen)
            memset(gr->buf[g->params[p].tensor], 0, sizeof(float) * (size_t)gr->numel[g->params[p].tensor]);
    for (int k = 0; k < g->ntensors; k++)
        free(G[k]);
    free(G);
    return rc;
oom:
    if (G)
        for (int k = 0; k < g->ntensors; k++)
            free(G[k]);
    free(G);
    if (err && errlen) snprintf(err, errlen, "backward: out of memory");
    return -1;
}

int ref_backward(const Graph *g, const RefState *s, RefGrads *gr, int loss_tensor, bool training,
                 uint64_t seed, char *err, size_t errlen)
{
    if (loss_tensor < 0 || loss_tensor >= g->ntensors || s->numel[loss_tensor] != 1) {
        if (err && errlen) snprintf(err, errlen, "backward: the loss must be a one-element float tensor");
        return -1;
    }
    const float one = 1.0f;
    return ref_backward_from(g, s, gr, loss_tensor, &one, training, seed, err, errlen);
}

/* ---- one node's gradient, for the L1 `grad` nodes autodiff makes -------------- */

int ref_vjp(const Graph *g, const RefState *s, int node, const float *dy, int operand, float *out,
            bool training, uint64_t seed, char *err, size_t errlen)
{
    const Node *nd = &g->nodes[node];
    int target = operand < nd->nin ? nd->in[operand] : g->params[nd->params[operand - nd->nin]].tensor;
    /* accumulators for this node's tensors only: the backward of one node
     * touches nothing else */
    double **G = calloc((size_t)(g->ntensors ? g->ntensors : 1), sizeof *G);
    if (!G) goto oom;
    int ts[72], nts = 0;
    ts[nts++] = nd->out;
    for (int j = 0; j < nd->nin && nts < 64; j++) ts[nts++] = nd->in[j];
    for (int j = 0; j < nd->nparams; j++) ts[nts++] = g->params[nd->params[j]].tensor;
    for (int k = 0; k < nts; k++)
        if (!G[ts[k]] && !(G[ts[k]] = calloc((size_t)(s->numel[ts[k]] ? s->numel[ts[k]] : 1), sizeof **G))) goto oom;
    for (int64_t i = 0; i < s->numel[nd->out]; i++) G[nd->out][i] = dy[i];
    BCtx b = { { g, nd, node, (RefState *)s, training, seed, err, errlen }, G };
    int rc = bw_node(&b);
    if (rc == 0)
        for (int64_t i = 0; i < s->numel[target]; i++) out[i] = (float)G[target][i];
    for (int k = 0; k < g->ntensors; k++) free(G[k]);
    free(G);
    return rc;
oom:
    if (G)
        for (int k = 0; k < g->ntensors; k++) free(G[k]);
    free(G);
    if (err && errlen) snprintf(err, errlen, "backward: out of memory");
    return -1;
}
