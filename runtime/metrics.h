/* metrics.h — segmentation metrics in physical units (runtime/metrics.c):
 * Dice, IoU, HD95, ASSD and normalized surface Dice of one class, following
 * MONAI's definitions (docs/cli.md, `netc eval`, states the conventions).
 *
 * Volumes are [z][y][x], x fastest; shapes and spacings are (z, y, x), the
 * spacing in mm.  A label map and a class value select a binary mask
 * (voxels equal to the class). */
#ifndef NETC_METRICS_H
#define NETC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "nifti_io.h"

typedef struct {
    double percentile;   /* of the directed surface distances for "HD95" (95) */
    double tolerance;    /* NSD tolerance in mm (1) */
    int ignore_empty;    /* 1 (MONAI's default): Dice/IoU NaN when the reference is empty;
                            0: 1.0 when both are empty, 0 when only the reference is */
} MetricOptions;

typedef struct {
    int64_t tp, fp, fn;          /* voxel counts */
    int64_t surf_pred, surf_ref; /* surface voxel counts */
    double dice, iou, hd95, assd, nsd;
} SegMetrics;

void metric_options_default(MetricOptions *o);

/* Metrics of class `cls` of the label maps `pred` and `ref`.  Work memory
 * is limited to the bounding box of the union of both masks.  0, or -1 with
 * a message (out of memory). */
int seg_metrics(const uint8_t *pred, const uint8_t *ref, uint8_t cls, const int64_t shape[3],
                const double spacing[3], const MetricOptions *o, SegMetrics *out, char *err, size_t errlen);

/* The metrics of a class absent from both maps (no voxel to look at). */
void seg_metrics_empty(const MetricOptions *o, SegMetrics *out);

/* The building blocks, exposed for tests. */

/* Surface of the mask (labels == cls): mask voxels with at least one of
 * their 6 face neighbours outside the mask or outside the volume (the mask
 * minus its erosion by the 6-connected cross, the volume padded with
 * background: scipy's binary_erosion defaults, as MONAI uses).  Axes of
 * extent 1 are left out (a 2D image: 4-neighbours in its plane). */
void mt_surface(const uint8_t *labels, uint8_t cls, const int64_t shape[3], uint8_t *surface);

/* Exact squared Euclidean distance transform with anisotropic spacing:
 * out[i] = squared distance in mm^2 from voxel i to the nearest voxel with
 * feature[i] != 0 (0 on features, +inf when there is none).  Separable,
 * Felzenszwalb-Huttenlocher lower envelopes of parabolas, O(n) per line.
 * 0, or -1 (out of memory). */
int mt_edt_sq(const uint8_t *feature, const int64_t shape[3], const double spacing[3], double *out);

/* The q-th percentile (0..100) of v[0..n) with linear interpolation between
 * order statistics (numpy/torch default); sorts v.  NaN when n == 0. */
double mt_percentile(double *v, int64_t n, double q);

/* Directed surface distances (mm) from each surface voxel of mask a (class
 * cls) to the nearest surface voxel of mask b, in voxel order, in a new
 * array (*out, freed by the caller; NULL when there are none).  The count,
 * or -1 (out of memory).  An empty b gives +inf distances. */
int64_t mt_directed_distances(const uint8_t *a, const uint8_t *b, uint8_t cls, const int64_t shape[3],
                              const double spacing[3], double **out);

/* Volumes as label maps, for the commands (netc eval, netc overlay). */

/* The voxels of a 3D volume read from `path` as labels 0..255, [z][y][x]
 * (NIfTI's x-fastest order unchanged), in a new array.  Non-integer,
 * negative or > 255 values and 4D volumes are errors naming the file and the
 * value.  0, or -1 with a message. */
int mt_labels_u8(const Volume *v, const char *path, uint8_t **out, char *err, size_t errlen);

/* Whether b is on a's grid: the same shape, spacings and affines within
 * 0.1%.  0, or -1 with a message naming both files and the values. */
int mt_same_grid(const Volume *a, const char *pa, const Volume *b, const char *pb, char *err, size_t errlen);

#endif
