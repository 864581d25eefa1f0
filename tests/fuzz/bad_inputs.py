#!/usr/bin/env python3
"""Prints the table of docs/bad-inputs.md: every kind of bad input fed to
the ntc command line, and the exact error line the user sees.

Inputs: the Check suites' malformed fixtures (tests/fixtures/xml/bad_*,
tests/fixtures/data/bad_*, tests/fixtures/onnx/opset18.onnx), files written here the way the weights, npy,
data and fuzz findings damaged them, and the fuzz regression inputs.
Usage: tests/fuzz/bad_inputs.py NTC_BINARY > table.md
Needs only the standard library.  Each row runs one command in a scratch
directory; a command that does not fail is reported as such (a bug).
"""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
NTC = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="ntc-bad-")

GRAPH = """<graph name="tiny" ir-version="1" weights="tiny.safetensors">
  <input name="x" shape="N,1,4,4"/>
  <node op="flatten" name="f" in="x"/>
  <node op="linear" name="a" in="f" units="3" bias="a.bias"/>
  <output name="y" from="a"/>
</graph>
"""


def write(name, data):
    p = os.path.join(TMP, name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return p


def st(header, data=b""):
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h)) + h + data


def floats(n):
    return struct.pack("<%df" % n, *[0.1] * n)


GOOD_HEADER = json.dumps({"a.weight": {"dtype": "F32", "shape": [3, 16], "data_offsets": [0, 192]},
                          "a.bias": {"dtype": "F32", "shape": [3], "data_offsets": [192, 204]}})


def npy(header, data=b"", magic=b"\x93NUMPY\x01\x00"):
    h = header.encode()
    h += b" " * (-(len(magic) + 2 + len(h) + 1) % 64) + b"\n"
    return magic + struct.pack("<H", len(h)) + h + data


