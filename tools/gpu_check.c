/* gpu_check.c — the GPU backend on a real GPU: every kernel of the shipped
 * netdefs run through NVRTC and the CUDA driver and compared, tensor by
 * tensor, with the reference executor (small sizes) or with the CPU's
 * generated C (the shipped unet2d protocol, where the double-precision
 * reference would take minutes); then whole-step and per-kernel GPU times.
 *
 * Built by `make gpu-check` without LLVM and without Check (build/gpu_check),
 * so it runs on a GPU machine that has neither: it needs only libc, the
 * NVIDIA driver and NVRTC (both dlopen'ed; see runtime/cuda.h, nvrtc.h) and,
 * for the CPU comparison, a C compiler.  scripts/gpu_check.sh runs it.
 *
 *   gpu_check [--small] [--shipped] [--time [--only ROW]] [--reps N] [--train-batch B]
 *
 * With no phase named, all three run.  Each result is one line:
 *   gpu: NAME ok=1 vs=ref|c worst_of_tol=E at=TENSOR[i] ... compile_s=S run_s=R
 * (worst_of_tol: the largest difference as a fraction of the tolerance of
 * tests/codegen_compare.h; below 1 passes)
 *   gpu-time: NAME ms=M (median of N, kernels only)
 *   gpu-kernel: NAME rank=I ms=M fn=FUNCTION
 * Exit status 0 when every comparison passed. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen_compare.h"
#include "cuda.h"
#include "driver.h"
#include "exec.h"
#include "pool.h"
#include "ref.h"

typedef struct {
    Diag d;
    Program *p;
    Graph *g;
    Override ov[16];
    int nov;
    char *keys[16];
} Net;

static void net_free(Net *n)
{
    if (!n) return;
    graph_free(n->g);
    program_free(n->p);
    diag_free(&n->d);
    for (int i = 0; i < n->nov; i++) free(n->keys[i]);
    free(n);
}

/* path plus "-D k=v" pairs; train: the training step with backward and update. */
static Net *net_load(const char *path, const char *defs, bool train)
{
    Net *n = calloc(1, sizeof *n);
    diag_init(&n->d, stderr);
    n->p = program_load(&n->d, path);
    if (!n->p) {
        net_free(n);
        return NULL;
    }
    char *copy = strdup(defs ? defs : ""), *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (strcmp(tok, "-D") != 0 || n->nov == 16) continue;
        char *kv = strtok_r(NULL, " ", &save), *eq = kv ? strchr(kv, '=') : NULL;
        if (!eq) continue;
        n->keys[n->nov] = strndup(kv, (size_t)(eq - kv));
        n->ov[n->nov].key = n->keys[n->nov];
        n->ov[n->nov].text = strdup(eq + 1);
        n->nov++;
    }
    CompileOptions o = { .train = train, .autodiff = train, .ov = n->ov, .nov = n->nov };
    n->g = netc_compile(n->p, &o);
    for (int i = 0; i < n->nov; i++) free((char *)n->ov[i].text);
    free(copy);
    if (!n->g || n->d.nerrors) {
        fprintf(stderr, "gpu_check: %s %s does not compile\n", path, defs ? defs : "");
        net_free(n);
        return NULL;
    }
    return n;
}

static int failures;

