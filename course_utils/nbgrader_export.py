"""Export the course as an nbgrader source folder (``python -m course_utils.release --nbgrader DIR ...``).

    python -m course_utils.nbgrader_export nbgrader-course/ notebooks/      # same as release --nbgrader

Universities that run JupyterHub grade with nbgrader (https://nbgrader.readthedocs.io). The export
writes, for every course notebook (the solution version, the course's source of truth),

    DIR/source/<notebook stem>/<notebook name>      one nbgrader assignment per notebook
    DIR/nbgrader_config.py                          course id, the gradebook in DIR, timeouts

and nothing else: nbgrader makes the student version itself (``nbgrader generate_assignment``)
and grades the submissions (``nbgrader autograde``). The course's own notebooks stay free of
nbgrader metadata; only the exported copies carry it. How the course's markers map to nbgrader
cells (cell metadata schema 3):

``# EXERCISE <id>`` / ``# PREDICT <id>``
    solution cell (grade id ``<id>``). ``### BEGIN SOLUTION``/``### END SOLUTION`` are nbgrader's
    own markers; nbgrader replaces the region by ``# YOUR CODE HERE`` + ``raise NotImplementedError()``.
    Inside a function body that is the course's stub too. A region at the top level of the cell
    (``predict_x = "larger"``) would become a bare ``raise`` that stops "Run all" and leaves the
    name undefined, so the export wraps it::

        try:
            ### BEGIN SOLUTION
            predict_x = "larger"
            ### END SOLUTION
        except NotImplementedError:  # no answer yet: the prediction stays None
            predict_x = None

    The student gets the ``try`` with nbgrader's stub in it (replace the two stub lines by the
    answer); until then the name is ``None`` and the notebook runs on, as in the course's release.
``# CHECK <id> [<part>] (N points)``, N > 0
    autograder test cell (grade, locked, N points, grade id ``<id>_check[_<part>]``).
``# CHECK ... (0 points)``
    read-only cell (locked, not graded): nbgrader restores it at grading like a test cell.
``# HIDDEN CHECK <id> [<part>] (N points)``
    autograder test cell (grade id ``<id>_hidden[_<part>]``) whose body sits between
    ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``: the student sees only the first line;
    nbgrader keeps the body in its gradebook and puts it back at grading.
``**Written answer <id>** (N points)`` markdown cell
    manually graded answer (solution and grade, N points, grade id ``<id>``): the first line stays,
    the model answer goes between solution markers, so the student sees "YOUR ANSWER HERE".

Every other cell is copied without nbgrader metadata (where prose shows the markers, the
space in them becomes a no-break space, so nbgrader does not take them for a region).
"""
from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import nbformat

from .release import (
    BEGIN,
    END,
    ReleaseError,
    check_info,
    exercise_id,
    read_notebook,
    release_notebook,
    written_info,
)

SCHEMA_VERSION = 3
COURSE_ID = "normalization-course"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
# Substrings nbgrader looks for on any line of any cell (ClearSolutions, ClearHiddenTests).
NBGRADER_DELIMITERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
CELL_TIMEOUT = 600  # seconds per cell at autograde; nbgrader's default (30 s) is too short for training cells

CONFIG = '''\
# nbgrader configuration of the normalization course, written by
# `python -m course_utils.release --nbgrader` (course_utils/nbgrader_export.py).
# Run nbgrader from this folder:
#     nbgrader generate_assignment <notebook stem>     -> release/<stem>/ for the students
#     nbgrader autograde <notebook stem>               -> grades submitted/<student>/<stem>/
import os

c = get_config()  # noqa: F821 - nbgrader provides it
_here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = _here
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(_here, "gradebook.db")
# A notebook cell may train a model: allow minutes per cell, not nbgrader's 30 s.
c.Execute.timeout = {timeout}
# nbgrader gives a test cell 0 points when it writes anything to stderr; a Python warning
# (a library deprecation, say) is not a wrong answer, so warnings are dropped before scoring.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(?m)^\\S.*:\\d+: \\w*Warning: "
'''


