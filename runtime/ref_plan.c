/* ref_plan.c — the reference executor on planned memory, with poisoning
 * (contract in ref.h, "planned memory").  It checks a fusion plan and a
 * memory plan together: any tensor read after its bytes were reused or
 * released reads NaN (or another tensor's values), and the results then
 * differ from an ordinary ref_forward. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuse.h"
#include "memplan.h"
#include "ref.h"

static void fill_nan(float *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
}

static bool is_scratch(const Graph *g, const FusionPlan *fp, int t)
{
    return g->tensors[t].kind == TK_ACTIVATION && !fp->materialized[t];
}

RefPlanned *ref_planned_new(const Graph *g, const FusionPlan *fp, const MemPlan *mp)
{
    int nt = g->ntensors;
    size_t n = (size_t)(nt ? nt : 1);
    RefPlanned *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->s.ntensors = nt;
    p->s.buf = calloc(n, sizeof *p->s.buf);
    p->s.numel = calloc(n, sizeof *p->s.numel);
    p->owned = calloc(n, sizeof *p->owned);
    size_t abytes = (size_t)(mp->arena_bytes > 0 ? mp->arena_bytes : MEMPLAN_ALIGN);
    abytes = (abytes + MEMPLAN_ALIGN - 1) / MEMPLAN_ALIGN * MEMPLAN_ALIGN;
    p->arena = aligned_alloc(MEMPLAN_ALIGN, abytes);
    if (!p->s.buf || !p->s.numel || !p->owned || !p->arena) goto oom;
    fill_nan(p->arena, (int64_t)(abytes / sizeof(float)));
    for (int t = 0; t < nt; t++) {
        int64_t k = g->tensors[t].shape.rank == 0 ? 1 : shape_numel(&g->tensors[t].shape);
        p->s.numel[t] = k;
        if (mp->offset[t] >= 0) {
            if (mp->offset[t] % MEMPLAN_ALIGN || mp->offset[t] + 4 * k > mp->arena_bytes) goto oom;   /* a broken plan */
            p->s.buf[t] = (float *)(void *)((char *)p->arena + mp->offset[t]);
        } else if (mp->in_place_of[t] >= 0) {
            continue;   /* aliases another tensor's buffer: below */
        } else {
            p->s.buf[t] = calloc((size_t)(k ? k : 1), sizeof(float));
            if (!p->s.buf[t]) goto oom;
            p->owned[t] = true;
            if (is_scratch(g, fp, t)) fill_nan(p->s.buf[t], k);
        }
    }
    for (int t = 0; t < nt; t++) {
        if (p->s.buf[t]) continue;
        int r = t, hops = 0;
        while (mp->in_place_of[r] >= 0 && mp->offset[r] < 0 && hops++ < nt) r = mp->in_place_of[r];
        if (!p->s.buf[r] || p->s.numel[r] < p->s.numel[t]) goto oom;
        p->s.buf[t] = p->s.buf[r];
    }
    return p;
oom:
    ref_planned_free(p);
    return NULL;
}

void ref_planned_free(RefPlanned *p)
{
    if (!p) return;
    for (int t = 0; p->s.buf && p->owned && t < p->s.ntensors; t++)
        if (p->owned[t]) free(p->s.buf[t]);
    free(p->s.buf);
    free(p->s.numel);
    free(p->owned);
    free(p->arena);
    free(p);
}

/* A node whose value may be computed again in a second kernel (an inlined
 * movement op, or the gradient of one): anything without side effects.
 * Training batchnorm updates its running statistics and the optimizer
 * updates their state, in place. */
static bool recomputable(const Node *n, bool training)
{
    return !(n->op == OP_BATCHNORM && training) && n->op != OP_SGD_UPDATE && n->op != OP_ADAM_UPDATE;
}

int ref_planned_run(const Graph *g, RefPlanned *p, const FusionPlan *fp, const MemPlan *mp, bool training,
                    uint64_t seed, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    int nt = g->ntensors;
    bool *seen = calloc((size_t)(g->nnodes ? g->nnodes : 1), sizeof *seen);
    bool *handed = calloc((size_t)(nt ? nt : 1), sizeof *handed);
    if (!seen || !handed) {
        free(seen);
        free(handed);
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* a tensor whose bytes another tensor took over in place is released by
     * that tensor's end, not its own */
    for (int t = 0; t < nt; t++)
        if (mp->offset[t] >= 0 && mp->in_place_of[t] >= 0) handed[mp->in_place_of[t]] = true;
    int rc = 0;
    for (int k = 0; k < fp->nkernels && rc == 0; k++) {
        const Kernel *kn = &fp->kernels[k];
        for (int a = 0; a < kn->nnodes && rc == 0; a++) {
            int i = kn->nodes[a];
            if (i < 0 || i >= g->nnodes) continue;
            if (seen[i] && !(is_scratch(g, fp, g->nodes[i].out) && recomputable(&g->nodes[i], training))) continue;
            seen[i] = true;
            rc = ref_run_node(g, &p->s, i, training, seed, err, errlen);
        }
        /* poison: the scratch this kernel computed, the arena tensors that died here */
        for (int a = 0; a < kn->nnodes; a++) {
            int i = kn->nodes[a];
            if (i < 0 || i >= g->nnodes) continue;
            int t = g->nodes[i].out;
            if (is_scratch(g, fp, t) && p->owned[t]) fill_nan(p->s.buf[t], p->s.numel[t]);
        }
        if (k == fp->nkernels - 1) break;   /* what lives to the end is the step's result */
        for (int t = 0; t < nt; t++)
            if (mp->offset[t] >= 0 && mp->last[t] == k && !handed[t]) fill_nan(p->s.buf[t], p->s.numel[t]);
    }
    for (int i = 0; i < g->nnodes && rc == 0; i++)
        if (!seen[i]) {
            if (err && errlen) snprintf(err, errlen, "node %s is in no kernel", g->nodes[i].name);
            rc = -1;
        }
    free(seen);
    free(handed);
    return rc;
}
