/* support.h — helpers shared by the unit tests: run the front end on a text
 * or a file, with command-line style options, and capture its messages. */
#ifndef NETC_TEST_SUPPORT_H
#define NETC_TEST_SUPPORT_H

#include <check.h>
#include "driver.h"

typedef struct {
    Diag d;
    char *buf;
    size_t len;
    FILE *f;
    Program *p;
    Graph *g;
    Override ov[16];
    int nov;
} Compiled;

/* Compile `text` (named `name` in messages) as `netc check` would, with
 * `args` such as "--protocol p --net n --train -D base=16" (may be NULL). */
Compiled *compile_text(const char *name, const char *text, const char *args);
/* Compile a file on disk (paths relative to the source tree). */
Compiled *compile_file(const char *path, const char *args);
const char *compiled_messages(Compiled *c);
int compiled_errors(const Compiled *c);
void compiled_free(Compiled *c);
/* The node or parameter with this exact name, or NULL / -1. */
const Node *find_node(const Graph *g, const char *name);
int find_param(const Graph *g, const char *name);
/* Read a whole file (NUL-terminated, *len set); NULL if unreadable. */
char *read_file(const char *path, size_t *len);

#define ck_msg(c, sub) ck_assert_msg(strstr(compiled_messages(c), (sub)) != NULL, \
                                     "expected \"%s\" in:\n%s", (sub), compiled_messages(c))
#define ck_clean(c) ck_assert_msg(compiled_errors(c) == 0 && (c)->g != NULL, \
                                  "expected no errors, got:\n%s", compiled_messages(c))

Suite *ops_suite(void);
Suite *ops_more_suite(void);
Suite *frontend_suite(void);
Suite *expand_suite(void);
Suite *netdefs_suite(void);
Suite *golden_suite(void);
Suite *nifti_suite(void);
Suite *autodiff_suite(void);
Suite *ref_suite(void);
Suite *ref_grad_suite(void);
Suite *safetensors_suite(void);
Suite *fuse_suite(void);
Suite *memplan_suite(void);
Suite *codegen_suite(void);
Suite *trainer_suite(void);
Suite *augment_suite(void);
Suite *llvm_suite(void);
Suite *cuda_suite(void);
Suite *pool_suite(void);
Suite *dataset_suite(void);
Suite *infer_suite(void);
Suite *plan_suite(void);
Suite *metrics_suite(void);
Suite *overlay_suite(void);
Suite *build_suite(void);

#endif
