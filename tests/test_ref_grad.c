/* test_ref_grad.c — the reference backward pass against central finite
 * differences of the reference forward pass, op by op (odd sizes, 1D, 2D and
 * 3D, strides, groups, dilation, asymmetric padding) and on a whole unet2d.
 *
 * The scalar is L = sum(y * R) for random R over the op's output y (for a
 * loss, R is one number), accumulated in double; the analytic gradient is
 * ref_backward_from(y, R).  Tolerance: the forward runs in float32, so L
 * carries a rounding error of about 1e-7 * sum|y R| (< 1e-5 for these sizes)
 * which the central difference divides by 2h = 2e-2: about 5e-4 absolute at
 * worst; the truncation error h^2 f'''/6 is about 2e-5 relative for these
 * smooth functions.  Hence |analytic - fd| <= 5e-3 * max(|analytic|, |fd|)
 * + 1e-3 (worst seen: 1.1e-3 relative, conv).  Inputs are a shuffled ramp with spacing 0.04 and none within
 * 0.02 of 0, so a perturbation of h = 1e-2 never crosses a ReLU kink or
 * swaps a max-pool order. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "ref.h"
#include "ref_fixture.h"

#define FD_H 1e-2
#define FD_REL 5e-3
#define FD_ABS 1e-3

static double worst_rel;     /* worst relative error seen (NETC_GRAD_VERBOSE prints it) */


