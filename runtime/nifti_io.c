/* nifti_io.c — see nifti_io.h. */
#define _POSIX_C_SOURCE 200809L
#include "nifti_io.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nifti1_io.h>
#include <zlib.h>

static int fail(char *err, size_t n, const char *fmt, const char *path, const char *why)
{
    snprintf(err, n, fmt, path, why);
    return -1;
}

/* One voxel of any common type, as double. */
static double voxel(const nifti_image *nim, size_t i)
{
    const void *d = nim->data;
    switch (nim->datatype) {
    case NIFTI_TYPE_UINT8: return ((const uint8_t *)d)[i];
    case NIFTI_TYPE_INT8: return ((const int8_t *)d)[i];
    case NIFTI_TYPE_UINT16: return ((const uint16_t *)d)[i];
    case NIFTI_TYPE_INT16: return ((const int16_t *)d)[i];
    case NIFTI_TYPE_UINT32: return ((const uint32_t *)d)[i];
    case NIFTI_TYPE_INT32: return ((const int32_t *)d)[i];
    case NIFTI_TYPE_UINT64: return (double)((const uint64_t *)d)[i];
    case NIFTI_TYPE_INT64: return (double)((const int64_t *)d)[i];
    case NIFTI_TYPE_FLOAT32: return ((const float *)d)[i];
    case NIFTI_TYPE_FLOAT64: return ((const double *)d)[i];
    default: return NAN;
    }
}

static int supported(int dt)
{
    switch (dt) {
    case NIFTI_TYPE_UINT8: case NIFTI_TYPE_INT8: case NIFTI_TYPE_UINT16: case NIFTI_TYPE_INT16:
    case NIFTI_TYPE_UINT32: case NIFTI_TYPE_INT32: case NIFTI_TYPE_UINT64: case NIFTI_TYPE_INT64:
    case NIFTI_TYPE_FLOAT32: case NIFTI_TYPE_FLOAT64:
        return 1;
    default:
        return 0;
    }
}

/* The decompressed length of a .gz file; -1 if the stream is damaged or cut
 * short (nifti_clib would zero-fill the missing voxels silently). */
static long long gz_length(const char *path)
{
    gzFile f = gzopen(path, "rb");
    if (!f) return -1;
    char *buf = malloc(1 << 16);   /* not static: data workers read in parallel later */
    if (!buf) { gzclose(f); return -1; }
    long long total = 0;
    int got;
    while ((got = gzread(f, buf, 1 << 16)) > 0) total += got;
    free(buf);
    int errnum = 0;
    gzerror(f, &errnum);
    int bad = got < 0 || (errnum != Z_OK && errnum != Z_STREAM_END);
    gzclose(f);
    return bad ? -1 : total;
}

int64_t vol_numel(const Volume *v)
{
    return v->dim[0] * v->dim[1] * v->dim[2] * v->dim[3];
}

