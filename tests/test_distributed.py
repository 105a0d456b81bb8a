"""course_utils.distributed: synchronized BN by hand across real processes (gloo, CPU), and spawn()'s failures.

Every distributed test starts 2 processes (fork on Linux: about 0.2 s each run); sync BN is
compared with ``nn.BatchNorm2d`` on the whole batch in one process, float64, rtol = atol = 1e-10.
The failure tests check that spawn() ends with a clear error within seconds and that no
process it started, nor any process those started, is still alive afterwards.
"""
from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import course_utils as cu
from course_utils import distributed as D

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60  # a bound for a hung run on a busy CI machine; a normal run takes well under a second


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rows_by_name(rows: list[cu.Difference]) -> dict[str, cu.Difference]:
    """The rows by quantity: "output", "output (eval)", "grad weight", "running_var", ..."""
    return {row.name.replace(" (sum over ranks)", "").replace(" (every rank)", ""): row for row in rows}


# ----------------------------------------------------------------------------- sync BN = full-batch BN


@pytest.mark.parametrize("shard_sizes, offset", [
    ((4, 4), 0.0),
    ((5, 3), 0.0),     # unequal shards: the merge must weight each shard by its count
    ((6, 0), 0.0),     # a rank with nothing: it still takes part in every collective
    ((5, 3), 1e4),     # mean 1e4, std ~1: where E[x²] - E[x]² would lose eight digits
])
def test_sync_bn_matches_full_batch(shard_sizes, offset):
    rows = cu.check_sync_bn_against_full_batch(cu.SyncBatchNorm2d, 2, shard_sizes=shard_sizes, offset=offset,
                                               verbose=False, timeout_s=TIMEOUT_S)
    cu.check_all(rows, f"SyncBatchNorm2d, shards {shard_sizes}, offset {offset:g}")
    assert set(rows_by_name(rows)) == {"output", "grad input", "grad weight", "grad bias", "running_mean",
                                       "running_var", "num_batches_tracked", "output (eval)"}


def test_sync_bn_cumulative_momentum_and_printed_table(capsys):
    """momentum=None (cumulative average) over three steps; the table the lesson prints."""
    layer = functools.partial(cu.SyncBatchNorm2d, momentum=None)
    rows = cu.check_sync_bn_against_full_batch(layer, 2, shard_sizes=(3, 5), steps=3, timeout_s=TIMEOUT_S)
    cu.check_all(rows, "SyncBatchNorm2d(momentum=None)")
    table = capsys.readouterr().out
    assert "shards of 3, 5 images" in table and "running_var (every rank)" in table and " NO " not in table


class NaiveSyncBatchNorm2d(cu.SyncBatchNorm2d):
    """Sync BN with the one-pass merge, var = E[x²] - E[x]² (at module level: spawn may need to pickle it)."""

    def batch_stats(self, x, group):
        return cu.sync_batch_stats_naive(x, group)


def test_naive_merge_loses_digits_at_large_offset():
    """At offset 1e4 (float64) E[x²] - E[x]² is off by ~1e-8, 10^4 times the stable merge's error."""
    naive = rows_by_name(cu.check_sync_bn_against_full_batch(NaiveSyncBatchNorm2d, 2, offset=1e4, verbose=False,
                                                             timeout_s=TIMEOUT_S))
    assert not naive["output"].ok and not naive["running_var"].ok
    assert naive["output"].max_abs > 1e-9
    # Without the offset the same naive layer is fine: the loss is cancellation, not a wrong formula.
    cu.check_all(cu.check_sync_bn_against_full_batch(NaiveSyncBatchNorm2d, 2, verbose=False, timeout_s=TIMEOUT_S))


@pytest.mark.parametrize("layer", [cu.BatchNorm2d, nn.BatchNorm2d])
def test_per_shard_bn_does_not_match(layer):
    """Plain BN on each shard: the statistics, so the outputs, gradients and buffers, are not the batch's."""
    rows = rows_by_name(cu.check_sync_bn_against_full_batch(layer, 2, verbose=False, timeout_s=TIMEOUT_S))
    for name in ("output", "grad input", "grad weight", "running_mean", "running_var"):
        assert not rows[name].ok, name
        assert rows[name].rel > 1e-3, (name, rows[name].rel)  # off by percent, not by rounding
    # What does not depend on the statistics still agrees: Σ dy and the step count.
    assert rows["grad bias"].ok and rows["num_batches_tracked"].ok
    with pytest.raises(cu.CheckFailed, match="output"):
        cu.check_all(list(rows.values()))


