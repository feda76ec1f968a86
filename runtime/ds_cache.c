/* ds_cache.c — the on-disk cache of preprocessed cases (dataset.h):
 * CASE.json + CASE-KEY.img + CASE-KEY.seg, keyed by a hash of the sources
 * and parameters, written atomically. */
#define _POSIX_C_SOURCE 200809L
#include "ds_internal.h"
#include "atomic_file.h"

/* ---- the cache ---------------------------------------------------------- */

static int host_le(void) { const uint16_t one = 1; return *(const uint8_t *)&one == 1; }

static void swap4(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        u = (u >> 24) | ((u >> 8) & 0xff00) | ((u << 8) & 0xff0000) | (u << 24);
        memcpy(&x[i], &u, 4);
    }
}

uint64_t ds_case_key(const Dataset *ds, const DsCase *c, const DsParams *p)
{
    uint64_t h = hash_str(FNV0, "netc-preprocessed");
    h = fnv(h, &(int){ DS_CACHE_VERSION }, sizeof(int));
    for (int k = 0; k < ds->nchannels; k++) h = hash_file(h, c->images[k]);
    h = c->label ? hash_file(h, c->label) : hash_str(h, "no label");
    char buf[512];
    snprintf(buf, sizeof buf, "%.17g %.17g %.17g", p->spacing[0], p->spacing[1], p->spacing[2]);
    h = hash_str(h, buf);
    for (int k = 0; k < ds->nchannels; k++) {
        snprintf(buf, sizeof buf, "%d %.17g %.17g", (int)p->norm[k].kind, p->norm[k].lo, p->norm[k].hi);
        h = hash_str(h, buf);
        if (p->norm[k].kind == NORM_CT) {
            const DsChannelStats *s = &ds->stats[k];
            snprintf(buf, sizeof buf, "%.17g %.17g %.17g %.17g", s->mean, s->sd, s->p005, s->p995);
            h = hash_str(h, buf);
        }
    }
    for (int v = 0; v < 256; v++) h = fnv(h, &ds->label_ok[v], 1);
    return h;
}

static void add_arr(cJSON *o, const char *name, const double *v, int n)
{
    cJSON *a = cJSON_AddArrayToObject(o, name);
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
}

static void add_arr_i(cJSON *o, const char *name, const int64_t *v, int n)
{
    double d[3];
    for (int i = 0; i < n; i++) d[i] = (double)v[i];
    add_arr(o, name, d, n);
}

static int get_arr(const cJSON *o, const char *name, double *v, int n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) return 0;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble)) return 0;
        v[i] = e->valuedouble;
    }
    return 1;
}

static int get_arr_i(const cJSON *o, const char *name, int64_t *v, int n, int64_t lo, int64_t hi)
{
    double d[3];
    if (!get_arr(o, name, d, n)) return 0;
    for (int i = 0; i < n; i++) {
        if (d[i] != floor(d[i]) || d[i] < (double)lo || d[i] > (double)hi) return 0;
        v[i] = (int64_t)d[i];
    }
    return 1;
}

static int read_exact(const char *path, void *buf, size_t n)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != n) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n ? 0 : -1;
}

/* 0 and *pp filled when the cache holds this case with this key. */
int ds_cache_load(const Dataset *ds, const DsCase *c, const char *dir, const char *key, DsPrepped *pp)
{
    memset(pp, 0, sizeof *pp);
    char *jp = fmt("%s/%s.json", dir, c->name);
    const char *why;
    char *text = jp ? slurp(jp, DS_MAX_JSON, NULL, &why) : NULL;
    free(jp);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    int ok = 0;
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "key"), *ch = cJSON_GetObjectItemCaseSensitive(j, "channels"),
                *hl = cJSON_GetObjectItemCaseSensitive(j, "has_labels");
    DsGeom *g = &pp->geom;
    const int64_t BIG = (int64_t)1 << 31;
    if (cJSON_IsString(k) && strcmp(k->valuestring, key) == 0 && cJSON_IsNumber(ch) && ch->valuedouble == ds->nchannels &&
        cJSON_IsBool(hl) && (cJSON_IsTrue(hl) == (c->label != NULL)) &&
        get_arr_i(j, "shape", g->shape, 3, 1, BIG) && get_arr(j, "spacing", g->spacing, 3) &&
        get_arr_i(j, "src_dim", g->src_dim, 3, 1, BIG) && get_arr_i(j, "canon_shape", g->canon_shape, 3, 1, BIG) &&
        get_arr(j, "canon_spacing", g->canon_spacing, 3) && get_arr_i(j, "bbox_lo", g->bbox_lo, 3, 0, BIG) &&
        get_arr_i(j, "bbox_hi", g->bbox_hi, 3, 1, BIG)) {
        int64_t perm[3], flip[3];
        ok = get_arr_i(j, "perm", perm, 3, 0, 2) && get_arr_i(j, "flip", flip, 3, 0, 1);
        for (int a = 0; a < 3 && ok; a++) { g->perm[a] = (int)perm[a]; g->flip[a] = (int)flip[a]; }
        ok = ok && g->perm[0] != g->perm[1] && g->perm[1] != g->perm[2] && g->perm[0] != g->perm[2];
        for (int a = 0; a < 3 && ok; a++)
            ok = g->bbox_lo[a] < g->bbox_hi[a] && g->bbox_hi[a] <= g->canon_shape[a] &&
                 g->canon_shape[2 - a] == g->src_dim[g->perm[a]];
        ok = ok && numel3(g->shape) <= ((int64_t)1 << 34);
    }
    cJSON_Delete(j);
    if (!ok) return -1;
    int64_t n = numel3(g->shape);
    pp->nchannels = ds->nchannels;
    memcpy(pp->shape, g->shape, sizeof pp->shape);
    memcpy(pp->spacing, g->spacing, sizeof pp->spacing);
    char *ip = fmt("%s/%s-%s.img", dir, c->name, key), *sp = fmt("%s/%s-%s.seg", dir, c->name, key);
    pp->image = malloc(sizeof(float) * (size_t)(n * ds->nchannels));
    if (c->label) pp->labels = malloc((size_t)n);
    int rc = -1;
    if (ip && sp && pp->image && (!c->label || pp->labels) &&
        read_exact(ip, pp->image, sizeof(float) * (size_t)(n * ds->nchannels)) == 0 &&
        (!c->label || read_exact(sp, pp->labels, (size_t)n) == 0)) {
        rc = 0;
        if (!host_le()) swap4(pp->image, n * ds->nchannels);
        if (pp->labels)
            for (int64_t i = 0; i < n && rc == 0; i++)
                if (pp->labels[i] > ds->max_label) rc = -1;
    }
    free(ip);
    free(sp);
    if (rc != 0) ds_prepped_free(pp);
    else pp->from_cache = 1;
    return rc;
}

