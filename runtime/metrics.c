/* metrics.c — Dice, IoU, HD95, ASSD and NSD of one class, in mm, as MONAI
 * defines them (DiceMetric, MeanIoU, compute_hausdorff_distance,
 * compute_average_surface_distance(symmetric=True), compute_surface_dice
 * without sub-voxels).
 *
 * The surface of a mask is the mask minus its erosion by the 6-connected
 * cross with the volume padded by background (scipy's binary_erosion
 * defaults, which MONAI's get_mask_edges uses).  An axis of extent 1 (a 2D
 * image stored as a 3D volume) is left out: the erosion is then the 2D one
 * with the 4-connected cross, as MONAI does on 2D arrays.  The directed distances
 * from surface A to surface B are, for every voxel of A, the Euclidean
 * distance in mm to the nearest voxel centre of B, read from an exact
 * distance transform of B (mt_edt_sq).  Then
 *   HD95 = max(P95(d(P->R)), P95(d(R->P))), percentile with linear
 *          interpolation (torch.quantile);
 *   ASSD = mean of the two directed sets put together;
 *   NSD  = (#d(P->R) <= tol + #d(R->P) <= tol) / (|surf P| + |surf R|).
 * Empty masks follow MONAI: both empty -> HD95, ASSD, NSD NaN; exactly one
 * empty -> all distances are +inf, so ASSD = inf, NSD = 0 and HD95 = NaN
 * (torch.quantile of an all-inf tensor interpolates inf - inf).
 *
 * All the work happens in the bounding box of the union of both masks: the
 * surfaces lie in it, and Euclidean distances between its voxels do not
 * depend on the rest of the volume. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nifti1_io.h>

#include "metrics.h"

void metric_options_default(MetricOptions *o)
{
    o->percentile = 95.0;
    o->tolerance = 1.0;
    o->ignore_empty = 1;
}

/* The surface in an array of shape m; flat[k]: axis k has extent 1 in the
 * whole volume (a 2D image), so it has no neighbours to look at. */
static void surface_flat(const uint8_t *labels, uint8_t cls, const int64_t m[3], const int flat[3], uint8_t *surface)
{
    int64_t nz = m[0], ny = m[1], nx = m[2];
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++)
            for (int64_t x = 0; x < nx; x++) {
                int64_t i = (z * ny + y) * nx + x;
                if (labels[i] != cls) {
                    surface[i] = 0;
                    continue;
                }
                int edge = (!flat[2] && (x == 0 || x == nx - 1 || labels[i - 1] != cls || labels[i + 1] != cls)) ||
                           (!flat[1] && (y == 0 || y == ny - 1 || labels[i - nx] != cls || labels[i + nx] != cls)) ||
                           (!flat[0] && (z == 0 || z == nz - 1 || labels[i - nx * ny] != cls ||
                                         labels[i + nx * ny] != cls));
                surface[i] = (uint8_t)edge;
            }
}

void mt_surface(const uint8_t *labels, uint8_t cls, const int64_t shape[3], uint8_t *surface)
{
    const int flat[3] = { shape[0] == 1, shape[1] == 1, shape[2] == 1 };
    surface_flat(labels, cls, shape, flat, surface);
}

/* One line of the transform: d[q] = min_p w2 (q - p)^2 + f[p], the lower
 * envelope of the parabolas rooted at the finite f[p]. v: n sites, z: n+1
 * boundaries. */
static void edt_line(const double *f, int64_t n, double w2, double *d, int64_t *v, double *z)
{
    int64_t k = -1;
    for (int64_t q = 0; q < n; q++) {
        if (isinf(f[q]))
            continue;
        double s = -INFINITY;
        while (k >= 0) {
            int64_t p = v[k];
            s = ((f[q] + w2 * (double)q * (double)q) - (f[p] + w2 * (double)p * (double)p)) /
                (2.0 * w2 * (double)(q - p));
            if (s <= z[k])
                k--;
            else
                break;
        }
        k++;
        v[k] = q;
        z[k] = k == 0 ? -INFINITY : s;
        z[k + 1] = INFINITY;
    }
    if (k < 0) {
        for (int64_t q = 0; q < n; q++)
            d[q] = INFINITY;
        return;
    }
    int64_t j = 0;
    for (int64_t q = 0; q < n; q++) {
        while (z[j + 1] < (double)q)
            j++;
        double dq = (double)(q - v[j]);
        d[q] = w2 * dq * dq + f[v[j]];
    }
}

