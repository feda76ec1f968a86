/* expand.c — run a net for a protocol and build its L1 graph.
 *
 * A net body is executed like a small program: parameters are bound, loops
 * unrolled, `if`s decided, blocks expanded (a block application runs the
 * block body in a fresh frame), and every op application becomes a graph
 * node whose output shape is inferred on the spot by the op's shape rule.
 * There is no separate "shape inference pass": when expansion finishes, every
 * tensor has its static shape, and every node and parameter its name
 * (names.c).
 *
 * Invariants:
 *  - nodes are appended in topological order (inputs exist before use);
 *  - a failed op yields V_ERROR and creates nothing, so later ops that use it
 *    stay silent instead of cascading;
 *  - expansion is bounded: EXPAND_MAX_NODES nodes, EXPAND_MAX_STEPS steps,
 *    EXPAND_MAX_CALL_DEPTH nested block applications.
 */
#define _POSIX_C_SOURCE 200809L
#include "sema_internal.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* What a body is executing for. */
typedef struct {
    bool is_net;
    const int *inputs; int ninputs; int next_input;   /* block: tensors to bind */
    int nresults; Value results[16];                  /* block: `output` values */
    Value last;                                       /* last expression statement */
    bool has_input_stmt;
    SrcLoc call_loc;
} Body;

static void exec_stmts(Sema *S, const AstList *stmts, Body *b);

/* ---- layers ----------------------------------------------------------- */

Value op_layer(Sema *S, OpKind op, SrcLoc loc)
{
    Layer *l = sema_alloc(S, sizeof *l);
    l->kind = LAYER_OP;
    l->op = op;
    l->name = op_table[op].name;
    l->loc = loc;
    Value v = { .kind = V_LAYER, .layer = l, .loc = loc };
    return v;
}

Value block_layer(Sema *S, Ast *block, SrcLoc loc)
{
    Layer *l = sema_alloc(S, sizeof *l);
    l->kind = LAYER_BLOCK;
    l->block = block;
    l->name = block->str;
    l->loc = loc;
    Value v = { .kind = V_LAYER, .layer = l, .loc = loc };
    return v;
}

/* How many input tensors a block body declares with `input`. */
static int count_inputs(const AstList *stmts)
{
    int n = 0;
    for (int i = 0; i < stmts->n; i++) {
        const Ast *s = stmts->items[i];
        if (!s) continue;
        if (s->kind == S_INPUT) n += s->list.n;
        else if (s->kind == S_FOR || s->kind == S_IF) n += count_inputs(&s->list) + count_inputs(&s->list2);
    }
    return n;
}

/* A layer is "fresh" when it came straight from a name (conv, stage) and has
 * not been given arguments yet. */
static bool layer_fresh(const Layer *l)
{
    return (l->kind == LAYER_OP || l->kind == LAYER_BLOCK) && !l->configured;
}

/* Positional arguments that are bare names bound to nothing are almost
 * always misspelled tensors: report each as an unknown name.  Returns
 * whether there was one. */
static bool blame_stray_names(Sema *S, const Arg *args, int nargs)
{
    bool blamed = false;
    for (int k = 0; k < nargs; k++)
        if (!args[k].name && args[k].value.kind == V_SYM) {
            sema_unknown_name(S, args[k].value.s, args[k].loc);
            blamed = true;
        }
    return blamed;
}

