/* bench_kernels.c — the measured roofline and `netc bench` (bench_kernels.h).
 *
 * `netc bench` compiles the net exactly as the runtime runs it (fused, one
 * planned arena, LLVM JIT or the C backend), times the whole step (median
 * of --iters calls after --warmup), and with --kernels also every fused
 * kernel on its own: the module gets one extra entry per kernel,
 * `netc_k<i>(void **t)` calling kernel i only (same ABI as the step's
 * entry); one repeat calls them all in order (which is one whole step, so
 * every kernel sees the data it sees in a step) and times each call.  The
 * FLOP count of a kernel is the sum of node_flops over its nodes, its bytes
 * the sizes of the tensors it reads (ins) and writes (outs): the compiler's
 * counts; every time is measured.
 */
#define _GNU_SOURCE
#include "bench_kernels.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cbackend.h"
#include "driver.h"
#include "fuse.h"
#include "graph.h"
#include "l3_llvm.h"
#include "lower.h"
#include "memplan.h"
#include "pool.h"
#include "ref.h"
#include "util.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NETC_X86 1
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- FMA peak ---------------------------------------------------------- */

/* Each loop: 12 independent accumulators (enough to cover FMA latency x
 * throughput on current cores), `n` rounds; returns a value derived from
 * the accumulators so nothing is optimised away.  FLOPs = n * 12 * lanes * 2. */
