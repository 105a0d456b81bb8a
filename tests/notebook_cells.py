"""Cells of a course notebook, found by their first line or their content, and run in a namespace.

The exercise tests (test_exercises_*.py) run a notebook's own cells with a chosen answer in place
of the solution; these helpers are what they share.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from course_utils.checks import CheckFailed

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


def run_from(base: dict, *sources: str) -> dict:
    """Execute ``sources`` in a copy of the namespace ``base`` (a module fixture several tests share)."""
    return run_cells(*sources, namespace=dict(base))


def run_allowing_failure(namespace: dict, *sources: str) -> None:
    """Execute ``sources``, going on when a check fails: earlier check cells define helpers later ones use."""
    for source in sources:
        try:
            run_cells(source, namespace=namespace)
        except (CheckFailed, NotImplementedError):
            pass


def failure_message(namespace: dict, *checks: str, before: tuple[str, ...] = ()) -> str:
    """Run ``before`` (failing or not), then ``checks``, which must fail; the failure's message."""
    run_allowing_failure(namespace, *before)
    with pytest.raises((CheckFailed, NotImplementedError)) as failure:
        run_cells(*checks, namespace=namespace)
    return str(failure.value)
