"""JupyterLab in headless Chromium: run whole notebooks as a student would and look at the page.

Starts ``jupyter lab`` on 127.0.0.1 (free port, token) in a temporary copy of
notebooks/ with COURSE_QUICK=1, opens the fine-tuning lab (10_*.ipynb) and one
exercise notebook, runs all cells through the Run menu, and checks that widgets
render, plots appear and no cell shows an error. Screenshots go to
test-artifacts/ (git-ignored). Uses Debian's /usr/bin/chromium; never downloads
a browser.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from course_utils.train import read_results
from notebook_times import lightest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# One notebook in quick mode takes about a minute alone on 2 cores. Under CI it shares
# those cores with the other xdist worker, and on a fresh clone it may also wait for the
# one-time pretraining of the course's source model (about 70 s alone), so allow plenty.
RUN_TIMEOUT_S = 600
LAB_PREFIX = "10_"  # the fine-tuning lab

if not CHROMIUM.exists():
    pytest.skip("/usr/bin/chromium is missing (apt-get install chromium); CI installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exercise_notebook() -> Path | None:
    """The lightest notebook with exercises by README's measured run times, the lab excepted: the test
    above runs the lab already."""
    found = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        if re.search(r"^# EXERCISE ", code, re.M) and not path.name.startswith(LAB_PREFIX):
            found.append(path)
    return lightest(found)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab serving a copy of notebooks/; yields (base url, token, root folder)."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(NOTEBOOKS, root / "notebooks")
    port, token = free_port(), "course-test-token"
    # Render every cell (JupyterLab 4 otherwise only renders the cells in view), no news pop-up.
    settings = root / ".settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none", "autoStartDefaultKernel": True}))
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false"}))
    env = dict(os.environ, COURSE_QUICK="1", JUPYTER_CONFIG_DIR=str(root / ".config"),
               JUPYTER_RUNTIME_DIR=str(root / ".runtime"), JUPYTER_DATA_DIR=str(root / ".data"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={root / '.workspaces'}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.news_url=None", "--ServerApp.allow_root=True", f"--LabApp.user_settings_dir={settings}"]
    log = open(root / "jupyter.log", "w")
    server = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("jupyter lab did not start:\n" + (root / "jupyter.log").read_text()[-3000:])
                time.sleep(0.5)
        yield base, token, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def wait_all_cells_ran(page) -> None:
    """Every code cell gets a number in its prompt once it has run ("[*]" while it runs, "[ ]" before)."""
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=RUN_TIMEOUT_S * 1000,
        polling=1000,
    )


def run_notebook_in_lab(browser, lab, name: str) -> tuple[object, dict]:
    """Open notebooks/<name> in JupyterLab, Run > Run All Cells, wait, save; returns (page, saved notebook)."""
    base, token, root = lab
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/lab/tree/notebooks/{name}?token={token}&reset")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
    select = page.locator(".jp-Dialog button:has-text('Select')")  # asked only when the setting is ignored
    try:
        select.click(timeout=5_000)
    except sync_api.TimeoutError:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    page.click(".lm-MenuBar-item:has-text('Run')")
    page.click(".lm-Menu-item:has-text('Run All Cells')")
    try:
        wait_all_cells_ran(page)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"browser-{Path(name).stem}-timeout.png"), full_page=True)
        raise
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    page.wait_for_timeout(1500)  # let widget views and images finish rendering
    stem = Path(name).stem
    page.screenshot(path=str(ARTIFACTS / f"browser-{stem}.png"), full_page=False)
    page.keyboard.press("Control+s")
    path = root / "notebooks" / name
    before = path.stat().st_mtime
    deadline = time.monotonic() + 30
    while path.stat().st_mtime == before and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    saved = json.loads(path.read_text())
    return page, saved


def assert_ran_cleanly(page, saved: dict, name: str, *, widgets: bool):
    unsaved = [n for n, c in enumerate(saved["cells"]) if c["cell_type"] == "code" and c["execution_count"] is None]
    assert unsaved == [], f"{name}: the saved notebook has cells that did not run (was it saved?): {unsaved}"
    errors = [(n, o.get("ename"), o.get("evalue")) for n, c in enumerate(saved["cells"])
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == [], f"{name}: cells with error outputs: {errors}"
    text = page.inner_text(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    assert "Error displaying widget" not in text, f"{name}: a widget failed to render (see test-artifacts/)"
    assert "Traceback" not in text
    images = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img").count()
    assert images >= 1, f"{name}: no plot (img) in the outputs"
    if widgets:
        views = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output .jupyter-widgets").count()
        assert views >= 1, f"{name}: no widget view rendered"


def test_fine_tuning_lab_runs_in_jupyterlab(request):
    found = sorted(NOTEBOOKS.glob(f"{LAB_PREFIX}*.ipynb"))
    if not found:
        pytest.skip("notebooks/10_*.ipynb (the fine-tuning lab) does not exist yet")
    browser, lab = request.getfixturevalue("browser"), request.getfixturevalue("lab")
    page, saved = run_notebook_in_lab(browser, lab, found[0].name)
    try:
        assert_ran_cleanly(page, saved, found[0].name, widgets=True)
        # the panel with the mouse: a norm layer other than the default, then Run; the log gets that run
        log = lab[2] / "notebooks" / "results_lab.csv"
        rows_before = len(read_results(log))
        # the outermost widget holding the panel's title: the whole panel
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jupyter-widgets:has-text('Fine-tuning lab')").first
        panel.locator(".widget-dropdown:has(label:has-text('norm layers')) select").select_option("groupnorm")
        panel.locator("button.widget-button").filter(has_text=re.compile(r"^\s*Run\s*$")).click()  # not "Compare runs"
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while len(read_results(log)) == rows_before and time.monotonic() < deadline:
            page.wait_for_timeout(1000)
        rows = read_results(log)
        page.screenshot(path=str(ARTIFACTS / "browser-lab-panel-run.png"), full_page=False)
        assert len(rows) == rows_before + 1, "clicking Run in the panel added no row to the lab's log"
        assert rows[-1]["norm_layer"] == "groupnorm", rows[-1]
        assert "Not started" not in panel.inner_text()
    finally:
        page.close()


def test_exercise_notebook_runs_in_jupyterlab(request):
    path = exercise_notebook()
    if path is None:
        pytest.skip("no notebook with exercises in notebooks/ yet")
    browser, lab = request.getfixturevalue("browser"), request.getfixturevalue("lab")
    page, saved = run_notebook_in_lab(browser, lab, path.name)
    try:
        assert_ran_cleanly(page, saved, path.name, widgets=False)
    finally:
        page.close()
