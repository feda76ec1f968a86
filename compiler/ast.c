/* ast.c — AST construction, freeing, and printing back to source form. */
#define _POSIX_C_SOURCE 200809L
#include "ast.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Ast *ast_new(AstArena *ar, AstKind kind, SrcLoc loc)
{
    Ast *n = xcalloc(1, sizeof *n);
    n->kind = kind;
    n->loc = loc;
    n->depth = 1;
    n->next_alloc = ar->all;
    ar->all = n;
    ar->count++;
    return n;
}

void ast_list_push(AstList *l, Ast *item)
{
    GROW(l->items, l->n, l->cap);
    l->items[l->n++] = item;
}

void ast_fix_depth(Ast *n)
{
    int d = 0;
    if (n->a && n->a->depth > d) d = n->a->depth;
    if (n->b && n->b->depth > d) d = n->b->depth;
    for (int i = 0; i < n->list.n; i++)
        if (n->list.items[i] && n->list.items[i]->depth > d) d = n->list.items[i]->depth;
    for (int i = 0; i < n->list2.n; i++)
        if (n->list2.items[i] && n->list2.items[i]->depth > d) d = n->list2.items[i]->depth;
    n->depth = d + 1;
}

void ast_arena_free(AstArena *ar)
{
    Ast *n = ar->all;
    while (n) {
        Ast *next = n->next_alloc;
        free(n->str);
        free(n->str2);
        free(n->list.items);
        free(n->list2.items);
        free(n);
        n = next;
    }
    ar->all = NULL;
    ar->count = 0;
}

const char *ast_kind_name(AstKind k)
{
    static const char *names[] = {
        "integer", "number", "string", "name", "size", "list", "tuple", "range",
        "indexed name", "dotted name", "call", "named argument", "operator",
        "operator", "chain", "quantity", "input", "output", "assignment",
        "expression", "for", "if", "import", "parameter", "block", "net",
        "protocol", "train", "field", "file", "error",
    };
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

const char *ast_op_text(int op)
{
    switch (op) {
    case AOP_ADD: return "+";   case AOP_SUB: return "-";  case AOP_MUL: return "*";
    case AOP_DIV: return "/";   case AOP_MOD: return "%";  case AOP_SHL: return "<<";
    case AOP_SHR: return ">>";  case AOP_EQ: return "==";  case AOP_NE: return "!=";
    case AOP_LT: return "<";    case AOP_LE: return "<=";  case AOP_GT: return ">";
    case AOP_GE: return ">=";   case AOP_AND: return "and"; case AOP_OR: return "or";
    case AOP_NEG: return "-";   case AOP_NOT: return "not ";
    }
    return "?";
}

/* ---- printing --------------------------------------------------------- */

typedef struct { char *s; size_t n, cap; } Buf;

static void bput(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bput(Buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->n;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? room : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->s && (size_t)k < room) { b->n += (size_t)k; return; }
        b->cap = (b->cap + (size_t)k + 64) * 2;
        char *p = xrealloc(b->s, b->cap);
        b->s = p;
    }
}

static void print_list(Buf *b, const AstList *l, const char *sep);

static void print_expr(Buf *b, const Ast *n)
{
    if (!n) { bput(b, "?"); return; }
    if (b->n > 200) { bput(b, "..."); return; }   /* messages stay readable */
    switch (n->kind) {
    case A_INT: bput(b, "%lld", (long long)n->ival); break;
    case A_FLOAT: bput(b, "%g", n->fval); break;
    case A_STR: bput(b, "\"%s\"", n->str); break;
    case A_IDENT: bput(b, "%s", n->str); break;
    case A_DIMS: print_list(b, &n->list, " x "); break;
    case A_LIST: bput(b, "["); print_list(b, &n->list, ", "); bput(b, "]"); break;
    case A_TUPLE: bput(b, "("); print_list(b, &n->list, ", "); bput(b, ")"); break;
    case A_RANGE: print_expr(b, n->a); bput(b, " .. "); print_expr(b, n->b); break;
    case A_INDEX: bput(b, "%s[", n->str); print_expr(b, n->a); bput(b, "]"); break;
    case A_MEMBER: print_expr(b, n->a); bput(b, ".%s", n->str); break;
    case A_CALL: print_expr(b, n->a); bput(b, "("); print_list(b, &n->list, ", "); bput(b, ")"); break;
    case A_NAMEDARG: bput(b, "%s = ", n->str); print_expr(b, n->a); break;
    case A_BINOP:
        bput(b, "("); print_expr(b, n->a); bput(b, " %s ", ast_op_text(n->op));
        print_expr(b, n->b); bput(b, ")");
        break;
    case A_UNOP: bput(b, "%s", ast_op_text(n->op)); print_expr(b, n->a); break;
    case A_CHAIN: print_expr(b, n->a); bput(b, " -> "); print_expr(b, n->b); break;
    case A_UNIT: print_expr(b, n->a); bput(b, " %s", n->str); break;
    default: bput(b, "<%s>", ast_kind_name(n->kind)); break;
    }
}

static void print_list(Buf *b, const AstList *l, const char *sep)
{
    for (int i = 0; i < l->n; i++) {
        if (i) bput(b, "%s", sep);
        print_expr(b, l->items[i]);
    }
}

char *ast_to_string(const Ast *n)
{
    Buf b = { 0 };
    print_expr(&b, n);
    if (!b.s) { b.s = xmalloc(1); b.s[0] = 0; }
    return b.s;
}

bool ast_mentions(const Ast *n, const char *name)
{
    if (!n) return false;
    if ((n->kind == A_IDENT || n->kind == A_INDEX) && n->str && strcmp(n->str, name) == 0) return true;
    if (ast_mentions(n->a, name) || ast_mentions(n->b, name)) return true;
    for (int i = 0; i < n->list.n; i++)
        if (ast_mentions(n->list.items[i], name)) return true;
    for (int i = 0; i < n->list2.n; i++)
        if (ast_mentions(n->list2.items[i], name)) return true;
    return false;
}
