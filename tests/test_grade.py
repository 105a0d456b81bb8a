"""The grade command, on a tiny fixture notebook and on one real course notebook.

The fixture has every kind of graded item: a code exercise with two check cells (partial
credit), a predict-first question with a hidden check, an exercise with a hidden check, a
by-hand exercise and a written answer. One batch of submissions is graded once (in
parallel, as an instructor would) and the tests read its report, gradebook and feedback:
solution, released student version, one wrong answer, tampered checks, attacks on what the
checks rely on, delegation to the library, an answer tuned to the visible check, a
Colab-saved file, a file that is not a notebook, reordered cells, another exercise set and
an endless loop.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from filelock import FileLock

from course_utils import grade as G
from course_utils import integrity
from course_utils.release import (
    check_id, check_info, exercise_id, exercise_ids, items, release_cell_source, release_notebook,
)
from notebook_times import lightest

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


WRONG_MINMAX = ("(x - lo) / (hi - lo)", "x / (hi - lo)")  # forgets to subtract the minimum


def make_submissions(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    subs = {"solution": write(tiny(), folder / "solution.ipynb"),
            "student": write(release_notebook(tiny()), folder / "student.ipynb")}
    # one wrong answer: min-max values wrong, its dtype/shape part still right (partial credit)
    subs["one_wrong"] = write(replace_body(tiny(), "ex90-minmax", *WRONG_MINMAX), folder / "one_wrong.ipynb")
    # tampering: a wrong answer whose check is edited to `pass`; a deleted check (right answer);
    # a deleted exercise cell whose check is left behind
    nb = replace_body(tiny(), "ex90-minmax", *WRONG_MINMAX)
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
    # attacks, each with a wrong answer the checks would otherwise let through
    nb = replace_body(tiny(), "ex90-minmax", *WRONG_MINMAX)
    cell_of(nb, "ex90-minmax").source += "\ntorch.allclose = lambda *args, **kwargs: True"
    subs["patched_torch"] = write(nb, folder / "patched_torch.ipynb")
    nb = replace_body(tiny(), "ex90-channel-mean", "return x.mean(dim=(0, 2, 3))", "return x.mean(dim=(0, 1, 2))")
    cell_of(nb, "ex90-channel-mean").source += "\nsetattr(cu, 'check_close', lambda *args, **kwargs: None)"
    subs["patched_check"] = write(nb, folder / "patched_check.ipynb")
    nb = replace_body(tiny(), "ex90-minmax", *WRONG_MINMAX)
    cell_of(nb, "ex90-minmax").source += ("\nclass AlwaysFine:\n    def __getattr__(self, name):\n"
                                          "        return lambda *args, **kwargs: None\ncu = AlwaysFine()")
    subs["rebound_cu"] = write(nb, folder / "rebound_cu.ipynb")
    subs["delegating"] = write(replace_body(
        tiny(), "ex90-zscore", "        return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps)",
        "        return torch.nn.functional.layer_norm(x.flatten(), (x.numel(),), eps=eps).view_as(x)"),
        folder / "delegating.ipynb")
    # tuned to the visible check: right for 3 channels only; the hidden check uses 5
    subs["tuned"] = write(replace_body(tiny(), "ex90-channel-mean", "return x.mean(dim=(0, 2, 3))",
                                       "return torch.stack([x[:, c].mean() for c in range(3)])"),
                          folder / "tuned.ipynb")
    # a prediction in the right form but wrong: its 0-point "recorded" check passes, the graded one does not
    subs["wrong_prediction"] = write(replace_body(tiny(), "ex90-predict-max", "predict_max = 1.0", "predict_max = 0.5"),
                                     folder / "wrong_prediction.ipynb")
    for name in ("colab_saved", "not_a_notebook", "other_exercises"):
        subs[name] = Path(shutil.copy(FIXTURES / f"{name}.ipynb", folder / f"{name}.ipynb"))
    return subs


@pytest.fixture(scope="module")
def batch(request, tmp_path_factory):
    """Grade the whole batch once through the command line (main), two at a time.

    The tests only read what it wrote. Under pytest-xdist the tests of this file can land on both
    workers, and each would build this module fixture: the workers share one grading instead (the
    first grades, under a file lock in their common temporary folder; the other reads its files).
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if hasattr(request.config, "workerinput") else base
    tmp = shared / "grading-batch"
    with FileLock(str(shared / "grading-batch.lock")):
        if not (tmp / "exit_code.json").exists():
            tmp.mkdir(exist_ok=True)
            make_submissions(tmp / "subs")
            code = G.main([str(tmp / "subs"), "--solutions", str(SOLUTIONS), "--json", str(tmp / "report.json"),
                           "--csv", str(tmp / "gradebook.csv"), "--feedback", str(tmp / "feedback"),
                           "--workers", "2", "--timeout", str(TIMEOUT)])
            (tmp / "exit_code.json").write_text(json.dumps(code))
    code = json.loads((tmp / "exit_code.json").read_text())
    subs = {p.stem: p for p in sorted((tmp / "subs").glob("*.ipynb"))}
    report = json.loads((tmp / "report.json").read_text())
    rows = {Path(r["path"]).stem: r for r in report["submissions"]}
    return code, report, rows, subs, tmp


