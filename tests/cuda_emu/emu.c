/* emu.c — a stand-in for the CUDA driver (libcuda.so.1) that runs netc's
 * printed CUDA C on the CPU, so the GPU backend's launch logic and the CUDA
 * printer's loop-to-thread mapping are checked by make test on machines
 * without a GPU.  Built as a shared library (make: build/libnetc_cuda_emu.so)
 * and selected with NETC_CUDA_DRIVER=path.
 *
 * It implements just the driver entry points runtime/cuda.c uses, plus
 * netc_emu_load_source, which runtime/cuda.c calls instead of NVRTC when it
 * finds it: the module is the CUDA source itself.  That source is compiled
 * as C++ with the host compiler ($CXX, else c++) after a prelude that maps
 * CUDA's few device-side names onto C++ (blockIdx, blockDim, threadIdx,
 * __global__, __launch_bounds__, __int_as_float) and a trampoline per
 * __global__ function that takes the launch's argument array.  A launch
 * runs every thread of every block in order on the calling thread: netc's
 * kernels use no shared memory and no synchronization, so this is exact.
 *
 * "Device memory" is host memory; pointers are handed out as CUdeviceptr.
 * Not a general CUDA emulator: it knows netc's printer's output and no
 * more. */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum {
    OK = 0,
    ERR_INVALID_VALUE = 1,
    ERR_OUT_OF_MEMORY = 2,
    ERR_INVALID_IMAGE = 200,
    ERR_NOT_FOUND = 500,
    ERR_LAUNCH_FAILED = 719,
};

typedef void (*Trampoline)(void **args);
typedef void (*SetIdx)(unsigned block, unsigned bdim, unsigned thread, unsigned gdim);

typedef struct Module Module;

typedef struct {
    char *name;
    Trampoline fn;
    Module *m;
} Func;

struct Module {
    char *image;          /* a CUBIN given to cuModuleLoadData (checked, searched for names; not runnable) */
    size_t image_len;
    void *so;
    SetIdx set;
    Func *f;
    int nf;
    char dir[64];
};

static int ctx_dummy;

CUresult cuInit(unsigned flags) { (void)flags; return OK; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return OK; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return OK; }
CUresult cuDeviceGet(int *d, int ordinal) { *d = ordinal; return ordinal == 0 ? OK : ERR_INVALID_VALUE; }
CUresult cuDeviceGetName(char *name, int len, int dev)
{
    (void)dev;
    snprintf(name, (size_t)len, "netc CUDA emulator (CPU)");
    return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, int dev)
{
    (void)dev;
    *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 16 ? 1 : 0;
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) { (void)dev; *bytes = (size_t)1 << 30; return OK; }
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { (void)dev; *ctx = &ctx_dummy; return OK; }
CUresult cuCtxSetCurrent(void *ctx) { return ctx == &ctx_dummy ? OK : ERR_INVALID_VALUE; }
CUresult cuCtxSynchronize(void) { return OK; }

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes)
{
    void *m = NULL;
    if (posix_memalign(&m, 256, bytes ? bytes : 1) != 0) return ERR_OUT_OF_MEMORY;
    *p = (CUdeviceptr)(uintptr_t)m;
    return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) { free((void *)(uintptr_t)p); return OK; }
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *h, size_t n) { memcpy((void *)(uintptr_t)d, h, n); return OK; }
CUresult cuMemcpyDtoH_v2(void *h, CUdeviceptr d, size_t n) { memcpy(h, (const void *)(uintptr_t)d, n); return OK; }
CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned v, size_t n)
{
    unsigned *p = (unsigned *)(uintptr_t)d;
    for (size_t i = 0; i < n; i++) p[i] = v;
    return OK;
}

CUresult cuGetErrorName(CUresult r, const char **s)
{
    *s = r == OK ? "CUDA_SUCCESS" : r == ERR_INVALID_IMAGE ? "CUDA_ERROR_INVALID_IMAGE" : r == ERR_NOT_FOUND ? "CUDA_ERROR_NOT_FOUND"
         : r == ERR_OUT_OF_MEMORY ? "CUDA_ERROR_OUT_OF_MEMORY" : r == ERR_LAUNCH_FAILED ? "CUDA_ERROR_LAUNCH_FAILED"
         : "CUDA_ERROR_INVALID_VALUE";
    return OK;
}
CUresult cuGetErrorString(CUresult r, const char **s)
{
    *s = r == ERR_INVALID_IMAGE ? "the emulator loads CUDA source only (netc_emu_load_source)"
         : r == ERR_NOT_FOUND ? "no such function in the module"
         : r == ERR_LAUNCH_FAILED ? "compiling the CUDA source with the host C++ compiler failed (its output is on stderr)"
         : "emulator error";
    return OK;
}

