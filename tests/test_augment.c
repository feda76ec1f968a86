/* test_augment.c — patch sampling, augmentation and the batch producer
 * (runtime/augment.c).  Recipes are compiled from real train blocks, so the
 * TrainCalls are laid out exactly as compiler/train.c fills them. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "ref.h"
#include "support.h"

/* ---- recipes ------------------------------------------------------------ */

typedef struct {
    Diag d;
    Program *p;
    Graph *g;
    TrainSpec *ts;
    Protocol *pr;
    AugSpec spec;
} Recipe;

/* A train block on a tiny net: `fields` are extra train fields. */
static Recipe *recipe(int rank, const char *fields)
{
    char text[2048];
    snprintf(text, sizeof text,
             "net n {\n  input image\n  output logits = conv(3, 1)(image)\n}\n"
             "protocol p {\n  size %s\n  classes 3\n}\n"
             "train n on p {\n  loss ce(logits, labels)\n%s\n}\n",
             rank == 2 ? "32 x 32" : "16 x 16 x 16", fields);
    Recipe *r = calloc(1, sizeof *r);
    diag_init(&r->d, stderr);
    r->p = program_from_text(&r->d, "aug.net", text, strlen(text));
    ck_assert_ptr_nonnull(r->p);
    CompileOptions co = { .train = true, .protocol_out = &r->pr, .train_out = &r->ts };
    r->g = netc_compile(r->p, &co);
    ck_assert_msg(r->g && r->d.nerrors == 0 && r->ts, "recipe does not compile:\n%s", text);
    aug_spec_from_train(&r->spec, r->ts);
    return r;
}

static void recipe_free(Recipe *r)
{
    graph_free(r->g);
    train_free(r->ts);
    protocol_free(r->pr);
    program_free(r->p);
    diag_free(&r->d);
    free(r);
}

/* ---- synthetic cases ------------------------------------------------------ */

typedef struct {
    AugCase c;
    float *img;
    uint8_t *lab;
} Vol;

/* Channel c: a gradient plus 10 c; labels: a sphere of class 1 (radius r1)
 * at `ctr`, and (if r2 > 0) a sphere of class 2 at `ctr2`. */
static void make_case(Vol *t, int C, int64_t Z, int64_t Y, int64_t X, const double ctr[3], double r1,
                      const double ctr2[3], double r2)
{
    memset(t, 0, sizeof *t);
    int64_t n = Z * Y * X;
    t->img = malloc(sizeof(float) * (size_t)(C * n));
    t->lab = calloc((size_t)n, 1);
    for (int64_t z = 0; z < Z; z++)
        for (int64_t y = 0; y < Y; y++)
            for (int64_t x = 0; x < X; x++) {
                int64_t i = (z * Y + y) * X + x;
                for (int c = 0; c < C; c++) t->img[c * n + i] = (float)(0.05 * x + 0.03 * y + 0.07 * z + 10 * c);
                double d1 = (z - ctr[0]) * (z - ctr[0]) + (y - ctr[1]) * (y - ctr[1]) + (x - ctr[2]) * (x - ctr[2]);
                if (d1 <= r1 * r1) t->lab[i] = 1;
                if (r2 > 0) {
                    double d2 = (z - ctr2[0]) * (z - ctr2[0]) + (y - ctr2[1]) * (y - ctr2[1]) +
                                (x - ctr2[2]) * (x - ctr2[2]);
                    if (d2 <= r2 * r2) t->lab[i] = 2;
                }
            }
    t->c.nchannels = C;
    t->c.shape[0] = Z; t->c.shape[1] = Y; t->c.shape[2] = X;
    t->c.image = t->img;
    t->c.labels = t->lab;
}

static void tcase_free(Vol *t)
{
    free(t->img);
    free(t->lab);
}

typedef struct {
    float *img;
    int32_t *lab;
    size_t ni, nl;
} Buf;