#ifdef NETC_X86
__attribute__((target("avx512f"))) static float fma_avx512(long n)
{
    __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    __m512 a0 = _mm512_set1_ps(1.0f), a1 = _mm512_set1_ps(1.1f), a2 = _mm512_set1_ps(1.2f), a3 = _mm512_set1_ps(1.3f);
    __m512 a4 = _mm512_set1_ps(1.4f), a5 = _mm512_set1_ps(1.5f), a6 = _mm512_set1_ps(1.6f), a7 = _mm512_set1_ps(1.7f);
    __m512 a8 = _mm512_set1_ps(1.8f), a9 = _mm512_set1_ps(1.9f), a10 = _mm512_set1_ps(2.0f), a11 = _mm512_set1_ps(2.1f);
    for (long i = 0; i < n; i++) {
        a0 = _mm512_fmadd_ps(a0, b, c); a1 = _mm512_fmadd_ps(a1, b, c); a2 = _mm512_fmadd_ps(a2, b, c);
        a3 = _mm512_fmadd_ps(a3, b, c); a4 = _mm512_fmadd_ps(a4, b, c); a5 = _mm512_fmadd_ps(a5, b, c);
        a6 = _mm512_fmadd_ps(a6, b, c); a7 = _mm512_fmadd_ps(a7, b, c); a8 = _mm512_fmadd_ps(a8, b, c);
        a9 = _mm512_fmadd_ps(a9, b, c); a10 = _mm512_fmadd_ps(a10, b, c); a11 = _mm512_fmadd_ps(a11, b, c);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float fma_avx2(long n)
{
    __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    __m256 a0 = _mm256_set1_ps(1.0f), a1 = _mm256_set1_ps(1.1f), a2 = _mm256_set1_ps(1.2f), a3 = _mm256_set1_ps(1.3f);
    __m256 a4 = _mm256_set1_ps(1.4f), a5 = _mm256_set1_ps(1.5f), a6 = _mm256_set1_ps(1.6f), a7 = _mm256_set1_ps(1.7f);
    __m256 a8 = _mm256_set1_ps(1.8f), a9 = _mm256_set1_ps(1.9f), a10 = _mm256_set1_ps(2.0f), a11 = _mm256_set1_ps(2.1f);
    for (long i = 0; i < n; i++) {
        a0 = _mm256_fmadd_ps(a0, b, c); a1 = _mm256_fmadd_ps(a1, b, c); a2 = _mm256_fmadd_ps(a2, b, c);
        a3 = _mm256_fmadd_ps(a3, b, c); a4 = _mm256_fmadd_ps(a4, b, c); a5 = _mm256_fmadd_ps(a5, b, c);
        a6 = _mm256_fmadd_ps(a6, b, c); a7 = _mm256_fmadd_ps(a7, b, c); a8 = _mm256_fmadd_ps(a8, b, c);
        a9 = _mm256_fmadd_ps(a9, b, c); a10 = _mm256_fmadd_ps(a10, b, c); a11 = _mm256_fmadd_ps(a11, b, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float o[8];
    _mm256_storeu_ps(o, s);
    return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}
#endif

static float fma_scalar(long n)
{
    float a[12], b = 0.999999f, c = 1e-7f, s = 0;
    for (int k = 0; k < 12; k++) a[k] = 1.0f + 0.1f * (float)k;
    for (long i = 0; i < n; i++)
        for (int k = 0; k < 12; k++) a[k] = fmaf(a[k], b, c);
    for (int k = 0; k < 12; k++) s += a[k];
    return s;
}

typedef struct {
    int isa;                  /* 0 scalar, 1 avx2, 2 avx512 */
    long n;
    float sink;
    /* memcpy */
    char *dst;
    const char *src;
    size_t bytes;
    pthread_barrier_t *bar;
    double t0, t1;            /* this thread's start (after the barrier) and end */
} PeakJob;

static float fma_run(int isa, long n)
{
#ifdef NETC_X86
    if (isa == 2) return fma_avx512(n);
    if (isa == 1) return fma_avx2(n);
#endif
    return fma_scalar(n);
}

static void *fma_thread(void *p)
{
    PeakJob *j = p;
    pthread_barrier_wait(j->bar);
    j->t0 = now_s();
    j->sink = fma_run(j->isa, j->n);
    j->t1 = now_s();
    return NULL;
}

static void *copy_thread(void *p)
{
    PeakJob *j = p;
    pthread_barrier_wait(j->bar);
    j->t0 = now_s();
    memcpy(j->dst, j->src, j->bytes);
    j->t1 = now_s();
    return NULL;
}

/* Runs fn on `threads` threads (the caller waits); returns the wall time
 * from the first thread's start to the last thread's finish (each thread
 * reads the clock itself: the caller may be descheduled), or -1. */
static double run_threads(int threads, PeakJob *jobs, void *(*fn)(void *))
{
    pthread_t tid[256];
    pthread_barrier_t bar;
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    if (pthread_barrier_init(&bar, NULL, (unsigned)threads + 1) != 0) return -1;
    int started = 0;
    for (int i = 0; i < threads; i++) {
        jobs[i].bar = &bar;
        if (pthread_create(&tid[i], NULL, fn, &jobs[i]) != 0) break;
        started++;
    }
    if (started < threads) {
        /* cannot happen in practice; release the started ones */
        for (int i = started; i < threads; i++) jobs[i].bar = NULL;
        pthread_barrier_destroy(&bar);
        return -1;
    }
    pthread_barrier_wait(&bar);
    for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
    double t0 = jobs[0].t0, t1 = jobs[0].t1;
    for (int i = 1; i < threads; i++) {
        t0 = jobs[i].t0 < t0 ? jobs[i].t0 : t0;
        t1 = jobs[i].t1 > t1 ? jobs[i].t1 : t1;
    }
    pthread_barrier_destroy(&bar);
    return t1 - t0;
}

static int best_isa(void)
{
#ifdef NETC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

double netc_peak_fma_gflops(int threads, const char **isa_name)
{
    static const char *names[] = { "scalar", "avx2", "avx512" };
    static const int lanes[] = { 1, 8, 16 };
    int isa = best_isa();
    if (isa_name) *isa_name = names[isa];
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    PeakJob jobs[256];
    /* calibrate n to about 30 ms per thread, then the best of 5 (the least
     * disturbed by other processes) */
    long n = 1 << 16;
    volatile float sink = 0;
    for (;;) {
        double t0 = now_s();
        sink += fma_run(isa, n);
        double dt = now_s() - t0;
        if (dt > 0.01 || n > (1L << 30)) {
            n = (long)((double)n * 0.03 / (dt > 1e-4 ? dt : 1e-4)) + 1;
            break;
        }
        n *= 4;
    }
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        for (int i = 0; i < threads; i++) jobs[i] = (PeakJob){ .isa = isa, .n = n };
        double dt = run_threads(threads, jobs, fma_thread);
        if (dt <= 0) continue;
        for (int i = 0; i < threads; i++) sink += jobs[i].sink;
        double flops = (double)n * 12.0 * lanes[isa] * 2.0 * threads;
        if (flops / dt > best) best = flops / dt;
    }
    return best * 1e-9;
}

double netc_peak_mem_gbs(int threads)
{
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    size_t bytes = (size_t)128 << 20;
    char *src = NULL, *dst = NULL;
    if (posix_memalign((void **)&src, 4096, bytes) != 0) return 0;
    if (posix_memalign((void **)&dst, 4096, bytes) != 0) {
        free(src);
        return 0;
    }
    memset(src, 1, bytes);
    memset(dst, 0, bytes);
    size_t chunk = bytes / (size_t)threads / 64 * 64;
    PeakJob jobs[256];
    double best = 0;
    for (int rep = 0; rep < 4; rep++) {
        for (int i = 0; i < threads; i++)
            jobs[i] = (PeakJob){ .dst = dst + (size_t)i * chunk, .src = src + (size_t)i * chunk,
                                 .bytes = i == threads - 1 ? bytes - (size_t)i * chunk : chunk };
        double dt = run_threads(threads, jobs, copy_thread);
        if (dt > 0 && 2.0 * (double)bytes / dt > best) best = 2.0 * (double)bytes / dt;
    }
    free(src);
    free(dst);
    return best * 1e-9;
}

double netc_peak_rss_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "VmHWM:", 6) == 0) {
                fclose(f);
                return strtod(line + 6, NULL) / 1024.0;
            }
        fclose(f);
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) return (double)ru.ru_maxrss / 1024.0;
    return 0;
}

