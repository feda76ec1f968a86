/* ref_ops.c — reference conv, upconv, pools, upsample and norms.  Every loop
 * nest runs over N, C, D, H, W; 1D and 2D tensors have D (and H) = 1 and the
 * per-axis attributes are padded the same way (ref_axes3). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_internal.h"

static int sr_of(const RefCtx *cx) { return ref_out_shape(cx)->rank - 2; }

/* conv: cross-correlation, PyTorch ConvNd.
 * y[n, co, o] = bias[co] + sum_{ci in group, t} x[n, g*cpg + ci, o*s - lo + t*dil] * w[co, ci, t]
 * with zeros outside the input. */
int ref_conv(const RefCtx *cx)
{
    const OpAttrs *at = &cx->node->at;
    int sr = sr_of(cx);
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t k[3], st[3], dl[3], lo[3];
    ref_axes3(at->kernel, sr, 1, k);
    ref_axes3(at->stride, sr, 1, st);
    ref_axes3(at->dilation, sr, 1, dl);
    ref_axes3(at->pad.lo, sr, 0, lo);
    const float *x = ref_in(cx, 0), *w = ref_param(cx, 0), *b = at->bias ? ref_param(cx, 1) : NULL;
    float *y = ref_out(cx);
    int64_t G = at->groups, cpg = a.c / G, opg = o.c / G;
    for (int64_t n = 0; n < o.n; n++)
    for (int64_t co = 0; co < o.c; co++) {
        int64_t grp = co / opg;
        for (int64_t od = 0; od < o.s[0]; od++)
        for (int64_t oh = 0; oh < o.s[1]; oh++)
        for (int64_t ow = 0; ow < o.s[2]; ow++) {
            double acc = b ? b[co] : 0.0;
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
                        double xv = x[geo_at(&a, n, grp * cpg + ci, id, ih, iw)];
                        double wv = w[(((co * cpg + ci) * k[0] + td) * k[1] + th) * k[2] + tw];
                        acc += xv * wv;
                    }
                }
            }
            y[geo_at(&o, n, co, od, oh, ow)] = (float)acc;
        }
    }
    return 0;
}

/* upconv: PyTorch ConvTransposeNd.  Input position i with tap t lands at
 * full-output position i*s + t*dil; the output is that full result with
 * pad.lo removed at the start (position p maps to output p - lo), and
 * whatever lies beyond the output size (pad.hi, or past out_pad) dropped.
 * Weight [Cin, Cout/g, k...]. */
int ref_upconv(const RefCtx *cx)
{
    const OpAttrs *at = &cx->node->at;
    int sr = sr_of(cx);
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t k[3], st[3], dl[3], lo[3];
    ref_axes3(at->kernel, sr, 1, k);
    ref_axes3(at->stride, sr, 1, st);
    ref_axes3(at->dilation, sr, 1, dl);
    ref_axes3(at->pad.lo, sr, 0, lo);
    const float *x = ref_in(cx, 0), *w = ref_param(cx, 0), *b = at->bias ? ref_param(cx, 1) : NULL;
    float *y = ref_out(cx);
    int64_t G = at->groups, cpg = a.c / G, opg = o.c / G;
    int64_t on = o.n * o.c * geo_sp(&o);
    double *acc = calloc((size_t)(on ? on : 1), sizeof *acc);
    if (!acc) return ref_fail(cx, "out of memory");
    for (int64_t n = 0; n < a.n; n++)
    for (int64_t ci = 0; ci < a.c; ci++) {
        int64_t grp = ci / cpg;
        for (int64_t id = 0; id < a.s[0]; id++)
        for (int64_t ih = 0; ih < a.s[1]; ih++)
        for (int64_t iw = 0; iw < a.s[2]; iw++) {
            double xv = x[geo_at(&a, n, ci, id, ih, iw)];
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
                        double wv = w[(((ci * opg + cl) * k[0] + td) * k[1] + th) * k[2] + tw];
                        acc[geo_at(&o, n, grp * opg + cl, od, oh, ow)] += xv * wv;
                    }
                }
            }
        }
    }
    int64_t sp = geo_sp(&o);
    for (int64_t i = 0; i < on; i++)
        y[i] = (float)(acc[i] + (b ? b[(i / sp) % o.c] : 0.0));
    free(acc);
    return 0;
}

/* One axis of a pooling window, as PyTorch computes it: the window starts
 * at o*s - lo and ends at min(start + k, in + hi) (the padded extent; ceil
 * mode may reach past it); [r0, r1) is its part inside the input. */

RefWin ref_pool_win(int64_t o, int64_t k, int64_t s, int64_t lo, int64_t hi, int64_t in)
{
    int64_t start = o * s - lo, end = start + k;
    if (end > in + hi) end = in + hi;
    RefWin w = { start < 0 ? 0 : start, end > in ? in : end, end - start };
    return w;
}

