/* codegen_fixture.h — what the generated-code tests share (test_codegen.c,
 * test_llvm.c, test_pool.c): seeds, tolerances and how a graph's inputs
 * are filled (tests/codegen_fixture.c). */
#ifndef NETC_CODEGEN_FIXTURE_H
#define NETC_CODEGEN_FIXTURE_H

#include <stdint.h>

#include <check.h>

#include "graph.h"
#include "ref.h"
#include "codegen_compare.h"

/* A fresh seed per run (the time), or NETC_TEST_SEED; tests print it on
 * failure. */
uint64_t codegen_test_seed(void);

/* Whole-net training steps use a fixed seed (NETC_TEST_SEED overrides):
 * batchnorm over the handful of values at a tiny net's bottleneck (and
 * relu/maxpool decisions within rounding of a tie) make float32 against
 * double differ by far more than any tolerance for some draws.  That is
 * arithmetic, not a bug, and a test that fails on one draw in a dozen would
 * make CI flaky; single ops keep a fresh seed per run. */
uint64_t codegen_fixed_seed(void);

/* codegen_fill (codegen_compare.h) fills g's inputs (uniform -1..1), voxel
 * weight maps (0..2), labels (classes from the first output's channels),
 * hyper inputs (lr 0.01, step 1) and running statistics (means -0.2..0.2,
 * variances 0.5..1.5) from the seed. */

/* The codegen suite's large-reduction case (tests/test_codegen_large.c). */
TCase *codegen_large_tcase(void);

#endif
