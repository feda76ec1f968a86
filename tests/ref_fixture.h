/* ref_fixture.h — small builders shared by the reference-executor tests
 * (test_ref.c, test_ref_grad.c). Everything is static inline. */
#ifndef NETC_REF_FIXTURE_H
#define NETC_REF_FIXTURE_H

#include "graph.h"

static inline Shape shp(int rank, const int64_t *d)
{
    Shape s = { rank, { 0 } };
    for (int i = 0; i < rank; i++)
        s.d[i] = d[i];
    return s;
}
#define SH(...) shp((int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), (int64_t[]){ __VA_ARGS__ })
static const Shape SCALAR = { 0, { 0 } };

static inline OpAttrs attrs(OpKind k, int sr)
{
    OpAttrs at;
    op_default_attrs(k, sr, &at);
    return at;
}

static inline void explicit_pad(OpAttrs *at, int sr, const int64_t *lo, const int64_t *hi)
{
    at->pad.mode = PAD_EXPLICIT;
    for (int i = 0; i < sr; i++) {
        at->pad.lo[i] = lo[i];
        at->pad.hi[i] = hi[i];
    }
}

#endif