def statuses(row) -> dict[str, str]:
    return {i["id"]: i["status"] for i in row["items"]}


def points(row) -> dict[str, int | None]:
    return {i["id"]: i["points"] for i in row["items"]}


def check_statuses(row, item_id) -> dict[str, str]:
    item = next(i for i in row["items"] if i["id"] == item_id)
    return {c["key"]: c["status"] for c in item["checks"]}


ALL_PASSED = {"ex90-minmax": "passed", "ex90-predict-max": "passed", "ex90-channel-mean": "passed",
              "ex90-zscore": "passed", "ex90-written-eps": "answered"}


def test_items_and_points_of_the_fixture():
    found = items(tiny())
    assert [(i.id, i.kind, i.points) for i in found] == [
        ("ex90-minmax", "code", 3), ("ex90-predict-max", "predict", 1), ("ex90-channel-mean", "code", 2),
        ("ex90-zscore", "code", 1), ("ex90-written-eps", "written", 2)]
    assert IDS == [i.id for i in found if i.kind == "code"]


def test_every_submission_gets_a_row_and_the_exit_code_says_not_all_passed(batch):
    code, report, rows, subs, _ = batch
    assert set(rows) == set(subs)
    assert code == 1 and report["all_passed"] is False
    graded = [r for r in rows.values() if r["status"] == "graded"]
    assert len(graded) == 13 and all(r["max_points"] == 7 and r["written_points"] == 2 for r in graded)
    assert report["points"] == sum(r["points"] for r in rows.values())


def test_solution_scores_full_marks(batch):
    row = batch[2]["solution"]
    assert row["status"] == "graded" and row["solution"].endswith("tiny_exercises.ipynb")
    assert statuses(row) == ALL_PASSED
    assert (row["points"], row["max_points"]) == (7, 7) and row["other_errors"] == [] and row["flags"] == []
    assert next(i for i in row["items"] if i["kind"] == "written")["answer"].startswith("A constant input")


def test_released_student_version_scores_zero_on_every_item(batch):
    row = batch[2]["student"]
    assert statuses(row) == {"ex90-minmax": "failed", "ex90-predict-max": "failed", "ex90-channel-mean": "failed",
                             "ex90-zscore": "failed", "ex90-written-eps": "unanswered"}
    assert row["points"] == 0 and row["flags"] == []
    for i in row["items"]:
        if i["kind"] == "code":
            assert i["message"] == f"NotImplementedError: {i['id']}: your code here"
    assert "no prediction recorded" in next(i for i in row["items"] if i["kind"] == "predict")["message"]
    # the student version fails at its checks and nowhere else: the last cell falls back to the reference
    assert row["other_errors"] == []


