"""The release tool: stubs in the right place, nothing left over from a run, clear errors."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_utils.release import (
    BEGIN, END, ReleaseError, check_cells, check_info, exercise_id, exercise_ids, items, release_notebook,
    release_path,
)
from course_utils.release import main as release_main

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "solutions" / "tiny_exercises.ipynb"
REPO = Path(__file__).resolve().parent.parent


def notebook(*sources: str):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"
    return nb


def exercise(body: str, ex_id: str = "ex-t") -> str:
    return f"# EXERCISE {ex_id}\n{body}"


def test_exercise_and_check_ids_of_the_fixture():
    nb = nbformat.read(TINY, as_version=4)
    assert exercise_ids(nb) == ["ex90-minmax", "ex90-predict-max", "ex90-channel-mean", "ex90-zscore"]
    checks = check_cells(nb)
    assert list(checks) == exercise_ids(nb)
    for ex_id, index in checks.items():  # each exercise's first check sits right after it
        assert exercise_id(nb.cells[index - 1]) == ex_id


def test_stub_replaces_region_at_the_begin_indentation():
    nb = release_notebook(nbformat.read(TINY, as_version=4))
    sources = {c.source.split()[2]: c.source for c in nb.cells if c.source.startswith("# EXERCISE")}
    assert '    raise NotImplementedError("ex90-minmax: your code here")' in sources["ex90-minmax"].split("\n")
    # a method body: 8 spaces, the class and the def are kept
    lines = sources["ex90-channel-mean"].split("\n")
    assert '        raise NotImplementedError("ex90-channel-mean: your code here")' in lines
    assert "    def __call__(self, x: torch.Tensor) -> torch.Tensor:" in lines
    # inside an if block in a function: the code after the region stays
    assert sources["ex90-zscore"].endswith(
        '    if x.numel() > 0:\n        raise NotImplementedError("ex90-zscore: your code here")\n    return x')
    for src in sources.values():
        assert BEGIN not in src and END not in src and "x.mean(dim" not in src
        ast.parse(src)
    # visible check cells are left exactly as they are, hidden ones are gone
    original = nbformat.read(TINY, as_version=4)
    visible = [c.source for c in original.cells if check_info(c) and not check_info(c).hidden]
    assert [c.source for c in nb.cells if check_info(c)] == visible


def test_several_regions_in_one_cell_and_the_original_is_untouched():
    src = exercise("class A:\n    def f(self):\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION\n\n"
                   "    def g(self):\n        ### BEGIN SOLUTION\n        return 2\n        ### END SOLUTION")
    nb = notebook(src)
    out = release_notebook(nb)
    assert out.cells[0].source.count('raise NotImplementedError("ex-t: your code here")') == 2
    assert nb.cells[0].source == src  # release_notebook returns a new notebook


def test_outputs_counts_and_widget_state_are_cleared():
    nb = nbformat.read(TINY, as_version=4)
    for n, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.execution_count = n
            cell.outputs = [new_output("stream", name="stdout", text="hello\n"),
                            new_output("error", ename="E", evalue="v", traceback=["t"])]
            cell.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00Z"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"abc": {}}, "version_major": 2,
                                                                           "version_minor": 0}}
    out = release_notebook(nb)
    assert "widgets" not in out.metadata
    for cell in out.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None and "execution" not in cell.metadata
    nbformat.validate(out)


@pytest.mark.parametrize("source, message", [
    (exercise(f"def f():\n    {BEGIN}\n    return 1\n"), "never closed"),
    (exercise(f"def f():\n    return 1\n    {END}"), "without a"),
    (exercise(f"def f():\n    {BEGIN}\n    {BEGIN}\n    return 1\n    {END}\n    {END}"), "cannot be nested"),
    (f"def f():\n    {BEGIN}\n    return 1\n    {END}", "not an exercise"),
    (exercise(f"{BEGIN}\nprint(1)\n{END}"), "may only assign names"),
    (exercise(f"{BEGIN}\nx.y = 1\n{END}"), "may only assign names"),
    (exercise(f"class A:\n    {BEGIN}\n    x = 1\n    {END}"), "not inside a function body"),
    (exercise(f"def f(:\n    {BEGIN}\n    return 1\n    {END}"), "not valid Python"),
    ("# CHECK ex-t shared log (2 points)\npass", "malformed check line"),
    ("# HIDDEN CHECK ex-t (two points)\npass", "malformed check line"),
])
def test_bad_markers_are_errors_that_say_what_is_wrong(source, message):
    nb = notebook("import torch", source)
    with pytest.raises(ReleaseError, match=message) as info:
        release_notebook(nb, name="bad.ipynb")
    assert "bad.ipynb: cell 1" in str(info.value)  # says where


def test_duplicate_exercise_ids_are_an_error():
    body = f"def f():\n    {BEGIN}\n    return 1\n    {END}"
    with pytest.raises(ReleaseError, match="already used"):
        release_notebook(notebook(exercise(body), exercise(body)))


def test_markdown_mentioning_a_marker_is_not_an_error():
    nb = notebook(exercise(f"def f():\n    {BEGIN}\n    return 1\n    {END}"))
    nb.cells.insert(0, new_markdown_cell(f"Write your code between the lines\n\n    {BEGIN}\n    {END}"))
    nb.cells[0].id = "md"
    assert "raise NotImplementedError" in release_notebook(nb).cells[1].source


def test_release_path_round_trip_is_valid_nbformat(tmp_path):
    written = release_path(FIXTURES / "solutions", tmp_path / "student")
    assert [p.name for p in written] == ["tiny_exercises.ipynb"]
    nb = nbformat.read(written[0], as_version=4)
    nbformat.validate(nb)
    assert exercise_ids(nb) == exercise_ids(nbformat.read(TINY, as_version=4))
    # releasing a released notebook changes nothing (no markers left)
    again = release_path(written[0], tmp_path / "again.ipynb")
    assert again[0].read_text() == written[0].read_text()


def test_cli_writes_files_and_reports_errors(tmp_path, capsys):
    # main() is what `python -m course_utils.release` runs (in-process: no second torch import)
    assert release_main([str(TINY), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "tiny_exercises.ipynb").exists()
    assert release_main([str(FIXTURES / "not_a_notebook.ipynb"), str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err
    assert "not a readable Jupyter notebook" in err and "Traceback" not in err
    assert not (tmp_path / "out2").exists()
    # --nbgrader: the same notebooks as an nbgrader course folder (tests/test_nbgrader.py tests its content)
    assert release_main(["--nbgrader", str(tmp_path / "nbgrader"), str(TINY)]) == 0
    assert (tmp_path / "nbgrader" / "source" / "tiny_exercises" / "tiny_exercises.ipynb").exists()
    assert (tmp_path / "nbgrader" / "nbgrader_config.py").exists()


def test_refuses_to_overwrite_the_solutions(tmp_path):
    with pytest.raises(ReleaseError, match="refusing to overwrite"):
        release_path(TINY, TINY)


@pytest.mark.parametrize("path", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_every_course_notebook_releases(path):
    nb = nbformat.read(path, as_version=4)
    out = release_notebook(nb, name=path.name)
    nbformat.validate(out)
    for item in items(nb):
        stub = {"code": f'raise NotImplementedError("{item.id}: your code here")',
                "predict": f"= None  # {item.id}: your answer here",
                "written": "_Write your answer here._"}[item.kind]
        assert any(stub in c.source for c in out.cells), item.id
    assert not any(check_info(c) and check_info(c).hidden for c in out.cells)


def test_predict_cell_hidden_checks_and_written_answers():
    """A top-level region becomes `name = None`, hidden checks go, a written answer loses its model answer."""
    nb = notebook(
        f"# PREDICT ex-p\n# bigger or smaller?\n{BEGIN}\nguess: str = 'bigger'\nrate = 0.5\n{END}\nprint(guess)",
        "# CHECK ex-p recorded (0 points)\nassert guess is not None",
        "# HIDDEN CHECK ex-p (2 points)\nassert guess == 'bigger'",
        exercise(f"def f(x):\n    {BEGIN}\n    return x\n    {END}"),
        "# CHECK ex-t\nassert f(1) == 1",
        "# CHECK ex-t grad (3 points)\nassert f(2) == 2",
    )
    nb.cells.append(new_markdown_cell("**Written answer ex-w** (2 points)\n\nThe model answer."))
    found = items(nb)
    assert [(i.id, i.kind, i.points) for i in found] == [("ex-p", "predict", 2), ("ex-t", "code", 4),
                                                        ("ex-w", "written", 2)]
    assert [(c.part, c.points, c.hidden) for c in found[0].checks] == [("recorded", 0, False), (None, 2, True)]
    out = release_notebook(nb)
    sources = [c.source for c in out.cells]
    assert sources[0].splitlines()[2:] == ["guess = None  # ex-p: your answer here",
                                           "rate = None  # ex-p: your answer here", "print(guess)"]
    assert not any("HIDDEN" in s for s in sources) and len(sources) == len(nb.cells) - 1
    assert sources[-1] == "**Written answer ex-w** (2 points)\n\n_Write your answer here._"
    assert items(out)[0].points == 0  # the student version has no hidden checks
