/* main.c — the main() of every `netc build` executable.
 *
 * The executable is this file + the runtime library (libnetcrt.a: NIfTI
 * I/O, preprocessing, the inference engine of infer.h, the thread pool) +
 * what `netc build` generated for one net and protocol: the AOT-compiled
 * kernels (entry netc_sa_forward), the glue defining netc_sa_info
 * (standalone.h) and the embedded weights.  No compiler, no libLLVM.
 *
 *   BIN in.nii.gz [more channels...] out.nii.gz [--threads N] [--no-tta] [--step S]
 *       [--largest-component all|class] [--connectivity 6|26] [-q]
 *
 * Exit status: 0 written, 1 bad input or failure, 2 bad command line.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nifti1_io.h>

#include "standalone.h"
#include "infer.h"
#include "pool.h"

/* The InferNet behind this binary: the planned arena, one buffer per graph
 * input, and the tensor table handed to the AOT entry. */
typedef struct {
    const NetcSaInfo *info;
    int64_t wvox;            /* voxels per window */
    void *arena;
    float *inbuf[NETC_SA_MAX_CHANNELS];
    void **t;
} SaNet;

static void sa_free(SaNet *s)
{
    free(s->arena);
    for (int k = 0; k < NETC_SA_MAX_CHANNELS; k++) free(s->inbuf[k]);
    free(s->t);
    memset(s, 0, sizeof *s);
}

static void *alloc64(long long bytes)
{
    size_t n = (size_t)((bytes + 63) / 64 * 64);
    void *p = aligned_alloc(64, n ? n : 64);
    if (p) memset(p, 0, n ? n : 64);
    return p;
}

static int sa_init(SaNet *s, const NetcSaInfo *info, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->info = info;
    s->wvox = info->patch[0] * info->patch[1] * info->patch[2];
    if (info->abi != NETC_SA_ABI || info->ninputs < 1 || info->ninputs > NETC_SA_MAX_CHANNELS) {
        snprintf(err, errlen, "this binary's tables are inconsistent (abi %d, %d inputs)", info->abi, info->ninputs);
        return -1;
    }
    s->arena = alloc64(info->arena_bytes);
    s->t = calloc((size_t)info->ntensors + 1, sizeof *s->t);
    int ok = s->arena && s->t;
    for (int k = 0; ok && k < info->ninputs; k++) ok = (s->inbuf[k] = alloc64(info->input_numel[k] * 4)) != NULL;
    if (!ok) {
        snprintf(err, errlen, "out of memory (arena of %lld bytes)", info->arena_bytes);
        sa_free(s);
        return -1;
    }
    for (int i = 0; i < info->ntensors; i++) {
        const NetcSaSlot *sl = &info->slots[i];
        switch (sl->kind) {
        case NETC_SA_ARENA: s->t[i] = (char *)s->arena + sl->offset; break;
        /* parameters are only read by an inference entry */
        case NETC_SA_WEIGHT: s->t[i] = (void *)(uintptr_t)(info->weights + sl->offset); break;
        case NETC_SA_INPUT: s->t[i] = s->inbuf[sl->index]; break;
        default: s->t[i] = NULL; break;
        }
    }
    return 0;
}

static int sa_forward(void *ctx, int n, const float *in, float *out, char *err, size_t errlen)
{
    SaNet *s = ctx;
    const NetcSaInfo *info = s->info;
    if (n < 1 || n > info->batch) {
        snprintf(err, errlen, "%d windows in one call; this binary runs 1 to %d", n, info->batch);
        return -1;
    }
    if (n < info->batch)
        for (int k = 0; k < info->ninputs; k++) memset(s->inbuf[k], 0, sizeof(float) * (size_t)info->input_numel[k]);
    for (int j = 0; j < n; j++)
        for (int c = 0; c < info->channels; c++) {
            int k = info->chan_input[c];
            int64_t per_item = info->input_numel[k] / info->batch / s->wvox;   /* channels of input k */
            memcpy(s->inbuf[k] + ((int64_t)j * per_item + info->chan_offset[c]) * s->wvox,
                   in + ((int64_t)j * info->channels + c) * s->wvox, sizeof(float) * (size_t)s->wvox);
        }
    info->entry(s->t);
    int64_t per_window = info->output_numel / info->batch;
    memcpy(out, (const char *)s->arena + info->slots[info->output_tensor].offset,
           sizeof(float) * (size_t)(per_window * n));
    return 0;
}

