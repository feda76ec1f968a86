/* ref_optim.h — the reference optimizers: SGD (momentum, Nesterov, weight
 * decay), Adam and AdamW, with exactly PyTorch's update rules (torch.optim,
 * dampening 0, Adam's weight decay added to the gradient, AdamW's decoupled).
 * Frozen parameters and buffers are never touched. */
#ifndef NETC_REF_OPTIM_H
#define NETC_REF_OPTIM_H

#include "ref.h"

typedef enum { OPT_SGD, OPT_ADAM, OPT_ADAMW } RefOptKind;

typedef struct {
    RefOptKind kind;
    double lr, momentum, weight_decay, beta1, beta2, eps;
    bool nesterov;
} RefOptConfig;

typedef struct RefOptim RefOptim;

/* From a train block's optimizer call (sgd, adam, adamw with their table's
 * parameters); returns -1 for an unknown name. */
int ref_opt_config(const char *name, const double *num, RefOptConfig *c);
RefOptim *ref_optim_new(const Graph *g, const RefOptConfig *c);
/* One update of every trainable, unfrozen parameter in s from gr, at
 * learning rate lr (the schedule's value for this step). */
void ref_optim_step(RefOptim *o, const Graph *g, RefState *s, const RefGrads *gr, double lr);
void ref_optim_free(RefOptim *o);

#endif
