"""Batch normalization for images, computed the way ``torch.nn.BatchNorm2d`` computes it.

Each channel is standardized with statistics taken over the batch and the
spatial positions, i.e. over the N·H·W values that share the channel:

    mean_c = 1/m · Σ_{n,h,w} x[n,c,h,w]                     m = N·H·W
    var_c  = 1/m · Σ_{n,h,w} (x[n,c,h,w] - mean_c)²          (biased: divide by m)
    y[n,c,h,w] = (x[n,c,h,w] - mean_c) / sqrt(var_c + eps) · weight_c + bias_c

Three details that by-hand versions often get wrong (pytorch/pytorch issues 3122, 77427):

* normalizing uses the *biased* variance (÷m), but ``running_var`` is updated
  with the *unbiased* one (÷(m-1));
* ``running = (1 - momentum) · running + momentum · batch`` with momentum 0.1
  (CS231n writes the opposite convention, 0.9 weighting the old value);
  ``momentum=None`` replaces it with a cumulative average, factor 1/num_batches_tracked;
* the switch between batch and running statistics is ``module.training``
  (``.train()`` / ``.eval()``), not autograd: under ``torch.no_grad()`` a module
  in train mode still updates its running statistics.
"""
from __future__ import annotations

import torch
from torch import nn

from ._input import as_size, expect_channels, expect_rank
from ._params import (check_channel_vectors, compute_dtype, per_channel, register_affine, register_running_stats,
                      reset_affine, reset_running_stats, scale_and_shift, update_running_stats)


def batch_norm2d(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Functional batch norm of ``x`` (N, C, H, W); same arguments and defaults as ``torch.nn.functional.batch_norm``.

    ``training=True``: normalize with this batch's statistics and, when buffers
    are given, update them **in place**:
    ``running_mean ← (1 - momentum)·running_mean + momentum·mean``,
    ``running_var ← (1 - momentum)·running_var + momentum·var·m/(m - 1)``.
    ``training=False`` (the default, as in PyTorch): normalize with
    ``running_mean`` and ``running_var``, which must then be given.
    ``momentum`` here is the update factor itself; the module turns
    ``momentum=None`` into 1/num_batches_tracked before calling this.
    ``weight``, ``bias``, and the buffers have shape (C,). Returns (N, C, H, W)
    in the dtype of ``x``; float16/bfloat16 input is computed in float32.
    An empty batch gives an empty output and leaves the buffers alone, as in PyTorch.
    """
    layer = "batch_norm2d"
    expect_rank(x, 4, layer, "(N, C, H, W)")
    channels = x.shape[1]
    check_channel_vectors(layer, channels, running_mean=running_mean, running_var=running_var,
                          weight=weight, bias=bias)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{layer}: pass both running_mean and running_var, or neither.")
    if not training and running_mean is None:
        raise ValueError(f"{layer}: training=False normalizes with running_mean and running_var, but none were "
                         f"given. Pass the running buffers, or training=True to use this batch's statistics.")

    dtype = compute_dtype(x)
    xc = x.to(dtype)
    if training:
        count = x.numel() // max(channels, 1)  # m = N·H·W values per channel
        if count == 0:  # an empty batch: no statistics to take, no buffers to update
            return scale_and_shift(xc, weight, bias).to(x.dtype)
        if count == 1:
            raise ValueError(
                f"{layer}: expected more than 1 value per channel when training, got input of shape "
                f"{tuple(x.shape)} (N·H·W = {count}). The variance of one value is undefined: use a batch of "
                f"at least 2, or call model.eval() to use the running statistics.")
        mean = xc.mean(dim=(0, 2, 3))                                   # (C,)
        # Two-pass (centered) variance: subtract the mean first. The one-pass
        # E[x²] - E[x]² cancels catastrophically when |mean| >> std.
        var = (xc - per_channel(mean)).pow(2).mean(dim=(0, 2, 3))       # (C,), biased
        if running_mean is not None:
            update_running_stats(running_mean, running_var, mean, var * (count / (count - 1)), momentum)
    else:
        mean, var = running_mean.to(dtype), running_var.to(dtype)

    x_hat = (xc - per_channel(mean)) * per_channel(torch.rsqrt(var + eps))  # (N, C, H, W)
    return scale_and_shift(x_hat, weight, bias).to(x.dtype)


class BatchNorm2d(nn.Module):
    """Batch norm over (N, H, W) for each of C channels; a readable twin of ``torch.nn.BatchNorm2d``.

    Formula (train mode): ``y = (x - mean_c) / sqrt(var_c + eps) · weight_c + bias_c``
    with mean and biased variance over the N·H·W values of channel c; eval mode
    uses ``running_mean``/``running_var`` instead. See the module docstring.

    Shapes: input (N, C, H, W) -> output (N, C, H, W); ``weight``, ``bias``,
    ``running_mean``, ``running_var`` are (C,), ``num_batches_tracked`` a scalar.
    Parameter and buffer names match PyTorch's, so state dicts load both ways.
    Output dtype follows the input (float16/bfloat16 computed in float32);
    float64 input with float32 parameters is computed in float64 (PyTorch raises).
    Deliberate differences: ``num_features=0`` is refused when the layer is built
    (PyTorch fails at the first batch with an IndexError).

    Args:
        num_features: C, the number of channels.
        eps: added to the variance before the square root.
        momentum: weight of the new batch in the running averages (PyTorch
            convention), or None for a cumulative average.
        affine: learn ``weight`` (init 1) and ``bias`` (init 0).
        track_running_stats: keep running statistics; if False, the layer
            always normalizes with the batch's statistics.
        bias: with ``affine``, learn ``bias`` too (False: ``weight`` only), as PyTorch's keyword.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        # C >= 1: torch.nn.BatchNorm2d(0) builds but fails on its first batch; we say so at once.
        num_features = as_size(num_features, "BatchNorm2d", "num_features (the channel count C)")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        register_affine(self, num_features, affine, bias=bias, device=device, dtype=dtype)
        register_running_stats(self, num_features, track_running_stats, device=device, dtype=dtype)

    def reset_running_stats(self) -> None:
        """Back to mean 0, variance 1, no batches seen."""
        reset_running_stats(self)

    def reset_parameters(self) -> None:
        """Running statistics as new, ``weight`` 1, ``bias`` 0 (what a fresh layer has)."""
        reset_running_stats(self)
        reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expect_rank(x, 4, "BatchNorm2d", "(N, C, H, W)")
        expect_channels(x, self.num_features, "BatchNorm2d")
        # The mode switch is self.training, never torch.is_grad_enabled().
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average of all batches so far
                factor = 1.0 / float(self.num_batches_tracked)
        # Buffers are read in eval mode and updated in train mode (only when tracking).
        use_buffers = not self.training or self.track_running_stats
        return batch_norm2d(
            x,
            self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None,
            self.weight,
            self.bias,
            training=self.training or self.running_mean is None,
            momentum=factor,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")
