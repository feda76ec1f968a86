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

/* After autodiff: append the optimizer step as one update node per
 * parameter with a gradient (sgd_update or adam_update, from the train
 * block's optimizer `name` and its table values num[]: sgd lr, momentum,
 * nesterov, weight_decay; adam/adamw lr, beta1, beta2, eps, weight_decay).
 * The learning rate and the step count (1, 2, ...) become rank-0 graph
 * inputs `train.lr` and `train.step` (kind TK_HYPER) that the trainer sets
 * each step; the optimizer's state (momentum_buffer, exp_avg, exp_avg_sq,
 * named as torch.optim names them) becomes zero-initialised, non-trainable
 * parameters of the update nodes, so checkpoints carry it.  Each update
 * node's output is its parameter's new value.  Returns the number of update
 * nodes, or -1 for an unknown optimizer. */
int append_optimizer(Graph *g, const char *name, const double *num);

#endif
