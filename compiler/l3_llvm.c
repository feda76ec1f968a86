/* l3_llvm.c — the LLVM backend: L3 loop IR to LLVM IR with the LLVM-C API,
 * O3 for the host CPU, then ORC LLJIT or an object / IR / assembly file.
 *
 * Values follow the C printer's C semantics exactly.  Every translated
 * expression carries its C type (CType below): the usual arithmetic
 * conversions pick the type of each binary operation, the math functions
 * take and return float, llabs returns int64, comparisons and ! && || give
 * a C int that is 0 or 1 (kept as i1), casts to L3_BOOL are `(int)`.
 * Stores, locals and assignments convert to the declared type as C's
 * assignment does.  `?:`, `&&` and `||` only evaluate the operand they need
 * when the other one holds a load or a division (a guarded load may be out
 * of bounds); otherwise they become select/and/or, which O3 would make of
 * branches anyway.
 *
 * Locals and loop variables are allocas in the entry block (mem2reg turns
 * them into SSA values); loops are `for (v = 0; v < extent; v++)`.
 * Signed integer arithmetic is nsw (overflow is undefined in C too);
 * uint64_t (L3_U64) wraps, divides, compares and shifts unsigned, and
 * L3_MIX64 becomes its xor/lshr/mul sequence on the one operand value.
 *
 * Parallel loops are outlined exactly as the C printer does (the regions
 * come from l3_parallel_plan in l3.c): the outermost L3_PARALLEL loop of a
 * nest, with the perfectly nested independent loops collapsed into it,
 * becomes NAME_bodyI(ctx, lo, hi) (unpacking a context struct) around an
 * always-inlined NAME_bodyI_impl whose buffer parameters are noalias like a
 * kernel's; the kernel fills the struct (an entry-block alloca) and calls
 * netc_parallel_for (runtime/pool.h): an absolute symbol in the JIT, an
 * undefined external symbol in object files.
 */
#define _POSIX_C_SOURCE 200809L
#include "l3_llvm.h"
#include "l3_internal.h"
#include "l3_llvm_internal.h"

#include "pool.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

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

static void fail(Tr *T, const char *fmt, ...)
{
    if (T->failed) return;
    T->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(T->err, T->errlen, fmt, ap);
    va_end(ap);
}

static const Val BAD = { NULL, CT_I64 };

/* ---- types and conversions -------------------------------------------------------------------- */

static bool storage(L3Type t, CType *out)   /* the C type a declaration of L3 type t has */
{
    switch (t) {
    case L3_I64: *out = CT_I64; return true;
    case L3_I32: *out = CT_I32; return true;
    case L3_F32: *out = CT_F32; return true;
    case L3_BOOL: *out = CT_I32; return true;   /* printed as `int` */
    case L3_U64: *out = CT_U64; return true;
    }
    return false;
}

static LLVMTypeRef lty(Tr *T, CType t)
{
    switch (t) {
    case CT_I1: return T->i1;
    case CT_I32: return T->i32;
    case CT_I64: return T->i64;
    case CT_F32: return T->f32;
    case CT_U64: return T->i64;
    }
    return T->i64;
}

/* C's conversion of x to type `to`; to CT_I1 means C's truth value (x != 0). */
static Val conv(Tr *T, Val x, CType to)
{
    if (!x.v || x.t == to) return x;
    LLVMValueRef v = x.v;
    switch (to) {
    case CT_F32:
        v = x.t == CT_I1 || x.t == CT_U64 ? LLVMBuildUIToFP(T->b, v, T->f32, "") : LLVMBuildSIToFP(T->b, v, T->f32, "");
        break;
    case CT_I32:
    case CT_I64:
    case CT_U64:
        if (x.t == CT_F32) v = to == CT_U64 ? LLVMBuildFPToUI(T->b, v, lty(T, to), "") : LLVMBuildFPToSI(T->b, v, lty(T, to), "");
        else if (x.t == CT_I1) v = LLVMBuildZExt(T->b, v, lty(T, to), "");
        else v = LLVMBuildIntCast2(T->b, v, lty(T, to), x.t != CT_U64, "");   /* int64 <-> uint64: the same bits */
        break;
    case CT_I1:
        if (x.t == CT_F32) v = LLVMBuildFCmp(T->b, LLVMRealUNE, v, LLVMConstReal(T->f32, 0.0), "");
        else v = LLVMBuildICmp(T->b, LLVMIntNE, v, LLVMConstInt(lty(T, x.t), 0, 0), "");
        break;
    }
    return (Val){ v, to };
}

static CType common(CType a, CType b)   /* the usual arithmetic conversions (after promotion) */
{
    if (a == CT_F32 || b == CT_F32) return CT_F32;
    if (a == CT_U64 || b == CT_U64) return CT_U64;
    if (a == CT_I64 || b == CT_I64) return CT_I64;
    return CT_I32;
}

/* The C type of e, as translate() will produce it (no validation here). */
static CType type_of(const Tr *T, const L3Expr *e)
{
    CType t = CT_I64;
    if (!e) return t;
    switch (e->kind) {
    case L3E_INT: return e->type == L3_U64 ? CT_U64 : CT_I64;
    case L3E_FLOAT: return CT_F32;
    case L3E_VAR:
        if (e->var >= 0 && e->var < T->k->nvars) storage(T->k->vars[e->var].type, &t);
        return t;
    case L3E_LOAD:
        if (e->buf >= 0 && e->buf < T->k->nbufs) storage(T->k->bufs[e->buf].elem, &t);
        return t;
    case L3E_BIN:
        if (e->op >= L3_LT && e->op <= L3_OR) return CT_I1;
        if ((e->op == L3_MIN || e->op == L3_MAX) && e->type == L3_F32) return CT_F32;
        if (e->op == L3_SHR) { t = type_of(T, e->a); return t == CT_I1 ? CT_I32 : t; }   /* the promoted left operand */
        return common(type_of(T, e->a), type_of(T, e->b));
    case L3E_UN:
        switch (e->op) {
        case L3_NEG: t = type_of(T, e->a); return t == CT_I1 ? CT_I32 : t;
        case L3_NOT: return CT_I1;
        case L3_ABS: return e->type == L3_F32 ? CT_F32 : CT_I64;
        case L3_MIX64: return CT_U64;
        default: return CT_F32;
        }
    case L3E_SELECT: {
        CType a = type_of(T, e->b), b = type_of(T, e->c);
        return a == CT_I1 && b == CT_I1 ? CT_I1 : common(a, b);
    }
    case L3E_FMA: return CT_F32;
    case L3E_CAST: storage(e->type, &t); return t;
    }
    return t;
}

