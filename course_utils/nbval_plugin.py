"""pytest plugin for notebooks run under nbval on a busy machine (``-p course_utils.nbval_plugin``).

When a cell has finished, nbval reads the kernel's output messages and gives up
when one takes more than five seconds to arrive (``IPyNbCell.output_timeout``, not
an option of nbval 0.11). On two cores shared by two kernels, a cell that
streamed a progress bar can take longer to flush its last messages, and nbval
then fails a cell that passed ("Timeout of 5 seconds exceeded waiting for
output"; seen once on the fine-tuning lab in CI). This plugin raises that wait only; the
limit on a cell's own run time (``--nbval-cell-timeout``) is unchanged.
"""
from __future__ import annotations

OUTPUT_WAIT_S = 120


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if hasattr(item, "output_timeout"):  # nbval's IPyNbCell
            item.output_timeout = OUTPUT_WAIT_S
