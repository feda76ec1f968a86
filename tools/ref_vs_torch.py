#!/usr/bin/env python3
"""ref_vs_torch.py — checks netc's reference executor against PyTorch, op by op.

    NETC_REF_DUMP=/tmp/refdump CK_RUN_SUITE=ref build/test_netc
    tools/ref_vs_torch.py --netc build/netc --dump /tmp/refdump

The ref test suite (tests/test_ref.c, whole-net tests) writes every tensor of
a forward pass as DIR/<tag>/t<id>.bin (raw float32 / int32, row-major) and
DIR/<tag>/args.txt (netdef, netc arguments, train|eval).  This tool reads the
graph from `netc graph --json` with the same arguments and recomputes every
node in PyTorch from netc's own values of the node's inputs and parameters,
so an error is pinned to one op.  Parameters are dumped as initialized
(before a training pass updates the batchnorm running statistics).

Training dumps also carry netc's d(loss)/d(parameter) (g<id>.bin, from the
reference backward); the whole graph is then chained in PyTorch with the
parameters as leaves, differentiated by autograd, and every gradient
compared (see check_grads for the tolerance).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def load(d, tid, t):
    dt = np.int32 if t["dtype"] == "i32" else np.float32
    a = np.fromfile(os.path.join(d, "t%d.bin" % tid), dtype=dt)
    return torch.from_numpy(a.reshape(t["shape"]).astype(np.int64 if dt == np.int32 else np.float64))


def pad_list(padding):
    """[[lo, hi] per axis D,H,W] -> F.pad order (last axis first)."""
    out = []
    for lo, hi in reversed(padding):
        out += [lo, hi]
    return out


def labels_to(lab, shape):
    """Labels N,1,S' brought to spatial S: multiple -> every k-th, else centre crop."""
    sl = [slice(None), slice(None)]
    for L, S in zip(lab.shape[2:], shape[2:]):
        if L % S == 0:
            sl.append(slice(0, L, L // S))
        else:
            o = (L - S) // 2
            sl.append(slice(o, o + S))
    return lab[tuple(sl)][:, 0]


def run_node(n, x, p, sr, training):
    a = n["attrs"]
    op = n["op"]
    conv = [F.conv1d, F.conv2d, F.conv3d][sr - 1]
    if op == "conv":
        y = F.pad(x[0], pad_list(a["padding"]))
        return conv(y, p[0], p[1] if a["bias"] else None, a["stride"], 0, a["dilation"], a["groups"])
    if op == "upconv":
        tconv = [F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d][sr - 1]
        y = tconv(x[0], p[0], p[1] if a["bias"] else None, a["stride"], 0, a["out_pad"], a["groups"], a["dilation"])
        sl = [slice(None), slice(None)]
        for i, (lo, hi) in enumerate(a["padding"]):
            full = y.shape[2 + i] - a["out_pad"][i]
            sl.append(slice(lo, full - hi + a["out_pad"][i]))
        return y[tuple(sl)]
    if op in ("maxpool", "avgpool"):
        pads = [lo for lo, hi in a["padding"]]
        assert all(lo == hi for lo, hi in a["padding"]), "asymmetric pool padding"
        if op == "maxpool":
            f = [F.max_pool1d, F.max_pool2d, F.max_pool3d][sr - 1]
            return f(x[0], a["kernel"], a["stride"], pads, ceil_mode=a["ceil"])
        f = [F.avg_pool1d, F.avg_pool2d, F.avg_pool3d][sr - 1]
        return f(x[0], a["kernel"], a["stride"], pads, ceil_mode=a["ceil"], count_include_pad=a["count_pad"])
    if op == "global_avgpool":
        return x[0].mean(dim=tuple(range(2, 2 + sr)), keepdim=True)
    if op == "upsample":
        if a["mode"] == "nearest":
            return F.interpolate(x[0], scale_factor=a["scale"], mode="nearest")
        mode = ["linear", "bilinear", "trilinear"][sr - 1]
        return F.interpolate(x[0], scale_factor=a["scale"], mode=mode, align_corners=a["align_corners"])
    if op == "concat":
        return torch.cat(x, dim=1)
    if op == "crop":
        ref = x[1] if len(x) > 1 else None
        sl = [slice(None), slice(None)]
        for i in range(sr):
            size = x[0].shape[2 + i]
            if ref is not None:
                lo = (size - ref.shape[2 + i]) // 2
                sl.append(slice(lo, lo + ref.shape[2 + i]))
            else:
                lo, hi = a["amount"][i]
                sl.append(slice(lo, size - hi))
        return x[0][tuple(sl)]
    if op == "pad":
        mode = {"zero": "constant", "reflect": "reflect", "replicate": "replicate"}[a["mode"]]
        kw = {"value": a["value"]} if mode == "constant" else {}
        return F.pad(x[0], pad_list(a["amount"]), mode=mode, **kw)
    if op == "add":
        y = x[0]
        for t in x[1:]:
            y = y + t
        return y
    if op == "mul":
        return x[0] * x[1]
    if op == "scale":
        return x[0] * a["factor"]
    if op == "batchnorm":
        w, b = (p[0], p[1]) if a["affine"] else (None, None)
        rm, rv = p[-2].clone(), p[-1].clone()
        return F.batch_norm(x[0], rm, rv, w, b, training, a["momentum"], a["eps"])
    if op == "instancenorm":
        w, b = (p[0], p[1]) if a["affine"] else (None, None)
        return F.instance_norm(x[0], weight=w, bias=b, eps=a["eps"])
    if op == "relu":
        return F.relu(x[0])
    if op == "leaky_relu":
        return F.leaky_relu(x[0], a["slope"])
    if op == "prelu":
        return F.prelu(x[0], p[0])
    if op == "elu":
        return F.elu(x[0], a["alpha"])
    if op == "sigmoid":
        return torch.sigmoid(x[0])
    if op == "tanh":
        return torch.tanh(x[0])
    if op == "softmax":
        return torch.softmax(x[0], dim=1)
    if op == "dropout":
        if training:
            return None     # netc's generator is its own; not comparable
        return x[0]
    if op in ("ce", "dice", "focal"):
        # logits, labels and an optional voxel weight map m (resampled like
        # the labels); voxels labelled `ignore` count for nothing
        logits, lab = x[0], labels_to(x[1], x[0].shape)
        m = labels_to(x[2], x[0].shape) if len(x) > 2 else torch.ones(lab.shape, dtype=logits.dtype)
        keep = (lab != a["ignore"]) if a["ignore"] >= 0 else torch.ones_like(lab, dtype=torch.bool)
        m = m * keep
        lab = torch.where(keep, lab, torch.zeros_like(lab))
        if op == "ce":
            w = torch.tensor(a["weight"]) if a["weight"] else torch.ones(logits.shape[1])
            nll = F.cross_entropy(logits, lab, weight=w, reduction="none")    # w[y] * -log p_y
            return (nll * m).sum() / (w[lab] * m).sum()
        if op == "focal":
            lsm = torch.log_softmax(logits, 1)
            lpt = lsm.gather(1, lab.unsqueeze(1))[:, 0]
            alpha = torch.where(lab >= 1, torch.tensor(a["alpha"]), torch.tensor(1 - a["alpha"]))
            l = -alpha * (1 - lpt.exp()) ** a["gamma"] * lpt
            return (l * m).sum() / m.sum()
        # dice: nnU-Net v2 SoftDiceLoss, its loss_mask = m
        prob = torch.softmax(logits, 1)
        onehot = F.one_hot(lab, logits.shape[1]).movedim(-1, 1).to(prob.dtype)
        mk = m.unsqueeze(1)
        axes = tuple([0] if a["batch"] else []) + tuple(range(2, 2 + sr))
        tp = (prob * onehot * mk).sum(axes)
        fp = (prob * (1 - onehot) * mk).sum(axes)
        fn = ((1 - prob) * onehot * mk).sum(axes)
        dc = (2 * tp + a["smooth"]) / torch.clip(2 * tp + fp + fn + a["smooth"], 1e-8)
        if not a["background"]:
            dc = dc[1:] if a["batch"] else dc[:, 1:]
        return -dc.mean()
    raise SystemExit("unknown op " + op)


def check(netc, d, tol):
    with open(os.path.join(d, "args.txt")) as f:
        lines = [l.rstrip("\n") for l in f.readlines()]
    path, args, mode = lines[:3]
    optline = lines[3] if len(lines) > 3 else ""
    training = mode == "train"
    out = subprocess.run([netc, "graph", path] + shlex.split(args) + ["--json"],
                         check=True, capture_output=True, text=True).stdout
    g = json.loads(out)
    sr = g["spatial_rank"]
    T = g["tensors"]
    vals = {}

    def val(tid):
        if tid not in vals:
            vals[tid] = load(d, tid, T[tid])
        return vals[tid]

    worst, worst_node = 0.0, None
    for n in g["nodes"]:
        x = [val(t) for t in n["inputs"]]
        p = [val(g["params"][i]["tensor"]) for i in n["params"]]
        want = run_node(n, x, p, sr, training)
        if want is None:
            continue
        got = val(n["output"])
        if tuple(want.shape) != tuple(got.shape):
            print("%s: %s shape %s, torch %s" % (d, n["name"], tuple(got.shape), tuple(want.shape)))
            return False
        err = ((got - want).abs() / (1 + want.abs())).max().item()
        if err > worst:
            worst, worst_node = err, n["name"] + " (" + n["op"] + ")"
    ok = worst <= tol
    print("%-40s %-5s %3d nodes, worst relative error %.2e at %s: %s"
          % (os.path.basename(d), mode, len(g["nodes"]), worst, worst_node, "ok" if ok else "FAIL"))
    if training and g["losses"] and os.path.exists(grad_file(d, g)):
        ok = check_grads(d, g, sr, val) and ok
        if optline:
            ok = check_steps(d, g, sr, val, optline) and ok
    return ok


def grad_file(d, g):
    p = next(p for p in g["params"] if p["trainable"])
    return os.path.join(d, "g%d.bin" % p["tensor"])


GRAD_TOL = 1e-3


def chain(g, sr, inputs, params):
    """The loss of the training graph, computed node after node in PyTorch
    from the given input and parameter tensors (autograd records it)."""
    tv = dict(inputs)
    tv.update(params)
    for n in g["nodes"]:
        x = [tv[t] for t in n["inputs"]]
        p = [tv[g["params"][i]["tensor"]] for i in n["params"]]
        y = run_node(n, x, p, sr, True)
        if y is None:
            raise RuntimeError("cannot chain %s in PyTorch" % n["op"])
        tv[n["output"]] = y
    return tv[g["losses"][0]["tensor"]]


# SGD is linear in the gradient: float32 against float64 agrees to ~1e-6.
# Adam divides by sqrt(v), which magnifies the rounding of tiny gradient
# elements, so it gets 2e-3 (a missing bias correction is a factor ~10, and
# the weight decays in tests/test_ref.c are large enough to show a mix-up of
# coupled and decoupled decay).
STEP_TOL = {"sgd": 1e-4, "adam": 2e-3, "adamw": 2e-3}


def check_steps(d, g, sr, val, optline):
    """Parameters after the same optimizer steps as netc (tests/test_ref.c
    DUMP_STEPS, the optimizer on the args.txt line) taken by torch.optim on
    the chained graph, against netc's p<id>.bin: the largest difference
    relative to the parameter tensor's magnitude (float32 netc, float64 here)."""
    f = optline.split()
    kind, lr, mom, nesterov, wd, b1, b2, eps = f[0], *map(float, f[1:])
    inputs = {i["tensor"]: val(i["tensor"]) for i in g["inputs"]}
    params, leaves = {}, []
    for p in g["params"]:
        t = val(p["tensor"]).clone()
        if p["trainable"]:
            t.requires_grad_(True)
            leaves.append((p["name"], p["tensor"], t))
        params[p["tensor"]] = t
    ts = [t for _, _, t in leaves]
    if kind == "sgd":
        opt = torch.optim.SGD(ts, lr=lr, momentum=mom, nesterov=bool(nesterov), weight_decay=wd)
    elif kind == "adam":
        opt = torch.optim.Adam(ts, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    else:
        opt = torch.optim.AdamW(ts, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    steps = 3
    gmax = {}
    for step in range(steps):
        opt.zero_grad()
        chain(g, sr, inputs, params).backward()
        if step == 0:
            gmax = {tid: t.grad.abs().max().item() for _, tid, t in leaves if t.grad is not None}
        opt.step()
    # A parameter whose gradient is zero in exact arithmetic (a conv bias
    # right before a training-mode batchnorm) only sees rounding noise; Adam
    # normalises that noise to full-size steps in arbitrary directions, in
    # PyTorch as in netc, so such parameters are not comparable and are
    # skipped (their gradients, ~0, were compared above).
    top = max(gmax.values())
    noise = [tid for tid, m in gmax.items() if m < 1e-7 * top]
    worst, where = 0.0, None
    for name, tid, t in leaves:
        if tid in noise:
            continue
        got = torch.from_numpy(np.fromfile(os.path.join(d, "p%d.bin" % tid), dtype=np.float32)
                               .reshape(g["tensors"][tid]["shape"]).astype(np.float64))
        err = (got - t.detach()).abs().max().item() / max(t.detach().abs().max().item(), 1e-12)
        if err > worst:
            worst, where = err, name
    ok = worst <= STEP_TOL[kind]
    print("%-40s %-5s %d steps of %s, worst relative error %.2e at %s%s: %s"
          % (os.path.basename(d), "optim", steps, kind, worst, where,
             " (%d noise-only parameters skipped)" % len(noise) if noise else "", "ok" if ok else "FAIL"))
    return ok


def check_grads(d, g, sr, val):
    """The whole training graph again in PyTorch, chained (not op by op):
    inputs and labels as netc had them, parameters as leaves, the loss
    differentiated by autograd; every trainable parameter's gradient is
    compared with netc's reference backward (g<id>.bin), as the largest
    difference relative to the largest gradient magnitude of that tensor
    (float32 in netc against float64 here; GRAD_TOL = 1e-3 leaves room for
    float32 accumulation over whole nets while catching a wrong term)."""
    T = g["tensors"]
    leaves = {}
    tv = {}
    for inp in g["inputs"]:
        tv[inp["tensor"]] = val(inp["tensor"])
    for p in g["params"]:
        t = val(p["tensor"]).clone()
        if p["trainable"]:
            t.requires_grad_(True)
            leaves[p["tensor"]] = (p["name"], t)
        tv[p["tensor"]] = t
    for n in g["nodes"]:
        x = [tv[t] for t in n["inputs"]]
        p = [tv[g["params"][i]["tensor"]] for i in n["params"]]
        y = run_node(n, x, p, sr, True)
        if y is None:
            print("%s: cannot chain %s in PyTorch; gradients not compared" % (os.path.basename(d), n["op"]))
            return False
        tv[n["output"]] = y
    loss = tv[g["losses"][0]["tensor"]]
    loss.backward()
    pairs = []
    for tid, (name, t) in leaves.items():
        want = t.grad if t.grad is not None else torch.zeros_like(t)
        got = torch.from_numpy(np.fromfile(os.path.join(d, "g%d.bin" % tid), dtype=np.float32)
                               .reshape(T[tid]["shape"]).astype(np.float64))
        pairs.append((name, got, want))
    # Some gradients are zero in exact arithmetic (a conv bias just before a
    # training-mode batchnorm: the normalisation removes it), so a tensor's own
    # scale cannot be the yardstick alone: 1e-3 of the largest gradient in the
    # net is the floor.
    floor = 1e-3 * max(w.abs().max().item() for _, _, w in pairs)
    worst, where = 0.0, None
    for name, got, want in pairs:
        err = (got - want).abs().max().item() / max(want.abs().max().item(), floor, 1e-30)
        if err > worst:
            worst, where = err, name
    ok = worst <= GRAD_TOL
    print("%-40s grads %3d parameters, worst relative error %.2e at %s: %s"
          % (os.path.basename(d), len(leaves), worst, where, "ok" if ok else "FAIL"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--netc", default="build/netc")
    ap.add_argument("--dump", required=True, help="folder written with NETC_REF_DUMP")
    ap.add_argument("--tol", type=float, default=1e-4)
    o = ap.parse_args()
    dirs = sorted(os.path.join(o.dump, e) for e in os.listdir(o.dump)
                  if os.path.exists(os.path.join(o.dump, e, "args.txt")))
    if not dirs:
        raise SystemExit("no dumps in " + o.dump)
    results = [check(o.netc, d, o.tol) for d in dirs]
    print("ref-vs-torch: %d passed, %d failed" % (sum(results), len(results) - sum(results)))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