/* ---- one timed step (netc bench, tools/bench.c) ----------------------- */

int netc_bench_compile(BenchStep *b, Graph *g, bool training, bool llvm, bool kernel_entries, const char *who)
{
    char err[2048];
    double c0 = now_s();
    b->g = g;
    b->fp = fuse_graph(g, training);
    b->mp = b->fp ? memplan(g, b->fp) : NULL;
    if (!b->fp || !b->mp) {
        fprintf(stderr, "%s: out of memory while planning\n", who);
        return -1;
    }
    b->m = lower_graph_fused(g, b->fp, training, err, sizeof err);
    if (!b->m) {
        fprintf(stderr, "%s: lowering failed: %s\n", who, err);
        return -1;
    }
    /* one entry per kernel: netc_k<i> calls L3 kernel i, which is fused
     * kernel i (lower_graph_fused makes one L3 kernel per fused kernel) */
    if (kernel_entries && b->m->nkernels != b->fp->nkernels) {
        fprintf(stderr, "%s: %d L3 kernels for %d fused kernels: no per-kernel timing\n", who, b->m->nkernels,
                b->fp->nkernels);
        return -1;
    }
    if (kernel_entries)
        for (int k = 0; k < b->m->nkernels; k++) {
            char en[32];
            snprintf(en, sizeof en, "netc_k%d", k);
            l3_entry_call(l3_entry_new(b->m, en), k);
        }
    const char *entry_name = training ? "netc_train_forward" : "netc_forward";
    if (llvm) {
        b->jit = l3_llvm_jit(b->m, err, sizeof err);
        if (b->jit) b->run = l3_llvm_entry(b->jit, entry_name);
    } else {
        b->cb = cbackend_compile(b->m, err, sizeof err);
        if (b->cb) b->run = cbackend_entry(b->cb, entry_name);
    }
    if (!b->run) {
        fprintf(stderr, "%s: %s backend failed: %s\n", who, llvm ? "llvm" : "c",
                (b->jit || b->cb) ? "no entry function" : err);
        return -1;
    }
    if (kernel_entries) {
        b->kent = calloc((size_t)b->m->nkernels, sizeof *b->kent);
        if (!b->kent) {
            fprintf(stderr, "%s: out of memory\n", who);
            return -1;
        }
        for (int k = 0; k < b->m->nkernels; k++) {
            char en[32];
            snprintf(en, sizeof en, "netc_k%d", k);
            b->kent[k] = llvm ? l3_llvm_entry(b->jit, en) : cbackend_entry(b->cb, en);
            if (!b->kent[k]) {
                fprintf(stderr, "%s: no entry %s\n", who, en);
                return -1;
            }
        }
    }
    b->compile_s = now_s() - c0;
    return 0;
}

