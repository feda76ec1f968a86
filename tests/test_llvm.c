/* test_llvm.c — the LLVM backend (compiler/l3_llvm.c): L3 loop IR through
 * LLVM-C, O3 and the ORC JIT.
 *
 * The same comparisons as test_codegen.c (every op on odd shapes in 1D, 2D
 * and 3D, the four netdefs; outputs poisoned with NaN first, inputs from a
 * seed printed on failure, the same tolerance), but through the JIT; then
 * the LLVM backend against the C backend on unet2d, a hand-made kernel that
 * uses every L3 expression kind and operator (C semantics: integer division
 * and remainder of negatives, conversions, NaN in fminf/fmaxf, lazy ?: && ||
 * guarding out-of-bounds loads) against the C backend, files written by
 * l3_llvm_emit, and errors reported instead of crashing.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cbackend.h"
#include "l3_llvm.h"
#include "lower.h"
#include "ref.h"
#include "codegen_fixture.h"
#include "support.h"
#include "ref_fixture.h"


/* got within tolerance of want, tensor by tensor (activations, and in
 * training the running statistics). */
static void check_close(const char *what, const char *got_name, const char *want_name, const Graph *g, bool training,
                        RefState *got, RefState *want, uint64_t seed)
{
    int checked = 0;
    for (int t = 0; t < g->ntensors; t++) {
        const Tensor *te = &g->tensors[t];
        bool stat = te->kind == TK_PARAM && training && strstr(te->name, "running_");
        if (te->kind != TK_ACTIVATION && !stat) continue;
        double top = 0;
        for (int64_t i = 0; i < want->numel[t]; i++) top = fmax(top, fabs(want->buf[t][i]));
        for (int64_t i = 0; i < want->numel[t]; i++) {
            double a = got->buf[t][i], b = want->buf[t][i];
            ck_assert_msg(fabs(a - b) <= TOL_ABS * top + TOL_REL * fabs(b) || (isnan(a) && isnan(b)),
                          "%s (seed %llu): %s[%lld]: %s %.9g, %s %.9g (max |%s| %g)", what, (unsigned long long)seed,
                          te->name, (long long)i, got_name, a, want_name, b, want_name, top);
        }
        checked++;
    }
    ck_assert_int_gt(checked, 0);
}

/* Inputs and parameters from the seed into want; got gets a copy with
 * every activation poisoned with NaN. */
static void fill_states(const Graph *g, RefState *want, RefState *got, uint64_t seed)
{
    ref_init_params(g, want, seed);
    codegen_fill(g, want, seed);
    for (int t = 0; t < g->ntensors; t++) {
        memcpy(got->buf[t], want->buf[t], sizeof(float) * (size_t)want->numel[t]);
        if (g->tensors[t].kind == TK_ACTIVATION)
            for (int64_t i = 0; i < got->numel[t]; i++) got->buf[t][i] = NAN;
    }
}

/* Run g with the reference and through the LLVM JIT from the same inputs
 * and parameters; compare every output. */
static void compare_graph(const char *what, const Graph *g, bool training, uint64_t seed)
{
    char err[1500];
    L3Module *m = lower_graph(g, training, err, sizeof err);
    ck_assert_msg(m != NULL, "%s: %s", what, err);
    L3Llvm *jit = l3_llvm_jit(m, err, sizeof err);
    ck_assert_msg(jit != NULL, "%s: %s", what, err);
    NetcEntry run = l3_llvm_entry(jit, training ? "netc_train_forward" : "netc_forward");
    ck_assert_ptr_nonnull(run);
    ck_assert_ptr_null(l3_llvm_entry(jit, "no_such_entry"));

    RefState *want = ref_new(g), *got = ref_new(g);
    ck_assert(want && got);
    fill_states(g, want, got, seed);
    ck_assert_msg(ref_forward(g, want, training, 1, err, sizeof err) == 0, "%s: %s", what, err);
    run((void **)got->buf);
    check_close(what, "llvm", "reference", g, training, got, want, seed);
    ref_free(want);
    ref_free(got);
    l3_llvm_free(jit);
    l3_module_free(m);
}

