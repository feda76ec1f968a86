/* nifti_io.h — NIfTI-1 volumes in and out (nifti_clib), as float arrays.
 *
 * The minimum the reference executor's `netc run` needs: read any common
 * voxel type with scl_slope/scl_inter applied, keep the header so an output
 * can be written on the same grid (same affine, so it overlays the input in
 * any viewer), and write without ever leaving a half-written file.
 * Reorientation, resampling and multi-file cases are the data pipeline's job
 * (runtime issue). Voxel order is NIfTI's: x fastest, then y, then z.
 */
#ifndef NETC_NIFTI_IO_H
#define NETC_NIFTI_IO_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int ndim;              /* 1..4 as stored */
    int64_t dim[4];        /* nx, ny, nz, nt (1 where absent) */
    double spacing[3];     /* mm */
    float *data;           /* nx*ny*nz*nt floats, slope/intercept applied */
    void *header;          /* the nifti_image (without data) to write alike */
} Volume;

/* Read a .nii or .nii.gz file. 0 on success; -1 and a message naming the
 * file otherwise (never exits, never crashes on a malformed file). */
int vol_read(const char *path, Volume *v, char *err, size_t errlen);
void vol_free(Volume *v);
int64_t vol_numel(const Volume *v);

/* Write `data` (numel = like's voxel count × nt) on `like`'s grid and
 * affine: as float32, or as uint8 labels when `labels` (values rounded and
 * clamped to 0..255).  Written to PATH.tmp-PID first, checked by reading its
 * header back, then renamed over PATH. */
int vol_write_like(const char *path, const Volume *like, const float *data, int64_t nt, int labels,
                   char *err, size_t errlen);

#endif
