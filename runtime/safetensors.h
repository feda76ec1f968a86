/* safetensors.h — reading and writing weights in Hugging Face's safetensors
 * format, and exchanging a graph's parameters through it.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON (an
 * object mapping tensor name -> {"dtype", "shape", "data_offsets"} plus an
 * optional "__metadata__" object of string -> string), then the raw
 * little-endian tensor data; offsets are relative to the first data byte.
 *
 * The reader enforces the reference implementation's rules (header at most
 * 100 MB and inside the file, a JSON object, every entry complete, offsets in
 * range, sizes equal to numel x dtype size, regions neither overlapping nor
 * leaving gaps, no duplicate names) and never crashes on bad input: every
 * problem gives NULL and a message naming the file and, where there is one,
 * the tensor.  Tensor data are assumed to be read on a little-endian host.
 */
#ifndef NETC_SAFETENSORS_H
#define NETC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "graph.h"

#define ST_MAX_RANK 8
#define ST_MAX_HEADER (100u * 1000u * 1000u)   /* the reference reader's limit */

typedef struct {
    char *name;
    char dtype[8];              /* "F32", "F16", "BF16", "F64", "I64", "U8", ... */
    int rank;
    int64_t shape[ST_MAX_RANK];
    size_t offset, nbytes;      /* within StFile.data */
} StEntry;

typedef struct {
    char *path;
    StEntry *entries;           /* in header order */
    int n;
    unsigned char *data;        /* the data section (not necessarily aligned) */
    size_t data_size;
    char **meta_keys, **meta_vals;
    int nmeta;
    unsigned char *buf_;        /* private: the whole file */
} StFile;

/* A tensor to write.  dtype NULL means "F32"; data holds numel x dtype-size
 * bytes, little-endian. */
typedef struct {
    const char *name;
    const char *dtype;
    int rank;
    int64_t shape[ST_MAX_RANK];
    const void *data;
} StTensor;

/* Bytes per element of a dtype name, 0 if unknown. */
size_t st_dtype_size(const char *dtype);

/* Read and validate a whole file.  NULL and a message in err on any problem. */
StFile *st_read(const char *path, char *err, size_t errlen);
void st_free(StFile *f);
const StEntry *st_find(const StFile *f, const char *name);
/* The value of a metadata key, or NULL. */
const char *st_meta(const StFile *f, const char *key);
/* Convert entry e (F32, F16, BF16 or F64) to floats; out holds numel floats.
 * Returns 0, or -1 for another dtype. */
int st_to_float(const StFile *f, const StEntry *e, float *out);

/* Write n tensors and nmeta metadata pairs (keys/vals may be NULL when nmeta
 * is 0) as the reference writer does: tensors sorted by alignment then name,
 * header padded with spaces to a multiple of 8.  The file is written to
 * PATH.tmp.PID, synced and renamed, so an existing file is never left half
 * overwritten.  Returns 0, or -1 with a message. */
int st_write(const char *path, const StTensor *t, int n,
             const char *const *meta_keys, const char *const *meta_vals, int nmeta,
             char *err, size_t errlen);

/* Every parameter and buffer of g, as F32, under its graph name;
 * param_data[i] holds g->params[i]'s values.  Metadata records the net. */
int st_save_params(const char *path, const Graph *g, const float *const *param_data,
                   char *err, size_t errlen);

/* Fill param_data[i] (numel floats each, allocated by the caller) for every
 * parameter and buffer of g from f.  mapping_path (may be NULL) names a file
 * of lines `their_name our_name` ('#' starts a comment) renaming file tensors
 * to graph names; other tensors are matched by their own names.  Every
 * missing, extra, mis-shaped or mistyped tensor is listed in the message (up
 * to 20 lines); nothing is copied unless all match.  F16, BF16 and F64 are
 * converted; PyTorch's `*.num_batches_tracked` buffers are ignored.
 * Returns 0, or -1 with a message. */
int st_load_params(const StFile *f, const Graph *g, float **param_data,
                   const char *mapping_path, char *err, size_t errlen);

#endif
