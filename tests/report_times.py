"""Where ``make test``'s time went: read the JUnit reports its passes wrote and print one table.

    python tests/report_times.py build/test-reports

Each pass of ``make test`` writes ``<pass>.xml`` there (pytest ``--junitxml``): ``quick`` (the
quick suite, which grades every lesson's solution on Colab's versions and its student version
here), ``full`` (every notebook in full mode under nbval, then once more in quick mode in the same
kernel), ``site`` (the site built from the full pass's notebooks). Printed: each pass's
wall-clock time; time per test file; and per notebook, the time of each run of it (the full pass
sums nbval's per-cell times, which leave out the kernel's start). Test times under pytest-xdist
are each test's own, so a file's sum can exceed the pass's wall clock.
"""
from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

PASSES = ("quick", "full", "site")
NOTEBOOK = re.compile(r"(\d\d_[A-Za-z0-9_]+?)(?:\.ipynb)?$")
# tests that run one whole notebook each, by the column they feed
NOTEBOOK_TESTS = {
    "test_the_solution_gets_full_marks_on_colab_versions": "solution graded (Colab)",
    "test_a_notebook_without_exercises_passes_nbval_on_colab_versions": "solution graded (Colab)",
    "test_the_student_version_gets_zero_failing_only_at_its_checks": "student version graded",
}
FULL, AGAIN = "full mode", "again, quick"  # the full pass's two rounds (course_utils.nbval_plugin)


def _cases(path: Path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    wall = sum(float(s.get("time", 0)) for s in suites)
    cases = [c for s in suites for c in s.iter("testcase")]
    return wall, cases


def _file_of(case) -> str:
    # pytest's classname: "tests.test_layers" or "tests.test_layers.TestX"; nbval's: "03_why...ipynb"
    cls = case.get("classname", "")
    if cls.endswith(".ipynb") or case.get("file", "").endswith(".ipynb"):
        return "notebooks/" + Path(case.get("file") or cls).name
    parts = cls.split(".")
    while parts and not parts[-1].startswith("test_"):
        parts.pop()
    return "/".join(parts) + ".py" if parts else cls


def collect(folder: Path) -> dict:
    walls, per_file, per_notebook = {}, defaultdict(lambda: [0, 0.0]), defaultdict(dict)
    for name in PASSES:
        path = folder / f"{name}.xml"
        if not path.is_file():
            continue
        wall, cases = _cases(path)
        walls[name] = wall
        for case in cases:
            seconds = float(case.get("time", 0))
            where = _file_of(case)
            if name == "full" and where.startswith("notebooks/"):
                nb = NOTEBOOK.search(Path(where).stem + ".ipynb").group(1)
                cell = case.get("name", "")
                column = AGAIN if ("(again" in cell or "to quick mode" in cell) else FULL
                per_notebook[nb][column] = per_notebook[nb].get(column, 0.0) + seconds
                continue
            per_file[(name, where)][0] += 1
            per_file[(name, where)][1] += seconds
            test, _, param = case.get("name", "").partition("[")
            if test in NOTEBOOK_TESTS and (m := NOTEBOOK.search(param.rstrip("]"))):
                per_notebook[m.group(1)][NOTEBOOK_TESTS[test]] = seconds
    return {"walls": walls, "per_file": dict(per_file), "per_notebook": dict(per_notebook)}


def format_tables(data: dict) -> str:
    lines = ["", "== Where make test's time went (seconds) =="]
    walls = data["walls"]
    lines.append("pass        wall clock")
    for name in PASSES:
        if name in walls:
            lines.append(f"{name:<10} {walls[name]:>11.0f}")
    lines.append(f"{'all passes':<10} {sum(walls.values()):>11.0f}")
    lines += ["", f"{'test file (pass)':<52} {'tests':>5} {'seconds':>8}"]
    for (name, where), (n, seconds) in sorted(data["per_file"].items(), key=lambda kv: -kv[1][1]):
        lines.append(f"{where + ' (' + name + ')':<52} {n:>5} {seconds:>8.0f}")
    columns = [FULL, AGAIN, *dict.fromkeys(NOTEBOOK_TESTS.values())]
    lines += ["", f"{'notebook':<38}" + "".join(f"{c:>26}" for c in columns)]
    totals = dict.fromkeys(columns, 0.0)
    for nb in sorted(data["per_notebook"]):
        row = data["per_notebook"][nb]
        cells = []
        for c in columns:
            cells.append(f"{row[c]:>26.0f}" if c in row else f"{'-':>26}")
            totals[c] += row.get(c, 0.0)
        lines.append(f"{nb:<38}" + "".join(cells))
    lines.append(f"{'sum':<38}" + "".join(f"{totals[c]:>26.0f}" for c in columns))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "build/test-reports")
    if not any((folder / f"{p}.xml").is_file() for p in PASSES):
        print(f"report_times: no test reports in {folder}/ (make test writes them)", file=sys.stderr)
        return 1
    print(format_tables(collect(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
