/* bench_kernels.h — measuring generated code: the machine's roofline and
 * `netc bench` (whole-step and per-kernel timings).
 *
 * The roofline is measured, never taken from a datasheet: the FMA peak is a
 * loop of independent vector FMAs (AVX-512, else AVX2+FMA, else scalar
 * fmaf, chosen at run time), the memory bandwidth a large memcpy; both run
 * on T threads at once (one pthread each) and report the best of a few
 * repeats.
 */
#ifndef NETC_BENCH_KERNELS_H
#define NETC_BENCH_KERNELS_H

#include <stdbool.h>
#include <stdio.h>

#include "cbackend.h"
#include "driver.h"
#include "fuse.h"
#include "graph.h"
#include "l3_llvm.h"
#include "memplan.h"
#include "ref.h"

/* GFLOP/s (an FMA = 2 FLOPs) of `threads` threads running the widest FMA
 * loop the CPU supports; *isa (may be NULL) gets its name ("avx512",
 * "avx2", "scalar").  About 0.2 s. */
double netc_peak_fma_gflops(int threads, const char **isa);
/* GB/s moved (bytes read + bytes written) by `threads` threads copying a
 * 256 MiB buffer (128 MiB read, 128 MiB written) in parallel.  About 0.3 s. */
double netc_peak_mem_gbs(int threads);
/* The process's peak resident set (VmHWM) in MiB; getrusage as fallback. */
double netc_peak_rss_mb(void);

/* ---- one timed step: shared by `netc bench` and tools/bench.c -------- */

/* The command-line options both take. */
typedef struct {
    const char *file, *protocol, *net, *backend;   /* backend: "llvm" or "c" */
    long iters, warmup, threads;
    unsigned long long seed;
    Override ov[64];                               /* -D KEY=VALUE (keys: netc_overrides_free) */
    int nov;
} BenchOptions;

/* Defaults: --backend llvm --iters 10 --warmup 2 --seed 1, threads 0. */
void netc_bench_options_init(BenchOptions *o);
/* Prints "WHO: " FMT (with ARG) and "(run `WHO --help` for the options)"
 * on stderr; returns 2 (the exit status of a bad command line). */
int netc_bench_usage_error(const char *who, const char *fmt, const char *arg);
/* Takes argv[*i] as one of the shared options (--protocol, --net, --backend,
 * --iters, --warmup, --threads 1 .. max_threads, --seed, -D KEY=VALUE) or
 * as FILE, moving *i past its value; anything else is a usage error.
 * Returns 0, or 2 after reporting a usage error as WHO. */
int netc_bench_parse_opt(const char *who, int argc, char **argv, int *i, BenchOptions *o, long max_threads);

/* A net compiled exactly as the runtime runs it (fused kernels, one planned
 * arena, the LLVM JIT or the C backend) with its buffers allocated and
 * seeded.  Zero-initialise, then netc_bench_compile, netc_bench_buffers,
 * netc_bench_time; netc_bench_step_free at the end (also after a failure). */
typedef struct {
    Graph *g;                 /* borrowed */
    FusionPlan *fp;
    MemPlan *mp;
    L3Module *m;
    L3Llvm *jit;              /* the LLVM backend, or */
    CBackend *cb;             /* the C backend */
    NetcEntry run;            /* the step: netc_forward, or netc_train_forward */
    NetcEntry *kent;          /* with kernel entries: netc_k<i> calls fused kernel i only */
    double compile_s;         /* fuse + plan + lower + JIT (+ entry look-ups) */
    void **t;                 /* t[i] points at tensor i (the entries' argument) */
    char *arena;
    RefState s;               /* s.buf: every non-arena buffer; s.numel: every tensor's element count */
    float *lr, *step;         /* the train.lr and train.step hyper inputs, or NULL */
} BenchStep;

/* Fuses g (training: the whole training step), plans one arena, lowers and
 * JIT-compiles it (llvm, else the C backend).  With kernel_entries the module
 * gets one extra entry per fused kernel (b->kent).  Errors are printed as
 * "WHO: ..." on stderr; returns 0 or -1. */
int netc_bench_compile(BenchStep *b, Graph *g, bool training, bool llvm, bool kernel_entries, const char *who);
/* Allocates the arena (64-byte aligned, zeroed) and one buffer per non-arena
 * tensor that is not an activation (in-place tensors share their bytes), and
 * fills them from `seed`: parameters (ref_init_params), inputs uniform in
 * [-1, 1], weight maps in [0, 2], labels below the class count, running
 * statistics with noise (so that inference batchnorm is not the identity);
 * train.lr = lr, train.step = 1.  Prints nothing; returns 0, -1 when the arena
 * cannot be allocated, -2 when another buffer cannot. */
int netc_bench_buffers(BenchStep *b, unsigned long long seed, double lr);
/* Runs the step warmup + iters times, counting train.step up after each
 * call, and stores the milliseconds of the last iters calls in ms[].  After
 * the first call, `after_first` (may be NULL) runs; its nonzero return stops
 * the loop and is returned.  Returns 0 otherwise. */
int netc_bench_time(BenchStep *b, long warmup, long iters, double *ms, int (*after_first)(BenchStep *b, void *ctx),
                    void *ctx);
/* Median, min and mean of ms[0..n) (n >= 1); sorts ms. */
void netc_bench_stats(double *ms, long n, double *median, double *min, double *mean);
/* Frees what compile and buffers made (not b->g) and zeroes b. */
void netc_bench_step_free(BenchStep *b);
/* s as a JSON string (quotes, backslashes and control characters escaped). */
void netc_bench_json_str(FILE *f, const char *s);

/* `netc bench FILE ...`: argc/argv after the command name. */
int netc_bench_main(int argc, char **argv);
extern const char *netc_bench_usage;

#endif
