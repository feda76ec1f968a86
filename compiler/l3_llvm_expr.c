/* l3_llvm_expr.c — the LLVM backend's expressions (l3_llvm_tr.h): L3
 * expressions to LLVM IR with the C printer's C semantics (see l3_llvm.c's
 * header comment for the rules), their types and conversions, intrinsics and
 * the libm calls. */
#define _POSIX_C_SOURCE 200809L
#include "l3_llvm_tr.h"
#include "l3_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tr_fail(Tr *T, const char *fmt, ...)
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

bool tr_storage(L3Type t, CType *out)   /* the C type a declaration of L3 type t has */
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

LLVMTypeRef tr_lty(Tr *T, CType t)
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
Val tr_conv(Tr *T, Val x, CType to)
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
        if (x.t == CT_F32) v = to == CT_U64 ? LLVMBuildFPToUI(T->b, v, tr_lty(T, to), "") : LLVMBuildFPToSI(T->b, v, tr_lty(T, to), "");
        else if (x.t == CT_I1) v = LLVMBuildZExt(T->b, v, tr_lty(T, to), "");
        else v = LLVMBuildIntCast2(T->b, v, tr_lty(T, to), x.t != CT_U64, "");   /* int64 <-> uint64: the same bits */
        break;
    case CT_I1:
        if (x.t == CT_F32) v = LLVMBuildFCmp(T->b, LLVMRealUNE, v, LLVMConstReal(T->f32, 0.0), "");
        else v = LLVMBuildICmp(T->b, LLVMIntNE, v, LLVMConstInt(tr_lty(T, x.t), 0, 0), "");
        break;
    }
    return (Val){ v, to };
}

CType tr_common(CType a, CType b)   /* the usual arithmetic conversions (after promotion) */
{
    if (a == CT_F32 || b == CT_F32) return CT_F32;
    if (a == CT_U64 || b == CT_U64) return CT_U64;
    if (a == CT_I64 || b == CT_I64) return CT_I64;
    return CT_I32;
}

/* The C type of e, as tr_expr() will produce it (no validation here). */
static CType type_of(const Tr *T, const L3Expr *e)
{
    CType t = CT_I64;
    if (!e) return t;
    switch (e->kind) {
    case L3E_INT: return e->type == L3_U64 ? CT_U64 : CT_I64;
    case L3E_FLOAT: return CT_F32;
    case L3E_VAR:
        if (e->var >= 0 && e->var < T->k->nvars) tr_storage(T->k->vars[e->var].type, &t);
        return t;
    case L3E_LOAD:
        if (e->buf >= 0 && e->buf < T->k->nbufs) tr_storage(T->k->bufs[e->buf].elem, &t);
        return t;
    case L3E_BIN:
        if (e->op >= L3_LT && e->op <= L3_OR) return CT_I1;
        if ((e->op == L3_MIN || e->op == L3_MAX) && e->type == L3_F32) return CT_F32;
        if (e->op == L3_SHR) { t = type_of(T, e->a); return t == CT_I1 ? CT_I32 : t; }   /* the promoted left operand */
        return tr_common(type_of(T, e->a), type_of(T, e->b));
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
        return a == CT_I1 && b == CT_I1 ? CT_I1 : tr_common(a, b);
    }
    case L3E_FMA: return CT_F32;
    case L3E_CAST: tr_storage(e->type, &t); return t;
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
        tr_fail(T, "LLVM has no intrinsic %s", name);
        return NULL;
    }
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(T->mod, id, &ty, 1);
    LLVMTypeRef fty = LLVMIntrinsicGetType(T->cx, id, &ty, 1);
    return LLVMBuildCall2(T->b, fty, fn, args, n, "");
}

void tr_fn_attr(Tr *T, LLVMValueRef fn, const char *name, uint64_t val)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    if (kind) LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(T->cx, kind, val));
}

/* float f(float) from libm (no LLVM intrinsic in LLVM 16): tanhf, expm1f.
 * Declared without side effects (errno is never read), so loops calling
 * them can still be vectorised or hoisted. */
LLVMValueRef tr_declare_libm(Tr *T, const char *name)
{
    LLVMTypeRef fty = LLVMFunctionType(T->f32, &T->f32, 1, 0);
    LLVMValueRef fn = LLVMAddFunction(T->mod, name, fty);
    tr_fn_attr(T, fn, "nounwind", 0);
    tr_fn_attr(T, fn, "willreturn", 0);
    tr_fn_attr(T, fn, "memory", 0);   /* memory(none) */
    return fn;
}

static LLVMValueRef call_libm(Tr *T, const char *name, LLVMValueRef x)
{
    LLVMValueRef fn = LLVMGetNamedFunction(T->mod, name);
    if (!fn) {
        tr_fail(T, "%s is not declared", name);
        return NULL;
    }
    return LLVMBuildCall2(T->b, LLVMFunctionType(T->f32, &T->f32, 1, 0), fn, &x, 1, "");
}

