/* test_trainer.c — the training loop on a synthetic task (tests/nets/disk2d.net:
 * find a bright disk in noise): the loss falls; a run stopped after two
 * epochs and resumed reproduces the uninterrupted run bit for bit (loss
 * curve and checkpoint); a diverging run stops with a message and keeps its
 * last good checkpoint; the learning-rate schedules. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"
#include "ref.h"
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
    ck_assert_ptr_nonnull(strstr(csv, "epoch,train_loss,val_score,lr,seconds\n0,"));
    free(csv);
    char *svg = slurp(dir, "curves.svg", &n);
    ck_assert_ptr_nonnull(strstr(svg, "<polyline"));
    free(svg);
    rm_run(dir);
    step_free(&st);
}
END_TEST

/* 6 epochs in one go vs 2 epochs, "killed", then resumed: the same loss
 * curve (each epoch's mean loss, printed with 9 digits) and the same final
 * checkpoint, byte for byte. */
START_TEST(trainer_resume_bit_identical)
{
    Step st = compile_step("tests/nets/disk2d.net", NULL, 0);
    BatchSource src = { disks, NULL };
    char err[1024];
    TrainResult r;
    char *a = tmpdir(), *b = tmpdir();
    TrainOptions oa = { .run_dir = a, .quiet = true };
    ck_assert_msg(train_run(st.g, st.ts, &src, &oa, &r, err, sizeof err) == 0, "%s", err);
    TrainOptions ob = { .run_dir = b, .quiet = true, .stop_after_epochs = 2 };
    ck_assert_msg(train_run(st.g, st.ts, &src, &ob, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.epochs_done, 2);
    ob.stop_after_epochs = 0;
    ob.resume = true;
    ck_assert_msg(train_run(st.g, st.ts, &src, &ob, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.epochs_done, 4);
    size_t na, nb;
    char *ca = slurp(a, "checkpoint_last.safetensors", &na), *cb = slurp(b, "checkpoint_last.safetensors", &nb);
    ck_assert_msg(na == nb && memcmp(ca, cb, na) == 0, "resumed checkpoint differs from the uninterrupted one");
    free(ca);
    free(cb);
    /* the loss column of the CSV logs agree line by line */
    ca = slurp(a, "log.csv", &na);
    cb = slurp(b, "log.csv", &nb);
    char *la = ca, *lb = cb;
    for (int line = 0; line < 7; line++) {
        char *ea = strchr(la, '\n'), *eb = strchr(lb, '\n');
        ck_assert(ea && eb);
        /* epoch,loss,... : compare up to the third comma (seconds differ) */
        char *ka = la, *kb = lb;
        for (int c = 0; c < 2 && ka; c++) ka = strchr(ka + 1, ',');
        for (int c = 0; c < 2 && kb; c++) kb = strchr(kb + 1, ',');
        ck_assert(ka && kb);
        ck_assert_msg(ka - la == kb - lb && memcmp(la, lb, (size_t)(ka - la)) == 0, "log line %d differs", line);
        la = ea + 1;
        lb = eb + 1;
    }
    free(ca);
    free(cb);
    rm_run(a);
    rm_run(b);
    step_free(&st);
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
    suite_add_tcase(s, tc);
    return s;
}
