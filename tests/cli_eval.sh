#!/usr/bin/env bash
# cli_eval.sh — `netc eval` (metrics between label maps) and `netc overlay`
# (PNG pictures) as a user meets them: known answers on tiny synthetic NIfTI
# files, folder mode, mismatches, bad command lines, atomic outputs.
# Usage: NETC=build/netc bash tests/cli_eval.sh
. "$(dirname "$0")/cli_lib.sh"

# mk OUT NX NY NZ SX SY SZ BOXES...: a uint8 NIfTI-1 label map (gzip when OUT
# ends in .gz); each box is LABEL:X0-X1:Y0-Y1:Z0-Z1 (inclusive voxel ranges).
# A label "f" writes float32 with the value 0.5 in the box (not a label).
cat >"$tmp/mk.py" <<'EOF'
import gzip, struct, sys
out, nx, ny, nz = sys.argv[1], *map(int, sys.argv[2:5])
sx, sy, sz = map(float, sys.argv[5:8])
vals = [0.0] * (nx * ny * nz)
flt = False
for box in sys.argv[8:]:
    lab, *r = box.split(":")
    (x0, x1), (y0, y1), (z0, z1) = [map(int, a.split("-")) for a in r]
    v = 0.5 if lab == "f" else float(lab)
    flt = flt or lab == "f"
    for z in range(z0, z1 + 1):
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                vals[(z * ny + y) * nx + x] = v
hdr = bytearray(348)
struct.pack_into("<i", hdr, 0, 348)
struct.pack_into("<8h", hdr, 40, 3, nx, ny, nz, 1, 1, 1, 1)
struct.pack_into("<hh", hdr, 70, *((16, 32) if flt else (2, 8)))
struct.pack_into("<8f", hdr, 76, 1, sx, sy, sz, 1, 1, 1, 1)
struct.pack_into("<f", hdr, 108, 352.0)
struct.pack_into("<f", hdr, 112, 1.0)
struct.pack_into("<h", hdr, 254, 1)                                  # sform_code
for row, vec in enumerate([(sx, 0, 0, -10), (0, sy, 0, -20), (0, 0, sz, 5)]):
    struct.pack_into("<4f", hdr, 280 + 16 * row, *vec)
hdr[344:348] = b"n+1\0"
data = struct.pack(f"<{len(vals)}f", *vals) if flt else bytes(int(v) for v in vals)
blob = bytes(hdr) + b"\0\0\0\0" + data
(gzip.open if out.endswith(".gz") else open)(out, "wb").write(blob)
EOF
mk() { python3 "$tmp/mk.py" "$@" || { echo "mk.py failed: $*"; exit 1; }; }

# ---- netc eval ---------------------------------------------------------
expect 0 "eval --help" -- "$NETC" eval --help
contains "eval --help" "usage: netc eval"
expect 2 "eval without files" -- "$NETC" eval
contains "eval without files" "usage: netc eval"
expect 2 "eval one file" -- "$NETC" eval "$tmp/a.nii"
expect 2 "eval unknown option" -- "$NETC" eval a b --frobnicate
expect 2 "eval bad tolerance" -- "$NETC" eval a b --tolerance -1
expect 2 "eval bad labels" -- "$NETC" eval a b --labels 1,x
expect 2 "eval label 0" -- "$NETC" eval a b --labels 0
expect 2 "eval --csv without value" -- "$NETC" eval a b --csv

# A 6-voxel cube and the same cube shifted by 2 voxels along x, spacing
# (0.5, 1.5, 2) mm: Dice 2/3, IoU 1/2, HD95 1 mm, ASSD 62/152 mm, NSD(1 mm) 1
# (tests/test_metrics.c works these out).
mk "$tmp/gt.nii.gz" 12 8 9 0.5 1.5 2 3:1-6:1-6:1-6
mk "$tmp/pred.nii" 12 8 9 0.5 1.5 2 3:3-8:1-6:1-6
expect 0 "eval shifted cube" -- "$NETC" eval "$tmp/pred.nii" "$tmp/gt.nii.gz"
contains "eval shifted cube" "gt        3    0.6667    0.5000     1.0000     0.4079    1.0000"
contains "eval shifted cube" "summary over 1 case"
expect 0 "eval --tolerance" -- "$NETC" eval "$tmp/pred.nii" "$tmp/gt.nii.gz" --tolerance 0.5
contains "eval --tolerance" "0.6579"
expect 0 "eval -q" -- "$NETC" eval -q "$tmp/pred.nii" "$tmp/gt.nii.gz"
[ -s "$tmp/out" ] && bad "eval -q printed something" || ok

