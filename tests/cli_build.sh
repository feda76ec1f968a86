#!/usr/bin/env bash
# cli_build.sh — `netc build`: standalone executables without LLVM that give
# `netc run` / `netc infer`'s labels byte for byte, their refusals, and the
# embeddable bundle with the example program of docs/build.md.
# Usage: NETC=build/netc tests/cli_build.sh
. "$(dirname "$0")/cli_lib.sh"

py=/usr/bin/python3
small=(-D base=4 -D depth=2 -D protocol.size=32x32)

# ---- the command line ----------------------------------------------------
expect 0 "netc build --help" -- "$NETC" build --help
contains "netc build --help" "usage: netc build"
expect 2 "netc build without --weights" -- "$NETC" build netdefs/unet2d.net -o "$tmp/x"
contains "netc build without --weights" "--weights W.safetensors is required"
expect 2 "netc build with nothing to build" -- "$NETC" build netdefs/unet2d.net --weights "$tmp/w.safetensors"
expect 2 "netc build unknown option" -- "$NETC" build netdefs/unet2d.net --frobnicate
expect 1 "netc build: missing weights" -- "$NETC" build netdefs/unet2d.net "${small[@]}" --weights "$tmp/none.safetensors" -o "$tmp/x"
contains "netc build: missing weights" "none.safetensors"

# ---- a small 2D U-Net: standalone = netc run --backend llvm --------------
"$py" tests/make_test_nifti.py "$tmp/in.nii" 32 32
"$py" tests/make_test_nifti.py "$tmp/big.nii" 48 64 3
expect 0 "netc init" -- "$NETC" init netdefs/unet2d.net "${small[@]}" --seed 7 -o "$tmp/w.safetensors"
mkdir "$tmp/scratch"
expect 0 "netc build" -- env TMPDIR="$tmp/scratch" "$NETC" build netdefs/unet2d.net "${small[@]}" --weights "$tmp/w.safetensors" \
    -o "$tmp/seg" --bundle "$tmp/bundle"
