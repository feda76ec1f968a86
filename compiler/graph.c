/* graph.c — L1 graph construction, totals, and the three printed forms:
 * the `netc check` layer table, Graphviz DOT, and JSON (for tools such as
 * the PyTorch cross-check). */
#define _POSIX_C_SOURCE 200809L
#include "graph.h"
#include "util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>


Graph *graph_new(const char *net_name, const char *protocol_name, int spatial_rank)
{
    Graph *g = xcalloc(1, sizeof *g);
    g->net_name = xstrdup(net_name);
    g->protocol_name = xstrdup(protocol_name);
    g->spatial_rank = spatial_rank;
    return g;
}

void graph_free(Graph *g)
{
    if (!g) return;
    for (int i = 0; i < g->ntensors; i++) free(g->tensors[i].name);
    for (int i = 0; i < g->nnodes; i++) { free(g->nodes[i].name); free(g->nodes[i].in); }
    for (int i = 0; i < g->nparams; i++) free(g->params[i].name);
    for (int i = 0; i < g->ninputs; i++) free(g->inputs[i].name);
    for (int i = 0; i < g->noutputs; i++) free(g->outputs[i].name);
    for (int i = 0; i < g->nlosses; i++) free(g->losses[i].name);
    free(g->tensors); free(g->nodes); free(g->params);
    free(g->inputs); free(g->outputs); free(g->losses);
    free(g->net_name); free(g->protocol_name);
    free(g);
}

int graph_add_tensor(Graph *g, const char *name, Shape shape, DType dt, TensorKind kind)
{
    GROW(g->tensors, g->ntensors, g->captensors);
    Tensor *t = &g->tensors[g->ntensors];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->shape = shape;
    t->dtype = dt;
    t->kind = kind;
    t->producer = -1;
    t->source_input = -1;
    for (int k = 0; k < MAX_SPATIAL; k++) { t->down_num[k] = 1; t->down_den[k] = 1; t->max_down[k] = 1; }
    return g->ntensors++;
}

