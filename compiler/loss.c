/* loss.c — expanding a train block's loss: the `loss` expression evaluated
 * over the net's outputs, a `labels` input (and a `weightmap` input when
 * the loss names one), with deep supervision applying it to several heads.
 * The loss nodes are ordinary graph nodes named loss.* (expand.c builds
 * the net itself; eval.c knows the loss builtins such as dice_ce).
 */
#define _POSIX_C_SOURCE 200809L
#include "sema_internal.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Evaluate a train block's loss expression over a graph's outputs and a
 * `labels` input, appending the loss nodes (named loss.*). */
/* Deep supervision: `deep_supervision logits, aux1, aux2` evaluates the
 * loss once per listed output, with the first output's name bound to that
 * head, and sums the results with weights: given (`0.5 * aux1`) or
 * nnU-Net's (1/2^i, the lowest resolution 0, normalized to sum 1).  A head
 * of weight 0 costs nothing.  Returns the summed loss or V_ERROR. */
typedef struct { const char *name; int tensor; double w; SrcLoc loc; } DsHead;

static Value deep_supervised_loss(Sema *S, const Ast *loss, const Ast *ds)
{
    int nh = ds->list.n, nexplicit = 0;
    DsHead *h = sema_alloc(S, sizeof *h * (size_t)(nh > 0 ? nh : 1));
    for (int i = 0; i < nh; i++) {
        const Ast *it = ds->list.items[i], *name = it;
        h[i].w = -1;
        h[i].loc = it->loc;
        if (it->kind == A_BINOP && it->op == AOP_MUL && (it->a->kind == A_INT || it->a->kind == A_FLOAT)) {
            h[i].w = it->a->kind == A_INT ? (double)it->a->ival : it->a->fval;
            name = it->b;
            nexplicit++;
        }
        if (name->kind != A_IDENT) {
            diag_error(S->diag, it->loc, "deep_supervision lists the net's outputs, optionally weighted: "
                       "logits, 0.5 * aux");
            return value_error();
        }
        Binding *b = env_lookup(S, name->str);
        int t = -1;
        for (int k = 0; k < S->g->noutputs; k++)
            if (strcmp(S->g->outputs[k].name, name->str) == 0) t = S->g->outputs[k].tensor;
        if (!b || t < 0) {
            Suggest sg;
            suggest_init(&sg, name->str);
            for (int k = 0; k < S->g->noutputs; k++) suggest_offer(&sg, S->g->outputs[k].name);
            diag_error(S->diag, name->loc, "`%s` is not an output of net %s%s", name->str, S->g->net_name,
                       suggest_hint(&sg));
            return value_error();
        }
        for (int k = 0; k < i; k++)
            if (strcmp(h[k].name, name->str) == 0) {
                diag_error(S->diag, name->loc, "output `%s` is listed twice", name->str);
                return value_error();
            }
        h[i].name = name->str;
        h[i].tensor = t;
        if (h[i].w != -1 && !(h[i].w >= 0)) {
            diag_error(S->diag, it->loc, "a deep supervision weight must be non-negative");
            return value_error();
        }
    }
    if (nh < 2) {
        diag_error(S->diag, ds->loc, "deep_supervision needs at least two outputs (the full-resolution one first)");
        return value_error();
    }
    if (nexplicit != 0 && nexplicit != nh) {
        diag_error(S->diag, ds->loc, "give every output of deep_supervision a weight, or none (nnU-Net's 1/2^i)");
        return value_error();
    }
    if (nexplicit == 0) {
        double sum = 0;
        for (int i = 0; i < nh; i++) sum += (h[i].w = i == nh - 1 ? 0 : ldexp(1.0, -i));
        for (int i = 0; i < nh; i++) h[i].w /= sum;
    }
    if (!ast_mentions(loss, h[0].name)) {
        diag_error(S->diag, loss->loc, "with deep_supervision, the loss is written for the first output `%s` "
                   "and applied to each listed output", h[0].name);
        return value_error();
    }
    Value total = value_error();
    bool any = false;
    for (int i = 0; i < nh; i++) {
        if (h[i].w == 0) continue;
        frame_push(S, false);
        Value hv = { .kind = V_TENSOR, .tensor = h[i].tensor, .loc = h[i].loc };
        env_define(S, h[0].name, hv, false);
        names_push(S, h[i].name);
        Value v = eval(S, loss);
        if (v.kind == V_TENSOR && h[i].w != 1) v = tensor_binop(S, AOP_MUL, value_float(h[i].w, h[i].loc), v, h[i].loc);
        names_pop(S);
        frame_pop(S);
        if (v.kind != V_TENSOR) return value_error();
        total = any ? tensor_binop(S, AOP_ADD, total, v, ds->loc) : v;
        if (total.kind != V_TENSOR) return total;
        any = true;
    }
    if (!any) {
        diag_error(S->diag, ds->loc, "every deep supervision weight is 0");
        return value_error();
    }
    return total;
}

