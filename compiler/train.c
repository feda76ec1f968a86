/* train.c — check a `train NET on PROTOCOL` block (the training recipe).
 *
 * This stage validates names, types and ranges and records the recipe in a
 * TrainSpec; executing it (data, optimizer steps) belongs to the runtime.
 * The loss expression is checked by building it onto the graph
 * (train_add_losses), where it meets the net's real output names and shapes.
 *
 * Every callable field value (optimizers, schedules, augmentations, sampling)
 * is described by one row of a table below: its parameters in positional
 * order, their kinds and defaults.  nnU-Net's defaults are used where the
 * recipe says nothing (see docs/language.md).
 */
#define _POSIX_C_SOURCE 200809L
#include "fields.h"
#include "util.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

typedef enum { P_END = 0, P_NUM, P_POS, P_PROB, P_INT, P_FLAG, P_RANGE, P_AXES } ParamKind;

typedef struct { const char *name; ParamKind kind; double def; } FnParam;
typedef struct { const char *name; double lo, hi; FnParam p[8]; } FnSpec; /* lo, hi: default range */

static const FnSpec optimizers[] = {
    { "sgd", 0, 0, { { "lr", P_POS, 0.01 }, { "momentum", P_PROB, 0.99 }, { "nesterov", P_FLAG, 1 },
               { "weight_decay", P_NUM, 3e-5 } } },
    { "adam", 0, 0, { { "lr", P_POS, 1e-3 }, { "beta1", P_PROB, 0.9 }, { "beta2", P_PROB, 0.999 },
                { "eps", P_POS, 1e-8 }, { "weight_decay", P_NUM, 0 } } },
    { "adamw", 0, 0, { { "lr", P_POS, 1e-3 }, { "beta1", P_PROB, 0.9 }, { "beta2", P_PROB, 0.999 },
                 { "eps", P_POS, 1e-8 }, { "weight_decay", P_NUM, 1e-2 } } },
    { NULL, 0, 0, { { 0 } } }
};

static const FnSpec schedules[] = {
    { "constant", 0, 0, { { 0 } } },
    { "poly", 0, 0, { { "power", P_POS, 0.9 } } },
    { "cosine", 0, 0, { { "min_lr", P_NUM, 0 } } },
    { "step", 0, 0, { { "every", P_INT, 50 }, { "gamma", P_POS, 0.1 } } },
    { "warmup", 0, 0, { { "epochs", P_INT, 50 } } },
    { NULL, 0, 0, { { 0 } } }
};

/* Augmentations: (range default lo, hi) and probability; nnU-Net's values. */
static const FnSpec augmentations[] = {
    { "mirror", 0, 0, { { "axes", P_AXES, 0 }, { "p", P_PROB, 0.5 } } },
    { "rotate", -30, 30, { { "degrees", P_RANGE, 0 }, { "p", P_PROB, 0.2 } } },
    { "scale", 0.7, 1.4, { { "factor", P_RANGE, 0 }, { "p", P_PROB, 0.2 } } },
    { "elastic", 0, 200, { { "alpha", P_RANGE, 0 }, { "sigma", P_POS, 10 }, { "p", P_PROB, 0 } } },
    { "noise", 0, 0.1, { { "variance", P_RANGE, 0 }, { "p", P_PROB, 0.1 } } },
    { "blur", 0.5, 1.0, { { "sigma", P_RANGE, 0 }, { "p", P_PROB, 0.2 } } },
    { "brightness", 0.75, 1.25, { { "factor", P_RANGE, 0 }, { "p", P_PROB, 0.15 } } },
    { "contrast", 0.75, 1.25, { { "factor", P_RANGE, 0 }, { "p", P_PROB, 0.15 } } },
    { "lowres", 0.5, 1.0, { { "zoom", P_RANGE, 0 }, { "p", P_PROB, 0.25 } } },
    { "gamma", 0.7, 1.5, { { "gamma", P_RANGE, 0 }, { "p", P_PROB, 0.3 }, { "invert", P_FLAG, 0 } } },
    { NULL, 0, 0, { { 0 } } }
};

static const FnSpec samplings[] = {
    { "random", 0, 0, { { 0 } } },
    { "foreground", 0, 0, { { "fraction", P_PROB, 0.33 } } },
    { "balanced", 0, 0, { { 0 } } },
    { NULL, 0, 0, { { 0 } } }
};

