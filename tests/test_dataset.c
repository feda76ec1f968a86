/* test_dataset.c — nnU-Net raw datasets, preprocessing, cache and undo
 * (runtime/dataset.c), on synthetic volumes and on the Colin27 demo data. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <nifti1_io.h>

#include "dataset.h"
#include "support.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/netc-dataset-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void mkdir_p(const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    ck_assert_int_eq(system(cmd), 0);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

enum { XFORM_SFORM, XFORM_QFORM, XFORM_NONE };

/* A float32 NIfTI volume (data x fastest) with affine A (NULL: identity). */
static void write_nii(const char *path, const int64_t d[3], const float *data, const double (*A)[4], int xform)
{
    int dims[8] = { 3, (int)d[0], (int)d[1], (int)d[2], 1, 1, 1, 1 };
    nifti_image *nim = nifti_make_new_nim(dims, NIFTI_TYPE_FLOAT32, 1);
    ck_assert_ptr_nonnull(nim);
    memcpy(nim->data, data, sizeof(float) * (size_t)(d[0] * d[1] * d[2]));
    mat44 m;
    memset(&m, 0, sizeof m);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) m.m[i][j] = A ? (float)A[i][j] : (i == j ? 1.0f : 0.0f);
    m.m[3][3] = 1;
    float dx = 1, dy = 1, dz = 1;
    for (int j = 0; j < 3; j++) {
        double s = sqrt(m.m[0][j] * m.m[0][j] + m.m[1][j] * m.m[1][j] + m.m[2][j] * m.m[2][j]);
        if (j == 0) dx = (float)s;
        if (j == 1) dy = (float)s;
        if (j == 2) dz = (float)s;
    }
    nim->dx = nim->pixdim[1] = dx;
    nim->dy = nim->pixdim[2] = dy;
    nim->dz = nim->pixdim[3] = dz;
    nim->sform_code = nim->qform_code = 0;
    if (xform == XFORM_SFORM) {
        nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
        nim->sto_xyz = m;
    } else if (xform == XFORM_QFORM) {
        nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
        nifti_mat44_to_quatern(m, &nim->quatern_b, &nim->quatern_c, &nim->quatern_d, &nim->qoffset_x, &nim->qoffset_y,
                               &nim->qoffset_z, NULL, NULL, NULL, &nim->qfac);
    }
    ck_assert_int_eq(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
}

/* Synthetic dataset: 2 channels, training cases case_a, case_b, test case
 * case_c (no label); 6 x 5 x 4 (x y z), label = 1 where x >= 3. */
static const int64_t SD[3] = { 6, 5, 4 };

static void syn_volume(float *img, float *lab, int which, int ch)
{
    for (int64_t z = 0; z < SD[2]; z++)
        for (int64_t y = 0; y < SD[1]; y++)
            for (int64_t x = 0; x < SD[0]; x++) {
                int64_t i = (z * SD[1] + y) * SD[0] + x;
                img[i] = (float)(1 + x + 10 * y + 100 * z + 1000 * ch + 7 * which);
                if (lab) lab[i] = x >= 3;
            }
}

static const char *SYN_JSON =
    "{ \"name\": \"Syn\", \"channel_names\": {\"0\": \"T1\", \"1\": \"T2\"},\n"
    "  \"labels\": {\"background\": 0, \"thing\": 1}, \"numTraining\": 2, \"file_ending\": \".nii.gz\" }\n";

static void make_syn(const char *root, const char *json)
{
    char p[512];
    snprintf(p, sizeof p, "%s/imagesTr", root); mkdir_p(p);
    snprintf(p, sizeof p, "%s/labelsTr", root); mkdir_p(p);
    snprintf(p, sizeof p, "%s/imagesTs", root); mkdir_p(p);
    snprintf(p, sizeof p, "%s/dataset.json", root);
    write_text(p, json ? json : SYN_JSON);
    float img[120], lab[120];
    const char *names[3] = { "case_a", "case_b", "case_c" };
    for (int c = 0; c < 3; c++) {
        for (int ch = 0; ch < 2; ch++) {
            syn_volume(img, lab, c, ch);
            snprintf(p, sizeof p, "%s/images%s/%s_%04d.nii.gz", root, c < 2 ? "Tr" : "Ts", names[c], ch);
            write_nii(p, SD, img, NULL, XFORM_SFORM);
        }
        if (c < 2) {
            snprintf(p, sizeof p, "%s/labelsTr/%s.nii.gz", root, names[c]);
            write_nii(p, SD, lab, NULL, XFORM_SFORM);
        }
    }
}

static char *syn_root(const char *sub)
{
    static char root[256];
    snprintf(root, sizeof root, "%s/%s", dir, sub);
    return root;
}

