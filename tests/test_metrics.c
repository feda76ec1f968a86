/* test_metrics.c — segmentation metrics (runtime/metrics.c) against answers
 * worked out by hand, the distance transform against brute force, and label
 * post-processing (runtime/postproc.c). */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "postproc.h"
#include "support.h"

#define IDX(z, y, x) (((z) * ny + (y)) * nx + (x))

static int64_t count_nonzero(const uint8_t *a, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        c += a[i] != 0;
    return c;
}

/* Two voxels touching only at a corner: one component with 26-connectivity,
 * two with 6 (the first in voxel order is kept on the tie). */
START_TEST(pp_diagonal_pair)
{
    const int64_t nz = 3, ny = 3, nx = 3, shape[3] = { nz, ny, nx };
    uint8_t a[27] = { 0 }, b[27];
    char err[256];
    a[IDX(0, 0, 0)] = 1;
    a[IDX(1, 1, 1)] = 1;
    memcpy(b, a, sizeof a);
    ck_assert_int_eq(pp_keep_largest(a, shape, 0, 26, err, sizeof err), 0);
    ck_assert_int_eq(count_nonzero(a, 27), 2);
    ck_assert_int_eq(pp_keep_largest(b, shape, 0, 6, err, sizeof err), 0);
    ck_assert_int_eq(count_nonzero(b, 27), 1);
    ck_assert_int_eq(b[IDX(0, 0, 0)], 1); /* tie: first found in voxel order */
    /* an edge neighbour (dy, dx) is 26- but not 6-connected either */
    memset(a, 0, sizeof a);
    a[IDX(2, 1, 1)] = 3;
    a[IDX(2, 2, 2)] = 3;
    a[IDX(0, 0, 2)] = 3;
    a[IDX(0, 1, 2)] = 3;
    a[IDX(0, 2, 2)] = 3;
    memcpy(b, a, sizeof a);
    ck_assert_int_eq(pp_keep_largest(a, shape, 0, 6, err, sizeof err), 0);
    ck_assert_int_eq(count_nonzero(a, 27), 3);
    ck_assert_int_eq(a[IDX(2, 1, 1)], 0);
    ck_assert_int_eq(a[IDX(0, 1, 2)], 3);
}
END_TEST

/* Per class: each class keeps its own largest piece; all-foreground keeps
 * the largest union of touching classes. */
START_TEST(pp_per_class)
{
    const int64_t nz = 1, ny = 4, nx = 8, shape[3] = { nz, ny, nx };
    uint8_t a[32] = { 0 }, b[32];
    char err[256];
    /* class 1: a 3-voxel run and a 1-voxel island; class 2: 2 voxels next to
     * the class-1 run, and a 2-voxel run elsewhere (tie: first kept) */
    a[IDX(0, 0, 0)] = a[IDX(0, 0, 1)] = a[IDX(0, 0, 2)] = 1;
    a[IDX(0, 3, 7)] = 1;
    a[IDX(0, 0, 3)] = a[IDX(0, 0, 4)] = 2;
    a[IDX(0, 2, 6)] = a[IDX(0, 3, 6)] = 2;
    memcpy(b, a, sizeof a);
    ck_assert_int_eq(pp_keep_largest(a, shape, 1, 6, err, sizeof err), 0);
    ck_assert_int_eq(count_nonzero(a, 32), 5);
    ck_assert_int_eq(a[IDX(0, 3, 7)], 0);
    ck_assert_int_eq(a[IDX(0, 0, 3)], 2);
    ck_assert_int_eq(a[IDX(0, 2, 6)], 0);
    /* all foreground, 6-connected: the 5-voxel run of classes 1+2 wins */
    ck_assert_int_eq(pp_keep_largest(b, shape, 0, 6, err, sizeof err), 0);
    ck_assert_int_eq(count_nonzero(b, 32), 5);
    ck_assert_int_eq(b[IDX(0, 0, 0)], 1);
    ck_assert_int_eq(b[IDX(0, 0, 4)], 2);
    ck_assert_int_eq(b[IDX(0, 3, 7)], 0);
    ck_assert_int_eq(b[IDX(0, 3, 6)], 0);
}
END_TEST

