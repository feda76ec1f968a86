/* test_netdefs.c — the shipped network definitions.
 *
 * Parameter counts must equal those of the equivalent PyTorch models, which
 * tools/torch_param_counts.py builds layer for layer; the numbers it printed
 * are recorded in tests/expected_param_counts.txt (regenerate with
 * `/usr/bin/python3 tools/torch_param_counts.py --expected`).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

typedef struct { char name[32]; long long count; int ntensors; } Expected;

static int load_expected(Expected *e, int max)
{
    FILE *f = fopen("tests/expected_param_counts.txt", "r");
    ck_assert_msg(f != NULL, "tests/expected_param_counts.txt is missing");
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (sscanf(line, "%31s %lld %d", e[n].name, &e[n].count, &e[n].ntensors) == 3) n++;
    }
    fclose(f);
    return n;
}

static int trainable_tensors(const Graph *g)
{
    int n = 0;
    for (int i = 0; i < g->nparams; i++) n += g->params[i].trainable;
    return n;
}

START_TEST(param_counts_match_pytorch)
{
    Expected e[16];
    int n = load_expected(e, 16);
    ck_assert_int_ge(n, 4);
    for (int i = 0; i < n; i++) {
        char path[128];
        snprintf(path, sizeof path, "netdefs/%.31s.net", e[i].name);
        Compiled *c = compile_file(path, NULL);
        ck_clean(c);
        ck_assert_msg(graph_param_count(c->g, true) == e[i].count, "%s: %lld parameters, PyTorch has %lld",
                      e[i].name, (long long)graph_param_count(c->g, true), e[i].count);
        ck_assert_int_eq(trainable_tensors(c->g), e[i].ntensors);
        compiled_free(c);
    }
}
END_TEST

/* Names a weights file will use, and shapes the papers give. */
START_TEST(unet3d_names_and_shapes)
{
    Compiled *c = compile_file("netdefs/unet3d.net", "--protocol t1_brain_3d");
    ck_clean(c);
    ck_assert_int_eq(c->g->spatial_rank, 3);
    const Tensor *out = &c->g->tensors[c->g->outputs[0].tensor];
    ck_assert_int_eq(out->shape.rank, 5);
    ck_assert_int_eq(out->shape.d[1], 2);
    ck_assert_int_eq(out->shape.d[2], 128);
    /* every conv weight is 3x3x3 or 1x1x1 or 2x2x2, never 2D */
    for (int i = 0; i < c->g->nparams; i++) {
        const Tensor *t = &c->g->tensors[c->g->params[i].tensor];
        if (t->shape.rank > 1) ck_assert_int_eq(t->shape.rank, 5);
    }
    compiled_free(c);
    /* the anisotropic protocol compiles too */
    c = compile_file("netdefs/unet3d.net", "--protocol t2_prostate_aniso");
    ck_clean(c);
    compiled_free(c);
}
END_TEST

START_TEST(every_netdef_trains)
{
    const char *nets[] = { "unet2d", "unet3d", "vnet", "voxresnet" };
    for (int i = 0; i < 4; i++) {
        char path[128];
        snprintf(path, sizeof path, "netdefs/%s.net", nets[i]);
        Compiled *c = compile_file(path, "--train");
        ck_clean(c);
        ck_assert_int_eq(c->g->nlosses, 1);
        ck_assert_int_eq(c->g->tensors[c->g->losses[0].tensor].shape.rank, 0);
        compiled_free(c);
    }
}
END_TEST

START_TEST(unet2d_scales_with_parameters)
{
    /* base width and depth are parameters: -D changes the architecture */
    Compiled *c = compile_file("netdefs/unet2d.net", "-D base=16 -D depth=3");
    ck_clean(c);
    ck_assert_int_lt(graph_param_count(c->g, true), 2000000);
    ck_assert_int_ge(find_param(c->g, "enc.2.conv_bn_relu.conv.weight"), 0);
    ck_assert_int_lt(find_param(c->g, "enc.3.conv_bn_relu.conv.weight"), 0);
    compiled_free(c);
    /* 250 is not divisible by 2^4: the error says so */
    c = compile_file("netdefs/unet2d.net", "-D protocol.size=250x250");
    ck_msg(c, "not divisible by 16 (4 poolings) for protocol t1_brain_axial");
    compiled_free(c);
}
END_TEST

Suite *netdefs_suite(void)
{
    Suite *s = suite_create("netdefs");
    TCase *tc = tcase_create("shipped");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, param_counts_match_pytorch);
    tcase_add_test(tc, unet3d_names_and_shapes);
    tcase_add_test(tc, every_netdef_trains);
    tcase_add_test(tc, unet2d_scales_with_parameters);
    suite_add_tcase(s, tc);
    return s;
}