contains "netc build" "wrote $tmp/seg (unet2d for protocol t1_brain_axial"
[ -x "$tmp/seg" ] && ok || bad "no executable"
ldd "$tmp/seg" >"$tmp/ldd" 2>&1 && ok || bad "ldd failed on the standalone binary"
grep -qi llvm "$tmp/ldd" && bad "the standalone binary links LLVM: $(grep -i llvm "$tmp/ldd")" || ok
rt=$(dirname "$NETC")/libnetcrt.a
nm -u "$rt" | grep -qi llvm && bad "$rt references LLVM" || ok
ls "$tmp"/seg.tmp.* "$tmp"/bundle/*.tmp.* >/dev/null 2>&1 && bad "temporary files were left behind" || ok
[ -z "$(ls -A "$tmp/scratch")" ] && ok || bad "netc build left its temporary folder: $(ls -A "$tmp/scratch")"

expect 0 "standalone --help" -- "$tmp/seg" --help
contains "standalone --help" "protocol:   t1_brain_axial"
contains "standalone --help" "patch:      32 x 32 (2D slices, y x x), batch 1"
contains "standalone --help" "classes:    2 (background, brain)"
contains "standalone --help" "built by netc"

# the weights are inside: the binary runs without the safetensors file, from anywhere
mv "$tmp/w.safetensors" "$tmp/w.away"
expect 0 "standalone on one patch" -- sh -c 'cd / && exec "$1" "$2" "$3" --no-tta' sh "$tmp/seg" "$tmp/in.nii" "$tmp/a.nii"
mv "$tmp/w.away" "$tmp/w.safetensors"
expect 0 "netc run --backend llvm" -- "$NETC" run netdefs/unet2d.net "${small[@]}" --weights "$tmp/w.safetensors" \
    --backend llvm --input "$tmp/in.nii" --output "$tmp/b.nii"
cmp -s "$tmp/a.nii" "$tmp/b.nii" && ok || bad "the standalone binary and netc run --backend llvm differ"
# the labels are not trivially constant (else the comparison proves little)
"$py" - "$tmp/b.nii" <<'PY' && ok || bad "netc run's labels are constant"
import struct, sys
raw = open(sys.argv[1], "rb").read()
data = raw[int(struct.unpack("<f", raw[108:112])[0]):]
sys.exit(0 if 0 < sum(data) < len(data) else 1)
PY

# whole scans: the same as netc infer with the same options (when netc infer exists)
if "$NETC" infer --help 2>/dev/null | grep -q "usage: netc infer"; then
    for opts in "" "--no-tta --step 0.7" "--no-tta --largest-component class --connectivity 26"; do
        expect 0 "standalone on a scan $opts" -- "$tmp/seg" "$tmp/big.nii" "$tmp/c.nii" -q --threads 2 $opts
        expect 0 "netc infer $opts" -- "$NETC" infer netdefs/unet2d.net "${small[@]}" --weights "$tmp/w.safetensors" \
            --input "$tmp/big.nii" --output "$tmp/d.nii" -q $opts
        cmp -s "$tmp/c.nii" "$tmp/d.nii" && ok || bad "the standalone binary and netc infer $opts differ"
    done
    expect 2 "standalone: a bad --largest-component" -- "$tmp/seg" "$tmp/big.nii" "$tmp/c.nii" --largest-component biggest
    contains "standalone: a bad --largest-component" "all or class"
else
    echo "note: netc infer is not available; the whole-scan comparison is skipped"
fi

# a protocol with batch 8: eight windows per call, padded when fewer are left
if "$NETC" infer --help 2>/dev/null | grep -q "usage: netc infer"; then
    c=(--protocol colin27_axial_2mm -D base=4 -D depth=2 -D protocol.size=32x32)
    expect 0 "netc init colin27" -- "$NETC" init netdefs/colin27.net "${c[@]}" --seed 5 -o "$tmp/wc.safetensors"
    expect 0 "netc build colin27 (batch 8)" -- "$NETC" build netdefs/colin27.net "${c[@]}" \
        --weights "$tmp/wc.safetensors" -o "$tmp/segc" -q
    expect 0 "batch-8 standalone" -- "$tmp/segc" "$tmp/big.nii" "$tmp/c8a.nii" -q
    expect 0 "batch-8 netc infer" -- "$NETC" infer netdefs/colin27.net "${c[@]}" --weights "$tmp/wc.safetensors" \
        --input "$tmp/big.nii" --output "$tmp/c8b.nii" -q
    cmp -s "$tmp/c8a.nii" "$tmp/c8b.nii" && ok || bad "batch 8: the standalone binary and netc infer differ"
fi

# ---- refusals --------------------------------------------------------------
expect 1 "standalone: two channels for one" -- "$tmp/seg" "$tmp/in.nii" "$tmp/in.nii" "$tmp/e.nii"
contains "standalone: two channels for one" "protocol t1_brain_axial needs 1 channel(s), in this order: t1"
"$py" - "$tmp/in.nii" "$tmp/in4d.nii" <<'PY'
import struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<h", raw, 40, 4)      # dim[0] = 4
struct.pack_into("<h", raw, 48, 2)      # dim[4] = 2 volumes
open(sys.argv[2], "wb").write(raw + raw[352:])
PY
expect 1 "standalone: a 4D file" -- "$tmp/seg" "$tmp/in4d.nii" "$tmp/e.nii"
contains "standalone: a 4D file" "in4d.nii: a 4D volume (2 volumes)"
expect 1 "standalone: missing input" -- "$tmp/seg" "$tmp/none.nii" "$tmp/e.nii"
contains "standalone: missing input" "none.nii"
[ -e "$tmp/e.nii" ] && bad "a refused input wrote an output" || ok
cp "$tmp/a.nii" "$tmp/keep.nii"
expect 1 "standalone: bad input keeps the output" -- "$tmp/seg" "$tmp/none.nii" "$tmp/keep.nii"
cmp -s "$tmp/a.nii" "$tmp/keep.nii" && ok || bad "a failed run changed an existing output"
expect 2 "standalone: no arguments" -- "$tmp/seg"
contains "standalone: no arguments" "usage:"
expect 2 "standalone: bad --step" -- "$tmp/seg" "$tmp/in.nii" "$tmp/e.nii" --step 2
expect 2 "standalone: bad --threads" -- "$tmp/seg" "$tmp/in.nii" "$tmp/e.nii" --threads x
expect 2 "standalone: unknown option" -- "$tmp/seg" "$tmp/in.nii" "$tmp/e.nii" --frobnicate

# ---- netc build refusals ---------------------------------------------------
printf 'keep' >"$tmp/keep"
expect 1 "netc build: weights of another net" -- "$NETC" build netdefs/unet2d.net -D base=8 -D depth=2 \
    -D protocol.size=32x32 --weights "$tmp/w.safetensors" -o "$tmp/keep"
contains "netc build: weights of another net" "the net needs [8, 1, 3, 3]"
[ "$(cat "$tmp/keep")" = keep ] && ok || bad "a failed build changed an existing file"
expect 1 "netc build: ct without statistics" -- "$NETC" build netdefs/unet2d.net "${small[@]}" \
    -D protocol.normalize=ct --weights "$tmp/w.safetensors" -o "$tmp/x"
contains "netc build: ct without statistics" "netc.stats.0.mean"
expect 1 "netc build: no runtime library" -- env NETC_RUNTIME_DIR="$tmp/nowhere" "$NETC" build netdefs/unet2d.net \
    "${small[@]}" --weights "$tmp/w.safetensors" -o "$tmp/x"
contains "netc build: no runtime library" "libnetcrt.a is missing"

# ---- CT: dataset statistics from the weights' metadata -----------------------
"$py" - "$tmp/w.safetensors" "$tmp/wct.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
head.setdefault("__metadata__", {}).update({"netc.stats.0.mean": "40", "netc.stats.0.sd": "25",
                                            "netc.stats.t1.p005": "2", "netc.stats.0.p995": "90"})
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
PY
expect 0 "netc build: ct with statistics" -- "$NETC" build netdefs/unet2d.net "${small[@]}" -D protocol.normalize=ct \
    --weights "$tmp/wct.safetensors" -o "$tmp/segct"
expect 0 "ct standalone --help" -- "$tmp/segct" --help
contains "ct standalone --help" "t1: mean 40 sd 25, clip 2 .. 90"
expect 0 "ct standalone" -- "$tmp/segct" "$tmp/big.nii" "$tmp/ct1.nii" -q
if "$NETC" infer --help 2>/dev/null | grep -q "usage: netc infer"; then
    expect 0 "ct netc infer" -- "$NETC" infer netdefs/unet2d.net "${small[@]}" -D protocol.normalize=ct \
        --weights "$tmp/wct.safetensors" --input "$tmp/big.nii" --output "$tmp/ct2.nii" -q
    cmp -s "$tmp/ct1.nii" "$tmp/ct2.nii" && ok || bad "ct: the standalone binary and netc infer differ"
fi

# ---- three channels, 3D: VoxResNet -----------------------------------------
v=(-D base=4 -D protocol.size=16x16x16)
for c in 0 1 2; do "$py" tests/make_test_nifti.py "$tmp/v$c.nii" 16 16 16; done
expect 0 "netc init voxresnet" -- "$NETC" init netdefs/voxresnet.net "${v[@]}" --seed 3 -o "$tmp/wv.safetensors"
expect 0 "netc build voxresnet" -- "$NETC" build netdefs/voxresnet.net "${v[@]}" --weights "$tmp/wv.safetensors" \
    -o "$tmp/segv" -q
expect 0 "voxresnet standalone" -- "$tmp/segv" "$tmp/v0.nii" "$tmp/v1.nii" "$tmp/v2.nii" "$tmp/va.nii" --no-tta
expect 0 "voxresnet netc run" -- "$NETC" run netdefs/voxresnet.net "${v[@]}" --weights "$tmp/wv.safetensors" \
    --backend llvm --input "$tmp/v0.nii" --input "$tmp/v1.nii" --input "$tmp/v2.nii" --output "$tmp/vb.nii"
cmp -s "$tmp/va.nii" "$tmp/vb.nii" && ok || bad "voxresnet: the standalone binary and netc run differ"
expect 1 "voxresnet: two of three channels" -- "$tmp/segv" "$tmp/v0.nii" "$tmp/v1.nii" "$tmp/vc.nii"
contains "voxresnet: two of three channels" "needs 3 channel(s), in this order: t1, t1_ir, flair"

# ---- the bundle and the example program of docs/build.md ---------------------
for f in unet2d.o unet2d.h unet2d.weights; do [ -s "$tmp/bundle/$f" ] && ok || bad "bundle: no $f"; done
grep -q "^#include \"unet2d.h\"" docs/bundle_example.c && ok || bad "docs/bundle_example.c changed its header"
# docs/build.md shows the example verbatim (its ```c block after "### Example")
sed -n '/^### Example/,$p' docs/build.md | sed -n '/^```c$/,/^```$/p' | sed '1d;$d' >"$tmp/example_from_doc.c"
cmp -s "$tmp/example_from_doc.c" docs/bundle_example.c && ok || bad "docs/build.md's example is not docs/bundle_example.c"
expect 0 "compile the bundle example" -- cc -std=c11 -Wall -Wextra -Werror -O2 -I"$tmp/bundle" \
    docs/bundle_example.c "$tmp/bundle/unet2d.o" -lm -o "$tmp/example"
"$py" - "$tmp/in.nii" "$tmp/in.f32" <<'PY'
import struct, sys
raw = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(raw[int(struct.unpack("<f", raw[108:112])[0]):])
PY
expect 0 "run the bundle example" -- "$tmp/example" "$tmp/bundle/unet2d.weights" "$tmp/in.f32" "$tmp/labels.u8"
"$py" - "$tmp/b.nii" "$tmp/labels.u8" <<'PY' && ok || bad "the bundle example's labels differ from netc run's"
import struct, sys
raw = open(sys.argv[1], "rb").read()
sys.exit(raw[int(struct.unpack("<f", raw[108:112])[0]):] != open(sys.argv[2], "rb").read())
PY
expect 0 "netc build --name" -- "$NETC" build netdefs/unet2d.net "${small[@]}" --weights "$tmp/w.safetensors" \
    --bundle "$tmp/bundle2" --name brain_axial
[ -s "$tmp/bundle2/brain_axial.o" ] && grep -q "int brain_axial_run(void \*arena" "$tmp/bundle2/brain_axial.h" && ok ||
    bad "--name did not rename the bundle"
nm "$tmp/bundle2/brain_axial.o" | grep -q " T brain_axial_forward$" && ok || bad "--name did not rename the entry"
expect 2 "netc build --name not an identifier" -- "$NETC" build netdefs/unet2d.net --weights "$tmp/w.safetensors" \
    --bundle "$tmp/bundle2" --name 2x
expect 1 "bundle example: wrong weights file" -- "$tmp/example" "$tmp/in.f32" "$tmp/in.f32" "$tmp/labels.u8"

cli_done cli_build
