/* attrs.c — turn the arguments written at an op's call site into OpAttrs,
 * driven by the op's AttrSpec table (ops.c).
 *
 *   conv(64, [1, 3, 3], stride = [1, 2, 2], padding = valid, bias = false)
 *
 * Positional arguments fill the attributes with position 0, 1, ... in order;
 * named ones fill by name.  A bare name equal to a boolean attribute is that
 * flag set to true (`ceil`).  Per-axis attributes take one number for every
 * axis or a list with one number per spatial axis of the protocol.
 */
#define _POSIX_C_SOURCE 200809L
#include "sema_internal.h"

#include <string.h>

static int count_positional(const AttrSpec *specs)
{
    int n = 0;
    for (const AttrSpec *s = specs; s && s->name; s++)
        if (s->position >= 0) n++;
    return n;
}

static const AttrSpec *spec_at(const AttrSpec *specs, int pos)
{
    for (const AttrSpec *s = specs; s && s->name; s++)
        if (s->position == pos) return s;
    return NULL;
}

static const AttrSpec *spec_named(const AttrSpec *specs, const char *name)
{
    for (const AttrSpec *s = specs; s && s->name; s++)
        if (strcmp(s->name, name) == 0) return s;
    return NULL;
}

static bool need_int(Sema *S, const char *op, const AttrSpec *sp, const Value *v, int64_t *out)
{
    if (v->kind == V_INT) { *out = v->i; return true; }
    if (v->kind == V_SYM) { sema_unknown_name(S, v->s, v->loc); return false; }
    if (v->kind == V_FLOAT)
        diag_error(S->diag, v->loc, "%s: `%s` must be a whole number, not %g", op, sp->name, v->f);
    else
        diag_error(S->diag, v->loc, "%s: `%s` must be an integer, not %s", op, sp->name, value_kind_name(v->kind));
    return false;
}

static bool check_axes(Sema *S, const char *op, const AttrSpec *sp, const int64_t *dst, SrcLoc loc)
{
    /* out_pad may be 0; kernels, strides, dilations and scales are >= 1 */
    int64_t min = strcmp(sp->name, "out_pad") == 0 ? 0 : 1;
    for (int i = 0; i < S->rank; i++)
        if (dst[i] < min || dst[i] > (INT64_C(1) << 31)) {
            diag_error(S->diag, loc, "%s: `%s` must be %s, not %lld", op, sp->name,
                       min ? "a positive integer" : "0 or more", (long long)dst[i]);
            return false;
        }
    return true;
}

static bool set_axes(Sema *S, const char *op, const AttrSpec *sp, const Value *v, int64_t *dst)
{
    int rank = S->rank;
    if (v->kind == V_LIST) {
        if (v->n != rank) {
            diag_error(S->diag, v->loc, "%s: `%s` has %d values but the protocol is %dD (one value per spatial axis)",
                       op, sp->name, v->n, rank);
            return false;
        }
        for (int i = 0; i < rank; i++)
            if (!need_int(S, op, sp, &v->items[i], &dst[i])) return false;
        return check_axes(S, op, sp, dst, v->loc);
    }
    int64_t x;
    if (!need_int(S, op, sp, v, &x)) return false;
    for (int i = 0; i < rank; i++) dst[i] = x;
    return check_axes(S, op, sp, dst, v->loc);
}

