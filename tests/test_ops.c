/* test_ops.c — unit tests of the op table: shape rules, parameters, FLOPs.
 *
 * Expected sizes follow PyTorch (Conv/ConvTranspose/MaxPool output formulas
 * and weight layouts) and TensorFlow's same padding.  Diagnostics are
 * captured with open_memstream into Diag.out.
 *
 * The rules of the other ops are tested in test_ops_more.c.
 */
#define _POSIX_C_SOURCE 200809L
#include "ops_fixture.h"

Suite *ops_suite(void);

/* ---- the table itself -------------------------------------------------------- */

static const char *const def_names[] = {
#define OP(id, name) #name,
#include "ops.def"
#undef OP
};

START_TEST(table_complete)
{
    for (int k = 0; k < OP_COUNT; k++) {
        const OpInfo *op = &op_table[k];
        ck_assert_ptr_nonnull(op->name);
        ck_assert_str_eq(op->name, def_names[k]);
        ck_assert_ptr_nonnull(op->summary);
        ck_assert_ptr_nonnull(op->attrs);
        ck_assert_ptr_nonnull(op->shape);
        ck_assert_ptr_nonnull(op->params);
        ck_assert_ptr_nonnull(op->flops);
        /* ops made by autodiff cannot be written in .net files */
        ck_assert_int_eq(op_lookup(op->name), op->internal ? OP_COUNT : k);
        /* positional arguments are numbered 0, 1, ... without gaps */
        int npos = 0, maxpos = -1;
        for (const AttrSpec *a = op->attrs; a->name; a++) {
            ck_assert_uint_lt(a->offset, sizeof(OpAttrs));
            ck_assert_ptr_nonnull(a->doc);
            if (a->position >= 0) npos++;
            if (a->position > maxpos) maxpos = a->position;
            if (a->type == AT_ENUM || a->type == AT_PADDING) ck_assert_ptr_nonnull(a->enum_values);
        }
        ck_assert_int_eq(npos, maxpos + 1);
    }
    ck_assert_int_eq(op_lookup("convolution"), OP_COUNT);
    ck_assert_int_eq(op_lookup(NULL), OP_COUNT);
    ck_assert_str_eq(init_kind_name(INIT_XAVIER_UNIFORM), "xavier_uniform");
    ck_assert_str_eq(init_kind_name(INIT_CONST), "const");
    ck_assert_str_eq(fusion_kind_name(FK_CONV), "conv");
    ck_assert_str_eq(fusion_kind_name(FK_INJECTIVE), "injective");
}
END_TEST

START_TEST(defaults_applied)
{
    OpAttrs at = defaults(OP_CONV, 3);
    ck_assert_int_eq(at.stride[0], 1);
    ck_assert_int_eq(at.stride[2], 1);
    ck_assert_int_eq(at.dilation[1], 1);
    ck_assert_int_eq(at.groups, 1);
    ck_assert(at.bias);
    ck_assert_int_eq(at.pad.mode, PAD_SAME);
    ck_assert_int_eq(at.init, INIT_HE_NORMAL);
    ck_assert_double_eq_tol(at.init_a, 0.01, 1e-12);

    at = defaults(OP_CONV, 2);
    ck_assert_int_eq(at.stride[2], 0);          /* only `rank` axes */

    at = defaults(OP_UPCONV, 2);
    ck_assert_int_eq(at.stride[0], 0);          /* = kernel, resolved by the rule */
    ck_assert_int_eq(at.pad.mode, PAD_VALID);

    at = defaults(OP_AVGPOOL, 2);
    ck_assert(at.count_pad);
    ck_assert(!at.ceil_mode);
    ck_assert_int_eq(at.pad.mode, PAD_VALID);

    at = defaults(OP_UPSAMPLE, 3);
    ck_assert_int_eq(at.scale[0], 2);
    ck_assert_int_eq(at.scale[2], 2);

    at = defaults(OP_CE, 2);
    ck_assert_int_eq(at.ignore, -1);
    ck_assert_int_eq(at.nweights, 0);
    at = defaults(OP_FOCAL, 2);
    ck_assert_double_eq_tol(at.gamma, 2.0, 1e-12);
    ck_assert_double_eq_tol(at.alpha, 0.25, 1e-12);
    at = defaults(OP_DICE, 2);
    ck_assert_double_eq_tol(at.smooth, 1e-5, 1e-15);
    ck_assert(!at.background && !at.batch_dice);
    at = defaults(OP_BATCHNORM, 2);
    ck_assert_double_eq_tol(at.eps, 1e-5, 1e-15);
    ck_assert_double_eq_tol(at.momentum, 0.1, 1e-12);
    ck_assert(at.affine);
    at = defaults(OP_PRELU, 2);
    ck_assert_double_eq_tol(at.value, 0.25, 1e-12);
    at = defaults(OP_LEAKY_RELU, 2);
    ck_assert_double_eq_tol(at.slope, 0.01, 1e-12);
    at = defaults(OP_DROPOUT, 2);
    ck_assert_double_eq_tol(at.p, 0.5, 1e-12);
}
END_TEST