int graph_add_node(Graph *g, OpKind op, const char *name, const int *in, int nin, int out,
                   const OpAttrs *at, SrcLoc loc)
{
    GROW(g->nodes, g->nnodes, g->capnodes);
    Node *n = &g->nodes[g->nnodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->name = xstrdup(name);
    n->nin = nin;
    n->in = xmalloc(sizeof(int) * (size_t)(nin ? nin : 1));
    memcpy(n->in, in, sizeof(int) * (size_t)nin);
    n->out = out;
    n->at = *at;
    n->loc = loc;
    return g->nnodes++;
}

int graph_add_param(Graph *g, int node, const ParamSpec *ps)
{
    Node *n = &g->nodes[node];
    if (n->nparams >= NODE_MAX_PARAMS) return -1;
    int t = graph_add_tensor(g, ps->suffix, ps->shape, DT_F32, TK_PARAM);
    GROW(g->params, g->nparams, g->capparams);
    Param *p = &g->params[g->nparams];
    memset(p, 0, sizeof *p);
    p->name = xstrdup(ps->suffix);
    p->tensor = t;
    p->init = ps->init;
    p->trainable = ps->trainable;
    p->node = node;
    p->grad = -1;
    n->params[n->nparams++] = g->nparams;
    return g->nparams++;
}

static void add_port(GraphPort **arr, int *n, int *cap, const char *name, int tensor, SrcLoc loc)
{
    GROW(*arr, *n, *cap);
    (*arr)[*n].name = xstrdup(name);
    (*arr)[*n].tensor = tensor;
    (*arr)[*n].loc = loc;
    (*n)++;
}

void graph_add_input(Graph *g, const char *name, int tensor, SrcLoc loc)
{
    add_port(&g->inputs, &g->ninputs, &g->capinputs, name, tensor, loc);
}

void graph_add_output(Graph *g, const char *name, int tensor, SrcLoc loc)
{
    add_port(&g->outputs, &g->noutputs, &g->capoutputs, name, tensor, loc);
}

/* ---- totals ----------------------------------------------------------- */

int64_t graph_param_count(const Graph *g, bool trainable_only)
{
    int64_t n = 0;
    for (int i = 0; i < g->nparams; i++)
        if (!trainable_only || g->params[i].trainable)
            n += shape_numel(&g->tensors[g->params[i].tensor].shape);
    return n;
}

/* Backward and update nodes are estimates from their forward node: the
 * gradient of an input or a weight costs what the forward pass costs (conv:
 * the transposed convolution, or the correlation of input and output
 * gradient), a bias gradient one add per output element; an SGD update
 * 6 FLOPs per parameter (decay, momentum, Nesterov, step), Adam 14. */
double node_flops(const Graph *g, const Node *n)
{
    const OpInfo *info = &op_table[n->op];
    if (n->op == OP_GRAD) {
        int f = n->at.grad_node;
        if (f < 0 || f >= g->nnodes || &g->nodes[f] == n || g->nodes[f].op == OP_GRAD) return 0;
        const Node *fw = &g->nodes[f];
        int k = n->at.grad_operand;
        if (k >= fw->nin && k - fw->nin < fw->nparams) {
            const Param *p = &g->params[fw->params[k - fw->nin]];
            size_t l = strlen(p->name);
            if (l >= 5 && strcmp(p->name + l - 5, ".bias") == 0) return (double)shape_numel(&g->tensors[fw->out].shape);
        }
        return node_flops(g, fw);
    }
    if (n->op == OP_SGD_UPDATE || n->op == OP_ADAM_UPDATE)
        return (n->op == OP_SGD_UPDATE ? 6.0 : 14.0) * (double)shape_numel(&g->tensors[n->out].shape);
    if (!info->flops) return 0;
    Shape in[64];
    int nin = n->nin < 64 ? n->nin : 64;
    for (int i = 0; i < nin; i++) in[i] = g->tensors[n->in[i]].shape;
    return info->flops(&n->at, in, nin, &g->tensors[n->out].shape);
}

bool *graph_influences(const Graph *g, int target)
{
    bool *m = calloc((size_t)g->ntensors + 1, sizeof *m);
    if (!m) return NULL;
    if (target >= 0 && target < g->ntensors) m[target] = true;
    for (int i = g->nnodes - 1; i >= 0; i--) {   /* nodes are in topological order */
        const Node *n = &g->nodes[i];
        if (!m[n->out]) continue;
        for (int k = 0; k < n->nin; k++) m[n->in[k]] = true;
        for (int k = 0; k < n->nparams; k++) m[g->params[n->params[k]].tensor] = true;
    }
    return m;
}

double graph_flops(const Graph *g)
{
    double f = 0;
    for (int i = 0; i < g->nnodes; i++) f += node_flops(g, &g->nodes[i]);
    return f;
}

int64_t graph_activation_bytes(const Graph *g)
{
    int64_t b = 0;
    for (int i = 0; i < g->ntensors; i++)
        if (g->tensors[i].kind != TK_PARAM) b += 4 * shape_numel(&g->tensors[i].shape);
    return b;
}

/* ---- printing --------------------------------------------------------- */

static const char *human(double x, char *buf, size_t n, const char *unit)
{
    const char *pre[] = { "", "K", "M", "G", "T", "P" };
    int k = 0;
    while (x >= 1000 && k < 5) { x /= 1000; k++; }
    snprintf(buf, n, k ? "%.2f %s%s" : "%.0f %s%s", x, pre[k], unit);
    return buf;
}

static const char *human_bytes(double x, char *buf, size_t n)
{
    const char *pre[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int k = 0;
    while (x >= 1024 && k < 4) { x /= 1024; k++; }
    snprintf(buf, n, k ? "%.1f %s" : "%.0f %s", x, pre[k]);
    return buf;
}

static int64_t node_param_count(const Graph *g, const Node *n)
{
    int64_t c = 0;
    for (int k = 0; k < n->nparams; k++) {
        const Param *p = &g->params[n->params[k]];
        if (p->trainable) c += shape_numel(&g->tensors[p->tensor].shape);
    }
    return c;
}

void graph_print_table(const Graph *g, FILE *out)
{
    int w = 4;
    for (int i = 0; i < g->nnodes; i++) {
        int l = (int)strlen(g->nodes[i].name);
        if (l > w) w = l;
    }
    for (int i = 0; i < g->ninputs; i++) {
        int l = (int)strlen(g->inputs[i].name);
        if (l > w) w = l;
    }
    if (w > 60) w = 60;
    char sb[96], fb[32];
    fprintf(out, "net %s for protocol %s (%dD)\n\n", g->net_name, g->protocol_name, g->spatial_rank);
    fprintf(out, "%4s  %-*s  %-14s  %-22s  %12s  %12s\n", "#", w, "name", "op", "output (N C spatial)", "params", "FLOPs");
    for (int i = 0; i < g->ninputs; i++) {
        const Tensor *t = &g->tensors[g->inputs[i].tensor];
        fprintf(out, "%4s  %-*s  %-14s  %-22s  %12s  %12s\n", "in", w, g->inputs[i].name,
                t->kind == TK_LABEL ? "labels" : t->kind == TK_HYPER ? "hyper" : t->kind == TK_WEIGHTMAP ? "weightmap" : "input",
                t->shape.rank ? shape_format(sb, sizeof sb, &t->shape, false) : "scalar", "", "");
    }
    for (int i = 0; i < g->nnodes; i++) {
        const Node *n = &g->nodes[i];
        const Tensor *t = &g->tensors[n->out];
        int64_t pc = node_param_count(g, n);
        char pcs[32] = "";
        if (pc) snprintf(pcs, sizeof pcs, "%" PRId64, pc);
        fprintf(out, "%4d  %-*.*s  %-14s  %-22s  %12s  %12s\n", i, w, w, n->name, op_table[n->op].name,
                t->shape.rank ? shape_format(sb, sizeof sb, &t->shape, false) : "scalar", pcs,
                human(node_flops(g, n), fb, sizeof fb, ""));
    }
    fputc('\n', out);
    for (int i = 0; i < g->noutputs; i++) {
        const Tensor *t = &g->tensors[g->outputs[i].tensor];
        fprintf(out, "output %-12s %s  (from %s)\n", g->outputs[i].name, shape_format(sb, sizeof sb, &t->shape, false),
                t->name);
    }
    for (int i = 0; i < g->nlosses; i++)
        fprintf(out, "loss   %-12s scalar  (from %s)\n", g->losses[i].name, g->tensors[g->losses[i].tensor].name);
    int64_t trainable = graph_param_count(g, true), all = graph_param_count(g, false);
    int ntrainable = 0;
    for (int i = 0; i < g->nparams; i++) ntrainable += g->params[i].trainable;
    char b1[32], b2[32];
    fprintf(out, "\nlayers:      %d\n", g->nnodes);
    fprintf(out, "parameters:  %" PRId64 " trainable in %d tensors (%s); %" PRId64 " buffer values\n", trainable,
            ntrainable, human_bytes(4.0 * (double)trainable, b1, sizeof b1), all - trainable);
    int64_t frozen = 0;
    for (int i = 0; i < g->nparams; i++)
        if (g->params[i].frozen) frozen += shape_numel(&g->tensors[g->params[i].tensor].shape);
    if (frozen) fprintf(out, "frozen:      %" PRId64 " of them (freeze in the train block)\n", frozen);
    bool step = false;
    for (int i = 0; i < g->nnodes && !step; i++) step = g->nodes[i].op == OP_GRAD;
    fprintf(out, "FLOPs:       %s per %s (multiply-add = 2)\n", human(graph_flops(g), b2, sizeof b2, "FLOP"),
            step ? "training step (backward and update estimated)" : "forward pass");
    fprintf(out, "activations: %s if every tensor is kept (naive plan, float32)\n",
            human_bytes((double)graph_activation_bytes(g), b1, sizeof b1));
}

static void dot_escape(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        fputc(*s, out);
    }
}

void graph_print_dot(const Graph *g, FILE *out)
{
    char sb[96];
    fprintf(out, "digraph \"");
    dot_escape(out, g->net_name);
    fprintf(out, "\" {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n");
    for (int i = 0; i < g->ninputs; i++) {
        const Tensor *t = &g->tensors[g->inputs[i].tensor];
        fprintf(out, "  t%d [shape=ellipse, label=\"", g->inputs[i].tensor);
        dot_escape(out, g->inputs[i].name);
        fprintf(out, "\\n%s\"];\n", shape_format(sb, sizeof sb, &t->shape, false));
    }
    for (int i = 0; i < g->nnodes; i++) {
        const Node *n = &g->nodes[i];
        fprintf(out, "  n%d [label=\"", i);
        dot_escape(out, n->name);
        fprintf(out, "\\n%s  %s\"];\n", op_table[n->op].name,
                g->tensors[n->out].shape.rank ? shape_format(sb, sizeof sb, &g->tensors[n->out].shape, true) : "scalar");
        for (int k = 0; k < n->nin; k++) {
            int t = n->in[k];
            int prod = g->tensors[t].producer;
            if (prod >= 0) fprintf(out, "  n%d -> n%d;\n", prod, i);
            else fprintf(out, "  t%d -> n%d;\n", t, i);
        }
    }
    for (int i = 0; i < g->noutputs; i++) {
        fprintf(out, "  o%d [shape=ellipse, label=\"", i);
        dot_escape(out, g->outputs[i].name);
        fprintf(out, "\"];\n");
        int prod = g->tensors[g->outputs[i].tensor].producer;
        if (prod >= 0) fprintf(out, "  n%d -> o%d;\n", prod, i);
        else fprintf(out, "  t%d -> o%d;\n", g->outputs[i].tensor, i);
    }
    fprintf(out, "}\n");
}

static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 32) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

