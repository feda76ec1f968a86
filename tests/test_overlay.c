/* test_overlay.c — the PNG writer (runtime/png.c) and label overlays
 * (runtime/overlay.c), checked by decoding the written files here: chunk
 * structure and CRCs, the inflated scanlines, sizes, and pixel colours at
 * places worked out from the orientation and scaling rules. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "overlay.h"
#include "png.h"
#include "support.h"

static char dir[64];
static char path[128];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/netc-overlay-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/out.png", dir);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

typedef struct {
    int w, h;
    uint8_t *rgb; /* h rows of w * 3 */
} Image;

/* Decode a PNG written by png.c: signature, IHDR first (8-bit RGB, no
 * interlace), IDATs, IEND last, every CRC right, scanlines with filter 0. */
static Image decode(const char *file)
{
    Image im = { 0, 0, NULL };
    size_t len;
    uint8_t *buf = (uint8_t *)read_file(file, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", file);
    static const uint8_t sig[8] = { 137, 'P', 'N', 'G', '\r', '\n', 26, '\n' };
    ck_assert(len >= 8 && memcmp(buf, sig, 8) == 0);
    size_t pos = 8, zlen = 0;
    uint8_t *z = NULL;
    int nchunk = 0, ended = 0;
    while (pos < len) {
        ck_assert(!ended);
        ck_assert(pos + 12 <= len);
        uint32_t n = get32(buf + pos);
        ck_assert(pos + 12 + n <= len);
        const uint8_t *type = buf + pos + 4, *data = buf + pos + 8;
        uLong crc = crc32(crc32(0L, Z_NULL, 0), type, n + 4);
        ck_assert_msg(crc == get32(data + n), "bad CRC in chunk %.4s", (const char *)type);
        if (nchunk == 0) {
            ck_assert(memcmp(type, "IHDR", 4) == 0 && n == 13);
            im.w = (int)get32(data);
            im.h = (int)get32(data + 4);
            ck_assert_int_eq(data[8], 8);  /* bit depth */
            ck_assert_int_eq(data[9], 2);  /* RGB */
            ck_assert_int_eq(data[12], 0); /* no interlace */
        } else if (memcmp(type, "IDAT", 4) == 0) {
            z = realloc(z, zlen + n);
            memcpy(z + zlen, data, n);
            zlen += n;
        } else if (memcmp(type, "IEND", 4) == 0) {
            ended = 1;
        }
        nchunk++;
        pos += 12 + n;
    }
    ck_assert(ended && z != NULL);
    size_t row = (size_t)im.w * 3 + 1;
    uLongf rawlen = (uLongf)(row * (size_t)im.h + 1);
    uint8_t *raw = malloc(rawlen);
    ck_assert_int_eq(uncompress(raw, &rawlen, z, (uLong)zlen), Z_OK);
    ck_assert_int_eq(rawlen, row * (size_t)im.h);
    im.rgb = malloc(row * (size_t)im.h);
    for (int y = 0; y < im.h; y++) {
        ck_assert_int_eq(raw[(size_t)y * row], 0);
        memcpy(im.rgb + (size_t)y * im.w * 3, raw + (size_t)y * row + 1, (size_t)im.w * 3);
    }
    free(raw);
    free(z);
    free(buf);
    return im;
}

static const uint8_t *px(const Image *im, int row, int col)
{
    ck_assert(row >= 0 && row < im->h && col >= 0 && col < im->w);
    return im->rgb + ((size_t)row * im->w + col) * 3;
}

#define ck_rgb(im, row, col, r, g, b)                                                                         \
    do {                                                                                                      \
        const uint8_t *q_ = px(&(im), row, col);                                                              \
        ck_assert_msg(q_[0] == (r) && q_[1] == (g) && q_[2] == (b), "pixel (%d, %d) is (%d, %d, %d), want (%d, %d, %d)", \
                      row, col, q_[0], q_[1], q_[2], (int)(r), (int)(g), (int)(b));                              \
    } while (0)

static void ck_color(const Image *im, int row, int col, int cls)
{
    uint8_t c[3];
    overlay_class_color(cls, c);
    ck_rgb(*im, row, col, c[0], c[1], c[2]);
}

static void ck_gray(const Image *im, int row, int col)
{
    const uint8_t *q = px(im, row, col);
    ck_assert_msg(q[0] == q[1] && q[1] == q[2], "pixel (%d, %d) is (%d, %d, %d), not gray", row, col, q[0], q[1], q[2]);
}

START_TEST(png_round_trip)
{
    enum { W = 7, H = 5 };
    uint8_t rgb[W * H * 3];
    for (int i = 0; i < W * H * 3; i++)
        rgb[i] = (uint8_t)(i * 37 + 11);
    char err[256];
    ck_assert_int_eq(png_write_rgb(path, rgb, W, H, err, sizeof err), 0);
    Image im = decode(path);
    ck_assert_int_eq(im.w, W);
    ck_assert_int_eq(im.h, H);
    ck_assert(memcmp(im.rgb, rgb, sizeof rgb) == 0);
    free(im.rgb);
    /* a failed write leaves nothing behind, an existing file alone */
    char bad[160];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.png", dir);
    ck_assert_int_eq(png_write_rgb(bad, rgb, W, H, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, bad));
    ck_assert_int_eq(png_write_rgb(path, rgb, 0, H, err, sizeof err), -1);
    im = decode(path);
    ck_assert_int_eq(im.w, W);
    free(im.rgb);
}
END_TEST

/* One axial slice 16 x 16 (1 mm), image = x (0..15), so the 1st/99th
 * percentile window is 0..15 and gray = x * 17.  Class 2: the square
 * y, x in 4..11; class 1: the voxel x = 0, y = 0 (patient left, posterior).
 * At scale 4, voxel (y, x) covers rows (15 - y) * 4 .. +3 and columns
 * (15 - x) * 4 .. +3: anterior up, the patient's right on the left. */
static void axial_case(float *img, uint8_t *lab)
{
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            img[y * 16 + x] = (float)x;
            lab[y * 16 + x] = (y >= 4 && y <= 11 && x >= 4 && x <= 11) ? 2 : 0;
        }
    lab[0] = 1;
}

