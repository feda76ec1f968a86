/* main.c — the netc command line.
 *
 *   netc check FILE [options]     check a .net file; print the layer table
 *   netc graph FILE --dot|--json  print the L1 graph
 *   netc ops                      list the ops and their arguments
 *
 * Exit status: 0 success, 1 the input has errors, 2 the command line is wrong.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>

#include "bench_kernels.h"
#include "commands.h"
#include "driver.h"
#include "fuse.h"
#include "l3_cuda.h"
#include "l3_llvm.h"
#include "lower.h"
#include "train_data.h"
#include "infer_ref.h"
#include "memplan.h"
#include "util.h"

#include "version.h"

static const char *usage_main =
    "netc " NETC_VERSION " — a compiler for medical image segmentation networks\n"
    "\n"
    "usage: netc COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  check FILE   read a .net file, report every error, print each layer with its\n"
    "               output shape, parameter count and FLOPs\n"
    "  graph FILE   print the L1 graph as Graphviz DOT (--dot) or JSON (--json)\n"
    "  ops          list every op with its arguments and defaults\n"
    "  run FILE     segment a volume (--input, --output; --backend ref, c, llvm or cuda)\n"
    "  emit FILE    write the generated code: --target c|cuda|llvm-ir|asm|obj -o DIR\n"
    "  train FILE   train on a dataset in nnU-Net's format (--data DIR --out RUN)\n"
    "  init FILE    write freshly initialised weights as safetensors (-o)\n"
    "  bench FILE   time the generated code: the whole step, and with --kernels each\n"
    "               fused kernel against the machine's measured roofline\n"
    "  plan DATA    fingerprint a dataset and write a protocol for it (-o FILE)\n"
    "  infer FILE   segment whole scans: sliding window, mirroring, back to the scan's grid\n"
    "  eval PRED GT score segmentations: Dice, IoU, HD95, ASSD, surface Dice\n"
    "  overlay IMG LABEL  draw a label map over an image slice as a PNG\n"
    "  build FILE   one standalone executable (or an embeddable bundle) per protocol\n"
    "\n"
    "Run `netc COMMAND --help` for a command's options.\n"
    "A first try:  netc check netdefs/unet2d.net\n"
    "The language is described in docs/language.md.\n";

static const char *usage_check =
    "usage: netc check FILE [--protocol NAME] [--net NAME] [--train] [-D KEY=VALUE ...] [-q]\n"
    "\n"
    "Reads FILE and its imports, checks the chosen net against the chosen protocol,\n"
    "infers every tensor shape and prints one line per layer:\n"
    "hierarchical name, op, output shape (N C spatial), parameters, FLOPs; then the\n"
    "totals. Every error in the file is reported, each as file:line:col.\n"
    "\n"
    "options:\n"
    "  --protocol NAME  the protocol to compile for (needed when the file has several)\n"
    "  --net NAME       the net to check (needed when the file defines several)\n"
    "  --train          show the training graph: the net at the train block's patch\n"
    "                   and batch, plus the labels input and the loss nodes\n"
    "  --autodiff       the whole training step: the training graph, its backward\n"
    "                   pass (one `grad` node per forward node and operand that\n"
    "                   needs a gradient) and one optimizer update per parameter\n"
    "  --fusion         after the layer table, the kernels fusion makes (each one's\n"
    "                   nodes and the tensors it writes) and every refused fusion\n"
    "                   with its reason (training rules with --train)\n"
    "  --memory         after the layer table, the memory plan of the fused kernels:\n"
    "                   arena size, lower bound, naive total, persistent bytes,\n"
    "                   then every arena tensor's size, offset, live range\n"
    "  -D KEY=VALUE     override a net parameter (-D base=16), a protocol field\n"
    "                   (-D protocol.size=128x128) or a train field (-D train.batch=4)\n"
    "  -q, --quiet      print nothing but errors; the exit status tells the result\n"
    "\n"
    "exit status: 0 no errors, 1 errors in the input, 2 bad command line\n";

static const char *usage_graph =
    "usage: netc graph FILE (--dot | --json) [--protocol NAME] [--net NAME] [--train]\n"
    "                  [-D KEY=VALUE ...] [-o OUT]\n"
    "\n"
    "Prints the L1 graph of the net for the protocol: --dot as Graphviz DOT\n"
    "(render with `dot -Tsvg`), --json with every tensor, parameter (name, shape,\n"
    "init rule), node and resolved attribute. -o writes to OUT instead of stdout;\n"
    "OUT is replaced only when the whole graph was written.\n"
    "Other options as for `netc check`.\n";

static const char *usage_run =
    "usage: netc run FILE --input IMG.nii.gz [--input ...] --output OUT.nii.gz\n"
    "                [--weights W.safetensors [--map NAMES.txt]] [--backend ref|c|llvm|cuda]\n"
    "                [--probabilities] [--seed N] [--protocol NAME] [--net NAME] [-D KEY=VALUE ...]\n"
    "\n"
    "Segments one volume with the net compiled for the protocol: reads the input\n"
    "(one NIfTI file per channel, or one 4D file), normalizes it as the protocol\n"
    "says, runs the forward pass, and writes the label map (argmax over classes;\n"
    "uint8) on the input's grid, or with --probabilities the softmax as a 4D\n"
    "float volume. The input must have the protocol's patch size, z x y x x\n"
    "(sliding-window inference over whole scans comes with the runtime).\n"
    "\n"
    "  --weights W   safetensors file with every parameter under netc's names\n"
    "                (`netc check` lists them); --map renames `theirs ours` lines;\n"
    "                without --weights the parameters are initialised from --seed\n"
    "  --backend B   ref (the reference executor, the default), c (generated C built\n"
    "                with the system C compiler), llvm (generated code, LLVM JIT) or\n"
    "                cuda (the same kernels on an NVIDIA GPU: NVRTC and the driver)\n"
    "\n"
    "Exit status: 0 written, 1 an input or the net is wrong, 2 bad command line.\n";

static const char *usage_init =
    "usage: netc init FILE -o W.safetensors [--seed N] [--protocol NAME] [--net NAME] [-D ...]\n"
    "\n"
    "Writes every parameter and buffer of the net, initialised by its init rule\n"
    "(He normal by default) from the seed, as a safetensors file under netc's\n"
    "parameter names. The same seed gives the same weights.\n";

static const char *usage_ops =
    "usage: netc ops\n\nLists every op: its name, tensor inputs, arguments in order with defaults.\n";

typedef struct {
    const char *file, *protocol, *net, *out;
    bool train, quiet, dot, json, autodiff, fusion;
    bool memory;   /* check --memory */
    Override ov[64];
    int nov;
    /* run / init */
    const char *weights, *mapping, *backend, *inputs[16];
    const char *target;   /* emit */
    const char *data;     /* train */
    bool resume;
    int ninputs;
    bool probabilities;
    unsigned long long seed;
} Options;

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "netc %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(run `netc %s --help` for the options)\n", cmd);
    return 2;
}

