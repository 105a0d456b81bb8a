"""The check cells of notebook 08 catch the mistakes they are meant to catch, inside the network.

As in the other exercise tests, each test runs the notebook's own cells in a fresh namespace:
the setup cell, the cell that loads the pretrained model, the cells of helpers and reference curves
the checks use, an answer and the check cell. The reference solution must pass every check cell (the hidden
ones included); the stub and each planted bug must fail with a message that names the mistake; and an
answer that delegates to the library (a subclass of nn.BatchNorm2d / nn.GroupNorm, or a call of
F.batch_norm, F.group_norm, F.layer_norm) fails with cu.by_hand's message.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, quick_namespace, run_cells, run_from

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "08_norm_in_the_network.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")
MODEL = _code(contains="cu.load_pretrained_resnet18(\"course\")")
HELPERS = _code(contains="def loss_curve(")
BN_CURVE = _code(starts="bn_curve = ")
GN_CURVES = _code(starts="gn_curves = {")
BN_EXERCISE = _code(starts="# EXERCISE ex08-bn-network")
BN_CHECK_LAYER = _code(starts="# CHECK ex08-bn-network one-layer")
BN_CHECK_LOGITS = _code(starts="# CHECK ex08-bn-network logits")
BN_CHECK = _code(starts="# CHECK ex08-bn-network\n")  # the main check: twenty training steps
BN_HIDDEN = _code(starts="# HIDDEN CHECK ex08-bn-network momentum-none")
BN_CHECKS = (BN_CHECK_LAYER, BN_CHECK_LOGITS, BN_CHECK, BN_HIDDEN)
GN_EXERCISE = _code(starts="# EXERCISE ex08-gn-network")
GN_CHECK = _code(starts="# CHECK ex08-gn-network\n")  # the main check: one layer
GN_CHECK_TRAINING = _code(starts="# CHECK ex08-gn-network training")
GN_HIDDEN = _code(starts="# HIDDEN CHECK ex08-gn-network other-shapes")
GN_CHECKS = (GN_CHECK, GN_CHECK_TRAINING, GN_HIDDEN)

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
GN_FIXED_EPS = GN_EXERCISE.replace("torch.sqrt(var + self.eps)", "torch.sqrt(var + 1e-5)")
BN_MOMENTUM_ALWAYS = BN_EXERCISE.replace(
    "factor = 1.0 / int(self.num_batches_tracked) if self.momentum is None else self.momentum",
    "factor = 0.1 if self.momentum is None else self.momentum")
GN_ONE_PASS = GN_EXERCISE.replace("var = (groups - mean).pow(2).mean(dim=2, keepdim=True)",
                                  "var = groups.pow(2).mean(dim=2, keepdim=True) - mean.pow(2)")


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup and model cells, in quick mode (shared: the cells do not change it)."""
    return quick_namespace(SETUP, MODEL)


@pytest.fixture(scope="module")
def bn_base(base) -> dict:
    """``base`` after the helpers and the torch.nn BatchNorm2d loss curve (bn_curve)."""
    return run_cells(HELPERS, BN_CURVE, namespace=dict(base))


@pytest.fixture(scope="module")
def gn_base(base) -> dict:
    """``base`` after the helpers and the nn.GroupNorm loss curves (gn_curves)."""
    return run_cells(HELPERS, GN_CURVES, namespace=dict(base))



# delegation attacks: each answer gets the right numbers by calling the library code it is asked to write
BN_SUBCLASS = "# EXERCISE ex08-bn-network\nclass NetBatchNorm2d(nn.BatchNorm2d):\n    pass\n"
BN_F_BATCH_NORM = BN_EXERCISE.replace(BN_EXERCISE[BN_EXERCISE.index("        if self.training:"):BN_EXERCISE.index("        ### END")],
    "        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,\n"
    "                            0.0 if self.momentum is None else self.momentum, self.eps)\n")
GN_SUBCLASS = "# EXERCISE ex08-gn-network\nclass NetGroupNorm(nn.GroupNorm):\n    pass\n"
GN_BODY = GN_EXERCISE[GN_EXERCISE.index("        groups = x.reshape"):GN_EXERCISE.index("        ### END")]
GN_AFFINE = "        return x_hat * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)\n"
GN_F_GROUP_NORM = GN_EXERCISE.replace(GN_BODY, "        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)\n")
GN_F_LAYER_NORM = GN_EXERCISE.replace(GN_BODY, (
    "        groups = x.reshape(x.shape[0], self.num_groups, -1)\n"
    "        x_hat = F.layer_norm(groups, groups.shape[-1:], eps=self.eps).reshape(x.shape)\n") + GN_AFFINE)
GN_F_BATCH_NORM = GN_EXERCISE.replace(GN_BODY, (
    "        groups = x.reshape(1, x.shape[0] * self.num_groups, -1)\n"
    "        x_hat = F.batch_norm(groups, None, None, training=True, eps=self.eps).reshape(x.shape)\n") + GN_AFFINE)


@pytest.mark.parametrize("planted", [BN_UPDATES_IN_EVAL, BN_UNBIASED, BN_MOMENTUM_ALWAYS, BN_F_BATCH_NORM, GN_PER_CHANNEL,
                                     GN_UNBIASED, GN_ONE_PASS, GN_FIXED_EPS, GN_F_GROUP_NORM, GN_F_LAYER_NORM,
                                     GN_F_BATCH_NORM])
def test_each_planted_bug_changes_the_solution(planted):
    assert planted not in (BN_EXERCISE, GN_EXERCISE)


