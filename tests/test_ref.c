/* test_ref.c — the reference executor: every op on small cases with
 * hand-computed values, then whole shipped nets at tiny sizes. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "ref.h"
#include "ref_fixture.h"
#include "ref_optim.h"

#define TOL 1e-5

/* ---- one-op graphs ------------------------------------------------------------ */

typedef struct {
    Graph *g;
    RefState *s;
    int in[4], out, node;
} One;


/* Builds input tensors (the last is int32 labels when `labels`), runs the
 * shape rule, adds output, node and parameters, allocates the state and
 * initializes parameters (so bias 0, norm weight 1, ...). */
static One one_op(OpKind k, int sr, OpAttrs at, const Shape *ins, int nin, bool labels)
{
    One o;
    memset(&o, 0, sizeof o);
    o.g = graph_new("t", NULL, sr);
    for (int j = 0; j < nin; j++) {
        bool lab = labels && j == 1, wm = labels && j == 2;   /* losses: logits, labels, weight map */
        o.in[j] = graph_add_tensor(o.g, lab ? "labels" : wm ? "weightmap" : "x", ins[j], lab ? DT_I32 : DT_F32,
                                   lab ? TK_LABEL : wm ? TK_WEIGHTMAP : TK_INPUT);
    }
    const Tensor *tp[4];
    for (int j = 0; j < nin; j++)
        tp[j] = &o.g->tensors[o.in[j]];
    ShapeCtx cx = { NULL, { 0 }, NULL, sr, tp, nin, NULL, NULL };
    memset(&cx.loc, 0, sizeof cx.loc);
    Shape out;
    ck_assert_msg(op_table[k].shape(&cx, &at, ins, nin, &out), "shape rule of %s failed", op_table[k].name);
    o.out = graph_add_tensor(o.g, "y", out, DT_F32, TK_ACTIVATION);
    o.node = graph_add_node(o.g, k, op_table[k].name, o.in, nin, o.out, &at, cx.loc);
    ParamSpec ps[NODE_MAX_PARAMS];
    int np = op_table[k].params(&at, ins, nin, ps);
    for (int j = 0; j < np; j++)
        graph_add_param(o.g, o.node, &ps[j]);
    o.s = ref_new(o.g);
    ck_assert_ptr_nonnull(o.s);
    ref_init_params(o.g, o.s, 1);
    return o;
}

static void one_free(One *o)
{
    ref_free(o->s);
    graph_free(o->g);
}

static void set_in(One *o, int j, const float *v)
{
    memcpy(o->s->buf[o->in[j]], v, sizeof(float) * (size_t)o->s->numel[o->in[j]]);
}

static void ramp(One *o, int j)
{
    for (int64_t i = 0; i < o->s->numel[o->in[j]]; i++)
        o->s->buf[o->in[j]][i] = (float)i;
}

static float *param(One *o, int j) { return o->s->buf[o->g->params[o->g->nodes[o->node].params[j]].tensor]; }

static void run(One *o, bool training)
{
    char err[256];
    int rc = ref_forward(o->g, o->s, training, 42, err, sizeof err);
    ck_assert_msg(rc == 0, "ref_forward: %s", err);
}

static void expect(One *o, const double *want, int64_t n)
{
    ck_assert_int_eq(o->s->numel[o->out], n);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(o->s->buf[o->out][i] - want[i]) <= TOL * (1 + fabs(want[i])),
                      "element %lld: got %.7g, want %.7g", (long long)i, o->s->buf[o->out][i], want[i]);
}
#define EXPECT(o, ...) expect(o, (double[]){ __VA_ARGS__ }, (int64_t)(sizeof((double[]){ __VA_ARGS__ }) / sizeof(double)))

/* ---- conv, upconv ------------------------------------------------------------------ */

START_TEST(conv_ramp_stride2_same)
{
    /* 4x4 ramp, 3x3 ones, stride 2, same: pad lo 0, hi 1 (TensorFlow rule) */
    OpAttrs at = attrs(OP_CONV, 2);
    at.channels = 1;
    at.kernel[0] = at.kernel[1] = 3;
    at.stride[0] = at.stride[1] = 2;
    Shape in = SH(1, 1, 4, 4);
    One o = one_op(OP_CONV, 2, at, &in, 1, false);
    ck_assert_int_eq(o.g->nodes[0].at.pad.lo[0], 0);
    ck_assert_int_eq(o.g->nodes[0].at.pad.hi[0], 1);
    ramp(&o, 0);
    for (int i = 0; i < 9; i++)
        param(&o, 0)[i] = 1;
    param(&o, 1)[0] = 0.5f;
    run(&o, false);
    EXPECT(&o, 45.5, 39.5, 66.5, 50.5);
    one_free(&o);
}
END_TEST

