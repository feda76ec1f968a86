/* driver.c — the front end as one call: choose the net and protocol, parse
 * -D overrides, check the protocol and train block, expand the net.  Used by
 * the CLI, the tests and the fuzzer alike, so all three exercise one path. */
#define _POSIX_C_SOURCE 200809L
#include "driver.h"
#include "autodiff.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parse each -D value: an expression for net parameters, a field value list
 * for protocol./train. keys.  The text becomes a pseudo-file so errors in it
 * are shown with a caret like any other. */
static bool parse_overrides(Program *p, CompileOptions *o)
{
    bool ok = true;
    for (int i = 0; i < o->nov; i++) {
        const char *text = o->ov[i].text;
        char name[300];
        snprintf(name, sizeof name, "<-D %s>", o->ov[i].key);
        int f = diag_add_source(p->diag, name, text, strlen(text));
        bool field = strchr(o->ov[i].key, '.') != NULL;
        Ast *v = field ? parse_field_values_text(&p->arena, p->diag, f) : parse_expr_text(&p->arena, p->diag, f);
        if (v && field) v->str = xstrdup(strchr(o->ov[i].key, '.') + 1);
        o->ov[i].value = v;
        if (!v) ok = false;
        if (field && strncmp(o->ov[i].key, "protocol.", 9) != 0 && strncmp(o->ov[i].key, "train.", 6) != 0) {
            diag_error(p->diag, NO_LOC, "-D %s: dotted keys start with protocol. or train.", o->ov[i].key);
            ok = false;
        }
    }
    return ok;
}

static void list_names(Diag *d, const DeclTable *t, const char *what, const char *hint)
{
    if (t->n == 0 && d->nerrors) return;   /* lost to an error already reported */
    char buf[512] = "";
    for (int i = 0; i < t->n; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, sizeof buf - l, "%s%s", i ? ", " : "", t->items[i].name);
    }
    diag_error(d, NO_LOC, "%s; choose one with %s (defined: %s)", what, hint, t->n ? buf : "none");
}

/* The declaration named on the command line (--net, --protocol), or an
 * error with the closest name or the list of names. */
static Ast *find_named(Diag *d, const DeclTable *t, const char *name, const char *what, const char *option)
{
    Ast *decl = program_find(t, name);
    if (decl) return decl;
    Suggest sg;
    suggest_init(&sg, name);
    for (int i = 0; i < t->n; i++) suggest_offer(&sg, t->items[i].name);
    const char *best = suggest_result(&sg);
    char msg[300];
    snprintf(msg, sizeof msg, "no %s `%.200s`", what, name);
    if (best) diag_error(d, NO_LOC, "%s; did you mean `%s`?", msg, best);
    else list_names(d, t, msg, option);
    return NULL;
}

/* The net and protocol to compile, from options or from what the file holds. */
static bool choose(Program *p, const CompileOptions *o, Ast **net, Ast **proto)
{
    Diag *d = p->diag;
    *net = *proto = NULL;
    if (o->protocol && !(*proto = find_named(d, &p->protocols, o->protocol, "protocol", "--protocol"))) return false;
    if (o->net && !(*net = find_named(d, &p->nets, o->net, "net", "--net"))) return false;
    if (!*net) {
        /* nets of the main file (not of imports) */
        int count = 0;
        for (int i = 0; i < p->nets.n; i++)
            if (p->nets.items[i].decl->loc.file == p->main_file) { *net = p->nets.items[i].decl; count++; }
        if (count != 1) {
            *net = NULL;
            if (p->nets.n == 1) *net = p->nets.items[0].decl;
            else {
                list_names(d, &p->nets, count ? "the file defines several nets" : "the file defines no net", "--net");
                return false;
            }
        }
    }
    if (!*proto) {
        if (p->protocols.n == 1) *proto = p->protocols.items[0].decl;
        else {
            /* a train block for this net decides */
            Ast *found = NULL;
            for (int i = 0; i < p->trains.n; i++) {
                Ast *t = p->trains.items[i].decl;
                if (strcmp(t->str, (*net)->str) == 0 && program_find(&p->protocols, t->str2)) {
                    if (found) { found = NULL; break; }
                    found = program_find(&p->protocols, t->str2);
                }
            }
            if (!found) {
                list_names(d, &p->protocols, p->protocols.n ? "the file has several protocols" : "the file has no protocol",
                           "--protocol");
                return false;
            }
            *proto = found;
        }
    }
    return true;
}

