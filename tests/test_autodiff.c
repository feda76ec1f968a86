/* test_autodiff.c — reverse-mode differentiation on the L1 graph.
 *
 * The gradient nodes autodiff appends, executed by the reference executor
 * like any other nodes, must give the same parameter gradients as the
 * reference backward pass (itself checked against PyTorch autograd by
 * tools/ref_vs_torch.py and by finite differences in test_ref_grad.c). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "ref.h"
#include "ref_optim.h"
#include "support.h"

static void fill(const Graph *g, RefState *s, int classes)
{
    RefRng r = { 42 };
    for (int t = 0; t < g->ntensors; t++) {
        if (g->tensors[t].kind == TK_INPUT) ref_fill_uniform(s, t, 7 + (uint64_t)t, -1, 1);
        if (g->tensors[t].kind == TK_LABEL)
            for (int64_t i = 0; i < s->numel[t]; i++) ref_i32(s, t)[i] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
        if (g->tensors[t].kind == TK_WEIGHTMAP) ref_fill_uniform(s, t, 9, 0, 2);
    }
}

/* autodiff's nodes against ref_backward on one training graph; returns the
 * number of nodes autodiff added. */
static int compare(const char *path, const char *args, int classes)
{
    Compiled *c = compile_file(path, args);
    ck_clean(c);
    Graph *g = c->g;
    ck_assert_int_eq(g->nlosses, 1);
    int loss = g->losses[0].tensor, forward_nodes = g->nnodes;
    int added = autodiff(g, loss);
    ck_assert_int_gt(added, 0);
    RefState *s = ref_new(g);
    ref_init_params(g, s, 5);
    fill(g, s, classes);
    char err[256];
    ck_assert_msg(ref_forward(g, s, true, 3, err, sizeof err) == 0, "%s: %s", path, err);
    RefGrads *gr = ref_grads_new(g);
    ck_assert_msg(ref_backward(g, s, gr, loss, true, 3, err, sizeof err) == 0, "%s: %s", path, err);
    double top = 0;
    for (int i = 0; i < g->nparams; i++)
        for (int64_t k = 0; k < gr->numel[g->params[i].tensor]; k++)
            top = fmax(top, fabs(gr->buf[g->params[i].tensor][k]));
    ck_assert(top > 0);
    int compared = 0;
    for (int i = 0; i < g->nparams; i++) {
        const Param *p = &g->params[i];
        if (!p->trainable || p->frozen) {
            ck_assert_int_eq(p->grad, -1);
            continue;
        }
        if (p->grad < 0) {   /* only a parameter the loss does not depend on (an unweighted head) */
            for (int64_t k = 0; k < gr->numel[p->tensor]; k++)
                ck_assert_msg(gr->buf[p->tensor][k] == 0, "%s: no gradient node for %s", path, p->name);
            bool *inf = graph_influences(g, loss);
            ck_assert_msg(!inf[p->tensor], "%s: no gradient for %s", path, p->name);
            free(inf);
            continue;
        }
        const float *want = gr->buf[p->tensor], *got = s->buf[p->grad];
        for (int64_t k = 0; k < gr->numel[p->tensor]; k++)
            ck_assert_msg(fabs(got[k] - want[k]) <= 1e-5 * top, "%s: %s[%lld]: graph %g, reference %g", path, p->name,
                          (long long)k, got[k], want[k]);
        compared++;
    }
    ck_assert_int_gt(compared, 0);
    /* the forward part is untouched */
    ck_assert_int_eq(g->nodes[forward_nodes - 1].out, loss);
    ref_grads_free(gr);
    ref_free(s);
    compiled_free(c);
    return added;
}

