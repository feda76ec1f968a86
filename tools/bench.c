/* tools/bench.c — time netc's generated code for one net (build/bench).
 *
 *   build/bench netdefs/unet2d.net --protocol t1_brain_axial -D base=16 \
 *       --mode infer|train --backend llvm|c --iters N --warmup W --threads T
 *
 * Compiles the net exactly as the runtime will run it: inference (eval-mode
 * batchnorm), or the whole training step of the train block (forward, loss,
 * backward, the train block's optimizer update); fuses it (fuse.h), plans one
 * arena (memplan.h), lowers the fused plan to L3 (lower.h) and JIT-compiles
 * it with LLVM (l3_llvm.h) or through the C printer (cbackend.h).  Inputs,
 * labels and parameters are filled from a seed; then W warmup and N timed
 * calls of the entry function.  A training step updates the parameters in
 * place, as the trainer does, and train.step counts up.  Compiling, seeding
 * and timing are `netc bench`'s own (netc_bench_compile, netc_bench_buffers,
 * netc_bench_time in runtime/bench_kernels.h); this tool adds the JSON line
 * tools/bench.py reads and --dump.
 *
 * Prints one JSON line: net, mode, backend, shapes, kernels, arena bytes,
 * median and min milliseconds per call and GFLOP/s (graph_flops, which
 * counts the backward and update nodes of a training step too).
 *
 * --dump DIR writes, for tools/bench.py's cross-check against PyTorch,
 * every input, label and parameter before the first call (DIR/in<id>.bin)
 * and every output, loss and parameter after it (DIR/out<id>.bin), raw
 * float32 / int32, row-major, tensor ids as in `netc graph --json`.
 *
 * The generated code runs on one thread unless the thread pool
 * (runtime/pool.h) is linked in; the JSON says how many it used
 * ("threads_used").
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench_kernels.h"
#include "driver.h"

/* The thread pool (runtime/pool.h) is referenced weakly: bench builds and
 * runs single-threaded while libnetc.a has no pool, and sets the thread
 * count once it does (the backends' reference to netc_parallel_for links
 * the pool in). */
#if defined(__has_include)
#if __has_include("pool.h")
#include "pool.h"
#endif
#endif
void netc_set_threads(int k) __attribute__((weak));
int netc_threads(void) __attribute__((weak));

static const char *usage =
    "usage: bench FILE [--protocol P] [--net N] [-D KEY=VALUE ...] [--mode infer|train]\n"
    "             [--backend llvm|c] [--iters N] [--warmup W] [--threads T] [--seed S] [--dump DIR]\n"
    "       bench --peak [--threads T]\n"
    "\n"
    "Compiles the net (inference, or the train block's whole training step with --mode train),\n"
    "fuses, plans one arena, JIT-compiles it (LLVM, or the C backend), runs W warmup and N\n"
    "timed iterations and prints one JSON line with the median and min time per iteration.\n"
    "The JSON ends with the process's peak resident set (VmHWM), \"peak_rss_mb\".\n"
    "--peak measures the machine instead: FMA peak GFLOP/s and memcpy bandwidth GB/s\n"
    "on 1 thread and on T threads (one JSON line).\n"
    "Defaults: --mode infer --backend llvm --iters 10 --warmup 2 --threads 1 --seed 1.\n";

typedef struct {
    BenchOptions o;
    const char *mode, *dump;
    bool peak;
} Args;

/* 0: run; -1: --help printed; 2: usage error (reported). */
static int parse_args(int argc, char **argv, Args *a)
{
    memset(a, 0, sizeof *a);
    netc_bench_options_init(&a->o);
    a->o.threads = 1;
    a->mode = "infer";
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(usage, stdout);
            return -1;
        }
        if (strcmp(s, "--peak") == 0) {
            a->peak = true;
        } else if (strcmp(s, "--mode") == 0 || strcmp(s, "--dump") == 0) {
            if (i + 1 >= argc) return netc_bench_usage_error("bench", "%s needs a value", s);
            const char *v = argv[++i];
            if (strcmp(s, "--dump") == 0) a->dump = v;
            else if (strcmp(v, "infer") != 0 && strcmp(v, "train") != 0)
                return netc_bench_usage_error("bench", "--mode is infer or train, not `%s`", v);
            else a->mode = v;
        } else {
            int rc = netc_bench_parse_opt("bench", argc, argv, &i, &a->o, 1024);
            if (rc) return rc;
        }
    }
    if (!a->o.file && !a->peak) return netc_bench_usage_error("bench", "%s", "missing FILE (a .net file)");
    return 0;
}