static Ast *find_train(Program *p, const char *net, const char *proto)
{
    char key[512];
    snprintf(key, sizeof key, "%s on %s", net, proto);
    return program_find(&p->trains, key);
}

Graph *netc_compile(Program *p, CompileOptions *o)
{
    Ast *net, *proto;
    if (!parse_overrides(p, o)) return NULL;
    /* train blocks must name a net and protocol that exist */
    for (int i = 0; i < p->trains.n; i++) {
        Ast *t = p->trains.items[i].decl;
        Suggest sg;
        if (!program_find(&p->nets, t->str)) {
            suggest_init(&sg, t->str);
            for (int k = 0; k < p->nets.n; k++) suggest_offer(&sg, p->nets.items[k].name);
            diag_error(p->diag, t->loc, "train block for unknown net `%s`%s", t->str, suggest_hint(&sg));
        } else if (!program_find(&p->protocols, t->str2)) {
            suggest_init(&sg, t->str2);
            for (int k = 0; k < p->protocols.n; k++) suggest_offer(&sg, p->protocols.items[k].name);
            diag_error(p->diag, t->a ? t->a->loc : t->loc, "train block for unknown protocol `%s`%s", t->str2,
                       suggest_hint(&sg));
        }
    }
    if (!choose(p, o, &net, &proto)) return NULL;
    Protocol *pr = protocol_resolve(p, proto, o->ov, o->nov);
    if (!pr) return NULL;
    Ast *tdecl = find_train(p, net->str, proto->str);
    TrainSpec *ts = NULL;
    if (tdecl) ts = train_resolve(p, tdecl, pr, o->ov, o->nov);
    else {
        for (int i = 0; i < o->nov; i++)
            if (strncmp(o->ov[i].key, "train.", 6) == 0) {
                diag_error(p->diag, NO_LOC, "-D %s: there is no train block for %s on %s", o->ov[i].key, net->str, proto->str);
                break;
            }
        if (o->train) diag_error(p->diag, net->loc, "--train: there is no `train %s on %s` block", net->str, proto->str);
    }
    ExpandShape inf = { .batch = pr->batch, .size = pr->patch };
    Graph *g = NULL;
    int before = p->diag->nraised;
    if (!o->train) g = expand_net(p, net, pr, &inf, o->ov, o->nov);
    if (ts && p->diag->nraised == before) {
        /* The training graph: the net at the training patch plus the losses.
         * Built for checking even when not shown.  (After errors in the net
         * itself it would only repeat them.) */
        ExpandShape tr = { .batch = ts->batch, .size = ts->patch };
        for (int i = 0; i < o->nov; i++) o->ov[i].used = false;
        Graph *tg = expand_net(p, net, pr, &tr, o->ov, o->nov);
        if (p->diag->nraised == before && train_add_losses(p, tg, ts, pr) && o->train && o->autodiff && tg->nlosses &&
            ts->optimizer.name /* NULL after an unknown optimizer (already reported) */) {
            /* the whole training step: forward, backward, optimizer update */
            autodiff(tg, tg->losses[0].tensor);
            append_optimizer(tg, ts->optimizer.name, ts->optimizer.num);
        }
        if (o->train) g = tg;
        else graph_free(tg);
    }
    if (o->train_out && g) *o->train_out = ts;
    else train_free(ts);
    if (o->protocol_out && g) *o->protocol_out = pr;
    else protocol_free(pr);
    return g;
}

Graph *netc_load_compile(Diag *d, const char *who, const char *file, CompileOptions *o, Program **pp)
{
    *pp = program_load(d, file);
    if (!*pp) {
        fprintf(stderr, "%s: cannot read %s: %s\n", who, file, diag_load_strerror(errno));
        return NULL;
    }
    return netc_compile(*pp, o);
}

void netc_overrides_free(Override *ov, int n)
{
    for (int i = 0; i < n; i++) free(ov[i].key);
}