def idx(dims, data, type_=8):
    return bytes([0, 0, type_, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(w, h, rows, color=0, depth=8):
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


rows = []


def row(section, what, cmd):
    """cmd: arguments after `ntc`; paths relative to TMP."""
    r = subprocess.run([NTC] + cmd, cwd=TMP, capture_output=True, text=True, errors="replace")
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    err = next((l for l in lines if "error" in l), lines[0] if lines else "")
    if r.returncode == 0:
        err = "(accepted: exit 0)"
    elif r.returncode < 0 or r.returncode > 125:
        err = "(crashed: status %d) %s" % (r.returncode, err)
    err = err.replace(TMP + "/", "").replace(TMP, ".").replace(FIX + "/", "")
    rows.append((section, what, err))


def fixture(sub, name):
    dst = os.path.join(TMP, name)
    shutil.copy(os.path.join(FIX, sub, name), dst)
    return name


def main():
    # ---- XML graphs: the xml suite's fixtures ------------------------------
    for name in sorted(os.listdir(os.path.join(FIX, "xml"))):
        if name.startswith("bad_") and name.endswith(".xml"):
            fixture("xml", name)
    fixture("xml", "bad_weights.safetensors")
    for name in sorted(os.listdir(os.path.join(FIX, "xml"))):
        if name.startswith("bad_") and name.endswith(".xml"):
            row("XML graph", "`%s`" % name, ["check", name])
    write("empty.xml", "")
    row("XML graph", "empty file", ["check", "empty.xml"])
    write("binary.xml", b"\x00\xff\xfe\x89PNG")
    row("XML graph", "binary garbage", ["check", "binary.xml"])
    write("deep.xml", "<graph>" + "<a>" * 5000 + "</a>" * 5000 + "</graph>")
    row("XML graph", "elements nested 5000 deep", ["check", "deep.xml"])
    write("entity.xml", '<!DOCTYPE g [<!ENTITY e SYSTEM "/etc/passwd">]><graph name="&e;" ir-version="1"/>')
    row("XML graph", "external entity (`SYSTEM \"/etc/passwd\"`)", ["check", "entity.xml"])
    row("XML graph", "missing file", ["check", "absent.xml"])
    os.makedirs(os.path.join(TMP, "adir.xml"), exist_ok=True)
    row("XML graph", "a directory", ["check", "adir.xml"])

    # ---- safetensors weights ---------------------------------------------
    def weights(what, data):
        d = "w_%d" % len(rows)
        write(d + "/tiny.xml", GRAPH)
        write(d + "/tiny.safetensors", data)
        row("safetensors weights", what, ["check", d + "/tiny.xml"])

    weights("empty file", b"")
    weights("5 bytes", b"\x01\x02\x03\x04\x05")
    weights("header length past the end of the file", struct.pack("<Q", 1 << 63) + b"{}")
    weights("header not JSON", st("{\"a.weight\": ", floats(51)))
    weights("header a JSON array", st("[1,2]"))
    weights("invalid UTF-8 in a name", st(b'{"a.we\xffght":{}}'))
    weights("dtype F16 for a float32 parameter",
            st(GOOD_HEADER.replace('"F32", "shape": [3], "data_offsets": [192, 204]',
                                   '"F16", "shape": [3], "data_offsets": [192, 198]'), floats(50)[:198]))
    weights("shape [16,3] for a [3,16] parameter", st(GOOD_HEADER.replace("[3, 16]", "[16, 3]"), floats(51)))
    weights("offsets holding fewer bytes than the shape needs",
            st(GOOD_HEADER.replace("[0, 192]", "[0, 188]"), floats(51)))
    weights("offsets past the data section", st(GOOD_HEADER, floats(40)))
    weights("overlapping tensors", st(GOOD_HEADER.replace("[192, 204]", "[180, 192]"), floats(51)))
    weights("a tensor named twice", st(GOOD_HEADER[:-1] + ', "a.bias": {"dtype": "F32", "shape": [3], '
                                       '"data_offsets": [192, 204]}}', floats(51)))
    weights("shape whose size overflows",
            st(GOOD_HEADER.replace("[3, 16]", "[4294967296, 4294967296, 4294967296]"), floats(51)))
    weights("a parameter missing", st(json.dumps({"a.weight": {"dtype": "F32", "shape": [3, 16],
                                                               "data_offsets": [0, 192]}}), floats(48)))
    weights("NaN in a weight", st(GOOD_HEADER, floats(50) + struct.pack("<f", float("nan"))))

    # ---- .npy inputs (ntc run) -------------------------------------------
    write("g.xml", GRAPH)
    write("tiny.safetensors", st(GOOD_HEADER, floats(51)))

    def run_npy(what, name):
        row(".npy array (`ntc run --input`)", what, ["run", "g.xml", "--input", name, "-o", "y.npy"])

    for name in sorted(os.listdir(os.path.join(FIX, "data"))):
        if name.startswith("bad_") and name.endswith(".npy"):
            run_npy("`%s`" % fixture("data", name), name)
    write("hdr_huge.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 30))
    run_npy("header length 1 GiB", "hdr_huge.npy")
    write("dims_huge.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1000000000000), }"))
    run_npy("shape whose size overflows", "dims_huge.npy")
    # fuzz_npy's finding: an empty array whose other dimensions overflow
    write("empty_huge.npy", npy("{'descr': '|u1', 'fortran_order': False, 'shape': (6, 2222222222222222244, 0), }"))
    run_npy("empty, but the other dimensions overflow: (6, 2222222222222222244, 0)", "empty_huge.npy")
    write("big_short.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 1, 4, 4), }", floats(16)))
    run_npy("header announces 6.4 MB, file holds 64 bytes", "big_short.npy")
    write("trailing.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 4, 4), }", floats(17)))
    run_npy("trailing bytes after the data", "trailing.npy")
    write("u8.npy", npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 4, 4), }", bytes(16)))
    run_npy("uint8 pixels where float32 is needed", "u8.npy")
    write("shape.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", floats(6)))
    run_npy("shape [2,3] for input [N,1,4,4]", "shape.npy")
    write("nan.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 4, 4), }",
                         floats(15) + struct.pack("<f", float("nan"))))
    run_npy("NaN in the input", "nan.npy")
    os.makedirs(os.path.join(TMP, "adir.npy"), exist_ok=True)
    run_npy("a directory", "adir.npy")

    # ---- IDX files (ntc eval --data IMAGES,LABELS) --------------------------
    fixture("data", "idx_labels")
    write("labels6", idx([6], bytes([0, 1, 2, 0, 1, 2])))

    def eval_idx(what, images, labels="labels6"):
        row("IDX files (`ntc eval --data`)", what, ["eval", "g.xml", "--data", images + "," + labels])

    for name in ("bad_idx_magic", "bad_idx_truncated", "bad_idx_float"):
        eval_idx("`%s`" % fixture("data", name), name)
    write("rank0", bytes([0, 0, 8, 0]))
    eval_idx("rank 0", "rank0")
    write("huge_dims", idx([65536, 65536, 65536], b""))
    eval_idx("dimensions 65536^3, no data", "huge_dims")
    write("big_short", idx([100000, 4, 4], bytes(16)))
    eval_idx("header announces 1.6 MB, file holds 16 bytes", "big_short")
    gz = gzip.compress(idx([6, 4, 4], bytes(96)))
    write("cut.gz", gz[:len(gz) // 2])
    eval_idx("gzip stream cut in the middle", "cut.gz")
    write("notrailer.gz", gz[:-8])
    eval_idx("gzip stream without its CRC trailer", "notrailer.gz")
    write("badcrc.gz", gz[:-8] + bytes(4) + gz[-4:])
    eval_idx("gzip stream with a wrong CRC", "badcrc.gz")
    write("img6", idx([6, 4, 4], bytes(96)))
    write("labels5", idx([5], bytes(5)))
    eval_idx("5 labels for 6 images", "img6", "labels5")
    write("labels_big", idx([6], bytes([0, 1, 2, 0, 1, 200])))
    eval_idx("label 200 for a 3-class graph", "img6", "labels_big")

    # ---- ONNX models (ntc import) -----------------------------------------------
    def onnx(what, name):
        row("ONNX model (`ntc import`)", what, ["import", name, "-o", "imported.xml"])

    onnx("`opset18.onnx`: opset 18", fixture("onnx", "opset18.onnx"))
    mlp = open(os.path.join(FIX, "onnx", "mlp.onnx"), "rb").read()
    write("cut.onnx", mlp[:len(mlp) // 2])
    onnx("a model cut in half", "cut.onnx")
    write("empty.onnx", b"")
    onnx("empty file", "empty.onnx")
    write("text.onnx", GRAPH)
    onnx("an XML graph named .onnx", "text.onnx")
    onnx("missing file", "absent.onnx")

    # ---- PNG folders (ntc eval --data DIR --resize) ----------------------------
    def folder(what, files):
        d = "png_%d" % len(rows)
        os.makedirs(os.path.join(TMP, d), exist_ok=True)
        for rel, data in files.items():
            if data is None:
                os.makedirs(os.path.join(TMP, d, rel), exist_ok=True)
            else:
                write(d + "/" + rel, data)
        row("PNG folder (`ntc eval --data DIR`)", what, ["eval", "g.xml", "--data", d, "--resize"])

    good = png(2, 2, [b"\x00\xff", b"\xff\x00"])
    folder("no class subdirectories", {"x.png": good})
    folder("an empty class", {"a/x.png": good, "b": None})
    folder("a text file named .png", {"a/x.png": b"not a png"})
    folder("PNG cut in the middle", {"a/x.png": good[:40]})
    folder("bad CRC", {"a/x.png": good[:29] + b"\0" + good[30:]})
    folder("width 0 in IHDR", {"a/x.png": png(0, 2, [b"", b""])})
    huge = chunk(b"IHDR", struct.pack(">IIBBBBB", 10**6, 10**6, 8, 0, 0, 0, 0))
    folder("1000000x1000000 image with 2x2 pixels of data", {"a/x.png": good[:8] + huge + good[33:]})
    folder("too many classes for the graph", {c + "/x.png": good for c in "abcd"})

    print("| input | bad input | what the user sees |")
    print("|---|---|---|")
    for section, what, err in rows:
        print("| %s | %s | `%s` |" % (section, what, err.replace("|", "\\|").replace("`", "'")))
    shutil.rmtree(TMP)


if __name__ == "__main__":
    main()
