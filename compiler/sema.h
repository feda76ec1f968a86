/* sema.h — from AST to L1 graph: programs, values, protocols, expansion.
 *
 *   program_load()     parse a file and its imports; index declarations
 *   protocol_resolve() check a protocol block, produce a Protocol
 *   expand_net()       run a net body for a protocol: evaluate expressions,
 *                      unroll loops, expand blocks, infer shapes, name every
 *                      node and parameter -> Graph (L1)
 *   train_resolve()    check a train block; train_add_losses() appends label
 *                      input and loss nodes to a graph
 *
 * All of them report problems through the Program's Diag and keep going, so a
 * single run lists every error; callers check diag.nerrors at the end.
 */
#ifndef NETC_SEMA_H
#define NETC_SEMA_H

#include "ast.h"
#include "graph.h"

/* ---- program ---------------------------------------------------------- */

typedef struct {
    char *name;
    Ast *decl;
} Decl;

typedef struct {
    Decl *items;
    int n, cap;
} DeclTable;

typedef struct Program {
    Diag *diag;
    AstArena arena;
    Ast **files; int nfiles, capfiles;     /* parsed D_FILE roots, main file first */
    DeclTable blocks, nets, protocols, trains;
    int main_file;                          /* Diag file index of the main file */
    char **loaded; int nloaded, caploaded;  /* canonical paths of the files read */
    int load_errors;                        /* errors while reading and parsing: later
                                               stages then skip "X is missing" complaints
                                               that a lost declaration would cause */
} Program;

/* Parse `path` and, recursively, its imports (relative to the importing
 * file).  Returns NULL only if the main file cannot be read. */
Program *program_load(Diag *d, const char *path);
/* Same, from text already in memory (tests, fuzzing). */
Program *program_from_text(Diag *d, const char *name, const char *text, size_t len);
void program_free(Program *p);
Ast *program_find(const DeclTable *t, const char *name);

/* ---- command-line overrides ---- */

/* A command-line -D key=value, parsed.  `value` is an expression (for net
 * parameters) or a D_FIELD (for train./protocol. keys). */
typedef struct {
    char *key;
    const char *text;   /* the value as given on the command line */
    Ast *value;         /* parsed by netc_compile */
    bool used;
} Override;

/* ---- protocols -------------------------------------------------------- */

typedef enum { MOD_MRI, MOD_CT, MOD_PET, MOD_US, MOD_XRAY, MOD_OTHER } Modality;

typedef enum {
    NORM_ZSCORE,          /* per-image z-score (MRI default) */
    NORM_ZSCORE_NONZERO,  /* z-score inside the nonzero mask, outside stays 0 */
    NORM_CT,              /* dataset foreground percentiles, then dataset z-score (nnU-Net CT) */
    NORM_CLIP,            /* clip to [lo, hi] (a CT window in HU), then z-score */
    NORM_PERCENTILES,     /* clip to per-image percentiles [lo, hi], then z-score */
    NORM_RESCALE,         /* min-max to [0, 1] */
    NORM_NONE
} NormKind;

#define MAX_CHANNELS 16
#define MAX_CLASSES 64

typedef struct {
    NormKind kind;
    double lo, hi;
} Normalization;

typedef struct Protocol {
    char *name;
    SrcLoc loc;
    Modality modality;
    int nchannels;
    char *channels[MAX_CHANNELS];
    int rank;                       /* spatial rank: 2 or 3 (1 allowed) */
    int64_t size[MAX_SPATIAL];      /* scan matrix */
    int64_t patch[MAX_SPATIAL];     /* what the net is compiled for (default: size) */
    double spacing[MAX_SPATIAL];    /* mm */
    Normalization norm;
    int nclasses;
    char *classes[MAX_CLASSES];
    int64_t batch;
} Protocol;

Protocol *protocol_resolve(Program *p, Ast *decl, Override *ov, int nov);
void protocol_free(Protocol *pr);
const char *modality_name(Modality m);
const char *norm_name(NormKind k);

/* ---- net expansion ---------------------------------------------------- */

/* Limits that keep expansion finite on any input. */
#define EXPAND_MAX_NODES 50000
#define EXPAND_MAX_STEPS 500000      /* loop iterations + statements */
#define EXPAND_MAX_CALL_DEPTH 64

typedef struct {
    int64_t batch;                  /* N of every input */
    const int64_t *size;            /* spatial size of every input (protocol patch) */
} ExpandShape;

Graph *expand_net(Program *p, Ast *net, const Protocol *pr, const ExpandShape *shape,
                  Override *ov, int nov);

/* ---- training recipes ------------------------------------------------- */

/* One call in a train field: sgd(lr = 0.01, nesterov), rotate(-30 .. 30, p = 0.2).
 * Checked against the field's table in train.c; defaults filled in. */
typedef struct {
    const char *name;  /* sgd, poly, mirror, ... (static string from the table) */
    SrcLoc loc;
    double num[8];     /* scalar parameters in table order */
    double lo, hi;     /* the range parameter, when the call has one */
    unsigned axes;     /* mirror: bit k set = spatial axis k (x = last axis) */
} TrainCall;

typedef struct TrainSpec {
    char *net, *protocol;
    SrcLoc loc;
    Ast *loss;                       /* loss expression */
    const Ast *deep_supervision;     /* the field: outputs, optionally weighted; NULL if none */
    TrainCall optimizer;
    TrainCall *schedule; int nschedule;
    TrainCall *augment; int naugment;
    char **freeze; int nfreeze;      /* parameter name patterns */
    SrcLoc *freeze_loc;
    char *init_weights;
    TrainCall sampling;              /* random | foreground(p) | balanced */
    int64_t batch, epochs, iterations, val_iterations, seed;
    int64_t patch[MAX_SPATIAL]; int patch_rank;
    double foreground, clip;
} TrainSpec;

TrainSpec *train_resolve(Program *p, Ast *decl, const Protocol *pr, Override *ov, int nov);
void train_free(TrainSpec *t);
/* Append the labels input and the loss nodes of `t` to a graph built for the
 * training patch; returns false on errors. */
bool train_add_losses(Program *p, Graph *g, const TrainSpec *t, const Protocol *pr);
/* Does parameter name `name` match a freeze pattern (`enc.*`, `enc.0`)? */
bool name_matches(const char *pattern, const char *name);

#endif
