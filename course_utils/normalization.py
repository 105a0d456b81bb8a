"""Input normalization: per-channel dataset statistics (and, from issue 3, the rest).

``channel_stats`` computes the mean and standard deviation of every channel in
one streaming pass, merging per-batch results with Chan et al.'s parallel
formula in float64, so it is exact for data far from zero and never holds the
dataset in floating point at once.
"""
from __future__ import annotations

from typing import Iterable

import torch


def _as_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float64 on [0, 1]; float input is taken as it is."""
    if batch.dtype == torch.uint8:
        return batch.double() / 255.0
    if not batch.is_floating_point():
        raise TypeError(f"expected uint8 pixels or a float tensor, got {batch.dtype}")
    return batch.double()


def channel_stats(data: torch.Tensor | Iterable, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of images (N, C, H, W), in one streaming pass.

    ``data`` is a tensor or an iterable of batches (tensors, or ``(images, labels)``
    pairs as loaders yield). uint8 is read as pixels / 255. Returns two float64
    tensors of shape (C,).

    Each batch gives a count n_b, mean m_b and sum of squared deviations M2_b per
    channel; two partial results merge as (Chan et al., 1979)
    delta = m_b - m_a;  m = m_a + delta * n_b / n;  M2 = M2_a + M2_b + delta^2 * n_a * n_b / n.
    """
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(data.shape)}")
        images = data
        data = (images[i:i + batch_size] for i in range(0, images.shape[0], batch_size))
    count, mean, m2 = 0, None, None
    for batch in data:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if batch.ndim != 4:
            raise ValueError(f"expected batches of shape (N, C, H, W), got {tuple(batch.shape)}")
        x = _as_unit_float(batch).transpose(0, 1).reshape(batch.shape[1], -1)  # (C, N*H*W)
        n_b = x.shape[1]
        mean_b = x.mean(dim=1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(dim=1)
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        n = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / n)
        m2 = m2 + m2_b + delta ** 2 * (count * n_b / n)
        count = n
    if mean is None:
        raise ValueError("channel_stats got no data")
    return mean, (m2 / count).sqrt()
