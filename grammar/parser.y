/* parser.y — grammar of the .net language (reentrant bison, with locations).
 *
 * The grammar builds the AST only; it knows nothing of ops, shapes or
 * protocols.  Three entry points share it, selected by a first pseudo-token
 * the lexer wrapper returns: a whole file, a lone expression (-D name=value),
 * and a field's value list (-D train.key=value).
 *
 * Error recovery works at statement, field and declaration level, so one run
 * reports every syntax error of a file rather than the first one.
 */
%code top {
#define _POSIX_C_SOURCE 200809L
}

%define api.pure full
%locations
%define parse.error detailed
%define parse.lac full
/* No default reductions: `stmt: error` must see its follower (a newline or
 * `}`) before reducing, or recovery would pop the statements parsed so far. */
%define lr.default-reduction accepting
%param {yyscan_t scanner}
%expect 0

%code requires {
#include "ast.h"
#include "util.h"
#include "lex_state.h"
typedef void *yyscan_t;
}

%code provides {
int netc_yylex(YYSTYPE *lval, YYLTYPE *lloc, yyscan_t scanner);
}

%code {
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

LexState *netc_yyget_extra(yyscan_t scanner);
#define LS (netc_yyget_extra(scanner))

static int yylex(YYSTYPE *lval, YYLTYPE *lloc, yyscan_t scanner)
{
    LexState *ls = LS;
    if (ls->start) {
        int t = ls->start;
        ls->start = 0;
        lloc->first_line = lloc->last_line = 1;
        lloc->first_column = lloc->last_column = 1;
        return t;
    }
    return netc_yylex(lval, lloc, scanner);
}

static void yyerror(YYLTYPE *loc, yyscan_t scanner, const char *msg)
{
    LexState *ls = LS;
    if (ls->last == BADCHAR) return;   /* the lexer already reported it */
    if (strcmp(msg, "memory exhausted") == 0)
        msg = "nesting is too deep";
    lex_error(ls, loc, "%s", msg);
    lex_note_unclosed(ls, ls->last);
}

static SrcLoc L(LexState *ls, YYLTYPE a)
{
    SrcLoc s = { ls->file, a.first_line, a.first_column, a.last_line, a.last_column };
    return s;
}

static SrcLoc span(LexState *ls, YYLTYPE a, YYLTYPE b)
{
    SrcLoc s = { ls->file, a.first_line, a.first_column, b.last_line, b.last_column };
    return s;
}

/* Finish a node: compute its depth and refuse absurd nesting once. */
static Ast *fin(LexState *ls, Ast *n)
{
    ast_fix_depth(n);
    if (n->depth > AST_MAX_DEPTH) {
        if (!ls->too_deep) {
            ls->too_deep = true;
            diag_error(ls->diag, n->loc, "expression nested more than %d levels deep", AST_MAX_DEPTH);
        }
        Ast *e = ast_new(ls->arena, A_ERROR, n->loc);
        return e;
    }
    return n;
}

static Ast *mk(LexState *ls, AstKind k, SrcLoc loc) { return ast_new(ls->arena, k, loc); }

static Ast *bin(LexState *ls, int op, Ast *a, Ast *b, SrcLoc loc)
{
    Ast *n = mk(ls, A_BINOP, loc);
    n->op = op; n->a = a; n->b = b;
    return fin(ls, n);
}

static Ast *dims(LexState *ls, char *text, SrcLoc loc)
{
    Ast *n = mk(ls, A_DIMS, loc);
    char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == 'x') p++;
        if (!*p) break;
        char *end;
        Ast *num;
        if (strpbrk(p, ".") && strchr(p, '.') < (strchr(p, 'x') ? strchr(p, 'x') : p + strlen(p))) {
            num = mk(ls, A_FLOAT, loc);
            num->fval = strtod(p, &end);
        } else {
            num = mk(ls, A_INT, loc);
            num->ival = strtoll(p, &end, 10);
            if (num->ival == LLONG_MAX || num->ival == LLONG_MIN)
                diag_error(ls->diag, loc, "size is too large");
        }
        ast_list_push(&n->list, num);
        if (end == p) break;
        p = end;
    }
    free(text);
    return fin(ls, n);
}
}

%union {
    int64_t ival;
    double fval;
    char *str;
    Ast *node;
}

%token START_FILE START_EXPR START_FIELD
%token <str> IDENT "name" STRING "string" DIMS "size"
%token <ival> INT "integer"
%token <fval> FLOAT "number"
%token NL "newline"
%token BADCHAR "invalid character"
%token DOTSTAR ".*"
%token ARROW "->" DOTDOT ".." SHL "<<" SHR ">>" EQ "==" NE "!=" LE "<=" GE ">="
%token IMPORT "import" BLOCK "block" NET "net" PROTOCOL "protocol" TRAIN "train"
%token ON "on" INPUT "input" OUTPUT "output" FOR "for" IN "in" IF "if" ELSE "else"
%token TRUE "true" FALSE "false" AND "and" OR "or" NOT "not"

