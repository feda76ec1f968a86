/* lower.h — from an L1 graph to the L3 loop IR (l3.h). */
#ifndef NETC_LOWER_H
#define NETC_LOWER_H

#include <stdbool.h>
#include <stddef.h>

#include "fuse.h"
#include "graph.h"
#include "l3.h"

/* One entry function, `netc_forward` (or `netc_train_forward` when
 * `training`: batch statistics, running-statistics updates) that runs every
 * node of g in order.  NULL with a message in err for an op that has no
 * lowering yet. */
L3Module *lower_graph(const Graph *g, bool training, char *err, size_t errlen);
/* The same, one L3 kernel per kernel of the fusion plan fp (fuse.h):
 * epilogues applied at the anchor's stores, movement ops inlined as index
 * arithmetic.  Tensors the plan keeps inside kernels are never written.
 * A training step with optimizer updates also gets `netc_grads` (every
 * kernel but the updates) and `netc_update` (the updates), which together
 * do what `netc_train_forward` does: a trainer can clip the gradients in
 * between (they stay in the arena: the updates are the last kernels). */
L3Module *lower_graph_fused(const Graph *g, const FusionPlan *fp, bool training, char *err, size_t errlen);

#endif
