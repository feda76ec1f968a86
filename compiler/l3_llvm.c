/* l3_llvm.c — the LLVM backend: L3 loop IR to LLVM IR with the LLVM-C API,
 * O3 for the host CPU, then ORC LLJIT or an object / IR / assembly file.
 *
 * Expressions (l3_llvm_expr.c, through l3_llvm_tr.h) follow the C
 * printer's C semantics exactly.  Every translated
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
#include "l3_llvm_tr.h"

#include "pool.h"

#include <math.h>
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

/* ---- statements ------------------------------------------------------------------------------ */

static bool translate_block(Tr *T, const L3Block *b);

static bool var_slot(Tr *T, int var, CType *t)
{
    if (var < 0 || var >= T->k->nvars || !tr_storage(T->k->vars[var].type, t)) {
        tr_fail(T, "%s: bad variable %d", T->k->name, var);
        return false;
    }
    return true;
}

static int translate_parallel(Tr *T, const L3Stmt *s);

/* for (v = 0; v < extent; v++) body; t is v's C type. */
static bool translate_serial_for(Tr *T, const L3Stmt *s, CType t)
{
    if (t == CT_F32 || (t == CT_I32 && s->extent > INT32_MAX)) {
        tr_fail(T, "%s: loop variable %s cannot count to %lld", T->k->name, T->k->vars[s->var].name,
             (long long)s->extent);
        return false;
    }
    LLVMTypeRef ty = tr_lty(T, t);
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
        tr_fail(T, "%s: missing statement", T->k->name);
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
        Val v = tr_conv(T, tr_expr(T, s->value), t);
        if (!v.v) return false;
        LLVMBuildStore(T->b, v.v, T->slots[s->var]);
        return true;
    }
    case L3S_STORE: {
        LLVMTypeRef et;
        LLVMValueRef p = tr_element_ptr(T, s->buf, s->index, &et);
        if (!p) return false;
        tr_storage(T->k->bufs[s->buf].elem, &t);
        Val v = tr_expr(T, s->value);
        if (!v.v) return false;
        if (s->accumulate) {   /* y[i] += v: y[i] = y[i] + v in the common type */
            Val old = { LLVMBuildLoad2(T->b, et, p, ""), t };
            CType ct = tr_common(t, v.t);
            old = tr_conv(T, old, ct);
            v = tr_conv(T, v, ct);
            v.v = ct == CT_F32 ? LLVMBuildFAdd(T->b, old.v, v.v, "") : LLVMBuildNSWAdd(T->b, old.v, v.v, "");
        }
        v = tr_conv(T, v, t);
        LLVMBuildStore(T->b, v.v, p);
        return true;
    }
    case L3S_IF: {
        LLVMValueRef c = tr_truth(T, s->cond);
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
    tr_fail(T, "%s: unknown statement kind %d", T->k->name, (int)s->kind);
    return false;
}

