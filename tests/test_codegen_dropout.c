/* test_codegen_dropout.c — dropout in training-mode generated code against
 * the reference executor (suite `codegen_dropout`).
 *
 * The generated kernels compute dropout's mask in closed form (splitmix64
 * of a counter, compiler/lower.c) and must draw exactly the reference's
 * mask (runtime/ref.h) for the same seed: the seed of a generated step is
 * its `train.step` value (0 in a training graph without one), so the
 * reference runs with that seed.  Compared, on the C backend and the LLVM
 * JIT, unfused and fused (dropout inside an elementwise chain behind a
 * convolution): every materialized float tensor within the codegen
 * tolerance, and the zero patterns of the dropout outputs and of their
 * gradients identical element for element.  Two optimizer steps: the
 * second step's mask differs from the first's.  A small net written in the
 * language trains the same way, and once through runtime/exec.c as the
 * trainer runs it; NVRTC compiles the CUDA of a dropout step.  And the
 * L3_U64 operations the mask is made of (wrapping * + -, ^, logical >>,
 * unsigned / % < min, splitmix64's mix, conversions, constant folding) on
 * both backends against the same arithmetic in C.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autodiff.h"
#include "cbackend.h"
#include "exec.h"
#include "fuse.h"
#include "l3_cuda.h"
#include "l3_llvm.h"
#include "lower.h"
#include "nvrtc.h"
#include "ref.h"
#include "ref_fixture.h"
#include "support.h"

Suite *codegen_dropout_suite(void);

/* |got - want| <= DTOL_ABS * max|want| + DTOL_REL * |want| (the codegen tolerance) */
#define DTOL_ABS 1e-4
#define DTOL_REL 1e-5

static uint64_t test_seed(void)
{
    const char *s = getenv("NETC_TEST_SEED");
    return s && *s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
}

/* Adds node k(in) with its parameters; returns its output tensor. */
static int add_node(Graph *g, OpKind k, const char *name, const int *in, int nin, OpAttrs at, int *node)
{
    SrcLoc nl;
    memset(&nl, 0, sizeof nl);
    const Tensor *tp[8];
    Shape ins[8];
    for (int j = 0; j < nin; j++) tp[j] = &g->tensors[in[j]], ins[j] = g->tensors[in[j]].shape;
    ShapeCtx cx = { NULL, nl, NULL, g->spatial_rank, tp, nin, NULL, NULL };
    Shape os;
    ck_assert_msg(op_table[k].shape(&cx, &at, ins, nin, &os), "%s: shape rule failed", name);
    int out = graph_add_tensor(g, name, os, DT_F32, TK_ACTIVATION);
    int nd = graph_add_node(g, k, name, in, nin, out, &at, nl);
    g->tensors[out].producer = nd;
    if (node) *node = nd;
    ParamSpec ps[NODE_MAX_PARAMS];
    int np = op_table[k].params(&at, ins, nin, ps);
    for (int j = 0; j < np; j++) graph_add_param(g, nd, &ps[j]);
    return out;
}

/* x -> conv 1x1 -> dropout(p) [-> tanh -> dropout(p2)] -> y; yr = y * r
 * seeds the backward pass (with `optimizer`: autodiff and SGD, so the graph
 * has train.step; without: a forward-only training graph).  The dropout
 * outputs are graph outputs (materialized in the fused plan too). */
static Graph *dropout_graph(const Shape *xs, double p, bool chain, bool optimizer)
{
    int sr = xs->rank - 2;
    Graph *g = graph_new("dropout", "p", sr);
    SrcLoc nl;
    memset(&nl, 0, sizeof nl);
    int x = graph_add_tensor(g, "x", *xs, DT_F32, TK_INPUT);
    graph_add_input(g, "x", x, nl);
    OpAttrs ca = attrs(OP_CONV, sr);
    ca.channels = xs->d[1];
    for (int i = 0; i < sr; i++) ca.kernel[i] = 1;
    int h = add_node(g, OP_CONV, "pre", &x, 1, ca, NULL);
    OpAttrs da = attrs(OP_DROPOUT, sr);
    da.p = p;
    int y = add_node(g, OP_DROPOUT, "drop", &h, 1, da, NULL);
    graph_add_output(g, "drop", y, nl);
    if (chain) {
        int t = add_node(g, OP_TANH, "tanh", &y, 1, attrs(OP_TANH, sr), NULL);
        da.p = 0.5;
        y = add_node(g, OP_DROPOUT, "drop2", &t, 1, da, NULL);
        graph_add_output(g, "drop2", y, nl);
    }
    int r = graph_add_tensor(g, "r", g->tensors[y].shape, DT_F32, TK_INPUT);
    graph_add_input(g, "r", r, nl);
    int two[2] = { y, r };
    int yr = add_node(g, OP_MUL, "yr", two, 2, attrs(OP_MUL, sr), NULL);
    graph_add_output(g, "yr", yr, nl);
    if (optimizer) {
        ck_assert_int_gt(autodiff(g, yr), 0);
        const double sgd[4] = { 0.01, 0.9, 0, 1e-4 };
        ck_assert_int_gt(append_optimizer(g, "sgd", sgd), 0);
    }
    return g;
}

