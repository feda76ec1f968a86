/* pool.h — the thread pool behind multi-threaded generated code.
 *
 * The runtime ABI of generated code
 * ---------------------------------
 * Besides libm (and memset/memcpy, which compilers introduce), this is the
 * ONE function that generated code calls back into the runtime:
 *
 *     void netc_parallel_for(void (*fn)(void *ctx, int64_t lo, int64_t hi),
 *                            void *ctx, int64_t n);
 *
 * The C printer (l3_print_c) declares it in the preamble of every module
 * and calls it where a kernel has an L3_PARALLEL loop: the loop's body
 * becomes `static void kN_bodyM(void *ctx, int64_t lo, int64_t hi)`
 * (running iterations lo .. hi-1), ctx points to a struct on the kernel's
 * stack holding every buffer pointer and every outer loop variable and
 * local the body reads.  The LLVM backend (l3_llvm.c) does the same in IR.
 * Where the code runs:
 *  - JIT (l3_llvm_jit): the address is given to the JIT as an absolute
 *    symbol, like the libm functions;
 *  - object files (l3_llvm_emit) reference it as an undefined external
 *    symbol: link them with this file;
 *  - the C backend's shared objects (cbackend.c, dlopen) resolve it from the
 *    host executable, which is linked with -rdynamic.
 *
 * Semantics: [0, n) is split into contiguous chunks [lo, hi) and fn is
 * called once per chunk, on the pool's threads and on the calling thread;
 * netc_parallel_for returns when every chunk is done (all of fn's writes are
 * then visible to the caller).  n <= 0 calls nothing.  fn must not depend
 * on how [0, n) is split: every output element is computed inside exactly
 * one iteration, so results are bit-identical for any thread count.  With
 * one thread, a small n, a call from inside fn (nesting) or while another
 * thread of the process is using the pool, fn(ctx, 0, n) runs directly on
 * the calling thread.
 *
 * Threads: netc_set_threads(k) (k <= 0: the default), else the environment
 * variable NETC_THREADS, else the number of online CPUs.  Workers start at
 * the first call that needs them and stop at netc_pool_shutdown() (also run
 * at exit; a later call starts them again).
 */
#ifndef NETC_POOL_H
#define NETC_POOL_H

#include <stdint.h>

typedef void (*NetcParallelFn)(void *ctx, int64_t lo, int64_t hi);

void netc_parallel_for(NetcParallelFn fn, void *ctx, int64_t n);

/* Set the number of threads (the calling thread included); k <= 0 goes back
 * to the default (NETC_THREADS, else the online CPUs).  Waits for a running
 * netc_parallel_for; do not call it from inside one. */
void netc_set_threads(int k);
/* The number of threads netc_parallel_for uses (>= 1). */
int netc_threads(void);
/* Stop and join the workers (idempotent; registered with atexit). */
void netc_pool_shutdown(void);

#endif