static Buf buf_new(const Batcher *b)
{
    Buf u = { NULL, NULL, batcher_image_count(b), batcher_label_count(b) };
    u.img = malloc(sizeof(float) * u.ni);
    u.lab = malloc(sizeof(int32_t) * u.nl);
    return u;
}

static void buf_free(Buf *u)
{
    free(u->img);
    free(u->lab);
}

static int64_t pvox(const AugSpec *s)
{
    return s->rank == 2 ? s->patch[0] * s->patch[1] : s->patch[0] * s->patch[1] * s->patch[2];
}

/* ---- building blocks -------------------------------------------------------- */

START_TEST(mirror_twice_is_identity)
{
    int64_t shape[3] = { 3, 4, 5 };
    int64_t n = 60;
    float img[120], ref[120];
    int32_t lab[60], lref[60];
    for (int i = 0; i < 120; i++) ref[i] = img[i] = (float)(i * 7 % 13);
    for (int i = 0; i < 60; i++) lref[i] = lab[i] = i % 3;
    for (unsigned axes = 1; axes < 8; axes++) {
        aug_mirror(img, lab, 2, shape, axes);
        ck_assert(memcmp(img, ref, sizeof img) != 0);
        aug_mirror(img, lab, 2, shape, axes);
        ck_assert(memcmp(img, ref, sizeof img) == 0);
        ck_assert(memcmp(lab, lref, sizeof lab) == 0);
    }
    aug_mirror(img, lab, 2, shape, 4);   /* x only */
    for (int64_t z = 0; z < 3; z++)
        for (int64_t y = 0; y < 4; y++)
            for (int64_t x = 0; x < 5; x++) {
                ck_assert(img[n + (z * 4 + y) * 5 + x] == ref[n + (z * 4 + y) * 5 + (4 - x)]);
                ck_assert(lab[(z * 4 + y) * 5 + x] == lref[(z * 4 + y) * 5 + (4 - x)]);
            }
}
END_TEST

static void stats(const float *x, int64_t n, double *m, double *sd, double *lo, double *hi)
{
    double s = 0, q = 0;
    *lo = INFINITY; *hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        if (x[i] < *lo) *lo = x[i];
        if (x[i] > *hi) *hi = x[i];
    }
    *m = s / (double)n;
    for (int64_t i = 0; i < n; i++) q += (x[i] - *m) * (x[i] - *m);
    *sd = sqrt(q / (double)n);
}