/* A CUBIN (ELF) is accepted and kept so cuModuleGetFunction can find the
 * names in it (NETC_CUDA_EMU_NVRTC tests: NVRTC's real output, loaded
 * module by module); its functions cannot be launched here. */
CUresult cuModuleLoadData(void **out, const void *image)
{
    const unsigned char *e = image;
    if (!e || memcmp(e, "\x7f" "ELF", 4) != 0 || e[4] != 2) return ERR_INVALID_IMAGE;   /* ELF64 */
    uint64_t shoff;
    uint16_t shentsize, shnum;
    memcpy(&shoff, e + 0x28, 8);
    memcpy(&shentsize, e + 0x3A, 2);
    memcpy(&shnum, e + 0x3C, 2);
    size_t len = (size_t)(shoff + (uint64_t)shentsize * shnum);
    if (len < 64 || len > ((size_t)1 << 31)) return ERR_INVALID_IMAGE;
    Module *m = calloc(1, sizeof *m);
    if (!m || !(m->image = malloc(len))) {
        free(m);
        return ERR_OUT_OF_MEMORY;
    }
    memcpy(m->image, image, len);
    m->image_len = len;
    *out = m;
    return OK;
}

/* ---- source modules -------------------------------------------------------------------------- */

static const char prelude[] =
    "#include <math.h>\n"
    "#define int64_t netc_emu_i64\n"
    "#define int32_t netc_emu_i32\n"
    "#define uint64_t netc_emu_u64\n"
    "#undef INFINITY\n#undef NAN\n"
    "#define __global__\n"
    "#define __device__\n"
    "#define __launch_bounds__(n)\n"
    "struct netc_emu_dim3 { unsigned x, y, z; };\n"
    "static netc_emu_dim3 blockIdx, blockDim, threadIdx, gridDim;\n"
    "extern \"C\" void netc_emu_set(unsigned b, unsigned bd, unsigned t, unsigned gd)\n"
    "{ blockIdx.x = b; blockDim.x = bd; threadIdx.x = t; gridDim.x = gd; }\n"
    "static inline float __int_as_float(int i) { union { int i; float f; } u; u.i = i; return u.f; }\n";

typedef struct { char *s; size_t n, cap; } Buf;

static void put(Buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (!b->s) abort();
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }

/* For every `extern "C" __global__ void __launch_bounds__(N) NAME(PARAMS)`:
 * a trampoline netc_emu_call_NAME(void **a) calling NAME((TYPE)*(void **)a[0], ...).
 * Returns the names found (count in *n). */
static char **trampolines(const char *src, Buf *out, int *n)
{
    static const char key[] = "__global__ void __launch_bounds__(";
    char **names = NULL;
    int cnt = 0;
    for (const char *p = strstr(src, key); p; p = strstr(p + 1, key)) {
        const char *q = strchr(p + sizeof key - 1, ')');
        if (!q) break;
        q++;
        while (*q == ' ') q++;
        const char *nb = q;
        while (isalnum((unsigned char)*q) || *q == '_') q++;
        size_t nl = (size_t)(q - nb);
        if (*q != '(') continue;
        const char *pe = strchr(q, ')');
        if (!pe) break;
        names = realloc(names, sizeof *names * (size_t)(cnt + 1));
        names[cnt] = strndup(nb, nl);
        puts_(out, "extern \"C\" void netc_emu_call_");
        puts_(out, names[cnt]);
        puts_(out, "(void **a) { ");
        puts_(out, names[cnt]);
        puts_(out, "(");
        cnt++;
        int j = 0;
        for (const char *s = q + 1; s < pe;) {   /* each parameter: TYPE NAME */
            const char *e = memchr(s, ',', (size_t)(pe - s));
            if (!e) e = pe;
            const char *ne = e;
            while (ne > s && ne[-1] == ' ') ne--;
            const char *ns = ne;
            while (ns > s && (isalnum((unsigned char)ns[-1]) || ns[-1] == '_')) ns--;
            const char *ts = s;
            while (*ts == ' ') ts++;
            char idx[32];
            snprintf(idx, sizeof idx, "%s(", j ? ", " : "");
            puts_(out, idx);
            put(out, ts, (size_t)(ns - ts));
            snprintf(idx, sizeof idx, ")*(void **)a[%d]", j);
            puts_(out, idx);
            j++;
            s = e < pe ? e + 1 : pe;
        }
        puts_(out, "); }\n");
    }
    *n = cnt;
    return names;
}

