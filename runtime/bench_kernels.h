/* bench_kernels.h — measuring generated code: the machine's roofline and
 * `netc bench` (whole-step and per-kernel timings).
 *
 * The roofline is measured, never taken from a datasheet: the FMA peak is a
 * loop of independent vector FMAs (AVX-512, else AVX2+FMA, else scalar
 * fmaf, chosen at run time), the memory bandwidth a large memcpy; both run
 * on T threads at once (one pthread each) and report the best of a few
 * repeats.
 */
#ifndef NETC_BENCH_KERNELS_H
#define NETC_BENCH_KERNELS_H

/* GFLOP/s (an FMA = 2 FLOPs) of `threads` threads running the widest FMA
 * loop the CPU supports; *isa (may be NULL) gets its name ("avx512",
 * "avx2", "scalar").  About 0.2 s. */
double netc_peak_fma_gflops(int threads, const char **isa);
/* GB/s moved (bytes read + bytes written) by `threads` threads copying a
 * 256 MiB buffer (128 MiB read, 128 MiB written) in parallel.  About 0.3 s. */
double netc_peak_mem_gbs(int threads);
/* The process's peak resident set (VmHWM) in MiB; getrusage as fallback. */
double netc_peak_rss_mb(void);

/* `netc bench FILE ...`: argc/argv after the command name. */
int netc_bench_main(int argc, char **argv);
extern const char *netc_bench_usage;

#endif