def test_one_wrong_answer_loses_only_that_checks_points(batch):
    row = batch[2]["one_wrong"]
    assert statuses(row) == {**ALL_PASSED, "ex90-minmax": "partial"}
    assert check_statuses(row, "ex90-minmax") == {"ex90-minmax": "failed", "ex90-minmax/dtype": "passed"}
    assert points(row)["ex90-minmax"] == 2 and row["points"] == 7 - 1
    wrong = row["items"][0]
    assert wrong["message"].startswith("CheckFailed: min_max(x): differs from the reference")
    assert row["other_errors"] == []  # the cell after the exercise used the reference instead


def test_a_wrong_prediction_fails_and_says_what_the_experiment_shows(batch):
    row = batch[2]["wrong_prediction"]
    assert statuses(row) == {**ALL_PASSED, "ex90-predict-max": "failed"} and points(row)["ex90-predict-max"] == 0
    assert check_statuses(row, "ex90-predict-max") == {"ex90-predict-max/recorded": "passed",
                                                       "ex90-predict-max": "failed"}
    assert "you predicted 0.5; the experiment gives about 1" in row["items"][1]["message"]


def test_editing_a_check_is_flagged_and_deleting_one_does_not_help(batch):
    row = batch[2]["tampered"]
    assert statuses(row) == {"ex90-minmax": "flagged",       # check edited to `pass`: flagged, the real one ran
                             "ex90-predict-max": "passed", "ex90-channel-mean": "passed",  # deleted: re-inserted
                             "ex90-zscore": "missing", "ex90-written-eps": "answered"}
    assert points(row)["ex90-minmax"] == 2  # the untouched dtype part still counts
    assert any("ex90-minmax: the submission edited this check cell" in f for f in row["flags"])
    assert "EXERCISE ex90-zscore" in row["items"][3]["message"]


@pytest.mark.parametrize("name, item, what", [
    ("patched_torch", "ex90-minmax", "torch.allclose"),
    ("patched_check", "ex90-channel-mean", "course_utils.check_close"),
    ("rebound_cu", "ex90-minmax", "the notebook's name 'cu'"),
])
def test_patching_what_the_checks_rely_on_fails_the_items_and_is_flagged(batch, name, item, what):
    row = batch[2][name]
    assert statuses(row)[item] == "flagged" and points(row)[item] == 0, row["items"]
    message = next(i for i in row["items"] if i["id"] == item)["message"]
    assert message.startswith("IntegrityError:") and what in message
    assert row["flags"] and any(what in f for f in row["flags"])


def test_patching_is_also_found_in_the_source():
    flagged = integrity.patched_names("torch.allclose = f\nsetattr(cu, 'check_close', g)\nmodel.fc = h\n"
                                      "torch.backends.cudnn.benchmark = True\nF.batch_norm += 1\ndel nn.ReLU")
    assert flagged == ["line 1: torch.allclose", "line 2: setattr(cu, ...)", "line 5: F.batch_norm", "line 6: nn.ReLU"]


def test_delegating_to_the_library_fails_with_a_reason(batch):
    row = batch[2]["delegating"]
    assert statuses(row) == {**ALL_PASSED, "ex90-zscore": "failed"}
    message = row["items"][3]["message"]
    assert "calls torch.nn.functional.layer_norm" in message and "write yourself" in message


def test_a_hidden_check_catches_an_answer_tuned_to_the_visible_one(batch):
    row = batch[2]["tuned"]
    assert check_statuses(row, "ex90-channel-mean") == {"ex90-channel-mean": "passed",
                                                        "ex90-channel-mean/shapes": "failed"}
    assert statuses(row)["ex90-channel-mean"] == "partial" and points(row)["ex90-channel-mean"] == 1


def test_colab_saved_notebook_is_normalized_and_graded(batch):
    row = batch[2]["colab_saved"]
    assert row["status"] == "graded" and statuses(row) == ALL_PASSED


