/* l3_cuda.c — the CUDA C printer of the L3 loop IR (for NVRTC) and the
 * launch table.
 *
 * The semantics are exactly those of l3_print_c (l3.c); only the mapping of
 * loop iterations onto GPU threads differs.
 *
 * Mapping.  A kernel is printed as one or more `extern "C" __global__`
 * functions, launched in order on one stream:
 *
 *  - A kernel whose body is one statement is one function, named as the
 *    kernel.  A kernel whose body has several top-level statements (concat:
 *    one loop nest per input; the parts of a kernel that run one after the
 *    other) is one function per top-level statement, NAME_part0, NAME_part1,
 *    ..., so every statement sees the effects of the ones before it, as in
 *    the sequential C.  When a top-level statement declares or assigns a
 *    local (which a later statement could read), the kernel cannot be split:
 *    it becomes one function run by a single thread (correct, slow; no
 *    lowering produces such a kernel today).
 *
 *  - In each function, the outermost perfectly nested loops become one
 *    flattened 64-bit global thread index: the first loop if it is
 *    L3_PARALLEL, then each loop that is the only statement of the loop
 *    above it (the innermost L3_VECTORIZE one included).  A nested loop that
 *    is not itself L3_PARALLEL is collapsed only when its iterations are
 *    visibly independent: every store below it indexes with its variable,
 *    and a buffer that is stored below it is read only at an index that is
 *    also stored (so a reduction into a buffer, or a scan, stays a loop in
 *    its thread).  The loop variables are recovered by % and / (innermost
 *    fastest, so neighbouring threads touch neighbouring elements), and
 *    everything inside runs per thread, locals included.  A function whose
 *    first statement is not a parallel loop runs on one thread.
 *
 *  - Threads: total = product of the collapsed extents (1 if none, 0 if an
 *    extent is 0: the runtime must not launch those), block =
 *    L3_CUDA_BLOCK (fewer, a multiple of 32, when total is smaller), grid =
 *    ceil(total / block) (CUDA allows up to 2^31 - 1 blocks; netc's tensors
 *    stay far below).  No shared memory.
 *
 * Floating point: NVRTC is asked for --fmad=false (runtime/nvrtc.c), so a
 * * b + c rounds twice as in the C backend; L3E_FMA is fmaf.  The math
 * functions (expf, logf, tanhf, expm1f, sqrtf, ...) are CUDA's device
 * builtins: no header is needed.
 */
#define _POSIX_C_SOURCE 200809L
#include "l3_cuda.h"
#include "l3_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_COLLAPSE 16
#define MAX_TOTAL ((int64_t)1 << 62)

/* One __global__ function. */
typedef struct {
    const L3Stmt *const *stmts;   /* what it runs (outside any collapsed loop) */
    int nstmts;
    int part;                     /* -1: the whole kernel */
    const L3Stmt *loops[MAX_COLLAPSE];
    int nloops;
    int64_t total;
} Part;

/* ---- analysis ---------------------------------------------------------------------------------- */

static void plan_part(Part *p, const L3Stmt *const *stmts, int n, int part)
{
    memset(p, 0, sizeof *p);
    p->stmts = stmts;
    p->nstmts = n;
    p->part = part;
    p->total = 1;
    if (n != 1 || stmts[0]->kind != L3S_FOR || !(stmts[0]->annot & L3_PARALLEL)) return;
    const L3Stmt *s = stmts[0];
    for (;;) {
        if (s->extent <= 0) {   /* the nest runs zero times */
            p->total = 0;
            p->nloops = 0;
            return;
        }
        if (p->total > MAX_TOTAL / s->extent) return;
        p->total *= s->extent;
        p->loops[p->nloops++] = s;
        if (p->nloops == MAX_COLLAPSE || s->body.n != 1) return;
        const L3Stmt *in = s->body.s[0];
        if (in->kind != L3S_FOR || !l3_loop_independent(in)) return;
        s = in;
    }
}

