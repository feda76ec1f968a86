/* test_pool.c — the thread pool (runtime/pool.c) and multi-threaded
 * generated code.
 *
 * The pool: every iteration of [0, n) runs exactly once, in contiguous
 * chunks, for n = 0, 1, 7, 1e6 and 1, 2, 4, 7 threads; several threads
 * really take part; nested calls and concurrent callers run serially
 * instead of deadlocking; thread counts from netc_set_threads and
 * NETC_THREADS; shutdown and restart.
 *
 * Generated code: unet2d and unet3d inference and a unet2d training step
 * (fused, as netc runs them) through the C backend and the LLVM JIT, with
 * NETC_THREADS=1 and with 4 threads: every tensor bit-identical between the
 * thread counts, outputs, losses and updated parameters within the
 * tolerance of test_codegen.c of the reference.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autodiff.h"
#include "cbackend.h"
#include "fuse.h"
#include "l3_llvm.h"
#include "lower.h"
#include "pool.h"
#include "ref.h"
#include "codegen_fixture.h"
#include "support.h"

/* ---- the pool --------------------------------------------------------------------------------- */

typedef struct {
    int64_t n;
    unsigned char *hits;        /* per iteration: how many times it ran */
    atomic_llong sum, calls;
    atomic_int bad_chunks;
} Count;

static void count_fn(void *ctx, int64_t lo, int64_t hi)
{
    Count *c = ctx;
    if (!(0 <= lo && lo < hi && hi <= c->n)) atomic_fetch_add(&c->bad_chunks, 1);
    long long s = 0;
    for (int64_t i = lo; i < hi && i >= 0 && i < c->n; i++) {
        c->hits[i]++;
        s += i;
    }
    atomic_fetch_add(&c->sum, s);
    atomic_fetch_add(&c->calls, 1);
}

static void check_count(int threads, int64_t n)
{
    netc_set_threads(threads);
    ck_assert_int_eq(netc_threads(), threads);
    Count c = { .n = n, .hits = calloc((size_t)n + 1, 1) };
    atomic_init(&c.sum, 0);
    atomic_init(&c.calls, 0);
    atomic_init(&c.bad_chunks, 0);
    netc_parallel_for(count_fn, &c, n);
    ck_assert_int_eq(atomic_load(&c.bad_chunks), 0);
    ck_assert_msg(atomic_load(&c.sum) == (long long)(n * (n - 1) / 2), "%d threads, n = %lld: sum %lld", threads,
                  (long long)n, (long long)atomic_load(&c.sum));
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(c.hits[i] == 1, "%d threads, n = %lld: iteration %lld ran %d times", threads, (long long)n,
                      (long long)i, c.hits[i]);
    if (n == 0) ck_assert_int_eq(atomic_load(&c.calls), 0);
    if (n == 1 || threads == 1) ck_assert_int_eq(atomic_load(&c.calls), n > 0);   /* fn(ctx, 0, n) directly */
    free(c.hits);
}

START_TEST(pool_chunks)
{
    const int threads[] = { 1, 2, 4, 7 };
    const int64_t ns[] = { 0, 1, 7, 1000000 };
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++)
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) check_count(threads[t], ns[i]);
    netc_set_threads(0);
    netc_pool_shutdown();
}
END_TEST

/* Several threads take part: chunks that sleep cannot all run on the caller. */
typedef struct {
    pthread_mutex_t mu;
    pthread_t seen[64];
    int nseen;
} Who;

static void who_fn(void *ctx, int64_t lo, int64_t hi)
{
    Who *w = ctx;
    (void)lo;
    (void)hi;
    struct timespec ts = { 0, 2000000 };
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&w->mu);
    bool known = false;
    for (int i = 0; i < w->nseen; i++) known = known || pthread_equal(w->seen[i], pthread_self());
    if (!known && w->nseen < 64) w->seen[w->nseen++] = pthread_self();
    pthread_mutex_unlock(&w->mu);
}

START_TEST(pool_uses_threads)
{
    netc_set_threads(4);
    Who w = { .nseen = 0 };
    pthread_mutex_init(&w.mu, NULL);
    netc_parallel_for(who_fn, &w, 64);
    ck_assert_msg(w.nseen >= 2 && w.nseen <= 4, "%d threads ran chunks", w.nseen);
    pthread_mutex_destroy(&w.mu);
    netc_set_threads(0);
    netc_pool_shutdown();
}
END_TEST

