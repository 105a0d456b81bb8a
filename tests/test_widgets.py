"""The fine-tuning lab: the panel builds, configurations are checked, a tiny run logs a row."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import course_utils as cu
from course_utils import lab

TINY = dict(n_train=32, n_val=32, batch_size=16, epochs=1)


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    # the cached quick checkpoint of the course's own model; never a full pretraining in the tests
    monkeypatch.setenv("COURSE_QUICK", "1")
    monkeypatch.setenv("COURSE_PRETRAINED", "course")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")


def test_panel_builds_with_every_option(tmp_path):
    import ipywidgets as W

    panel = cu.lab_panel(tmp_path / "results_lab.csv")
    assert isinstance(panel.widget, W.VBox)
    for key, options in lab.CHOICES.items():
        if key in panel.controls:
            assert tuple(panel.controls[key].options) == tuple(options), key
    config = panel.config()
    assert isinstance(config, cu.LabConfig) and config.validate() is config
    assert config.log_path == str(tmp_path / "results_lab.csv")


@pytest.mark.parametrize("change, match", [
    ({"bn_mode": "half"}, "bn_mode"),
    ({"normalization": "imagenet"}, "normalization"),
    ({"input_layer": "lrn"}, "input_layer"),
    ({"input_layer": "groupnorm"}, "now called 'instancenorm'"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 64}, "larger than the training data"),
    ({"freezing": "head_then_full"}, "epochs >= 2"),
    ({"norm_layer": "gn"}, "norm_layer='gn' is not an option"),
    ({"norm_layer": "groupnorm", "bn_mode": "frozen_stats"}, "replaces them"),
])
def test_invalid_config_errors_before_training(change, match, tmp_path):
    config = dataclasses.replace(cu.LabConfig(log_path=str(tmp_path / "r.csv"), **TINY), **change)
    with pytest.raises(ValueError, match=match):
        cu.run_lab(config)
    assert not (tmp_path / "r.csv").exists()


def test_panel_reports_an_invalid_config_without_running(tmp_path):
    panel = cu.lab_panel(tmp_path / "r.csv")
    assert panel.run(cu.LabConfig(lr=-1.0, log_path=str(tmp_path / "r.csv"))) is None
    assert "Not started" in panel.status.value and "lr" in panel.status.value


def test_run_lab_from_config_logs_a_row(tmp_path):
    path = tmp_path / "results_lab.csv"
    panel = cu.lab_panel(path)
    result = panel.run(cu.LabConfig(log_path=str(path), bn_mode="recomputed", input_layer="layernorm", **TINY))
    rows = cu.read_results(path)
    assert len(rows) == 1
    row = rows[0]
    assert row["bn_mode"] == "recomputed" and row["input_layer"] == "layernorm" and row["n_train_used"] == 32
    assert 0.0 <= row["val_acc"] <= 1.0 and row["val_acc"] == pytest.approx(result.metrics["val_acc"], abs=1e-5)
    assert row["run_id"] == result.row["run_id"] and row["run_id"].startswith("run-")
    assert result.state is not None and "conv1.norm.norm.weight" in result.state
    assert panel.progress.value == panel.progress.max == 2
    assert len(panel.run_b.options) == 2  # the pretrained start and this run
    fig = cu.plot_weight_histograms(result.start_state, result.state, difference=True)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 21


def _fake_result(i: int) -> lab.LabResult:
    """A LabResult built by hand (no training): only what the panel reads."""
    state = {"conv.weight": torch.full((2, 2), float(i))}
    start = {"conv.weight": torch.zeros(2, 2)}
    return lab.LabResult(cu.LabConfig(name=f"run {i}"), {"val_acc": 0.5, "val_acc_before": 0.2, "seconds": 1.0},
                         cu.History(), {}, {"label": f"run {i}"}, state, start)


def test_panel_never_frees_the_weights_of_results_it_was_given(tmp_path):
    panel = cu.lab_panel(tmp_path / "r.csv", keep_runs=3)
    given = [_fake_result(i) for i in range(7)]
    held = [(r.state, r.start_state) for r in given]
    for r in given:
        panel.add_result(r)
    for r, (state, start) in zip(given, held):  # the caller's objects are exactly as they were
        assert r.state is state and r.start_state is start, f"the panel changed {r.config.name}"
        assert torch.equal(r.state["conv.weight"], torch.full((2, 2), float(r.config.name.split()[1])))
    # the panel itself lists (and holds weights for) only its latest three runs, plus the pretrained start
    assert len(panel.run_a.options) == len(panel.run_b.options) == 3 + 1
    assert [r.state is not None for r in panel.results] == [False] * 4 + [True] * 3
    assert all(mine is not theirs for mine, theirs in zip(panel.results, given))
    assert panel.run_b.value == 6 and panel.run_a.value == 5


@pytest.mark.parametrize("keep_runs", [0, -1, 2.5])
def test_panel_rejects_a_keep_runs_that_keeps_nothing(keep_runs, tmp_path):
    with pytest.raises(ValueError, match="keep_runs"):
        cu.lab_panel(tmp_path / "r.csv", keep_runs=keep_runs)


def test_help_describes_exactly_the_options_there_are():
    for key, texts in lab.HELP.items():
        assert set(texts) == set(lab.CHOICES[key]), key


def test_run_lab_with_another_norm_layer_trains_it_and_logs_the_choice(tmp_path):
    path = tmp_path / "results_lab.csv"
    config = cu.LabConfig(log_path=str(path), norm_layer="groupnorm", freezing="head+bn", **TINY)
    assert "norm=groupnorm" in config.label()
    result = cu.run_lab(config)
    row = cu.read_results(path)[0]
    assert row["norm_layer"] == "groupnorm" and row["run_id"] == result.row["run_id"]
    start, end = result.start_state, result.state
    assert "layer1.0.bn1.weight" in end and "layer1.0.bn1.running_mean" not in end  # GroupNorm: no statistics
    assert not torch.equal(start["layer1.0.bn1.weight"], end["layer1.0.bn1.weight"]), "head+bn trains GN's gamma"
    assert torch.equal(start["layer1.0.conv1.weight"], end["layer1.0.conv1.weight"]), "head+bn freezes the convs"
    panel = cu.lab_panel(path)
    assert "groupnorm" in panel.controls["norm_layer"].options and panel.config().norm_layer == "batchnorm"
