/* fuse.c — grouping L1 nodes into kernels; see fuse.h.
 *
 * One pass over the nodes in topological order.  Each node gets an
 * *effective kind* (its op's FusionKind, refined for `grad` nodes, training
 * batchnorm, linear upsample and the optimizer updates), and the row of
 * `rules[]` for that kind decides what happens to it:
 *
 *   - inlined (movement): no kernel; index arithmetic in every consumer
 *     kernel, unless its value must exist in memory (a graph output or loss,
 *     or nothing reads it): then a KK_COPY kernel;
 *   - joins (elementwise / broadcast): fuses into the kernel of one of its
 *     producers, if that kernel takes an epilogue, the shapes match (the
 *     consumer runs at the producer's index) and every other value it reads
 *     is computed by an earlier kernel; otherwise it starts an elementwise
 *     kernel;
 *   - horizontal (updates): all nodes of the same update op share a kernel;
 *   - anything else (conv, reduce, opaque) anchors a new kernel.
 *
 * Kernels are numbered in the order they are created, and a node may only
 * join a kernel whose external inputs all come from lower-numbered kernels,
 * so creation order is a topological execution order.
 *
 * A producer whose output several nodes read is still fused into a
 * consumer; the value is then materialized because another kernel reads it
 * (the choice documented in docs/architecture.md, "Fusion").
 *
 * `grad` nodes read every declared input (dy, the forward inputs, parameters
 * and output); only dy is a fusion candidate: the rest are saved forward
 * values.
 */
#include "fuse.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef enum {
    EK_ELEMWISE, EK_BROADCAST, EK_MOVEMENT, EK_REDUCE, EK_CONV, EK_UPDATE, EK_OPAQUE, EK_COUNT
} EffKind;

typedef struct {
    const char *name;
    KernelKind kernel;   /* the kernel it anchors when it starts one */
    bool joins;          /* fuses into a producer's kernel (elementwise chain, epilogue) */
    bool epilogue;       /* a kernel it anchors absorbs elementwise / broadcast consumers */
    bool inlined;        /* no kernel of its own: index arithmetic in each consumer kernel */
    bool horizontal;     /* every node of the same op in one kernel */
    const char *refuse;  /* why a producer was not fused into it (non-joining kinds) */
} FuseRule;

/* The fusion rules, keyed by effective kind (docs/architecture.md, "Fusion"). */
static const FuseRule rules[EK_COUNT] = {
    /*                name           kernel       joins  epilog inlined horiz  refusal */
    [EK_ELEMWISE]  = { "elementwise", KK_ELEMWISE, true,  true,  false, false, NULL },
    [EK_BROADCAST] = { "broadcast",   KK_ELEMWISE, true,  true,  false, false, NULL },
    [EK_MOVEMENT]  = { "movement",    KK_COPY,     false, false, true,  false, "movement op is inlined into its consumers" },
    [EK_REDUCE]    = { "reduce",      KK_REDUCE,   false, true,  false, false, "consumer is a reduction" },
    [EK_CONV]      = { "conv",        KK_CONV,     false, true,  false, false, "conv anchors its own kernel" },
    [EK_UPDATE]    = { "update",      KK_UPDATE,   false, false, false, true,  "optimizer updates fuse horizontally" },
    [EK_OPAQUE]    = { "opaque",      KK_REDUCE,   false, false, false, false, "consumer is opaque" },
};

const char *kernel_kind_name(KernelKind k)
{
    switch (k) {
    case KK_CONV: return "conv";
    case KK_REDUCE: return "reduce";
    case KK_ELEMWISE: return "elemwise";
    case KK_COPY: return "copy";
    case KK_UPDATE: return "update";
    }
    return "?";
}

typedef struct {
    KernelKind kind;
    int anchor;
    bool epilogue;        /* takes elementwise consumers */
    OpKind op;            /* the anchor's op (horizontal kernels: the update op) */
    const char *reason;   /* KK_COPY */
    int *nodes; int n, cap;
} Group;

