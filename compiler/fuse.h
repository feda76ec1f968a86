/* fuse.h — grouping L1 nodes into kernels (fusion), before memory planning
 * and lowering to the L3 loop IR.
 *
 * A kernel is what a backend runs as one unit (one C function, one CUDA
 * launch): an anchor node plus the nodes fused into it.  Tensors that only
 * live inside a kernel are never written to memory; every other tensor is
 * "materialized" and gets a place from the memory planner (memplan.h).
 *
 * The rules are table-driven from each op's FusionKind (graph.h) and are
 * documented in docs/architecture.md ("Fusion"); every fusion that was
 * considered and refused is recorded with its reason, which
 * `netc check --fusion` prints.
 */
#ifndef NETC_FUSE_H
#define NETC_FUSE_H

#include <stdbool.h>
#include <stdio.h>

#include "graph.h"

typedef enum {
    KK_CONV,        /* conv / transposed conv (forward or its input gradient) + epilogue */
    KK_REDUCE,      /* pooling, normalization statistics, softmax, losses, weight gradients */
    KK_ELEMWISE,    /* elementwise / broadcast chains (movement ops inlined as index arithmetic) */
    KK_COPY,        /* a movement op that must be materialized on its own (e.g. a graph output) */
    KK_UPDATE       /* optimizer updates, several parameters per kernel */
} KernelKind;

typedef struct {
    KernelKind kind;
    int anchor;               /* node index of the kernel's main op */
    int *nodes; int nnodes;   /* nodes computed here, in graph (topological) order, anchor included;
                                 movement nodes inlined into this kernel are listed too */
    int *outs; int nouts;     /* tensors this kernel writes to memory */
    int *ins; int nins;       /* materialized tensors it reads: inputs, parameters, other kernels' outputs
                                 (an update kernel's optimizer state, updated in place, is listed here only) */
    const char *reason;       /* KK_COPY: why the movement op is materialized (static string); NULL otherwise */
} Kernel;

typedef struct {
    int producer, consumer;   /* node indices */
    const char *reason;       /* static string: why they were not fused */
} FusionRefusal;

typedef struct FusionPlan {
    Kernel *kernels; int nkernels;        /* in execution order (a topological order of the graph) */
    int *kernel_of_node;                  /* per node: its kernel; a movement node inlined into several
                                             consumers gives the first of them */
    bool *materialized;                   /* per tensor: written to / read from memory */
    bool *inlined;                        /* per node: a movement op inlined into its consumers' kernels */
    FusionRefusal *refused; int nrefused;
} FusionPlan;

/* `training`: the graph runs as a training step (batchnorm uses batch
 * statistics, dropout is active); otherwise inference-mode batchnorm is
 * folded into the preceding convolution's epilogue. */
FusionPlan *fuse_graph(const Graph *g, bool training);
void fusion_plan_free(FusionPlan *fp);
/* The kernel table and the refused fusions, for `netc check --fusion`. */
void fusion_print(FILE *out, const Graph *g, const FusionPlan *fp);
const char *kernel_kind_name(KernelKind k);

#endif
