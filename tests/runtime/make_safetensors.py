#!/usr/bin/env python3
"""make_safetensors.py OUTDIR — writes safetensors files by hand (struct +
json + numpy, no safetensors package) for test_safetensors.c to read:

  OUTDIR/py_model.safetensors      header padded to 8 bytes as the Python
                                   library does, ensure_ascii JSON (so names
                                   arrive as \\uXXXX escapes and surrogate
                                   pairs), header keys not in data order
  OUTDIR/py_unaligned.safetensors  the same tensors, header JSON with
                                   spaces and no padding, so the data
                                   region starts at an odd offset

The values below are repeated in test_safetensors.c (check_python_file).
"""
import json
import os
import struct
import sys

import numpy as np


def tensors():
    a = (np.arange(6, dtype=np.float32) * 0.5 - 1.0).reshape(2, 3)
    # bfloat16 as uint16: the top half of exactly representable float32s
    bf = np.array([1.0, -2.5, 0.15625, 65536.0, -0.0], dtype=np.float32)
    b = (bf.view(np.uint32) >> 16).astype(np.uint16)
    c = np.array([-1, 2**40, 7], dtype=np.int64)
    d = np.array([[0.5, -1.25], [65504.0, 2.0**-24]], dtype=np.float16)
    e = np.array([0, 1, 127, 128, 255], dtype=np.uint8)
    s = np.array(3.25, dtype=np.float32)  # a scalar, shape []
    z = np.zeros((0, 3), dtype=np.float32)
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    # data order deliberately differs from both name and dtype order
    return [
        ("e.u8", "U8", e),
        ("a.f32", "F32", a),
        ("b.bf16", "BF16", b),
        ("c.i64", "I64", c),
        ("d.f16", "F16", d),
        ("scalar", "F32", s),
        ("empty", "F32", z),
        ("h.0.attn.c_attn.weight", "F32", w),
        ("\u00fcn\u00ef/c\u00f4d\u00e9 \"q\"\\", "U8", np.array([9], dtype=np.uint8)),
        ("emoji\U0001F600", "U8", np.array([8], dtype=np.uint8)),
    ]


def build(pad, separators):
    header = {}
    blobs = []
    off = 0
    for name, dtype, arr in tensors():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    meta = {"format": "pt", "note": "line1\nline2 \"q\" \u00e9\t\u20ac"}
    # metadata last and tensor keys reversed: readers must not rely on order
    items = list(reversed(list(header.items()))) + [("__metadata__", meta)]
    text = json.dumps(dict(items), separators=separators).encode("ascii")
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    elif len(text) % 2 == 0:
        text += b" "  # odd length: the data region starts unaligned
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    for fname, pad, sep in (("py_model.safetensors", True, (",", ":")),
                            ("py_unaligned.safetensors", False, (", ", ": "))):
        with open(os.path.join(out, fname), "wb") as f:
            f.write(build(pad, sep))


if __name__ == "__main__":
    main()
