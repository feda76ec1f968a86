/* dataset.c — see dataset.h: dataset.json and the file lists, parameters,
 * the NORM_CT statistics and preprocessing of whole datasets.  One case's
 * geometry is in ds_geometry.c, the cache in ds_cache.c. */
#define _POSIX_C_SOURCE 200809L
#include "ds_internal.h"
#include "atomic_file.h"

/* ---- dataset.json and the file lists ---------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void ds_free(Dataset *ds)
{
    if (!ds) return;
    for (int i = 0; i < ds->ncases; i++) {
        DsCase *c = &ds->cases[i];
        free(c->name);
        if (c->images)
            for (int k = 0; k < ds->nchannels; k++) free(c->images[k]);
        free(c->images);
        free(c->label);
        if (c->prep) { ds_prepped_free(c->prep); free(c->prep); }
    }
    free(ds->cases);
    for (int k = 0; k < ds->nchannels; k++) free(ds->channel_names[k]);
    for (int k = 0; k < ds->nlabels; k++) free(ds->label_names[k]);
    free(ds->root);
    free(ds->name);
    free(ds->file_ending);
    free(ds);
}

static int json_int(const cJSON *j, int *out)
{
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v == floor(v)) || v < -2147483648.0 || v > 2147483647.0) return 0;
    *out = (int)v;
    return 1;
}

static int parse_json(Dataset *ds, const char *path, char *err, size_t errlen)
{
    const char *why = NULL;
    size_t len = 0;
    char *text = slurp(path, DS_MAX_JSON, &len, &why);
    if (!text) return failf(err, errlen, "%s: cannot read the dataset description (%s)", path, why);
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        int line = 1;
        for (size_t i = 0; i < off; i++) line += text[i] == '\n';
        free(text);
        return failf(err, errlen, "%s: not valid JSON (near line %d, byte %zu)", path, line, off);
    }
    free(text);
    int rc = -1;
    if (!cJSON_IsObject(j)) { failf(err, errlen, "%s: the top level must be an object", path); goto done; }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    if (cJSON_IsString(name) && name->valuestring[0]) ds->name = dupstr(name->valuestring);
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "channel_names");
    if (!ch) ch = cJSON_GetObjectItemCaseSensitive(j, "modality");   /* nnU-Net v1 */
    if (!cJSON_IsObject(ch)) {
        failf(err, errlen, "%s: `channel_names` is missing or not an object such as {\"0\": \"T1\"}", path);
        goto done;
    }
    int nch = cJSON_GetArraySize(ch);
    if (nch < 1 || nch > DS_MAX_CHANNELS) {
        failf(err, errlen, "%s: `channel_names` has %d entries (1 to %d supported)", path, nch, DS_MAX_CHANNELS);
        goto done;
    }
    for (int k = 0; k < nch; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(ch, key);
        if (!cJSON_IsString(v)) {
            failf(err, errlen, "%s: `channel_names` must map \"0\" .. \"%d\" to names; \"%s\" is missing or not a string",
                  path, nch - 1, key);
            goto done;
        }
        ds->channel_names[k] = dupstr(v->valuestring);
        ds->nchannels = k + 1;
    }
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
    if (!cJSON_IsObject(labels) || cJSON_GetArraySize(labels) < 1) {
        failf(err, errlen, "%s: `labels` is missing or not an object such as {\"background\": 0, \"brain\": 1}", path);
        goto done;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, labels)
    {
        if (ds->nlabels >= DS_MAX_LABELS) { failf(err, errlen, "%s: too many labels", path); goto done; }
        int vals[256], nv = 0;
        if (cJSON_IsArray(it)) {   /* region-based: a list of label values */
            const cJSON *e;
            cJSON_ArrayForEach(e, it)
            {
                if (nv >= 256 || !json_int(e, &vals[nv]) || vals[nv] < 0 || vals[nv] > 255) { nv = -1; break; }
                nv++;
            }
        } else if (json_int(it, &vals[0]) && vals[0] >= 0 && vals[0] <= 255)
            nv = 1;
        else
            nv = -1;
        if (nv <= 0) {
            failf(err, errlen, "%s: label \"%s\" must be an integer 0..255 (or a list of them)", path, it->string);
            goto done;
        }
        ds->label_names[ds->nlabels] = dupstr(it->string);
        ds->label_values[ds->nlabels] = vals[0];
        ds->nlabels++;
        for (int k = 0; k < nv; k++) {
            ds->label_ok[vals[k]] = 1;
            if (vals[k] > ds->max_label) ds->max_label = vals[k];
        }
    }
    if (!ds->label_ok[0]) {
        failf(err, errlen, "%s: `labels` must declare the background as 0 (nnU-Net's convention)", path);
        goto done;
    }
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(j, "numTraining");
    if (!json_int(nt, &ds->num_training) || ds->num_training < 0) {
        failf(err, errlen, "%s: `numTraining` is missing or not a non-negative integer", path);
        goto done;
    }
    const cJSON *fe = cJSON_GetObjectItemCaseSensitive(j, "file_ending");
    if (!cJSON_IsString(fe) || fe->valuestring[0] != '.') {
        failf(err, errlen, "%s: `file_ending` is missing or not a string such as \".nii.gz\"", path);
        goto done;
    }
    if (strcmp(fe->valuestring, ".nii.gz") != 0 && strcmp(fe->valuestring, ".nii") != 0) {
        failf(err, errlen, "%s: file_ending \"%s\" is not supported (netc reads .nii.gz and .nii)", path, fe->valuestring);
        goto done;
    }
    ds->file_ending = dupstr(fe->valuestring);
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}