START_TEST(pp_empty_and_errors)
{
    const int64_t shape[3] = { 4, 5, 6 };
    uint8_t a[120] = { 0 };
    char err[256] = "";
    ck_assert_int_eq(pp_keep_largest(a, shape, 0, 26, err, sizeof err), 0);
    ck_assert_int_eq(pp_keep_largest(a, shape, 1, 6, err, sizeof err), 0);
    ck_assert_int_eq(count_nonzero(a, 120), 0);
    ck_assert_int_eq(pp_keep_largest(a, shape, 0, 8, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "connectivity"));
    const int64_t zero[3] = { 0, 5, 6 };
    ck_assert_int_eq(pp_keep_largest(a, zero, 0, 6, err, sizeof err), 0);
}
END_TEST

/* A large volume (a snake through 64^3 that is one 6-connected component
 * of ~130k voxels) must not overflow any recursion. */
START_TEST(pp_large_snake)
{
    const int64_t nz = 64, ny = 64, nx = 64, shape[3] = { nz, ny, nx };
    int64_t n = nz * ny * nx, want = 0;
    uint8_t *a = calloc((size_t)n, 1);
    ck_assert_ptr_nonnull(a);
    for (int64_t z = 0; z < nz; z += 2)
        for (int64_t y = 0; y < ny; y += 2) {
            for (int64_t x = 0; x < nx; x++)
                a[IDX(z, y, x)] = 1, want++;
            if (y + 2 < ny) /* connect rows alternately at either end */
                a[IDX(z, y + 1, (y / 2) % 2 ? 0 : nx - 1)] = 1, want++;
        }
    for (int64_t z = 0; z + 2 < nz; z += 2) /* connect planes */
        a[IDX(z + 1, ny - 2, 0)] = 1, want++;
    a[IDX(nz - 1, ny - 1, nx - 1)] = 1; /* an island */
    char err[256];
    ck_assert_int_eq(pp_keep_largest(a, shape, 0, 6, err, sizeof err), 0);
    ck_assert_int_eq(count_nonzero(a, n), want);
    ck_assert_int_eq(a[IDX(nz - 1, ny - 1, nx - 1)], 0);
    free(a);
}
END_TEST

/* ---- metrics ---------------------------------------------------------- */

#define EPS 1e-9

/* Fill a box [lo, hi] (inclusive, voxels) of a (z, y, x) volume with v. */
static void fill_box(uint8_t *a, const int64_t shape[3], const int64_t lo[3], const int64_t hi[3], uint8_t v)
{
    for (int64_t z = lo[0]; z <= hi[0]; z++)
        for (int64_t y = lo[1]; y <= hi[1]; y++)
            for (int64_t x = lo[2]; x <= hi[2]; x++)
                a[(z * shape[1] + y) * shape[2] + x] = v;
}

static SegMetrics metrics_of(const uint8_t *p, const uint8_t *r, uint8_t cls, const int64_t shape[3],
                             const double sp[3], double tol)
{
    MetricOptions o;
    metric_options_default(&o);
    o.tolerance = tol;
    SegMetrics m;
    char err[256];
    ck_assert_msg(seg_metrics(p, r, cls, shape, sp, &o, &m, err, sizeof err) == 0, "%s", err);
    return m;
}

START_TEST(mt_percentile_linear)
{
    double a[4] = { 4, 1, 3, 2 };
    ck_assert_double_eq_tol(mt_percentile(a, 4, 50), 2.5, EPS);
    double b[20];
    for (int i = 0; i < 20; i++)
        b[i] = 19 - i;
    ck_assert_double_eq_tol(mt_percentile(b, 20, 95), 18.05, EPS); /* 0.95 * 19 = 18.05 */
    ck_assert_double_eq_tol(mt_percentile(b, 20, 100), 19, EPS);
    ck_assert_double_eq_tol(mt_percentile(b, 20, 0), 0, EPS);
    ck_assert(isnan(mt_percentile(b, 0, 95)));
}
END_TEST

