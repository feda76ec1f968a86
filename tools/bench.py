#!/usr/bin/python3
"""tools/bench.py — netc's generated code against PyTorch, side by side (`make bench`).

    /usr/bin/python3 tools/bench.py [--netc build/netc] [--bench build/bench]
                                    [--out build/bench.json] [--threads 2] [--only SUBSTR]

For each configuration below, build/bench (tools/bench.c) compiles the net
(inference, or the train block's whole training step: forward, loss,
backward, optimizer update), fuses it, plans one arena, JIT-compiles it with
LLVM and times it.  In the same run, the PyTorch twin of the same graph is
timed: it is built node by node from `netc graph --json` with the same
arguments (so the same ops, shapes and parameters), float32, with netc's own
initial inputs, labels and parameters (build/bench --dump).  Inference runs
under torch.no_grad() with eval-mode batchnorm; a training step is forward +
loss + backward + torch.optim step (the train block's optimizer and
hyperparameters) with train-mode batchnorm.  Both sides run the same warmup
and timed iterations with the same thread count (torch.set_num_threads).

Before anything is timed, the outputs of the first iteration are compared:
inference outputs (max relative error), and for a training step the loss and
every parameter's update (new - old).  A configuration whose results
disagree is reported as FAILED and not timed, so a benchmark of wrong code
is impossible.

Prints a table (ratio = torch ms / netc ms: above 1 netc is faster; with
more than one thread PyTorch is also timed on one thread, the fair
comparison whenever the generated code ran single-threaded, i.e. without
the thread pool of runtime/pool.h) and writes every
measurement to --out as JSON.  Exit status 1 if any configuration failed.
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

# (label, netdef, netc arguments, mode, warmup, iters).  Sizes are chosen so
# that the whole run (compilation included) takes a few minutes on two cores.
CONFIGS = [
    ("unet2d infer 1x1x128x128 b16", "netdefs/unet2d.net",
     ["-D", "base=16", "-D", "protocol.size=128x128"], "infer", 1, 5),
    ("unet2d train 2x1x64x64 b16", "netdefs/unet2d.net",
     ["-D", "base=16", "-D", "train.batch=2", "-D", "train.patch=64x64"], "train", 1, 5),
    ("unet3d infer 1x1x32^3 b8", "netdefs/unet3d.net",
     ["-D", "base=8", "-D", "protocol.size=32x32x32"], "infer", 1, 5),
    ("unet3d train 1x1x32^3 b8", "netdefs/unet3d.net",
     ["-D", "base=8", "-D", "train.batch=1", "-D", "train.patch=32x32x32"], "train", 1, 5),
    ("vnet infer 1x1x32^3 b8", "netdefs/vnet.net",
     ["-D", "base=8", "-D", "protocol.size=32x32x32"], "infer", 1, 5),
    ("voxresnet infer 1x3x32^3 b16", "netdefs/voxresnet.net",
     ["-D", "base=16", "-D", "protocol.size=32x32x32"], "infer", 1, 5),
]

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


def time_torch(step, warmup, iters):
    for _ in range(warmup):
        step()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def run_config(a, cfg, tmp):
    label, netdef, args, mode, warmup, iters = cfg
    training = mode == "train"
    r = {"config": label, "netdef": netdef, "args": args, "mode": mode, "threads": a.threads}
    dump = os.path.join(tmp, "dump")
    shutil.rmtree(dump, ignore_errors=True)
    cmd = [a.bench, netdef] + args + ["--mode", mode, "--backend", a.backend, "--iters", str(iters),
                                      "--warmup", str(max(warmup, 1)), "--threads", str(a.threads), "--dump", dump]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        r["error"] = "build/bench failed (exit %d): %s" % (p.returncode, p.stderr.strip())
        return r
    r["netc"] = json.loads(p.stdout.strip().splitlines()[-1])
    gargs = [a.netc, "graph", netdef] + args + (["--autodiff"] if training else []) + ["--json"]
    g = json.loads(subprocess.run(gargs, check=True, capture_output=True, text=True).stdout)

    twin = Twin(g, dump, training)
    if training:
        opt = twin.optimizer(r["netc"]["optimizer"])
        loss_err, upd_err, where = check_train(twin, dump, opt)
        r["check"] = {"loss_rel_err": loss_err, "update_rel_err": upd_err, "worst_param": where}
        ok = loss_err <= LOSS_TOL and upd_err <= UPDATE_TOL
        r["check_text"] = "loss %.1e, update %.1e" % (loss_err, upd_err)

        def step():
            opt.zero_grad(set_to_none=True)
            twin.forward()[twin.loss].backward()
            opt.step()
        # the checked step was torch's first warmup step, as it was netc's
        warm = max(warmup, 1) - 1
    else:
        err, _ = check_infer(twin, dump)
        r["check"] = {"output_rel_err": err}
        ok = err <= INFER_TOL
        r["check_text"] = "out %.1e" % err

        def step():
            with torch.no_grad():
                twin.forward()
        warm = max(warmup, 1)
    if not ok:
        r["error"] = "netc and PyTorch disagree (%s); not timed" % r["check_text"]
        return r
    med, mn = time_torch(step, warm, iters)
    r["torch"] = {"median_ms": med, "min_ms": mn}
    r["ratio"] = med / r["netc"]["median_ms"]
    if a.threads > 1 and a.torch_1t:
        # PyTorch on one thread too: the fair comparison whenever netc's
        # generated code runs on one thread (no thread pool linked in)
        torch.set_num_threads(1)
        try:
            med1, mn1 = time_torch(step, 1, iters)
        finally:
            torch.set_num_threads(a.threads)
        r["torch_1t"] = {"median_ms": med1, "min_ms": mn1}
        r["ratio_1t"] = med1 / r["netc"]["median_ms"]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--netc", default="build/netc")
    ap.add_argument("--bench", default="build/bench")
    ap.add_argument("--out", default="build/bench.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="llvm", choices=["llvm", "c"])
    ap.add_argument("--only", help="run only the configurations whose label contains this")
    ap.add_argument("--no-torch-1t", dest="torch_1t", action="store_false",
                    help="do not also time PyTorch on one thread")
    a = ap.parse_args()
    if a.threads < 1:
        ap.error("--threads must be at least 1")
    for exe in (a.netc, a.bench):
        if not os.access(exe, os.X_OK):
            ap.error("%s is not an executable (run `make` first)" % exe)
    torch.set_num_threads(a.threads)
    configs = [c for c in CONFIGS if not a.only or a.only in c[0]]
    if not configs:
        ap.error("no configuration matches --only %s" % a.only)
    results = []
    t_start = time.time()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="netc-bench-") as tmp:
        for cfg in configs:
            t0 = time.time()
            r = run_config(a, cfg, tmp)
            r["wall_s"] = round(time.time() - t0, 1)
            results.append(r)
            status = r.get("error") or "%.1f ms vs torch %.1f ms (%s)" % (
                r["netc"]["median_ms"], r["torch"]["median_ms"], r["check_text"])
            print("  %-30s %s  [%.0f s]" % (cfg[0], status, r["wall_s"]), file=sys.stderr, flush=True)

    used = sorted({r["netc"]["threads_used"] for r in results if "netc" in r})
    print()
    print("netc (%s backend, generated code on %s thread%s) vs PyTorch %s (%d thread%s); "
          "median of the timed iterations" % (a.backend, "/".join(map(str, used)) or "?",
                                             "" if used == [1] else "s", torch.__version__, a.threads,
                                             "" if a.threads == 1 else "s"))
    one = any("torch_1t" in r for r in results)
    hdr = "%-30s %9s %9s %7s %8s %8s" % ("config", "netc ms", "torch ms", "ratio", "netc", "torch")
    sub = "%-30s %9s %9s %7s %8s %8s" % ("", "", "(%dT)" % a.threads, "t/n", "GFLOP/s", "GFLOP/s")
    if one:
        hdr += " %9s %7s" % ("torch ms", "ratio")
        sub += " %9s %7s" % ("(1T)", "t1/n")
    hdr += "  check (max rel err)"
    print(hdr)
    print(sub)
    print("-" * len(hdr))
    failed = 0
    for r in results:
        if "error" in r:
            failed += 1
            print("%-30s FAILED: %s" % (r["config"], r["error"]))
            continue
        n, t = r["netc"], r["torch"]
        line = "%-30s %9.1f %9.1f %7.3f %8.2f %8.2f" % (
            r["config"], n["median_ms"], t["median_ms"], r["ratio"], n["gflops"], n["flops"] / (t["median_ms"] * 1e6))
        if one:
            line += " %9.1f %7.3f" % (r["torch_1t"]["median_ms"], r["ratio_1t"]) if "torch_1t" in r else " %17s" % ""
        print(line + "  " + r["check_text"])
    ok = [r for r in results if "ratio" in r]
    if ok:
        gm = float(np.exp(np.mean(np.log([r["ratio"] for r in ok]))))
        print("ratio = torch ms / netc ms (> 1: netc is faster); geometric mean %.3f over %d configs" % (gm, len(ok)))
        if one and all("ratio_1t" in r for r in ok):
            gm1 = float(np.exp(np.mean(np.log([r["ratio_1t"] for r in ok]))))
            print("against PyTorch on one thread: geometric mean %.3f" % gm1)
    load1, ncpu = os.getloadavg()[0], os.cpu_count() or 1
    print("total %.0f s; load average %.2f at the start, %.2f at the end, %d CPUs%s" % (
        time.time() - t_start, load0, load1, ncpu,
        " (other processes were running: multi-threaded timings are disturbed)" if max(load0, load1) > 0.5 else ""))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".tmp", "w") as f:
        json.dump({"torch": torch.__version__, "threads": a.threads, "backend": a.backend,
                   "loadavg_start": load0, "loadavg_end": load1, "cpus": ncpu, "results": results}, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    print("wrote %s" % a.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
