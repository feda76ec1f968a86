/* l3.c — building the L3 loop IR, and the C printer. */
#define _POSIX_C_SOURCE 200809L
#include "l3.h"
#include "l3_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct L3Chunk { L3Chunk *next; size_t used, cap; _Alignas(16) char data[]; };

static void *alloc(L3Module *m, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!m->mem || m->mem->used + n > m->mem->cap) {
        size_t cap = n > 65536 ? n : 65536;
        L3Chunk *c = xmalloc(sizeof *c + cap);
        c->next = m->mem;
        c->used = 0;
        c->cap = cap;
        m->mem = c;
    }
    void *p = m->mem->data + m->mem->used;
    m->mem->used += n;
    memset(p, 0, n);
    return p;
}

L3Module *l3_module_new(const char *name, int ntensors)
{
    L3Module *m = xcalloc(1, sizeof *m);
    m->name = xstrdup(name ? name : "net");
    m->ntensors = ntensors;
    return m;
}

static void block_free(L3Block *b)
{
    for (int i = 0; i < b->n; i++) {
        block_free(&b->s[i]->body);
        block_free(&b->s[i]->els);
    }
    free(b->s);
}

void l3_module_free(L3Module *m)
{
    if (!m) return;
    for (int i = 0; i < m->nkernels; i++) {
        L3Kernel *k = &m->kernels[i];
        free(k->name);
        free(k->comment);
        for (int j = 0; j < k->nbufs; j++) free(k->bufs[j].name);
        for (int j = 0; j < k->nvars; j++) free(k->vars[j].name);
        free(k->bufs);
        free(k->vars);
        block_free(&k->body);
    }
    free(m->kernels);
    for (int i = 0; i < m->nentries; i++) {
        free(m->entries[i].name);
        free(m->entries[i].kernels);
    }
    free(m->entries);
    while (m->mem) {
        L3Chunk *n = m->mem->next;
        free(m->mem);
        m->mem = n;
    }
    free(m->name);
    free(m);
}

L3Kernel *l3_kernel_new(L3Module *m, const char *name, const char *comment)
{
    GROW(m->kernels, m->nkernels, m->capkernels);
    L3Kernel *k = &m->kernels[m->nkernels++];
    memset(k, 0, sizeof *k);
    k->name = xstrdup(name);
    k->comment = xstrdup(comment ? comment : "");
    return k;
}

/* Buffer and variable names share one C scope: keep them all distinct. */
static bool name_taken(const L3Kernel *k, const char *name)
{
    for (int i = 0; i < k->nbufs; i++)
        if (strcmp(k->bufs[i].name, name) == 0) return true;
    for (int i = 0; i < k->nvars; i++)
        if (strcmp(k->vars[i].name, name) == 0) return true;
    return false;
}

static char *unique_name(const L3Kernel *k, const char *want)
{
    char nm[128];
    snprintf(nm, sizeof nm, "%s", want);
    for (int i = 1; name_taken(k, nm); i++) snprintf(nm, sizeof nm, "%s_%d", want, i);
    return xstrdup(nm);
}

int l3_buf(L3Module *m, L3Kernel *k, int tensor, L3Type elem, int64_t numel, bool written, const char *name)
{
    (void)m;
    for (int i = 0; i < k->nbufs; i++)
        if (k->bufs[i].tensor == tensor) {
            k->bufs[i].written |= written;
            return i;
        }
    GROW(k->bufs, k->nbufs, k->capbufs);
    L3Buf *b = &k->bufs[k->nbufs];
    b->name = unique_name(k, name);   /* x, x_1, ... */
    b->tensor = tensor;
    b->elem = elem;
    b->numel = numel;
    b->written = written;
    return k->nbufs++;
}

int l3_var(L3Module *m, L3Kernel *k, const char *name, L3Type type, bool is_loop)
{
    (void)m;
    GROW(k->vars, k->nvars, k->capvars);
    L3Var *v = &k->vars[k->nvars];
    char buf[64];
    snprintf(buf, sizeof buf, "%s%d", name, k->nvars);
    v->name = unique_name(k, buf);
    v->type = type;
    v->is_loop = is_loop;
    return k->nvars++;
}

static L3Expr *node(L3Module *m, L3ExprKind kind, L3Type t)
{
    L3Expr *e = alloc(m, sizeof *e);
    e->kind = kind;
    e->type = t;
    return e;
}

