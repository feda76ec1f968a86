/* build_gen.c — see build_gen.h. */
#define _POSIX_C_SOURCE 200809L
#include "build_gen.h"
#include "infer.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN64(n) (((n) + 63) / 64 * 64)

void build_plan_free(BuildPlan *b)
{
    if (!b) return;
    free(b->kind);
    free(b->index);
    free(b->offset);
    free(b->weights);
    b->kind = b->index = NULL;
    b->offset = NULL;
    b->weights = NULL;
}

static int fail(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return -1;
}

/* Input k's spatial size must be the patch. */
static int check_spatial(const BuildPlan *b, const Tensor *t, char *err, size_t errlen)
{
    int r = b->rank;
    if (t->shape.rank != 2 + r) {
        snprintf(err, errlen, "`%s` has rank %d; a rank-%d protocol needs N x C x %s", t->name, t->shape.rank, r,
                 r == 3 ? "D x H x W" : "H x W");
        return -1;
    }
    for (int k = 0; k < r; k++)
        if (t->shape.d[2 + k] != b->patch[3 - r + k]) {
            snprintf(err, errlen, "`%s` is not on the protocol's patch (axis %d is %lld, the patch %lld); "
                     "a standalone binary needs a net whose output is on its input grid (padding = same)",
                     t->name, k, (long long)t->shape.d[2 + k], (long long)b->patch[3 - r + k]);
            return -1;
        }
    return 0;
}