bool expand_loss(Program *p, Graph *g, const Protocol *pr, const ExpandShape *shape, const Ast *loss,
                 const Ast *deep_supervision)
{
    Sema S;
    sema_init(&S, p);
    S.pr = pr;
    S.rank = pr->rank;
    S.shape = shape;
    S.g = g;
    names_init(&S);
    int before = p->diag->nraised;
    frame_push(&S, true);
    for (int i = 0; i < g->noutputs; i++) {
        Value v = { .kind = V_TENSOR, .tensor = g->outputs[i].tensor, .loc = g->outputs[i].loc };
        env_define(&S, g->outputs[i].name, v, false);
    }
    Shape ls = { .rank = 2 + pr->rank };
    ls.d[0] = shape->batch;
    ls.d[1] = 1;
    for (int k = 0; k < pr->rank; k++) ls.d[2 + k] = shape->size[k];
    int lt = graph_add_tensor(g, "labels", ls, DT_I32, TK_LABEL);
    g->tensors[lt].source_input = -1;
    graph_add_input(g, "labels", lt, loss->loc);
    Value lv = { .kind = V_TENSOR, .tensor = lt, .loc = loss->loc };
    env_define(&S, "labels", lv, false);
    /* The per-voxel weight map is an input only when the loss uses it. */
    if (ast_mentions(loss, "weightmap") && !env_lookup(&S, "weightmap")) {
        ls.d[1] = 1;
        int wt = graph_add_tensor(g, "weightmap", ls, DT_F32, TK_WEIGHTMAP);
        g->tensors[wt].source_input = -1;
        graph_add_input(g, "weightmap", wt, loss->loc);
        Value wv = { .kind = V_TENSOR, .tensor = wt, .loc = loss->loc };
        env_define(&S, "weightmap", wv, false);
    }
    /* Only nodes created from here on are renamed by names_finalize. */
    int first_node = g->nnodes;
    names_push(&S, "loss");
    S.in_loss = true;
    Value v = deep_supervision ? deep_supervised_loss(&S, loss, deep_supervision) : eval(&S, loss);
    S.in_loss = false;
    names_pop(&S);
    if (v.kind == V_TENSOR && g->tensors[v.tensor].shape.rank != 0) {
        diag_error(p->diag, loss->loc, "the loss must be a number per batch (a loss such as dice(logits, labels)), not a %s tensor",
                   "per-voxel");
        v = value_error();
    } else if (v.kind != V_TENSOR && v.kind != V_ERROR) {
        diag_error(p->diag, loss->loc, "the loss must be a loss expression such as dice(logits, labels) + ce(logits, labels), not %s",
                   value_kind_name(v.kind));
        v = value_error();
    }
    names_finalize(&S, first_node);
    if (v.kind == V_TENSOR) {
        if (g->nlosses == g->caplosses) {
            g->caplosses = g->caplosses ? 2 * g->caplosses : 2;
            g->losses = xrealloc(g->losses, (size_t)g->caplosses * sizeof *g->losses);
        }
        g->losses[g->nlosses].name = xstrdup("loss");
        g->losses[g->nlosses].tensor = v.tensor;
        g->losses[g->nlosses].loc = loss->loc;
        g->nlosses++;
    }
    sema_release(&S);
    return p->diag->nraised == before;
}