/* The output of the first dropout node. */
static int first_dropout(const Graph *g)
{
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == OP_DROPOUT) return g->nodes[i].out;
    return -1;
}

/* Inputs uniform in -1..1 and labels (0 or 1) from the seed, lr 0.01,
 * step 1, parameters by their init rules; returns train.step's tensor or
 * -1. */
static int fill(const Graph *g, RefState *s, uint64_t seed)
{
    ref_init_params(g, s, seed);
    int t_step = -1;
    for (int t = 0; t < g->ntensors; t++) {
        const Tensor *te = &g->tensors[t];
        if (te->kind == TK_INPUT) ref_fill_uniform(s, t, seed ^ (uint64_t)(t + 1) * 0x9E3779B97F4A7C15ull, -1, 1);
        else if (te->kind == TK_LABEL)
            for (int64_t i = 0; i < s->numel[t]; i++) ref_i32(s, t)[i] = (int32_t)((seed + (uint64_t)i * 7 + (uint64_t)(i / 5)) % 2);
        else if (te->kind == TK_HYPER && strcmp(te->name, "train.lr") == 0) s->buf[t][0] = 0.01f;
        else if (te->kind == TK_HYPER && strcmp(te->name, "train.step") == 0) s->buf[t][0] = 1, t_step = t;
    }
    return t_step;
}

/* Zero-pattern tensors: the dropout outputs and the gradients through them. */
static bool masked(const Graph *g, int t)
{
    int p = g->tensors[t].producer;
    if (p < 0) return false;
    const Node *n = &g->nodes[p];
    if (n->op == OP_DROPOUT) return true;
    return n->op == OP_GRAD && n->at.grad_operand == 0 && g->nodes[n->at.grad_node].op == OP_DROPOUT;
}

typedef enum { BE_C, BE_LLVM } Backend;

/* `steps` runs of g with the reference and with generated code (backend
 * be, fused or not) from the same inputs and parameters, the update outputs
 * copied over their parameters and train.step advanced in between; after
 * each run every materialized float tensor is compared.  Returns how many
 * elements the first dropout zeroed over the steps (for the rate check);
 * *changed: whether its mask differed between the steps. */