static void json_shape(FILE *f, const Shape *s)
{
    fputc('[', f);
    for (int k = 0; k < s->rank; k++) fprintf(f, "%s%lld", k ? ", " : "", (long long)s->d[k]);
    fputc(']', f);
}

static void json_ports(FILE *f, const Graph *g, const GraphPort *p, int n)
{
    fputc('{', f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        netc_bench_json_str(f, p[i].name);
        fputs(": ", f);
        json_shape(f, &g->tensors[p[i].tensor].shape);
    }
    fputc('}', f);
}

static int dump_tensor(const char *dir, const char *prefix, int id, const void *data, int64_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s%d.bin", dir, prefix, id);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t w = fwrite(data, 4, (size_t)n, f);
    if (fclose(f) != 0 || w != (size_t)n) {
        fprintf(stderr, "bench: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

/* After the first call: every output, loss and parameter (--dump). */
static int dump_outputs(BenchStep *b, void *dir)
{
    const Graph *g = b->g;
    for (int k = 0; k < g->noutputs; k++) {
        int tt = g->outputs[k].tensor;
        if (dump_tensor(dir, "out", tt, b->t[tt], b->s.numel[tt]) != 0) return -1;
    }
    for (int k = 0; k < g->nlosses; k++)
        if (dump_tensor(dir, "out", g->losses[k].tensor, b->t[g->losses[k].tensor], 1) != 0) return -1;
    for (int k = 0; k < g->nparams; k++) {
        int tt = g->params[k].tensor;
        if (dump_tensor(dir, "out", tt, b->t[tt], b->s.numel[tt]) != 0) return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    Args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) {
        netc_overrides_free(a.o.ov, a.o.nov);
        return rc < 0 ? 0 : rc;
    }
    if (a.peak) {
        const char *isa = "?";
        double f1 = netc_peak_fma_gflops(1, &isa), m1 = netc_peak_mem_gbs(1);
        double ft = a.o.threads > 1 ? netc_peak_fma_gflops((int)a.o.threads, NULL) : f1;
        double mt = a.o.threads > 1 ? netc_peak_mem_gbs((int)a.o.threads) : m1;
        printf("{\"isa\": \"%s\", \"threads\": %ld, \"fma_gflops_1t\": %.2f, \"fma_gflops\": %.2f, "
               "\"mem_gbs_1t\": %.2f, \"mem_gbs\": %.2f}\n", isa, a.o.threads, f1, ft, m1, mt);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    bool training = strcmp(a.mode, "train") == 0;
    bool llvm = strcmp(a.o.backend, "llvm") == 0;
    int status = 1;
    Diag d;
    diag_init(&d, stderr);
    d.color = false;
    Program *p = NULL;
    Graph *g = NULL;
    TrainSpec *ts = NULL;
    BenchStep b = { 0 };
    double *times = NULL;

    CompileOptions co = { .protocol = a.o.protocol, .net = a.o.net, .train = training, .autodiff = training,
                          .ov = a.o.ov, .nov = a.o.nov, .train_out = training ? &ts : NULL };
    g = netc_load_compile(&d, "bench", a.o.file, &co, &p);
    if (!p) goto out;
    if (!g || d.nerrors) {
        fprintf(stderr, "bench: %s does not compile (%d error%s)\n", a.o.file, d.nerrors, d.nerrors == 1 ? "" : "s");
        goto out;
    }
    if (training && (!ts || !ts->optimizer.name || g->nlosses == 0)) {
        fprintf(stderr, "bench: %s: no training step for %s on %s\n", a.o.file, g->net_name, g->protocol_name);
        goto out;
    }
    long threads_used = 1;   /* without the pool the generated code runs on this thread */
    if (netc_set_threads && netc_threads) {
        netc_set_threads((int)a.o.threads);
        threads_used = netc_threads();
    }

    if (netc_bench_compile(&b, g, training, llvm, false, "bench") != 0) goto out;
    double compile_ms = b.compile_s * 1e3;
    const FusionPlan *fp = b.fp;
    const MemPlan *mp = b.mp;
    int r = netc_bench_buffers(&b, a.o.seed, ts ? ts->optimizer.num[0] : 0.0);
    if (r == -1) {
        fprintf(stderr, "bench: cannot allocate the %lld-byte arena\n", (long long)mp->arena_bytes);
        goto out;
    }
    if (r) goto oom;

    if (a.dump) {
        if (mkdir(a.dump, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "bench: cannot create %s: %s\n", a.dump, strerror(errno));
            goto out;
        }
        for (int i = 0; i < g->ntensors; i++)
            if (b.s.buf[i] && dump_tensor(a.dump, "in", i, b.s.buf[i], b.s.numel[i]) != 0) goto out;
    }

    times = calloc((size_t)a.o.iters, sizeof *times);
    if (!times) goto oom;
    if (netc_bench_time(&b, a.o.warmup, a.o.iters, times, a.dump ? dump_outputs : NULL, (void *)a.dump) != 0) goto out;
    double median, min_ms, mean_ms;
    netc_bench_stats(times, a.o.iters, &median, &min_ms, &mean_ms);
    double flops = graph_flops(g);
    int nupdates = 0;
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == OP_SGD_UPDATE || g->nodes[i].op == OP_ADAM_UPDATE) nupdates++;

    FILE *o = stdout;
    fputs("{\"net\": ", o);
    netc_bench_json_str(o, g->net_name);
    fputs(", \"protocol\": ", o);
    netc_bench_json_str(o, g->protocol_name);
    fprintf(o, ", \"mode\": \"%s\", \"backend\": \"%s\", \"threads\": %ld, \"threads_used\": %ld", a.mode, a.o.backend,
            a.o.threads, threads_used);
    fputs(", \"inputs\": ", o);
    json_ports(o, g, g->inputs, g->ninputs);
    fputs(", \"outputs\": ", o);
    json_ports(o, g, g->outputs, g->noutputs);
    fprintf(o, ", \"params\": %lld, \"nodes\": %d, \"updates\": %d, \"kernels\": %d", (long long)graph_param_count(g, true),
            g->nnodes, nupdates, fp->nkernels);
    fprintf(o, ", \"arena_bytes\": %lld, \"persistent_bytes\": %lld, \"memory_strategy\": ", (long long)mp->arena_bytes,
            (long long)mp->persistent_bytes);
    netc_bench_json_str(o, mp->strategy);
    if (ts) {
        fputs(", \"optimizer\": {\"name\": ", o);
        netc_bench_json_str(o, ts->optimizer.name);
        if (strcmp(ts->optimizer.name, "sgd") == 0)
            fprintf(o, ", \"lr\": %.17g, \"momentum\": %.17g, \"nesterov\": %s, \"weight_decay\": %.17g}",
                    ts->optimizer.num[0], ts->optimizer.num[1], ts->optimizer.num[2] != 0 ? "true" : "false",
                    ts->optimizer.num[3]);
        else
            fprintf(o, ", \"lr\": %.17g, \"beta1\": %.17g, \"beta2\": %.17g, \"eps\": %.17g, \"weight_decay\": %.17g}",
                    ts->optimizer.num[0], ts->optimizer.num[1], ts->optimizer.num[2], ts->optimizer.num[3],
                    ts->optimizer.num[4]);
    }
    fprintf(o, ", \"flops\": %.6g, \"compile_ms\": %.1f, \"warmup\": %ld, \"iters\": %ld", flops, compile_ms, a.o.warmup,
            a.o.iters);
    fprintf(o, ", \"median_ms\": %.4f, \"min_ms\": %.4f, \"mean_ms\": %.4f, \"gflops\": %.3f, \"peak_rss_mb\": %.1f}\n",
            median, min_ms, mean_ms, median > 0 ? flops / (median * 1e6) : 0.0, netc_peak_rss_mb());
    status = fflush(o) == 0 ? 0 : 1;
    goto out;

oom:
    fprintf(stderr, "bench: out of memory\n");
out:
    free(times);
    netc_bench_step_free(&b);
    train_free(ts);
    graph_free(g);
    program_free(p);
    diag_free(&d);
    netc_overrides_free(a.o.ov, a.o.nov);
    return status;
}
