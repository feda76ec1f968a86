/* test_main.c — runs every Check suite.  Tests run from the source tree
 * root, so paths such as netdefs/unet2d.net work from any build folder. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "support.h"

Suite *codegen_dropout_suite(void);   /* tests/test_codegen_dropout.c */

#ifndef NETC_SOURCE_DIR
#define NETC_SOURCE_DIR "."
#endif

int main(void)
{
    if (chdir(NETC_SOURCE_DIR) != 0) {
        perror("chdir " NETC_SOURCE_DIR);
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(ops_suite());
    srunner_add_suite(sr, ops_more_suite());
    srunner_add_suite(sr, frontend_suite());
    srunner_add_suite(sr, expand_suite());
    srunner_add_suite(sr, netdefs_suite());
    srunner_add_suite(sr, golden_suite());
    srunner_add_suite(sr, ref_suite());
    srunner_add_suite(sr, ref_grad_suite());
    srunner_add_suite(sr, safetensors_suite());
    srunner_add_suite(sr, nifti_suite());
    srunner_add_suite(sr, autodiff_suite());
    srunner_add_suite(sr, fuse_suite());
    srunner_add_suite(sr, memplan_suite());
    srunner_add_suite(sr, codegen_suite());
    srunner_add_suite(sr, codegen_dropout_suite());
    srunner_add_suite(sr, trainer_suite());
    srunner_add_suite(sr, augment_suite());
    srunner_add_suite(sr, llvm_suite());
    srunner_add_suite(sr, cuda_suite());
    srunner_add_suite(sr, pool_suite());
    srunner_add_suite(sr, dataset_suite());
    srunner_add_suite(sr, infer_suite());
    srunner_add_suite(sr, plan_suite());
    srunner_add_suite(sr, metrics_suite());
    srunner_add_suite(sr, overlay_suite());
    srunner_add_suite(sr, build_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
