/* cmd_overlay.c — `netc overlay IMG LABEL`: a PNG of image slices with the
 * labels drawn over them (runtime/overlay.c).  The volumes are brought to
 * canonical RAS first (ds_orientation: a permutation and flips read off the
 * header's affine, no interpolation), so the pictures are oriented the way
 * radiologists read them whatever the stored voxel order. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "dataset.h"
#include "metrics.h"
#include "nifti_io.h"
#include "overlay.h"

static const char *usage_overlay =
    "usage: netc overlay IMG LABEL [--ref GT] [--axis z|y|x] [--slice K | --montage N] [--fill]\n"
    "                    [--alpha A] [--scale S] -o OUT.png\n"
    "\n"
    "Draws the label map LABEL over the image IMG (NIfTI files on one grid) and writes an\n"
    "8-bit RGB PNG (atomically).  The volumes are reoriented to RAS: axial slices show\n"
    "anterior up and the patient's right on the image left; coronal superior up, right on\n"
    "the left; sagittal superior up, anterior on the left.  The image is windowed to its\n"
    "1st..99th percentile; each class has its own colour (1 red, 2 green, 3 blue, 4 yellow,\n"
    "5 cyan, 6 magenta, ...); pixels are square in mm.\n"
    "\n"
    "  --ref GT       a second panel to the right with the reference labels\n"
    "  --axis A       slicing axis: z (axial, default), y (coronal), x (sagittal)\n"
    "  --slice K      slice K along the axis, counted in RAS order (0 = inferior,\n"
    "                 posterior or left end); default: the slice with the most label\n"
    "  --montage N    N slices evenly spaced through the labelled extent, in a grid\n"
    "  --fill         translucent fill instead of contours\n"
    "  --alpha A      fill opacity, 0..1 (default 0.4)\n"
    "  --scale S      integer magnification (default: at least 256 pixels a side)\n"
    "  -o OUT.png     the picture to write\n";

static int overlay_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "netc overlay: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage_overlay);
    return 2;
}

/* Copy a source-order volume (x fastest, first time point) into canonical
 * [z][y][x] order; elem bytes per voxel. */
