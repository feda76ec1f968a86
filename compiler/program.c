/* program.c — load a .net file and its imports; index the declarations.
 *
 * Imports are resolved relative to the directory of the importing file.  A
 * file imported twice (directly or through a cycle) is read once: imports act
 * like include guards, so cycles are harmless.  Declarations of all files
 * share one namespace; a second declaration of a name is an error pointing
 * at both.
 */
#define _XOPEN_SOURCE 700   /* realpath */
#include "sema.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IMPORT_DEPTH 32
#define MAX_FILES 256

static void table_push(DeclTable *t, char *name, Ast *decl)
{
    GROW(t->items, t->n, t->cap);
    t->items[t->n].name = name;
    t->items[t->n].decl = decl;
    t->n++;
}

/* Add `decl` under `name` unless the name is taken (then report both places). */
static void table_add(Program *p, DeclTable *t, const char *what, char *name, Ast *decl)
{
    for (int i = 0; i < t->n; i++) {
        if (strcmp(t->items[i].name, name) == 0) {
            diag_error(p->diag, decl->loc, "%s `%s` is defined twice", what, name);
            diag_note(p->diag, t->items[i].decl->loc, "the first definition is here");
            return;
        }
    }
    table_push(t, name, decl);
}

Ast *program_find(const DeclTable *t, const char *name)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->items[i].name, name) == 0) return t->items[i].decl;
    return NULL;
}

/* Files are identified by their canonical path, so lib/../main.net and
 * main.net are one file and an import cycle through `..` ends at once. */
static void remember(Program *p, const char *path)
{
    char *canon = realpath(path, NULL);
    if (!canon) canon = xstrdup(path);
    GROW(p->loaded, p->nloaded, p->caploaded);
    p->loaded[p->nloaded++] = canon;
}

static bool already_loaded(Program *p, const char *path)
{
    char *canon = realpath(path, NULL);
    if (!canon) return false;   /* missing: loading it reports the error */
    bool hit = false;
    for (int i = 0; i < p->nloaded && !hit; i++) hit = strcmp(p->loaded[i], canon) == 0;
    free(canon);
    return hit;
}

static char *join_dir(const char *importer, const char *rel)
{
    if (rel[0] == '/') return xstrdup(rel);
    const char *slash = strrchr(importer, '/');
    size_t dlen = slash ? (size_t)(slash - importer + 1) : 0;
    char *out = xmalloc(dlen + strlen(rel) + 1);
    memcpy(out, importer, dlen);
    strcpy(out + dlen, rel);
    return out;
}

static void add_file(Program *p, Ast *root)
{
    GROW(p->files, p->nfiles, p->capfiles);
    p->files[p->nfiles++] = root;
}

static void index_file(Program *p, int file, int depth);

static void load_import(Program *p, Ast *imp, int depth)
{
    const char *importer = p->diag->files[imp->loc.file].path;
    if (!imp->str || !imp->str[0]) {
        diag_error(p->diag, imp->loc, "empty import path");
        return;
    }
    if (depth >= MAX_IMPORT_DEPTH) {
        diag_error(p->diag, imp->loc, "imports nested more than %d deep", MAX_IMPORT_DEPTH);
        return;
    }
    char *path = join_dir(importer, imp->str);
    if (already_loaded(p, path)) { free(path); return; }
    if (p->diag->nfiles >= MAX_FILES) {
        diag_error(p->diag, imp->loc, "more than %d files imported", MAX_FILES);
        free(path);
        return;
    }
    int f = diag_load_file(p->diag, path);
    if (f >= 0) remember(p, path);
    if (f < 0) {
        diag_error(p->diag, imp->loc, "cannot import \"%s\": %s (looked for %s)", imp->str, diag_load_strerror(errno), path);
        free(path);
        return;
    }
    free(path);
    index_file(p, f, depth + 1);
}

static void index_file(Program *p, int file, int depth)
{
    Ast *root = parse_file(&p->arena, p->diag, file);
    if (!root) return;
    add_file(p, root);
    for (int i = 0; i < root->list.n; i++) {
        Ast *d = root->list.items[i];
        switch (d->kind) {
        case D_IMPORT: load_import(p, d, depth); break;
        case D_BLOCK:
            if (op_lookup(d->str) != OP_COUNT) {
                diag_error(p->diag, d->loc, "block `%s` has the name of an op; choose another name", d->str);
                break;
            }
            table_add(p, &p->blocks, "block", d->str, d);
            break;
        case D_NET: table_add(p, &p->nets, "net", d->str, d); break;
        case D_PROTOCOL: table_add(p, &p->protocols, "protocol", d->str, d); break;
        case D_TRAIN: {
            /* train blocks are keyed by "NET on PROTOCOL"; the key lives in
             * an arena node so it is freed with the program */
            Ast *key = ast_new(&p->arena, A_STR, d->loc);
            size_t n = strlen(d->str) + strlen(d->str2) + 5;
            key->str = xmalloc(n);
            snprintf(key->str, n, "%s on %s", d->str, d->str2);
            table_add(p, &p->trains, "train block", key->str, d);
            break;
        }
        default: break;
        }
    }
}

/* A program whose main file is Diag file `f` (named `name`): parse it and,
 * recursively, its imports. */
static Program *program_start(Diag *d, int f, const char *name)
{
    Program *p = xcalloc(1, sizeof *p);
    p->diag = d;
    p->main_file = f;
    remember(p, name);
    index_file(p, f, 0);
    p->load_errors = d->nerrors;
    return p;
}

Program *program_load(Diag *d, const char *path)
{
    int f = diag_load_file(d, path);
    return f < 0 ? NULL : program_start(d, f, path);
}

Program *program_from_text(Diag *d, const char *name, const char *text, size_t len)
{
    return program_start(d, diag_add_source(d, name, text, len), name);
}

void program_free(Program *p)
{
    if (!p) return;
    ast_arena_free(&p->arena);
    for (int i = 0; i < p->nloaded; i++) free(p->loaded[i]);
    free(p->loaded);
    free(p->files);
    free(p->blocks.items);
    free(p->nets.items);
    free(p->protocols.items);
    free(p->trains.items);
    free(p);
}
