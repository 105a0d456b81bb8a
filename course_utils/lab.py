"""The fine-tuning lab of notebook 10, usable from code or a script: configuration, runner, results log.

``run_lab(LabConfig(...))`` fine-tunes the pretrained ResNet-18 and appends a
row to the results log (:func:`~course_utils.train.append_result`; read it back
with :func:`~course_utils.train.read_results`). :func:`plot_runs`,
:func:`run_table` and :func:`plot_weight_histograms` compare runs with plain
matplotlib. Nothing here imports ipywidgets: the panel over this module is
:mod:`course_utils.widgets`.
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable

import matplotlib.pyplot as plt
import torch

from .config import get_device, seed_everything
from .data import ImageTensors, load_dataset, load_domain, to_rgb32
from .models import load_pretrained_resnet18, replace_head
from .normalization import channel_stats, per_image_zscore
from .plotting import PALETTE
# the results log lives in train.py; read_results is imported so lab.read_results reads what run_lab appends
from .train import History, append_result, evaluate, fit, read_results  # noqa: F401
from .norm_swap import NORM_KINDS, swap_norm
from .transfer import (BN_MODES, INPUT_LAYERS, RENAMED_INPUT_LAYERS, add_input_layer, freeze, recompute_bn_stats,
                       weight_distance)

DATASETS = ("target", "source", "fashion-mnist")
NORMALIZATIONS = ("contract", "dataset", "none", "minus_one_one", "per_image")
FREEZING = ("head", "head+bn", "full", "head_then_full")
PRETRAINED = ("course", "auto", "imagenet")
OPTIMIZERS = ("adam", "sgd", "adamw")
CHOICES = {"dataset": DATASETS, "normalization": NORMALIZATIONS, "input_layer": INPUT_LAYERS,
           "norm_layer": NORM_KINDS, "bn_mode": BN_MODES, "freezing": FREEZING, "pretrained": PRETRAINED, "optimizer": OPTIMIZERS}
HELP = {
    "dataset": {"target": "Fashion-MNIST shoes and bags as negatives (the shifted domain)",
                "source": "the five clothing classes the course model was pretrained on",
                "fashion-mnist": "all ten classes, as stored (light on dark)"},
    "normalization": {"contract": "the pretrained model's mean/std (its contract)",
                      "dataset": "this training set's own per-channel mean/std",
                      "none": "pixels / 255, in [0, 1]",
                      "minus_one_one": "pixels mapped to [-1, 1] (mean 0.5, std 0.5)",
                      "per_image": "each image to mean 0, std 1 over its own pixels"},
    "input_layer": {"none": "conv1 receives the normalized pixels directly",
                    "batchnorm": "BatchNorm2d(3): per channel, over the batch and the pixels",
                    "layernorm": "per image over (C, H, W), one gamma/beta per channel (GroupNorm(1, 3))",
                    "instancenorm": "per image and channel over the pixels (GroupNorm(3, 3), one channel per "
                                    "group)"},
    "norm_layer": {"batchnorm": "ResNet-18's own BatchNorm2d layers, as pretrained",
                   "frozen": "FrozenBatchNorm2d: pretrained statistics and gamma/beta, fixed",
                   "groupnorm": "GroupNorm(32, C): gamma/beta carried, statistics per sample",
                   "layernorm": "GroupNorm(1, C): layer norm over (C, H, W) per sample",
                   "instancenorm": "GroupNorm(C, C), and layer norm where a map is 1x1",
                   "none": "no norm layer at all (Identity)"},
    "freezing": {"head": "only the new head trains", "head+bn": "the head and the norm layers' gamma/beta train "
                 "(fastai)",
                 "full": "everything trains", "head_then_full": "one epoch head only, then everything"},
}
DEFAULT_LOG = "results_lab.csv"


@dataclass
class LabConfig:
    """One fine-tuning run of the lab. ``validate()`` says what is wrong before anything trains.

    ``n_train``/``n_val``: images drawn (seeded) from the training and test
    splits; ``log_path``: the CSV results log (one row per run), or None.
    """

    dataset: str = "target"
    normalization: str = "contract"
    input_layer: str = "none"
    norm_layer: str = "batchnorm"
    bn_mode: str = "train"
    freezing: str = "full"
    lr: float = 1e-3
    epochs: int = 2
    batch_size: int = 64
    n_train: int = 2000
    n_val: int = 1000
    optimizer: str = "adam"
    pretrained: str = "course"
    seed: int = 0
    name: str = ""
    log_path: str | None = DEFAULT_LOG

    def validate(self) -> "LabConfig":
        """Raise ``ValueError`` naming the setting, the value and the choices; return self when all is well."""
        if self.input_layer in RENAMED_INPUT_LAYERS:
            raise ValueError(f"LabConfig.input_layer={self.input_layer!r} is now called "
                             f"{RENAMED_INPUT_LAYERS[self.input_layer]!r} (GroupNorm(C, C) is instance norm); "
                             f"choose one of {INPUT_LAYERS}")
        for key, options in CHOICES.items():
            value = getattr(self, key)
            if value not in options:
                raise ValueError(f"LabConfig.{key}={value!r} is not an option; choose one of {options}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise ValueError(f"LabConfig.lr must be a positive number, got {self.lr!r}; try 1e-4 to 1e-2")
        for key in ("epochs", "batch_size", "n_train", "n_val"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LabConfig.{key} must be a positive integer, got {value!r}")
        if self.batch_size > self.n_train:
            raise ValueError(f"LabConfig.batch_size={self.batch_size} is larger than the training data "
                             f"(n_train={self.n_train}); use a smaller batch or more images")
        if self.norm_layer != "batchnorm" and self.bn_mode != "train":
            raise ValueError(f"LabConfig.bn_mode={self.bn_mode!r} acts on BatchNorm2d layers, and "
                             f"norm_layer={self.norm_layer!r} replaces them; use bn_mode='train' with it "
                             "('frozen' is FrozenBatchNorm2d, whose statistics are fixed already)")
        if self.freezing == "head_then_full" and self.epochs < 2:
            raise ValueError("freezing='head_then_full' trains the head for one epoch and then everything: "
                             f"it needs epochs >= 2, got {self.epochs}")
        return self

    def label(self) -> str:
        """A short readable name for charts."""
        if self.name:
            return self.name
        norm = f"bn={self.bn_mode}" if self.norm_layer == "batchnorm" else f"norm={self.norm_layer}"
        return f"{self.dataset}/{self.normalization}/in={self.input_layer}/{norm}/{self.freezing}/lr={self.lr:g}"


@dataclass
class LabResult:
    """What a lab run gives back: metrics, history, per-layer weight distances and (optionally) the weights."""

    config: LabConfig
    metrics: dict
    history: History
    distances: dict[str, float]
    row: dict
    state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    start_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        m = self.metrics
        return (f"LabResult({self.config.label()}: val_acc={m['val_acc']:.3f}, "
                f"before={m['val_acc_before']:.3f}, {m['seconds']:.1f} s)")


# --------------------------------------------------------------------------- data and normalization

def lab_data(dataset: str, train: bool, n: int, seed: int = 0) -> ImageTensors:
    """The lab's data: a seeded subset of ``n`` images, 3x32x32 uint8."""
    if dataset == "fashion-mnist":
        fm = load_dataset("fashion-mnist", train=train)
        data = ImageTensors(to_rgb32(fm.images), fm.labels, fm.classes, fm.name, fm.source)
    else:
        data = load_domain(dataset, train=train)
    return data.take(n, seed=seed)


