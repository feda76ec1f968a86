/* ds_geometry.c — one case through preprocessing and back (dataset.h):
 * orientation to canonical RAS, crop to the nonzero region, normalization,
 * resampling, and the undo path for predictions. */
#define _POSIX_C_SOURCE 200809L
#include "ds_internal.h"

/* ---- orientation ------------------------------------------------------ */

/* The voxel → world affine (3 x 4) as nibabel picks it: sform, else qform,
 * else the pixdim diagonal. */
static void nim_affine(const nifti_image *nim, double A[3][4])
{
    const mat44 *m = nim->sform_code > 0 ? &nim->sto_xyz : nim->qform_code > 0 ? &nim->qto_xyz : NULL;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) A[i][j] = m ? m->m[i][j] : 0;
    if (!m) {
        A[0][0] = nim->dx > 0 ? nim->dx : 1;
        A[1][1] = nim->dy > 0 ? nim->dy : 1;
        A[2][2] = nim->dz > 0 ? nim->dz : 1;
    }
}

void ds_orient_nim(const nifti_image *nim, DsGeom *g)
{
    double A[3][4], norm[3];
    nim_affine(nim, A);
    g->src_dim[0] = nim->nx > 0 ? nim->nx : 1;
    g->src_dim[1] = nim->ny > 0 ? nim->ny : 1;
    g->src_dim[2] = nim->nz > 0 ? nim->nz : 1;
    double pix[3] = { nim->dx, nim->dy, nim->dz };
    for (int j = 0; j < 3; j++) {
        norm[j] = sqrt(A[0][j] * A[0][j] + A[1][j] * A[1][j] + A[2][j] * A[2][j]);
        if (!(norm[j] > 0) || !isfinite(norm[j])) norm[j] = pix[j] > 0 && isfinite(pix[j]) ? pix[j] : 1;
    }
    /* greedy: the largest |direction cosine| first (nibabel's io_orientation
     * on an orthogonal matrix) */
    int used_w[3] = { 0 }, used_v[3] = { 0 };
    for (int k = 0; k < 3; k++) {
        int bi = -1, bj = -1;
        double best = -1;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                if (used_w[i] || used_v[j]) continue;
                double r = fabs(A[i][j] / norm[j]);
                if (!isfinite(r)) r = 0;
                if (r > best) { best = r; bi = i; bj = j; }
            }
        used_w[bi] = used_v[bj] = 1;
        g->perm[bi] = bj;
        g->flip[bi] = A[bi][bj] < 0;
    }
    for (int a = 0; a < 3; a++) {
        g->canon_shape[2 - a] = g->src_dim[g->perm[a]];
        g->canon_spacing[2 - a] = norm[g->perm[a]];
    }
}

void ds_orientation(const Volume *v, DsGeom *g)
{
    memset(g, 0, sizeof *g);
    if (v->header) { ds_orient_nim(v->header, g); return; }
    for (int a = 0; a < 3; a++) {
        g->perm[a] = a;
        g->src_dim[a] = v->dim[a];
        g->canon_shape[2 - a] = v->dim[a];
        g->canon_spacing[2 - a] = v->spacing[a] > 0 ? v->spacing[a] : 1;
    }
}

/* Source offset of canonical voxel (0,0,0) and the step per canonical axis
 * (x, y, z). */
static void canon_steps(const DsGeom *g, int64_t *start, int64_t step[3])
{
    int64_t sstr[3] = { 1, g->src_dim[0], g->src_dim[0] * g->src_dim[1] };
    *start = 0;
    for (int a = 0; a < 3; a++) {
        int j = g->perm[a];
        step[a] = g->flip[a] ? -sstr[j] : sstr[j];
        if (g->flip[a]) *start += (g->src_dim[j] - 1) * sstr[j];
    }
}

static void to_canonical_f(const float *src, const DsGeom *g, float *dst)
{
    int64_t start, step[3], i = 0;
    canon_steps(g, &start, step);
    for (int64_t z = 0; z < g->canon_shape[0]; z++)
        for (int64_t y = 0; y < g->canon_shape[1]; y++) {
            int64_t b = start + z * step[2] + y * step[1];
            for (int64_t x = 0; x < g->canon_shape[2]; x++) dst[i++] = src[b + x * step[0]];
        }
}