Value call_value(Sema *S, Value callee, const Ast *call)
{
    if (callee.kind != V_LAYER) {
        char *text = ast_to_string(call->a);
        diag_error(S->diag, call->loc, "`%s` is %s %s, not an op or block, so it cannot be called", text,
                   callee.kind == V_INT ? "an" : "a", value_kind_name(callee.kind));
        free(text);
        return value_error();
    }
    int n = call->list.n;
    Arg *args = sema_alloc(S, sizeof(Arg) * (size_t)(n ? n : 1));
    int *tensors = sema_alloc(S, sizeof(int) * (size_t)(n ? n : 1));
    int nargs = 0, nt = 0;
    bool failed = false;
    for (int i = 0; i < n; i++) {
        const Ast *a = call->list.items[i];
        bool named = a->kind == A_NAMEDARG;
        Value v = eval_sym(S, named ? a->a : a);
        if (v.kind == V_ERROR) { failed = true; continue; }
        if (v.kind == V_TENSOR) {
            if (named) {
                diag_error(S->diag, a->loc, "tensors are passed by position, not as `%s = ...`", a->str);
                failed = true;
                continue;
            }
            if (nargs > 0) {
                /* concat(skp, x) with `skp` misspelled: the stray name is the
                 * real mistake, not the argument order */
                if (!blame_stray_names(S, args, nargs))
                    diag_error(S->diag, a->loc, "tensor arguments come before the other arguments");
                failed = true;
                break;
            }
            tensors[nt++] = v.tensor;
            continue;
        }
        args[nargs].name = named ? a->str : NULL;
        args[nargs].value = v;
        args[nargs].loc = a->loc;
        nargs++;
    }
    if (failed) return value_error();
    Layer *l = callee.layer;
    if (layer_fresh(l)) {
        Layer *c = sema_alloc(S, sizeof *c);
        *c = *l;
        c->args = nargs ? args : NULL;
        c->nargs = nargs;
        c->loc = call->loc;
        if (c->kind == LAYER_OP) {
            /* Check the arguments now, where they are written, even if the
             * layer is only applied later (or never). */
            if (!parse_op_attrs(S, c->op, c->args, c->nargs, &c->at, c->loc)) return value_error();
            c->at_ok = true;
        }
        Value lv = { .kind = V_LAYER, .layer = c, .loc = call->loc };
        c->configured = true;
        if (nt == 0) return lv;
        /* Fewer tensors than the layer takes: a partial application whose
         * tensors come after the chained one, so x -> concat(skip) is
         * concat(x, skip). */
        int wants = c->kind == LAYER_OP ? op_table[c->op].min_inputs : count_inputs(&c->block->list);
        if (c->kind == LAYER_OP && c->op == OP_CROP && c->nargs == 0) wants = 2;   /* x -> crop(ref) */
        if (nt < wants) {
            c->bound = tensors;
            c->nbound = nt;
            return lv;
        }
        return apply_layer(S, c, tensors, nt, call->loc);
    }
    if (nargs > 0) {
        if (!blame_stray_names(S, args, nargs))   /* conv(2, 1)(imag) */
            diag_error(S->diag, args[0].loc, "`%s` already has its arguments; call it with tensors only, as in %s(...)(x)",
                       l->name, l->name);
        return value_error();
    }
    if (nt == 0) {
        diag_error(S->diag, call->loc, "calling `%s` with no tensors", l->name);
        return value_error();
    }
    return apply_layer(S, l, tensors, nt, call->loc);
}

/* ---- nodes ------------------------------------------------------------ */

static int64_t gcd64(int64_t a, int64_t b) { while (b) { int64_t t = a % b; a = b; b = t; } return a < 0 ? -a : a; }

/* Track how far each spatial axis has been resampled since the input. */
static void propagate_resampling(Sema *S, OpKind op, const OpAttrs *at, const int *in, int nin, Tensor *out)
{
    Graph *g = S->g;
    int pick = -1;
    double worst = 0;
    for (int i = 0; i < nin; i++) {
        const Tensor *t = &g->tensors[in[i]];
        if (t->kind == TK_LABEL || t->source_input < 0) continue;
        double r = (double)t->down_num[0] / (double)t->down_den[0];
        for (int k = 1; k < S->rank; k++) {
            double q = (double)t->down_num[k] / (double)t->down_den[k];
            if (q > r) r = q;
        }
        if (pick < 0 || r > worst) { pick = i; worst = r; }
    }
    for (int k = 0; k < MAX_SPATIAL; k++) { out->down_num[k] = 1; out->down_den[k] = 1; out->max_down[k] = 1; }
    for (int i = 0; i < nin; i++)
        for (int k = 0; k < MAX_SPATIAL; k++)
            if (g->tensors[in[i]].max_down[k] > out->max_down[k]) out->max_down[k] = g->tensors[in[i]].max_down[k];
    out->source_input = -1;
    if (pick < 0) return;
    const Tensor *src = &g->tensors[in[pick]];
    out->source_input = src->source_input;
    for (int k = 0; k < S->rank; k++) {
        int64_t num = src->down_num[k], den = src->down_den[k];
        switch (op) {
        case OP_CONV: case OP_MAXPOOL: case OP_AVGPOOL:
            if (at->stride[k] > 0 && num < (INT64_C(1) << 40)) num *= at->stride[k];
            break;
        case OP_UPCONV:
            if (at->stride[k] > 0 && den < (INT64_C(1) << 40)) den *= at->stride[k];
            break;
        case OP_UPSAMPLE:
            if (at->scale[k] > 0 && den < (INT64_C(1) << 40)) den *= at->scale[k];
            break;
        default: break;
        }
        int64_t d = gcd64(num, den);
        if (d > 1) { num /= d; den /= d; }
        out->down_num[k] = num;
        out->down_den[k] = den;
        if (den == 1 && num > out->max_down[k]) out->max_down[k] = num;
    }
}

