"""Notebooks read true with either pretrained source.

Online, ``cu.load_pretrained_resnet18()`` ("auto") returns torchvision's ImageNet ResNet-18; offline
(as in CI) it returns the course's own. The full-mode pass and the graded student versions take the
course's path. The quick suite grades every lesson's solution on Colab's versions with the ImageNet stand-in
of tests/imagenet_stand_in.py in torch's hub cache (tests/test_notebooks.py), as a Colab student's
online kernel would find torchvision's file. Here: the stand-in does make "auto" take the ImageNet
path, some notebooks do load "auto", and the lightest of them, run on Colab's versions, says it
took that path.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import course_utils as cu
from imagenet_stand_in import IMAGENET_SOURCE_LINE, loads_auto, make_torch_home
from notebook_times import lightest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"


def test_the_stand_in_takes_the_imagenet_code_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(make_torch_home(tmp_path)))
    monkeypatch.delenv("COURSE_PRETRAINED", raising=False)
    model, contract = cu.load_pretrained_resnet18(verbose=False)
    assert contract.source.startswith("torchvision") and len(contract.categories) == 1000
    assert model.fc.out_features == 1000


def test_some_notebooks_load_the_auto_source() -> None:
    auto = [p.name for p in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
            if any(loads_auto(c.source) for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")]
    assert auto, "no notebook loads load_pretrained_resnet18() any more: the ImageNet path is untested"



@pytest.mark.notebooks
def test_the_lightest_auto_notebook_takes_the_imagenet_path_on_colab_versions(tmp_path: Path, monkeypatch) -> None:
    """What a Colab student gets: Colab's Python and versions (COURSE_COLAB_PYTHON, set by make test;
    this Python elsewhere), online, so "auto" is torchvision's ImageNet model. The other notebooks
    loading "auto" take the same path when tests/test_notebooks.py grades their solutions."""
    auto = [p for p in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
            if any(loads_auto(c.source) for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")]
    path = lightest(auto)
    python = os.environ.get("COURSE_COLAB_PYTHON") or sys.executable
    kernels = tmp_path / "jupyter" / "kernels" / "under-test"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "under test", "language": "python"}))
    for key, value in {"JUPYTER_PATH": str(tmp_path / "jupyter"), "COURSE_QUICK": "1", "PYTHONHASHSEED": "0",
                       "MPLBACKEND": "agg", "TORCH_HOME": str(make_torch_home(tmp_path / "torch_home")),
                       "PYTHONPATH": str(ROOT)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("COURSE_PRETRAINED", raising=False)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('python', sys.executable)"))
    NotebookClient(nb, timeout=900, kernel_name="under-test", allow_errors=True,
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    errors = [f"{o.ename}: {o.evalue}"[:400] for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.output_type == "stream")
    assert not errors, f"{path.name} fails with the ImageNet source:\n" + "\n".join(errors)
    assert IMAGENET_SOURCE_LINE in text, f"{path.name} did not take the ImageNet path"
    assert f"python {python}" in text
