"""The check cell of notebook 02's backward exercise names the first wrong gradient, node by node.

(The other exercises of 02 are tested in test_exercises_02.py.)

Each test runs a notebook's own cells (its setup cell, the cells the exercise needs,
and the check cell) in a fresh namespace, once with the reference solution, which
must pass, and once with a typical wrong answer, which must fail with a message
that says what is wrong.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell as _code, run_cells as _run

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
BN = NOTEBOOKS / "02_batch_norm.ipynb"


# ---------------------------------------------------------------- 02: backward, node by node

BN_SETUP = _code(BN, contains="import course_utils as cu")
BN_FORWARD = _code(BN, contains="def bn_forward_steps(")
BN_EXERCISE = _code(BN, starts="# EXERCISE ex02-bn-backward")
BN_CHECK = _code(BN, starts="# CHECK ex02-bn-backward")


def _bn_check_failure(exercise_source: str) -> str:
    namespace = _run(BN_SETUP, BN_FORWARD, exercise_source)
    with pytest.raises(CheckFailed) as failure:
        _run(BN_CHECK, namespace=namespace)
    return str(failure.value)


def test_bn_backward_check_passes_the_solution(capsys):
    _run(BN_SETUP, BN_FORWARD, BN_EXERCISE, BN_CHECK)
    assert "ex02-bn-backward: all checks passed" in capsys.readouterr().out


def test_bn_backward_check_names_the_first_wrong_gradient():
    right = 'grads["var"] = -0.5 * inv_std.pow(3)'
    assert BN_EXERCISE.count(right) == 1
    message = _bn_check_failure(BN_EXERCISE.replace(right, 'grads["var"] = 0.5 * inv_std.pow(3)'))
    assert message.startswith("dL/dvar "), message       # not a later gradient that inherits the error
    assert "relative error" in message and "inv_std = (var + eps) ** -0.5" in message


def test_bn_backward_check_reports_progress_on_an_unfinished_answer():
    lines = BN_EXERCISE.split("\n")
    at = next(i for i, line in enumerate(lines) if line.strip().startswith('grads["var"] ='))
    lines.insert(at, '    raise NotImplementedError("ex02-bn-backward: your code here")')
    message = _bn_check_failure("\n".join(lines))
    assert "grads['var'] was not filled in" in message
    assert "match autograd: x_hat, weight, bias, inv_std" in message


def test_bn_backward_check_fails_on_the_student_version():
    message = _bn_check_failure(_code(BN, starts="# EXERCISE ex02-bn-backward", student=True))
    assert "grads['x_hat'] was not filled in" in message and "NotImplementedError" in message
