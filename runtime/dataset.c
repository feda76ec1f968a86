/* dataset.c — see dataset.h. */
#define _POSIX_C_SOURCE 200809L
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <nifti1_io.h>

#define DS_CACHE_VERSION 1
#define DS_MAX_JSON (16 << 20)
#define DS_MAX_CASES 100000
#define DS_STATS_SAMPLES 10000000   /* nnU-Net's fingerprint: 10e7 foreground voxels per channel */

/* ---- small helpers -------------------------------------------------- */

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

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int is_regular(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int mkdirs(const char *path)
{
    char *p = dupstr(path);
    if (!p) return -1;
    for (char *q = p + 1; *q; q++) {
        if (*q != '/') continue;
        *q = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) { free(p); return -1; }
        *q = '/';
    }
    int rc = mkdir(p, 0777) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

/* The whole file, NUL-terminated; NULL with errno-ish message otherwise. */
static char *slurp(const char *path, size_t max, size_t *len, const char **why)
{
    struct stat st;
    if (stat(path, &st) != 0) { *why = strerror(errno); return NULL; }
    if (!S_ISREG(st.st_mode)) { *why = "not a regular file"; return NULL; }
    if ((size_t)st.st_size > max) { *why = "too large"; return NULL; }
    FILE *f = fopen(path, "rb");
    if (!f) { *why = strerror(errno); return NULL; }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) { fclose(f); *why = "out of memory"; return NULL; }
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (got != (size_t)st.st_size) { free(buf); *why = "read error"; return NULL; }
    buf[got] = 0;
    if (len) *len = got;
    return buf;
}

/* FNV-1a 64 */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ULL; }
    return h;
}
#define FNV0 14695981039346656037ULL

static uint64_t hash_str(uint64_t h, const char *s) { return fnv(h, s, strlen(s) + 1); }

