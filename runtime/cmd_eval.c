/* cmd_eval.c — `netc eval PRED GT`: Dice, IoU, HD95, ASSD and NSD per case
 * and class between predicted and reference label maps (runtime/metrics.c),
 * a summary per class and an optional CSV.  docs/cli.md states the
 * conventions (MONAI's). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "commands.h"
#include "metrics.h"
#include "nifti_io.h"

static const char *usage_eval =
    "usage: netc eval PRED GT [--labels 1,2,...] [--tolerance MM] [--csv OUT.csv] [-q]\n"
    "\n"
    "Compares predicted label maps with reference ones: PRED and GT are two NIfTI files,\n"
    "or two folders whose .nii/.nii.gz files are matched by case name (the file name\n"
    "without .nii/.nii.gz).  Per case and class, in mm from the headers' spacing:\n"
    "Dice, IoU, HD95, ASSD and the normalized surface Dice (NSD), as MONAI computes\n"
    "them (docs/cli.md); then mean and sd per class over the cases, NaN ignored.\n"
    "\n"
    "  --labels L,...   the classes to evaluate (default: every label > 0 found in\n"
    "                   any prediction or reference)\n"
    "  --tolerance MM   NSD tolerance in mm (default 1)\n"
    "  --csv OUT.csv    write case,class,dice,iou,hd95,assd,nsd per case and class,\n"
    "                   then rows `mean` and `sd` per class (written atomically)\n"
    "  -q               print nothing but errors\n";

static int eval_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "netc eval: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage_eval);
    return 2;
}

/* ---- cases -------------------------------------------------------------- */

typedef struct {
    char *name;              /* case name */
    char *pred, *gt;         /* paths */
    SegMetrics m[256];       /* per class */
} Case;

typedef struct {
    Case *c;
    int n, cap;
} Cases;

static void cases_free(Cases *cs)
{
    for (int i = 0; i < cs->n; i++) {
        free(cs->c[i].name);
        free(cs->c[i].pred);
        free(cs->c[i].gt);
    }
    free(cs->c);
    memset(cs, 0, sizeof *cs);
}

static char *join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + strlen(name) + 2;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "%s/%s", dir, name);
    return p;
}

/* Length of the case name in a NIfTI file name, or 0 if not .nii/.nii.gz. */
static size_t case_len(const char *file)
{
    size_t n = strlen(file);
    if (n > 7 && strcmp(file + n - 7, ".nii.gz") == 0)
        return n - 7;
    if (n > 4 && strcmp(file + n - 4, ".nii") == 0)
        return n - 4;
    return 0;
}

static char *case_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = case_len(base);
    if (n == 0)
        n = strlen(base);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, base, n);
        s[n] = 0;
    }
    return s;
}

/* The sorted NIfTI file names of a folder. */
typedef struct {
    char **name;
    int n;
} Listing;

static void listing_free(Listing *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->name[i]);
    free(l->name);
    l->name = NULL;
    l->n = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_nifti(const char *dir, Listing *l, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || case_len(e->d_name) == 0)
            continue;
        if (l->n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(l->name, sizeof(char *) * (size_t)cap);
            if (!nn)
                goto oom;
            l->name = nn;
        }
        if (!(l->name[l->n] = strdup(e->d_name)))
            goto oom;
        l->n++;
    }
    closedir(d);
    if (l->n > 0)
        qsort(l->name, (size_t)l->n, sizeof(char *), cmp_str);
    return 0;
oom:
    closedir(d);
    listing_free(l);
    snprintf(err, errlen, "out of memory listing %s", dir);
    return -1;
}

/* The file of listing l whose case name is `name`, or NULL. */
static const char *find_case(const Listing *l, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < l->n; i++)
        if (case_len(l->name[i]) == n && strncmp(l->name[i], name, n) == 0)
            return l->name[i];
    return NULL;
}

static int add_case(Cases *cs, const char *name, char *pred, char *gt)
{
    if (cs->n == cs->cap) {
        int cap = cs->cap ? 2 * cs->cap : 8;
        Case *nc = realloc(cs->c, sizeof(Case) * (size_t)cap);
        if (!nc)
            return -1;
        cs->c = nc;
        cs->cap = cap;
    }
    Case *c = &cs->c[cs->n];
    memset(c, 0, sizeof *c);
    c->name = strdup(name);
    c->pred = pred;
    c->gt = gt;
    cs->n++;
    return c->name && pred && gt ? 0 : -1;
}

