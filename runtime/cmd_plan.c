/* cmd_plan.c — `netc plan` (placeholder until it is implemented). */
#include <stdio.h>
#include "commands.h"

int netc_plan_main(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "netc plan: not implemented yet\n");
    return 2;
}
