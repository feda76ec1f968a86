# cli_infer.sh — `netc infer`: whole-scan sliding-window inference.
#   NETC=build/netc bash tests/cli_infer.sh
. "$(dirname "$0")/cli_lib.sh"

small=(netdefs/unet2d.net -D base=4 -D protocol.size=32x32)
/usr/bin/python3 tests/make_test_nifti.py "$tmp/in.nii" 32 32
/usr/bin/python3 tests/make_test_nifti.py "$tmp/big.nii" 45 37
expect 0 "netc init (small unet2d)" -- "$NETC" init "${small[@]}" --seed 5 -o "$tmp/w.safetensors"

# a folder in nnU-Net's layout: case a is exactly one patch, and with one window, no mirroring and
# constant weights its labels are netc run's, byte for byte; case b is larger than the patch
mkdir -p "$tmp/imgs"
cp "$tmp/in.nii" "$tmp/imgs/a_0000.nii"
cp "$tmp/big.nii" "$tmp/imgs/b_0000.nii"
expect 0 "netc infer on a folder" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/imgs" --output "$tmp/segs" --probabilities "$tmp/probs" --no-tta --constant-weights \
    --step 0.3 --batch 2
contains "netc infer on a folder" "1 windows"
contains "netc infer on a folder" "peak memory"
expect 0 "netc run on the one-patch case" -- "$NETC" run "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/in.nii" --output "$tmp/run.nii"
cmp -s "$tmp/segs/a.nii" "$tmp/run.nii" && ok || bad "netc infer and netc run disagree on a one-patch input"
[ -s "$tmp/segs/b.nii" ] && [ -s "$tmp/probs/b.nii" ] && ok || bad "netc infer on a folder: missing outputs"
/usr/bin/python3 - "$tmp/segs/b.nii" "$tmp/probs/b.nii" <<'PY' && ok || bad "netc infer: outputs on the wrong grid"
import struct, sys
def head(p):
    b = open(p, "rb").read()
    return struct.unpack_from("<8h", b, 40), struct.unpack_from("<h", b, 70)[0]
(d, t), (pd, pt) = head(sys.argv[1]), head(sys.argv[2])
assert d[1:4] == (45, 37, 1) and t == 2, (d, t)            # uint8 labels on the input's grid
assert pd[0] == 4 and pd[1:5] == (45, 37, 1, 2) and pt == 16, (pd, pt)   # 2 float channels
PY

# bad command lines (2) and bad inputs (1): clear messages, an existing output untouched
cp "$tmp/run.nii" "$tmp/keep.nii"
expect 0 "netc infer --help" -- "$NETC" infer --help
contains "netc infer --help" "usage: netc infer"
expect 2 "netc infer --step 0" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/in.nii" --output "$tmp/keep.nii" --step 0
contains "netc infer --step 0" "--step"
expect 2 "netc infer --step 1.5" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/in.nii" --output "$tmp/keep.nii" --step 1.5
expect 2 "netc infer without --weights" -- "$NETC" infer "${small[@]}" --input "$tmp/in.nii" --output "$tmp/keep.nii"
contains "netc infer without --weights" "usage:"
expect 2 "netc infer --mirror z on a 2D net" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/in.nii" --output "$tmp/keep.nii" --mirror zyx
expect 2 "netc infer --mirror q" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/in.nii" --output "$tmp/keep.nii" --mirror q
expect 2 "netc infer --largest-component some" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/in.nii" --output "$tmp/keep.nii" --largest-component some
expect 2 "netc infer to a .png" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/in.nii" --output "$tmp/keep.png"
expect 1 "netc infer: missing input" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/none.nii" --output "$tmp/keep.nii"
contains "netc infer: missing input" "none.nii"
expect 1 "netc infer: wrong channel count" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/in.nii" --input "$tmp/in.nii" --output "$tmp/keep.nii"
contains "netc infer: wrong channel count" "takes 1 channel(s)"
expect 1 "netc infer: missing weights" -- "$NETC" infer "${small[@]}" --weights "$tmp/nowhere.safetensors" \
    --input "$tmp/in.nii" --output "$tmp/keep.nii"