START_TEST(conv_orientation_groups_dilation)
{
    /* cross-correlation, not convolution: sum x[i] * w[i] = 204 (flipped: 84) */
    OpAttrs at = attrs(OP_CONV, 2);
    at.channels = 1;
    at.kernel[0] = at.kernel[1] = 3;
    at.pad.mode = PAD_VALID;
    at.bias = false;
    Shape in = SH(1, 1, 3, 3);
    One o = one_op(OP_CONV, 2, at, &in, 1, false);
    ramp(&o, 0);
    for (int i = 0; i < 9; i++)
        param(&o, 0)[i] = (float)i;
    run(&o, false);
    EXPECT(&o, 204);
    one_free(&o);

    /* groups 2, 1x1: y0 = 2 x0, y1 = 3 x1 */
    at = attrs(OP_CONV, 2);
    at.channels = 2;
    at.kernel[0] = at.kernel[1] = 1;
    at.groups = 2;
    in = SH(1, 2, 1, 2);
    o = one_op(OP_CONV, 2, at, &in, 1, false);
    ramp(&o, 0);
    param(&o, 0)[0] = 2, param(&o, 0)[1] = 3;
    run(&o, false);
    EXPECT(&o, 0, 2, 6, 9);
    one_free(&o);

    /* 1D, kernel 2, dilation 3, valid: y[i] = x[i] + 10 x[i + 3] */
    at = attrs(OP_CONV, 1);
    at.channels = 1;
    at.kernel[0] = 2;
    at.dilation[0] = 3;
    at.pad.mode = PAD_VALID;
    in = SH(1, 1, 7);
    o = one_op(OP_CONV, 1, at, &in, 1, false);
    ramp(&o, 0);
    param(&o, 0)[0] = 1, param(&o, 0)[1] = 10;
    run(&o, false);
    EXPECT(&o, 30, 41, 52, 63);
    one_free(&o);

    /* 3D: 2x2x2 ramp, 2x2x2 ones kernel, valid: sum 0..7 = 28 */
    at = attrs(OP_CONV, 3);
    at.channels = 1;
    at.kernel[0] = at.kernel[1] = at.kernel[2] = 2;
    at.pad.mode = PAD_VALID;
    in = SH(1, 1, 2, 2, 2);
    o = one_op(OP_CONV, 3, at, &in, 1, false);
    ramp(&o, 0);
    for (int i = 0; i < 8; i++)
        param(&o, 0)[i] = 1;
    run(&o, false);
    EXPECT(&o, 28);
    one_free(&o);
}
END_TEST

START_TEST(upconv_known)
{
    /* 1D: x = [1, 2], w = [1, 10, 100], stride 2: full [1, 10, 102, 20, 200];
     * padding 1 + out_pad 1: positions 1..4 */
    OpAttrs at = attrs(OP_UPCONV, 1);
    at.channels = 1;
    at.kernel[0] = 3;
    at.stride[0] = 2;
    at.bias = false;
    Shape in = SH(1, 1, 2);
    One o = one_op(OP_UPCONV, 1, at, &in, 1, false);
    set_in(&o, 0, (float[]){ 1, 2 });
    param(&o, 0)[0] = 1, param(&o, 0)[1] = 10, param(&o, 0)[2] = 100;
    run(&o, false);
    EXPECT(&o, 1, 10, 102, 20, 200);
    one_free(&o);

    explicit_pad(&at, 1, (int64_t[]){ 1 }, (int64_t[]){ 1 });
    at.out_pad[0] = 1;
    o = one_op(OP_UPCONV, 1, at, &in, 1, false);
    set_in(&o, 0, (float[]){ 1, 2 });
    param(&o, 0)[0] = 1, param(&o, 0)[1] = 10, param(&o, 0)[2] = 100;
    run(&o, false);
    EXPECT(&o, 10, 102, 20, 200);
    one_free(&o);

    /* 2D, 1 -> 2 channels, 2x2 stride 2; weight [Cin, Cout, 2, 2]:
     * w[0, co, a, b] = 10 co + 2 a + b + 1; y[co, 2i+a, 2j+b] = x[i, j] w[co, a, b] + bias[co] */
    at = attrs(OP_UPCONV, 2);
    at.channels = 2;
    at.kernel[0] = at.kernel[1] = 2;
    in = SH(1, 1, 2, 2);
    o = one_op(OP_UPCONV, 2, at, &in, 1, false);
    set_in(&o, 0, (float[]){ 1, 2, 3, 4 });
    for (int co = 0; co < 2; co++)
        for (int ab = 0; ab < 4; ab++)
            param(&o, 0)[co * 4 + ab] = (float)(10 * co + ab + 1);
    param(&o, 1)[0] = 0.5f, param(&o, 1)[1] = -1;
    run(&o, false);
    const float *y = o.s->buf[o.out];
    ck_assert_float_eq_tol(y[0], 1.5, TOL);                         /* x00 w000 + .5 */
    ck_assert_float_eq_tol(y[16 + 3 * 4 + 2], 4 * 13 - 1, TOL);     /* co 1, (3, 2): x11 w110 */
    ck_assert_float_eq_tol(y[1 * 4 + 3], 2 * 4 + 0.5, TOL);         /* co 0, (1, 3): x01 w011 */
    one_free(&o);
}
END_TEST

/* ---- pools ------------------------------------------------------------------------- */