typedef struct {
    const Graph *g;
    bool training;
    EffKind *ek;          /* per node */
    bool *inl;            /* per node: inlined movement op */
    int *grp;             /* per node: its group, -1 when inlined */
    int *nreaders;        /* per tensor: how many nodes read it */
    bool *port;           /* per tensor: a graph output or a loss */
    Group *groups; int ngroups, capgroups;
    int *nstamp; int ncur;          /* per node: visit marks for movement walks */
    int *tstamp; int tcur;          /* per tensor: dedup marks */
    int *stack; int nstack, capstack;
    int *srcs; int nsrcs, capsrcs;  /* result of collect_sources */
    FusionRefusal *ref; int nref, capref;
} Fuser;

static int node_nreads(const Node *n) { return n->nin + n->nparams; }

static int node_read(const Graph *g, const Node *n, int k)
{
    return k < n->nin ? n->in[k] : g->params[n->params[k - n->nin]].tensor;
}

static bool is_update(OpKind op) { return op == OP_SGD_UPDATE || op == OP_ADAM_UPDATE; }

static EffKind op_effective_kind(const Fuser *F, int i)
{
    const Graph *g = F->g;
    const Node *n = &g->nodes[i];
    if (is_update(n->op)) return EK_UPDATE;
    if (n->op == OP_ONES) return EK_ELEMWISE;
    if (n->op == OP_BATCHNORM) return F->training ? EK_REDUCE : EK_BROADCAST;   /* inference: folded affine */
    if (n->op == OP_UPSAMPLE && n->at.mode != 0) return EK_REDUCE;              /* linear: a gather */
    if (n->op == OP_GRAD) {
        int f = n->at.grad_node, k = n->at.grad_operand;
        if (f < 0 || f >= i || k < 0) return EK_OPAQUE;
        const Node *fw = &g->nodes[f];
        if (k >= fw->nin) return EK_REDUCE;      /* any parameter: a reduction over the batch */
        switch (F->ek[f]) {
        case EK_CONV: return EK_CONV;            /* a transposed convolution */
        case EK_ELEMWISE:
        case EK_BROADCAST: {
            /* the gradient of a broadcast operand sums over the broadcast axes */
            if (n->nin < 1 || !shape_equal(&g->tensors[n->out].shape, &g->tensors[n->in[0]].shape)) return EK_REDUCE;
            return EK_ELEMWISE;
        }
        case EK_MOVEMENT:
            /* crop <-> pad, concat -> slice; nearest upsample's gradient sums each block,
             * and reflect/replicate padding's gradient adds border values twice */
            return fw->op == OP_UPSAMPLE || (fw->op == OP_PAD && fw->at.mode != 0) ? EK_REDUCE : EK_MOVEMENT;
        case EK_REDUCE: return EK_REDUCE;
        default: return EK_OPAQUE;
        }
    }
    if ((unsigned)n->op >= OP_COUNT) return EK_OPAQUE;
    switch (op_table[n->op].kind) {
    case FK_ELEMWISE: return EK_ELEMWISE;
    case FK_BROADCAST: return EK_BROADCAST;
    case FK_INJECTIVE: return EK_MOVEMENT;
    case FK_REDUCE: return EK_REDUCE;
    case FK_CONV: return EK_CONV;
    case FK_OPAQUE: break;
    }
    return EK_OPAQUE;
}

static int new_group(Fuser *F, KernelKind kind, int anchor, bool epilogue, const char *reason)
{
    GROW(F->groups, F->ngroups, F->capgroups);
    Group *G = &F->groups[F->ngroups];
    memset(G, 0, sizeof *G);
    G->kind = kind;
    G->anchor = anchor;
    G->epilogue = epilogue;
    G->op = F->g->nodes[anchor].op;
    G->reason = reason;
    return F->ngroups++;
}

static void group_add(Fuser *F, int gi, int node)
{
    Group *G = &F->groups[gi];
    GROW(G->nodes, G->n, G->cap);
    G->nodes[G->n++] = node;
    F->grp[node] = gi;
}

static void refuse(Fuser *F, int producer, int consumer, const char *reason)
{
    GROW(F->ref, F->nref, F->capref);
    F->ref[F->nref++] = (FusionRefusal){ producer, consumer, reason };
}