/* Whether evaluating e could fault: a load (the index may be guarded by the
 * condition around it) or a division (by a guarded zero). */
static bool may_trap(const L3Expr *e)
{
    if (!e) return false;
    if (e->kind == L3E_LOAD) return true;
    if (e->kind == L3E_BIN && (e->op == L3_DIV || e->op == L3_MOD)) return true;
    if (e->kind == L3E_INT || e->kind == L3E_FLOAT || e->kind == L3E_VAR) return false;
    return may_trap(e->a) || may_trap(e->b) || may_trap(e->c);
}

/* ---- calls ----------------------------------------------------------------------------------- */

static LLVMValueRef intrinsic(Tr *T, const char *name, LLVMTypeRef ty, LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id) {
        fail(T, "LLVM has no intrinsic %s", name);
        return NULL;
    }
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(T->mod, id, &ty, 1);
    LLVMTypeRef fty = LLVMIntrinsicGetType(T->cx, id, &ty, 1);
    return LLVMBuildCall2(T->b, fty, fn, args, n, "");
}

static void add_fn_attr(Tr *T, LLVMValueRef fn, const char *name, uint64_t val)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    if (kind) LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(T->cx, kind, val));
}

/* float f(float) from libm (no LLVM intrinsic in LLVM 16): tanhf, expm1f.
 * Declared without side effects (errno is never read), so loops calling
 * them can still be vectorised or hoisted. */
static LLVMValueRef declare_libm(Tr *T, const char *name)
{
    LLVMTypeRef fty = LLVMFunctionType(T->f32, &T->f32, 1, 0);
    LLVMValueRef fn = LLVMAddFunction(T->mod, name, fty);
    add_fn_attr(T, fn, "nounwind", 0);
    add_fn_attr(T, fn, "willreturn", 0);
    add_fn_attr(T, fn, "memory", 0);   /* memory(none) */
    return fn;
}

static LLVMValueRef call_libm(Tr *T, const char *name, LLVMValueRef x)
{
    LLVMValueRef fn = LLVMGetNamedFunction(T->mod, name);
    if (!fn) {
        fail(T, "%s is not declared", name);
        return NULL;
    }
    return LLVMBuildCall2(T->b, LLVMFunctionType(T->f32, &T->f32, 1, 0), fn, &x, 1, "");
}

/* ---- expressions ---------------------------------------------------------------------------- */

static Val translate(Tr *T, const L3Expr *e);

static LLVMValueRef truth(Tr *T, const L3Expr *e)
{
    return conv(T, translate(T, e), CT_I1).v;
}

/* Two-armed value: c ? a : b (op 0), a && b (op L3_AND), a || b (op L3_OR)
 * with branches, evaluating only what C evaluates. */
static Val lazy(Tr *T, LLVMValueRef c, const L3Expr *a, const L3Expr *b, CType rt, int op)
{
    LLVMBasicBlockRef ba = LLVMAppendBasicBlockInContext(T->cx, T->fn, "lazy.a");
    LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(T->cx, T->fn, "lazy.b");
    LLVMBasicBlockRef end = LLVMAppendBasicBlockInContext(T->cx, T->fn, "lazy.end");
    LLVMValueRef va, vb;
    LLVMBasicBlockRef ea, eb;
    LLVMBuildCondBr(T->b, c, ba, bb);
    LLVMPositionBuilderAtEnd(T->b, ba);
    if (op == L3_OR) va = LLVMConstInt(T->i1, 1, 0);
    else if (op == L3_AND) va = truth(T, b);
    else va = conv(T, translate(T, a), rt).v;
    ea = LLVMGetInsertBlock(T->b);
    LLVMBuildBr(T->b, end);
    LLVMPositionBuilderAtEnd(T->b, bb);
    if (op == L3_OR) vb = truth(T, b);
    else if (op == L3_AND) vb = LLVMConstInt(T->i1, 0, 0);
    else vb = conv(T, translate(T, b), rt).v;
    eb = LLVMGetInsertBlock(T->b);
    LLVMBuildBr(T->b, end);
    LLVMPositionBuilderAtEnd(T->b, end);
    if (!va || !vb) return BAD;
    LLVMValueRef phi = LLVMBuildPhi(T->b, lty(T, rt), "");
    LLVMValueRef vals[2] = { va, vb };
    LLVMBasicBlockRef blocks[2] = { ea, eb };
    LLVMAddIncoming(phi, vals, blocks, 2);
    return (Val){ phi, rt };
}

static LLVMValueRef element_ptr(Tr *T, int buf, const L3Expr *index, LLVMTypeRef *elem)
{
    if (buf < 0 || buf >= T->k->nbufs) {
        fail(T, "%s: buffer %d out of range", T->k->name, buf);
        return NULL;
    }
    CType et;
    if (!storage(T->k->bufs[buf].elem, &et)) {
        fail(T, "%s: buffer %s has an unknown element type %d", T->k->name, T->k->bufs[buf].name,
             (int)T->k->bufs[buf].elem);
        return NULL;
    }
    Val i = translate(T, index);
    if (!i.v) return NULL;
    if (i.t == CT_F32) {
        fail(T, "%s: buffer %s indexed with a float", T->k->name, T->k->bufs[buf].name);
        return NULL;
    }
    i = conv(T, i, CT_I64);
    *elem = lty(T, et);
    return LLVMBuildInBoundsGEP2(T->b, *elem, T->bufs[buf], &i.v, 1, "");
}

