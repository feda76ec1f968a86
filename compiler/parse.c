/* parse.c — drives the flex scanner and bison parser over one text. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ast.h"
#include "util.h"
#include "lex_state.h"
#include "parser.h"

typedef void *yyscan_t;
int netc_yylex_init_extra(LexState *extra, yyscan_t *scanner);
int netc_yylex_destroy(yyscan_t scanner);
void *netc_yy_scan_bytes(const char *bytes, int len, yyscan_t scanner);
int yyparse(yyscan_t scanner);

void lex_error(LexState *ls, const YYLTYPE *loc, const char *fmt, ...)
{
    SrcLoc s = { ls->file, loc->first_line, loc->first_column, loc->last_line, loc->last_column };
    va_list ap;
    va_start(ap, fmt);
    diag_verror(ls->diag, s, fmt, ap);
    va_end(ap);
}

SrcLoc lex_loc(const LexState *ls, const YYLTYPE *loc)
{
    SrcLoc s = { ls->file, loc->first_line, loc->first_column, loc->last_line, loc->last_column };
    return s;
}

void lex_reset_depth(LexState *ls)
{
    if (ls->depth > 0 && !ls->has_unclosed_paren) {
        ls->unclosed_paren = ls->parens[0];
        ls->has_unclosed_paren = true;
    }
    ls->depth = 0;
}

/* After a syntax error: point at the bracket that was left open, if any. */
void lex_note_unclosed(LexState *ls, int lookahead)
{
    if (ls->has_unclosed_paren) {
        diag_note(ls->diag, ls->unclosed_paren, "this bracket is never closed");
        ls->has_unclosed_paren = false;
        return;
    }
    bool top_level = lookahead == NET || lookahead == BLOCK || lookahead == PROTOCOL || lookahead == TRAIN ||
                     lookahead == IMPORT || lookahead == YYEOF;
    if (top_level && ls->nbraces > 0 && ls->nbraces <= 64) {
        diag_note(ls->diag, ls->braces[ls->nbraces - 1], "this `{` is never closed");
        ls->nbraces = 0;
    }
}

/* A newline ends a statement only after a token that can end one. */
int lex_ends_statement(int token)
{
    switch (token) {
    case IDENT: case INT: case FLOAT: case STRING: case DIMS:
    case TRUE: case FALSE: case ')': case ']': case '}': case DOTSTAR: case BADCHAR:
        return 1;
    default:
        return 0;
    }
}

static Ast *run(AstArena *ar, Diag *d, int file, int start)
{
    if (file < 0 || file >= d->nfiles) return NULL;
    SourceFile *f = &d->files[file];
    const char *text = f->text;
    size_t len = f->len;
    /* A UTF-8 byte-order mark is not part of the program. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) { text += 3; len -= 3; }
    if (len > (size_t)1 << 30) {
        SrcLoc loc = { file, 1, 1, 1, 1 };
        diag_error(d, loc, "file is larger than 1 GiB");
        return NULL;
    }
    LexState ls = { .diag = d, .arena = ar, .file = file, .line = 1, .col = 1,
                    .depth = 0, .last = NL, .start = start };
    yyscan_t scanner;
    if (netc_yylex_init_extra(&ls, &scanner) != 0) {
        die_out_of_memory();
    }
    netc_yy_scan_bytes(text, (int)len, scanner);
    int before = d->nerrors;
    int rc = yyparse(scanner);
    netc_yylex_destroy(scanner);
    if (rc != 0 && d->nerrors == before) {
        SrcLoc loc = { file, ls.line, ls.col, ls.line, ls.col };
        diag_error(d, loc, "cannot parse this file");
    }
    if (start == START_FILE && !ls.result)
        ls.result = ast_new(ar, D_FILE, (SrcLoc){ file, 1, 1, 1, 1 });
    if (ls.result && ls.result->kind == D_FILE) {
        free(ls.result->str);
        ls.result->str = xstrdup(f->path);
    }
    if (start != START_FILE && (rc != 0 || d->nerrors != before)) return NULL;
    return ls.result;
}

Ast *parse_file(AstArena *ar, Diag *d, int file) { return run(ar, d, file, START_FILE); }
Ast *parse_expr_text(AstArena *ar, Diag *d, int file) { return run(ar, d, file, START_EXPR); }
Ast *parse_field_values_text(AstArena *ar, Diag *d, int file) { return run(ar, d, file, START_FIELD); }