START_TEST(pools_ceil_pad)
{
    /* maxpool 2, ceil, on a 5x5 ramp: 3x3 */
    OpAttrs at = attrs(OP_MAXPOOL, 2);
    at.kernel[0] = at.kernel[1] = 2;
    at.ceil_mode = true;
    Shape in = SH(1, 1, 5, 5);
    One o = one_op(OP_MAXPOOL, 2, at, &in, 1, false);
    ramp(&o, 0);
    run(&o, false);
    EXPECT(&o, 6, 8, 9, 16, 18, 19, 21, 23, 24);
    one_free(&o);

    /* avgpool 2, ceil: partial windows divide by their size within bounds */
    at = attrs(OP_AVGPOOL, 2);
    at.kernel[0] = at.kernel[1] = 2;
    at.ceil_mode = true;
    o = one_op(OP_AVGPOOL, 2, at, &in, 1, false);
    ramp(&o, 0);
    run(&o, false);
    EXPECT(&o, 3, 5, 6.5, 13, 15, 16.5, 20.5, 22.5, 24);
    one_free(&o);

    /* avgpool 3, stride 1, padding 1 on a 3x3 ramp: corner 8/9 (count_pad) or 8/4 */
    at = attrs(OP_AVGPOOL, 2);
    at.kernel[0] = at.kernel[1] = 3;
    at.stride[0] = at.stride[1] = 1;
    explicit_pad(&at, 2, (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 });
    in = SH(1, 1, 3, 3);
    o = one_op(OP_AVGPOOL, 2, at, &in, 1, false);
    ramp(&o, 0);
    run(&o, false);
    ck_assert_float_eq_tol(o.s->buf[o.out][0], 8.0 / 9, TOL);
    ck_assert_float_eq_tol(o.s->buf[o.out][4], 4, TOL);
    one_free(&o);
    at.count_pad = false;
    o = one_op(OP_AVGPOOL, 2, at, &in, 1, false);
    ramp(&o, 0);
    run(&o, false);
    EXPECT(&o, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6);
    one_free(&o);

    /* avgpool 3, stride 2, padding 1, ceil on 4x4: 3x3; the last window
     * starts at 3 and ends at min(6, 4 + 1) = 5: x[3][3] / (2 * 2) (PyTorch) */
    at = attrs(OP_AVGPOOL, 2);
    at.kernel[0] = at.kernel[1] = 3;
    at.stride[0] = at.stride[1] = 2;
    at.ceil_mode = true;
    explicit_pad(&at, 2, (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 });
    in = SH(1, 1, 4, 4);
    o = one_op(OP_AVGPOOL, 2, at, &in, 1, false);
    ramp(&o, 0);
    run(&o, false);
    ck_assert_int_eq(o.s->numel[o.out], 9);
    ck_assert_float_eq_tol(o.s->buf[o.out][8], 15.0 / 4, TOL);
    ck_assert_float_eq_tol(o.s->buf[o.out][0], (0 + 1 + 4 + 5) / 9.0, TOL);
    one_free(&o);

    /* maxpool padding is -inf: all-negative input keeps its max */
    at = attrs(OP_MAXPOOL, 1);
    at.kernel[0] = 2;
    explicit_pad(&at, 1, (int64_t[]){ 1 }, (int64_t[]){ 1 });
    in = SH(1, 1, 3);
    o = one_op(OP_MAXPOOL, 1, at, &in, 1, false);
    set_in(&o, 0, (float[]){ -1, -2, -3 });
    run(&o, false);
    EXPECT(&o, -1, -2);
    one_free(&o);

    in = SH(1, 2, 2, 2);
    o = one_op(OP_GLOBAL_AVGPOOL, 2, attrs(OP_GLOBAL_AVGPOOL, 2), &in, 1, false);
    ramp(&o, 0);
    run(&o, false);
    EXPECT(&o, 1.5, 5.5);
    one_free(&o);
}
END_TEST

/* ---- upsample ------------------------------------------------------------------------ */

START_TEST(upsample_modes)
{
    Shape in = SH(1, 1, 2, 2);
    OpAttrs at = attrs(OP_UPSAMPLE, 2);
    One o = one_op(OP_UPSAMPLE, 2, at, &in, 1, false);
    set_in(&o, 0, (float[]){ 1, 2, 3, 4 });
    run(&o, false);
    EXPECT(&o, 1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4);
    one_free(&o);

    /* bilinear, align_corners false: coordinates 0, .25, .75, 1 per axis;
     * value 1 + c + 2 r */
    at.mode = 1;
    o = one_op(OP_UPSAMPLE, 2, at, &in, 1, false);
    set_in(&o, 0, (float[]){ 1, 2, 3, 4 });
    run(&o, false);
    EXPECT(&o, 1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4);
    one_free(&o);

    /* align_corners true: coordinates 0, 1/3, 2/3, 1 */
    at.align_corners = true;
    o = one_op(OP_UPSAMPLE, 2, at, &in, 1, false);
    set_in(&o, 0, (float[]){ 1, 2, 3, 4 });
    run(&o, false);
    double t = 1.0 / 3;
    EXPECT(&o, 1, 1 + t, 1 + 2 * t, 2, 1 + 2 * t, 1 + 3 * t, 1 + 4 * t, 2 + 2 * t,
           1 + 4 * t, 1 + 5 * t, 1 + 6 * t, 2 + 4 * t, 3, 3 + t, 3 + 2 * t, 4);
    one_free(&o);

    /* trilinear on 2x2x2 -> value at (1,1,1) of 4x4x4 = mean-ish: coords .25 each */
    OpAttrs a3 = attrs(OP_UPSAMPLE, 3);
    a3.mode = 1;
    Shape in3 = SH(1, 1, 2, 2, 2);
    o = one_op(OP_UPSAMPLE, 3, a3, &in3, 1, false);
    ramp(&o, 0);   /* value = 4 d + 2 h + w */
    run(&o, false);
    ck_assert_float_eq_tol(o.s->buf[o.out][16 + 4 + 1], 4 * .25 + 2 * .25 + .25, TOL);
    ck_assert_float_eq_tol(o.s->buf[o.out][63], 7, TOL);
    one_free(&o);
}
END_TEST

/* ---- movement ------------------------------------------------------------------------ */

