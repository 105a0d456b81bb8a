"""Fold an inference-mode batch norm into the convolution before it.

In eval mode a BN is a fixed per-channel affine map,
``bn(z) = scale_c · z + shift_c`` with ``scale_c = weight_c / sqrt(running_var_c + eps)`` and
``shift_c = bias_c - running_mean_c · scale_c``. Applied to a conv output
``z = W * x + b`` it gives a conv with

    W'[c] = scale_c · W[c]        b'[c] = scale_c · b[c] + shift_c

so ``conv → bn`` becomes one conv: the same outputs (up to rounding) and one
pass over memory fewer at inference. Only valid with frozen statistics: after
folding, the layer no longer adapts to batches (it behaves as ``bn.eval()``).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """Return a new ``nn.Conv2d`` equal to ``bn.eval()(conv(x))``; ``conv`` and ``bn`` are not changed.

    ``bn`` is a ``torch.nn.BatchNorm2d`` or ``course_utils.BatchNorm2d`` with
    running statistics; its ``out_channels`` must match the conv's.
    Shapes: conv weight (C_out, C_in/groups, kH, kW) -> same; bias (C_out,) (created if the conv had none).
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"fold_bn_into_conv: expected an nn.Conv2d first, got {type(conv).__name__}.")
    running_mean = getattr(bn, "running_mean", None)
    running_var = getattr(bn, "running_var", None)
    if running_mean is None or running_var is None:
        raise ValueError("fold_bn_into_conv: the batch norm has no running statistics "
                         "(track_running_stats=False), so it is not a fixed affine map and cannot be folded.")
    if running_mean.numel() != conv.out_channels:
        raise ValueError(f"fold_bn_into_conv: the batch norm has {running_mean.numel()} channels but the conv "
                         f"has {conv.out_channels} output channels; fold the BN that follows this conv.")
    with torch.no_grad():
        weight = bn.weight if getattr(bn, "weight", None) is not None else torch.ones_like(running_var)
        bias = bn.bias if getattr(bn, "bias", None) is not None else torch.zeros_like(running_mean)
        scale = weight / torch.sqrt(running_var + bn.eps)           # (C_out,)
        shift = bias - running_mean * scale                          # (C_out,)
        conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(running_mean)

        fused = copy.deepcopy(conv)  # keeps stride, padding, dilation, groups, padding_mode
        if fused.bias is None:
            fused.bias = nn.Parameter(torch.empty_like(running_mean, dtype=conv.weight.dtype))
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(conv_bias * scale + shift)
    return fused
