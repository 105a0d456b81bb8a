"""The executed course as a static HTML site: ``python -m course_utils.site notebooks/ site/``.

The notebooks are stored without outputs, so on GitHub a reader sees no figure.
This runs every lesson top to bottom (in the mode the environment sets: full by
default, quick with ``COURSE_QUICK=1``) and writes one HTML page per lesson with
its outputs and figures, an ``index.html`` with the syllabus, and links from each
page to the previous and next lesson and to the index. Links between notebooks
in the text are pointed at the pages. With ``--from-executed DIR`` it runs nothing
and takes the outputs of an earlier run instead (``make test-full`` writes DIR
while nbval runs the lessons in full mode, and builds the site from it).

Why nbconvert: it is what Jupyter itself uses to export a notebook, it is
installed with JupyterLab already, and it runs offline with no second toolchain
(jupyter-book needs Sphinx and its themes, mystmd a Node.js build). Its ``lab``
template makes a page look like the notebook in JupyterLab, and figures are
embedded in the page as PNG, so the site is a folder of self-contained files
that any static host (GitHub Pages, a course server) can serve as it is.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat

from .config import quick_mode
from .nbval_plugin import RUN_METADATA_KEY

LESSON_GLOB = "[0-9][0-9]_*.ipynb"
# a markdown link to another lesson of the course: ](01_input_normalization.ipynb) or ](01_x.ipynb#anchor)
LESSON_LINK = re.compile(r"\]\((\d\d_[A-Za-z0-9_]+)\.ipynb(#[^)]*)?\)")


def lesson_title(nb) -> tuple[str, str]:
    """(title, subtitle) from a lesson's first cell: ``# 07 · The fine-tuning lab`` and the italic line."""
    lines = [line.strip() for line in nb.cells[0].source.splitlines() if line.strip()] if nb.cells else []
    title = next((line.lstrip("# ") for line in lines if line.startswith("# ")), "")
    subtitle = next((line.strip("*") for line in lines if line.startswith("*") and line.endswith("*")), "")
    if not title:
        raise ValueError("a lesson's first cell must start with a '# NN · Title' heading")
    return title, subtitle


def execute(path: Path, timeout: float = 2400) -> nbformat.NotebookNode:
    """``path`` run top to bottom in its own folder (as a student runs it); raises on the first error."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def _nav(pages: list[tuple[str, str]], i: int) -> str:
    """Markdown line linking lesson ``i`` to its neighbours and the index; ``pages`` holds (file, title)."""
    parts = []
    if i > 0:
        parts.append(f"[← {pages[i - 1][1]}]({pages[i - 1][0]})")
    parts.append("[contents](index.html)")
    if i + 1 < len(pages):
        parts.append(f"[{pages[i + 1][1]} →]({pages[i + 1][0]})")
    return " · ".join(parts)


def with_navigation(nb, pages: list[tuple[str, str]], i: int, banner: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` with lesson links pointed at pages and a navigation line above and below."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = LESSON_LINK.sub(lambda m: f"]({m.group(1)}.html{m.group(2) or ''})", cell.source)
    nav = _nav(pages, i)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"{nav}\n\n<small>{banner}</small>"))
    nb.cells.append(nbformat.v4.new_markdown_cell(nav))
    return nb


def to_html(nb, title: str) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def _run(path: str, timeout: float) -> tuple[str, str, float]:
    # in a worker process of its own: its kernels inherit this environment. A non-interactive backend
    # (MPLBACKEND=agg, as the tests set) would keep plt.show() from putting figures in the outputs.
    os.environ.pop("MPLBACKEND", None)
    start = time.perf_counter()
    nb = execute(Path(path), timeout)
    return path, nbformat.writes(nb), time.perf_counter() - start


def read_executed(paths: list[Path], executed_dir: Path) -> dict[str, tuple[nbformat.NotebookNode, float, str]]:
    """The lessons as an earlier run left them in ``executed_dir`` (``--nbval-save-executed``):
    ``{name: (notebook, seconds, mode, date)}``. Each must be there, have run every code cell and hold its
    run's record (``metadata.course_run``); a lesson changed since it ran is refused."""
    executed = {}
    for path in paths:
        done = executed_dir / path.name
        if not done.is_file():
            raise FileNotFoundError(f"{path.name} has not been executed into {executed_dir}: run the notebooks "
                                    f"with --nbval-save-executed {executed_dir} first (make test-full does)")
        nb = nbformat.read(done, as_version=4)
        record = nb.metadata.get(RUN_METADATA_KEY)
        if not record:
            raise ValueError(f"{done} has no record of its run (metadata.{RUN_METADATA_KEY}): it was not "
                             "written by --nbval-save-executed")
        source = [c.source for c in nbformat.read(path, as_version=4).cells]
        if [c.source for c in nb.cells] != source:
            raise ValueError(f"{done} is not the lesson as it is now in {path.parent}: run it again")
        unrun = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None
                 and "NBVAL_SKIP" not in c.source]  # nbval skips a cell with that marker; it has no outputs
        if unrun:
            raise ValueError(f"{done}: code cells {unrun} did not run (the run stopped early?)")
        executed[path.name] = (nb, float(record["seconds"]), record["mode"], record["date"])
    return executed