static void json_shape(FILE *out, const Shape *s)
{
    fputc('[', out);
    for (int i = 0; i < s->rank; i++) fprintf(out, "%s%" PRId64, i ? ", " : "", s->d[i]);
    fputc(']', out);
}


/* JSON: every attribute an op's AttrSpec declares, as resolved after shape
 * inference (padding as explicit per-side amounts). */
static void json_attrs(FILE *out, const Node *n, int rank)
{
    const OpAttrs *at = &n->at;
    fputc('{', out);
    bool first = true;
    for (const AttrSpec *s = op_table[n->op].attrs; s && s->name; s++) {
        const char *base = (const char *)at + s->offset;
        if (!first) fputs(", ", out);
        first = false;
        switch (s->type) {
        case AT_INT: fprintf(out, "\"%s\": %" PRId64, s->name, *(const int64_t *)base); break;
        case AT_FLOAT: fprintf(out, "\"%s\": %.17g", s->name, *(const double *)base); break;
        case AT_BOOL: fprintf(out, "\"%s\": %s", s->name, *(const bool *)base ? "true" : "false"); break;
        case AT_AXES:
            fprintf(out, "\"%s\": [", s->name);
            for (int i = 0; i < rank; i++) fprintf(out, "%s%" PRId64, i ? ", " : "", ((const int64_t *)base)[i]);
            fputc(']', out);
            break;
        case AT_PADDING: {
            const Padding *p = (const Padding *)base;
            fprintf(out, "\"%s\": [", s->name);
            for (int i = 0; i < rank; i++) fprintf(out, "%s[%" PRId64 ", %" PRId64 "]", i ? ", " : "", p->lo[i], p->hi[i]);
            fputc(']', out);
            break;
        }
        case AT_ENUM: {
            int idx = *(const int *)base;
            const char *p = s->enum_values;
            for (int k = 0; k < idx && p; k++) { p = strchr(p, '|'); if (p) p++; }
            size_t len = p ? strcspn(p, "|") : 0;
            fprintf(out, "\"%s\": \"%.*s\"", s->name, (int)len, p ? p : "");
            break;
        }
        case AT_FLOATS:
            fprintf(out, "\"%s\": [", s->name);
            for (int i = 0; i < at->nweights; i++) fprintf(out, "%s%.17g", i ? ", " : "", at->weights[i]);
            fputc(']', out);
            break;
        }
    }
    fputc('}', out);
}

