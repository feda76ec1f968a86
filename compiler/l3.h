/* l3.h — the L3 loop IR: the only input of the backends (C printer, LLVM-C
 * builder, CUDA C printer).
 *
 * A module is a list of kernels plus one entry function per step that calls
 * them in order.  A kernel is a function over buffers (pointers to float32
 * or int32 elements; every shape is a compile-time constant) whose body is a
 * tree of statements:
 *
 *   for v in 0 .. extent   (with schedule annotations: parallel, vectorize,
 *                           unroll; backends may ignore the ones they cannot
 *                           honour, the result must not change)
 *   local x = e            (a scalar: float accumulators, int temporaries)
 *   x = e                  (assign a local)
 *   buf[i] = e / buf[i] += e
 *   if c { ... } else { ... }
 *
 * Expressions are pure: constants, loop variables, locals, loads, +, -, *,
 * /, %, min, max, comparisons, select, a few math functions, casts, and
 * fmuladd.  Index arithmetic is int64 (the lowering may narrow it to int32
 * where the index range allows; backends print what the type says).
 *
 * L3_U64 is C's uint64_t, for counter-based random numbers (dropout's
 * splitmix64, lower.c): +, -, * wrap modulo 2^64, / % < <= min max are
 * unsigned, L3_XOR is ^ and L3_SHR is >> (logical on L3_U64; the result has
 * the left operand's type), L3_MIX64 is splitmix64's mixing of one state.
 * Constants of that type come from l3_u64; an operation with an L3_U64
 * operand (and no float one) is L3_U64, as in C.  Buffers never hold it.
 *
 * Nodes are allocated from the module's arena and freed with it.
 */
#ifndef NETC_L3_H
#define NETC_L3_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { L3_I64, L3_I32, L3_F32, L3_BOOL, L3_U64 } L3Type;

typedef enum {
    L3E_INT,      /* i */
    L3E_FLOAT,    /* f (a float32 constant) */
    L3E_VAR,      /* var: a loop variable or a local */
    L3E_LOAD,     /* buf[a] */
    L3E_BIN,      /* op(a, b) */
    L3E_UN,       /* op(a) */
    L3E_SELECT,   /* a ? b : c */
    L3E_FMA,      /* a * b + c (llvm.fmuladd; may or may not be fused) */
    L3E_CAST      /* a converted to `type` */
} L3ExprKind;

typedef enum {
    L3_ADD, L3_SUB, L3_MUL, L3_DIV, L3_MOD, L3_MIN, L3_MAX,
    L3_LT, L3_LE, L3_EQ, L3_NE, L3_AND, L3_OR,
    /* unary */
    L3_NEG, L3_EXP, L3_LOG, L3_SQRT, L3_TANH, L3_ABS, L3_FLOOR, L3_NOT, L3_EXPM1,
    /* binary, integers only (after the unary ones so the ranges above stay) */
    L3_XOR, L3_SHR,
    /* unary, L3_U64: splitmix64's output function, z ^= z >> 30; z *= 0xBF58476D1CE4E5B9;
     * z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31) (the C printers call netc_mix64) */
    L3_MIX64
} L3Op;

typedef struct L3Expr L3Expr;
struct L3Expr {
    L3ExprKind kind;
    L3Type type;
    L3Op op;
    int64_t i;
    double f;
    int var, buf;
    L3Expr *a, *b, *c;
};

typedef enum { L3S_FOR, L3S_LOCAL, L3S_ASSIGN, L3S_STORE, L3S_IF, L3S_BLOCK } L3StmtKind;

enum { L3_PARALLEL = 1, L3_VECTORIZE = 2, L3_UNROLL = 4 };

typedef struct L3Stmt L3Stmt;
typedef struct { L3Stmt **s; int n, cap; } L3Block;

