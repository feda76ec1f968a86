/* test_build.c — compiler/build_gen.c, the tables of `netc build`: where
 * each graph tensor lives (arena, weight blob, input), the weight blob
 * itself, channel-to-input mapping, dataset statistics from metadata, and
 * the generated glue/header text.  (tests/cli_build.sh links and runs the
 * real executables.) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build_gen.h"
#include "ref.h"
#include "support.h"

typedef struct {
    Diag d;
    Program *p;
    Graph *g;
    Protocol *pr;
    FusionPlan *fp;
    MemPlan *mp;
    Override ov[8];
    int nov;
} Net;

static char err[8192];

/* Compile `path` for inference with -D overrides given as "k=v" strings. */
static void net_load(Net *n, const char *path, const char *protocol, const char *const *defs)
{
    memset(n, 0, sizeof *n);
    diag_init(&n->d, stderr);
    n->p = program_load(&n->d, path);
    ck_assert_ptr_nonnull(n->p);
    for (; defs && *defs && n->nov < 8; defs++) {
        const char *eq = strchr(*defs, '=');
        n->ov[n->nov].key = strndup(*defs, (size_t)(eq - *defs));
        n->ov[n->nov].text = eq + 1;
        n->nov++;
    }
    CompileOptions co = { .protocol = protocol, .ov = n->ov, .nov = n->nov, .protocol_out = &n->pr };
    n->g = netc_compile(n->p, &co);
    ck_assert_msg(n->g && n->d.nerrors == 0 && n->pr, "%s does not compile", path);
    n->fp = fuse_graph(n->g, false);
    n->mp = n->fp ? memplan(n->g, n->fp) : NULL;
    ck_assert_ptr_nonnull(n->mp);
}

static void net_free(Net *n)
{
    memplan_free(n->mp);
    fusion_plan_free(n->fp);
    graph_free(n->g);
    protocol_free(n->pr);
    program_free(n->p);
    diag_free(&n->d);
    for (int i = 0; i < n->nov; i++) free(n->ov[i].key);
}

/* g's parameters initialised from `seed`, written with optional metadata
 * and read back; the values stay in *state for comparisons. */
static StFile *weights(const Graph *g, uint64_t seed, const char *const *meta, int nmeta, RefState **state)
{
    RefState *s = ref_new(g);
    ck_assert_ptr_nonnull(s);
    ref_init_params(g, s, seed);
    StTensor *t = calloc((size_t)g->nparams + 1, sizeof *t);
    for (int i = 0; i < g->nparams; i++) {
        const Tensor *x = &g->tensors[g->params[i].tensor];
        t[i].name = g->params[i].name;
        t[i].rank = x->shape.rank;
        for (int k = 0; k < x->shape.rank; k++) t[i].shape[k] = x->shape.d[k];
        t[i].data = s->buf[g->params[i].tensor];
    }
    char path[] = "/tmp/netc_build_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    const char *keys[8], *vals[8];
    for (int i = 0; i < nmeta && i < 8; i++) keys[i] = meta[2 * i], vals[i] = meta[2 * i + 1];
    ck_assert_msg(st_write(path, t, g->nparams, keys, vals, nmeta, err, sizeof err) == 0, "%s", err);
    StFile *f = st_read(path, err, sizeof err);
    ck_assert_msg(f != NULL, "%s", err);
    unlink(path);
    free(t);
    if (state) *state = s;
    else ref_free(s);
    return f;
}

static const char *const unet_small[] = { "base=4", "depth=2", "protocol.size=32x32", NULL };

