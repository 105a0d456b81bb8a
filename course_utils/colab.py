"""Colab delivery: the "Open in Colab" badge and the setup cell of every notebook.

    python -m course_utils.colab stamp notebooks/

The course repository's address is set once, in ``REPO_URL`` below; change it
(and ``BRANCH``) when the course moves, then stamp again. Stamping replaces

* the markdown line ``<!-- COLAB BADGE -->`` (or a badge stamped before) with
  the badge linking to this notebook on Colab, and
* the code cell whose first line starts with ``# COLAB SETUP`` with the setup
  cell: on Colab it clones the repository (so ``data/photos`` exists), installs
  ``course_utils`` with ``--no-deps`` (Colab's own torch and torchvision stay),
  installs only the light packages Colab lacks, and changes into ``notebooks/``.
  Elsewhere it does nothing.

Stamping twice gives the same files, so it is safe to re-run after notebooks change.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

REPO_URL = "https://github.com/normalization-course/normalization-course"
BRANCH = "main"
COLAB_DIR = "/content/normalization-course"
BADGE_PLACEHOLDER = "<!-- COLAB BADGE -->"
SETUP_PREFIX = "# COLAB SETUP"
# Light packages the course needs (module and pip name agree); Colab ships them today, and the setup
# cell installs any that are missing. torch and torchvision are never installed by it.
LIGHT_DEPS = ("timm", "tqdm", "ipywidgets", "matplotlib")
BADGE_RE = re.compile(
    r"^\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]\([^)]*\)\s*$"
)


def colab_url(notebook_name: str) -> str:
    """Colab's address for ``notebooks/<notebook_name>`` on GitHub."""
    github = REPO_URL.rstrip("/").removesuffix(".git").split("github.com/", 1)[-1]
    return f"https://colab.research.google.com/github/{github}/blob/{BRANCH}/notebooks/{notebook_name}"


def badge(notebook_name: str) -> str:
    """The badge's markdown, linking to this notebook on Colab."""
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook_name)})"


def setup_cell_source() -> str:
    """The first code cell of every notebook (identical everywhere)."""
    deps = ", ".join(f'"{name}"' for name in LIGHT_DEPS)
    return f'''{SETUP_PREFIX}: installs course_utils on Colab only; does nothing elsewhere.
# It keeps Colab's own torch and torchvision; the repository address is set in course_utils/colab.py.
import os, sys
if "google.colab" in sys.modules:
    import importlib.metadata, importlib.util, subprocess
    REPO_URL, COURSE_DIR = "{REPO_URL}", "{COLAB_DIR}"
    if not os.path.isdir(COURSE_DIR):  # a clone brings course_utils and data/photos
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{BRANCH}", REPO_URL, COURSE_DIR], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", COURSE_DIR], check=True)
    missing = [name for name in ({deps}) if importlib.util.find_spec(name) is None]
    if missing:  # pin Colab's torch so pip cannot replace it while resolving
        pins = os.path.join(COURSE_DIR, ".colab-pins.txt")
        with open(pins, "w") as f:
            f.write("".join(f"{{p}}=={{importlib.metadata.version(p)}}\\n" for p in ("torch", "torchvision")))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", pins, *missing], check=True)
    if COURSE_DIR not in sys.path:  # an editable install is seen by this kernel only after a restart
        sys.path.insert(0, COURSE_DIR)
    os.chdir(os.path.join(COURSE_DIR, "notebooks"))'''


def stamp_notebook(nb, notebook_name: str) -> bool:
    """Stamp badge and setup cell into ``nb`` in place; True when something changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.split("\n")
            new = [badge(notebook_name) if (line.strip() == BADGE_PLACEHOLDER or BADGE_RE.match(line.strip()))
                   else line for line in lines]
            if new != lines:
                cell.source, changed = "\n".join(new), True
        elif cell.cell_type == "code" and cell.source.lstrip().startswith(SETUP_PREFIX):
            if cell.source != setup_cell_source():
                cell.source, changed = setup_cell_source(), True
    return changed


def stamp_path(path) -> list[Path]:
    """Stamp one notebook or every notebook in a folder; returns the files that changed."""
    path = Path(path)
    files = sorted(path.glob("*.ipynb")) if path.is_dir() else [path]
    changed = []
    for file in files:
        nb = nbformat.read(str(file), as_version=4)
        if stamp_notebook(nb, file.name):
            nbformat.validate(nb)
            nbformat.write(nb, str(file))
            changed.append(file)
    return changed


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m course_utils.colab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    stamp = sub.add_parser("stamp", help="stamp the Colab badge and setup cell into notebooks")
    stamp.add_argument("paths", nargs="+", type=Path, help="notebooks or folders of notebooks")
    args = parser.parse_args(argv)
    for p in args.paths:
        if not p.exists():
            print(f"error: {p}: no such file or folder", file=sys.stderr)
            return 1
        changed = stamp_path(p)
        print(f"{p}: stamped {len(changed)} notebook(s)" + "".join(f"\n  {c}" for c in changed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