START_TEST(movement)
{
    Shape ins[3] = { SH(1, 1, 2, 2), SH(1, 2, 2, 2) };
    One o = one_op(OP_CONCAT, 2, attrs(OP_CONCAT, 2), ins, 2, false);
    set_in(&o, 0, (float[]){ 1, 2, 3, 4 });
    ramp(&o, 1);
    run(&o, false);
    EXPECT(&o, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7);
    one_free(&o);

    /* crop 5x5 to a 2x2 reference: floor(3 / 2) = 1 removed at the start */
    ins[0] = SH(1, 1, 5, 5);
    ins[1] = SH(1, 1, 2, 2);
    o = one_op(OP_CROP, 2, attrs(OP_CROP, 2), ins, 2, false);
    ramp(&o, 0);
    run(&o, false);
    EXPECT(&o, 6, 7, 11, 12);
    one_free(&o);

    /* crop amounts: rows [0, 1], cols [2, 0] on 4x4 */
    OpAttrs at = attrs(OP_CROP, 2);
    explicit_pad(&at, 2, (int64_t[]){ 0, 2 }, (int64_t[]){ 1, 0 });
    ins[0] = SH(1, 1, 4, 4);
    o = one_op(OP_CROP, 2, at, ins, 1, false);
    ramp(&o, 0);
    run(&o, false);
    EXPECT(&o, 2, 3, 6, 7, 10, 11);
    one_free(&o);

    /* pad [2, 1] on [1, 2, 3]: zero (value 9), reflect, replicate */
    ins[0] = SH(1, 1, 3);
    const double want[3][6] = { { 9, 9, 1, 2, 3, 9 }, { 3, 2, 1, 2, 3, 2 }, { 1, 1, 1, 2, 3, 3 } };
    for (int m = 0; m < 3; m++) {
        at = attrs(OP_PAD, 1);
        explicit_pad(&at, 1, (int64_t[]){ 2 }, (int64_t[]){ 1 });
        at.mode = m;
        at.value = 9;
        o = one_op(OP_PAD, 1, at, ins, 1, false);
        set_in(&o, 0, (float[]){ 1, 2, 3 });
        run(&o, false);
        expect(&o, want[m], 6);
        one_free(&o);
    }
}
END_TEST

START_TEST(arithmetic)
{
    /* add of [1,2,2,2] ramp, [1,2,1,1] = [10, 20], and the scalar 0.5 */
    Shape ins[3] = { SH(1, 2, 2, 2), SH(1, 2, 1, 1), SCALAR };
    One o = one_op(OP_ADD, 2, attrs(OP_ADD, 2), ins, 3, false);
    ramp(&o, 0);
    set_in(&o, 1, (float[]){ 10, 20 });
    set_in(&o, 2, (float[]){ 0.5f });
    run(&o, false);
    EXPECT(&o, 10.5, 11.5, 12.5, 13.5, 24.5, 25.5, 26.5, 27.5);
    one_free(&o);

    /* mul broadcasting the first operand: [1,1,1,2] * [1,1,2,2] */
    ins[0] = SH(1, 1, 1, 2);
    ins[1] = SH(1, 1, 2, 2);
    o = one_op(OP_MUL, 2, attrs(OP_MUL, 2), ins, 2, false);
    set_in(&o, 0, (float[]){ 2, 3 });
    set_in(&o, 1, (float[]){ 1, 2, 3, 4 });
    run(&o, false);
    EXPECT(&o, 2, 6, 6, 12);
    one_free(&o);

    OpAttrs at = attrs(OP_SCALE, 2);
    at.factor = -2;
    o = one_op(OP_SCALE, 2, at, ins, 1, false);
    set_in(&o, 0, (float[]){ 2, 3 });
    run(&o, false);
    EXPECT(&o, -4, -6);
    one_free(&o);
}
END_TEST

/* ---- norms ----------------------------------------------------------------------------- */

START_TEST(batchnorm_train_eval)
{
    /* N = 2, C = 1, W = 2: x = [1, 3], [5, 7]; mean 4, biased var 5,
     * unbiased 20 / 3 */
    Shape in = SH(2, 1, 2);
    OpAttrs at = attrs(OP_BATCHNORM, 1);
    One o = one_op(OP_BATCHNORM, 1, at, &in, 1, false);
    set_in(&o, 0, (float[]){ 1, 3, 5, 7 });
    param(&o, 0)[0] = 2;     /* weight */
    param(&o, 1)[0] = 1;     /* bias */
    run(&o, true);
    double sd = sqrt(5 + 1e-5);
    EXPECT(&o, 1 - 6 / sd, 1 - 2 / sd, 1 + 2 / sd, 1 + 6 / sd);
    ck_assert_float_eq_tol(param(&o, 2)[0], 0.4, TOL);
    ck_assert_float_eq_tol(param(&o, 3)[0], 0.9 + 0.1 * 20.0 / 3, TOL);
    /* eval: running statistics (0.4, 1.5667) */
    run(&o, false);
    double rv = 0.9 + 0.1 * 20.0 / 3, s2 = sqrt(rv + 1e-5);
    EXPECT(&o, 2 * (1 - .4) / s2 + 1, 2 * (3 - .4) / s2 + 1, 2 * (5 - .4) / s2 + 1, 2 * (7 - .4) / s2 + 1);
    one_free(&o);

    /* instancenorm: per sample: [1, 3] -> [-1, 1] / sqrt(1 + eps) */
    at = attrs(OP_INSTANCENORM, 1);
    o = one_op(OP_INSTANCENORM, 1, at, &in, 1, false);
    set_in(&o, 0, (float[]){ 1, 3, 5, 9 });
    run(&o, false);
    double s1 = sqrt(1 + 1e-5), s4 = sqrt(4 + 1e-5);
    EXPECT(&o, -1 / s1, 1 / s1, -2 / s4, 2 / s4);
    one_free(&o);
}
END_TEST

