/* train_data.c — `netc train` end to end (see train_data.h). */
#define _POSIX_C_SOURCE 200809L
#include "train_data.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "augment.h"
#include "dataset.h"
#include "exec.h"
#include "ref.h"
#include "safetensors.h"
#include "trainer.h"
#include "train_weights.h"

/* Prefetching: one worker thread makes batch k+1 while step k runs. */
typedef struct {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const Batcher *b, *wb;   /* wb: the weight maps' batcher, or NULL */
    float *img, *wimg;
    int32_t *lab, *wlab;
    int64_t req, ready;   /* the batch asked for (-1: none), the batch in img/lab (-1: none) */
    bool quit, started;
} Prefetch;

static void *prefetch_main(void *arg)
{
    Prefetch *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->req < 0) pthread_cond_wait(&p->cv, &p->mu);
        if (p->quit) break;
        int64_t k = p->req;
        pthread_mutex_unlock(&p->mu);
        batcher_batch(p->b, k, p->img, p->lab);
        if (p->wb) batcher_batch(p->wb, k, p->wimg, p->wlab);
        pthread_mutex_lock(&p->mu);
        p->ready = k;
        p->req = -1;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

typedef struct {
    Batcher *b, *wb;   /* wb: the weight maps' batcher (train_weights.h), or NULL */
    float *img, *wimg;
    int32_t *lab, *wlab;
    int channels;
    Prefetch *pf;   /* NULL: no prefetching */
    double wait;    /* seconds the training loop spent in feed_next */
} Feed;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Images, labels and weight maps of one batch into the graph's inputs: one
 * image input takes every channel; several inputs take one channel each, in
 * order.  A voxel weight map input without maps (wmap NULL) is 1. */
static int fill_inputs(const Graph *g, RefState *s, const float *img, const int32_t *lab, const float *wmap,
                       int channels, char *err, size_t errlen)
{
    int nimg = 0;
    for (int i = 0; i < g->ninputs; i++) nimg += g->tensors[g->inputs[i].tensor].kind == TK_INPUT;
    int ch = 0;
    for (int i = 0; i < g->ninputs; i++) {
        int t = g->inputs[i].tensor;
        const Tensor *te = &g->tensors[t];
        if (te->kind == TK_LABEL) {
            if (lab) memcpy(s->buf[t], lab, sizeof(int32_t) * (size_t)s->numel[t]);
        } else if (te->kind == TK_WEIGHTMAP) {
            if (wmap) memcpy(s->buf[t], wmap, sizeof(float) * (size_t)s->numel[t]);
            else
                for (int64_t j = 0; j < s->numel[t]; j++) s->buf[t][j] = 1.0f;
        } else if (te->kind == TK_INPUT) {
            int64_t N = te->shape.d[0], C = te->shape.d[1], per = s->numel[t] / (N * C);
            if ((nimg == 1 && C != channels) || ch + C > channels) {
                snprintf(err, errlen, "input `%s` has %lld channels, the dataset %d", g->inputs[i].name, (long long)C,
                         channels);
                return -1;
            }
            for (int64_t n = 0; n < N; n++)
                for (int64_t c = 0; c < C; c++)
                    memcpy(s->buf[t] + (n * C + c) * per, img + (n * channels + ch + c) * per,
                           sizeof(float) * (size_t)per);
            ch += (int)C;
        }
    }
    return 0;
}

/* Batch k into the graph's inputs (from the prefetcher when it has it). */
static int feed_next(void *ctx, int64_t k, const Graph *g, RefState *s, char *err, size_t errlen)
{
    Feed *f = ctx;
    Prefetch *p = f->pf;
    double t0 = now_s();
    if (!p) {
        batcher_batch(f->b, k, f->img, f->lab);
        if (f->wb) batcher_batch(f->wb, k, f->wimg, f->wlab);
        int r = fill_inputs(g, s, f->img, f->lab, f->wb ? f->wimg : NULL, f->channels, err, errlen);
        f->wait += now_s() - t0;
        return r;
    }
    pthread_mutex_lock(&p->mu);
    while (p->req >= 0) pthread_cond_wait(&p->cv, &p->mu);   /* the worker is busy */
    bool have = p->ready == k;
    p->ready = -1;
    pthread_mutex_unlock(&p->mu);
    if (!have) {   /* the worker is idle: its buffers are ours */
        batcher_batch(f->b, k, p->img, p->lab);
        if (p->wb) batcher_batch(p->wb, k, p->wimg, p->wlab);
    }
    int rc = fill_inputs(g, s, p->img, p->lab, p->wb ? p->wimg : NULL, f->channels, err, errlen);
    pthread_mutex_lock(&p->mu);
    p->req = k + 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    f->wait += now_s() - t0;
    return rc;
}

