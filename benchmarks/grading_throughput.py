"""How many submissions per minute the grader handles, in quick mode.

    python benchmarks/grading_throughput.py [--notebook notebooks/04_layer_group_instance_norm.ipynb]
                                            [--copies 4] [--workers 2]

Makes ``--copies`` submissions of one lesson (half the solution, half the student
release: full marks and zero both run every cell), grades them all with
``course_utils.grade`` as an instructor would (``--workers`` at once, quick mode), and
prints the wall time, submissions per minute and the seconds per submission. The last
line is the same as JSON. Run it on an idle machine: the figure is a throughput, and
anything else running takes cores from the kernels.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import nbformat  # noqa: E402

from course_utils import grade as G  # noqa: E402
from course_utils.release import release_notebook  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", type=Path, default=REPO / "notebooks" / "04_layer_group_instance_norm.ipynb")
    parser.add_argument("--copies", type=int, default=4, help="submissions to grade (half solved, half not)")
    parser.add_argument("--workers", type=int, default=2, help="submissions graded at once")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    solution = nbformat.read(args.notebook, as_version=4)
    student = release_notebook(solution)
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        subs = Path(tmp) / "submissions"
        for k in range(args.copies):
            folder = subs / f"student{k:02d}"
            folder.mkdir(parents=True)
            if k % 2 == 0:
                shutil.copy(args.notebook, folder / args.notebook.name)
            else:
                nbformat.write(student, str(folder / args.notebook.name))
        start = time.perf_counter()
        report = G.grade([subs], [args.notebook], workers=args.workers, timeout=args.timeout, quick=True)
        seconds = time.perf_counter() - start
    graded = sum(s["status"] == "graded" for s in report["submissions"])
    per_minute = 60 * graded / seconds
    print(f"notebook: {args.notebook.name}; {graded} of {args.copies} submissions graded, {args.workers} at once, "
          f"quick mode, {os.cpu_count()} cores")
    print(f"wall time {seconds:.1f} s: {per_minute:.1f} submissions per minute, "
          f"{seconds / max(graded, 1):.1f} s per submission")
    result = {"notebook": args.notebook.name, "copies": args.copies, "graded": graded, "workers": args.workers,
              "cores": os.cpu_count(), "seconds": round(seconds, 1), "per_minute": round(per_minute, 2),
              "points": report["points"], "max_points": report["max_points"]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
