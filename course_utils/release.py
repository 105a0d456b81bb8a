"""Write the student version of the course notebooks.

    python -m course_utils.release notebooks/ release/        # every notebook in a folder
    python -m course_utils.release notebooks/02_batch_norm.ipynb release/
    python -m course_utils.release --nbgrader nbgrader-course/ notebooks/   # an nbgrader source folder

The convention (README, "For instructors"):

- A **code exercise** is a code cell whose first line is ``# EXERCISE <id>``; the
  answer sits between a ``### BEGIN SOLUTION`` line and a ``### END SOLUTION`` line,
  inside a function or method body (the student version gets
  ``raise NotImplementedError("<id>: your code here")`` at the BEGIN line's
  indentation) or at the top level of the cell, where it may only assign names
  (the student version assigns ``None`` to each).
- A **predict-first question** is the same with ``# PREDICT <id>``: the region sets
  the prediction variable, which the student version leaves ``None``.
- A **check** is a code cell whose first line is ``# CHECK <id> [<part>] [(N points)]``;
  an exercise may have several (partial credit: each cell scores its own points,
  1 by default). ``# HIDDEN CHECK ...`` cells are the instructor's: the student
  version drops them and the grader puts them back.
- A **written answer** is a markdown cell whose first line is
  ``**Written answer <id>** (N points)``; the rest is the model answer, which the
  student version replaces by a placeholder. The instructor grades it by hand.

The student version also drops everything a run leaves behind: outputs,
execution counts and the saved widget state.
"""
from __future__ import annotations

import ast
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
EXERCISE_RE = re.compile(r"^#\s*(EXERCISE|PREDICT)\s+(\S+)\s*$")
CHECK_RE = re.compile(r"^#\s*(HIDDEN\s+)?CHECK\s+([^\s(]+)(?:\s+([^\s(]+))?(?:\s+\((\d+)\s+points?\))?\s*$")
WRITTEN_RE = re.compile(r"^\*\*Written answer\s+([^\s*]+)\*\*(?:\s*\((\d+)\s+points?\))?\s*$")
STUB = 'raise NotImplementedError("{id}: your code here")'
ASSIGN_STUB = "{name} = None  # {id}: your answer here"
WRITTEN_PLACEHOLDER = "_Write your answer here._"
KINDS = {"EXERCISE": "code", "PREDICT": "predict"}


@dataclass(frozen=True)
class Check:
    """What a check cell's first line says: ``# [HIDDEN] CHECK <exercise> [<part>] [(N points)]``."""
    exercise: str
    part: str | None
    points: int
    hidden: bool

    @property
    def key(self) -> str:
        return self.exercise + (f"/{self.part}" if self.part else "")


@dataclass(frozen=True)
class Item:
    """One graded item of a notebook: a code exercise, a predict-first question or a written answer."""
    id: str
    kind: str  # code | predict | written
    points: int
    checks: tuple[Check, ...] = ()


class ReleaseError(ValueError):
    """A notebook that breaks the exercise convention; the message says where and how."""


def _first_line(cell) -> str:
    return cell.source.split("\n", 1)[0].strip() if cell.source else ""


def exercise_id(cell) -> str | None:
    """The id of an exercise or predict-first cell (first line ``# EXERCISE <id>`` / ``# PREDICT <id>``)."""
    if cell.cell_type != "code":
        return None
    m = EXERCISE_RE.match(_first_line(cell))
    return m.group(2) if m else None


def exercise_kind(cell) -> str | None:
    """The kind of an exercise cell: "code" for ``# EXERCISE``, "predict" for ``# PREDICT``, else None."""
    if cell.cell_type != "code":
        return None
    m = EXERCISE_RE.match(_first_line(cell))
    return KINDS[m.group(1)] if m else None


def check_info(cell) -> Check | None:
    """The parsed first line of a check cell (visible or hidden), else None."""
    if cell.cell_type != "code":
        return None
    m = CHECK_RE.match(_first_line(cell))
    if not m:
        return None
    return Check(m.group(2), m.group(3), int(m.group(4)) if m.group(4) is not None else 1, bool(m.group(1)))


def check_id(cell) -> str | None:
    """The exercise id of a check cell (first line ``# [HIDDEN] CHECK <id> ...``), else None."""
    info = check_info(cell)
    return info.exercise if info else None


def written_info(cell) -> tuple[str, int] | None:
    """(id, points) of a written-answer cell (markdown, first line ``**Written answer <id>** (N points)``)."""
    if cell.cell_type != "markdown":
        return None
    m = WRITTEN_RE.match(_first_line(cell))
    return (m.group(1), int(m.group(2)) if m.group(2) is not None else 1) if m else None


