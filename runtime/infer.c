/* infer.c — whole-scan inference (see infer.h): sliding windows with
 * nnU-Net's placement and Gaussian weighting, test-time mirroring,
 * ensembles, then post-processing and the way back to the scan's grid.
 * Depends on the runtime only (dataset, nifti_io, postproc, overlay, pool):
 * the standalone binaries of `netc build` link it without the compiler. */
#define _POSIX_C_SOURCE 200809L
#include "infer.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "overlay.h"
#include "pool.h"
#include "postproc.h"

#define INFER_MAX_CLASSES 256

static int failf(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(char *err, size_t n, const char *fmt, ...)
{
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void infer_config_default(InferConfig *c)
{
    memset(c, 0, sizeof *c);
    c->rank = 3;
    c->patch[0] = c->patch[1] = c->patch[2] = 1;
    c->channels = 1;
    c->classes = 2;
    c->batch = 1;
    c->step = 0.5;
    c->gaussian = 1;
    c->mirror_axes = 7;
}

/* ---- window placement and weights --------------------------------------------------------------------- */

int64_t infer_steps(int64_t size, int64_t patch, double step, int64_t *offsets, int64_t max)
{
    if (patch < 1 || size < patch || !(step > 0 && step <= 1)) return -1;
    if (patch == 1) {   /* a 2D net's z axis: every slice once */
        for (int64_t i = 0; i < size && i < max; i++) offsets[i] = i;
        return size;
    }
    double target = (double)patch * step;
    int64_t n = (int64_t)ceil((double)(size - patch) / target) + 1;
    double actual = n > 1 ? (double)(size - patch) / (double)(n - 1) : 0;
    for (int64_t i = 0; i < n && i < max; i++) offsets[i] = (int64_t)nearbyint(actual * (double)i);
    return n;
}

void infer_gaussian(const int64_t patch[3], float *w)
{
    /* scipy.ndimage.gaussian_filter of an impulse at patch // 2, sigma = patch / 8, truncate = 4:
     * per axis exp(-d^2 / (2 sigma^2)) within the radius int(4 sigma + 0.5), else 0; the kernel
     * sums cancel when dividing by the maximum (the centre, 1). */
    double *ax[3] = { NULL, NULL, NULL };
    int ok = 1;
    for (int a = 0; a < 3; a++) {
        ax[a] = malloc(sizeof(double) * (size_t)patch[a]);
        if (!ax[a]) { ok = 0; continue; }
        double sigma = (double)patch[a] / 8.0;
        int64_t c = patch[a] / 2, radius = (int64_t)(4.0 * sigma + 0.5);
        for (int64_t i = 0; i < patch[a]; i++) {
            double d = (double)(i - c);
            ax[a][i] = patch[a] == 1 ? 1.0 : llabs(i - c) > radius ? 0.0 : exp(-0.5 * d * d / (sigma * sigma));
        }
    }
    int64_t n = patch[0] * patch[1] * patch[2], i = 0;
    if (!ok) {   /* out of memory for a few rows: constant weights are still a valid average */
        for (int64_t k = 0; k < n; k++) w[k] = 1.0f;
    } else {
        float mn = INFINITY;
        for (int64_t z = 0; z < patch[0]; z++)
            for (int64_t y = 0; y < patch[1]; y++)
                for (int64_t x = 0; x < patch[2]; x++, i++) {
                    w[i] = (float)(ax[0][z] * ax[1][y] * ax[2][x]);
                    if (w[i] > 0 && w[i] < mn) mn = w[i];
                }
        for (int64_t k = 0; k < n; k++)
            if (!(w[k] > 0)) w[k] = mn;   /* nnU-Net: no zero weights */
    }
    for (int a = 0; a < 3; a++) free(ax[a]);
}

/* ---- the sliding window ----------------------------------------------------------------------------- */

typedef struct {
    /* shared */
    const float *img;
    int64_t S[3], Sp[3], pad[3], P[3], per, Np;
    int C, K, sigmoid;
    const float *w;
    float *acc, *wsum;
    /* one window */
    int64_t o[3];          /* origin in the padded volume */
    unsigned m;            /* mirror bits: 1 = z, 2 = y, 4 = x */
    float *win;            /* C x per input, or K x per output */
} Sw;

/* Input rows (c, wz, wy) of one window: the net sees voxel v = flip(u). */
static void gather_rows(void *ctx, int64_t lo, int64_t hi)
{
    const Sw *s = ctx;
    int64_t rows = s->P[0] * s->P[1];
    for (int64_t r = lo; r < hi; r++) {
        int64_t c = r / rows, wz = (r % rows) / s->P[1], wy = r % s->P[1];
        int64_t uz = s->m & 1u ? s->P[0] - 1 - wz : wz, uy = s->m & 2u ? s->P[1] - 1 - wy : wy;
        float *dst = s->win + c * s->per + (wz * s->P[1] + wy) * s->P[2];
        int64_t z = s->o[0] + uz - s->pad[0], y = s->o[1] + uy - s->pad[1];
        if (z < 0 || z >= s->S[0] || y < 0 || y >= s->S[1]) {
            memset(dst, 0, sizeof(float) * (size_t)s->P[2]);
            continue;
        }
        const float *src = s->img + ((c * s->S[0] + z) * s->S[1] + y) * s->S[2];
        for (int64_t wx = 0; wx < s->P[2]; wx++) {
            int64_t x = s->o[2] + (s->m & 4u ? s->P[2] - 1 - wx : wx) - s->pad[2];
            dst[wx] = x >= 0 && x < s->S[2] ? src[x] : 0.0f;
        }
    }
}

/* Output rows (wz, wy) of one window: softmax (or sigmoid) per voxel,
 * flipped back, weighted and added.  Each row writes its own voxels. */
static void accumulate_rows(void *ctx, int64_t lo, int64_t hi)
{
    const Sw *s = ctx;
    float p[INFER_MAX_CLASSES];
    for (int64_t r = lo; r < hi; r++) {
        int64_t wz = r / s->P[1], wy = r % s->P[1];
        int64_t uz = s->m & 1u ? s->P[0] - 1 - wz : wz, uy = s->m & 2u ? s->P[1] - 1 - wy : wy;
        int64_t base = ((s->o[0] + uz) * s->Sp[1] + s->o[1] + uy) * s->Sp[2] + s->o[2];
        const float *wrow = s->w + (uz * s->P[1] + uy) * s->P[2];
        for (int64_t wx = 0; wx < s->P[2]; wx++) {
            int64_t v = (wz * s->P[1] + wy) * s->P[2] + wx, ux = s->m & 4u ? s->P[2] - 1 - wx : wx;
            if (s->sigmoid) {
                for (int k = 0; k < s->K; k++) p[k] = (float)(1.0 / (1.0 + exp(-(double)s->win[k * s->per + v])));
            } else {
                float mx = s->win[v];
                for (int k = 1; k < s->K; k++)
                    if (s->win[k * s->per + v] > mx) mx = s->win[k * s->per + v];
                double sum = 0;
                for (int k = 0; k < s->K; k++) {
                    p[k] = expf(s->win[k * s->per + v] - mx);
                    sum += p[k];
                }
                for (int k = 0; k < s->K; k++) p[k] = (float)(p[k] / sum);
            }
            float wt = wrow[ux];
            int64_t at = base + ux;
            for (int k = 0; k < s->K; k++) s->acc[k * s->Np + at] += wt * p[k];
            s->wsum[at] += wt;
        }
    }
}

/* Rows (k, z) of the result: the weighted sums divided by the weights, cropped. */
static void normalize_rows(void *ctx, int64_t lo, int64_t hi)
{
    const Sw *s = ctx;
    int64_t n = s->S[0] * s->S[1] * s->S[2];
    for (int64_t r = lo; r < hi; r++) {
        int64_t k = r / (s->S[0] * s->S[1]), z = (r / s->S[1]) % s->S[0], y = r % s->S[1];
        float *dst = s->win + k * n + (z * s->S[1] + y) * s->S[2];
        int64_t at = ((z + s->pad[0]) * s->Sp[1] + y + s->pad[1]) * s->Sp[2] + s->pad[2];
        for (int64_t x = 0; x < s->S[2]; x++) {
            float ws = s->wsum[at + x];
            dst[x] = ws > 0 ? s->acc[k * s->Np + at + x] / ws : 0.0f;
        }
    }
}

static int check_config(const InferConfig *c, int nnets, const int64_t shape[3], char *err, size_t errlen)
{
    if (c->rank != 2 && c->rank != 3) return failf(err, errlen, "inference supports 2D and 3D nets, not rank %d", c->rank);
    for (int a = 0; a < 3; a++)
        if (c->patch[a] < 1 || c->patch[a] > (1 << 20))
            return failf(err, errlen, "bad window size %lld x %lld x %lld", (long long)c->patch[0],
                         (long long)c->patch[1], (long long)c->patch[2]);
    if (c->rank == 2 && c->patch[0] != 1) return failf(err, errlen, "a 2D net's window has patch[0] = 1");
    if (c->channels < 1 || c->channels > DS_MAX_CHANNELS)
        return failf(err, errlen, "%d input channels (1 to %d supported)", c->channels, DS_MAX_CHANNELS);
    if (c->classes < 1 || c->classes > INFER_MAX_CLASSES)
        return failf(err, errlen, "%d output classes (1 to %d supported)", c->classes, INFER_MAX_CLASSES);
    if (c->batch < 1) return failf(err, errlen, "batch %d: at least one window per call", c->batch);
    if (!(c->step > 0 && c->step <= 1)) return failf(err, errlen, "step %g: it must be in (0, 1]", c->step);
    if (c->mirror_axes > 7) return failf(err, errlen, "mirror axes 0x%x: only z, y and x (bits 0 to 2)", c->mirror_axes);
    if (nnets < 1) return failf(err, errlen, "no net to run");
    for (int a = 0; a < 3; a++)
        if (shape[a] < 1 || shape[a] > (1 << 24))
            return failf(err, errlen, "bad volume shape %lld x %lld x %lld", (long long)shape[0], (long long)shape[1],
                         (long long)shape[2]);
    return 0;
}

static void progress_bar(int64_t done, int64_t total)
{
    int width = 30, fill = total > 0 ? (int)(done * width / total) : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r  windows [%s] %3d%% %lld/%lld", bar, total > 0 ? (int)(done * 100 / total) : 100,
            (long long)done, (long long)total);
    if (done >= total) fputc('\n', stderr);
    fflush(stderr);
}

int infer_sliding_window(const InferConfig *cfg, InferNet *nets, int nnets, const float *img,
                         const int64_t shape[3], float *probs, char *err, size_t errlen)
{
    if (check_config(cfg, nnets, shape, err, errlen) != 0) return -1;
    double t_start = now_s(), t_net = 0;
    Sw s;
    memset(&s, 0, sizeof s);
    s.img = img;
    s.C = cfg->channels;
    s.K = cfg->classes;
    s.sigmoid = cfg->sigmoid;
    s.per = cfg->patch[0] * cfg->patch[1] * cfg->patch[2];
    for (int a = 0; a < 3; a++) {
        s.S[a] = shape[a];
        s.P[a] = cfg->patch[a];
        s.Sp[a] = shape[a] > cfg->patch[a] ? shape[a] : cfg->patch[a];
        s.pad[a] = (s.Sp[a] - shape[a]) / 2;   /* centred, as nnU-Net's pad_nd_image */
    }
    s.Np = s.Sp[0] * s.Sp[1] * s.Sp[2];
    unsigned axes = cfg->mirror_axes & (cfg->rank == 2 ? 6u : 7u);
    unsigned masks[8];
    int M = 0;
    for (unsigned m = 0; m < 8; m++)
        if ((m & ~axes) == 0) masks[M++] = m;

    int64_t *off[3] = { NULL, NULL, NULL }, noff[3];
    float *w = NULL, *in = NULL, *out = NULL;
    int rc = -1;
    for (int a = 0; a < 3; a++) {
        noff[a] = infer_steps(s.Sp[a], s.P[a], cfg->step, NULL, 0);
        off[a] = malloc(sizeof(int64_t) * (size_t)noff[a]);
        if (!off[a]) { failf(err, errlen, "out of memory"); goto done; }
        infer_steps(s.Sp[a], s.P[a], cfg->step, off[a], noff[a]);
    }
    int64_t npos = noff[0] * noff[1] * noff[2], items = npos * M, total = items * nnets;
    w = malloc(sizeof(float) * (size_t)s.per);
    in = malloc(sizeof(float) * (size_t)(s.per * s.C * cfg->batch));
    out = malloc(sizeof(float) * (size_t)(s.per * s.K * cfg->batch));
    s.acc = calloc((size_t)(s.Np * s.K), sizeof(float));
    s.wsum = calloc((size_t)s.Np, sizeof(float));
    if (!w || !in || !out || !s.acc || !s.wsum) {
        failf(err, errlen, "out of memory (a %lld x %lld x %lld volume, %d classes)", (long long)s.Sp[0],
              (long long)s.Sp[1], (long long)s.Sp[2], s.K);
        goto done;
    }
    s.w = w;
    if (cfg->gaussian) infer_gaussian(s.P, w);
    else
        for (int64_t i = 0; i < s.per; i++) w[i] = 1.0f;

    int64_t done_items = 0, forward_calls = 0;
    if (cfg->progress) progress_bar(0, total);
    for (int ni = 0; ni < nnets; ni++)
        for (int64_t t0 = 0; t0 < items; t0 += cfg->batch) {
            int n = (int)(items - t0 < cfg->batch ? items - t0 : cfg->batch);
            for (int j = 0; j < n; j++) {
                int64_t t = t0 + j, p = t / M;
                s.o[0] = off[0][p / (noff[1] * noff[2])];
                s.o[1] = off[1][(p / noff[2]) % noff[1]];
                s.o[2] = off[2][p % noff[2]];
                s.m = masks[t % M];
                s.win = in + (int64_t)j * s.C * s.per;
                netc_parallel_for(gather_rows, &s, s.C * s.P[0] * s.P[1]);
            }
            double t1 = now_s();
            char why[1024] = "";
            int r = nets[ni].forward(nets[ni].ctx, n, in, out, why, sizeof why);
            t_net += now_s() - t1;
            forward_calls++;
            if (r != 0) {
                failf(err, errlen, "%s", why[0] ? why : "the net failed");
                goto done;
            }
            for (int j = 0; j < n; j++) {
                int64_t t = t0 + j, p = t / M;
                s.o[0] = off[0][p / (noff[1] * noff[2])];
                s.o[1] = off[1][(p / noff[2]) % noff[1]];
                s.o[2] = off[2][p % noff[2]];
                s.m = masks[t % M];
                s.win = out + (int64_t)j * s.K * s.per;
                netc_parallel_for(accumulate_rows, &s, s.P[0] * s.P[1]);
            }
            done_items += n;
            if (cfg->progress) progress_bar(done_items, total);
        }
    s.win = probs;
    netc_parallel_for(normalize_rows, &s, (int64_t)s.K * s.S[0] * s.S[1]);
    if (cfg->stats) {
        cfg->stats->windows += total;
        cfg->stats->forward_calls += forward_calls;
        cfg->stats->net_seconds += t_net;
        cfg->stats->stitch_seconds += now_s() - t_start - t_net;
    }
    rc = 0;
done:
    for (int a = 0; a < 3; a++) free(off[a]);
    free(w);
    free(in);
    free(out);
    free(s.acc);
    free(s.wsum);
    return rc;
}

void infer_labels(const InferConfig *cfg, const float *probs, int64_t nvox, uint8_t *labels)
{
    int K = cfg->classes;
    for (int64_t i = 0; i < nvox; i++) {
        int best = 0;
        if (cfg->sigmoid) {   /* channel k is class k + 1 */
            for (int k = K - 1; k >= 0; k--)
                if (probs[(int64_t)k * nvox + i] > 0.5f) { best = k + 1; break; }
        } else {
            for (int k = 1; k < K; k++)
                if (probs[(int64_t)k * nvox + i] > probs[(int64_t)best * nvox + i]) best = k;
        }
        labels[i] = (uint8_t)(best > 255 ? 255 : best);
    }
}

/* ---- back to the source grid ------------------------------------------------------------------------ */

static int64_t numel3(const int64_t s[3]) { return s[0] * s[1] * s[2]; }

/* Canonical [z][y][x] floats to the source file's voxel order (DsGeom's
 * permutation and flips: canonical axis a is source axis perm[a]). */
static void canonical_to_source(const float *canon, const DsGeom *g, float *src)
{
    int64_t sstr[3] = { 1, g->src_dim[0], g->src_dim[0] * g->src_dim[1] }, step[3], start = 0, i = 0;
    for (int a = 0; a < 3; a++) {
        int j = g->perm[a];
        step[a] = g->flip[a] ? -sstr[j] : sstr[j];
        if (g->flip[a]) start += (g->src_dim[j] - 1) * sstr[j];
    }
    for (int64_t z = 0; z < g->canon_shape[0]; z++)
        for (int64_t y = 0; y < g->canon_shape[1]; y++) {
            int64_t b = start + z * step[2] + y * step[1];
            for (int64_t x = 0; x < g->canon_shape[2]; x++) src[b + x * step[0]] = canon[i++];
        }
}

int infer_undo_probs(const DsGeom *g, const float *probs, int classes, float background_outside, float *out,
                     char *err, size_t errlen)
{
    int64_t cs[3];
    for (int k = 0; k < 3; k++) {
        cs[k] = g->bbox_hi[k] - g->bbox_lo[k];
        if (cs[k] < 1 || g->bbox_lo[k] < 0 || g->bbox_hi[k] > g->canon_shape[k] || g->shape[k] < 1)
            return failf(err, errlen, "inconsistent preprocessing geometry");
    }
    if (numel3(g->canon_shape) != numel3(g->src_dim)) return failf(err, errlen, "inconsistent preprocessing geometry");
    int64_t cn = numel3(cs), n = numel3(g->canon_shape), pn = numel3(g->shape);
    float *crop = malloc(sizeof(float) * (size_t)cn), *canon = malloc(sizeof(float) * (size_t)n);
    if (!crop || !canon) {
        free(crop);
        free(canon);
        return failf(err, errlen, "out of memory");
    }
    for (int k = 0; k < classes; k++) {
        ds_resample_linear(probs + (int64_t)k * pn, g->shape, crop, cs);
        float fillv = k == 0 ? background_outside : 0.0f;
        for (int64_t i = 0; i < n; i++) canon[i] = fillv;
        int64_t i = 0;
        for (int64_t z = 0; z < cs[0]; z++)
            for (int64_t y = 0; y < cs[1]; y++) {
                memcpy(canon + ((z + g->bbox_lo[0]) * g->canon_shape[1] + y + g->bbox_lo[1]) * g->canon_shape[2] +
                           g->bbox_lo[2],
                       crop + i, sizeof(float) * (size_t)cs[2]);
                i += cs[2];
            }
        canonical_to_source(canon, g, out + (int64_t)k * n);
    }
    free(crop);
    free(canon);
    return 0;
}

/* ---- dataset statistics from metadata ---------------------------------------------------------------- */

int infer_stats_from_metadata(const char *const *keys, const char *const *vals, int nmeta,
                              const char *const *channel_names, int nchannels, DsChannelStats *stats,
                              char *err, size_t errlen)
{
    static const char *fields[4] = { "mean", "sd", "p005", "p995" };
    unsigned have[DS_MAX_CHANNELS] = { 0 };
    const char *prefix = "netc.stats.";
    size_t pl = strlen(prefix);
    if (nchannels > DS_MAX_CHANNELS) nchannels = DS_MAX_CHANNELS;
    for (int c = 0; c < nchannels; c++) memset(&stats[c], 0, sizeof stats[c]);
    for (int i = 0; i < nmeta; i++) {
        if (!keys[i] || !vals[i] || strncmp(keys[i], prefix, pl) != 0) continue;
        const char *rest = keys[i] + pl, *dot = strrchr(rest, '.');
        if (!dot || dot == rest) continue;
        int f = -1;
        for (int k = 0; k < 4; k++)
            if (strcmp(dot + 1, fields[k]) == 0) f = k;
        if (f < 0) continue;
        size_t len = (size_t)(dot - rest);
        for (int c = 0; c < nchannels; c++) {
            char idx[16];
            snprintf(idx, sizeof idx, "%d", c);
            int match = (strlen(idx) == len && strncmp(rest, idx, len) == 0) ||
                        (channel_names && channel_names[c] && strlen(channel_names[c]) == len &&
                         strncasecmp(rest, channel_names[c], len) == 0);
            if (!match) continue;
            char *end = NULL;
            errno = 0;
            double v = strtod(vals[i], &end);
            if (end == vals[i] || *end || errno || !isfinite(v))
                return failf(err, errlen, "metadata %s = \"%.100s\" is not a number", keys[i], vals[i]);
            double *dst[4] = { &stats[c].mean, &stats[c].sd, &stats[c].p005, &stats[c].p995 };
            *dst[f] = v;
            have[c] |= 1u << f;
        }
    }
    int found = 0;
    for (int c = 0; c < nchannels; c++) {
        stats[c].valid = have[c] == 15u;
        found += stats[c].valid;
    }
    return found;
}

/* ---- one case ----------------------------------------------------------------------------------------- */

int infer_case(const InferCaseOptions *o, InferNet *nets, int nnets, const char *const *inputs, int ninputs,
               const char *output, char *err, size_t errlen)
{
    const InferConfig *cfg = &o->cfg;
    int C = cfg->channels, K = cfg->classes;
    Volume vols[DS_MAX_CHANNELS];
    Volume chan[DS_MAX_CHANNELS];
    const char *names[DS_MAX_CHANNELS];
    int nvols = 0, nchan = 0, rc = -1;
    DsPrepped pp;
    memset(&pp, 0, sizeof pp);
    float *probs = NULL, *fout = NULL;
    uint8_t *labels = NULL, *src = NULL;
    if (ninputs < 1) return failf(err, errlen, "no input files");
    if (o->largest_component && o->connectivity != 6 && o->connectivity != 26)
        return failf(err, errlen, "connectivity %d: 6 or 26", o->connectivity);
    for (int i = 0; i < ninputs; i++) {
        if (nvols >= DS_MAX_CHANNELS) {
            failf(err, errlen, "%s: more than %d input files", inputs[i], DS_MAX_CHANNELS);
            goto done;
        }
        if (vol_read(inputs[i], &vols[nvols], err, errlen) != 0) goto done;
        Volume *v = &vols[nvols++];
        int64_t per = v->dim[0] * v->dim[1] * v->dim[2];
        for (int64_t t = 0; t < v->dim[3]; t++) {
            if (nchan >= C) {
                failf(err, errlen, "%s: the input has more channels than the net's %d", inputs[i], C);
                goto done;
            }
            chan[nchan] = *v;   /* a view: one 3D channel of the file */
            chan[nchan].ndim = v->ndim > 3 ? 3 : v->ndim;
            chan[nchan].dim[3] = 1;
            chan[nchan].data = v->data + t * per;
            names[nchan++] = inputs[i];
        }
    }
    if (nchan != C) {
        failf(err, errlen, "%s: the net takes %d channel(s), the input gave %d", inputs[0], C, nchan);
        goto done;
    }
    if (ds_prepare(chan, C, NULL, &o->params, o->stats, names, NULL, &pp, err, errlen) != 0) goto done;
    int64_t n = numel3(pp.shape), nsrc = numel3(pp.geom.src_dim);
    probs = malloc(sizeof(float) * (size_t)(n * K));
    labels = malloc((size_t)n);
    src = malloc((size_t)nsrc);
    fout = malloc(sizeof(float) * (size_t)(o->prob_output ? nsrc * K : nsrc));
    if (!probs || !labels || !src || !fout) {
        failf(err, errlen, "%s: out of memory", inputs[0]);
        goto done;
    }
    if (infer_sliding_window(cfg, nets, nnets, pp.image, pp.shape, probs, err, errlen) != 0) goto done;
    infer_labels(cfg, probs, n, labels);
    if (o->prob_output) {
        if (infer_undo_probs(&pp.geom, probs, K, cfg->sigmoid ? 0.0f : 1.0f, fout, err, errlen) != 0) goto done;
        if (vol_write_like(o->prob_output, &chan[0], fout, K, 0, err, errlen) != 0) goto done;
    }
    if (o->largest_component &&
        pp_keep_largest(labels, pp.shape, o->largest_component == 2, o->connectivity, err, errlen) != 0)
        goto done;
    if (o->png_output) {
        OverlayOptions oo;
        overlay_options_default(&oo);
        if (overlay_png(pp.image, labels, NULL, pp.shape, pp.spacing, &oo, o->png_output, err, errlen) != 0)
            goto done;
    }
    if (ds_undo_labels(&pp.geom, labels, src, err, errlen) != 0) goto done;
    if (o->largest_component) {   /* again on the scan's grid: resampling can split a component */
        int64_t sshape[3] = { pp.geom.src_dim[2], pp.geom.src_dim[1], pp.geom.src_dim[0] };
        if (pp_keep_largest(src, sshape, o->largest_component == 2, o->connectivity, err, errlen) != 0) goto done;
    }
    for (int64_t i = 0; i < nsrc; i++) fout[i] = src[i];
    if (vol_write_like(output, &chan[0], fout, 1, 1, err, errlen) != 0) goto done;
    rc = 0;
done:
    ds_prepped_free(&pp);
    for (int i = 0; i < nvols; i++) vol_free(&vols[i]);
    free(probs);
    free(labels);
    free(src);
    free(fout);
    return rc;
}
