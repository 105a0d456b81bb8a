"""Statements in lesson text that describe other notebooks, checked against those notebooks.

Notebook 00 tells students which notebooks use a pretrained ResNet-18 and which
ones train networks (where a GPU helps). Those lists go stale when a lesson
changes, so they are derived here from the notebooks' code and compared with
what 00 says.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# calls that load a pretrained ResNet-18, directly or inside the fine-tuning lab
PRETRAINED_CALLS = ("load_pretrained_resnet18(", "load_course_resnet18(", "load_imagenet_resnet18(", "run_lab(",
                    "lab_panel(", "run_batch_size_grid(")
# calls that train a network
TRAINING_CALLS = ("cu.fit(", "cu.train_step(", "run_lab(", "pretrain_course_resnet18(", "run_batch_size_grid(")


def _code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def _markdown(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return " ".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _calling(calls: tuple[str, ...]) -> list[str]:
    """Two-digit numbers of the notebooks whose code contains any of ``calls``, in order."""
    return [p.name[:2] for p in NOTEBOOKS if any(call in _code(p) for call in calls)]


def _named(pattern: str) -> list[str]:
    """The notebook numbers in the sentence of 00's text that ``pattern`` (one group) finds."""
    text = re.sub(r"\s+", " ", _markdown(ROOT / "notebooks" / "00_setup.ipynb"))
    found = re.search(pattern, text)
    assert found, f"00_setup no longer has a sentence matching {pattern!r}; update this test with the text"
    return re.findall(r"\d\d", found.group(1))


NUMBERS = r"((?:\d\d, )*\d\d(?:,? and \d\d)?)"


def test_setup_lists_every_notebook_that_uses_a_pretrained_resnet18():
    assert _named(rf"Notebooks {NUMBERS} use a pretrained ResNet-18") == _calling(PRETRAINED_CALLS)


def _trains_by_hand() -> tuple[list[str], list[str]]:
    """Notebooks with a training loop of their own (an optimizer): those that move it to `device`, and the rest."""
    own = [p for p in NOTEBOOKS if "torch.optim." in _code(p) and not any(c in _code(p) for c in TRAINING_CALLS)]
    on_device = [p.name[:2] for p in own if ".to(device)" in _code(p)]
    return on_device, [p.name[:2] for p in own if p.name[:2] not in on_device]


def test_setup_names_the_notebooks_a_gpu_speeds_up():
    on_device, on_cpu = _trains_by_hand()
    trains = sorted(n for n in _calling(TRAINING_CALLS) + on_device if n != "00")
    assert _named(rf"the training in notebooks {NUMBERS}") == trains
    assert _named(rf"Notebooks {NUMBERS} take optimizer steps on small networks on the CPU on purpose") == on_cpu
    # the one-time pretraining happens in the first notebook that loads a pretrained model
    first = _calling(PRETRAINED_CALLS)[0]
    assert _named(r"which is (\d\d) if you go in order") == [first]


CLEANED = [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("stem", CLEANED)
def test_lesson_text_keeps_issue_numbers_for_further_reading(stem):
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and "## Further reading" in cell.source:
            lesson = cell.source.split("## Further reading")[0]
        else:
            lesson = cell.source
        found = re.findall(r"[\w.-]+/[\w.-]+ (?:issue|PR|pull request) \d+", lesson)
        assert not found, f"cell {i} cites {found} in lesson text; move it to the further reading"


@pytest.mark.parametrize("stem", CLEANED)
def test_no_dead_nbval_output_markers(stem):
    # the notebooks run under --nbval-lax, which compares no outputs: NBVAL_IGNORE_OUTPUT would do nothing
    code = _code(ROOT / "notebooks" / f"{stem}.ipynb")
    assert "NBVAL_IGNORE_OUTPUT" not in code
