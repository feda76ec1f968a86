#!/bin/bash
# gpu_check.sh — the GPU backend on a GPU machine, in one go (made for the
# device tool's 15-minute leases: build here, run there).
#
#   make gpu-check                      # on the build machine: build/gpu_check (no LLVM, no Check)
#   scripts/gpu_check.sh [BINARY]       # on the GPU machine, from the repository root
#
# It finds the NVIDIA driver and NVRTC, then runs tools/gpu_check.c's three
# phases (every kernel of the shipped netdefs against the reference; unet2d at
# its shipped protocol against the CPU's generated C; GPU times of make
# bench's configurations) and tools/gpu_torch.py (PyTorch on the same GPU),
# each under its own time limit.  Output goes to stdout and, when $OUT is
# set, to $OUT/gpu_check.txt.
set -u
BIN=${1:-build/gpu_check}
LOG=${OUT:-/tmp}/gpu_check.txt
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }
run() { local limit=$1; shift; say "\$ $*"; timeout "$limit" "$@" 2>&1 | tee -a "$LOG"; say "(exit ${PIPESTATUS[0]})"; }

say "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$LOG"
say "cpus=$(nproc) cc=$(command -v cc || command -v gcc || echo none) $(cc --version 2>/dev/null | head -1)"

# NVRTC: CUDA's own folder, else anywhere under /usr/local, /opt or Python's site-packages
if [ -z "${NETC_NVRTC:-}" ] && [ ! -e /usr/local/cuda/lib64/libnvrtc.so.13 ]; then
    f=$(find /usr/local /opt /usr/lib -name 'libnvrtc.so.13*' 2>/dev/null | grep -v builtins | head -1)
    [ -n "$f" ] && export NETC_NVRTC=$f
fi
nv=${NETC_NVRTC:-/usr/local/cuda/lib64/libnvrtc.so.13}
export LD_LIBRARY_PATH=$(dirname "$nv"):/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
say "nvrtc=$nv"
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1' && [ -z "${NETC_CUDA_DRIVER:-}" ]; then
    f=$(find /usr/local/nvidia /usr/lib /usr/local/cuda -name 'libcuda.so.1' 2>/dev/null | head -1)
    [ -n "$f" ] && export NETC_CUDA_DRIVER=$f
fi
say "driver=${NETC_CUDA_DRIVER:-libcuda.so.1 (ldconfig)}"
if [ ! -x "$BIN" ]; then say "no $BIN: build it with make gpu-check"; exit 1; fi

say "== every kernel of the shipped netdefs at small sizes, against the reference"
NETC_CUDA_SYNC=1 run "${SMALL_LIMIT:-170}" "$BIN" --small
say "== unet2d at its shipped protocol (training batch ${TRAIN_BATCH:-4}), against the CPU's generated C"
NETC_CUDA_SYNC=1 run "${SHIPPED_LIMIT:-170}" "$BIN" --shipped --train-batch "${TRAIN_BATCH:-4}"
say "== GPU times (make bench's configurations)"
run "${TIME_LIMIT:-120}" "$BIN" --time --reps "${REPS:-20}"
say "== PyTorch on the same GPU"
PYTHONUNBUFFERED=1 run "${TORCH_LIMIT:-90}" python3 tools/gpu_torch.py --iters "${REPS:-20}"
grep -E "^gpu(-time|-check)?:|^torch-gpu:|FAILED" "$LOG" > "${OUT:-/tmp}/gpu_summary.txt" || true
