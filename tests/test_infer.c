/* test_infer.c — the whole-scan inference engine (runtime/infer.c) with
 * synthetic InferNet callbacks: window placement, stitching, Gaussian
 * weighting, mirroring, ensembles, errors, and one case from NIfTI files to
 * labels on the scan's grid.  No compiler involved. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nifti1_io.h>

#include "infer.h"
#include "support.h"

/* ---- synthetic nets --------------------------------------------------------------------------------- */

typedef struct {
    int C, K;
    int64_t per;          /* window voxels */
    int batch;            /* the largest n allowed */
    int variant;          /* pointwise function family */
    int calls, windows;
    int fail_at;          /* > 0: the fail_at-th call fails */
    int bad_n;            /* set when called with n out of range */
} PointNet;

/* logits of class k from the voxel's own channel values */
static double point_logit(int variant, int k, const float *v, int C)
{
    double x0 = v[0], x1 = C > 1 ? v[1] : 0;
    if (variant == 0) return sin((k + 1) * x0) + 0.3 * k * x0 + cos(k * x1);
    return 0.7 * k * x0 - 0.2 * (k * k) + 0.5 * x1 * k;
}

static int point_forward(void *ctx, int n, const float *in, float *out, char *err, size_t errlen)
{
    PointNet *p = ctx;
    p->calls++;
    if (n < 1 || n > p->batch) p->bad_n = 1;
    if (p->fail_at > 0 && p->calls == p->fail_at) {
        snprintf(err, errlen, "boom at call %d", p->calls);
        return -1;
    }
    for (int b = 0; b < n; b++, p->windows++)
        for (int64_t v = 0; v < p->per; v++) {
            float x[4] = { 0, 0, 0, 0 };
            for (int c = 0; c < p->C; c++) x[c] = in[((int64_t)b * p->C + c) * p->per + v];
            for (int k = 0; k < p->K; k++)
                out[((int64_t)b * p->K + k) * p->per + v] = (float)point_logit(p->variant, k, x, p->C);
        }
    return 0;
}

static void softmax_expected(int variant, const float *img, int C, int K, int64_t n, int64_t i, double *p)
{
    float x[4] = { 0, 0, 0, 0 };
    for (int c = 0; c < C; c++) x[c] = img[c * n + i];
    double mx = -INFINITY, sum = 0;
    for (int k = 0; k < K; k++) {
        p[k] = point_logit(variant, k, x, C);
        if (p[k] > mx) mx = p[k];
    }
    for (int k = 0; k < K; k++) sum += (p[k] = exp(p[k] - mx));
    for (int k = 0; k < K; k++) p[k] /= sum;
}

static float *make_image(int C, const int64_t s[3])
{
    int64_t n = s[0] * s[1] * s[2];
    float *img = malloc(sizeof(float) * (size_t)(n * C));
    for (int c = 0; c < C; c++)
        for (int64_t i = 0; i < n; i++) img[c * n + i] = (float)(0.37 * (double)((i * 7919 + c * 31) % 23) - 3.1);
    return img;
}

/* A pointwise net gives exactly the per-voxel softmax for every placement,
 * weighting, mirroring, batch and size: every voxel covered, every window
 * stitched back where it came from, the weights normalized. */
