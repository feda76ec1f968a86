/* dataset.h — segmentation datasets in nnU-Net's raw format, preprocessed
 * the nnU-Net way, cached on disk, and the way back to the original grid.
 *
 * A dataset folder is read as is:
 *
 *   dataset.json         channel_names {"0": "T1", ...}, labels {"background": 0, ...},
 *                        numTraining, file_ending (".nii.gz")
 *   imagesTr/CASE_0000.nii.gz, CASE_0001.nii.gz ...   one file per channel
 *   labelsTr/CASE.nii.gz
 *   imagesTs/CASE_0000.nii.gz ...                     optional held-out cases
 *   labelsTs/CASE.nii.gz                              optional (our demo has them)
 *
 * Array convention.  Every volume is first brought to the closest canonical
 * RAS orientation (as nibabel's as_closest_canonical: a permutation and flips
 * of the voxel axes read off the sform, else the qform, direction matrix):
 * voxel axis x increases towards Right, y towards Anterior, z towards
 * Superior.  Arrays are then [z][y][x] with x fastest, i.e. the tensor order
 * D x H x W netc uses; shapes and spacings below are (z, y, x).
 *
 * Preprocessing of one case (nnU-Net's order: transpose, crop, normalize,
 * resample):
 *   1. reorient to canonical RAS (exact: no interpolation);
 *   2. crop to the bounding box of the voxels where any image channel is
 *      nonzero; the "nonzero mask" is that set with its holes filled (the
 *      zero voxels not connected to the box's border count as inside);
 *   3. normalize each channel (DsParams.norm[c], NormKind of compiler/sema.h,
 *      same semantics as `netc run`'s normalisation; NORM_ZSCORE_NONZERO uses
 *      the nonzero mask and leaves the outside 0; NORM_CT clips to the
 *      dataset's foreground 0.5/99.5 percentiles and z-scores with the
 *      dataset's foreground mean/std, computed over the training cases'
 *      voxels with label > 0, as nnU-Net's fingerprint);
 *   4. resample to the target spacing: new size = round(size * spacing /
 *      target) per axis; images trilinear, labels linear on the one-hot
 *      encoding then argmax (nnU-Net's order-1 segmentation resampling;
 *      ties go to the smaller label), both with skimage/nnU-Net's
 *      pixel-centre convention: output voxel o samples input coordinate
 *      (o + 0.5) * in / out - 0.5, clamped to the edge.
 * Labels are checked (integers in the values dataset.json declares).
 *
 * Where this differs from nnU-Net: images are resampled trilinearly, not
 * with cubic splines, and without the "separate z" rule for anisotropic
 * spacing; labels outside the nonzero mask keep their value (nnU-Net marks
 * them -1); the orientation is read greedily from the normalized direction
 * cosines (nibabel first orthogonalizes with an SVD: the same answer unless
 * the affine is strongly sheared); NORM_CT statistics use every foreground
 * voxel up to 10^7 per channel (more: an even stride per case), not a random
 * sample.
 *
 * Undo (a prediction on the preprocessed grid → labels on the original
 * NIfTI grid): resample back to the cropped shape (linear on one-hot),
 * put into the box (0 outside), undo the permutation and flips.  The result
 * is in the source file's voxel order (x fastest) and can be written with
 * vol_write_like on the source image.
 *
 * Cache.  With a cache folder, each preprocessed case is stored as
 * CASE.json (header: shapes, spacing, geometry, key) + CASE-KEY.img (float32
 * little-endian, channel-major) + CASE-KEY.seg (uint8), and reused when the
 * key matches.  The key hashes the format version, the source files' paths,
 * sizes and mtimes, the parameters and (for NORM_CT) the dataset statistics.
 * Files are written to a temporary name and renamed; the .json last.
 */
#ifndef NETC_DATASET_H
#define NETC_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "nifti_io.h"
#include "sema.h"

#define DS_MAX_CHANNELS MAX_CHANNELS
#define DS_MAX_LABELS 256

typedef enum { DS_TRAIN, DS_TEST } DsSplit;

/* How to undo preprocessing: everything from the source grid to the
 * preprocessed array. */
typedef struct {
    int64_t src_dim[3];       /* source file's nx, ny, nz (x fastest) */
    int perm[3];              /* canonical axis a (0 = x/R, 1 = y/A, 2 = z/S) is source axis perm[a] */
    int flip[3];              /* ... reversed when flip[a] */
    int64_t canon_shape[3];   /* (z, y, x) after reorientation */
    double canon_spacing[3];  /* (z, y, x) mm */
    int64_t bbox_lo[3];       /* crop box in the canonical array, (z, y, x), half-open */
    int64_t bbox_hi[3];
    int64_t shape[3];         /* (z, y, x) after resampling: the preprocessed array */
    double spacing[3];        /* (z, y, x) mm of the preprocessed array */
} DsGeom;

