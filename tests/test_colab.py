"""Every notebook opens on Colab the same way: its own badge and the identical setup cell."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import nbformat
import pytest

from course_utils import colab

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
STAMP_HINT = "run `python -m course_utils.colab stamp notebooks/`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_carries_its_badge_and_the_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert colab.badge(path.name) in first.source.split("\n"), f"{path.name}: badge missing or stale; {STAMP_HINT}"
    assert colab.BADGE_PLACEHOLDER not in "".join(c.source for c in nb.cells), STAMP_HINT
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == colab.setup_cell_source(), f"{path.name}: first code cell is not the setup cell; {STAMP_HINT}"
    assert sum(c.source.startswith(colab.SETUP_PREFIX) for c in code) == 1


def test_badge_links_to_this_notebook_on_colab():
    url = colab.colab_url("02_batch_norm.ipynb")
    assert url.startswith("https://colab.research.google.com/github/")
    assert url.endswith("/blob/main/notebooks/02_batch_norm.ipynb")
    assert colab.REPO_URL.split("github.com/")[1] in url
    assert colab.BADGE_RE.match(colab.badge("02_batch_norm.ipynb"))


def test_setup_cell_never_installs_torch_and_does_nothing_off_colab(monkeypatch, tmp_path):
    src = colab.setup_cell_source()
    ast.parse(src)
    assert "--no-deps" in src and "git clone" not in src  # clone goes through subprocess args
    assert '"clone", "--depth", "1"' in src and colab.REPO_URL in src
    assert "pip install torch" not in src and '"torch"' not in src.split("missing = ")[1].split("\n")[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(src, "setup", "exec"), namespace)  # google.colab is not imported here: a no-op
    assert Path.cwd() == tmp_path


def test_stamping_replaces_placeholders_and_is_idempotent(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 99 · Test\n*subtitle*\n\n<!-- COLAB BADGE -->\n\n## Learning objectives"),
        nbformat.v4.new_code_cell("# COLAB SETUP: installs course_utils on Colab only; does nothing elsewhere."),
        nbformat.v4.new_code_cell("import course_utils as cu"),
    ])
    path = tmp_path / "99_test.ipynb"
    nbformat.write(nb, str(path))
    assert colab.stamp_path(tmp_path) == [path]
    first = path.read_text()
    assert colab.stamp_path(tmp_path) == []  # nothing left to change
    assert path.read_text() == first
    stamped = nbformat.read(path, as_version=4)
    assert colab.badge("99_test.ipynb") in stamped.cells[0].source
    assert stamped.cells[1].source == colab.setup_cell_source()
    assert stamped.cells[2].source == "import course_utils as cu"


def test_restamping_updates_an_old_badge_and_setup_cell(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for p in NOTEBOOKS[:1]:
        shutil.copy(p, src / p.name)
    if not NOTEBOOKS:
        pytest.skip("no notebooks yet")
    monkeypatch.setattr(colab, "REPO_URL", "https://github.com/someone-else/course")
    assert colab.stamp_path(src) == [src / NOTEBOOKS[0].name]  # the instructor moved the repository
    nb = nbformat.read(src / NOTEBOOKS[0].name, as_version=4)
    assert "github/someone-else/course/blob/main/notebooks/" in nb.cells[0].source
    assert colab.BADGE_RE.match(colab.badge(NOTEBOOKS[0].name))
    assert sum(colab.BADGE_RE.match(line) is not None for line in nb.cells[0].source.split("\n")) == 1
    assert "https://github.com/someone-else/course" in next(c for c in nb.cells if c.cell_type == "code").source


def test_stamping_the_course_notebooks_changes_nothing(tmp_path):
    for p in NOTEBOOKS:
        shutil.copy(p, tmp_path / p.name)
    assert colab.stamp_path(tmp_path) == [], STAMP_HINT
