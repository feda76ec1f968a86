/* test_cuda.c — the CUDA C printer (compiler/l3_cuda.c) and NVRTC
 * (runtime/nvrtc.c), without a GPU: every shipped netdef, lowered at small
 * sizes for inference and as a training forward, printed as CUDA and
 * compiled with NVRTC for sm_90 (PTX and CUBIN, every kernel present); the
 * launch table against the loop nests; a broken source reports its numbered
 * lines.  NVRTC missing is a failure, not a skip: CUDA 13 is part of the
 * build environment (/usr/local/cuda).  NETC_CUDA_TIMING=1 prints NVRTC's
 * compile time per net.  Under valgrind (NVRTC runs about 50 times slower
 * there) only unet2d is compiled, for inference and training. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "l3_cuda.h"
#include "autodiff.h"
#include "fuse.h"
#include "lower.h"
#include "nvrtc.h"
#include "cuda.h"
#include "codegen_fixture.h"
#include "exec.h"
#include "ref.h"
#include "support.h"

static char *print_cuda(const L3Module *m, size_t *len)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    ck_assert_ptr_nonnull(f);
    l3_print_cuda(f, m);
    fclose(f);
    if (len) *len = n;
    return s;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The product of the extents of the perfectly nested loops that start at s
 * (s must be a parallel loop; 1 if it is not). */
static int64_t nest_product(const L3Stmt *s)
{
    if (s->kind != L3S_FOR || !(s->annot & L3_PARALLEL)) return 1;
    int64_t p = 1;
    for (;;) {
        p *= s->extent;
        if (s->body.n != 1 || s->body.s[0]->kind != L3S_FOR) return p;
        s = s->body.s[0];
    }
}

/* Compile m's CUDA with NVRTC; check PTX, CUBIN, every function of every
 * entry's launch table in the PTX, and (for lowered nets, whose nests have
 * no reductions into buffers) thread counts = the product of the nest. */
static void compile_module(const char *what, const L3Module *m, bool whole_nests)
{
    size_t srclen;
    char *src = print_cuda(m, &srclen);
    char err[16384];
    char *ptx = NULL, *cubin = NULL;
    size_t ptx_len = 0, cubin_len = 0;
    double t0 = now();
    int rc = nvrtc_compile(src, "sm_90", &ptx, &ptx_len, &cubin, &cubin_len, err, sizeof err);
    double t1 = now();
    ck_assert_msg(rc == 0, "%s: %s", what, err);
    if (getenv("NETC_CUDA_TIMING"))
        fprintf(stderr, "cuda: %s: %d kernels, %zu bytes of CUDA, NVRTC %.2f s, PTX %zu bytes, CUBIN %zu bytes\n", what,
                m->nkernels, srclen, t1 - t0, ptx_len, cubin_len);
    ck_assert_msg(ptx && ptx_len > 0, "%s: empty PTX", what);
    ck_assert_msg(cubin && cubin_len > 0, "%s: empty CUBIN", what);
    ck_assert_int_gt(m->nentries, 0);
    for (int e = 0; e < m->nentries; e++) {
        L3CudaLaunch *l;
        int n = l3_cuda_launches(m, e, &l);
        ck_assert_int_ge(n, m->entries[e].nkernels);
        for (int i = 0; i < n; i++) {
            char want[300];
            snprintf(want, sizeof want, ".entry %s(", l[i].name);
            ck_assert_msg(strstr(ptx, want) != NULL, "%s: %s is not in the PTX", what, l[i].name);
            snprintf(want, sizeof want, "%s(", l[i].name);
            ck_assert_msg(strstr(src, want) != NULL, "%s: %s is not in the CUDA source", what, l[i].name);
            const L3Kernel *k = &m->kernels[l[i].kernel];
            ck_assert_int_eq(l[i].nparams, k->nbufs);
            for (int b = 0; b < k->nbufs; b++) ck_assert_int_eq(l[i].params[b], k->bufs[b].tensor);
            ck_assert(l[i].block >= 32 && l[i].block <= L3_CUDA_BLOCK && l[i].block % 32 == 0);
            ck_assert_int_eq(l[i].grid, (l[i].total + l[i].block - 1) / l[i].block);
            if (whole_nests) {
                const L3Stmt *s = l[i].part >= 0 ? k->body.s[l[i].part] : k->body.n == 1 ? k->body.s[0] : NULL;
                int64_t want_total = s ? nest_product(s) : 1;
                ck_assert_msg(l[i].total == want_total,
                              "%s: %s: %lld threads, the loop nest has %lld iterations (a nested loop that "
                              "reduces into a buffer stays in its thread: adapt this check if a lowering makes one)",
                              what, l[i].name, (long long)l[i].total, (long long)want_total);
            }
        }
        l3_cuda_launches_free(l, n);
    }
    free(ptx);
    free(cubin);
    free(src);
}