static void prefetch_stop(Prefetch *p)
{
    if (!p || !p->started) return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    p->started = false;
}

/* ---- validation split ---------------------------------------------------------------------------------- */

static int name_index(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0) return i;
    return -1;
}

static char *read_text(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno)); return NULL; }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *nb = cap < ((size_t)64 << 20) ? realloc(b, cap * 2) : NULL;
            if (!nb) { free(b); b = NULL; break; }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!b) { snprintf(err, errlen, "%s: too large or out of memory", path); return NULL; }
    b[n] = 0;
    return b;
}

int train_split(const char *split_path, const char *const *names, int n, int fold, unsigned char *is_val, char *err,
                size_t errlen)
{
    for (int i = 0; i < n; i++) is_val[i] = 2;
    if (fold < 0 || fold > 4) { snprintf(err, errlen, "fold %d: folds are 0 .. 4", fold); return -1; }
    cJSON *root = NULL;
    int rc = -1;
    if (access(split_path, F_OK) == 0) {
        char *text = read_text(split_path, err, errlen);
        if (!text) return -1;
        root = cJSON_Parse(text);
        free(text);
        if (!root || !cJSON_IsArray(root)) {
            snprintf(err, errlen, "%s: not a list of folds ({\"train\": [...], \"val\": [...]}); delete it to make a new split",
                     split_path);
            goto out;
        }
        int nf = cJSON_GetArraySize(root);
        if (fold >= nf) {
            snprintf(err, errlen, "%s has %d fold(s); there is no fold %d", split_path, nf, fold);
            goto out;
        }
        cJSON *e = cJSON_GetArrayItem(root, fold);
        const char *part[2] = { "train", "val" };
        int count[2] = { 0, 0 };
        for (int w = 0; w < 2; w++) {
            cJSON *l = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, part[w]) : NULL;
            if (!cJSON_IsArray(l)) {
                snprintf(err, errlen, "%s: fold %d has no \"%s\" list", split_path, fold, part[w]);
                goto out;
            }
            cJSON *c;
            cJSON_ArrayForEach(c, l) {
                int i = cJSON_IsString(c) ? name_index(names, n, c->valuestring) : -1;
                if (i < 0) {
                    snprintf(err, errlen, "%s: fold %d: %s%s%s is not a training case of the dataset (delete the "
                             "file to make a new split)", split_path, fold, cJSON_IsString(c) ? "case `" : "a value",
                             cJSON_IsString(c) ? c->valuestring : " that is not a name", cJSON_IsString(c) ? "`" : "");
                    goto out;
                }
                is_val[i] = (unsigned char)w;
                count[w]++;
            }
        }
        if (count[0] == 0 || count[1] == 0) {
            snprintf(err, errlen, "%s: fold %d has no %s cases", split_path, fold, count[0] ? "validation" : "training");
            goto out;
        }
        rc = 0;
        goto out;
    }
    if (n < 2) { snprintf(err, errlen, "a validation split needs at least 2 training cases, the dataset has %d", n); return -1; }
    int nf = n < 5 ? n : 5;
    if (fold >= nf) {
        snprintf(err, errlen, "%d training cases make %d folds; there is no fold %d", n, nf, fold);
        return -1;
    }
    int *perm = malloc(sizeof(int) * (size_t)n);
    if (!perm) { snprintf(err, errlen, "out of memory"); return -1; }
    for (int i = 0; i < n; i++) perm[i] = i;   /* names come sorted */
    RefRng r = { 12345 };
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(ref_rng_next(&r) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    root = cJSON_CreateArray();
    int start = 0;
    for (int f = 0; f < nf && root; f++) {
        int len = n / nf + (f < n % nf);
        cJSON *e = cJSON_CreateObject(), *tr = cJSON_CreateArray(), *va = cJSON_CreateArray();
        for (int i = 0; i < n; i++) {   /* each list in name order */
            int pos = 0;
            while (perm[pos] != i) pos++;
            bool v = pos >= start && pos < start + len;
            cJSON_AddItemToArray(v ? va : tr, cJSON_CreateString(names[i]));
            if (f == fold) is_val[i] = v;
        }
        cJSON_AddItemToObject(e, "train", tr);
        cJSON_AddItemToObject(e, "val", va);
        cJSON_AddItemToArray(root, e);
        start += len;
    }
    free(perm);
    char *text = root ? cJSON_Print(root) : NULL;
    if (!text) { snprintf(err, errlen, "out of memory"); goto out; }
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%.4200s.tmp.%ld", split_path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    else {
        fputs(text, f);
        fputc('\n', f);
        if (fclose(f) != 0 || rename(tmp, split_path) != 0) {
            snprintf(err, errlen, "cannot write %s: %s", split_path, strerror(errno));
            unlink(tmp);
        } else rc = 0;
    }
    free(text);
