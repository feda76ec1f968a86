/* postproc.h — post-processing of label maps (runtime/postproc.c).
 * Volumes are [z][y][x], x fastest; shapes are (z, y, x). */
#ifndef NETC_POSTPROC_H
#define NETC_POSTPROC_H

#include <stddef.h>
#include <stdint.h>

/* Keep the largest connected component: of all foreground (labels > 0
 * treated as one mask; voxels outside it set to 0) when per_class == 0, or
 * of each class separately when per_class != 0.  connectivity 6 (faces) or
 * 26 (faces, edges, corners).  0, or -1 with a message (bad connectivity,
 * out of memory). */
int pp_keep_largest(uint8_t *labels, const int64_t shape[3], int per_class, int connectivity,
                    char *err, size_t errlen);

#endif