%destructor { free($$); } <str>

%type <node> decl params param_list param body stmts stmt_seq stmt if_stmt
%type <node> expr postfix primary args arg_list arg expr_list names
%type <node> fbody fields field_seq field values value

%left ARROW
%left OR
%left AND
%precedence NOT
%nonassoc EQ NE '<' LE '>' GE
%nonassoc DOTDOT
%left SHL SHR
%left '+' '-'
%left '*' '/' '%'
%precedence UMINUS

%%

start
    : START_FILE file
    | START_EXPR expr seps_opt          { LS->result = $2; }
    | START_FIELD values seps_opt       { LS->result = $2; }
    ;

file
    : %empty                            { LS->result = mk(LS, D_FILE, L(LS, @$)); }
    | file sep
    | file decl                         { if ($2) ast_list_push(&LS->result->list, $2); }
    ;

seps : sep | seps sep ;
sep  : NL | ';' ;
seps_opt : %empty | seps ;

decl
    : IMPORT STRING                     { $$ = mk(LS, D_IMPORT, L(LS, @2)); $$->str = $2; }
    | BLOCK IDENT params body           {
                                          $$ = mk(LS, D_BLOCK, L(LS, @2)); $$->str = $2;
                                          $$->list = $4->list; $4->list = (AstList){0};
                                          if ($3) { $$->list2 = $3->list; $3->list = (AstList){0}; }
                                        }
    | NET IDENT params body             {
                                          $$ = mk(LS, D_NET, L(LS, @2)); $$->str = $2;
                                          $$->list = $4->list; $4->list = (AstList){0};
                                          if ($3) { $$->list2 = $3->list; $3->list = (AstList){0}; }
                                        }
    | PROTOCOL IDENT fbody              { $$ = $3; $$->kind = D_PROTOCOL; $$->loc = L(LS, @2); $$->str = $2; }
    | TRAIN IDENT ON IDENT fbody        {
                                          $$ = $5; $$->kind = D_TRAIN; $$->loc = L(LS, @2);
                                          $$->str = $2; $$->str2 = $4;
                                          $$->a = mk(LS, A_IDENT, L(LS, @4));   /* where the protocol is named */
                                        }
    | error                             { $$ = NULL; }
    ;

params
    : %empty                            { $$ = NULL; }
    | '(' ')'                           { $$ = NULL; }
    | '(' param_list ')'                { $$ = $2; }
    ;

param_list
    : param                             { $$ = mk(LS, D_FILE, L(LS, @1)); ast_list_push(&$$->list, $1); }
    | param_list ',' param              { $$ = $1; ast_list_push(&$$->list, $3); }
    ;

param
    : IDENT                             { $$ = mk(LS, D_PARAM, L(LS, @1)); $$->str = $1; }
    | IDENT '=' expr                    { $$ = mk(LS, D_PARAM, L(LS, @1)); $$->str = $1; $$->a = $3; }
    ;

body
    : '{' stmts '}'                     { $$ = $2; }
    ;

stmts
    : seps_opt                          { $$ = mk(LS, D_FILE, L(LS, @$)); }
    | seps_opt stmt_seq seps_opt        { $$ = $2; }
    ;

stmt_seq
    : stmt                              { $$ = mk(LS, D_FILE, L(LS, @1)); if ($1) ast_list_push(&$$->list, $1); }
    | stmt_seq seps stmt                { $$ = $1; if ($3) ast_list_push(&$$->list, $3); }
    ;

stmt
    : INPUT names                       { $$ = $2; $$->kind = S_INPUT; $$->loc = L(LS, @1); }
    | OUTPUT IDENT '=' expr             { $$ = mk(LS, S_OUTPUT, L(LS, @2)); $$->str = $2; $$->a = $4; }
    | OUTPUT expr                       { $$ = mk(LS, S_OUTPUT, L(LS, @2)); $$->a = $2; }
    | expr '=' expr                     {
                                          $$ = mk(LS, S_ASSIGN, L(LS, @1)); $$->a = $1; $$->b = $3;
                                          if ($1->kind != A_IDENT && $1->kind != A_INDEX && $1->kind != A_ERROR) {
                                              diag_error(LS->diag, $1->loc, "cannot assign to this %s; the left side of `=` must be a name or an indexed name like skip[i]", ast_kind_name($1->kind));
                                          }
                                        }
    | expr '=' error                    { $$ = mk(LS, S_ASSIGN, L(LS, @1)); $$->a = $1; $$->b = mk(LS, A_ERROR, L(LS, @3)); }
    | FOR IDENT IN expr body            { $$ = mk(LS, S_FOR, L(LS, @1)); $$->str = $2; $$->a = $4; $$->list = $5->list; $5->list = (AstList){0}; $$ = fin(LS, $$); }
    | if_stmt
    | expr                              { $$ = mk(LS, S_EXPR, $1->loc); $$->a = $1; }
    | error                             { $$ = NULL; }
    ;

