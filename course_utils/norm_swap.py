"""Replace every BatchNorm2d of a model by another norm layer, carrying what can be carried.

``cu.swap_norm(model, "groupnorm")`` walks the model's modules, swaps each
``nn.BatchNorm2d`` (any subclass too) for the layer the kind names, and reports
what it did: module name, old and new layer, channel count, and which of the
pretrained tensors went into the new layer. The kinds:

==============  ============================================  ============================================
kind            new layer (C channels)                         carried from BN
==============  ============================================  ============================================
batchnorm       ``nn.BatchNorm2d(C)``                          weight, bias, running statistics
frozen          ``torchvision.ops.FrozenBatchNorm2d(C)``       weight, bias, running statistics (fixed)
groupnorm       ``nn.GroupNorm(groups, C)``, groups=32         weight, bias (GN keeps no statistics)
layernorm       ``nn.GroupNorm(1, C)``: LN over (C, H, W)      weight, bias
instancenorm    ``nn.GroupNorm(C, C)``: IN with affine         weight, bias
none            ``nn.Identity()``                              nothing
==============  ============================================  ============================================

``layernorm`` is layer norm over each sample's (C, H, W) values with one weight
and bias per channel. ``nn.LayerNorm([C, H, W])`` normalizes over the same values
but learns one weight per element and fixes H and W; ``nn.LayerNorm(C)`` on an
(N, C, H, W) tensor would need channels last and normalizes each pixel over its
channels only, a different layer. ``instancenorm`` is built as ``GroupNorm(C, C)``
rather than ``nn.InstanceNorm2d(C, affine=True)`` (same values) because the
latter raises in train mode on 1x1 maps. On a 1x1 map instance norm has nothing
to average: every value is its own mean, so the layer outputs its bias and
nothing of its input gets through. With a ``probe`` batch, ``swap_norm`` finds
those layers (ResNet-18's layer4 at 32x32 input) and puts layer norm over the
channels there instead, and says so in the report.

A factory ``f(C) -> nn.Module`` may stand for the kind (the course's by-hand
layers, or the student's own); each layer it makes is run on a probe input
before anything is swapped, and a layer that changes the shape or dtype of
its input is refused with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

NORM_KINDS = ("batchnorm", "frozen", "groupnorm", "layernorm", "instancenorm", "none")
TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass
class Swap:
    """One replaced layer: where, what it was, what it became, and what came across."""

    name: str
    old: str
    new: str
    channels: int
    carried: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    note: str = ""


class SwapReport(list):
    """The list of :class:`Swap` rows, and the BN layers left alone (``untouched``); prints as a table."""

    def __init__(self, rows=(), untouched=()) -> None:
        super().__init__(rows)
        self.untouched = list(untouched)

    def __str__(self) -> str:
        if not self:
            return "no BatchNorm2d layer found: nothing swapped"
        rows = [("module", "old", "new", "C", "carried", "not carried")]
        rows += [(s.name, s.old, s.new, str(s.channels), ", ".join(s.carried) or "-",
                  ", ".join(s.dropped) or "-") for s in self]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        notes = sorted({s.note for s in self if s.note})
        if self.untouched:
            notes.append(f"left as they were (not BatchNorm2d): {', '.join(self.untouched)}")
        return "\n".join(lines + [f"note: {n}" for n in notes])

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython shows the table
        printer.text(str(self))


def _describe(module: nn.Module) -> str:
    """``BatchNorm2d(64)``, ``GroupNorm(32, 64)``: the layer and its sizes, without eps and flags."""
    text = repr(module).split("\n")[0].split(", eps")[0].split(", affine")[0]
    text = text if text.endswith(")") else text + ")"
    return text if len(text) <= 40 else text[:37] + "..."


def norm_layer(kind: str, num_channels: int, *, groups: int = 32, eps: float = 1e-5) -> nn.Module:
    """The layer ``kind`` names for ``num_channels`` channels (see the module docstring's table)."""
    if kind == "batchnorm":
        return nn.BatchNorm2d(num_channels, eps=eps)
    if kind == "frozen":
        from torchvision.ops import FrozenBatchNorm2d
        return FrozenBatchNorm2d(num_channels, eps=eps)
    if kind == "groupnorm":
        if num_channels % groups:
            divisors = [g for g in range(1, num_channels + 1) if num_channels % g == 0]
            raise ValueError(f"groupnorm: groups={groups} does not divide a layer's {num_channels} channels; "
                             f"pass groups= one of {divisors} (a divisor of every layer's channel count)")
        return nn.GroupNorm(groups, num_channels, eps=eps)
    if kind == "layernorm":
        return nn.GroupNorm(1, num_channels, eps=eps)
    if kind == "instancenorm":
        return nn.GroupNorm(num_channels, num_channels, eps=eps)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm kind {kind!r}; choose one of {NORM_KINDS} or pass a factory f(C) -> nn.Module")


def _carry(old: nn.Module, new: nn.Module) -> tuple[list[str], list[str]]:
    """Copy BN's tensors into ``new`` where ``new`` has a tensor of that name and shape; (carried, dropped)."""
    carried, dropped = [], []
    targets = {**dict(new.named_parameters(recurse=False)), **dict(new.named_buffers(recurse=False))}
    for name in TENSORS:
        source = getattr(old, name, None)
        if not isinstance(source, torch.Tensor):
            continue
        target = targets.get(name)
        if isinstance(target, torch.Tensor) and target.shape == source.shape:
            with torch.no_grad():
                target.copy_(source.to(target.dtype))
            carried.append(name)
        elif name != "num_batches_tracked":
            dropped.append(name)
    return carried, dropped


def _probe_inputs(model: nn.Module, probe: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The input each BatchNorm2d sees when ``model`` runs ``probe`` (eval mode, no grad); {} without one."""
    if probe is None:
        return {}
    seen: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, args[0].detach()))
             for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return seen


def _check_made(layer: nn.Module, x: torch.Tensor, name: str, made_by: str) -> None:
    """Run ``layer`` on ``x`` and refuse it if the output's shape or dtype differs from the input's."""
    if not isinstance(layer, nn.Module):
        raise TypeError(f"{made_by} returned {type(layer).__name__} for {name}; it must return an nn.Module")
    layer = layer.to(x.device)
    try:
        with torch.no_grad():
            y = layer.train()(x)
    except Exception as err:  # the student's layer: show what it was given
        raise ValueError(f"{made_by}'s layer for {name} fails on an input of shape {tuple(x.shape)}, "
                         f"dtype {x.dtype}: {type(err).__name__}: {err}") from err
    if not isinstance(y, torch.Tensor) or y.shape != x.shape or y.dtype != x.dtype:
        got = f"shape {tuple(y.shape)}, dtype {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"{made_by}'s layer for {name} must return a tensor shaped like its input: "
                         f"got {got} from shape {tuple(x.shape)}, dtype {x.dtype}. A norm layer normalizes in "
                         "place of BatchNorm2d, so it keeps (N, C, H, W) and the dtype.")


def swap_norm(model: nn.Module, kind: str | Callable[[int], nn.Module] = "groupnorm", *, groups: int = 32,
              eps: float | None = None, probe: torch.Tensor | None = None, verbose: bool = True) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``model`` by the layer ``kind`` names; returns ``model``.

    Args:
        model: any ``nn.Module`` (torchvision's ResNet-18, a small CNN, BN inside ``nn.Sequential``).
        kind: one of :data:`NORM_KINDS`, or a factory ``f(C) -> nn.Module`` (``lambda c: cu.GroupNorm(8, c)``).
        groups: for ``"groupnorm"``: groups per layer; must divide every layer's channel count.
        eps: the new layers' epsilon; by default each BN layer's own.
        probe: an input batch for ``model``: each new layer is checked on what its BN saw, and
            ``"instancenorm"`` finds the layers that see 1x1 maps. Without it, factories are checked on
            a (2, C, 4, 4) batch, and ``"instancenorm"`` asks for one.
        verbose: print the report.

    The new layers take the device and dtype of the BN layer they replace, and its mode (train or eval).
    Where the new layer has a tensor of the same name and shape (weight, bias, running statistics),
    the pretrained values are copied into it; the rest is listed as not carried. The report, a
    :class:`SwapReport`, is also kept as ``model.norm_swap_report``.
    """
    if isinstance(kind, str) and kind not in NORM_KINDS:
        raise ValueError(f"unknown norm kind {kind!r}; choose one of {NORM_KINDS} or pass a factory f(C) -> nn.Module")
    if not isinstance(kind, str) and not callable(kind):
        raise TypeError(f"kind must be one of {NORM_KINDS} or a callable f(C) -> nn.Module, got {type(kind).__name__}")
    if kind == "instancenorm" and probe is None:
        raise ValueError("swap_norm(model, 'instancenorm') needs probe=, an input batch (for example one batch of "
                         "your data): instance norm is undefined on 1x1 maps, and the probe shows which layers "
                         "see them")
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)]
    if any(name == "" for name, _ in targets):
        raise ValueError("swap_norm replaces the BatchNorm2d layers inside a model; this model is one itself. "
                         "Build the new layer directly (cu.norm_swap.norm_layer(kind, C))")
    # BatchNorm1d/3d (a BN in a classifier head, say) are left as they are, and the report says so
    others = [name for name, m in model.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.BatchNorm2d)]
    seen = _probe_inputs(model, probe)
    made_by = "swap_norm" if isinstance(kind, str) else f"the factory {getattr(kind, '__name__', repr(kind))}"

    # build and check every new layer before the model is touched
    plan = []
    for name, old in targets:
        c = old.num_features
        ref = old.weight if old.weight is not None else old.running_mean
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        x = seen.get(name)
        if x is None:
            x = torch.randn(2, c, 4, 4, device=device, dtype=dtype)
        note = ""
        if kind == "instancenorm" and x.shape[2:].numel() == 1:
            new = norm_layer("layernorm", c, eps=old.eps if eps is None else eps)
            note = ("instancenorm on a 1x1 map would output its bias only (each value is its own mean); "
                    "those layers got layer norm over the channels, GroupNorm(1, C)")
        elif isinstance(kind, str):
            new = norm_layer(kind, c, groups=groups, eps=old.eps if eps is None else eps)
        else:
            new = kind(c)
        if isinstance(new, nn.Module):
            new = new.to(device=device, dtype=dtype)
        _check_made(new, x, name, made_by)
        plan.append((name, old, new, note))

    report = SwapReport(untouched=others)
    for name, old, new, note in plan:
        carried, dropped = _carry(old, new)
        new.train(old.training)
        if isinstance(new, nn.Identity):
            dropped = [t for t in TENSORS[:4] if isinstance(getattr(old, t, None), torch.Tensor)]
        report.append(Swap(name, _describe(old), _describe(new), old.num_features, carried, dropped, note))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    model.norm_swap_report = report
    if verbose:
        print(report)
    return model
