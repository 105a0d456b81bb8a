"""Batch norm across processes: a spawn helper for ``torch.distributed``, shard statistics, synchronized BN by hand.

In data-parallel training each of R processes (ranks) holds a shard of the batch. Plain BN
normalizes every shard with that shard's own statistics; synchronized BN normalizes it with the
statistics of the whole batch, which takes communication in the forward pass (the statistics)
and in the backward pass (two sums per channel, because every value of the batch moved the
shared mean and variance).

Forward, for each channel, with shard r holding n_r values (n_r = N_r·H·W), mean_r and the
sum of squared deviations M2_r = Σ_shard (x - mean_r)²:

    n    = Σ_r n_r
    mean = Σ_r n_r·mean_r / n
    M2   = Σ_r M2_r + Σ_r n_r·(mean_r - mean)²          (Chan, Golub & LeVeque's parallel formula)
    var  = M2 / n                                        (biased: what normalizing uses)

The one-pass alternative, all-reducing Σx and Σx² and taking E[x²] - E[x]², subtracts two
numbers of size mean², and loses about log10(mean²/var) of the dtype's digits (eight of
float64's sixteen at mean 1e4, std 1); :func:`sync_batch_stats_naive` shows it.

Backward, with g = dL/dy, x̂ = (x - mean)/sqrt(var + eps), sums over the whole batch:

    dL/dx = weight·invstd · (g - Σg / n - x̂ · Σ(g·x̂) / n)

so each rank all-reduces its shard's Σg and Σ(g·x̂) (2C numbers). The same two sums *of this
shard only* are the gradients of ``bias`` and ``weight``; data-parallel training (DDP) then
all-reduces the parameter gradients itself and divides by the world size (an average), as it does
for every other layer.

:func:`spawn` starts the R processes from a notebook or a script, on one machine, gloo backend
(CPU); ``experiments/sync_bn_torchrun.py`` runs the same check under ``torchrun``.
"""
from __future__ import annotations

import datetime
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd.function import once_differentiable

from .checks import Difference, compare, difference
from .layers._input import expect_channels, expect_rank
from .layers._params import (check_channel_vectors, compute_dtype, per_channel, scale_and_shift,
                             update_running_stats)
from .layers.batch_norm import BatchNorm2d, batch_norm2d

# ----------------------------------------------------------------------------- spawn