static int parse_options(const char *cmd, int argc, char **argv, Options *o, const char *usage)
{
    memset(o, 0, sizeof *o);
    bool is_run = strcmp(cmd, "run") == 0 || strcmp(cmd, "init") == 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return -1;
        } else if (is_run && (strcmp(a, "--weights") == 0 || strcmp(a, "--map") == 0 || strcmp(a, "--backend") == 0 ||
                              strcmp(a, "--input") == 0 || strcmp(a, "--output") == 0 || strcmp(a, "--seed") == 0)) {
            if (i + 1 >= argc) return usage_error(cmd, "%s needs a value", a);
            const char *v = argv[++i];
            if (strcmp(a, "--weights") == 0) o->weights = v;
            else if (strcmp(a, "--map") == 0) o->mapping = v;
            else if (strcmp(a, "--backend") == 0) o->backend = v;
            else if (strcmp(a, "--output") == 0) o->out = v;
            else if (strcmp(a, "--seed") == 0) {
                char *end;
                o->seed = strtoull(v, &end, 10);
                if (!*v || *end) return usage_error(cmd, "--seed takes a whole number, not `%s`", v);
            } else {
                if (o->ninputs >= 16) return usage_error(cmd, "%s", "at most 16 --input files");
                o->inputs[o->ninputs++] = v;
            }
        } else if (strcmp(cmd, "train") == 0 && (strcmp(a, "--data") == 0 || strcmp(a, "--out") == 0 ||
                                                  strcmp(a, "--backend") == 0)) {
            if (i + 1 >= argc) return usage_error(cmd, "%s needs a value", a);
            const char *v = argv[++i];
            if (a[2] == 'd') o->data = v;
            else if (a[2] == 'o') o->out = v;
            else o->backend = v;
        } else if (strcmp(cmd, "train") == 0 && strcmp(a, "--resume") == 0) {
            o->resume = true;
        } else if (strcmp(cmd, "emit") == 0 && strcmp(a, "--target") == 0) {
            if (i + 1 >= argc) return usage_error(cmd, "%s needs a value", a);
            o->target = argv[++i];
        } else if (is_run && strcmp(a, "--probabilities") == 0) {
            o->probabilities = true;
        } else if (strcmp(a, "-o") == 0 && strcmp(cmd, "graph") != 0 && strcmp(cmd, "init") != 0 &&
                   strcmp(cmd, "emit") != 0 && strcmp(cmd, "train") != 0) {
            return usage_error(cmd, "%s", "-o is an option of `netc graph`; check prints to the terminal");
        } else if (strcmp(a, "--protocol") == 0 || strcmp(a, "--net") == 0 || strcmp(a, "-o") == 0) {
            if (i + 1 >= argc) return usage_error(cmd, "%s needs a value", a);
            const char **dst = a[2] == 'p' ? &o->protocol : a[2] == 'n' ? &o->net : &o->out;
            *dst = argv[++i];
        } else if (strncmp(a, "--protocol=", 11) == 0) {
            o->protocol = a + 11;
        } else if (strncmp(a, "--net=", 6) == 0) {
            o->net = a + 6;
        } else if (strcmp(a, "--train") == 0) {
            o->train = true;
        } else if (strcmp(a, "--autodiff") == 0 && !is_run) {
            o->autodiff = o->train = true;
        } else if (strcmp(a, "--fusion") == 0 && strcmp(cmd, "check") == 0) {
            o->fusion = true;
        } else if (strcmp(a, "--memory") == 0 && strcmp(cmd, "check") == 0) {
            o->memory = true;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            o->quiet = true;
        } else if (strcmp(a, "--dot") == 0) {
            o->dot = true;
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strncmp(a, "-D", 2) == 0) {
            const char *kv = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (!kv) return usage_error(cmd, "%s needs KEY=VALUE", "-D");
            const char *eq = strchr(kv, '=');
            if (!eq || eq == kv || !eq[1]) return usage_error(cmd, "-D takes KEY=VALUE, not `%s`", kv);
            if (o->nov >= 64) return usage_error(cmd, "%s", "too many -D options");
            o->ov[o->nov].key = xstrndup(kv, (size_t)(eq - kv));
            o->ov[o->nov].text = eq + 1;
            o->nov++;
        } else if (a[0] == '-' && a[1]) {
            return usage_error(cmd, "unknown option `%s`", a);
        } else if (!o->file) {
            o->file = a;
        } else {
            return usage_error(cmd, "unexpected argument `%s` (one FILE only)", a);
        }
    }
    if (!o->file) return usage_error(cmd, "%s", "missing FILE");
    return 0;
}

