/* safetensors.c — see safetensors.h. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "safetensors_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define MAX_EXACT_INT 9007199254740992.0   /* 2^53: larger JSON numbers lose digits */

void st_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const struct { const char *name; size_t size; } dtypes[] = {
    { "BOOL", 1 }, { "U8", 1 }, { "I8", 1 }, { "F8_E5M2", 1 }, { "F8_E4M3", 1 },
    { "I16", 2 }, { "U16", 2 }, { "F16", 2 }, { "BF16", 2 },
    { "I32", 4 }, { "U32", 4 }, { "F32", 4 },
    { "F64", 8 }, { "I64", 8 }, { "U64", 8 },
};

size_t st_dtype_size(const char *dtype)
{
    if (!dtype) return 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, dtype) == 0) return dtypes[i].size;
    return 0;
}

/* "[16, 1, 3, 3]" */
const char *st_fmt_shape(char *buf, size_t n, int rank, const int64_t *d)
{
    size_t k = 0;
    k += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* numel x size, false on overflow. */
static bool tensor_bytes(int rank, const int64_t *d, size_t size, uint64_t *out)
{
    uint64_t v = size;
    for (int i = 0; i < rank; i++) {
        uint64_t x = (uint64_t)d[i];
        if (x != 0 && v > UINT64_MAX / x) return false;
        v *= x;
    }
    *out = v;
    return true;
}

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return false;
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0) || v > MAX_EXACT_INT || floor(v) != v) return false;
    *out = (uint64_t)v;
    return true;
}

static const char *json_kind(const cJSON *j)
{
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "not an object";
}

void st_free(StFile *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    free(f->entries);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    free(f->buf_);
    free(f);
}