static bool under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload");
}

static void net(const char *path, const char *args, bool training)
{
    if (under_valgrind() && !strstr(path, "unet2d")) return;
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    char err[2000];
    if (training) {   /* the whole step: forward, backward, SGD update */
        ck_assert_int_gt(autodiff(c->g, c->g->losses[0].tensor), 0);
        const double sgd[4] = { 0.01, 0.99, 1, 3e-5 };
        ck_assert_int_gt(append_optimizer(c->g, "sgd", sgd), 0);
    }
    FusionPlan *fp = fuse_graph(c->g, training);
    L3Module *m = lower_graph_fused(c->g, fp, training, err, sizeof err);
    ck_assert_msg(m != NULL, "%s %s: %s", path, args, err);
    char what[300];
    snprintf(what, sizeof what, "%s %s%s", path, args, training ? " (training step, fused)" : " (fused)");
    compile_module(what, m, true);
    l3_module_free(m);
    fusion_plan_free(fp);
    compiled_free(c);
}

START_TEST(cuda_nvrtc_loads)
{
    char err[2048];
    ck_assert_msg(nvrtc_available(err, sizeof err), "%s", err);
    int major = 0, minor = 0;
    ck_assert(nvrtc_version(&major, &minor));
    ck_assert_int_ge(major, 12);
}
END_TEST

START_TEST(cuda_netdefs)
{
    net("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32", false);
    net("netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16", false);
    net("netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16", false);
    net("netdefs/voxresnet.net", "-D base=4 -D protocol.size=16x16x16", false);
}
END_TEST

START_TEST(cuda_netdefs_training)
{
    net("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32 --train -D train.patch=32x32 -D train.batch=1", true);
    net("netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1",
        true);
    net("netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1",
        true);
    net("netdefs/voxresnet.net",
        "-D base=4 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", true);
}
END_TEST

