/* cmd_build.c — `netc build`: one standalone executable per scanner
 * protocol, and an embeddable bundle.
 *
 * The protocol's inference graph is fused, memory-planned, lowered and
 * compiled ahead of time with LLVM (l3_llvm_emit: a PIC object whose entry
 * is NAME_forward(void **t)); build_gen.c writes the tensor table, the
 * weight blob and the glue; the system C compiler links them with the
 * LLVM-free runtime library found next to the netc executable
 * (libnetcrt.a and include/netc_standalone.h; NETC_RUNTIME_DIR overrides).
 * Temporary files live in a private folder (mkdtemp) removed at the end;
 * outputs are written to a temporary name and renamed.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "build_gen.h"
#include "commands.h"
#include "driver.h"
#include "l3_llvm.h"
#include "lower.h"
#include "util.h"

#include "version.h"

static const char *usage_build =
    "usage: netc build FILE --weights W.safetensors [-o BIN] [--bundle DIR [--name NAME]]\n"
    "                  [--protocol NAME] [--net NAME] [--map NAMES.txt] [-D KEY=VALUE ...] [-q]\n"
    "\n"
    "Compiles the net's inference graph for the protocol (its patch size and\n"
    "batch) ahead of time and writes, with -o, a standalone executable BIN that\n"
    "segments whole scans with no netc and no LLVM:\n"
    "    BIN IN.nii.gz [IN_CHANNEL2.nii.gz ...] OUT.nii.gz [--threads N] [--no-tta] [--step S] [-q]\n"
    "(BIN --help tells what it was built for).  The weights (safetensors, netc's\n"
    "names; --map renames `theirs ours` lines) are embedded, with the protocol's\n"
    "normalization and spacing and the dataset statistics found in the weights'\n"
    "metadata (netc.stats.<channel>.mean/.sd/.p005/.p995).\n"
    "With --bundle DIR: DIR/NET.o (the kernels and NET_run), DIR/NET.h (shapes,\n"
    "arena size, the entry point; no malloc inside) and DIR/NET.weights (the raw\n"
    "weight blob NET.h documents), for embedding in another program; --name\n"
    "gives the bundle another C name than the net's (two bundles in one program).\n"
    "The code is compiled for this machine's CPU. docs/build.md has the details.\n"
    "\n"
    "Exit status: 0 built, 1 the net, the weights or a tool failed, 2 bad command line.\n";

typedef struct {
    const char *file, *weights, *mapping, *out, *bundle, *protocol, *net, *name;
    Override ov[64];
    int nov;
    int quiet;
} BuildOptions;

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "netc build: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(run `netc build --help` for the options)\n");
    return 2;
}

static int parse(int argc, char **argv, BuildOptions *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_build, stdout);
            return -1;
        } else if (strcmp(a, "--weights") == 0 || strcmp(a, "--map") == 0 || strcmp(a, "-o") == 0 ||
                   strcmp(a, "--bundle") == 0 || strcmp(a, "--protocol") == 0 || strcmp(a, "--net") == 0 ||
                   strcmp(a, "--name") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0]) return usage_error("%s needs a value", a);
            const char *v = argv[++i];
            if (strcmp(a, "--weights") == 0) o->weights = v;
            else if (strcmp(a, "--map") == 0) o->mapping = v;
            else if (strcmp(a, "-o") == 0) o->out = v;
            else if (strcmp(a, "--bundle") == 0) o->bundle = v;
            else if (strcmp(a, "--protocol") == 0) o->protocol = v;
            else if (strcmp(a, "--name") == 0) o->name = v;
            else o->net = v;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
        } else if (strncmp(a, "-D", 2) == 0) {
            const char *kv = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (!kv) return usage_error("%s needs KEY=VALUE", "-D");
            const char *eq = strchr(kv, '=');
            if (!eq || eq == kv || !eq[1]) return usage_error("-D takes KEY=VALUE, not `%s`", kv);
            if (o->nov >= 64) return usage_error("%s", "too many -D options");
            o->ov[o->nov].key = xstrndup(kv, (size_t)(eq - kv));
            o->ov[o->nov].text = eq + 1;
            o->nov++;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option `%s`", a);
        } else if (!o->file) {
            o->file = a;
        } else {
            return usage_error("unexpected argument `%s` (one FILE only)", a);
        }
    }
    if (!o->file) return usage_error("%s", "missing FILE (a .net file)");
    if (!o->weights) return usage_error("%s", "--weights W.safetensors is required");
    if (!o->out && !o->bundle) return usage_error("%s", "nothing to build: give -o BIN and/or --bundle DIR");
    if (o->name) {
        size_t n = strlen(o->name);
        int ok = n > 0 && n <= 100 && !(o->name[0] >= '0' && o->name[0] <= '9');
        for (size_t i = 0; ok && i < n; i++) {
            char c = o->name[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        }
        if (!ok) return usage_error("--name takes a C identifier (letters, digits, _), not `%s`", o->name);
    }
    return 0;
}

/* ---- files and tools ------------------------------------------------- */