/* ---- activations ------------------------------------------------------------------------ */

START_TEST(activations)
{
    Shape in = SH(1, 2, 2);
    const float x[4] = { -2, 0.5f, -1, 3 };
    struct { OpKind k; double w[4]; } cases[] = {
        { OP_RELU, { 0, 0.5, 0, 3 } },
        { OP_LEAKY_RELU, { -0.02, 0.5, -0.01, 3 } },
        { OP_ELU, { expm1(-2), 0.5, expm1(-1), 3 } },
        { OP_SIGMOID, { 1 / (1 + exp(2)), 1 / (1 + exp(-0.5)), 1 / (1 + exp(1)), 1 / (1 + exp(-3)) } },
        { OP_TANH, { tanh(-2), tanh(0.5), tanh(-1), tanh(3) } },
        { OP_DROPOUT, { -2, 0.5, -1, 3 } },     /* inference: identity */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        One o = one_op(cases[i].k, 1, attrs(cases[i].k, 1), &in, 1, false);
        set_in(&o, 0, x);
        run(&o, false);
        expect(&o, cases[i].w, 4);
        one_free(&o);
    }
    /* prelu per channel: weights 0.25 (init), then [0.1, 0.3] */
    One o = one_op(OP_PRELU, 1, attrs(OP_PRELU, 1), &in, 1, false);
    set_in(&o, 0, x);
    run(&o, false);
    EXPECT(&o, -0.5, 0.5, -0.25, 3);
    param(&o, 0)[0] = 0.1f, param(&o, 0)[1] = 0.3f;
    run(&o, false);
    EXPECT(&o, -0.2, 0.5, -0.3, 3);
    one_free(&o);

    /* softmax over channels: [0, ln 3] -> [.25, .75]; every voxel sums to 1 */
    in = SH(1, 2, 2);
    o = one_op(OP_SOFTMAX, 1, attrs(OP_SOFTMAX, 1), &in, 1, false);
    set_in(&o, 0, (float[]){ 0, 100, (float)log(3.0), 99 });
    run(&o, false);
    EXPECT(&o, .25, 1 / (1 + exp(-1)), .75, 1 / (1 + exp(1)));
    one_free(&o);

    /* dropout in training: zeros or 2x, deterministic per seed */
    OpAttrs at = attrs(OP_DROPOUT, 1);
    Shape big = SH(1, 4, 1000);
    o = one_op(OP_DROPOUT, 1, at, &big, 1, false);
    for (int i = 0; i < 4000; i++)
        o.s->buf[o.in[0]][i] = 1;
    run(&o, true);
    float *first = malloc(4000 * sizeof *first);
    memcpy(first, o.s->buf[o.out], 4000 * sizeof *first);
    int zeros = 0;
    for (int i = 0; i < 4000; i++) {
        ck_assert(first[i] == 0 || first[i] == 2);
        zeros += first[i] == 0;
    }
    ck_assert_int_gt(zeros, 1800);
    ck_assert_int_lt(zeros, 2200);
    run(&o, true);
    ck_assert(memcmp(first, o.s->buf[o.out], 4000 * sizeof *first) == 0);
    free(first);
    one_free(&o);
}
END_TEST

/* ---- losses ------------------------------------------------------------------------------ */

static void set_labels(One *o, const int32_t *v)
{
    memcpy(o->s->buf[o->in[1]], v, sizeof(int32_t) * (size_t)o->s->numel[o->in[1]]);
}

