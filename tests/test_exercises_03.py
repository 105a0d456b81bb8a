"""The check cells of notebook 03 (why normalization helps) catch the mistakes they are meant to catch.

Each test runs the notebook's own cells in a fresh namespace: the setup cells (imports, data, the plain
network and the training loop), an answer (the solution, the student stub, or the solution with one planted
mistake) and the exercise's check cells, visible and hidden. The solution passes every check; the stub and
each planted bug fail with a message that names the mistake.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, planted, quick_namespace, run_from

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_why_normalization_helps.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")
NETWORK = _code(starts="train_set = cu.load_dataset")
TRAINING = _code(starts="DIVERGED = ")

STATS_EXERCISE = _code(starts="# EXERCISE ex03-activation-stats")
STATS_CHECKS = [_code(starts="# CHECK ex03-activation-stats (2 points)"), _code(starts="# HIDDEN CHECK ex03-activation-stats reused")]
ANGLES_EXERCISE = _code(starts="# EXERCISE ex03-filter-angles")
ANGLES_CHECKS = [_code(starts="# CHECK ex03-filter-angles (2 points)"), _code(starts="# HIDDEN CHECK ex03-filter-angles edge")]
GAP_EXERCISE = _code(starts="# EXERCISE ex03-train-eval-gap")
GAP_CHECKS = [_code(starts="# CHECK ex03-train-eval-gap (2 points)"), _code(starts="# HIDDEN CHECK ex03-train-eval-gap uneven")]
NOISY_EXERCISE = _code(starts="# EXERCISE ex03-noisy-bn")
NOISY_CHECKS = [_code(starts="# CHECK ex03-noisy-bn (2 points)"), _code(starts="# HIDDEN CHECK ex03-noisy-bn eval")]

# planted bugs in activation_stats
DEAD_LINE = "dead = (output == 0).all(dim=0).float().mean()  # all(dim=0): zero for every image"
STATS_ZERO_SHARE = planted(STATS_EXERCISE, DEAD_LINE, "dead = (output == 0).float().mean()")
STATS_PER_CHANNEL = planted(STATS_EXERCISE, DEAD_LINE,
                            "dead = ((output == 0).all(dim=0).flatten(1).all(dim=1) if output.dim() == 4 "
                            "else (output == 0).all(dim=0)).float().mean()")
STATS_CONV_HOOKS = planted(STATS_EXERCISE, "if isinstance(m, nn.ReLU)]", "if isinstance(m, nn.Conv2d)]")
STATS_HOOKS_LEFT = planted(STATS_EXERCISE, "hook.remove()", "pass")
STATS_NO_FINALLY = planted(STATS_EXERCISE, '''    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()''', '''    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()''')

# planted bugs in filter_angles
ANGLE_LINE = "return 2 * torch.atan2((u - v).norm(dim=1), (u + v).norm(dim=1))"
ANGLES_ACOS = planted(ANGLES_EXERCISE, ANGLE_LINE, "return torch.acos((u * v).sum(dim=1).clamp(-1, 1))")
ANGLES_ACOS_NO_CLAMP = planted(ANGLES_EXERCISE, ANGLE_LINE, "return torch.acos((u * v).sum(dim=1))")
ANGLES_DEGREES = planted(ANGLES_EXERCISE, ANGLE_LINE, "return torch.rad2deg(2 * torch.atan2((u - v).norm(dim=1), (u + v).norm(dim=1)))")
ANGLES_NOT_UNIT = planted(ANGLES_EXERCISE, ANGLE_LINE,
                          "return 2 * torch.atan2((before - after).flatten(1).norm(dim=1), (before + after).flatten(1).norm(dim=1))")
ANGLES_WHOLE_TENSOR = planted(ANGLES_EXERCISE, ANGLE_LINE,
                              "u, v = before.flatten() / before.norm(), after.flatten() / after.norm()\n"
                              "    return 2 * torch.atan2((u - v).norm(), (u + v).norm())")
ANGLES_FLOAT32 = planted(ANGLES_EXERCISE, ANGLE_LINE,
                         "return 2 * torch.atan2((u - v).norm(dim=1), (u + v).norm(dim=1)).float()")

# planted bugs in train_eval_gap
GAP_TRAIN_LINE = "batch_stats = accuracy_in(copy.deepcopy(model).train())  # a copy: train mode writes its running statistics"
GAP_EVAL_LINE = "running_stats = accuracy_in(copy.deepcopy(model).eval())"
GAP_NO_COPY = planted(GAP_EXERCISE, GAP_TRAIN_LINE, "batch_stats = accuracy_in(model.train())")
GAP_EVAL_IN_PLACE = planted(GAP_EXERCISE, GAP_EVAL_LINE, "running_stats = accuracy_in(model.eval())")
GAP_SWAPPED = planted(GAP_EXERCISE, "return batch_stats, running_stats", "return running_stats, batch_stats")
GAP_ONE_BATCH = planted(GAP_EXERCISE, "zip(images.split(batch_size), labels.split(batch_size))",
                        "zip(images.split(len(images)), labels.split(len(images)))")
GAP_RESTORED_BUFFERS_ONLY = planted(GAP_EXERCISE, GAP_TRAIN_LINE,
                                    "saved = copy.deepcopy(model.state_dict())\n"
                                    "    batch_stats = accuracy_in(model.train())\n"
                                    "    model.load_state_dict(saved)")

# planted bugs in NoisyBatchNorm2d
NOISY_EVAL = planted(NOISY_EXERCISE, "        if not self.training:\n            return y\n", "")
NOISY_PER_VALUE = planted(NOISY_EXERCISE, "return y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)",
                          "return y * (1 + torch.rand_like(y) * self.noise) + (2 * torch.rand_like(y) - 1) * self.noise")
NOISY_ONE_NUMBER = planted(NOISY_EXERCISE, "c = x.shape[1]", "c = 1")
NOISY_POSITIVE_SHIFT = planted(NOISY_EXERCISE, "shift = (2 * torch.rand(c, device=x.device, dtype=x.dtype) - 1) * self.noise",
                               "shift = torch.rand(c, device=x.device, dtype=x.dtype) * self.noise")
NOISY_SCALE_FROM_ZERO = planted(NOISY_EXERCISE, "scale = 1 + torch.rand(c, device=x.device, dtype=x.dtype) * self.noise",
                                "scale = torch.rand(c, device=x.device, dtype=x.dtype) * self.noise")
NOISY_FIXED = planted(NOISY_EXERCISE, "c = x.shape[1]", "c = x.shape[1]\n        torch.manual_seed(0)")
NOISY_BN_TWICE = planted(NOISY_EXERCISE, "y = self.bn(x)", "self.bn(x)\n        y = self.bn(x)")

ALL_BUGS = [STATS_ZERO_SHARE, STATS_PER_CHANNEL, STATS_CONV_HOOKS, STATS_HOOKS_LEFT, STATS_NO_FINALLY,
            ANGLES_ACOS, ANGLES_ACOS_NO_CLAMP, ANGLES_DEGREES, ANGLES_NOT_UNIT, ANGLES_WHOLE_TENSOR, ANGLES_FLOAT32,
            GAP_NO_COPY, GAP_EVAL_IN_PLACE, GAP_SWAPPED, GAP_ONE_BATCH, GAP_RESTORED_BUFFERS_ONLY,
            NOISY_EVAL, NOISY_PER_VALUE, NOISY_ONE_NUMBER, NOISY_POSITIVE_SHIFT, NOISY_SCALE_FROM_ZERO, NOISY_FIXED,
            NOISY_BN_TWICE]


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup cells, in quick mode (shared: the cells do not change it)."""
    return quick_namespace(SETUP, NETWORK, TRAINING)