struct L3Stmt {
    L3StmtKind kind;
    int var;              /* FOR: loop variable; LOCAL/ASSIGN: the local */
    int64_t extent;       /* FOR: 0 .. extent-1 */
    unsigned annot;       /* FOR: L3_PARALLEL | L3_VECTORIZE | L3_UNROLL */
    int buf;              /* STORE */
    bool accumulate;      /* STORE: += instead of = */
    L3Expr *index;        /* STORE */
    L3Expr *value;        /* LOCAL (initial value), ASSIGN, STORE */
    L3Expr *cond;         /* IF */
    L3Block body;         /* FOR, IF (then), BLOCK */
    L3Block els;          /* IF (else) */
};

typedef struct {
    char *name;           /* a C identifier, unique in the kernel */
    L3Type type;
    bool is_loop;
} L3Var;

typedef struct {
    char *name;           /* a C identifier: the parameter's name */
    int tensor;           /* the graph tensor bound to it */
    L3Type elem;          /* L3_F32 or L3_I32 */
    int64_t numel;
    bool written;         /* false: read-only (const) */
} L3Buf;

typedef struct {
    char *name;           /* C identifier: k<index>_<what> */
    char *comment;        /* which graph nodes it computes */
    L3Buf *bufs; int nbufs, capbufs;
    L3Var *vars; int nvars, capvars;
    L3Block body;
} L3Kernel;

typedef struct L3Chunk L3Chunk;

typedef struct {
    char *name;           /* the entry function's name */
    int *kernels; int nkernels, capkernels;   /* called in order */
} L3Entry;

typedef struct L3Module {
    char *name;           /* the net (and protocol) it was made for */
    int ntensors;         /* entry functions take `void **t`: one pointer per graph tensor */
    L3Kernel *kernels; int nkernels, capkernels;
    L3Entry *entries; int nentries, capentries;
    L3Chunk *mem;
} L3Module;

L3Module *l3_module_new(const char *name, int ntensors);
void l3_module_free(L3Module *m);

/* Building */
L3Kernel *l3_kernel_new(L3Module *m, const char *name, const char *comment);   /* appended */
int l3_buf(L3Module *m, L3Kernel *k, int tensor, L3Type elem, int64_t numel, bool written, const char *name);
int l3_var(L3Module *m, L3Kernel *k, const char *name, L3Type type, bool is_loop);

L3Expr *l3_int(L3Module *m, int64_t v);
L3Expr *l3_u64(L3Module *m, uint64_t v);                        /* an L3_U64 constant */
L3Expr *l3_float(L3Module *m, double v);
L3Expr *l3_varref(L3Module *m, const L3Kernel *k, int var);
L3Expr *l3_load(L3Module *m, const L3Kernel *k, int buf, L3Expr *index);
L3Expr *l3_bin(L3Module *m, L3Op op, L3Expr *a, L3Expr *b);    /* folds int constants */
L3Expr *l3_un(L3Module *m, L3Op op, L3Expr *a);
L3Expr *l3_select(L3Module *m, L3Expr *c, L3Expr *a, L3Expr *b);
L3Expr *l3_fma(L3Module *m, L3Expr *a, L3Expr *b, L3Expr *c);
L3Expr *l3_cast(L3Module *m, L3Type t, L3Expr *a);

L3Stmt *l3_for(L3Module *m, L3Block *in, int var, int64_t extent, unsigned annot);   /* returns the loop: add to ->body */
void l3_local(L3Module *m, L3Block *in, int var, L3Expr *init);
void l3_assign(L3Module *m, L3Block *in, int var, L3Expr *value);
void l3_store(L3Module *m, L3Block *in, int buf, L3Expr *index, L3Expr *value, bool accumulate);
L3Stmt *l3_if(L3Module *m, L3Block *in, L3Expr *cond);   /* add to ->body and ->els */

L3Entry *l3_entry_new(L3Module *m, const char *name);
void l3_entry_call(L3Entry *e, int kernel);

/* Backends */
/* Readable C11: one static function per kernel and one exported function per
 * entry, `void NAME(void **t)`.  Compiles with cc -O3 without warnings. */
void l3_print_c(FILE *out, const L3Module *m);

#endif
