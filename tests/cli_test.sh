#!/usr/bin/env bash
# cli_test.sh — the command line as a user meets it: exit codes, help texts,
# outputs of check/graph, and that a failed run leaves existing files alone.
# Usage: NETC=build/netc tests/cli_test.sh
. "$(dirname "$0")/cli_lib.sh"

expect 0 "netc --help"            -- "$NETC" --help
contains "netc --help" "netc check netdefs/unet2d.net"
expect 2 "netc with no command"   -- "$NETC"
expect 2 "unknown command"        -- "$NETC" chek
contains "unknown command" "did you mean \`check\`?"
for cmd in check graph ops; do
    expect 0 "netc $cmd --help" -- "$NETC" "$cmd" --help
    contains "netc $cmd --help" "usage: netc $cmd"
done
expect 2 "unknown option"         -- "$NETC" check netdefs/unet2d.net --frobnicate
expect 2 "missing file"           -- "$NETC" check
expect 1 "unreadable file"        -- "$NETC" check "$tmp/nope.net"
contains "unreadable file" "cannot read"

# the shipped nets check cleanly, with their layer tables
for n in unet2d unet3d vnet voxresnet; do
    expect 0 "check $n" -- "$NETC" check "netdefs/$n.net"
    contains "check $n" "parameters:"
    expect 0 "check $n --train" -- "$NETC" check "netdefs/$n.net" --train
    contains "check $n --train" "loss   loss"
done
expect 0 "check unet3d anisotropic protocol" -- "$NETC" check netdefs/unet3d.net --protocol t2_prostate_aniso
expect 0 "quiet check" -- "$NETC" check -q netdefs/unet2d.net
[ -s "$tmp/out" ] && bad "quiet check printed something" || ok

# the training graph with its backward pass
expect 0 "check --autodiff" -- "$NETC" check netdefs/unet2d.net --autodiff
contains "check --autodiff" "grad.enc.0.conv_bn_relu.conv.weight"
contains "check --autodiff" "grad.loss"
contains "check --autodiff" "update.logits.weight"
expect 1 "--autodiff after an unknown optimizer" -- "$NETC" check tests/diagnostics/train_unknown_optimizer.net --autodiff

# overrides
expect 0 "-D base" -- "$NETC" check netdefs/unet2d.net -D base=16
contains "-D base" "enc.0.conv_bn_relu.conv"
expect 1 "-D unknown" -- "$NETC" check netdefs/unet2d.net -D bsae=16
contains "-D unknown" "did you mean \`base\`?"
expect 1 "-D size not divisible" -- "$NETC" check netdefs/unet2d.net -D protocol.size=250x250
contains "-D size not divisible" "input 250 is not divisible by 16 (4 poolings) for protocol t1_brain_axial"
expect 0 "-D train.batch" -- "$NETC" check netdefs/unet2d.net --train -D train.batch=3
contains "-D train.batch" "3x2x256x256"
expect 2 "-D without =" -- "$NETC" check netdefs/unet2d.net -D base

# a malformed file: located error, exit 1
printf 'net n {\n  input image\n  output logits = conv(2, 1)(imag)\n}\nprotocol p {\n  size 8 x 8\n  classes 2\n}\n' >"$tmp/bad.net"
expect 1 "malformed file" -- "$NETC" check "$tmp/bad.net"
contains "malformed file" "bad.net:3:30: error: unknown name \`imag\`; did you mean \`image\`?"

# graph outputs
expect 0 "graph --dot" -- "$NETC" graph netdefs/unet2d.net --dot
contains "graph --dot" "digraph"
if command -v dot >/dev/null; then
    "$NETC" graph netdefs/voxresnet.net --dot | dot -Tsvg >"$tmp/g.svg" && ok || bad "dot cannot render the DOT output"
fi
expect 0 "graph --json" -- "$NETC" graph netdefs/vnet.net --json -o "$tmp/g.json"
/usr/bin/python3 -c "import json,sys; g=json.load(open(sys.argv[1])); assert g['net']=='vnet' and len(g['params'])==89" \
    "$tmp/g.json" && ok || bad "graph --json is not the expected JSON"
expect 2 "graph needs a format" -- "$NETC" graph netdefs/vnet.net

