/* ops.c — the op table: everything the compiler knows about each L1 op.
 *
 * op_table[] has one entry per OP() line of ops.def, indexed by OpKind with
 * designated initializers.  An entry gives:
 *
 *   name          the .net spelling (must equal the ops.def name; a test checks)
 *   kind          fusion class (graph.h): conv-like ops anchor a kernel,
 *                 elementwise/broadcast ops fuse into them as epilogues,
 *                 crop/pad/concat/nearest upsample are pure index maps,
 *                 pools/norms/softmax/losses reduce
 *   min/max       input count (max -1: any number)
 *   attrs         AttrSpec[] in the order and with the defaults of the
 *                 language contract; `position` is the index among
 *                 positional arguments (-1: named only); AT_PADDING keeps the
 *                 name of its default mode in enum_values ("same", "valid")
 *   summary       one line for `netc ops` and the docs
 *   shape         the shape rule (ops_shape.c)
 *   params        parameters the op owns (PyTorch layouts and names)
 *   flops         forward FLOPs, a multiply-add counting 2
 *
 * FLOP conventions for the non-conv ops, per output element unless noted (a
 * transcendental such as exp or log counts 1; approximate by design — the
 * totals are for budgeting, conv dominates):
 *   movement (concat, crop, pad, nearest upsample)   0
 *   relu, scale, mul 1; leaky_relu, prelu, dropout 2; sigmoid, elu 3; tanh 1
 *   add            nin - 1
 *   softmax        5  (max, sub, exp, sum, divide)
 *   norms          5 per input element for statistics and normalization, +2 with affine
 *   linear upsample 3 per lerp, 2^rank - 1 lerps
 *   pools          one op per window tap: numel(out) * prod(kernel); global: numel(in)
 *   losses         per logit: ce 7, dice 8, focal 10 (softmax included)
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "graph.h"

#include "ops_shape.h"

/* ---- attributes ---------------------------------------------------------- */

#define ATTR(nm, type, pos, req, field, def, ev, doc) \
    { nm, type, pos, req, offsetof(OpAttrs, field), def, ev, doc }
#define ATTR_END { NULL, AT_INT, -1, false, 0, 0, NULL, NULL }

/* In InitKind order. */
#define INIT_NAMES "he_normal|he_uniform|xavier_normal|xavier_uniform|zeros"
#define PADDING_DOC "same | valid | n | per-axis [..] | per-side [[lo, hi], ..]"

static const AttrSpec no_attrs[] = { ATTR_END };

static const AttrSpec conv_attrs[] = {
    ATTR("channels", AT_INT, 0, true, channels, 0, NULL, "output channels"),
    ATTR("kernel", AT_AXES, 1, true, kernel, 0, NULL, "kernel size: a number or one per axis"),
    ATTR("stride", AT_AXES, -1, false, stride, 1, NULL, "step between windows"),
    ATTR("padding", AT_PADDING, -1, false, pad, 0, "same", PADDING_DOC " (same: TensorFlow rule)"),
    ATTR("dilation", AT_AXES, -1, false, dilation, 1, NULL, "spacing between kernel taps"),
    ATTR("groups", AT_INT, -1, false, groups, 1, NULL, "channel groups; divides both channel counts"),
    ATTR("bias", AT_BOOL, -1, false, bias, 1, NULL, "learned bias per output channel"),
    ATTR("init", AT_ENUM, -1, false, init, INIT_HE_NORMAL, INIT_NAMES, "weight initialization"),
    ATTR_END
};

