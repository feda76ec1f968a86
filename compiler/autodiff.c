/* autodiff.c — reverse-mode differentiation as a graph transformation.
 *
 * The training step stays one L1 graph: the forward nodes, then, in reverse
 * order of the forward nodes, the nodes of the backward pass.  For a forward
 * node n with output y and operands x_k (inputs, then parameters), the
 * gradient of operand k is one `grad` node
 *
 *     d x_k = grad[n, k](dy, x_0 .. x_m, p_0 .. p_j, y)
 *
 * whose meaning is the vector-Jacobian product of n's op (the reference
 * formulas are in runtime/ref_backward.c, proven against PyTorch autograd).
 * A tensor read by several nodes gets the sum of their contributions through
 * `add` nodes.  Only what the loss needs is built: a tensor needs a gradient
 * when it lies on a path from a trainable, unfrozen parameter to the loss;
 * labels, images, buffers and frozen parameters get none (so a frozen
 * encoder costs no backward work — transfer learning with partial
 * adaptation).
 *
 * Later passes (fusion, memory planning, backends) see ordinary nodes; the
 * optimizer update will be appended the same way.
 */
#define _POSIX_C_SOURCE 200809L
#include "autodiff.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static char *joined(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = xmalloc(n);
    snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

/* grad[t] += contribution (an `add` node when t already has one). */
static void accumulate(Graph *g, int *grad, int t, int contrib, const Node *from)
{
    if (grad[t] < 0) {
        grad[t] = contrib;
        return;
    }
    OpAttrs at;
    op_default_attrs(OP_ADD, g->spatial_rank, &at);
    char *name = joined("grad.", g->tensors[t].name, ".sum");
    int out = graph_add_tensor(g, name, g->tensors[t].shape, DT_F32, TK_ACTIVATION);
    int in[2] = { grad[t], contrib };
    int node = graph_add_node(g, OP_ADD, name, in, 2, out, &at, from->loc);
    g->tensors[out].producer = node;
    free(name);
    grad[t] = out;
}

int autodiff(Graph *g, int loss_tensor)
{
    int nt0 = g->ntensors, nn0 = g->nnodes;
    bool *live = xcalloc((size_t)nt0, 1);     /* depends on a trainable parameter */
    bool *used = xcalloc((size_t)nt0, 1);     /* the loss depends on it */
    int *grad = xmalloc(sizeof(int) * (size_t)nt0);
    for (int t = 0; t < nt0; t++) grad[t] = -1;
    for (int i = 0; i < g->nparams; i++)
        if (g->params[i].trainable && !g->params[i].frozen) live[g->params[i].tensor] = true;
    for (int i = 0; i < nn0; i++) {
        const Node *n = &g->nodes[i];
        for (int k = 0; k < n->nin && !live[n->out]; k++) live[n->out] = live[n->in[k]];
        for (int k = 0; k < n->nparams && !live[n->out]; k++) live[n->out] = live[g->params[n->params[k]].tensor];
    }
    used[loss_tensor] = true;
    for (int i = nn0 - 1; i >= 0; i--) {
        const Node *n = &g->nodes[i];
        if (!used[n->out]) continue;
        for (int k = 0; k < n->nin; k++) used[n->in[k]] = true;
        for (int k = 0; k < n->nparams; k++) used[g->params[n->params[k]].tensor] = true;
    }

    /* the seed: d(loss)/d(loss) = 1 */
    OpAttrs at;
    op_default_attrs(OP_ONES, g->spatial_rank, &at);
    int seed = graph_add_tensor(g, "grad.loss", g->tensors[loss_tensor].shape, DT_F32, TK_ACTIVATION);
    int no_inputs[1] = { 0 };
    int seed_node = graph_add_node(g, OP_ONES, "grad.loss", no_inputs, 0, seed, &at, g->nodes[nn0 - 1].loc);
    g->tensors[seed].producer = seed_node;
    grad[loss_tensor] = seed;

    for (int i = nn0 - 1; i >= 0; i--) {
        Node n = g->nodes[i];            /* a copy: adding nodes may move the array */
        if (grad[n.out] < 0 || !live[n.out]) continue;
        int nops = n.nin + n.nparams;
        int *ins = xmalloc(sizeof(int) * (size_t)(nops + 2));
        int m = 0;
        ins[m++] = grad[n.out];
        for (int k = 0; k < n.nin; k++) ins[m++] = n.in[k];
        for (int k = 0; k < n.nparams; k++) ins[m++] = g->params[n.params[k]].tensor;
        ins[m++] = n.out;
        for (int k = 0; k < nops; k++) {
            int t = k < n.nin ? n.in[k] : g->params[n.params[k - n.nin]].tensor;
            if (!live[t] || !used[t] || g->tensors[t].dtype != DT_F32) continue;
            OpAttrs ga = n.at;
            ga.grad_node = i;
            ga.grad_operand = k;
            /* grad.enc.0.conv.weight for a parameter; grad.enc.0.conv.input0 for an input */
            char suffix[32];
            snprintf(suffix, sizeof suffix, ".input%d", k);
            char *full = k < n.nin ? joined("grad.", n.name, suffix) : joined("grad.", g->tensors[t].name, "");
            int out = graph_add_tensor(g, full, g->tensors[t].shape, DT_F32, TK_ACTIVATION);
            int node = graph_add_node(g, OP_GRAD, full, ins, m, out, &ga, n.loc);
            g->tensors[out].producer = node;
            free(full);
            accumulate(g, grad, t, out, &n);
        }
        free(ins);
    }
    for (int i = 0; i < g->nparams; i++) {
        Param *p = &g->params[i];
        p->grad = p->trainable && !p->frozen ? grad[p->tensor] : -1;
    }
    free(live);
    free(used);
    free(grad);
    return g->nnodes - nn0;
}

