/* safetensors_graph.c — a graph's parameters to and from safetensors files
 * (see safetensors.h: st_save_params, st_load_params). */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "safetensors_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD_MAX_LINES 20

/* ---- graphs ------------------------------------------------------------ */

int st_save_params(const char *path, const Graph *g, const float *const *param_data,
                   char *err, size_t errlen)
{
    if (!g || (g->nparams > 0 && !param_data)) {
        st_seterr(err, errlen, "%s: st_save_params: bad arguments", path ? path : "(null)");
        return -1;
    }
    StTensor *t = calloc((size_t)g->nparams + 1, sizeof *t);
    if (!t) {
        st_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < g->nparams; i++) {
        const Param *p = &g->params[i];
        const Shape *s = &g->tensors[p->tensor].shape;
        t[i].name = p->name;
        t[i].dtype = "F32";
        t[i].rank = s->rank;
        for (int k = 0; k < s->rank && k < ST_MAX_RANK; k++) t[i].shape[k] = s->d[k];
        t[i].data = param_data[i];
    }
    const char *keys[] = { "format", "netc.net" };
    const char *vals[] = { "pt", g->net_name ? g->net_name : "" };
    int rc = st_write(path, t, g->nparams, keys, vals, 2, err, errlen);
    free(t);
    return rc;
}

/* Problem lines for st_load_params. */
typedef struct { StBuf b; int count, shown; } Problems;

static void problem(Problems *pr, const char *fmt, ...)
{
    pr->count++;
    if (pr->shown >= LOAD_MAX_LINES) return;
    pr->shown++;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    st_bputs(&pr->b, "\n  ");
    st_bputs(&pr->b, line);
}

static int entry_index(const StFile *f, const char *name)
{
    const StEntry *e = st_find(f, name);
    return e ? (int)(e - f->entries) : -1;
}

static bool is_nbt(const char *name)
{
    const char *s = "num_batches_tracked";
    size_t n = strlen(name), k = strlen(s);
    return n >= k && strcmp(name + n - k, s) == 0 && (n == k || name[n - k - 1] == '.');
}

static bool convertible(const char *dt)
{
    return strcmp(dt, "F32") == 0 || strcmp(dt, "F16") == 0 || strcmp(dt, "BF16") == 0 ||
           strcmp(dt, "F64") == 0;
}

