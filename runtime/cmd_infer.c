/* cmd_infer.c — `netc infer`: the net compiled once (generated code, LLVM
 * JIT or the C compiler, exec.h) at the protocol's patch, wrapped as an
 * InferNet per weights file, and the engine of infer.c over whole scans. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <nifti1_io.h>

#include "commands.h"
#include "dataset.h"
#include "diag.h"
#include "driver.h"
#include "exec.h"
#include "infer.h"
#include "pool.h"
#include "ref.h"
#include "safetensors.h"
#include "util.h"

#define MAX_FILES 16

static const char *usage_infer =
    "usage: netc infer FILE --weights W.safetensors [--weights W2 ...]\n"
    "                  --input IMG.nii.gz [--input ...] --output OUT.nii.gz\n"
    "       netc infer FILE --weights W ... --input DIR --output DIR\n"
    "                  [--protocol NAME] [--net NAME] [-D KEY=VALUE ...] [--backend llvm|c]\n"
    "                  [--batch N] [--step F] [--constant-weights] [--mirror AXES | --no-tta]\n"
    "                  [--probabilities P.nii.gz] [--largest-component all|class] [--connectivity 6|26]\n"
    "                  [--png PICTURE.png] [--map NAMES.txt] [--threads N] [-q]\n"
    "\n"
    "Segments whole scans with the net compiled for the protocol: each case is\n"
    "preprocessed as training does (canonical orientation, crop to the nonzero\n"
    "box, the protocol's normalization, resampling to its spacing), predicted\n"
    "with overlapping windows of the protocol's patch, brought back to the\n"
    "scan's grid and written as uint8 labels with the input's header.\n"
    "\n"
    "  --input IMG     one file per channel in protocol order (or one 4D file);\n"
    "                  or a folder in nnU-Net's layout (CASE_0000.nii.gz, CASE_0001...):\n"
    "                  every case is segmented into the --output folder as CASE.nii.gz\n"
    "  --weights W     trained weights (netc train's model_last.safetensors); several\n"
    "                  are an ensemble: their probabilities are averaged\n"
    "  --batch N       windows per net call (default: the protocol's batch)\n"
    "  --step F        window step as a fraction of the patch, in (0, 1] (0.5)\n"
    "  --constant-weights  average windows equally (default: nnU-Net's Gaussian,\n"
    "                  sigma = patch / 8)\n"
    "  --mirror AXES   test-time mirroring over every combination of these axes\n"
    "                  (default zyx for 3D nets, yx for 2D); --no-tta: none\n"
    "  --probabilities P  also write the averaged probabilities on the scan's grid\n"
    "                  (4D float; with a folder input, a folder)\n"
    "  --largest-component all|class  keep the largest connected component of the\n"
    "                  foreground, or of each class; --connectivity 6 (default) or 26\n"
    "  --png P         an overlay picture of the result on the preprocessed image\n"
    "                  (with a folder input, a folder of CASE.png)\n"
    "  --backend B     llvm (default) or c\n"
    "  --threads N     threads of the generated code (default: NETC_THREADS or all CPUs)\n"
    "  -q              no progress bar, no summary\n"
    "\n"
    "Exit status: 0 written, 1 an input, the weights or the net is wrong, 2 bad command line.\n";

typedef struct {
    const char *file, *protocol, *net, *output, *backend, *mapping, *prob, *png;
    const char *weights[MAX_FILES], *inputs[MAX_FILES];
    int nweights, ninputs;
    Override ov[64];
    int nov;
    int batch, threads, connectivity, largest, gaussian, quiet;
    double step;
    unsigned mirror;
    int mirror_set;   /* --mirror or --no-tta given */
} IArgs;

static int uerr(const char *fmt, const char *arg)
{
    fprintf(stderr, "netc infer: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: netc infer FILE --weights W --input IMG --output OUT [options]\n"
                    "(run `netc infer --help` for the options)\n");
    return 2;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n > m && strcmp(s + n - m, suf) == 0;
}

