#!/usr/bin/python3
"""PyTorch's two best CPU variants of an ntc graph, timed like `ntc run --time`.

    torch_compile_peer.py GRAPH.xml X.npy --batch B [--threads T] [--repeat R] [--y Y.npy]

eager:  bench/torch_peer.py's graph interpreter (torch.nn.functional op by
        op, the graph's own weights), eval, no_grad.
frozen: the same forward traced with torch.jit.trace at batch B, frozen
        (torch.jit.freeze: weights become constants) and passed through
        torch.jit.optimize_for_inference (conv+batchnorm folding, oneDNN
        layouts and fusions).  Tracing records the ops the interpreter
        runs, so the TorchScript graph is the network itself, with no
        Python interpretation left.

Pushes X (float32 [n, ...]) through in chunks of B items, R times per
variant, and prints one line per repeat on stderr:
"torch-eager: N items in MS ms" / "torch-frozen: N items in MS ms".
--y writes the frozen variant's outputs (to check them against ntc).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peer import Graph  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, x):
        return self.g.forward({self.g.inputs[0]: x})[0]


def timed(name, f, x, batch, repeat):
    ys = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        ys = [f(x[i:i + batch]) for i in range(0, len(x), batch)]
        ms = 1e3 * (time.perf_counter() - t0)
        print(f"torch-{name}: {len(x)} items in {ms:.3f} ms (batch {batch})", file=sys.stderr)
    return torch.cat(ys)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graph")
    ap.add_argument("x")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--y")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = Graph(a.graph)
    x = torch.from_numpy(np.load(a.x).astype(np.float32))
    net = Net(g).eval()
    with torch.no_grad():
        net(x[:a.batch])                                  # warm-up (oneDNN primitive caches)
        timed("eager", net, x, a.batch, a.repeat)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, x[:a.batch])))
        for _ in range(2):                                # the profiling executor optimises on early runs
            frozen(x[:a.batch])
        y = timed("frozen", frozen, x, a.batch, a.repeat)
    if a.y:
        np.save(a.y, y.numpy())


if __name__ == "__main__":
    main()