static Val translate_bin(Tr *T, const L3Expr *e)
{
    if (e->op == L3_AND || e->op == L3_OR) {
        LLVMValueRef a = truth(T, e->a);
        if (!a) return BAD;
        if (may_trap(e->b)) return lazy(T, a, e->a, e->b, CT_I1, (int)e->op);
        LLVMValueRef b = truth(T, e->b);
        if (!b) return BAD;
        return (Val){ e->op == L3_AND ? LLVMBuildAnd(T->b, a, b, "") : LLVMBuildOr(T->b, a, b, ""), CT_I1 };
    }
    Val a = translate(T, e->a), b = translate(T, e->b);
    if (!a.v || !b.v) return BAD;
    if (e->op == L3_SHR || e->op == L3_XOR) {
        CType ct = e->op == L3_SHR ? (a.t == CT_I1 ? CT_I32 : a.t) : common(a.t, b.t);
        if (ct == CT_F32 || b.t == CT_F32) {
            fail(T, "%s: %s of a float", T->k->name, e->op == L3_SHR ? ">>" : "^");
            return BAD;
        }
        a = conv(T, a, ct);
        b = conv(T, b, ct);   /* C converts the shift count on its own; LLVM wants one type */
        LLVMValueRef r = e->op == L3_XOR ? LLVMBuildXor(T->b, a.v, b.v, "")
                       : ct == CT_U64 ? LLVMBuildLShr(T->b, a.v, b.v, "") : LLVMBuildAShr(T->b, a.v, b.v, "");
        return (Val){ r, ct };
    }
    CType ct = common(a.t, b.t);
    if ((e->op == L3_MIN || e->op == L3_MAX) && e->type == L3_F32) ct = CT_F32;   /* fminf / fmaxf */
    a = conv(T, a, ct);
    b = conv(T, b, ct);
    bool fl = ct == CT_F32, u = ct == CT_U64;   /* u: unsigned, wrapping */
    LLVMBuilderRef B = T->b;
    LLVMValueRef r = NULL;
    switch (e->op) {
    case L3_ADD: r = fl ? LLVMBuildFAdd(B, a.v, b.v, "") : u ? LLVMBuildAdd(B, a.v, b.v, "") : LLVMBuildNSWAdd(B, a.v, b.v, ""); break;
    case L3_SUB: r = fl ? LLVMBuildFSub(B, a.v, b.v, "") : u ? LLVMBuildSub(B, a.v, b.v, "") : LLVMBuildNSWSub(B, a.v, b.v, ""); break;
    case L3_MUL: r = fl ? LLVMBuildFMul(B, a.v, b.v, "") : u ? LLVMBuildMul(B, a.v, b.v, "") : LLVMBuildNSWMul(B, a.v, b.v, ""); break;
    case L3_DIV: r = fl ? LLVMBuildFDiv(B, a.v, b.v, "") : u ? LLVMBuildUDiv(B, a.v, b.v, "") : LLVMBuildSDiv(B, a.v, b.v, ""); break;
    case L3_MOD:   /* fmodf */
        r = fl ? LLVMBuildFRem(B, a.v, b.v, "") : u ? LLVMBuildURem(B, a.v, b.v, "") : LLVMBuildSRem(B, a.v, b.v, "");
        break;
    case L3_MIN:
    case L3_MAX:
        if (e->type == L3_F32) {   /* fminf/fmaxf: a NaN operand is ignored, as minnum/maxnum */
            LLVMValueRef args[2] = { a.v, b.v };
            r = intrinsic(T, e->op == L3_MIN ? "llvm.minnum" : "llvm.maxnum", T->f32, args, 2);
        } else {   /* NETC_MIN(a, b): ((a) < (b) ? (a) : (b)) */
            LLVMValueRef lt = fl ? LLVMBuildFCmp(B, LLVMRealOLT, e->op == L3_MIN ? a.v : b.v, e->op == L3_MIN ? b.v : a.v, "")
                                 : LLVMBuildICmp(B, u ? LLVMIntULT : LLVMIntSLT, e->op == L3_MIN ? a.v : b.v,
                                                 e->op == L3_MIN ? b.v : a.v, "");
            r = LLVMBuildSelect(B, lt, a.v, b.v, "");
        }
        break;
    case L3_LT:
    case L3_LE:
    case L3_EQ:
    case L3_NE: {
        static const LLVMRealPredicate fp[] = { LLVMRealOLT, LLVMRealOLE, LLVMRealOEQ, LLVMRealUNE };
        static const LLVMIntPredicate ip[] = { LLVMIntSLT, LLVMIntSLE, LLVMIntEQ, LLVMIntNE };
        static const LLVMIntPredicate up[] = { LLVMIntULT, LLVMIntULE, LLVMIntEQ, LLVMIntNE };
        int i = (int)e->op - (int)L3_LT;
        r = fl ? LLVMBuildFCmp(B, fp[i], a.v, b.v, "") : LLVMBuildICmp(B, u ? up[i] : ip[i], a.v, b.v, "");
        return (Val){ r, CT_I1 };
    }
    case L3_AND: case L3_OR: case L3_XOR: case L3_SHR:   /* handled above */
    case L3_NEG: case L3_EXP: case L3_LOG: case L3_SQRT: case L3_TANH: case L3_ABS: case L3_FLOOR: case L3_NOT:
    case L3_EXPM1: case L3_MIX64:
        fail(T, "%s: unary operator %d used as a binary one", T->k->name, (int)e->op);
        return BAD;
    }
    if (!r) {
        fail(T, "%s: unknown binary operator %d", T->k->name, (int)e->op);
        return BAD;
    }
    return (Val){ r, ct };
}