/* Sorted regular-file names of a folder; *n = -1 if the folder is missing. */
static char **list_dir(const char *dir, int *n)
{
    *n = -1;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int cap = 16, k = 0;
    char **v = malloc(sizeof(char *) * (size_t)cap);
    struct dirent *e;
    while (v && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (k == cap) {
            char **w = cap < 4 * DS_MAX_CASES ? realloc(v, sizeof(char *) * (size_t)(cap *= 2)) : NULL;
            if (!w) { for (int i = 0; i < k; i++) free(v[i]); free(v); v = NULL; break; }
            v = w;
        }
        v[k++] = dupstr(e->d_name);
    }
    closedir(d);
    if (!v) return NULL;
    qsort(v, (size_t)k, sizeof(char *), cmp_str);
    *n = k;
    return v;
}

static void free_list(char **v, int n)
{
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Add the cases of imagesXx (+ labelsXx) to ds. */
static int scan_split(Dataset *ds, DsSplit split, char *err, size_t errlen)
{
    const char *idir = split == DS_TRAIN ? "imagesTr" : "imagesTs", *ldir = split == DS_TRAIN ? "labelsTr" : "labelsTs";
    char *ipath = fmt("%s/%s", ds->root, idir), *lpath = fmt("%s/%s", ds->root, ldir);
    int ni = 0, nl = 0, rc = -1, first = ds->ncases;
    char **files = NULL, **lfiles = NULL;
    if (!ipath || !lpath) { failf(err, errlen, "out of memory"); goto done; }
    files = list_dir(ipath, &ni);
    if (ni < 0) {
        if (split == DS_TEST) { rc = 0; goto done; }
        failf(err, errlen, "%s: missing (a dataset in nnU-Net's raw format has imagesTr/ and labelsTr/)", ipath);
        goto done;
    }
    size_t el = strlen(ds->file_ending);
    for (int f = 0; f < ni; f++) {
        const char *fn = files[f];
        size_t L = strlen(fn);
        if (!ends_with(fn, ds->file_ending)) continue;
        if (L < el + 6 || fn[L - el - 5] != '_' || !(fn[L - el - 4] >= '0' && fn[L - el - 4] <= '9') ||
            !(fn[L - el - 3] >= '0' && fn[L - el - 3] <= '9') || !(fn[L - el - 2] >= '0' && fn[L - el - 2] <= '9') ||
            !(fn[L - el - 1] >= '0' && fn[L - el - 1] <= '9')) {
            failf(err, errlen, "%s/%s: not named CASE_XXXX%s (XXXX = the channel, 0000 for the first)", ipath, fn,
                  ds->file_ending);
            goto done;
        }
        int chn = atoi(fn + L - el - 4);
        if (chn >= ds->nchannels) {
            failf(err, errlen, "%s/%s: channel %d, but dataset.json declares %d channel(s)", ipath, fn, chn, ds->nchannels);
            goto done;
        }
        size_t cl = L - el - 5;
        int c = ds->ncases - 1;
        if (c < first || strlen(ds->cases[c].name) != cl || strncmp(ds->cases[c].name, fn, cl) != 0) {
            if (ds->ncases >= DS_MAX_CASES) { failf(err, errlen, "%s: too many cases", ipath); goto done; }
            DsCase *nc = realloc(ds->cases, sizeof(DsCase) * (size_t)(ds->ncases + 1));
            if (!nc) { failf(err, errlen, "out of memory"); goto done; }
            ds->cases = nc;
            c = ds->ncases++;
            memset(&ds->cases[c], 0, sizeof(DsCase));
            ds->cases[c].split = split;
            ds->cases[c].name = malloc(cl + 1);
            ds->cases[c].images = calloc((size_t)ds->nchannels, sizeof(char *));
            if (!ds->cases[c].name || !ds->cases[c].images) { failf(err, errlen, "out of memory"); goto done; }
            memcpy(ds->cases[c].name, fn, cl);
            ds->cases[c].name[cl] = 0;
        }
        ds->cases[c].images[chn] = fmt("%s/%s", ipath, fn);
    }
    /* every case has every channel and (in training) a label */
    for (int c = first; c < ds->ncases; c++) {
        DsCase *dc = &ds->cases[c];
        for (int k = 0; k < ds->nchannels; k++)
            if (!dc->images[k]) {
                failf(err, errlen, "%s/%s_%04d%s: missing (dataset.json declares %d channel(s): %s%s)", ipath, dc->name, k,
                      ds->file_ending, ds->nchannels, ds->channel_names[0], ds->nchannels > 1 ? ", ..." : "");
                goto done;
            }
        char *lp = fmt("%s/%s%s", lpath, dc->name, ds->file_ending);
        if (!lp) { failf(err, errlen, "out of memory"); goto done; }
        if (is_regular(lp)) dc->label = lp;
        else {
            free(lp);
            if (split == DS_TRAIN) {
                failf(err, errlen, "%s/%s%s: missing (the label of training case %s)", lpath, dc->name, ds->file_ending,
                      dc->name);
                goto done;
            }
        }
    }
    /* no label without an image */
    lfiles = list_dir(lpath, &nl);
    if (nl < 0 && split == DS_TRAIN) {
        failf(err, errlen, "%s: missing (a dataset in nnU-Net's raw format has imagesTr/ and labelsTr/)", lpath);
        goto done;
    }
    for (int f = 0; f < nl; f++) {
        if (!ends_with(lfiles[f], ds->file_ending)) continue;
        size_t cl = strlen(lfiles[f]) - el;
        int found = 0;
        for (int c = first; c < ds->ncases && !found; c++)
            found = strlen(ds->cases[c].name) == cl && strncmp(ds->cases[c].name, lfiles[f], cl) == 0;
        if (!found) {
            failf(err, errlen, "%s/%s: a label without an image (%s/%.*s_0000%s is missing)", lpath, lfiles[f], ipath,
                  (int)cl, lfiles[f], ds->file_ending);
            goto done;
        }
    }
    rc = 0;
done:
    if (files) free_list(files, ni);
    if (lfiles) free_list(lfiles, nl);
    free(ipath);
    free(lpath);
    return rc;
}

/* Header-only read. */
static nifti_image *read_header(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) { failf(err, errlen, "%s: %s", path, strerror(errno)); return NULL; }
    if (!S_ISREG(st.st_mode)) { failf(err, errlen, "%s: not a regular file", path); return NULL; }
    nifti_set_debug_level(0);
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim) { failf(err, errlen, "%s: not a readable NIfTI file (bad or missing header)", path); return NULL; }
    if (nim->dim[0] < 1 || nim->dim[0] > 4 || (nim->dim[0] == 4 && nim->nt > 1) || nim->nu > 1 || nim->nv > 1 ||
        nim->nw > 1) {
        failf(err, errlen, "%s: not a 3D volume (dim %d, %lld time points); nnU-Net's format has one 3D file per channel",
              path, nim->dim[0], (long long)nim->nt);
        nifti_image_free(nim);
        return NULL;
    }
    return nim;
}