/* The materialized tensors node i reads through inlined movement ops
 * (walking chains of them), into F->srcs.  With `direct`, its direct reads
 * that are not inlined movement outputs come first. */
static void collect_sources(Fuser *F, int i, bool direct)
{
    const Graph *g = F->g;
    F->nsrcs = 0;
    F->nstack = 0;
    F->ncur++;
    F->tcur++;
    GROW(F->stack, F->nstack, F->capstack);
    F->stack[F->nstack++] = i;
    F->nstamp[i] = F->ncur;
    while (F->nstack) {
        int m = F->stack[--F->nstack];
        const Node *n = &g->nodes[m];
        for (int k = 0; k < node_nreads(n); k++) {
            int t = node_read(g, n, k);
            int p = g->tensors[t].producer;
            if (p >= 0 && F->inl[p]) {
                if (F->nstamp[p] != F->ncur) {
                    F->nstamp[p] = F->ncur;
                    GROW(F->stack, F->nstack, F->capstack);
                    F->stack[F->nstack++] = p;
                }
            } else if ((m != i || direct) && F->tstamp[t] != F->tcur) {
                F->tstamp[t] = F->tcur;
                GROW(F->srcs, F->nsrcs, F->capsrcs);
                F->srcs[F->nsrcs++] = t;
            }
        }
    }
}

/* May node i join group gi?  NULL if yes, else why not.  Every value it
 * reads from outside gi must come from an earlier group (so that group
 * order stays a topological order), and a value of gi itself may only be
 * read directly, at the same index. */
static const char *join_check(Fuser *F, int i, int gi)
{
    const Graph *g = F->g;
    const Node *n = &g->nodes[i];
    const Shape *os = &g->tensors[n->out].shape;
    for (int k = 0; k < node_nreads(n); k++) {
        int t = node_read(g, n, k);
        int p = g->tensors[t].producer;
        if (p < 0 || F->inl[p]) continue;
        if (F->grp[p] == gi && !shape_equal(&g->tensors[t].shape, os))
            return "reads a differently shaped value of the same kernel";
        if (F->grp[p] > gi) return "another operand is computed by a later kernel";
    }
    collect_sources(F, i, false);
    for (int k = 0; k < F->nsrcs; k++) {
        int p = g->tensors[F->srcs[k]].producer;
        if (p < 0) continue;
        if (F->grp[p] == gi) return "reads its own kernel's output through a movement op";
        if (F->grp[p] > gi) return "another operand is computed by a later kernel";
    }
    return NULL;
}

/* Why producer p is not fused into the non-joining node i. */
static const char *anchor_refusal(const Fuser *F, int i)
{
    const Node *n = &F->g->nodes[i];
    if (n->op == OP_BATCHNORM && F->training) return "batchnorm uses batch statistics in training";
    if (n->op == OP_UPSAMPLE) return "linear upsample is a gather kernel";
    if (n->op == OP_GRAD && n->at.grad_node >= 0 && n->at.grad_node < i &&
        n->at.grad_operand >= F->g->nodes[n->at.grad_node].nin)
        return "a weight gradient is a reduction";
    return rules[F->ek[i]].refuse;
}

/* Candidate producers of node i: the non-inlined producers of its fusion
 * inputs (dy only for a grad node), each once, latest kernel first. */
static int candidates(const Fuser *F, int i, int *out, int cap)
{
    const Graph *g = F->g;
    const Node *n = &g->nodes[i];
    int nin = n->op == OP_GRAD ? (n->nin > 0 ? 1 : 0) : n->nin;
    int m = 0;
    for (int k = 0; k < nin && m < cap; k++) {
        int p = g->tensors[n->in[k]].producer;
        if (p < 0 || p >= i || F->inl[p]) continue;
        bool seen = false;
        for (int j = 0; j < m; j++) seen = seen || out[j] == p;
        if (seen) continue;
        int j = m++;
        while (j > 0 && F->grp[out[j - 1]] < F->grp[p]) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = p;
    }
    return m;
}