static bool set_padding(Sema *S, const char *op, const AttrSpec *sp, const Value *v, Padding *p)
{
    int rank = S->rank;
    if (v->kind == V_SYM || v->kind == V_STR) {
        if (strcmp(v->s, "same") == 0) { p->mode = PAD_SAME; return true; }
        if (strcmp(v->s, "valid") == 0) { p->mode = PAD_VALID; return true; }
        Suggest sg;
        suggest_init(&sg, v->s);
        suggest_offer(&sg, "same");
        suggest_offer(&sg, "valid");
        diag_error(S->diag, v->loc, "%s: `%s` must be same, valid, a number, or per-axis amounts, not `%s`%s",
                   op, sp->name, v->s, suggest_hint(&sg));
        return false;
    }
    p->mode = PAD_EXPLICIT;
    if (v->kind == V_INT) {
        for (int i = 0; i < rank; i++) p->lo[i] = p->hi[i] = v->i;
        return true;
    }
    if (v->kind == V_FLOAT) {
        diag_error(S->diag, v->loc, "%s: `%s` is a whole number of voxels, not %g", op, sp->name, v->f);
        return false;
    }
    if (v->kind != V_LIST) {
        diag_error(S->diag, v->loc, "%s: `%s` must be same, valid, a number, or per-axis amounts, not %s",
                   op, sp->name, value_kind_name(v->kind));
        return false;
    }
    if (v->n != rank) {
        diag_error(S->diag, v->loc, "%s: `%s` has %d entries but the protocol is %dD (one per spatial axis)",
                   op, sp->name, v->n, rank);
        return false;
    }
    for (int i = 0; i < rank; i++) {
        const Value *e = &v->items[i];
        if (e->kind == V_INT) { p->lo[i] = p->hi[i] = e->i; continue; }
        if (e->kind == V_LIST && e->n == 2 && e->items[0].kind == V_INT && e->items[1].kind == V_INT) {
            p->lo[i] = e->items[0].i;
            p->hi[i] = e->items[1].i;
            continue;
        }
        diag_error(S->diag, e->loc, "%s: each entry of `%s` is an integer or a [before, after] pair", op, sp->name);
        return false;
    }
    for (int i = 0; i < rank; i++)
        if (p->lo[i] < 0 || p->hi[i] < 0) {
            diag_error(S->diag, v->loc, "%s: `%s` cannot be negative", op, sp->name);
            return false;
        }
    return true;
}

/* "nearest|linear" -> "nearest, linear" for messages */
static const char *enum_list(Sema *S, const char *vals)
{
    char *out = sema_alloc(S, 2 * strlen(vals) + 1), *q = out;
    for (const char *p = vals; *p; p++) {
        if (*p == '|') { *q++ = ','; *q++ = ' '; }
        else *q++ = *p;
    }
    *q = 0;
    return out;
}

static bool set_enum(Sema *S, const char *op, const AttrSpec *sp, const Value *v, int *dst)
{
    if (v->kind != V_SYM && v->kind != V_STR) {
        diag_error(S->diag, v->loc, "%s: `%s` must be one of %s, not %s", op, sp->name, enum_list(S, sp->enum_values),
                   value_kind_name(v->kind));
        return false;
    }
    const char *vals = sp->enum_values;
    Suggest sg;
    suggest_init(&sg, v->s);
    int idx = 0;
    char word[64];
    for (const char *p = vals; *p; idx++) {
        size_t len = strcspn(p, "|");
        if (len >= sizeof word) len = sizeof word - 1;
        memcpy(word, p, len);
        word[len] = 0;
        if (strcmp(word, v->s) == 0) { *dst = idx; return true; }
        suggest_offer(&sg, sema_strdup(S, word));
        p += len;
        if (*p == '|') p++;
    }
    const char *best = suggest_result(&sg);
    if (best)
        diag_error(S->diag, v->loc, "%s: unknown %s `%s`; did you mean `%s`?", op, sp->name, v->s, best);
    else
        diag_error(S->diag, v->loc, "%s: `%s` must be one of %s, not `%s`", op, sp->name, enum_list(S, vals), v->s);
    return false;
}

