"""What synchronized BN costs per data-parallel training step, on CPU processes of one machine.

    python benchmarks/sync_bn_speed.py [--processes 2 4] [--steps 10] [--image-size 64] [--batch-per-rank 16]

For each number of processes, starts them with ``course_utils.spawn`` (gloo, one thread
each) and times training steps of a ResNet-18 wrapped in ``DistributedDataParallel``
(``course_utils.ddp_step_times``: forward, backward with DDP's gradient all-reduce, SGD
step), three ways: without BN, with plain ``nn.BatchNorm2d`` (each process normalizes its
own shard) and with every BN layer converted to ``course_utils.SyncBatchNorm2d`` (one
all-gather per layer forward, one all-reduce per layer backward). The three run side by
side in one invocation, so their ratios are comparable; a step's time is that of the
slowest process, and the median over steps is reported. More processes than cores share
the cores: read the ratio within a row, not the times across rows. The last line is the
table as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import course_utils as cu  # noqa: E402

MODES = ("none", "plain", "sync")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 4], help="world sizes to time")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-per-rank", type=int, default=16)
    args = parser.parse_args(argv)
    if min(args.processes) < 1 or args.steps < 1:
        parser.error("--processes and --steps must be positive")
    print(f"ResNet-18, DDP over gloo, {args.batch_per_rank} images of {args.image_size}x{args.image_size} per process, "
          f"{args.steps} timed steps; {os.cpu_count()} CPU cores, one thread per process, torch {torch.__version__}")
    print(f"{'processes':>9} | {'no BN s/step':>12} | {'plain BN':>9} | {'sync BN':>9} | {'sync/plain':>10} | {'plain/none':>10}")
    rows = []
    for world_size in args.processes:
        medians = {}
        for mode in MODES:
            timed = partial(cu.ddp_step_times, steps=args.steps, warmup=args.warmup,
                            batch_per_rank=args.batch_per_rank, image_size=args.image_size)
            per_rank = cu.spawn(timed, world_size, mode, timeout_s=1800)
            medians[mode] = statistics.median(max(step) for step in zip(*per_rank))
        row = {"processes": world_size, **{f"{m} s/step": round(medians[m], 4) for m in MODES},
               "sync/plain": round(medians["sync"] / medians["plain"], 3),
               "plain/none": round(medians["plain"] / medians["none"], 3)}
        rows.append(row)
        print(f"{world_size:>9} | {medians['none']:>12.3f} | {medians['plain']:>9.3f} | {medians['sync']:>9.3f} | "
              f"{row['sync/plain']:>10.2f} | {row['plain/none']:>10.2f}", flush=True)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