/* Check inputs, infer the output shape, and add the node with its output
 * tensor and parameters.  Returns the output tensor or V_ERROR. */
static Value make_node(Sema *S, OpKind op, const int *in, int nin, OpAttrs *at, SrcLoc loc)
{
    const OpInfo *info = &op_table[op];
    Graph *g = S->g;
    if (S->limit_hit) return value_error();
    if (g->nnodes >= EXPAND_MAX_NODES) {
        S->limit_hit = true;
        diag_error(S->diag, loc, "the net expands to more than %d nodes", EXPAND_MAX_NODES);
        return value_error();
    }
    if (nin < info->min_inputs || (info->max_inputs >= 0 && nin > info->max_inputs)) {
        if (info->max_inputs == info->min_inputs)
            diag_error(S->diag, loc, "%s takes %d tensor%s, got %d", info->name, info->min_inputs,
                       info->min_inputs == 1 ? "" : "s", nin);
        else if (info->max_inputs < 0)
            diag_error(S->diag, loc, "%s takes at least %d tensors, got %d", info->name, info->min_inputs, nin);
        else
            diag_error(S->diag, loc, "%s takes %d to %d tensors, got %d", info->name, info->min_inputs,
                       info->max_inputs, nin);
        return value_error();
    }
    bool is_loss = info->kind == FK_REDUCE && (op == OP_CE || op == OP_DICE || op == OP_FOCAL);
    Shape shapes[64];
    const Tensor *tin[64];
    if (nin > 64) {
        diag_error(S->diag, loc, "%s of more than 64 tensors", info->name);
        return value_error();
    }
    for (int i = 0; i < nin; i++) {
        tin[i] = &g->tensors[in[i]];
        shapes[i] = tin[i]->shape;
        bool label = tin[i]->kind == TK_LABEL, wmap = tin[i]->kind == TK_WEIGHTMAP;
        if (label && !(is_loss && i == 1)) {
            diag_error(S->diag, loc, "`%s` holds labels; it can only be the second argument of a loss", tin[i]->name);
            return value_error();
        }
        if (is_loss && i == 1 && !label) {
            diag_error(S->diag, loc, "the second argument of %s must be the labels (write `labels`)", info->name);
            return value_error();
        }
        if (wmap && !(is_loss && i == 2)) {
            diag_error(S->diag, loc, "`%s` holds voxel weights; it can only be the third argument of a loss",
                       tin[i]->name);
            return value_error();
        }
        if (is_loss && i == 2 && !wmap) {
            diag_error(S->diag, loc, "the third argument of %s must be the voxel weight map (write `weightmap`)",
                       info->name);
            return value_error();
        }
    }
    ShapeCtx cx = {
        .diag = S->diag, .loc = loc, .op_name = info->name, .spatial_rank = S->rank,
        .in = tin, .nin = nin,
        .protocol_name = S->pr ? S->pr->name : NULL,
        .protocol_size = S->shape ? S->shape->size : NULL,
    };
    Shape out;
    memset(&out, 0, sizeof out);
    if (!info->shape(&cx, at, shapes, nin, &out)) return value_error();
    int t = graph_add_tensor(g, info->name, out, DT_F32, TK_ACTIVATION);
    int node = graph_add_node(g, op, info->name, in, nin, t, at, loc);
    g->tensors[t].producer = node;
    propagate_resampling(S, op, at, in, nin, &g->tensors[t]);
    ParamSpec ps[NODE_MAX_PARAMS];
    int np = info->params ? info->params(at, shapes, nin, ps) : 0;
    for (int i = 0; i < np; i++) graph_add_param(g, node, &ps[i]);
    names_node(S, node, info->name);
    Value v = { .kind = V_TENSOR, .tensor = t, .loc = loc };
    return v;
}

/* ---- applying layers -------------------------------------------------- */

static Value apply_block(Sema *S, Layer *l, const int *ts, int nt, SrcLoc loc);

