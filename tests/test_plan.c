/* test_plan.c — `netc plan`: nnU-Net's planning rules on synthetic
 * fingerprints with known answers, and the fingerprint of a tiny NIfTI
 * dataset written here (runtime/plan.c). */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <nifti1_io.h>

#include "plan.h"
#include "support.h"

/* ---- percentiles and statistics ---- */

START_TEST(intensity_stats)
{
    /* 1 .. 101 in a scrambled order: np.percentile gives 1.5 and 100.5 */
    float v[101];
    for (int i = 0; i < 101; i++) v[i] = (float)(1 + (i * 37) % 101);
    PlanIntensity s = { .nforeground = 101 };
    plan_intensity_stats(v, 101, &s);
    ck_assert_int_eq(s.n, 101);
    ck_assert_int_eq(s.nforeground, 101);
    ck_assert_double_eq_tol(s.mean, 51.0, 1e-9);
    ck_assert_double_eq_tol(s.sd, sqrt(850.0), 1e-9);
    ck_assert_double_eq_tol(s.median, 51.0, 1e-9);
    ck_assert_double_eq(s.min, 1.0);
    ck_assert_double_eq(s.max, 101.0);
    ck_assert_double_eq_tol(s.p005, 1.5, 1e-9);
    ck_assert_double_eq_tol(s.p995, 100.5, 1e-9);
    /* interpolation between two values: p25 of {0, 10} = 2.5 */
    float two[2] = { 0, 10 };
    ck_assert_double_eq_tol(plan_percentile(two, 2, 25), 2.5, 1e-12);
    ck_assert_double_eq(plan_percentile(two, 1, 99.5), 0);
    PlanIntensity none = { .nforeground = 0 };
    plan_intensity_stats(NULL, 0, &none);
    ck_assert_int_eq(none.n, 0);
}
END_TEST

/* ---- target spacing ---- */

START_TEST(target_spacing_median)
{
    double sp[5][3] = { { 1, 1, 1 }, { 1.2, 0.9, 0.9 }, { 0.8, 1, 1 }, { 1, 1.1, 1.1 }, { 1.5, 1, 1 } };
    int64_t sh[5][3] = { { 100, 120, 120 }, { 90, 130, 130 }, { 110, 110, 110 }, { 100, 120, 120 }, { 80, 100, 100 } };
    double t[3];
    int a;
    plan_target_spacing((const double (*)[3])sp, (const int64_t (*)[3])sh, 5, t, &a);
    ck_assert_int_eq(a, -1);
    ck_assert_double_eq_tol(t[0], 1.0, 1e-12);
    ck_assert_double_eq_tol(t[1], 1.0, 1e-12);
    ck_assert_double_eq_tol(t[2], 1.0, 1e-12);
    /* even count: the mean of the two middle values */
    plan_target_spacing((const double (*)[3])sp, (const int64_t (*)[3])sh, 2, t, &a);
    ck_assert_double_eq_tol(t[0], 1.1, 1e-12);
    ck_assert_double_eq_tol(t[1], 0.95, 1e-12);
}
END_TEST

/* 0.7 x 0.7 in plane, thick slices of 4 .. 6 mm, 20 slices of 512 x 512 */
static const double ANISO_SP[5][3] = { { 4, 0.7, 0.7 }, { 5, 0.7, 0.7 }, { 5, 0.7, 0.7 }, { 5, 0.7, 0.7 }, { 6, 0.7, 0.7 } };
static const int64_t ANISO_SH[5][3] = { { 20, 512, 512 }, { 20, 512, 512 }, { 20, 512, 512 }, { 20, 512, 512 }, { 20, 512, 512 } };

