/* test_safetensors.c — runtime/safetensors.c: round trips, files laid out by
 * hand and by Python (tools/safetensors_check.py), malformed input, and
 * loading a compiled net's parameters. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "support.h"

static char dir[64];
static char err[8192];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/netc_st_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

/* A path in the test's folder; stays valid for the next 63 calls. */
static const char *tpath(const char *name)
{
    static char buf[64][256];
    static int k;
    k = (k + 1) % 64;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* 8-byte length + header + data. */
static void write_st(const char *path, const char *header, const void *data, size_t n)
{
    size_t h = strlen(header);
    unsigned char *buf = malloc(8 + h + n + 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    if (n) memcpy(buf + 8 + h, data, n);
    write_bytes(path, buf, 8 + h + n);
    free(buf);
}

#define expect_fail(path, sub) do { \
        err[0] = '\0'; \
        StFile *f_ = st_read((path), err, sizeof err); \
        ck_assert_msg(f_ == NULL, "%s: expected an error containing \"%s\"", (path), (sub)); \
        ck_assert_msg(strstr(err, (path)) != NULL, "message does not name the file: %s", err); \
        ck_assert_msg(strstr(err, (sub)) != NULL, "expected \"%s\" in: %s", (sub), err); \
    } while (0)

static float pattern(size_t i) { return (float)i * 0.25f - 1.0f; }

START_TEST(round_trip)
{
    float a[2 * 3], b[5], s = 3.5f;
    for (int i = 0; i < 6; i++) a[i] = pattern((size_t)i);
    for (int i = 0; i < 5; i++) b[i] = -pattern((size_t)i);
    StTensor t[] = {
        { "z.last", NULL, 2, { 2, 3 }, a },
        { "a.first", "F32", 1, { 5 }, b },
        { "m.scalar", NULL, 0, { 0 }, &s },
        { "n.empty", NULL, 2, { 0, 4 }, NULL },
    };
    const char *keys[] = { "format", "note" }, *vals[] = { "pt", "quote \" and \\ and \xc3\xa9" };
    const char *p = tpath("rt.safetensors");
    write_bytes(p, "old contents", 12);
    ck_assert_msg(st_write(p, t, 4, keys, vals, 2, err, sizeof err) == 0, "%s", err);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    ck_assert_int_ne(access(tmp, F_OK), 0);

    /* Layout as the reference writer: padded header, sorted names. */
    size_t len;
    char *raw = read_file(p, &len);
    ck_assert_ptr_nonnull(raw);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (unsigned char)raw[i];
    ck_assert_uint_eq(n % 8, 0);
    ck_assert_int_eq(raw[8], '{');
    ck_assert_uint_eq(len, 8 + n + sizeof a + sizeof b + 4);
    ck_assert_ptr_nonnull(strstr(raw + 8, "\"__metadata__\":{\"format\":\"pt\""));
    ck_assert_msg(strstr(raw + 8, "a.first") < strstr(raw + 8, "z.last"), "names not sorted");
    free(raw);

    StFile *f = st_read(p, err, sizeof err);
    ck_assert_msg(f != NULL, "%s", err);
    ck_assert_int_eq(f->n, 4);
    ck_assert_str_eq(st_meta(f, "format"), "pt");
    ck_assert_str_eq(st_meta(f, "note"), vals[1]);
    ck_assert_ptr_null(st_meta(f, "nope"));
    const StEntry *e = st_find(f, "z.last");
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->dtype, "F32");
    ck_assert_int_eq(e->rank, 2);
    ck_assert_int_eq(e->shape[0], 2);
    ck_assert_int_eq(e->shape[1], 3);
    float out[6];
    ck_assert_int_eq(st_to_float(f, e, out), 0);
    ck_assert_mem_eq(out, a, sizeof a);
    e = st_find(f, "a.first");
    ck_assert_int_eq(st_to_float(f, e, out), 0);
    ck_assert_mem_eq(out, b, sizeof b);
    e = st_find(f, "m.scalar");
    ck_assert_int_eq(e->rank, 0);
    ck_assert_uint_eq(e->nbytes, 4);
    ck_assert_int_eq(st_to_float(f, e, out), 0);
    ck_assert_float_eq(out[0], 3.5f);
    e = st_find(f, "n.empty");
    ck_assert_uint_eq(e->nbytes, 0);
    ck_assert_ptr_null(st_find(f, "missing"));
    st_free(f);
}
END_TEST

