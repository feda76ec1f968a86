#!/usr/bin/env bash
# scripts/fetch_colin27.sh — the Colin27 demo datasets, in nnU-Net's raw format.
#
#   scripts/fetch_colin27.sh [OUT]      (OUT defaults to build/data)
#
# Downloads Debian's mricron-data package (apt-get download, no root needed;
# it is unpacked with dpkg -x, not installed) into OUT/pkg, then derives:
#
#   OUT/Dataset001_Colin27BET/   the 1 mm Colin27 T1 head (ch2.nii.gz) with the
#                                brain mask (ch2bet.nii.gz > 0) as label 1,
#                                split into axial slabs (docs/demo.md):
#                                imagesTr/labelsTr colin27_lower (z 0-94),
#                                colin27_upper (z 135-180); imagesTs/labelsTs
#                                colin27_slab (z 100-129); z 95-99 and 130-134
#                                are in no case.
#   OUT/Colin27Tiny/             the same head at 4 mm (4x4x4 block means,
#                                label = majority of the block): tiny_lower
#                                (z 0-16), tiny_upper (z 28-44) for training,
#                                tiny_slab (z 19-25) held out; for fast tests.
#
# Idempotent: does nothing (in milliseconds) when both folders exist and were
# made by this version of the script.  Everything is built in a temporary
# folder and renamed into place.
set -euo pipefail

OUT="${1:-build/data}"
VERSION=1
STAMP="$OUT/.colin27-v$VERSION"
DS="$OUT/Dataset001_Colin27BET"
TINY="$OUT/Colin27Tiny"
TEMPLATES="$OUT/pkg/usr/share/mricron/templates"

if [ -f "$STAMP" ] && [ -f "$DS/dataset.json" ] && [ -f "$TINY/dataset.json" ]; then
  exit 0
fi

mkdir -p "$OUT/pkg"
if [ ! -f "$TEMPLATES/ch2.nii.gz" ] || [ ! -f "$TEMPLATES/ch2bet.nii.gz" ]; then
  dl="$OUT/download.$$"
  rm -rf "$dl" && mkdir -p "$dl"
  log="$dl/apt.log"
  if ! (cd "$dl" && apt-get download mricron-data) >"$log" 2>&1; then
    # a fresh machine may have no package lists yet; refresh them if we can
    if [ "$(id -u)" -eq 0 ] && apt-get update -qq >>"$log" 2>&1 && (cd "$dl" && apt-get download mricron-data) >>"$log" 2>&1; then
      :
    else
      echo "fetch_colin27: cannot download the Debian package mricron-data (apt-get download failed;" \
           "is the Debian mirror reachable?):" >&2
      sed 's/^/  /' "$log" | tail -5 >&2
      rm -rf "$dl"
      exit 1
    fi
  fi
  deb=$(ls "$dl"/mricron-data_*.deb 2>/dev/null | head -1)
  if [ -z "$deb" ] || ! dpkg -x "$deb" "$OUT/pkg"; then
    echo "fetch_colin27: the downloaded mricron-data package could not be unpacked" >&2
    rm -rf "$dl"
    exit 1
  fi
  rm -rf "$dl"
  if [ ! -f "$TEMPLATES/ch2.nii.gz" ] || [ ! -f "$TEMPLATES/ch2bet.nii.gz" ]; then
    echo "fetch_colin27: mricron-data has no templates/ch2.nii.gz and ch2bet.nii.gz" >&2
    exit 1
  fi
fi

tmp="$OUT/.build.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

/usr/bin/python3 - "$TEMPLATES" "$tmp" <<'EOF'
import gzip, json, os, struct, sys
import numpy as np

src, out = sys.argv[1], sys.argv[2]

def die(msg):
    sys.exit("fetch_colin27: " + msg)

def read(path):
    raw = gzip.open(path, "rb").read()
    if len(raw) < 352 or struct.unpack_from("<i", raw, 0)[0] != 348:
        die(f"{path}: not a little-endian NIfTI-1 file")
    hdr = bytearray(raw[:348])
    dim = struct.unpack_from("<8h", hdr, 40)
    dtype, bitpix = struct.unpack_from("<hh", hdr, 70)
    off = int(struct.unpack_from("<f", hdr, 108)[0])
    sform_code = struct.unpack_from("<h", hdr, 254)[0]
    srow = np.array(struct.unpack_from("<12f", hdr, 280), dtype=np.float64).reshape(3, 4)
    if dim[:4] != (3, 181, 217, 181) or dtype != 2:
        die(f"{path}: expected a 181x217x181 uint8 volume, found dim {dim[:4]} type {dtype}")
    # canonical RAS already (diagonal positive sform): the file's k is the
    # canonical z, so the slab indices below are canonical z indices
    if sform_code <= 0 or not np.allclose(srow[:, :3], np.diag(np.diag(srow[:, :3]))) or (np.diag(srow[:, :3]) <= 0).any():
        die(f"{path}: expected a diagonal RAS sform, found {srow.tolist()}")
    a = np.frombuffer(raw, dtype=np.uint8, count=181 * 217 * 181, offset=off).reshape(181, 217, 181)  # [z][y][x]
    return hdr, srow, a

