"""Notebooks read true with either pretrained source.

Online, ``cu.load_pretrained_resnet18()`` ("auto") returns torchvision's ImageNet
ResNet-18; offline (as in CI) it returns the course's own. The notebook runs in
test_notebooks.py take the course's path. Here the notebooks that load "auto" run
again with a file in torch's hub cache where torchvision's ImageNet checkpoint
goes, so the ImageNet code path (architecture, 1000-class head, ImageNet contract)
is the one taken. The file is a stand-in: the course checkpoint's convolution and
BN weights with a seeded 1000-class head, not ImageNet weights, so no assertion
about ImageNet accuracy can be tested here, and the notebooks make none.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

import course_utils as cu
from course_utils import models

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"


def _loads_auto(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any("load_pretrained_resnet18()" in c.source for c in nb.cells if c.cell_type == "code")


AUTO_NOTEBOOKS = [p for p in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")) if _loads_auto(p)]


@pytest.fixture(scope="module")
def imagenet_stand_in(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds a stand-in for torchvision's ImageNet ResNet-18 file."""
    torch_home = tmp_path_factory.mktemp("torch_home")
    model, _ = models.load_course_resnet18(quick=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    g = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(1000, 512, generator=g) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / os.path.basename(models.IMAGENET_WEIGHTS.url))
    return torch_home


def test_the_stand_in_takes_the_imagenet_code_path(imagenet_stand_in: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(imagenet_stand_in))
    monkeypatch.delenv("COURSE_PRETRAINED", raising=False)
    model, contract = cu.load_pretrained_resnet18(verbose=False)
    assert contract.source.startswith("torchvision") and len(contract.categories) == 1000
    assert model.fc.out_features == 1000


def test_some_notebooks_load_the_auto_source() -> None:
    assert AUTO_NOTEBOOKS, "no notebook loads load_pretrained_resnet18() any more: drop this file"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", AUTO_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_the_imagenet_source(path: Path, imagenet_stand_in: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, COURSE_QUICK="1", PYTHONHASHSEED="0", MPLBACKEND="agg", TORCH_HOME=str(imagenet_stand_in))
    env.pop("COURSE_PRETRAINED", None)
    old_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    errors, text = [], []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                errors.append(f"cell {i}: {out.ename}: {out.evalue}"[:400])
            elif out.output_type == "stream":
                text.append(out.text)
    assert not errors, f"{path.name} fails with the ImageNet source:\n" + "\n".join(errors)
    assert "Pretrained source: torchvision" in "".join(text), f"{path.name} did not take the ImageNet path"
