/* cbackend.h — run L3 modules through the C printer: the generated C is
 * compiled with the system C compiler (cc, or $CC) into a shared object and
 * loaded with dlopen.  The debugging and reference path for generated code;
 * the LLVM backend runs the same kernels without a C compiler. */
#ifndef NETC_CBACKEND_H
#define NETC_CBACKEND_H

#include <stddef.h>

#include "l3.h"

typedef struct CBackend CBackend;
typedef void (*NetcEntry)(void **t);

/* Compiles with `cc -std=c11 -O2 -march=native -Wall -Wextra -Werror`
 * (NETC_CFLAGS replaces -O2 -march=native; see cbackend.c for why not
 * -O3); a warning is an error (generated C must be clean).  NULL with the
 * compiler's message in err on failure. */
CBackend *cbackend_compile(const L3Module *m, char *err, size_t errlen);
NetcEntry cbackend_entry(CBackend *b, const char *name);
void cbackend_free(CBackend *b);

#endif