static void compare_op(const char *what, OpKind k, int sr, OpAttrs at, const Shape *ins, int nin, bool training)
{
    Graph *g = graph_new("t", "p", sr);
    int in[8];
    const Tensor *tp[8];
    for (int j = 0; j < nin; j++) in[j] = graph_add_tensor(g, "x", ins[j], DT_F32, TK_INPUT);
    for (int j = 0; j < nin; j++) tp[j] = &g->tensors[in[j]];
    ShapeCtx cx = { NULL, { 0 }, NULL, sr, tp, nin, NULL, NULL };
    memset(&cx.loc, 0, sizeof cx.loc);
    Shape os;
    ck_assert_msg(op_table[k].shape(&cx, &at, ins, nin, &os), "%s: shape rule failed", what);
    int out = graph_add_tensor(g, "y", os, DT_F32, TK_ACTIVATION);
    int node = graph_add_node(g, k, op_table[k].name, in, nin, out, &at, cx.loc);
    g->tensors[out].producer = node;
    ParamSpec ps[NODE_MAX_PARAMS];
    int np = op_table[k].params(&at, ins, nin, ps);
    for (int j = 0; j < np; j++) graph_add_param(g, node, &ps[j]);
    graph_add_output(g, "y", out, cx.loc);
    compare_graph(what, g, training, codegen_test_seed());
    graph_free(g);
}

#define A attrs

START_TEST(llvm_conv)
{
    OpAttrs at = A(OP_CONV, 2);
    at.channels = 5;
    at.kernel[0] = at.kernel[1] = 3;
    at.pad.mode = PAD_SAME;
    Shape in = SH(2, 3, 7, 6);
    compare_op("conv 2d same", OP_CONV, 2, at, &in, 1, false);
    at.stride[0] = 2, at.stride[1] = 1;
    at.dilation[1] = 2;
    at.groups = 1;
    compare_op("conv 2d stride dilation", OP_CONV, 2, at, &in, 1, false);
    at = A(OP_CONV, 3);
    at.channels = 4;
    at.groups = 2;
    at.kernel[0] = 1, at.kernel[1] = 3, at.kernel[2] = 2;
    at.pad.mode = PAD_VALID;
    at.bias = false;
    Shape in3 = SH(1, 6, 3, 5, 4);
    compare_op("conv 3d groups valid no bias", OP_CONV, 3, at, &in3, 1, false);
    at = A(OP_CONV, 1);
    at.channels = 2;
    at.kernel[0] = 5;
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = 3, at.pad.hi[0] = 1;
    Shape in1 = SH(2, 2, 9);
    compare_op("conv 1d explicit padding", OP_CONV, 1, at, &in1, 1, false);
}
END_TEST

START_TEST(llvm_upconv)
{
    OpAttrs at = A(OP_UPCONV, 2);
    at.channels = 3;
    at.kernel[0] = at.kernel[1] = 2;
    Shape in = SH(2, 4, 3, 5);
    compare_op("upconv 2d k2 s2", OP_UPCONV, 2, at, &in, 1, false);
    at = A(OP_UPCONV, 3);
    at.channels = 4;
    at.kernel[0] = at.kernel[1] = at.kernel[2] = 3;
    at.stride[0] = at.stride[1] = at.stride[2] = 2;
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = at.pad.lo[1] = at.pad.lo[2] = 1;
    at.pad.hi[0] = at.pad.hi[1] = at.pad.hi[2] = 1;
    at.out_pad[0] = at.out_pad[1] = at.out_pad[2] = 1;
    at.groups = 2;
    Shape in3 = SH(1, 2, 3, 2, 3);
    compare_op("upconv 3d k3 s2 p1 out_pad groups", OP_UPCONV, 3, at, &in3, 1, false);
}
END_TEST

START_TEST(llvm_pool_upsample)
{
    OpAttrs at = A(OP_MAXPOOL, 2);
    at.kernel[0] = at.kernel[1] = 2;
    Shape in = SH(2, 3, 7, 6);
    compare_op("maxpool 2d", OP_MAXPOOL, 2, at, &in, 1, false);
    at = A(OP_AVGPOOL, 3);
    at.kernel[0] = at.kernel[1] = at.kernel[2] = 3;
    at.stride[0] = at.stride[1] = at.stride[2] = 2;
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = at.pad.lo[1] = at.pad.lo[2] = 1;
    at.pad.hi[0] = at.pad.hi[1] = at.pad.hi[2] = 1;
    at.ceil_mode = true;
    Shape in3 = SH(1, 2, 5, 6, 4);
    compare_op("avgpool 3d ceil pad", OP_AVGPOOL, 3, at, &in3, 1, false);
    at.count_pad = true;
    compare_op("avgpool 3d count_pad", OP_AVGPOOL, 3, at, &in3, 1, false);
    at = A(OP_GLOBAL_AVGPOOL, 3);
    compare_op("global_avgpool", OP_GLOBAL_AVGPOOL, 3, at, &in3, 1, false);
    at = A(OP_UPSAMPLE, 2);
    at.scale[0] = 2, at.scale[1] = 3;
    compare_op("upsample nearest", OP_UPSAMPLE, 2, at, &in, 1, false);
    at.mode = 1;
    compare_op("upsample linear", OP_UPSAMPLE, 2, at, &in, 1, false);
    at = A(OP_UPSAMPLE, 3);
    at.scale[0] = at.scale[1] = at.scale[2] = 2;
    at.mode = 1;
    at.align_corners = true;
    compare_op("upsample trilinear align_corners", OP_UPSAMPLE, 3, at, &in3, 1, false);
}
END_TEST

