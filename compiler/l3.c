/* l3.c — building the L3 loop IR, and the C printer. */
#define _POSIX_C_SOURCE 200809L
#include "l3.h"

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

L3Expr *l3_bin(L3Module *m, L3Op op, L3Expr *a, L3Expr *b)
{
    bool ints = a->kind == L3E_INT && b->kind == L3E_INT;
    if (ints) {
        int64_t x = a->i, y = b->i;
        switch (op) {
        case L3_ADD: return l3_int(m, x + y);
        case L3_SUB: return l3_int(m, x - y);
        case L3_MUL: return l3_int(m, x * y);
        case L3_DIV: if (y != 0) return l3_int(m, x / y); break;
        case L3_MOD: if (y != 0) return l3_int(m, x % y); break;
        case L3_MIN: return l3_int(m, x < y ? x : y);
        case L3_MAX: return l3_int(m, x > y ? x : y);
        default: break;
        }
    }
    if (a->type != L3_F32 && b->type != L3_F32) {   /* integer identities */
        if (op == L3_ADD && is_int(a, 0)) return b;
        if ((op == L3_ADD || op == L3_SUB) && is_int(b, 0)) return a;
        if (op == L3_MUL && (is_int(a, 1))) return b;
        if ((op == L3_MUL || op == L3_DIV) && is_int(b, 1)) return a;
        if (op == L3_MUL && (is_int(a, 0) || is_int(b, 0))) return l3_int(m, 0);
    }
    L3Type t = op >= L3_LT && op <= L3_OR ? L3_BOOL : (a->type == L3_F32 || b->type == L3_F32) ? L3_F32 : a->type;
    L3Expr *e = node(m, L3E_BIN, t);
    e->op = op;
    e->a = a;
    e->b = b;
    return e;
}

L3Expr *l3_un(L3Module *m, L3Op op, L3Expr *a)
{
    if (op == L3_NEG && a->kind == L3E_INT) return l3_int(m, -a->i);
    L3Expr *e = node(m, L3E_UN, op == L3_NOT ? L3_BOOL : a->type);
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
    if (a->kind == L3E_INT && t == L3_F32) return l3_float(m, (double)a->i);
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

/* ---- the C printer ----------------------------------------------------------------------- */

static const char *ctype(L3Type t)
{
    switch (t) {
    case L3_I64: return "int64_t";
    case L3_I32: return "int32_t";
    case L3_F32: return "float";
    case L3_BOOL: return "int";
    }
    return "?";
}

static void print_float(FILE *out, double f)
{
    if (isnan(f)) { fputs("NAN", out); return; }
    if (isinf(f)) { fputs(f > 0 ? "INFINITY" : "-INFINITY", out); return; }
    float x = (float)f;
    char b[64];
    snprintf(b, sizeof b, "%.9g", (double)x);
    if (!strpbrk(b, ".eE")) strcat(b, ".0");
    fprintf(out, "%sf", b);
}

static void print_expr(FILE *out, const L3Kernel *k, const L3Expr *e)
{
    static const char *bin[] = { "+", "-", "*", "/", "%", NULL, NULL, "<", "<=", "==", "!=", "&&", "||" };
    switch (e->kind) {
    case L3E_INT:
        if (e->i < 0) fprintf(out, "(%" PRId64 ")", e->i);
        else fprintf(out, "%" PRId64, e->i);
        return;
    case L3E_FLOAT: print_float(out, e->f); return;
    case L3E_VAR: fputs(k->vars[e->var].name, out); return;
    case L3E_LOAD:
        fprintf(out, "%s[", k->bufs[e->buf].name);
        print_expr(out, k, e->a);
        fputc(']', out);
        return;
    case L3E_BIN:
        if (e->op == L3_MIN || e->op == L3_MAX) {
            if (e->type == L3_F32) fputs(e->op == L3_MIN ? "fminf(" : "fmaxf(", out);
            else fputs(e->op == L3_MIN ? "NETC_MIN(" : "NETC_MAX(", out);
            print_expr(out, k, e->a);
            fputs(", ", out);
            print_expr(out, k, e->b);
            fputc(')', out);
            return;
        }
        if (e->op == L3_MOD && e->type == L3_F32) {
            fputs("fmodf(", out);
            print_expr(out, k, e->a);
            fputs(", ", out);
            print_expr(out, k, e->b);
            fputc(')', out);
            return;
        }
        fputc('(', out);
        print_expr(out, k, e->a);
        fprintf(out, " %s ", bin[e->op]);
        print_expr(out, k, e->b);
        fputc(')', out);
        return;
    case L3E_UN: {
        static const char *fn[] = { [L3_NEG] = "-", [L3_EXP] = "expf", [L3_LOG] = "logf", [L3_SQRT] = "sqrtf",
                                    [L3_TANH] = "tanhf", [L3_ABS] = "fabsf", [L3_FLOOR] = "floorf", [L3_NOT] = "!",
                                    [L3_EXPM1] = "expm1f" };
        if (e->op == L3_ABS && e->type != L3_F32) fputs("llabs", out);
        else fputs(fn[e->op], out);
        fputc('(', out);
        print_expr(out, k, e->a);
        fputc(')', out);
        return;
    }
    case L3E_SELECT:
        fputc('(', out);
        print_expr(out, k, e->a);
        fputs(" ? ", out);
        print_expr(out, k, e->b);
        fputs(" : ", out);
        print_expr(out, k, e->c);
        fputc(')', out);
        return;
    case L3E_FMA:
        fputs("fmaf(", out);
        print_expr(out, k, e->a);
        fputs(", ", out);
        print_expr(out, k, e->b);
        fputs(", ", out);
        print_expr(out, k, e->c);
        fputc(')', out);
        return;
    case L3E_CAST:
        fprintf(out, "(%s)", ctype(e->type));
        print_expr(out, k, e->a);
        return;
    }
}

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
        const char *v = k->vars[s->var].name;
        if (s->annot) {
            fprintf(out, "/*%s%s%s */\n", s->annot & L3_PARALLEL ? " parallel" : "",
                    s->annot & L3_VECTORIZE ? " vectorize" : "", s->annot & L3_UNROLL ? " unroll" : "");
            indent(out, d);
        }
        fprintf(out, "for (%s %s = 0; %s < %" PRId64 "; %s++) {\n", ctype(k->vars[s->var].type), v, v, s->extent, v);
        print_block(out, k, &s->body, d + 1);
        indent(out, d);
        fputs("}\n", out);
        return;
    }
    case L3S_LOCAL:
        fprintf(out, "%s %s = ", ctype(k->vars[s->var].type), k->vars[s->var].name);
        print_expr(out, k, s->value);
        fputs(";\n", out);
        return;
    case L3S_ASSIGN:
        fprintf(out, "%s = ", k->vars[s->var].name);
        print_expr(out, k, s->value);
        fputs(";\n", out);
        return;
    case L3S_STORE:
        fprintf(out, "%s[", k->bufs[s->buf].name);
        print_expr(out, k, s->index);
        fprintf(out, "] %s ", s->accumulate ? "+=" : "=");
        print_expr(out, k, s->value);
        fputs(";\n", out);
        return;
    case L3S_IF:
        fputs("if (", out);
        print_expr(out, k, s->cond);
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

