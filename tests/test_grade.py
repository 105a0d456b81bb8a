"""The grade command, on a tiny fixture notebook and on one real course notebook.

One batch of submissions is graded once (in parallel, as an instructor would)
and the tests read its report: solution, released student version, one wrong
answer, tampered checks, a Colab-saved file, a file that is not a notebook,
reordered cells, another exercise set and an endless loop.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from course_utils import grade as G
from course_utils.release import check_cells, check_id, exercise_id, exercise_ids, release_notebook

FIXTURES = Path(__file__).parent / "fixtures"
SOLUTIONS = FIXTURES / "solutions"
TINY = SOLUTIONS / "tiny_exercises.ipynb"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
IDS = ["ex90-minmax", "ex90-channel-mean", "ex90-zscore"]
TIMEOUT = 30  # seconds per cell: the fixture's cells take well under a second, importing torch a few


def tiny():
    return nbformat.read(TINY, as_version=4)


def cell_of(nb, ex_id, kind="exercise"):
    find = exercise_id if kind == "exercise" else check_id
    return next(c for c in nb.cells if find(c) == ex_id)


def replace_body(nb, ex_id, old, new):
    cell = cell_of(nb, ex_id)
    assert old in cell.source
    cell.source = cell.source.replace(old, new)
    return nb


def write(nb, path: Path) -> Path:
    nbformat.write(nb, str(path))
    return path


def make_submissions(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    subs = {"solution": write(tiny(), folder / "solution.ipynb"),
            "student": write(release_notebook(tiny()), folder / "student.ipynb")}
    # one wrong answer: min-max forgets to subtract the minimum
    subs["one_wrong"] = write(replace_body(tiny(), "ex90-minmax", "(x - lo) / (hi - lo)", "x / (hi - lo)"),
                              folder / "one_wrong.ipynb")
    # tampering: a wrong answer whose check is edited to `pass`; a deleted check (right answer);
    # a deleted exercise cell whose check is left behind
    nb = replace_body(tiny(), "ex90-minmax", "(x - lo) / (hi - lo)", "x / (hi - lo)")
    cell_of(nb, "ex90-minmax", "check").source = "# CHECK ex90-minmax\npass"
    nb.cells.remove(cell_of(nb, "ex90-channel-mean", "check"))
    nb.cells.remove(cell_of(nb, "ex90-zscore"))
    subs["tampered"] = write(nb, folder / "tampered.ipynb")
    # cells reordered: exercises in reverse order, every check moved before its exercise
    nb = tiny()
    head = [c for c in nb.cells if not (exercise_id(c) or check_id(c))]
    exercises = [c for c in nb.cells if exercise_id(c)]
    checks = [c for c in nb.cells if check_id(c)]
    nb.cells = head[:3] + checks + exercises[::-1] + head[3:]
    subs["reordered"] = write(nb, folder / "reordered.ipynb")
    # an endless loop in one answer: the per-cell timeout interrupts it, the rest still runs
    subs["endless"] = write(replace_body(tiny(), "ex90-zscore", "        return (x - x.mean())",
                                         "        while True:\n            pass\n        return (x - x.mean())"),
                            folder / "endless.ipynb")
    for name in ("colab_saved", "not_a_notebook", "other_exercises"):
        subs[name] = Path(shutil.copy(FIXTURES / f"{name}.ipynb", folder / f"{name}.ipynb"))
    return subs


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Grade the whole batch once through the command line (main), two at a time."""
    tmp = tmp_path_factory.mktemp("grading")
    subs = make_submissions(tmp / "subs")
    report_path = tmp / "report.json"
    code = G.main([str(tmp / "subs"), "--solutions", str(SOLUTIONS), "--json", str(report_path),
                   "--workers", "2", "--timeout", str(TIMEOUT)])
    report = json.loads(report_path.read_text())
    rows = {Path(r["path"]).stem: r for r in report["submissions"]}
    return code, report, rows, subs


