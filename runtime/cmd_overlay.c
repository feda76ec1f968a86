/* cmd_overlay.c — `netc overlay` (placeholder until it is implemented). */
#include <stdio.h>
#include "commands.h"

int netc_overlay_main(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "netc overlay: not implemented yet\n");
    return 2;
}
