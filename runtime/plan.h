/* plan.h — `netc plan`: a dataset's fingerprint and the protocols planned
 * from it, following nnU-Net v2's experiment planner (docs/plan.md).
 *
 * Fingerprint (plan_fingerprint): for every training case of an nnU-Net raw
 * dataset (runtime/dataset.h), its canonical (z, y, x) spacing, its shape
 * before and after cropping to the nonzero box, and, per channel, statistics
 * of the foreground intensities (voxels with label > 0 inside the crop):
 * mean, sd, median, min, max and the 0.5 / 99.5 percentiles.  Every
 * foreground voxel is used up to PLAN_FG_SAMPLES per channel in total; beyond
 * that each case contributes an even stride of at most PLAN_FG_SAMPLES /
 * cases voxels (deterministic; nnU-Net draws a random sample).
 *
 * Plan (plan_compute): target spacing = per-axis median, except nnU-Net's
 * anisotropy rule; the median shape after resampling; a 3D and a 2D (axial
 * slices, (y, x)) configuration: patch, poolings per axis, kernel sizes,
 * batch, from nnU-Net's rules and its feature-map voxel budget; the
 * normalization per channel and the modality.
 *
 * Shapes, spacings and patches are (z, y, x) in 3D and (y, x) in 2D. */
#ifndef NETC_PLAN_H
#define NETC_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dataset.h"

#define PLAN_FG_SAMPLES 10000000   /* foreground intensity samples per channel */
#define PLAN_MAX_STAGES 16         /* encoder stages (poolings + 1) */
#define PLAN_ANISO_THRESHOLD 3.0   /* nnU-Net's ANISO_THRESHOLD */
#define PLAN_MIN_EDGE 4            /* feature-map edge length at the bottom */
#define PLAN_BASE_FEATURES 32
#define PLAN_MAX_FEATURES_3D 320
#define PLAN_MAX_FEATURES_2D 512
#define PLAN_REF_VOXELS_3D 560e6   /* nnU-Net's reference feature-map size, 8 GB */
#define PLAN_REF_VOXELS_2D 85e6
#define PLAN_REF_GB 8.0
#define PLAN_REF_BATCH_3D 2
#define PLAN_REF_BATCH_2D 12
#define PLAN_MIN_BATCH 2
#define PLAN_MAX_DATASET_FRACTION 0.05

/* Statistics of one channel's foreground intensities. */
typedef struct {
    int64_t nforeground;     /* foreground voxels (label > 0) in the training crops */
    int64_t n;               /* samples the statistics were computed from (0: none) */
    double mean, sd, median, min, max, p005, p995;
} PlanIntensity;

typedef struct {
    char *name;
    double spacing[3];       /* canonical (z, y, x) mm */
    int64_t shape[3];        /* canonical shape */
    int64_t crop_shape[3];   /* after cropping to the nonzero box */
} PlanCase;

typedef struct {
    char *dataset;           /* dataset.json name (or the folder's) */
    char *root;              /* the folder */
    int ncases;              /* training cases */
    PlanCase *cases;
    int nchannels;
    char *channel_names[DS_MAX_CHANNELS];
    PlanIntensity intensity[DS_MAX_CHANNELS];
    int nclasses;            /* max label value + 1 */
    char *class_names[DS_MAX_LABELS];   /* by value; NULL where dataset.json declares none */
    double median_relative_size;        /* median of crop voxels / voxels */
} PlanFingerprint;

/* One configuration (3D or 2D). */
typedef struct {
    int rank;
    double spacing[3];
    double median_shape[3];  /* median shape after resampling to `spacing` */
    int64_t patch[3];
    int npool[3];            /* poolings per axis */
    int nstages;             /* encoder stages = number of pooling steps + 1 */
    int stride[PLAN_MAX_STAGES][3];   /* stage s's downsampling (stage 0: all 1) */
    int kernel[PLAN_MAX_STAGES][3];   /* stage s's conv kernel (1 or 3 per axis) */
    int features[PLAN_MAX_STAGES];
    int64_t divisor[3];      /* the patch is a multiple of 2^npool per axis */
    double fmap_voxels;      /* feature-map voxel estimate at `patch` */
    double budget_voxels;    /* the limit it was fitted to: reference x reference batch / 2 */
    int batch_budget;        /* batch the budget allows: round(budget / estimate * reference batch) */
    int batch_cap;           /* at most 5% of the dataset's voxels per batch */
    int batch;               /* max(min(budget, cap), 2) */
    int shrinks;             /* patch reductions it took to meet the budget */
} PlanConfig;