# a failed run leaves an existing output untouched
echo "precious" >"$tmp/keep.json"
expect 1 "graph of a bad file" -- "$NETC" graph "$tmp/bad.net" --json -o "$tmp/keep.json"
[ "$(cat "$tmp/keep.json")" = "precious" ] && ok || bad "a failed graph run overwrote its output"
ls "$tmp"/keep.json.tmp.* >/dev/null 2>&1 && bad "a temporary file was left behind" || ok

# reference inference end to end: init weights, segment a volume, reproduce
small=(-D base=4 -D protocol.size=32x32)
/usr/bin/python3 tests/make_test_nifti.py "$tmp/in.nii" 32 32
/usr/bin/python3 tests/make_test_nifti.py "$tmp/in64.nii" 48 64
expect 0 "netc init" -- "$NETC" init netdefs/unet2d.net "${small[@]}" --seed 7 -o "$tmp/w.safetensors"
contains "netc init" "wrote 118 tensors"
expect 0 "netc run with weights" -- "$NETC" run netdefs/unet2d.net "${small[@]}" --weights "$tmp/w.safetensors" \
    --input "$tmp/in.nii" --output "$tmp/a.nii"
expect 0 "netc run with the same seed" -- "$NETC" run netdefs/unet2d.net "${small[@]}" --seed 7 \
    --input "$tmp/in.nii" --output "$tmp/b.nii"
cmp -s "$tmp/a.nii" "$tmp/b.nii" && ok || bad "the same weights gave different label maps"
expect 0 "netc run --probabilities" -- "$NETC" run netdefs/unet2d.net "${small[@]}" --probabilities \
    --input "$tmp/in.nii" --output "$tmp/p.nii.gz"
# generated code (C compiler, LLVM JIT, the CUDA kernels run by the CPU
# stand-in for the driver, tests/cuda_emu) gives the reference's probabilities
for be in ref c llvm cuda; do
    NETC_CUDA_DRIVER="$(dirname "$NETC")/libnetc_cuda_emu.so" \
    expect 0 "netc run --backend $be" -- "$NETC" run netdefs/unet2d.net "${small[@]}" --seed 7 --backend $be \
        --probabilities --input "$tmp/in.nii" --output "$tmp/prob_$be.nii"
done
/usr/bin/python3 - "$tmp" <<'PY' && ok || bad "backends disagree on the probabilities"
import sys, numpy as np
d = sys.argv[1]
def load(b):
    raw = open("%s/prob_%s.nii" % (d, b), "rb").read()
    off = int(np.frombuffer(raw[108:112], "<f4")[0])
    return np.frombuffer(raw[off:], "<f4")
r = load("ref")
for b in ("c", "llvm", "cuda"):
    e = float(np.abs(load(b) - r).max())
    if not e < 1e-4:
        sys.exit("%s: max difference %g" % (b, e))
PY
expect 2 "netc run --backend unknown" -- "$NETC" run netdefs/unet2d.net "${small[@]}" --backend tpu \
    --input "$tmp/in.nii" --output "$tmp/z.nii"
NETC_CUDA_DRIVER=/nonexistent/libcuda.so.1 \
expect 1 "netc run --backend cuda without a driver" -- "$NETC" run netdefs/unet2d.net "${small[@]}" --backend cuda \
    --input "$tmp/in.nii" --output "$tmp/z.nii"
contains "netc run --backend cuda without a driver" "no CUDA driver"
[ -e "$tmp/z.nii" ] && bad "a run without a driver wrote an output" || ok
expect 1 "netc run: wrong input size" -- "$NETC" run netdefs/unet2d.net -D base=4 --input "$tmp/in.nii" --output "$tmp/c.nii"
contains "netc run: wrong input size" "is compiled for 1 x 256 x 256"
[ -e "$tmp/c.nii" ] && bad "a failed run wrote an output" || ok
expect 1 "netc run: weights of another net" -- "$NETC" run netdefs/unet2d.net -D base=8 -D protocol.size=32x32 \
    --weights "$tmp/w.safetensors" --input "$tmp/in.nii" --output "$tmp/c.nii"
