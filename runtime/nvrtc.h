/* nvrtc.h — compile CUDA C (l3_print_cuda's output) to PTX and a CUBIN with
 * NVRTC, loaded at run time with dlopen: netc has no link-time CUDA
 * dependency, and no GPU is needed to compile.
 *
 * The library is looked up as $NETC_NVRTC when that is set (and only there),
 * else "libnvrtc.so.13", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13".
 * It is loaded on first use, once (never unmapped: NVRTC allocates when it
 * loads).  Not thread-safe on first use. */
#ifndef NETC_NVRTC_H
#define NETC_NVRTC_H

#include <stdbool.h>
#include <stddef.h>

/* Whether NVRTC can be loaded; if not, why (every path tried) in err. */
bool nvrtc_available(char *err, size_t errlen);

/* NVRTC's version (e.g. 13, 0); false if it cannot be loaded. */
bool nvrtc_version(int *major, int *minor);

/* Compile `src` for `arch` ("sm_90": PTX and a CUBIN; "compute_90": PTX
 * only, *cubin_len 0) with --fmad=false.  On success returns 0 and
 * malloc'ed, NUL-terminated copies in *ptx / *cubin (either output pointer
 * may be NULL when not wanted).  On failure returns -1 with a message in err:
 * NVRTC's log, then the numbered source lines around every reported error (or
 * that NVRTC could not be loaded, and from where). */
int nvrtc_compile(const char *src, const char *arch, char **ptx, size_t *ptx_len, char **cubin, size_t *cubin_len,
                  char *err, size_t errlen);

/* Forget the library (dlclose; it stays mapped, RTLD_NODELETE): the next
 * use looks it up again, honouring a changed $NETC_NVRTC. */
void nvrtc_unload(void);

#endif