/* Hand-made kernels for the mapping rules. */
START_TEST(cuda_launch_table)
{
    L3Module *m = l3_module_new("t", 4);
    L3Entry *e = l3_entry_new(m, "netc_forward");

    /* 0: y[i, j, k] = x[...] over 3 x 5 x 7: one flattened index of 105 threads */
    L3Kernel *k = l3_kernel_new(m, "k0_copy", "copy");
    int x = l3_buf(m, k, 0, L3_F32, 105, false, "x"), y = l3_buf(m, k, 1, L3_F32, 105, true, "y");
    int i = l3_var(m, k, "i", L3_I64, true), j = l3_var(m, k, "j", L3_I64, true), kk = l3_var(m, k, "k", L3_I64, true);
    L3Block *b = &l3_for(m, &k->body, i, 3, L3_PARALLEL)->body;
    b = &l3_for(m, b, j, 5, 0)->body;
    b = &l3_for(m, b, kk, 7, L3_VECTORIZE)->body;
    L3Expr *idx = l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, l3_varref(m, k, i), l3_int(m, 5)),
                                                              l3_varref(m, k, j)), l3_int(m, 7)), l3_varref(m, k, kk));
    l3_store(m, b, y, idx, l3_un(m, L3_TANH, l3_load(m, k, x, idx)), false);
    l3_entry_call(e, 0);

    /* 1: row sums into a buffer: y[i] += x[i, j]: the j loop stays in the thread (3 threads) */
    k = l3_kernel_new(m, "k1_rowsum", "row sums");
    x = l3_buf(m, k, 0, L3_F32, 105, false, "x");
    y = l3_buf(m, k, 2, L3_F32, 3, true, "y");
    i = l3_var(m, k, "i", L3_I64, true), j = l3_var(m, k, "j", L3_I64, true);
    b = &l3_for(m, &k->body, i, 3, L3_PARALLEL)->body;
    b = &l3_for(m, b, j, 35, L3_VECTORIZE)->body;
    l3_store(m, b, y, l3_varref(m, k, i),
             l3_load(m, k, x, l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, l3_varref(m, k, i), l3_int(m, 35)), l3_varref(m, k, j))),
             true);
    l3_entry_call(e, 1);

    /* 2: two top-level nests (concat-like): two functions, 6 and 4 threads */
    k = l3_kernel_new(m, "k2_two", "two parts");
    y = l3_buf(m, k, 3, L3_F32, 10, true, "y");
    i = l3_var(m, k, "i", L3_I64, true);
    b = &l3_for(m, &k->body, i, 6, L3_PARALLEL)->body;
    l3_store(m, b, y, l3_varref(m, k, i), l3_float(m, 1), false);
    j = l3_var(m, k, "i", L3_I64, true);
    b = &l3_for(m, &k->body, j, 4, L3_PARALLEL)->body;
    l3_store(m, b, y, l3_bin(m, L3_ADD, l3_varref(m, k, j), l3_int(m, 6)), l3_float(m, -INFINITY), false);
    l3_entry_call(e, 2);

    /* 3: a top-level local read by the loop: one thread runs everything */
    k = l3_kernel_new(m, "k3_local", "local first");
    y = l3_buf(m, k, 3, L3_F32, 10, true, "y");
    int s = l3_var(m, k, "s", L3_F32, false);
    l3_local(m, &k->body, s, l3_float(m, 2.5));
    i = l3_var(m, k, "i", L3_I64, true);
    b = &l3_for(m, &k->body, i, 10, L3_PARALLEL)->body;
    l3_store(m, b, y, l3_varref(m, k, i), l3_varref(m, k, s), true);
    l3_entry_call(e, 3);

    /* 4: an empty loop: nothing to launch */
    k = l3_kernel_new(m, "k4_empty", "extent 0");
    y = l3_buf(m, k, 3, L3_F32, 10, true, "y");
    i = l3_var(m, k, "i", L3_I64, true);
    b = &l3_for(m, &k->body, i, 0, L3_PARALLEL)->body;
    l3_store(m, b, y, l3_varref(m, k, i), l3_float(m, NAN), false);
    l3_entry_call(e, 4);

    L3CudaLaunch *l;
    ck_assert_int_eq(l3_cuda_launches(m, 1, &l), -1);
    ck_assert_ptr_null(l);
    int n = l3_cuda_launches(m, 0, &l);
    ck_assert_int_eq(n, 6);
    const char *names[] = { "k0_copy", "k1_rowsum", "k2_two_part0", "k2_two_part1", "k3_local", "k4_empty" };
    const int64_t totals[] = { 105, 3, 6, 4, 1, 0 };
    const int parts[] = { -1, -1, 0, 1, -1, -1 };
    for (int r = 0; r < n; r++) {
        ck_assert_str_eq(l[r].name, names[r]);
        ck_assert_int_eq(l[r].total, totals[r]);
        ck_assert_int_eq(l[r].part, parts[r]);
    }
    ck_assert_int_eq(l[0].block, 128);
    ck_assert_int_eq(l[0].grid, 1);
    ck_assert_int_eq(l[1].nparams, 2);
    ck_assert_int_eq(l[1].params[0], 0);
    ck_assert_int_eq(l[1].params[1], 2);
    l3_cuda_launches_free(l, n);

    char *src = print_cuda(m, NULL);
    ck_assert_msg(strstr(src, "if (netc_idx >= 105LL) return;") != NULL, "%s", src);
    ck_assert_msg(strstr(src, "netc_rem % 7LL") && strstr(src, "netc_rem % 5LL"), "%s", src);
    ck_assert_msg(strstr(src, "{ \"k2_two_part1\", 4, 32, 1, 1, { 3 } },") != NULL, "%s", src);
    free(src);
    compile_module("hand-made kernels", m, false);
    l3_module_free(m);
}
END_TEST

