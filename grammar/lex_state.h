/* lex_state.h — state shared by the lexer and the parser (yyextra). */
#ifndef NETC_LEX_STATE_H
#define NETC_LEX_STATE_H

#include "ast.h"
#include "diag.h"

typedef struct LexState {
    Diag *diag;
    AstArena *arena;
    int file;          /* Diag file index */
    int line, col;     /* position of the next character */
    int depth;         /* ( [ nesting: newlines inside are not statement ends */
    int last;          /* kind of the last token returned */
    int start;         /* START_FILE / START_EXPR / START_FIELD, returned first */
    bool too_deep;     /* nesting error already reported */
    /* Open brackets, to point at an unclosed one when the parser gives up. */
    SrcLoc braces[64]; int nbraces;   /* `{` not yet closed (deeper ones not kept) */
    SrcLoc parens[64]; int nparens;   /* `(` and `[` not yet closed */
    SrcLoc unclosed_paren; bool has_unclosed_paren;
    Ast *result;
} LexState;

struct YYLTYPE;
void lex_error(LexState *ls, const struct YYLTYPE *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int lex_ends_statement(int token);
SrcLoc lex_loc(const LexState *ls, const struct YYLTYPE *loc);
void lex_note_unclosed(LexState *ls, int lookahead);
/* A keyword or brace: any ( or [ still open was never closed. */
void lex_reset_depth(LexState *ls);

#endif
