/* util.h — allocation that cannot fail (netc exits with status 70 and a
 * message when memory runs out) and a growable-array helper. */
#ifndef NETC_UTIL_H
#define NETC_UTIL_H

#include <stddef.h>

_Noreturn void die_out_of_memory(void);
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Make room for one more element in a (pointer, count, capacity) array. */
#define GROW(arr, n, cap)                                                   \
    do {                                                                    \
        if ((n) == (cap)) {                                                 \
            (cap) = (cap) ? 2 * (cap) : 8;                                  \
            (arr) = xrealloc((arr), (size_t)(cap) * sizeof *(arr));         \
        }                                                                   \
    } while (0)

#endif
