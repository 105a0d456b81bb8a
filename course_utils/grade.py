"""Grade student notebooks with nbval.

    python -m course_utils.grade submissions/ [--solutions notebooks/] [--json report.json]
                                 [--workers N] [--timeout SECONDS] [--quick]

For each submitted notebook the grader

1. reads it (a file that is not a notebook gets a row in the report, not a crash)
   and brings it to the current nbformat with cell ids (Colab saves 4.0 without ids);
2. finds the solution notebook it belongs to: the one in ``--solutions`` (default:
   the course's ``notebooks/``) sharing the most exercise and check ids with it;
3. puts the instructor's check cells back: every cell whose first line is
   ``# CHECK <id>`` is removed from the submission and the solution's check is
   inserted right after the submission's ``# EXERCISE <id>`` cell. Editing a
   check, deleting it or moving cells around therefore changes nothing; an
   exercise whose cell is gone is "missing";
4. runs ``pytest --nbval-lax`` on that copy in a temporary folder with a
   per-cell timeout (an endless loop is interrupted, the rest still runs), and
   reads each cell's outcome from pytest's JUnit XML;
5. scores each exercise by its check cell: passed, failed (the check's
   assertion failed or the stub still raises NotImplementedError), error (any
   other exception, a timeout, a dead kernel) or missing.

Many submissions are graded in parallel, one pytest process each. The exit
code is 0 only when every check of every submission passed.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from .release import check_id, exercise_id, exercise_ids

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOLUTIONS = REPO_ROOT / "notebooks"
DEFAULT_TIMEOUT = 600  # seconds per cell; full-mode training cells on a CPU can take minutes
PASSED, FAILED, ERROR, MISSING = "passed", "failed", "error", "missing"
SKIPPED = "skipped"  # internal: a cell nbval skipped; reported as an error only for a check cell
# Exceptions that mean "the answer is wrong or not written" rather than "the code crashed".
WRONG_ANSWER = {"CheckFailed", "AssertionError", "NotImplementedError"}
ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*[A-Za-z]")  # JUnit XML escapes ESC as "#x1B"


@dataclass
class ExerciseResult:
    id: str
    status: str
    message: str = ""
    cell: int | None = None  # index of the check cell in the graded copy


@dataclass
class SubmissionResult:
    path: str
    status: str  # graded | unreadable | unmatched | crashed
    message: str = ""
    solution: str | None = None
    passed: int = 0
    total: int = 0
    exercises: list[ExerciseResult] = field(default_factory=list)
    other_errors: list[str] = field(default_factory=list)  # non-check cells that raised
    seconds: float = 0.0

    @property
    def all_passed(self) -> bool:
        return self.status == "graded" and self.total > 0 and self.passed == self.total


class SubmissionError(Exception):
    """A submission that cannot be graded; the message goes into its report row."""


# --------------------------------------------------------------------------- reading

def normalize(nb):
    """Bring a notebook to the current nbformat (4.5+: every cell has an id), outputs dropped."""
    nb = nbformat.from_dict(copy.deepcopy(nb))
    if nb.get("nbformat", 4) == 4 and nb.get("nbformat_minor", 0) < nbformat.v4.nbformat_minor:
        nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=nb.get("nbformat_minor", 0))
    seen = set()
    for cell in nb.cells:
        cid = cell.get("id")
        if not cid or cid in seen or not re.fullmatch(r"[a-zA-Z0-9-_]{1,64}", cid):
            cell["id"] = nbformat.corpus.words.generate_corpus_id()
        seen.add(cell["id"])
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    return nb


def read_submission(path: Path):
    """Read and normalize a submitted notebook; :class:`SubmissionError` says why not."""
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as err:  # noqa: BLE001 - not JSON, not a notebook, binary ...
        raise SubmissionError(f"not a Jupyter notebook ({type(err).__name__}: {str(err)[:200]})") from err
    try:
        return normalize(nb)
    except Exception as err:  # noqa: BLE001
        raise SubmissionError(f"notebook does not validate ({type(err).__name__}: {str(err)[:200]})") from err


def load_solutions(solutions) -> list[tuple[Path, object]]:
    """(path, notebook) of every solution notebook that has exercises, from a folder or files."""
    paths = []
    for item in [solutions] if isinstance(solutions, (str, Path)) else solutions:
        item = Path(item)
        paths += sorted(item.glob("*.ipynb")) if item.is_dir() else [item]
    found = []
    for p in paths:
        nb = nbformat.read(str(p), as_version=4)
        if exercise_ids(nb):
            found.append((p, nb))
    return found


def match_solution(nb, solutions, name: str = ""):
    """The solution notebook sharing the most exercise/check ids with ``nb`` (ties: same file name)."""
    ids = set(exercise_ids(nb)) | {i for i in (check_id(c) for c in nb.cells) if i}
    best, best_key = None, (0, False)
    for path, sol in solutions:
        key = (len(ids & set(exercise_ids(sol))), Path(path).name == Path(name).name)
        if key[0] and key > best_key:
            best, best_key = (path, sol), key
    return best


def prepare(nb, solution):
    """The submission with the solution's check cells in place; also {exercise id: check cell index}.

    Every ``# CHECK`` cell of the submission is dropped; each of the solution's
    checks goes right after the (last) submission cell of its exercise. Exercises
    with no cell in the submission map to None.
    """
    checks = {check_id(c): c.source for c in solution.cells if check_id(c)}
    wanted = exercise_ids(solution)
    kept = [c for c in nb.cells if check_id(c) is None]
    last = {}
    for n, cell in enumerate(kept):
        if (i := exercise_id(cell)) in wanted:
            last[i] = n
    cells, where = [], {i: None for i in wanted}
    for n, cell in enumerate(kept):
        cells.append(cell)
        i = exercise_id(cell)
        if i in last and last[i] == n and i in checks:
            check = nbformat.v4.new_code_cell(checks[i])
            check["id"] = f"grader-check-{len(cells)}"
            cells.append(check)
            where[i] = len(cells) - 1
    out = nbformat.from_dict(copy.deepcopy(nb))
    out.cells = cells
    nbformat.validate(out)
    return out, where


# --------------------------------------------------------------------------- running

def _last_exception(text: str) -> tuple[str, str]:
    """(exception name, message) from nbval's failure text (IPython's coloured traceback)."""
    text = ANSI.sub("", text)
    text = text.rsplit("Traceback:", 1)[-1].strip()
    header = re.search(r"^(\S+)\s+Traceback \(most recent call last\)", text, re.M)
    lines = text.splitlines()
    if header:  # IPython's header names the exception; its message follows the last "Name:" line
        name = header.group(1)
        for n in range(len(lines) - 1, -1, -1):
            if lines[n].startswith(name + ":") or lines[n] == name:
                message = [lines[n][len(name) + 1:]] + lines[n + 1:]
                return name.rsplit(".", 1)[-1], " ".join(part.strip() for part in message).strip()
    for line in reversed(lines):  # e.g. a SyntaxError has no header
        m = re.match(r"^([A-Za-z_][\w.]*):\s?(.*)$", line.strip())
        if m:
            return m.group(1).rsplit(".", 1)[-1], m.group(2)
    return "", lines[-1] if lines else ""


def run_nbval(path: Path, timeout: float, env: dict, limit: float | None = None) -> dict[int, tuple[str, str]]:
    """Run nbval on one notebook; ``{code cell number: (status, message)}`` for the cells that ran."""
    workdir = path.parent
    xml = workdir / "junit.xml"
    (workdir / "pytest.ini").write_text("[pytest]\naddopts =\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "course_utils.nbval_plugin",
           "--nbval-lax", "--nbval-current-env",
           f"--nbval-cell-timeout={timeout:g}", f"--junitxml={xml}", "-c", str(workdir / "pytest.ini"),
           "--rootdir", str(workdir), str(path)]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    try:
        log, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the pytest process and its kernel: a group we started
        log, _ = proc.communicate()
    (workdir / "pytest.log").write_text(log or "")
    results = {}
    if not xml.exists():
        return results
    for case in ET.parse(xml).getroot().iter("testcase"):
        m = re.fullmatch(r"Cell (\d+)", case.get("name", ""))
        if not m:
            continue
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            text = (bad.text or "") + "\n" + (bad.get("message") or "")
            if "Timeout of" in text:
                results[int(m.group(1))] = (ERROR, f"timed out after {timeout:g} s (endless loop?)")
                continue
            name, msg = _last_exception(bad.text or bad.get("message") or "")
            status = FAILED if name in WRONG_ANSWER else ERROR
            results[int(m.group(1))] = (status, f"{name}: {msg}".strip(": ")[:500])
        elif skipped is not None:
            results[int(m.group(1))] = (SKIPPED, "the cell was skipped")
        else:
            results[int(m.group(1))] = (PASSED, "")
    return results


def grade_one(path, solutions, *, timeout: float = DEFAULT_TIMEOUT, env: dict | None = None) -> SubmissionResult:
    """Grade one submission against the loaded ``solutions``; never raises for a bad submission."""
    path = Path(path)
    start = time.monotonic()
    result = SubmissionResult(path=str(path), status="graded")
    try:
        nb = read_submission(path)
        match = match_solution(nb, solutions, path.name)
        if match is None:
            known = ", ".join(Path(p).name for p, _ in solutions) or "none"
            raise SubmissionError(f"none of its exercises belongs to the solution notebooks ({known})")
        sol_path, solution = match
        result.solution = str(sol_path)
        prepared, where = prepare(nb, solution)
        code_num = {}  # notebook cell index -> nbval's "Cell N" (N counts code cells)
        for n, cell in enumerate(prepared.cells):
            if cell.cell_type == "code":
                code_num[n] = len(code_num)
        with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
            target = Path(tmp) / (re.sub(r"[^\w.-]", "_", path.stem) + ".ipynb")
            nbformat.write(prepared, str(target))
            n_code = len(code_num)
            outcomes = run_nbval(target, timeout, env or dict(os.environ),
                                 limit=timeout * (n_code + 2) + 120)
        for ex in exercise_ids(solution):
            cell = where[ex]
            if cell is None:
                has_cell = any(exercise_id(c) == ex for c in nb.cells)
                msg = ("the solution has no check for this exercise" if has_cell
                       else f"no cell starting with '# EXERCISE {ex}' in the submission")
                result.exercises.append(ExerciseResult(ex, ERROR if has_cell else MISSING, msg))
                continue
            status, msg = outcomes.get(code_num[cell], (ERROR, "the check did not run (grading stopped early)"))
            if status == SKIPPED:
                status, msg = ERROR, "the check cell was skipped"
            result.exercises.append(ExerciseResult(ex, status, msg, cell))
        checks = {code_num[c] for c in where.values() if c is not None}
        for num, (status, msg) in sorted(outcomes.items()):
            # a skipped cell (e.g. # NBVAL_SKIP on a slow demonstration) is not an error of the student's
            if status not in (PASSED, SKIPPED) and num not in checks:
                result.other_errors.append(f"Cell {num}: {msg}")
        result.total = len(result.exercises)
        result.passed = sum(e.status == PASSED for e in result.exercises)
    except SubmissionError as err:
        result.status = "unmatched" if "belongs" in str(err) else "unreadable"
        result.message = str(err)
    except Exception as err:  # noqa: BLE001 - one bad submission must not stop the batch
        result.status, result.message = "crashed", f"grader error: {type(err).__name__}: {err}"
    result.seconds = round(time.monotonic() - start, 1)
    return result


def expand(paths) -> list[Path]:
    """Files as given; folders become every .ipynb below them (checkpoints skipped)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        else:
            out.append(p)
    return out