static bool set_one(Sema *S, const char *op, const AttrSpec *sp, const Value *v, OpAttrs *at)
{
    char *base = (char *)at + sp->offset;
    if (v->kind == V_ERROR) return false;
    switch (sp->type) {
    case AT_INT: return need_int(S, op, sp, v, (int64_t *)base);
    case AT_FLOAT:
        if (!value_is_number(v)) {
            if (v->kind == V_SYM) { sema_unknown_name(S, v->s, v->loc); return false; }
            diag_error(S->diag, v->loc, "%s: `%s` must be a number, not %s", op, sp->name, value_kind_name(v->kind));
            return false;
        }
        *(double *)base = value_number(v);
        return true;
    case AT_BOOL:
        if (v->kind != V_BOOL) {
            diag_error(S->diag, v->loc, "%s: `%s` must be true or false, not %s", op, sp->name, value_kind_name(v->kind));
            return false;
        }
        *(bool *)base = v->i != 0;
        return true;
    case AT_AXES: return set_axes(S, op, sp, v, (int64_t *)base);
    case AT_PADDING: return set_padding(S, op, sp, v, (Padding *)base);
    case AT_ENUM: return set_enum(S, op, sp, v, (int *)base);
    case AT_FLOATS: {
        if (v->kind != V_LIST) {
            diag_error(S->diag, v->loc, "%s: `%s` must be a list of numbers like [1, 10]", op, sp->name);
            return false;
        }
        if (v->n > 64) {
            diag_error(S->diag, v->loc, "%s: `%s` has more than 64 values", op, sp->name);
            return false;
        }
        for (int i = 0; i < v->n; i++) {
            if (!value_is_number(&v->items[i])) {
                diag_error(S->diag, v->items[i].loc, "%s: `%s` must hold numbers", op, sp->name);
                return false;
            }
            at->weights[i] = value_number(&v->items[i]);
        }
        at->nweights = v->n;
        return true;
    }
    }
    return false;
}

bool parse_op_attrs(Sema *S, OpKind k, const Arg *args, int nargs, OpAttrs *at, SrcLoc loc)
{
    const OpInfo *info = &op_table[k];
    const AttrSpec *specs = info->attrs;
    op_default_attrs(k, S->rank, at);
    bool given[64] = { false };
    bool ok = true;
    int pos = 0, npos = count_positional(specs);
    for (int i = 0; i < nargs; i++) {
        const Arg *a = &args[i];
        const AttrSpec *sp;
        if (a->name) {
            sp = spec_named(specs, a->name);
            if (!sp) {
                Suggest sg;
                suggest_init(&sg, a->name);
                for (const AttrSpec *s = specs; s && s->name; s++) suggest_offer(&sg, s->name);
                const char *best = suggest_result(&sg);
                if (best)
                    diag_error(S->diag, a->loc, "%s has no argument `%s`; did you mean `%s`?", info->name, a->name, best);
                else
                    diag_error(S->diag, a->loc, "%s has no argument `%s`", info->name, a->name);
                ok = false;
                continue;
            }
        } else {
            /* A bare flag: `ceil`, `nesterov`. */
            if (a->value.kind == V_SYM && (sp = spec_named(specs, a->value.s)) && sp->type == AT_BOOL) {
                *(bool *)((char *)at + sp->offset) = true;
                given[sp - specs] = true;
                continue;
            }
            sp = spec_at(specs, pos++);
            bool takes_symbol = sp && (sp->type == AT_ENUM || sp->type == AT_PADDING);
            if (a->value.kind == V_SYM && !takes_symbol) {
                /* concat(image, imag): a misspelled tensor, not an attribute */
                sema_unknown_name(S, a->value.s, a->loc);
                ok = false;
                continue;
            }
            if (!sp) {
                if (!specs || !specs->name)
                    diag_error(S->diag, a->loc, "%s takes only tensors", info->name);
                else if (npos == 0)
                    diag_error(S->diag, a->loc, "%s takes no positional arguments (name them, as in %s(%s = ...))",
                               info->name, info->name, specs->name);
                else
                    diag_error(S->diag, a->loc, "%s takes at most %d positional argument%s", info->name, npos,
                               npos == 1 ? "" : "s");
                ok = false;
                continue;
            }
        }
        int idx = (int)(sp - specs);
        if (given[idx]) {
            diag_error(S->diag, a->loc, "%s: `%s` is given twice", info->name, sp->name);
            ok = false;
            continue;
        }
        given[idx] = true;
        if (!set_one(S, info->name, sp, &a->value, at)) ok = false;
    }
    for (const AttrSpec *s = specs; ok && s && s->name; s++)
        if (s->required && !given[s - specs]) {
            diag_error(S->diag, loc, "%s needs `%s`", info->name, s->name);
            ok = false;
        }
    return ok;
}
