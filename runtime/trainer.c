/* trainer.c — the training loop (see trainer.h). */
#define _POSIX_C_SOURCE 200809L
#include "trainer.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"
#include "safetensors.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double train_lr(const TrainSpec *ts, int64_t e, int64_t epochs)
{
    double lr0 = ts->optimizer.num[0], lr = lr0, warm = 1;
    double frac = epochs > 0 ? (double)e / (double)epochs : 0;
    for (int i = 0; i < ts->nschedule; i++) {
        const TrainCall *c = &ts->schedule[i];
        if (strcmp(c->name, "poly") == 0) lr = lr0 * pow(1 - frac, c->num[0]);
        else if (strcmp(c->name, "cosine") == 0) lr = c->num[0] + (lr0 - c->num[0]) * 0.5 * (1 + cos(3.14159265358979323846 * frac));
        else if (strcmp(c->name, "step") == 0) lr = lr0 * pow(c->num[1], floor((double)e / (c->num[0] > 0 ? c->num[0] : 1)));
        else if (strcmp(c->name, "warmup") == 0 && c->num[0] > 0 && (double)e < c->num[0]) warm = ((double)e + 1) / c->num[0];
    }
    if (ts->nschedule == 0) lr = lr0 * pow(1 - frac, 0.9);   /* nnU-Net's poly(0.9) */
    return lr * warm;
}

static int find_input(const Graph *g, const char *name)
{
    for (int i = 0; i < g->ninputs; i++)
        if (strcmp(g->inputs[i].name, name) == 0) return g->inputs[i].tensor;
    return -1;
}

/* Parameter i is optimizer state (momentum, Adam moments), not the net's. */
static bool is_optimizer_state(const Graph *g, int i)
{
    int owner = g->params[i].node;
    return owner >= 0 && owner < g->nnodes &&
           (g->nodes[owner].op == OP_SGD_UPDATE || g->nodes[owner].op == OP_ADAM_UPDATE);
}

/* ---- pretrained weights ----------------------------------------------------------------------------- */

static void shape_str(char *b, size_t n, int rank, const int64_t *d)
{
    size_t u = (size_t)snprintf(b, n, "[");
    for (int k = 0; k < rank && u < n; k++) u += (size_t)snprintf(b + u, n - u, "%s%lld", k ? ", " : "", (long long)d[k]);
    if (u < n) snprintf(b + u, n - u, "]");
}

static void appendf(char *b, size_t n, const char *fmt, const char *a, const char *c, const char *d)
{
    size_t u = strlen(b);
    if (u + 1 < n) snprintf(b + u, n - u, fmt, a, c, d);
}

int train_load_init(const Graph *g, RefState *s, const char *path, int *loaded, int *skipped, char *summary,
                    size_t summarylen, char *err, size_t errlen)
{
    *loaded = *skipped = 0;
    if (summary && summarylen) summary[0] = 0;
    StFile *f = st_read(path, err, errlen);
    if (!f) return -1;
    char why[8192] = "";
    int nnet = 0, nwhy = 0;
    for (int i = 0; i < g->nparams; i++) {
        if (is_optimizer_state(g, i)) continue;
        nnet++;
        const Param *pa = &g->params[i];
        const Tensor *te = &g->tensors[pa->tensor];
        const StEntry *e = st_find(f, pa->name);
        char reason[400];
        reason[0] = 0;
        if (!e) snprintf(reason, sizeof reason, "not in the file");
        else {
            bool same = e->rank == te->shape.rank;
            for (int k = 0; same && k < e->rank; k++) same = e->shape[k] == te->shape.d[k];
            if (!same) {
                char a[128], b[128];
                shape_str(a, sizeof a, e->rank, e->shape);
                shape_str(b, sizeof b, te->shape.rank, te->shape.d);
                snprintf(reason, sizeof reason, "shape %s in the file, %s in the net", a, b);
            } else if (strcmp(e->dtype, "F32") && strcmp(e->dtype, "F16") && strcmp(e->dtype, "BF16") &&
                       strcmp(e->dtype, "F64")) {
                snprintf(reason, sizeof reason, "dtype %s in the file (a float type is needed)", e->dtype);
            } else if (st_to_float(f, e, s->buf[pa->tensor]) != 0) {
                snprintf(reason, sizeof reason, "dtype %s cannot be converted", e->dtype);
            }
        }
        if (reason[0]) {
            (*skipped)++;
            if (nwhy++ < 20) appendf(why, sizeof why, "\n  skipped %s: %s%s", pa->name, reason, "");
        } else {
            (*loaded)++;
        }
    }
    if (nwhy > 20) {
        char more[32];
        snprintf(more, sizeof more, "%d", nwhy - 20);
        appendf(why, sizeof why, "\n  ... and %s more skipped%s%s", more, "", "");
    }
    int unused = 0;
    for (int j = 0; j < f->n; j++) {
        const char *nm = f->entries[j].name;
        size_t L = strlen(nm);
        if (L >= 20 && strcmp(nm + L - 20, ".num_batches_tracked") == 0) continue;
        bool found = false;
        for (int i = 0; i < g->nparams && !found; i++) found = strcmp(g->params[i].name, nm) == 0;
        unused += !found;
    }
    int rc = 0;
    if (*loaded == 0) {
        snprintf(err, errlen, "%s: no tensor of the file matches the net (%d tensors in the file; the net's "
                 "names look like %s)%.4000s", path, f->n, nnet ? g->params[0].name : "(none)", why);
        rc = -1;
    } else if (summary) {
        char nums[128];
        snprintf(nums, sizeof nums, "loaded %d of %d tensors", *loaded, nnet);
        snprintf(summary, summarylen, "%s from %s, skipped %d", nums, path, *skipped);
        if (unused) {
            char u[64];
            snprintf(u, sizeof u, "; %d tensor(s) of the file unused", unused);
            appendf(summary, summarylen, "%s%s%s", u, "", "");
        }
        appendf(summary, summarylen, "%s%s%s", why, "", "");
    }
    st_free(f);
    return rc;
}

