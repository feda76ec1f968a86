#!/usr/bin/python3
"""tools/compare_with_torch.py — netc's parameters against the PyTorch twins.

For every shipped netdef, compares what `netc graph --json` says (parameter
names, shapes, trainable or buffer) with the state_dict of the equivalent
torch.nn.Module built by tools/torch_param_counts.py: the same names, the same
shapes, nothing missing, nothing extra. Weights files (safetensors) will be
exchanged by these names, so they must agree exactly.

Usage: /usr/bin/python3 tools/compare_with_torch.py [--netc build/netc] [NET ...]
Exit status 1 on any difference. Run by `make test`.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch  # noqa: F401  (the twins need it; fail loudly, never skip)
except ImportError as e:
    sys.exit(f"compare_with_torch: PyTorch is not importable ({e}); run scripts/setup.sh")
import torch_param_counts as twins


def netc_params(netc, net):
    r = subprocess.run([netc, "graph", f"netdefs/{net}.net", "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"{net}: netc failed (exit {r.returncode}):\n{r.stderr}", end="")
        return None
    g = json.loads(r.stdout)
    return {p["name"]: (tuple(g["tensors"][p["tensor"]]["shape"]), "param" if p["trainable"] else "buffer")
            for p in g["params"]}


def torch_params(net):
    model = twins.NETS[net]["build"]()
    trainable = {n for n, _ in model.named_parameters()}
    return {n: (tuple(t.shape), "param" if n in trainable else "buffer")
            for n, t in model.state_dict().items() if not n.endswith("num_batches_tracked")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--netc", default="build/netc")
    ap.add_argument("nets", nargs="*")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    failed = 0
    for net in a.nets or list(twins.NETS):
        ours, theirs = netc_params(a.netc, net), torch_params(net)
        if ours is None:
            failed += 1
            continue
        missing = sorted(set(theirs) - set(ours))
        extra = sorted(set(ours) - set(theirs))
        differ = sorted(n for n in set(ours) & set(theirs) if ours[n] != theirs[n])
        if missing or extra or differ:
            failed += 1
            print(f"{net}: {len(missing)} missing in netc, {len(extra)} extra in netc, {len(differ)} differ")
            for n in missing[:10]:
                print(f"  missing {n} {theirs[n]}")
            for n in extra[:10]:
                print(f"  extra   {n} {ours[n]}")
            for n in differ[:10]:
                print(f"  differ  {n}: netc {ours[n]} torch {theirs[n]}")
        else:
            print(f"{net}: {len(ours)} tensors, names and shapes equal to PyTorch")
    print(f"torch: {len(a.nets or twins.NETS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
