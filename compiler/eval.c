/* eval.c — values, environments and expression evaluation.
 *
 * Expressions evaluate to Values (sema_internal.h).  Integer arithmetic is
 * 64-bit and checked: overflow, division by zero and out-of-range shifts are
 * errors, never undefined behaviour.  An int meets a float -> float.
 * Anything involving a tensor or a layer (calls, chains, tensor + tensor) is
 * handed to expand.c, which builds graph nodes.
 *
 * Once a subexpression fails it yields V_ERROR, and every consumer of a
 * V_ERROR stays silent: one mistake gives one message.
 */
#define _POSIX_C_SOURCE 200809L
#include "sema_internal.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- memory ----------------------------------------------------------- */

void *sema_alloc(Sema *S, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!S->mem || S->mem->used + n > S->mem->cap) {
        size_t cap = n > 65536 ? n : 65536;
        Chunk *c = xmalloc(sizeof(Chunk) + cap);
        c->next = S->mem;
        c->used = 0;
        c->cap = cap;
        S->mem = c;
    }
    void *p = S->mem->data + S->mem->used;
    S->mem->used += n;
    memset(p, 0, n);
    return p;
}

const char *sema_strdup(Sema *S, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = sema_alloc(S, n);
    memcpy(d, s, n);
    return d;
}

void sema_init(Sema *S, Program *p)
{
    memset(S, 0, sizeof *S);
    S->prog = p;
    S->diag = p->diag;
}

static void free_names(NameNode *n)
{
    if (!n) return;
    for (int i = 0; i < n->nkids; i++) free_names(n->kids[i]);
    free(n->kids);
}

void sema_release(Sema *S)
{
    while (S->env) frame_pop(S);
    free_names(S->root);
    free(S->node_names);
    Chunk *c = S->mem;
    while (c) { Chunk *next = c->next; free(c); c = next; }
    S->mem = NULL;
}

/* ---- environment ------------------------------------------------------ */

void frame_push(Sema *S, bool function)
{
    Frame *f = xcalloc(1, sizeof *f);
    f->parent = S->env;
    f->function = function;
    S->env = f;
}

void frame_pop(Sema *S)
{
    Frame *f = S->env;
    if (!f) return;
    S->env = f->parent;
    free(f->vars);
    free(f->slots);
    free(f);
}

static unsigned name_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Frames are hashed so that loops binding thousands of indexed names
 * (a[0], a[1], ...) stay linear. */
static int frame_find(const Frame *f, const char *name)
{
    if (!f->nslots) return -1;
    for (unsigned i = name_hash(name) & (unsigned)(f->nslots - 1);; i = (i + 1) & (unsigned)(f->nslots - 1)) {
        int k = f->slots[i];
        if (!k) return -1;
        if (strcmp(f->vars[k - 1].name, name) == 0) return k - 1;
    }
}

static void frame_index(Frame *f, int k)
{
    unsigned i = name_hash(f->vars[k].name) & (unsigned)(f->nslots - 1);
    while (f->slots[i]) i = (i + 1) & (unsigned)(f->nslots - 1);
    f->slots[i] = k + 1;
}

Binding *env_lookup(Sema *S, const char *name)
{
    for (Frame *f = S->env; f; f = f->parent) {
        int k = frame_find(f, name);
        if (k >= 0) return &f->vars[k];
        if (f->function) break;
    }
    return NULL;
}

static void frame_add(Sema *S, Frame *f, const char *name, Value v, bool loop_var)
{
    GROW(f->vars, f->n, f->cap);
    int old = frame_find(f, name);
    if (old >= 0) {   /* redefinition in the same frame: replace */
        f->vars[old].value = v;
        f->vars[old].loop_var = loop_var;
        return;
    }
    f->vars[f->n].name = sema_strdup(S, name);
    f->vars[f->n].value = v;
    f->vars[f->n].loop_var = loop_var;
    f->n++;
    if (2 * f->n > f->nslots) {
        free(f->slots);
        f->nslots = f->nslots ? 2 * f->nslots : 32;
        while (2 * f->n > f->nslots) f->nslots *= 2;
        f->slots = xcalloc((size_t)f->nslots, sizeof *f->slots);
        for (int k = 0; k < f->n; k++) frame_index(f, k);
    } else
        frame_index(f, f->n - 1);
}

