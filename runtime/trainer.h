/* trainer.h — the training loop over a compiled training step.
 *
 * The graph is a whole training step (netc_compile with train + autodiff:
 * forward, loss, backward and the train block's optimizer update), run as
 * generated code (exec.h) in two halves so the gradients can be clipped by
 * their global norm before the update.  Batches come from a BatchSource
 * (the data pipeline, or a synthetic source in tests); batch k must depend
 * only on k, so a resumed run sees the same batches as an uninterrupted one.
 *
 * Before the first epoch (not when resuming) the parameters get their
 * initial values (ref_init_params with the train block's seed) and then,
 * with TrainOptions.init_path, pretrained weights (train_load_init).
 *
 * Per epoch: `iterations` steps at the schedule's learning rate, then the
 * validation (TrainOptions.validate: a pseudo-Dice per foreground class;
 * their mean, over the classes that occur, is smoothed as nnU-Net does:
 * ema = 0.9 ema + 0.1 mean, the first epoch's mean as is), then, written
 * atomically (temp file, fsync, rename) to the run folder:
 *   checkpoint_best.safetensors, model_best.safetensors  when the EMA
 *       exceeds the best one so far (written before checkpoint_last, so a
 *       crash in between redoes the epoch and rewrites the same files);
 *   checkpoint_last.safetensors  every parameter, buffer and optimizer
 *       state, plus metadata: netc_epoch, netc_step, netc_seed, netc_loss,
 *       netc_ema, netc_best_ema, netc_best_epoch and netc_log (the log's
 *       rows so far, so a resumed run continues the same curves);
 *   model_last.safetensors  the weights alone (what `netc run --weights`
 *       loads);
 *   log.csv  one row per epoch: epoch, train_loss, val_dice (mean), val_ema,
 *       lr, dice_CLASS per foreground class, seconds (rewritten whole);
 *   curves.svg  train loss, validation Dice and its EMA.
 * Every file also carries TrainOptions' extra metadata (dataset statistics,
 * protocol).  A non-finite loss stops training with a message; the last
 * checkpoint is kept as it was.
 *
 * Test hook: with the environment variable NETC_TEST_SLOW_CHECKPOINT=MS,
 * each checkpoint file is held MS milliseconds between being written (to
 * its temporary name) and renamed, to widen the window a crash test kills
 * into (tests/cli_train.sh).  Never set it otherwise.
 */
#ifndef NETC_TRAINER_H
#define NETC_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "ref.h"
#include "sema.h"

#define TRAIN_MAX_CLASSES 64

typedef struct {
    /* Fill batch k: every graph input of kind TK_INPUT (in g->inputs order,
     * N x C x patch floats), the labels (int32) and, when the graph has one,
     * the voxel weight map.  0, or -1 with a message. */
    int (*next)(void *ctx, int64_t k, const Graph *g, RefState *s, char *err, size_t errlen);
    void *ctx;
} BatchSource;

typedef struct {
    const char *run_dir;      /* created if missing */
    const char *backend;      /* "llvm" (default) or "c" */
    bool resume;              /* continue from run_dir/checkpoint_last.safetensors */
    bool quiet;               /* no progress bar, no init summary */
    int64_t stop_after_epochs;   /* > 0: stop (as if killed) after this many epochs of this call */
    /* Validation after each epoch with the trained state (parameters by
     * graph name in g->params): dice[k] for the foreground classes
     * k = 1 .. nclasses-1 (NAN: the class occurs neither in the
     * prediction nor in the reference).  0, or -1 with a message (training
     * stops).  NULL: no validation. */
    int (*validate)(void *ctx, const Graph *g, const RefState *s, int64_t epoch, double *dice, char *err,
                    size_t errlen);
    void *validate_ctx;
    int nclasses;                     /* classes including background (log columns); 2 if 0 */
    const char *const *class_names;   /* nclasses names for the log (may be NULL) */
    /* Extra metadata written into every checkpoint and model file. */
    const char *const *meta_keys;
    const char *const *meta_vals;
    int nmeta;
    const char *init_path;    /* pretrained weights (train_load_init); ignored when resuming */
} TrainOptions;

typedef struct {
    int64_t epochs_done, steps_done;
    double last_loss, first_loss;
    double seconds, steps_per_second;
    double val_dice, val_ema;         /* of the last epoch (NAN without validation) */
    double best_ema;                  /* NAN without validation */
    int64_t best_epoch;               /* -1 without validation */
    int init_loaded, init_skipped;    /* train_load_init's counts (0 without init) */
} TrainResult;

/* The learning rate at epoch e (0-based) of `epochs` under the train
 * block's schedules (poly, cosine, step, constant; warmup multiplies). */
double train_lr(const TrainSpec *ts, int64_t e, int64_t epochs);

/* Load pretrained weights from a safetensors file into the net's
 * parameters and buffers (not the optimizer state): each one whose name is
 * in the file with the same shape (and a float dtype) is loaded, the others
 * keep their values.  summary (may be NULL) gets "loaded N of M tensors
 * from FILE" and, for each skipped one, its name and why (the shapes when
 * they differ), and how many of the file's tensors the net does not use.
 * 0, or -1 with a message when the file is unreadable or nothing matches. */
int train_load_init(const Graph *g, RefState *s, const char *path, int *loaded, int *skipped, char *summary,
                    size_t summarylen, char *err, size_t errlen);

/* Run the training loop.  0, or -1 with a message (the run folder keeps
 * its last good checkpoint). */
int train_run(const Graph *g, const TrainSpec *ts, BatchSource *src, const TrainOptions *o, TrainResult *res,
              char *err, size_t errlen);

#endif
