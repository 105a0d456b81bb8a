"""Speed of the course's by-hand layers relative to their torch.nn (or timm) twins, on the CPU.

Each reference layer and its twin run on the same input of a fixed, realistic
shape: a batch of 32 ResNet-stage feature maps, (32, 64, 56, 56). Reported per
layer: the median time of forward, and of forward + backward, for both, and the
ratio by-hand / torch (above 1 = the by-hand layer is slower).

Then whole networks: one training step (forward, backward, SGD update) of
ResNet-18 on a (64, 3, 32, 32) batch, with its twenty BatchNorm2d layers swapped
by ``cu.swap_norm`` for each kind, torch.nn's and the course's by-hand layers,
as images per second and as a ratio to the BatchNorm2d network (below 1 = slower).
The last line is JSON with all the figures.

    .venv/bin/python benchmarks/layers_speed.py [--repeats 7] [--threads N] [--shape N C H W]
                                                [--net-batch 64] [--net-size 32]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn
from torchvision.models import resnet18

import course_utils as cu
from timm.layers.grn import GlobalResponseNorm as TimmGRN

SHAPE = (32, 64, 56, 56)  # N, C, H, W


def pairs(channels: int, spatial: tuple[int, int]):
    """(name, by-hand layer, reference layer, channels_last input?) for every layer."""
    return [
        ("BatchNorm2d (train)", cu.BatchNorm2d(channels), nn.BatchNorm2d(channels), False),
        ("BatchNorm2d (eval)", cu.BatchNorm2d(channels).eval(), nn.BatchNorm2d(channels).eval(), False),
        ("LayerNorm (C,H,W)", cu.LayerNorm((channels, *spatial)), nn.LayerNorm((channels, *spatial)), False),
        ("GroupNorm (G=32)", cu.GroupNorm(32, channels), nn.GroupNorm(32, channels), False),
        ("InstanceNorm2d (affine)", cu.InstanceNorm2d(channels, affine=True),
         nn.InstanceNorm2d(channels, affine=True), False),
        ("LocalResponseNorm (n=5)", cu.LocalResponseNorm(5), nn.LocalResponseNorm(5), False),
        ("GRN vs timm (NCHW)", cu.GlobalResponseNorm(channels, channels_last=False),
         TimmGRN(channels, channels_last=False), False),
        ("GRN vs timm (NHWC)", cu.GlobalResponseNorm(channels), TimmGRN(channels), True),
    ]


def interleaved_medians(fns, repeats: int) -> list[float]:
    """Median seconds of each function; the calls alternate, so load on the machine hits all alike."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def steps(layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    """The two things timed: forward only (no graph), and forward + backward."""
    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        xi = x.detach().requires_grad_()
        (layer(xi) * upstream).sum().backward()

    return forward, forward_backward


def networks():
    """(name, kind for cu.swap_norm) for the whole-network rows; the by-hand ones as factories."""
    return [
        ("BatchNorm2d", "batchnorm"), ("FrozenBatchNorm2d", "frozen"), ("GroupNorm(32, C)", "groupnorm"),
        ("GroupNorm(1, C) (layer norm)", "layernorm"), ("GroupNorm(C, C) (instance norm)", "instancenorm"),
        ("no norm (Identity)", "none"),
        ("by hand: BatchNorm2d", lambda c: cu.BatchNorm2d(c)),
        ("by hand: GroupNorm(32, C)", lambda c: cu.GroupNorm(32, c)),
        ("by hand: GroupNorm(1, C)", lambda c: cu.GroupNorm(1, c)),
    ]


def network_step(kind, batch: int, size: int):
    """A function doing one SGD training step of ResNet-18 with ``kind`` norm layers."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    model = cu.swap_norm(resnet18(num_classes=10), kind, probe=x[:2], verbose=False).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--shape", type=int, nargs=4, default=list(SHAPE), metavar=("N", "C", "H", "W"),
                        help=f"input shape (default {SHAPE}); C must be a multiple of 32 for GroupNorm(32)")
    parser.add_argument("--net-batch", type=int, default=64, help="batch of the ResNet-18 step (default 64)")
    parser.add_argument("--net-size", type=int, default=32, help="image size of the ResNet-18 step (default 32)")
    args = parser.parse_args()
    shape = tuple(args.shape)
    if shape[1] % 32:
        parser.error(f"--shape: C={shape[1]} is not a multiple of 32, which GroupNorm(32, C) needs")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, c, h, w = shape
    x_first = torch.randn(shape)
    x_last = x_first.permute(0, 2, 3, 1).contiguous()
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, input {shape} float32, "
          f"median of {args.repeats}")
    print(f"{'layer':<26}{'fwd ours':>10}{'fwd torch':>11}{'ratio':>7}{'f+b ours':>11}{'f+b torch':>11}{'ratio':>7}")
    results = []
    for name, ours, ref, channels_last in pairs(c, (h, w)):
        x = x_last if channels_last else x_first
        upstream = torch.randn_like(x)
        (f_ours, fb_ours), (f_ref, fb_ref) = steps(ours, x, upstream), steps(ref, x, upstream)
        f_ours, f_ref = interleaved_medians([f_ours, f_ref], args.repeats)
        fb_ours, fb_ref = interleaved_medians([fb_ours, fb_ref], args.repeats)
        row = {"layer": name, "forward_ms": [round(1e3 * f_ours, 2), round(1e3 * f_ref, 2)],
               "forward_ratio": round(f_ours / f_ref, 2),
               "forward_backward_ms": [round(1e3 * fb_ours, 2), round(1e3 * fb_ref, 2)],
               "forward_backward_ratio": round(fb_ours / fb_ref, 2)}
        results.append(row)
        print(f"{name:<26}{1e3 * f_ours:>8.1f}ms{1e3 * f_ref:>9.1f}ms{row['forward_ratio']:>6.2f}x"
              f"{1e3 * fb_ours:>9.1f}ms{1e3 * fb_ref:>9.1f}ms{row['forward_backward_ratio']:>6.2f}x")
    print(f"\nResNet-18, one SGD training step on ({args.net_batch}, 3, {args.net_size}, {args.net_size}), "
          f"median of {args.repeats}")
    print(f"{'norm layers':<34}{'images/s':>10}{'vs BN':>8}")
    kinds = networks()
    medians = interleaved_medians([network_step(kind, args.net_batch, args.net_size) for _, kind in kinds],
                                  args.repeats)
    network_rows = []
    for (name, _), seconds in zip(kinds, medians):
        row = {"norm": name, "images_per_s": round(args.net_batch / seconds, 1),
               "ratio_to_bn": round(medians[0] / seconds, 2)}
        network_rows.append(row)
        print(f"{name:<34}{row['images_per_s']:>10.1f}{row['ratio_to_bn']:>7.2f}x")
    print(json.dumps({"benchmark": "layers_speed", "device": "cpu", "threads": torch.get_num_threads(),
                      "shape": list(shape), "torch": torch.__version__, "machine": platform.machine(),
                      "repeats": args.repeats, "results": results,
                      "network": {"model": "resnet18", "batch": args.net_batch, "size": args.net_size,
                                  "results": network_rows}}))


if __name__ == "__main__":
    main()