START_TEST(open_syn)
{
    char *root = syn_root("Syn");
    make_syn(root, NULL);
    char err[1024] = "";
    Dataset *ds = ds_open(root, err, sizeof err);
    ck_assert_msg(ds != NULL, "%s", err);
    ck_assert_str_eq(ds->name, "Syn");
    ck_assert_int_eq(ds->nchannels, 2);
    ck_assert_str_eq(ds->channel_names[1], "T2");
    ck_assert_int_eq(ds->nlabels, 2);
    ck_assert_int_eq(ds->max_label, 1);
    ck_assert_int_eq(ds->ntrain, 2);
    ck_assert_int_eq(ds->ncases, 3);
    ck_assert_str_eq(ds->cases[0].name, "case_a");
    ck_assert_str_eq(ds->cases[2].name, "case_c");
    ck_assert_int_eq(ds->cases[2].split, DS_TEST);
    ck_assert_ptr_null(ds->cases[2].label);
    ck_assert_int_eq(ds->cases[0].shape[0], 4);   /* (z, y, x) */
    ck_assert_int_eq(ds->cases[0].shape[2], 6);
    DsParams p;
    ds_params_default(&p, NULL);
    ck_assert_msg(ds_preprocess(ds, &p, NULL, -1, err, sizeof err) == 0, "%s", err);
    const DsPrepped *c = ds_case(ds, 0);
    ck_assert_int_eq(c->nchannels, 2);
    ck_assert_int_eq(c->shape[0], 4);
    ck_assert_int_eq(c->shape[1], 5);
    ck_assert_int_eq(c->shape[2], 6);
    ck_assert_ptr_nonnull(c->labels);
    ck_assert_int_eq(c->labels[3], 1);
    ck_assert_int_eq(c->labels[2], 0);
    ck_assert_ptr_null(ds_case(ds, 2)->labels);
    double med[3];
    ds_median_spacing(ds, med);
    ck_assert_double_eq_tol(med[0], 1.0, 1e-9);
    ds_free(ds);
}
END_TEST

/* Expect ds_open (or, with preprocess, ds_preprocess) to fail with a message
 * holding every one of subs. */
static void expect_error(const char *root, int preprocess, const char *const *subs)
{
    char err[2048] = "";
    Dataset *ds = ds_open(root, err, sizeof err);
    if (preprocess) {
        ck_assert_msg(ds != NULL, "open failed: %s", err);
        DsParams p;
        ds_params_default(&p, NULL);
        ck_assert_msg(ds_preprocess(ds, &p, NULL, -1, err, sizeof err) != 0, "preprocessing %s should fail", root);
        ds_free(ds);
    } else
        ck_assert_msg(ds == NULL, "opening %s should fail", root);
    for (int i = 0; subs[i]; i++)
        ck_assert_msg(strstr(err, subs[i]) != NULL, "expected \"%s\" in: %s", subs[i], err);
}

