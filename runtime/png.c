/* png.c — PNG encoding (ISO/IEC 15948): the 8-byte signature, then chunks
 * of length (big-endian), type, data and a CRC-32 of type + data: IHDR
 * (width, height, bit depth 8, colour type 2 = RGB, no interlace), one IDAT
 * holding the zlib stream of the scanlines (each prefixed by filter type 0,
 * none), and IEND.  zlib gives both the deflate stream (compress2) and the
 * CRC (crc32). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "png.h"
#include "atomic_file.h"

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Append one chunk at *pos of buf (sized by the caller). */
static void put_chunk(uint8_t *buf, size_t *pos, const char type[4], const uint8_t *data, uint32_t len)
{
    uint8_t *p = buf + *pos;
    put32(p, len);
    memcpy(p + 4, type, 4);
    if (len)
        memcpy(p + 8, data, len);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, p + 4, (uInt)(len + 4));
    put32(p + 8 + len, (uint32_t)crc);
    *pos += 12 + (size_t)len;
}

int png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    if (w <= 0 || h <= 0 || w > 1 << 16 || h > 1 << 16) {
        snprintf(err, errlen, "PNG size %dx%d out of range (1..65536)", w, h);
        return -1;
    }
    size_t row = (size_t)w * 3 + 1, raw_len = row * (size_t)h;
    uint8_t *raw = malloc(raw_len);
    uLongf zlen = compressBound((uLong)raw_len);
    uint8_t *z = malloc(zlen);
    if (!raw || !z) {
        free(raw);
        free(z);
        snprintf(err, errlen, "out of memory for a %dx%d PNG", w, h);
        return -1;
    }
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * row] = 0; /* filter: none */
        memcpy(raw + (size_t)y * row + 1, rgb + (size_t)y * (size_t)w * 3, (size_t)w * 3);
    }
    int zr = compress2(z, &zlen, raw, (uLong)raw_len, 6);
    free(raw);
    if (zr != Z_OK || zlen > 0x7fffffffUL) {
        free(z);
        snprintf(err, errlen, "zlib compression failed (%d)", zr);
        return -1;
    }
    static const uint8_t sig[8] = { 137, 'P', 'N', 'G', '\r', '\n', 26, '\n' };
    size_t total = 8 + (12 + 13) + (12 + (size_t)zlen) + 12;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(z);
        snprintf(err, errlen, "out of memory for a %dx%d PNG", w, h);
        return -1;
    }
    memcpy(buf, sig, 8);
    size_t pos = 8;
    uint8_t ihdr[13];
    put32(ihdr, (uint32_t)w);
    put32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 2;  /* colour type: RGB */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* filter method 0 (a filter type byte per row) */
    ihdr[12] = 0; /* no interlace */
    put_chunk(buf, &pos, "IHDR", ihdr, 13);
    put_chunk(buf, &pos, "IDAT", z, (uint32_t)zlen);
    put_chunk(buf, &pos, "IEND", NULL, 0);
    free(z);
    *out = buf;
    *outlen = pos;
    return 0;
}

int png_write_rgb(const char *path, const uint8_t *rgb, int w, int h, char *err, size_t errlen)
{
    uint8_t *png;
    size_t len;
    if (png_encode_rgb(rgb, w, h, &png, &len, err, errlen) != 0)
        return -1;
    int rc = atomic_write(path, png, len, err, errlen);
    free(png);
    return rc;
}
