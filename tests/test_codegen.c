/* test_codegen.c — generated code (L3 loop IR through the C printer, built
 * with the system C compiler) against the reference executor.
 *
 * Every op is run on odd shapes in 1D, 2D and 3D, and the shipped netdefs
 * at small sizes, inference and training forward.  Before each run every
 * output is poisoned with NaN, so an element the kernel forgets to write
 * fails; inputs are drawn fresh from a seed printed on failure.
 *
 * Tolerance: the reference accumulates in double, the kernels in float.
 * |got - want| <= 1e-4 * (max |want| of the tensor) + 1e-5 * |want|: float
 * rounding of a sum of K terms is about K * 6e-8 of the largest partial
 * sum, and the biggest reductions here (convolutions over 3^3 * 64 taps,
 * normalizations over a few thousand voxels) stay well inside 1e-4.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbackend.h"
#include "lower.h"
#include "ref.h"
#include "support.h"
#include "ref_fixture.h"

#define TOL_ABS 1e-4
#define TOL_REL 1e-5

static uint64_t test_seed(void)
{
    const char *s = getenv("NETC_TEST_SEED");
    if (s && *s) return strtoull(s, NULL, 10);
    return (uint64_t)time(NULL);
}

/* Run g with the reference and with generated C from the same inputs and
 * parameters; compare every output (and in training the running statistics). */
static void compare_graph(const char *what, const Graph *g, bool training, uint64_t seed)
{
    char err[1500];
    L3Module *m = lower_graph(g, training, err, sizeof err);
    ck_assert_msg(m != NULL, "%s: %s", what, err);
    CBackend *cb = cbackend_compile(m, err, sizeof err);
    ck_assert_msg(cb != NULL, "%s: %s", what, err);
    NetcEntry run = cbackend_entry(cb, training ? "netc_train_forward" : "netc_forward");
    ck_assert_ptr_nonnull(run);

    RefState *want = ref_new(g), *got = ref_new(g);
    ck_assert(want && got);
    ref_init_params(g, want, seed);
    for (int t = 0; t < g->ntensors; t++) {
        const Tensor *te = &g->tensors[t];
        if (te->kind == TK_INPUT) ref_fill_uniform(want, t, seed + 17 * (uint64_t)t, -1, 1);
        if (te->kind == TK_PARAM && te->dtype == DT_F32) {
            /* running variances must stay positive; everything else gets noise too */
            bool var = strstr(te->name, "running_var") != NULL;
            if (var) ref_fill_uniform(want, t, seed + 31 * (uint64_t)t, 0.5, 1.5);
            else if (strstr(te->name, "running_mean")) ref_fill_uniform(want, t, seed + 31 * (uint64_t)t, -0.2, 0.2);
        }
    }
    for (int t = 0; t < g->ntensors; t++) {
        memcpy(got->buf[t], want->buf[t], sizeof(float) * (size_t)want->numel[t]);
        if (g->tensors[t].kind == TK_ACTIVATION)
            for (int64_t i = 0; i < got->numel[t]; i++) got->buf[t][i] = NAN;
    }
    ck_assert_msg(ref_forward(g, want, training, 1, err, sizeof err) == 0, "%s: %s", what, err);
    run((void **)got->buf);
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
                          "%s (seed %llu): %s[%lld]: generated %.9g, reference %.9g (max |ref| %g)", what,
                          (unsigned long long)seed, te->name, (long long)i, a, b, top);
        }
        checked++;
    }
    ck_assert_int_gt(checked, 0);
    ref_free(want);
    ref_free(got);
    cbackend_free(cb);
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
    compare_graph(what, g, training, test_seed());
    graph_free(g);
}

#define A attrs

START_TEST(codegen_conv)
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

START_TEST(codegen_upconv)
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

START_TEST(codegen_pool_upsample)
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
    at.align_corners = true;
    at = A(OP_UPSAMPLE, 3);
    at.scale[0] = at.scale[1] = at.scale[2] = 2;
    at.mode = 1;
    at.align_corners = true;
    compare_op("upsample trilinear align_corners", OP_UPSAMPLE, 3, at, &in3, 1, false);
}
END_TEST

START_TEST(codegen_movement_pointwise)
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

START_TEST(codegen_norms)
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
    compare_graph(path, c->g, training, test_seed());
    compiled_free(c);
}

START_TEST(codegen_netdefs)
{
    net("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32", false);
    net("netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16", false);
    net("netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16", false);
    net("netdefs/voxresnet.net", "-D base=4 -D protocol.size=16x16x16", false);
}
END_TEST

Suite *codegen_suite(void)
{
    Suite *s = suite_create("codegen");
    TCase *tc = tcase_create("c");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, codegen_conv);
    tcase_add_test(tc, codegen_upconv);
    tcase_add_test(tc, codegen_pool_upsample);
    tcase_add_test(tc, codegen_movement_pointwise);
    tcase_add_test(tc, codegen_norms);
    tcase_add_test(tc, codegen_netdefs);
    suite_add_tcase(s, tc);
    return s;
}
