/* infer_ref.h — whole-volume inference with the reference executor: the
 * engine behind `netc run --backend ref` and `netc init`.
 *
 * The input must already have the protocol's patch size (sliding-window
 * inference over larger scans comes with the runtime).  Axis order: NIfTI
 * stores x fastest; a tensor's last spatial axis is the fastest, so a 3D
 * protocol `size D x H x W` is `nz x ny x nx`, the order nnU-Net uses. */
#ifndef NETC_INFER_REF_H
#define NETC_INFER_REF_H

#include <stdbool.h>
#include <stdint.h>
#include "sema.h"

typedef struct {
    const char *weights;      /* safetensors file, or NULL: initialise with `seed` */
    const char *mapping;      /* optional name-mapping file for the weights */
    const char *const *inputs; int ninputs;   /* one file per channel, or one 4D file */
    const char *output;       /* labels (uint8) or probabilities (float, 4D) */
    bool probabilities;
    uint64_t seed;
    const char *backend;      /* "ref" (NULL), or generated code: "c", "llvm" (exec.h) */
} RefRunOptions;

/* Read, normalise as the protocol says, run the graph's forward pass, and
 * write the first output as labels (argmax) or probabilities (softmax).
 * 0, or -1 with a message in err. */
int infer_ref_run(const Graph *g, const Protocol *pr, const RefRunOptions *o, char *err, size_t errlen);

/* Initialise every parameter with its init rule from `seed` and save them
 * (safetensors, graph names).  0 or -1 with a message. */
int infer_ref_init(const Graph *g, uint64_t seed, const char *path, char *err, size_t errlen);

#endif