void env_define(Sema *S, const char *name, Value v, bool loop_var)
{
    frame_add(S, S->env, name, v, loop_var);
}

/* Assignment updates the nearest existing binding, else defines the name in
 * the enclosing function frame, so names bound inside loops are visible after
 * them (skip[i] bound in the encoder loop is read by the decoder loop). */
void env_assign(Sema *S, const char *name, Value v, SrcLoc loc)
{
    Binding *b = env_lookup(S, name);
    if (b) {
        if (b->loop_var) {
            diag_error(S->diag, loc, "cannot assign to loop variable `%s`", name);
            return;
        }
        b->value = v;
        return;
    }
    Frame *f = S->env;
    while (f && !f->function && f->parent) f = f->parent;
    frame_add(S, f ? f : S->env, name, v, false);
}

/* ---- values ----------------------------------------------------------- */

Value value_error(void) { Value v = { .kind = V_ERROR }; v.loc = NO_LOC; return v; }
Value value_int(int64_t i, SrcLoc loc) { Value v = { .kind = V_INT, .i = i, .loc = loc }; return v; }
Value value_float(double f, SrcLoc loc) { Value v = { .kind = V_FLOAT, .f = f, .loc = loc }; return v; }
static Value value_bool(bool b, SrcLoc loc) { Value v = { .kind = V_BOOL, .i = b, .loc = loc }; return v; }

const char *value_kind_name(ValueKind k)
{
    switch (k) {
    case V_ERROR: return "error";      case V_NONE: return "nothing";
    case V_INT: return "integer";      case V_FLOAT: return "number";
    case V_BOOL: return "true/false";  case V_STR: return "string";
    case V_SYM: return "name";         case V_LIST: return "list";
    case V_TUPLE: return "tuple";      case V_RANGE: return "range";
    case V_TENSOR: return "tensor";    case V_LAYER: return "layer";
    case V_CALL: return "call";
    }
    return "?";
}

bool value_is_number(const Value *v) { return v->kind == V_INT || v->kind == V_FLOAT; }
double value_number(const Value *v) { return v->kind == V_INT ? (double)v->i : v->f; }

bool sema_step(Sema *S, SrcLoc loc)
{
    if (S->limit_hit) return false;
    if (++S->steps > EXPAND_MAX_STEPS) {
        S->limit_hit = true;
        diag_error(S->diag, loc, "the net takes more than %d evaluation steps to expand; is a loop too long?", EXPAND_MAX_STEPS);
        return false;
    }
    return true;
}

void sema_unknown_name(Sema *S, const char *name, SrcLoc loc)
{
    Suggest sg;
    suggest_init(&sg, name);
    for (Frame *f = S->env; f; f = f->parent) {
        for (int i = 0; i < f->n && i < 2000; i++) {   /* enough for any real net */
            const char *vn = f->vars[i].name;
            char base[256];
            const char *br = strchr(vn, '[');
            if (br && (size_t)(br - vn) < sizeof base) {   /* skip[0] -> skip */
                memcpy(base, vn, (size_t)(br - vn));
                base[br - vn] = 0;
                suggest_offer(&sg, sema_strdup(S, base));
            } else
                suggest_offer(&sg, vn);
        }
        if (f->function) break;
    }
    for (int k = 0; k < OP_COUNT; k++)
        if (!op_table[k].internal) suggest_offer(&sg, op_table[k].name);
    for (int k = 0; k < S->prog->blocks.n; k++) suggest_offer(&sg, S->prog->blocks.items[k].name);
    const char *best = suggest_result(&sg);
    if (best)
        diag_error(S->diag, loc, "unknown name `%s`; did you mean `%s`?", name, best);
    else
        diag_error(S->diag, loc, "unknown name `%s`", name);
}

/* ---- arithmetic ------------------------------------------------------- */