static const AttrSpec upconv_attrs[] = {
    ATTR("channels", AT_INT, 0, true, channels, 0, NULL, "output channels"),
    ATTR("kernel", AT_AXES, 1, true, kernel, 0, NULL, "kernel size: a number or one per axis"),
    ATTR("stride", AT_AXES, -1, false, stride, 0, NULL, "upsampling factor (default: the kernel)"),
    ATTR("padding", AT_PADDING, -1, false, pad, 0, "valid", PADDING_DOC " (same: output in * stride)"),
    ATTR("out_pad", AT_AXES, -1, false, out_pad, 0, NULL, "extra output at the end of each axis"),
    ATTR("dilation", AT_AXES, -1, false, dilation, 1, NULL, "spacing between kernel taps"),
    ATTR("groups", AT_INT, -1, false, groups, 1, NULL, "channel groups; divides both channel counts"),
    ATTR("bias", AT_BOOL, -1, false, bias, 1, NULL, "learned bias per output channel"),
    ATTR("init", AT_ENUM, -1, false, init, INIT_HE_NORMAL, INIT_NAMES, "weight initialization"),
    ATTR_END
};

#define POOL_ATTRS                                                                              \
    ATTR("kernel", AT_AXES, 0, true, kernel, 0, NULL, "window size: a number or one per axis"),  \
    ATTR("stride", AT_AXES, -1, false, stride, 0, NULL, "step between windows (default: the kernel)"), \
    ATTR("padding", AT_PADDING, -1, false, pad, 0, "valid", PADDING_DOC " (explicit: <= kernel / 2)"), \
    ATTR("ceil", AT_BOOL, -1, false, ceil_mode, 0, NULL, "round the output size up (PyTorch ceil_mode)")

static const AttrSpec maxpool_attrs[] = { POOL_ATTRS, ATTR_END };

static const AttrSpec avgpool_attrs[] = {
    POOL_ATTRS,
    ATTR("count_pad", AT_BOOL, -1, false, count_pad, 1, NULL, "padding counts in the average"),
    ATTR_END
};

static const AttrSpec upsample_attrs[] = {
    ATTR("scale", AT_AXES, 0, false, scale, 2, NULL, "integer factor: a number or one per axis"),
    ATTR("mode", AT_ENUM, -1, false, mode, 0, "nearest|linear", "interpolation"),
    ATTR("align_corners", AT_BOOL, -1, false, align_corners, 0, NULL, "linear: align corner pixels"),
    ATTR_END
};

static const AttrSpec crop_attrs[] = {
    ATTR("amount", AT_PADDING, 0, false, pad, 0, "valid", "per-side amounts to remove (without a reference)"),
    ATTR_END
};

static const AttrSpec pad_attrs[] = {
    ATTR("amount", AT_PADDING, 0, true, pad, 0, "valid", "n | per-axis [..] | per-side [[lo, hi], ..]"),
    ATTR("mode", AT_ENUM, -1, false, mode, 0, "zero|reflect|replicate", "what fills the border"),
    ATTR("value", AT_FLOAT, -1, false, value, 0, NULL, "fill value for mode = zero"),
    ATTR_END
};

static const AttrSpec scale_attrs[] = {
    ATTR("factor", AT_FLOAT, 0, true, factor, 0, NULL, "multiplier"),
    ATTR_END
};

static const AttrSpec batchnorm_attrs[] = {
    ATTR("eps", AT_FLOAT, -1, false, eps, 1e-5, NULL, "added to the variance"),
    ATTR("momentum", AT_FLOAT, -1, false, momentum, 0.1, NULL, "running statistics update rate"),
    ATTR("affine", AT_BOOL, -1, false, affine, 1, NULL, "learned weight and bias per channel"),
    ATTR_END
};

static const AttrSpec instancenorm_attrs[] = {
    ATTR("eps", AT_FLOAT, -1, false, eps, 1e-5, NULL, "added to the variance"),
    ATTR("affine", AT_BOOL, -1, false, affine, 1, NULL, "learned weight and bias per channel"),
    ATTR_END
};

static const AttrSpec leaky_relu_attrs[] = {
    ATTR("slope", AT_FLOAT, 0, false, slope, 0.01, NULL, "slope for negative inputs"),
    ATTR_END
};