def statuses(row) -> dict[str, str]:
    return {e["id"]: e["status"] for e in row["exercises"]}


def test_every_submission_gets_a_row_and_the_exit_code_says_not_all_passed(batch):
    code, report, rows, subs = batch
    assert set(rows) == set(subs)
    assert code == 1 and report["all_passed"] is False
    assert report["total"] == 3 * 7  # seven gradable submissions of three exercises each
    assert report["passed"] == sum(r["passed"] for r in rows.values())


def test_solution_scores_full_marks(batch):
    row = batch[2]["solution"]
    assert row["status"] == "graded" and row["solution"].endswith("tiny_exercises.ipynb")
    assert statuses(row) == dict.fromkeys(IDS, "passed")
    assert (row["passed"], row["total"]) == (3, 3) and row["other_errors"] == []


def test_released_student_version_scores_zero_on_every_exercise(batch):
    row = batch[2]["student"]
    assert statuses(row) == dict.fromkeys(IDS, "failed")
    assert row["passed"] == 0
    for e in row["exercises"]:
        assert e["message"] == f"NotImplementedError: {e['id']}: your code here"
    assert row["other_errors"] == []  # the student version fails at its checks and nowhere else


def test_one_wrong_answer_fails_exactly_that_exercise(batch):
    row = batch[2]["one_wrong"]
    assert statuses(row) == {"ex90-minmax": "failed", "ex90-channel-mean": "passed", "ex90-zscore": "passed"}
    wrong = row["exercises"][0]
    assert wrong["message"].startswith("CheckFailed: min_max(x): differs from the reference")


def test_editing_or_deleting_checks_does_not_help(batch):
    row = batch[2]["tampered"]
    assert statuses(row) == {"ex90-minmax": "failed",        # check edited to `pass`: the real one ran
                             "ex90-channel-mean": "passed",  # check deleted: re-inserted after the exercise
                             "ex90-zscore": "missing"}       # exercise cell deleted
    assert "EXERCISE ex90-zscore" in row["exercises"][2]["message"]


def test_colab_saved_notebook_is_normalized_and_graded(batch):
    row = batch[2]["colab_saved"]
    assert row["status"] == "graded" and statuses(row) == dict.fromkeys(IDS, "passed")


def test_reordered_cells_still_grade(batch):
    row = batch[2]["reordered"]
    assert statuses(row) == dict.fromkeys(IDS, "passed")


def test_endless_loop_times_out_without_stalling_the_rest(batch):
    row = batch[2]["endless"]
    assert statuses(row) == {"ex90-minmax": "passed", "ex90-channel-mean": "passed", "ex90-zscore": "error"}
    assert "timed out" in row["exercises"][2]["message"]
    assert row["seconds"] < TIMEOUT * 4


def test_bad_files_get_a_row_not_a_crash(batch):
    rows = batch[2]
    assert rows["not_a_notebook"]["status"] == "unreadable"
    assert "not a Jupyter notebook" in rows["not_a_notebook"]["message"]
    assert rows["other_exercises"]["status"] == "unmatched"
    assert "tiny_exercises.ipynb" in rows["other_exercises"]["message"]
    for name in ("not_a_notebook", "other_exercises"):
        assert rows[name]["total"] == 0 and rows[name]["exercises"] == []


def test_printed_table_names_every_exercise(batch):
    text = G.format_report(batch[1])
    for ex_id in IDS:
        assert ex_id in text
    assert "total: " in text and "UNREADABLE" in text and "UNMATCHED" in text


# ---------------------------------------------------------------- fast unit tests (no kernel)

def test_colab_format_is_upgraded_to_current_nbformat_with_ids():
    raw = json.loads((FIXTURES / "colab_saved.ipynb").read_text())
    assert raw["nbformat_minor"] == 0 and all("id" not in c for c in raw["cells"])
    nb = G.read_submission(FIXTURES / "colab_saved.ipynb")
    assert nb.nbformat_minor >= 5
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids) and all(ids)
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
    nbformat.validate(nb)