START_TEST(write_errors)
{
    float a[2] = { 1, 2 };
    StTensor t[] = { { "x", NULL, 1, { 2 }, a }, { "x", NULL, 1, { 2 }, a } };
    const char *p = tpath("w.safetensors");
    ck_assert_int_eq(st_write(p, t, 2, NULL, NULL, 0, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "`x` is given twice"));
    t[1].name = "y";
    t[1].dtype = "F99";
    ck_assert_int_eq(st_write(p, t, 2, NULL, NULL, 0, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown dtype `F99`"));
    t[1].dtype = NULL;
    t[1].name = "__metadata__";
    ck_assert_int_eq(st_write(p, t, 2, NULL, NULL, 0, err, sizeof err), -1);
    ck_assert_int_ne(access(p, F_OK), 0);
    t[1].name = "y";
    ck_assert_int_eq(st_write(tpath("no/such/dir.st"), t, 2, NULL, NULL, 0, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "cannot create"));
    /* A directory in the way: the rename fails, nothing is left behind. */
    ck_assert_int_eq(mkdir(tpath("adir"), 0755), 0);
    ck_assert_int_eq(st_write(tpath("adir"), t, 2, NULL, NULL, 0, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "cannot rename"));
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", tpath("adir"), (long)getpid());
    ck_assert_int_ne(access(tmp, F_OK), 0);
    /* Zero tensors is a valid file. */
    ck_assert_int_eq(st_write(p, NULL, 0, NULL, NULL, 0, err, sizeof err), 0);
    StFile *f = st_read(p, err, sizeof err);
    ck_assert_msg(f != NULL, "%s", err);
    ck_assert_int_eq(f->n, 0);
    st_free(f);
}
END_TEST

/* A file laid out the way PyTorch's save_file does, written by hand. */
START_TEST(handmade_fixture)
{
    unsigned char data[8 + 8 + 4 + 2 + 2 + 3];
    double d = -0.125;
    int64_t nbt = 12;
    float w = 2.5f;
    uint16_t h = 0x3C00 | 0x8000;   /* F16 -1.0 */
    uint16_t bf = 0x4040;           /* BF16 3.0 */
    memcpy(data, &d, 8);
    memcpy(data + 8, &nbt, 8);
    memcpy(data + 16, &w, 4);
    memcpy(data + 20, &h, 2);
    memcpy(data + 22, &bf, 2);
    memcpy(data + 24, "\x01\x02\x03", 3);
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"bn.running_var\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
        "\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"
        "\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1],\"data_offsets\":[16,20]},"
        "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[20,22]},"
        "\"bf\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[22,24]},"
        "\"bytes\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[24,27]}}   ";
    const char *p = tpath("hand.safetensors");
    write_st(p, hdr, data, sizeof data);
    StFile *f = st_read(p, err, sizeof err);
    ck_assert_msg(f != NULL, "%s", err);
    ck_assert_int_eq(f->n, 6);
    ck_assert_str_eq(f->entries[0].name, "bn.running_var");   /* header order */
    float v;
    ck_assert_int_eq(st_to_float(f, st_find(f, "bn.running_var"), &v), 0);
    ck_assert_float_eq(v, -0.125f);
    ck_assert_int_eq(st_to_float(f, st_find(f, "conv.weight"), &v), 0);
    ck_assert_float_eq(v, 2.5f);
    ck_assert_int_eq(st_to_float(f, st_find(f, "h"), &v), 0);
    ck_assert_float_eq(v, -1.0f);
    ck_assert_int_eq(st_to_float(f, st_find(f, "bf"), &v), 0);
    ck_assert_float_eq(v, 3.0f);
    ck_assert_int_eq(st_to_float(f, st_find(f, "bytes"), &v), -1);
    const StEntry *e = st_find(f, "bn.num_batches_tracked");
    ck_assert_int_eq(e->rank, 0);
    int64_t got;
    memcpy(&got, f->data + e->offset, 8);
    ck_assert_int_eq(got, 12);
    st_free(f);
}
END_TEST

START_TEST(python_interop)
{
    ck_assert_msg(access("/usr/bin/python3", X_OK) == 0, "/usr/bin/python3 is needed for this test");
    if (access("tools/safetensors_check.py", R_OK) != 0) return;
    /* Python writes, netc reads. */
    const char *py = tpath("py.safetensors");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/safetensors_check.py write '%s'", py);
    ck_assert_int_eq(system(cmd), 0);
    StFile *f = st_read(py, err, sizeof err);
    ck_assert_msg(f != NULL, "%s", err);
    ck_assert_int_eq(f->n, 6);
    ck_assert_str_eq(st_meta(f, "format"), "pt");
    float v[6];
    ck_assert_int_eq(st_to_float(f, st_find(f, "a.weight"), v), 0);
    for (int i = 0; i < 6; i++) ck_assert_float_eq(v[i], i * 0.5f);
    ck_assert_int_eq(st_to_float(f, st_find(f, "b.half"), v), 0);
    ck_assert_float_eq(v[0], 1.0f);
    ck_assert_float_eq(v[1], -2.0f);
    ck_assert_float_eq(v[2], 0.5f);
    ck_assert_float_eq(v[3], 65504.0f);
    ck_assert_int_eq(st_to_float(f, st_find(f, "c.bf16"), v), 0);
    ck_assert_float_eq(v[0], 1.0f);
    ck_assert_float_eq(v[1], -3.0f);
    ck_assert_int_eq(st_to_float(f, st_find(f, "d.f64"), v), 0);
    ck_assert_float_eq(v[2], (float)0.3);
    ck_assert_int_eq(st_find(f, "f.scalar")->rank, 0);
    st_free(f);

    /* netc writes, Python checks layout and values. */
    float a[24], b[7], c[1];
    for (size_t i = 0; i < 24; i++) a[i] = pattern(i);
    for (size_t i = 0; i < 7; i++) b[i] = pattern(i);
    c[0] = pattern(0);
    StTensor t[] = {
        { "enc.0.conv_bn_relu.conv.weight", NULL, 4, { 2, 3, 2, 2 }, a },
        { "enc.0.conv_bn_relu.conv.bias", NULL, 1, { 7 }, b },
        { "a", NULL, 0, { 0 }, c },
    };
    const char *keys[] = { "format" }, *vals[] = { "pt" };
    const char *nc = tpath("netc.safetensors");
    ck_assert_msg(st_write(nc, t, 3, keys, vals, 1, err, sizeof err) == 0, "%s", err);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/safetensors_check.py check '%s' >/dev/null", nc);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

typedef struct { const char *name, *header, *expect; size_t ndata; } BadCase;

START_TEST(malformed)
{
    static const BadCase cases[] = {
        { "notjson", "{\"a\": ", "not valid JSON", 0 },
        { "garbage", "hello world", "not valid JSON", 0 },
        { "array", "[1, 2, 3]", "not a JSON object", 0 },
        { "string", "\"x\"", "not a JSON object", 0 },
        { "trailing", "{} {}", "text after its JSON value", 0 },
        { "nodtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "tensor `t`: entry has no `dtype`", 4 },
        { "noshape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "tensor `t`: entry has no `shape`", 4 },
        { "nooffsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", "tensor `t`: entry has no `data_offsets`", 4 },
        { "notobj", "{\"t\":[1]}", "tensor `t`: entry is an array", 0 },
        { "negshape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
          "tensor `t`: shape dimension 0 is -1, not a non-negative integer", 4 },
        { "fracshape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
          "shape dimension 0 is 1.5", 4 },
        { "strshape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,4]}}",
          "shape dimension 0 is a string", 4 },
        { "rank9", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
          "9 dimensions", 4 },
        { "hugeshape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}",
          "is too large", 4 },
        { "offsets1", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
          "tensor `t`: data_offsets must be two", 4 },
        { "offsetsneg", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
          "data_offsets must be two non-negative integers", 4 },
        { "offsetsbig", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1152921504606846976]}}",
          "data_offsets must be two non-negative integers", 4 },
        { "reversed", "{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}",
          "tensor `t`: data_offsets [4, 0] end before they begin", 4 },
        { "outofrange", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
          "tensor `t`: data_offsets [0, 8] run past the 4 bytes of data", 4 },
        { "sizemismatch", "{\"enc.0.conv.weight\":{\"dtype\":\"F32\",\"shape\":[16,1,3,3],\"data_offsets\":[0,100]}}",
          "tensor `enc.0.conv.weight`: data_offsets [0, 100] hold 100 bytes but shape [16, 1, 3, 3] of F32 needs 576", 100 },
        { "unknowndtype", "{\"t\":{\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]}}",
          "tensor `t`: unknown dtype `F17`", 4 },
        { "dtypenum", "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", "dtype is a number", 4 },
        { "overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
          "tensor `b`: data_offsets [4, 8] overlap tensor `a` [0, 8]", 8 },
        { "gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
          "bytes [4, 8) of the data belong to no tensor (between `a` and `b`)", 12 },
        { "gapfront", "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
          "bytes [0, 4) of the data belong to no tensor (before `b`)", 8 },
        { "tail", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
          "bytes [4, 6) at the end of the data belong to no tensor", 6 },
        { "dataonly", "{}", "6 bytes of data but no tensors", 6 },
        { "duplicate", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
          "tensor `a` appears twice", 8 },
        { "metanotobj", "{\"__metadata__\":[1]}", "__metadata__ is an array", 0 },
        { "metanotstr", "{\"__metadata__\":{\"k\":1}}", "__metadata__ `k` is a number, not a string", 0 },
        { "metatwice", "{\"__metadata__\":{},\"__metadata__\":{}}", "__metadata__ appears twice", 0 },
        { "badutf8", "{\"\xff\":1}", "not valid UTF-8", 0 },
        { "ctrl", "{\"a\x01\":1}", "control byte 0x01", 0 },
        { "empty", "", "not valid JSON", 0 },
    };
    unsigned char zeros[128] = { 0 };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = tpath(cases[i].name);
        write_st(p, cases[i].header, zeros, cases[i].ndata);
        expect_fail(p, cases[i].expect);
    }
}
END_TEST

START_TEST(malformed_framing)
{
    const char *p = tpath("empty.safetensors");
    write_bytes(p, "", 0);
    expect_fail(p, "file is empty");
    p = tpath("short.safetensors");
    write_bytes(p, "\x10\0\0", 3);
    expect_fail(p, "3 bytes is too short");
    /* Header length larger than the file. */
    p = tpath("long.safetensors");
    write_bytes(p, "\x40\0\0\0\0\0\0\0{}", 10);
    expect_fail(p, "header length 64 runs past the end of the file");
    /* 2^60 */
    p = tpath("absurd.safetensors");
    write_bytes(p, "\0\0\0\0\0\0\0\x10{}", 10);
    expect_fail(p, "header length 1152921504606846976 is over the 100 MB limit");
    /* A truncated data section. */
    p = tpath("trunc.safetensors");
    write_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "\0\0\0\0\0\0\0\0", 8);
    expect_fail(p, "tensor `t`: data_offsets [0, 16] run past the 8 bytes of data");
    expect_fail(dir, "is a directory");
    expect_fail(tpath("does-not-exist"), "cannot open");
    ck_assert_ptr_null(st_read(tpath("x"), NULL, 0));   /* no message buffer: still no crash */
}
END_TEST