static Value int_arith(Sema *S, int op, int64_t a, int64_t b, SrcLoc loc)
{
    int64_t r = 0;
    bool ovf = false;
    switch (op) {
    case AOP_ADD: ovf = __builtin_add_overflow(a, b, &r); break;
    case AOP_SUB: ovf = __builtin_sub_overflow(a, b, &r); break;
    case AOP_MUL: ovf = __builtin_mul_overflow(a, b, &r); break;
    case AOP_DIV:
    case AOP_MOD:
        if (b == 0) {
            diag_error(S->diag, loc, "%s by zero", op == AOP_DIV ? "division" : "remainder");
            return value_error();
        }
        if (a == INT64_MIN && b == -1) { ovf = true; break; }
        r = op == AOP_DIV ? a / b : a % b;
        break;
    case AOP_SHL:
    case AOP_SHR:
        if (b < 0 || b > 62) {
            diag_error(S->diag, loc, "shift by %lld is out of range (0 .. 62)", (long long)b);
            return value_error();
        }
        if (op == AOP_SHR) { r = a >> b; break; }
        if (a < 0 || (b > 0 && a > (INT64_MAX >> b))) ovf = true;
        else r = a << b;
        break;
    }
    if (ovf) {
        diag_error(S->diag, loc, "integer overflow in %lld %s %lld", (long long)a, ast_op_text(op), (long long)b);
        return value_error();
    }
    return value_int(r, loc);
}

static Value arith(Sema *S, int op, Value a, Value b, SrcLoc loc)
{
    if (a.kind == V_ERROR || b.kind == V_ERROR) return value_error();
    /* a name that stood for nothing (passed as a block argument) */
    if (a.kind == V_SYM && op != AOP_EQ && op != AOP_NE) { sema_unknown_name(S, a.s, a.loc); return value_error(); }
    if (b.kind == V_SYM && op != AOP_EQ && op != AOP_NE) { sema_unknown_name(S, b.s, b.loc); return value_error(); }
    if (a.kind == V_TENSOR || b.kind == V_TENSOR)
        return tensor_binop(S, op, a, b, loc);
    if (op == AOP_AND || op == AOP_OR) {
        if (a.kind != V_BOOL || b.kind != V_BOOL) {
            diag_error(S->diag, loc, "`%s` needs true/false on both sides, not %s and %s",
                       ast_op_text(op), value_kind_name(a.kind), value_kind_name(b.kind));
            return value_error();
        }
        return value_bool(op == AOP_AND ? (a.i && b.i) : (a.i || b.i), loc);
    }
    if (op >= AOP_EQ && op <= AOP_GE) {
        if (a.kind == V_BOOL && b.kind == V_BOOL && (op == AOP_EQ || op == AOP_NE))
            return value_bool(op == AOP_EQ ? a.i == b.i : a.i != b.i, loc);
        if ((a.kind == V_SYM || a.kind == V_STR) && a.kind == b.kind && (op == AOP_EQ || op == AOP_NE)) {
            bool eq = strcmp(a.s, b.s) == 0;
            return value_bool(op == AOP_EQ ? eq : !eq, loc);
        }
        if (!value_is_number(&a) || !value_is_number(&b)) {
            diag_error(S->diag, loc, "cannot compare %s with %s", value_kind_name(a.kind), value_kind_name(b.kind));
            return value_error();
        }
        bool r;
        if (a.kind == V_INT && b.kind == V_INT) {
            int64_t x = a.i, y = b.i;
            r = op == AOP_EQ ? x == y : op == AOP_NE ? x != y : op == AOP_LT ? x < y :
                op == AOP_LE ? x <= y : op == AOP_GT ? x > y : x >= y;
        } else {
            double x = value_number(&a), y = value_number(&b);
            r = op == AOP_EQ ? x == y : op == AOP_NE ? x != y : op == AOP_LT ? x < y :
                op == AOP_LE ? x <= y : op == AOP_GT ? x > y : x >= y;
        }
        return value_bool(r, loc);
    }
    if (!value_is_number(&a) || !value_is_number(&b)) {
        if (a.kind == V_LAYER || b.kind == V_LAYER)
            diag_error(S->diag, loc, "`%s` of a layer: apply it to a tensor first, as in conv(16, 3)(x)", ast_op_text(op));
        else
            diag_error(S->diag, loc, "`%s` needs numbers, not %s and %s", ast_op_text(op),
                       value_kind_name(a.kind), value_kind_name(b.kind));
        return value_error();
    }
    if (a.kind == V_INT && b.kind == V_INT) return int_arith(S, op, a.i, b.i, loc);
    if (op == AOP_SHL || op == AOP_SHR || op == AOP_MOD) {
        diag_error(S->diag, loc, "`%s` needs integers", ast_op_text(op));
        return value_error();
    }
    double x = value_number(&a), y = value_number(&b), r = 0;
    switch (op) {
    case AOP_ADD: r = x + y; break;
    case AOP_SUB: r = x - y; break;
    case AOP_MUL: r = x * y; break;
    case AOP_DIV:
        if (y == 0) { diag_error(S->diag, loc, "division by zero"); return value_error(); }
        r = x / y;
        break;
    }
    if (!isfinite(r)) {
        diag_error(S->diag, loc, "arithmetic result is not a finite number");
        return value_error();
    }
    return value_float(r, loc);
}

