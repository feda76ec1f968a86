/* cmd_infer.c — `netc infer` (placeholder until it is implemented). */
#include <stdio.h>
#include "commands.h"

int netc_infer_main(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "netc infer: not implemented yet\n");
    return 2;
}