START_TEST(cuda_broken_source)
{
    const char *src = "typedef long long int64_t;\n"
                      "extern \"C\" __global__ void k0(float *y)\n"
                      "{\n"
                      "    y[threadIdx.x] = netc_undefined_thing * 2.0f;\n"
                      "}\n";
    char err[8192];
    char *ptx = NULL, *cubin = NULL;
    size_t pl = 1, cl = 1;
    ck_assert_int_eq(nvrtc_compile(src, "sm_90", &ptx, &pl, &cubin, &cl, err, sizeof err), -1);
    ck_assert_ptr_null(ptx);
    ck_assert_ptr_null(cubin);
    ck_assert(pl == 0 && cl == 0);
    ck_assert_msg(strstr(err, "netc_undefined_thing") != NULL, "%s", err);   /* NVRTC's log */
    ck_assert_msg(strstr(err, ">    4 |     y[threadIdx.x] = netc_undefined_thing * 2.0f;") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "    2 | extern \"C\"") != NULL, "%s", err);   /* context */
    /* a small buffer: truncated, never overrun */
    char small[64];
    ck_assert_int_eq(nvrtc_compile(src, "sm_90", NULL, NULL, NULL, NULL, small, sizeof small), -1);
    ck_assert_uint_lt(strlen(small), sizeof small);
    /* a bad architecture is reported too */
    ck_assert_int_eq(nvrtc_compile("extern \"C\" __global__ void k(){}\n", "sm_bogus", NULL, NULL, NULL, NULL, err,
                                   sizeof err), -1);
    ck_assert_msg(strstr(err, "NVRTC") != NULL, "%s", err);
    /* compute_90: PTX, no CUBIN */
    ck_assert_int_eq(nvrtc_compile("extern \"C\" __global__ void k(){}\n", "compute_90", &ptx, &pl, &cubin, &cl, err,
                                   sizeof err), 0);
    ck_assert(ptx && pl > 0 && strstr(ptx, ".entry k("));
    ck_assert_uint_eq(cl, 0);
    free(ptx);
    free(cubin);
}
END_TEST

START_TEST(cuda_missing_library)
{
    char *old = getenv("NETC_NVRTC") ? strdup(getenv("NETC_NVRTC")) : NULL;
    nvrtc_unload();
    setenv("NETC_NVRTC", "/nonexistent/libnvrtc.so.13", 1);
    char err[2048];
    ck_assert(!nvrtc_available(err, sizeof err));
    ck_assert_msg(strstr(err, "cannot load NVRTC") && strstr(err, "/nonexistent/libnvrtc.so.13"), "%s", err);
    ck_assert_int_eq(nvrtc_compile("x", "sm_90", NULL, NULL, NULL, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "cannot load NVRTC") != NULL, "%s", err);
    if (old) setenv("NETC_NVRTC", old, 1);
    else unsetenv("NETC_NVRTC");
    free(old);
    ck_assert_msg(nvrtc_available(err, sizeof err), "%s", err);
    nvrtc_unload();
}
END_TEST

/* ---- the GPU backend, run on the CPU by the stand-in driver (tests/cuda_emu) ---- */

static void use_emulator(void)
{
    setenv("NETC_CUDA_DRIVER", NETC_CUDA_EMU, 1);
}

/* No driver: a clear message, no crash (runs before the emulator is loaded
 * when the suites share one process). */