/* A shuffled ramp: spacing 0.04 * scale, centred, no value within 0.02 * scale of 0. */
static void fill_spaced(float *v, int64_t n, uint64_t seed, double scale)
{
    int64_t *perm = malloc(sizeof *perm * (size_t)n);
    ck_assert_ptr_nonnull(perm);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    RefRng r = { seed };
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(ref_rng_next(&r) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(((double)perm[i] + 0.5 - (double)(n / 2)) * 0.04 * scale);
    free(perm);
}

static double weighted_sum(const Graph *g, RefState *s, int out, const float *R, bool training)
{
    char err[256];
    int rc = ref_forward(g, s, training, 42, err, sizeof err);
    ck_assert_msg(rc == 0, "ref_forward: %s", err);
    double L = 0;
    for (int64_t i = 0; i < s->numel[out]; i++)
        L += (double)s->buf[out][i] * R[i];
    return L;
}

static bool wants_grad(const Graph *g, int t)
{
    if (g->tensors[t].dtype != DT_F32) return false;
    if (g->tensors[t].kind == TK_INPUT) return true;
    if (g->tensors[t].kind != TK_PARAM) return false;
    for (int p = 0; p < g->nparams; p++)
        if (g->params[p].tensor == t) return g->params[p].trainable && !g->params[p].frozen;
    return false;
}

/* Compares ref_backward_from(out, R) with central differences on up to about
 * `maxper` elements of every input and trainable parameter (all of them when
 * the tensor is small); parameters without a gradient and labels must get
 * exactly zero. */
static void fd_check(const char *what, const Graph *g, RefState *s, int out, bool training, int maxper,
                     double h, double rel, double abs_tol)
{
    int64_t no = s->numel[out];
    float *R = malloc(sizeof *R * (size_t)no);
    ck_assert_ptr_nonnull(R);
    RefRng r = { 77 };
    for (int64_t i = 0; i < no; i++)
        R[i] = (float)(2 * ref_rng_uniform(&r) - 1);
    if (g->tensors[out].shape.rank == 0) R[0] = 0.7f;
    weighted_sum(g, s, out, R, training);
    RefGrads *gr = ref_grads_new(g);
    ck_assert_ptr_nonnull(gr);
    char err[256];
    int rc = ref_backward_from(g, s, gr, out, R, training, 42, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: ref_backward: %s", what, err);
    int checked = 0;
    for (int t = 0; t < g->ntensors; t++) {
        if (!wants_grad(g, t)) {
            if (g->tensors[t].kind == TK_PARAM || g->tensors[t].kind == TK_LABEL || g->tensors[t].kind == TK_WEIGHTMAP)
                for (int64_t i = 0; i < gr->numel[t]; i++)
                    ck_assert_msg(gr->buf[t][i] == 0, "%s: %s got a gradient", what, g->tensors[t].name);
            continue;
        }
        int64_t n = s->numel[t], step = n > maxper ? n / maxper : 1;
        for (int64_t i = (step > 1 ? (int64_t)(ref_rng_next(&r) % (uint64_t)step) : 0); i < n; i += step) {
            float keep = s->buf[t][i];
            s->buf[t][i] = (float)(keep + h);
            double hp = (double)s->buf[t][i] - keep;
            double lp = weighted_sum(g, s, out, R, training);
            s->buf[t][i] = (float)(keep - h);
            double hm = keep - (double)s->buf[t][i];
            double lm = weighted_sum(g, s, out, R, training);
            s->buf[t][i] = keep;
            double fd = (lp - lm) / (hp + hm), an = gr->buf[t][i];
            double scale = fmax(fabs(fd), fabs(an)), e = fabs(fd - an);
            if (scale > 1e-2 && e / scale > worst_rel) worst_rel = e / scale;
            ck_assert_msg(e <= rel * scale + abs_tol, "%s: d/d %s[%lld]: analytic %.6g, finite difference %.6g",
                          what, g->tensors[t].name, (long long)i, an, fd);
            checked++;
        }
    }
    ck_assert_int_gt(checked, 0);
    if (getenv("NETC_GRAD_VERBOSE")) fprintf(stderr, "%-40s worst relative error so far %.3g\n", what, worst_rel);
    ref_grads_free(gr);
    free(R);
}

/* One op on spaced inputs and parameters (labels, when `labels`, are the
 * last input: random in [0, classes)), checked in the given mode. */
static void fd_op(const char *what, OpKind k, int sr, OpAttrs at, const Shape *ins, int nin, bool labels,
                  int classes, bool training)
{
    Graph *g = graph_new("t", NULL, sr);
    int in[4], out, node;
    for (int j = 0; j < nin; j++) {
        bool lab = labels && j == 1, wm = labels && j == 2;
        in[j] = graph_add_tensor(g, lab ? "labels" : wm ? "weightmap" : "x", ins[j], lab ? DT_I32 : DT_F32,
                                 lab ? TK_LABEL : wm ? TK_WEIGHTMAP : TK_INPUT);
    }
    const Tensor *tp[4];
    for (int j = 0; j < nin; j++)
        tp[j] = &g->tensors[in[j]];
    ShapeCtx cx = { NULL, { 0 }, NULL, sr, tp, nin, NULL, NULL };
    memset(&cx.loc, 0, sizeof cx.loc);
    Shape os;
    ck_assert_msg(op_table[k].shape(&cx, &at, ins, nin, &os), "%s: shape rule failed", what);
    out = graph_add_tensor(g, "y", os, DT_F32, TK_ACTIVATION);
    node = graph_add_node(g, k, op_table[k].name, in, nin, out, &at, cx.loc);
    ParamSpec ps[NODE_MAX_PARAMS];
    int np = op_table[k].params(&at, ins, nin, ps);
    for (int j = 0; j < np; j++)
        graph_add_param(g, node, &ps[j]);
    RefState *s = ref_new(g);
    ck_assert_ptr_nonnull(s);
    ref_init_params(g, s, 1);
    for (int t = 0; t < g->ntensors; t++) {
        if (g->tensors[t].kind == TK_INPUT && g->tensors[t].dtype == DT_F32)
            fill_spaced(s->buf[t], s->numel[t], 100 + (uint64_t)t, 1.0);
        if (g->tensors[t].kind == TK_LABEL) {
            RefRng r = { 5 };
            for (int64_t i = 0; i < s->numel[t]; i++)
                ref_i32(s, t)[i] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
        }
        if (g->tensors[t].kind == TK_WEIGHTMAP) {   /* weights in [0, 3), a quarter of them 0 */
            RefRng r = { 9 };
            for (int64_t i = 0; i < s->numel[t]; i++) {
                double u = ref_rng_uniform(&r);
                s->buf[t][i] = u < 0.25 ? 0.0f : (float)(4 * u - 1);
            }
        }
    }
    for (int p = 0; p < g->nparams; p++)
        if (g->params[p].trainable)
            fill_spaced(s->buf[g->params[p].tensor], s->numel[g->params[p].tensor], 200 + (uint64_t)p, 0.5);
    fd_check(what, g, s, out, training, 40, FD_H, FD_REL, FD_ABS);
    ref_free(s);
    graph_free(g);
}

#define FD1(what, k, sr, at, shape, training) \
    do { Shape s1_ = shape; fd_op(what, k, sr, at, &s1_, 1, false, 0, training); } while (0)

START_TEST(grad_activations)
{
    const OpKind ks[] = { OP_RELU, OP_LEAKY_RELU, OP_ELU, OP_SIGMOID, OP_TANH, OP_SCALE, OP_SOFTMAX, OP_DROPOUT };
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        OpAttrs at = attrs(ks[i], 1);
        if (ks[i] == OP_SCALE) at.factor = -1.5;
        if (ks[i] == OP_LEAKY_RELU) at.slope = 0.1;
        if (ks[i] == OP_DROPOUT) at.p = 0.3;
        FD1(op_table[ks[i]].name, ks[i], 1, at, SH(2, 3, 5), ks[i] == OP_DROPOUT);
        at = attrs(ks[i], 3);
        if (ks[i] == OP_SCALE) at.factor = 0.5;
        if (ks[i] == OP_DROPOUT) at.p = 0.5;
        FD1(op_table[ks[i]].name, ks[i], 3, at, SH(1, 2, 3, 2, 3), true);
    }
    OpAttrs at = attrs(OP_PRELU, 2);
    FD1("prelu per channel", OP_PRELU, 2, at, SH(2, 3, 3, 3), false);
    at.shared = true;
    FD1("prelu shared", OP_PRELU, 2, at, SH(1, 3, 3, 5), false);
}
END_TEST

START_TEST(grad_arithmetic)
{
    Shape ins[3] = { SH(1, 2, 3, 3), SH(1, 2, 1, 1), SCALAR };
    fd_op("add broadcast", OP_ADD, 2, attrs(OP_ADD, 2), ins, 3, false, 0, false);
    ins[0] = SH(1, 1, 1, 3);
    ins[1] = SH(1, 1, 3, 3);
    fd_op("mul broadcast", OP_MUL, 2, attrs(OP_MUL, 2), ins, 2, false, 0, false);
    ins[0] = SH(2, 2, 3);
    ins[1] = SH(2, 2, 3);
    fd_op("mul same shape", OP_MUL, 1, attrs(OP_MUL, 1), ins, 2, false, 0, false);
}
END_TEST

START_TEST(grad_movement)
{
    Shape ins[2] = { SH(1, 1, 3, 3), SH(1, 2, 3, 3) };
    fd_op("concat", OP_CONCAT, 2, attrs(OP_CONCAT, 2), ins, 2, false, 0, false);
    ins[0] = SH(1, 1, 5, 5);
    ins[1] = SH(1, 1, 2, 2);
    fd_op("crop to ref", OP_CROP, 2, attrs(OP_CROP, 2), ins, 2, false, 0, false);
    OpAttrs at = attrs(OP_CROP, 3);
    explicit_pad(&at, 3, (int64_t[]){ 1, 0, 2 }, (int64_t[]){ 0, 1, 0 });
    FD1("crop 3d", OP_CROP, 3, at, SH(1, 2, 3, 3, 4), false);
    for (int m = 0; m < 3; m++) {
        at = attrs(OP_PAD, 2);
        explicit_pad(&at, 2, (int64_t[]){ 2, 1 }, (int64_t[]){ 1, 3 });
        at.mode = m;
        at.value = 0.5;
        FD1("pad", OP_PAD, 2, at, SH(1, 2, 4, 5), false);
    }
}
END_TEST

START_TEST(grad_conv)
{
    OpAttrs at = attrs(OP_CONV, 2);
    at.channels = 4;
    at.kernel[0] = 3;
    at.kernel[1] = 2;
    at.stride[0] = 2;
    at.stride[1] = 1;
    at.dilation[0] = 1;
    at.dilation[1] = 2;
    at.groups = 2;
    at.bias = true;
    explicit_pad(&at, 2, (int64_t[]){ 1, 0 }, (int64_t[]){ 0, 2 });
    FD1("conv groups dilation stride asym pad", OP_CONV, 2, at, SH(2, 4, 7, 6), false);
    at = attrs(OP_CONV, 3);
    at.channels = 3;
    at.kernel[0] = at.kernel[1] = at.kernel[2] = 3;
    at.bias = true;
    FD1("conv 3d", OP_CONV, 3, at, SH(1, 2, 3, 4, 3), false);
    at = attrs(OP_CONV, 1);
    at.channels = 2;
    at.kernel[0] = 3;
    at.stride[0] = 2;
    at.bias = false;
    FD1("conv 1d no bias", OP_CONV, 1, at, SH(2, 3, 9), false);
}
END_TEST

START_TEST(grad_upconv)
{
    OpAttrs at = attrs(OP_UPCONV, 2);
    at.channels = 2;
    at.kernel[0] = at.kernel[1] = 2;
    at.groups = 2;
    at.bias = true;
    FD1("upconv groups", OP_UPCONV, 2, at, SH(1, 4, 3, 3), false);
    at = attrs(OP_UPCONV, 1);
    at.channels = 3;
    at.kernel[0] = 3;
    at.stride[0] = 2;
    at.out_pad[0] = 1;
    explicit_pad(&at, 1, (int64_t[]){ 1 }, (int64_t[]){ 1 });
    at.bias = true;
    FD1("upconv pad out_pad", OP_UPCONV, 1, at, SH(2, 2, 5), false);
    at = attrs(OP_UPCONV, 3);
    at.channels = 2;
    at.kernel[0] = at.kernel[1] = at.kernel[2] = 2;
    FD1("upconv 3d", OP_UPCONV, 3, at, SH(1, 2, 2, 3, 2), false);
}
END_TEST

START_TEST(grad_pools)
{
    for (int mx = 0; mx < 2; mx++) {
        OpKind k = mx ? OP_MAXPOOL : OP_AVGPOOL;
        OpAttrs at = attrs(k, 2);
        at.kernel[0] = at.kernel[1] = 2;
        at.ceil_mode = true;
        FD1("pool ceil", k, 2, at, SH(1, 2, 5, 5), false);
        for (int cp = 0; cp < 2; cp++) {
            at = attrs(k, 2);
            at.kernel[0] = at.kernel[1] = 3;
            at.stride[0] = at.stride[1] = 2;
            at.count_pad = cp;
            explicit_pad(&at, 2, (int64_t[]){ 1, 1 }, (int64_t[]){ 1, 1 });
            FD1("pool pad", k, 2, at, SH(2, 1, 5, 6), false);
        }
        at = attrs(k, 3);
        at.kernel[0] = at.kernel[1] = at.kernel[2] = 2;
        FD1("pool 3d", k, 3, at, SH(1, 2, 4, 3, 4), false);
    }
    FD1("global_avgpool", OP_GLOBAL_AVGPOOL, 2, attrs(OP_GLOBAL_AVGPOOL, 2), SH(2, 3, 3, 5), false);
}
END_TEST

START_TEST(grad_upsample)
{
    for (int mode = 0; mode < 3; mode++) {
        OpAttrs at = attrs(OP_UPSAMPLE, 2);
        at.mode = mode > 0;
        at.align_corners = mode == 2;
        FD1("upsample 2d", OP_UPSAMPLE, 2, at, SH(1, 2, 3, 4), false);
        at = attrs(OP_UPSAMPLE, 3);
        at.mode = mode > 0;
        at.align_corners = mode == 2;
        FD1("upsample 3d", OP_UPSAMPLE, 3, at, SH(1, 1, 2, 3, 2), false);
    }
}
END_TEST

START_TEST(grad_norms)
{
    OpAttrs at = attrs(OP_BATCHNORM, 2);
    FD1("batchnorm train", OP_BATCHNORM, 2, at, SH(2, 3, 3, 3), true);
    FD1("batchnorm eval", OP_BATCHNORM, 2, at, SH(2, 3, 3, 3), false);
    at = attrs(OP_BATCHNORM, 3);
    FD1("batchnorm 3d", OP_BATCHNORM, 3, at, SH(1, 2, 2, 3, 3), true);
    at = attrs(OP_INSTANCENORM, 2);
    at.affine = true;
    FD1("instancenorm affine", OP_INSTANCENORM, 2, at, SH(2, 2, 3, 5), true);
    at = attrs(OP_INSTANCENORM, 1);
    at.affine = false;
    FD1("instancenorm", OP_INSTANCENORM, 1, at, SH(2, 3, 7), false);
}
END_TEST

START_TEST(grad_losses)
{
    Shape ins[2] = { SH(2, 3, 3, 3), SH(2, 1, 3, 3) };
    OpAttrs at = attrs(OP_CE, 2);
    fd_op("ce", OP_CE, 2, at, ins, 2, true, 3, false);
    at.nweights = 3;
    at.weights[0] = 0.5;
    at.weights[1] = 2;
    at.weights[2] = 1;
    at.ignore = 1;
    fd_op("ce weights ignore", OP_CE, 2, at, ins, 2, true, 3, false);
    at = attrs(OP_FOCAL, 2);
    at.gamma = 2;
    at.alpha = 0.25;
    fd_op("focal", OP_FOCAL, 2, at, ins, 2, true, 3, false);
    at.gamma = 0;
    at.ignore = 2;
    fd_op("focal gamma 0 ignore", OP_FOCAL, 2, at, ins, 2, true, 3, false);
    for (int v = 0; v < 3; v++) {
        at = attrs(OP_DICE, 2);
        at.background = v == 1;
        at.batch_dice = v == 2;
        fd_op("dice", OP_DICE, 2, at, ins, 2, true, 3, false);
    }
    /* labels at twice the size (deep supervision), 3D */
    ins[0] = SH(1, 2, 2, 3, 2);
    ins[1] = SH(1, 1, 4, 6, 4);
    fd_op("ce 3d downsampled labels", OP_CE, 3, attrs(OP_CE, 3), ins, 2, true, 2, false);
    fd_op("dice 3d downsampled labels", OP_DICE, 3, attrs(OP_DICE, 3), ins, 2, true, 2, false);
    /* a voxel weight map (sparse annotation), at the logits' size and, in
     * 3D, downsampled with the labels */
    Shape w3[3] = { SH(2, 3, 3, 3), SH(2, 1, 3, 3), SH(2, 1, 3, 3) };
    at = attrs(OP_CE, 2);
    at.nweights = 3;
    at.weights[0] = 0.5;
    at.weights[1] = 2;
    at.weights[2] = 1;
    fd_op("ce weight map", OP_CE, 2, at, w3, 3, true, 3, false);
    at = attrs(OP_FOCAL, 2);
    at.ignore = 0;
    fd_op("focal weight map ignore", OP_FOCAL, 2, at, w3, 3, true, 3, false);
    for (int v = 0; v < 2; v++) {
        at = attrs(OP_DICE, 2);
        at.batch_dice = v == 1;
        at.ignore = v == 1 ? 2 : -1;
        fd_op(v ? "dice weight map batch ignore" : "dice weight map", OP_DICE, 2, at, w3, 3, true, 3, false);
    }
    w3[0] = SH(1, 2, 2, 3, 2);
    w3[1] = w3[2] = SH(1, 1, 4, 6, 4);
    fd_op("ce 3d weight map downsampled", OP_CE, 3, attrs(OP_CE, 3), w3, 3, true, 2, false);
    w3[1] = w3[2] = SH(1, 1, 5, 7, 5);
    fd_op("focal 3d weight map cropped", OP_FOCAL, 3, attrs(OP_FOCAL, 3), w3, 3, true, 2, false);
}
END_TEST

/* Whole nets (unet2d: base 2, 16x16, batch 2, dice + ce, training mode):
 * central differences on a sample of 30 parameters.  h = 1e-3 here, since a
 * weight moves many activations, some near a leaky-ReLU kink or a max-pool
 * tie; the loss is O(1) and float32 rounding through the net (~1e-6) over
 * 2h stays below 1e-3, inside 2e-2 relative with a 3e-3 floor. */
static void grad_whole_net(const char *tag, const char *path, const char *args, int classes)
{
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    const Graph *g = c->g;
    ck_assert_int_gt(g->nlosses, 0);
    RefState *s = ref_new(g);
    ck_assert_ptr_nonnull(s);
    ref_init_params(g, s, 123);
    for (int t = 0; t < g->ntensors; t++) {
        if (g->tensors[t].kind == TK_INPUT) ref_fill_uniform(s, t, 7 + (uint64_t)t, -1, 1);
        if (g->tensors[t].kind == TK_LABEL) {
            RefRng r = { 11 };
            for (int64_t i = 0; i < s->numel[t]; i++)
                ref_i32(s, t)[i] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
        }
    }
    int loss = g->losses[0].tensor;
    char err[256];
    ck_assert_msg(ref_forward(g, s, true, 42, err, sizeof err) == 0, "%s", err);
    RefGrads *gr = ref_grads_new(g);
    ck_assert_ptr_nonnull(gr);
    ck_assert_msg(ref_backward(g, s, gr, loss, true, 42, err, sizeof err) == 0, "%s", err);
    /* the absolute floor follows the net's gradient scale: float32 rounding
     * of an O(1) loss over 2h = 2e-3 gives ~1e-4 of finite-difference noise */
    double gmax = 0;
    for (int p = 0; p < g->nparams; p++)
        if (g->params[p].trainable)
            for (int64_t i = 0; i < s->numel[g->params[p].tensor]; i++)
                gmax = fmax(gmax, fabs(gr->buf[g->params[p].tensor][i]));
    double floor_abs = 2e-4 + 5e-3 * gmax;
    RefRng r = { 3 };
    int checked = 0, meaningful = 0;
    float one = 1;
    /* sample elements whose gradient stands above the noise floor (most of a
     * net's gradients are tiny), checking one in four of the others too */
    for (int k = 0; k < 20000 && checked < 30; k++) {
        const Param *pa = &g->params[ref_rng_next(&r) % (uint64_t)g->nparams];
        if (!pa->trainable || pa->frozen) continue;
        int t = pa->tensor;
        int64_t i = (int64_t)(ref_rng_next(&r) % (uint64_t)s->numel[t]);
        if (fabs(gr->buf[t][i]) < 10 * floor_abs && ref_rng_next(&r) % 4 != 0) continue;
        float keep = s->buf[t][i];
        double h = 1e-3;
        s->buf[t][i] = (float)(keep + h);
        double hp = (double)s->buf[t][i] - keep;
        double lp = weighted_sum(g, s, loss, &one, true);
        s->buf[t][i] = (float)(keep - h);
        double hm = keep - (double)s->buf[t][i];
        double lm = weighted_sum(g, s, loss, &one, true);
        s->buf[t][i] = keep;
        double fd = (lp - lm) / (hp + hm), an = gr->buf[t][i];
        double scale = fmax(fabs(fd), fabs(an)), e = fabs(fd - an);
        if (scale > 10 * floor_abs) {
            meaningful++;
            if (e / scale > worst_rel) worst_rel = e / scale;
        }
        ck_assert_msg(e <= 2e-2 * scale + floor_abs, "%s d/d %s[%lld]: analytic %.6g, finite difference %.6g",
                      tag, pa->name, (long long)i, an, fd);
        checked++;
    }
    ck_assert_int_ge(checked, 25);
    /* enough samples must be well above the floor for the test to mean something */
    ck_assert_msg(meaningful >= 5, "%s: only %d of %d sampled gradients are above the noise floor %.2g", tag,
                  meaningful, checked, floor_abs);
    if (getenv("NETC_GRAD_VERBOSE")) fprintf(stderr, "%s: worst relative error so far %.3g\n", tag, worst_rel);
    ref_grads_free(gr);
    ref_free(s);
    compiled_free(c);
}

START_TEST(grad_unet2d)
{
    grad_whole_net("unet2d", "netdefs/unet2d.net",
                   "-D base=2 -D protocol.size=16x16 --train -D train.patch=16x16 -D train.batch=2", 2);
}
END_TEST

/* The 3D netdefs the same way, at 8^3 (unet3d) and 16^3 (vnet, voxresnet:
 * batchnorm needs more than one value per channel at the deepest level). */
START_TEST(grad_3d_nets)
{
    grad_whole_net("unet3d", "netdefs/unet3d.net",
                   "-D base=2 -D protocol.size=8x8x8 --train -D train.patch=8x8x8 -D train.batch=2", 2);
    grad_whole_net("vnet", "netdefs/vnet.net",
                   "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", 2);
    grad_whole_net("voxresnet", "netdefs/voxresnet.net",
                   "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", 4);
}
END_TEST

Suite *ref_grad_suite(void)
{
    Suite *s = suite_create("ref_grad");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, grad_activations);
    tcase_add_test(tc, grad_arithmetic);
    tcase_add_test(tc, grad_movement);
    tcase_add_test(tc, grad_conv);
    tcase_add_test(tc, grad_upconv);
    tcase_add_test(tc, grad_pools);
    tcase_add_test(tc, grad_upsample);
    tcase_add_test(tc, grad_norms);
    tcase_add_test(tc, grad_losses);
    suite_add_tcase(s, tc);
    TCase *net = tcase_create("net");
    tcase_set_timeout(net, 300);
    tcase_add_test(net, grad_unet2d);
    tcase_add_test(net, grad_3d_nets);
    suite_add_tcase(s, net);
    return s;
}