static const AttrSpec prelu_attrs[] = {
    ATTR("shared", AT_BOOL, -1, false, shared, 0, NULL, "one slope for all channels"),
    ATTR("init", AT_FLOAT, -1, false, value, 0.25, NULL, "initial slope"),
    ATTR_END
};

static const AttrSpec elu_attrs[] = {
    ATTR("alpha", AT_FLOAT, 0, false, alpha, 1.0, NULL, "saturation value for negative inputs"),
    ATTR_END
};

static const AttrSpec dropout_attrs[] = {
    ATTR("p", AT_FLOAT, 0, false, p, 0.5, NULL, "probability of zeroing an element, in [0, 1)"),
    ATTR_END
};

static const AttrSpec ce_attrs[] = {
    ATTR("weight", AT_FLOATS, -1, false, weights, 0, NULL, "class weights, one per class"),
    ATTR("ignore", AT_INT, -1, false, ignore, -1, NULL, "label value to ignore (-1: none)"),
    ATTR_END
};

static const AttrSpec dice_attrs[] = {
    ATTR("smooth", AT_FLOAT, -1, false, smooth, 1e-5, NULL, "added to numerator and denominator"),
    ATTR("background", AT_BOOL, -1, false, background, 0, NULL, "include class 0"),
    ATTR("batch", AT_BOOL, -1, false, batch_dice, 0, NULL, "pool the batch into one dice (nnU-Net batch dice)"),
    ATTR("ignore", AT_INT, -1, false, ignore, -1, NULL, "label value to ignore (-1: none)"),
    ATTR_END
};

static const AttrSpec focal_attrs[] = {
    ATTR("gamma", AT_FLOAT, -1, false, gamma, 2.0, NULL, "focusing exponent"),
    ATTR("alpha", AT_FLOAT, -1, false, alpha, 0.25, NULL, "balance factor"),
    ATTR("ignore", AT_INT, -1, false, ignore, -1, NULL, "label value to ignore (-1: none)"),
    ATTR_END
};

/* ---- parameters ------------------------------------------------------------- */

static int64_t kernel_volume(const int64_t *k, int sr)
{
    int64_t v = 1;
    for (int i = 0; i < sr; i++)
        v *= k[i];
    return v;
}

static ParamSpec vec_param(const char *suffix, int64_t n, InitKind init, double a, bool trainable)
{
    ParamSpec p;
    memset(&p, 0, sizeof p);
    p.suffix = suffix;
    p.shape.rank = 1;
    p.shape.d[0] = n;
    p.init.kind = init;
    p.init.a = a;
    p.trainable = trainable;
    return p;
}

/* Weight [d0, d1, k...] and bias [cout] of conv-like ops. */
static int conv_like_params(const OpAttrs *at, int sr, int64_t d0, int64_t d1, int64_t cout,
                            int64_t fan_in, int64_t fan_out, ParamSpec *out)
{
    ParamSpec *w = &out[0];
    memset(w, 0, sizeof *w);
    w->suffix = "weight";
    w->shape.rank = 2 + sr;
    w->shape.d[0] = d0;
    w->shape.d[1] = d1;
    for (int i = 0; i < sr; i++)
        w->shape.d[2 + i] = at->kernel[i];
    w->init = (InitRule){ (InitKind)at->init, at->init_a, fan_in, fan_out };
    w->trainable = true;
    if (!at->bias) return 1;
    out[1] = vec_param("bias", cout, INIT_ZEROS, 0, true);
    out[1].init.fan_in = fan_in;
    out[1].init.fan_out = fan_out;
    return 2;
}

static int params_none(const OpAttrs *at, const Shape *in, int nin, ParamSpec *out)
{
    (void)at, (void)in, (void)nin, (void)out;
    return 0;
}

/* conv: weight [Cout, Cin/g, k...] (PyTorch ConvNd). */
static int params_conv(const OpAttrs *at, const Shape *in, int nin, ParamSpec *out)
{
    if (nin < 1 || in[0].rank < 3 || at->groups < 1) return 0;
    int sr = in[0].rank - 2;
    int64_t g = at->groups, cin = in[0].d[1], cout = at->channels, kv = kernel_volume(at->kernel, sr);
    return conv_like_params(at, sr, cout, cin / g, cout, cin / g * kv, cout / g * kv, out);
}