static bool read_call(Sema *S, const Value *v, const FnSpec *table, const char *what, int rank, TrainCall *c);

/* nnU-Net's augmentation pipeline, used when a recipe has no `augment`:
 * rotation (3D +-30 deg, 2D +-180), scaling, noise, blur, brightness,
 * contrast, simulated low resolution, inverted gamma, gamma, mirroring. */
static TrainCall *default_augment(Sema *S, int rank, int *n)
{
    static const char *names[] = { "rotate", "scale", "noise", "blur", "brightness", "contrast",
                                   "lowres", "gamma", "gamma", "mirror" };
    int count = (int)(sizeof names / sizeof names[0]);
    TrainCall *calls = xcalloc((size_t)count, sizeof *calls);
    for (int i = 0; i < count; i++) {
        Value v = { .kind = V_SYM, .s = names[i], .loc = NO_LOC };
        read_call(S, &v, augmentations, "augmentation", rank, &calls[i]);
    }
    if (rank == 2) { calls[0].lo = -180; calls[0].hi = 180; }
    calls[7].num[1] = 0.1;    /* inverted gamma, p = 0.1 */
    calls[7].num[2] = 1;
    *n = count;
    return calls;
}

static const char *const known_fields[] = {
    "loss", "optimizer", "schedule", "batch", "patch", "sampling", "foreground", "augment",
    "epochs", "iterations", "val_iterations", "freeze", "init", "clip", "seed", "deep_supervision", NULL
};

static const FnSpec *find_spec(Sema *S, const FnSpec *table, const char *name, SrcLoc loc, const char *what)
{
    Suggest sg;
    suggest_init(&sg, name);
    for (const FnSpec *f = table; f->name; f++) {
        if (strcmp(f->name, name) == 0) return f;
        suggest_offer(&sg, f->name);
    }
    const char *best = suggest_result(&sg);
    char list[256] = "";
    for (const FnSpec *f = table; f->name; f++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", f->name);
    }
    if (best)
        diag_error(S->diag, loc, "unknown %s `%s`; did you mean `%s`?", what, name, best);
    else
        diag_error(S->diag, loc, "unknown %s `%s` (known: %s)", what, name, list);
    return NULL;
}

static bool set_param(Sema *S, const FnSpec *fs, int k, const Value *v, SrcLoc loc, TrainCall *c)
{
    const FnParam *p = &fs->p[k];
    switch (p->kind) {
    case P_FLAG:
        if (v->kind != V_BOOL) {
            diag_error(S->diag, loc, "%s: `%s` is a flag: write `%s` or `%s = false`", fs->name, p->name, p->name, p->name);
            return false;
        }
        c->num[k] = (double)v->i;
        return true;
    case P_RANGE:
        if (v->kind != V_RANGE) {
            diag_error(S->diag, loc, "%s: `%s` must be a range such as %g .. %g", fs->name, p->name, fs->lo, fs->hi);
            return false;
        }
        c->lo = value_number(&v->items[0]);
        c->hi = value_number(&v->items[1]);
        if (c->lo > c->hi) {
            diag_error(S->diag, loc, "%s: the range %g .. %g is decreasing", fs->name, c->lo, c->hi);
            return false;
        }
        return true;
    case P_AXES:
        return false;   /* handled by the caller */
    case P_INT:
        if (v->kind != V_INT || v->i < 1) {
            diag_error(S->diag, loc, "%s: `%s` must be a positive integer", fs->name, p->name);
            return false;
        }
        c->num[k] = (double)v->i;
        return true;
    default:
        if (!value_is_number(v)) {
            diag_error(S->diag, loc, "%s: `%s` must be a number, not %s", fs->name, p->name, value_kind_name(v->kind));
            return false;
        }
        c->num[k] = value_number(v);
        if (p->kind == P_POS && !(c->num[k] > 0)) {
            diag_error(S->diag, loc, "%s: `%s` must be positive, not %g", fs->name, p->name, c->num[k]);
            return false;
        }
        if (p->kind == P_PROB && !(c->num[k] >= 0 && c->num[k] <= 1)) {
            diag_error(S->diag, loc, "%s: `%s` must be between 0 and 1, not %g", fs->name, p->name, c->num[k]);
            return false;
        }
        if (p->kind == P_NUM && !(c->num[k] >= 0)) {
            diag_error(S->diag, loc, "%s: `%s` cannot be negative (%g)", fs->name, p->name, c->num[k]);
            return false;
        }
        return true;
    }
}

