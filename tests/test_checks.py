"""The exercise-check helpers fail with messages that say what is wrong."""
from __future__ import annotations

import pytest
import torch

import course_utils as cu


def test_check_close_passes_and_reports():
    x = torch.randn(3, 4)
    d = cu.check_close(x + 1e-8, x, name="out")
    assert d.ok and d.max_abs < 1e-7


@pytest.mark.parametrize("actual, expected, match", [
    (None, torch.zeros(2), "forget to `return`"),
    ([1.0, 2.0], torch.zeros(2), "expected a torch.Tensor"),
    (torch.zeros(2, 1), torch.zeros(2), "shape"),
    (torch.tensor([float("nan"), 0.0]), torch.zeros(2), "NaN"),
    (torch.tensor([1.0, 0.0]), torch.zeros(2), "relative error"),
])
def test_check_close_fails_helpfully(actual, expected, match):
    with pytest.raises(cu.CheckFailed, match=match):
        cu.check_close(actual, expected, name="out")


def test_check_close_names_the_worst_index_and_hint():
    e = torch.zeros(3, 3)
    a = e.clone()
    a[2, 1] = 1.0
    with pytest.raises(cu.CheckFailed, match=r"index \(2, 1\).*Hint: biased"):
        cu.check_close(a, e, name="var", hint="biased or unbiased?")


def test_compare_table_and_check_all(capsys):
    rows = cu.compare({"same": (torch.ones(2), torch.ones(2)), "off": (torch.ones(2), torch.zeros(2))})
    out = capsys.readouterr().out
    assert "same" in out and "NO" in out
    assert [r.ok for r in rows] == [True, False]
    with pytest.raises(cu.CheckFailed, match="off"):
        cu.check_all(rows, "ex")
    cu.check_all(rows[:1])


def test_check_raises():
    cu.check_raises(lambda: int("x"), ValueError, name="parse", match="invalid")
    with pytest.raises(cu.CheckFailed, match="nothing was raised"):
        cu.check_raises(lambda: 1, ValueError, name="x")
    with pytest.raises(cu.CheckFailed, match="expected ValueError, got KeyError"):
        cu.check_raises(lambda: {}["k"], ValueError, name="x")
    with pytest.raises(NotImplementedError):  # an unsolved exercise is not disguised as a wrong answer
        cu.check_raises(lambda: (_ for _ in ()).throw(NotImplementedError()), ValueError, name="x")


def test_relative_error():
    assert cu.relative_error(torch.tensor([1.1]), torch.tensor([1.0])) == pytest.approx(0.1)


def test_pick_and_quick_mode(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert cu.quick_mode() and cu.pick("q", "f") == "q"
    monkeypatch.setenv("COURSE_QUICK", "0")
    assert not cu.quick_mode() and cu.pick("q", "f") == "f"


def test_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert cu.data_dir() == tmp_path and cu.checkpoint_dir() == tmp_path / "checkpoints"


def test_seed_everything_repeats_draws():
    cu.seed_everything(5)
    a = torch.rand(3)
    cu.seed_everything(5)
    assert torch.equal(a, torch.rand(3))


# ----------------------------------------------------------------------------- issue 14's helpers

def test_answer_or_reference_uses_the_answer_only_after_its_check_passed(capsys):
    import course_utils.checks as C

    def mine(x):
        return x

    C.PASSED.discard(("ex-test-fallback", None))
    assert cu.answer_or_reference("ex-test-fallback", mine, torch.relu) is torch.relu
    assert "has not passed its check" in capsys.readouterr().out
    cu.passed("ex-test-fallback", "part")  # a part alone is not the main check
    assert cu.answer_or_reference("ex-test-fallback", mine, torch.relu) is torch.relu
    cu.passed("ex-test-fallback")
    assert cu.answer_or_reference("ex-test-fallback", mine, torch.relu) is mine
    # a cell that relies on a separately checked part waits for that part too
    assert cu.answer_or_reference("ex-test-fallback", mine, torch.relu, parts=("eval",)) is torch.relu
    cu.passed("ex-test-fallback", "eval")
    assert cu.answer_or_reference("ex-test-fallback", mine, torch.relu, parts=("eval",)) is mine
    for part in (None, "part", "eval"):
        C.PASSED.discard(("ex-test-fallback", part))


@pytest.mark.parametrize("value, answer, kwargs, ok", [
    ("larger", "larger", {"options": ("smaller", "larger")}, True),
    ("smaller", "larger", {"options": ("smaller", "larger")}, False),
    ("bigger", "larger", {"options": ("smaller", "larger")}, False),  # not an option
    (None, "larger", {"options": ("smaller", "larger")}, False),
    (11.0, 10.0, {"rel_tol": 0.2}, True),
    (13.0, 10.0, {"rel_tol": 0.2}, False),
    (10, 10.0, {}, True),
    ("10", 10.0, {}, False),  # a string is not a number
    (True, 1.0, {}, False),
])
def test_check_prediction(value, answer, kwargs, ok):
    if ok:
        cu.check_prediction(value, answer, **kwargs)
    else:
        with pytest.raises(cu.CheckFailed):
            cu.check_prediction(value, answer, **kwargs)


def test_by_hand_refuses_library_code_and_restores_it_afterwards():
    import torch.nn.functional as F

    original = F.batch_norm

    class Subclassed(torch.nn.BatchNorm2d):
        pass

    class Delegating(torch.nn.Module):
        def forward(self, x):
            return F.batch_norm(x, None, None, training=True)

    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(cu.CheckFailed, match="subclass of torch.nn.modules.batchnorm.BatchNorm2d"):
        with cu.by_hand("ex-t", "batch_norm", answer=Subclassed):
            pass
    with pytest.raises(cu.CheckFailed, match="calls torch.nn.functional.batch_norm"):
        with cu.by_hand("ex-t", "batch_norm", answer=Delegating()):
            Delegating()(x)
    with pytest.raises(cu.CheckFailed, match="calls torch.batch_norm"):  # one level down
        with cu.by_hand("ex-t", "batch_norm"):
            torch.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, False)
    assert F.batch_norm is original and torch.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, False).shape
    with cu.by_hand("ex-t", "layer_norm"):  # by hand is fine
        (x - x.mean()) / x.std()
    with pytest.raises(ValueError, match="unknown library function"):
        cu.by_hand("ex-t", "batchnorm")


def test_integrity_notices_what_a_submission_replaced():
    from course_utils import integrity

    integrity.snapshot()
    namespace = {"cu": cu, "torch": torch}
    integrity.verify(namespace)
    original = torch.allclose
    try:
        torch.allclose = lambda *args, **kwargs: True
        with pytest.raises(integrity.IntegrityError, match="torch.allclose"):
            integrity.verify(namespace)
    finally:
        torch.allclose = original
    integrity.verify(namespace)
    with pytest.raises(integrity.IntegrityError, match="the notebook's name 'cu'"):
        integrity.verify({"cu": object()})
    integrity._SNAPSHOT.clear()


def test_reveal_prediction_shows_the_outcome_only_beside_a_prediction(capsys):
    assert cu.reveal_prediction("grow", "grow", name="predict_norms") is True
    assert "'grow'" in capsys.readouterr().out
    assert cu.reveal_prediction("shrink", "grow", name="predict_norms") is False
    assert "'grow'" in capsys.readouterr().out
    # none recorded (a student running on, or the student version run with errors allowed): no answer given
    assert cu.reveal_prediction(None, "grow", name="predict_norms") is False
    out = capsys.readouterr().out
    assert "grow" not in out and "predict_norms" in out and "no prediction was recorded" in out
