/* codegen_compare.c — see codegen_compare.h.  The comparison that every
 * generated-code test makes (moved here from test_codegen.c, so the GPU
 * check shares it). */
#define _POSIX_C_SOURCE 200809L
#include "codegen_compare.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbackend.h"
#include "cuda.h"
#include "fuse.h"
#include "lower.h"

/* A value that is 0 in exact arithmetic (the gradient of a bias right
 * before a normalization) is rounding noise of the sums that make it, so
 * it is judged against the graph's scale: 1e-5 of the largest activation
 * or gradient anywhere in the graph. */
#define TOL_FLOOR (1e-5 * graph_top)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* After a step: every update output becomes its parameter; step + 1. */
void codegen_advance(const Graph *g, RefState *s)
{
    for (int i = 0; i < g->nnodes; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_SGD_UPDATE && n->op != OP_ADAM_UPDATE) continue;
        memcpy(s->buf[n->in[0]], s->buf[n->out], sizeof(float) * (size_t)s->numel[n->out]);
    }
    for (int t = 0; t < g->ntensors; t++)
        if (g->tensors[t].kind == TK_HYPER && strcmp(g->tensors[t].name, "train.step") == 0) s->buf[t][0] += 1;
}

static int fail(char *msg, size_t msglen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Compare every float tensor of got with want (see codegen_compare.h). */
static int compare_states(const char *what, const Graph *g, const FusionPlan *fp, const RefState *want,
                          const RefState *got, uint64_t seed, int steps, CodegenReport *rep, char *msg, size_t msglen)
{
    int nt = g->ntensors > 0 ? g->ntensors : 1, status = 0;
    double graph_top = 0;
    for (int t = 0; t < g->ntensors; t++)
        if (g->tensors[t].kind == TK_ACTIVATION && g->tensors[t].dtype == DT_F32)
            for (int64_t i = 0; i < want->numel[t]; i++) graph_top = fmax(graph_top, fabs(want->buf[t][i]));
    /* A parameter whose gradient is 0 in exact arithmetic (a conv bias right
     * before a normalization) only sees rounding noise; Adam scales noise to
     * full-size steps in arbitrary directions, so its updated value and
     * optimizer state are not comparable (tools/ref_vs_torch.py skips the
     * same parameters against torch.optim). */
    bool *noise = calloc((size_t)nt, sizeof *noise);
    for (int i = 0; i < g->nnodes; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_ADAM_UPDATE) continue;
        double gm = 0;
        for (int64_t k = 0; k < want->numel[n->in[1]]; k++) gm = fmax(gm, fabs(want->buf[n->in[1]][k]));
        if (gm > 1e-5 * graph_top) continue;
        noise[n->out] = noise[n->in[0]] = true;
        for (int k = 0; k < n->nparams; k++) noise[g->params[n->params[k]].tensor] = true;
    }
    /* Adam's first step is about lr * sign(g) per element, so an element
     * whose gradient is rounding noise may step either way: the updated
     * parameters are not compared with the reference.  Instead the moments
     * (optimizer state parameters) are compared strictly with the
     * reference like every other tensor, and the new parameter values are
     * checked against Adam's formula recomputed in double from the
     * generated moments. */
    int *adam_grad = malloc(sizeof(int) * (size_t)nt);
    for (int t = 0; t < g->ntensors; t++) adam_grad[t] = -1;
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == OP_ADAM_UPDATE) {
            adam_grad[g->nodes[i].out] = g->nodes[i].in[1];
            adam_grad[g->nodes[i].in[0]] = g->nodes[i].in[1];   /* the parameter, after advance() */
        }
    /* relu-like derivatives jump at 0: where the forward input is within
     * rounding of the kink, the two sides may legitimately disagree. */
    int *kink = malloc(sizeof(int) * (size_t)nt);
    for (int t = 0; t < g->ntensors; t++) kink[t] = -1;
    for (int i = 0; i < g->nnodes; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_GRAD || n->at.grad_operand != 0) continue;
        OpKind fo = g->nodes[n->at.grad_node].op;
        if (fo == OP_RELU || fo == OP_LEAKY_RELU || fo == OP_PRELU) kink[n->out] = g->nodes[n->at.grad_node].in[0];
    }
    for (int t = 0; t < g->ntensors && status == 0; t++) {
        const Tensor *te = &g->tensors[t];
        if (fp && !fp->materialized[t] && te->kind == TK_ACTIVATION) {
            /* kept inside its kernel: never written to memory */
            for (int64_t i = 0; i < got->numel[t] && status == 0; i++)
                if (!isnan(got->buf[t][i]))
                    status = fail(msg, msglen, "%s: %s is kept inside a kernel but was written", what, te->name);
            continue;
        }
        if (te->dtype != DT_F32 || (te->kind != TK_ACTIVATION && te->kind != TK_PARAM) || noise[t]) continue;
        double xtop = 0;
        if (kink[t] >= 0)
            for (int64_t i = 0; i < want->numel[kink[t]]; i++) xtop = fmax(xtop, fabs(want->buf[kink[t]][i]));
        double top = 0;
        for (int64_t i = 0; i < want->numel[t]; i++) top = fmax(top, fabs(want->buf[t][i]));
        for (int64_t i = 0; i < want->numel[t] && status == 0; i++) {
            double a = got->buf[t][i], b = want->buf[t][i];
            if (adam_grad[t] >= 0) continue;   /* checked below */
            if (kink[t] >= 0 && fabs(want->buf[kink[t]][i]) < 1e-4 * xtop) continue;
            double tol = TOL_ABS * top + TOL_REL * fabs(b) + TOL_FLOOR;
            bool ok = fabs(a - b) <= tol || (isnan(a) && isnan(b));
            if (ok && tol > 0 && fabs(a - b) / tol > rep->worst) {
                rep->worst = fabs(a - b) / tol;
                snprintf(rep->worst_name, sizeof rep->worst_name, "%s[%lld]", te->name, (long long)i);
            }
            if (!ok && getenv("NETC_DEBUG"))
                for (int u = 0; u < g->ntensors; u++)
                    if (want->numel[u] > i && g->tensors[u].dtype == DT_F32)
                        fprintf(stderr, "  t%d %s: want %g got %g\n", u, g->tensors[u].name, want->buf[u][i], got->buf[u][i]);
            if (!ok)
                status = fail(msg, msglen, "%s (seed %llu): %s[%lld]: generated %.9g, reference %.9g (max |ref| %g)", what,
                              (unsigned long long)seed, te->name, (long long)i, a, b, top);
        }
        rep->checked++;
    }
    for (int i = 0; i < g->nnodes && status == 0; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_ADAM_UPDATE || steps != 1) continue;
        const OpAttrs *at = &n->at;
        double lr = got->buf[n->in[2]][0], st = got->buf[n->in[3]][0];
        double bc1 = 1 - pow(at->opt_beta1, st), bc2 = 1 - pow(at->opt_beta2, st);
        const float *m = got->buf[g->params[n->params[0]].tensor], *v = got->buf[g->params[n->params[1]].tensor];
        for (int64_t k = 0; k < got->numel[n->out] && status == 0; k++) {
            double w = got->buf[n->in[0]][k];
            if (at->opt_decoupled) w *= 1 - lr * at->opt_weight_decay;
            double want_w = w - lr / bc1 * m[k] / (sqrt(v[k]) / sqrt(bc2) + at->opt_eps);
            if (!(fabs(got->buf[n->out][k] - want_w) <= 1e-6 * (1 + fabs(want_w)) + 1e-3 * lr))
                status = fail(msg, msglen, "%s: %s[%lld]: generated %.9g, Adam from its moments %.9g", what, n->name,
                              (long long)k, got->buf[n->out][k], want_w);
        }
        rep->checked++;
    }
    if (status == 0 && rep->checked == 0) status = fail(msg, msglen, "%s: nothing to compare", what);
    free(noise);
    free(kink);
    free(adam_grad);
    return status;
}