def test_prepare_puts_each_solution_check_after_its_exercise():
    sub = release_notebook(tiny())
    for cell in [c for c in sub.cells if check_id(c)]:
        sub.cells.remove(cell)
    sub.cells.append(nbformat.v4.new_code_cell("# CHECK ex90-minmax\nprint('fake')"))  # a stray, fake check
    prepared, where = G.prepare(sub, tiny())
    assert list(where) == IDS
    for ex_id, index in where.items():
        assert exercise_id(prepared.cells[index - 1]) == ex_id
        assert prepared.cells[index].source == cell_of(tiny(), ex_id, "check").source
    assert check_cells(prepared) == where  # the stray check is gone
    nbformat.validate(prepared)


def test_solution_is_matched_by_ids_not_by_name():
    sols = G.load_solutions(SOLUTIONS)
    assert G.match_solution(tiny(), sols, "renamed_by_student.ipynb")[0] == TINY
    other = nbformat.read(FIXTURES / "other_exercises.ipynb", as_version=4)
    assert G.match_solution(other, sols, "tiny_exercises.ipynb") is None


def test_exception_names_are_read_from_coloured_tracebacks():
    text = ("#x1B[31mCheckFailed#x1B[39m                       Traceback (most recent call last)\n"
            "Cell In[1], line 3\n#x1B[31mCheckFailed#x1B[39m: y: differs\nfrom the reference\n")
    assert G._last_exception(text) == ("CheckFailed", "y: differs from the reference")


# ---------------------------------------------------------------- one real course notebook

def fastest_exercise_notebook() -> Path | None:
    """Among notebooks with exercises, prefer those that train or load a pretrained model least, then the
    shortest: a stand-in for "fastest" that needs no run."""
    candidates = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if exercise_ids(nb):
            code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
            heavy = sum(code.count(word) for word in ("fit(", "load_pretrained", "pretrain_", "load_domain("))
            candidates.append((heavy, len(code), path))
    return min(candidates)[2] if candidates else None


@pytest.mark.notebooks
def test_real_course_notebook_solution_full_marks_student_zero(tmp_path):
    path = fastest_exercise_notebook()
    if path is None:
        pytest.skip("no notebook in notebooks/ has exercises yet (cells starting with '# EXERCISE <id>')")
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(path, subs / "solution.ipynb")
    write(release_notebook(nbformat.read(path, as_version=4)), subs / "student.ipynb")
    report = G.grade([subs], NOTEBOOKS, workers=2, timeout=600, quick=True)
    rows = {Path(r["path"]).stem: r for r in report["submissions"]}
    ids = exercise_ids(nbformat.read(path, as_version=4))
    assert rows["solution"]["solution"] == str(path)
    assert statuses(rows["solution"]) == dict.fromkeys(ids, "passed"), rows["solution"]
    assert statuses(rows["student"]) == dict.fromkeys(ids, "failed"), rows["student"]
    assert rows["student"]["other_errors"] == [], "cells after an exercise must not depend on the student's code"


def test_a_skipped_demonstration_cell_is_not_an_error(tmp_path):
    # a lesson may mark a slow demonstration # NBVAL_SKIP (the lab does); nbval reports it skipped, which
    # says nothing about the student's answers
    nb = tiny()
    nb.cells.insert(3, nbformat.v4.new_code_cell("# NBVAL_SKIP\nraise RuntimeError('a slow demonstration')"))
    subs = tmp_path / "subs"
    subs.mkdir()
    write(nb, subs / "with_skip.ipynb")
    report = G.grade([subs], SOLUTIONS, workers=1, timeout=TIMEOUT, quick=True)
    (row,) = report["submissions"]
    assert statuses(row) == dict.fromkeys(IDS, "passed"), row
    assert row["other_errors"] == [], row["other_errors"]