static uint64_t hash_file(uint64_t h, const char *path)
{
    struct stat st;
    char buf[256];
    if (stat(path, &st) != 0) snprintf(buf, sizeof buf, "missing");
    else
        snprintf(buf, sizeof buf, "%lld:%lld.%09ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                 (long)st.st_mtim.tv_nsec);
    return hash_str(hash_str(h, path), buf);
}

static int64_t numel3(const int64_t s[3]) { return s[0] * s[1] * s[2]; }

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

static void orient_nim(const nifti_image *nim, DsGeom *g)
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
    if (v->header) { orient_nim(v->header, g); return; }
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

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* np.percentile (linear interpolation) of a sorted array */
static double percentile(const float *s, int64_t n, double q)
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
static int check_grid(const Volume *a, const char *an, const Volume *b, const char *bn, char *err, size_t errlen)
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
        if (c > 0 && check_grid(&chan[0], nm_of(names, 0), &chan[c], nm_of(names, c), err, errlen) != 0) return -1;
    }
    if (label) {
        if (label->dim[3] != 1) return failf(err, errlen, "%s: a label volume must be 3D", nm_of(names, C));
        if (check_grid(&chan[0], nm_of(names, 0), label, nm_of(names, C), err, errlen) != 0) return -1;
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

/* ---- dataset.json and the file lists ---------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void ds_free(Dataset *ds)
{
    if (!ds) return;
    for (int i = 0; i < ds->ncases; i++) {
        DsCase *c = &ds->cases[i];
        free(c->name);
        if (c->images)
            for (int k = 0; k < ds->nchannels; k++) free(c->images[k]);
        free(c->images);
        free(c->label);
        if (c->prep) { ds_prepped_free(c->prep); free(c->prep); }
    }
    free(ds->cases);
    for (int k = 0; k < ds->nchannels; k++) free(ds->channel_names[k]);
    for (int k = 0; k < ds->nlabels; k++) free(ds->label_names[k]);
    free(ds->root);
    free(ds->name);
    free(ds->file_ending);
    free(ds);
}

static int json_int(const cJSON *j, int *out)
{
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v == floor(v)) || v < -2147483648.0 || v > 2147483647.0) return 0;
    *out = (int)v;
    return 1;
}

static int parse_json(Dataset *ds, const char *path, char *err, size_t errlen)
{
    const char *why = NULL;
    size_t len = 0;
    char *text = slurp(path, DS_MAX_JSON, &len, &why);
    if (!text) return failf(err, errlen, "%s: cannot read the dataset description (%s)", path, why);
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        int line = 1;
        for (size_t i = 0; i < off; i++) line += text[i] == '\n';
        free(text);
        return failf(err, errlen, "%s: not valid JSON (near line %d, byte %zu)", path, line, off);
    }
    free(text);
    int rc = -1;
    if (!cJSON_IsObject(j)) { failf(err, errlen, "%s: the top level must be an object", path); goto done; }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    if (cJSON_IsString(name) && name->valuestring[0]) ds->name = dupstr(name->valuestring);
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "channel_names");
    if (!ch) ch = cJSON_GetObjectItemCaseSensitive(j, "modality");   /* nnU-Net v1 */
    if (!cJSON_IsObject(ch)) {
        failf(err, errlen, "%s: `channel_names` is missing or not an object such as {\"0\": \"T1\"}", path);
        goto done;
    }
    int nch = cJSON_GetArraySize(ch);
    if (nch < 1 || nch > DS_MAX_CHANNELS) {
        failf(err, errlen, "%s: `channel_names` has %d entries (1 to %d supported)", path, nch, DS_MAX_CHANNELS);
        goto done;
    }
    for (int k = 0; k < nch; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(ch, key);
        if (!cJSON_IsString(v)) {
            failf(err, errlen, "%s: `channel_names` must map \"0\" .. \"%d\" to names; \"%s\" is missing or not a string",
                  path, nch - 1, key);
            goto done;
        }
        ds->channel_names[k] = dupstr(v->valuestring);
        ds->nchannels = k + 1;
    }
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
    if (!cJSON_IsObject(labels) || cJSON_GetArraySize(labels) < 1) {
        failf(err, errlen, "%s: `labels` is missing or not an object such as {\"background\": 0, \"brain\": 1}", path);
        goto done;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, labels)
    {
        if (ds->nlabels >= DS_MAX_LABELS) { failf(err, errlen, "%s: too many labels", path); goto done; }
        int vals[256], nv = 0;
        if (cJSON_IsArray(it)) {   /* region-based: a list of label values */
            const cJSON *e;
            cJSON_ArrayForEach(e, it)
            {
                if (nv >= 256 || !json_int(e, &vals[nv]) || vals[nv] < 0 || vals[nv] > 255) { nv = -1; break; }
                nv++;
            }
        } else if (json_int(it, &vals[0]) && vals[0] >= 0 && vals[0] <= 255)
            nv = 1;
        else
            nv = -1;
        if (nv <= 0) {
            failf(err, errlen, "%s: label \"%s\" must be an integer 0..255 (or a list of them)", path, it->string);
            goto done;
        }
        ds->label_names[ds->nlabels] = dupstr(it->string);
        ds->label_values[ds->nlabels] = vals[0];
        ds->nlabels++;
        for (int k = 0; k < nv; k++) {
            ds->label_ok[vals[k]] = 1;
            if (vals[k] > ds->max_label) ds->max_label = vals[k];
        }
    }
    if (!ds->label_ok[0]) {
        failf(err, errlen, "%s: `labels` must declare the background as 0 (nnU-Net's convention)", path);
        goto done;
    }
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(j, "numTraining");
    if (!json_int(nt, &ds->num_training) || ds->num_training < 0) {
        failf(err, errlen, "%s: `numTraining` is missing or not a non-negative integer", path);
        goto done;
    }
    const cJSON *fe = cJSON_GetObjectItemCaseSensitive(j, "file_ending");
    if (!cJSON_IsString(fe) || fe->valuestring[0] != '.') {
        failf(err, errlen, "%s: `file_ending` is missing or not a string such as \".nii.gz\"", path);
        goto done;
    }
    if (strcmp(fe->valuestring, ".nii.gz") != 0 && strcmp(fe->valuestring, ".nii") != 0) {
        failf(err, errlen, "%s: file_ending \"%s\" is not supported (netc reads .nii.gz and .nii)", path, fe->valuestring);
        goto done;
    }
    ds->file_ending = dupstr(fe->valuestring);
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}

/* Sorted regular-file names of a folder; *n = -1 if the folder is missing. */
static char **list_dir(const char *dir, int *n)
{
    *n = -1;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int cap = 16, k = 0;
    char **v = malloc(sizeof(char *) * (size_t)cap);
    struct dirent *e;
    while (v && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (k == cap) {
            char **w = cap < 4 * DS_MAX_CASES ? realloc(v, sizeof(char *) * (size_t)(cap *= 2)) : NULL;
            if (!w) { for (int i = 0; i < k; i++) free(v[i]); free(v); v = NULL; break; }
            v = w;
        }
        v[k++] = dupstr(e->d_name);
    }
    closedir(d);
    if (!v) return NULL;
    qsort(v, (size_t)k, sizeof(char *), cmp_str);
    *n = k;
    return v;
}

