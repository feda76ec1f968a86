/* l3_llvm_jit.c — the LLVM backend's host side (l3_llvm.h): the target
 * machine for this CPU, the O3 pipeline, the ORC LLJIT and the object /
 * IR / assembly files.  The translation of L3 into an LLVM module is
 * l3_llvm.c (l3_llvm_translate, declared in l3_llvm_internal.h). */
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

/* ---- target, optimisation -------------------------------------------------------------------- */

typedef struct {
    LLVMTargetMachineRef tm;
    char *cpu, *features;
} Host;

static bool host_new(Host *h, bool jit, char *err, size_t errlen)
{
    static bool initialised;
    memset(h, 0, sizeof *h);
    if (!initialised) {
        if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter() || LLVMInitializeNativeAsmParser()) {
            snprintf(err, errlen, "LLVM has no native target for this machine");
            return false;
        }
        initialised = true;
    }
    char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
    LLVMTargetRef target;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        snprintf(err, errlen, "LLVM target %s: %s", triple, msg ? msg : "?");
        LLVMDisposeMessage(msg);
        LLVMDisposeMessage(triple);
        return false;
    }
    h->cpu = LLVMGetHostCPUName();
    h->features = LLVMGetHostCPUFeatures();
    /* The JIT keeps LLVM's JIT code model (large on x86-64: RuntimeDyld may
     * place sections and libm more than 2 GiB apart); files are PIC. */
    h->tm = LLVMCreateTargetMachine(target, triple, h->cpu, h->features, LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                    jit ? LLVMCodeModelJITDefault : LLVMCodeModelDefault);
    LLVMDisposeMessage(triple);
    if (!h->tm) {
        snprintf(err, errlen, "LLVM cannot make a target machine for %s", h->cpu);
        LLVMDisposeMessage(h->cpu);
        LLVMDisposeMessage(h->features);
        return false;
    }
    return true;
}

static void host_free(Host *h)   /* h->tm may already be consumed (set to NULL) */
{
    if (h->tm) LLVMDisposeTargetMachine(h->tm);
    LLVMDisposeMessage(h->cpu);
    LLVMDisposeMessage(h->features);
    memset(h, 0, sizeof *h);
}

static void error_message(LLVMErrorRef e, const char *what, char *err, size_t errlen)
{
    char *msg = LLVMGetErrorMessage(e);
    snprintf(err, errlen, "%s: %s", what, msg ? msg : "?");
    LLVMDisposeErrorMessage(msg);
}

static bool optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, char *err, size_t errlen)
{
    LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(o, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(o, 1);
    LLVMPassBuilderOptionsSetLoopInterleaving(o, 1);
    LLVMPassBuilderOptionsSetLoopUnrolling(o, 1);
    LLVMErrorRef e = LLVMRunPasses(mod, "default<O3>", tm, o);
    LLVMDisposePassBuilderOptions(o);
    if (e) {
        error_message(e, "LLVM optimisation", err, errlen);
        return false;
    }
    return true;
}

/* ---- JIT ------------------------------------------------------------------------------------- */

struct L3Llvm {
    LLVMOrcLLJITRef jit;
    int n;
    char **names;
    NetcEntry *fns;
};

void l3_llvm_free(L3Llvm *j)
{
    if (!j) return;
    if (j->jit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->jit);
        if (e) LLVMConsumeError(e);
    }
    for (int i = 0; i < j->n; i++) free(j->names[i]);
    free(j->names);
    free(j->fns);
    free(j);
}

/* The C library functions generated code may call (libm for the math that
 * has no instruction; memset/memcpy from loop idioms), as absolute symbols,
 * so that the JIT needs no symbol table of the executable.  The process
 * search generator stays as a fallback (it needs -rdynamic for symbols of
 * the executable itself). */
static LLVMErrorRef define_libc(LLVMOrcLLJITRef jit)
{
    static const struct { const char *name; void (*fn)(void); } syms[] = {
#define SYM(f) { #f, (void (*)(void))f }
        SYM(expf), SYM(logf), SYM(tanhf), SYM(expm1f), SYM(fmodf), SYM(floorf), SYM(sqrtf), SYM(fabsf),
        SYM(fminf), SYM(fmaxf), SYM(fmaf), SYM(memset), SYM(memcpy), SYM(memmove),
        { "netc_parallel_for", (void (*)(void))netc_parallel_for },   /* the runtime's thread pool */
#undef SYM
    };
    enum { N = sizeof syms / sizeof syms[0] };
    __typeof__(*(LLVMOrcCSymbolMapPairs)0) pairs[N];
    for (int i = 0; i < N; i++) {
        uintptr_t a;
        memcpy(&a, &syms[i].fn, sizeof a);
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(jit, syms[i].name);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)a;
        pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[i].Sym.Flags.TargetFlags = 0;
    }
    LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, N);
    LLVMErrorRef e = LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(jit), mu);
    if (e) LLVMOrcDisposeMaterializationUnit(mu);
    return e;
}

