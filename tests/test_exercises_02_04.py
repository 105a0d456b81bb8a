"""The check cells of two exercises catch the mistakes they are meant to catch.

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
RESPONSE = NOTEBOOKS / "04_response_norms.ipynb"


# ---------------------------------------------------------------- 04: GRN and dead channels

GRN_SETUP = _code(RESPONSE, contains="import course_utils as cu")
GRN_EXERCISE = _code(RESPONSE, starts="# EXERCISE ex04-grn")
GRN_CHECK = _code(RESPONSE, starts="# CHECK ex04-grn")

SQRT_OF_SUM = '''
def my_global_response_norm(x, gamma, beta, eps=1e-6, channels_last=True):
    spatial, channel = ((1, 2), -1) if channels_last else ((2, 3), 1)
    view = (1, 1, 1, -1) if channels_last else (1, -1, 1, 1)
    energy = x.pow(2).sum(dim=spatial, keepdim=True).sqrt()
    relative = energy / (energy.mean(dim=channel, keepdim=True) + eps)
    return gamma.view(view) * (x * relative) + beta.view(view) + x
'''


def test_grn_check_passes_the_solution(capsys):
    _run(GRN_SETUP, GRN_EXERCISE, GRN_CHECK)
    assert "ex04-grn: all checks passed" in capsys.readouterr().out


def test_grn_check_rejects_sqrt_of_sum_of_squares_with_a_helpful_message():
    namespace = _run(GRN_SETUP, SQRT_OF_SUM)
    with pytest.raises(CheckFailed) as failure:
        _run(GRN_CHECK, namespace=namespace)
    message = str(failure.value)
    assert "NaN gradient on an all-zero channel" in message
    assert "torch.linalg.vector_norm" in message


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