/* maxpool (-inf padding) and avgpool (count_pad: divide by the window's
 * size within the padded bounds, PyTorch count_include_pad; otherwise by
 * the number of real elements). */
int ref_pool(const RefCtx *cx, bool is_max)
{
    const OpAttrs *at = &cx->node->at;
    int sr = sr_of(cx);
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    int64_t k[3], st[3], lo[3], hi[3];
    ref_axes3(at->kernel, sr, 1, k);
    ref_axes3(at->stride, sr, 1, st);
    ref_axes3(at->pad.lo, sr, 0, lo);
    ref_axes3(at->pad.hi, sr, 0, hi);
    const float *x = ref_in(cx, 0);
    float *y = ref_out(cx);
    for (int64_t n = 0; n < o.n; n++)
    for (int64_t c = 0; c < o.c; c++)
    for (int64_t od = 0; od < o.s[0]; od++) {
        RefWin wd = ref_pool_win(od, k[0], st[0], lo[0], hi[0], a.s[0]);
        for (int64_t oh = 0; oh < o.s[1]; oh++) {
            RefWin wh = ref_pool_win(oh, k[1], st[1], lo[1], hi[1], a.s[1]);
            for (int64_t ow = 0; ow < o.s[2]; ow++) {
                RefWin ww = ref_pool_win(ow, k[2], st[2], lo[2], hi[2], a.s[2]);
                double m = -INFINITY, sum = 0;
                int64_t cnt = 0;
                for (int64_t d = wd.r0; d < wd.r1; d++)
                for (int64_t h = wh.r0; h < wh.r1; h++)
                for (int64_t w = ww.r0; w < ww.r1; w++) {
                    double v = x[geo_at(&a, n, c, d, h, w)];
                    if (v > m || isnan(v)) m = isnan(m) ? m : v;
                    sum += v;
                    cnt++;
                }
                double r;
                if (is_max) r = m;
                else r = sum / (double)(at->count_pad ? wd.padded * wh.padded * ww.padded : cnt);
                y[geo_at(&o, n, c, od, oh, ow)] = (float)r;
            }
        }
    }
    return 0;
}

int ref_global_avgpool(const RefCtx *cx)
{
    Geo a = ref_geo(ref_in_shape(cx, 0));
    int64_t sp = geo_sp(&a);
    const float *x = ref_in(cx, 0);
    float *y = ref_out(cx);
    for (int64_t nc = 0; nc < a.n * a.c; nc++) {
        double sum = 0;
        for (int64_t i = 0; i < sp; i++)
            sum += x[nc * sp + i];
        y[nc] = (float)(sum / (double)sp);
    }
    return 0;
}

/* Source coordinate of output index o on one axis (in -> out = in * scale).
 * nearest (PyTorch 'nearest'): floor(o * in / out).  linear: align_corners
 * o * (in - 1) / (out - 1); otherwise (o + 0.5) * in / out - 0.5 clamped at
 * 0.  i0 = floor, i1 = min(i0 + 1, in - 1), weight of i1 = src - i0. */

RefLerp ref_upsample_src(int64_t o, int64_t in, int64_t out, bool linear, bool align)
{
    RefLerp r = { 0, 0, 0 };
    if (!linear) {
        r.i0 = r.i1 = o * in / out;
        if (r.i0 > in - 1) r.i0 = r.i1 = in - 1;
        return r;
    }
    double src;
    if (align) src = out > 1 ? (double)o * (double)(in - 1) / (double)(out - 1) : 0.0;
    else {
        src = ((double)o + 0.5) * (double)in / (double)out - 0.5;
        if (src < 0) src = 0;
    }
    r.i0 = (int64_t)floor(src);
    if (r.i0 > in - 1) r.i0 = in - 1;
    r.i1 = r.i0 + 1 < in ? r.i0 + 1 : in - 1;
    r.l1 = src - (double)r.i0;
    return r;
}

