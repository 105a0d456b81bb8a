"""Cells of a course notebook, found by their first line or their content, and run in a namespace.

The exercise tests (test_exercises_*.py) run a notebook's own cells with a chosen answer in place
of the solution; these helpers are what they share.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat

from course_utils.release import release_notebook


def code_cell(path: Path, *, starts: str | None = None, contains: str | None = None, student: bool = False) -> str:
    """Source of the one code cell that starts with ``starts`` or contains ``contains`` (of the student version)."""
    nb = nbformat.read(path, as_version=4)
    if student:
        nb = release_notebook(nb)
    found = [c.source for c in nb.cells if c.cell_type == "code"
             and (starts is None or c.source.startswith(starts)) and (contains is None or contains in c.source)]
    assert len(found) == 1, f"{path.name}: expected one code cell matching {starts or contains!r}, found {len(found)}"
    return found[0]


def run_cells(*sources: str, namespace: dict | None = None) -> dict:
    """Execute ``sources`` in order in ``namespace`` (a new one by default) and return it."""
    namespace = {} if namespace is None else namespace
    for source in sources:
        exec(compile(source, "<notebook cell>", "exec"), namespace)
    return namespace


def planted(source: str, right: str, wrong: str) -> str:
    """The solution ``source`` with one typical mistake: ``right`` (found exactly once) replaced by ``wrong``."""
    assert source.count(right) == 1, f"planted bug: {right!r} is not in the solution exactly once"
    return source.replace(right, wrong)


def quick_namespace(*sources: str) -> dict:
    """Run ``sources`` (a notebook's setup cells) in quick mode on the CPU, the environment restored after."""
    old = dict(os.environ)
    os.environ.update(COURSE_QUICK="1", COURSE_DEVICE="cpu", MPLBACKEND="agg")
    try:
        return run_cells(*sources)
    finally:
        os.environ.clear()
        os.environ.update(old)
