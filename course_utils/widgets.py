"""The fine-tuning lab of notebook 06: one configuration object, a function that runs it, and a widget panel.

``run_lab(LabConfig(...))`` fine-tunes the pretrained ResNet-18 and appends a
row to the results log; the panel (:class:`FineTuningLab`) builds the same
``LabConfig`` from its controls and calls the same function, drawing live
curves while it trains. Only widgets common to ipywidgets 7.7 (Colab) and 8
are used.
"""
from __future__ import annotations

import copy
import math
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn as nn

from .config import get_device, seed_everything
from .data import ImageTensors, load_dataset, load_domain, to_rgb32
from .models import load_pretrained_resnet18, replace_head
from .normalization import channel_stats, per_image_zscore
from .plotting import PALETTE
from .train import History, append_result, evaluate, fit, read_results
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
            device: torch.device | None = None) -> LabResult:
    """Fine-tune the pretrained ResNet-18 as ``config`` says, log the run, return a :class:`LabResult`.

    Steps: validate; load data and the pretrained model; new head; optional
    input layer; freeze; BN mode (recomputing statistics first if asked);
    train with :func:`~course_utils.train.fit`; evaluate; append a row to
    ``config.log_path``. The row's ``run_id`` is unique to this run, so the
    run can be found in a log that other runs (earlier sessions, other
    notebooks) share; ``result.row["run_id"]`` holds it.
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
    before = evaluate(model, val_loader)

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
        fit(model, train_loader, epochs=epochs, lr=config.lr, optimizer=config.optimizer, val_loader=val_loader,
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


# --------------------------------------------------------------------------- charts

def plot_live(axes, history: History, title: str = "") -> None:
    """Loss per step and accuracy per epoch (train and validation) of a run in progress."""
    ax_loss, ax_acc = axes
    steps = history.series("loss", per="step")
    ax_loss.plot(range(1, len(steps) + 1), steps, color=PALETTE[0], lw=1)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title(title or "loss", fontsize=9)
    for key, colour, name in (("train_acc", PALETTE[0], "train"), ("val_acc", PALETTE[1], "validation")):
        ys = history.series(key)
        if ys:
            ax_acc.plot(range(1, len(ys) + 1), ys, marker="o", color=colour, label=name)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    if ax_acc.lines:
        ax_acc.legend()


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


# --------------------------------------------------------------------------- the panel

def _show(fig) -> None:
    from IPython.display import display
    display(fig)
    plt.close(fig)


class FineTuningLab:
    """The widget panel: controls for every :class:`LabConfig` field, Run, live curves, run comparison.

    ``lab = FineTuningLab(); display(lab.widget)``. ``lab.config()`` is the
    ``LabConfig`` the controls describe; ``lab.run()`` is what the Run button does.

    The panel keeps the weights of its latest ``keep_runs`` runs for the
    histograms. ``lab.results`` holds the panel's own shallow copies of the runs
    it was given, and only those copies let go of older weights: a
    :class:`LabResult` handed to :meth:`add_result` is never changed.
    """

    def __init__(self, log_path: str | Path = DEFAULT_LOG, *, defaults: LabConfig | None = None,
                 keep_runs: int = 6) -> None:
        import ipywidgets as W

        if isinstance(keep_runs, bool) or not isinstance(keep_runs, int) or keep_runs < 1:
            raise ValueError(f"keep_runs must be a positive integer (the latest run's weights are always kept), "
                             f"got {keep_runs!r}")
        self.W = W
        self.log_path = str(log_path)
        self.keep_runs = keep_runs
        self.results: list[LabResult] = []
        d = defaults or LabConfig(log_path=self.log_path)
        style = {"description_width": "110px"}
        wide = W.Layout(width="380px")

        def dropdown(key, description):
            return W.Dropdown(options=list(CHOICES[key]), value=getattr(d, key), description=description,
                              style=style, layout=wide)

        self.controls = {
            "dataset": dropdown("dataset", "dataset"),
            "normalization": dropdown("normalization", "input norm"),
            "input_layer": dropdown("input_layer", "input layer"),
            "norm_layer": dropdown("norm_layer", "norm layers"),
            "bn_mode": dropdown("bn_mode", "BN mode"),
            "freezing": dropdown("freezing", "freezing"),
            "pretrained": dropdown("pretrained", "pretrained"),
            "lr": W.FloatLogSlider(value=d.lr, base=10, min=-5, max=-1, step=0.25, description="learning rate",
                                   style=style, layout=wide, readout_format=".1e"),
            "epochs": W.IntSlider(value=d.epochs, min=1, max=20, description="epochs", style=style, layout=wide),
            "batch_size": W.Dropdown(options=[8, 16, 32, 64, 128, 256], value=d.batch_size, description="batch size",
                                     style=style, layout=wide),
            "n_train": W.IntSlider(value=d.n_train, min=100, max=30000, step=100, description="train images",
                                   style=style, layout=wide),
        }
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.compare_button = W.Button(description="Compare runs", icon="bar-chart")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="idle", style=style, layout=wide)
        self.status = W.HTML(value="")
        self.live = W.Output()
        self.comparison = W.Output()
        self.run_a = W.Dropdown(options=[], description="run A", style=style, layout=wide)
        self.run_b = W.Dropdown(options=[], description="run B", style=style, layout=wide)
        self.hist_button = W.Button(description="Weight histograms", icon="area-chart")
        self.hist_kind = W.Dropdown(options=["weights", "changes B - A"], value="weights", description="show",
                                    style=style, layout=wide)
        self.histograms = W.Output()
        self.run_button.on_click(lambda _: self.run())
        self.compare_button.on_click(lambda _: self.compare())
        self.hist_button.on_click(lambda _: self.show_histograms())
        left = W.VBox([self.controls[k] for k in ("dataset", "normalization", "input_layer", "norm_layer", "bn_mode",
                                                  "freezing")])
        right = W.VBox([self.controls[k] for k in ("pretrained", "lr", "epochs", "batch_size", "n_train")])
        self.widget = W.VBox([
            W.HTML(value="<b>Fine-tuning lab</b>: choose, press Run; every run is appended to "
                         f"<code>{self.log_path}</code>."),
            W.HBox([left, right]),
            W.HBox([self.run_button, self.compare_button, self.progress]),
            self.status, self.live, self.comparison,
            W.HBox([self.run_a, self.run_b]), W.HBox([self.hist_kind, self.hist_button]), self.histograms,
        ])

    def config(self) -> LabConfig:
        """The :class:`LabConfig` the controls describe."""
        values = {k: w.value for k, w in self.controls.items()}
        values["lr"] = float(values["lr"])
        return LabConfig(**values, log_path=self.log_path)

    def _set_busy(self, busy: bool) -> None:
        self.run_button.disabled = busy
        self.compare_button.disabled = busy

    def run(self, config: LabConfig | None = None) -> LabResult | None:
        """Run one configuration (the controls' by default) with live curves; returns its result."""
        config = config or self.config()
        try:
            config.validate()
        except ValueError as err:
            self.status.value = f"<span style='color:#d62728'>Not started: {err}</span>"
            return None
        total = [0]
        history_view = History()
        steps_per_epoch = math.ceil(min(config.n_train, 10**9) / config.batch_size)
        self.progress.max = max(1, config.epochs * steps_per_epoch)
        self.progress.value = 0
        self.progress.description = "training"
        self.status.value = f"running: {config.label()}"
        redraw_every = max(1, self.progress.max // 15)

        def redraw():
            with self.live:
                from IPython.display import clear_output
                clear_output(wait=True)
                fig, axes = plt.subplots(1, 2, figsize=(9, 3))
                plot_live(axes, history_view, config.label())
                fig.tight_layout()
                _show(fig)

        def on_step(row):
            history_view.steps.append(row)
            total[0] += 1
            self.progress.value = min(total[0], self.progress.max)
            if total[0] % redraw_every == 0:
                redraw()

        def on_epoch(row):
            history_view.epochs.append(row)
            redraw()

        self._set_busy(True)
        try:
            result = run_lab(config, on_step=on_step, on_epoch=on_epoch, progress=False)
        except Exception as err:  # show it in the panel, then let the notebook see it too
            self.status.value = f"<span style='color:#d62728'>Failed: {type(err).__name__}: {err}</span>"
            raise
        finally:
            self._set_busy(False)
            self.progress.description = "done"
        self.add_result(result)
        self.status.value = (f"run #{len(self.results)}: validation accuracy {result.metrics['val_acc']:.1%} "
                             f"(before: {result.metrics['val_acc_before']:.1%}), {result.metrics['seconds']:.0f} s")
        self.compare()
        return result

    def add_result(self, result: LabResult) -> None:
        """List a run for the histograms; the panel holds the weights of its latest ``keep_runs`` runs.

        The panel stores a shallow copy of ``result`` and, for runs older than
        the latest ``keep_runs``, drops that copy's references to the weights.
        ``result`` itself is left as it was, weights included.
        """
        self.results.append(copy.copy(result))
        for old in self.results[:-self.keep_runs]:
            old.state = old.start_state = None
        options = [(f"#{i + 1} {r.config.label()}", i) for i, r in enumerate(self.results) if r.state is not None]
        start = [("pretrained start (of the latest run)", -1)]
        self.run_a.options = start + options
        self.run_b.options = start + options
        if options:
            self.run_a.value = options[-2][1] if len(options) > 1 else -1
            self.run_b.value = options[-1][1]

    def compare(self) -> None:
        """Redraw the chart of every run in the results log."""
        rows = read_results(self.log_path)
        with self.comparison:
            from IPython.display import clear_output
            clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(9, 3))
            plot_runs(ax, rows)
            ax.set_title(f"validation accuracy of the last {min(len(rows), 12)} runs in {self.log_path}")
            fig.tight_layout()
            _show(fig)
            print(run_table(rows))

    def _state(self, index: int) -> tuple[dict, str]:
        if index == -1:
            return self.results[-1].start_state, "pretrained"
        return self.results[index].state, f"run #{index + 1}"

    def show_histograms(self) -> None:
        """Per-layer histograms of run A's and B's weights, or of B - A."""
        if not self.results or self.run_a.value is None or self.run_b.value is None:
            with self.histograms:
                print("run the lab at least once first")
            return
        (a, name_a), (b, name_b) = self._state(self.run_a.value), self._state(self.run_b.value)
        with self.histograms:
            from IPython.display import clear_output
            clear_output(wait=True)
            _show(plot_weight_histograms(a, b, labels=(name_a, name_b),
                                         difference=self.hist_kind.value != "weights"))


def lab_panel(log_path: str | Path = DEFAULT_LOG, **kwargs) -> FineTuningLab:
    """Build the lab panel (display ``.widget``)."""
    return FineTuningLab(log_path, **kwargs)
