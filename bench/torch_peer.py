#!/usr/bin/python3
"""PyTorch peer of `ntc run`: executes an ntc graph (XML + safetensors) with
torch.nn.functional, op by op, with the same weights, and times it.

    torch_peer.py GRAPH.xml X.npy Y.npy [--batch B] [--threads T] [--repeat R]

Runs X (float32 [n, ...]) through the graph in chunks of B items (default:
all at once), writes the first output to Y.npy and prints one line per
repeat on stderr: "torch: N items in MS ms (batch B, T threads)", the same
form as `ntc run --time`.  Eval mode, no_grad.

The graph is interpreted, not rebuilt from a model zoo, so "the same
architecture" holds by construction for any graph ntc can run.  The
safetensors file is parsed by hand with numpy (8-byte little-endian header
length, JSON header, raw little-endian data) so no extra package is needed.
"""
import argparse
import json
import os
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {t['dtype']}, expected F32")
        lo, hi = t["data_offsets"]
        a = np.frombuffer(raw, dtype="<f4", count=(hi - lo) // 4, offset=base + lo)
        out[name] = torch.from_numpy(a.reshape(t["shape"]).copy())
    return out


def ints(s, n):
    """An ntc int2/int4 attribute: '3' -> [3]*n; '1,2' as int4 -> (h, w) both sides."""
    v = [int(x) for x in s.split(",")]
    if len(v) == 1:
        return v * n
    if n == 4 and len(v) == 2:
        return v * 2
    return v


# Parameter slots per op, in table order (ntc/ops.def, ir/ops.c).
SLOTS = {"conv2d": ["weight", "bias"], "batchnorm": ["scale", "bias", "mean", "var"],
         "mix": ["alpha"], "linear": ["weight", "bias"]}
OPTIONAL = {("conv2d", "bias"), ("linear", "bias")}


class Graph:
    def __init__(self, path):
        root = ET.parse(path).getroot()
        self.inputs = [e.get("name") for e in root.iter("input")]
        self.outputs = [e.get("from") for e in root.iter("output")]
        self.nodes = [e.attrib for e in root.iter("node")]
        weights = os.path.join(os.path.dirname(path), root.get("weights"))
        tensors = load_safetensors(weights)
        self.params = {}
        for n in self.nodes:
            for slot in SLOTS.get(n["op"], []):
                name = n.get(slot)
                if name is None and (n["op"], slot) in OPTIONAL:
                    continue
                self.params[(n["name"], slot)] = tensors[name or f"{n['name']}.{slot}"]

    def forward(self, feeds):
        env = dict(feeds)
        pending = list(self.nodes)
        while pending:            # any topological order: run what is ready
            rest = []
            for n in pending:
                ins = n["in"].split(",")
                if all(i in env for i in ins):
                    env[n["name"]] = self.op(n, [env[i] for i in ins])
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                raise SystemExit("graph has a cycle or a missing input")
            pending = rest
        return [env[o] for o in self.outputs]

    def op(self, n, x):
        kind, name = n["op"], n["name"]
        p = lambda slot: self.params.get((name, slot))
        if kind == "conv2d":
            k, s, d = ints(n["kernel"], 2), ints(n.get("stride", "1"), 2), ints(n.get("dilation", "1"), 2)
            t, l, b, r = ints(n.get("pad", "0"), 4)
            if t == b and l == r:
                return F.conv2d(x[0], p("weight"), p("bias"), s, (t, l), d)
            return F.conv2d(F.pad(x[0], (l, r, t, b)), p("weight"), p("bias"), s, 0, d)
        if kind == "batchnorm":
            return F.batch_norm(x[0], p("mean"), p("var"), p("scale"), p("bias"), False, 0.0,
                                float(n.get("epsilon", "1e-5")))
        if kind == "relu":
            return F.relu(x[0])
        if kind == "add":
            return sum(x[1:], x[0])
        if kind == "mix":
            w = torch.softmax(p("alpha"), 0)
            return sum((w[j] * x[j] for j in range(1, len(x))), w[0] * x[0])
        if kind in ("maxpool", "avgpool"):
            k, s = ints(n["kernel"], 2), ints(n.get("stride", "1"), 2)
            t, l, b, r = ints(n.get("pad", "0"), 4)
            if t != b or l != r:
                raise SystemExit(f"{name}: asymmetric pooling pads have no torch equivalent here")
            ceil = n.get("ceil_mode", "0") == "1"
            if kind == "maxpool":
                return F.max_pool2d(x[0], k, s, (t, l), ceil_mode=ceil)
            return F.avg_pool2d(x[0], k, s, (t, l), ceil_mode=ceil,
                                count_include_pad=n.get("count_include_pad", "0") == "1")
        if kind == "global_avgpool":
            return x[0].mean((2, 3), keepdim=True)
        if kind == "flatten":
            return torch.flatten(x[0], int(n.get("axis", "1")))
        if kind == "linear":
            return F.linear(x[0], p("weight"), p("bias"))
        if kind == "softmax":
            return torch.softmax(x[0], int(n.get("axis", "-1")))
        raise SystemExit(f"{name}: op {kind} unknown to the torch peer")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graph")
    ap.add_argument("x")
    ap.add_argument("y")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = Graph(a.graph)
    if len(g.inputs) != 1:
        raise SystemExit("the torch peer feeds graphs with one input")
    x = torch.from_numpy(np.load(a.x).astype(np.float32))
    batch = a.batch or len(x)
    with torch.no_grad():
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            ys = [g.forward({g.inputs[0]: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
            ms = 1e3 * (time.perf_counter() - t0)
            print(f"torch: {len(x)} items in {ms:.3f} ms (batch {batch}, {a.threads} threads)", file=sys.stderr)
    np.save(a.y, torch.cat(ys).numpy())


if __name__ == "__main__":
    main()