START_TEST(netdefs_gradients_as_graph_nodes)
{
    compare("netdefs/unet2d.net", "-D base=2 -D protocol.size=16x16 --train -D train.patch=16x16 -D train.batch=2", 2);
    compare("netdefs/unet3d.net", "-D base=2 -D protocol.size=8x8x8 --train -D train.patch=8x8x8 -D train.batch=2", 2);
    compare("netdefs/vnet.net", "-D base=2 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", 2);
    compare("netdefs/voxresnet.net",
            "-D base=4 -D protocol.size=16x16x16 --train -D train.patch=16x16x16 -D train.batch=1", 4);
    /* dice_ce with a voxel weight map and an ignore label on deep-supervision heads */
    compare("tests/nets/ds_unet.net", "--train", 3);
}
END_TEST

/* Frozen parameters get no gradient and cost no backward nodes. */
START_TEST(frozen_parameters_cost_nothing)
{
    const char *src =
        "net n {\n  input image\n  enc = image -> conv(4, 3) -> relu -> conv(4, 3) -> relu\n"
        "  output logits = conv(2, 1)(enc)\n}\n"
        "protocol p {\n  size 8 x 8\n  classes 2\n}\n"
        "train n on p {\n  loss ce(logits, labels)\n  batch 2\n  %s\n}\n";
    char buf[1024];
    snprintf(buf, sizeof buf, src, "");
    Compiled *all = compile_text("f.net", buf, "--train");
    ck_clean(all);
    int full = autodiff(all->g, all->g->losses[0].tensor);
    snprintf(buf, sizeof buf, src, "freeze enc");
    Compiled *part = compile_text("f.net", buf, "--train");
    ck_clean(part);
    int partial = autodiff(part->g, part->g->losses[0].tensor);
    ck_assert_int_lt(partial, full);
    int frozen = 0;
    for (int i = 0; i < part->g->nparams; i++)
        if (part->g->params[i].frozen) {
            frozen++;
            ck_assert_int_eq(part->g->params[i].grad, -1);
        }
    ck_assert_int_eq(frozen, 4);   /* two convs: weight and bias each */
    /* only the head's parameters are differentiated: no gradient flows
     * into the encoder at all */
    for (int i = 0; i < part->g->nnodes; i++)
        if (part->g->nodes[i].op == OP_GRAD) {
            const Node *fwd = &part->g->nodes[part->g->nodes[i].at.grad_node];
            ck_assert_msg(strncmp(fwd->name, "enc", 3) != 0, "gradient node for frozen %s", fwd->name);
        }
    compiled_free(all);
    compiled_free(part);
}
END_TEST

/* Three training steps two ways: the graph with its gradient and update
 * nodes (the trainer only sets train.lr / train.step and copies each update
 * node's output back into its parameter), and the reference backward plus
 * the reference optimizer.  The parameters must agree. */
