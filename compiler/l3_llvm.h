/* l3_llvm.h — the LLVM backend: an L3 module (l3.h) translated with the
 * LLVM-C API (LLVM 16) into one LLVM module, optimised at O3 for the host
 * CPU, then either run in-process through the ORC LLJIT or written out as an
 * object file, LLVM IR text or assembly.
 *
 * The semantics are those of the C printer (l3_print_c): C11 arithmetic
 * conversions, float32 math, signed int64 index arithmetic, lazy `?:`, `&&`
 * and `||`; L3E_FMA is llvm.fmuladd (the C printer's fmaf is always fused;
 * on FMA hardware llvm.fmuladd is too).  Each kernel is an internal function
 * whose buffer parameters are noalias (readonly when not written); each
 * entry is an exported `void NAME(void **t)` calling its kernels with
 * t[tensor], exactly as the printed C entry.
 *
 * LLVM headers stay out of this header. */
#ifndef NETC_L3_LLVM_H
#define NETC_L3_LLVM_H

#include <stddef.h>

#include "l3.h"

typedef struct L3Llvm L3Llvm;
typedef void (*NetcEntry)(void **t);   /* as in runtime/cbackend.h */

enum { L3_LLVM_OBJECT, L3_LLVM_IR, L3_LLVM_ASM };

/* Translate, verify, optimise and JIT-compile m.  NULL with a message in
 * err on any failure (invalid L3, LLVM verification, JIT errors). */
L3Llvm *l3_llvm_jit(const L3Module *m, char *err, size_t errlen);
/* The entry function `name`, or NULL if the module has none. */
NetcEntry l3_llvm_entry(L3Llvm *j, const char *name);
void l3_llvm_free(L3Llvm *j);

/* Write the optimised module to `path` as a PIC ELF object file
 * (L3_LLVM_OBJECT), LLVM IR text (L3_LLVM_IR) or assembly (L3_LLVM_ASM).
 * 0 on success, -1 with a message in err. */
int l3_llvm_emit(const L3Module *m, const char *path, int kind, char *err, size_t errlen);

#endif