class DistributedRunError(RuntimeError):
    """A run of :func:`spawn` that failed: a rank raised, died, or the run timed out.

    Attributes:
        rank: the first rank seen failing (None for a timeout).
        exitcode: that rank's exit code when it died without returning (None otherwise).
        failures: rank -> what happened to it (the child's traceback text when it raised),
            for every rank seen failing before the others were stopped.
    """

    def __init__(self, message: str, *, rank: int | None = None, exitcode: int | None = None,
                 failures: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.rank = rank
        self.exitcode = exitcode
        self.failures = dict(failures or {})


class DistributedTimeoutError(DistributedRunError, TimeoutError):
    """The whole run took longer than ``timeout_s``; every process was stopped."""


class _PortInUse(Exception):
    """Rank 0 could not listen on the port chosen (someone took it after we picked it)."""


# After the first rank fails, wait this long for the others' own errors (a rank that died leaves
# its partner with a "connection closed" error, worth showing), then stop whoever is left: a rank
# blocked in a collective with a dead partner would otherwise wait for the full timeout.
_FAILURE_GRACE_S = 0.5
# After every rank has returned, how long its process may take to leave (destroy_process_group).
_EXIT_GRACE_S = 5.0
_PORT_ATTEMPTS = 3


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago: the one the OS picks when we bind to port 0.

    Another program may take it before rank 0 listens on it; :func:`spawn` then retries.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_start_method() -> str:
    """The start method :func:`spawn` uses unless told: "fork" on Linux (unless CUDA is in use here), else "spawn".

    fork copies this process, so ``fn`` can be a function defined in a notebook cell: a
    spawned child starts a fresh interpreter and must import ``fn`` by name, which fails for
    anything defined in ``__main__`` of a notebook. macOS and Windows lack a safe fork; and a
    process that has initialised CUDA cannot be forked (the child cannot use CUDA again).
    """
    if not sys.platform.startswith("linux"):
        return "spawn"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return "spawn"
    return "fork"


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    timeout_s: float = 120,
    start_method: str | None = None,
    port: int | None = None,
    threads_per_process: int | None = None,
) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes with ``torch.distributed`` initialised.

    Each process joins one process group (``backend``, rendezvous at 127.0.0.1:``port``, a free
    port by default) before ``fn`` runs, and destroys it afterwards. Returns the ranks' return
    values (which must pickle) in rank order: ``spawn(f, 2)`` is ``[f(0, 2), f(1, 2)]`` run
    side by side.

    Args:
        fn: called as ``fn(rank, world_size, *args)`` in each process. Under "spawn" it must be
            importable by name (defined in a module, not in a notebook cell).
        world_size: the number of processes R >= 1.
        backend: "gloo" (CPU tensors) or "nccl" (one GPU per rank).
        timeout_s: limit for the whole run, and for each collective (the process group's timeout).
        start_method: "fork" or "spawn"; None picks :func:`default_start_method`.
        port: the rendezvous port; None picks a free one (and retries on another if it is taken).
        threads_per_process: torch's intra-op threads in each process. Under "fork" always 1 (a
            forked child's OpenMP threads can deadlock); under "spawn" None shares this process's
            threads out, at least one each (R processes with all threads each would fight for the cores).

    Raises:
        DistributedRunError: a rank raised (the message names it and holds its traceback), or
            exited without returning (its exit code, or the signal that killed it), or the
            port was taken. :class:`DistributedTimeoutError` when the run passed ``timeout_s``.
            In every case all processes, and anything they started, are stopped first.
    """
    world_size = _as_world_size(world_size)
    if not dist.is_available():
        raise RuntimeError("spawn(): this PyTorch build has no torch.distributed (torch.distributed.is_available() "
                           "is False). Install a standard PyTorch build from pytorch.org.")
    if dist.is_initialized():
        raise RuntimeError("spawn(): a process group is already initialised in this process; spawn() starts "
                           "processes that set up their own. Call torch.distributed.destroy_process_group() first.")
    if timeout_s <= 0:
        raise ValueError(f"spawn(): timeout_s must be positive, got {timeout_s}.")
    method = start_method or default_start_method()
    if method not in mp.get_all_start_methods():
        raise ValueError(f"spawn(): start_method {method!r} is not available here; choose from "
                         f"{mp.get_all_start_methods()}.")
    if method == "fork":
        # GNU OpenMP (PyTorch's CPU threads on Linux) is not fork-safe: once this process has run a
        # parallel region, a forked child that starts one with more than one thread deadlocks
        # (seen here with torch 2.14: a matmul on 2 threads in the child never returns). One
        # thread per child is also what DataLoader's forked workers use, for the same reason.
        if threads_per_process not in (None, 1):
            raise ValueError(f"spawn(): threads_per_process={threads_per_process} needs start_method='spawn' (and "
                             f"fn defined in a module): forked processes must stay on one thread, because OpenMP "
                             f"threads deadlock in a child forked from a process that has used them.")
        threads = 1
    else:
        _check_importable(fn, method)
        threads = threads_per_process or max(1, torch.get_num_threads() // world_size)
    ctx = mp.get_context(method)
    deadline = time.monotonic() + timeout_s
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        try:
            return _run_once(ctx, fn, world_size, args, backend=backend, port=chosen, deadline=deadline,
                             timeout_s=timeout_s, threads=threads, start_method=method)
        except _PortInUse:
            if attempt == attempts:
                hint = ("pass another port, or port=None to let spawn() pick a free one" if port is not None
                        else f"{attempts} free ports in a row were taken before rank 0 could listen on them")
                raise DistributedRunError(f"spawn(): rank 0 could not listen on 127.0.0.1:{chosen}, the port is "
                                          f"already in use; {hint}. All processes were stopped.",
                                          rank=0) from None
    raise AssertionError("unreachable")


def _as_world_size(world_size) -> int:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"spawn(): world_size must be a positive integer (the number of processes), "
                         f"got {world_size!r}.")
    return world_size


def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _check_importable(fn: Callable, method: str) -> None:
    """Fail here, not in R children, when a fresh interpreter could not load ``fn``."""
    hint = (f"start_method={method!r} starts a fresh Python that imports the function by name: define it in a "
            f"module (a .py file you import), or run on Linux, where spawn() forks and any function works")
    try:
        pickle.dumps(fn)
    except Exception as err:  # noqa: BLE001 - pickle raises several types for the same problem
        raise TypeError(f"spawn(): cannot send {_fn_name(fn)} to the new processes ({err}). {hint}.") from None
    main = sys.modules.get("__main__")
    if getattr(fn, "__module__", None) == "__main__" and not getattr(main, "__file__", None):
        raise TypeError(f"spawn(): {_fn_name(fn)} is defined in an interactive session (a notebook cell), "
                        f"which a new process cannot import. {hint}.")


def _run_rank(fn, rank: int, world_size: int, args: tuple, backend: str, port: int, timeout_s: float,
              threads: int, conn) -> None:
    """The body of each child: join the group, run ``fn``, send back ("ok", value) or what went wrong."""
    try:
        # A process group of its own (in the OS sense), so that spawn() can stop this rank *and*
        # anything it started (DataLoader workers, subprocesses) with one killpg.
        os.setpgid(0, 0)
    except OSError:
        pass
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    try:
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except BaseException as err:  # noqa: BLE001 - whatever it is, the parent must hear of it
        text = f"{type(err).__name__}: {err}"
        in_use = "EADDRINUSE" in text or "address already in use" in text.lower()
        _send(conn, ("init", in_use, traceback.format_exc()))
        sys.exit(1)
    try:
        try:
            payload = ("ok", fn(rank, world_size, *args))
        except BaseException:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
            payload = ("error", traceback.format_exc())
        # Report before tearing down: if a partner is stuck, the parent should not wait on us.
        _send(conn, payload)
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a partner that already left is no news
            pass
    if payload[0] != "ok":
        sys.exit(1)


def _send(conn, payload: tuple) -> None:
    # Plain pickle into bytes: tensors are copied into the message. (multiprocessing's own pickler
    # would pass tensors through shared memory, which breaks once the sending process has exited.)
    try:
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # noqa: BLE001
        data = pickle.dumps(("error", f"the return value cannot be pickled, so it cannot be sent back: "
                                      f"{type(err).__name__}: {err}\nReturn tensors, numbers, lists, dicts."))
    conn.send_bytes(data)
    conn.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (SIGKILL from outside is often the out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _run_once(ctx, fn, world_size: int, args: tuple, *, backend: str, port: int, deadline: float,
              timeout_s: float, threads: int, start_method: str) -> list:
    procs: list = []
    conns: dict = {}      # receiving end -> rank
    running: dict = {}    # process sentinel -> rank
    results: dict[int, Any] = {}
    failures: dict[int, str] = {}
    died: dict[int, int] = {}      # rank -> exit code, for ranks that left without a result or an error
    port_in_use = False
    first_failure_at: float | None = None

    def receive(conn) -> None:
        nonlocal port_in_use
        rank = conns.pop(conn)
        try:
            kind, *rest = pickle.loads(conn.recv_bytes())
        except EOFError:  # the child closed the pipe without a word: its exit code will tell
            return
        except Exception as err:  # noqa: BLE001 - e.g. a class that exists only in the child
            failures[rank] = f"its return value could not be unpickled here: {type(err).__name__}: {err}"
            return
        finally:
            conn.close()
        if kind == "ok":
            results[rank] = rest[0]
        elif kind == "init":
            port_in_use = port_in_use or (rank == 0 and rest[0])
            failures[rank] = f"could not join the process group:\n{rest[1]}"
        else:
            failures[rank] = f"raised an exception:\n{rest[0]}"

    try:
        for rank in range(world_size):
            recv_end, send_end = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_run_rank, name=f"rank-{rank}", daemon=True,
                            args=(fn, rank, world_size, args, backend, port, timeout_s, threads, send_end))
            p.start()
            # Close our copy of the sending end now, before the next fork, so no other rank inherits it.
            send_end.close()
            procs.append(p)
            conns[recv_end] = rank
            running[p.sentinel] = rank

        while len(results) < world_size:
            now = time.monotonic()
            until = deadline if first_failure_at is None else min(deadline, first_failure_at + _FAILURE_GRACE_S)
            if now >= until or (first_failure_at is not None and not running and not conns):
                break
            seen = multiprocessing.connection.wait(list(conns) + list(running), timeout=until - now)
            # Deaths first: a rank that exits makes its partners' collectives fail a moment later, so when
            # one wake-up sees both (a busy machine), the death is the cause and the error the consequence.
            for ready in sorted(seen, key=lambda r: r not in running):
                if ready in conns:
                    receive(ready)
                elif ready in running:
                    rank = running.pop(ready)
                    for conn in [c for c, r in conns.items() if r == rank]:  # what it sent before leaving
                        if conn.poll(0):
                            receive(conn)
                    # The sentinel fires when the child's file descriptors close, a moment before the
                    # kernel has its exit status; join (not .exitcode) waits for that moment.
                    procs[rank].join(timeout=1.0)
                    code = procs[rank].exitcode
                    if rank not in results and rank not in failures:
                        died[rank] = code
                        hint = ""
                        if start_method != "fork" and code == 1:
                            hint = (f" Under start_method={start_method!r} this is what happens when the new "
                                    f"process cannot import the function: see the traceback above this error")
                        failures[rank] = f"{_describe_exit(code)} before returning a result.{hint}"
            if failures and first_failure_at is None:
                first_failure_at = time.monotonic()

        if len(results) == world_size:
            _wait_for_exit(procs, time.monotonic() + _EXIT_GRACE_S)
            return [results[r] for r in range(world_size)]
        if failures:
            if port_in_use:
                raise _PortInUse()
            raise _failure_error(fn, world_size, failures, died)
        missing = [r for r in range(world_size) if r not in results]
        raise DistributedTimeoutError(
            f"spawn({_fn_name(fn)}, world_size={world_size}): the run did not finish within timeout_s={timeout_s:g} s; "
            f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} had not returned "
            f"(returned: {sorted(results) or 'none'}). A rank that waits in a collective (all_reduce, ...) "
            f"that another rank never calls hangs like this. All processes were stopped.")
    finally:
        _stop(procs)
        for conn in conns:
            conn.close()


def _failure_error(fn, world_size: int, failures: dict[int, str], died: dict[int, int]) -> DistributedRunError:
    """The error for ranks that raised or died; ``died`` maps a rank that exited without a word to its exit code."""
    first = next(iter(failures))  # in the order seen: the first is most likely the cause
    lines = [f"spawn({_fn_name(fn)}, world_size={world_size}): rank {first} {failures[first]}"]
    for rank, what in failures.items():
        if rank != first:
            lines.append(f"\nthen rank {rank} (often a consequence: its partner was gone) {what}")
    lines.append("\nAll processes were stopped.")
    return DistributedRunError("\n".join(lines), rank=first, exitcode=died.get(first), failures=failures)


def _wait_for_exit(procs: list, until: float) -> None:
    for p in procs:
        p.join(timeout=max(0.0, until - time.monotonic()))


def _stop(procs: list) -> None:
    """Kill every child and its process group (whatever it started), then reap it: nothing outlives spawn()."""
    for p in procs:
        if p.pid is None:
            continue
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the child's own group, made by os.setpgid in _run_rank
        except (ProcessLookupError, PermissionError, OSError):
            pass  # no such group: the child had not got that far, or all its members are gone
        if p.is_alive():
            p.kill()
        p.join()
        p.close()


# ----------------------------------------------------------------------------- shards and their statistics


def even_shard_sizes(batch_size: int, world_size: int) -> list[int]:
    """How :func:`split_batch` cuts ``batch_size`` samples over ``world_size`` ranks (as ``torch.tensor_split``).

    Sizes differ by at most one, the first ranks taking the extra samples: 10 over 4 -> [3, 3, 2, 2].
    """
    base, extra = divmod(batch_size, world_size)
    return [base + (rank < extra) for rank in range(world_size)]


def split_batch(x: torch.Tensor, world_size: int, sizes: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Cut ``x`` along dimension 0 into ``world_size`` shards: rank r's share of the batch.

    ``sizes`` (summing to ``len(x)``) sets the shard sizes, zeros allowed; default :func:`even_shard_sizes`.
    """
    sizes = list(sizes) if sizes is not None else even_shard_sizes(x.shape[0], world_size)
    if len(sizes) != world_size or sum(sizes) != x.shape[0] or min(sizes) < 0:
        raise ValueError(f"split_batch: sizes {sizes} must be {world_size} non-negative numbers summing to the "
                         f"batch size {x.shape[0]}.")
    return list(torch.split(x, sizes, dim=0))


@dataclass
class ShardStats:
    """Per-channel statistics of each shard next to those of the full batch (what plain BN vs sync BN use).

    ``counts[r]`` values per channel in shard r (N_r·H·W); ``means``/``vars`` (R, C), biased
    variances as BN normalizes with; ``full_mean``/``full_var`` (C,).
    """

    counts: list[int]
    means: torch.Tensor
    vars: torch.Tensor
    full_mean: torch.Tensor
    full_var: torch.Tensor

    @property
    def mean_error(self) -> torch.Tensor:
        """(mean_r - mean) / std, (R, C): how far each shard's mean is off, in full-batch standard deviations."""
        return (self.means - self.full_mean) / self.full_var.sqrt()

    @property
    def var_ratio(self) -> torch.Tensor:
        """var_r / var, (R, C): 1 when a shard's spread is the batch's; plain BN's scale is off by 1/sqrt of it."""
        return self.vars / self.full_var

    def summary(self) -> dict:
        """One row for a table: shard size and the typical (RMS) and worst errors over shards and channels."""
        err, ratio = self.mean_error, self.var_ratio
        return {"shards": len(self.counts), "values per shard": min(self.counts),
                "rms mean error (std)": err.pow(2).mean().sqrt().item(),
                "max |mean error| (std)": err.abs().max().item(),
                "var ratio min": ratio.min().item(), "var ratio max": ratio.max().item()}


def shard_batch_stats(x: torch.Tensor, world_size: int, sizes: Sequence[int] | None = None) -> ShardStats:
    """Each shard's per-channel mean and biased variance (plain BN's statistics) beside the full batch's.

    ``x`` (N, C, H, W) is split as :func:`split_batch` does; empty shards are left out. Runs in
    one process: the statistics do not depend on where the shards live.
    """
    expect_rank(x, 4, "shard_batch_stats", "(N, C, H, W)")
    x64 = x.detach().double()
    shards = [s for s in split_batch(x64, world_size, sizes) if s.shape[0] > 0]
    means = torch.stack([s.mean(dim=(0, 2, 3)) for s in shards])
    vars_ = torch.stack([s.var(dim=(0, 2, 3), correction=0) for s in shards])
    return ShardStats([s.numel() // s.shape[1] for s in shards], means, vars_,
                      x64.mean(dim=(0, 2, 3)), x64.var(dim=(0, 2, 3), correction=0))


def shard_stats_table(x: torch.Tensor, world_sizes: Sequence[int] = (1, 2, 4, 8)) -> list[dict]:
    """:meth:`ShardStats.summary` for each world size: how plain BN's statistics drift as shards shrink."""
    return [shard_batch_stats(x, r).summary() for r in world_sizes]


# ----------------------------------------------------------------------------- synchronized BN by hand


def _world_size(group=None) -> int:
    """The number of ranks in ``group`` (the default group when None), 1 without torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def shard_moments(x: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """This shard's (n, mean, M2) per channel of ``x`` (N, C, H, W): n = N·H·W, M2 = Σ (x - mean)².

    mean and M2 are (C,), in :func:`compute_dtype`; an empty shard gives n = 0 and zeros
    (so it drops out of :func:`merge_moments`), not the NaN of a mean over nothing.
    """
    channels = x.shape[1]
    count = x.numel() // max(channels, 1)
    xc = x.to(compute_dtype(x))
    if count == 0:
        zeros = xc.new_zeros(channels)
        return 0, zeros, zeros.clone()
    mean = xc.mean(dim=(0, 2, 3))
    m2 = (xc - per_channel(mean)).pow(2).sum(dim=(0, 2, 3))  # centered first: no cancellation
    return count, mean, m2


def merge_moments(counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge per-shard (n_r, mean_r, M2_r) into the whole batch's (n, mean, M2); R shards, C channels.

    Shapes: ``counts`` (R,), ``means`` and ``m2s`` (R, C) -> n (scalar), mean (C,), M2 (C,).

        n    = Σ_r n_r
        mean = Σ_r n_r·mean_r / n
        M2   = Σ_r M2_r + Σ_r n_r·(mean_r - mean)²

    The R-shard form of Chan, Golub & LeVeque's pairwise update
    ``M2 = M2_a + M2_b + (mean_b - mean_a)²·n_a·n_b/(n_a + n_b)`` (apply it R-1 times and the
    cross terms add up to Σ n_r·(mean_r - mean)²). Every term is a sum of squares of
    *deviations*, so nothing large cancels. Shards with n_r = 0 (mean 0, M2 0) drop out.
    """
    n = counts.sum()
    weights = counts.unsqueeze(1)                                   # (R, 1)
    mean = (weights * means).sum(dim=0) / n.clamp(min=1)            # (C,); n = 0 leaves 0, not NaN
    m2 = m2s.sum(dim=0) + (weights * (means - mean).pow(2)).sum(dim=0)
    return n, mean, m2


def sync_batch_stats(x: torch.Tensor, group=None) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Count, mean and biased variance per channel of the batch whose shards the ranks of ``group`` hold.

    Each rank contributes (n_r, mean_r, M2_r) of its shard ``x`` (N_r, C, H, W); they are
    all-gathered (R·(2C+1) numbers, in float64 so counts stay exact) and merged with
    :func:`merge_moments` on every rank, in rank order, so every rank gets the same bits.
    Gathered, not all-reduced: the merge needs each shard's mean, and the sum of the means
    that an all-reduce (SUM) gives is not enough (it would take a second round trip).
    Returns (n, mean (C,), var (C,)) with mean and var in :func:`compute_dtype` of ``x``.
    Every rank of ``group`` must call it (it is a collective), also with an empty shard.
    """
    count, mean, m2 = shard_moments(x)
    dtype = mean.dtype
    packed = torch.cat([torch.tensor([count], dtype=torch.float64, device=x.device), mean.double(), m2.double()])
    gathered = [torch.empty_like(packed) for _ in range(_world_size(group))]
    dist.all_gather(gathered, packed, group=group)
    table = torch.stack(gathered)                                   # (R, 2C+1): n_r | mean_r | M2_r
    channels = mean.shape[0]
    n, mean, m2 = merge_moments(table[:, 0], table[:, 1:channels + 1], table[:, channels + 1:])
    total = int(n.item())
    return total, mean.to(dtype), (m2 / max(total, 1)).to(dtype)


def sync_batch_stats_naive(x: torch.Tensor, group=None) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The formula *not* to use, for comparison: all-reduce n, Σx, Σx², then var = E[x²] - E[x]².

    One all-reduce and no per-shard means, but E[x²] and E[x]² are both about mean², so their
    difference keeps only the digits that mean²/var leaves: at mean 1e4 and std 1, float64's
    sixteen digits shrink to about eight, float32's seven to none. Same returns as :func:`sync_batch_stats`.
    """
    channels = x.shape[1]
    xc = x.to(compute_dtype(x))
    count = torch.tensor([x.numel() // max(channels, 1)], dtype=xc.dtype, device=x.device)
    sums = torch.cat([count, xc.sum(dim=(0, 2, 3)), xc.pow(2).sum(dim=(0, 2, 3))])
    dist.all_reduce(sums, group=group)
    n = int(sums[0].item())
    mean = sums[1:channels + 1] / max(n, 1)
    var = (sums[channels + 1:] / max(n, 1) - mean.pow(2)).clamp(min=0)
    return n, mean, var


def batch_norm_input_grad(grad_y: torch.Tensor, x_hat: torch.Tensor, weight: torch.Tensor | None,
                          invstd: torch.Tensor, count: int, sum_dy: torch.Tensor,
                          sum_dy_xhat: torch.Tensor) -> torch.Tensor:
    """dL/dx of batch norm on this shard, given the sums over the *whole* batch.

        dL/dx = weight·invstd · (g - Σg / n - x̂ · Σ(g·x̂) / n)

    ``grad_y`` (g) and ``x_hat`` are this shard's (N_r, C, H, W); ``weight`` (C,) or None (1);
    ``invstd`` = 1/sqrt(var + eps), ``sum_dy`` = Σg and ``sum_dy_xhat`` = Σ(g·x̂), all (C,), the
    sums all-reduced over every shard; ``count`` = n, the values per channel in the whole batch.
    The last two terms are the gradient through the mean and through the variance: every
    value of the batch moved them, so every shard's g takes part.
    """
    scale = invstd if weight is None else weight.to(invstd.dtype) * invstd
    return per_channel(scale) * (grad_y - per_channel(sum_dy / count) - x_hat * per_channel(sum_dy_xhat / count))


class SyncBatchNormFunction(torch.autograd.Function):
    """y = x̂·weight + bias with x̂ = (x - mean)·invstd, mean and invstd of the whole batch; backward all-reduces.

    ``apply(x, weight, bias, mean, invstd, count, group, input_grad)``: ``x`` (N_r, C, H, W) is
    this rank's shard; ``mean`` and ``invstd`` (C,) come from :func:`sync_batch_stats` (computed
    without autograd: their dependence on ``x`` is in the backward formula instead); ``count`` = n;
    ``input_grad`` computes dL/dx from the all-reduced sums (:func:`batch_norm_input_grad`).

    Backward, with g = dL/dy of this shard:

        dL/dbias   = Σ_shard g                 (this shard's share; DDP averages the shares)
        dL/dweight = Σ_shard g·x̂
        dL/dx      = weight·invstd · (g - Σ_all g / n - x̂ · Σ_all (g·x̂) / n)

    where Σ_all is the all-reduce (SUM) of the two shard sums, 2C numbers, over ``group``.
    When ``x`` needs no gradient, no rank all-reduces (all ranks run the same model, so they agree).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, count, group, input_grad=batch_norm_input_grad):
        x_hat = (x.to(mean.dtype) - per_channel(mean)) * per_channel(invstd)   # (N_r, C, H, W)
        ctx.save_for_backward(x_hat, weight, invstd)
        ctx.count, ctx.group, ctx.x_dtype, ctx.input_grad = count, group, x.dtype, input_grad
        ctx.bias_dtype = None if bias is None else bias.dtype
        return scale_and_shift(x_hat, weight, bias).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x_hat, weight, invstd = ctx.saved_tensors
        g = grad_y.to(x_hat.dtype)
        sum_dy = g.sum(dim=(0, 2, 3))                    # (C,) this shard's Σg
        sum_dy_xhat = (g * x_hat).sum(dim=(0, 2, 3))     # (C,) this shard's Σ(g·x̂)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            totals = torch.cat([sum_dy, sum_dy_xhat])    # one message of 2C numbers, not two
            dist.all_reduce(totals, group=ctx.group)
            total_dy, total_dy_xhat = totals.chunk(2)
            grad_x = ctx.input_grad(g, x_hat, weight, invstd, ctx.count, total_dy, total_dy_xhat)
            if not isinstance(grad_x, torch.Tensor) or grad_x.shape != g.shape:
                raise TypeError(f"SyncBatchNormFunction: input_grad should return a tensor of the shard's shape "
                                f"{tuple(g.shape)}, got {getattr(grad_x, 'shape', type(grad_x).__name__)}.")
            grad_x = grad_x.to(ctx.x_dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = sum_dy_xhat.to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = sum_dy.to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


StatsFn = Callable[[torch.Tensor, Any], tuple[int, torch.Tensor, torch.Tensor]]


def sync_batch_norm2d(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    group=None,
    batch_stats: StatsFn = sync_batch_stats,
    input_grad: Callable[..., torch.Tensor] = batch_norm_input_grad,
) -> torch.Tensor:
    """Batch norm of the batch whose shards the ranks of ``group`` hold; this rank's shard is ``x`` (N_r, C, H, W).

    Same arguments and conventions as :func:`course_utils.batch_norm2d`, plus ``group`` (None:
    the default process group), ``batch_stats`` (how the statistics are gathered;
    :func:`sync_batch_stats`) and ``input_grad`` (dL/dx from the all-reduced sums;
    :func:`batch_norm_input_grad`). With ``training=True`` and more than one rank it normalizes with
    the whole batch's mean and biased variance and updates the buffers with the whole batch's
    mean and *unbiased* variance (÷(n - 1), n over all ranks), identically on every rank.
    Otherwise (eval, no process group, or one rank) it *is* :func:`course_utils.batch_norm2d`.
    Collective: every rank calls it, in the same order, also with an empty shard.
    """
    if not training or _world_size(group) == 1:
        return batch_norm2d(x, running_mean, running_var, weight, bias, training, momentum, eps)
    layer = "sync_batch_norm2d"
    expect_rank(x, 4, layer, "(N, C, H, W)")
    check_channel_vectors(layer, x.shape[1], running_mean=running_mean, running_var=running_var,
                          weight=weight, bias=bias)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{layer}: pass both running_mean and running_var, or neither.")
    count, mean, var = batch_stats(x.detach(), group)
    if count == 0:  # every shard empty (all ranks see the same count, so all return here)
        return scale_and_shift(x.to(compute_dtype(x)), weight, bias).to(x.dtype)
    if count == 1:
        raise ValueError(f"{layer}: expected more than 1 value per channel when training, got 1 over all "
                         f"{_world_size(group)} processes (this one's shard has shape {tuple(x.shape)}). Use "
                         f"a larger batch, or call model.eval() to use the running statistics.")
    if running_mean is not None:
        update_running_stats(running_mean, running_var, mean, var * (count / (count - 1)), momentum)
    return SyncBatchNormFunction.apply(x, weight, bias, mean, torch.rsqrt(var + eps), count, group, input_grad)


class SyncBatchNorm2d(BatchNorm2d):
    """Batch norm over the whole distributed batch: statistics merged across the ranks of ``process_group``.

    Train mode: ``y = (x - mean_c) / sqrt(var_c + eps) · weight_c + bias_c`` with mean and
    biased variance over all N·H·W values of channel c *on every rank* (see the module
    docstring for the merge and the backward); running statistics updated with the global
    mean and unbiased variance, the same on every rank. Eval mode: running statistics, no
    communication (as ``nn.SyncBatchNorm``). No process group, or one rank: exactly
    :class:`course_utils.BatchNorm2d`.

    Shapes: input (N_r, C, H, W), this rank's shard (N_r may differ between ranks, 0 included)
    -> output of the same shape; parameters and buffers as :class:`course_utils.BatchNorm2d`
    (``momentum=None`` a cumulative average, ``num_batches_tracked``), so state dicts load both ways.

    Unlike ``nn.SyncBatchNorm`` in current PyTorch, it runs on CPU (gloo): that one raises
    "SyncBatchNorm expected input tensor to be on GPU or XPU or privateuseone" in train mode.

    Args:
        num_features, eps, momentum, affine, track_running_stats, device, dtype: as BatchNorm2d.
        process_group: the ranks to synchronize over; None for all (the default group).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def batch_stats(self, x: torch.Tensor, group) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(n, mean, var) of the distributed batch; override to try another merge (e.g. the naive one)."""
        return sync_batch_stats(x, group)

    def input_grad(self, grad_y: torch.Tensor, x_hat: torch.Tensor, weight: torch.Tensor | None,
                   invstd: torch.Tensor, count: int, sum_dy: torch.Tensor, sum_dy_xhat: torch.Tensor) -> torch.Tensor:
        """dL/dx of this shard from the all-reduced sums (:func:`batch_norm_input_grad`); override to try another."""
        return batch_norm_input_grad(grad_y, x_hat, weight, invstd, count, sum_dy, sum_dy_xhat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expect_rank(x, 4, "SyncBatchNorm2d", "(N, C, H, W)")
        expect_channels(x, self.num_features, "SyncBatchNorm2d")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average of all batches so far
                factor = 1.0 / float(self.num_batches_tracked)
        if not self.training:  # eval: running statistics (or without them this shard's), no communication
            return batch_norm2d(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=self.running_mean is None, momentum=factor, eps=self.eps)
        return sync_batch_norm2d(
            x,
            self.running_mean if self.track_running_stats else None,
            self.running_var if self.track_running_stats else None,
            self.weight,
            self.bias,
            training=True,
            momentum=factor,
            eps=self.eps,
            group=self.process_group,
            batch_stats=self.batch_stats,
            input_grad=self.input_grad,
        )


def convert_to_sync_bn(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every ``BatchNorm2d`` (torch's or the course's) in ``module`` with :class:`SyncBatchNorm2d`.

    The CPU-capable counterpart of ``nn.SyncBatchNorm.convert_sync_batchnorm``: parameters
    and buffers are carried over (the same tensors), the mode too. Returns the module (a new
    one when ``module`` itself is a BatchNorm2d); other layers, subclasses of BatchNorm2d
    included, are left as they are.
    """
    # Exact types only: a subclass may do more (timm's BatchNormAct2d adds an activation) and would lose it.
    if type(module) in (nn.BatchNorm2d, BatchNorm2d):
        new = SyncBatchNorm2d(module.num_features, eps=module.eps, momentum=module.momentum,
                              affine=module.affine, track_running_stats=module.track_running_stats,
                              process_group=process_group)
        for name in ("weight", "bias"):
            if getattr(module, name, None) is not None:
                setattr(new, name, getattr(module, name))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            if getattr(module, name, None) is not None:
                new.register_buffer(name, getattr(module, name))
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_to_sync_bn(child, process_group))
    return module


# ----------------------------------------------------------------------------- the check against full-batch BN


# (rtol, atol) per dtype: float64 leaves ~1e-12 at offset 1e4, the naive merge ~1e-8.
SYNC_BN_TOLERANCES = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-5)}


@dataclass
class SyncBNCase:
    """One check's data, the same on every rank (made from a seed): ``steps`` training batches and an eval batch.

    ``inputs`` and ``grad_outputs`` (steps, N, C, H, W): the batches and the upstream gradient
    g (the loss is Σ g·y); ``eval_input`` (N, C, H, W); ``weight``, ``bias`` (C,) the layer's
    affine parameters; ``shard_sizes`` the samples of each rank.
    """

    inputs: torch.Tensor
    grad_outputs: torch.Tensor
    eval_input: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    shard_sizes: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.inputs.shape[2]

    def shard(self, t: torch.Tensor, rank: int) -> torch.Tensor:
        """Rank ``rank``'s samples of ``t`` (batch along the last-but-three dimension)."""
        start = sum(self.shard_sizes[:rank])
        return t[..., start:start + self.shard_sizes[rank], :, :, :]


def make_sync_bn_case(world_size: int, *, batch_size: int = 8, channels: int = 3, size: tuple[int, int] = (4, 4),
                      steps: int = 2, offset: float = 0.0, shard_sizes: Sequence[int] | None = None,
                      dtype: torch.dtype = torch.float64, seed: int = 0) -> SyncBNCase:
    """A :class:`SyncBNCase`: channel c ~ offset + mean_c + std_c·N(0, 1), std_c in [0.5, 2], on a CPU generator.

    ``offset`` (say 1e4) makes the mean large against the spread, where E[x²] - E[x]² loses digits.
    """
    sizes = tuple(shard_sizes) if shard_sizes is not None else tuple(even_shard_sizes(batch_size, world_size))
    if len(sizes) != world_size or min(sizes) < 0:
        raise ValueError(f"make_sync_bn_case: shard_sizes {list(sizes)} must be {world_size} non-negative numbers.")
    batch_size = sum(sizes)
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, channels, *size)

    def batch() -> torch.Tensor:
        mean = torch.randn(channels, generator=g, dtype=torch.float64)
        std = 0.5 + 1.5 * torch.rand(channels, generator=g, dtype=torch.float64)
        return offset + per_channel(mean) + per_channel(std) * torch.randn(shape, generator=g, dtype=torch.float64)

    inputs = torch.stack([batch() for _ in range(steps)])
    grads = torch.randn((steps, *shape), generator=g, dtype=torch.float64)
    eval_input = batch()
    weight = 1 + 0.5 * torch.randn(channels, generator=g, dtype=torch.float64)
    bias = 0.5 * torch.randn(channels, generator=g, dtype=torch.float64)
    return SyncBNCase(inputs.to(dtype), grads.to(dtype), eval_input.to(dtype), weight.to(dtype), bias.to(dtype),
                      sizes)


