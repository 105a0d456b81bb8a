"""The complete batch-size grid of notebook 08: fine-tuning accuracy against batch size, per norm layer.

Runs :func:`course_utils.run_batch_size_grid` (the code the notebook runs live, on a smaller grid)
and writes a CSV whose first lines record the date, command, device, threads and versions.
Notebook 08 plots ``experiments/batch_size_grid.csv`` beside its live grid when the file exists.

    python experiments/batch_size_grid.py                      # all six sizes, five seeds, 40 steps
    python experiments/batch_size_grid.py --sizes 2 8 32 --seeds 0 1 2 --steps 100 --out /tmp/grid.csv

It uses full mode's pretrained model (the course pretrains it on first use, about ten minutes on a CPU),
or quick mode's with COURSE_QUICK=1 (for trying the script; the CSV records the mode). On a GPU the
complete grid takes minutes; on two CPU cores about half an hour.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import course_utils as cu  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=list(cu.GRID_KINDS), choices=list(cu.GRID_KINDS),
                        metavar="KIND", help=f"norm layers to compare (default: all of {list(cu.GRID_KINDS)})")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(cu.BATCH_SIZES), help="fine-tuning batch sizes")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run (batch_size * steps images)")
    parser.add_argument("--n-val", type=int, default=2000, help="target test images per evaluation")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "batch_size_grid.csv")
    args = parser.parse_args(argv)
    if min(args.sizes) < 2:
        parser.error("batch sizes must be at least 2: BN in train mode cannot normalize one value per channel "
                     "(ResNet-18's last stage sees 1x1 maps at 32x32 input)")

    info = cu.grid_provenance(" ".join(["python", "experiments/batch_size_grid.py", *(argv or sys.argv[1:])]))
    runs = len(args.kinds) * len(args.sizes) * len(args.seeds)
    print(f"{runs} runs on {info['device']}; writing {args.out}", flush=True)
    start, done = time.perf_counter(), []

    def report(row: dict) -> None:
        done.append(row)
        print(f"[{len(done)}/{runs}] {row['kind']:<22} batch {row['batch_size']:>2} seed {row['seed']}: "
              f"val_acc {row['val_acc']:.3f} ({row['seconds']:.1f} s; {time.perf_counter() - start:.0f} s so far)",
              flush=True)

    rows = cu.run_batch_size_grid(args.kinds, args.sizes, args.seeds, steps=args.steps, n_val=args.n_val,
                                  lr=args.lr, on_run=report)
    info["seconds"] = f"{time.perf_counter() - start:.0f}"
    path = cu.write_grid_csv(args.out, rows, info)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
