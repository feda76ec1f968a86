/* fields.c — helpers shared by the protocol and train checkers: finding a
 * field (or its -D override), and reading sizes, numbers and names from it. */
#define _POSIX_C_SOURCE 200809L
#include "fields.h"

#include <string.h>

void fields_check_known(Sema *S, const Ast *decl, const char *const *known, const char *what)
{
    for (int i = 0; i < decl->list.n; i++) {
        const Ast *f = decl->list.items[i];
        if (!f) continue;
        bool ok = false;
        Suggest sg;
        suggest_init(&sg, f->str);
        for (const char *const *k = known; *k; k++) {
            if (strcmp(*k, f->str) == 0) ok = true;
            suggest_offer(&sg, *k);
        }
        if (!ok) {
            const char *best = suggest_result(&sg);
            if (best)
                diag_error(S->diag, f->loc, "unknown %s field `%s`; did you mean `%s`?", what, f->str, best);
            else
                diag_error(S->diag, f->loc, "unknown %s field `%s`", what, f->str);
        }
        for (int j = 0; j < i; j++) {
            const Ast *g = decl->list.items[j];
            if (g && strcmp(g->str, f->str) == 0) {
                diag_error(S->diag, f->loc, "field `%s` is given twice", f->str);
                diag_note(S->diag, g->loc, "the first is here");
                break;
            }
        }
    }
}

const Ast *field_find(const Ast *decl, const char *key, const char *prefix, Override *ov, int nov)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", prefix, key);
    const Ast *found = NULL;
    for (int i = 0; i < nov; i++)   /* the last -D of a key wins, as for net parameters */
        if (strcmp(ov[i].key, full) == 0) { ov[i].used = true; found = ov[i].value; }
    if (found) return found;
    for (int i = 0; i < decl->list.n; i++) {
        const Ast *f = decl->list.items[i];
        if (f && strcmp(f->str, key) == 0) return f;
    }
    return NULL;
}

void fields_check_overrides(Sema *S, const char *prefix, const char *const *known, Override *ov, int nov)
{
    size_t pl = strlen(prefix);
    for (int i = 0; i < nov; i++) {
        if (ov[i].used || strncmp(ov[i].key, prefix, pl) != 0 || ov[i].key[pl] != '.') continue;
        const char *k = ov[i].key + pl + 1;
        Suggest sg;
        suggest_init(&sg, k);
        for (const char *const *q = known; *q; q++) suggest_offer(&sg, *q);
        diag_error(S->diag, NO_LOC, "-D %s: there is no %s field `%s`%s", ov[i].key, prefix, k, suggest_hint(&sg));
        ov[i].used = true;
    }
}

bool field_one(Sema *S, const Ast *f, Value *out)
{
    if (f->list.n != 1) {
        diag_error(S->diag, f->loc, "`%s` takes one value, got %d", f->str ? f->str : "value", f->list.n);
        return false;
    }
    *out = eval_field(S, f->list.items[0]);
    return out->kind != V_ERROR;
}

bool field_int(Sema *S, const Ast *f, int64_t lo, int64_t hi, int64_t *out)
{
    Value v;
    if (!field_one(S, f, &v)) return false;
    if (v.kind != V_INT) {
        diag_error(S->diag, v.loc, "`%s` must be an integer, not %s", f->str, value_kind_name(v.kind));
        return false;
    }
    if (v.i < lo || v.i > hi) {
        diag_error(S->diag, v.loc, "`%s` must be between %lld and %lld, not %lld", f->str, (long long)lo,
                   (long long)hi, (long long)v.i);
        return false;
    }
    *out = v.i;
    return true;
}

bool field_number(Sema *S, const Ast *f, double lo, double hi, double *out)
{
    Value v;
    if (!field_one(S, f, &v)) return false;
    if (!value_is_number(&v)) {
        diag_error(S->diag, v.loc, "`%s` must be a number, not %s", f->str, value_kind_name(v.kind));
        return false;
    }
    double x = value_number(&v);
    if (!(x >= lo && x <= hi)) {
        diag_error(S->diag, v.loc, "`%s` must be between %g and %g, not %g", f->str, lo, hi, x);
        return false;
    }
    *out = x;
    return true;
}

int field_sizes(Sema *S, const Ast *f, int64_t *out)
{
    Value v;
    if (!field_one(S, f, &v)) return -1;
    Value one = v;
    if (v.kind == V_INT) v = (Value){ .kind = V_LIST, .n = 1, .items = &one, .loc = one.loc };
    if (v.kind != V_LIST || v.n < 1 || v.n > MAX_SPATIAL) {
        diag_error(S->diag, v.loc, "`%s` must be a size with 1 to 3 axes, such as 256 x 256 or 128 x 128 x 64", f->str);
        return -1;
    }
    for (int i = 0; i < v.n; i++) {
        const Value *e = &v.items[i];
        if (e->kind != V_INT || e->i < 1 || e->i > (INT64_C(1) << 24)) {
            diag_error(S->diag, e->loc, "`%s`: every size must be a whole number from 1 to 16777216", f->str);
            return -1;
        }
        out[i] = e->i;
    }
    return v.n;
}
