/* ref_internal.h — shared by the reference executor's files (not public). */
#ifndef NETC_REF_INTERNAL_H
#define NETC_REF_INTERNAL_H

#include <stdarg.h>
#include <stdio.h>

#include "ref.h"

/* An image tensor N, C, spatial... seen as N, C, D, H, W: missing leading
 * spatial axes have size 1. */
typedef struct {
    int64_t n, c, s[3];
} Geo;

/* What an op implementation gets. */
typedef struct {
    const Graph *g;
    const Node *node;
    int index;                 /* node index */
    RefState *st;
    bool training;
    uint64_t seed;
    char *err;
    size_t errlen;
} RefCtx;

Geo ref_geo(const Shape *s);
/* Per-axis attribute padded to 3 axes: missing leading axes get `def`. */
void ref_axes3(const int64_t *v, int sr, int64_t def, int64_t out[3]);
/* Element offset of (n, c, d, h, w). */
static inline int64_t geo_at(const Geo *g, int64_t n, int64_t c, int64_t d, int64_t h, int64_t w)
{
    return (((n * g->c + c) * g->s[0] + d) * g->s[1] + h) * g->s[2] + w;
}
static inline int64_t geo_sp(const Geo *g) { return g->s[0] * g->s[1] * g->s[2]; }

int ref_fail(const RefCtx *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Input j, output, parameter j of the node. */
const float *ref_in(const RefCtx *cx, int j);
const Shape *ref_in_shape(const RefCtx *cx, int j);
float *ref_out(const RefCtx *cx);
const Shape *ref_out_shape(const RefCtx *cx);
float *ref_param(const RefCtx *cx, int j);

/* Index helpers shared by the forward (ref.c, ref_ops.c, ref_loss.c) and the
 * backward (ref_backward.c), so both walk exactly the same elements. */

/* Offset into a broadcast input for output position idx (row-major). */
int64_t ref_bcast_offset(const Shape *in, const Shape *out, int64_t idx);
/* pad: source index for position i of an axis of size n; -1 = the fill value. */
int64_t ref_pad_src(int64_t i, int64_t n, int mode);
/* One axis of a pooling window: [r0, r1) inside the input, `padded` = the
 * window's size within the padded bounds (count_pad divisor). */
typedef struct { int64_t r0, r1, padded; } RefWin;
RefWin ref_pool_win(int64_t o, int64_t k, int64_t s, int64_t lo, int64_t hi, int64_t in);
/* upsample: source indices and weight of output index o on one axis. */
typedef struct { int64_t i0, i1; double l1; } RefLerp;
RefLerp ref_upsample_src(int64_t o, int64_t in, int64_t out, bool linear, bool align);
/* Labels at the logits' spatial size (downsampled or centre-cropped),
 * N x S row-major, malloc'd; NULL if out of memory. */
int32_t *ref_prepare_labels(const RefCtx *cx, const Geo *lg);
/* The loss node's voxel weight map (third input) resampled the same way, or
 * NULL without one (*oom tells an allocation failure apart). */
float *ref_prepare_weightmap(const RefCtx *cx, const Geo *lg, bool *oom);
/* Log-softmax over the channels of voxel (n, p) of an N, C, ... tensor. */
void ref_log_softmax_at(const float *x, const Geo *g, int64_t n, int64_t p, double *lsm);

/* ref_ops.c */
int ref_conv(const RefCtx *cx);
int ref_upconv(const RefCtx *cx);
int ref_pool(const RefCtx *cx, bool is_max);
int ref_global_avgpool(const RefCtx *cx);
int ref_upsample(const RefCtx *cx);
int ref_batchnorm(const RefCtx *cx);
int ref_instancenorm(const RefCtx *cx);

/* ref_optim.c: an sgd_update / adam_update node */
int ref_update_node(const RefCtx *cx);

/* ref_loss.c */
int ref_loss(const RefCtx *cx);

#endif
