"""A stand-in for torchvision's ImageNet ResNet-18 file, so that tests take the course's ImageNet code path.

Online, ``cu.load_pretrained_resnet18()`` ("auto") returns torchvision's ImageNet ResNet-18 (as on
Colab); offline, as in CI, it returns the course's own. A TORCH_HOME whose hub cache holds a file
where torchvision's checkpoint goes makes "auto" take the ImageNet path (architecture, 1000-class
head, ImageNet contract) with no network. The file is a stand-in: the course checkpoint's convolution
and BN weights with a seeded 1000-class head, not ImageNet weights, so no assertion about ImageNet
accuracy can be tested with it, and the notebooks make none.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from course_utils import models

# what a notebook prints when it loads the "auto" source and gets torchvision's weights
IMAGENET_SOURCE_LINE = "Pretrained source: torchvision"


def make_torch_home(folder: Path) -> Path:
    """Write the stand-in under ``folder/hub/checkpoints`` and return ``folder`` (a TORCH_HOME)."""
    model, _ = models.load_course_resnet18(quick=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    g = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(1000, 512, generator=g) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    checkpoints = folder / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(state, checkpoints / os.path.basename(models.IMAGENET_WEIGHTS.url))
    return folder


def loads_auto(source: str) -> bool:
    """Whether a notebook's code loads the "auto" pretrained source (and so takes the ImageNet path online)."""
    return "load_pretrained_resnet18()" in source
