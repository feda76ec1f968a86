/* ref_loss.c — reference ce, dice and focal losses (scalar outputs).
 *
 * Labels (int32, N x 1 x S') are first brought to the logits' spatial size S
 * per axis: S' = S is used as is; S' a multiple k of S is downsampled by
 * nearest (element o*k, PyTorch 'nearest' for an integer factor: the deep
 * supervision heads); any other larger S' is centre-cropped, floor((S'-S)/2)
 * removed at the start (valid convolutions).
 *
 * ce:    sum_v m_v w[y_v] * -log softmax(x_v)[y_v] / sum_v m_v w[y_v] over
 *        voxels v whose label is not `ignore` (PyTorch CrossEntropyLoss,
 *        reduction mean, weight, ignore_index).  No class weights: w = 1;
 *        no voxel weight map (the optional third input, resampled like the
 *        labels): m = 1.  So the map is a weighted mean, and a map of 0s and
 *        1s is a mask (sparse annotation).
 * dice:  nnU-Net's SoftDiceLoss (v2) on p = softmax(x) and one-hot labels:
 *        tp = sum p*y, fp = sum p*(1-y), fn = sum (1-p)*y over the spatial
 *        axes per sample and class (also over the batch when `batch`);
 *        dc = (2 tp + smooth) / max(2 tp + fp + fn + smooth, 1e-8);
 *        class 0 dropped unless `background`; loss = -mean(dc).  The sign is
 *        nnU-Net's: a perfect prediction gives -1, not 0.  A voxel weight
 *        map m multiplies each voxel's terms (nnU-Net's loss_mask); voxels
 *        labelled `ignore` are left out.
 * focal: mean over non-ignored voxels of -alpha_t (1 - p_t)^gamma log p_t
 *        (weighted by m_v and divided by sum m_v with a voxel weight map),
 *        p_t = softmax(x)[y], log p_t from log-softmax, alpha_t = alpha for
 *        a foreground label (y >= 1) and 1 - alpha for background (y = 0):
 *        Lin et al. 2017's binary alpha-balancing with "foreground" = every
 *        class but 0.
 * A label outside [0, C) that is not `ignore` is an error.  With no voxel
 * counted, ce and focal give 0/0 = NaN, as PyTorch does. */
#include <math.h>
#include <stdlib.h>

#include "ref_internal.h"

/* Input j (labels, or the voxel weight map: N x 1 x S', 4-byte elements)
 * brought to the logits' spatial size: N x S, row-major. */
static void *prepare(const RefCtx *cx, int j, const Geo *lg)
{
    const Shape *ls = ref_in_shape(cx, j);
    Geo lb = ref_geo(ls);
    const uint32_t *src = (const uint32_t *)(const void *)ref_in(cx, j);
    int64_t step[3], off[3];
    for (int i = 0; i < 3; i++) {
        int64_t L = lb.s[i], S = lg->s[i];
        step[i] = L % S == 0 ? L / S : 1;
        off[i] = L % S == 0 ? 0 : (L - S) / 2;
    }
    int64_t sp = geo_sp(lg);
    int64_t total = lg->n * sp;
    uint32_t *out = malloc(sizeof *out * (size_t)(total > 0 ? total : 1));
    if (!out) return NULL;
    for (int64_t n = 0; n < lg->n; n++)
        for (int64_t d = 0; d < lg->s[0]; d++)
            for (int64_t h = 0; h < lg->s[1]; h++)
                for (int64_t w = 0; w < lg->s[2]; w++)
                    out[((n * lg->s[0] + d) * lg->s[1] + h) * lg->s[2] + w] =
                        src[geo_at(&lb, n, 0, off[0] + d * step[0], off[1] + h * step[1], off[2] + w * step[2])];
    return out;
}

int32_t *ref_prepare_labels(const RefCtx *cx, const Geo *lg) { return prepare(cx, 1, lg); }

