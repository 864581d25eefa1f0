#!/usr/bin/python3
"""Graph surgery for bench/bench_compile.sh (numpy only).

    bench_graphs.py alphas STUDENT.xml SEED
        Overwrites the alpha logits of a tailored student's mix nodes, in
        its safetensors file, with seeded draws: universal branches
        N(1.5, 1), proxies N(-1.5, 1.5).  A freshly tailored student has the
        same alphas everywhere (+2 / -2), so pruning keeps every universal
        block and drops every proxy; these stand in for trained alphas,
        which differ per layer, so that the pruned network has the
        structure of a real one (some universal blocks gone, some proxies
        kept).  For timing only: the network is not accurate.

    bench_graphs.py conv3x3 BACKBONE.xml OUT.xml
        Writes a graph of the backbone's 3x3 convolutions only, chained in
        order (each reads the previous one; in a ResNet the main path's
        shapes chain), sharing the backbone's weights file.  Timing it
        measures the GFLOP/s of exactly those convolutions.

    bench_graphs.py macs3x3 BACKBONE.xml
        Prints the MACs per image of the backbone's 3x3 convolutions.
"""
import json
import sys
import xml.etree.ElementTree as ET

import numpy as np


def read_safetensors(path):
    raw = bytearray(open(path, "rb").read())
    n = int.from_bytes(raw[:8], "little")
    return raw, json.loads(raw[8:8 + n]), 8 + n


def alphas(student, seed):
    root = ET.parse(student).getroot()
    path = student.rsplit("/", 1)[0] + "/" + root.get("weights") if "/" in student else root.get("weights")
    raw, header, base = read_safetensors(path)
    rng = np.random.RandomState(int(seed))
    for node in root.iter("node"):
        if node.get("op") != "mix":
            continue
        name = node.get("alpha") or node.get("name") + ".alpha"
        lo, hi = header[name]["data_offsets"]
        k = (hi - lo) // 4
        # branch 0 of a layer's mix is its universal block (ntc tailor's order)
        a = np.concatenate([rng.normal(1.5, 1.0, 1), rng.normal(-1.5, 1.5, k - 1)]).astype("<f4")
        raw[base + lo:base + hi] = a.tobytes()
    open(path, "wb").write(raw)


def conv_layers(backbone):
    """(node, in_channels, in_hw) of every 3x3 convolution, in order, with
    shapes followed along the chain."""
    root = ET.parse(backbone).getroot()
    c, h, w = (int(d) for d in root.find("input").get("shape").split(",")[1:])
    out = []
    for n in root.iter("node"):
        if n.get("op") != "conv2d" or n.get("kernel") not in ("3", "3,3"):
            continue
        s = int(n.get("stride", "1"))
        out.append((n, c, h, w))
        c = int(n.get("filters"))
        h, w = (h + 2 - 3) // s + 1, (w + 2 - 3) // s + 1
    return root, out


def macs3x3(backbone):
    _, layers = conv_layers(backbone)
    total = 0
    for n, c, h, w in layers:
        s = int(n.get("stride", "1"))
        ho, wo = (h + 2 - 3) // s + 1, (w + 2 - 3) // s + 1
        total += int(n.get("filters")) * ho * wo * c * 9
    print(total)


def conv3x3(backbone, out_path):
    root, layers = conv_layers(backbone)
    g = ET.Element("graph", {"name": root.get("name") + "-conv3x3", "ir-version": root.get("ir-version"),
                             "weights": root.get("weights")})
    ET.SubElement(g, "input", root.find("input").attrib)
    prev = root.find("input").get("name")
    for n, _, _, _ in layers:
        a = dict(n.attrib)
        a["in"] = prev
        a.pop("bias", None)   # the backbone's convolutions have none (batchnorm follows)
        ET.SubElement(g, "node", a)
        prev = a["name"]
    ET.SubElement(g, "output", {"name": "y", "from": prev})
    ET.ElementTree(g).write(out_path, encoding="UTF-8", xml_declaration=True)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "alphas" and len(sys.argv) == 4:
        alphas(sys.argv[2], sys.argv[3])
    elif cmd == "conv3x3" and len(sys.argv) == 4:
        conv3x3(sys.argv[2], sys.argv[3])
    elif cmd == "macs3x3" and len(sys.argv) == 3:
        macs3x3(sys.argv[2])
    else:
        sys.exit(__doc__)