START_TEST(pointwise_is_exact)
{
    struct { int rank; int64_t patch[3]; int64_t shape[3]; } geo[] = {
        { 3, { 4, 4, 4 }, { 5, 7, 9 } },
        { 3, { 4, 4, 4 }, { 3, 4, 2 } },     /* smaller than the patch: padded */
        { 3, { 3, 5, 4 }, { 11, 5, 13 } },
        { 2, { 1, 4, 5 }, { 3, 9, 7 } },     /* 2D net, slice by slice */
        { 2, { 1, 8, 8 }, { 2, 5, 3 } },
    };
    double steps[] = { 0.5, 0.33, 1.0 };
    int checked = 0;
    for (size_t gi = 0; gi < sizeof geo / sizeof geo[0]; gi++)
        for (int si = 0; si < 3; si++)
            for (int gauss = 0; gauss < 2; gauss++)
                for (int mir = 0; mir < 2; mir++)
                    for (int batch = 1; batch <= 3; batch += 2) {
                        InferConfig cfg;
                        infer_config_default(&cfg);
                        cfg.rank = geo[gi].rank;
                        memcpy(cfg.patch, geo[gi].patch, sizeof cfg.patch);
                        cfg.channels = 2;
                        cfg.classes = 3;
                        cfg.batch = batch;
                        cfg.step = steps[si];
                        cfg.gaussian = gauss;
                        cfg.mirror_axes = mir ? 7u : 0u;
                        const int64_t *S = geo[gi].shape;
                        int64_t n = S[0] * S[1] * S[2];
                        float *img = make_image(2, S), *probs = malloc(sizeof(float) * (size_t)(n * 3));
                        PointNet pn = { .C = 2, .K = 3, .per = cfg.patch[0] * cfg.patch[1] * cfg.patch[2],
                                        .batch = batch };
                        InferNet net = { point_forward, &pn };
                        InferStats st = { 0 };
                        cfg.stats = &st;
                        char err[256] = "";
                        ck_assert_msg(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err) == 0, "%s", err);
                        ck_assert(!pn.bad_n);
                        ck_assert_int_eq(st.windows, pn.windows);
                        ck_assert_int_eq(st.forward_calls, pn.calls);
                        double worst = 0;
                        for (int64_t i = 0; i < n; i++) {
                            double e[3];
                            softmax_expected(0, img, 2, 3, n, i, e);
                            for (int k = 0; k < 3; k++) {
                                double d = fabs(probs[k * n + i] - e[k]);
                                if (d > worst) worst = d;
                            }
                        }
                        ck_assert_msg(worst < 1e-5, "geometry %zu step %g gauss %d mirror %d batch %d: error %g", gi,
                                      steps[si], gauss, mir, batch, worst);
                        free(img);
                        free(probs);
                        checked++;
                    }
    ck_assert_int_eq(checked, 5 * 3 * 2 * 2 * 2);
}
END_TEST

/* How many windows: positions x mirror combinations, batched. */
START_TEST(window_count)
{
    InferConfig cfg;
    infer_config_default(&cfg);
    memcpy(cfg.patch, (int64_t[3]){ 4, 4, 4 }, sizeof cfg.patch);
    cfg.channels = 1;
    cfg.batch = 4;
    int64_t S[3] = { 4, 6, 10 };   /* offsets: z {0}, y {0, 2}, x {0, 2, 4, 6} */
    float *img = make_image(1, S), *probs = malloc(sizeof(float) * 2 * 240);
    PointNet pn = { .C = 1, .K = 2, .per = 64, .batch = 4 };
    InferNet net = { point_forward, &pn };
    char err[256];
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), 0);
    ck_assert_int_eq(pn.windows, 8 * 8);          /* 8 positions x 8 mirror combinations */
    ck_assert_int_eq(pn.calls, 16);
    cfg.mirror_axes = 4;                          /* x only */
    pn.windows = pn.calls = 0;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), 0);
    ck_assert_int_eq(pn.windows, 16);
    cfg.rank = 2;                                 /* 2D: z mirroring dropped, every slice a window */
    cfg.patch[0] = 1;
    cfg.mirror_axes = 7;
    pn.per = 16;
    pn.windows = pn.calls = 0;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), 0);
    ck_assert_int_eq(pn.windows, 4 * 8 * 4);      /* 4 slices x 8 positions x 4 mirrors */
    free(img);
    free(probs);
}
END_TEST

START_TEST(steps_follow_nnunet)
{
    int64_t o[16];
    ck_assert_int_eq(infer_steps(10, 4, 0.5, o, 16), 4);
    ck_assert(o[0] == 0 && o[1] == 2 && o[2] == 4 && o[3] == 6);
    ck_assert_int_eq(infer_steps(7, 4, 0.5, o, 16), 3);   /* 1.5 rounds to 2 */
    ck_assert(o[0] == 0 && o[1] == 2 && o[2] == 3);
    ck_assert_int_eq(infer_steps(9, 4, 1.0, o, 16), 3);   /* 2.5 rounds half to even: 2 */
    ck_assert(o[0] == 0 && o[1] == 2 && o[2] == 5);
    ck_assert_int_eq(infer_steps(9, 4, 0.5, o, 16), 4);   /* 5/3: 0, 2, 3, 5 */
    ck_assert(o[0] == 0 && o[1] == 2 && o[2] == 3 && o[3] == 5);
    ck_assert_int_eq(infer_steps(4, 4, 0.5, o, 16), 1);
    ck_assert_int_eq(o[0], 0);
    ck_assert_int_eq(infer_steps(5, 1, 0.5, o, 16), 5);   /* a 2D net's z */
    ck_assert(o[0] == 0 && o[4] == 4);
    ck_assert_int_eq(infer_steps(3, 4, 0.5, o, 16), -1);
    ck_assert_int_eq(infer_steps(8, 4, 0.0, o, 16), -1);
    ck_assert_int_eq(infer_steps(8, 4, 1.5, o, 16), -1);
}
END_TEST