int netc_bench_buffers(BenchStep *b, unsigned long long seed, double lr)
{
    Graph *g = b->g;
    const MemPlan *mp = b->mp;
    RefState *s = &b->s;
    /* Memory: the arena, plus one buffer per input, label, hyper input and
     * parameter (optimizer state included); updates write over their
     * parameters, in-place tensors share the bytes they reuse. */
    size_t arena_size = (size_t)((mp->arena_bytes + 63) / 64 * 64);
    if (posix_memalign((void **)&b->arena, 64, arena_size ? arena_size : 64) != 0) {
        b->arena = NULL;
        return -1;
    }
    memset(b->arena, 0, arena_size);
    b->t = calloc((size_t)g->ntensors, sizeof *b->t);
    s->ntensors = g->ntensors;
    s->buf = calloc((size_t)g->ntensors, sizeof *s->buf);
    s->numel = calloc((size_t)g->ntensors, sizeof *s->numel);
    if (!b->t || !s->buf || !s->numel) return -2;
    for (int i = 0; i < g->ntensors; i++) {
        const Tensor *te = &g->tensors[i];
        s->numel[i] = te->shape.rank == 0 ? 1 : shape_numel(&te->shape);
        if (mp->offset[i] >= 0) b->t[i] = b->arena + mp->offset[i];
        else if (te->kind != TK_ACTIVATION) {
            void *buf = NULL;
            size_t bytes = (size_t)s->numel[i] * 4;
            if (posix_memalign(&buf, 64, bytes ? (bytes + 63) / 64 * 64 : 64) != 0) return -2;
            memset(buf, 0, bytes);
            b->t[i] = s->buf[i] = buf;
        }
    }
    for (int i = 0; i < g->ntensors; i++) {
        int j = i, hops = 0;
        while (mp->in_place_of[j] >= 0 && hops++ < g->ntensors) j = mp->in_place_of[j];
        if (j != i) b->t[i] = b->t[j];
    }

    /* Seeded inputs and parameters; running statistics get noise so that
     * inference batchnorm is not the identity. */
    ref_init_params(g, s, seed);
    int64_t classes = 2;
    if (g->noutputs > 0 && g->tensors[g->outputs[0].tensor].shape.rank > 1)
        classes = g->tensors[g->outputs[0].tensor].shape.d[1];
    b->lr = b->step = NULL;
    for (int i = 0; i < g->ntensors; i++) {
        const Tensor *te = &g->tensors[i];
        uint64_t sd = seed * 1000003u + (uint64_t)i;
        if (te->kind == TK_INPUT) ref_fill_uniform(s, i, sd, -1, 1);
        else if (te->kind == TK_WEIGHTMAP) ref_fill_uniform(s, i, sd, 0, 2);
        else if (te->kind == TK_LABEL) {
            RefRng r = { sd * 7 };
            for (int64_t k = 0; k < s->numel[i]; k++) ref_i32(s, i)[k] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
        } else if (te->kind == TK_HYPER) {
            if (strcmp(te->name, "train.lr") == 0) b->lr = s->buf[i];
            else if (strcmp(te->name, "train.step") == 0) b->step = s->buf[i];
        } else if (te->kind == TK_PARAM && te->dtype == DT_F32) {
            if (strstr(te->name, "running_var")) ref_fill_uniform(s, i, sd, 0.5, 1.5);
            else if (strstr(te->name, "running_mean")) ref_fill_uniform(s, i, sd, -0.2, 0.2);
        }
    }
    if (b->lr) *b->lr = (float)lr;
    if (b->step) *b->step = 1;
    return 0;
}

int netc_bench_time(BenchStep *b, long warmup, long iters, double *ms, int (*after_first)(BenchStep *b, void *ctx),
                    void *ctx)
{
    for (long it = 0; it < warmup + iters; it++) {
        double t0 = now_s();
        b->run(b->t);
        double dt = (now_s() - t0) * 1e3;
        if (it >= warmup) ms[it - warmup] = dt;
        if (b->step) *b->step += 1;
        if (it == 0 && after_first) {
            int rc = after_first(b, ctx);
            if (rc) return rc;
        }
    }
    return 0;
}

