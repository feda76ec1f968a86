#!/usr/bin/python3
"""tools/bench.py — netc's generated code against PyTorch at its best, side by side (`make bench`).

    /usr/bin/python3 tools/bench.py [--netc build/netc] [--bench build/bench]
                                    [--out build/bench.json] [--threads 2] [--only SUBSTR]
                                    [--check-only]

Rows (the issue's): U-Net 2D (widths 32-64-128-256-512) inference 1x1x256x256
and training step batch 4 at 256x256; 3D U-Net (stage outputs 16-32-64-128)
inference 1x1x64x64x64 and training step batch 2 at 64x64x64; then a single
3x3 conv 64->64 on 1x64x128x128 against the machine's measured FMA peak.

netc: build/bench (tools/bench.c) compiles the shipped netdef (fused, one
planned arena, LLVM JIT) and times it on --threads threads; its first call's
inputs, parameters and results are dumped for the check.  PyTorch: the same
graph, built node by node from `netc graph --json` (same ops, shapes,
initial values; float32), on the same number of threads, in its best
configuration: every variant below runs in its own subprocess and the
fastest median wins —
  inference: eager eval + no_grad, eager channels_last, and TorchScript
             (torch.jit.trace + torch.jit.freeze + optimize_for_inference);
  training:  eager, eager channels_last;
each with the default allocator and with tcmalloc preloaded (Debian
libgoogle-perftools4), when installed.

Before anything is timed the results of the first iteration are compared
(inference outputs; for training the loss and every parameter's update); a
row whose results disagree is FAILED and not timed.  Every measurement runs
in its own process, so its peak RSS (VmHWM) is that configuration's alone.
Times are medians of the timed iterations after warm-up (the dumped first
call is netc's first warm-up).  Ends with one line per row:
  bench: NAME netc_ms=X torch_ms=Y speedup=Y/X netc_rss_mb=A torch_rss_mb=B
(speedup > 1: netc is faster).  Exit status 1 if any row failed.

--check-only runs only the accuracy checks: one netc step per row (no
warm-up, nothing timed, no PyTorch timing, no single-conv row); training rows
are also compared with the same step in float64 (netc's and PyTorch
float32's update error against it, PyTorch in both layouts, printed side by
side; see check_train_f64).  Results go to build/bench_check.json unless
--out is given; one line per row:
  bench-check: NAME ok|FAILED loss=E update=E [f64: netc=E torch_f32=E torch_f32_cl=E]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

# (name, label, netdef, netc arguments, mode, warmup, iters).  The shipped
# netdefs' double_conv keeps the conv bias (common.net has no parameter to
# drop it); both sides run that same graph.  unet3d's stages double the
# channels in their second conv (3D U-Net, Cicek et al.): base 8 gives stage
# outputs 16-32-64-128 (first convs 8-16-32-64).  The training rows take
# minutes per configuration on two cores: 3 timed steps after 1 warm-up.
CONFIGS = [
    ("unet2d_infer_1x1x256x256", "unet2d infer 1x1x256x256", "netdefs/unet2d.net",
     ["-D", "base=32"], "infer", 1, 5),
    ("unet2d_train_4x1x256x256", "unet2d train step 4x1x256x256", "netdefs/unet2d.net",
     ["-D", "base=32", "-D", "train.batch=4", "-D", "train.patch=256x256"], "train", 1, 3),
    ("unet3d_infer_1x1x64x64x64", "unet3d infer 1x1x64^3", "netdefs/unet3d.net",
     ["-D", "base=8", "-D", "protocol.size=64x64x64"], "infer", 1, 5),
    ("unet3d_train_2x1x64x64x64", "unet3d train step 2x1x64^3", "netdefs/unet3d.net",
     ["-D", "base=8", "-D", "train.batch=2", "-D", "train.patch=64x64x64"], "train", 1, 3),
]

CONV_NET = """
net conv64(c = 64) {
    input image
    x = conv(c, 3, bias = false)(image)
    output y = conv(c, 3, bias = false)(x)
}
protocol conv128 {
    modality mri
    channels t1
    size 128 x 128
    spacing 1.0 x 1.0 mm
    classes 64
}
"""

TCMALLOC = [p for p in ("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
                        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4") if os.path.exists(p)]

INFER_TOL = 1e-3     # max |netc - torch| / max |torch| of an output
LOSS_TOL = 1e-4      # relative error of the first step's loss
UPDATE_TOL = 2e-2    # per parameter: max |d_netc - d_torch| / max |d_torch| (see check_train)


# ---- the PyTorch twin of a netc graph -------------------------------------

def pad_list(padding):
    """[[lo, hi] per axis D,H,W] -> F.pad order (last axis first)."""
    out = []
    for lo, hi in reversed(padding):
        out += [lo, hi]
    return out


def symmetric(padding):
    return all(lo == hi for lo, hi in padding)


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
    """One netc node in PyTorch (float32), as an idiomatic model would do it."""
    a = n["attrs"]
    op = n["op"]
    if op == "conv":
        conv = [F.conv1d, F.conv2d, F.conv3d][sr - 1]
        b = p[1] if a["bias"] else None
        if symmetric(a["padding"]):
            return conv(x[0], p[0], b, a["stride"], [lo for lo, _ in a["padding"]], a["dilation"], a["groups"])
        return conv(F.pad(x[0], pad_list(a["padding"])), p[0], b, a["stride"], 0, a["dilation"], a["groups"])
    if op == "upconv":
        tconv = [F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d][sr - 1]
        y = tconv(x[0], p[0], p[1] if a["bias"] else None, a["stride"], 0, a["out_pad"], a["groups"], a["dilation"])
        if any(lo or hi for lo, hi in a["padding"]):
            sl = [slice(None), slice(None)]
            for i, (lo, hi) in enumerate(a["padding"]):
                full = y.shape[2 + i] - a["out_pad"][i]
                sl.append(slice(lo, full - hi + a["out_pad"][i]))
            y = y[tuple(sl)]
        return y
    if op in ("maxpool", "avgpool"):
        assert symmetric(a["padding"]), "asymmetric pool padding"
        pads = [lo for lo, _ in a["padding"]]
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
        return F.batch_norm(x[0], p[-2], p[-1], w, b, training, a["momentum"], a["eps"])
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
        return F.dropout(x[0], a["p"], training) if "p" in a else x[0]
    if op in ("ce", "dice", "focal"):
        logits, lab = x[0], labels_to(x[1], x[0].shape)
        m = labels_to(x[2], x[0].shape) if len(x) > 2 else torch.ones(lab.shape, dtype=logits.dtype)
        keep = (lab != a["ignore"]) if a["ignore"] >= 0 else torch.ones_like(lab, dtype=torch.bool)
        m = m * keep
        lab = torch.where(keep, lab, torch.zeros_like(lab))
        if op == "ce":
            w = torch.tensor(a["weight"], dtype=logits.dtype) if a["weight"] else torch.ones(logits.shape[1], dtype=logits.dtype)
            nll = F.cross_entropy(logits, lab, weight=w, reduction="none")
            return (nll * m).sum() / (w[lab] * m).sum()
        if op == "focal":
            lsm = torch.log_softmax(logits, 1)
            lpt = lsm.gather(1, lab.unsqueeze(1))[:, 0]
            alpha = torch.where(lab >= 1, torch.tensor(a["alpha"]), torch.tensor(1 - a["alpha"]))
            l = -alpha * (1 - lpt.exp()) ** a["gamma"] * lpt
            return (l * m).sum() / m.sum()
        prob = torch.softmax(logits, 1)   # dice: nnU-Net v2 SoftDiceLoss
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
    raise SystemExit("bench.py: no PyTorch twin for op " + op)


class Twin:
    """The graph of `netc graph --json`, runnable in PyTorch, with netc's
    initial values (DIR/in<id>.bin from build/bench --dump)."""

    def __init__(self, g, dump, training):
        self.g, self.training, self.sr = g, training, g["spatial_rank"]
        T = g["tensors"]
        self.vals = {}
        for t in T:
            path = os.path.join(dump, "in%d.bin" % t["id"])
            if t["kind"] == "activation" or not os.path.exists(path):
                continue
            a = np.fromfile(path, dtype=np.int32 if t["dtype"] == "i32" else np.float32).reshape(t["shape"])
            v = torch.from_numpy(a.astype(np.int64) if t["dtype"] == "i32" else a.copy())
            self.vals[t["id"]] = v
        if training:
            # the forward + loss part of the whole step (autodiff appends after it)
            self.loss = g["losses"][0]["tensor"]
            last = max(i for i, n in enumerate(g["nodes"]) if n["output"] == self.loss)
            self.nodes = g["nodes"][:last + 1]
            self.updated = [n["inputs"][0] for n in g["nodes"] if n["op"] in ("sgd_update", "adam_update")]
            for tid in self.updated:
                self.vals[tid].requires_grad_(True)
        else:
            self.nodes = g["nodes"]
            self.updated = []
        self.outputs = [o["tensor"] for o in g["outputs"]]

    def forward(self):
        env = dict(self.vals)
        P = self.g["params"]
        for n in self.nodes:
            x = [env[i] for i in n["inputs"]]
            p = [env[P[i]["tensor"]] for i in n["params"]]
            env[n["output"]] = run_node(n, x, p, self.sr, self.training)
        return env

    def optimizer(self, o):
        ps = [self.vals[t] for t in self.updated]
        if o["name"] == "sgd":
            return torch.optim.SGD(ps, lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"],
                                   weight_decay=o["weight_decay"])
        cls = torch.optim.Adam if o["name"] == "adam" else torch.optim.AdamW
        return cls(ps, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], weight_decay=o["weight_decay"])


def load_out(dump, t):
    return np.fromfile(os.path.join(dump, "out%d.bin" % t["id"]), dtype=np.float32).reshape(t["shape"])


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def check_infer(twin, dump):
    with torch.no_grad():
        env = twin.forward()
    T = twin.g["tensors"]
    return max(rel_err(load_out(dump, T[t]), env[t].numpy()) for t in twin.outputs), env


def check_train(twin, dump, opt):
    """One step from the same state.  The loss, and each parameter's update
    (new - old, which is the gradient through the optimizer): the update of
    a parameter whose gradient is 0 in exact arithmetic (a conv bias right
    before batchnorm) is rounding noise on both sides, so each parameter's
    error is judged against max(its largest update, 1e-3 x the largest update
    of any parameter); with Adam such parameters are skipped."""
    T = twin.g["tensors"]
    before = {t: twin.vals[t].detach().clone() for t in twin.updated}
    opt.zero_grad(set_to_none=True)
    env = twin.forward()
    loss = env[twin.loss]
    loss.backward()
    gmax = {t: float(twin.vals[t].grad.abs().max()) if twin.vals[t].grad is not None else 0.0 for t in twin.updated}
    opt.step()
    loss_err = abs(float(load_out(dump, T[twin.loss])) - loss.item()) / max(abs(loss.item()), 1e-30)
    d_torch = {t: (twin.vals[t].detach() - before[t]).numpy().astype(np.float64) for t in twin.updated}
    d_netc = {t: load_out(dump, T[t]).astype(np.float64) - before[t].numpy() for t in twin.updated}
    top = max(float(np.max(np.abs(d))) for d in d_torch.values())
    # Adam normalises a noise-only gradient to a full-size step in an
    # arbitrary direction (in PyTorch as in netc): such parameters are not
    # comparable and are skipped (tools/ref_vs_torch.py does the same).
    adam = isinstance(opt, (torch.optim.Adam, torch.optim.AdamW))
    gtop = max(gmax.values())
    twin.last_check = (d_torch, d_netc, adam, gmax, gtop)
    worst, where = 0.0, None
    for t in twin.updated:
        if adam and gmax[t] < 1e-4 * gtop:
            continue
        if not np.all(np.isfinite(d_netc[t])):
            return loss_err, float("inf"), T[t]["name"]
        e = float(np.max(np.abs(d_netc[t] - d_torch[t]))) / max(float(np.max(np.abs(d_torch[t]))), 1e-3 * top, 1e-30)
        if e > worst:
            worst, where = e, T[t]["name"]
    return loss_err, worst, where



def twin_step(g, dump, ocfg, dtype, channels_last=False):
    """One training step of the twin from the dumped state, in dtype (and
    channels_last layout): each updated parameter's update (new - old) as
    float64 numpy."""
    tw = Twin(g, dump, True)
    if dtype != torch.float32:
        for t, v in list(tw.vals.items()):
            if v.is_floating_point():
                tw.vals[t] = v.detach().to(dtype).requires_grad_(v.requires_grad)
    if channels_last:
        to_channels_last(tw)
    opt = tw.optimizer(ocfg)
    before = {t: tw.vals[t].detach().clone() for t in tw.updated}
    opt.zero_grad(set_to_none=True)
    tw.forward()[tw.loss].backward()
    opt.step()
    return {t: (tw.vals[t].detach() - before[t]).double().contiguous().numpy() for t in tw.updated}


def check_train_f64(g, dump, ocfg, d_torch, d_netc, adam, gmax, gtop):
    """Arbiter when the float32 comparison of the updates fails: the same
    step in float64 (PyTorch), and netc's update error against it compared
    with PyTorch float32's own, in both layouts the timing runs (contiguous,
    d_torch, and channels_last, run here).  Two correct float32
    implementations can differ by more than UPDATE_TOL: large steps sum
    millions of products (weight gradients behind batchnorm cancel heavily),
    and a ReLU whose input lies within rounding of 0 goes either way.  One
    such flip at the 16x16 bottleneck of unet2d (an input of 1.8e-6 where
    the layer's largest is 4.8, float32 forward errors there being ~4e-6 of
    it) moves a whole output channel of the next weight gradient by 5% of
    the parameter's largest update; which elements flip depends on the
    summation order alone (PyTorch float32 contiguous: 34 flips against
    float64 in unet2d's step, channels_last: 242, and it fails the
    contiguous-only test this replaced with 4.8e-2 on the same parameter
    netc did).  So a parameter passes if netc's error against float64 is
    within UPDATE_TOL or within 4x the larger of the two PyTorch float32
    errors.  Returns (worst netc error, PyTorch float32 contiguous and
    channels_last errors of that parameter, its name, ok)."""
    d_cl = twin_step(g, dump, ocfg, torch.float32, channels_last=True)
    d64 = twin_step(g, dump, ocfg, torch.float64)
    top = max(float(np.max(np.abs(d))) for d in d64.values())
    T = g["tensors"]
    worst, worst_t, worst_c, where, ok = 0.0, 0.0, 0.0, None, True
    per = []
    for t in d64:
        if adam and gmax[t] < 1e-4 * gtop:
            continue
        scale = max(float(np.max(np.abs(d64[t]))), 1e-3 * top, 1e-30)
        en = float(np.max(np.abs(d_netc[t] - d64[t]))) / scale
        et = float(np.max(np.abs(d_torch[t] - d64[t]))) / scale
        ec = float(np.max(np.abs(d_cl[t] - d64[t]))) / scale
        per.append((en, et, ec, T[t]["name"]))
        if not np.isfinite(en) or en > max(UPDATE_TOL, 4 * max(et, ec)):
            ok = False
        if en > worst or not np.isfinite(en):
            worst, worst_t, worst_c, where = en, et, ec, T[t]["name"]
    check_train_f64.per_param = sorted(per, reverse=True)
    return worst, worst_t, worst_c, where, ok


def time_torch(step, warmup, iters):
    for _ in range(warmup):
        step()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def to_channels_last(twin):
    """Every rank-4/5 value (input, conv weights) in channels_last layout."""
    for t, v in list(twin.vals.items()):
        if v.dim() in (4, 5) and v.is_floating_point():
            fmt = torch.channels_last if v.dim() == 4 else torch.channels_last_3d
            rg = v.requires_grad
            twin.vals[t] = v.detach().contiguous(memory_format=fmt).requires_grad_(rg)


class TwinModule(torch.nn.Module):
    """The twin's inference as an nn.Module (values as buffers) for
    torch.jit.trace / freeze / optimize_for_inference."""

    def __init__(self, twin):
        super().__init__()
        self.twin = twin
        self.inputs = [i["tensor"] for i in twin.g["inputs"]]
        self.ids = [t for t in twin.vals if t not in self.inputs]
        for t in self.ids:
            self.register_buffer("v%d" % t, twin.vals[t])

    def forward(self, *xs):
        env = {t: getattr(self, "v%d" % t) for t in self.ids}
        env.update(zip(self.inputs, xs))
        P = self.twin.g["params"]
        for n in self.twin.nodes:
            x = [env[i] for i in n["inputs"]]
            p = [env[P[i]["tensor"]] for i in n["params"]]
            env[n["output"]] = run_node(n, x, p, self.twin.sr, False)
        return tuple(env[o] for o in self.twin.outputs)


def worker(spec):
    """One PyTorch configuration in this process: prints one JSON line."""
    torch.set_num_threads(spec["threads"])
    res = {}
    if spec["mode"] == "conv":
        x = torch.randn(1, 64, 128, 128)
        w = torch.randn(64, 64, 3, 3) * 0.05
        if spec["layout"] == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
            w = w.contiguous(memory_format=torch.channels_last)

        def step():
            with torch.no_grad():
                F.conv2d(x, w, None, 1, 1)
        med, mn = time_torch(step, spec["warmup"], spec["iters"])
        print(json.dumps({"median_ms": med, "min_ms": mn, "rss_mb": peak_rss_mb()}))
        return
    with open(spec["graph"]) as f:
        g = json.load(f)
    training = spec["mode"] == "train"
    twin = Twin(g, spec["dump"], training)
    if spec["layout"] == "channels_last":
        to_channels_last(twin)
    T = g["tensors"]
    if training:
        opt = twin.optimizer(spec["optimizer"])

        def step():
            opt.zero_grad(set_to_none=True)
            twin.forward()[twin.loss].backward()
            opt.step()
    elif spec["jit"]:
        mod = TwinModule(twin).eval()
        xs = tuple(twin.vals[i] for i in mod.inputs)
        with torch.no_grad():
            fn = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(mod, xs)))
            out = fn(*xs)
        res["check_rel_err"] = max(rel_err(load_out(spec["dump"], T[t]), o.contiguous().numpy())
                                   for t, o in zip(twin.outputs, out))

        def step():
            with torch.no_grad():
                fn(*xs)
    else:
        with torch.no_grad():
            env = twin.forward()
        res["check_rel_err"] = max(rel_err(load_out(spec["dump"], T[t]), env[t].contiguous().numpy())
                                   for t in twin.outputs)

        def step():
            with torch.no_grad():
                twin.forward()
    med, mn = time_torch(step, spec["warmup"], spec["iters"])
    res.update({"median_ms": med, "min_ms": mn, "rss_mb": peak_rss_mb()})
    print(json.dumps(res))


def variants(mode):
    """(name, spec fields, LD_PRELOAD or None) of every PyTorch configuration tried."""
    base = [("eager", {"layout": "contiguous", "jit": False}),
            ("eager+channels_last", {"layout": "channels_last", "jit": False})]
    if mode == "infer":
        base.append(("jit.freeze+optimize_for_inference", {"layout": "contiguous", "jit": True}))
    if not TCMALLOC:
        return [(name, fields, None) for name, fields in base]
    # with tcmalloc: the default allocator once (plain eager), then every
    # configuration with tcmalloc, which was never slower on this machine
    # (a training step takes a minute: the budget does not allow both)
    out = [("eager", base[0][1], None)] if mode != "train" else []
    return out + [(name + "+tcmalloc", fields, TCMALLOC[0]) for name, fields in base]


def run_worker(spec, preload, tmp):
    path = os.path.join(tmp, "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ)
    if preload:
        env["LD_PRELOAD"] = preload
    else:
        env.pop("LD_PRELOAD", None)
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", path], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        return {"error": "exit %d: %s" % (p.returncode, p.stderr.strip()[-400:])}
    return json.loads(p.stdout.strip().splitlines()[-1])


def torch_best(a, spec, mode, tmp, log):
    """Every configuration in its own process; the fastest median that agrees wins."""
    tried = {}
    best = None
    for name, fields, preload in variants(mode):
        s = dict(spec, **fields)
        r = run_worker(s, preload, tmp)
        tried[name] = r
        if "error" in r:
            log("    torch %-45s failed: %s" % (name, r["error"]))
            continue
        if r.get("check_rel_err", 0) > INFER_TOL:
            log("    torch %-45s disagrees (out %.1e): not counted" % (name, r["check_rel_err"]))
            continue
        log("    torch %-45s %9.1f ms  rss %6.0f MB" % (name, r["median_ms"], r["rss_mb"]))
        if best is None or r["median_ms"] < best[1]["median_ms"]:
            best = (name, r)
    return best, tried


def run_config(a, cfg, tmp, log):
    name, label, netdef, args, mode, warmup, iters = cfg
    training = mode == "train"
    r = {"name": name, "config": label, "netdef": netdef, "args": args, "mode": mode, "threads": a.threads,
         "warmup": warmup, "iters": iters}
    dump = os.path.join(tmp, "dump")
    shutil.rmtree(dump, ignore_errors=True)
    # --check-only: one step, the dumped one (bench.c dumps its first call)
    run_iters, run_warmup = (1, 0) if a.check_only else (iters, max(warmup, 1))
    cmd = [a.bench, netdef] + args + ["--mode", mode, "--backend", a.backend, "--iters", str(run_iters),
                                      "--warmup", str(run_warmup), "--threads", str(a.threads), "--dump", dump]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        r["error"] = "build/bench failed (exit %d): %s" % (p.returncode, p.stderr.strip())
        return r
    r["netc"] = json.loads(p.stdout.strip().splitlines()[-1])
    if not a.check_only:
        log("    netc  %-45s %9.1f ms  rss %6.0f MB  (compile %.0f ms)" % (
            a.backend, r["netc"]["median_ms"], r["netc"]["peak_rss_mb"], r["netc"]["compile_ms"]))
    gargs = [a.netc, "graph", netdef] + args + (["--autodiff"] if training else []) + ["--json"]
    gtext = subprocess.run(gargs, check=True, capture_output=True, text=True).stdout
    gpath = os.path.join(tmp, "graph.json")
    with open(gpath, "w") as f:
        f.write(gtext)
    g = json.loads(gtext)

    # the check, in this process (not timed)
    twin = Twin(g, dump, training)
    if training:
        opt = twin.optimizer(r["netc"]["optimizer"])
        loss_err, upd_err, where = check_train(twin, dump, opt)
        r["check"] = {"loss_rel_err": loss_err, "update_rel_err": upd_err, "worst_param": where}
        ok = loss_err <= LOSS_TOL and upd_err <= UPDATE_TOL
        r["check_text"] = "loss %.1e, update %.1e" % (loss_err, upd_err)
        if loss_err <= LOSS_TOL and (not ok or a.check_only) and np.isfinite(upd_err):
            f32_ok = ok
            log("    check: update %.1e vs PyTorch float32 (%s); %s in float64" % (
                upd_err, where, "comparing" if ok else "arbitrating"))
            d_torch, d_netc, adam, gmax, gtop = twin.last_check
            del twin
            e64, t64, c64, w64, ok = check_train_f64(g, dump, r["netc"]["optimizer"], d_torch, d_netc, adam, gmax,
                                                     gtop)
            r["check"]["f64"] = {"netc_update_err": e64, "torch_f32_update_err": t64, "torch_f32_cl_update_err": c64,
                                 "worst_param": w64, "ok": ok,
                                 "per_param": [{"name": n, "netc": en, "torch_f32": et, "torch_f32_cl": ec}
                                               for en, et, ec, n in check_train_f64.per_param]}
            if a.check_only:
                for en, et, ec, n in check_train_f64.per_param[:8]:
                    log("    f64: %-50s netc %.1e  torch-f32 %.1e  channels_last %.1e" % (n, en, et, ec))
            r["check_text"] = "loss %.1e, update vs f64: netc %.1e, torch-f32 %.1e / channels_last %.1e (%s)" % (
                loss_err, e64, t64, c64, w64)
            if f32_ok:   # --check-only on a row that already agreed: float64 is for the record
                ok = True
                r["check_text"] = "loss %.1e, update %.1e; vs f64: netc %.1e, torch-f32 %.1e / channels_last %.1e (%s)" % (
                    loss_err, upd_err, e64, t64, c64, w64)
            twin = None
    else:
        err, _ = check_infer(twin, dump)
        r["check"] = {"output_rel_err": err}
        ok = err <= INFER_TOL
        r["check_text"] = "out %.1e" % err
    del twin
    if not ok:
        r["error"] = "netc and PyTorch disagree (%s); not timed" % r["check_text"]
        return r
    if a.check_only:
        return r
    spec = {"graph": gpath, "dump": dump, "mode": mode, "threads": a.threads, "warmup": max(warmup, 1),
            "iters": iters, "optimizer": r["netc"].get("optimizer")}
    best, tried = torch_best(a, spec, mode, tmp, log)
    r["torch_variants"] = tried
    if best is None:
        r["error"] = "no PyTorch configuration ran"
        return r
    r["torch"] = dict(best[1], variant=best[0])
    r["speedup"] = r["torch"]["median_ms"] / r["netc"]["median_ms"]
    return r


def conv_row(a, tmp, log):
    """One 3x3 conv 64->64 on 1x64x128x128 (no bias): netc's kernel timed on its
    own (netc bench --kernels; the second conv of a two-conv net, whose input
    is 64 channels), against the FMA peak measured in that same run."""
    path = os.path.join(tmp, "conv64.net")
    with open(path, "w") as f:
        f.write(CONV_NET)
    p = subprocess.run([a.netc, "bench", path, "--kernels", "--json", "--backend", a.backend, "--threads",
                        str(a.threads), "--iters", "10", "--warmup", "2"], capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": "netc bench failed (exit %d): %s" % (p.returncode, p.stderr.strip())}
    j = json.loads(p.stdout.strip().splitlines()[-1])
    k = max(j["kernel_rows"], key=lambda r: (r["ops"].startswith("conv"), r["flops"]))
    flops = 2.0 * 64 * 64 * 9 * 128 * 128
    r = {"netc_bench": j, "kernel": k, "flops": flops, "netc_ms": k["median_ms"],
         "netc_gflops": flops / (k["median_ms"] * 1e6), "peak_fma_gflops": j["peak_fma_gflops"],
         "netc_rss_mb": j["peak_rss_mb"]}
    r["pct_peak"] = 100 * r["netc_gflops"] / j["peak_fma_gflops"]
    log("    netc  %-45s %9.3f ms  %.1f GFLOP/s (%.1f%% of the %.1f GFLOP/s FMA peak)" % (
        k["name"], r["netc_ms"], r["netc_gflops"], r["pct_peak"], j["peak_fma_gflops"]))
    best, tried = torch_best(a, {"mode": "conv", "threads": a.threads, "warmup": 3, "iters": 10}, "train", tmp, log)
    if best:
        r["torch"] = dict(best[1], variant=best[0])
        r["torch_gflops"] = flops / (best[1]["median_ms"] * 1e6)
        r["speedup"] = best[1]["median_ms"] / r["netc_ms"]
    return r


def check_only(a, configs, log):
    """--check-only: every row's accuracy check, nothing timed."""
    out = a.out or "build/bench_check.json"
    t_start = time.time()
    results = []
    with tempfile.TemporaryDirectory(prefix="netc-check-") as tmp:
        for cfg in configs:
            t0 = time.time()
            log("  %s" % cfg[1])
            r = run_config(a, cfg, tmp, log)
            r["wall_s"] = round(time.time() - t0, 1)
            results.append(r)
            log("  %s: %s  [%.0f s]" % (cfg[1], r.get("error") or "ok (%s)" % r["check_text"], r["wall_s"]))
    print()
    print("netc (%s backend, %d thread%s) against PyTorch %s float32 (and, for training, float64): accuracy only" % (
        "LLVM JIT" if a.backend == "llvm" else "C backend", a.threads, "" if a.threads == 1 else "s", torch.__version__))
    print("tolerances: inference output %.0e, loss %.0e, update %.0e (or within 4x PyTorch float32's own error "
          "against float64, the larger of contiguous and channels_last)" % (INFER_TOL, LOSS_TOL, UPDATE_TOL))
    failed = 0
    for r in results:
        status = "FAILED" if "error" in r else "ok"
        failed += "error" in r
        print("%-30s %-6s %s" % (r["config"], status, r.get("check_text") or r.get("error")))
    print("total %.0f s" % (time.time() - t_start))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump({"torch": torch.__version__, "threads": a.threads, "backend": a.backend, "check_only": True,
                   "results": results}, f, indent=1)
    os.replace(out + ".tmp", out)
    print("wrote %s" % out)
    for r in results:
        c = r.get("check", {})
        line = "bench-check: %s %s" % (r["name"], "FAILED" if "error" in r else "ok")
        if "loss_rel_err" in c:
            line += " loss=%.2e update=%.2e" % (c["loss_rel_err"], c["update_rel_err"])
        if "output_rel_err" in c:
            line += " out=%.2e" % c["output_rel_err"]
        if "f64" in c:
            line += " f64: netc=%.2e torch_f32=%.2e torch_f32_cl=%.2e (%s)" % (
                c["f64"]["netc_update_err"], c["f64"]["torch_f32_update_err"], c["f64"]["torch_f32_cl_update_err"],
                c["f64"]["worst_param"])
        print(line)
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--netc", default="build/netc")
    ap.add_argument("--bench", default="build/bench")
    ap.add_argument("--out", help="the JSON results (default build/bench.json; build/bench_check.json with --check-only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="llvm", choices=["llvm", "c"])
    ap.add_argument("--only", help="run only the rows whose name contains this (conv: the single-conv row)")
    ap.add_argument("--check-only", action="store_true",
                    help="run only the accuracy checks (one step per row, nothing timed)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        with open(a.worker) as f:
            worker(json.load(f))
        return 0
    if a.threads < 1:
        ap.error("--threads must be at least 1")
    for exe in (a.netc, a.bench):
        if not os.access(exe, os.X_OK):
            ap.error("%s is not an executable (run `make` first)" % exe)
    torch.set_num_threads(a.threads)
    configs = [c for c in CONFIGS if not a.only or a.only in c[0]]
    do_conv = not a.only or a.only in "conv3x3_64"

    def log(s):
        print(s, file=sys.stderr, flush=True)

    if a.check_only:
        return check_only(a, configs, log)

    t_start = time.time()
    load0 = os.getloadavg()[0]
    peak = json.loads(subprocess.run([a.bench, "--peak", "--threads", str(a.threads)], check=True,
                                     capture_output=True, text=True).stdout)
    log("machine: FMA peak %.1f GFLOP/s on 1 thread, %.1f on %d (%s); memcpy %.1f GB/s on 1 thread, %.1f on %d" % (
        peak["fma_gflops_1t"], peak["fma_gflops"], a.threads, peak["isa"], peak["mem_gbs_1t"], peak["mem_gbs"],
        a.threads))
    results, conv = [], None
    with tempfile.TemporaryDirectory(prefix="netc-bench-") as tmp:
        for cfg in configs:
            t0 = time.time()
            log("  %s" % cfg[1])
            r = run_config(a, cfg, tmp, log)
            r["wall_s"] = round(time.time() - t0, 1)
            results.append(r)
            log("  %s: %s  [%.0f s]" % (cfg[1], r.get("error") or "speedup %.3f (%s)" % (r["speedup"], r["check_text"]),
                                        r["wall_s"]))
        if do_conv:
            log("  conv3x3 64->64 1x64x128x128")
            conv = conv_row(a, tmp, log)

    used = sorted({r["netc"]["threads_used"] for r in results if "netc" in r})
    print()
    print("netc (%s backend, %s thread%s) vs PyTorch %s (%d thread%s), each row against PyTorch's fastest of:" % (
        "LLVM JIT" if a.backend == "llvm" else "C backend", "/".join(map(str, used)) or str(a.threads),
        "" if used == [1] else "s", torch.__version__, a.threads, "" if a.threads == 1 else "s"))
    print("  inference: %s" % ", ".join(v[0] for v in variants("infer")))
    print("  training:  %s" % ", ".join(v[0] for v in variants("train")))
    print("machine (measured in this run): FMA peak %.1f GFLOP/s on 1 thread, %.1f GFLOP/s on %d (%s); "
          "memory %.1f GB/s on 1 thread, %.1f GB/s on %d (memcpy, read + write)" % (
              peak["fma_gflops_1t"], peak["fma_gflops"], a.threads, peak["isa"], peak["mem_gbs_1t"], peak["mem_gbs"],
              a.threads))
    print("models: the shipped netdefs; every conv has a bias (common.net's double_conv cannot drop it), BN, ReLU;"
          " unet2d base 32 (32-64-128-256-512),")
    print("        unet3d base 8 (stage outputs 16-32-64-128, first convs 8-16-32-64, as netdefs/unet3d.net doubles"
          " in the second conv); SGD step of the train block")
    print("times: median of the timed runs after warm-up (iterations: %s)" % ", ".join(
        "%s %d" % (c[0].split("_")[0] + " " + c[4], c[6]) for c in configs))
    hdr = "%-30s %9s %9s %8s %8s %8s %8s %8s  %-42s %s" % (
        "row", "netc ms", "torch ms", "speedup", "netc", "torch", "netc", "torch", "PyTorch best configuration",
        "check (max rel err)")
    sub = "%-30s %9s %9s %8s %8s %8s %8s %8s" % ("", "", "", "t/n", "GFLOP/s", "GFLOP/s", "RSS MB", "RSS MB")
    print(hdr)
    print(sub)
    print("-" * len(hdr))
    failed = 0
    for r in results:
        if "error" in r:
            failed += 1
            if "netc" in r:   # netc ran (and was timed) before the check failed: say what it measured
                print("%-30s %9.1f %9s %8s %8.2f %8s %8.0f %8s  FAILED: %s" % (
                    r["config"], r["netc"]["median_ms"], "-", "-", r["netc"]["gflops"], "-",
                    r["netc"]["peak_rss_mb"], "-", r["error"]))
            else:
                print("%-30s FAILED: %s" % (r["config"], r["error"]))
            continue
        n, t = r["netc"], r["torch"]
        print("%-30s %9.1f %9.1f %8.3f %8.2f %8.2f %8.0f %8.0f  %-42s %s" % (
            r["config"], n["median_ms"], t["median_ms"], r["speedup"], n["gflops"], n["flops"] / (t["median_ms"] * 1e6),
            n["peak_rss_mb"], t["rss_mb"], t["variant"], r["check_text"]))
    if conv is not None:
        if "error" in conv:
            failed += 1
            print("%-30s FAILED: %s" % ("conv3x3 64->64 1x64x128x128", conv["error"]))
        else:
            t = conv.get("torch")
            print("%-30s %9.3f %9s %8s %8.2f %8s %8.0f %8s  %-42s" % (
                "conv3x3 64->64 1x64x128x128", conv["netc_ms"], "%.3f" % t["median_ms"] if t else "-",
                "%.3f" % conv["speedup"] if t else "-", conv["netc_gflops"],
                "%.2f" % conv["torch_gflops"] if t else "-", conv["netc_rss_mb"], "%.0f" % t["rss_mb"] if t else "-",
                t["variant"] if t else ""))
            print("single conv: netc kernel %s: %.1f GFLOP/s = %.1f%% of the FMA peak measured in the same run "
                  "(%.1f GFLOP/s, %d threads)%s" % (
                      conv["kernel"]["name"], conv["netc_gflops"], conv["pct_peak"], conv["peak_fma_gflops"],
                      a.threads, "; PyTorch %.1f GFLOP/s = %.1f%%" % (
                          conv["torch_gflops"], 100 * conv["torch_gflops"] / conv["peak_fma_gflops"]) if t else ""))
    print("speedup = torch ms / netc ms (> 1: netc is faster); RSS = peak resident set (VmHWM) of each side's own process")
    load1, ncpu = os.getloadavg()[0], os.cpu_count() or 1
    print("total %.0f s; load average %.2f at the start, %.2f at the end, %d CPUs%s" % (
        time.time() - t_start, load0, load1, ncpu,
        " (other processes were running: timings are disturbed)" if max(load0, load1) > 0.5 else ""))
    a.out = a.out or "build/bench.json"
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".tmp", "w") as f:
        json.dump({"torch": torch.__version__, "threads": a.threads, "backend": a.backend, "machine": peak,
                   "loadavg_start": load0, "loadavg_end": load1, "cpus": ncpu, "results": results, "conv": conv},
                  f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    print("wrote %s" % a.out)
    for r in results:
        if "error" in r:
            print("bench: %s FAILED%s" % (r["name"], " netc_ms=%.3f netc_rss_mb=%.0f (not compared: results disagree)" % (
                r["netc"]["median_ms"], r["netc"]["peak_rss_mb"]) if "netc" in r and "check" in r else ""))
            continue
        print("bench: %s netc_ms=%.3f torch_ms=%.3f speedup=%.3f netc_rss_mb=%.0f torch_rss_mb=%.0f" % (
            r["name"], r["netc"]["median_ms"], r["torch"]["median_ms"], r["speedup"], r["netc"]["peak_rss_mb"],
            r["torch"]["rss_mb"]))
    if conv is not None and "error" not in conv and "torch" in conv:
        print("bench: conv3x3_64_1x64x128x128 netc_ms=%.3f torch_ms=%.3f speedup=%.3f netc_rss_mb=%.0f "
              "torch_rss_mb=%.0f netc_gflops=%.2f pct_fma_peak=%.1f" % (
                  conv["netc_ms"], conv["torch"]["median_ms"], conv["speedup"], conv["netc_rss_mb"],
                  conv["torch"]["rss_mb"], conv["netc_gflops"], conv["pct_peak"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