START_TEST(intensity_building_blocks)
{
    enum { N = 1000 };
    float x[N], y[N];
    RefRng r = { 7 };
    for (int i = 0; i < N; i++) x[i] = (float)(ref_rng_normal(&r) * 2 + 3 + (i % 10 == 0 ? 5 : 0));
    double m, sd, lo, hi, m2, sd2, lo2, hi2;
    stats(x, N, &m, &sd, &lo, &hi);

    /* contrast: factor 1 is the identity; < 1 keeps the mean; always within [min, max] */
    memcpy(y, x, sizeof x);
    aug_contrast(y, N, 1.0);
    for (int i = 0; i < N; i++) ck_assert(fabsf(y[i] - x[i]) < 1e-5f);
    memcpy(y, x, sizeof x);
    aug_contrast(y, N, 0.75);
    stats(y, N, &m2, &sd2, &lo2, &hi2);
    ck_assert(fabs(m2 - m) < 1e-5 && fabs(sd2 - 0.75 * sd) < 1e-4);
    memcpy(y, x, sizeof x);
    aug_contrast(y, N, 1.25);
    stats(y, N, &m2, &sd2, &lo2, &hi2);
    ck_assert(lo2 >= lo && hi2 <= hi && sd2 > sd);

    /* gamma (plain and inverted): statistics retained, order preserved, gamma 1 ~ identity */
    for (int inv = 0; inv < 2; inv++) {
        memcpy(y, x, sizeof x);
        aug_gamma(y, N, 1.0, inv);
        for (int i = 0; i < N; i++) ck_assert_msg(fabsf(y[i] - x[i]) < 1e-4f, "%g %g", y[i], x[i]);
        for (int g = 0; g < 2; g++) {
            memcpy(y, x, sizeof x);
            aug_gamma(y, N, g ? 1.5 : 0.7, inv);
            stats(y, N, &m2, &sd2, &lo2, &hi2);
            ck_assert_msg(fabs(m2 - m) < 1e-4 && fabs(sd2 - sd) < 1e-4, "gamma changed mean/std");
            for (int i = 1; i < N; i++)
                ck_assert((x[i] < x[0]) == (y[i] < y[0]) || x[i] == x[0]);
            ck_assert(fabsf(y[5] - x[5]) > 1e-4f);   /* it did something */
        }
    }
    float a[N], b2[N];
    memcpy(a, x, sizeof x); aug_gamma(a, N, 1.5, false);
    memcpy(b2, x, sizeof x); aug_gamma(b2, N, 1.5, true);
    ck_assert(memcmp(a, b2, sizeof a) != 0);

    /* lowres zoom 1 is the identity; blur of a constant is the constant */
    int64_t shape[3] = { 4, 10, 25 };
    memcpy(y, x, sizeof x);
    aug_lowres(y, shape, 1.0, 7);
    ck_assert(memcmp(y, x, sizeof x) == 0);
    aug_lowres(y, shape, 0.5, 6);
    stats(y, N, &m2, &sd2, &lo2, &hi2);
    ck_assert(sd2 < sd && lo2 >= lo && hi2 <= hi);
    for (int i = 0; i < N; i++) y[i] = 2.5f;
    double sg[3] = { 1, 0.7, 0.5 };
    aug_blur(y, shape, sg);
    for (int i = 0; i < N; i++) ck_assert(fabsf(y[i] - 2.5f) < 1e-5f);
    memcpy(y, x, sizeof x);
    aug_blur(y, shape, sg);
    stats(y, N, &m2, &sd2, &lo2, &hi2);
    ck_assert(sd2 < 0.8 * sd);
}
END_TEST

/* ---- the pipeline ----------------------------------------------------------- */

static Batcher *mk(const Vol *cases, int n, const AugSpec *spec, int threads, uint64_t seed, AugDataset *ds)
{
    static AugCase arr[8];
    for (int i = 0; i < n; i++) arr[i] = cases[i].c;
    ds->cases = arr;
    ds->ncases = n;
    ds->nclasses = 3;
    char err[256] = "";
    ck_assert_msg(aug_check(ds, spec, err, sizeof err), "%s", err);
    Batcher *b = batcher_new(ds, spec, threads, seed);
    ck_assert_ptr_nonnull(b);
    return b;
}

START_TEST(rotate0_scale1_is_identity)
{
    Vol tc[2];
    double c1[3] = { 10, 12, 14 }, c2[3] = { 4, 5, 6 };
    make_case(&tc[0], 2, 20, 24, 28, c1, 5, c2, 2);
    make_case(&tc[1], 2, 18, 30, 22, c2, 3, NULL, 0);
    Recipe *r = recipe(3, "  batch 3\n  patch 12 x 16 x 16\n  augment rotate(0 .. 0, p = 1), scale(1 .. 1, p = 1)\n");
    AugSpec plain = r->spec;
    plain.naugment = 0;
    AugDataset ds;
    Batcher *a = mk(tc, 2, &r->spec, 0, 99, &ds), *p = mk(tc, 2, &plain, 0, 99, &ds);
    Buf u = buf_new(a), v = buf_new(p);
    int64_t n = pvox(&r->spec);
    for (int k = 0; k < 20; k++) {
        batcher_batch(a, k, u.img, u.lab);
        batcher_batch(p, k, v.img, v.lab);
        for (size_t i = 0; i < u.ni; i++) ck_assert_msg(fabsf(u.img[i] - v.img[i]) <= 1e-6f, "batch %d at %zu", k, i);
        ck_assert(memcmp(u.lab, v.lab, sizeof(int32_t) * u.nl) == 0);
        /* layout N x C x patch: channel 1 = channel 0 + 10 inside the case */
        for (int j = 0; j < 3; j++)
            for (int64_t q = 0; q < n; q++)
                ck_assert(fabsf(v.img[(j * 2 + 1) * n + q] - v.img[j * 2 * n + q] - 10) < 1e-4f);
    }
    buf_free(&u); buf_free(&v);
    batcher_free(a); batcher_free(p);
    recipe_free(r);
    tcase_free(&tc[0]); tcase_free(&tc[1]);
}
END_TEST

