"""The benchmark scripts still run and report what the README quotes from them.

Tiny sizes, so this checks that the scripts work and print well-formed figures,
never how fast anything is (speed is read from the scripts' own output, not
asserted in a test).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True,
                          text=True, timeout=600, cwd=REPO)


def run_benchmark(name: str, *args: str) -> tuple[dict, str]:
    """Run a benchmark that must succeed; returns its final JSON line, parsed, and its whole output."""
    proc = run_script(name, *args)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last), proc.stdout


def test_layers_speed_reports_a_ratio_for_every_layer():
    result, text = run_benchmark("layers_speed.py", "--repeats", "1", "--threads", "1", "--shape", "2", "32", "6", "6",
                                 "--net-batch", "2", "--net-size", "32")
    assert result["shape"] == [2, 32, 6, 6] and result["repeats"] == 1
    names = [row["layer"] for row in result["results"]]
    assert len(names) == 8 and any("GRN" in n for n in names) and any("BatchNorm2d" in n for n in names)
    for row in result["results"]:
        ours, ref = row["forward_ms"]
        assert ours > 0 and ref > 0 and row["forward_ratio"] > 0 and row["forward_backward_ratio"] > 0
        assert row["layer"] in text  # the printed table has the row too
    network = result["network"]
    assert network["batch"] == 2 and len(network["results"]) == 9
    assert network["results"][0]["norm"] == "BatchNorm2d" and network["results"][0]["ratio_to_bn"] == 1.0
    assert all(row["images_per_s"] > 0 and row["norm"] in text for row in network["results"])
    assert any(row["norm"].startswith("by hand") for row in network["results"])


def test_layers_speed_rejects_a_shape_groupnorm_cannot_take():
    proc = run_script("layers_speed.py", "--shape", "2", "3", "4", "4")
    assert proc.returncode != 0 and "multiple of 32" in proc.stderr


def test_finetune_speed_compares_three_pipelines_on_real_data():
    import course_utils as cu
    try:
        cu.load_dataset("fashion-mnist", train=True)
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST is not available here: {err}")
    result, text = run_benchmark("finetune_speed.py", "--steps", "2", "--warmup", "1", "--rounds", "1",
                                 "--batch-size", "16", "--workers", "0", "--device", "cpu")
    for key in ("dataloader_img_per_s", "course_img_per_s", "model_only_img_per_s"):
        assert result[key] > 0, key
    assert result["ratio_vs_dataloader"] == pytest.approx(
        result["course_img_per_s"] / result["dataloader_img_per_s"], rel=0.01)
    assert 0.0 <= result["data_overhead"] < 1.0 and result["amp"] is False and result["steps"] == 2
    assert "course / DataLoader" in text


@pytest.mark.notebooks
def test_grading_throughput_grades_every_copy_and_reports_a_rate():
    fixture = REPO / "tests" / "fixtures" / "solutions" / "tiny_exercises.ipynb"
    result, text = run_benchmark("grading_throughput.py", "--notebook", str(fixture), "--copies", "2",
                                 "--workers", "2", "--timeout", "60")
    assert result["graded"] == 2 and result["per_minute"] > 0 and "submissions per minute" in text
    assert result["points"] == result["max_points"] // 2  # the solved copy has every point, the released one none


def test_sync_bn_speed_times_three_modes_per_world_size():
    result, text = run_benchmark("sync_bn_speed.py", "--processes", "2", "--steps", "1", "--warmup", "0",
                                 "--image-size", "32", "--batch-per-rank", "2")
    assert [row["processes"] for row in result] == [2] and "sync/plain" in text
    row = result[0]
    assert all(row[f"{mode} s/step"] > 0 for mode in ("none", "plain", "sync"))
    assert row["sync/plain"] == pytest.approx(row["sync s/step"] / row["plain s/step"], rel=1e-2)
