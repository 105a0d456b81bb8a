"""Grade student notebooks with nbval.

    python -m course_utils.grade submissions/ [--solutions notebooks/] [--json report.json]
                                 [--csv gradebook.csv] [--feedback feedback/]
                                 [--workers N] [--timeout SECONDS] [--quick] [--python PYTHON]

For each submitted notebook the grader

1. reads it (a file that is not a notebook gets a row in the report, not a crash)
   and brings it to the current nbformat with cell ids (Colab saves 4.0 without ids);
2. finds the solution notebook it belongs to: the one in ``--solutions`` (default:
   the course's ``notebooks/``) sharing the most exercise and check ids with it;
3. puts the instructor's checks back: every ``# CHECK`` cell is removed from the
   submission and all of the solution's checks of an exercise, visible and hidden,
   are inserted right after the submission's exercise cell. A check cell the student
   edited is flagged and scores nothing (the original still runs, for the record);
   each inserted check starts by verifying that the submission left the functions the
   checks rely on alone (:mod:`course_utils.integrity`), and a cell before the
   submission's first records them;
4. runs ``pytest --nbval-lax`` on that copy in a temporary folder with a per-cell
   timeout (an endless loop is interrupted, the rest still runs); the plugin
   :mod:`course_utils.grade_plugin` writes each cell's outcome from pytest's own
   reports and the kernel's error output;
5. scores each check cell: passed (its points), failed (the check's assertion failed or
   the stub still raises NotImplementedError), error (any other exception, a timeout, a
   dead kernel), missing (the exercise cell is gone) or flagged (the check was edited, or
   the submission replaced what the checks rely on). An exercise's points are the sum
   over its check cells: partial credit where they test separate things;
6. collects written answers for the instructor to grade by hand.

Many submissions are graded in parallel, one pytest process each. The exit
code is 0 only when every auto-graded check of every submission passed.
``--python`` runs the notebooks in another Python environment (one with pytest
and nbval added), for example one with the versions your students have: the
course's tests grade the solutions so on Colab's versions (requirements/colab.txt).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from . import integrity
from .release import (
    WRITTEN_PLACEHOLDER, check_id, check_info, exercise_id, exercise_ids, items, written_info,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOLUTIONS = REPO_ROOT / "notebooks"
DEFAULT_TIMEOUT = 600  # seconds per cell; full-mode training cells on a CPU can take minutes
PASSED, FAILED, ERROR, MISSING, FLAGGED = "passed", "failed", "error", "missing", "flagged"
PARTIAL = "partial"
ANSWERED, UNANSWERED = "answered", "unanswered"  # written answers, graded by hand
# Exceptions that mean "the answer is wrong or not written" rather than "the code crashed".
WRONG_ANSWER = {"CheckFailed", "AssertionError", "NotImplementedError"}
INTEGRITY_CELL_ID = "grader-integrity"
# A written answer handed back as released: the course's placeholder, or nbgrader's.
UNANSWERED_TEXTS = {WRITTEN_PLACEHOLDER, "YOUR ANSWER HERE"}


@dataclass
class CheckResult:
    key: str  # exercise id, or "id/part"
    status: str
    points: int
    max_points: int
    hidden: bool = False
    message: str = ""


@dataclass
class ItemResult:
    id: str
    kind: str  # code | predict | written
    status: str
    points: int | None  # None: a written answer, for the instructor
    max_points: int
    checks: list[CheckResult] = field(default_factory=list)
    message: str = ""
    answer: str | None = None  # the student's written answer


@dataclass
class SubmissionResult:
    path: str
    student: str
    status: str  # graded | unreadable | unmatched | crashed
    message: str = ""
    solution: str | None = None
    points: int = 0  # auto-graded points earned
    max_points: int = 0  # auto-graded points available
    written_points: int = 0  # points the instructor grades by hand
    passed: int = 0  # auto-graded items with every check passed
    total: int = 0  # auto-graded items
    items: list[ItemResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # integrity findings for the instructor
    other_errors: list[str] = field(default_factory=list)  # non-check cells that raised
    seconds: float = 0.0

    @property
    def all_passed(self) -> bool:
        return self.status == "graded" and self.total > 0 and self.points == self.max_points and not self.flags


class GradingEnvironmentError(RuntimeError):
    """The environment asked to run the notebooks (``--python``) cannot run them."""


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


def _same_source(a: str, b: str) -> bool:
    """Equal up to trailing whitespace (editors and Colab add or drop some)."""
    lines = lambda text: [line.rstrip() for line in text.strip().splitlines()]  # noqa: E731
    return lines(a) == lines(b)


def _grader_cell(source: str, cell_id: str):
    cell = nbformat.v4.new_code_cell(source)
    cell["id"] = cell_id
    return cell


def _check_cell_id(key: str) -> str:
    return "grader-check-" + re.sub(r"[^A-Za-z0-9-]", "-", key)[:50]


def prepare(nb, solution):
    """The submission ready to run; also ``{check key: cell id}`` and ``{check key: why it is flagged}``.

    Every ``# CHECK`` cell of the submission is dropped; all of the solution's checks of
    an exercise (visible and hidden, in the solution's order) go right after the (last)
    submission cell of that exercise, each starting with the integrity guard. A visible
    check whose submitted source differs from the solution's is flagged as edited. The
    first cell records what the checks rely on. Exercises with no cell in the submission
    have no checks in the copy (their keys are absent).
    """
    sol_checks = [(check_info(c), c.source) for c in solution.cells if check_info(c) is not None]
    submitted = {check_info(c).key: c.source for c in nb.cells if check_info(c) is not None}
    edited = {}
    for info, source in sol_checks:
        if not info.hidden and info.key in submitted and not _same_source(submitted[info.key], source):
            edited[info.key] = "the submission edited this check cell (the original was run instead)"
    wanted = set(exercise_ids(solution))
    kept = [c for c in nb.cells if check_id(c) is None]
    last = {}
    for n, cell in enumerate(kept):
        if (i := exercise_id(cell)) in wanted:
            last[i] = n
    guard = ("import course_utils.integrity as _course_integrity\n"
             "_course_integrity.snapshot()  # what the checks rely on, before any of the submission's code")
    cells, where = [_grader_cell(guard, INTEGRITY_CELL_ID)], {}
    for n, cell in enumerate(kept):
        cells.append(cell)
        i = exercise_id(cell)
        if i in last and last[i] == n:
            for info, source in sol_checks:
                if info.exercise == i:
                    cid = _check_cell_id(info.key)
                    prelude = (f"__import__('course_utils.integrity').integrity.verify(globals(), "
                               f"{('check ' + info.key)!r})\n")
                    cells.append(_grader_cell(prelude + source, cid))
                    where[info.key] = cid
    out = nbformat.from_dict(copy.deepcopy(nb))
    out.cells = cells
    nbformat.validate(out)
    return out, where, edited


# --------------------------------------------------------------------------- running

def run_nbval(path: Path, timeout: float, env: dict, limit: float | None = None,
              python: str | None = None) -> dict[str, dict]:
    """Run nbval on one notebook with ``python`` (default: this one) and its kernel;
    ``{cell id: outcome}`` as :mod:`course_utils.grade_plugin` wrote it."""
    workdir = path.parent
    results_file = workdir / "cell-results.json"
    (workdir / "pytest.ini").write_text("[pytest]\naddopts =\n")
    cmd = [python or sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "course_utils.nbval_plugin",
           "-p", "course_utils.grade_plugin", f"--grade-results={results_file}",
           "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={timeout:g}",
           "-c", str(workdir / "pytest.ini"), "--rootdir", str(workdir), str(path)]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    try:
        log, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the pytest process and its kernel: a group we started
        log, _ = proc.communicate()
    (workdir / "pytest.log").write_text(log or "")
    if not results_file.exists():
        return {}
    return json.loads(results_file.read_text())


def _check_status(row: dict | None, timeout: float) -> tuple[str, str]:
    """(status, message) of one check cell from its recorded outcome."""
    if row is None:
        return ERROR, "the check did not run (grading stopped early)"
    if row["outcome"] == "passed":
        return PASSED, ""
    if row["outcome"] == "skipped":
        return ERROR, "the check cell was skipped"
    if row.get("timed_out"):
        return ERROR, f"timed out after {timeout:g} s (endless loop?)"
    name, message = row.get("ename", ""), " ".join(str(row.get("evalue", "")).split())
    text = f"{name}: {message}".strip(": ")[:500]
    if name == "IntegrityError":
        return FLAGGED, text
    return (FAILED if name in WRONG_ANSWER else ERROR), text


def student_name(path: Path, roots=()) -> str:
    """Who a submission belongs to: its first folder below a submissions folder, else the file's name."""
    path = Path(path)
    for root in roots:
        try:
            rel = path.resolve().relative_to(Path(root).resolve())
        except ValueError:
            continue
        if len(rel.parts) > 1:
            return rel.parts[0]
    return path.stem


def _written_answers(nb) -> dict[str, str]:
    answers = {}
    for cell in nb.cells:
        if (info := written_info(cell)) is not None:
            answers[info[0]] = cell.source.split("\n", 1)[1].strip() if "\n" in cell.source else ""
    return answers


def score(solution, where: dict, edited: dict, outcomes: dict, nb, timeout: float) -> list[ItemResult]:
    """Every item of the solution, scored from the cells' outcomes."""
    answers = _written_answers(nb)
    present = set(exercise_ids(nb))
    out = []
    for item in items(solution):
        if item.kind == "written":
            text = answers.get(item.id)
            if text is None:
                status, msg = MISSING, f"no markdown cell starting with '**Written answer {item.id}**'"
            elif not text or text in UNANSWERED_TEXTS:
                status, msg = UNANSWERED, "not answered"
            else:
                status, msg = ANSWERED, "for the instructor to grade"
            out.append(ItemResult(item.id, item.kind, status, None, item.points, message=msg, answer=text))
            continue
        checks = []
        for info in item.checks:
            if item.id not in present:
                status, msg = MISSING, f"no cell starting with '# EXERCISE {item.id}' or '# PREDICT {item.id}'"
            elif info.key not in where:
                status, msg = ERROR, "the check was not inserted"
            else:
                status, msg = _check_status(outcomes.get(where[info.key]), timeout)
            if info.key in edited:
                status, msg = FLAGGED, edited[info.key] + (f"; it {status}" if status else "")
            checks.append(CheckResult(info.key, status, info.points if status == PASSED else 0, info.points,
                                      info.hidden, msg))
        earned, possible = sum(c.points for c in checks), item.points
        statuses = {c.status for c in checks}
        if FLAGGED in statuses:
            status = FLAGGED
        elif statuses == {PASSED} or not checks:
            status = PASSED if checks else ERROR
        elif MISSING in statuses:
            status = MISSING
        elif earned > 0:  # (a right-format but wrong prediction passes only its 0-point check: failed)
            status = PARTIAL
        else:
            status = ERROR if ERROR in statuses else FAILED
        first_bad = next((c.message for c in checks if c.status != PASSED), "")
        out.append(ItemResult(item.id, item.kind, status, earned, possible, checks, first_bad))
    return out


def grade_one(path, solutions, *, timeout: float = DEFAULT_TIMEOUT, env: dict | None = None,
              roots=(), python: str | None = None) -> SubmissionResult:
    """Grade one submission against the loaded ``solutions``; never raises for a bad submission."""
    path = Path(path)
    start = time.monotonic()
    result = SubmissionResult(path=str(path), student=student_name(path, roots), status="graded")
    try:
        nb = read_submission(path)
        match = match_solution(nb, solutions, path.name)
        if match is None:
            known = ", ".join(Path(p).name for p, _ in solutions) or "none"
            raise SubmissionError(f"none of its exercises belongs to the solution notebooks ({known})")
        sol_path, solution = match
        result.solution = str(sol_path)
        prepared, where, edited = prepare(nb, solution)
        with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
            target = Path(tmp) / (re.sub(r"[^\w.-]", "_", path.stem) + ".ipynb")
            nbformat.write(prepared, str(target))
            n_code = sum(c.cell_type == "code" for c in prepared.cells)
            outcomes = run_nbval(target, timeout, env or dict(os.environ), limit=timeout * (n_code + 2) + 120,
                                 python=python)
        if INTEGRITY_CELL_ID in outcomes and outcomes[INTEGRITY_CELL_ID]["outcome"] != "passed":
            result.flags.append("the grader's integrity cell failed: " + _check_status(
                outcomes[INTEGRITY_CELL_ID], timeout)[1])
        result.items = score(solution, where, edited, outcomes, nb, timeout)
        for key, why in edited.items():
            result.flags.append(f"check {key}: {why}")
        for item in result.items:
            for check in item.checks:
                if check.status == FLAGGED and check.key not in edited:
                    result.flags.append(f"check {check.key}: {check.message}")
        for n, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and check_id(cell) is None:
                result.flags += [f"cell {n}, {found} (assigns to a library or course name)"
                                 for found in integrity.patched_names(cell.source)]
        grader_cells = set(where.values()) | {INTEGRITY_CELL_ID}
        code_num = {c.get("id"): k for k, c in enumerate(c for c in prepared.cells if c.cell_type == "code")}
        for cid, row in outcomes.items():
            # a skipped cell (e.g. # NBVAL_SKIP on a slow demonstration) is not an error of the student's
            if cid not in grader_cells and row["outcome"] == "failed":
                result.other_errors.append(f"Cell {code_num.get(cid, '?')}: {_check_status(row, timeout)[1]}")
        auto = [i for i in result.items if i.kind != "written"]
        result.points = sum(i.points for i in auto)
        result.max_points = sum(i.max_points for i in auto)
        result.written_points = sum(i.max_points for i in result.items if i.kind == "written")
        result.total = len(auto)
        result.passed = sum(i.status == PASSED for i in auto)
    except SubmissionError as err:
        result.status = "unmatched" if "belongs" in str(err) else "unreadable"
        result.message = str(err)
    except Exception as err:  # noqa: BLE001 - one bad submission must not stop the batch
        result.status, result.message = "crashed", f"grader error: {type(err).__name__}: {err}"
    result.seconds = round(time.monotonic() - start, 1)
    return result


def check_grading_python(python: str) -> None:
    """Refuse, with what to do, a Python that cannot run the grader's nbval (missing, or without nbval)."""
    try:
        found = subprocess.run([python, "-c", "import nbval, pytest, ipykernel"], capture_output=True, text=True,
                               timeout=120)
    except OSError as err:
        raise GradingEnvironmentError(f"--python {python}: cannot run it ({err}); give the path of a Python "
                                      "interpreter, e.g. .venv-colab/bin/python") from None
    if found.returncode != 0:
        last = found.stderr.strip().splitlines()[-1] if found.stderr.strip() else "import failed"
        raise GradingEnvironmentError(f"--python {python}: that environment lacks what grading needs ({last}); "
                                      f"install it there: {python} -m pip install nbval pytest ipykernel")


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
          quick: bool | None = None, python: str | None = None) -> dict:
    """Grade submissions (files or folders) in parallel; returns the report as a dict.

    ``python``: the interpreter that runs nbval and the kernels (default: this one); its
    environment needs pytest and nbval besides what the notebooks import.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if python is not None:
        check_grading_python(python)
    files = expand(paths)
    roots = [p for p in map(Path, paths) if p.is_dir()]
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
        results = list(pool.map(lambda f: grade_one(f, sols, timeout=timeout, env=env, roots=roots, python=python),
                                files))
    points, max_points = sum(r.points for r in results), sum(r.max_points for r in results)
    return {
        "solutions": [str(p) for p, _ in sols],
        "timeout_s": timeout,
        "points": points,
        "max_points": max_points,
        "passed": sum(r.passed for r in results),
        "total": sum(r.total for r in results),
        "score": round(100 * points / max_points, 1) if max_points else 0.0,
        "all_passed": bool(results) and all(r.all_passed for r in results),
        "submissions": [asdict(r) for r in results],
    }


# --------------------------------------------------------------------------- reporting

def format_report(report: dict) -> str:
    lines = []
    for sub in report["submissions"]:
        head = f"{sub['path']}  [{sub['student']}]"
        if sub["status"] == "graded":
            head += f"  ({Path(sub['solution']).name})  {sub['points']}/{sub['max_points']} points"
            if sub["written_points"]:
                head += f" + {sub['written_points']} for written answers, graded by hand"
        else:
            head += f"  {sub['status'].upper()}: {sub['message']}"
        lines.append(head)
        width = max([len(i["id"]) for i in sub["items"]] + [8])
        for i in sub["items"]:
            pts = f"{i['points']}/{i['max_points']}" if i["points"] is not None else f"-/{i['max_points']}"
            lines.append(f"  {i['id']:<{width}}  {i['status']:<10}  {pts:>5}  {i['message'][:100]}".rstrip())
        for flag in sub["flags"]:
            lines.append(f"  FLAG: {flag[:150]}")
        for err in sub["other_errors"][:5]:
            lines.append(f"  (not graded) {err[:110]}")
        lines.append("")
    width = max([len(Path(s["path"]).name) for s in report["submissions"]] + [10])
    lines.append(f"{'submission':<{width}}  {'points':>8}  status")
    for sub in report["submissions"]:
        pts = f"{sub['points']}/{sub['max_points']}" if sub["status"] == "graded" else "-"
        flag = "  FLAGGED" if sub["flags"] else ""
        lines.append(f"{Path(sub['path']).name:<{width}}  {pts:>8}  {sub['status']}{flag}")
    lines.append(f"total: {report['points']}/{report['max_points']} auto-graded points ({report['score']:.1f}%)")
    return "\n".join(lines)


def gradebook_rows(report: dict) -> tuple[list[str], list[dict]]:
    """Columns and rows of the gradebook: one row per student, one column per item (points earned).

    Written answers get an empty cell for the instructor's mark; ``flags`` counts integrity findings.
    """
    columns, rows = [], {}
    for sub in report["submissions"]:
        for i in sub["items"]:
            if i["id"] not in columns:
                columns.append(i["id"])
    for sub in report["submissions"]:
        row = rows.setdefault(sub["student"], {"student": sub["student"], "auto_points": 0, "auto_max": 0,
                                               "written_max": 0, "flags": 0, "notebooks": 0})
        row["notebooks"] += 1
        row["flags"] += len(sub["flags"]) + (sub["status"] != "graded")
        for i in sub["items"]:
            row[i["id"]] = "" if i["points"] is None else i["points"]
        row["auto_points"] += sub["points"]
        row["auto_max"] += sub["max_points"]
        row["written_max"] += sub["written_points"]
    header = ["student"] + columns + ["auto_points", "auto_max", "written_max", "flags", "notebooks"]
    return header, [rows[k] for k in sorted(rows)]


def write_gradebook(report: dict, path: Path) -> Path:
    header, rows = gradebook_rows(report)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def feedback_text(sub: dict) -> str:
    """A submission's feedback as Markdown: every item, its score, the check's message, the written answers."""
    name = Path(sub["path"]).name
    lines = [f"# Feedback: {name} ({sub['student']})", ""]
    if sub["status"] != "graded":
        return "\n".join(lines + [f"Not graded: {sub['message']}", ""])
    lines += [f"Auto-graded: **{sub['points']} / {sub['max_points']} points**"
              + (f"; written answers ({sub['written_points']} points) are graded by your instructor."
                 if sub["written_points"] else "."), ""]
    for i in sub["items"]:
        pts = f"{i['points']}/{i['max_points']}" if i["points"] is not None else f"?/{i['max_points']}"
        lines.append(f"## {i['id']} ({i['kind']}): {i['status']}, {pts} points")
        for c in i["checks"]:
            label = c["key"] + (" (hidden check)" if c["hidden"] else "")
            lines.append(f"- {label}: {c['status']}, {c['points']}/{c['max_points']}"
                         + (f". {c['message']}" if c["message"] else ""))
        if i["kind"] == "written":
            lines += ["", "Your answer:", "", *(f"> {line}" for line in (i["answer"] or "(none)").splitlines())]
        lines.append("")
    if sub["flags"]:
        lines += ["## Integrity", *(f"- {f}" for f in sub["flags"]), ""]
    if sub["other_errors"]:
        lines += ["## Other cells that raised (not graded)", *(f"- {e}" for e in sub["other_errors"]), ""]
    return "\n".join(lines)


def write_feedback(report: dict, folder: Path) -> list[Path]:
    """One Markdown file per submission in ``folder``, named after the student and the notebook."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for sub in report["submissions"]:
        stem = Path(sub["path"]).stem
        base = stem if sub["student"] == stem else f"{sub['student']}__{stem}"
        base = re.sub(r"[^\w.-]", "_", base)
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        target = folder / f"{name}.md"
        target.write_text(feedback_text(sub))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", help="submitted .ipynb files and/or folders of them")
    parser.add_argument("--solutions", nargs="+", default=[str(DEFAULT_SOLUTIONS)],
                        help="solution notebooks or folders (default: the course's notebooks/)")
    parser.add_argument("--json", type=Path, help="write the machine-readable report here")
    parser.add_argument("--csv", type=Path, help="write a gradebook: one row per student, one column per item")
    parser.add_argument("--feedback", type=Path, help="write one feedback file per submission into this folder")
    parser.add_argument("--workers", type=int, default=None, help="submissions graded at once (default: cores)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds allowed per cell")
    parser.add_argument("--quick", action="store_true", help="run the notebooks in quick mode (COURSE_QUICK=1)")
    parser.add_argument("--python", help="run the notebooks with this Python (an environment with nbval and pytest, "
                                         "e.g. your students' versions); default: this one")
    args = parser.parse_args(argv)
    files = expand(args.submissions)
    if not files:
        print("error: no submissions found", file=sys.stderr)
        return 2
    if not load_solutions(args.solutions):
        print(f"error: no solution notebooks with exercises in {args.solutions}", file=sys.stderr)
        return 2
    try:
        report = grade(args.submissions, args.solutions, workers=args.workers, timeout=args.timeout,
                       quick=True if args.quick else None, python=args.python)
    except GradingEnvironmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}")
    if args.csv:
        print(f"gradebook written to {write_gradebook(report, args.csv)}")
    if args.feedback:
        print(f"{len(write_feedback(report, args.feedback))} feedback files written to {args.feedback}")
    return 0 if report["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