typedef struct {
    CodegenBackend backend;
    CBackend *cb;
    NetcEntry entry;
    NetcCuda *cuda;
    const char *name;
    size_t *bytes;
} Runner;

static int runner_build(Runner *r, const L3Module *m, const RefState *s, const char *name, char *err, size_t errlen)
{
    r->name = name;
    if (r->backend == CG_C) {
        r->cb = cbackend_compile(m, err, errlen);
        if (!r->cb) return -1;
        r->entry = cbackend_entry(r->cb, name);
        if (!r->entry) { snprintf(err, errlen, "no entry %s", name); return -1; }
        return 0;
    }
    r->cuda = cuda_load(m, err, errlen);
    if (!r->cuda) return -1;
    r->bytes = malloc(sizeof *r->bytes * (size_t)(s->ntensors > 0 ? s->ntensors : 1));
    for (int t = 0; t < s->ntensors; t++) r->bytes[t] = 4 * (size_t)s->numel[t];   /* float and int32 alike */
    return 0;
}

static int runner_run(Runner *r, RefState *s, char *err, size_t errlen)
{
    if (r->backend == CG_C) {
        r->entry((void **)s->buf);
        return 0;
    }
    return cuda_run(r->cuda, r->name, (void *const *)s->buf, r->bytes, s->ntensors, err, errlen);
}

static void runner_free(Runner *r)
{
    cbackend_free(r->cb);
    cuda_free(r->cuda);
    free(r->bytes);
}

int codegen_compare(const char *what, const Graph *g, bool training, uint64_t seed, int steps, bool fused,
                    CodegenBackend backend, CodegenReport *rep, char *msg, size_t msglen)
{
    return codegen_compare_with(what, g, training, seed, steps, fused, backend, CG_REF, rep, msg, msglen);
}