START_TEST(llvm_movement_pointwise)
{
    Shape two[2] = { SH(2, 3, 4, 5), SH(2, 2, 4, 5) };
    compare_op("concat", OP_CONCAT, 2, A(OP_CONCAT, 2), two, 2, false);
    OpAttrs at = A(OP_CROP, 2);
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = 1, at.pad.hi[0] = 2, at.pad.lo[1] = 0, at.pad.hi[1] = 1;
    compare_op("crop", OP_CROP, 2, at, &two[0], 1, false);
    for (int mode = 0; mode < 3; mode++) {
        at = A(OP_PAD, 2);
        at.pad.mode = PAD_EXPLICIT;
        at.pad.lo[0] = 2, at.pad.hi[0] = 1, at.pad.lo[1] = 1, at.pad.hi[1] = 3;
        at.mode = mode;
        at.value = 0.5;
        compare_op(mode == 0 ? "pad constant" : mode == 1 ? "pad reflect" : "pad replicate", OP_PAD, 2, at, &two[0],
                   1, false);
    }
    Shape bc[3] = { SH(2, 3, 4, 5), SH(1, 3, 1, 1), SCALAR };
    compare_op("add broadcast", OP_ADD, 2, A(OP_ADD, 2), bc, 3, false);
    compare_op("mul broadcast", OP_MUL, 2, A(OP_MUL, 2), bc, 2, false);
    const OpKind ks[] = { OP_RELU, OP_LEAKY_RELU, OP_ELU, OP_SIGMOID, OP_TANH, OP_SCALE, OP_SOFTMAX, OP_DROPOUT };
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        at = A(ks[i], 3);
        if (ks[i] == OP_SCALE) at.factor = -1.5;
        Shape s = SH(2, 3, 3, 2, 5);
        compare_op(op_table[ks[i]].name, ks[i], 3, at, &s, 1, false);
    }
    at = A(OP_PRELU, 2);
    compare_op("prelu", OP_PRELU, 2, at, &two[0], 1, false);
}
END_TEST

START_TEST(llvm_norms)
{
    Shape s = SH(2, 3, 5, 4, 3);
    OpAttrs at = A(OP_INSTANCENORM, 3);
    compare_op("instancenorm", OP_INSTANCENORM, 3, at, &s, 1, false);
    at = A(OP_BATCHNORM, 3);
    compare_op("batchnorm inference", OP_BATCHNORM, 3, at, &s, 1, false);
    compare_op("batchnorm training", OP_BATCHNORM, 3, at, &s, 1, true);
}
END_TEST

static void net(const char *path, const char *args, bool training)
{
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    compare_graph(path, c->g, training, codegen_test_seed());
    compiled_free(c);
}

START_TEST(llvm_netdefs)
{
    net("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32", false);
    net("netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16", false);
    net("netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16", false);
    net("netdefs/voxresnet.net", "-D base=4 -D protocol.size=16x16x16", false);
}
END_TEST

