/* infer.h — whole-scan inference: sliding window, mirroring, ensembles,
 * post-processing and the way back to the scan's grid.
 *
 * This file is the contract between `netc infer` (runtime/cmd_infer.c:
 * the net JIT-compiled through exec.h) and the standalone binaries of
 * `netc build` (AOT-compiled kernels, no libLLVM): both drive the same
 * engine and differ only in the InferNet they pass.  The engine itself
 * (runtime/infer.c) must not depend on the compiler or on LLVM; it uses
 * dataset.h (preprocessing and undo), nifti_io.h, postproc.h, overlay.h
 * (infer_case's PNG) and pool.h.
 *
 * Conventions: volumes are [c][z][y][x] float arrays, x fastest (the
 * preprocessed arrays of dataset.h); shapes and spacings are (z, y, x).
 */
#ifndef NETC_INFER_H
#define NETC_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

/* One network (one checkpoint or fold).  forward runs it on n windows
 * (1 <= n <= the config's batch): `in` holds n x channels x window voxels,
 * `out` receives n x classes x window voxels of raw outputs (logits), in the
 * window's (z, y, x) order, x fastest.  0, or -1 with a message. */
typedef struct {
    int (*forward)(void *ctx, int n, const float *in, float *out, char *err, size_t errlen);
    void *ctx;
} InferNet;

typedef struct {
    int rank;                 /* 3: (z, y, x) windows; 2: the net sees (y, x) slices, patch[0] = 1 */
    int64_t patch[3];         /* window size (z, y, x) */
    int channels, classes;
    int batch;                /* windows per forward call (the net's compiled batch) */
    double step;              /* window step as a fraction of the patch, 0 < step <= 1 (0.5) */
    int gaussian;             /* 1: Gaussian importance weights, sigma = patch/8 (nnU-Net); 0: constant */
    unsigned mirror_axes;     /* bit a set: test-time mirroring along volume axis a (0 = z, 1 = y, 2 = x);
                                 every combination of the set axes is averaged */
    int sigmoid;              /* independent sigmoid outputs instead of a softmax */
    int progress;             /* a progress bar over windows on stderr */
    struct InferStats *stats; /* optional: filled with counts and timings (NULL: not collected) */
} InferConfig;

/* What one infer_sliding_window call did (accumulated over calls). */
typedef struct InferStats {
    int64_t windows;          /* net evaluations: positions x mirrors x nets */
    int64_t forward_calls;    /* InferNet.forward calls */
    double net_seconds;       /* inside forward */
    double stitch_seconds;    /* cutting windows, softmax, weighting, accumulating, normalizing */
} InferStats;

void infer_config_default(InferConfig *c);

/* nnU-Net's window placement along one axis of size `size` (>= patch):
 * n = ceil((size - patch) / (patch * step)) + 1 windows, evenly spaced,
 * the first at 0 and the last flush with the end (offsets rounded half to
 * even, as Python's round).  A patch of 1 (the z axis of a 2D net) gives
 * every offset once.  Writes at most max offsets; returns n (or -1 when
 * size < patch or step is out of range). */
int64_t infer_steps(int64_t size, int64_t patch, double step, int64_t *offsets, int64_t max);

/* nnU-Net's Gaussian importance map of a (z, y, x) window: a unit impulse
 * at the centre (patch / 2) blurred with sigma = patch / 8 per axis (an
 * axis of size 1 is flat), divided by its maximum, zeros raised to the
 * smallest nonzero value.  w holds patch[0]*patch[1]*patch[2] floats. */
void infer_gaussian(const int64_t patch[3], float *w);

/* Sliding-window prediction of a preprocessed volume img ([channels][z][y][x],
 * shape (z, y, x)) with every net of the ensemble: per window softmax (or
 * sigmoid) probabilities, weighted and averaged over windows, mirrors and
 * nets.  probs receives classes x z*y*x floats.  A volume smaller than the
 * patch along an axis is padded for the windows and cropped back.
 * 0, or -1 with a message. */
int infer_sliding_window(const InferConfig *cfg, InferNet *nets, int nnets, const float *img,
                         const int64_t shape[3], float *probs, char *err, size_t errlen);

/* Probabilities to labels: argmax over classes (softmax; ties to the lower
 * class), or for sigmoid outputs (channel k is class k + 1) the
 * highest-numbered class above 0.5 (0 when none). */
void infer_labels(const InferConfig *cfg, const float *probs, int64_t nvox, uint8_t *labels);

/* Probabilities on the preprocessed grid (classes x g->shape) back to the
 * source grid (classes x src voxels, the source file's order): each class
 * resampled linearly to the crop, placed in the box, reoriented.  Outside
 * the box class 0 gets background_outside (1 for softmax outputs, 0 for
 * sigmoid ones), the other classes 0.  0, or -1 with a message. */
int infer_undo_probs(const DsGeom *g, const float *probs, int classes, float background_outside, float *out,
                     char *err, size_t errlen);

/* NORM_CT statistics from a weights file's metadata: keys
 * netc.stats.<channel>.mean, .sd, .p005, .p995 where <channel> is the
 * channel's name (case-insensitive) or its index 0, 1, ...  stats[c].valid
 * is set for every channel found complete.  Returns the number of channels
 * found; -1 with a message naming the key when a value is not a number. */
int infer_stats_from_metadata(const char *const *keys, const char *const *vals, int nmeta,
                              const char *const *channel_names, int nchannels, DsChannelStats *stats,
                              char *err, size_t errlen);

/* One case from files to a label file. */
typedef struct {
    InferConfig cfg;
    DsParams params;              /* target spacing and normalization (from the protocol) */
    const DsChannelStats *stats;  /* dataset statistics (NORM_CT), or NULL */
    int largest_component;        /* 0: none; 1: keep the largest component of all foreground;
                                     2: the largest per class */
    int connectivity;             /* 6 or 26 */
    const char *prob_output;      /* optional: float probabilities on the source grid (4D NIfTI) */
    const char *png_output;       /* optional: an overlay PNG of the result */
} InferCaseOptions;

/* Read the channel files (one per channel, one grid), preprocess like
 * training, predict, post-process, undo the preprocessing and write `output`
 * as uint8 labels with the first input's header and affine (atomically).
 * 0, or -1 with a message naming the file. */
int infer_case(const InferCaseOptions *o, InferNet *nets, int nnets, const char *const *inputs, int ninputs,
               const char *output, char *err, size_t errlen);

#endif