START_TEST(gaussian_map)
{
    float w[8 * 8 * 4];
    infer_gaussian((int64_t[3]){ 1, 1, 4 }, w);
    /* sigma = 0.5, centre 2: exp(-d^2 / (2 * 0.25)) for d = -2, -1, 0, 1 */
    ck_assert_float_eq_tol(w[0], exp(-8.0), 1e-7);
    ck_assert_float_eq_tol(w[1], exp(-2.0), 1e-7);
    ck_assert_float_eq_tol(w[2], 1.0, 1e-7);
    ck_assert_float_eq_tol(w[3], exp(-2.0), 1e-7);
    infer_gaussian((int64_t[3]){ 4, 8, 8 }, w);
    float mx = 0, mn = 1;
    for (int i = 0; i < 256; i++) {
        if (w[i] > mx) mx = w[i];
        if (w[i] < mn) mn = w[i];
    }
    ck_assert_float_eq(mx, 1.0f);
    ck_assert(mn > 0);
    ck_assert_float_eq(w[(2 * 8 + 4) * 8 + 4], 1.0f);   /* the centre is patch / 2 */
    /* separable: w(z, y, x) = gz(z) gy(y) gx(x) */
    ck_assert_float_eq_tol(w[(0 * 8 + 1) * 8 + 7], (float)(exp(-8.0) * exp(-0.5 * 9 / 1.0) * exp(-0.5 * 9 / 1.0)), 1e-9);
}
END_TEST

/* A net whose answer depends on where the window is: class 1's logit is
 * 0.1 x the input at the window's first voxel (the image is x + 1, so that
 * is 0.1 (origin + 1)).  One axis of 10 voxels, patch 4, step 0.5: windows
 * at 0, 2, 4, 6, each voxel a Gaussian-weighted mean of the windows over it. */
typedef struct { int64_t per; } PosNet;

static int pos_forward(void *ctx, int n, const float *in, float *out, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    PosNet *p = ctx;
    for (int b = 0; b < n; b++) {
        float c = 0.1f * in[(int64_t)b * p->per];
        for (int64_t v = 0; v < p->per; v++) {
            out[((int64_t)b * 2 + 0) * p->per + v] = 0;
            out[((int64_t)b * 2 + 1) * p->per + v] = c;
        }
    }
    return 0;
}

