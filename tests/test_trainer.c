/* test_trainer.c — the training loop on a synthetic task (tests/nets/disk2d.net:
 * find a bright disk in noise): the loss falls; a run stopped after two
 * epochs and resumed reproduces the uninterrupted run bit for bit (loss
 * curve, validation EMA and best checkpoint, last checkpoint); the EMA and
 * the best checkpoint follow nnU-Net's rule; pretrained weights (full,
 * partial, none matching) and frozen groups that stay bit-identical; the
 * k-fold split; weight-map batches aligned with the image batches; a diverging run stops with a message and keeps its last
 * good checkpoint; the learning-rate schedules. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"
#include "ref.h"
#include "safetensors.h"
#include "train_data.h"
#include "augment.h"
#include "train_weights.h"
#include "support.h"
#include "trainer.h"

typedef struct {
    Diag d;
    Program *p;
    Graph *g;
    TrainSpec *ts;
    Protocol *pr;
} Step;

static Step compile_step(const char *path, Override *ov, int nov)
{
    Step st;
    memset(&st, 0, sizeof st);
    diag_init(&st.d, stderr);
    st.p = program_load(&st.d, path);
    ck_assert_ptr_nonnull(st.p);
    CompileOptions co = { .train = true, .autodiff = true, .ov = ov, .nov = nov, .protocol_out = &st.pr,
                          .train_out = &st.ts };
    st.g = netc_compile(st.p, &co);
    ck_assert_msg(st.g && st.d.nerrors == 0 && st.ts, "%s does not compile", path);
    return st;
}

static void step_free(Step *st)
{
    graph_free(st->g);
    train_free(st->ts);
    protocol_free(st->pr);
    program_free(st->p);
    diag_free(&st->d);
}

/* Batch k: disks of random centre and radius, brightness 1 on noise. */
static int disks(void *ctx, int64_t k, const Graph *g, RefState *s, char *err, size_t errlen)
{
    (void)ctx, (void)err, (void)errlen;
    int img = -1, lab = -1;
    for (int i = 0; i < g->ninputs; i++) {
        int t = g->inputs[i].tensor;
        if (g->tensors[t].kind == TK_INPUT) img = t;
        if (g->tensors[t].kind == TK_LABEL) lab = t;
    }
    const Shape *sh = &g->tensors[img].shape;
    int64_t N = sh->d[0], H = sh->d[2], W = sh->d[3];
    RefRng r = { 1000003ull * (uint64_t)(k + 1) };
    for (int64_t n = 0; n < N; n++) {
        double cy = 4 + 8 * ref_rng_uniform(&r), cx = 4 + 8 * ref_rng_uniform(&r), rad = 2 + 3 * ref_rng_uniform(&r);
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                bool in = (y - cy) * (y - cy) + (x - cx) * (x - cx) <= rad * rad;
                s->buf[img][(n * H + y) * W + x] = (float)((in ? 1.0 : 0.0) + 0.3 * ref_rng_normal(&r));
                ref_i32(s, lab)[(n * H + y) * W + x] = in;
            }
    }
    return 0;
}