L3Expr *l3_int(L3Module *m, int64_t v)
{
    L3Expr *e = node(m, L3E_INT, L3_I64);
    e->i = v;
    return e;
}

L3Expr *l3_u64(L3Module *m, uint64_t v)
{
    L3Expr *e = node(m, L3E_INT, L3_U64);
    e->i = (int64_t)v;   /* the bits; read back as uint64_t */
    return e;
}

L3Expr *l3_float(L3Module *m, double v)
{
    L3Expr *e = node(m, L3E_FLOAT, L3_F32);
    e->f = v;
    return e;
}

L3Expr *l3_varref(L3Module *m, const L3Kernel *k, int var)
{
    L3Expr *e = node(m, L3E_VAR, k->vars[var].type);
    e->var = var;
    return e;
}

L3Expr *l3_load(L3Module *m, const L3Kernel *k, int buf, L3Expr *index)
{
    L3Expr *e = node(m, L3E_LOAD, k->bufs[buf].elem);
    e->buf = buf;
    e->a = index;
    return e;
}

static bool is_int(const L3Expr *e, int64_t v) { return e->kind == L3E_INT && e->i == v; }

/* op on two constants of which one is L3_U64 (C: both converted to
 * uint64_t; L3_SHR keeps the left operand's type); NULL: not folded. */
static L3Expr *fold_u64(L3Module *m, L3Op op, const L3Expr *a, const L3Expr *b)
{
    uint64_t x = (uint64_t)a->i, y = (uint64_t)b->i;
    switch (op) {
    case L3_ADD: return l3_u64(m, x + y);
    case L3_SUB: return l3_u64(m, x - y);
    case L3_MUL: return l3_u64(m, x * y);
    case L3_XOR: return l3_u64(m, x ^ y);
    case L3_SHR:
        if (a->type != L3_U64 || y >= 64) return NULL;
        return l3_u64(m, x >> y);
    default: return NULL;
    }
}

L3Expr *l3_bin(L3Module *m, L3Op op, L3Expr *a, L3Expr *b)
{
    bool ints = a->kind == L3E_INT && b->kind == L3E_INT;
    bool u64 = a->type == L3_U64 || b->type == L3_U64;
    if (ints && u64) {
        L3Expr *f = fold_u64(m, op, a, b);
        if (f) return f;
    } else if (ints) {
        int64_t x = a->i, y = b->i;
        switch (op) {
        case L3_ADD: return l3_int(m, x + y);
        case L3_SUB: return l3_int(m, x - y);
        case L3_MUL: return l3_int(m, x * y);
        case L3_DIV: if (y != 0) return l3_int(m, x / y); break;
        case L3_MOD: if (y != 0) return l3_int(m, x % y); break;
        case L3_MIN: return l3_int(m, x < y ? x : y);
        case L3_MAX: return l3_int(m, x > y ? x : y);
        case L3_XOR: return l3_int(m, x ^ y);
        default: break;
        }
    }
    if (a->type != L3_F32 && b->type != L3_F32 && !u64) {   /* integer identities */
        if (op == L3_ADD && is_int(a, 0)) return b;
        if ((op == L3_ADD || op == L3_SUB) && is_int(b, 0)) return a;
        if (op == L3_MUL && (is_int(a, 1))) return b;
        if ((op == L3_MUL || op == L3_DIV) && is_int(b, 1)) return a;
        if (op == L3_MUL && (is_int(a, 0) || is_int(b, 0))) return l3_int(m, 0);
    }
    L3Type t = op >= L3_LT && op <= L3_OR ? L3_BOOL
             : op == L3_SHR ? a->type
             : (a->type == L3_F32 || b->type == L3_F32) ? L3_F32
             : u64 ? L3_U64 : a->type;
    L3Expr *e = node(m, L3E_BIN, t);
    e->op = op;
    e->a = a;
    e->b = b;
    return e;
}

L3Expr *l3_un(L3Module *m, L3Op op, L3Expr *a)
{
    if (op == L3_MIX64 && a->kind == L3E_INT) {   /* as netc_mix64 */
        uint64_t z = (uint64_t)a->i;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return l3_u64(m, z ^ (z >> 31));
    }
    if (op == L3_NEG && a->kind == L3E_INT && a->type == L3_U64) return l3_u64(m, 0 - (uint64_t)a->i);
    if (op == L3_NEG && a->kind == L3E_INT) return l3_int(m, -a->i);
    L3Expr *e = node(m, L3E_UN, op == L3_NOT ? L3_BOOL : op == L3_MIX64 ? L3_U64 : a->type);
    e->op = op;
    e->a = a;
    return e;
}