Value apply_layer(Sema *S, Layer *l, const int *ts, int nt, SrcLoc loc)
{
    if (!sema_step(S, loc)) return value_error();
    int all[64];
    int n = 0;
    if (nt + l->nbound > 64) {
        diag_error(S->diag, loc, "more than 64 tensors into one layer");
        return value_error();
    }
    for (int i = 0; i < nt; i++) all[n++] = ts[i];
    for (int i = 0; i < l->nbound; i++) all[n++] = l->bound[i];
    switch (l->kind) {
    case LAYER_OP: {
        OpAttrs at = l->at;
        if (!l->at_ok && !parse_op_attrs(S, l->op, l->args, l->nargs, &at, l->loc)) return value_error();
        return make_node(S, l->op, all, n, &at, l->loc);
    }
    case LAYER_BLOCK:
        return apply_block(S, l, all, n, loc);
    case LAYER_CHAIN: {
        Value mid = apply_layer(S, l->first, all, n, loc);
        if (mid.kind == V_ERROR) return mid;
        if (mid.kind == V_TENSOR) return apply_layer(S, l->second, &mid.tensor, 1, loc);
        if (mid.kind == V_TUPLE) {
            int t2[64];
            for (int i = 0; i < mid.n && i < 64; i++) t2[i] = mid.items[i].tensor;
            return apply_layer(S, l->second, t2, mid.n, loc);
        }
        return value_error();
    }
    }
    return value_error();
}

Value tensor_binop(Sema *S, int op, Value a, Value b, SrcLoc loc)
{
    OpAttrs at;
    if (a.kind == V_TENSOR && b.kind == V_TENSOR) {
        if (op != AOP_ADD && op != AOP_MUL) {
            diag_error(S->diag, loc, "`%s` of two tensors is not defined; tensors support + (add) and * (mul)",
                       ast_op_text(op));
            return value_error();
        }
        OpKind k = op == AOP_ADD ? OP_ADD : OP_MUL;
        op_default_attrs(k, S->rank, &at);
        int in[2] = { a.tensor, b.tensor };
        return make_node(S, k, in, 2, &at, loc);
    }
    Value num = a.kind == V_TENSOR ? b : a;
    Value ten = a.kind == V_TENSOR ? a : b;
    if (op == AOP_MUL && value_is_number(&num)) {
        op_default_attrs(OP_SCALE, S->rank, &at);
        at.factor = value_number(&num);
        return make_node(S, OP_SCALE, &ten.tensor, 1, &at, loc);
    }
    if (op == AOP_DIV && a.kind == V_TENSOR && value_is_number(&b) && value_number(&b) != 0) {
        op_default_attrs(OP_SCALE, S->rank, &at);
        at.factor = 1.0 / value_number(&b);
        return make_node(S, OP_SCALE, &ten.tensor, 1, &at, loc);
    }
    if (num.kind == V_ERROR) return num;
    diag_error(S->diag, loc, "`%s` of a tensor and a %s is not defined (tensors support +, *, and * or / by a number)",
               ast_op_text(op), value_kind_name(num.kind));
    return value_error();
}

/* ---- blocks ----------------------------------------------------------- */

static bool body_has_input(const AstList *stmts)
{
    for (int i = 0; i < stmts->n; i++) {
        const Ast *s = stmts->items[i];
        if (!s) continue;
        if (s->kind == S_INPUT) return true;
        if ((s->kind == S_FOR || s->kind == S_IF) && (body_has_input(&s->list) || body_has_input(&s->list2)))
            return true;
    }
    return false;
}

