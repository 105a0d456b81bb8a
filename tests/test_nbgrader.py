"""The nbgrader export (course_utils/nbgrader_export.py), and a real round trip with nbgrader.

The round trip uses the nbgrader release on PyPI as an instructor would: export the course
notebook, ``nbgrader generate_assignment``, put a solved, a partly solved and an unanswered
notebook into ``submitted/<student>/<assignment>/``, ``nbgrader autograde``, then read the scores
from nbgrader's gradebook and compare them, student by student and item by item, with the
course's own grader (course_utils.grade) on the very same files. Written answers are graded by
hand in both, so only the auto-graded points are compared.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_utils import nbgrader_export as X
from course_utils import release as R
from notebook_times import lightest

ROOT = Path(__file__).resolve().parent.parent
COURSE_NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
B, E = R.BEGIN, R.END
DELIMITERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
OPTIONS = "('smaller', 'same', 'larger')"


def tiny_notebook():
    """A course-style notebook with every marker kind: a code exercise with two visible checks of
    different points and a hidden check, a predict-first question, a written answer."""
    cells = [
        new_markdown_cell("# A tiny lesson\n\nAnswers go between `### BEGIN SOLUTION` and `### END SOLUTION`."),
        new_code_cell("import course_utils as cu"),
        new_code_cell(f"# EXERCISE ex90-scale\ndef scale(xs, k):\n    \"\"\"Every element of xs times k.\"\"\"\n"
                      f"    {B}\n    return [x * k for x in xs]\n    {E}"),
        new_code_cell("# CHECK ex90-scale (2 points)\n"
                      "if scale([1, 2], 3) != [3, 6]:\n"
                      "    raise cu.CheckFailed(f'scale([1, 2], 3) gave {scale([1, 2], 3)}, expected [3, 6]')\n"
                      "cu.passed('ex90-scale')"),
        new_code_cell("# CHECK ex90-scale empty (1 point)\nassert scale([], 3) == [], 'an empty list stays empty'\n"
                      "import warnings\n"  # nbgrader scores a test cell that writes to stderr 0, unless told
                      "warnings.warn('a stand-in for a library deprecation warning')\n"
                      "cu.passed('ex90-scale', 'empty')"),
        new_code_cell("# HIDDEN CHECK ex90-scale negative (3 points)\n"
                      "assert scale([-1, 2], -2) == [2, -4], 'a negative factor flips the sign'\n"
                      "cu.passed('ex90-scale', 'negative')"),
        new_markdown_cell("Is the scaled list's sum smaller, the same or larger?"),
        new_code_cell(f"# PREDICT ex90-predict-sum\n# smaller / same / larger\n{B}\npredict_sum = \"larger\"\n{E}"),
        new_code_cell(f"# CHECK ex90-predict-sum recorded (0 points)\n"
                      f"cu.check_prediction_recorded(predict_sum, options={OPTIONS}, name='predict_sum')\n"
                      "cu.passed('ex90-predict-sum', 'recorded')"),
        new_code_cell(f"# HIDDEN CHECK ex90-predict-sum (1 point)\n"
                      f"cu.check_prediction(predict_sum, 'larger', options={OPTIONS}, name='predict_sum')\n"
                      "cu.passed('ex90-predict-sum')"),
        new_code_cell("outcome = 'larger' if sum([3, 4]) * 2 > sum([3, 4]) else 'smaller'\n"
                      "cu.reveal_prediction(predict_sum, outcome, name='predict_sum');"),
        new_markdown_cell("Why does scaling by 2 make the sum larger?"),
        new_markdown_cell("**Written answer ex90-written-why** (2 points)\n\nThe sum is linear: every term doubles, "
                          "and the terms are positive."),
    ]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    for n, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{n:03d}"
    return nb


def _meta(cell) -> dict:
    return dict(cell.metadata.get("nbgrader", {}))


# --------------------------------------------------------------------------- the export itself

def test_each_marker_kind_gets_its_nbgrader_cell(tmp_path):
    src = tmp_path / "tiny.ipynb"
    nbformat.write(tiny_notebook(), str(src))
    before = src.read_bytes()
    written = X.export_nbgrader([src], tmp_path / "course")
    assert written == [tmp_path / "course/source/tiny/tiny.ipynb", tmp_path / "course/nbgrader_config.py"]
    assert sorted(p.relative_to(tmp_path / "course").as_posix() for p in (tmp_path / "course").rglob("*")
                  if p.is_file()) == ["nbgrader_config.py", "source/tiny/tiny.ipynb"]
    assert src.read_bytes() == before  # the course's notebook keeps no nbgrader metadata
    nb = nbformat.read(str(written[0]), as_version=4)
    meta = {c.id: _meta(c) for c in nb.cells}
    base = {"schema_version": 3}
    assert meta["cell-002"] == {**base, "grade": False, "solution": True, "locked": False, "grade_id": "ex90-scale"}
    assert meta["cell-003"] == {**base, "grade": True, "solution": False, "locked": True, "points": 2,
                                "grade_id": "ex90-scale_check"}
    assert meta["cell-004"] == {**base, "grade": True, "solution": False, "locked": True, "points": 1,
                                "grade_id": "ex90-scale_check_empty"}
    assert meta["cell-005"] == {**base, "grade": True, "solution": False, "locked": True, "points": 3,
                                "grade_id": "ex90-scale_hidden_negative"}
    assert meta["cell-007"] == {**base, "grade": False, "solution": True, "locked": False,
                                "grade_id": "ex90-predict-sum"}
    assert meta["cell-008"] == {**base, "grade": False, "solution": False, "locked": True,  # 0 points: read-only
                                "grade_id": "ex90-predict-sum_check_recorded"}
    assert meta["cell-009"] == {**base, "grade": True, "solution": False, "locked": True, "points": 1,
                                "grade_id": "ex90-predict-sum_hidden"}
    assert meta["cell-012"] == {**base, "grade": True, "solution": True, "locked": False, "points": 2,
                                "grade_id": "ex90-written-why"}
    for cid in ("cell-000", "cell-001", "cell-006", "cell-010", "cell-011"):
        assert meta[cid] == {}
    cells = {c.id: c.source for c in nb.cells}
    hidden = cells["cell-005"].split("\n")
    assert hidden[:2] == ["# HIDDEN CHECK ex90-scale negative (3 points)", "### BEGIN HIDDEN TESTS"]
    assert hidden[-1] == "### END HIDDEN TESTS"
    assert cells["cell-012"].split("\n") == ["**Written answer ex90-written-why** (2 points)", "", B,
                                             "The sum is linear: every term doubles, and the terms are positive.", E]
    assert cells["cell-003"] == tiny_notebook().cells[3].source  # visible checks are kept verbatim
    # prose that shows the markers keeps them readable but not as nbgrader's delimiters
    assert "BEGIN\u00a0SOLUTION" in cells["cell-000"] and "BEGIN SOLUTION" not in cells["cell-000"]
    assert X.grade_id_items(nb) == {"ex90-scale_check": "ex90-scale", "ex90-scale_check_empty": "ex90-scale",
                                    "ex90-scale_hidden_negative": "ex90-scale",
                                    "ex90-predict-sum_hidden": "ex90-predict-sum",
                                    "ex90-written-why": "ex90-written-why"}


def test_top_level_region_is_wrapped_so_the_student_version_leaves_none(tmp_path):
    from nbgrader.preprocessors import ClearSolutions

    nb = X.nbgrader_notebook(tiny_notebook())
    cell = next(c for c in nb.cells if c.id == "cell-007")
    assert cell.source.split("\n")[2:] == [
        "try:", f"    {B}", '    predict_sum = "larger"', f"    {E}",
        "except NotImplementedError:  # no answer yet: predict_sum stays None", "    predict_sum = None"]
    solved = {}
    exec(cell.source, solved)
    assert solved["predict_sum"] == "larger"
    student, _ = ClearSolutions().preprocess(nbformat.from_dict({**nb, "cells": [cell]}), {})
    assert "raise NotImplementedError()" in student.cells[0].source  # nbgrader's own stub
    unanswered = {}
    exec(student.cells[0].source, unanswered)  # a valid cell that runs on
    assert unanswered["predict_sum"] is None
    # a region inside a function body is nbgrader's usual case and stays as it is
    assert next(c for c in nb.cells if c.id == "cell-002").source == tiny_notebook().cells[2].source


def test_several_names_and_code_around_the_region():
    from nbgrader.preprocessors import ClearSolutions

    src = f"# EXERCISE ex90-x\nimport math\n{B}\na = 1\nb: int = 2\n{E}\nc = (a, b)"
    out = X.wrap_top_level_regions(src)
    assert "except NotImplementedError:  # no answer yet: a, b stay None" in out
    solved = {}
    exec(out, solved)
    assert solved["c"] == (1, 2)
    nb = nbformat.from_dict(new_notebook(cells=[new_code_cell(out)]))
    nb.cells[0].metadata["nbgrader"] = {"schema_version": 3, "grade": False, "solution": True, "locked": False,
                                        "grade_id": "ex90-x"}
    student, _ = ClearSolutions().preprocess(nb, {})
    ns = {}
    exec(student.cells[0].source, ns)
    assert ns["c"] == (None, None)


@pytest.mark.parametrize("source, message", [
    ("x = 1  # BEGIN SOLUTION is a region in nbgrader", "nbgrader's markers"),
])
def test_what_nbgrader_would_misread_is_an_error(source, message):
    nb = tiny_notebook()
    nb.cells.insert(2, new_code_cell(source))
    with pytest.raises(R.ReleaseError, match=message):
        X.nbgrader_notebook(nb)


def test_clashing_grade_ids_are_an_error():
    nb = tiny_notebook()
    nb.cells.append(new_code_cell("# CHECK ex90-scale empty! (1 point)\ncu.passed('ex90-scale', 'empty!')"))
    with pytest.raises(R.ReleaseError, match="grade id 'ex90-scale_check_empty' is already used"):
        X.nbgrader_notebook(nb)


def test_broken_conventions_are_refused_like_the_release(tmp_path):
    nb = tiny_notebook()
    nb.cells[2].source = nb.cells[2].source.replace(E, "")
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(R.ReleaseError, match="never closed"):
        X.export_nbgrader([path], tmp_path / "course")
    assert not (tmp_path / "course").exists()  # nothing written
    assert R.main(["--nbgrader", str(tmp_path / "course"), str(path)]) == 1  # the command line says so too
    assert not (tmp_path / "course").exists()
    assert R.main(["--nbgrader", str(tmp_path / "course"), str(tmp_path / "missing.ipynb")]) == 1


def test_config_points_nbgrader_at_the_course_folder(tmp_path):
    from traitlets.config.loader import PyFileConfigLoader

    X.export_nbgrader([ROOT / "notebooks" / "00_setup.ipynb"], tmp_path / "course")
    moved = tmp_path / "elsewhere"
    (tmp_path / "course").rename(moved)  # the folder can be copied to the JupyterHub server
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(moved)).load_config()
    assert cfg.CourseDirectory.root == str(moved)
    assert cfg.CourseDirectory.course_id == X.COURSE_ID
    assert cfg.CourseDirectory.db_url == f"sqlite:///{moved / 'gradebook.db'}"
    assert cfg.Execute.timeout >= 600
    assert cfg.IgnorePattern.enabled
    warning = "/tmp/ipykernel_7/1234.py:3: UserWarning: deprecated\n  warnings.warn('deprecated')\n"
    assert re.search(cfg.IgnorePattern.pattern, warning)
    assert not re.search(cfg.IgnorePattern.pattern, "Traceback (most recent call last):\nValueError: bad\n")


@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=lambda p: p.stem)
def test_every_course_notebook_exports_and_nbgrader_accepts_it(path, tmp_path):
    """nbgrader's own metadata validator and generate_assignment's cleaning steps, in process (no kernel)."""
    from nbgrader.nbgraderformat import MetadataValidator
    from nbgrader.preprocessors import CheckCellMetadata, ClearHiddenTests, ClearSolutions

    [target, _] = X.export_nbgrader([path], tmp_path)
    nb = nbformat.read(str(target), as_version=4)
    MetadataValidator().validate_nb(nb)
    course = nbformat.read(str(path), as_version=4)
    assert not any("nbgrader" in c.metadata for c in course.cells)
    student = nbformat.from_dict(json.loads(json.dumps(nb)))
    for pre in (ClearSolutions(), ClearHiddenTests(), CheckCellMetadata()):
        student, _ = pre.preprocess(student, {})
    _assert_no_solutions(course, student)
    graded = {g: item for g, item in X.grade_id_items(nb).items()}
    points = {}
    for cell in nb.cells:
        meta = _meta(cell)
        if meta.get("grade"):
            points[graded[meta["grade_id"]]] = points.get(graded[meta["grade_id"]], 0) + meta["points"]
    assert points == {i.id: i.points for i in R.items(course) if i.points}
    for cell in course.cells:
        info = R.check_info(cell)
        if info is not None and (info.points or info.hidden):
            # nbgrader scores a test cell from its output: an error gives 0, and a number shown by the
            # last line would be taken as partial credit. The course's checks end with cu.passed(...).
            last = ast.parse(cell.source).body[-1]
            assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and \
                ast.unparse(last.value.func).endswith("passed"), f"{path.name}: {info.key} ends with {ast.unparse(last)}"


# --------------------------------------------------------------------------- helpers of the round trip

def _region_lines(source: str) -> set[str]:
    """Lines of a cell's solution/hidden regions that do not also occur outside them."""
    inside, outside, state = set(), set(), False
    for line in source.split("\n"):
        s = line.strip()
        if s in (B, X.BEGIN_HIDDEN):
            state = True
        elif s in (E, X.END_HIDDEN):
            state = False
        elif s:
            (inside if state else outside).add(s)
    return inside - outside


