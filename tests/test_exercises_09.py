"""The check cells of notebook 09 (batch norm across processes) catch the mistakes they are meant to catch.

Each test runs the notebook's own cells in a fresh namespace: the setup cell, an answer (the solution,
the student stub, or the solution with one planted mistake) and the exercise's check cells, visible and
hidden. The checks run in this process (the notebook then runs the answers in several): the solution
passes every check; the stub and each planted bug fail with a message that names the mistake.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, planted, quick_namespace, run_cells, run_from

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "09_batch_norm_across_processes.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")

MERGE_EXERCISE = _code(starts="# EXERCISE ex09-merge-moments")
MERGE_CHECKS = [_code(starts="# CHECK ex09-merge-moments (2 points)\n"), _code(starts="# HIDDEN CHECK ex09-merge-moments empty-shard")]
GRAD_EXERCISE = _code(starts="# EXERCISE ex09-bn-input-grad")
GRAD_CHECKS = [_code(starts="# CHECK ex09-bn-input-grad (2 points)\n"), _code(starts="# HIDDEN CHECK ex09-bn-input-grad no-affine")]

# planted bugs in merge_moments: each is the solution with one typical mistake
MEAN_LINE = "mean = (weights * means).sum(dim=0) / n.clamp(min=1)                # (C,)"
M2_LINE = "m2 = m2s.sum(dim=0) + (weights * (means - mean).pow(2)).sum(dim=0)  # within + between shards"
MERGE_PLAIN_AVERAGE = planted(MERGE_EXERCISE, MEAN_LINE, "mean = means.mean(dim=0)")
MERGE_NO_BETWEEN = planted(MERGE_EXERCISE, M2_LINE, "m2 = m2s.sum(dim=0)")
MERGE_UNWEIGHTED_BETWEEN = planted(MERGE_EXERCISE, M2_LINE, "m2 = m2s.sum(dim=0) + (means - mean).pow(2).sum(dim=0)")
# right formula, but through each shard's variance M2_r / n_r: an empty shard gives 0 / 0
MERGE_VIA_VARIANCES = planted(MERGE_EXERCISE, M2_LINE,
                              "m2 = (weights * (m2s / weights + (means - mean).pow(2))).sum(dim=0)")
MERGE_DELEGATES = '''def merge_moments(counts, means, m2s):
    return cu.merge_moments(counts, means, m2s)
'''

# planted bugs in bn_input_grad
GRAD_LINE = "return c(scale) * (grad_y - c(sum_dy / count) - x_hat * c(sum_dy_xhat / count))"
GRAD_LOCAL_SUMS = planted(GRAD_EXERCISE, GRAD_LINE,
                          "n = grad_y.numel() // grad_y.shape[1]\n    return c(scale) * (grad_y - c(grad_y.sum(dim=(0, 2, 3)) / n)"
                          " - x_hat * c((grad_y * x_hat).sum(dim=(0, 2, 3)) / n))")
GRAD_NO_VARIANCE_TERM = planted(GRAD_EXERCISE, GRAD_LINE, "return c(scale) * (grad_y - c(sum_dy / count))")
GRAD_NO_WEIGHT = planted(GRAD_EXERCISE, "scale = invstd if weight is None else weight * invstd", "scale = invstd")
GRAD_WEIGHT_REQUIRED = planted(GRAD_EXERCISE, "scale = invstd if weight is None else weight * invstd",
                               "scale = weight * invstd")
GRAD_DELEGATES = '''def bn_input_grad(grad_y, x_hat, weight, invstd, count, sum_dy, sum_dy_xhat):
    return cu.batch_norm_input_grad(grad_y, x_hat, weight, invstd, count, sum_dy, sum_dy_xhat)
'''


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup cell, in quick mode (shared: the cells do not change it)."""
    return quick_namespace(SETUP)