static int iparse(int argc, char **argv, IArgs *a)
{
    memset(a, 0, sizeof *a);
    a->backend = "llvm";
    a->step = 0.5;
    a->gaussian = 1;
    a->connectivity = 6;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        static const char *valued[] = { "--protocol", "--net", "--weights", "--input", "--output", "--backend",
                                        "--map", "--batch", "--step", "--mirror", "--probabilities",
                                        "--largest-component", "--connectivity", "--png", "--threads", NULL };
        int is_valued = 0;
        for (int k = 0; valued[k]; k++) is_valued |= strcmp(s, valued[k]) == 0;
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(usage_infer, stdout);
            return -1;
        } else if (is_valued) {
            if (i + 1 >= argc) return uerr("%s needs a value", s);
            const char *v = argv[++i];
            if (strcmp(s, "--protocol") == 0) a->protocol = v;
            else if (strcmp(s, "--net") == 0) a->net = v;
            else if (strcmp(s, "--output") == 0) a->output = v;
            else if (strcmp(s, "--backend") == 0) a->backend = v;
            else if (strcmp(s, "--map") == 0) a->mapping = v;
            else if (strcmp(s, "--probabilities") == 0) a->prob = v;
            else if (strcmp(s, "--png") == 0) a->png = v;
            else if (strcmp(s, "--weights") == 0) {
                if (a->nweights >= MAX_FILES) return uerr("%s", "at most 16 --weights files");
                a->weights[a->nweights++] = v;
            } else if (strcmp(s, "--input") == 0) {
                if (a->ninputs >= MAX_FILES) return uerr("%s", "at most 16 --input files");
                a->inputs[a->ninputs++] = v;
            } else if (strcmp(s, "--batch") == 0) {
                if (parse_int(v, 1, 4096, &a->batch) != 0) return uerr("--batch takes a whole number 1 to 4096, not `%s`", v);
            } else if (strcmp(s, "--threads") == 0) {
                if (parse_int(v, 1, 4096, &a->threads) != 0) return uerr("--threads takes a whole number >= 1, not `%s`", v);
            } else if (strcmp(s, "--connectivity") == 0) {
                if (parse_int(v, 6, 26, &a->connectivity) != 0 || (a->connectivity != 6 && a->connectivity != 26))
                    return uerr("--connectivity is 6 or 26, not `%s`", v);
            } else if (strcmp(s, "--largest-component") == 0) {
                if (strcmp(v, "all") == 0) a->largest = 1;
                else if (strcmp(v, "class") == 0) a->largest = 2;
                else return uerr("--largest-component is `all` or `class`, not `%s`", v);
            } else if (strcmp(s, "--step") == 0) {
                char *end;
                errno = 0;
                a->step = strtod(v, &end);
                if (!*v || *end || errno || !(a->step > 0 && a->step <= 1))
                    return uerr("--step is a fraction of the patch in (0, 1], not `%s`", v);
            } else {   /* --mirror */
                unsigned m = 0;
                for (const char *p = v; *p; p++) {
                    unsigned bit = *p == 'z' ? 1u : *p == 'y' ? 2u : *p == 'x' ? 4u : 0u;
                    if (!bit || (m & bit)) return uerr("--mirror takes axes among z, y, x (each once), not `%s`", v);
                    m |= bit;
                }
                if (!*v) return uerr("--mirror takes axes among z, y, x, not `%s`", v);
                a->mirror = m;
                a->mirror_set = 1;
            }
        } else if (strcmp(s, "--constant-weights") == 0) {
            a->gaussian = 0;
        } else if (strcmp(s, "--no-tta") == 0) {
            a->mirror = 0;
            a->mirror_set = 1;
        } else if (strcmp(s, "-q") == 0 || strcmp(s, "--quiet") == 0) {
            a->quiet = 1;
        } else if (strncmp(s, "-D", 2) == 0) {
            const char *kv = s[2] ? s + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (!kv) return uerr("%s needs KEY=VALUE", "-D");
            const char *eq = strchr(kv, '=');
            if (!eq || eq == kv || !eq[1]) return uerr("-D takes KEY=VALUE, not `%s`", kv);
            if (a->nov >= 63) return uerr("%s", "too many -D options");
            a->ov[a->nov].key = xstrndup(kv, (size_t)(eq - kv));
            a->ov[a->nov].text = eq + 1;
            a->nov++;
        } else if (s[0] == '-' && s[1]) {
            return uerr("unknown option `%s`", s);
        } else if (!a->file) {
            a->file = s;
        } else {
            return uerr("unexpected argument `%s` (one FILE only)", s);
        }
    }
    if (!a->file) return uerr("%s", "missing FILE (the .net file)");
    if (a->nweights == 0) return uerr("%s", "--weights is required (netc train writes model_last.safetensors)");
    if (a->ninputs == 0) return uerr("%s", "--input is required");
    if (!a->output) return uerr("%s", "--output is required");
    if (strcmp(a->backend, "llvm") != 0 && strcmp(a->backend, "c") != 0)
        return uerr("unknown backend `%s`; use llvm or c", a->backend);
    for (int i = 0; i < a->nov; i++)
        if (a->batch && strcmp(a->ov[i].key, "protocol.batch") == 0)
            return uerr("%s", "give the batch once: --batch or -D protocol.batch");
    return 0;
}

