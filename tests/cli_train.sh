#!/usr/bin/env bash
# cli_train.sh — netc train beyond the basic run of tests/cli_test.sh, on a
# tiny net (tests/nets/disk2d.net) and the 4 mm Colin27 crop: validation,
# best checkpoint and the metadata for inference; prefetching changes no bit;
# killed with SIGKILL at many moments (during checkpoint writing too, widened
# by the NETC_TEST_SLOW_CHECKPOINT test hook), the run folder always holds a
# loadable checkpoint and --resume ends where an uninterrupted run ends;
# --fold, --init and their errors.
# Usage: NETC=build/netc bash tests/cli_train.sh
. "$(dirname "$0")/cli_lib.sh"

bash scripts/fetch_colin27.sh >/dev/null 2>&1 && ok || bad "scripts/fetch_colin27.sh failed (the Debian mirror?)"
disk=(tests/nets/disk2d.net --data build/data/Colin27Tiny -D train.epochs=14 -D train.iterations=4
      -D train.val_iterations=2)

# st_check FILE: a complete safetensors file (header, every tensor inside the
# file, nothing after); prints its netc_epoch
st_check() {
    python3 - "$1" <<'PY'
import json, sys
b = open(sys.argv[1], "rb").read()
n = int.from_bytes(b[:8], "little")
h = json.loads(b[8:8 + n])
m = h.pop("__metadata__")
end = max(v["data_offsets"][1] for v in h.values())
if 8 + n + end != len(b):
    sys.exit("%s: %d bytes, the header says %d" % (sys.argv[1], len(b), 8 + n + end))
print(m["netc_epoch"])
PY
}
# same_tensors A B: the two files hold the same tensors, byte for byte
same_tensors() {
    python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):
    b = open(p, "rb").read()
    n = int.from_bytes(b[:8], "little")
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
sys.exit(0 if a == b else "tensors differ: %s" % [k for k in a if a[k] != b.get(k)][:5])
PY
}
# the log without its last column (seconds)
curve() { sed 's/,[^,]*$//' "$1/log.csv"; }

# --- validation, best checkpoint, metadata; prefetching changes nothing ----------------------------
expect 0 "netc train (prefetch)" -- "$NETC" train "${disk[@]}" --out "$tmp/a"
contains "netc train (prefetch)" "fold all: 2 training case(s); validation on 1 labelled test case(s)"
contains "netc train (prefetch)" "val Dice disk"
contains "netc train (prefetch)" "validation: best EMA pseudo-Dice"
for f in checkpoint_last checkpoint_best model_last model_best; do
    st_check "$tmp/a/$f.safetensors" >/dev/null && ok || bad "$f.safetensors is not complete"
done
[ -s "$tmp/a/splits_final.json" ] && ok || bad "no splits_final.json"
head -1 "$tmp/a/log.csv" | grep -qx "epoch,train_loss,val_dice,val_ema,lr,dice_disk,seconds" && ok ||
    bad "log.csv header: $(head -1 "$tmp/a/log.csv")"
[ "$(wc -l <"$tmp/a/log.csv")" -eq 15 ] && ok || bad "log.csv has $(wc -l <"$tmp/a/log.csv") lines, want 15"
grep -q "validation pseudo-Dice" "$tmp/a/curves.svg" && ok || bad "curves.svg has no validation curve"
expect 0 "netc train --no-prefetch" -- "$NETC" train "${disk[@]}" --out "$tmp/b" --no-prefetch -q
[ "$(curve "$tmp/a")" = "$(curve "$tmp/b")" ] && ok || bad "the log with prefetching differs from the one without"
same_tensors "$tmp/a/checkpoint_last.safetensors" "$tmp/b/checkpoint_last.safetensors" && ok ||
    bad "the checkpoint with prefetching differs from the one without"
# validation changes no bit of training; without it, no best checkpoint
expect 0 "netc train without validation" -- "$NETC" train "${disk[@]}" -D train.val_iterations=0 --out "$tmp/c" -q
[ "$(cut -d, -f1,2,5 "$tmp/a/log.csv")" = "$(cut -d, -f1,2,5 "$tmp/c/log.csv")" ] && ok ||
    bad "the losses with validation differ from those without"
same_tensors "$tmp/a/checkpoint_last.safetensors" "$tmp/c/checkpoint_last.safetensors" && ok ||
    bad "validation changed the trained weights"
[ -e "$tmp/c/checkpoint_best.safetensors" ] && bad "a best checkpoint without validation" || ok
# CT normalization: the dataset statistics go into every model file, for netc infer / netc build
expect 0 "netc train (ct statistics)" -- "$NETC" train "${disk[@]}" -D train.epochs=1 -D protocol.normalize=ct \
    --out "$tmp/ct" -q
