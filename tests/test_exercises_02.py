"""The check cells of notebook 02 pass the reference answers and catch the mistakes they are meant to catch.

Each test runs the notebook's own cells in a fresh namespace: the setup cell, an answer and the check
cells (ex02-bn-forward has several, one per part, each its own point; the hidden ones are the
instructor's). The solution passes every check; the student's stub fails each one; each planted bug
fails the part it belongs to with a message that names the mistake; an answer that delegates to
PyTorch's own layer or fold fails with a message saying so. (tests/test_exercises_02_backward.py tests the
backward check's step-by-step messages.)
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, planted, quick_namespace, run_allowing_failure, run_cells, run_from

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "02_batch_norm.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")
FORWARD = _code(starts="# EXERCISE ex02-bn-forward")
FORWARD_MAIN = _code(starts="# CHECK ex02-bn-forward\n")
FORWARD_PARTS = {
    "main": FORWARD_MAIN,
    "running": _code(starts="# CHECK ex02-bn-forward running"),
    "eval": _code(starts="# CHECK ex02-bn-forward eval"),
    "robust": _code(starts="# HIDDEN CHECK ex02-bn-forward robust"),
}
STEPS = _code(contains="def bn_forward_steps(")
BACKWARD = _code(starts="# EXERCISE ex02-bn-backward")
BACKWARD_CHECK = _code(starts="# CHECK ex02-bn-backward")
FOLD = _code(starts="# EXERCISE ex02-fold-bn")
FOLD_PARTS = {"main": _code(starts="# CHECK ex02-fold-bn"), "robust": _code(starts="# HIDDEN CHECK ex02-fold-bn robust")}



# ---------------------------------------------------------------- planted bugs: ex02-bn-forward
UNBIASED = planted(FORWARD, "var = (x - mean.view(1, -1, 1, 1)).pow(2).mean(dim=(0, 2, 3))  # (C,), biased",
                    "var = x.var(dim=(0, 2, 3))")
DETACHED = planted(FORWARD, "mean = x.mean(dim=(0, 2, 3))  ", "mean = x.mean(dim=(0, 2, 3)).detach()  ")
MOMENTUM_FLIPPED = planted(FORWARD, "self.running_mean.mul_(1 - factor).add_(factor * mean)",
                            "self.running_mean.mul_(factor).add_((1 - factor) * mean)")
RUNNING_VAR_BIASED = planted(FORWARD, "add_(factor * var * m / (m - 1))", "add_(factor * var)")
NONE_AS_DEFAULT = planted(FORWARD, "factor = 1.0 / int(self.num_batches_tracked) if self.momentum is None else self.momentum",
                           "factor = 0.1 if self.momentum is None else self.momentum")
UPDATES_IN_EVAL = planted(FORWARD, "        if self.training:\n            self.num_batches_tracked += 1",
                           "        if True:\n            self.num_batches_tracked += 1")
GRAD_MODE = planted(FORWARD, "        if self.training:\n", "        if torch.is_grad_enabled():\n")
ONE_PASS = planted(FORWARD, "var = (x - mean.view(1, -1, 1, 1)).pow(2).mean(dim=(0, 2, 3))  # (C,), biased",
                    "var = x.pow(2).mean(dim=(0, 2, 3)) - mean.pow(2)")
HARD_EPS = planted(FORWARD, "torch.sqrt(var.view(1, -1, 1, 1) + self.eps)", "torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)")
SUBCLASS = "class MyBatchNorm2d(nn.BatchNorm2d):\n    pass\n"
DELEGATES = '''
class MyBatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.num_batches_tracked += 1
        factor = (1.0 / int(self.num_batches_tracked) if self.momentum is None else self.momentum) if self.training else 0.0
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, factor, self.eps)
'''

# ---------------------------------------------------------------- planted bugs: ex02-bn-backward, ex02-fold-bn
BACKWARD_ONE_PATH = planted(BACKWARD, 'grads["x"] = grads["centered"] + grads["mean"] / m', 'grads["x"] = grads["centered"]')
BACKWARD_BY_AUTOGRAD = '''
def bn_backward(grad_y, nodes, weight, grads):
    """Let autograd differentiate PyTorch's batch norm instead of working the steps out."""
    x = (nodes["centered"] + nodes["mean"]).detach().requires_grad_()
    w = weight.detach().requires_grad_()
    b = torch.zeros_like(w, requires_grad=True)
    with torch.enable_grad():
        y = F.batch_norm(x, None, None, w, b, training=True)
        grads["x"], grads["weight"], grads["bias"] = torch.autograd.grad(y, (x, w, b), grad_y)
    return grads
