/* test_nifti.c — NIfTI volumes in and out (runtime/nifti_io.c). */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nifti1_io.h>

#include "nifti_io.h"

Suite *nifti_suite(void);

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/netc-nifti-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* A 4x3x2 int16 volume with scl_slope 2 and scl_inter 1, spacing 0.5 x 1 x 3. */
static void write_int16(const char *path)
{
    int dims[8] = { 3, 4, 3, 2, 1, 1, 1, 1 };
    nifti_image *nim = nifti_make_new_nim(dims, NIFTI_TYPE_INT16, 1);
    ck_assert_ptr_nonnull(nim);
    for (int i = 0; i < 24; i++) ((int16_t *)nim->data)[i] = (int16_t)(i - 5);
    nim->scl_slope = 2;
    nim->scl_inter = 1;
    nim->dx = nim->pixdim[1] = 0.5f;
    nim->dy = nim->pixdim[2] = 1.0f;
    nim->dz = nim->pixdim[3] = 3.0f;
    ck_assert_int_eq(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
}

START_TEST(read_scaled_int16)
{
    char path[128];
    snprintf(path, sizeof path, "%s/a.nii.gz", dir);
    write_int16(path);
    Volume v;
    char err[512];
    ck_assert_msg(vol_read(path, &v, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(v.dim[0], 4);
    ck_assert_int_eq(v.dim[1], 3);
    ck_assert_int_eq(v.dim[2], 2);
    ck_assert_int_eq(v.dim[3], 1);
    ck_assert_double_eq_tol(v.spacing[2], 3.0, 1e-6);
    for (int i = 0; i < 24; i++) ck_assert_float_eq(v.data[i], (float)((i - 5) * 2 + 1));
    vol_free(&v);
}
END_TEST

START_TEST(write_like_round_trip)
{
    char in[128], out[128], lab[128];
    snprintf(in, sizeof in, "%s/a.nii", dir);
    snprintf(out, sizeof out, "%s/b.nii.gz", dir);
    snprintf(lab, sizeof lab, "%s/l.nii.gz", dir);
    write_int16(in);
    Volume v, w;
    char err[512];
    ck_assert_msg(vol_read(in, &v, err, sizeof err) == 0, "%s", err);
    float *probs = malloc(sizeof(float) * 48);
    for (int i = 0; i < 48; i++) probs[i] = (float)i / 7.0f;
    ck_assert_msg(vol_write_like(out, &v, probs, 2, 0, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(vol_read(out, &w, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(w.dim[3], 2);
    ck_assert_double_eq_tol(w.spacing[0], 0.5, 1e-6);
    for (int i = 0; i < 48; i++) ck_assert_float_eq(w.data[i], probs[i]);
    vol_free(&w);
    /* labels: rounded, clamped to uint8 */
    probs[0] = -3;
    probs[1] = 300;
    probs[2] = 1.6f;
    ck_assert_msg(vol_write_like(lab, &v, probs, 1, 1, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(vol_read(lab, &w, err, sizeof err) == 0, "%s", err);
    ck_assert_float_eq(w.data[0], 0);
    ck_assert_float_eq(w.data[1], 255);
    ck_assert_float_eq(w.data[2], 2);
    vol_free(&w);
    /* no temporary files left behind */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp-", dir);
    ck_assert_int_ne(system(cmd), 0);
    free(probs);
    vol_free(&v);
}
END_TEST

START_TEST(malformed_inputs)
{
    char path[128], err[512];
    Volume v;
    ck_assert_int_eq(vol_read("/nonexistent/x.nii", &v, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/x.nii"));
    ck_assert_int_eq(vol_read(dir, &v, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
    /* garbage bytes */
    snprintf(path, sizeof path, "%s/junk.nii", dir);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 400; i++) fputc((i * 37) & 0xff, f);
    fclose(f);
    ck_assert_int_eq(vol_read(path, &v, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "junk.nii"));
    /* a valid header whose data is cut short */
    snprintf(path, sizeof path, "%s/cut.nii", dir);
    write_int16(path);
    ck_assert_int_eq(truncate(path, 352 + 10), 0);
    ck_assert_int_eq(vol_read(path, &v, err, sizeof err), -1);
    /* a compressed file cut short */
    snprintf(path, sizeof path, "%s/cut.nii.gz", dir);
    write_int16(path);
    ck_assert_int_eq(truncate(path, 60), 0);
    ck_assert_int_eq(vol_read(path, &v, err, sizeof err), -1);
    /* output name must say NIfTI */
    snprintf(path, sizeof path, "%s/a.nii", dir);
    write_int16(path);
    ck_assert_int_eq(vol_read(path, &v, err, sizeof err), 0);
    char bad[128];
    snprintf(bad, sizeof bad, "%s/out.png", dir);
    ck_assert_int_eq(vol_write_like(bad, &v, v.data, 1, 0, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, ".nii"));
    /* an unwritable place leaves nothing and says so */
    ck_assert_int_eq(vol_write_like("/nonexistent/dir/o.nii", &v, v.data, 1, 0, err, sizeof err), -1);
    vol_free(&v);
}
END_TEST

Suite *nifti_suite(void)
{
    Suite *s = suite_create("nifti");
    TCase *tc = tcase_create("io");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, read_scaled_int16);
    tcase_add_test(tc, write_like_round_trip);
    tcase_add_test(tc, malformed_inputs);
    suite_add_tcase(s, tc);
    return s;
}
