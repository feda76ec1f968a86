/* cbackend.c — compile generated C into a shared object and load it. */
#define _POSIX_C_SOURCE 200809L
#include "cbackend.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct CBackend {
    void *so;
    char dir[64];
};

static void cleanup_dir(const char *dir)
{
    char p[128];
    const char *files[] = { "net.c", "net.so", "cc.log" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

CBackend *cbackend_compile(const L3Module *m, char *err, size_t errlen)
{
    CBackend *b = calloc(1, sizeof *b);
    if (!b) { snprintf(err, errlen, "out of memory"); return NULL; }
    const char *tmp = getenv("TMPDIR");
    snprintf(b->dir, sizeof b->dir, "%s/netc-XXXXXX", tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
    if (!mkdtemp(b->dir)) {
        snprintf(err, errlen, "cannot create a temporary folder in %s", tmp ? tmp : "/tmp");
        free(b);
        return NULL;
    }
    char src[128], so[128], log[128];
    snprintf(src, sizeof src, "%s/net.c", b->dir);
    snprintf(so, sizeof so, "%s/net.so", b->dir);
    snprintf(log, sizeof log, "%s/cc.log", b->dir);
    FILE *f = fopen(src, "w");
    if (!f) { snprintf(err, errlen, "cannot write %s", src); cleanup_dir(b->dir); free(b); return NULL; }
    l3_print_c(f, m);
    if (fclose(f) != 0) { snprintf(err, errlen, "cannot write %s", src); cleanup_dir(b->dir); free(b); return NULL; }
    const char *cc = getenv("CC");
    if (!cc || !*cc || strpbrk(cc, "'\"`$;&|<>")) cc = "cc";
    /* -O2, not -O3: GCC 12.2's -O3 loop vectorizer miscompiles a plain
     * select (`0 < x[i] ? dy[i] : 0` in nested loops of constant trip
     * counts) with -march=znver3 or newer; the codegen tests caught it.
     * NETC_CFLAGS replaces the optimization flags. */
    const char *opt = getenv("NETC_CFLAGS");
    if (!opt || !*opt || strpbrk(opt, "'\"`$;&|<>")) opt = "-O2 -march=native";
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s -std=c11 %s -Wall -Wextra -Werror -fPIC -shared -o '%s' '%s' -lm > '%s' 2>&1",
             cc, opt, so, src, log);
    int rc = system(cmd);
    if (rc != 0) {
        int k = snprintf(err, errlen, "the C compiler failed on the generated code (%s, status %d): ", src, rc);
        FILE *l = fopen(log, "r");
        if (l && k >= 0 && (size_t)k < errlen) {
            size_t got = fread(err + k, 1, errlen - (size_t)k - 1, l);
            err[k + (int)got] = 0;
        }
        if (l) fclose(l);
        if (!getenv("NETC_KEEP_GENERATED")) cleanup_dir(b->dir);
        free(b);
        return NULL;
    }
    b->so = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!b->so) {
        snprintf(err, errlen, "cannot load %s: %s", so, dlerror());
        cleanup_dir(b->dir);
        free(b);
        return NULL;
    }
    if (!getenv("NETC_KEEP_GENERATED")) cleanup_dir(b->dir);   /* the mapping stays valid */
    return b;
}

NetcEntry cbackend_entry(CBackend *b, const char *name)
{
    void *p = dlsym(b->so, name);
    NetcEntry e;
    memcpy(&e, &p, sizeof e);   /* object to function pointer, without the ISO C warning */
    return e;
}

void cbackend_free(CBackend *b)
{
    if (!b) return;
    if (b->so) dlclose(b->so);
    free(b);
}