const StEntry *st_find(const StFile *f, const char *name)
{
    for (int i = 0; f && name && i < f->n; i++)
        if (strcmp(f->entries[i].name, name) == 0) return &f->entries[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key)
{
    for (int i = 0; f && key && i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* Read the whole of a regular file; NULL with a message. */
static unsigned char *slurp(const char *path, size_t *size, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        st_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        st_seterr(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        st_seterr(err, errlen, "%s: %s, not a safetensors file", path,
               S_ISDIR(st.st_mode) ? "is a directory" : "is not a regular file");
        close(fd);
        return NULL;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > SIZE_MAX - 1) {
        st_seterr(err, errlen, "%s: file is too large", path);
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        st_seterr(err, errlen, "%s: out of memory reading %zu bytes", path, n);
        close(fd);
        return NULL;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            st_seterr(err, errlen, "%s: read failed after %zu of %zu bytes: %s", path, got, n,
                   r < 0 ? strerror(errno) : "file shrank");
            free(buf);
            close(fd);
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    *size = n;
    return buf;
}

static int cmp_entry_name(const void *a, const void *b)
{
    const StEntry *x = *(const StEntry *const *)a, *y = *(const StEntry *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_entry_offset(const void *a, const void *b)
{
    const StEntry *x = *(const StEntry *const *)a, *y = *(const StEntry *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    size_t ex = x->offset + x->nbytes, ey = y->offset + y->nbytes;
    return ex < ey ? -1 : ex > ey;
}

/* Check one tensor entry of the header and fill e.  0 or -1 with a message. */
static int parse_entry(const char *path, const cJSON *j, size_t data_size, StEntry *e,
                       char *err, size_t errlen)
{
    const char *name = j->string;
    if (!cJSON_IsObject(j)) {
        st_seterr(err, errlen, "%s: tensor `%s`: entry is %s, not an object", path, name, json_kind(j));
        return -1;
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    const char *missing = !dt ? "dtype" : !sh ? "shape" : !of ? "data_offsets" : NULL;
    if (missing) {
        st_seterr(err, errlen, "%s: tensor `%s`: entry has no `%s`", path, name, missing);
        return -1;
    }
    if (!cJSON_IsString(dt)) {
        st_seterr(err, errlen, "%s: tensor `%s`: dtype is %s, not a string", path, name, json_kind(dt));
        return -1;
    }
    size_t dsize = st_dtype_size(dt->valuestring);
    if (dsize == 0) {
        st_seterr(err, errlen, "%s: tensor `%s`: unknown dtype `%.40s`", path, name, dt->valuestring);
        return -1;
    }
    snprintf(e->dtype, sizeof e->dtype, "%s", dt->valuestring);
    if (!cJSON_IsArray(sh)) {
        st_seterr(err, errlen, "%s: tensor `%s`: shape is %s, not a list of integers", path, name, json_kind(sh));
        return -1;
    }
    int rank = cJSON_GetArraySize(sh);
    if (rank > ST_MAX_RANK) {
        st_seterr(err, errlen, "%s: tensor `%s`: shape has %d dimensions, at most %d are supported",
               path, name, rank, ST_MAX_RANK);
        return -1;
    }
    e->rank = rank;
    int k = 0;
    for (const cJSON *d = sh->child; d; d = d->next, k++) {
        uint64_t v;
        if (!json_uint(d, &v)) {
            if (cJSON_IsNumber(d))
                st_seterr(err, errlen, "%s: tensor `%s`: shape dimension %d is %g, not a non-negative integer",
                       path, name, k, d->valuedouble);
            else
                st_seterr(err, errlen, "%s: tensor `%s`: shape dimension %d is %s, not a non-negative integer",
                       path, name, k, json_kind(d));
            return -1;
        }
        e->shape[k] = (int64_t)v;
    }
    uint64_t b, end;
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !json_uint(of->child, &b) ||
        !json_uint(of->child->next, &end)) {
        st_seterr(err, errlen, "%s: tensor `%s`: data_offsets must be two non-negative integers [begin, end]",
               path, name);
        return -1;
    }
    if (b > end) {
        st_seterr(err, errlen, "%s: tensor `%s`: data_offsets [%llu, %llu] end before they begin",
               path, name, (unsigned long long)b, (unsigned long long)end);
        return -1;
    }
    if (end > data_size) {
        st_seterr(err, errlen, "%s: tensor `%s`: data_offsets [%llu, %llu] run past the %zu bytes of data",
               path, name, (unsigned long long)b, (unsigned long long)end, data_size);
        return -1;
    }
    char sbuf[256];
    uint64_t need;
    if (!tensor_bytes(rank, e->shape, dsize, &need)) {
        st_seterr(err, errlen, "%s: tensor `%s`: shape %s of %s is too large", path, name,
               st_fmt_shape(sbuf, sizeof sbuf, rank, e->shape), e->dtype);
        return -1;
    }
    if (end - b != need) {
        st_seterr(err, errlen, "%s: tensor `%s`: data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s needs %llu",
               path, name, (unsigned long long)b, (unsigned long long)end, (unsigned long long)(end - b),
               st_fmt_shape(sbuf, sizeof sbuf, rank, e->shape), e->dtype, (unsigned long long)need);
        return -1;
    }
    e->offset = (size_t)b;
    e->nbytes = (size_t)(end - b);
    return 0;
}

static int parse_metadata(const char *path, const cJSON *m, StFile *f, char *err, size_t errlen)
{
    if (!cJSON_IsObject(m)) {
        st_seterr(err, errlen, "%s: __metadata__ is %s, not an object of strings", path, json_kind(m));
        return -1;
    }
    int n = cJSON_GetArraySize(m);
    f->meta_keys = calloc((size_t)n + 1, sizeof *f->meta_keys);
    f->meta_vals = calloc((size_t)n + 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals) {
        st_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c)) {
            st_seterr(err, errlen, "%s: __metadata__ `%s` is %s, not a string", path, c->string, json_kind(c));
            return -1;
        }
        for (int i = 0; i < f->nmeta; i++)
            if (strcmp(f->meta_keys[i], c->string) == 0) {
                st_seterr(err, errlen, "%s: __metadata__ `%s` appears twice", path, c->string);
                return -1;
            }
        f->meta_keys[f->nmeta] = xstrdup(c->string);
        f->meta_vals[f->nmeta] = xstrdup(c->valuestring);
        f->nmeta++;
        if (!f->meta_keys[f->nmeta - 1] || !f->meta_vals[f->nmeta - 1]) {
            st_seterr(err, errlen, "%s: out of memory", path);
            return -1;
        }
    }
    return 0;
}

/* Regions sorted by offset must tile [0, data_size) exactly. */
static int check_layout(StFile *f, char *err, size_t errlen)
{
    if (f->n == 0) {
        if (f->data_size != 0) {
            st_seterr(err, errlen, "%s: %zu bytes of data but no tensors", f->path, f->data_size);
            return -1;
        }
        return 0;
    }
    StEntry **s = malloc((size_t)f->n * sizeof *s);
    if (!s) {
        st_seterr(err, errlen, "%s: out of memory", f->path);
        return -1;
    }
    for (int i = 0; i < f->n; i++) s[i] = &f->entries[i];
    qsort(s, (size_t)f->n, sizeof *s, cmp_entry_name);
    for (int i = 1; i < f->n; i++)
        if (strcmp(s[i]->name, s[i - 1]->name) == 0) {
            st_seterr(err, errlen, "%s: tensor `%s` appears twice in the header", f->path, s[i]->name);
            free(s);
            return -1;
        }
    qsort(s, (size_t)f->n, sizeof *s, cmp_entry_offset);
    size_t pos = 0;
    const StEntry *prev = NULL;
    for (int i = 0; i < f->n; i++) {
        const StEntry *e = s[i];
        if (e->offset < pos) {
            st_seterr(err, errlen, "%s: tensor `%s`: data_offsets [%zu, %zu] overlap tensor `%s` [%zu, %zu]",
                   f->path, e->name, e->offset, e->offset + e->nbytes, prev->name, prev->offset,
                   prev->offset + prev->nbytes);
            free(s);
            return -1;
        }
        if (e->offset > pos) {
            if (prev)
                st_seterr(err, errlen, "%s: bytes [%zu, %zu) of the data belong to no tensor (between `%s` and `%s`)",
                       f->path, pos, e->offset, prev->name, e->name);
            else
                st_seterr(err, errlen, "%s: bytes [0, %zu) of the data belong to no tensor (before `%s`)",
                       f->path, e->offset, e->name);
            free(s);
            return -1;
        }
        pos = e->offset + e->nbytes;
        prev = e;
    }
    free(s);
    if (pos != f->data_size) {
        st_seterr(err, errlen, "%s: bytes [%zu, %zu) at the end of the data belong to no tensor",
               f->path, pos, f->data_size);
        return -1;
    }
    return 0;
}

StFile *st_read(const char *path, char *err, size_t errlen)
{
    if (!path) {
        st_seterr(err, errlen, "st_read: no path");
        return NULL;
    }
    size_t size = 0;
    unsigned char *buf = slurp(path, &size, err, errlen);
    if (!buf) return NULL;
    StFile *f = calloc(1, sizeof *f);
    char *hdr = NULL;
    cJSON *root = NULL;
    if (!f || !(f->path = xstrdup(path))) {
        st_seterr(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    f->buf_ = buf;
    if (size == 0) {
        st_seterr(err, errlen, "%s: file is empty, not a safetensors file", path);
        goto fail;
    }
    if (size < 8) {
        st_seterr(err, errlen, "%s: %zu bytes is too short for a safetensors file (it starts with an 8-byte header length)",
               path, size);
        goto fail;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
    if (n > ST_MAX_HEADER) {
        st_seterr(err, errlen, "%s: header length %llu is over the 100 MB limit (not a safetensors file?)",
               path, (unsigned long long)n);
        goto fail;
    }
    if (n > size - 8) {
        st_seterr(err, errlen, "%s: header length %llu runs past the end of the file (%zu bytes follow the length; truncated?)",
               path, (unsigned long long)n, size - 8);
        goto fail;
    }
    const unsigned char *h = buf + 8;
    if (!valid_utf8(h, (size_t)n)) {
        st_seterr(err, errlen, "%s: header is not valid UTF-8", path);
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        if (h[i] < 0x20 && h[i] != ' ' && h[i] != '\t' && h[i] != '\n' && h[i] != '\r') {
            st_seterr(err, errlen, "%s: header is not valid JSON (control byte 0x%02x at header byte %zu)",
                   path, h[i], i);
            goto fail;
        }
    hdr = malloc((size_t)n + 1);
    if (!hdr) {
        st_seterr(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    memcpy(hdr, h, (size_t)n);
    hdr[n] = '\0';
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)n + 1, &end, false);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + n ? (size_t)(end - hdr) : 0;
        st_seterr(err, errlen, "%s: header is not valid JSON (error near header byte %zu)", path, at);
        goto fail;
    }
    for (const char *p = end; p && *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st_seterr(err, errlen, "%s: header has text after its JSON value (at header byte %zu)",
                   path, (size_t)(p - hdr));
            goto fail;
        }
    if (!cJSON_IsObject(root)) {
        st_seterr(err, errlen, "%s: header is %s, not a JSON object", path, json_kind(root));
        goto fail;
    }
    f->data = buf + 8 + n;
    f->data_size = size - 8 - (size_t)n;
    int count = cJSON_GetArraySize(root);
    f->entries = calloc((size_t)count + 1, sizeof *f->entries);
    if (!f->entries) {
        st_seterr(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    bool have_meta = false;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (have_meta) {
                st_seterr(err, errlen, "%s: __metadata__ appears twice in the header", path);
                goto fail;
            }
            have_meta = true;
            if (parse_metadata(path, c, f, err, errlen) != 0) goto fail;
            continue;
        }
        StEntry *e = &f->entries[f->n];
        if (parse_entry(path, c, f->data_size, e, err, errlen) != 0) goto fail;
        if (!(e->name = xstrdup(c->string))) {
            st_seterr(err, errlen, "%s: out of memory", path);
            goto fail;
        }
        f->n++;
    }
    if (check_layout(f, err, errlen) != 0) goto fail;
    cJSON_Delete(root);
    free(hdr);
    return f;
fail:
    cJSON_Delete(root);
    free(hdr);
    if (f) st_free(f);
    else free(buf);
    return NULL;
}

/* ---- conversion -------------------------------------------------------- */

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 0x1F, man = h & 0x3FF;
    float v;
    if (ex == 0) v = ldexpf((float)man, -24);                        /* zero, subnormal */
    else if (ex == 31) v = man ? NAN : INFINITY;
    else v = ldexpf((float)(man | 0x400), (int)ex - 25);
    return sign ? -v : v;
}

int st_to_float(const StFile *f, const StEntry *e, float *out)
{
    const unsigned char *p = f->data + e->offset;
    size_t n = e->nbytes;
    if (strcmp(e->dtype, "F32") == 0) {
        memcpy(out, p, n);
    } else if (strcmp(e->dtype, "F16") == 0 || strcmp(e->dtype, "BF16") == 0) {
        bool bf = e->dtype[0] == 'B';
        for (size_t i = 0; i < n / 2; i++) {
            uint16_t v = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
            if (bf) {
                uint32_t u = (uint32_t)v << 16;
                memcpy(&out[i], &u, 4);
            } else {
                out[i] = half_to_float(v);
            }
        }
    } else if (strcmp(e->dtype, "F64") == 0) {
        for (size_t i = 0; i < n / 8; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
    } else {
        return -1;
    }
    return 0;
}

/* ---- writing ----------------------------------------------------------- */

void st_bput(StBuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) { b->oom = true; return; }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

void st_bputs(StBuf *b, const char *s) { st_bput(b, s, strlen(s)); }

static void bprintf(StBuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0) st_bput(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

static void bstr(StBuf *b, const char *s)
{
    st_bputs(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') st_bputs(b, "\\\"");
        else if (*p == '\\') st_bputs(b, "\\\\");
        else if (*p < 0x20) bprintf(b, "\\u%04x", *p);
        else st_bput(b, (const char *)p, 1);
    }
    st_bputs(b, "\"");
}

typedef struct { const StTensor *t; size_t dsize; uint64_t nbytes; } WItem;

static int cmp_witem(const void *a, const void *b)
{
    const WItem *x = a, *y = b;
    if (x->dsize != y->dsize) return x->dsize > y->dsize ? -1 : 1;
    return strcmp(x->t->name, y->t->name);
}

static bool write_all(int fd, const void *p, size_t n)
{
    const unsigned char *c = p;
    while (n > 0) {
        ssize_t r = write(fd, c, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        c += r;
        n -= (size_t)r;
    }
    return true;
}

int st_write(const char *path, const StTensor *t, int n,
             const char *const *meta_keys, const char *const *meta_vals, int nmeta,
             char *err, size_t errlen)
{
    if (!path || n < 0 || (n > 0 && !t) || nmeta < 0 || (nmeta > 0 && (!meta_keys || !meta_vals))) {
        st_seterr(err, errlen, "%s: st_write: bad arguments", path ? path : "(null)");
        return -1;
    }
    WItem *w = calloc((size_t)n + 1, sizeof *w);
    StBuf b = { 0 };
    char *tmp = NULL;
    int fd = -1, rc = -1;
    if (!w) {
        st_seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const char *name = t[i].name;
        const char *dt = t[i].dtype ? t[i].dtype : "F32";
        if (!name || !*name || strcmp(name, "__metadata__") == 0 ||
            !valid_utf8((const unsigned char *)name, strlen(name))) {
            st_seterr(err, errlen, "%s: tensor %d: name `%s` cannot be written", path, i, name ? name : "(null)");
            goto out;
        }
        w[i].t = &t[i];
        w[i].dsize = st_dtype_size(dt);
        if (w[i].dsize == 0) {
            st_seterr(err, errlen, "%s: tensor `%s`: unknown dtype `%s`", path, name, dt);
            goto out;
        }
        if (t[i].rank < 0 || t[i].rank > ST_MAX_RANK) {
            st_seterr(err, errlen, "%s: tensor `%s`: rank %d is not in 0..%d", path, name, t[i].rank, ST_MAX_RANK);
            goto out;
        }
        for (int k = 0; k < t[i].rank; k++)
            if (t[i].shape[k] < 0) {
                st_seterr(err, errlen, "%s: tensor `%s`: negative dimension %lld", path, name,
                       (long long)t[i].shape[k]);
                goto out;
            }
        if (!tensor_bytes(t[i].rank, t[i].shape, w[i].dsize, &w[i].nbytes) || w[i].nbytes > SIZE_MAX / 2) {
            st_seterr(err, errlen, "%s: tensor `%s`: too large", path, name);
            goto out;
        }
        if (w[i].nbytes > 0 && !t[i].data) {
            st_seterr(err, errlen, "%s: tensor `%s`: no data", path, name);
            goto out;
        }
    }
    qsort(w, (size_t)n, sizeof *w, cmp_witem);
    for (int i = 1; i < n; i++)
        if (strcmp(w[i].t->name, w[i - 1].t->name) == 0) {
            st_seterr(err, errlen, "%s: tensor `%s` is given twice", path, w[i].t->name);
            goto out;
        }
    for (int i = 0; i < nmeta; i++)
        if (!meta_keys[i] || !meta_vals[i] ||
            !valid_utf8((const unsigned char *)meta_keys[i], strlen(meta_keys[i])) ||
            !valid_utf8((const unsigned char *)meta_vals[i], strlen(meta_vals[i]))) {
            st_seterr(err, errlen, "%s: metadata entry %d is missing or not UTF-8", path, i);
            goto out;
        }

    st_bputs(&b, "{");
    bool first = true;
    if (nmeta > 0) {
        st_bputs(&b, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i) st_bputs(&b, ",");
            bstr(&b, meta_keys[i]);
            st_bputs(&b, ":");
            bstr(&b, meta_vals[i]);
        }
        st_bputs(&b, "}");
        first = false;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!first) st_bputs(&b, ",");
        first = false;
        bstr(&b, w[i].t->name);
        bprintf(&b, ":{\"dtype\":\"%s\",\"shape\":[", w[i].t->dtype ? w[i].t->dtype : "F32");
        for (int k = 0; k < w[i].t->rank; k++) bprintf(&b, "%s%lld", k ? "," : "", (long long)w[i].t->shape[k]);
        bprintf(&b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                (unsigned long long)(off + w[i].nbytes));
        off += w[i].nbytes;
    }
    st_bputs(&b, "}");
    while (b.n % 8 != 0) st_bputs(&b, " ");
    if (b.oom) {
        st_seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    if (b.n > ST_MAX_HEADER) {
        st_seterr(err, errlen, "%s: header of %zu bytes is over the 100 MB limit", path, b.n);
        goto out;
    }

    size_t tl = strlen(path) + 32;
    tmp = malloc(tl);
    if (!tmp) {
        st_seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        st_seterr(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto out;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)b.n >> (8 * i));
    bool ok = write_all(fd, len8, 8) && write_all(fd, b.s, b.n);
    for (int i = 0; ok && i < n; i++)
        ok = w[i].nbytes == 0 || write_all(fd, w[i].t->data, (size_t)w[i].nbytes);
    if (!ok || fsync(fd) != 0) {
        st_seterr(err, errlen, "%s: writing %s failed: %s", path, tmp, strerror(errno));
        goto out;
    }
    int cr = close(fd);
    fd = -1;
    if (cr != 0) {
        st_seterr(err, errlen, "%s: writing %s failed: %s", path, tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        st_seterr(err, errlen, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
        goto out;
    }
    free(tmp);
    tmp = NULL;
    rc = 0;
out:
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(b.s);
    free(w);
    return rc;
}
