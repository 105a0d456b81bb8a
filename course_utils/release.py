"""Write the student version of the course notebooks.

    python -m course_utils.release notebooks/ release/        # every notebook in a folder
    python -m course_utils.release notebooks/02_batch_norm.ipynb release/

The convention (see the README): an exercise is a code cell whose first line is
``# EXERCISE <id>``; inside a function or method body of that cell the answer
sits between a ``### BEGIN SOLUTION`` line and a ``### END SOLUTION`` line. The
student version replaces each such region by
``raise NotImplementedError("<id>: your code here")`` at the indentation of the
BEGIN line, and drops everything a run leaves behind: outputs, execution
counts and the saved widget state. The check cell after an exercise starts
with ``# CHECK <id>`` and is kept as it is.
"""
from __future__ import annotations

import ast
import copy
import re
import sys
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
EXERCISE_RE = re.compile(r"^#\s*EXERCISE\s+(\S+)\s*$")
CHECK_RE = re.compile(r"^#\s*CHECK\s+(\S+)\s*$")
STUB = 'raise NotImplementedError("{id}: your code here")'


class ReleaseError(ValueError):
    """A notebook that breaks the exercise convention; the message says where and how."""


def _first_line(cell) -> str:
    return cell.source.split("\n", 1)[0].strip() if cell.source else ""


def exercise_id(cell) -> str | None:
    """The id of an exercise cell (first line ``# EXERCISE <id>``), else None."""
    if cell.cell_type != "code":
        return None
    m = EXERCISE_RE.match(_first_line(cell))
    return m.group(1) if m else None


def check_id(cell) -> str | None:
    """The id of a check cell (first line ``# CHECK <id>``), else None."""
    if cell.cell_type != "code":
        return None
    m = CHECK_RE.match(_first_line(cell))
    return m.group(1) if m else None


def exercise_ids(nb) -> list[str]:
    """Exercise ids in notebook order."""
    return [i for i in (exercise_id(c) for c in nb.cells) if i]


def exercise_cells(nb) -> dict[str, int]:
    """``{exercise id: cell index}`` (the last cell, if an id appears twice)."""
    return {i: n for n, c in enumerate(nb.cells) if (i := exercise_id(c))}


def check_cells(nb) -> dict[str, int]:
    """``{exercise id: index of its check cell}``."""
    return {i: n for n, c in enumerate(nb.cells) if (i := check_id(c))}


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
        _check_inside_function(tree, lines, begin, end, where)
        out += lines[last:begin]
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
    seen: dict[str, int] = {}
    for n, cell in enumerate(nb.cells):
        where = f"{name}: cell {n}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
            ex_id = exercise_id(cell)
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
        elif "attachments" in cell and not cell.attachments:
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
        description="Write the student version of course notebooks (solutions replaced by stubs, outputs cleared).",
    )
    parser.add_argument("sources", nargs="+", type=Path, help="notebook files or folders of notebooks")
    parser.add_argument("outdir", type=Path, help="folder to write the student versions to")
    args = parser.parse_args(argv)
    try:
        written = []
        for src in args.sources:
            target = args.outdir if src.is_dir() else args.outdir / src.name
            written += release_path(src, target)
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