/* upconv: weight [Cin, Cout/g, k...] (PyTorch ConvTransposeNd).  fan_in is
 * PyTorch's (weight.size(1) * kernel volume), so He init matches nnU-Net. */
static int params_upconv(const OpAttrs *at, const Shape *in, int nin, ParamSpec *out)
{
    if (nin < 1 || in[0].rank < 3 || at->groups < 1) return 0;
    int sr = in[0].rank - 2;
    int64_t g = at->groups, cin = in[0].d[1], cout = at->channels, kv = kernel_volume(at->kernel, sr);
    return conv_like_params(at, sr, cin, cout / g, cout, cout / g * kv, cin / g * kv, out);
}

static int params_batchnorm(const OpAttrs *at, const Shape *in, int nin, ParamSpec *out)
{
    if (nin < 1 || in[0].rank < 2) return 0;
    int64_t c = in[0].d[1];
    int n = 0;
    if (at->affine) {
        out[n++] = vec_param("weight", c, INIT_ONES, 0, true);
        out[n++] = vec_param("bias", c, INIT_ZEROS, 0, true);
    }
    out[n++] = vec_param("running_mean", c, INIT_ZEROS, 0, false);
    out[n++] = vec_param("running_var", c, INIT_ONES, 0, false);
    return n;
}

static int params_instancenorm(const OpAttrs *at, const Shape *in, int nin, ParamSpec *out)
{
    if (nin < 1 || in[0].rank < 2 || !at->affine) return 0;
    out[0] = vec_param("weight", in[0].d[1], INIT_ONES, 0, true);
    out[1] = vec_param("bias", in[0].d[1], INIT_ZEROS, 0, true);
    return 2;
}

/* prelu: weight [C], or [1] when shared, all set to `init`. */
static int params_prelu(const OpAttrs *at, const Shape *in, int nin, ParamSpec *out)
{
    if (nin < 1 || (!at->shared && in[0].rank < 2)) return 0;
    out[0] = vec_param("weight", at->shared ? 1 : in[0].d[1], INIT_CONST, at->value, true);
    return 1;
}

/* ---- FLOPs -------------------------------------------------------------------- */

static double numel_d(const Shape *s)
{
    return (double)shape_numel(s);
}

/* 2 * N * Cout * prod(out spatial) * Cin/g * prod(k), + numel(out) with bias. */
static double flops_conv(const OpAttrs *at, const Shape *in, int nin, const Shape *out)
{
    if (nin < 1 || in[0].rank < 3 || at->groups < 1) return 0;
    int sr = in[0].rank - 2;
    double macs = numel_d(out) * (double)(in[0].d[1] / at->groups) * (double)kernel_volume(at->kernel, sr);
    return 2 * macs + (at->bias ? numel_d(out) : 0);
}

/* The transpose of conv: every input element scatters Cout/g * prod(k) products. */
static double flops_upconv(const OpAttrs *at, const Shape *in, int nin, const Shape *out)
{
    if (nin < 1 || in[0].rank < 3 || at->groups < 1) return 0;
    int sr = in[0].rank - 2;
    double macs = numel_d(&in[0]) * (double)(at->channels / at->groups) * (double)kernel_volume(at->kernel, sr);
    return 2 * macs + (at->bias ? numel_d(out) : 0);
}

static double flops_pool(const OpAttrs *at, const Shape *in, int nin, const Shape *out)
{
    (void)in, (void)nin;
    return out->rank < 3 ? 0 : numel_d(out) * (double)kernel_volume(at->kernel, out->rank - 2);
}

static double flops_global_avgpool(const OpAttrs *at, const Shape *in, int nin, const Shape *out)
{
    (void)at, (void)out;
    return nin < 1 ? 0 : numel_d(&in[0]);
}