START_TEST(cuda_no_driver)
{
    setenv("NETC_CUDA_DRIVER", "/nonexistent/libcuda.so.1", 1);
    char err[1024], desc[256];
    ck_assert(!cuda_device(desc, sizeof desc, err, sizeof err));
    ck_assert_msg(strstr(err, "no CUDA driver") && strstr(err, "/nonexistent/libcuda.so.1"), "%s", err);
    L3Module *m = l3_module_new("t", 1);
    ck_assert_ptr_null(cuda_load(m, err, sizeof err));
    ck_assert_msg(strstr(err, "no CUDA driver") != NULL, "%s", err);
    l3_module_free(m);
    unsetenv("NETC_CUDA_DRIVER");
}
END_TEST

START_TEST(cuda_emu_device)
{
    use_emulator();
    char err[1024], desc[256];
    ck_assert_msg(cuda_device(desc, sizeof desc, err, sizeof err), "%s", err);
    ck_assert_msg(strstr(desc, "emulator") && strstr(desc, "sm_90"), "%s", desc);
}
END_TEST

static void emu_compare(const char *path, const char *args, bool training, const char *opt, int steps, bool fused)
{
    if (under_valgrind() && !strstr(path, "unet2d")) return;   /* as the NVRTC checks: one net under valgrind */
    use_emulator();
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    uint64_t seed = codegen_test_seed();
    if (training) {
        ck_assert_int_gt(autodiff(c->g, c->g->losses[0].tensor), 0);
        const double sgd[4] = { 0.01, 0.9, 1, 1e-4 }, adam[5] = { 1e-3, 0.9, 0.999, 1e-8, 0.01 };
        ck_assert_int_gt(append_optimizer(c->g, opt, strcmp(opt, "sgd") == 0 ? sgd : adam), 0);
        seed = codegen_fixed_seed();
    }
    char what[300], msg[2000];
    snprintf(what, sizeof what, "%s %s (CUDA, emulated%s)", path, args, fused ? ", fused" : "");
    CodegenReport rep;
    int rc = codegen_compare(what, c->g, training, seed, steps, fused, CG_CUDA, &rep, msg, sizeof msg);
    ck_assert_msg(rc == 0, "%s", msg);
    ck_assert_int_gt(rep.launches, 0);
    compiled_free(c);
}

START_TEST(cuda_emu_netdefs)
{
    emu_compare("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32", false, NULL, 1, true);
    emu_compare("netdefs/unet2d.net", "-D base=2 -D protocol.size=48x32", false, NULL, 1, false);
    emu_compare("netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16", false, NULL, 1, true);
    emu_compare("netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16", false, NULL, 1, true);
    emu_compare("netdefs/voxresnet.net", "-D base=4 -D protocol.size=16x16x16", false, NULL, 1, true);
}
END_TEST

START_TEST(cuda_emu_train_steps)
{
    emu_compare("netdefs/unet2d.net", "-D base=2 -D protocol.size=32x32 --train -D train.patch=32x32 -D train.batch=2", true,
                "sgd", 1, true);
    emu_compare("netdefs/unet3d.net", "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=2",
                true, "adam", 1, true);
    emu_compare("netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1",
                true, "sgd", 1, true);
    emu_compare("netdefs/voxresnet.net",
                "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", true, "adamw", 1, true);
    emu_compare("tests/nets/ds_unet.net", "--train", true, "sgd", 2, true);
}
END_TEST

/* The NVRTC path of cuda_load with the emulator standing in for the driver:
 * the kernels split into several programs, compiled by NVRTC in parallel
 * threads; every module must be a CUBIN and every launch's function must be
 * found in its module. */
