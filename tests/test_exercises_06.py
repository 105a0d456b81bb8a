"""The check cells of notebook 06 catch the mistakes they are meant to catch, inside the network.

As in tests/test_exercises_02_04.py, each test runs the notebook's own cells in a fresh namespace:
the setup cell, the cell that loads the pretrained model, the cells of helpers and reference curves
the checks use, an answer and the check cell. The reference solution must pass; the stub and each planted bug must fail
with a message that names the mistake.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, run_cells

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "06_norm_in_the_network.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")
MODEL = _code(contains="cu.load_pretrained_resnet18(\"course\")")
HELPERS = _code(contains="def loss_curve(")
BN_CURVE = _code(starts="bn_curve = ")
GN_CURVES = _code(starts="gn_curves = {")
BN_EXERCISE = _code(starts="# EXERCISE ex06-bn-network")
BN_CHECK = _code(starts="# CHECK ex06-bn-network")
GN_EXERCISE = _code(starts="# EXERCISE ex06-gn-network")
GN_CHECK = _code(starts="# CHECK ex06-gn-network")

# planted bugs: each is the solution with one typical mistake
BN_UPDATES_IN_EVAL = BN_EXERCISE.replace("        if self.training:\n            self.num_batches_tracked += 1",
                                         "        self.num_batches_tracked += 1\n        if True:")
BN_UPDATES_IN_EVAL = BN_UPDATES_IN_EVAL.replace("        else:\n            mean, var = self.running_mean, self.running_var\n",
                                                "")
BN_UNBIASED = BN_EXERCISE.replace("var = (x - mean.view(1, -1, 1, 1)).pow(2).mean(dim=(0, 2, 3))  # (C,), biased",
                                  "var = x.var(dim=(0, 2, 3))")
GN_PER_CHANNEL = GN_EXERCISE.replace("groups = x.reshape(x.shape[0], self.num_groups, -1)",
                                     "groups = x.reshape(x.shape[0], x.shape[1], -1)")
GN_UNBIASED = GN_EXERCISE.replace("var = (groups - mean).pow(2).mean(dim=2, keepdim=True)",
                                  "var = groups.var(dim=2, keepdim=True)")
GN_ONE_PASS = GN_EXERCISE.replace("var = (groups - mean).pow(2).mean(dim=2, keepdim=True)",
                                  "var = groups.pow(2).mean(dim=2, keepdim=True) - mean.pow(2)")


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup and model cells, in quick mode (shared: the cells do not change it)."""
    old = dict(os.environ)
    os.environ.update(COURSE_QUICK="1", COURSE_DEVICE="cpu", MPLBACKEND="agg")
    try:
        return run_cells(SETUP, MODEL)
    finally:
        os.environ.clear()
        os.environ.update(old)


def _run(base: dict, *sources: str) -> dict:
    return run_cells(*sources, namespace=dict(base))


@pytest.mark.parametrize("planted", [BN_UPDATES_IN_EVAL, BN_UNBIASED, GN_PER_CHANNEL, GN_UNBIASED, GN_ONE_PASS])
def test_each_planted_bug_changes_the_solution(planted):
    assert planted not in (BN_EXERCISE, GN_EXERCISE)


def test_bn_check_passes_the_solution(base, capsys):
    _run(base, HELPERS, BN_CURVE, BN_EXERCISE, BN_CHECK)
    assert "ex06-bn-network: all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("answer, expected", [
    (BN_UPDATES_IN_EVAL, "changed in eval mode"),
    (BN_UNBIASED, "BIASED"),
])
def test_bn_check_names_the_planted_bug(base, answer, expected):
    with pytest.raises(CheckFailed, match=expected):
        _run(base, HELPERS, BN_CURVE, answer, BN_CHECK)


def test_bn_check_fails_on_the_student_version(base):
    with pytest.raises(NotImplementedError):
        _run(base, HELPERS, BN_CURVE, _code(starts="# EXERCISE ex06-bn-network", student=True), BN_CHECK)


def test_gn_check_passes_the_solution(base, capsys):
    _run(base, HELPERS, GN_CURVES, GN_EXERCISE, GN_CHECK)
    assert "ex06-gn-network: all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("answer, expected", [
    (GN_PER_CHANNEL, r"reshape to \(N, G, -1\)"),
    (GN_UNBIASED, "BIASED"),
    (GN_ONE_PASS, r"E\[x\*\*2\] - E\[x\]\*\*2"),
])
def test_gn_check_names_the_planted_bug(base, answer, expected):
    with pytest.raises(CheckFailed, match=expected):
        _run(base, HELPERS, GN_CURVES, answer, GN_CHECK)


def test_gn_check_fails_on_the_student_version(base):
    with pytest.raises(NotImplementedError):
        _run(base, HELPERS, GN_CURVES, _code(starts="# EXERCISE ex06-gn-network", student=True), GN_CHECK)
