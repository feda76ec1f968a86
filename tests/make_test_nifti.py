#!/usr/bin/python3
"""make_test_nifti.py OUT.nii NX NY [NZ] — a float32 NIfTI-1 test volume
(a smooth blob, deterministic), written with the standard library alone."""
import math
import struct
import sys

out, dims = sys.argv[1], [int(a) for a in sys.argv[2:]]
while len(dims) < 3:
    dims.append(1)
nx, ny, nz = dims
ndim = 3 if nz > 1 else 2
hdr = bytearray(348)
struct.pack_into("<i", hdr, 0, 348)                                   # sizeof_hdr
struct.pack_into("<8h", hdr, 40, ndim, nx, ny, nz, 1, 1, 1, 1)        # dim
struct.pack_into("<hh", hdr, 70, 16, 32)                              # datatype float32, bitpix
struct.pack_into("<8f", hdr, 76, 1, 1.0, 1.0, 1.0, 1, 1, 1, 1)        # pixdim
struct.pack_into("<f", hdr, 108, 352.0)                               # vox_offset
struct.pack_into("<f", hdr, 112, 1.0)                                 # scl_slope
hdr[344:348] = b"n+1\0"                                               # magic
data = bytearray()
for z in range(nz):
    for y in range(ny):
        for x in range(nx):
            r = math.hypot(x - nx / 2, y - ny / 2, z - nz / 2)
            data += struct.pack("<f", 100.0 * math.exp(-r * r / (nx * nx / 8.0)) + (x * 7 + y * 3 + z) % 5)
with open(out, "wb") as f:
    f.write(hdr + b"\0\0\0\0" + data)