static bool graph_valid(const Graph *g)
{
    if (!g || g->nnodes < 0 || g->ntensors < 0) return false;
    for (int i = 0; i < g->nnodes; i++) {
        const Node *n = &g->nodes[i];
        if (n->out < 0 || n->out >= g->ntensors || n->nin < 0 || n->nparams < 0 || n->nparams > NODE_MAX_PARAMS)
            return false;
        if (g->tensors[n->out].producer != i) return false;
        for (int k = 0; k < n->nin; k++)
            if (n->in[k] < 0 || n->in[k] >= g->ntensors) return false;
        for (int k = 0; k < n->nparams; k++)
            if (n->params[k] < 0 || n->params[k] >= g->nparams) return false;
    }
    for (int t = 0; t < g->ntensors; t++) {
        int p = g->tensors[t].producer;
        if (p >= g->nnodes || (p >= 0 && g->nodes[p].out != t)) return false;
    }
    for (int k = 0; k < g->nparams; k++)
        if (g->params[k].tensor < 0 || g->params[k].tensor >= g->ntensors) return false;
    for (int k = 0; k < g->noutputs; k++)
        if (g->outputs[k].tensor < 0 || g->outputs[k].tensor >= g->ntensors) return false;
    for (int k = 0; k < g->nlosses; k++)
        if (g->losses[k].tensor < 0 || g->losses[k].tensor >= g->ntensors) return false;
    /* topological: every node reads values produced before it */
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < node_nreads(&g->nodes[i]); k++)
            if (g->tensors[node_read(g, &g->nodes[i], k)].producer >= i) return false;
    return true;
}

/* Anchors whose lowering scatters (accumulates into its output, or writes
 * it in passes) cannot apply an epilogue at a single store: the gradients
 * of pools, upsampling, reflect/replicate padding and of the losses. */
static bool scatter_anchor(const Graph *g, int i)
{
    const Node *n = &g->nodes[i];
    if (n->op != OP_GRAD || n->at.grad_node < 0 || n->at.grad_node >= i) return false;
    const Node *f = &g->nodes[n->at.grad_node];
    switch (f->op) {
    case OP_MAXPOOL: case OP_AVGPOOL: case OP_UPSAMPLE: case OP_CE: case OP_DICE: case OP_FOCAL: return true;
    case OP_PAD: return f->at.mode != 0;
    default: return false;
    }
}