START_TEST(target_spacing_anisotropic)
{
    double t[3];
    int a;
    plan_target_spacing(ANISO_SP, ANISO_SH, 5, t, &a);
    ck_assert_int_eq(a, 0);
    ck_assert_double_eq_tol(t[0], 4.4, 1e-12);   /* np.percentile([4,5,5,5,6], 10) */
    ck_assert_double_eq_tol(t[1], 0.7, 1e-12);
    /* many voxels along the coarse axis: the rule does not apply */
    int64_t deep[5][3];
    for (int i = 0; i < 5; i++) { deep[i][0] = 400; deep[i][1] = deep[i][2] = 512; }
    plan_target_spacing(ANISO_SP, (const int64_t (*)[3])deep, 5, t, &a);
    ck_assert_int_eq(a, -1);
    ck_assert_double_eq_tol(t[0], 5.0, 1e-12);
    /* the 10th percentile is never finer than the other axes */
    double sp2[5][3] = { { 0.5, 0.6, 0.6 }, { 0.5, 0.6, 0.6 }, { 5, 0.6, 0.6 }, { 5, 0.6, 0.6 }, { 5, 0.6, 0.6 } };
    plan_target_spacing((const double (*)[3])sp2, ANISO_SH, 5, t, &a);
    ck_assert_int_eq(a, 0);
    ck_assert_double_eq_tol(t[0], 0.6 + 1e-5, 1e-12);
}
END_TEST

/* ---- topology ---- */

START_TEST(topology_isotropic)
{
    PlanConfig c;
    double sp[3] = { 1, 1, 1 };
    int64_t patch[3] = { 160, 160, 160 };
    ck_assert_int_eq(plan_topology(3, sp, patch, &c), 0);
    /* 160 -> 80 -> 40 -> 20 -> 10 -> 5: five poolings, then 5 < 8 stops */
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(c.npool[k], 5);
        ck_assert_int_eq(c.divisor[k], 32);
        ck_assert_int_eq(c.patch[k], 160);
    }
    ck_assert_int_eq(c.nstages, 6);
    for (int s = 1; s < 6; s++) ck_assert_int_eq(c.stride[s][0], 2);
    ck_assert_int_eq(c.features[0], 32);
    ck_assert_int_eq(c.features[4], 320);   /* min(32 * 2^i, 320) */
    ck_assert_int_eq(c.features[5], 320);
    /* only one axis left: it needs 12 voxels (3 x 4) to pool once more */
    int64_t p2[2] = { 8, 11 };
    double sp2[2] = { 1, 1 };
    ck_assert_int_eq(plan_topology(2, sp2, p2, &c), 0);
    ck_assert_int_eq(c.npool[0], 1);
    ck_assert_int_eq(c.npool[1], 1);   /* 8 -> 4 and 11 -> 6, then 6 < 12 */
    ck_assert_int_eq(c.patch[1], 12);   /* padded to a multiple of 2 */
}
END_TEST

START_TEST(topology_anisotropic)
{
    PlanConfig c;
    double sp[3] = { 4.4, 0.7, 0.7 };
    int64_t patch[3] = { 23, 256, 256 };
    ck_assert_int_eq(plan_topology(3, sp, patch, &c), 0);
    /* no z pooling until the in-plane spacing is within 2x: 0.7, 1.4 pool
     * in plane only; at 2.8, 4.4 / 2.8 < 2 and z joins */
    ck_assert_int_eq(c.stride[1][0], 1);
    ck_assert_int_eq(c.stride[1][1], 2);
    ck_assert_int_eq(c.stride[2][0], 1);
    ck_assert_int_eq(c.stride[3][0], 2);
    ck_assert_int_eq(c.stride[3][2], 2);
    /* kernels: 1 x 3 x 3 until z is within 2x of the finest spacing */
    ck_assert_int_eq(c.kernel[0][0], 1);
    ck_assert_int_eq(c.kernel[0][1], 3);
    ck_assert_int_eq(c.kernel[1][0], 1);
    ck_assert_int_eq(c.kernel[2][0], 3);
    ck_assert_int_eq(c.kernel[c.nstages - 1][0], 3);
    /* z: 23 -> 12 -> 6: two poolings; y, x: 256 -> ... -> 4: six */
    ck_assert_int_eq(c.npool[0], 2);
    ck_assert_int_eq(c.npool[1], 6);
    ck_assert_int_eq(c.npool[2], 6);
    ck_assert_int_eq(c.patch[0], 24);
    ck_assert_int_eq(c.patch[1], 256);
}
END_TEST

/* ---- whole configurations with known nnU-Net answers ---- */

