/* ast.h — the abstract syntax tree: exactly what the user wrote.
 *
 * One node type for everything (expressions, statements, declarations), with
 * a kind tag and a few generic slots whose meaning per kind is listed below.
 * Every node carries the source range it came from; later stages report
 * errors against it.  Nodes are owned by the Program that parsed them and are
 * freed with it.
 *
 *   kind         str            a / b / c            list / list2
 *   ----------   -------------  -------------------  -----------------------
 *   A_INT        -              -                    -          (ival)
 *   A_FLOAT      -              -                    -          (fval)
 *   A_STR        text           -                    -
 *   A_IDENT      name           -                    -
 *   A_DIMS       -              -                    numbers    (256 x 256)
 *   A_LIST       -              -                    items      ([1, 3, 3])
 *   A_TUPLE      -              -                    items      ((a, b))
 *   A_RANGE      -              lo / hi              -          (a .. b)
 *   A_INDEX      name           index                -          (skip[i])
 *   A_MEMBER     member         base                 -          (enc.2, enc.*)
 *   A_CALL       -              callee               args       (f(x, k = 3))
 *   A_NAMEDARG   name           value                -          (k = 3)
 *   A_BINOP      -              lhs / rhs            -          (op = token)
 *   A_UNOP       -              operand              -          (op = token)
 *   A_CHAIN      -              lhs / rhs            -          (a -> b)
 *   A_UNIT       unit           value                -          (1.5 mm)
 *   S_INPUT      -              -                    names (A_IDENT)
 *   S_OUTPUT     name           value or NULL        -
 *   S_ASSIGN     -              target / value       -          (target: A_IDENT | A_INDEX)
 *   S_EXPR       -              expr                 -
 *   S_FOR        var            range                body
 *   S_IF         -              cond                 then / else
 *   D_IMPORT     path           -                    -
 *   D_PARAM      name           default or NULL      -
 *   D_BLOCK      name           -                    body / params
 *   D_NET        name           -                    body / params
 *   D_PROTOCOL   name           -                    fields
 *   D_TRAIN      net (str2: protocol)  a: protocol's place   fields
 *   D_FIELD      key            -                    values
 *   D_FILE       path           -                    decls
 */
#ifndef NETC_AST_H
#define NETC_AST_H

#include <stdbool.h>
#include <stdint.h>
#include "diag.h"

typedef enum {
    A_INT, A_FLOAT, A_STR, A_IDENT, A_DIMS, A_LIST, A_TUPLE, A_RANGE, A_INDEX,
    A_MEMBER, A_CALL, A_NAMEDARG, A_BINOP, A_UNOP, A_CHAIN, A_UNIT,
    S_INPUT, S_OUTPUT, S_ASSIGN, S_EXPR, S_FOR, S_IF,
    D_IMPORT, D_PARAM, D_BLOCK, D_NET, D_PROTOCOL, D_TRAIN, D_FIELD, D_FILE,
    A_ERROR /* placeholder left by error recovery; evaluates to an error value */
} AstKind;

/* Operators in A_BINOP / A_UNOP (op field). */
typedef enum {
    AOP_ADD = 1, AOP_SUB, AOP_MUL, AOP_DIV, AOP_MOD, AOP_SHL, AOP_SHR,
    AOP_EQ, AOP_NE, AOP_LT, AOP_LE, AOP_GT, AOP_GE, AOP_AND, AOP_OR,
    AOP_NEG, AOP_NOT
} AstOp;

typedef struct Ast Ast;

typedef struct {
    Ast **items;
    int n, cap;
} AstList;

struct Ast {
    AstKind kind;
    SrcLoc loc;
    int depth;          /* 1 + max child depth; the parser refuses absurd nesting */
    int op;             /* AstOp for A_BINOP / A_UNOP */
    int64_t ival;
    double fval;
    char *str;
    char *str2;
    Ast *a, *b;
    AstList list, list2;
    Ast *next_alloc;    /* every node of a Program, for freeing */
};

/* Maximum expression/statement nesting accepted by the parser. Deeper input
 * gets one error instead of a stack overflow further down the pipeline. */
#define AST_MAX_DEPTH 500

typedef struct AstArena {
    Ast *all;
    long count;
} AstArena;

Ast *ast_new(AstArena *ar, AstKind kind, SrcLoc loc);
void ast_list_push(AstList *l, Ast *item);
void ast_arena_free(AstArena *ar);
/* Recompute n->depth from its children (called by constructors). */
void ast_fix_depth(Ast *n);

const char *ast_kind_name(AstKind k);
const char *ast_op_text(int op);
/* Render an expression back to source form (for messages and `netc check`).
 * Returns a malloc'd string. */
char *ast_to_string(const Ast *n);
/* Does identifier `name` occur anywhere in n (as a name, not a named
 * argument's key or a member)? */
bool ast_mentions(const Ast *n, const char *name);

/* Parse one file's text. Returns a D_FILE node (possibly with A_ERROR parts);
 * errors are reported to d. `file` is the Diag file index of the text. */
Ast *parse_file(AstArena *ar, Diag *d, int file);
/* Parse a lone expression (for -D name=value). NULL on error. */
Ast *parse_expr_text(AstArena *ar, Diag *d, int file);
/* Parse a field value list (for -D train.key=value, protocol.key=value):
 * returns a D_FIELD with empty key, NULL on error. */
Ast *parse_field_values_text(AstArena *ar, Diag *d, int file);

#endif
