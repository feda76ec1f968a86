/* test_memplan.c — the memory planner.
 *
 * For every shipped netdef, inference and a whole training step (forward,
 * backward, optimizer update): the plan's invariants (offsets aligned, no
 * two tensors live at the same time share bytes unless one is in place of
 * the other, lower bound <= arena <= naive), and the poisoning run: the
 * graph executed by the reference executor on the planned arena, with
 * every dead tensor's bytes filled with NaN after its last kernel, gives
 * bit-identical outputs, losses and updated parameters to an ordinary
 * ref_forward.  A plan with one live range deliberately shortened must
 * fail that comparison.
 *
 * The plans come from a trivial fusion plan built here (one kernel per
 * node, every tensor materialized) and from fuse_graph.
 *
 * Ratios at the shipped protocol sizes (`build/netc check netdefs/X.net
 * --memory`, and with `--train --autodiff`; fused plans; also in
 * docs/architecture.md, "Memory planning"):
 *
 *   net        step        naive / arena   arena / lower bound
 *   unet2d     inference       3.33x          1.000
 *   unet2d     training        1.73x          1.000
 *   unet3d     inference       1.86x          1.000
 *   unet3d     training        1.70x          1.000
 *   vnet       inference       1.75x          1.000
 *   vnet       training        1.58x          1.000
 *   voxresnet  inference       3.94x          1.000
 *   voxresnet  training        1.72x          1.000
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "fuse.h"
#include "memplan.h"
#include "ref.h"
#include "support.h"

static int64_t bytes_of(const Graph *g, int t)
{
    const Tensor *x = &g->tensors[t];
    int64_t n = 4 * (x->shape.rank == 0 ? 1 : shape_numel(&x->shape));
    return (n + MEMPLAN_ALIGN - 1) / MEMPLAN_ALIGN * MEMPLAN_ALIGN;
}

static bool is_update(const Node *n) { return n->op == OP_SGD_UPDATE || n->op == OP_ADAM_UPDATE; }

/* ---- a trivial fusion plan: one kernel per node, everything materialized ---- */

static void add_unique(int *v, int *n, int t)
{
    for (int i = 0; i < *n; i++)
        if (v[i] == t) return;
    v[(*n)++] = t;
}

static FusionPlan *trivial_plan(const Graph *g)
{
    FusionPlan *fp = calloc(1, sizeof *fp);
    ck_assert_ptr_nonnull(fp);
    fp->nkernels = g->nnodes;
    fp->kernels = calloc((size_t)g->nnodes + 1, sizeof *fp->kernels);
    fp->kernel_of_node = calloc((size_t)g->nnodes + 1, sizeof(int));
    fp->materialized = calloc((size_t)g->ntensors + 1, sizeof(bool));
    ck_assert(fp->kernels && fp->kernel_of_node && fp->materialized);
    for (int t = 0; t < g->ntensors; t++) fp->materialized[t] = true;
    for (int i = 0; i < g->nnodes; i++) {
        const Node *n = &g->nodes[i];
        Kernel *k = &fp->kernels[i];
        FusionKind fk = op_table[n->op].kind;
        if (n->op == OP_GRAD) fk = op_table[g->nodes[n->at.grad_node].op].kind == FK_ELEMWISE ? FK_ELEMWISE : FK_REDUCE;
        k->kind = is_update(n) ? KK_UPDATE : fk == FK_CONV ? KK_CONV : fk == FK_REDUCE || fk == FK_OPAQUE ? KK_REDUCE
                : fk == FK_INJECTIVE ? KK_COPY : KK_ELEMWISE;
        k->anchor = i;
        k->nodes = malloc(sizeof(int));
        k->nodes[0] = i;
        k->nnodes = 1;
        k->outs = malloc(sizeof(int));
        k->outs[0] = n->out;
        k->nouts = 1;
        k->ins = malloc(sizeof(int) * (size_t)(n->nin + n->nparams + 1));
        for (int j = 0; j < n->nin; j++) add_unique(k->ins, &k->nins, n->in[j]);
        for (int j = 0; j < n->nparams; j++) add_unique(k->ins, &k->nins, g->params[n->params[j]].tensor);
        fp->kernel_of_node[i] = i;
    }
    return fp;
}