static void group_nodes(Fuser *F)
{
    const Graph *g = F->g;
    int cand[64];
    const char *why[64];
    for (int i = 0; i < g->nnodes; i++) {
        const Node *n = &g->nodes[i];
        EffKind e = F->ek[i] = op_effective_kind(F, i);
        const FuseRule *r = &rules[e];
        if (r->inlined) {
            const char *reason = NULL;
            if (F->port[n->out]) reason = "a graph output or loss";
            else if (F->nreaders[n->out] == 0) reason = "no consumer";
            if (!reason) {
                F->inl[i] = true;
                F->grp[i] = -1;
            } else {
                group_add(F, new_group(F, KK_COPY, i, false, reason), i);
            }
            continue;
        }
        if (r->horizontal) {
            int gi = -1;
            for (int k = F->ngroups - 1; k >= 0 && gi < 0; k--)
                if (F->groups[k].kind == r->kernel && F->groups[k].op == n->op) gi = k;
            if (gi < 0 || join_check(F, i, gi)) gi = new_group(F, r->kernel, i, false, NULL);
            group_add(F, gi, i);
            continue;
        }
        int nc = candidates(F, i, cand, 64);
        if (!r->joins) {
            group_add(F, new_group(F, r->kernel, i, r->epilogue && !scatter_anchor(g, i), NULL), i);
            for (int k = 0; k < nc; k++) refuse(F, cand[k], i, anchor_refusal(F, i));
            continue;
        }
        int chosen = -1;
        for (int k = 0; k < nc; k++) {
            int p = cand[k], gi = F->grp[p];
            const Group *G = &F->groups[gi];
            why[k] = NULL;
            if (chosen >= 0) continue;
            if (!G->epilogue)
                why[k] = G->kind == KK_UPDATE ? "producer is an optimizer update"
                       : G->kind == KK_COPY ? "producer is a materialized copy"
                       : "producer's kernel takes no epilogue (a scatter gradient or an opaque op)";
            else if (!shape_equal(&g->tensors[n->out].shape, &g->tensors[g->nodes[p].out].shape))
                why[k] = G->kind == KK_REDUCE ? "a reduction feeding a broadcast ends a kernel"
                                              : "consumer is broadcast against the producer";
            else
                why[k] = join_check(F, i, gi);
            if (!why[k]) chosen = gi;
        }
        if (chosen < 0) chosen = new_group(F, rules[e].kernel, i, rules[e].epilogue, NULL);
        group_add(F, chosen, i);
        for (int k = 0; k < nc; k++)
            if (F->grp[cand[k]] != chosen)
                refuse(F, cand[k], i, why[k] ? why[k] : "fused into the kernel of another operand");
    }
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Kernel lists from the groups: nodes (members and the movement ops they
 * inline), then materialization, then ins and outs. */
static void build_kernels(Fuser *F, FusionPlan *fp)
{
    const Graph *g = F->g;
    fp->nkernels = F->ngroups;
    fp->kernels = xcalloc((size_t)F->ngroups, sizeof *fp->kernels);
    for (int i = 0; i < g->nnodes; i++) fp->kernel_of_node[i] = -1;
    for (int k = 0; k < F->ngroups; k++) {
        Group *G = &F->groups[k];
        Kernel *K = &fp->kernels[k];
        K->kind = G->kind;
        K->anchor = G->anchor;
        K->reason = G->reason;
        int n = 0, cap = G->n;
        int *nodes = xmalloc(sizeof(int) * (size_t)(cap ? cap : 1));
        F->ncur++;
        for (int j = 0; j < G->n; j++) F->nstamp[G->nodes[j]] = F->ncur;
        for (int j = 0; j < G->n; j++) nodes[n++] = G->nodes[j];
        /* the movement ops each member reads through, transitively */
        F->nstack = 0;
        for (int j = 0; j < G->n; j++) {
            GROW(F->stack, F->nstack, F->capstack);
            F->stack[F->nstack++] = G->nodes[j];
        }
        while (F->nstack) {
            const Node *nd = &g->nodes[F->stack[--F->nstack]];
            for (int r = 0; r < node_nreads(nd); r++) {
                int p = g->tensors[node_read(g, nd, r)].producer;
                if (p < 0 || !F->inl[p] || F->nstamp[p] == F->ncur) continue;
                F->nstamp[p] = F->ncur;
                GROW(nodes, n, cap);
                nodes[n++] = p;
                GROW(F->stack, F->nstack, F->capstack);
                F->stack[F->nstack++] = p;
            }
        }
        qsort(nodes, (size_t)n, sizeof *nodes, cmp_int);
        K->nodes = nodes;
        K->nnodes = n;
        for (int j = 0; j < n; j++)
            if (fp->kernel_of_node[nodes[j]] < 0) fp->kernel_of_node[nodes[j]] = k;
    }

    bool *mat = fp->materialized;
    for (int t = 0; t < g->ntensors; t++)
        if (g->tensors[t].producer < 0) mat[t] = true;                    /* inputs, labels, hypers */
    for (int i = 0; i < g->nparams; i++) mat[g->params[i].tensor] = true; /* parameters, optimizer state */
    for (int i = 0; i < g->noutputs; i++) mat[g->outputs[i].tensor] = true;
    for (int i = 0; i < g->nlosses; i++) mat[g->losses[i].tensor] = true;
    for (int i = 0; i < g->nnodes; i++) {
        const Node *nd = &g->nodes[i];
        if (is_update(nd->op)) mat[nd->out] = true;
        /* a value nothing reads is the kernel's result */
        if (!F->inl[i] && F->nreaders[nd->out] == 0) mat[nd->out] = true;
    }
    /* read by a kernel that does not compute it */
    int *in_kernel = xmalloc(sizeof(int) * (size_t)(g->nnodes ? g->nnodes : 1));
    for (int i = 0; i < g->nnodes; i++) in_kernel[i] = -1;
    for (int k = 0; k < fp->nkernels; k++) {
        const Kernel *K = &fp->kernels[k];
        for (int j = 0; j < K->nnodes; j++) in_kernel[K->nodes[j]] = k;
        for (int j = 0; j < K->nnodes; j++) {
            const Node *nd = &g->nodes[K->nodes[j]];
            for (int r = 0; r < node_nreads(nd); r++) {
                int t = node_read(g, nd, r);
                int p = g->tensors[t].producer;
                if (p < 0 || in_kernel[p] != k) mat[t] = true;
            }
        }
    }
    for (int k = 0; k < fp->nkernels; k++) {
        Kernel *K = &fp->kernels[k];
        for (int j = 0; j < K->nnodes; j++) in_kernel[K->nodes[j]] = k;
        int nin = 0, capin = 0, nout = 0, capout = 0;
        int *ins = NULL, *outs = NULL;
        F->tcur++;
        for (int j = 0; j < K->nnodes; j++) {
            int i = K->nodes[j];
            const Node *nd = &g->nodes[i];
            for (int r = 0; r < node_nreads(nd); r++) {
                int t = node_read(g, nd, r);
                int p = g->tensors[t].producer;
                if (!mat[t] || (p >= 0 && in_kernel[p] == k) || F->tstamp[t] == F->tcur) continue;
                F->tstamp[t] = F->tcur;
                GROW(ins, nin, capin);
                ins[nin++] = t;
            }
            if (mat[nd->out] && (!F->inl[i] || K->kind == KK_COPY)) {
                GROW(outs, nout, capout);
                outs[nout++] = nd->out;
            }
        }
        K->ins = ins;
        K->nins = nin;
        K->outs = outs;
        K->nouts = nout;
    }
    free(in_kernel);
}

FusionPlan *fuse_graph(const Graph *g, bool training)
{
    if (!graph_valid(g)) return NULL;
    size_t nn = (size_t)(g->nnodes ? g->nnodes : 1), nt = (size_t)(g->ntensors ? g->ntensors : 1);
    Fuser F = { .g = g, .training = training };
    F.ek = xcalloc(nn, sizeof *F.ek);
    F.inl = xcalloc(nn, sizeof *F.inl);
    F.grp = xcalloc(nn, sizeof *F.grp);
    F.nstamp = xcalloc(nn, sizeof *F.nstamp);
    F.nreaders = xcalloc(nt, sizeof *F.nreaders);
    F.port = xcalloc(nt, sizeof *F.port);
    F.tstamp = xcalloc(nt, sizeof *F.tstamp);
    for (int i = 0; i < g->noutputs; i++) F.port[g->outputs[i].tensor] = true;
    for (int i = 0; i < g->nlosses; i++) F.port[g->losses[i].tensor] = true;
    for (int i = 0; i < g->nnodes; i++) {   /* readers: nodes, each counted once per tensor */
        const Node *nd = &g->nodes[i];
        F.tcur++;
        for (int r = 0; r < node_nreads(nd); r++) {
            int t = node_read(g, nd, r);
            if (F.tstamp[t] == F.tcur) continue;
            F.tstamp[t] = F.tcur;
            F.nreaders[t]++;
        }
    }
    group_nodes(&F);

    FusionPlan *fp = xcalloc(1, sizeof *fp);
    fp->kernel_of_node = xmalloc(sizeof(int) * nn);
    fp->materialized = xcalloc(nt, sizeof(bool));
    fp->inlined = xcalloc(nn, sizeof(bool));
    memcpy(fp->inlined, F.inl, sizeof(bool) * (size_t)g->nnodes);
    build_kernels(&F, fp);
    fp->refused = F.ref;
    fp->nrefused = F.nref;

    for (int k = 0; k < F.ngroups; k++) free(F.groups[k].nodes);
    free(F.groups);
    free(F.ek);
    free(F.inl);
    free(F.grp);
    free(F.nstamp);
    free(F.nreaders);
    free(F.port);
    free(F.tstamp);
    free(F.stack);
    free(F.srcs);
    return fp;
}

void fusion_plan_free(FusionPlan *fp)
{
    if (!fp) return;
    for (int k = 0; k < fp->nkernels; k++) {
        free(fp->kernels[k].nodes);
        free(fp->kernels[k].ins);
        free(fp->kernels[k].outs);
    }
    free(fp->kernels);
    free(fp->kernel_of_node);
    free(fp->materialized);
    free(fp->inlined);
    free(fp->refused);
    free(fp);
}

/* `name` without the dotted prefix it shares with `base`
 * ("enc.0.cbr.relu" after "enc.0.cbr.conv" is "relu"). */
static const char *relative(const char *name, const char *base)
{
    size_t cut = 0;
    for (size_t i = 0; name[i] && name[i] == base[i]; i++)
        if (name[i] == '.') cut = i + 1;
    return name + cut;
}

/* Append to buf (capacity n, used *len) unless it would pass `limit`
 * characters; returns false when it did not fit. */
static bool append(char *buf, size_t n, size_t *len, size_t limit, const char *s)
{
    size_t l = strlen(s);
    if (*len + l > limit || *len + l >= n) return false;
    memcpy(buf + *len, s, l + 1);
    *len += l;
    return true;
}

#define COLUMN 64

static void names_column(char *buf, size_t n, const Graph *g, const int *items, int count, bool tensors,
                         const char *first_sep)
{
    size_t len = 0;
    buf[0] = 0;
    const char *base = NULL;
    for (int j = 0; j < count; j++) {
        const char *name = tensors ? g->tensors[items[j]].name : g->nodes[items[j]].name;
        const char *shown = base ? relative(name, base) : name;
        const char *sep = j == 0 ? "" : j == 1 ? first_sep : ", ";
        size_t save = len;
        if (j > 0 && !(append(buf, n, &len, COLUMN, sep) && append(buf, n, &len, COLUMN, shown))) {
            len = save;
            buf[len] = 0;
            char more[32];
            snprintf(more, sizeof more, "%s(+%d more)", sep, count - j);
            append(buf, n, &len, n - 1, more);
            return;
        }
        if (j == 0) append(buf, n, &len, n - 1, name);
        if (!base) base = name;
    }
}

void fusion_print(FILE *out, const Graph *g, const FusionPlan *fp)
{
    if (!fp) {
        fputs("\nfusion: not available for this graph\n", out);
        return;
    }
    fputs("\nfusion: kernels in execution order\n\n", out);
    fprintf(out, "%5s  %-9s %-*s  %s\n", "#", "kind", COLUMN, "nodes (anchor first)", "writes");
    char nodes[512], writes[512];
    int mat = 0, ntemp = 0, inl = 0;
    for (int i = 0; fp->inlined && i < g->nnodes; i++) inl += fp->inlined[i];
    for (int k = 0; k < fp->nkernels; k++) {
        const Kernel *K = &fp->kernels[k];
        int *order = xmalloc(sizeof(int) * (size_t)(K->nnodes ? K->nnodes : 1));
        int m = 0;
        order[m++] = K->anchor;
        for (int j = 0; j < K->nnodes; j++)
            if (K->nodes[j] != K->anchor) order[m++] = K->nodes[j];
        names_column(nodes, sizeof nodes, g, order, m, false, " + ");
        free(order);
        names_column(writes, sizeof writes, g, K->outs, K->nouts, true, ", ");
        fprintf(out, "%5d  %-9s %-*s  %s", k, kernel_kind_name(K->kind), COLUMN, nodes, K->nouts ? writes : "-");
        if (K->reason) fprintf(out, "  (%s)", K->reason);
        fputc('\n', out);
    }
    for (int t = 0; t < g->ntensors; t++) {
        if (g->tensors[t].producer < 0) continue;
        if (fp->materialized[t]) mat++;
        else ntemp++;
    }
    if (fp->nrefused) {
        fputs("\nrefused fusions:\n", out);
        for (int k = 0; k < fp->nrefused; k++)
            fprintf(out, "  %s -> %s: %s\n", g->nodes[fp->refused[k].producer].name,
                    g->nodes[fp->refused[k].consumer].name, fp->refused[k].reason);
    }
    fprintf(out, "\n%d kernels for %d nodes (%d movement ops inlined; %d computed tensors materialized, "
                 "%d kept inside kernels; %d refused fusions)\n",
            fp->nkernels, g->nnodes, inl, mat, ntemp, fp->nrefused);
}
