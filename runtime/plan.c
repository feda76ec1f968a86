/* plan.c — a dataset's fingerprint and the protocols nnU-Net's planning rules
 * give for it (plan.h, docs/plan.md). */
#define _POSIX_C_SOURCE 200809L
#include "plan.h"
#include "atomic_file.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "diag.h"

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

static char *dupstr(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double plan_percentile(const float *s, int64_t n, double q)
{
    if (n <= 0) return 0;
    double pos = q / 100.0 * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    double f = pos - (double)lo;
    return (double)s[lo] * (1 - f) + (double)s[hi] * f;
}

/* np.percentile of n doubles (copied and sorted) */
static double percentile_d(const double *v, int n, double q)
{
    if (n <= 0) return 0;
    double small[64], *s = n <= 64 ? small : malloc(sizeof(double) * (size_t)n);
    if (!s) return v[0];
    memcpy(s, v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    double pos = q / 100.0 * (double)(n - 1);
    int lo = (int)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    double f = pos - lo, r = s[lo] * (1 - f) + s[hi] * f;
    if (s != small) free(s);
    return r;
}

void plan_intensity_stats(float *v, int64_t n, PlanIntensity *out)
{
    int64_t nf = out->nforeground;
    memset(out, 0, sizeof *out);
    out->nforeground = nf;
    if (n <= 0) return;
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) sum += v[i];
    double mean = sum / (double)n;
    for (int64_t i = 0; i < n; i++) sq += ((double)v[i] - mean) * ((double)v[i] - mean);
    qsort(v, (size_t)n, sizeof(float), cmp_float);
    out->n = n;
    out->mean = mean;
    out->sd = sqrt(sq / (double)n);
    out->median = plan_percentile(v, n, 50);
    out->min = v[0];
    out->max = v[n - 1];
    out->p005 = plan_percentile(v, n, 0.5);
    out->p995 = plan_percentile(v, n, 99.5);
}

/* ---- fingerprint -------------------------------------------------------- */

void plan_fingerprint_free(PlanFingerprint *fp)
{
    if (!fp) return;
    for (int i = 0; i < fp->ncases; i++) free(fp->cases[i].name);
    free(fp->cases);
    for (int c = 0; c < fp->nchannels; c++) free(fp->channel_names[c]);
    for (int k = 0; k < fp->nclasses; k++) free(fp->class_names[k]);
    free(fp->dataset);
    free(fp->root);
    memset(fp, 0, sizeof *fp);
}

int plan_fingerprint(const char *dir, PlanFingerprint *fp, char *err, size_t errlen)
{
    memset(fp, 0, sizeof *fp);
    Dataset *ds = ds_open(dir, err, errlen);
    if (!ds) return -1;
    int rc = -1, C = ds->nchannels;
    float *samp[DS_MAX_CHANNELS] = { 0 };
    int64_t ns = 0, cap = 0;
    double *rel = NULL;
    if (ds->ntrain == 0) {
        failf(err, errlen, "%s: no training cases (imagesTr and labelsTr are empty)", dir);
        goto done;
    }
    if (ds->max_label + 1 > MAX_CLASSES) {
        failf(err, errlen, "%s: labels go up to %d; a protocol holds at most %d classes", dir, ds->max_label, MAX_CLASSES);
        goto done;
    }
    fp->dataset = dupstr(ds->name);
    fp->root = dupstr(ds->root);
    fp->nchannels = C;
    fp->nclasses = ds->max_label + 1;
    fp->cases = calloc((size_t)ds->ntrain, sizeof *fp->cases);
    rel = malloc(sizeof(double) * (size_t)ds->ntrain);
    if (!fp->dataset || !fp->root || !fp->cases || !rel) { failf(err, errlen, "out of memory"); goto done; }
    for (int c = 0; c < C; c++)
        if (!(fp->channel_names[c] = dupstr(ds->channel_names[c] ? ds->channel_names[c] : ""))) {
            failf(err, errlen, "out of memory");
            goto done;
        }
    for (int l = 0; l < ds->nlabels; l++) {
        int v = ds->label_values[l];
        if (v >= 0 && v < fp->nclasses && !fp->class_names[v] && !(fp->class_names[v] = dupstr(ds->label_names[l]))) {
            failf(err, errlen, "out of memory");
            goto done;
        }
    }
    /* crop only: keep the spacing, no normalization */
    DsParams p;
    Normalization none = { NORM_NONE, 0, 0 };
    ds_params_default(&p, &none);
    for (int k = 0; k < 3; k++) p.spacing[k] = 0;
    int64_t per_case = PLAN_FG_SAMPLES / ds->ntrain;
    if (per_case < 1) per_case = 1;
    for (int i = 0; i < ds->ntrain; i++) {
        const DsCase *dc = &ds->cases[i];
        PlanCase *pc = &fp->cases[i];
        if (!(pc->name = dupstr(dc->name))) { failf(err, errlen, "out of memory"); goto done; }
        fp->ncases = i + 1;
        if (ds_preprocess(ds, &p, NULL, i, err, errlen) != 0) goto done;
        const DsPrepped *pp = ds_case(ds, i);
        int64_t nvox = 1, ncrop = 1;
        for (int k = 0; k < 3; k++) {
            pc->spacing[k] = pp->geom.canon_spacing[k];
            pc->shape[k] = pp->geom.canon_shape[k];
            pc->crop_shape[k] = pp->geom.bbox_hi[k] - pp->geom.bbox_lo[k];
            nvox *= pc->shape[k];
            ncrop *= pc->crop_shape[k];
        }
        rel[i] = (double)ncrop / (double)nvox;
        /* foreground intensities inside the crop (pp->shape == crop shape) */
        int64_t n = pp->shape[0] * pp->shape[1] * pp->shape[2], nf = 0;
        if (pp->labels)
            for (int64_t v = 0; v < n; v++) nf += pp->labels[v] > 0;
        for (int c = 0; c < C; c++) fp->intensity[c].nforeground += nf;
        int64_t step = nf > per_case ? (nf + per_case - 1) / per_case : 1, take = (nf + step - 1) / step;
        if (ns + take > cap) {
            cap = (ns + take) * 2;
            for (int c = 0; c < C; c++) {
                float *w = realloc(samp[c], sizeof(float) * (size_t)cap);
                if (!w) { failf(err, errlen, "out of memory"); goto done; }
                samp[c] = w;
            }
        }
        int64_t seen = 0;
        for (int64_t v = 0; v < n && nf > 0; v++) {
            if (!(pp->labels[v] > 0)) continue;
            if (seen++ % step) continue;
            for (int c = 0; c < C; c++) samp[c][ns] = pp->image[(int64_t)c * n + v];
            ns++;
        }
        ds_release(ds, i);
    }
    for (int c = 0; c < C; c++) plan_intensity_stats(samp[c], ns, &fp->intensity[c]);
    fp->median_relative_size = percentile_d(rel, ds->ntrain, 50);
    rc = 0;
done:
    for (int c = 0; c < C; c++) free(samp[c]);
    free(rel);
    ds_free(ds);
    if (rc != 0) plan_fingerprint_free(fp);
    return rc;
}

static cJSON *arr3d(const double *v)
{
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; k < 3 && a; k++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[k]));
    return a;
}

