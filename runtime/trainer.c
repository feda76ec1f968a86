/* trainer.c — the training loop (see trainer.h). */
#define _POSIX_C_SOURCE 200809L
#include "trainer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* ---- checkpoints ------------------------------------------------------------------------------------ */

/* model_only: the net's parameters and buffers (what `netc run --weights`
 * loads), without the optimizer state. */
static int save_checkpoint(const char *path, const Graph *g, const RefState *s, int64_t epoch, int64_t step,
                           const TrainSpec *ts, double loss, bool model_only, char *err, size_t errlen)
{
    StTensor *t = calloc((size_t)(g->nparams > 0 ? g->nparams : 1), sizeof *t);
    if (!t) { snprintf(err, errlen, "out of memory"); return -1; }
    int nt = 0;
    for (int i = 0; i < g->nparams; i++) {
        int owner = g->params[i].node;
        if (model_only && owner >= 0 && owner < g->nnodes &&
            (g->nodes[owner].op == OP_SGD_UPDATE || g->nodes[owner].op == OP_ADAM_UPDATE))
            continue;
        const Tensor *te = &g->tensors[g->params[i].tensor];
        t[nt].name = g->params[i].name;
        t[nt].dtype = "F32";
        t[nt].rank = te->shape.rank;
        for (int k = 0; k < te->shape.rank; k++) t[nt].shape[k] = te->shape.d[k];
        t[nt].data = s->buf[g->params[i].tensor];
        nt++;
    }
    char e[32], st[32], sd[32], l[40];
    snprintf(e, sizeof e, "%lld", (long long)epoch);
    snprintf(st, sizeof st, "%lld", (long long)step);
    snprintf(sd, sizeof sd, "%lld", (long long)ts->seed);
    snprintf(l, sizeof l, "%.9g", loss);
    const char *keys[] = { "netc_net", "netc_epoch", "netc_step", "netc_seed", "netc_loss" };
    const char *vals[] = { g->net_name ? g->net_name : "", e, st, sd, l };
    int rc = st_write(path, t, nt, keys, vals, 5, err, errlen);
    free(t);
    return rc;
}

static int load_checkpoint(const char *path, const Graph *g, RefState *s, int64_t *epoch, int64_t *step, char *err,
                           size_t errlen)
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
    for (int i = 0; i < g->nparams; i++) pd[i] = s->buf[g->params[i].tensor];
    int rc = st_load_params(f, g, pd, NULL, err, errlen);
    free(pd);
    *epoch = strtoll(e, NULL, 10);
    *step = strtoll(st, NULL, 10);
    st_free(f);
    return rc;
}

/* ---- logs ------------------------------------------------------------------------------------------- */

/* A loss (and score) curve as SVG, rewritten atomically. */
static void write_svg(const char *dir, const double *loss, const double *score, int64_t n)
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
    fprintf(f, "<text x=\"%g\" y=\"%g\" fill=\"#1f77b4\">train loss (%.4g .. %.4g)</text>\n", M + 8, M - 8, lo, hi);
    for (int pass = 0; pass < 2; pass++) {
        const double *v = pass ? score : loss;
        if (!v) continue;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", pass ? "#d62728" : "#1f77b4");
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(v[i])) continue;
            double x = M + (W - 2 * M) * (n > 1 ? (double)i / (double)(n - 1) : 0.5);
            double y = pass ? H - M - (H - 2 * M) * fmin(fmax(v[i], 0), 1) : H - M - (H - 2 * M) * (v[i] - lo) / (hi - lo);
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "\"/>\n");
    }
    if (score) fprintf(f, "<text x=\"%g\" y=\"%g\" fill=\"#d62728\">validation score (0 .. 1)</text>\n", W / 2, M - 8);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0 || rename(tmp, path) != 0) unlink(tmp);
}

/* ---- the loop --------------------------------------------------------------------------------------- */

