/* infer_ref.c — see infer_ref.h. */
#define _POSIX_C_SOURCE 200809L
#include "infer_ref.h"
#include "dataset.h"
#include "exec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nifti_io.h"
#include "ref.h"
#include "safetensors.h"

/* Spatial size of a volume in tensor order (D, H, W) = (nz, ny, nx). */
static bool same_grid(const Volume *v, const Protocol *pr, char *err, size_t errlen, const char *path)
{
    int64_t want[3] = { 1, 1, 1 }, got[3];
    for (int k = 0; k < pr->rank; k++) want[3 - pr->rank + k] = pr->patch[k];
    got[0] = v->dim[2]; got[1] = v->dim[1]; got[2] = v->dim[0];
    if (memcmp(want, got, sizeof want) == 0) return true;
    snprintf(err, errlen, "%s: the volume is %lld x %lld x %lld (z x y x x) but protocol %s is compiled for %lld x %lld x %lld; "
             "resample or crop it to that size (sliding-window inference comes with the runtime)", path,
             (long long)got[0], (long long)got[1], (long long)got[2], pr->name, (long long)want[0], (long long)want[1],
             (long long)want[2]);
    return false;
}

static int load_weights(const Graph *g, RefState *s, const RefRunOptions *o, char *err, size_t errlen)
{
    if (!o->weights) {
        ref_init_params(g, s, o->seed);
        return 0;
    }
    StFile *f = st_read(o->weights, err, errlen);
    if (!f) return -1;
    float **pd = calloc((size_t)g->nparams + 1, sizeof *pd);
    if (!pd) { st_free(f); snprintf(err, errlen, "out of memory"); return -1; }
    for (int i = 0; i < g->nparams; i++) pd[i] = s->buf[g->params[i].tensor];
    int rc = st_load_params(f, g, pd, o->mapping, err, errlen);
    free(pd);
    st_free(f);
    return rc;
}

int infer_ref_run(const Graph *g, const Protocol *pr, const RefRunOptions *o, char *err, size_t errlen)
{
    if (g->ninputs < 1 || g->noutputs < 1) { snprintf(err, errlen, "the net has no input or output"); return -1; }
    if (g->tensors[g->inputs[0].tensor].shape.d[0] != 1) {
        snprintf(err, errlen, "run one volume at a time: protocol %s has batch %lld", pr->name,
                 (long long)g->tensors[g->inputs[0].tensor].shape.d[0]);
        return -1;
    }
    RefState *s = ref_new(g);
    if (!s) { snprintf(err, errlen, "out of memory"); return -1; }
    int rc = -1;
    Volume first = { 0 };
    float *out = NULL;
    if (load_weights(g, s, o, err, errlen) != 0) goto done;

    /* Channels: one file per channel in protocol order, or one 4D file. */
    int channel = 0;
    for (int i = 0; i < o->ninputs; i++) {
        Volume v;
        if (vol_read(o->inputs[i], &v, err, errlen) != 0) goto done;
        if (!same_grid(&v, pr, err, errlen, o->inputs[i])) { vol_free(&v); goto done; }
        int64_t per = v.dim[0] * v.dim[1] * v.dim[2];
        for (int64_t c = 0; c < v.dim[3]; c++, channel++) {
            if (channel >= pr->nchannels) {
                snprintf(err, errlen, "%s: more channels than protocol %s has (%d)", o->inputs[i], pr->name, pr->nchannels);
                vol_free(&v);
                goto done;
            }
            /* one input takes all channels; several take one each, by name */
            int input = 0;
            if (g->ninputs > 1)
                for (int k = 0; k < g->ninputs; k++)
                    if (strcmp(g->inputs[k].name, pr->channels[channel]) == 0) input = k;
            int64_t offset = g->ninputs > 1 ? 0 : (int64_t)channel * per;
            float *dst = s->buf[g->inputs[input].tensor] + offset;
            memcpy(dst, v.data + c * per, sizeof(float) * (size_t)per);
            if (pr->norm.kind == NORM_CT) {
                snprintf(err, errlen, "`normalize ct` needs the dataset's intensity statistics, which `netc run` does not "
                         "have: use `netc infer` with weights from `netc train` (they carry them), or clip(lo .. hi)");
                vol_free(&v);
                goto done;
            }
            if (ds_normalize(dst, per, NULL, &pr->norm, NULL, err, errlen) != 0) { vol_free(&v); goto done; }
        }
        if (i == 0) first = v;
        else vol_free(&v);
    }
    if (channel != pr->nchannels) {
        snprintf(err, errlen, "protocol %s needs %d channel(s) (%s...), the input gave %d", pr->name, pr->nchannels,
                 pr->channels[0], channel);
        goto done;
    }
    if (!o->backend || strcmp(o->backend, "ref") == 0) {
        if (ref_forward(g, s, false, o->seed, err, errlen) != 0) goto done;
    } else {
        NetcExec *x = exec_new(g, false, o->backend, err, errlen);
        if (!x) goto done;
        int r = exec_run(x, s, err, errlen);
        exec_free(x);
        if (r != 0) goto done;
    }

    const Tensor *lt = &g->tensors[g->outputs[0].tensor];
    int64_t C = lt->shape.d[1], per = shape_numel(&lt->shape) / C;
    if (per != first.dim[0] * first.dim[1] * first.dim[2]) {
        snprintf(err, errlen, "output `%s` is not on the input grid (valid convolutions?); writing it is not supported yet",
                 g->outputs[0].name);
        goto done;
    }
    const float *logits = s->buf[g->outputs[0].tensor];
    out = malloc(sizeof(float) * (size_t)(per * (o->probabilities ? C : 1)));
    if (!out) { snprintf(err, errlen, "out of memory"); goto done; }
    for (int64_t i = 0; i < per; i++) {
        double mx = -INFINITY, sum = 0;
        int64_t best = 0;
        for (int64_t c = 0; c < C; c++)
            if (logits[c * per + i] > mx) { mx = logits[c * per + i]; best = c; }
        if (C == 1) best = logits[i] > 0;   /* a sigmoid head */
        if (!o->probabilities) { out[i] = (float)best; continue; }
        for (int64_t c = 0; c < C; c++) sum += exp(logits[c * per + i] - mx);
        for (int64_t c = 0; c < C; c++)
            out[c * per + i] = C == 1 ? (float)(1 / (1 + exp(-logits[i]))) : (float)(exp(logits[c * per + i] - mx) / sum);
    }
    rc = vol_write_like(o->output, &first, out, o->probabilities ? C : 1, !o->probabilities, err, errlen);
done:
    free(out);
    vol_free(&first);
    ref_free(s);
    return rc;
}

int infer_ref_init(const Graph *g, uint64_t seed, const char *path, char *err, size_t errlen)
{
    RefState *s = ref_new(g);
    if (!s) { snprintf(err, errlen, "out of memory"); return -1; }
    ref_init_params(g, s, seed);
    const float **pd = calloc((size_t)g->nparams + 1, sizeof *pd);
    if (!pd) { ref_free(s); snprintf(err, errlen, "out of memory"); return -1; }
    for (int i = 0; i < g->nparams; i++) pd[i] = s->buf[g->params[i].tensor];
    int rc = st_save_params(path, g, pd, err, errlen);
    free(pd);
    ref_free(s);
    return rc;
}
