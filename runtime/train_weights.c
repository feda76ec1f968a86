/* train_weights.c — voxel weight maps from the dataset (see train_weights.h). */
#define _POSIX_C_SOURCE 200809L
#include "train_weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nifti_io.h"

int tw_load(const char *path, const DsPrepped *pp, float **out, char *err, size_t errlen)
{
    *out = NULL;
    Volume v;
    memset(&v, 0, sizeof v);
    if (vol_read(path, &v, err, errlen) != 0) return -1;
    const DsGeom *g = &pp->geom;
    int rc = -1;
    float *crop = NULL, *res = NULL;
    if (v.dim[0] != g->src_dim[0] || v.dim[1] != g->src_dim[1] || v.dim[2] != g->src_dim[2] || v.dim[3] != 1) {
        snprintf(err, errlen, "%s is %lldx%lldx%lldx%lld, the case's image %lldx%lldx%lld: a weight map must be on the "
                 "image's grid", path, (long long)v.dim[0], (long long)v.dim[1], (long long)v.dim[2], (long long)v.dim[3],
                 (long long)g->src_dim[0], (long long)g->src_dim[1], (long long)g->src_dim[2]);
        goto out;
    }
    int64_t n = vol_numel(&v);
    for (int64_t i = 0; i < n; i++)
        if (!(isfinite(v.data[i]) && v.data[i] >= 0)) {
            snprintf(err, errlen, "%s: voxel %lld is %g; weights must be finite and >= 0", path, (long long)i,
                     (double)v.data[i]);
            goto out;
        }
    /* reorient: canonical voxel (x, y, z) reads source index start + x*step[0] + y*step[1] + z*step[2] */
    const int64_t *cs = g->canon_shape;
    int64_t sstr[3] = { 1, g->src_dim[0], g->src_dim[0] * g->src_dim[1] }, start = 0, step[3];
    for (int a = 0; a < 3; a++) {
        int j = g->perm[a];
        if (j < 0 || j > 2) { snprintf(err, errlen, "%s: bad case geometry", path); goto out; }
        step[a] = g->flip[a] ? -sstr[j] : sstr[j];
        if (g->flip[a]) start += (g->src_dim[j] - 1) * sstr[j];
    }
    int64_t b[3], bs[3];
    for (int a = 0; a < 3; a++) {
        b[a] = g->bbox_lo[a];
        bs[a] = g->bbox_hi[a] - g->bbox_lo[a];
        if (b[a] < 0 || bs[a] < 1 || g->bbox_hi[a] > cs[a] || pp->shape[a] < 1) {
            snprintf(err, errlen, "%s: bad case geometry", path);
            goto out;
        }
    }
    crop = malloc(sizeof(float) * (size_t)(bs[0] * bs[1] * bs[2]));
    res = malloc(sizeof(float) * (size_t)(pp->shape[0] * pp->shape[1] * pp->shape[2]));
    if (!crop || !res) { snprintf(err, errlen, "out of memory"); goto out; }
    int64_t i = 0;
    for (int64_t z = b[0]; z < b[0] + bs[0]; z++)
        for (int64_t y = b[1]; y < b[1] + bs[1]; y++) {
            int64_t base = start + z * step[2] + y * step[1];
            for (int64_t x = b[2]; x < b[2] + bs[2]; x++) crop[i++] = v.data[base + x * step[0]];
        }
    ds_resample_linear(crop, bs, res, pp->shape);
    *out = res;
    res = NULL;
    rc = 0;
out:
    free(crop);
    free(res);
    vol_free(&v);
    return rc;
}

void tw_spatial_only(TrainCall *calls, int n)
{
    static const char *const intensity[] = { "noise", "blur", "brightness", "contrast", "lowres", "gamma" };
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < sizeof intensity / sizeof intensity[0]; k++)
            if (calls[i].name && strcmp(calls[i].name, intensity[k]) == 0) calls[i].num[1] = 0;
}
