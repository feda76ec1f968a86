/* train_data.c — `netc train` end to end (see train_data.h). */
#define _POSIX_C_SOURCE 200809L
#include "train_data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "augment.h"
#include "dataset.h"
#include "exec.h"
#include "ref.h"
#include "safetensors.h"
#include "trainer.h"

typedef struct {
    Batcher *b;
    float *img;
    int32_t *lab;
    int channels;
} Feed;

/* Batch k into the graph's inputs: one image input takes every channel;
 * several inputs take one channel each, in order.  A voxel weight map, if
 * the loss has one, is 1 everywhere (the dataset has no weight maps yet). */
static int feed_next(void *ctx, int64_t k, const Graph *g, RefState *s, char *err, size_t errlen)
{
    Feed *f = ctx;
    batcher_batch(f->b, k, f->img, f->lab);
    int nimg = 0;
    for (int i = 0; i < g->ninputs; i++) nimg += g->tensors[g->inputs[i].tensor].kind == TK_INPUT;
    int ch = 0;
    for (int i = 0; i < g->ninputs; i++) {
        int t = g->inputs[i].tensor;
        const Tensor *te = &g->tensors[t];
        if (te->kind == TK_LABEL) {
            memcpy(s->buf[t], f->lab, sizeof(int32_t) * (size_t)s->numel[t]);
        } else if (te->kind == TK_WEIGHTMAP) {
            for (int64_t j = 0; j < s->numel[t]; j++) s->buf[t][j] = 1.0f;
        } else if (te->kind == TK_INPUT) {
            int64_t N = te->shape.d[0], C = te->shape.d[1], per = s->numel[t] / (N * C);
            if (nimg == 1 && C != f->channels) {
                snprintf(err, errlen, "input `%s` has %lld channels, the dataset %d", g->inputs[i].name, (long long)C,
                         f->channels);
                return -1;
            }
            for (int64_t n = 0; n < N; n++)
                for (int64_t c = 0; c < C; c++)
                    memcpy(s->buf[t] + (n * C + c) * per, f->img + (n * f->channels + ch + c) * per,
                           sizeof(float) * (size_t)per);
            ch += (int)C;
        }
    }
    return 0;
}

/* ---- held-out evaluation ------------------------------------------------------------------------------ */

