/* ds_internal.h — shared by the data pipeline's files (not public):
 * dataset.c (dataset.json, file lists, statistics, preprocessing),
 * ds_geometry.c (one case: orientation, crop, normalization, resampling,
 * undo) and ds_cache.c (the on-disk cache).  The small helpers are static
 * inline so each file gets its own copy. */
#ifndef NETC_DS_INTERNAL_H
#define NETC_DS_INTERNAL_H
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <nifti1_io.h>

#define DS_CACHE_VERSION 1
#define DS_MAX_JSON (16 << 20)
#define DS_MAX_CASES 100000
#define DS_STATS_SAMPLES 10000000   /* nnU-Net's fingerprint: 10e7 foreground voxels per channel */

/* ---- small helpers -------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static inline int failf(char *err, size_t n, const char *fmt, ...)
{
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

__attribute__((format(printf, 1, 2))) static inline char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static inline char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static inline int is_regular(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static inline int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static inline int mkdirs(const char *path)
{
    char *p = dupstr(path);
    if (!p) return -1;
    for (char *q = p + 1; *q; q++) {
        if (*q != '/') continue;
        *q = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) { free(p); return -1; }
        *q = '/';
    }
    int rc = mkdir(p, 0777) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

/* The whole file, NUL-terminated; NULL with errno-ish message otherwise. */
static inline char *slurp(const char *path, size_t max, size_t *len, const char **why)
{
    struct stat st;
    if (stat(path, &st) != 0) { *why = strerror(errno); return NULL; }
    if (!S_ISREG(st.st_mode)) { *why = "not a regular file"; return NULL; }
    if ((size_t)st.st_size > max) { *why = "too large"; return NULL; }
    FILE *f = fopen(path, "rb");
    if (!f) { *why = strerror(errno); return NULL; }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) { fclose(f); *why = "out of memory"; return NULL; }
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (got != (size_t)st.st_size) { free(buf); *why = "read error"; return NULL; }
    buf[got] = 0;
    if (len) *len = got;
    return buf;
}

/* FNV-1a 64 */
static inline uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ULL; }
    return h;
}
#define FNV0 14695981039346656037ULL

static inline uint64_t hash_str(uint64_t h, const char *s) { return fnv(h, s, strlen(s) + 1); }

static inline uint64_t hash_file(uint64_t h, const char *path)
{
    struct stat st;
    char buf[256];
    if (stat(path, &st) != 0) snprintf(buf, sizeof buf, "missing");
    else
        snprintf(buf, sizeof buf, "%lld:%lld.%09ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                 (long)st.st_mtim.tv_nsec);
    return hash_str(hash_str(h, path), buf);
}

static inline int64_t numel3(const int64_t s[3]) { return s[0] * s[1] * s[2]; }

static inline int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* ds_geometry.c */
void ds_orient_nim(const nifti_image *nim, DsGeom *g);
int ds_check_grid(const Volume *a, const char *an, const Volume *b, const char *bn, char *err, size_t errlen);
double ds_percentile(const float *s, int64_t n, double q);

/* ds_cache.c */
uint64_t ds_case_key(const Dataset *ds, const DsCase *c, const DsParams *p);
int ds_cache_load(const Dataset *ds, const DsCase *c, const char *dir, const char *key, DsPrepped *pp);
int ds_cache_store(const DsCase *c, const char *dir, const char *key, const DsPrepped *pp, char *err, size_t errlen);

#endif
