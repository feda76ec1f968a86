/* no_llvm.c — the LLVM backend's entry points for programs built without
 * LLVM (build/gpu_check, which runs on GPU machines that have no LLVM 16):
 * linked before libnetc.a, so compiler/l3_llvm*.o are not pulled in.  Asking
 * for the LLVM backend there is an error with a message, not a crash. */
#include <stdio.h>

#include "l3_llvm.h"

L3Llvm *l3_llvm_jit(const L3Module *m, char *err, size_t errlen)
{
    (void)m;
    snprintf(err, errlen, "this program was built without LLVM: use the c or cuda backend");
    return NULL;
}

NetcEntry l3_llvm_entry(L3Llvm *j, const char *name)
{
    (void)j;
    (void)name;
    return NULL;
}

void l3_llvm_free(L3Llvm *j) { (void)j; }