START_TEST(gaussian_weighting_by_hand)
{
    int64_t S[3] = { 1, 1, 10 };
    float img[10], probs[20];
    for (int x = 0; x < 10; x++) img[x] = (float)(x + 1);
    InferConfig cfg;
    infer_config_default(&cfg);
    memcpy(cfg.patch, (int64_t[3]){ 1, 1, 4 }, sizeof cfg.patch);
    cfg.channels = 1;
    cfg.mirror_axes = 0;
    PosNet pn = { 4 };
    InferNet net = { pos_forward, &pn };
    char err[256];
    const double g[4] = { exp(-8.0), exp(-2.0), 1.0, exp(-2.0) };
    const int origins[4] = { 0, 2, 4, 6 };
    for (int gauss = 0; gauss < 2; gauss++) {
        cfg.gaussian = gauss;
        ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), 0);
        for (int x = 0; x < 10; x++) {
            double num = 0, den = 0;
            for (int w = 0; w < 4; w++) {
                int d = x - origins[w];
                if (d < 0 || d > 3) continue;
                double wt = gauss ? g[d] : 1.0;
                num += wt / (1 + exp(-0.1 * (origins[w] + 1)));
                den += wt;
            }
            ck_assert_msg(fabs(probs[10 + x] - num / den) < 1e-6, "x %d gauss %d: %g, want %g", x, gauss,
                          (double)probs[10 + x], num / den);
            ck_assert(fabs(probs[x] + probs[10 + x] - 1) < 1e-6);
        }
    }
    /* mirrored along x the net sees each window reversed: its first voxel is the window's last
     * (origin + 4); the weights still belong to the unflipped positions (asymmetric: centre 2 of 4) */
    cfg.gaussian = 1;
    cfg.mirror_axes = 4;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), 0);
    for (int x = 0; x < 10; x++) {
        double num = 0, den = 0;
        for (int w = 0; w < 4; w++) {
            int d = x - origins[w];
            if (d < 0 || d > 3) continue;
            num += g[d] * 0.5 * (1 / (1 + exp(-0.1 * (origins[w] + 1))) + 1 / (1 + exp(-0.1 * (origins[w] + 4))));
            den += g[d];
        }
        ck_assert_msg(fabs(probs[10 + x] - num / den) < 1e-6, "mirrored, x %d: %g, want %g", x,
                      (double)probs[10 + x], num / den);
    }
    cfg.mirror_axes = 0;
    /* the weighting matters: voxel 4 is window 2's centre and window 4's first voxel */
    cfg.gaussian = 1;
    float pg[20];
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, pg, err, sizeof err), 0);
    cfg.gaussian = 0;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), 0);
    ck_assert(fabs(pg[14] - probs[14]) > 1e-2);
}
END_TEST

/* A net that is not mirror-symmetric: class 1's logit is the forward
 * difference in(x + 1) - in(x) inside the window (0 at the window's end).
 * Mirrored along x it sees the reversed window, so flipped back its
 * answer is the backward difference: the average is hand-computable. */
typedef struct { int64_t P; int calls; } DiffNet;

static int diff_forward(void *ctx, int n, const float *in, float *out, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    DiffNet *d = ctx;
    d->calls++;
    for (int b = 0; b < n; b++)
        for (int64_t x = 0; x < d->P; x++) {
            const float *w = in + (int64_t)b * d->P;
            out[((int64_t)b * 2) * d->P + x] = 0;
            out[((int64_t)b * 2 + 1) * d->P + x] = x + 1 < d->P ? w[x + 1] - w[x] : 0;
        }
    return 0;
}

START_TEST(mirroring_flips_and_back)
{
    int64_t S[3] = { 1, 1, 6 };
    float img[6] = { 0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -0.75f }, probs[12];
    InferConfig cfg;
    infer_config_default(&cfg);
    memcpy(cfg.patch, (int64_t[3]){ 1, 1, 6 }, sizeof cfg.patch);
    cfg.channels = 1;
    cfg.mirror_axes = 4;   /* x */
    DiffNet dn = { 6, 0 };
    InferNet net = { diff_forward, &dn };
    char err[256];
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), 0);
    ck_assert_int_eq(dn.calls, 2);
    for (int x = 0; x < 6; x++) {
        double fwd = x < 5 ? img[x + 1] - img[x] : 0, bwd = x > 0 ? img[x - 1] - img[x] : 0;
        double want = 0.5 * (1 / (1 + exp(-fwd)) + 1 / (1 + exp(-bwd)));
        ck_assert_msg(fabs(probs[6 + x] - want) < 1e-6, "x %d: %g, want %g", x, (double)probs[6 + x], want);
    }
    /* without mirroring: the forward difference alone */
    cfg.mirror_axes = 0;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), 0);
    for (int x = 0; x < 6; x++) {
        double fwd = x < 5 ? img[x + 1] - img[x] : 0;
        ck_assert(fabs(probs[6 + x] - 1 / (1 + exp(-fwd))) < 1e-6);
    }
    /* all three axes of a 2 x 3 x 6 window, the difference taken along the flattened window:
     * combination m sees W(v) = X(flip_m(v)), answers Y(v) = W(v + 1) - W(v), and voxel u gets
     * Y(flip_m(u)); the mean over the 8 combinations */
    int64_t S3[3] = { 2, 3, 6 };
    float img3[36], p3[72];
    for (int i = 0; i < 36; i++) img3[i] = (float)((i * 13) % 7) * 0.5f - 1.0f;
    memcpy(cfg.patch, (int64_t[3]){ 2, 3, 6 }, sizeof cfg.patch);
    dn.P = 36;
    dn.calls = 0;
    cfg.mirror_axes = 7;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img3, S3, p3, err, sizeof err), 0);
    ck_assert_int_eq(dn.calls, 8);
    for (int u = 0; u < 36; u++) {
        double want = 0;
        for (int m = 0; m < 8; m++) {
            int uz = u / 18, uy = (u / 6) % 3, ux = u % 6;
            int v = ((m & 1 ? 1 - uz : uz) * 3 + (m & 2 ? 2 - uy : uy)) * 6 + (m & 4 ? 5 - ux : ux);
            double y = 0;
            if (v + 1 < 36) {
                int a = v + 1, az = a / 18, ay = (a / 6) % 3, ax = a % 6;   /* W(v + 1) = X(flip_m(v + 1)) */
                int fa = ((m & 1 ? 1 - az : az) * 3 + (m & 2 ? 2 - ay : ay)) * 6 + (m & 4 ? 5 - ax : ax);
                y = img3[fa] - img3[u];
            }
            want += 1 / (1 + exp(-y)) / 8;
        }
        ck_assert_msg(fabs(p3[36 + u] - want) < 1e-6, "voxel %d: %g, want %g", u, (double)p3[36 + u], want);
    }
}
END_TEST