static int cmpd(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double median(double *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, cmpd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void netc_bench_stats(double *ms, long n, double *med, double *min, double *mean)
{
    double sum = 0, lo = ms[0];
    for (long i = 0; i < n; i++) {
        sum += ms[i];
        lo = ms[i] < lo ? ms[i] : lo;
    }
    *med = median(ms, n);
    *min = lo;
    *mean = sum / (double)n;
}

void netc_bench_step_free(BenchStep *b)
{
    free(b->kent);
    if (b->s.buf)
        for (int i = 0; i < b->s.ntensors; i++) free(b->s.buf[i]);
    free(b->s.buf);
    free(b->s.numel);
    free(b->t);
    free(b->arena);
    if (b->jit) l3_llvm_free(b->jit);
    if (b->cb) cbackend_free(b->cb);
    if (b->m) l3_module_free(b->m);
    memplan_free(b->mp);
    if (b->fp) fusion_plan_free(b->fp);
    memset(b, 0, sizeof *b);
}

void netc_bench_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

/* ---- netc bench -------------------------------------------------------- */

const char *netc_bench_usage =
    "usage: netc bench FILE [--protocol NAME] [--net NAME] [-D KEY=VALUE ...] [--train]\n"
    "                  [--backend llvm|c] [--kernels] [--iters N] [--warmup W] [--threads T]\n"
    "                  [--seed S] [--json]\n"
    "\n"
    "Compiles the net as the runtime runs it (fused kernels, one planned arena; the LLVM\n"
    "JIT or the C backend), fills inputs and parameters from the seed, and times the\n"
    "whole step: inference, or with --train the train block's whole training step\n"
    "(forward, loss, backward, optimizer update). Prints the median and min of N timed\n"
    "calls after W warmup calls, and the achieved GFLOP/s.\n"
    "\n"
    "  --kernels    also time every fused kernel on its own (its own entry function,\n"
    "               called in step order; median over the N repeats): name, the L1 ops\n"
    "               it fuses, ms, GFLOP/s, GB/s moved (tensors read + written) and its\n"
    "               place on the roofline: % of the measured FMA peak if compute-bound,\n"
    "               % of the measured memory bandwidth if memory-bound (the bound is the\n"
    "               lower of peak and bandwidth x FLOPs/byte); sorted by time, with a\n"
    "               total. The FMA peak and the bandwidth are measured in the same run\n"
    "               on the same number of threads. FLOP and byte counts are the\n"
    "               compiler's; every time is measured.\n"
    "  --threads T  threads for the generated code (default: NETC_THREADS, else every CPU)\n"
    "  --json       one JSON object instead of the table\n"
    "Defaults: --backend llvm --iters 10 --warmup 2 --seed 1.\n"
    "\n"
    "Exit status: 0 measured, 1 the net does not compile or build, 2 bad command line.\n";

void netc_bench_options_init(BenchOptions *o)
{
    memset(o, 0, sizeof *o);
    o->backend = "llvm";
    o->iters = 10;
    o->warmup = 2;
    o->seed = 1;
}

int netc_bench_usage_error(const char *who, const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", who);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(run `%s --help` for the options)\n", who);
    return 2;
}

static int parse_long(const char *who, const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "%s: %s takes a whole number from %ld to %ld, not `%s`\n", who, opt, lo, hi, v);
        return 2;
    }
    *out = x;
    return 0;
}

int netc_bench_parse_opt(const char *who, int argc, char **argv, int *i, BenchOptions *o, long max_threads)
{
    const char *s = argv[*i];
    if (strcmp(s, "--protocol") == 0 || strcmp(s, "--net") == 0 || strcmp(s, "--backend") == 0 ||
        strcmp(s, "--iters") == 0 || strcmp(s, "--warmup") == 0 || strcmp(s, "--threads") == 0 ||
        strcmp(s, "--seed") == 0) {
        if (*i + 1 >= argc) return netc_bench_usage_error(who, "%s needs a value", s);
        const char *v = argv[++*i];
        if (strcmp(s, "--protocol") == 0) o->protocol = v;
        else if (strcmp(s, "--net") == 0) o->net = v;
        else if (strcmp(s, "--backend") == 0) {
            if (strcmp(v, "llvm") != 0 && strcmp(v, "c") != 0)
                return netc_bench_usage_error(who, "--backend is llvm or c, not `%s`", v);
            o->backend = v;
        } else if (strcmp(s, "--iters") == 0) return parse_long(who, s, v, 1, 1000000, &o->iters);
        else if (strcmp(s, "--warmup") == 0) return parse_long(who, s, v, 0, 1000000, &o->warmup);
        else if (strcmp(s, "--threads") == 0) return parse_long(who, s, v, 1, max_threads, &o->threads);
        else {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            if (!*v || *end || errno || v[0] == '-')
                return netc_bench_usage_error(who, "--seed takes a whole number, not `%s`", v);
        }
    } else if (strncmp(s, "-D", 2) == 0) {
        const char *kv = s[2] ? s + 2 : (*i + 1 < argc ? argv[++*i] : NULL);
        if (!kv) return netc_bench_usage_error(who, "%s needs KEY=VALUE", "-D");
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv || !eq[1]) return netc_bench_usage_error(who, "-D takes KEY=VALUE, not `%s`", kv);
        if (o->nov >= 64) return netc_bench_usage_error(who, "%s", "too many -D options (64 at most)");
        o->ov[o->nov].key = xstrndup(kv, (size_t)(eq - kv));
        o->ov[o->nov].text = eq + 1;
        o->nov++;
    } else if (s[0] == '-' && s[1]) {
        return netc_bench_usage_error(who, "unknown option `%s`", s);
    } else if (!o->file) {
        o->file = s;
    } else {
        return netc_bench_usage_error(who, "unexpected argument `%s` (one FILE only)", s);
    }
    return 0;
}