static void from_canonical_u8(const uint8_t *canon, const DsGeom *g, uint8_t *src)
{
    int64_t start, step[3], i = 0;
    canon_steps(g, &start, step);
    for (int64_t z = 0; z < g->canon_shape[0]; z++)
        for (int64_t y = 0; y < g->canon_shape[1]; y++) {
            int64_t b = start + z * step[2] + y * step[1];
            for (int64_t x = 0; x < g->canon_shape[2]; x++) src[b + x * step[0]] = canon[i++];
        }
}

/* ---- resampling ------------------------------------------------------- */

typedef struct { int64_t i0, i1; float w; } Tap;

/* Pixel-centre convention (skimage / nnU-Net): output o samples input
 * coordinate (o + 0.5) * in / out - 0.5, clamped to [0, in - 1]. */
static Tap *taps(int64_t in, int64_t out)
{
    Tap *t = malloc(sizeof(Tap) * (size_t)(out > 0 ? out : 1));
    if (!t) return NULL;
    double s = (double)in / (double)out;
    for (int64_t o = 0; o < out; o++) {
        double c = ((double)o + 0.5) * s - 0.5;
        if (c < 0) c = 0;
        if (c > (double)(in - 1)) c = (double)(in - 1);
        int64_t i0 = (int64_t)floor(c);
        if (i0 > in - 1) i0 = in - 1;
        t[o].i0 = i0;
        t[o].i1 = i0 + 1 < in ? i0 + 1 : i0;
        t[o].w = (float)(c - (double)i0);
    }
    return t;
}

void ds_resample_linear(const float *in, const int64_t is[3], float *out, const int64_t os[3])
{
    if (is[0] == os[0] && is[1] == os[1] && is[2] == os[2]) {
        memcpy(out, in, sizeof(float) * (size_t)numel3(is));
        return;
    }
    Tap *tz = taps(is[0], os[0]), *ty = taps(is[1], os[1]), *tx = taps(is[2], os[2]);
    if (!tz || !ty || !tx) {   /* out of memory for a few taps: leave zeros */
        memset(out, 0, sizeof(float) * (size_t)numel3(os));
        free(tz); free(ty); free(tx);
        return;
    }
    int64_t sy = is[2], sz = is[1] * is[2], i = 0;
    for (int64_t z = 0; z < os[0]; z++) {
        const float *p0 = in + tz[z].i0 * sz, *p1 = in + tz[z].i1 * sz;
        double wz = tz[z].w;
        for (int64_t y = 0; y < os[1]; y++) {
            int64_t y0 = ty[y].i0 * sy, y1 = ty[y].i1 * sy;
            double wy = ty[y].w;
            for (int64_t x = 0; x < os[2]; x++) {
                int64_t x0 = tx[x].i0, x1 = tx[x].i1;
                double wx = tx[x].w;
                double a = p0[y0 + x0] * (1 - wx) + p0[y0 + x1] * wx;
                double b = p0[y1 + x0] * (1 - wx) + p0[y1 + x1] * wx;
                double c = p1[y0 + x0] * (1 - wx) + p1[y0 + x1] * wx;
                double d = p1[y1 + x0] * (1 - wx) + p1[y1 + x1] * wx;
                out[i++] = (float)((a * (1 - wy) + b * wy) * (1 - wz) + (c * (1 - wy) + d * wy) * wz);
            }
        }
    }
    free(tz); free(ty); free(tx);
}