int train_run(const Graph *g, const TrainSpec *ts, BatchSource *src, const TrainOptions *o, TrainResult *res,
              char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    if (g->nlosses < 1) { snprintf(err, errlen, "the graph has no loss (compile the training step)"); return -1; }
    int t_lr = find_input(g, "train.lr"), t_step = find_input(g, "train.step");
    if (t_lr < 0 || t_step < 0) { snprintf(err, errlen, "the graph has no optimizer update (compile with autodiff)"); return -1; }
    if (mkdir(o->run_dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", o->run_dir, strerror(errno));
        return -1;
    }
    RefState *s = ref_new(g);
    if (!s) { snprintf(err, errlen, "out of memory"); return -1; }
    char ckpt[4200], csv[4200], model[4200];
    snprintf(model, sizeof model, "%.4000s/model_last.safetensors", o->run_dir);
    snprintf(ckpt, sizeof ckpt, "%.4000s/checkpoint_last.safetensors", o->run_dir);
    snprintf(csv, sizeof csv, "%.4000s/log.csv", o->run_dir);
    int64_t epoch0 = 0, step = 0;
    ref_init_params(g, s, (uint64_t)ts->seed);
    if (o->resume) {
        if (load_checkpoint(ckpt, g, s, &epoch0, &step, err, errlen) != 0) { ref_free(s); return -1; }
        epoch0++;   /* the checkpoint is taken at the end of an epoch */
    }
    NetcExec *x = exec_new(g, true, o->backend ? o->backend : "llvm", err, errlen);
    if (!x) { ref_free(s); return -1; }
    int64_t E = ts->epochs, I = ts->iterations;
    double *curve = calloc((size_t)(E + 1), sizeof *curve), *score = calloc((size_t)(E + 1), sizeof *score);
    FILE *log = NULL;
    int rc = 0;
    if (!curve || !score) { snprintf(err, errlen, "out of memory"); rc = -1; goto done; }
    for (int64_t i = 0; i <= E; i++) curve[i] = score[i] = NAN;
    /* resume: the curve so far from log.csv (epoch,loss,score,lr,seconds) */
    if (o->resume) {
        FILE *r = fopen(csv, "r");
        char line[512];
        while (r && fgets(line, sizeof line, r)) {
            long long ep;
            double l, sc;
            if (sscanf(line, "%lld,%lf,%lf", &ep, &l, &sc) >= 2 && ep >= 0 && ep < E && ep < epoch0) {
                curve[ep] = l;
                score[ep] = sc;
            }
        }
        if (r) fclose(r);
    }
    log = fopen(csv, o->resume ? "a" : "w");
    if (!log) { snprintf(err, errlen, "cannot write %s: %s", csv, strerror(errno)); rc = -1; goto done; }
    if (!o->resume) fprintf(log, "epoch,train_loss,val_score,lr,seconds\n");
    double t0 = now();
    int64_t ran = 0;
    for (int64_t e = epoch0; e < E; e++) {
        if (o->stop_after_epochs > 0 && ran >= o->stop_after_epochs) break;
        double lr = train_lr(ts, e, E), sum = 0, te = now();
        for (int64_t it = 0; it < I; it++) {
            int64_t k = e * I + it;
            if (src->next(src->ctx, k, g, s, err, errlen) != 0) { rc = -1; goto done; }
            s->buf[t_lr][0] = (float)lr;
            s->buf[t_step][0] = (float)(step + 1);
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
        score[e] = o->epoch_end ? o->epoch_end(o->epoch_ctx, g, s, e) : NAN;
        if (save_checkpoint(ckpt, g, s, e, step, ts, mean, false, err, errlen) != 0 ||
            save_checkpoint(model, g, s, e, step, ts, mean, true, err, errlen) != 0) {
            rc = -1;
            goto done;
        }
        fprintf(log, "%lld,%.9g,%.9g,%.9g,%.3f\n", (long long)e, mean, score[e], lr, now() - t0);
        fflush(log);
        write_svg(o->run_dir, curve, o->epoch_end ? score : NULL, E);
        if (!o->quiet) {
            char val[64] = "";
            if (o->epoch_end) snprintf(val, sizeof val, ", validation %.4f", score[e]);
            fprintf(stderr, "\repoch %lld/%lld: train loss %.4f%s, lr %.3g, %.1fs%20s\n", (long long)e + 1,
                    (long long)E, mean, val, lr, now() - te, "");
        }
        res->epochs_done++;
        ran++;
    }
    res->seconds = now() - t0;
    res->steps_per_second = res->seconds > 0 ? (double)res->steps_done / res->seconds : 0;
done:
    if (log) fclose(log);
    free(curve);
    free(score);
    exec_free(x);
    ref_free(s);
    return rc;
}