python3 - "$tmp/ct" <<'PY' && ok || bad "model metadata"
import json, sys
for f in ("model_last", "model_best", "checkpoint_last", "checkpoint_best"):
    b = open("%s/%s.safetensors" % (sys.argv[1], f), "rb").read()
    m = json.loads(b[8:8 + int.from_bytes(b[:8], "little")])["__metadata__"]
    for k in ("mean", "sd", "p005", "p995"):
        float(m["netc.stats.0." + k])
    assert float(m["netc.stats.0.p995"]) > float(m["netc.stats.0.p005"]), m
    assert m["netc.protocol"] == "disks" and m["netc.net"] == "disknet" and m["netc.fold"] == "all", m
    assert len(m["netc.spacing"].split(",")) == 3, m
PY

# --- crash safety: SIGKILL at many moments, then --resume to the end ------------------------------
# Each round starts the run (resuming when there is a checkpoint), waits for
# the next epoch's log line, then kills it after a random 0-0.45 s: with the
# hook holding every checkpoint file 60 ms between write and rename, the
# kills land in training, in validation and in checkpoint writing.  Some
# rounds kill during start-up instead.  After every kill: once an epoch
# has been logged there is a complete checkpoint_last (and it is at least
# as new as the log); every checkpoint file present is complete.
RANDOM=7
run=$tmp/crash
for round in 1 2 3 4 5 6 7; do
    args=()
    [ -e "$run/checkpoint_last.safetensors" ] && args=(--resume)
    lines=0
    [ -e "$run/log.csv" ] && lines=$(wc -l <"$run/log.csv")
    NETC_TEST_SLOW_CHECKPOINT=60 "$NETC" train "${disk[@]}" --out "$run" -q "${args[@]}" >"$tmp/crash.out" 2>&1 &
    pid=$!
    if [ $((round % 3)) -ne 0 ]; then   # wait for an epoch to be logged (or the end)
        for _ in $(seq 1 600); do
            kill -0 $pid 2>/dev/null || break
            [ -e "$run/log.csv" ] && [ "$(wc -l <"$run/log.csv")" -gt "$lines" ] && break
            sleep 0.05
        done
    fi
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.45 * r / 32767 }')"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    if [ -e "$run/log.csv" ]; then
        e=$(st_check "$run/checkpoint_last.safetensors") && ok || bad "round $round: no complete checkpoint_last"
        rows=$(($(wc -l <"$run/log.csv") - 1))
        [ "${e:--9}" -ge $((rows - 1)) ] && ok || bad "round $round: checkpoint epoch $e is older than the log ($rows rows)"
    elif [ -e "$run/checkpoint_last.safetensors" ]; then
        st_check "$run/checkpoint_last.safetensors" >/dev/null && ok || bad "round $round: incomplete checkpoint_last"
    fi
    for f in checkpoint_best model_last model_best; do
        [ -e "$run/$f.safetensors" ] || continue
        st_check "$run/$f.safetensors" >/dev/null && ok || bad "round $round: incomplete $f"
    done
done
args=()
[ -e "$run/checkpoint_last.safetensors" ] && args=(--resume)
expect 0 "netc train --resume after the kills" -- "$NETC" train "${disk[@]}" --out "$run" -q "${args[@]}"
[ "$(curve "$tmp/a")" = "$(curve "$run")" ] && ok || { bad "the killed and resumed run's log differs"; diff <(curve "$tmp/a") <(curve "$run") | head; }
for f in checkpoint_last checkpoint_best; do
    same_tensors "$tmp/a/$f.safetensors" "$run/$f.safetensors" && ok || bad "the killed and resumed run's $f differs"
done
left=$(ls "$run" | grep -E '\.writing|\.tmp\.')
[ -z "$left" ] && ok || bad "temporary files left after the resumed run: $left"

# --- folds ---------------------------------------------------------------------------------------
expect 0 "netc train --fold 1" -- "$NETC" train "${disk[@]}" -D train.epochs=1 --fold 1 --out "$tmp/f1"
contains "netc train --fold 1" "fold 1 ($tmp/f1/splits_final.json): 1 training case(s), 1 validation case(s)"
grep -q '"val"' "$tmp/f1/splits_final.json" && ok || bad "no splits_final.json for --fold 1"
expect 1 "netc train --fold 3 of 2 folds" -- "$NETC" train "${disk[@]}" --fold 3 --out "$tmp/f1" -q
contains "netc train --fold 3 of 2 folds" "has 2 fold(s); there is no fold 3"
expect 1 "netc train --resume with another fold" -- "$NETC" train "${disk[@]}" --fold 0 --out "$tmp/f1" -q --resume
contains "netc train --resume with another fold" "was trained with netc.fold = 1, this run has 0"
expect 2 "netc train --fold 9" -- "$NETC" train "${disk[@]}" --fold 9 --out "$tmp/f9"
contains "netc train --fold 9" "--fold takes 0 .. 4 or all"
expect 2 "netc train --fold without a value" -- "$NETC" train "${disk[@]}" --fold
expect 0 "netc train --help" -- "$NETC" train --help
contains "netc train --help" "--fold K|all"

