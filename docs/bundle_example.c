/* bundle_example.c — one window through a netc bundle (docs/build.md).
 *   netc build netdefs/unet2d.net -D base=4 -D depth=2 -D protocol.size=32x32 --weights w.safetensors --bundle out
 *   cc -O2 -Iout docs/bundle_example.c out/unet2d.o -lm -o example
 *   ./example out/unet2d.weights image.f32 labels.u8
 * image.f32: the raw scan window (UNET2D_INPUT_FLOATS float32, x fastest);
 * labels.u8: one label byte per voxel. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "unet2d.h"

static int load(const char *path, void *buf, size_t bytes)
{
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(buf, 1, bytes, f) : 0;
    int extra = f ? fgetc(f) != EOF : 0;   /* the file must be exactly this size */
    if (f) fclose(f);
    return got == bytes && !extra ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: %s NET.weights IMAGE.f32 LABELS.u8\n", argv[0]); return 2; }
    void *arena = aligned_alloc(UNET2D_ALIGN, UNET2D_ARENA_BYTES);
    void *weights = aligned_alloc(UNET2D_ALIGN, (UNET2D_WEIGHTS_BYTES + 63) / 64 * 64);
    static float x[UNET2D_INPUT_FLOATS], y[UNET2D_OUTPUT_FLOATS];
    static unsigned char labels[UNET2D_WINDOW_VOXELS];
    int rc = 1;
    if (!arena || !weights || load(argv[1], weights, UNET2D_WEIGHTS_BYTES) || load(argv[2], x, sizeof x)) {
        fprintf(stderr, "cannot read %s or %s (or a size is wrong)\n", argv[1], argv[2]);
    } else {
        double sum = 0, sq = 0, n = UNET2D_INPUT_FLOATS;   /* the protocol's `normalize zscore` */
        for (int i = 0; i < UNET2D_INPUT_FLOATS; i++) sum += x[i], sq += (double)x[i] * x[i];
        double mean = sum / n, var = sq / n - mean * mean, sd = sqrt(var > 0 ? var : 0);
        for (int i = 0; i < UNET2D_INPUT_FLOATS; i++) x[i] = (float)((x[i] - mean) / (sd < 1e-8 ? 1e-8 : sd));
        if (unet2d_run(arena, weights, x, y) == 0) {
            const int W = UNET2D_WINDOW_VOXELS;
            for (int v = 0; v < W; v++)   /* the label: argmax over the classes */
                for (int c = 1; c < UNET2D_CLASSES; c++)
                    if (y[c * W + v] > y[labels[v] * W + v]) labels[v] = (unsigned char)c;
            FILE *f = fopen(argv[3], "wb");
            rc = !f || fwrite(labels, 1, sizeof labels, f) != sizeof labels;
            if (f && fclose(f) != 0) rc = 1;
            if (rc) fprintf(stderr, "cannot write %s\n", argv[3]);
        }
    }
    free(arena);
    free(weights);
    return rc;
}
