"""The check cells of notebook 10 (the fine-tuning lab) catch the mistakes they are meant to catch.

As in tests/test_exercises_08.py, each test runs the notebook's own cells in a fresh namespace: the
setup cell, an answer (the solution, the student stub, or the solution with one planted mistake) and the
exercise's check cells, visible and hidden. No check here needs a training run. The solution passes
every check; the stub and each planted bug fail with a message that names the mistake.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, planted, quick_namespace, run_cells, run_from

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "10_finetuning_lab.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")

LN_EXERCISE = _code(starts="# EXERCISE ex10-image-layer-norm")
LN_CHECKS = [_code(starts="# CHECK ex10-image-layer-norm\n"),
             _code(starts="# CHECK ex10-image-layer-norm gradients"),
             _code(starts="# HIDDEN CHECK ex10-image-layer-norm eps")]

FX_EXERCISE = _code(starts="# EXERCISE ex10-run-effects")
FX_CHECKS = [_code(starts="# CHECK ex10-run-effects\n"),
             _code(starts="# CHECK ex10-run-effects shared-log"),
             _code(starts="# HIDDEN CHECK ex10-run-effects baseline-anywhere")]



# planted bugs in ImageLayerNorm: each is the solution with one typical mistake
LN_VAR = "var = (x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True)"
LN_UNBIASED = planted(LN_EXERCISE, LN_VAR, "var = x.var(dim=(1, 2, 3), keepdim=True)")
LN_PER_CHANNEL = planted(planted(LN_EXERCISE, "mean = x.mean(dim=(1, 2, 3), keepdim=True)",
                                   "mean = x.mean(dim=(2, 3), keepdim=True)"),
                          LN_VAR, "var = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)")
LN_DETACHED = planted(LN_EXERCISE, "mean = x.mean(dim=(1, 2, 3), keepdim=True)",
                       "mean = x.mean(dim=(1, 2, 3), keepdim=True).detach()")
LN_FIXED_EPS = planted(LN_EXERCISE, "torch.sqrt(var + self.eps)", "torch.sqrt(var + 1e-5)")
LN_NO_EPS = planted(LN_EXERCISE, "torch.sqrt(var + self.eps)", "torch.sqrt(var)")
LN_PER_PIXEL = planted(LN_EXERCISE, "nn.Parameter(torch.ones(num_channels))",
                        "nn.Parameter(torch.ones(num_channels, 1, 1))")
# attacks: the library layer instead of the computation the exercise asks for
LN_SUBCLASS = '''class ImageLayerNorm(nn.GroupNorm):
    def __init__(self, num_channels, eps=1e-5):
        super().__init__(1, num_channels, eps=eps)
'''
LN_DELEGATES = planted(LN_EXERCISE, "y = (x - mean) / torch.sqrt(var + self.eps)",
                        "y = F.layer_norm(x, x.shape[1:], eps=self.eps)")

# planted bugs in effects_vs_baseline
FX_ALL_ROWS = planted(FX_EXERCISE, 'ours = [row for row in rows if row.get("run_id") in run_ids]', "ours = list(rows)")
FX_FIRST_BASELINE = planted(FX_EXERCISE, 'reference = [row for row in ours if row["label"] == baseline]',
                             'reference = [row for row in rows if row["label"] == baseline][:1]')
FX_FRACTION = planted(FX_EXERCISE, '100 * (row["val_acc"] - base_acc)', '(row["val_acc"] - base_acc)')
FX_FLIPPED = planted(FX_EXERCISE, '100 * (row["val_acc"] - base_acc)', '100 * (base_acc - row["val_acc"])')
FX_FIRST_ROW = planted(FX_EXERCISE, "reference = [row for row in ours if row[\"label\"] == baseline]",
                        "reference = ours[:1]")
FX_NO_RAISE = planted(FX_EXERCISE, "    if len(reference) != 1:\n        raise ValueError(", "    if False:\n        print(")


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup cell, in quick mode (shared: the cells do not change it)."""
    return quick_namespace(SETUP)