static int check_headers(Dataset *ds, DsCase *c, char *err, size_t errlen)
{
    nifti_image *ref = read_header(c->images[0], err, errlen);
    if (!ref) return -1;
    Volume rv = { 0 };
    rv.dim[0] = ref->nx; rv.dim[1] = ref->ny > 0 ? ref->ny : 1; rv.dim[2] = ref->nz > 0 ? ref->nz : 1; rv.dim[3] = 1;
    rv.header = ref;
    int rc = 0;
    for (int k = 1; k <= ds->nchannels && rc == 0; k++) {
        const char *p = k < ds->nchannels ? c->images[k] : c->label;
        if (!p) continue;
        nifti_image *nim = read_header(p, err, errlen);
        if (!nim) { rc = -1; break; }
        Volume v = { 0 };
        v.dim[0] = nim->nx; v.dim[1] = nim->ny > 0 ? nim->ny : 1; v.dim[2] = nim->nz > 0 ? nim->nz : 1; v.dim[3] = 1;
        v.header = nim;
        rc = ds_check_grid(&rv, c->images[0], &v, p, err, errlen);
        nifti_image_free(nim);
    }
    DsGeom g;
    ds_orient_nim(ref, &g);
    memcpy(c->shape, g.canon_shape, sizeof c->shape);
    memcpy(c->spacing, g.canon_spacing, sizeof c->spacing);
    nifti_image_free(ref);
    return rc;
}