static void free_list(char **v, int n)
{
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Add the cases of imagesXx (+ labelsXx) to ds. */
static int scan_split(Dataset *ds, DsSplit split, char *err, size_t errlen)
{
    const char *idir = split == DS_TRAIN ? "imagesTr" : "imagesTs", *ldir = split == DS_TRAIN ? "labelsTr" : "labelsTs";
    char *ipath = fmt("%s/%s", ds->root, idir), *lpath = fmt("%s/%s", ds->root, ldir);
    int ni = 0, nl = 0, rc = -1, first = ds->ncases;
    char **files = NULL, **lfiles = NULL;
    if (!ipath || !lpath) { failf(err, errlen, "out of memory"); goto done; }
    files = list_dir(ipath, &ni);
    if (ni < 0) {
        if (split == DS_TEST) { rc = 0; goto done; }
        failf(err, errlen, "%s: missing (a dataset in nnU-Net's raw format has imagesTr/ and labelsTr/)", ipath);
        goto done;
    }
    size_t el = strlen(ds->file_ending);
    for (int f = 0; f < ni; f++) {
        const char *fn = files[f];
        size_t L = strlen(fn);
        if (!ends_with(fn, ds->file_ending)) continue;
        if (L < el + 6 || fn[L - el - 5] != '_' || !(fn[L - el - 4] >= '0' && fn[L - el - 4] <= '9') ||
            !(fn[L - el - 3] >= '0' && fn[L - el - 3] <= '9') || !(fn[L - el - 2] >= '0' && fn[L - el - 2] <= '9') ||
            !(fn[L - el - 1] >= '0' && fn[L - el - 1] <= '9')) {
            failf(err, errlen, "%s/%s: not named CASE_XXXX%s (XXXX = the channel, 0000 for the first)", ipath, fn,
                  ds->file_ending);
            goto done;
        }
        int chn = atoi(fn + L - el - 4);
        if (chn >= ds->nchannels) {
            failf(err, errlen, "%s/%s: channel %d, but dataset.json declares %d channel(s)", ipath, fn, chn, ds->nchannels);
            goto done;
        }
        size_t cl = L - el - 5;
        int c = ds->ncases - 1;
        if (c < first || strlen(ds->cases[c].name) != cl || strncmp(ds->cases[c].name, fn, cl) != 0) {
            if (ds->ncases >= DS_MAX_CASES) { failf(err, errlen, "%s: too many cases", ipath); goto done; }
            DsCase *nc = realloc(ds->cases, sizeof(DsCase) * (size_t)(ds->ncases + 1));
            if (!nc) { failf(err, errlen, "out of memory"); goto done; }
            ds->cases = nc;
            c = ds->ncases++;
            memset(&ds->cases[c], 0, sizeof(DsCase));
            ds->cases[c].split = split;
            ds->cases[c].name = malloc(cl + 1);
            ds->cases[c].images = calloc((size_t)ds->nchannels, sizeof(char *));
            if (!ds->cases[c].name || !ds->cases[c].images) { failf(err, errlen, "out of memory"); goto done; }
            memcpy(ds->cases[c].name, fn, cl);
            ds->cases[c].name[cl] = 0;
        }
        ds->cases[c].images[chn] = fmt("%s/%s", ipath, fn);
    }
    /* every case has every channel and (in training) a label */
    for (int c = first; c < ds->ncases; c++) {
        DsCase *dc = &ds->cases[c];
        for (int k = 0; k < ds->nchannels; k++)
            if (!dc->images[k]) {
                failf(err, errlen, "%s/%s_%04d%s: missing (dataset.json declares %d channel(s): %s%s)", ipath, dc->name, k,
                      ds->file_ending, ds->nchannels, ds->channel_names[0], ds->nchannels > 1 ? ", ..." : "");
                goto done;
            }
        char *lp = fmt("%s/%s%s", lpath, dc->name, ds->file_ending);
        if (!lp) { failf(err, errlen, "out of memory"); goto done; }
        if (is_regular(lp)) dc->label = lp;
        else {
            free(lp);
            if (split == DS_TRAIN) {
                failf(err, errlen, "%s/%s%s: missing (the label of training case %s)", lpath, dc->name, ds->file_ending,
                      dc->name);
                goto done;
            }
        }
    }
    /* no label without an image */
    lfiles = list_dir(lpath, &nl);
    if (nl < 0 && split == DS_TRAIN) {
        failf(err, errlen, "%s: missing (a dataset in nnU-Net's raw format has imagesTr/ and labelsTr/)", lpath);
        goto done;
    }
    for (int f = 0; f < nl; f++) {
        if (!ends_with(lfiles[f], ds->file_ending)) continue;
        size_t cl = strlen(lfiles[f]) - el;
        int found = 0;
        for (int c = first; c < ds->ncases && !found; c++)
            found = strlen(ds->cases[c].name) == cl && strncmp(ds->cases[c].name, lfiles[f], cl) == 0;
        if (!found) {
            failf(err, errlen, "%s/%s: a label without an image (%s/%.*s_0000%s is missing)", lpath, lfiles[f], ipath,
                  (int)cl, lfiles[f], ds->file_ending);
            goto done;
        }
    }
    rc = 0;
done:
    if (files) free_list(files, ni);
    if (lfiles) free_list(lfiles, nl);
    free(ipath);
    free(lpath);
    return rc;
}

/* Header-only read. */
static nifti_image *read_header(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) { failf(err, errlen, "%s: %s", path, strerror(errno)); return NULL; }
    if (!S_ISREG(st.st_mode)) { failf(err, errlen, "%s: not a regular file", path); return NULL; }
    nifti_set_debug_level(0);
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim) { failf(err, errlen, "%s: not a readable NIfTI file (bad or missing header)", path); return NULL; }
    if (nim->dim[0] < 1 || nim->dim[0] > 4 || (nim->dim[0] == 4 && nim->nt > 1) || nim->nu > 1 || nim->nv > 1 ||
        nim->nw > 1) {
        failf(err, errlen, "%s: not a 3D volume (dim %d, %lld time points); nnU-Net's format has one 3D file per channel",
              path, nim->dim[0], (long long)nim->nt);
        nifti_image_free(nim);
        return NULL;
    }
    return nim;
}