out:
    cJSON_Delete(root);
    return rc;
}

/* ---- validation during training ------------------------------------------------------------------------ */

typedef struct {
    const Graph *g;         /* the inference graph */
    RefState *s;
    NetcExec *x;
    int *from;              /* per inference param: the training step's param index */
    Batcher *b;             /* patches of the validation cases, no augmentation */
    float *img;
    int32_t *lab;
    int channels, nclasses;
    int64_t iterations;
} Val;

static int validate(void *ctx, const Graph *step, const RefState *ss, int64_t epoch, double *dice, char *err,
                    size_t errlen)
{
    (void)epoch;
    Val *v = ctx;
    const Graph *g = v->g;
    for (int i = 0; i < g->nparams; i++)
        memcpy(v->s->buf[g->params[i].tensor], ss->buf[step->params[v->from[i]].tensor],
               sizeof(float) * (size_t)v->s->numel[g->params[i].tensor]);
    int64_t tp[TRAIN_MAX_CLASSES] = { 0 }, fp[TRAIN_MAX_CLASSES] = { 0 }, fn[TRAIN_MAX_CLASSES] = { 0 };
    const Shape *os = &g->tensors[g->outputs[0].tensor].shape;
    int64_t N = os->d[0], K = os->d[1], per = shape_numel(os) / (N * K);
    int nc = v->nclasses < TRAIN_MAX_CLASSES ? v->nclasses : TRAIN_MAX_CLASSES;
    for (int64_t it = 0; it < v->iterations; it++) {
        batcher_batch(v->b, it, v->img, v->lab);
        if (fill_inputs(g, v->s, v->img, NULL, NULL, v->channels, err, errlen) != 0) return -1;
        if (exec_run(v->x, v->s, err, errlen) != 0) return -1;
        const float *lg = v->s->buf[g->outputs[0].tensor];
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < per; j++) {
                int64_t best = 0;
                if (K == 1) best = lg[n * per + j] > 0;
                else
                    for (int64_t k = 1; k < K; k++)
                        if (lg[(n * K + k) * per + j] > lg[(n * K + best) * per + j]) best = k;
                int32_t t = v->lab[n * per + j];
                if (t < 0 || t >= nc) continue;   /* an ignore label */
                for (int k = 1; k < nc; k++) {
                    bool pk = best == k, tk = t == k;
                    tp[k] += pk && tk;
                    fp[k] += pk && !tk;
                    fn[k] += !pk && tk;
                }
            }
    }
    for (int k = 1; k < nc; k++) {
        int64_t d = 2 * tp[k] + fp[k] + fn[k];
        dice[k] = d ? 2.0 * (double)tp[k] / (double)d : NAN;
    }
    return 0;
}