/* Pair the cases of two folders; every case must be on both sides. */
static int pair_folders(const char *pdir, const char *gdir, Cases *cs, char *err, size_t errlen)
{
    Listing lp, lg;
    if (list_nifti(pdir, &lp, err, errlen) != 0)
        return -1;
    if (list_nifti(gdir, &lg, err, errlen) != 0) {
        listing_free(&lp);
        return -1;
    }
    int rc = 0;
    if (lg.n == 0) {
        snprintf(err, errlen, "%s: no .nii or .nii.gz files", gdir);
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < lg.n; i++) {
        size_t n = case_len(lg.name[i]);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(n < 255 ? n : 255), lg.name[i]);
        const char *pf = find_case(&lp, name);
        if (!pf) {
            snprintf(err, errlen, "case %s: %s/%s has no prediction in %s", name, gdir, lg.name[i], pdir);
            rc = -1;
        } else if (add_case(cs, name, join(pdir, pf), join(gdir, lg.name[i])) != 0) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        }
    }
    for (int i = 0; rc == 0 && i < lp.n; i++) {
        size_t n = case_len(lp.name[i]);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(n < 255 ? n : 255), lp.name[i]);
        if (!find_case(&lg, name)) {
            snprintf(err, errlen, "case %s: %s/%s has no reference in %s", name, pdir, lp.name[i], gdir);
            rc = -1;
        }
    }
    listing_free(&lp);
    listing_free(&lg);
    return rc;
}

/* ---- per case ----------------------------------------------------------- */

/* Read one case and compute the metrics of `want` classes (want[c] != 0);
 * present[c] is set for every class > 0 found in either map. */
static int eval_case(Case *c, const MetricOptions *o, const uint8_t *want, uint8_t *present, char *err,
                     size_t errlen)
{
    Volume vp, vg;
    uint8_t *lp = NULL, *lg = NULL;
    int rc = -1;
    memset(&vg, 0, sizeof vg);
    if (vol_read(c->pred, &vp, err, errlen) != 0)
        return -1;
    if (vol_read(c->gt, &vg, err, errlen) != 0)
        goto done;
    if (mt_same_grid(&vg, c->gt, &vp, c->pred, err, errlen) != 0)
        goto done;
    if (mt_labels_u8(&vp, c->pred, &lp, err, errlen) != 0 || mt_labels_u8(&vg, c->gt, &lg, err, errlen) != 0)
        goto done;
    const int64_t shape[3] = { vg.dim[2], vg.dim[1], vg.dim[0] };
    const double spacing[3] = { vg.spacing[2], vg.spacing[1], vg.spacing[0] };
    int64_t n = shape[0] * shape[1] * shape[2];
    uint8_t here[256] = { 0 };
    for (int64_t i = 0; i < n; i++)
        here[lp[i]] = here[lg[i]] = 1;
    for (int k = 1; k < 256; k++) {
        present[k] |= here[k];
        if (want && !want[k])
            continue;
        if (!here[k]) { /* absent from both: no need to look */
            seg_metrics_empty(o, &c->m[k]);
            continue;
        }
        char e2[256];
        if (seg_metrics(lp, lg, (uint8_t)k, shape, spacing, o, &c->m[k], e2, sizeof e2) != 0) {
            snprintf(err, errlen, "case %s: %s", c->name, e2);
            goto done;
        }
    }
    rc = 0;
done:
    free(lp);
    free(lg);
    vol_free(&vp);
    vol_free(&vg);
    return rc;
}

/* ---- output ------------------------------------------------------------- */

static void fmt_val(char *buf, size_t len, double v, const char *fmt)
{
    if (isnan(v))
        snprintf(buf, len, "nan");
    else if (isinf(v))
        snprintf(buf, len, v > 0 ? "inf" : "-inf");
    else
        snprintf(buf, len, fmt, v);
}

enum { NMETRIC = 5 };
static const char *metric_name[NMETRIC] = { "dice", "iou", "hd95", "assd", "nsd" };

static double metric_value(const SegMetrics *m, int k)
{
    const double v[NMETRIC] = { m->dice, m->iou, m->hd95, m->assd, m->nsd };
    return v[k];
}

