/* augment.c — patch sampling, augmentation and the threaded batch producer.
 * The contract (order, random streams, conventions) is in augment.h; the
 * differences from nnU-Net (batchgenerators) are in docs/architecture.md. */
#define _POSIX_C_SOURCE 200809L
#include "augment.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "util.h"

#define PI 3.14159265358979323846

typedef enum { A_MIRROR, A_ROTATE, A_SCALE, A_ELASTIC, A_NOISE, A_BLUR, A_BRIGHTNESS, A_CONTRAST, A_LOWRES,
               A_GAMMA, A_UNKNOWN } AugKind;

/* The index in TrainCall.num of each augmentation's `p` (train.c's table). */
static const struct { const char *name; AugKind kind; int p; } aug_table[] = {
    { "mirror", A_MIRROR, 1 },   { "rotate", A_ROTATE, 1 },   { "scale", A_SCALE, 1 },
    { "elastic", A_ELASTIC, 2 }, { "noise", A_NOISE, 1 },     { "blur", A_BLUR, 1 },
    { "brightness", A_BRIGHTNESS, 1 }, { "contrast", A_CONTRAST, 1 }, { "lowres", A_LOWRES, 1 },
    { "gamma", A_GAMMA, 1 },
};
#define NKINDS ((int)(sizeof aug_table / sizeof aug_table[0]))

/* nnU-Net: blur and lowres act on each channel with probability 0.5. */
#define P_PER_CHANNEL 0.5

static AugKind aug_kind(const char *name, int *pidx)
{
    for (int i = 0; name && i < NKINDS; i++)
        if (strcmp(aug_table[i].name, name) == 0) {
            if (pidx) *pidx = aug_table[i].p;
            return aug_table[i].kind;
        }
    return A_UNKNOWN;
}

/* ---- random streams ----------------------------------------------------- */

static uint64_t hash64(uint64_t x)
{
    RefRng r = { x };
    return ref_rng_next(&r);
}

static uint64_t sample_seed(uint64_t seed, int64_t k, int j)
{
    uint64_t b = seed ^ hash64((uint64_t)k);
    return hash64(b ^ (0xD1B54A32D192ED03ull * (uint64_t)(j + 1)));
}

static RefRng stream(uint64_t s, int t)
{
    RefRng r = { hash64(s ^ (0x9E3779B97F4A7C15ull * (uint64_t)(t + 1))) };
    return r;
}

static double unif(RefRng *r, double lo, double hi) { return lo + (hi - lo) * ref_rng_uniform(r); }

/* An integer in [0, n), n >= 1. */
static int64_t randint(RefRng *r, int64_t n)
{
    int64_t v = (int64_t)(ref_rng_uniform(r) * (double)n);
    return v < n ? v : n - 1;
}

/* batchgenerators' BGContrast draw (brightness, contrast, gamma): a range
 * that straddles 1 is sampled below 1 half the time, above 1 otherwise. */
static double draw_bg(RefRng *r, double lo, double hi)
{
    double u = ref_rng_uniform(r);
    if (lo < 1 && hi > 1) return u < 0.5 ? unif(r, lo, 1) : unif(r, 1, hi);
    return unif(r, lo, hi);
}

/* ---- building blocks ---------------------------------------------------- */

void aug_mirror(float *img, int32_t *lab, int nchannels, const int64_t shape[3], unsigned axes_zyx)
{
    int64_t Z = shape[0], Y = shape[1], X = shape[2], n = Z * Y * X;
    for (int c = -1; c < nchannels; c++) {
        if (c < 0 && !lab) continue;
        for (int64_t z = 0; z < Z; z++)
            for (int64_t y = 0; y < Y; y++)
                for (int64_t x = 0; x < X; x++) {
                    int64_t zz = (axes_zyx & 1) ? Z - 1 - z : z;
                    int64_t yy = (axes_zyx & 2) ? Y - 1 - y : y;
                    int64_t xx = (axes_zyx & 4) ? X - 1 - x : x;
                    int64_t i = (z * Y + y) * X + x, j = (zz * Y + yy) * X + xx;
                    if (j <= i) continue;   /* each pair swapped once */
                    if (c < 0) {
                        int32_t t = lab[i]; lab[i] = lab[j]; lab[j] = t;
                    } else {
                        float *v = img + (int64_t)c * n;
                        float t = v[i]; v[i] = v[j]; v[j] = t;
                    }
                }
    }
}

/* scipy's "reflect" (d c b a | a b c d | d c b a) for any offset. */
static int64_t reflect(int64_t i, int64_t n)
{
    int64_t m = i % (2 * n);
    if (m < 0) m += 2 * n;
    return m < n ? m : 2 * n - 1 - m;
}

/* Separable Gaussian along one axis (0 z, 1 y, 2 x) of a [z][y][x] volume;
 * constant = true: zero outside, else reflect.  tmp holds one line. */
