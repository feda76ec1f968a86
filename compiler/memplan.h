/* memplan.h — one arena per step: offsets for every materialized tensor.
 *
 * Planned after fusion, over the whole step (forward, backward and update
 * as one schedule, in kernel order).  A tensor lives from the kernel that
 * writes it to the last kernel that reads it; graph outputs and losses live
 * to the end.  Offsets are 64-byte aligned and chosen so that no two tensors
 * that are live at the same time overlap; an elementwise kernel may write
 * its output over an input that dies in that kernel (in place), and an
 * optimizer update writes over its parameter.
 *
 * Parameters, optimizer state and graph inputs are not in the arena: they
 * persist across steps and are owned by the caller (the trainer, the
 * inference runtime, a bundle's user).
 */
#ifndef NETC_MEMPLAN_H
#define NETC_MEMPLAN_H

#include <stdint.h>
#include <stdio.h>

#include "fuse.h"
#include "graph.h"

#define MEMPLAN_ALIGN 64

typedef struct MemPlan {
    int64_t *offset;          /* per tensor: byte offset in the arena; -1 when not in the arena
                                 (not materialized, a parameter or an input) */
    int *first, *last;        /* per tensor: live kernel range (first = writer), -1 when not in the arena */
    int *in_place_of;         /* per tensor: the tensor whose bytes it reuses in place, or -1 */
    int64_t arena_bytes;      /* the planned peak: arena size */
    int64_t lower_bound;      /* the largest sum of live tensor sizes at any kernel */
    int64_t naive_bytes;      /* every materialized arena tensor in its own allocation */
    int64_t persistent_bytes; /* parameters, optimizer state and inputs (outside the arena) */
    const char *strategy;     /* the placement order that gave the smallest arena (static string) */
} MemPlan;

MemPlan *memplan(const Graph *g, const FusionPlan *fp);
void memplan_free(MemPlan *mp);
/* (Re)computes offsets, arena_bytes and lower_bound from first, last and
 * in_place_of; the arena tensors are those with offset >= 0 on entry.
 * memplan() calls it; tests call it again after changing a live range.
 * Returns false when out of memory. */
bool memplan_place(const Graph *g, const FusionPlan *fp, MemPlan *mp);
/* Peak, lower bound, naive total and their ratios; with `verbose`, every
 * tensor's offset, size and live range (`netc check --memory`). */
void memplan_print(FILE *out, const Graph *g, const FusionPlan *fp, const MemPlan *mp, bool verbose);

#endif
