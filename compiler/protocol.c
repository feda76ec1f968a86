/* protocol.c — check a `protocol` block: the scanner acquisition a net is
 * compiled for.
 *
 *   protocol t1_brain_axial {
 *       modality  mri
 *       channels  t1
 *       size      256 x 256            # scan matrix; 2 numbers = 2D, 3 = 3D
 *       patch     256 x 256            # what the net is compiled for (default: size)
 *       spacing   1.0 x 1.0 mm
 *       normalize zscore
 *       classes   background, brain
 *       batch     1
 *   }
 */
#define _POSIX_C_SOURCE 200809L
#include "fields.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static const char *const known_fields[] = {
    "modality", "channels", "size", "patch", "spacing", "normalize", "classes", "batch", NULL
};

static const char *const modality_names[] = { "mri", "ct", "pet", "us", "xray", "other", NULL };

const char *modality_name(Modality m) { return (unsigned)m <= MOD_OTHER ? modality_names[m] : "?"; }

const char *norm_name(NormKind k)
{
    static const char *names[] = { "zscore", "zscore(nonzero)", "ct", "clip", "percentiles", "rescale", "none" };
    return (unsigned)k <= NORM_NONE ? names[k] : "?";
}

static char *name_of(Sema *S, const Value *v, const char *field)
{
    if (v->kind == V_SYM || v->kind == V_STR) return xstrdup(v->s);
    diag_error(S->diag, v->loc, "`%s` lists names (like t1, t2), not %s", field, value_kind_name(v->kind));
    return NULL;
}

/* channels t1, t2, flair  |  channels 3 */
static bool read_names(Sema *S, const Ast *f, char **names, int max, int *count, const char *prefix)
{
    if (f->list.n == 1) {
        Value v = eval_field(S, f->list.items[0]);
        if (v.kind == V_ERROR) return false;
        if (v.kind == V_INT) {
            if (v.i < 1 || v.i > max) {
                diag_error(S->diag, v.loc, "`%s` must be between 1 and %d, not %lld", f->str, max, (long long)v.i);
                return false;
            }
            *count = (int)v.i;
            for (int i = 0; i < *count; i++) {
                char b[32];
                if (*count == 1 && strcmp(prefix, "channel") == 0) snprintf(b, sizeof b, "image");
                else snprintf(b, sizeof b, "%s%d", prefix, i);
                names[i] = xstrdup(b);
            }
            return true;
        }
    }
    if (f->list.n > max) {
        diag_error(S->diag, f->loc, "`%s` lists %d names; the limit is %d", f->str, f->list.n, max);
        return false;
    }
    for (int i = 0; i < f->list.n; i++) {
        Value v = eval_field(S, f->list.items[i]);
        if (v.kind == V_ERROR) return false;
        char *n = name_of(S, &v, f->str);
        if (!n) return false;
        for (int j = 0; j < i; j++)
            if (strcmp(names[j], n) == 0) {
                diag_error(S->diag, v.loc, "`%s` lists `%s` twice", f->str, n);
                free(n);
                return false;
            }
        names[(*count)++] = n;
    }
    return *count > 0;
}

static bool read_norm(Sema *S, const Ast *f, Normalization *nm)
{
    Value v;
    if (!field_one(S, f, &v)) return false;
    const char *name = v.kind == V_SYM || v.kind == V_CALL ? v.s : NULL;
    if (!name) {
        diag_error(S->diag, v.loc, "`normalize` must be zscore, zscore(nonzero), ct, clip(lo .. hi), percentiles(lo .. hi), rescale or none");
        return false;
    }
    int nargs = v.kind == V_CALL ? v.nargs : 0;
    if (strcmp(name, "zscore") == 0) {
        nm->kind = NORM_ZSCORE;
        if (nargs == 1 && v.args[0].value.kind == V_SYM && strcmp(v.args[0].value.s, "nonzero") == 0) {
            nm->kind = NORM_ZSCORE_NONZERO;
            return true;
        }
        if (nargs == 0) return true;
        diag_error(S->diag, v.loc, "zscore takes no argument or `nonzero`");
        return false;
    }
    if (strcmp(name, "ct") == 0 || strcmp(name, "rescale") == 0 || strcmp(name, "none") == 0) {
        if (nargs) {
            diag_error(S->diag, v.loc, "`%s` takes no arguments%s", name,
                       strcmp(name, "ct") == 0 ? " (for a fixed HU window write clip(-1000 .. 1000))" : "");
            return false;
        }
        nm->kind = name[0] == 'c' ? NORM_CT : name[0] == 'r' ? NORM_RESCALE : NORM_NONE;
        return true;
    }
    if (strcmp(name, "clip") == 0 || strcmp(name, "percentiles") == 0) {
        bool pct = name[0] == 'p';
        if (nargs != 1 || v.args[0].value.kind != V_RANGE) {
            diag_error(S->diag, v.loc, "%s needs one range, as in %s", name, pct ? "percentiles(0.5 .. 99.5)" : "clip(-1000 .. 1000)");
            return false;
        }
        nm->kind = pct ? NORM_PERCENTILES : NORM_CLIP;
        nm->lo = value_number(&v.args[0].value.items[0]);
        nm->hi = value_number(&v.args[0].value.items[1]);
        if (!(nm->lo < nm->hi) || (pct && (nm->lo < 0 || nm->hi > 100))) {
            diag_error(S->diag, v.args[0].loc, "%s: the range must be increasing%s", name, pct ? " and within 0 .. 100" : "");
            return false;
        }
        return true;
    }
    Suggest sg;
    suggest_init(&sg, name);
    const char *opts[] = { "zscore", "ct", "clip", "percentiles", "rescale", "none" };
    for (int i = 0; i < 6; i++) suggest_offer(&sg, opts[i]);
    diag_error(S->diag, v.loc, "unknown normalization `%s`%s", name, suggest_hint(&sg));
    return false;
}

