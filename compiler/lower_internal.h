/* lower_internal.h — what lower.c (forward ops) and lower_grad.c (gradients,
 * losses, optimizer updates) share: the lowering context and small builders
 * of L3 expressions, buffers and loops.  Everything here is static inline. */
#ifndef NETC_LOWER_INTERNAL_H
#define NETC_LOWER_INTERNAL_H

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "fuse.h"
#include "graph.h"
#include "l3.h"

typedef struct {
    L3Module *m;
    L3Kernel *k;
    const Graph *g;
    const Node *n;
    int index;            /* node index */
    bool training;
    /* fused lowering (NULL fp: one node per kernel) */
    const FusionPlan *fp;
    const Kernel *kern;
    const bool *in_kern;  /* per node: computed in this kernel (members and inlined movement ops) */
    L3Expr *ovr;          /* while emitting: the anchor's value at the current coordinates */
} Lo;

static inline L3Expr *I(Lo *L, int64_t v) { return l3_int(L->m, v); }
static inline L3Expr *F(Lo *L, double v) { return l3_float(L->m, v); }
static inline L3Expr *add(Lo *L, L3Expr *a, L3Expr *b) { return l3_bin(L->m, L3_ADD, a, b); }
static inline L3Expr *sub(Lo *L, L3Expr *a, L3Expr *b) { return l3_bin(L->m, L3_SUB, a, b); }
static inline L3Expr *mul(Lo *L, L3Expr *a, L3Expr *b) { return l3_bin(L->m, L3_MUL, a, b); }
static inline L3Expr *dv(Lo *L, L3Expr *a, L3Expr *b) { return l3_bin(L->m, L3_DIV, a, b); }
static inline L3Expr *bin(Lo *L, L3Op op, L3Expr *a, L3Expr *b) { return l3_bin(L->m, op, a, b); }
static inline L3Expr *V(Lo *L, int var) { return l3_varref(L->m, L->k, var); }

static inline const Shape *tshape(Lo *L, int t) { return &L->g->tensors[t].shape; }
static inline int64_t numel0(const Shape *s) { return s->rank == 0 ? 1 : shape_numel(s); }

static inline int buf(Lo *L, int t, bool written, const char *name)
{
    const Tensor *te = &L->g->tensors[t];
    return l3_buf(L->m, L->k, t, te->dtype == DT_I32 ? L3_I32 : L3_F32, numel0(&te->shape), written, name);
}
static inline int in_buf(Lo *L, int j)
{
    char nm[16];
    snprintf(nm, sizeof nm, "x%d", j);
    return buf(L, L->n->in[j], false, L->n->nin == 1 ? "x" : nm);
}
static inline int param_buf(Lo *L, int j, bool written)
{
    const Param *p = &L->g->params[L->n->params[j]];
    const char *dot = strrchr(p->name, '.');
    char nm[32];
    snprintf(nm, sizeof nm, "%s", dot ? dot + 1 : "p");
    for (char *c = nm; *c; c++) if (!isalnum((unsigned char)*c)) *c = '_';
    return buf(L, p->tensor, written, nm);
}
static inline int out_buf(Lo *L) { return buf(L, L->n->out, true, "y"); }

static inline L3Expr *load(Lo *L, int b, L3Expr *idx) { return l3_load(L->m, L->k, b, idx); }

/* A loop over 0 .. extent into `in`; returns its body. */
static inline L3Block *loop(Lo *L, L3Block *in, const char *name, int64_t extent, int *var, unsigned annot)
{
    *var = l3_var(L->m, L->k, name, L3_I64, true);
    return &l3_for(L->m, in, *var, extent, annot)->body;
}

/* Row-major linear index of coordinates c[0..rank-1] in shape s. */
static inline L3Expr *lin(Lo *L, const Shape *s, L3Expr *const *c)
{
    if (s->rank == 0) return I(L, 0);
    L3Expr *e = c[0];
    for (int i = 1; i < s->rank; i++) e = add(L, mul(L, e, I(L, s->d[i])), c[i]);
    return e;
}

