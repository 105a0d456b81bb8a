"""Learned affine parameters and running statistics of the normalization layers.

The modules register them under PyTorch's names (``weight``, ``bias``,
``running_mean``, ``running_var``, ``num_batches_tracked``), as None when
switched off, as PyTorch does, so state dicts load both ways between a course
layer and its ``torch.nn`` twin. The functional forms of batch and instance norm
share the per-channel steps below: both keep (C,) vectors and apply them to
(N, C, H, W) inputs.
"""
from __future__ import annotations

import torch
from torch import nn


def register_affine(module: nn.Module, shape: int | tuple[int, ...], enabled: bool, *, bias: bool = True,
                    device=None, dtype=None) -> None:
    """``weight`` (init 1) and ``bias`` (init 0) of ``shape``; None when not ``enabled`` (``bias`` also when not ``bias``)."""
    factory = {"device": device, "dtype": dtype}
    module.register_parameter("weight", nn.Parameter(torch.ones(shape, **factory)) if enabled else None)
    module.register_parameter("bias", nn.Parameter(torch.zeros(shape, **factory)) if enabled and bias else None)


def register_running_stats(module: nn.Module, num_features: int, enabled: bool, *, device=None, dtype=None) -> None:
    """``running_mean`` (init 0) and ``running_var`` (init 1) of shape (C,) and ``num_batches_tracked`` (0); None when not ``enabled``."""
    factory = {"device": device, "dtype": dtype}
    module.register_buffer("running_mean", torch.zeros(num_features, **factory) if enabled else None)
    module.register_buffer("running_var", torch.ones(num_features, **factory) if enabled else None)
    module.register_buffer("num_batches_tracked",
                           torch.tensor(0, dtype=torch.long, device=device) if enabled else None)


def reset_affine(module: nn.Module, weight_value: float = 1.0) -> None:
    """In place: ``weight`` back to ``weight_value``, ``bias`` back to 0 (each skipped when None)."""
    with torch.no_grad():
        if module.weight is not None:
            module.weight.fill_(weight_value)
        if module.bias is not None:
            module.bias.zero_()


def reset_running_stats(module: nn.Module) -> None:
    """In place: ``running_mean`` 0, ``running_var`` 1, ``num_batches_tracked`` 0 (skipped when not tracking)."""
    if module.running_mean is not None:
        module.running_mean.zero_()
        module.running_var.fill_(1)
        module.num_batches_tracked.zero_()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the statistics are computed in: float32 for float16/bfloat16 input, as PyTorch's
    norm kernels accumulate, otherwise the input's own dtype. Outputs are cast back to ``x.dtype``."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def per_channel(t: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C, 1, 1), so it broadcasts over an (N, C, H, W) tensor."""
    return t.view(1, -1, 1, 1)


def check_channel_vectors(layer: str, channels: int, **vectors: torch.Tensor | None) -> None:
    """Raise ValueError unless every vector given (None is skipped) has shape (channels,)."""
    for name, t in vectors.items():
        if t is not None and t.shape != (channels,):
            raise ValueError(f"{layer}: {name} has shape {tuple(t.shape)} but the input has {channels} channels; "
                             f"expected shape ({channels},).")


@torch.no_grad()  # buffers are state, not part of the graph
def update_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor,
                         unbiased_var: torch.Tensor, momentum: float) -> None:
    """In place: ``running ← (1 - momentum)·running + momentum·batch`` for the mean and the unbiased variance, all (C,)."""
    running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
    running_var.mul_(1 - momentum).add_(momentum * unbiased_var.to(running_var.dtype))


def scale_and_shift(x_hat: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """``x_hat · weight_c + bias_c`` on (N, C, H, W), each of ``weight`` and ``bias`` (C,) or None (skipped)."""
    if weight is not None:
        x_hat = x_hat * per_channel(weight)
    if bias is not None:
        x_hat = x_hat + per_channel(bias)
    return x_hat