L3Expr *l3_select(L3Module *m, L3Expr *c, L3Expr *a, L3Expr *b)
{
    L3Expr *e = node(m, L3E_SELECT, a->type == L3_F32 || b->type == L3_F32 ? L3_F32 : a->type);
    e->a = c;
    e->b = a;
    e->c = b;
    return e;
}

L3Expr *l3_fma(L3Module *m, L3Expr *a, L3Expr *b, L3Expr *c)
{
    L3Expr *e = node(m, L3E_FMA, L3_F32);
    e->a = a;
    e->b = b;
    e->c = c;
    return e;
}

L3Expr *l3_cast(L3Module *m, L3Type t, L3Expr *a)
{
    if (a->type == t) return a;
    if (a->kind == L3E_INT && t == L3_F32) return l3_float(m, a->type == L3_U64 ? (double)(uint64_t)a->i : (double)a->i);
    if (a->kind == L3E_INT && t == L3_U64) return l3_u64(m, (uint64_t)a->i);
    L3Expr *e = node(m, L3E_CAST, t);
    e->a = a;
    return e;
}

static L3Stmt *stmt(L3Module *m, L3Block *in, L3StmtKind kind)
{
    L3Stmt *s = alloc(m, sizeof *s);
    s->kind = kind;
    GROW(in->s, in->n, in->cap);
    in->s[in->n++] = s;
    return s;
}

L3Stmt *l3_for(L3Module *m, L3Block *in, int var, int64_t extent, unsigned annot)
{
    L3Stmt *s = stmt(m, in, L3S_FOR);
    s->var = var;
    s->extent = extent;
    s->annot = annot;
    return s;
}

void l3_local(L3Module *m, L3Block *in, int var, L3Expr *init)
{
    L3Stmt *s = stmt(m, in, L3S_LOCAL);
    s->var = var;
    s->value = init;
}

void l3_assign(L3Module *m, L3Block *in, int var, L3Expr *value)
{
    L3Stmt *s = stmt(m, in, L3S_ASSIGN);
    s->var = var;
    s->value = value;
}

void l3_store(L3Module *m, L3Block *in, int buf, L3Expr *index, L3Expr *value, bool accumulate)
{
    L3Stmt *s = stmt(m, in, L3S_STORE);
    s->buf = buf;
    s->index = index;
    s->value = value;
    s->accumulate = accumulate;
}

L3Stmt *l3_if(L3Module *m, L3Block *in, L3Expr *cond)
{
    L3Stmt *s = stmt(m, in, L3S_IF);
    s->cond = cond;
    return s;
}

L3Entry *l3_entry_new(L3Module *m, const char *name)
{
    GROW(m->entries, m->nentries, m->capentries);
    L3Entry *e = &m->entries[m->nentries++];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    return e;
}

void l3_entry_call(L3Entry *e, int kernel)
{
    GROW(e->kernels, e->nkernels, e->capkernels);
    e->kernels[e->nkernels++] = kernel;
}

/* ---- parallel loops ---------------------------------------------------------------------- */

/* Which variables and buffers a statement tree uses, declares and assigns.
 * false when an index is out of range (malformed IR: left to the backend to
 * report). */
typedef struct {
    const L3Kernel *k;
    bool *used, *decl, *assigned, *bufs;
} Uses;

static bool uses_expr(Uses *u, const L3Expr *e)
{
    if (!e) return true;
    if (e->kind == L3E_VAR) {
        if (e->var < 0 || e->var >= u->k->nvars) return false;
        u->used[e->var] = true;
    }
    if (e->kind == L3E_LOAD) {
        if (e->buf < 0 || e->buf >= u->k->nbufs) return false;
        u->bufs[e->buf] = true;
    }
    return uses_expr(u, e->a) && uses_expr(u, e->b) && uses_expr(u, e->c);
}