void ds_resample_labels(const uint8_t *in, const int64_t is[3], uint8_t *out, const int64_t os[3])
{
    if (is[0] == os[0] && is[1] == os[1] && is[2] == os[2]) {
        memcpy(out, in, (size_t)numel3(is));
        return;
    }
    Tap *tz = taps(is[0], os[0]), *ty = taps(is[1], os[1]), *tx = taps(is[2], os[2]);
    if (!tz || !ty || !tx) {
        memset(out, 0, (size_t)numel3(os));
        free(tz); free(ty); free(tx);
        return;
    }
    int64_t sy = is[2], sz = is[1] * is[2], i = 0;
    for (int64_t z = 0; z < os[0]; z++)
        for (int64_t y = 0; y < os[1]; y++)
            for (int64_t x = 0; x < os[2]; x++) {
                int64_t zz[2] = { tz[z].i0 * sz, tz[z].i1 * sz }, yy[2] = { ty[y].i0 * sy, ty[y].i1 * sy },
                        xx[2] = { tx[x].i0, tx[x].i1 };
                double wz[2] = { 1 - tz[z].w, tz[z].w }, wy[2] = { 1 - ty[y].w, ty[y].w },
                       wx[2] = { 1 - tx[x].w, tx[x].w };
                uint8_t lab[8];
                double acc[8];
                int n = 0;
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++)
                        for (int c = 0; c < 2; c++) {
                            double w = wz[a] * wy[b] * wx[c];
                            uint8_t l = in[zz[a] + yy[b] + xx[c]];
                            int k = 0;
                            while (k < n && lab[k] != l) k++;
                            if (k == n) { lab[n] = l; acc[n] = 0; n++; }
                            acc[k] += w;
                        }
                int best = 0;
                for (int k = 1; k < n; k++)
                    if (acc[k] > acc[best] + 1e-12 || (fabs(acc[k] - acc[best]) <= 1e-12 && lab[k] < lab[best])) best = k;
                out[i++] = lab[best];
            }
    free(tz); free(ty); free(tx);
}

/* ---- normalization ---------------------------------------------------- */


/* np.percentile (linear interpolation) of a sorted array */
double ds_percentile(const float *s, int64_t n, double q)
{
    if (n <= 0) return 0;
    double pos = q / 100.0 * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    double f = pos - (double)lo;
    return s[lo] * (1 - f) + s[hi] * f;
}

int ds_normalize(float *x, int64_t n, const uint8_t *mask, const Normalization *nm, const DsChannelStats *st,
                 char *err, size_t errlen)
{
    double lo = -INFINITY, hi = INFINITY;
    switch (nm->kind) {
    case NORM_NONE: return 0;
    case NORM_CT: {
        if (!st || !st->valid)
            return failf(err, errlen, "`normalize ct` needs the dataset's foreground intensity statistics");
        double sd = st->sd > 1e-8 ? st->sd : 1e-8;
        for (int64_t i = 0; i < n; i++) {
            double v = x[i] < st->p005 ? st->p005 : x[i] > st->p995 ? st->p995 : x[i];
            x[i] = (float)((v - st->mean) / sd);
        }
        return 0;
    }
    case NORM_CLIP: lo = nm->lo; hi = nm->hi; break;
    case NORM_PERCENTILES: {   /* as `netc run`: floor/ceil order statistics */
        if (n <= 0) return 0;
        float *s = malloc(sizeof(float) * (size_t)n);
        if (!s) return failf(err, errlen, "out of memory");
        memcpy(s, x, sizeof(float) * (size_t)n);
        qsort(s, (size_t)n, sizeof(float), cmp_float);
        lo = s[(int64_t)floor(nm->lo / 100.0 * (double)(n - 1))];
        hi = s[(int64_t)ceil(nm->hi / 100.0 * (double)(n - 1))];
        free(s);
        break;
    }
    default: break;
    }
    bool nonzero = nm->kind == NORM_ZSCORE_NONZERO;
    double sum = 0, sq = 0, mn = INFINITY, mx = -INFINITY;
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
        x[i] = (float)v;
        if (nonzero && (mask ? !mask[i] : v == 0)) continue;
        sum += v; sq += v * v; count++;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    if (count == 0) return 0;
    if (nm->kind == NORM_RESCALE) {
        double r = mx > mn ? mx - mn : 1;
        for (int64_t i = 0; i < n; i++) x[i] = (float)((x[i] - mn) / r);
        return 0;
    }
    double mean = sum / (double)count, var = sq / (double)count - mean * mean;
    double sd = sqrt(var > 0 ? var : 0);
    if (sd < 1e-8) sd = 1e-8;   /* as nnU-Net: max(std, 1e-8) */
    for (int64_t i = 0; i < n; i++) {
        if (nonzero && (mask ? !mask[i] : x[i] == 0)) { x[i] = 0; continue; }
        x[i] = (float)((x[i] - mean) / sd);
    }
    return 0;
}

/* ---- one case --------------------------------------------------------- */

void ds_prepped_free(DsPrepped *pp)
{
    if (!pp) return;
    free(pp->image);
    free(pp->labels);
    memset(pp, 0, sizeof *pp);
}