# folder mode, two classes, an empty prediction, the CSV
mkdir -p "$tmp/P" "$tmp/G"
cp "$tmp/pred.nii" "$tmp/P/a.nii"
cp "$tmp/gt.nii.gz" "$tmp/G/a.nii.gz"
mk "$tmp/G/b.nii.gz" 12 8 9 0.5 1.5 2 3:1-6:1-6:1-6 1:9-10:1-2:1-2
mk "$tmp/P/b.nii.gz" 12 8 9 0.5 1.5 2 1:9-10:1-2:1-2
echo '{}' >"$tmp/G/dataset.json"
expect 0 "eval folders" -- "$NETC" eval "$tmp/P" "$tmp/G" --csv "$tmp/m.csv"
contains "eval folders" "b         1    1.0000    1.0000     0.0000     0.0000    1.0000"
contains "eval folders" "b         3    0.0000    0.0000        nan        inf    0.0000"
contains "eval folders" "a         1       nan       nan        nan        nan       nan"
contains "eval folders" "summary over 2 cases"
contains "eval folders" "    3  dice        0.3333      0.3333      2      0"
contains "eval folders" "    1  dice        1.0000      0.0000      1      1"
[ -f "$tmp/m.csv" ] && ok || bad "eval folders: no CSV"
head -1 "$tmp/m.csv" >"$tmp/out"
contains "csv header" "case,class,dice,iou,hd95,assd,nsd"
cp "$tmp/m.csv" "$tmp/out"
contains "csv row" "b,3,0,0,nan,inf,0"
contains "csv mean row" "mean,3,0.333333333,0.25,1,inf,0.5"
contains "csv sd row" "sd,1,0,0,0,0,0"
expect 0 "eval --labels" -- "$NETC" eval "$tmp/P" "$tmp/G" --labels 3
grep -q "^a   *1 " "$tmp/out" && bad "eval --labels 3 printed class 1" || ok

# mismatches: exit 1, a message naming the files, the CSV left alone
cp "$tmp/m.csv" "$tmp/m.before"
mk "$tmp/small.nii" 10 8 9 0.5 1.5 2 3:1-6:1-6:1-6
expect 1 "eval shape mismatch" -- "$NETC" eval "$tmp/small.nii" "$tmp/gt.nii.gz" --csv "$tmp/m.csv"
contains "eval shape mismatch" "shape mismatch"
contains "eval shape mismatch" "$tmp/small.nii is 10x8x9"
contains "eval shape mismatch" "$tmp/gt.nii.gz is 12x8x9"
cmp -s "$tmp/m.csv" "$tmp/m.before" && ok || bad "a failed eval changed the CSV"
mk "$tmp/sp.nii" 12 8 9 0.5 1.5 3 3:1-6:1-6:1-6
expect 1 "eval spacing mismatch" -- "$NETC" eval "$tmp/sp.nii" "$tmp/gt.nii.gz"
contains "eval spacing mismatch" "spacing mismatch"
mk "$tmp/flt.nii" 12 8 9 0.5 1.5 2 f:1-2:1-2:1-2
expect 1 "eval non-label values" -- "$NETC" eval "$tmp/flt.nii" "$tmp/gt.nii.gz"
contains "eval non-label values" "$tmp/flt.nii: voxel (1, 1, 1) has value 0.5"
mk "$tmp/P/c.nii" 12 8 9 0.5 1.5 2
expect 1 "eval case without reference" -- "$NETC" eval "$tmp/P" "$tmp/G"
contains "eval case without reference" "case c"
rm "$tmp/P/c.nii"
rm "$tmp/P/b.nii.gz"
expect 1 "eval case without prediction" -- "$NETC" eval "$tmp/P" "$tmp/G"
contains "eval case without prediction" "case b"
expect 1 "eval file against folder" -- "$NETC" eval "$tmp/pred.nii" "$tmp/G"
contains "eval file against folder" "two files or two folders"
expect 1 "eval missing file" -- "$NETC" eval "$tmp/nope.nii" "$tmp/gt.nii.gz"
contains "eval missing file" "$tmp/nope.nii"
printf 'not a nifti file at all' >"$tmp/junk.nii"
expect 1 "eval malformed file" -- "$NETC" eval "$tmp/junk.nii" "$tmp/gt.nii.gz"
contains "eval malformed file" "$tmp/junk.nii"
mk "$tmp/empty.nii" 12 8 9 0.5 1.5 2
expect 1 "eval no labels anywhere" -- "$NETC" eval "$tmp/empty.nii" "$tmp/empty.nii"
contains "eval no labels anywhere" "no label > 0"
expect 0 "eval absent label" -- "$NETC" eval "$tmp/pred.nii" "$tmp/gt.nii.gz" --labels 7
contains "eval absent label" "nan"

