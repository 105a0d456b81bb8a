"""The check cells of notebook 04 catch the mistakes they are meant to catch.

As in tests/test_exercises_08.py, each test runs the notebook's own cells in a fresh namespace: the setup
cell, an answer (the solution, the student's stub, or the solution with one planted bug) and the
exercise's check cells, visible and hidden. The solution passes every check; the stub and each planted
bug fail with a message that names the mistake; an answer that delegates to the library layer it is
asked to write fails with cu.by_hand's message.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, failure_message, planted, run_cells

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "04_layer_group_instance_norm.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")

LN = _code(starts="# EXERCISE ex04-layer-norm")
LN_CHECK = _code(starts="# CHECK ex04-layer-norm\n")
LN_AFFINE = _code(starts="# CHECK ex04-layer-norm affine")
LN_HIDDEN = _code(starts="# HIDDEN CHECK ex04-layer-norm ")
LN2D = _code(starts="# EXERCISE ex04-layernorm2d")
LN2D_CHECK = _code(starts="# CHECK ex04-layernorm2d\n")
LN2D_HIDDEN = _code(starts="# HIDDEN CHECK ex04-layernorm2d ")
GN = _code(starts="# EXERCISE ex04-group-norm")
GN_CHECK = _code(starts="# CHECK ex04-group-norm\n")
GN_ERROR = _code(starts="# CHECK ex04-group-norm groups-error")
GN_HIDDEN = _code(starts="# HIDDEN CHECK ex04-group-norm ")
IN = _code(starts="# EXERCISE ex04-instance-norm")
IN_CHECK = _code(starts="# CHECK ex04-instance-norm\n")
IN_AFFINE = _code(starts="# CHECK ex04-instance-norm affine")
IN_HIDDEN = _code(starts="# HIDDEN CHECK ex04-instance-norm ")

CHECKS = {
    "ex04-layer-norm": (LN, [LN_CHECK, LN_AFFINE, LN_HIDDEN]),
    "ex04-layernorm2d": (LN2D, [LN2D_CHECK, LN2D_HIDDEN]),
    "ex04-group-norm": (GN, [GN_CHECK, GN_ERROR, GN_HIDDEN]),
    "ex04-instance-norm": (IN, [IN_CHECK, IN_AFFINE, IN_HIDDEN]),
}



# ---------------------------------------------------------------- planted bugs (the solution with one mistake)
LN_UNBIASED = planted(LN, "var = (x - mean).pow(2).mean(dim=dims, keepdim=True)", "var = x.var(dim=dims, keepdim=True)")
LN_ONE_PASS = planted(LN, "var = (x - mean).pow(2).mean(dim=dims, keepdim=True)",
                       "var = x.pow(2).mean(dim=dims, keepdim=True) - mean.pow(2)")
LN_FIXED_EPS = planted(LN, "torch.sqrt(var + eps)", "torch.sqrt(var + 1e-5)")
LN_NO_WEIGHT = planted(LN, "        y = y * weight\n", "        y = y\n")
LN2D_OVER_W = planted(planted(LN2D, "mean = x.mean(dim=1, keepdim=True)", "mean = x.mean(dim=-1, keepdim=True)"),
                       "var = (x - mean).pow(2).mean(dim=1, keepdim=True)", "var = (x - mean).pow(2).mean(dim=-1, keepdim=True)")
LN2D_UNBIASED = planted(LN2D, "var = (x - mean).pow(2).mean(dim=1, keepdim=True)", "var = x.var(dim=1, keepdim=True)")
LN2D_FIXED_EPS = planted(LN2D, "torch.sqrt(var + self.eps)", "torch.sqrt(var + 1e-6)")
GN_PER_CHANNEL = planted(GN, "grouped = x.reshape(n, num_groups, -1)", "grouped = x.reshape(n, c, -1)")
GN_UNBIASED = planted(GN, "var = (grouped - mean).pow(2).mean(dim=-1, keepdim=True)", "var = grouped.var(dim=-1, keepdim=True)")
GN_ONE_PASS = planted(GN, "var = (grouped - mean).pow(2).mean(dim=-1, keepdim=True)",
                       "var = grouped.pow(2).mean(dim=-1, keepdim=True) - mean.pow(2)")
GN_NO_ERROR = planted(GN, "        raise ValueError(", "        print(")
IN_UNBIASED = planted(IN, "var = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)", "var = x.var(dim=(2, 3), keepdim=True)")
IN_NO_BIAS = planted(IN, "        y = y + bias.view(1, -1, 1, 1)\n", "        y = y\n")
IN_FIXED_EPS = planted(IN, "torch.sqrt(var + eps)", "torch.sqrt(var + 1e-5)")

# ---------------------------------------------------------------- attacks: the library layer, called or subclassed
LN_BY_F = '''
def my_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return F.layer_norm(x, shape, weight, bias, eps)
'''
LN2D_SUBCLASS = '''
from timm.layers import LayerNorm2d as _Timm
class MyLayerNorm2d(_Timm):
    pass
'''
LN2D_BY_INSTANCE_NORM = '''
class MyLayerNorm2d(nn.Module):
    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        n, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(1, n * h * w, c)          # each pixel a "channel" of one sample
        y = F.instance_norm(pixels, eps=self.eps).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
'''
GN_BY_F = '''
def my_group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    if x.shape[1] % num_groups:
        raise ValueError("num_groups must divide C")
    return F.group_norm(x, num_groups, weight, bias, eps)
'''
IN_BY_BATCH_NORM = '''
def my_instance_norm(x, weight=None, bias=None, eps=1e-5):
    n, c, h, w = x.shape
    y = F.batch_norm(x.reshape(1, n * c, h, w), None, None, training=True, eps=eps).reshape(x.shape)
    if weight is not None:
        y = y * weight.view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y
'''
IN_BY_GROUP_NORM = '''
def my_instance_norm(x, weight=None, bias=None, eps=1e-5):
    return F.group_norm(x, x.shape[1], weight, bias, eps)
'''

PLANTED = [LN_UNBIASED, LN_ONE_PASS, LN_FIXED_EPS, LN_NO_WEIGHT, LN2D_OVER_W, LN2D_UNBIASED, LN2D_FIXED_EPS,
           GN_PER_CHANNEL, GN_UNBIASED, GN_ONE_PASS, GN_NO_ERROR, IN_UNBIASED, IN_NO_BIAS, IN_FIXED_EPS]


def _fails(answer: str, *checks: str, before: tuple[str, ...] = ()) -> str:
    """Run the setup, ``answer`` and the check cells (``before`` may fail: they define helpers); the last must fail."""
    return failure_message(run_cells(SETUP, answer), *checks, before=before)


@pytest.mark.parametrize("planted", PLANTED)
def test_each_planted_bug_changes_the_solution(planted):
    assert planted not in (LN, LN2D, GN, IN)


@pytest.mark.parametrize("exercise", sorted(CHECKS))
def test_the_solution_passes_every_check(exercise, capsys):
    answer, checks = CHECKS[exercise]
    run_cells(SETUP, answer, *checks)
    out = capsys.readouterr().out
    assert out.count(f"\u2714 {exercise}") == len(checks), out


@pytest.mark.parametrize("exercise", sorted(CHECKS))
def test_every_check_fails_on_the_student_version(exercise):
    answer, checks = CHECKS[exercise]
    stub = _code(starts=f"# EXERCISE {exercise}", student=True)
    assert "NotImplementedError" in stub and "### BEGIN SOLUTION" not in stub
    namespace = run_cells(SETUP, stub)
    for check in checks:
        with pytest.raises(NotImplementedError):
            run_cells(check, namespace=namespace)


@pytest.mark.parametrize("answer, checks, before, expected", [
    (LN_UNBIASED, [LN_CHECK], [], r"BIASED variance.*grad x"),
    (LN_NO_WEIGHT, [LN_AFFINE], [LN_CHECK], r"with weight and bias.*output"),
    (LN_ONE_PASS, [LN_HIDDEN], [LN_CHECK, LN_AFFINE], r"offset by 1000.*E\[x\*\*2\] - E\[x\]\*\*2"),
    (LN_FIXED_EPS, [LN_HIDDEN], [LN_CHECK, LN_AFFINE], r"eps=0\.1 differ: use the eps argument"),
    (LN2D_OVER_W, [LN2D_CHECK], [], r"centred over W.*nn\.LayerNorm\(C\).*dim=1"),
    (LN2D_UNBIASED, [LN2D_CHECK], [], r"BIASED variance per sample and pixel"),
    (LN2D_FIXED_EPS, [LN2D_HIDDEN], [LN2D_CHECK], r"eps=0\.1 \(use self\.eps\).*eps=0\.1: output"),
    (GN_PER_CHANNEL, [GN_CHECK], [], r"only G = C matches.*reshape\(N, G, -1\)"),
    (GN_UNBIASED, [GN_CHECK], [], r"BIASED variance.*G=6: output"),
    (GN_NO_ERROR, [GN_ERROR], [GN_CHECK], r"G=4, C=6: expected ValueError"),
    (GN_ONE_PASS, [GN_HIDDEN], [GN_CHECK], r"offset by 1000.*E\[x\*\*2\] - E\[x\]\*\*2"),
    (IN_UNBIASED, [IN_CHECK], [], r"BIASED variance per sample and channel"),
    (IN_NO_BIAS, [IN_AFFINE], [IN_CHECK], r"with weight and bias.*affine=True: output"),
    (IN_FIXED_EPS, [IN_HIDDEN], [IN_CHECK, IN_AFFINE], r"eps=0\.1 \(use the eps argument\).*eps=0\.1: output"),
], ids=["ln-unbiased", "ln-no-weight", "ln-one-pass", "ln-fixed-eps", "ln2d-over-w", "ln2d-unbiased",
        "ln2d-fixed-eps", "gn-per-channel", "gn-unbiased", "gn-no-error", "gn-one-pass", "in-unbiased", "in-no-bias",
        "in-fixed-eps"])
def test_each_planted_bug_fails_with_a_message_that_names_it(answer, checks, before, expected):
    import re
    message = _fails(answer, *checks, before=tuple(before))
    assert re.search(expected, message, re.S), message


@pytest.mark.parametrize("answer, check, expected", [
    (LN_BY_F, LN_CHECK, "calls torch.nn.functional.layer_norm"),
    (LN2D_SUBCLASS, LN2D_CHECK, "MyLayerNorm2d is a subclass of torch.nn"),
    (LN2D_BY_INSTANCE_NORM, LN2D_CHECK, "calls torch.nn.functional.instance_norm"),
    (GN_BY_F, GN_CHECK, "calls torch.nn.functional.group_norm"),
    (IN_BY_BATCH_NORM, IN_CHECK, "calls torch.nn.functional.batch_norm"),
    (IN_BY_GROUP_NORM, IN_CHECK, "calls torch.nn.functional.group_norm"),
], ids=["ln-F.layer_norm", "ln2d-subclass-timm", "ln2d-F.instance_norm", "gn-F.group_norm", "in-F.batch_norm",
        "in-F.group_norm"])
def test_an_answer_that_delegates_to_the_library_fails(answer, check, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_cells(SETUP, answer, check)


def test_the_library_answers_are_right_so_only_by_hand_rejects_them():
    """The attacks compute the right numbers: without cu.by_hand they would pass."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    namespace = run_cells("import torch\nimport torch.nn.functional as F\nfrom torch import nn\n", IN_BY_BATCH_NORM,
                          LN2D_BY_INSTANCE_NORM)
    x = torch.randn(3, 4, 5, 6) * 2 + 1
    torch.testing.assert_close(namespace["my_instance_norm"](x), nn.InstanceNorm2d(4)(x))
    torch.testing.assert_close(namespace["MyLayerNorm2d"](4)(x),
                               F.layer_norm(x.permute(0, 2, 3, 1), (4,), eps=1e-6).permute(0, 3, 1, 2), atol=1e-5, rtol=1e-5)
