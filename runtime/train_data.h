/* train_data.h — `netc train`: a dataset in nnU-Net's raw format, through
 * preprocessing (dataset.h), patch sampling and augmentation (augment.h)
 * and the training loop (trainer.h), then the held-out evaluation.
 *
 * The held-out cases are the dataset's test cases with labels (imagesTs +
 * labelsTs).  They are segmented with the trained weights by the inference
 * graph at the protocol's patch: a 2D net slice by slice, a 3D net in one
 * window when the case fits (sliding windows come with `netc infer`), each
 * slice or volume centred in the patch with zero padding.  Dice per
 * foreground class on the preprocessed grid. */
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
} TrainDataOptions;

typedef struct {
    double heldout_dice;        /* mean over foreground classes; NAN without held-out cases */
    double dice[16];            /* per foreground class 1.. */
    int nclasses;
    double train_seconds;
    double steps_per_second;
    long long steps;
    double first_loss, last_loss;
} TrainDataResult;

/* step: the training step graph (train + autodiff); inference: the net at
 * the protocol's patch (for the held-out evaluation). */
int train_on_dataset(const Graph *step, const Graph *inference, const TrainSpec *ts, const Protocol *pr,
                     const TrainDataOptions *o, TrainDataResult *res, char *err, size_t errlen);

#endif
