/* ref_optim.c — see ref_optim.h.  The state (momentum buffer, Adam's first
 * and second moments) is kept in double per parameter element. */
#define _POSIX_C_SOURCE 200809L
#include "ref_optim.h"
#include "ref_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct RefOptim {
    RefOptConfig c;
    int nparams;
    double **m, **v;      /* per parameter: momentum / first moment, second moment */
    bool *used;           /* per tensor: the loss depends on it (NULL: all) */
    int64_t step;
};

int ref_opt_config(const char *name, const double *num, RefOptConfig *c)
{
    memset(c, 0, sizeof *c);
    if (strcmp(name, "sgd") == 0) {           /* lr, momentum, nesterov, weight_decay */
        c->kind = OPT_SGD;
        c->lr = num[0];
        c->momentum = num[1];
        c->nesterov = num[2] != 0;
        c->weight_decay = num[3];
        return 0;
    }
    if (strcmp(name, "adam") == 0 || strcmp(name, "adamw") == 0) {   /* lr, beta1, beta2, eps, weight_decay */
        c->kind = name[4] == 'w' ? OPT_ADAMW : OPT_ADAM;
        c->lr = num[0];
        c->beta1 = num[1];
        c->beta2 = num[2];
        c->eps = num[3];
        c->weight_decay = num[4];
        return 0;
    }
    return -1;
}

RefOptim *ref_optim_new(const Graph *g, const RefOptConfig *c)
{
    RefOptim *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->c = *c;
    o->nparams = g->nparams;
    o->m = calloc((size_t)g->nparams + 1, sizeof *o->m);
    o->v = calloc((size_t)g->nparams + 1, sizeof *o->v);
    if (!o->m || !o->v) { ref_optim_free(o); return NULL; }
    if (g->nlosses > 0) {
        o->used = graph_influences(g, g->losses[0].tensor);
        if (!o->used) { ref_optim_free(o); return NULL; }
    }
    return o;
}

void ref_optim_free(RefOptim *o)
{
    if (!o) return;
    for (int i = 0; i < o->nparams; i++) {
        if (o->m) free(o->m[i]);
        if (o->v) free(o->v[i]);
    }
    free(o->m);
    free(o->v);
    free(o->used);
    free(o);
}

/* One element of torch.optim's updates; m, v are the element's state. */
static double sgd_element(const RefOptConfig *c, double w, double d, double *m, bool first, double lr)
{
    d += c->weight_decay * w;
    if (c->momentum != 0) {
        *m = first ? d : c->momentum * *m + d;   /* torch: the buffer starts as the first d_p */
        d = c->nesterov ? d + c->momentum * *m : *m;
    }
    return w - lr * d;
}

static double adam_element(const RefOptConfig *c, double w, double d, double *m, double *v, double bc1, double bc2,
                           double lr)
{
    if (c->kind == OPT_ADAMW) w *= 1 - lr * c->weight_decay;
    else d += c->weight_decay * w;
    *m = c->beta1 * *m + (1 - c->beta1) * d;
    *v = c->beta2 * *v + (1 - c->beta2) * d * d;
    double denom = sqrt(*v) / sqrt(bc2) + c->eps;
    return w - lr / bc1 * *m / denom;
}

/* An sgd_update / adam_update node of the training graph: the same
 * arithmetic, with the state kept in the node's float32 state parameters. */
int ref_update_node(const RefCtx *cx)
{
    const Node *nd = cx->node;
    const OpAttrs *at = &nd->at;
    bool sgd = nd->op == OP_SGD_UPDATE;
    RefOptConfig c = { .kind = sgd ? OPT_SGD : at->opt_decoupled ? OPT_ADAMW : OPT_ADAM,
                       .momentum = at->opt_momentum, .weight_decay = at->opt_weight_decay, .beta1 = at->opt_beta1,
                       .beta2 = at->opt_beta2, .eps = at->opt_eps, .nesterov = at->opt_nesterov };
    const float *w = ref_in(cx, 0), *gd = ref_in(cx, 1);
    double lr = ref_in(cx, 2)[0], step = ref_in(cx, 3)[0];
    if (!(step >= 1)) return ref_fail(cx, "%s: the step count input must be 1 or more, not %g", nd->name, step);
    float *out = ref_out(cx);
    float *ms = nd->nparams > 0 ? ref_param(cx, 0) : NULL, *vs = nd->nparams > 1 ? ref_param(cx, 1) : NULL;
    int64_t n = cx->st->numel[nd->out];
    double bc1 = 1 - pow(c.beta1, step), bc2 = 1 - pow(c.beta2, step);
    for (int64_t k = 0; k < n; k++) {
        double m = ms ? ms[k] : 0, v = vs ? vs[k] : 0;
        out[k] = (float)(sgd ? sgd_element(&c, w[k], gd[k], &m, step == 1, lr)
                             : adam_element(&c, w[k], gd[k], &m, &v, bc1, bc2, lr));
        if (ms) ms[k] = (float)m;
        if (vs) vs[k] = (float)v;
    }
    return 0;
}

void ref_optim_step(RefOptim *o, const Graph *g, RefState *s, const RefGrads *gr, double lr)
{
    const RefOptConfig *c = &o->c;
    o->step++;
    double bc1 = 1 - pow(c->beta1, (double)o->step), bc2 = 1 - pow(c->beta2, (double)o->step);
    for (int i = 0; i < g->nparams; i++) {
        const Param *pm = &g->params[i];
        if (!pm->trainable || pm->frozen) continue;
        int t = pm->tensor;
        if (o->used && !o->used[t]) continue;   /* the loss does not depend on it: no step (torch.optim) */
        int64_t n = s->numel[t];
        float *p = s->buf[t];
        const float *gp = gr->buf[t];
        bool first = !o->m[i];
        if (first) {
            o->m[i] = calloc((size_t)n, sizeof(double));
            if (c->kind != OPT_SGD) o->v[i] = calloc((size_t)n, sizeof(double));
            if (!o->m[i] || (c->kind != OPT_SGD && !o->v[i])) continue;   /* out of memory: skip (tests catch it) */
        }
        double *m = o->m[i], *v = o->v[i];
        for (int64_t k = 0; k < n; k++)
            p[k] = (float)(c->kind == OPT_SGD ? sgd_element(c, p[k], gp[k], &m[k], first, lr)
                                              : adam_element(c, p[k], gp[k], &m[k], &v[k], bc1, bc2, lr));
    }
}