static int write_file(const char *path, const char *s, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    size_t w = fwrite(s, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void remove_dir(const char *dir)
{
    static const char *const files[] = { "prelude.h", "module.cu", "module.so" };
    char p[128];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

CUresult netc_emu_load_source(void **out, const char *src)
{
    Module *m = calloc(1, sizeof *m);
    if (!m) return ERR_OUT_OF_MEMORY;
    const char *tmp = getenv("TMPDIR");
    snprintf(m->dir, sizeof m->dir, "%s/netc-cudaemu-XXXXXX", tmp && strlen(tmp) < 40 ? tmp : "/tmp");
    if (!mkdtemp(m->dir)) {
        free(m);
        return ERR_OUT_OF_MEMORY;
    }
    Buf b = { 0 };
    puts_(&b, src);
    puts_(&b, "\n");
    char **names = trampolines(src, &b, &m->nf);
    char pre[128], cu[128], so[128];
    snprintf(pre, sizeof pre, "%s/prelude.h", m->dir);
    snprintf(cu, sizeof cu, "%s/module.cu", m->dir);
    snprintf(so, sizeof so, "%s/module.so", m->dir);
    int rc = write_file(pre, prelude, strlen(prelude)) | write_file(cu, b.s, b.n);
    free(b.s);
    if (rc == 0) {
        const char *cxx = getenv("CXX");
        pid_t pid = fork();
        if (pid == 0) {
            execlp(cxx && *cxx ? cxx : "c++", cxx && *cxx ? cxx : "c++", "-x", "c++", "-O1", "-w", "-fPIC", "-shared",
                   "-include", pre, cu, "-o", so, (char *)NULL);
            _exit(127);
        }
        int st = 0;
        rc = pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
    }
    if (rc == 0) m->so = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (m->so) {
        void *p = dlsym(m->so, "netc_emu_set");
        memcpy(&m->set, &p, sizeof p);
        m->f = calloc((size_t)(m->nf > 0 ? m->nf : 1), sizeof *m->f);
        for (int i = 0; i < m->nf; i++) {
            char sym[300];
            snprintf(sym, sizeof sym, "netc_emu_call_%s", names[i]);
            void *q = dlsym(m->so, sym);
            m->f[i].name = names[i];
            m->f[i].m = m;
            memcpy(&m->f[i].fn, &q, sizeof q);
            names[i] = NULL;
        }
    }
    for (int i = 0; i < m->nf; i++) free(names[i]);
    free(names);
    remove_dir(m->dir);   /* the library stays mapped */
    if (!m->so || !m->set) {
        if (m->so) dlclose(m->so);
        free(m->f);
        free(m);
        return ERR_LAUNCH_FAILED;
    }
    *out = m;
    return OK;
}

CUresult cuModuleUnload(void *mod)
{
    Module *m = mod;
    if (!m) return ERR_INVALID_VALUE;
    for (int i = 0; i < m->nf; i++) free(m->f[i].name);
    free(m->f);
    if (m->so) dlclose(m->so);
    free(m->image);
    free(m);
    return OK;
}

CUresult cuModuleGetFunction(void **out, void *mod, const char *name)
{
    Module *m = mod;
    static Func not_runnable = { 0 };
    if (m->image) return memmem(m->image, m->image_len, name, strlen(name) + 1) ? (*out = &not_runnable, OK) : ERR_NOT_FOUND;
    for (int i = 0; i < m->nf; i++)
        if (strcmp(m->f[i].name, name) == 0 && m->f[i].fn) {
            *out = &m->f[i];   /* owned by the module, as in CUDA */
            return OK;
        }
    return ERR_NOT_FOUND;
}

CUresult cuLaunchKernel(void *func, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, void *stream, void **params, void **extra)
{
    (void)shmem;
    (void)stream;
    (void)extra;
    const Func *f = func;
    if (gy != 1 || gz != 1 || by != 1 || bz != 1 || !f || !f->fn) return ERR_INVALID_VALUE;
    for (unsigned b = 0; b < gx; b++)
        for (unsigned t = 0; t < bx; t++) {
            f->m->set(b, bx, t, gx);
            f->fn(params);
        }
    return OK;
}
