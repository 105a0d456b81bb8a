"""The check cells of the transformers notebook catch the mistakes they are meant to catch.

Each test runs the notebook's own cells in a fresh namespace: the setup cell, an answer (the solution,
the student stub, or the solution with one planted mistake) and the exercise's check cells, visible and
hidden. The solution passes every check; the stub and each planted bug fail with a message that names
the mistake, and a bug that only the hidden part can see passes the visible one (partial credit).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, planted, quick_namespace, run_cells, run_from

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "05_normalization_in_transformers.ipynb"
EX = "ex05"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")
PATCHES = _code(starts="def patches(")  # the tokens the later cells use

LN_EXERCISE = _code(starts=f"# EXERCISE {EX}-token-layer-norm")
LN_CHECKS = [_code(starts=f"# CHECK {EX}-token-layer-norm (2 points)"),
             _code(starts=f"# HIDDEN CHECK {EX}-token-layer-norm constant-and-offset")]
RMS_EXERCISE = _code(starts=f"# EXERCISE {EX}-rms-norm")
RMS_CHECKS = [_code(starts=f"# CHECK {EX}-rms-norm (2 points)"), _code(starts=f"# HIDDEN CHECK {EX}-rms-norm eps-default")]
POST_LN = _code(starts="class PostLNBlock(")
BLOCK_EXERCISE = _code(starts=f"# EXERCISE {EX}-pre-ln-block")
BLOCK_CHECKS = [_code(starts=f"# CHECK {EX}-pre-ln-block (2 points)"),
                _code(starts=f"# HIDDEN CHECK {EX}-pre-ln-block gradients")]

# planted bugs in token_layer_norm
VAR_LINE = "var = (x - mean).pow(2).mean(dim=-1, keepdim=True)           # biased, centred first"
LN_UNBIASED = planted(LN_EXERCISE, VAR_LINE, "var = x.var(dim=-1, keepdim=True)")
LN_EPS_OUTSIDE = planted(LN_EXERCISE, "y = (x - mean) / torch.sqrt(var + eps)", "y = (x - mean) / (torch.sqrt(var) + eps)")
LN_OVER_TOKENS = planted(planted(LN_EXERCISE, "mean = x.mean(dim=-1, keepdim=True)", "mean = x.mean(dim=(-2, -1), keepdim=True)"),
                         VAR_LINE, "var = (x - mean).pow(2).mean(dim=(-2, -1), keepdim=True)")
LN_NEEDS_AFFINE = planted(planted(LN_EXERCISE, "    if weight is not None:\n        y = y * weight", "    y = y * weight"),
                          "    if bias is not None:\n        y = y + bias", "    y = y + bias")
LN_DELEGATES = '''def token_layer_norm(x, weight, bias, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
'''

# planted bugs in rms_norm
RMS_LINE = "y = xc * torch.rsqrt(xc.pow(2).mean(dim=-1, keepdim=True) + eps)"
RMS_SUBTRACTS_MEAN = planted(RMS_EXERCISE, RMS_LINE, "xc = xc - xc.mean(dim=-1, keepdim=True)\n    " + RMS_LINE)
RMS_SUM = planted(RMS_EXERCISE, RMS_LINE, "y = xc * torch.rsqrt(xc.pow(2).sum(dim=-1, keepdim=True) + eps)")
RMS_FIXED_EPS = planted(RMS_EXERCISE, "eps = torch.finfo(compute).eps", "eps = 1e-5")
RMS_INPUT_DTYPE_EPS = planted(RMS_EXERCISE, "eps = torch.finfo(compute).eps", "eps = torch.finfo(x.dtype).eps")
RMS_NO_CAST_BACK = planted(RMS_EXERCISE, "return y.to(x.dtype)", "return y")
RMS_DELEGATES = '''def rms_norm(x, weight=None, eps=None):
    return F.rms_norm(x, x.shape[-1:], weight, eps)
'''

# planted bugs in PreLNBlock.forward
BLOCK_BODY = "x = x + self.attend(self.norm1(x))\n        return x + self.mlp(self.norm2(x))"
BLOCK_POST = planted(BLOCK_EXERCISE, BLOCK_BODY, "x = self.norm1(x + self.attend(x))\n        return self.norm2(x + self.mlp(x))")
BLOCK_NO_RESIDUAL = planted(BLOCK_EXERCISE, BLOCK_BODY, "x = self.attend(self.norm1(x))\n        return self.mlp(self.norm2(x))")
BLOCK_NORMALIZED_STREAM = planted(BLOCK_EXERCISE, BLOCK_BODY,
                                  "x = self.norm1(x)\n        x = x + self.attend(x)\n        return x + self.mlp(self.norm2(x))")
BLOCK_DETACHED = planted(BLOCK_EXERCISE, BLOCK_BODY,
                         "x = x + self.attend(self.norm1(x)).detach()\n        return x + self.mlp(self.norm2(x))")


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup cells, in quick mode (shared: the cells do not change it)."""
    return quick_namespace(SETUP, PATCHES, POST_LN)


