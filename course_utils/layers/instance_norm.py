"""Instance normalization for images (Ulyanov et al., 2016), as ``torch.nn.InstanceNorm2d`` computes it.

Every (sample, channel) map is standardized over its own H·W values:

    mean_{n,c} = 1/m · Σ_{h,w} x[n,c,h,w]     var_{n,c} = 1/m · Σ_{h,w} (x - mean_{n,c})²     m = H·W
    y[n,c,h,w] = (x[n,c,h,w] - mean_{n,c}) / sqrt(var_{n,c} + eps) · weight_c + bias_c

PyTorch's defaults differ from BatchNorm2d's: ``affine=False`` and
``track_running_stats=False``. With tracking on, the running buffers are
updated with the batch average of the per-instance means and unbiased
variances, and eval mode normalizes with them; ``momentum=None`` means factor 0
(no update), not a cumulative average as in batch norm.
"""
from __future__ import annotations

import torch
from torch import nn

from ._input import as_size, expect_channels, expect_rank, expect_tensor
from ._params import (check_channel_vectors, compute_dtype, per_channel, register_affine, register_running_stats,
                      reset_affine, reset_running_stats, scale_and_shift, update_running_stats)


def instance_norm2d(
    x: torch.Tensor,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Functional instance norm of ``x`` (N, C, H, W); arguments as ``torch.nn.functional.instance_norm``.

    ``use_input_stats=True``: normalize each (n, c) map with its own statistics
    and, if buffers (C,) are given, update them in place with the batch average.
    ``use_input_stats=False``: normalize with the running buffers.
    Output in the dtype of ``x`` (float16/bfloat16 computed in float32).
    """
    layer = "instance_norm2d"
    expect_rank(x, 4, layer, "(N, C, H, W)")
    c = x.shape[1]
    check_channel_vectors(layer, c, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)

    if use_input_stats or running_mean is None:
        count = x.shape[2] * x.shape[3]  # m = H·W
        if count <= 1:
            raise ValueError(f"{layer}: expected more than 1 spatial element per channel, got input of shape "
                             f"{tuple(x.shape)}. A 1x1 map has no spread to normalize; use a larger map or "
                             f"batch norm.")
        xc = x.to(compute_dtype(x))
        mean = xc.mean(dim=(2, 3), keepdim=True)                   # (N, C, 1, 1)
        centered = xc - mean
        var = centered.pow(2).mean(dim=(2, 3), keepdim=True)       # (N, C, 1, 1), biased
        # An empty batch has no instances to average: the buffers stay as they are.
        if running_mean is not None and x.shape[0] > 0:
            # the batch average of the per-instance statistics: mean (C,), unbiased variance (C,)
            update_running_stats(running_mean, running_var, mean.mean(dim=(0, 2, 3)),
                                 (var * (count / (count - 1))).mean(dim=(0, 2, 3)), momentum)
        y = centered * torch.rsqrt(var + eps)
    else:
        dtype = compute_dtype(x)
        mean, var = running_mean.to(dtype), running_var.to(dtype)
        y = (x.to(dtype) - per_channel(mean)) * per_channel(torch.rsqrt(var + eps))
    return scale_and_shift(y, weight, bias).to(x.dtype)


class InstanceNorm2d(nn.Module):
    """Instance norm: statistics per sample and per channel over H·W; a twin of ``torch.nn.InstanceNorm2d``.

    Formula: ``y = (x - mean_{n,c}) / sqrt(var_{n,c} + eps) · weight_c + bias_c``.

    Shapes: input (N, C, H, W) -> same shape, or one unbatched image (C, H, W) -> (C, H, W), as
    PyTorch takes it; ``weight``, ``bias`` and the running buffers (when enabled) are (C,). Output
    dtype follows the input.
    Deliberate difference: an empty batch returns an empty output and leaves the
    buffers alone (PyTorch 2.x raises an IndexError when ``affine=True`` and, in
    train mode with tracking, writes NaN into the running buffers).

    Args:
        num_features: C.
        eps: added to the variance before the square root.
        momentum: update factor of the running buffers (None: no update).
        affine: learn ``weight`` and ``bias`` (off by default, as in PyTorch).
        track_running_stats: keep running buffers and use them in eval mode (off by default).
        bias: with ``affine``, learn ``bias`` too (False: ``weight`` only), as PyTorch's keyword.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device=None, dtype=None,
                 *, bias: bool = True) -> None:
        super().__init__()
        num_features = as_size(num_features, "InstanceNorm2d", "num_features (the channel count C)", minimum=0)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        register_affine(self, num_features, affine, bias=bias, device=device, dtype=dtype)
        # num_batches_tracked comes too, so state dicts match PyTorch's; instance norm never increments it.
        register_running_stats(self, num_features, track_running_stats, device=device, dtype=dtype)

    def reset_running_stats(self) -> None:
        """Back to mean 0, variance 1."""
        reset_running_stats(self)

    def reset_parameters(self) -> None:
        """Running statistics as new, ``weight`` 1, ``bias`` 0."""
        reset_running_stats(self)
        reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expect_tensor(x, "InstanceNorm2d")
        if x.dim() == 3:  # one unbatched image (C, H, W): a batch of one, as PyTorch does
            return self.forward(x.unsqueeze(0)).squeeze(0)
        expect_rank(x, 4, "InstanceNorm2d", "(N, C, H, W) or one image (C, H, W)")
        expect_channels(x, self.num_features, "InstanceNorm2d")
        return instance_norm2d(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            use_input_stats=self.training or not self.track_running_stats,
            momentum=0.0 if self.momentum is None else self.momentum,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")