START_TEST(ensemble_averages)
{
    int64_t S[3] = { 3, 5, 6 }, n = 90;
    float *img = make_image(1, S), *probs = malloc(sizeof(float) * (size_t)(2 * n));
    InferConfig cfg;
    infer_config_default(&cfg);
    memcpy(cfg.patch, (int64_t[3]){ 2, 4, 4 }, sizeof cfg.patch);
    cfg.channels = 1;
    cfg.batch = 2;
    PointNet a = { .C = 1, .K = 2, .per = 32, .batch = 2, .variant = 0 };
    PointNet b = { .C = 1, .K = 2, .per = 32, .batch = 2, .variant = 1 };
    InferNet nets[2] = { { point_forward, &a }, { point_forward, &b } };
    char err[256];
    ck_assert_int_eq(infer_sliding_window(&cfg, nets, 2, img, S, probs, err, sizeof err), 0);
    ck_assert_int_eq(a.windows, b.windows);
    for (int64_t i = 0; i < n; i++) {
        double ea[2], eb[2];
        softmax_expected(0, img, 1, 2, n, i, ea);
        softmax_expected(1, img, 1, 2, n, i, eb);
        for (int k = 0; k < 2; k++) ck_assert(fabs(probs[k * n + i] - 0.5 * (ea[k] + eb[k])) < 1e-5);
    }
    free(img);
    free(probs);
}
END_TEST

START_TEST(errors_propagate)
{
    int64_t S[3] = { 4, 8, 8 };
    float *img = make_image(1, S), *probs = malloc(sizeof(float) * 2 * 256);
    InferConfig cfg;
    infer_config_default(&cfg);
    memcpy(cfg.patch, (int64_t[3]){ 4, 4, 4 }, sizeof cfg.patch);
    cfg.channels = 1;
    PointNet pn = { .C = 1, .K = 2, .per = 64, .batch = 1, .fail_at = 3 };
    InferNet net = { point_forward, &pn };
    char err[256] = "";
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "boom at call 3") != NULL, "%s", err);
    ck_assert_int_eq(pn.calls, 3);   /* stopped at the failure */
    pn.fail_at = 0;
    cfg.step = 0;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), -1);
    ck_assert(strstr(err, "step") != NULL);
    cfg.step = 1.5;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), -1);
    cfg.step = 0.5;
    cfg.batch = 0;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), -1);
    cfg.batch = 1;
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 0, img, S, probs, err, sizeof err), -1);
    cfg.rank = 2;   /* a 2D net must have patch[0] = 1 */
    ck_assert_int_eq(infer_sliding_window(&cfg, &net, 1, img, S, probs, err, sizeof err), -1);
    free(img);
    free(probs);
}
END_TEST