@pytest.mark.parametrize("bug", [MERGE_PLAIN_AVERAGE, MERGE_NO_BETWEEN, MERGE_UNWEIGHTED_BETWEEN, MERGE_VIA_VARIANCES,
                                 GRAD_LOCAL_SUMS, GRAD_NO_VARIANCE_TERM, GRAD_NO_WEIGHT, GRAD_WEIGHT_REQUIRED])
def test_each_planted_bug_changes_the_solution(bug):
    assert bug not in (MERGE_EXERCISE, GRAD_EXERCISE)


# ---------------------------------------------------------------- ex09-merge-moments

def test_merge_solution_passes_every_check(base, capsys):
    run_from(base, MERGE_EXERCISE, *MERGE_CHECKS)
    out = capsys.readouterr().out
    assert "ex09-merge-moments: " in out and "ex09-merge-moments (empty-shard)" in out, out


def test_merge_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex09-merge-moments", student=True), MERGE_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (MERGE_PLAIN_AVERAGE, MERGE_CHECKS[:1], r"weights each shard mean by its count"),
    (MERGE_NO_BETWEEN, MERGE_CHECKS[:1], r"M2 .*between-shard term"),
    (MERGE_UNWEIGHTED_BETWEEN, MERGE_CHECKS[:1], r"M2 .*n_r \* \(mean_r - mean\)\^2"),
    (MERGE_VIA_VARIANCES, MERGE_CHECKS, r"one empty.*NaN"),
    (MERGE_DELEGATES, MERGE_CHECKS[:1], r"calls course_utils\.merge_moments"),
], ids=["plain-average", "no-between-term", "unweighted-between-term", "divides-by-empty-count", "delegates"])
def test_merge_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


def test_merge_via_variances_passes_the_visible_check(base):
    """Partial credit: the formula is right; only an empty shard (0 / 0) breaks it, in the hidden part."""
    run_from(base, MERGE_VIA_VARIANCES, MERGE_CHECKS[0])


# ---------------------------------------------------------------- ex09-bn-input-grad

def test_input_grad_solution_passes_every_check(base, capsys):
    run_from(base, GRAD_EXERCISE, *GRAD_CHECKS)
    out = capsys.readouterr().out
    assert "ex09-bn-input-grad: " in out and "ex09-bn-input-grad (no-affine)" in out, out


def test_input_grad_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex09-bn-input-grad", student=True), GRAD_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (GRAD_LOCAL_SUMS, GRAD_CHECKS[:1], r"each shard used its own sums"),
    (GRAD_NO_VARIANCE_TERM, GRAD_CHECKS[:1], r"gradient through the variance is missing"),
    (GRAD_NO_WEIGHT, GRAD_CHECKS[:1], r"weight \(gamma\) multiplies everything"),
    (GRAD_WEIGHT_REQUIRED, GRAD_CHECKS, r"weight=None.*no affine"),
    (GRAD_DELEGATES, GRAD_CHECKS[:1], r"calls course_utils\.batch_norm_input_grad"),
], ids=["local-sums", "no-variance-term", "no-weight", "weight-required", "delegates"])
def test_input_grad_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


def test_torch_backward_is_refused_too(base):
    answer = '''def bn_input_grad(grad_y, x_hat, weight, invstd, count, sum_dy, sum_dy_xhat):
    mean = torch.zeros_like(invstd)
    return torch.batch_norm_backward_elemt(grad_y, x_hat, mean, invstd, weight, sum_dy, sum_dy_xhat,
                                           torch.tensor([count], dtype=torch.int32))
'''
    with pytest.raises(CheckFailed, match=r"calls torch\.batch_norm_backward_elemt"):
        run_from(base, answer, GRAD_CHECKS[0])


def test_a_subclass_of_the_course_layer_is_refused_as_an_answer():
    from course_utils.checks import by_hand
    import course_utils as cu

    class Lazy(cu.SyncBatchNorm2d):
        pass

    with pytest.raises(CheckFailed, match=r"Lazy is a subclass of course_utils\..*BatchNorm2d"):
        with by_hand("ex09-any", "batch_norm", answer=Lazy):
            pass