/* The functions of kernel k (at most max(1, body.n)); returns the count. */
static int plan_kernel(const L3Kernel *k, Part *parts)
{
    const L3Block *b = &k->body;
    bool split = b->n > 1;
    for (int i = 0; split && i < b->n; i++)
        split = b->s[i]->kind != L3S_LOCAL && b->s[i]->kind != L3S_ASSIGN;
    if (!split) {
        plan_part(&parts[0], (const L3Stmt *const *)b->s, b->n, -1);
        return 1;
    }
    for (int i = 0; i < b->n; i++) plan_part(&parts[i], (const L3Stmt *const *)&b->s[i], 1, i);
    return b->n;
}

static Part *kernel_parts(const L3Kernel *k, int *n)
{
    Part *p = xmalloc(sizeof *p * (size_t)(k->body.n > 1 ? k->body.n : 1));
    *n = plan_kernel(k, p);
    return p;
}

static int block_size(int64_t total)
{
    if (total >= L3_CUDA_BLOCK) return L3_CUDA_BLOCK;
    int b = (int)((total + 31) / 32) * 32;
    return b < 32 ? 32 : b;
}

static char *part_name(const L3Kernel *k, const Part *p)
{
    size_t n = strlen(k->name) + 32;
    char *s = xmalloc(n);
    if (p->part < 0) snprintf(s, n, "%s", k->name);
    else snprintf(s, n, "%s_part%d", k->name, p->part);
    return s;
}

/* ---- printing ---------------------------------------------------------------------------------- */

static const char *var_name(const L3Kernel *k, int v) { return v >= 0 && v < k->nvars ? k->vars[v].name : "netc_bad_var"; }
static const char *buf_name(const L3Kernel *k, int b) { return b >= 0 && b < k->nbufs ? k->bufs[b].name : "netc_bad_buf"; }

static void indent(FILE *out, int d)
{
    for (int i = 0; i < d; i++) fputs("    ", out);
}

static void print_block(FILE *out, const L3Kernel *k, const L3Block *b, int d);

static void print_stmt(FILE *out, const L3Kernel *k, const L3Stmt *s, int d)
{
    indent(out, d);
    switch (s->kind) {
    case L3S_FOR: {
        const char *v = var_name(k, s->var);
        if (s->annot) {
            fprintf(out, "/*%s%s%s */\n", s->annot & L3_PARALLEL ? " parallel" : "",
                    s->annot & L3_VECTORIZE ? " vectorize" : "", s->annot & L3_UNROLL ? " unroll" : "");
            indent(out, d);
        }
        fprintf(out, "for (%s %s = 0; %s < %" PRId64 "LL; %s++) {\n",
                s->var >= 0 && s->var < k->nvars ? l3_ctype(k->vars[s->var].type) : "int64_t", v, v, s->extent, v);
        print_block(out, k, &s->body, d + 1);
        indent(out, d);
        fputs("}\n", out);
        return;
    }
    case L3S_LOCAL:
        fprintf(out, "%s %s = ", s->var >= 0 && s->var < k->nvars ? l3_ctype(k->vars[s->var].type) : "int64_t",
                var_name(k, s->var));
        l3_print_expr(out, k, s->value);
        fputs(";\n", out);
        return;
    case L3S_ASSIGN:
        fprintf(out, "%s = ", var_name(k, s->var));
        l3_print_expr(out, k, s->value);
        fputs(";\n", out);
        return;
    case L3S_STORE:
        fprintf(out, "%s[", buf_name(k, s->buf));
        l3_print_expr(out, k, s->index);
        fprintf(out, "] %s ", s->accumulate ? "+=" : "=");
        l3_print_expr(out, k, s->value);
        fputs(";\n", out);
        return;
    case L3S_IF:
        fputs("if (", out);
        l3_print_expr(out, k, s->cond);
        fputs(") {\n", out);
        print_block(out, k, &s->body, d + 1);
        indent(out, d);
        if (s->els.n) {
            fputs("} else {\n", out);
            print_block(out, k, &s->els, d + 1);
            indent(out, d);
        }
        fputs("}\n", out);
        return;
    case L3S_BLOCK:
        fputs("{\n", out);
        print_block(out, k, &s->body, d + 1);
        indent(out, d);
        fputs("}\n", out);
        return;
    }
}