START_TEST(labels_from_probabilities)
{
    InferConfig cfg;
    infer_config_default(&cfg);
    cfg.classes = 3;
    float p[9] = { 0.2f, 0.5f, 0.3f,     /* class 0 */
                   0.5f, 0.2f, 0.3f,     /* class 1 */
                   0.3f, 0.3f, 0.4f };   /* class 2 */
    uint8_t l[3];
    infer_labels(&cfg, p, 3, l);
    ck_assert(l[0] == 1 && l[1] == 0 && l[2] == 2);
    cfg.sigmoid = 1;   /* channel k is class k + 1; the highest above 0.5 */
    cfg.classes = 2;
    float s[6] = { 0.9f, 0.2f, 0.6f, 0.7f, 0.1f, 0.8f };
    infer_labels(&cfg, s, 3, l);
    ck_assert(l[0] == 2 && l[1] == 0 && l[2] == 2);
    cfg.classes = 1;
    infer_labels(&cfg, s, 3, l);
    ck_assert(l[0] == 1 && l[1] == 0 && l[2] == 1);
}
END_TEST

START_TEST(stats_from_metadata)
{
    const char *keys[] = { "netc.stats.CT.mean", "netc.stats.CT.sd", "netc.stats.ct.p005", "netc.stats.ct.p995",
                           "netc.stats.1.mean", "netc.stats.1.sd", "netc.stats.1.p005", "format", "netc.stats.1.p995" };
    const char *vals[] = { "40.5", "12", "-100", "300", "1", "2", "3", "pt", "4" };
    const char *names[] = { "ct", "pet" };
    DsChannelStats st[2];
    char err[256];
    ck_assert_int_eq(infer_stats_from_metadata(keys, vals, 9, names, 2, st, err, sizeof err), 2);
    ck_assert(st[0].valid && st[0].mean == 40.5 && st[0].sd == 12 && st[0].p005 == -100 && st[0].p995 == 300);
    ck_assert(st[1].valid && st[1].p995 == 4);
    ck_assert_int_eq(infer_stats_from_metadata(keys, vals, 7, names, 2, st, err, sizeof err), 1);   /* 1 incomplete */
    ck_assert(!st[1].valid);
    const char *bad[] = { "netc.stats.ct.mean" }, *badv[] = { "forty" };
    ck_assert_int_eq(infer_stats_from_metadata(bad, badv, 1, names, 2, st, err, sizeof err), -1);
    ck_assert(strstr(err, "netc.stats.ct.mean") != NULL);
}
END_TEST

/* ---- one case through files ---------------------------------------------------------------------------- */

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/netc-infer-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* A float32 volume (nt volumes of it when nt > 1), x fastest, with an sform
 * that flips x and swaps y and z. */