def test_bn_checks_pass_the_solution(bn_base, capsys):
    run_from(bn_base, BN_EXERCISE, *BN_CHECKS)
    out = capsys.readouterr().out
    for part in ("", " (one-layer)", " (logits)", " (momentum-none)"):
        assert f"ex08-bn-network{part}: all checks passed" in out


@pytest.mark.parametrize("answer, expected", [
    (BN_UPDATES_IN_EVAL, "changed in eval mode"),
    (BN_UNBIASED, "BIASED"),
])
def test_bn_check_names_the_planted_bug(bn_base, answer, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(bn_base, answer, BN_CHECK_LAYER)


def test_bn_training_check_sees_the_unbiased_variance(bn_base):
    with pytest.raises(CheckFailed, match="loss curve drifts from torch.nn's"):
        run_from(bn_base, BN_UNBIASED, BN_CHECK)


def test_bn_hidden_check_catches_a_fixed_momentum(bn_base, capsys):
    ns = run_from(bn_base, BN_MOMENTUM_ALWAYS, BN_CHECK_LAYER)  # the visible check uses momentum=0.1
    assert "ex08-bn-network (one-layer): all checks passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"momentum=None.*1 / num_batches_tracked"):
        run_cells(BN_HIDDEN, namespace=ns)


@pytest.mark.parametrize("check", range(3), ids=["one-layer", "logits", "main"])
def test_bn_checks_fail_on_the_student_version(bn_base, check):
    """Each visible check cell on its own (none needs another's definitions)."""
    student = _code(starts="# EXERCISE ex08-bn-network", student=True)
    with pytest.raises(NotImplementedError, match="ex08-bn-network: your code here"):
        run_from(bn_base, student, BN_CHECKS[check])


@pytest.mark.parametrize("answer, expected", [
    (BN_SUBCLASS, r"NetBatchNorm2d is a subclass of torch\.nn\.modules\.batchnorm\.BatchNorm2d"),
    (BN_F_BATCH_NORM, r"your answer calls torch\.nn\.functional\.batch_norm"),
], ids=["subclass", "F.batch_norm"])
@pytest.mark.parametrize("check", range(3), ids=["one-layer", "logits", "main"])
def test_bn_checks_refuse_delegation(bn_base, answer, expected, check):
    with pytest.raises(CheckFailed, match=expected):
        run_from(bn_base, answer, BN_CHECKS[check])


def test_gn_checks_pass_the_solution(gn_base, capsys):
    run_from(gn_base, GN_EXERCISE, *GN_CHECKS)
    out = capsys.readouterr().out
    for part in ("", " (training)", " (other-shapes)"):
        assert f"ex08-gn-network{part}: all checks passed" in out


@pytest.mark.parametrize("answer, expected", [
    (GN_PER_CHANNEL, r"reshape to \(N, G, -1\)"),
    (GN_UNBIASED, "BIASED"),
    (GN_ONE_PASS, r"E\[x\*\*2\] - E\[x\]\*\*2"),
])
def test_gn_check_names_the_planted_bug(gn_base, answer, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(gn_base, answer, GN_CHECK)


@pytest.mark.parametrize("check", range(2), ids=["main", "training"])
def test_gn_checks_fail_on_the_student_version(gn_base, check):
    student = _code(starts="# EXERCISE ex08-gn-network", student=True)
    with pytest.raises(NotImplementedError, match="ex08-gn-network: your code here"):
        run_from(gn_base, student, GN_CHECKS[check])


def test_gn_hidden_check_catches_a_fixed_eps(gn_base, capsys):
    ns = run_from(gn_base, GN_FIXED_EPS, GN_CHECK)  # the visible checks use the default eps
    assert "ex08-gn-network: all checks passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"eps=1e-3 .*use self\.eps"):
        run_cells(GN_HIDDEN, namespace=ns)


@pytest.mark.parametrize("answer, expected", [
    (GN_SUBCLASS, r"NetGroupNorm is a subclass of torch\.nn\.modules\.normalization\.GroupNorm"),
    (GN_F_GROUP_NORM, r"your answer calls torch\.nn\.functional\.group_norm"),
    (GN_F_LAYER_NORM, r"your answer calls torch\.nn\.functional\.layer_norm"),
    (GN_F_BATCH_NORM, r"your answer calls torch\.nn\.functional\.batch_norm"),
], ids=["subclass", "F.group_norm", "F.layer_norm", "F.batch_norm"])
@pytest.mark.parametrize("check", range(2), ids=["main", "training"])
def test_gn_checks_refuse_delegation(gn_base, answer, expected, check):
    with pytest.raises(CheckFailed, match=expected):
        run_from(gn_base, answer, GN_CHECKS[check])


def test_the_curves_use_the_students_bn_only_after_its_check(base, capsys):
    """The cell after the check trains the student's layer once the main check has passed, cu.BatchNorm2d before."""
    import course_utils as cu
    cell = _code(starts="your_bn = ")
    assert cell.startswith('your_bn = cu.answer_or_reference("ex08-bn-network", NetBatchNorm2d, cu.BatchNorm2d)')
    cu.checks.PASSED.discard(("ex08-bn-network", None))
    ns = run_from(base, _code(starts="# EXERCISE ex08-bn-network", student=True))
    assert cu.answer_or_reference("ex08-bn-network", ns["NetBatchNorm2d"], cu.BatchNorm2d) is cu.BatchNorm2d
    assert "has not passed its check" in capsys.readouterr().out