if_stmt
    : IF expr body                      { $$ = mk(LS, S_IF, L(LS, @1)); $$->a = $2; $$->list = $3->list; $3->list = (AstList){0}; $$ = fin(LS, $$); }
    | IF expr body ELSE body            {
                                          $$ = mk(LS, S_IF, L(LS, @1)); $$->a = $2;
                                          $$->list = $3->list; $3->list = (AstList){0};
                                          $$->list2 = $5->list; $5->list = (AstList){0};
                                          $$ = fin(LS, $$);
                                        }
    | IF expr body ELSE if_stmt         {
                                          $$ = mk(LS, S_IF, L(LS, @1)); $$->a = $2;
                                          $$->list = $3->list; $3->list = (AstList){0};
                                          if ($5) ast_list_push(&$$->list2, $5);
                                          $$ = fin(LS, $$);
                                        }
    ;

names
    : IDENT                             { $$ = mk(LS, D_FILE, L(LS, @1)); Ast *n = mk(LS, A_IDENT, L(LS, @1)); n->str = $1; ast_list_push(&$$->list, n); }
    | names ',' IDENT                   { $$ = $1; Ast *n = mk(LS, A_IDENT, L(LS, @3)); n->str = $3; ast_list_push(&$$->list, n); }
    ;

expr
    : expr ARROW expr                   { $$ = mk(LS, A_CHAIN, L(LS, @2)); $$->a = $1; $$->b = $3; $$ = fin(LS, $$); }
    | expr OR expr                      { $$ = bin(LS, AOP_OR, $1, $3, L(LS, @2)); }
    | expr AND expr                     { $$ = bin(LS, AOP_AND, $1, $3, L(LS, @2)); }
    | NOT expr                          { $$ = mk(LS, A_UNOP, L(LS, @1)); $$->op = AOP_NOT; $$->a = $2; $$ = fin(LS, $$); }
    | expr EQ expr                      { $$ = bin(LS, AOP_EQ, $1, $3, L(LS, @2)); }
    | expr NE expr                      { $$ = bin(LS, AOP_NE, $1, $3, L(LS, @2)); }
    | expr '<' expr                     { $$ = bin(LS, AOP_LT, $1, $3, L(LS, @2)); }
    | expr LE expr                      { $$ = bin(LS, AOP_LE, $1, $3, L(LS, @2)); }
    | expr '>' expr                     { $$ = bin(LS, AOP_GT, $1, $3, L(LS, @2)); }
    | expr GE expr                      { $$ = bin(LS, AOP_GE, $1, $3, L(LS, @2)); }
    | expr DOTDOT expr                  { $$ = mk(LS, A_RANGE, span(LS, @1, @3)); $$->a = $1; $$->b = $3; $$ = fin(LS, $$); }
    | expr SHL expr                     { $$ = bin(LS, AOP_SHL, $1, $3, L(LS, @2)); }
    | expr SHR expr                     { $$ = bin(LS, AOP_SHR, $1, $3, L(LS, @2)); }
    | expr '+' expr                     { $$ = bin(LS, AOP_ADD, $1, $3, L(LS, @2)); }
    | expr '-' expr                     { $$ = bin(LS, AOP_SUB, $1, $3, L(LS, @2)); }
    | expr '*' expr                     { $$ = bin(LS, AOP_MUL, $1, $3, L(LS, @2)); }
    | expr '/' expr                     { $$ = bin(LS, AOP_DIV, $1, $3, L(LS, @2)); }
    | expr '%' expr                     { $$ = bin(LS, AOP_MOD, $1, $3, L(LS, @2)); }
    | '-' expr %prec UMINUS             { $$ = mk(LS, A_UNOP, L(LS, @1)); $$->op = AOP_NEG; $$->a = $2; $$ = fin(LS, $$); }
    | postfix
    ;

