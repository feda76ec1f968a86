/* codegen_compare.h — run a graph with a code-generation backend and with
 * the reference executor from the same parameters and inputs, and compare
 * every float tensor.  Free of Check, so tools/gpu_check.c (which runs on
 * GPU machines without the test framework or LLVM) shares it with the unit
 * tests (test_codegen.c, test_cuda.c). */
#ifndef NETC_CODEGEN_COMPARE_H
#define NETC_CODEGEN_COMPARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "ref.h"

/* |got - want| <= TOL_ABS * max|want| + TOL_REL * |want| */
#define TOL_ABS 1e-4
#define TOL_REL 1e-5

typedef enum { CG_REF, CG_C, CG_CUDA } CodegenBackend;

typedef struct {
    int checked;           /* tensors compared */
    double worst;          /* the largest |got - want| as a fraction of its tolerance (< 1: passed) */
    char worst_name[128];  /* ... and where */
    double compile_s;      /* building the code (cc, NVRTC) */
    double run_s;          /* the last generated run, data movement included */
    int kernels;           /* kernels in the module */
    int launches;          /* CUDA: __global__ launches of the entry */
} CodegenReport;

/* Run g `steps` times (after each step but the last, every update output
 * becomes its parameter and train.step + 1) through `backend` from the
 * graph's lowering (fused: the fusion plan's kernels, tensors kept inside
 * kernels must stay unwritten) and through the reference; compare every
 * activation, gradient, loss, updated parameter, optimizer state and
 * running statistic within TOL_ABS * max|want| + TOL_REL * |want| (Adam's
 * updated parameters against its formula from the generated moments).
 * Activations are poisoned with NaN before each run.  Returns 0, or -1 with
 * the first mismatch (or build failure) in msg. */
int codegen_compare(const char *what, const Graph *g, bool training, uint64_t seed, int steps, bool fused,
                    CodegenBackend backend, CodegenReport *rep, char *msg, size_t msglen);

/* The same against another backend instead of the reference (`want`:
 * CG_REF, CG_C or CG_CUDA): e.g. the GPU against the CPU's generated C at
 * sizes where the double-precision reference would take too long. */
int codegen_compare_with(const char *what, const Graph *g, bool training, uint64_t seed, int steps, bool fused,
                         CodegenBackend backend, CodegenBackend want, CodegenReport *rep, char *msg, size_t msglen);

/* After a training step: every update output becomes its parameter, and
 * train.step + 1. */
void codegen_advance(const Graph *g, RefState *s);

/* Inputs, labels, hypers and running statistics from the seed (see
 * codegen_fixture.h, which declares the same function for the tests). */
void codegen_fill(const Graph *g, RefState *s, uint64_t seed);

#endif