START_TEST(shape_utils)
{
    char buf[96];
    Shape s = S(2, 64, 32, 31);
    ck_assert_str_eq(shape_format(buf, sizeof buf, &s, true), "64x32x31");
    ck_assert_str_eq(shape_format(buf, sizeof buf, &s, false), "2x64x32x31");
    Shape z = { 0 };
    ck_assert_str_eq(shape_format(buf, sizeof buf, &z, true), "scalar");
    ck_assert_int_eq(shape_numel(&s), 2 * 64 * 32 * 31);
    ck_assert_int_eq(shape_numel(&z), 1);
    Shape huge = S(D(1) << 40, D(1) << 40, D(1) << 40);
    ck_assert_int_eq(shape_numel(&huge), INT64_MAX);
    Shape t = S(2, 64, 32, 31);
    ck_assert(shape_equal(&s, &t));
    t.d[3] = 32;
    ck_assert(!shape_equal(&s, &t));
}
END_TEST

/* ---- conv ------------------------------------------------------------------- */

START_TEST(conv_same)
{
    OpAttrs at = conv_attrs(2, 32, 3);
    Shape in = S(1, 16, 64, 64), out, want = S(1, 32, 64, 64);
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(at.pad.lo[0], 1);
    ck_assert_int_eq(at.pad.hi[1], 1);
    /* idempotent */
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(diag.nerrors, 0);
}
END_TEST

START_TEST(conv_valid_explicit)
{
    OpAttrs at = conv_attrs(2, 8, 3);
    at.pad.mode = PAD_VALID;
    Shape in = S(2, 4, 64, 50), out, want = S(2, 8, 62, 48);
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);

    at = conv_attrs(2, 8, 3);
    at.pad.mode = PAD_EXPLICIT;
    set_axes(at.pad.lo, 2, 0, 0);
    set_axes(at.pad.hi, 2, 1, 0);
    want = S(2, 8, 66, 49);                   /* 64+4-3+1, 50+1-3+1 */
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
}
END_TEST

START_TEST(conv_same_stride2_even)
{
    /* TF same, even input, stride 2: total padding 1, all at the end. */
    OpAttrs at = conv_attrs(2, 32, 3);
    set_axes(at.stride, 2, 2, 0);
    Shape in = S(1, 16, 64, 64), out, want = S(1, 32, 32, 32);
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(at.pad.lo[0], 0);
    ck_assert_int_eq(at.pad.hi[0], 1);

    /* odd input 63: out 32, total 2 -> 1 + 1 (PyTorch conv(k3, s2, p1) gives 32 too) */
    at = conv_attrs(2, 32, 3);
    set_axes(at.stride, 2, 2, 0);
    in = S(1, 16, 63, 63);
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(at.pad.lo[1], 1);
    ck_assert_int_eq(at.pad.hi[1], 1);

    /* odd, valid: floor((63 - 3) / 2) + 1 = 31 */
    at = conv_attrs(2, 32, 3);
    set_axes(at.stride, 2, 2, 0);
    at.pad.mode = PAD_VALID;
    want = S(1, 32, 31, 31);
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
}
END_TEST