# --- transfer learning ---------------------------------------------------------------------------
expect 0 "netc train --init" -- "$NETC" train "${disk[@]}" -D train.epochs=1 --init "$tmp/a/model_best.safetensors" \
    --out "$tmp/init"
contains "netc train --init" "init: loaded 22 of 22 tensors from $tmp/a/model_best.safetensors, skipped 0"
expect 0 "train block init" -- "$NETC" train "${disk[@]}" -D train.epochs=1 \
    -D "train.init=\"$tmp/a/model_best.safetensors\"" --out "$tmp/init2"
contains "train block init" "init: loaded 22 of 22 tensors"
expect 1 "netc train --init: no such file" -- "$NETC" train "${disk[@]}" --init "$tmp/none.safetensors" --out "$tmp/i3" -q
contains "netc train --init: no such file" "none.safetensors"
printf 'not a safetensors file' >"$tmp/junk.safetensors"
expect 1 "netc train --init: a broken file" -- "$NETC" train "${disk[@]}" --init "$tmp/junk.safetensors" --out "$tmp/i3" -q
contains "netc train --init: a broken file" "junk.safetensors"

# --- voxel weight maps from weightsTr/ -----------------------------------------------------------
# A copy of the dataset with weightsTr/CASE.nii.gz = 1 - the brain mask (float32): with
# `dice_ce(logits, labels, weightmap)` only background voxels count, so the net never
# learns brain and the held-out Dice falls far below that of maps of ones.
mkdir -p "$tmp/wds"
cp -r build/data/Colin27Tiny/. "$tmp/wds/"
mkweights() {   # mkweights MODE: background = 1 - the label, ones = 1 everywhere, bad = the wrong grid
    python3 - "$tmp/wds" "$1" <<'PY'
import gzip, os, struct, sys
root, mode = sys.argv[1], sys.argv[2]
os.makedirs(root + "/weightsTr", exist_ok=True)
for case in ("tiny_lower", "tiny_upper"):
    b = bytearray(gzip.open("%s/labelsTr/%s.nii.gz" % (root, case)).read())
    off = int(struct.unpack_from("<f", b, 108)[0])
    lab = b[off:]
    if mode == "bad":
        struct.pack_into("<h", b, 42, struct.unpack_from("<h", b, 42)[0] - 1)
        lab = lab[:len(lab) - len(lab) // 45]
    struct.pack_into("<hh", b, 70, 16, 32)                    # float32
    struct.pack_into("<ff", b, 112, 1.0, 0.0)                 # slope, intercept
    w = b"".join(struct.pack("<f", 1.0 - v if mode == "background" else 1.0) for v in lab)
    gzip.open("%s/weightsTr/%s.nii.gz" % (root, case), "wb").write(bytes(b[:off]) + w)
PY
}
wtrain=(tests/nets/disk2d.net --data "$tmp/wds" -D train.epochs=6 -D train.iterations=6 -D train.val_iterations=0
        -D 'train.loss=dice_ce(logits, labels, weightmap)' -q)
expect 1 "weightmap without weightsTr" -- "$NETC" train "${wtrain[@]}" --out "$tmp/w0"
contains "weightmap without weightsTr" "weightsTr/tiny_lower.nii.gz"
mkweights ones
expect 0 "weightmap of ones" -- "$NETC" train "${wtrain[@]}" --out "$tmp/w1"
d1=$(sed -n 's/^heldout_dice=//p' "$tmp/out")
mkweights background
expect 0 "weightmap = background only" -- "$NETC" train "${wtrain[@]}" --out "$tmp/w2"
d2=$(sed -n 's/^heldout_dice=//p' "$tmp/out")
awk -v a="$d1" -v b="$d2" 'BEGIN { exit !(a > 0.6 && b < a - 0.1) }' && ok ||
    bad "weight maps: held-out Dice $d1 (ones) vs $d2 (background only): the maps do not reach the loss"
expect 0 "weightmap = background only, no prefetch" -- "$NETC" train "${wtrain[@]}" --out "$tmp/w3" --no-prefetch
[ "$(curve "$tmp/w2")" = "$(curve "$tmp/w3")" ] && ok || bad "weight maps: prefetching changed the log"
mkweights bad
expect 1 "weightmap on another grid" -- "$NETC" train "${wtrain[@]}" --out "$tmp/w4"
contains "weightmap on another grid" "a weight map must be on the image's grid"

cli_done cli_train
