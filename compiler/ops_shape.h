/* ops_shape.h — the shape rules of ops_shape.c, which ops.c puts into the op
 * table.  Internal to those two files. */
#ifndef NETC_OPS_SHAPE_H
#define NETC_OPS_SHAPE_H

#include "graph.h"

#define RULE(op) bool ops_shape_##op(const ShapeCtx *, OpAttrs *, const Shape *, int, Shape *);
RULE(conv) RULE(upconv) RULE(maxpool) RULE(avgpool) RULE(global_avgpool) RULE(upsample)
RULE(concat) RULE(crop) RULE(pad) RULE(add) RULE(mul) RULE(scale)
RULE(batchnorm) RULE(instancenorm) RULE(relu) RULE(leaky_relu) RULE(prelu) RULE(elu)
RULE(sigmoid) RULE(tanh) RULE(softmax) RULE(dropout) RULE(ce) RULE(dice) RULE(focal)
RULE(grad) RULE(ones) RULE(update)
#undef RULE

#endif
