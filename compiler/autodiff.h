/* autodiff.h — reverse-mode differentiation on the L1 graph. */
#ifndef NETC_AUTODIFF_H
#define NETC_AUTODIFF_H

#include "graph.h"

/* Append to `g` the nodes that compute d(loss)/d(p) for every trainable,
 * unfrozen parameter p on a path to `loss_tensor` (a rank-0 tensor), and
 * record each in Param.grad (-1 for parameters the loss does not depend on).
 * The new nodes are ordinary L1 nodes: one `ones` seed, one `grad` node per
 * (forward node, operand that needs a gradient), and `add` nodes where a
 * tensor feeds several consumers.  Returns the number of nodes added. */
int autodiff(Graph *g, int loss_tensor);

#endif
