/* test_fuse.c — the fusion pass (compiler/fuse.c).
 *
 * Exact kernel counts for every shipped netdef, for inference and for a
 * whole training step (so that a fusion regression fails a test), the
 * structural invariants of every plan, and the individual rules of
 * docs/architecture.md, "Fusion". */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "fuse.h"
#include "support.h"

/* The training step as `netc check --autodiff` builds it (the optimizer
 * does not change the kernels: all updates are one kernel either way). */
static Compiled *training_step(const char *path, const char *args)
{
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    ck_assert_int_eq(c->g->nlosses, 1);
    ck_assert_int_gt(autodiff(c->g, c->g->losses[0].tensor), 0);
    const double sgd[4] = { 0.01, 0.99, 1, 3e-5 };
    ck_assert_int_gt(append_optimizer(c->g, "sgd", sgd), 0);
    return c;
}

static bool listed(const Kernel *K, int node)
{
    for (int j = 0; j < K->nnodes; j++)
        if (K->nodes[j] == node) return true;
    return false;
}

static bool has(const int *a, int n, int x)
{
    for (int j = 0; j < n; j++)
        if (a[j] == x) return true;
    return false;
}

static int node_reads(const Graph *g, const Node *n, int k)
{
    return k < n->nin ? n->in[k] : g->params[n->params[k - n->nin]].tensor;
}

