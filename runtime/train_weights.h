/* train_weights.h — voxel weight maps for training, read from the dataset.
 *
 * When the train block's loss takes a `weightmap` (docs/language.md §7),
 * `netc train` reads one per training case from DATA/weightsTr/CASE + the
 * dataset's file ending (CASE.nii.gz): float (or integer) values >= 0 on
 * the case's image grid.  It is preprocessed like the labels — reoriented
 * to canonical RAS, cropped to the case's nonzero box, resampled linearly
 * to the preprocessed shape — and cut into patches by a second Batcher over
 * the same cases and labels with the same seed and augmentation list, its
 * intensity augmentations (noise, blur, brightness, contrast, lowres,
 * gamma) switched off (p = 0): the Batcher's random streams are per call
 * and per sample (augment.h), so its patches and spatial transforms are
 * those of the images, the map interpolated linearly.  Outside the case
 * the weight is 0 (those padded voxels do not count in the loss). */
#ifndef NETC_TRAIN_WEIGHTS_H
#define NETC_TRAIN_WEIGHTS_H

#include <stddef.h>

#include "dataset.h"

/* Read `path` and bring it onto pp's preprocessed grid (pp->shape floats in
 * *out, malloc'd).  0, or -1 with a message naming the file (unreadable,
 * another grid than the case's image, a negative or non-finite value). */
int tw_load(const char *path, const DsPrepped *pp, float **out, char *err, size_t errlen);

/* Switch off the intensity augmentations of a copy of the augment list
 * (n calls): their p (num[1]) becomes 0. */
void tw_spatial_only(TrainCall *calls, int n);

#endif
