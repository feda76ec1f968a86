/* test_golden.c — the malformed-input corpus and the fuzz regressions.
 *
 * tests/diagnostics/NAME.net is compiled as `netc check` would (options from
 * a first line `# args: ...`); everything the compiler prints must equal
 * tests/diagnostics/NAME.err byte for byte, must include at least one error,
 * and every error must carry a file:line:col location.  After a deliberate
 * change of wording, regenerate with  NETC_UPDATE_GOLDEN=1 make test  and
 * review the diff.
 *
 * tests/fuzz/regressions/ holds inputs that once crashed or hung the front
 * end; each is compiled for every net/protocol pair, inference and training,
 * like the fuzzer does.  Under `make test-asan` this is the real check.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

static int list_dir(const char *dir, const char *suffix, char ***out)
{
    DIR *d = opendir(dir);
    int n = 0, cap = 16;
    char **names = malloc(sizeof(char *) * (size_t)cap);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name), sl = strlen(suffix);
            if (e->d_name[0] == '.' || l < sl || strcmp(e->d_name + l - sl, suffix) != 0) continue;
            if (n == cap) { cap *= 2; names = realloc(names, sizeof(char *) * (size_t)cap); }
            names[n++] = strdup(e->d_name);
        }
        closedir(d);
    }
    /* stable order */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j]; names[j] = names[j - 1]; names[j - 1] = t;
        }
    *out = names;
    return n;
}

static char *args_of(const char *text)
{
    const char *p = strncmp(text, "# args:", 7) == 0 ? text + 7 : NULL;
    if (!p) return strdup("");
    size_t n = strcspn(p, "\r\n");
    return strndup(p, n);
}

/* Every line "X: error: ..." must start with a location or be a command-level
 * message ("netc: error: ..." is used only for -D and choice errors). */
static void check_located(const char *msgs, const char *file)
{
    const char *line = msgs;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *err = strstr(line, ": error: ");
        if (err && (size_t)(err - line) < len && strncmp(line, "netc:", 5) != 0) {
            /* path:LINE:COL */
            const char *c2 = err;
            int colons = 0;
            for (const char *q = line; q < c2; q++) colons += *q == ':';
            ck_assert_msg(colons >= 2, "%s: error without file:line:col: %.*s", file, (int)len, line);
        }
        line = end ? end + 1 : line + len;
    }
}

START_TEST(golden_diagnostics)
{
    char **names;
    int n = list_dir("tests/diagnostics", ".net", &names);
    ck_assert_msg(n >= 20, "expected a corpus of malformed files in tests/diagnostics, found %d", n);
    bool update = getenv("NETC_UPDATE_GOLDEN") != NULL;
    int failures = 0;
    for (int i = 0; i < n; i++) {
        char path[512], gold[512];
        snprintf(path, sizeof path, "tests/diagnostics/%s", names[i]);
        snprintf(gold, sizeof gold, "tests/diagnostics/%.*s.err", (int)(strlen(names[i]) - 4), names[i]);
        char *text = read_file(path, NULL);
        ck_assert_msg(text != NULL, "cannot read %s", path);
        char *args = args_of(text);
        Compiled *c = compile_file(path, args);
        const char *msgs = compiled_messages(c);
        ck_assert_msg(compiled_errors(c) > 0, "%s: expected errors, got none", path);
        check_located(msgs, path);
        if (update) {
            FILE *f = fopen(gold, "w");
            ck_assert_msg(f != NULL, "cannot write %s", gold);
            fputs(msgs, f);
            fclose(f);
        } else {
            char *want = read_file(gold, NULL);
            if (!want || strcmp(want, msgs) != 0) {
                fprintf(stderr, "golden mismatch for %s\n--- expected (%s)\n%s--- got\n%s---\n", path, gold,
                        want ? want : "(missing)\n", msgs);
                failures++;
            }
            free(want);
        }
        compiled_free(c);
        free(args);
        free(text);
        free(names[i]);
    }
    free(names);
    ck_assert_msg(failures == 0, "%d golden diagnostic file(s) differ (NETC_UPDATE_GOLDEN=1 regenerates)", failures);
}
END_TEST

START_TEST(fuzz_regressions)
{
    char **names;
    int n = list_dir("tests/fuzz/regressions", "", &names);
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "tests/fuzz/regressions/%s", names[i]);
        size_t len;
        char *text = read_file(path, &len);
        ck_assert(text != NULL);
        FILE *sink = fopen("/dev/null", "w");
        Diag d;
        diag_init(&d, sink);
        Program *p = program_from_text(&d, path, text, len);
        for (int a = 0; a < p->nets.n && a < 2; a++)
            for (int b = 0; b < p->protocols.n && b < 2; b++)
                for (int t = 0; t < 2; t++) {
                    CompileOptions o = { .net = p->nets.items[a].name, .protocol = p->protocols.items[b].name,
                                         .train = t };
                    Graph *g = netc_compile(p, &o);
                    if (g) graph_print_json(g, sink);
                    graph_free(g);
                }
        program_free(p);
        diag_free(&d);
        fclose(sink);
        free(text);
        free(names[i]);
    }
    free(names);
}
END_TEST

Suite *golden_suite(void)
{
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("corpus");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, golden_diagnostics);
    tcase_add_test(tc, fuzz_regressions);
    suite_add_tcase(s, tc);
    return s;
}