START_TEST(errors)
{
    char p[512], q[512];
    float img[120], lab[120];
    syn_volume(img, lab, 0, 0);

    char *r = syn_root("nojson");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/dataset.json", r);
    remove(p);
    expect_error(r, 0, (const char *[]){ "nojson/dataset.json", "cannot read", NULL });

    r = syn_root("badjson");
    make_syn(r, "{ \"channel_names\": {\"0\": \"T1\",\n  \"labels\": }");
    expect_error(r, 0, (const char *[]){ "badjson/dataset.json", "not valid JSON", "line 2", NULL });

    r = syn_root("nolabels");
    make_syn(r, "{ \"channel_names\": {\"0\": \"T1\", \"1\": \"T2\"}, \"numTraining\": 2, \"file_ending\": \".nii.gz\" }");
    expect_error(r, 0, (const char *[]){ "nolabels/dataset.json", "`labels`", NULL });

    r = syn_root("nobg");
    make_syn(r, "{ \"channel_names\": {\"0\": \"T1\", \"1\": \"T2\"}, \"labels\": {\"a\": 1}, \"numTraining\": 2, "
                "\"file_ending\": \".nii.gz\" }");
    expect_error(r, 0, (const char *[]){ "nobg/dataset.json", "background", NULL });

    r = syn_root("badch");
    make_syn(r, "{ \"channel_names\": {\"0\": \"T1\", \"2\": \"T2\"}, \"labels\": {\"background\": 0}, \"numTraining\": 2, "
                "\"file_ending\": \".nii.gz\" }");
    expect_error(r, 0, (const char *[]){ "badch/dataset.json", "\"1\"", NULL });

    r = syn_root("numtr");
    make_syn(r, "{ \"channel_names\": {\"0\": \"T1\", \"1\": \"T2\"}, \"labels\": {\"background\": 0, \"thing\": 1}, "
                "\"numTraining\": 3, \"file_ending\": \".nii.gz\" }");
    expect_error(r, 0, (const char *[]){ "numtr/dataset.json", "numTraining is 3", "holds 2", NULL });

    r = syn_root("missingch");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/imagesTr/case_b_0001.nii.gz", r);
    remove(p);
    expect_error(r, 0, (const char *[]){ "missingch/imagesTr/case_b_0001.nii.gz", "missing", NULL });

    r = syn_root("extrach");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/imagesTr/case_a_0002.nii.gz", r);
    write_nii(p, SD, img, NULL, XFORM_SFORM);
    expect_error(r, 0, (const char *[]){ "extrach/imagesTr/case_a_0002.nii.gz", "2 channel", NULL });

    r = syn_root("badname");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/imagesTr/case_z.nii.gz", r);
    write_nii(p, SD, img, NULL, XFORM_SFORM);
    expect_error(r, 0, (const char *[]){ "badname/imagesTr/case_z.nii.gz", "CASE_XXXX", NULL });

    r = syn_root("nolabel");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/labelsTr/case_b.nii.gz", r);
    remove(p);
    expect_error(r, 0, (const char *[]){ "nolabel/labelsTr/case_b.nii.gz", "missing", NULL });

    r = syn_root("orphan");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/labelsTr/case_q.nii.gz", r);
    write_nii(p, SD, lab, NULL, XFORM_SFORM);
    expect_error(r, 0, (const char *[]){ "orphan/labelsTr/case_q.nii.gz", "without an image", NULL });

    r = syn_root("shape");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/labelsTr/case_a.nii.gz", r);
    write_nii(p, (const int64_t[]){ 5, 6, 4 }, lab, NULL, XFORM_SFORM);
    snprintf(q, sizeof q, "%s/imagesTr/case_a_0000.nii.gz", r);
    expect_error(r, 0, (const char *[]){ p, q, "5 x 6 x 4", "6 x 5 x 4", NULL });

    r = syn_root("affine");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/imagesTr/case_b_0001.nii.gz", r);
    double A[3][4] = { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 12.5 } };
    write_nii(p, SD, img, A, XFORM_SFORM);
    snprintf(q, sizeof q, "%s/imagesTr/case_b_0000.nii.gz", r);
    expect_error(r, 0, (const char *[]){ p, q, "affine", "12.5", NULL });

    r = syn_root("corrupt");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/imagesTr/case_a_0001.nii.gz", r);
    write_text(p, "this is not a NIfTI file at all, not even gzip");
    expect_error(r, 0, (const char *[]){ "corrupt/imagesTr/case_a_0001.nii.gz", "NIfTI", NULL });

    r = syn_root("nonint");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/labelsTr/case_b.nii.gz", r);
    lab[7] = 0.5f;
    write_nii(p, SD, lab, NULL, XFORM_SFORM);
    expect_error(r, 1, (const char *[]){ "nonint/labelsTr/case_b.nii.gz", "0.5", "not an integer", NULL });

    r = syn_root("range");
    make_syn(r, NULL);
    snprintf(p, sizeof p, "%s/labelsTr/case_a.nii.gz", r);
    lab[7] = 3;
    write_nii(p, SD, lab, NULL, XFORM_SFORM);
    expect_error(r, 1, (const char *[]){ "range/labelsTr/case_a.nii.gz", "value 3", "not one of the labels", NULL });

    expect_error(syn_root("does-not-exist"), 0, (const char *[]){ "does-not-exist", "not a folder", NULL });
}
END_TEST

/* A volume written with a permuted and flipped sform (or qform) comes back
 * as the same canonical array as the plain RAS one. */