static void compare(const char *name, const char *path, const char *defs, bool train, bool fused, int steps,
                    CodegenBackend want)
{
    Net *n = net_load(path, defs, train);
    if (!n) {
        printf("gpu: %s ok=0 error=compile\n", name);
        failures++;
        return;
    }
    char what[400], msg[4000];
    snprintf(what, sizeof what, "%s (%s %s)", name, path, defs ? defs : "");
    CodegenReport rep;
    uint64_t seed = 20261127;
    int rc = codegen_compare_with(what, n->g, train, seed, steps, fused, CG_CUDA, want, &rep, msg, sizeof msg);
    printf("gpu: %s ok=%d vs=%s worst_of_tol=%.3g at=%s tensors=%d kernels=%d launches=%d compile_s=%.2f run_s=%.3f\n", name,
           rc == 0, want == CG_REF ? "ref" : "c", rep.worst, rep.worst_name[0] ? rep.worst_name : "-", rep.checked,
           rep.kernels, rep.launches, rep.compile_s, rep.run_s);
    if (rc != 0) {
        printf("  FAILED: %s\n", msg);
        failures++;
    }
    fflush(stdout);
    net_free(n);
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The planned arena on the GPU (exec.h's "cuda" backend, what netc run and
 * netc train use): one full run, then `reps` timed launches of the step's
 * entry with no data movement, then the per-kernel profile. */
static const char *only;   /* --only: the timing rows whose name contains this */

static void timing(const char *name, const char *path, const char *defs, bool train, int reps)
{
    if (only && !strstr(name, only)) return;
    Net *n = net_load(path, defs, train);
    if (!n) {
        failures++;
        return;
    }
    char err[4000];
    double t0 = now();
    NetcExec *x = exec_new(n->g, train, "cuda", err, sizeof err);
    double tc = now() - t0;
    if (!x) {
        printf("gpu-time: %s error=%s\n", name, err);
        failures++;
        net_free(n);
        return;
    }
    RefState *s = ref_new(n->g);
    ref_init_params(n->g, s, 1);
    codegen_fill(n->g, s, 1);
    const char *entry = train ? "netc_train_forward" : "netc_forward";
    NetcCuda *c = exec_cuda(x);
    if (exec_run(x, s, err, sizeof err) != 0 || cuda_launch(c, entry, err, sizeof err) != 0) {
        printf("gpu-time: %s error=%s\n", name, err);
        failures++;
    } else {
        double *t = calloc((size_t)reps, sizeof *t);
        for (int r = 0; r < reps; r++) {
            double a = now();
            if (cuda_launch(c, entry, err, sizeof err) != 0) break;
            t[r] = 1e3 * (now() - a);
        }
        qsort(t, (size_t)reps, sizeof *t, dbl_cmp);
        printf("gpu-time: %s ms=%.3f min_ms=%.3f reps=%d kernels=%d launches=%d arena_mb=%.1f nvrtc_s=%.2f setup_s=%.2f\n",
               name, t[reps / 2], t[0], reps, exec_kernels(x), cuda_entry_launches(c, entry),
               (double)exec_arena_bytes(x) / 1048576.0, cuda_compile_seconds(c), tc);
        free(t);
        enum { MAXL = 4096 };
        double *ms = calloc(MAXL, sizeof *ms);
        const char **fn = calloc(MAXL, sizeof *fn);
        int nl = cuda_profile(c, entry, reps < 5 ? reps : 5, ms, fn, MAXL, err, sizeof err);
        if (nl < 0) printf("gpu-kernel: %s error=%s\n", name, err);
        int *order = calloc((size_t)(nl > 0 ? nl : 1), sizeof *order);
        double total = 0;
        for (int i = 0; i < nl; i++) order[i] = i, total += ms[i];
        for (int i = 0; i < nl; i++)   /* the slowest first (a few thousand at most: selection is fine) */
            for (int j = i + 1; j < nl; j++)
                if (ms[order[j]] > ms[order[i]]) {
                    int k = order[i];
                    order[i] = order[j];
                    order[j] = k;
                }
        for (int i = 0; i < nl && i < 12; i++)
            printf("gpu-kernel: %s rank=%d ms=%.3f share=%.1f%% fn=%s\n", name, i + 1, ms[order[i]],
                   total > 0 ? 100 * ms[order[i]] / total : 0, fn[order[i]]);
        printf("gpu-kernel: %s total_ms=%.3f launches=%d (synchronized after each)\n", name, total, nl);
        free(order);
        free(ms);
        free(fn);
    }
    fflush(stdout);
    ref_free(s);
    exec_free(x);
    net_free(n);
}

int main(int argc, char **argv)
{
    bool small = false, shipped = false, time_it = false;
    int reps = 20;
    const char *train_batch = NULL, *shipped_defs = "", *time_defs = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--small") == 0) small = true;
        else if (strcmp(argv[i], "--shipped") == 0) shipped = true;
        else if (strcmp(argv[i], "--time") == 0) time_it = true;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--train-batch") == 0 && i + 1 < argc) train_batch = argv[++i];
        else if (strcmp(argv[i], "--shipped-defs") == 0 && i + 1 < argc) shipped_defs = argv[++i];   /* testing */
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        else if (strcmp(argv[i], "--time-defs") == 0 && i + 1 < argc) time_defs = argv[++i];         /* testing */
        else {
            fprintf(stderr, "usage: gpu_check [--small] [--shipped] [--time] [--reps N] [--train-batch B] [--shipped-defs \"-D k=v ...\"]\n");
            return 2;
        }
    }
    if (!small && !shipped && !time_it) small = shipped = time_it = true;
    if (reps < 1) reps = 1;
    char err[2000], desc[512];
    if (!cuda_device(desc, sizeof desc, err, sizeof err)) {
        fprintf(stderr, "gpu_check: %s\n", err);
        return 1;
    }
    /* netc_threads also links the thread pool, whose netc_parallel_for the CPU's generated C calls */
    printf("gpu-device: %s; CPU comparison with %d threads\n", desc, netc_threads());
    fflush(stdout);
    if (small) {
        /* the same nets as the emulated tests (tests/test_cuda.c), on the GPU, against the reference */
        compare("unet2d-infer", "netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32", false, true, 1, CG_REF);
        compare("unet2d-infer-unfused", "netdefs/unet2d.net", "-D base=2 -D protocol.size=48x32", false, false, 1, CG_REF);
        compare("unet3d-infer", "netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16", false, true, 1, CG_REF);
        compare("vnet-infer", "netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16", false, true, 1, CG_REF);
        compare("voxresnet-infer", "netdefs/voxresnet.net", "-D base=4 -D protocol.size=16x16x16", false, true, 1, CG_REF);
        compare("unet2d-train", "netdefs/unet2d.net",
                "-D base=2 -D protocol.size=32x32 -D train.patch=32x32 -D train.batch=2", true, true, 1, CG_REF);
        compare("unet3d-train", "netdefs/unet3d.net",
                "-D base=2 -D protocol.size=16x16x16 -D train.patch=16x16x16 -D train.batch=2", true, true, 1, CG_REF);
        compare("vnet-train", "netdefs/vnet.net",
                "-D base=2 -D protocol.size=16x16x16 -D train.patch=16x16x16 -D train.batch=1", true, true, 1, CG_REF);
        compare("voxresnet-train", "netdefs/voxresnet.net",
                "-D base=2 -D protocol.size=16x16x16 -D train.patch=16x16x16 -D train.batch=1", true, true, 1, CG_REF);
        compare("ds_unet-train-2steps", "tests/nets/ds_unet.net", "", true, true, 2, CG_REF);
    }
    if (shipped) {
        /* unet2d at its shipped protocol (the kernels of generated/unet2d.cu) and one training step at the
         * shipped patch, against the CPU's generated C */
        compare("unet2d-shipped-infer", "netdefs/unet2d.net", shipped_defs, false, true, 1, CG_C);
        char defs[512];
        snprintf(defs, sizeof defs, "%s%s%s", shipped_defs, train_batch ? " -D train.batch=" : "", train_batch ? train_batch : "");
        compare("unet2d-shipped-train", "netdefs/unet2d.net", defs, true, true, 1, CG_C);
    }
    if (time_it) {
        /* make bench's configurations (tools/bench.py) */
        const char *d2i = "-D base=32", *d2t = "-D base=32 -D train.batch=4 -D train.patch=256x256";
        const char *d3i = "-D base=8 -D protocol.size=64x64x64", *d3t = "-D base=8 -D train.batch=2 -D train.patch=64x64x64";
        if (time_defs) d2i = d2t = d3i = d3t = time_defs;
        timing("unet2d-infer-1x256x256", "netdefs/unet2d.net", d2i, false, reps);
        timing("unet2d-train-4x256x256", "netdefs/unet2d.net", d2t, true, reps < 10 ? reps : 10);
        timing("unet3d-infer-1x64x64x64", "netdefs/unet3d.net", d3i, false, reps);
        timing("unet3d-train-2x64x64x64", "netdefs/unet3d.net", d3t, true, reps < 10 ? reps : 10);
    }
    printf("gpu-check: %s (%d failed)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
