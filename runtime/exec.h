/* exec.h — run a graph through generated code: fuse, plan memory, lower to
 * the L3 loop IR, build with a backend (the C compiler or the LLVM JIT),
 * and execute in one planned arena.  The engine behind
 * `netc run --backend c|llvm|cuda`; the reference executor (ref.h) remains the
 * `ref` backend.
 *
 * State lives in a RefState (one buffer per tensor): parameters, optimizer
 * state and inputs are read and written there; activations live in the
 * arena, and after a run the graph's outputs and losses are copied back
 * into the RefState so callers read every backend the same way. */
#ifndef NETC_EXEC_H
#define NETC_EXEC_H

#include <stdbool.h>
#include <stddef.h>

#include "graph.h"
#include "ref.h"

typedef struct NetcExec NetcExec;

/* backend: "c", "llvm" or "cuda" (runtime/cuda.h).  training: the graph is
 * a training step (batch statistics; with autodiff's nodes, gradients and
 * updates).  NULL with a message in err. */
NetcExec *exec_new(const Graph *g, bool training, const char *backend, char *err, size_t errlen);
/* One run.  Update nodes write the new parameter values over their
 * parameters (in place) in s. */
int exec_run(NetcExec *x, RefState *s, char *err, size_t errlen);
/* A training step in two halves: exec_grads runs forward, loss and
 * backward (the outputs and losses copied into s); then the gradients can
 * be read and changed in place through exec_tensor (clipping), and
 * exec_update applies the optimizer (parameters updated in place in s). */
int exec_grads(NetcExec *x, RefState *s, char *err, size_t errlen);
int exec_update(NetcExec *x, RefState *s, char *err, size_t errlen);
/* Where tensor t lives during the last run (arena or s), NULL if nowhere
 * (kept inside a kernel). */
float *exec_tensor(NetcExec *x, int t);
int exec_kernels(const NetcExec *x);
/* The GPU module (backend "cuda"; NULL otherwise): after a run, entries can
 * be launched again on the data already there (timing; see cuda.h). */
struct NetcCuda *exec_cuda(NetcExec *x);
int64_t exec_arena_bytes(const NetcExec *x);
void exec_free(NetcExec *x);

#endif
