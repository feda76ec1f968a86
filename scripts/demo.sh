#!/usr/bin/env bash
# scripts/demo.sh — the README's main job (make demo): fetch the Colin27
# brain-extraction dataset (docs/demo.md), train the shipped 2D U-Net for the
# colin27_axial_2mm protocol (netdefs/colin27.net) as generated code, segment
# the held-out slab and print its Dice.  The last line is
#   demo: heldout_dice=D seconds=T
# (T: the wall time after setup, training and evaluation included).
# Validation each epoch (docs/demo.md): the dataset has 2 training cases, so
# netc trains on both (fold all) and validates on the held-out slab, 4
# batches of 8 slices per epoch (val_iterations 4: the slab has 30 slices).
set -euo pipefail
cd "$(dirname "$0")/.."
NETC=${NETC:-build/netc}
RUN=${RUN:-build/demo-run}
bash scripts/fetch_colin27.sh
start=$(date +%s.%N)
rm -rf "$RUN"
"$NETC" train netdefs/colin27.net --protocol colin27_axial_2mm -D base=16 -D train.val_iterations=4 \
    --data build/data/Dataset001_Colin27BET --out "$RUN" "$@" | tee "$RUN.log"
end=$(date +%s.%N)
dice=$(sed -n 's/^heldout_dice=//p' "$RUN.log")
echo "loss curve: $RUN/curves.svg, log: $RUN/log.csv, weights: $RUN/model_last.safetensors"
awk -v d="$dice" -v a="$start" -v b="$end" 'BEGIN { printf "demo: heldout_dice=%s seconds=%.0f\n", d, b - a }'