# against an independent numpy implementation of MONAI's definitions
# (surfaces by 6-neighbour erosion, brute-force distances, np.percentile) on
# two anisotropic blobs with speckles; skipped without numpy
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
    cat >"$tmp/xcheck.py" <<'EOF'
# independent numpy reference of MONAI's definitions (brute-force distances)
import sys, struct, numpy as np
out = sys.argv[1]
rng = np.random.default_rng(7)
nz, ny, nx = 20, 26, 30
sp = (1.7, 0.6, 0.9)  # (z, y, x) mm
z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
def blob(cz, cy, cx, r):
    d = np.sqrt(((z - cz) * sp[0]) ** 2 + ((y - cy) * sp[1]) ** 2 + ((x - cx) * sp[2]) ** 2)
    return d < r
gt = np.zeros((nz, ny, nx), np.uint8); pr = np.zeros_like(gt)
gt[blob(10, 12, 14, 9)] = 1; gt[blob(6, 8, 22, 4)] = 2
pr[blob(11, 13, 13, 8.5)] = 1; pr[blob(6, 9, 21, 4.5)] = 2
pr[(rng.random(pr.shape) < 0.01)] = 1   # speckles
def write(path, arr):
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 2, 8)
    struct.pack_into("<8f", hdr, 76, 1, sp[2], sp[1], sp[0], 1, 1, 1, 1)
    struct.pack_into("<f", hdr, 108, 352.0)
    struct.pack_into("<f", hdr, 112, 1.0)
    hdr[344:348] = b"n+1\0"
    open(path, "wb").write(bytes(hdr) + b"\0" * 4 + arr.astype(np.uint8).tobytes())
write(out + "/xp.nii", pr); write(out + "/xg.nii", gt)
def surface(m):
    p = np.pad(m, 1)
    inner = p[1:-1, 1:-1, 1:-1].copy()
    for ax in range(3):
        for s in (1, -1):
            inner &= np.roll(p, s, axis=ax)[1:-1, 1:-1, 1:-1]
    return m & ~inner
def directed(a, b):
    pa = np.argwhere(a) * np.array(sp); pb = np.argwhere(b) * np.array(sp)
    return np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(1)
with open(out + "/want.csv", "w") as f:
    for c in (1, 2):
        P, G = pr == c, gt == c
        tp = (P & G).sum()
        dice = 2 * tp / (P.sum() + G.sum()); iou = tp / (P | G).sum()
        d1, d2 = directed(surface(P), surface(G)), directed(surface(G), surface(P))
        hd = max(np.percentile(d1, 95), np.percentile(d2, 95))
        both = np.concatenate([d1, d2])
        f.write("%d %.9g %.9g %.9g %.9g %.9g\n" % (c, dice, iou, hd, both.mean(), (both <= 1.0).mean()))
EOF
    /usr/bin/python3 "$tmp/xcheck.py" "$tmp" || bad "xcheck.py failed"
    expect 0 "eval vs numpy" -- "$NETC" eval "$tmp/xp.nii" "$tmp/xg.nii" --csv "$tmp/x.csv" -q
    if /usr/bin/python3 - "$tmp/want.csv" "$tmp/x.csv" >"$tmp/out" 2>&1 <<'EOF'