int build_plan(BuildPlan *b, const Graph *g, const Protocol *pr, const MemPlan *mp, const StFile *f,
               const char *mapping, char *err, size_t errlen)
{
    b->g = g;
    b->pr = pr;
    b->ntensors = g->ntensors;
    if (g->ninputs < 1 || g->noutputs < 1) return fail(err, errlen, "the net has no input or no output");
    if (pr->rank != 2 && pr->rank != 3)
        return fail(err, errlen, "a standalone binary serves 2D and 3D protocols (this one has rank 1)");
    if (pr->nchannels < 1 || pr->nchannels > MAX_CHANNELS) return fail(err, errlen, "bad channel count");
    b->rank = pr->rank;
    b->channels = pr->nchannels;
    b->patch[0] = b->patch[1] = b->patch[2] = 1;
    for (int k = 0; k < pr->rank; k++) b->patch[3 - pr->rank + k] = pr->patch[k];
    b->wvox = b->patch[0] * b->patch[1] * b->patch[2];
    const Tensor *in0 = &g->tensors[g->inputs[0].tensor];
    b->batch = (int)in0->shape.d[0];
    if (in0->shape.d[0] < 1 || in0->shape.d[0] > 4096) return fail(err, errlen, "bad batch size");

    /* inputs: one with every channel, or one per channel (by name, else in order) */
    b->ninputs = g->ninputs;
    if (g->ninputs > MAX_CHANNELS) return fail(err, errlen, "too many net inputs");
    for (int k = 0; k < g->ninputs; k++) {
        const Tensor *t = &g->tensors[g->inputs[k].tensor];
        if (t->dtype != DT_F32 || t->shape.d[0] != b->batch) {
            snprintf(err, errlen, "input `%s` is not a float image of batch %d", t->name, b->batch);
            return -1;
        }
        if (check_spatial(b, t, err, errlen) != 0) return -1;
        b->input_numel[k] = shape_numel(&t->shape);
    }
    if (g->ninputs == 1) {
        if (in0->shape.d[1] != pr->nchannels) {
            snprintf(err, errlen, "input `%s` has %lld channels, protocol %s has %d", g->inputs[0].name,
                     (long long)in0->shape.d[1], pr->name, pr->nchannels);
            return -1;
        }
        for (int c = 0; c < pr->nchannels; c++) b->chan_input[c] = 0, b->chan_offset[c] = c;
    } else {
        if (g->ninputs != pr->nchannels) {
            snprintf(err, errlen, "the net has %d inputs, protocol %s has %d channels", g->ninputs, pr->name,
                     pr->nchannels);
            return -1;
        }
        int used[MAX_CHANNELS] = { 0 };
        for (int c = 0; c < pr->nchannels; c++) {
            int k = c;
            for (int j = 0; j < g->ninputs; j++)
                if (strcmp(g->inputs[j].name, pr->channels[c]) == 0) k = j;
            if (used[k] || g->tensors[g->inputs[k].tensor].shape.d[1] != 1) {
                snprintf(err, errlen, "cannot match the net's %d inputs to the channels of protocol %s", g->ninputs,
                         pr->name);
                return -1;
            }
            used[k] = 1;
            b->chan_input[c] = k;
            b->chan_offset[c] = 0;
        }
    }

    /* output 0: the logits on the window */
    b->output_tensor = g->outputs[0].tensor;
    const Tensor *ot = &g->tensors[b->output_tensor];
    if (ot->dtype != DT_F32 || ot->shape.d[0] != b->batch || ot->shape.d[1] < 1 || ot->shape.d[1] > 255) {
        snprintf(err, errlen, "output `%s` is not float class scores of batch %d", g->outputs[0].name, b->batch);
        return -1;
    }
    if (check_spatial(b, ot, err, errlen) != 0) return -1;
    b->classes = (int)ot->shape.d[1];
    b->output_numel = shape_numel(&ot->shape);

    /* the tensor table: as runtime/exec.c binds it */
    b->kind = calloc((size_t)g->ntensors + 1, sizeof *b->kind);
    b->index = calloc((size_t)g->ntensors + 1, sizeof *b->index);
    b->offset = calloc((size_t)g->ntensors + 1, sizeof *b->offset);
    int64_t *poff = calloc((size_t)g->nparams + 1, sizeof *poff);
    float **pd = calloc((size_t)g->nparams + 1, sizeof *pd);
    if (!b->kind || !b->index || !b->offset || !poff || !pd) {
        free(poff);
        free(pd);
        return fail(err, errlen, "out of memory");
    }
    int64_t wb = 0;
    for (int p = 0; p < g->nparams; p++) {
        const Tensor *t = &g->tensors[g->params[p].tensor];
        poff[p] = wb;
        wb += ALIGN64(shape_numel(&t->shape) * (int64_t)sizeof(float));
    }
    b->weights_bytes = wb;
    b->weights = calloc((size_t)(wb > 0 ? wb : 64), 1);
    if (!b->weights) {
        free(poff);
        free(pd);
        return fail(err, errlen, "out of memory for the weights");
    }
    for (int p = 0; p < g->nparams; p++) pd[p] = (float *)(void *)(b->weights + poff[p]);
    int rc = st_load_params(f, g, pd, mapping, err, errlen);
    free(pd);
    if (rc != 0) {
        free(poff);
        return -1;
    }
    for (int i = 0; i < g->ntensors; i++) {
        int j = i, hops = 0;   /* in place: the bytes of the tensor it overwrites */
        while (mp->in_place_of[j] >= 0 && hops++ < g->ntensors) j = mp->in_place_of[j];
        if (mp->offset[j] >= 0) {
            b->kind[i] = BG_ARENA;
            b->offset[i] = mp->offset[j];
            continue;
        }
        const Tensor *t = &g->tensors[j];
        if (t->kind == TK_PARAM) {
            for (int p = 0; p < g->nparams; p++)
                if (g->params[p].tensor == j) b->kind[i] = BG_WEIGHT, b->offset[i] = poff[p];
        } else if (t->kind == TK_INPUT) {
            for (int k = 0; k < g->ninputs; k++)
                if (g->inputs[k].tensor == j) b->kind[i] = BG_INPUT, b->index[i] = k;
        }
        if (t->kind != TK_ACTIVATION && b->kind[i] == BG_NONE) {
            free(poff);
            snprintf(err, errlen, "tensor `%s` is neither a parameter nor an input nor in the arena; an inference "
                     "graph cannot have it", t->name);
            return -1;
        }
    }
    free(poff);
    if (b->kind[b->output_tensor] != BG_ARENA)
        return fail(err, errlen, "the net's output is not in the planned arena");
    b->arena_bytes = ALIGN64(mp->arena_bytes);
    if (b->arena_bytes < 64) b->arena_bytes = 64;
    ds_params_from_protocol(&b->params, pr);
    /* the same reading as `netc infer` (infer.h) */
    if (infer_stats_from_metadata((const char *const *)f->meta_keys, (const char *const *)f->meta_vals, f->nmeta,
                                  (const char *const *)pr->channels, b->channels, b->stats, err, errlen) < 0)
        return -1;
    if (pr->norm.kind == NORM_CT)
        for (int c = 0; c < b->channels; c++)
            if (!b->stats[c].valid) {
                snprintf(err, errlen, "protocol %s normalizes as ct, which needs the dataset's statistics, but the "
                         "weights have no metadata netc.stats.%d.mean/.sd/.p005/.p995 (channel %s)", pr->name, c,
                         pr->channels[c]);
                return -1;
            }
    return 0;
}

/* A C string literal of s (names are identifiers, but be safe). */
static void put_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
        else if (*p < 32 || *p >= 127) fprintf(out, "\\%03o", *p);
        else fputc(*p, out);
    }
    fputc('"', out);
}