static cJSON *arr3i(const int64_t *v)
{
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; k < 3 && a; k++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[k]));
    return a;
}

int plan_fingerprint_write_json(const PlanFingerprint *fp, const char *path, char *err, size_t errlen)
{
    cJSON *j = cJSON_CreateObject();
    if (!j) return failf(err, errlen, "out of memory");
    cJSON_AddStringToObject(j, "dataset", fp->dataset ? fp->dataset : "");
    cJSON_AddStringToObject(j, "folder", fp->root ? fp->root : "");
    cJSON_AddStringToObject(j, "axis_order", "z, y, x (canonical RAS: x to Right, y to Anterior, z to Superior)");
    cJSON_AddStringToObject(j, "foreground_sampling",
                            "every voxel with label > 0 inside the crop, up to 1e7 per channel; beyond that an even "
                            "stride per case of at most 1e7 / cases voxels");
    cJSON *names = cJSON_AddArrayToObject(j, "cases"), *sp = cJSON_AddArrayToObject(j, "spacings"),
          *sb = cJSON_AddArrayToObject(j, "shapes_before_crop"), *sa = cJSON_AddArrayToObject(j, "shapes_after_crop");
    for (int i = 0; i < fp->ncases; i++) {
        cJSON_AddItemToArray(names, cJSON_CreateString(fp->cases[i].name));
        cJSON_AddItemToArray(sp, arr3d(fp->cases[i].spacing));
        cJSON_AddItemToArray(sb, arr3i(fp->cases[i].shape));
        cJSON_AddItemToArray(sa, arr3i(fp->cases[i].crop_shape));
    }
    cJSON_AddNumberToObject(j, "median_relative_size_after_cropping", fp->median_relative_size);
    cJSON *ch = cJSON_AddObjectToObject(j, "foreground_intensity_properties_per_channel");
    for (int c = 0; c < fp->nchannels; c++) {
        char key[16];
        snprintf(key, sizeof key, "%d", c);
        const PlanIntensity *s = &fp->intensity[c];
        cJSON *e = cJSON_AddObjectToObject(ch, key);
        cJSON_AddStringToObject(e, "channel_name", fp->channel_names[c]);
        cJSON_AddNumberToObject(e, "n_foreground", (double)s->nforeground);
        cJSON_AddNumberToObject(e, "n_samples", (double)s->n);
        if (s->n > 0) {
            cJSON_AddNumberToObject(e, "mean", s->mean);
            cJSON_AddNumberToObject(e, "std", s->sd);
            cJSON_AddNumberToObject(e, "median", s->median);
            cJSON_AddNumberToObject(e, "min", s->min);
            cJSON_AddNumberToObject(e, "max", s->max);
            cJSON_AddNumberToObject(e, "percentile_00_5", s->p005);
            cJSON_AddNumberToObject(e, "percentile_99_5", s->p995);
        }
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return failf(err, errlen, "out of memory");
    size_t n = strlen(text);
    char *t2 = realloc(text, n + 2);   /* end with a newline */
    if (!t2) { free(text); return failf(err, errlen, "out of memory"); }
    t2[n] = '\n';
    t2[n + 1] = 0;
    int rc = atomic_write(path, t2, strlen(t2), err, errlen);
    free(t2);
    return rc;
}

/* ---- planning rules ----------------------------------------------------- */

void plan_target_spacing(const double (*spacing)[3], const int64_t (*shape)[3], int n, double out[3], int *aniso_axis)
{
    *aniso_axis = -1;
    for (int k = 0; k < 3; k++) out[k] = 1;
    if (n <= 0) return;
    double *v = malloc(sizeof(double) * (size_t)n);
    if (!v) return;
    double med_size[3];
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < n; i++) v[i] = spacing[i][k];
        out[k] = percentile_d(v, n, 50);
        for (int i = 0; i < n; i++) v[i] = (double)shape[i][k];
        med_size[k] = percentile_d(v, n, 50);
    }
    int w = 0;
    for (int k = 1; k < 3; k++)
        if (out[k] > out[w]) w = k;
    double max_other = 0, min_other_size = INFINITY;
    for (int k = 0; k < 3; k++) {
        if (k == w) continue;
        if (out[k] > max_other) max_other = out[k];
        if (med_size[k] < min_other_size) min_other_size = med_size[k];
    }
    if (out[w] > PLAN_ANISO_THRESHOLD * max_other && med_size[w] * PLAN_ANISO_THRESHOLD < min_other_size) {
        for (int i = 0; i < n; i++) v[i] = spacing[i][w];
        double t = percentile_d(v, n, 10);
        if (t < max_other) t = max_other + 1e-5;   /* never finer than the other axes */
        out[w] = t;
        *aniso_axis = w;
    }
    free(v);
}