/* ---- checkpoints ------------------------------------------------------------------------------------ */

typedef struct {
    const char *keys[64];
    const char *vals[64];
    int n;
} Meta;

/* Write to PATH.writing, then rename over PATH (st_write itself writes
 * atomically; the extra name widens nothing unless the test hook holds the
 * finished file before the rename). */
static int save_checkpoint(const char *path, const Graph *g, const RefState *s, bool model_only, const Meta *m,
                           char *err, size_t errlen)
{
    StTensor *t = calloc((size_t)(g->nparams > 0 ? g->nparams : 1), sizeof *t);
    if (!t) { snprintf(err, errlen, "out of memory"); return -1; }
    int nt = 0;
    for (int i = 0; i < g->nparams; i++) {
        if (model_only && is_optimizer_state(g, i)) continue;
        const Tensor *te = &g->tensors[g->params[i].tensor];
        t[nt].name = g->params[i].name;
        t[nt].dtype = "F32";
        t[nt].rank = te->shape.rank;
        for (int k = 0; k < te->shape.rank; k++) t[nt].shape[k] = te->shape.d[k];
        t[nt].data = s->buf[g->params[i].tensor];
        nt++;
    }
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%.4200s.writing", path);
    int rc = st_write(tmp, t, nt, m->keys, m->vals, m->n, err, errlen);
    free(t);
    if (rc != 0) return -1;
    const char *slow = getenv("NETC_TEST_SLOW_CHECKPOINT");   /* test hook (trainer.h) */
    if (slow && atoi(slow) > 0) {
        struct timespec d = { atoi(slow) / 1000, (long)(atoi(slow) % 1000) * 1000000L };
        nanosleep(&d, NULL);
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int load_checkpoint(const char *path, const Graph *g, RefState *s, StFile **out, char *err, size_t errlen)
{
    StFile *f = st_read(path, err, errlen);
    if (!f) return -1;
    const char *e = st_meta(f, "netc_epoch"), *st = st_meta(f, "netc_step");
    if (!e || !st) {
        snprintf(err, errlen, "%s: not a netc training checkpoint (no netc_epoch / netc_step metadata)", path);
        st_free(f);
        return -1;
    }
    float **pd = calloc((size_t)(g->nparams > 0 ? g->nparams : 1), sizeof *pd);
    if (!pd) { snprintf(err, errlen, "out of memory"); st_free(f); return -1; }
    for (int i = 0; i < g->nparams; i++) pd[i] = s->buf[g->params[i].tensor];
    int rc = st_load_params(f, g, pd, NULL, err, errlen);
    free(pd);
    if (rc != 0) { st_free(f); return -1; }
    *out = f;
    return 0;
}

/* ---- logs ------------------------------------------------------------------------------------------- */

/* Write text to dir/name atomically (temp file + rename). */
static int write_atomic(const char *dir, const char *name, const char *text, char *err, size_t errlen)
{
    char tmp[4300], path[4200];
    snprintf(path, sizeof path, "%.4000s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%.4200s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) { snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno)); return -1; }
    fputs(text, f);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* The loss curve (scaled to its range) and, with validation, the Dice and
 * its EMA (0 .. 1) as SVG, rewritten atomically. */
static void write_svg(const char *dir, const double *loss, const double *dice, const double *ema, int64_t n)
{
    char tmp[4300], path[4200];
    snprintf(path, sizeof path, "%.4000s/curves.svg", dir);
    snprintf(tmp, sizeof tmp, "%.4200s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(loss[i])) { lo = fmin(lo, loss[i]); hi = fmax(hi, loss[i]); }
    if (!(hi > lo)) { lo = isfinite(lo) ? lo - 1 : 0; hi = lo + 2; }
    const double W = 640, H = 360, M = 40;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", M, H - M, W - M, H - M);
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", M, M, M, H - M);
    fprintf(f, "<text x=\"%g\" y=\"%g\">epoch</text>\n", W / 2, H - 8);
    fprintf(f, "<text x=\"%g\" y=\"%g\" fill=\"#1f77b4\">train loss (%.4g .. %.4g)</text>\n", M + 8, M - 24, lo, hi);
    const double *curves[3] = { loss, dice, ema };
    const char *colour[3] = { "#1f77b4", "#2ca02c", "#d62728" };
    for (int pass = 0; pass < 3; pass++) {
        const double *v = curves[pass];
        if (!v) continue;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%d\" points=\"", colour[pass], pass == 1 ? 1 : 2);
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(v[i])) continue;
            double x = M + (W - 2 * M) * (n > 1 ? (double)i / (double)(n - 1) : 0.5);
            double y = pass ? H - M - (H - 2 * M) * fmin(fmax(v[i], 0), 1) : H - M - (H - 2 * M) * (v[i] - lo) / (hi - lo);
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "\"/>\n");
    }
    if (dice) {
        fprintf(f, "<text x=\"%g\" y=\"%g\" fill=\"#2ca02c\">validation pseudo-Dice (0 .. 1)</text>\n", M + 8, M - 10);
        fprintf(f, "<text x=\"%g\" y=\"%g\" fill=\"#d62728\">its EMA (best checkpoint)</text>\n", W / 2 + 40, M - 10);
    }
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0 || rename(tmp, path) != 0) unlink(tmp);
}

/* A growing text buffer. */
typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
} Text;