static bool uses_block(Uses *u, const L3Block *b)
{
    for (int i = 0; i < b->n; i++) {
        const L3Stmt *s = b->s[i];
        if (!s) return false;
        switch (s->kind) {
        case L3S_FOR:
        case L3S_LOCAL:
        case L3S_ASSIGN:
            if (s->var < 0 || s->var >= u->k->nvars) return false;
            if (s->kind == L3S_ASSIGN) u->assigned[s->var] = true;
            else u->decl[s->var] = true;
            break;
        case L3S_STORE:
            if (s->buf < 0 || s->buf >= u->k->nbufs) return false;
            u->bufs[s->buf] = true;
            break;
        default: break;
        }
        if (!uses_expr(u, s->index) || !uses_expr(u, s->value) || !uses_expr(u, s->cond)) return false;
        if (!uses_block(u, &s->body) || !uses_block(u, &s->els)) return false;
    }
    return true;
}

/* l3_parallel_plan: see l3_internal.h. */

int l3_parallel_plan(const L3Kernel *k, const L3Stmt *s, const L3Stmt **loops, int maxloops, bool *free_vars,
                     bool *used_bufs)
{
    if (!s || s->kind != L3S_FOR || !(s->annot & L3_PARALLEL) || s->extent <= 0 || maxloops < 1) return 0;
    if (s->var < 0 || s->var >= k->nvars) return 0;
    size_t nv = (size_t)k->nvars + 1;
    bool *tmp = xcalloc(3 * nv, sizeof *tmp);
    Uses u = { k, free_vars, tmp, tmp + nv, used_bufs };
    memset(free_vars, 0, sizeof *free_vars * (size_t)k->nvars);
    memset(used_bufs, 0, sizeof *used_bufs * (size_t)k->nbufs);
    u.decl[s->var] = true;
    bool ok = uses_block(&u, &s->body);
    for (int v = 0; ok && v < k->nvars; v++) {
        if (u.assigned[v] && !u.decl[v]) ok = false;   /* would write the caller's local */
        free_vars[v] = free_vars[v] && !u.decl[v];
    }
    free(tmp);
    if (!ok) return 0;
    int n = 0;
    int64_t total = s->extent;
    loops[n++] = s;
    while (n < maxloops && total < L3_PAR_MIN_ITERS && s->body.n == 1 && s->body.s[0]->kind == L3S_FOR) {
        const L3Stmt *in = s->body.s[0];
        if (in->extent <= 0 || total > INT64_MAX / in->extent) break;
        if ((in->annot & L3_VECTORIZE) && total >= 4) break;
        if (!l3_loop_independent(in)) break;
        total *= in->extent;
        loops[n++] = s = in;
    }
    return n;
}

/* ---- the C printer ----------------------------------------------------------------------- */

static void indent(FILE *out, int d)
{
    for (int i = 0; i < d; i++) fputs("    ", out);
}

static void print_block(FILE *out, const L3Kernel *k, const L3Block *b, int d, int *npar);
static bool print_parallel_call(FILE *out, const L3Kernel *k, const L3Stmt *s, int d, int id);

/* npar: the number of parallel loops of the kernel outlined so far; NULL
 * inside a parallel loop (nested parallel loops stay serial). */
static void print_stmt(FILE *out, const L3Kernel *k, const L3Stmt *s, int d, int *npar)
{
    if (s->kind == L3S_FOR && (s->annot & L3_PARALLEL) && npar) {
        if (print_parallel_call(out, k, s, d, *npar)) {
            (*npar)++;
            return;
        }
        npar = NULL;   /* runs serially, and so does every loop inside */
    }
    indent(out, d);
    switch (s->kind) {
    case L3S_FOR: {
        const char *v = k->vars[s->var].name;
        if (s->annot) {
            fprintf(out, "/*%s%s%s */\n", s->annot & L3_PARALLEL ? " parallel" : "",
                    s->annot & L3_VECTORIZE ? " vectorize" : "", s->annot & L3_UNROLL ? " unroll" : "");
            indent(out, d);
        }
        fprintf(out, "for (%s %s = 0; %s < %" PRId64 "; %s++) {\n", l3_ctype(k->vars[s->var].type), v, v, s->extent, v);
        print_block(out, k, &s->body, d + 1, npar);
        indent(out, d);
        fputs("}\n", out);
        return;
    }
    case L3S_LOCAL:
        fprintf(out, "%s %s = ", l3_ctype(k->vars[s->var].type), k->vars[s->var].name);
        l3_print_expr(out, k, s->value);
        fputs(";\n", out);
        return;
    case L3S_ASSIGN:
        fprintf(out, "%s = ", k->vars[s->var].name);
        l3_print_expr(out, k, s->value);
        fputs(";\n", out);
        return;
    case L3S_STORE:
        fprintf(out, "%s[", k->bufs[s->buf].name);
        l3_print_expr(out, k, s->index);
        fprintf(out, "] %s ", s->accumulate ? "+=" : "=");
        l3_print_expr(out, k, s->value);
        fputs(";\n", out);
        return;
    case L3S_IF:
        fputs("if (", out);
        l3_print_expr(out, k, s->cond);
        fputs(") {\n", out);
        print_block(out, k, &s->body, d + 1, npar);
        indent(out, d);
        if (s->els.n) {
            fputs("} else {\n", out);
            print_block(out, k, &s->els, d + 1, npar);
            indent(out, d);
        }
        fputs("}\n", out);
        return;
    case L3S_BLOCK:
        fputs("{\n", out);
        print_block(out, k, &s->body, d + 1, npar);
        indent(out, d);
        fputs("}\n", out);
        return;
    }
}