static int check_headers(Dataset *ds, DsCase *c, char *err, size_t errlen)
{
    nifti_image *ref = read_header(c->images[0], err, errlen);
    if (!ref) return -1;
    Volume rv = { 0 };
    rv.dim[0] = ref->nx; rv.dim[1] = ref->ny > 0 ? ref->ny : 1; rv.dim[2] = ref->nz > 0 ? ref->nz : 1; rv.dim[3] = 1;
    rv.header = ref;
    int rc = 0;
    for (int k = 1; k <= ds->nchannels && rc == 0; k++) {
        const char *p = k < ds->nchannels ? c->images[k] : c->label;
        if (!p) continue;
        nifti_image *nim = read_header(p, err, errlen);
        if (!nim) { rc = -1; break; }
        Volume v = { 0 };
        v.dim[0] = nim->nx; v.dim[1] = nim->ny > 0 ? nim->ny : 1; v.dim[2] = nim->nz > 0 ? nim->nz : 1; v.dim[3] = 1;
        v.header = nim;
        rc = check_grid(&rv, c->images[0], &v, p, err, errlen);
        nifti_image_free(nim);
    }
    DsGeom g;
    orient_nim(ref, &g);
    memcpy(c->shape, g.canon_shape, sizeof c->shape);
    memcpy(c->spacing, g.canon_spacing, sizeof c->spacing);
    nifti_image_free(ref);
    return rc;
}

Dataset *ds_open(const char *dir, char *err, size_t errlen)
{
    Dataset *ds = calloc(1, sizeof *ds);
    if (!ds) { failf(err, errlen, "out of memory"); return NULL; }
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    ds->root = malloc(dl + 1);
    if (!ds->root) { failf(err, errlen, "out of memory"); goto fail; }
    memcpy(ds->root, dir, dl);
    ds->root[dl] = 0;
    struct stat st;
    if (stat(ds->root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        failf(err, errlen, "%s: not a folder (%s)", ds->root, stat(ds->root, &st) != 0 ? strerror(errno) : "a file");
        goto fail;
    }
    char *jp = fmt("%s/dataset.json", ds->root);
    if (!jp) { failf(err, errlen, "out of memory"); goto fail; }
    int r = parse_json(ds, jp, err, errlen);
    if (r != 0) { free(jp); goto fail; }
    if (!ds->name) {
        const char *b = strrchr(ds->root, '/');
        ds->name = dupstr(b ? b + 1 : ds->root);
    }
    if (scan_split(ds, DS_TRAIN, err, errlen) != 0) { free(jp); goto fail; }
    ds->ntrain = ds->ncases;
    if (ds->ntrain != ds->num_training) {
        failf(err, errlen, "%s: numTraining is %d but %s/imagesTr holds %d case(s)", jp, ds->num_training, ds->root,
              ds->ntrain);
        free(jp);
        goto fail;
    }
    free(jp);
    if (scan_split(ds, DS_TEST, err, errlen) != 0) goto fail;
    for (int i = 0; i < ds->ncases; i++)
        if (check_headers(ds, &ds->cases[i], err, errlen) != 0) goto fail;
    return ds;
fail:
    ds_free(ds);
    return NULL;
}

/* ---- parameters ------------------------------------------------------- */

void ds_params_default(DsParams *p, const Normalization *norm)
{
    memset(p, 0, sizeof *p);
    for (int c = 0; c < DS_MAX_CHANNELS; c++) {
        if (norm) p->norm[c] = *norm;
        else p->norm[c].kind = NORM_ZSCORE;
    }
}

void ds_params_from_protocol(DsParams *p, const Protocol *pr)
{
    ds_params_default(p, &pr->norm);
    if (pr->rank == 3)
        for (int k = 0; k < 3; k++) p->spacing[k] = pr->spacing[k];
    else if (pr->rank == 2) {
        p->spacing[1] = pr->spacing[0];
        p->spacing[2] = pr->spacing[1];
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void ds_median_spacing(const Dataset *ds, double out[3])
{
    int n = ds->ntrain > 0 ? ds->ntrain : ds->ncases;
    double *v = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int k = 0; k < 3; k++) {
        out[k] = 1;
        if (!v || n == 0) continue;
        for (int i = 0; i < n; i++) v[i] = ds->cases[i].spacing[k];
        qsort(v, (size_t)n, sizeof(double), cmp_double);
        out[k] = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    }
    free(v);
}

/* ---- reading a case --------------------------------------------------- */

static int load_case(const Dataset *ds, const DsCase *c, Volume *vols, Volume *lab, char *err, size_t errlen)
{
    memset(vols, 0, sizeof(Volume) * (size_t)ds->nchannels);
    memset(lab, 0, sizeof *lab);
    for (int k = 0; k < ds->nchannels; k++)
        if (vol_read(c->images[k], &vols[k], err, errlen) != 0) goto fail;
    if (c->label && vol_read(c->label, lab, err, errlen) != 0) goto fail;
    return 0;
fail:
    for (int k = 0; k < ds->nchannels; k++) vol_free(&vols[k]);
    vol_free(lab);
    return -1;
}

static void free_case(const Dataset *ds, Volume *vols, Volume *lab)
{
    for (int k = 0; k < ds->nchannels; k++) vol_free(&vols[k]);
    vol_free(lab);
}

/* ---- NORM_CT statistics ------------------------------------------------ */

static uint64_t stats_key(const Dataset *ds)
{
    uint64_t h = hash_str(FNV0, "netc-stats-1");
    for (int i = 0; i < ds->ntrain; i++) {
        for (int k = 0; k < ds->nchannels; k++) h = hash_file(h, ds->cases[i].images[k]);
        h = hash_file(h, ds->cases[i].label);
    }
    return h;
}

static int stats_from_cache(Dataset *ds, const char *path, const char *key)
{
    const char *why;
    char *text = slurp(path, DS_MAX_JSON, NULL, &why);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    int ok = 0;
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "key"), *ch = cJSON_GetObjectItemCaseSensitive(j, "channels");
    if (cJSON_IsString(k) && strcmp(k->valuestring, key) == 0 && cJSON_IsArray(ch) &&
        cJSON_GetArraySize(ch) == ds->nchannels) {
        ok = 1;
        for (int c = 0; c < ds->nchannels && ok; c++) {
            const cJSON *e = cJSON_GetArrayItem(ch, c);
            const char *f[5] = { "mean", "std", "percentile_00_5", "percentile_99_5", "n" };
            double v[5];
            for (int t = 0; t < 5 && ok; t++) {
                const cJSON *x = cJSON_GetObjectItemCaseSensitive(e, f[t]);
                if (cJSON_IsNumber(x)) v[t] = x->valuedouble;
                else ok = 0;
            }
            if (ok) {
                ds->stats[c] = (DsChannelStats){ 1, v[0], v[1], v[2], v[3], (int64_t)v[4] };
            }
        }
    }
    cJSON_Delete(j);
    return ok ? 0 : -1;
}

static int write_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen);

