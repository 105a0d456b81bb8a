"""`make site`: the executed course as static HTML, every lesson a page with its figures and links.

The site is built from the notebooks that the full-mode pass of ``make test-full`` wrote with their
outputs (``--nbval-save-executed``, folder named by ``COURSE_EXECUTED_DIR``): no lesson runs again
for it. Those tests carry the ``site`` mark and run right after that pass; without the folder they
are skipped. The tests without the mark check the build on small notebooks of their own.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils import site

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "notebooks").glob(site.LESSON_GLOB))
# a figure as nbconvert's lab template renders it: inline SVG (the course's style) or an embedded PNG
FIGURE = re.compile(r'<div class="jp-RenderedSVG[^"]*"|<img[^>]+src="data:image/png;base64,')
HREF = re.compile(r'href="([^"#:]+\.html)(#[^"]*)?"')


def _figures_expected(path: Path) -> int:
    """Figures a lesson shows: one per plt.show() in its code (a lower bound: cells may draw more)."""
    nb = nbformat.read(path, as_version=4)
    return sum(c.source.count("plt.show()") for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    executed = os.environ.get("COURSE_EXECUTED_DIR")
    if not executed:
        pytest.skip("builds from the full-mode pass's notebooks: make test-full sets COURSE_EXECUTED_DIR")
    out = ROOT / "site"  # what `make site` would write: kept for a look after make test
    pages = site.build_site(ROOT / "notebooks", out, executed_dir=ROOT / executed)
    return out, pages


@pytest.mark.site
def test_every_lesson_has_a_page_with_its_figures(built):
    out, pages = built
    assert [p.name for p in pages] == ["index.html"] + [p.with_suffix(".html").name for p in LESSONS]
    for lesson in LESSONS:
        text = (out / lesson.with_suffix(".html").name).read_text(encoding="utf-8")
        figures, expected = len(FIGURE.findall(text)), _figures_expected(lesson)
        assert figures >= expected, f"{lesson.name}: {figures} figures on its page, its code shows {expected}"
        assert "Executed in full mode" in text
        assert 'class="jp-Notebook' in text  # rendered with the lab template, outputs included
    assert sum(_figures_expected(p) for p in LESSONS) > 20  # the count above is not vacuous


@pytest.mark.site
def test_navigation_links_resolve_and_chain_the_lessons(built):
    out, _ = built
    index = (out / "index.html").read_text(encoding="utf-8")
    names = [p.with_suffix(".html").name for p in LESSONS]
    assert all(f'href="{n}"' in index for n in names), "the index links every lesson"
    for i, name in enumerate(names):
        text = (out / name).read_text(encoding="utf-8")
        targets = {m.group(1) for m in HREF.finditer(text)}
        missing = sorted(t for t in targets if not (out / t).exists())
        assert not missing, f"{name} links to pages that do not exist: {missing}"
        assert "index.html" in targets
        if i > 0:
            assert names[i - 1] in targets, f"{name} does not link back to {names[i - 1]}"
        if i + 1 < len(names):
            assert names[i + 1] in targets, f"{name} does not link on to {names[i + 1]}"
        assert ".ipynb)" not in text and not re.search(r'href="\d\d_[^"]*\.ipynb', text)


def test_lesson_links_in_the_text_are_pointed_at_pages():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 01 · One\n*first*"),
        nbformat.v4.new_markdown_cell("See [02](02_two.ipynb) and [its §3](02_two.ipynb#3.-x), "
                                      "not [README](../README.md)."),
    ])
    pages = [("01_one.html", "01 · One"), ("02_two.html", "02 · Two")]
    out = site.with_navigation(nb, pages, 0, "banner")
    text = out.cells[2].source
    assert "](02_two.html)" in text and "](02_two.html#3.-x)" in text and "](../README.md)" in text
    assert out.cells[0].source.startswith("[contents](index.html) · [02 · Two →](02_two.html)")
    assert out.cells[-1].source == "[contents](index.html) · [02 · Two →](02_two.html)"
    assert len(nb.cells) == 2  # the lesson itself is not changed


def test_a_lesson_without_a_title_is_refused(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("no heading here")])
    with pytest.raises(ValueError, match="heading"):
        site.lesson_title(nb)
    with pytest.raises(FileNotFoundError, match="no lessons"):
        site.build_site(tmp_path, tmp_path / "out")


def _lesson(cells: list[str]) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · One\n*first*"),
                                           *[nbformat.v4.new_code_cell(c) for c in cells]])


def test_the_full_pass_writes_what_the_site_is_built_from(tmp_path):
    """nbval with --nbval-save-executed keeps each cell's outputs, and the site shows them without a run."""
    lessons, executed = tmp_path / "lessons", tmp_path / "executed"
    lessons.mkdir()
    nbformat.write(_lesson(["print('from the run', 6 * 7)", "# NBVAL_SKIP\nraise SystemExit('not run')",
                            "{'answer': 42}"]), str(lessons / "01_one.ipynb"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           "-p", "course_utils.nbval_plugin", "--nbval-lax", f"--nbval-save-executed={executed}", "01_one.ipynb"]
    result = subprocess.run(cmd, cwd=lessons, capture_output=True, text=True, env=dict(os.environ, COURSE_QUICK="1"))
    assert result.returncode == 0, result.stdout[-3000:]
    nb = nbformat.read(executed / "01_one.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["text"] == "from the run 42\n" and code[0].execution_count == 1
    assert code[1].outputs == [] and code[1].execution_count is None  # skipped: not run
    assert code[2].outputs[0]["data"]["text/plain"] == "{'answer': 42}"
    assert nb.metadata["course_run"]["mode"] == "quick" and nb.metadata["course_run"]["seconds"] > 0
    pages = site.build_site(lessons, tmp_path / "site", executed_dir=executed)
    text = pages[1].read_text(encoding="utf-8")
    assert "from the run 42" in text and f"Executed in quick mode on {nb.metadata['course_run']['date']}" in text


def test_the_site_refuses_notebooks_that_did_not_run_or_changed_since(tmp_path):
    lessons, executed = tmp_path / "lessons", tmp_path / "executed"
    lessons.mkdir()
    executed.mkdir()
    nbformat.write(_lesson(["x = 1"]), str(lessons / "01_one.ipynb"))
    with pytest.raises(FileNotFoundError, match="--nbval-save-executed"):
        site.build_site(lessons, tmp_path / "site", executed_dir=executed)
    nbformat.write(_lesson(["x = 1"]), str(executed / "01_one.ipynb"))
    with pytest.raises(ValueError, match="no record of its run"):
        site.build_site(lessons, tmp_path / "site", executed_dir=executed)
    ran = _lesson(["x = 2"])
    ran.metadata["course_run"] = {"mode": "full", "seconds": 1.0, "date": "2026-12-07"}
    nbformat.write(ran, str(executed / "01_one.ipynb"))
    with pytest.raises(ValueError, match="not the lesson as it is now"):
        site.build_site(lessons, tmp_path / "site", executed_dir=executed)
    ran.cells[1].source = "x = 1"
    nbformat.write(ran, str(executed / "01_one.ipynb"))
    with pytest.raises(ValueError, match="did not run"):
        site.build_site(lessons, tmp_path / "site", executed_dir=executed)