static Value apply_block(Sema *S, Layer *l, const int *ts, int nt, SrcLoc loc)
{
    Ast *blk = l->block;
    if (S->call_depth >= EXPAND_MAX_CALL_DEPTH) {
        if (!S->limit_hit)
            diag_error(S->diag, loc, "blocks nested more than %d deep (does `%s` call itself?)",
                       EXPAND_MAX_CALL_DEPTH, blk->str);
        S->limit_hit = true;
        return value_error();
    }
    /* Bind parameters: positional in order, then by name; defaults are
     * evaluated inside the block's frame, so a default may use earlier
     * parameters: block b(c, k = c). */
    int np = blk->list2.n;
    Value *vals = sema_alloc(S, sizeof(Value) * (size_t)(np ? np : 1));
    bool *set = sema_alloc(S, sizeof(bool) * (size_t)(np ? np : 1));
    bool ok = true;
    int pos = 0;
    for (int i = 0; i < l->nargs; i++) {
        const Arg *a = &l->args[i];
        int idx = -1;
        if (a->name) {
            for (int k = 0; k < np; k++)
                if (strcmp(blk->list2.items[k]->str, a->name) == 0) idx = k;
            if (idx < 0) {
                Suggest sg;
                suggest_init(&sg, a->name);
                for (int k = 0; k < np; k++) suggest_offer(&sg, blk->list2.items[k]->str);
                diag_error(S->diag, a->loc, "block %s has no parameter `%s`%s", blk->str, a->name, suggest_hint(&sg));
                ok = false;
                continue;
            }
        } else {
            idx = pos++;
            if (idx >= np) {
                diag_error(S->diag, a->loc, "block %s takes %d parameter%s, but more were given", blk->str, np,
                           np == 1 ? "" : "s");
                ok = false;
                continue;
            }
        }
        if (set[idx]) {
            diag_error(S->diag, a->loc, "parameter `%s` of block %s is given twice", blk->list2.items[idx]->str, blk->str);
            ok = false;
            continue;
        }
        /* A bare name is passed on as a symbol (b(same) for a padding
         * parameter); if the block uses it as a number or tensor, the error
         * points back here. */
        set[idx] = true;
        vals[idx] = a->value;
    }
    if (!ok) return value_error();

    Frame *saved_env = S->env;
    S->env = NULL;
    frame_push(S, true);
    S->env->parent = NULL;
    for (int k = 0; k < np; k++) {
        Ast *pd = blk->list2.items[k];
        if (!set[k]) {
            if (!pd->a) {
                diag_error(S->diag, l->loc, "block %s needs parameter `%s`", blk->str, pd->str);
                diag_note(S->diag, blk->loc, "block %s is defined here", blk->str);
                ok = false;
                continue;
            }
            vals[k] = eval_sym(S, pd->a);   /* a default may be a symbol: pad = valid */
            if (vals[k].kind == V_ERROR) { ok = false; continue; }
        }
        env_define(S, pd->str, vals[k], false);
    }
    Value result = value_error();
    if (ok) {
        int errors_before = S->diag->nraised;
        S->call_depth++;
        names_push(S, blk->str);
        Body b = { .is_net = false, .inputs = ts, .ninputs = nt, .call_loc = loc };
        b.has_input_stmt = body_has_input(&blk->list);
        b.last = (Value){ .kind = V_NONE };
        exec_stmts(S, &blk->list, &b);
        if (b.has_input_stmt) {
            if (b.next_input < nt && !S->limit_hit)
                diag_error(S->diag, loc, "block %s takes %d input tensor%s, got %d", blk->str, b.next_input,
                           b.next_input == 1 ? "" : "s", nt);
            if (b.nresults == 1) result = b.results[0];
            else if (b.nresults > 1) {
                result.kind = V_TUPLE;
                result.n = b.nresults;
                result.items = sema_alloc(S, sizeof(Value) * (size_t)b.nresults);
                memcpy(result.items, b.results, sizeof(Value) * (size_t)b.nresults);
                result.loc = loc;
            } else if (b.last.kind == V_TENSOR) result = b.last;
            else if (S->diag->nraised == errors_before)
                diag_error(S->diag, blk->loc, "block %s has inputs but no `output`", blk->str);
        } else if (b.last.kind == V_LAYER) {
            /* Form (a): the body is a chain of layers applied to the input. */
            result = apply_layer(S, b.last.layer, ts, nt, loc);
        } else if (S->diag->nraised == errors_before) {
            diag_error(S->diag, blk->loc, "block %s must end in a chain of layers (like conv(c, 3) -> relu) or declare `input` and `output`",
                       blk->str);
        }
        names_pop(S);
        S->call_depth--;
    }
    while (S->env) frame_pop(S);
    S->env = saved_env;
    return result;
}

/* ---- statements ------------------------------------------------------- */

static void bind_input(Sema *S, const Ast *name, Body *b)
{
    if (b->is_net) {
        /* net inputs are created by expand_net before the body runs */
        Binding *bd = env_lookup(S, name->str);
        if (!bd) diag_error(S->diag, name->loc, "input `%s` is not provided by the protocol", name->str);
        return;
    }
    if (b->next_input >= b->ninputs) {
        diag_error(S->diag, b->call_loc, "this block application gives %d tensor%s, but the block reads input `%s` too",
                   b->ninputs, b->ninputs == 1 ? "" : "s", name->str);
        b->next_input++;
        env_define(S, name->str, value_error(), false);
        return;
    }
    Value v = { .kind = V_TENSOR, .tensor = b->inputs[b->next_input++], .loc = name->loc };
    env_define(S, name->str, v, false);
}

