"""The batch-size grid of notebook 08 (course_utils/experiments.py) and its script."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402

import course_utils as cu  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _row(kind: str, batch_size: int, seed: int, val_acc: float) -> dict:
    norm_layer, bn_mode = cu.GRID_KINDS[kind]
    return {"kind": kind, "norm_layer": norm_layer, "bn_mode": bn_mode, "batch_size": batch_size, "seed": seed,
            "steps": 5, "images": 5 * batch_size, "lr": 1e-4, "val_acc": val_acc, "val_loss": 1.0, "seconds": 0.5}


def test_grid_config_takes_the_same_steps_at_every_batch_size():
    for batch_size in cu.BATCH_SIZES:
        config = cu.experiments.grid_config("GroupNorm(32, C)", batch_size, 0, steps=7, n_val=10)
        assert config.n_train // config.batch_size * config.epochs == 7
        assert (config.norm_layer, config.bn_mode, config.dataset) == ("groupnorm", "train", "target")
        config.validate()
    with pytest.raises(ValueError, match="unknown grid kind"):
        cu.experiments.grid_config("batchnorm", 2, 0, steps=1, n_val=1)


def test_every_grid_kind_is_a_valid_lab_configuration():
    for kind in cu.GRID_KINDS:
        cu.experiments.grid_config(kind, 2, 0, steps=1, n_val=1).validate()


def test_grid_summary_gives_mean_and_sample_std_per_point():
    rows = [_row("BN, train mode", 2, s, acc) for s, acc in enumerate((0.2, 0.4, 0.6))]
    rows.append(_row("BN, train mode", 8, 0, 0.9))
    summary = cu.grid_summary(rows)
    mean, std, n = summary[("BN, train mode", 2)]
    assert (n, round(mean, 9), round(std, 9)) == (3, 0.4, 0.2)
    assert summary[("BN, train mode", 8)] == (0.9, 0.0, 1)


def test_csv_round_trip_keeps_rows_and_provenance(tmp_path):
    rows = [_row(kind, bs, 0, 0.5 + 0.01 * bs) for kind in cu.GRID_KINDS for bs in (2, 32)]
    info = cu.grid_provenance("python experiments/batch_size_grid.py --steps 5")
    assert {"date", "command", "mode", "device", "threads", "python", "torch", "torchvision"} <= set(info)
    path = cu.write_grid_csv(tmp_path / "sub" / "grid.csv", rows, info)
    assert path.read_text().startswith("# date: ")
    back, info_back = cu.read_grid_csv(path)
    assert info_back == info
    assert back == [{k: r[k] for k in cu.experiments.GRID_COLUMNS} for r in rows]
    assert isinstance(back[0]["batch_size"], int) and isinstance(back[0]["val_acc"], float)


def test_reading_a_csv_that_is_not_a_grid_says_what_is_missing(tmp_path):
    path = tmp_path / "results_lab.csv"
    path.write_text("time,label,val_acc\n2026-01-01,x,0.5\n")
    with pytest.raises(ValueError, match=r"not a batch-size grid.*batch_size.*batch_size_grid\.py"):
        cu.read_grid_csv(path)


def test_plot_draws_one_line_per_kind_with_error_bars():
    rows = [_row(kind, bs, s, 0.5 + 0.1 * s) for kind in ("BN, train mode", "GroupNorm(1, C)")
            for bs in (2, 8) for s in (0, 1)]
    fig, ax = plt.subplots()
    assert cu.plot_batch_size_grid(ax, rows) is ax
    labels = [t.get_text() for t in ax.legend().get_texts()]
    assert labels == ["BN, train mode", "GroupNorm(1, C)"]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "fine-tuning batch size"
    plt.close(fig)


@pytest.fixture()
def quick_env(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "1")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")


def test_a_tiny_grid_runs_every_point_once(quick_env):
    seen = []
    rows = cu.run_batch_size_grid(["BN, frozen statistics", "GroupNorm(1, C)"], (2, 4), (0,), steps=2, n_val=20,
                                  on_run=seen.append)
    assert rows == seen and len(rows) == 4
    assert [(r["kind"], r["batch_size"]) for r in rows] == [("BN, frozen statistics", 2), ("BN, frozen statistics", 4),
                                                            ("GroupNorm(1, C)", 2), ("GroupNorm(1, C)", 4)]
    assert all(r["steps"] == 2 and r["images"] == 2 * r["batch_size"] for r in rows)
    assert all(0.0 <= r["val_acc"] <= 1.0 and math.isfinite(r["val_loss"]) for r in rows)


def test_the_script_writes_a_csv_the_notebook_can_read(tmp_path):
    out = tmp_path / "grid.csv"
    env = dict(os.environ, COURSE_QUICK="1", COURSE_DEVICE="cpu", MPLBACKEND="agg")
    args = [sys.executable, str(ROOT / "experiments" / "batch_size_grid.py"), "--kinds", "FrozenBatchNorm2d",
            "--sizes", "2", "4", "--seeds", "0", "--steps", "2", "--n-val", "20", "--out", str(out)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[2/2]" in done.stdout and f"wrote {out}" in done.stdout
    rows, info = cu.read_grid_csv(out)
    assert [(r["kind"], r["batch_size"]) for r in rows] == [("FrozenBatchNorm2d", 2), ("FrozenBatchNorm2d", 4)]
    assert info["mode"] == "quick" and "--steps 2" in info["command"] and info["torch"]


def test_the_script_refuses_a_batch_of_one():
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "batch_size_grid.py"), "--sizes", "1", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "at least 2" in done.stderr


def test_the_notebook_plots_a_complete_grid_beside_the_live_one(tmp_path, capsys):
    """Notebook 08's plot cell, run on a written CSV: two panels, the second titled from the file's provenance."""
    from notebook_cells import code_cell, run_cells

    source = code_cell(ROOT / "notebooks" / "08_norm_in_the_network.ipynb", starts="complete, info = cu.read_grid_csv(")
    live = [_row(kind, bs, 0, 0.5) for kind in cu.GRID_KINDS for bs in (2, 32)]
    complete = [_row(kind, bs, s, 0.6) for kind in cu.GRID_KINDS for bs in cu.BATCH_SIZES for s in (0, 1)]
    path = cu.write_grid_csv(tmp_path / "batch_size_grid.csv", complete,
                             cu.grid_provenance("python experiments/batch_size_grid.py"))
    namespace = {"cu": cu, "plt": plt, "GRID_CSV": path, "live": live, "GRID": {"steps": 5, "seeds": (0,)}}
    run_cells(source.replace("plt.show()", ""), namespace=namespace)
    axes = plt.gcf().axes
    assert len(axes) == 2 and "5 steps, 2 seeds" in axes[1].get_title()
    assert "complete grid: made" in capsys.readouterr().out
    assert len(axes[1].get_legend_handles_labels()[1]) == len(cu.GRID_KINDS)
    plt.close("all")
    path.unlink()
    run_cells(source.replace("plt.show()", ""), namespace=namespace)
    assert len(plt.gcf().axes) == 1 and "experiments/batch_size_grid.py" in capsys.readouterr().out
    plt.close("all")
