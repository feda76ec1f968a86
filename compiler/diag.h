/* diag.h — sources and diagnostics.
 *
 * Every file the compiler reads (the main .net file, its imports, and the
 * pseudo-files made from command-line -D values) is registered here once and
 * kept in memory, so any later stage can quote the offending line under its
 * message:
 *
 *     unet2d.net:14:21: error: concat of 64x32x32 and 64x31x31: spatial sizes differ
 *        14 |         x = stage(base << i)(concat(skip[i], x))
 *           |                              ^~~~~~
 *
 * Errors never stop the compiler by themselves: every stage reports and goes
 * on, so one run shows all the mistakes in a file.  After DIAG_MAX_ERRORS the
 * rest are counted but not printed.
 */
#ifndef NETC_DIAG_H
#define NETC_DIAG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define DIAG_MAX_ERRORS 50

typedef struct {
    int file;            /* index into Diag.files, -1 for "no location" */
    int line, col;       /* 1-based */
    int end_line, end_col; /* inclusive end of the range, for the ~~~ underline */
} SrcLoc;

typedef struct {
    char *path;          /* as given / resolved */
    char *text;          /* whole file, NUL-terminated (embedded NULs kept, see len) */
    size_t len;
    int nlines;
    size_t *line_start;  /* byte offset of each line */
} SourceFile;

typedef struct Diag {
    SourceFile *files;
    int nfiles, capfiles;
    int nerrors, nwarnings;
    int nraised;         /* every error raised, including repeats not shown again:
                            "did an error happen in this step?" compares this */
    FILE *out;           /* where messages go (stderr by default; tests capture) */
    unsigned long long *seen; int nseen, capseen;   /* errors already shown */
    bool color;
} Diag;

void diag_init(Diag *d, FILE *out);
void diag_free(Diag *d);

/* Register a file's contents (copied). Returns the file index. */
int diag_add_source(Diag *d, const char *path, const char *text, size_t len);
/* Read a file from disk and register it; returns -1 (and sets errno) on failure. */
int diag_load_file(Diag *d, const char *path);
/* Why diag_load_file failed, from its errno, in words. */
const char *diag_load_strerror(int err);

void diag_error(Diag *d, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_warning(Diag *d, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_note(Diag *d, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_verror(Diag *d, SrcLoc loc, const char *fmt, va_list ap);

/* "file:line:col" for use inside a message (static buffer rotation of 4). */
const char *diag_where(const Diag *d, SrcLoc loc);

extern const SrcLoc NO_LOC;

/* Suggestions: the candidate closest to `word` by edit distance, or NULL when
 * none is close enough to be a plausible typo. */
typedef struct {
    const char *word;
    const char *best;
    int best_dist;
} Suggest;
void suggest_init(Suggest *s, const char *word);
void suggest_offer(Suggest *s, const char *candidate);
const char *suggest_result(const Suggest *s);
/* "; did you mean `best`?" or "" — to end a message with (4 rotating buffers). */
const char *suggest_hint(const Suggest *s);
int edit_distance(const char *a, const char *b);

#endif
