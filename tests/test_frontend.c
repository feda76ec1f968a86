/* test_frontend.c — lexer, parser and expression evaluation. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* ---- parsing alone ---------------------------------------------------- */

typedef struct { Diag d; char *buf; size_t len; FILE *f; AstArena ar; Ast *root; } Parsed;

static Parsed *parse(const char *text, size_t len)
{
    Parsed *p = calloc(1, sizeof *p);
    p->f = open_memstream(&p->buf, &p->len);
    diag_init(&p->d, p->f);
    int file = diag_add_source(&p->d, "t.net", text, len);
    p->root = parse_file(&p->ar, &p->d, file);
    fflush(p->f);
    return p;
}

static void parsed_free(Parsed *p)
{
    ast_arena_free(&p->ar);
    diag_free(&p->d);
    fclose(p->f);
    free(p->buf);
    free(p);
}

START_TEST(parse_declarations)
{
    const char *src =
        "import \"common.net\"\n"
        "block b(c, k = 3) { conv(c, k) -> relu }\n"
        "net n(classes = 2) {\n  input image\n  output logits = conv(classes, 1)(image)\n}\n"
        "protocol p {\n  size 16 x 16\n  classes 2\n}\n"
        "train n on p {\n  loss ce(logits, labels)\n}\n";
    Parsed *p = parse(src, strlen(src));
    ck_assert_int_eq(p->d.nerrors, 0);
    ck_assert_int_eq(p->root->list.n, 5);
    ck_assert_int_eq(p->root->list.items[0]->kind, D_IMPORT);
    ck_assert_str_eq(p->root->list.items[0]->str, "common.net");
    Ast *b = p->root->list.items[1];
    ck_assert_int_eq(b->kind, D_BLOCK);
    ck_assert_int_eq(b->list2.n, 2);                  /* two parameters */
    ck_assert_ptr_nonnull(b->list2.items[1]->a);      /* k has a default */
    ck_assert_int_eq(b->list.n, 1);
    ck_assert_int_eq(b->list.items[0]->a->kind, A_CHAIN);
    Ast *t = p->root->list.items[4];
    ck_assert_int_eq(t->kind, D_TRAIN);
    ck_assert_str_eq(t->str, "n");
    ck_assert_str_eq(t->str2, "p");
    parsed_free(p);
}
END_TEST

START_TEST(parse_precedence_and_locations)
{
    const char *src = "net n {\n  x = 1 + 2 * 3 << 1\n  y = a -> b -> c\n}\n";
    Parsed *p = parse(src, strlen(src));
    ck_assert_int_eq(p->d.nerrors, 0);
    Ast *net = p->root->list.items[0];
    Ast *x = net->list.items[0]->b;      /* (1 + (2 * 3)) << 1 */
    ck_assert_int_eq(x->kind, A_BINOP);
    ck_assert_int_eq(x->op, AOP_SHL);
    ck_assert_int_eq(x->a->op, AOP_ADD);
    ck_assert_int_eq(x->a->b->op, AOP_MUL);
    ck_assert_int_eq(x->loc.line, 2);
    ck_assert_int_eq(x->loc.col, 17);    /* the `<<` */
    Ast *y = net->list.items[1]->b;      /* (a -> b) -> c */
    ck_assert_int_eq(y->kind, A_CHAIN);
    ck_assert_int_eq(y->a->kind, A_CHAIN);
    ck_assert_str_eq(y->b->str, "c");
    parsed_free(p);
}
END_TEST

START_TEST(parse_newlines)
{
    /* newlines inside () and after -> or , do not end the statement */
    const char *src = "net n {\n  x = conv(16,\n           3)(image) ->\n      relu\n  y = x\n}\n";
    Parsed *p = parse(src, strlen(src));
    ck_assert_int_eq(p->d.nerrors, 0);
    ck_assert_int_eq(p->root->list.items[0]->list.n, 2);
    parsed_free(p);
}
END_TEST