static void print_block(FILE *out, const L3Kernel *k, const L3Block *b, int d)
{
    for (int i = 0; i < b->n; i++) print_stmt(out, k, b->s[i], d);
}

static void print_function(FILE *out, const L3Kernel *k, const Part *p)
{
    char *name = part_name(k, p);
    fputs("/* ", out);
    l3_print_comment(out, k->comment);
    if (p->part >= 0) fprintf(out, " (part %d)", p->part);
    fprintf(out, ": %" PRId64 " threads */\n", p->total);
    fprintf(out, "extern \"C\" __global__ void __launch_bounds__(%d) %s(", L3_CUDA_BLOCK, name);
    for (int j = 0; j < k->nbufs; j++)
        fprintf(out, "%s%s%s *__restrict__ %s", j ? ", " : "", k->bufs[j].written ? "" : "const ",
                k->bufs[j].elem == L3_I32 ? "int32_t" : "float", k->bufs[j].name);
    fputs(")\n{\n", out);
    free(name);
    if (p->total == 0) {
        fputs("    /* a loop of extent 0: nothing to do (not launched) */\n}\n\n", out);
        return;
    }
    fputs("    const long long netc_idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n", out);
    fprintf(out, "    if (netc_idx >= %" PRId64 "LL) return;\n", p->total);
    if (p->nloops > 0) {
        fputs("    long long netc_rem = netc_idx;\n", out);
        for (int i = p->nloops - 1; i >= 0; i--) {
            const L3Stmt *l = p->loops[i];
            const char *t = l->var >= 0 && l->var < k->nvars ? l3_ctype(k->vars[l->var].type) : "int64_t";
            fputs("    ", out);
            if (l->annot)
                fprintf(out, "/*%s%s%s */ ", l->annot & L3_PARALLEL ? " parallel" : "",
                        l->annot & L3_VECTORIZE ? " vectorize" : "", l->annot & L3_UNROLL ? " unroll" : "");
            if (i == 0) fprintf(out, "%s %s = (%s)netc_rem;\n", t, var_name(k, l->var), t);
            else {
                fprintf(out, "%s %s = (%s)(netc_rem %% %" PRId64 "LL);\n", t, var_name(k, l->var), t, l->extent);
                fprintf(out, "    netc_rem /= %" PRId64 "LL;\n", l->extent);
            }
        }
        print_block(out, k, &p->loops[p->nloops - 1]->body, 1);
    } else {
        for (int i = 0; i < p->nstmts; i++) print_stmt(out, k, p->stmts[i], 1);
    }
    fputs("}\n\n", out);
}

static const char preamble[] =
    "typedef long long int64_t;\n"
    "typedef int int32_t;\n"
    "#define INFINITY __int_as_float(0x7f800000)\n"
    "#define NAN __int_as_float(0x7fc00000)\n"
    "#define NETC_MIN(a, b) ((a) < (b) ? (a) : (b))\n"
    "#define NETC_MAX(a, b) ((a) > (b) ? (a) : (b))\n\n";

