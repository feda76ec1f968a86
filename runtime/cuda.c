/* cuda.c — the CUDA driver API through dlopen, and the launch of L3
 * modules (see cuda.h).  The driver entry points are declared here as
 * function-pointer types with cuda.h's signatures; where cuda.h #defines a
 * versioned name (cuMemAlloc -> cuMemAlloc_v2) the versioned symbol is
 * looked up. */
#define _POSIX_C_SOURCE 200809L
#include "cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "l3_cuda.h"
#include "nvrtc.h"
#include "util.h"

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_EMPTY_MODULE = 1,
    ATTR_MULTIPROCESSOR_COUNT = 16,
    ATTR_CC_MAJOR = 75,
    ATTR_CC_MINOR = 76,
};

static struct {
    void *so;
    char path[256];
    bool inited;
    CUdevice dev;
    CUcontext ctx;
    CUresult (*init)(unsigned);
    CUresult (*driver_version)(int *);
    CUresult (*device_count)(int *);
    CUresult (*device_get)(CUdevice *, int);
    CUresult (*device_name)(char *, int, CUdevice);
    CUresult (*device_attr)(int *, int, CUdevice);
    CUresult (*device_mem)(size_t *, CUdevice);
    CUresult (*ctx_retain)(CUcontext *, CUdevice);
    CUresult (*ctx_set)(CUcontext);
    CUresult (*ctx_sync)(void);
    CUresult (*mod_load)(CUmodule *, const void *);
    CUresult (*mod_unload)(CUmodule);
    CUresult (*mod_func)(CUfunction *, CUmodule, const char *);
    CUresult (*mem_alloc)(CUdeviceptr *, size_t);
    CUresult (*mem_free)(CUdeviceptr);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*memset32)(CUdeviceptr, unsigned, size_t);
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                       void **, void **);
    CUresult (*err_name)(CUresult, const char **);
    CUresult (*err_string)(CUresult, const char **);
    /* tests/cuda_emu only: load a module from CUDA source */
    CUresult (*emu_load_source)(CUmodule *, const char *);
} cu;

#define SYM(field, name)                                                                       \
    do {                                                                                       \
        void *p_ = dlsym(cu.so, name);                                                         \
        if (!p_ && ok) {                                                                       \
            snprintf(err, errlen, "the CUDA driver (%s) lacks the symbol %s", cu.path, name); \
            ok = false;                                                                        \
        }                                                                                      \
        memcpy(&cu.field, &p_, sizeof cu.field);                                               \
    } while (0)

static void cu_message(CUresult r, const char *what, char *err, size_t errlen)
{
    const char *name = NULL, *str = NULL;
    if (cu.err_name) cu.err_name(r, &name);
    if (cu.err_string) cu.err_string(r, &str);
    snprintf(err, errlen, "%s: %s (%d): %s", what, name ? name : "CUDA error", r, str ? str : "no description");
}

#define CU(call, what)                                       \
    do {                                                     \
        CUresult r_ = (call);                                \
        if (r_ != CUDA_SUCCESS) {                            \
            cu_message(r_, what, err, errlen);               \
            return -1;                                       \
        }                                                    \
    } while (0)

/* Load the driver, initialize it and make device 0's primary context
 * current (once; the library stays loaded). */