START_TEST(conv_dilation)
{
    OpAttrs at = conv_attrs(2, 4, 3);
    set_axes(at.dilation, 2, 2, 0);
    at.pad.mode = PAD_VALID;
    Shape in = S(1, 4, 64, 64), out, want = S(1, 4, 60, 60);
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);

    at = conv_attrs(2, 4, 3);
    set_axes(at.dilation, 2, 2, 0);
    want = S(1, 4, 64, 64);
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(at.pad.lo[0], 2);
    ck_assert_int_eq(at.pad.hi[0], 2);

    /* dilation 0 means 1 */
    at = conv_attrs(2, 4, 3);
    set_axes(at.dilation, 0, 0, 0);
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_assert_int_eq(at.dilation[0], 1);
}
END_TEST

START_TEST(conv_groups)
{
    Shape in = S(1, 64, 16, 16), out;
    OpAttrs at = conv_attrs(2, 32, 3);
    at.groups = 32;
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ParamSpec ps[NODE_MAX_PARAMS];
    ck_assert_int_eq(op_table[OP_CONV].params(&at, &in, 1, ps), 2);
    Shape w = S(32, 2, 3, 3);
    ck_shape(&ps[0].shape, &w);
    ck_assert_int_eq(ps[0].init.fan_in, 2 * 9);
    ck_assert_int_eq(ps[0].init.fan_out, 1 * 9);

    at = conv_attrs(2, 32, 3);
    at.groups = 3;
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_msg("conv: groups 3 must divide input channels 64 and output channels 32");

    at = conv_attrs(2, 30, 3);
    at.groups = 4;                             /* divides 64, not 30 */
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));

    at = conv_attrs(2, 32, 3);
    at.groups = 0;
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_msg("groups must be positive");
    ck_assert_int_eq(diag.nerrors, 3);
}
END_TEST

