"""How long each lesson runs, as README's syllabus gives it, for the tests that pick or order lessons.

The figures are README's column "full-mode run, 2 CPU cores", which ``make test`` measures (its
closing table, tests/report_times.py); quick mode takes about a fifth of that and keeps the order.

    python tests/notebook_times.py NOTEBOOK ...

prints the notebooks given, the longest first: ``make test-full`` passes them so to nbval, as with
two workers and one notebook each, starting the longest lessons first keeps one core from idling at
the end while the other finishes a long one. A notebook README does not time yet counts as the
longest (first to run, last to be picked as light).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\|\s*\[[^\]]*\]\((?:notebooks/)?(\d\d_\w+\.ipynb)\)\s*\|.*\|\s*([^|]*?)\s*\|\s*$", re.M)


def full_mode_minutes(readme: str = "") -> dict[str, float]:
    """{notebook file name: minutes} from README's syllabus; "< 1 min" counts as half a minute."""
    text = readme or README.read_text(encoding="utf-8")
    minutes = {}
    for name, cell in ROW.findall(text):
        m = re.match(r"(<\s*)?(\d+(?:\.\d+)?)\s*min", cell)
        if m:
            minutes[name] = float(m.group(2)) / (2 if m.group(1) else 1)
    return minutes


def longest_first(paths: list[str], minutes: dict[str, float]) -> list[str]:
    return sorted(paths, key=lambda p: (-minutes.get(Path(p).name, float("inf")), p))


def lightest(paths: list[Path], minutes: dict[str, float] | None = None) -> Path | None:
    """The notebook with the shortest run (ties: the shortest code), or None when ``paths`` is empty."""
    import nbformat

    minutes = full_mode_minutes() if minutes is None else minutes

    def size(path: Path) -> int:
        return sum(len(c.source) for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")

    return min(paths, key=lambda p: (minutes.get(p.name, float("inf")), size(p), p.name), default=None)


if __name__ == "__main__":
    print(" ".join(longest_first(sys.argv[1:], full_mode_minutes())))
