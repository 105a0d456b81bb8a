"""Every lesson in quick mode: its solution graded on Colab's versions, its student version graded zero.

The grader runs a notebook under nbval (course_utils/grade.py), so grading the solution is the
quick-mode nbval run of the lesson: every cell must run and every check, hidden ones included, pass.
``make test`` grades it with the Python of Colab's environment (``COURSE_COLAB_PYTHON``:
.venv-colab, built from requirements/colab.txt by .ci/colab-env.sh), and with a stand-in for
torchvision's ImageNet file in torch's hub cache, since Colab is online: what a Colab student runs.
The student version (solutions replaced by stubs) is graded in this environment, the pinned one,
and must fail at each exercise's check cell and nowhere else, which proves that every check can fail
and that later cells do not lean on the student's code. A notebook without exercises (00) runs under
plain nbval in Colab's environment.

Every notebook also runs in full mode, then once more in quick mode in the same kernel, in
``make test-full`` (nbval with course_utils.nbval_plugin's ``--nbval-again-quick``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils import grade as G
from course_utils.release import release_notebook
from imagenet_stand_in import make_torch_home

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 900
# Colab's environment, where make test has built it; elsewhere (pytest run by hand) this one
COLAB_PYTHON = os.environ.get("COURSE_COLAB_PYTHON") or None


def _has_exercises(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any(c.cell_type == "code" and c.source.startswith("# EXERCISE ") for c in nb.cells)


STUDENT_NOTEBOOKS = [p for p in NOTEBOOKS if _has_exercises(p)]
PLAIN_NOTEBOOKS = [p for p in NOTEBOOKS if not _has_exercises(p)]


@pytest.fixture(scope="session")
def imagenet_torch_home(tmp_path_factory) -> Path:
    return make_torch_home(tmp_path_factory.mktemp("torch_home"))


def _grade(path: Path, folder: Path, python: str | None) -> dict:
    report = G.grade([folder], [path], workers=1, timeout=CELL_TIMEOUT, quick=True, python=python)
    (row,) = report["submissions"]
    assert row["status"] == "graded", report
    return row


def test_make_test_names_colab_python_for_the_quick_suite() -> None:
    """The Colab lane is on in make test: its quick suite sets COURSE_COLAB_PYTHON to .venv-colab's Python."""
    makefile = (ROOT / "Makefile").read_text()
    assert "COURSE_COLAB_PYTHON=$(abspath $(COLAB_VENV))/bin/python" in makefile
    if COLAB_PYTHON:
        assert Path(COLAB_PYTHON).is_file(), f"COURSE_COLAB_PYTHON={COLAB_PYTHON} does not exist: make colab-env"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=lambda p: p.stem)
def test_the_solution_gets_full_marks_on_colab_versions(path: Path, tmp_path: Path, imagenet_torch_home: Path,
                                                        monkeypatch) -> None:
    """Graded as an instructor would (hidden checks and integrity guard included), in quick mode."""
    (tmp_path / "solution").mkdir()
    shutil.copy(path, tmp_path / "solution" / path.name)
    monkeypatch.setenv("TORCH_HOME", str(imagenet_torch_home))
    solution = _grade(path, tmp_path / "solution", COLAB_PYTHON)
    not_full = {i["id"]: (i["status"], i["message"]) for i in solution["items"]
                if i["kind"] != "written" and i["status"] != "passed"}
    assert not not_full and solution["points"] == solution["max_points"] > 0, f"solution: {not_full}"
    assert solution["flags"] == [] and solution["other_errors"] == [], solution


@pytest.mark.notebooks
@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=lambda p: p.stem)
def test_the_student_version_gets_zero_failing_only_at_its_checks(path: Path, tmp_path: Path) -> None:
    """The cells after an exercise fall back to the course's reference instead of leaning on the stub."""
    (tmp_path / "student").mkdir()
    nbformat.write(release_notebook(nbformat.read(path, as_version=4)), str(tmp_path / "student" / path.name))
    student = _grade(path, tmp_path / "student", None)
    not_failed = {i["id"]: (i["status"], i["message"]) for i in student["items"]
                  if i["kind"] != "written" and i["status"] != "failed"}
    assert not not_failed, f"student version: items that did not fail as wrong answers: {not_failed}"
    assert student["points"] == 0 and student["flags"] == []
    assert student["other_errors"] == [], f"cells other than checks fail on the student version: " \
        f"{student['other_errors']}"
    assert {i["status"] for i in student["items"] if i["kind"] == "written"} <= {"unanswered"}


@pytest.mark.notebooks
@pytest.mark.parametrize("path", PLAIN_NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_without_exercises_passes_nbval_on_colab_versions(path: Path, imagenet_torch_home: Path) -> None:
    python = COLAB_PYTHON or sys.executable
    cmd = [python, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout", str(CELL_TIMEOUT),
           "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "course_utils.nbval_plugin", "-q", path.name]
    env = dict(os.environ, COURSE_QUICK="1", PYTHONHASHSEED="0", MPLBACKEND="agg",
               TORCH_HOME=str(imagenet_torch_home))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(cmd, cwd=NOTEBOOK_DIR, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"nbval failed on {path.name}:\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