def items(nb) -> list[Item]:
    """The graded items of a notebook in order, each with its points (the sum over its check cells)."""
    checks: dict[str, list[Check]] = {}
    for cell in nb.cells:
        if (info := check_info(cell)) is not None:
            checks.setdefault(info.exercise, []).append(info)
    out = []
    for cell in nb.cells:
        if (ex := exercise_id(cell)) is not None:
            found = tuple(checks.get(ex, ()))
            out.append(Item(ex, exercise_kind(cell), sum(c.points for c in found), found))
        elif (w := written_info(cell)) is not None:
            out.append(Item(w[0], "written", w[1]))
    return out


def exercise_ids(nb) -> list[str]:
    """Exercise ids in notebook order."""
    return [i for i in (exercise_id(c) for c in nb.cells) if i]


def exercise_cells(nb) -> dict[str, int]:
    """``{exercise id: cell index}`` (the last cell, if an id appears twice)."""
    return {i: n for n, c in enumerate(nb.cells) if (i := exercise_id(c))}


def check_cells(nb) -> dict[str, int]:
    """``{exercise id: index of its first check cell}``."""
    out: dict[str, int] = {}
    for n, cell in enumerate(nb.cells):
        if (i := check_id(cell)) is not None:
            out.setdefault(i, n)
    return out


def _is_marker(line: str) -> str | None:
    s = line.strip()
    return s if s in (BEGIN, END) else None


def _regions(lines: list[str], where: str) -> list[tuple[int, int]]:
    """Pairs (begin line, end line), 0-based, of the solution regions; errors for bad nesting."""
    regions, open_at = [], None
    for n, line in enumerate(lines):
        marker = _is_marker(line)
        if marker == BEGIN:
            if open_at is not None:
                raise ReleaseError(
                    f"{where}, line {n + 1}: '{BEGIN}' inside the region opened on line {open_at + 1}; "
                    f"regions cannot be nested. Close the first one with '{END}' before opening another."
                )
            open_at = n
        elif marker == END:
            if open_at is None:
                raise ReleaseError(f"{where}, line {n + 1}: '{END}' without a '{BEGIN}' before it.")
            regions.append((open_at, n))
            open_at = None
    if open_at is not None:
        raise ReleaseError(f"{where}, line {open_at + 1}: '{BEGIN}' is never closed; add a '{END}' line.")
    return regions


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _check_inside_function(tree: ast.AST, lines: list[str], begin: int, end: int, where: str) -> None:
    """A region must lie within the body of one function (so the stub is a valid statement there)."""
    col = len(_indent(lines[begin]).expandtabs())
    # 1-based numbers of the region's code lines (comments and blank lines are invisible to ast)
    code = [i + 1 for i in range(begin + 1, end) if lines[i].strip() and not lines[i].strip().startswith("#")]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            after_def = node.lineno - 1 < begin and col > node.col_offset
            within = all(node.lineno < n <= node.end_lineno for n in code) and (code or begin < node.end_lineno)
            if after_def and within:
                return
    raise ReleaseError(
        f"{where}, line {begin + 1}: the solution region is not inside a function body. Put "
        f"'{BEGIN}'/'{END}' inside a def (indented), so the stub that replaces it is a valid statement."
    )


def _top_level_stub(tree: ast.Module, lines: list[str], begin: int, end: int, ex_id: str, where: str):
    """Stub lines for a region at the top level of the cell (assignments only), or None if it is not there."""
    inside = [node for node in tree.body if begin < node.lineno - 1 < end]
    if not inside or _indent(lines[begin]):
        return None
    names = []
    for node in inside:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else None
        if targets is None or not all(isinstance(t, ast.Name) for t in targets):
            raise ReleaseError(
                f"{where}, line {node.lineno}: a solution region at the top level of a cell may only assign "
                f"names (prediction = ...), so the student version can leave them None. Move other code into a "
                "function, or out of the region."
            )
        names += [t.id for t in targets if t.id not in names]
    return [ASSIGN_STUB.format(name=n, id=ex_id) for n in names]


def release_cell_source(source: str, ex_id: str, where: str) -> str:
    """The exercise cell's source with every solution region replaced by the stub."""
    lines = source.split("\n")
    regions = _regions(lines, where)
    if not regions:
        return source
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ReleaseError(f"{where}: the exercise cell is not valid Python ({err.msg}, line {err.lineno}).") from err
    out, last = [], 0
    for begin, end in regions:
        out += lines[last:begin]
        top = _top_level_stub(tree, lines, begin, end, ex_id, where)
        if top is not None:
            out += top
        else:
            _check_inside_function(tree, lines, begin, end, where)
            out.append(_indent(lines[begin]) + STUB.format(id=ex_id))
        last = end + 1
    out += lines[last:]
    released = "\n".join(out)
    try:
        ast.parse(released)
    except SyntaxError as err:  # e.g. a region that spans two functions
        raise ReleaseError(
            f"{where}: the student version of this cell is not valid Python ({err.msg}, line {err.lineno}); "
            "does a solution region cross a function boundary?"
        ) from err
    return released


