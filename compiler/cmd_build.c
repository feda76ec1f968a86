/* cmd_build.c — `netc build` (placeholder until it is implemented). */
#include <stdio.h>
#include "commands.h"

int netc_build_main(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "netc build: not implemented yet\n");
    return 2;
}
