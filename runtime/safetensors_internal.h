/* safetensors_internal.h — helpers shared by safetensors.c (the format)
 * and safetensors_graph.c (graphs' parameters). */
#ifndef NETC_SAFETENSORS_INTERNAL_H
#define NETC_SAFETENSORS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growing text buffer (oom set instead of failing). */
typedef struct { char *s; size_t n, cap; bool oom; } StBuf;
void st_bput(StBuf *b, const char *s, size_t n);
void st_bputs(StBuf *b, const char *s);

/* Format a message into err (when err is not NULL). */
void st_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "[16, 1, 3, 3]" */
const char *st_fmt_shape(char *buf, size_t n, int rank, const int64_t *d);

#endif