@pytest.mark.parametrize("bug", ALL_BUGS)
def test_each_planted_bug_changes_the_solution(bug):
    assert bug not in (STATS_EXERCISE, ANGLES_EXERCISE, GAP_EXERCISE, NOISY_EXERCISE)


# ---------------------------------------------------------------- ex03-activation-stats

def test_stats_solution_passes_every_check(base, capsys):
    run_from(base, STATS_EXERCISE, *STATS_CHECKS)
    out = capsys.readouterr().out
    assert "ex03-activation-stats: " in out and "ex03-activation-stats (reused)" in out, out


def test_stats_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex03-activation-stats", student=True), STATS_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (STATS_ZERO_SHARE, STATS_CHECKS[:1], r"zero for EVERY image"),
    (STATS_PER_CHANNEL, STATS_CHECKS[:1], r"one position \(c, h, w\).*not a whole channel"),
    (STATS_CONV_HOOKS, STATS_CHECKS[:1], r"Hook every nn\.ReLU"),
    (STATS_HOOKS_LEFT, STATS_CHECKS[:1], r"hooks are still installed"),
    (STATS_NO_FINALLY, STATS_CHECKS, r"finally"),
], ids=["zero-share", "per-channel", "conv-hooks", "hooks-left", "no-finally"])
def test_stats_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


