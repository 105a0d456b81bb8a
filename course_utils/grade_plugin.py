"""pytest plugin the grader loads next to nbval: each cell's outcome, read from pytest's own reports.

    pytest -p course_utils.grade_plugin --grade-results results.json --nbval-lax notebook.ipynb

For every nbval cell item it records, by the cell's id, pytest's outcome of the
item (passed, failed, skipped) and, for a cell that raised, the exception's name
and message as the kernel reported them (nbval keeps the kernel's ``error`` output
in ``item.test_outputs``), or that the cell ran past its time limit. The grader
reads the JSON file this writes; nothing is parsed out of printed tracebacks.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

_RESULTS: dict[str, dict] = {}


def pytest_addoption(parser) -> None:
    parser.addoption("--grade-results", default=None, help="write each notebook cell's outcome here (JSON)")


def _error_output(item) -> dict | None:
    for out in getattr(item, "test_outputs", None) or []:
        if out.get("output_type") == "error":
            return out
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    cell = getattr(item, "cell", None)
    if cell is None or not hasattr(item, "cell_num"):
        return  # not an nbval cell
    if report.when == "call" or (report.when == "setup" and not report.passed):
        row = {"cell_num": item.cell_num, "outcome": report.outcome, "ename": "", "evalue": "", "timed_out": False}
        if report.failed:
            error = _error_output(item)
            if error is not None:
                row["ename"], row["evalue"] = error.get("ename", ""), error.get("evalue", "")
            else:  # nbval raised without a kernel error: a time-out or a dead kernel
                exc = call.excinfo.value if call.excinfo is not None else None
                row["ename"] = type(exc).__name__ if exc is not None else "Error"
                row["evalue"] = str(getattr(exc, "args", [""])[0] if exc is not None else "")[:500]
            parent = getattr(item, "parent", None)
            text = f"{row['evalue']} {call.excinfo.value if call.excinfo is not None else ''}"
            row["timed_out"] = "Timeout" in text or (row["ename"] == "KeyboardInterrupt"
                                                     and bool(getattr(parent, "timed_out", False)))
        _RESULTS[cell.get("id") or f"cell-{item.cell_num}"] = row


def pytest_sessionfinish(session) -> None:
    path = session.config.getoption("--grade-results")
    if path:
        Path(path).write_text(json.dumps(_RESULTS, indent=1))
