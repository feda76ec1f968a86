/* commands.h — netc subcommands that live outside compiler/main.c.
 * Each takes the arguments after the command name and returns the exit
 * status (0 success, 1 bad input or failure, 2 bad command line). */
#ifndef NETC_COMMANDS_H
#define NETC_COMMANDS_H

int netc_bench_main(int argc, char **argv);    /* runtime/bench_kernels.c */
int netc_eval_main(int argc, char **argv);     /* runtime/cmd_eval.c */
int netc_overlay_main(int argc, char **argv);  /* runtime/cmd_overlay.c */
int netc_infer_main(int argc, char **argv);    /* runtime/cmd_infer.c */
int netc_plan_main(int argc, char **argv);     /* runtime/cmd_plan.c */
int netc_build_main(int argc, char **argv);    /* compiler/cmd_build.c */

#endif