/* A 90 degree in-plane rotation of 2D slices of a 3D case: out[y][x] =
 * slice[x][7 - y], and every value comes from one slice (value / 100). */
START_TEST(rotate90_2d_slices)
{
    Vol t;
    double c1[3] = { 2, 2, 5 };
    make_case(&t, 1, 5, 8, 8, c1, 2, NULL, 0);
    for (int64_t z = 0; z < 5; z++)
        for (int64_t i = 0; i < 64; i++) t.img[z * 64 + i] = (float)(z * 100 + i);
    for (int64_t i = 0; i < 5 * 64; i++) t.lab[i] = (uint8_t)(i % 64 % 8 > i % 64 / 8 ? 1 : 0);
    Recipe *r = recipe(2, "  batch 2\n  patch 8 x 8\n  augment rotate(90 .. 90, p = 1)\n  sampling random\n");
    AugDataset ds;
    Batcher *b = mk(&t, 1, &r->spec, 0, 5, &ds);
    Buf u = buf_new(b);
    int seen = 0;
    for (int k = 0; k < 10; k++) {
        batcher_batch(b, k, u.img, u.lab);
        for (int j = 0; j < 2; j++) {
            const float *o = u.img + j * 64;
            const int32_t *l = u.lab + j * 64;
            int z = (int)(o[0] / 100);
            seen |= 1 << z;
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) {
                    float want = (float)(z * 100 + x * 8 + (7 - y));
                    ck_assert_msg(fabsf(o[y * 8 + x] - want) < 1e-3f, "(%d,%d): %g, want %g", y, x, o[y * 8 + x], want);
                    ck_assert_int_eq(l[y * 8 + x], (7 - y) > x ? 1 : 0);
                }
        }
    }
    ck_assert_msg(seen > 1 && (seen & ~31) == 0, "slices seen: %x", seen);
    buf_free(&u);
    batcher_free(b);
    recipe_free(r);
    tcase_free(&t);
}
END_TEST

START_TEST(labels_stay_in_set)
{
    Vol t;
    double c1[3] = { 8, 10, 12 }, c2[3] = { 3, 4, 4 };
    make_case(&t, 1, 16, 20, 24, c1, 5, c2, 3);
    for (int64_t i = 0; i < 16 * 20 * 24; i += 97) t.lab[i] = 255;   /* an ignore label */
    Recipe *r = recipe(3, "  batch 2\n  patch 12 x 12 x 12\n"
                          "  augment rotate(p = 1), scale(p = 1), elastic(0 .. 200, 4, p = 1), noise, blur, "
                          "brightness, contrast, lowres, gamma, gamma(invert), mirror\n");
    AugDataset ds;
    Batcher *b = mk(&t, 1, &r->spec, 0, 11, &ds);
    Buf u = buf_new(b);
    for (int k = 0; k < 10; k++) {
        batcher_batch(b, k, u.img, u.lab);
        for (size_t i = 0; i < u.nl; i++)
            ck_assert_msg(u.lab[i] == 0 || u.lab[i] == 1 || u.lab[i] == 2 || u.lab[i] == 255, "label %d", u.lab[i]);
        for (size_t i = 0; i < u.ni; i++) ck_assert(isfinite(u.img[i]));
    }
    buf_free(&u);
    batcher_free(b);
    recipe_free(r);
    tcase_free(&t);
}
END_TEST

