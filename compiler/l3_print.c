/* l3_print.c — what the L3 backends share (l3_internal.h): the loop
 * independence analysis and the C-syntax expression printer used by both
 * the C printer (l3.c) and the CUDA printer (l3_cuda.c).
 */
#define _POSIX_C_SOURCE 200809L
#include "l3_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---- loop analysis ------------------------------------------------------------------------------ */

bool l3_expr_uses_var(const L3Expr *e, int var)
{
    if (!e) return false;
    if (e->kind == L3E_VAR && e->var == var) return true;
    return l3_expr_uses_var(e->a, var) || l3_expr_uses_var(e->b, var) || l3_expr_uses_var(e->c, var);
}

static bool expr_equal(const L3Expr *a, const L3Expr *b)
{
    if (a == b) return true;
    if (!a || !b || a->kind != b->kind || a->type != b->type) return false;
    switch (a->kind) {
    case L3E_INT: return a->i == b->i;
    case L3E_FLOAT: return a->f == b->f || (isnan(a->f) && isnan(b->f));
    case L3E_VAR: return a->var == b->var;
    case L3E_LOAD: return a->buf == b->buf && expr_equal(a->a, b->a);
    case L3E_BIN: case L3E_UN: if (a->op != b->op) return false; break;
    default: break;
    }
    return expr_equal(a->a, b->a) && expr_equal(a->b, b->b) && expr_equal(a->c, b->c);
}

typedef struct { const L3Stmt **s; int n, cap; } StoreList;

static void collect_stores(const L3Block *b, StoreList *l)
{
    for (int i = 0; i < b->n; i++) {
        const L3Stmt *s = b->s[i];
        if (s->kind == L3S_STORE) {
            GROW(l->s, l->n, l->cap);
            l->s[l->n++] = s;
        }
        collect_stores(&s->body, l);
        collect_stores(&s->els, l);
    }
}

static bool loads_ok(const L3Expr *e, const StoreList *l)
{
    if (!e) return true;
    if (e->kind == L3E_LOAD) {
        bool stored = false, same = false;
        for (int i = 0; i < l->n; i++)
            if (l->s[i]->buf == e->buf) {
                stored = true;
                same = same || expr_equal(l->s[i]->index, e->a);
            }
        if (stored && !same) return false;
    }
    return loads_ok(e->a, l) && loads_ok(e->b, l) && loads_ok(e->c, l);
}

static bool block_loads_ok(const L3Block *b, const StoreList *l)
{
    for (int i = 0; i < b->n; i++) {
        const L3Stmt *s = b->s[i];
        if (!loads_ok(s->index, l) || !loads_ok(s->value, l) || !loads_ok(s->cond, l)) return false;
        if (!block_loads_ok(&s->body, l) || !block_loads_ok(&s->els, l)) return false;
    }
    return true;
}

bool l3_loop_independent(const L3Stmt *s)
{
    if (s->annot & L3_PARALLEL) return true;
    StoreList l = { NULL, 0, 0 };
    collect_stores(&s->body, &l);
    bool ok = true;
    for (int i = 0; ok && i < l.n; i++) ok = l3_expr_uses_var(l.s[i]->index, s->var);
    ok = ok && block_loads_ok(&s->body, &l);
    free(l.s);
    return ok;
}

static bool expr_uses_u64(const L3Expr *e)
{
    if (!e) return false;
    return e->type == L3_U64 || expr_uses_u64(e->a) || expr_uses_u64(e->b) || expr_uses_u64(e->c);
}

static bool block_uses_u64(const L3Block *b)
{
    for (int i = 0; i < b->n; i++) {
        const L3Stmt *s = b->s[i];
        if (expr_uses_u64(s->index) || expr_uses_u64(s->value) || expr_uses_u64(s->cond)) return true;
        if (block_uses_u64(&s->body) || block_uses_u64(&s->els)) return true;
    }
    return false;
}

bool l3_module_uses_u64(const L3Module *m)
{
    for (int i = 0; i < m->nkernels; i++) {
        const L3Kernel *k = &m->kernels[i];
        for (int v = 0; v < k->nvars; v++)
            if (k->vars[v].type == L3_U64) return true;
        if (block_uses_u64(&k->body)) return true;
    }
    return false;
}

/* ---- expressions as C ------------------------------------------------------------------------- */

void l3_print_mix64(FILE *out, bool cuda)
{
    fprintf(out, "/* splitmix64's mixing of one state (dropout's random numbers, compiler/lower.c) */\n"
                 "static %sinline uint64_t netc_mix64(uint64_t z)\n"
                 "{\n"
                 "    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;\n"
                 "    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;\n"
                 "    return z ^ (z >> 31);\n"
                 "}\n\n",
            cuda ? "__device__ " : "");
}

const char *l3_ctype(L3Type t)
{
    switch (t) {
    case L3_I64: return "int64_t";
    case L3_I32: return "int32_t";
    case L3_F32: return "float";
    case L3_BOOL: return "int";
    case L3_U64: return "uint64_t";
    }
    return "int";
}

