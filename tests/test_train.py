"""The training loop: settings rejected before training, determinism, evaluate, the results log."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import course_utils as cu


def tiny_net(num_classes: int = 3) -> nn.Module:
    """A small conv net with BN, enough to exercise the loop in milliseconds."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def tiny_loader(n: int = 48, batch_size: int = 16, seed: int = 0, **kw) -> cu.TensorLoader:
    # synthetic test fixture (random pixels), never shown as real data
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 3, (n,), generator=gen)
    return cu.TensorLoader(images, labels, batch_size, normalize=((0.5,) * 3, (0.25,) * 3), **kw)


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs"),
    ({"epochs": 1.5}, "epochs"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1e-3}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"schedule": "linear"}, "schedule"),
    ({"bn_mode": "frozen_everything"}, "bn_mode"),
    ({"bn_mode": "recomputed"}, "recompute"),
])
def test_bad_settings_fail_before_training(kwargs, match):
    model = tiny_net()
    before = params(model)
    with pytest.raises(ValueError, match=match):
        cu.fit(model, tiny_loader(), progress=False, device=torch.device("cpu"), **{"epochs": 1, **kwargs})
    after = params(model)
    assert all(torch.equal(before[k], after[k]) for k in before), "a rejected configuration changed the model"


def test_empty_loader_and_frozen_model_are_rejected():
    with pytest.raises(ValueError, match="no batches"):
        cu.fit(tiny_net(), [], epochs=1, progress=False)
    frozen = tiny_net().requires_grad_(False)
    with pytest.raises(ValueError, match="frozen"):
        cu.fit(frozen, tiny_loader(), epochs=1, progress=False)
    with pytest.raises(TypeError, match="train_loader"):
        cu.fit(tiny_net(), 42, epochs=1, progress=False)


def test_batch_larger_than_data_is_rejected_by_the_loader():
    with pytest.raises(ValueError, match="larger than the dataset"):
        tiny_loader(n=8, batch_size=16)


def test_two_runs_with_the_same_seed_give_identical_weights():
    states = []
    for _ in range(2):
        model = tiny_net()
        history = cu.fit(model, tiny_loader(shuffle=True, augment=True), epochs=2, lr=1e-2, seed=3,
                         progress=False, device=torch.device("cpu"))
        states.append(params(model))
    assert len(history.steps) == 2 * 3 and len(history.epochs) == 2
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), f"{k} differs between two seeded runs"


def test_training_reduces_the_loss_and_records_history():
    model = tiny_net()
    seen = []
    history = cu.fit(model, tiny_loader(), epochs=5, lr=3e-2, progress=False, val_loader=tiny_loader(),
                     on_step=seen.append, device=torch.device("cpu"))
    assert len(seen) == len(history.steps) == 15
    losses = history.series("train_loss")
    assert losses[-1] < losses[0]
    assert 0.0 <= history.last("val_acc") <= 1.0 and math.isfinite(history.last("val_loss"))


def test_nan_loss_stops_before_the_weights_change():
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.full((4, 3, 8, 8), float("nan"))
    before = params(model)
    with pytest.raises(FloatingPointError, match="learning rate"):
        cu.train_step(model, x, torch.zeros(4, dtype=torch.long), opt)
    assert torch.equal(before["0.weight"], model.state_dict()["0.weight"])


def test_train_step_reports_the_loss_and_correct_count_before_the_update():
    model = tiny_net().eval()  # eval: the forward pass is repeatable, so it can be recomputed here
    x, y = next(iter(tiny_loader()))
    with torch.no_grad():
        logits = model(x)
    expected_loss = torch.nn.functional.cross_entropy(logits, y).item()
    expected_correct = int((logits.argmax(1) == y).sum())
    before = params(model)
    loss, correct = cu.train_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1))
    assert isinstance(loss, float) and isinstance(correct, int)
    assert loss == pytest.approx(expected_loss, rel=1e-6) and correct == expected_correct
    assert not torch.equal(before["0.weight"], model.state_dict()["0.weight"]), "the step must update the weights"


def test_evaluate_matches_a_manual_count_and_restores_mode():
    model = tiny_net().eval()
    loader = tiny_loader()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in loader)
    model.train()
    result = cu.evaluate(model, loader)
    assert result["n"] == 48 and result["acc"] == pytest.approx(correct / 48)
    assert model.training, "evaluate must give the model back in the mode it found it"


def test_evaluate_in_train_mode_uses_batch_stats_and_leaves_buffers_alone():
    model = tiny_net()
    loader = tiny_loader(batch_size=48)
    x, y = next(iter(loader))
    buffers = cu.bn_state(model)
    result = cu.evaluate(model, loader, train_mode=True)
    for k, v in cu.bn_state(model).items():
        assert torch.equal(v, buffers[k]), f"evaluate(train_mode=True) changed {k}"
    with torch.no_grad():
        expected = (model.train()(x).argmax(1) == y).float().mean().item()  # batch statistics
    assert result["acc"] == pytest.approx(expected)


def test_results_log_appends_rows_and_widens_the_header(tmp_path):
    path = tmp_path / "results_test.csv"
    cu.append_result(path, {"run": 1, "acc": 0.5})
    cu.append_result(path, {"run": 2, "acc": 0.75})
    cu.append_result(path, {"run": 3, "acc": 0.8, "note": "new column"})
    rows = cu.read_results(path)
    assert [r["run"] for r in rows] == [1, 2, 3]
    assert rows[1]["acc"] == 0.75 and rows[2]["note"] == "new column" and rows[0]["note"] == ""
    with pytest.raises(ValueError):
        cu.append_result(path, {})
