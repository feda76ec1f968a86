/* trainer.h — the training loop over a compiled training step.
 *
 * The graph is a whole training step (netc_compile with train + autodiff:
 * forward, loss, backward and the train block's optimizer update), run as
 * generated code (exec.h) in two halves so the gradients can be clipped by
 * their global norm before the update.  Batches come from a BatchSource
 * (the data pipeline, or a synthetic source in tests); batch k must depend
 * only on k, so a resumed run sees the same batches as an uninterrupted one.
 *
 * Per epoch: `iterations` steps at the schedule's learning rate, then the
 * checkpoint `checkpoint_last.safetensors` (every parameter, buffer and
 * optimizer state, plus metadata: epoch, step, seed; written atomically:
 * temp file, fsync, rename), the weights alone `model_last.safetensors`
 * (what `netc run --weights` loads), a line in `log.csv` and the curve
 * picture `curves.svg`, all in the run folder.  A non-finite loss stops training
 * with a message; the last checkpoint is kept as it was.
 */
#ifndef NETC_TRAINER_H
#define NETC_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "ref.h"
#include "sema.h"

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
    bool quiet;               /* no progress bar */
    int64_t stop_after_epochs;   /* > 0: stop (as if killed) after this many epochs of this call */
    /* Called after each epoch with the trained state (parameters by graph
     * name in g->params), e.g. validation; returns a score to log (or NAN). */
    double (*epoch_end)(void *ctx, const Graph *g, const RefState *s, int64_t epoch);
    void *epoch_ctx;
} TrainOptions;

typedef struct {
    int64_t epochs_done, steps_done;
    double last_loss, first_loss;
    double seconds, steps_per_second;
} TrainResult;

/* The learning rate at epoch e (0-based) of `epochs` under the train
 * block's schedules (poly, cosine, step, constant; warmup multiplies). */
double train_lr(const TrainSpec *ts, int64_t e, int64_t epochs);

/* Run the training loop.  0, or -1 with a message (the run folder keeps
 * its last good checkpoint). */
int train_run(const Graph *g, const TrainSpec *ts, BatchSource *src, const TrainOptions *o, TrainResult *res,
              char *err, size_t errlen);

#endif