static int finish(Program *p, Diag *d, Graph *g, int status)
{
    if (d->nerrors) {
        fprintf(stderr, "%d error%s", d->nerrors, d->nerrors == 1 ? "" : "s");
        if (d->nwarnings) fprintf(stderr, ", %d warning%s", d->nwarnings, d->nwarnings == 1 ? "" : "s");
        fputs(".\n", stderr);
        status = 1;
    }
    graph_free(g);
    program_free(p);
    diag_free(d);
    return status;
}

static int cmd_check_or_graph(const char *cmd, int argc, char **argv)
{
    bool is_graph = strcmp(cmd, "graph") == 0;
    Options o;
    int rc = parse_options(cmd, argc, argv, &o, is_graph ? usage_graph : usage_check);
    if (rc) {
        netc_overrides_free(o.ov, o.nov);
        return rc < 0 ? 0 : rc;
    }
    if (is_graph && o.dot == o.json) {
        netc_overrides_free(o.ov, o.nov);
        return usage_error(cmd, "%s", "choose one of --dot and --json");
    }
    Diag d;
    diag_init(&d, stderr);
    d.color = false;
    Program *p;
    CompileOptions co = { .protocol = o.protocol, .net = o.net, .train = o.train, .autodiff = o.autodiff,
                          .ov = o.ov, .nov = o.nov };
    Graph *g = netc_load_compile(&d, "netc", o.file, &co, &p);
    netc_overrides_free(o.ov, o.nov);
    if (!p) {
        diag_free(&d);
        return 1;
    }
    int status = 0;
    if (g && d.nerrors == 0) {
        if (!is_graph) {
            if (!o.quiet) graph_print_table(g, stdout);
            if (!o.quiet && o.fusion) {
                FusionPlan *fp = fuse_graph(g, g->nlosses > 0);
                fusion_print(stdout, g, fp);
                fusion_plan_free(fp);
            }
            if (!o.quiet && o.memory) {
                FusionPlan *fp = fuse_graph(g, g->nlosses > 0);
                MemPlan *mp = fp ? memplan(g, fp) : NULL;
                if (mp) memplan_print(stdout, g, fp, mp, true);
                else fprintf(stderr, "netc: no memory plan for this graph\n");
                memplan_free(mp);
                if (fp) fusion_plan_free(fp);
            }
        } else {
            FILE *out = stdout;
            char tmp[4096];
            if (o.out) {
                snprintf(tmp, sizeof tmp, "%s.tmp.%ld", o.out, (long)getpid());
                out = fopen(tmp, "w");
                if (!out) {
                    fprintf(stderr, "netc: cannot write %s: %s\n", tmp, strerror(errno));
                    return finish(p, &d, g, 1);
                }
            }
            if (o.dot) graph_print_dot(g, out);
            else graph_print_json(g, out);
            if (o.out) {
                bool bad = ferror(out) != 0;
                if (fclose(out) != 0) bad = true;
                if (bad || rename(tmp, o.out) != 0) {
                    fprintf(stderr, "netc: cannot write %s: %s\n", o.out, strerror(errno));
                    remove(tmp);
                    status = 1;
                }
            }
        }
    }
    return finish(p, &d, g, status);
}