static void set_features(PlanConfig *c, int base)
{
    int maxf = c->rank == 3 ? PLAN_MAX_FEATURES_3D : PLAN_MAX_FEATURES_2D;
    for (int s = 0; s < c->nstages; s++) {
        double f = (double)base * ldexp(1.0, s);
        c->features[s] = f > maxf ? maxf : (int)f;
    }
}

int plan_topology(int rank, const double *spacing, const int64_t *patch, PlanConfig *c)
{
    if (rank < 1 || rank > 3) return -1;
    double cur_sp[3];
    int64_t cur[3];
    int kernel[3];
    c->rank = rank;
    c->nstages = 1;
    for (int k = 0; k < rank; k++) {
        if (!(spacing[k] > 0) || patch[k] < 1) return -1;
        cur_sp[k] = spacing[k];
        cur[k] = patch[k];
        kernel[k] = 1;
        c->npool[k] = 0;
        c->stride[0][k] = 1;
    }
    for (;;) {
        if (c->nstages >= PLAN_MAX_STAGES) break;
        int valid[3], nv = 0;
        for (int k = 0; k < rank; k++)
            if (cur[k] >= 2 * PLAN_MIN_EDGE) valid[nv++] = k;
        if (nv == 0) break;
        double min_sp = INFINITY;
        for (int i = 0; i < nv; i++)
            if (cur_sp[valid[i]] < min_sp) min_sp = cur_sp[valid[i]];
        int m = 0;
        for (int i = 0; i < nv; i++)
            if (cur_sp[valid[i]] / min_sp < 2) valid[m++] = valid[i];
        nv = m;
        if (nv == 1 && cur[valid[0]] < 3 * PLAN_MIN_EDGE) break;
        if (nv == 0) break;
        double min_all = INFINITY;
        for (int k = 0; k < rank; k++)
            if (cur_sp[k] < min_all) min_all = cur_sp[k];
        for (int k = 0; k < rank; k++)
            if (kernel[k] != 3 && cur_sp[k] / min_all < 2) kernel[k] = 3;
        int s = c->nstages;
        for (int k = 0; k < rank; k++) {
            c->kernel[s - 1][k] = kernel[k];
            c->stride[s][k] = 1;
        }
        for (int i = 0; i < nv; i++) {
            int k = valid[i];
            c->stride[s][k] = 2;
            c->npool[k]++;
            cur_sp[k] *= 2;
            cur[k] = (cur[k] + 1) / 2;
        }
        c->nstages++;
    }
    for (int k = 0; k < rank; k++) {
        c->kernel[c->nstages - 1][k] = 3;   /* the bottleneck is always 3 */
        c->divisor[k] = (int64_t)1 << c->npool[k];
        int64_t r = patch[k] % c->divisor[k];
        c->patch[k] = r ? patch[k] + c->divisor[k] - r : patch[k];
    }
    for (int k = rank; k < 3; k++) { c->patch[k] = 1; c->npool[k] = 0; c->divisor[k] = 1; }
    set_features(c, PLAN_BASE_FEATURES);
    return 0;
}

static double prod_sz(const int64_t *s, int rank)
{
    double p = 1;
    for (int k = 0; k < rank; k++) p *= (double)s[k];
    return p;
}

double plan_feature_map_voxels(const PlanConfig *c, int nclasses)
{
    int r = c->rank, S = c->nstages;
    int64_t size[PLAN_MAX_STAGES][3];
    double out = 0;
    /* encoder: stage s's first conv strides, both convs output features[s] maps */
    int64_t cur[3] = { c->patch[0], c->patch[1], c->patch[2] };
    for (int s = 0; s < S; s++) {
        for (int k = 0; k < r; k++) {
            cur[k] /= c->stride[s][k];
            size[s][k] = cur[k];
        }
        out += 2.0 * c->features[s] * prod_sz(cur, r);
    }
    /* decoder: stage at the resolution of encoder stage s (S-2 .. 0): the
     * transposed conv's output, two convs, a segmentation head */
    for (int s = S - 2; s >= 0; s--) {
        double v = prod_sz(size[s], r);
        out += 2.0 * c->features[s] * v + (double)c->features[s] * v + (double)nclasses * v;
    }
    return out;
}