static void gauss_axis(float *v, const int64_t shape[3], int axis, double sigma, bool constant, double *tmp)
{
    if (!(sigma > 0) || shape[axis] < 1) return;
    int rad = (int)(4.0 * sigma + 0.5);
    double *k = xmalloc(sizeof(double) * (size_t)(2 * rad + 1)), sum = 0;
    for (int i = -rad; i <= rad; i++) sum += k[i + rad] = exp(-0.5 * (double)i * i / (sigma * sigma));
    for (int i = 0; i <= 2 * rad; i++) k[i] /= sum;
    int64_t n = shape[axis];
    int64_t stride = axis == 2 ? 1 : axis == 1 ? shape[2] : shape[1] * shape[2];
    int64_t outer = shape[0] * shape[1] * shape[2] / n;
    for (int64_t o = 0; o < outer; o++) {
        /* the line's start: o enumerates the other two axes */
        int64_t base;
        if (axis == 2) base = o * n;
        else if (axis == 1) base = (o / shape[2]) * shape[1] * shape[2] + o % shape[2];
        else base = o;
        for (int64_t i = 0; i < n; i++) {
            double acc = 0;
            for (int t = -rad; t <= rad; t++) {
                int64_t j = i + t;
                if (j < 0 || j >= n) {
                    if (constant) continue;
                    j = reflect(j, n);
                }
                acc += k[t + rad] * v[base + j * stride];
            }
            tmp[i] = acc;
        }
        for (int64_t i = 0; i < n; i++) v[base + i * stride] = (float)tmp[i];
    }
    free(k);
}

static int64_t max3(const int64_t s[3])
{
    int64_t m = s[0] > s[1] ? s[0] : s[1];
    return m > s[2] ? m : s[2];
}

void aug_blur(float *x, const int64_t shape[3], const double sigma[3])
{
    double *tmp = xmalloc(sizeof(double) * (size_t)max3(shape));
    for (int a = 0; a < 3; a++) gauss_axis(x, shape, a, sigma[a], false, tmp);
    free(tmp);
}

static void channel_stats(const float *x, int64_t n, double *mean, double *sd, double *mn, double *mx)
{
    double s = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    double m = n ? s / (double)n : 0, q = 0;
    for (int64_t i = 0; sd && i < n; i++) q += (x[i] - m) * (x[i] - m);
    if (mean) *mean = m;
    if (sd) *sd = n ? sqrt(q / (double)n) : 0;
    if (mn) *mn = lo;
    if (mx) *mx = hi;
}

void aug_contrast(float *x, int64_t n, double factor)
{
    if (n < 1) return;
    double m, lo, hi;
    channel_stats(x, n, &m, NULL, &lo, &hi);
    for (int64_t i = 0; i < n; i++) {
        double v = (x[i] - m) * factor + m;
        x[i] = (float)(v < lo ? lo : v > hi ? hi : v);
    }
}

void aug_gamma(float *x, int64_t n, double gamma, bool invert)
{
    if (n < 1) return;
    const double eps = 1e-7;   /* batchgenerators' epsilon */
    double m, sd, lo, hi;
    channel_stats(x, n, &m, &sd, &lo, &hi);
    double rg = hi - lo;
    for (int64_t i = 0; i < n; i++) {
        double t = (x[i] - lo) / (rg + eps);   /* in [0, 1) */
        if (t < 0) t = 0;
        t = invert ? 1.0 - pow(1.0 - t, gamma) : pow(t, gamma);
        x[i] = (float)(t * (rg + eps) + lo);
    }
    double m2, sd2;
    channel_stats(x, n, &m2, &sd2, NULL, NULL);
    for (int64_t i = 0; i < n; i++) x[i] = (float)((x[i] - m2) / (sd2 + 1e-8) * sd + m);
}

/* Linear interpolation weights of output i on an axis scaled from n to N
 * (align_corners = false, PyTorch's clamping at the low border). */
static void lin_weights(int64_t N, int64_t n, int64_t i, int64_t *i0, int64_t *i1, double *w1)
{
    double s = ((double)i + 0.5) * (double)n / (double)N - 0.5;
    if (s < 0) s = 0;
    int64_t a = (int64_t)floor(s);
    if (a > n - 1) a = n - 1;
    *i0 = a;
    *i1 = a + 1 < n ? a + 1 : n - 1;
    *w1 = s - (double)a;
}