/* ---- the JIT-compiled net as an InferNet --------------------------------------------------------------- */

typedef struct {
    const Graph *g;
    NetcExec *x;
    RefState *s;
    int in_t[MAX_CHANNELS], in_c[MAX_CHANNELS], nin;
    int out_t;
    int64_t N, per, K;
    float **orig;   /* the RefState's own parameter buffers, restored before ref_free */
} Jit;

typedef struct {
    Jit *j;
    float **params;   /* this net's weights, g->nparams arrays */
} JitNet;

static int jit_forward(void *ctx, int n, const float *in, float *out, char *err, size_t errlen)
{
    JitNet *jn = ctx;
    Jit *j = jn->j;
    if (n < 1 || n > j->N) {
        snprintf(err, errlen, "%d windows for a net compiled for batch %lld", n, (long long)j->N);
        return -1;
    }
    for (int i = 0; i < j->g->nparams; i++) j->s->buf[j->g->params[i].tensor] = jn->params[i];
    int C = 0;
    for (int k = 0; k < j->nin; k++) C += j->in_c[k];
    for (int k = 0, c0 = 0; k < j->nin; c0 += j->in_c[k], k++) {
        float *dst = j->s->buf[j->in_t[k]];
        size_t rows = (size_t)j->in_c[k] * (size_t)j->per;
        for (int b = 0; b < n; b++)
            memcpy(dst + (size_t)b * rows, in + ((size_t)b * (size_t)C + (size_t)c0) * (size_t)j->per,
                   sizeof(float) * rows);
        if (n < j->N) memset(dst + (size_t)n * rows, 0, sizeof(float) * rows * (size_t)(j->N - n));
    }
    if (exec_run(j->x, j->s, err, errlen) != 0) return -1;
    memcpy(out, j->s->buf[j->out_t], sizeof(float) * (size_t)(n * j->K * j->per));
    return 0;
}

