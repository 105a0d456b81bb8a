"""Hygiene: one policy for stored notebooks, one skeleton, a tidy tree (exercise markers: test_exercise_markers.py).

Policy: notebooks are stored without outputs or execution counts, with only
``kernelspec`` and ``language_info`` as notebook metadata and no cell metadata.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ALLOWED_NB_METADATA = {"kernelspec", "language_info"}


def _load(path: Path):
    return nbformat.read(path, as_version=4)


def test_there_are_notebooks_and_they_are_numbered_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names, "no notebooks found"
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", n) for n in names), names
    numbers = [int(n[:2]) for n in names]
    assert numbers == list(range(len(numbers))), f"notebooks must be numbered 00, 01, ... without gaps: {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_or_stray_metadata(path):
    nb = _load(path)
    nbformat.validate(nb)
    assert set(nb.metadata) <= ALLOWED_NB_METADATA, f"stray notebook metadata: {set(nb.metadata) - ALLOWED_NB_METADATA}"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        assert not cell.get("metadata"), f"cell {i} has metadata {dict(cell.metadata)}; use comment markers instead of tags"
        assert cell.get("id"), f"cell {i} has no id"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has stored output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_follows_the_course_skeleton(path):
    nb = _load(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {path.name[:2]} · "), \
        "first cell: '# NN · Title'"
    assert "## Learning objectives" in first.source and "Time:" in first.source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source.startswith("# COLAB SETUP"), "the first code cell is the Colab setup cell"
    assert "import course_utils as cu" in code[1].source, "the second code cell is the one setup cell"
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any(h.lstrip().startswith("## Summary") for h in headings), "needs a '## Summary' section"
    assert any("## Further reading" in h for h in headings), "needs a '## Further reading' section"
    for c in code[2:]:
        assert not re.search(r"^\s*(from course_utils[. ]|import course_utils\b)", c.source, re.M), \
            "import course_utils once, in the setup cell, and call cu.name(...)"


def test_git_tree_is_tidy():
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    bad = [f for f in files if re.search(r"(__pycache__|\.ipynb_checkpoints|\.pyc$|\.pt$|\.pth$|\.csv$|\.egg-info)", f)]
    assert not bad, f"generated files are tracked: {bad}"
    data = [f for f in files if f.startswith("data/")]
    assert all(f == "data/README.md" or f.startswith("data/photos/") for f in data), \
        f"data/ may hold only its README and the shipped photos: {data}"
    big = [f for f in files if (ROOT / f).is_file() and (ROOT / f).stat().st_size > 500_000]
    assert not big, f"files over 500 kB are tracked: {big}"


def test_shipped_photos_are_documented():
    readme = (ROOT / "data" / "README.md").read_text()
    photos = sorted((ROOT / "data" / "photos").glob("*.png"))
    assert len(photos) >= 3
    for p in photos:
        assert f"`{p.name}`" in readme, f"{p.name} has no source and licence in data/README.md"