/* Parse the mapping file into src[] / mapped[]; problems for bad lines. */
static int read_mapping(const char *mpath, const StFile *f, const Graph *g, int *src, bool *mapped,
                        Problems *pr, char *err, size_t errlen)
{
    FILE *m = fopen(mpath, "r");
    if (!m) {
        st_seterr(err, errlen, "%s: cannot open mapping file: %s", mpath, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0;
    while (fgets(line, sizeof line, m)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *save = NULL;
        char *a = strtok_r(line, " \t\r\n", &save);
        if (!a) continue;
        char *b = strtok_r(NULL, " \t\r\n", &save);
        char *c = b ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        if (!b || c) {
            problem(pr, "%s:%d: expected `their_name our_name`", mpath, lineno);
            continue;
        }
        int fi = entry_index(f, a);
        int pi = -1;
        for (int i = 0; i < g->nparams; i++)
            if (strcmp(g->params[i].name, b) == 0) { pi = i; break; }
        if (fi < 0) problem(pr, "%s:%d: `%s` is not a tensor of %s", mpath, lineno, a, f->path);
        else if (mapped[fi]) problem(pr, "%s:%d: `%s` is mapped twice", mpath, lineno, a);
        if (pi < 0) problem(pr, "%s:%d: `%s` is not a parameter of net `%s`", mpath, lineno, b,
                            g->net_name ? g->net_name : "?");
        else if (src[pi] != -1) problem(pr, "%s:%d: `%s` is the target of two mapping lines", mpath, lineno, b);
        if (fi >= 0) mapped[fi] = true;
        if (pi >= 0 && src[pi] == -1) src[pi] = fi >= 0 ? fi : -2;   /* -2: mapped to a missing tensor */
    }
    fclose(m);
    return 0;
}

int st_load_params(const StFile *f, const Graph *g, float **param_data,
                   const char *mapping_path, char *err, size_t errlen)
{
    if (!f || !g || (g->nparams > 0 && !param_data)) {
        st_seterr(err, errlen, "st_load_params: bad arguments");
        return -1;
    }
    int np = g->nparams;
    int *src = malloc(((size_t)np + 1) * sizeof *src);
    bool *mapped = calloc((size_t)f->n + 1, sizeof *mapped);
    bool *used = calloc((size_t)f->n + 1, sizeof *used);
    Problems pr = { 0 };
    int rc = -1;
    if (!src || !mapped || !used) {
        st_seterr(err, errlen, "%s: out of memory", f->path);
        goto out;
    }
    for (int i = 0; i < np; i++) src[i] = -1;
    if (mapping_path && read_mapping(mapping_path, f, g, src, mapped, &pr, err, errlen) != 0) goto out;
    for (int i = 0; i < np; i++) {
        const Param *p = &g->params[i];
        const Shape *s = &g->tensors[p->tensor].shape;
        char want[256], have[256];
        st_fmt_shape(want, sizeof want, s->rank, s->d);
        if (src[i] == -2) continue;          /* already reported by the mapping */
        if (src[i] == -1) {
            int fi = entry_index(f, p->name);
            if (fi >= 0 && !mapped[fi]) src[i] = fi;
        }
        if (src[i] < 0) {
            problem(&pr, "missing: `%s` (%s %s %s)", p->name, p->trainable ? "parameter" : "buffer", want, "F32");
            continue;
        }
        const StEntry *e = &f->entries[src[i]];
        used[src[i]] = true;
        bool same = e->rank == s->rank;
        for (int k = 0; same && k < s->rank; k++) same = e->shape[k] == s->d[k];
        const char *as = strcmp(e->name, p->name) == 0 ? "" : " (mapped from `";
        if (!same)
            problem(&pr, "shape: `%s`%s%s%s is %s in the file, the net needs %s", p->name, as,
                    *as ? e->name : "", *as ? "`)" : "", st_fmt_shape(have, sizeof have, e->rank, e->shape), want);
        else if (!convertible(e->dtype))
            problem(&pr, "dtype: `%s`%s%s%s is %s in the file, the net needs F32 (F16, BF16 and F64 are converted)",
                    p->name, as, *as ? e->name : "", *as ? "`)" : "", e->dtype);
    }
    for (int i = 0; i < f->n; i++) {
        const StEntry *e = &f->entries[i];
        if (used[i] || mapped[i] || is_nbt(e->name)) continue;
        char have[256];
        problem(&pr, "extra: `%s` (%s %s) is not a parameter of net `%s`", e->name,
                st_fmt_shape(have, sizeof have, e->rank, e->shape), e->dtype, g->net_name ? g->net_name : "?");
    }
    if (pr.count > 0) {
        if (pr.count > pr.shown) {
            char more[64];
            snprintf(more, sizeof more, "\n  ... and %d more", pr.count - pr.shown);
            st_bputs(&pr.b, more);
        }
        st_seterr(err, errlen, "%s: %d problem%s loading weights into net `%s`:%s", f->path, pr.count,
               pr.count == 1 ? "" : "s", g->net_name ? g->net_name : "?", pr.b.s ? pr.b.s : "");
        goto out;
    }
    for (int i = 0; i < np; i++) {
        if (!param_data[i]) {
            st_seterr(err, errlen, "%s: st_load_params: no buffer for `%s`", f->path, g->params[i].name);
            goto out;
        }
    }
    for (int i = 0; i < np; i++) st_to_float(f, &f->entries[src[i]], param_data[i]);
    rc = 0;
out:
    free(pr.b.s);
    free(src);
    free(mapped);
    free(used);
    return rc;
}