int codegen_compare_with(const char *what, const Graph *g, bool training, uint64_t seed, int steps, bool fused,
                         CodegenBackend backend, CodegenBackend wantb, CodegenReport *rep, char *msg, size_t msglen)
{
    CodegenReport dummy;
    if (!rep) rep = &dummy;
    memset(rep, 0, sizeof *rep);
    char err[1500];
    FusionPlan *fp = fused ? fuse_graph(g, training) : NULL;
    L3Module *m = fused ? lower_graph_fused(g, fp, training, err, sizeof err) : lower_graph(g, training, err, sizeof err);
    if (!m) {
        if (fp) fusion_plan_free(fp);
        return fail(msg, msglen, "%s: %s", what, err);
    }
    if (fused && m->nkernels != fp->nkernels) {   /* one function per planned kernel */
        int a = m->nkernels, b = fp->nkernels;
        l3_module_free(m);
        fusion_plan_free(fp);
        return fail(msg, msglen, "%s: %d kernels lowered for %d planned", what, a, b);
    }
    rep->kernels = m->nkernels;
    const char *entry = training ? "netc_train_forward" : "netc_forward";
    RefState *want = ref_new(g), *got = ref_new(g);
    Runner run = { .backend = backend }, wrun = { .backend = wantb };
    double t0 = now();
    int rc = want && got ? runner_build(&run, m, got, entry, err, sizeof err) : (snprintf(err, sizeof err, "out of memory"), -1);
    rep->compile_s = now() - t0;
    if (rc == 0 && wantb != CG_REF) rc = runner_build(&wrun, m, want, entry, err, sizeof err);
    if (rc == 0 && run.cuda) rep->launches = cuda_entry_launches(run.cuda, entry);
    l3_module_free(m);
    if (rc != 0) {
        ref_free(want);
        ref_free(got);
        runner_free(&run);
        runner_free(&wrun);
        if (fp) fusion_plan_free(fp);
        return fail(msg, msglen, "%s: %s", what, err);
    }
    ref_init_params(g, want, seed);
    codegen_fill(g, want, seed);
    for (int t = 0; t < g->ntensors; t++) memcpy(got->buf[t], want->buf[t], sizeof(float) * (size_t)want->numel[t]);
    int status = 0;
    for (int step = 0; step < steps && status == 0; step++) {
        if (step > 0) {
            codegen_advance(g, want);
            codegen_advance(g, got);
        }
        for (int t = 0; t < g->ntensors; t++)   /* poison: every activation must be written */
            if (g->tensors[t].kind == TK_ACTIVATION)
                for (int64_t i = 0; i < got->numel[t]; i++) got->buf[t][i] = want->buf[t][i] = NAN;
        if (wantb == CG_REF ? ref_forward(g, want, training, 1, err, sizeof err) != 0 : runner_run(&wrun, want, err, sizeof err) != 0)
            status = fail(msg, msglen, "%s: %s: %s", what, wantb == CG_REF ? "reference" : "the backend compared with", err);
        else {
            t0 = now();
            if (runner_run(&run, got, err, sizeof err) != 0) status = fail(msg, msglen, "%s: %s", what, err);
            rep->run_s = now() - t0;
        }
    }
    if (status == 0) status = compare_states(what, g, fp, want, got, seed, steps, rep, msg, msglen);
    ref_free(want);
    ref_free(got);
    runner_free(&run);
    runner_free(&wrun);
    if (fp) fusion_plan_free(fp);
    return status;
}

void codegen_fill(const Graph *g, RefState *s, uint64_t seed)
{
    int64_t classes = 2;
    if (g->noutputs > 0 && g->tensors[g->outputs[0].tensor].shape.rank > 1)
        classes = g->tensors[g->outputs[0].tensor].shape.d[1];
    for (int t = 0; t < g->ntensors; t++) {
        const Tensor *te = &g->tensors[t];
        if (te->kind == TK_INPUT) ref_fill_uniform(s, t, seed + 17 * (uint64_t)t, -1, 1);
        if (te->kind == TK_WEIGHTMAP) ref_fill_uniform(s, t, seed + 19 * (uint64_t)t, 0, 2);
        if (te->kind == TK_LABEL) {
            RefRng r = { seed * 7 + (uint64_t)t };
            for (int64_t i = 0; i < s->numel[t]; i++) ref_i32(s, t)[i] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
        }
        if (te->kind == TK_HYPER) s->buf[t][0] = strcmp(te->name, "train.lr") == 0 ? 0.01f : 1.0f;
        if (te->kind == TK_PARAM && te->dtype == DT_F32) {
            /* running variances must stay positive; running means get noise */
            if (strstr(te->name, "running_var")) ref_fill_uniform(s, t, seed + 31 * (uint64_t)t, 0.5, 1.5);
            else if (strstr(te->name, "running_mean")) ref_fill_uniform(s, t, seed + 31 * (uint64_t)t, -0.2, 0.2);
        }
    }
}