/* The folder of libnetcrt.a: NETC_RUNTIME_DIR, else the netc executable's. */
static int runtime_dir(char *dir, size_t n, char *err, size_t errlen)
{
    const char *env = getenv("NETC_RUNTIME_DIR");
    if (env && *env) {
        snprintf(dir, n, "%s", env);
    } else {
        char exe[PATH_MAX];
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (len <= 0) {
            snprintf(err, errlen, "cannot find the netc executable (/proc/self/exe): %s; set NETC_RUNTIME_DIR",
                     strerror(errno));
            return -1;
        }
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(dir, n, "%s", slash ? exe : ".");
    }
    char p[PATH_MAX + 64];
    struct stat st;
    const char *need[2] = { "libnetcrt.a", "include/netc_standalone.h" };
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, need[k]);
        if (stat(p, &st) != 0) {
            snprintf(err, errlen, "the standalone runtime %.1000s is missing (`make` builds it next to netc; "
                     "NETC_RUNTIME_DIR names another folder)", p);
            return -1;
        }
    }
    return 0;
}

/* Run argv (no shell); 0 when it exits 0, else -1 with a message. */
static int run_tool(char *const *argv, char *err, size_t errlen)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "cannot start %s: %s", argv[0], strerror(errno));
        return -1;
    }
    if (pid == 0) {
        execvp(argv[0], argv);
        fprintf(stderr, "netc build: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            snprintf(err, errlen, "waiting for %s: %s", argv[0], strerror(errno));
            return -1;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    int len = snprintf(err, errlen, "%s failed (%s %d):", argv[0], WIFEXITED(status) ? "exit" : "signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    for (int i = 0; argv[i] && len > 0 && (size_t)len < errlen; i++)
        len += snprintf(err + len, errlen - (size_t)len, " %s", argv[i]);
    return -1;
}

static int write_file(const char *path, const void *data, size_t n, char *err, size_t errlen)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write %.2000s: %s", path, strerror(errno));
        return -1;
    }
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    if ((w != n) | ferror(f) | (fclose(f) != 0)) {
        snprintf(err, errlen, "cannot write %.2000s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

typedef void (*Writer)(FILE *out, const BuildPlan *b, const char *arg);

static void glue_writer(FILE *out, const BuildPlan *b, const char *arg) { build_write_glue(out, b, arg); }
static void header_writer(FILE *out, const BuildPlan *b, const char *arg) { (void)arg; build_write_bundle_header(out, b); }
static void bundle_c_writer(FILE *out, const BuildPlan *b, const char *arg) { (void)arg; build_write_bundle_c(out, b); }

static int write_text(const char *path, Writer w, const BuildPlan *b, const char *arg, char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %.2000s: %s", path, strerror(errno));
        return -1;
    }
    w(f, b, arg);
    if (ferror(f) | (fclose(f) != 0)) {
        snprintf(err, errlen, "cannot write %.2000s", path);
        return -1;
    }
    return 0;
}

static int publish(const char *tmp, const char *path, char *err, size_t errlen)
{
    if (rename(tmp, path) == 0) return 0;
    snprintf(err, errlen, "cannot write %.2000s: %s", path, strerror(errno));
    unlink(tmp);
    return -1;
}

/* The temporary folder and what is in it. */
typedef struct {
    char dir[PATH_MAX];
    char *files[16];
    int nfiles;
} Scratch;

static const char *scratch_path(Scratch *s, const char *name)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", s->dir, name);
    if (s->nfiles >= 16) return NULL;
    s->files[s->nfiles] = xstrdup(p);
    return s->files[s->nfiles++];
}

static void scratch_free(Scratch *s)
{
    for (int i = 0; i < s->nfiles; i++) {
        unlink(s->files[i]);
        free(s->files[i]);
    }
    if (s->dir[0]) rmdir(s->dir);
    memset(s, 0, sizeof *s);
}

/* ---- the build ------------------------------------------------------- */

static int build_standalone(const BuildOptions *o, const BuildPlan *b, Scratch *s, const char *obj, const char *blob,
                            const char *rtdir, char *err, size_t errlen)
{
    const char *glue = scratch_path(s, "glue.c"), *asmf = scratch_path(s, "weights.s");
    if (!glue || !asmf) { snprintf(err, errlen, "too many temporary files"); return -1; }
    if (strpbrk(blob, "\"\\\n")) {
        snprintf(err, errlen, "the temporary folder %.2000s has a character the assembler cannot quote", s->dir);
        return -1;
    }
    if (write_text(glue, glue_writer, b, "netc_sa_weights", err, errlen) != 0) return -1;
    FILE *f = fopen(asmf, "w");
    if (!f) { snprintf(err, errlen, "cannot write %.2000s: %s", asmf, strerror(errno)); return -1; }
    build_write_incbin(f, "netc_sa_weights", blob);
    if (ferror(f) | (fclose(f) != 0)) { snprintf(err, errlen, "cannot write %.2000s", asmf); return -1; }

    char tmp[PATH_MAX + 64], inc[PATH_MAX + 64], lib[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", o->out, (long)getpid());
    snprintf(inc, sizeof inc, "-I%s/include", rtdir);
    snprintf(lib, sizeof lib, "%s/libnetcrt.a", rtdir);
    const char *cc = getenv("CC");
    if (!cc || !*cc || strchr(cc, ' ')) cc = "cc";
    char *argv[] = { (char *)cc, "-O2", "-o", tmp, inc, (char *)glue, (char *)asmf, (char *)obj, lib, "-lniftiio",
                     "-lznz", "-lz", "-lcjson", "-lm", "-lpthread", NULL };
    if (run_tool(argv, err, errlen) != 0) {
        unlink(tmp);
        return -1;
    }
    return publish(tmp, o->out, err, errlen);
}

static int build_bundle(const BuildOptions *o, const BuildPlan *b, Scratch *s, const char *obj, char *err,
                        size_t errlen)
{
    if (mkdir(o->bundle, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.2000s: %s", o->bundle, strerror(errno));
        return -1;
    }
    const char *csrc = scratch_path(s, "bundle.c"), *cobj = scratch_path(s, "bundle_run.o");
    if (!csrc || !cobj) { snprintf(err, errlen, "too many temporary files"); return -1; }
    if (write_text(csrc, bundle_c_writer, b, NULL, err, errlen) != 0) return -1;
    const char *cc = getenv("CC");
    if (!cc || !*cc || strchr(cc, ' ')) cc = "cc";
    char *argv1[] = { (char *)cc, "-O2", "-fPIC", "-c", "-o", (char *)cobj, (char *)csrc, NULL };
    if (run_tool(argv1, err, errlen) != 0) return -1;

    char path[3][PATH_MAX + 64], tmp[3][PATH_MAX + 96];
    static const char *ext[3] = { "o", "h", "weights" };
    for (int k = 0; k < 3; k++) {
        snprintf(path[k], sizeof path[k], "%.3000s/%.200s.%s", o->bundle, b->name, ext[k]);
        snprintf(tmp[k], sizeof tmp[k], "%.3500s.tmp.%ld", path[k], (long)getpid());
    }
    char *argv2[] = { (char *)cc, "-r", "-nostdlib", "-o", tmp[0], (char *)obj, (char *)cobj, NULL };
    int rc = run_tool(argv2, err, errlen);
    if (rc == 0) rc = write_text(tmp[1], header_writer, b, NULL, err, errlen);
    if (rc == 0) rc = write_file(tmp[2], b->weights, (size_t)b->weights_bytes, err, errlen);
    for (int k = 0; k < 3; k++) {
        if (rc == 0) rc = publish(tmp[k], path[k], err, errlen);
        else unlink(tmp[k]);
    }
    return rc;
}

static void sanitize_name(const char *in, char *out, size_t n)
{
    size_t i = 0;
    for (; in[i] && i + 1 < n; i++) {
        char c = in[i];
        out[i] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i && c >= '0' && c <= '9') ? c : '_';
    }
    out[i] = 0;
    if (!i) snprintf(out, n, "net");
}

static int build(const BuildOptions *o, const Graph *g, const Protocol *pr, char *err, size_t errlen)
{
    char rtdir[PATH_MAX];
    if (o->out && runtime_dir(rtdir, sizeof rtdir, err, errlen) != 0) return -1;
    StFile *f = st_read(o->weights, err, errlen);
    if (!f) return -1;
    BuildPlan b;
    memset(&b, 0, sizeof b);
    sanitize_name(o->name ? o->name : g->net_name, b.name, sizeof b.name);
    b.source = o->file;
    b.version = NETC_VERSION;
    FusionPlan *fp = fuse_graph(g, false);
    MemPlan *mp = fp ? memplan(g, fp) : NULL;
    L3Module *m = NULL;
    Scratch s;
    memset(&s, 0, sizeof s);
    int rc = -1;
    if (!fp || !mp) { snprintf(err, errlen, "out of memory while planning"); goto done; }
    if (build_plan(&b, g, pr, mp, f, o->mapping, err, errlen) != 0) goto done;
    m = lower_graph_fused(g, fp, false, err, errlen);
    if (!m) goto done;
    L3Entry *e = NULL;
    for (int i = 0; i < m->nentries; i++)
        if (strcmp(m->entries[i].name, "netc_forward") == 0) e = &m->entries[i];
    if (!e) { snprintf(err, errlen, "the generated code has no entry netc_forward"); goto done; }
    char entry[160];
    snprintf(entry, sizeof entry, "%s_forward", b.name);
    free(e->name);
    e->name = xstrdup(entry);

    const char *tmpdir = getenv("TMPDIR");
    snprintf(s.dir, sizeof s.dir, "%s/netc-build-XXXXXX", tmpdir && *tmpdir && !strpbrk(tmpdir, "\"\\\n") ? tmpdir : "/tmp");
    if (!mkdtemp(s.dir)) {
        snprintf(err, errlen, "cannot create a temporary folder %.2000s: %s", s.dir, strerror(errno));
        s.dir[0] = 0;
        goto done;
    }
    const char *obj = scratch_path(&s, "kernels.o"), *blob = scratch_path(&s, "weights.bin");
    if (l3_llvm_emit(m, obj, L3_LLVM_OBJECT, err, errlen) != 0) goto done;
    if (write_file(blob, b.weights, (size_t)b.weights_bytes, err, errlen) != 0) goto done;
    if (o->out && build_standalone(o, &b, &s, obj, blob, rtdir, err, errlen) != 0) goto done;
    if (o->bundle && build_bundle(o, &b, &s, obj, err, errlen) != 0) goto done;
    if (!o->quiet) {
        if (o->out)
            printf("wrote %s (%s for protocol %s: %d kernels, arena %lld bytes, weights %lld bytes)\n", o->out,
                   g->net_name, pr->name, m->nkernels, (long long)b.arena_bytes, (long long)b.weights_bytes);
        if (o->bundle)
            printf("wrote %s/%s.o, %s.h, %s.weights\n", o->bundle, b.name, b.name, b.name);
    }
    rc = 0;
done:
    scratch_free(&s);
    l3_module_free(m);
    build_plan_free(&b);
    memplan_free(mp);
    if (fp) fusion_plan_free(fp);
    st_free(f);
    return rc;
}

int netc_build_main(int argc, char **argv)
{
    BuildOptions o;
    int rc = parse(argc, argv, &o);
    if (rc) {
        netc_overrides_free(o.ov, o.nov);
        return rc < 0 ? 0 : rc;
    }
    Diag d;
    diag_init(&d, stderr);
    d.color = false;
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
    if (g && d.nerrors == 0 && pr) {
        char err[4096];
        if (build(&o, g, pr, err, sizeof err) != 0) {
            fprintf(stderr, "netc build: %s\n", err);
            status = 1;
        }
    } else {
        status = 1;
    }
    if (d.nerrors) fprintf(stderr, "%d error%s.\n", d.nerrors, d.nerrors == 1 ? "" : "s");
    protocol_free(pr);
    graph_free(g);
    program_free(p);
    diag_free(&d);
    return status;
}