def _assert_no_solutions(course, student) -> None:
    """The student version of ``course`` shows no marker, no solution line and no hidden check."""
    text = "\n".join(c.source for c in student.cells)
    for d in DELIMITERS:
        assert d not in text, f"{d!r} left in the student version"
    exported = X.nbgrader_notebook(course)
    by_id = {c.id: c for c in student.cells}
    for cell in exported.cells:
        leftover = _region_lines(cell.source) & {ln.strip() for ln in by_id[cell.id].source.split("\n")}
        assert not leftover, f"cell {cell.id}: solution or hidden-test lines in the student version: {leftover}"
    for cell, released in zip(course.cells, student.cells):
        if (info := R.check_info(cell)) is not None and info.hidden:
            assert released.source == cell.source.split("\n", 1)[0]  # only the first line shows


def _env() -> dict:
    env = dict(os.environ)
    # nbgrader's gradebook runs the `alembic` command: the venv's bin must be on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(COURSE_QUICK="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="agg", PYTHONHASHSEED="0")
    return env


def nbgrader(course: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "| ERROR]" not in proc.stderr, proc.stderr[-4000:]


def submit(course: Path, student: str, assignment: str, nb) -> Path:
    path = course / "submitted" / student / assignment / f"{assignment}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def fill(released, source, answers: dict[str, str] | None = None):
    """The released notebook with its solution cells answered: the source's answer, or ``answers[grade id]``."""
    nb = nbformat.from_dict(json.loads(json.dumps(released)))
    by_id = {_meta(c)["grade_id"]: c.source for c in source.cells if _meta(c).get("solution")}
    for cell in nb.cells:
        gid = _meta(cell).get("grade_id")
        if _meta(cell).get("solution"):
            cell.source = (answers or {}).get(gid, by_id[gid])
    return nb


def nbgrader_scores(course: Path, assignment: str, student: str, items_of: dict[str, str]) -> dict:
    """Auto-graded points from nbgrader's gradebook: ``{"points", "max_points", "items": {id: (points, max)}}``."""
    from nbgrader.api import Gradebook

    out = {"points": 0.0, "max_points": 0.0, "items": {}, "manual": set()}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        sub = gb.find_submission_notebook(assignment, assignment, student)
        for grade in sub.grades:
            item = items_of[grade.name]
            if grade.cell_type != "code":  # a written answer: graded by hand
                if grade.needs_manual_grade:
                    out["manual"].add(item)
                continue
            got, top = out["items"].get(item, (0.0, 0.0))
            out["items"][item] = (got + grade.score, top + grade.max_score)
            out["points"] += grade.score
            out["max_points"] += grade.max_score
    return out


def course_grader_scores(paths: list[Path], solution: Path) -> dict[str, dict]:
    """The course's grader on the same files: ``{student: {"points", "max_points", "items"}}``."""
    from course_utils import grade as G

    report = G.grade([str(p) for p in paths], solutions=[str(solution)], quick=True, workers=1)
    out = {}
    for sub in report["submissions"]:
        student = Path(sub["path"]).parts[-3]
        assert sub["status"] == "graded", sub
        out[student] = {"points": sub["points"], "max_points": sub["max_points"],
                        "items": {i["id"]: (i["points"], i["max_points"]) for i in sub["items"]
                                  if i["kind"] != "written"}}
    return out


def round_trip(tmp_path, source_nb_path: Path, submissions, compare=None) -> tuple[Path, dict, dict]:
    """Export, generate the release, submit ``submissions(source, release)`` = {student: notebook},
    autograde; returns the course folder, nbgrader's scores and the course grader's, per student
    (the course grader runs on the students in ``compare`` only, default all: it costs a kernel each)."""
    assignment = source_nb_path.stem
    course = tmp_path / "course"
    X.export_nbgrader([source_nb_path], course)
    nbgrader(course, "generate_assignment", assignment, "--force")
    released = nbformat.read(str(course / "release" / assignment / source_nb_path.name), as_version=4)
    source = nbformat.read(str(course / "source" / assignment / source_nb_path.name), as_version=4)
    _assert_no_solutions(nbformat.read(str(source_nb_path), as_version=4), released)
    paths = [submit(course, student, assignment, nb) for student, nb in submissions(source, released).items()]
    nbgrader(course, "autograde", assignment, "--force")
    items_of = X.grade_id_items(source)
    theirs = {p.parts[-3]: nbgrader_scores(course, assignment, p.parts[-3], items_of) for p in paths}
    ours = course_grader_scores([p for p in paths if compare is None or p.parts[-3] in compare], source_nb_path)
    return course, theirs, ours


def assert_same_scores(theirs: dict, ours: dict, expected: dict[str, float]) -> None:
    for student, points in expected.items():
        assert theirs[student]["points"] == points, (student, theirs[student])
    for student in ours:
        a, b = theirs[student], ours[student]
        assert (a["points"], a["max_points"]) == (b["points"], b["max_points"]), (student, a, b)
        scored = {i: v for i, v in b["items"].items() if v[1]}  # nbgrader has no cell for 0-point items
        assert a["items"] == scored, (student, a["items"], b["items"])


# --------------------------------------------------------------------------- the round trips

@pytest.mark.notebooks
def test_round_trip_with_nbgrader_on_every_marker_kind(tmp_path):
    src = tmp_path / "tiny.ipynb"
    course_nb = tiny_notebook()
    nbformat.write(course_nb, str(src))
    total = sum(i.points for i in R.items(course_nb) if i.kind != "written")  # 2 + 1 + 3 + 1

    def submissions(source, released):
        wrong = next(c.source for c in source.cells if _meta(c).get("grade_id") == "ex90-scale")
        return {
            "solved": source,  # the source notebook is the solution
            # tuned to the visible checks: right for k > 0 only, so the hidden check (3 points) fails
            "partly": fill(released, source, {"ex90-scale": wrong.replace("x * k", "x * abs(k)")}),
            "blank": released,  # handed in as released (the course grader's own tests cover its 0)
        }

    course, theirs, ours = round_trip(tmp_path, src, submissions, compare={"solved", "partly"})
    assert set(ours) == {"solved", "partly"}
    assert_same_scores(theirs, ours, {"solved": total, "partly": total - 3, "blank": 0})
    assert theirs["solved"]["max_points"] == total
    assert theirs["solved"]["manual"] == theirs["partly"]["manual"] == {"ex90-written-why"}
    assert theirs["blank"]["manual"] == set()  # nbgrader gives an untouched answer 0 by itself
    # the hidden check ran at grading although the students never saw it
    graded = nbformat.read(str(course / "autograded/partly/tiny/tiny.ipynb"), as_version=4)
    hidden = next(c for c in graded.cells if _meta(c).get("grade_id") == "ex90-scale_hidden_negative")
    assert "scale([-1, 2], -2)" in hidden.source
    assert [o.get("evalue") for o in hidden.outputs if o.output_type == "error"] == ["a negative factor flips the sign"]


@pytest.mark.notebooks
def test_round_trip_with_nbgrader_on_a_real_lesson(tmp_path):
    """A real lesson (the one with exercises that runs fastest, by README's measured times) in quick
    mode, submitted with its first code exercise left as released and the rest solved: every other
    check must score full points under nbgrader too. (A second, fully solved submission would add
    two runs of the notebook; the small notebook above has one.)"""
    lessons = [p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
               if any(i.kind == "code" for i in R.items(nbformat.read(str(p), as_version=4)))]
    path = lightest(lessons)
    course_nb = nbformat.read(str(path), as_version=4)
    items = R.items(course_nb)
    first = next(i for i in items if i.kind == "code")
    total = sum(i.points for i in items if i.kind != "written")

    def submissions(source, released):
        stub = next(c.source for c in released.cells if _meta(c).get("grade_id") == X.sanitize_id(first.id))
        return {"partly": fill(released, source, {X.sanitize_id(first.id): stub})}

    _, theirs, ours = round_trip(tmp_path, path, submissions)
    assert first.points > 0 and set(ours) == {"partly"}
    assert_same_scores(theirs, ours, {"partly": total - first.points})
    assert theirs["partly"]["max_points"] == total


def test_instructor_extra_is_part_of_the_test_extra():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("nbgrader") for r in extras["instructor"])
    assert set(extras["instructor"]) <= set(extras["test"]), "CI installs .[test]: it must hold .[instructor]"