int mt_edt_sq(const uint8_t *feature, const int64_t shape[3], const double spacing[3], double *out)
{
    int64_t nz = shape[0], ny = shape[1], nx = shape[2], n = nz * ny * nx;
    int64_t len = nx > ny ? nx : ny;
    if (nz > len)
        len = nz;
    if (n == 0)
        return 0;
    double *f = malloc(sizeof(double) * (size_t)len), *d = malloc(sizeof(double) * (size_t)len);
    double *zb = malloc(sizeof(double) * (size_t)(len + 1));
    int64_t *v = malloc(sizeof(int64_t) * (size_t)len);
    if (!f || !d || !zb || !v) {
        free(f), free(d), free(zb), free(v);
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        out[i] = feature[i] ? 0.0 : INFINITY;
    /* axis 2 (x, stride 1), axis 1 (y, stride nx), axis 0 (z, stride nx*ny) */
    const int64_t stride[3] = { nx * ny, nx, 1 };
    for (int axis = 2; axis >= 0; axis--) {
        int64_t m = shape[axis], st = stride[axis];
        double w2 = spacing[axis] * spacing[axis];
        for (int64_t base = 0; base < n; base++) {
            /* line starts: the voxels whose coordinate along axis is 0 */
            if ((base / st) % m != 0)
                continue;
            for (int64_t q = 0; q < m; q++)
                f[q] = out[base + q * st];
            edt_line(f, m, w2, d, v, zb);
            for (int64_t q = 0; q < m; q++)
                out[base + q * st] = d[q];
        }
    }
    free(f), free(d), free(zb), free(v);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double mt_percentile(double *v, int64_t n, double q)
{
    if (n <= 0)
        return NAN;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    double pos = q / 100.0 * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    double w = pos - (double)lo;
    if (w == 0.0 && isinf(v[lo]))
        return NAN; /* torch.quantile: lerp(inf, inf, 0) is inf + 0 * nan */
    return v[lo] + w * (v[hi] - v[lo]);
}

/* The bounding box [lo, hi) of (a == cls) | (b == cls); 0 when empty. */
static int union_box(const uint8_t *a, const uint8_t *b, uint8_t cls, const int64_t shape[3], int64_t lo[3],
                     int64_t hi[3])
{
    int64_t ny = shape[1], nx = shape[2];
    for (int k = 0; k < 3; k++)
        lo[k] = shape[k], hi[k] = 0;
    int any = 0;
    for (int64_t z = 0; z < shape[0]; z++)
        for (int64_t y = 0; y < ny; y++) {
            const uint8_t *ra = a + (z * ny + y) * nx, *rb = b + (z * ny + y) * nx;
            for (int64_t x = 0; x < nx; x++) {
                if (ra[x] != cls && rb[x] != cls)
                    continue;
                any = 1;
                int64_t c[3] = { z, y, x };
                for (int k = 0; k < 3; k++) {
                    if (c[k] < lo[k])
                        lo[k] = c[k];
                    if (c[k] + 1 > hi[k])
                        hi[k] = c[k] + 1;
                }
            }
        }
    return any;
}

/* Copy the box out of `src` as a 0/1 mask of cls. */
static void crop_mask(const uint8_t *src, uint8_t cls, const int64_t shape[3], const int64_t lo[3],
                      const int64_t m[3], uint8_t *dst)
{
    for (int64_t z = 0; z < m[0]; z++)
        for (int64_t y = 0; y < m[1]; y++) {
            const uint8_t *row = src + ((lo[0] + z) * shape[1] + lo[1] + y) * shape[2] + lo[2];
            uint8_t *o = dst + (z * m[1] + y) * m[2];
            for (int64_t x = 0; x < m[2]; x++)
                o[x] = row[x] == cls;
        }
}

/* Distances (mm) at the voxels of surface sa to the nearest voxel of
 * surface sb, whose squared transform is edt; into out, the count. */
static int64_t gather(const uint8_t *sa, const double *edt, int64_t n, double *out)
{
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (sa[i])
            out[k++] = sqrt(edt[i]);
    return k;
}

static int64_t count_set(const uint8_t *s, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        c += s[i] != 0;
    return c;
}

/* Work arrays of one class in its box. */
typedef struct {
    int64_t m[3], n;
    uint8_t *a, *b, *sa, *sb;
    double *edt;
} Box;

static void box_free(Box *bx)
{
    free(bx->a), free(bx->b), free(bx->sa), free(bx->sb), free(bx->edt);
    memset(bx, 0, sizeof *bx);
}

/* Crop both masks to their union box and find their surfaces; 1 if the
 * union is empty (nothing allocated), 0 done, -1 out of memory. */
static int box_make(Box *bx, const uint8_t *a, const uint8_t *b, uint8_t cls, const int64_t shape[3])
{
    memset(bx, 0, sizeof *bx);
    int64_t lo[3], hi[3];
    if (!union_box(a, b, cls, shape, lo, hi))
        return 1;
    for (int k = 0; k < 3; k++)
        bx->m[k] = hi[k] - lo[k];
    bx->n = bx->m[0] * bx->m[1] * bx->m[2];
    size_t n = (size_t)bx->n;
    bx->a = malloc(n), bx->b = malloc(n), bx->sa = malloc(n), bx->sb = malloc(n);
    bx->edt = malloc(sizeof(double) * n);
    if (!bx->a || !bx->b || !bx->sa || !bx->sb || !bx->edt) {
        box_free(bx);
        return -1;
    }
    crop_mask(a, cls, shape, lo, bx->m, bx->a);
    crop_mask(b, cls, shape, lo, bx->m, bx->b);
    const int flat[3] = { shape[0] == 1, shape[1] == 1, shape[2] == 1 }; /* of the volume, not the box */
    surface_flat(bx->a, 1, bx->m, flat, bx->sa);
    surface_flat(bx->b, 1, bx->m, flat, bx->sb);
    return 0;
}

int64_t mt_directed_distances(const uint8_t *a, const uint8_t *b, uint8_t cls, const int64_t shape[3],
                              const double spacing[3], double **out)
{
    *out = NULL;
    Box bx;
    int r = box_make(&bx, a, b, cls, shape);
    if (r != 0)
        return r > 0 ? 0 : -1;
    int64_t na = count_set(bx.sa, bx.n);
    double *d = na > 0 ? malloc(sizeof(double) * (size_t)na) : NULL;
    if ((na > 0 && !d) || mt_edt_sq(bx.sb, bx.m, spacing, bx.edt) != 0) {
        free(d);
        box_free(&bx);
        return -1;
    }
    gather(bx.sa, bx.edt, bx.n, d);
    box_free(&bx);
    *out = d;
    return na;
}

void seg_metrics_empty(const MetricOptions *o, SegMetrics *out)
{
    memset(out, 0, sizeof *out);
    out->dice = out->iou = o->ignore_empty ? NAN : 1.0;
    out->hd95 = out->assd = out->nsd = NAN;
}

int seg_metrics(const uint8_t *pred, const uint8_t *ref, uint8_t cls, const int64_t shape[3],
                const double spacing[3], const MetricOptions *o, SegMetrics *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    for (int k = 0; k < 3; k++)
        if (!(spacing[k] > 0) || !isfinite(spacing[k])) {
            snprintf(err, errlen, "voxel spacing must be positive and finite, got %g along axis %d",
                     spacing[k], k);
            return -1;
        }
    if (!(o->percentile >= 0 && o->percentile <= 100) || !(o->tolerance >= 0)) {
        snprintf(err, errlen, "bad metric options (percentile %g, tolerance %g)", o->percentile, o->tolerance);
        return -1;
    }
    Box bx;
    int r = box_make(&bx, pred, ref, cls, shape);
    if (r < 0) {
        snprintf(err, errlen, "out of memory for the metrics of class %d", cls);
        return -1;
    }
    for (int64_t i = 0; r == 0 && i < bx.n; i++) {
        out->tp += bx.a[i] && bx.b[i];
        out->fp += bx.a[i] && !bx.b[i];
        out->fn += !bx.a[i] && bx.b[i];
    }
    int64_t npred = out->tp + out->fp, nref = out->tp + out->fn;
    if (nref > 0) {
        out->dice = 2.0 * (double)out->tp / (double)(npred + nref);
        out->iou = (double)out->tp / (double)(out->tp + out->fp + out->fn);
    } else if (o->ignore_empty) {
        out->dice = out->iou = NAN;
    } else {
        out->dice = out->iou = npred == 0 ? 1.0 : 0.0;
    }
    if (npred == 0 && nref == 0) {
        seg_metrics_empty(o, out);
        box_free(&bx);
        return 0;
    }
    out->surf_pred = count_set(bx.sa, bx.n);
    out->surf_ref = count_set(bx.sb, bx.n);
    if (npred == 0 || nref == 0) {
        out->hd95 = NAN;
        out->assd = INFINITY;
        out->nsd = 0.0;
        box_free(&bx);
        return 0;
    }
    int64_t na = out->surf_pred, nb = out->surf_ref;
    double *d = malloc(sizeof(double) * (size_t)(na + nb));
    if (!d || mt_edt_sq(bx.sb, bx.m, spacing, bx.edt) != 0) {
        free(d);
        box_free(&bx);
        snprintf(err, errlen, "out of memory for the metrics of class %d", cls);
        return -1;
    }
    gather(bx.sa, bx.edt, bx.n, d);
    if (mt_edt_sq(bx.sa, bx.m, spacing, bx.edt) != 0) {
        free(d);
        box_free(&bx);
        snprintf(err, errlen, "out of memory for the metrics of class %d", cls);
        return -1;
    }
    gather(bx.sb, bx.edt, bx.n, d + na);
    box_free(&bx);
    double sum = 0;
    int64_t within = 0;
    for (int64_t i = 0; i < na + nb; i++) {
        sum += d[i];
        within += d[i] <= o->tolerance;
    }
    out->assd = sum / (double)(na + nb);
    out->nsd = (double)within / (double)(na + nb);
    double h1 = mt_percentile(d, na, o->percentile), h2 = mt_percentile(d + na, nb, o->percentile);
    out->hd95 = h1 > h2 ? h1 : h2;
    free(d);
    return 0;
}

/* ---- volumes as label maps ---------------------------------------------- */

int mt_labels_u8(const Volume *v, const char *path, uint8_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (v->dim[3] != 1) {
        snprintf(err, errlen, "%s: a label map must be 3D, this volume has %lld time points", path,
                 (long long)v->dim[3]);
        return -1;
    }
    int64_t n = v->dim[0] * v->dim[1] * v->dim[2];
    uint8_t *l = malloc((size_t)n);
    if (!l) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        float f = v->data[i];
        if (!(f >= 0 && f <= 255) || f != floorf(f)) {
            snprintf(err, errlen, "%s: voxel (%lld, %lld, %lld) has value %g, not a label (an integer 0..255)", path,
                     (long long)(i % v->dim[0]), (long long)(i / v->dim[0] % v->dim[1]),
                     (long long)(i / (v->dim[0] * v->dim[1])), (double)f);
            free(l);
            return -1;
        }
        l[i] = (uint8_t)f;
    }
    *out = l;
    return 0;
}

static int close_enough(double a, double b)
{
    double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= 1e-3 * (m > 1 ? m : 1);
}

/* The voxel-to-world affine (sform if set, else qform); 0 if neither. */
static int vol_affine(const Volume *v, double A[3][4])
{
    const nifti_image *nim = v->header;
    if (!nim || (nim->sform_code <= 0 && nim->qform_code <= 0))
        return 0;
    const mat44 *m = nim->sform_code > 0 ? &nim->sto_xyz : &nim->qto_xyz;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            A[i][j] = m->m[i][j];
    return 1;
}

int mt_same_grid(const Volume *a, const char *pa, const Volume *b, const char *pb, char *err, size_t errlen)
{
    if (a->dim[0] != b->dim[0] || a->dim[1] != b->dim[1] || a->dim[2] != b->dim[2]) {
        snprintf(err, errlen, "shape mismatch: %s is %lldx%lldx%lld but %s is %lldx%lldx%lld", pa,
                 (long long)a->dim[0], (long long)a->dim[1], (long long)a->dim[2], pb, (long long)b->dim[0],
                 (long long)b->dim[1], (long long)b->dim[2]);
        return -1;
    }
    for (int k = 0; k < 3; k++)
        if (!close_enough(a->spacing[k], b->spacing[k])) {
            snprintf(err, errlen, "spacing mismatch: %s has %gx%gx%g mm but %s has %gx%gx%g mm", pa, a->spacing[0],
                     a->spacing[1], a->spacing[2], pb, b->spacing[0], b->spacing[1], b->spacing[2]);
            return -1;
        }
    double A[3][4], B[3][4];
    int ha = vol_affine(a, A), hb = vol_affine(b, B);
    if (ha && hb)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                if (!close_enough(A[i][j], B[i][j])) {
                    snprintf(err, errlen, "affine mismatch: %s has %g at row %d, column %d, but %s has %g", pa,
                             A[i][j], i, j, pb, B[i][j]);
                    return -1;
                }
    return 0;
}