/* Inputs, output and patch of the inference graph, into cfg and j. */
static int describe_net(const Graph *g, const Protocol *pr, Jit *j, InferConfig *cfg, char *err, size_t errlen)
{
    if (pr->rank != 2 && pr->rank != 3) {
        snprintf(err, errlen, "protocol %s is %dD; netc infer segments 2D and 3D nets", pr->name, pr->rank);
        return -1;
    }
    if (g->noutputs < 1) { snprintf(err, errlen, "the net has no output"); return -1; }
    const Shape *first = NULL;
    int C = 0;
    for (int i = 0; i < g->ninputs; i++) {
        const Tensor *te = &g->tensors[g->inputs[i].tensor];
        if (te->kind != TK_INPUT) continue;
        if (j->nin >= MAX_CHANNELS) { snprintf(err, errlen, "too many inputs"); return -1; }
        if (!first) first = &te->shape;
        j->in_t[j->nin] = g->inputs[i].tensor;
        j->in_c[j->nin++] = (int)te->shape.d[1];
        C += (int)te->shape.d[1];
    }
    if (!first || first->rank != 2 + pr->rank) { snprintf(err, errlen, "the net has no image input"); return -1; }
    j->N = first->d[0];
    int64_t P[3] = { 1, 1, 1 };
    for (int a = 0; a < pr->rank; a++) P[3 - pr->rank + a] = first->d[2 + a];
    j->per = P[0] * P[1] * P[2];
    j->out_t = g->outputs[0].tensor;
    const Shape *os = &g->tensors[j->out_t].shape;
    j->K = os->rank >= 2 ? os->d[1] : 0;
    if (os->rank < 2 || os->d[0] != j->N || j->K < 1 || shape_numel(os) != j->N * j->K * j->per) {
        snprintf(err, errlen, "output `%s` is not on the input's grid (valid convolutions?); sliding windows need "
                 "same-size outputs", g->outputs[0].name);
        return -1;
    }
    if (C != pr->nchannels) {
        snprintf(err, errlen, "the net takes %d channel(s), protocol %s has %d", C, pr->name, pr->nchannels);
        return -1;
    }
    cfg->rank = pr->rank;
    memcpy(cfg->patch, P, sizeof P);
    cfg->channels = C;
    cfg->classes = (int)j->K;
    cfg->sigmoid = j->K == 1;   /* one output channel: a sigmoid head (as netc run) */
    cfg->batch = (int)j->N;
    return 0;
}

static float **load_weights(const Graph *g, const RefState *s, const char *path, const char *mapping, StFile **fout,
                            char *err, size_t errlen)
{
    StFile *f = st_read(path, err, errlen);
    if (!f) return NULL;
    float **pd = calloc((size_t)g->nparams + 1, sizeof *pd);
    int ok = pd != NULL;
    for (int i = 0; ok && i < g->nparams; i++) {
        pd[i] = malloc(sizeof(float) * (size_t)(s->numel[g->params[i].tensor] > 0 ? s->numel[g->params[i].tensor] : 1));
        ok = pd[i] != NULL;
    }
    if (!ok) snprintf(err, errlen, "out of memory");
    else if (st_load_params(f, g, pd, mapping, err, errlen) != 0) ok = 0;
    if (!ok) {
        for (int i = 0; pd && i < g->nparams; i++) free(pd[i]);
        free(pd);
        st_free(f);
        return NULL;
    }
    *fout = f;
    return pd;
}

/* ---- cases ------------------------------------------------------------------------------------------------- */

typedef struct {
    char *name;
    char *inputs[MAX_CHANNELS];
    char *output, *prob, *png;
} Case;

static void case_free(Case *c, int C)
{
    free(c->name);
    for (int i = 0; i < C; i++) free(c->inputs[i]);
    free(c->output);
    free(c->prob);
    free(c->png);
}

static char *join(const char *dir, const char *name, const char *suffix)
{
    size_t n = strlen(dir) + strlen(name) + strlen(suffix) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s%s", dir, name, suffix);
    return s;
}

static int cmp_case(const void *a, const void *b) { return strcmp(((const Case *)a)->name, ((const Case *)b)->name); }

static int make_dir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0777) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
        snprintf(err, errlen, "%s exists and is not a folder", path);
        return -1;
    }
    snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return -1;
}

