"""Input checks shared by the reference layers: fail early, say what was expected and how to fix it."""
from __future__ import annotations

import operator

import torch


def expect_tensor(x, layer: str) -> None:
    """Raise TypeError unless ``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer}: expected a torch.Tensor, got {type(x).__name__}. "
                        f"Convert with torch.as_tensor(x, dtype=torch.float32).")
    if not x.is_floating_point():
        raise TypeError(f"{layer}: expected a floating-point tensor, got dtype {x.dtype}. "
                        f"Images stored as uint8 (0-255) must be converted first, e.g. x.float() / 255.")


def expect_rank(x: torch.Tensor, rank: int, layer: str, layout: str) -> None:
    """Raise ValueError unless ``x`` has exactly ``rank`` dimensions (``layout`` names them)."""
    expect_tensor(x, layer)
    if x.dim() != rank:
        hint = (" For a single image, add the batch dimension with x.unsqueeze(0)."
                if x.dim() == rank - 1 else "")
        raise ValueError(f"{layer}: expected a {rank}-D input {layout}, got {x.dim()}-D input of shape "
                         f"{tuple(x.shape)}.{hint}")


def expect_min_rank(x: torch.Tensor, rank: int, layer: str, layout: str) -> None:
    """Raise ValueError unless ``x`` has at least ``rank`` dimensions."""
    expect_tensor(x, layer)
    if x.dim() < rank:
        raise ValueError(f"{layer}: expected an input of at least {rank} dimensions {layout}, got "
                         f"{x.dim()}-D input of shape {tuple(x.shape)}.")


def expect_channels(x: torch.Tensor, expected: int, layer: str, dim: int = 1, hint: str = "") -> None:
    """Raise ValueError unless ``x.shape[dim]`` (the channel axis) equals ``expected``."""
    got = x.shape[dim]
    if got != expected:
        hint = hint or "check the layout (channels first is (N, C, H, W))"
        raise ValueError(f"{layer}: the input has {got} channels (dimension {dim % x.dim()} of shape "
                         f"{tuple(x.shape)}) but the layer was built for {expected}. Build the layer with "
                         f"{got} channels, or {hint}.")


def as_size(value, layer: str, name: str, minimum: int = 1) -> int:
    """``value`` as a plain int (numpy and torch integers accepted, as PyTorch's layers accept them).

    Raises ValueError, naming ``name``, for non-integers and values below ``minimum``.
    """
    try:
        size = operator.index(value)  # int, numpy.int64, a 0-d integer tensor; not 3.0, not "3"
    except TypeError:
        raise ValueError(f"{layer}: {name} must be an integer, got {value!r} "
                         f"({type(value).__name__}).") from None
    if size < minimum:
        raise ValueError(f"{layer}: {name} must be at least {minimum}, got {size}.")
    return size