/* p = 0: never; p = 1: always.  Brightness 2 .. 2 doubles; mirror(x) flips. */
START_TEST(probabilities_and_brightness)
{
    Vol t;
    double c1[3] = { 8, 10, 12 };
    make_case(&t, 2, 16, 20, 24, c1, 5, NULL, 0);
    const char *fields[] = {
        "  batch 4\n  patch 8 x 8 x 8\n  augment brightness(2 .. 2, p = 0), mirror(p = 0)\n",
        "  batch 4\n  patch 8 x 8 x 8\n  augment brightness(2 .. 2, p = 1)\n",
        "  batch 4\n  patch 8 x 8 x 8\n  augment mirror(x, p = 1)\n",
    };
    Recipe *base = recipe(3, fields[1]);
    AugSpec plain = base->spec;
    plain.naugment = 0;
    AugDataset ds;
    Batcher *p = mk(&t, 1, &plain, 0, 3, &ds);
    Buf v = buf_new(p);
    for (int f = 0; f < 3; f++) {
        Recipe *r = recipe(3, fields[f]);
        Batcher *b = mk(&t, 1, &r->spec, 0, 3, &ds);
        Buf u = buf_new(b);
        for (int k = 0; k < 30; k++) {
            batcher_batch(b, k, u.img, u.lab);
            batcher_batch(p, k, v.img, v.lab);
            if (f == 0) {
                ck_assert(memcmp(u.img, v.img, sizeof(float) * u.ni) == 0);
            } else if (f == 1) {
                for (size_t i = 0; i < u.ni; i++) ck_assert(u.img[i] == 2 * v.img[i]);
            } else {
                int64_t P3[3] = { 8, 8, 8 };
                for (int j = 0; j < 4; j++) aug_mirror(v.img + j * 2 * 512, v.lab + j * 512, 2, P3, 4);
                ck_assert(memcmp(u.img, v.img, sizeof(float) * u.ni) == 0);
            }
            ck_assert(memcmp(u.lab, v.lab, sizeof(int32_t) * u.nl) == 0);
        }
        buf_free(&u);
        batcher_free(b);
        recipe_free(r);
    }
    buf_free(&v);
    batcher_free(p);
    recipe_free(base);
    tcase_free(&t);
}
END_TEST

START_TEST(noise_has_its_variance)
{
    Vol t;
    double c1[3] = { 0, 30, 30 };
    make_case(&t, 1, 1, 64, 64, c1, 10, NULL, 0);
    Recipe *r = recipe(2, "  batch 4\n  patch 48 x 48\n  augment noise(0.05 .. 0.05, p = 1)\n");
    AugSpec plain = r->spec;
    plain.naugment = 0;
    AugDataset ds;
    Batcher *b = mk(&t, 1, &r->spec, 0, 8, &ds), *p = mk(&t, 1, &plain, 0, 8, &ds);
    Buf u = buf_new(b), v = buf_new(p);
    double s = 0, q = 0;
    int64_t cnt = 0;
    for (int k = 0; k < 16; k++) {
        batcher_batch(b, k, u.img, u.lab);
        batcher_batch(p, k, v.img, v.lab);
        for (size_t i = 0; i < u.ni; i++) {
            double d = (double)u.img[i] - v.img[i];
            s += d;
            q += d * d;
            cnt++;
        }
    }
    double mean = s / (double)cnt, var = q / (double)cnt - mean * mean;
    ck_assert_msg(fabs(mean) < 0.005 && fabs(var - 0.05) < 0.05 * 0.03, "mean %g variance %g", mean, var);
    buf_free(&u); buf_free(&v);
    batcher_free(b); batcher_free(p);
    recipe_free(r);
    tcase_free(&t);
}
END_TEST

static bool has_fg(const int32_t *l, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (l[i] == 1 || l[i] == 2) return true;
    return false;
}