int plan_configure(int rank, const double *spacing, const double *median_shape, int nclasses, double dataset_voxels,
                   const PlanOptions *o, PlanConfig *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (rank != 2 && rank != 3) return failf(err, errlen, "rank %d: plans are 2D or 3D", rank);
    int base = o && o->base_features > 0 ? o->base_features : PLAN_BASE_FEATURES;
    double gb = o && o->budget_gb > 0 ? o->budget_gb : PLAN_REF_GB;
    /* initial patch: aspect ratio 1/spacing, the volume of 256^3 (2048^2),
     * clipped to the median shape */
    double inv[3], prod = 1, vol = rank == 3 ? 256.0 * 256.0 * 256.0 : 2048.0 * 2048.0;
    for (int k = 0; k < rank; k++) {
        if (!(spacing[k] > 0) || !(median_shape[k] >= 1))
            return failf(err, errlen, "axis %d: spacing %g and median size %g must be positive", k, spacing[k], median_shape[k]);
        inv[k] = 1.0 / spacing[k];
        prod *= inv[k];
    }
    double scale = pow(vol / prod, 1.0 / rank);
    int64_t patch[3] = { 1, 1, 1 };
    for (int k = 0; k < rank; k++) {
        double v = round(inv[k] * scale), m = ceil(median_shape[k]);
        patch[k] = (int64_t)(v < m ? v : m);
        if (patch[k] < 1) patch[k] = 1;
        c->spacing[k] = spacing[k];
        c->median_shape[k] = median_shape[k];
    }
    if (plan_topology(rank, spacing, patch, c) != 0) return failf(err, errlen, "cannot plan a %dD topology", rank);
    set_features(c, base);
    /* nnU-Net's references hold for batch 2 (3D) and 12 (2D); v2 fits the
     * patch at the minimum batch of 2, so the feature maps of one sample may
     * take limit = reference x reference batch / 2 */
    double ref = (rank == 3 ? PLAN_REF_VOXELS_3D : PLAN_REF_VOXELS_2D) * gb / PLAN_REF_GB;
    int refbs = rank == 3 ? PLAN_REF_BATCH_3D : PLAN_REF_BATCH_2D;
    double limit = ref * refbs / PLAN_MIN_BATCH;
    double est = plan_feature_map_voxels(c, nclasses);
    while (est > limit) {
        int axis = 0;
        double best = -1;
        for (int k = 0; k < rank; k++) {
            double ratio = (double)c->patch[k] / median_shape[k];
            if (ratio >= best) { best = ratio; axis = k; }
        }
        PlanConfig t = *c;
        int64_t tmp[3] = { c->patch[0], c->patch[1], c->patch[2] };
        tmp[axis] -= c->divisor[axis];
        if (tmp[axis] < 1 || plan_topology(rank, spacing, tmp, &t) != 0) goto too_small;
        int64_t np[3] = { c->patch[0], c->patch[1], c->patch[2] };
        np[axis] -= t.divisor[axis];
        if (np[axis] < 1) goto too_small;
        double ms[3] = { c->median_shape[0], c->median_shape[1], c->median_shape[2] };
        int shrinks = c->shrinks;
        if (plan_topology(rank, spacing, np, c) != 0) goto too_small;
        memcpy(c->spacing, spacing, sizeof(double) * (size_t)rank);
        memcpy(c->median_shape, ms, sizeof ms);
        c->shrinks = shrinks + 1;
        set_features(c, base);
        est = plan_feature_map_voxels(c, nclasses);
    }
    c->fmap_voxels = est;
    c->budget_voxels = limit;
    double bb = round(ref / est * refbs), cap = round(dataset_voxels * PLAN_MAX_DATASET_FRACTION / prod_sz(c->patch, rank));
    c->batch_budget = bb > 1e6 ? 1000000 : (int)bb;
    c->batch_cap = cap > 1e6 ? 1000000 : (int)cap;
    int b = c->batch_budget < c->batch_cap ? c->batch_budget : c->batch_cap;
    if (b < PLAN_MIN_BATCH) b = PLAN_MIN_BATCH;
    if (b > 4096) b = 4096;   /* the language's limit on `batch` */
    c->batch = b;
    return 0;
too_small:
    return failf(err, errlen, "a %.3g GB budget (%.4g M feature-map voxels) is too small for any %dD patch at this spacing",
                 gb, limit / 1e6, rank);
}