/* Mean and population sd over the non-NaN values; *nnan counts the NaNs. */
static void summarize(const Cases *cs, int cls, int k, double *mean, double *sd, int *nused, int *nnan)
{
    double s = 0, s2 = 0;
    int n = 0, nn = 0;
    for (int i = 0; i < cs->n; i++) {
        double v = metric_value(&cs->c[i].m[cls], k);
        if (isnan(v)) {
            nn++;
            continue;
        }
        s += v;
        n++;
    }
    *mean = n ? s / n : NAN;
    for (int i = 0; i < cs->n; i++) {
        double v = metric_value(&cs->c[i].m[cls], k);
        if (!isnan(v))
            s2 += (v - *mean) * (v - *mean);
    }
    *sd = n ? sqrt(s2 / n) : NAN;
    if (n && isinf(*mean))
        *sd = NAN;
    *nused = n;
    *nnan = nn;
}

static void print_tables(const Cases *cs, const int *cls, int ncls)
{
    int w = 4;
    for (int i = 0; i < cs->n; i++)
        if ((int)strlen(cs->c[i].name) > w)
            w = (int)strlen(cs->c[i].name);
    printf("%-*s  %5s  %8s  %8s  %9s  %9s  %8s\n", w, "case", "class", "dice", "iou", "hd95_mm", "assd_mm", "nsd");
    char b[NMETRIC][32];
    for (int i = 0; i < cs->n; i++)
        for (int j = 0; j < ncls; j++) {
            const SegMetrics *m = &cs->c[i].m[cls[j]];
            for (int k = 0; k < NMETRIC; k++)
                fmt_val(b[k], sizeof b[k], metric_value(m, k), "%.4f");
            printf("%-*s  %5d  %8s  %8s  %9s  %9s  %8s\n", w, cs->c[i].name, cls[j], b[0], b[1], b[2], b[3], b[4]);
        }
    printf("\nsummary over %d case%s (mean ± sd over the cases, population sd; NaN values ignored):\n", cs->n,
           cs->n == 1 ? "" : "s");
    printf("%5s  %-6s  %10s  %10s  %5s  %5s\n", "class", "metric", "mean", "sd", "n", "nan");
    for (int j = 0; j < ncls; j++)
        for (int k = 0; k < NMETRIC; k++) {
            double mean, sd;
            int n, nn;
            summarize(cs, cls[j], k, &mean, &sd, &n, &nn);
            fmt_val(b[0], sizeof b[0], mean, "%.4f");
            fmt_val(b[1], sizeof b[1], sd, "%.4f");
            printf("%5d  %-6s  %10s  %10s  %5d  %5d\n", cls[j], metric_name[k], b[0], b[1], n, nn);
        }
}

static int write_csv(const char *path, const Cases *cs, const int *cls, int ncls, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char b[NMETRIC][40];
    fprintf(f, "case,class,dice,iou,hd95,assd,nsd\n");
    for (int i = 0; i < cs->n; i++)
        for (int j = 0; j < ncls; j++) {
            for (int k = 0; k < NMETRIC; k++)
                fmt_val(b[k], sizeof b[k], metric_value(&cs->c[i].m[cls[j]], k), "%.9g");
            fprintf(f, "%s,%d,%s,%s,%s,%s,%s\n", cs->c[i].name, cls[j], b[0], b[1], b[2], b[3], b[4]);
        }
    for (int row = 0; row < 2; row++)
        for (int j = 0; j < ncls; j++) {
            for (int k = 0; k < NMETRIC; k++) {
                double mean, sd;
                int n, nn;
                summarize(cs, cls[j], k, &mean, &sd, &n, &nn);
                fmt_val(b[k], sizeof b[k], row == 0 ? mean : sd, "%.9g");
            }
            fprintf(f, "%s,%d,%s,%s,%s,%s,%s\n", row == 0 ? "mean" : "sd", cls[j], b[0], b[1], b[2], b[3], b[4]);
        }
    int ok = !ferror(f);
    ok = fclose(f) == 0 && ok;
    int rc = ok ? atomic_write(path, text, len, err, errlen) : -1;
    if (!ok) snprintf(err, errlen, "out of memory");
    free(text);
    return rc;
}

