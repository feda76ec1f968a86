/* memplan.c — the memory planner: live ranges over the kernel schedule,
 * in-place reuse, and arena offsets.
 *
 * Rules (also in docs/architecture.md, "Memory planning"):
 *   - the arena holds every materialized activation (forward outputs,
 *     gradients, losses); parameters, optimizer state and graph inputs are
 *     outside it (persistent_bytes);
 *   - a tensor lives from the kernel that writes it to the last kernel that
 *     reads it (a kernel's `ins`, or any of its nodes' inputs); graph
 *     outputs and losses live to the last kernel;
 *   - an optimizer update writes its output over the parameter (outside
 *     the arena); an elementwise kernel may write an output over an input
 *     that dies there (see can_reuse());
 *   - tensors sharing bytes in place form one buffer; buffers are placed by
 *     several greedy orders (TFLite's "greedy by size" first) and the
 *     smallest arena wins.
 */
#include <stdlib.h>
#include <string.h>

#include "memplan.h"

static int64_t align_up(int64_t n) { return (n + MEMPLAN_ALIGN - 1) / MEMPLAN_ALIGN * MEMPLAN_ALIGN; }

static int64_t tensor_bytes(const Tensor *t)
{
    return 4 * (t->shape.rank == 0 ? 1 : shape_numel(&t->shape));
}

static bool is_update(const Node *n) { return n->op == OP_SGD_UPDATE || n->op == OP_ADAM_UPDATE; }

/* One node of an elementwise kernel keeps element j at index j: an
 * elementwise or broadcast op (not an optimizer update), or the gradient of
 * one, whose output has the kernel output's shape. */
static bool index_preserving(const Graph *g, const Node *n, const Shape *shape)
{
    if (!shape_equal(&g->tensors[n->out].shape, shape)) return false;
    if (is_update(n)) return false;
    OpKind op = n->op;
    if (op == OP_GRAD) {
        if (n->at.grad_node < 0 || n->at.grad_node >= g->nnodes) return false;
        op = g->nodes[n->at.grad_node].op;
        if (op == OP_GRAD || op == OP_ONES || is_update(&g->nodes[n->at.grad_node])) return false;
    }
    return op_table[op].kind == FK_ELEMWISE || op_table[op].kind == FK_BROADCAST;
}

static bool node_reads(const Node *n, int t)
{
    for (int j = 0; j < n->nin; j++)
        if (n->in[j] == t) return true;
    return false;
}

/* May output `o` of elementwise kernel `k` take the bytes of input `i`?
 * Conservative: `i` is an arena tensor written by an earlier kernel whose
 * last reader is `k`, not a graph output or loss, of the same shape and
 * dtype as `o`; every node of the kernel is index-preserving at `o`'s
 * shape (so element j of `o` depends on element j of `i` only and the
 * kernel reads i[j] before it writes o[j]); and no node after the one
 * that writes `o` reads `i` (so executing the kernel node by node, as the
 * reference executor does, is safe as well). */
static bool can_reuse(const Graph *g, const Kernel *kn, int k, const MemPlan *mp, const bool *in_arena,
                      const bool *pinned, const bool *taken, int o, int i)
{
    if (i == o || !in_arena[i] || pinned[i] || taken[i]) return false;
    if (mp->last[i] != k || mp->first[i] >= k) return false;
    const Tensor *to = &g->tensors[o], *ti = &g->tensors[i];
    if (to->dtype != ti->dtype || !shape_equal(&to->shape, &ti->shape)) return false;
    if (align_up(tensor_bytes(to)) != align_up(tensor_bytes(ti))) return false;
    int writer = -1;
    for (int a = 0; a < kn->nnodes; a++) {
        const Node *n = &g->nodes[kn->nodes[a]];
        if (!index_preserving(g, n, &to->shape)) return false;
        if (n->out == o) writer = a;
    }
    if (writer < 0) return false;
    for (int a = writer + 1; a < kn->nnodes; a++)
        if (node_reads(&g->nodes[kn->nodes[a]], i)) return false;
    return true;
}

/* ---- placement ------------------------------------------------------------- */

typedef struct {
    int root;             /* representative tensor */
    int first, last;
    int64_t size;
    int64_t key;          /* sort key of the current order */
    int64_t offset;
} Buf;

typedef struct { int64_t off, end; } Span;