/* Loops over every element of shape s (rank 0: none); coordinates in c. */
static inline L3Block *loops_over(Lo *L, L3Block *in, const Shape *s, L3Expr **c)
{
    static const char *nm[] = { "n", "c", "i", "j", "k" };
    L3Block *b = in;
    for (int i = 0; i < s->rank; i++) {
        int v;
        bool inner = i == s->rank - 1;
        b = loop(L, b, i < 5 ? nm[i] : "a", s->d[i], &v, i == 0 ? L3_PARALLEL : inner ? L3_VECTORIZE : 0);
        c[i] = V(L, v);
    }
    return b;
}

/* The coordinates of a broadcast operand of shape `in` at output
 * coordinates c (a static array of MAX_RANK, valid until the next call). */
static inline L3Expr *const *bcoords(Lo *L, const Shape *in, const Shape *out, L3Expr *const *c)
{
    static L3Expr *cc[MAX_RANK];
    for (int i = 0; i < in->rank; i++) cc[i] = in->d[i] == 1 && out->d[i] != 1 ? I(L, 0) : c[i];
    return cc;
}

/* The index into a broadcast operand of shape `in` at output coordinates c. */
static inline L3Expr *bcast_index(Lo *L, const Shape *in, const Shape *out, L3Expr *const *c)
{
    if (in->rank == 0) return I(L, 0);
    L3Expr *cc[MAX_RANK] = { 0 };
    for (int i = 0; i < in->rank; i++) cc[i] = in->d[i] == 1 && out->d[i] != 1 ? I(L, 0) : c[i];
    return lin(L, in, cc);
}


/* Values and results, fusion-aware (lower.c).  val: tensor t at
 * coordinates c (a load, or the expression of a node computed in this
 * kernel: an inlined movement op or an epilogue node).  emit: the current
 * node's result at output coordinates c: stored, together with every
 * epilogue output of the kernel at the same coordinates.  The _f forms
 * take a flat row-major index. */
L3Expr *val(Lo *L, int t, L3Expr *const *c);
L3Expr *valf(Lo *L, int t, L3Expr *flat);
void emit(Lo *L, L3Block *b, L3Expr *const *c, L3Expr *v);
void emitf(Lo *L, L3Block *b, L3Expr *flat, L3Expr *v);

/* Row schedules (lower_sched.c): the tensor a row-schedule kernel accumulates in
 * (-1: none), and the transposed-convolution rows (upconv forward, conv
 * input gradient). */
int conv_accumulator(Lo *L);
bool lower_transposed_rows(Lo *L, int src_t, int w_tensor, int bias_buf, int acc_t);

/* Convolution schedules (lower_sched.c): the row schedule accumulating in
 * tensor acc_t, and the register-tiled forward (false: the convolution is
 * not one it handles and nothing was emitted). */
bool lower_conv_rows(Lo *L, int acc_t);
bool lower_conv_tiled(Lo *L);
bool lower_upconv_tiled(Lo *L);   /* kernel == stride, dilation 1 (else false, nothing emitted) */

/* The register-tiled weight gradient of a convolution or upconv (a grad
 * node with grad_operand 1; lower_sched_grad.c); false: not a geometry it
 * handles, nothing emitted. */
bool lower_conv_wgrad_tiled(Lo *L);
/* An upconv's input gradient (a convolution of dy) in the register tiles
 * (lower_sched.c); false: not a shape they handle, nothing emitted. */
bool lower_upconv_input_grad_tiled(Lo *L, int dy, int w_tensor, int acc_t);

/* Dropout in training (lower.c): x * mask / (1 - p) with node `node`'s
 * random mask at coordinates c of shape s (the gradient reuses the
 * forward's mask). */
L3Expr *dropout_value(Lo *L, int node, const Shape *s, L3Expr *const *c, L3Expr *x);

/* Grad nodes: the forward node and its operands (inputs: dy, the forward
 * inputs, parameters, output), and small builders shared by lower_grad.c
 * and lower_loss.c. */
/* ---- access to the forward node's operands from a grad node ------------------------------------ */

static inline const Node *fwd(Lo *L) { return &L->g->nodes[L->n->at.grad_node]; }
static inline int t_dy(Lo *L) { return L->n->in[0]; }
static inline int t_x(Lo *L, int j) { return L->n->in[1 + j]; }
static inline int t_p(Lo *L, int j) { return L->n->in[1 + fwd(L)->nin + j]; }
static inline int t_y(Lo *L) { return L->n->in[1 + fwd(L)->nin + fwd(L)->nparams]; }
static inline int b_p(Lo *L, int j, const char *nm) { return buf(L, t_p(L, j), false, nm); }