START_TEST(cuda_emu_nvrtc_modules)
{
    use_emulator();
    setenv("NETC_CUDA_EMU_NVRTC", "1", 1);
    setenv("NETC_NVRTC_THREADS", "3", 1);
    Compiled *c = compile_file("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32");
    ck_clean(c);
    FusionPlan *fp = fuse_graph(c->g, false);
    char err[8000];
    L3Module *m = lower_graph_fused(c->g, fp, false, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    NetcCuda *cu = cuda_load(m, err, sizeof err);
    ck_assert_msg(cu != NULL, "%s", err);
    ck_assert_int_eq(cuda_entry_launches(cu, "netc_forward"), 27);
    ck_assert(cuda_compile_seconds(cu) > 0);
    cuda_free(cu);
    l3_module_free(m);
    fusion_plan_free(fp);
    compiled_free(c);
    unsetenv("NETC_CUDA_EMU_NVRTC");
    unsetenv("NETC_NVRTC_THREADS");
}
END_TEST

/* exec.h's "cuda" backend (what netc run / netc train use): the planned
 * arena goes up and comes back; a training step in two halves (grads, then
 * update) equals the C backend's. */
START_TEST(cuda_emu_exec)
{
    use_emulator();
    Compiled *c = compile_file("netdefs/unet2d.net", "-D base=2 -D protocol.size=32x32 --train -D train.patch=32x32 -D train.batch=2");
    ck_clean(c);
    Graph *g = c->g;
    ck_assert_int_gt(autodiff(g, g->losses[0].tensor), 0);
    const double sgd[4] = { 0.01, 0.9, 1, 1e-4 };
    ck_assert_int_gt(append_optimizer(g, "sgd", sgd), 0);
    char err[2000];
    NetcExec *xc = exec_new(g, true, "c", err, sizeof err);
    ck_assert_msg(xc != NULL, "%s", err);
    NetcExec *xg = exec_new(g, true, "cuda", err, sizeof err);
    ck_assert_msg(xg != NULL, "%s", err);
    uint64_t seed = codegen_fixed_seed();
    RefState *a = ref_new(g), *b = ref_new(g);
    ref_init_params(g, a, seed);
    codegen_fill(g, a, seed);
    for (int t = 0; t < g->ntensors; t++) memcpy(b->buf[t], a->buf[t], sizeof(float) * (size_t)a->numel[t]);
    ck_assert_msg(exec_grads(xc, a, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(exec_grads(xg, b, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(exec_update(xc, a, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(exec_update(xg, b, err, sizeof err) == 0, "%s", err);
    int compared = 0;
    for (int t = 0; t < g->ntensors; t++) {
        const Tensor *te = &g->tensors[t];
        if (te->kind != TK_PARAM || te->dtype != DT_F32) continue;
        double top = 0;
        for (int64_t i = 0; i < a->numel[t]; i++) top = fmax(top, fabs(a->buf[t][i]));
        for (int64_t i = 0; i < a->numel[t]; i++)
            ck_assert_msg(fabs(a->buf[t][i] - b->buf[t][i]) <= 1e-5 * top + 1e-6 * fabs(a->buf[t][i]),
                          "%s[%lld]: C %.9g, CUDA %.9g", te->name, (long long)i, a->buf[t][i], b->buf[t][i]);
        compared++;
    }
    ck_assert_int_gt(compared, 0);
    for (int k = 0; k < g->nlosses; k++) {
        int t = g->losses[k].tensor;
        ck_assert_msg(fabs(a->buf[t][0] - b->buf[t][0]) <= 1e-5 * fabs(a->buf[t][0]), "loss: C %.9g, CUDA %.9g", a->buf[t][0],
                      b->buf[t][0]);
    }
    ref_free(a);
    ref_free(b);
    exec_free(xc);
    exec_free(xg);
    compiled_free(c);
}
END_TEST

Suite *cuda_suite(void)
{
    Suite *s = suite_create("cuda");
    TCase *tc = tcase_create("nvrtc");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, cuda_nvrtc_loads);
    tcase_add_test(tc, cuda_launch_table);
    tcase_add_test(tc, cuda_broken_source);
    tcase_add_test(tc, cuda_missing_library);
    tcase_add_test(tc, cuda_netdefs);
    tcase_add_test(tc, cuda_netdefs_training);
    suite_add_tcase(s, tc);
    TCase *te = tcase_create("emulated");
    tcase_set_timeout(te, 900);
    tcase_add_test(te, cuda_no_driver);
    tcase_add_test(te, cuda_emu_device);
    tcase_add_test(te, cuda_emu_nvrtc_modules);
    tcase_add_test(te, cuda_emu_exec);
    tcase_add_test(te, cuda_emu_netdefs);
    tcase_add_test(te, cuda_emu_train_steps);
    suite_add_tcase(s, te);
    return s;
}