static const char *nm_of(const char *const *names, int i) { return names && names[i] ? names[i] : "(volume)"; }

static int same_affine(const Volume *a, const Volume *b, double A[3][4], double B[3][4])
{
    if (!a->header || !b->header) return 1;
    nim_affine(a->header, A);
    nim_affine(b->header, B);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            if (fabs(A[i][j] - B[i][j]) > 1e-3 * (j == 3 ? 1 : fabs(A[i][j]) + 1)) return 0;
    return 1;
}

static void affine_str(double A[3][4], char *buf, size_t n)
{
    snprintf(buf, n, "[[%g %g %g %g] [%g %g %g %g] [%g %g %g %g]]", A[0][0], A[0][1], A[0][2], A[0][3], A[1][0],
             A[1][1], A[1][2], A[1][3], A[2][0], A[2][1], A[2][2], A[2][3]);
}

/* Two volumes on one grid; otherwise a message naming both files and both values. */
int ds_check_grid(const Volume *a, const char *an, const Volume *b, const char *bn, char *err, size_t errlen)
{
    if (a->dim[0] != b->dim[0] || a->dim[1] != b->dim[1] || a->dim[2] != b->dim[2])
        return failf(err, errlen, "%s: shape %lld x %lld x %lld (x y z) differs from %s: %lld x %lld x %lld", bn,
                     (long long)b->dim[0], (long long)b->dim[1], (long long)b->dim[2], an, (long long)a->dim[0],
                     (long long)a->dim[1], (long long)a->dim[2]);
    double A[3][4], B[3][4];
    if (!same_affine(a, b, A, B)) {
        char sa[256], sb[256];
        affine_str(A, sa, sizeof sa);
        affine_str(B, sb, sizeof sb);
        return failf(err, errlen, "%s: affine %s differs from %s: %s", bn, sb, an, sa);
    }
    return 0;
}

/* Fill the holes of the nonzero mask inside the box: zero voxels connected
 * (6-neighbourhood) to the box's border are outside, all others inside. */
static uint8_t *nonzero_mask(const float *const *ch, int C, const int64_t s[3])
{
    int64_t n = numel3(s);
    uint8_t *m = malloc((size_t)n);
    int64_t *q = malloc(sizeof(int64_t) * (size_t)n);
    if (!m || !q) { free(m); free(q); return NULL; }
    for (int64_t i = 0; i < n; i++) {
        int nz = 0;
        for (int c = 0; c < C && !nz; c++) nz = ch[c][i] != 0;
        m[i] = nz ? 1 : 2;   /* 2: zero, not yet known to be outside */
    }
    int64_t head = 0, tail = 0;
    for (int64_t z = 0; z < s[0]; z++)
        for (int64_t y = 0; y < s[1]; y++)
            for (int64_t x = 0; x < s[2]; x++) {
                if (!(z == 0 || y == 0 || x == 0 || z == s[0] - 1 || y == s[1] - 1 || x == s[2] - 1)) continue;
                int64_t i = (z * s[1] + y) * s[2] + x;
                if (m[i] == 2) { m[i] = 0; q[tail++] = i; }
            }
    while (head < tail) {
        int64_t i = q[head++];
        int64_t x = i % s[2], y = (i / s[2]) % s[1], z = i / (s[1] * s[2]);
        int64_t nb[6];
        int k = 0;
        if (x > 0) nb[k++] = i - 1;
        if (x < s[2] - 1) nb[k++] = i + 1;
        if (y > 0) nb[k++] = i - s[2];
        if (y < s[1] - 1) nb[k++] = i + s[2];
        if (z > 0) nb[k++] = i - s[1] * s[2];
        if (z < s[0] - 1) nb[k++] = i + s[1] * s[2];
        for (int t = 0; t < k; t++)
            if (m[nb[t]] == 2) { m[nb[t]] = 0; q[tail++] = nb[t]; }
    }
    for (int64_t i = 0; i < n; i++)
        if (m[i] == 2) m[i] = 1;
    free(q);
    return m;
}

static void crop_f(const float *in, const int64_t s[3], const int64_t lo[3], const int64_t cs[3], float *out)
{
    int64_t i = 0;
    for (int64_t z = 0; z < cs[0]; z++)
        for (int64_t y = 0; y < cs[1]; y++) {
            memcpy(out + i, in + ((z + lo[0]) * s[1] + y + lo[1]) * s[2] + lo[2], sizeof(float) * (size_t)cs[2]);
            i += cs[2];
        }
}

