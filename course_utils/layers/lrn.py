"""Local response normalization (AlexNet, 2012), in the convention of ``torch.nn.LocalResponseNorm``.

Each activation is divided by a power of the energy of its n neighbouring
channels at the same position (a form of lateral inhibition):

    b[n,c,...] = a[n,c,...] · (k + alpha/n · Σ_{c' = c - n//2}^{c + (n-1)//2} a[n,c',...]²)^(-beta)

PyTorch's convention (checked against ``torch.nn.functional.local_response_norm``):

* the sum is divided by n, always, also at the borders (it is an average pool);
* channels beyond the first and last are zero padding;
* defaults alpha = 1e-4, beta = 0.75, k = 1.

The AlexNet paper writes the same formula with no /n and k = 2 (n = 5,
alpha = 1e-4, beta = 0.75; see BVLC/caffe issue 1453 on the differing
conventions). To reproduce the paper in PyTorch, pass ``alpha = n · alpha_paper`` and ``k = 2``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._input import as_size, expect_min_rank


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """Functional LRN of ``x`` (N, C, *) across channels; same arguments as PyTorch's.

    Returns a tensor shaped like ``x``, in its dtype.
    """
    expect_min_rank(x, 3, "local_response_norm", "(N, C, *); add a batch or spatial dimension")
    size = as_size(size, "local_response_norm", "size (the number of neighbouring channels n)")
    if x.shape[1] == 0:  # no channels, no window to slide (and unfold would refuse)
        return x * 1.0
    squares = x.pow(2).movedim(1, -1)                        # (N, *, C): channels last for padding
    # Window of channel c: c - size//2 ... c + (size-1)//2, zeros beyond the edges.
    padded = F.pad(squares, (size // 2, (size - 1) // 2))    # (N, *, C + size - 1)
    window_sum = padded.unfold(-1, size, 1).sum(dim=-1)      # (N, *, C)
    energy = window_sum.movedim(-1, 1)                       # (N, C, *)
    return x / (k + alpha / size * energy).pow(beta)


class LocalResponseNorm(nn.Module):
    """LRN across ``size`` neighbouring channels; a twin of ``torch.nn.LocalResponseNorm``.

    Formula: ``b_c = a_c · (k + alpha/size · Σ_{window(c)} a²)^(-beta)``, zero-padded window.

    Shapes: input (N, C, *) -> same shape and dtype. No parameters, no statistics,
    so, like PyTorch's, no ``reset_parameters``. Deliberate difference: float16 and
    bfloat16 work on the CPU too (PyTorch's CPU kernel raises NotImplementedError).
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        self.size = as_size(size, "LocalResponseNorm", "size (the number of neighbouring channels n)")
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