static double flops_upsample(const OpAttrs *at, const Shape *in, int nin, const Shape *out)
{
    (void)in, (void)nin;
    if (at->mode == 0 || out->rank < 3) return 0;
    return 3.0 * (double)((1 << (out->rank - 2)) - 1) * numel_d(out);
}

static double flops_add(const OpAttrs *at, const Shape *in, int nin, const Shape *out)
{
    (void)at, (void)in;
    return (nin - 1) * numel_d(out);
}

static double flops_norm(const OpAttrs *at, const Shape *in, int nin, const Shape *out)
{
    (void)in, (void)nin;
    return (at->affine ? 7 : 5) * numel_d(out);
}

/* Losses: a constant per logit. */
#define LOSS_FLOPS(fn, k)                                                           \
    static double fn(const OpAttrs *at, const Shape *in, int nin, const Shape *out) \
    {                                                                               \
        (void)at, (void)out;                                                        \
        return nin < 1 ? 0 : (k) * numel_d(&in[0]);                                 \
    }
LOSS_FLOPS(flops_ce, 7)
LOSS_FLOPS(flops_dice, 8)
LOSS_FLOPS(flops_focal, 10)

/* Elementwise: a constant per output element. */
#define ELEM_FLOPS(fn, k)                                                           \
    static double fn(const OpAttrs *at, const Shape *in, int nin, const Shape *out) \
    {                                                                               \
        (void)at, (void)in, (void)nin;                                              \
        return (k) * numel_d(out);                                                  \
    }
ELEM_FLOPS(flops_zero, 0)
ELEM_FLOPS(flops_1, 1)
ELEM_FLOPS(flops_2, 2)
ELEM_FLOPS(flops_3, 3)
ELEM_FLOPS(flops_softmax, 5)

/* ---- the table ------------------------------------------------------------------ */

