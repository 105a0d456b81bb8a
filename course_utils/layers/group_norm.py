"""Group normalization (Wu & He, 2018), computed the way ``torch.nn.GroupNorm`` computes it.

The C channels of each sample are split into G groups of C/G consecutive
channels; each (sample, group) is standardized over its C/G·H·W values:

    mean_{n,g} = 1/m · Σ_{c in g, h, w} x        var_{n,g} = 1/m · Σ (x - mean_{n,g})²      m = C/G·H·W
    y[n,c,h,w] = (x[n,c,h,w] - mean_{n,g(c)}) / sqrt(var_{n,g(c)} + eps) · weight_c + bias_c

G = 1 is layer norm over (C, H, W) (with per-channel affine); G = C is instance norm.
No batch statistics, so train and eval behave the same and samples never influence each other.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._input import as_size, expect_channels, expect_min_rank
from ._params import compute_dtype, register_affine, reset_affine


def _check_groups(num_groups: int, num_channels: int, layer: str) -> tuple[int, int]:
    """Both as plain ints; raise ValueError unless G >= 1, C >= 1 and G divides C."""
    num_groups = as_size(num_groups, layer, "num_groups")
    # PyTorch refuses zero channels too ("Expected number of channels to be greater than 0").
    num_channels = as_size(num_channels, layer, "the channel count C")
    if num_channels % num_groups != 0:
        divisors = [g for g in range(1, num_channels + 1) if num_channels % g == 0]
        raise ValueError(f"{layer}: num_groups={num_groups} does not divide num_channels={num_channels}; "
                         f"every group must hold the same number of channels. Choose one of {divisors}.")
    return num_groups, num_channels


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Functional group norm of ``x`` (N, C, *); same arguments as ``torch.nn.functional.group_norm``.

    ``weight`` and ``bias`` have shape (C,). Returns a tensor shaped like ``x``,
    in its dtype (float16/bfloat16 computed in float32).
    """
    layer = "group_norm"
    expect_min_rank(x, 2, layer, "(N, C, *)")
    n, c = x.shape[:2]
    num_groups, _ = _check_groups(num_groups, c, layer)
    group_size = math.prod(x.shape[1:]) // num_groups       # C/G·H·W, spelled out so that N = 0 reshapes too
    grouped = x.to(compute_dtype(x)).reshape(n, num_groups, group_size)  # (N, G, C/G·H·W): one row per group
    mean = grouped.mean(dim=-1, keepdim=True)               # (N, G, 1)
    centered = grouped - mean
    var = centered.pow(2).mean(dim=-1, keepdim=True)        # biased, two-pass
    y = (centered * torch.rsqrt(var + eps)).reshape(x.shape)
    affine_shape = (1, c) + (1,) * (x.dim() - 2)            # (1, C, 1, 1) for images
    if weight is not None:
        y = y * weight.reshape(affine_shape)
    if bias is not None:
        y = y + bias.reshape(affine_shape)
    return y.to(x.dtype)


class GroupNorm(nn.Module):
    """Group norm: statistics per sample and per group of C/G channels; a twin of ``torch.nn.GroupNorm``.

    Formula: ``y = (x - mean_{n,g}) / sqrt(var_{n,g} + eps) · weight_c + bias_c``.

    Shapes: input (N, C, *) -> same shape; ``weight`` (init 1), ``bias`` (init 0): (C,).
    Output dtype follows the input.

    Args:
        num_groups: G; must divide ``num_channels``.
        num_channels: C.
        eps: added to the variance before the square root.
        affine: learn per-channel ``weight`` and ``bias``.
        bias: with ``affine``, learn ``bias`` too (False: ``weight`` only), as PyTorch's keyword.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__()
        num_groups, num_channels = _check_groups(num_groups, num_channels, "GroupNorm")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        register_affine(self, num_channels, affine, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """``weight`` back to 1, ``bias`` to 0."""
        reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expect_min_rank(x, 2, "GroupNorm", "(N, C, *)")
        expect_channels(x, self.num_channels, "GroupNorm")
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
