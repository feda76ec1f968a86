/* graph.h — the L1 graph and the op table.
 *
 * L1 is a DAG of typed tensor operations with fully static shapes.  Tensors
 * are laid out N, C, spatial...  where the spatial rank (1, 2 or 3) comes from
 * the protocol: a 2D protocol gives rank-4 tensors N,C,H,W and a 3D protocol
 * rank-5 tensors N,C,D,H,W.  (Decided once: 2D is its own rank, not D = 1, so
 * that kernels, strides and parameter shapes match PyTorch's Conv2d/Conv3d
 * exactly.)  Loss nodes produce rank-0 tensors.
 *
 * Every node and parameter has a stable hierarchical name derived from the
 * source (see sema.c, "Naming"), e.g. `enc.2.conv_norm_act.conv.weight`.
 *
 * Nodes are stored in topological order (the order sema created them).
 */
#ifndef NETC_GRAPH_H
#define NETC_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "diag.h"

#define MAX_RANK 6      /* tensors: N, C + up to 3 spatial; weights: up to 5 */
#define MAX_SPATIAL 3

typedef enum {
#define OP(id, name) OP_##id,
#include "ops.def"
#undef OP
    OP_COUNT
} OpKind;

/* Fusion classes, ranked as in TVM: lower fuses into higher. */
typedef enum {
    FK_ELEMWISE,    /* y[i] = f(x[i]) */
    FK_BROADCAST,   /* y[i] = f(x[i], w[c]) */
    FK_INJECTIVE,   /* pure index arithmetic: crop, pad, concat, nearest upsample */
    FK_REDUCE,      /* pooling, statistics, softmax, losses */
    FK_CONV,        /* conv-like: anchors a kernel and takes an epilogue */
    FK_OPAQUE
} FusionKind;

typedef enum { DT_F32, DT_I32 } DType;

typedef struct {
    int rank;
    int64_t d[MAX_RANK];
} Shape;

typedef enum { PAD_EXPLICIT = 0, PAD_SAME, PAD_VALID } PadMode;

typedef struct {
    PadMode mode;
    int64_t lo[MAX_SPATIAL], hi[MAX_SPATIAL];   /* resolved by the shape rule */
} Padding;

typedef enum {
    INIT_HE_NORMAL, INIT_HE_UNIFORM, INIT_XAVIER_NORMAL, INIT_XAVIER_UNIFORM,
    INIT_ZEROS, INIT_ONES, INIT_CONST
} InitKind;

typedef struct {
    InitKind kind;
    double a;          /* He: negative slope (nnU-Net uses 1e-2); CONST: the value */
    int64_t fan_in, fan_out;
} InitRule;

/* All attributes any op can have.  An op uses the subset listed in its
 * AttrSpec table; the rest stay at zero.  Per-axis arrays hold one value per
 * spatial axis (D, H, W order; H, W in 2D). */
typedef struct {
    int64_t channels;                 /* conv, upconv: output channels */
    int64_t kernel[MAX_SPATIAL];      /* conv, upconv, pools */
    int64_t stride[MAX_SPATIAL];      /* 0 = default (1 for conv, kernel for pools/upconv) */
    int64_t dilation[MAX_SPATIAL];
    int64_t out_pad[MAX_SPATIAL];     /* upconv output padding (end side) */
    int64_t scale[MAX_SPATIAL];       /* upsample factor */
    Padding pad;                      /* conv, upconv, pools, pad, crop */
    int64_t groups;
    int64_t ignore;                   /* losses: label to ignore, -1 = none */
    bool bias, affine, ceil_mode, count_pad, align_corners, shared;
    bool background, batch_dice;      /* dice */
    double eps, momentum, slope, alpha, p, gamma, smooth, factor, value, init_a;
    int mode;                         /* enum attr: upsample nearest|linear, pad zero|reflect|replicate */
    int init;                         /* InitKind for the weight */
    int grad_node, grad_operand;      /* grad: the forward node and which of its
                                         inputs (0..nin-1) or params (nin + j) */
    /* sgd_update / adam_update (hyperparameters that schedules do not change;
     * the learning rate and the step count are scalar inputs) */
    double opt_momentum, opt_weight_decay, opt_beta1, opt_beta2, opt_eps;
    bool opt_nesterov, opt_decoupled;
    int nweights;
    double weights[64];               /* ce / focal class weights */
} OpAttrs;