static void exec_output(Sema *S, const Ast *s, Body *b)
{
    const char *name = s->str;
    if (!name && s->a && s->a->kind == A_IDENT) name = s->a->str;
    if (b->is_net && !name) {
        diag_error(S->diag, s->loc, "give this output a name: output NAME = ...");
        return;
    }
    if (name) names_push(S, name);
    Value v = eval(S, s->a);
    if (name) names_pop(S);
    if (v.kind == V_ERROR) return;
    if (v.kind != V_TENSOR) {
        if (v.kind == V_LAYER && v.layer->nbound)
            diag_error(S->diag, s->loc, "an output must be a tensor; this %s has %d tensor%s and waits for more "
                       "(it takes at least %d)", v.layer->name, v.layer->nbound, v.layer->nbound == 1 ? "" : "s",
                       v.layer->kind == LAYER_OP ? op_table[v.layer->op].min_inputs : v.layer->nbound + 1);
        else
            diag_error(S->diag, s->loc, "an output must be a tensor, not %s", value_kind_name(v.kind));
        return;
    }
    if (b->is_net) {
        for (int i = 0; i < S->g->noutputs; i++)
            if (strcmp(S->g->outputs[i].name, name) == 0) {
                diag_error(S->diag, s->loc, "output `%s` is declared twice", name);
                diag_note(S->diag, S->g->outputs[i].loc, "the first declaration is here");
                return;
            }
        graph_add_output(S->g, name, v.tensor, s->loc);
    } else {
        if (b->nresults >= 16) {
            diag_error(S->diag, s->loc, "a block can have at most 16 outputs");
            return;
        }
        b->results[b->nresults++] = v;
    }
    if (s->str) env_assign(S, s->str, v, s->loc);
}

static void exec_assign(Sema *S, const Ast *s)
{
    const Ast *t = s->a;
    char key[300];
    char scope[300];
    if (t->kind == A_IDENT) {
        snprintf(key, sizeof key, "%s", t->str);
        snprintf(scope, sizeof scope, "%s", t->str);
    } else if (t->kind == A_INDEX) {
        Value idx = eval(S, t->a);
        if (idx.kind == V_ERROR) { (void)eval(S, s->b); return; }
        if (idx.kind != V_INT) {
            diag_error(S->diag, t->a->loc, "an index must be an integer, not %s", value_kind_name(idx.kind));
            return;
        }
        snprintf(key, sizeof key, "%s[%lld]", t->str, (long long)idx.i);
        snprintf(scope, sizeof scope, "%s.%lld", t->str, (long long)idx.i);
    } else {
        return;   /* reported by the parser */
    }
    if (op_lookup(t->str) != OP_COUNT)
        diag_warning(S->diag, t->loc, "`%s` hides the op of the same name", t->str);
    names_push(S, scope);
    Value v = eval(S, s->b);
    names_pop(S);
    env_assign(S, key, v, t->loc);
}

static void exec_for(Sema *S, const Ast *s, Body *b)
{
    Value r = eval(S, s->a);
    if (r.kind == V_ERROR) return;
    if (r.kind == V_RANGE) {
        if (r.items[0].kind != V_INT || r.items[1].kind != V_INT) {
            diag_error(S->diag, s->a->loc, "a loop range needs integers at both ends");
            return;
        }
        int64_t lo = r.items[0].i, hi = r.items[1].i;
        int64_t step = hi >= lo ? 1 : -1;
        for (int64_t i = lo;; i += step) {
            if (!sema_step(S, s->loc)) return;
            int errors = S->diag->nraised;
            frame_push(S, false);
            env_define(S, s->str, value_int(i, s->loc), true);
            exec_stmts(S, &s->list, b);
            frame_pop(S);
            /* an iteration with errors is not repeated: the next ones would
             * report the same mistakes */
            if (i == hi || S->limit_hit || S->diag->nraised != errors) break;
        }
        return;
    }
    if (r.kind == V_LIST || r.kind == V_TUPLE) {
        for (int i = 0; i < r.n; i++) {
            if (!sema_step(S, s->loc)) return;
            int errors = S->diag->nraised;
            frame_push(S, false);
            env_define(S, s->str, r.items[i], true);
            exec_stmts(S, &s->list, b);
            frame_pop(S);
            if (S->limit_hit || S->diag->nraised != errors) break;
        }
        return;
    }
    diag_error(S->diag, s->a->loc, "`for` needs a range (a .. b) or a list, not %s", value_kind_name(r.kind));
}