static char *tmpdir(void)
{
    char *d = strdup("/tmp/netc-train-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *b = read_file(p, len);
    ck_assert_msg(b != NULL, "cannot read %s", p);
    return b;
}

static void rm_run(char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(dir);
}

/* A scripted validation score that still depends on the trained state:
 * 0.9 in the first epoch, then 0.1 (so the EMA peaks at epoch 0 and a
 * resumed run that forgot the best EMA would save a new "best"), plus a
 * small term from the first parameter. */
static int scripted_val(void *ctx, const Graph *g, const RefState *s, int64_t epoch, double *dice, char *err,
                        size_t errlen)
{
    (void)ctx, (void)err, (void)errlen;
    dice[1] = (epoch == 0 ? 0.9 : 0.1) + 0.001 * tanh((double)s->buf[g->params[0].tensor][0]);
    return 0;
}

/* Two safetensors files hold the same tensors, byte for byte, and the same
 * metadata except the wall-clock seconds (netc_seconds, the log's last column). */
static void same_checkpoint(const char *a, const char *b)
{
    char err[512];
    StFile *fa = st_read(a, err, sizeof err), *fb = st_read(b, err, sizeof err);
    ck_assert_msg(fa && fb, "%s", err);
    ck_assert_int_eq(fa->n, fb->n);
    for (int i = 0; i < fa->n; i++) {
        const StEntry *ea = &fa->entries[i], *eb = st_find(fb, ea->name);
        ck_assert_msg(eb && eb->nbytes == ea->nbytes && memcmp(fa->data + ea->offset, fb->data + eb->offset, ea->nbytes) == 0,
                      "%s: tensor %s differs from %s", a, ea->name, b);
    }
    ck_assert_int_eq(fa->nmeta, fb->nmeta);
    for (int i = 0; i < fa->nmeta; i++) {
        const char *k = fa->meta_keys[i], *va = fa->meta_vals[i], *vb = st_meta(fb, k);
        ck_assert_msg(vb != NULL, "%s: metadata %s missing in %s", a, k, b);
        if (strcmp(k, "netc_seconds") == 0) continue;
        if (strcmp(k, "netc_log") == 0) {   /* row by row, without the last column */
            while (*va && *vb) {
                const char *ca = strrchr(va, ','), *na = strchr(va, '\n'), *nb = strchr(vb, '\n');
                ck_assert(na && nb);
                const char *la = va, *lb = vb;
                for (ca = na; ca > la && *ca != ','; ca--) {}
                const char *cb;
                for (cb = nb; cb > lb && *cb != ','; cb--) {}
                ck_assert_msg(ca - la == cb - lb && memcmp(la, lb, (size_t)(ca - la)) == 0, "%s: log rows differ", a);
                va = na + 1;
                vb = nb + 1;
            }
            ck_assert(!*va && !*vb);
            continue;
        }
        ck_assert_msg(strcmp(va, vb) == 0, "%s: metadata %s = %s, %s has %s", a, k, va, b, vb);
    }
    st_free(fa);
    st_free(fb);
}

/* log.csv without the seconds column (the last one) */
static char *log_without_seconds(const char *dir)
{
    size_t n;
    char *c = slurp(dir, "log.csv", &n), *out = calloc(n + 1, 1), *o = out;
    for (char *l = c; *l;) {
        char *nl = strchr(l, '\n');
        ck_assert(nl);
        char *cm = nl;
        while (cm > l && *cm != ',') cm--;
        memcpy(o, l, (size_t)(cm - l));
        o += cm - l;
        *o++ = '\n';
        l = nl + 1;
    }
    free(c);
    return out;
}

START_TEST(trainer_loss_falls)
{
    Step st = compile_step("tests/nets/disk2d.net", NULL, 0);
    BatchSource src = { disks, NULL };
    char *dir = tmpdir();
    TrainOptions o = { .run_dir = dir, .quiet = true };
    TrainResult r;
    char err[1024];
    ck_assert_msg(train_run(st.g, st.ts, &src, &o, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.epochs_done, 6);
    ck_assert_int_eq(r.steps_done, 48);
    /* dice_ce starts near 1 - 0.2 (ce ~0.7, dice ~ -0.2) and must clearly fall */
    ck_assert_msg(r.last_loss < r.first_loss - 0.5, "loss %g -> %g", r.first_loss, r.last_loss);
    size_t n;
    char *csv = slurp(dir, "log.csv", &n);
    ck_assert_ptr_nonnull(strstr(csv, "epoch,train_loss,val_dice,val_ema,lr,dice_class,seconds\n0,"));
    free(csv);
    char *svg = slurp(dir, "curves.svg", &n);
    ck_assert_ptr_nonnull(strstr(svg, "<polyline"));
    free(svg);
    rm_run(dir);
    step_free(&st);
}
END_TEST

/* 6 epochs in one go vs 2 epochs, "killed", then resumed, both with
 * validation: the same log (loss, validation Dice, EMA, lr per epoch), the
 * same last checkpoint and the same best checkpoint (epoch 0: the resumed
 * run must remember the best EMA), tensors byte for byte. */
START_TEST(trainer_resume_bit_identical)
{
    Step st = compile_step("tests/nets/disk2d.net", NULL, 0);
    BatchSource src = { disks, NULL };
    char err[1024];
    TrainResult r;
    char *a = tmpdir(), *b = tmpdir();
    TrainOptions oa = { .run_dir = a, .quiet = true, .validate = scripted_val, .nclasses = 2 };
    ck_assert_msg(train_run(st.g, st.ts, &src, &oa, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.best_epoch, 0);
    TrainOptions ob = oa;
    ob.run_dir = b;
    ob.stop_after_epochs = 2;
    ck_assert_msg(train_run(st.g, st.ts, &src, &ob, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.epochs_done, 2);
    ob.stop_after_epochs = 0;
    ob.resume = true;
    ck_assert_msg(train_run(st.g, st.ts, &src, &ob, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.epochs_done, 4);
    ck_assert_int_eq(r.best_epoch, 0);
    const char *files[] = { "checkpoint_last.safetensors", "model_last.safetensors", "checkpoint_best.safetensors",
                            "model_best.safetensors" };
    for (int i = 0; i < 4; i++) {
        char pa[600], pb[600];
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        same_checkpoint(pa, pb);
    }
    char *la = log_without_seconds(a), *lb = log_without_seconds(b);
    ck_assert_str_eq(la, lb);
    ck_assert_int_eq((int)strlen(la) > 0, 1);
    free(la);
    free(lb);
    rm_run(a);
    rm_run(b);
    step_free(&st);
}
END_TEST

/* The EMA of the validation Dice: the first epoch's value, then
 * 0.9 old + 0.1 new; the best checkpoint holds the epoch of the best EMA. */
START_TEST(trainer_validation_ema)
{
    Step st = compile_step("tests/nets/disk2d.net", NULL, 0);
    BatchSource src = { disks, NULL };
    char err[1024];
    TrainResult r;
    char *dir = tmpdir();
    TrainOptions o = { .run_dir = dir, .quiet = true, .validate = scripted_val, .nclasses = 2,
                       .class_names = (const char *const *)st.pr->classes };
    ck_assert_msg(train_run(st.g, st.ts, &src, &o, &r, err, sizeof err) == 0, "%s", err);
    size_t n;
    char *csv = slurp(dir, "log.csv", &n);
    ck_assert_ptr_nonnull(strstr(csv, "epoch,train_loss,val_dice,val_ema,lr,dice_disk,seconds\n"));
    double prev = NAN, best = -1;
    int lines = 0, best_e = -1;
    for (char *l = strchr(csv, '\n') + 1; *l; l = strchr(l, '\n') + 1, lines++) {
        long long e;
        double loss, d, ema, lr, d1;
        ck_assert_int_eq(sscanf(l, "%lld,%lf,%lf,%lf,%lf,%lf", &e, &loss, &d, &ema, &lr, &d1), 6);
        ck_assert_int_eq(e, lines);
        ck_assert_double_eq_tol(d, d1, 1e-12);   /* one class: the mean is its Dice */
        double want = isnan(prev) ? d : 0.9 * prev + 0.1 * d;
        ck_assert_double_eq_tol(ema, want, 1e-8);
        if (ema > best) { best = ema; best_e = (int)e; }
        prev = ema;
    }
    ck_assert_int_eq(lines, 6);
    ck_assert_int_eq(best_e, 0);
    ck_assert_int_eq(r.best_epoch, 0);
    ck_assert_double_eq_tol(r.best_ema, best, 1e-8);
    free(csv);
    char p[600];
    snprintf(p, sizeof p, "%s/checkpoint_best.safetensors", dir);
    StFile *f = st_read(p, err, sizeof err);
    ck_assert_msg(f != NULL, "%s", err);
    ck_assert_str_eq(st_meta(f, "netc_epoch"), "0");
    ck_assert_str_eq(st_meta(f, "netc_best_epoch"), "0");
    st_free(f);
    snprintf(p, sizeof p, "%s/model_best.safetensors", dir);
    ck_assert_int_eq(access(p, R_OK), 0);
    char *svg = slurp(dir, "curves.svg", &n);
    ck_assert_ptr_nonnull(strstr(svg, "validation pseudo-Dice"));
    free(svg);
    rm_run(dir);
    step_free(&st);
}
END_TEST

/* Weights of a disknet with seed 7 (ref_init_params), saved as a model file. */
static void save_pretrained(const Step *st, const char *path, uint64_t seed)
{
    RefState *s = ref_new(st->g);
    ref_init_params(st->g, s, seed);
    float **pd = calloc((size_t)st->g->nparams, sizeof *pd);
    for (int i = 0; i < st->g->nparams; i++) pd[i] = s->buf[st->g->params[i].tensor];
    /* only the net's tensors: drop the optimizer state by writing from an inference graph's view */
    StTensor *t = calloc((size_t)st->g->nparams, sizeof *t);
    int nt = 0;
    for (int i = 0; i < st->g->nparams; i++) {
        int owner = st->g->params[i].node;
        if (owner >= 0 && (st->g->nodes[owner].op == OP_SGD_UPDATE || st->g->nodes[owner].op == OP_ADAM_UPDATE)) continue;
        const Tensor *te = &st->g->tensors[st->g->params[i].tensor];
        t[nt].name = st->g->params[i].name;
        t[nt].rank = te->shape.rank;
        for (int k = 0; k < te->shape.rank; k++) t[nt].shape[k] = te->shape.d[k];
        t[nt].data = pd[i];
        nt++;
    }
    char err[512];
    ck_assert_msg(st_write(path, t, nt, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    free(t);
    free(pd);
    ref_free(s);
}

/* Fine-tuning with everything but the head frozen ("zero adaptation"):
 * the pretrained weights are loaded (all of them), the frozen groups come
 * out of training bit-identical to the file, the head has moved. */
START_TEST(trainer_init_and_freeze)
{
    Override ov[1] = { { .key = strdup("train.freeze"), .text = "e0, e1, d0" } };
    Step st = compile_step("tests/nets/disk2d.net", ov, 1);
    char *dir = tmpdir();
    char pre[600], err[1024];
    snprintf(pre, sizeof pre, "%s/pretrained.safetensors", dir);
    save_pretrained(&st, pre, 12345);
    BatchSource src = { disks, NULL };
    TrainOptions o = { .run_dir = dir, .quiet = true, .init_path = pre };
    TrainResult r;
    ck_assert_msg(train_run(st.g, st.ts, &src, &o, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.init_skipped, 0);
    ck_assert_int_eq(r.init_loaded, 16 + 6);   /* 16 trainable tensors + 6 batchnorm buffers */
    char last[600];
    snprintf(last, sizeof last, "%s/model_last.safetensors", dir);
    StFile *fp = st_read(pre, err, sizeof err), *fl = st_read(last, err, sizeof err);
    ck_assert_msg(fp && fl, "%s", err);
    int frozen = 0, moved = 0;
    for (int i = 0; i < st.g->nparams; i++) {
        const Param *pa = &st.g->params[i];
        if (!pa->trainable) continue;
        const StEntry *a = st_find(fp, pa->name), *b = st_find(fl, pa->name);
        if (!a) continue;   /* optimizer state */
        ck_assert_ptr_nonnull(b);
        bool same = a->nbytes == b->nbytes && memcmp(fp->data + a->offset, fl->data + b->offset, a->nbytes) == 0;
        if (pa->frozen) {
            ck_assert_msg(same, "frozen %s changed in training", pa->name);
            frozen++;
        } else {
            ck_assert_msg(strncmp(pa->name, "logits.", 7) == 0, "%s is not frozen", pa->name);
            moved += !same;
        }
    }
    ck_assert_int_eq(frozen, 14);
    ck_assert_int_eq(moved, 2);   /* the head's weight and bias were trained */
    st_free(fp);
    st_free(fl);
    rm_run(dir);
    step_free(&st);
    free(ov[0].key);
}
END_TEST

/* Partial transfer: a net with 3 classes takes everything but the head
 * from a 2-class file, and says why the head was skipped; a file with no
 * matching tensor, or not a safetensors file, is an error. */
START_TEST(trainer_init_partial)
{
    Step two = compile_step("tests/nets/disk2d.net", NULL, 0);
    char *dir = tmpdir();
    char pre[600], err[1024], summary[8192];
    snprintf(pre, sizeof pre, "%s/pretrained.safetensors", dir);
    save_pretrained(&two, pre, 99);
    Diag d;
    diag_init(&d, stderr);
    Program *p = program_load(&d, "tests/nets/disk2d.net");
    Override ov[2] = { { .key = strdup("classes"), .text = "3" },
                       { .key = strdup("protocol.classes"), .text = "background, disk, rim" } };
    CompileOptions co = { .ov = ov, .nov = 2 };
    Graph *g = netc_compile(p, &co);
    ck_assert_msg(g && d.nerrors == 0, "disknet with 3 classes does not compile");
    RefState *s = ref_new(g);
    int loaded, skipped;
    ck_assert_msg(train_load_init(g, s, pre, &loaded, &skipped, summary, sizeof summary, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(loaded, 20);
    ck_assert_int_eq(skipped, 2);
    ck_assert_msg(strstr(summary, "loaded 20 of 22 tensors") != NULL, "%s", summary);
    ck_assert_msg(strstr(summary, "skipped logits.weight: shape [2, 4, 1, 1] in the file, [3, 4, 1, 1] in the net"),
                  "%s", summary);
    /* a loaded tensor holds the file's values */
    StFile *f = st_read(pre, err, sizeof err);
    int w = find_param(g, "e0.conv.weight");
    ck_assert_int_ge(w, 0);
    const StEntry *e = st_find(f, "e0.conv.weight");
    ck_assert(memcmp(f->data + e->offset, s->buf[g->params[w].tensor], e->nbytes) == 0);
    st_free(f);
    /* nothing matches */
    char other[600];
    snprintf(other, sizeof other, "%s/other.safetensors", dir);
    float v[3] = { 1, 2, 3 };
    StTensor t = { .name = "encoder.weight", .rank = 1, .shape = { 3 }, .data = v };
    ck_assert_int_eq(st_write(other, &t, 1, NULL, NULL, 0, err, sizeof err), 0);
    ck_assert_int_eq(train_load_init(g, s, other, &loaded, &skipped, summary, sizeof summary, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "no tensor of the file matches the net"), "%s", err);
    /* not a safetensors file */
    snprintf(other, sizeof other, "%s/junk.safetensors", dir);
    FILE *jf = fopen(other, "w");
    fputs("junk", jf);
    fclose(jf);
    ck_assert_int_eq(train_load_init(g, s, other, &loaded, &skipped, summary, sizeof summary, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "junk.safetensors"), "%s", err);
    ref_free(s);
    graph_free(g);
    program_free(p);
    diag_free(&d);
    free(ov[0].key);
    free(ov[1].key);
    rm_run(dir);
    step_free(&two);
}
END_TEST

/* The 5-fold split: every case validates in exactly one fold, folds of
 * KFold's sizes, written and read back; bad files and folds are errors. */
START_TEST(trainer_split)
{
    char *dir = tmpdir();
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/splits_final.json", dir);
    const char *names[7] = { "a", "b", "c", "d", "e", "f", "g" };
    unsigned char v[7];
    int times[7] = { 0 }, sizes[5];
    for (int f = 0; f < 5; f++) {
        ck_assert_msg(train_split(path, names, 7, f, v, err, sizeof err) == 0, "%s", err);
        sizes[f] = 0;
        for (int i = 0; i < 7; i++) {
            ck_assert_int_le(v[i], 1);
            times[i] += v[i];
            sizes[f] += v[i];
        }
    }
    for (int i = 0; i < 7; i++) ck_assert_int_eq(times[i], 1);
    ck_assert_int_eq(sizes[0], 2);
    ck_assert_int_eq(sizes[1], 2);
    ck_assert_int_eq(sizes[4], 1);
    /* the file is reused: fold 0 again from it, the same cases */
    unsigned char v0[7];
    unlink(path);
    ck_assert_int_eq(train_split(path, names, 7, 0, v0, err, sizeof err), 0);   /* made */
    ck_assert_int_eq(train_split(path, names, 7, 0, v, err, sizeof err), 0);    /* read back */
    ck_assert(memcmp(v, v0, 7) == 0);
    /* a dataset without one of the split's cases */
    ck_assert_int_eq(train_split(path, names + 1, 6, 0, v, err, sizeof err) +
                         train_split(path, names, 6, 0, v, err, sizeof err) <= -1, 1);
    FILE *f = fopen(path, "w");
    fputs("[{\"train\": [\"a\", \"b\"], \"val\": [\"zz\"]}]", f);
    fclose(f);
    ck_assert_int_eq(train_split(path, names, 7, 0, v, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "case `zz` is not a training case"), "%s", err);
    ck_assert_int_eq(train_split(path, names, 7, 1, v, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "has 1 fold(s); there is no fold 1"), "%s", err);
    f = fopen(path, "w");
    fputs("{not json", f);
    fclose(f);
    ck_assert_int_eq(train_split(path, names, 7, 0, v, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not a list of folds"), "%s", err);
    unlink(path);
    ck_assert_int_eq(train_split(path, names, 1, 0, v, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "at least 2 training cases"), "%s", err);
    ck_assert_int_eq(train_split(path, names, 2, 3, v, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "make 2 folds; there is no fold 3"), "%s", err);
    rm_run(dir);
}
END_TEST

/* Weight maps ride on a second Batcher with the intensity augmentations
 * off (train_weights.h): with rotation, scaling, mirroring and noise on,
 * its patches of a map equal to the labels line up with the image
 * Batcher's label patches (trilinear vs nearest: a few voxels on the
 * border may differ), and no noise reaches the map. */
START_TEST(trainer_weightmap_batches)
{
    enum { Z = 3, Y = 40, X = 36 };
    static float img[Z * Y * X], wmap[Z * Y * X];
    static uint8_t lab[Z * Y * X];
    for (int z = 0; z < Z; z++)
        for (int y = 0; y < Y; y++)
            for (int x = 0; x < X; x++) {
                int i = (z * Y + y) * X + x;
                lab[i] = (y - 18) * (y - 18) + (x - 15) * (x - 15) < 100;
                img[i] = (float)lab[i] + 0.01f * (float)(x % 7);
                wmap[i] = lab[i];
            }
    AugCase c = { .nchannels = 1, .shape = { Z, Y, X }, .image = img, .labels = lab };
    AugCase w = c;
    w.image = wmap;
    TrainCall aug[4];
    memset(aug, 0, sizeof aug);
    aug[0].name = "rotate"; aug[0].lo = -30; aug[0].hi = 30; aug[0].num[1] = 1;
    aug[1].name = "scale"; aug[1].lo = 0.8; aug[1].hi = 1.2; aug[1].num[1] = 1;
    aug[2].name = "noise"; aug[2].lo = 0.5; aug[2].hi = 1; aug[2].num[1] = 1;
    aug[3].name = "mirror"; aug[3].axes = 3; aug[3].num[1] = 0.5;
    TrainCall waug[4];
    memcpy(waug, aug, sizeof aug);
    tw_spatial_only(waug, 4);
    ck_assert(waug[2].num[1] == 0 && waug[0].num[1] == 1 && waug[3].num[1] == 0.5);
    AugSpec spec = { .rank = 2, .patch = { 24, 24 }, .batch = 4, .augment = aug, .naugment = 4 };
    AugSpec wspec = spec;
    wspec.augment = waug;
    AugDataset da = { &c, 1, 2 }, dw = { &w, 1, 2 };
    Batcher *a = batcher_new(&da, &spec, 0, 5), *b = batcher_new(&dw, &wspec, 0, 5);
    ck_assert(a && b);
    size_t ni = batcher_image_count(a), nl = batcher_label_count(a);
    float *ia = malloc(ni * sizeof(float)), *ib = malloc(ni * sizeof(float));
    int32_t *la = malloc(nl * sizeof(int32_t)), *lb = malloc(nl * sizeof(int32_t));
    int64_t agree = 0, fg = 0, total = 0;
    for (int64_t k = 0; k < 8; k++) {
        batcher_batch(a, k, ia, la);
        batcher_batch(b, k, ib, lb);
        for (size_t i = 0; i < nl; i++) {
            ck_assert_int_eq(la[i], lb[i]);   /* same patches, same label transform */
            ck_assert_msg(ib[i] >= -1e-6f && ib[i] <= 1 + 1e-6f, "noise reached the weight map: %g", (double)ib[i]);
            agree += (ib[i] >= 0.5f) == (la[i] == 1);
            fg += la[i] == 1;
            total++;
        }
    }
    ck_assert_int_gt(fg, total / 20);
    ck_assert_msg(agree >= total * 97 / 100, "weight map and labels agree on %lld of %lld voxels", (long long)agree,
                  (long long)total);
    free(ia);
    free(ib);
    free(la);
    free(lb);
    batcher_free(a);
    batcher_free(b);
}
END_TEST

/* A learning rate of 1e6 diverges: training stops with a message naming
 * the loss, and the checkpoint of the last good epoch stays readable. */
START_TEST(trainer_nan_stops)
{
    Override ov[1] = { { .key = strdup("train.optimizer"), .text = "sgd(lr = 1e7, momentum = 0.99)" } };
    Step st = compile_step("tests/nets/disk2d.net", ov, 1);
    BatchSource src = { disks, NULL };
    char *dir = tmpdir();
    TrainOptions o = { .run_dir = dir, .quiet = true };
    TrainResult r;
    char err[1024];
    int rc = train_run(st.g, st.ts, &src, &o, &r, err, sizeof err);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err, "the loss became") && strstr(err, "training stopped"), "%s", err);
    rm_run(dir);
    step_free(&st);
    free(ov[0].key);
}
END_TEST

START_TEST(trainer_schedules)
{
    TrainSpec ts;
    memset(&ts, 0, sizeof ts);
    ts.optimizer.num[0] = 0.01;
    ck_assert_double_eq_tol(train_lr(&ts, 0, 100), 0.01, 1e-12);            /* default poly(0.9) */
    ck_assert_double_eq_tol(train_lr(&ts, 50, 100), 0.01 * pow(0.5, 0.9), 1e-12);
    TrainCall sc[2];
    memset(sc, 0, sizeof sc);
    sc[0].name = "warmup";
    sc[0].num[0] = 10;
    sc[1].name = "cosine";
    sc[1].num[0] = 0;
    ts.schedule = sc;
    ts.nschedule = 2;
    ck_assert_double_eq_tol(train_lr(&ts, 0, 100), 0.01 * 0.1, 1e-12);        /* warm-up: 1/10 */
    ck_assert_double_eq_tol(train_lr(&ts, 50, 100), 0.005, 1e-12);            /* cosine half way */
    sc[1].name = "step";
    sc[1].num[0] = 30;
    sc[1].num[1] = 0.1;
    ck_assert_double_eq_tol(train_lr(&ts, 65, 100), 0.01 * 0.01, 1e-12);
}
END_TEST

Suite *trainer_suite(void)
{
    Suite *s = suite_create("trainer");
    TCase *tc = tcase_create("loop");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, trainer_schedules);
    tcase_add_test(tc, trainer_loss_falls);
    tcase_add_test(tc, trainer_resume_bit_identical);
    tcase_add_test(tc, trainer_nan_stops);
    tcase_add_test(tc, trainer_validation_ema);
    tcase_add_test(tc, trainer_init_and_freeze);
    tcase_add_test(tc, trainer_init_partial);
    tcase_add_test(tc, trainer_split);
    tcase_add_test(tc, trainer_weightmap_batches);
    suite_add_tcase(s, tc);
    return s;
}
