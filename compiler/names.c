/* names.c — stable hierarchical names for nodes and parameters.
 *
 * Naming rule (also in docs/language.md):
 *  - `name = expr` and `name[i] = expr` open a scope `name` / `name.i` for
 *    everything the right-hand side creates;
 *  - a block application opens a scope named after the block;
 *  - an op node is named after its op;
 *  - within one scope a repeated name gets _1, _2, ... (conv, conv_1, conv_2);
 *  - a scope with exactly one child collapses into it, so
 *    `output logits = conv(classes, 1)(x)` names its parameters
 *    `logits.weight` and `logits.bias` rather than `logits.conv.weight`.
 *  Parameters are the node name plus `.weight`, `.bias`, ...
 *
 * Scopes are created lazily — only when something is named inside them — so
 * `x = image` reserves nothing.  Uniqueness within a scope is checked with a
 * hash set keyed by (scope, segment), which keeps long unrolled loops linear.
 */
#define _POSIX_C_SOURCE 200809L
#include "sema_internal.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

typedef struct { const NameNode *scope; const char *seg; int next; } HKey;  /* next: suffix to try for a repeat */
static HKey *htab;
static size_t hcap, hcount;

static uint64_t hash(const NameNode *scope, const char *seg)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)scope;
    for (const char *p = seg; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

static HKey *h_find(const NameNode *scope, const char *seg)
{
    if (!hcap) return NULL;
    for (size_t i = hash(scope, seg) & (hcap - 1);; i = (i + 1) & (hcap - 1)) {
        if (!htab[i].seg) return NULL;
        if (htab[i].scope == scope && strcmp(htab[i].seg, seg) == 0) return &htab[i];
    }
}

static void h_put(const NameNode *scope, const char *seg)
{
    if ((hcount + 1) * 2 > hcap) {
        size_t ncap = hcap ? hcap * 2 : 1024;
        HKey *nt = xcalloc(ncap, sizeof *nt);
        for (size_t i = 0; i < hcap; i++) {
            if (!htab[i].seg) continue;
            size_t j = hash(htab[i].scope, htab[i].seg) & (ncap - 1);
            while (nt[j].seg) j = (j + 1) & (ncap - 1);
            nt[j] = htab[i];
        }
        free(htab);
        htab = nt;
        hcap = ncap;
    }
    size_t i = hash(scope, seg) & (hcap - 1);
    while (htab[i].seg) i = (i + 1) & (hcap - 1);
    htab[i].scope = scope;
    htab[i].seg = seg;
    htab[i].next = 1;
    hcount++;
}

void names_reset(void)
{
    free(htab);
    htab = NULL;
    hcap = hcount = 0;
}

static void attach(Sema *S, NameNode *n);

/* Give `n` a segment unique in its parent and link it in (materializing
 * pending parents first). */
static void attach(Sema *S, NameNode *n)
{
    NameNode *p = n->parent;
    const char *base = n->seg ? n->seg : "?";
    const char *seg = base;
    HKey *first = h_find(p, base);
    if (first) {
        /* the base's entry remembers the next suffix to try, so a loop that
         * rebinds `x` a million times stays linear */
        char buf[400];
        int k = first->next;
        for (;; k++) {
            snprintf(buf, sizeof buf, "%s_%d", base, k);
            if (!h_find(p, buf)) break;
        }
        first->next = k + 1;
        seg = sema_strdup(S, buf);
    }
    n->seg = seg;
    h_put(p, seg);
    GROW(p->kids, p->nkids, p->capkids);
    p->kids[p->nkids++] = n;
}

/* Scopes keep their wanted name in `want` until attached. */
typedef struct { NameNode node; const char *want; bool attached; } Scope;

void names_init(Sema *S)
{
    names_reset();
    Scope *root = sema_alloc(S, sizeof *root);
    root->node.node = -1;
    root->node.seg = "";
    root->attached = true;
    S->root = S->scope = &root->node;
}

void names_push(Sema *S, const char *want)
{
    Scope *sc = sema_alloc(S, sizeof *sc);
    sc->node.node = -1;
    sc->node.parent = S->scope;
    sc->want = sema_strdup(S, want);
    sc->attached = false;
    S->scope = &sc->node;
}

void names_pop(Sema *S)
{
    if (S->scope->parent) S->scope = S->scope->parent;
}

static void materialize(Sema *S, NameNode *n)
{
    Scope *sc = (Scope *)n;
    if (!n->parent || sc->attached) return;
    materialize(S, n->parent);
    n->seg = sc->want;
    attach(S, n);
    sc->attached = true;
}

/* Name graph node `node` with base name `base` in the current scope. */
void names_node(Sema *S, int node, const char *base)
{
    materialize(S, S->scope);
    NameNode *n = sema_alloc(S, sizeof(Scope));
    n->node = node;
    n->parent = S->scope;
    n->seg = sema_strdup(S, base);
    attach(S, n);
}

static void assign(Sema *S, NameNode *n, const char *path)
{
    if (n->node >= 0) {
        Node *nd = &S->g->nodes[n->node];
        free(nd->name);
        nd->name = xstrdup(path);
        return;
    }
    if (n->nkids == 1 && n != S->root) { assign(S, n->kids[0], path); return; }
    for (int i = 0; i < n->nkids; i++) {
        const char *seg = n->kids[i]->seg;
        if (n == S->root) { assign(S, n->kids[i], seg); continue; }
        size_t len = strlen(path) + strlen(seg) + 2;
        char *p = xmalloc(len);
        snprintf(p, len, "%s.%s", path, seg);
        assign(S, n->kids[i], p);
        free(p);
    }
}

/* Turn the naming tree into node, tensor and parameter names. */
void names_finalize(Sema *S, int first)
{
    assign(S, S->root, "");
    Graph *g = S->g;
    for (int i = first; i < g->nnodes; i++) {
        Node *nd = &g->nodes[i];
        if (!nd->name) nd->name = xstrdup("?");
        free(g->tensors[nd->out].name);
        g->tensors[nd->out].name = xstrdup(nd->name);
        for (int k = 0; k < nd->nparams; k++) {
            Param *pm = &g->params[nd->params[k]];
            const char *suffix = strrchr(pm->name, '.');
            suffix = suffix ? suffix + 1 : pm->name;
            size_t len = strlen(nd->name) + strlen(suffix) + 2;
            char *full = xmalloc(len);
            snprintf(full, len, "%s.%s", nd->name, suffix);
            free(pm->name);
            pm->name = full;
            free(g->tensors[pm->tensor].name);
            g->tensors[pm->tensor].name = xstrdup(full);
        }
    }
    names_reset();
}
