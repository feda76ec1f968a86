/* test_codegen_large.c — long float32 reductions in generated code against
 * float64 (part of the codegen suite: CK_RUN_SUITE=codegen
 * CK_RUN_CASE=large).  A 4x1x256x256 step through conv, batchnorm and a
 * multiply with inputs around 10 +- 1 (a large mean, where naive
 * sequential float32 sums drift): each sum is checked against float64
 * computed from the kernel's own inputs at 1e-5, on the C backend and the
 * LLVM JIT.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autodiff.h"
#include "cbackend.h"
#include "fuse.h"
#include "l3_llvm.h"
#include "memplan.h"
#include "lower.h"
#include "ref.h"
#include "codegen_fixture.h"
#include "support.h"
#include "ref_fixture.h"

/* ---- large reductions against float64 ----------------------------------------------------------- */

/* Adds node k(in) with its parameters; returns its output tensor. */
static int big_node(Graph *g, OpKind k, const char *name, const int *in, int nin, OpAttrs at, int *node)
{
    SrcLoc nl;
    memset(&nl, 0, sizeof nl);
    const Tensor *tp[8];
    Shape ins[8];
    for (int j = 0; j < nin; j++) tp[j] = &g->tensors[in[j]], ins[j] = g->tensors[in[j]].shape;
    ShapeCtx cx = { NULL, nl, NULL, ins[0].rank - 2, tp, nin, NULL, NULL };
    Shape os;
    ck_assert_msg(op_table[k].shape(&cx, &at, ins, nin, &os), "%s: shape rule failed", name);
    int out = graph_add_tensor(g, name, os, DT_F32, TK_ACTIVATION);
    *node = graph_add_node(g, k, name, in, nin, out, &at, nl);
    g->tensors[out].producer = *node;
    ParamSpec ps[NODE_MAX_PARAMS];
    int np = op_table[k].params(&at, ins, nin, ps);
    for (int j = 0; j < np; j++) graph_add_param(g, *node, &ps[j]);
    return out;
}

/* The output of the grad node of (node, operand). */
static int grad_of(const Graph *g, int node, int operand)
{
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == OP_GRAD && g->nodes[i].at.grad_node == node && g->nodes[i].at.grad_operand == operand)
            return g->nodes[i].out;
    ck_abort_msg("no gradient of node %d operand %d", node, operand);
    return -1;
}

/* A training step's sums over 2^18 voxels (4 x 1 x 256 x 256): x -> conv
 * 3x3 (weights set to the identity) -> batchnorm -> y; yr = y * r, r in
 * [0.5, 1.5], seeds the backward pass.  Each sum of the generated code is
 * checked against float64 computed here from that kernel's own generated
 * inputs: batchnorm's mean and variance (through its normalized output),
 * its backward sums (its weight, bias and input gradients) and the conv
 * weight gradient.  x is 10 + U(-1, 1), a mean 17 standard deviations
 * from 0: float32 summation one term after another over 2^18 terms puts
 * the mean 1e-4 standard deviations off (and the normalized output with
 * it); the generated sums are blocked (sum_loops in lower_internal.h) and
 * must stay within 1e-5 of the largest value (or, for a sum that cancels,
 * of the sum of its terms' magnitudes). */