L3Llvm *l3_llvm_jit(const L3Module *m, char *err, size_t errlen)
{
    if (!m) {
        snprintf(err, errlen, "no module");
        return NULL;
    }
    Host h;
    if (!host_new(&h, true, err, errlen)) return NULL;
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMModuleRef mod = l3_llvm_translate(LLVMOrcThreadSafeContextGetContext(tsc), m, h.tm, h.cpu, h.features, err, errlen);
    if (!mod || !optimise(mod, h.tm, err, errlen)) {
        if (mod) LLVMDisposeModule(mod);
        LLVMOrcDisposeThreadSafeContext(tsc);
        host_free(&h);
        return NULL;
    }
    L3Llvm *j = calloc(1, sizeof *j);
    if (j) {
        j->names = calloc((size_t)m->nentries + 1, sizeof *j->names);
        j->fns = calloc((size_t)m->nentries + 1, sizeof *j->fns);
    }
    if (!j || !j->names || !j->fns) {
        snprintf(err, errlen, "out of memory");
        LLVMDisposeModule(mod);
        LLVMOrcDisposeThreadSafeContext(tsc);
        host_free(&h);
        l3_llvm_free(j);
        return NULL;
    }
    /* The JIT compiles with the same target machine (it takes it over). */
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(h.tm));
    h.tm = NULL;
    host_free(&h);
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->jit, builder);
    if (e) {
        j->jit = NULL;
        error_message(e, "LLVM JIT", err, errlen);
        goto fail;
    }
    if ((e = define_libc(j->jit))) {
        error_message(e, "LLVM JIT symbols", err, errlen);
        goto fail;
    }
    LLVMOrcDefinitionGeneratorRef gen;
    if ((e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL))) {
        error_message(e, "LLVM JIT process symbols", err, errlen);
        goto fail;
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
    mod = NULL;
    LLVMOrcDisposeThreadSafeContext(tsc);
    tsc = NULL;
    if ((e = LLVMOrcLLJITAddLLVMIRModule(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), tsm))) {
        error_message(e, "LLVM JIT", err, errlen);
        goto fail;
    }
    /* Look every entry up now: this compiles the module, so that every
     * error shows here rather than at the first l3_llvm_entry. */
    for (int i = 0; i < m->nentries; i++) {
        LLVMOrcExecutorAddress a = 0;
        if ((e = LLVMOrcLLJITLookup(j->jit, &a, m->entries[i].name))) {
            error_message(e, m->entries[i].name, err, errlen);
            goto fail;
        }
        uintptr_t p = (uintptr_t)a;
        j->names[j->n] = strdup(m->entries[i].name);
        if (!j->names[j->n]) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(&j->fns[j->n], &p, sizeof p);
        j->n++;
    }
    return j;
fail:
    if (mod) LLVMDisposeModule(mod);
    if (tsc) LLVMOrcDisposeThreadSafeContext(tsc);
    l3_llvm_free(j);
    return NULL;
}

NetcEntry l3_llvm_entry(L3Llvm *j, const char *name)
{
    if (!j || !name) return NULL;
    for (int i = 0; i < j->n; i++)
        if (strcmp(j->names[i], name) == 0) return j->fns[i];
    return NULL;
}

/* ---- files ----------------------------------------------------------------------------------- */

int l3_llvm_emit(const L3Module *m, const char *path, int kind, char *err, size_t errlen)
{
    if (!m || !path) {
        snprintf(err, errlen, "no module or no path");
        return -1;
    }
    if (kind != L3_LLVM_OBJECT && kind != L3_LLVM_IR && kind != L3_LLVM_ASM) {
        snprintf(err, errlen, "unknown output kind %d", kind);
        return -1;
    }
    Host h;
    if (!host_new(&h, false, err, errlen)) return -1;
    LLVMContextRef cx = LLVMContextCreate();
    LLVMModuleRef mod = l3_llvm_translate(cx, m, h.tm, h.cpu, h.features, err, errlen);
    int rc = -1;
    if (mod && optimise(mod, h.tm, err, errlen)) {
        char *msg = NULL;
        LLVMBool bad = kind == L3_LLVM_IR
                           ? LLVMPrintModuleToFile(mod, path, &msg)
                           : LLVMTargetMachineEmitToFile(h.tm, mod, (char *)path,
                                                         kind == L3_LLVM_OBJECT ? LLVMObjectFile : LLVMAssemblyFile, &msg);
        if (bad) snprintf(err, errlen, "cannot write %s: %s", path, msg ? msg : "?");
        else rc = 0;
        LLVMDisposeMessage(msg);
    }
    if (mod) LLVMDisposeModule(mod);
    LLVMContextDispose(cx);
    host_free(&h);
    return rc;
}
