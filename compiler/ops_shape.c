/* ops_shape.c — the shape rules of the L1 ops (referenced from op_table in ops.c).
 *
 * A rule checks an op's inputs and attributes, resolves the defaults that
 * depend on shapes into the node's OpAttrs (same padding -> pad.lo/hi,
 * stride = kernel, dilation 0 -> 1, upconv out_pad for same, crop amounts
 * for a reference tensor) and computes the output shape.  Rules are
 * idempotent: run again on the attributes they resolved they give the same
 * result, so later passes may re-infer shapes freely.
 *
 * Errors go to cx->diag at cx->loc (diag prints file:line:col itself).  They
 * start with the op's name as written and give the numbers involved.
 *
 * Overflow: every input dimension and every size-like attribute is checked
 * to be <= DIM_MAX (2^31) before it takes part in any arithmetic, so the
 * products of two such values and the short sums below stay inside int64_t.
 * Outputs are then checked against DIM_MAX and NUMEL_MAX ("tensor too large").
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "graph.h"

#define DIM_MAX   ((int64_t)1 << 31)
#define NUMEL_MAX ((int64_t)1 << 40)

/* What every rule carries around: the context, the op's name, the spatial rank. */
typedef struct {
    const ShapeCtx *cx;
    const char *op;
    int sr;
} Rule;

static const int64_t ONES[MAX_SPATIAL] = { 1, 1, 1 };

#include "ops_shape.h"