static int64_t compare_steps(const char *what, const Graph *g, Backend be, bool fused, int steps, uint64_t seed,
                             bool *changed)
{
    char err[1500];
    FusionPlan *fp = fused ? fuse_graph(g, true) : NULL;
    L3Module *m = fused ? lower_graph_fused(g, fp, true, err, sizeof err) : lower_graph(g, true, err, sizeof err);
    ck_assert_msg(m != NULL, "%s: %s", what, err);
    CBackend *cb = NULL;
    L3Llvm *jit = NULL;
    NetcEntry run;
    if (be == BE_C) {
        cb = cbackend_compile(m, err, sizeof err);
        ck_assert_msg(cb != NULL, "%s: %s", what, err);
        run = cbackend_entry(cb, "netc_train_forward");
    } else {
        jit = l3_llvm_jit(m, err, sizeof err);
        ck_assert_msg(jit != NULL, "%s: %s", what, err);
        run = l3_llvm_entry(jit, "netc_train_forward");
    }
    ck_assert_ptr_nonnull(run);

    RefState *want = ref_new(g), *got = ref_new(g);
    ck_assert(want && got);
    int t_step = fill(g, want, seed);
    for (int t = 0; t < g->ntensors; t++) memcpy(got->buf[t], want->buf[t], sizeof(float) * (size_t)want->numel[t]);
    int d0 = first_dropout(g);
    ck_assert_int_ge(d0, 0);
    int64_t nd = want->numel[d0], dropped = 0;
    char *first = malloc((size_t)nd);
    *changed = false;
    for (int step = 0; step < steps; step++) {
        if (step > 0) {
            for (int i = 0; i < g->nnodes; i++) {   /* the update outputs become the parameters */
                const Node *n = &g->nodes[i];
                if (n->op != OP_SGD_UPDATE && n->op != OP_ADAM_UPDATE) continue;
                for (int k = 0; k < 2; k++) {
                    RefState *s = k ? got : want;
                    memcpy(s->buf[n->in[0]], s->buf[n->out], sizeof(float) * (size_t)s->numel[n->out]);
                }
            }
            ck_assert_int_ge(t_step, 0);
            want->buf[t_step][0] += 1;
            got->buf[t_step][0] += 1;
        }
        for (int t = 0; t < g->ntensors; t++)   /* poison: every activation must be written */
            if (g->tensors[t].kind == TK_ACTIVATION)
                for (int64_t i = 0; i < got->numel[t]; i++) got->buf[t][i] = NAN;
        uint64_t rng_seed = t_step >= 0 ? (uint64_t)want->buf[t_step][0] : 0;   /* the generated step's seed */
        ck_assert_msg(ref_forward(g, want, true, rng_seed, err, sizeof err) == 0, "%s: %s", what, err);
        run((void **)got->buf);
        int zp = 0;
        for (int t = 0; t < g->ntensors; t++) {
            const Tensor *te = &g->tensors[t];
            if (te->dtype != DT_F32 || (te->kind != TK_ACTIVATION && te->kind != TK_PARAM)) continue;
            if (fp && !fp->materialized[t] && te->kind == TK_ACTIVATION) continue;   /* kept inside a kernel */
            double top = 0;
            for (int64_t i = 0; i < want->numel[t]; i++) top = fmax(top, fabs(want->buf[t][i]));
            bool mask = masked(g, t);
            for (int64_t i = 0; i < want->numel[t]; i++) {
                double a = got->buf[t][i], b = want->buf[t][i];
                ck_assert_msg(fabs(a - b) <= DTOL_ABS * top + DTOL_REL * fabs(b),
                              "%s (seed %llu), step %d: %s[%lld]: generated %.9g, reference %.9g (max %g)", what,
                              (unsigned long long)seed, step + 1, te->name, (long long)i, a, b, top);
                if (mask)
                    ck_assert_msg((a == 0) == (b == 0), "%s (seed %llu), step %d: %s[%lld]: generated %.9g, reference %.9g: "
                                  "not the reference's mask", what, (unsigned long long)seed, step + 1, te->name,
                                  (long long)i, a, b);
            }
            zp += mask;
        }
        ck_assert_msg(zp > 0 && (!fp || fp->materialized[d0]), "%s: no dropout output compared", what);
        for (int64_t i = 0; i < nd; i++) {
            char z = want->buf[d0][i] == 0;
            dropped += z;
            if (step == 0) first[i] = z;
            else *changed = *changed || first[i] != z;
        }
    }
    free(first);
    ref_free(want);
    ref_free(got);
    if (cb) cbackend_free(cb);
    if (jit) l3_llvm_free(jit);
    l3_module_free(m);
    fusion_plan_free(fp);
    return dropped;
}

/* Forward and backward of dropout p = 0.3 on an odd 3D shape, two steps,
 * both backends, unfused and fused. */
START_TEST(dropout_train_steps)
{
    uint64_t seed = test_seed();
    Shape xs = SH(2, 3, 5, 7, 3);
    Graph *g = dropout_graph(&xs, 0.3, false, true);
    for (int be = 0; be < 2; be++)
        for (int fused = 0; fused < 2; fused++) {
            char what[128];
            snprintf(what, sizeof what, "dropout 0.3 training step (%s%s)", be ? "llvm" : "c", fused ? ", fused" : "");
            bool changed;
            int64_t dropped = compare_steps(what, g, (Backend)be, fused, 2, seed, &changed);
            double rate = (double)dropped / (2.0 * (double)shape_numel(&xs));
            ck_assert_msg(rate > 0.22 && rate < 0.38, "%s: dropped %.3f of the elements", what, rate);
            ck_assert_msg(changed, "%s: the second step drew the first step's mask", what);
        }
    graph_free(g);
}
END_TEST