void l3_print_comment(FILE *out, const char *s)
{
    for (const char *c = s ? s : ""; *c; c++) {
        if (*c == '\n' || *c == '\r') fputc(' ', out);
        else {
            fputc(*c, out);
            if (c[0] == '*' && c[1] == '/') fputc(' ', out);
        }
    }
}

void l3_print_float(FILE *out, double f)
{
    if (isnan(f)) { fputs("NAN", out); return; }
    if (isinf(f)) { fputs(f > 0 ? "INFINITY" : "(-INFINITY)", out); return; }
    float x = (float)f;
    if (isinf(x)) { fputs(x > 0 ? "INFINITY" : "(-INFINITY)", out); return; }
    char b[64];
    snprintf(b, sizeof b, "%.9g", (double)x);
    if (!strpbrk(b, ".eE")) strcat(b, ".0");
    fprintf(out, "%sf", b);
}

static const char *var_name(const L3Kernel *k, int v) { return v >= 0 && v < k->nvars ? k->vars[v].name : "netc_bad_var"; }
static const char *buf_name(const L3Kernel *k, int b) { return b >= 0 && b < k->nbufs ? k->bufs[b].name : "netc_bad_buf"; }

void l3_print_expr(FILE *out, const L3Kernel *k, const L3Expr *e)
{
    static const char *bin[] = { "+", "-", "*", "/", "%", NULL, NULL, "<", "<=", "==", "!=", "&&", "||" };
    if (!e) { fputs("0", out); return; }
    switch (e->kind) {
    case L3E_INT:
        if (e->type == L3_U64) fprintf(out, "0x%" PRIx64 "ull", (uint64_t)e->i);
        else if (e->i == INT64_MIN) fputs("(-9223372036854775807LL - 1)", out);
        else if (e->i < 0) fprintf(out, "(%" PRId64 "LL)", e->i);
        else if (e->i > INT32_MAX) fprintf(out, "%" PRId64 "LL", e->i);
        else fprintf(out, "%" PRId64, e->i);
        return;
    case L3E_FLOAT: l3_print_float(out, e->f); return;
    case L3E_VAR: fputs(var_name(k, e->var), out); return;
    case L3E_LOAD:
        fprintf(out, "%s[", buf_name(k, e->buf));
        l3_print_expr(out, k, e->a);
        fputc(']', out);
        return;
    case L3E_BIN:
        if (e->op == L3_MIN || e->op == L3_MAX || (e->op == L3_MOD && e->type == L3_F32)) {
            if (e->op == L3_MOD) fputs("fmodf(", out);
            else if (e->type == L3_F32) fputs(e->op == L3_MIN ? "fminf(" : "fmaxf(", out);
            else fputs(e->op == L3_MIN ? "NETC_MIN(" : "NETC_MAX(", out);
            l3_print_expr(out, k, e->a);
            fputs(", ", out);
            l3_print_expr(out, k, e->b);
            fputc(')', out);
            return;
        }
        fputc('(', out);
        l3_print_expr(out, k, e->a);
        fprintf(out, " %s ", e->op == L3_XOR ? "^" : e->op == L3_SHR ? ">>" : e->op <= L3_OR && bin[e->op] ? bin[e->op] : "+");
        l3_print_expr(out, k, e->b);
        fputc(')', out);
        return;
    case L3E_UN: {
        static const char *fn[] = { [L3_NEG] = "-", [L3_EXP] = "expf", [L3_LOG] = "logf", [L3_SQRT] = "sqrtf",
                                    [L3_TANH] = "tanhf", [L3_ABS] = "fabsf", [L3_FLOOR] = "floorf", [L3_NOT] = "!",
                                    [L3_EXPM1] = "expm1f" };
        const char *f = e->op >= L3_NEG && e->op <= L3_EXPM1 ? fn[e->op] : e->op == L3_MIX64 ? "netc_mix64" : NULL;
        if (e->op == L3_ABS && e->type != L3_F32) f = "llabs";
        fputs(f ? f : "", out);
        fputc('(', out);
        l3_print_expr(out, k, e->a);
        fputc(')', out);
        return;
    }
    case L3E_SELECT:
        fputc('(', out);
        l3_print_expr(out, k, e->a);
        fputs(" ? ", out);
        l3_print_expr(out, k, e->b);
        fputs(" : ", out);
        l3_print_expr(out, k, e->c);
        fputc(')', out);
        return;
    case L3E_FMA:
        fputs("fmaf(", out);
        l3_print_expr(out, k, e->a);
        fputs(", ", out);
        l3_print_expr(out, k, e->b);
        fputs(", ", out);
        l3_print_expr(out, k, e->c);
        fputc(')', out);
        return;
    case L3E_CAST:
        fprintf(out, "(%s)", l3_ctype(e->type));
        l3_print_expr(out, k, e->a);
        return;
    }
}