/* The cases of an nnU-Net images folder: CASE_0000.nii.gz (or .nii) ... */
static int list_cases(const IArgs *a, int C, Case **out, int *ncases, char *err, size_t errlen)
{
    const char *dir = a->inputs[0];
    DIR *d = opendir(dir);
    if (!d) { snprintf(err, errlen, "cannot read the folder %s: %s", dir, strerror(errno)); return -1; }
    Case *cs = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name, *ending = NULL;
        if (has_suffix(nm, "_0000.nii.gz")) ending = ".nii.gz";
        else if (has_suffix(nm, "_0000.nii")) ending = ".nii";
        if (!ending) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            Case *t = realloc(cs, sizeof *cs * (size_t)cap);
            if (!t) { rc = -1; snprintf(err, errlen, "out of memory"); break; }
            cs = t;
        }
        Case *c = &cs[n++];
        memset(c, 0, sizeof *c);
        c->name = xstrndup(nm, strlen(nm) - strlen(ending) - 5);
        for (int k = 0; k < C; k++) {
            char suf[32];
            snprintf(suf, sizeof suf, "_%04d%s", k, ending);
            c->inputs[k] = join(dir, c->name, suf);
        }
        c->output = join(a->output, c->name, ending);
        if (a->prob) c->prob = join(a->prob, c->name, ending);
        if (a->png) c->png = join(a->png, c->name, ".png");
    }
    closedir(d);
    if (rc == 0 && n == 0) {
        snprintf(err, errlen, "%s: no CASE_0000.nii.gz files (nnU-Net's layout: one file per case and channel)", dir);
        rc = -1;
    }
    if (rc == 0) {
        qsort(cs, (size_t)n, sizeof *cs, cmp_case);
        for (int i = 0; i < n && rc == 0; i++)
            for (int k = 0; k < C; k++) {
                struct stat st;
                if (stat(cs[i].inputs[k], &st) != 0) {
                    snprintf(err, errlen, "%s: missing (the net takes %d channel(s): %s_0000 to _%04d)", cs[i].inputs[k],
                             C, cs[i].name, C - 1);
                    rc = -1;
                    break;
                }
            }
    }
    if (rc == 0 && make_dir(a->output, err, errlen) != 0) rc = -1;
    if (rc == 0 && a->prob && make_dir(a->prob, err, errlen) != 0) rc = -1;
    if (rc == 0 && a->png && make_dir(a->png, err, errlen) != 0) rc = -1;
    if (rc != 0) {
        for (int i = 0; i < n; i++) case_free(&cs[i], C);
        free(cs);
        return -1;
    }
    *out = cs;
    *ncases = n;
    return 0;
}

/* Channels in the --input files (headers only), to fail before compiling;
 * -1 with a message when a header cannot be read. */
