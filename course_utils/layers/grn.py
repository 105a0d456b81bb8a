"""Global response normalization (ConvNeXt V2, Woo et al., 2023), as in timm's ``GlobalResponseNorm``.

Per sample, each channel's energy is its L2 norm over the spatial positions;
dividing by the mean energy over channels gives each channel's relative
importance, which then rescales the channel (feature competition):

    G[n,c] = ||x[n,c,:,:]||_2                     (over H, W)
    N[n,c] = G[n,c] / (mean_c' G[n,c'] + eps)
    y = gamma · (x · N) + beta + x               gamma, beta: (C,), initialised to 0

Because gamma = beta = 0 at initialisation, a fresh GRN is the identity;
training moves it away. No running statistics; each sample on its own.
Source: facebookresearch/ConvNeXt-V2 models/utils.py (channels last) and
timm/layers/grn.py, which handles both layouts; in timm 1.0 the parameters are
``weight`` (gamma) and ``bias`` (beta) of shape (C,), and ``channels_last=True`` by default.
"""
from __future__ import annotations

import torch
from torch import nn

from ._input import as_size, expect_channels, expect_rank
from ._params import reset_affine


def global_response_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6,
                         channels_last: bool = True) -> torch.Tensor:
    """Functional GRN. ``x``: (N, H, W, C) if ``channels_last`` else (N, C, H, W); ``weight``, ``bias``: (C,)."""
    layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
    expect_rank(x, 4, "global_response_norm", layout)
    spatial, channel = ((1, 2), -1) if channels_last else ((2, 3), 1)
    other = ("for channels-first input (N, C, H, W) pass channels_last=False" if channels_last
             else "for channels-last input (N, H, W, C) pass channels_last=True")
    expect_channels(x, weight.numel(), "global_response_norm", dim=channel, hint=other)
    view = (1, 1, 1, -1) if channels_last else (1, -1, 1, 1)
    # Not x.pow(2).sum().sqrt(): d sqrt(s)/ds is infinite at s = 0, so a channel that is zero
    # everywhere (common after ReLU) gets 0 · inf = NaN gradients. vector_norm defines it as 0 there.
    energy = torch.linalg.vector_norm(x, dim=spatial, keepdim=True)     # G: (N, 1, 1, C) or (N, C, 1, 1)
    relative = energy / (energy.mean(dim=channel, keepdim=True) + eps)   # N: same shape
    return weight.view(view) * (x * relative) + bias.view(view) + x


class GlobalResponseNorm(nn.Module):
    """GRN; a twin of ``timm.layers.GlobalResponseNorm`` (same arguments and parameter names).

    Formula: ``y = weight · (x · G / (mean_c G + eps)) + bias + x`` with ``G`` the
    per-channel L2 norm over H, W.

    Shapes: input and output (N, H, W, C) when ``channels_last`` (the default,
    as in ConvNeXt V2's MLP block), else (N, C, H, W); ``weight``, ``bias``: (C,), init 0.
    dtypes follow PyTorch's promotion, as timm's do: bfloat16 input with float32
    parameters gives float32 output; all bfloat16 gives bfloat16.
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_last: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        dim = as_size(dim, "GlobalResponseNorm", "dim (the channel count C)", minimum=0)
        self.dim = dim
        self.eps = eps
        self.channels_last = channels_last
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.zeros(dim, **factory))  # gamma
        self.bias = nn.Parameter(torch.zeros(dim, **factory))    # beta

    def reset_parameters(self) -> None:
        """``weight`` and ``bias`` back to 0: the identity map."""
        reset_affine(self, weight_value=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_response_norm(x, self.weight, self.bias, self.eps, self.channels_last)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, channels_last={self.channels_last}"
