"""The course's graded items: well-formed markers, the counts issue 14 asks for, honest headers.

Counts come from the notebooks' own markers (``course_utils.release.items``): code exercises
(``# EXERCISE``), predict-first questions (``# PREDICT``) and written answers
(``**Written answer <id>**``). Every predict-first question is checked here the same way: no
prediction and every wrong option fail its hidden check, the solution's passes, and the
experiment after it reveals the outcome.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

import course_utils as cu
from course_utils.release import check_info, exercise_id, exercise_kind, items, release_notebook, written_info

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LESSONS = [p for p in NOTEBOOKS if not p.name.startswith("00_")]
HEADER = re.compile(r"\*\*Exercises:\*\* (\d+) items?, (\d+) points?, about (\d+) minutes?\.")
# issue 14's minimum
MIN_ITEMS, MIN_CODE, MIN_PREDICT, MIN_WRITTEN, MIN_PER_LESSON = 30, 20, 10, 6, 3


def _load(path: Path):
    return nbformat.read(path, as_version=4)


def _all_items():
    return {p.stem: items(_load(p)) for p in NOTEBOOKS}


def test_the_course_has_the_graded_items_issue_14_asks_for():
    found = _all_items()
    every = [i for its in found.values() for i in its]
    kinds = {k: sum(i.kind == k for i in every) for k in ("code", "predict", "written")}
    assert len(every) >= MIN_ITEMS, f"{len(every)} graded items: {kinds}"
    assert kinds["code"] >= MIN_CODE and kinds["predict"] >= MIN_PREDICT and kinds["written"] >= MIN_WRITTEN, kinds
    few = {stem: len(its) for stem, its in found.items() if not stem.startswith("00_") and len(its) < MIN_PER_LESSON}
    assert not few, f"lessons with fewer than {MIN_PER_LESSON} graded items: {few}"
    ids = [i.id for i in every]
    assert len(ids) == len(set(ids)), f"item ids used twice: {sorted({i for i in ids if ids.count(i) > 1})}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_header_states_items_and_points(path):
    nb = _load(path)
    its = items(nb)
    m = HEADER.search(nb.cells[0].source)
    assert m, "the first cell needs a line '**Exercises:** N items, P points, about M minutes.'"
    assert int(m.group(1)) == len(its), f"header says {m.group(1)} items, the notebook has {len(its)}"
    assert int(m.group(2)) == sum(i.points for i in its), \
        f"header says {m.group(2)} points, the markers add up to {sum(i.points for i in its)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markers_are_well_formed(path):
    nb = _load(path)
    exercises = {}
    for n, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        begins, ends = cell.source.count("### BEGIN SOLUTION"), cell.source.count("### END SOLUTION")
        assert begins == ends, f"cell {n}: unbalanced solution markers"
        first = cell.source.split("\n", 1)[0]
        if (ex := exercise_id(cell)) is not None:
            assert begins >= 1, f"{first}: has no solution region"
            exercises[ex] = n
        else:
            assert begins == 0, f"cell {n}: solution markers outside an exercise or predict cell"
        if first.lstrip().startswith(("# CHECK", "# HIDDEN")):
            info = check_info(cell)
            assert info is not None, f"cell {n}: malformed check line {first!r}"
            assert info.exercise in exercises, f"cell {n}: check {info.key} comes before its exercise, or has none"
            assert f'cu.passed("{info.exercise}"' in cell.source, f"cell {n}: a check ends with cu.passed(...)"
    for item in items(nb):
        if item.kind == "written":
            continue
        visible = [c for c in item.checks if not c.hidden]
        assert visible, f"{item.id}: needs a visible '# CHECK {item.id}' cell"
        assert item.points > 0, f"{item.id}: its checks are worth no points"
        keys = [c.key for c in item.checks]
        assert len(keys) == len(set(keys)), f"{item.id}: two check cells with the same part name"


def _predict_cases():
    cases = []
    for path in NOTEBOOKS:
        nb = _load(path)
        for n, cell in enumerate(nb.cells):
            if exercise_kind(cell) == "predict":
                cases.append(pytest.param(path, n, id=f"{path.stem}:{exercise_id(cell)}"))
    return cases


class _Recorder:
    """Stands in for ``cu`` in a check cell: records check_prediction's arguments, runs the real one."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        real = getattr(cu, name)
        if name == "check_prediction":
            def recorded(value, answer, **kwargs):
                self.calls.append((answer, kwargs))
                return real(value, answer, **kwargs)
            return recorded
        return real


@pytest.mark.parametrize("path, index", _predict_cases())
def test_predict_first_question_grades_the_prediction_and_the_experiment_reveals_it(path, index):
    nb = _load(path)
    cell = nb.cells[index]
    ex = exercise_id(cell)
    solution_ns, student_ns = {}, {}
    exec(cell.source, solution_ns)  # the cell only assigns the prediction
    exec(next(c.source for c in release_notebook(nb).cells if exercise_id(c) == ex), student_ns)
    names = [k for k in solution_ns if not k.startswith("__")]
    assert names and all(student_ns[k] is None for k in names), f"{ex}: the student version must leave {names} None"
    checks = [c for c in nb.cells if (info := check_info(c)) and info.exercise == ex]
    hidden = [c for c in checks if check_info(c).hidden and check_info(c).points > 0]
    visible = [c for c in checks if not check_info(c).hidden]
    assert hidden and visible, f"{ex}: needs a visible 'recorded' check and a hidden graded check"
    for c in visible:  # no prediction: the visible check stops the student before the experiment
        with pytest.raises(cu.CheckFailed, match="no prediction recorded"):
            exec(c.source, {"cu": cu, **student_ns})
    recorder = _Recorder()
    for c in hidden:
        exec(c.source, {"cu": recorder, **solution_ns})  # the solution's prediction passes
        with pytest.raises(cu.CheckFailed):
            exec(c.source, {"cu": cu, **student_ns})
    (answer, kwargs), *_ = recorder.calls
    options = kwargs.get("options")
    wrong = [o for o in options if o != answer] if options else [answer * (1 + 2 * (kwargs.get("rel_tol") or 0)) + 1]
    assert wrong, f"{ex}: a question with one option cannot be wrong"
    for value in wrong:  # every other option (or a number far off) fails
        with pytest.raises(cu.CheckFailed):
            cu.check_prediction(value, answer, **kwargs)
    later = "\n".join(c.source for c in nb.cells[index + 1:] if c.cell_type == "code" and not check_info(c))
    assert any(f"reveal_prediction({k}" in later for k in names), \
        f"{ex}: the experiment after the question should call cu.reveal_prediction({names[0]}, outcome, ...)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_written_answers_have_a_model_answer_and_a_question(path):
    nb = _load(path)
    for n, cell in enumerate(nb.cells):
        if written_info(cell) is None:
            continue
        body = cell.source.split("\n", 1)[1].strip() if "\n" in cell.source else ""
        assert len(body.split()) >= 15, f"cell {n}: the model answer is the instructor's guide; write one"
        assert nb.cells[n - 1].cell_type == "markdown" and "?" in nb.cells[n - 1].source, \
            f"cell {n}: the markdown cell before a written answer asks the question"
