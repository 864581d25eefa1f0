#!/usr/bin/python3
"""One NetTailor architecture-tuning step in PyTorch, timed two ways.

    torch_nettailor.py STUDENT.xml TEACHER.xml [--batch B] [--steps S]
                       [--warmup W] [--threads T] [--check]

STUDENT.xml is a tailored graph (`ntc tailor`), TEACHER.xml the graph it
distils from (a backbone with the same value names at the layer outputs).
Both are interpreted op by op with the weights of their safetensors files,
as bench/torch_peer.py does, so the network is ntc's by construction.

A step is what `ntc train STUDENT --teacher TEACHER` does per batch:
teacher forward (inference mode, no_grad), student forward (batchnorm of
frozen universal blocks in inference mode, of task blocks in training
mode; universal parameters frozen; proxies, alphas and the classifier
trainable), the loss of DESIGN.md

    L = CE + lambda_t * ((1/L) sum_l MSE(x_l, t_l) + MSE(z, z_t)) + lambda_c * E[C]

with E[C] on the true source layer (include/ntc/nettailor.h), backward,
and an SGD update (lr 0.1, momentum 0.9, weight decay 5e-4 on conv and
linear weights only, as `ntc train`).  Each layer's MSE trains only that
layer: its inputs are constants for that term.  The logits term trains
only the head (what follows the last layer).  Two formulations:

  reference    the way the NetTailor reference code gets the stop-gradient:
               after the normal forward, every layer (universal block,
               proxies, mix, relu) and the head run a second time on
               detached copies of their inputs, and the MSE terms use those
               second outputs.  One backward of the total loss.
  single-pass  every layer runs once.  The CE and E[C] gradient comes from
               one backward over everything; each local term's gradient
               from a backward restricted to that layer's own parameters
               (torch.autograd.backward(..., inputs=layer params)), which
               only visits the layer's nodes: nothing flows into its
               inputs.  This is the gradient of the reference formulation
               exactly (--check compares the two), the same schedule as
               ntc's (forward once, the backward of each layer's scope
               repeated for its local term).

Prints per formulation one line
    torch-<name> ms_per_step=M images_per_s=I steps=S threads=T
with the median over S timed steps after W warm-up steps.  With --check it
first prints the largest relative difference between the two
formulations' gradients on one batch.

Input: the first B Fashion-MNIST training images (the data `ntc train
--data fashion-mnist` reads) when the files are installed, else random.
"""
import argparse
import gzip
import os
import statistics
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peer import ints, load_safetensors  # noqa: E402  (same loader as the inference peer)

SLOTS = {"conv2d": ["weight", "bias"], "batchnorm": ["scale", "bias", "mean", "var"],
         "mix": ["alpha"], "linear": ["weight", "bias"]}
OPTIONAL = {("conv2d", "bias"), ("linear", "bias")}
FMNIST = "/usr/share/datasets/fashion-mnist/train-%s-ubyte.gz"