def lab_normalization(kind: str, contract, train_images: torch.Tensor):
    """The ``normalize`` argument of :class:`~course_utils.data.TensorLoader` for each lab option."""
    if kind == "contract":
        return (tuple(contract.mean), tuple(contract.std))
    if kind == "dataset":
        mean, std = channel_stats(train_images)
        return (tuple(mean.tolist()), tuple(std.clamp_min(1e-6).tolist()))
    if kind == "minus_one_one":
        return ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    if kind == "per_image":
        return per_image_zscore
    return None  # "none": pixels / 255


# --------------------------------------------------------------------------- one run

def run_lab(config: LabConfig, *, on_step: Callable[[dict], None] | None = None,
            on_epoch: Callable[[dict], None] | None = None, progress: bool = True, keep_weights: bool = True,
            device: torch.device | None = None, evaluate_during: bool = True) -> LabResult:
    """Fine-tune the pretrained ResNet-18 as ``config`` says, log the run, return a :class:`LabResult`.

    Steps: validate; load data and the pretrained model; new head; optional
    input layer; freeze; BN mode (recomputing statistics first if asked);
    train with :func:`~course_utils.train.fit`; evaluate; append a row to
    ``config.log_path``. The row's ``run_id`` is unique to this run, so the
    run can be found in a log that other runs (earlier sessions, other
    notebooks) share; ``result.row["run_id"]`` holds it.

    ``evaluate_during=False`` evaluates only once, after training (``val_acc_before`` is then NaN and
    the history has no validation points): what a grid of many runs needs, where each evaluation costs.
    """
    config.validate()
    device = device or get_device()
    seed_everything(config.seed)
    train = lab_data(config.dataset, True, config.n_train, config.seed)
    val = lab_data(config.dataset, False, config.n_val, config.seed)
    if config.batch_size > len(train):
        raise ValueError(f"batch_size={config.batch_size} is larger than the {len(train)} training images "
                         f"{config.dataset!r} has; use a smaller batch")
    model, contract = load_pretrained_resnet18(config.pretrained, verbose=False, progress=False)
    replace_head(model, len(train.classes), seed=config.seed)
    if config.norm_layer != "batchnorm":  # before the input layer, which may be a BatchNorm2d of its own
        probe = torch.zeros(2, 3, *train.images.shape[-2:])  # shapes only: which layers see 1x1 maps
        swap_norm(model, config.norm_layer, probe=probe, verbose=False)
    add_input_layer(model, config.input_layer)
    model.to(device)
    start_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    normalize = lab_normalization(config.normalization, contract, train.images)
    loader_kw = dict(normalize=normalize, device=device)
    train_loader = train.loader(config.batch_size, shuffle=True, seed=config.seed, **loader_kw)
    val_loader = val.loader(min(500, len(val)), **loader_kw)
    before = evaluate(model, val_loader) if evaluate_during else {"acc": math.nan, "loss": math.nan}

    # a BN mode acts on BatchNorm2d layers; validate() allows only "train" when they were swapped out
    bn_mode = config.bn_mode if config.norm_layer == "batchnorm" else None
    if bn_mode == "recomputed":  # AdaBN: the target's statistics, then kept fixed
        recompute_bn_stats(model, train.loader(min(256, len(train)), **loader_kw))
        bn_mode = "frozen_stats"
    phases = [("head", 1), ("none", config.epochs - 1)] if config.freezing == "head_then_full" else \
        [({"full": "none"}.get(config.freezing, config.freezing), config.epochs)]
    history = History()
    start = time.perf_counter()
    for strategy, epochs in phases:
        freeze(model, strategy)
        fit(model, train_loader, epochs=epochs, lr=config.lr, optimizer=config.optimizer,
            val_loader=val_loader if evaluate_during else None,
            device=device, seed=config.seed, progress=progress, on_step=on_step, on_epoch=on_epoch,
            history=history, bn_mode=bn_mode)
    seconds = time.perf_counter() - start
    after = evaluate(model, val_loader)
    distances = weight_distance(start_state, {k: v.cpu() for k, v in model.state_dict().items()})
    metrics = {"val_acc": after["acc"], "val_loss": after["loss"], "val_acc_before": before["acc"],
               "train_acc": history.last("train_acc"), "train_loss": history.last("train_loss"),
               "seconds": seconds, "images_per_s": history.last("images_per_s"),
               "mean_rel_change": sum(distances.values()) / max(len(distances), 1)}
    row = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "run_id": f"run-{uuid.uuid4().hex[:12]}",
           "label": config.label(),
           **{k: v for k, v in asdict(config).items() if k not in ("log_path", "name")},
           "pretrained_source": contract.source, "n_train_used": len(train), "device": str(device),
           **{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}}
    if config.log_path:
        append_result(config.log_path, row)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if keep_weights else None
    return LabResult(config, metrics, history, distances, row, state, start_state if keep_weights else None)