/* Segment one preprocessed case with the inference graph; tp/fp/fn per class. */
static int eval_case(NetcExec *x, const Graph *g, RefState *s, const DsPrepped *pp, int rank, int64_t *tp, int64_t *fp,
                     int64_t *fn, int nclasses, char *err, size_t errlen)
{
    int in = -1;
    for (int i = 0; i < g->ninputs; i++)
        if (g->tensors[g->inputs[i].tensor].kind == TK_INPUT) { in = g->inputs[i].tensor; break; }
    const Shape *is = &g->tensors[in].shape;
    const Shape *os = &g->tensors[g->outputs[0].tensor].shape;
    int64_t N = is->d[0], C = is->d[1];
    int64_t P[3] = { 1, 1, 1 };   /* patch (z, y, x) */
    for (int i = 0; i < rank; i++) P[3 - rank + i] = is->d[2 + i];
    if (os->d[0] != N || shape_numel(os) / (N * os->d[1]) != P[0] * P[1] * P[2]) {
        snprintf(err, errlen, "the held-out evaluation needs an output on the input's grid");
        return -1;
    }
    if (C != pp->nchannels) {
        snprintf(err, errlen, "the net takes %lld channels, the dataset has %d", (long long)C, pp->nchannels);
        return -1;
    }
    const int64_t *S = pp->shape;
    int64_t ZS = rank == 2 ? S[0] : 1;   /* 2D: slices; 3D: one window */
    if (rank == 3 && (S[0] > P[0] || S[1] > P[1] || S[2] > P[2])) {
        snprintf(err, errlen, "a held-out case (%lldx%lldx%lld) is larger than the patch; sliding-window "
                 "inference comes with netc infer", (long long)S[0], (long long)S[1], (long long)S[2]);
        return -1;
    }
    int64_t sz = rank == 2 ? 1 : S[0], sy = S[1], sx = S[2];
    /* centre: source offset (crop) or target offset (pad) per axis */
    int64_t oz = (P[0] - sz) / 2, oy = (P[1] - sy) / 2, ox = (P[2] - sx) / 2;
    int64_t per = P[0] * P[1] * P[2], K = os->d[1];
    const float *logits = NULL;
    for (int64_t z0 = 0; z0 < ZS; z0 += N) {
        memset(s->buf[in], 0, sizeof(float) * (size_t)s->numel[in]);
        for (int64_t n = 0; n < N && z0 + n < ZS; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t z = 0; z < P[0]; z++)
                    for (int64_t y = 0; y < P[1]; y++)
                        for (int64_t xx = 0; xx < P[2]; xx++) {
                            int64_t qz = rank == 2 ? z0 + n : z - oz, qy = y - oy, qx = xx - ox;
                            if (qz < 0 || qz >= S[0] || qy < 0 || qy >= sy || qx < 0 || qx >= sx) continue;
                            s->buf[in][(n * C + c) * per + (z * P[1] + y) * P[2] + xx] =
                                pp->image[((c * S[0] + qz) * S[1] + qy) * S[2] + qx];
                        }
        if (exec_run(x, s, err, errlen) != 0) return -1;
        logits = s->buf[g->outputs[0].tensor];
        for (int64_t n = 0; n < N && z0 + n < ZS; n++)
            for (int64_t z = 0; z < P[0]; z++)
                for (int64_t y = 0; y < P[1]; y++)
                    for (int64_t xx = 0; xx < P[2]; xx++) {
                        int64_t qz = rank == 2 ? z0 + n : z - oz, qy = y - oy, qx = xx - ox;
                        if (qz < 0 || qz >= S[0] || qy < 0 || qy >= sy || qx < 0 || qx >= sx) continue;
                        int64_t v = (z * P[1] + y) * P[2] + xx, best = 0;
                        for (int64_t k = 1; k < K; k++)
                            if (logits[(n * K + k) * per + v] > logits[(n * K + best) * per + v]) best = k;
                        if (K == 1) best = logits[n * per + v] > 0;
                        int gt = pp->labels[(qz * S[1] + qy) * S[2] + qx];
                        for (int k = 1; k < nclasses; k++) {
                            bool p = best == k, t = gt == k;
                            tp[k] += p && t;
                            fp[k] += p && !t;
                            fn[k] += !p && t;
                        }
                    }
    }
    return 0;
}

static int evaluate(const Graph *g, const Protocol *pr, Dataset *ds, const char *model, const char *backend,
                    TrainDataResult *res, char *err, size_t errlen)
{
    int64_t tp[64] = { 0 }, fp[64] = { 0 }, fn[64] = { 0 };
    int nclasses = pr->nclasses > 1 ? pr->nclasses : 2, nheld = 0;
    if (nclasses > 64) nclasses = 64;
    RefState *s = ref_new(g);
    if (!s) { snprintf(err, errlen, "out of memory"); return -1; }
    StFile *f = st_read(model, err, errlen);
    float **pd = calloc((size_t)(g->nparams > 0 ? g->nparams : 1), sizeof *pd);
    int rc = -1;
    NetcExec *x = NULL;
    if (!f || !pd) goto done;
    for (int i = 0; i < g->nparams; i++) pd[i] = s->buf[g->params[i].tensor];
    if (st_load_params(f, g, pd, NULL, err, errlen) != 0) goto done;
    x = exec_new(g, false, backend, err, errlen);
    if (!x) goto done;
    for (int i = ds->ntrain; i < ds->ncases; i++) {
        const DsPrepped *pp = ds_case(ds, i);
        if (!pp || !pp->labels) continue;
        if (eval_case(x, g, s, pp, pr->rank, tp, fp, fn, nclasses, err, errlen) != 0) goto done;
        nheld++;
    }
    res->nclasses = nclasses;
    res->heldout_dice = NAN;
    if (nheld) {
        double sum = 0;
        for (int k = 1; k < nclasses; k++) {
            int64_t d = 2 * tp[k] + fp[k] + fn[k];
            res->dice[k < 16 ? k : 15] = d ? 2.0 * (double)tp[k] / (double)d : 1.0;
            sum += res->dice[k < 16 ? k : 15];
        }
        res->heldout_dice = sum / (double)(nclasses - 1);
    }
    rc = 0;
done:
    exec_free(x);
    free(pd);
    st_free(f);
    ref_free(s);
    return rc;
}