class Net:
    """An ntc graph as a list of nodes in topological order, with its
    parameters.  Nodes of frozen blocks get frozen parameters and
    inference-mode batchnorm; all others are trainable."""

    def __init__(self, path, trainable):
        root = ET.parse(path).getroot()
        self.meta = {m.get("key"): m.get("value") for m in root.iter("meta")}
        self.inputs = [e.get("name") for e in root.iter("input")]
        self.outputs = [e.get("from") for e in root.iter("output")]
        nodes = []
        for e in root:
            if e.tag == "node":
                nodes.append(dict(e.attrib, block=None, frozen=False))
            elif e.tag == "block":
                frozen = e.get("frozen") == "true"
                nodes += [dict(n.attrib, block=e.get("name"), frozen=frozen) for n in e.iter("node")]
        self.nodes = self.topo(nodes)
        self.by_name = {n["name"]: n for n in self.nodes}
        tensors = load_safetensors(os.path.join(os.path.dirname(path), root.get("weights")))
        self.params = {}
        for n in self.nodes:
            n["ins"] = n["in"].split(",")
            n["train"] = trainable and not n["frozen"]
            for slot in SLOTS.get(n["op"], []):
                name = n.get(slot)
                if name is None and (n["op"], slot) in OPTIONAL:
                    continue
                t = tensors[name or f"{n['name']}.{slot}"].clone()
                if n["train"] and slot not in ("mean", "var"):
                    t.requires_grad_(True)
                self.params[(n["name"], slot)] = t

    @staticmethod
    def topo(nodes):
        made = {n["name"] for n in nodes}
        done, order, pending = set(), [], nodes
        while pending:
            rest = [n for n in pending if not all(i in done or i not in made for i in n["in"].split(","))]
            if len(rest) == len(pending):
                raise SystemExit("graph has a cycle")
            for n in pending:
                if n not in rest:
                    order.append(n)
                    done.add(n["name"])
            pending = rest
        return order

    def trainable(self):
        return [t for t in self.params.values() if t.requires_grad]

    def run(self, nodes, env):
        """Runs `nodes` (in order) reading and extending env."""
        for n in nodes:
            env[n["name"]] = self.op(n, [env[i] for i in n["ins"]])
        return env

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
            # Task blocks: batch statistics (training mode), running stats updated.
            return F.batch_norm(x[0], p("mean"), p("var"), p("scale"), p("bias"), n["train"], 0.1,
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
                raise SystemExit(f"{name}: asymmetric pooling pads are not supported here")
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
        raise SystemExit(f"{name}: op {kind} unknown to this script")


class Layer:
    """Layer i of a tailored graph (ntc/nettailor.h): its mix node, its
    branch blocks, the relu after the mix; its nodes in graph order."""

    def __init__(self, net, mix):
        self.mix = mix
        self.blocks = [net.by_name[v]["block"] if v in net.by_name else None for v in mix["ins"]]
        if None in self.blocks:
            raise SystemExit(f"{mix['name']}: a mix input is not the output of a block")
        readers = [n for n in net.nodes if mix["name"] in n["ins"]]
        tail = [readers[0]] if len(readers) == 1 and readers[0]["op"] == "relu" and readers[0]["block"] is None else []
        self.out = tail[0]["name"] if tail else mix["name"]
        mine = set(self.blocks)
        self.nodes = [n for n in net.nodes if n["block"] in mine] + [mix] + tail
        made = {n["name"] for n in self.nodes}
        self.inputs = sorted({i for n in self.nodes for i in n["ins"] if i not in made})
        # The one outside value each branch reads.
        self.src = []
        for b in self.blocks:
            bn = [n for n in self.nodes if n["block"] == b]
            bm = {n["name"] for n in bn}
            outside = {i for n in bn for i in n["ins"] if i not in bm}
            if len(outside) != 1:
                raise SystemExit(f"block {b} reads {len(outside)} outside values, expected 1")
            self.src.append(outside.pop())
        self.params = [net.params[(n["name"], s)] for n in self.nodes for s in SLOTS.get(n["op"], [])
                       if (n["name"], s) in net.params and net.params[(n["name"], s)].requires_grad]


class Student:
    def __init__(self, path, input_shape):
        self.net = Net(path, trainable=True)
        net = self.net
        self.layers = [Layer(net, n) for n in net.nodes if n["op"] == "mix"]
        in_layer = {n["name"] for l in self.layers for n in l.nodes}
        last = self.layers[-1].out
        # The head: every node downstream of the last layer's output.
        reached, self.head = {last}, []
        for n in net.nodes:
            if n["name"] not in in_layer and any(i in reached for i in n["ins"]):
                reached.add(n["name"])
                self.head.append(n)
        self.head_params = [net.params[(n["name"], s)] for n in self.head for s in SLOTS.get(n["op"], [])
                            if (n["name"], s) in net.params and net.params[(n["name"], s)].requires_grad]
        self.complexity_setup(input_shape)

    def complexity_setup(self, input_shape):
        """c_ij, source layers and fixed readers for E[C] (nettailor.h)."""
        net = self.net
        x = torch.zeros([1] + list(input_shape))
        shapes = {net.inputs[0]: x.shape}
        with torch.no_grad():
            env = {net.inputs[0]: x}
            for n in net.nodes:
                env[n["name"]] = net.op(dict(n, train=False), [env[i] for i in n["ins"]])
                shapes[n["name"]] = env[n["name"]].shape
        macs = {}
        for n in net.nodes:
            if n["op"] == "conv2d":
                k = ints(n["kernel"], 2)
                m = int(n["filters"]) * shapes[n["name"]][2] * shapes[n["name"]][3] * shapes[n["ins"][0]][1] * k[0] * k[1]
            elif n["op"] == "linear":
                m = int(n["units"]) * shapes[n["ins"][0]][1]
            elif n["op"] == "mix":
                m = len(n["ins"]) * shapes[n["name"]].numel()
            else:
                m = 0
            macs[n["name"]] = m
        total = float(net.meta.get("nettailor.backbone-macs", sum(macs.values())))
        out_layer = {l.out: i for i, l in enumerate(self.layers)}
        branch_nodes = {n["name"] for l in self.layers for n in l.nodes if n["block"] is not None}
        self.cost, self.src_layer = [], []
        for l in self.layers:
            self.cost.append([sum(macs[n["name"]] for n in l.nodes if n["block"] == b) / total for b in l.blocks])
            self.src_layer.append([out_layer.get(s, -1) for s in l.src])
        # Readers of x_i: branches (l, r) whose source is layer i; fixed if anything else reads it.
        self.readers = [[(l, r) for l in range(len(self.layers)) for r, s in enumerate(self.src_layer[l]) if s == i]
                        for i in range(len(self.layers))]
        self.fixed = [any(l.out in n["ins"] and n["name"] not in branch_nodes for n in net.nodes)
                      for l in self.layers]

    def expected_complexity(self):
        a = [torch.softmax(self.net.params[(l.mix["name"], "alpha")], 0) for l in self.layers]
        e = 0
        for i, l in enumerate(self.layers):
            pout = 0 if self.fixed[i] else torch.prod(torch.stack([1 - a[k][r] for k, r in self.readers[i]])) \
                if self.readers[i] else 1
            for j in range(len(l.blocks)):
                s = self.src_layer[i][j]
                pin = torch.prod(1 - a[s]) if s >= 0 else 0
                e = e + self.cost[i][j] * (a[i][j] - pin - pout)
        return e


def load_fmnist(batch, shape):
    try:
        with gzip.open(FMNIST % "images-idx3") as f:
            img = np.frombuffer(f.read(), np.uint8, offset=16)
        with gzip.open(FMNIST % "labels-idx1") as f:
            lab = np.frombuffer(f.read(), np.uint8, offset=8)
    except OSError:
        return None
    if list(shape) != [1, 28, 28]:
        return None
    x = torch.from_numpy(img[:batch * 784].astype(np.float32).reshape(batch, 1, 28, 28) / 255.0)
    return x, torch.from_numpy(lab[:batch].astype(np.int64))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student")
    ap.add_argument("teacher")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lambda-teacher", type=float, default=10.0)
    ap.add_argument("--lambda-complexity", type=float, default=0.3)
    ap.add_argument("--only", choices=["reference", "single-pass"], help="time one formulation")
    ap.add_argument("--check", action="store_true", help="compare the two formulations' gradients first")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    shape = [int(d) for d in ET.parse(a.student).getroot().find("input").get("shape").split(",")[1:]]
    st = Student(a.student, shape)
    teacher = Net(a.teacher, trainable=False)
    names = [l.out for l in st.layers]
    data = load_fmnist(a.batch, shape)
    x, y = data if data else (torch.randn([a.batch] + shape), torch.randint(0, 10, (a.batch,)))
    L = len(st.layers)
    lt, lc = a.lambda_teacher, a.lambda_complexity

    def teacher_targets():
        with torch.no_grad():
            env = teacher.run(teacher.nodes, {teacher.inputs[0]: x})
            return [env[v] for v in names], env[teacher.outputs[0]]

    def reference_loss():
        t_layers, t_logits = teacher_targets()
        env = st.net.run(st.net.nodes, {st.net.inputs[0]: x})
        logits = env[st.net.outputs[0]]
        mse = 0
        for l, t in zip(st.layers, t_layers):
            again = st.net.run(l.nodes, {v: env[v].detach() for v in l.inputs})
            mse = mse + F.mse_loss(again[l.out], t)
        head = st.net.run(st.head, {st.layers[-1].out: env[st.layers[-1].out].detach()})
        loss = F.cross_entropy(logits, y) + lt * (mse / L + F.mse_loss(head[st.net.outputs[0]], t_logits)) \
            + lc * st.expected_complexity()
        loss.backward()
        return loss

    def single_pass_loss():
        t_layers, t_logits = teacher_targets()
        env = st.net.run(st.net.nodes, {st.net.inputs[0]: x})
        logits = env[st.net.outputs[0]]
        local = [(lt / L * F.mse_loss(env[l.out], t), l.params) for l, t in zip(st.layers, t_layers)]
        local.append((lt * F.mse_loss(logits, t_logits), st.head_params))
        main_loss = F.cross_entropy(logits, y) + lc * st.expected_complexity()
        for term, params in local:
            torch.autograd.backward(term, inputs=params, retain_graph=True)
        main_loss.backward()
        return main_loss + sum(t.detach() for t, _ in local)

    params = st.net.trainable()
    decay = [p for (n, s), p in st.net.params.items() if p.requires_grad and s == "weight"]
    rest = [p for p in params if all(p is not q for q in decay)]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9)

    if a.check:
        snap = {k: v.detach().clone() for k, v in st.net.params.items()}
        grads = []
        for f in (reference_loss, single_pass_loss):
            for k, v in st.net.params.items():  # same running stats for both
                with torch.no_grad():
                    v.copy_(snap[k])
            opt.zero_grad(set_to_none=True)
            loss = f()
            grads.append([p.grad.clone() for p in params])
            print(f"check {f.__name__}: loss {loss.item():.6g}", file=sys.stderr)
        worst = max(((g1 - g2).abs().max() / g1.abs().max().clamp_min(1e-30)).item() for g1, g2 in zip(*grads))
        print(f"check: largest relative gradient difference reference vs single-pass {worst:.3g} "
              f"over {len(params)} tensors")

    for name, f in (("reference", reference_loss), ("single-pass", single_pass_loss)):
        if a.only and a.only != name:
            continue
        times = []
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            f()
            opt.step()
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)
        ms = statistics.median(times) * 1e3
        print(f"torch-{name} ms_per_step={ms:.1f} images_per_s={a.batch * 1e3 / ms:.1f} "
              f"steps={a.steps} threads={a.threads}", flush=True)


if __name__ == "__main__":
    main()
