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

#include "autodiff.h"
#include "cbackend.h"
#include "fuse.h"
#include "l3_llvm.h"
#include "memplan.h"
#include "lower.h"
#include "ref.h"
#include "codegen_fixture.h"
#include "support.h"
#include "ref_fixture.h"

/* Noise-level values are judged against the graph's scale (see
 * codegen_compare.c). */
#define TOL_FLOOR (1e-5 * graph_top)

/* Run g `steps` times with the reference and with generated C from the same
 * inputs and parameters; compare every float tensor: activations,
 * gradients, losses, updated parameters, optimizer state and running
 * statistics (tests/codegen_compare.c). */
static void compare_graph_steps(const char *what, const Graph *g, bool training, uint64_t seed, int steps, bool fused)
{
    char msg[2000];
    int rc = codegen_compare(what, g, training, seed, steps, fused, CG_C, NULL, msg, sizeof msg);
    ck_assert_msg(rc == 0, "%s", msg);
}

static void compare_graph(const char *what, const Graph *g, bool training, uint64_t seed)
{
    compare_graph_steps(what, g, training, seed, 1, false);
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

/* The gradient of one op: each float input of rank >= 3 comes out of a
 * trainable 1x1 convolution (so autodiff differentiates it), the op's output
 * is multiplied by a random tensor r and that product seeds the backward
 * pass (dy = r).  Forward, every grad node and the SGD update are compared. */
static void compare_op_grad(const char *what, OpKind k, int sr, OpAttrs at, const Shape *ins, int nin)
{
    Graph *g = graph_new("t", "p", sr);
    SrcLoc nl;
    memset(&nl, 0, sizeof nl);
    int in[8];
    for (int j = 0; j < nin; j++) {
        int x = graph_add_tensor(g, "x", ins[j], DT_F32, TK_INPUT);
        graph_add_input(g, "x", x, nl);
        in[j] = x;
        if (ins[j].rank < 3) continue;
        OpAttrs ca = attrs(OP_CONV, ins[j].rank - 2);
        ca.channels = ins[j].d[1];
        for (int i = 0; i < ins[j].rank - 2; i++) ca.kernel[i] = 1;
        const Tensor *tp1[1] = { &g->tensors[x] };
        ShapeCtx cx1 = { NULL, nl, NULL, ins[j].rank - 2, tp1, 1, NULL, NULL };
        Shape cs;
        ck_assert(op_table[OP_CONV].shape(&cx1, &ca, &ins[j], 1, &cs));
        int h = graph_add_tensor(g, "h", cs, DT_F32, TK_ACTIVATION);
        char nm[16];
        snprintf(nm, sizeof nm, "pre%d", j);
        int node = graph_add_node(g, OP_CONV, nm, &x, 1, h, &ca, nl);
        g->tensors[h].producer = node;
        ParamSpec ps[NODE_MAX_PARAMS];
        int np = op_table[OP_CONV].params(&ca, &ins[j], 1, ps);
        for (int q = 0; q < np; q++) graph_add_param(g, node, &ps[q]);
        in[j] = h;
    }
    const Tensor *tp[8];
    for (int j = 0; j < nin; j++) tp[j] = &g->tensors[in[j]];
    ShapeCtx cx = { NULL, nl, NULL, sr, tp, nin, NULL, NULL };
    Shape os;
    ck_assert_msg(op_table[k].shape(&cx, &at, ins, nin, &os), "%s: shape rule failed", what);
    int out = graph_add_tensor(g, "y", os, DT_F32, TK_ACTIVATION);
    int node = graph_add_node(g, k, op_table[k].name, in, nin, out, &at, nl);
    g->tensors[out].producer = node;
    ParamSpec ps[NODE_MAX_PARAMS];
    int np = op_table[k].params(&at, ins, nin, ps);
    for (int j = 0; j < np; j++) graph_add_param(g, node, &ps[j]);
    int r = graph_add_tensor(g, "r", os, DT_F32, TK_INPUT);
    graph_add_input(g, "r", r, nl);
    int yr = graph_add_tensor(g, "yr", os, DT_F32, TK_ACTIVATION);
    int two[2] = { out, r };
    OpAttrs ma = attrs(OP_MUL, sr);
    g->tensors[yr].producer = graph_add_node(g, OP_MUL, "seed", two, 2, yr, &ma, nl);
    graph_add_output(g, "yr", yr, nl);
    ck_assert_int_gt(autodiff(g, yr), 0);
    const double sgd[4] = { 0.01, 0.9, 1, 1e-4 };
    ck_assert_int_gt(append_optimizer(g, "sgd", sgd), 0);
    compare_graph_steps(what, g, true, codegen_test_seed(), getenv("NETC_STEPS") ? atoi(getenv("NETC_STEPS")) : 2, false);
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

/* The register-tiled convolutions (compiler/lower_sched.c): output
 * channels that are not a multiple of the tile's 8 (remainder tiles), rows
 * wide enough for the runtime interior tiles plus constant border and
 * remainder tiles, stride, dilation, asymmetric padding, groups, 1D/3D;
 * upconvs with kernel == stride (output padding: positions only the bias
 * reaches). */
START_TEST(codegen_conv_tiles)
{
    OpAttrs at = A(OP_CONV, 2);
    at.channels = 11;
    at.kernel[0] = at.kernel[1] = 3;
    at.pad.mode = PAD_SAME;
    Shape in = SH(1, 3, 4, 70);
    compare_op("tiled conv 2d 11 channels width 70", OP_CONV, 2, at, &in, 1, false);
    at.channels = 9;
    at.stride[1] = 2;
    at.dilation[1] = 2;
    at.kernel[1] = 4;
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = 0, at.pad.hi[0] = 2, at.pad.lo[1] = 3, at.pad.hi[1] = 1;
    Shape in2 = SH(2, 2, 5, 151);
    compare_op("tiled conv 2d stride dilation asymmetric padding", OP_CONV, 2, at, &in2, 1, false);
    at = A(OP_CONV, 2);
    at.channels = 18;
    at.groups = 2;
    at.kernel[0] = at.kernel[1] = 3;
    at.pad.mode = PAD_SAME;
    at.bias = false;
    Shape ing = SH(1, 4, 3, 83);
    compare_op("tiled conv 2d groups remainder", OP_CONV, 2, at, &ing, 1, false);
    at = A(OP_CONV, 3);
    at.channels = 10;
    at.kernel[0] = at.kernel[1] = at.kernel[2] = 3;
    at.dilation[0] = 2;
    at.pad.mode = PAD_SAME;
    Shape in3 = SH(1, 2, 5, 3, 53);
    compare_op("tiled conv 3d dilation", OP_CONV, 3, at, &in3, 1, false);
    at = A(OP_CONV, 1);
    at.channels = 3;
    at.kernel[0] = 5;
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = 4, at.pad.hi[0] = 0;
    Shape in1 = SH(2, 3, 100);
    compare_op("tiled conv 1d", OP_CONV, 1, at, &in1, 1, false);
    at.kernel[0] = 9;
    at.pad.lo[0] = 0;
    Shape in1s = SH(1, 2, 6);   /* no interior at all: taps beyond the row on both sides */
    at.pad.lo[0] = 2, at.pad.hi[0] = 3;
    compare_op("tiled conv 1d kernel wider than the row", OP_CONV, 1, at, &in1s, 1, false);

    at = A(OP_UPCONV, 2);
    at.channels = 10;
    at.kernel[0] = at.kernel[1] = 2;
    Shape inu = SH(2, 3, 3, 37);
    compare_op("tiled upconv 2d k2 s2", OP_UPCONV, 2, at, &inu, 1, false);
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = at.pad.lo[1] = 1;
    at.pad.hi[0] = at.pad.hi[1] = 0;
    at.out_pad[0] = at.out_pad[1] = 1;
    compare_op("tiled upconv 2d padding out_pad", OP_UPCONV, 2, at, &inu, 1, false);
    at = A(OP_UPCONV, 3);
    at.channels = 6;
    at.groups = 2;
    at.kernel[0] = at.kernel[1] = at.kernel[2] = 2;
    at.bias = false;
    Shape inu3 = SH(1, 4, 2, 3, 20);
    compare_op("tiled upconv 3d groups", OP_UPCONV, 3, at, &inu3, 1, false);
    at = A(OP_UPCONV, 1);
    at.channels = 2;
    at.kernel[0] = 3;
    at.stride[0] = 3;
    Shape inu1 = SH(1, 5, 50);
    compare_op("tiled upconv 1d k3 s3", OP_UPCONV, 1, at, &inu1, 1, false);

    /* stride 1 transposed: a convolution with the taps reversed */
    at = A(OP_UPCONV, 2);
    at.channels = 9;
    at.kernel[0] = at.kernel[1] = 3;
    at.stride[0] = at.stride[1] = 1;
    at.dilation[1] = 2;
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = 1, at.pad.hi[0] = 0, at.pad.lo[1] = 2, at.pad.hi[1] = 1;
    Shape inus = SH(1, 3, 4, 66);
    compare_op("tiled upconv 2d stride 1 dilation padding", OP_UPCONV, 2, at, &inus, 1, false);
    at = A(OP_CONV, 2);
    at.channels = 5;
    at.kernel[0] = at.kernel[1] = 3;
    at.pad.mode = PAD_SAME;
    Shape ingr = SH(1, 11, 3, 70);   /* the input gradient: 11 destination channels */
    compare_op_grad("tiled grad conv 2d stride 1", OP_CONV, 2, at, &ingr, 1);
}
END_TEST

/* The tiled convolutions fused: epilogues (batchnorm, relu) through the
 * accumulator row, inlined concats read part by part, output channels that
 * leave a remainder tile (base 6: 6, 12, 24, ...), rows wide enough for
 * the runtime interior tiles. */
START_TEST(codegen_conv_tiles_fused)
{
    const char *nets[][2] = {
        { "netdefs/unet2d.net", "-D base=6 -D protocol.size=80x80" },
        { "netdefs/unet3d.net", "-D base=4 -D protocol.size=8x16x72" },
    };
    for (size_t i = 0; i < sizeof nets / sizeof nets[0]; i++) {
        Compiled *c = compile_file(nets[i][0], nets[i][1]);
        ck_clean(c);
        char what[256];
        snprintf(what, sizeof what, "%s %s (fused)", nets[i][0], nets[i][1]);
        compare_graph_steps(what, c->g, false, codegen_test_seed(), 1, true);
        compiled_free(c);
    }
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

/* The debugging switches that select the older convolution schedules
 * (docs/architecture.md): NETC_CONV_ROWS=1, the row schedule for every
 * convolution; NETC_CONV_ELEMENTWISE=1, one output element at a time (and
 * the per-element weight gradient).  Both must stay correct. */
START_TEST(codegen_schedule_switches)
{
    /* the older schedules, and the weight-gradient tiles (lower_sched_grad.c)
     * at a shape that leaves remainder tiles, several channel pairs, narrow
     * chunks and a last block of fewer rows, also for a strided upconv's
     * weight gradient (NETC_WGRAD_STRIDED) */
    static const char *const sw[][3] = {
        { "NETC_CONV_ROWS", "1", NULL }, { "NETC_CONV_ELEMENTWISE", "1", NULL }, { "NETC_WGRAD_LANES", "1", NULL },
        { "NETC_UPCONV_GRAD_ELEMENTWISE", "1", NULL }, { "NETC_WGRAD_TILE", "3x2x5", "NETC_WGRAD_BLOCK" },
        { "NETC_CONV_CBLOCK", "0", NULL }, { "NETC_CONV_CBLOCK", "2", NULL },   /* one channel sum; blocks with a remainder */
    };
    for (int k = 0; k < (int)(sizeof sw / sizeof sw[0]); k++) {
        setenv(sw[k][0], sw[k][1], 1);
        if (sw[k][2]) setenv(sw[k][2], "21", 1), setenv("NETC_WGRAD_STRIDED", "1", 1);
        char what[96];
        OpAttrs at = A(OP_CONV, 2);
        at.channels = 5;
        at.kernel[0] = at.kernel[1] = 3;
        at.pad.mode = PAD_SAME;
        at.stride[0] = 2;
        Shape in = SH(2, 3, 7, 6);
        snprintf(what, sizeof what, "conv 2d (%s)", sw[k][0]);
        compare_op(what, OP_CONV, 2, at, &in, 1, false);
        snprintf(what, sizeof what, "grad conv 2d (%s)", sw[k][0]);
        compare_op_grad(what, OP_CONV, 2, at, &in, 1);
        at = A(OP_CONV, 3);
        at.channels = 4;
        at.groups = 2;
        at.kernel[0] = 1, at.kernel[1] = 3, at.kernel[2] = 2;
        at.pad.mode = PAD_VALID;
        Shape in3 = SH(1, 6, 3, 5, 4);
        snprintf(what, sizeof what, "conv 3d groups (%s)", sw[k][0]);
        compare_op(what, OP_CONV, 3, at, &in3, 1, false);
        snprintf(what, sizeof what, "grad conv 3d groups (%s)", sw[k][0]);
        compare_op_grad(what, OP_CONV, 3, at, &in3, 1);
        at = A(OP_UPCONV, 2);
        at.channels = 3;
        at.kernel[0] = at.kernel[1] = 2;
        Shape inu = SH(2, 4, 3, 5);
        snprintf(what, sizeof what, "upconv k2 s2 (%s)", sw[k][0]);
        compare_op(what, OP_UPCONV, 2, at, &inu, 1, false);
        snprintf(what, sizeof what, "grad upconv k2 s2 (%s)", sw[k][0]);
        compare_op_grad(what, OP_UPCONV, 2, at, &inu, 1);
        unsetenv(sw[k][0]);
        if (sw[k][2]) unsetenv(sw[k][2]), unsetenv("NETC_WGRAD_STRIDED");
    }
}
END_TEST

START_TEST(codegen_grad_conv_pool)
{
    OpAttrs at = attrs(OP_CONV, 2);
    at.channels = 4;
    at.kernel[0] = at.kernel[1] = 3;
    at.pad.mode = PAD_SAME;
    at.stride[0] = 2;
    Shape in = SH(2, 3, 7, 6);
    compare_op_grad("grad conv 2d stride same", OP_CONV, 2, at, &in, 1);
    at = attrs(OP_CONV, 3);
    at.channels = 4;
    at.groups = 2;
    at.kernel[0] = 1, at.kernel[1] = 3, at.kernel[2] = 2;
    at.dilation[1] = 2;
    at.pad.mode = PAD_VALID;
    Shape in3 = SH(1, 2, 3, 6, 4);
    compare_op_grad("grad conv 3d groups dilation", OP_CONV, 3, at, &in3, 1);
    at = attrs(OP_UPCONV, 2);
    at.channels = 3;
    at.kernel[0] = at.kernel[1] = 3;
    at.stride[0] = at.stride[1] = 2;
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = at.pad.lo[1] = 1;
    at.pad.hi[0] = at.pad.hi[1] = 1;
    at.out_pad[0] = at.out_pad[1] = 1;
    Shape inu = SH(2, 2, 3, 4);
    compare_op_grad("grad upconv", OP_UPCONV, 2, at, &inu, 1);
    at = attrs(OP_MAXPOOL, 2);
    at.kernel[0] = at.kernel[1] = 2;
    compare_op_grad("grad maxpool", OP_MAXPOOL, 2, at, &in, 1);
    at = attrs(OP_AVGPOOL, 2);
    at.kernel[0] = at.kernel[1] = 3;
    at.stride[0] = at.stride[1] = 2;
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = at.pad.lo[1] = 1;
    at.pad.hi[0] = at.pad.hi[1] = 1;
    at.ceil_mode = true;
    compare_op_grad("grad avgpool", OP_AVGPOOL, 2, at, &in, 1);
    compare_op_grad("grad global_avgpool", OP_GLOBAL_AVGPOOL, 2, attrs(OP_GLOBAL_AVGPOOL, 2), &in, 1);
    at = attrs(OP_UPSAMPLE, 2);
    at.scale[0] = 2, at.scale[1] = 3;
    compare_op_grad("grad upsample nearest", OP_UPSAMPLE, 2, at, &in, 1);
    at.mode = 1;
    compare_op_grad("grad upsample linear", OP_UPSAMPLE, 2, at, &in, 1);
}
END_TEST

START_TEST(codegen_grad_pointwise_norm)
{
    Shape two[2] = { SH(2, 3, 4, 5), SH(2, 2, 4, 5) };
    compare_op_grad("grad concat", OP_CONCAT, 2, attrs(OP_CONCAT, 2), two, 2);
    OpAttrs at = attrs(OP_CROP, 2);
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = 1, at.pad.hi[0] = 2, at.pad.lo[1] = 0, at.pad.hi[1] = 1;
    compare_op_grad("grad crop", OP_CROP, 2, at, &two[0], 1);
    for (int mode = 0; mode < 3; mode++) {
        at = attrs(OP_PAD, 2);
        at.pad.mode = PAD_EXPLICIT;
        at.pad.lo[0] = 2, at.pad.hi[0] = 1, at.pad.lo[1] = 1, at.pad.hi[1] = 3;
        at.mode = mode;
        compare_op_grad("grad pad", OP_PAD, 2, at, &two[0], 1);
    }
    Shape bc[2] = { SH(2, 3, 4, 5), SH(1, 3, 1, 1) };
    compare_op_grad("grad add broadcast", OP_ADD, 2, attrs(OP_ADD, 2), bc, 2);
    compare_op_grad("grad mul broadcast", OP_MUL, 2, attrs(OP_MUL, 2), bc, 2);
    const OpKind ks[] = { OP_RELU, OP_LEAKY_RELU, OP_ELU, OP_SIGMOID, OP_TANH, OP_SCALE, OP_SOFTMAX, OP_PRELU };
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        at = attrs(ks[i], 3);
        if (ks[i] == OP_SCALE) at.factor = -1.5;
        Shape s = SH(2, 3, 3, 2, 5);
        compare_op_grad(op_table[ks[i]].name, ks[i], 3, at, &s, 1);
    }
    Shape s = SH(2, 3, 5, 4, 3);
    compare_op_grad("grad instancenorm", OP_INSTANCENORM, 3, attrs(OP_INSTANCENORM, 3), &s, 1);
    compare_op_grad("grad batchnorm", OP_BATCHNORM, 3, attrs(OP_BATCHNORM, 3), &s, 1);
}
END_TEST

static void net(const char *path, const char *args, bool training)
{
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    compare_graph(path, c->g, training, codegen_test_seed());
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

/* One full training step, twice: forward, loss, backward, optimizer update
 * (the update outputs copied back as the trainer does). */
static void train_step(const char *path, const char *args, const char *opt, int steps, bool fused)
{
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    Graph *g = c->g;
    ck_assert_int_gt(g->nlosses, 0);
    ck_assert_int_gt(autodiff(g, g->losses[0].tensor), 0);
    const double sgd[4] = { 0.01, 0.9, 1, 1e-4 }, adam[5] = { 1e-3, 0.9, 0.999, 1e-8, 0.01 };
    ck_assert_int_gt(append_optimizer(g, opt, strcmp(opt, "sgd") == 0 ? sgd : adam), 0);
    char what[256];
    snprintf(what, sizeof what, "%s training step (%s%s)", path, opt, fused ? ", fused" : "");
    compare_graph_steps(what, g, true, codegen_fixed_seed(), steps, fused);
    compiled_free(c);
}

static void train_steps(bool fused)
{
    /* Batchnorm over a handful of values (the bottleneck of a tiny U-Net is
     * 1x1 or 2x2) is ill-conditioned: float-level differences in the
     * parameters after one step are amplified far beyond any tolerance in
     * the second.  So the netdefs run one step (the update itself is
     * compared), and the instancenorm net two. */
    train_step("netdefs/unet2d.net", "-D base=2 -D protocol.size=32x32 --train -D train.patch=32x32 -D train.batch=2", "sgd", 1, fused);
    train_step("netdefs/unet3d.net", "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=2",
               "adam", 1, fused);
    train_step("netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", "sgd", 1, fused);
    train_step("netdefs/voxresnet.net", "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1",
               "adamw", 1, fused);
    /* dice_ce with class weights, an ignore label, a voxel weight map and deep supervision */
    train_step("tests/nets/ds_unet.net", "--train", "sgd", 2, fused);
    /* focal loss */
    train_step("tests/nets/ds_unet.net", "--train -D train.loss=focal(logits,labels,weightmap,gamma=2,ignore=2)",
               "sgd", 2, fused);
    /* Adam runs one step only: its first step moves every element by about
     * lr * sign(g), so elements with noise-level gradients step either way
     * and a second forward pass would differ by design, not by a bug. */
}

START_TEST(codegen_train_steps) { train_steps(false); }
END_TEST

/* The same training steps through the fusion plan: kernels with epilogues
 * and inlined movement ops; tensors the plan keeps inside kernels must stay
 * unwritten (poisoned). */
START_TEST(codegen_train_steps_fused) { train_steps(true); }
END_TEST

START_TEST(codegen_netdefs_fused)
{
    const char *nets[][2] = {
        { "netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32" },
        { "netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16" },
        { "netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16" },
        { "netdefs/voxresnet.net", "-D base=4 -D protocol.size=16x16x16" },
    };
    for (size_t i = 0; i < sizeof nets / sizeof nets[0]; i++) {
        Compiled *c = compile_file(nets[i][0], nets[i][1]);
        ck_clean(c);
        char what[256];
        snprintf(what, sizeof what, "%s (fused)", nets[i][0]);
        compare_graph_steps(what, c->g, false, codegen_test_seed(), 1, true);
        compiled_free(c);
    }
}
END_TEST

/* Generated fused code running in the planned arena (memplan.h): every
 * arena tensor at its offset in one allocation that starts as NaN, tensors
 * kept inside kernels with no memory at all (NULL), updates writing over
 * their parameters.  Outputs, losses and the updated parameters must equal
 * the reference. */
static void planned(const char *path, const char *args, const char *opt)
{
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    Graph *g = c->g;
    bool training = g->nlosses > 0;
    if (training) {
        ck_assert_int_gt(autodiff(g, g->losses[0].tensor), 0);
        const double sgd[4] = { 0.01, 0.9, 1, 1e-4 };
        ck_assert_int_gt(append_optimizer(g, opt, sgd), 0);
    }
    FusionPlan *fp = fuse_graph(g, training);
    MemPlan *mp = memplan(g, fp);
    char err[1500];
    L3Module *m = lower_graph_fused(g, fp, training, err, sizeof err);
    ck_assert_msg(m != NULL, "%s: %s", path, err);
    CBackend *cb = cbackend_compile(m, err, sizeof err);
    ck_assert_msg(cb != NULL, "%s: %s", path, err);
    NetcEntry run = cbackend_entry(cb, training ? "netc_train_forward" : "netc_forward");
    uint64_t seed = training ? codegen_fixed_seed() : codegen_test_seed();
    RefState *want = ref_new(g), *got = ref_new(g);
    ref_init_params(g, want, seed);
    codegen_fill(g, want, seed);
    for (int t = 0; t < g->ntensors; t++) memcpy(got->buf[t], want->buf[t], sizeof(float) * (size_t)want->numel[t]);
    float *arena = malloc((size_t)mp->arena_bytes + 64);
    ck_assert_ptr_nonnull(arena);
    for (int64_t i = 0; i < mp->arena_bytes / 4; i++) arena[i] = NAN;
    void **t = calloc((size_t)g->ntensors, sizeof *t);
    for (int i = 0; i < g->ntensors; i++) {
        const Tensor *te = &g->tensors[i];
        if (mp->offset[i] >= 0) t[i] = (char *)arena + mp->offset[i];
        else if (te->kind != TK_ACTIVATION) t[i] = got->buf[i];
    }
    for (int i = 0; i < g->ntensors; i++) {   /* in place: the bytes of the tensor it overwrites */
        int j = i, hops = 0;
        while (mp->in_place_of[j] >= 0 && hops++ < g->ntensors) j = mp->in_place_of[j];
        if (j != i) t[i] = t[j];
    }
    ck_assert_msg(ref_forward(g, want, training, 1, err, sizeof err) == 0, "%s", err);
    run(t);
    codegen_advance(g, want);
    int ports[256], np = 0;
    for (int i = 0; i < g->noutputs && np < 256; i++) ports[np++] = g->outputs[i].tensor;
    for (int i = 0; i < g->nlosses && np < 256; i++) ports[np++] = g->losses[i].tensor;
    for (int k = 0; k < np; k++) {
        int tt = ports[k];
        const float *gv = t[tt];
        ck_assert_ptr_nonnull(gv);
        double top = 0;
        for (int64_t i = 0; i < want->numel[tt]; i++) top = fmax(top, fabs(want->buf[tt][i]));
        for (int64_t i = 0; i < want->numel[tt]; i++)
            ck_assert_msg(fabs(gv[i] - want->buf[tt][i]) <= TOL_ABS * top + TOL_REL * fabs(want->buf[tt][i]),
                          "%s (planned, seed %llu): %s[%lld]: generated %g, reference %g", path,
                          (unsigned long long)seed, g->tensors[tt].name, (long long)i, gv[i], want->buf[tt][i]);
    }
    double graph_top = 0;   /* TOL_FLOOR: noise-level values are judged against the graph's scale */
    for (int i = 0; i < g->ntensors; i++)
        if (g->tensors[i].kind == TK_ACTIVATION && g->tensors[i].dtype == DT_F32)
            for (int64_t k = 0; k < want->numel[i]; k++) graph_top = fmax(graph_top, fabs(want->buf[i][k]));
    for (int i = 0; i < g->nparams; i++) {   /* updated in place (SGD: no noise amplification) */
        int tt = g->params[i].tensor;
        double top = 0;
        for (int64_t k = 0; k < want->numel[tt]; k++) top = fmax(top, fabs(want->buf[tt][k]));
        for (int64_t k = 0; k < want->numel[tt]; k++)
            ck_assert_msg(fabs(got->buf[tt][k] - want->buf[tt][k]) <= TOL_ABS * top + TOL_REL * fabs(want->buf[tt][k]) + TOL_FLOOR,
                          "%s (planned, seed %llu): %s[%lld]: generated %g, reference %g", path,
                          (unsigned long long)seed, g->tensors[tt].name, (long long)k, got->buf[tt][k], want->buf[tt][k]);
    }
    free(t);
    free(arena);
    ref_free(want);
    ref_free(got);
    cbackend_free(cb);
    l3_module_free(m);
    memplan_free(mp);
    fusion_plan_free(fp);
    compiled_free(c);
}

START_TEST(codegen_planned_memory)
{
    planned("netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32", NULL);
    planned("netdefs/voxresnet.net", "-D base=4 -D protocol.size=16x16x16", NULL);
    planned("netdefs/unet2d.net", "-D base=2 -D protocol.size=32x32 --train -D train.patch=32x32 -D train.batch=2", "sgd");
    planned("netdefs/voxresnet.net", "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1",
            "sgd");
    planned("tests/nets/ds_unet.net", "--train", "sgd");
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
    tcase_add_test(tc, codegen_grad_conv_pool);
    tcase_add_test(tc, codegen_grad_pointwise_norm);
    tcase_add_test(tc, codegen_train_steps);
    tcase_add_test(tc, codegen_netdefs_fused);
    tcase_add_test(tc, codegen_train_steps_fused);
    tcase_add_test(tc, codegen_planned_memory);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, codegen_large_tcase());   /* tests/test_codegen_large.c */
    TCase *tiles = tcase_create("tiles");   /* CK_RUN_CASE=tiles: the tiled convolutions alone */
    tcase_set_timeout(tiles, 300);
    tcase_add_test(tiles, codegen_conv_tiles);
    tcase_add_test(tiles, codegen_conv_tiles_fused);
    tcase_add_test(tiles, codegen_schedule_switches);
    suite_add_tcase(s, tiles);
    return s;
}
