/* overlay.c — a slice (or a montage of slices) of an image with label maps
 * drawn over it, as an RGB picture written as PNG (runtime/png.c).
 *
 * Gray levels: the image windowed to its 1st..99th percentile (over the
 * whole volume, finite voxels, linear interpolation between order
 * statistics), black below, white above.  Labels: one fixed colour per
 * class (overlay_class_color), drawn as 1-pixel contours (a labelled pixel
 * with a 4-neighbour of another label or outside the panel) or as a
 * translucent fill (alpha blend).  Pixels are square in mm: a voxel spans
 * spacing / pixel_mm pixels along each axis, sampled nearest-neighbour,
 * where pixel_mm = the finer in-plane spacing / scale.
 *
 * Orientation, for arrays in canonical RAS order ([z][y][x] with x to the
 * patient's Right, y Anterior, z Superior), as radiologists read them:
 *   axial (axis z):    anterior up, the patient's right on the image left;
 *   coronal (axis y):  superior up, the patient's right on the image left;
 *   sagittal (axis x): superior up, anterior on the image left.
 * So every row axis and every column axis runs from its high end: row 0
 * is the most anterior/superior voxel, column 0 the most right/anterior.
 *
 * Layout: a tile per slice (prediction panel, then with a reference a
 * second panel to its right, GAP black pixels apart), tiles in a
 * near-square grid (ceil(sqrt(N)) columns) in slice order, TILE_GAP black
 * pixels apart (GAP without a reference). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "png.h"

enum { GAP = 4, TILE_GAP = 12, MAX_SIDE = 16384 };

void overlay_options_default(OverlayOptions *o)
{
    o->axis = 0;
    o->nslices = 0;
    o->slice = -1;
    o->fill = 0;
    o->alpha = 0.4;
    o->scale = 0;
}

void overlay_class_color(int cls, uint8_t rgb[3])
{
    /* ITK-SNAP's first six, then six mixtures; never gray (r == g == b) */
    static const uint8_t pal[12][3] = {
        { 255, 0, 0 },   { 0, 255, 0 },   { 0, 0, 255 },   { 255, 255, 0 }, { 0, 255, 255 }, { 255, 0, 255 },
        { 255, 128, 0 }, { 128, 0, 255 }, { 128, 255, 0 }, { 255, 0, 128 }, { 0, 128, 255 }, { 0, 255, 128 },
    };
    const uint8_t *c = pal[(cls > 0 ? cls - 1 : 0) % 12];
    memcpy(rgb, c, 3);
}

/* ---- window ------------------------------------------------------------- */

/* The k-th smallest of a[0..n) (rearranges a). */
static float kth_smallest(float *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return a[k];
}

/* q-th percentile of a[0..n), linear interpolation (rearranges a). */
static double percentile(float *a, int64_t n, double q)
{
    double pos = q / 100.0 * (double)(n - 1);
    int64_t k = (int64_t)floor(pos);
    double lo = kth_smallest(a, n, k), hi = lo;
    if (k + 1 < n) {
        hi = a[k + 1];
        for (int64_t i = k + 2; i < n; i++) /* the smallest above the k-th */
            if (a[i] < hi)
                hi = a[i];
    }
    return lo + (pos - (double)k) * (hi - lo);
}

static int window(const float *img, int64_t n, double *lo, double *hi)
{
    float *a = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!a)
        return -1;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(img[i]))
            a[m++] = img[i];
    if (m == 0) {
        *lo = 0, *hi = 1;
    } else {
        *lo = percentile(a, m, 1);
        *hi = percentile(a, m, 99);
    }
    free(a);
    return 0;
}

/* ---- geometry ----------------------------------------------------------- */

typedef struct {
    int axis, ra, ca;     /* slicing, row and column axes (0 z, 1 y, 2 x) */
    int64_t nr, nc;       /* voxels along rows / columns */
    double sr, sc, pmm;   /* their spacings, the pixel size */
    int w, h;             /* one panel, pixels */
} Plane;

static int plane_make(Plane *p, const int64_t shape[3], const double sp[3], int axis, int scale, char *err,
                      size_t errlen)
{
    static const int rows[3] = { 1, 0, 0 }, cols[3] = { 2, 2, 1 };
    p->axis = axis;
    p->ra = rows[axis];
    p->ca = cols[axis];
    p->nr = shape[p->ra];
    p->nc = shape[p->ca];
    p->sr = sp[p->ra] > 0 && isfinite(sp[p->ra]) ? sp[p->ra] : 1;
    p->sc = sp[p->ca] > 0 && isfinite(sp[p->ca]) ? sp[p->ca] : 1;
    double fine = p->sr < p->sc ? p->sr : p->sc;
    if (scale <= 0) { /* automatic: the larger side at least 256 pixels */
        double big = fmax((double)p->nr * p->sr, (double)p->nc * p->sc) / fine;
        scale = big >= 256 ? 1 : (int)ceil(256 / big);
    }
    p->pmm = fine / scale;
    double h = round((double)p->nr * p->sr / p->pmm), w = round((double)p->nc * p->sc / p->pmm);
    if (!(h <= MAX_SIDE && w <= MAX_SIDE)) {
        snprintf(err, errlen, "a %.0fx%.0f pixel slice is too large (at most %d a side): lower the scale", w, h,
                 MAX_SIDE);
        return -1;
    }
    p->h = h < 1 ? 1 : (int)h;
    p->w = w < 1 ? 1 : (int)w;
    return 0;
}