/* Every truncation and every single-byte corruption of a valid file either
 * reads or fails cleanly (the sanitizers watch). */
START_TEST(mutations_never_crash)
{
    float a[3] = { 1, 2, 3 };
    StTensor t[] = { { "w", NULL, 1, { 3 }, a }, { "b", "F32", 0, { 0 }, a } };
    const char *p = tpath("good.safetensors");
    ck_assert_int_eq(st_write(p, t, 2, NULL, NULL, 0, err, sizeof err), 0);
    size_t len;
    char *raw = read_file(p, &len);
    const char *q = tpath("mut.safetensors");
    for (size_t cut = 0; cut < len; cut++) {
        write_bytes(q, raw, cut);
        StFile *f = st_read(q, err, sizeof err);
        ck_assert_msg(f == NULL, "truncated to %zu bytes but read", cut);
    }
    const unsigned char vals[] = { 0, '"', '{', '[', ']', '}', ',', '9', '-', 0xff, ' ' };
    for (size_t i = 0; i < len; i++)
        for (size_t k = 0; k < sizeof vals; k++) {
            char save = raw[i];
            raw[i] = (char)vals[k];
            write_bytes(q, raw, len);
            st_free(st_read(q, err, sizeof err));
            raw[i] = save;
        }
    free(raw);
}
END_TEST