START_TEST(mt_surface_cube)
{
    const int64_t shape[3] = { 5, 5, 5 };
    uint8_t a[125] = { 0 }, s[125];
    fill_box(a, shape, (int64_t[]){ 1, 1, 1 }, (int64_t[]){ 3, 3, 3 }, 2);
    mt_surface(a, 2, shape, s);
    int64_t n = 0;
    for (int i = 0; i < 125; i++)
        n += s[i];
    ck_assert_int_eq(n, 26); /* 27 minus the centre */
    ck_assert_int_eq(s[(2 * 5 + 2) * 5 + 2], 0);
    /* a mask touching the border of the volume: the outside is background */
    memset(a, 0, sizeof a);
    fill_box(a, shape, (int64_t[]){ 0, 0, 0 }, (int64_t[]){ 4, 4, 4 }, 1);
    mt_surface(a, 1, shape, s);
    n = 0;
    for (int i = 0; i < 125; i++)
        n += s[i];
    ck_assert_int_eq(n, 125 - 27);
    /* a 2D image (one slice): a 3 x 3 square has the 8 pixels of its ring */
    const int64_t flat[3] = { 1, 5, 5 };
    memset(a, 0, sizeof a);
    fill_box(a, flat, (int64_t[]){ 0, 1, 1 }, (int64_t[]){ 0, 3, 3 }, 1);
    mt_surface(a, 1, flat, s);
    n = 0;
    for (int i = 0; i < 25; i++)
        n += s[i];
    ck_assert_int_eq(n, 8);
    ck_assert_int_eq(s[2 * 5 + 2], 0);
}
END_TEST

/* 2D: a 4 x 4 square and the same shifted by one pixel along x (1 mm), a
 * single slice of a 3D volume (no z neighbours: 2D surfaces).  Surfaces:
 * the 12-pixel rings.  Directed distances (the same both ways): the top and
 * bottom rows' 3 pixels over the other square lie on its ring (0), their
 * 4th pixel is 1 mm from it; the 2 + 2 side-column pixels between them are
 * 1 mm from the other ring's side column.  So 6 x 0 and 6 x 1 mm: HD95 = 1,
 * ASSD = 0.5, NSD(0.5 mm) = 0.5, Dice = 2 * 12 / 32. */
START_TEST(mt_2d_slice)
{
    const int64_t shape[3] = { 1, 6, 7 };
    const double sp[3] = { 5, 1, 1 };
    uint8_t p[42] = { 0 }, r[42] = { 0 };
    fill_box(r, shape, (int64_t[]){ 0, 1, 1 }, (int64_t[]){ 0, 4, 4 }, 1);
    fill_box(p, shape, (int64_t[]){ 0, 1, 2 }, (int64_t[]){ 0, 4, 5 }, 1);
    SegMetrics m = metrics_of(p, r, 1, shape, sp, 0.5);
    ck_assert_int_eq(m.surf_pred, 12);
    ck_assert_int_eq(m.surf_ref, 12);
    ck_assert_double_eq_tol(m.dice, 24.0 / 32.0, EPS);
    ck_assert_double_eq_tol(m.hd95, 1.0, EPS);
    ck_assert_double_eq_tol(m.assd, 0.5, EPS);
    ck_assert_double_eq_tol(m.nsd, 0.5, EPS);
}
END_TEST

START_TEST(mt_counts_by_hand)
{
    const int64_t shape[3] = { 1, 1, 6 };
    const double sp[3] = { 1, 1, 1 };
    /* class 1: pred 1 1 0 1 0 ., ref 1 0 0 1 1 .: tp 2, fp 1, fn 1; class 2 differs */
    uint8_t p[6] = { 1, 1, 0, 1, 0, 2 }, r[6] = { 1, 0, 2, 1, 1, 2 };
    SegMetrics m = metrics_of(p, r, 1, shape, sp, 1.0);
    ck_assert_int_eq(m.tp, 2);
    ck_assert_int_eq(m.fp, 1);
    ck_assert_int_eq(m.fn, 1);
    ck_assert_double_eq_tol(m.dice, 4.0 / 6.0, EPS);
    ck_assert_double_eq_tol(m.iou, 2.0 / 4.0, EPS);
    m = metrics_of(p, r, 2, shape, sp, 1.0);
    ck_assert_int_eq(m.tp, 1);
    ck_assert_int_eq(m.fn, 1);
    ck_assert_double_eq_tol(m.dice, 2.0 / 3.0, EPS);
    ck_assert_double_eq_tol(m.iou, 1.0 / 2.0, EPS);
    /* class 2 surfaces are single voxels 3 voxels apart: HD = 3 mm at the 95th
     * percentile of {0} and {0, 3}: max(0, 0 + 0.95 * 3) */
    ck_assert_double_eq_tol(m.hd95, 0.95 * 3, EPS);
    ck_assert_double_eq_tol(m.assd, 1.0, EPS);      /* (0 + 0 + 3) / 3 */
    ck_assert_double_eq_tol(m.nsd, 2.0 / 3.0, EPS); /* tolerance 1 mm */
}
END_TEST