static void print_block(FILE *out, const L3Kernel *k, const L3Block *b, int d, int *npar)
{
    for (int i = 0; i < b->n; i++) print_stmt(out, k, b->s[i], d, npar);
}

/* ---- outlined parallel loops (C) ----
 *
 * The outermost L3_PARALLEL loop of a nest (and the loops l3_parallel_plan
 * collapses into it) becomes a struct of what its body reads from outside
 * (buffer pointers, outer loop variables, earlier locals: copied, the body
 * never assigns them), a `static void NAME_bodyI(void *arg, int64_t lo,
 * int64_t hi)` running iterations lo .. hi-1, and in the kernel a call of
 * netc_parallel_for (runtime/pool.h, the one function generated code calls
 * in the runtime).  Loops nested in it stay loops. */

#define L3_PAR_MAX_LOOPS 8

typedef struct {
    const L3Stmt *loops[L3_PAR_MAX_LOOPS];
    int nloops;
    int64_t total;
    bool *vars, *bufs;   /* passed in the context struct */
} Region;

static bool region_plan(const L3Kernel *k, const L3Stmt *s, Region *r)
{
    r->vars = xcalloc((size_t)k->nvars + 1, sizeof *r->vars);
    r->bufs = xcalloc((size_t)k->nbufs + 1, sizeof *r->bufs);
    r->nloops = l3_parallel_plan(k, s, r->loops, L3_PAR_MAX_LOOPS, r->vars, r->bufs);
    r->total = 1;
    for (int i = 0; i < r->nloops; i++) r->total *= r->loops[i]->extent;
    if (r->nloops > 0) return true;
    free(r->vars);
    free(r->bufs);
    return false;
}

static void region_free(Region *r)
{
    free(r->vars);
    free(r->bufs);
}

/* want, or want_1, want_2, ...: a name no buffer or variable of k has. */
static void fresh_name(const L3Kernel *k, const char *want, char *out, size_t n)
{
    snprintf(out, n, "%s", want);
    for (int i = 1; name_taken(k, out); i++) snprintf(out, n, "%s_%d", want, i);
}

static bool block_uses_var(const L3Block *b, int var)
{
    for (int i = 0; i < b->n; i++) {
        const L3Stmt *s = b->s[i];
        if (l3_expr_uses_var(s->index, var) || l3_expr_uses_var(s->value, var) || l3_expr_uses_var(s->cond, var)) return true;
        if (block_uses_var(&s->body, var) || block_uses_var(&s->els, var)) return true;
    }
    return false;
}

static void print_loop_names(FILE *out, const L3Kernel *k, const Region *r)
{
    for (int i = 0; i < r->nloops; i++)
        fprintf(out, "%s%s", i ? " x " : " ", k->vars[r->loops[i]->var].name);
}

/* The context struct and `static void NAME_bodyID(void *arg, int64_t lo,
 * int64_t hi)`: the region's iterations lo .. hi-1 (one flat index over the
 * collapsed loops, their variables recovered by / and %). */