const OpInfo op_table[OP_COUNT] = {
    [OP_CONV] = { "conv", FK_CONV, 1, 1, conv_attrs,
        "convolution, weight [Cout, Cin/groups, k...] (PyTorch ConvNd)",
        ops_shape_conv, params_conv, flops_conv },
    [OP_UPCONV] = { "upconv", FK_CONV, 1, 1, upconv_attrs,
        "transposed convolution, weight [Cin, Cout/groups, k...] (PyTorch ConvTransposeNd)",
        ops_shape_upconv, params_upconv, flops_upconv },
    [OP_MAXPOOL] = { "maxpool", FK_REDUCE, 1, 1, maxpool_attrs,
        "max over sliding windows", ops_shape_maxpool, params_none, flops_pool },
    [OP_AVGPOOL] = { "avgpool", FK_REDUCE, 1, 1, avgpool_attrs,
        "average over sliding windows", ops_shape_avgpool, params_none, flops_pool },
    [OP_GLOBAL_AVGPOOL] = { "global_avgpool", FK_REDUCE, 1, 1, no_attrs,
        "average over all spatial positions (spatial size 1)",
        ops_shape_global_avgpool, params_none, flops_global_avgpool },
    [OP_UPSAMPLE] = { "upsample", FK_INJECTIVE, 1, 1, upsample_attrs,
        "resize by an integer factor per axis (nearest or linear)",
        ops_shape_upsample, params_none, flops_upsample },
    [OP_CONCAT] = { "concat", FK_INJECTIVE, 2, -1, no_attrs,
        "join along channels; spatial sizes must match", ops_shape_concat, params_none, flops_zero },
    [OP_CROP] = { "crop", FK_INJECTIVE, 1, 2, crop_attrs,
        "center-crop to a reference tensor, or remove per-side amounts",
        ops_shape_crop, params_none, flops_zero },
    [OP_PAD] = { "pad", FK_INJECTIVE, 1, 1, pad_attrs,
        "pad spatial axes (zero, reflect or replicate)", ops_shape_pad, params_none, flops_zero },
    [OP_ADD] = { "add", FK_BROADCAST, 2, -1, no_attrs,
        "elementwise sum, broadcasting size-1 axes and scalars", ops_shape_add, params_none, flops_add },
    [OP_MUL] = { "mul", FK_BROADCAST, 2, 2, no_attrs,
        "elementwise product, broadcasting size-1 axes (gating) and scalars",
        ops_shape_mul, params_none, flops_1 },
    [OP_SCALE] = { "scale", FK_ELEMWISE, 1, 1, scale_attrs,
        "multiply by a constant", ops_shape_scale, params_none, flops_1 },
    [OP_BATCHNORM] = { "batchnorm", FK_REDUCE, 1, 1, batchnorm_attrs,
        "batch normalization with running statistics", ops_shape_batchnorm, params_batchnorm, flops_norm },
    [OP_INSTANCENORM] = { "instancenorm", FK_REDUCE, 1, 1, instancenorm_attrs,
        "per-sample, per-channel normalization", ops_shape_instancenorm, params_instancenorm, flops_norm },
    [OP_RELU] = { "relu", FK_ELEMWISE, 1, 1, no_attrs,
        "max(x, 0)", ops_shape_relu, params_none, flops_1 },
    [OP_LEAKY_RELU] = { "leaky_relu", FK_ELEMWISE, 1, 1, leaky_relu_attrs,
        "x, or slope * x for x < 0", ops_shape_leaky_relu, params_none, flops_2 },
    [OP_PRELU] = { "prelu", FK_BROADCAST, 1, 1, prelu_attrs,
        "leaky relu with a learned slope per channel (or one shared)",
        ops_shape_prelu, params_prelu, flops_2 },
    [OP_ELU] = { "elu", FK_ELEMWISE, 1, 1, elu_attrs,
        "x, or alpha * (exp(x) - 1) for x < 0", ops_shape_elu, params_none, flops_3 },
    [OP_SIGMOID] = { "sigmoid", FK_ELEMWISE, 1, 1, no_attrs,
        "1 / (1 + exp(-x))", ops_shape_sigmoid, params_none, flops_3 },
    [OP_TANH] = { "tanh", FK_ELEMWISE, 1, 1, no_attrs,
        "hyperbolic tangent", ops_shape_tanh, params_none, flops_1 },
    [OP_SOFTMAX] = { "softmax", FK_REDUCE, 1, 1, no_attrs,
        "softmax over channels", ops_shape_softmax, params_none, flops_softmax },
    [OP_DROPOUT] = { "dropout", FK_ELEMWISE, 1, 1, dropout_attrs,
        "zero elements with probability p while training (scaled by 1 / (1 - p))",
        ops_shape_dropout, params_none, flops_2 },
    [OP_CE] = { "ce", FK_REDUCE, 2, 3, ce_attrs,
        "cross-entropy of logits (N, C, ...) against labels (N, 1, ...), optionally per-voxel weighted",
        ops_shape_ce, params_none, flops_ce },
    [OP_DICE] = { "dice", FK_REDUCE, 2, 3, dice_attrs,
        "soft dice loss of softmax(logits) against labels, optionally per-voxel weighted", ops_shape_dice, params_none, flops_dice },
    [OP_FOCAL] = { "focal", FK_REDUCE, 2, 3, focal_attrs,
        "focal loss of logits against labels, optionally per-voxel weighted", ops_shape_focal, params_none, flops_focal },
    [OP_GRAD] = { "grad", FK_OPAQUE, 2, -1, no_attrs,
        "autodiff: the gradient of one operand of a forward node (inputs: dy, the node's inputs, params, output)",
        ops_shape_grad, params_none, flops_zero, true },
    [OP_ONES] = { "ones", FK_ELEMWISE, 0, 0, no_attrs,
        "autodiff: the seed gradient d(loss)/d(loss) = 1", ops_shape_ones, params_none, flops_zero, true },
    [OP_SGD_UPDATE] = { "sgd_update", FK_ELEMWISE, 4, 4, no_attrs,
        "optimizer: SGD (momentum, Nesterov, weight decay) step of one parameter; inputs param, grad, lr, step; "
        "updates its momentum buffer in place", ops_shape_update, params_none, flops_zero, true },
    [OP_ADAM_UPDATE] = { "adam_update", FK_ELEMWISE, 4, 4, no_attrs,
        "optimizer: Adam / AdamW step of one parameter; inputs param, grad, lr, step; "
        "updates its moment buffers in place", ops_shape_update, params_none, flops_zero, true },
};