/* Two dropouts in a chain behind a convolution (conv -> dropout -> tanh ->
 * dropout: fused, they are one kernel's epilogue and so are their
 * gradients), an odd 2D shape; and a forward-only training graph (no
 * train.step: seed 0). */
START_TEST(dropout_chain_and_forward)
{
    uint64_t seed = test_seed();
    Shape xs = SH(3, 2, 9, 11);
    Graph *g = dropout_graph(&xs, 0.3, true, true);
    for (int be = 0; be < 2; be++) {
        bool changed;
        compare_steps(be ? "dropout chain (llvm, fused)" : "dropout chain (c, fused)", g, (Backend)be, true, 2, seed,
                      &changed);
        ck_assert(changed);
    }
    compare_steps("dropout chain (c)", g, BE_C, false, 1, seed, &(bool){ false });
    graph_free(g);
    g = dropout_graph(&xs, 0.3, true, false);
    for (int be = 0; be < 2; be++)
        compare_steps(be ? "dropout forward (llvm, fused)" : "dropout forward (c, fused)", g, (Backend)be, true, 1,
                      seed, &(bool){ false });
    graph_free(g);
}
END_TEST

/* A small net written in the language, dropout after two convolutions:
 * the training step (ce loss, SGD) through both backends, fused; then
 * through runtime/exec.c as the trainer runs it (planned arena, the
 * grads/update halves), whose dropout output must carry the reference's
 * mask for seed = train.step. */
static const char dnet[] =
    "protocol p {\n    modality mri\n    channels t1\n    size 12 x 10\n    classes bg, fg\n}\n"
    "net dnet(classes = 2) {\n"
    "    input t1\n"
    "    a = t1 -> conv(4, 3) -> tanh -> dropout(0.3)\n"
    "    b = a -> conv(6, 3) -> tanh -> dropout(0.2)\n"
    "    output logits = conv(classes, 1)(b)\n"
    "}\n"
    "train dnet on p {\n    loss ce(logits, labels)\n    batch 2\n}\n";

START_TEST(dropout_net)
{
    uint64_t seed = test_seed();
    Compiled *c = compile_text("dnet.net", dnet, "--train");
    ck_assert_msg(c && compiled_errors(c) == 0, "%s", c ? compiled_messages(c) : "no result");
    Graph *g = c->g;
    ck_assert_int_gt(autodiff(g, g->losses[0].tensor), 0);
    const double sgd[4] = { 0.01, 0.9, 0, 1e-4 };
    ck_assert_int_gt(append_optimizer(g, "sgd", sgd), 0);
    for (int be = 0; be < 2; be++) {
        bool changed;
        compare_steps(be ? "dnet (llvm, fused)" : "dnet (c, fused)", g, (Backend)be, true, 2, seed, &changed);
        ck_assert(changed);
    }
    char err[1500];
    RefState *want = ref_new(g), *got = ref_new(g);
    int t_step = fill(g, want, seed);
    fill(g, got, seed);
    ck_assert_int_ge(t_step, 0);
    want->buf[t_step][0] = got->buf[t_step][0] = 7;   /* step 7 */
    NetcExec *x = exec_new(g, true, "llvm", err, sizeof err);
    ck_assert_msg(x != NULL, "%s", err);
    ck_assert_msg(exec_grads(x, got, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(ref_forward(g, want, true, 7, err, sizeof err) == 0, "%s", err);
    int compared = 0;
    for (int i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].op != OP_DROPOUT) continue;
        int t = g->nodes[i].out;
        const float *d = exec_tensor(x, t);
        if (!d) continue;   /* kept inside a kernel */
        for (int64_t k = 0; k < want->numel[t]; k++)
            ck_assert_msg((d[k] == 0) == (want->buf[t][k] == 0), "exec (seed %llu): %s[%lld]: %g, reference %g",
                          (unsigned long long)seed, g->tensors[t].name, (long long)k, d[k], want->buf[t][k]);
        compared++;
    }
    ck_assert_int_gt(compared, 0);
    ck_assert_double_eq_tol(got->buf[g->losses[0].tensor][0], want->buf[g->losses[0].tensor][0],
                            1e-4 * fabs(want->buf[g->losses[0].tensor][0]) + 1e-6);
    exec_free(x);
    ref_free(want);
    ref_free(got);
    compiled_free(c);
}
END_TEST

/* p = 0 keeps everything; the CUDA printer declares uint64_t for the
 * random numbers (NVRTC has no stdint.h), and only when there are some;
 * NVRTC compiles a training step with dropout. */