int ds_compute_stats(Dataset *ds, const char *cache_dir, char *err, size_t errlen)
{
    char key[32];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)stats_key(ds));
    char *cpath = cache_dir ? fmt("%s/dataset_fingerprint.json", cache_dir) : NULL;
    if (cpath && stats_from_cache(ds, cpath, key) == 0) { free(cpath); return 0; }
    if (ds->ntrain == 0) { free(cpath); return failf(err, errlen, "%s: no training cases for the dataset statistics", ds->root); }
    int C = ds->nchannels, rc = -1;
    int64_t per_case = DS_STATS_SAMPLES / ds->ntrain;
    if (per_case < 1) per_case = 1;
    float *samp[DS_MAX_CHANNELS] = { 0 };
    int64_t ns = 0, cap = 0;
    Volume vols[DS_MAX_CHANNELS], lab;
    for (int i = 0; i < ds->ntrain; i++) {
        const DsCase *c = &ds->cases[i];
        if (load_case(ds, c, vols, &lab, err, errlen) != 0) goto done;
        int bad = 0;
        for (int k = 0; k < C && !bad; k++)
            bad = check_grid(&vols[0], c->images[0], k + 1 < C ? &vols[k + 1] : &lab, k + 1 < C ? c->images[k + 1] : c->label,
                             err, errlen) != 0;
        if (bad) { free_case(ds, vols, &lab); goto done; }
        int64_t n = vol_numel(&lab), nf = 0;
        for (int64_t v = 0; v < n; v++) nf += lab.data[v] > 0;
        int64_t step = nf > per_case ? (nf + per_case - 1) / per_case : 1, take = (nf + step - 1) / step;
        if (ns + take > cap) {
            cap = (ns + take) * 2;
            for (int k = 0; k < C; k++) {
                float *w = realloc(samp[k], sizeof(float) * (size_t)cap);
                if (!w) { free_case(ds, vols, &lab); failf(err, errlen, "out of memory"); goto done; }
                samp[k] = w;
            }
        }
        int64_t seen = 0;
        for (int64_t v = 0; v < n; v++) {
            if (!(lab.data[v] > 0)) continue;
            if (seen++ % step) continue;
            for (int k = 0; k < C; k++) samp[k][ns] = vols[k].data[v];
            ns++;
        }
        free_case(ds, vols, &lab);
    }
    if (ns == 0) {
        failf(err, errlen, "%s: the training labels have no foreground voxels, which `normalize ct` needs", ds->root);
        goto done;
    }
    cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "channels");
    cJSON_AddStringToObject(j, "key", key);
    for (int k = 0; k < C; k++) {
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < ns; i++) sum += samp[k][i];
        double mean = sum / (double)ns;
        for (int64_t i = 0; i < ns; i++) sq += (samp[k][i] - mean) * (samp[k][i] - mean);
        qsort(samp[k], (size_t)ns, sizeof(float), cmp_float);
        ds->stats[k] = (DsChannelStats){ 1, mean, sqrt(sq / (double)ns), percentile(samp[k], ns, 0.5),
                                         percentile(samp[k], ns, 99.5), ns };
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "mean", ds->stats[k].mean);
        cJSON_AddNumberToObject(e, "std", ds->stats[k].sd);
        cJSON_AddNumberToObject(e, "percentile_00_5", ds->stats[k].p005);
        cJSON_AddNumberToObject(e, "percentile_99_5", ds->stats[k].p995);
        cJSON_AddNumberToObject(e, "n", (double)ns);
        cJSON_AddItemToArray(arr, e);
    }
    rc = 0;
    if (cpath) {
        char *s = cJSON_Print(j);
        if (mkdirs(cache_dir) != 0 || !s || write_atomic(cpath, s, strlen(s), err, errlen) != 0) rc = -1;
        if (rc != 0 && !s) failf(err, errlen, "out of memory");
        else if (rc != 0 && err && !err[0]) failf(err, errlen, "%s: cannot create the cache folder", cache_dir);
        free(s);
    }
    cJSON_Delete(j);