def test_stats_without_finally_passes_the_visible_check(base):
    """Partial credit: the statistics are right; only a model that raises leaves the hooks behind."""
    run_from(base, STATS_NO_FINALLY, STATS_CHECKS[0])


# ---------------------------------------------------------------- ex03-filter-angles

def test_angles_solution_passes_every_check(base, capsys):
    run_from(base, ANGLES_EXERCISE, *ANGLES_CHECKS)
    out = capsys.readouterr().out
    assert "ex03-filter-angles: " in out and "ex03-filter-angles (edge)" in out, out


def test_angles_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex03-filter-angles", student=True), ANGLES_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (ANGLES_ACOS, ANGLES_CHECKS[:1], r"acos of the cosine loses small angles"),
    (ANGLES_ACOS_NO_CLAMP, ANGLES_CHECKS[:1], r"acos"),
    (ANGLES_DEGREES, ANGLES_CHECKS[:1], r"radians, not degrees"),
    (ANGLES_NOT_UNIT, ANGLES_CHECKS[:1], r"divide each filter by its norm first"),
    (ANGLES_WHOLE_TENSOR, ANGLES_CHECKS[:1], r"one angle per output channel"),
    (ANGLES_FLOAT32, ANGLES_CHECKS, r"keep the input's dtype"),
], ids=["acos", "acos-no-clamp", "degrees", "not-unit", "whole-tensor", "float32-only"])
def test_angles_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


# ---------------------------------------------------------------- ex03-train-eval-gap

def test_gap_solution_passes_every_check(base, capsys):
    run_from(base, GAP_EXERCISE, *GAP_CHECKS)
    out = capsys.readouterr().out
    assert "ex03-train-eval-gap: " in out and "ex03-train-eval-gap (uneven)" in out, out


def test_gap_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex03-train-eval-gap", student=True), GAP_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (GAP_NO_COPY, GAP_CHECKS[:1], r"changed \[.*running_mean.*\]"),
    (GAP_EVAL_IN_PLACE, GAP_CHECKS[:1], r"was in train mode and is now in eval mode"),
    (GAP_SWAPPED, GAP_CHECKS[:1], r"swapped"),
    (GAP_ONE_BATCH, GAP_CHECKS[:1], r"all images as one batch"),
    (GAP_RESTORED_BUFFERS_ONLY, GAP_CHECKS[:1], r"is now in train mode"),
], ids=["no-copy", "eval-in-place", "swapped", "one-batch", "mode-not-restored"])
def test_gap_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


# ---------------------------------------------------------------- ex03-noisy-bn

def test_noisy_solution_passes_every_check(base, capsys):
    run_from(base, NOISY_EXERCISE, *NOISY_CHECKS)
    out = capsys.readouterr().out
    assert "ex03-noisy-bn: " in out and "ex03-noisy-bn (eval)" in out, out


def test_noisy_student_version_fails(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex03-noisy-bn", student=True), NOISY_CHECKS[0])


@pytest.mark.parametrize("answer, checks, expected", [
    (NOISY_EVAL, NOISY_CHECKS, r"in eval mode return self\.bn\(x\) unchanged"),
    (NOISY_PER_VALUE, NOISY_CHECKS[:1], r"one s and one m per channel"),
    (NOISY_ONE_NUMBER, NOISY_CHECKS[:1], r"every channel got the same shift and scale"),
    (NOISY_POSITIVE_SHIFT, NOISY_CHECKS[:1], r"same sign"),
    (NOISY_SCALE_FROM_ZERO, NOISY_CHECKS[:1], r"scales .* not all in \[1, 1 \+ noise\]"),
    (NOISY_FIXED, NOISY_CHECKS[:1], r"two calls gave the same output"),
    (NOISY_BN_TWICE, NOISY_CHECKS, r"call self\.bn\(x\) once per forward pass"),
], ids=["noise-in-eval", "per-value", "one-number", "positive-shift", "scale-from-zero", "fixed-noise", "bn-twice"])
def test_noisy_checks_name_the_planted_bug(base, answer, checks, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, *checks)


def test_noisy_in_eval_mode_passes_the_visible_check(base):
    """Partial credit: the training-mode noise is right; only eval mode is wrong, in the hidden part."""
    run_from(base, NOISY_EVAL, NOISY_CHECKS[0])