def run_sync_bn_rank(rank: int, world_size: int, layer_factory: Callable[[int], nn.Module], case: SyncBNCase,
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """One rank's side of the check (a process group must be initialised): train steps on its shard, then eval.

    Builds ``layer_factory(C)``, sets its weight and bias to the case's, and for each step runs
    forward on the shard, backward of Σ g·y, and records the output, the input gradient and
    this rank's weight and bias gradients; then the buffers and an eval-mode output. Returns
    CPU tensors: "output", "grad input" (steps, N_r, C, H, W), "grad weight", "grad bias"
    (steps, C) when the layer has them, "running_mean", "running_var" (C,),
    "num_batches_tracked" (), "output (eval)" (N_r, C, H, W).
    """
    layer = layer_factory(case.channels).to(device=device, dtype=case.inputs.dtype)
    layer.train()
    with torch.no_grad():
        if getattr(layer, "weight", None) is not None:
            layer.weight.copy_(case.weight)
        if getattr(layer, "bias", None) is not None:
            layer.bias.copy_(case.bias)
    record: dict[str, list] = {"output": [], "grad input": [], "grad weight": [], "grad bias": []}
    for step in range(case.inputs.shape[0]):
        x = case.shard(case.inputs[step], rank).to(device).requires_grad_()
        y = layer(x)
        (y * case.shard(case.grad_outputs[step], rank).to(device)).sum().backward()
        record["output"].append(y.detach().cpu())
        record["grad input"].append(x.grad.cpu())
        for name in ("weight", "bias"):
            param = getattr(layer, name, None)
            if param is not None and param.grad is not None:
                record[f"grad {name}"].append(param.grad.detach().cpu().clone())
                param.grad = None
    out = {name: torch.stack(values) for name, values in record.items() if values}
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        buffer = getattr(layer, name, None)
        if buffer is not None:
            out[name] = buffer.detach().cpu().clone()
    layer.eval()
    with torch.no_grad():
        out["output (eval)"] = layer(case.shard(case.eval_input, rank).to(device)).cpu()
    return out


def full_batch_reference(case: SyncBNCase, eps: float = 1e-5, momentum: float | None = 0.1) -> dict[str, torch.Tensor]:
    """What :func:`run_sync_bn_rank` should find, from ``nn.BatchNorm2d`` on the whole batch in this process.

    Same keys, whole-batch shapes: outputs and input gradients (steps, N, C, H, W), weight and
    bias gradients of the whole batch (steps, C), the buffers, the eval output (N, C, H, W).
    """
    bn = nn.BatchNorm2d(case.channels, eps=eps, momentum=momentum, dtype=case.inputs.dtype)
    with torch.no_grad():
        bn.weight.copy_(case.weight)
        bn.bias.copy_(case.bias)
    record: dict[str, list] = {"output": [], "grad input": [], "grad weight": [], "grad bias": []}
    for step in range(case.inputs.shape[0]):
        x = case.inputs[step].clone().requires_grad_()
        y = bn(x)
        (y * case.grad_outputs[step]).sum().backward()
        record["output"].append(y.detach())
        record["grad input"].append(x.grad)
        record["grad weight"].append(bn.weight.grad.clone())
        record["grad bias"].append(bn.bias.grad.clone())
        bn.weight.grad = bn.bias.grad = None
    out = {name: torch.stack(values) for name, values in record.items()}
    out.update(running_mean=bn.running_mean.clone(), running_var=bn.running_var.clone(),
               num_batches_tracked=bn.num_batches_tracked.clone())
    bn.eval()
    with torch.no_grad():
        out["output (eval)"] = bn(case.eval_input)
    return out


def compare_with_full_batch(per_rank: Sequence[dict[str, torch.Tensor]], reference: dict[str, torch.Tensor], *,
                            rtol: float, atol: float, verbose: bool = True) -> list[Difference]:
    """Put the ranks' results together and compare each quantity with the full-batch reference.

    Outputs and input gradients are concatenated over ranks (rank order is batch order);
    weight and bias gradients are *summed* over ranks: the loss here is a sum over the batch, whose
    gradient is the sum of the shards' (DDP all-reduces and divides by the world size, the gradient
    of that sum over R; sums stay exact with unequal and empty shards); buffers are compared on
    *every* rank (each must hold the full batch's). Returns :class:`course_utils.Difference` rows; ``verbose`` prints them as a table.
    """
    rows: dict[str, tuple] = {}
    for name in ("output", "grad input"):
        rows[name] = (torch.cat([r[name] for r in per_rank], dim=1), reference[name])
    for name in ("grad weight", "grad bias"):
        if all(name in r for r in per_rank):
            rows[f"{name} (sum over ranks)"] = (torch.stack([r[name] for r in per_rank]).sum(0), reference[name])
        else:
            rows[name] = (torch.full_like(reference[name], float("nan")), reference[name])  # missing: cannot match
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        expected = reference[name].expand(len(per_rank), *reference[name].shape)
        if all(name in r for r in per_rank):
            rows[f"{name} (every rank)"] = (torch.stack([r[name] for r in per_rank]), expected)
        else:
            rows[name] = (torch.full(expected.shape, float("nan"), dtype=torch.float64), expected)
    rows["output (eval)"] = (torch.cat([r["output (eval)"] for r in per_rank]), reference["output (eval)"])
    if verbose:
        return compare(rows, rtol=rtol, atol=atol)
    return [difference(name, a, e, rtol=rtol, atol=atol) for name, (a, e) in rows.items()]


def check_sync_bn_against_full_batch(
    layer_factory: Callable[[int], nn.Module] = SyncBatchNorm2d,
    world_size: int = 2,
    *,
    batch_size: int = 8,
    shard_sizes: Sequence[int] | None = None,
    channels: int = 3,
    size: tuple[int, int] = (4, 4),
    steps: int = 2,
    offset: float = 0.0,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    verbose: bool = True,
    timeout_s: float = 120,
    device: str = "cpu",
    backend: str = "gloo",
) -> list[Difference]:
    """Run a BN layer on shards of one batch in ``world_size`` processes and compare with full-batch ``nn.BatchNorm2d``.

    Each rank builds ``layer_factory(C)`` (a class such as :class:`SyncBatchNorm2d` will do),
    runs ``steps`` training steps (forward, backward of Σ g·y) on its shard and one eval
    forward (:func:`run_sync_bn_rank`); here, ``nn.BatchNorm2d`` with the layer's eps and
    momentum does the same on the whole batch in one process. Rows: output, input gradient,
    weight and bias gradients (summed over ranks), running_mean, running_var and
    num_batches_tracked (on every rank), eval output. A synchronized BN matches on every row;
    plain BN on shards does not.

    ``shard_sizes`` overrides the even split (unequal sizes, zeros allowed); ``offset``
    shifts the data (1e4 tells a stable merge from E[x²] - E[x]²); tolerances default to
    :data:`SYNC_BN_TOLERANCES` for ``dtype``. Returns the rows; check them with
    :func:`course_utils.check_all`.
    """
    case = make_sync_bn_case(world_size, batch_size=batch_size, channels=channels, size=size, steps=steps,
                             offset=offset, shard_sizes=shard_sizes, dtype=dtype, seed=seed)
    probe = layer_factory(channels)  # built here too: its eps and momentum set the reference's, and errors show early
    default_rtol, default_atol = SYNC_BN_TOLERANCES.get(dtype, SYNC_BN_TOLERANCES[torch.float32])
    reference = full_batch_reference(case, eps=getattr(probe, "eps", 1e-5), momentum=getattr(probe, "momentum", 0.1))
    per_rank = spawn(run_sync_bn_rank, world_size, layer_factory, case, device, backend=backend, timeout_s=timeout_s)
    if verbose:
        sizes = ", ".join(map(str, case.shard_sizes))
        print(f"{type(probe).__name__} on {world_size} processes (shards of {sizes} images, {str(dtype)[6:]}"
              f"{f', offset {offset:g}' if offset else ''}) vs nn.BatchNorm2d on the whole batch of "
              f"{sum(case.shard_sizes)}:")
    return compare_with_full_batch(per_rank, reference, rtol=rtol if rtol is not None else default_rtol,
                                   atol=atol if atol is not None else default_atol, verbose=verbose)


# ----------------------------------------------------------------------------- what synchronizing costs


def ddp_step_times(rank: int, world_size: int, bn: str = "plain", *, steps: int = 10, warmup: int = 2,
                   batch_per_rank: int = 16, image_size: int = 64, num_classes: int = 10, seed: int = 0) -> list[float]:
    """Seconds per data-parallel training step of a ResNet-18 on this rank: the forward, backward and SGD step.

    Run under :func:`spawn` (or torchrun). ``bn``: "plain" keeps ``nn.BatchNorm2d`` (each rank
    normalizes its own shard), "sync" converts every BN layer to :class:`SyncBatchNorm2d`
    (:func:`convert_to_sync_bn`), "none" replaces them with ``nn.Identity`` (a baseline without
    BN). The model is wrapped in ``DistributedDataParallel``, which all-reduces the gradients in
    every mode, so the difference between "plain" and "sync" is BN's own communication: one
    all-gather per BN layer forward, one all-reduce per BN layer backward (20 of each in ResNet-18).
    The inputs are random images of ``image_size`` pixels and random labels: the timing does not
    depend on what the images show. Each step ends with a barrier, so every rank reports the
    time of the slowest. Returns ``steps`` times, after ``warmup`` untimed steps.
    """
    import torchvision
    from torch.nn.parallel import DistributedDataParallel

    if bn not in ("plain", "sync", "none"):
        raise ValueError(f"ddp_step_times: bn must be 'plain', 'sync' or 'none', got {bn!r}.")
    torch.manual_seed(seed)  # the same initial model on every rank (DDP also broadcasts rank 0's)
    model = torchvision.models.resnet18(num_classes=num_classes)
    if bn == "sync":
        model = convert_to_sync_bn(model)
    elif bn == "none":
        from .norm_swap import swap_norm
        model = swap_norm(model, "none", verbose=False)
    model = DistributedDataParallel(model) if _world_size() > 1 else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(seed + 1000 * rank)  # each rank its own shard
    x = torch.randn(batch_per_rank, 3, image_size, image_size, generator=g)
    y = torch.randint(0, num_classes, (batch_per_rank,), generator=g)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if _world_size() > 1:
            dist.barrier()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times