START_TEST(mt_identical)
{
    const int64_t shape[3] = { 8, 9, 10 };
    const double sp[3] = { 3.0, 0.8, 0.6 };
    uint8_t *a = calloc(720, 1);
    fill_box(a, shape, (int64_t[]){ 2, 1, 3 }, (int64_t[]){ 5, 7, 8 }, 1);
    a[0] = 1; /* a second piece in the corner */
    SegMetrics m = metrics_of(a, a, 1, shape, sp, 1.0);
    ck_assert_double_eq_tol(m.dice, 1, EPS);
    ck_assert_double_eq_tol(m.iou, 1, EPS);
    ck_assert_double_eq_tol(m.hd95, 0, EPS);
    ck_assert_double_eq_tol(m.assd, 0, EPS);
    ck_assert_double_eq_tol(m.nsd, 1, EPS);
    free(a);
}
END_TEST

/* A cube of side L = 6 voxels and the same cube shifted by k = 2 voxels
 * along x, spacing (z, y, x) = (2, 1.5, 0.5) mm, so k * sx = 1 mm is no
 * more than one voxel step along y or z.  Surface of either cube: the
 * 6^3 - 4^3 = 152 voxels of its shell.  Directed distances (the same
 * multiset both ways, by symmetry):
 *  - side-face voxels (20 positions of the (y, z) ring) at the 4 columns x
 *    shared with the other cube: 0 (80 voxels); at the j-th column beyond
 *    it: j * sx, j = 1, 2 (20 voxels each);
 *  - end-face interior voxels (4 x 4 = 16 per face): k * sx = 1 mm, to the
 *    other cube's end face (any side face is at least one voxel along y or
 *    z away, >= 1.5 mm) — 32 voxels.
 * So 80 x 0, 20 x 0.5, 52 x 1.0 mm:
 *   HD95 = 1 mm (the sorted index 0.95 * 151 = 143.45 is in the 1.0 run),
 *   ASSD = (20 * 0.5 + 52 * 1) / 152 = 62 / 152 mm,
 *   NSD(1 mm) = 1, NSD(0.5 mm) = 100 / 152, NSD(0.4 mm) = 80 / 152,
 *   Dice = 2 * 144 / 432 = 2/3, IoU = 144 / 288 = 1/2. */
START_TEST(mt_shifted_cube)
{
    const int64_t shape[3] = { 9, 8, 12 };
    const double sp[3] = { 2.0, 1.5, 0.5 };
    int64_t n = shape[0] * shape[1] * shape[2];
    uint8_t *r = calloc((size_t)n, 1), *p = calloc((size_t)n, 1);
    fill_box(r, shape, (int64_t[]){ 1, 1, 1 }, (int64_t[]){ 6, 6, 6 }, 3);
    fill_box(p, shape, (int64_t[]){ 1, 1, 3 }, (int64_t[]){ 6, 6, 8 }, 3);
    SegMetrics m = metrics_of(p, r, 3, shape, sp, 1.0);
    ck_assert_int_eq(m.surf_pred, 152);
    ck_assert_int_eq(m.surf_ref, 152);
    ck_assert_double_eq_tol(m.dice, 2.0 / 3.0, EPS);
    ck_assert_double_eq_tol(m.iou, 0.5, EPS);
    ck_assert_double_eq_tol(m.hd95, 1.0, EPS);
    ck_assert_double_eq_tol(m.assd, 62.0 / 152.0, EPS);
    ck_assert_double_eq_tol(m.nsd, 1.0, EPS);
    ck_assert_double_eq_tol(metrics_of(p, r, 3, shape, sp, 0.5).nsd, 100.0 / 152.0, EPS);
    ck_assert_double_eq_tol(metrics_of(p, r, 3, shape, sp, 0.4).nsd, 80.0 / 152.0, EPS);
    /* the directed multiset itself */
    double *d = NULL;
    int64_t nd = mt_directed_distances(p, r, 3, shape, sp, &d);
    ck_assert_int_eq(nd, 152);
    int c0 = 0, c05 = 0, c1 = 0;
    for (int64_t i = 0; i < nd; i++) {
        c0 += fabs(d[i]) < EPS;
        c05 += fabs(d[i] - 0.5) < EPS;
        c1 += fabs(d[i] - 1.0) < EPS;
    }
    ck_assert_int_eq(c0, 80);
    ck_assert_int_eq(c05, 20);
    ck_assert_int_eq(c1, 52);
    free(d);
    free(r);
    free(p);
}
END_TEST

