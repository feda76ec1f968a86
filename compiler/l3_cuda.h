/* l3_cuda.h — the CUDA C printer of the L3 loop IR, and the launch table the
 * runtime launches the printed kernels from.  The mapping of loops onto
 * threads is described at the top of l3_cuda.c. */
#ifndef NETC_L3_CUDA_H
#define NETC_L3_CUDA_H

#include <stdint.h>
#include <stdio.h>

#include "l3.h"

/* Threads per block of every __global__ function (also its __launch_bounds__). */
#define L3_CUDA_BLOCK 256

/* One launch of one __global__ function. */
typedef struct {
    char *name;           /* the __global__ function: the kernel's name, or NAME_part<i> */
    int kernel;           /* index into L3Module.kernels */
    int part;             /* -1: the whole kernel; else its top-level statement */
    int64_t total;        /* threads to run (0: nothing to do, do not launch) */
    int block;            /* threads per block (<= L3_CUDA_BLOCK, a multiple of 32) */
    int64_t grid;         /* blocks: ceil(total / block) */
    int nparams;
    int *params;          /* graph tensor index of each pointer parameter, in order */
} L3CudaLaunch;

/* Every kernel as `extern "C" __global__` functions for NVRTC (no headers
 * needed: the preamble defines the integer types, INFINITY and NAN), followed
 * by a comment block holding the launch table of each entry as a C array. */
void l3_print_cuda(FILE *out, const L3Module *m);

/* Kernels first .. first+count-1 alone, with the preamble and no launch
 * table: one of several programs NVRTC compiles in parallel (runtime/cuda.c). */
void l3_print_cuda_kernels(FILE *out, const L3Module *m, int first, int count);

/* The launches of entry `entry`, in order: *out is malloc'ed (free it with
 * l3_cuda_launches_free).  Returns the count, or -1 (and *out = NULL) when
 * `entry` is not an entry of m. */
int l3_cuda_launches(const L3Module *m, int entry, L3CudaLaunch **out);
void l3_cuda_launches_free(L3CudaLaunch *l, int n);

#endif
