/* driver.h — compile a loaded program: the whole front end in one call. */
#ifndef NETC_DRIVER_H
#define NETC_DRIVER_H

#include "sema.h"

typedef struct {
    const char *protocol;   /* NULL: the only one, or the one a train block names */
    const char *net;        /* NULL: the only net of the main file */
    bool train;             /* return the training graph (net at the train patch + losses) */
    bool autodiff;          /* with train: append the backward pass and the optimizer update */
    Override *ov;           /* -D overrides (text in, parsed value out) */
    int nov;
    Protocol **protocol_out;  /* if set, receives the checked protocol (caller frees) */
    TrainSpec **train_out;    /* if set, receives the checked train block or NULL (caller frees: train_free) */
} CompileOptions;

/* Choose net and protocol, check protocol and train block, expand.  Returns
 * the graph to show, or NULL; errors go to p->diag (check nerrors). Each
 * override's text is parsed into its `value`. */
Graph *netc_compile(Program *p, CompileOptions *o);

/* program_load + netc_compile: the preamble of every command that compiles a
 * file.  Loads FILE into *pp with d (the caller's diag_init'ed Diag) and
 * compiles it.  A file that cannot be read is reported on stderr as
 * "WHO: cannot read FILE: reason" and leaves *pp NULL; compile errors go to
 * d (check d->nerrors).  Returns the graph, or NULL. */
Graph *netc_load_compile(Diag *d, const char *who, const char *file, CompileOptions *o, Program **pp);
/* Frees the keys of n -D overrides (the command-line parsers xstrndup them). */
void netc_overrides_free(Override *ov, int n);

#endif
