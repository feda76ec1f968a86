#!/usr/bin/python3
"""tools/torch_param_counts.py — PyTorch twins of the shipped netdefs.

Builds, for each netdefs/*.net at its default parameters and shipped protocol,
the exact equivalent torch.nn.Module (same layers in the same order, same bias
choices, BatchNorm affine, PReLU with one slope per channel), then prints

  * the trainable parameter count (sum of p.numel() over parameters()) and the
    number of parameter tensors,
  * the shape of every output after a forward pass of a zero tensor of the
    protocol's shape (batch 1), which proves the architecture shape-consistent,
  * with --names, every state_dict entry (name, shape, param|buffer) in
    state_dict order.  BatchNorm's num_batches_tracked is left out: it is a
    PyTorch bookkeeping counter that netc does not have.

Module attribute names follow the .net naming rule (spec "Naming"), so the
printed names are the names netc should give: e.g. `enc.0.conv_bn_relu.conv.weight`,
`up.3.weight`, `logits.weight`.  The *order* can differ from netc's creation
order where the source interleaves scopes (up[i], dec[i] in a loop): PyTorch
lists a container's children together.  Compare by name, not by position.

Usage:
  /usr/bin/python3 tools/torch_param_counts.py [NET ...] [--names] [--expected]
      [--all-protocols] [--paper]

  --expected       print only `NET COUNT NTENSORS` lines (tests/expected_param_counts.txt)
  --all-protocols  also run the forward pass for every other protocol in the .net file
  --paper          also print the paper-configuration check (3D U-Net with 3 input
                   channels and 3 classes: Çiçek et al. report 19,069,955 parameters,
                   which is this net without BN affine parameters and up-conv biases)
"""
import argparse
import signal
import sys

import torch
import torch.nn as nn


def conv_cls(rank):
    return {2: nn.Conv2d, 3: nn.Conv3d}[rank]


def upconv_cls(rank):
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[rank]


def bn_cls(rank):
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[rank]


def maxpool_cls(rank):
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[rank]