static void steps_compare(const char *name, const char *src_or_path, const char *args, bool is_text,
                          const char *opt, const double *num, int classes, double tol)
{
    Compiled *a = is_text ? compile_text(name, src_or_path, args) : compile_file(src_or_path, args);
    Compiled *b = is_text ? compile_text(name, src_or_path, args) : compile_file(src_or_path, args);
    ck_clean(a);
    ck_clean(b);
    Graph *ga = a->g, *gb = b->g;
    int nparams = gb->nparams;
    autodiff(ga, ga->losses[0].tensor);
    int updates = append_optimizer(ga, opt, num);
    ck_assert_int_gt(updates, 0);
    int lr_t = -1, step_t = -1;
    for (int i = 0; i < ga->ninputs; i++) {
        if (strcmp(ga->inputs[i].name, "train.lr") == 0) lr_t = ga->inputs[i].tensor;
        if (strcmp(ga->inputs[i].name, "train.step") == 0) step_t = ga->inputs[i].tensor;
    }
    ck_assert(lr_t >= 0 && step_t >= 0);
    RefState *sa = ref_new(ga), *sb = ref_new(gb);
    ref_init_params(ga, sa, 5);
    ref_init_params(gb, sb, 5);
    fill(ga, sa, classes);
    fill(gb, sb, classes);
    RefOptConfig oc;
    ck_assert_int_eq(ref_opt_config(opt, num, &oc), 0);
    RefOptim *o = ref_optim_new(gb, &oc);
    RefGrads *gr = ref_grads_new(gb);
    char err[256];
    for (int step = 1; step <= 3; step++) {
        sa->buf[lr_t][0] = (float)num[0];
        sa->buf[step_t][0] = (float)step;
        ck_assert_msg(ref_forward(ga, sa, true, 3, err, sizeof err) == 0, "%s", err);
        for (int i = 0; i < ga->nnodes; i++) {
            const Node *nd = &ga->nodes[i];
            if (nd->op != OP_SGD_UPDATE && nd->op != OP_ADAM_UPDATE) continue;
            memcpy(sa->buf[nd->in[0]], sa->buf[nd->out], sizeof(float) * (size_t)sa->numel[nd->out]);
        }
        ck_assert(ref_forward(gb, sb, true, 3, err, sizeof err) == 0);
        ck_assert(ref_backward(gb, sb, gr, gb->losses[0].tensor, true, 3, err, sizeof err) == 0);
        ref_optim_step(o, gb, sb, gr, num[0]);
    }
    double top = 0, worst = 0;
    for (int i = 0; i < nparams; i++) {
        int t = gb->params[i].tensor;
        for (int64_t k = 0; k < sb->numel[t]; k++) top = fmax(top, fabs(sb->buf[t][k]));
    }
    for (int i = 0; i < nparams; i++) {
        if (!gb->params[i].trainable) continue;
        int t = gb->params[i].tensor;
        for (int64_t k = 0; k < sb->numel[t]; k++)
            worst = fmax(worst, fabs(sa->buf[ga->params[i].tensor][k] - sb->buf[t][k]) / top);
    }
    ck_assert_msg(worst <= tol, "%s with %s: parameters differ by %g of the largest", name, opt, worst);
    /* the optimizer state is a parameter of the update nodes, as torch.optim names it */
    bool named = false;
    for (int i = nparams; i < ga->nparams; i++)
        named = named || strstr(ga->params[i].name, strcmp(opt, "sgd") == 0 ? ".momentum_buffer" : ".exp_avg_sq");
    ck_assert(named);
    ref_optim_free(o);
    ref_grads_free(gr);
    ref_free(sa);
    ref_free(sb);
    compiled_free(a);
    compiled_free(b);
}

START_TEST(optimizer_steps_as_graph_nodes)
{
    const double sgd[4] = { 0.05, 0.9, 1, 1e-4 };
    steps_compare("unet2d", "netdefs/unet2d.net",
                  "-D base=2 -D protocol.size=16x16 --train -D train.patch=16x16 -D train.batch=2", false, "sgd", sgd,
                  2, 1e-5);
    /* aux2's head has weight 0 under deep supervision: neither side steps it */
    steps_compare("ds_unet", "tests/nets/ds_unet.net", "--train", false, "sgd", sgd, 3, 1e-5);
    /* Adam normalises each gradient element, so rounding differences in
     * near-zero gradients (a bias before batchnorm) would be magnified: a
     * net without normalisation keeps the comparison sharp. */
    const char *plain =
        "net n {\n  input image\n  h = image -> conv(4, 3) -> relu -> conv(4, 3, stride = 2) -> prelu\n"
        "  output logits = conv(3, 1)(upsample(2)(h))\n}\n"
        "protocol p {\n  size 8 x 8\n  classes 3\n}\n"
        "train n on p {\n  loss ce(logits, labels) + dice(logits, labels)\n  batch 2\n}\n";
    const double adam[5] = { 1e-2, 0.9, 0.999, 1e-8, 0.1 };
    steps_compare("plain.net", plain, "--train", true, "adam", adam, 3, 1e-5);
    steps_compare("plain.net", plain, "--train", true, "adamw", adam, 3, 1e-5);
}
END_TEST

Suite *autodiff_suite(void)
{
    Suite *s = suite_create("autodiff");
    TCase *tc = tcase_create("graph");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, netdefs_gradients_as_graph_nodes);
    tcase_add_test(tc, frozen_parameters_cost_nothing);
    tcase_add_test(tc, optimizer_steps_as_graph_nodes);
    suite_add_tcase(s, tc);
    return s;
}
