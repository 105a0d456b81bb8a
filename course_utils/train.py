"""One training loop for the whole course: pretraining, notebook 07's experiments and the lab.

Batches come from a :class:`~course_utils.data.TensorLoader` (uint8 on the
device, normalized per batch in one operation). Mixed precision and
channels_last are switched on where the device benefits (CUDA), off on the CPU.
Bad settings are rejected before any training starts. On the CPU a run is
deterministic: the same seed gives the same weights, bit for bit.

Every run can be appended to a results log (a CSV file) with
:func:`append_result`; :func:`read_results` reads it back.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import get_device

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class History:
    """What happened during training: one row per step and one per epoch."""

    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)

    def last(self, key: str, default=None):
        """The latest epoch value of ``key`` (for example ``"val_acc"``)."""
        for row in reversed(self.epochs):
            if key in row:
                return row[key]
        return default

    def series(self, key: str, per: str = "epoch") -> list:
        """All values of ``key``, per ``"epoch"`` or per ``"step"``."""
        rows = self.epochs if per == "epoch" else self.steps
        return [r[key] for r in rows if key in r]

    def __repr__(self) -> str:
        last = self.epochs[-1] if self.epochs else {}
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
        return f"History({len(self.epochs)} epochs, {len(self.steps)} steps; last: {shown})"


def _check_settings(epochs: int, lr: float, optimizer, loader, model: nn.Module | None = None,
                    val_loader=None) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr (learning rate) must be a positive number, got {lr!r}; typical values are 1e-4 to 1e-1")
    if isinstance(optimizer, str) and optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS} or pass a torch.optim.Optimizer")
    if not isinstance(optimizer, (str, torch.optim.Optimizer)):
        raise TypeError(f"optimizer must be a name {OPTIMIZERS} or a torch.optim.Optimizer, got {type(optimizer).__name__}")
    for name, ld in (("train_loader", loader), ("val_loader", val_loader)):
        if ld is None and name == "val_loader":
            continue
        if not hasattr(ld, "__iter__"):
            raise TypeError(f"{name} must yield (images, labels) batches, got {type(ld).__name__}")
        if hasattr(ld, "__len__") and len(ld) == 0:
            raise ValueError(f"{name} yields no batches (batch size larger than the data with drop_last?)")
    if model is not None and not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no parameter requires a gradient: everything is frozen, so there is nothing to train")


def make_optimizer(params: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no parameter requires a gradient: everything is frozen, so there is nothing to train")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def autocast_for(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA when asked; a no-op context elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BN running buffer (running_mean, running_var, num_batches_tracked)."""
    return {name: buf.detach().clone() for name, buf in model.named_buffers()
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, device: torch.device | None = None, amp: bool | None = None,
             train_mode: bool = False) -> dict:
    """Mean loss and accuracy of ``model`` over ``loader``: ``{"loss", "acc", "n"}``.

    Evaluates in eval mode unless ``train_mode``, which shows what batch
    statistics do at inference. A BN layer in train mode updates its running
    buffers even under ``torch.no_grad()``; ``evaluate`` puts them back, and the
    model's mode, so evaluating never changes the model.
    """
    device = device or next(model.parameters()).device
    amp = device.type == "cuda" if amp is None else amp
    was_training = model.training
    modes = {m: m.training for m in model.modules()}
    saved = _bn_buffers(model) if train_mode else {}
    model.train(train_mode)
    total, correct, loss_sum = 0, 0, 0.0
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast_for(device, amp):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            total += y.numel()
    finally:
        model.train(was_training)
        for m, mode in modes.items():  # submodules may have had their own mode (frozen BN)
            m.training = mode
        if saved:
            buffers = dict(model.named_buffers())
            for name, value in saved.items():
                buffers[name].copy_(value)
    if total == 0:
        raise ValueError("the evaluation loader yielded no data")
    return {"loss": loss_sum / total, "acc": correct / total, "n": total}


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer, *,
               amp: bool = False, device: torch.device | None = None) -> tuple[float, int]:
    """One optimisation step on a batch already on the device: forward, loss, backward, update.

    Returns ``(loss, correct)``: the batch's mean loss and its number of correct
    predictions, as Python numbers. Reading them is the step's one wait for the
    device (on a GPU every ``.item()`` is such a wait); it comes before the update,
    so a non-finite loss stops training before it reaches the weights. The
    benchmark times exactly this step.
    """
    device = device or x.device
    with autocast_for(device, amp):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    # both numbers in one transfer; a float32 count is exact far beyond any batch size
    loss_value, correct = torch.stack([loss.detach(), (logits.argmax(1) == y).sum().to(loss.dtype)]).tolist()
    if not math.isfinite(loss_value):  # stop before a NaN reaches the weights
        lr = opt.param_groups[0]["lr"]
        raise FloatingPointError(f"the loss became {loss_value}: the learning rate ({lr:g}) is probably too high, "
                                 "or the inputs are not normalized")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss_value, int(correct)