int ds_cache_store(const DsCase *c, const char *dir, const char *key, const DsPrepped *pp,
                       char *err, size_t errlen)
{
    if (mkdirs(dir) != 0) return failf(err, errlen, "%s: cannot create the cache folder (%s)", dir, strerror(errno));
    /* the key of the version being replaced, to remove its arrays afterwards */
    char old[32] = "";
    {
        char *jp = fmt("%s/%s.json", dir, c->name);
        const char *why;
        char *text = jp ? slurp(jp, DS_MAX_JSON, NULL, &why) : NULL;
        cJSON *j = text ? cJSON_Parse(text) : NULL;
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "key");
        if (cJSON_IsString(k) && strlen(k->valuestring) == 16 && strspn(k->valuestring, "0123456789abcdef") == 16)
            snprintf(old, sizeof old, "%s", k->valuestring);
        cJSON_Delete(j);
        free(text);
        free(jp);
    }
    int64_t n = numel3(pp->shape);
    char *ip = fmt("%s/%s-%s.img", dir, c->name, key), *sp = fmt("%s/%s-%s.seg", dir, c->name, key),
         *jp = fmt("%s/%s.json", dir, c->name);
    cJSON *j = cJSON_CreateObject();
    char *s = NULL;
    int rc = -1;
    if (!ip || !sp || !jp || !j) { failf(err, errlen, "out of memory"); goto done; }
    if (host_le()) {
        if (atomic_write(ip, pp->image, sizeof(float) * (size_t)(n * pp->nchannels), err, errlen) != 0) goto done;
    } else {
        float *t = malloc(sizeof(float) * (size_t)(n * pp->nchannels));
        if (!t) { failf(err, errlen, "out of memory"); goto done; }
        memcpy(t, pp->image, sizeof(float) * (size_t)(n * pp->nchannels));
        swap4(t, n * pp->nchannels);
        int r = atomic_write(ip, t, sizeof(float) * (size_t)(n * pp->nchannels), err, errlen);
        free(t);
        if (r != 0) goto done;
    }
    if (pp->labels && atomic_write(sp, pp->labels, (size_t)n, err, errlen) != 0) goto done;
    const DsGeom *g = &pp->geom;
    int64_t perm[3] = { g->perm[0], g->perm[1], g->perm[2] }, flip[3] = { g->flip[0], g->flip[1], g->flip[2] };
    cJSON_AddStringToObject(j, "case", c->name);
    cJSON_AddStringToObject(j, "key", key);
    cJSON_AddNumberToObject(j, "version", DS_CACHE_VERSION);
    cJSON_AddNumberToObject(j, "channels", pp->nchannels);
    cJSON_AddBoolToObject(j, "has_labels", pp->labels != NULL);
    cJSON_AddStringToObject(j, "layout", "image: float32 little-endian [c][z][y][x]; labels: uint8 [z][y][x]");
    add_arr_i(j, "shape", g->shape, 3);
    add_arr(j, "spacing", g->spacing, 3);
    add_arr_i(j, "src_dim", g->src_dim, 3);
    add_arr_i(j, "perm", perm, 3);
    add_arr_i(j, "flip", flip, 3);
    add_arr_i(j, "canon_shape", g->canon_shape, 3);
    add_arr(j, "canon_spacing", g->canon_spacing, 3);
    add_arr_i(j, "bbox_lo", g->bbox_lo, 3);
    add_arr_i(j, "bbox_hi", g->bbox_hi, 3);
    if (!(s = cJSON_Print(j))) { failf(err, errlen, "out of memory"); goto done; }
    if (atomic_write(jp, s, strlen(s), err, errlen) != 0) goto done;
    if (old[0] && strcmp(old, key) != 0) {
        char *oi = fmt("%s/%s-%s.img", dir, c->name, old), *os = fmt("%s/%s-%s.seg", dir, c->name, old);
        if (oi) remove(oi);
        if (os) remove(os);
        free(oi);
        free(os);
    }
    rc = 0;
done:
    free(s);
    cJSON_Delete(j);
    free(ip);
    free(sp);
    free(jp);
    return rc;
}