done:
    for (int k = 0; k < C; k++) free(samp[k]);
    free(cpath);
    return rc;
}

/* ---- the cache ---------------------------------------------------------- */

static int write_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen)
{
    char *tmp = fmt("%s.tmp-%ld", path, (long)getpid());
    if (!tmp) return failf(err, errlen, "out of memory");
    FILE *f = fopen(tmp, "wb");
    if (!f) { int e = errno; free(tmp); return failf(err, errlen, "%s: %s", path, strerror(e)); }
    int ok = fwrite(data, 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        free(tmp);
        return failf(err, errlen, "%s: writing failed (%s)", path, strerror(e));
    }
    free(tmp);
    return 0;
}

static int host_le(void) { const uint16_t one = 1; return *(const uint8_t *)&one == 1; }

static void swap4(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        u = (u >> 24) | ((u >> 8) & 0xff00) | ((u << 8) & 0xff0000) | (u << 24);
        memcpy(&x[i], &u, 4);
    }
}

static uint64_t case_key(const Dataset *ds, const DsCase *c, const DsParams *p)
{
    uint64_t h = hash_str(FNV0, "netc-preprocessed");
    h = fnv(h, &(int){ DS_CACHE_VERSION }, sizeof(int));
    for (int k = 0; k < ds->nchannels; k++) h = hash_file(h, c->images[k]);
    h = c->label ? hash_file(h, c->label) : hash_str(h, "no label");
    char buf[512];
    snprintf(buf, sizeof buf, "%.17g %.17g %.17g", p->spacing[0], p->spacing[1], p->spacing[2]);
    h = hash_str(h, buf);
    for (int k = 0; k < ds->nchannels; k++) {
        snprintf(buf, sizeof buf, "%d %.17g %.17g", (int)p->norm[k].kind, p->norm[k].lo, p->norm[k].hi);
        h = hash_str(h, buf);
        if (p->norm[k].kind == NORM_CT) {
            const DsChannelStats *s = &ds->stats[k];
            snprintf(buf, sizeof buf, "%.17g %.17g %.17g %.17g", s->mean, s->sd, s->p005, s->p995);
            h = hash_str(h, buf);
        }
    }
    for (int v = 0; v < 256; v++) h = fnv(h, &ds->label_ok[v], 1);
    return h;
}

static void add_arr(cJSON *o, const char *name, const double *v, int n)
{
    cJSON *a = cJSON_AddArrayToObject(o, name);
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
}

static void add_arr_i(cJSON *o, const char *name, const int64_t *v, int n)
{
    double d[3];
    for (int i = 0; i < n; i++) d[i] = (double)v[i];
    add_arr(o, name, d, n);
}

static int get_arr(const cJSON *o, const char *name, double *v, int n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) return 0;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble)) return 0;
        v[i] = e->valuedouble;
    }
    return 1;
}

static int get_arr_i(const cJSON *o, const char *name, int64_t *v, int n, int64_t lo, int64_t hi)
{
    double d[3];
    if (!get_arr(o, name, d, n)) return 0;
    for (int i = 0; i < n; i++) {
        if (d[i] != floor(d[i]) || d[i] < (double)lo || d[i] > (double)hi) return 0;
        v[i] = (int64_t)d[i];
    }
    return 1;
}

static int read_exact(const char *path, void *buf, size_t n)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != n) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n ? 0 : -1;
}