static inline L3Expr *ld(Lo *L, int b, L3Expr *i) { return load(L, b, i); }
static inline L3Expr *sel(Lo *L, L3Expr *c, L3Expr *a, L3Expr *b) { return l3_select(L->m, c, a, b); }
static inline L3Expr *lt(Lo *L, L3Expr *a, L3Expr *b) { return bin(L, L3_LT, a, b); }
static inline L3Expr *le(Lo *L, L3Expr *a, L3Expr *b) { return bin(L, L3_LE, a, b); }
static inline L3Expr *and_(Lo *L, L3Expr *a, L3Expr *b) { return a ? bin(L, L3_AND, a, b) : b; }
static inline L3Expr *ex(Lo *L, L3Expr *a) { return l3_un(L->m, L3_EXP, a); }
static inline int local(Lo *L, L3Block *b, const char *nm, L3Type t, L3Expr *init)
{
    int v = l3_var(L->m, L->k, nm, t, false);
    l3_local(L->m, b, v, init);
    return v;
}
static inline void set(Lo *L, L3Block *b, int v, L3Expr *e) { l3_assign(L->m, b, v, e); }
static inline void accum(Lo *L, L3Block *b, int v, L3Expr *e) { l3_assign(L->m, b, v, add(L, V(L, v), e)); }

/* Loops over shape s without a parallel annotation (scatters). */
static inline L3Block *serial_over(Lo *L, L3Block *in, const Shape *s, L3Expr **c)
{
    static const char *nm[] = { "n", "c", "i", "j", "k" };
    L3Block *b = in;
    for (int i = 0; i < s->rank; i++) {
        int v;
        b = loop(L, b, i < 5 ? nm[i] : "a", s->d[i], &v, 0);
        c[i] = V(L, v);
    }
    return b;
}

/* Loops over shape s for a scatter that stays inside its (n, c) plane
 * (pooling and upsampling gradients): the planes are independent, so
 * n x c is one parallel loop and the spatial loops run in order inside it. */
static inline L3Block *plane_parallel_over(Lo *L, L3Block *in, const Shape *s, L3Expr **c)
{
    static const char *nm[] = { "i", "j", "k" };
    int nc;
    L3Block *b = loop(L, in, "nc", s->d[0] * s->d[1], &nc, L3_PARALLEL);
    c[0] = dv(L, V(L, nc), I(L, s->d[1]));
    c[1] = bin(L, L3_MOD, V(L, nc), I(L, s->d[1]));
    for (int i = 2; i < s->rank; i++) {
        int v;
        b = loop(L, b, i - 2 < 3 ? nm[i - 2] : "a", s->d[i], &v, 0);
        c[i] = V(L, v);
    }
    return b;
}

/* One parallel loop over every element of shape s (coordinates by division):
 * for a scatter whose sources write disjoint destinations (pooling windows
 * that do not overlap). */
static inline L3Block *flat_parallel_over(Lo *L, L3Block *in, const Shape *s, L3Expr **c)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++) n *= s->d[i];
    int v;
    L3Block *b = loop(L, in, "e", n, &v, L3_PARALLEL);
    int64_t inner = n;
    for (int i = 0; i < s->rank; i++) {
        inner /= s->d[i];
        L3Expr *q = inner > 1 ? dv(L, V(L, v), I(L, inner)) : V(L, v);
        c[i] = i > 0 ? bin(L, L3_MOD, q, I(L, s->d[i])) : q;
    }
    return b;
}

/* out[:] = 0 (before a scatter), in parallel. */
static inline void zero(Lo *L, int ob, int64_t n)
{
    int v;
    L3Block *b = loop(L, &L->k->body, "z", n, &v, L3_PARALLEL);
    l3_store(L->m, b, ob, V(L, v), F(L, 0), false);
}