/* ---- command line ------------------------------------------------------- */

/* "1,2,5" into want[]; 0, or -1 if malformed. */
static int parse_labels(const char *s, uint8_t *want)
{
    const char *p = s;
    int any = 0;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > 255 || (*end != ',' && *end != 0))
            return -1;
        want[v] = 1;
        any = 1;
        p = *end == ',' ? end + 1 : end;
        if (*end == ',' && !*p)
            return -1;
    }
    return any ? 0 : -1;
}

static int is_dir(const char *path, int *isdir)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    *isdir = S_ISDIR(st.st_mode);
    return 0;
}

int netc_eval_main(int argc, char **argv)
{
    const char *pos[2] = { NULL, NULL }, *csv = NULL, *labels = NULL;
    int npos = 0, quiet = 0;
    MetricOptions o;
    metric_options_default(&o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_eval, stdout);
            return 0;
        }
        if (strcmp(a, "-q") == 0) {
            quiet = 1;
        } else if (strcmp(a, "--labels") == 0 || strcmp(a, "--tolerance") == 0 || strcmp(a, "--csv") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0])
                return eval_usage_error("%s needs a value", a);
            const char *v = argv[++i];
            if (a[2] == 'l') {
                labels = v;
            } else if (a[2] == 'c') {
                csv = v;
            } else {
                char *end;
                errno = 0;
                o.tolerance = strtod(v, &end);
                if (end == v || *end || errno || !(o.tolerance >= 0) || !isfinite(o.tolerance))
                    return eval_usage_error("--tolerance wants a distance in mm >= 0, not `%s`", v);
            }
        } else if (a[0] == '-' && a[1]) {
            return eval_usage_error("unknown option %s", a);
        } else {
            if (npos == 2)
                return eval_usage_error("unexpected argument %s", a);
            pos[npos++] = a;
        }
    }
    if (npos != 2)
        return eval_usage_error("%s", "needs a prediction and a reference (files or folders)");
    uint8_t want[256] = { 0 };
    if (labels && parse_labels(labels, want) != 0)
        return eval_usage_error("--labels wants class numbers 1..255 separated by commas, not `%s`", labels);

    char err[1024];
    int isdir[2];
    for (int k = 0; k < 2; k++)
        if (is_dir(pos[k], &isdir[k]) != 0) {
            fprintf(stderr, "netc eval: %s: %s\n", pos[k], strerror(errno));
            return 1;
        }
    int dp = isdir[0], dg = isdir[1];
    if (dp != dg) {
        fprintf(stderr, "netc eval: %s is a %s but %s is a %s: give two files or two folders\n", pos[0],
                dp ? "folder" : "file", pos[1], dg ? "folder" : "file");
        return 1;
    }
    Cases cs = { 0 };
    if (dp) {
        if (pair_folders(pos[0], pos[1], &cs, err, sizeof err) != 0) {
            fprintf(stderr, "netc eval: %s\n", err);
            cases_free(&cs);
            return 1;
        }
    } else {
        char *name = case_name(pos[1]);
        int r = name ? add_case(&cs, name, strdup(pos[0]), strdup(pos[1])) : -1;
        free(name);
        if (r != 0) {
            fprintf(stderr, "netc eval: out of memory\n");
            cases_free(&cs);
            return 1;
        }
    }
    uint8_t present[256] = { 0 };
    for (int i = 0; i < cs.n; i++)
        if (eval_case(&cs.c[i], &o, labels ? want : NULL, present, err, sizeof err) != 0) {
            fprintf(stderr, "netc eval: %s\n", err);
            cases_free(&cs);
            return 1;
        }
    int cls[255], ncls = 0;
    for (int k = 1; k < 256; k++)
        if (labels ? want[k] : present[k])
            cls[ncls++] = k;
    if (ncls == 0) {
        fprintf(stderr, "netc eval: no label > 0 in any prediction or reference; give --labels to evaluate anyway\n");
        cases_free(&cs);
        return 1;
    }
    if (!quiet)
        print_tables(&cs, cls, ncls);
    int rc = 0;
    if (csv && write_csv(csv, &cs, cls, ncls, err, sizeof err) != 0) {
        fprintf(stderr, "netc eval: %s\n", err);
        rc = 1;
    }
    cases_free(&cs);
    return rc;
}
