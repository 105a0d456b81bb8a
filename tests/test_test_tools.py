"""The two helpers of make test's own plumbing: README's run times (notebook_times.py) and the time
table printed at the end (report_times.py)."""
from __future__ import annotations

from pathlib import Path

import notebook_times as T
import report_times as R

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_readme_times_every_notebook():
    minutes = T.full_mode_minutes()
    assert set(minutes) == {p.name for p in NOTEBOOKS}, "README's syllabus gives every lesson a full-mode run time"
    assert all(m > 0 for m in minutes.values())


def test_longest_first_and_lightest():
    readme = ("| [01 a](notebooks/01_a.ipynb) | x | 1 | 5 min | < 1 min |\n"
              "| [02 b](notebooks/02_b.ipynb) | x | 1 | 5 min | 4.5 min |\n"
              "| [03 c](notebooks/03_c.ipynb) | x | 1 | 5 min | 1 min (+ 3 min to pretrain) |\n")
    minutes = T.full_mode_minutes(readme)
    assert minutes == {"01_a.ipynb": 0.5, "02_b.ipynb": 4.5, "03_c.ipynb": 1.0}
    assert T.longest_first(["01_a.ipynb", "02_b.ipynb", "03_c.ipynb", "04_new.ipynb"], minutes) == \
        ["04_new.ipynb", "02_b.ipynb", "03_c.ipynb", "01_a.ipynb"]  # a lesson not timed yet goes first
    assert T.lightest(NOTEBOOKS[:3], {NOTEBOOKS[1].name: 0.1}) == NOTEBOOKS[1]
    assert T.lightest([]) is None


def test_the_time_table_reads_each_pass(tmp_path):
    (tmp_path / "quick.xml").write_text(
        '<testsuites><testsuite time="100.0">'
        '<testcase classname="tests.test_layers" name="test_a" time="1.5"/>'
        '<testcase classname="tests.test_notebooks" '
        'name="test_the_solution_gets_full_marks_on_colab_versions[03_why_normalization_helps]" time="34.0"/>'
        '<testcase classname="tests.test_notebooks" '
        'name="test_the_student_version_gets_zero_failing_only_at_its_checks[03_why_normalization_helps]" time="45.0"/>'
        '</testsuite></testsuites>')
    (tmp_path / "full.xml").write_text(
        '<testsuites><testsuite time="200.0">'
        '<testcase classname="03_why_normalization_helps.ipynb" file="03_why_normalization_helps.ipynb" '
        'name="Cell 0" time="120.0"/>'
        '<testcase classname="03_why_normalization_helps.ipynb" file="03_why_normalization_helps.ipynb" '
        'name="Cell 0 (again, quick)" time="20.0"/>'
        '</testsuite></testsuites>')
    data = R.collect(tmp_path)
    assert data["walls"] == {"quick": 100.0, "full": 200.0}
    assert data["per_notebook"]["03_why_normalization_helps"] == {
        "full mode": 120.0, "again, quick": 20.0, "solution graded (Colab)": 34.0, "student version graded": 45.0}
    assert data["per_file"][("quick", "tests/test_notebooks.py")] == [2, 79.0]
    table = R.format_tables(data)
    assert "all passes" in table and "03_why_normalization_helps" in table and "tests/test_layers.py (quick)" in table
    assert R.main([str(tmp_path / "nothing-here")]) == 1