typedef struct {
    int nchannels;
    int64_t shape[3];         /* (z, y, x) */
    double spacing[3];        /* (z, y, x) mm */
    float *image;             /* nchannels * z*y*x, channel-major, [c][z][y][x] */
    uint8_t *labels;          /* z*y*x, or NULL when the case has no label file */
    DsGeom geom;
    int from_cache;           /* 1 if read back from the cache */
} DsPrepped;

typedef struct {
    char *name;               /* CASE */
    DsSplit split;
    char **images;            /* nchannels paths */
    char *label;              /* path, or NULL (imagesTs without labelsTs) */
    double spacing[3];        /* canonical (z, y, x) spacing, from the headers */
    int64_t shape[3];         /* canonical (z, y, x) shape */
    DsPrepped *prep;          /* after ds_preprocess, else NULL */
} DsCase;

/* Dataset foreground intensity statistics of one channel (NORM_CT). */
typedef struct {
    int valid;
    double mean, sd, p005, p995;   /* p005/p995: the 0.5 and 99.5 percentiles */
    int64_t nvoxels;
} DsChannelStats;

typedef struct {
    double spacing[3];                   /* target (z, y, x) mm; 0 keeps the case's own */
    Normalization norm[DS_MAX_CHANNELS]; /* per channel */
} DsParams;

typedef struct {
    char *root;                          /* the dataset folder */
    char *name;                          /* dataset.json "name", or the folder's name */
    int nchannels;
    char *channel_names[DS_MAX_CHANNELS];
    int nlabels;
    char *label_names[DS_MAX_LABELS];
    int label_values[DS_MAX_LABELS];
    uint8_t label_ok[256];               /* label_ok[v]: v is a declared label value */
    int max_label;
    int num_training;
    char *file_ending;
    int ncases, ntrain;                  /* training cases first (sorted by name), then test */
    DsCase *cases;
    DsChannelStats stats[DS_MAX_CHANNELS];
    /* bookkeeping: how many cases were computed vs read from the cache by
     * the last ds_preprocess calls (cumulative) */
    int n_computed, n_cached;
} Dataset;

/* Open and check a dataset folder (dataset.json, the file lists, every
 * header: channel/label shapes and affines agree).  NULL and a message
 * naming the file otherwise. */
Dataset *ds_open(const char *dir, char *err, size_t errlen);
void ds_free(Dataset *ds);

/* Default parameters: keep spacing, the given normalization on every channel. */
void ds_params_default(DsParams *p, const Normalization *norm);
/* From a protocol: its normalization on every channel; its spacing for a
 * rank-3 protocol, the in-plane (y, x) spacing for rank 2 (z kept). */
void ds_params_from_protocol(DsParams *p, const Protocol *pr);
/* nnU-Net's default target spacing: the per-axis median of the training
 * cases' (canonical) spacings. */
void ds_median_spacing(const Dataset *ds, double out[3]);

/* Preprocess case `which` (or all with -1).  cache_dir may be NULL (no
 * disk cache); it is created if missing.  0, or -1 and a message. */
int ds_preprocess(Dataset *ds, const DsParams *p, const char *cache_dir, int which, char *err, size_t errlen);
const DsPrepped *ds_case(const Dataset *ds, int i);   /* NULL if not preprocessed */
void ds_release(Dataset *ds, int i);                  /* drop case i's arrays */

/* The dataset's NORM_CT statistics (computed from the training cases'
 * foreground; cached in cache_dir when given).  Called by ds_preprocess
 * when a channel needs them. */
int ds_compute_stats(Dataset *ds, const char *cache_dir, char *err, size_t errlen);

/* Building blocks, usable on single volumes (netc infer). */

/* Orientation: fill perm/flip/canon_shape/canon_spacing of g from a volume's
 * header (src_dim too). */
void ds_orientation(const Volume *v, DsGeom *g);
/* Preprocess loaded channel volumes (+ optional label volume) of one case;
 * all must be on one grid.  `stats` may be NULL unless a channel is NORM_CT.
 * `names` for messages (C image paths, then the label path). */
int ds_prepare(const Volume *chan, int nchannels, const Volume *label, const DsParams *p,
               const DsChannelStats *stats, const char *const *names, const uint8_t *label_ok,
               DsPrepped *out, char *err, size_t errlen);
void ds_prepped_free(DsPrepped *pp);

/* Normalize one channel in place (n voxels; mask may be NULL = all inside). */
int ds_normalize(float *x, int64_t n, const uint8_t *mask, const Normalization *nm, const DsChannelStats *st,
                 char *err, size_t errlen);

/* Trilinear resampling of a [z][y][x] float array (pixel-centre convention). */
void ds_resample_linear(const float *in, const int64_t ishape[3], float *out, const int64_t oshape[3]);
/* Label resampling: linear on the one-hot encoding, argmax. */
void ds_resample_labels(const uint8_t *in, const int64_t ishape[3], uint8_t *out, const int64_t oshape[3]);

/* A prediction on g->shape back to the source grid: `out` has
 * src_dim[0]*src_dim[1]*src_dim[2] voxels, x fastest (the source file's order). */
int ds_undo_labels(const DsGeom *g, const uint8_t *pred, uint8_t *out, char *err, size_t errlen);

#endif
