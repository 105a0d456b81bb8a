"""The widget panel of notebook 10's fine-tuning lab, over :mod:`course_utils.lab`.

:class:`FineTuningLab` builds a :class:`~course_utils.lab.LabConfig` from its
controls and calls the same :func:`~course_utils.lab.run_lab` that code and
scripts call, drawing live curves while it trains and comparing the runs in the
results log. ipywidgets is imported only when a panel is built, so importing
this module (and ``course_utils``) works without it. Only widgets common to
ipywidgets 7.7 (Colab) and 8 are used.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import matplotlib.pyplot as plt

from .lab import (CHOICES, DEFAULT_LOG, LabConfig, LabResult, plot_runs, plot_weight_histograms, read_results,
                  run_lab, run_table)
from .plotting import PALETTE
from .train import History


# --------------------------------------------------------------------------- live curves of the panel

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