/* mirror(x, y, z): spatial axes by name; x is the last (fastest) axis. */
static bool read_axis(Sema *S, const Value *v, int rank, unsigned *mask)
{
    static const char *names = "xyz";
    if (v->kind == V_SYM && strlen(v->s) == 1 && strchr(names, v->s[0])) {
        int k = (int)(strchr(names, v->s[0]) - names);   /* 0 = x */
        if (k >= rank) {
            diag_error(S->diag, v->loc, "axis `%s` does not exist in a %dD protocol", v->s, rank);
            return false;
        }
        *mask |= 1u << (rank - 1 - k);
        return true;
    }
    diag_error(S->diag, v->loc, "mirror takes axis names x, y, z");
    return false;
}

/* Check one call (or bare name) against its table; fill defaults. */
static bool read_call(Sema *S, const Value *v, const FnSpec *table, const char *what, int rank, TrainCall *c)
{
    memset(c, 0, sizeof *c);
    if (v->kind != V_SYM && v->kind != V_CALL) {
        diag_error(S->diag, v->loc, "expected a %s such as %s(...), not %s", what, table[0].name, value_kind_name(v->kind));
        return false;
    }
    const FnSpec *fs = find_spec(S, table, v->s, v->loc, what);
    if (!fs) return false;
    c->name = fs->name;
    c->loc = v->loc;
    c->lo = fs->lo;
    c->hi = fs->hi;
    int np = 0;
    for (; np < 8 && fs->p[np].kind != P_END; np++) c->num[np] = fs->p[np].def;
    bool is_mirror = np > 0 && fs->p[0].kind == P_AXES;
    if (is_mirror) c->axes = (1u << rank) - 1;
    if (v->kind == V_SYM) return true;
    bool ok = true, given[8] = { false };
    int pos = 0;
    bool mirror_axes_given = false;
    for (int i = 0; i < v->nargs; i++) {
        const Arg *a = &v->args[i];
        int k = -1;
        if (a->name) {
            for (int j = 0; j < np; j++)
                if (strcmp(fs->p[j].name, a->name) == 0) k = j;
            if (k < 0) {
                Suggest sg;
                suggest_init(&sg, a->name);
                for (int j = 0; j < np; j++) suggest_offer(&sg, fs->p[j].name);
                diag_error(S->diag, a->loc, "%s has no parameter `%s`%s", fs->name, a->name, suggest_hint(&sg));
                ok = false;
                continue;
            }
        } else if (is_mirror && a->value.kind == V_SYM && strlen(a->value.s) == 1) {
            if (!mirror_axes_given) c->axes = 0;
            mirror_axes_given = true;
            if (!read_axis(S, &a->value, rank, &c->axes)) ok = false;
            continue;
        } else if (a->value.kind == V_SYM) {
            for (int j = 0; j < np; j++)
                if (fs->p[j].kind == P_FLAG && strcmp(fs->p[j].name, a->value.s) == 0) k = j;
            if (k < 0) {
                diag_error(S->diag, a->loc, "%s: unknown flag `%s`", fs->name, a->value.s);
                ok = false;
                continue;
            }
            given[k] = true;
            c->num[k] = 1;
            continue;
        } else {
            while (pos < np && (fs->p[pos].kind == P_AXES || fs->p[pos].kind == P_FLAG)) pos++;
            k = pos++;
            if (k >= np) {
                int npos = 0;
                for (int j = 0; j < np; j++) npos += fs->p[j].kind != P_AXES && fs->p[j].kind != P_FLAG;
                diag_error(S->diag, a->loc, "%s takes at most %d value%s by position (name the others)", fs->name,
                           npos, npos == 1 ? "" : "s");
                ok = false;
                continue;
            }
        }
        if (given[k]) {
            diag_error(S->diag, a->loc, "%s: `%s` is given twice", fs->name, fs->p[k].name);
            ok = false;
            continue;
        }
        given[k] = true;
        if (!set_param(S, fs, k, &a->value, a->value.loc, c)) ok = false;
    }
    return ok;
}

/* Two calls of the same name are the same entry unless a flag differs:
 * gamma(...) and gamma(..., invert) are both nnU-Net augmentations. */
