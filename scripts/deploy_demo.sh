#!/usr/bin/env bash
# scripts/deploy_demo.sh — `make deploy-demo`: the demo's trained model as a
# deployable binary, checked on real data (docs/demo.md).
#
#   1. the demo's weights (RUN/model_best.safetensors, else model_last; the
#      demo is trained first when RUN has neither);
#   2. `netc build` → one standalone executable for colin27_axial_2mm
#      (AOT kernels + embedded weights, no libLLVM: `ldd` is printed);
#   3. the binary segments the whole Colin27 head (181x217x181 at 1 mm: the
#      training slabs are part of it, so this is not a held-out score) and
#      the held-out slab (z 100-129, never trained on);
#   4. `netc eval` scores both against the brain mask (ch2bet > 0), and
#      `netc overlay` draws the full-volume result next to the reference.
# Last line:
#   deploy: binary_mb=S full_seconds=T full_dice=D full_hd95=H slab_seconds=T slab_dice=D slab_hd95=H
set -euo pipefail
cd "$(dirname "$0")/.."
NETC=${NETC:-build/netc}
RUN=${RUN:-build/demo-run}
OUT=${OUT:-build/deploy}
DATA=build/data
bash scripts/fetch_colin27.sh
TEMPLATES=$DATA/pkg/usr/share/mricron/templates
DS=$DATA/Dataset001_Colin27BET

weights=$RUN/model_best.safetensors
[ -f "$weights" ] || weights=$RUN/model_last.safetensors
if [ ! -f "$weights" ]; then
    echo "deploy_demo: no trained weights in $RUN: training the demo first (make demo)" >&2
    NETC="$NETC" RUN="$RUN" bash scripts/demo.sh
    weights=$RUN/model_best.safetensors
    [ -f "$weights" ] || weights=$RUN/model_last.safetensors
fi

mkdir -p "$OUT"
# the whole head's reference: the brain mask as labels (0/1), same header
/usr/bin/python3 - "$TEMPLATES/ch2bet.nii.gz" "$OUT/ch2_brain.nii.gz" <<'EOF'
import gzip, os, struct, sys
raw = bytearray(gzip.open(sys.argv[1], "rb").read())
if len(raw) < 352 or struct.unpack_from("<i", raw, 0)[0] != 348 or struct.unpack_from("<h", raw, 70)[0] != 2:
    sys.exit("deploy_demo: %s is not the uint8 NIfTI-1 volume expected" % sys.argv[1])
off = int(struct.unpack_from("<f", raw, 108)[0])
raw[off:] = bytes(1 if v else 0 for v in raw[off:])
struct.pack_into("<ff", raw, 124, 1.0, 0.0)          # cal_max, cal_min
tmp = sys.argv[2] + ".tmp"
with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
    g.write(bytes(raw))
os.replace(tmp, sys.argv[2])
EOF

BIN=$OUT/colin27_bet
"$NETC" build netdefs/colin27.net --protocol colin27_axial_2mm -D base=16 --weights "$weights" -o "$BIN"
echo "built $BIN from $weights: $(du -k "$BIN" | cut -f1) KiB"
echo "ldd $BIN:"
ldd "$BIN" | sed 's/^/    /'
if ldd "$BIN" | grep -qi llvm; then echo "deploy_demo: $BIN depends on LLVM" >&2; exit 1; fi

seconds() { local a b; a=$(date +%s.%N); "$@"; b=$(date +%s.%N); awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b - a }'; }
t_full=$(seconds "$BIN" "$TEMPLATES/ch2.nii.gz" "$OUT/full_seg.nii.gz" -q)
t_slab=$(seconds "$BIN" "$DS/imagesTs/colin27_slab_0000.nii.gz" "$OUT/slab_seg.nii.gz" -q)
"$NETC" eval "$OUT/full_seg.nii.gz" "$OUT/ch2_brain.nii.gz" --csv "$OUT/full_eval.csv"
"$NETC" eval "$OUT/slab_seg.nii.gz" "$DS/labelsTs/colin27_slab.nii.gz" --csv "$OUT/slab_eval.csv"
"$NETC" overlay "$TEMPLATES/ch2.nii.gz" "$OUT/full_seg.nii.gz" --ref "$OUT/ch2_brain.nii.gz" --montage 6 \
    -o "$OUT/full_overlay.png"
echo "overlay: $OUT/full_overlay.png (prediction left, reference right)"

# column 3 = dice, 5 = hd95 of class 1's per-case row
metric() { awk -F, -v col="$2" '$2 == "1" && $1 != "mean" && $1 != "sd" && $1 != "case" { print $col; exit }' "$1"; }
mb=$(awk -v k="$(du -k "$BIN" | cut -f1)" 'BEGIN { printf "%.1f", k / 1024 }')
echo "deploy: binary_mb=$mb full_seconds=$t_full full_dice=$(metric "$OUT/full_eval.csv" 3)" \
     "full_hd95=$(metric "$OUT/full_eval.csv" 5) slab_seconds=$t_slab slab_dice=$(metric "$OUT/slab_eval.csv" 3)" \
     "slab_hd95=$(metric "$OUT/slab_eval.csv" 5)"
