/* png.h — a minimal PNG writer: 8-bit RGB, one IDAT compressed with zlib
 * (runtime/png.c). */
#ifndef NETC_PNG_H
#define NETC_PNG_H

#include <stddef.h>
#include <stdint.h>

/* Encode an image of h rows of w RGB pixels (rgb: h * w * 3 bytes, rows top
 * to bottom) as a PNG file in memory: *out (malloc'd, freed by the caller)
 * and *outlen.  0, or -1 with a message. */
int png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *outlen, char *err, size_t errlen);

/* Encode and write to path atomically (PATH.tmp-PID, then rename): an
 * existing file is replaced only by a complete new one.  0, or -1. */
int png_write_rgb(const char *path, const uint8_t *rgb, int w, int h, char *err, size_t errlen);

#endif