/* The LLVM backend against the C backend on the same module and inputs. */
START_TEST(llvm_vs_c_unet2d)
{
    uint64_t seed = codegen_test_seed();
    Compiled *c = compile_file("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32");
    ck_clean(c);
    const Graph *g = c->g;
    char err[1500];
    L3Module *m = lower_graph(g, false, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    L3Llvm *jit = l3_llvm_jit(m, err, sizeof err);
    ck_assert_msg(jit != NULL, "%s", err);
    CBackend *cb = cbackend_compile(m, err, sizeof err);
    ck_assert_msg(cb != NULL, "%s", err);
    RefState *viac = ref_new(g), *vial = ref_new(g);
    ck_assert(viac && vial);
    fill_states(g, viac, vial, seed);
    for (int t = 0; t < g->ntensors; t++)
        if (g->tensors[t].kind == TK_ACTIVATION)
            for (int64_t i = 0; i < viac->numel[t]; i++) viac->buf[t][i] = NAN;
    cbackend_entry(cb, "netc_forward")((void **)viac->buf);
    l3_llvm_entry(jit, "netc_forward")((void **)vial->buf);
    check_close("unet2d", "llvm", "C backend", g, false, vial, viac, seed);
    ref_free(viac);
    ref_free(vial);
    cbackend_free(cb);
    l3_llvm_free(jit);
    l3_module_free(m);
    compiled_free(c);
}
END_TEST

/* ---- every expression kind and operator, against the C backend ----------------------------------- */

enum { SEM_N = 37, SEM_F = 32, SEM_I = 40 };   /* elements; float results and int results per element */

/* x: floats (negative, zero, NaN, infinities), ix: int32 (negative, zero);
 * y[i*SEM_F + r], iy[i*SEM_I + r]: one result r per line below. */
static L3Module *semantics_module(bool with_llabs)
{
    L3Module *m = l3_module_new("semantics", 4);
    L3Kernel *k = l3_kernel_new(m, "k0_semantics", "every L3 expression");
    int x = l3_buf(m, k, 0, L3_F32, SEM_N, false, "x");
    int ix = l3_buf(m, k, 1, L3_I32, SEM_N, false, "ix");
    int y = l3_buf(m, k, 2, L3_F32, SEM_N * SEM_F, true, "y");
    int iy = l3_buf(m, k, 3, L3_I32, SEM_N * SEM_I, true, "iy");
    int i = l3_var(m, k, "i", L3_I32, true);   /* an int32 loop variable */
    L3Block *b = &l3_for(m, &k->body, i, SEM_N, L3_PARALLEL | L3_VECTORIZE)->body;
    L3Expr *I = l3_varref(m, k, i);
    int fv = l3_var(m, k, "f", L3_F32, false), nv = l3_var(m, k, "n", L3_I64, false);
    int bv = l3_var(m, k, "flag", L3_BOOL, false);
    l3_local(m, b, fv, l3_load(m, k, x, I));
    l3_local(m, b, nv, l3_cast(m, L3_I64, l3_load(m, k, ix, I)));
    l3_local(m, b, bv, l3_bin(m, L3_LT, l3_varref(m, k, fv), l3_float(m, 0.25)));
    L3Expr *f = l3_varref(m, k, fv), *n = l3_varref(m, k, nv), *fl = l3_varref(m, k, bv);
    L3Expr *ni = l3_load(m, k, ix, I);   /* int32 */
    /* f where converting it to an integer is defined (not NaN, not huge), else 0 */
    L3Expr *fs = l3_select(m, l3_bin(m, L3_LT, l3_un(m, L3_ABS, f), l3_float(m, 1e6)), f, l3_float(m, 0));
    L3Expr *fr[SEM_F], *ir[SEM_I];
    int nf = 0, ni_ = 0;
    fr[nf++] = l3_bin(m, L3_ADD, f, l3_float(m, 1.5));
    fr[nf++] = l3_bin(m, L3_SUB, f, n);                         /* int converted to float */
    fr[nf++] = l3_bin(m, L3_MUL, f, l3_float(m, -3.25));
    fr[nf++] = l3_bin(m, L3_DIV, f, l3_float(m, 0.3));
    fr[nf++] = l3_bin(m, L3_MOD, f, l3_float(m, 0.7));          /* fmodf */
    fr[nf++] = l3_bin(m, L3_MIN, f, l3_float(m, NAN));          /* fminf ignores the NaN */
    fr[nf++] = l3_bin(m, L3_MAX, l3_float(m, NAN), f);
    fr[nf++] = l3_bin(m, L3_MIN, f, l3_float(m, 0.125));
    fr[nf++] = l3_bin(m, L3_MAX, f, n);
    fr[nf++] = l3_un(m, L3_NEG, f);
    fr[nf++] = l3_un(m, L3_EXP, f);
    fr[nf++] = l3_un(m, L3_LOG, f);                             /* NaN for negatives */
    fr[nf++] = l3_un(m, L3_SQRT, l3_un(m, L3_ABS, f));
    fr[nf++] = l3_un(m, L3_TANH, f);
    fr[nf++] = l3_un(m, L3_ABS, f);
    fr[nf++] = l3_un(m, L3_FLOOR, f);
    fr[nf++] = l3_un(m, L3_EXPM1, f);
    fr[nf++] = l3_fma(m, f, l3_float(m, 1.0 / 3.0), l3_float(m, 0.1));
    fr[nf++] = l3_select(m, fl, f, l3_float(m, -7));
    fr[nf++] = l3_cast(m, L3_F32, n);
    fr[nf++] = l3_cast(m, L3_F32, l3_bin(m, L3_LE, f, l3_float(m, 0)));   /* bool to float: 1, never -1 */
    /* lazy ?: — the other arm would read far out of bounds */
    fr[nf++] = l3_select(m, l3_bin(m, L3_LT, n, l3_int(m, 1000)), f,
                         l3_load(m, k, x, l3_bin(m, L3_ADD, I, l3_int(m, (int64_t)1 << 40))));
    fr[nf++] = l3_select(m, l3_bin(m, L3_LE, l3_int(m, 1000), n),
                         l3_load(m, k, x, l3_bin(m, L3_SUB, I, l3_int(m, (int64_t)1 << 40))), l3_float(m, 2));
    fr[nf++] = l3_un(m, L3_EXP, n);                             /* expf of an int */
    fr[nf++] = l3_bin(m, L3_ADD, l3_float(m, INFINITY), f);
    fr[nf++] = l3_un(m, L3_NEG, l3_float(m, 0));                /* -0.0 */
    ck_assert_int_le(nf, SEM_F);

    L3Expr *three = l3_int(m, 3), *mthree = l3_int(m, -3);
    ir[ni_++] = l3_bin(m, L3_DIV, n, three);                    /* truncation toward zero */
    ir[ni_++] = l3_bin(m, L3_MOD, n, three);                    /* sign of the dividend */
    ir[ni_++] = l3_bin(m, L3_DIV, n, mthree);
    ir[ni_++] = l3_bin(m, L3_MOD, n, mthree);
    ir[ni_++] = l3_bin(m, L3_DIV, ni, l3_int(m, 2));
    ir[ni_++] = l3_bin(m, L3_MUL, n, l3_int(m, 1000003));
    ir[ni_++] = l3_bin(m, L3_SUB, ni, n);
    ir[ni_++] = l3_bin(m, L3_ADD, I, ni);                       /* int32 + int32 */
    ir[ni_++] = l3_bin(m, L3_MIN, n, l3_int(m, 2));
    ir[ni_++] = l3_bin(m, L3_MAX, ni, l3_int(m, -2));
    ir[ni_++] = l3_un(m, L3_NEG, n);
    ir[ni_++] = l3_cast(m, L3_I32, l3_bin(m, L3_MUL, fs, l3_float(m, 10)));   /* truncation */
    ir[ni_++] = l3_cast(m, L3_I64, l3_un(m, L3_FLOOR, l3_bin(m, L3_MUL, fs, l3_float(m, 10))));
    ir[ni_++] = l3_bin(m, L3_LT, n, l3_int(m, 0));
    ir[ni_++] = l3_bin(m, L3_LE, f, n);
    ir[ni_++] = l3_bin(m, L3_EQ, n, l3_int(m, 0));
    ir[ni_++] = l3_bin(m, L3_NE, f, f);                         /* true for NaN */
    ir[ni_++] = l3_bin(m, L3_EQ, f, f);                         /* false for NaN */
    ir[ni_++] = l3_bin(m, L3_AND, fl, l3_bin(m, L3_LT, l3_int(m, 0), n));
    ir[ni_++] = l3_bin(m, L3_OR, fl, l3_bin(m, L3_EQ, n, l3_int(m, 2)));
    ir[ni_++] = l3_un(m, L3_NOT, fl);
    ir[ni_++] = l3_un(m, L3_NOT, n);
    ir[ni_++] = l3_un(m, L3_NOT, f);                            /* !f: f == 0 */
    ir[ni_++] = l3_cast(m, L3_BOOL, l3_bin(m, L3_MUL, fs, l3_float(m, 2)));   /* (int) */
    ir[ni_++] = l3_select(m, fl, n, l3_int(m, 99));
    ir[ni_++] = l3_select(m, n, l3_int(m, 5), l3_int(m, 6));    /* int condition */
    ir[ni_++] = l3_select(m, f, l3_int(m, 5), l3_int(m, 6));    /* float condition: NaN is true */
    /* lazy && and ||: division by zero and out-of-bounds loads never run */
    ir[ni_++] = l3_bin(m, L3_AND, l3_bin(m, L3_NE, n, l3_int(m, 0)), l3_bin(m, L3_LT, l3_bin(m, L3_DIV, l3_int(m, 7), n), l3_int(m, 2)));
    ir[ni_++] = l3_bin(m, L3_OR, l3_bin(m, L3_EQ, n, l3_int(m, 0)), l3_bin(m, L3_LT, l3_bin(m, L3_MOD, l3_int(m, 7), n), l3_int(m, 2)));
    ir[ni_++] = l3_bin(m, L3_AND, l3_bin(m, L3_LT, l3_int(m, 1000), n),
                       l3_bin(m, L3_LT, l3_float(m, 0), l3_load(m, k, x, l3_bin(m, L3_MUL, I, l3_int(m, (int64_t)1 << 40)))));
    ir[ni_++] = l3_cast(m, L3_I32, l3_bin(m, L3_MUL, l3_float(m, 0.5), n));
    ir[ni_++] = l3_bin(m, L3_DIV, l3_bin(m, L3_MUL, l3_int(m, 5000000000LL), l3_int(m, 1)), l3_bin(m, L3_ADD, n, l3_int(m, 1000)));
    ck_assert_int_le(ni_, SEM_I - 3);
    if (with_llabs)   /* l3_print_c does not include <stdlib.h> for llabs: C cannot compile this one */
        l3_store(m, b, iy, l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, I, l3_int(m, SEM_I)), l3_int(m, SEM_I - 3)),
                 l3_un(m, L3_ABS, n), false);
    for (int r = 0; r < nf; r++)
        l3_store(m, b, y, l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, I, l3_int(m, SEM_F)), l3_int(m, r)), fr[r], false);
    for (int r = 0; r < ni_; r++)
        l3_store(m, b, iy, l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, I, l3_int(m, SEM_I)), l3_int(m, r)), ir[r], false);
    /* if / else, a block, assignment, accumulation (float and int, int += float) */
    L3Expr *at_f = l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, I, l3_int(m, SEM_F)), l3_int(m, SEM_F - 1));
    L3Expr *at_i = l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, I, l3_int(m, SEM_I)), l3_int(m, SEM_I - 1));
    L3Stmt *s = l3_if(m, b, l3_bin(m, L3_LT, l3_int(m, 0), n));
    l3_store(m, &s->body, y, at_f, l3_float(m, 1), false);
    l3_store(m, &s->els, y, at_f, l3_float(m, -1), false);
    L3Stmt *blk = l3_for(m, b, l3_var(m, k, "unused", L3_I64, true), 1, 0);   /* a one-trip loop ... */
    blk->kind = L3S_BLOCK;                                                      /* ... made a plain block */
    l3_assign(m, &blk->body, fv, l3_bin(m, L3_MUL, f, l3_float(m, 2)));
    l3_store(m, &blk->body, y, at_f, f, true);
    l3_store(m, &blk->body, iy, at_i, l3_int(m, 7), false);
    l3_store(m, &blk->body, iy, at_i, l3_bin(m, L3_MUL, l3_float(m, 2.75), l3_cast(m, L3_F32, n)), true);
    L3Expr *at_i2 = l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, I, l3_int(m, SEM_I)), l3_int(m, SEM_I - 2));
    int j = l3_var(m, k, "j", L3_I64, true);
    l3_store(m, b, iy, at_i2, l3_int(m, 0), false);
    L3Block *jb = &l3_for(m, b, j, 5, L3_UNROLL)->body;
    l3_store(m, jb, iy, at_i2, l3_bin(m, L3_MUL, l3_varref(m, k, j), n), true);
    l3_for(m, b, l3_var(m, k, "never", L3_I64, true), 0, 0);    /* zero trips */
    L3Entry *e = l3_entry_new(m, "netc_semantics");
    l3_entry_call(e, 0);
    l3_entry_call(e, 0);   /* twice: accumulation sees the first call's values */
    l3_entry_new(m, "netc_empty");
    return m;
}

