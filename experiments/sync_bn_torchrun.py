"""Synchronized BN by hand against full-batch BN, with the processes started by ``torchrun``.

The check the lesson runs from the notebook through ``cu.spawn`` (``cu.check_sync_bn_against_full_batch``),
here as a script: torchrun starts N copies, each reads its rank from the environment (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT, set by torchrun), runs its shard of the batch, and rank 0
gathers the results, compares them with ``nn.BatchNorm2d`` on the whole batch, prints the table
and exits with status 1 if any row is off (torchrun then reports the failure).

    torchrun --nproc_per_node 2 experiments/sync_bn_torchrun.py
    torchrun --nproc_per_node 4 experiments/sync_bn_torchrun.py --shard-sizes 5 3 0 2 --offset 1e4
    torchrun --nproc_per_node 2 experiments/sync_bn_torchrun.py --layer per-shard   # plain BN: fails, as it should

(``python -m torch.distributed.run`` is the same program as ``torchrun``.) Gloo backend, CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import course_utils as cu  # noqa: E402
from course_utils import distributed as D  # noqa: E402

LAYERS = {"sync": cu.SyncBatchNorm2d, "per-shard": cu.BatchNorm2d}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", choices=list(LAYERS), default="sync",
                        help="sync: cu.SyncBatchNorm2d; per-shard: cu.BatchNorm2d on each shard (should fail)")
    parser.add_argument("--batch-size", type=int, default=8, help="the whole batch, split evenly (see --shard-sizes)")
    parser.add_argument("--shard-sizes", type=int, nargs="+", help="images per rank, one number per process")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="training steps before the eval-mode check")
    parser.add_argument("--offset", type=float, default=0.0, help="added to the data (1e4: large mean, small spread)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if "RANK" not in os.environ:
        parser.error("RANK is not set: start this script with torchrun --nproc_per_node N (or "
                     "python -m torch.distributed.run), which sets RANK, WORLD_SIZE and the rendezvous address")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo")  # env:// rendezvous: MASTER_ADDR and MASTER_PORT from torchrun
    try:
        dtype = getattr(torch, args.dtype)
        # Every rank builds the same case from the seed, so only the results travel.
        case = D.make_sync_bn_case(world_size, batch_size=args.batch_size, channels=args.channels, steps=args.steps,
                                   offset=args.offset, shard_sizes=args.shard_sizes, dtype=dtype, seed=args.seed)
        mine = D.run_sync_bn_rank(rank, world_size, LAYERS[args.layer], case)
        gathered = [None] * world_size if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if rank != 0:
            return 0
        rtol, atol = D.SYNC_BN_TOLERANCES[dtype]
        print(f"{LAYERS[args.layer].__name__} on {world_size} torchrun processes (shards of "
              f"{', '.join(map(str, case.shard_sizes))} images, {args.dtype}"
              f"{f', offset {args.offset:g}' if args.offset else ''}) vs nn.BatchNorm2d on the whole batch:")
        rows = D.compare_with_full_batch(gathered, D.full_batch_reference(case), rtol=rtol, atol=atol)
        bad = [row.name for row in rows if not row.ok]
        print(f"FAILED: {', '.join(bad)} differ beyond rtol={rtol:g}, atol={atol:g}" if bad
              else f"all {len(rows)} quantities match (rtol={rtol:g}, atol={atol:g})", flush=True)
        return 1 if bad else 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