typedef struct {
    double budget_gb;        /* GPU memory target (nnU-Net: 8) */
    int base_features;       /* 32 */
} PlanOptions;

typedef struct {
    double spacing[3];       /* target spacing (z, y, x) */
    int aniso_axis;          /* axis the 10th-percentile rule was applied to, or -1 */
    double median_crop_shape[3];
    Normalization norm[DS_MAX_CHANNELS];
    int use_nonzero_mask;    /* median relative size after crop < 0.75 */
    Modality modality;
    PlanConfig c3d, c2d;
} Plan;

/* ---- fingerprint ---- */
int plan_fingerprint(const char *dir, PlanFingerprint *fp, char *err, size_t errlen);
void plan_fingerprint_free(PlanFingerprint *fp);
/* The fingerprint as JSON (nnU-Net's dataset_fingerprint.json keys, (z, y, x)
 * order, plus netc's), written atomically. */
int plan_fingerprint_write_json(const PlanFingerprint *fp, const char *path, char *err, size_t errlen);
/* Statistics of v[0..n) (sorted in place); nforeground is left to the caller. */
void plan_intensity_stats(float *v, int64_t n, PlanIntensity *out);
/* np.percentile with linear interpolation, of a sorted array. */
double plan_percentile(const float *sorted, int64_t n, double q);

/* ---- planning rules (pure; exposed for the tests) ---- */
/* Target spacing from n cases' spacings and cropped shapes; *aniso_axis the
 * axis that got the 10th-percentile rule, or -1. */
void plan_target_spacing(const double (*spacing)[3], const int64_t (*shape)[3], int n, double out[3], int *aniso_axis);
/* nnU-Net's get_pool_and_conv_props: poolings, strides, kernels and the
 * divisor for `patch` (rank 2 or 3); the patch padded to that divisor is
 * written to c->patch. */
int plan_topology(int rank, const double *spacing, const int64_t *patch, PlanConfig *c);
/* nnU-Net's compute_conv_feature_map_size of its plain U-Net (two convs per
 * stage, transposed convs, a segmentation head per decoder stage). */
double plan_feature_map_voxels(const PlanConfig *c, int nclasses);
/* A whole configuration: initial patch, topology, shrink to the budget, batch.
 * dataset_voxels: median voxels per case x cases. */
int plan_configure(int rank, const double *spacing, const double *median_shape, int nclasses,
                   double dataset_voxels, const PlanOptions *o, PlanConfig *c, char *err, size_t errlen);
/* nnU-Net's channel name -> normalization (CT, noNorm, zscore, rescale_to_0_1,
 * rgb_to_0_1; anything else zscore, on the nonzero mask if use_mask). */
Normalization plan_channel_norm(const char *channel_name, int use_mask);

/* The whole plan of a fingerprint. */
int plan_compute(const PlanFingerprint *fp, const PlanOptions *o, Plan *pl, char *err, size_t errlen);

/* The .net text: protocol NAME_3d and NAME_2d with the plan in comments.
 * Checked with the front end (parsed and resolved) before it is returned.
 * Returns malloc'd text or NULL and a message. */
char *plan_protocol_text(const PlanFingerprint *fp, const Plan *pl, const char *name, char *err, size_t errlen);
/* A valid protocol-name stem from a dataset name ("Colin27BET" -> "colin27bet"). */
void plan_default_name(const char *dataset, char *out, size_t n);
/* 1 if s is a name the language accepts (identifier, not a keyword). */
int plan_valid_name(const char *s);

/* Print the fingerprint and plan tables. */
void plan_print(FILE *f, const PlanFingerprint *fp, const Plan *pl);

#endif