postfix
    : primary
    | postfix '(' args ')'              { $$ = mk(LS, A_CALL, $1->loc); $$->a = $1; if ($3) { $$->list = $3->list; $3->list = (AstList){0}; } $$ = fin(LS, $$); }
    | postfix '[' expr ']'              {
                                          if ($1->kind == A_IDENT) {
                                              $$ = mk(LS, A_INDEX, span(LS, @1, @4)); $$->str = $1->str; $1->str = NULL; $$->a = $3; $$ = fin(LS, $$);
                                          } else {
                                              diag_error(LS->diag, L(LS, @2), "only a name can be indexed (as in skip[i])");
                                              $$ = mk(LS, A_ERROR, L(LS, @2));
                                          }
                                        }
    | postfix '.' IDENT                 { $$ = mk(LS, A_MEMBER, span(LS, @1, @3)); $$->a = $1; $$->str = $3; $$ = fin(LS, $$); }
    | postfix '.' INT                   { $$ = mk(LS, A_MEMBER, span(LS, @1, @3)); $$->a = $1; char b[32]; snprintf(b, sizeof b, "%lld", (long long)$3); $$->str = xstrdup(b); $$ = fin(LS, $$); }
    | postfix DOTSTAR                   { $$ = mk(LS, A_MEMBER, span(LS, @1, @2)); $$->a = $1; $$->str = xstrdup("*"); $$ = fin(LS, $$); }
    ;

primary
    : INT                               { $$ = mk(LS, A_INT, L(LS, @1)); $$->ival = $1; }
    | FLOAT                             { $$ = mk(LS, A_FLOAT, L(LS, @1)); $$->fval = $1; }
    | STRING                            { $$ = mk(LS, A_STR, L(LS, @1)); $$->str = $1; }
    | DIMS                              { $$ = dims(LS, $1, L(LS, @1)); }
    | TRUE                              { $$ = mk(LS, A_INT, L(LS, @1)); $$->ival = 1; $$->op = 1; /* op=1 marks a bool */ }
    | FALSE                             { $$ = mk(LS, A_INT, L(LS, @1)); $$->ival = 0; $$->op = 1; }
    | IDENT                             { $$ = mk(LS, A_IDENT, L(LS, @1)); $$->str = $1; }
    | BADCHAR                           { $$ = mk(LS, A_ERROR, L(LS, @1)); }
    | '(' expr ')'                      { $$ = $2; }
    | '(' expr ',' expr_list ')'        {
                                          $$ = $4; $$->kind = A_TUPLE; $$->loc = span(LS, @1, @5);
                                          /* put the first element in front */
                                          ast_list_push(&$$->list, NULL);
                                          memmove($$->list.items + 1, $$->list.items, (size_t)($$->list.n - 1) * sizeof(Ast *));
                                          $$->list.items[0] = $2;
                                          $$ = fin(LS, $$);
                                        }
    | '[' ']'                           { $$ = mk(LS, A_LIST, span(LS, @1, @2)); }
    | '[' expr_list ']'                 { $$ = $2; $$->kind = A_LIST; $$->loc = span(LS, @1, @3); $$ = fin(LS, $$); }
    | '[' expr_list ',' ']'             { $$ = $2; $$->kind = A_LIST; $$->loc = span(LS, @1, @4); $$ = fin(LS, $$); }
    ;

expr_list
    : expr                              { $$ = mk(LS, A_LIST, L(LS, @1)); ast_list_push(&$$->list, $1); }
    | expr_list ',' expr                { $$ = $1; ast_list_push(&$$->list, $3); }
    ;

args
    : %empty                            { $$ = NULL; }
    | arg_list                          { $$ = $1; }
    | arg_list ','                      { $$ = $1; }
    ;

arg_list
    : arg                               { $$ = mk(LS, A_LIST, L(LS, @1)); ast_list_push(&$$->list, $1); }
    | arg_list ',' arg                  { $$ = $1; ast_list_push(&$$->list, $3); }
    ;

arg
    : expr
    | IDENT '=' expr                    { $$ = mk(LS, A_NAMEDARG, L(LS, @1)); $$->str = $1; $$->a = $3; $$ = fin(LS, $$); }
    ;

fbody
    : '{' fields '}'                    { $$ = $2; }
    ;

fields
    : seps_opt                          { $$ = mk(LS, D_FILE, L(LS, @$)); }
    | seps_opt field_seq seps_opt       { $$ = $2; }
    ;

field_seq
    : field                             { $$ = mk(LS, D_FILE, L(LS, @1)); if ($1) ast_list_push(&$$->list, $1); }
    | field_seq seps field              { $$ = $1; if ($3) ast_list_push(&$$->list, $3); }
    ;

field
    : IDENT                             { $$ = mk(LS, D_FIELD, L(LS, @1)); $$->str = $1; }
    | IDENT values                      { $$ = $2; $$->loc = L(LS, @1); $$->str = $1; }
    | error                             { $$ = NULL; }
    ;

values
    : value                             { $$ = mk(LS, D_FIELD, L(LS, @1)); ast_list_push(&$$->list, $1); }
    | values ',' value                  { $$ = $1; ast_list_push(&$$->list, $3); }
    ;

value
    : expr
    | expr IDENT                        { $$ = mk(LS, A_UNIT, $1->loc); $$->a = $1; $$->str = $2; $$ = fin(LS, $$); }
    ;

%%
