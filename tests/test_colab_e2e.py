"""Colab, end to end, by simulation: the setup cell clones, installs and changes folder, then notebook 00 runs.

What is simulated, and how:
- Colab's kernel has ``google.colab`` imported when it starts: a stand-in module, imported by the
  kernel at start-up (``IPKernelApp.exec_lines``); the notebook itself is not changed for it.
- Colab's Python already has torch and torchvision (and, today, the light packages): a fresh virtual
  environment that sees this environment's packages through a ``.pth`` file, except ``course_utils``
  (which only the setup cell may bring) and ``tqdm`` (so that the "install what is missing" branch runs,
  with torch pinned).
- The repository address and ``/content`` are pointed at a local git repository holding this working
  tree and at a temporary folder: the two string literals are replaced in the setup cell, nothing else.
pip's own log (``PIP_LOG``) then proves what was installed, and that torch was not.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_utils import colab

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = ("tqdm", "course_utils", "__editable__")  # names in site-packages the fresh environment must not see


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


def _origin(tmp: Path) -> Path:
    """A git repository on branch main holding the working tree as it is (committed or not)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    origin = tmp / "origin"
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (origin / name).parent.mkdir(parents=True, exist_ok=True)
            (origin / name).write_bytes(src.read_bytes())
    _git("init", "-q", "-b", "main", cwd=origin)
    _git("-c", "user.name=test", "-c", "user.email=test@example.com", "add", "-A", cwd=origin)
    _git("-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "snapshot", cwd=origin)
    return origin


def _colab_python(tmp: Path) -> Path:
    """A fresh venv that sees this environment's packages (torch, torchvision, ...) but not course_utils or tqdm."""
    env_dir = tmp / "colab-env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    shared = tmp / "preinstalled"
    shared.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(HIDDEN) and not entry.name.endswith(".pth"):
            (shared / entry.name).symlink_to(entry)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "preinstalled.pth").write_text(f"{shared}\n")
    return python


@pytest.mark.notebooks
def test_setup_cell_then_notebook_00_on_a_simulated_colab(tmp_path: Path, monkeypatch) -> None:
    origin = _origin(tmp_path)
    python = _colab_python(tmp_path)
    check = subprocess.run([str(python), "-c", "import torch, torchvision, ipykernel\n"
                            "import importlib.util as u; assert u.find_spec('course_utils') is None\n"
                            "assert u.find_spec('tqdm') is None"], capture_output=True, text=True, cwd=tmp_path,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert check.returncode == 0, f"the simulated Colab environment is not as intended: {check.stderr[-1500:]}"

    fake = tmp_path / "fake-colab"  # google.colab stand-in; `google` stays a namespace package
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "colab" / "__init__.py").write_text('"""Stand-in for Colab\'s module (tests only)."""\n')
    kernels = tmp_path / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.exec_lines=['import google.colab']"],
        "display_name": "simulated Colab", "language": "python"}))

    content = tmp_path / "content" / "normalization-course"
    nb = nbformat.read(ROOT / "notebooks" / "00_setup.ipynb", as_version=4)
    setup = nb.cells[1]
    assert setup.source == colab.setup_cell_source()
    literal = f'"{colab.REPO_URL}", "{colab.COLAB_DIR}"'
    assert setup.source.count(literal) == 1, "the setup cell's address and folder are not where this test expects"
    setup.source = setup.source.replace(literal, f'"{origin.as_uri()}", "{content}"')
    nb.cells.append(nbformat.v4.new_code_cell(
        "import json, os, course_utils, torch\n"
        "print(json.dumps({'course_utils': course_utils.__file__, 'torch': torch.__file__, 'cwd': os.getcwd(),"
        " 'colab': cu.in_colab()}))"))

    pip_log = tmp_path / "pip.log"
    start_dir = tmp_path / "start"  # where Colab starts a kernel; not the course
    start_dir.mkdir()
    for key in ("PYTHONPATH", "VIRTUAL_ENV"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(fake))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PIP_LOG", str(pip_log))
    monkeypatch.setenv("COURSE_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "agg")
    # the course's data (Fashion-MNIST) from the system copy, as the clone has no data/ of its own
    NotebookClient(nb, timeout=600, kernel_name="colab", resources={"metadata": {"path": str(start_dir)}}).execute()

    assert (content / "course_utils" / "__init__.py").is_file(), "the setup cell did not clone the course"
    seen = json.loads(nb.cells[-1].outputs[0]["text"])
    assert Path(seen["course_utils"]).resolve().is_relative_to(content.resolve()), seen
    assert Path(seen["torch"]).resolve().is_relative_to(Path(sysconfig.get_paths()["purelib"]).resolve()), \
        f"torch is not the preinstalled one: {seen['torch']}"
    assert seen["cwd"] == str(content / "notebooks") and seen["colab"] is True
    log = pip_log.read_text()
    installed = [line.split("Successfully installed", 1)[1].split() for line in log.splitlines()
                 if "Successfully installed" in line]
    names = [name.rsplit("-", 1)[0].lower().replace("_", "-") for group in installed for name in group]
    assert "course-utils" in names and "tqdm" in names, f"pip installed {names}"
    assert not any(name.startswith(("torch", "nvidia-")) for name in names), f"pip reinstalled torch: {names}"
    assert "Collecting torch" not in log and "Downloading torch" not in log