/* Concentric boxes of half-size r1 = 2 mm and r2 = 3 mm on every axis with
 * spacing (1, 0.5, 0.25) mm (half-widths 2/4/8 and 3/6/12 voxels).  Every
 * inner surface voxel is exactly r2 - r1 = 1 mm from the outer surface (the
 * parallel face; other faces are farther).  An outer surface voxel at offset
 * p (mm) from the centre is at the distance from p to the inner box, whose
 * nearest point clamp(p, -r1, r1) is itself an inner surface voxel centre:
 * sqrt(sum_j max(0, |p_j| - r1)^2); the corners give sqrt(3) mm. */
START_TEST(mt_concentric_boxes)
{
    const int64_t shape[3] = { 9, 15, 27 }, c[3] = { 4, 7, 13 };
    const double sp[3] = { 1.0, 0.5, 0.25 }, r1 = 2.0, r2 = 3.0;
    int64_t n = shape[0] * shape[1] * shape[2];
    uint8_t *in = calloc((size_t)n, 1), *out = calloc((size_t)n, 1), *s = malloc((size_t)n);
    int64_t a[3], b[3], lo[3], hi[3];
    for (int k = 0; k < 3; k++)
        a[k] = (int64_t)(r1 / sp[k]), b[k] = (int64_t)(r2 / sp[k]);
    for (int k = 0; k < 3; k++)
        lo[k] = c[k] - a[k], hi[k] = c[k] + a[k];
    fill_box(in, shape, lo, hi, 1);
    for (int k = 0; k < 3; k++)
        lo[k] = c[k] - b[k], hi[k] = c[k] + b[k];
    fill_box(out, shape, lo, hi, 1);

    double *d = NULL;
    int64_t nd = mt_directed_distances(in, out, 1, shape, sp, &d);
    ck_assert_int_gt(nd, 0);
    for (int64_t i = 0; i < nd; i++)
        ck_assert_double_eq_tol(d[i], r2 - r1, EPS);
    free(d);

    /* the analytic outer -> inner distances */
    mt_surface(out, 1, shape, s);
    double *want = malloc(sizeof(double) * (size_t)n), sum = 0;
    int64_t nw = 0;
    for (int64_t z = 0; z < shape[0]; z++)
        for (int64_t y = 0; y < shape[1]; y++)
            for (int64_t x = 0; x < shape[2]; x++) {
                if (!s[(z * shape[1] + y) * shape[2] + x])
                    continue;
                int64_t q[3] = { z, y, x };
                double d2 = 0;
                for (int k = 0; k < 3; k++) {
                    double e = fabs((double)(q[k] - c[k]) * sp[k]) - r1;
                    if (e > 0)
                        d2 += e * e;
                }
                want[nw++] = sqrt(d2);
                sum += sqrt(d2);
            }
    nd = mt_directed_distances(out, in, 1, shape, sp, &d);
    ck_assert_int_eq(nd, nw);
    for (int64_t i = 0; i < nd; i++)
        ck_assert_double_eq_tol(d[i], want[i], EPS);
    free(d);

    SegMetrics m = metrics_of(in, out, 1, shape, sp, 1.0);
    int64_t n_in = m.surf_pred;
    ck_assert_int_eq(m.surf_ref, nw);
    ck_assert_double_eq_tol(m.assd, (sum + (double)n_in * (r2 - r1)) / (double)(n_in + nw), EPS);
    double p95 = mt_percentile(want, nw, 95);
    ck_assert_double_eq_tol(m.hd95, p95 > 1.0 ? p95 : 1.0, EPS);
    /* the plain Hausdorff distance: the corners, sqrt(3) (r2 - r1) */
    MetricOptions o;
    metric_options_default(&o);
    o.percentile = 100;
    char err[256];
    ck_assert_int_eq(seg_metrics(in, out, 1, shape, sp, &o, &m, err, sizeof err), 0);
    ck_assert_double_eq_tol(m.hd95, sqrt(3.0) * (r2 - r1), EPS);
    free(want);
    free(in);
    free(out);
    free(s);
}
END_TEST