def fit(
    model: nn.Module,
    train_loader,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    optimizer: str | torch.optim.Optimizer = "adam",
    weight_decay: float = 0.0,
    val_loader=None,
    device: torch.device | None = None,
    amp: bool | None = None,
    channels_last: bool | None = None,
    schedule: str = "cosine",
    seed: int | None = 0,
    progress: bool = True,
    before_epoch: Callable[[nn.Module, int], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    history: History | None = None,
    bn_mode: str | None = None,
) -> History:
    """Train ``model`` with cross-entropy and return its :class:`History`.

    ``before_epoch(model, epoch)`` runs after ``model.train()`` at the start of
    each epoch: the place to put BN layers back in eval mode or unfreeze layers.
    ``on_step`` and ``on_epoch`` receive each row as it is logged (live plots).
    ``bn_mode`` (see :func:`course_utils.transfer.set_bn_mode`: ``"train"``,
    ``"frozen_stats"``, ``"frozen"``) is re-applied after every ``model.train()``,
    because ``model.train()`` puts every BN layer back into train mode.
    ``amp`` and ``channels_last`` default to on for CUDA and off elsewhere.
    ``seed`` seeds PyTorch before training (the loader draws its own order from
    its own seed); on the CPU two runs with the same seed give identical weights.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    _check_settings(epochs, lr, optimizer, train_loader, model, val_loader)
    if bn_mode is not None:
        from .transfer import BN_MODES, set_bn_mode
        if bn_mode not in BN_MODES or bn_mode == "recomputed":
            raise ValueError(f"fit's bn_mode must be one of {[m for m in BN_MODES if m != 'recomputed']} or None, "
                             f"got {bn_mode!r} (recompute statistics first with cu.recompute_bn_stats, then use "
                             "'frozen_stats')")
        set_bn_mode(model, bn_mode)  # before the optimizer is made, so frozen gamma/beta stay out of it
    device = device or get_device()
    amp = device.type == "cuda" if amp is None else amp
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    if seed is not None:
        torch.manual_seed(seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), optimizer, lr, weight_decay) if isinstance(optimizer, str) else optimizer
    steps_per_epoch = len(train_loader)
    total_steps = epochs * steps_per_epoch
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps) if schedule == "cosine"
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
    history = history or History()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        # redrawn at most once a second: a bar that redraws every step floods logs and nbval's output channel
        bar = tqdm(total=total_steps, desc="training", leave=False, mininterval=1.0)
    step = len(history.steps)
    try:
        for epoch in range(epochs):
            model.train()
            if bn_mode is not None:
                set_bn_mode(model, bn_mode)
            if before_epoch is not None:
                before_epoch(model, epoch)
            start, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
            for x, y in train_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                loss, batch_correct = train_step(model, x, y, opt, amp=amp, device=device)
                sched.step()
                step += 1
                row = {"step": step, "epoch": epoch + 1, "loss": loss, "acc": batch_correct / y.numel(),
                       "lr": opt.param_groups[0]["lr"]}
                history.steps.append(row)
                seen += y.numel()
                correct += batch_correct
                loss_sum += row["loss"] * y.numel()
                if on_step is not None:
                    on_step(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
            seconds = time.perf_counter() - start
            erow = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                    "seconds": seconds, "images_per_s": seen / seconds}
            if val_loader is not None:
                val = evaluate(model, val_loader, device=device, amp=amp)
                erow.update(val_loss=val["loss"], val_acc=val["acc"])
            history.epochs.append(erow)
            if on_epoch is not None:
                on_epoch(erow)
    finally:
        if bar is not None:
            bar.close()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return history


# --------------------------------------------------------------------------- results log

def append_result(path: str | Path, row: dict) -> Path:
    """Append one run (a flat dict) to the CSV results log at ``path``, creating it if needed.

    A row with a column the file does not have yet rewrites the file with the
    wider header (earlier rows get an empty cell), so the log never loses a run.
    """
    path = Path(path)
    if not row:
        raise ValueError("append_result got an empty row")
    rows = read_results(path) if path.exists() else []
    fields = list(rows[0].keys()) if rows else []
    for r in rows[1:] + [row]:
        fields += [k for k in r if k not in fields]
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows and fields == list(rows[0].keys()):
        with open(path, "a", newline="") as fh:  # the usual case: same columns, just append
            csv.DictWriter(fh, fieldnames=fields).writerow(row)
        return path
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows + [row])
    return path


def read_results(path: str | Path) -> list[dict]:
    """The rows of a results log written by :func:`append_result`, numbers converted back to numbers."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))

    def convert(value: str):
        for kind in (int, float):
            try:
                return kind(value)
            except (TypeError, ValueError):
                pass
        return value

    return [{k: convert(v) for k, v in r.items()} for r in rows]