def test_reordered_cells_still_grade(batch):
    row = batch[2]["reordered"]
    assert statuses(row) == ALL_PASSED


def test_endless_loop_times_out_without_stalling_the_rest(batch):
    row = batch[2]["endless"]
    assert statuses(row) == {**ALL_PASSED, "ex90-zscore": "error"}
    assert "timed out" in row["items"][3]["message"]
    assert row["seconds"] < TIMEOUT * 4


def test_bad_files_get_a_row_not_a_crash(batch):
    rows = batch[2]
    assert rows["not_a_notebook"]["status"] == "unreadable"
    assert "not a Jupyter notebook" in rows["not_a_notebook"]["message"]
    assert rows["other_exercises"]["status"] == "unmatched"
    assert "tiny_exercises.ipynb" in rows["other_exercises"]["message"]
    for name in ("not_a_notebook", "other_exercises"):
        assert rows[name]["total"] == 0 and rows[name]["items"] == []


def test_printed_table_names_every_item_and_flag(batch):
    text = G.format_report(batch[1])
    for item_id in ALL_PASSED:
        assert item_id in text
    assert "total: " in text and "UNREADABLE" in text and "UNMATCHED" in text and "FLAG:" in text


def test_gradebook_has_a_row_per_student_and_a_column_per_item(batch):
    _, report, rows, subs, tmp = batch
    with (tmp / "gradebook.csv").open() as f:
        table = {r["student"]: r for r in csv.DictReader(f)}
    assert set(table) == set(subs)
    assert list(next(iter(table.values())))[:6] == ["student", *ALL_PASSED]
    solution, one_wrong = table["solution"], table["one_wrong"]
    assert solution["ex90-minmax"] == "3" and one_wrong["ex90-minmax"] == "2"
    assert solution["ex90-written-eps"] == ""  # for the instructor's mark
    assert (solution["auto_points"], solution["auto_max"], solution["written_max"]) == ("7", "7", "2")
    assert int(table["patched_torch"]["flags"]) >= 1 and table["solution"]["flags"] == "0"


def test_feedback_file_per_submission_with_messages_and_answers(batch):
    _, report, rows, subs, tmp = batch
    files = {p.stem: p.read_text() for p in (tmp / "feedback").glob("*.md")}
    assert set(files) == set(subs)
    assert "min_max(x): differs from the reference" in files["one_wrong"]
    assert "ex90-minmax/dtype: passed, 2/2" in files["one_wrong"]
    assert "> A constant input has zero variance" in files["solution"]
    assert "## Integrity" in files["patched_torch"]


def test_students_are_named_by_their_folder():
    root = Path("/submissions")
    assert G.student_name(root / "alice" / "02_batch_norm.ipynb", [root]) == "alice"
    assert G.student_name(root / "bob_02.ipynb", [root]) == "bob_02"


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


def test_prepare_puts_every_solution_check_after_its_exercise():
    sub = release_notebook(tiny())
    for cell in [c for c in sub.cells if check_id(c)]:
        sub.cells.remove(cell)
    sub.cells.append(nbformat.v4.new_code_cell("# CHECK ex90-minmax\nprint('fake')"))  # a stray, fake check
    prepared, where, edited = G.prepare(sub, tiny())
    assert list(edited) == ["ex90-minmax"]  # the stray one is an edited check; the deleted ones are not
    assert list(where) == ["ex90-minmax", "ex90-minmax/dtype", "ex90-predict-max/recorded", "ex90-predict-max",
                           "ex90-channel-mean", "ex90-channel-mean/shapes", "ex90-zscore"]
    cells = {c.id: n for n, c in enumerate(prepared.cells)}
    solution_checks = {check_info(c).key: c.source for c in tiny().cells if check_info(c)}
    for key, cid in where.items():
        source = prepared.cells[cells[cid]].source
        assert source.startswith("__import__('course_utils.integrity').integrity.verify(globals()")
        assert source.split("\n", 1)[1] == solution_checks[key]
    assert prepared.cells[0].id == G.INTEGRITY_CELL_ID
    assert not any(check_id(c) for c in prepared.cells)  # the stray check is gone (grader cells start otherwise)
    nbformat.validate(prepared)


