#!/usr/bin/env python3
"""safetensors_check.py -- interoperability check for netc's safetensors code.

The `safetensors` package is not available here, so this script lays files out
with the standard library exactly as the reference library does (8-byte
little-endian header length, compact JSON header with "__metadata__" first,
tensors sorted by dtype alignment then name, header padded with spaces to a
multiple of 8) and validates files by the reference reader's rules.

    safetensors_check.py write PATH   write the fixture tests/test_safetensors.c expects
    safetensors_check.py check PATH   validate a file netc wrote: every F32 tensor
                                      must hold value[i] = i * 0.25 - 1

When torch can be imported, `check` also rebuilds each tensor with
torch.frombuffer and compares it.  Exit status 0 on success, 1 on a mismatch.
"""
import json
import struct
import sys

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def bf16(v):
    return struct.pack("<f", v)[2:4]


def write(path):
    tensors = {
        "a.weight": ("F32", [2, 3], b"".join(struct.pack("<f", i * 0.5) for i in range(6))),
        "b.half": ("F16", [4], b"".join(struct.pack("<e", v) for v in (1.0, -2.0, 0.5, 65504.0))),
        "c.bf16": ("BF16", [2], bf16(1.0) + bf16(-3.0)),
        "d.f64": ("F64", [3], b"".join(struct.pack("<d", v) for v in (0.1, 0.2, 0.3))),
        "e.num_batches_tracked": ("I64", [], struct.pack("<q", 7)),
        "f.scalar": ("F32", [], struct.pack("<f", 42.0)),
    }
    order = sorted(tensors, key=lambda k: (-SIZES[tensors[k][0]], k))
    header = {"__metadata__": {"format": "pt", "source": "safetensors_check.py"}}
    off = 0
    for name in order:
        dtype, shape, data = tensors[name]
        assert len(data) == numel(shape) * SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in order:
            f.write(tensors[name][2])


def fail(msg):
    print("safetensors_check: " + msg, file=sys.stderr)
    sys.exit(1)


def check(path):
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        fail(f"{path}: too short")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > 100_000_000 or n > len(buf) - 8:
        fail(f"{path}: bad header length {n}")
    if n % 8 != 0:
        fail(f"{path}: header length {n} is not a multiple of 8 as the reference writer pads it")
    raw = buf[8:8 + n]
    if not raw.startswith(b"{"):
        fail(f"{path}: header does not start with '{{'")
    if raw.rstrip(b" ") != raw.rstrip():
        fail(f"{path}: header padding is not spaces")
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        fail(f"{path}: header is not an object")
    meta = header.pop("__metadata__", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        fail(f"{path}: metadata is not string -> string")
    data = buf[8 + n:]
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"])
    pos = 0
    for name, e in entries:
        b, end = e["data_offsets"]
        if b != pos or end < b:
            fail(f"{path}: tensor {name}: offsets {b},{end} do not continue at {pos}")
        if end - b != numel(e["shape"]) * SIZES[e["dtype"]]:
            fail(f"{path}: tensor {name}: size mismatch")
        pos = end
    if pos != len(data):
        fail(f"{path}: data has {len(data)} bytes, tensors cover {pos}")
    # The reference writer's order: alignment descending, then name.
    names = [k for k, _ in entries]
    if names != sorted(names, key=lambda k: (-SIZES[header[k]["dtype"]], k)):
        fail(f"{path}: tensors are not in the reference writer's order: {names}")
    try:
        import torch
    except Exception:
        torch = None
    for name, e in entries:
        if e["dtype"] != "F32":
            continue
        b, end = e["data_offsets"]
        vals = struct.unpack(f"<{(end - b) // 4}f", data[b:end])
        want = [i * 0.25 - 1 for i in range(len(vals))]
        if list(vals) != want:
            fail(f"{path}: tensor {name}: values {vals[:8]} differ from {want[:8]}")
        if torch is not None and end > b:
            t = torch.frombuffer(bytearray(data[b:end]), dtype=torch.float32).reshape(e["shape"])
            if list(t.shape) != e["shape"] or t.flatten().tolist() != want:
                fail(f"{path}: tensor {name}: torch sees something else")
    print(f"safetensors_check: {path}: {len(entries)} tensors OK"
          + (" (torch cross-check)" if torch is not None else ""))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    (write if sys.argv[1] == "write" else check)(sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