/* gradients, losses and optimizer updates (lower_grad.c, lower_loss.c) */
bool lower_grad_node(Lo *L, char *err, size_t errlen);
bool lower_loss(Lo *L, char *err, size_t errlen);
bool lower_loss_grad(Lo *L);   /* a loss's gradient w.r.t. the logits */
bool lower_update(Lo *L, char *err, size_t errlen);

/* ---- blocked summation ---------------------------------------------------------------------------
 * A float32 sum of K terms added one after another rounds with an error that
 * grows with K (conv weight gradients, normalization statistics and losses
 * sum up to millions of terms).  sum_loops builds the nested loops
 * ext[0] x ... x ext[nl-1] (outermost first; loop variables into vars[],
 * names[] and annot[] name and annotate the loops) and gives each of the nacc
 * sums a partial-sum local per loop level: the partial of level l (l >= 1)
 * is declared inside loop l-1, accumulates over loops l .. nl-1 and is added
 * into the level above right after loop l.  The error then grows with about
 * ext[0] + ... + ext[nl-1] instead of their product.  acc[] holds the
 * outermost sums (locals already declared in `in`); on return it names the
 * innermost partials: accumulate into those in the returned block.  The
 * order depends on the shapes alone, so the result is the same for any
 * number of threads.  Scalar locals only: no scratch memory for the memory
 * planner to know about. */
#define SUM_MAX_ACC 4
static inline L3Block *sum_loops(Lo *L, L3Block *in, int nl, const int64_t *ext, const char *const *names,
                                 const unsigned *annot, int *vars, int nacc, int *acc)
{
    L3Block *b = in;
    for (int l = 0; l < nl; l++) {
        int part[SUM_MAX_ACC];
        bool split = l > 0 && ext[l - 1] > 1 && nacc > 0;
        if (split)
            for (int a = 0; a < nacc; a++) part[a] = local(L, b, "part", L3_F32, F(L, 0));
        L3Block *body = loop(L, b, names[l], ext[l], &vars[l], annot ? annot[l] : 0);
        if (split)
            for (int a = 0; a < nacc; a++) {
                accum(L, b, acc[a], V(L, part[a]));   /* after loop l */
                acc[a] = part[a];
            }
        b = body;
    }
    return b;
}

/* The levels of a sum over the spatial positions of shape s (axes 2 ..),
 * preceded by n when with_n: extents into ext[], the innermost loop
 * vectorized; returns the number of levels. */
static inline int sum_levels(const Shape *s, bool with_n, int64_t *ext, const char **names, unsigned *annot)
{
    static const char *nm[] = { "n", "s0", "s1", "s2", "s3", "s4" };
    int nl = 0;
    if (with_n) ext[nl] = s->d[0], names[nl] = nm[0], annot[nl++] = 0;
    for (int i = 2; i < s->rank; i++) ext[nl] = s->d[i], names[nl] = nm[i - 1], annot[nl++] = 0;
    if (nl == 0) ext[nl] = 1, names[nl] = "s", annot[nl++] = 0;
    annot[nl - 1] = L3_VECTORIZE;
    return nl;
}

/* The flat spatial index of the sum_levels loops (vars after n when with_n). */
static inline L3Expr *sum_spatial(Lo *L, const Shape *s, bool with_n, const int *vars)
{
    int off = with_n ? 1 : 0;
    if (s->rank <= 2) return I(L, 0);
    L3Expr *p = V(L, vars[off]);
    for (int i = 3; i < s->rank; i++) p = add(L, mul(L, p, I(L, s->d[i])), V(L, vars[off + i - 2]));
    return p;
}

/* The flat index in s of element (n, c, spatial) under the sum_levels loops
 * of a normalization's sums: n is vars[0] when with_n (batchnorm), else the
 * variable n_var (instancenorm's per-sample loop); c is c_var. */
static inline L3Expr *sum_element(Lo *L, const Shape *s, bool with_n, const int *vars, int n_var, int c_var)
{
    int64_t sp = 1;
    for (int i = 2; i < s->rank; i++) sp *= s->d[i];
    L3Expr *n = V(L, with_n ? vars[0] : n_var);
    return add(L, mul(L, add(L, mul(L, n, I(L, s->d[1])), V(L, c_var)), I(L, sp)), sum_spatial(L, s, with_n, vars));
}

#endif