/* ---- evaluation ------------------------------------------------------- */

static Value eval_list(Sema *S, const Ast *n, ValueKind kind, bool sym)
{
    Value v = { .kind = kind, .loc = n->loc };
    v.n = n->list.n;
    v.items = sema_alloc(S, sizeof(Value) * (size_t)(v.n ? v.n : 1));
    for (int i = 0; i < v.n; i++) {
        v.items[i] = sym ? eval_sym(S, n->list.items[i]) : eval(S, n->list.items[i]);
        if (v.items[i].kind == V_ERROR) return value_error();
    }
    return v;
}

static Value lookup_index(Sema *S, const Ast *n)
{
    Value idx = eval(S, n->a);
    if (idx.kind == V_ERROR) return idx;
    if (idx.kind != V_INT) {
        diag_error(S->diag, n->a->loc, "an index must be an integer, not %s", value_kind_name(idx.kind));
        return value_error();
    }
    char key[300];
    snprintf(key, sizeof key, "%s[%lld]", n->str, (long long)idx.i);
    Binding *b = env_lookup(S, key);
    if (b) { Value v = b->value; v.loc = n->loc; return v; }
    Binding *whole = env_lookup(S, n->str);
    if (whole && whole->value.kind == V_ERROR) return value_error();   /* already reported */
    if (whole && whole->value.kind != V_LIST && whole->value.kind != V_TUPLE) {
        diag_error(S->diag, n->loc, "`%s` is a %s, not a list; and `%s` is not defined", n->str,
                   value_kind_name(whole->value.kind), key);
        return value_error();
    }
    if (whole) {
        Value l = whole->value;
        if (idx.i < 0 || idx.i >= l.n) {
            diag_error(S->diag, n->loc, "index %lld is out of range for `%s`, which has %d elements",
                       (long long)idx.i, n->str, l.n);
            return value_error();
        }
        Value v = l.items[idx.i];
        v.loc = n->loc;
        return v;
    }
    /* Say which indices do exist. */
    char have[200] = "";
    int count = 0;
    size_t nl = strlen(n->str);
    for (Frame *f = S->env; f; f = f->parent) {
        for (int i = 0; i < f->n; i++) {
            const char *vn = f->vars[i].name;
            if (strncmp(vn, n->str, nl) == 0 && vn[nl] == '[') {
                if (count < 6) {
                    size_t hl = strlen(have);
                    snprintf(have + hl, sizeof have - hl, "%s%s", count ? ", " : "", vn);
                }
                count++;
            }
        }
        if (f->function) break;
    }
    if (count)
        diag_error(S->diag, n->loc, "`%s` is not defined (defined: %s%s)", key, have, count > 6 ? ", ..." : "");
    else
        sema_unknown_name(S, n->str, n->loc);
    return value_error();
}

static Value eval_ident(Sema *S, const Ast *n, bool sym_ok)
{
    Binding *b = env_lookup(S, n->str);
    if (b) {
        Value v = b->value;
        /* numbers report where they are used; tensors, layers and symbols
         * where they were made (a misspelled `b(vaild)` points at the call) */
        if (v.kind != V_TENSOR && v.kind != V_LAYER && v.kind != V_SYM) v.loc = n->loc;
        return v;
    }
    OpKind op = op_lookup(n->str);
    if (op != OP_COUNT) return op_layer(S, op, n->loc);
    Ast *blk = program_find(&S->prog->blocks, n->str);
    if (blk) return block_layer(S, blk, n->loc);
    if (sym_ok) {
        Value v = { .kind = V_SYM, .s = n->str, .loc = n->loc };
        return v;
    }
    sema_unknown_name(S, n->str, n->loc);
    return value_error();
}