static int cmp_span(const void *a, const void *b)
{
    const Span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static int cmp_buf(const void *a, const void *b)
{
    const Buf *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;   /* descending key */
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    return x->root < y->root ? -1 : x->root > y->root;
}

/* Places bufs in array order at the lowest aligned offset that overlaps no
 * placed buffer with an intersecting live range; returns the peak. */
static int64_t place_in_order(Buf *b, int nb, Span *tmp)
{
    int64_t peak = 0;
    for (int i = 0; i < nb; i++) {
        int ns = 0;
        for (int j = 0; j < i; j++)
            if (b[j].first <= b[i].last && b[i].first <= b[j].last)
                tmp[ns++] = (Span){ b[j].offset, b[j].offset + b[j].size };
        qsort(tmp, (size_t)ns, sizeof *tmp, cmp_span);
        int64_t off = 0;
        for (int s = 0; s < ns; s++) {
            if (tmp[s].off >= off + b[i].size) break;   /* the gap before this span fits */
            if (tmp[s].end > off) off = tmp[s].end;
        }
        b[i].offset = off;
        if (off + b[i].size > peak) peak = off + b[i].size;
    }
    return peak;
}

static int find_root(const int *in_place_of, int t)
{
    while (in_place_of[t] >= 0) t = in_place_of[t];
    return t;
}

bool memplan_place(const Graph *g, const FusionPlan *fp, MemPlan *mp)
{
    int nt = g->ntensors, nk = fp->nkernels;
    int *buf_of = malloc(sizeof(int) * (size_t)(nt ? nt : 1));
    Buf *b = calloc((size_t)(nt ? nt : 1), sizeof *b);
    Buf *best = calloc((size_t)(nt ? nt : 1), sizeof *best);
    Span *tmp = malloc(sizeof(Span) * (size_t)(nt ? nt : 1));
    int64_t *live = calloc((size_t)nk + 1, sizeof *live);
    if (!buf_of || !b || !best || !tmp || !live) {
        free(buf_of); free(b); free(best); free(tmp); free(live);
        return false;
    }
    /* one buffer per in-place group (offset >= 0 marks an arena tensor on entry) */
    int nb = 0;
    for (int t = 0; t < nt; t++) buf_of[t] = -1;
    for (int t = 0; t < nt; t++) {
        if (mp->offset[t] < 0) continue;
        int r = find_root(mp->in_place_of, t);
        if (mp->offset[r] < 0) r = t;   /* in place of something outside the arena: its own buffer */
        if (buf_of[r] < 0) {
            buf_of[r] = nb;
            b[nb] = (Buf){ .root = r, .first = mp->first[r], .last = mp->last[r],
                           .size = align_up(tensor_bytes(&g->tensors[r])) };
            nb++;
        }
        Buf *x = &b[buf_of[r]];
        buf_of[t] = buf_of[r];
        if (mp->first[t] < x->first) x->first = mp->first[t];
        if (mp->last[t] > x->last) x->last = mp->last[t];
        int64_t sz = align_up(tensor_bytes(&g->tensors[t]));
        if (sz > x->size) x->size = sz;
    }
    /* lower bound: bytes of the buffers live at each kernel */
    mp->lower_bound = 0;
    for (int i = 0; i < nb; i++) {   /* differences, then a running sum */
        int f = b[i].first < 0 ? 0 : b[i].first, l = b[i].last >= nk ? nk - 1 : b[i].last;
        if (f > l) continue;
        live[f] += b[i].size;
        live[l + 1] -= b[i].size;
    }
    for (int k = 0; k < nk; k++) {
        if (k) live[k] += live[k - 1];
        if (live[k] > mp->lower_bound) mp->lower_bound = live[k];
    }
    /* orders: 0 greedy by size (TFLite), 1 greedy by breadth (the most
     * loaded kernel of each buffer's range first, then size), 2 by size x
     * lifetime, 3 by start (first fit in schedule order) */
    static const char *const names[4] = { "greedy by size", "greedy by breadth", "greedy by size x lifetime",
                                          "first fit in schedule order" };
    int64_t best_peak = -1;
    mp->strategy = names[0];
    int norders = nb > 4096 ? 1 : 4;   /* placement is quadratic: one order for huge graphs */
    for (int order = 0; order < norders; order++) {
        for (int i = 0; i < nb; i++) {
            Buf *x = &b[i];
            int64_t breadth = 0;
            switch (order) {
            case 0: x->key = x->size; break;
            case 1:
                for (int k = x->first < 0 ? 0 : x->first; k <= x->last && k < nk; k++)
                    if (live[k] > breadth) breadth = live[k];
                x->key = breadth;
                break;
            case 2: x->key = x->size * (int64_t)(x->last - x->first + 1); break;
            default: x->key = -(int64_t)x->first; break;
            }
        }
        qsort(b, (size_t)nb, sizeof *b, cmp_buf);
        int64_t peak = place_in_order(b, nb, tmp);
        if (best_peak < 0 || peak < best_peak) {
            best_peak = peak;
            mp->strategy = names[order];
            memcpy(best, b, sizeof *b * (size_t)nb);
        }
    }
    if (best_peak < 0) best_peak = 0;
    /* buffers were reordered: map roots to their placed offsets */
    for (int i = 0; i < nb; i++) buf_of[best[i].root] = i;
    for (int t = 0; t < nt; t++) {
        if (mp->offset[t] < 0) continue;
        int r = find_root(mp->in_place_of, t);
        if (mp->offset[r] < 0) r = t;
        mp->offset[t] = best[buf_of[r]].offset;
    }
    mp->arena_bytes = best_peak;
    free(buf_of); free(b); free(best); free(tmp); free(live);
    return true;
}

/* ---- the plan -------------------------------------------------------------------- */

MemPlan *memplan(const Graph *g, const FusionPlan *fp)
{
    int nt = g->ntensors, nk = fp->nkernels;
    size_t n = (size_t)(nt ? nt : 1);
    MemPlan *mp = calloc(1, sizeof *mp);
    bool *in_arena = calloc(n, sizeof *in_arena), *pinned = calloc(n, sizeof *pinned);
    bool *taken = calloc(n, sizeof *taken);
    if (!mp || !in_arena || !pinned || !taken) goto oom;
    mp->offset = malloc(sizeof *mp->offset * n);
    mp->first = malloc(sizeof *mp->first * n);
    mp->last = malloc(sizeof *mp->last * n);
    mp->in_place_of = malloc(sizeof *mp->in_place_of * n);
    if (!mp->offset || !mp->first || !mp->last || !mp->in_place_of) goto oom;
    for (int t = 0; t < nt; t++) {
        const Tensor *tt = &g->tensors[t];
        mp->offset[t] = -1;
        mp->first[t] = mp->last[t] = mp->in_place_of[t] = -1;
        if (tt->kind == TK_ACTIVATION) {
            if (tt->producer >= 0 && is_update(&g->nodes[tt->producer]) &&
                g->tensors[g->nodes[tt->producer].in[0]].kind == TK_PARAM) {
                mp->in_place_of[t] = g->nodes[tt->producer].in[0];   /* the new value over the parameter */
                continue;
            }
            in_arena[t] = fp->materialized[t];
            if (in_arena[t]) mp->naive_bytes += align_up(tensor_bytes(tt));
        } else {
            mp->persistent_bytes += tensor_bytes(tt);
        }
    }
    /* live ranges: the writer, then every kernel that reads */
    for (int k = 0; k < nk; k++) {
        const Kernel *kn = &fp->kernels[k];
        for (int j = 0; j < kn->nouts; j++) {
            int t = kn->outs[j];
            if (t >= 0 && t < nt && in_arena[t] && mp->first[t] < 0) mp->first[t] = k;
        }
    }
    for (int t = 0; t < nt; t++) {
        if (!in_arena[t] || mp->first[t] >= 0) continue;
        int p = g->tensors[t].producer;   /* not listed as an output: its node's kernel */
        mp->first[t] = p >= 0 && fp->kernel_of_node ? fp->kernel_of_node[p] : 0;
        if (mp->first[t] < 0) mp->first[t] = 0;
    }
    for (int t = 0; t < nt; t++)
        if (in_arena[t]) mp->last[t] = mp->first[t];
    for (int k = 0; k < nk; k++) {
        const Kernel *kn = &fp->kernels[k];
        for (int j = 0; j < kn->nins; j++) {
            int t = kn->ins[j];
            if (t >= 0 && t < nt && in_arena[t] && mp->last[t] < k) mp->last[t] = k;
        }
        for (int a = 0; a < kn->nnodes; a++) {   /* defensive: what the nodes read */
            const Node *nd = &g->nodes[kn->nodes[a]];
            for (int j = 0; j < nd->nin; j++)
                if (in_arena[nd->in[j]] && mp->last[nd->in[j]] < k) mp->last[nd->in[j]] = k;
        }
    }
    for (int i = 0; i < g->noutputs; i++) pinned[g->outputs[i].tensor] = true;
    for (int i = 0; i < g->nlosses; i++) pinned[g->losses[i].tensor] = true;
    for (int t = 0; t < nt; t++)
        if (in_arena[t] && pinned[t] && nk > 0) mp->last[t] = nk - 1;
    /* in place in elementwise kernels */
    for (int k = 0; k < nk; k++) {
        const Kernel *kn = &fp->kernels[k];
        if (kn->kind != KK_ELEMWISE) continue;
        for (int j = 0; j < kn->nouts; j++) {
            int o = kn->outs[j];
            if (o < 0 || o >= nt || !in_arena[o] || mp->first[o] != k || mp->in_place_of[o] >= 0) continue;
            for (int q = 0; q < kn->nins; q++) {
                int i = kn->ins[q];
                if (i < 0 || i >= nt || !can_reuse(g, kn, k, mp, in_arena, pinned, taken, o, i)) continue;
                mp->in_place_of[o] = i;
                taken[i] = true;
                break;
            }
        }
    }
    for (int t = 0; t < nt; t++)
        if (in_arena[t]) mp->offset[t] = 0;   /* marks the arena tensors for memplan_place */
    if (!memplan_place(g, fp, mp)) goto oom;
    free(in_arena);
    free(pinned);
    free(taken);
    return mp;
oom:
    free(in_arena);
    free(pinned);
    free(taken);
    memplan_free(mp);
    return NULL;
}

void memplan_free(MemPlan *mp)
{
    if (!mp) return;
    free(mp->offset);
    free(mp->first);
    free(mp->last);
    free(mp->in_place_of);
    free(mp);
}

static void human(char *buf, size_t n, int64_t bytes)
{
    double v = (double)bytes;
    if (v >= 1024.0 * 1024 * 1024) snprintf(buf, n, "%.2f GiB", v / (1024.0 * 1024 * 1024));
    else if (v >= 1024.0 * 1024) snprintf(buf, n, "%.2f MiB", v / (1024.0 * 1024));
    else if (v >= 1024.0) snprintf(buf, n, "%.2f KiB", v / 1024.0);
    else snprintf(buf, n, "%lld B", (long long)bytes);
}

void memplan_print(FILE *out, const Graph *g, const FusionPlan *fp, const MemPlan *mp, bool verbose)
{
    int narena = 0, ninplace = 0, nupdate = 0;
    for (int t = 0; t < g->ntensors; t++) {
        if (mp->offset[t] >= 0) narena++;
        if (mp->in_place_of[t] >= 0) {
            if (mp->offset[t] >= 0) ninplace++;
            else nupdate++;
        }
    }
    char a[32], lb[32], nv[32], ps[32];
    human(a, sizeof a, mp->arena_bytes);
    human(lb, sizeof lb, mp->lower_bound);
    human(nv, sizeof nv, mp->naive_bytes);
    human(ps, sizeof ps, mp->persistent_bytes);
    fprintf(out, "memory plan: %d kernels, %d arena tensors (%d in place), %d parameter updates in place\n",
            fp->nkernels, narena, ninplace, nupdate);
    fprintf(out, "  arena        %12lld bytes  %s  (placed %s)\n", (long long)mp->arena_bytes, a,
            mp->strategy ? mp->strategy : "greedy by size");
    fprintf(out, "  lower bound  %12lld bytes  %s  (most bytes live at one kernel)\n", (long long)mp->lower_bound, lb);
    fprintf(out, "  naive        %12lld bytes  %s  (every arena tensor in its own buffer)\n",
            (long long)mp->naive_bytes, nv);
    fprintf(out, "  arena / lower bound  %.3f\n",
            mp->lower_bound > 0 ? (double)mp->arena_bytes / (double)mp->lower_bound : 1.0);
    fprintf(out, "  naive / arena        %.2fx\n",
            mp->arena_bytes > 0 ? (double)mp->naive_bytes / (double)mp->arena_bytes : 1.0);
    fprintf(out, "  persistent   %12lld bytes  %s  (parameters, optimizer state, inputs: outside the arena)\n",
            (long long)mp->persistent_bytes, ps);
    if (!verbose) return;
    int w = 6;
    for (int t = 0; t < g->ntensors; t++)
        if (mp->offset[t] >= 0 || mp->in_place_of[t] >= 0) {
            int l = (int)strlen(g->tensors[t].name);
            if (l > w) w = l;
        }
    if (w > 60) w = 60;
    fprintf(out, "\n%-*s %12s %12s %11s  %s\n", w, "tensor", "bytes", "offset", "live", "in place of");
    for (int t = 0; t < g->ntensors; t++) {
        if (mp->offset[t] < 0 && mp->in_place_of[t] < 0) continue;
        char live[32] = "-", off[24] = "param";
        if (mp->offset[t] >= 0) {
            snprintf(live, sizeof live, "%d..%d", mp->first[t], mp->last[t]);
            snprintf(off, sizeof off, "%lld", (long long)mp->offset[t]);
        }
        fprintf(out, "%-*s %12lld %12s %11s  %s\n", w, g->tensors[t].name, (long long)align_up(tensor_bytes(&g->tensors[t])),
                off, live, mp->in_place_of[t] >= 0 ? g->tensors[mp->in_place_of[t]].name : "");
    }
}
