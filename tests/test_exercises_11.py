"""The check cells of notebook 11 (claims checked) catch the mistakes they are meant to catch.

As in tests/test_exercises_08.py, each test runs the notebook's own cells in a fresh namespace: the
setup cell, an answer (the solution, the student stub, or the solution with one planted mistake) and the
exercise's check cells, visible and hidden. The checks need no model and no data. The solution passes
every check; the stub and each planted bug fail with a message that names the mistake.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, planted, quick_namespace, run_cells, run_from

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "11_claims_checked.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")

FOLD_EXERCISE = _code(starts="# EXERCISE ex11-fold-bn")
FOLD_CHECKS = [_code(starts="# CHECK ex11-fold-bn\n"), _code(starts="# CHECK ex11-fold-bn unchanged"),
               _code(starts="# HIDDEN CHECK ex11-fold-bn stride-groups-eps")]
UNIT_EXERCISE = _code(starts="# EXERCISE ex11-unit-filters")
UNIT_CHECKS = [_code(starts="# CHECK ex11-unit-filters\n"), _code(starts="# HIDDEN CHECK ex11-unit-filters zero-filter")]



# planted bugs in fold_bn: each is the solution with one typical mistake
FOLD_NO_EPS = planted(FOLD_EXERCISE, "torch.sqrt(bn.running_var + bn.eps)", "torch.sqrt(bn.running_var)")
FOLD_FIXED_EPS = planted(FOLD_EXERCISE, "torch.sqrt(bn.running_var + bn.eps)", "torch.sqrt(bn.running_var + 1e-5)")
FOLD_LOSES_CONV_BIAS = planted(
    FOLD_EXERCISE, "bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)",
    "bias = torch.zeros_like(bn.running_mean)")
FOLD_IN_PLACE = planted(FOLD_EXERCISE, "folded = copy.deepcopy(conv)", "folded = conv")
FOLD_NEW_CONV = planted(FOLD_EXERCISE, "folded = copy.deepcopy(conv)",
                         "folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)")
FOLD_DELEGATES = '''def fold_bn(conv, bn):
    return torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
'''

# planted bugs in unit_filters
UNIT_NORM_LINE = "norms = weight.flatten(1).pow(2).sum(dim=1).sqrt().clamp_min(eps)"
UNIT_WHOLE_TENSOR = planted(UNIT_EXERCISE, UNIT_NORM_LINE, "norms = weight.norm().clamp_min(eps).expand(weight.shape[0])")
UNIT_SQUARED = planted(UNIT_EXERCISE, UNIT_NORM_LINE, "norms = weight.flatten(1).pow(2).sum(dim=1).clamp_min(eps)")
UNIT_NO_CLAMP = planted(UNIT_EXERCISE, UNIT_NORM_LINE, "norms = weight.flatten(1).pow(2).sum(dim=1).sqrt()")
UNIT_4D_ONLY = planted(UNIT_EXERCISE, "return weight / norms.view(-1, *[1] * (weight.dim() - 1))",
                        "return weight / norms.view(-1, 1, 1, 1)")
UNIT_IN_PLACE = planted(UNIT_EXERCISE, "return weight / norms.view(-1, *[1] * (weight.dim() - 1))",
                         "weight /= norms.view(-1, *[1] * (weight.dim() - 1))\n    return weight")
UNIT_DELEGATES = '''def unit_filters(weight, eps=1e-12):
    return F.normalize(weight.flatten(1), dim=1, eps=eps).view_as(weight)
'''


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup cell, in quick mode (shared: the cells do not change it)."""
    return quick_namespace(SETUP)



@pytest.mark.parametrize("planted", [FOLD_NO_EPS, FOLD_FIXED_EPS, FOLD_LOSES_CONV_BIAS, FOLD_IN_PLACE, FOLD_NEW_CONV,
                                     UNIT_WHOLE_TENSOR, UNIT_SQUARED, UNIT_NO_CLAMP, UNIT_4D_ONLY, UNIT_IN_PLACE])
def test_each_planted_bug_changes_the_solution(planted):
    assert planted not in (FOLD_EXERCISE, UNIT_EXERCISE)


# ---------------------------------------------------------------- ex11-fold-bn

def test_fold_bn_solution_passes_every_check(base, capsys):
    run_from(base, FOLD_EXERCISE, *FOLD_CHECKS)
    out = capsys.readouterr().out
    for part in ("ex11-fold-bn: ", "ex11-fold-bn (unchanged)", "ex11-fold-bn (stride-groups-eps)"):
        assert part in out, out


def test_fold_bn_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex11-fold-bn", student=True), FOLD_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (FOLD_NO_EPS, FOLD_CHECKS[:1], r"leaves out eps"),
    (FOLD_LOSES_CONV_BIAS, FOLD_CHECKS[:1], r"conv bias=True.*convolution's own bias is lost"),
    (FOLD_IN_PLACE, FOLD_CHECKS[:2], r"fold_bn changed \['conv\.weight'"),
    (FOLD_FIXED_EPS, FOLD_CHECKS, r"eps=0\.1.*use bn\.eps"),
    (FOLD_NEW_CONV, FOLD_CHECKS, r"fails on an input the original takes.*groups"),
    (FOLD_DELEGATES, FOLD_CHECKS[:1], r"calls torch\.nn\.utils\.fusion"),
], ids=["no-eps", "loses-conv-bias", "in-place", "fixed-eps", "new-conv-without-stride", "calls-fuse_conv_bn_eval"])
def test_fold_bn_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


def test_fold_bn_parts_score_separately(base):
    """Partial credit: folding in place gives the right outputs; only the 'unchanged' part fails."""
    namespace = run_from(base, FOLD_IN_PLACE, FOLD_CHECKS[0])
    with pytest.raises(CheckFailed, match="leave the originals"):
        run_cells(FOLD_CHECKS[1], namespace=namespace)
    run_cells(FOLD_CHECKS[2], namespace=namespace)  # the hidden part tests the outputs too: it passes


# ---------------------------------------------------------------- ex11-unit-filters

def test_unit_filters_solution_passes_every_check(base, capsys):
    run_from(base, UNIT_EXERCISE, *UNIT_CHECKS)
    out = capsys.readouterr().out
    assert "ex11-unit-filters: " in out and "ex11-unit-filters (zero-filter)" in out, out


def test_unit_filters_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex11-unit-filters", student=True), UNIT_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (UNIT_WHOLE_TENSOR, UNIT_CHECKS[:1], r"one norm for the whole tensor"),
    (UNIT_SQUARED, UNIT_CHECKS[:1], r"the squared norm"),
    (UNIT_IN_PLACE, UNIT_CHECKS[:1], r"changed its input in place"),
    (UNIT_NO_CLAMP, UNIT_CHECKS, r"zero filter, eps=1e-12: contains NaN"),
    (UNIT_4D_ONLY, UNIT_CHECKS, r"\(5, 7\) weight"),
    (UNIT_DELEGATES, UNIT_CHECKS[:1], r"calls torch\.nn\.functional\.normalize"),
], ids=["whole-tensor-norm", "squared-norm", "in-place", "no-clamp", "4-D-only", "calls-F.normalize"])
def test_unit_filters_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)