START_TEST(orientation)
{
    const int64_t NX = 5, NY = 4, NZ = 3;
    float canon[60], perm[60];
    for (int64_t z = 0; z < NZ; z++)
        for (int64_t y = 0; y < NY; y++)
            for (int64_t x = 0; x < NX; x++) canon[(z * NY + y) * NX + x] = (float)(1 + x + 10 * y + 100 * z);
    /* source axes: i <- z reversed, j <- x, k <- y reversed */
    const int64_t pd[3] = { NZ, NX, NY };
    for (int64_t k = 0; k < NY; k++)
        for (int64_t j = 0; j < NX; j++)
            for (int64_t i = 0; i < NZ; i++)
                perm[(k * NX + j) * NZ + i] = canon[((NZ - 1 - i) * NY + (NY - 1 - k)) * NX + j];
    double Aplain[3][4] = { { 1, 0, 0, 0 }, { 0, 2, 0, 0 }, { 0, 0, 3, 0 } };
    double Aperm[3][4] = { { 0, 1, 0, 0 }, { 0, 0, -2, 6 }, { -3, 0, 0, 6 } };
    char a[256], b[256], c[256];
    snprintf(a, sizeof a, "%s/plain.nii.gz", dir);
    snprintf(b, sizeof b, "%s/perm.nii.gz", dir);
    snprintf(c, sizeof c, "%s/permq.nii", dir);
    write_nii(a, (const int64_t[]){ NX, NY, NZ }, canon, Aplain, XFORM_SFORM);
    write_nii(b, pd, perm, Aperm, XFORM_SFORM);
    write_nii(c, pd, perm, Aperm, XFORM_QFORM);
    const char *paths[3] = { a, b, c };
    DsParams p;
    Normalization none = { NORM_NONE, 0, 0 };
    ds_params_default(&p, &none);
    char err[512];
    for (int t = 0; t < 3; t++) {
        Volume v;
        ck_assert_msg(vol_read(paths[t], &v, err, sizeof err) == 0, "%s", err);
        DsPrepped pp;
        ck_assert_msg(ds_prepare(&v, 1, NULL, &p, NULL, NULL, NULL, &pp, err, sizeof err) == 0, "%s", err);
        ck_assert_int_eq(pp.shape[0], NZ);
        ck_assert_int_eq(pp.shape[1], NY);
        ck_assert_int_eq(pp.shape[2], NX);
        ck_assert_double_eq_tol(pp.spacing[0], 3, 1e-5);
        ck_assert_double_eq_tol(pp.spacing[1], 2, 1e-5);
        ck_assert_double_eq_tol(pp.spacing[2], 1, 1e-5);
        for (int i = 0; i < 60; i++) ck_assert_msg(pp.image[i] == canon[i], "%s: voxel %d is %g, want %g", paths[t], i,
                                                   (double)pp.image[i], (double)canon[i]);
        if (t > 0) {
            ck_assert_int_eq(pp.geom.perm[0], 1);
            ck_assert_int_eq(pp.geom.perm[2], 0);
            ck_assert_int_eq(pp.geom.flip[2], 1);
        }
        ds_prepped_free(&pp);
        vol_free(&v);
    }
}
END_TEST