static Val translate_un(Tr *T, const L3Expr *e)
{
    Val a = translate(T, e->a);
    if (!a.v) return BAD;
    LLVMBuilderRef B = T->b;
    const char *intr = NULL, *lib = NULL;
    switch (e->op) {
    case L3_NEG:
        if (a.t == CT_F32) return (Val){ LLVMBuildFNeg(B, a.v, ""), CT_F32 };
        if (a.t == CT_I1) a = conv(T, a, CT_I32);
        return (Val){ a.t == CT_U64 ? LLVMBuildNeg(B, a.v, "") : LLVMBuildNSWNeg(B, a.v, ""), a.t };
    case L3_NOT: {   /* !a: a == 0 */
        LLVMValueRef c = conv(T, a, CT_I1).v;
        return (Val){ LLVMBuildXor(B, c, LLVMConstInt(T->i1, 1, 0), ""), CT_I1 };
    }
    case L3_ABS:
        if (e->type != L3_F32) {   /* llabs */
            a = conv(T, a, CT_I64);
            LLVMValueRef args[2] = { a.v, LLVMConstInt(T->i1, 1, 0) };
            LLVMValueRef r = intrinsic(T, "llvm.abs", T->i64, args, 2);
            return r ? (Val){ r, CT_I64 } : BAD;
        }
        intr = "llvm.fabs";
        break;
    case L3_MIX64: {   /* splitmix64's output function on the one value a */
        LLVMValueRef z = conv(T, a, CT_U64).v;
        static const unsigned sh[3] = { 30, 27, 31 };
        static const unsigned long long mul[2] = { 0xBF58476D1CE4E5B9ull, 0x94D049BB133111EBull };
        for (int i = 0; i < 3; i++) {
            z = LLVMBuildXor(B, z, LLVMBuildLShr(B, z, LLVMConstInt(T->i64, sh[i], 0), ""), "");
            if (i < 2) z = LLVMBuildMul(B, z, LLVMConstInt(T->i64, mul[i], 0), "");
        }
        return (Val){ z, CT_U64 };
    }
    case L3_EXP: intr = "llvm.exp"; break;
    case L3_LOG: intr = "llvm.log"; break;
    case L3_SQRT: intr = "llvm.sqrt"; break;
    case L3_FLOOR: intr = "llvm.floor"; break;
    case L3_TANH: lib = "tanhf"; break;
    case L3_EXPM1: lib = "expm1f"; break;
    case L3_ADD: case L3_SUB: case L3_MUL: case L3_DIV: case L3_MOD: case L3_MIN: case L3_MAX:
    case L3_LT: case L3_LE: case L3_EQ: case L3_NE: case L3_AND: case L3_OR: case L3_XOR: case L3_SHR:
        fail(T, "%s: binary operator %d used as a unary one", T->k->name, (int)e->op);
        return BAD;
    }
    if (!intr && !lib) {
        fail(T, "%s: unknown unary operator %d", T->k->name, (int)e->op);
        return BAD;
    }
    a = conv(T, a, CT_F32);
    LLVMValueRef r = intr ? intrinsic(T, intr, T->f32, &a.v, 1) : call_libm(T, lib, a.v);
    return r ? (Val){ r, CT_F32 } : BAD;
}

static Val translate(Tr *T, const L3Expr *e)
{
    if (T->failed) return BAD;
    if (!e) {
        fail(T, "%s: missing expression", T->k->name);
        return BAD;
    }
    switch (e->kind) {
    case L3E_INT:
        if (e->type == L3_U64) return (Val){ LLVMConstInt(T->i64, (unsigned long long)e->i, 0), CT_U64 };
        return (Val){ LLVMConstInt(T->i64, (unsigned long long)e->i, 1), CT_I64 };
    case L3E_FLOAT: return (Val){ LLVMConstReal(T->f32, (double)(float)e->f), CT_F32 };
    case L3E_VAR: {
        CType t;
        if (e->var < 0 || e->var >= T->k->nvars || !storage(T->k->vars[e->var].type, &t)) {
            fail(T, "%s: bad variable %d", T->k->name, e->var);
            return BAD;
        }
        return (Val){ LLVMBuildLoad2(T->b, lty(T, t), T->slots[e->var], ""), t };
    }
    case L3E_LOAD: {
        LLVMTypeRef et;
        LLVMValueRef p = element_ptr(T, e->buf, e->a, &et);
        if (!p) return BAD;
        CType t = CT_F32;
        storage(T->k->bufs[e->buf].elem, &t);
        return (Val){ LLVMBuildLoad2(T->b, et, p, ""), t };
    }
    case L3E_BIN: return translate_bin(T, e);
    case L3E_UN: return translate_un(T, e);
    case L3E_SELECT: {
        LLVMValueRef c = truth(T, e->a);
        if (!c) return BAD;
        CType rt = type_of(T, e);
        if (may_trap(e->b) || may_trap(e->c)) return lazy(T, c, e->b, e->c, rt, 0);
        Val a = conv(T, translate(T, e->b), rt), b = conv(T, translate(T, e->c), rt);
        if (!a.v || !b.v) return BAD;
        return (Val){ LLVMBuildSelect(T->b, c, a.v, b.v, ""), rt };
    }
    case L3E_FMA: {
        Val a = conv(T, translate(T, e->a), CT_F32), b = conv(T, translate(T, e->b), CT_F32),
            c = conv(T, translate(T, e->c), CT_F32);
        if (!a.v || !b.v || !c.v) return BAD;
        LLVMValueRef args[3] = { a.v, b.v, c.v };
        LLVMValueRef r = intrinsic(T, "llvm.fmuladd", T->f32, args, 3);
        return r ? (Val){ r, CT_F32 } : BAD;
    }
    case L3E_CAST: {
        CType t;
        if (!storage(e->type, &t)) {
            fail(T, "%s: cast to unknown type %d", T->k->name, (int)e->type);
            return BAD;
        }
        return conv(T, translate(T, e->a), t);
    }
    }
    fail(T, "%s: unknown expression kind %d", T->k->name, (int)e->kind);
    return BAD;
}

/* ---- statements ------------------------------------------------------------------------------ */

static bool translate_block(Tr *T, const L3Block *b);

static bool var_slot(Tr *T, int var, CType *t)
{
    if (var < 0 || var >= T->k->nvars || !storage(T->k->vars[var].type, t)) {
        fail(T, "%s: bad variable %d", T->k->name, var);
        return false;
    }
    return true;
}

static int translate_parallel(Tr *T, const L3Stmt *s);

