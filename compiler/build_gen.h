/* build_gen.h — what `netc build` derives from a compiled inference graph
 * and writes out: the tensor table (where each graph tensor lives in the
 * planned arena, the weight blob or an input buffer), the weight blob, the
 * glue C of a standalone executable (runtime/standalone/standalone.h) and
 * the C source and header of an embeddable bundle.  No LLVM here: the
 * kernels themselves come from l3_llvm_emit (compiler/cmd_build.c). */
#ifndef NETC_BUILD_GEN_H
#define NETC_BUILD_GEN_H

#include <stdint.h>
#include <stdio.h>

#include "dataset.h"
#include "fuse.h"
#include "graph.h"
#include "memplan.h"
#include "safetensors.h"
#include "sema.h"

enum { BG_NONE = 0, BG_ARENA, BG_WEIGHT, BG_INPUT };   /* = NETC_SA_* of standalone.h */

typedef struct {
    const Graph *g;
    const Protocol *pr;
    char name[128];                 /* C identifier: symbols NAME_forward, NAME_run; files NAME.* */
    const char *source;             /* the .net file */
    const char *version;            /* netc's version */
    int ntensors;
    int *kind, *index;              /* per tensor: BG_*; input number for BG_INPUT */
    int64_t *offset;                /* byte offset in the arena or the weight blob */
    int64_t arena_bytes;            /* planned arena, rounded up to 64 */
    unsigned char *weights;         /* every parameter as float32, each 64-byte aligned */
    int64_t weights_bytes;
    int rank, batch, channels, classes;
    int64_t patch[3];               /* (z, y, x); z = 1 for rank 2 */
    int64_t wvox;                   /* voxels per window */
    int ninputs;
    int64_t input_numel[MAX_CHANNELS];   /* whole batch */
    int chan_input[MAX_CHANNELS], chan_offset[MAX_CHANNELS];
    int output_tensor;
    int64_t output_numel;           /* whole batch */
    DsParams params;                /* target spacing, normalization */
    DsChannelStats stats[MAX_CHANNELS];
} BuildPlan;

/* Check that g (an inference graph for pr) can be served — inputs carry the
 * protocol's channels at the patch size, output 0 is the logits on the
 * window — and fill the plan: tensor table from mp, weights from f (with an
 * optional name mapping file), the statistics from f's metadata
 * `netc.stats.<c>.mean|sd|p005|p995` (c: channel index or name).
 * 0, or -1 with a message. */
int build_plan(BuildPlan *b, const Graph *g, const Protocol *pr, const MemPlan *mp, const StFile *f,
               const char *mapping, char *err, size_t errlen);
void build_plan_free(BuildPlan *b);

/* The standalone glue: defines netc_sa_info; `weights_symbol` is the
 * assembler symbol of the embedded blob. */
void build_write_glue(FILE *out, const BuildPlan *b, const char *weights_symbol);
/* An assembler file embedding `blob_path` (.incbin) as `symbol`. */
void build_write_incbin(FILE *out, const char *symbol, const char *blob_path);
/* The bundle: NAME.h and the C of NAME_run (compiled and merged with the
 * kernels into NAME.o). */
void build_write_bundle_header(FILE *out, const BuildPlan *b);
void build_write_bundle_c(FILE *out, const BuildPlan *b);
/* The bundle's arena: the planned arena plus a copy of every input. */
int64_t build_bundle_arena_bytes(const BuildPlan *b);

#endif
