"""Course-wide settings: quick mode, seeding, the device, and where data lives.

Everything here reads the environment when it is called, not at import, so a
test or a notebook can change ``COURSE_QUICK`` or ``COURSE_DATA_DIR`` and see
the effect at once.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

QUICK_ENV = "COURSE_QUICK"
DATA_ENV = "COURSE_DATA_DIR"
# The package lives in <repo>/course_utils; in a checkout, data sits beside it.
REPO_ROOT = Path(__file__).resolve().parent.parent


def quick_mode() -> bool:
    """True when ``COURSE_QUICK`` is set to 1/true/yes: smaller data, fewer epochs."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(quick: T, full: T) -> T:
    """Return ``quick`` in quick mode and ``full`` otherwise (sizes, epochs, seeds)."""
    return quick if quick_mode() else full


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators
    return seed


def get_device(prefer: str | None = None) -> torch.device:
    """The best device available: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (for example ``"cpu"``) overrides the choice; so does the
    environment variable ``COURSE_DEVICE``.
    """
    choice = prefer or os.environ.get("COURSE_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def data_dir() -> Path:
    """Where datasets and checkpoints are kept.

    ``COURSE_DATA_DIR`` when set; else ``data/`` of the course checkout; else
    (the package installed on its own, as on Colab) ``~/.cache/normalization-course``.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    if (REPO_ROOT / "notebooks").is_dir():
        return REPO_ROOT / "data"
    return Path.home() / ".cache" / "normalization-course"


def checkpoint_dir() -> Path:
    """Where the course keeps the models it trains itself (git-ignored)."""
    return data_dir() / "checkpoints"


def photos_dir() -> Path:
    """The small real photographs the course ships (sources in data/README.md).

    They live in the checkout's ``data/photos``; on Colab the setup cell clones
    the repository, so the same path exists there.
    """
    return REPO_ROOT / "data" / "photos"