/* The invariants every plan must satisfy. */
static void check_plan(const Graph *g, const FusionPlan *fp, const char *what)
{
    ck_assert_msg(fp != NULL, "%s: no plan", what);
    /* every node is in some kernel; a node that is not an inlined movement
     * op is in exactly one, and kernel_of_node gives the first listing */
    for (int i = 0; i < g->nnodes; i++) {
        int k = fp->kernel_of_node[i];
        ck_assert_msg(k >= 0 && k < fp->nkernels, "%s: %s is in no kernel", what, g->nodes[i].name);
        ck_assert_msg(listed(&fp->kernels[k], i), "%s: %s not listed in its kernel", what, g->nodes[i].name);
        int count = 0, first = -1;
        for (int q = 0; q < fp->nkernels; q++)
            if (listed(&fp->kernels[q], i)) {
                count++;
                if (first < 0) first = q;
            }
        ck_assert_int_eq(first, k);
        if (!fp->inlined[i]) ck_assert_msg(count == 1, "%s: %s in %d kernels", what, g->nodes[i].name, count);
        else ck_assert_msg(op_table[g->nodes[i].op].kind == FK_INJECTIVE || g->nodes[i].op == OP_GRAD,
                           "%s: %s inlined but not a movement op", what, g->nodes[i].name);
    }
    for (int k = 0; k < fp->nkernels; k++) {
        const Kernel *K = &fp->kernels[k];
        ck_assert(listed(K, K->anchor));
        ck_assert_msg(!fp->inlined[K->anchor], "%s: kernel %d anchored by an inlined node", what, k);
        for (int j = 1; j < K->nnodes; j++) ck_assert(K->nodes[j - 1] < K->nodes[j]);   /* graph order */
        /* no movement op is a kernel of its own unless it is a copy with a reason */
        const Node *a = &g->nodes[K->anchor];
        bool movement = op_table[a->op].kind == FK_INJECTIVE && !(a->op == OP_UPSAMPLE && a->at.mode != 0);
        if (movement || K->kind == KK_COPY)
            ck_assert_msg(K->kind == KK_COPY && K->reason && K->nnodes >= 1, "%s: movement op %s is kernel %d",
                          what, a->name, k);
        for (int j = 0; j < K->nouts; j++) {
            int t = K->outs[j];
            ck_assert(fp->materialized[t]);
            ck_assert(g->tensors[t].producer >= 0 && listed(K, g->tensors[t].producer));
        }
        /* every value read is either computed in this kernel or materialized
         * by an earlier kernel (or an input / parameter): a topological order */
        for (int j = 0; j < K->nnodes; j++) {
            const Node *n = &g->nodes[K->nodes[j]];
            for (int r = 0; r < n->nin + n->nparams; r++) {
                int t = node_reads(g, n, r), p = g->tensors[t].producer;
                if (p >= 0 && listed(K, p)) continue;
                ck_assert_msg(fp->materialized[t], "%s: kernel %d reads %s, which is not materialized", what, k,
                              g->tensors[t].name);
                ck_assert_msg(has(K->ins, K->nins, t), "%s: kernel %d reads %s but does not list it", what, k,
                              g->tensors[t].name);
                if (p < 0) continue;
                int w = fp->kernel_of_node[p];
                ck_assert_msg(w < k, "%s: kernel %d reads %s from a later kernel %d", what, k, g->tensors[t].name, w);
                ck_assert_msg(has(fp->kernels[w].outs, fp->kernels[w].nouts, t), "%s: %s read but never written",
                              what, g->tensors[t].name);
            }
        }
        for (int j = 0; j < K->nins; j++) ck_assert(fp->materialized[K->ins[j]]);
    }
    /* non-materialized values live inside one kernel: never a port or parameter */
    for (int i = 0; i < g->noutputs; i++) ck_assert(fp->materialized[g->outputs[i].tensor]);
    for (int i = 0; i < g->nlosses; i++) ck_assert(fp->materialized[g->losses[i].tensor]);
    for (int i = 0; i < g->nparams; i++) ck_assert(fp->materialized[g->params[i].tensor]);
    for (int t = 0; t < g->ntensors; t++)
        if (g->tensors[t].producer < 0) ck_assert(fp->materialized[t]);
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == OP_SGD_UPDATE || g->nodes[i].op == OP_ADAM_UPDATE)
            ck_assert(fp->materialized[g->nodes[i].out]);
    for (int k = 0; k < fp->nrefused; k++) {
        ck_assert(fp->refused[k].reason && fp->refused[k].reason[0]);
        ck_assert(fp->refused[k].producer >= 0 && fp->refused[k].producer < g->nnodes);
        ck_assert(fp->refused[k].consumer >= 0 && fp->refused[k].consumer < g->nnodes);
        ck_assert_int_ne(fp->kernel_of_node[fp->refused[k].producer], fp->kernel_of_node[fp->refused[k].consumer]);
    }
    /* the printer runs on it */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fusion_print(f, g, fp);
    fclose(f);
    char tail[64];
    snprintf(tail, sizeof tail, "%d kernels for %d nodes", fp->nkernels, g->nnodes);
    ck_assert_msg(strstr(buf, tail), "%s: no totals in:\n%s", what, buf);
    free(buf);
}

static int kernels_of(const char *path, const char *args, bool step)
{
    Compiled *c = step ? training_step(path, args) : compile_file(path, args);
    ck_clean(c);
    FusionPlan *fp = fuse_graph(c->g, c->g->nlosses > 0);
    check_plan(c->g, fp, path);
    int n = fp->nkernels;
    fusion_plan_free(fp);
    compiled_free(c);
    return n;
}

#define UNET2D_TRAIN "-D base=2 -D protocol.size=16x16 --train -D train.patch=16x16 -D train.batch=2"
#define UNET3D_TRAIN "-D base=2 -D protocol.size=8x8x8 --train -D train.patch=8x8x8 -D train.batch=2"
#define VNET_TRAIN "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1"
#define VOXRES_TRAIN "-D base=4 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1"