START_TEST(sampling_statistics)
{
    Vol t[2];
    double c1[3] = { 30, 10, 28 }, c2[3] = { 8, 30, 8 };
    make_case(&t[0], 1, 40, 40, 40, c1, 3, c2, 2);
    make_case(&t[1], 1, 40, 40, 40, c2, 2, NULL, 0);
    const char *modes[] = { "sampling random", "sampling foreground(0.33)", "foreground 0.5", "sampling foreground(1)",
                            "sampling balanced" };
    double frac[5];
    for (int m = 0; m < 5; m++) {
        char f[256];
        snprintf(f, sizeof f, "  batch 3\n  patch 8 x 8 x 8\n  augment mirror(p = 0)\n  %s\n", modes[m]);
        Recipe *r = recipe(3, f);
        AugDataset ds;
        Batcher *b = mk(t, 2, &r->spec, 0, 21, &ds);
        Buf u = buf_new(b);
        int hit = 0, total = 0, cls[3] = { 0, 0, 0 };
        for (int k = 0; k < 200; k++) {
            batcher_batch(b, k, u.img, u.lab);
            for (int j = 0; j < 3; j++) {
                const int32_t *l = u.lab + j * 512;
                bool h = has_fg(l, 512);
                hit += h;
                total++;
                /* nnU-Net's forced samples: the last 3 - round(0.67 * 3) = 1 (0.33), 3 - round(1.5) = 1 (0.5) */
                if ((m == 1 || m == 2) && j == 2) ck_assert(h);
                if (m == 3) ck_assert(h);
                if (m == 4) cls[l[(4 * 8 + 4) * 8 + 4]]++;   /* the centre voxel is of the chosen class */
            }
        }
        frac[m] = (double)hit / total;
        if (m == 4)
            for (int c = 0; c < 3; c++)
                ck_assert_msg(fabs(cls[c] / 600.0 - 1.0 / 3) < 0.07, "balanced: class %d in %d of 600", c, cls[c]);
        buf_free(&u);
        batcher_free(b);
        recipe_free(r);
    }
    ck_assert_msg(frac[0] < 0.2, "random: %g", frac[0]);
    ck_assert_msg(frac[1] >= 0.33 && frac[2] >= 0.33, "foreground: %g %g", frac[1], frac[2]);
    ck_assert(frac[3] == 1.0);
    tcase_free(&t[0]);
    tcase_free(&t[1]);
}
END_TEST

START_TEST(border_padding)
{
    Vol t;
    double c1[3] = { 2, 3, 3 };
    make_case(&t, 1, 4, 6, 6, c1, 2, NULL, 0);
    for (int pass = 0; pass < 2; pass++) {
        Recipe *r = recipe(pass ? 2 : 3, pass ? "  batch 2\n  patch 10 x 10\n  augment mirror(p = 0)\n"
                                               : "  batch 2\n  patch 8 x 10 x 10\n  augment mirror(p = 0)\n");
        r->spec.pad_label = pass ? 255 : 0;
        AugDataset ds;
        Batcher *b = mk(&t, 1, &r->spec, 0, 1, &ds);
        Buf u = buf_new(b);
        int64_t Z = pass ? 1 : 8, n = Z * 100;
        for (int k = 0; k < 5; k++) {
            batcher_batch(b, k, u.img, u.lab);
            for (int j = 0; j < 2; j++)
                for (int64_t z = 0; z < Z; z++)
                    for (int64_t y = 0; y < 10; y++)
                        for (int64_t x = 0; x < 10; x++) {
                            int64_t o = j * n + (z * 10 + y) * 10 + x;
                            /* the case is centred: offsets 2 (z) and 2 (y, x); 2D: some slice */
                            int64_t cz = pass ? -1 : z - 2, cy = y - 2, cx = x - 2;
                            bool in = cy >= 0 && cy < 6 && cx >= 0 && cx < 6 && (pass || (cz >= 0 && cz < 4));
                            if (!in) {
                                ck_assert(u.img[o] == 0.0f);
                                ck_assert_int_eq(u.lab[o], pass ? 255 : 0);
                            } else if (!pass) {
                                int64_t ci = (cz * 6 + cy) * 6 + cx;
                                ck_assert(u.img[o] == t.img[ci]);
                                ck_assert_int_eq(u.lab[o], t.lab[ci]);
                            } else {
                                int64_t sl = -1;
                                for (int64_t s = 0; s < 4; s++)
                                    if (u.img[j * n + 22] == t.img[s * 36]) sl = s;
                                ck_assert(sl >= 0);
                                ck_assert(u.img[o] == t.img[(sl * 6 + cy) * 6 + cx]);
                            }
                        }
        }
        buf_free(&u);
        batcher_free(b);
        recipe_free(r);
    }
    tcase_free(&t);
}
END_TEST

