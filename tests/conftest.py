"""Shared test settings.

Under pytest-xdist every worker, and every kernel or subprocess a test starts,
shares the machine's few cores (CI has two). PyTorch's default of one thread per
core would then oversubscribe them, and OpenMP threads waiting on each other
slow everything down many times over; one thread per process avoids that.
"""
from __future__ import annotations

import os

import torch


def pytest_configure(config) -> None:
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by kernels, JupyterLab and subprocesses
        torch.set_num_threads(1)
