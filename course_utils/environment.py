"""What this machine offers the course: versions, device, mode, data and weight sources.

Nothing here downloads or trains: each function only looks.
"""
from __future__ import annotations

import importlib
import platform
from pathlib import Path

import torch

from .config import data_dir, get_device, in_colab, quick_mode

PACKAGES = ("torch", "torchvision", "timm", "numpy", "matplotlib", "ipywidgets", "tqdm")


def versions() -> dict[str, str]:
    """Python's and each course dependency's version ("missing" when not installed)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = getattr(importlib.import_module(name), "__version__", "unknown")
        except ImportError:
            found[name] = "missing"
    return found


def device_report() -> dict[str, str]:
    """The device the course will use, and what it is."""
    device = get_device()
    detail = platform.processor() or platform.machine()
    if device.type == "cuda":
        detail = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        detail = f"{detail}, {torch.get_num_threads()} threads"
    return {"device": str(device), "detail": detail}


def data_sources() -> dict[str, str]:
    """For each registered dataset, the first source that would provide it (without loading it)."""
    from .data import DATASETS

    root = data_dir()
    found = {}
    for name, spec in DATASETS.items():
        if (root / spec.folder).exists():
            found[name] = f"local copy in {root / spec.folder}"
            continue
        system = next((d for d in spec.system_dirs if spec.system_files
                       and all((Path(d) / f).exists() for f in spec.system_files)), None)
        found[name] = f"system copy in {system}" if system else "torchvision download (needs internet)"
    return found


def weight_sources() -> dict[str, str]:
    """Which pretrained ResNet-18 sources are at hand right now."""
    from .models import course_checkpoint_paths, imagenet_weights_cached

    weights, _ = course_checkpoint_paths()
    return {
        "imagenet": "cached" if imagenet_weights_cached() else "not cached (downloaded on first use when online)",
        "course": f"cached in {weights}" if weights.exists() else "not cached (pretrained on first use)",
    }


def report() -> dict[str, dict[str, str]]:
    """Everything notebook 00 shows, as nested dictionaries."""
    return {
        "versions": versions(),
        "device": device_report(),
        "mode": {"quick": str(quick_mode()), "colab": str(in_colab()), "data_dir": str(data_dir())},
        "datasets": data_sources(),
        "pretrained": weight_sources(),
    }


def print_report(rep: dict[str, dict[str, str]] | None = None) -> None:
    """Print :func:`report` as aligned sections."""
    rep = rep or report()
    for section, rows in rep.items():
        print(section)
        width = max(len(k) for k in rows)
        for key, value in rows.items():
            print(f"  {key:<{width}}  {value}")
