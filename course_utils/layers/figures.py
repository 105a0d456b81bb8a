"""The classic picture of which values share one mean and variance (after Wu & He, Group Norm, 2018, Fig. 2).

An activation tensor (N, C, H, W) is drawn as a cube: channels C across,
the spatial positions H·W up, the batch N going back. The shaded cells are the
values that one set of statistics is computed over; every spatial position
shares it, so the shading always spans the full height.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Polygon

KINDS = {
    "batch": "Batch norm", "layer": "Layer norm", "instance": "Instance norm", "group": "Group norm",
}
ALIASES = {"bn": "batch", "ln": "layer", "in": "instance", "gn": "group"}


def _shares_statistics(kind: str, n: int, c: int, channel: int, groups: int, channels: int) -> bool:
    """Is the (sample n, channel c) column in the set shaded for ``kind``? Sample 0 / ``channel`` is the example."""
    group_size = channels // groups
    if kind == "batch":      # one channel, every sample
        return c == channel
    if kind == "layer":      # one sample, every channel
        return n == 0
    if kind == "instance":   # one sample, one channel
        return n == 0 and c == channel
    return n == 0 and c // group_size == channel // group_size  # group: one sample, a group of channels


def plot_norm_axes(ax: plt.Axes, kind: str, *, samples: int = 5, channels: int = 6, spatial: int = 4,
                   groups: int = 3, channel: int = 2, colour: str = "#1f77b4") -> plt.Axes:
    """Draw the (N, C, H·W) cube on ``ax`` and shade the values that share statistics under ``kind``.

    ``kind``: "batch", "layer", "instance" or "group" (or "bn", "ln", "in", "gn").
    ``channel`` is the example channel for batch/instance norm (and picks the
    group for group norm); ``groups`` must divide ``channels``. Returns ``ax``.
    """
    kind = ALIASES.get(kind.lower(), kind.lower())
    if kind not in KINDS:
        raise ValueError(f"plot_norm_axes: unknown kind {kind!r}; use one of {sorted(KINDS)} or {sorted(ALIASES)}.")
    if channels % groups:
        raise ValueError(f"plot_norm_axes: groups={groups} must divide channels={channels}.")
    depth_x, depth_y = 0.45, 0.35  # one step back in N moves the drawing this far right and up

    def corner(c: float, h: float, n: float) -> tuple[float, float]:
        return c + n * depth_x, h + n * depth_y

    def cell(points, shaded: bool, light: float) -> None:
        face = colour if shaded else "white"
        ax.add_patch(Polygon([corner(*p) for p in points], closed=True, facecolor=face,
                             alpha=light if shaded else 1.0, edgecolor="0.3", linewidth=0.6))

    def member(n: int, c: int) -> bool:
        return _shares_statistics(kind, n, c, channel, groups, channels)

    # Back faces first would be hidden anyway; draw the three visible faces.
    for c in range(channels):                      # front face: sample 0, C across, H·W up
        for h in range(spatial):
            cell([(c, h, 0), (c + 1, h, 0), (c + 1, h + 1, 0), (c, h + 1, 0)], member(0, c), 0.85)
    for n in range(samples):                       # top face: C across, N back
        for c in range(channels):
            cell([(c, spatial, n), (c + 1, spatial, n), (c + 1, spatial, n + 1), (c, spatial, n + 1)],
                 member(n, c), 0.65)
    for n in range(samples):                       # right face: the last channel, H·W up, N back
        for h in range(spatial):
            cell([(channels, h, n), (channels, h, n + 1), (channels, h + 1, n + 1), (channels, h + 1, n)],
                 member(n, channels - 1), 0.45)

    ax.text(channels / 2, -0.6, "C (channels)", ha="center", va="top")
    ax.text(-0.4, spatial / 2, "H, W", ha="right", va="center", rotation=90)
    nx, ny = corner(channels, 0, samples / 2)
    ax.text(nx + 0.35, ny - 0.25, "N (batch)", ha="left", va="center", rotation=38)
    ax.set_xlim(-1.5, channels + samples * depth_x + 1.8)
    ax.set_ylim(-1.6, spatial + samples * depth_y + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(KINDS[kind])
    return ax