static int driver(char *err, size_t errlen)
{
    if (cu.inited) return cu.ctx_set(cu.ctx) == CUDA_SUCCESS ? 0 : (snprintf(err, errlen, "cuCtxSetCurrent failed"), -1);
    if (!cu.so) {
        const char *env = getenv("NETC_CUDA_DRIVER");
        const char *path = env && *env ? env : "libcuda.so.1";
        cu.so = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!cu.so) {
            const char *why = dlerror();
            snprintf(err, errlen, "no CUDA driver: cannot load %s (%s)%s", path, why ? why : "not found",
                     env && *env ? "" : "; this machine has no NVIDIA driver, or set NETC_CUDA_DRIVER to libcuda.so's path");
            return -1;
        }
        snprintf(cu.path, sizeof cu.path, "%s", path);
        bool ok = true;
        SYM(init, "cuInit");
        SYM(driver_version, "cuDriverGetVersion");
        SYM(device_count, "cuDeviceGetCount");
        SYM(device_get, "cuDeviceGet");
        SYM(device_name, "cuDeviceGetName");
        SYM(device_attr, "cuDeviceGetAttribute");
        SYM(device_mem, "cuDeviceTotalMem_v2");
        SYM(ctx_retain, "cuDevicePrimaryCtxRetain");
        SYM(ctx_set, "cuCtxSetCurrent");
        SYM(ctx_sync, "cuCtxSynchronize");
        SYM(mod_load, "cuModuleLoadData");
        SYM(mod_unload, "cuModuleUnload");
        SYM(mod_func, "cuModuleGetFunction");
        SYM(mem_alloc, "cuMemAlloc_v2");
        SYM(mem_free, "cuMemFree_v2");
        SYM(htod, "cuMemcpyHtoD_v2");
        SYM(dtoh, "cuMemcpyDtoH_v2");
        SYM(memset32, "cuMemsetD32_v2");
        SYM(launch, "cuLaunchKernel");
        SYM(err_name, "cuGetErrorName");
        SYM(err_string, "cuGetErrorString");
        void *p = dlsym(cu.so, "netc_emu_load_source");
        memcpy(&cu.emu_load_source, &p, sizeof p);
        if (!ok) {
            dlclose(cu.so);
            memset(&cu, 0, sizeof cu);
            return -1;
        }
    }
    CU(cu.init(0), "cuInit (the NVIDIA driver is loaded but does not start)");
    int n = 0;
    CU(cu.device_count(&n), "cuDeviceGetCount");
    if (n < 1) {
        snprintf(err, errlen, "the CUDA driver (%s) sees no GPU", cu.path);
        return -1;
    }
    CU(cu.device_get(&cu.dev, 0), "cuDeviceGet");
    CU(cu.ctx_retain(&cu.ctx, cu.dev), "cuDevicePrimaryCtxRetain");
    CU(cu.ctx_set(cu.ctx), "cuCtxSetCurrent");
    cu.inited = true;
    return 0;
}

static int compute_capability(int *major, int *minor, char *err, size_t errlen)
{
    CU(cu.device_attr(major, ATTR_CC_MAJOR, cu.dev), "cuDeviceGetAttribute");
    CU(cu.device_attr(minor, ATTR_CC_MINOR, cu.dev), "cuDeviceGetAttribute");
    return 0;
}

bool cuda_device(char *desc, size_t desclen, char *err, size_t errlen)
{
    if (driver(err, errlen) != 0) return false;
    if (!desc || desclen == 0) return true;
    char name[256] = "?";
    int major = 0, minor = 0, sms = 0, ver = 0;
    size_t mem = 0;
    cu.device_name(name, (int)sizeof name, cu.dev);
    if (compute_capability(&major, &minor, err, errlen) != 0) return false;
    cu.device_attr(&sms, ATTR_MULTIPROCESSOR_COUNT, cu.dev);
    cu.device_mem(&mem, cu.dev);
    cu.driver_version(&ver);
    snprintf(desc, desclen, "%s, sm_%d%d, %d SMs, %.1f GiB, driver %d.%d%s", name, major, minor, sms,
             (double)mem / (1024.0 * 1024 * 1024), ver / 1000, ver % 1000 / 10,
             cu.emu_load_source ? " (netc's CPU emulator)" : "");
    return true;
}

/* ---- modules ----------------------------------------------------------------------------------- */

typedef struct {
    CUfunction fn;
    int64_t total, grid;
    int block;
    int nparams;
    int *params;
    char *name;
} Launch;

typedef struct {
    char *name;
    Launch *l;
    int n;
} Entry;

typedef struct {
    char *host;
    size_t bytes;
    CUdeviceptr dev;
} Region;

