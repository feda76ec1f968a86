/* nvrtc.c — NVRTC through dlopen (see nvrtc.h).  The few NVRTC entry points
 * are declared here as function-pointer types (signatures from CUDA 13's
 * nvrtc.h), so no CUDA header or library is needed to build netc. */
#define _POSIX_C_SOURCE 200809L
#include "nvrtc.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef int nvrtcResult;   /* NVRTC_SUCCESS = 0 */
typedef struct _nvrtcProgram *nvrtcProgram;
enum { NVRTC_SUCCESS = 0, NVRTC_ERROR_COMPILATION = 6 };

typedef nvrtcResult (*CreateProgramFn)(nvrtcProgram *prog, const char *src, const char *name, int num_headers,
                                       const char *const *headers, const char *const *include_names);
typedef nvrtcResult (*CompileProgramFn)(nvrtcProgram prog, int num_options, const char *const *options);
typedef nvrtcResult (*GetSizeFn)(nvrtcProgram prog, size_t *size);
typedef nvrtcResult (*GetDataFn)(nvrtcProgram prog, char *data);
typedef nvrtcResult (*DestroyProgramFn)(nvrtcProgram *prog);
typedef const char *(*GetErrorStringFn)(nvrtcResult r);
typedef nvrtcResult (*VersionFn)(int *major, int *minor);

static struct {
    void *so;
    char path[256];
    CreateProgramFn create;
    CompileProgramFn compile;
    GetSizeFn log_size, ptx_size, cubin_size;
    GetDataFn log, ptx, cubin;
    DestroyProgramFn destroy;
    GetErrorStringFn errstr;
    VersionFn version;
} nv;

static void *sym(const char *name, char *err, size_t errlen, bool *ok)
{
    void *p = dlsym(nv.so, name);
    if (!p && *ok) {
        snprintf(err, errlen, "NVRTC (%s) lacks the symbol %s", nv.path, name);
        *ok = false;
    }
    return p;
}

#define SYM(field, name)                                                                \
    do {                                                                                \
        void *p_ = sym(name, err, errlen, &ok);                                         \
        memcpy(&nv.field, &p_, sizeof nv.field); /* object to function pointer */       \
    } while (0)