START_TEST(loss_ce)
{
    /* 3 voxels, 2 classes: [0, ln 3] label 1; [0, 0] label 0; label 2 ignored */
    Shape ins[2] = { SH(1, 2, 3), SH(1, 1, 3) };
    OpAttrs at = attrs(OP_CE, 1);
    at.ignore = 2;
    at.nweights = 2;
    at.weights[0] = 1, at.weights[1] = 3;
    One o = one_op(OP_CE, 1, at, ins, 2, true);
    set_in(&o, 0, (float[]){ 0, 0, 5, (float)log(3.0), 0, -5 });
    set_labels(&o, (int32_t[]){ 1, 0, 2 });
    run(&o, false);
    EXPECT(&o, (3 * -log(0.75) + log(2.0)) / 4);
    one_free(&o);

    /* a voxel weight map: sum m w nll / sum m w, m = 0 drops a voxel */
    Shape w3[3] = { SH(1, 2, 3), SH(1, 1, 3), SH(1, 1, 3) };
    at = attrs(OP_CE, 1);
    at.nweights = 2;
    at.weights[0] = 1, at.weights[1] = 3;
    o = one_op(OP_CE, 1, at, w3, 3, true);
    set_in(&o, 0, (float[]){ 0, 0, 5, (float)log(3.0), 0, -5 });
    set_labels(&o, (int32_t[]){ 1, 0, 0 });
    set_in(&o, 2, (float[]){ 2, 0.5f, 0 });
    run(&o, false);
    EXPECT(&o, (2 * 3 * -log(0.75) + 0.5 * log(2.0)) / (2 * 3 + 0.5));
    one_free(&o);
    at = attrs(OP_FOCAL, 1);
    at.gamma = 0, at.alpha = 0.5;
    o = one_op(OP_FOCAL, 1, at, w3, 3, true);
    set_in(&o, 0, (float[]){ 0, 0, 5, (float)log(3.0), 0, -5 });
    set_labels(&o, (int32_t[]){ 1, 0, 0 });
    set_in(&o, 2, (float[]){ 2, 0.5f, 0 });
    run(&o, false);
    EXPECT(&o, 0.5 * (2 * -log(0.75) + 0.5 * log(2.0)) / 2.5);
    one_free(&o);

    /* unweighted, labels twice the logits' size: every 2nd label is used */
    at = attrs(OP_CE, 1);
    ins[1] = SH(1, 1, 6);
    o = one_op(OP_CE, 1, at, ins, 2, true);
    set_in(&o, 0, (float[]){ 0, 0, 0, (float)log(3.0), 0, 0 });
    set_labels(&o, (int32_t[]){ 1, 7, 0, 7, 1, 7 });
    run(&o, false);
    EXPECT(&o, (-log(0.75) + log(2.0) + log(2.0)) / 3);
    /* a label out of range is an error */
    set_labels(&o, (int32_t[]){ 1, 0, 2, 0, 1, 0 });
    char err[256];
    ck_assert_int_eq(ref_forward(o.g, o.s, false, 1, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "out of range"));
    one_free(&o);

    /* labels 5 for logits 3 (not a multiple): centre crop, offset 1 */
    ins[1] = SH(1, 1, 5);
    o = one_op(OP_CE, 1, at, ins, 2, true);
    set_in(&o, 0, (float[]){ 0, 0, 0, (float)log(3.0), 0, 0 });
    set_labels(&o, (int32_t[]){ 9, 1, 0, 0, 9 });
    run(&o, false);
    EXPECT(&o, (-log(0.75) + log(2.0) + log(2.0)) / 3);
    one_free(&o);
}
END_TEST

START_TEST(loss_dice_focal)
{
    Shape ins[2] = { SH(1, 2, 2), SH(1, 1, 2) };
    /* uniform p = .5, labels [1, 0]: class 1 tp .5 fp .5 fn .5 -> (1 + s) / (2 + s) */
    OpAttrs at = attrs(OP_DICE, 1);
    One o = one_op(OP_DICE, 1, at, ins, 2, true);
    set_labels(&o, (int32_t[]){ 1, 0 });
    run(&o, false);
    EXPECT(&o, -(1 + 1e-5) / (2 + 1e-5));
    /* perfect prediction: about -1 */
    set_in(&o, 0, (float[]){ -30, 30, 30, -30 });
    run(&o, false);
    ck_assert_float_eq_tol(o.s->buf[o.out][0], -1, 1e-6);
    one_free(&o);

    /* batch dice with background over 2 samples */
    ins[0] = SH(2, 2, 2);
    ins[1] = SH(2, 1, 2);
    at.background = true;
    at.batch_dice = true;
    o = one_op(OP_DICE, 1, at, ins, 2, true);
    set_in(&o, 0, (float[]){ -30, 30, 30, -30, 0, 0, 0, 0 });
    set_labels(&o, (int32_t[]){ 1, 0, 1, 1 });
    run(&o, false);
    /* class 0: tp 1 + 0, fp 0 + 1, fn 0; class 1: tp 1 + 1, fp 0, fn 0 + 1 */
    double s = 1e-5, d0 = (2 + s) / (2 + 1 + s), d1 = (4 + s) / (4 + 1 + s);
    EXPECT(&o, -(d0 + d1) / 2);
    one_free(&o);

    /* focal, uniform p = .5: label 1 -> .25 * .25 * ln 2, label 0 -> .75 * .25 * ln 2 */
    ins[0] = SH(1, 2, 2);
    ins[1] = SH(1, 1, 2);
    o = one_op(OP_FOCAL, 1, attrs(OP_FOCAL, 1), ins, 2, true);
    set_labels(&o, (int32_t[]){ 1, 0 });
    run(&o, false);
    EXPECT(&o, (0.25 + 0.75) * 0.25 * log(2.0) / 2);
    one_free(&o);
}
END_TEST

/* ---- whole nets ---------------------------------------------------------------------------- */

/* Inputs uniform in [-1, 1]; labels uniform over the classes (the first
 * output's channels, when it has more than `classes`); a voxel weight map
 * uniform in [0, 2) with a fifth of the voxels 0 (unannotated). */
static void fill_inputs(const Graph *g, RefState *s, uint64_t seed, int classes)
{
    if (g->noutputs > 0 && g->tensors[g->outputs[0].tensor].shape.rank > 1 &&
        g->tensors[g->outputs[0].tensor].shape.d[1] > classes)
        classes = (int)g->tensors[g->outputs[0].tensor].shape.d[1];
    for (int t = 0; t < g->ntensors; t++) {
        if (g->tensors[t].kind == TK_INPUT) ref_fill_uniform(s, t, seed + (uint64_t)t, -1, 1);
        if (g->tensors[t].kind == TK_WEIGHTMAP) {
            RefRng r = { seed * 11 + (uint64_t)t };
            for (int64_t i = 0; i < s->numel[t]; i++) {
                double u = ref_rng_uniform(&r);
                s->buf[t][i] = u < 0.2 ? 0.0f : (float)(2.5 * u - 0.5);
            }
        }
        if (g->tensors[t].kind == TK_LABEL) {
            RefRng r = { seed * 7 + (uint64_t)t };
            for (int64_t i = 0; i < s->numel[t]; i++)
                ref_i32(s, t)[i] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
        }
    }
}