int ds_prepare(const Volume *chan, int C, const Volume *label, const DsParams *p, const DsChannelStats *stats,
               const char *const *names, const uint8_t *label_ok, DsPrepped *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (C < 1 || C > DS_MAX_CHANNELS) return failf(err, errlen, "%d channels (1 to %d supported)", C, DS_MAX_CHANNELS);
    for (int c = 0; c < C; c++) {
        if (chan[c].dim[3] != 1)
            return failf(err, errlen, "%s: a 4D volume (%lld time points); nnU-Net's format has one 3D file per channel",
                         nm_of(names, c), (long long)chan[c].dim[3]);
        if (c > 0 && ds_check_grid(&chan[0], nm_of(names, 0), &chan[c], nm_of(names, c), err, errlen) != 0) return -1;
    }
    if (label) {
        if (label->dim[3] != 1) return failf(err, errlen, "%s: a label volume must be 3D", nm_of(names, C));
        if (ds_check_grid(&chan[0], nm_of(names, 0), label, nm_of(names, C), err, errlen) != 0) return -1;
        int64_t n = vol_numel(label);
        for (int64_t i = 0; i < n; i++) {
            float v = label->data[i];
            int64_t x = i % label->dim[0], y = (i / label->dim[0]) % label->dim[1],
                    z = i / (label->dim[0] * label->dim[1]);
            if (!(v == floorf(v)))
                return failf(err, errlen, "%s: label value %g at voxel (%lld, %lld, %lld) is not an integer",
                             nm_of(names, C), (double)v, (long long)x, (long long)y, (long long)z);
            if (v < 0 || v > 255 || (label_ok && !label_ok[(int)v]))
                return failf(err, errlen, "%s: label value %g at voxel (%lld, %lld, %lld) is not one of the labels "
                             "dataset.json declares", nm_of(names, C), (double)v, (long long)x, (long long)y,
                             (long long)z);
        }
    }
    DsGeom g;
    ds_orientation(&chan[0], &g);
    int64_t n = numel3(g.canon_shape);
    float *canon[DS_MAX_CHANNELS] = { 0 }, *crop[DS_MAX_CHANNELS] = { 0 }, *lab = NULL, *labcrop = NULL;
    uint8_t *mask = NULL, *labu8 = NULL;
    int rc = -1;
    for (int c = 0; c < C; c++) {
        if (!(canon[c] = malloc(sizeof(float) * (size_t)n))) { failf(err, errlen, "out of memory"); goto done; }
        to_canonical_f(chan[c].data, &g, canon[c]);
    }
    /* bounding box of the nonzero voxels (any channel) */
    int64_t lo[3] = { g.canon_shape[0], g.canon_shape[1], g.canon_shape[2] }, hi[3] = { 0, 0, 0 };
    {
        int64_t i = 0;
        for (int64_t z = 0; z < g.canon_shape[0]; z++)
            for (int64_t y = 0; y < g.canon_shape[1]; y++)
                for (int64_t x = 0; x < g.canon_shape[2]; x++, i++) {
                    int nz = 0;
                    for (int c = 0; c < C && !nz; c++) nz = canon[c][i] != 0;
                    if (!nz) continue;
                    int64_t at[3] = { z, y, x };
                    for (int k = 0; k < 3; k++) {
                        if (at[k] < lo[k]) lo[k] = at[k];
                        if (at[k] + 1 > hi[k]) hi[k] = at[k] + 1;
                    }
                }
    }
    if (hi[0] <= lo[0]) {   /* all zero: keep everything */
        for (int k = 0; k < 3; k++) { lo[k] = 0; hi[k] = g.canon_shape[k]; }
    }
    int64_t cs[3];
    for (int k = 0; k < 3; k++) { g.bbox_lo[k] = lo[k]; g.bbox_hi[k] = hi[k]; cs[k] = hi[k] - lo[k]; }
    int64_t cn = numel3(cs);
    for (int c = 0; c < C; c++) {
        if (!(crop[c] = malloc(sizeof(float) * (size_t)cn))) { failf(err, errlen, "out of memory"); goto done; }
        crop_f(canon[c], g.canon_shape, lo, cs, crop[c]);
        free(canon[c]);
        canon[c] = NULL;
    }
    if (label) {
        if (!(lab = malloc(sizeof(float) * (size_t)n)) || !(labcrop = malloc(sizeof(float) * (size_t)cn))) {
            failf(err, errlen, "out of memory");
            goto done;
        }
        to_canonical_f(label->data, &g, lab);
        crop_f(lab, g.canon_shape, lo, cs, labcrop);
        free(lab);
        lab = NULL;
    }
    /* normalize (before resampling, as nnU-Net) */
    int need_mask = 0;
    for (int c = 0; c < C; c++) need_mask |= p->norm[c].kind == NORM_ZSCORE_NONZERO;
    if (need_mask && !(mask = nonzero_mask((const float *const *)crop, C, cs))) {
        failf(err, errlen, "out of memory");
        goto done;
    }
    for (int c = 0; c < C; c++) {
        char why[256];
        if (ds_normalize(crop[c], cn, mask, &p->norm[c], stats ? &stats[c] : NULL, why, sizeof why) != 0) {
            failf(err, errlen, "%s: %s", nm_of(names, c), why);
            goto done;
        }
    }
    /* resample */
    for (int k = 0; k < 3; k++) {
        double t = p->spacing[k] > 0 ? p->spacing[k] : g.canon_spacing[k];
        double sz = round((double)cs[k] * g.canon_spacing[k] / t);
        if (!(sz >= 1)) sz = 1;
        if (sz > 1 << 20) { failf(err, errlen, "%s: target spacing %g mm gives %g voxels", nm_of(names, 0), t, sz); goto done; }
        g.shape[k] = (int64_t)sz;
        g.spacing[k] = t;
    }
    int64_t on = numel3(g.shape);
    if (!(out->image = malloc(sizeof(float) * (size_t)(on * C)))) { failf(err, errlen, "out of memory"); goto done; }
    for (int c = 0; c < C; c++) ds_resample_linear(crop[c], cs, out->image + c * on, g.shape);
    if (label) {
        if (!(labu8 = malloc((size_t)cn)) || !(out->labels = malloc((size_t)on))) {
            failf(err, errlen, "out of memory");
            goto done;
        }
        for (int64_t i = 0; i < cn; i++) labu8[i] = (uint8_t)labcrop[i];
        ds_resample_labels(labu8, cs, out->labels, g.shape);
    }
    out->nchannels = C;
    out->geom = g;
    memcpy(out->shape, g.shape, sizeof out->shape);
    memcpy(out->spacing, g.spacing, sizeof out->spacing);
    rc = 0;
done:
    for (int c = 0; c < C; c++) { free(canon[c]); free(crop[c]); }
    free(lab); free(labcrop); free(mask); free(labu8);
    if (rc != 0) ds_prepped_free(out);
    return rc;
}

