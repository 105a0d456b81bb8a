"""The batch-size experiment of notebook 08: fine-tuning accuracy against batch size, per norm layer.

Each point of the grid is one run of the lab (:func:`~course_utils.lab.run_lab`): the course's
pretrained ResNet-18 fine-tuned on the target domain with one kind of norm layer, one batch size
and one seed. Every point takes the same number of optimizer steps (``steps``), on
``steps * batch_size`` images seen once: the kinds are compared at equal updates, and a larger
batch buys more images, as it does for someone with a fixed time budget.

The notebook runs a small grid live; ``experiments/batch_size_grid.py`` runs the complete one
with the same function and writes a CSV that records where and how it was made
(:func:`grid_provenance`, :func:`write_grid_csv`), which the notebook plots when it is there.
"""
from __future__ import annotations

import csv
import datetime as _dt
import itertools
import math
import platform
import sys
from pathlib import Path
from typing import Callable

import torch

from .config import get_device, quick_mode
from .lab import LabConfig, run_lab

# label -> (LabConfig.norm_layer, LabConfig.bn_mode)
GRID_KINDS: dict[str, tuple[str, str]] = {
    "BN, train mode": ("batchnorm", "train"),
    "BN, frozen statistics": ("batchnorm", "frozen_stats"),
    "FrozenBatchNorm2d": ("frozen", "train"),
    "GroupNorm(32, C)": ("groupnorm", "train"),
    "GroupNorm(1, C)": ("layernorm", "train"),
}
BATCH_SIZES = (2, 4, 8, 16, 32, 64)
GRID_COLUMNS = ("kind", "norm_layer", "bn_mode", "batch_size", "seed", "steps", "images", "lr", "val_acc",
                "val_loss", "seconds")


def grid_config(kind: str, batch_size: int, seed: int, *, steps: int, n_val: int, lr: float = 1e-4,
                pretrained: str = "course") -> LabConfig:
    """One grid point as a lab run: full fine-tuning on the target, ``steps`` Adam steps (one epoch)."""
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; choose from {tuple(GRID_KINDS)}")
    norm_layer, bn_mode = GRID_KINDS[kind]
    return LabConfig(dataset="target", norm_layer=norm_layer, bn_mode=bn_mode, freezing="full", lr=lr, epochs=1,
                     batch_size=batch_size, n_train=steps * batch_size, n_val=n_val, optimizer="adam",
                     pretrained=pretrained, seed=seed, name=f"{kind}, batch {batch_size}", log_path=None)


def run_batch_size_grid(kinds=tuple(GRID_KINDS), batch_sizes=BATCH_SIZES, seeds=(0, 1, 2), *, steps: int = 40,
                        n_val: int = 1000, lr: float = 1e-4, pretrained: str = "course",
                        device: torch.device | None = None,
                        on_run: Callable[[dict], None] | None = None) -> list[dict]:
    """Fine-tune once per (kind, batch size, seed); one row per run with the columns of :data:`GRID_COLUMNS`."""
    rows = []
    device = device or get_device()
    for kind, batch_size, seed in itertools.product(kinds, batch_sizes, seeds):
        config = grid_config(kind, batch_size, seed, steps=steps, n_val=n_val, lr=lr, pretrained=pretrained)
        result = run_lab(config, progress=False, keep_weights=False, device=device, evaluate_during=False)
        m = result.metrics
        row = {"kind": kind, "norm_layer": config.norm_layer, "bn_mode": config.bn_mode, "batch_size": batch_size,
               "seed": seed, "steps": steps, "images": config.n_train, "lr": lr, "val_acc": round(m["val_acc"], 5),
               "val_loss": round(m["val_loss"], 5), "seconds": round(m["seconds"], 2)}
        rows.append(row)
        if on_run is not None:
            on_run(row)
    return rows


def grid_summary(rows: list[dict], metric: str = "val_acc") -> dict[tuple[str, int], tuple[float, float, int]]:
    """(kind, batch size) -> (mean, sample standard deviation, number of seeds) of ``metric``."""
    groups: dict[tuple[str, int], list[float]] = {}
    for row in rows:
        groups.setdefault((row["kind"], int(row["batch_size"])), []).append(float(row[metric]))
    summary = {}
    for key, values in groups.items():
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        summary[key] = (mean, std, len(values))
    return summary


def grid_provenance(command: str | None = None, device: torch.device | None = None) -> dict[str, str]:
    """Where a result was made: date, command, mode, device, threads and versions."""
    import torchvision
    device = device or get_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "mode": "quick" if quick_mode() else "full",
            "device": f"{device.type} ({name})", "threads": str(torch.get_num_threads()),
            "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}


def write_grid_csv(path: str | Path, rows: list[dict], info: dict[str, str]) -> Path:
    """Write ``rows`` as CSV, preceded by one ``# key: value`` line per provenance entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        for key, value in info.items():
            f.write(f"# {key}: {value}\n")
        writer = csv.DictWriter(f, fieldnames=GRID_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in GRID_COLUMNS} for row in rows)
    return path


def read_grid_csv(path: str | Path) -> tuple[list[dict], dict[str, str]]:
    """The rows and the provenance of a CSV written by :func:`write_grid_csv`; numbers come back as numbers."""
    lines = Path(path).read_text().splitlines()
    info = dict(line[2:].split(": ", 1) for line in lines if line.startswith("# ") and ": " in line)
    reader = csv.DictReader(line for line in lines if not line.startswith("#"))
    missing = set(GRID_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path} is not a batch-size grid: columns {sorted(missing)} are missing; "
                         "write it with experiments/batch_size_grid.py")
    rows = []
    for row in reader:
        for key in ("batch_size", "seed", "steps", "images"):
            row[key] = int(row[key])
        for key in ("lr", "val_acc", "val_loss", "seconds"):
            row[key] = float(row[key])
        rows.append(row)
    return rows, info


def plot_batch_size_grid(ax, rows: list[dict], *, metric: str = "val_acc", linestyle: str = "-",
                         suffix: str = "", colors: dict[str, str] | None = None):
    """Mean ``metric`` against batch size (log scale), one line per kind, error bars one standard deviation."""
    summary = grid_summary(rows, metric)
    kinds = [k for k in GRID_KINDS if any(key[0] == k for key in summary)]
    for i, kind in enumerate(kinds):
        points = sorted((bs, mean, std) for (k, bs), (mean, std, _) in summary.items() if k == kind)
        sizes, means, stds = zip(*points)
        color = (colors or {}).get(kind, f"C{i}")
        ax.errorbar(sizes, means, yerr=stds, marker="o", ms=4, capsize=3, linestyle=linestyle, color=color,
                    label=kind + suffix)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="fine-tuning batch size", ylabel=metric.replace("_", " "))
    return ax
