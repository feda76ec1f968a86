/* diag.c — source registry and diagnostics (see diag.h). */
#define _POSIX_C_SOURCE 200809L
#include "diag.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const SrcLoc NO_LOC = { -1, 0, 0, 0, 0 };

void diag_init(Diag *d, FILE *out)
{
    memset(d, 0, sizeof *d);
    d->out = out ? out : stderr;
}

void diag_free(Diag *d)
{
    for (int i = 0; i < d->nfiles; i++) {
        free(d->files[i].path);
        free(d->files[i].text);
        free(d->files[i].line_start);
    }
    free(d->files);
    free(d->seen);
    memset(d, 0, sizeof *d);
}

int diag_add_source(Diag *d, const char *path, const char *text, size_t len)
{
    if (d->nfiles == d->capfiles) {
        d->capfiles = d->capfiles ? 2 * d->capfiles : 8;
        d->files = xrealloc(d->files, (size_t)d->capfiles * sizeof *d->files);
    }
    SourceFile *f = &d->files[d->nfiles];
    f->path = xstrdup(path);
    f->text = xrealloc(NULL, len + 1);
    memcpy(f->text, text, len);
    f->text[len] = '\0';
    f->len = len;
    /* Index line starts. A line ends at \n; a \r before it is not shown. */
    int cap = 64;
    f->line_start = xrealloc(NULL, (size_t)cap * sizeof(size_t));
    f->nlines = 0;
    f->line_start[f->nlines++] = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n') {
            if (f->nlines == cap) {
                cap *= 2;
                f->line_start = xrealloc(f->line_start, (size_t)cap * sizeof(size_t));
            }
            f->line_start[f->nlines++] = i + 1;
        }
    }
    return d->nfiles++;
}

/* Source files larger than this are refused (a .net file is a few KiB). */
#define MAX_SOURCE_BYTES ((size_t)64 << 20)

int diag_load_file(Diag *d, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > MAX_SOURCE_BYTES) {
        int regular = S_ISREG(st.st_mode);
        fclose(fp);
        errno = regular ? EFBIG : EINVAL;
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = xrealloc(NULL, cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len, fp)) > 0) {
        len += got;
        if (len > MAX_SOURCE_BYTES) { free(buf); fclose(fp); errno = EFBIG; return -1; }
        if (len == cap) { cap *= 2; buf = xrealloc(buf, cap); }
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) { free(buf); errno = EIO; return -1; }
    int id = diag_add_source(d, path, buf, len);
    free(buf);
    return id;
}

const char *diag_load_strerror(int err)
{
    if (err == EINVAL) return "not a regular file";
    if (err == EFBIG) return "larger than 64 MiB";
    return strerror(err);
}

const char *diag_where(const Diag *d, SrcLoc loc)
{
    static char bufs[4][512];
    static int next;
    char *b = bufs[next++ & 3];
    if (loc.file < 0 || loc.file >= d->nfiles)
        snprintf(b, 512, "<command line>");
    else
        snprintf(b, 512, "%s:%d:%d", d->files[loc.file].path, loc.line, loc.col);
    return b;
}

/* Print the source line of `loc` and a caret (with ~ under the rest of the
 * range when it stays on the line).  Tabs are copied into the caret line so
 * the caret lands under the right character whatever the tab width. Control
 * characters (NUL, ESC, ...) are shown as '?' so they cannot garble a terminal. */
static void print_excerpt(Diag *d, SrcLoc loc)
{
    if (loc.file < 0 || loc.file >= d->nfiles || loc.line < 1) return;
    SourceFile *f = &d->files[loc.file];
    if (loc.line > f->nlines) return;
    size_t start = f->line_start[loc.line - 1];
    size_t end = start;
    while (end < f->len && f->text[end] != '\n') end++;
    if (end > start && f->text[end - 1] == '\r') end--;
    int col = loc.col < 1 ? 1 : loc.col;
    /* Long lines: show a window of about 160 characters around the column,
     * with "..." where text was left out, and move the caret with it. */
    size_t skip = 0;
    if ((size_t)col > 120 && end - start > 160) skip = (size_t)col - 80;
    if (skip > end - start) skip = end - start;
    size_t shown = end - start - skip;
    if (shown > 160) shown = 160;
    fprintf(d->out, "%5d | %s", loc.line, skip ? "..." : "");
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)f->text[start + skip + i];
        fputc((c < 32 && c != '\t') || c == 127 ? '?' : c, d->out);
    }
    if (start + skip + shown < end) fputs("...", d->out);
    fputs("\n      | ", d->out);
    if (skip) { fputs("   ", d->out); start += skip; col -= (int)skip; if (loc.end_col > 0) loc.end_col -= (int)skip; }
    for (int i = 1; i < col && (size_t)(i - 1) < shown; i++)
        fputc(f->text[start + i - 1] == '\t' ? '\t' : ' ', d->out);
    fputc('^', d->out);
    if (loc.end_line == loc.line && loc.end_col > col) {
        int last = loc.end_col;
        if ((size_t)last > shown) last = (int)shown;
        for (int i = col + 1; i <= last; i++) fputc('~', d->out);
    }
    fputc('\n', d->out);
}