static void trivial_plan_free(FusionPlan *fp)
{
    for (int k = 0; k < fp->nkernels; k++) {
        free(fp->kernels[k].nodes);
        free(fp->kernels[k].outs);
        free(fp->kernels[k].ins);
    }
    free(fp->kernels);
    free(fp->kernel_of_node);
    free(fp->materialized);
    free(fp->refused);
    free(fp);
}

/* ---- invariants ------------------------------------------------------------ */

static int root_of(const MemPlan *mp, int t)
{
    while (mp->in_place_of[t] >= 0 && mp->offset[mp->in_place_of[t]] >= 0) t = mp->in_place_of[t];
    return t;
}

static void check_plan(const char *what, const Graph *g, const FusionPlan *fp, const MemPlan *mp)
{
    bool *pinned = calloc((size_t)g->ntensors + 1, sizeof *pinned);
    for (int i = 0; i < g->noutputs; i++) pinned[g->outputs[i].tensor] = true;
    for (int i = 0; i < g->nlosses; i++) pinned[g->losses[i].tensor] = true;
    int64_t naive = 0, persistent = 0;
    int narena = 0;
    for (int t = 0; t < g->ntensors; t++) {
        const Tensor *x = &g->tensors[t];
        bool upd = x->producer >= 0 && is_update(&g->nodes[x->producer]);
        bool arena = x->kind == TK_ACTIVATION && fp->materialized[t] && !upd;
        ck_assert_msg((mp->offset[t] >= 0) == arena, "%s: %s: offset %lld", what, x->name, (long long)mp->offset[t]);
        if (x->kind != TK_ACTIVATION) persistent += 4 * (x->shape.rank == 0 ? 1 : shape_numel(&x->shape));
        if (upd) {
            ck_assert_int_eq(mp->in_place_of[t], g->nodes[x->producer].in[0]);
            ck_assert_int_eq(g->tensors[mp->in_place_of[t]].kind, TK_PARAM);
            /* the parameter's last reader runs no later than its update */
            int upk = fp->kernel_of_node[x->producer], pt = mp->in_place_of[t];
            for (int k = upk + 1; k < fp->nkernels; k++)
                for (int j = 0; j < fp->kernels[k].nins; j++)
                    ck_assert_msg(fp->kernels[k].ins[j] != pt, "%s: %s read after its update", what, g->tensors[pt].name);
        }
        if (!arena) {
            if (!upd) ck_assert_int_eq(mp->in_place_of[t], -1);
            continue;
        }
        narena++;
        naive += bytes_of(g, t);
        ck_assert_msg(mp->offset[t] % MEMPLAN_ALIGN == 0, "%s: %s at %lld", what, x->name, (long long)mp->offset[t]);
        ck_assert(mp->offset[t] + bytes_of(g, t) <= mp->arena_bytes);
        ck_assert(0 <= mp->first[t] && mp->first[t] <= mp->last[t] && mp->last[t] < fp->nkernels);
        if (pinned[t]) ck_assert_int_eq(mp->last[t], fp->nkernels - 1);
        int i = mp->in_place_of[t];
        if (i >= 0) {   /* in place: same bytes, the input dies where this one is born */
            ck_assert_int_eq(mp->offset[i], mp->offset[t]);
            ck_assert_int_eq(bytes_of(g, i), bytes_of(g, t));
            ck_assert_int_eq(mp->last[i], mp->first[t]);
            ck_assert_int_eq(fp->kernels[mp->first[t]].kind, KK_ELEMWISE);
            ck_assert(!pinned[i]);
        }
    }
    /* every kernel's reads and writes lie in the live range, and its ins
     * list every arena tensor its nodes read that another kernel wrote */
    int *stamp = calloc((size_t)g->nnodes + 1, sizeof *stamp);
    for (int k = 0; k < fp->nkernels; k++) {
        const Kernel *kn = &fp->kernels[k];
        for (int a = 0; a < kn->nnodes; a++) stamp[kn->nodes[a]] = k + 1;
        for (int a = 0; a < kn->nnodes; a++) {
            const Node *nd = &g->nodes[kn->nodes[a]];
            for (int j = 0; j < nd->nin; j++) {
                int t = nd->in[j], p = g->tensors[t].producer;
                if (mp->offset[t] < 0 || (p >= 0 && stamp[p] == k + 1)) continue;
                bool listed = false;
                for (int q = 0; q < kn->nins; q++) listed = listed || kn->ins[q] == t;
                ck_assert_msg(listed, "%s: kernel %d reads %s but does not list it", what, k, g->tensors[t].name);
            }
        }
        for (int j = 0; j < kn->nins; j++) {
            int t = kn->ins[j];
            if (mp->offset[t] >= 0) ck_assert_msg(mp->first[t] <= k && k <= mp->last[t], "%s: %s read at %d outside %d..%d",
                                                  what, g->tensors[t].name, k, mp->first[t], mp->last[t]);
        }
        for (int j = 0; j < kn->nouts; j++) {
            int t = kn->outs[j];
            if (mp->offset[t] >= 0) ck_assert_int_eq(mp->first[t], k);
        }
    }
    free(stamp);
    /* no two tensors live at once share bytes, unless in place */
    for (int a = 0; a < g->ntensors; a++) {
        if (mp->offset[a] < 0) continue;
        for (int b = a + 1; b < g->ntensors; b++) {
            if (mp->offset[b] < 0) continue;
            if (mp->first[a] > mp->last[b] || mp->first[b] > mp->last[a]) continue;
            if (mp->offset[a] >= mp->offset[b] + bytes_of(g, b) || mp->offset[b] >= mp->offset[a] + bytes_of(g, a)) continue;
            ck_assert_msg(root_of(mp, a) == root_of(mp, b), "%s: %s and %s overlap while both live", what,
                          g->tensors[a].name, g->tensors[b].name);
        }
    }
    ck_assert_int_gt(narena, 0);
    ck_assert_int_eq(mp->naive_bytes, naive);
    ck_assert_int_eq(mp->persistent_bytes, persistent);
    ck_assert_msg(mp->arena_bytes >= mp->lower_bound, "%s: arena %lld < lower bound %lld", what,
                  (long long)mp->arena_bytes, (long long)mp->lower_bound);
    ck_assert_msg(mp->arena_bytes <= mp->naive_bytes, "%s: arena %lld > naive %lld", what, (long long)mp->arena_bytes,
                  (long long)mp->naive_bytes);
    ck_assert_int_gt(mp->lower_bound, 0);
    free(pinned);
}

