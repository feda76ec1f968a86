/* cmd_plan.c — `netc plan DATA`: fingerprint an nnU-Net raw dataset and write
 * the protocols nnU-Net's planning rules give for it (runtime/plan.h,
 * docs/plan.md). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic_file.h"
#include "commands.h"
#include "plan.h"

static const char *usage_plan =
    "usage: netc plan DATA [-o FILE.net] [--name NAME] [--budget GB] [--json FINGERPRINT.json]\n"
    "\n"
    "Fingerprints the dataset DATA (nnU-Net raw format: dataset.json, imagesTr, labelsTr):\n"
    "per case the spacing and the shape before and after cropping to the nonzero box, per\n"
    "channel the foreground intensity statistics; then plans a 3D and a 2D configuration with\n"
    "nnU-Net's rules (target spacing, patch, poolings per axis, batch, normalization) and prints\n"
    "both as tables (docs/plan.md).\n"
    "\n"
    "  -o FILE.net      write `protocol NAME_3d` and `protocol NAME_2d` (atomically); without -o\n"
    "                   the protocols are printed after the tables\n"
    "  --name NAME      protocol name stem (default: the dataset's name in lower case)\n"
    "  --budget GB      GPU memory the patch and batch are sized for (default 8, nnU-Net's):\n"
    "                   nnU-Net's feature-map voxel references: 560 M at batch 2 (3D) and\n"
    "                   85 M at batch 12 (2D) per 8 GB\n"
    "  --json FILE      also write the fingerprint as JSON (atomically)\n"
    "\n"
    "Use the written file from a net's file:  import \"FILE.net\"  and  --protocol NAME_3d.\n";

static int plan_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "netc plan: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%.*s(run `netc plan --help` for the options)\n", (int)(strchr(usage_plan, '\n') - usage_plan + 1),
            usage_plan);
    return 2;
}

int netc_plan_main(int argc, char **argv)
{
    const char *data = NULL, *out = NULL, *name = NULL, *json = NULL;
    PlanOptions o = { PLAN_REF_GB, PLAN_BASE_FEATURES };
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_plan, stdout);
            return 0;
        }
        if (strcmp(a, "-o") == 0 || strcmp(a, "--name") == 0 || strcmp(a, "--budget") == 0 || strcmp(a, "--json") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0]) return plan_usage_error("%s needs a value", a);
            const char *v = argv[++i];
            if (a[1] == 'o') out = v;
            else if (a[2] == 'n') name = v;
            else if (a[2] == 'j') json = v;
            else {
                char *end;
                errno = 0;
                double gb = strtod(v, &end);
                if (end != v && (strcmp(end, "G") == 0 || strcmp(end, "GB") == 0 || strcmp(end, "g") == 0)) end += strlen(end);
                if (end == v || *end || errno || !(gb >= 0.25 && gb <= 1024))
                    return plan_usage_error("--budget takes GB of GPU memory between 0.25 and 1024, not `%s`", v);
                o.budget_gb = gb;
            }
            continue;
        }
        if (a[0] == '-' && a[1]) return plan_usage_error("unknown option `%s`", a);
        if (data) return plan_usage_error("unexpected argument `%s` (one DATA folder only)", a);
        data = a;
    }
    if (!data) return plan_usage_error("%s", "missing DATA (a dataset folder in nnU-Net's raw format)");
    if (name && !plan_valid_name(name))
        return plan_usage_error("--name `%s` is not a name the language accepts (letters, digits, _; not a keyword)", name);

    char err[2048] = "";
    PlanFingerprint fp;
    if (plan_fingerprint(data, &fp, err, sizeof err) != 0) {
        fprintf(stderr, "netc plan: %s\n", err);
        return 1;
    }
    int rc = 1;
    char *text = NULL;
    Plan pl;
    char stem[128];
    if (plan_compute(&fp, &o, &pl, err, sizeof err) != 0) goto fail;
    if (name) snprintf(stem, sizeof stem, "%s", name);
    else plan_default_name(fp.dataset, stem, sizeof stem);
    if (!(text = plan_protocol_text(&fp, &pl, stem, err, sizeof err))) goto fail;
    plan_print(stdout, &fp, &pl);
    if (json && plan_fingerprint_write_json(&fp, json, err, sizeof err) != 0) goto fail;
    if (out) {
        if (atomic_write(out, text, strlen(text), err, sizeof err) != 0) goto fail;
        printf("\nwrote %s: protocol %s_3d, protocol %s_2d\n", out, stem, stem);
    } else
        printf("\n%s", text);
    if (json) printf("wrote %s: the fingerprint\n", json);
    rc = 0;
    goto done;
fail:
    fflush(stdout);
    fprintf(stderr, "netc plan: %s\n", err);
done:
    free(text);
    plan_fingerprint_free(&fp);
    return rc;
}