static void large_reductions(bool llvm)
{
    const char *be = llvm ? "llvm" : "c";
    Graph *g = graph_new("t", "p", 2);
    SrcLoc nl;
    memset(&nl, 0, sizeof nl);
    int64_t N = 4, H = 256, W = 256, sp = H * W, cnt = N * sp;
    int x = graph_add_tensor(g, "x", SH(N, 1, H, W), DT_F32, TK_INPUT);
    graph_add_input(g, "x", x, nl);
    OpAttrs ca = attrs(OP_CONV, 2);
    ca.channels = 1;
    ca.kernel[0] = ca.kernel[1] = 3;
    ca.pad.mode = PAD_SAME;
    int conv, bn, mulnode;
    int h = big_node(g, OP_CONV, "conv", &x, 1, ca, &conv);
    int y = big_node(g, OP_BATCHNORM, "bn", &h, 1, attrs(OP_BATCHNORM, 2), &bn);
    int r = graph_add_tensor(g, "r", SH(N, 1, H, W), DT_F32, TK_INPUT);
    graph_add_input(g, "r", r, nl);
    int two[2] = { y, r };
    int yr = big_node(g, OP_MUL, "seed", two, 2, attrs(OP_MUL, 2), &mulnode);
    graph_add_output(g, "yr", yr, nl);
    ck_assert_int_gt(autodiff(g, yr), 0);
    char err[1500];
    L3Module *m = lower_graph(g, true, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    CBackend *cb = NULL;
    L3Llvm *jit = NULL;
    NetcEntry run;
    if (llvm) {
        jit = l3_llvm_jit(m, err, sizeof err);
        ck_assert_msg(jit != NULL, "%s", err);
        run = l3_llvm_entry(jit, "netc_train_forward");
    } else {
        cb = cbackend_compile(m, err, sizeof err);
        ck_assert_msg(cb != NULL, "%s", err);
        run = cbackend_entry(cb, "netc_train_forward");
    }
    ck_assert_ptr_nonnull(run);

    uint64_t seed = codegen_test_seed();
    RefState *s = ref_new(g);
    ck_assert_ptr_nonnull(s);
    ref_init_params(g, s, seed);
    codegen_fill(g, s, seed);
    ref_fill_uniform(s, x, seed + 1, 9, 11);
    ref_fill_uniform(s, r, seed + 2, 0.5, 1.5);
    float *cw = s->buf[g->params[g->nodes[conv].params[0]].tensor], *cbias = s->buf[g->params[g->nodes[conv].params[1]].tensor];
    for (int i = 0; i < 9; i++) cw[i] = i == 4 ? 1.0f : 0.0f;
    cbias[0] = 0;
    const float bw = s->buf[g->params[g->nodes[bn].params[0]].tensor][0], bb = s->buf[g->params[g->nodes[bn].params[1]].tensor][0];
    int dyt = grad_of(g, mulnode, 0), dbw = grad_of(g, bn, 1), dbb = grad_of(g, bn, 2), dh = grad_of(g, bn, 0);
    int dcw = grad_of(g, conv, 1);
    run((void **)s->buf);

    const float *hv = s->buf[h], *yv = s->buf[y], *dy = s->buf[dyt], *xv = s->buf[x];
    /* batchnorm forward: statistics of the generated conv output */
    double mean = 0, var = 0;
    for (int64_t i = 0; i < cnt; i++) mean += hv[i];
    mean /= (double)cnt;
    for (int64_t i = 0; i < cnt; i++) var += (hv[i] - mean) * (hv[i] - mean);
    var /= (double)cnt;
    double inv = 1 / sqrt(var + g->nodes[bn].at.eps), top = 0, worst = 0;
    for (int64_t i = 0; i < cnt; i++) top = fmax(top, fabs((hv[i] - mean) * inv * bw + bb));
    for (int64_t i = 0; i < cnt; i++) worst = fmax(worst, fabs(yv[i] - ((hv[i] - mean) * inv * bw + bb)));
    if (getenv("NETC_DEBUG")) fprintf(stderr, "large reductions (%s): batchnorm output error %.2g\n", be, worst / top);
    ck_assert_msg(worst <= 1e-5 * top, "%s: batchnorm output (seed %llu): max error %.3g of max |y| %.3g (%.2g)",
                  be, (unsigned long long)seed, worst, top, worst / top);
    /* batchnorm backward: sum dy, sum dy xhat, and the input gradient */
    double sdy = 0, sdx = 0, asdy = 0, asdx = 0;
    for (int64_t i = 0; i < cnt; i++) {
        double xh = (hv[i] - mean) * inv;
        sdy += dy[i], asdy += fabs(dy[i]);
        sdx += dy[i] * xh, asdx += fabs(dy[i] * xh);
    }
    double e = fabs(s->buf[dbb][0] - sdy);
    if (getenv("NETC_DEBUG"))
        fprintf(stderr, "large reductions (%s): batchnorm bias gradient error %.2g, weight gradient %.2g\n", be, e / asdy,
                fabs(s->buf[dbw][0] - sdx) / asdx);
    ck_assert_msg(e <= 1e-5 * asdy, "%s: batchnorm bias gradient (seed %llu): %.9g, float64 %.9g (error %.2g of sum |dy|)",
                  be, (unsigned long long)seed, s->buf[dbb][0], sdy, e / asdy);
    e = fabs(s->buf[dbw][0] - sdx);
    ck_assert_msg(e <= 1e-5 * asdx, "%s: batchnorm weight gradient (seed %llu): %.9g, float64 %.9g (error %.2g of sum |dy xhat|)",
                  be, (unsigned long long)seed, s->buf[dbw][0], sdx, e / asdx);
    top = worst = 0;
    for (int64_t i = 0; i < cnt; i++) {
        double xh = (hv[i] - mean) * inv, want = bw * inv * (dy[i] - (sdy + xh * sdx) / (double)cnt);
        top = fmax(top, fabs(want));
        worst = fmax(worst, fabs(s->buf[dh][i] - want));
    }
    if (getenv("NETC_DEBUG")) fprintf(stderr, "large reductions (%s): batchnorm input gradient error %.2g\n", be, worst / top);
    ck_assert_msg(worst <= 1e-5 * top, "%s: batchnorm input gradient (seed %llu): max error %.3g of max %.3g (%.2g)",
                  be, (unsigned long long)seed, worst, top, worst / top);
    /* conv weight gradient: sum over n and the image of dh times x at the tap */
    const float *dhv = s->buf[dh];
    for (int a = 0; a < 3; a++)
        for (int c = 0; c < 3; c++) {
            double sum = 0, mag = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < H; i++)
                    for (int64_t j = 0; j < W; j++) {
                        int64_t ii = i + a - 1, jj = j + c - 1;
                        if (ii < 0 || ii >= H || jj < 0 || jj >= W) continue;
                        double t = (double)dhv[(n * H + i) * W + j] * xv[(n * H + ii) * W + jj];
                        sum += t, mag += fabs(t);
                    }
            e = fabs(s->buf[dcw][a * 3 + c] - sum);
            if (getenv("NETC_DEBUG"))
                fprintf(stderr, "large reductions (%s): conv weight gradient [%d,%d] error %.2g of sum |terms|, %.2g of |sum|\n", be, a,
                        c, e / mag, e / fabs(sum));
            ck_assert_msg(e <= 1e-5 * mag, "%s: conv weight gradient [%d,%d] (seed %llu): %.9g, float64 %.9g (error %.2g of sum |terms|)",
                          be, a, c, (unsigned long long)seed, s->buf[dcw][a * 3 + c], sum, e / mag);
        }
    ref_free(s);
    if (cb) cbackend_free(cb);
    if (jit) l3_llvm_free(jit);
    l3_module_free(m);
    graph_free(g);
}

START_TEST(codegen_large_reductions)
{
    large_reductions(false);   /* C backend */
    large_reductions(true);    /* LLVM JIT (its vectorizer may reorder the innermost sums) */
}
END_TEST

TCase *codegen_large_tcase(void)
{
    TCase *big = tcase_create("large");   /* CK_RUN_CASE=large runs it alone */
    tcase_set_timeout(big, 300);
    tcase_add_test(big, codegen_large_reductions);
    return big;
}
