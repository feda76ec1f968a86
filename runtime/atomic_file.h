/* atomic_file.h — writing a whole file so that nothing half-written is
 * ever seen under its name: PATH.tmp-PID, fsync, rename over PATH.  On
 * failure the temporary file is removed and PATH is left as it was.
 * (Checkpoints and NIfTI outputs have their own writers with the same
 * discipline: trainer.c, safetensors.c, nifti_io.c.) */
#ifndef NETC_ATOMIC_FILE_H
#define NETC_ATOMIC_FILE_H

#include <stddef.h>

/* 0, or -1 with a message naming path. */
int atomic_write(const char *path, const void *data, size_t n, char *err, size_t errlen);

#endif