struct NetcCuda {
    CUmodule *mods;      /* the programs NVRTC compiled in parallel */
    int nmods;
    int *kmod;           /* per L3 kernel: its module */
    Entry *entries;
    int nentries;
    double compile_s;
    /* the last upload */
    Region *regions;
    int nregions;
    CUdeviceptr *dptr;   /* per tensor (0: none) */
    int ntensors;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void free_regions(NetcCuda *c)
{
    for (int i = 0; i < c->nregions; i++)
        if (c->regions[i].dev) cu.mem_free(c->regions[i].dev);
    free(c->regions);
    c->regions = NULL;
    c->nregions = 0;
}

void cuda_free(NetcCuda *c)
{
    if (!c) return;
    if (cu.inited) cu.ctx_set(cu.ctx);
    free_regions(c);
    free(c->dptr);
    for (int e = 0; e < c->nentries; e++) {
        for (int i = 0; i < c->entries[e].n; i++) {
            free(c->entries[e].l[i].params);
            free(c->entries[e].l[i].name);
        }
        free(c->entries[e].l);
        free(c->entries[e].name);
    }
    free(c->entries);
    for (int i = 0; i < c->nmods; i++)
        if (c->mods[i]) cu.mod_unload(c->mods[i]);
    free(c->mods);
    free(c->kmod);
    free(c);
}

/* Kernels first..first+count-1 as CUDA source (count < 0: the whole
 * module, launch table included). */
static char *print_source(const L3Module *m, int first, int count)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f) return NULL;
    if (count < 0) l3_print_cuda(f, m);
    else l3_print_cuda_kernels(f, m, first, count);
    if (fclose(f) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

/* One program: NVRTC makes a CUBIN for the device's architecture; if NVRTC
 * does not know it (a GPU newer than the toolkit), PTX for the newest
 * virtual architecture it knows, which the driver compiles when loading. */
typedef struct {
    char *src;
    const char *arch;
    char *image;          /* CUBIN or PTX */
    bool ptx;
    char err[4096];
    int rc;
} Chunk;

static void *compile_chunk(void *arg)
{
    Chunk *k = arg;
    size_t clen = 0;
    k->rc = nvrtc_compile(k->src, k->arch, NULL, NULL, &k->image, &clen, k->err, sizeof k->err);
    if (k->rc == 0) return NULL;
    char first[4096];
    snprintf(first, sizeof first, "%s", k->err);
    static const char *const fallback[] = { "compute_90", "compute_80", "compute_75" };
    for (size_t i = 0; i < sizeof fallback / sizeof fallback[0]; i++)
        if (nvrtc_compile(k->src, fallback[i], &k->image, NULL, NULL, NULL, k->err, sizeof k->err) == 0) {
            k->ptx = true;
            k->rc = 0;
            return NULL;
        }
    snprintf(k->err, sizeof k->err, "%s", first);   /* the sm_XY attempt's message says most */
    return NULL;
}

/* The kernels split into up to one program per CPU (contiguous runs of
 * about equal source size), compiled by NVRTC in parallel threads and
 * loaded as one module each: a training step's 150-odd kernels take NVRTC
 * about 40 s in one program on one core.  The emulator gets the whole
 * module as one source. */
static int load_modules(NetcCuda *c, const L3Module *m, char *err, size_t errlen)
{
    c->kmod = xcalloc((size_t)(m->nkernels > 0 ? m->nkernels : 1), sizeof *c->kmod);
    /* NETC_CUDA_EMU_NVRTC (tests): the emulator too gets NVRTC's programs (it checks and indexes the CUBINs) */
    bool emu_source = cu.emu_load_source && !getenv("NETC_CUDA_EMU_NVRTC");
    if (emu_source || m->nkernels == 0) {
        char *src = print_source(m, 0, -1);
        if (!src) { snprintf(err, errlen, "out of memory printing the CUDA source"); return -1; }
        c->mods = xcalloc(1, sizeof *c->mods);
        c->nmods = 1;
        CUresult r = emu_source ? cu.emu_load_source(&c->mods[0], src) : CUDA_ERROR_EMPTY_MODULE;
        free(src);
        if (m->nkernels == 0) { c->mods[0] = NULL; return 0; }
        if (r != CUDA_SUCCESS) { cu_message(r, "loading the CUDA source into the emulator", err, errlen); return -1; }
        return 0;
    }
    int major, minor;
    if (compute_capability(&major, &minor, err, errlen) != 0) return -1;
    if (!nvrtc_available(err, errlen)) return -1;   /* loaded here, once, before the threads */
    char arch[32];
    snprintf(arch, sizeof arch, "sm_%d%d", major, minor);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const char *env = getenv("NETC_NVRTC_THREADS");
    if (env && *env) ncpu = strtol(env, NULL, 10);
    int nchunks = (int)(ncpu < 1 ? 1 : ncpu > 32 ? 32 : ncpu);
    if (nchunks > m->nkernels) nchunks = m->nkernels;
    /* sizes per kernel, then contiguous runs of about total / nchunks */
    size_t *size = xcalloc((size_t)m->nkernels, sizeof *size), total = 0;
    for (int i = 0; i < m->nkernels; i++) {
        char *s1 = print_source(m, i, 1);
        size[i] = s1 ? strlen(s1) : 1;
        total += size[i];
        free(s1);
    }
    Chunk *ch = xcalloc((size_t)nchunks, sizeof *ch);
    int *first = xcalloc((size_t)nchunks + 1, sizeof *first);
    int n = 0;
    size_t acc = 0;
    for (int i = 0; i < m->nkernels; i++) {
        if (i > 0 && n + 1 < nchunks && acc >= total / (size_t)nchunks * (size_t)(n + 1)) first[++n] = i;
        acc += size[i];
        c->kmod[i] = n;
    }
    nchunks = n + 1;
    first[nchunks] = m->nkernels;
    free(size);
    pthread_t *th = xcalloc((size_t)nchunks, sizeof *th);
    bool *started = xcalloc((size_t)nchunks, sizeof *started);
    for (int i = 0; i < nchunks; i++) {
        ch[i].src = print_source(m, first[i], first[i + 1] - first[i]);
        ch[i].arch = arch;
        ch[i].rc = -1;
        if (!ch[i].src) { snprintf(ch[i].err, sizeof ch[i].err, "out of memory printing the CUDA source"); continue; }
        started[i] = pthread_create(&th[i], NULL, compile_chunk, &ch[i]) == 0;
        if (!started[i]) compile_chunk(&ch[i]);
    }
    for (int i = 0; i < nchunks; i++)
        if (started[i]) pthread_join(th[i], NULL);
    c->mods = xcalloc((size_t)nchunks, sizeof *c->mods);
    c->nmods = nchunks;
    int rc = 0;
    for (int i = 0; i < nchunks && rc == 0; i++) {
        if (ch[i].rc != 0) {
            snprintf(err, errlen, "%s", ch[i].err);
            rc = -1;
            break;
        }
        CUresult r = cu.mod_load(&c->mods[i], ch[i].image);
        if (r != CUDA_SUCCESS) {
            cu_message(r, ch[i].ptx ? "cuModuleLoadData (PTX)" : "cuModuleLoadData (CUBIN)", err, errlen);
            rc = -1;
        }
    }
    for (int i = 0; i < nchunks; i++) {
        free(ch[i].src);
        free(ch[i].image);
    }
    free(ch);
    free(first);
    free(th);
    free(started);
    return rc;
}

NetcCuda *cuda_load(const L3Module *m, char *err, size_t errlen)
{
    if (driver(err, errlen) != 0) return NULL;
    NetcCuda *c = xcalloc(1, sizeof *c);
    double t0 = now();
    int rc = load_modules(c, m, err, errlen);
    c->compile_s = now() - t0;
    if (rc != 0) {
        cuda_free(c);
        return NULL;
    }
    c->entries = xcalloc((size_t)(m->nentries > 0 ? m->nentries : 1), sizeof *c->entries);
    c->nentries = m->nentries;
    for (int e = 0; e < m->nentries; e++) {
        Entry *E = &c->entries[e];
        E->name = xstrdup(m->entries[e].name);
        L3CudaLaunch *l;
        int n = l3_cuda_launches(m, e, &l);
        E->l = xcalloc((size_t)(n > 0 ? n : 1), sizeof *E->l);
        for (int i = 0; i < n; i++) {
            Launch *L = &E->l[E->n++];
            L->total = l[i].total;
            L->grid = l[i].grid;
            L->block = l[i].block;
            L->nparams = l[i].nparams;
            L->params = l[i].params;
            l[i].params = NULL;
            L->name = l[i].name;
            l[i].name = NULL;
            if (L->total == 0) continue;
            CUresult r = cu.mod_func(&L->fn, c->mods[c->kmod[l[i].kernel]], L->name);
            if (r != CUDA_SUCCESS) {
                char what[300];
                snprintf(what, sizeof what, "cuModuleGetFunction(%s)", L->name);
                cu_message(r, what, err, errlen);
                l3_cuda_launches_free(l, n);
                cuda_free(c);
                return NULL;
            }
        }
        l3_cuda_launches_free(l, n);
    }
    return c;
}

double cuda_compile_seconds(const NetcCuda *c) { return c ? c->compile_s : 0; }

static int find_entry(const NetcCuda *c, const char *name)
{
    for (int e = 0; e < c->nentries; e++)
        if (strcmp(c->entries[e].name, name) == 0) return e;
    return -1;
}

int cuda_entry_launches(const NetcCuda *c, const char *name)
{
    int e = find_entry(c, name);
    return e < 0 ? -1 : c->entries[e].n;
}

/* ---- memory ------------------------------------------------------------------------------------ */

typedef struct {
    char *lo, *hi;
} Range;

static int range_cmp(const void *a, const void *b)
{
    const Range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo ? 1 : 0;
}

int cuda_upload(NetcCuda *c, void *const *t, const size_t *bytes, int ntensors, char *err, size_t errlen)
{
    if (driver(err, errlen) != 0) return -1;
    Range *r = xmalloc(sizeof *r * (size_t)(ntensors > 0 ? ntensors : 1));
    int nr = 0;
    for (int i = 0; i < ntensors; i++)
        if (t[i] && bytes[i] > 0) r[nr++] = (Range){ t[i], (char *)t[i] + bytes[i] };
    qsort(r, (size_t)nr, sizeof *r, range_cmp);
    int nm = 0;   /* merge overlapping ranges in place */
    for (int i = 0; i < nr; i++) {
        if (nm > 0 && r[i].lo < r[nm - 1].hi) {
            if (r[i].hi > r[nm - 1].hi) r[nm - 1].hi = r[i].hi;
        } else
            r[nm++] = r[i];
    }
    bool same = nm == c->nregions;
    for (int i = 0; same && i < nm; i++)
        same = c->regions[i].host == r[i].lo && c->regions[i].bytes == (size_t)(r[i].hi - r[i].lo);
    if (!same) {
        free_regions(c);
        c->regions = xcalloc((size_t)(nm > 0 ? nm : 1), sizeof *c->regions);
        for (int i = 0; i < nm; i++) {
            Region *g = &c->regions[c->nregions++];
            g->host = r[i].lo;
            g->bytes = (size_t)(r[i].hi - r[i].lo);
            CUresult res = cu.mem_alloc(&g->dev, g->bytes);
            if (res != CUDA_SUCCESS) {
                char what[96];
                snprintf(what, sizeof what, "cuMemAlloc(%zu bytes)", g->bytes);
                cu_message(res, what, err, errlen);
                free(r);
                return -1;
            }
        }
    }
    free(r);
    free(c->dptr);
    c->dptr = xcalloc((size_t)(ntensors > 0 ? ntensors : 1), sizeof *c->dptr);
    c->ntensors = ntensors;
    for (int i = 0; i < ntensors; i++) {
        if (!t[i] || bytes[i] == 0) continue;
        int lo = 0, hi = c->nregions - 1;   /* the region holding t[i]: the last one starting at or before it */
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (c->regions[mid].host <= (char *)t[i]) lo = mid;
            else hi = mid - 1;
        }
        c->dptr[i] = c->regions[lo].dev + (CUdeviceptr)((char *)t[i] - c->regions[lo].host);
    }
    for (int i = 0; i < c->nregions; i++)
        CU(cu.htod(c->regions[i].dev, c->regions[i].host, c->regions[i].bytes), "cuMemcpyHtoD");
    return 0;
}