/* With NETC_REF_DUMP=DIR, writes every tensor after the forward pass as
 * DIR/<tag>/t<id>.bin (raw little-endian float32 or int32, row-major) and
 * DIR/<tag>/args.txt (the file, the netc arguments, train or eval) for
 * tools/ref_vs_torch.py.  Parameters are dumped as they were initialized
 * (before a training pass updates running statistics).  Training graphs also
 * get DIR/<tag>/g<id>.bin: d(loss)/d(parameter) from ref_backward. */
static void fill_inputs(const Graph *g, RefState *s, uint64_t seed, int classes);

/* The optimizer each training dump is stepped with: all four kinds of
 * update are compared with torch.optim across the nets. */
static RefOptConfig optimizer_for(const char *tag, char *line, size_t n)
{
    RefOptConfig c = { .kind = OPT_SGD, .lr = 0.05, .momentum = 0.9, .nesterov = true, .weight_decay = 1e-4 };
    /* weight decays large enough that a coupled/decoupled mix-up shows */
    if (strstr(tag, "unet3d")) c = (RefOptConfig){ .kind = OPT_ADAM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
                                                  .eps = 1e-8, .weight_decay = 0.1 };
    if (strstr(tag, "vnet")) c = (RefOptConfig){ .kind = OPT_SGD, .lr = 0.01, .momentum = 0.99, .weight_decay = 0 };
    if (strstr(tag, "voxresnet")) c = (RefOptConfig){ .kind = OPT_ADAMW, .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999,
                                                     .eps = 1e-8, .weight_decay = 0.5 };
    static const char *names[] = { "sgd", "adam", "adamw" };
    snprintf(line, n, "%s %.17g %.17g %d %.17g %.17g %.17g %.17g", names[c.kind], c.lr, c.momentum, c.nesterov,
             c.weight_decay, c.beta1, c.beta2, c.eps);
    return c;
}

#define DUMP_STEPS 3