/* A call from inside a chunk runs serially on that thread. */
typedef struct {
    int64_t inner;
    atomic_llong total;
    Count *cells;   /* one Count per outer iteration */
} Nest;

static void nested_fn(void *ctx, int64_t lo, int64_t hi)
{
    Nest *ns = ctx;
    for (int64_t i = lo; i < hi; i++) {
        netc_parallel_for(count_fn, &ns->cells[i], ns->inner);
        atomic_fetch_add(&ns->total, 1);
    }
}

START_TEST(pool_nested)
{
    for (int threads = 1; threads <= 4; threads += 3) {
        netc_set_threads(threads);
        Nest ns = { .inner = 1000 };
        atomic_init(&ns.total, 0);
        ns.cells = calloc(9, sizeof *ns.cells);
        for (int i = 0; i < 9; i++) {
            ns.cells[i].n = ns.inner;
            ns.cells[i].hits = calloc((size_t)ns.inner, 1);
        }
        netc_parallel_for(nested_fn, &ns, 9);
        ck_assert_int_eq(atomic_load(&ns.total), 9);
        for (int i = 0; i < 9; i++) {
            ck_assert_int_eq(atomic_load(&ns.cells[i].calls), 1);   /* serial: one chunk */
            ck_assert_int_eq(atomic_load(&ns.cells[i].sum), ns.inner * (ns.inner - 1) / 2);
            free(ns.cells[i].hits);
        }
        free(ns.cells);
    }
    netc_set_threads(0);
    netc_pool_shutdown();
}
END_TEST

/* Two threads of the program calling at once: both finish, both correct. */
static void *caller(void *arg)
{
    Count *c = arg;
    for (int r = 0; r < 50; r++) {
        memset(c->hits, 0, (size_t)c->n);
        atomic_store(&c->sum, 0);
        netc_parallel_for(count_fn, c, c->n);
        for (int64_t i = 0; i < c->n; i++)
            if (c->hits[i] != 1) atomic_fetch_add(&c->bad_chunks, 1);
        if (atomic_load(&c->sum) != (long long)(c->n * (c->n - 1) / 2)) atomic_fetch_add(&c->bad_chunks, 1);
    }
    return NULL;
}