OpKind op_lookup(const char *name)
{
    for (int k = 0; name && k < OP_COUNT; k++)
        if (op_table[k].name && !op_table[k].internal && strcmp(op_table[k].name, name) == 0) return (OpKind)k;
    return OP_COUNT;
}

static PadMode pad_mode_named(const char *name)
{
    if (name && strcmp(name, "same") == 0) return PAD_SAME;
    if (name && strcmp(name, "valid") == 0) return PAD_VALID;
    return PAD_EXPLICIT;
}

void op_default_attrs(OpKind k, int spatial_rank, OpAttrs *at)
{
    memset(at, 0, sizeof *at);
    if ((unsigned)k >= OP_COUNT) return;
    int n = spatial_rank < 0 ? 0 : spatial_rank > MAX_SPATIAL ? MAX_SPATIAL : spatial_rank;
    for (const AttrSpec *a = op_table[k].attrs; a && a->name; a++) {
        char *p = (char *)at + a->offset;
        switch (a->type) {
        case AT_INT: *(int64_t *)p = (int64_t)a->def; break;
        case AT_FLOAT: *(double *)p = a->def; break;
        case AT_BOOL: *(bool *)p = a->def != 0; break;
        case AT_ENUM: *(int *)p = (int)a->def; break;
        case AT_PADDING: ((Padding *)p)->mode = pad_mode_named(a->enum_values); break;
        case AT_FLOATS: break;
        case AT_AXES:
            for (int i = 0; i < n; i++)
                ((int64_t *)p)[i] = (int64_t)a->def;
            break;
        }
    }
    /* Not a .net attribute: the negative slope of He init (nnU-Net uses 1e-2). */
    if (k == OP_CONV || k == OP_UPCONV) at->init_a = 0.01;
}

/* ---- shapes and names ------------------------------------------------------------- */

/* Saturates at INT64_MAX; negative dimensions count as 0. */
int64_t shape_numel(const Shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++) {
        if (s->d[i] <= 0) return 0;
        n = n > INT64_MAX / s->d[i] ? INT64_MAX : n * s->d[i];
    }
    return n;
}

bool shape_equal(const Shape *a, const Shape *b)
{
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->d[i] != b->d[i]) return false;
    return true;
}

/* Rank 0 formats as "scalar"; skip_batch applies from rank 2 on. */
char *shape_format(char *buf, size_t n, const Shape *s, bool skip_batch)
{
    if (n == 0) return buf;
    buf[0] = '\0';
    if (s->rank <= 0) {
        snprintf(buf, n, "scalar");
        return buf;
    }
    size_t len = 0;
    for (int i = skip_batch && s->rank >= 2 ? 1 : 0; i < s->rank && i < MAX_RANK && len < n; i++) {
        int w = snprintf(buf + len, n - len, "%s%lld", len ? "x" : "", (long long)s->d[i]);
        if (w < 0) break;
        len += (size_t)w;
    }
    return buf;
}

const char *init_kind_name(InitKind k)
{
    static const char *const names[] = { "he_normal", "he_uniform", "xavier_normal",
                                         "xavier_uniform", "zeros", "ones", "const" };
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

const char *fusion_kind_name(FusionKind k)
{
    static const char *const names[] = { "elemwise", "broadcast", "injective", "reduce", "conv", "opaque" };
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}
