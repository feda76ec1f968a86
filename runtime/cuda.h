/* cuda.h — run L3 modules on an NVIDIA GPU.  The kernels are the CUDA
 * printer's (compiler/l3_cuda.c), compiled at run time by NVRTC (nvrtc.h)
 * for the device's own architecture (sm_XY from its compute capability) and
 * launched in launch-table order through the CUDA driver API.
 *
 * The driver is loaded with dlopen, never linked: "libcuda.so.1", or
 * $NETC_CUDA_DRIVER when that is set (and only there).  netc builds and
 * runs everywhere; a machine without a driver or a GPU gets a clear
 * message from cuda_device / cuda_load.
 *
 * Memory.  The caller owns the host copies of every tensor (a table of
 * pointers, one per graph tensor, several of which may point into one
 * arena).  cuda_upload mirrors each distinct host region (overlapping
 * ranges are merged: an arena is one region) in device memory and copies
 * it there; cuda_launch runs an entry's kernels on the device copies;
 * cuda_download copies every region back.  Device memory is kept between
 * calls while the host layout stays the same, so a timing loop of
 * cuda_launch moves no data.
 *
 * Testing without a GPU.  tests/cuda_emu/ builds a stand-in driver that
 * runs the printed CUDA C on the CPU, one thread after the other (the
 * kernels use no shared memory and no synchronization, so that is exact).
 * When the loaded driver exports netc_emu_load_source, the module is given
 * the CUDA source instead of NVRTC's CUBIN.  make test runs the generated
 * CUDA of every shipped netdef that way against the reference executor. */
#ifndef NETC_CUDA_H
#define NETC_CUDA_H

#include <stdbool.h>
#include <stddef.h>

#include "l3.h"

typedef struct NetcCuda NetcCuda;

/* Whether the driver loads and has a device 0; `desc` gets e.g. "NVIDIA
 * H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB, driver 13.0" (may be NULL). */
bool cuda_device(char *desc, size_t desclen, char *err, size_t errlen);

/* Print m as CUDA, compile it for device 0 (NVRTC: a CUBIN for sm_XY, or
 * PTX for the driver to compile when NVRTC does not know the
 * architecture), load it and look up every function of every entry's
 * launch table.  m is not referenced afterwards.  NULL with a message. */
NetcCuda *cuda_load(const L3Module *m, char *err, size_t errlen);

/* Seconds NVRTC (or the emulator's compiler) took in cuda_load. */
double cuda_compile_seconds(const NetcCuda *c);

/* Copy the tensors to the device: t[i] (NULL: tensor i has no memory) of
 * bytes[i] bytes, i < ntensors.  Host ranges that overlap are one region. */
int cuda_upload(NetcCuda *c, void *const *t, const size_t *bytes, int ntensors, char *err, size_t errlen);

/* Fill every device region with the float NaN pattern (poisoning: what a
 * kernel reads without anyone having written it shows up as NaN). */
int cuda_poison(NetcCuda *c, char *err, size_t errlen);

/* Run entry `name` (all its launches, in order, then synchronize).  With
 * $NETC_CUDA_SYNC=1 it synchronizes after every launch, so an error names
 * the kernel that caused it. */
int cuda_launch(NetcCuda *c, const char *name, char *err, size_t errlen);

/* Per-launch times of entry `name`: it runs `reps` times, synchronizing
 * after every launch; ms[i] gets launch i's median wall time in
 * milliseconds (launch overhead included) and names[i] its function (valid
 * until cuda_free).  Returns the number of launches (at most max), or -1. */
int cuda_profile(NetcCuda *c, const char *name, int reps, double *ms, const char **names, int max, char *err, size_t errlen);

/* Copy every region back to the host pointers of the last upload. */
int cuda_download(NetcCuda *c, char *err, size_t errlen);

/* upload + launch + download. */
int cuda_run(NetcCuda *c, const char *name, void *const *t, const size_t *bytes, int ntensors, char *err, size_t errlen);

/* The number of __global__ launches of entry `name` (-1 if no such entry). */
int cuda_entry_launches(const NetcCuda *c, const char *name);

void cuda_free(NetcCuda *c);

#endif