/* ---- the poisoning run ---------------------------------------------------------------- */

static void fill(const Graph *g, RefState *s, int classes)
{
    RefRng r = { 42 };
    for (int t = 0; t < g->ntensors; t++) {
        const Tensor *x = &g->tensors[t];
        if (x->kind == TK_INPUT) ref_fill_uniform(s, t, 7 + (uint64_t)t, -1, 1);
        if (x->kind == TK_LABEL)
            for (int64_t i = 0; i < s->numel[t]; i++) ref_i32(s, t)[i] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
        if (x->kind == TK_WEIGHTMAP) ref_fill_uniform(s, t, 9, 0, 2);
        if (x->kind == TK_HYPER) s->buf[t][0] = strcmp(x->name, "train.step") == 0 ? 1.0f : 0.01f;
    }
}

/* Runs the graph on ref_new memory and on the planned arena; returns the
 * number of tensors (outputs, losses, parameters) that differ in any bit. */
static int poisoned_run(const char *what, const Graph *g, const FusionPlan *fp, const MemPlan *mp, int classes)
{
    bool training = g->nlosses > 0;
    RefState *s = ref_new(g);
    RefPlanned *p = ref_planned_new(g, fp, mp);
    ck_assert(s && p);
    ref_init_params(g, s, 5);
    ref_init_params(g, &p->s, 5);
    fill(g, s, classes);
    fill(g, &p->s, classes);
    char err[256];
    ck_assert_msg(ref_forward(g, s, training, 3, err, sizeof err) == 0, "%s: %s", what, err);
    ck_assert_msg(ref_planned_run(g, p, fp, mp, training, 3, err, sizeof err) == 0, "%s: %s", what, err);
    int *newval = malloc(sizeof(int) * (size_t)(g->ntensors + 1));   /* param -> its update's output */
    for (int t = 0; t < g->ntensors; t++) newval[t] = t;
    for (int i = 0; i < g->nnodes; i++)
        if (is_update(&g->nodes[i])) newval[g->nodes[i].in[0]] = g->nodes[i].out;
    int differ = 0;
    for (int t = 0; t < g->ntensors; t++) {
        bool result = g->tensors[t].kind == TK_PARAM;
        for (int i = 0; i < g->noutputs; i++) result = result || g->outputs[i].tensor == t;
        for (int i = 0; i < g->nlosses; i++) result = result || g->losses[i].tensor == t;
        if (!result) continue;
        const float *want = s->buf[newval[t]], *got = p->s.buf[t];
        if (memcmp(want, got, sizeof(float) * (size_t)s->numel[t]) != 0) differ++;
    }
    free(newval);
    ref_planned_free(p);
    ref_free(s);
    return differ;
}

