/* standalone.h — what a `netc build` executable knows about itself.
 *
 * `netc build` compiles a net for one protocol ahead of time (l3_llvm_emit:
 * an object with the entry `void netc_sa_forward(void **t)`), writes a glue
 * file that defines `netc_sa_info` below (the tensor table: where each graph
 * tensor lives; the protocol: patch, channels, classes, normalization,
 * target spacing; the dataset statistics of the weights' metadata) and an
 * assembler file that embeds the weights, and links them with
 * runtime/standalone/main.c and the LLVM-free runtime library
 * (libnetcrt.a).  This header is installed next to that library
 * ($(BUILD)/include/netc_standalone.h) so the glue compiles without the
 * netc sources.  It depends on nothing but the C library.
 */
#ifndef NETC_STANDALONE_H
#define NETC_STANDALONE_H

#define NETC_SA_ABI 1
#define NETC_SA_MAX_CHANNELS 16

/* Where graph tensor i lives while the entry runs. */
enum {
    NETC_SA_NONE = 0,   /* not materialized (kept inside a kernel): NULL */
    NETC_SA_ARENA,      /* at byte `offset` of the arena (64-byte aligned) */
    NETC_SA_WEIGHT,     /* at byte `offset` of the weight blob (a parameter or buffer) */
    NETC_SA_INPUT       /* graph input number `index` (a buffer of the forward's) */
};

typedef struct {
    int kind;
    int index;
    long long offset;
} NetcSaSlot;

typedef struct {
    int valid;
    double mean, sd, p005, p995;
} NetcSaStats;

typedef struct {
    int abi;                                /* NETC_SA_ABI */
    const char *net, *protocol, *modality, *netc_version, *source;
    int rank;                               /* 3, or 2 (the net sees (y, x) slices) */
    long long patch[3];                     /* window (z, y, x); patch[0] = 1 for rank 2 */
    int channels, classes, batch;           /* batch: windows per entry call */
    const char *const *channel_names;       /* channels names */
    const char *const *class_names;         /* classes names */
    double spacing[3];                      /* target spacing (z, y, x) mm; 0 keeps the scan's */
    int norm_kind;                          /* NormKind of compiler/sema.h */
    double norm_lo, norm_hi;
    const char *norm_name;
    NetcSaStats stats[NETC_SA_MAX_CHANNELS];/* dataset statistics per channel (NORM_CT) */
    int ntensors;
    const NetcSaSlot *slots;                /* ntensors entries */
    long long arena_bytes;                  /* a multiple of 64 */
    int ninputs;
    const long long *input_numel;           /* per graph input, floats for the whole batch */
    const int *chan_input;                  /* channel c -> graph input */
    const int *chan_offset;                 /* channel c -> its channel index inside that input */
    int output_tensor;                      /* graph output 0 (the logits; in the arena) */
    long long output_numel;                 /* its floats for the whole batch: batch x classes x window */
    void (*entry)(void **t);
    const unsigned char *weights;           /* float32 little-endian, each tensor 64-byte aligned */
    long long weights_bytes;
} NetcSaInfo;

extern const NetcSaInfo netc_sa_info;

#endif
