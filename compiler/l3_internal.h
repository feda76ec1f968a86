/* l3_internal.h — what the L3 backends share beyond l3.h: the loop
 * analyses (l3.c: which loops may run in parallel) and the C-syntax
 * expression printer that the C printer (l3.c) and the CUDA printer
 * (l3_cuda.c) both use (l3_print.c), so the two print every expression
 * identically.  Not part of l3.h's interface. */
#ifndef NETC_L3_INTERNAL_H
#define NETC_L3_INTERNAL_H

#include <stdbool.h>
#include <stdio.h>

#include "l3.h"

/* May the iterations of the nested loop s run on different threads?  Yes
 * when it is L3_PARALLEL, or when every store below it indexes with its
 * variable and a buffer stored below it is read only at an index that is
 * stored (so a reduction into a buffer, or a scan, stays serial). */
bool l3_loop_independent(const L3Stmt *s);
/* Does e read variable var? */
bool l3_expr_uses_var(const L3Expr *e, int var);

/* The parallel loop s of kernel k as one outlined region, for the C printer
 * and the LLVM backend alike.
 *
 * Returns the number of loops the region runs as one flat iteration space
 * (loops[0] = s, then perfectly nested loops whose iterations are visibly
 * independent, while there are fewer than L3_PAR_MIN_ITERS iterations: a
 * batch of 1 gives no parallelism on its own; an L3_VECTORIZE loop is only
 * taken while there are fewer than 4), or 0: s stays a serial loop.  That
 * happens when the body assigns a local declared outside it (the one thing
 * an outlined body cannot do: it gets copies), when the nest runs no
 * iteration or on malformed IR.  free_vars[k->nvars]: the variables the
 * body reads but does not declare (outer loop variables, earlier locals);
 * used_bufs[k->nbufs]: the buffers it reads or writes. */
#define L3_PAR_MIN_ITERS 256
int l3_parallel_plan(const L3Kernel *k, const L3Stmt *s, const L3Stmt **loops, int maxloops, bool *free_vars,
                     bool *used_bufs);

/* Does any kernel of m compute with L3_U64 (a variable or an expression of
 * that type)?  The CUDA printer then declares uint64_t. */
bool l3_module_uses_u64(const L3Module *m);

/* The definition of netc_mix64 (L3_MIX64) as C source (cuda: a __device__
 * function), for the C and CUDA printers' preambles where
 * l3_module_uses_u64. */
void l3_print_mix64(FILE *out, bool cuda);

/* C spelling of an L3 type (int64_t, int32_t, float, uint64_t; int for bool). */
const char *l3_ctype(L3Type t);
/* A float constant as C source: rounded to float, "%.9g" with a decimal
 * point and an f suffix; NAN, INFINITY, (-INFINITY). */
void l3_print_float(FILE *out, double f);
/* An expression as C source (valid C11 and CUDA C): fully parenthesized
 * binary operators, fminf/fmaxf/NETC_MIN/NETC_MAX, fmodf, fmaf for L3E_FMA,
 * 64-bit integer constants with an LL suffix where int would not hold them,
 * L3_U64 constants in hex with ull.
 * Out-of-range variable or buffer indices print as netc_bad_var/_buf (the
 * compiler then rejects the source). */
void l3_print_expr(FILE *out, const L3Kernel *k, const L3Expr *e);
/* Text inside a comment: newlines become spaces, a star-slash pair is broken. */
void l3_print_comment(FILE *out, const char *s);

#endif