START_TEST(configure_hippocampus)
{
    /* MSD Task04 Hippocampus: 260 cases, 1 mm, median 36 x 50 x 35; nnU-Net
     * v2 plans 3d_fullres patch 40 x 56 x 40, batch 9; 2d patch 56 x 40, batch 366 */
    PlanOptions o = { 8, 32 };
    PlanConfig c;
    char err[256];
    double sp[3] = { 1, 1, 1 }, med[3] = { 36, 50, 35 };
    double vox = 36.0 * 50 * 35 * 260;
    ck_assert_msg(plan_configure(3, sp, med, 3, vox, &o, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.patch[0], 40);
    ck_assert_int_eq(c.patch[1], 56);
    ck_assert_int_eq(c.patch[2], 40);
    ck_assert_int_eq(c.npool[0], 3);
    ck_assert_int_eq(c.batch, 9);
    ck_assert_int_eq(c.batch_cap, 9);
    ck_assert_int_eq(c.shrinks, 0);
    ck_assert_msg(plan_configure(2, sp + 1, med + 1, 3, vox, &o, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.patch[0], 56);
    ck_assert_int_eq(c.patch[1], 40);
    ck_assert_int_eq(c.batch, 366);
}
END_TEST

START_TEST(configure_brain_tumour)
{
    /* MSD Task01 BrainTumour: 484 cases, 1 mm, median 138 x 169 x 138, 4
     * classes; nnU-Net v2 plans 3d_fullres patch 128 x 128 x 128, batch 2,
     * 5 poolings per axis */
    PlanOptions o = { 8, 32 };
    PlanConfig c;
    char err[256];
    double sp[3] = { 1, 1, 1 }, med[3] = { 138, 169, 138 };
    ck_assert_msg(plan_configure(3, sp, med, 4, 138.0 * 169 * 138 * 484, &o, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.patch[0], 128);
    ck_assert_int_eq(c.patch[1], 128);
    ck_assert_int_eq(c.patch[2], 128);
    ck_assert_int_eq(c.npool[1], 5);
    ck_assert_int_eq(c.batch, 2);
    ck_assert(c.shrinks > 0);
    ck_assert(c.fmap_voxels <= c.budget_voxels);
}
END_TEST

START_TEST(configure_2d_large)
{
    /* nnU-Net v2 on 2848 x 4288 fundus photographs (1 mm, 2D; the plans
     * quoted in MIC-DKFZ/nnUNet#2251): patch 1024 x 1536, batch 2.  The 2D
     * reference (85 M at batch 12) is applied at batch 2: up to 510 M. */
    PlanOptions o = { 8, 32 };
    PlanConfig c;
    char err[256];
    double sp[2] = { 1, 1 }, med[2] = { 2848, 4288 };
    ck_assert_msg(plan_configure(2, sp, med, 2, 2848.0 * 4288 * 50, &o, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.patch[0], 1024);
    ck_assert_int_eq(c.patch[1], 1536);
    ck_assert_int_eq(c.batch, 2);
    ck_assert_double_eq_tol(c.budget_voxels, 510e6, 1);
    ck_assert(c.fmap_voxels <= c.budget_voxels);
}
END_TEST

START_TEST(configure_budget)
{
    /* shrinking to a smaller budget keeps every axis a multiple of 2^poolings */
    double sp[3] = { 1, 1, 1 }, med[3] = { 200, 230, 190 };
    double prev = INFINITY;
    for (double gb = 16; gb >= 1; gb /= 2) {
        PlanOptions o = { gb, 32 };
        PlanConfig c;
        char err[256];
        ck_assert_msg(plan_configure(3, sp, med, 2, 200.0 * 230 * 190 * 100, &o, &c, err, sizeof err) == 0, "%s", err);
        ck_assert(c.fmap_voxels <= c.budget_voxels);
        ck_assert_double_eq_tol(c.budget_voxels, 560e6 * gb / 8, 1);
        double vol = 1;
        for (int k = 0; k < 3; k++) {
            ck_assert_int_eq(c.divisor[k], (int64_t)1 << c.npool[k]);
            ck_assert_msg(c.patch[k] % c.divisor[k] == 0, "%g GB: axis %d patch %lld not a multiple of %lld", gb, k,
                          (long long)c.patch[k], (long long)c.divisor[k]);
            vol *= (double)c.patch[k];
        }
        ck_assert(c.batch >= 2);
        ck_assert(vol <= prev);
        prev = vol;
        if (gb < 8) ck_assert(c.shrinks > 0);
    }
    /* a budget far too small fails with a message */
    PlanOptions tiny = { 1e-9, 32 };
    PlanConfig c;
    char err[256] = "";
    ck_assert_int_ne(plan_configure(3, sp, med, 2, 1e9, &tiny, &c, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "too small") != NULL, "%s", err);
}
END_TEST

START_TEST(configure_anisotropic)
{
    double t[3];
    int a;
    plan_target_spacing(ANISO_SP, ANISO_SH, 5, t, &a);
    double med[3] = { 23, 512, 512 };
    PlanOptions o = { 8, 32 };
    PlanConfig c;
    char err[256];
    ck_assert_msg(plan_configure(3, t, med, 2, 23.0 * 512 * 512 * 5, &o, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.stride[1][0], 1);   /* no z pooling in the first stages */
    ck_assert_int_eq(c.stride[1][1], 2);
    ck_assert_int_eq(c.kernel[0][0], 1);
    ck_assert(c.npool[0] < c.npool[1]);
    for (int k = 0; k < 3; k++) ck_assert_int_eq(c.patch[k] % c.divisor[k], 0);
    ck_assert(c.patch[0] <= 24);
}
END_TEST

START_TEST(channel_norms)
{
    ck_assert_int_eq(plan_channel_norm("CT", 1).kind, NORM_CT);
    ck_assert_int_eq(plan_channel_norm("ct", 0).kind, NORM_CT);
    ck_assert_int_eq(plan_channel_norm("T1", 0).kind, NORM_ZSCORE);
    ck_assert_int_eq(plan_channel_norm("T1", 1).kind, NORM_ZSCORE_NONZERO);
    ck_assert_int_eq(plan_channel_norm("noNorm", 1).kind, NORM_NONE);
    ck_assert_int_eq(plan_channel_norm("rescale_to_0_1", 0).kind, NORM_RESCALE);
    char n[64];
    plan_default_name("Colin27BET", n, sizeof n);
    ck_assert_str_eq(n, "colin27bet");
    plan_default_name("3 Prostate-MRI", n, sizeof n);
    ck_assert_str_eq(n, "c_3_prostate_mri");
    ck_assert(plan_valid_name("abc_1"));
    ck_assert(!plan_valid_name("net"));
    ck_assert(!plan_valid_name("1abc"));
    ck_assert(!plan_valid_name("a-b"));
}
END_TEST

/* A hand-made fingerprint: CT + PET (different normalizations), thick
 * slices, class names that are keywords or not identifiers, a label gap. */
START_TEST(protocol_text_names)
{
    PlanCase cases[5];
    char cname[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(cname[i], sizeof cname[i], "c%d", i % 10);
        cases[i] = (PlanCase){ cname[i], { ANISO_SP[i][0], 0.7, 0.7 }, { 30, 512, 512 }, { 20, 400, 380 } };
    }
    PlanFingerprint fp;
    memset(&fp, 0, sizeof fp);
    fp.dataset = "Head & Neck";
    fp.root = "/data/hn";
    fp.ncases = 5;
    fp.cases = cases;
    fp.nchannels = 2;
    fp.channel_names[0] = "CT";
    fp.channel_names[1] = "PET";
    fp.intensity[0] = (PlanIntensity){ 100, 100, 40, 10, 40, -100, 200, -50, 150 };
    fp.nclasses = 5;
    fp.class_names[0] = "background";
    fp.class_names[1] = "left atrium";
    fp.class_names[3] = "in";
    fp.class_names[4] = "1st node";
    fp.median_relative_size = 0.9;
    PlanOptions o = { 8, 32 };
    Plan pl;
    char err[2048];
    ck_assert_msg(plan_compute(&fp, &o, &pl, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(pl.aniso_axis, 0);
    ck_assert_int_eq(pl.norm[0].kind, NORM_CT);
    ck_assert_int_eq(pl.norm[1].kind, NORM_ZSCORE);
    ck_assert_int_eq(pl.modality, MOD_OTHER);
    char stem[64];
    plan_default_name(fp.dataset, stem, sizeof stem);
    ck_assert_str_eq(stem, "head_neck");
    char *text = plan_protocol_text(&fp, &pl, stem, err, sizeof err);
    ck_assert_msg(text != NULL, "%s", err);
    ck_assert_msg(strstr(text, "channels  ct, pet"), "%s", text);
    ck_assert_msg(strstr(text, "classes   background, left_atrium, label2, in_, c_1st_node"), "%s", text);
    ck_assert_msg(strstr(text, "a protocol has one: it says channel 0's"), "%s", text);
    ck_assert_msg(strstr(text, "normalize ct"), "%s", text);
    ck_assert_msg(strstr(text, "10th percentile"), "%s", text);
    ck_assert_msg(strstr(text, "spacing   4.4 x 0.7 x 0.7 mm"), "%s", text);
    ck_assert_msg(strstr(text, "-D depth=2 "), "%s", text);   /* z pools twice */
    free(text);
    /* a CT channel without foreground cannot be planned */
    fp.intensity[0].n = 0;
    ck_assert_int_ne(plan_compute(&fp, &o, &pl, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "no foreground") != NULL, "%s", err);
}
END_TEST

/* ---- a tiny NIfTI dataset ---- */

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/netc-plan-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* x fastest; spacing (dx, dy, dz), axis-aligned RAS sform */
static void write_vol(const char *path, const int d[3], const float *data, const double sp[3])
{
    int dims[8] = { 3, d[0], d[1], d[2], 1, 1, 1, 1 };
    nifti_image *nim = nifti_make_new_nim(dims, NIFTI_TYPE_FLOAT32, 1);
    ck_assert_ptr_nonnull(nim);
    memcpy(nim->data, data, sizeof(float) * (size_t)d[0] * (size_t)d[1] * (size_t)d[2]);
    mat44 m;
    memset(&m, 0, sizeof m);
    for (int k = 0; k < 3; k++) m.m[k][k] = (float)sp[k];
    m.m[3][3] = 1;
    nim->dx = nim->pixdim[1] = (float)sp[0];
    nim->dy = nim->pixdim[2] = (float)sp[1];
    nim->dz = nim->pixdim[3] = (float)sp[2];
    nim->qform_code = 0;
    nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
    nim->sto_xyz = m;
    ck_assert_int_eq(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
}

/* Three CT cases 10 x 12 x 8 (x y z) at 0.8 x 0.8 x 2.5 mm.  Case i is
 * nonzero in the box x 2..7, y 3..10, z 1..(5 + i) (value 1000 + voxel
 * index), label 1 where x >= 5 inside the box. */
static const int TD[3] = { 10, 12, 8 };

static void make_tiny(const char *root, float *fg, int64_t *nfg)
{
    char p[512], cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/imagesTr' '%s/labelsTr'", root, root);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(p, sizeof p, "%s/dataset.json", root);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{ \"name\": \"Tiny CT\", \"channel_names\": {\"0\": \"CT\"},\n"
          "  \"labels\": {\"background\": 0, \"lesion\": 1}, \"numTraining\": 3, \"file_ending\": \".nii.gz\" }\n",
          f);
    fclose(f);
    const double sp[3] = { 0.8, 0.8, 2.5 };
    int n = TD[0] * TD[1] * TD[2];
    float *img = malloc(sizeof(float) * (size_t)n), *lab = malloc(sizeof(float) * (size_t)n);
    ck_assert(img && lab);
    *nfg = 0;
    for (int c = 0; c < 3; c++) {
        for (int z = 0, i = 0; z < TD[2]; z++)
            for (int y = 0; y < TD[1]; y++)
                for (int x = 0; x < TD[0]; x++, i++) {
                    int in = x >= 2 && x <= 7 && y >= 3 && y <= 10 && z >= 1 && z <= 5 + c;
                    img[i] = in ? (float)(1000 + i + 7 * c) : 0.0f;
                    lab[i] = in && x >= 5 ? 1.0f : 0.0f;
                    if (lab[i] > 0) fg[(*nfg)++] = img[i];
                }
        snprintf(p, sizeof p, "%s/imagesTr/case%d_0000.nii.gz", root, c);
        write_vol(p, TD, img, sp);
        snprintf(p, sizeof p, "%s/labelsTr/case%d.nii.gz", root, c);
        write_vol(p, TD, lab, sp);
    }
    free(img);
    free(lab);
}

START_TEST(tiny_dataset)
{
    char root[256];
    snprintf(root, sizeof root, "%s/Tiny", dir);
    float *fg = malloc(sizeof(float) * 3000);
    int64_t nfg = 0;
    make_tiny(root, fg, &nfg);
    char err[2048] = "";
    PlanFingerprint fp;
    ck_assert_msg(plan_fingerprint(root, &fp, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(fp.ncases, 3);
    ck_assert_int_eq(fp.nchannels, 1);
    ck_assert_int_eq(fp.nclasses, 2);
    ck_assert_str_eq(fp.class_names[1], "lesion");
    for (int c = 0; c < 3; c++) {
        const PlanCase *pc = &fp.cases[c];
        ck_assert_double_eq_tol(pc->spacing[0], 2.5, 1e-6);   /* (z, y, x) */
        ck_assert_double_eq_tol(pc->spacing[2], 0.8, 1e-6);
        ck_assert_int_eq(pc->shape[0], 8);
        ck_assert_int_eq(pc->shape[1], 12);
        ck_assert_int_eq(pc->shape[2], 10);
        ck_assert_int_eq(pc->crop_shape[0], 5 + c);
        ck_assert_int_eq(pc->crop_shape[1], 8);
        ck_assert_int_eq(pc->crop_shape[2], 6);
    }
    /* relative sizes 240/960, 288/960, 336/960: the median 0.3 */
    ck_assert_double_eq_tol(fp.median_relative_size, 0.3, 1e-12);
    /* every foreground voxel, statistics as computed here */
    PlanIntensity want = { .nforeground = nfg };
    plan_intensity_stats(fg, nfg, &want);
    const PlanIntensity *s = &fp.intensity[0];
    ck_assert_int_eq(s->nforeground, nfg);
    ck_assert_int_eq(s->n, nfg);
    ck_assert_double_eq_tol(s->mean, want.mean, 1e-6);
    ck_assert_double_eq_tol(s->sd, want.sd, 1e-6);
    ck_assert_double_eq_tol(s->median, want.median, 1e-9);
    ck_assert_double_eq(s->min, want.min);
    ck_assert_double_eq(s->max, want.max);
    ck_assert_double_eq_tol(s->p005, want.p005, 1e-6);
    ck_assert_double_eq_tol(s->p995, want.p995, 1e-6);
    /* the same as the statistics `normalize ct` trains with */
    Dataset *ds = ds_open(root, err, sizeof err);
    ck_assert_msg(ds != NULL, "%s", err);
    ck_assert_msg(ds_compute_stats(ds, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_double_eq_tol(ds->stats[0].mean, s->mean, 1e-6);
    ck_assert_double_eq_tol(ds->stats[0].sd, s->sd, 1e-6);
    ck_assert_double_eq_tol(ds->stats[0].p005, s->p005, 1e-6);
    ck_assert_double_eq_tol(ds->stats[0].p995, s->p995, 1e-6);
    ds_free(ds);

    PlanOptions o = { 8, 32 };
    Plan pl;
    ck_assert_msg(plan_compute(&fp, &o, &pl, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(pl.norm[0].kind, NORM_CT);   /* CT: no mask even though the crop is small */
    ck_assert_int_eq(pl.use_nonzero_mask, 1);
    ck_assert_int_eq(pl.modality, MOD_CT);
    ck_assert_double_eq_tol(pl.spacing[0], 2.5, 1e-6);
    ck_assert_double_eq_tol(pl.median_crop_shape[0], 6, 1e-12);
    ck_assert_int_eq(pl.c3d.rank, 3);
    ck_assert_int_eq(pl.c2d.rank, 2);
    /* median crop 6 x 8 x 6: only y has the 8 voxels pooling needs, and a
     * single axis needs 12 (3 x 4), so nothing pools */
    for (int k = 0; k < 3; k++) ck_assert_int_eq(pl.c3d.npool[k], 0);
    ck_assert_int_eq(pl.c3d.nstages, 1);
    ck_assert_int_eq(pl.c3d.patch[0], 6);
    ck_assert_int_eq(pl.c3d.patch[1], 8);
    ck_assert_int_eq(pl.c3d.batch, 2);

    char *text = plan_protocol_text(&fp, &pl, "tiny", err, sizeof err);
    ck_assert_msg(text != NULL, "%s", err);
    ck_assert_msg(strstr(text, "protocol tiny_3d {") && strstr(text, "protocol tiny_2d {"), "%s", text);
    ck_assert_msg(strstr(text, "normalize ct") && strstr(text, "modality  ct"), "%s", text);
    ck_assert_msg(strstr(text, "classes   background, lesion"), "%s", text);
    ck_assert_msg(strstr(text, "spacing   2.5 x 0.8 x 0.8 mm"), "%s", text);
    ck_assert_msg(strstr(text, "too\n#   small to pool") && !strstr(text, "-D depth=0"), "%s", text);
    /* the text compiles with a net that imports it */
    char path[512], net[1024];
    snprintf(path, sizeof path, "%s/tiny.net", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    snprintf(net, sizeof net,
             "import \"%s\"\nnet tiny_net(classes = 2) {\n    input image\n"
             "    output logits = image -> conv(4, 3) -> relu -> conv(classes, 1)\n}\n", path);
    Compiled *cc = compile_text("use.net", net, "--protocol tiny_3d");
    ck_clean(cc);
    compiled_free(cc);
    cc = compile_text("use.net", net, "--protocol tiny_2d");
    ck_clean(cc);
    compiled_free(cc);
    free(text);
    ck_assert_int_eq(plan_protocol_text(&fp, &pl, "net", err, sizeof err) == NULL, 1);

    /* the fingerprint as JSON */
    snprintf(path, sizeof path, "%s/fp.json", dir);
    ck_assert_msg(plan_fingerprint_write_json(&fp, path, err, sizeof err) == 0, "%s", err);
    size_t len;
    char *js = read_file(path, &len);
    ck_assert_ptr_nonnull(js);
    cJSON *j = cJSON_Parse(js);
    ck_assert_ptr_nonnull(j);
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(j, "shapes_after_crop");
    ck_assert_int_eq(cJSON_GetArraySize(sa), 3);
    ck_assert_int_eq((int)cJSON_GetArrayItem(cJSON_GetArrayItem(sa, 2), 0)->valuedouble, 7);
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "foreground_intensity_properties_per_channel"), "0");
    ck_assert_double_eq_tol(cJSON_GetObjectItemCaseSensitive(ch, "mean")->valuedouble, s->mean, 1e-6);
    cJSON_Delete(j);
    free(js);
    /* an unwritable path: a message, nothing left behind */
    snprintf(path, sizeof path, "%s/no/such/dir/fp.json", dir);
    ck_assert_int_ne(plan_fingerprint_write_json(&fp, path, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "no/such/dir") != NULL, "%s", err);
    plan_fingerprint_free(&fp);
    free(fg);
}
END_TEST

START_TEST(fingerprint_errors)
{
    char err[1024] = "", root[256];
    PlanFingerprint fp;
    snprintf(root, sizeof root, "%s/missing", dir);
    ck_assert_int_ne(plan_fingerprint(root, &fp, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "missing") != NULL, "%s", err);
    /* a dataset whose label file is not a label volume */
    snprintf(root, sizeof root, "%s/Bad", dir);
    float *fg = malloc(sizeof(float) * 3000);
    int64_t nfg;
    make_tiny(root, fg, &nfg);
    free(fg);
    char p[512];
    snprintf(p, sizeof p, "%s/labelsTr/case1.nii.gz", root);
    float lab[960];
    for (int i = 0; i < 960; i++) lab[i] = 2.5f;
    const double sp[3] = { 0.8, 0.8, 2.5 };
    write_vol(p, TD, lab, sp);
    err[0] = 0;
    ck_assert_int_ne(plan_fingerprint(root, &fp, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "case1.nii.gz") != NULL, "%s", err);
}
END_TEST

Suite *plan_suite(void)
{
    Suite *s = suite_create("plan");
    TCase *tr = tcase_create("rules");
    tcase_add_test(tr, intensity_stats);
    tcase_add_test(tr, target_spacing_median);
    tcase_add_test(tr, target_spacing_anisotropic);
    tcase_add_test(tr, topology_isotropic);
    tcase_add_test(tr, topology_anisotropic);
    tcase_add_test(tr, configure_hippocampus);
    tcase_add_test(tr, configure_brain_tumour);
    tcase_add_test(tr, configure_2d_large);
    tcase_add_test(tr, configure_budget);
    tcase_add_test(tr, configure_anisotropic);
    tcase_add_test(tr, channel_norms);
    tcase_add_test(tr, protocol_text_names);
    suite_add_tcase(s, tr);
    TCase *td = tcase_create("dataset");
    tcase_add_checked_fixture(td, setup, teardown);
    tcase_set_timeout(td, 60);
    tcase_add_test(td, tiny_dataset);
    tcase_add_test(td, fingerprint_errors);
    suite_add_tcase(s, td);
    return s;
}