@pytest.mark.parametrize("planted", [LN_UNBIASED, LN_PER_CHANNEL, LN_DETACHED, LN_FIXED_EPS, LN_NO_EPS, LN_PER_PIXEL,
                                     LN_DELEGATES, FX_ALL_ROWS, FX_FIRST_BASELINE, FX_FRACTION, FX_FLIPPED,
                                     FX_FIRST_ROW, FX_NO_RAISE])
def test_each_planted_bug_changes_the_solution(planted):
    assert planted not in (LN_EXERCISE, FX_EXERCISE)


# ---------------------------------------------------------------- ex10-image-layer-norm

def test_image_layer_norm_solution_passes_every_check(base, capsys):
    run_from(base, LN_EXERCISE, *LN_CHECKS)
    out = capsys.readouterr().out
    for part in ("ex10-image-layer-norm: ", "ex10-image-layer-norm (gradients)", "ex10-image-layer-norm (eps)"):
        assert part in out, out


def test_image_layer_norm_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex10-image-layer-norm", student=True), LN_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (LN_UNBIASED, LN_CHECKS[:1], r"BIASED variance"),
    (LN_PER_CHANNEL, LN_CHECKS[:1], r"per channel \(dims \(2, 3\), instance norm\)"),
    (LN_PER_PIXEL, LN_CHECKS[:1], r"shape \(3,\)"),
    (LN_DETACHED, LN_CHECKS[:2], r"grad x .*detached"),
    (LN_FIXED_EPS, LN_CHECKS, r"eps=0.1.*self\.eps"),
    (LN_NO_EPS, LN_CHECKS, r"constant image: contains NaN"),
], ids=["unbiased", "per-channel", "per-pixel-weight", "detached-mean", "fixed-eps", "no-eps"])
def test_image_layer_norm_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


def test_only_the_gradient_check_catches_a_detached_mean(base):
    """Partial credit: a detached mean gives the right outputs, so the main check passes and the gradients part fails."""
    namespace = run_from(base, LN_DETACHED, LN_CHECKS[0])
    with pytest.raises(CheckFailed, match="gradients of ImageLayerNorm"):
        run_cells(LN_CHECKS[1], namespace=namespace)


@pytest.mark.parametrize("attack, expected", [
    (LN_SUBCLASS, r"subclass of torch\.nn\..*GroupNorm"),
    (LN_DELEGATES, r"calls torch\.nn\.functional\.layer_norm"),
], ids=["subclass-GroupNorm", "calls-F.layer_norm"])
def test_image_layer_norm_refuses_the_library_layer(base, attack, expected):
    for check in LN_CHECKS:
        with pytest.raises(CheckFailed, match=expected):
            run_from(base, attack, LN_CHECKS[0] if check is not LN_CHECKS[0] else "", check)


# ---------------------------------------------------------------- ex10-run-effects

def test_run_effects_solution_passes_every_check(base, capsys):
    run_from(base, FX_EXERCISE, *FX_CHECKS)
    out = capsys.readouterr().out
    for part in ("ex10-run-effects: ", "ex10-run-effects (shared-log)", "ex10-run-effects (baseline-anywhere)"):
        assert part in out, out


def test_run_effects_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex10-run-effects", student=True), FX_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (FX_FRACTION, FX_CHECKS[:1], r"as a fraction; multiply by 100"),
    (FX_FLIPPED, FX_CHECKS[:1], r"sign is flipped"),
    (FX_ALL_ROWS, FX_CHECKS[:2], r"run_id is in run_ids"),
    (FX_FIRST_BASELINE, FX_CHECKS[:2], r"earlier session's 'baseline'"),
    (FX_FIRST_ROW, FX_CHECKS, r"row labelled `baseline`"),
    (FX_NO_RAISE, FX_CHECKS, r"expected ValueError, got IndexError"),
], ids=["fraction", "flipped", "all-rows", "first-baseline-in-log", "first-row-is-baseline", "no-ValueError"])
def test_run_effects_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


def test_run_effects_main_check_passes_a_session_only_answer(base):
    """Partial credit: ignoring run_ids is right for a log of one session, wrong for a shared one."""
    namespace = run_from(base, FX_ALL_ROWS, FX_CHECKS[0])
    with pytest.raises(CheckFailed):
        run_cells(FX_CHECKS[1], namespace=namespace)