static void exec_stmts(Sema *S, const AstList *stmts, Body *b)
{
    for (int i = 0; i < stmts->n && !S->limit_hit; i++) {
        const Ast *s = stmts->items[i];
        if (!s) continue;
        if (!sema_step(S, s->loc)) return;
        switch (s->kind) {
        case S_INPUT:
            for (int k = 0; k < s->list.n; k++) bind_input(S, s->list.items[k], b);
            break;
        case S_OUTPUT: exec_output(S, s, b); break;
        case S_ASSIGN: exec_assign(S, s); break;
        case S_EXPR: {
            Value v = eval(S, s->a);
            if (b->is_net && v.kind == V_LAYER)
                diag_warning(S->diag, s->loc, "this layer is never applied to a tensor");
            b->last = v;
            break;
        }
        case S_FOR: exec_for(S, s, b); break;
        case S_IF: {
            Value c = eval(S, s->a);
            if (c.kind == V_ERROR) break;
            if (c.kind != V_BOOL) {
                diag_error(S->diag, s->a->loc, "an `if` condition must be true or false, not %s", value_kind_name(c.kind));
                break;
            }
            frame_push(S, false);
            exec_stmts(S, c.i ? &s->list : &s->list2, b);
            frame_pop(S);
            break;
        }
        default:
            diag_error(S->diag, s->loc, "a %s is not allowed inside a body", ast_kind_name(s->kind));
        }
    }
}

/* ---- nets ------------------------------------------------------------- */

/* Which channels each net input takes: one input gets all of them; several
 * inputs each take the protocol channel of the same name. */
static bool create_inputs(Sema *S, Ast *net)
{
    const Protocol *pr = S->pr;
    Ast *names[MAX_CHANNELS + 1];
    int n = 0;
    for (int i = 0; i < net->list.n; i++) {
        Ast *s = net->list.items[i];
        if (!s || s->kind != S_INPUT) continue;
        for (int k = 0; k < s->list.n; k++) {
            if (n > MAX_CHANNELS) {
                diag_error(S->diag, s->list.items[k]->loc, "more than %d inputs", MAX_CHANNELS);
                return false;
            }
            names[n++] = s->list.items[k];
        }
    }
    if (n == 0) {
        if (!S->prog->load_errors) diag_error(S->diag, net->loc, "net %s has no `input`", net->str);
        return false;
    }
    for (int i = 0; i < n; i++) {
        int64_t channels = pr->nchannels;
        if (n > 1) {
            int match = -1;
            for (int c = 0; c < pr->nchannels; c++)
                if (strcmp(pr->channels[c], names[i]->str) == 0) match = c;
            if (match < 0) {
                Suggest sg;
                suggest_init(&sg, names[i]->str);
                for (int c = 0; c < pr->nchannels; c++) suggest_offer(&sg, pr->channels[c]);
                diag_error(S->diag, names[i]->loc,
                           "net %s has %d inputs, so each must be named after a channel of protocol %s; `%s` is not one%s",
                           net->str, n, pr->name, names[i]->str, suggest_hint(&sg));
                return false;
            }
            channels = 1;
        }
        Shape sh = { .rank = 2 + S->rank };
        sh.d[0] = S->shape->batch;
        sh.d[1] = channels;
        for (int k = 0; k < S->rank; k++) sh.d[2 + k] = S->shape->size[k];
        int t = graph_add_tensor(S->g, names[i]->str, sh, DT_F32, TK_INPUT);
        Tensor *tt = &S->g->tensors[t];
        tt->source_input = i;
        for (int k = 0; k < MAX_SPATIAL; k++) { tt->down_num[k] = 1; tt->down_den[k] = 1; }
        graph_add_input(S->g, names[i]->str, t, names[i]->loc);
        Value v = { .kind = V_TENSOR, .tensor = t, .loc = names[i]->loc };
        env_define(S, names[i]->str, v, false);
    }
    return true;
}

static Value eval_override(Sema *S, Override *o)
{
    return eval(S, o->value);
}

/* Warn once per source place about layers whose result reaches no output:
 * usually a forgotten connection. (They stay in the graph, so parameter
 * counts still match a PyTorch module that owns them.) */