/* "= 3", "required", "= same": an attribute's default as `netc ops` shows it. */
static void attr_default(const AttrSpec *s, char *buf, size_t n)
{
    if (s->required) { snprintf(buf, n, "required"); return; }
    switch (s->type) {
    case AT_INT: snprintf(buf, n, "= %lld", (long long)s->def); break;
    case AT_FLOAT: snprintf(buf, n, "= %g", s->def); break;
    case AT_BOOL: snprintf(buf, n, "= %s", s->def != 0 ? "true" : "false"); break;
    case AT_AXES:
        if (s->def == 0 && strcmp(s->name, "stride") == 0) snprintf(buf, n, "= kernel");
        else snprintf(buf, n, "= %lld", (long long)s->def);
        break;
    case AT_PADDING:   /* a positional amount (crop, pad) has no default */
        if (s->position >= 0) snprintf(buf, n, "= none");
        else snprintf(buf, n, "= %s", s->enum_values ? s->enum_values : "valid");
        break;
    case AT_ENUM: {
        const char *p = s->enum_values;
        for (int k = 0; k < (int)s->def && p; k++) { p = strchr(p, '|'); if (p) p++; }
        snprintf(buf, n, "= %.*s", p ? (int)strcspn(p, "|") : 1, p ? p : "?");
        break;
    }
    case AT_FLOATS: snprintf(buf, n, "= none"); break;
    }
}