START_TEST(pool_concurrent_callers)
{
    netc_set_threads(3);
    Count c[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].n = 10000 + i;
        c[i].hits = calloc((size_t)c[i].n, 1);
        atomic_init(&c[i].bad_chunks, 0);
        ck_assert_int_eq(pthread_create(&th[i], NULL, caller, &c[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(atomic_load(&c[i].bad_chunks), 0);
        free(c[i].hits);
    }
    netc_set_threads(0);
    netc_pool_shutdown();
}
END_TEST

START_TEST(pool_thread_counts)
{
    char *old = getenv("NETC_THREADS") ? strdup(getenv("NETC_THREADS")) : NULL;
    netc_set_threads(0);
    setenv("NETC_THREADS", "3", 1);
    ck_assert_int_eq(netc_threads(), 3);
    netc_set_threads(5);   /* wins over the environment */
    ck_assert_int_eq(netc_threads(), 5);
    netc_set_threads(-1);
    ck_assert_int_eq(netc_threads(), 3);
    setenv("NETC_THREADS", "zero", 1);   /* not a count: the online CPUs */
    ck_assert_int_ge(netc_threads(), 1);
    unsetenv("NETC_THREADS");
    ck_assert_int_ge(netc_threads(), 1);
    /* shutdown is idempotent, and the pool starts again afterwards */
    netc_set_threads(2);
    netc_pool_shutdown();
    netc_pool_shutdown();
    check_count(2, 100000);
    netc_pool_shutdown();
    check_count(3, 100000);   /* resized */
    if (old) setenv("NETC_THREADS", old, 1);
    free(old);
    netc_set_threads(0);
    netc_pool_shutdown();
}
END_TEST

/* ---- generated code at several thread counts ---------------------------------------------------- */


static void copy_state(const Graph *g, RefState *dst, const RefState *src)
{
    for (int t = 0; t < g->ntensors; t++) {
        memcpy(dst->buf[t], src->buf[t], sizeof(float) * (size_t)src->numel[t]);
        if (g->tensors[t].kind == TK_ACTIVATION)
            for (int64_t i = 0; i < dst->numel[t]; i++) dst->buf[t][i] = NAN;
    }
}

static void check_tensor_close(const char *what, const Graph *g, int t, const RefState *got, const RefState *want,
                               uint64_t seed)
{
    double top = 0;
    for (int64_t i = 0; i < want->numel[t]; i++) top = fmax(top, fabs(want->buf[t][i]));
    for (int64_t i = 0; i < want->numel[t]; i++) {
        double a = got->buf[t][i], b = want->buf[t][i];
        ck_assert_msg(fabs(a - b) <= TOL_ABS * top + TOL_REL * fabs(b) + 1e-6,
                      "%s (seed %llu): %s[%lld]: generated %.9g, reference %.9g", what, (unsigned long long)seed,
                      g->tensors[t].name, (long long)i, a, b);
    }
}

/* Runs g's fused code through one backend with NETC_THREADS=1 and with 4
 * threads from the same state; every tensor must be bit-identical, and the
 * results close to the reference. */
static void threads_agree(const char *path, const char *args, bool train)
{
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    Graph *g = c->g;
    if (train) {
        ck_assert_int_gt(g->nlosses, 0);
        ck_assert_int_gt(autodiff(g, g->losses[0].tensor), 0);
        const double sgd[4] = { 0.01, 0.9, 1, 1e-4 };
        ck_assert_int_gt(append_optimizer(g, "sgd", sgd), 0);
    }
    char err[1500];
    FusionPlan *fp = fuse_graph(g, train);
    L3Module *m = lower_graph_fused(g, fp, train, err, sizeof err);
    ck_assert_msg(m != NULL, "%s: %s", path, err);
    /* a training step: a fixed seed, as in tests/test_codegen.c (fixed_seed) */
    uint64_t seed = train ? (getenv("NETC_TEST_SEED") ? strtoull(getenv("NETC_TEST_SEED"), NULL, 10) : 20261127u)
                          : codegen_test_seed();
    RefState *want = ref_new(g), *start = ref_new(g), *got[2] = { ref_new(g), ref_new(g) };
    ref_init_params(g, start, seed);
    codegen_fill(g, start, seed);
    for (int t = 0; t < g->ntensors; t++) memcpy(want->buf[t], start->buf[t], sizeof(float) * (size_t)start->numel[t]);
    ck_assert_msg(ref_forward(g, want, train, 1, err, sizeof err) == 0, "%s", err);
    const char *entry = train ? "netc_train_forward" : "netc_forward";
    char *old = getenv("NETC_THREADS") ? strdup(getenv("NETC_THREADS")) : NULL;
    for (int backend = 0; backend < 2; backend++) {
        CBackend *cb = NULL;
        L3Llvm *jit = NULL;
        NetcEntry run;
        if (backend == 0) {
            cb = cbackend_compile(m, err, sizeof err);
            ck_assert_msg(cb != NULL, "%s: %s", path, err);
            run = cbackend_entry(cb, entry);
        } else {
            jit = l3_llvm_jit(m, err, sizeof err);
            ck_assert_msg(jit != NULL, "%s: %s", path, err);
            run = l3_llvm_entry(jit, entry);
        }
        ck_assert_ptr_nonnull(run);
        for (int r = 0; r < 2; r++) {
            if (r == 0) {
                setenv("NETC_THREADS", "1", 1);
                netc_set_threads(0);
                ck_assert_int_eq(netc_threads(), 1);
            } else {
                netc_set_threads(4);
            }
            copy_state(g, got[r], start);
            run((void **)got[r]->buf);
        }
        char what[300];
        snprintf(what, sizeof what, "%s%s, %s backend", path, train ? " training step" : "", backend ? "LLVM" : "C");
        for (int t = 0; t < g->ntensors; t++)
            ck_assert_msg(memcmp(got[0]->buf[t], got[1]->buf[t], sizeof(float) * (size_t)got[0]->numel[t]) == 0,
                          "%s (seed %llu): %s differs between 1 and 4 threads", what, (unsigned long long)seed,
                          g->tensors[t].name);
        for (int i = 0; i < g->noutputs; i++) check_tensor_close(what, g, g->outputs[i].tensor, got[1], want, seed);
        for (int i = 0; i < g->nlosses; i++) check_tensor_close(what, g, g->losses[i].tensor, got[1], want, seed);
        int updates = 0;
        for (int i = 0; i < g->nnodes; i++)
            if (g->nodes[i].op == OP_SGD_UPDATE) {
                check_tensor_close(what, g, g->nodes[i].out, got[1], want, seed);
                updates++;
            }
        if (train) ck_assert_int_gt(updates, 0);
        cbackend_free(cb);
        l3_llvm_free(jit);
    }
    if (old) setenv("NETC_THREADS", old, 1);
    else unsetenv("NETC_THREADS");
    free(old);
    netc_set_threads(0);
    netc_pool_shutdown();
    ref_free(want);
    ref_free(start);
    ref_free(got[0]);
    ref_free(got[1]);
    l3_module_free(m);
    fusion_plan_free(fp);
    compiled_free(c);
}

START_TEST(pool_generated_inference)
{
    threads_agree("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32", false);
    threads_agree("netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16", false);
}
END_TEST

START_TEST(pool_generated_training)
{
    threads_agree("netdefs/unet2d.net", "-D base=2 -D protocol.size=32x32 --train -D train.patch=32x32 -D train.batch=2",
                  true);
}
END_TEST

/* The printed C calls the pool for parallel loops; nested ones stay loops. */
START_TEST(pool_printed_c)
{
    L3Module *m = l3_module_new("t", 2);
    L3Kernel *k = l3_kernel_new(m, "k0_t", "");
    int x = l3_buf(m, k, 0, L3_F32, 600, false, "x"), y = l3_buf(m, k, 1, L3_F32, 600, true, "y");
    int s = l3_var(m, k, "s", L3_F32, false);
    l3_local(m, &k->body, s, l3_load(m, k, x, l3_int(m, 0)));
    int i = l3_var(m, k, "i", L3_I64, true), j = l3_var(m, k, "j", L3_I64, true);
    L3Block *b = &l3_for(m, &k->body, i, 20, L3_PARALLEL)->body;
    b = &l3_for(m, b, j, 30, L3_PARALLEL)->body;
    L3Expr *idx = l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, l3_varref(m, k, i), l3_int(m, 30)), l3_varref(m, k, j));
    l3_store(m, b, y, idx, l3_bin(m, L3_MUL, l3_load(m, k, x, idx), l3_varref(m, k, s)), false);
    /* a parallel loop that writes an outer local stays serial */
    int i2 = l3_var(m, k, "i", L3_I64, true);
    b = &l3_for(m, &k->body, i2, 4, L3_PARALLEL)->body;
    l3_assign(m, b, s, l3_bin(m, L3_ADD, l3_varref(m, k, s), l3_float(m, 1)));
    l3_entry_call(l3_entry_new(m, "netc_forward"), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    l3_print_c(f, m);
    fclose(f);
    ck_assert_msg(strstr(text, "void netc_parallel_for(") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "static void k0_t_body0(void *arg, int64_t lo, int64_t hi)") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "netc_parallel_for(k0_t_body0, &ctx, 600);") != NULL, "%s", text);   /* i x j collapsed */
    ck_assert_msg(strstr(text, "k0_t_body1") == NULL, "%s", text);   /* the second loop stays serial */
    ck_assert_msg(strstr(text, "float s0;") != NULL, "%s", text);   /* the local travels in the context */
    free(text);
    /* and it runs the same on 1 and 3 threads, C and LLVM */
    char err[1500];
    CBackend *cb = cbackend_compile(m, err, sizeof err);
    ck_assert_msg(cb != NULL, "%s", err);
    L3Llvm *jit = l3_llvm_jit(m, err, sizeof err);
    ck_assert_msg(jit != NULL, "%s", err);
    float xs[600], ys[4][600];
    for (int q = 0; q < 600; q++) xs[q] = (float)q * 0.5f - 7;
    for (int r = 0; r < 4; r++) {
        netc_set_threads(r % 2 ? 3 : 1);
        void *t[2] = { xs, ys[r] };
        (r < 2 ? cbackend_entry(cb, "netc_forward") : l3_llvm_entry(jit, "netc_forward"))(t);
        for (int q = 0; q < 600; q++) ck_assert_float_eq(ys[r][q], xs[q] * xs[0]);
    }
    cbackend_free(cb);
    l3_llvm_free(jit);
    l3_module_free(m);
    netc_set_threads(0);
    netc_pool_shutdown();
}
END_TEST

Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pool_chunks);
    tcase_add_test(tc, pool_uses_threads);
    tcase_add_test(tc, pool_nested);
    tcase_add_test(tc, pool_concurrent_callers);
    tcase_add_test(tc, pool_thread_counts);
    tcase_add_test(tc, pool_printed_c);
    suite_add_tcase(s, tc);
    TCase *gen = tcase_create("generated");
    tcase_set_timeout(gen, 300);
    tcase_add_test(gen, pool_generated_inference);
    tcase_add_test(gen, pool_generated_training);
    suite_add_tcase(s, gen);
    return s;
}