static void warn_unused(Sema *S)
{
    Graph *g = S->g;
    if (S->diag->nerrors || g->noutputs == 0) return;
    bool *live = xcalloc((size_t)g->ntensors + 1, 1);
    for (int i = 0; i < g->noutputs; i++) live[g->outputs[i].tensor] = true;
    for (int i = g->nnodes - 1; i >= 0; i--) {
        const Node *n = &g->nodes[i];
        if (!live[n->out]) continue;
        for (int k = 0; k < n->nin; k++) live[n->in[k]] = true;
    }
    int shown = 0;
    for (int i = 0; i < g->nnodes && shown < 5; i++) {
        const Node *n = &g->nodes[i];
        if (live[n->out]) continue;
        bool dup = false;
        for (int j = 0; j < i && !dup; j++)
            dup = !live[g->nodes[j].out] && g->nodes[j].loc.file == n->loc.file && g->nodes[j].loc.line == n->loc.line &&
                  g->nodes[j].loc.col == n->loc.col;
        if (dup) continue;
        diag_warning(S->diag, n->loc, "`%s` (%s) is computed but no output uses it", n->name, op_table[n->op].name);
        shown++;
    }
    free(live);
}

Graph *expand_net(Program *p, Ast *net, const Protocol *pr, const ExpandShape *shape, Override *ov, int nov)
{
    Sema S;
    sema_init(&S, p);
    S.pr = pr;
    S.rank = pr->rank;
    S.shape = shape;
    S.g = graph_new(net->str, pr->name, pr->rank);
    names_init(&S);
    int errors_before = p->diag->nraised;
    frame_push(&S, true);

    /* Parameters: -D overrides, then the protocol (classes), then defaults. */
    for (int i = 0; i < net->list2.n; i++) {
        Ast *pd = net->list2.items[i];
        Value v = value_error();
        bool have = false;
        for (int k = 0; k < nov; k++) {
            if (strcmp(ov[k].key, pd->str) == 0) {
                v = eval_override(&S, &ov[k]);
                ov[k].used = true;
                have = true;
            }
        }
        if (!have && strcmp(pd->str, "classes") == 0 && pr->nclasses > 0) {
            v = value_int(pr->nclasses, pd->loc);
            have = true;
        }
        if (!have) {
            if (!pd->a) {
                diag_error(p->diag, pd->loc, "net %s needs a value for parameter `%s` (give it with -D %s=...)",
                           net->str, pd->str, pd->str);
                env_define(&S, pd->str, value_error(), false);
                continue;
            }
            v = eval_sym(&S, pd->a);
        }
        env_define(&S, pd->str, v, false);
    }
    for (int k = 0; k < nov; k++) {
        if (ov[k].used || strchr(ov[k].key, '.')) continue;
        Suggest sg;
        suggest_init(&sg, ov[k].key);
        for (int i = 0; i < net->list2.n; i++) suggest_offer(&sg, net->list2.items[i]->str);
        diag_error(p->diag, NO_LOC, "-D %s: net %s has no parameter `%s`%s", ov[k].key, net->str, ov[k].key,
                   suggest_hint(&sg));
        ov[k].used = true;
    }

    if (create_inputs(&S, net)) {
        Body b = { .is_net = true };
        exec_stmts(&S, &net->list, &b);
        if (S.g->noutputs == 0 && p->diag->nraised == errors_before && !p->load_errors)
            diag_error(p->diag, net->loc, "net %s has no `output`", net->str);
    }
    names_finalize(&S, 0);

    /* The first output is the segmentation: its channels are the protocol's
     * classes (or 1, a sigmoid head for 2 classes).  Further outputs
     * (auxiliary heads, DCAN's contour head) may differ. */
    for (int i = 0; i < S.g->noutputs && i < 1 && pr->nclasses > 0; i++) {
        const Tensor *t = &S.g->tensors[S.g->outputs[i].tensor];
        if (t->shape.rank < 2) continue;
        int64_t c = t->shape.d[1];
        if (c != pr->nclasses && !(c == 1 && pr->nclasses == 2)) {
            diag_error(p->diag, S.g->outputs[i].loc, "output `%s` has %lld channel(s) but protocol %s has %d classes",
                       S.g->outputs[i].name, (long long)c, pr->name, pr->nclasses);
        }
    }
    warn_unused(&S);
    sema_release(&S);
    return S.g;
}