/* unet2d, inference: 19 convs (2 per level x 4 encoder + 2 bottom + 2 x 4
 * decoder + the 1x1 head) and 4 upconvs each anchor a kernel with
 * batchnorm (folded) and relu as epilogue; the 4 maxpools are reductions;
 * the 4 concats are inlined into the decoder convs that read them:
 * 23 + 4 = 27 kernels for 67 nodes.
 *
 * unet2d, training step (314 nodes at base 4, the same structure here):
 *   forward  23 conv-like + 18 batchnorm (batch statistics: a reduction,
 *            taking relu as epilogue) + 4 maxpool + dice + ce (taking the
 *            loss sum) = 47;
 *   backward 1 elementwise kernel (the `ones` seed and the gradients of the
 *            loss sum) + ce and dice gradients + 1 elementwise kernel for
 *            the logits' gradient sum (loss gradients scatter, so they take
 *            no epilogue) = 4; per conv-like node an input gradient (a
 *            transposed conv taking the next relu's gradient as epilogue;
 *            none for the first conv, whose input is the image), a weight
 *            and a bias gradient: 22 + 2 x 23 = 68; per batchnorm input,
 *            weight and bias gradients: 3 x 18 = 54; per maxpool a
 *            gradient (a scatter: no epilogue) and an elementwise kernel
 *            for the skip-gradient sum and the relu gradient: 8; = 134;
 *   update   all 82 sgd_update nodes: 1.
 * 47 + 134 + 1 = 182. */
START_TEST(netdef_kernel_counts)
{
    ck_assert_int_eq(kernels_of("netdefs/unet2d.net", NULL, false), 27);
    ck_assert_int_eq(kernels_of("netdefs/unet2d.net", UNET2D_TRAIN, true), 182);
    ck_assert_int_eq(kernels_of("netdefs/unet3d.net", NULL, false), 21);
    ck_assert_int_eq(kernels_of("netdefs/unet3d.net", UNET3D_TRAIN, true), 143);
    ck_assert_int_eq(kernels_of("netdefs/vnet.net", NULL, false), 30);
    ck_assert_int_eq(kernels_of("netdefs/vnet.net", VNET_TRAIN, true), 156);
    ck_assert_int_eq(kernels_of("netdefs/voxresnet.net", NULL, false), 24);
    ck_assert_int_eq(kernels_of("netdefs/voxresnet.net", VOXRES_TRAIN, true), 177);
    ck_assert_int_eq(kernels_of("tests/nets/ds_unet.net", NULL, false), 17);
    ck_assert_int_eq(kernels_of("tests/nets/ds_unet.net", "--train", true), 74);
}
END_TEST

static const char *rules_net =
    "net n {\n"
    "  input image\n"
    "  a = image -> relu -> scale(2) -> sigmoid\n"
    "  b = a -> conv(4, 3) -> batchnorm -> relu\n"
    "  c = concat(b, crop(1)(pad(1)(b)))\n"
    "  g = global_avgpool(c)\n"
    "  m = mul(c, g)\n"
    "  output logits = conv(2, 1)(m)\n"
    "}\n"
    "protocol p {\n  size 8 x 8\n  classes 2\n}\n"
    "train n on p {\n  loss ce(logits, labels)\n  batch 2\n}\n";

static int kernel_of(const Graph *g, const FusionPlan *fp, const char *name)
{
    const Node *n = find_node(g, name);
    ck_assert_msg(n != NULL, "no node %s", name);
    return fp->kernel_of_node[n - g->nodes];
}

static const char *refusal(const Graph *g, const FusionPlan *fp, const char *producer, const char *consumer)
{
    for (int k = 0; k < fp->nrefused; k++)
        if (strcmp(g->nodes[fp->refused[k].producer].name, producer) == 0 &&
            strcmp(g->nodes[fp->refused[k].consumer].name, consumer) == 0)
            return fp->refused[k].reason;
    return NULL;
}

