"""Every notebook, top to bottom in quick mode: under nbval, and graded with its released student version.

The solution notebook must pass nbval; its student version (solutions replaced
by stubs) must fail at each exercise's check cell and nowhere else, which proves
that every check can fail and that later cells do not lean on the student's code.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_utils import grade as G
from course_utils.release import release_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 900


def _env() -> dict[str, str]:
    # under pytest-xdist, conftest.py has already put OMP_NUM_THREADS=1 in os.environ for the kernels
    return dict(os.environ, COURSE_QUICK="1", PYTHONHASHSEED="0", MPLBACKEND="agg")


def _execute_in_quick_mode(nb) -> None:
    """Run ``nb`` in place, in notebooks/, in quick mode; errors stay in the outputs (``allow_errors``)."""
    old_env = dict(os.environ)
    os.environ.update(_env())
    try:
        NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old_env)


def _has_exercises(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any(c.cell_type == "code" and c.source.startswith("# EXERCISE ") for c in nb.cells)


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_passes_nbval(path: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout", str(CELL_TIMEOUT),
           "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "course_utils.nbval_plugin", "-q", str(path)]
    result = subprocess.run(cmd, cwd=NOTEBOOK_DIR, env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, f"nbval failed on {path.name}:\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"


STUDENT_NOTEBOOKS = [p for p in NOTEBOOKS if _has_exercises(p)]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=lambda p: p.stem)
def test_grader_gives_the_solution_full_marks_and_the_student_version_zero(path: Path, tmp_path: Path) -> None:
    """Both graded as an instructor would (hidden checks and integrity guard included), in quick mode.

    The student version must fail at its checks and nowhere else: every check can fail, and the
    cells after an exercise fall back to the course's reference instead of leaning on the stub.
    """
    for who in ("solution", "student"):
        (tmp_path / who).mkdir()
    shutil.copy(path, tmp_path / "solution" / path.name)
    nbformat.write(release_notebook(nbformat.read(path, as_version=4)), str(tmp_path / "student" / path.name))
    report = G.grade([tmp_path], [path], workers=1, timeout=CELL_TIMEOUT, quick=True)
    rows = {r["student"]: r for r in report["submissions"]}
    solution, student = rows["solution"], rows["student"]
    assert solution["status"] == student["status"] == "graded", report
    not_full = {i["id"]: (i["status"], i["message"]) for i in solution["items"]
                if i["kind"] != "written" and i["status"] != "passed"}
    assert not not_full and solution["points"] == solution["max_points"] > 0, f"solution: {not_full}"
    assert solution["flags"] == [] and solution["other_errors"] == [], solution
    not_failed = {i["id"]: (i["status"], i["message"]) for i in student["items"]
                  if i["kind"] != "written" and i["status"] != "failed"}
    assert not not_failed, f"student version: items that did not fail as wrong answers: {not_failed}"
    assert student["points"] == 0 and student["flags"] == []
    assert student["other_errors"] == [], f"cells other than checks fail on the student version: " \
        f"{student['other_errors']}"
    assert {i["status"] for i in student["items"] if i["kind"] == "written"} <= {"unanswered"}


@pytest.mark.rerun
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_twice_in_one_kernel(path: Path) -> None:
    """Every cell, then every cell again in the same kernel and folder (``make test-full``'s second pass).

    The second round starts with everything the first left behind: variables, seeded generators
    already advanced, modules in train or eval mode, files on disk (the lab's log, cached models).
    That is what a student's out-of-order run leaves, and no assertion may depend on a fresh state.
    Deselected in the quick suite (``-m "not rerun"`` in pyproject.toml); ``make test-full`` runs it
    in ``notebooks/`` right after the full-mode pass.
    """
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    nb.cells = [nbformat.from_dict(c) for c in code] + [nbformat.from_dict(c) for c in code]
    _execute_in_quick_mode(nb)
    errors = [(i, f"{out.ename}: {out.evalue}"[:300]) for i, cell in enumerate(nb.cells)
              for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, "\n".join(
        f"{'second' if i >= len(code) else 'first'} round, cell starting "
        f"{nb.cells[i].source.splitlines()[0][:60]!r}: {err}" for i, err in errors)