/* ---- expressions ---------------------------------------------------------------------------- */

LLVMValueRef tr_truth(Tr *T, const L3Expr *e)
{
    return tr_conv(T, tr_expr(T, e), CT_I1).v;
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
    else if (op == L3_AND) va = tr_truth(T, b);
    else va = tr_conv(T, tr_expr(T, a), rt).v;
    ea = LLVMGetInsertBlock(T->b);
    LLVMBuildBr(T->b, end);
    LLVMPositionBuilderAtEnd(T->b, bb);
    if (op == L3_OR) vb = tr_truth(T, b);
    else if (op == L3_AND) vb = LLVMConstInt(T->i1, 0, 0);
    else vb = tr_conv(T, tr_expr(T, b), rt).v;
    eb = LLVMGetInsertBlock(T->b);
    LLVMBuildBr(T->b, end);
    LLVMPositionBuilderAtEnd(T->b, end);
    if (!va || !vb) return BAD;
    LLVMValueRef phi = LLVMBuildPhi(T->b, tr_lty(T, rt), "");
    LLVMValueRef vals[2] = { va, vb };
    LLVMBasicBlockRef blocks[2] = { ea, eb };
    LLVMAddIncoming(phi, vals, blocks, 2);
    return (Val){ phi, rt };
}

LLVMValueRef tr_element_ptr(Tr *T, int buf, const L3Expr *index, LLVMTypeRef *elem)
{
    if (buf < 0 || buf >= T->k->nbufs) {
        tr_fail(T, "%s: buffer %d out of range", T->k->name, buf);
        return NULL;
    }
    CType et;
    if (!tr_storage(T->k->bufs[buf].elem, &et)) {
        tr_fail(T, "%s: buffer %s has an unknown element type %d", T->k->name, T->k->bufs[buf].name,
             (int)T->k->bufs[buf].elem);
        return NULL;
    }
    Val i = tr_expr(T, index);
    if (!i.v) return NULL;
    if (i.t == CT_F32) {
        tr_fail(T, "%s: buffer %s indexed with a float", T->k->name, T->k->bufs[buf].name);
        return NULL;
    }
    i = tr_conv(T, i, CT_I64);
    *elem = tr_lty(T, et);
    return LLVMBuildInBoundsGEP2(T->b, *elem, T->bufs[buf], &i.v, 1, "");
}

static Val translate_bin(Tr *T, const L3Expr *e)
{
    if (e->op == L3_AND || e->op == L3_OR) {
        LLVMValueRef a = tr_truth(T, e->a);
        if (!a) return BAD;
        if (may_trap(e->b)) return lazy(T, a, e->a, e->b, CT_I1, (int)e->op);
        LLVMValueRef b = tr_truth(T, e->b);
        if (!b) return BAD;
        return (Val){ e->op == L3_AND ? LLVMBuildAnd(T->b, a, b, "") : LLVMBuildOr(T->b, a, b, ""), CT_I1 };
    }
    Val a = tr_expr(T, e->a), b = tr_expr(T, e->b);
    if (!a.v || !b.v) return BAD;
    if (e->op == L3_SHR || e->op == L3_XOR) {
        CType ct = e->op == L3_SHR ? (a.t == CT_I1 ? CT_I32 : a.t) : tr_common(a.t, b.t);
        if (ct == CT_F32 || b.t == CT_F32) {
            tr_fail(T, "%s: %s of a float", T->k->name, e->op == L3_SHR ? ">>" : "^");
            return BAD;
        }
        a = tr_conv(T, a, ct);
        b = tr_conv(T, b, ct);   /* C converts the shift count on its own; LLVM wants one type */
        LLVMValueRef r = e->op == L3_XOR ? LLVMBuildXor(T->b, a.v, b.v, "")
                       : ct == CT_U64 ? LLVMBuildLShr(T->b, a.v, b.v, "") : LLVMBuildAShr(T->b, a.v, b.v, "");
        return (Val){ r, ct };
    }
    CType ct = tr_common(a.t, b.t);
    if ((e->op == L3_MIN || e->op == L3_MAX) && e->type == L3_F32) ct = CT_F32;   /* fminf / fmaxf */
    a = tr_conv(T, a, ct);
    b = tr_conv(T, b, ct);
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
        tr_fail(T, "%s: unary operator %d used as a binary one", T->k->name, (int)e->op);
        return BAD;
    }
    if (!r) {
        tr_fail(T, "%s: unknown binary operator %d", T->k->name, (int)e->op);
        return BAD;
    }
    return (Val){ r, ct };
}