int cuda_poison(NetcCuda *c, char *err, size_t errlen)
{
    if (driver(err, errlen) != 0) return -1;
    for (int i = 0; i < c->nregions; i++)
        CU(cu.memset32(c->regions[i].dev, 0x7fc00000u, c->regions[i].bytes / 4), "cuMemsetD32");
    return 0;
}

int cuda_download(NetcCuda *c, char *err, size_t errlen)
{
    if (driver(err, errlen) != 0) return -1;
    for (int i = 0; i < c->nregions; i++)
        CU(cu.dtoh(c->regions[i].host, c->regions[i].dev, c->regions[i].bytes), "cuMemcpyDtoH");
    return 0;
}

/* The kernel parameters of one launch: each a pointer to the device address
 * of its tensor. */
typedef struct {
    CUdeviceptr *vals;
    void **args;
    int cap;
} Args;

static int bind_args(const NetcCuda *c, const Launch *L, Args *a, char *err, size_t errlen)
{
    if (L->nparams > a->cap) {
        a->cap = L->nparams;
        a->vals = xrealloc(a->vals, sizeof *a->vals * (size_t)a->cap);
        a->args = xrealloc(a->args, sizeof *a->args * (size_t)a->cap);
    }
    for (int j = 0; j < L->nparams; j++) {
        int t = L->params[j];
        if (t < 0 || t >= c->ntensors || !c->dptr[t]) {
            snprintf(err, errlen, "%s: tensor %d (parameter %d) has no device memory (not uploaded)", L->name, t, j);
            return -1;
        }
        a->vals[j] = c->dptr[t];
        a->args[j] = &a->vals[j];
    }
    return 0;
}

