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
 * place, as the trainer does, and train.step counts up.
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
#include <time.h>

#include "bench_kernels.h"
#include "cbackend.h"
#include "driver.h"
#include "fuse.h"
#include "graph.h"
#include "l3_llvm.h"
#include "lower.h"
#include "memplan.h"
#include "ref.h"
#include "util.h"

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
    const char *file, *protocol, *net, *mode, *backend, *dump;
    bool peak;
    long iters, warmup, threads;
    unsigned long long seed;
    Override ov[64];
    int nov;
} Args;

static int bad(const char *fmt, const char *arg)
{
    fputs("bench: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n(run `bench --help` for the options)\n", stderr);
    return 2;
}

static int parse_long(const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "bench: %s takes a whole number from %ld to %ld, not `%s`\n", opt, lo, hi, v);
        return 2;
    }
    *out = x;
    return 0;
}

/* 0: run; -1: --help printed; 2: usage error (reported). */
static int parse_args(int argc, char **argv, Args *a)
{
    memset(a, 0, sizeof *a);
    a->mode = "infer";
    a->backend = "llvm";
    a->iters = 10;
    a->warmup = 2;
    a->threads = 1;
    a->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(usage, stdout);
            return -1;
        }
        if (strcmp(s, "--peak") == 0) {
            a->peak = true;
            continue;
        }
        if (strcmp(s, "--protocol") == 0 || strcmp(s, "--net") == 0 || strcmp(s, "--mode") == 0 ||
            strcmp(s, "--backend") == 0 || strcmp(s, "--iters") == 0 || strcmp(s, "--warmup") == 0 ||
            strcmp(s, "--threads") == 0 || strcmp(s, "--seed") == 0 || strcmp(s, "--dump") == 0) {
            if (i + 1 >= argc) return bad("%s needs a value", s);
            const char *v = argv[++i];
            int rc = 0;
            if (strcmp(s, "--protocol") == 0) a->protocol = v;
            else if (strcmp(s, "--net") == 0) a->net = v;
            else if (strcmp(s, "--dump") == 0) a->dump = v;
            else if (strcmp(s, "--mode") == 0) {
                if (strcmp(v, "infer") != 0 && strcmp(v, "train") != 0) return bad("--mode is infer or train, not `%s`", v);
                a->mode = v;
            } else if (strcmp(s, "--backend") == 0) {
                if (strcmp(v, "llvm") != 0 && strcmp(v, "c") != 0) return bad("--backend is llvm or c, not `%s`", v);
                a->backend = v;
            } else if (strcmp(s, "--iters") == 0) rc = parse_long(s, v, 1, 1000000, &a->iters);
            else if (strcmp(s, "--warmup") == 0) rc = parse_long(s, v, 0, 1000000, &a->warmup);
            else if (strcmp(s, "--threads") == 0) rc = parse_long(s, v, 1, 1024, &a->threads);
            else {
                char *end;
                errno = 0;
                a->seed = strtoull(v, &end, 10);
                if (!*v || *end || errno || v[0] == '-') return bad("--seed takes a whole number, not `%s`", v);
            }
            if (rc) return rc;
        } else if (strncmp(s, "-D", 2) == 0) {
            const char *kv = s[2] ? s + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (!kv) return bad("%s needs KEY=VALUE", "-D");
            const char *eq = strchr(kv, '=');
            if (!eq || eq == kv || !eq[1]) return bad("-D takes KEY=VALUE, not `%s`", kv);
            if (a->nov >= 64) return bad("%s", "too many -D options (64 at most)");
            a->ov[a->nov].key = xstrndup(kv, (size_t)(eq - kv));
            a->ov[a->nov].text = eq + 1;
            a->nov++;
        } else if (s[0] == '-' && s[1]) {
            return bad("unknown option `%s`", s);
        } else if (!a->file) {
            a->file = s;
        } else {
            return bad("unexpected argument `%s` (one FILE only)", s);
        }
    }
    if (!a->file && !a->peak) return bad("%s", "missing FILE (a .net file)");
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static int64_t numel(const Tensor *te) { return te->shape.rank == 0 ? 1 : shape_numel(&te->shape); }

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
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
        json_str(f, p[i].name);
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

/* The train block of the compiled graph's net and protocol, resolved again
 * for its optimizer's hyperparameters (the driver frees its own copy). */
