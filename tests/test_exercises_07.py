"""The check cells of notebook 07 catch the mistakes they are meant to catch.

As in tests/test_exercises_08.py, each test runs the notebook's own cells in a fresh namespace: the
setup cell, the cell that loads the pretrained model and the two domains, the loader cell, an answer
and the exercise's check cells (the hidden ones included). The reference solution must pass; the
stub and each planted bug must fail with a message that names the mistake.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.checks import CheckFailed
from notebook_cells import code_cell, quick_namespace, run_cells, run_from

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "07_bn_transfer_learning.ipynb"


def _code(**where) -> str:
    return code_cell(NOTEBOOK, **where)


SETUP = _code(contains="import course_utils as cu")
MODEL = _code(contains="cu.load_pretrained_resnet18(\"course\")")
LOADER = _code(starts="norm = (contract.mean")

STATS_EXERCISE = _code(starts="# EXERCISE ex07-freeze-bn-stats")
STATS_CHECK = _code(starts="# CHECK ex07-freeze-bn-stats\n")
STATS_ONLY_BN = _code(starts="# CHECK ex07-freeze-bn-stats only-bn")
LAYERS_EXERCISE = _code(starts="# EXERCISE ex07-freeze-layers")
LAYERS_CHECK = _code(starts="# CHECK ex07-freeze-layers\n")
LAYERS_HIDDEN = _code(starts="# HIDDEN CHECK ex07-freeze-layers reapplied")

# ------------------------------------------------------------------ planted bugs: the solution with one typical mistake
STATS_BODY = """    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model
"""
STATS_WHOLE_MODEL_EVAL = STATS_EXERCISE.replace(STATS_BODY, "    return model.eval()\n")
STATS_FREEZES_AFFINE = STATS_EXERCISE.replace(STATS_BODY, """    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for p in module.parameters():
                p.requires_grad_(False)
    return model
""")
STATS_BY_NAME = STATS_EXERCISE.replace(STATS_BODY, """    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1].startswith("bn"):
            module.eval()
    return model
""")

LAYERS_BN_LOOP = """        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(True)
"""
LAYERS_BY_NAME = LAYERS_EXERCISE.replace(LAYERS_BN_LOOP, """        for name, p in model.named_parameters():
            if ".bn" in name or name.startswith("bn"):
                p.requires_grad_(True)
""")
LAYERS_ONLY_FREEZES = LAYERS_EXERCISE.replace("""    for p in model.parameters():
        p.requires_grad_(strategy == "none")
""", """    if strategy != "none":  # nothing to do for "none", everything trains by default (not after another strategy!)
        for p in model.parameters():
            p.requires_grad_(False)
""")
LAYERS_SETS_EVAL = LAYERS_EXERCISE.replace("    return model\n    ### END SOLUTION",
                                           "    return model.eval()  # frozen layers 'should not train'\n    ### END SOLUTION")

PLANTED = [STATS_WHOLE_MODEL_EVAL, STATS_FREEZES_AFFINE, STATS_BY_NAME, LAYERS_BY_NAME, LAYERS_ONLY_FREEZES,
           LAYERS_SETS_EVAL]


@pytest.fixture(scope="module")
def base() -> dict:
    """The namespace after the setup, model and loader cells, in quick mode (shared: the checks copy the model)."""
    return quick_namespace(SETUP, MODEL, LOADER)



@pytest.mark.parametrize("planted", PLANTED)
def test_each_planted_bug_changes_the_solution(planted):
    assert planted not in (STATS_EXERCISE, LAYERS_EXERCISE)


# ------------------------------------------------------------------ ex07-freeze-bn-stats

def test_freeze_bn_stats_checks_pass_the_solution(base, capsys):
    run_from(base, STATS_EXERCISE, STATS_CHECK, STATS_ONLY_BN)
    out = capsys.readouterr().out
    assert "ex07-freeze-bn-stats: all checks passed" in out
    assert "ex07-freeze-bn-stats (only-bn): all checks passed" in out


@pytest.mark.parametrize("check", [STATS_CHECK, STATS_ONLY_BN], ids=["main", "only-bn"])
def test_freeze_bn_stats_checks_fail_on_the_student_version(base, check):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex07-freeze-bn-stats", student=True), check)


@pytest.mark.parametrize("answer, check, expected", [
    (STATS_WHOLE_MODEL_EVAL, STATS_ONLY_BN, r"not BN went into eval mode .*not model\.eval\(\)"),
    (STATS_FREEZES_AFFINE, STATS_CHECK, r"20 of the 20 BN layers.*requires_grad=False freezes gamma and beta"),
    (STATS_FREEZES_AFFINE, STATS_ONLY_BN, "requires_grad changed"),
    (STATS_BY_NAME, STATS_CHECK, r"3 of the 20 BN layers \(layer2\.0\.downsample\.1.*not by name"),
], ids=["whole-model-eval", "freezes-affine", "freezes-affine-only-bn", "by-name"])
def test_freeze_bn_stats_checks_name_the_planted_bug(base, answer, check, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, check)


def test_whole_model_eval_still_freezes_the_statistics(base, capsys):
    """Partial credit: model.eval() keeps the statistics (main check) and fails only the only-bn part."""
    run_from(base, STATS_WHOLE_MODEL_EVAL, STATS_CHECK)
    assert "ex07-freeze-bn-stats: all checks passed" in capsys.readouterr().out


# ------------------------------------------------------------------ ex07-freeze-layers

def test_freeze_layers_checks_pass_the_solution(base, capsys):
    run_from(base, LAYERS_EXERCISE, LAYERS_CHECK, LAYERS_HIDDEN)
    out = capsys.readouterr().out
    assert "ex07-freeze-layers: all checks passed" in out
    assert "ex07-freeze-layers (reapplied): all checks passed" in out


def test_freeze_layers_check_fails_on_the_student_version(base):
    with pytest.raises(NotImplementedError):
        run_from(base, _code(starts="# EXERCISE ex07-freeze-layers", student=True), LAYERS_CHECK)


@pytest.mark.parametrize("answer, expected", [
    (LAYERS_BY_NAME, r"'head\+bn': 6 parameters should train but are frozen \(layer2\.0\.downsample\.1\.bias.*"
                     r"isinstance, not by name"),
    (LAYERS_SETS_EVAL, "changed a module's train/eval mode"),
], ids=["by-name", "sets-eval"])
def test_freeze_layers_check_names_the_planted_bug(base, answer, expected):
    with pytest.raises(CheckFailed, match=expected):
        run_from(base, answer, LAYERS_CHECK)


def test_freeze_layers_hidden_check_catches_an_answer_tuned_to_fresh_models(base, capsys):
    ns = run_from(base, LAYERS_ONLY_FREEZES, LAYERS_CHECK)  # the visible check only sees fresh models
    assert "ex07-freeze-layers: all checks passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"frozen before with another strategy.*'none'.*should train but are frozen"):
        run_cells(LAYERS_HIDDEN, namespace=ns)


def test_the_runs_fall_back_to_cu_freeze(base, capsys):
    """The freezing runs use the student's function only once its check has passed."""
    ns = run_from(base, _code(starts="# EXERCISE ex07-freeze-layers", student=True))
    import course_utils as cu
    cu.checks.PASSED.discard(("ex07-freeze-layers", None))
    assert cu.answer_or_reference("ex07-freeze-layers", ns["freeze_layers"], cu.freeze) is cu.freeze
    assert "freeze_by = cu.answer_or_reference(\"ex07-freeze-layers\", freeze_layers, cu.freeze)" in \
        _code(starts="freeze_by = ")
