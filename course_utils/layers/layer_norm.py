"""Layer normalization: each sample standardized over its trailing dimensions (``torch.nn.LayerNorm``).

For ``normalized_shape = (D1, ..., Dk)`` the statistics are taken over the
last k dimensions of the input, separately for every position in the leading ones:

    mean = 1/m · Σ x          var = 1/m · Σ (x - mean)²          m = D1·…·Dk  (biased)
    y = (x - mean) / sqrt(var + eps) · weight + bias      weight, bias: shape normalized_shape

So ``LayerNorm((C, H, W))`` on (N, C, H, W) uses one mean per sample (the
"LN" of the Group Norm paper). ``LayerNorm(C)`` on (N, C, H, W) raises unless
W == C, because normalized_shape must match the trailing dimension(s); when
W happens to equal C it runs and normalizes over W alone, per (n, c, h) row,
which is almost never what was meant.
The affine parameters are elementwise, of shape ``normalized_shape``, not scalars.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._input import as_size, expect_min_rank
from ._params import compute_dtype, register_affine, reset_affine


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    """An int (numpy integers too) or a sequence of them, as a tuple of plain ints."""
    if hasattr(normalized_shape, "__index__"):  # one size
        return (as_size(normalized_shape, "LayerNorm", "normalized_shape", minimum=0),)
    return tuple(as_size(d, "LayerNorm", "each entry of normalized_shape", minimum=0) for d in normalized_shape)


def layer_norm(
    x: torch.Tensor,
    normalized_shape: int | Sequence[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Functional layer norm; same arguments as ``torch.nn.functional.layer_norm``.

    ``x``: (*, D1, ..., Dk) with (D1, ..., Dk) = ``normalized_shape``; output has the shape
    and dtype of ``x`` (float16/bfloat16 computed in float32).
    """
    layer = "layer_norm"
    shape = _as_shape(normalized_shape)
    expect_min_rank(x, len(shape), layer, f"ending in normalized_shape {shape}")
    if tuple(x.shape[-len(shape):]) != shape:
        raise ValueError(
            f"{layer}: normalized_shape {shape} must equal the input's last {len(shape)} dimension(s), but the "
            f"input has shape {tuple(x.shape)}. For (N, C, H, W) images use normalized_shape=(C, H, W) = "
            f"{tuple(x.shape[1:])}; the statistics are always taken over the trailing dimensions.")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{layer}: {name} has shape {tuple(t.shape)}; expected normalized_shape {shape}.")
    dims = tuple(range(-len(shape), 0))                     # the trailing k dimensions
    xc = x.to(compute_dtype(x))
    mean = xc.mean(dim=dims, keepdim=True)                  # (*, 1, ..., 1)
    centered = xc - mean
    var = centered.pow(2).mean(dim=dims, keepdim=True)      # biased, two-pass
    y = centered * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight                                      # broadcasts over the leading dims
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)


class LayerNorm(nn.Module):
    """Layer norm over the trailing ``normalized_shape`` dimensions; a twin of ``torch.nn.LayerNorm``.

    Formula: ``y = (x - mean) / sqrt(var + eps) · weight + bias``, mean and
    biased variance over the last ``len(normalized_shape)`` dimensions.

    Shapes: input (*, *normalized_shape) -> same shape; ``weight`` (init 1) and
    ``bias`` (init 0) have shape ``normalized_shape``. For images pass
    ``(C, H, W)`` to normalize each sample over everything it has.
    Output dtype follows the input.

    Args:
        normalized_shape: int or tuple, the trailing dimensions to normalize over.
        eps: added to the variance before the square root.
        elementwise_affine: learn ``weight`` (and ``bias`` if ``bias=True``).
        bias: learn an additive ``bias`` as well.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        register_affine(self, self.normalized_shape, elementwise_affine, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """``weight`` back to 1, ``bias`` to 0."""
        reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