typedef enum {
    AT_INT,       /* int64_t */
    AT_FLOAT,     /* double */
    AT_BOOL,      /* bool; a bare flag `nesterov` means true */
    AT_AXES,      /* int64_t[MAX_SPATIAL]: a number (all axes) or a per-axis list */
    AT_PADDING,   /* Padding: same | valid | n | per-axis list | per-axis [lo, hi] pairs */
    AT_ENUM,      /* int: index into enum_values ("nearest|linear") */
    AT_FLOATS     /* weights[] + nweights */
} AttrType;

typedef struct {
    const char *name;
    AttrType type;
    int position;           /* position among positional arguments, -1 = named only */
    bool required;
    size_t offset;          /* offsetof(OpAttrs, field) */
    double def;             /* default for INT/FLOAT/BOOL/AXES/ENUM(index) */
    const char *enum_values;/* AT_ENUM: "a|b|c"; AT_PADDING: default mode name */
    const char *doc;
} AttrSpec;

typedef struct {
    const char *suffix;     /* "weight", "bias", "running_mean", ... */
    Shape shape;
    InitRule init;
    bool trainable;         /* false for buffers such as running statistics */
} ParamSpec;

typedef enum {
    TK_INPUT, TK_LABEL, TK_PARAM, TK_ACTIVATION,
    TK_HYPER,      /* lr, step: set per training step */
    TK_WEIGHTMAP   /* per-voxel loss weights (N x 1 x patch, float), next to the labels */
} TensorKind;

typedef struct Tensor {
    char *name;
    Shape shape;
    DType dtype;
    TensorKind kind;
    int producer;           /* node index, -1 for inputs and parameters */
    /* Cumulative resampling of each spatial axis relative to the net input,
     * as a fraction down_num/down_den (a stride-2 pool doubles down_num).
     * Used only to explain shape errors ("250 is not divisible by 16"). */
    int64_t down_num[MAX_SPATIAL], down_den[MAX_SPATIAL];
    /* The deepest whole downsampling factor reached on any path to this
     * tensor (a U-Net decoder is back at 1, but went through 16). */
    int64_t max_down[MAX_SPATIAL];
    int source_input;       /* which net input this derives from, -1 unknown */
} Tensor;

typedef struct {
    char *name;             /* hierarchical: node name + "." + suffix */
    int tensor;
    InitRule init;
    bool trainable;         /* false for buffers (running statistics) */
    bool frozen;            /* trainable, but held fixed by the train block's freeze */
    int node;
    int grad;               /* tensor holding d(loss)/d(param) after autodiff, -1 if none */
} Param;

#define NODE_MAX_PARAMS 4

typedef struct {
    OpKind op;
    char *name;             /* hierarchical, unique in the graph */
    int nin;
    int *in;                /* tensor indices */
    int out;                /* tensor index */
    int nparams;
    int params[NODE_MAX_PARAMS];  /* param indices */
    OpAttrs at;
    SrcLoc loc;             /* where the op was written */
} Node;

typedef struct {
    char *name;
    int tensor;
    SrcLoc loc;
} GraphPort;

typedef struct Graph {
    char *net_name;
    char *protocol_name;
    int spatial_rank;
    Tensor *tensors; int ntensors, captensors;
    Node *nodes; int nnodes, capnodes;
    Param *params; int nparams, capparams;
    GraphPort *inputs; int ninputs, capinputs;
    GraphPort *outputs; int noutputs, capoutputs;
    GraphPort *losses; int nlosses, caplosses;   /* filled for training graphs */
} Graph;