typedef struct {
    BenchOptions o;
    bool train, kernels, json;
} BArgs;

static int bparse(int argc, char **argv, BArgs *a)
{
    memset(a, 0, sizeof *a);
    netc_bench_options_init(&a->o);
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(netc_bench_usage, stdout);
            return -1;
        }
        int rc = 0;
        if (strcmp(s, "--train") == 0) a->train = true;
        else if (strcmp(s, "--kernels") == 0) a->kernels = true;
        else if (strcmp(s, "--json") == 0) a->json = true;
        else rc = netc_bench_parse_opt("netc bench", argc, argv, &i, &a->o, 256);
        if (rc) return rc;
    }
    if (!a->o.file) return netc_bench_usage_error("netc bench", "%s", "missing FILE (a .net file)");
    return 0;
}

typedef struct {
    int k;
    double ms, flops, bytes;
    char ops[160];
} KRow;

static int cmp_krow(const void *x, const void *y)
{
    const KRow *a = x, *b = y;
    return a->ms > b->ms ? -1 : a->ms < b->ms;
}

/* "conv+batchnorm+relu": the op of every node the kernel computes, in
 * order, runs of the same op written once with a count (sgd_update x42). */
static void kernel_ops(const Graph *g, const Kernel *K, char *out, size_t n)
{
    size_t used = 0;
    out[0] = 0;
    for (int j = 0; j < K->nnodes;) {
        int op = g->nodes[K->nodes[j]].op;
        int run = 1;
        while (j + run < K->nnodes && (int)g->nodes[K->nodes[j + run]].op == op) run++;
        const char *name = op_table[op].name;
        if (op == OP_GRAD) name = "grad";
        int w = run > 1 ? snprintf(out + used, n - used, "%s%s x%d", used ? "+" : "", name, run)
                        : snprintf(out + used, n - used, "%s%s", used ? "+" : "", name);
        if (w < 0 || (size_t)w >= n - used) {
            if (n > 4) snprintf(out + n - 4, 4, "...");
            return;
        }
        used += (size_t)w;
        j += run;
    }
}