static int name_is(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

Normalization plan_channel_norm(const char *name, int use_mask)
{
    Normalization n = { NORM_ZSCORE, 0, 0 };
    if (name_is(name, "ct")) n.kind = NORM_CT;
    else if (name_is(name, "nonorm")) n.kind = NORM_NONE;
    else if (name_is(name, "rescale_to_0_1") || name_is(name, "rgb_to_0_1")) n.kind = NORM_RESCALE;
    else if (use_mask) n.kind = NORM_ZSCORE_NONZERO;
    return n;
}

static int starts_with_ci(const char *s, const char *p)
{
    for (; *p; s++, p++)
        if (tolower((unsigned char)*s) != tolower((unsigned char)*p)) return 0;
    return 1;
}

static Modality channel_modality(const char *name)
{
    static const char *const mri[] = { "mri", "mr", "flair", "adc", "dwi", "pd", "pdw", "swi", "dce", "hbv", "bold",
                                       "cbf", "dti", "fa", NULL };
    if (name_is(name, "ct")) return MOD_CT;
    if (starts_with_ci(name, "t1") || starts_with_ci(name, "t2")) return MOD_MRI;
    for (int i = 0; mri[i]; i++)
        if (name_is(name, mri[i])) return MOD_MRI;
    if (name_is(name, "pet") || name_is(name, "suv")) return MOD_PET;
    if (name_is(name, "us") || name_is(name, "ultrasound")) return MOD_US;
    if (name_is(name, "xray") || name_is(name, "x-ray") || name_is(name, "cxr")) return MOD_XRAY;
    return MOD_OTHER;
}

int plan_compute(const PlanFingerprint *fp, const PlanOptions *o, Plan *pl, char *err, size_t errlen)
{
    memset(pl, 0, sizeof *pl);
    int n = fp->ncases;
    if (n <= 0) return failf(err, errlen, "%s: no training cases to plan from", fp->root ? fp->root : "dataset");
    double (*sp)[3] = malloc(sizeof(double[3]) * (size_t)n);
    int64_t (*sh)[3] = malloc(sizeof(int64_t[3]) * (size_t)n);
    double *v = malloc(sizeof(double) * (size_t)n);
    int rc = -1;
    if (!sp || !sh || !v) { failf(err, errlen, "out of memory"); goto done; }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            sp[i][k] = fp->cases[i].spacing[k];
            sh[i][k] = fp->cases[i].crop_shape[k];
        }
    plan_target_spacing((const double (*)[3])sp, (const int64_t (*)[3])sh, n, pl->spacing, &pl->aniso_axis);
    double med[3], vox = 1;
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < n; i++) v[i] = (double)sh[i][k];
        pl->median_crop_shape[k] = percentile_d(v, n, 50);
        for (int i = 0; i < n; i++) {
            v[i] = round((double)sh[i][k] * sp[i][k] / pl->spacing[k]);
            if (v[i] < 1) v[i] = 1;
        }
        med[k] = percentile_d(v, n, 50);
        vox *= med[k];
    }
    int ncls = fp->nclasses > 1 ? fp->nclasses : 2;
    if (plan_configure(3, pl->spacing, med, ncls, vox * n, o, &pl->c3d, err, errlen) != 0) goto done;
    if (plan_configure(2, pl->spacing + 1, med + 1, ncls, vox * n, o, &pl->c2d, err, errlen) != 0) goto done;
    pl->use_nonzero_mask = fp->median_relative_size < 0.75;
    Modality m = MOD_OTHER;
    for (int c = 0; c < fp->nchannels; c++) {
        pl->norm[c] = plan_channel_norm(fp->channel_names[c], pl->use_nonzero_mask);
        if (pl->norm[c].kind == NORM_CT && fp->intensity[c].n == 0) {
            failf(err, errlen, "%s: channel %d (%s) is CT, but the training labels have no foreground voxels for its "
                  "intensity statistics", fp->root ? fp->root : "dataset", c, fp->channel_names[c]);
            goto done;
        }
        Modality mc = channel_modality(fp->channel_names[c]);
        m = c == 0 ? mc : (m == mc ? m : MOD_OTHER);
    }
    pl->modality = m;
    rc = 0;
done:
    free(sp); free(sh); free(v);
    return rc;
}

/* ---- the protocol text ---------------------------------------------------- */

static const char *const keywords[] = { "import", "block", "net", "protocol", "train", "on", "input", "output", "for",
                                        "in", "if", "else", "true", "false", "and", "or", "not", "x", NULL };

int plan_valid_name(const char *s)
{
    if (!s || !*s || strlen(s) > 120) return 0;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) return 0;
    for (int i = 0; keywords[i]; i++)
        if (strcmp(s, keywords[i]) == 0) return 0;
    return 1;
}

/* a lower-case identifier from any text (fallback if nothing is left) */
static void ident(const char *src, const char *fallback, char *out, size_t n)
{
    size_t j = 0;
    int under = 0;
    for (const char *p = src ? src : ""; *p && j + 1 < n && j < 100; p++) {
        unsigned char ch = (unsigned char)*p;
        if (isalnum(ch)) {
            if (j == 0 && isdigit(ch) && j + 2 < n) { out[j++] = 'c'; out[j++] = '_'; }
            out[j++] = (char)tolower(ch);
            under = 0;
        } else if (j > 0 && !under) {
            out[j++] = '_';
            under = 1;
        }
    }
    while (j > 0 && out[j - 1] == '_') j--;
    out[j] = 0;
    if (j == 0) snprintf(out, n, "%s", fallback);
    if (!plan_valid_name(out) && strlen(out) + 2 < n) strcat(out, "_");
}

void plan_default_name(const char *dataset, char *out, size_t n)
{
    ident(dataset, "dataset", out, n);
}

