#!/usr/bin/env bash
# scripts/setup.sh — install every build and test dependency of netc from
# Debian packages. A no-op (no network, no root needed) when all are present.
#
#   scripts/setup.sh          install what is missing
#   scripts/setup.sh --check  exit 1 if something is missing, install nothing
#
# `make` and `make test` run this automatically when a tool or header is
# missing, so on a fresh machine `make test` alone is enough.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config      # cc, make
  flex bison                      # grammar/
  llvm-16-dev                     # LLVM-C backend (later issues; linked now)
  check libsubunit-dev            # unit tests
  libnifti2-dev zlib1g-dev        # NIfTI I/O (runtime)
  libcjson-dev                    # JSON: safetensors headers, dataset.json (runtime)
  clang libclang-rt-14-dev        # libFuzzer harness for the front end
  python3-torch python3-numpy     # PyTorch reference for parameter counts / cross-checks
  graphviz                        # `netc graph --dot` rendering in docs/tests (optional use)
  libgoogle-perftools4            # tcmalloc, preloaded for PyTorch's best configuration in `make bench`
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "${1:-}" = "--check" ]; then
  echo "setup: missing packages: ${missing[*]}" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
