#!/usr/bin/env python3
"""Writes the generated part of the seed corpora in tests/fuzz/corpus/.

Files named regress-* are inputs that once crashed a target (each target
replays its whole corpus first, so they are regression tests); this
script never touches them.  The XML, .npy, IDX and ONNX seeds are
copies of the Check suites' fixtures (tests/fixtures/); this script makes
the seeds no fixture provides: safetensors files for fuzz_safetensors.c's
fixed graph and small PNGs in every colour type and bit depth libpng's
simplified API converts.  Only the standard library is used.  Usage: tests/fuzz/make_seeds.py
"""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy_fixtures(target, sub, keep):
    src = os.path.join(FIX, sub)
    for name in sorted(os.listdir(src)):
        if keep(name):
            with open(os.path.join(src, name), "rb") as f:
                put(target, name, f.read())


# ---- safetensors: the parameters of fuzz_safetensors.c's graph -------------
PARAMS = {                        # name -> shape (conv2d c, batchnorm b, linear a)
    "c.weight": [2, 1, 3, 3],
    "b.scale": [2], "b.bias": [2], "b.mean": [2], "b.var": [2],
    "a.weight": [3, 32], "a.bias": [3],
}


def safetensors(params, dtype="F32", meta=None, pad_to=8):
    header, data = {}, b""
    if meta:
        header["__metadata__"] = meta
    for name, shape in params.items():
        n = 1
        for d in shape:
            n *= d
        raw = struct.pack("<%df" % n, *[0.25 * (i % 7) for i in range(n)])
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % pad_to)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    put("safetensors", "all.safetensors", safetensors(PARAMS, meta={"format": "pt"}))
    put("safetensors", "some.safetensors", safetensors({"a.weight": [3, 32], "a.bias": [3]}))
    put("safetensors", "wrong_shape.safetensors", safetensors({"a.weight": [32, 3]}))
    put("safetensors", "f16.safetensors", safetensors({"a.bias": [3]}, dtype="F16"))
    put("safetensors", "empty.safetensors", safetensors({}))
    with open(os.path.join(FIX, "xml", "bad_weights.safetensors"), "rb") as f:
        put("safetensors", "other_graph.safetensors", f.read())


# ---- PNG ---------------------------------------------------------------------
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(w, h, color, depth, rows, extra=b"", interlace=0):
    """rows: raw scanlines without the filter byte."""
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace)) +
            extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_seeds():
    w, h = 4, 3
    gray = [bytes((x * 60 + y * 20) % 256 for x in range(w)) for y in range(h)]
    put("png", "gray8.png", png(w, h, 0, 8, gray))
    put("png", "gray16.png", png(w, h, 0, 16, [bytes(b for v in r for b in (v, v)) for r in gray]))
    put("png", "gray1.png", png(8, 2, 0, 1, [b"\xa5", b"\x5a"]))
    put("png", "graya8.png", png(w, h, 4, 8, [bytes(b for v in r for b in (v, 255 - v)) for r in gray]))
    put("png", "rgb8.png", png(w, h, 2, 8, [bytes(b for v in r for b in (v, 255 - v, v // 2)) for r in gray]))
    put("png", "rgba8.png", png(w, h, 6, 8, [bytes(b for v in r for b in (v, 0, 255, v)) for r in gray]))
    plte = chunk(b"PLTE", bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]))
    trns = chunk(b"tRNS", bytes([255, 128, 0]))
    put("png", "palette4.png", png(w, h, 3, 4, [b"\x01\x23", b"\x32\x10", b"\x00\x11"], plte + trns))
    put("png", "interlaced.png", png(1, 1, 0, 8, [b"\x80"], interlace=1))


def main():
    copy_fixtures("xml", "xml", lambda n: n.endswith(".xml"))
    copy_fixtures("npy", "data", lambda n: n.endswith(".npy"))
    copy_fixtures("idx", "data", lambda n: "idx" in n)
    # resnet8.onnx (320 kB) would make every mutation slow; the rest is small.
    copy_fixtures("onnx", "onnx", lambda n: n.endswith(".onnx") and n != "resnet8.onnx")
    safetensors_seeds()
    png_seeds()


if __name__ == "__main__":
    main()