def test_solution_is_matched_by_ids_not_by_name():
    sols = G.load_solutions(SOLUTIONS)
    assert G.match_solution(tiny(), sols, "renamed_by_student.ipynb")[0] == TINY
    other = nbformat.read(FIXTURES / "other_exercises.ipynb", as_version=4)
    assert G.match_solution(other, sols, "tiny_exercises.ipynb") is None


# ---------------------------------------------------------------- one real course notebook

def fastest_exercise_notebook(uses_fallback: bool = False) -> Path | None:
    """Among notebooks with exercises (and, if asked, a cell that builds on one through
    cu.answer_or_reference), the one with the shortest measured run (README's syllabus times)."""
    candidates = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        if exercise_ids(nb) and (not uses_fallback or "answer_or_reference(" in code):
            candidates.append(path)
    return lightest(candidates)


@pytest.mark.notebooks
def test_one_wrong_exercise_in_a_real_lesson_costs_only_its_own_points(tmp_path):
    """The first code exercise of a lesson left as the stub: the cells after it use the reference, say so,
    and every other item still scores (the solution's full marks and the release's zero are
    tests/test_notebooks.py's)."""
    path = fastest_exercise_notebook(uses_fallback=True)
    assert path is not None, "no lesson builds on an exercise through cu.answer_or_reference"
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    used = re.search(r'answer_or_reference\(\s*"([^"]+)"', code).group(1)
    wrong = next(i for i in items(nb) if i.id == used)
    cell = next(c for c in nb.cells if exercise_id(c) == wrong.id)
    cell.source = release_cell_source(cell.source, wrong.id, "test")
    subs = tmp_path / "subs"
    subs.mkdir()
    write(nb, subs / "one_wrong.ipynb")
    report = G.grade([subs], [path], workers=1, timeout=600, quick=True)
    (row,) = report["submissions"]
    auto = {i["id"]: i for i in row["items"] if i["kind"] != "written"}
    assert auto[wrong.id]["status"] == "failed" and auto[wrong.id]["points"] == 0, auto[wrong.id]
    others = {k: (i["status"], i["message"]) for k, i in auto.items() if k != wrong.id and i["status"] != "passed"}
    assert not others, f"other items lost points because {wrong.id} was wrong: {others}"
    assert row["points"] == row["max_points"] - wrong.points and row["other_errors"] == [], row


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
    assert statuses(row) == ALL_PASSED, row
    assert row["other_errors"] == [], row["other_errors"]


# ---------------------------------------------------------------- another Python (--python)

def test_another_python_runs_the_notebooks_and_a_bad_one_is_refused_clearly(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys\nprint(sys.executable)\nassert sys.executable == EXPECTED, sys.executable")])
    nb.cells[0].source = nb.cells[0].source.replace("EXPECTED", repr(sys.executable))
    target = tmp_path / "run" / "which.ipynb"
    target.parent.mkdir()
    nbformat.write(nb, str(target))
    env = dict(os.environ, PYTHONPATH=str(Path(G.__file__).resolve().parents[1]))
    (outcome,) = G.run_nbval(target, 60, env, python=sys.executable).values()
    assert outcome["outcome"] == "passed", outcome
    with pytest.raises(G.GradingEnvironmentError, match="cannot run it"):
        G.grade([tmp_path / "run"], SOLUTIONS, python=str(tmp_path / "no-such-python"))
    bare = tmp_path / "bare"  # a Python without nbval
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with pytest.raises(G.GradingEnvironmentError, match="pip install nbval"):
        G.grade([tmp_path / "run"], SOLUTIONS, python=str(bare / "bin" / "python"))
    assert G.main([str(tmp_path / "run"), "--solutions", str(SOLUTIONS), "--python", str(bare / "bin" / "python")]) == 2