/* 0 and *pp filled when the cache holds this case with this key. */
static int cache_load(const Dataset *ds, const DsCase *c, const char *dir, const char *key, DsPrepped *pp)
{
    memset(pp, 0, sizeof *pp);
    char *jp = fmt("%s/%s.json", dir, c->name);
    const char *why;
    char *text = jp ? slurp(jp, DS_MAX_JSON, NULL, &why) : NULL;
    free(jp);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    int ok = 0;
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "key"), *ch = cJSON_GetObjectItemCaseSensitive(j, "channels"),
                *hl = cJSON_GetObjectItemCaseSensitive(j, "has_labels");
    DsGeom *g = &pp->geom;
    const int64_t BIG = (int64_t)1 << 31;
    if (cJSON_IsString(k) && strcmp(k->valuestring, key) == 0 && cJSON_IsNumber(ch) && ch->valuedouble == ds->nchannels &&
        cJSON_IsBool(hl) && (cJSON_IsTrue(hl) == (c->label != NULL)) &&
        get_arr_i(j, "shape", g->shape, 3, 1, BIG) && get_arr(j, "spacing", g->spacing, 3) &&
        get_arr_i(j, "src_dim", g->src_dim, 3, 1, BIG) && get_arr_i(j, "canon_shape", g->canon_shape, 3, 1, BIG) &&
        get_arr(j, "canon_spacing", g->canon_spacing, 3) && get_arr_i(j, "bbox_lo", g->bbox_lo, 3, 0, BIG) &&
        get_arr_i(j, "bbox_hi", g->bbox_hi, 3, 1, BIG)) {
        int64_t perm[3], flip[3];
        ok = get_arr_i(j, "perm", perm, 3, 0, 2) && get_arr_i(j, "flip", flip, 3, 0, 1);
        for (int a = 0; a < 3 && ok; a++) { g->perm[a] = (int)perm[a]; g->flip[a] = (int)flip[a]; }
        ok = ok && g->perm[0] != g->perm[1] && g->perm[1] != g->perm[2] && g->perm[0] != g->perm[2];
        for (int a = 0; a < 3 && ok; a++)
            ok = g->bbox_lo[a] < g->bbox_hi[a] && g->bbox_hi[a] <= g->canon_shape[a] &&
                 g->canon_shape[2 - a] == g->src_dim[g->perm[a]];
        ok = ok && numel3(g->shape) <= ((int64_t)1 << 34);
    }
    cJSON_Delete(j);
    if (!ok) return -1;
    int64_t n = numel3(g->shape);
    pp->nchannels = ds->nchannels;
    memcpy(pp->shape, g->shape, sizeof pp->shape);
    memcpy(pp->spacing, g->spacing, sizeof pp->spacing);
    char *ip = fmt("%s/%s-%s.img", dir, c->name, key), *sp = fmt("%s/%s-%s.seg", dir, c->name, key);
    pp->image = malloc(sizeof(float) * (size_t)(n * ds->nchannels));
    if (c->label) pp->labels = malloc((size_t)n);
    int rc = -1;
    if (ip && sp && pp->image && (!c->label || pp->labels) &&
        read_exact(ip, pp->image, sizeof(float) * (size_t)(n * ds->nchannels)) == 0 &&
        (!c->label || read_exact(sp, pp->labels, (size_t)n) == 0)) {
        rc = 0;
        if (!host_le()) swap4(pp->image, n * ds->nchannels);
        if (pp->labels)
            for (int64_t i = 0; i < n && rc == 0; i++)
                if (pp->labels[i] > ds->max_label) rc = -1;
    }
    free(ip);
    free(sp);
    if (rc != 0) ds_prepped_free(pp);
    else pp->from_cache = 1;
    return rc;
}