/* for (v = 0; v < extent; v++) body; t is v's C type. */
static bool translate_serial_for(Tr *T, const L3Stmt *s, CType t)
{
    if (t == CT_F32 || (t == CT_I32 && s->extent > INT32_MAX)) {
        fail(T, "%s: loop variable %s cannot count to %lld", T->k->name, T->k->vars[s->var].name,
             (long long)s->extent);
        return false;
    }
    LLVMTypeRef ty = lty(T, t);
    LLVMValueRef slot = T->slots[s->var];
    LLVMBuildStore(T->b, LLVMConstInt(ty, 0, 0), slot);
    LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(T->cx, T->fn, "for.cond");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(T->cx, T->fn, "for.body");
    LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(T->cx, T->fn, "for.end");
    LLVMBuildBr(T->b, head);
    LLVMPositionBuilderAtEnd(T->b, head);
    LLVMValueRef i = LLVMBuildLoad2(T->b, ty, slot, "");
    LLVMValueRef more = LLVMBuildICmp(T->b, LLVMIntSLT, i, LLVMConstInt(ty, (unsigned long long)s->extent, 1), "");
    LLVMBuildCondBr(T->b, more, body, exit);
    LLVMPositionBuilderAtEnd(T->b, body);
    if (!translate_block(T, &s->body)) return false;
    i = LLVMBuildLoad2(T->b, ty, slot, "");
    LLVMBuildStore(T->b, LLVMBuildNSWAdd(T->b, i, LLVMConstInt(ty, 1, 0), ""), slot);
    LLVMBuildBr(T->b, head);
    LLVMPositionBuilderAtEnd(T->b, exit);
    return true;
}

static bool translate_stmt(Tr *T, const L3Stmt *s)
{
    if (!s) {
        fail(T, "%s: missing statement", T->k->name);
        return false;
    }
    CType t = CT_F32;
    switch (s->kind) {
    case L3S_FOR: {
        if (!var_slot(T, s->var, &t)) return false;
        if ((s->annot & L3_PARALLEL) && !T->in_par) {
            int r = translate_parallel(T, s);
            if (r >= 0) return r > 0;
            T->in_par = true;   /* a serial loop, and so is every loop inside */
            bool ok = translate_serial_for(T, s, t);
            T->in_par = false;
            return ok;
        }
        return translate_serial_for(T, s, t);
    }
    case L3S_LOCAL:
    case L3S_ASSIGN: {
        if (!var_slot(T, s->var, &t)) return false;
        Val v = conv(T, translate(T, s->value), t);
        if (!v.v) return false;
        LLVMBuildStore(T->b, v.v, T->slots[s->var]);
        return true;
    }
    case L3S_STORE: {
        LLVMTypeRef et;
        LLVMValueRef p = element_ptr(T, s->buf, s->index, &et);
        if (!p) return false;
        storage(T->k->bufs[s->buf].elem, &t);
        Val v = translate(T, s->value);
        if (!v.v) return false;
        if (s->accumulate) {   /* y[i] += v: y[i] = y[i] + v in the common type */
            Val old = { LLVMBuildLoad2(T->b, et, p, ""), t };
            CType ct = common(t, v.t);
            old = conv(T, old, ct);
            v = conv(T, v, ct);
            v.v = ct == CT_F32 ? LLVMBuildFAdd(T->b, old.v, v.v, "") : LLVMBuildNSWAdd(T->b, old.v, v.v, "");
        }
        v = conv(T, v, t);
        LLVMBuildStore(T->b, v.v, p);
        return true;
    }
    case L3S_IF: {
        LLVMValueRef c = truth(T, s->cond);
        if (!c) return false;
        LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(T->cx, T->fn, "if.then");
        LLVMBasicBlockRef els = s->els.n ? LLVMAppendBasicBlockInContext(T->cx, T->fn, "if.else") : NULL;
        LLVMBasicBlockRef end = LLVMAppendBasicBlockInContext(T->cx, T->fn, "if.end");
        LLVMBuildCondBr(T->b, c, then, els ? els : end);
        LLVMPositionBuilderAtEnd(T->b, then);
        if (!translate_block(T, &s->body)) return false;
        LLVMBuildBr(T->b, end);
        if (els) {
            LLVMPositionBuilderAtEnd(T->b, els);
            if (!translate_block(T, &s->els)) return false;
            LLVMBuildBr(T->b, end);
        }
        LLVMPositionBuilderAtEnd(T->b, end);
        return true;
    }
    case L3S_BLOCK: return translate_block(T, &s->body);
    }
    fail(T, "%s: unknown statement kind %d", T->k->name, (int)s->kind);
    return false;
}

static bool translate_block(Tr *T, const L3Block *b)
{
    if (b->n > 0 && !b->s) {
        fail(T, "%s: block without statements", T->k->name);
        return false;
    }
    for (int i = 0; i < b->n; i++)
        if (!translate_stmt(T, b->s[i]) || T->failed) return false;
    return true;
}

/* ---- module ---------------------------------------------------------------------------------- */

static void target_attrs(Tr *T, LLVMValueRef fn)
{
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(T->cx, "target-cpu", 10, T->cpu, (unsigned)strlen(T->cpu)));
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(T->cx, "target-features", 15, T->features,
                                                      (unsigned)strlen(T->features)));
    add_fn_attr(T, fn, "nounwind", 0);
}

static bool new_function(Tr *T, const char *name, LLVMTypeRef fty, LLVMValueRef *out)
{
    if (!name || !*name) {
        fail(T, "a function without a name");
        return false;
    }
    if (LLVMGetNamedFunction(T->mod, name)) {
        fail(T, "two functions are named %s", name);
        return false;
    }
    *out = LLVMAddFunction(T->mod, name, fty);
    target_attrs(T, *out);
    return true;
}

/* fn's entry block with one alloca per kernel variable (T->slots); the
 * builder at its end. */