int vol_read(const char *path, Volume *v, char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    struct stat st;
    if (stat(path, &st) != 0) return fail(err, errlen, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(err, errlen, "%s: %s", path, "not a regular file");
    nifti_set_debug_level(0);
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim) return fail(err, errlen, "%s: %s", path, "not a readable NIfTI file (bad or missing header)");
    /* nifti_clib zero-fills a short file: check the size ourselves */
    size_t need = (size_t)nim->iname_offset + nim->nvox * (size_t)nim->nbyper;
    int compressed = nim->iname && strlen(nim->iname) > 3 && strcmp(nim->iname + strlen(nim->iname) - 3, ".gz") == 0;
    struct stat ist;
    int short_file = 0;
    if (nim->iname && compressed) {
        long long len = gz_length(nim->iname);
        short_file = len < 0 || (size_t)len < need;
    } else if (nim->iname)
        short_file = stat(nim->iname, &ist) == 0 && (size_t)ist.st_size < need;
    if (nim->nvox > ((size_t)1 << 33) || short_file || nifti_image_load(nim) != 0) {
        nifti_image_free(nim);
        return fail(err, errlen, "%s: %s", path, "the voxel data is shorter than the header says (truncated file?)");
    }
    if (nim->dim[0] < 1 || nim->dim[0] > 4 || nim->nu > 1 || nim->nv > 1 || nim->nw > 1) {
        nifti_image_free(nim);
        return fail(err, errlen, "%s: %s", path, "only 1 to 4 dimensions are supported");
    }
    if (!supported(nim->datatype)) {
        char why[128];
        snprintf(why, sizeof why, "voxel type %s is not supported", nifti_datatype_string(nim->datatype));
        nifti_image_free(nim);
        return fail(err, errlen, "%s: %s", path, why);
    }
    v->ndim = nim->dim[0];
    v->dim[0] = nim->nx;
    v->dim[1] = nim->ny > 0 ? nim->ny : 1;
    v->dim[2] = nim->nz > 0 ? nim->nz : 1;
    v->dim[3] = nim->nt > 0 ? nim->nt : 1;
    v->spacing[0] = nim->dx;
    v->spacing[1] = nim->dy;
    v->spacing[2] = nim->dz;
    int64_t n = vol_numel(v);
    if (n <= 0 || (size_t)n != nim->nvox) {
        nifti_image_free(nim);
        return fail(err, errlen, "%s: %s", path, "voxel count does not match the dimensions");
    }
    v->data = malloc(sizeof(float) * (size_t)n);
    if (!v->data) {
        nifti_image_free(nim);
        return fail(err, errlen, "%s: %s", path, "out of memory");
    }
    /* NIfTI: a slope of 0 means "no scaling" */
    double slope = nim->scl_slope != 0 && isfinite(nim->scl_slope) ? nim->scl_slope : 1.0;
    double inter = slope != 1.0 || nim->scl_inter != 0 ? (isfinite(nim->scl_inter) ? nim->scl_inter : 0) : 0;
    for (int64_t i = 0; i < n; i++) v->data[i] = (float)(voxel(nim, (size_t)i) * slope + inter);
    free(nim->data);
    nim->data = NULL;
    v->header = nim;
    return 0;
}

void vol_free(Volume *v)
{
    if (!v) return;
    free(v->data);
    if (v->header) nifti_image_free(v->header);
    memset(v, 0, sizeof *v);
}

int vol_write_like(const char *path, const Volume *like, const float *data, int64_t nt, int labels,
                   char *err, size_t errlen)
{
    if (!like->header) return fail(err, errlen, "%s: %s", path, "no reference header");
    size_t plen = strlen(path);
    int gz = plen > 7 && strcmp(path + plen - 7, ".nii.gz") == 0;
    if (!gz && !(plen > 4 && strcmp(path + plen - 4, ".nii") == 0))
        return fail(err, errlen, "%s: %s", path, "the output name must end in .nii or .nii.gz");
    nifti_image *nim = nifti_copy_nim_info(like->header);
    if (!nim) return fail(err, errlen, "%s: %s", path, "out of memory");
    int64_t per = like->dim[0] * like->dim[1] * like->dim[2];
    nim->nt = (int)(nt > 0 ? nt : 1);
    nim->dim[4] = nim->nt;
    nim->dim[0] = nim->nt > 1 ? 4 : (like->ndim > 3 ? 3 : like->ndim);
    nim->ndim = nim->dim[0];
    nim->nvox = (size_t)(per * nim->nt);
    nim->datatype = labels ? NIFTI_TYPE_UINT8 : NIFTI_TYPE_FLOAT32;
    nim->nbyper = labels ? 1 : 4;
    nim->scl_slope = 0;
    nim->scl_inter = 0;
    nim->data = malloc(nim->nvox * (size_t)nim->nbyper);
    if (!nim->data) {
        nifti_image_free(nim);
        return fail(err, errlen, "%s: %s", path, "out of memory");
    }
    for (size_t i = 0; i < nim->nvox; i++) {
        if (labels) {
            float x = roundf(data[i]);
            ((uint8_t *)nim->data)[i] = (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x);
        } else
            ((float *)nim->data)[i] = data[i];
    }
    /* write next to the target, verify, then rename: no half-written output */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%.*s.tmp-%ld%s", (int)(plen - (gz ? 7 : 4)), path, (long)getpid(), gz ? ".nii.gz" : ".nii");
    if (nifti_set_filenames(nim, tmp, 0, 1) != 0) {
        nifti_image_free(nim);
        return fail(err, errlen, "%s: %s", path, "cannot name the output");
    }
    nifti_set_debug_level(0);
    nifti_image_write(nim);
    nifti_image_free(nim);
    nifti_image *back = nifti_image_read(tmp, 0);
    if (!back) {
        remove(tmp);
        return fail(err, errlen, "%s: %s", path, "writing failed (is the folder writable and the disk not full?)");
    }
    nifti_image_free(back);
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return fail(err, errlen, "%s: %s", path, strerror(e));
    }
    return 0;
}