START_TEST(test_tensor_table)
{
    Net n;
    net_load(&n, "netdefs/unet2d.net", NULL, unet_small);
    RefState *s = NULL;
    StFile *f = weights(n.g, 11, NULL, 0, &s);
    BuildPlan b;
    memset(&b, 0, sizeof b);
    snprintf(b.name, sizeof b.name, "unet2d");
    ck_assert_msg(build_plan(&b, n.g, n.pr, n.mp, f, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(b.rank, 2);
    ck_assert_int_eq(b.batch, 1);
    ck_assert_int_eq(b.channels, 1);
    ck_assert_int_eq(b.classes, 2);
    ck_assert(b.patch[0] == 1 && b.patch[1] == 32 && b.patch[2] == 32 && b.wvox == 1024);
    ck_assert_int_eq(b.arena_bytes % 64, 0);
    ck_assert(b.arena_bytes >= n.mp->arena_bytes);
    int nweights = 0, ninputs = 0;
    for (int i = 0; i < n.g->ntensors; i++) {
        const Tensor *t = &n.g->tensors[i];
        int64_t bytes = shape_numel(&t->shape) * 4;
        switch (b.kind[i]) {
        case BG_ARENA:
            ck_assert_int_eq(b.offset[i] % 64, 0);
            ck_assert_msg(b.offset[i] >= 0 && b.offset[i] + bytes <= b.arena_bytes, "%s outside the arena", t->name);
            break;
        case BG_WEIGHT:
            ck_assert_int_eq(t->kind, TK_PARAM);
            ck_assert_int_eq(b.offset[i] % 64, 0);
            ck_assert(b.offset[i] + bytes <= b.weights_bytes);
            ck_assert_msg(memcmp(b.weights + b.offset[i], s->buf[i], (size_t)bytes) == 0, "%s: other values",
                          t->name);
            nweights++;
            break;
        case BG_INPUT:
            ck_assert_int_eq(n.g->inputs[b.index[i]].tensor, i);
            ninputs++;
            break;
        default:
            ck_assert_msg(t->kind == TK_ACTIVATION, "%s has no place", t->name);
        }
    }
    ck_assert_int_eq(nweights, n.g->nparams);
    ck_assert_int_eq(ninputs, 1);
    ck_assert_int_eq(b.output_tensor, n.g->outputs[0].tensor);
    ck_assert_int_eq(b.kind[b.output_tensor], BG_ARENA);
    ck_assert_int_eq(b.output_numel, 2 * 1024);
    ck_assert_int_eq(b.input_numel[0], 1024);

    /* the glue and the bundle header say the same */
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    b.source = "netdefs/unet2d.net";
    b.version = "test";
    build_write_glue(out, &b, "blob");
    build_write_bundle_header(out, &b);
    build_write_bundle_c(out, &b);
    fclose(out);
    char want[128];
    ck_assert_ptr_nonnull(strstr(text, "const NetcSaInfo netc_sa_info = {"));
    ck_assert_ptr_nonnull(strstr(text, ".entry = unet2d_forward,"));
    snprintf(want, sizeof want, ".arena_bytes = %lld,", (long long)b.arena_bytes);
    ck_assert_ptr_nonnull(strstr(text, want));
    snprintf(want, sizeof want, "#define UNET2D_ARENA_BYTES %lld\n", (long long)build_bundle_arena_bytes(&b));
    ck_assert_ptr_nonnull(strstr(text, want));
    ck_assert(build_bundle_arena_bytes(&b) == b.arena_bytes + 1024 * 4);
    ck_assert_ptr_nonnull(strstr(text, "int unet2d_run(void *arena, const void *weights, const float *input, float *output)"));
    ck_assert_ptr_nonnull(strstr(text, "__attribute__((weak)) void netc_parallel_for("));
    free(text);
    build_plan_free(&b);
    ref_free(s);
    st_free(f);
    net_free(&n);
}
END_TEST

START_TEST(test_channels_by_name)
{
    static const char *const defs[] = { "base=4", "protocol.size=16x16x16", NULL };
    Net n;
    net_load(&n, "netdefs/voxresnet.net", NULL, defs);
    StFile *f = weights(n.g, 3, NULL, 0, NULL);
    BuildPlan b;
    memset(&b, 0, sizeof b);
    ck_assert_msg(build_plan(&b, n.g, n.pr, n.mp, f, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(b.rank, 3);
    ck_assert_int_eq(b.channels, 3);
    ck_assert_int_eq(b.ninputs, 3);
    ck_assert_int_eq(b.classes, 4);
    for (int c = 0; c < 3; c++) {
        ck_assert_str_eq(n.g->inputs[b.chan_input[c]].name, n.pr->channels[c]);
        ck_assert_int_eq(b.chan_offset[c], 0);
        ck_assert_int_eq(b.input_numel[b.chan_input[c]], 16 * 16 * 16);
    }
    build_plan_free(&b);
    st_free(f);
    net_free(&n);
}
END_TEST

START_TEST(test_ct_statistics)
{
    static const char *const defs[] = { "base=4", "depth=2", "protocol.size=32x32", "protocol.normalize=ct", NULL };
    Net n;
    net_load(&n, "netdefs/unet2d.net", NULL, defs);
    BuildPlan b;
    memset(&b, 0, sizeof b);
    StFile *f = weights(n.g, 1, NULL, 0, NULL);
    ck_assert_int_eq(build_plan(&b, n.g, n.pr, n.mp, f, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "netc.stats.0.mean") != NULL, "%s", err);
    build_plan_free(&b);
    st_free(f);
    /* by channel name or index, as netc infer reads them */
    static const char *const meta[] = { "netc.stats.T1.mean", "40.5", "netc.stats.0.sd", "12",
                                        "netc.stats.t1.p005", "-3", "netc.stats.0.p995", "99" };
    memset(&b, 0, sizeof b);
    f = weights(n.g, 1, meta, 4, NULL);
    ck_assert_msg(build_plan(&b, n.g, n.pr, n.mp, f, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert(b.stats[0].valid && b.stats[0].mean == 40.5 && b.stats[0].sd == 12 && b.stats[0].p005 == -3 &&
              b.stats[0].p995 == 99);
    build_plan_free(&b);
    st_free(f);
    net_free(&n);
}
END_TEST

START_TEST(test_wrong_weights)
{
    static const char *const wider[] = { "base=8", "depth=2", "protocol.size=32x32", NULL };
    Net n, m;
    net_load(&n, "netdefs/unet2d.net", NULL, unet_small);
    net_load(&m, "netdefs/unet2d.net", NULL, wider);
    StFile *f = weights(m.g, 1, NULL, 0, NULL);
    BuildPlan b;
    memset(&b, 0, sizeof b);
    ck_assert_int_eq(build_plan(&b, n.g, n.pr, n.mp, f, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "the net needs [4, 1, 3, 3]") != NULL, "%s", err);
    build_plan_free(&b);
    st_free(f);
    net_free(&m);
    net_free(&n);
}
END_TEST

Suite *build_suite(void)
{
    Suite *s = suite_create("build");
    TCase *tc = tcase_create("tables");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_tensor_table);
    tcase_add_test(tc, test_channels_by_name);
    tcase_add_test(tc, test_ct_statistics);
    tcase_add_test(tc, test_wrong_weights);
    suite_add_tcase(s, tc);
    return s;
}