START_TEST(parse_dims_and_ranges)
{
    const char *src = "protocol p {\n  size 128 x 96 x 64\n  spacing 1.0 x 0.5x0.5 mm\n  classes a, b\n}\n"
                      "train n on p {\n  augment rotate(-15 .. 15), scale(0.85 .. 1.25)\n  freeze enc.0.*, dec.*\n}\n";
    Parsed *p = parse(src, strlen(src));
    ck_assert_int_eq(p->d.nerrors, 0);
    Ast *size = p->root->list.items[0]->list.items[0];
    ck_assert_str_eq(size->str, "size");
    ck_assert_int_eq(size->list.items[0]->kind, A_DIMS);
    ck_assert_int_eq(size->list.items[0]->list.n, 3);
    ck_assert_int_eq(size->list.items[0]->list.items[2]->ival, 64);
    Ast *sp = p->root->list.items[0]->list.items[1]->list.items[0];
    ck_assert_int_eq(sp->kind, A_UNIT);
    ck_assert_int_eq(sp->a->list.n, 3);
    ck_assert_double_eq_tol(sp->a->list.items[1]->fval, 0.5, 1e-12);
    Ast *aug = p->root->list.items[1]->list.items[0];
    ck_assert_int_eq(aug->list.n, 2);
    ck_assert_int_eq(aug->list.items[0]->list.items[0]->kind, A_RANGE);
    Ast *fr = p->root->list.items[1]->list.items[1];
    char *s = ast_to_string(fr->list.items[0]);
    ck_assert_str_eq(s, "enc.0.*");
    free(s);
    parsed_free(p);
}
END_TEST

START_TEST(parse_recovers_and_reports_all)
{
    const char *src = "net n {\n  x = (1 +\n  y = 3 3\n  input image\n  z = ]\n}\nnet m { } }\n";
    Parsed *p = parse(src, strlen(src));
    ck_assert_int_ge(p->d.nerrors, 3);
    ck_assert_ptr_nonnull(strstr(p->buf, "t.net:3:"));
    ck_assert_ptr_nonnull(strstr(p->buf, "t.net:5:"));
    ck_assert_ptr_nonnull(strstr(p->buf, "t.net:7:"));
    parsed_free(p);
}
END_TEST

START_TEST(lexer_robustness)
{
    /* CRLF, tabs, BOM, NUL bytes and stray bytes: located errors, no crash */
    const char crlf[] = "\xEF\xBB\xBFnet n {\r\n\tx = 1\r\n\ty = $\r\n}\r\n";
    Parsed *p = parse(crlf, sizeof crlf - 1);
    ck_assert_int_eq(p->d.nerrors, 1);
    ck_assert_ptr_nonnull(strstr(p->buf, "t.net:3:6: error: unexpected character `$`"));
    parsed_free(p);

    const char nul[] = "net n {\n  x = 1\0\n}\n";
    p = parse(nul, sizeof nul - 1);
    ck_assert_int_eq(p->d.nerrors, 1);
    ck_assert_ptr_nonnull(strstr(p->buf, "t.net:2:8: error: unexpected control character 0x00"));
    parsed_free(p);

    const char utf[] = "net n { x = 1 \xc3\xa9 }\n";
    p = parse(utf, sizeof utf - 1);
    ck_assert_int_ge(p->d.nerrors, 1);
    ck_assert_ptr_nonnull(strstr(p->buf, "non-ASCII"));
    parsed_free(p);

    const char big[] = "net n { x = 99999999999999999999999 }\n";
    p = parse(big, sizeof big - 1);
    ck_assert_ptr_nonnull(strstr(p->buf, "too large"));
    parsed_free(p);
}
END_TEST

START_TEST(deep_nesting_is_an_error_not_a_crash)
{
    size_t n = 200000;
    char *src = malloc(2 * n + 64);
    strcpy(src, "net n { x = ");
    size_t k = strlen(src);
    for (size_t i = 0; i < n; i++) src[k++] = '(';
    src[k++] = '1';
    for (size_t i = 0; i < n; i++) src[k++] = ')';
    strcpy(src + k, " }\n");
    Parsed *p = parse(src, strlen(src));
    ck_assert_int_ge(p->d.nerrors, 1);
    ck_assert_ptr_nonnull(strstr(p->buf, "too deep"));
    parsed_free(p);

    /* a long flat sum is a deep left-leaning tree */
    k = 0;
    strcpy(src, "net n { x = 1");
    k = strlen(src);
    for (size_t i = 0; i < 50000; i++) { src[k++] = '+'; src[k++] = '1'; }
    strcpy(src + k, " }\n");
    p = parse(src, strlen(src));
    ck_assert_ptr_nonnull(strstr(p->buf, "nested more than"));
    parsed_free(p);
    free(src);
}
END_TEST