/* netc run / netc init: compile, then execute with the reference executor. */
static int cmd_run_or_init(const char *cmd, int argc, char **argv)
{
    bool is_init = strcmp(cmd, "init") == 0;
    Options o;
    int rc = parse_options(cmd, argc, argv, &o, is_init ? usage_init : usage_run);
    if (rc == 0 && !o.out) rc = usage_error(cmd, "%s", is_init ? "-o W.safetensors is required" : "--output is required");
    if (rc == 0 && !is_init && o.ninputs == 0) rc = usage_error(cmd, "%s", "--input is required");
    if (rc == 0 && o.backend && strcmp(o.backend, "ref") != 0 && strcmp(o.backend, "c") != 0 &&
        strcmp(o.backend, "llvm") != 0 && strcmp(o.backend, "cuda") != 0)
        rc = usage_error(cmd, "unknown backend `%s`; use ref, c, llvm or cuda", o.backend);
    if (rc == 0 && is_init && o.backend)
        rc = usage_error(cmd, "%s", "--backend is an option of run");
    if (rc == 0 && o.train) rc = usage_error(cmd, "%s", "--train is an option of check and graph");
    if (rc) {
        netc_overrides_free(o.ov, o.nov);
        return rc < 0 ? 0 : rc;
    }
    Diag d;
    diag_init(&d, stderr);
    Program *p;
    Protocol *pr = NULL;
    CompileOptions co = { .protocol = o.protocol, .net = o.net, .ov = o.ov, .nov = o.nov, .protocol_out = &pr };
    Graph *g = netc_load_compile(&d, "netc", o.file, &co, &p);
    netc_overrides_free(o.ov, o.nov);
    if (!p) {
        diag_free(&d);
        return 1;
    }
    int status = 0;
    if (g && d.nerrors == 0) {
        char err[4096];
        int r;
        if (is_init)
            r = infer_ref_init(g, o.seed, o.out, err, sizeof err);
        else {
            RefRunOptions ro = { .weights = o.weights, .mapping = o.mapping, .inputs = o.inputs, .ninputs = o.ninputs,
                                 .output = o.out, .probabilities = o.probabilities, .seed = o.seed,
                                 .backend = o.backend };
            r = infer_ref_run(g, pr, &ro, err, sizeof err);
        }
        if (r != 0) {
            fprintf(stderr, "netc %s: %s\n", cmd, err);
            status = 1;
        } else if (is_init)
            printf("wrote %d tensors (%lld values) to %s\n", g->nparams, (long long)graph_param_count(g, false), o.out);
        else
            printf("wrote %s\n", o.out);
    }
    protocol_free(pr);
    return finish(p, &d, g, status);
}

static const char *usage_emit =
    "usage: netc emit FILE --target c|cuda|llvm-ir|asm|obj -o DIR [--train]\n"
    "                 [--protocol NAME] [--net NAME] [-D KEY=VALUE ...]\n"
    "\n"
    "Writes the generated code of the net for the protocol into DIR, named after\n"
    "the net: NET.c (readable C11), NET.cu (CUDA C for NVRTC, with its launch\n"
    "table), NET.ll (LLVM IR), NET.s (assembly for this CPU) or NET.o (a PIC\n"
    "object).  The code is fused (`netc check --fusion` lists the kernels) and\n"
    "its entry is `void netc_forward(void **t)`, or with --train the whole\n"
    "training step (forward, backward, optimizer update) `netc_train_forward`;\n"
    "t[i] points at graph tensor i (`netc graph --json` numbers them).\n"
    "Files are written whole or not at all.\n";

static int write_atomic_text(const char *path, const L3Module *m, bool cuda, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) { snprintf(err, errlen, "cannot write %.2000s: %s", tmp, strerror(errno)); return -1; }
    if (cuda) l3_print_cuda(f, m);
    else l3_print_c(f, m);
    if (ferror(f) | fclose(f)) { unlink(tmp); snprintf(err, errlen, "cannot write %.2000s", tmp); return -1; }
    if (rename(tmp, path) != 0) { unlink(tmp); snprintf(err, errlen, "cannot write %.2000s: %s", path, strerror(errno)); return -1; }
    return 0;
}