static void val_free(Val *v)
{
    exec_free(v->x);
    ref_free(v->s);
    free(v->from);
    batcher_free(v->b);
    free(v->img);
    free(v->lab);
}

/* Set up validation on `cases` with the inference graph. */
static int val_setup(Val *v, const Graph *inf, const Graph *step, const TrainSpec *ts, const AugDataset *ad,
                     int channels, const char *backend, char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    v->g = inf;
    v->channels = channels;
    v->nclasses = ad->nclasses;
    v->iterations = ts->val_iterations;
    int in = -1;
    for (int i = 0; i < inf->ninputs; i++)
        if (inf->tensors[inf->inputs[i].tensor].kind == TK_INPUT) { in = inf->inputs[i].tensor; break; }
    if (in < 0 || inf->noutputs < 1) { snprintf(err, errlen, "the net has no image input or no output"); return -1; }
    const Shape *is = &inf->tensors[in].shape, *os = &inf->tensors[inf->outputs[0].tensor].shape;
    int rank = is->rank - 2;
    if ((rank != 2 && rank != 3) || os->rank != is->rank || os->d[0] != is->d[0]) {
        snprintf(err, errlen, "validation needs a 2D or 3D net whose first output is on the input's grid");
        return -1;
    }
    for (int a = 2; a < is->rank; a++)
        if (os->d[a] != is->d[a]) {
            snprintf(err, errlen, "validation needs the first output on the input's grid");
            return -1;
        }
    v->from = calloc((size_t)(inf->nparams > 0 ? inf->nparams : 1), sizeof *v->from);
    if (!v->from) { snprintf(err, errlen, "out of memory"); return -1; }
    for (int i = 0; i < inf->nparams; i++) {
        v->from[i] = -1;
        for (int j = 0; j < step->nparams && v->from[i] < 0; j++)
            if (strcmp(step->params[j].name, inf->params[i].name) == 0 &&
                shape_numel(&step->tensors[step->params[j].tensor].shape) ==
                    shape_numel(&inf->tensors[inf->params[i].tensor].shape))
                v->from[i] = j;
        if (v->from[i] < 0) {
            snprintf(err, errlen, "validation: the training step has no parameter `%s`", inf->params[i].name);
            return -1;
        }
    }
    AugSpec spec;
    aug_spec_from_train(&spec, ts);
    spec.naugment = 0;
    spec.augment = NULL;
    spec.rank = rank;
    spec.batch = (int)is->d[0];
    for (int a = 0; a < rank; a++) spec.patch[a] = is->d[2 + a];
    if (!aug_check(ad, &spec, err, errlen)) return -1;
    v->b = batcher_new(ad, &spec, 0, (uint64_t)ts->seed ^ 0x76616c6964617465ull);
    v->s = ref_new(inf);
    if (!v->b || !v->s) { snprintf(err, errlen, "out of memory"); return -1; }
    v->img = malloc(sizeof(float) * batcher_image_count(v->b));
    v->lab = malloc(sizeof(int32_t) * batcher_label_count(v->b));
    if (!v->img || !v->lab) { snprintf(err, errlen, "out of memory"); return -1; }
    v->x = exec_new(inf, false, backend, err, errlen);
    return v->x ? 0 : -1;
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

/* reuse: the inference graph's executable when validation built one (NULL: build it here). */
static int evaluate(const Graph *g, const Protocol *pr, Dataset *ds, const char *model, const char *backend,
                    NetcExec *reuse, TrainDataResult *res, char *err, size_t errlen)
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
    x = reuse ? reuse : exec_new(g, false, backend, err, errlen);
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
    if (x != reuse) exec_free(x);
    free(pd);
    st_free(f);
    ref_free(s);
    return rc;
}

