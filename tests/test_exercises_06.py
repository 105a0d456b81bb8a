"""The check cells of notebook 06 catch the mistakes they are meant to catch.

As in tests/test_exercises_08.py, each test runs the notebook's own cells in a fresh namespace: the setup
cell, the cells an exercise builds on, an answer (the solution, the student's stub, or the solution with
one planted bug) and the exercise's check cells, visible and hidden.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, failure_message, planted, run_cells

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "06_response_norms.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")
LRN = _code(starts="# EXERCISE ex06-lrn")
LRN_CHECK = _code(starts="# CHECK ex06-lrn\n")
LRN_HIDDEN = _code(starts="# HIDDEN CHECK ex06-lrn ")
SQRT = _code(starts="# EXERCISE ex06-safe-sqrt")
SQRT_CHECK = _code(starts="# CHECK ex06-safe-sqrt\n")
SQRT_ZERO = _code(starts="# CHECK ex06-safe-sqrt zero-gradient")
GRN = _code(starts="# EXERCISE ex06-grn\n")
GRN_CHECK = _code(starts="# CHECK ex06-grn\n")
GRN_DEAD = _code(starts="# CHECK ex06-grn dead-channel")
GRN_HIDDEN = _code(starts="# HIDDEN CHECK ex06-grn ")
GRN_PICK = _code(starts="grn_function = cu.answer_or_reference(")
MODULE = _code(starts="# EXERCISE ex06-grn-module")
MODULE_CHECK = _code(starts="# CHECK ex06-grn-module\n")
MODULE_INIT = _code(starts="# CHECK ex06-grn-module init")

# exercise id: (cells it builds on, the solution, its checks in order)
CHECKS = {
    "ex06-lrn": ((), LRN, [LRN_CHECK, LRN_HIDDEN]),
    "ex06-safe-sqrt": ((), SQRT, [SQRT_CHECK, SQRT_ZERO]),
    "ex06-grn": ((), GRN, [GRN_CHECK, GRN_DEAD, GRN_HIDDEN]),
    "ex06-grn-module": ((GRN, GRN_PICK), MODULE, [MODULE_CHECK, MODULE_INIT]),
}



# ---------------------------------------------------------------- planted bugs (the solution with one mistake)
LRN_NO_ONE_OVER_N = planted(LRN, "(k + alpha / size * window_sum", "(k + alpha * window_sum")
LRN_CENTRED_EVEN = planted(LRN, "F.pad(squares, (size // 2, (size - 1) // 2))", "F.pad(squares, ((size - 1) // 2, size // 2))")
SQRT_PLAIN = planted(SQRT, "    positive = s > 0\n", "    return s.sqrt()\n")
SQRT_ONE_WHERE = planted(SQRT, "    positive = s > 0\n", "    return torch.where(s > 0, s.sqrt(), torch.zeros_like(s))\n")
SQRT_EPS = planted(SQRT, "    positive = s > 0\n", "    return (s + 1e-12).sqrt()\n")
GRN_SQRT_OF_SUM = planted(GRN, "energy = torch.linalg.vector_norm(x, dim=spatial, keepdim=True)",
                           "energy = x.pow(2).sum(dim=spatial, keepdim=True).sqrt()")
GRN_NO_RESIDUAL = planted(GRN, "+ beta.view(view) + x", "+ beta.view(view)")
GRN_FIXED_EPS = planted(GRN, "energy.mean(dim=channel, keepdim=True) + eps)", "energy.mean(dim=channel, keepdim=True) + 1e-6)")
MODULE_ONES = planted(MODULE, "self.weight = nn.Parameter(torch.zeros(dim))", "self.weight = nn.Parameter(torch.ones(dim))")
MODULE_GAMMA = planted(planted(MODULE, "self.weight = nn.Parameter(", "self.gamma = nn.Parameter("),
                        "return grn_function(x, self.weight, self.bias,", "return grn_function(x, self.gamma, self.bias,")
MODULE_LAYOUT = planted(MODULE, "self.eps, self.channels_last)", "self.eps)")

# ---------------------------------------------------------------- attacks
LRN_BY_F = '''
def my_local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    return F.local_response_norm(x, size, alpha, beta, k)
'''
LRN_BY_MODULE = '''
def my_local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    return nn.LocalResponseNorm(size, alpha, beta, k)(x)
'''
GRN_BY_TIMM = '''
def my_global_response_norm(x, gamma, beta, eps=1e-6, channels_last=True):
    layer = TimmGRN(gamma.numel(), eps=eps, channels_last=channels_last)
    return torch.func.functional_call(layer, {"weight": gamma, "bias": beta}, (x,))
'''
GRN_BY_COURSE = '''
def my_global_response_norm(x, gamma, beta, eps=1e-6, channels_last=True):
    return cu.global_response_norm(x, gamma, beta, eps, channels_last)
'''
MODULE_SUBCLASS = '''
class MyGlobalResponseNorm(TimmGRN):
    pass
'''

PLANTED = [LRN_NO_ONE_OVER_N, LRN_CENTRED_EVEN, SQRT_PLAIN, SQRT_ONE_WHERE, SQRT_EPS, GRN_SQRT_OF_SUM, GRN_NO_RESIDUAL,
           GRN_FIXED_EPS, MODULE_ONES, MODULE_GAMMA, MODULE_LAYOUT]


def _fails(exercise: str, answer: str, *checks: str, before: tuple[str, ...] = ()) -> str:
    """Run the setup, the cells ``exercise`` builds on, ``answer``, then the check cells: ``before`` may fail
    (they define helpers the later checks use), the last ones must; returns the failure message."""
    return failure_message(run_cells(SETUP, *CHECKS[exercise][0], answer), *checks, before=before)


@pytest.mark.parametrize("planted", PLANTED)
def test_each_planted_bug_changes_the_solution(planted):
    assert planted not in (LRN, SQRT, GRN, MODULE)


@pytest.mark.parametrize("exercise", sorted(CHECKS))
def test_the_solution_passes_every_check(exercise, capsys):
    prerequisites, answer, checks = CHECKS[exercise]
    run_cells(SETUP, *prerequisites, answer, *checks)
    out = capsys.readouterr().out
    assert out.count(f"\u2714 {exercise}") == len(checks), out


@pytest.mark.parametrize("exercise", sorted(CHECKS))
def test_every_check_fails_on_the_student_version(exercise):
    prerequisites, _, checks = CHECKS[exercise]
    stub = _code(starts=f"# EXERCISE {exercise}\n", student=True)
    assert "NotImplementedError" in stub and "### BEGIN SOLUTION" not in stub
    namespace = run_cells(SETUP, *prerequisites, stub)
    for check in checks:
        with pytest.raises(NotImplementedError):
            run_cells(check, namespace=namespace)


@pytest.mark.parametrize("exercise, answer, checks, before, expected", [
    ("ex06-lrn", LRN_NO_ONE_OVER_N, [LRN_CHECK], [], r"divide by size\?.*size=5 alpha=0\.5: output"),
    ("ex06-lrn", LRN_CENTRED_EVEN, [LRN_CHECK], [], r"window placement\?.*size=2 alpha=1\.0: output"),
    ("ex06-safe-sqrt", SQRT_PLAIN, [SQRT_ZERO], [SQRT_CHECK], r"at s = 0 is \[inf.*derivative 1/\(2 sqrt\(s\)\) of the plain sqrt"),
    ("ex06-safe-sqrt", SQRT_ONE_WHERE, [SQRT_ZERO], [SQRT_CHECK], r"NaN\. A where\(\) around the result is not enough"),
    ("ex06-safe-sqrt", SQRT_EPS, [SQRT_ZERO], [SQRT_CHECK], r"not 0: an eps inside the root"),
    ("ex06-grn", GRN_SQRT_OF_SUM, [GRN_DEAD], [GRN_CHECK], r"NaN gradient on an all-zero channel.*torch\.linalg\.vector_norm"),
    ("ex06-grn", GRN_NO_RESIDUAL, [GRN_CHECK], [], r"\+ beta \+ x\).*at init"),
    ("ex06-grn", GRN_FIXED_EPS, [GRN_HIDDEN], [GRN_CHECK, GRN_DEAD], r"use the eps argument.*eps=0\.01 trained"),
    ("ex06-grn-module", MODULE_ONES, [MODULE_INIT], [MODULE_CHECK], r"initialise weight \(gamma\) and bias \(beta\) to ZERO"),
    ("ex06-grn-module", MODULE_GAMMA, [MODULE_CHECK], [], r"state_dict has \['bias', 'gamma'\].*Name the parameters weight"),
    ("ex06-grn-module", MODULE_LAYOUT, [MODULE_CHECK], [], r"channels_last=False\) failed on input of shape .*Does forward pass self\.channels_last on\?"),
], ids=["lrn-no-1/n", "lrn-even-window-centred", "sqrt-plain", "sqrt-one-where", "sqrt-eps", "grn-sqrt-of-sum",
        "grn-no-residual", "grn-fixed-eps", "module-ones", "module-gamma", "module-ignores-layout"])
def test_each_planted_bug_fails_with_a_message_that_names_it(exercise, answer, checks, before, expected):
    message = _fails(exercise, answer, *checks, before=tuple(before))
    assert re.search(expected, message, re.S), message


def test_the_planted_sqrt_bugs_pass_the_forward_check():
    """sqrt and a where() around it give the right values: only the zero-gradient part can catch them."""
    for answer in (SQRT_PLAIN, SQRT_ONE_WHERE):
        run_cells(SETUP, answer, SQRT_CHECK)


@pytest.mark.parametrize("exercise, answer, check, expected", [
    ("ex06-lrn", LRN_BY_F, LRN_CHECK, "calls torch.nn.functional.local_response_norm"),
    ("ex06-lrn", LRN_BY_MODULE, LRN_CHECK, "calls torch.nn.modules.normalization.LocalResponseNorm"),
    ("ex06-grn", GRN_BY_TIMM, GRN_CHECK, "calls a library GRN"),
    ("ex06-grn", GRN_BY_COURSE, GRN_CHECK, "calls a library GRN"),
    ("ex06-grn-module", MODULE_SUBCLASS, MODULE_CHECK, "MyGlobalResponseNorm is a subclass of timm.layers.grn.GlobalResponseNorm"),
], ids=["lrn-F", "lrn-nn-module", "grn-timm-functional-call", "grn-course-reference", "module-subclass-timm"])
def test_an_answer_that_delegates_to_the_library_fails(exercise, answer, check, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_cells(SETUP, *CHECKS[exercise][0], answer, check)


def test_the_timm_delegation_computes_the_right_numbers():
    """Without the check's guard, GRN_BY_TIMM would pass: it is timm's layer."""
    import torch
    namespace = run_cells(SETUP, GRN_BY_TIMM, GRN)
    x, gamma, beta = torch.randn(2, 3, 3, 4), torch.randn(4), torch.randn(4)
    namespace["reference"] = namespace["my_global_response_norm"]
    run_cells(GRN_BY_TIMM, namespace=namespace)
    torch.testing.assert_close(namespace["my_global_response_norm"](x, gamma, beta), namespace["reference"](x, gamma, beta))