void l3_print_c(FILE *out, const L3Module *m)
{
    fprintf(out, "/* %s — generated by netc; do not edit. */\n", m->name);
    fputs("#include <math.h>\n#include <stdint.h>\n#include <stdlib.h>\n\n", out);
    fputs("#define NETC_MIN(a, b) ((a) < (b) ? (a) : (b))\n#define NETC_MAX(a, b) ((a) > (b) ? (a) : (b))\n\n", out);
    for (int i = 0; i < m->nkernels; i++) {
        const L3Kernel *k = &m->kernels[i];
        if (k->comment && *k->comment) fprintf(out, "/* %s */\n", k->comment);
        fprintf(out, "static void %s(", k->name);
        for (int j = 0; j < k->nbufs; j++)
            fprintf(out, "%s%s%s *restrict %s", j ? ", " : "", k->bufs[j].written ? "" : "const ",
                    ctype(k->bufs[j].elem), k->bufs[j].name);
        if (k->nbufs == 0) fputs("void", out);
        fputs(")\n{\n", out);
        for (int j = 0; j < k->nbufs; j++) fprintf(out, "    (void)%s;\n", k->bufs[j].name);
        print_block(out, k, &k->body, 1);
        fputs("}\n\n", out);
    }
    for (int i = 0; i < m->nentries; i++) {
        const L3Entry *e = &m->entries[i];
        fprintf(out, "void %s(void **t);\nvoid %s(void **t)\n{\n", e->name, e->name);
        for (int j = 0; j < e->nkernels; j++) {
            const L3Kernel *k = &m->kernels[e->kernels[j]];
            fprintf(out, "    %s(", k->name);
            for (int b = 0; b < k->nbufs; b++)
                fprintf(out, "%s(%s *)t[%d]", b ? ", " : "", ctype(k->bufs[b].elem), k->bufs[b].tensor);
            fputs(");\n", out);
        }
        if (e->nkernels == 0) fputs("    (void)t;\n", out);
        fputs("}\n\n", out);
    }
}