float *ref_prepare_weightmap(const RefCtx *cx, const Geo *lg, bool *oom)
{
    *oom = false;
    if (cx->node->nin < 3) return NULL;
    float *w = prepare(cx, 2, lg);
    *oom = !w;
    return w;
}

/* log softmax over channels of voxel (n, p) into lsm[C]. */
void ref_log_softmax_at(const float *x, const Geo *g, int64_t n, int64_t p, double *lsm)
{
    int64_t sp = geo_sp(g);
    const float *xp = x + n * g->c * sp + p;
    double m = -INFINITY, sum = 0;
    for (int64_t c = 0; c < g->c; c++)
        if (xp[c * sp] > m) m = xp[c * sp];
    for (int64_t c = 0; c < g->c; c++)
        sum += exp(xp[c * sp] - m);
    double lse = m + log(sum);
    for (int64_t c = 0; c < g->c; c++)
        lsm[c] = xp[c * sp] - lse;
}

int ref_loss(const RefCtx *cx)
{
    const OpAttrs *at = &cx->node->at;
    OpKind op = cx->node->op;
    Geo g = ref_geo(ref_in_shape(cx, 0));
    int64_t sp = geo_sp(&g), C = g.c;
    const float *x = ref_in(cx, 0);
    int32_t *lab = ref_prepare_labels(cx, &g);
    bool oom;
    float *wm = ref_prepare_weightmap(cx, &g, &oom);
    double *lsm = malloc(sizeof *lsm * (size_t)C);
    /* dice: tp, fp, fn per (sample or 0 for batch dice) and class */
    int64_t rows = at->batch_dice ? 1 : g.n;
    double *stats = op == OP_DICE ? calloc((size_t)(3 * rows * C), sizeof *stats) : NULL;
    int rc = 0;
    if (!lab || oom || !lsm || (op == OP_DICE && !stats)) {
        rc = ref_fail(cx, "out of memory");
        goto done;
    }
    int64_t ignore = at->ignore;
    double num = 0, den = 0;
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t p = 0; p < sp; p++) {
            int64_t y = lab[n * sp + p];
            if (ignore >= 0 && y == ignore) continue;
            if (y < 0 || y >= C) {
                rc = ref_fail(cx, "label %lld out of range [0, %lld) at sample %lld, voxel %lld",
                              (long long)y, (long long)C, (long long)n, (long long)p);
                goto done;
            }
            ref_log_softmax_at(x, &g, n, p, lsm);
            double m = wm ? wm[n * sp + p] : 1.0;
            if (op == OP_CE) {
                double w = m * (at->nweights ? at->weights[y] : 1.0);
                num += -w * lsm[y];
                den += w;
            } else if (op == OP_FOCAL) {
                double pt = exp(lsm[y]), a = y >= 1 ? at->alpha : 1 - at->alpha;
                num += -m * a * pow(1 - pt, at->gamma) * lsm[y];
                den += m;
            } else {
                double *row = stats + 3 * C * (at->batch_dice ? 0 : n);
                for (int64_t c = 0; c < C; c++) {
                    double pc = exp(lsm[c]), yc = c == y ? 1.0 : 0.0;
                    row[c] += m * pc * yc;                  /* tp */
                    row[C + c] += m * pc * (1 - yc);        /* fp */
                    row[2 * C + c] += m * (1 - pc) * yc;    /* fn */
                }
            }
        }
    double loss;
    if (op == OP_DICE) {
        double sum = 0;
        int64_t cnt = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = at->background ? 0 : 1; c < C; c++) {
                double *row = stats + 3 * C * r;
                double tp = row[c], fp = row[C + c], fn = row[2 * C + c];
                double dd = 2 * tp + fp + fn + at->smooth;
                sum += (2 * tp + at->smooth) / (dd > 1e-8 ? dd : 1e-8);
                cnt++;
            }
        loss = -sum / (double)cnt;
    } else {
        loss = num / den;
    }
    ref_out(cx)[0] = (float)loss;
done:
    free(lab);
    free(wm);
    free(lsm);
    free(stats);
    return rc;
}
