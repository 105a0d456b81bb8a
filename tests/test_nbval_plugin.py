"""course_utils.nbval_plugin: the second round in quick mode, and keeping what the first round ran.

``make test-full`` runs every notebook under nbval in full mode with ``--nbval-again-quick`` (each
code cell once more, in the same kernel, in quick mode) and ``--nbval-save-executed`` (the site is
built from what the first round wrote; tests/test_site.py checks that half).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat


def _nbval(folder: Path, *args: str, quick: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COURSE_QUICK"}
    if quick:
        env["COURSE_QUICK"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:xdist",
           "-p", "course_utils.nbval_plugin", "--nbval-lax", *args]
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)


def _write(folder: Path, name: str, cells: list[str]) -> None:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · One"),
                                                   *map(nbformat.v4.new_code_cell, cells)]), str(folder / name))


def test_the_second_round_runs_every_cell_again_in_quick_mode_in_the_same_kernel(tmp_path):
    _write(tmp_path, "01_one.ipynb", [
        "import course_utils as cu\nQUICK = cu.quick_mode()\nrounds = globals().get('rounds', 0) + 1",
        # the first round in full mode, the second in quick mode, in one kernel (rounds carries over)
        "assert QUICK == (rounds == 2), (QUICK, rounds)\nopen('rounds.txt', 'a').write(f'{rounds} {QUICK}\\n')",
    ])
    result = _nbval(tmp_path, "--nbval-again-quick", "--nbval-save-executed", str(tmp_path / "out"), "01_one.ipynb")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "5 passed" in result.stdout, result.stdout[-3000:]  # 2 cells, the switch, 2 cells again
    assert (tmp_path / "rounds.txt").read_text() == "1 False\n2 True\n"
    saved = nbformat.read(tmp_path / "out" / "01_one.ipynb", as_version=4)
    assert len(saved.cells) == 3 and saved.metadata["course_run"]["mode"] == "full"  # the first round only


def test_a_cell_that_needs_a_fresh_kernel_fails_the_second_round(tmp_path):
    _write(tmp_path, "01_one.ipynb", ["assert 'ran' not in globals(), 'ran twice'\nran = True"])
    result = _nbval(tmp_path, "--nbval-again-quick", "01_one.ipynb")
    assert result.returncode != 0 and "1 failed, 2 passed" in result.stdout, result.stdout[-3000:]
    assert "ran twice" in result.stdout
    without = _nbval(tmp_path, "01_one.ipynb")  # one round: nothing to see
    assert without.returncode == 0 and "1 passed" in without.stdout, without.stdout[-3000:]


def test_each_notebook_gets_its_own_second_round(tmp_path):
    for name in ("01_one.ipynb", "02_two.ipynb"):
        _write(tmp_path, name, [f"print({name!r})"])
    result = _nbval(tmp_path, "--nbval-again-quick", "01_one.ipynb", "02_two.ipynb")
    assert result.returncode == 0 and "6 passed" in result.stdout, result.stdout[-3000:]
    order = [line.split(" ")[0][:6] for line in result.stdout.splitlines() if " PASSED" in line]
    assert order == ["01_one"] * 3 + ["02_two"] * 3, order


def test_a_skipped_first_cell_does_not_skip_the_switch_to_quick_mode(tmp_path):
    _write(tmp_path, "01_one.ipynb", ["# NBVAL_SKIP\nraise SystemExit('a slow demonstration')",
                                      "import course_utils as cu\nprint('quick', cu.quick_mode())"])
    result = _nbval(tmp_path, "--nbval-again-quick", "01_one.ipynb")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 passed, 2 skipped" in result.stdout, result.stdout[-3000:]
    switch = next(line for line in result.stdout.splitlines() if "to quick mode" in line)
    assert "PASSED" in switch, switch