'''
FOLD_NO_EPS = planted(FOLD, "torch.sqrt(bn.running_var + bn.eps)", "torch.sqrt(bn.running_var)")
FOLD_HARD_EPS = planted(FOLD, "torch.sqrt(bn.running_var + bn.eps)", "torch.sqrt(bn.running_var + 1e-5)")
FOLD_INPUT_AXIS = planted(FOLD, "conv.weight * a.view(-1, 1, 1, 1)", "conv.weight * a.view(1, -1, 1, 1)")
FOLD_CONV_BIAS_DROPPED = planted(FOLD, "a * (conv_bias - bn.running_mean) + bn.bias", "bn.bias - a * bn.running_mean")
FOLD_IN_PLACE = planted(FOLD, "fused = copy.deepcopy(conv)", "fused = conv")
FOLD_BY_TORCH = '''
def fold_bn(conv, bn):
    return torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
'''
FOLD_BY_COURSE = '''
def fold_bn(conv, bn):
    return cu.fold_bn_into_conv(conv, bn)
'''
FOLD_SEQUENTIAL = '''
def fold_bn(conv, bn):
    return nn.Sequential(copy.deepcopy(conv), copy.deepcopy(bn).eval())
'''


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup cell, in quick mode (shared: the checks copy what they change)."""
    return quick_namespace(SETUP)


def _check(base: dict, answer: str, parts: dict[str, str], part: str) -> None:
    """Run ``answer`` and the check cell ``part``; the main check runs first (it defines the helpers), failing or not."""
    ns = run_from(base, answer)
    if part != "main":
        run_allowing_failure(ns, parts["main"])
    run_cells(parts[part], namespace=ns)


ALL_PLANTED = [UNBIASED, DETACHED, MOMENTUM_FLIPPED, RUNNING_VAR_BIASED, NONE_AS_DEFAULT, UPDATES_IN_EVAL, GRAD_MODE,
               ONE_PASS, HARD_EPS, BACKWARD_ONE_PATH, FOLD_NO_EPS, FOLD_HARD_EPS, FOLD_INPUT_AXIS,
               FOLD_CONV_BIAS_DROPPED, FOLD_IN_PLACE]


@pytest.mark.parametrize("planted", ALL_PLANTED)
def test_each_planted_bug_changes_the_solution(planted):
    assert planted not in (FORWARD, BACKWARD, FOLD)


# ---------------------------------------------------------------- ex02-bn-forward

@pytest.mark.parametrize("part", FORWARD_PARTS)
def test_forward_check_passes_the_solution(base, part, capsys):
    _check(base, FORWARD, FORWARD_PARTS, part)
    label = "" if part == "main" else f" ({part})"
    assert f"ex02-bn-forward{label}: all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("part", FORWARD_PARTS)
def test_forward_check_fails_on_the_student_version(base, part):
    with pytest.raises(NotImplementedError):
        _check(base, _code(starts="# EXERCISE ex02-bn-forward", student=True), FORWARD_PARTS, part)


@pytest.mark.parametrize("answer, part, expected", [
    (UNBIASED, "main", r"train-mode outputs differ.*BIASED variance"),
    (DETACHED, "main", r"outputs match but these gradients do not.*no \.detach\(\)"),
    (MOMENTUM_FLIPPED, "running", r"momentum weights the NEW batch"),
    (RUNNING_VAR_BIASED, "running", r"update running_var with the UNBIASED variance"),
    (NONE_AS_DEFAULT, "running", r"momentum=None the update factor must be 1 / num_batches_tracked"),
    (UPDATES_IN_EVAL, "eval", r"eval mode changed running_mean, running_var, num_batches_tracked"),
    (GRAD_MODE, "eval", r"eval mode changed"),
    (GRAD_MODE, "robust", r"under torch\.no_grad\(\) must still update.*not torch\.is_grad_enabled\(\)"),
    (ONE_PASS, "robust", r"around 1e7.*train-mode outputs differ.*centred variance"),
    (HARD_EPS, "robust", r"eps=1e-3: train-mode outputs differ.*self\.eps"),
], ids=["unbiased variance", "detached statistics", "momentum on the old value", "biased running_var",
        "momentum=None as 0.1", "statistics updated in eval mode", "mode from is_grad_enabled (eval)",
        "mode from is_grad_enabled (no_grad)", "E[x^2] - E[x]^2", "eps hard-coded"])
def test_forward_check_names_the_planted_bug(base, answer, part, expected):
    with pytest.raises(CheckFailed, match=expected):
        _check(base, answer, FORWARD_PARTS, part)


@pytest.mark.parametrize("answer, part", [(ONE_PASS, "main"), (HARD_EPS, "main"), (MOMENTUM_FLIPPED, "main"),
                                          (MOMENTUM_FLIPPED, "eval"), (UNBIASED, "eval")])
def test_forward_parts_give_partial_credit(base, answer, part, capsys):
    """A bug of one part does not cost the others: each part checks its own thing."""
    _check(base, answer, FORWARD_PARTS, part)


@pytest.mark.parametrize("part", ["main", "running", "eval", "robust"])
@pytest.mark.parametrize("answer, expected", [
    (SUBCLASS, r"subclass of torch\.nn\.modules\.batchnorm\.BatchNorm2d"),
    (DELEGATES, r"your answer calls torch\.nn\.functional\.batch_norm"),
], ids=["subclass of nn.BatchNorm2d", "calls F.batch_norm"])
def test_forward_check_refuses_the_library_layer(base, answer, expected, part):
    with pytest.raises(CheckFailed, match=expected):
        _check(base, answer, FORWARD_PARTS, part)


# ---------------------------------------------------------------- ex02-bn-backward

def test_backward_check_passes_the_solution(base, capsys):
    run_cells(STEPS, BACKWARD, BACKWARD_CHECK, namespace=dict(base))
    assert "ex02-bn-backward: all checks passed" in capsys.readouterr().out


def test_backward_check_fails_on_the_student_version(base):
    with pytest.raises(CheckFailed, match="NotImplementedError"):
        run_cells(STEPS, _code(starts="# EXERCISE ex02-bn-backward", student=True), BACKWARD_CHECK, namespace=dict(base))


def test_backward_check_names_the_missing_path_through_the_mean(base):
    with pytest.raises(CheckFailed, match=r"dL/dx .*x reaches the loss through centered AND through mean"):
        run_cells(STEPS, BACKWARD_ONE_PATH, BACKWARD_CHECK, namespace=dict(base))


def test_backward_check_refuses_autograd_through_f_batch_norm(base):
    with pytest.raises(CheckFailed, match=r"ex02-bn-backward: your answer calls torch\.nn\.functional\.batch_norm"):
        run_cells(STEPS, BACKWARD_BY_AUTOGRAD, BACKWARD_CHECK, namespace=dict(base))


# ---------------------------------------------------------------- ex02-fold-bn

@pytest.mark.parametrize("part", FOLD_PARTS)
def test_fold_check_passes_the_solution(base, part, capsys):
    _check(base, FOLD, FOLD_PARTS, part)
    label = "" if part == "main" else f" ({part})"
    assert f"ex02-fold-bn{label}: all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("part", FOLD_PARTS)
def test_fold_check_fails_on_the_student_version(base, part):
    with pytest.raises(NotImplementedError):
        _check(base, _code(starts="# EXERCISE ex02-fold-bn", student=True), FOLD_PARTS, part)


@pytest.mark.parametrize("answer, part, expected", [
    (FOLD_NO_EPS, "main", r"folded weight: differs.*bn\.eps"),
    (FOLD_HARD_EPS, "robust", r"eps=1e-2: folded weight: differs.*the layer's own eps"),
    (FOLD_INPUT_AXIS, "main", r"conv 3->5 with bias: your fold raised RuntimeError.*\(C_out, 1, 1, 1\)"),
    (FOLD_CONV_BIAS_DROPPED, "main", r"conv 3->5 with bias: folded bias: differs.*conv bias - running_mean"),
    (FOLD_IN_PLACE, "main", r"changed the Conv2d it was given.*copy\.deepcopy\(conv\)"),
    (FOLD_SEQUENTIAL, "main", r"return an nn\.Conv2d.*got Sequential"),
    (FOLD_BY_TORCH, "main", r"calls torch\.nn\.utils\.fusion\.fuse_conv_bn_eval"),
    (FOLD_BY_COURSE, "main", r"calls course_utils\.fold_bn_into_conv"),
], ids=["eps missing", "eps hard-coded", "input-channel axis", "conv bias dropped", "folded in place",
        "conv and bn in a Sequential", "torch's fuse_conv_bn_eval", "the course's fold"])
def test_fold_check_names_the_planted_bug(base, answer, part, expected):
    with pytest.raises(CheckFailed, match=expected):
        _check(base, answer, FOLD_PARTS, part)


def test_fold_input_axis_fails_on_a_square_conv_too(base):
    """With C_in == C_out the wrong axis raises nothing; the weight comparison catches it."""
    ns = run_cells(FOLD_INPUT_AXIS, FOLD_PARTS["main"].split("check_fold(*conv_bn_pair(3, 5")[0], namespace=dict(base))
    with pytest.raises(CheckFailed, match=r"folded weight: differs.*OUTPUT channel"):
        run_cells('check_fold(*conv_bn_pair(4, 4, bias=False, stride=2), torch.randn(4, 4, 9, 9), "square")', namespace=ns)


# ---------------------------------------------------------------- fallbacks

def test_later_cells_use_the_reference_until_the_check_passes(base, capsys):
    # the record of passed checks lives in the process: forget what earlier tests passed
    ns = run_cells("cu.checks.PASSED.difference_update({k for k in cu.checks.PASSED "
                   "if k[0] in ('ex02-fold-bn', 'ex02-bn-forward')})", FOLD, namespace=dict(base))
    ns["fold"] = run_cells('fold = cu.answer_or_reference("ex02-fold-bn", fold_bn, cu.fold_bn_into_conv)',
                           namespace=ns)["fold"]
    assert ns["fold"] is ns["cu"].fold_bn_into_conv and "has not passed its check" in capsys.readouterr().out
    run_cells(FOLD_PARTS["main"], 'fold = cu.answer_or_reference("ex02-fold-bn", fold_bn, cu.fold_bn_into_conv)',
              namespace=ns)
    assert ns["fold"] is ns["fold_bn"]
    layer_cell = _code(contains='cu.answer_or_reference("ex02-bn-forward", MyBatchNorm2d, cu.BatchNorm2d')
    first = layer_cell.split("\n")[0]
    run_cells(FORWARD, first, namespace=ns)
    assert ns["BatchNormLayer"] is ns["cu"].BatchNorm2d
    run_cells(FORWARD_MAIN, first, namespace=ns)  # the main check alone: the cell also needs eval mode checked
    assert ns["BatchNormLayer"] is ns["cu"].BatchNorm2d
    run_cells(FORWARD_PARTS["eval"], first, namespace=ns)
    assert ns["BatchNormLayer"] is ns["MyBatchNorm2d"]