static bool translate_block(Tr *T, const L3Block *b)
{
    if (b->n > 0 && !b->s) {
        tr_fail(T, "%s: block without statements", T->k->name);
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
    tr_fn_attr(T, fn, "nounwind", 0);
}

static bool new_function(Tr *T, const char *name, LLVMTypeRef fty, LLVMValueRef *out)
{
    if (!name || !*name) {
        tr_fail(T, "a function without a name");
        return false;
    }
    if (LLVMGetNamedFunction(T->mod, name)) {
        tr_fail(T, "two functions are named %s", name);
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
    if (!T->slots) { tr_fail(T, "out of memory"); return false; }
    for (int i = 0; i < k->nvars; i++) {
        CType t;
        if (!tr_storage(k->vars[i].type, &t)) {
            tr_fail(T, "%s: variable %d has an unknown type %d", k->name, i, (int)k->vars[i].type);
            return false;
        }
        T->slots[i] = LLVMBuildAlloca(T->b, tr_lty(T, t), k->vars[i].name ? k->vars[i].name : "");
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
        if (!fv || !ub) { tr_fail(T, "out of memory"); return 0; }
        return -1;
    }
    int64_t total = 1;
    for (int i = 0; i < nl; i++) {
        CType lt;
        if (!var_slot(T, loops[i]->var, &lt)) { free(fv); free(ub); return 0; }
        if (lt == CT_F32 || (lt == CT_I32 && loops[i]->extent > INT32_MAX)) {
            tr_fail(T, "%s: loop variable %s cannot count to %lld", k->name, k->vars[loops[i]->var].name,
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
        tr_fail(T, "out of memory");
        return 0;
    }
    for (int b = 0; b < k->nbufs; b++)
        if (ub[b]) { fidx[nf] = b; ft[nf++] = T->ptr; }
    int nbf = nf;
    for (int v = 0; v < k->nvars; v++)
        if (fv[v]) {
            CType t = CT_I64;
            tr_storage(k->vars[v].type, &t);
            fidx[nf] = v;
            ft[nf++] = tr_lty(T, t);
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
    if (!T->bufs) { tr_fail(T, "out of memory"); goto done; }
    if (!new_function(T, iname, ity, &impl) || !new_function(T, name, wty, &wrapper)) goto done;
    LLVMSetLinkage(impl, LLVMInternalLinkage);
    LLVMSetLinkage(wrapper, LLVMInternalLinkage);
    tr_fn_attr(T, impl, "alwaysinline", 0);
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
        LLVMBuildStore(T->b, tr_conv(T, (Val){ v, CT_I64 }, lt).v, T->slots[loops[i]->var]);
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
        tr_fail(T, "a kernel without a name");
        return false;
    }
    if (k->nbufs < 0 || k->nvars < 0 || (k->nbufs > 0 && !k->bufs) || (k->nvars > 0 && !k->vars)) {
        tr_fail(T, "%s: malformed kernel", k->name ? k->name : "?");
        return false;
    }
    LLVMTypeRef *pt = calloc((size_t)k->nbufs + 1, sizeof *pt);
    if (!pt) { tr_fail(T, "out of memory"); return false; }
    for (int i = 0; i < k->nbufs; i++) pt[i] = T->ptr;
    LLVMValueRef fn;
    bool ok = new_function(T, k->name, LLVMFunctionType(T->voidt, pt, (unsigned)k->nbufs, 0), &fn);
    free(pt);
    if (!ok) return false;
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    for (int i = 0; i < k->nbufs; i++) buffer_param_attrs(T, fn, (unsigned)i, &k->bufs[i]);
    T->bufs = calloc((size_t)k->nbufs + 1, sizeof *T->bufs);
    if (!T->bufs) { tr_fail(T, "out of memory"); return false; }
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
            tr_fail(T, "%s: calls kernel %d of %d", e->name, ki, m->nkernels);
            return false;
        }
        const L3Kernel *k = &m->kernels[ki];
        LLVMValueRef *args = calloc((size_t)k->nbufs + 1, sizeof *args);
        LLVMTypeRef *pt = calloc((size_t)k->nbufs + 1, sizeof *pt);
        if (!args || !pt) {
            free(args);
            free(pt);
            tr_fail(T, "out of memory");
            return false;
        }
        bool ok = true;
        for (int b = 0; b < k->nbufs; b++) {
            int tensor = k->bufs[b].tensor;
            if (tensor < 0 || tensor >= m->ntensors) {
                tr_fail(T, "%s: buffer %s is tensor %d of %d", k->name, k->bufs[b].name, tensor, m->ntensors);
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

    tr_declare_libm(&T, "tanhf");
    tr_declare_libm(&T, "expm1f");
    LLVMTypeRef pargs[3] = { T.ptr, T.ptr, T.i64 };   /* void netc_parallel_for(fn, ctx, n): runtime/pool.h */
    T.pfor = LLVMAddFunction(T.mod, "netc_parallel_for", LLVMFunctionType(T.voidt, pargs, 3, 0));
    tr_fn_attr(&T, T.pfor, "nounwind", 0);
    LLVMValueRef *kfns = calloc((size_t)(m->nkernels > 0 ? m->nkernels : 1), sizeof *kfns);
    if (!kfns) tr_fail(&T, "out of memory");
    if (m->nkernels > 0 && !m->kernels) tr_fail(&T, "malformed module: no kernel array");
    if (m->nentries > 0 && !m->entries) tr_fail(&T, "malformed module: no entry array");
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