static bool same_variant(const FnSpec *table, const TrainCall *a, const TrainCall *b)
{
    if (strcmp(a->name, b->name) != 0) return false;
    for (const FnSpec *f = table; f->name; f++) {
        if (strcmp(f->name, a->name) != 0) continue;
        for (int k = 0; k < 8 && f->p[k].kind != P_END; k++)
            if (f->p[k].kind == P_FLAG && a->num[k] != b->num[k]) return false;
    }
    return true;
}

static TrainCall *read_calls(Sema *S, const Ast *f, const FnSpec *table, const char *what, int rank, int *n)
{
    TrainCall *calls = xcalloc((size_t)(f->list.n ? f->list.n : 1), sizeof *calls);
    *n = 0;
    for (int i = 0; i < f->list.n; i++) {
        Value v = eval_field(S, f->list.items[i]);
        if (v.kind == V_ERROR) continue;
        if (read_call(S, &v, table, what, rank, &calls[*n])) {
            for (int j = 0; j < *n; j++)
                if (same_variant(table, &calls[j], &calls[*n])) {
                    diag_error(S->diag, v.loc, "%s `%s` is listed twice", what, calls[*n].name);
                    break;
                }
            (*n)++;
        }
    }
    return calls;
}

TrainSpec *train_resolve(Program *p, Ast *decl, const Protocol *pr, Override *ov, int nov)
{
    Sema S;
    sema_init(&S, p);
    frame_push(&S, true);
    TrainSpec *t = xcalloc(1, sizeof *t);
    t->net = xstrdup(decl->str);
    t->protocol = xstrdup(decl->str2);
    t->loc = decl->loc;
    /* nnU-Net's defaults */
    t->batch = 2;
    t->epochs = 1000;
    t->iterations = 250;
    t->val_iterations = 50;
    t->seed = 12345;
    t->foreground = 0.33;
    t->clip = 12;
    t->patch_rank = pr->rank;
    memcpy(t->patch, pr->patch, sizeof t->patch);
    Value sgd = { .kind = V_SYM, .s = "sgd", .loc = decl->loc };
    read_call(&S, &sgd, optimizers, "optimizer", pr->rank, &t->optimizer);
    fields_check_known(&S, decl, known_fields, "train");

    const Ast *f;
    if ((f = field_find(decl, "loss", "train", ov, nov))) {
        if (f->list.n != 1)
            diag_error(S.diag, f->loc, "`loss` takes one expression (add several losses with +)");
        else
            t->loss = f->list.items[0];
    } else
        diag_error(S.diag, decl->loc, "train block for %s needs a `loss`, such as dice(logits, labels) + ce(logits, labels)",
                   decl->str);
    if ((f = field_find(decl, "deep_supervision", "train", ov, nov)))
        t->deep_supervision = f;   /* checked against the net's outputs by train_add_losses */
    if ((f = field_find(decl, "optimizer", "train", ov, nov))) {
        Value v;
        if (field_one(&S, f, &v)) read_call(&S, &v, optimizers, "optimizer", pr->rank, &t->optimizer);
    }
    if ((f = field_find(decl, "schedule", "train", ov, nov)))
        t->schedule = read_calls(&S, f, schedules, "schedule", pr->rank, &t->nschedule);
    else {   /* nnU-Net: poly(0.9) */
        t->schedule = xcalloc(1, sizeof *t->schedule);
        Value poly = { .kind = V_SYM, .s = "poly", .loc = decl->loc };
        read_call(&S, &poly, schedules, "schedule", pr->rank, &t->schedule[0]);
        t->nschedule = 1;
    }
    if ((f = field_find(decl, "augment", "train", ov, nov)))
        t->augment = read_calls(&S, f, augmentations, "augmentation", pr->rank, &t->naugment);
    else
        t->augment = default_augment(&S, pr->rank, &t->naugment);
    Value fg = { .kind = V_SYM, .s = "foreground", .loc = decl->loc };
    read_call(&S, &fg, samplings, "sampling", pr->rank, &t->sampling);
    if ((f = field_find(decl, "foreground", "train", ov, nov))) {
        field_number(&S, f, 0, 1, &t->foreground);
        t->sampling.num[0] = t->foreground;
    }
    if ((f = field_find(decl, "sampling", "train", ov, nov))) {
        Value v;
        if (field_one(&S, f, &v)) read_call(&S, &v, samplings, "sampling", pr->rank, &t->sampling);
    }
    if ((f = field_find(decl, "batch", "train", ov, nov))) field_int(&S, f, 1, 4096, &t->batch);
    if ((f = field_find(decl, "epochs", "train", ov, nov))) field_int(&S, f, 1, 1000000, &t->epochs);
    if ((f = field_find(decl, "iterations", "train", ov, nov))) field_int(&S, f, 1, 100000000, &t->iterations);
    if ((f = field_find(decl, "val_iterations", "train", ov, nov))) field_int(&S, f, 0, 100000000, &t->val_iterations);
    if ((f = field_find(decl, "seed", "train", ov, nov))) field_int(&S, f, 0, INT64_MAX, &t->seed);
    if ((f = field_find(decl, "clip", "train", ov, nov))) field_number(&S, f, 0, 1e30, &t->clip);
    if ((f = field_find(decl, "patch", "train", ov, nov))) {
        int64_t tmp[MAX_SPATIAL];
        int r = field_sizes(&S, f, tmp);
        if (r > 0 && r != pr->rank)
            diag_error(S.diag, f->list.items[0]->loc, "`patch` has %d axes but protocol %s is %dD", r, pr->name, pr->rank);
        else if (r > 0)
            memcpy(t->patch, tmp, sizeof tmp);
    }
    if ((f = field_find(decl, "freeze", "train", ov, nov))) {
        t->freeze = xcalloc((size_t)f->list.n + 1, sizeof(char *));
        t->freeze_loc = xcalloc((size_t)f->list.n + 1, sizeof(SrcLoc));
        for (int i = 0; i < f->list.n; i++) {
            Value v = eval_field(&S, f->list.items[i]);
            if (v.kind == V_ERROR) continue;
            if (v.kind != V_SYM && v.kind != V_STR) {
                diag_error(S.diag, v.loc, "`freeze` lists parameter names or patterns, such as enc.0 or enc.*");
                continue;
            }
            t->freeze_loc[t->nfreeze] = v.loc;
            t->freeze[t->nfreeze++] = xstrdup(v.s);
        }
    }
    if ((f = field_find(decl, "init", "train", ov, nov))) {
        Value v;
        if (field_one(&S, f, &v)) {
            if (v.kind != V_STR)
                diag_error(S.diag, v.loc, "`init` is the path of a safetensors file, in quotes");
            else
                t->init_weights = xstrdup(v.s);
        }
    }
    fields_check_overrides(&S, "train", known_fields, ov, nov);
    sema_release(&S);
    return t;   /* with any errors reported; the loss is still checked */
}