__attribute__((format(printf, 2, 3)))
static bool fail(const Rule *r, const char *fmt, ...)
{
    if (r->cx->diag) {
        va_list ap;
        va_start(ap, fmt);
        diag_verror(r->cx->diag, r->cx->loc, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* Spatial axes are named D, H, W (H, W in 2D; W in 1D). */
static const char *axis_name(int sr, int i)
{
    static const char *const names[MAX_SPATIAL] = { "D", "H", "W" };
    return names[MAX_SPATIAL - sr + i];
}

static const char *layout_name(int sr)
{
    static const char *const names[MAX_SPATIAL] = { "N, C, W", "N, C, H, W", "N, C, D, H, W" };
    return names[sr - 1];
}

/* Saturating product of non-negative values. */
static int64_t sat_mul(int64_t a, int64_t b)
{
    if (a <= 0 || b <= 0) return 0;
    return a > INT64_MAX / b ? INT64_MAX : a * b;
}

/* ---- common checks ---------------------------------------------------- */

static bool check_input(const Rule *r, const Shape *s, int idx)
{
    if (s->rank < 0 || s->rank > MAX_RANK)
        return fail(r, "%s: input %d has invalid rank %d", r->op, idx + 1, s->rank);
    for (int i = 0; i < s->rank; i++) {
        if (s->d[i] < 1)
            return fail(r, "%s: input %d has dimension %" PRId64 " on axis %d", r->op, idx + 1,
                        s->d[i], i);
        if (s->d[i] > DIM_MAX)
            return fail(r, "%s: input %d: tensor too large (dimension %" PRId64 ")", r->op,
                        idx + 1, s->d[i]);
    }
    return true;
}

/* Sets up `r` and checks the input count and shapes; `spatial` requires
 * every input to be an image tensor of rank 2 + spatial rank. */
static bool begin(Rule *r, const ShapeCtx *cx, OpKind k, const Shape *in, int nin, bool spatial)
{
    const OpInfo *op = &op_table[k];
    r->cx = cx;
    r->op = cx->op_name ? cx->op_name : op->name;
    r->sr = cx->spatial_rank;
    if (r->sr < 1 || r->sr > MAX_SPATIAL)
        return fail(r, "%s: spatial rank %d is not 1, 2 or 3", r->op, r->sr);
    if (op->max_inputs < 0 && nin < op->min_inputs)
        return fail(r, "%s takes at least %d inputs, got %d", r->op, op->min_inputs, nin);
    if (op->max_inputs >= 0 && (nin < op->min_inputs || nin > op->max_inputs)) {
        if (op->min_inputs == op->max_inputs)
            return fail(r, "%s takes %d input%s, got %d", r->op, op->min_inputs,
                        op->min_inputs == 1 ? "" : "s", nin);
        return fail(r, "%s takes %d %s %d inputs, got %d", r->op, op->min_inputs,
                    op->max_inputs == op->min_inputs + 1 ? "or" : "to", op->max_inputs, nin);
    }
    for (int i = 0; i < nin; i++) {
        if (!check_input(r, &in[i], i)) return false;
        if (spatial && in[i].rank != 2 + r->sr) {
            char buf[128];
            if (in[i].rank == 0)
                return fail(r, "%s expects an image tensor (%s), got a scalar", r->op,
                            layout_name(r->sr));
            return fail(r, "%s expects an image tensor (%s), got %s (rank %d)", r->op,
                        layout_name(r->sr), shape_format(buf, sizeof buf, &in[i], false), in[i].rank);
        }
    }
    return true;
}

static bool finish(const Rule *r, const Shape *out)
{
    bool big = shape_numel(out) > NUMEL_MAX;
    for (int i = 0; i < out->rank; i++)
        big |= out->d[i] > DIM_MAX;
    if (big) {
        char buf[160];
        return fail(r, "%s: tensor too large (%s; limits are 2^31 per dimension and 2^40 elements)",
                    r->op, shape_format(buf, sizeof buf, out, false));
    }
    return true;
}

/* Per-axis values must lie in [lo, DIM_MAX]. */
static bool check_axes(const Rule *r, const char *what, const int64_t *v, int64_t lo)
{
    for (int i = 0; i < r->sr; i++) {
        if (v[i] < lo)
            return fail(r, "%s: %s must be %s, got %" PRId64 " on axis %s", r->op, what,
                        lo > 0 ? "positive" : "non-negative", v[i], axis_name(r->sr, i));
        if (v[i] > DIM_MAX)
            return fail(r, "%s: %s %" PRId64 " on axis %s is too large", r->op, what, v[i],
                        axis_name(r->sr, i));
    }
    return true;
}

/* 0 means "default" for stride and dilation. */
static void default_axes(int64_t *v, int sr, const int64_t *def)
{
    for (int i = 0; i < sr; i++)
        if (v[i] == 0) v[i] = def[i];
}

/* `what`: the attribute's name ("padding", or "amount" for crop and pad). */
static bool check_padding(const Rule *r, const Padding *p, const char *what)
{
    if (p->mode != PAD_EXPLICIT && p->mode != PAD_SAME && p->mode != PAD_VALID)
        return fail(r, "%s: invalid padding mode %d", r->op, (int)p->mode);
    if (p->mode != PAD_EXPLICIT) return true;
    return check_axes(r, what, p->lo, 0) && check_axes(r, what, p->hi, 0);
}

/* Channels and groups of conv / upconv, and the size of their weight. */
static bool check_channels(const Rule *r, const OpAttrs *at, int64_t cin)
{
    int64_t cout = at->channels, g = at->groups;
    if (cout < 1) return fail(r, "%s: channels must be positive, got %" PRId64, r->op, cout);
    if (cout > DIM_MAX) return fail(r, "%s: channels %" PRId64 " is too large", r->op, cout);
    if (g < 1) return fail(r, "%s: groups must be positive, got %" PRId64, r->op, g);
    if (cin % g || cout % g)
        return fail(r, "%s: groups %" PRId64 " must divide input channels %" PRId64
                    " and output channels %" PRId64, r->op, g, cin, cout);
    int64_t n = sat_mul(cout, cin / g);
    for (int i = 0; i < r->sr; i++)
        n = sat_mul(n, at->kernel[i]);
    if (n > NUMEL_MAX)
        return fail(r, "%s: weight too large (%" PRId64 " x %" PRId64 " channels with this kernel)",
                    r->op, cout, cin / g);
    return true;
}

/* ---- sliding windows (conv, pools) ------------------------------------ */

/* TensorFlow's same padding: output ceil(in / s), the odd extra at the end. */
static void same_pad(int64_t in, int64_t k, int64_t s, int64_t d, int64_t *lo, int64_t *hi)
{
    int64_t out = (in + s - 1) / s;
    int64_t total = (out - 1) * s + d * (k - 1) + 1 - in;
    if (total < 0) total = 0;
    *lo = total / 2;
    *hi = total - *lo;
}

/* PyTorch's pooling_output_shape with separate lo/hi padding; <= 0 when no
 * window fits.  In ceil mode the last window must start inside the input or
 * the left padding. */
static int64_t window_out(int64_t in, int64_t lo, int64_t hi, int64_t k, int64_t s, int64_t d,
                          bool ceil_mode)
{
    int64_t span = in + lo + hi - d * (k - 1) - 1;
    if (span < 0) return 0;
    int64_t out = (span + (ceil_mode ? s - 1 : 0)) / s + 1;
    if (ceil_mode && (out - 1) * s >= in + lo) out--;
    return out;
}

/* Resolves same / valid padding into at->pad and writes out->d[2..]. */
static bool window_spatial(const Rule *r, OpAttrs *at, const Shape *x, const int64_t *dil,
                           bool ceil_mode, Shape *out)
{
    Padding *p = &at->pad;
    for (int i = 0; i < r->sr; i++) {
        int64_t in = x->d[2 + i], k = at->kernel[i], s = at->stride[i], d = dil[i];
        if (p->mode == PAD_SAME) same_pad(in, k, s, d, &p->lo[i], &p->hi[i]);
        if (p->mode == PAD_VALID) p->lo[i] = p->hi[i] = 0;
        int64_t o = window_out(in, p->lo[i], p->hi[i], k, s, d, ceil_mode);
        if (o < 1)
            return fail(r, "%s: output would be empty on axis %s (input %" PRId64 ", kernel %" PRId64
                        ", stride %" PRId64 ", dilation %" PRId64 ", padding %" PRId64 "+%" PRId64 ")",
                        r->op, axis_name(r->sr, i), in, k, s, d, p->lo[i], p->hi[i]);
        out->d[2 + i] = o;
    }
    return true;
}

bool ops_shape_conv(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r;
    if (!begin(&r, cx, OP_CONV, in, nin, true)) return false;
    default_axes(at->stride, r.sr, ONES);
    default_axes(at->dilation, r.sr, ONES);
    if (!check_axes(&r, "kernel", at->kernel, 1) || !check_axes(&r, "stride", at->stride, 1) ||
        !check_axes(&r, "dilation", at->dilation, 1) || !check_padding(&r, &at->pad, "padding") ||
        !check_channels(&r, at, in[0].d[1]))
        return false;
    *out = in[0];
    out->d[1] = at->channels;
    return window_spatial(&r, at, &in[0], at->dilation, false, out) && finish(&r, out);
}

static bool pool_shape(const ShapeCtx *cx, OpKind k, OpAttrs *at, const Shape *in, int nin,
                       Shape *out)
{
    Rule r;
    if (!begin(&r, cx, k, in, nin, true)) return false;
    if (!check_axes(&r, "kernel", at->kernel, 1)) return false;
    default_axes(at->stride, r.sr, at->kernel);
    if (!check_axes(&r, "stride", at->stride, 1) || !check_padding(&r, &at->pad, "padding")) return false;
    for (int i = 0; at->pad.mode == PAD_EXPLICIT && i < r.sr; i++) {
        int64_t m = at->pad.lo[i] > at->pad.hi[i] ? at->pad.lo[i] : at->pad.hi[i];
        if (m > at->kernel[i] / 2)
            return fail(&r, "%s: padding %" PRId64 " on axis %s is more than half the kernel %" PRId64,
                        r.op, m, axis_name(r.sr, i), at->kernel[i]);
    }
    *out = in[0];
    return window_spatial(&r, at, &in[0], ONES, at->ceil_mode, out) && finish(&r, out);
}

bool ops_shape_maxpool(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    return pool_shape(cx, OP_MAXPOOL, at, in, nin, out);
}

bool ops_shape_avgpool(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    return pool_shape(cx, OP_AVGPOOL, at, in, nin, out);
}

/* ---- transposed conv (PyTorch ConvTranspose) --------------------------- */

/* Same padding for upconv: output in * stride.  A negative total becomes
 * output padding. */
static void upconv_same(int64_t k, int64_t s, int64_t d, int64_t *lo, int64_t *hi, int64_t *op)
{
    int64_t total = d * (k - 1) + 1 - s;
    *lo = total >= 0 ? total / 2 : 0;
    *hi = total >= 0 ? total - *lo : 0;
    *op = total >= 0 ? 0 : -total;
}

static bool upconv_axis(const Rule *r, OpAttrs *at, int i, int64_t in, int64_t *out)
{
    int64_t k = at->kernel[i], s = at->stride[i], d = at->dilation[i];
    int64_t *lo = &at->pad.lo[i], *hi = &at->pad.hi[i], *op = &at->out_pad[i];
    const char *ax = axis_name(r->sr, i);
    if (at->pad.mode == PAD_SAME) {
        int64_t want;
        upconv_same(k, s, d, lo, hi, &want);
        if (*op != 0 && *op != want)
            return fail(r, "%s: out_pad cannot be combined with padding = same (axis %s)", r->op, ax);
        *op = want;
    }
    if (at->pad.mode == PAD_VALID) *lo = *hi = 0;
    if (*op >= s && *op >= d)
        return fail(r, "%s: out_pad %" PRId64 " on axis %s must be smaller than stride %" PRId64
                    " or dilation %" PRId64, r->op, *op, ax, s, d);
    *out = (in - 1) * s - *lo - *hi + d * (k - 1) + *op + 1;
    if (*out < 1)
        return fail(r, "%s: output would be empty on axis %s (input %" PRId64 ", kernel %" PRId64
                    ", stride %" PRId64 ", padding %" PRId64 "+%" PRId64 ")",
                    r->op, ax, in, k, s, *lo, *hi);
    return true;
}

bool ops_shape_upconv(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r;
    if (!begin(&r, cx, OP_UPCONV, in, nin, true)) return false;
    if (!check_axes(&r, "kernel", at->kernel, 1)) return false;
    default_axes(at->stride, r.sr, at->kernel);
    default_axes(at->dilation, r.sr, ONES);
    if (!check_axes(&r, "stride", at->stride, 1) || !check_axes(&r, "dilation", at->dilation, 1) ||
        !check_axes(&r, "out_pad", at->out_pad, 0) || !check_padding(&r, &at->pad, "padding") ||
        !check_channels(&r, at, in[0].d[1]))
        return false;
    *out = in[0];
    out->d[1] = at->channels;
    for (int i = 0; i < r.sr; i++)
        if (!upconv_axis(&r, at, i, in[0].d[2 + i], &out->d[2 + i])) return false;
    return finish(&r, out);
}

/* ---- resampling --------------------------------------------------------- */

bool ops_shape_global_avgpool(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r;
    (void)at;
    if (!begin(&r, cx, OP_GLOBAL_AVGPOOL, in, nin, true)) return false;
    *out = in[0];
    for (int i = 0; i < r.sr; i++)
        out->d[2 + i] = 1;
    return true;
}

bool ops_shape_upsample(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r;
    if (!begin(&r, cx, OP_UPSAMPLE, in, nin, true)) return false;
    if (!check_axes(&r, "scale", at->scale, 1)) return false;
    if (at->mode != 0 && at->mode != 1)
        return fail(&r, "%s: invalid mode %d (nearest or linear)", r.op, at->mode);
    if (at->align_corners && at->mode != 1)
        return fail(&r, "%s: align_corners needs mode = linear", r.op);
    *out = in[0];
    for (int i = 0; i < r.sr; i++)
        out->d[2 + i] = in[0].d[2 + i] * at->scale[i];
    return finish(&r, out);
}

/* ---- explaining spatial mismatches --------------------------------------- */

static int log2_exact(int64_t v)
{
    int n = 0;
    if (v < 1 || (v & (v - 1))) return -1;
    while (v > 1) v >>= 1, n++;
    return n;
}

/* "; input 250 is not divisible by 16 (4 poolings) for protocol P" when the
 * deepest downsampling any input went through on spatial axis `ax` does
 * not divide the protocol's size there; "" when nothing explains it. */
static const char *mismatch_hint(const Rule *r, int ax, char *buf, size_t n)
{
    const ShapeCtx *cx = r->cx;
    int64_t best = 0;
    buf[0] = '\0';
    for (int i = 0; cx->in && i < cx->nin; i++) {
        const Tensor *t = cx->in[i];
        if (t && t->max_down[ax] > best) best = t->max_down[ax];
    }
    if (!cx->protocol_size || best <= 1) return buf;
    int64_t size = cx->protocol_size[ax];
    if (size < 1 || size % best == 0) return buf;
    char pools[32] = "";
    int lg = log2_exact(best);
    if (lg > 0) snprintf(pools, sizeof pools, " (%d pooling%s)", lg, lg == 1 ? "" : "s");
    snprintf(buf, n, "; input %" PRId64 " is not divisible by %" PRId64 "%s%s%s", size, best, pools,
             cx->protocol_name ? " for protocol " : "", cx->protocol_name ? cx->protocol_name : "");
    return buf;
}

/* "OP of A and B: WHAT[; hint]" for a mismatch on spatial axis `ax`. */
static bool spatial_mismatch(const Rule *r, const Shape *a, const Shape *b, int ax)
{
    char sa[128], sb[128], hint[256];
    return fail(r, "%s of %s and %s: spatial sizes differ%s", r->op,
                shape_format(sa, sizeof sa, a, true), shape_format(sb, sizeof sb, b, true),
                mismatch_hint(r, ax, hint, sizeof hint));
}

static bool other_mismatch(const Rule *r, const Shape *a, const Shape *b, bool batch,
                           const char *what, int64_t x, int64_t y)
{
    char sa[128], sb[128];
    return fail(r, "%s of %s and %s: %s differ (%" PRId64 " vs %" PRId64 ")", r->op,
                shape_format(sa, sizeof sa, a, !batch), shape_format(sb, sizeof sb, b, !batch),
                what, x, y);
}

/* ---- movement ----------------------------------------------------------- */

bool ops_shape_concat(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r;
    (void)at;
    if (!begin(&r, cx, OP_CONCAT, in, nin, true)) return false;
    int64_t c = 0;
    for (int j = 0; j < nin; j++) {
        if (in[j].d[0] != in[0].d[0])
            return other_mismatch(&r, &in[0], &in[j], true, "batch sizes", in[0].d[0], in[j].d[0]);
        for (int ax = 0; ax < r.sr; ax++)
            if (in[j].d[2 + ax] != in[0].d[2 + ax]) return spatial_mismatch(&r, &in[0], &in[j], ax);
        c += in[j].d[1];
    }
    *out = in[0];
    out->d[1] = c;
    return finish(&r, out);
}

static bool any_amount(const Padding *p)
{
    for (int i = 0; i < MAX_SPATIAL; i++)
        if (p->lo[i] || p->hi[i]) return true;
    return false;
}

/* crop(x, ref): center crop, floor(diff / 2) removed at the start. */
static bool crop_to_ref(const Rule *r, OpAttrs *at, const Shape *x, const Shape *ref, Shape *out)
{
    if (at->pad.mode == PAD_SAME || (at->pad.mode == PAD_EXPLICIT && any_amount(&at->pad)))
        return fail(r, "%s: give either a reference tensor or an amount to remove, not both", r->op);
    at->pad.mode = PAD_VALID;     /* marks the amounts as resolved from the reference */
    *out = *x;
    for (int i = 0; i < r->sr; i++) {
        int64_t diff = x->d[2 + i] - ref->d[2 + i];
        if (diff < 0) {
            char sa[128], sb[128];
            return fail(r, "%s of %s to %s: the reference is larger on axis %s (%" PRId64 " > %" PRId64 ")",
                        r->op, shape_format(sa, sizeof sa, x, true), shape_format(sb, sizeof sb, ref, true),
                        axis_name(r->sr, i), ref->d[2 + i], x->d[2 + i]);
        }
        at->pad.lo[i] = diff / 2;
        at->pad.hi[i] = diff - diff / 2;
        out->d[2 + i] = ref->d[2 + i];
    }
    return true;
}

bool ops_shape_crop(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r;
    if (!begin(&r, cx, OP_CROP, in, nin, true)) return false;
    if (nin == 2) return crop_to_ref(&r, at, &in[0], &in[1], out);
    if (at->pad.mode != PAD_EXPLICIT)
        return fail(&r, "%s: needs a reference tensor, crop(x, ref), or the amount to remove, crop(x, n)",
                    r.op);
    if (!check_padding(&r, &at->pad, "amount")) return false;
    *out = in[0];
    for (int i = 0; i < r.sr; i++) {
        out->d[2 + i] = in[0].d[2 + i] - at->pad.lo[i] - at->pad.hi[i];
        if (out->d[2 + i] < 1)
            return fail(&r, "%s: removing %" PRId64 "+%" PRId64 " on axis %s leaves nothing of size %" PRId64,
                        r.op, at->pad.lo[i], at->pad.hi[i], axis_name(r.sr, i), in[0].d[2 + i]);
    }
    return true;
}

bool ops_shape_pad(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r;
    if (!begin(&r, cx, OP_PAD, in, nin, true)) return false;
    if (at->pad.mode != PAD_EXPLICIT)
        return fail(&r, "%s: the amount must be numbers (one, per axis or per side), not %s", r.op,
                    at->pad.mode == PAD_SAME ? "same" : "valid");
    if (!check_padding(&r, &at->pad, "amount")) return false;
    if (at->mode < 0 || at->mode > 2)
        return fail(&r, "%s: invalid mode %d (zero, reflect or replicate)", r.op, at->mode);
    *out = in[0];
    for (int i = 0; i < r.sr; i++) {
        int64_t n = in[0].d[2 + i], m = at->pad.lo[i] > at->pad.hi[i] ? at->pad.lo[i] : at->pad.hi[i];
        if (at->mode == 1 && m >= n)
            return fail(&r, "%s: reflect padding %" PRId64 " on axis %s needs a larger input than %" PRId64,
                        r.op, m, axis_name(r.sr, i), n);
        out->d[2 + i] = n + at->pad.lo[i] + at->pad.hi[i];
    }
    return finish(&r, out);
}

/* ---- elementwise arithmetic ---------------------------------------------- */

/* numpy-style broadcasting of equal ranks where a dimension is 1; rank-0
 * scalars broadcast with anything. */
static bool broadcast(const Rule *r, const Shape *a, const Shape *b, Shape *out)
{
    if (a->rank == 0 || b->rank == 0) {
        *out = a->rank == 0 ? *b : *a;
        return true;
    }
    if (a->rank != b->rank) {
        char sa[128], sb[128];
        return fail(r, "%s of %s and %s: ranks differ (%d vs %d)", r->op,
                    shape_format(sa, sizeof sa, a, false), shape_format(sb, sizeof sb, b, false),
                    a->rank, b->rank);
    }
    *out = *a;
    for (int i = 0; i < a->rank; i++) {
        if (a->d[i] == b->d[i] || b->d[i] == 1) continue;
        if (a->d[i] == 1) {
            out->d[i] = b->d[i];
            continue;
        }
        if (i >= 2 && a->rank == 2 + r->sr) return spatial_mismatch(r, a, b, i - 2);
        return other_mismatch(r, a, b, i == 0, i == 0 ? "batch sizes" : i == 1 ? "channels" : "sizes",
                              a->d[i], b->d[i]);
    }
    return true;
}

static bool binary_shape(const ShapeCtx *cx, OpKind k, const Shape *in, int nin, Shape *out)
{
    Rule r;
    if (!begin(&r, cx, k, in, nin, false)) return false;
    *out = in[0];
    for (int j = 1; j < nin; j++) {
        Shape acc = *out;
        if (!broadcast(&r, &acc, &in[j], out)) return false;
    }
    return finish(&r, out);
}

bool ops_shape_add(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    (void)at;
    return binary_shape(cx, OP_ADD, in, nin, out);
}

bool ops_shape_mul(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    (void)at;
    return binary_shape(cx, OP_MUL, in, nin, out);
}

/* ---- shape-preserving ops -------------------------------------------------- */

/* Output = input; `min_rank` 2 for ops that need a channel axis. */
static bool same_shape(Rule *r, const ShapeCtx *cx, OpKind k, const Shape *in, int nin,
                       int min_rank, Shape *out)
{
    if (!begin(r, cx, k, in, nin, false)) return false;
    if (in[0].rank < min_rank) {
        char buf[128];
        return fail(r, "%s needs a tensor of rank >= %d (%s), got %s", r->op, min_rank,
                    min_rank >= 3 ? "N, C, spatial..." : "N, C, ...",
                    shape_format(buf, sizeof buf, &in[0], false));
    }
    *out = in[0];
    return true;
}

static bool norm_shape(const ShapeCtx *cx, OpKind k, OpAttrs *at, const Shape *in, int nin,
                       Shape *out)
{
    Rule r;
    if (!same_shape(&r, cx, k, in, nin, 3, out)) return false;
    if (!(at->eps > 0)) return fail(&r, "%s: eps must be positive, got %g", r.op, at->eps);
    if (k == OP_BATCHNORM && !(at->momentum >= 0 && at->momentum <= 1))
        return fail(&r, "%s: momentum must be in [0, 1], got %g", r.op, at->momentum);
    Shape sp = in[0];
    sp.d[0] = sp.d[1] = 1;
    if (k == OP_INSTANCENORM && shape_numel(&sp) == 1) {
        char buf[128];
        return fail(&r, "%s needs more than one spatial element per channel, got %s", r.op,
                    shape_format(buf, sizeof buf, &in[0], true));
    }
    return true;
}

bool ops_shape_batchnorm(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    return norm_shape(cx, OP_BATCHNORM, at, in, nin, out);
}

bool ops_shape_instancenorm(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    return norm_shape(cx, OP_INSTANCENORM, at, in, nin, out);
}

#define SIMPLE_RULE(fn, kind, min_rank)                                                     \
    bool fn(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)          \
    {                                                                                       \
        Rule r;                                                                             \
        (void)at;                                                                           \
        return same_shape(&r, cx, kind, in, nin, min_rank, out);                            \
    }

SIMPLE_RULE(ops_shape_scale, OP_SCALE, 0)
SIMPLE_RULE(ops_shape_relu, OP_RELU, 0)
SIMPLE_RULE(ops_shape_leaky_relu, OP_LEAKY_RELU, 0)
SIMPLE_RULE(ops_shape_elu, OP_ELU, 0)
SIMPLE_RULE(ops_shape_sigmoid, OP_SIGMOID, 0)
SIMPLE_RULE(ops_shape_tanh, OP_TANH, 0)
SIMPLE_RULE(ops_shape_softmax, OP_SOFTMAX, 2)

bool ops_shape_prelu(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r;
    return same_shape(&r, cx, OP_PRELU, in, nin, at->shared ? 0 : 2, out);
}

bool ops_shape_dropout(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r;
    if (!same_shape(&r, cx, OP_DROPOUT, in, nin, 0, out)) return false;
    if (!(at->p >= 0 && at->p < 1)) return fail(&r, "%s: p must be in [0, 1), got %g", r.op, at->p);
    return true;
}

/* ---- losses ------------------------------------------------------------------ */

/* logits (N, C, S...) and labels (N, 1, S'...) with S' >= S on each axis:
 * S' = S is the plain case; an integer multiple means the labels are
 * downsampled to the output at run time (deep supervision heads); any other
 * larger size means the output covers the centre of the patch (valid,
 * unpadded convolutions) and the labels are centre-cropped to it.  The output
 * is a scalar. */
static bool loss_shape(const ShapeCtx *cx, OpKind k, const Shape *in, int nin, Shape *out)
{
    Rule r;
    if (!begin(&r, cx, k, in, nin, true)) return false;
    const Shape *lg = &in[0], *lb = &in[1];
    const Tensor *t = cx->in && cx->nin > 0 ? cx->in[0] : NULL;
    if (t && t->dtype != DT_F32)
        return fail(&r, "%s: logits must be a float tensor but '%s' is integer (write %s(logits, labels))",
                    r.op, t->name ? t->name : "?", r.op);
    if (lb->d[0] != lg->d[0])
        return fail(&r, "%s: labels batch %" PRId64 " differs from logits batch %" PRId64, r.op,
                    lb->d[0], lg->d[0]);
    if (lb->d[1] != 1)
        return fail(&r, "%s: labels must have 1 channel (class indices), got %" PRId64, r.op, lb->d[1]);
    if (nin > 2) {
        /* the per-voxel weight map: the labels' shape, float */
        const Tensor *w = cx->in && cx->nin > 2 ? cx->in[2] : NULL;
        char sa[128], sb[128];
        if (w && w->dtype != DT_F32)
            return fail(&r, "%s: the voxel weight map must be a float tensor", r.op);
        if (!shape_equal(&in[2], lb))
            return fail(&r, "%s: voxel weight map %s differs from labels %s", r.op,
                        shape_format(sa, sizeof sa, &in[2], true), shape_format(sb, sizeof sb, lb, true));
    }
    for (int i = 0; i < r.sr; i++) {
        if (lb->d[2 + i] >= lg->d[2 + i]) continue;
        char sa[128], sb[128];
        return fail(&r, "%s: labels %s are smaller than logits %s: on axis %s, %" PRId64
                    " < %" PRId64 "; the net's output cannot be larger than its training patch", r.op,
                    shape_format(sa, sizeof sa, lb, true), shape_format(sb, sizeof sb, lg, true),
                    axis_name(r.sr, i), lb->d[2 + i], lg->d[2 + i]);
    }
    memset(out, 0, sizeof *out);
    return true;
}

static bool check_ignore(const Rule *r, int64_t ignore)
{
    if (ignore < -1)
        return fail(r, "%s: ignore must be a label value or -1 (none), got %" PRId64, r->op, ignore);
    return true;
}

bool ops_shape_ce(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r = { cx, cx->op_name ? cx->op_name : "ce", cx->spatial_rank };
    if (!loss_shape(cx, OP_CE, in, nin, out) || !check_ignore(&r, at->ignore)) return false;
    int cap = (int)(sizeof at->weights / sizeof at->weights[0]);
    if (at->nweights < 0 || at->nweights > cap)
        return fail(&r, "%s: %d class weights given; at most %d are supported", r.op, at->nweights, cap);
    if (at->nweights != 0 && at->nweights != in[0].d[1])
        return fail(&r, "%s: %d class weights given for %" PRId64 " classes", r.op, at->nweights,
                    in[0].d[1]);
    for (int i = 0; i < at->nweights; i++)
        if (!(at->weights[i] >= 0))
            return fail(&r, "%s: class weight %d must be non-negative, got %g", r.op, i, at->weights[i]);
    return true;
}

bool ops_shape_dice(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r = { cx, cx->op_name ? cx->op_name : "dice", cx->spatial_rank };
    if (!loss_shape(cx, OP_DICE, in, nin, out) || !check_ignore(&r, at->ignore)) return false;
    if (!(at->smooth >= 0)) return fail(&r, "%s: smooth must be non-negative, got %g", r.op, at->smooth);
    return true;
}

bool ops_shape_focal(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    Rule r = { cx, cx->op_name ? cx->op_name : "focal", cx->spatial_rank };
    if (!loss_shape(cx, OP_FOCAL, in, nin, out) || !check_ignore(&r, at->ignore)) return false;
    if (!(at->gamma >= 0)) return fail(&r, "%s: gamma must be non-negative, got %g", r.op, at->gamma);
    if (!(at->alpha >= 0 && at->alpha <= 1))
        return fail(&r, "%s: alpha must be in [0, 1], got %g", r.op, at->alpha);
    return true;
}

/* ---- autodiff ---------------------------------------------------------------- */

/* grad: inputs dy, then the forward node's inputs and parameters, then its
 * output; the result has the shape of operand `grad_operand`. */
bool ops_shape_grad(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    (void)cx;
    if (at->grad_operand < 0 || 1 + at->grad_operand >= nin - 1) return false;
    *out = in[1 + at->grad_operand];
    return true;
}

bool ops_shape_ones(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    (void)cx; (void)at; (void)in; (void)nin;
    memset(out, 0, sizeof *out);
    return true;
}

/* sgd_update, adam_update: the parameter's new value. */
bool ops_shape_update(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    (void)cx; (void)at;
    if (nin < 1) return false;
    *out = in[0];
    return true;
}