/* ---- graphs ------------------------------------------------------------ */

typedef struct { Compiled *c; float **data; int n; } NetParams;

static NetParams net_params(float seed)
{
    NetParams np;
    np.c = compile_file("netdefs/unet2d.net", "-D base=4");
    ck_clean(np.c);
    np.n = np.c->g->nparams;
    ck_assert_int_gt(np.n, 10);
    np.data = calloc((size_t)np.n, sizeof *np.data);
    for (int i = 0; i < np.n; i++) {
        const Graph *g = np.c->g;
        int64_t k = shape_numel(&g->tensors[g->params[i].tensor].shape);
        np.data[i] = malloc((size_t)k * sizeof(float));
        for (int64_t j = 0; j < k; j++) np.data[i][j] = seed + (float)i + (float)j * 1e-3f;
    }
    return np;
}

static void net_free(NetParams *np)
{
    for (int i = 0; i < np->n; i++) free(np->data[i]);
    free(np->data);
    compiled_free(np->c);
}

static void net_expect_equal(const NetParams *a, const NetParams *b)
{
    for (int i = 0; i < a->n; i++) {
        const Graph *g = a->c->g;
        int64_t k = shape_numel(&g->tensors[g->params[i].tensor].shape);
        ck_assert_msg(memcmp(a->data[i], b->data[i], (size_t)k * sizeof(float)) == 0, "%s differs",
                      g->params[i].name);
    }
}

