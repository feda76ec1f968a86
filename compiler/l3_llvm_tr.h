/* l3_llvm_tr.h — the LLVM backend's translator state, shared by its two
 * translation files: l3_llvm_expr.c (types, conversions, expressions with
 * C's semantics) and l3_llvm.c (statements, parallel outlining, kernels,
 * entries).  Includes the LLVM-C headers: only for the LLVM backend's files. */
#ifndef NETC_L3_LLVM_TR_H
#define NETC_L3_LLVM_TR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llvm-c/Core.h>

#include "l3.h"

/* The C type of a translated value.  CT_I1 is a C int known to be 0 or 1
 * (the result of a comparison, !, && or ||); CT_U64 is uint64_t (L3_U64:
 * wrapping arithmetic, unsigned division and comparisons, logical >>). */
typedef enum { CT_I1, CT_I32, CT_I64, CT_F32, CT_U64 } CType;

typedef struct {
    LLVMValueRef v;   /* NULL: translation failed (the message is in Tr.err) */
    CType t;
} Val;

typedef struct {
    LLVMContextRef cx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef i1, i32, i64, f32, ptr, voidt;
    const char *cpu, *features;
    const L3Kernel *k;
    LLVMValueRef fn;
    LLVMValueRef *slots;    /* one alloca per kernel variable */
    LLVMValueRef *bufs;     /* the buffer pointers in fn (kernel: its parameters) */
    LLVMBasicBlockRef entry;   /* fn's entry block (allocas) */
    LLVMValueRef pfor;      /* netc_parallel_for */
    int npar;               /* parallel loops of the kernel outlined so far */
    bool in_par;            /* inside a parallel loop: nested ones stay serial */
    char *err;
    size_t errlen;
    bool failed;
} Tr;

/* Record the first error (later ones are consequences). */
void tr_fail(Tr *T, const char *fmt, ...);
/* The C type a declaration of L3 type t has; false for an unknown type. */
bool tr_storage(L3Type t, CType *out);
LLVMTypeRef tr_lty(Tr *T, CType t);
/* x converted to C type `to` as C's assignment does (a failed x stays failed). */
Val tr_conv(Tr *T, Val x, CType to);
/* The usual arithmetic conversions of a and b (after promotion). */
CType tr_common(CType a, CType b);
void tr_fn_attr(Tr *T, LLVMValueRef fn, const char *name, uint64_t val);
/* A float -> float libm function, declared once in the module. */
LLVMValueRef tr_declare_libm(Tr *T, const char *name);
/* Expression e with its C type; .v NULL after a failure (see T->err). */
Val tr_expr(Tr *T, const L3Expr *e);
/* e as an i1 (C's "!= 0"); NULL after a failure. */
LLVMValueRef tr_truth(Tr *T, const L3Expr *e);
/* &buf[index] and the element type; NULL after a failure. */
LLVMValueRef tr_element_ptr(Tr *T, int buf, const L3Expr *index, LLVMTypeRef *elem);

#endif