START_TEST(dropout_edges)
{
    Shape xs = SH(2, 3, 5, 7, 3);
    Graph *g = dropout_graph(&xs, 0.0, false, true);
    bool changed;
    ck_assert_int_eq(compare_steps("dropout 0", g, BE_C, true, 1, test_seed(), &changed), 0);
    graph_free(g);
    g = dropout_graph(&xs, 0.3, false, true);
    char err[512];
    FusionPlan *fp = fuse_graph(g, true);
    L3Module *m = lower_graph_fused(g, fp, true, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    l3_print_cuda(f, m);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "typedef unsigned long long uint64_t;"));
    ck_assert_ptr_nonnull(strstr(text, "0x9e3779b97f4a7c15ull"));
    char nerr[4096], *ptx = NULL;   /* NVRTC accepts it (as tests/test_cuda.c: its absence is a failure) */
    size_t ptx_len = 0;
    ck_assert_msg(nvrtc_compile(text, "compute_90", &ptx, &ptx_len, NULL, NULL, nerr, sizeof nerr) == 0, "%s", nerr);
    ck_assert_uint_gt(ptx_len, 0);
    free(ptx);
    free(text);
    l3_module_free(m);
    fusion_plan_free(fp);
    graph_free(g);
    g = dropout_graph(&xs, 0.3, true, false);
    L3Module *inf = lower_graph(g, false, err, sizeof err);   /* inference: identity, no random numbers */
    ck_assert_msg(inf != NULL, "%s", err);
    f = open_memstream(&text, &len);
    l3_print_cuda(f, inf);
    fclose(f);
    ck_assert_ptr_null(strstr(text, "uint64_t"));
    free(text);
    l3_module_free(inf);
    graph_free(g);
}
END_TEST

/* ---- L3_U64 in both backends --------------------------------------------------------------------- */

enum { U_N = 23, U_R = 15 };   /* elements; 64-bit results per element (two int32 halves each) */

static uint64_t ref_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Every L3_U64 operation on x = (uint64_t)(int64_t)(in[i] * 1e6) (negative
 * inputs give values above 2^63: logical shifts, unsigned division and
 * comparisons show), results stored as two int32 halves. */
static L3Module *u64_module(void)
{
    L3Module *m = l3_module_new("u64", 2);
    L3Kernel *k = l3_kernel_new(m, "k0_u64", "uint64 semantics");
    int in = l3_buf(m, k, 0, L3_F32, U_N, false, "in");
    int out = l3_buf(m, k, 1, L3_I32, U_N * U_R * 2, true, "out");
    int i = l3_var(m, k, "i", L3_I64, true);
    L3Block *b = &l3_for(m, &k->body, i, U_N, L3_PARALLEL)->body;
    L3Expr *I = l3_varref(m, k, i);
    int xv = l3_var(m, k, "x", L3_U64, false);
    l3_local(m, b, xv, l3_cast(m, L3_U64, l3_cast(m, L3_I64, l3_bin(m, L3_MUL, l3_load(m, k, in, I), l3_float(m, 1e6)))));
    L3Expr *x = l3_varref(m, k, xv), *r[U_R];
    int n = 0;
    r[n++] = x;
    r[n++] = l3_un(m, L3_MIX64, x);
    r[n++] = l3_bin(m, L3_MUL, x, l3_u64(m, 0x9E3779B97F4A7C15ull));              /* wraps */
    r[n++] = l3_bin(m, L3_ADD, x, l3_u64(m, 0xFFFFFFFFFFFFFFF0ull));
    r[n++] = l3_bin(m, L3_SUB, x, l3_int(m, 100));                                /* an int64 operand converts */
    r[n++] = l3_bin(m, L3_XOR, x, l3_u64(m, 0xD1B54A32D192ED03ull));
    r[n++] = l3_bin(m, L3_SHR, x, l3_int(m, 7));                                  /* logical */
    r[n++] = l3_bin(m, L3_DIV, x, l3_u64(m, 3));
    r[n++] = l3_bin(m, L3_MOD, x, l3_u64(m, 7));
    r[n++] = l3_select(m, l3_bin(m, L3_LT, x, l3_u64(m, 5000000)), l3_u64(m, 1), l3_u64(m, 2));   /* unsigned < */
    r[n++] = l3_bin(m, L3_MIN, x, l3_u64(m, 123456789));
    r[n++] = l3_un(m, L3_NEG, x);
    r[n++] = l3_cast(m, L3_U64, l3_cast(m, L3_F32, l3_bin(m, L3_SHR, x, l3_int(m, 40))));   /* exact in float */
    r[n++] = l3_un(m, L3_MIX64, l3_u64(m, 42));                                   /* folded when built */
    r[n++] = l3_bin(m, L3_SHR, l3_bin(m, L3_MUL, l3_u64(m, 0xD1B54A32D192ED03ull), l3_u64(m, 3)), l3_int(m, 11));
    ck_assert_int_eq(n, U_R);
    ck_assert_int_eq(r[U_R - 2]->kind, L3E_INT);
    ck_assert_int_eq(r[U_R - 1]->kind, L3E_INT);
    for (int q = 0; q < U_R; q++)
        for (int h = 0; h < 2; h++) {
            L3Expr *v = h ? l3_bin(m, L3_SHR, r[q], l3_int(m, 32)) : r[q];
            L3Expr *at = l3_bin(m, L3_ADD, l3_bin(m, L3_MUL, I, l3_int(m, 2 * U_R)), l3_int(m, 2 * q + h));
            l3_store(m, b, out, at, l3_cast(m, L3_I32, v), false);
        }
    L3Entry *e = l3_entry_new(m, "netc_forward");
    l3_entry_call(e, 0);
    return m;
}