static void put_slots(FILE *out, const BuildPlan *b, const char *type, const char *name)
{
    fprintf(out, "static const %s %s[%d] = {\n", type, name, b->ntensors > 0 ? b->ntensors : 1);
    for (int i = 0; i < b->ntensors; i++)
        fprintf(out, "    { %d, %d, %" PRId64 " },   /* %s */\n", b->kind[i], b->index[i], b->offset[i],
                b->g->tensors[i].name);
    if (b->ntensors == 0) fprintf(out, "    { 0, 0, 0 }\n");
    fprintf(out, "};\n");
}

void build_write_glue(FILE *out, const BuildPlan *b, const char *weights_symbol)
{
    const Protocol *pr = b->pr;
    fprintf(out, "/* Generated by netc build: the tables of net %s for protocol %s. */\n", b->name, pr->name);
    fprintf(out, "#include \"netc_standalone.h\"\n\n");
    fprintf(out, "extern void %s_forward(void **t);\n", b->name);
    fprintf(out, "extern const unsigned char %s[];\n\n", weights_symbol);
    put_slots(out, b, "NetcSaSlot", "slots");
    fprintf(out, "static const char *const channel_names[] = {");
    for (int c = 0; c < b->channels; c++) fputs(c ? ", " : " ", out), put_str(out, pr->channels[c]);
    fprintf(out, " };\nstatic const char *const class_names[] = {");
    for (int c = 0; c < b->classes; c++) {
        char dflt[32];
        snprintf(dflt, sizeof dflt, "class %d", c);
        fputs(c ? ", " : " ", out);
        put_str(out, c < pr->nclasses ? pr->classes[c] : dflt);
    }
    fprintf(out, " };\nstatic const long long input_numel[] = {");
    for (int k = 0; k < b->ninputs; k++) fprintf(out, "%s%" PRId64, k ? ", " : " ", b->input_numel[k]);
    fprintf(out, " };\nstatic const int chan_input[] = {");
    for (int c = 0; c < b->channels; c++) fprintf(out, "%s%d", c ? ", " : " ", b->chan_input[c]);
    fprintf(out, " };\nstatic const int chan_offset[] = {");
    for (int c = 0; c < b->channels; c++) fprintf(out, "%s%d", c ? ", " : " ", b->chan_offset[c]);
    fprintf(out, " };\n\nconst NetcSaInfo netc_sa_info = {\n");
    fprintf(out, "    .abi = NETC_SA_ABI,\n    .net = ");
    put_str(out, b->g->net_name);
    fprintf(out, ",\n    .protocol = ");
    put_str(out, pr->name);
    fprintf(out, ",\n    .modality = ");
    put_str(out, modality_name(pr->modality));
    fprintf(out, ",\n    .netc_version = ");
    put_str(out, b->version);
    fprintf(out, ",\n    .source = ");
    put_str(out, b->source);
    fprintf(out, ",\n    .rank = %d,\n    .patch = { %" PRId64 ", %" PRId64 ", %" PRId64 " },\n", b->rank, b->patch[0],
            b->patch[1], b->patch[2]);
    fprintf(out, "    .channels = %d, .classes = %d, .batch = %d,\n", b->channels, b->classes, b->batch);
    fprintf(out, "    .channel_names = channel_names, .class_names = class_names,\n");
    fprintf(out, "    .spacing = { %.17g, %.17g, %.17g },\n", b->params.spacing[0], b->params.spacing[1],
            b->params.spacing[2]);
    fprintf(out, "    .norm_kind = %d, .norm_lo = %.17g, .norm_hi = %.17g, .norm_name = ", (int)pr->norm.kind,
            pr->norm.lo, pr->norm.hi);
    put_str(out, norm_name(pr->norm.kind));
    fprintf(out, ",\n    .stats = {\n");
    for (int c = 0; c < b->channels; c++)
        if (b->stats[c].valid)
            fprintf(out, "        [%d] = { 1, %.17g, %.17g, %.17g, %.17g },\n", c, b->stats[c].mean, b->stats[c].sd,
                    b->stats[c].p005, b->stats[c].p995);
    fprintf(out, "    },\n    .ntensors = %d, .slots = slots,\n", b->ntensors);
    fprintf(out, "    .arena_bytes = %" PRId64 ",\n", b->arena_bytes);
    fprintf(out, "    .ninputs = %d, .input_numel = input_numel, .chan_input = chan_input, .chan_offset = chan_offset,\n",
            b->ninputs);
    fprintf(out, "    .output_tensor = %d, .output_numel = %" PRId64 ",\n", b->output_tensor, b->output_numel);
    fprintf(out, "    .entry = %s_forward,\n", b->name);
    fprintf(out, "    .weights = %s, .weights_bytes = %" PRId64 ",\n};\n", weights_symbol, b->weights_bytes);
}