contains "netc infer: missing weights" "nowhere.safetensors"
expect 1 "netc infer: ct without statistics" -- "$NETC" infer "${small[@]}" -D protocol.normalize=ct \
    --weights "$tmp/w.safetensors" --input "$tmp/in.nii" --output "$tmp/keep.nii"
contains "netc infer: ct without statistics" "statistics"
/usr/bin/python3 - "$tmp/w.safetensors" "$tmp/wct.safetensors" <<'PY' && ok || bad "could not add statistics metadata"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack_from("<Q", b, 0)[0]
h = json.loads(b[8:8 + n])
h.setdefault("__metadata__", {}).update({"netc.stats.0.mean": "20", "netc.stats.0.sd": "25",
                                         "netc.stats.0.p005": "1", "netc.stats.0.p995": "90"})
t = json.dumps(h).encode()
t += b" " * (-len(t) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(t)) + t + b[8 + n:])
PY
expect 0 "netc infer: ct with the statistics in the weights" -- "$NETC" infer "${small[@]}" -D protocol.normalize=ct \
    --weights "$tmp/wct.safetensors" --input "$tmp/in.nii" --output "$tmp/ct.nii" -q
[ -s "$tmp/ct.nii" ] && ok || bad "netc infer: ct with statistics wrote nothing"
expect 1 "netc infer: a folder without cases" -- "$NETC" infer "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/segs" --output "$tmp/segs2"
contains "netc infer: a folder without cases" "_0000"
cmp -s "$tmp/run.nii" "$tmp/keep.nii" && ok || bad "a failed netc infer changed an existing output"

# real data: the tiny Colin27 model trained as in cli_test.sh, then its held-out slab segmented on
# the scan's own grid (an ensemble of the model with itself, mirroring, Gaussian weights, the largest
# component, a PNG overlay, quiet); Dice against labelsTs >= 0.85 (0.976 measured)
bash scripts/fetch_colin27.sh >/dev/null 2>&1 && ok || bad "scripts/fetch_colin27.sh failed"
tiny=(tests/nets/colin27_tiny.net --protocol colin27_tiny -D base=4 -D depth=3)
expect 0 "netc train (tiny Colin27)" -- "$NETC" train "${tiny[@]}" --data build/data/Colin27Tiny --out "$tmp/run" -q
ts=build/data/Colin27Tiny
expect 0 "netc infer on the held-out slab" -- "$NETC" infer "${tiny[@]}" --weights "$tmp/run/model_last.safetensors" \
    --weights "$tmp/run/model_last.safetensors" --input $ts/imagesTs/tiny_slab_0000.nii.gz \
    --output "$tmp/slab.nii.gz" --largest-component all --connectivity 26 --png "$tmp/slab.png" -q
[ ! -s "$tmp/out" ] && ok || bad "netc infer -q printed something: $(head -3 "$tmp/out")"
[ "$(head -c 4 "$tmp/slab.png" | od -An -c | tr -d ' ')" = "211PNG" ] && ok || bad "netc infer --png: not a PNG"
d=$(/usr/bin/python3 - "$tmp/slab.nii.gz" $ts/labelsTs/tiny_slab.nii.gz <<'PY'
import gzip, struct, sys
def load(p):
    b = open(p, "rb").read()
    if b[:2] == b"\x1f\x8b":
        b = gzip.decompress(b)
    dim = struct.unpack_from("<8h", b, 40)
    fmt = {2: "B", 4: "h", 8: "i", 16: "f", 64: "d", 256: "b", 512: "H"}[struct.unpack_from("<h", b, 70)[0]]
    n = dim[1] * dim[2] * dim[3]
    return dim[1:4], struct.unpack_from("<%d%s" % (n, fmt), b, int(struct.unpack_from("<f", b, 108)[0]))
(da, a), (db, b) = load(sys.argv[1]), load(sys.argv[2])
if da != db:
    sys.exit("grids differ: %s vs %s" % (da, db))
tp = sum(1 for x, y in zip(a, b) if x > 0 and y > 0)
s = sum(1 for x in a if x > 0) + sum(1 for y in b if y > 0)
print("%.4f" % (2.0 * tp / s if s else 1.0))
PY
)
awk -v d="$d" 'BEGIN { exit !(d >= 0.85) }' && ok || bad "netc infer: held-out Dice '$d' < 0.85"

cli_done infer