static void semantics_inputs(float *xv, int32_t *iv)
{
    static const float special[] = { 0.0f, -0.0f, NAN, INFINITY, -INFINITY, 0.25f, -0.5f, 1e-30f, 3.5f, -2.75f };
    for (int i = 0; i < SEM_N; i++) {
        xv[i] = i < 10 ? special[i] : (float)sin(i * 1.7) * (float)(i % 5 + 1);
        iv[i] = (int32_t)((i * 7919) % 23) - 11;   /* -11 .. 11, zero included */
    }
}

START_TEST(llvm_semantics)
{
    char err[1500];
    L3Module *m = semantics_module(true), *mc = semantics_module(false);
    L3Llvm *jit = l3_llvm_jit(m, err, sizeof err);
    ck_assert_msg(jit != NULL, "%s", err);
    CBackend *cb = cbackend_compile(mc, err, sizeof err);
    ck_assert_msg(cb != NULL, "%s", err);
    float x[SEM_N], yc[SEM_N * SEM_F], yl[SEM_N * SEM_F];
    int32_t ix[SEM_N], iyc[SEM_N * SEM_I], iyl[SEM_N * SEM_I];
    semantics_inputs(x, ix);
    for (int i = 0; i < SEM_N * SEM_F; i++) yc[i] = yl[i] = 12345.0f;
    for (int i = 0; i < SEM_N * SEM_I; i++) iyc[i] = iyl[i] = 12345;
    void *tc[4] = { x, ix, yc, iyc }, *tl[4] = { x, ix, yl, iyl };
    cbackend_entry(cb, "netc_semantics")(tc);
    l3_llvm_entry(jit, "netc_semantics")(tl);
    l3_llvm_entry(jit, "netc_empty")(tl);
    for (int i = 0; i < SEM_N * SEM_F; i++) {
        float a = yl[i], c = yc[i];
        bool same = (isnan(a) && isnan(c)) || (a == c && signbit(a) == signbit(c)) ||
                    fabsf(a - c) <= 1e-6f * fabsf(c);
        ck_assert_msg(same, "y[%d] (element %d, result %d): llvm %.9g, C %.9g", i, i / SEM_F, i % SEM_F, a, c);
    }
    for (int i = 0; i < SEM_N; i++) {   /* llabs: JIT only */
        ck_assert_int_eq(iyl[i * SEM_I + SEM_I - 3], ix[i] < 0 ? -ix[i] : ix[i]);
        iyl[i * SEM_I + SEM_I - 3] = iyc[i * SEM_I + SEM_I - 3];
    }
    for (int i = 0; i < SEM_N * SEM_I; i++)
        ck_assert_msg(iyl[i] == iyc[i], "iy[%d] (element %d, result %d): llvm %d, C %d", i, i / SEM_I, i % SEM_I,
                      iyl[i], iyc[i]);
    cbackend_free(cb);
    l3_llvm_free(jit);
    l3_module_free(m);
    l3_module_free(mc);
}
END_TEST