static void print_usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s IN.nii.gz [IN_CHANNEL2.nii.gz ...] OUT.nii.gz [--threads N] [--no-tta] [--step S]\n"
            "       [--largest-component all|class] [--connectivity 6|26] [-q]\n"
            "\n"
            "Segments a whole scan: one 3D NIfTI file per channel, in protocol order; writes\n"
            "OUT as uint8 labels on the first input's grid (written atomically).  The scan is\n"
            "preprocessed as in training (reoriented, cropped to its nonzero box, normalized,\n"
            "resampled to the protocol's spacing), predicted with sliding windows and brought\n"
            "back to the scan's grid.\n"
            "\n"
            "  --threads N   threads (default: NETC_THREADS, else every CPU)\n"
            "  --no-tta      no test-time mirroring\n"
            "  --step S      window step as a fraction of the patch, 0 < S <= 1 (0.5)\n"
            "  --largest-component all|class\n"
            "                keep only the largest connected component of all foreground, or\n"
            "                of each class (as netc infer; default: keep everything)\n"
            "  --connectivity 6|26  neighbours for --largest-component (default 6)\n"
            "  -q            no progress bar, no `wrote` line\n"
            "\n"
            "Exit status: 0 written, 1 bad input or failure, 2 bad command line.\n",
            prog);
}

static void print_info(const NetcSaInfo *in)
{
    printf("built by netc %s from %s\n", in->netc_version, in->source);
    printf("net:        %s\n", in->net);
    printf("protocol:   %s\n", in->protocol);
    printf("modality:   %s\n", in->modality);
    printf("channels:   %d (", in->channels);
    for (int c = 0; c < in->channels; c++) printf("%s%s", c ? ", " : "", in->channel_names[c]);
    printf(")\n");
    if (in->rank == 2)
        printf("patch:      %lld x %lld (2D slices, y x x), batch %d\n", in->patch[1], in->patch[2], in->batch);
    else
        printf("patch:      %lld x %lld x %lld (z x y x x), batch %d\n", in->patch[0], in->patch[1], in->patch[2],
               in->batch);
    if (in->rank == 2)
        printf("spacing:    %g x %g mm (y x x; z kept)\n", in->spacing[1], in->spacing[2]);
    else
        printf("spacing:    %g x %g x %g mm (z x y x x)\n", in->spacing[0], in->spacing[1], in->spacing[2]);
    printf("normalize:  %s", in->norm_name);
    for (int c = 0; in->norm_kind == NORM_CT && c < in->channels; c++) {
        const NetcSaStats *st = &in->stats[c];
        if (st->valid)
            printf("; %s: mean %g sd %g, clip %g .. %g", in->channel_names[c], st->mean, st->sd, st->p005, st->p995);
        else
            printf("; %s: no dataset statistics", in->channel_names[c]);
    }
    printf("\nclasses:    %d (", in->classes);
    for (int c = 0; c < in->classes; c++) printf("%s%s", c ? ", " : "", in->class_names[c]);
    printf(")\narena:      %lld bytes, weights %lld bytes\n\n", in->arena_bytes, in->weights_bytes);
}

/* A cheap header look before the engine reads the data: the number of
 * channel volumes and 3D-ness, so that a wrong input is refused in this
 * binary's terms (the engine checks again).  One 3D file per channel, or
 * (several channels) one 4D file holding them all, as `netc infer`. */
static int check_inputs(const NetcSaInfo *info, char **inputs, int n, char *err, size_t errlen)
{
    int total = 0, readable = 1;
    const char *four_d = NULL;
    long long four_d_nt = 0;
    nifti_set_debug_level(0);
    for (int i = 0; i < n; i++) {
        nifti_image *h = nifti_image_read(inputs[i], 0);
        if (!h) {   /* the engine's reader gives the precise message */
            readable = 0;
            total++;
            continue;
        }
        long long nt = h->dim[0] >= 4 ? h->dim[4] : 1;
        if (nt > 1 && !four_d) four_d = inputs[i], four_d_nt = nt;
        total += nt > 1 ? (int)(nt < 1000 ? nt : 1000) : 1;
        nifti_image_free(h);
    }
    if (four_d && info->channels == 1) {
        snprintf(err, errlen, "%s: a 4D volume (%lld volumes); protocol %s takes one 3D volume (%s)", four_d,
                 four_d_nt, info->protocol, info->channel_names[0]);
        return -1;
    }
    if (total == info->channels || (!readable && n == info->channels)) return 0;
    int len = snprintf(err, errlen, "protocol %s needs %d channel(s), in this order: ", info->protocol, info->channels);
    for (int c = 0; c < info->channels && len > 0 && (size_t)len < errlen; c++)
        len += snprintf(err + len, errlen - (size_t)len, "%s%s", c ? ", " : "", info->channel_names[c]);
    if (len > 0 && (size_t)len < errlen)
        snprintf(err + len, errlen - (size_t)len, " (one 3D file each%s); the input gave %d", info->channels > 1 ?
                 ", or one 4D file of them all" : "", total);
    return -1;
}