int train_on_dataset(const Graph *step, const Graph *inference, const TrainSpec *ts, const Protocol *pr,
                     const TrainDataOptions *o, TrainDataResult *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    res->heldout_dice = NAN;
    if (mkdir(o->run_dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", o->run_dir, strerror(errno));
        return -1;
    }
    Dataset *ds = ds_open(o->data_dir, err, errlen);
    if (!ds) return -1;
    DsParams p;
    ds_params_from_protocol(&p, pr);
    char cache[4200];
    snprintf(cache, sizeof cache, "%.4000s/preprocessed", o->run_dir);
    int rc = -1;
    AugCase *cases = NULL;
    Batcher *b = NULL;
    Feed feed = { 0 };
    if (ds->nchannels != pr->nchannels) {
        snprintf(err, errlen, "%s has %d channel(s), protocol %s %d", o->data_dir, ds->nchannels, pr->name, pr->nchannels);
        goto done;
    }
    if (ds_preprocess(ds, &p, cache, -1, err, errlen) != 0) goto done;
    cases = calloc((size_t)(ds->ntrain > 0 ? ds->ntrain : 1), sizeof *cases);
    if (!cases) { snprintf(err, errlen, "out of memory"); goto done; }
    for (int i = 0; i < ds->ntrain; i++) {
        const DsPrepped *pp = ds_case(ds, i);
        cases[i].nchannels = pp->nchannels;
        memcpy(cases[i].shape, pp->shape, sizeof cases[i].shape);
        cases[i].image = pp->image;
        cases[i].labels = pp->labels;
    }
    AugDataset ad = { cases, ds->ntrain, pr->nclasses > 1 ? pr->nclasses : 2 };
    AugSpec spec;
    aug_spec_from_train(&spec, ts);
    if (!aug_check(&ad, &spec, err, errlen)) goto done;
    b = batcher_new(&ad, &spec, 0, (uint64_t)ts->seed);
    if (!b) { snprintf(err, errlen, "cannot make batches"); goto done; }
    feed.b = b;
    feed.channels = ds->nchannels;
    feed.img = malloc(sizeof(float) * batcher_image_count(b));
    feed.lab = malloc(sizeof(int32_t) * batcher_label_count(b));
    if (!feed.img || !feed.lab) { snprintf(err, errlen, "out of memory"); goto done; }
    BatchSource src = { feed_next, &feed };
    TrainOptions to = { .run_dir = o->run_dir, .backend = o->backend, .resume = o->resume, .quiet = o->quiet };
    TrainResult tr;
    if (train_run(step, ts, &src, &to, &tr, err, errlen) != 0) goto done;
    res->train_seconds = tr.seconds;
    res->steps_per_second = tr.steps_per_second;
    res->steps = tr.steps_done;
    res->first_loss = tr.first_loss;
    res->last_loss = tr.last_loss;
    char model[4300];
    snprintf(model, sizeof model, "%.4000s/model_last.safetensors", o->run_dir);
    if (evaluate(inference, pr, ds, model, o->backend ? o->backend : "llvm", res, err, errlen) != 0) goto done;
    rc = 0;
done:
    free(feed.img);
    free(feed.lab);
    batcher_free(b);
    free(cases);
    ds_free(ds);
    return rc;
}