/* a number the lexer reads: fixed point, no exponent, at least one decimal */
static void num(char *buf, size_t n, double v)
{
    snprintf(buf, n, "%.6f", v);
    char *dot = strchr(buf, '.');
    if (!dot) return;
    char *e = buf + strlen(buf) - 1;
    while (e > dot + 1 && *e == '0') *e-- = 0;
}

static void names_list(FILE *f, char *const *src, int count, const char *prefix)
{
    char seen[MAX_CLASSES][128];
    for (int i = 0; i < count && i < MAX_CLASSES; i++) {
        char fb[32], id[128];
        snprintf(fb, sizeof fb, "%s%d", prefix, i);
        ident(src[i], fb, id, sizeof id);
        /* unique */
        char base[128];
        snprintf(base, sizeof base, "%s", id);
        for (int t = 2, dup = 1; dup; t++) {
            dup = 0;
            for (int j = 0; j < i; j++) dup |= strcmp(seen[j], id) == 0;
            if (dup) snprintf(id, sizeof id, "%.100s_%d", base, t);
        }
        snprintf(seen[i], sizeof seen[i], "%s", id);
        fprintf(f, "%s%s", i ? ", " : "", id);
    }
}

static void dims(FILE *f, const int64_t *v, int rank)
{
    for (int k = 0; k < rank; k++) fprintf(f, "%s%lld", k ? " x " : "", (long long)v[k]);
}

static void norm_text(char *buf, size_t n, const Normalization *nm)
{
    switch (nm->kind) {
    case NORM_ZSCORE: snprintf(buf, n, "zscore"); break;
    case NORM_ZSCORE_NONZERO: snprintf(buf, n, "zscore(nonzero)"); break;
    case NORM_CT: snprintf(buf, n, "ct"); break;
    case NORM_RESCALE: snprintf(buf, n, "rescale"); break;
    case NORM_NONE: snprintf(buf, n, "none"); break;
    default: snprintf(buf, n, "zscore"); break;
    }
}

static void write_config_comment(FILE *f, const PlanConfig *c, const char *net)
{
    const char *ax = c->rank == 3 ? "(z, y, x)" : "(y, x)";
    fprintf(f, "# %dD plan: poolings per axis %s ", c->rank, ax);
    for (int k = 0; k < c->rank; k++) fprintf(f, "%s%d", k ? ", " : "", c->npool[k]);
    fprintf(f, "; %d stages; the patch is a multiple of ", c->nstages);
    dims(f, c->divisor, c->rank);
    fprintf(f, "\n#   strides:");
    for (int s = 1; s < c->nstages; s++) {
        fprintf(f, " ");
        for (int k = 0; k < c->rank; k++) fprintf(f, "%s%d", k ? "x" : "", c->stride[s][k]);
    }
    fprintf(f, "\n#   conv kernels:");
    for (int s = 0; s < c->nstages; s++) {
        fprintf(f, " ");
        for (int k = 0; k < c->rank; k++) fprintf(f, "%s%d", k ? "x" : "", c->kernel[s][k]);
    }
    fprintf(f, "\n#   widths:");
    for (int s = 0; s < c->nstages; s++) fprintf(f, " %d", c->features[s]);
    int minpool = c->npool[0];
    for (int k = 1; k < c->rank; k++)
        if (c->npool[k] < minpool) minpool = c->npool[k];
    fprintf(f, "\n#   feature maps %.1f M voxels (budget %.1f M); batch %d (budget %d, 5%% of the dataset %d, at least %d)\n",
            c->fmap_voxels / 1e6, c->budget_voxels / 1e6, c->batch, c->batch_budget, c->batch_cap, PLAN_MIN_BATCH);
    if (minpool > 0)
        fprintf(f, "#   The language has no per-axis pooling parameters: a net that pools every axis at every\n"
                   "#   stage, such as netdefs/%s, fits this patch with -D depth=%d (the fewest poolings of\n"
                   "#   any axis).  A train block should use batch %d and patch ",
                net, minpool, c->batch);
    else
        fprintf(f, "#   The language has no per-axis pooling parameters, and some axis of this patch is too\n"
                   "#   small to pool: netdefs/%s (which pools every axis) does not fit it; a net for it\n"
                   "#   pools along the other axes only.  A train block should use batch %d and patch ",
                net, c->batch);
    dims(f, c->patch, c->rank);
    fprintf(f, ".\n");
}

static void write_protocol(FILE *f, const PlanFingerprint *fp, const Plan *pl, const PlanConfig *c, const char *name,
                           const char *suffix)
{
    char b[64];
    int64_t size[3];
    for (int k = 0; k < c->rank; k++) {
        size[k] = (int64_t)ceil(c->median_shape[k]);
        if (size[k] < 1) size[k] = 1;
    }
    fprintf(f, "protocol %s_%s {\n", name, suffix);
    fprintf(f, "    modality  %s\n", modality_name(pl->modality));
    fprintf(f, "    channels  ");
    names_list(f, fp->channel_names, fp->nchannels, "channel");
    fprintf(f, "\n    size      ");
    dims(f, size, c->rank);
    fprintf(f, "\n    patch     ");
    dims(f, c->patch, c->rank);
    fprintf(f, "\n    spacing   ");
    for (int k = 0; k < c->rank; k++) {
        num(b, sizeof b, c->spacing[k]);
        fprintf(f, "%s%s", k ? " x " : "", b);
    }
    norm_text(b, sizeof b, &pl->norm[0]);
    fprintf(f, " mm\n    normalize %s\n", b);
    fprintf(f, "    classes   ");
    char *cls[MAX_CLASSES];
    int nc = fp->nclasses > 1 ? fp->nclasses : 2;
    for (int k = 0; k < nc && k < MAX_CLASSES; k++) cls[k] = k < fp->nclasses ? fp->class_names[k] : NULL;
    names_list(f, cls, nc, "label");
    fprintf(f, "\n    batch     %d\n}\n", c->batch);
}