static void to_canonical(const void *src, const DsGeom *g, size_t elem, void *dst)
{
    int64_t sstr[3] = { 1, g->src_dim[0], g->src_dim[0] * g->src_dim[1] };
    int64_t start = 0, step[3];
    for (int a = 0; a < 3; a++) {
        int j = g->perm[a];
        step[a] = g->flip[a] ? -sstr[j] : sstr[j];
        if (g->flip[a])
            start += (g->src_dim[j] - 1) * sstr[j];
    }
    const char *s = src;
    char *d = dst;
    size_t i = 0;
    for (int64_t z = 0; z < g->canon_shape[0]; z++)
        for (int64_t y = 0; y < g->canon_shape[1]; y++) {
            int64_t b = start + z * step[2] + y * step[1];
            for (int64_t x = 0; x < g->canon_shape[2]; x++, i++)
                memcpy(d + i * elem, s + (size_t)(b + x * step[0]) * elem, elem);
        }
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int netc_overlay_main(int argc, char **argv)
{
    const char *pos[2] = { NULL, NULL }, *refp = NULL, *out = NULL;
    int npos = 0, have_slice = 0, have_montage = 0;
    OverlayOptions o;
    overlay_options_default(&o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_overlay, stdout);
            return 0;
        }
        if (strcmp(a, "--fill") == 0) {
            o.fill = 1;
            continue;
        }
        static const char *valued[] = { "--ref", "--axis", "--slice", "--montage", "--alpha", "--scale", "-o" };
        int vi = -1;
        for (int k = 0; k < 7; k++)
            if (strcmp(a, valued[k]) == 0)
                vi = k;
        if (vi >= 0) {
            if (i + 1 >= argc || !argv[i + 1][0])
                return overlay_usage_error("%s needs a value", a);
            const char *v = argv[++i];
            long n;
            char *end;
            switch (vi) {
            case 0: refp = v; break;
            case 1:
                if (strcmp(v, "z") && strcmp(v, "y") && strcmp(v, "x"))
                    return overlay_usage_error("--axis wants z, y or x, not `%s`", v);
                o.axis = v[0] == 'z' ? 0 : v[0] == 'y' ? 1 : 2;
                break;
            case 2:
                if (parse_int(v, 0, 1L << 30, &n) != 0)
                    return overlay_usage_error("--slice wants a slice index >= 0, not `%s`", v);
                o.slice = n;
                have_slice = 1;
                break;
            case 3:
                if (parse_int(v, 1, 1024, &n) != 0)
                    return overlay_usage_error("--montage wants a number of slices 1..1024, not `%s`", v);
                o.nslices = (int)n;
                have_montage = 1;
                break;
            case 4:
                errno = 0;
                o.alpha = strtod(v, &end);
                if (end == v || *end || errno || !(o.alpha >= 0 && o.alpha <= 1))
                    return overlay_usage_error("--alpha wants an opacity 0..1, not `%s`", v);
                break;
            case 5:
                if (parse_int(v, 1, 64, &n) != 0)
                    return overlay_usage_error("--scale wants a magnification 1..64, not `%s`", v);
                o.scale = (int)n;
                break;
            default: out = v; break;
            }
        } else if (a[0] == '-' && a[1]) {
            return overlay_usage_error("unknown option %s", a);
        } else {
            if (npos == 2)
                return overlay_usage_error("unexpected argument %s", a);
            pos[npos++] = a;
        }
    }
    if (npos != 2)
        return overlay_usage_error("%s", "needs an image and a label map");
    if (!out)
        return overlay_usage_error("%s", "needs -o OUT.png");
    if (have_slice && have_montage)
        return overlay_usage_error("%s", "--slice and --montage exclude each other");

    char err[1024];
    int rc = 1;
    Volume img, lab, ref;
    memset(&lab, 0, sizeof lab);
    memset(&ref, 0, sizeof ref);
    uint8_t *l8 = NULL, *r8 = NULL, *lc = NULL, *rc8 = NULL;
    float *ic = NULL;
    if (vol_read(pos[0], &img, err, sizeof err) != 0)
        goto fail;
    if (vol_read(pos[1], &lab, err, sizeof err) != 0 || mt_same_grid(&img, pos[0], &lab, pos[1], err, sizeof err) != 0 ||
        mt_labels_u8(&lab, pos[1], &l8, err, sizeof err) != 0)
        goto fail;
    if (refp && (vol_read(refp, &ref, err, sizeof err) != 0 || mt_same_grid(&img, pos[0], &ref, refp, err, sizeof err) != 0 ||
                 mt_labels_u8(&ref, refp, &r8, err, sizeof err) != 0))
        goto fail;
    DsGeom g;
    ds_orientation(&img, &g);
    size_t n = (size_t)(g.canon_shape[0] * g.canon_shape[1] * g.canon_shape[2]);
    ic = malloc(sizeof(float) * n);
    lc = malloc(n);
    rc8 = r8 ? malloc(n) : NULL;
    if (!ic || !lc || (r8 && !rc8)) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    to_canonical(img.data, &g, sizeof(float), ic); /* the first time point of a 4D image */
    to_canonical(l8, &g, 1, lc);
    if (r8)
        to_canonical(r8, &g, 1, rc8);
    if (overlay_png(ic, lc, rc8, g.canon_shape, g.canon_spacing, &o, out, err, sizeof err) != 0)
        goto fail;
    rc = 0;
fail:
    if (rc != 0)
        fprintf(stderr, "netc overlay: %s\n", err);
    free(ic);
    free(lc);
    free(rc8);
    free(l8);
    free(r8);
    vol_free(&img);
    vol_free(&lab);
    vol_free(&ref);
    return rc;
}
