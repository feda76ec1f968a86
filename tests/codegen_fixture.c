/* codegen_fixture.c — see codegen_fixture.h. */
#define _POSIX_C_SOURCE 200809L
#include "codegen_fixture.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t codegen_test_seed(void)
{
    const char *s = getenv("NETC_TEST_SEED");
    if (s && *s) return strtoull(s, NULL, 10);
    return (uint64_t)time(NULL);
}

uint64_t codegen_fixed_seed(void)
{
    const char *s = getenv("NETC_TEST_SEED");
    return s && *s ? strtoull(s, NULL, 10) : 20261127u;
}

void codegen_fill(const Graph *g, RefState *s, uint64_t seed)
{
    int64_t classes = 2;
    if (g->noutputs > 0 && g->tensors[g->outputs[0].tensor].shape.rank > 1)
        classes = g->tensors[g->outputs[0].tensor].shape.d[1];
    for (int t = 0; t < g->ntensors; t++) {
        const Tensor *te = &g->tensors[t];
        if (te->kind == TK_INPUT) ref_fill_uniform(s, t, seed + 17 * (uint64_t)t, -1, 1);
        if (te->kind == TK_WEIGHTMAP) ref_fill_uniform(s, t, seed + 19 * (uint64_t)t, 0, 2);
        if (te->kind == TK_LABEL) {
            RefRng r = { seed * 7 + (uint64_t)t };
            for (int64_t i = 0; i < s->numel[t]; i++) ref_i32(s, t)[i] = (int32_t)(ref_rng_next(&r) % (uint64_t)classes);
        }
        if (te->kind == TK_HYPER) s->buf[t][0] = strcmp(te->name, "train.lr") == 0 ? 0.01f : 1.0f;
        if (te->kind == TK_PARAM && te->dtype == DT_F32) {
            /* running variances must stay positive; running means get noise */
            if (strstr(te->name, "running_var")) ref_fill_uniform(s, t, seed + 31 * (uint64_t)t, 0.5, 1.5);
            else if (strstr(te->name, "running_mean")) ref_fill_uniform(s, t, seed + 31 * (uint64_t)t, -0.2, 0.2);
        }
    }
}