static void print_region_fn(FILE *out, const L3Kernel *k, const Region *r, int id)
{
    char arg[80], lo[80], hi[80], ctx[80], f[80];
    fresh_name(k, "arg", arg, sizeof arg);
    fresh_name(k, "lo", lo, sizeof lo);
    fresh_name(k, "hi", hi, sizeof hi);
    fresh_name(k, "ctx", ctx, sizeof ctx);
    fresh_name(k, "f", f, sizeof f);
    fprintf(out, "struct %s_body%d_ctx {\n", k->name, id);
    bool any = false;
    for (int b = 0; b < k->nbufs; b++)
        if (r->bufs[b]) {
            fprintf(out, "    %s%s *%s;\n", k->bufs[b].written ? "" : "const ", l3_ctype(k->bufs[b].elem), k->bufs[b].name);
            any = true;
        }
    for (int v = 0; v < k->nvars; v++)
        if (r->vars[v]) {
            fprintf(out, "    %s %s;\n", l3_ctype(k->vars[v].type), k->vars[v].name);
            any = true;
        }
    if (!any) fputs("    char unused;\n", out);
    fputs("};\n\n", out);
    fprintf(out, "/* %s: iterations [%s, %s) of the parallel loop%s", k->name, lo, hi, r->nloops > 1 ? "s" : "");
    print_loop_names(out, k, r);
    fprintf(out, " */\nstatic void %s_body%d(void *%s, int64_t %s, int64_t %s)\n{\n", k->name, id, arg, lo, hi);
    fprintf(out, "    const struct %s_body%d_ctx *%s = %s;\n", k->name, id, ctx, arg);
    for (int b = 0; b < k->nbufs; b++)
        if (r->bufs[b])
            fprintf(out, "    %s%s *restrict %s = %s->%s;\n", k->bufs[b].written ? "" : "const ", l3_ctype(k->bufs[b].elem),
                    k->bufs[b].name, ctx, k->bufs[b].name);
    for (int v = 0; v < k->nvars; v++)
        if (r->vars[v]) fprintf(out, "    %s %s = %s->%s;\n", l3_ctype(k->vars[v].type), k->vars[v].name, ctx, k->vars[v].name);
    if (!any) fprintf(out, "    (void)%s;\n", ctx);
    const L3Stmt *last = r->loops[r->nloops - 1];
    if (r->nloops == 1) {
        const L3Var *v = &k->vars[last->var];
        if (v->type == L3_I64) fprintf(out, "    for (int64_t %s = %s; %s < %s; %s++) {\n", v->name, lo, v->name, hi, v->name);
        else fprintf(out, "    for (%s %s = (%s)%s; %s < %s; %s++) {\n", l3_ctype(v->type), v->name, l3_ctype(v->type), lo, v->name, hi, v->name);
    } else {
        fprintf(out, "    for (int64_t %s = %s; %s < %s; %s++) {\n", f, lo, f, hi, f);
        int64_t stride = r->total;
        for (int i = 0; i < r->nloops; i++) {
            const L3Stmt *l = r->loops[i];
            const L3Var *v = &k->vars[l->var];
            stride /= l->extent;
            if (!block_uses_var(&last->body, l->var)) continue;
            char e[200];
            if (i == 0) snprintf(e, sizeof e, "%s / %" PRId64, f, stride);
            else if (stride == 1) snprintf(e, sizeof e, "%s %% %" PRId64, f, l->extent);
            else snprintf(e, sizeof e, "%s / %" PRId64 " %% %" PRId64, f, stride, l->extent);
            if (v->type == L3_I64) fprintf(out, "        int64_t %s = %s;\n", v->name, e);
            else fprintf(out, "        %s %s = (%s)(%s);\n", l3_ctype(v->type), v->name, l3_ctype(v->type), e);
        }
    }
    print_block(out, k, &last->body, 2, NULL);
    fputs("    }\n}\n\n", out);
}

/* The parallel loop s as a call of netc_parallel_for (false: s cannot be
 * outlined, print it as a loop). */
