/* test_ops.c — unit tests of the op table: shape rules, parameters, FLOPs.
 *
 * Expected sizes follow PyTorch (Conv/ConvTranspose/MaxPool output formulas
 * and weight layouts) and TensorFlow's same padding.  Diagnostics are
 * captured with open_memstream into Diag.out.
 *
 * Build alone:  cc -DTEST_OPS_MAIN -Icompiler tests/test_ops.c compiler/ops.c
 *               compiler/ops_shape.c compiler/diag.c $(pkg-config --cflags --libs check)
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"

Suite *ops_suite(void);

/* ---- fixture: a Diag writing into memory ----------------------------------- */

static Diag diag;
static char *diag_buf;
static size_t diag_len;
static FILE *diag_file;

static void setup(void)
{
    diag_file = open_memstream(&diag_buf, &diag_len);
    diag_init(&diag, diag_file);
}

static void teardown(void)
{
    diag_free(&diag);
    fclose(diag_file);
    free(diag_buf);
    diag_buf = NULL;
}

static const char *messages(void)
{
    fflush(diag_file);
    return diag_buf ? diag_buf : "";
}

#define ck_no_msg(sub) ck_assert_msg(strstr(messages(), (sub)) == NULL, "unexpected \"%s\" in: %s", (sub), messages())
#define ck_msg(sub) ck_assert_msg(strstr(messages(), (sub)) != NULL, "expected \"%s\" in: %s", (sub), messages())

/* ---- helpers --------------------------------------------------------------- */

static Shape shp(size_t rank, const int64_t *d)
{
    Shape s;
    memset(&s, 0, sizeof s);
    s.rank = (int)rank;
    for (size_t i = 0; i < rank; i++)
        s.d[i] = d[i];
    return s;
}
/* S(1, 64, 32, 32): a shape from its dimensions */
#define S(...) shp(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t), (int64_t[]){ __VA_ARGS__ })
#define D(x) ((int64_t)(x))

static ShapeCtx ctx(int sr, int nin)
{
    ShapeCtx cx;
    memset(&cx, 0, sizeof cx);
    cx.diag = &diag;
    cx.loc = (SrcLoc){ -1, 0, 0, 0, 0 };
    cx.spatial_rank = sr;
    cx.nin = nin;
    return cx;
}

static OpAttrs defaults(OpKind k, int sr)
{
    OpAttrs at;
    op_default_attrs(k, sr, &at);
    return at;
}

static bool infer(OpKind k, int sr, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    ShapeCtx cx = ctx(sr, nin);
    memset(out, 0, sizeof *out);
    return op_table[k].shape(&cx, at, in, nin, out);
}

static void ck_shape(const Shape *got, const Shape *want)
{
    char a[128], b[128];
    ck_assert_msg(shape_equal(got, want), "shape %s, expected %s (rank %d vs %d)",
                  shape_format(a, sizeof a, got, false), shape_format(b, sizeof b, want, false),
                  got->rank, want->rank);
}

static void set_axes(int64_t *v, int64_t a, int64_t b, int64_t c)
{
    v[0] = a, v[1] = b, v[2] = c;
}

static OpAttrs conv_attrs(int sr, int64_t ch, int64_t k)
{
    OpAttrs at = defaults(OP_CONV, sr);
    at.channels = ch;
    for (int i = 0; i < sr; i++)
        at.kernel[i] = k;
    return at;
}

static OpAttrs kernel_attrs(OpKind op, int sr, int64_t k)
{
    OpAttrs at = defaults(op, sr);
    for (int i = 0; i < sr; i++)
        at.kernel[i] = k;
    return at;
}

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
        ck_assert_int_eq(op_lookup(op->name), k);
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
    ck_msg("focal takes 2 inputs, got 1");
}
END_TEST

Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("ops");
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

#ifdef TEST_OPS_MAIN
int main(void)
{
    SRunner *sr = srunner_create(ops_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#endif