static int cache_store(const DsCase *c, const char *dir, const char *key, const DsPrepped *pp,
                       char *err, size_t errlen)
{
    if (mkdirs(dir) != 0) return failf(err, errlen, "%s: cannot create the cache folder (%s)", dir, strerror(errno));
    /* the key of the version being replaced, to remove its arrays afterwards */
    char old[32] = "";
    {
        char *jp = fmt("%s/%s.json", dir, c->name);
        const char *why;
        char *text = jp ? slurp(jp, DS_MAX_JSON, NULL, &why) : NULL;
        cJSON *j = text ? cJSON_Parse(text) : NULL;
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "key");
        if (cJSON_IsString(k) && strlen(k->valuestring) == 16 && strspn(k->valuestring, "0123456789abcdef") == 16)
            snprintf(old, sizeof old, "%s", k->valuestring);
        cJSON_Delete(j);
        free(text);
        free(jp);
    }
    int64_t n = numel3(pp->shape);
    char *ip = fmt("%s/%s-%s.img", dir, c->name, key), *sp = fmt("%s/%s-%s.seg", dir, c->name, key),
         *jp = fmt("%s/%s.json", dir, c->name);
    cJSON *j = cJSON_CreateObject();
    char *s = NULL;
    int rc = -1;
    if (!ip || !sp || !jp || !j) { failf(err, errlen, "out of memory"); goto done; }
    if (host_le()) {
        if (write_atomic(ip, pp->image, sizeof(float) * (size_t)(n * pp->nchannels), err, errlen) != 0) goto done;
    } else {
        float *t = malloc(sizeof(float) * (size_t)(n * pp->nchannels));
        if (!t) { failf(err, errlen, "out of memory"); goto done; }
        memcpy(t, pp->image, sizeof(float) * (size_t)(n * pp->nchannels));
        swap4(t, n * pp->nchannels);
        int r = write_atomic(ip, t, sizeof(float) * (size_t)(n * pp->nchannels), err, errlen);
        free(t);
        if (r != 0) goto done;
    }
    if (pp->labels && write_atomic(sp, pp->labels, (size_t)n, err, errlen) != 0) goto done;
    const DsGeom *g = &pp->geom;
    int64_t perm[3] = { g->perm[0], g->perm[1], g->perm[2] }, flip[3] = { g->flip[0], g->flip[1], g->flip[2] };
    cJSON_AddStringToObject(j, "case", c->name);
    cJSON_AddStringToObject(j, "key", key);
    cJSON_AddNumberToObject(j, "version", DS_CACHE_VERSION);
    cJSON_AddNumberToObject(j, "channels", pp->nchannels);
    cJSON_AddBoolToObject(j, "has_labels", pp->labels != NULL);
    cJSON_AddStringToObject(j, "layout", "image: float32 little-endian [c][z][y][x]; labels: uint8 [z][y][x]");
    add_arr_i(j, "shape", g->shape, 3);
    add_arr(j, "spacing", g->spacing, 3);
    add_arr_i(j, "src_dim", g->src_dim, 3);
    add_arr_i(j, "perm", perm, 3);
    add_arr_i(j, "flip", flip, 3);
    add_arr_i(j, "canon_shape", g->canon_shape, 3);
    add_arr(j, "canon_spacing", g->canon_spacing, 3);
    add_arr_i(j, "bbox_lo", g->bbox_lo, 3);
    add_arr_i(j, "bbox_hi", g->bbox_hi, 3);
    if (!(s = cJSON_Print(j))) { failf(err, errlen, "out of memory"); goto done; }
    if (write_atomic(jp, s, strlen(s), err, errlen) != 0) goto done;
    if (old[0] && strcmp(old, key) != 0) {
        char *oi = fmt("%s/%s-%s.img", dir, c->name, old), *os = fmt("%s/%s-%s.seg", dir, c->name, old);
        if (oi) remove(oi);
        if (os) remove(os);
        free(oi);
        free(os);
    }
    rc = 0;
done:
    free(s);
    cJSON_Delete(j);
    free(ip);
    free(sp);
    free(jp);
    return rc;
}

/* ---- preprocessing ---------------------------------------------------- */

static int preprocess_one(Dataset *ds, int i, const DsParams *p, const char *cache_dir, char *err, size_t errlen)
{
    DsCase *c = &ds->cases[i];
    if (c->prep) { ds_prepped_free(c->prep); free(c->prep); c->prep = NULL; }
    DsPrepped *pp = calloc(1, sizeof *pp);
    if (!pp) return failf(err, errlen, "out of memory");
    char key[32];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)case_key(ds, c, p));
    if (cache_dir && cache_load(ds, c, cache_dir, key, pp) == 0) {
        c->prep = pp;
        ds->n_cached++;
        return 0;
    }
    Volume vols[DS_MAX_CHANNELS], lab;
    if (load_case(ds, c, vols, &lab, err, errlen) != 0) { free(pp); return -1; }
    const char *names[DS_MAX_CHANNELS + 1];
    for (int k = 0; k < ds->nchannels; k++) names[k] = c->images[k];
    names[ds->nchannels] = c->label;
    int rc = ds_prepare(vols, ds->nchannels, c->label ? &lab : NULL, p, ds->stats, names, ds->label_ok, pp, err, errlen);
    free_case(ds, vols, &lab);
    if (rc == 0 && cache_dir) rc = cache_store(c, cache_dir, key, pp, err, errlen);
    if (rc != 0) { ds_prepped_free(pp); free(pp); return -1; }
    c->prep = pp;
    ds->n_computed++;
    return 0;
}

int ds_preprocess(Dataset *ds, const DsParams *p, const char *cache_dir, int which, char *err, size_t errlen)
{
    if (which < -1 || which >= ds->ncases) return failf(err, errlen, "case %d does not exist (%d cases)", which, ds->ncases);
    for (int k = 0; k < ds->nchannels; k++)
        if (p->norm[k].kind == NORM_CT && !ds->stats[k].valid) {
            if (ds_compute_stats(ds, cache_dir, err, errlen) != 0) return -1;
            break;
        }
    for (int i = 0; i < ds->ncases; i++) {
        if (which >= 0 && i != which) continue;
        if (preprocess_one(ds, i, p, cache_dir, err, errlen) != 0) return -1;
    }
    return 0;
}

const DsPrepped *ds_case(const Dataset *ds, int i)
{
    return i >= 0 && i < ds->ncases ? ds->cases[i].prep : NULL;
}

void ds_release(Dataset *ds, int i)
{
    if (i < 0 || i >= ds->ncases || !ds->cases[i].prep) return;
    ds_prepped_free(ds->cases[i].prep);
    free(ds->cases[i].prep);
    ds->cases[i].prep = NULL;
}