START_TEST(deterministic_across_threads)
{
    Vol t[2];
    double c1[3] = { 8, 10, 12 }, c2[3] = { 4, 4, 4 };
    make_case(&t[0], 2, 16, 20, 24, c1, 5, c2, 3);
    make_case(&t[1], 2, 12, 26, 18, c2, 3, NULL, 0);
    /* nnU-Net's default pipeline (no augment field) + elastic */
    Recipe *r = recipe(3, "  batch 3\n  patch 10 x 12 x 12\n");
    Recipe *r2 = recipe(3, "  batch 3\n  patch 10 x 12 x 12\n"
                           "  augment elastic(0 .. 200, 5, p = 0.5), rotate(p = 0.5), noise(p = 0.5), mirror\n");
    ck_assert_int_eq(r->spec.naugment, 10);
    for (int rr = 0; rr < 2; rr++) {
        const AugSpec *spec = rr ? &r2->spec : &r->spec;
        enum { K = 12 };
        AugDataset ds;
        Batcher *ref = mk(t, 2, spec, 0, 1234, &ds);
        Buf want[K];
        for (int k = 0; k < K; k++) {
            want[k] = buf_new(ref);
            ck_assert_int_eq(batcher_next(ref, want[k].img, want[k].lab), k);
        }
        int threads[] = { 1, 4, 3 };
        Buf u = buf_new(ref);
        for (int ti = 0; ti < 3; ti++) {
            Batcher *b = mk(t, 2, spec, threads[ti], 1234, &ds);
            for (int k = 0; k < K; k++) {
                ck_assert_int_eq(batcher_next(b, u.img, u.lab), k);
                ck_assert_msg(memcmp(u.img, want[k].img, sizeof(float) * u.ni) == 0, "%d threads, batch %d", threads[ti], k);
                ck_assert(memcmp(u.lab, want[k].lab, sizeof(int32_t) * u.nl) == 0);
            }
            batcher_free(b);   /* with batches still in flight */
        }
        /* batcher_batch(k) is the k-th batch; another seed differs */
        batcher_batch(ref, 7, u.img, u.lab);
        ck_assert(memcmp(u.img, want[7].img, sizeof(float) * u.ni) == 0);
        Batcher *o = mk(t, 2, spec, 2, 1235, &ds);
        int differ = 0;
        for (int k = 0; k < K; k++) {
            batcher_next(o, u.img, u.lab);
            differ += memcmp(u.img, want[k].img, sizeof(float) * u.ni) != 0;
        }
        ck_assert_int_eq(differ, K);
        /* batches differ from one another */
        ck_assert(memcmp(want[0].img, want[1].img, sizeof(float) * u.ni) != 0);
        batcher_free(o);
        buf_free(&u);
        for (int k = 0; k < K; k++) buf_free(&want[k]);
        batcher_free(ref);
    }
    recipe_free(r);
    recipe_free(r2);
    tcase_free(&t[0]); tcase_free(&t[1]);
}
END_TEST

