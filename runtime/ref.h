/* ref.h — the reference executor: a plain, obviously-correct C implementation
 * of every L1 op, executing a Graph node by node in topological order.
 *
 * It is the ground truth the fast backends are tested against, so clarity
 * wins over speed: float32 storage, double accumulation, one loop nest per
 * op written once over three spatial dimensions (1D and 2D tensors are
 * treated as D = 1 (and H = 1) internally; the Graph keeps their own ranks).
 * Semantics are PyTorch's; see ref.c for the few conventions PyTorch leaves
 * open (RNG, focal loss, dice sign).
 *
 * Storage: one buffer per graph tensor (s->buf[t], numel(t) elements,
 * rank-0 tensors hold one).  Int32 tensors (labels) use the same buffer
 * reinterpreted: write them through ref_i32().
 *
 * Random numbers (documented contract, the backends must reproduce it):
 *   - generator: splitmix64; a uniform double in [0, 1) is (x >> 11) * 2^-53;
 *     a standard normal is Box-Muller, z = sqrt(-2 ln(1 - u1)) cos(2 pi u2),
 *     one normal per two uniforms (the sine half is discarded).
 *   - ref_init_params: parameter p (index into g->params) draws from a
 *     generator seeded with seed ^ (0x9E3779B97F4A7C15 * (p + 1)), elements
 *     in row-major order.
 *   - dropout (training only): node i draws from a generator seeded with
 *     seed ^ (0xD1B54A32D192ED03 * (i + 1)); element j (row-major) draws u_j
 *     and is zeroed when u_j < p, else multiplied by 1 / (1 - p).
 */
#ifndef NETC_REF_H
#define NETC_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph.h"

typedef struct {
    int ntensors;
    float **buf;          /* per graph tensor; int32 tensors reinterpret */
    int64_t *numel;       /* elements per tensor (1 for rank 0) */
} RefState;

/* Allocates (zeroed) every tensor of `g`; NULL if out of memory. */
RefState *ref_new(const Graph *g);
void ref_free(RefState *s);

static inline float *ref_f32(RefState *s, int t) { return s->buf[t]; }
static inline int32_t *ref_i32(RefState *s, int t) { return (int32_t *)(void *)s->buf[t]; }

/* Initializes every parameter and buffer per its Param.init rule:
 * He normal/uniform with negative slope a (std = sqrt(2 / (1 + a^2) / fan_in),
 * bound = sqrt(6 / (1 + a^2) / fan_in)), Xavier normal/uniform
 * (std = sqrt(2 / (fan_in + fan_out)), bound = sqrt(6 / (fan_in + fan_out))),
 * zeros, ones, const a. */
void ref_init_params(const Graph *g, RefState *s, uint64_t seed);

/* Runs every node.  Inputs (and labels) must be filled by the caller.
 * training: batchnorm uses batch statistics and updates its running
 * statistics in place; dropout is active.  Returns 0, or -1 with a message
 * in err (e.g. a label out of range). */
int ref_forward(const Graph *g, RefState *s, bool training, uint64_t seed, char *err, size_t errlen);

/* Runs node `i` alone (inputs must hold values). */
int ref_run_node(const Graph *g, RefState *s, int i, bool training, uint64_t seed, char *err,
                 size_t errlen);

/* The generator (exposed so tests and tools can reproduce draws). */
typedef struct { uint64_t s; } RefRng;
uint64_t ref_rng_next(RefRng *r);
double ref_rng_uniform(RefRng *r);
double ref_rng_normal(RefRng *r);

/* Fills a float tensor with uniform values in [lo, hi) from `seed`. */
void ref_fill_uniform(RefState *s, int t, uint64_t seed, double lo, double hi);

/* ---- backward (ref_backward.c) ----------------------------------------------
 * Gradients of a scalar with respect to every float tensor, by walking the
 * nodes in reverse order, accumulating in double, stored as float32.
 * Frozen parameters and buffers (trainable = false) and int32 tensors get no
 * gradient (left zero).  Dropout replays the forward's mask (same seed). */
/* One float32 buffer per graph tensor, laid out like the state it belongs to. */
typedef RefState RefGrads;

static inline RefGrads *ref_grads_new(const Graph *g) { return ref_new(g); }
static inline void ref_grads_free(RefGrads *gr) { ref_free(gr); }

/* The gradient of operand `operand` (an input index, or nin + j for the
 * node's parameter j) of node `node`, given dy = d(loss)/d(its output) and
 * the forward state: what an L1 `grad` node computes. */
int ref_vjp(const Graph *g, const RefState *s, int node, const float *dy, int operand, float *out,
            bool training, uint64_t seed, char *err, size_t errlen);

/* d(loss)/d(tensor) for the rank-0 (or one-element) tensor `loss_tensor`,
 * given the state after ref_forward(g, s, training, seed).  Overwrites gr.
 * Returns 0, or -1 with a message in err ("backward of OP is not
 * implemented yet" for ops without a gradient). */
int ref_backward(const Graph *g, const RefState *s, RefGrads *gr, int loss_tensor, bool training,
                 uint64_t seed, char *err, size_t errlen);

/* The same with an arbitrary upstream gradient dy (numel(tensor) values) of
 * tensor `t`: gr receives the vector-Jacobian product dy^T d(t)/d(tensor). */
int ref_backward_from(const Graph *g, const RefState *s, RefGrads *gr, int t, const float *dy,
                      bool training, uint64_t seed, char *err, size_t errlen);

/* ---- planned memory (ref_plan.c) --------------------------------------------
 * The graph executed as a backend would: kernel by kernel in fusion-plan
 * order, every arena tensor at its planned offset in ONE arena allocation,
 * parameters and inputs in their own buffers (an optimizer update's output
 * aliases its parameter), each non-materialized tensor in private scratch.
 * The arena and the scratch start as NaN, and after each kernel every arena
 * region whose tensor's live range ended there, and the scratch of the
 * non-materialized tensors it computed, are filled with NaN again: a plan
 * that frees or overlaps a tensor too early changes the results, which must
 * be bit-identical to ref_forward on ref_new memory. */
struct FusionPlan;
struct MemPlan;

typedef struct {
    RefState s;           /* the per-tensor pointers; arena tensors point into `arena` */
    float *arena;         /* 64-byte aligned, MemPlan.arena_bytes */
    bool *owned;          /* per tensor: s.buf[t] is its own allocation */
} RefPlanned;

/* NULL if out of memory.  Parameters and inputs are zeroed: fill them
 * through &p->s (ref_init_params, ref_fill_uniform, ref_i32). */
RefPlanned *ref_planned_new(const Graph *g, const struct FusionPlan *fp, const struct MemPlan *mp);
void ref_planned_free(RefPlanned *p);
/* One execution (ref_run_node per node, each node once, in kernel order; a
 * node listed in several kernels, such as an inlined movement op, is
 * recomputed in each when its output is not materialized and it has no side
 * effects).  Returns 0, or -1 with a
 * message in err (a node's error, a node in no kernel). */
int ref_planned_run(const Graph *g, RefPlanned *p, const struct FusionPlan *fp, const struct MemPlan *mp,
                    bool training, uint64_t seed, char *err, size_t errlen);

#endif