static void write_vol_nt(const char *path, const int64_t d[3], int nt, const float *data)
{
    int dims[8] = { nt > 1 ? 4 : 3, (int)d[0], (int)d[1], (int)d[2], nt, 1, 1, 1 };
    nifti_image *nim = nifti_make_new_nim(dims, NIFTI_TYPE_FLOAT32, 1);
    ck_assert_ptr_nonnull(nim);
    memcpy(nim->data, data, sizeof(float) * (size_t)(d[0] * d[1] * d[2] * nt));
    mat44 m;
    memset(&m, 0, sizeof m);
    m.m[0][0] = -1;   /* voxel x -> world -x */
    m.m[2][1] = 1;    /* voxel y -> world z */
    m.m[1][2] = 1;    /* voxel z -> world y */
    m.m[3][3] = 1;
    nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
    nim->sto_xyz = m;
    nim->dx = nim->dy = nim->dz = nim->pixdim[1] = nim->pixdim[2] = nim->pixdim[3] = 1;
    ck_assert_int_eq(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
}

static void write_vol(const char *path, const int64_t d[3], const float *data) { write_vol_nt(path, d, 1, data); }

/* class 1 where the normalized value is positive */
static int thresh_forward(void *ctx, int n, const float *in, float *out, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    int64_t per = *(int64_t *)ctx;
    for (int b = 0; b < n; b++)
        for (int64_t v = 0; v < per; v++) {
            out[(b * 2) * per + v] = 0;
            out[(b * 2 + 1) * per + v] = 4 * in[b * per + v];
        }
    return 0;
}

/* the same with C channels in: class 1 where channel 0 is positive */
static int thresh2_forward(void *ctx, int n, const float *in, float *out, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    int64_t per = ((int64_t *)ctx)[0], C = ((int64_t *)ctx)[1];
    for (int b = 0; b < n; b++)
        for (int64_t v = 0; v < per; v++) {
            out[(b * 2) * per + v] = 0;
            out[(b * 2 + 1) * per + v] = 4 * in[b * C * per + v];
        }
    return 0;
}

START_TEST(case_to_scan_grid)
{
    int64_t d[3] = { 7, 5, 6 }, n = 210;   /* x y z */
    float data[210];
    double mean = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t x = i % 7, y = (i / 7) % 5, z = i / 35;
        data[i] = (float)(10 + 3 * x + (y * 5 + z * 2) % 7);
        mean += data[i];
    }
    mean /= (double)n;
    char in[128], out[128], prob[128], bad[128];
    snprintf(in, sizeof in, "%s/img.nii.gz", dir);
    snprintf(out, sizeof out, "%s/seg.nii.gz", dir);
    snprintf(prob, sizeof prob, "%s/prob.nii.gz", dir);
    write_vol(in, d, data);

    InferCaseOptions o;
    memset(&o, 0, sizeof o);
    infer_config_default(&o.cfg);
    memcpy(o.cfg.patch, (int64_t[3]){ 4, 4, 4 }, sizeof o.cfg.patch);
    o.cfg.channels = 1;
    o.cfg.classes = 2;
    Normalization z = { NORM_ZSCORE, 0, 0 };
    ds_params_default(&o.params, &z);
    o.prob_output = prob;
    int64_t per = 64;
    InferNet net = { thresh_forward, &per };
    const char *inputs[1] = { in };
    char err[512] = "";
    ck_assert_msg(infer_case(&o, &net, 1, inputs, 1, out, err, sizeof err) == 0, "%s", err);
    Volume v, p;
    ck_assert_int_eq(vol_read(out, &v, err, sizeof err), 0);
    ck_assert(v.dim[0] == 7 && v.dim[1] == 5 && v.dim[2] == 6);
    for (int64_t i = 0; i < n; i++) ck_assert_int_eq((int)v.data[i], data[i] > mean);
    ck_assert_int_eq(vol_read(prob, &p, err, sizeof err), 0);
    ck_assert(p.dim[3] == 2);
    for (int64_t i = 0; i < n; i++) {
        ck_assert(fabs(p.data[i] + p.data[n + i] - 1) < 1e-5);
        ck_assert_int_eq(p.data[n + i] > 0.5f, data[i] > mean);
    }
    vol_free(&p);

    /* bad inputs: a message naming the file, the existing output untouched */
    snprintf(bad, sizeof bad, "%s/none.nii.gz", dir);
    inputs[0] = bad;
    ck_assert_int_eq(infer_case(&o, &net, 1, inputs, 1, out, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "none.nii.gz") != NULL, "%s", err);
    const char *two[2] = { in, in };
    ck_assert_int_eq(infer_case(&o, &net, 1, two, 2, out, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "channels") != NULL, "%s", err);
    Volume again;
    ck_assert_int_eq(vol_read(out, &again, err, sizeof err), 0);
    ck_assert_mem_eq(again.data, v.data, sizeof(float) * (size_t)n);
    vol_free(&again);
    vol_free(&v);

    /* one 4D file holding two channels: the net reads channel 0 of each window (channel 1 is
     * the negated image, which must not leak into channel 0) */
    float data2[420];
    for (int64_t i = 0; i < n; i++) {
        data2[i] = data[i];
        data2[n + i] = -data[i];
    }
    char in4[128], out4[128];
    snprintf(in4, sizeof in4, "%s/img4d.nii.gz", dir);
    snprintf(out4, sizeof out4, "%s/seg4d.nii.gz", dir);
    write_vol_nt(in4, d, 2, data2);
    o.cfg.channels = 2;
    o.prob_output = NULL;
    int64_t per2[2] = { 64, 2 };
    InferNet net2 = { thresh2_forward, per2 };
    inputs[0] = in4;
    ck_assert_msg(infer_case(&o, &net2, 1, inputs, 1, out4, err, sizeof err) == 0, "%s", err);
    Volume v4;
    ck_assert_int_eq(vol_read(out4, &v4, err, sizeof err), 0);
    ck_assert(v4.dim[3] == 1 && v4.dim[0] == 7);
    for (int64_t i = 0; i < n; i++) ck_assert_int_eq((int)v4.data[i], data[i] > mean);
    vol_free(&v4);
    o.cfg.channels = 1;

    /* NORM_CT without statistics: a clear error */
    Normalization ct = { NORM_CT, 0, 0 };
    ds_params_default(&o.params, &ct);
    inputs[0] = in;
    ck_assert_int_eq(infer_case(&o, &net, 1, inputs, 1, out, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "statistics") != NULL, "%s", err);
}
END_TEST