def release_notebook(nb, name: str = "notebook"):
    """Return the student version of ``nb`` (a new notebook; ``nb`` is left as it is)."""
    nb = nbformat.from_dict(copy.deepcopy(nb))
    nb.cells = [c for c in nb.cells if not ((info := check_info(c)) and info.hidden)]  # the instructor's
    seen: dict[str, int] = {}
    for n, cell in enumerate(nb.cells):
        where = f"{name}: cell {n}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
            ex_id = exercise_id(cell)
            first = _first_line(cell)
            if re.match(r"^#\s*(HIDDEN\s+)?CHECK\b", first) and check_info(cell) is None:
                raise ReleaseError(
                    f"{where}: malformed check line {first!r}; write '# CHECK <id> [<part>] [(N points)]' "
                    "(a part is one word: use hyphens, not spaces), or '# HIDDEN CHECK ...'."
                )
            markers = [i for i, line in enumerate(cell.source.split("\n")) if _is_marker(line)]
            if ex_id is None:
                if markers:
                    raise ReleaseError(
                        f"{where}, line {markers[0] + 1}: solution marker in a cell that is not an exercise; "
                        "an exercise cell's first line must be '# EXERCISE <id>'."
                    )
                continue
            if ex_id in seen:
                raise ReleaseError(f"{where}: exercise id {ex_id!r} already used by cell {seen[ex_id]}.")
            seen[ex_id] = n
            cell.source = release_cell_source(cell.source, ex_id, where)
        else:
            if written_info(cell) is not None:
                cell.source = _first_line(cell) + "\n\n" + WRITTEN_PLACEHOLDER
            if "attachments" in cell and not cell.attachments:
                del cell["attachments"]
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    return nb


def read_notebook(path: Path):
    """Read a notebook, or raise :class:`ReleaseError` saying why it cannot be read."""
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as err:  # noqa: BLE001 - JSON errors, schema errors, binary files
        raise ReleaseError(f"{path}: not a readable Jupyter notebook ({type(err).__name__}: {err})") from err


def release_path(src, dst) -> list[Path]:
    """Write student versions: a folder of notebooks into folder ``dst``, or one notebook.

    For one notebook, ``dst`` is either a folder or the ``.ipynb`` path to write.
    Every notebook is checked before anything is written. Returns the written paths.
    """
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        sources = sorted(p for p in src.glob("*.ipynb"))
        if not sources:
            raise ReleaseError(f"{src}: no .ipynb files in this folder.")
        targets = [dst / p.name for p in sources]
    elif src.is_file():
        sources = [src]
        targets = [dst if dst.suffix == ".ipynb" else dst / src.name]
    else:
        raise ReleaseError(f"{src}: no such file or folder.")
    released = [release_notebook(read_notebook(p), name=str(p)) for p in sources]
    for nb, target in zip(released, targets):
        if target.resolve() in {s.resolve() for s in sources}:
            raise ReleaseError(f"{target}: refusing to overwrite a solution notebook; choose another output folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))
    return targets


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m course_utils.release",
        description="Write the student version of course notebooks (solutions replaced by stubs, outputs cleared), "
                    "or with --nbgrader an nbgrader source folder.",
    )
    parser.add_argument("--nbgrader", type=Path, metavar="COURSE_DIR",
                        help="write an nbgrader course folder (source/<lesson>/<lesson>.ipynb with nbgrader's cell "
                             "metadata) from the given notebooks instead of student versions")
    parser.add_argument("paths", nargs="+", type=Path,
                        help="notebook files or folders of notebooks, then the output folder (without --nbgrader)")
    args = parser.parse_args(argv)
    try:
        if args.nbgrader is not None:
            from .nbgrader_export import export_nbgrader  # nbgrader's layout; needs no nbgrader installed
            written = export_nbgrader(args.paths, args.nbgrader)
        else:
            if len(args.paths) < 2:
                parser.error("give the notebooks (files or folders) and then the output folder")
            *sources, outdir = args.paths
            written = []
            for src in sources:
                target = outdir if src.is_dir() else outdir / src.name
                written += release_path(src, target)
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