static void print_launch_table(FILE *out, const L3Module *m)
{
    fputs("/* Launch table (host side).  The runtime launches, per entry and in order, each\n"
          " * function with `grid` blocks of `block` threads (not at all when total is 0),\n"
          " * passing the graph tensors `params` (indices into the entry's void **t) as its\n"
          " * pointer arguments.  l3_cuda_launches() returns the same rows.\n", out);
    for (int e = 0; e < m->nentries; e++) {
        L3CudaLaunch *l;
        int n = l3_cuda_launches(m, e, &l);
        int maxp = 1;
        for (int i = 0; i < n; i++) maxp = l[i].nparams > maxp ? l[i].nparams : maxp;
        fputs(" *\n * static const struct { const char *name; long long total; int block; long long grid;\n", out);
        fprintf(out, " *                      int nparams; int params[%d]; } ", maxp);
        l3_print_comment(out, m->entries[e].name);
        fputs("_launches[] = {\n", out);
        for (int i = 0; i < n; i++) {
            fprintf(out, " *     { \"%s\", %" PRId64 ", %d, %" PRId64 ", %d, {", l[i].name, l[i].total, l[i].block,
                    l[i].grid, l[i].nparams);
            for (int j = 0; j < l[i].nparams; j++) fprintf(out, "%s %d", j ? "," : "", l[i].params[j]);
            fputs(" } },\n", out);
        }
        fputs(" * };\n", out);
        l3_cuda_launches_free(l, n);
    }
    fputs(" */\n", out);
}

static void print_kernels(FILE *out, const L3Module *m, int first, int count)
{
    for (int i = first; i < first + count && i < m->nkernels; i++) {
        const L3Kernel *k = &m->kernels[i];
        int n;
        Part *p = kernel_parts(k, &n);
        for (int j = 0; j < n; j++) print_function(out, k, &p[j]);
        free(p);
    }
}

void l3_print_cuda(FILE *out, const L3Module *m)
{
    fputs("/* ", out);
    l3_print_comment(out, m->name);
    fputs(" — CUDA C generated by netc for NVRTC; do not edit. */\n", out);
    bool u64 = l3_module_uses_u64(m);   /* dropout's random numbers */
    if (u64) fputs("typedef unsigned long long uint64_t;\n", out);
    fputs(preamble, out);
    if (u64) l3_print_mix64(out, true);
    print_kernels(out, m, 0, m->nkernels);
    print_launch_table(out, m);
}

void l3_print_cuda_kernels(FILE *out, const L3Module *m, int first, int count)
{
    fputs("/* ", out);
    l3_print_comment(out, m->name);
    fprintf(out, ", kernels %d to %d — CUDA C generated by netc for NVRTC; do not edit. */\n", first, first + count - 1);
    bool u64 = l3_module_uses_u64(m);
    if (u64) fputs("typedef unsigned long long uint64_t;\n", out);
    fputs(preamble, out);
    if (u64) l3_print_mix64(out, true);
    print_kernels(out, m, first, count);
}

int l3_cuda_launches(const L3Module *m, int entry, L3CudaLaunch **out)
{
    *out = NULL;
    if (!m || entry < 0 || entry >= m->nentries) return -1;
    const L3Entry *e = &m->entries[entry];
    L3CudaLaunch *l = NULL;
    int n = 0, cap = 0;
    for (int c = 0; c < e->nkernels; c++) {
        int ki = e->kernels[c];
        if (ki < 0 || ki >= m->nkernels) continue;
        const L3Kernel *k = &m->kernels[ki];
        int np;
        Part *p = kernel_parts(k, &np);
        for (int j = 0; j < np; j++) {
            GROW(l, n, cap);
            L3CudaLaunch *r = &l[n++];
            r->name = part_name(k, &p[j]);
            r->kernel = ki;
            r->part = p[j].part;
            r->total = p[j].total;
            r->block = block_size(p[j].total);
            r->grid = (p[j].total + r->block - 1) / r->block;
            r->nparams = k->nbufs;
            r->params = xmalloc(sizeof(int) * (size_t)(k->nbufs > 0 ? k->nbufs : 1));
            for (int b = 0; b < k->nbufs; b++) r->params[b] = k->bufs[b].tensor;
        }
        free(p);
    }
    *out = l;
    return n;
}

void l3_cuda_launches_free(L3CudaLaunch *l, int n)
{
    for (int i = 0; l && i < n; i++) {
        free(l[i].name);
        free(l[i].params);
    }
    free(l);
}
