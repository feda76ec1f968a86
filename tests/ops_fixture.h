/* ops_fixture.h — the fixture shared by the op-table tests (test_ops.c,
 * test_ops_more.c): a Diag writing into memory, and helpers that build shapes
 * and attributes and run one shape rule.  Included by exactly those files;
 * everything here is static. */
#ifndef NETC_OPS_FIXTURE_H
#define NETC_OPS_FIXTURE_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"


/* ---- fixture: a Diag writing into memory ----------------------------------- */

static Diag diag;
static char *diag_buf;
static size_t diag_len;
static FILE *diag_file;

static inline void setup(void)
{
    diag_file = open_memstream(&diag_buf, &diag_len);
    diag_init(&diag, diag_file);
}

static inline void teardown(void)
{
    diag_free(&diag);
    fclose(diag_file);
    free(diag_buf);
    diag_buf = NULL;
}

static inline const char *messages(void)
{
    fflush(diag_file);
    return diag_buf ? diag_buf : "";
}

#define ck_no_msg(sub) ck_assert_msg(strstr(messages(), (sub)) == NULL, "unexpected \"%s\" in: %s", (sub), messages())
#define ck_msg(sub) ck_assert_msg(strstr(messages(), (sub)) != NULL, "expected \"%s\" in: %s", (sub), messages())

/* ---- helpers --------------------------------------------------------------- */

static inline Shape shp(size_t rank, const int64_t *d)
{
    Shape s;
    memset(&s, 0, sizeof s);
    s.rank = (int)rank;
    for (size_t i = 0; i < rank; i++)
        s.d[i] = d[i];
    return s;
}
/* S(1, 64, 32, 32): a shape from its dimensions */
#define S(...) shp(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t), (int64_t[]){ __VA_ARGS__ })
#define D(x) ((int64_t)(x))

static inline ShapeCtx ctx(int sr, int nin)
{
    ShapeCtx cx;
    memset(&cx, 0, sizeof cx);
    cx.diag = &diag;
    cx.loc = (SrcLoc){ -1, 0, 0, 0, 0 };
    cx.spatial_rank = sr;
    cx.nin = nin;
    return cx;
}

static inline OpAttrs defaults(OpKind k, int sr)
{
    OpAttrs at;
    op_default_attrs(k, sr, &at);
    return at;
}

static inline bool infer(OpKind k, int sr, OpAttrs *at, const Shape *in, int nin, Shape *out)
{
    ShapeCtx cx = ctx(sr, nin);
    memset(out, 0, sizeof *out);
    return op_table[k].shape(&cx, at, in, nin, out);
}

static inline void ck_shape(const Shape *got, const Shape *want)
{
    char a[128], b[128];
    ck_assert_msg(shape_equal(got, want), "shape %s, expected %s (rank %d vs %d)",
                  shape_format(a, sizeof a, got, false), shape_format(b, sizeof b, want, false),
                  got->rank, want->rank);
}

static inline void set_axes(int64_t *v, int64_t a, int64_t b, int64_t c)
{
    v[0] = a, v[1] = b, v[2] = c;
}

static inline OpAttrs conv_attrs(int sr, int64_t ch, int64_t k)
{
    OpAttrs at = defaults(OP_CONV, sr);
    at.channels = ch;
    for (int i = 0; i < sr; i++)
        at.kernel[i] = k;
    return at;
}

static inline OpAttrs kernel_attrs(OpKind op, int sr, int64_t k)
{
    OpAttrs at = defaults(op, sr);
    for (int i = 0; i < sr; i++)
        at.kernel[i] = k;
    return at;
}


#endif