/* Parse and resolve the text with the front end; compare with the plan. */
static int self_check(const char *text, const char *name, const PlanFingerprint *fp, const Plan *pl, char *err, size_t errlen)
{
    char *msg = NULL;
    size_t mlen = 0;
    FILE *m = open_memstream(&msg, &mlen);
    if (!m) return failf(err, errlen, "out of memory");
    Diag d;
    diag_init(&d, m);
    Program *p = program_from_text(&d, "planned.net", text, strlen(text));
    int bad = 0;
    for (int r = 0; r < 2 && p; r++) {
        const PlanConfig *c = r == 0 ? &pl->c3d : &pl->c2d;
        char pn[160];
        snprintf(pn, sizeof pn, "%s_%s", name, r == 0 ? "3d" : "2d");
        Ast *decl = program_find(&p->protocols, pn);
        if (!decl) { fprintf(m, "protocol %s is missing\n", pn); bad = 1; continue; }
        Protocol *pr = protocol_resolve(p, decl, NULL, 0);
        if (!pr) { bad = 1; continue; }
        int same = pr->rank == c->rank && pr->nchannels == fp->nchannels && pr->batch == c->batch &&
                   pr->norm.kind == pl->norm[0].kind && pr->modality == pl->modality;
        for (int k = 0; k < c->rank && same; k++)
            same = pr->patch[k] == c->patch[k] && fabs(pr->spacing[k] - c->spacing[k]) <= 1e-6 * c->spacing[k] + 1e-9;
        if (!same) { fprintf(m, "protocol %s reads back different from the plan\n", pn); bad = 1; }
        protocol_free(pr);
    }
    if (!p) bad = 1;
    bad |= d.nerrors > 0;
    program_free(p);
    diag_free(&d);
    fclose(m);
    if (bad) failf(err, errlen, "internal error: the planned protocols do not check:\n%s", msg ? msg : "");
    free(msg);
    return bad ? -1 : 0;
}

static const char *norm_word(NormKind k)
{
    switch (k) {
    case NORM_CT: return "ct";
    case NORM_ZSCORE_NONZERO: return "zscore(nonzero)";
    case NORM_RESCALE: return "rescale";
    case NORM_NONE: return "none";
    default: return "zscore";
    }
}

char *plan_protocol_text(const PlanFingerprint *fp, const Plan *pl, const char *name, char *err, size_t errlen)
{
    if (!plan_valid_name(name)) { failf(err, errlen, "`%s` is not a valid protocol name", name ? name : ""); return NULL; }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) { failf(err, errlen, "out of memory"); return NULL; }
    char b1[64], b2[64], b3[64];
    fprintf(f, "# %s_3d and %s_2d — planned by `netc plan` from %s (dataset %s, %d training case%s).\n", name, name,
            fp->root, fp->dataset, fp->ncases, fp->ncases == 1 ? "" : "s");
    fprintf(f, "# nnU-Net's planning rules (docs/plan.md); import this file from a net's file and\n"
               "# pick the protocol with --protocol %s_3d (or %s_2d).\n#\n", name, name);
    num(b1, sizeof b1, pl->spacing[0]); num(b2, sizeof b2, pl->spacing[1]); num(b3, sizeof b3, pl->spacing[2]);
    fprintf(f, "# Target spacing (z, y, x) %s x %s x %s mm", b1, b2, b3);
    if (pl->aniso_axis >= 0)
        fprintf(f, " (axis %c: 10th percentile of the cases' spacings, nnU-Net's anisotropy rule)",
                "zyx"[pl->aniso_axis]);
    fprintf(f, "; median shape after crop %.6g x %.6g x %.6g; median relative size after crop %.3f%s.\n",
            pl->median_crop_shape[0], pl->median_crop_shape[1], pl->median_crop_shape[2], fp->median_relative_size,
            pl->use_nonzero_mask ? " (< 0.75: z-score inside the nonzero mask)" : "");
    int mixed = 0;
    for (int c = 0; c < fp->nchannels; c++) {
        const PlanIntensity *s = &fp->intensity[c];
        fprintf(f, "# channel %d %s: normalize %s", c, fp->channel_names[c], norm_word(pl->norm[c].kind));
        if (s->n > 0)
            fprintf(f, "; foreground mean %.6g sd %.6g, p0.5 %.6g, p99.5 %.6g (%lld voxels)", s->mean, s->sd, s->p005,
                    s->p995, (long long)s->n);
        fprintf(f, "\n");
        mixed |= pl->norm[c].kind != pl->norm[0].kind;
    }
    if (mixed)
        fprintf(f, "# The channels need different normalizations, but a protocol has one: it says channel 0's.\n");
    fprintf(f, "\n");
    write_config_comment(f, &pl->c3d, "unet3d.net");
    write_protocol(f, fp, pl, &pl->c3d, name, "3d");
    fprintf(f, "\n");
    write_config_comment(f, &pl->c2d, "unet2d.net");
    write_protocol(f, fp, pl, &pl->c2d, name, "2d");
    if (fclose(f) != 0 || !text) { free(text); failf(err, errlen, "out of memory"); return NULL; }
    if (self_check(text, name, fp, pl, err, errlen) != 0) { free(text); return NULL; }
    return text;
}

