/* l3_llvm_internal.h — between the two halves of the LLVM backend:
 * l3_llvm.c translates L3 into LLVM IR, l3_llvm_jit.c owns the target
 * machine, the optimisation pipeline, the JIT and the output files.
 * Includes the LLVM-C headers: only for those two files (the Makefile
 * gives them LLVM's include folder). */
#ifndef NETC_L3_LLVM_INTERNAL_H
#define NETC_L3_LLVM_INTERNAL_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "l3.h"

/* The whole module m in context cx, verified, for the target machine tm
 * (no optimisation yet; cpu/features become each function's target
 * attributes).  NULL with the message in err. */
LLVMModuleRef l3_llvm_translate(LLVMContextRef cx, const L3Module *m, LLVMTargetMachineRef tm, const char *cpu,
                                const char *features, char *err, size_t errlen);

#endif