static bool begin_function(Tr *T, LLVMValueRef fn)
{
    const L3Kernel *k = T->k;
    T->fn = fn;
    T->entry = LLVMAppendBasicBlockInContext(T->cx, fn, "entry");
    LLVMPositionBuilderAtEnd(T->b, T->entry);
    T->slots = calloc((size_t)k->nvars + 1, sizeof *T->slots);
    if (!T->slots) { fail(T, "out of memory"); return false; }
    for (int i = 0; i < k->nvars; i++) {
        CType t;
        if (!storage(k->vars[i].type, &t)) {
            fail(T, "%s: variable %d has an unknown type %d", k->name, i, (int)k->vars[i].type);
            return false;
        }
        T->slots[i] = LLVMBuildAlloca(T->b, lty(T, t), k->vars[i].name ? k->vars[i].name : "");
    }
    return true;
}

/* Buffer parameters: noalias nocapture, readonly when not written. */
static void buffer_param_attrs(Tr *T, LLVMValueRef fn, unsigned param, const L3Buf *b)
{
    static const char *const names[] = { "noalias", "nocapture", "readonly" };
    for (int a = 0; a < (b->written ? 2 : 3); a++) {
        unsigned kind = LLVMGetEnumAttributeKindForName(names[a], strlen(names[a]));
        LLVMAddAttributeAtIndex(fn, param + 1, LLVMCreateEnumAttribute(T->cx, kind, 0));
    }
    LLVMSetValueName2(LLVMGetParam(fn, param), b->name, strlen(b->name));
}

/* From l3.c (the C printer outlines the same regions): the loops run as one
 * parallel region from the parallel loop s, and what its body needs from
 * outside.  0: s stays serial. */

#define PAR_MAX_LOOPS 8

/* The parallel loop s outlined, as l3_print_c does:
 *
 *   NAME_bodyI_impl(bufs..., outer vars..., i64 lo, i64 hi)   internal, alwaysinline,
 *       the buffers noalias: runs the region's iterations lo .. hi-1
 *       (collapsed loops: one flat index, variables by udiv/urem)
 *   NAME_bodyI(ptr ctx, i64 lo, i64 hi)   unpacks the context struct, calls _impl
 *
 * and in the kernel: the struct (an alloca of the entry block) filled with
 * the buffer pointers and variable values, then
 * netc_parallel_for(NAME_bodyI, &ctx, iterations).
 * 1: done, 0: failed (message set), -1: s cannot be outlined (serial loop). */