Protocol *protocol_resolve(Program *p, Ast *decl, Override *ov, int nov)
{
    Sema S;
    sema_init(&S, p);
    frame_push(&S, true);
    Protocol *pr = xcalloc(1, sizeof *pr);
    pr->name = xstrdup(decl->str);
    pr->loc = decl->loc;
    pr->modality = MOD_OTHER;
    pr->batch = 1;
    fields_check_known(&S, decl, known_fields, "protocol");

    const Ast *f;
    if ((f = field_find(decl, "modality", "protocol", ov, nov))) {
        Value v;
        if (field_one(&S, f, &v)) {
            int m = -1;
            Suggest sg;
            suggest_init(&sg, v.kind == V_SYM ? v.s : "");
            for (int i = 0; modality_names[i]; i++) {
                if (v.kind == V_SYM && strcmp(v.s, modality_names[i]) == 0) m = i;
                suggest_offer(&sg, modality_names[i]);
            }
            if (m < 0) {
                diag_error(S.diag, v.loc, "unknown modality `%s`; use mri, ct, pet, us, xray or other%s",
                           v.kind == V_SYM ? v.s : value_kind_name(v.kind), suggest_hint(&sg));
            } else
                pr->modality = (Modality)m;
        }
    }
    if ((f = field_find(decl, "channels", "protocol", ov, nov)))
        read_names(&S, f, pr->channels, MAX_CHANNELS, &pr->nchannels, "channel");
    if (pr->nchannels == 0) {   /* none given, or an error was reported: one channel */
        pr->nchannels = 1;
        pr->channels[0] = xstrdup("image");
    }
    if ((f = field_find(decl, "size", "protocol", ov, nov)))
        pr->rank = field_sizes(&S, f, pr->size);
    else
        diag_error(S.diag, decl->loc, "protocol %s needs a `size` (the scan matrix, such as 256 x 256)", decl->str);
    if (pr->rank > 0) {
        for (int i = 0; i < pr->rank; i++) { pr->patch[i] = pr->size[i]; pr->spacing[i] = 1.0; }
        if ((f = field_find(decl, "patch", "protocol", ov, nov))) {
            int64_t tmp[MAX_SPATIAL];
            int r = field_sizes(&S, f, tmp);
            if (r > 0 && r != pr->rank)
                diag_error(S.diag, f->list.items[0]->loc, "`patch` has %d axes but `size` has %d", r, pr->rank);
            else if (r > 0)
                memcpy(pr->patch, tmp, sizeof tmp);
        }
        if ((f = field_find(decl, "spacing", "protocol", ov, nov))) {
            Value v;
            if (field_one(&S, f, &v)) {
                if (value_is_number(&v)) {
                    for (int i = 0; i < pr->rank; i++) pr->spacing[i] = value_number(&v);
                } else if (v.kind == V_LIST && v.n == pr->rank) {
                    for (int i = 0; i < pr->rank; i++) {
                        if (!value_is_number(&v.items[i])) { v.kind = V_ERROR; break; }
                        pr->spacing[i] = value_number(&v.items[i]);
                    }
                    if (v.kind == V_ERROR) diag_error(S.diag, f->loc, "`spacing` must hold numbers");
                } else
                    diag_error(S.diag, v.loc, "`spacing` needs %d numbers (one per axis of `size`), as in %s mm",
                               pr->rank, pr->rank == 3 ? "1.0 x 1.0 x 1.5" : "1.0 x 1.0");
                for (int i = 0; i < pr->rank; i++)
                    if (!(pr->spacing[i] > 0 && pr->spacing[i] < 1e6)) {
                        diag_error(S.diag, f->loc, "`spacing` must be positive");
                        break;
                    }
            }
        }
    }
    pr->norm.kind = pr->modality == MOD_CT ? NORM_CT : NORM_ZSCORE;
    if ((f = field_find(decl, "normalize", "protocol", ov, nov))) read_norm(&S, f, &pr->norm);
    if ((f = field_find(decl, "classes", "protocol", ov, nov)))
        read_names(&S, f, pr->classes, MAX_CLASSES, &pr->nclasses, "class");
    else
        diag_error(S.diag, decl->loc, "protocol %s needs `classes` (a count, or names such as background, brain)", decl->str);
    if ((f = field_find(decl, "batch", "protocol", ov, nov))) field_int(&S, f, 1, 4096, &pr->batch);

    fields_check_overrides(&S, "protocol", known_fields, ov, nov);
    sema_release(&S);
    /* Without a size nothing has a shape; other mistakes are reported and the
     * net is still checked against what is known, so one run shows them all. */
    if (pr->rank <= 0) {
        protocol_free(pr);
        return NULL;
    }
    return pr;
}

void protocol_free(Protocol *pr)
{
    if (!pr) return;
    for (int i = 0; i < pr->nchannels; i++) free(pr->channels[i]);
    for (int i = 0; i < pr->nclasses; i++) free(pr->classes[i]);
    free(pr->name);
    free(pr);
}