static int cmd_emit(int argc, char **argv)
{
    Options o;
    int rc = parse_options("emit", argc, argv, &o, usage_emit);
    static const char *targets[] = { "c", "cuda", "llvm-ir", "asm", "obj" };
    static const char *exts[] = { "c", "cu", "ll", "s", "o" };
    int target = -1;
    for (int i = 0; rc == 0 && o.target && i < 5; i++)
        if (strcmp(o.target, targets[i]) == 0) target = i;
    if (rc == 0 && !o.target) rc = usage_error("emit", "%s", "--target is required (c, cuda, llvm-ir, asm or obj)");
    else if (rc == 0 && target < 0) rc = usage_error("emit", "unknown target `%s` (c, cuda, llvm-ir, asm or obj)", o.target);
    if (rc == 0 && !o.out) rc = usage_error("emit", "%s", "-o DIR is required");
    if (rc) {
        netc_overrides_free(o.ov, o.nov);
        return rc < 0 ? 0 : rc;
    }
    Diag d;
    diag_init(&d, stderr);
    Program *p;
    CompileOptions co = { .protocol = o.protocol, .net = o.net, .train = o.train, .autodiff = o.train,
                          .ov = o.ov, .nov = o.nov };
    Graph *g = netc_load_compile(&d, "netc", o.file, &co, &p);
    netc_overrides_free(o.ov, o.nov);
    if (!p) {
        diag_free(&d);
        return 1;
    }
    int status = 0;
    if (g && d.nerrors == 0) {
        char err[4096], path[4096];
        FusionPlan *fp = fuse_graph(g, o.train);
        L3Module *m = fp ? lower_graph_fused(g, fp, o.train, err, sizeof err) : NULL;
        if (!fp) snprintf(err, sizeof err, "out of memory");
        if (m && mkdir(o.out, 0777) != 0 && errno != EEXIST) {
            snprintf(err, sizeof err, "cannot create %.2000s: %s", o.out, strerror(errno));
            l3_module_free(m);
            m = NULL;
        }
        if (m) {
            snprintf(path, sizeof path, "%s/%s.%s", o.out, g->net_name, exts[target]);
            int r;
            if (target <= 1) r = write_atomic_text(path, m, target == 1, err, sizeof err);
            else {
                char tmp[4200];
                snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
                int kind = target == 2 ? L3_LLVM_IR : target == 3 ? L3_LLVM_ASM : L3_LLVM_OBJECT;
                r = l3_llvm_emit(m, tmp, kind, err, sizeof err);
                if (r == 0 && rename(tmp, path) != 0) {
                    snprintf(err, sizeof err, "cannot write %.2000s: %s", path, strerror(errno));
                    r = -1;
                }
                if (r != 0) unlink(tmp);
            }
            if (r == 0) printf("wrote %s (%d kernels)\n", path, m->nkernels);
            else status = 1;
            l3_module_free(m);
        } else
            status = 1;
        if (status) fprintf(stderr, "netc emit: %s\n", err);
        fusion_plan_free(fp);
    }
    return finish(p, &d, g, status);
}

static const char *usage_train =
    "usage: netc train FILE --data DIR [--out RUN] [--resume] [--backend llvm|c]\n"
    "                  [--fold K|all] [--init WEIGHTS] [--no-prefetch]\n"
    "                  [--protocol NAME] [--net NAME] [-D KEY=VALUE ...] [-q]\n"
    "\n"
    "Trains the net on a dataset in nnU-Net's raw format (dataset.json, imagesTr/,\n"
    "labelsTr/; imagesTs/ + labelsTs/ are held out) with the train block for the\n"
    "protocol, as generated code; every train field can be overridden with\n"
    "-D train.FIELD=VALUE.  The run folder (default: run) gets the preprocessed\n"
    "cases, checkpoint_last.safetensors (weights and optimizer state),\n"
    "model_last.safetensors (weights, for netc run --weights), log.csv and\n"
    "curves.svg.  --resume continues from the last checkpoint: with the same\n"
    "seed the run is the one that was never interrupted.  At the end, the\n"
    "held-out cases are segmented and their Dice printed.\n"
    "\n"
    "  --fold K|all     validate on fold K (0..4) of a 5-fold split of the training\n"
    "                   cases (RUN/splits_final.json), or train on all of them and\n"
    "                   validate on imagesTs + labelsTs; default: 0 with at least\n"
    "                   5 training cases, else all.  Each epoch logs the validation\n"
    "                   pseudo-Dice and its EMA; the best EMA is saved as\n"
    "                   checkpoint_best / model_best.safetensors\n"
    "  --init WEIGHTS   start from pretrained weights (safetensors; tensors whose\n"
    "                   name and shape match are loaded; the train block's init)\n"
    "  --no-prefetch    make each batch in the training thread (same results)\n";