static bool print_parallel_call(FILE *out, const L3Kernel *k, const L3Stmt *s, int d, int id)
{
    Region r;
    if (!region_plan(k, s, &r)) return false;
    char ctx[80];
    fresh_name(k, "ctx", ctx, sizeof ctx);
    int nf = 0;
    for (int b = 0; b < k->nbufs; b++) nf += r.bufs[b];
    for (int v = 0; v < k->nvars; v++) nf += r.vars[v];
    indent(out, d);
    fputs("/* parallel:", out);
    print_loop_names(out, k, &r);
    fprintf(out, " (%" PRId64 " iterations) */\n", r.total);
    indent(out, d);
    fputs("{\n", out);
    indent(out, d + 1);
    fprintf(out, "struct %s_body%d_ctx %s = {", k->name, id, ctx);
    int i = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int j = 0; j < (pass ? k->nvars : k->nbufs); j++) {
            if (!(pass ? r.vars[j] : r.bufs[j])) continue;
            const char *nm = pass ? k->vars[j].name : k->bufs[j].name;
            if (nf > 4) {
                fputc('\n', out);
                indent(out, d + 2);
                fprintf(out, ".%s = %s%s", nm, nm, ++i < nf ? "," : "");
            } else {
                fprintf(out, "%s.%s = %s", i++ ? ", " : " ", nm, nm);
            }
        }
    if (nf == 0) fputs(" 0", out);
    if (nf > 4) {
        fputc('\n', out);
        indent(out, d + 1);
        fputs("};\n", out);
    } else {
        fputs(" };\n", out);
    }
    indent(out, d + 1);
    fprintf(out, "netc_parallel_for(%s_body%d, &%s, %" PRId64 ");\n", k->name, id, ctx, r.total);
    indent(out, d);
    fputs("}\n", out);
    region_free(&r);
    return true;
}

/* The outlined functions of the parallel loops in b, in the order
 * print_stmt meets them. */
static void print_outlined(FILE *out, const L3Kernel *k, const L3Block *b, int *npar)
{
    for (int i = 0; i < b->n; i++) {
        const L3Stmt *s = b->s[i];
        if (s->kind == L3S_FOR && (s->annot & L3_PARALLEL)) {
            Region r;
            if (region_plan(k, s, &r)) {
                print_region_fn(out, k, &r, (*npar)++);
                region_free(&r);
            }
            continue;   /* nested parallel loops stay serial either way */
        }
        print_outlined(out, k, &s->body, npar);
        print_outlined(out, k, &s->els, npar);
    }
}

void l3_print_c(FILE *out, const L3Module *m)
{
    fprintf(out, "/* %s — generated by netc; do not edit. */\n", m->name);
    fputs("#include <math.h>\n#include <stdint.h>\n#include <stdlib.h>\n\n", out);
    fputs("#define NETC_MIN(a, b) ((a) < (b) ? (a) : (b))\n#define NETC_MAX(a, b) ((a) > (b) ? (a) : (b))\n\n", out);
    if (l3_module_uses_u64(m)) l3_print_mix64(out, false);
    fputs("/* The runtime's thread pool (runtime/pool.h): runs fn over [0, n) in chunks. */\n"
          "void netc_parallel_for(void (*fn)(void *, int64_t, int64_t), void *ctx, int64_t n);\n\n", out);
    for (int i = 0; i < m->nkernels; i++) {
        const L3Kernel *k = &m->kernels[i];
        int npar = 0;
        print_outlined(out, k, &k->body, &npar);
        if (k->comment && *k->comment) { fputs("/* ", out); l3_print_comment(out, k->comment); fputs(" */\n", out); }
        fprintf(out, "static void %s(", k->name);
        for (int j = 0; j < k->nbufs; j++)
            fprintf(out, "%s%s%s *restrict %s", j ? ", " : "", k->bufs[j].written ? "" : "const ",
                    l3_ctype(k->bufs[j].elem), k->bufs[j].name);
        if (k->nbufs == 0) fputs("void", out);
        fputs(")\n{\n", out);
        for (int j = 0; j < k->nbufs; j++) fprintf(out, "    (void)%s;\n", k->bufs[j].name);
        npar = 0;
        print_block(out, k, &k->body, 1, &npar);
        fputs("}\n\n", out);
    }
    for (int i = 0; i < m->nentries; i++) {
        const L3Entry *e = &m->entries[i];
        fprintf(out, "void %s(void **t);\nvoid %s(void **t)\n{\n", e->name, e->name);
        for (int j = 0; j < e->nkernels; j++) {
            const L3Kernel *k = &m->kernels[e->kernels[j]];
            fprintf(out, "    %s(", k->name);
            for (int b = 0; b < k->nbufs; b++)
                fprintf(out, "%s(%s *)t[%d]", b ? ", " : "", l3_ctype(k->bufs[b].elem), k->bufs[b].tensor);
            fputs(");\n", out);
        }
        if (e->nkernels == 0) fputs("    (void)t;\n", out);
        fputs("}\n\n", out);
    }
}