void train_free(TrainSpec *t)
{
    if (!t) return;
    free(t->net);
    free(t->protocol);
    free(t->schedule);
    free(t->augment);
    for (int i = 0; i < t->nfreeze; i++) free(t->freeze[i]);
    free(t->freeze);
    free(t->freeze_loc);
    free(t->init_weights);
    free(t);
}

bool train_add_losses(Program *p, Graph *g, const TrainSpec *t, const Protocol *pr)
{
    if (!t->loss) return false;
    ExpandShape sh = { .batch = t->batch, .size = t->patch };
    bool ok = expand_loss(p, g, pr, &sh, t->loss, t->deep_supervision);
    /* Freeze: mark matching parameters; a pattern that matches nothing is
     * almost certainly a typo and would silently train everything. */
    for (int k = 0; k < t->nfreeze; k++) {
        int hits = 0;
        for (int i = 0; i < g->nparams; i++)
            if (g->params[i].trainable && name_matches(t->freeze[k], g->params[i].name)) {
                g->params[i].frozen = true;
                hits++;
            }
        if (!hits) {
            diag_error(p->diag, t->freeze_loc[k], "freeze pattern `%s` matches no parameter of %s (names look like %s)",
                       t->freeze[k], g->net_name, g->nparams ? g->params[0].name : "enc.0.conv.weight");
            ok = false;
        }
    }
    return ok;
}

/* A pattern matches a parameter when it matches the whole name or a prefix
 * ending at a dot: `enc.0` freezes enc.0.conv.weight; `*` wildcards work as
 * in shell patterns (`enc.*.conv.weight`). */
bool name_matches(const char *pattern, const char *name)
{
    if (fnmatch(pattern, name, 0) == 0) return true;
    size_t n = strlen(name);
    char *prefix = xmalloc(n + 1);
    bool hit = false;
    for (size_t i = 0; i < n && !hit; i++) {
        if (name[i] != '.') continue;
        memcpy(prefix, name, i);
        prefix[i] = 0;
        hit = fnmatch(pattern, prefix, 0) == 0;
    }
    free(prefix);
    return hit;
}