void aug_lowres(float *x, const int64_t shape[3], double zoom, unsigned axes_zyx)
{
    int64_t small[3];
    for (int a = 0; a < 3; a++) {
        small[a] = shape[a];
        if (axes_zyx & (1u << a)) {
            small[a] = (int64_t)llround((double)shape[a] * zoom);
            if (small[a] < 1) small[a] = 1;
        }
    }
    int64_t Z = shape[0], Y = shape[1], X = shape[2], sz = small[0], sy = small[1], sx = small[2];
    float *d = xmalloc(sizeof(float) * (size_t)(sz * sy * sx));
    /* down: nearest ("nearest-exact": the source pixel containing the centre) */
    for (int64_t z = 0; z < sz; z++)
        for (int64_t y = 0; y < sy; y++)
            for (int64_t xx = 0; xx < sx; xx++) {
                int64_t iz = (int64_t)(((double)z + 0.5) * (double)Z / (double)sz);
                int64_t iy = (int64_t)(((double)y + 0.5) * (double)Y / (double)sy);
                int64_t ix = (int64_t)(((double)xx + 0.5) * (double)X / (double)sx);
                if (iz >= Z) iz = Z - 1;
                if (iy >= Y) iy = Y - 1;
                if (ix >= X) ix = X - 1;
                d[(z * sy + y) * sx + xx] = x[(iz * Y + iy) * X + ix];
            }
    /* up: (tri)linear */
    for (int64_t z = 0; z < Z; z++) {
        int64_t z0, z1; double wz;
        lin_weights(Z, sz, z, &z0, &z1, &wz);
        for (int64_t y = 0; y < Y; y++) {
            int64_t y0, y1; double wy;
            lin_weights(Y, sy, y, &y0, &y1, &wy);
            for (int64_t xx = 0; xx < X; xx++) {
                int64_t x0, x1; double wx;
                lin_weights(X, sx, xx, &x0, &x1, &wx);
#define D(a, b, c) ((double)d[((a) * sy + (b)) * sx + (c)])
                double v0 = (1 - wy) * ((1 - wx) * D(z0, y0, x0) + wx * D(z0, y0, x1)) +
                            wy * ((1 - wx) * D(z0, y1, x0) + wx * D(z0, y1, x1));
                double v1 = (1 - wy) * ((1 - wx) * D(z1, y0, x0) + wx * D(z1, y0, x1)) +
                            wy * ((1 - wx) * D(z1, y1, x0) + wx * D(z1, y1, x1));
#undef D
                x[(z * Y + y) * X + xx] = (float)((1 - wz) * v0 + wz * v1);
            }
        }
    }
    free(d);
}

/* ---- the batcher -------------------------------------------------------- */

typedef struct {
    int64_t *count;                 /* [nclasses] voxels of each class */
    const int64_t *const *locs;     /* [nclasses]: given or own */
    const int64_t *nlocs;
    int64_t **own;                  /* what we found (NULL if given) */
    int64_t *own_n;
} CaseIndex;

