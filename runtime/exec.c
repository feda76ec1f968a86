/* exec.c — generated code, end to end (see exec.h). */
#define _POSIX_C_SOURCE 200809L
#include "exec.h"

#include <stdlib.h>
#include <string.h>

#include "cbackend.h"
#include "cuda.h"
#include "fuse.h"
#include "l3_llvm.h"
#include "lower.h"
#include "memplan.h"

struct NetcExec {
    const Graph *g;
    FusionPlan *fp;
    MemPlan *mp;
    L3Module *m;
    CBackend *cb;
    L3Llvm *jit;
    NetcCuda *cuda;       /* backend "cuda": the module on the GPU (entries run by name) */
    size_t *bytes;        /* cuda: per tensor, then the arena */
    void **dt;            /* cuda: t, then the arena (what is uploaded) */
    const char *ename;    /* the whole step's entry */
    bool halves;          /* cuda: netc_grads and netc_update exist */
    NetcEntry entry, grads, update;   /* grads/update: the halves of a training step (NULL otherwise) */
    void *arena;
    void **t;
};

void exec_free(NetcExec *x)
{
    if (!x) return;
    cbackend_free(x->cb);
    l3_llvm_free(x->jit);
    cuda_free(x->cuda);
    free(x->bytes);
    free(x->dt);
    l3_module_free(x->m);
    memplan_free(x->mp);
    fusion_plan_free(x->fp);
    free(x->arena);
    free(x->t);
    free(x);
}

NetcExec *exec_new(const Graph *g, bool training, const char *backend, char *err, size_t errlen)
{
    bool c = strcmp(backend, "c") == 0, llvm = strcmp(backend, "llvm") == 0, gpu = strcmp(backend, "cuda") == 0;
    if (!c && !llvm && !gpu) {
        snprintf(err, errlen, "unknown backend `%s` (ref, c, llvm or cuda)", backend);
        return NULL;
    }
    NetcExec *x = calloc(1, sizeof *x);
    if (!x) { snprintf(err, errlen, "out of memory"); return NULL; }
    x->g = g;
    x->fp = fuse_graph(g, training);
    x->mp = x->fp ? memplan(g, x->fp) : NULL;
    if (!x->fp || !x->mp) { snprintf(err, errlen, "out of memory while planning"); exec_free(x); return NULL; }
    x->m = lower_graph_fused(g, x->fp, training, err, errlen);
    if (!x->m) { exec_free(x); return NULL; }
    const char *name = training ? "netc_train_forward" : "netc_forward";
    bool halves = training && x->m->nentries >= 3;
    x->ename = name;
    if (c) {
        x->cb = cbackend_compile(x->m, err, errlen);
        if (x->cb) x->entry = cbackend_entry(x->cb, name);
        if (x->cb && halves) x->grads = cbackend_entry(x->cb, "netc_grads"), x->update = cbackend_entry(x->cb, "netc_update");
    } else if (gpu) {
        x->cuda = cuda_load(x->m, err, errlen);
        bool ok = x->cuda && cuda_entry_launches(x->cuda, name) >= 0 &&
                  (!halves || (cuda_entry_launches(x->cuda, "netc_grads") >= 0 && cuda_entry_launches(x->cuda, "netc_update") >= 0));
        if (x->cuda && !ok) snprintf(err, errlen, "the generated code has no entry %s", name);
        if (!ok) { exec_free(x); return NULL; }
        x->halves = halves;
    } else {
        x->jit = l3_llvm_jit(x->m, err, errlen);
        if (x->jit) x->entry = l3_llvm_entry(x->jit, name);
        if (x->jit && halves) x->grads = l3_llvm_entry(x->jit, "netc_grads"), x->update = l3_llvm_entry(x->jit, "netc_update");
    }
    if (!x->entry && !x->cuda) {
        if (x->cb || x->jit) snprintf(err, errlen, "the generated code has no entry %s", name);
        exec_free(x);
        return NULL;
    }
    x->arena = aligned_alloc(MEMPLAN_ALIGN, (size_t)((x->mp->arena_bytes + MEMPLAN_ALIGN - 1) / MEMPLAN_ALIGN + 1) * MEMPLAN_ALIGN);
    x->t = calloc((size_t)(g->ntensors > 0 ? g->ntensors : 1), sizeof *x->t);
    if (x->cuda) {
        x->bytes = calloc((size_t)g->ntensors + 1, sizeof *x->bytes);
        x->dt = calloc((size_t)g->ntensors + 1, sizeof *x->dt);
    }
    if (!x->arena || !x->t || (x->cuda && (!x->bytes || !x->dt))) { snprintf(err, errlen, "out of memory (arena of %lld bytes)", (long long)x->mp->arena_bytes); exec_free(x); return NULL; }
    return x;
}