Dataset *ds_open(const char *dir, char *err, size_t errlen)
{
    Dataset *ds = calloc(1, sizeof *ds);
    if (!ds) { failf(err, errlen, "out of memory"); return NULL; }
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    ds->root = malloc(dl + 1);
    if (!ds->root) { failf(err, errlen, "out of memory"); goto fail; }
    memcpy(ds->root, dir, dl);
    ds->root[dl] = 0;
    struct stat st;
    if (stat(ds->root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        failf(err, errlen, "%s: not a folder (%s)", ds->root, stat(ds->root, &st) != 0 ? strerror(errno) : "a file");
        goto fail;
    }
    char *jp = fmt("%s/dataset.json", ds->root);
    if (!jp) { failf(err, errlen, "out of memory"); goto fail; }
    int r = parse_json(ds, jp, err, errlen);
    if (r != 0) { free(jp); goto fail; }
    if (!ds->name) {
        const char *b = strrchr(ds->root, '/');
        ds->name = dupstr(b ? b + 1 : ds->root);
    }
    if (scan_split(ds, DS_TRAIN, err, errlen) != 0) { free(jp); goto fail; }
    ds->ntrain = ds->ncases;
    if (ds->ntrain != ds->num_training) {
        failf(err, errlen, "%s: numTraining is %d but %s/imagesTr holds %d case(s)", jp, ds->num_training, ds->root,
              ds->ntrain);
        free(jp);
        goto fail;
    }
    free(jp);
    if (scan_split(ds, DS_TEST, err, errlen) != 0) goto fail;
    for (int i = 0; i < ds->ncases; i++)
        if (check_headers(ds, &ds->cases[i], err, errlen) != 0) goto fail;
    return ds;
fail:
    ds_free(ds);
    return NULL;
}

/* ---- parameters ------------------------------------------------------- */

void ds_params_default(DsParams *p, const Normalization *norm)
{
    memset(p, 0, sizeof *p);
    for (int c = 0; c < DS_MAX_CHANNELS; c++) {
        if (norm) p->norm[c] = *norm;
        else p->norm[c].kind = NORM_ZSCORE;
    }
}

void ds_params_from_protocol(DsParams *p, const Protocol *pr)
{
    ds_params_default(p, &pr->norm);
    if (pr->rank == 3)
        for (int k = 0; k < 3; k++) p->spacing[k] = pr->spacing[k];
    else if (pr->rank == 2) {
        p->spacing[1] = pr->spacing[0];
        p->spacing[2] = pr->spacing[1];
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void ds_median_spacing(const Dataset *ds, double out[3])
{
    int n = ds->ntrain > 0 ? ds->ntrain : ds->ncases;
    double *v = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int k = 0; k < 3; k++) {
        out[k] = 1;
        if (!v || n == 0) continue;
        for (int i = 0; i < n; i++) v[i] = ds->cases[i].spacing[k];
        qsort(v, (size_t)n, sizeof(double), cmp_double);
        out[k] = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    }
    free(v);
}

/* ---- reading a case --------------------------------------------------- */

static int load_case(const Dataset *ds, const DsCase *c, Volume *vols, Volume *lab, char *err, size_t errlen)
{
    memset(vols, 0, sizeof(Volume) * (size_t)ds->nchannels);
    memset(lab, 0, sizeof *lab);
    for (int k = 0; k < ds->nchannels; k++)
        if (vol_read(c->images[k], &vols[k], err, errlen) != 0) goto fail;
    if (c->label && vol_read(c->label, lab, err, errlen) != 0) goto fail;
    return 0;
fail:
    for (int k = 0; k < ds->nchannels; k++) vol_free(&vols[k]);
    vol_free(lab);
    return -1;
}

static void free_case(const Dataset *ds, Volume *vols, Volume *lab)
{
    for (int k = 0; k < ds->nchannels; k++) vol_free(&vols[k]);
    vol_free(lab);
}

/* ---- NORM_CT statistics ------------------------------------------------ */

static uint64_t stats_key(const Dataset *ds)
{
    uint64_t h = hash_str(FNV0, "netc-stats-1");
    for (int i = 0; i < ds->ntrain; i++) {
        for (int k = 0; k < ds->nchannels; k++) h = hash_file(h, ds->cases[i].images[k]);
        h = hash_file(h, ds->cases[i].label);
    }
    return h;
}

static int stats_from_cache(Dataset *ds, const char *path, const char *key)
{
    const char *why;
    char *text = slurp(path, DS_MAX_JSON, NULL, &why);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    int ok = 0;
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "key"), *ch = cJSON_GetObjectItemCaseSensitive(j, "channels");
    if (cJSON_IsString(k) && strcmp(k->valuestring, key) == 0 && cJSON_IsArray(ch) &&
        cJSON_GetArraySize(ch) == ds->nchannels) {
        ok = 1;
        for (int c = 0; c < ds->nchannels && ok; c++) {
            const cJSON *e = cJSON_GetArrayItem(ch, c);
            const char *f[5] = { "mean", "std", "percentile_00_5", "percentile_99_5", "n" };
            double v[5];
            for (int t = 0; t < 5 && ok; t++) {
                const cJSON *x = cJSON_GetObjectItemCaseSensitive(e, f[t]);
                if (cJSON_IsNumber(x)) v[t] = x->valuedouble;
                else ok = 0;
            }
            if (ok) {
                ds->stats[c] = (DsChannelStats){ 1, v[0], v[1], v[2], v[3], (int64_t)v[4] };
            }
        }
    }
    cJSON_Delete(j);
    return ok ? 0 : -1;
}


int ds_compute_stats(Dataset *ds, const char *cache_dir, char *err, size_t errlen)
{
    char key[32];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)stats_key(ds));
    char *cpath = cache_dir ? fmt("%s/dataset_fingerprint.json", cache_dir) : NULL;
    if (cpath && stats_from_cache(ds, cpath, key) == 0) { free(cpath); return 0; }
    if (ds->ntrain == 0) { free(cpath); return failf(err, errlen, "%s: no training cases for the dataset statistics", ds->root); }
    int C = ds->nchannels, rc = -1;
    int64_t per_case = DS_STATS_SAMPLES / ds->ntrain;
    if (per_case < 1) per_case = 1;
    float *samp[DS_MAX_CHANNELS] = { 0 };
    int64_t ns = 0, cap = 0;
    Volume vols[DS_MAX_CHANNELS], lab;
    for (int i = 0; i < ds->ntrain; i++) {
        const DsCase *c = &ds->cases[i];
        if (load_case(ds, c, vols, &lab, err, errlen) != 0) goto done;
        int bad = 0;
        for (int k = 0; k < C && !bad; k++)
            bad = ds_check_grid(&vols[0], c->images[0], k + 1 < C ? &vols[k + 1] : &lab, k + 1 < C ? c->images[k + 1] : c->label,
                             err, errlen) != 0;
        if (bad) { free_case(ds, vols, &lab); goto done; }
        int64_t n = vol_numel(&lab), nf = 0;
        for (int64_t v = 0; v < n; v++) nf += lab.data[v] > 0;
        int64_t step = nf > per_case ? (nf + per_case - 1) / per_case : 1, take = (nf + step - 1) / step;
        if (ns + take > cap) {
            cap = (ns + take) * 2;
            for (int k = 0; k < C; k++) {
                float *w = realloc(samp[k], sizeof(float) * (size_t)cap);
                if (!w) { free_case(ds, vols, &lab); failf(err, errlen, "out of memory"); goto done; }
                samp[k] = w;
            }
        }
        int64_t seen = 0;
        for (int64_t v = 0; v < n; v++) {
            if (!(lab.data[v] > 0)) continue;
            if (seen++ % step) continue;
            for (int k = 0; k < C; k++) samp[k][ns] = vols[k].data[v];
            ns++;
        }
        free_case(ds, vols, &lab);
    }
    if (ns == 0) {
        failf(err, errlen, "%s: the training labels have no foreground voxels, which `normalize ct` needs", ds->root);
        goto done;
    }
    cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "channels");
    cJSON_AddStringToObject(j, "key", key);
    for (int k = 0; k < C; k++) {
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < ns; i++) sum += samp[k][i];
        double mean = sum / (double)ns;
        for (int64_t i = 0; i < ns; i++) sq += (samp[k][i] - mean) * (samp[k][i] - mean);
        qsort(samp[k], (size_t)ns, sizeof(float), cmp_float);
        ds->stats[k] = (DsChannelStats){ 1, mean, sqrt(sq / (double)ns), ds_percentile(samp[k], ns, 0.5),
                                         ds_percentile(samp[k], ns, 99.5), ns };
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "mean", ds->stats[k].mean);
        cJSON_AddNumberToObject(e, "std", ds->stats[k].sd);
        cJSON_AddNumberToObject(e, "percentile_00_5", ds->stats[k].p005);
        cJSON_AddNumberToObject(e, "percentile_99_5", ds->stats[k].p995);
        cJSON_AddNumberToObject(e, "n", (double)ns);
        cJSON_AddItemToArray(arr, e);
    }
    rc = 0;
    if (cpath) {
        char *s = cJSON_Print(j);
        if (mkdirs(cache_dir) != 0 || !s || atomic_write(cpath, s, strlen(s), err, errlen) != 0) rc = -1;
        if (rc != 0 && !s) failf(err, errlen, "out of memory");
        else if (rc != 0 && err && !err[0]) failf(err, errlen, "%s: cannot create the cache folder", cache_dir);
        free(s);
    }
    cJSON_Delete(j);
