/* cmd_eval.c — `netc eval` (placeholder until it is implemented). */
#include <stdio.h>
#include "commands.h"

int netc_eval_main(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "netc eval: not implemented yet\n");
    return 2;
}
