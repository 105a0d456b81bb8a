"""pytest plugin for notebooks run under nbval (``-p course_utils.nbval_plugin``).

Two things nbval 0.11 does not do:

* **A longer wait for output.** When a cell has finished, nbval reads the kernel's
  output messages and gives up when one takes more than five seconds to arrive
  (``IPyNbCell.output_timeout``, not an option of nbval). On two cores shared by
  two kernels, a cell that streamed a progress bar can take longer to flush its
  last messages, and nbval then fails a cell that passed ("Timeout of 5 seconds
  exceeded waiting for output"; seen once on the fine-tuning lab in CI). This
  plugin raises that wait only; the limit on a cell's own run time
  (``--nbval-cell-timeout``) is unchanged.
* **Keeping what ran** (``--nbval-save-executed DIR``). nbval already collects
  every output a cell produced; with this option each notebook is written to
  ``DIR`` with those outputs, its execution counts, the time it took and the
  mode it ran in (``metadata.course_run``), once its last cell has run. The
  full-mode pass of ``make test`` writes them, and the site is built from them
  instead of running every lesson a second time.
* **A second round in the same kernel** (``--nbval-again-quick``). After a
  notebook's last cell, one cell sets ``COURSE_QUICK=1`` in the kernel and every
  code cell runs once more, in quick mode, starting from all that the first round
  left behind: variables, advanced generators, modules in train or eval mode,
  files on disk (checkpoints, the lab's log). That is what a student's second or
  out-of-order run meets, and no cell may depend on a fresh state; the course's
  mode is read at run time (``cu.quick_mode()``), so the switch takes effect in
  the setup cell. The second round costs a quick run, not a full one, and no
  kernel start; ``--nbval-save-executed`` keeps the first round's outputs.
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

OUTPUT_WAIT_S = 120
RUN_METADATA_KEY = "course_run"


AGAIN = " (again, quick)"  # appended to the names of the second round's cells
SWITCH_SOURCE = "import os\nos.environ['COURSE_QUICK'] = '1'  # the second round runs in quick mode"


def pytest_addoption(parser) -> None:
    parser.addoption("--nbval-save-executed", metavar="DIR", default=None,
                     help="write each notebook, with the outputs of this run, to DIR (course_utils.nbval_plugin)")
    parser.addoption("--nbval-again-quick", action="store_true", default=False,
                     help="after each notebook, run all its code cells once more in the same kernel, in quick "
                          "mode (course_utils.nbval_plugin)")


def _second_round(cells: list) -> list:
    """The switch to quick mode, then a copy of every cell of one notebook (nbval items, in order)."""
    import copy

    import nbformat

    first = cells[0]
    cls, parent = type(first), first.parent
    # the switch's own options: none of a first cell's markers (an NBVAL_SKIP there must not skip it)
    options = defaultdict(bool, check=getattr(parent, "compare_outputs", False))
    switch = cls.from_parent(parent, name=f"Cell {len(cells)}: to quick mode", cell_num=len(cells),
                             cell=nbformat.v4.new_code_cell(SWITCH_SOURCE), options=options)
    again = [switch]
    for item in cells:
        cell = nbformat.from_dict(copy.deepcopy(dict(item.cell)))
        again.append(cls.from_parent(parent, name=item.name + AGAIN, cell_num=item.cell_num, cell=cell,
                                     options=item.options))
    for item in again:
        item._course_round = 2
    return again


def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--nbval-again-quick", default=False):
        out, group = [], []
        for item in [*items, None]:
            if group and (item is None or item.parent is not group[0].parent):
                out += group + _second_round(group)
                group = []
            if item is not None and _is_nbval_cell(item):
                group.append(item)
            elif item is not None:
                out.append(item)
        items[:] = out
    for item in items:  # both rounds' cells
        if hasattr(item, "output_timeout"):  # nbval's IPyNbCell
            item.output_timeout = OUTPUT_WAIT_S


def _is_nbval_cell(item) -> bool:
    return hasattr(item, "test_outputs") and hasattr(item, "cell") and hasattr(item.parent, "nb")


def pytest_runtest_setup(item) -> None:
    if _is_nbval_cell(item) and not hasattr(item.parent, "_course_started"):
        item.parent._course_started = time.perf_counter()  # the kernel starts in the file's setup, just before


def _first_round(item) -> bool:
    return item is not None and _is_nbval_cell(item) and getattr(item, "_course_round", 1) == 1


def pytest_runtest_teardown(item, nextitem) -> None:
    folder = item.config.getoption("--nbval-save-executed", default=None)
    if not folder or not _first_round(item):
        return
    nb = item.parent.nb  # item.cell is one of nb.cells: the outputs go straight into the notebook
    ran = item.test_outputs is not None
    item.cell.outputs = list(item.test_outputs or [])
    item.cell.execution_count = item.cell_num + 1 if ran else None
    if _first_round(nextitem) and nextitem.parent is item.parent:
        return
    seconds = time.perf_counter() - getattr(item.parent, "_course_started", time.perf_counter())
    import nbformat

    from .config import quick_mode  # imported here: the grader loads this plugin too, and needs no torch

    nb.metadata[RUN_METADATA_KEY] = {
        "mode": "quick" if quick_mode() else "full",
        "seconds": round(seconds, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out / Path(str(item.parent.fspath)).name))