int netc_bench_main(int argc, char **argv)
{
    BArgs a;
    int rc = bparse(argc, argv, &a);
    if (rc) {
        netc_overrides_free(a.o.ov, a.o.nov);
        return rc < 0 ? 0 : rc;
    }
    bool llvm = strcmp(a.o.backend, "llvm") == 0;
    int status = 1;
    Diag d;
    diag_init(&d, stderr);
    Program *p = NULL;
    Graph *g = NULL;
    TrainSpec *ts = NULL;
    BenchStep b = { 0 };
    double *times = NULL, *ktimes = NULL;
    KRow *rows = NULL;

    CompileOptions co = { .protocol = a.o.protocol, .net = a.o.net, .train = a.train, .autodiff = a.train,
                          .ov = a.o.ov, .nov = a.o.nov, .train_out = a.train ? &ts : NULL };
    g = netc_load_compile(&d, "netc bench", a.o.file, &co, &p);
    if (!p) goto out;
    if (!g || d.nerrors) {
        fprintf(stderr, "netc bench: %s does not compile (%d error%s)\n", a.o.file, d.nerrors, d.nerrors == 1 ? "" : "s");
        goto out;
    }
    if (a.train && (!ts || !ts->optimizer.name || g->nlosses == 0)) {
        fprintf(stderr, "netc bench: %s: no training step for %s on %s (no train block?)\n", a.o.file, g->net_name,
                g->protocol_name);
        goto out;
    }
    if (a.o.threads > 0) netc_set_threads((int)a.o.threads);
    int threads = netc_threads();

    if (netc_bench_compile(&b, g, a.train, llvm, a.kernels, "netc bench") != 0) goto out;
    bool per_kernel = a.kernels;
    const FusionPlan *fp = b.fp;
    const L3Module *m = b.m;
    const RefState *s = &b.s;
    if (netc_bench_buffers(&b, a.o.seed, ts ? ts->optimizer.num[0] : 0.01) != 0) goto oom;

    /* the whole step */
    times = calloc((size_t)a.o.iters, sizeof *times);
    if (!times) goto oom;
    netc_bench_time(&b, a.o.warmup, a.o.iters, times, NULL, NULL);
    double med_ms, min_ms, mean_ms;
    netc_bench_stats(times, a.o.iters, &med_ms, &min_ms, &mean_ms);
    double flops = graph_flops(g);

    /* kernel by kernel: one repeat = every kernel once, in step order */
    int nk = fp->nkernels;
    double peak = 0, bw = 0, ksum = 0, rss_mb = netc_peak_rss_mb();   /* before the bandwidth test's buffers */
    const char *isa = "?";
    if (per_kernel) {
        ktimes = calloc((size_t)nk * (size_t)a.o.iters, sizeof *ktimes);
        rows = calloc((size_t)(nk > 0 ? nk : 1), sizeof *rows);
        if (!ktimes || !rows) goto oom;
        for (long it = 0; it < a.o.iters; it++) {
            for (int k = 0; k < nk; k++) {
                double t0 = now_s();
                b.kent[k](b.t);
                ktimes[(size_t)k * (size_t)a.o.iters + (size_t)it] = (now_s() - t0) * 1e3;
            }
            if (b.step) *b.step += 1;
        }
        for (int k = 0; k < nk; k++) {
            const Kernel *K = &fp->kernels[k];
            KRow *r = &rows[k];
            r->k = k;
            r->ms = median(ktimes + (size_t)k * (size_t)a.o.iters, a.o.iters);
            for (int j = 0; j < K->nnodes; j++)
                if (!(fp->inlined && fp->inlined[K->nodes[j]])) r->flops += node_flops(g, &g->nodes[K->nodes[j]]);
            for (int j = 0; j < K->nins; j++) r->bytes += 4.0 * (double)s->numel[K->ins[j]];
            for (int j = 0; j < K->nouts; j++) r->bytes += 4.0 * (double)s->numel[K->outs[j]];
            kernel_ops(g, K, r->ops, sizeof r->ops);
            ksum += r->ms;
        }
        qsort(rows, (size_t)nk, sizeof *rows, cmp_krow);
        peak = netc_peak_fma_gflops(threads, &isa);
        bw = netc_peak_mem_gbs(threads);
    }

    FILE *o = stdout;
    double gfl = med_ms > 0 ? flops / (med_ms * 1e6) : 0;
    if (a.json) {
        fputs("{\"net\": ", o);
        netc_bench_json_str(o, g->net_name);
        fputs(", \"protocol\": ", o);
        netc_bench_json_str(o, g->protocol_name);
        fprintf(o, ", \"mode\": \"%s\", \"backend\": \"%s\", \"threads\": %d, \"kernels\": %d, \"arena_bytes\": %lld",
                a.train ? "train" : "infer", a.o.backend, threads, nk, (long long)b.mp->arena_bytes);
        fprintf(o, ", \"compile_s\": %.2f, \"warmup\": %ld, \"iters\": %ld, \"flops\": %.6g, \"median_ms\": %.4f"
                   ", \"min_ms\": %.4f, \"gflops\": %.3f, \"peak_rss_mb\": %.1f",
                b.compile_s, a.o.warmup, a.o.iters, flops, med_ms, min_ms, gfl, rss_mb);
        if (per_kernel) {
            fprintf(o, ", \"peak_isa\": \"%s\", \"peak_fma_gflops\": %.2f, \"peak_mem_gbs\": %.2f, \"kernel_sum_ms\": %.4f"
                       ", \"kernel_rows\": [",
                    isa, peak, bw, ksum);
            for (int i = 0; i < nk; i++) {
                const KRow *r = &rows[i];
                const Kernel *K = &fp->kernels[r->k];
                double kg = r->ms > 0 ? r->flops / (r->ms * 1e6) : 0, kb = r->ms > 0 ? r->bytes / (r->ms * 1e6) : 0;
                bool mem = bw * (r->flops / (r->bytes > 0 ? r->bytes : 1)) < peak;
                fprintf(o, "%s{\"index\": %d, \"name\": \"%s\", \"kind\": \"%s\", \"ops\": ", i ? ", " : "", r->k,
                        m->kernels[r->k].name, kernel_kind_name(K->kind));
                netc_bench_json_str(o, r->ops);
                fprintf(o, ", \"median_ms\": %.4f, \"flops\": %.6g, \"bytes\": %.6g, \"gflops\": %.3f, \"gbs\": %.3f"
                           ", \"bound\": \"%s\", \"pct_of_bound\": %.2f}",
                        r->ms, r->flops, r->bytes, kg, kb, mem ? "memory" : "compute",
                        mem ? (bw > 0 ? 100 * kb / bw : 0) : (peak > 0 ? 100 * kg / peak : 0));
            }
            fputc(']', o);
        }
        fputs("}\n", o);
    } else {
        fprintf(o, "%s on %s, %s, %s backend, %d thread%s: %d kernels, arena %.1f MiB, compiled in %.1f s\n",
                g->net_name, g->protocol_name, a.train ? "whole training step" : "inference", a.o.backend, threads,
                threads == 1 ? "" : "s", nk, (double)b.mp->arena_bytes / 1048576.0, b.compile_s);
        fprintf(o, "step: median %.3f ms, min %.3f ms over %ld runs after %ld warmup; %.3f GFLOP, %.2f GFLOP/s\n", med_ms,
                min_ms, a.o.iters, a.o.warmup, flops * 1e-9, gfl);
        if (per_kernel) {
            fprintf(o, "machine (measured, %d thread%s): FMA peak %.1f GFLOP/s (%s), memory bandwidth %.1f GB/s "
                       "(memcpy, read + write)\n",
                    threads, threads == 1 ? "" : "s", peak, isa, bw);
            fprintf(o, "\n%-40s %-34s %9s %6s %9s %8s %8s  %s\n", "kernel", "L1 ops", "ms", "%time", "GFLOP/s", "GB/s",
                    "roofline", "bound");
            for (int i = 0; i < nk; i++) {
                const KRow *r = &rows[i];
                double kg = r->ms > 0 ? r->flops / (r->ms * 1e6) : 0, kb = r->ms > 0 ? r->bytes / (r->ms * 1e6) : 0;
                bool mem = bw * (r->flops / (r->bytes > 0 ? r->bytes : 1)) < peak;
                double pct = mem ? (bw > 0 ? 100 * kb / bw : 0) : (peak > 0 ? 100 * kg / peak : 0);
                char ops[35];
                snprintf(ops, sizeof ops, "%.34s", r->ops);
                if (strlen(r->ops) > 34) memcpy(ops + 31, "...", 4);
                fprintf(o, "%-40.40s %-34s %9.3f %5.1f%% %9.2f %8.2f %7.1f%%  %s\n", m->kernels[r->k].name, ops, r->ms,
                        ksum > 0 ? 100 * r->ms / ksum : 0, kg, kb, pct, mem ? "memory" : "compute");
            }
            fprintf(o, "%-40s %-34s %9.3f %5.1f%% %9.2f\n", "total (kernels timed one by one)", "", ksum, 100.0,
                    ksum > 0 ? flops / (ksum * 1e6) : 0);
            fprintf(o, "roofline: %% of the FMA peak (compute-bound kernels) or of the memory bandwidth (memory-bound:\n"
                       "bandwidth x FLOP/byte < peak); FLOPs and bytes (tensors read + written) are the compiler's counts\n");
        }
    }
    status = fflush(o) == 0 ? 0 : 1;
    goto out;

oom:
    fprintf(stderr, "netc bench: out of memory\n");
out:
    free(rows);
    free(ktimes);
    free(times);
    netc_bench_step_free(&b);
    train_free(ts);
    graph_free(g);
    program_free(p);
    diag_free(&d);
    netc_overrides_free(a.o.ov, a.o.nov);
    return status;
}