static Value builtin_minmax(Sema *S, const Ast *n, bool is_min)
{
    if (n->list.n < 1) {
        diag_error(S->diag, n->loc, "%s() needs at least one argument", is_min ? "min" : "max");
        return value_error();
    }
    Value best = value_error();
    for (int i = 0; i < n->list.n; i++) {
        const Ast *a = n->list.items[i];
        if (a->kind == A_NAMEDARG) {
            diag_error(S->diag, a->loc, "%s() takes no named arguments", is_min ? "min" : "max");
            return value_error();
        }
        Value v = eval(S, a);
        if (v.kind == V_ERROR) return v;
        if (!value_is_number(&v)) {
            diag_error(S->diag, a->loc, "%s() needs numbers, not %s", is_min ? "min" : "max", value_kind_name(v.kind));
            return value_error();
        }
        if (i == 0) { best = v; continue; }
        double x = value_number(&v), y = value_number(&best);
        if (is_min ? x < y : x > y) best = v;
        if (v.kind == V_FLOAT && best.kind == V_INT) best = value_float((double)best.i, n->loc);
    }
    best.loc = n->loc;
    return best;
}

/* dice_ce(logits, labels[, weightmap], ...): nnU-Net's compound loss,
 * dice_weight * dice(...) + ce_weight * ce(...) (both weights 1 by default).
 * The tensors go to both losses; `ignore` to both; `weight` (class weights)
 * to ce; `smooth`, `background` and `batch` to dice.  Built as two ordinary
 * loss calls, so the graph holds loss.dice, loss.ce and an add. */
static Value builtin_dice_ce(Sema *S, const Ast *n)
{
    AstArena *ar = &S->prog->arena;
    Ast *dc = ast_new(ar, A_CALL, n->loc), *cc = ast_new(ar, A_CALL, n->loc);
    dc->a = ast_new(ar, A_IDENT, n->a->loc);
    dc->a->str = xstrdup("dice");
    cc->a = ast_new(ar, A_IDENT, n->a->loc);
    cc->a->str = xstrdup("ce");
    double w[2] = { 1, 1 };   /* dice, ce */
    for (int i = 0; i < n->list.n; i++) {
        Ast *a = n->list.items[i];
        const char *key = a->kind == A_NAMEDARG ? a->str : a->kind == A_IDENT ? a->str : NULL;
        bool named = a->kind == A_NAMEDARG;
        if (named && (strcmp(key, "dice_weight") == 0 || strcmp(key, "ce_weight") == 0)) {
            Value v = eval(S, a->a);
            if (v.kind == V_ERROR) return v;
            if (!value_is_number(&v) || !(value_number(&v) >= 0)) {
                diag_error(S->diag, a->a->loc, "%s must be a non-negative number", key);
                return value_error();
            }
            w[key[0] == 'c'] = value_number(&v);
            continue;
        }
        bool to_dice = true, to_ce = true;
        if (key && (strcmp(key, "smooth") == 0 || strcmp(key, "background") == 0 || strcmp(key, "batch") == 0))
            to_ce = false;
        else if (key && strcmp(key, "weight") == 0)
            to_dice = false;
        else if (named && strcmp(key, "ignore") != 0) {
            diag_error(S->diag, a->loc, "dice_ce has no argument `%s` (it takes ignore, weight, smooth, background, "
                       "batch, dice_weight and ce_weight)", key);
            return value_error();
        }
        if (to_dice) ast_list_push(&dc->list, a);
        if (to_ce) ast_list_push(&cc->list, a);
    }
    Value d = w[0] != 0 ? eval(S, dc) : value_error();
    Value c = w[1] != 0 ? eval(S, cc) : value_error();
    if ((w[0] != 0 && d.kind == V_ERROR) || (w[1] != 0 && c.kind == V_ERROR)) return value_error();
    if (w[0] == 0 && w[1] == 0) {
        diag_error(S->diag, n->loc, "dice_ce with both weights 0 is no loss");
        return value_error();
    }
    if (w[0] != 0 && w[0] != 1) d = tensor_binop(S, AOP_MUL, value_float(w[0], n->loc), d, n->loc);
    if (w[1] != 0 && w[1] != 1) c = tensor_binop(S, AOP_MUL, value_float(w[1], n->loc), c, n->loc);
    if (w[0] == 0) return c;
    if (w[1] == 0) return d;
    return tensor_binop(S, AOP_ADD, d, c, n->loc);
}