static int bind(NetcExec *x, RefState *s, char *err, size_t errlen)
{
    const Graph *g = x->g;
    if (s->ntensors != g->ntensors) { snprintf(err, errlen, "state made for another graph"); return -1; }
    for (int i = 0; i < g->ntensors; i++) {
        if (x->mp->offset[i] >= 0) x->t[i] = (char *)x->arena + x->mp->offset[i];
        else x->t[i] = g->tensors[i].kind == TK_ACTIVATION ? NULL : s->buf[i];
    }
    for (int i = 0; i < g->ntensors; i++) {   /* in place: the bytes of the tensor it overwrites */
        int j = i, hops = 0;
        while (x->mp->in_place_of[j] >= 0 && hops++ < g->ntensors) j = x->mp->in_place_of[j];
        if (j != i) x->t[i] = x->t[j];
    }
    return 0;
}

static void copy_ports(NetcExec *x, RefState *s)
{
    const Graph *g = x->g;
    for (int k = 0; k < g->noutputs + g->nlosses; k++) {
        int t = k < g->noutputs ? g->outputs[k].tensor : g->losses[k - g->noutputs].tensor;
        if (x->t[t] && x->t[t] != s->buf[t]) memcpy(s->buf[t], x->t[t], sizeof(float) * (size_t)s->numel[t]);
    }
}

/* cuda: every bound tensor and the whole arena go to the GPU, the entry
 * runs there, and everything comes back (the arena too, so exec_tensor reads
 * gradients and activations as with the CPU backends). */
static int cuda_entry(NetcExec *x, RefState *s, const char *name, char *err, size_t errlen)
{
    const Graph *g = x->g;
    for (int i = 0; i < g->ntensors; i++) {
        x->dt[i] = x->t[i];
        x->bytes[i] = x->t[i] ? 4 * (size_t)s->numel[i] : 0;   /* float and int32 alike */
    }
    x->dt[g->ntensors] = x->arena;
    x->bytes[g->ntensors] = (size_t)x->mp->arena_bytes;
    return cuda_run(x->cuda, name, x->dt, x->bytes, g->ntensors + 1, err, errlen);
}

int exec_run(NetcExec *x, RefState *s, char *err, size_t errlen)
{
    if (bind(x, s, err, errlen) != 0) return -1;
    if (x->cuda) {
        if (cuda_entry(x, s, x->ename, err, errlen) != 0) return -1;
    } else
        x->entry(x->t);
    copy_ports(x, s);
    return 0;
}

int exec_grads(NetcExec *x, RefState *s, char *err, size_t errlen)
{
    if (!x->grads && !x->halves) { snprintf(err, errlen, "not a training step with an optimizer update"); return -1; }
    if (bind(x, s, err, errlen) != 0) return -1;
    if (x->cuda) {
        if (cuda_entry(x, s, "netc_grads", err, errlen) != 0) return -1;
    } else
        x->grads(x->t);
    copy_ports(x, s);
    return 0;
}

int exec_update(NetcExec *x, RefState *s, char *err, size_t errlen)
{
    if (!x->update && !x->halves) { snprintf(err, errlen, "not a training step with an optimizer update"); return -1; }
    if (x->cuda) return cuda_entry(x, s, "netc_update", err, errlen);   /* the (maybe clipped) gradients go back up */
    x->update(x->t);   /* after exec_grads: same bindings, the gradients still in the arena */
    return 0;
}

float *exec_tensor(NetcExec *x, int t) { return t >= 0 && t < x->g->ntensors ? x->t[t] : NULL; }

NetcCuda *exec_cuda(NetcExec *x) { return x->cuda; }

int exec_kernels(const NetcExec *x) { return x->fp->nkernels; }
int64_t exec_arena_bytes(const NetcExec *x) { return x->mp->arena_bytes; }
