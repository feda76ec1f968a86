/* fuzz_frontend.c — libFuzzer harness for the whole front end.
 *
 * Input: the bytes of a .net file.  It is parsed and, for every net and
 * protocol it defines (a few at most), compiled for inference and training
 * exactly as `netc check` would.  Anything but a clean return — a crash, a
 * sanitizer report, a leak, a hang past -timeout — is a bug.
 *
 *   make fuzz FUZZ_SECONDS=600
 *
 * Crashing inputs land in tests/fuzz/crashes/; copy them into
 * tests/fuzz/regressions/ so `make test` replays them forever.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    if (!sink) sink = fopen("/dev/null", "w");
    Diag d;
    diag_init(&d, sink);
    Program *p = program_from_text(&d, "fuzz.net", (const char *)data, size);
    int nets = p->nets.n < 2 ? p->nets.n : 2;
    int protos = p->protocols.n < 2 ? p->protocols.n : 2;
    for (int i = 0; i < nets; i++) {
        for (int j = 0; j < protos; j++) {
            for (int train = 0; train < 2; train++) {
                CompileOptions o = { .net = p->nets.items[i].name, .protocol = p->protocols.items[j].name,
                                     .train = train };
                Graph *g = netc_compile(p, &o);
                if (g) {
                    graph_print_table(g, sink);
                    graph_print_json(g, sink);
                    graph_print_dot(g, sink);
                }
                graph_free(g);
            }
        }
    }
    program_free(p);
    diag_free(&d);
    return 0;
}