static int translate_parallel(Tr *T, const L3Stmt *s)
{
    const L3Kernel *k = T->k;
    const L3Stmt *loops[PAR_MAX_LOOPS];
    bool *fv = calloc((size_t)k->nvars + 1, sizeof *fv), *ub = calloc((size_t)k->nbufs + 1, sizeof *ub);
    int nf = 0, nl = 0;
    if (fv && ub) nl = l3_parallel_plan(k, s, loops, PAR_MAX_LOOPS, fv, ub);
    if (nl == 0) {
        free(fv);
        free(ub);
        if (!fv || !ub) { fail(T, "out of memory"); return 0; }
        return -1;
    }
    int64_t total = 1;
    for (int i = 0; i < nl; i++) {
        CType lt;
        if (!var_slot(T, loops[i]->var, &lt)) { free(fv); free(ub); return 0; }
        if (lt == CT_F32 || (lt == CT_I32 && loops[i]->extent > INT32_MAX)) {
            fail(T, "%s: loop variable %s cannot count to %lld", k->name, k->vars[loops[i]->var].name,
                 (long long)loops[i]->extent);
            free(fv);
            free(ub);
            return 0;
        }
        total *= loops[i]->extent;
    }
    /* fields: the buffers, then the variables; impl parameters: the same, then lo, hi */
    int *fidx = calloc((size_t)(k->nbufs + k->nvars) + 1, sizeof *fidx);
    LLVMTypeRef *ft = calloc((size_t)(k->nbufs + k->nvars) + 3, sizeof *ft);
    LLVMValueRef *vals = calloc((size_t)(k->nbufs + k->nvars) + 3, sizeof *vals);
    if (!fidx || !ft || !vals) {
        free(fidx); free(ft); free(vals); free(fv); free(ub);
        fail(T, "out of memory");
        return 0;
    }
    for (int b = 0; b < k->nbufs; b++)
        if (ub[b]) { fidx[nf] = b; ft[nf++] = T->ptr; }
    int nbf = nf;
    for (int v = 0; v < k->nvars; v++)
        if (fv[v]) {
            CType t = CT_I64;
            storage(k->vars[v].type, &t);
            fidx[nf] = v;
            ft[nf++] = lty(T, t);
        }
    LLVMTypeRef st = LLVMStructTypeInContext(T->cx, ft, (unsigned)(nf ? nf : 0), 0);
    char name[300], iname[320];
    snprintf(name, sizeof name, "%s_body%d", k->name, T->npar++);
    snprintf(iname, sizeof iname, "%s_impl", name);

    /* the kernel's state, back after the outlined functions */
    LLVMValueRef kfn = T->fn, *kslots = T->slots, *kbufs = T->bufs;
    LLVMBasicBlockRef kentry = T->entry, kblock = LLVMGetInsertBlock(T->b);
    LLVMValueRef wrapper = NULL, impl = NULL;
    bool ok = false;

    ft[nf] = T->i64;
    ft[nf + 1] = T->i64;
    LLVMTypeRef ity = LLVMFunctionType(T->voidt, ft, (unsigned)nf + 2, 0);
    LLVMTypeRef wargs[3] = { T->ptr, T->i64, T->i64 };
    LLVMTypeRef wty = LLVMFunctionType(T->voidt, wargs, 3, 0);
    T->slots = NULL;
    T->bufs = calloc((size_t)k->nbufs + 1, sizeof *T->bufs);
    if (!T->bufs) { fail(T, "out of memory"); goto done; }
    if (!new_function(T, iname, ity, &impl) || !new_function(T, name, wty, &wrapper)) goto done;
    LLVMSetLinkage(impl, LLVMInternalLinkage);
    LLVMSetLinkage(wrapper, LLVMInternalLinkage);
    add_fn_attr(T, impl, "alwaysinline", 0);
    for (int i = 0; i < nbf; i++) {
        buffer_param_attrs(T, impl, (unsigned)i, &k->bufs[fidx[i]]);
        T->bufs[fidx[i]] = LLVMGetParam(impl, (unsigned)i);
    }
    for (int i = nbf; i < nf; i++) {
        const char *vn = k->vars[fidx[i]].name;
        LLVMSetValueName2(LLVMGetParam(impl, (unsigned)i), vn, strlen(vn));
    }
    LLVMValueRef lo = LLVMGetParam(impl, (unsigned)nf), hi = LLVMGetParam(impl, (unsigned)nf + 1);
    LLVMSetValueName2(lo, "lo", 2);
    LLVMSetValueName2(hi, "hi", 2);

    /* impl: for (f = lo; f < hi; f++) { loop variables from f; innermost body } */
    if (!begin_function(T, impl)) goto done;
    for (int i = nbf; i < nf; i++) LLVMBuildStore(T->b, LLVMGetParam(impl, (unsigned)i), T->slots[fidx[i]]);
    LLVMValueRef fslot = LLVMBuildAlloca(T->b, T->i64, "f");
    LLVMBuildStore(T->b, lo, fslot);
    LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(T->cx, impl, "par.cond");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(T->cx, impl, "par.body");
    LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(T->cx, impl, "par.end");
    LLVMBuildBr(T->b, head);
    LLVMPositionBuilderAtEnd(T->b, head);
    LLVMValueRef f = LLVMBuildLoad2(T->b, T->i64, fslot, "f");
    LLVMBuildCondBr(T->b, LLVMBuildICmp(T->b, LLVMIntSLT, f, hi, ""), body, exit);
    LLVMPositionBuilderAtEnd(T->b, body);
    int64_t stride = total;
    for (int i = 0; i < nl; i++) {
        stride /= loops[i]->extent;
        LLVMValueRef v = f;
        if (i > 0 || stride > 1) {
            if (stride > 1) v = LLVMBuildUDiv(T->b, v, LLVMConstInt(T->i64, (unsigned long long)stride, 0), "");
            if (i > 0) v = LLVMBuildURem(T->b, v, LLVMConstInt(T->i64, (unsigned long long)loops[i]->extent, 0), "");
        }
        CType lt = CT_I64;
        var_slot(T, loops[i]->var, &lt);
        LLVMBuildStore(T->b, conv(T, (Val){ v, CT_I64 }, lt).v, T->slots[loops[i]->var]);
    }
    T->in_par = true;
    bool bodyok = translate_block(T, &loops[nl - 1]->body);
    T->in_par = false;
    if (!bodyok) goto done;
    f = LLVMBuildLoad2(T->b, T->i64, fslot, "");
    LLVMBuildStore(T->b, LLVMBuildNSWAdd(T->b, f, LLVMConstInt(T->i64, 1, 0), ""), fslot);
    LLVMBuildBr(T->b, head);
    LLVMPositionBuilderAtEnd(T->b, exit);
    LLVMBuildRetVoid(T->b);

    /* wrapper: unpack the context, call impl */
    LLVMValueRef ctx = LLVMGetParam(wrapper, 0);
    LLVMSetValueName2(ctx, "ctx", 3);
    LLVMPositionBuilderAtEnd(T->b, LLVMAppendBasicBlockInContext(T->cx, wrapper, "entry"));
    for (int i = 0; i < nf; i++) {
        LLVMValueRef fp = LLVMBuildStructGEP2(T->b, st, ctx, (unsigned)i, "");
        vals[i] = LLVMBuildLoad2(T->b, ft[i], fp, "");
    }
    vals[nf] = LLVMGetParam(wrapper, 1);
    vals[nf + 1] = LLVMGetParam(wrapper, 2);
    LLVMBuildCall2(T->b, ity, impl, vals, (unsigned)nf + 2, "");
    LLVMBuildRetVoid(T->b);
    ok = true;

done:
    free(T->slots);
    free(T->bufs);
    T->fn = kfn;
    T->slots = kslots;
    T->bufs = kbufs;
    T->entry = kentry;
    LLVMPositionBuilderAtEnd(T->b, kblock);
    if (ok) {
        /* the kernel: the context in an entry-block alloca, filled here */
        LLVMBuilderRef ab = LLVMCreateBuilderInContext(T->cx);
        LLVMValueRef first = LLVMGetFirstInstruction(kentry);
        if (first) LLVMPositionBuilderBefore(ab, first);
        else LLVMPositionBuilderAtEnd(ab, kentry);
        LLVMValueRef cv = LLVMBuildAlloca(ab, st, "ctx");
        LLVMDisposeBuilder(ab);
        for (int i = 0; i < nf; i++) {
            LLVMValueRef v = i < nbf ? T->bufs[fidx[i]] : LLVMBuildLoad2(T->b, ft[i], T->slots[fidx[i]], "");
            LLVMBuildStore(T->b, v, LLVMBuildStructGEP2(T->b, st, cv, (unsigned)i, ""));
        }
        LLVMValueRef args[3] = { wrapper, cv, LLVMConstInt(T->i64, (unsigned long long)total, 0) };
        LLVMTypeRef pargs[3] = { T->ptr, T->ptr, T->i64 };
        LLVMBuildCall2(T->b, LLVMFunctionType(T->voidt, pargs, 3, 0), T->pfor, args, 3, "");
    }
    free(fidx);
    free(ft);
    free(vals);
    free(fv);
    free(ub);
    return ok ? 1 : 0;
}