/* ---- files, errors ------------------------------------------------------------------------------- */

static char *tmp_path(char *dir, size_t n, const char *file, char *out, size_t outn)
{
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, n, "%s/netc-llvm-XXXXXX", tmp && *tmp && strlen(tmp) < 60 ? tmp : "/tmp");
        ck_assert_ptr_nonnull(mkdtemp(dir));
    }
    snprintf(out, outn, "%s/%s", dir, file);
    return out;
}

START_TEST(llvm_emit)
{
    Compiled *c = compile_file("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32");
    ck_clean(c);
    char err[1500], dir[128] = "", obj[192], ll[192], s[192];
    L3Module *m = lower_graph(c->g, false, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    tmp_path(dir, sizeof dir, "net.o", obj, sizeof obj);
    tmp_path(dir, sizeof dir, "net.ll", ll, sizeof ll);
    tmp_path(dir, sizeof dir, "net.s", s, sizeof s);
    ck_assert_msg(l3_llvm_emit(m, obj, L3_LLVM_OBJECT, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(l3_llvm_emit(m, ll, L3_LLVM_IR, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(l3_llvm_emit(m, s, L3_LLVM_ASM, err, sizeof err) == 0, "%s", err);
    size_t n;
    char *text = read_file(obj, &n);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(n > 64 && memcmp(text, "\177ELF", 4) == 0, "%s is not an ELF object", obj);
    free(text);
    text = read_file(ll, &n);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strstr(text, "llvm.fmuladd") != NULL, "no llvm.fmuladd in %s", ll);
    ck_assert_msg(strstr(text, "define void @netc_forward(ptr") != NULL, "no entry in %s", ll);
    free(text);
    text = read_file(s, &n);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strstr(text, "netc_forward:") != NULL, "no entry in %s", s);
    free(text);
    ck_assert_int_ne(l3_llvm_emit(m, "/nonexistent-dir/x.o", L3_LLVM_OBJECT, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "/nonexistent-dir/x.o") != NULL, "%s", err);
    ck_assert_int_ne(l3_llvm_emit(m, obj, 42, err, sizeof err), 0);
    unlink(obj);
    unlink(ll);
    unlink(s);
    rmdir(dir);
    l3_module_free(m);
    compiled_free(c);
}
END_TEST

START_TEST(llvm_errors)
{
    char err[1500];
    /* an unknown expression kind */
    L3Module *m = l3_module_new("bad", 1);
    L3Kernel *k = l3_kernel_new(m, "k0_bad", "");
    int y = l3_buf(m, k, 0, L3_F32, 4, true, "y");
    int i = l3_var(m, k, "i", L3_I64, true);
    L3Block *b = &l3_for(m, &k->body, i, 4, 0)->body;
    L3Expr *v = l3_float(m, 1);
    l3_store(m, b, y, l3_varref(m, k, i), v, false);
    l3_entry_call(l3_entry_new(m, "netc_forward"), 0);
    v->kind = (L3ExprKind)77;
    err[0] = 0;
    ck_assert_ptr_null(l3_llvm_jit(m, err, sizeof err));
    ck_assert_msg(strstr(err, "unknown expression kind 77") != NULL, "%s", err);
    ck_assert_int_ne(l3_llvm_emit(m, "/tmp/never-written.o", L3_LLVM_OBJECT, err, sizeof err), 0);
    /* an unknown operator */
    v->kind = L3E_UN;
    v->op = (L3Op)99;
    v->a = l3_float(m, 2);
    ck_assert_ptr_null(l3_llvm_jit(m, err, sizeof err));
    ck_assert_msg(strstr(err, "unknown unary operator 99") != NULL, "%s", err);
    v->kind = L3E_BIN;
    v->b = l3_float(m, 2);
    ck_assert_ptr_null(l3_llvm_jit(m, err, sizeof err));
    ck_assert_msg(strstr(err, "unknown binary operator 99") != NULL, "%s", err);
    /* an unknown statement kind, a bad variable, a float index, a tensor out of range */
    v->kind = L3E_FLOAT;
    b->s[0]->kind = (L3StmtKind)55;
    ck_assert_ptr_null(l3_llvm_jit(m, err, sizeof err));
    ck_assert_msg(strstr(err, "unknown statement kind 55") != NULL, "%s", err);
    b->s[0]->kind = L3S_STORE;
    L3Expr *idx = b->s[0]->index;
    idx->var = 9;
    ck_assert_ptr_null(l3_llvm_jit(m, err, sizeof err));
    ck_assert_msg(strstr(err, "bad variable 9") != NULL, "%s", err);
    b->s[0]->index = l3_float(m, 0);
    ck_assert_ptr_null(l3_llvm_jit(m, err, sizeof err));
    ck_assert_msg(strstr(err, "indexed with a float") != NULL, "%s", err);
    idx->var = i;
    b->s[0]->index = idx;
    k->bufs[0].tensor = 3;
    ck_assert_ptr_null(l3_llvm_jit(m, err, sizeof err));
    ck_assert_msg(strstr(err, "tensor 3 of 1") != NULL, "%s", err);
    k->bufs[0].tensor = 0;
    /* repaired, it runs */
    L3Llvm *jit = l3_llvm_jit(m, err, sizeof err);
    ck_assert_msg(jit != NULL, "%s", err);
    float out[4] = { 0 };
    void *t[1] = { out };
    l3_llvm_entry(jit, "netc_forward")(t);
    for (int j = 0; j < 4; j++) ck_assert(out[j] == 1.0f);
    l3_llvm_free(jit);
    /* an entry named like a kernel */
    l3_entry_new(m, "k0_bad");
    ck_assert_ptr_null(l3_llvm_jit(m, err, sizeof err));
    ck_assert_msg(strstr(err, "two functions are named k0_bad") != NULL, "%s", err);
    l3_module_free(m);
    ck_assert_ptr_null(l3_llvm_jit(NULL, err, sizeof err));
    l3_llvm_free(NULL);
    ck_assert_ptr_null(l3_llvm_entry(NULL, "netc_forward"));
}
END_TEST

Suite *llvm_suite(void)
{
    Suite *s = suite_create("llvm");
    TCase *tc = tcase_create("jit");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, llvm_semantics);
    tcase_add_test(tc, llvm_errors);
    tcase_add_test(tc, llvm_conv);
    tcase_add_test(tc, llvm_upconv);
    tcase_add_test(tc, llvm_pool_upsample);
    tcase_add_test(tc, llvm_movement_pointwise);
    tcase_add_test(tc, llvm_norms);
    tcase_add_test(tc, llvm_netdefs);
    tcase_add_test(tc, llvm_vs_c_unet2d);
    tcase_add_test(tc, llvm_emit);
    suite_add_tcase(s, tc);
    return s;
}