static void dump_state(const char *tag, const char *path, const char *args, bool training,
                       const Graph *g, RefState *s, RefState *init)
{
    const char *dir = getenv("NETC_REF_DUMP");
    if (!dir || !*dir) return;
    char name[1024];
    snprintf(name, sizeof name, "mkdir -p '%s/%s'", dir, tag);
    ck_assert_int_eq(system(name), 0);
    for (int t = 0; t < g->ntensors; t++) {
        snprintf(name, sizeof name, "%s/%s/t%d.bin", dir, tag, t);
        FILE *f = fopen(name, "wb");
        ck_assert_ptr_nonnull(f);
        RefState *src = g->tensors[t].kind == TK_PARAM ? init : s;
        fwrite(src->buf[t], sizeof(float), (size_t)src->numel[t], f);
        fclose(f);
    }
    char optline[256] = "";
    if (training && g->nlosses > 0) {
        /* the gradient of the loss for every trainable parameter (g<id>.bin),
         * then the parameters after DUMP_STEPS optimizer steps (p<id>.bin),
         * on a fresh copy of the same state */
        RefOptConfig oc = optimizer_for(tag, optline, sizeof optline);
        RefState *w = ref_new(g);
        ck_assert_ptr_nonnull(w);
        ref_init_params(g, w, 123);
        fill_inputs(g, w, 7, 2);
        RefGrads *gr = ref_grads_new(g);
        RefOptim *opt = ref_optim_new(g, &oc);
        ck_assert(gr && opt);
        char err[256];
        for (int step = 0; step < DUMP_STEPS; step++) {
            ck_assert_msg(ref_forward(g, w, true, 99, err, sizeof err) == 0, "%s", err);
            ck_assert_msg(ref_backward(g, w, gr, g->losses[0].tensor, true, 99, err, sizeof err) == 0, "%s", err);
            for (int i = 0; step == 0 && i < g->nparams; i++) {
                if (!g->params[i].trainable) continue;
                int t = g->params[i].tensor;
                snprintf(name, sizeof name, "%s/%s/g%d.bin", dir, tag, t);
                FILE *gf = fopen(name, "wb");
                ck_assert_ptr_nonnull(gf);
                fwrite(gr->buf[t], sizeof(float), (size_t)gr->numel[t], gf);
                fclose(gf);
            }
            ref_optim_step(opt, g, w, gr, oc.lr);
        }
        for (int i = 0; i < g->nparams; i++) {
            if (!g->params[i].trainable) continue;
            int t = g->params[i].tensor;
            snprintf(name, sizeof name, "%s/%s/p%d.bin", dir, tag, t);
            FILE *pf = fopen(name, "wb");
            ck_assert_ptr_nonnull(pf);
            fwrite(w->buf[t], sizeof(float), (size_t)w->numel[t], pf);
            fclose(pf);
        }
        ref_optim_free(opt);
        ref_grads_free(gr);
        ref_free(w);
    }
    snprintf(name, sizeof name, "%s/%s/args.txt", dir, tag);
    FILE *f = fopen(name, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s\n%s\n%s\n%s\n", path, args, training ? "train" : "eval", optline);
    fclose(f);
}

/* Runs the net twice from fresh states; outputs (and losses) finite and
 * bit-identical. */
static void whole_net(const char *tag, const char *path, const char *args, bool training)
{
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    const Graph *g = c->g;
    RefState *s[2];
    for (int r = 0; r < 2; r++) {
        s[r] = ref_new(g);
        ck_assert_ptr_nonnull(s[r]);
        ref_init_params(g, s[r], 123);
        fill_inputs(g, s[r], 7, 2);
        char err[256];
        int rc = ref_forward(g, s[r], training, 99, err, sizeof err);
        ck_assert_msg(rc == 0, "%s: %s", path, err);
    }
    int checked = 0;
    for (int k = 0; k < g->noutputs + g->nlosses; k++) {
        int t = k < g->noutputs ? g->outputs[k].tensor : g->losses[k - g->noutputs].tensor;
        for (int64_t i = 0; i < s[0]->numel[t]; i++)
            ck_assert_msg(isfinite(s[0]->buf[t][i]), "%s: output %d element %lld not finite", path, k,
                          (long long)i);
        ck_assert_msg(memcmp(s[0]->buf[t], s[1]->buf[t], sizeof(float) * (size_t)s[0]->numel[t]) == 0,
                      "%s: not deterministic", path);
        checked++;
    }
    ck_assert_int_gt(checked, 0);
    if (getenv("NETC_REF_DUMP")) {
        RefState *init = ref_new(g);
        ref_init_params(g, init, 123);
        dump_state(tag, path, args, training, g, s[0], init);
        ref_free(init);
    }
    /* a different seed gives different outputs */
    ref_init_params(g, s[1], 124);
    char err[256];
    ck_assert_int_eq(ref_forward(g, s[1], training, 99, err, sizeof err), 0);
    int t = g->outputs[0].tensor;
    ck_assert(memcmp(s[0]->buf[t], s[1]->buf[t], sizeof(float) * (size_t)s[0]->numel[t]) != 0);
    ref_free(s[0]);
    ref_free(s[1]);
    compiled_free(c);
}

START_TEST(net_unet2d) { whole_net("unet2d", "netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32", false); }
END_TEST
START_TEST(net_unet2d_train)
{
    whole_net("unet2d_train", "netdefs/unet2d.net",
              "-D base=4 -D protocol.size=32x32 --train -D train.patch=32x32 -D train.batch=2", true);
}
END_TEST
START_TEST(net_unet3d)
{
    whole_net("unet3d", "netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16", false);
    whole_net("unet3d_train", "netdefs/unet3d.net",
              "-D base=4 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=2", true);
}
END_TEST
START_TEST(net_vnet)
{
    whole_net("vnet", "netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16", false);
    whole_net("vnet_train", "netdefs/vnet.net",
              "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", true);
}
END_TEST
START_TEST(net_voxresnet)
{
    whole_net("voxresnet", "netdefs/voxresnet.net", "-D base=4 -D protocol.size=16x16x16", false);
    whole_net("voxresnet_train", "netdefs/voxresnet.net",
              "-D base=4 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", true);
}
END_TEST

/* dice_ce with class weights, an ignore label and a voxel weight map, on
 * three deep-supervision heads (nnU-Net's weights) */
START_TEST(net_deep_supervision)
{
    whole_net("ds_unet_train", "tests/nets/ds_unet.net", "--train", true);
}
END_TEST

START_TEST(init_rules)
{
    /* He normal a = 0.01 on a conv with fan_in 8 * 9: std sqrt(2 / 1.0001 / 72) */
    OpAttrs at = attrs(OP_CONV, 2);
    at.channels = 64;
    at.kernel[0] = at.kernel[1] = 3;
    Shape in = SH(1, 8, 4, 4);
    One o = one_op(OP_CONV, 2, at, &in, 1, false);
    const float *w = param(&o, 0);
    int64_t n = o.s->numel[o.g->params[0].tensor];
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++)
        sum += w[i], sq += (double)w[i] * w[i];
    double sd = sqrt(sq / (double)n - (sum / (double)n) * (sum / (double)n));
    double want = sqrt(2 / 1.0001 / 72);
    ck_assert_msg(fabs(sd - want) < 0.05 * want, "std %g, want %g", sd, want);
    ck_assert_float_eq(param(&o, 1)[0], 0);
    one_free(&o);
}
END_TEST

Suite *ref_suite(void)
{
    Suite *s = suite_create("ref");
    TCase *tc = tcase_create("ops");
    tcase_add_test(tc, conv_ramp_stride2_same);
    tcase_add_test(tc, conv_orientation_groups_dilation);
    tcase_add_test(tc, upconv_known);
    tcase_add_test(tc, pools_ceil_pad);
    tcase_add_test(tc, upsample_modes);
    tcase_add_test(tc, movement);
    tcase_add_test(tc, arithmetic);
    tcase_add_test(tc, batchnorm_train_eval);
    tcase_add_test(tc, activations);
    tcase_add_test(tc, loss_ce);
    tcase_add_test(tc, loss_dice_focal);
    tcase_add_test(tc, init_rules);
    suite_add_tcase(s, tc);
    TCase *nets = tcase_create("nets");
    tcase_set_timeout(nets, 120);
    tcase_add_test(nets, net_unet2d);
    tcase_add_test(nets, net_unet2d_train);
    tcase_add_test(nets, net_unet3d);
    tcase_add_test(nets, net_vnet);
    tcase_add_test(nets, net_voxresnet);
    tcase_add_test(nets, net_deep_supervision);
    suite_add_tcase(s, nets);
    return s;
}