static Graph *compile_for(const Options *o, Override *ov, bool train, Program **pp, Diag *d, Protocol **pr,
                          TrainSpec **ts)
{
    CompileOptions co = { .protocol = o->protocol, .net = o->net, .train = train, .autodiff = train, .ov = ov,
                          .nov = o->nov, .protocol_out = pr, .train_out = ts };
    return netc_load_compile(d, "netc", o->file, &co, pp);
}

static int cmd_train(int argc, char **argv)
{
    /* train's own options, taken out before the common parser */
    const char *fold = NULL, *init = NULL;
    bool no_prefetch = false;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) return 1;
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--fold") == 0 || strcmp(argv[i], "--init") == 0) {
            if (i + 1 >= argc) {
                free(rest);
                return usage_error("train", "%s needs a value", argv[i]);
            }
            if (argv[i][2] == 'f') fold = argv[++i];
            else init = argv[++i];
        } else if (strcmp(argv[i], "--no-prefetch") == 0) {
            no_prefetch = true;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    int fold_k = -1;
    if (fold && strcmp(fold, "all") != 0) {
        if (!(fold[0] >= '0' && fold[0] <= '4' && fold[1] == 0)) {
            free(rest);
            return usage_error("train", "--fold takes 0 .. 4 or all, not `%s`", fold);
        }
        fold_k = fold[0] - '0';
    }
    Options o;
    int rc = parse_options("train", nrest, rest, &o, usage_train);
    free(rest);
    if (rc == 0 && !o.data) rc = usage_error("train", "%s", "--data DIR is required (a dataset in nnU-Net's raw format)");
    if (rc == 0 && o.backend && strcmp(o.backend, "llvm") != 0 && strcmp(o.backend, "c") != 0)
        rc = usage_error("train", "unknown backend `%s`; use llvm or c", o.backend);
    if (rc) {
        netc_overrides_free(o.ov, o.nov);
        return rc < 0 ? 0 : rc;
    }
    /* the same overrides for both graphs: a copy for the inference graph */
    Override ov2[64];
    for (int i = 0; i < o.nov; i++) ov2[i] = (Override){ .key = o.ov[i].key, .text = o.ov[i].text };
    Diag d;
    diag_init(&d, stderr);
    Program *p = NULL, *p2 = NULL;
    Protocol *pr = NULL, *pr2 = NULL;
    TrainSpec *ts = NULL, *ts2 = NULL;
    Graph *step = compile_for(&o, o.ov, true, &p, &d, &pr, &ts);
    Graph *inf = step && d.nerrors == 0 ? compile_for(&o, ov2, false, &p2, &d, &pr2, &ts2) : NULL;
    int status = 0;
    if (step && inf && d.nerrors == 0) {
        if (!ts) {
            fprintf(stderr, "netc train: no train block for this net and protocol\n");
            status = 1;
        } else {
            TrainDataOptions to = { .data_dir = o.data, .run_dir = o.out ? o.out : "run", .backend = o.backend,
                                    .resume = o.resume, .quiet = o.quiet, .fold_set = fold != NULL,
                                    .fold = fold_k, .init = init, .no_prefetch = no_prefetch };
            TrainDataResult r;
            char err[4096];
            if (train_on_dataset(step, inf, ts, pr, &to, &r, err, sizeof err) != 0) {
                fprintf(stderr, "netc train: %s\n", err);
                status = 1;
            } else {
                printf("trained %lld steps in %.1f s (%.2f steps/s), loss %.4f -> %.4f\n", r.steps, r.train_seconds,
                       r.steps_per_second, r.first_loss, r.last_loss);
                printf("batches: the training loop waited %.2f s for them (%s)\n", r.data_seconds,
                       no_prefetch ? "made in the training thread" : "prefetched by a worker thread");
                if (!isnan(r.best_ema))
                    printf("validation: best EMA pseudo-Dice %.4f at epoch %lld (model_best.safetensors)\n", r.best_ema,
                           r.best_epoch + 1);
                if (isnan(r.heldout_dice)) printf("no held-out cases with labels (imagesTs + labelsTs)\n");
                else {
                    for (int k = 1; k < r.nclasses && k < 16; k++)
                        printf("held-out Dice %s: %.4f\n", k < pr->nclasses ? pr->classes[k] : "class", r.dice[k]);
                    printf("heldout_dice=%.4f\n", r.heldout_dice);
                }
            }
        }
    }
    netc_overrides_free(o.ov, o.nov);
    train_free(ts);
    train_free(ts2);
    protocol_free(pr);
    protocol_free(pr2);
    graph_free(inf);
    if (p2) program_free(p2);
    return finish(p, &d, step, status);
}