void graph_print_json(const Graph *g, FILE *out)
{
    fprintf(out, "{\n  \"net\": ");
    json_str(out, g->net_name);
    fprintf(out, ",\n  \"protocol\": ");
    json_str(out, g->protocol_name);
    fprintf(out, ",\n  \"spatial_rank\": %d,\n  \"tensors\": [\n", g->spatial_rank);
    static const char *kinds[] = { "input", "labels", "param", "activation", "hyper", "weightmap" };
    for (int i = 0; i < g->ntensors; i++) {
        const Tensor *t = &g->tensors[i];
        fprintf(out, "    {\"id\": %d, \"name\": ", i);
        json_str(out, t->name);
        fprintf(out, ", \"kind\": \"%s\", \"dtype\": \"%s\", \"shape\": ", kinds[t->kind], t->dtype == DT_F32 ? "f32" : "i32");
        json_shape(out, &t->shape);
        fprintf(out, "}%s\n", i + 1 < g->ntensors ? "," : "");
    }
    fprintf(out, "  ],\n  \"params\": [\n");
    for (int i = 0; i < g->nparams; i++) {
        const Param *p = &g->params[i];
        fprintf(out, "    {\"name\": ");
        json_str(out, p->name);
        fprintf(out, ", \"tensor\": %d, \"trainable\": %s, \"frozen\": %s, \"init\": \"%s\", \"init_a\": %.17g, \"fan_in\": %" PRId64
                ", \"fan_out\": %" PRId64 ", \"node\": %d}%s\n",
                p->tensor, p->trainable ? "true" : "false", p->frozen ? "true" : "false", init_kind_name(p->init.kind), p->init.a, p->init.fan_in,
                p->init.fan_out, p->node, i + 1 < g->nparams ? "," : "");
    }
    fprintf(out, "  ],\n  \"nodes\": [\n");
    for (int i = 0; i < g->nnodes; i++) {
        const Node *n = &g->nodes[i];
        fprintf(out, "    {\"name\": ");
        json_str(out, n->name);
        fprintf(out, ", \"op\": \"%s\", \"inputs\": [", op_table[n->op].name);
        for (int k = 0; k < n->nin; k++) fprintf(out, "%s%d", k ? ", " : "", n->in[k]);
        fprintf(out, "], \"output\": %d, \"params\": [", n->out);
        for (int k = 0; k < n->nparams; k++) fprintf(out, "%s%d", k ? ", " : "", n->params[k]);
        fprintf(out, "], \"attrs\": ");
        json_attrs(out, n, g->spatial_rank);
        fprintf(out, ", \"line\": %d}%s\n", n->loc.line, i + 1 < g->nnodes ? "," : "");
    }
    fprintf(out, "  ],\n  \"inputs\": [");
    for (int i = 0; i < g->ninputs; i++) {
        fprintf(out, "%s{\"name\": ", i ? ", " : "");
        json_str(out, g->inputs[i].name);
        fprintf(out, ", \"tensor\": %d}", g->inputs[i].tensor);
    }
    fprintf(out, "],\n  \"outputs\": [");
    for (int i = 0; i < g->noutputs; i++) {
        fprintf(out, "%s{\"name\": ", i ? ", " : "");
        json_str(out, g->outputs[i].name);
        fprintf(out, ", \"tensor\": %d}", g->outputs[i].tensor);
    }
    fprintf(out, "],\n  \"losses\": [");
    for (int i = 0; i < g->nlosses; i++) {
        fprintf(out, "%s{\"name\": ", i ? ", " : "");
        json_str(out, g->losses[i].name);
        fprintf(out, ", \"tensor\": %d}", g->losses[i].tensor);
    }
    fprintf(out, "]\n}\n");
}