START_TEST(mt_empty_masks)
{
    const int64_t shape[3] = { 4, 4, 4 };
    const double sp[3] = { 1, 1, 1 };
    uint8_t e[64] = { 0 }, f[64] = { 0 };
    fill_box(f, shape, (int64_t[]){ 1, 1, 1 }, (int64_t[]){ 2, 2, 2 }, 1);
    /* both empty: MONAI gives NaN everywhere (Dice NaN with ignore_empty) */
    SegMetrics m = metrics_of(e, e, 1, shape, sp, 1.0);
    ck_assert(isnan(m.dice) && isnan(m.iou) && isnan(m.hd95) && isnan(m.assd) && isnan(m.nsd));
    /* empty prediction: Dice 0, distances +inf (HD95 NaN: quantile of infs) */
    m = metrics_of(e, f, 1, shape, sp, 1.0);
    ck_assert_double_eq(m.dice, 0);
    ck_assert_double_eq(m.iou, 0);
    ck_assert(isnan(m.hd95));
    ck_assert(isinf(m.assd) && m.assd > 0);
    ck_assert_double_eq(m.nsd, 0);
    /* empty reference: Dice NaN (ignore_empty), the same distances */
    m = metrics_of(f, e, 1, shape, sp, 1.0);
    ck_assert(isnan(m.dice) && isnan(m.iou) && isnan(m.hd95));
    ck_assert(isinf(m.assd));
    ck_assert_double_eq(m.nsd, 0);
    /* ignore_empty = 0: both empty is a perfect 1, only-prediction is 0 */
    MetricOptions o;
    metric_options_default(&o);
    o.ignore_empty = 0;
    char err[256];
    ck_assert_int_eq(seg_metrics(e, e, 1, shape, sp, &o, &m, err, sizeof err), 0);
    ck_assert_double_eq(m.dice, 1);
    ck_assert_double_eq(m.iou, 1);
    ck_assert_int_eq(seg_metrics(f, e, 1, shape, sp, &o, &m, err, sizeof err), 0);
    ck_assert_double_eq(m.dice, 0);
    /* bad spacing is an error, not a crash */
    const double bad[3] = { 1, 0, 1 };
    ck_assert_int_eq(seg_metrics(f, f, 1, shape, bad, &o, &m, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "spacing"));
}
END_TEST

/* The separable transform against brute force on random volumes with
 * anisotropic spacing (and one without any feature: +inf everywhere). */
START_TEST(mt_edt_brute_force)
{
    unsigned seed = 12345;
    for (int trial = 0; trial < 6; trial++) {
        int64_t shape[3] = { 3 + trial % 3, 5 + trial, 9 - trial % 4 };
        double sp[3] = { 1.0 + 0.7 * trial, 0.45, 1.3 };
        int64_t n = shape[0] * shape[1] * shape[2];
        uint8_t *f = malloc((size_t)n);
        double *d = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            f[i] = trial != 5 && (seed >> 16) % 100 < (unsigned)(3 + 8 * trial);
        }
        ck_assert_int_eq(mt_edt_sq(f, shape, sp, d), 0);
        for (int64_t i = 0; i < n; i++) {
            int64_t zi = i / (shape[1] * shape[2]), yi = (i / shape[2]) % shape[1], xi = i % shape[2];
            double best = INFINITY;
            for (int64_t j = 0; j < n; j++) {
                if (!f[j])
                    continue;
                int64_t zj = j / (shape[1] * shape[2]), yj = (j / shape[2]) % shape[1], xj = j % shape[2];
                double dz = (double)(zi - zj) * sp[0], dy = (double)(yi - yj) * sp[1], dx = (double)(xi - xj) * sp[2];
                double v = dz * dz + dy * dy + dx * dx;
                if (v < best)
                    best = v;
            }
            if (isinf(best))
                ck_assert(isinf(d[i]));
            else
                ck_assert_double_eq_tol(d[i], best, 1e-9 * (1 + best));
        }
        free(f);
        free(d);
    }
}
END_TEST

Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *t = tcase_create("postproc");
    tcase_add_test(t, pp_diagonal_pair);
    tcase_add_test(t, pp_per_class);
    tcase_add_test(t, pp_empty_and_errors);
    tcase_add_test(t, pp_large_snake);
    suite_add_tcase(s, t);
    TCase *m = tcase_create("metrics");
    tcase_add_test(m, mt_percentile_linear);
    tcase_add_test(m, mt_surface_cube);
    tcase_add_test(m, mt_2d_slice);
    tcase_add_test(m, mt_counts_by_hand);
    tcase_add_test(m, mt_identical);
    tcase_add_test(m, mt_shifted_cube);
    tcase_add_test(m, mt_concentric_boxes);
    tcase_add_test(m, mt_empty_masks);
    tcase_add_test(m, mt_edt_brute_force);
    suite_add_tcase(s, m);
    return s;
}