static int cmd_ops(int argc, char **argv)
{
    if (argc > 0 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        fputs(usage_ops, stdout);
        return 0;
    }
    if (argc > 0) return usage_error("ops", "unexpected argument `%s`", argv[0]);
    for (int k = 0; k < OP_COUNT; k++) {
        const OpInfo *op = &op_table[k];
        printf("%-15s %s\n", op->name, op->summary ? op->summary : "");
        printf("%-15s inputs: %d%s", "", op->min_inputs,
               op->max_inputs < 0 ? " or more" : op->max_inputs != op->min_inputs ? " to" : "");
        if (op->max_inputs > op->min_inputs) printf(" %d", op->max_inputs);
        printf("   kind: %s\n", fusion_kind_name(op->kind));
        for (const AttrSpec *s = op->attrs; s && s->name; s++) {
            char def[64];
            attr_default(s, def, sizeof def);
            char pos[16] = "";
            if (s->position >= 0) snprintf(pos, sizeof pos, "#%d", s->position + 1);
            printf("%-15s   %-3s %-13s %-18s %s\n", "", pos, s->name, def, s->doc ? s->doc : "");
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_main, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("netc %s\n", NETC_VERSION);
        return 0;
    }
    if (strcmp(cmd, "check") == 0 || strcmp(cmd, "graph") == 0) return cmd_check_or_graph(cmd, argc - 2, argv + 2);
    if (strcmp(cmd, "ops") == 0) return cmd_ops(argc - 2, argv + 2);
    if (strcmp(cmd, "run") == 0 || strcmp(cmd, "init") == 0) return cmd_run_or_init(cmd, argc - 2, argv + 2);
    if (strcmp(cmd, "emit") == 0) return cmd_emit(argc - 2, argv + 2);
    if (strcmp(cmd, "train") == 0) return cmd_train(argc - 2, argv + 2);
    if (strcmp(cmd, "bench") == 0) return netc_bench_main(argc - 2, argv + 2);
    if (strcmp(cmd, "infer") == 0) return netc_infer_main(argc - 2, argv + 2);
    if (strcmp(cmd, "eval") == 0) return netc_eval_main(argc - 2, argv + 2);
    if (strcmp(cmd, "overlay") == 0) return netc_overlay_main(argc - 2, argv + 2);
    if (strcmp(cmd, "plan") == 0) return netc_plan_main(argc - 2, argv + 2);
    if (strcmp(cmd, "build") == 0) return netc_build_main(argc - 2, argv + 2);
    const char *cmds[] = { "check", "graph", "ops", "run", "init", "emit", "train", "bench",
                           "infer", "eval", "overlay", "plan", "build" };
    Suggest sg;
    suggest_init(&sg, cmd);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) suggest_offer(&sg, cmds[i]);
    fprintf(stderr, "netc: unknown command `%s`%s\n(run `netc --help` for the commands)\n", cmd, suggest_hint(&sg));
    return 2;
}
