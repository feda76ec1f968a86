/* postproc.c — keep the largest connected component of a label map.
 *
 * One scan over the volume in voxel order (x fastest, then y, then z).  At
 * every foreground voxel not yet visited an iterative flood fill (explicit
 * stack of voxel indices, no recursion: volumes can be 256^3 and more)
 * visits its whole component and counts it.  A component is the set of
 * voxels connected through 6 (faces) or 26 (faces, edges, corners)
 * neighbours that are foreground (per_class == 0: any label > 0) or carry
 * the same label (per_class != 0).  For each class (or for the one
 * foreground mask) the largest component is remembered by its first voxel;
 * ties keep the component found first in voxel order (the one whose lowest
 * voxel index is smallest).  A second flood fill from each remembered seed
 * marks the voxels to keep; every other foreground voxel becomes 0.
 *
 * Memory: one byte per voxel (visited / kept marks) and a stack of 32-bit
 * indices of at most one entry per voxel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postproc.h"

enum { MARK_NONE = 0, MARK_SEEN = 1, MARK_KEEP = 2 };

typedef struct {
    const uint8_t *lab;
    uint8_t *mark;
    uint32_t *stack;
    int64_t nx, ny, nz;
    int per_class;
    int noff;
    int off[26][3];  /* dz, dy, dx */
} Flood;

static int same_region(const Flood *f, uint8_t a, uint8_t b)
{
    return f->per_class ? a == b : (a > 0 && b > 0);
}

/* Flood from `seed`, turning marks equal to `from` into `to`; the number of
 * voxels visited. */
static int64_t flood(Flood *f, int64_t seed, uint8_t from, uint8_t to)
{
    int64_t top = 0, count = 0;
    uint8_t v = f->lab[seed];
    f->mark[seed] = to;
    f->stack[top++] = (uint32_t)seed;
    while (top > 0) {
        int64_t i = f->stack[--top];
        count++;
        int64_t x = i % f->nx, y = (i / f->nx) % f->ny, z = i / (f->nx * f->ny);
        for (int k = 0; k < f->noff; k++) {
            int64_t zz = z + f->off[k][0], yy = y + f->off[k][1], xx = x + f->off[k][2];
            if (zz < 0 || yy < 0 || xx < 0 || zz >= f->nz || yy >= f->ny || xx >= f->nx)
                continue;
            int64_t j = (zz * f->ny + yy) * f->nx + xx;
            if (f->mark[j] != from || !same_region(f, v, f->lab[j]))
                continue;
            f->mark[j] = to;
            f->stack[top++] = (uint32_t)j;
        }
    }
    return count;
}

int pp_keep_largest(uint8_t *labels, const int64_t shape[3], int per_class, int connectivity,
                    char *err, size_t errlen)
{
    if (connectivity != 6 && connectivity != 26) {
        snprintf(err, errlen, "connectivity must be 6 or 26, not %d", connectivity);
        return -1;
    }
    if (shape[0] < 0 || shape[1] < 0 || shape[2] < 0) {
        snprintf(err, errlen, "bad shape (%lld, %lld, %lld)", (long long)shape[0], (long long)shape[1],
                 (long long)shape[2]);
        return -1;
    }
    int64_t n = shape[0] * shape[1] * shape[2];
    if (n == 0)
        return 0;
    if (n > (int64_t)UINT32_MAX) {
        snprintf(err, errlen, "volume of %lld voxels is too large for connected components", (long long)n);
        return -1;
    }
    Flood f = { .lab = labels, .nz = shape[0], .ny = shape[1], .nx = shape[2], .per_class = per_class };
    for (int dz = -1; dz <= 1; dz++)
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int nnz = (dz != 0) + (dy != 0) + (dx != 0);
                if (nnz == 0 || (connectivity == 6 && nnz != 1))
                    continue;
                f.off[f.noff][0] = dz;
                f.off[f.noff][1] = dy;
                f.off[f.noff][2] = dx;
                f.noff++;
            }
    f.mark = calloc((size_t)n, 1);
    f.stack = malloc(sizeof(uint32_t) * (size_t)n);
    if (!f.mark || !f.stack) {
        free(f.mark);
        free(f.stack);
        snprintf(err, errlen, "out of memory for connected components of %lld voxels", (long long)n);
        return -1;
    }
    /* best[c]: size and seed of the largest component of class c (per_class)
     * or, in best[1], of the foreground. */
    int64_t best_size[256] = { 0 }, best_seed[256];
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] == 0 || f.mark[i] != MARK_NONE)
            continue;
        int c = per_class ? labels[i] : 1;
        int64_t size = flood(&f, i, MARK_NONE, MARK_SEEN);
        if (size > best_size[c]) { /* strict: ties keep the first found */
            best_size[c] = size;
            best_seed[c] = i;
        }
    }
    for (int c = 1; c < 256; c++)
        if (best_size[c] > 0)
            flood(&f, best_seed[c], MARK_SEEN, MARK_KEEP);
    for (int64_t i = 0; i < n; i++)
        if (labels[i] != 0 && f.mark[i] != MARK_KEEP)
            labels[i] = 0;
    free(f.mark);
    free(f.stack);
    return 0;
}
