/* support.c — see support.h. */
#define _POSIX_C_SOURCE 200809L
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void parse_args(Compiled *c, CompileOptions *o, char *args)
{
    char *save = NULL;
    for (char *tok = strtok_r(args, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (strcmp(tok, "--protocol") == 0) o->protocol = strtok_r(NULL, " ", &save);
        else if (strcmp(tok, "--net") == 0) o->net = strtok_r(NULL, " ", &save);
        else if (strcmp(tok, "--train") == 0) o->train = true;
        else if (strcmp(tok, "-D") == 0 && c->nov < 16) {
            char *kv = strtok_r(NULL, " ", &save);
            char *eq = kv ? strchr(kv, '=') : NULL;
            if (!eq) continue;
            c->ov[c->nov].key = strndup(kv, (size_t)(eq - kv));
            c->ov[c->nov].text = eq + 1;
            c->nov++;
        }
    }
    o->ov = c->ov;
    o->nov = c->nov;
}

static Compiled *run(const char *name, const char *text, size_t len, const char *args, bool from_disk)
{
    Compiled *c = calloc(1, sizeof *c);
    c->f = open_memstream(&c->buf, &c->len);
    diag_init(&c->d, c->f);
    c->p = from_disk ? program_load(&c->d, name) : program_from_text(&c->d, name, text, len);
    ck_assert_msg(c->p != NULL, "cannot load %s", name);
    CompileOptions o = { 0 };
    char *argcopy = strdup(args ? args : "");
    parse_args(c, &o, argcopy);
    c->g = netc_compile(c->p, &o);
    free(argcopy);   /* override texts were copied into the program's sources */
    fflush(c->f);
    return c;
}

Compiled *compile_text(const char *name, const char *text, const char *args)
{
    return run(name, text, strlen(text), args, false);
}

Compiled *compile_file(const char *path, const char *args)
{
    return run(path, NULL, 0, args, true);
}

const char *compiled_messages(Compiled *c)
{
    fflush(c->f);
    return c->buf ? c->buf : "";
}

int compiled_errors(const Compiled *c) { return c->d.nerrors; }

void compiled_free(Compiled *c)
{
    if (!c) return;
    graph_free(c->g);
    program_free(c->p);
    diag_free(&c->d);
    fclose(c->f);
    free(c->buf);
    for (int i = 0; i < c->nov; i++) free(c->ov[i].key);
    free(c);
}

const Node *find_node(const Graph *g, const char *name)
{
    for (int i = 0; g && i < g->nnodes; i++)
        if (strcmp(g->nodes[i].name, name) == 0) return &g->nodes[i];
    return NULL;
}

int find_param(const Graph *g, const char *name)
{
    for (int i = 0; g && i < g->nparams; i++)
        if (strcmp(g->params[i].name, name) == 0) return i;
    return -1;
}

char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) { cap *= 2; buf = realloc(buf, cap + 1); }
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}