/* ---- expressions ------------------------------------------------------ */

/* Evaluate `expr` as the channel count of a conv and return the param count
 * of that conv (1x1 kernel, no bias, 1 input channel = the value itself). */
static Compiled *with_expr(const char *params, const char *expr)
{
    char src[2048];
    snprintf(src, sizeof src,
             "net n(%s) {\n  input image\n  v = %s\n  output logits = conv(2, 1)(image)\n}\n"
             "protocol p {\n  size 8 x 8\n  classes 2\n}\n", params, expr);
    return compile_text("e.net", src, NULL);
}

static int64_t channels_of(const char *params, const char *expr)
{
    char src[2048];
    snprintf(src, sizeof src,
             "net n(%s) {\n  input image\n  h = conv(%s, 1, bias = false)(image)\n  output logits = conv(2, 1)(h)\n}\n"
             "protocol p {\n  size 8 x 8\n  classes 2\n}\n", params, expr);
    Compiled *c = compile_text("e.net", src, NULL);
    ck_clean(c);
    const Node *h = find_node(c->g, "h");
    ck_assert_ptr_nonnull(h);
    int64_t ch = c->g->tensors[h->out].shape.d[1];
    compiled_free(c);
    return ch;
}

START_TEST(eval_arithmetic)
{
    ck_assert_int_eq(channels_of("base = 32", "base << 2"), 128);
    ck_assert_int_eq(channels_of("", "7 / 2"), 3);
    ck_assert_int_eq(channels_of("", "-7 % 3 + 3"), 2);
    ck_assert_int_eq(channels_of("", "min(64, 320) + max(1, 2, 3)"), 67);
    ck_assert_int_eq(channels_of("d = 4", "(1 + 2) * (d - 1)"), 9);
    ck_assert_int_eq(channels_of("ks = [16, 32, 64]", "ks[1]"), 32);
}
END_TEST

START_TEST(eval_errors)
{
    struct { const char *expr, *msg; } cases[] = {
        { "1 / 0", "division by zero" },
        { "1 << 63", "shift by 63 is out of range" },
        { "4611686018427387904 * 2", "integer overflow" },
        { "1 + true", "needs numbers" },
        { "3(4)", "cannot be called" },
        { "not 3", "`not` needs true/false" },
        { "bas + 1", "unknown name `bas`" },
        { "1.5 % 2", "needs integers" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Compiled *c = with_expr("base = 1", cases[i].expr);
        ck_assert_int_eq(compiled_errors(c), 1);
        ck_msg(c, cases[i].msg);
        ck_msg(c, "e.net:3:");
        compiled_free(c);
    }
}
END_TEST

START_TEST(did_you_mean)
{
    Compiled *c = with_expr("base = 1", "batchnrom");
    ck_msg(c, "unknown name `batchnrom`; did you mean `batchnorm`?");
    compiled_free(c);
    c = with_expr("base = 1", "bsae");
    ck_msg(c, "did you mean `base`?");
    compiled_free(c);
    c = with_expr("base = 1", "conv(4, 3, kernal = 3)");
    ck_msg(c, "conv has no argument `kernal`; did you mean `kernel`?");
    compiled_free(c);
}
END_TEST

Suite *frontend_suite(void)
{
    Suite *s = suite_create("frontend");
    TCase *tc = tcase_create("parse");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, parse_declarations);
    tcase_add_test(tc, parse_precedence_and_locations);
    tcase_add_test(tc, parse_newlines);
    tcase_add_test(tc, parse_dims_and_ranges);
    tcase_add_test(tc, parse_recovers_and_reports_all);
    tcase_add_test(tc, lexer_robustness);
    tcase_add_test(tc, deep_nesting_is_an_error_not_a_crash);
    suite_add_tcase(s, tc);
    tc = tcase_create("eval");
    tcase_add_test(tc, eval_arithmetic);
    tcase_add_test(tc, eval_errors);
    tcase_add_test(tc, did_you_mean);
    suite_add_tcase(s, tc);
    return s;
}