/* What a shape rule needs to check its inputs and explain failures. */
typedef struct {
    Diag *diag;
    SrcLoc loc;                    /* the op's call site */
    const char *op_name;           /* as written */
    int spatial_rank;
    const Tensor *const *in;       /* the input tensors (names, shapes, resampling) */
    int nin;
    const char *protocol_name;     /* for hints; may be NULL */
    const int64_t *protocol_size;  /* spatial size of the net input; may be NULL */
} ShapeCtx;

typedef struct {
    const char *name;
    FusionKind kind;
    int min_inputs, max_inputs;    /* max -1: any number */
    const AttrSpec *attrs;         /* terminated by an entry with name == NULL */
    const char *summary;           /* one line for `netc ops` and docs */
    /* Check inputs, resolve defaults that depend on shapes (same padding,
     * stride = kernel, ...) into node->at, and compute the output shape.
     * Returns false after reporting an error through cx->diag. */
    bool (*shape)(const ShapeCtx *cx, OpAttrs *at, const Shape *in, int nin, Shape *out);
    /* Parameters this op owns for the given input shapes; returns how many. */
    int (*params)(const OpAttrs *at, const Shape *in, int nin, ParamSpec *out);
    /* Forward FLOPs (a multiply-add counts 2). */
    double (*flops)(const OpAttrs *at, const Shape *in, int nin, const Shape *out);
    bool internal;                 /* made by the compiler only; not callable from .net files */
} OpInfo;

extern const OpInfo op_table[OP_COUNT];

/* Look an op up by its .net spelling; OP_COUNT if unknown. */
OpKind op_lookup(const char *name);
/* Fill `at` with every default of op `k` for the given spatial rank. */
void op_default_attrs(OpKind k, int spatial_rank, OpAttrs *at);

/* Shapes */
int64_t shape_numel(const Shape *s);
bool shape_equal(const Shape *a, const Shape *b);
/* "64x32x32": C and spatial dims (skip_batch) or all dims. buf >= 96 bytes. */
char *shape_format(char *buf, size_t n, const Shape *s, bool skip_batch);

/* Graph construction (used by sema; later passes build graphs too) */
Graph *graph_new(const char *net_name, const char *protocol_name, int spatial_rank);
void graph_free(Graph *g);
int graph_add_tensor(Graph *g, const char *name, Shape shape, DType dt, TensorKind kind);
int graph_add_node(Graph *g, OpKind op, const char *name, const int *in, int nin, int out,
                   const OpAttrs *at, SrcLoc loc);
int graph_add_param(Graph *g, int node, const ParamSpec *ps);
void graph_add_input(Graph *g, const char *name, int tensor, SrcLoc loc);
void graph_add_output(Graph *g, const char *name, int tensor, SrcLoc loc);

/* Summaries */
int64_t graph_param_count(const Graph *g, bool trainable_only);
double graph_flops(const Graph *g);
/* Which tensors the value of tensor `target` depends on (itself included):
 * a malloc'd flag per tensor, NULL when out of memory.  Parameters the loss
 * does not depend on get no gradient and, as in torch.optim, no update. */
bool *graph_influences(const Graph *g, int target);
int64_t graph_activation_bytes(const Graph *g);  /* naive plan: every non-parameter tensor kept */
double node_flops(const Graph *g, const Node *n);

/* Output for the CLI */
void graph_print_table(const Graph *g, FILE *out);   /* `netc check` layer table */
void graph_print_dot(const Graph *g, FILE *out);     /* `netc graph --dot` */
void graph_print_json(const Graph *g, FILE *out);    /* `netc graph --json` */

const char *init_kind_name(InitKind k);
const char *fusion_kind_name(FusionKind k);

#endif