START_TEST(rules_inference)
{
    Compiled *c = compile_text("r.net", rules_net, NULL);
    ck_clean(c);
    const Graph *g = c->g;
    FusionPlan *fp = fuse_graph(g, false);
    check_plan(g, fp, "rules");
    /* an elementwise chain is one kernel */
    int k = kernel_of(g, fp, "a.relu");
    ck_assert_int_eq(fp->kernels[k].kind, KK_ELEMWISE);
    ck_assert_int_eq(kernel_of(g, fp, "a.scale"), k);
    ck_assert_int_eq(kernel_of(g, fp, "a.sigmoid"), k);
    ck_assert_int_eq(fp->kernels[k].nnodes, 3);
    ck_assert(!fp->materialized[find_node(g, "a.relu")->out]);
    ck_assert(fp->materialized[find_node(g, "a.sigmoid")->out]);
    /* conv + batchnorm (folded) + relu is one kernel in inference */
    k = kernel_of(g, fp, "b.conv");
    ck_assert_int_eq(fp->kernels[k].kind, KK_CONV);
    ck_assert_int_eq(kernel_of(g, fp, "b.batchnorm"), k);
    ck_assert_int_eq(kernel_of(g, fp, "b.relu"), k);
    ck_assert_str_eq(refusal(g, fp, "a.sigmoid", "b.conv"), "conv anchors its own kernel");
    /* pad, crop and concat are inlined into each consumer: the pool and the mul */
    const char *moves[] = { "c.pad", "c.crop", "c.concat" };
    int pool = kernel_of(g, fp, "g"), mul = kernel_of(g, fp, "m");
    ck_assert_int_ne(pool, mul);
    ck_assert_int_eq(fp->kernels[pool].kind, KK_REDUCE);
    for (int i = 0; i < 3; i++) {
        const Node *n = find_node(g, moves[i]);
        ck_assert(fp->inlined[n - g->nodes]);
        ck_assert(!fp->materialized[n->out]);
        ck_assert(listed(&fp->kernels[pool], (int)(n - g->nodes)));
        ck_assert(listed(&fp->kernels[mul], (int)(n - g->nodes)));
        ck_assert_int_eq(kernel_of(g, fp, moves[i]), pool);
    }
    /* the concat's input is read by two kernels, so it is materialized */
    ck_assert(fp->materialized[find_node(g, "b.relu")->out]);
    /* a reduction feeding a broadcast ends a kernel */
    ck_assert_str_eq(refusal(g, fp, "g", "m"), "a reduction feeding a broadcast ends a kernel");
    ck_assert_int_eq(fp->nkernels, 5);
    fusion_plan_free(fp);
    compiled_free(c);
}
END_TEST

START_TEST(rules_training)
{
    Compiled *c = compile_text("r.net", rules_net, "--train");
    ck_clean(c);
    autodiff(c->g, c->g->losses[0].tensor);
    const double sgd[4] = { 0.01, 0.9, 0, 0 };
    int updates = append_optimizer(c->g, "sgd", sgd);
    const Graph *g = c->g;
    FusionPlan *fp = fuse_graph(g, true);
    check_plan(g, fp, "rules, training");
    /* batchnorm uses batch statistics: not folded, but relu is its epilogue */
    int k = kernel_of(g, fp, "b.conv");
    ck_assert_int_ne(kernel_of(g, fp, "b.batchnorm"), k);
    ck_assert_int_eq(fp->kernels[kernel_of(g, fp, "b.batchnorm")].kind, KK_REDUCE);
    ck_assert_int_eq(kernel_of(g, fp, "b.relu"), kernel_of(g, fp, "b.batchnorm"));
    ck_assert_int_eq(fp->kernels[k].nnodes, 1);
    ck_assert_str_eq(refusal(g, fp, "b.conv", "b.batchnorm"), "batchnorm uses batch statistics in training");
    /* the elementwise chain still fuses; its values are kept for the backward pass */
    ck_assert_int_eq(kernel_of(g, fp, "a.scale"), kernel_of(g, fp, "a.relu"));
    ck_assert_int_eq(kernel_of(g, fp, "a.sigmoid"), kernel_of(g, fp, "a.relu"));
    /* the same net in inference mode folds it */
    FusionPlan *inf = fuse_graph(g, false);
    check_plan(g, inf, "rules, training graph with inference rules");
    ck_assert_int_eq(kernel_of(g, inf, "b.batchnorm"), kernel_of(g, inf, "b.conv"));
    fusion_plan_free(inf);
    /* one kernel for all sgd_update nodes */
    int upd = -1, n = 0;
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == OP_SGD_UPDATE) {
            if (upd < 0) upd = fp->kernel_of_node[i];
            ck_assert_int_eq(fp->kernel_of_node[i], upd);
            n++;
        }
    ck_assert_int_eq(n, updates);
    ck_assert_int_eq(fp->kernels[upd].kind, KK_UPDATE);
    ck_assert_int_eq(fp->kernels[upd].nnodes, updates);
    ck_assert_int_eq(upd, fp->nkernels - 1);
    /* the gradient w.r.t. a conv's input is a transposed conv; w.r.t. its weight a reduction */
    ck_assert_int_eq(fp->kernels[kernel_of(g, fp, "grad.logits.input0")].kind, KK_CONV);
    ck_assert_int_eq(fp->kernels[kernel_of(g, fp, "grad.logits.weight")].kind, KK_REDUCE);
    ck_assert_str_eq(refusal(g, fp, "grad.loss.input0", "grad.logits.weight"), "a weight gradient is a reduction");
    fusion_plan_free(fp);
    compiled_free(c);
}
END_TEST

