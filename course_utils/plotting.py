"""The course's figure style and plot helpers.

Every helper takes an ``ax``, draws on it, labels its axes and returns it; the
caller sets a title that states the finding.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import torch

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
CHANNEL_COLOURS = ("#d62728", "#2ca02c", "#1f77b4")  # R, G, B


def set_style() -> None:
    """One look for every figure of the course."""
    mpl.rcParams.update({
        "figure.figsize": (7.0, 3.6),
        "figure.dpi": 100,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 11,
        "axes.titleweight": "bold",
        "axes.labelsize": 10,
        "legend.frameon": False,
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
    })


def channel_histograms(ax: plt.Axes, images: torch.Tensor, *, bins: int = 64,
                       labels: Sequence[str] = ("R", "G", "B"), xlabel: str = "value") -> plt.Axes:
    """Histogram of each channel of ``images`` (N, C, H, W) or (C, H, W), overlaid."""
    x = images if images.ndim == 4 else images.unsqueeze(0)
    x = x.detach().float().cpu()
    for c in range(x.shape[1]):
        colour = CHANNEL_COLOURS[c] if x.shape[1] == 3 else PALETTE[c % len(PALETTE)]
        name = labels[c] if c < len(labels) else f"channel {c}"
        ax.hist(x[:, c].flatten().numpy(), bins=bins, histtype="step", color=colour, label=name, density=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    return ax


def curves(ax: plt.Axes, series: Mapping[str, Sequence[float]], *, xlabel: str = "epoch",
           ylabel: str = "accuracy") -> plt.Axes:
    """Line per named series (for example training curves of several runs)."""
    for name, ys in series.items():
        ax.plot(range(1, len(ys) + 1), list(ys), marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax


def bars(ax: plt.Axes, values: Mapping[str, float], *, ylabel: str = "accuracy", highlight: str | None = None,
         fmt: str = "{:.1%}", errors: Mapping[str, float] | None = None) -> plt.Axes:
    """A bar per named value, each labelled with its number; ``highlight`` one bar in another colour."""
    names = list(values)
    colours = [PALETTE[1] if n == highlight else PALETTE[0] for n in names]
    yerr = [errors.get(n, 0.0) for n in names] if errors else None
    rects = ax.bar(names, [values[n] for n in names], color=colours, yerr=yerr, capsize=3)
    ax.bar_label(rects, labels=[fmt.format(values[n]) for n in names], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=20)
    return ax


def show_images(axes: Sequence[plt.Axes], images: torch.Tensor, titles: Sequence[str] | None = None) -> Sequence[plt.Axes]:
    """Show uint8 or [0, 1] float images (N, C, H, W) on a row of axes."""
    for i, ax in enumerate(axes):
        img = images[i].detach().cpu()
        img = img.float() / 255 if img.dtype == torch.uint8 else img.float().clamp(0, 1)
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if img.shape[0] == 1 else None)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[i], fontsize=9, fontweight="normal")
    return axes