static void text_add(Text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(Text *t, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k >= 0 && !t->oom && t->n + (size_t)k + 1 > t->cap) {
        size_t c = t->cap ? 2 * t->cap : 1024;
        while (c < t->n + (size_t)k + 1) c *= 2;
        char *p = realloc(t->s, c);
        if (!p) t->oom = true;
        else { t->s = p; t->cap = c; }
    }
    if (k >= 0 && !t->oom) {
        vsnprintf(t->s + t->n, (size_t)k + 1, fmt, ap2);
        t->n += (size_t)k;
    }
    va_end(ap2);
}

/* Remove what a killed run left half written: our files' temporary names
 * (FILE.writing, FILE.writing.tmp.PID, log.csv.tmp.PID, curves.svg.tmp.PID). */
static void remove_stale_temporaries(const char *dir)
{
    static const char *const prefix[] = { "checkpoint_last.safetensors.writing", "checkpoint_best.safetensors.writing",
                                          "model_last.safetensors.writing", "model_best.safetensors.writing",
                                          "log.csv.tmp.", "curves.svg.tmp." };
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        for (size_t i = 0; i < sizeof prefix / sizeof prefix[0]; i++)
            if (strncmp(e->d_name, prefix[i], strlen(prefix[i])) == 0) {
                char p[4400];
                snprintf(p, sizeof p, "%.4000s/%.300s", dir, e->d_name);
                unlink(p);
                break;
            }
    closedir(d);
}

/* ---- the loop --------------------------------------------------------------------------------------- */