static int count_channels(const IArgs *a, char *err, size_t errlen)
{
    int n = 0;
    nifti_set_debug_level(0);
    for (int i = 0; i < a->ninputs; i++) {
        nifti_image *nim = nifti_image_read(a->inputs[i], 0);
        if (!nim) {
            snprintf(err, errlen, "%s: not a readable NIfTI file", a->inputs[i]);
            return -1;
        }
        n += nim->nt > 1 ? nim->nt : 1;
        nifti_image_free(nim);
    }
    return n;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int netc_infer_main(int argc, char **argv)
{
    IArgs a;
    int rc = iparse(argc, argv, &a);
    if (rc) {
        for (int i = 0; i < a.nov; i++) free(a.ov[i].key);
        return rc < 0 ? 0 : rc;
    }
    double t0 = now_s();
    char err[4096] = "";
    int status = 1;
    struct stat st;
    int folder = a.ninputs == 1 && stat(a.inputs[0], &st) == 0 && S_ISDIR(st.st_mode);
    if (!folder) {   /* fail fast on a missing file, before compiling */
        for (int i = 0; i < a.ninputs; i++)
            if (stat(a.inputs[i], &st) != 0) {
                fprintf(stderr, "netc infer: cannot read %s: %s\n", a.inputs[i], strerror(errno));
                for (int k = 0; k < a.nov; k++) free(a.ov[k].key);
                return 1;
            }
        const char *outs[3] = { a.output, a.prob, NULL };
        for (int i = 0; outs[i]; i++)
            if (!has_suffix(outs[i], ".nii.gz") && !has_suffix(outs[i], ".nii")) {
                for (int k = 0; k < a.nov; k++) free(a.ov[k].key);
                return uerr("%s: the output name must end in .nii.gz or .nii", outs[i]);
            }
    }
    for (int i = 0; i < a.nweights; i++)
        if (stat(a.weights[i], &st) != 0) {
            fprintf(stderr, "netc infer: cannot read %s: %s\n", a.weights[i], strerror(errno));
            for (int k = 0; k < a.nov; k++) free(a.ov[k].key);
            return 1;
        }
    char batch_text[32];
    if (a.batch) {
        snprintf(batch_text, sizeof batch_text, "%d", a.batch);
        a.ov[a.nov].key = xstrndup("protocol.batch", 14);
        a.ov[a.nov].text = batch_text;
        a.nov++;
    }
    if (a.threads) netc_set_threads(a.threads);

    Diag d;
    diag_init(&d, stderr);
    Program *p = program_load(&d, a.file);
    Protocol *pr = NULL;
    Graph *g = NULL;
    Jit j;
    memset(&j, 0, sizeof j);
    JitNet jn[MAX_FILES];
    InferNet nets[MAX_FILES];
    StFile *files[MAX_FILES] = { 0 };
    int nloaded = 0;
    Case *cases = NULL;
    int ncases = 0, C = 0;
    InferStats stats;
    memset(&stats, 0, sizeof stats);
    if (!p) {
        fprintf(stderr, "netc infer: cannot read %s: %s\n", a.file, diag_load_strerror(errno));
        goto out;
    }
    CompileOptions co = { .protocol = a.protocol, .net = a.net, .ov = a.ov, .nov = a.nov, .protocol_out = &pr };
    g = netc_compile(p, &co);
    if (!g || d.nerrors) {
        fprintf(stderr, "netc infer: %s does not compile (%d error%s)\n", a.file, d.nerrors, d.nerrors == 1 ? "" : "s");
        goto out;
    }
    InferCaseOptions io;
    memset(&io, 0, sizeof io);
    infer_config_default(&io.cfg);
    if (describe_net(g, pr, &j, &io.cfg, err, sizeof err) != 0) goto fail;
    C = io.cfg.channels;
    if (!folder) {
        int got = count_channels(&a, err, sizeof err);
        if (got < 0) goto fail;
        if (got != C) {
            snprintf(err, sizeof err, "%s: protocol %s takes %d channel(s) (%s%s), the input gave %d", a.inputs[0],
                     pr->name, C, pr->channels[0], C > 1 ? ", ..." : "", got);
            goto fail;
        }
    }
    io.cfg.step = a.step;
    io.cfg.gaussian = a.gaussian;
    io.cfg.mirror_axes = a.mirror_set ? a.mirror : pr->rank == 2 ? 6u : 7u;
    if (pr->rank == 2 && (io.cfg.mirror_axes & 1u)) {
        fprintf(stderr, "netc infer: --mirror z: a 2D net sees one slice at a time; mirror it in y and x\n");
        status = 2;
        goto out;
    }
    io.cfg.progress = !a.quiet;
    io.cfg.stats = &stats;
    ds_params_from_protocol(&io.params, pr);
    io.largest_component = a.largest;
    io.connectivity = a.connectivity;

    if (folder) {
        if (list_cases(&a, C, &cases, &ncases, err, sizeof err) != 0) goto fail;
    } else {
        cases = calloc(1, sizeof *cases);
        if (!cases) { snprintf(err, sizeof err, "out of memory"); goto fail; }
        ncases = 1;
        cases[0].output = xstrdup(a.output);
        cases[0].prob = a.prob ? xstrdup(a.prob) : NULL;
        cases[0].png = a.png ? xstrdup(a.png) : NULL;
    }

    /* the net, built once; one set of weights per --weights */
    j.g = g;
    j.s = ref_new(g);
    j.orig = calloc((size_t)g->nparams + 1, sizeof *j.orig);
    if (!j.s || !j.orig) { snprintf(err, sizeof err, "out of memory"); goto fail; }
    for (int i = 0; i < g->nparams; i++) j.orig[i] = j.s->buf[g->params[i].tensor];
    for (int i = 0; i < a.nweights; i++) {
        jn[i].j = &j;
        jn[i].params = load_weights(g, j.s, a.weights[i], a.mapping, &files[i], err, sizeof err);
        if (!jn[i].params) goto fail;
        nloaded++;
        nets[i].forward = jit_forward;
        nets[i].ctx = &jn[i];
    }
    /* NORM_CT: the dataset statistics the trainer recorded in the weights */
    DsChannelStats dstats[DS_MAX_CHANNELS];
    memset(dstats, 0, sizeof dstats);
    if (pr->norm.kind == NORM_CT) {
        int found = -1;
        for (int i = 0; i < a.nweights && found < C; i++) {
            found = infer_stats_from_metadata((const char *const *)files[i]->meta_keys,
                                              (const char *const *)files[i]->meta_vals, files[i]->nmeta,
                                              (const char *const *)pr->channels, C, dstats, err, sizeof err);
            if (found < 0) {
                char why[1024];
                snprintf(why, sizeof why, "%.1000s", err);
                snprintf(err, sizeof err, "%.2000s: %s", a.weights[i], why);
                goto fail;
            }
        }
        if (found < C) {
            snprintf(err, sizeof err, "%s: protocol %s normalizes with `ct`, which needs the training set's intensity "
                     "statistics, but the weights carry none for channel `%s` (metadata netc.stats.%s.mean, .sd, "
                     ".p005, .p995; weights from a `netc train` that records them)", a.weights[0], pr->name,
                     pr->channels[0], pr->channels[0]);
            goto fail;
        }
        io.stats = dstats;
    }
    double tc = now_s();
    j.x = exec_new(g, false, a.backend, err, sizeof err);
    if (!j.x) goto fail;
    double compile_s = now_s() - tc;
    if (!a.quiet)
        printf("net %s for protocol %s: %s window %lld x %lld x %lld, batch %lld, %d weights file%s; compiled in %.2f s\n",
               g->net_name, pr->name, pr->rank == 2 ? "2D" : "3D", (long long)io.cfg.patch[0],
               (long long)io.cfg.patch[1], (long long)io.cfg.patch[2], (long long)j.N, a.nweights,
               a.nweights == 1 ? "" : "s", compile_s);

    int failed = 0;
    for (int i = 0; i < ncases; i++) {
        Case *c = &cases[i];
        const char *const *inputs = folder ? (const char *const *)c->inputs : a.inputs;
        int ninputs = folder ? C : a.ninputs;
        io.prob_output = c->prob;
        io.png_output = c->png;
        InferStats before = stats;
        double tcase = now_s();
        if (infer_case(&io, nets, a.nweights, inputs, ninputs, c->output, err, sizeof err) != 0) {
            fprintf(stderr, "netc infer: %s\n", err);
            failed++;
            continue;
        }
        if (!a.quiet)
            printf("wrote %s (%lld windows in %.2f s: net %.2f s, stitching %.2f s)\n", c->output,
                   (long long)(stats.windows - before.windows), now_s() - tcase, stats.net_seconds - before.net_seconds,
                   stats.stitch_seconds - before.stitch_seconds);
    }
    if (!a.quiet) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("%d case%s in %.2f s; net %.2f s, stitching %.2f s; peak memory %.1f MiB\n", ncases - failed,
               ncases - failed == 1 ? "" : "s", now_s() - t0, stats.net_seconds, stats.stitch_seconds,
               (double)ru.ru_maxrss / 1024.0);
    }
    status = failed ? 1 : 0;
    goto out;
fail:
    fprintf(stderr, "netc infer: %s\n", err);
    status = 1;
out:
    for (int i = 0; i < ncases; i++) case_free(&cases[i], folder ? C : 0);
    free(cases);
    for (int i = 0; i < nloaded; i++) {
        for (int k = 0; k < g->nparams; k++) free(jn[i].params[k]);
        free(jn[i].params);
        st_free(files[i]);
    }
    if (j.s && j.orig)
        for (int i = 0; i < g->nparams; i++) j.s->buf[g->params[i].tensor] = j.orig[i];
    free(j.orig);
    ref_free(j.s);
    exec_free(j.x);
    for (int i = 0; i < a.nov; i++) free(a.ov[i].key);
    protocol_free(pr);
    graph_free(g);
    if (p) program_free(p);
    if (d.nerrors) fprintf(stderr, "%d error%s.\n", d.nerrors, d.nerrors == 1 ? "" : "s");
    diag_free(&d);
    return status;
}
