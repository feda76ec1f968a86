/* test_ops_more.c — shape rules of the non-convolution ops: pools,
 * upsampling, movement (concat, crop, pad), arithmetic, normalization,
 * activations and losses. */
#define _POSIX_C_SOURCE 200809L
#include "ops_fixture.h"

Suite *ops_more_suite(void);

/* ---- pools, upsample ------------------------------------------------------------ */

START_TEST(pools)
{
    OpAttrs at = kernel_attrs(OP_MAXPOOL, 2, 2);
    Shape in = S(1, 8, 64, 63), out, want = S(1, 8, 32, 31);
    ck_assert(infer(OP_MAXPOOL, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(at.stride[1], 2);

    /* MaxPool2d(3, 2): floor(61 / 2) + 1 = 31; ceil_mode: 32 */
    at = kernel_attrs(OP_MAXPOOL, 2, 3);
    set_axes(at.stride, 2, 2, 0);
    in = S(1, 8, 64, 64);
    want = S(1, 8, 31, 31);
    ck_assert(infer(OP_MAXPOOL, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    at.ceil_mode = true;
    want = S(1, 8, 32, 32);
    ck_assert(infer(OP_AVGPOOL, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_double_eq_tol(op_table[OP_AVGPOOL].flops(&at, &in, 1, &out), 8.0 * 32 * 32 * 9, 0.5);

    /* ceil mode: the last window must start inside input + left padding:
     * MaxPool1d(2, padding 1, ceil_mode) on 3 gives 2, not 3 */
    at = kernel_attrs(OP_MAXPOOL, 1, 2);
    at.ceil_mode = true;
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[0] = at.pad.hi[0] = 1;
    Shape in1 = S(1, 1, 3), want1 = S(1, 1, 2);
    ck_assert(infer(OP_MAXPOOL, 1, &at, &in1, 1, &out));
    ck_shape(&out, &want1);

    /* same */
    at = kernel_attrs(OP_MAXPOOL, 2, 2);
    at.pad.mode = PAD_SAME;
    in = S(1, 8, 5, 5);
    want = S(1, 8, 3, 3);
    ck_assert(infer(OP_MAXPOOL, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(at.pad.hi[0], 1);
    ck_assert_int_eq(diag.nerrors, 0);

    at = kernel_attrs(OP_MAXPOOL, 2, 2);
    at.pad.mode = PAD_EXPLICIT;
    set_axes(at.pad.lo, 2, 2, 0);
    set_axes(at.pad.hi, 2, 2, 0);
    ck_assert(!infer(OP_MAXPOOL, 2, &at, &in, 1, &out));
    ck_msg("maxpool: padding 2 on axis H is more than half the kernel 2");

    OpAttrs g = defaults(OP_GLOBAL_AVGPOOL, 2);
    in = S(2, 64, 7, 9);
    want = S(2, 64, 1, 1);
    ck_assert(infer(OP_GLOBAL_AVGPOOL, 2, &g, &in, 1, &out));
    ck_shape(&out, &want);
}
END_TEST

START_TEST(upsample)
{
    OpAttrs at = defaults(OP_UPSAMPLE, 2);
    Shape in = S(1, 8, 16, 15), out, want = S(1, 8, 32, 30);
    ck_assert(infer(OP_UPSAMPLE, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_double_eq(op_table[OP_UPSAMPLE].flops(&at, &in, 1, &out), 0);

    at = defaults(OP_UPSAMPLE, 3);
    set_axes(at.scale, 1, 2, 2);
    at.mode = 1;
    at.align_corners = true;
    Shape in3 = S(1, 8, 5, 16, 16), want3 = S(1, 8, 5, 32, 32);
    ck_assert(infer(OP_UPSAMPLE, 3, &at, &in3, 1, &out));
    ck_shape(&out, &want3);

    at = defaults(OP_UPSAMPLE, 2);
    at.align_corners = true;
    ck_assert(!infer(OP_UPSAMPLE, 2, &at, &in, 1, &out));
    ck_msg("align_corners needs mode = linear");

    at = defaults(OP_UPSAMPLE, 2);
    at.scale[1] = 0;
    ck_assert(!infer(OP_UPSAMPLE, 2, &at, &in, 1, &out));
    ck_msg("scale must be positive, got 0 on axis W");

    /* 2^12 * 2^20 = 2^32 > 2^31 per dimension */
    at = defaults(OP_UPSAMPLE, 2);
    set_axes(at.scale, 1 << 20, 1, 0);
    in = S(1, 1, 1 << 12, 4);
    ck_assert(!infer(OP_UPSAMPLE, 2, &at, &in, 1, &out));
    ck_msg("upsample: tensor too large");
}
END_TEST

/* ---- concat and the divisibility hint -------------------------------------------- */

START_TEST(concat_ok)
{
    OpAttrs at = defaults(OP_CONCAT, 2);
    Shape in[3] = { S(2, 64, 32, 32), S(2, 32, 32, 32), S(2, 1, 32, 32) }, out;
    Shape want = S(2, 97, 32, 32);
    ck_assert(infer(OP_CONCAT, 2, &at, in, 3, &out));
    ck_shape(&out, &want);
    ck_assert(!infer(OP_CONCAT, 2, &at, in, 1, &out));
    ck_msg("concat takes at least 2 inputs, got 1");
}
END_TEST

static Tensor make_tensor(const char *name, Shape s, int64_t down)
{
    Tensor t;
    memset(&t, 0, sizeof t);
    t.name = (char *)name;
    t.shape = s;
    t.dtype = DT_F32;
    t.kind = TK_ACTIVATION;
    for (int i = 0; i < MAX_SPATIAL; i++)
        t.down_num[i] = down, t.down_den[i] = 1, t.max_down[i] = down;
    return t;
}

START_TEST(concat_mismatch_hint)
{
    /* decoder tensor upsampled from 16x down (16/2) vs the 16x skip */
    Shape in[2] = { S(1, 64, 32, 32), S(1, 64, 31, 31) }, out;
    Tensor a = make_tensor("up", in[0], 16), b = make_tensor("skip", in[1], 16);
    a.down_den[0] = a.down_den[1] = 2;
    const Tensor *ts[2] = { &a, &b };
    int64_t size[2] = { 250, 250 };
    ShapeCtx cx = ctx(2, 2);
    cx.in = ts;
    cx.protocol_name = "t1_brain_axial";
    cx.protocol_size = size;
    OpAttrs at = defaults(OP_CONCAT, 2);
    ck_assert(!op_table[OP_CONCAT].shape(&cx, &at, in, 2, &out));
    ck_msg("concat of 64x32x32 and 64x31x31: spatial sizes differ; input 250 is not divisible "
           "by 16 (4 poolings) for protocol t1_brain_axial");
    ck_assert_int_eq(diag.nerrors, 1);
}
END_TEST

START_TEST(concat_mismatch_no_hint)
{
    Shape in[2] = { S(1, 64, 32, 32), S(1, 64, 32, 30) }, out;
    Tensor a = make_tensor("a", in[0], 8), b = make_tensor("b", in[1], 8);
    const Tensor *ts[2] = { &a, &b };
    int64_t size[2] = { 256, 240 };          /* divisible: no hint */
    ShapeCtx cx = ctx(2, 2);
    cx.in = ts;
    cx.protocol_size = size;
    OpAttrs at = defaults(OP_CONCAT, 2);
    ck_assert(!op_table[OP_CONCAT].shape(&cx, &at, in, 2, &out));
    ck_msg("concat of 64x32x32 and 64x32x30: spatial sizes differ");
    ck_no_msg("divisible");

    /* factor 12 is not a power of two: no "(N poolings)"; no protocol name given */
    size[1] = 250;
    a.down_num[1] = 12;
    a.max_down[1] = 12;
    ck_assert(!op_table[OP_CONCAT].shape(&cx, &at, in, 2, &out));
    ck_msg("spatial sizes differ; input 250 is not divisible by 12");
    ck_no_msg("pooling");
    ck_no_msg("protocol");

    Shape nb[2] = { S(1, 64, 32, 32), S(2, 64, 32, 32) };
    ck_assert(!infer(OP_CONCAT, 2, &at, nb, 2, &out));
    ck_msg("concat of 1x64x32x32 and 2x64x32x32: batch sizes differ (1 vs 2)");
}
END_TEST

/* ---- crop, pad ----------------------------------------------------------------- */

START_TEST(crop_center)
{
    OpAttrs at = defaults(OP_CROP, 2);
    Shape in[2] = { S(1, 64, 37, 36), S(1, 8, 32, 32) }, out, want = S(1, 64, 32, 32);
    ck_assert(infer(OP_CROP, 2, &at, in, 2, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(at.pad.lo[0], 2);         /* odd difference 5: 2 at the start, 3 at the end */
    ck_assert_int_eq(at.pad.hi[0], 3);
    ck_assert_int_eq(at.pad.lo[1], 2);
    ck_assert_int_eq(at.pad.hi[1], 2);
    ck_assert(infer(OP_CROP, 2, &at, in, 2, &out));    /* idempotent */
    ck_shape(&out, &want);

    at = defaults(OP_CROP, 2);
    at.pad.mode = PAD_EXPLICIT;
    set_axes(at.pad.lo, 1, 0, 0);
    set_axes(at.pad.hi, 2, 4, 0);
    want = S(1, 64, 34, 32);
    ck_assert(infer(OP_CROP, 2, &at, in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(diag.nerrors, 0);

    ck_assert(!infer(OP_CROP, 2, &at, in, 2, &out));
    ck_msg("crop: give either a reference tensor or an amount to remove, not both");
}
END_TEST

START_TEST(crop_errors)
{
    OpAttrs at = defaults(OP_CROP, 2);
    Shape in[2] = { S(1, 64, 30, 40), S(1, 64, 32, 32) }, out;
    ck_assert(!infer(OP_CROP, 2, &at, in, 2, &out));
    ck_msg("crop of 64x30x40 to 64x32x32: the reference is larger on axis H (32 > 30)");

    at = defaults(OP_CROP, 2);
    ck_assert(!infer(OP_CROP, 2, &at, in, 1, &out));
    ck_msg("crop: needs a reference tensor");

    at.pad.mode = PAD_EXPLICIT;
    set_axes(at.pad.lo, 15, 0, 0);
    set_axes(at.pad.hi, 15, 0, 0);
    ck_assert(!infer(OP_CROP, 2, &at, in, 1, &out));
    ck_msg("crop: removing 15+15 on axis H leaves nothing of size 30");

    Shape three[3] = { in[0], in[1], in[1] };
    ck_assert(!infer(OP_CROP, 2, &at, three, 3, &out));
    ck_msg("crop takes 1 or 2 inputs, got 3");
}
END_TEST

START_TEST(pad_op)
{
    OpAttrs at = defaults(OP_PAD, 3);
    at.pad.mode = PAD_EXPLICIT;
    set_axes(at.pad.lo, 0, 1, 2);
    set_axes(at.pad.hi, 0, 2, 2);
    Shape in = S(1, 4, 5, 6, 7), out, want = S(1, 4, 5, 9, 11);
    ck_assert(infer(OP_PAD, 3, &at, &in, 1, &out));
    ck_shape(&out, &want);
    at.mode = 1;                                /* reflect: pad < size */
    ck_assert(infer(OP_PAD, 3, &at, &in, 1, &out));
    ck_assert_int_eq(diag.nerrors, 0);

    set_axes(at.pad.hi, 0, 6, 0);
    ck_assert(!infer(OP_PAD, 3, &at, &in, 1, &out));
    ck_msg("pad: reflect padding 6 on axis H needs a larger input than 6");

    at = defaults(OP_PAD, 3);
    ck_assert(!infer(OP_PAD, 3, &at, &in, 1, &out));
    ck_msg("pad: the amount must be numbers");

    at = defaults(OP_PAD, 3);
    at.pad.mode = PAD_EXPLICIT;
    at.pad.lo[2] = -1;
    ck_assert(!infer(OP_PAD, 3, &at, &in, 1, &out));
    ck_msg("pad: amount must be non-negative, got -1 on axis W");
}
END_TEST

/* ---- add, mul, scale ----------------------------------------------------------------- */

START_TEST(add_broadcast)
{
    OpAttrs at = defaults(OP_MUL, 2);
    Shape in[3] = { S(2, 64, 1, 1), S(2, 64, 32, 32), S(2, 64, 32, 32) }, out;
    Shape want = S(2, 64, 32, 32);
    ck_assert(infer(OP_MUL, 2, &at, in, 2, &out));        /* channel gating */
    ck_shape(&out, &want);
    ck_assert(infer(OP_ADD, 2, &at, in, 3, &out));
    ck_shape(&out, &want);
    ck_assert_double_eq_tol(op_table[OP_ADD].flops(&at, in, 3, &out), 2.0 * 2 * 64 * 1024, 0.5);

    Shape sc[2] = { { 0 }, { 0 } }, zero = { 0 };
    ck_assert(infer(OP_ADD, 2, &at, sc, 2, &out));        /* loss sums */
    ck_shape(&out, &zero);
    Shape mix[2] = { { 0 }, S(2, 64, 32, 32) };
    ck_assert(infer(OP_ADD, 2, &at, mix, 2, &out));
    ck_shape(&out, &want);
    ck_assert(!infer(OP_MUL, 2, &at, in, 3, &out));
    ck_msg("mul takes 2 inputs, got 3");
}
END_TEST

START_TEST(add_mismatch)
{
    Shape in[2] = { S(1, 32, 16, 16), S(1, 32, 15, 16) }, out;
    Tensor a = make_tensor("a", in[0], 8), b = make_tensor("b", in[1], 16);
    const Tensor *ts[2] = { &a, &b };
    int64_t size[2] = { 250, 256 };
    ShapeCtx cx = ctx(2, 2);
    cx.in = ts;
    cx.protocol_size = size;
    cx.protocol_name = "p";
    cx.op_name = "add";
    OpAttrs at = defaults(OP_ADD, 2);
    ck_assert(!op_table[OP_ADD].shape(&cx, &at, in, 2, &out));
    ck_msg("add of 32x16x16 and 32x15x16: spatial sizes differ; input 250 is not divisible by 16 "
           "(4 poolings) for protocol p");

    Shape ch[2] = { S(1, 32, 16, 16), S(1, 16, 16, 16) };
    ck_assert(!infer(OP_ADD, 2, &at, ch, 2, &out));
    ck_msg("add of 32x16x16 and 16x16x16: channels differ (32 vs 16)");

    Shape rk[2] = { S(1, 32, 16, 16), S(1, 32, 16) };
    ck_assert(!infer(OP_ADD, 2, &at, rk, 2, &out));
    ck_msg("add of 1x32x16x16 and 1x32x16: ranks differ (4 vs 3)");
}
END_TEST

START_TEST(scale_and_activations)
{
    OpAttrs at = defaults(OP_SCALE, 2);
    at.factor = 0.5;
    Shape zero = { 0 }, out;
    ck_assert(infer(OP_SCALE, 2, &at, &zero, 1, &out));   /* number * loss */
    ck_shape(&out, &zero);

    Shape in = S(1, 8, 4, 4);
    for (int k = OP_RELU; k <= OP_DROPOUT; k++) {
        at = defaults((OpKind)k, 2);
        ck_assert_msg(infer((OpKind)k, 2, &at, &in, 1, &out), "%s", op_table[k].name);
        ck_shape(&out, &in);
    }
    at = defaults(OP_SOFTMAX, 2);
    ck_assert(!infer(OP_SOFTMAX, 2, &at, &zero, 1, &out));
    ck_msg("softmax needs a tensor of rank >= 2");

    at = defaults(OP_DROPOUT, 2);
    at.p = 1.0;
    ck_assert(!infer(OP_DROPOUT, 2, &at, &in, 1, &out));
    ck_msg("dropout: p must be in [0, 1), got 1");
}
END_TEST

/* ---- norms, prelu ---------------------------------------------------------------------- */

START_TEST(norm_params)
{
    Shape in = S(2, 32, 8, 8), out;
    ParamSpec ps[NODE_MAX_PARAMS];
    OpAttrs at = defaults(OP_BATCHNORM, 2);
    ck_assert(infer(OP_BATCHNORM, 2, &at, &in, 1, &out));
    ck_shape(&out, &in);
    ck_assert_int_eq(op_table[OP_BATCHNORM].params(&at, &in, 1, ps), 4);
    const char *names[4] = { "weight", "bias", "running_mean", "running_var" };
    InitKind inits[4] = { INIT_ONES, INIT_ZEROS, INIT_ZEROS, INIT_ONES };
    Shape c = S(32);
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(ps[i].suffix, names[i]);
        ck_assert_int_eq(ps[i].init.kind, inits[i]);
        ck_assert(ps[i].trainable == (i < 2));
        ck_shape(&ps[i].shape, &c);
    }
    at.affine = false;
    ck_assert_int_eq(op_table[OP_BATCHNORM].params(&at, &in, 1, ps), 2);
    ck_assert_str_eq(ps[0].suffix, "running_mean");

    at = defaults(OP_INSTANCENORM, 2);
    ck_assert(infer(OP_INSTANCENORM, 2, &at, &in, 1, &out));
    ck_assert_int_eq(op_table[OP_INSTANCENORM].params(&at, &in, 1, ps), 2);
    ck_assert(ps[0].trainable && ps[1].trainable);
    at.affine = false;
    ck_assert_int_eq(op_table[OP_INSTANCENORM].params(&at, &in, 1, ps), 0);

    Shape r2 = S(2, 32);
    ck_assert(!infer(OP_BATCHNORM, 2, &at, &r2, 1, &out));
    ck_msg("batchnorm needs a tensor of rank >= 3");
    Shape one = S(2, 32, 1, 1);
    at = defaults(OP_INSTANCENORM, 2);
    ck_assert(!infer(OP_INSTANCENORM, 2, &at, &one, 1, &out));
    ck_msg("instancenorm needs more than one spatial element per channel, got 32x1x1");
}
END_TEST

START_TEST(prelu_params)
{
    Shape in = S(2, 24, 8, 8), out;
    ParamSpec ps[NODE_MAX_PARAMS];
    OpAttrs at = defaults(OP_PRELU, 2);
    ck_assert(infer(OP_PRELU, 2, &at, &in, 1, &out));
    ck_assert_int_eq(op_table[OP_PRELU].params(&at, &in, 1, ps), 1);
    Shape c = S(24), one = S(1);
    ck_shape(&ps[0].shape, &c);
    ck_assert_str_eq(ps[0].suffix, "weight");
    ck_assert_int_eq(ps[0].init.kind, INIT_CONST);
    ck_assert_double_eq_tol(ps[0].init.a, 0.25, 1e-12);
    at.shared = true;
    ck_assert_int_eq(op_table[OP_PRELU].params(&at, &in, 1, ps), 1);
    ck_shape(&ps[0].shape, &one);
    for (int k = 0; k < OP_COUNT; k++)
        if (k != OP_CONV && k != OP_UPCONV && k != OP_BATCHNORM && k != OP_INSTANCENORM &&
            k != OP_PRELU) {
            OpAttrs d = defaults((OpKind)k, 2);
            ck_assert_int_eq(op_table[k].params(&d, &in, 1, ps), 0);
        }
}
END_TEST

/* ---- losses ------------------------------------------------------------------------------ */

START_TEST(losses)
{
    Shape zero = { 0 }, out;
    Shape in[2] = { S(2, 3, 32, 32), S(2, 1, 64, 128) };   /* deep supervision: labels 2x, 4x */
    for (int k = OP_CE; k <= OP_FOCAL; k++) {
        OpAttrs at = defaults((OpKind)k, 2);
        ck_assert_msg(infer((OpKind)k, 2, &at, in, 2, &out), "%s", op_table[k].name);
        ck_shape(&out, &zero);
    }
    ck_assert_double_eq_tol(op_table[OP_CE].flops(NULL, in, 2, &out), 7.0 * 2 * 3 * 1024, 0.5);
    ck_assert_int_eq(diag.nerrors, 0);

    /* valid convolutions: the output covers the centre of a larger patch */
    OpAttrs at = defaults(OP_DICE, 2);
    Shape valid[2] = { S(2, 3, 32, 32), S(2, 1, 50, 32) };
    ck_assert(infer(OP_DICE, 2, &at, valid, 2, &out));
    ck_assert_int_eq(diag.nerrors, 0);

    Shape small[2] = { S(2, 3, 32, 32), S(2, 1, 16, 32) };
    ck_assert(!infer(OP_DICE, 2, &at, small, 2, &out));
    ck_msg("dice: labels 1x16x32 are smaller than logits 3x32x32: on axis H, 16 < 32");

    Shape ch[2] = { S(2, 3, 32, 32), S(2, 3, 32, 32) };
    ck_assert(!infer(OP_CE, 2, &at, ch, 2, &out));
    ck_msg("labels must have 1 channel (class indices), got 3");

    at = defaults(OP_CE, 2);
    at.nweights = 2;
    at.weights[0] = at.weights[1] = 1;
    ck_assert(!infer(OP_CE, 2, &at, in, 2, &out));
    ck_msg("ce: 2 class weights given for 3 classes");
    at.nweights = 3;
    at.weights[2] = 2;
    ck_assert(infer(OP_CE, 2, &at, in, 2, &out));

    /* labels first: integer logits */
    Tensor lab = make_tensor("labels", in[1], 1), lg = make_tensor("logits", in[0], 1);
    lab.dtype = DT_I32;
    const Tensor *ts[2] = { &lab, &lg };
    Shape swapped[2] = { in[1], in[0] };
    ShapeCtx cx = ctx(2, 2);
    cx.in = ts;
    at = defaults(OP_CE, 2);
    ck_assert(!op_table[OP_CE].shape(&cx, &at, swapped, 2, &out));
    ck_msg("ce: logits must be a float tensor but 'labels' is integer");

    Shape one[1] = { in[0] };
    ck_assert(!infer(OP_FOCAL, 2, &at, one, 1, &out));
    ck_msg("focal takes 2 or 3 inputs, got 1");
}
END_TEST

Suite *ops_more_suite(void)
{
    Suite *s = suite_create("ops-more");
    TCase *tc = tcase_create("ops-more");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, pools);
    tcase_add_test(tc, upsample);
    tcase_add_test(tc, concat_ok);
    tcase_add_test(tc, concat_mismatch_hint);
    tcase_add_test(tc, concat_mismatch_no_hint);
    tcase_add_test(tc, crop_center);
    tcase_add_test(tc, crop_errors);
    tcase_add_test(tc, pad_op);
    tcase_add_test(tc, add_broadcast);
    tcase_add_test(tc, add_mismatch);
    tcase_add_test(tc, scale_and_activations);
    tcase_add_test(tc, norm_params);
    tcase_add_test(tc, prelu_params);
    tcase_add_test(tc, losses);
    suite_add_tcase(s, tc);
    return s;
}