static void u64_expected(double x_in, uint64_t *r)
{
    uint64_t x = (uint64_t)(int64_t)(float)((float)x_in * 1e6f);
    int n = 0;
    r[n++] = x;
    r[n++] = ref_mix64(x);
    r[n++] = x * 0x9E3779B97F4A7C15ull;
    r[n++] = x + 0xFFFFFFFFFFFFFFF0ull;
    r[n++] = x - 100;
    r[n++] = x ^ 0xD1B54A32D192ED03ull;
    r[n++] = x >> 7;
    r[n++] = x / 3;
    r[n++] = x % 7;
    r[n++] = x < 5000000 ? 1 : 2;
    r[n++] = x < 123456789 ? x : 123456789;
    r[n++] = 0 - x;
    r[n++] = x >> 40;
    r[n++] = ref_mix64(42);
    r[n++] = (0xD1B54A32D192ED03ull * 3) >> 11;
}

START_TEST(u64_semantics)
{
    L3Module *m = u64_module();
    char err[1500];
    CBackend *cb = cbackend_compile(m, err, sizeof err);
    ck_assert_msg(cb != NULL, "%s", err);
    L3Llvm *jit = l3_llvm_jit(m, err, sizeof err);
    ck_assert_msg(jit != NULL, "%s", err);
    NetcEntry run[2] = { cbackend_entry(cb, "netc_forward"), l3_llvm_entry(jit, "netc_forward") };
    float in[U_N];
    for (int i = 0; i < U_N; i++) in[i] = (float)((i % 2 ? -1 : 1) * (0.37 * i + 0.001 * i * i * i));
    in[0] = 0;
    static int32_t out[U_N * U_R * 2];
    for (int be = 0; be < 2; be++) {
        ck_assert_ptr_nonnull(run[be]);
        memset(out, 0xA5, sizeof out);
        void *t[2] = { in, out };
        run[be](t);
        for (int i = 0; i < U_N; i++) {
            uint64_t want[U_R];
            u64_expected(in[i], want);
            for (int q = 0; q < U_R; q++) {
                uint64_t got = (uint64_t)(uint32_t)out[(i * U_R + q) * 2] | (uint64_t)(uint32_t)out[(i * U_R + q) * 2 + 1] << 32;
                ck_assert_msg(got == want[q], "%s: element %d (x = %g), result %d: 0x%016llx, want 0x%016llx",
                              be ? "llvm" : "c", i, (double)in[i], q, (unsigned long long)got, (unsigned long long)want[q]);
            }
        }
    }
    l3_llvm_free(jit);
    cbackend_free(cb);
    l3_module_free(m);
}
END_TEST

Suite *codegen_dropout_suite(void)
{
    Suite *s = suite_create("codegen_dropout");
    TCase *tc = tcase_create("dropout");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, dropout_train_steps);
    tcase_add_test(tc, dropout_chain_and_forward);
    tcase_add_test(tc, dropout_net);
    tcase_add_test(tc, dropout_edges);
    tcase_add_test(tc, u64_semantics);
    suite_add_tcase(s, tc);
    return s;
}