/* Crop to the nonzero box; the zscore-in-nonzero mask fills holes. */
START_TEST(crop_and_mask)
{
    const int64_t d[3] = { 10, 9, 8 };   /* x y z */
    float img[720] = { 0 };
    /* nonzero: x 2..7, y 1..6, z 3..6, except a hollow centre voxel and
     * an empty corner column (x 2..3, y 1..2) open to the box border */
    for (int64_t z = 3; z <= 6; z++)
        for (int64_t y = 1; y <= 6; y++)
            for (int64_t x = 2; x <= 7; x++) {
                if (x <= 3 && y <= 2) continue;
                if (x == 5 && y == 4 && z == 5) continue;
                img[(z * d[1] + y) * d[0] + x] = (float)(2 + (x + y + z) % 3);
            }
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/c.nii.gz", dir);
    write_nii(path, d, img, NULL, XFORM_SFORM);
    Volume v;
    ck_assert_msg(vol_read(path, &v, err, sizeof err) == 0, "%s", err);
    DsParams p;
    Normalization zn = { NORM_ZSCORE_NONZERO, 0, 0 };
    ds_params_default(&p, &zn);
    DsPrepped pp;
    ck_assert_msg(ds_prepare(&v, 1, NULL, &p, NULL, NULL, NULL, &pp, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(pp.geom.bbox_lo[0], 3); ck_assert_int_eq(pp.geom.bbox_hi[0], 7);
    ck_assert_int_eq(pp.geom.bbox_lo[1], 1); ck_assert_int_eq(pp.geom.bbox_hi[1], 7);
    ck_assert_int_eq(pp.geom.bbox_lo[2], 2); ck_assert_int_eq(pp.geom.bbox_hi[2], 8);
    ck_assert_int_eq(pp.shape[0], 4); ck_assert_int_eq(pp.shape[1], 6); ck_assert_int_eq(pp.shape[2], 6);
    /* inside: mean 0, sd 1 over the mask; the open corner stays 0; the hole is inside */
    double s = 0, sq = 0;
    int n = 0;
    for (int64_t z = 0; z < 4; z++)
        for (int64_t y = 0; y < 6; y++)
            for (int64_t x = 0; x < 6; x++) {
                float val = pp.image[(z * 6 + y) * 6 + x];
                if (x <= 1 && y <= 1) { ck_assert_float_eq(val, 0); continue; }
                s += val; sq += val * val; n++;
            }
    ck_assert_int_eq(n, 4 * 36 - 16);
    ck_assert_double_eq_tol(s / n, 0, 1e-5);
    ck_assert_double_eq_tol(sq / n, 1, 1e-4);
    float hole = pp.image[((5 - 3) * 6 + (4 - 1)) * 6 + (5 - 2)];
    ck_assert_msg(hole < -1, "the filled hole is normalized with the inside (got %g)", (double)hole);
    ds_prepped_free(&pp);
    vol_free(&v);
}
END_TEST

/* A linear ramp resampled stays a ramp: with the pixel-centre convention,
 * voxel o of the output has the value of input coordinate
 * clamp((o + 0.5) * in / out - 0.5, 0, in - 1). */
static double coord(int64_t o, int64_t in, int64_t out)
{
    double c = (o + 0.5) * (double)in / (double)out - 0.5;
    return c < 0 ? 0 : c > in - 1 ? in - 1 : c;
}

START_TEST(resample_ramp)
{
    const int64_t is[3] = { 4, 5, 8 };
    float in[160];
    for (int64_t z = 0; z < 4; z++)
        for (int64_t y = 0; y < 5; y++)
            for (int64_t x = 0; x < 8; x++) in[(z * 5 + y) * 8 + x] = (float)(x + 2 * y + 3 * z);
    const int64_t outs[3][3] = { { 8, 5, 16 }, { 3, 7, 5 }, { 4, 5, 8 } };
    for (int t = 0; t < 3; t++) {
        const int64_t *os = outs[t];
        float *out = malloc(sizeof(float) * (size_t)(os[0] * os[1] * os[2]));
        ds_resample_linear(in, is, out, os);
        for (int64_t z = 0; z < os[0]; z++)
            for (int64_t y = 0; y < os[1]; y++)
                for (int64_t x = 0; x < os[2]; x++) {
                    double want = coord(x, 8, os[2]) + 2 * coord(y, 5, os[1]) + 3 * coord(z, 4, os[0]);
                    ck_assert_double_eq_tol(out[(z * os[1] + y) * os[2] + x], want, 1e-5);
                }
        free(out);
    }
    /* through ds_prepare: 2 mm z to 1 mm doubles the slices; the label
     * (x >= 4) resampled linearly on one-hot keeps its boundary */
    char path[256], lpath[256], err[512];
    snprintf(path, sizeof path, "%s/r.nii.gz", dir);
    snprintf(lpath, sizeof lpath, "%s/rl.nii.gz", dir);
    double A[3][4] = { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 2, 0 } };
    float lab[160], img[160];
    for (int i = 0; i < 160; i++) { lab[i] = (i % 8) >= 4; img[i] = in[i] + 1; }
    write_nii(path, (const int64_t[]){ 8, 5, 4 }, img, A, XFORM_SFORM);
    write_nii(lpath, (const int64_t[]){ 8, 5, 4 }, lab, A, XFORM_SFORM);
    Volume v, l;
    ck_assert_msg(vol_read(path, &v, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(vol_read(lpath, &l, err, sizeof err) == 0, "%s", err);
    DsParams p;
    Normalization none = { NORM_NONE, 0, 0 };
    ds_params_default(&p, &none);
    p.spacing[0] = 1;
    DsPrepped pp;
    uint8_t ok[256] = { 1, 1 };
    ck_assert_msg(ds_prepare(&v, 1, &l, &p, NULL, NULL, ok, &pp, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(pp.shape[0], 8);
    ck_assert_double_eq_tol(pp.spacing[0], 1, 1e-9);
    for (int64_t z = 0; z < 8; z++)
        for (int64_t y = 0; y < 5; y++)
            for (int64_t x = 0; x < 8; x++) {
                int64_t i = (z * 5 + y) * 8 + x;
                ck_assert_double_eq_tol(pp.image[i], 1 + x + 2 * y + 3 * coord(z, 4, 8), 1e-5);
                ck_assert_int_eq(pp.labels[i], x >= 4);
            }
    ds_prepped_free(&pp);
    vol_free(&v);
    vol_free(&l);
}
END_TEST

START_TEST(normalization)
{
    float x[6] = { 1, 2, 3, 4, 5, 100 };
    char err[256];
    Normalization z = { NORM_ZSCORE, 0, 0 }, r = { NORM_RESCALE, 0, 0 }, c = { NORM_CLIP, 2, 4 },
                  none = { NORM_NONE, 0, 0 }, ct = { NORM_CT, 0, 0 };
    float a[6];
    memcpy(a, x, sizeof a);
    ck_assert_int_eq(ds_normalize(a, 6, NULL, &z, NULL, err, sizeof err), 0);
    double s = 0, sq = 0;
    for (int i = 0; i < 6; i++) { s += a[i]; sq += a[i] * a[i]; }
    ck_assert_double_eq_tol(s / 6, 0, 1e-6);
    ck_assert_double_eq_tol(sq / 6, 1, 1e-5);
    memcpy(a, x, sizeof a);
    ck_assert_int_eq(ds_normalize(a, 6, NULL, &r, NULL, err, sizeof err), 0);
    ck_assert_float_eq(a[0], 0);
    ck_assert_float_eq(a[5], 1);
    memcpy(a, x, sizeof a);
    ck_assert_int_eq(ds_normalize(a, 6, NULL, &c, NULL, err, sizeof err), 0);
    ck_assert_float_eq(a[0], a[1]);   /* clipped to 2 */
    ck_assert_float_eq(a[3], a[5]);   /* clipped to 4 */
    memcpy(a, x, sizeof a);
    ck_assert_int_eq(ds_normalize(a, 6, NULL, &none, NULL, err, sizeof err), 0);
    ck_assert_float_eq(a[5], 100);
    ck_assert_int_ne(ds_normalize(a, 6, NULL, &ct, NULL, err, sizeof err), 0);
    DsChannelStats st = { 1, 3, 2, 1.5, 10, 6 };
    ck_assert_int_eq(ds_normalize(a, 6, NULL, &ct, &st, err, sizeof err), 0);
    ck_assert_double_eq_tol(a[0], (1.5 - 3) / 2.0, 1e-6);
    ck_assert_double_eq_tol(a[2], 0, 1e-6);
    ck_assert_double_eq_tol(a[5], (10 - 3) / 2.0, 1e-6);

    /* dataset statistics: the training foreground (label 1: x >= 3) of both cases */
    char *root = syn_root("ct");
    make_syn(root, NULL);
    Dataset *ds = ds_open(root, err, sizeof err);
    ck_assert_msg(ds != NULL, "%s", err);
    DsParams p;
    ds_params_default(&p, &ct);
    ck_assert_msg(ds_preprocess(ds, &p, NULL, -1, err, sizeof err) == 0, "%s", err);
    float img[120], lab[120];
    double sum[2] = { 0 }, n = 0;
    for (int which = 0; which < 2; which++)
        for (int ch = 0; ch < 2; ch++) {
            syn_volume(img, lab, which, ch);
            for (int i = 0; i < 120; i++)
                if (lab[i] > 0) { sum[ch] += img[i]; n += ch == 0; }
        }
    ck_assert_int_eq(ds->stats[0].nvoxels, (int64_t)n);
    ck_assert_double_eq_tol(ds->stats[0].mean, sum[0] / n, 1e-6);
    ck_assert_double_eq_tol(ds->stats[1].mean, sum[1] / n, 1e-6);
    ck_assert(ds->stats[0].p005 > 3 && ds->stats[0].p995 < 400);
    /* case a, channel 0, voxel (x 3, y 0, z 0) = 4 is clipped up to p0.5 */
    const DsPrepped *pa = ds_case(ds, 0);
    double want = (ds->stats[0].p005 - ds->stats[0].mean) / ds->stats[0].sd;
    ck_assert_double_eq_tol(pa->image[3], want, 1e-5);
    ds_free(ds);
}
END_TEST

static void touch_later(const char *path)
{
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec += 5;
    ts[1] = ts[0];
    ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
}

START_TEST(cache_reuse)
{
    char *root = syn_root("Cache");
    make_syn(root, NULL);
    char cache[256], err[512], p[512];
    snprintf(cache, sizeof cache, "%s/pre/Syn", dir);
    DsParams prm;
    ds_params_default(&prm, NULL);
    Dataset *ds = ds_open(root, err, sizeof err);
    ck_assert_msg(ds != NULL, "%s", err);
    ck_assert_msg(ds_preprocess(ds, &prm, cache, -1, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(ds->n_computed, 3);
    ck_assert_int_eq(ds->n_cached, 0);
    int64_t n = 2 * 4 * 5 * 6;
    float *first = malloc(sizeof(float) * (size_t)n);
    memcpy(first, ds_case(ds, 1)->image, sizeof(float) * (size_t)n);
    ds_free(ds);

    ds = ds_open(root, err, sizeof err);
    ck_assert_msg(ds_preprocess(ds, &prm, cache, -1, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(ds->n_computed, 0);
    ck_assert_int_eq(ds->n_cached, 3);
    const DsPrepped *c = ds_case(ds, 1);
    ck_assert_int_eq(c->from_cache, 1);
    ck_assert_int_eq(memcmp(first, c->image, sizeof(float) * (size_t)n), 0);
    ck_assert_int_eq(c->labels[3], 1);
    ck_assert_int_eq(c->geom.bbox_hi[2], 6);
    free(first);
    ds_free(ds);

    /* a source file changes (mtime): only that case is recomputed; a
     * damaged cache header is recomputed silently */
    snprintf(p, sizeof p, "%s/labelsTr/case_b.nii.gz", root);
    touch_later(p);
    snprintf(p, sizeof p, "%s/case_c.json", cache);
    write_text(p, "{ \"key\": [ truncated");
    ds = ds_open(root, err, sizeof err);
    ck_assert_msg(ds_preprocess(ds, &prm, cache, -1, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(ds->n_computed, 2);
    ck_assert_int_eq(ds->n_cached, 1);
    ck_assert_int_eq(ds_case(ds, 0)->from_cache, 1);
    /* other parameters: recomputed */
    DsParams p2 = prm;
    p2.spacing[0] = 0.5;
    ck_assert_msg(ds_preprocess(ds, &p2, cache, 0, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(ds->n_computed, 3);
    ck_assert_int_eq(ds_case(ds, 0)->from_cache, 0);
    ck_assert_int_eq(ds_case(ds, 0)->shape[0], 8);
    ds_free(ds);
    /* the old arrays of case_b were replaced, not kept */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | grep -c '^case_b-.*\\.img$') -eq 1", cache);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Preprocess (flipped/permuted grid, crop, 2x coarser) and undo: a blocky
 * label volume comes back exactly, in the source file's voxel order. */
START_TEST(undo_round_trip)
{
    const int64_t NX = 12, NY = 14, NZ = 13;
    /* canonical arrays first: nonzero image in x 2..9, y 4..11, z 1..8 (size 8 each),
     * labels in 2x2x2 blocks aligned to the box */
    float *cimg = calloc((size_t)(NX * NY * NZ), sizeof(float)), *clab = calloc((size_t)(NX * NY * NZ), sizeof(float));
    for (int64_t z = 1; z <= 8; z++)
        for (int64_t y = 4; y <= 11; y++)
            for (int64_t x = 2; x <= 9; x++) {
                int64_t i = (z * NY + y) * NX + x;
                cimg[i] = (float)(1 + (x * 3 + y * 5 + z * 7) % 11);
                int64_t bx = (x - 2) / 2, by = (y - 4) / 2, bz = (z - 1) / 2;
                clab[i] = (float)((bx + 2 * by + bz) % 3);
            }
    /* source: i <- y reversed, j <- z, k <- x reversed */
    const int64_t sd[3] = { NY, NZ, NX };
    float *simg = malloc(sizeof(float) * (size_t)(NX * NY * NZ)), *slab = malloc(sizeof(float) * (size_t)(NX * NY * NZ));
    for (int64_t k = 0; k < NX; k++)
        for (int64_t j = 0; j < NZ; j++)
            for (int64_t i = 0; i < NY; i++) {
                int64_t s = (k * NZ + j) * NY + i, c = (j * NY + (NY - 1 - i)) * NX + (NX - 1 - k);
                simg[s] = cimg[c];
                slab[s] = clab[c];
            }
    double A[3][4] = { { 0, 0, -1, 20 }, { -1, 0, 0, 30 }, { 0, 1, 0, -4 } };
    char a[256], b[256], err[512];
    snprintf(a, sizeof a, "%s/u.nii.gz", dir);
    snprintf(b, sizeof b, "%s/ul.nii.gz", dir);
    write_nii(a, sd, simg, A, XFORM_SFORM);
    write_nii(b, sd, slab, A, XFORM_SFORM);
    Volume v, l;
    ck_assert_msg(vol_read(a, &v, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(vol_read(b, &l, err, sizeof err) == 0, "%s", err);
    uint8_t ok[256] = { 1, 1, 1 };
    for (int t = 0; t < 2; t++) {
        DsParams p;
        ds_params_default(&p, NULL);
        if (t == 1) p.spacing[0] = p.spacing[1] = p.spacing[2] = 2;
        DsPrepped pp;
        ck_assert_msg(ds_prepare(&v, 1, &l, &p, NULL, NULL, ok, &pp, err, sizeof err) == 0, "%s", err);
        ck_assert_int_eq(pp.geom.bbox_lo[0], 1);
        ck_assert_int_eq(pp.geom.bbox_lo[1], 4);
        ck_assert_int_eq(pp.geom.bbox_lo[2], 2);
        ck_assert_int_eq(pp.shape[0], t ? 4 : 8);
        uint8_t *back = malloc((size_t)(NX * NY * NZ));
        ck_assert_msg(ds_undo_labels(&pp.geom, pp.labels, back, err, sizeof err) == 0, "%s", err);
        for (int64_t s = 0; s < NX * NY * NZ; s++)
            ck_assert_msg(back[s] == (uint8_t)slab[s], "spacing %d: voxel %lld is %d, want %g", t ? 2 : 1, (long long)s,
                          back[s], (double)slab[s]);
        free(back);
        ds_prepped_free(&pp);
    }
    vol_free(&v);
    vol_free(&l);
    free(cimg); free(clab); free(simg); free(slab);
}
END_TEST

/* The real thing: Colin27 from Debian's mricron-data (scripts/fetch_colin27.sh). */
START_TEST(colin27)
{
    int rc = system("scripts/fetch_colin27.sh build/data > build/data-fetch.log 2>&1");
    if (rc != 0) {
        size_t len;
        char *log = read_file("build/data-fetch.log", &len);
        ck_abort_msg("scripts/fetch_colin27.sh failed:\n%s", log ? log : "(no output)");
    }
    char err[1024];
    Dataset *ds = ds_open("build/data/Dataset001_Colin27BET", err, sizeof err);
    ck_assert_msg(ds != NULL, "%s", err);
    ck_assert_int_eq(ds->ntrain, 2);
    ck_assert_int_eq(ds->ncases, 3);
    ck_assert_str_eq(ds->cases[0].name, "colin27_lower");
    ck_assert_str_eq(ds->cases[1].name, "colin27_upper");
    ck_assert_str_eq(ds->cases[2].name, "colin27_slab");
    ck_assert_ptr_nonnull(ds->cases[2].label);
    const int64_t nz[3] = { 95, 46, 30 };
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(ds->cases[i].shape[0], nz[i]);
        ck_assert_int_eq(ds->cases[i].shape[1], 217);
        ck_assert_int_eq(ds->cases[i].shape[2], 181);
        ck_assert_double_eq_tol(ds->cases[i].spacing[0], 1, 1e-6);
    }
    DsParams p;
    ds_params_default(&p, NULL);   /* zscore, keep 1 mm */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_msg(ds_preprocess(ds, &p, NULL, -1, err, sizeof err) == 0, "%s", err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    int64_t fg = 0, tot = 0;
    for (int i = 0; i < 3; i++) {
        const DsPrepped *c = ds_case(ds, i);
        ck_assert_int_eq(c->geom.perm[0], 0);   /* already RAS: no reorientation */
        ck_assert_int_eq(c->geom.flip[0] + c->geom.flip[1] + c->geom.flip[2], 0);
        int64_t n = c->shape[0] * c->shape[1] * c->shape[2], f = 0;
        for (int64_t v = 0; v < n; v++) f += c->labels[v];
        fg += f;
        tot += n;
        if (getenv("NETC_DATASET_VERBOSE"))
            fprintf(stderr, "colin27 %s: cropped (z y x) %lld x %lld x %lld, bbox z %lld-%lld y %lld-%lld x %lld-%lld, "
                    "brain %.1f%%\n", ds->cases[i].name, (long long)c->shape[0], (long long)c->shape[1],
                    (long long)c->shape[2], (long long)c->geom.bbox_lo[0], (long long)c->geom.bbox_hi[0],
                    (long long)c->geom.bbox_lo[1], (long long)c->geom.bbox_hi[1], (long long)c->geom.bbox_lo[2],
                    (long long)c->geom.bbox_hi[2], 100.0 * (double)f / (double)n);
        /* undo: the labels on the original grid come back exactly */
        Volume l;
        ck_assert_msg(vol_read(ds->cases[i].label, &l, err, sizeof err) == 0, "%s", err);
        uint8_t *back = malloc((size_t)vol_numel(&l));
        ck_assert_msg(ds_undo_labels(&c->geom, c->labels, back, err, sizeof err) == 0, "%s", err);
        int64_t bad = 0, first_bad = -1;
        for (int64_t v = 0; v < vol_numel(&l); v++)
            if (back[v] != (uint8_t)l.data[v]) { bad++; if (first_bad < 0) first_bad = v; }
        ck_assert_msg(bad == 0, "%s: %lld voxels differ after undo (first %lld)", ds->cases[i].name, (long long)bad,
                      (long long)first_bad);
        free(back);
        vol_free(&l);
    }
    double frac = (double)fg / (double)tot;
    if (getenv("NETC_DATASET_VERBOSE"))
        fprintf(stderr, "colin27: brain fraction of the cropped head %.3f; preprocessing 3 cases %.2f s\n", frac, secs);
    ck_assert_msg(frac > 0.25 && frac < 0.55, "brain fraction %.3f of the cropped head", frac);
    ds_free(ds);

    ds = ds_open("build/data/Colin27Tiny", err, sizeof err);
    ck_assert_msg(ds != NULL, "%s", err);
    ck_assert_int_eq(ds->ntrain, 2);
    ck_assert_int_eq(ds->ncases, 3);
    ck_assert_int_eq(ds->cases[0].shape[0], 17);
    ck_assert_int_eq(ds->cases[0].shape[1], 54);
    ck_assert_int_eq(ds->cases[0].shape[2], 45);
    ck_assert_int_eq(ds->cases[2].shape[0], 7);
    ck_assert_double_eq_tol(ds->cases[0].spacing[1], 4, 1e-6);
    ck_assert_msg(ds_preprocess(ds, &p, NULL, -1, err, sizeof err) == 0, "%s", err);
    const DsPrepped *c = ds_case(ds, 2);
    int64_t n = c->shape[0] * c->shape[1] * c->shape[2], f = 0;
    for (int64_t v = 0; v < n; v++) f += c->labels[v];
    ck_assert_msg(f > n / 5 && f < n, "tiny slab: %lld of %lld voxels brain", (long long)f, (long long)n);
    ds_free(ds);
}
END_TEST

Suite *dataset_suite(void)
{
    Suite *s = suite_create("dataset");
    TCase *tc = tcase_create("synthetic");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, open_syn);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, orientation);
    tcase_add_test(tc, crop_and_mask);
    tcase_add_test(tc, resample_ramp);
    tcase_add_test(tc, normalization);
    tcase_add_test(tc, cache_reuse);
    tcase_add_test(tc, undo_round_trip);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("colin27");
    tcase_set_timeout(tr, 300);
    tcase_add_test(tr, colin27);
    suite_add_tcase(s, tr);
    return s;
}