def sanitize_id(text: str) -> str:
    """A valid nbgrader grade id (letters, digits, ``_`` and ``-``) made from ``text``."""
    out = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    if not out:
        raise ReleaseError(f"{text!r}: no nbgrader grade id can be made from it.")
    return out


def check_grade_id(info) -> str:
    """The grade id of a check cell: ``<exercise>_check[_<part>]`` or ``<exercise>_hidden[_<part>]``."""
    kind = "hidden" if info.hidden else "check"
    return sanitize_id(f"{info.exercise}_{kind}" + (f"_{info.part}" if info.part else ""))


def _meta(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: int | None = None) -> dict:
    meta = {"schema_version": SCHEMA_VERSION, "grade": grade, "solution": solution, "locked": locked,
            "grade_id": grade_id}
    if grade:
        meta["points"] = points
    return meta


def _top_level_names(tree: ast.Module, begin: int, end: int) -> list[str] | None:
    """Names assigned by a region at the top level of the cell (0-based marker lines), else None."""
    names = []
    for node in tree.body:
        if begin < node.lineno - 1 < end:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for t in targets:
                if not isinstance(t, ast.Name):  # release_notebook refuses these too
                    raise ReleaseError(f"line {node.lineno}: a top-level solution region may only assign names.")
                if t.id not in names:
                    names.append(t.id)
    return names or None


def wrap_top_level_regions(source: str, where: str = "cell") -> str:
    """Put each top-level solution region inside ``try: ... except NotImplementedError: <names> = None``.

    nbgrader replaces a region by ``raise NotImplementedError()`` at the indentation of its
    BEGIN line; at the top level of a cell that would stop the notebook. Inside the ``try`` the
    stub leaves the names ``None`` instead, as the course's own student version does. Regions
    inside a function body are left as they are.
    """
    lines = source.split("\n")
    tree = ast.parse(source)
    out, n = [], 0
    while n < len(lines):
        line = lines[n]
        if line.strip() == BEGIN and not line[: len(line) - len(line.lstrip())]:
            end = next(i for i in range(n + 1, len(lines)) if lines[i].strip() == END)
            names = _top_level_names(tree, n, end)
            if names is not None:
                out.append("try:")
                out += ["    " + ln if ln.strip() else ln for ln in lines[n:end + 1]]
                out.append("except NotImplementedError:  # no answer yet: " + ", ".join(names)
                           + (" stays" if len(names) == 1 else " stay") + " None")
                out += [f"    {name} = None" for name in names]
                n = end + 1
                continue
        out.append(line)
        n += 1
    wrapped = "\n".join(out)
    try:
        ast.parse(wrapped)
    except SyntaxError as err:  # e.g. a multi-line string in the region
        raise ReleaseError(f"{where}: cannot wrap the top-level solution region for nbgrader "
                           f"({err.msg}, line {err.lineno}).") from err
    return wrapped


def _has_delimiter(text: str) -> bool:
    return any(d in text for d in NBGRADER_DELIMITERS)