START_TEST(overlay_contours_orientation)
{
    float img[256];
    uint8_t lab[256];
    axial_case(img, lab);
    const int64_t shape[3] = { 1, 16, 16 };
    const double sp[3] = { 1, 1, 1 };
    OverlayOptions o;
    overlay_options_default(&o);
    o.scale = 4;
    char err[256];
    ck_assert_msg(overlay_png(img, lab, NULL, shape, sp, &o, path, err, sizeof err) == 0, "%s", err);
    Image im = decode(path);
    ck_assert_int_eq(im.w, 64);
    ck_assert_int_eq(im.h, 64);
    /* class 1 at the bottom right: its 4x4 block's border has the colour */
    ck_color(&im, 63, 63, 1);
    ck_color(&im, 60, 61, 1);
    ck_gray(&im, 61, 61); /* inside the block: the image shows through */
    /* class 2: a contour at rows/columns 16 and 47, gray inside */
    ck_color(&im, 16, 30, 2);
    ck_color(&im, 47, 30, 2);
    ck_color(&im, 30, 16, 2);
    ck_color(&im, 30, 47, 2);
    ck_rgb(im, 30, 30, 136, 136, 136); /* column 30: x = 15 - 7 = 8, 8 * 17 */
    /* background: gray = x * 17; column 0 is x = 15 (white), column 63 x = 0 */
    ck_rgb(im, 2, 0, 255, 255, 255);
    ck_rgb(im, 2, 63, 0, 0, 0);
    ck_rgb(im, 2, 20, 170, 170, 170);
    free(im.rgb);
}
END_TEST

START_TEST(overlay_fill_and_reference)
{
    float img[256];
    uint8_t lab[256], ref[256] = { 0 };
    axial_case(img, lab);
    ref[15 * 16 + 15] = 3; /* anterior right corner: top left of the right panel */
    const int64_t shape[3] = { 1, 16, 16 };
    const double sp[3] = { 1, 1, 1 };
    OverlayOptions o;
    overlay_options_default(&o);
    o.scale = 4;
    o.fill = 1;
    char err[256];
    ck_assert_msg(overlay_png(img, lab, ref, shape, sp, &o, path, err, sizeof err) == 0, "%s", err);
    Image im = decode(path);
    ck_assert_int_eq(im.w, 64 + 4 + 64);
    ck_assert_int_eq(im.h, 64);
    /* fill: 0.6 * 136 + 0.4 * (0, 255, 0) */
    ck_rgb(im, 30, 30, 82, 184, 82);
    /* the reference panel starts at column 68; class 3 (blue) blended on white */
    ck_rgb(im, 1, 69, 153, 153, 255);
    ck_rgb(im, 1, 64, 0, 0, 0); /* the gap */
    ck_gray(&im, 30, 68 + 30); /* the prediction's square is not in the reference */
    free(im.rgb);
}
END_TEST

