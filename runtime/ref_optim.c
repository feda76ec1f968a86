/* ref_optim.c — see ref_optim.h.  The state (momentum buffer, Adam's first
 * and second moments) is kept in double per parameter element. */
#define _POSIX_C_SOURCE 200809L
#include "ref_optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct RefOptim {
    RefOptConfig c;
    int nparams;
    double **m, **v;      /* per parameter: momentum / first moment, second moment */
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
    free(o);
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
        for (int64_t k = 0; k < n; k++) {
            double w = p[k], d = gp[k];
            if (c->kind == OPT_SGD) {
                d += c->weight_decay * w;
                if (c->momentum != 0) {
                    m[k] = first ? d : c->momentum * m[k] + d;   /* torch: the buffer starts as the first d_p */
                    d = c->nesterov ? d + c->momentum * m[k] : m[k];
                }
                p[k] = (float)(w - lr * d);
                continue;
            }
            if (c->kind == OPT_ADAMW) w *= 1 - lr * c->weight_decay;
            else d += c->weight_decay * w;
            m[k] = c->beta1 * m[k] + (1 - c->beta1) * d;
            v[k] = c->beta2 * v[k] + (1 - c->beta2) * d * d;
            double denom = sqrt(v[k]) / sqrt(bc2) + c->eps;
            p[k] = (float)(w - lr / bc1 * m[k] / denom);
        }
    }
}