static Val translate_un(Tr *T, const L3Expr *e)
{
    Val a = tr_expr(T, e->a);
    if (!a.v) return BAD;
    LLVMBuilderRef B = T->b;
    const char *intr = NULL, *lib = NULL;
    switch (e->op) {
    case L3_NEG:
        if (a.t == CT_F32) return (Val){ LLVMBuildFNeg(B, a.v, ""), CT_F32 };
        if (a.t == CT_I1) a = tr_conv(T, a, CT_I32);
        return (Val){ a.t == CT_U64 ? LLVMBuildNeg(B, a.v, "") : LLVMBuildNSWNeg(B, a.v, ""), a.t };
    case L3_NOT: {   /* !a: a == 0 */
        LLVMValueRef c = tr_conv(T, a, CT_I1).v;
        return (Val){ LLVMBuildXor(B, c, LLVMConstInt(T->i1, 1, 0), ""), CT_I1 };
    }
    case L3_ABS:
        if (e->type != L3_F32) {   /* llabs */
            a = tr_conv(T, a, CT_I64);
            LLVMValueRef args[2] = { a.v, LLVMConstInt(T->i1, 1, 0) };
            LLVMValueRef r = intrinsic(T, "llvm.abs", T->i64, args, 2);
            return r ? (Val){ r, CT_I64 } : BAD;
        }
        intr = "llvm.fabs";
        break;
    case L3_MIX64: {   /* splitmix64's output function on the one value a */
        LLVMValueRef z = tr_conv(T, a, CT_U64).v;
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
        tr_fail(T, "%s: binary operator %d used as a unary one", T->k->name, (int)e->op);
        return BAD;
    }
    if (!intr && !lib) {
        tr_fail(T, "%s: unknown unary operator %d", T->k->name, (int)e->op);
        return BAD;
    }
    a = tr_conv(T, a, CT_F32);
    LLVMValueRef r = intr ? intrinsic(T, intr, T->f32, &a.v, 1) : call_libm(T, lib, a.v);
    return r ? (Val){ r, CT_F32 } : BAD;
}

Val tr_expr(Tr *T, const L3Expr *e)
{
    if (T->failed) return BAD;
    if (!e) {
        tr_fail(T, "%s: missing expression", T->k->name);
        return BAD;
    }
    switch (e->kind) {
    case L3E_INT:
        if (e->type == L3_U64) return (Val){ LLVMConstInt(T->i64, (unsigned long long)e->i, 0), CT_U64 };
        return (Val){ LLVMConstInt(T->i64, (unsigned long long)e->i, 1), CT_I64 };
    case L3E_FLOAT: return (Val){ LLVMConstReal(T->f32, (double)(float)e->f), CT_F32 };
    case L3E_VAR: {
        CType t;
        if (e->var < 0 || e->var >= T->k->nvars || !tr_storage(T->k->vars[e->var].type, &t)) {
            tr_fail(T, "%s: bad variable %d", T->k->name, e->var);
            return BAD;
        }
        return (Val){ LLVMBuildLoad2(T->b, tr_lty(T, t), T->slots[e->var], ""), t };
    }
    case L3E_LOAD: {
        LLVMTypeRef et;
        LLVMValueRef p = tr_element_ptr(T, e->buf, e->a, &et);
        if (!p) return BAD;
        CType t = CT_F32;
        tr_storage(T->k->bufs[e->buf].elem, &t);
        return (Val){ LLVMBuildLoad2(T->b, et, p, ""), t };
    }
    case L3E_BIN: return translate_bin(T, e);
    case L3E_UN: return translate_un(T, e);
    case L3E_SELECT: {
        LLVMValueRef c = tr_truth(T, e->a);
        if (!c) return BAD;
        CType rt = type_of(T, e);
        if (may_trap(e->b) || may_trap(e->c)) return lazy(T, c, e->b, e->c, rt, 0);
        Val a = tr_conv(T, tr_expr(T, e->b), rt), b = tr_conv(T, tr_expr(T, e->c), rt);
        if (!a.v || !b.v) return BAD;
        return (Val){ LLVMBuildSelect(T->b, c, a.v, b.v, ""), rt };
    }
    case L3E_FMA: {
        Val a = tr_conv(T, tr_expr(T, e->a), CT_F32), b = tr_conv(T, tr_expr(T, e->b), CT_F32),
            c = tr_conv(T, tr_expr(T, e->c), CT_F32);
        if (!a.v || !b.v || !c.v) return BAD;
        LLVMValueRef args[3] = { a.v, b.v, c.v };
        LLVMValueRef r = intrinsic(T, "llvm.fmuladd", T->f32, args, 3);
        return r ? (Val){ r, CT_F32 } : BAD;
    }
    case L3E_CAST: {
        CType t;
        if (!tr_storage(e->type, &t)) {
            tr_fail(T, "%s: cast to unknown type %d", T->k->name, (int)e->type);
            return BAD;
        }
        return tr_conv(T, tr_expr(T, e->a), t);
    }
    }
    tr_fail(T, "%s: unknown expression kind %d", T->k->name, (int)e->kind);
    return BAD;
}

