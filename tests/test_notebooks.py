"""Every notebook, top to bottom in quick mode: under nbval, and as the released student version.

The solution notebook must pass nbval; its student version (solutions replaced
by stubs) must fail at each exercise's check cell and nowhere else, which proves
that every check can fail and that later cells do not lean on the student's code.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

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
def test_student_version_fails_exactly_at_its_checks(path: Path, tmp_path: Path) -> None:
    student = release_notebook(nbformat.read(path, as_version=4))
    checks = {i for i, c in enumerate(student.cells) if c.cell_type == "code" and c.source.startswith("# CHECK ")}
    assert checks, f"{path.name} has exercises but no check cells"
    _execute_in_quick_mode(student)
    errors = {}
    for i, cell in enumerate(student.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                errors[i] = f"{out.ename}: {out.evalue}"[:200]
    missing = sorted(checks - set(errors))
    extra = {i: errors[i] for i in sorted(set(errors) - checks)}
    assert not missing, f"these check cells pass on the student version (a check that cannot fail): " + \
        ", ".join(student.cells[i].source.splitlines()[0] for i in missing)
    assert not extra, f"cells other than checks fail on the student version: {extra}"
    for i in checks:
        assert "NotImplementedError" in errors[i] or "CheckFailed" in errors[i], \
            f"{student.cells[i].source.splitlines()[0]} failed for another reason: {errors[i]}"


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
