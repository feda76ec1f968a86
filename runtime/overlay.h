/* overlay.h — pictures of segmentations: a slice (or a montage of slices)
 * of an image with label maps drawn over it, written as PNG
 * (runtime/overlay.c, runtime/png.c).  Volumes are [z][y][x], x fastest. */
#ifndef NETC_OVERLAY_H
#define NETC_OVERLAY_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int axis;          /* slicing axis: 0 = z (axial), 1 = y (coronal), 2 = x (sagittal) */
    int nslices;       /* montage of this many evenly spaced slices through the labelled extent;
                          0 with slice < 0: the slice with the most foreground */
    int64_t slice;     /* one slice index (>= 0), used when nslices == 0 */
    int fill;          /* 1: translucent fill; 0: contours */
    double alpha;      /* fill opacity (0.4) */
    int scale;         /* integer magnification (0: automatic, at least 256 pixels) */
} OverlayOptions;

void overlay_options_default(OverlayOptions *o);

/* Draw `labels` over `image` (shape (z, y, x), spacing (z, y, x) mm, used
 * for the aspect ratio); with `ref` non-NULL the picture has two panels side
 * by side: prediction left, reference right.  Written atomically to path.
 * 0, or -1 with a message. */
int overlay_png(const float *image, const uint8_t *labels, const uint8_t *ref, const int64_t shape[3],
                const double spacing[3], const OverlayOptions *o, const char *path, char *err, size_t errlen);

/* The picture itself: *rgb (malloc'd, rows top to bottom, 3 bytes a
 * pixel), *w by *h pixels.  0, or -1 with a message. */
int overlay_render(const float *image, const uint8_t *labels, const uint8_t *ref, const int64_t shape[3],
                   const double spacing[3], const OverlayOptions *o, uint8_t **rgb, int *w, int *h,
                   char *err, size_t errlen);

/* The colour of class cls (> 0): a fixed palette of 12, repeating. */
void overlay_class_color(int cls, uint8_t rgb[3]);

#endif