static bool translate_kernel(Tr *T, const L3Kernel *k, LLVMValueRef *fnout)
{
    T->k = k;
    if (!k->name) {
        fail(T, "a kernel without a name");
        return false;
    }
    if (k->nbufs < 0 || k->nvars < 0 || (k->nbufs > 0 && !k->bufs) || (k->nvars > 0 && !k->vars)) {
        fail(T, "%s: malformed kernel", k->name ? k->name : "?");
        return false;
    }
    LLVMTypeRef *pt = calloc((size_t)k->nbufs + 1, sizeof *pt);
    if (!pt) { fail(T, "out of memory"); return false; }
    for (int i = 0; i < k->nbufs; i++) pt[i] = T->ptr;
    LLVMValueRef fn;
    bool ok = new_function(T, k->name, LLVMFunctionType(T->voidt, pt, (unsigned)k->nbufs, 0), &fn);
    free(pt);
    if (!ok) return false;
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    for (int i = 0; i < k->nbufs; i++) buffer_param_attrs(T, fn, (unsigned)i, &k->bufs[i]);
    T->bufs = calloc((size_t)k->nbufs + 1, sizeof *T->bufs);
    if (!T->bufs) { fail(T, "out of memory"); return false; }
    for (int i = 0; i < k->nbufs; i++) T->bufs[i] = LLVMGetParam(fn, (unsigned)i);
    T->npar = 0;
    T->in_par = false;
    if (begin_function(T, fn) && translate_block(T, &k->body)) LLVMBuildRetVoid(T->b);
    free(T->slots);
    T->slots = NULL;
    free(T->bufs);
    T->bufs = NULL;
    *fnout = fn;
    return !T->failed;
}

static bool translate_entry(Tr *T, const L3Module *m, const L3Entry *e, LLVMValueRef *kfns)
{
    LLVMValueRef fn;
    if (!new_function(T, e->name, LLVMFunctionType(T->voidt, &T->ptr, 1, 0), &fn)) return false;
    LLVMValueRef t = LLVMGetParam(fn, 0);
    LLVMSetValueName2(t, "t", 1);
    LLVMPositionBuilderAtEnd(T->b, LLVMAppendBasicBlockInContext(T->cx, fn, "entry"));
    for (int j = 0; j < e->nkernels; j++) {
        int ki = e->kernels[j];
        if (ki < 0 || ki >= m->nkernels) {
            fail(T, "%s: calls kernel %d of %d", e->name, ki, m->nkernels);
            return false;
        }
        const L3Kernel *k = &m->kernels[ki];
        LLVMValueRef *args = calloc((size_t)k->nbufs + 1, sizeof *args);
        LLVMTypeRef *pt = calloc((size_t)k->nbufs + 1, sizeof *pt);
        if (!args || !pt) {
            free(args);
            free(pt);
            fail(T, "out of memory");
            return false;
        }
        bool ok = true;
        for (int b = 0; b < k->nbufs; b++) {
            int tensor = k->bufs[b].tensor;
            if (tensor < 0 || tensor >= m->ntensors) {
                fail(T, "%s: buffer %s is tensor %d of %d", k->name, k->bufs[b].name, tensor, m->ntensors);
                ok = false;
                break;
            }
            LLVMValueRef idx = LLVMConstInt(T->i64, (unsigned long long)tensor, 0);
            LLVMValueRef slot = LLVMBuildInBoundsGEP2(T->b, T->ptr, t, &idx, 1, "");
            args[b] = LLVMBuildLoad2(T->b, T->ptr, slot, k->bufs[b].name);
            pt[b] = T->ptr;
        }
        if (ok)
            LLVMBuildCall2(T->b, LLVMFunctionType(T->voidt, pt, (unsigned)k->nbufs, 0), kfns[ki], args,
                           (unsigned)k->nbufs, "");
        free(args);
        free(pt);
        if (!ok) return false;
    }
    LLVMBuildRetVoid(T->b);
    return true;
}

/* The whole module in cx, verified, for the target machine tm (no
 * optimisation yet).  NULL with the message in err. */
LLVMModuleRef l3_llvm_translate(LLVMContextRef cx, const L3Module *m, LLVMTargetMachineRef tm, const char *cpu,
                                const char *features, char *err, size_t errlen)
{
    Tr T = { 0 };
    T.cx = cx;
    T.err = err;
    T.errlen = errlen;
    T.cpu = cpu;
    T.features = features;
    T.mod = LLVMModuleCreateWithNameInContext(m->name ? m->name : "net", cx);
    T.b = LLVMCreateBuilderInContext(cx);
    T.i1 = LLVMInt1TypeInContext(cx);
    T.i32 = LLVMInt32TypeInContext(cx);
    T.i64 = LLVMInt64TypeInContext(cx);
    T.f32 = LLVMFloatTypeInContext(cx);
    T.ptr = LLVMPointerTypeInContext(cx, 0);
    T.voidt = LLVMVoidTypeInContext(cx);
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(T.mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(T.mod, td);
    LLVMDisposeTargetData(td);

    declare_libm(&T, "tanhf");
    declare_libm(&T, "expm1f");
    LLVMTypeRef pargs[3] = { T.ptr, T.ptr, T.i64 };   /* void netc_parallel_for(fn, ctx, n): runtime/pool.h */
    T.pfor = LLVMAddFunction(T.mod, "netc_parallel_for", LLVMFunctionType(T.voidt, pargs, 3, 0));
    add_fn_attr(&T, T.pfor, "nounwind", 0);
    LLVMValueRef *kfns = calloc((size_t)(m->nkernels > 0 ? m->nkernels : 1), sizeof *kfns);
    if (!kfns) fail(&T, "out of memory");
    if (m->nkernels > 0 && !m->kernels) fail(&T, "malformed module: no kernel array");
    if (m->nentries > 0 && !m->entries) fail(&T, "malformed module: no entry array");
    for (int i = 0; !T.failed && i < m->nkernels; i++) translate_kernel(&T, &m->kernels[i], &kfns[i]);
    for (int i = 0; !T.failed && i < m->nentries; i++) translate_entry(&T, m, &m->entries[i], kfns);
    free(kfns);
    LLVMDisposeBuilder(T.b);
    if (!T.failed) {
        char *msg = NULL;
        if (LLVMVerifyModule(T.mod, LLVMReturnStatusAction, &msg)) {
            snprintf(err, errlen, "LLVM verification failed: %s", msg ? msg : "?");
            T.failed = true;
        }
        LLVMDisposeMessage(msg);
    }
    if (T.failed) {
        LLVMDisposeModule(T.mod);
        return NULL;
    }
    return T.mod;
}
