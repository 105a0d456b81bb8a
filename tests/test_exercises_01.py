"""The check cells of notebook 01 pass the reference answers and catch the mistakes they are meant to catch.

As in tests/test_exercises_08.py, each test runs the notebook's own cells in a fresh namespace: the setup
cell, what the check needs (the held-out Fashion-MNIST images for ex01-channel-stats), an answer and the
check cell. The solution must pass; the student's stub and each planted bug must fail, the bug with a
message that names the mistake.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, planted, quick_namespace, run_cells, run_from

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01_input_normalization.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")
FASHION = 'fashion = cu.load_domain("source", train=False)'      # what cell "gray = ..." defines for the check
STATS_EXERCISE = _code(starts="# EXERCISE ex01-channel-stats")
STATS_CHECK = _code(starts="# CHECK ex01-channel-stats")
FOLD_EXERCISE = _code(starts="# EXERCISE ex01-fold-normalization")
FOLD_CHECK = _code(starts="# CHECK ex01-fold-normalization")



# ---------------------------------------------------------------- planted bugs: ex01-channel-stats
STATS_PER_IMAGE = '''
def streaming_channel_stats(batches):
    """The published mistake: the average of every image's own std."""
    count, mean_sum, std_sum = 0, 0.0, 0.0
    for batch in batches:
        x = batch.double() / 255 if batch.dtype == torch.uint8 else batch.double()
        mean_sum = mean_sum + x.mean(dim=(2, 3)).sum(dim=0)
        std_sum = std_sum + x.std(dim=(2, 3), correction=0).sum(dim=0)
        count += x.shape[0]
    return mean_sum / count, std_sum / count
'''
STATS_NO_DELTA = planted(STATS_EXERCISE, "m2 = m2 + m2_b + delta ** 2 * (count * n_b / n)", "m2 = m2 + m2_b")
STATS_WRONG_AXES = planted(STATS_EXERCISE, "x = x.transpose(0, 1).reshape(x.shape[1], -1)",
                            "x = x.reshape(x.shape[1], -1)")
STATS_UNBIASED = planted(STATS_EXERCISE, "return mean, (m2 / count).sqrt()", "return mean, (m2 / (count - 1)).sqrt()")
STATS_ONE_PASS = '''
def streaming_channel_stats(batches):
    """Sums of x and x**2, then E[x**2] - E[x]**2: exact algebra, catastrophic rounding far from zero."""
    count, total, total_sq = 0, 0.0, 0.0
    for batch in batches:
        x = batch.double() / 255 if batch.dtype == torch.uint8 else batch.double()
        x = x.transpose(0, 1).reshape(x.shape[1], -1)
        total, total_sq, count = total + x.sum(dim=1), total_sq + x.pow(2).sum(dim=1), count + x.shape[1]
    mean = total / count
    return mean, (total_sq / count - mean ** 2).clamp(min=0).sqrt()
'''

# ---------------------------------------------------------------- planted bugs: ex01-fold-normalization
FOLD_MULTIPLIED = planted(FOLD_EXERCISE, "folded.weight.copy_(w / std)", "folded.weight.copy_(w * std)")
FOLD_BIAS_DROPPED = planted(FOLD_EXERCISE, "folded.bias.copy_(b - (w * mean / std).sum(dim=(1, 2, 3)))",
                             "folded.bias.copy_(-(w * mean / std).sum(dim=(1, 2, 3)))")
FOLD_IN_PLACE = planted(FOLD_EXERCISE, "folded = copy.deepcopy(conv)", "folded = conv")
FOLD_NO_KERNEL_SUM = planted(FOLD_EXERCISE, "(w * mean / std).sum(dim=(1, 2, 3))", "(w * mean / std).sum(dim=1)[:, 0, 0]")


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup cell and the held-out images, in quick mode (the checks do not change it)."""
    return quick_namespace(SETUP, FASHION)



@pytest.mark.parametrize("planted", [STATS_NO_DELTA, STATS_WRONG_AXES, STATS_UNBIASED,
                                     FOLD_MULTIPLIED, FOLD_BIAS_DROPPED, FOLD_IN_PLACE, FOLD_NO_KERNEL_SUM])
def test_each_planted_bug_changes_the_solution(planted):
    assert planted not in (STATS_EXERCISE, FOLD_EXERCISE)


def test_channel_stats_check_passes_the_solution(base, capsys):
    run_from(base, STATS_EXERCISE, STATS_CHECK)
    assert "ex01-channel-stats: all checks passed" in capsys.readouterr().out


def test_channel_stats_check_fails_on_the_student_version(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex01-channel-stats", student=True), STATS_CHECK)


@pytest.mark.parametrize("answer, expected", [
    (STATS_PER_IMAGE, r"smaller than the dataset's.*Averaging per-image"),
    (STATS_NO_DELTA, r"smaller than the dataset's.*delta\*\*2"),
    (STATS_WRONG_AXES, r"means differ.*transpose\(0, 1\)"),
    (STATS_UNBIASED, r"larger than the dataset's.*population std"),
    (STATS_ONE_PASS, r"large-offset.*E\[x\^2\] - E\[x\]\^2"),
], ids=["per-image stds averaged", "merge without the delta term", "reshape without transpose",
        "unbiased std", "E[x^2] - E[x]^2"])
def test_channel_stats_check_names_the_planted_bug(base, answer, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, STATS_CHECK)


def test_fold_check_passes_the_solution(base, capsys):
    run_from(base, FOLD_EXERCISE, FOLD_CHECK)
    assert "ex01-fold-normalization: all checks passed" in capsys.readouterr().out


def test_fold_check_fails_on_the_student_version(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex01-fold-normalization", student=True), FOLD_CHECK)


@pytest.mark.parametrize("answer, expected", [
    (FOLD_MULTIPLIED, r"folded weight: differs.*divide \(not multiply\)"),
    (FOLD_BIAS_DROPPED, r"3x3 conv with bias: folded bias: differs.*keep the conv's own bias"),
    (FOLD_IN_PLACE, r"changed the conv it was given.*copy\.deepcopy"),
    (FOLD_NO_KERNEL_SUM, r"folded bias: differs.*sum over c, i, j"),
], ids=["weight times std", "conv bias dropped", "folded in place", "bias not summed over the kernel"])
def test_fold_check_names_the_planted_bug(base, answer, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, FOLD_CHECK)


def test_later_cells_fall_back_to_the_reference_when_the_check_failed(base, capsys):
    """cu.answer_or_reference gives the student's function after its check passed, the course's otherwise."""
    ns = run_from(base, "cu.checks.PASSED.discard(('ex01-fold-normalization', None))", FOLD_MULTIPLIED)
    with pytest.raises(CheckFailed):
        run_cells(FOLD_CHECK, namespace=ns)
    fold_cell = _code(contains="fold_plain = cu.answer_or_reference(")
    setup_only = fold_cell.split("model.cpu()")[0]          # the definitions, before the model is needed
    run_cells(setup_only, namespace=ns)
    assert ns["fold_plain"] is ns["course_fold"]
    assert "has not passed its check" in capsys.readouterr().out
    run_cells(FOLD_EXERCISE, FOLD_CHECK, setup_only, namespace=ns)
    assert ns["fold_plain"] is ns["fold_into_conv"]