/* Pixels are square in mm: a 16 x 8 axial slice with 1 x 2 mm voxels
 * (x, y) is 16 x 16 pixels at scale 1, 256 x 256 at the automatic scale. */
START_TEST(overlay_aspect_and_montage)
{
    enum { NZ = 10, NY = 8, NX = 16 };
    float *img = malloc(sizeof(float) * NZ * NY * NX);
    uint8_t *lab = calloc(NZ * NY * NX, 1);
    for (int i = 0; i < NZ * NY * NX; i++)
        img[i] = (float)(i % 7);
    for (int z = 2; z <= 7; z++)
        lab[(z * NY + 3) * NX + 5] = 1;
    const int64_t shape[3] = { NZ, NY, NX };
    const double sp[3] = { 3, 2, 1 };
    OverlayOptions o;
    overlay_options_default(&o);
    o.scale = 1;
    o.slice = 4;
    char err[256];
    ck_assert_msg(overlay_png(img, lab, NULL, shape, sp, &o, path, err, sizeof err) == 0, "%s", err);
    Image im = decode(path);
    ck_assert_int_eq(im.w, 16);
    ck_assert_int_eq(im.h, 16);
    /* voxel y = 3, x = 5: rows (7 - 3) * 2 .. +1, column 15 - 5 */
    ck_color(&im, 8, 10, 1);
    ck_color(&im, 9, 10, 1);
    ck_gray(&im, 10, 10);
    free(im.rgb);
    o.scale = 0;
    ck_assert_int_eq(overlay_png(img, lab, NULL, shape, sp, &o, path, err, sizeof err), 0);
    im = decode(path);
    ck_assert_int_eq(im.w, 256);
    ck_assert_int_eq(im.h, 256);
    free(im.rgb);
    /* sagittal: rows z (3 mm), columns y (2 mm): 30 x 16 mm -> 15 x 8 at 2 mm
     * per pixel, scale 1 of the finer spacing (2 mm) */
    o.axis = 2;
    o.slice = 5;
    o.scale = 1;
    ck_assert_int_eq(overlay_png(img, lab, NULL, shape, sp, &o, path, err, sizeof err), 0);
    im = decode(path);
    ck_assert_int_eq(im.w, 8);
    ck_assert_int_eq(im.h, 15);
    free(im.rgb);
    /* a montage of 4 axial slices through z 2..7: a 2 x 2 grid, 4 pixels apart */
    o.axis = 0;
    o.slice = -1;
    o.nslices = 4;
    ck_assert_int_eq(overlay_png(img, lab, NULL, shape, sp, &o, path, err, sizeof err), 0);
    im = decode(path);
    ck_assert_int_eq(im.w, 16 + 4 + 16);
    ck_assert_int_eq(im.h, 16 + 4 + 16);
    ck_color(&im, 8, 10, 1);           /* every tile shows the labelled column */
    ck_color(&im, 20 + 8, 20 + 10, 1); /* the last tile */
    free(im.rgb);
    /* errors: a message, no file */
    remove(path);
    o.nslices = 0;
    o.slice = NZ;
    ck_assert_int_eq(overlay_png(img, lab, NULL, shape, sp, &o, path, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "out of range"));
    ck_assert_int_ne(access(path, F_OK), 0);
    o.slice = 0;
    o.axis = 3;
    ck_assert_int_eq(overlay_png(img, lab, NULL, shape, sp, &o, path, err, sizeof err), -1);
    free(img);
    free(lab);
}
END_TEST

Suite *overlay_suite(void)
{
    Suite *s = suite_create("overlay");
    TCase *t = tcase_create("png");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, png_round_trip);
    tcase_add_test(t, overlay_contours_orientation);
    tcase_add_test(t, overlay_fill_and_reference);
    tcase_add_test(t, overlay_aspect_and_montage);
    suite_add_tcase(s, t);
    return s;
}