int train_run(const Graph *g, const TrainSpec *ts, BatchSource *src, const TrainOptions *o, TrainResult *res,
              char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    res->val_dice = res->val_ema = res->best_ema = NAN;
    res->best_epoch = -1;
    if (g->nlosses < 1) { snprintf(err, errlen, "the graph has no loss (compile the training step)"); return -1; }
    int t_lr = find_input(g, "train.lr"), t_step = find_input(g, "train.step");
    if (t_lr < 0 || t_step < 0) { snprintf(err, errlen, "the graph has no optimizer update (compile with autodiff)"); return -1; }
    if (mkdir(o->run_dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", o->run_dir, strerror(errno));
        return -1;
    }
    remove_stale_temporaries(o->run_dir);
    int K = o->nclasses > 1 ? o->nclasses : 2;
    if (K > TRAIN_MAX_CLASSES) K = TRAIN_MAX_CLASSES;
    RefState *s = ref_new(g);
    if (!s) { snprintf(err, errlen, "out of memory"); return -1; }
    char ckpt[4200], model[4200], best_ckpt[4200], best_model[4200];
    snprintf(model, sizeof model, "%.4000s/model_last.safetensors", o->run_dir);
    snprintf(ckpt, sizeof ckpt, "%.4000s/checkpoint_last.safetensors", o->run_dir);
    snprintf(best_model, sizeof best_model, "%.4000s/model_best.safetensors", o->run_dir);
    snprintf(best_ckpt, sizeof best_ckpt, "%.4000s/checkpoint_best.safetensors", o->run_dir);
    int64_t epoch0 = 0, step = 0, E = ts->epochs, I = ts->iterations, best_epoch = -1;
    double ema = NAN, best = NAN, seconds0 = 0;
    Text rows = { 0 }, csv = { 0 };
    NetcExec *x = NULL;
    double *curve = calloc((size_t)(E + 1), sizeof *curve), *vdice = calloc((size_t)(E + 1), sizeof *vdice),
           *vema = calloc((size_t)(E + 1), sizeof *vema);
    int rc = 0;
    if (!curve || !vdice || !vema) { snprintf(err, errlen, "out of memory"); rc = -1; goto done; }
    for (int64_t i = 0; i <= E; i++) curve[i] = vdice[i] = vema[i] = NAN;
    ref_init_params(g, s, (uint64_t)ts->seed);
    if (o->resume) {
        StFile *f = NULL;
        if (load_checkpoint(ckpt, g, s, &f, err, errlen) != 0) { rc = -1; goto done; }
        for (int i = 0; i < o->nmeta; i++) {   /* the same fold, protocol and net as the checkpoint's */
            const char *k = o->meta_keys[i], *had = st_meta(f, k);
            if ((!strcmp(k, "netc.fold") || !strcmp(k, "netc.protocol") || !strcmp(k, "netc.net")) && had &&
                strcmp(had, o->meta_vals[i]) != 0) {
                snprintf(err, errlen, "%s was trained with %s = %s, this run has %s; resume with the same settings",
                         ckpt, k, had, o->meta_vals[i]);
                st_free(f);
                rc = -1;
                goto done;
            }
        }
        epoch0 = strtoll(st_meta(f, "netc_epoch"), NULL, 10) + 1;   /* taken at the end of an epoch */
        step = strtoll(st_meta(f, "netc_step"), NULL, 10);
        const char *v;
        if ((v = st_meta(f, "netc_ema"))) ema = strtod(v, NULL);
        if ((v = st_meta(f, "netc_best_ema"))) best = strtod(v, NULL);
        if ((v = st_meta(f, "netc_best_epoch"))) best_epoch = strtoll(v, NULL, 10);
        if ((v = st_meta(f, "netc_seconds"))) seconds0 = strtod(v, NULL);
        if ((v = st_meta(f, "netc_log"))) {
            text_add(&rows, "%s", "");
            for (const char *l = v; *l;) {   /* row by row: the curves so far */
                const char *nl = strchr(l, '\n');
                size_t len = nl ? (size_t)(nl - l) : strlen(l);
                char line[1024];
                snprintf(line, sizeof line, "%.*s", (int)(len < 1000 ? len : 1000), l);
                long long ep;
                double lo, vd, ve;
                if (sscanf(line, "%lld,%lf,%lf,%lf", &ep, &lo, &vd, &ve) == 4 && ep >= 0 && ep < E) {
                    curve[ep] = lo;
                    vdice[ep] = vd;
                    vema[ep] = ve;
                }
                text_add(&rows, "%s\n", line);
                l += len + (nl ? 1 : 0);
            }
        }
        st_free(f);
    } else if (o->init_path) {
        char summary[8192];
        if (train_load_init(g, s, o->init_path, &res->init_loaded, &res->init_skipped, summary, sizeof summary, err,
                            errlen) != 0) {
            rc = -1;
            goto done;
        }
        if (!o->quiet) fprintf(stderr, "init: %s\n", summary);
    }
    x = exec_new(g, true, o->backend ? o->backend : "llvm", err, errlen);
    if (!x) { rc = -1; goto done; }
    double t0 = now();
    int64_t ran = 0;
    for (int64_t e = epoch0; e < E; e++) {
        if (o->stop_after_epochs > 0 && ran >= o->stop_after_epochs) break;
        double lr = train_lr(ts, e, E), sum = 0, te = now();
        for (int64_t it = 0; it < I; it++) {
            int64_t k = e * I + it;
            if (src->next(src->ctx, k, g, s, err, errlen) != 0) { rc = -1; goto done; }
            s->buf[t_lr][0] = (float)lr;
            s->buf[t_step][0] = (float)(step + 1);   /* also the seed of dropout's masks (compiler/lower.c) */
            if (exec_grads(x, s, err, errlen) != 0) { rc = -1; goto done; }
            double loss = s->buf[g->losses[0].tensor][0];
            if (!isfinite(loss)) {
                snprintf(err, errlen, "the loss became %g at epoch %lld, iteration %lld (learning rate %g); "
                         "training stopped, %s keeps the last good state",
                         loss, (long long)e, (long long)it, lr, ckpt);
                rc = -1;
                goto done;
            }
            if (ts->clip > 0) {   /* clip by the global norm of all gradients */
                double sq = 0;
                for (int i = 0; i < g->nparams; i++) {
                    if (g->params[i].grad < 0) continue;
                    const float *gd = exec_tensor(x, g->params[i].grad);
                    for (int64_t j = 0; gd && j < s->numel[g->params[i].grad]; j++) sq += (double)gd[j] * gd[j];
                }
                double norm = sqrt(sq);
                if (norm > ts->clip) {
                    float f = (float)(ts->clip / (norm + 1e-6));
                    for (int i = 0; i < g->nparams; i++) {
                        if (g->params[i].grad < 0) continue;
                        float *gd = exec_tensor(x, g->params[i].grad);
                        for (int64_t j = 0; gd && j < s->numel[g->params[i].grad]; j++) gd[j] *= f;
                    }
                }
            }
            if (exec_update(x, s, err, errlen) != 0) { rc = -1; goto done; }
            step++;
            sum += loss;
            if (res->steps_done == 0) res->first_loss = loss;
            res->last_loss = loss;
            res->steps_done++;
            if (!o->quiet) {
                double el = now() - te, ips = (double)(it + 1) / (el > 0 ? el : 1e-9);
                fprintf(stderr, "\repoch %lld/%lld [%lld/%lld] %.2f it/s, ETA %.0fs, loss %.4f, lr %.3g   ",
                        (long long)e + 1, (long long)E, (long long)it + 1, (long long)I, ips,
                        (double)(I - it - 1) / ips, sum / (double)(it + 1), lr);
            }
        }
        double mean = sum / (double)(I > 0 ? I : 1);
        curve[e] = mean;
        /* validation: pseudo-Dice per class, their mean over the classes that occur, the EMA */
        double dice[TRAIN_MAX_CLASSES];
        for (int k = 0; k < TRAIN_MAX_CLASSES; k++) dice[k] = NAN;
        double vmean = NAN, tv = now();
        bool improved = false;
        if (o->validate) {
            if (o->validate(o->validate_ctx, g, s, e, dice, err, errlen) != 0) { rc = -1; goto done; }
            double acc = 0;
            int nv = 0;
            for (int k = 1; k < K; k++)
                if (!isnan(dice[k])) { acc += dice[k]; nv++; }
            if (nv) vmean = acc / nv;
            if (!isnan(vmean)) {
                ema = isnan(ema) ? vmean : 0.9 * ema + 0.1 * vmean;
                if (isnan(best) || ema > best) { best = ema; best_epoch = e; improved = true; }
            }
        }
        tv = now() - tv;
        vdice[e] = vmean;
        vema[e] = ema;
        double secs = seconds0 + (now() - t0);
        text_add(&rows, "%lld,%.9g,%.9g,%.9g,%.9g", (long long)e, mean, vmean, ema, lr);
        for (int k = 1; k < K; k++) text_add(&rows, ",%.9g", dice[k]);
        text_add(&rows, ",%.3f\n", secs);
        /* the files: best first (see trainer.h), then the last checkpoint, the weights, the log */
        char se[32], sst[32], ssd[32], sl[40], sema_[40], sbest[40], sbe[32], ssec[40];
        snprintf(se, sizeof se, "%lld", (long long)e);
        snprintf(sst, sizeof sst, "%lld", (long long)step);
        snprintf(ssd, sizeof ssd, "%lld", (long long)ts->seed);
        snprintf(sl, sizeof sl, "%.9g", mean);
        snprintf(sema_, sizeof sema_, "%.17g", ema);
        snprintf(sbest, sizeof sbest, "%.17g", best);
        snprintf(sbe, sizeof sbe, "%lld", (long long)best_epoch);
        snprintf(ssec, sizeof ssec, "%.3f", secs);
        Meta m = { .n = 0 };
        const char *base_k[] = { "netc_net", "netc_epoch", "netc_step", "netc_seed", "netc_loss", "netc_ema",
                                 "netc_best_ema", "netc_best_epoch", "netc_seconds", "netc_log" };
        const char *base_v[] = { g->net_name ? g->net_name : "", se, sst, ssd, sl, sema_, sbest, sbe, ssec,
                                 rows.s ? rows.s : "" };
        for (int i = 0; i < 10; i++) { m.keys[m.n] = base_k[i]; m.vals[m.n++] = base_v[i]; }
        for (int i = 0; i < o->nmeta && m.n < 64; i++) { m.keys[m.n] = o->meta_keys[i]; m.vals[m.n++] = o->meta_vals[i]; }
        if (rows.oom) { snprintf(err, errlen, "out of memory"); rc = -1; goto done; }
        if (improved && (save_checkpoint(best_ckpt, g, s, false, &m, err, errlen) != 0 ||
                         save_checkpoint(best_model, g, s, true, &m, err, errlen) != 0)) {
            rc = -1;
            goto done;
        }
        if (save_checkpoint(ckpt, g, s, false, &m, err, errlen) != 0 ||
            save_checkpoint(model, g, s, true, &m, err, errlen) != 0) {
            rc = -1;
            goto done;
        }
        csv.n = 0;
        text_add(&csv, "%s", "epoch,train_loss,val_dice,val_ema,lr");
        for (int k = 1; k < K; k++)
            text_add(&csv, ",dice_%s", o->class_names && o->class_names[k] ? o->class_names[k] : "class");
        text_add(&csv, "%s", ",seconds\n");
        text_add(&csv, "%s", rows.s);
        if (csv.oom) { snprintf(err, errlen, "out of memory"); rc = -1; goto done; }
        if (write_atomic(o->run_dir, "log.csv", csv.s, err, errlen) != 0) { rc = -1; goto done; }
        write_svg(o->run_dir, curve, o->validate ? vdice : NULL, o->validate ? vema : NULL, E);
        if (!o->quiet) {
            char val[512] = "";
            if (o->validate) {
                size_t u = 0;
                for (int k = 1; k < K && u < 300; k++)
                    u += (size_t)snprintf(val + u, sizeof val - u, "%s%s %.4f", k == 1 ? ", val Dice " : ", ",
                                          o->class_names && o->class_names[k] ? o->class_names[k] : "class", dice[k]);
                if (u < sizeof val)
                    snprintf(val + u, sizeof val - u, ", EMA %.4f%s, validation %.1fs", ema, improved ? " (best)" : "", tv);
            }
            fprintf(stderr, "\repoch %lld/%lld: train loss %.4f%s, lr %.3g, %.1fs%20s\n", (long long)e + 1,
                    (long long)E, mean, val, lr, now() - te, "");
        }
        res->val_dice = vmean;
        res->epochs_done++;
        ran++;
    }
    res->val_ema = ema;
    res->best_ema = best;
    res->best_epoch = best_epoch;
    res->seconds = now() - t0;
    res->steps_per_second = res->seconds > 0 ? (double)res->steps_done / res->seconds : 0;
done:
    free(rows.s);
    free(csv.s);
    free(curve);
    free(vdice);
    free(vema);
    exec_free(x);
    ref_free(s);
    return rc;
}