static int hyper_input(Graph *g, const char *name)
{
    Shape scalar = { 0 };
    int t = graph_add_tensor(g, name, scalar, DT_F32, TK_HYPER);
    graph_add_input(g, name, t, NO_LOC);
    return t;
}

int append_optimizer(Graph *g, const char *name, const double *num)
{
    bool sgd = strcmp(name, "sgd") == 0, adam = strcmp(name, "adam") == 0, adamw = strcmp(name, "adamw") == 0;
    if (!sgd && !adam && !adamw) return -1;
    OpKind op = sgd ? OP_SGD_UPDATE : OP_ADAM_UPDATE;
    OpAttrs at;
    op_default_attrs(op, g->spatial_rank, &at);
    if (sgd) {
        at.opt_momentum = num[1];
        at.opt_nesterov = num[2] != 0;
        at.opt_weight_decay = num[3];
    } else {
        at.opt_beta1 = num[1];
        at.opt_beta2 = num[2];
        at.opt_eps = num[3];
        at.opt_weight_decay = num[4];
        at.opt_decoupled = adamw;
    }
    int lr = hyper_input(g, "train.lr"), step = hyper_input(g, "train.step");
    int count = 0, np = g->nparams;
    for (int i = 0; i < np; i++) {
        Param p = g->params[i];   /* a copy: adding parameters may move the array */
        if (p.grad < 0) continue;
        int in[4] = { p.tensor, p.grad, lr, step };
        char *nodename = joined("update.", p.name, "");
        int out = graph_add_tensor(g, nodename, g->tensors[p.tensor].shape, DT_F32, TK_ACTIVATION);
        int node = graph_add_node(g, op, nodename, in, 4, out, &at, NO_LOC);
        g->tensors[out].producer = node;
        const char *states[2] = { sgd ? "momentum_buffer" : "exp_avg", "exp_avg_sq" };
        int nstates = sgd ? (at.opt_momentum != 0) : 2;
        for (int k = 0; k < nstates; k++) {
            char *sn = joined(p.name, ".", states[k]);
            ParamSpec ps = { .suffix = sn, .shape = g->tensors[p.tensor].shape, .trainable = false };
            ps.init.kind = INIT_ZEROS;
            graph_add_param(g, node, &ps);
            free(sn);
        }
        free(nodename);
        count++;
    }
    return count;
}