/* Probabilities back to the scan: the crop box and the orientation undone
 * as ds_undo_labels does for labels. */
START_TEST(undo_probabilities_matches_labels)
{
    int64_t d[3] = { 6, 5, 4 }, n = 120;
    float data[120];
    for (int64_t i = 0; i < n; i++) {
        int64_t x = i % 6, y = (i / 6) % 5, z = i / 30;
        data[i] = (x == 0 || y == 4 || z == 3) ? 0.0f : (float)(1 + x + y * z);   /* a zero border: cropped */
    }
    char in[128];
    snprintf(in, sizeof in, "%s/img.nii.gz", dir);
    write_vol(in, d, data);
    Volume v;
    char err[256];
    ck_assert_int_eq(vol_read(in, &v, err, sizeof err), 0);
    DsParams prm;
    Normalization nm = { NORM_NONE, 0, 0 };
    ds_params_default(&prm, &nm);
    DsPrepped pp;
    ck_assert_int_eq(ds_prepare(&v, 1, NULL, &prm, NULL, NULL, NULL, &pp, err, sizeof err), 0);
    int64_t m = pp.shape[0] * pp.shape[1] * pp.shape[2];
    ck_assert_int_lt(m, n);
    float *probs = malloc(sizeof(float) * (size_t)(2 * m)), *back = malloc(sizeof(float) * (size_t)(2 * n));
    uint8_t *lab = malloc((size_t)m), *src = malloc((size_t)n);
    for (int64_t i = 0; i < m; i++) {
        lab[i] = pp.image[i] > 4;
        probs[i] = lab[i] ? 0.2f : 0.9f;
        probs[m + i] = 1 - probs[i];
    }
    ck_assert_int_eq(infer_undo_probs(&pp.geom, probs, 2, 1.0f, back, err, sizeof err), 0);
    ck_assert_int_eq(ds_undo_labels(&pp.geom, lab, src, err, sizeof err), 0);
    for (int64_t i = 0; i < n; i++) {
        ck_assert_int_eq(back[n + i] > 0.5f, src[i]);
        ck_assert_int_eq(src[i], data[i] > 4);
        if (data[i] == 0) ck_assert(back[i] == 1.0f && back[n + i] == 0.0f);
    }
    free(probs); free(back); free(lab); free(src);
    ds_prepped_free(&pp);
    vol_free(&v);
}
END_TEST

Suite *infer_suite(void)
{
    Suite *s = suite_create("infer");
    TCase *tc = tcase_create("engine");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pointwise_is_exact);
    tcase_add_test(tc, window_count);
    tcase_add_test(tc, steps_follow_nnunet);
    tcase_add_test(tc, gaussian_map);
    tcase_add_test(tc, gaussian_weighting_by_hand);
    tcase_add_test(tc, mirroring_flips_and_back);
    tcase_add_test(tc, ensemble_averages);
    tcase_add_test(tc, errors_propagate);
    tcase_add_test(tc, labels_from_probabilities);
    tcase_add_test(tc, stats_from_metadata);
    suite_add_tcase(s, tc);
    TCase *tf = tcase_create("files");
    tcase_set_timeout(tf, 60);
    tcase_add_checked_fixture(tf, setup, teardown);
    tcase_add_test(tf, case_to_scan_grid);
    tcase_add_test(tf, undo_probabilities_matches_labels);
    suite_add_tcase(s, tf);
    return s;
}