START_TEST(rejects_bad_input)
{
    Vol t;
    double c1[3] = { 2, 2, 2 };
    make_case(&t, 1, 4, 4, 4, c1, 1, NULL, 0);
    AugDataset ds = { &t.c, 1, 3 };
    AugSpec s = { .rank = 3, .patch = { 4, 4, 4 }, .batch = 2 };
    char err[256];
    ck_assert(aug_check(&ds, &s, err, sizeof err));
    TrainCall bad = { .name = "sharpen" };
    s.augment = &bad;
    s.naugment = 1;
    ck_assert(!aug_check(&ds, &s, err, sizeof err) && strstr(err, "sharpen"));
    ck_assert_ptr_null(batcher_new(&ds, &s, 2, 1));
    s.naugment = 0;
    s.rank = 4;
    ck_assert(!aug_check(&ds, &s, err, sizeof err));
    s.rank = 3;
    s.batch = 0;
    ck_assert(!aug_check(&ds, &s, err, sizeof err));
    s.batch = 1;
    ds.ncases = 0;
    ck_assert(!aug_check(&ds, &s, err, sizeof err));
    ck_assert_ptr_null(batcher_new(&ds, &s, 0, 1));
    ds.ncases = 1;
    s.sampling.name = "stratified";
    ck_assert(!aug_check(&ds, &s, err, sizeof err));
    tcase_free(&t);
}
END_TEST

/* Extreme but accepted parameters, tiny cases, no foreground: finite output, no crash. */
START_TEST(extreme_parameters)
{
    Vol t[2];
    double c1[3] = { 0, 0, 0 };
    make_case(&t[0], 3, 1, 1, 1, c1, 0, NULL, 0);
    make_case(&t[1], 3, 2, 3, 1, c1, 0, NULL, 0);
    memset(t[0].lab, 255, 1);
    memset(t[1].lab, 0, 6);
    const char *f[] = {
        "  batch 3\n  patch 3 x 4 x 5\n  augment rotate(-1000 .. 1000, p = 1), scale(0.001 .. 100, p = 1), "
        "elastic(0 .. 10000, 100, p = 1), noise(0 .. 100, p = 1), blur(0 .. 100, p = 1), brightness(0 .. 100, p = 1), "
        "contrast(0 .. 100, p = 1), lowres(0.001 .. 1, p = 1), gamma(0.001 .. 100, p = 1), "
        "gamma(0.001 .. 100, invert, p = 1), mirror(p = 1)\n  sampling foreground(1)\n",
        "  batch 2\n  patch 1 x 1 x 1\n  sampling balanced\n",
    };
    for (int i = 0; i < 2; i++) {
        Recipe *r = recipe(3, f[i]);
        AugDataset ds;
        Batcher *b = mk(t, 2, &r->spec, 2, 77, &ds);
        Buf u = buf_new(b);
        for (int k = 0; k < 20; k++) {
            batcher_next(b, u.img, u.lab);
            for (size_t q = 0; q < u.ni; q++) ck_assert(isfinite(u.img[q]));
            for (size_t q = 0; q < u.nl; q++) ck_assert(u.lab[q] == 0 || u.lab[q] == 255);
        }
        buf_free(&u);
        batcher_free(b);
        recipe_free(r);
    }
    tcase_free(&t[0]);
    tcase_free(&t[1]);
}
END_TEST

Suite *augment_suite(void)
{
    Suite *s = suite_create("augment");
    TCase *tc = tcase_create("augment");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, mirror_twice_is_identity);
    tcase_add_test(tc, intensity_building_blocks);
    tcase_add_test(tc, rotate0_scale1_is_identity);
    tcase_add_test(tc, rotate90_2d_slices);
    tcase_add_test(tc, labels_stay_in_set);
    tcase_add_test(tc, probabilities_and_brightness);
    tcase_add_test(tc, noise_has_its_variance);
    tcase_add_test(tc, sampling_statistics);
    tcase_add_test(tc, border_padding);
    tcase_add_test(tc, deterministic_across_threads);
    tcase_add_test(tc, rejects_bad_input);
    tcase_add_test(tc, extreme_parameters);
    suite_add_tcase(s, tc);
    return s;
}
