/* augment.h — training patches: sampling, data augmentation, and a threaded,
 * deterministic batch producer (nnU-Net's pipeline; docs/language.md §10.5,
 * docs/architecture.md "Sampling and augmentation").
 *
 * Input: preprocessed cases in memory (AugCase), the train block's
 * augmentation and sampling calls exactly as compiler/train.c fills them
 * (TrainCall: the range in lo/hi, the other parameters in num[] in the
 * table's order, mirror's axes in `axes`), the patch, the batch size and a
 * seed.  Output: batches in netc's tensor layout, images N x C x patch
 * (float32) and labels N x 1 x patch (int32), patch = D x H x W or H x W.
 *
 * Per sample, in this order (as nnU-Net's get_training_transforms):
 *   1. sampling: a case, then a patch position (random / foreground /
 *      balanced);
 *   2. spatial: rotation, scaling and elastic deformation combined into ONE
 *      coordinate map, evaluated directly on the whole case (so rotated and
 *      scaled patches read real data wherever the case has it: the same as
 *      cutting the oversized bounding box and cropping after the transform,
 *      without the copy); images trilinear, labels nearest neighbour;
 *      outside the case: image 0, label AugSpec.pad_label;
 *   3. intensity: noise, blur, brightness, contrast, lowres, gamma, in the
 *      order the `augment` field lists them (the default list is nnU-Net's
 *      order);
 *   4. mirroring.
 *
 * Determinism: batch k is a pure function of (seed, k) — not of the number
 * of threads, nor of timing.  Random streams (splitmix64 RefRng, runtime/ref.h;
 * H(x) = ref_rng_next of a generator with state x):
 *   batch k:          B = seed ^ H(k)
 *   sample j of it:   S = H(B ^ (0xD1B54A32D192ED03 * (j + 1)))
 *   stream t of it:   RefRng { H(S ^ (0x9E3779B97F4A7C15 * (t + 1))) }
 *   t = 0: case and patch position; t = 1 + i: augmentation call i (its p
 *   draw first, then its parameters, then any noise field).
 * So adding or removing an augmentation never moves the patches, and a call's
 * draws do not depend on whether the others were applied.
 */
#ifndef NETC_AUGMENT_H
#define NETC_AUGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sema.h"

/* One preprocessed case.  A 2D case has shape[0] = 1. */
typedef struct {
    int nchannels;
    int64_t shape[3];              /* z, y, x */
    const float *image;            /* [c][z][y][x] */
    const uint8_t *labels;         /* [z][y][x] */
    /* Optional class locations: locs[k] lists nlocs[k] flat voxel indices
     * (z*Y*X + y*X + x) of class k, for k = 1 .. nclasses-1 (locs[0] is not
     * read).  NULL: batcher_new finds them (every voxel). */
    const int64_t *const *locs;
    const int64_t *nlocs;
} AugCase;

typedef struct {
    const AugCase *cases;
    int ncases;
    int nclasses;                  /* label values 0 .. nclasses-1; larger values (an
                                      ignore label) are never sampled as foreground */
} AugDataset;

typedef struct {
    int rank;                      /* 2 or 3 */
    int64_t patch[3];              /* D, H, W (rank 3) or H, W (rank 2) */
    int batch;
    const TrainCall *augment;      /* TrainSpec.augment, naugment (may be 0) */
    int naugment;
    TrainCall sampling;            /* TrainSpec.sampling; name NULL = random */
    int32_t pad_label;             /* label outside the case: 0, or the loss's ignore label */
} AugSpec;

/* Fill an AugSpec from a checked train block (pad_label 0). */
void aug_spec_from_train(AugSpec *s, const TrainSpec *t);

/* Why (ds, spec) cannot be used; true if it can. */
bool aug_check(const AugDataset *ds, const AugSpec *spec, char *err, size_t errlen);

typedef struct Batcher Batcher;

/* A batch producer.  threads = 0: batches are made in batcher_next by the
 * caller's thread; threads >= 1: that many worker pthreads keep a ring of
 * max(4, 2 * threads) prepared batches ahead of the consumer.  ds->cases and
 * everything it points to must outlive the batcher (the AugDataset and
 * AugSpec structs and the augment list are copied).
 * One consumer thread calls batcher_next.  NULL if aug_check fails or memory
 * runs out. */
Batcher *batcher_new(const AugDataset *ds, const AugSpec *spec, int threads, uint64_t seed);
/* The next batch (k = 0, 1, 2, ...) into images (batch*C*patch floats) and
 * labels (batch*patch int32).  Returns k. */
int64_t batcher_next(Batcher *b, float *images, int32_t *labels);
/* Batch k computed now in the caller's thread, bit-identical to the k-th
 * batcher_next; safe to call from several threads. */
void batcher_batch(const Batcher *b, int64_t k, float *images, int32_t *labels);
/* Elements of one batch's images and labels. */
size_t batcher_image_count(const Batcher *b);
size_t batcher_label_count(const Batcher *b);
void batcher_free(Batcher *b);

/* ---- building blocks (used by the pipeline; exposed for tests) ---------- */

/* Flip axis k of a [c][z][y][x] volume (k = 0: z, 1: y, 2: x) for every
 * axis whose bit is set in `axes_zyx`; labels (may be NULL) are one channel. */
void aug_mirror(float *img, int32_t *lab, int nchannels, const int64_t shape[3], unsigned axes_zyx);
/* Gaussian blur of one [z][y][x] channel, sigma per axis (0 = not that
 * axis); kernel truncated at 4 sigma, borders mirrored (scipy's "reflect"). */
void aug_blur(float *x, const int64_t shape[3], const double sigma[3]);
/* Contrast: (x - mean) * f + mean, clipped to the channel's [min, max]. */
void aug_contrast(float *x, int64_t n, double factor);
/* Gamma with retained statistics (nnU-Net): rescale to [0, 1], x^gamma (or
 * 1 - (1 - x)^gamma when inverted), back to the range, then the original
 * mean and standard deviation restored. */
void aug_gamma(float *x, int64_t n, double gamma, bool invert);
/* Simulated low resolution: nearest-neighbour down to round(size * zoom)
 * (at least 1) on each axis whose bit (z = 1, y = 2, x = 4) is set, linear
 * back up (align_corners = false). */
void aug_lowres(float *x, const int64_t shape[3], double zoom, unsigned axes_zyx);

#endif