/* Voxel index of slice s at panel pixel (py, px). */
static int64_t voxel_at(const Plane *p, const int64_t shape[3], int64_t s, int py, int px)
{
    int64_t i = (int64_t)(((double)py + 0.5) * p->pmm / p->sr), j = (int64_t)(((double)px + 0.5) * p->pmm / p->sc);
    if (i >= p->nr)
        i = p->nr - 1;
    if (j >= p->nc)
        j = p->nc - 1;
    int64_t c[3];
    c[p->axis] = s;
    c[p->ra] = p->nr - 1 - i;
    c[p->ca] = p->nc - 1 - j;
    return (c[0] * shape[1] + c[1]) * shape[2] + c[2];
}

/* ---- slices ------------------------------------------------------------- */

/* Per slice along axis: the number of labelled voxels of lab (added). */
static void slice_counts(const uint8_t *lab, const int64_t shape[3], int axis, int64_t *cnt)
{
    for (int64_t z = 0; z < shape[0]; z++)
        for (int64_t y = 0; y < shape[1]; y++)
            for (int64_t x = 0; x < shape[2]; x++) {
                int64_t c[3] = { z, y, x };
                cnt[c[axis]] += lab[(z * shape[1] + y) * shape[2] + x] != 0;
            }
}

/* The slices to draw: *out (malloc'd), *n. */
static int pick_slices(const uint8_t *labels, const uint8_t *ref, const int64_t shape[3], const OverlayOptions *o,
                       int64_t **out, int *n, char *err, size_t errlen)
{
    int64_t len = shape[o->axis];
    *out = NULL;
    if (o->nslices == 0 && o->slice >= 0) {
        if (o->slice >= len) {
            snprintf(err, errlen, "slice %lld is out of range: the volume has %lld slices along %c", (long long)o->slice,
                     (long long)len, "zyx"[o->axis]);
            return -1;
        }
        if (!(*out = malloc(sizeof(int64_t))))
            goto oom;
        (*out)[0] = o->slice;
        *n = 1;
        return 0;
    }
    if (o->nslices < 0) {
        snprintf(err, errlen, "the number of montage slices must be positive, not %d", o->nslices);
        return -1;
    }
    int64_t *cp = calloc((size_t)len, sizeof(int64_t)), *cr = calloc((size_t)len, sizeof(int64_t));
    if (!cp || !cr) {
        free(cp);
        free(cr);
        goto oom;
    }
    if (labels)
        slice_counts(labels, shape, o->axis, cp);
    if (ref)
        slice_counts(ref, shape, o->axis, cr);
    if (o->nslices == 0) { /* the slice with the most foreground (prediction, else reference) */
        int64_t best = len / 2, bc = 0;
        for (int pass = 0; pass < 2 && bc == 0; pass++)
            for (int64_t s = 0; s < len; s++) {
                int64_t c = pass == 0 ? cp[s] : cr[s];
                if (c > bc)
                    bc = c, best = s;
            }
        free(cp);
        free(cr);
        if (!(*out = malloc(sizeof(int64_t))))
            goto oom;
        (*out)[0] = best;
        *n = 1;
        return 0;
    }
    int64_t lo = len, hi = 0;
    for (int64_t s = 0; s < len; s++)
        if (cp[s] || cr[s]) {
            if (s < lo)
                lo = s;
            hi = s + 1;
        }
    free(cp);
    free(cr);
    if (lo >= hi) /* nothing labelled: through the whole volume */
        lo = 0, hi = len;
    int64_t m = o->nslices < hi - lo ? o->nslices : hi - lo;
    if (!(*out = malloc(sizeof(int64_t) * (size_t)m)))
        goto oom;
    for (int64_t i = 0; i < m; i++)
        (*out)[i] = lo + (int64_t)(((double)i + 0.5) * (double)(hi - lo) / (double)m);
    *n = (int)m;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* ---- drawing ------------------------------------------------------------ */

/* Draw one panel at (x0, y0) of the picture (width W). */
static void draw_panel(uint8_t *rgb, int W, int x0, int y0, const Plane *p, const int64_t shape[3], int64_t s,
                       const float *img, const uint8_t *lab, double lo, double hi, const OverlayOptions *o,
                       uint8_t *plab)
{
    for (int py = 0; py < p->h; py++)
        for (int px = 0; px < p->w; px++)
            plab[(size_t)py * p->w + px] = lab ? lab[voxel_at(p, shape, s, py, px)] : 0;
    for (int py = 0; py < p->h; py++)
        for (int px = 0; px < p->w; px++) {
            double v = img[voxel_at(p, shape, s, py, px)];
            double t = hi > lo ? (v - lo) / (hi - lo) : (v > lo ? 1.0 : 0.0);
            if (!(t > 0))
                t = 0; /* NaN too */
            if (t > 1)
                t = 1;
            uint8_t g = (uint8_t)lround(t * 255);
            uint8_t *q = rgb + ((size_t)(y0 + py) * W + (size_t)(x0 + px)) * 3;
            q[0] = q[1] = q[2] = g;
            int l = plab[(size_t)py * p->w + px];
            if (!l)
                continue;
            uint8_t c[3];
            overlay_class_color(l, c);
            if (o->fill) {
                double a = o->alpha;
                for (int k = 0; k < 3; k++)
                    q[k] = (uint8_t)lround((1 - a) * g + a * c[k]);
                continue;
            }
            int edge = py == 0 || px == 0 || py == p->h - 1 || px == p->w - 1 ||
                       plab[(size_t)(py - 1) * p->w + px] != l || plab[(size_t)(py + 1) * p->w + px] != l ||
                       plab[(size_t)py * p->w + px - 1] != l || plab[(size_t)py * p->w + px + 1] != l;
            if (edge)
                memcpy(q, c, 3);
        }
}

int overlay_render(const float *image, const uint8_t *labels, const uint8_t *ref, const int64_t shape[3],
                   const double spacing[3], const OverlayOptions *o, uint8_t **rgb_out, int *w_out, int *h_out,
                   char *err, size_t errlen)
{
    *rgb_out = NULL;
    if (o->axis < 0 || o->axis > 2) {
        snprintf(err, errlen, "axis must be 0 (z), 1 (y) or 2 (x), not %d", o->axis);
        return -1;
    }
    if (!(o->alpha >= 0 && o->alpha <= 1)) {
        snprintf(err, errlen, "fill opacity must be within 0..1, not %g", o->alpha);
        return -1;
    }
    if (shape[0] <= 0 || shape[1] <= 0 || shape[2] <= 0) {
        snprintf(err, errlen, "empty volume");
        return -1;
    }
    Plane p;
    if (plane_make(&p, shape, spacing, o->axis, o->scale, err, errlen) != 0)
        return -1;
    int64_t *sl;
    int n;
    if (pick_slices(labels, ref, shape, o, &sl, &n, err, errlen) != 0)
        return -1;
    int gc = (int)ceil(sqrt((double)n)), gr = (n + gc - 1) / gc;
    int tw = ref ? 2 * p.w + GAP : p.w, tg = ref ? TILE_GAP : GAP;
    double W = (double)gc * tw + (double)(gc - 1) * tg, H = (double)gr * p.h + (double)(gr - 1) * tg;
    if (W > MAX_SIDE || H > MAX_SIDE) {
        snprintf(err, errlen, "the picture would be %.0fx%.0f pixels (at most %d a side): fewer slices or a lower scale",
                 W, H, MAX_SIDE);
        free(sl);
        return -1;
    }
    int64_t nvox = shape[0] * shape[1] * shape[2];
    double lo, hi;
    uint8_t *rgb = calloc((size_t)W * (size_t)H * 3, 1), *plab = malloc((size_t)p.w * (size_t)p.h);
    if (!rgb || !plab || window(image, nvox, &lo, &hi) != 0) {
        free(rgb);
        free(plab);
        free(sl);
        snprintf(err, errlen, "out of memory for the picture");
        return -1;
    }
    for (int t = 0; t < n; t++) {
        int x0 = (t % gc) * (tw + tg), y0 = (t / gc) * (p.h + tg);
        draw_panel(rgb, (int)W, x0, y0, &p, shape, sl[t], image, labels, lo, hi, o, plab);
        if (ref)
            draw_panel(rgb, (int)W, x0 + p.w + GAP, y0, &p, shape, sl[t], image, ref, lo, hi, o, plab);
    }
    free(plab);
    free(sl);
    *rgb_out = rgb;
    *w_out = (int)W;
    *h_out = (int)H;
    return 0;
}

int overlay_png(const float *image, const uint8_t *labels, const uint8_t *ref, const int64_t shape[3],
                const double spacing[3], const OverlayOptions *o, const char *path, char *err, size_t errlen)
{
    uint8_t *rgb;
    int w, h;
    if (overlay_render(image, labels, ref, shape, spacing, o, &rgb, &w, &h, err, errlen) != 0)
        return -1;
    int rc = png_write_rgb(path, rgb, w, h, err, errlen);
    free(rgb);
    return rc;
}