int train_on_dataset(const Graph *step, const Graph *inference, const TrainSpec *ts, const Protocol *pr,
                     const TrainDataOptions *o, TrainDataResult *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    res->heldout_dice = res->best_ema = res->val_ema = NAN;
    res->best_epoch = -1;
    if (mkdir(o->run_dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", o->run_dir, strerror(errno));
        return -1;
    }
    Dataset *ds = ds_open(o->data_dir, err, errlen);
    if (!ds) return -1;
    DsParams p;
    ds_params_from_protocol(&p, pr);
    char cache[4200], split_path[4200];
    snprintf(cache, sizeof cache, "%.4000s/preprocessed", o->run_dir);
    snprintf(split_path, sizeof split_path, "%.4000s/splits_final.json", o->run_dir);
    int rc = -1, ntr = 0, nval = 0;
    AugCase *cases = NULL, *vcases = NULL;
    const char **names = NULL;
    unsigned char *is_val = NULL;
    Batcher *b = NULL;
    Feed feed = { 0 };
    float **wmaps = NULL;
    AugCase *wcases = NULL;
    TrainCall *waug = NULL;
    Prefetch pf = { .req = -1, .ready = -1 };
    Val val;
    bool have_val = false, pf_init = false;
    memset(&val, 0, sizeof val);
    char meta_k[DS_MAX_CHANNELS * 4 + 8][48], meta_v[DS_MAX_CHANNELS * 4 + 8][200];
    const char *mk[DS_MAX_CHANNELS * 4 + 8], *mv[DS_MAX_CHANNELS * 4 + 8];
    int nmeta = 0;
    if (ds->nchannels != pr->nchannels) {
        snprintf(err, errlen, "%s has %d channel(s), protocol %s %d", o->data_dir, ds->nchannels, pr->name, pr->nchannels);
        goto done;
    }
    if (ds_preprocess(ds, &p, cache, -1, err, errlen) != 0) goto done;
    /* the split */
    int n = ds->ntrain;
    names = calloc((size_t)(n > 0 ? n : 1), sizeof *names);
    is_val = calloc((size_t)(n > 0 ? n : 1), 1);
    cases = calloc((size_t)(n > 0 ? n : 1), sizeof *cases);
    vcases = calloc((size_t)(ds->ncases > 0 ? ds->ncases : 1), sizeof *vcases);
    if (!names || !is_val || !cases || !vcases) { snprintf(err, errlen, "out of memory"); goto done; }
    for (int i = 0; i < n; i++) names[i] = ds->cases[i].name;
    int fold = o->fold_set ? o->fold : n >= 5 ? 0 : -1;
    if (fold >= 0) {
        if (train_split(split_path, names, n, fold, is_val, err, errlen) != 0) goto done;
    } else if (n >= 2 && access(split_path, F_OK) != 0) {   /* written for later folds, as nnU-Net does */
        if (train_split(split_path, names, n, 0, is_val, err, errlen) != 0) goto done;
        memset(is_val, 0, (size_t)n);
    }
    for (int i = 0; i < ds->ncases; i++) {
        bool train = i < n && is_val[i] == 0, v = fold >= 0 ? i < n && is_val[i] == 1 : i >= n;
        if (!train && !v) continue;
        const DsPrepped *pp = ds_case(ds, i);
        if (!pp || !pp->labels) continue;
        AugCase *c = train ? &cases[ntr++] : &vcases[nval++];
        c->nchannels = pp->nchannels;
        memcpy(c->shape, pp->shape, sizeof c->shape);
        c->image = pp->image;
        c->labels = pp->labels;
    }
    if (!o->quiet) {
        if (fold >= 0)
            fprintf(stderr, "fold %d (%s): %d training case(s), %d validation case(s)\n", fold, split_path, ntr, nval);
        else
            fprintf(stderr, "fold all: %d training case(s); validation on %d labelled test case(s) (imagesTs + labelsTs)%s\n",
                    ntr, nval, o->fold_set ? "" : (n >= 2 ? "; fewer than 5 training cases, so no fold is held out" :
                                                             "; one training case cannot be split"));
    }
    if (ntr == 0) {
        snprintf(err, errlen, "%s: no training case with labels%s", o->data_dir, fold >= 0 ? " in this fold" : "");
        goto done;
    }
    AugDataset ad = { cases, ntr, pr->nclasses > 1 ? pr->nclasses : 2 };
    AugSpec spec;
    aug_spec_from_train(&spec, ts);
    if (!aug_check(&ad, &spec, err, errlen)) goto done;
    b = batcher_new(&ad, &spec, 0, (uint64_t)ts->seed);
    if (!b) { snprintf(err, errlen, "cannot make batches"); goto done; }
    bool want_w = false;
    for (int i = 0; i < step->ninputs; i++) want_w |= step->tensors[step->inputs[i].tensor].kind == TK_WEIGHTMAP;
    if (want_w) {   /* the loss takes a voxel weight map: DATA/weightsTr/CASE (train_weights.h) */
        wmaps = calloc((size_t)(ntr > 0 ? ntr : 1), sizeof *wmaps);
        wcases = calloc((size_t)(ntr > 0 ? ntr : 1), sizeof *wcases);
        waug = calloc((size_t)(spec.naugment > 0 ? spec.naugment : 1), sizeof *waug);
        if (!wmaps || !wcases || !waug) { snprintf(err, errlen, "out of memory"); goto done; }
        for (int i = 0, t = 0; i < n; i++) {
            if (is_val[i] != 0) continue;
            const DsPrepped *pp = ds_case(ds, i);
            if (!pp || !pp->labels) continue;
            char wpath[4400];
            snprintf(wpath, sizeof wpath, "%.4000s/weightsTr/%.200s%.30s", o->data_dir, ds->cases[i].name,
                     ds->file_ending ? ds->file_ending : ".nii.gz");
            if (tw_load(wpath, pp, &wmaps[t], err, errlen) != 0) {
                size_t u = strlen(err);
                snprintf(err + u, errlen - u, " (the loss takes a weightmap: one per training case in weightsTr/)");
                goto done;
            }
            wcases[t] = cases[t];
            wcases[t].nchannels = 1;
            wcases[t].image = wmaps[t];
            t++;
        }
        if (spec.naugment > 0) memcpy(waug, spec.augment, sizeof *waug * (size_t)spec.naugment);
        tw_spatial_only(waug, spec.naugment);
        AugSpec wspec = spec;
        wspec.augment = waug;
        AugDataset wad = { wcases, ntr, ad.nclasses };
        feed.wb = batcher_new(&wad, &wspec, 0, (uint64_t)ts->seed);
        if (!feed.wb) { snprintf(err, errlen, "cannot make weight-map batches"); goto done; }
        feed.wimg = malloc(sizeof(float) * batcher_image_count(feed.wb));
        feed.wlab = malloc(sizeof(int32_t) * batcher_label_count(feed.wb));
        if (!feed.wimg || !feed.wlab) { snprintf(err, errlen, "out of memory"); goto done; }
    }
    feed.b = b;
    feed.channels = ds->nchannels;
    feed.img = malloc(sizeof(float) * batcher_image_count(b));
    feed.lab = malloc(sizeof(int32_t) * batcher_label_count(b));
    if (!feed.img || !feed.lab) { snprintf(err, errlen, "out of memory"); goto done; }
    if (!o->no_prefetch) {
        pf.b = b;
        pf.img = malloc(sizeof(float) * batcher_image_count(b));
        pf.lab = malloc(sizeof(int32_t) * batcher_label_count(b));
        if (!pf.img || !pf.lab) { snprintf(err, errlen, "out of memory"); goto done; }
        if (feed.wb) {
            pf.wb = feed.wb;
            pf.wimg = malloc(sizeof(float) * batcher_image_count(feed.wb));
            pf.wlab = malloc(sizeof(int32_t) * batcher_label_count(feed.wb));
            if (!pf.wimg || !pf.wlab) { snprintf(err, errlen, "out of memory"); goto done; }
        }
        pthread_mutex_init(&pf.mu, NULL);
        pthread_cond_init(&pf.cv, NULL);
        pf_init = true;
        if (pthread_create(&pf.th, NULL, prefetch_main, &pf) != 0) { snprintf(err, errlen, "cannot start a thread"); goto done; }
        pf.started = true;
        feed.pf = &pf;
    }
    if (nval > 0 && ts->val_iterations > 0) {
        AugDataset vd = { vcases, nval, ad.nclasses };
        have_val = true;
        if (val_setup(&val, inference, step, ts, &vd, ds->nchannels, o->backend ? o->backend : "llvm", err, errlen) != 0)
            goto done;
    }
    /* metadata for inference: the normalization statistics, the protocol, the grid */
    for (int c = 0; c < ds->nchannels && c < DS_MAX_CHANNELS; c++) {
        if (!ds->stats[c].valid) continue;
        const char *what[4] = { "mean", "sd", "p005", "p995" };
        double val4[4] = { ds->stats[c].mean, ds->stats[c].sd, ds->stats[c].p005, ds->stats[c].p995 };
        for (int w = 0; w < 4; w++) {
            snprintf(meta_k[nmeta], sizeof meta_k[nmeta], "netc.stats.%d.%s", c, what[w]);
            snprintf(meta_v[nmeta], sizeof meta_v[nmeta], "%.17g", val4[w]);
            nmeta++;
        }
    }
    const DsPrepped *p0 = ds_case(ds, 0);
    snprintf(meta_k[nmeta], sizeof meta_k[nmeta], "netc.protocol");
    snprintf(meta_v[nmeta++], sizeof meta_v[0], "%.190s", pr->name);
    snprintf(meta_k[nmeta], sizeof meta_k[nmeta], "netc.net");
    snprintf(meta_v[nmeta++], sizeof meta_v[0], "%.190s", step->net_name ? step->net_name : "");
    snprintf(meta_k[nmeta], sizeof meta_k[nmeta], "netc.spacing");
    snprintf(meta_v[nmeta++], sizeof meta_v[0], "%.17g,%.17g,%.17g", p0 ? p0->spacing[0] : p.spacing[0],
             p0 ? p0->spacing[1] : p.spacing[1], p0 ? p0->spacing[2] : p.spacing[2]);
    snprintf(meta_k[nmeta], sizeof meta_k[nmeta], "netc.fold");
    if (fold >= 0) snprintf(meta_v[nmeta++], sizeof meta_v[0], "%d", fold);
    else snprintf(meta_v[nmeta++], sizeof meta_v[0], "all");
    for (int i = 0; i < nmeta; i++) { mk[i] = meta_k[i]; mv[i] = meta_v[i]; }
    BatchSource src = { feed_next, &feed };
    TrainOptions to = { .run_dir = o->run_dir, .backend = o->backend, .resume = o->resume, .quiet = o->quiet,
                        .validate = have_val ? validate : NULL, .validate_ctx = &val, .nclasses = ad.nclasses,
                        .class_names = (const char *const *)pr->classes, .meta_keys = mk, .meta_vals = mv,
                        .nmeta = nmeta, .init_path = o->init ? o->init : ts->init_weights };
    TrainResult tr;
    if (train_run(step, ts, &src, &to, &tr, err, errlen) != 0) goto done;
    prefetch_stop(&pf);
    res->train_seconds = tr.seconds;
    res->steps_per_second = tr.steps_per_second;
    res->steps = tr.steps_done;
    res->first_loss = tr.first_loss;
    res->last_loss = tr.last_loss;
    res->best_ema = tr.best_ema;
    res->best_epoch = tr.best_epoch;
    res->val_ema = tr.val_ema;
    res->data_seconds = feed.wait;
    char model[4300];
    snprintf(model, sizeof model, "%.4000s/model_last.safetensors", o->run_dir);
    if (evaluate(inference, pr, ds, model, o->backend ? o->backend : "llvm", have_val ? val.x : NULL, res, err,
                 errlen) != 0) goto done;
    rc = 0;
done:
    prefetch_stop(&pf);
    if (pf_init) {
        pthread_mutex_destroy(&pf.mu);
        pthread_cond_destroy(&pf.cv);
    }
    free(pf.img);
    free(pf.lab);
    free(pf.wimg);
    free(pf.wlab);
    batcher_free(feed.wb);
    free(feed.wimg);
    free(feed.wlab);
    for (int i = 0; wmaps && i < ntr; i++) free(wmaps[i]);
    free(wmaps);
    free(wcases);
    free(waug);
    if (have_val) val_free(&val);
    free(feed.img);
    free(feed.lab);
    batcher_free(b);
    free(cases);
    free(vcases);
    free(names);
    free(is_val);
    ds_free(ds);
    return rc;
}
