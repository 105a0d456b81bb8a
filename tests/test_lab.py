"""The lab from code or a script: course_utils.lab runs without ipywidgets installed."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter: this one has usually imported ipywidgets already (the panel tests).
# sys.modules["ipywidgets"] = None makes every later `import ipywidgets` raise ImportError, as if not installed.
SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["ipywidgets"] = None

    import course_utils.lab as lab
    import course_utils as cu

    log = sys.argv[1]
    config = lab.LabConfig(log_path=log, n_train=32, n_val=32, batch_size=16, epochs=1).validate()
    result = lab.run_lab(config, progress=False, keep_weights=False)
    rows = lab.read_results(log)
    assert [r["run_id"] for r in rows] == [result.row["run_id"]], rows
    assert cu.run_lab is lab.run_lab and cu.LabConfig is lab.LabConfig
    # the block is real: the panel, which does need ipywidgets, cannot be built
    try:
        cu.lab_panel(log)
    except ImportError:
        print("lab ran without ipywidgets")
    else:
        raise AssertionError("ipywidgets was importable; the test would prove nothing")
""")


def test_lab_imports_and_runs_without_ipywidgets(tmp_path):
    # the cached quick checkpoint of the course's own model, on the CPU, as in test_widgets.py
    env = dict(os.environ, COURSE_QUICK="1", COURSE_PRETRAINED="course", COURSE_DEVICE="cpu", MPLBACKEND="agg")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "results_lab.csv")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "lab ran without ipywidgets" in result.stdout, out[-4000:]