static TrainSpec *train_spec(Program *p, const Graph *g, Override *ov, int nov)
{
    char key[512];
    snprintf(key, sizeof key, "%s on %s", g->net_name, g->protocol_name);
    Ast *td = program_find(&p->trains, key), *pd = program_find(&p->protocols, g->protocol_name);
    if (!td || !pd) return NULL;
    Protocol *pr = protocol_resolve(p, pd, ov, nov);
    if (!pr) return NULL;
    TrainSpec *ts = train_resolve(p, td, pr, ov, nov);
    protocol_free(pr);
    return ts;
}

int main(int argc, char **argv)
{
    Args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) {
        for (int i = 0; i < a.nov; i++) free(a.ov[i].key);
        return rc < 0 ? 0 : rc;
    }
    if (a.peak) {
        const char *isa = "?";
        double f1 = netc_peak_fma_gflops(1, &isa), m1 = netc_peak_mem_gbs(1);
        double ft = a.threads > 1 ? netc_peak_fma_gflops((int)a.threads, NULL) : f1;
        double mt = a.threads > 1 ? netc_peak_mem_gbs((int)a.threads) : m1;
        printf("{\"isa\": \"%s\", \"threads\": %ld, \"fma_gflops_1t\": %.2f, \"fma_gflops\": %.2f, "
               "\"mem_gbs_1t\": %.2f, \"mem_gbs\": %.2f}\n", isa, a.threads, f1, ft, m1, mt);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    bool training = strcmp(a.mode, "train") == 0;
    bool llvm = strcmp(a.backend, "llvm") == 0;
    int status = 1;
    Diag d;
    diag_init(&d, stderr);
    d.color = false;
    Program *p = program_load(&d, a.file);
    Graph *g = NULL;
    TrainSpec *ts = NULL;
    FusionPlan *fp = NULL;
    MemPlan *mp = NULL;
    L3Module *m = NULL;
    L3Llvm *jit = NULL;
    CBackend *cb = NULL;
    void **t = NULL;
    char *arena = NULL;
    double *times = NULL;
    RefState s = { 0 };
    char err[2048];

    if (!p) {
        fprintf(stderr, "bench: cannot read %s: %s\n", a.file, diag_load_strerror(errno));
        goto out;
    }
    CompileOptions co = { .protocol = a.protocol, .net = a.net, .train = training, .autodiff = training,
                          .ov = a.ov, .nov = a.nov };
    g = netc_compile(p, &co);
    if (!g || d.nerrors) {
        fprintf(stderr, "bench: %s does not compile (%d error%s)\n", a.file, d.nerrors, d.nerrors == 1 ? "" : "s");
        goto out;
    }
    if (training) {
        ts = train_spec(p, g, a.ov, a.nov);
        if (!ts || d.nerrors || !ts->optimizer.name || g->nlosses == 0) {
            fprintf(stderr, "bench: %s: no training step for %s on %s\n", a.file, g->net_name, g->protocol_name);
            goto out;
        }
    }
    long threads_used = 1;   /* without the pool the generated code runs on this thread */
    if (netc_set_threads && netc_threads) {
        netc_set_threads((int)a.threads);
        threads_used = netc_threads();
    }

    double c0 = now_ms();
    fp = fuse_graph(g, training);
    mp = fp ? memplan(g, fp) : NULL;
    if (!fp || !mp) {
        fprintf(stderr, "bench: out of memory while planning\n");
        goto out;
    }
    m = lower_graph_fused(g, fp, training, err, sizeof err);
    if (!m) {
        fprintf(stderr, "bench: lowering failed: %s\n", err);
        goto out;
    }
    const char *entry_name = training ? "netc_train_forward" : "netc_forward";
    NetcEntry run = NULL;
    if (llvm) {
        jit = l3_llvm_jit(m, err, sizeof err);
        if (jit) run = l3_llvm_entry(jit, entry_name);
    } else {
        cb = cbackend_compile(m, err, sizeof err);
        if (cb) run = cbackend_entry(cb, entry_name);
    }
    if (!run) {
        fprintf(stderr, "bench: %s backend failed: %s\n", a.backend, (jit || cb) ? "no entry function" : err);
        goto out;
    }
    double compile_ms = now_ms() - c0;

    /* Memory: the arena, plus one buffer per input, label, hyper input and
     * parameter (optimizer state included); updates write over their
     * parameters, in-place tensors share the bytes they reuse. */
    size_t arena_size = (size_t)((mp->arena_bytes + 63) / 64 * 64);
    if (posix_memalign((void **)&arena, 64, arena_size ? arena_size : 64) != 0) {
        arena = NULL;
        fprintf(stderr, "bench: cannot allocate the %lld-byte arena\n", (long long)mp->arena_bytes);
        goto out;
    }
    memset(arena, 0, arena_size);
    t = calloc((size_t)g->ntensors, sizeof *t);
    s.ntensors = g->ntensors;
    s.buf = calloc((size_t)g->ntensors, sizeof *s.buf);
    s.numel = calloc((size_t)g->ntensors, sizeof *s.numel);
    if (!t || !s.buf || !s.numel) goto oom;
    for (int i = 0; i < g->ntensors; i++) {
        const Tensor *te = &g->tensors[i];
        s.numel[i] = numel(te);
        if (mp->offset[i] >= 0) t[i] = arena + mp->offset[i];
        else if (te->kind != TK_ACTIVATION) {
            void *b = NULL;
            size_t bytes = (size_t)s.numel[i] * 4;
            if (posix_memalign(&b, 64, bytes ? (bytes + 63) / 64 * 64 : 64) != 0) goto oom;
            memset(b, 0, bytes);
            t[i] = s.buf[i] = b;
        }
    }
    for (int i = 0; i < g->ntensors; i++) {
        int j = i, hops = 0;
        while (mp->in_place_of[j] >= 0 && hops++ < g->ntensors) j = mp->in_place_of[j];
        if (j != i) t[i] = t[j];
    }

    /* Seeded inputs and parameters; running statistics get noise so that
     * inference batchnorm is not the identity. */
    ref_init_params(g, &s, a.seed);
    int64_t classes = 2;
    if (g->noutputs > 0 && g->tensors[g->outputs[0].tensor].shape.rank > 1)
        classes = g->tensors[g->outputs[0].tensor].shape.d[1];
    float *lr = NULL, *step = NULL;
    for (int i = 0; i < g->ntensors; i++) {
        const Tensor *te = &g->tensors[i];
        uint64_t sd = a.seed * 1000003u + (uint64_t)i;
        if (te->kind == TK_INPUT) ref_fill_uniform(&s, i, sd, -1, 1);
        else if (te->kind == TK_WEIGHTMAP) ref_fill_uniform(&s, i, sd, 0, 2);
        else if (te->kind == TK_LABEL) {
            RefRng r = { sd * 7 };
            for (int64_t k = 0; k < s.numel[i]; k++) ref_i32(&s, i)[k] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
        } else if (te->kind == TK_HYPER) {
            if (strcmp(te->name, "train.lr") == 0) lr = s.buf[i];
            else if (strcmp(te->name, "train.step") == 0) step = s.buf[i];
        } else if (te->kind == TK_PARAM && te->dtype == DT_F32) {
            if (strstr(te->name, "running_var")) ref_fill_uniform(&s, i, sd, 0.5, 1.5);
            else if (strstr(te->name, "running_mean")) ref_fill_uniform(&s, i, sd, -0.2, 0.2);
        }
    }
    if (lr) *lr = (float)ts->optimizer.num[0];
    if (step) *step = 1;

    if (a.dump) {
        if (mkdir(a.dump, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "bench: cannot create %s: %s\n", a.dump, strerror(errno));
            goto out;
        }
        for (int i = 0; i < g->ntensors; i++)
            if (s.buf[i] && dump_tensor(a.dump, "in", i, s.buf[i], s.numel[i]) != 0) goto out;
    }

    long total = a.warmup + a.iters;
    times = calloc((size_t)a.iters, sizeof *times);
    if (!times) goto oom;
    for (long it = 0; it < total; it++) {
        double t0 = now_ms();
        run(t);
        double dt = now_ms() - t0;
        if (it >= a.warmup) times[it - a.warmup] = dt;
        if (step) *step += 1;
        if (it == 0 && a.dump) {
            for (int k = 0; k < g->noutputs; k++)
                if (dump_tensor(a.dump, "out", g->outputs[k].tensor, t[g->outputs[k].tensor],
                                s.numel[g->outputs[k].tensor]) != 0) goto out;
            for (int k = 0; k < g->nlosses; k++)
                if (dump_tensor(a.dump, "out", g->losses[k].tensor, t[g->losses[k].tensor], 1) != 0) goto out;
            for (int k = 0; k < g->nparams; k++) {
                int tt = g->params[k].tensor;
                if (dump_tensor(a.dump, "out", tt, t[tt], s.numel[tt]) != 0) goto out;
            }
        }
    }
    double sum = 0;
    for (long i = 0; i < a.iters; i++) sum += times[i];
    qsort(times, (size_t)a.iters, sizeof *times, cmp_double);
    double median = a.iters % 2 ? times[a.iters / 2] : 0.5 * (times[a.iters / 2 - 1] + times[a.iters / 2]);
    double flops = graph_flops(g);
    int nupdates = 0;
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == OP_SGD_UPDATE || g->nodes[i].op == OP_ADAM_UPDATE) nupdates++;

    FILE *o = stdout;
    fputs("{\"net\": ", o);
    json_str(o, g->net_name);
    fputs(", \"protocol\": ", o);
    json_str(o, g->protocol_name);
    fprintf(o, ", \"mode\": \"%s\", \"backend\": \"%s\", \"threads\": %ld, \"threads_used\": %ld", a.mode, a.backend,
            a.threads, threads_used);
    fputs(", \"inputs\": ", o);
    json_ports(o, g, g->inputs, g->ninputs);
    fputs(", \"outputs\": ", o);
    json_ports(o, g, g->outputs, g->noutputs);
    fprintf(o, ", \"params\": %lld, \"nodes\": %d, \"updates\": %d, \"kernels\": %d", (long long)graph_param_count(g, true),
            g->nnodes, nupdates, fp->nkernels);
    fprintf(o, ", \"arena_bytes\": %lld, \"persistent_bytes\": %lld, \"memory_strategy\": ", (long long)mp->arena_bytes,
            (long long)mp->persistent_bytes);
    json_str(o, mp->strategy);
    if (ts) {
        fputs(", \"optimizer\": {\"name\": ", o);
        json_str(o, ts->optimizer.name);
        if (strcmp(ts->optimizer.name, "sgd") == 0)
            fprintf(o, ", \"lr\": %.17g, \"momentum\": %.17g, \"nesterov\": %s, \"weight_decay\": %.17g}",
                    ts->optimizer.num[0], ts->optimizer.num[1], ts->optimizer.num[2] != 0 ? "true" : "false",
                    ts->optimizer.num[3]);
        else
            fprintf(o, ", \"lr\": %.17g, \"beta1\": %.17g, \"beta2\": %.17g, \"eps\": %.17g, \"weight_decay\": %.17g}",
                    ts->optimizer.num[0], ts->optimizer.num[1], ts->optimizer.num[2], ts->optimizer.num[3],
                    ts->optimizer.num[4]);
    }
    fprintf(o, ", \"flops\": %.6g, \"compile_ms\": %.1f, \"warmup\": %ld, \"iters\": %ld", flops, compile_ms, a.warmup,
            a.iters);
    fprintf(o, ", \"median_ms\": %.4f, \"min_ms\": %.4f, \"mean_ms\": %.4f, \"gflops\": %.3f, \"peak_rss_mb\": %.1f}\n",
            median, times[0], sum / (double)a.iters, median > 0 ? flops / (median * 1e6) : 0.0, netc_peak_rss_mb());
    status = fflush(o) == 0 ? 0 : 1;
    goto out;

oom:
    fprintf(stderr, "bench: out of memory\n");
out:
    free(times);
    if (s.buf)
        for (int i = 0; i < s.ntensors; i++) free(s.buf[i]);
    free(s.buf);
    free(s.numel);
    free(t);
    free(arena);
    if (jit) l3_llvm_free(jit);
    if (cb) cbackend_free(cb);
    if (m) l3_module_free(m);
    memplan_free(mp);
    if (fp) fusion_plan_free(fp);
    train_free(ts);
    graph_free(g);
    program_free(p);
    diag_free(&d);
    for (int i = 0; i < a.nov; i++) free(a.ov[i].key);
    return status;
}