START_TEST(conv_anisotropic_3d)
{
    OpAttrs at = defaults(OP_CONV, 3);
    at.channels = 32;
    set_axes(at.kernel, 1, 3, 3);
    set_axes(at.stride, 1, 2, 2);
    Shape in = S(2, 1, 40, 128, 127), out, want = S(2, 32, 40, 64, 64);
    ck_assert(infer(OP_CONV, 3, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(at.pad.lo[0], 0);
    ck_assert_int_eq(at.pad.hi[0], 0);
    ck_assert_int_eq(at.pad.lo[1], 0);
    ck_assert_int_eq(at.pad.hi[1], 1);
    ck_assert_int_eq(at.pad.lo[2], 1);
    ck_assert_int_eq(at.pad.hi[2], 1);
}
END_TEST

START_TEST(conv_errors)
{
    Shape in = S(1, 4, 2, 16), out;
    OpAttrs at = conv_attrs(2, 4, 5);
    at.pad.mode = PAD_VALID;
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_msg("conv: output would be empty on axis H (input 2, kernel 5, stride 1, dilation 1, padding 0+0)");

    Shape scalar = { 0 };
    at = conv_attrs(2, 4, 3);
    ck_assert(!infer(OP_CONV, 2, &at, &scalar, 1, &out));
    ck_msg("conv expects an image tensor (N, C, H, W), got a scalar");

    Shape r3 = S(1, 4, 16);
    ck_assert(!infer(OP_CONV, 2, &at, &r3, 1, &out));
    ck_msg("got 1x4x16 (rank 3)");

    at = conv_attrs(2, 4, 0);
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_msg("kernel must be positive, got 0 on axis H");

    at = conv_attrs(2, 4, 3);
    set_axes(at.stride, 1, -2, 0);
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_msg("stride must be positive, got -2 on axis W");

    at = conv_attrs(2, 0, 3);
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_msg("channels must be positive");

    at = conv_attrs(2, 4, 3);
    Shape two[2] = { in, in };
    ck_assert(!infer(OP_CONV, 2, &at, two, 2, &out));
    ck_msg("conv takes 1 input, got 2");

    at = conv_attrs(1, 4, 3);
    Shape in1 = S(1, 2, 10);
    Shape want = S(1, 4, 10);
    ck_assert(infer(OP_CONV, 1, &at, &in1, 1, &out));
    ck_shape(&out, &want);
}
END_TEST

START_TEST(conv_overflow)
{
    Shape in = S(1, 1, 64, 64), out;
    OpAttrs at = conv_attrs(2, 4, 0);
    set_axes(at.kernel, D(1) << 62, 3, 0);
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_msg("kernel 4611686018427387904 on axis H is too large");

    at = conv_attrs(2, D(1) << 30, 3);
    at.pad.mode = PAD_VALID;
    in = S(1, 1 << 20, 8, 8);
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_msg("weight too large");

    /* output numel over 2^40 */
    at = conv_attrs(2, 1 << 16, 1);
    in = S(1, 1, 1 << 13, 1 << 13);
    ck_assert(!infer(OP_CONV, 2, &at, &in, 1, &out));
    ck_msg("tensor too large");

    Shape bad = S(1, 1, D(1) << 33, 4);
    at = conv_attrs(2, 4, 3);
    ck_assert(!infer(OP_CONV, 2, &at, &bad, 1, &out));
    ck_msg("tensor too large");
}
END_TEST

START_TEST(conv_params_and_flops)
{
    /* nn.Conv2d(16, 32, 3): weight [32, 16, 3, 3], bias [32] */
    OpAttrs at = conv_attrs(2, 32, 3);
    Shape in = S(1, 16, 64, 64), out;
    ck_assert(infer(OP_CONV, 2, &at, &in, 1, &out));
    ParamSpec ps[NODE_MAX_PARAMS];
    ck_assert_int_eq(op_table[OP_CONV].params(&at, &in, 1, ps), 2);
    Shape w = S(32, 16, 3, 3), b = S(32);
    ck_shape(&ps[0].shape, &w);
    ck_shape(&ps[1].shape, &b);
    ck_assert_str_eq(ps[0].suffix, "weight");
    ck_assert_str_eq(ps[1].suffix, "bias");
    ck_assert_int_eq(ps[0].init.kind, INIT_HE_NORMAL);
    ck_assert_double_eq_tol(ps[0].init.a, 0.01, 1e-12);
    ck_assert_int_eq(ps[0].init.fan_in, 16 * 9);
    ck_assert_int_eq(ps[0].init.fan_out, 32 * 9);
    ck_assert_int_eq(ps[1].init.kind, INIT_ZEROS);
    ck_assert(ps[0].trainable && ps[1].trainable);
    /* 2 * 1 * 32 * 64 * 64 * 16 * 9 + 32 * 64 * 64 */
    ck_assert_double_eq_tol(op_table[OP_CONV].flops(&at, &in, 1, &out), 37879808.0, 0.5);

    /* nn.Conv3d(16, 32, 3, bias=False): weight [32, 16, 3, 3, 3] */
    at = conv_attrs(3, 32, 3);
    at.bias = false;
    at.init = INIT_XAVIER_UNIFORM;
    Shape in3 = S(1, 16, 8, 8, 8);
    ck_assert(infer(OP_CONV, 3, &at, &in3, 1, &out));
    ck_assert_int_eq(op_table[OP_CONV].params(&at, &in3, 1, ps), 1);
    Shape w3 = S(32, 16, 3, 3, 3);
    ck_shape(&ps[0].shape, &w3);
    ck_assert_int_eq(ps[0].init.kind, INIT_XAVIER_UNIFORM);
    ck_assert_double_eq_tol(op_table[OP_CONV].flops(&at, &in3, 1, &out), 2.0 * 32 * 512 * 16 * 27, 0.5);
}
END_TEST

/* ---- upconv ----------------------------------------------------------------- */

START_TEST(upconv_shapes)
{
    /* default: stride = kernel, valid: 16 -> 32 */
    OpAttrs at = kernel_attrs(OP_UPCONV, 2, 2);
    at.channels = 16;
    Shape in = S(1, 32, 16, 16), out, want = S(1, 16, 32, 32);
    ck_assert(infer(OP_UPCONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);
    ck_assert_int_eq(at.stride[0], 2);

    /* ConvTranspose2d(k3, s2, p1, output_padding 1): 15*2 - 2 + 3 + 1 = 32 */
    at = kernel_attrs(OP_UPCONV, 2, 3);
    at.channels = 16;
    set_axes(at.stride, 2, 2, 0);
    at.pad.mode = PAD_EXPLICIT;
    set_axes(at.pad.lo, 1, 1, 0);
    set_axes(at.pad.hi, 1, 1, 0);
    set_axes(at.out_pad, 1, 0, 0);
    want = S(1, 16, 32, 31);
    ck_assert(infer(OP_UPCONV, 2, &at, &in, 1, &out));
    ck_shape(&out, &want);

    /* same: out = in * stride for k3, k2, k1 */
    for (int k = 1; k <= 3; k++) {
        at = kernel_attrs(OP_UPCONV, 2, k);
        at.channels = 16;
        set_axes(at.stride, 2, 2, 0);
        at.pad.mode = PAD_SAME;
        want = S(1, 16, 32, 32);
        ck_assert(infer(OP_UPCONV, 2, &at, &in, 1, &out));
        ck_shape(&out, &want);
        ck_assert(infer(OP_UPCONV, 2, &at, &in, 1, &out));   /* idempotent */
        ck_shape(&out, &want);
        if (k == 1) ck_assert_int_eq(at.out_pad[0], 1);
        if (k == 3) {
            ck_assert_int_eq(at.pad.lo[0], 0);
            ck_assert_int_eq(at.pad.hi[0], 1);
        }
    }
    ck_assert_int_eq(diag.nerrors, 0);
}
END_TEST

START_TEST(upconv_errors_and_params)
{
    Shape in = S(1, 32, 16, 16), out;
    OpAttrs at = kernel_attrs(OP_UPCONV, 2, 3);
    at.channels = 16;
    set_axes(at.stride, 2, 2, 0);
    set_axes(at.out_pad, 2, 0, 0);
    ck_assert(!infer(OP_UPCONV, 2, &at, &in, 1, &out));
    ck_msg("upconv: out_pad 2 on axis H must be smaller than stride 2 or dilation 1");

    /* nn.ConvTranspose3d(32, 16, 2, stride=2): weight [32, 16, 2, 2, 2], bias [16] */
    at = kernel_attrs(OP_UPCONV, 3, 2);
    at.channels = 16;
    Shape in3 = S(2, 32, 4, 8, 8), want = S(2, 16, 8, 16, 16);
    ck_assert(infer(OP_UPCONV, 3, &at, &in3, 1, &out));
    ck_shape(&out, &want);
    ParamSpec ps[NODE_MAX_PARAMS];
    ck_assert_int_eq(op_table[OP_UPCONV].params(&at, &in3, 1, ps), 2);
    Shape w = S(32, 16, 2, 2, 2), b = S(16);
    ck_shape(&ps[0].shape, &w);
    ck_shape(&ps[1].shape, &b);
    ck_assert_int_eq(ps[0].init.fan_in, 16 * 8);   /* PyTorch: weight.size(1) * kernel */
    /* 2 * numel(in) * Cout * prod(k) + numel(out) */
    ck_assert_double_eq_tol(op_table[OP_UPCONV].flops(&at, &in3, 1, &out),
                            2.0 * (2 * 32 * 256) * 16 * 8 + 2 * 16 * 2048, 0.5);

    /* groups: weight [Cin, Cout/g, k...] */
    at = kernel_attrs(OP_UPCONV, 2, 2);
    at.channels = 16;
    at.groups = 4;
    ck_assert(infer(OP_UPCONV, 2, &at, &in, 1, &out));
    ck_assert_int_eq(op_table[OP_UPCONV].params(&at, &in, 1, ps), 2);
    Shape wg = S(32, 4, 2, 2);
    ck_shape(&ps[0].shape, &wg);
}
END_TEST

Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("table-and-conv");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, table_complete);
    tcase_add_test(tc, defaults_applied);
    tcase_add_test(tc, shape_utils);
    tcase_add_test(tc, conv_same);
    tcase_add_test(tc, conv_valid_explicit);
    tcase_add_test(tc, conv_same_stride2_even);
    tcase_add_test(tc, conv_dilation);
    tcase_add_test(tc, conv_groups);
    tcase_add_test(tc, conv_anisotropic_3d);
    tcase_add_test(tc, conv_errors);
    tcase_add_test(tc, conv_overflow);
    tcase_add_test(tc, conv_params_and_flops);
    tcase_add_test(tc, upconv_shapes);
    tcase_add_test(tc, upconv_errors_and_params);
    suite_add_tcase(s, tc);
    return s;
}