static CUresult launch(const Launch *L, Args *a)
{
    return cu.launch(L->fn, (unsigned)L->grid, 1, 1, (unsigned)L->block, 1, 1, 0, NULL, a->args, NULL);
}

int cuda_launch(NetcCuda *c, const char *name, char *err, size_t errlen)
{
    if (driver(err, errlen) != 0) return -1;
    int e = find_entry(c, name);
    if (e < 0) {
        snprintf(err, errlen, "the module has no entry %s", name);
        return -1;
    }
    const char *sync_env = getenv("NETC_CUDA_SYNC");
    bool sync_each = sync_env && *sync_env && strcmp(sync_env, "0") != 0;
    const Entry *E = &c->entries[e];
    Args a = { 0 };
    int rc = 0;
    for (int i = 0; i < E->n && rc == 0; i++) {
        const Launch *L = &E->l[i];
        if (L->total == 0) continue;
        if (bind_args(c, L, &a, err, errlen) != 0) {
            rc = -1;
            break;
        }
        CUresult r = launch(L, &a);
        if (r == CUDA_SUCCESS && sync_each) r = cu.ctx_sync();
        if (r != CUDA_SUCCESS) {
            char what[320];
            snprintf(what, sizeof what, "launching %s (launch %d of %d of %s, %lld blocks of %d)", L->name, i + 1, E->n,
                     name, (long long)L->grid, L->block);
            cu_message(r, what, err, errlen);
            rc = -1;
        }
    }
    free(a.vals);
    free(a.args);
    if (rc != 0) return -1;
    CUresult r = cu.ctx_sync();
    if (r != CUDA_SUCCESS) {
        char what[256];
        snprintf(what, sizeof what, "running %s (set NETC_CUDA_SYNC=1 to name the kernel)", name);
        cu_message(r, what, err, errlen);
        return -1;
    }
    return 0;
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cuda_profile(NetcCuda *c, const char *name, int reps, double *ms, const char **names, int max, char *err, size_t errlen)
{
    if (driver(err, errlen) != 0) return -1;
    int e = find_entry(c, name);
    if (e < 0) {
        snprintf(err, errlen, "the module has no entry %s", name);
        return -1;
    }
    const Entry *E = &c->entries[e];
    int n = E->n < max ? E->n : max;
    if (reps < 1) reps = 1;
    double *t = xcalloc((size_t)n * (size_t)reps + 1, sizeof *t);
    Args a = { 0 };
    int rc = 0;
    for (int r = 0; r < reps && rc == 0; r++)
        for (int i = 0; i < n && rc == 0; i++) {
            const Launch *L = &E->l[i];
            if (L->total == 0) continue;
            if (bind_args(c, L, &a, err, errlen) != 0) {
                rc = -1;
                break;
            }
            double t0 = now();
            CUresult res = launch(L, &a);
            if (res == CUDA_SUCCESS) res = cu.ctx_sync();
            t[(size_t)i * (size_t)reps + (size_t)r] = 1e3 * (now() - t0);
            if (res != CUDA_SUCCESS) {
                cu_message(res, L->name, err, errlen);
                rc = -1;
            }
        }
    for (int i = 0; i < n && rc == 0; i++) {
        qsort(t + (size_t)i * (size_t)reps, (size_t)reps, sizeof *t, dbl_cmp);
        ms[i] = t[(size_t)i * (size_t)reps + (size_t)reps / 2];
        names[i] = E->l[i].name;
    }
    free(t);
    free(a.vals);
    free(a.args);
    return rc == 0 ? n : -1;
}

int cuda_run(NetcCuda *c, const char *name, void *const *t, const size_t *bytes, int ntensors, char *err, size_t errlen)
{
    if (cuda_upload(c, t, bytes, ntensors, err, errlen) != 0) return -1;
    if (cuda_launch(c, name, err, errlen) != 0) return -1;
    return cuda_download(c, err, errlen);
}