static Value eval_any(Sema *S, const Ast *n, bool sym_ok)
{
    if (!n) return value_error();
    switch (n->kind) {
    case A_ERROR: return value_error();
    case A_INT: return n->op ? value_bool(n->ival != 0, n->loc) : value_int(n->ival, n->loc);
    case A_FLOAT: return value_float(n->fval, n->loc);
    case A_STR: { Value v = { .kind = V_STR, .s = n->str, .loc = n->loc }; return v; }
    case A_IDENT: return eval_ident(S, n, sym_ok);
    case A_DIMS: return eval_list(S, n, V_LIST, false);
    case A_LIST: return eval_list(S, n, V_LIST, sym_ok);
    case A_TUPLE: return eval_list(S, n, V_TUPLE, sym_ok);
    case A_RANGE: {
        Value lo = eval(S, n->a), hi = eval(S, n->b);
        if (lo.kind == V_ERROR || hi.kind == V_ERROR) return value_error();
        if (!value_is_number(&lo) || !value_is_number(&hi)) {
            diag_error(S->diag, n->loc, "a range needs numbers at both ends, not %s and %s",
                       value_kind_name(lo.kind), value_kind_name(hi.kind));
            return value_error();
        }
        Value v = { .kind = V_RANGE, .n = 2, .loc = n->loc };
        v.items = sema_alloc(S, 2 * sizeof(Value));
        v.items[0] = lo;
        v.items[1] = hi;
        return v;
    }
    case A_INDEX: return lookup_index(S, n);
    case A_MEMBER:
        diag_error(S->diag, n->loc, "dotted names (like enc.0.conv) are only used in train fields such as freeze");
        return value_error();
    case A_CALL: {
        if (n->a && n->a->kind == A_IDENT && !env_lookup(S, n->a->str)) {
            if (strcmp(n->a->str, "min") == 0) return builtin_minmax(S, n, true);
            if (strcmp(n->a->str, "max") == 0) return builtin_minmax(S, n, false);
            if (S->in_loss && strcmp(n->a->str, "dice_ce") == 0) return builtin_dice_ce(S, n);
        }
        Value callee = eval(S, n->a);
        if (callee.kind == V_ERROR) return callee;
        return call_value(S, callee, n);
    }
    case A_NAMEDARG:
        diag_error(S->diag, n->loc, "a named argument `%s = ...` can only appear inside a call", n->str);
        return value_error();
    case A_BINOP: {
        Value a = eval(S, n->a);
        Value b = eval(S, n->b);
        return arith(S, n->op, a, b, n->loc);
    }
    case A_UNOP: {
        Value a = eval(S, n->a);
        if (a.kind == V_ERROR) return a;
        if (n->op == AOP_NOT) {
            if (a.kind != V_BOOL) {
                diag_error(S->diag, n->loc, "`not` needs true/false, not %s", value_kind_name(a.kind));
                return value_error();
            }
            return value_bool(!a.i, n->loc);
        }
        if (a.kind == V_INT) {
            if (a.i == INT64_MIN) { diag_error(S->diag, n->loc, "integer overflow in negation"); return value_error(); }
            return value_int(-a.i, n->loc);
        }
        if (a.kind == V_FLOAT) return value_float(-a.f, n->loc);
        if (a.kind == V_TENSOR) return tensor_binop(S, AOP_MUL, value_float(-1.0, n->loc), a, n->loc);
        diag_error(S->diag, n->loc, "cannot negate %s", value_kind_name(a.kind));
        return value_error();
    }
    case A_CHAIN: {
        Value lhs = eval(S, n->a);
        if (lhs.kind == V_ERROR) return lhs;
        Value rhs = eval(S, n->b);
        if (rhs.kind == V_ERROR) return rhs;
        if (rhs.kind != V_LAYER) {
            diag_error(S->diag, n->b->loc, "the right side of `->` must be a layer such as relu or conv(16, 3), not %s",
                       value_kind_name(rhs.kind));
            return value_error();
        }
        if (lhs.kind == V_TENSOR)
            return apply_layer(S, rhs.layer, &lhs.tensor, 1, n->loc);
        if (lhs.kind == V_TUPLE) {
            int ts[64];
            if (lhs.n > 64) { diag_error(S->diag, n->loc, "too many tensors in one tuple"); return value_error(); }
            for (int i = 0; i < lhs.n; i++) {
                if (lhs.items[i].kind != V_TENSOR) {
                    diag_error(S->diag, lhs.items[i].loc, "a tuple chained into a layer must hold tensors, not %s",
                               value_kind_name(lhs.items[i].kind));
                    return value_error();
                }
                ts[i] = lhs.items[i].tensor;
            }
            return apply_layer(S, rhs.layer, ts, lhs.n, n->loc);
        }
        if (lhs.kind == V_LAYER) {
            Layer *l = sema_alloc(S, sizeof *l);
            l->kind = LAYER_CHAIN;
            l->first = lhs.layer;
            l->second = rhs.layer;
            l->name = "chain";
            l->loc = n->loc;
            Value v = { .kind = V_LAYER, .layer = l, .loc = n->loc };
            return v;
        }
        diag_error(S->diag, n->a->loc, "the left side of `->` must be a tensor or a layer, not %s",
                   value_kind_name(lhs.kind));
        return value_error();
    }
    case A_UNIT:
        diag_error(S->diag, n->loc, "a quantity with a unit (`%s`) is only meaningful in protocol fields", n->str);
        return value_error();
    default:
        diag_error(S->diag, n->loc, "a %s cannot be used as a value here", ast_kind_name(n->kind));
        return value_error();
    }
}

