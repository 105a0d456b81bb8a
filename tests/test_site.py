"""`make site`: the executed course as static HTML, every lesson a page with its figures and links.

Built here in quick mode from a copy of the notebooks (the lessons find the course's data through
course_utils, wherever they run), so it does not share a folder with the notebook tests running
beside it.
"""
from __future__ import annotations

import re
import shutil
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
def built(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("COURSE_QUICK", "1")
    monkeypatch_module.setenv("PYTHONHASHSEED", "0")
    work = tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "notebooks", work / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "results*.csv"))
    pages = site.build_site(work / "notebooks", work / "site", jobs=1, timeout=900)
    return work / "site", pages


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.notebooks
def test_every_lesson_has_a_page_with_its_figures(built):
    out, pages = built
    assert [p.name for p in pages] == ["index.html"] + [p.with_suffix(".html").name for p in LESSONS]
    for lesson in LESSONS:
        text = (out / lesson.with_suffix(".html").name).read_text(encoding="utf-8")
        figures, expected = len(FIGURE.findall(text)), _figures_expected(lesson)
        assert figures >= expected, f"{lesson.name}: {figures} figures on its page, its code shows {expected}"
        assert "Executed in quick mode" in text
        assert 'class="jp-Notebook' in text  # rendered with the lab template, outputs included
    assert sum(_figures_expected(p) for p in LESSONS) > 20  # the count above is not vacuous


@pytest.mark.notebooks
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