def write(path, hdr0, srow0, arr, scale=1, offset=(0.0, 0.0, 0.0), z0=0):
    """arr [z][y][x]; voxel (i,j,k) of the new file is voxel
    (scale*i + offset, scale*j + offset, scale*(k + z0) + offset) of the source grid."""
    hdr = bytearray(hdr0)
    nz, ny, nx = arr.shape
    struct.pack_into("<8h", hdr, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    if arr.dtype == np.uint8:
        struct.pack_into("<hh", hdr, 70, 2, 8)
    else:
        arr = arr.astype("<f4")
        struct.pack_into("<hh", hdr, 70, 16, 32)
    pix = list(struct.unpack_from("<8f", hdr, 76))
    pix[1:4] = [p * scale for p in pix[1:4]]
    struct.pack_into("<8f", hdr, 76, *pix)
    struct.pack_into("<f", hdr, 108, 352.0)
    struct.pack_into("<ff", hdr, 112, 1.0, 0.0)
    struct.pack_into("<ff", hdr, 124, float(arr.max()), float(arr.min()))   # cal_max, cal_min
    T = np.array([[scale, 0, 0, offset[0]], [0, scale, 0, offset[1]], [0, 0, scale, scale * z0 + offset[2]], [0, 0, 0, 1]])
    A = np.vstack([srow0, [0, 0, 0, 1]]) @ T
    struct.pack_into("<12f", hdr, 280, *A[:3].reshape(-1))
    struct.pack_into("<3f", hdr, 268, *A[:3, 3])                           # qoffset (qform_code stays as it was)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
        g.write(bytes(hdr) + b"\0\0\0\0" + np.ascontiguousarray(arr).tobytes())
    os.replace(tmp, path)

def dataset(root, name, cases_tr, cases_ts, hdr, srow, img, lab, scale=1, offset=(0.0, 0.0, 0.0)):
    for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for split, cases in (("Tr", cases_tr), ("Ts", cases_ts)):
        for case, (z0, z1) in cases.items():
            write(f"{root}/images{split}/{case}_0000.nii.gz", hdr, srow, img[z0:z1 + 1], scale, offset, z0)
            write(f"{root}/labels{split}/{case}.nii.gz", hdr, srow, lab[z0:z1 + 1], scale, offset, z0)
    desc = {
        "name": name,
        "description": "Colin27 T1 head (Holmes 1998, MNI) with its brain mask (mricron-data ch2bet > 0); "
                       "axial-slab split, see docs/demo.md",
        "reference": "Debian package mricron-data, usr/share/mricron/templates/ch2.nii.gz, ch2bet.nii.gz",
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, "brain": 1},
        "numTraining": len(cases_tr),
        "numTest": len(cases_ts),
        "file_ending": ".nii.gz",
        "split_z_inclusive": {"train": cases_tr, "test": cases_ts},
    }
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump(desc, f, indent=2)
        f.write("\n")

hdr, srow, img = read(os.path.join(src, "ch2.nii.gz"))
_, srow_b, bet = read(os.path.join(src, "ch2bet.nii.gz"))
if not np.allclose(srow, srow_b):
    die("ch2.nii.gz and ch2bet.nii.gz are not on one grid")
lab = (bet > 0).astype(np.uint8)

dataset(os.path.join(out, "Dataset001_Colin27BET"), "Colin27BET",
        {"colin27_lower": [0, 94], "colin27_upper": [135, 180]}, {"colin27_slab": [100, 129]},
        hdr, srow, img, lab)

# 4 mm: mean of each 4x4x4 block (the last partial block of every axis dropped),
# label = brain in at least half of the block's voxels
b = 4
zb, yb, xb = 181 // b, 217 // b, 181 // b
blk = lambda a: a[:zb * b, :yb * b, :xb * b].reshape(zb, b, yb, b, xb, b).mean(axis=(1, 3, 5))
img4 = blk(img.astype(np.float64)).astype(np.float32)
lab4 = (blk(lab.astype(np.float64)) >= 0.5).astype(np.uint8)
c = (b - 1) / 2.0
dataset(os.path.join(out, "Colin27Tiny"), "Colin27Tiny",
        {"tiny_lower": [0, 16], "tiny_upper": [28, 44]}, {"tiny_slab": [19, 25]},
        hdr, srow, img4, lab4, scale=b, offset=(c, c, c))
EOF

rm -rf "$DS" "$TINY"
mv "$tmp/Dataset001_Colin27BET" "$DS"
mv "$tmp/Colin27Tiny" "$TINY"
touch "$STAMP"
echo "fetch_colin27: wrote $DS and $TINY" >&2