/* Rewrite a file's tensors: drop `drop`, reshape `reshape`, rename `from` to
 * `to`, retype everything to `dtype` (F32 data converted), add `extra`. */
typedef struct { const char *drop, *reshape, *from, *to, *extra, *dtype, *extra_dtype; } Edit;

static void rewrite(const char *in, const char *out, Edit ed)
{
    StFile *f = st_read(in, err, sizeof err);
    ck_assert_msg(f != NULL, "%s", err);
    StTensor *t = calloc((size_t)f->n + 1, sizeof *t);
    void **bufs = calloc((size_t)f->n + 1, sizeof *bufs);
    int n = 0;
    for (int i = 0; i < f->n; i++) {
        const StEntry *e = &f->entries[i];
        if (ed.drop && strcmp(e->name, ed.drop) == 0) continue;
        t[n].name = ed.from && strcmp(e->name, ed.from) == 0 ? ed.to : e->name;
        t[n].rank = e->rank;
        memcpy(t[n].shape, e->shape, sizeof e->shape);
        t[n].data = f->data + e->offset;
        if (ed.reshape && strcmp(e->name, ed.reshape) == 0) {
            t[n].rank = 2;
            t[n].shape[0] = 1;
            t[n].shape[1] = (int64_t)(e->nbytes / 4);
        }
        if (ed.dtype) {
            size_t k = e->nbytes / 4;
            const float *src = (const float *)(const void *)(f->data + e->offset);
            t[n].dtype = ed.dtype;
            if (strcmp(ed.dtype, "F64") == 0) {
                double *d = malloc(k * sizeof *d + 1);
                for (size_t j = 0; j < k; j++) { float v; memcpy(&v, src + j, 4); d[j] = v; }
                bufs[n] = d;
            } else {   /* a 4-byte type: same bytes */
                bufs[n] = malloc(k * 4 + 1);
                memcpy(bufs[n], src, k * 4);
            }
            t[n].data = bufs[n];
        }
        n++;
    }
    int64_t ex[3] = { 7, 7, 7 };
    StTensor *all = realloc(t, ((size_t)n + 2) * sizeof *t);
    t = all;
    if (ed.extra) {
        memset(&t[n], 0, sizeof t[n]);
        t[n].name = ed.extra;
        t[n].dtype = ed.extra_dtype;
        t[n].rank = ed.extra_dtype ? 0 : 1;
        t[n].shape[0] = 3;
        t[n].data = ex;
        n++;
    }
    ck_assert_msg(st_write(out, t, n, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < f->n; i++) free(bufs[i]);
    free(bufs);
    free(t);
    st_free(f);
}

static int load_into(const char *path, NetParams *np, const char *mapping)
{
    StFile *f = st_read(path, err, sizeof err);
    ck_assert_msg(f != NULL, "%s", err);
    int rc = st_load_params(f, np->c->g, np->data, mapping, err, sizeof err);
    st_free(f);
    return rc;
}

#define ck_err(sub) ck_assert_msg(strstr(err, (sub)) != NULL, "expected \"%s\" in:\n%s", (sub), err)

START_TEST(graph_round_trip)
{
    NetParams a = net_params(0.5f), b = net_params(-100.0f);
    const char *p = tpath("unet.safetensors");
    ck_assert_msg(st_save_params(p, a.c->g, (const float *const *)a.data, err, sizeof err) == 0, "%s", err);
    StFile *f = st_read(p, err, sizeof err);
    ck_assert_msg(f != NULL, "%s", err);
    ck_assert_int_eq(f->n, a.n);
    ck_assert_str_eq(st_meta(f, "netc.net"), "unet2d");
    ck_assert_msg(st_load_params(f, b.c->g, b.data, NULL, err, sizeof err) == 0, "%s", err);
    st_free(f);
    net_expect_equal(&a, &b);

    /* F64 on disk is converted; PyTorch's num_batches_tracked is ignored. */
    const Graph *g = a.c->g;
    char nbt[256];
    snprintf(nbt, sizeof nbt, "%.200s", g->params[2].name);
    char *dot = strrchr(nbt, '.');
    snprintf(dot + 1, sizeof nbt - (size_t)(dot + 1 - nbt), "num_batches_tracked");
    rewrite(p, tpath("f64.safetensors"), (Edit){ .dtype = "F64", .extra = nbt, .extra_dtype = "I64" });
    NetParams c = net_params(7.0f);
    ck_assert_msg(load_into(tpath("f64.safetensors"), &c, NULL) == 0, "%s", err);
    net_expect_equal(&a, &c);
    net_free(&c);
    net_free(&a);
    net_free(&b);
}
END_TEST

START_TEST(graph_errors)
{
    NetParams a = net_params(0.5f), b = net_params(-100.0f);
    const Graph *g = a.c->g;
    const char *p = tpath("unet.safetensors");
    ck_assert_int_eq(st_save_params(p, g, (const float *const *)a.data, err, sizeof err), 0);
    const char *gone = g->params[3].name, *resh = g->params[0].name;

    rewrite(p, tpath("missing.st"), (Edit){ .drop = gone });
    ck_assert_int_eq(load_into(tpath("missing.st"), &b, NULL), -1);
    ck_err(tpath("missing.st"));
    ck_err("1 problem loading weights into net `unet2d`");
    char want[512];
    snprintf(want, sizeof want, "missing: `%s` (parameter [4] F32)", gone);
    ck_err(want);
    ck_assert_float_eq(b.data[0][0], -100.0f);   /* nothing copied */

    rewrite(p, tpath("shape.st"), (Edit){ .reshape = resh });
    ck_assert_int_eq(load_into(tpath("shape.st"), &b, NULL), -1);
    snprintf(want, sizeof want, "shape: `%s` is [1, 36] in the file, the net needs [4, 1, 3, 3]", resh);
    ck_err(want);

    rewrite(p, tpath("extra.st"), (Edit){ .extra = "bogus.weight" });
    ck_assert_int_eq(load_into(tpath("extra.st"), &b, NULL), -1);
    ck_err("extra: `bogus.weight` ([3] F32) is not a parameter of net `unet2d`");

    rewrite(p, tpath("all.st"), (Edit){ .drop = gone, .reshape = resh, .extra = "bogus.weight" });
    ck_assert_int_eq(load_into(tpath("all.st"), &b, NULL), -1);
    ck_err("3 problems");
    ck_err(gone);
    ck_err(resh);
    ck_err("bogus.weight");

    rewrite(p, tpath("i32.st"), (Edit){ .dtype = "I32" });
    ck_assert_int_eq(load_into(tpath("i32.st"), &b, NULL), -1);
    snprintf(want, sizeof want, "dtype: `%s` is I32 in the file, the net needs F32", resh);
    ck_err(want);
    ck_err("... and");

    /* An empty file: everything missing, the list is capped. */
    ck_assert_int_eq(st_write(tpath("none.st"), NULL, 0, NULL, NULL, 0, err, sizeof err), 0);
    ck_assert_int_eq(load_into(tpath("none.st"), &b, NULL), -1);
    snprintf(want, sizeof want, "%d problems", g->nparams);
    ck_err(want);
    snprintf(want, sizeof want, "... and %d more", g->nparams - 20);
    ck_err(want);
    ck_err("(buffer [4] F32)");   /* running statistics are required too */
    net_free(&a);
    net_free(&b);
}
END_TEST

START_TEST(graph_mapping)
{
    NetParams a = net_params(0.5f), b = net_params(-100.0f);
    const Graph *g = a.c->g;
    const char *p = tpath("unet.safetensors");
    ck_assert_int_eq(st_save_params(p, g, (const float *const *)a.data, err, sizeof err), 0);
    rewrite(p, tpath("renamed.st"), (Edit){ .from = g->params[5].name, .to = "legacy.bn0.var" });
    ck_assert_int_eq(load_into(tpath("renamed.st"), &b, NULL), -1);
    ck_err("extra: `legacy.bn0.var`");
    char want[512];
    snprintf(want, sizeof want, "missing: `%s` (buffer", g->params[5].name);
    ck_err(want);

    const char *map = tpath("map.txt");
    char text[512];
    snprintf(text, sizeof text, "# their name   our name\n\n  legacy.bn0.var\t%s   # running var\n", g->params[5].name);
    write_bytes(map, text, strlen(text));
    ck_assert_msg(load_into(tpath("renamed.st"), &b, map) == 0, "%s", err);
    net_expect_equal(&a, &b);

    snprintf(text, sizeof text, "legacy.bn0.var %s\nnot.there %s\nlegacy.bn0.var x.y\nonly_one\n",
             g->params[5].name, g->params[5].name);
    write_bytes(map, text, strlen(text));
    ck_assert_int_eq(load_into(tpath("renamed.st"), &b, map), -1);
    snprintf(want, sizeof want, "%s:2: `not.there` is not a tensor of", map);
    ck_err(want);
    ck_err(":2: `");
    ck_err("is the target of two mapping lines");
    ck_err(":3: `legacy.bn0.var` is mapped twice");
    ck_err(":3: `x.y` is not a parameter of net `unet2d`");
    ck_err(":4: expected `their_name our_name`");

    ck_assert_int_eq(load_into(tpath("renamed.st"), &b, tpath("no-map.txt")), -1);
    ck_err("cannot open mapping file");
    net_free(&a);
    net_free(&b);
}
END_TEST

Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("safetensors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, write_errors);
    tcase_add_test(tc, handmade_fixture);
    tcase_add_test(tc, python_interop);
    tcase_add_test(tc, malformed);
    tcase_add_test(tc, malformed_framing);
    tcase_add_test(tc, mutations_never_crash);
    tcase_add_test(tc, graph_round_trip);
    tcase_add_test(tc, graph_errors);
    tcase_add_test(tc, graph_mapping);
    suite_add_tcase(s, tc);
    return s;
}