def grade(paths, solutions=DEFAULT_SOLUTIONS, *, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT,
          quick: bool | None = None) -> dict:
    """Grade submissions (files or folders) in parallel; returns the report as a dict."""
    files = expand(paths)
    sols = load_solutions(solutions)
    workers = max(1, min(workers or os.cpu_count() or 1, len(files) or 1))
    env = dict(os.environ)
    if quick is not None:
        env["COURSE_QUICK"] = "1" if quick else "0"
    # Kernels import course_utils from this checkout even where it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if workers > 1:  # parallel kernels share the cores instead of each using all of them
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda f: grade_one(f, sols, timeout=timeout, env=env), files))
    passed, total = sum(r.passed for r in results), sum(r.total for r in results)
    return {
        "solutions": [str(p) for p, _ in sols],
        "timeout_s": timeout,
        "passed": passed,
        "total": total,
        "score": round(100 * passed / total, 1) if total else 0.0,
        "all_passed": bool(results) and all(r.all_passed for r in results),
        "submissions": [asdict(r) for r in results],
    }


# --------------------------------------------------------------------------- reporting

def format_report(report: dict) -> str:
    lines = []
    for sub in report["submissions"]:
        head = f"{sub['path']}"
        if sub["status"] == "graded":
            head += f"  ({Path(sub['solution']).name})  {sub['passed']}/{sub['total']}"
        else:
            head += f"  {sub['status'].upper()}: {sub['message']}"
        lines.append(head)
        width = max([len(e["id"]) for e in sub["exercises"]] + [8])
        for e in sub["exercises"]:
            lines.append(f"  {e['id']:<{width}}  {e['status']:<7}  {e['message'][:110]}".rstrip())
        for err in sub["other_errors"][:5]:
            lines.append(f"  (not graded) {err[:110]}")
        lines.append("")
    width = max([len(Path(s["path"]).name) for s in report["submissions"]] + [10])
    lines.append(f"{'submission':<{width}}  {'score':>7}  status")
    for sub in report["submissions"]:
        score = f"{sub['passed']}/{sub['total']}" if sub["status"] == "graded" else "-"
        lines.append(f"{Path(sub['path']).name:<{width}}  {score:>7}  {sub['status']}")
    lines.append(f"total: {report['passed']}/{report['total']} checks passed ({report['score']:.1f}%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", help="submitted .ipynb files and/or folders of them")
    parser.add_argument("--solutions", nargs="+", default=[str(DEFAULT_SOLUTIONS)],
                        help="solution notebooks or folders (default: the course's notebooks/)")
    parser.add_argument("--json", type=Path, help="write the machine-readable report here")
    parser.add_argument("--workers", type=int, default=None, help="submissions graded at once (default: cores)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds allowed per cell")
    parser.add_argument("--quick", action="store_true", help="run the notebooks in quick mode (COURSE_QUICK=1)")
    args = parser.parse_args(argv)
    files = expand(args.submissions)
    if not files:
        print("error: no submissions found", file=sys.stderr)
        return 2
    if not load_solutions(args.solutions):
        print(f"error: no solution notebooks with exercises in {args.solutions}", file=sys.stderr)
        return 2
    report = grade(files, args.solutions, workers=args.workers, timeout=args.timeout,
                   quick=True if args.quick else None)
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}")
    return 0 if report["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