int main(int argc, char **argv)
{
    const NetcSaInfo *info = &netc_sa_info;
    const char *prog = argc > 0 ? argv[0] : "netc-standalone";
    char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) { fprintf(stderr, "%s: out of memory\n", prog); return 1; }
    int nfiles = 0, threads = 0, tta = 1, quiet = 0, largest = 0, connectivity = 6;
    double step = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_info(info);
            print_usage(stdout, prog);
            free(files);
            return 0;
        } else if (strcmp(a, "--threads") == 0 || strcmp(a, "--step") == 0) {
            char *end = NULL;
            const char *v = i + 1 < argc ? argv[++i] : NULL;
            int bad = !v || !*v;
            if (!bad && a[2] == 't') {
                long t = strtol(v, &end, 10);
                bad = *end || t < 1 || t > 1024;
                threads = (int)t;
            } else if (!bad) {
                step = strtod(v, &end);
                bad = *end || !(step > 0 && step <= 1);
            }
            if (bad) {
                fprintf(stderr, "%s: %s takes %s, not `%s`\n", prog, a,
                        a[2] == 't' ? "a whole number 1 .. 1024" : "a fraction 0 < S <= 1", v ? v : "(nothing)");
                print_usage(stderr, prog);
                free(files);
                return 2;
            }
        } else if (strcmp(a, "--largest-component") == 0 || strcmp(a, "--connectivity") == 0) {
            const char *v = i + 1 < argc ? argv[++i] : NULL;
            int bad = !v;
            if (!bad && a[2] == 'l') {
                largest = strcmp(v, "all") == 0 ? 1 : strcmp(v, "class") == 0 ? 2 : 0;
                bad = largest == 0;
            } else if (!bad) {
                connectivity = strcmp(v, "6") == 0 ? 6 : strcmp(v, "26") == 0 ? 26 : 0;
                bad = connectivity == 0;
            }
            if (bad) {
                fprintf(stderr, "%s: %s takes %s, not `%s`\n", prog, a, a[2] == 'l' ? "all or class" : "6 or 26",
                        v ? v : "(nothing)");
                print_usage(stderr, prog);
                free(files);
                return 2;
            }
        } else if (strcmp(a, "--no-tta") == 0) {
            tta = 0;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "%s: unknown option `%s`\n", prog, a);
            print_usage(stderr, prog);
            free(files);
            return 2;
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (nfiles < 2) {
        fprintf(stderr, "%s: give the input file(s) and the output file\n", prog);
        print_usage(stderr, prog);
        free(files);
        return 2;
    }
    const char *output = files[nfiles - 1];
    int ninputs = nfiles - 1;
    char err[4096];
    if (check_inputs(info, files, ninputs, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(files);
        return 1;
    }
    if (threads > 0) netc_set_threads(threads);

    InferCaseOptions o;
    memset(&o, 0, sizeof o);
    infer_config_default(&o.cfg);
    o.cfg.rank = info->rank;
    for (int k = 0; k < 3; k++) o.cfg.patch[k] = info->patch[k];
    o.cfg.channels = info->channels;
    o.cfg.classes = info->classes;
    o.cfg.batch = info->batch;
    o.cfg.step = step;
    o.cfg.gaussian = 1;
    o.cfg.mirror_axes = !tta ? 0u : info->rank == 2 ? 6u : 7u;   /* every axis the net sees */
    o.cfg.sigmoid = info->classes == 1;
    o.cfg.progress = !quiet && isatty(2);
    for (int k = 0; k < 3; k++) o.params.spacing[k] = info->spacing[k];
    DsChannelStats stats[DS_MAX_CHANNELS];
    memset(stats, 0, sizeof stats);
    int have_stats = 0;
    for (int c = 0; c < info->channels && c < DS_MAX_CHANNELS; c++) {
        o.params.norm[c].kind = (NormKind)info->norm_kind;
        o.params.norm[c].lo = info->norm_lo;
        o.params.norm[c].hi = info->norm_hi;
        if (info->stats[c].valid) {
            stats[c].valid = 1;
            stats[c].mean = info->stats[c].mean;
            stats[c].sd = info->stats[c].sd;
            stats[c].p005 = info->stats[c].p005;
            stats[c].p995 = info->stats[c].p995;
            have_stats = 1;
        }
    }
    o.stats = have_stats ? stats : NULL;
    o.largest_component = largest;
    o.connectivity = connectivity;

    SaNet s;
    int rc = 1;
    if (sa_init(&s, info, err, sizeof err) == 0) {
        InferNet net = { .forward = sa_forward, .ctx = &s };
        if (infer_case(&o, &net, 1, (const char *const *)files, ninputs, output, err, sizeof err) == 0) rc = 0;
        sa_free(&s);
    }
    if (rc != 0) fprintf(stderr, "%s: %s\n", prog, err);
    else if (!quiet) printf("wrote %s\n", output);
    free(files);
    return rc;
}