def conv_same(rank, cin, cout, k, bias=True):
    """netc conv(cout, k) with stride 1, padding = same: odd k -> k // 2 each side."""
    assert k % 2 == 1
    return conv_cls(rank)(cin, cout, k, stride=1, padding=k // 2, bias=bias)


# ----------------------------------------------------------------------------
# common.net

class ConvBnRelu(nn.Module):
    """block conv_bn_relu(c, k = 3) { conv(c, k) -> batchnorm -> relu }"""

    def __init__(self, rank, cin, c, k=3):
        super().__init__()
        self.conv = conv_same(rank, cin, c, k)
        self.batchnorm = bn_cls(rank)(c, eps=1e-5, momentum=0.1, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.batchnorm(self.conv(x)))


class DoubleConv(nn.Module):
    """block double_conv(c1, c2) { conv_bn_relu(c1) -> conv_bn_relu(c2) }"""

    def __init__(self, rank, cin, c1, c2):
        super().__init__()
        self.conv_bn_relu = ConvBnRelu(rank, cin, c1)
        self.conv_bn_relu_1 = ConvBnRelu(rank, c1, c2)

    def forward(self, x):
        return self.conv_bn_relu_1(self.conv_bn_relu(x))


# ----------------------------------------------------------------------------
# unet2d.net and unet3d.net: one U-Net class, widths given per stage

class UNet(nn.Module):
    """enc[i] = double_conv(...)(x); x = maxpool(2)(enc[i]); bottom = double_conv(...);
    for i in depth-1 .. 0: up[i] = upconv(...)(x); x = concat(enc[i], up[i]);
    dec[i] = double_conv(...)(x); logits = conv(classes, 1)(x)."""

    def __init__(self, rank, cin, classes, depth, enc_w, bottom_w, up_w, dec_w):
        super().__init__()
        self.depth = depth
        self.enc = nn.ModuleList()
        c = cin
        for i in range(depth):
            c1, c2 = enc_w(i)
            self.enc.append(DoubleConv(rank, c, c1, c2))
            c = c2
        skip_c = [enc_w(i)[1] for i in range(depth)]
        self.pool = maxpool_cls(rank)(2, stride=2)
        b1, b2 = bottom_w()
        self.bottom = DoubleConv(rank, c, b1, b2)
        c = b2
        self.up = nn.ModuleDict()
        self.dec = nn.ModuleDict()
        for i in range(depth - 1, -1, -1):
            cu = up_w(i)
            self.up[str(i)] = upconv_cls(rank)(c, cu, 2, stride=2, padding=0, bias=True)
            d1, d2 = dec_w(i)
            self.dec[str(i)] = DoubleConv(rank, skip_c[i] + cu, d1, d2)
            c = d2
        self.logits = conv_cls(rank)(c, classes, 1, bias=True)

    def forward(self, image):
        x = image
        enc = {}
        for i in range(self.depth):
            enc[i] = self.enc[i](x)
            x = self.pool(enc[i])
        x = self.bottom(x)
        for i in range(self.depth - 1, -1, -1):
            up = self.up[str(i)](x)
            x = torch.cat([enc[i], up], dim=1)          # skip first, then upsampled
            x = self.dec[str(i)](x)
        return {"logits": self.logits(x)}


def build_unet2d(cin=1, classes=2, base=64, depth=4):
    return UNet(2, cin, classes, depth,
                enc_w=lambda i: (base << i, base << i),
                bottom_w=lambda: (base << depth, base << depth),
                up_w=lambda i: base << i,                       # halves the channels
                dec_w=lambda i: (base << i, base << i))


def build_unet3d(cin=1, classes=2, base=32, depth=3):
    return UNet(3, cin, classes, depth,
                enc_w=lambda i: (base << i, base << (i + 1)),   # 32,64 / 64,128 / 128,256
                bottom_w=lambda: (base << depth, base << (depth + 1)),   # 256, 512
                up_w=lambda i: base << (i + 2),                 # keeps the channels: 512, 256, 128
                dec_w=lambda i: (base << (i + 1), base << (i + 1)))


# ----------------------------------------------------------------------------
# vnet.net

class ConvPrelu(nn.Module):
    """x -> conv(...) -> prelu  (conv may be strided / transposed)"""

    def __init__(self, conv, attr, c):
        super().__init__()
        setattr(self, attr, conv)
        self._attr = attr
        self.prelu = nn.PReLU(num_parameters=c, init=0.25)

    def forward(self, x):
        return self.prelu(getattr(self, self._attr)(x))


class VNetStage(nn.Module):
    """block vnet_stage(c, n): h[j] = h[j-1] -> conv(c, 5) [-> prelu if j < n];
    output prelu(x + h[n])"""

    def __init__(self, c, n):
        super().__init__()
        self.n = n
        self.h = nn.ModuleDict()
        for j in range(1, n + 1):
            conv = conv_same(3, c, c, 5)
            self.h[str(j)] = ConvPrelu(conv, "conv", c) if j < n else conv
        self.prelu = nn.PReLU(num_parameters=c, init=0.25)

    def forward(self, x):
        y = x
        for j in range(1, self.n + 1):
            y = self.h[str(j)](y)
        return self.prelu(x + y)


class VNetFirstStage(nn.Module):
    """enc[0] = prelu(conv(base, 5)(image) + tiled), tiled = image repeated base times."""

    def __init__(self, cin, c):
        super().__init__()
        assert cin == 1, "the original V-Net tiles a 1-channel input"
        self.c = c
        self.conv = conv_same(3, cin, c, 5)
        self.prelu = nn.PReLU(num_parameters=c, init=0.25)

    def forward(self, image):
        tiled = torch.cat([image] * self.c, dim=1)
        return self.prelu(self.conv(image) + tiled)


class VNet(nn.Module):
    def __init__(self, cin=1, classes=2, base=16, depth=4):
        super().__init__()
        self.depth = depth
        self.enc = nn.ModuleList([VNetFirstStage(cin, base)])
        self.down = nn.ModuleDict()
        for i in range(1, depth + 1):
            c = base << i
            self.down[str(i)] = ConvPrelu(
                nn.Conv3d(c // 2, c, 2, stride=2, padding=0, bias=True), "conv", c)
            self.enc.append(VNetStage(c, min(i + 1, 3)))
        self.up = nn.ModuleDict()
        self.dec = nn.ModuleDict()
        cprev = base << depth
        for i in range(depth - 1, -1, -1):
            cu = base << i
            self.up[str(i)] = ConvPrelu(
                nn.ConvTranspose3d(cprev, cu, 2, stride=2, padding=0, bias=True), "upconv", cu)
            self.dec[str(i)] = VNetStage(base << (i + 1), min(i + 1, 3))
            cprev = base << (i + 1)
        self.logits = nn.Conv3d(cprev, classes, 1, bias=True)

    def forward(self, image):
        enc = [self.enc[0](image)]
        x = enc[0]
        for i in range(1, self.depth + 1):
            x = self.enc[i](self.down[str(i)](x))
            enc.append(x)
        for i in range(self.depth - 1, -1, -1):
            up = self.up[str(i)](x)
            x = torch.cat([up, enc[i]], dim=1)          # upsampled first, as in the prototxt
            x = self.dec[str(i)](x)
        return {"logits": self.logits(x)}


# ----------------------------------------------------------------------------
# voxresnet.net

class Chain(nn.Module):
    """A chain of named modules applied in order (a `name = x -> a -> b` scope)."""

    def __init__(self, items):
        super().__init__()
        self._order = []
        for name, m in items:
            self.add_module(name, m)
            self._order.append(name)

    def forward(self, x):
        for name in self._order:
            x = getattr(self, name)(x)
        return x


def conv_bn_relu_chain(cin, c):
    return Chain([("conv", conv_same(3, cin, c, 3)),
                  ("batchnorm", nn.BatchNorm3d(c)), ("relu", nn.ReLU())])


def bn_relu_chain(c):
    return Chain([("batchnorm", nn.BatchNorm3d(c)), ("relu", nn.ReLU())])


class VoxRes(nn.Module):
    """block voxres(c) { res = x -> BN -> ReLU -> conv -> BN -> ReLU -> conv; output x + res }"""

    def __init__(self, c):
        super().__init__()
        self.res = Chain([
            ("batchnorm", nn.BatchNorm3d(c)), ("relu", nn.ReLU()),
            ("conv", conv_same(3, c, c, 3)),
            ("batchnorm_1", nn.BatchNorm3d(c)), ("relu_1", nn.ReLU()),
            ("conv_1", conv_same(3, c, c, 3))])

    def forward(self, x):
        return x + self.res(x)


class VoxResNet(nn.Module):
    def __init__(self, cin=3, classes=4, base=32):
        super().__init__()
        w = 2 * base

        def strided(c_in):       # conv(2 * base, 3, stride = 2, padding = 1)
            return nn.Conv3d(c_in, w, 3, stride=2, padding=1, bias=True)

        self.conv1a = conv_bn_relu_chain(cin, base)
        self.conv1b = conv_bn_relu_chain(base, base)
        self.conv1c = strided(base)
        self.voxres2 = VoxRes(w)
        self.voxres3 = VoxRes(w)
        self.level2 = bn_relu_chain(w)
        self.conv4 = strided(w)
        self.voxres5 = VoxRes(w)
        self.voxres6 = VoxRes(w)
        self.level3 = bn_relu_chain(w)
        self.conv7 = strided(w)
        self.voxres8 = VoxRes(w)
        self.voxres9 = VoxRes(w)
        self.level4 = bn_relu_chain(w)
        self.c1 = nn.Conv3d(base, classes, 1, bias=True)
        for name, f in (("c2", 2), ("c3", 4), ("c4", 8)):
            setattr(self, name, Chain([
                ("upconv", nn.ConvTranspose3d(w, base, f, stride=f, padding=0, bias=True)),
                ("conv", nn.Conv3d(base, classes, 1, bias=True))]))

    def forward(self, t1, t1_ir, flair):
        x = torch.cat([t1, t1_ir, flair], dim=1)
        conv1b = self.conv1b(self.conv1a(x))
        level2 = self.level2(self.voxres3(self.voxres2(self.conv1c(conv1b))))
        level3 = self.level3(self.voxres6(self.voxres5(self.conv4(level2))))
        level4 = self.level4(self.voxres9(self.voxres8(self.conv7(level3))))
        out = {"c1": self.c1(conv1b), "c2": self.c2(level2),
               "c3": self.c3(level3), "c4": self.c4(level4)}
        out["logits"] = out["c1"] + out["c2"] + out["c3"] + out["c4"]
        return out


# ----------------------------------------------------------------------------
# The shipped nets: builder at default parameters, input names, and the
# protocols of their .net file (channels, spatial size); the first is shipped
# with the train block.

NETS = {
    "unet2d": dict(build=lambda: build_unet2d(cin=1, classes=2), inputs=["image"],
                   protocols={"t1_brain_axial": (1, (256, 256))}),
    "unet3d": dict(build=lambda: build_unet3d(cin=1, classes=2), inputs=["image"],
                   protocols={"t1_brain_3d": (1, (128, 128, 128)),
                              "t2_prostate_aniso": (1, (32, 160, 160))}),
    "vnet": dict(build=lambda: VNet(cin=1, classes=2), inputs=["image"],
                 protocols={"prostate_mri": (1, (128, 128, 64))}),
    "voxresnet": dict(build=lambda: VoxResNet(cin=3, classes=4),
                      inputs=["t1", "t1_ir", "flair"],     # one channel each
                      protocols={"mrbrains": (3, (80, 80, 80))}),
}


def counts(model):
    params = list(model.parameters())
    return sum(p.numel() for p in params), len(params)


def print_names(model):
    pnames = {n for n, _ in model.named_parameters()}
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        kind = "param" if name in pnames else "buffer"
        print(f"  {name} {list(t.shape)} {kind}")


def forward_shapes(spec, model, channels, size):
    if len(spec["inputs"]) == 1:
        args = [torch.zeros(1, channels, *size)]
    else:
        assert channels == len(spec["inputs"])
        args = [torch.zeros(1, 1, *size) for _ in spec["inputs"]]
    with torch.no_grad():
        out = model(*args)
    return {k: tuple(v.shape) for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("nets", nargs="*", help="subset of: " + " ".join(NETS))
    ap.add_argument("--names", action="store_true")
    ap.add_argument("--expected", action="store_true")
    ap.add_argument("--all-protocols", action="store_true")
    ap.add_argument("--paper", action="store_true")
    a = ap.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)     # quiet under `| head`
    names = a.nets or list(NETS)
    for n in names:
        if n not in NETS:
            sys.exit(f"unknown net {n!r}; known: {' '.join(NETS)}")
    torch.manual_seed(0)
    torch.set_grad_enabled(False)

    for n in names:
        spec = NETS[n]
        model = spec["build"]().eval()
        total, ntensors = counts(model)
        if a.expected:
            print(f"{n} {total} {ntensors}")
            continue
        print(f"{n}: {total} trainable parameters in {ntensors} tensors")
        protos = list(spec["protocols"].items())
        if not a.all_protocols:
            protos = protos[:1]
        for pname, (ch, size) in protos:
            shapes = forward_shapes(spec, model, ch, size)
            ins = ", ".join(f"{i}[1, {1 if len(spec['inputs']) > 1 else ch}, "
                            f"{', '.join(map(str, size))}]" for i in spec["inputs"])
            print(f"  forward on {pname}: {ins}")
            for k, s in shapes.items():
                print(f"    output {k} {list(s)}")
        if a.names:
            print_names(model)

    if a.paper and not a.expected:
        # The paper's figure matches this architecture exactly once the BN
        # affine parameters and the up-convs' biases are left out (Caffe
        # BatchNorm has no scale/shift of its own; the up-convs had no bias).
        m = build_unet3d(cin=3, classes=3)
        total, _ = counts(m)
        bn = sum(p.numel() for mod in m.modules()
                 if isinstance(mod, nn.modules.batchnorm._BatchNorm) for p in mod.parameters())
        upb = sum(mod.bias.numel() for mod in m.modules()
                  if isinstance(mod, nn.ConvTranspose3d) and mod.bias is not None)
        print(f"paper check: unet3d with 3 input channels, 3 classes: {total} trainable "
              f"parameters; without the {bn} BN affine parameters and the {upb} up-conv "
              f"biases: {total - bn - upb} (Çiçek et al. 2016 report 19,069,955)")

if __name__ == "__main__":
    main()