/* All updates of a shipped net in one kernel; the concat gradients inlined. */
START_TEST(training_step_updates_and_movement)
{
    Compiled *c = training_step("netdefs/unet2d.net", UNET2D_TRAIN);
    const Graph *g = c->g;
    FusionPlan *fp = fuse_graph(g, true);
    check_plan(g, fp, "unet2d step");
    int upd = -1, n = 0, copies = 0;
    for (int i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].op == OP_SGD_UPDATE) {
            if (upd < 0) upd = fp->kernel_of_node[i];
            ck_assert_int_eq(fp->kernel_of_node[i], upd);
            n++;
        }
        if (g->nodes[i].op == OP_CONCAT) ck_assert(fp->inlined[i]);
        if (g->nodes[i].op == OP_GRAD && g->nodes[g->nodes[i].at.grad_node].op == OP_CONCAT)
            ck_assert(fp->inlined[i]);
    }
    for (int k = 0; k < fp->nkernels; k++) copies += fp->kernels[k].kind == KK_COPY;
    ck_assert_int_eq(copies, 0);
    ck_assert_int_eq(n, 82);
    ck_assert_int_eq(fp->kernels[upd].nnodes, 82);
    fusion_plan_free(fp);
    compiled_free(c);
}
END_TEST

/* A movement op whose value must exist gets a copy kernel; no crash on odd graphs. */
START_TEST(copies_and_odd_graphs)
{
    const char *src =
        "net n {\n  input image\n  h = image -> conv(2, 3) -> relu\n"
        "  output cropped = crop(1)(h)\n  output logits = conv(2, 1)(h)\n}\n"
        "protocol p {\n  size 8 x 8\n  classes 2\n}\n";
    Compiled *c = compile_text("c.net", src, NULL);
    ck_clean(c);
    FusionPlan *fp = fuse_graph(c->g, false);
    check_plan(c->g, fp, "copy");
    int k = kernel_of(c->g, fp, "cropped");
    ck_assert_int_eq(fp->kernels[k].kind, KK_COPY);
    ck_assert_str_eq(fp->kernels[k].reason, "a graph output or loss");
    ck_assert(!fp->inlined[find_node(c->g, "cropped") - c->g->nodes]);
    fusion_plan_free(fp);
    compiled_free(c);
    ck_assert(fuse_graph(NULL, false) == NULL);
    fusion_plan_free(NULL);
}
END_TEST

Suite *fuse_suite(void)
{
    Suite *s = suite_create("fuse");
    TCase *tc = tcase_create("plans");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, netdef_kernel_counts);
    tcase_add_test(tc, rules_inference);
    tcase_add_test(tc, rules_training);
    tcase_add_test(tc, training_step_updates_and_movement);
    tcase_add_test(tc, copies_and_odd_graphs);
    suite_add_tcase(s, tc);
    return s;
}