def build_site(notebook_dir: str | Path, out_dir: str | Path, *, jobs: int = 1, timeout: float = 2400,
               only: list[str] | None = None, executed_dir: str | Path | None = None) -> list[Path]:
    """Write the site of the lessons in ``notebook_dir`` to ``out_dir``; returns the pages written.

    With ``executed_dir``, the pages show the outputs of the run that wrote that folder (the
    full-mode pass of ``make test``, through ``--nbval-save-executed``) and nothing is executed.
    Otherwise every lesson runs here, ``jobs`` at once (each kernel then gets
    ``OMP_NUM_THREADS=1`` unless it is set already, so that they do not slow each other down).
    ``only`` restricts the build to some notebook names (tests).
    """
    notebook_dir, out_dir = Path(notebook_dir), Path(out_dir)
    paths = sorted(notebook_dir.glob(LESSON_GLOB))
    if only is not None:
        paths = [p for p in paths if p.name in only]
    if not paths:
        raise FileNotFoundError(f"no lessons (files named {LESSON_GLOB}) in {notebook_dir}")
    pages = [(p.with_suffix(".html").name, lesson_title(nbformat.read(p, as_version=4))[0]) for p in paths]
    stamp = time.strftime("%Y-%m-%d")
    if executed_dir is not None:
        executed = read_executed(paths, Path(executed_dir))
    else:
        if jobs > 1:
            os.environ.setdefault("OMP_NUM_THREADS", "1")
        mode = "quick" if quick_mode() else "full"
        executed = {}
        # fresh worker processes (spawn): each starts its kernels from a clean interpreter
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            for path, text, seconds in pool.map(_run, [str(p) for p in paths], [timeout] * len(paths)):
                executed[Path(path).name] = (nbformat.reads(text, as_version=4), seconds, mode, stamp)
                print(f"executed {Path(path).name} in {mode} mode: {seconds / 60:.1f} min", flush=True)
    modes = sorted({m for _, _, m, _ in executed.values()})
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rows = []
    for i, path in enumerate(paths):
        nb, seconds, mode, ran_on = executed[path.name]
        nb.metadata.pop(RUN_METADATA_KEY, None)
        title, subtitle = lesson_title(nb)
        banner = (f"Executed in {mode} mode on {ran_on} ({seconds / 60:.1f} min). Run it yourself: "
                  f"open {path.name} in JupyterLab or on Colab.")
        page = out_dir / pages[i][0]
        page.write_text(to_html(with_navigation(nb, pages, i, banner), title), encoding="utf-8")
        written.append(page)
        rows.append(f"| [{title}]({page.name}) | {subtitle} | {seconds / 60:.1f} min |")
    index = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# Normalization in deep learning\n*The course's lessons, executed, with their outputs and figures.*\n\n"
        f"Built on {stamp} in {' and '.join(modes)} mode; each page links to the next.\n\n"
        "| lesson | what it is about | run time here |\n|---|---|---|\n" + "\n".join(rows))])
    index_page = out_dir / "index.html"
    index_page.write_text(to_html(index, "Normalization in deep learning"), encoding="utf-8")
    return [index_page, *written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", type=Path, help="folder with the lessons (notebooks/)")
    parser.add_argument("out", type=Path, help="folder to write the site to (site/)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (default 1)")
    parser.add_argument("--timeout", type=float, default=2400, help="seconds a cell may run (default 2400)")
    parser.add_argument("--from-executed", type=Path, metavar="DIR",
                        help="run nothing: take the outputs from the notebooks a run wrote to DIR "
                             "(pytest --nbval-save-executed DIR, as make test-full does)")
    args = parser.parse_args(argv)
    pages = build_site(args.notebooks, args.out, jobs=args.jobs, timeout=args.timeout,
                       executed_dir=args.from_executed)
    print(f"{len(pages)} pages in {args.out}/: open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
