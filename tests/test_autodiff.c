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
#include "support.h"

static void fill(const Graph *g, RefState *s, int classes)
{
    RefRng r = { 42 };
    for (int t = 0; t < g->ntensors; t++) {
        if (g->tensors[t].kind == TK_INPUT) ref_fill_uniform(s, t, 7 + (uint64_t)t, -1, 1);
        if (g->tensors[t].kind == TK_LABEL)
            for (int64_t i = 0; i < s->numel[t]; i++) ref_i32(s, t)[i] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
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
        ck_assert_msg(p->grad >= 0, "%s: no gradient for %s", path, p->name);
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

Suite *autodiff_suite(void)
{
    Suite *s = suite_create("autodiff");
    TCase *tc = tcase_create("graph");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, netdefs_gradients_as_graph_nodes);
    tcase_add_test(tc, frozen_parameters_cost_nothing);
    suite_add_tcase(s, tc);
    return s;
}