# --------------------------------------------------------------------------- comparing runs

def plot_runs(ax, rows: list[dict], *, metric: str = "val_acc", last: int = 12):
    """Bar chart of ``metric`` for the latest ``last`` runs of a results log, with the accuracy before training."""
    rows = rows[-last:]
    if not rows:
        ax.text(0.5, 0.5, "no runs logged yet", ha="center", va="center", transform=ax.transAxes)
        return ax
    names = [f"#{i + 1}" for i in range(len(rows))]
    values = [float(r.get(metric, float("nan"))) for r in rows]
    rects = ax.bar(names, values, color=PALETTE[0])
    ax.bar_label(rects, labels=[f"{v:.1%}" for v in values], fontsize=8)
    before = [float(r.get("val_acc_before", float("nan"))) for r in rows]
    ax.scatter(names, before, color=PALETTE[1], marker="_", s=200, zorder=3, label="before fine-tuning")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right")
    return ax


def run_table(rows: list[dict], last: int = 12) -> str:
    """The latest runs as a text table: number, label and accuracy (what ``plot_runs`` numbers)."""
    rows = rows[-last:]
    return "\n".join(f"#{i + 1:<3} {float(r.get('val_acc', float('nan'))):6.1%}  {r.get('label', '')}"
                     for i, r in enumerate(rows))