contains "netc run: weights of another net" "is [4, 1, 3, 3] in the file, the net needs [8, 1, 3, 3]"
expect 2 "netc run without --input" -- "$NETC" run netdefs/unet2d.net --output "$tmp/c.nii"
expect 1 "netc run --backend llvm: missing input" -- "$NETC" run netdefs/unet2d.net --backend llvm --input "$tmp/none.nii" --output "$tmp/y.nii"
contains "netc run --backend llvm: missing input" "none.nii"

# generated/ is what the compiler emits today, byte for byte
for n in unet2d unet3d; do
    for t in c cuda; do
        expect 0 "netc emit $n --target $t" -- "$NETC" emit netdefs/$n.net --target $t -o "$tmp/gen"
    done
    for e in c cu; do
        cmp -s "$tmp/gen/$n.$e" "generated/$n.$e" && ok || bad "generated/$n.$e differs from what netc emits (run make generated)"
    done
done
expect 0 "netc emit --target obj" -- "$NETC" emit netdefs/unet2d.net -D base=4 --target obj -o "$tmp/gen"
[ "$(head -c 4 "$tmp/gen/unet2d.o" | od -An -c | tr -d ' ')" = "177ELF" ] && ok || bad "netc emit --target obj: not an ELF object"
expect 2 "netc emit without --target" -- "$NETC" emit netdefs/unet2d.net -o "$tmp/gen"
expect 2 "netc emit with an unknown target" -- "$NETC" emit netdefs/unet2d.net --target ptx -o "$tmp/gen"
expect 1 "netc emit into an impossible folder" -- "$NETC" emit netdefs/unet2d.net --target c -o /proc/nope/x

# netc train on a real crop: Colin27 at 4 mm (scripts/fetch_colin27.sh; docs/demo.md), 40 steps of a
# small 2D U-Net; the loss falls and the held-out slab's Dice clears 0.85 (0.95 measured; seeded)
bash scripts/fetch_colin27.sh >/dev/null 2>&1 && ok || bad "scripts/fetch_colin27.sh failed (the Debian mirror?)"
tiny=(tests/nets/colin27_tiny.net --protocol colin27_tiny -D base=4 -D depth=3 --data build/data/Colin27Tiny)
expect 0 "netc train" -- "$NETC" train "${tiny[@]}" --out "$tmp/run" -q
contains "netc train" "heldout_dice="
d=$(sed -n 's/^heldout_dice=//p' "$tmp/out")
awk -v d="$d" 'BEGIN { exit !(d >= 0.85) }' && ok || bad "netc train: held-out Dice $d < 0.85"
l=$(sed -n 's/.*loss \([0-9.]*\) -> \([0-9.]*\)$/\1 \2/p' "$tmp/out")
awk -v l="$l" 'BEGIN { split(l, a, " "); exit !(a[2] < a[1] - 0.2) }' && ok || bad "netc train: the loss did not fall ($l)"
for f in checkpoint_last.safetensors model_last.safetensors log.csv curves.svg; do
    [ -s "$tmp/run/$f" ] && ok || bad "netc train wrote no $f"
done
expect 0 "netc run with the trained weights" -- "$NETC" run tests/nets/colin27_tiny.net --protocol colin27_tiny -D base=4 \
    -D depth=3 -D protocol.batch=1 --weights "$tmp/run/model_last.safetensors" --input "$tmp/in64.nii" --output "$tmp/seg.nii"
expect 1 "netc train: no dataset" -- "$NETC" train "${tiny[@]/Colin27Tiny/nowhere}" --out "$tmp/run2" -q
contains "netc train: no dataset" "nowhere"
expect 2 "netc train without --data" -- "$NETC" train tests/nets/colin27_tiny.net --protocol colin27_tiny

# netc bench: whole step and per kernel on a tiny net (timings are not checked: machine speed)
expect 0 "netc bench --kernels" -- "$NETC" bench netdefs/unet2d.net -D base=4 -D protocol.size=32x32 --iters 2 --kernels
contains "netc bench --kernels" "total (kernels timed one by one)"
expect 2 "netc bench with a bad option" -- "$NETC" bench netdefs/unet2d.net --iters zero

# the front door
expect 0 "netc ops" -- "$NETC" ops
contains "netc ops" "upconv"

cli_done cli