static void emit(Diag *d, const char *kind, SrcLoc loc, const char *fmt, va_list ap)
{
    if (loc.file >= 0 && loc.file < d->nfiles)
        fprintf(d->out, "%s:%d:%d: %s: ", d->files[loc.file].path, loc.line, loc.col, kind);
    else
        fprintf(d->out, "netc: %s: ", kind);
    vfprintf(d->out, fmt, ap);
    fputc('\n', d->out);
    print_excerpt(d, loc);
}

/* The same error at the same place is shown once: a mistake inside a loop
 * body or a block used many times is one message, not one per use. */
static bool already_seen(Diag *d, SrcLoc loc, const char *fmt, va_list ap)
{
    char msg[512];
    va_list cp;
    va_copy(cp, ap);
    vsnprintf(msg, sizeof msg, fmt, cp);
    va_end(cp);
    unsigned long long h = 1469598103934665603ull;
    int where[5] = { loc.file, loc.line, loc.col, loc.end_line, loc.end_col };
    for (int i = 0; i < 5; i++) h = (h ^ (unsigned)where[i]) * 1099511628211ull;
    for (const char *p = msg; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    for (int i = 0; i < d->nseen; i++)
        if (d->seen[i] == h) return true;
    if (d->nseen == d->capseen) {
        d->capseen = d->capseen ? 2 * d->capseen : 64;
        d->seen = xrealloc(d->seen, (size_t)d->capseen * sizeof *d->seen);
    }
    d->seen[d->nseen++] = h;
    return false;
}

void diag_verror(Diag *d, SrcLoc loc, const char *fmt, va_list ap)
{
    d->nraised++;
    if (d->nerrors <= DIAG_MAX_ERRORS && already_seen(d, loc, fmt, ap)) return;
    d->nerrors++;
    if (d->nerrors > DIAG_MAX_ERRORS) {
        if (d->nerrors == DIAG_MAX_ERRORS + 1)
            fprintf(d->out, "netc: too many errors; stopping the list here\n");
        return;
    }
    emit(d, "error", loc, fmt, ap);
}

void diag_error(Diag *d, SrcLoc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_verror(d, loc, fmt, ap);
    va_end(ap);
}

void diag_warning(Diag *d, SrcLoc loc, const char *fmt, ...)
{
    if (d->nerrors > DIAG_MAX_ERRORS) return;
    va_list ap;
    va_start(ap, fmt);
    bool seen = already_seen(d, loc, fmt, ap);
    va_end(ap);
    if (seen) return;
    d->nwarnings++;
    va_start(ap, fmt);
    emit(d, "warning", loc, fmt, ap);
    va_end(ap);
}

void diag_note(Diag *d, SrcLoc loc, const char *fmt, ...)
{
    if (d->nerrors > DIAG_MAX_ERRORS) return;
    va_list ap;
    va_start(ap, fmt);
    emit(d, "note", loc, fmt, ap);
    va_end(ap);
}

/* ---- suggestions ------------------------------------------------------ */

/* Optimal string alignment distance: insertions, deletions, substitutions
 * and swaps of neighbours (bsae -> base) each cost 1. */
const char *suggest_hint(const Suggest *s)
{
    static char bufs[4][160];
    static int next;
    char *b = bufs[next++ & 3];
    const char *best = suggest_result(s);
    if (best) snprintf(b, sizeof bufs[0], "; did you mean `%.120s`?", best);
    else b[0] = 0;
    return b;
}

int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 1000;
    int d[65][65];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best) best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

void suggest_init(Suggest *s, const char *word)
{
    s->word = word;
    s->best = NULL;
    s->best_dist = 1000;
}

void suggest_offer(Suggest *s, const char *candidate)
{
    if (!candidate || !s->word || strcmp(candidate, s->word) == 0) return;
    int dist = edit_distance(s->word, candidate);
    if (dist < s->best_dist) {
        s->best_dist = dist;
        s->best = candidate;
    }
}

const char *suggest_result(const Suggest *s)
{
    if (!s->best) return NULL;
    size_t len = strlen(s->word);
    /* Allow about one edit per three characters (rounded up from 2/3), at
     * least one, at most three: epoks -> epochs, bsae -> base, but not x -> y. */
    int limit = (int)((len + 1) / 3);
    if (limit < 1) limit = 1;
    if (limit > 3) limit = 3;
    return s->best_dist <= limit ? s->best : NULL;
}