import sys
want = [l.split() for l in open(sys.argv[1])]
got = {l.split(",")[1]: l.strip().split(",")[2:] for l in open(sys.argv[2]) if l.startswith("xg,")}
for w in want:
    for a, b in zip(w[1:], got[w[0]]):
        if abs(float(a) - float(b)) > 1e-6 * (1 + abs(float(a))):
            print("class", w[0], "numpy", w[1:], "netc", got[w[0]]); sys.exit(1)
EOF
    then ok; else bad "eval differs from numpy"; cat "$tmp/out"; fi
else
    echo "cli_eval: no numpy for /usr/bin/python3; skipped the numpy cross-check"
fi

# ---- netc overlay ------------------------------------------------------
expect 0 "overlay --help" -- "$NETC" overlay --help
contains "overlay --help" "usage: netc overlay"
expect 2 "overlay without files" -- "$NETC" overlay
contains "overlay without files" "usage: netc overlay"
expect 2 "overlay without -o" -- "$NETC" overlay a.nii b.nii
expect 2 "overlay --slice and --montage" -- "$NETC" overlay a.nii b.nii --slice 3 --montage 4 -o "$tmp/x.png"
expect 2 "overlay bad axis" -- "$NETC" overlay a.nii b.nii --axis w -o "$tmp/x.png"
expect 2 "overlay bad montage" -- "$NETC" overlay a.nii b.nii --montage 0 -o "$tmp/x.png"
expect 2 "overlay bad alpha" -- "$NETC" overlay a.nii b.nii --fill --alpha 2 -o "$tmp/x.png"

is_png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; }
[ -d build/data/Colin27Tiny ] || bash scripts/fetch_colin27.sh >/dev/null 2>&1
ct=build/data/Colin27Tiny
if [ -d "$ct" ]; then
    img=$ct/imagesTr/tiny_lower_0000.nii.gz lab=$ct/labelsTr/tiny_lower.nii.gz
    expect 0 "overlay Colin27Tiny" -- "$NETC" overlay "$img" "$lab" -o "$tmp/o1.png"
    is_png "$tmp/o1.png" && ok || bad "overlay Colin27Tiny: not a PNG"
    expect 0 "overlay montage with reference" -- "$NETC" overlay "$img" "$lab" --ref "$lab" --axis y --montage 4 --fill -o "$tmp/o2.png"
    is_png "$tmp/o2.png" && ok || bad "overlay montage: not a PNG"
    expect 0 "overlay sagittal slice" -- "$NETC" overlay "$img" "$lab" --axis x --slice 10 --scale 2 -o "$tmp/o3.png"
    is_png "$tmp/o3.png" && ok || bad "overlay sagittal: not a PNG"
    # bad inputs: exit 1, no output created, an existing one left alone
    expect 1 "overlay labels on another grid" -- "$NETC" overlay "$img" "$ct/labelsTr/tiny_upper.nii.gz" -o "$tmp/o4.png"
    contains "overlay labels on another grid" "mismatch"
    [ -e "$tmp/o4.png" ] && bad "a failed overlay created its output" || ok
    expect 1 "overlay missing image" -- "$NETC" overlay "$tmp/nope.nii" "$lab" -o "$tmp/o4.png"
    contains "overlay missing image" "$tmp/nope.nii"
    [ -e "$tmp/o4.png" ] && bad "a failed overlay created its output" || ok
    expect 1 "overlay an image as labels" -- "$NETC" overlay "$img" "$img" -o "$tmp/o4.png"
    contains "overlay an image as labels" "not a label"
    cp "$tmp/o1.png" "$tmp/o1.before"
    expect 1 "overlay slice out of range" -- "$NETC" overlay "$img" "$lab" --slice 999 -o "$tmp/o1.png"
    contains "overlay slice out of range" "out of range"
    cmp -s "$tmp/o1.png" "$tmp/o1.before" && ok || bad "a failed overlay changed an existing PNG"
    ls "$tmp"/*.tmp-* >/dev/null 2>&1 && bad "overlay left a temporary file" || ok
else
    echo "cli_eval: $ct missing (bash scripts/fetch_colin27.sh); skipped the Colin27 overlay checks"
fi

cli_done eval