int ds_undo_labels(const DsGeom *g, const uint8_t *pred, uint8_t *out, char *err, size_t errlen)
{
    int64_t cs[3];
    for (int k = 0; k < 3; k++) {
        cs[k] = g->bbox_hi[k] - g->bbox_lo[k];
        if (cs[k] < 1 || g->bbox_lo[k] < 0 || g->bbox_hi[k] > g->canon_shape[k] || g->shape[k] < 1)
            return failf(err, errlen, "inconsistent preprocessing geometry");
    }
    int64_t cn = numel3(cs), n = numel3(g->canon_shape);
    uint8_t *crop = malloc((size_t)cn), *canon = calloc((size_t)n, 1);
    if (!crop || !canon) { free(crop); free(canon); return failf(err, errlen, "out of memory"); }
    ds_resample_labels(pred, g->shape, crop, cs);
    int64_t i = 0;
    for (int64_t z = 0; z < cs[0]; z++)
        for (int64_t y = 0; y < cs[1]; y++) {
            memcpy(canon + ((z + g->bbox_lo[0]) * g->canon_shape[1] + y + g->bbox_lo[1]) * g->canon_shape[2] +
                       g->bbox_lo[2], crop + i, (size_t)cs[2]);
            i += cs[2];
        }
    from_canonical_u8(canon, g, out);
    free(crop);
    free(canon);
    return 0;
}