/* ---- per netdef ------------------------------------------------------------------------ */

typedef struct {
    const char *path, *infer_args, *train_args, *opt;
    int classes;
} NetCase;

static const double sgd[4] = { 0.05, 0.9, 1, 1e-4 };
static const double adam[5] = { 1e-2, 0.9, 0.999, 1e-8, 0.1 };

static const NetCase cases[] = {
    { "netdefs/unet2d.net", "-D base=4 -D protocol.size=32x32",
      "-D base=2 -D protocol.size=16x16 --train -D train.patch=16x16 -D train.batch=2", "sgd", 2 },
    { "netdefs/unet3d.net", "-D base=4 -D protocol.size=16x16x16",
      "-D base=2 -D protocol.size=8x8x8 --train -D train.patch=8x8x8 -D train.batch=2", "adam", 2 },
    { "netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16",
      "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", "sgd", 2 },
    { "netdefs/voxresnet.net", "-D base=4 -D protocol.size=16x16x16",
      "-D base=4 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", "adamw", 4 },
};

static Compiled *compile_case(const NetCase *c, bool train)
{
    Compiled *cc = compile_file(c->path, train ? c->train_args : c->infer_args);
    ck_clean(cc);
    if (train) {
        ck_assert_int_eq(cc->g->nlosses, 1);
        ck_assert_int_gt(autodiff(cc->g, cc->g->losses[0].tensor), 0);
        ck_assert_int_gt(append_optimizer(cc->g, c->opt, strcmp(c->opt, "sgd") == 0 ? sgd : adam), 0);
    }
    return cc;
}

static void plan_and_poison(const NetCase *c, bool train, bool real)
{
    Compiled *cc = compile_case(c, train);
    const Graph *g = cc->g;
    char what[256];
    snprintf(what, sizeof what, "%s (%s, %s plan)", c->path, train ? "training step" : "inference",
             real ? "fused" : "trivial");
    FusionPlan *fp = real ? fuse_graph(g, train) : trivial_plan(g);
    ck_assert_ptr_nonnull(fp);
    MemPlan *mp = memplan(g, fp);
    ck_assert_ptr_nonnull(mp);
    check_plan(what, g, fp, mp);
    int inplace = 0;
    for (int t = 0; t < g->ntensors; t++) inplace += mp->offset[t] >= 0 && mp->in_place_of[t] >= 0;
    if (!real) ck_assert_msg(inplace > 0, "%s: nothing in place", what);   /* relu after conv, at least */
    ck_assert_msg(mp->arena_bytes < mp->naive_bytes, "%s: no reuse at all", what);
    int differ = poisoned_run(what, g, fp, mp, c->classes);
    ck_assert_msg(differ == 0, "%s: %d results differ on the planned arena", what, differ);
    memplan_free(mp);
    if (real) fusion_plan_free(fp);
    else trivial_plan_free(fp);
    compiled_free(cc);
}

START_TEST(netdefs_inference_trivial_plan)
{
    plan_and_poison(&cases[_i], false, false);
}
END_TEST

START_TEST(netdefs_training_trivial_plan)
{
    plan_and_poison(&cases[_i], true, false);
}
END_TEST

START_TEST(netdefs_inference_fused_plan)
{
    plan_and_poison(&cases[_i], false, true);
}
END_TEST

START_TEST(netdefs_training_fused_plan)
{
    plan_and_poison(&cases[_i], true, true);
}
END_TEST

