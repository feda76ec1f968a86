/* codegen_fixture.c — see codegen_fixture.h. */
#define _POSIX_C_SOURCE 200809L
#include "codegen_fixture.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t codegen_test_seed(void)
{
    const char *s = getenv("NETC_TEST_SEED");
    if (s && *s) return strtoull(s, NULL, 10);
    return (uint64_t)time(NULL);
}

uint64_t codegen_fixed_seed(void)
{
    const char *s = getenv("NETC_TEST_SEED");
    return s && *s ? strtoull(s, NULL, 10) : 20261127u;
}