static bool load(char *err, size_t errlen)
{
    if (nv.so) return true;
    static const char *const paths[] = { "libnvrtc.so.13", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13" };
    const char *env = getenv("NETC_NVRTC");
    char tried[1024] = "";
    size_t used = 0;
    int n = env && *env ? 1 : (int)(sizeof paths / sizeof paths[0]);
    for (int i = 0; i < n && !nv.so; i++) {
        const char *path = env && *env ? env : paths[i];
        /* NODELETE: NVRTC allocates at load time (its C++ runtime's pools);
         * unloading it would turn those into leaks, loading it again would
         * allocate them again. */
        nv.so = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (nv.so) snprintf(nv.path, sizeof nv.path, "%s", path);
        else if (used < sizeof tried) {
            const char *why = dlerror();
            int k = snprintf(tried + used, sizeof tried - used, "\n  %s: %s", path, why ? why : "not found");
            if (k > 0) used += (size_t)k;
        }
    }
    if (!nv.so) {
        snprintf(err, errlen, "cannot load NVRTC (the CUDA runtime compiler; CUDA 13 in /usr/local/cuda, or set "
                 "NETC_NVRTC to libnvrtc.so's path); tried:%s", tried);
        return false;
    }
    bool ok = true;
    SYM(create, "nvrtcCreateProgram");
    SYM(compile, "nvrtcCompileProgram");
    SYM(log_size, "nvrtcGetProgramLogSize");
    SYM(log, "nvrtcGetProgramLog");
    SYM(ptx_size, "nvrtcGetPTXSize");
    SYM(ptx, "nvrtcGetPTX");
    SYM(cubin_size, "nvrtcGetCUBINSize");
    SYM(cubin, "nvrtcGetCUBIN");
    SYM(destroy, "nvrtcDestroyProgram");
    SYM(errstr, "nvrtcGetErrorString");
    SYM(version, "nvrtcVersion");
    if (!ok) {
        nvrtc_unload();
        return false;
    }
    return true;
}

/* The library stays mapped (RTLD_NODELETE); this forgets it, so the next use
 * looks it up again (for $NETC_NVRTC changes and tests). */
void nvrtc_unload(void)
{
    if (nv.so) dlclose(nv.so);
    memset(&nv, 0, sizeof nv);
}

bool nvrtc_available(char *err, size_t errlen)
{
    return load(err, errlen);
}

bool nvrtc_version(int *major, int *minor)
{
    char err[64];
    return load(err, sizeof err) && nv.version(major, minor) == NVRTC_SUCCESS;
}

/* ---- messages ------------------------------------------------------------------------------------ */

typedef struct { char *s; size_t n, cap; } Str;

static void str_add(Str *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->n + (size_t)k + 1 > b->cap) {
        b->cap = (b->n + (size_t)k + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

#define PROGRAM_NAME "netc.cu"
#define CONTEXT 3
#define MAX_MARKED 64

/* The line numbers the log reports, "netc.cu(LINE): error ..." (errors
 * only, or every reported line when none is an error). */
static int log_lines(const char *log, int *lines, int max)
{
    int n = 0;
    for (int pass = 0; pass < 2 && n == 0; pass++)
        for (const char *p = log; p && *p && n < max;) {
            const char *eol = strchr(p, '\n');
            size_t len = eol ? (size_t)(eol - p) : strlen(p);
            const char *q = strstr(p, PROGRAM_NAME "(");
            if (q && q < p + len) {
                long v = strtol(q + strlen(PROGRAM_NAME "("), NULL, 10);
                const char *e = strstr(q, "error");
                bool is_err = e && e < p + len;
                if (v > 0 && (pass == 1 || is_err)) lines[n++] = (int)v;
            }
            p = eol ? eol + 1 : p + len;
        }
    return n;
}

/* The source lines around the reported ones, numbered; reported lines marked ">". */
static void numbered_context(Str *b, const char *src, const int *marked, int nmarked)
{
    int line = 1;
    bool gap = false;
    for (const char *p = src; *p; line++) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        bool show = nmarked == 0 && line <= 40, mark = false;
        for (int i = 0; i < nmarked; i++) {
            if (line >= marked[i] - CONTEXT && line <= marked[i] + CONTEXT) show = true;
            if (line == marked[i]) mark = true;
        }
        if (show) {
            if (gap) str_add(b, "      ...\n");
            str_add(b, "%s%5d | %.*s\n", mark ? ">" : " ", line, (int)len, p);
            gap = false;
        } else
            gap = line > 1;
        p = eol ? eol + 1 : p + len;
    }
}

static void compile_error(const char *what, nvrtcResult r, const char *log, const char *src, char *err,
                          size_t errlen)
{
    if (!err || errlen == 0) return;
    Str head = { 0 }, ctx = { 0 };
    str_add(&head, "NVRTC: %s failed: %s\n", what, nv.errstr ? nv.errstr(r) : "?");
    if (src) {
        int marked[MAX_MARKED];
        int n = log_lines(log, marked, MAX_MARKED);
        str_add(&ctx, "source (" PROGRAM_NAME ")%s:\n", n ? " around the reported lines" : ", first lines");
        numbered_context(&ctx, src, marked, n);
    }
    /* the header, then as much of the log as leaves room for the source lines
     * (at least half of err), then the source lines */
    size_t loglen = log ? strlen(log) : 0;
    size_t room = errlen - 1 > head.n ? errlen - 1 - head.n : 0;
    size_t keep_ctx = ctx.n < room / 2 ? ctx.n : room / 2;
    size_t lmax = room > keep_ctx ? room - keep_ctx : 0;
    size_t ll = loglen < lmax ? loglen : lmax;
    snprintf(err, errlen, "%s%.*s%s%s", head.s ? head.s : "", (int)ll, log ? log : "",
             ll && log[ll - 1] != '\n' ? "\n" : "", ctx.s ? ctx.s : "");
    free(head.s);
    free(ctx.s);
}

static char *take(nvrtcProgram prog, GetSizeFn size_fn, GetDataFn data_fn, size_t *len, nvrtcResult *r)
{
    size_t n = 0;
    *r = size_fn(prog, &n);
    if (*r != NVRTC_SUCCESS) return NULL;
    char *s = xmalloc(n + 1);
    if (n) *r = data_fn(prog, s);
    if (*r != NVRTC_SUCCESS) {
        free(s);
        return NULL;
    }
    s[n] = 0;
    if (len) *len = n;
    return s;
}

int nvrtc_compile(const char *src, const char *arch, char **ptx, size_t *ptx_len, char **cubin, size_t *cubin_len,
                  char *err, size_t errlen)
{
    char dummy[8];
    if (!err || errlen == 0) err = dummy, errlen = sizeof dummy;
    err[0] = 0;
    if (ptx) *ptx = NULL;
    if (ptx_len) *ptx_len = 0;
    if (cubin) *cubin = NULL;
    if (cubin_len) *cubin_len = 0;
    if (!src) {
        snprintf(err, errlen, "NVRTC: no source");
        return -1;
    }
    if (!load(err, errlen)) return -1;
    if (!arch || !*arch) arch = "sm_90";
    char archopt[64];
    snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
    const char *opts[] = { archopt, "--fmad=false" };

    nvrtcProgram prog = NULL;
    nvrtcResult r = nv.create(&prog, src, PROGRAM_NAME, 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
        compile_error("nvrtcCreateProgram", r, NULL, NULL, err, errlen);
        return -1;
    }
    r = nv.compile(prog, (int)(sizeof opts / sizeof opts[0]), opts);
    if (r != NVRTC_SUCCESS) {
        nvrtcResult r2;
        char *log = take(prog, nv.log_size, nv.log, NULL, &r2);
        compile_error(r == NVRTC_ERROR_COMPILATION ? "compiling" : "nvrtcCompileProgram", r, log, src, err, errlen);
        free(log);
        nv.destroy(&prog);
        return -1;
    }
    char *p = NULL, *c = NULL;
    size_t plen = 0, clen = 0;
    if (ptx) {
        p = take(prog, nv.ptx_size, nv.ptx, &plen, &r);
        if (!p) {
            compile_error("nvrtcGetPTX", r, NULL, NULL, err, errlen);
            nv.destroy(&prog);
            return -1;
        }
        if (plen && p[plen - 1] == 0) plen--;   /* the size counts the terminating NUL */
    }
    if (cubin) {
        c = take(prog, nv.cubin_size, nv.cubin, &clen, &r);
        if (!c) {
            compile_error("nvrtcGetCUBIN", r, NULL, NULL, err, errlen);
            free(p);
            nv.destroy(&prog);
            return -1;
        }
    }
    nv.destroy(&prog);
    if (ptx) *ptx = p;
    if (ptx_len) *ptx_len = plen;
    if (cubin) *cubin = c;
    if (cubin_len) *cubin_len = clen;
    return 0;
}