@pytest.mark.parametrize("bug", [LN_UNBIASED, LN_EPS_OUTSIDE, LN_OVER_TOKENS, LN_NEEDS_AFFINE, RMS_SUBTRACTS_MEAN, RMS_SUM,
                                 RMS_FIXED_EPS, RMS_INPUT_DTYPE_EPS, RMS_NO_CAST_BACK, BLOCK_POST, BLOCK_NO_RESIDUAL,
                                 BLOCK_NORMALIZED_STREAM, BLOCK_DETACHED])
def test_each_planted_bug_changes_the_solution(bug):
    assert bug not in (LN_EXERCISE, RMS_EXERCISE, BLOCK_EXERCISE)


@pytest.mark.parametrize("exercise, checks, name", [
    (LN_EXERCISE, LN_CHECKS, "token-layer-norm"), (RMS_EXERCISE, RMS_CHECKS, "rms-norm"),
    (BLOCK_EXERCISE, BLOCK_CHECKS, "pre-ln-block")], ids=["token-layer-norm", "rms-norm", "pre-ln-block"])
def test_solution_passes_every_check_and_the_stub_fails(base, capsys, exercise, checks, name):
    run_from(base, exercise, *checks)
    out = capsys.readouterr().out
    assert out.count(f"{EX}-{name}") == 2 and out.count("all checks passed") == 2, out
    stub = _code(starts=f"# EXERCISE {EX}-{name}", student=True)
    with pytest.raises(NotImplementedError):
        run_from(base, stub, checks[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (LN_UNBIASED, LN_CHECKS[:1], r"divides by D - 1"),
    (LN_EPS_OUTSIDE, LN_CHECKS[:1], r"eps goes inside the square root"),
    (LN_OVER_TOKENS, LN_CHECKS[:1], r"over the last dimension only"),
    (LN_NEEDS_AFFINE, LN_CHECKS[:1], r"weight=None and bias=None"),
    (LN_DELEGATES, LN_CHECKS[:1], r"calls torch\.nn\.functional\.layer_norm"),
    (RMS_SUBTRACTS_MEAN, RMS_CHECKS[:1], r"that is layer norm"),
    (RMS_SUM, RMS_CHECKS[:1], r"the mean of the squares, not their sum"),
    (RMS_FIXED_EPS, RMS_CHECKS[:1], r"eps=None is not 1e-5"),
    (RMS_INPUT_DTYPE_EPS, RMS_CHECKS[:1], r"bfloat16.*scale 0\.0001.*not bfloat16's"),
    (RMS_NO_CAST_BACK, RMS_CHECKS[:1], r"the output should be a tensor of the input's dtype torch\.bfloat16"),
    (RMS_DELEGATES, RMS_CHECKS[:1], r"calls torch\.nn\.functional\.rms_norm"),
    (BLOCK_POST, BLOCK_CHECKS[:1], r"that is the post-LN order"),
    (BLOCK_NO_RESIDUAL, BLOCK_CHECKS[:1], r"keep the residual connections"),
    (BLOCK_NORMALIZED_STREAM, BLOCK_CHECKS[:1], r"residual stream is left unnormalized"),
    (BLOCK_DETACHED, BLOCK_CHECKS, r"gradient of the input"),
], ids=["ln-unbiased", "ln-eps-outside", "ln-over-tokens", "ln-needs-affine", "ln-delegates", "rms-subtracts-mean",
        "rms-sum", "rms-fixed-eps", "rms-bfloat16-eps", "rms-no-cast-back", "rms-delegates", "block-post-ln",
        "block-no-residual", "block-normalized-stream", "block-detached"])
def test_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


@pytest.mark.parametrize("answer, checks", [(BLOCK_DETACHED, BLOCK_CHECKS)], ids=["block-detached"])
def test_bugs_only_the_hidden_part_sees_pass_the_visible_check(base, answer, checks):
    run_from(base, answer, checks[0])