done:
    for (int k = 0; k < C; k++) free(samp[k]);
    free(cpath);
    return rc;
}

/* ---- preprocessing ---------------------------------------------------- */

static int preprocess_one(Dataset *ds, int i, const DsParams *p, const char *cache_dir, char *err, size_t errlen)
{
    DsCase *c = &ds->cases[i];
    if (c->prep) { ds_prepped_free(c->prep); free(c->prep); c->prep = NULL; }
    DsPrepped *pp = calloc(1, sizeof *pp);
    if (!pp) return failf(err, errlen, "out of memory");
    char key[32];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)ds_case_key(ds, c, p));
    if (cache_dir && ds_cache_load(ds, c, cache_dir, key, pp) == 0) {
        c->prep = pp;
        ds->n_cached++;
        return 0;
    }
    Volume vols[DS_MAX_CHANNELS], lab;
    if (load_case(ds, c, vols, &lab, err, errlen) != 0) { free(pp); return -1; }
    const char *names[DS_MAX_CHANNELS + 1];
    for (int k = 0; k < ds->nchannels; k++) names[k] = c->images[k];
    names[ds->nchannels] = c->label;
    int rc = ds_prepare(vols, ds->nchannels, c->label ? &lab : NULL, p, ds->stats, names, ds->label_ok, pp, err, errlen);
    free_case(ds, vols, &lab);
    if (rc == 0 && cache_dir) rc = ds_cache_store(c, cache_dir, key, pp, err, errlen);
    if (rc != 0) { ds_prepped_free(pp); free(pp); return -1; }
    c->prep = pp;
    ds->n_computed++;
    return 0;
}

int ds_preprocess(Dataset *ds, const DsParams *p, const char *cache_dir, int which, char *err, size_t errlen)
{
    if (which < -1 || which >= ds->ncases) return failf(err, errlen, "case %d does not exist (%d cases)", which, ds->ncases);
    for (int k = 0; k < ds->nchannels; k++)
        if (p->norm[k].kind == NORM_CT && !ds->stats[k].valid) {
            if (ds_compute_stats(ds, cache_dir, err, errlen) != 0) return -1;
            break;
        }
    for (int i = 0; i < ds->ncases; i++) {
        if (which >= 0 && i != which) continue;
        if (preprocess_one(ds, i, p, cache_dir, err, errlen) != 0) return -1;
    }
    return 0;
}

const DsPrepped *ds_case(const Dataset *ds, int i)
{
    return i >= 0 && i < ds->ncases ? ds->cases[i].prep : NULL;
}

void ds_release(Dataset *ds, int i)
{
    if (i < 0 || i >= ds->ncases || !ds->cases[i].prep) return;
    ds_prepped_free(ds->cases[i].prep);
    free(ds->cases[i].prep);
    ds->cases[i].prep = NULL;
}
