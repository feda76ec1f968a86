#!/usr/bin/env python3
"""PyTorch on the GPU for make bench's four configurations (the side of
scripts/gpu_check.sh that netc's GPU times are read against).

The models are written out here, following netdefs/unet2d.net and
netdefs/unet3d.net (double_conv = two 3x3(x3) convs with bias + batchnorm +
ReLU; 2x max-pool; 2x transposed conv up; concat skip first; 1x1 head to 2
classes; the training step is Dice + CE and SGD momentum 0.99 Nesterov with
weight decay 3e-5, as the netdefs' train blocks).  float32 with TF32 off
(netc computes in float32) and, for reference, PyTorch's defaults (TF32
convolutions).  Prints one line per row:
  torch-gpu: NAME mode=fp32|tf32 ms=MEDIAN
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def double_conv(nd, cin, cmid, cout):
    Conv = nn.Conv2d if nd == 2 else nn.Conv3d
    BN = nn.BatchNorm2d if nd == 2 else nn.BatchNorm3d
    return nn.Sequential(Conv(cin, cmid, 3, padding=1), BN(cmid), nn.ReLU(inplace=True),
                         Conv(cmid, cout, 3, padding=1), BN(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """unet2d: stage i has base<<i channels, upconv halves; unet3d: stage i goes
    base<<i then base<<(i+1), upconv keeps the channels."""

    def __init__(self, nd, base, depth, classes=2):
        super().__init__()
        self.nd = nd
        Up = nn.ConvTranspose2d if nd == 2 else nn.ConvTranspose3d
        Conv = nn.Conv2d if nd == 2 else nn.Conv3d
        self.enc, self.up, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cin = 1
        skips = []
        for i in range(depth):
            if nd == 2:
                self.enc.append(double_conv(nd, cin, base << i, base << i))
                cin = base << i
            else:
                self.enc.append(double_conv(nd, cin, base << i, base << (i + 1)))
                cin = base << (i + 1)
            skips.append(cin)
        if nd == 2:
            self.bottom = double_conv(nd, cin, base << depth, base << depth)
            cin = base << depth
        else:
            self.bottom = double_conv(nd, cin, base << depth, base << (depth + 1))
            cin = base << (depth + 1)
        for i in reversed(range(depth)):
            cout = base << i if nd == 2 else cin
            self.up.append(Up(cin, cout, 2, stride=2))
            c = skips[i] + cout
            width = base << i if nd == 2 else base << (i + 1)
            self.dec.append(double_conv(nd, c, width, width))
            cin = width
        self.head = Conv(cin, classes, 1)
        self.pool = nn.MaxPool2d(2) if nd == 2 else nn.MaxPool3d(2)

    def forward(self, x):
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for u, d in zip(self.up, self.dec):
            x = d(torch.cat([skips.pop(), u(x)], 1))
        return self.head(x)


def dice_ce(logits, labels):
    p = torch.softmax(logits, 1)
    onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).float()
    dims = tuple(range(2, logits.dim()))
    inter = (p * onehot).sum(dims)
    dice = (2 * inter + 1e-5) / (p.sum(dims) + onehot.sum(dims) + 1e-5)
    return (1 - dice.mean()) + F.cross_entropy(logits, labels)


def time_it(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"torch-gpu: device={torch.cuda.get_device_name(0)} torch={torch.__version__}", flush=True)
    rows = [("unet2d-infer-1x256x256", 2, 32, 4, (1, 1, 256, 256), False),
            ("unet2d-train-4x256x256", 2, 32, 4, (4, 1, 256, 256), True),
            ("unet3d-infer-1x64x64x64", 3, 8, 3, (1, 1, 64, 64, 64), False),
            ("unet3d-train-2x64x64x64", 3, 8, 3, (2, 1, 64, 64, 64), True)]
    for mode in ("fp32", "tf32"):
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        for name, nd, base, depth, shape, train in rows:
            torch.manual_seed(0)
            m = UNet(nd, base, depth).to(dev)
            x = torch.randn(shape, device=dev)
            if not train:
                m.eval()

                def step():
                    with torch.no_grad():
                        m(x)
            else:
                m.train()
                lab = torch.randint(0, 2, (shape[0],) + shape[2:], device=dev)
                opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)

                def step():
                    opt.zero_grad(set_to_none=True)
                    dice_ce(m(x), lab).backward()
                    opt.step()
            ms = time_it(step, 5, a.iters)
            print(f"torch-gpu: {name} mode={mode} ms={ms:.3f}", flush=True)


if __name__ == "__main__":
    main()