def layer_weights(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the conv and linear weights (tensors with 2 or more dimensions), in order."""
    return [k for k, v in state.items() if k.endswith("weight") and v.ndim >= 2]


def plot_weight_histograms(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor] | None = None, *,
                           labels: tuple[str, str] = ("run A", "run B"), difference: bool = False,
                           bins: int = 60, max_layers: int = 21):
    """One small histogram per conv/linear layer: weights of A (and B overlaid), or B - A with ``difference``.

    Layers whose shapes differ between the two (a new head of another size) are left out.
    """
    names = layer_weights(state_a)
    if state_b is not None:
        names = [n for n in names if n in state_b and state_b[n].shape == state_a[n].shape]
    names = names[:max_layers]
    if difference and state_b is None:
        raise ValueError("a difference histogram needs two runs")
    cols = min(7, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 1.7 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        a = state_a[name].detach().float().flatten().cpu()
        if difference:
            d = state_b[name].detach().float().flatten().cpu() - a
            ax.hist(d.numpy(), bins=bins, color=PALETTE[2])
        else:
            lo, hi = a.min().item(), a.max().item()
            if state_b is not None:
                b = state_b[name].detach().float().flatten().cpu()
                lo, hi = min(lo, b.min().item()), max(hi, b.max().item())
                ax.hist(b.numpy(), bins=bins, range=(lo, hi), histtype="step", color=PALETTE[1], label=labels[1])
            ax.hist(a.numpy(), bins=bins, range=(lo, hi), histtype="step", color=PALETTE[0], label=labels[0])
        ax.set_title(name.replace(".weight", ""), fontsize=7, fontweight="normal")
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    what = f"{labels[1]} - {labels[0]}" if difference else " vs ".join(labels if state_b is not None else labels[:1])
    fig.suptitle(f"per-layer {'weight changes' if difference else 'weights'}: {what}", fontsize=10)
    fig.tight_layout()
    return fig