def nbgrader_notebook(nb, name: str = "notebook"):
    """The nbgrader source version of a course notebook (a new notebook; ``nb`` is left as it is).

    Raises :class:`ReleaseError` for a notebook that breaks the course's exercise convention
    (the same checks as the student release) or that nbgrader would misread.
    """
    release_notebook(nb, name=name)  # the course's own checks: markers, regions, unique ids
    nb = nbformat.from_dict(copy.deepcopy(nb))
    nb.metadata.pop("widgets", None)
    seen: dict[str, int] = {}
    for n, cell in enumerate(nb.cells):
        where = f"{name}: cell {n}"
        for key in ("nbgrader", "editable", "deletable"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        meta = None
        if (ex := exercise_id(cell)) is not None:
            cell.source = wrap_top_level_regions(cell.source, where)
            meta = _meta(sanitize_id(ex), grade=False, solution=True, locked=False)
        elif (info := check_info(cell)) is not None:
            if _has_delimiter(cell.source):
                raise ReleaseError(f"{where}: a check cell may not contain nbgrader's markers "
                                   f"({', '.join(NBGRADER_DELIMITERS)}).")
            gid = check_grade_id(info)
            if info.hidden:
                first, _, body = cell.source.partition("\n")
                cell.source = "\n".join([first, BEGIN_HIDDEN, body.strip("\n"), END_HIDDEN])
                meta = _meta(gid, grade=True, solution=False, locked=True, points=info.points)
            elif info.points > 0:
                meta = _meta(gid, grade=True, solution=False, locked=True, points=info.points)
            else:
                meta = _meta(gid, grade=False, solution=False, locked=True)
        elif (w := written_info(cell)) is not None:
            first, _, answer = cell.source.partition("\n")
            if _has_delimiter(answer):
                raise ReleaseError(f"{where}: a written answer may not contain nbgrader's markers.")
            cell.source = "\n".join([first.strip(), "", BEGIN, answer.strip("\n"), END])
            meta = _meta(sanitize_id(w[0]), grade=True, solution=True, locked=False, points=w[1])
        elif cell.cell_type == "code" and _has_delimiter(cell.source):
            raise ReleaseError(f"{where}: this code cell mentions one of nbgrader's markers "
                               f"({', '.join(NBGRADER_DELIMITERS)}); nbgrader would take it for a "
                               "solution or hidden-test region. Reword it.")
        elif _has_delimiter(cell.source):
            # prose that shows the markers: nbgrader would take them for a region; a no-break
            # space looks the same and is not nbgrader's delimiter
            for d in NBGRADER_DELIMITERS:
                cell.source = cell.source.replace(d, d.replace(" ", "\u00a0"))
        if meta is not None:
            if meta["grade_id"] in seen:
                raise ReleaseError(f"{where}: nbgrader grade id {meta['grade_id']!r} is already used by "
                                   f"cell {seen[meta['grade_id']]}.")
            seen[meta["grade_id"]] = n
            cell.metadata["nbgrader"] = meta
    nbformat.validate(nb)
    return nb


def grade_id_items(nb) -> dict[str, str]:
    """``{nbgrader grade id: course item id}`` for the cells nbgrader scores (test cells, written answers).

    ``nb`` is a course notebook or its export; an item's nbgrader score is the sum over its grade ids.
    """
    out = {}
    for cell in nb.cells:
        if (info := check_info(cell)) is not None and (info.hidden or info.points > 0):
            out[check_grade_id(info)] = info.exercise
        elif (w := written_info(cell)) is not None:
            out[sanitize_id(w[0])] = w[0]
    return out


def _expand(sources) -> list[Path]:
    out = []
    for src in [sources] if isinstance(sources, (str, Path)) else sources:
        src = Path(src)
        if src.is_dir():
            found = sorted(src.glob("*.ipynb"))
            if not found:
                raise ReleaseError(f"{src}: no .ipynb files in this folder.")
            out += found
        elif src.is_file():
            out.append(src)
        else:
            raise ReleaseError(f"{src}: no such file or folder.")
    return out


def export_nbgrader(sources, course_dir) -> list[Path]:
    """Write the nbgrader source folder of the course into ``course_dir``; returns the files written.

    ``sources``: notebook files or folders of notebooks (the solution versions). Each notebook
    becomes ``course_dir/source/<stem>/<name>`` (one assignment per notebook);
    ``course_dir/nbgrader_config.py`` is written too. Every notebook is checked before
    anything is written.
    """
    course_dir = Path(course_dir)
    paths = _expand(sources)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ReleaseError(f"two notebooks with the same name: {sorted(s for s in stems if stems.count(s) > 1)}")
    exported = [nbgrader_notebook(read_notebook(p), name=str(p)) for p in paths]
    written = []
    for path, nb in zip(paths, exported):
        target = course_dir / "source" / path.stem / path.name
        if target.resolve() == path.resolve():
            raise ReleaseError(f"{target}: refusing to overwrite a course notebook; choose another folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))
        written.append(target)
    config = course_dir / "nbgrader_config.py"
    config.write_text(CONFIG.format(course_id=COURSE_ID, timeout=CELL_TIMEOUT))
    written.append(config)
    return written