/* ---- tables --------------------------------------------------------------- */

static void fmt3(char *buf, size_t n, const int64_t *v, int rank)
{
    buf[0] = 0;
    for (int k = 0; k < rank; k++) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s%lld", k ? " x " : "", (long long)v[k]);
    }
}

static void fmt3d(char *buf, size_t n, const double *v, int rank)
{
    buf[0] = 0;
    for (int k = 0; k < rank; k++) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s%.4g", k ? " x " : "", v[k]);
    }
}

static void fmt3n(char *buf, size_t n, const int *v, int rank)
{
    buf[0] = 0;
    for (int k = 0; k < rank; k++) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s%d", k ? ", " : "", v[k]);
    }
}

void plan_print(FILE *f, const PlanFingerprint *fp, const Plan *pl)
{
    char a[96], b[96], c[96];
    fprintf(f, "dataset %s (%s): %d training case%s, %d channel%s, %d classes\n", fp->dataset, fp->root, fp->ncases,
            fp->ncases == 1 ? "" : "s", fp->nchannels, fp->nchannels == 1 ? "" : "s", fp->nclasses);
    fprintf(f, "\n%-24s %-22s %-18s %-18s %s\n", "case", "spacing (z y x) mm", "shape", "after crop", "relative");
    for (int i = 0; i < fp->ncases; i++) {
        const PlanCase *pc = &fp->cases[i];
        fmt3d(a, sizeof a, pc->spacing, 3);
        fmt3(b, sizeof b, pc->shape, 3);
        fmt3(c, sizeof c, pc->crop_shape, 3);
        double rel = (double)(pc->crop_shape[0] * pc->crop_shape[1] * pc->crop_shape[2]) /
                     (double)(pc->shape[0] * pc->shape[1] * pc->shape[2]);
        fprintf(f, "%-24.24s %-22s %-18s %-18s %.3f\n", pc->name, a, b, c, rel);
    }
    fmt3d(c, sizeof c, pl->median_crop_shape, 3);
    fprintf(f, "%-24s %-22s %-18s %-18s %.3f\n", "median", "", "", c, fp->median_relative_size);
    fprintf(f, "\n%-3s %-12s %11s %10s %10s %10s %10s %10s %10s %10s %10s  %s\n", "ch", "name", "foreground", "samples",
            "mean", "sd", "median", "min", "max", "p0.5", "p99.5", "normalize");
    for (int k = 0; k < fp->nchannels; k++) {
        const PlanIntensity *s = &fp->intensity[k];
        fprintf(f, "%-3d %-12.12s %11lld %10lld", k, fp->channel_names[k], (long long)s->nforeground, (long long)s->n);
        if (s->n > 0)
            fprintf(f, " %10.4g %10.4g %10.4g %10.4g %10.4g %10.4g %10.4g", s->mean, s->sd, s->median, s->min, s->max,
                    s->p005, s->p995);
        else
            fprintf(f, " %10s %10s %10s %10s %10s %10s %10s", "-", "-", "-", "-", "-", "-", "-");
        fprintf(f, "  %s\n", norm_word(pl->norm[k].kind));
    }
    fmt3d(a, sizeof a, pl->spacing, 3);
    fprintf(f, "\ntarget spacing %s mm%s; modality %s\n", a,
            pl->aniso_axis >= 0 ? " (anisotropic: 10th-percentile rule on the coarse axis)" : " (median)",
            modality_name(pl->modality));
    fprintf(f, "\n%-24s %-22s %s\n", "plan", "3d", "2d");
    const PlanConfig *cf[2] = { &pl->c3d, &pl->c2d };
    char col[2][8][96];
    for (int r = 0; r < 2; r++) {
        const PlanConfig *q = cf[r];
        fmt3d(col[r][0], 96, q->spacing, q->rank);
        fmt3d(col[r][1], 96, q->median_shape, q->rank);
        fmt3(col[r][2], 96, q->patch, q->rank);
        fmt3n(col[r][3], 96, q->npool, q->rank);
        fmt3(col[r][4], 96, q->divisor, q->rank);
        snprintf(col[r][5], 96, "%.1f / %.1f", q->fmap_voxels / 1e6, q->budget_voxels / 1e6);
        snprintf(col[r][6], 96, "%d (budget %d, cap %d)", q->batch, q->batch_budget, q->batch_cap);
        snprintf(col[r][7], 96, "%d", q->nstages);
    }
    const char *rows[8] = { "spacing (mm)", "median shape", "patch", "poolings per axis", "divisible by",
                            "feature maps (M voxels)", "batch", "stages" };
    for (int i = 0; i < 8; i++) fprintf(f, "%-24s %-22s %s\n", rows[i], col[0][i], col[1][i]);
}
