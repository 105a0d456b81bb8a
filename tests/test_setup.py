"""The set-up the README promises: `make lab` starts (as root too), and staged notebooks lose their outputs."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
needs_venv = pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason="needs the .venv that make install creates")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("is_root", ["yes", ""], ids=["root", "user"])
def test_make_lab_passes_allow_root_only_as_root(is_root: str) -> None:
    out = subprocess.run(["make", "-n", "lab", f"IS_ROOT={is_root}"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # the command that starts JupyterLab (not `jupyter labextension ...` from the install step)
    line = next(x for x in out.stdout.splitlines() if re.search(r"bin/jupyter lab(\s|$)", x))
    assert ("--allow-root" in line) == bool(is_root), line


@needs_venv
def test_make_lab_starts_jupyterlab_for_whoever_runs_it(tmp_path: Path) -> None:
    port = _free_port()
    args = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.token=course "
            f"--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    log = tmp_path / "lab.log"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    with open(log, "w") as fh:
        proc = subprocess.Popen(["make", "lab", f"LAB_ARGS={args}"], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = log.read_text()
            if f"127.0.0.1:{port}" in text and "is running at" in text:
                break
            assert proc.poll() is None, f"make lab exited ({proc.returncode}):\n{text[-3000:]}"
            time.sleep(1)
        else:
            pytest.fail("JupyterLab did not report it was running within 120 s:\n" + log.read_text()[-3000:])
        if os.geteuid() == 0:
            assert "Running as root: starting JupyterLab with --allow-root." in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@needs_venv
def test_git_filter_strips_outputs_and_editor_metadata_but_keeps_cell_ids(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    made = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "git-filter", f"VENV={VENV}"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"},
                                            "colab": {"provenance": []}})
    cell = nbformat.v4.new_code_cell("print(1)", execution_count=3,
                                     outputs=[nbformat.v4.new_output("stream", text="1\n")])
    cell.metadata = {"colab": {"base_uri": "https://localhost:8080/"}, "outputId": "abc"}
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), cell]
    nbformat.write(nb, tmp_path / "lesson.ipynb")
    subprocess.run(["git", "add", "lesson.ipynb"], cwd=tmp_path, check=True)
    staged = json.loads(subprocess.run(["git", "show", ":lesson.ipynb"], cwd=tmp_path, check=True,
                                       capture_output=True, text=True).stdout)
    code = staged["cells"][1]
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["metadata"] == {} and "colab" not in staged["metadata"]
    assert [c["id"] for c in staged["cells"]] == [c.id for c in nb.cells]
    # the working copy is left as it was: only what git stores is stripped
    assert nbformat.read(tmp_path / "lesson.ipynb", as_version=4).cells[1].outputs
    # a test fixture (a Colab-saved submission) is stored byte for byte
    (tmp_path / "tests" / "fixtures").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "tests" / "fixtures" / "saved.ipynb")
    subprocess.run(["git", "add", "tests/fixtures/saved.ipynb"], cwd=tmp_path, check=True)
    stored = subprocess.run(["git", "show", ":tests/fixtures/saved.ipynb"], cwd=tmp_path, check=True,
                            capture_output=True, text=True).stdout
    assert stored == (tmp_path / "tests" / "fixtures" / "saved.ipynb").read_text()