/* The poisoning has teeth: shorten the longest live range (a skip
 * connection) to its writer's kernel and the results change, whether the
 * bytes are just poisoned early or also handed to another tensor. */
static void sabotage(const NetCase *c, bool train, bool replan, bool real)
{
    Compiled *cc = compile_case(c, train);
    const Graph *g = cc->g;
    FusionPlan *fp = real ? fuse_graph(g, train) : trivial_plan(g);
    MemPlan *mp = memplan(g, fp);
    ck_assert_ptr_nonnull(mp);
    ck_assert_int_eq(poisoned_run(c->path, g, fp, mp, c->classes), 0);
    /* the longest-lived tensor that a later kernel's forward node reads (a
     * gradient node may read a forward value without needing it: add) */
    bool *forward_read_later = calloc((size_t)g->ntensors + 1, sizeof(bool));
    for (int k = 0; k < fp->nkernels; k++)
        for (int a = 0; a < fp->kernels[k].nnodes; a++) {
            const Node *nd = &g->nodes[fp->kernels[k].nodes[a]];
            for (int j = 0; j < nd->nin && nd->op != OP_GRAD; j++)
                if (mp->offset[nd->in[j]] >= 0 && mp->first[nd->in[j]] < k) forward_read_later[nd->in[j]] = true;
        }
    int victim = -1;
    for (int t = 0; t < g->ntensors; t++)
        if (forward_read_later[t] && mp->last[t] < fp->nkernels - 1 &&
            (victim < 0 || mp->last[t] - mp->first[t] > mp->last[victim] - mp->first[victim]))
            victim = t;
    free(forward_read_later);
    ck_assert_int_ge(victim, 0);
    ck_assert_int_gt(mp->last[victim] - mp->first[victim], 1);
    int64_t arena = mp->arena_bytes;
    mp->last[victim] = mp->first[victim];
    if (replan) {
        ck_assert(memplan_place(g, fp, mp));
        ck_assert_int_le(mp->arena_bytes, arena);
    }
    int differ = poisoned_run(c->path, g, fp, mp, c->classes);
    ck_assert_msg(differ > 0, "%s: %s freed early, yet the results are the same", c->path, g->tensors[victim].name);
    memplan_free(mp);
    if (real) fusion_plan_free(fp);
    else trivial_plan_free(fp);
    compiled_free(cc);
}

START_TEST(shortened_live_range_is_caught)
{
    sabotage(&cases[0], false, false, false);
    sabotage(&cases[0], false, true, false);
    sabotage(&cases[0], true, false, false);
    sabotage(&cases[3], false, true, false);
    sabotage(&cases[0], false, true, true);
    sabotage(&cases[2], true, true, true);
}
END_TEST

/* The summary and the table print without trouble. */
START_TEST(print_summary_and_table)
{
    Compiled *cc = compile_case(&cases[0], true);
    FusionPlan *fp = trivial_plan(cc->g);
    MemPlan *mp = memplan(cc->g, fp);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    memplan_print(f, cc->g, fp, mp, true);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "arena / lower bound"));
    ck_assert_ptr_nonnull(strstr(buf, "naive / arena"));
    ck_assert_ptr_nonnull(strstr(buf, "persistent"));
    ck_assert_ptr_nonnull(strstr(buf, "in place of"));
    ck_assert_ptr_nonnull(strstr(buf, cc->g->tensors[cc->g->outputs[0].tensor].name));
    free(buf);
    memplan_free(mp);
    trivial_plan_free(fp);
    compiled_free(cc);
}
END_TEST

Suite *memplan_suite(void)
{
    Suite *s = suite_create("memplan");
    TCase *tc = tcase_create("plan");
    tcase_set_timeout(tc, 300);
    int n = (int)(sizeof cases / sizeof cases[0]);
    tcase_add_loop_test(tc, netdefs_inference_trivial_plan, 0, n);
    tcase_add_loop_test(tc, netdefs_training_trivial_plan, 0, n);
    tcase_add_loop_test(tc, netdefs_inference_fused_plan, 0, n);
    tcase_add_loop_test(tc, netdefs_training_fused_plan, 0, n);
    tcase_add_test(tc, shortened_live_range_is_caught);
    tcase_add_test(tc, print_summary_and_table);
    suite_add_tcase(s, tc);
    return s;
}