Value eval(Sema *S, const Ast *n) { return eval_any(S, n, false); }
Value eval_sym(Sema *S, const Ast *n) { return eval_any(S, n, true); }

/* Field values (protocol and train blocks).  Calls become V_CALL records that
 * the field's checker validates against its own table. */
Value eval_field(Sema *S, const Ast *n)
{
    if (!n) return value_error();
    if (n->kind == A_UNIT) {
        Value v = eval_field(S, n->a);
        if (v.kind == V_ERROR) return v;
        if (strcmp(n->str, "mm") != 0) {
            diag_error(S->diag, n->loc, "unexpected `%s` after a value (the only unit is mm, as in spacing 1.0 x 1.0 mm)", n->str);
            return value_error();
        }
        return v;
    }
    if (n->kind == A_CALL && n->a && n->a->kind == A_IDENT) {
        Value v = { .kind = V_CALL, .s = n->a->str, .loc = n->a->loc };
        v.nargs = n->list.n;
        v.args = sema_alloc(S, sizeof(Arg) * (size_t)(v.nargs ? v.nargs : 1));
        for (int i = 0; i < n->list.n; i++) {
            const Ast *a = n->list.items[i];
            v.args[i].loc = a->loc;
            if (a->kind == A_NAMEDARG) {
                v.args[i].name = a->str;
                v.args[i].value = eval_field(S, a->a);
            } else
                v.args[i].value = eval_field(S, a);
            if (v.args[i].value.kind == V_ERROR) return value_error();
        }
        return v;
    }
    if (n->kind == A_MEMBER) {
        /* a dotted parameter path, kept as text: enc.0.*  */
        char *text = ast_to_string(n);
        Value v = { .kind = V_SYM, .s = sema_strdup(S, text), .loc = n->loc };
        free(text);
        return v;
    }
    if (n->kind == A_LIST || n->kind == A_TUPLE) {
        Value v = { .kind = n->kind == A_LIST ? V_LIST : V_TUPLE, .loc = n->loc, .n = n->list.n };
        v.items = sema_alloc(S, sizeof(Value) * (size_t)(v.n ? v.n : 1));
        for (int i = 0; i < v.n; i++) {
            v.items[i] = eval_field(S, n->list.items[i]);
            if (v.items[i].kind == V_ERROR) return value_error();
        }
        return v;
    }
    return eval_sym(S, n);
}
