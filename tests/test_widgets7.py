"""The widget notebooks once more with ipywidgets 7.7.1, the version Colab ships.

`.ci/widgets7.sh` builds a thin overlay environment on .venv holding only
ipywidgets 7.7.1 (and what that version needs), checks that the pin resolves with
the course's constraints, and runs every notebook that uses widgets under nbval.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.notebooks
def test_widget_notebooks_pass_with_ipywidgets_7():
    env = dict(os.environ, COURSE_QUICK="1", MPLBACKEND="agg")
    result = subprocess.run(["bash", str(ROOT / ".ci" / "widgets7.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"ipywidgets 7.7.1 run failed:\n{out[-8000:]}"
    assert "ipywidgets 7.7.1" in out, out[-2000:]
    assert "nothing to run" in out or " passed" in out, out[-2000:]