# ----------------------------------------------------------------------------- one process: BatchNorm2d exactly


def _train_and_eval(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_()
    y = layer(x)
    (y * g).sum().backward()
    layer.eval()
    out = {"y": y.detach(), "dx": x.grad, "dw": layer.weight.grad, "db": layer.bias.grad,
           "y_eval": layer(x.detach()).detach()}
    out.update({name: buffer.clone() for name, buffer in layer.named_buffers()})
    return out


def _layers_on_one_rank(rank: int, world_size: int, x: torch.Tensor, g: torch.Tensor) -> list[dict]:
    return [_train_and_eval(layer, x, g) for layer in (cu.SyncBatchNorm2d(3), cu.BatchNorm2d(3))]


def test_without_process_group_it_is_batch_norm2d():
    assert not dist.is_initialized()
    x, g = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    sync, plain = _layers_on_one_rank(0, 1, x, g)
    for name in plain:
        assert torch.equal(sync[name], plain[name]), name
    reference = nn.BatchNorm2d(3)
    torch.testing.assert_close(cu.SyncBatchNorm2d(3)(x), reference(x))


def test_world_size_one_is_batch_norm2d():
    x, g = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    [(sync, plain)] = cu.spawn(_layers_on_one_rank, 1, x, g, timeout_s=TIMEOUT_S)
    for name in plain:
        assert torch.equal(sync[name], plain[name]), name


def _eval_on_rank_0_only(rank: int, world_size: int) -> torch.Tensor | None:
    layer = cu.SyncBatchNorm2d(3)
    layer(torch.randn(4, 3, 2, 2))  # train mode, both ranks: a collective
    if rank == 1:
        return None  # rank 1 calls nothing more: any communication in eval mode would hang rank 0
    return layer.eval()(torch.randn(4, 3, 2, 2))


def test_eval_mode_does_not_communicate():
    output, nothing = cu.spawn(_eval_on_rank_0_only, 2, timeout_s=10)
    assert output.shape == (4, 3, 2, 2) and nothing is None


def _one_value_in_all(rank: int, world_size: int) -> None:
    cu.SyncBatchNorm2d(3)(torch.randn(1 - rank, 3, 1, 1))  # rank 0 holds one value per channel, rank 1 none


def test_one_value_per_channel_over_all_ranks_is_refused_on_every_rank():
    with pytest.raises(cu.DistributedRunError, match="more than 1 value per channel") as info:
        cu.spawn(_one_value_in_all, 2, timeout_s=TIMEOUT_S)
    assert "over all 2 processes" in str(info.value)
    assert set(info.value.failures) == {0, 1}  # both ranks raise the same error, neither waits for the other


class _CountedInputGrad(cu.SyncBatchNorm2d):
    """SyncBatchNorm2d whose input gradient goes through an override (lesson 09 plugs its answer in so)."""

    def input_grad(self, *args):
        self.calls = getattr(self, "calls", 0) + 1
        return super().input_grad(*args)


class _WrongShapeInputGrad(cu.SyncBatchNorm2d):
    def input_grad(self, grad_y, *args):
        return grad_y.sum(dim=0)


def _input_grad_calls(rank: int, world_size: int) -> int:
    layer = _CountedInputGrad(3)
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    layer.double()(x).sum().backward()
    return layer.calls


def _wrong_shape(rank: int, world_size: int) -> None:
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    _WrongShapeInputGrad(3)(x).sum().backward()


def test_input_grad_override_is_used_in_backward():
    rows = cu.check_sync_bn_against_full_batch(_CountedInputGrad, 2, shard_sizes=(5, 3), verbose=False,
                                               timeout_s=TIMEOUT_S)
    cu.check_all(rows, "SyncBatchNorm2d with an input_grad override that defers to the default")
    assert cu.spawn(_input_grad_calls, 2, timeout_s=TIMEOUT_S) == [1, 1]


def test_input_grad_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(cu.DistributedRunError, match=r"input_grad should return a tensor of the shard's shape"):
        cu.spawn(_wrong_shape, 2, timeout_s=TIMEOUT_S)


def test_ddp_step_times_reports_every_step():
    for mode in ("none", "plain", "sync"):
        per_rank = cu.spawn(functools.partial(cu.ddp_step_times, steps=2, warmup=0, batch_per_rank=2, image_size=32),
                            2, mode, timeout_s=TIMEOUT_S * 2)
        assert len(per_rank) == 2 and all(len(t) == 2 and min(t) > 0 for t in per_rank), (mode, per_rank)
    with pytest.raises(ValueError, match="bn must be"):
        cu.ddp_step_times(0, 1, "frozen")


# ----------------------------------------------------------------------------- the pieces, in one process


def test_merge_moments_is_the_full_batch_statistics():
    """Four unequal shards (one empty) at offset 1e4: the merge keeps ~11 digits of the variance, E[x²] - E[x]² ~7."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 3, 4, 4, generator=g, dtype=torch.float64) * torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)
    x = 1e4 + z
    # The exact statistics: x - 1e4 is computed without rounding (Sterbenz), and z's are well conditioned.
    true_mean, true_var = 1e4 + (x - 1e4).mean(dim=(0, 2, 3)), (x - 1e4).var(dim=(0, 2, 3), correction=0)
    shards = cu.split_batch(x, 4, sizes=[4, 0, 5, 1])
    moments = [cu.shard_moments(s) for s in shards]
    assert [m[0] for m in moments] == [64, 0, 80, 16]
    counts = torch.tensor([float(m[0]) for m in moments], dtype=torch.float64)
    n, mean, m2 = cu.merge_moments(counts, torch.stack([m[1] for m in moments]), torch.stack([m[2] for m in moments]))
    assert n.item() == x.numel() // 3
    torch.testing.assert_close(mean, true_mean, rtol=1e-15, atol=0)
    torch.testing.assert_close(m2 / n, true_var, rtol=1e-10, atol=0)  # error ~ eps·offset/std ~ 1e-12
    naive_var = x.pow(2).mean(dim=(0, 2, 3)) - x.mean(dim=(0, 2, 3)).pow(2)
    assert ((naive_var - true_var).abs() / true_var).max() > 1e-9  # eight or so digits gone
    # Chan's pairwise update, shard by shard, gives the same numbers.
    na, ma, m2a = moments[0]
    for nb, mb, m2b in moments[1:]:
        if nb == 0:
            continue
        delta = mb - ma
        ma, m2a, na = ma + delta * nb / (na + nb), m2a + m2b + delta ** 2 * na * nb / (na + nb), na + nb
    torch.testing.assert_close(m2, m2a, rtol=1e-12, atol=0)


def test_batch_norm_input_grad_is_autograd_of_batch_norm():
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w, g = torch.randn(3, dtype=torch.float64), torch.randn(6, 3, 4, 4, dtype=torch.float64)
    (nn.functional.batch_norm(x, None, None, w, None, training=True) * g).sum().backward()
    mean, var = x.detach().mean(dim=(0, 2, 3)), x.detach().var(dim=(0, 2, 3), correction=0)
    invstd = torch.rsqrt(var + 1e-5)
    x_hat = (x.detach() - mean.view(1, 3, 1, 1)) * invstd.view(1, 3, 1, 1)
    dx = cu.batch_norm_input_grad(g, x_hat, w, invstd, 6 * 16, g.sum(dim=(0, 2, 3)), (g * x_hat).sum(dim=(0, 2, 3)))
    torch.testing.assert_close(dx, x.grad, rtol=1e-12, atol=1e-12)


def test_shard_batch_stats():
    x = torch.randn(16, 3, 4, 4, dtype=torch.float64) * 2 + 5
    whole = cu.shard_batch_stats(x, 1)
    assert whole.mean_error.abs().max() < 1e-12
    torch.testing.assert_close(whole.var_ratio, torch.ones(1, 3, dtype=torch.float64))
    quarters = cu.shard_batch_stats(x, 4)
    assert quarters.counts == [64] * 4 and quarters.means.shape == (4, 3)
    assert quarters.mean_error.abs().max() > 1e-3  # shards are not the batch
    # The shard means average back to the batch mean; shard variances underestimate (spread between shards).
    torch.testing.assert_close(quarters.means.mean(0), quarters.full_mean)
    assert (quarters.vars.mean(0) <= quarters.full_var + 1e-12).all()
    table = cu.shard_stats_table(x, (1, 2, 4, 8))
    assert [row["values per shard"] for row in table] == [256, 128, 64, 32]
    assert table[0]["rms mean error (std)"] < 1e-12 < table[-1]["rms mean error (std)"]
    assert cu.even_shard_sizes(10, 4) == [3, 3, 2, 2]
    with pytest.raises(ValueError, match="summing to the batch size 16"):
        cu.split_batch(x, 2, sizes=[10, 5])


def test_convert_to_sync_bn_keeps_parameters_and_buffers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Sequential(cu.BatchNorm2d(4)))
    model(torch.randn(2, 3, 6, 6))  # moves the running statistics off their initial values
    bn = model[1]
    x = torch.randn(2, 3, 6, 6)
    model.eval()
    before = model(x)
    converted = cu.convert_to_sync_bn(model)
    assert isinstance(converted[1], cu.SyncBatchNorm2d) and isinstance(converted[3][0], cu.SyncBatchNorm2d)
    assert converted[1].weight is bn.weight and converted[1].running_mean is bn.running_mean
    assert not converted[1].training
    torch.testing.assert_close(converted(x), before)


# ----------------------------------------------------------------------------- torchrun


def test_torchrun_script_passes():
    port = cu.free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "experiments/sync_bn_torchrun.py", "--shard-sizes", "5", "3", "--offset", "1e4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all 8 quantities match" in proc.stdout, proc.stdout
    assert proc.stdout.count("vs nn.BatchNorm2d") == 1  # rank 0 alone prints


# ----------------------------------------------------------------------------- nn.SyncBatchNorm needs an accelerator

# What PyTorch 2.14 says on CPU, checked on this machine (2 gloo processes, and also with one):
#   ValueError: SyncBatchNorm expected input tensor to be on GPU or XPU or privateuseone
# nn.SyncBatchNorm.forward checks the device before it looks at the world size, so even one
# process with a process group fails; without a process group it falls back to plain BN.
TORCH_SYNC_BN_CPU_ERROR = "SyncBatchNorm expected input tensor to be on GPU"


def _torch_sync_bn_on_cpu(rank: int, world_size: int) -> str:
    try:
        nn.SyncBatchNorm(3)(torch.randn(4, 3, 2, 2))
    except ValueError as err:
        return str(err)
    return "no error"


def test_torch_sync_batchnorm_refuses_cpu():
    assert all(TORCH_SYNC_BN_CPU_ERROR in message for message in cu.spawn(_torch_sync_bn_on_cpu, 2,
                                                                          timeout_s=TIMEOUT_S))


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="nn.SyncBatchNorm needs an accelerator in train mode; on CPU it raises 'ValueError: "
                           "SyncBatchNorm expected input tensor to be on GPU or XPU or privateuseone'")
def test_torch_sync_batchnorm_matches_full_batch_on_cuda():
    # Both ranks on the one GPU there may be (gloo, which NCCL would refuse), float64.
    for layer in (nn.SyncBatchNorm, cu.SyncBatchNorm2d):
        cu.check_all(cu.check_sync_bn_against_full_batch(layer, 2, shard_sizes=(5, 3), device="cuda", verbose=False,
                                                         timeout_s=TIMEOUT_S), layer.__name__)


# ----------------------------------------------------------------------------- spawn's failures


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, dead but not yet reaped by its new parent, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def assert_all_gone(pid_dir: Path, expected: int) -> None:
    pids = [int(p.read_text()) for p in sorted(pid_dir.glob("*.pid"))]
    assert len(pids) == expected, pids
    deadline = time.monotonic() + 2  # a killed grandchild is reaped by init, not by us: give it a moment
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)], "processes outlived spawn()"


def _record_pid(pid_dir: str, name: str, pid: int | None = None) -> None:
    Path(pid_dir, f"{name}.pid").write_text(str(pid or os.getpid()))


def fail_on_rank_1(rank: int, world_size: int, pid_dir: str) -> None:
    _record_pid(pid_dir, f"rank{rank}")
    if rank == 1:
        raise ValueError("boom from rank 1")
    dist.barrier()  # rank 0 waits for a partner that will never come


def exit_on_rank_1(rank: int, world_size: int, pid_dir: str) -> None:
    _record_pid(pid_dir, f"rank{rank}")
    if rank == 1:
        os._exit(3)
    dist.barrier()


def hang_with_a_grandchild(rank: int, world_size: int, pid_dir: str) -> None:
    _record_pid(pid_dir, f"rank{rank}")
    child = subprocess.Popen(["sleep", "60"])  # what a DataLoader worker or a tool started by fn would be
    _record_pid(pid_dir, f"rank{rank}-child", child.pid)
    time.sleep(60)


def return_rank(rank: int, world_size: int) -> int:
    return rank * 10 + world_size


def test_spawn_returns_in_rank_order(tmp_path):
    assert cu.spawn(return_rank, 2, timeout_s=TIMEOUT_S) == [2, 12]


def test_rank_that_raises(tmp_path):
    start = time.monotonic()
    with pytest.raises(cu.DistributedRunError) as info:
        cu.spawn(fail_on_rank_1, 2, str(tmp_path), timeout_s=TIMEOUT_S)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert message.startswith("spawn(fail_on_rank_1, world_size=2): rank 1 raised an exception")
    assert "ValueError: boom from rank 1" in message and "in fail_on_rank_1" in message  # the child's traceback
    assert info.value.rank == 1 and info.value.exitcode is None
    assert_all_gone(tmp_path, 2)


def test_rank_that_exits(tmp_path):
    start = time.monotonic()
    with pytest.raises(cu.DistributedRunError, match="rank 1 exited with code 3 before returning") as info:
        cu.spawn(exit_on_rank_1, 2, str(tmp_path), timeout_s=TIMEOUT_S)
    assert time.monotonic() - start < 10
    assert info.value.rank == 1 and info.value.exitcode == 3
    assert_all_gone(tmp_path, 2)


def test_timeout_stops_ranks_and_what_they_started(tmp_path):
    start = time.monotonic()
    with pytest.raises(cu.DistributedTimeoutError, match=r"did not finish within timeout_s=2 s; ranks 0, 1"):
        cu.spawn(hang_with_a_grandchild, 2, str(tmp_path), timeout_s=2)
    assert time.monotonic() - start < 8
    assert_all_gone(tmp_path, 4)


def test_port_in_use_is_a_clear_error_or_a_retry(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(cu.DistributedRunError, match=f"127.0.0.1:{busy}, the port is already in use"):
            cu.spawn(return_rank, 2, port=busy, timeout_s=TIMEOUT_S)
        assert time.monotonic() - start < 10
        # Left to pick, spawn() tries another port when the one it picked was taken meanwhile.
        picks, real_free_port = iter([busy]), D.free_port
        monkeypatch.setattr(D, "free_port", lambda: next(picks, None) or real_free_port())
        assert cu.spawn(return_rank, 2, timeout_s=TIMEOUT_S) == [2, 12]


def test_unpicklable_function_under_spawn_says_what_to_do():
    with pytest.raises(TypeError, match="define it in a module"):
        cu.spawn(lambda rank, world_size: rank, 2, start_method="spawn")


def test_fork_refuses_more_than_one_thread():
    with pytest.raises(ValueError, match="OpenMP threads deadlock"):
        cu.spawn(return_rank, 2, start_method="fork", threads_per_process=2)


def return_a_lambda(rank: int, world_size: int):
    return lambda: rank


def test_unpicklable_return_value_is_named():
    with pytest.raises(cu.DistributedRunError, match="the return value cannot be pickled"):
        cu.spawn(return_a_lambda, 2, timeout_s=TIMEOUT_S)
