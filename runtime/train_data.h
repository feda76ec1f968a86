/* train_data.h — `netc train`: a dataset in nnU-Net's raw format, through
 * preprocessing (dataset.h), patch sampling and augmentation (augment.h)
 * and the training loop (trainer.h), then the held-out evaluation.
 *
 * The held-out cases are the dataset's test cases with labels (imagesTs +
 * labelsTs).  They are segmented with the trained weights by the inference
 * graph at the protocol's patch: a 2D net slice by slice, a 3D net in one
 * window when the case fits (sliding windows come with `netc infer`), each
 * slice or volume centred in the patch with zero padding.  Dice per
 * foreground class on the preprocessed grid.
 *
 * Validation split (nnU-Net's 5-fold cross-validation): the training cases,
 * sorted by name, shuffled with a fixed seed (12345, so the split does not
 * depend on the train block's seed) and cut into min(5, n) folds of
 * consecutive cases (the first n mod F folds one case larger, as
 * scikit-learn's KFold); fold K validates on its cases and trains on the
 * rest.  The split is written to RUN/splits_final.json (nnU-Net's format:
 * a list of {"train": [...], "val": [...]}) and read back when present.
 * Fold "all" trains on every training case and validates on the labelled
 * test cases (imagesTs + labelsTs) when the dataset has them (so the
 * validation score, and the best checkpoint, are then chosen on the
 * held-out cases: a monitor, not an honest model selection), otherwise
 * without validation.  Default: fold 0 with at least 5 training cases,
 * else "all" (our Colin27 datasets have 2).
 *
 * Validation after each epoch: val_iterations batches (the inference
 * graph's batch and patch) of patches cut from the validation cases by a
 * Batcher without augmentation, with the train block's sampling and a seed
 * derived from the train block's: the same patches every epoch.  The
 * pseudo-Dice of each foreground class accumulates tp/fp/fn over all of
 * them (nnU-Net's "pseudo Dice"); val_iterations = 0 turns validation off.
 *
 * Every checkpoint and model file gets the dataset's normalization
 * statistics (for the channels that have them: NORM_CT) as
 * netc.stats.C.mean/.sd/.p005/.p995 (%.17g), and netc.protocol, netc.net,
 * netc.spacing ("z,y,x" mm of the preprocessed grid), netc.fold.
 *
 * Prefetching: batch k+1 is made by a worker thread while step k runs
 * (batches depend only on k, so the results are bit-identical).
 *
 * A loss with a voxel weight map reads DATA/weightsTr/CASE.nii.gz per
 * training case (train_weights.h); without one, weightsTr/ is ignored. */
#ifndef NETC_TRAIN_DATA_H
#define NETC_TRAIN_DATA_H

#include <stdbool.h>
#include <stddef.h>

#include "graph.h"
#include "sema.h"

typedef struct {
    const char *data_dir;
    const char *run_dir;
    const char *backend;        /* "llvm" (default) or "c" */
    bool resume;
    bool quiet;
    int threads;                /* data workers (0: in the training thread) */
    bool fold_set;              /* false: the default fold (see above) */
    int fold;                   /* with fold_set: 0 .. 4, or -1 = all */
    const char *init;           /* pretrained weights (overrides the train block's init) */
    bool no_prefetch;           /* make each batch in the training thread */
} TrainDataOptions;

typedef struct {
    double heldout_dice;        /* mean over foreground classes; NAN without held-out cases */
    double dice[16];            /* per foreground class 1.. */
    int nclasses;
    double train_seconds;
    double steps_per_second;
    long long steps;
    double first_loss, last_loss;
    double best_ema;            /* validation: the best EMA of the mean pseudo-Dice (NAN: none) */
    long long best_epoch;       /* 0-based, -1 without validation */
    double val_ema;             /* the last epoch's */
    double data_seconds;        /* time the training loop waited for its batches */
} TrainDataResult;

/* The validation split (see above) for `n` training case names: fills
 * is_val[i] (1: case i validates, 0: trains, 2: in neither).  Reads
 * split_path when it exists (every name in it must be one of `names`),
 * else makes the split and writes it there atomically.  0, or -1 with a
 * message. */
int train_split(const char *split_path, const char *const *names, int n, int fold, unsigned char *is_val, char *err,
                size_t errlen);

/* step: the training step graph (train + autodiff); inference: the net at
 * the protocol's patch (for the held-out evaluation). */
int train_on_dataset(const Graph *step, const Graph *inference, const TrainSpec *ts, const Protocol *pr,
                     const TrainDataOptions *o, TrainDataResult *res, char *err, size_t errlen);

#endif