struct Batcher {
    AugDataset ds;
    AugSpec spec;
    TrainCall *augment;             /* copy */
    int C;
    int64_t P[3], pvox;             /* internal patch z, y, x (z = 1 in 2D) */
    CaseIndex *idx;
    int **class_cases;              /* [nclasses]: the cases holding that class */
    int *nclass_cases;
    uint64_t seed;
    /* ring */
    int threads, nslots;
    pthread_t *th;
    float **simg;
    int32_t **slab;
    int64_t *slot_k;                /* batch in the slot, -1: none */
    int64_t next_claim, consumed;
    bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

void aug_spec_from_train(AugSpec *s, const TrainSpec *t)
{
    memset(s, 0, sizeof *s);
    s->rank = t->patch_rank;
    for (int a = 0; a < t->patch_rank && a < 3; a++) s->patch[a] = t->patch[a];
    s->batch = (int)t->batch;
    s->augment = t->augment;
    s->naugment = t->naugment;
    s->sampling = t->sampling;
}

#define ERR(...) do { if (err && errlen) snprintf(err, errlen, __VA_ARGS__); return false; } while (0)

bool aug_check(const AugDataset *ds, const AugSpec *spec, char *err, size_t errlen)
{
    if (!ds || !spec) ERR("no dataset or spec");
    if (ds->ncases < 1 || !ds->cases) ERR("the dataset has no cases");
    if (ds->nclasses < 1 || ds->nclasses > 256) ERR("nclasses must be 1 .. 256, not %d", ds->nclasses);
    for (int i = 0; i < ds->ncases; i++) {
        const AugCase *c = &ds->cases[i];
        if (c->nchannels < 1 || c->nchannels != ds->cases[0].nchannels)
            ERR("case %d has %d channels (case 0 has %d)", i, c->nchannels, ds->cases[0].nchannels);
        if (!c->image || !c->labels) ERR("case %d has no image or labels", i);
        for (int a = 0; a < 3; a++)
            if (c->shape[a] < 1 || c->shape[a] > (INT64_C(1) << 24)) ERR("case %d: bad shape", i);
        if (c->locs && !c->nlocs) ERR("case %d: locs without nlocs", i);
    }
    if (spec->rank != 2 && spec->rank != 3) ERR("the patch must be 2D or 3D, not %dD", spec->rank);
    double vox = 1;
    for (int a = 0; a < spec->rank; a++) {
        if (spec->patch[a] < 1 || spec->patch[a] > (INT64_C(1) << 24)) ERR("bad patch size");
        vox *= (double)spec->patch[a];
    }
    if (spec->batch < 1 || spec->batch > 4096) ERR("batch must be 1 .. 4096, not %d", spec->batch);
    if (vox * spec->batch * ds->cases[0].nchannels > 4e9) ERR("a batch of more than 4e9 values");
    if (spec->naugment < 0 || (spec->naugment > 0 && !spec->augment)) ERR("bad augmentation list");
    for (int i = 0; i < spec->naugment; i++) {
        const TrainCall *c = &spec->augment[i];
        int p = 0;
        AugKind k = aug_kind(c->name, &p);
        if (k == A_UNKNOWN) ERR("unknown augmentation `%s`", c->name ? c->name : "(null)");
        if (!(c->num[p] >= 0 && c->num[p] <= 1)) ERR("%s: p must be 0 .. 1", c->name);
        if (k != A_MIRROR && !(isfinite(c->lo) && isfinite(c->hi) && c->lo <= c->hi))
            ERR("%s: bad range %g .. %g", c->name, c->lo, c->hi);
        if ((k == A_SCALE || k == A_LOWRES || k == A_GAMMA) && !(c->lo > 0))
            ERR("%s: the range must be positive", c->name);
        if ((k == A_NOISE || k == A_BLUR || k == A_ELASTIC) && c->lo < 0) ERR("%s: the range cannot be negative", c->name);
        if (k == A_BLUR && c->hi > 100) ERR("blur: sigma above 100");
        if (k == A_ELASTIC && !(c->num[1] > 0 && c->num[1] <= 100)) ERR("elastic: sigma must be in (0, 100]");
    }
    const char *s = spec->sampling.name;
    if (s && strcmp(s, "random") && strcmp(s, "foreground") && strcmp(s, "balanced"))
        ERR("unknown sampling `%s`", s);
    if (s && !strcmp(s, "foreground") && !(spec->sampling.num[0] >= 0 && spec->sampling.num[0] <= 1))
        ERR("foreground: the fraction must be 0 .. 1");
    return true;
}

/* Where a patch starts along one axis: inside the case when it fits,
 * centred (padded on both sides) when it does not. */
static void axis_bounds(int64_t S, int64_t P, int64_t *lo, int64_t *hi)
{
    if (S >= P) { *lo = 0; *hi = S - P; }
    else *lo = *hi = -((P - S) / 2);
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

typedef struct { int ci; int64_t lb[3]; } Pos;   /* case, patch origin (z = slice in 2D) */

static void pos_at_voxel(const Batcher *b, const AugCase *c, int64_t v, Pos *p)
{
    int64_t Y = c->shape[1], X = c->shape[2];
    int64_t vz = v / (Y * X), vy = v / X % Y, vx = v % X;
    int64_t vc[3] = { vz, vy, vx };
    for (int a = 0; a < 3; a++) {
        if (b->spec.rank == 2 && a == 0) { p->lb[0] = vz; continue; }
        int64_t lo, hi;
        axis_bounds(c->shape[a], b->P[a], &lo, &hi);
        p->lb[a] = clamp64(vc[a] - b->P[a] / 2, lo, hi);
    }
}

static void pos_random(const Batcher *b, RefRng *r, Pos *p)
{
    const AugCase *c = &b->ds.cases[p->ci];
    for (int a = 0; a < 3; a++) {
        if (b->spec.rank == 2 && a == 0) { p->lb[0] = randint(r, c->shape[0]); continue; }
        int64_t lo, hi;
        axis_bounds(c->shape[a], b->P[a], &lo, &hi);
        p->lb[a] = lo + randint(r, hi - lo + 1);
    }
}

static int64_t class_voxel(const Batcher *b, int ci, int k, RefRng *r)
{
    const CaseIndex *ix = &b->idx[ci];
    if (k > 0) return ix->locs[k][randint(r, ix->nlocs[k])];
    /* background: rejection sampling, bounded */
    const AugCase *c = &b->ds.cases[ci];
    int64_t n = c->shape[0] * c->shape[1] * c->shape[2];
    for (int t = 0; t < 1000; t++) {
        int64_t v = randint(r, n);
        if (c->labels[v] == 0) return v;
    }
    return -1;
}

static void sample_pos(const Batcher *b, int j, RefRng *r, Pos *p)
{
    const char *s = b->spec.sampling.name;
    int ncl = b->ds.nclasses;
    p->ci = (int)randint(r, b->ds.ncases);
    bool fg = false;
    if (s && !strcmp(s, "foreground")) {
        /* nnU-Net: the last batch - round((1 - f) batch) samples */
        double nr = nearbyint((1.0 - b->spec.sampling.num[0]) * b->spec.batch);
        fg = j >= (int)nr;
    }
    if (fg) {
        const CaseIndex *ix = &b->idx[p->ci];
        int present[256], np = 0;
        for (int k = 1; k < ncl; k++)
            if (ix->nlocs[k] > 0) present[np++] = k;
        if (np > 0) {
            int k = present[randint(r, np)];
            pos_at_voxel(b, &b->ds.cases[p->ci], class_voxel(b, p->ci, k, r), p);
            return;
        }
    } else if (s && !strcmp(s, "balanced")) {
        int present[256], np = 0;
        for (int k = 0; k < ncl; k++)
            if (b->nclass_cases[k] > 0) present[np++] = k;
        if (np > 0) {
            int k = present[randint(r, np)];
            p->ci = b->class_cases[k][randint(r, b->nclass_cases[k])];
            int64_t v = class_voxel(b, p->ci, k, r);
            if (v >= 0) {
                pos_at_voxel(b, &b->ds.cases[p->ci], v, p);
                return;
            }
        }
    }
    pos_random(b, r, p);
}

/* 3x3 products, row-major, (z, y, x) coordinates. */
static void matmul3(double *out, const double *a, const double *b2)
{
    double t[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) t[i * 3 + j] = a[i * 3] * b2[j] + a[i * 3 + 1] * b2[3 + j] + a[i * 3 + 2] * b2[6 + j];
    memcpy(out, t, sizeof t);
}

/* Rotation by `a` radians in the plane of axes (i, j): e_i -> cos e_i + sin e_j. */
static void rot_plane(double *m, int i, int j, double a)
{
    double r[9] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
    double c = cos(a), s = sin(a);
    r[i * 3 + i] = c; r[i * 3 + j] = -s;
    r[j * 3 + i] = s; r[j * 3 + j] = c;
    matmul3(m, r, m);
}

/* Sample one patch of batch k: images [C][P], labels [P]. */
static void make_sample(const Batcher *b, int64_t k, int j, float *img, int32_t *lab)
{
    uint64_t ss = sample_seed(b->seed, k, j);
    RefRng r0 = stream(ss, 0);
    Pos pos;
    sample_pos(b, j, &r0, &pos);
    const AugCase *c = &b->ds.cases[pos.ci];
    const int C = b->C, rank = b->spec.rank;
    const int64_t *P = b->P, n = b->pvox;
    const int64_t S0 = c->shape[0], S1 = c->shape[1], S2 = c->shape[2], cn = S0 * S1 * S2;
    const int32_t pad = b->spec.pad_label;

    /* spatial parameters */
    double M[9] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
    bool spatial = false;
    float *disp = NULL;            /* elastic: [3][P], z component unused in 2D */
    for (int i = 0; i < b->spec.naugment; i++) {
        const TrainCall *tc = &b->augment[i];
        int pi = 0;
        AugKind kd = aug_kind(tc->name, &pi);
        if (kd != A_ROTATE && kd != A_SCALE && kd != A_ELASTIC) continue;
        RefRng r = stream(ss, 1 + i);
        if (!(ref_rng_uniform(&r) < tc->num[pi])) continue;
        spatial = true;
        if (kd == A_ROTATE) {
            if (rank == 3) {
                double ax = unif(&r, tc->lo, tc->hi) * PI / 180, ay = unif(&r, tc->lo, tc->hi) * PI / 180,
                       az = unif(&r, tc->lo, tc->hi) * PI / 180;
                /* M = Rx Ry Rz M: around x (the z-y plane), y (x-z), z (y-x) */
                rot_plane(M, 2, 1, az);
                rot_plane(M, 0, 2, ay);
                rot_plane(M, 1, 0, ax);
            } else
                rot_plane(M, 2, 1, unif(&r, tc->lo, tc->hi) * PI / 180);
        } else if (kd == A_SCALE) {
            double s = unif(&r, tc->lo, tc->hi);
            for (int a = (rank == 2); a < 3; a++)
                for (int q = 0; q < 3; q++) M[a * 3 + q] *= s;
        } else {
            double alpha = unif(&r, tc->lo, tc->hi), sigma = tc->num[1];
            if (!disp) disp = xcalloc((size_t)(3 * n), sizeof *disp);
            double *tmp = xmalloc(sizeof(double) * (size_t)max3(P));
            for (int a = (rank == 2); a < 3; a++) {
                float *d = xmalloc(sizeof(float) * (size_t)n);
                for (int64_t v = 0; v < n; v++) d[v] = (float)unif(&r, -1, 1);
                for (int ax = (rank == 2); ax < 3; ax++) gauss_axis(d, P, ax, sigma, true, tmp);
                for (int64_t v = 0; v < n; v++) disp[a * n + v] += (float)(alpha * d[v]);
                free(d);
            }
            free(tmp);
        }
    }

    /* the patch: a plain crop, or the coordinate map src = centre + M (r + e) */
    double ctr[3];
    for (int a = 0; a < 3; a++) ctr[a] = (double)pos.lb[a] + (rank == 2 && a == 0 ? 0 : (double)(P[a] - 1) / 2);
    for (int64_t z = 0; z < P[0]; z++)
        for (int64_t y = 0; y < P[1]; y++)
            for (int64_t x = 0; x < P[2]; x++) {
                int64_t o = (z * P[1] + y) * P[2] + x;
                if (!spatial) {
                    int64_t sz = pos.lb[0] + z, sy = pos.lb[1] + y, sx = pos.lb[2] + x;
                    bool in = sz >= 0 && sz < S0 && sy >= 0 && sy < S1 && sx >= 0 && sx < S2;
                    int64_t si = in ? (sz * S1 + sy) * S2 + sx : 0;
                    for (int ch = 0; ch < C; ch++) img[ch * n + o] = in ? c->image[ch * cn + si] : 0.0f;
                    lab[o] = in ? (int32_t)c->labels[si] : pad;
                    continue;
                }
                double rr[3] = { (double)z - (double)(P[0] - 1) / 2, (double)y - (double)(P[1] - 1) / 2,
                                 (double)x - (double)(P[2] - 1) / 2 };
                if (rank == 2) rr[0] = 0;
                if (disp)
                    for (int a = 0; a < 3; a++) rr[a] += disp[a * n + o];
                double src[3];
                for (int a = 0; a < 3; a++) src[a] = ctr[a] + M[a * 3] * rr[0] + M[a * 3 + 1] * rr[1] + M[a * 3 + 2] * rr[2];
                /* labels: nearest */
                int64_t nz = (int64_t)floor(src[0] + 0.5), ny = (int64_t)floor(src[1] + 0.5),
                        nx = (int64_t)floor(src[2] + 0.5);
                bool in = nz >= 0 && nz < S0 && ny >= 0 && ny < S1 && nx >= 0 && nx < S2;
                lab[o] = in ? (int32_t)c->labels[(nz * S1 + ny) * S2 + nx] : pad;
                /* images: trilinear, zero outside */
                double fl[3], w[3][2];
                int64_t i0[3];
                for (int a = 0; a < 3; a++) {
                    fl[a] = floor(src[a]);
                    i0[a] = (int64_t)fl[a];
                    w[a][1] = src[a] - fl[a];
                    w[a][0] = 1 - w[a][1];
                }
                for (int ch = 0; ch < C; ch++) {
                    const float *im = c->image + ch * cn;
                    double acc = 0;
                    for (int dz = 0; dz < 2; dz++) {
                        int64_t iz = i0[0] + dz;
                        if (w[0][dz] == 0 || iz < 0 || iz >= S0) continue;
                        for (int dy = 0; dy < 2; dy++) {
                            int64_t iy = i0[1] + dy;
                            if (w[1][dy] == 0 || iy < 0 || iy >= S1) continue;
                            for (int dx = 0; dx < 2; dx++) {
                                int64_t ix = i0[2] + dx;
                                if (w[2][dx] == 0 || ix < 0 || ix >= S2) continue;
                                acc += w[0][dz] * w[1][dy] * w[2][dx] * im[(iz * S1 + iy) * S2 + ix];
                            }
                        }
                    }
                    img[ch * n + o] = (float)acc;
                }
            }
    free(disp);

    /* intensity, in list order */
    unsigned plane = rank == 3 ? 7u : 6u;   /* z = 1, y = 2, x = 4 */
    for (int i = 0; i < b->spec.naugment; i++) {
        const TrainCall *tc = &b->augment[i];
        int pi = 0;
        AugKind kd = aug_kind(tc->name, &pi);
        if (kd == A_MIRROR || kd == A_ROTATE || kd == A_SCALE || kd == A_ELASTIC) continue;
        RefRng r = stream(ss, 1 + i);
        if (!(ref_rng_uniform(&r) < tc->num[pi])) continue;
        switch (kd) {
        case A_NOISE: {
            double sd = sqrt(unif(&r, tc->lo, tc->hi));   /* the drawn value is the variance */
            for (int64_t v = 0; v < (int64_t)C * n; v++) img[v] = (float)(img[v] + sd * ref_rng_normal(&r));
            break;
        }
        case A_BLUR:
            for (int ch = 0; ch < C; ch++) {
                if (!(ref_rng_uniform(&r) < P_PER_CHANNEL)) continue;
                double sg[3] = { 0, 0, 0 };
                for (int a = (rank == 2); a < 3; a++) sg[a] = unif(&r, tc->lo, tc->hi);
                aug_blur(img + ch * n, P, sg);
            }
            break;
        case A_BRIGHTNESS:
            for (int ch = 0; ch < C; ch++) {
                double f = draw_bg(&r, tc->lo, tc->hi);
                for (int64_t v = 0; v < n; v++) img[ch * n + v] = (float)(img[ch * n + v] * f);
            }
            break;
        case A_CONTRAST:
            for (int ch = 0; ch < C; ch++) aug_contrast(img + ch * n, n, draw_bg(&r, tc->lo, tc->hi));
            break;
        case A_LOWRES:
            for (int ch = 0; ch < C; ch++) {
                if (!(ref_rng_uniform(&r) < P_PER_CHANNEL)) continue;
                aug_lowres(img + ch * n, P, unif(&r, tc->lo, tc->hi), plane);
            }
            break;
        case A_GAMMA:
            for (int ch = 0; ch < C; ch++) aug_gamma(img + ch * n, n, draw_bg(&r, tc->lo, tc->hi), tc->num[2] != 0);
            break;
        default:
            break;
        }
    }

    /* mirroring last: each listed axis with probability p */
    for (int i = 0; i < b->spec.naugment; i++) {
        const TrainCall *tc = &b->augment[i];
        int pi = 0;
        if (aug_kind(tc->name, &pi) != A_MIRROR) continue;
        RefRng r = stream(ss, 1 + i);
        unsigned flip = 0;
        for (int a = 0; a < rank; a++) {
            double u = ref_rng_uniform(&r);
            if ((tc->axes >> a) & 1u && u < tc->num[pi]) flip |= 1u << (a + (rank == 2));
        }
        if (flip) aug_mirror(img, lab, C, P, flip);
    }
}

void batcher_batch(const Batcher *b, int64_t k, float *images, int32_t *labels)
{
    for (int j = 0; j < b->spec.batch; j++)
        make_sample(b, k, j, images + (int64_t)j * b->C * b->pvox, labels + (int64_t)j * b->pvox);
}

size_t batcher_image_count(const Batcher *b) { return (size_t)b->spec.batch * (size_t)b->C * (size_t)b->pvox; }
size_t batcher_label_count(const Batcher *b) { return (size_t)b->spec.batch * (size_t)b->pvox; }

static void *worker(void *arg)
{
    Batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->stop && b->next_claim >= b->consumed + b->nslots) pthread_cond_wait(&b->cv, &b->mu);
        if (b->stop) break;
        int64_t k = b->next_claim++;
        int slot = (int)(k % b->nslots);
        pthread_mutex_unlock(&b->mu);
        batcher_batch(b, k, b->simg[slot], b->slab[slot]);
        pthread_mutex_lock(&b->mu);
        b->slot_k[slot] = k;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int64_t batcher_next(Batcher *b, float *images, int32_t *labels)
{
    if (b->threads == 0) {
        int64_t k = b->consumed++;
        batcher_batch(b, k, images, labels);
        return k;
    }
    pthread_mutex_lock(&b->mu);
    int64_t k = b->consumed;
    int slot = (int)(k % b->nslots);
    while (b->slot_k[slot] != k) pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    memcpy(images, b->simg[slot], batcher_image_count(b) * sizeof(float));
    memcpy(labels, b->slab[slot], batcher_label_count(b) * sizeof(int32_t));
    pthread_mutex_lock(&b->mu);
    b->slot_k[slot] = -1;
    b->consumed++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return k;
}

void batcher_free(Batcher *b)
{
    if (!b) return;
    if (b->th) {
        pthread_mutex_lock(&b->mu);
        b->stop = true;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        for (int t = 0; t < b->threads; t++) pthread_join(b->th[t], NULL);
        free(b->th);
    }
    if (b->threads > 0) {
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->cv);
    }
    for (int s = 0; s < b->nslots; s++) {
        if (b->simg) free(b->simg[s]);
        if (b->slab) free(b->slab[s]);
    }
    free(b->simg);
    free(b->slab);
    free(b->slot_k);
    for (int i = 0; b->idx && i < b->ds.ncases; i++) {
        CaseIndex *ix = &b->idx[i];
        for (int k = 0; ix->own && k < b->ds.nclasses; k++) free(ix->own[k]);
        free(ix->own);
        free(ix->own_n);
        free(ix->count);
    }
    free(b->idx);
    for (int k = 0; b->class_cases && k < b->ds.nclasses; k++) free(b->class_cases[k]);
    free(b->class_cases);
    free(b->nclass_cases);
    free(b->augment);
    free(b);
}

/* Class counts and (unless given) locations of every case. */
static bool index_cases(Batcher *b)
{
    int ncl = b->ds.nclasses;
    b->idx = calloc((size_t)b->ds.ncases, sizeof *b->idx);
    b->class_cases = calloc((size_t)ncl, sizeof *b->class_cases);
    b->nclass_cases = calloc((size_t)ncl, sizeof *b->nclass_cases);
    if (!b->idx || !b->class_cases || !b->nclass_cases) return false;
    for (int k = 0; k < ncl; k++)
        if (!(b->class_cases[k] = calloc((size_t)b->ds.ncases, sizeof(int)))) return false;
    for (int i = 0; i < b->ds.ncases; i++) {
        const AugCase *c = &b->ds.cases[i];
        CaseIndex *ix = &b->idx[i];
        int64_t n = c->shape[0] * c->shape[1] * c->shape[2];
        if (!(ix->count = calloc((size_t)ncl, sizeof *ix->count))) return false;
        for (int64_t v = 0; v < n; v++)
            if (c->labels[v] < ncl) ix->count[c->labels[v]]++;
        if (c->locs) {
            ix->locs = c->locs;
            ix->nlocs = c->nlocs;
            for (int k = 1; k < ncl; k++) {
                if (c->nlocs[k] < 0 || (c->nlocs[k] > 0 && !c->locs[k])) return false;
                for (int64_t q = 0; q < c->nlocs[k]; q++)
                    if (c->locs[k][q] < 0 || c->locs[k][q] >= n) return false;
            }
        } else {
            ix->own = calloc((size_t)ncl, sizeof *ix->own);
            ix->own_n = calloc((size_t)ncl, sizeof *ix->own_n);
            if (!ix->own || !ix->own_n) return false;
            for (int k = 1; k < ncl; k++)
                if (ix->count[k] && !(ix->own[k] = malloc(sizeof(int64_t) * (size_t)ix->count[k]))) return false;
            for (int64_t v = 0; v < n; v++) {
                int k = c->labels[v];
                if (k >= 1 && k < ncl) ix->own[k][ix->own_n[k]++] = v;
            }
            ix->locs = (const int64_t *const *)ix->own;
            ix->nlocs = ix->own_n;
        }
        for (int k = 0; k < ncl; k++) {
            int64_t have = k == 0 ? ix->count[0] : ix->nlocs[k];
            if (have > 0) b->class_cases[k][b->nclass_cases[k]++] = i;
        }
    }
    return true;
}

Batcher *batcher_new(const AugDataset *ds, const AugSpec *spec, int threads, uint64_t seed)
{
    if (!aug_check(ds, spec, NULL, 0)) return NULL;
    Batcher *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->ds = *ds;
    b->spec = *spec;
    b->seed = seed;
    b->C = ds->cases[0].nchannels;
    b->threads = threads < 0 ? 0 : threads > 64 ? 64 : threads;
    if (spec->rank == 2) {
        b->P[0] = 1; b->P[1] = spec->patch[0]; b->P[2] = spec->patch[1];
    } else
        memcpy(b->P, spec->patch, sizeof b->P);
    b->pvox = b->P[0] * b->P[1] * b->P[2];
    if (spec->naugment > 0) {
        if (!(b->augment = malloc(sizeof *b->augment * (size_t)spec->naugment))) goto fail;
        memcpy(b->augment, spec->augment, sizeof *b->augment * (size_t)spec->naugment);
    }
    b->spec.augment = b->augment;
    if (!index_cases(b)) goto fail;
    if (b->threads > 0) {
        b->nslots = 2 * b->threads < 4 ? 4 : 2 * b->threads;
        b->simg = calloc((size_t)b->nslots, sizeof *b->simg);
        b->slab = calloc((size_t)b->nslots, sizeof *b->slab);
        b->slot_k = malloc(sizeof *b->slot_k * (size_t)b->nslots);
        if (!b->simg || !b->slab || !b->slot_k) goto fail;
        for (int s = 0; s < b->nslots; s++) {
            b->slot_k[s] = -1;
            b->simg[s] = malloc(sizeof(float) * batcher_image_count(b));
            b->slab[s] = malloc(sizeof(int32_t) * batcher_label_count(b));
            if (!b->simg[s] || !b->slab[s]) goto fail;
        }
        pthread_mutex_init(&b->mu, NULL);
        pthread_cond_init(&b->cv, NULL);
        if (!(b->th = calloc((size_t)b->threads, sizeof *b->th))) goto fail_threads;
        for (int t = 0; t < b->threads; t++)
            if (pthread_create(&b->th[t], NULL, worker, b) != 0) {
                b->threads = t;   /* join those started */
                goto fail_threads;
            }
    }
    return b;
fail_threads:
    if (b->threads == 0) {   /* none started: batcher_free must still destroy the mutex */
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->cv);
        free(b->th);
        b->th = NULL;
    }
    batcher_free(b);
    return NULL;
fail:
    b->threads = 0;
    batcher_free(b);
    return NULL;
}