void build_write_incbin(FILE *out, const char *symbol, const char *blob_path)
{
    fprintf(out, "/* Generated by netc build: the weights, embedded. */\n");
    fprintf(out, "    .section .rodata\n    .balign 64\n    .globl %s\n    .type %s, @object\n%s:\n", symbol, symbol,
            symbol);
    fprintf(out, "    .incbin \"%s\"\n    .size %s, . - %s\n", blob_path, symbol, symbol);
    fprintf(out, "    .section .note.GNU-stack,\"\",@progbits\n");
}

int64_t build_bundle_arena_bytes(const BuildPlan *b)
{
    int64_t n = b->arena_bytes;
    for (int k = 0; k < b->ninputs; k++) n += ALIGN64(b->input_numel[k] * (int64_t)sizeof(float));
    return n;
}

void build_write_bundle_header(FILE *out, const BuildPlan *b)
{
    const Protocol *pr = b->pr;
    const char *N = b->name;
    char up[128];
    size_t i = 0;
    for (; N[i] && i + 1 < sizeof up; i++) up[i] = (char)(N[i] >= 'a' && N[i] <= 'z' ? N[i] - 'a' + 'A' : N[i]);
    up[i] = 0;
    fprintf(out,
            "/* %s.h — net %s compiled by netc %s for protocol %s (%s), as a bundle:\n"
            " * %s.o (the kernels and %s_run) and %s.weights (the parameters).\n"
            " *\n"
            " *   int %s_run(void *arena, const void *weights, const float *input, float *output);\n"
            " *\n"
            " * runs the net once on %s_BATCH window(s).  Everything is the caller's memory;\n"
            " * nothing is allocated inside:\n"
            " *   arena    %s_ARENA_BYTES bytes, %s_ALIGN-byte aligned, scratch (reusable between calls,\n"
            " *            one per concurrent call);\n"
            " *   weights  the whole file %s.weights (%s_WEIGHTS_BYTES bytes: every parameter as\n"
            " *            float32 little-endian, each at a 64-byte aligned offset) loaded at a\n"
            " *            %s_ALIGN-byte aligned address; read only;\n"
            " *   input    %s_INPUT_FLOATS floats, [batch][channel][z][y][x] (x fastest), already\n"
            " *            normalized as the protocol says (%s) and at its spacing;\n"
            " *   output   %s_OUTPUT_FLOATS floats, [batch][class][z][y][x]: the raw class scores\n"
            " *            (logits; the label is the argmax over classes).\n"
            " * Returns 0, or -1 (and does nothing) when a pointer is NULL or misaligned.\n"
            " *\n"
            " * Threads: the kernels call\n"
            " *   void netc_parallel_for(void (*fn)(void *ctx, int64_t lo, int64_t hi), void *ctx, int64_t n);\n"
            " * %s.o carries a weak serial one (fn(ctx, 0, n)).  To run on several threads, link\n"
            " * a strong definition, e.g. netc's pool (runtime/pool.c, or the object pool.o from\n"
            " * libnetcrt.a).  The kernels are compiled for the CPU that ran netc build.\n"
            " */\n",
            N, b->g->net_name, b->version, pr->name, modality_name(pr->modality), N, N, N, N, up, up, up, N, up, up, up,
            norm_name(pr->norm.kind), up, N);
    fprintf(out, "#ifndef %s_BUNDLE_H\n#define %s_BUNDLE_H\n\n", up, up);
    fprintf(out, "#define %s_RANK %d              /* 3: z y x windows; 2: y x slices (PATCH_Z = 1) */\n", up, b->rank);
    fprintf(out, "#define %s_BATCH %d\n#define %s_CHANNELS %d\n#define %s_CLASSES %d\n", up, b->batch, up, b->channels,
            up, b->classes);
    fprintf(out, "#define %s_PATCH_Z %" PRId64 "\n#define %s_PATCH_Y %" PRId64 "\n#define %s_PATCH_X %" PRId64 "\n", up,
            b->patch[0], up, b->patch[1], up, b->patch[2]);
    fprintf(out, "#define %s_SPACING_Z %.17g   /* target spacing in mm (0: the scan's own) */\n", up,
            b->params.spacing[0]);
    fprintf(out, "#define %s_SPACING_Y %.17g\n#define %s_SPACING_X %.17g\n", up, b->params.spacing[1], up,
            b->params.spacing[2]);
    fprintf(out, "#define %s_WINDOW_VOXELS %" PRId64 "\n", up, b->wvox);
    fprintf(out, "#define %s_INPUT_FLOATS %" PRId64 "\n", up, (int64_t)b->batch * b->channels * b->wvox);
    fprintf(out, "#define %s_OUTPUT_FLOATS %" PRId64 "\n", up, b->output_numel);
    fprintf(out, "#define %s_ARENA_BYTES %" PRId64 "\n", up, build_bundle_arena_bytes(b));
    fprintf(out, "#define %s_WEIGHTS_BYTES %" PRId64 "\n", up, b->weights_bytes);
    fprintf(out, "#define %s_ALIGN 64\n\n", up);
    fprintf(out, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n");
    fprintf(out, "int %s_run(void *arena, const void *weights, const float *input, float *output);\n", N);
    fprintf(out, "#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
}

void build_write_bundle_c(FILE *out, const BuildPlan *b)
{
    const char *N = b->name;
    fprintf(out, "/* Generated by netc build: %s_run of the bundle (see %s.h). */\n", N, N);
    fprintf(out, "#include <stdint.h>\n#include <string.h>\n\n");
    fprintf(out, "typedef struct { int kind, index; long long offset; } Slot;\n");
    put_slots(out, b, "Slot", "slots");
    fprintf(out, "static const long long input_at[] = {");   /* inputs copied after the planned arena */
    int64_t at = b->arena_bytes;
    for (int k = 0; k < b->ninputs; k++) {
        fprintf(out, "%s%" PRId64, k ? ", " : " ", at);
        at += ALIGN64(b->input_numel[k] * (int64_t)sizeof(float));
    }
    fprintf(out, " };\nstatic const long long input_channels[] = {");
    for (int k = 0; k < b->ninputs; k++)
        fprintf(out, "%s%" PRId64, k ? ", " : " ", b->input_numel[k] / b->batch / b->wvox);
    fprintf(out, " };\nstatic const int chan_input[] = {");
    for (int c = 0; c < b->channels; c++) fprintf(out, "%s%d", c ? ", " : " ", b->chan_input[c]);
    fprintf(out, " };\nstatic const int chan_offset[] = {");
    for (int c = 0; c < b->channels; c++) fprintf(out, "%s%d", c ? ", " : " ", b->chan_offset[c]);
    fprintf(out, " };\n\n");
    fprintf(out,
            "/* The serial fallback of the one runtime function the kernels call; weak, so\n"
            " * a program linking netc's thread pool gets the pool's instead. */\n"
            "__attribute__((weak)) void netc_parallel_for(void (*fn)(void *, int64_t, int64_t), void *ctx, int64_t n)\n"
            "{\n    if (n > 0) fn(ctx, 0, n);\n}\n\n");
    fprintf(out, "void %s_forward(void **t);\n\n", N);
    fprintf(out,
            "int %s_run(void *arena, const void *weights, const float *input, float *output)\n"
            "{\n"
            "    if (!arena || !weights || !input || !output || ((uintptr_t)arena | (uintptr_t)weights) %% 64) return -1;\n"
            "    char *a = arena;\n"
            "    const unsigned char *w = weights;\n"
            "    void *t[%d];\n"
            "    for (int i = 0; i < %d; i++)\n"
            "        t[i] = slots[i].kind == %d ? (void *)(a + slots[i].offset)\n"
            "             : slots[i].kind == %d ? (void *)(uintptr_t)(w + slots[i].offset)\n"
            "             : slots[i].kind == %d ? (void *)(a + input_at[slots[i].index]) : (void *)0;\n"
            "    for (int j = 0; j < %d; j++)\n"
            "        for (int c = 0; c < %d; c++) {\n"
            "            int k = chan_input[c];\n"
            "            memcpy(a + input_at[k] + sizeof(float) * (size_t)((j * input_channels[k] + chan_offset[c]) * %" PRId64 "LL),\n"
            "                   input + (size_t)(j * %d + c) * %" PRId64 "u, sizeof(float) * %" PRId64 "u);\n"
            "        }\n"
            "    %s_forward(t);\n"
            "    memcpy(output, a + %" PRId64 "LL, sizeof(float) * %" PRId64 "u);\n"
            "    return 0;\n"
            "}\n",
            N, b->ntensors > 0 ? b->ntensors : 1, b->ntensors, BG_ARENA, BG_WEIGHT, BG_INPUT, b->batch, b->channels,
            b->wvox, b->channels, b->wvox, b->wvox, N, b->offset[b->output_tensor], b->output_numel);
}
