/* sema_internal.h — values, environments and the expansion context shared by
 * eval.c (expressions), expand.c (nets and blocks), protocol.c and train.c.
 * Not part of the compiler's public interface. */
#ifndef NETC_SEMA_INTERNAL_H
#define NETC_SEMA_INTERNAL_H

#include "sema.h"

typedef enum {
    V_ERROR,    /* an error was already reported: stay quiet downstream */
    V_NONE,
    V_INT, V_FLOAT, V_BOOL, V_STR,
    V_SYM,      /* a bare name not bound to anything: an enum value (same, linear) */
    V_LIST, V_TUPLE, V_RANGE,
    V_TENSOR,   /* a graph tensor */
    V_LAYER,    /* an op or block waiting for its tensor inputs */
    V_CALL      /* in fields only: name(args) of a loss, optimizer, augmentation ... */
} ValueKind;

typedef struct Layer Layer;
typedef struct Value Value;
typedef struct Arg Arg;

struct Value {
    ValueKind kind;
    int64_t i;              /* INT, BOOL (0/1) */
    double f;               /* FLOAT */
    const char *s;          /* STR, SYM, CALL name */
    Value *items; int n;    /* LIST, TUPLE, RANGE (2 items) */
    Arg *args; int nargs;   /* CALL */
    int tensor;             /* TENSOR */
    Layer *layer;           /* LAYER */
    SrcLoc loc;             /* where the value was written */
};

struct Arg {
    const char *name;       /* NULL for positional */
    Value value;
    SrcLoc loc;
};

typedef enum { LAYER_OP, LAYER_BLOCK, LAYER_CHAIN } LayerKind;

struct Layer {
    LayerKind kind;
    OpKind op;              /* LAYER_OP */
    Ast *block;             /* LAYER_BLOCK: the D_BLOCK */
    Arg *args; int nargs;   /* non-tensor arguments as written */
    OpAttrs at;             /* LAYER_OP: the attributes, checked when the layer was made */
    bool at_ok;
    int *bound; int nbound; /* tensors given at the call (`add(y)`): come after the chained input */
    bool configured;        /* called once already: conv(64, 3), relu(); further calls take tensors */
    Layer *first, *second;  /* LAYER_CHAIN: first, then second */
    const char *name;       /* op or block name, for messages and naming */
    SrcLoc loc;
};

/* Variables.  A frame is one function body (net or block) or a loop body;
 * lookups walk outwards but stop after the first function frame, so blocks
 * see only their own parameters and locals (plus global ops and blocks). */
typedef struct Binding { const char *name; Value value; bool loop_var; } Binding;

typedef struct Frame {
    struct Frame *parent;
    bool function;
    Binding *vars; int n, cap;
    int *slots; int nslots;     /* hash index: vars position + 1, 0 = empty */
} Frame;

/* Naming tree (see "Naming" in expand.c). */
typedef struct NameNode {
    const char *seg;
    struct NameNode *parent;
    struct NameNode **kids; int nkids, capkids;
    int node;               /* graph node index, or -1 for a scope */
} NameNode;

typedef struct Chunk { struct Chunk *next; size_t used, cap; char data[]; } Chunk;

typedef struct Sema {
    Program *prog;
    Diag *diag;
    Graph *g;
    const Protocol *pr;
    int rank;
    const ExpandShape *shape;
    Frame *env;
    NameNode *root, *scope;
    NameNode **node_names;  /* per graph node */
    int cap_node_names;
    int call_depth;
    long steps;
    bool limit_hit;         /* a size limit was reported: stop expanding */
    Chunk *mem;
    int ninputs_bound;
    bool in_loss;           /* evaluating a train block's loss: dice_ce is defined */
} Sema;

/* memory (freed together at the end of a run) */
void *sema_alloc(Sema *S, size_t n);
const char *sema_strdup(Sema *S, const char *s);

void sema_init(Sema *S, Program *p);
void sema_release(Sema *S);

/* environment */
void frame_push(Sema *S, bool function);
void frame_pop(Sema *S);
Binding *env_lookup(Sema *S, const char *name);
void env_define(Sema *S, const char *name, Value v, bool loop_var);
void env_assign(Sema *S, const char *name, Value v, SrcLoc loc);

/* expressions */
Value eval(Sema *S, const Ast *n);
/* Like eval, but a name bound to nothing yields V_SYM instead of an error. */
Value eval_sym(Sema *S, const Ast *n);
/* Field values: calls of unknown names become V_CALL, names become V_SYM,
 * a quantity with a unit (1.5 mm) drops the unit after checking it. */
Value eval_field(Sema *S, const Ast *n);
Value value_error(void);
Value value_int(int64_t i, SrcLoc loc);
Value value_float(double f, SrcLoc loc);
const char *value_kind_name(ValueKind k);
bool value_is_number(const Value *v);
double value_number(const Value *v);
/* Report "unknown name" for a symbol, with a suggestion from what is in scope. */
void sema_unknown_name(Sema *S, const char *name, SrcLoc loc);
/* Whether evaluating a tensor-producing expression should stop (limits). */
bool sema_step(Sema *S, SrcLoc loc);

/* tensors and layers (expand.c) */
Value apply_layer(Sema *S, Layer *l, const int *tensors, int ntensors, SrcLoc loc);
Value call_value(Sema *S, Value callee, const Ast *call);
Value op_layer(Sema *S, OpKind op, SrcLoc loc);
Value block_layer(Sema *S, Ast *block, SrcLoc loc);
Value tensor_binop(Sema *S, int op, Value a, Value b, SrcLoc loc);



/* naming (names.c) */
void names_init(Sema *S);
void names_push(Sema *S, const char *want);
void names_pop(Sema *S);
void names_node(Sema *S, int node, const char *base);
void names_finalize(Sema *S, int first_node);
void names_reset(void);

bool expand_loss(Program *p, Graph *g, const Protocol *pr, const ExpandShape *shape, const Ast *loss,
                 const Ast *deep_supervision);

/* attributes (attrs.c) */
bool parse_op_attrs(Sema *S, OpKind k, const Arg *args, int nargs, OpAttrs *at, SrcLoc loc);
#endif