int ref_upsample(const RefCtx *cx)
{
    const OpAttrs *at = &cx->node->at;
    Geo a = ref_geo(ref_in_shape(cx, 0)), o = ref_geo(ref_out_shape(cx));
    bool lin = at->mode == 1, al = at->align_corners;
    const float *x = ref_in(cx, 0);
    float *y = ref_out(cx);
    for (int64_t n = 0; n < o.n; n++)
    for (int64_t c = 0; c < o.c; c++)
    for (int64_t od = 0; od < o.s[0]; od++) {
        RefLerp ld = ref_upsample_src(od, a.s[0], o.s[0], lin, al);
        for (int64_t oh = 0; oh < o.s[1]; oh++) {
            RefLerp lh = ref_upsample_src(oh, a.s[1], o.s[1], lin, al);
            for (int64_t ow = 0; ow < o.s[2]; ow++) {
                RefLerp lw = ref_upsample_src(ow, a.s[2], o.s[2], lin, al);
                double acc = 0;
                for (int cd = 0; cd < 2; cd++)
                for (int ch = 0; ch < 2; ch++)
                for (int cw = 0; cw < 2; cw++) {
                    double wt = (cd ? ld.l1 : 1 - ld.l1) * (ch ? lh.l1 : 1 - lh.l1) *
                                (cw ? lw.l1 : 1 - lw.l1);
                    if (wt == 0) continue;
                    acc += wt * x[geo_at(&a, n, c, cd ? ld.i1 : ld.i0, ch ? lh.i1 : lh.i0,
                                         cw ? lw.i1 : lw.i0)];
                }
                y[geo_at(&o, n, c, od, oh, ow)] = (float)acc;
            }
        }
    }
    return 0;
}

/* y = (x - mean) / sqrt(var + eps) * w + b on the channel `c` slices. */
static void normalize(const Geo *g, const float *x, float *y, int64_t n, int64_t c, double mean,
                      double var, double eps, const float *w, const float *b)
{
    int64_t sp = geo_sp(g), base = (n * g->c + c) * sp;
    double inv = 1.0 / sqrt(var + eps);
    double sc = w ? w[c] : 1.0, sh = b ? b[c] : 0.0;
    for (int64_t i = 0; i < sp; i++)
        y[base + i] = (float)(((double)x[base + i] - mean) * inv * sc + sh);
}

/* batchnorm.  Inference: running statistics.  Training: batch mean and
 * biased variance normalize; the running statistics become
 * (1 - m) * running + m * batch, with the unbiased variance
 * (var * count / (count - 1)), exactly as PyTorch. */
int ref_batchnorm(const RefCtx *cx)
{
    const OpAttrs *at = &cx->node->at;
    Geo g = ref_geo(ref_in_shape(cx, 0));
    int j = 0;
    const float *w = at->affine ? ref_param(cx, j++) : NULL;
    const float *b = at->affine ? ref_param(cx, j++) : NULL;
    float *rm = ref_param(cx, j++), *rv = ref_param(cx, j++);
    const float *x = ref_in(cx, 0);
    float *y = ref_out(cx);
    int64_t sp = geo_sp(&g), count = g.n * sp;
    if (cx->training && count < 2)
        return ref_fail(cx, "expected more than 1 value per channel when training, got %lld",
                        (long long)count);
    for (int64_t c = 0; c < g.c; c++) {
        double mean = rm[c], var = rv[c];
        if (cx->training) {
            double sum = 0, sq = 0;
            for (int64_t n = 0; n < g.n; n++)
                for (int64_t i = 0; i < sp; i++)
                    sum += x[(n * g.c + c) * sp + i];
            mean = sum / (double)count;
            for (int64_t n = 0; n < g.n; n++)
                for (int64_t i = 0; i < sp; i++) {
                    double dv = x[(n * g.c + c) * sp + i] - mean;
                    sq += dv * dv;
                }
            var = sq / (double)count;
            double m = at->momentum;
            rm[c] = (float)((1 - m) * rm[c] + m * mean);
            rv[c] = (float)((1 - m) * rv[c] + m * var * (double)count / (double)(count - 1));
        }
        for (int64_t n = 0; n < g.n; n++)
            normalize(&g, x, y, n, c, mean, var, at->eps, w, b);
    }
    return 0;
}

/* instancenorm: per sample and channel, biased variance, in training and
 * inference alike (PyTorch InstanceNorm without running statistics). */
int ref_instancenorm(const RefCtx *cx)
{
    const OpAttrs *at = &cx->node->at;
    Geo g = ref_geo(ref_in_shape(cx, 0));
    const float *w = at->affine ? ref_param(cx, 0) : NULL;
    const float *b = at->affine ? ref_param(cx, 1) : NULL;
    const float *x = ref_in(cx, 0);
    float *y = ref_out(cx);
    int64_t sp = geo_sp(&g);
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t c = 0; c < g.c; c++) {
            const float *xs = x + (n * g.c + c) * sp;
            double sum = 0, sq = 0;
            for (int64_t i = 0; i < sp; i++)
                sum += xs[i];
            double mean = sum / (double)sp;
            for (int64_t i = 0; i < sp; i++)
                sq += (xs[i] - mean) * (xs[i] - mean);
            normalize(&g, x, y, n, c, mean, sq / (double)sp, at->eps, w, b);
        }
    return 0;
}
