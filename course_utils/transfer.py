"""Batch norm in transfer learning: BN modes, recomputed statistics, freezing, input layers, weight distances.

A BN layer carries two kinds of state, and fine-tuning can treat them apart:

- its **statistics** (buffers ``running_mean``, ``running_var``, ``num_batches_tracked``):
  used in eval mode, updated in train mode. ``module.training`` decides, not
  autograd and not ``requires_grad`` (pytorch/pytorch issue 86590);
- its **affine parameters** (``weight`` = gamma, ``bias`` = beta): trained by the
  optimizer when ``requires_grad`` is True.

:func:`set_bn_mode` chooses what happens to each; :func:`freeze` chooses which
of the other parameters train; :func:`recompute_bn_stats` replaces the source
statistics by the target's (AdaBN, Li et al. 2016).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Mapping

import torch
import torch.nn as nn

from .normalization import batch_moments, merge_moments

BN_MODES = ("train", "frozen_stats", "frozen", "recomputed")
BN_MODE_HELP = {
    "train": "BN in train mode: normalizes with batch statistics, updates its running statistics; gamma/beta train",
    "frozen_stats": "BN in eval mode: normalizes with the stored running statistics and keeps them; gamma/beta train",
    "frozen": "BN in eval mode and gamma/beta frozen: the layer is a fixed affine map "
              "(what Keras' trainable=False does, and torchvision's FrozenBatchNorm2d)",
    "recomputed": "running statistics recomputed on the new data first (AdaBN), then kept as in 'frozen_stats'",
}
FREEZE_STRATEGIES = ("head", "head+bn", "none")
INPUT_LAYERS = ("none", "batchnorm", "layernorm", "instancenorm")
# former names of input layers, kept only to say what they are called now
RENAMED_INPUT_LAYERS = {"groupnorm": "instancenorm"}

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def bn_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """Every batch-norm layer of ``model`` as (name, module), in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every normalization layer of ``model`` (BN, GN, LN, IN, torch.nn's or the course's own), in order."""
    from . import layers

    kinds = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
             layers.BatchNorm2d, layers.GroupNorm, layers.LayerNorm, layers.InstanceNorm2d)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the BN buffers in ``model.state_dict()``: running_mean, running_var, num_batches_tracked."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


def _check_mode(mode: str) -> None:
    if mode not in BN_MODES:
        raise ValueError(f"unknown BN mode {mode!r}; choose one of {BN_MODES}: "
                         + "; ".join(f"{k}: {v}" for k, v in BN_MODE_HELP.items()))


def set_bn_mode(model: nn.Module, mode: str, loader: Iterable | None = None, *,
                max_batches: int | None = None) -> nn.Module:
    """Put every BN layer of ``model`` in ``mode`` (see ``BN_MODE_HELP``); returns ``model``.

    Only BN layers are touched. ``"recomputed"`` needs ``loader`` (batches of
    the new data) and recomputes the statistics before freezing them.

    ``model.train()`` sets every module back to train mode, so call this again
    after it; ``fit(..., bn_mode=mode)`` does so at the start of every epoch.
    """
    _check_mode(mode)
    if mode == "recomputed":
        if loader is None:
            raise ValueError("BN mode 'recomputed' needs a loader of the new data: "
                             "set_bn_mode(model, 'recomputed', loader)")
        recompute_bn_stats(model, loader, max_batches=max_batches)
    layers = bn_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no batch-norm layer, so a BN mode means nothing for it")
    for _, bn in layers:
        bn.train(mode == "train" and model.training)
        if mode in ("train", "frozen_stats", "recomputed"):
            # keep gamma/beta as freeze() left them, except that 'frozen' below turns them off
            continue
        for p in bn.parameters(recurse=False):
            p.requires_grad_(False)
    return model


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, loader: Iterable, *, max_batches: int | None = None) -> nn.Module:
    """Replace every BN layer's running statistics by those of the data in ``loader`` (AdaBN).

    One pass in train mode (so each layer normalizes with batch statistics, as
    during training, and the layers after it see what they would see in
    training). Each BN layer's input is accumulated in float64 over the whole
    pass, batch by batch with a centered merge (no E[x²] - E[x]²), then stored: ``running_mean`` = the mean of all inputs that layer
    saw, ``running_var`` = their unbiased variance, ``num_batches_tracked`` =
    the number of batches. Equal to what ``momentum=None`` (PyTorch's
    cumulative average) gives for the mean with equal batches; the variance is
    the whole data's, not an average of per-batch variances, which misses the
    spread between batch means (the PreciseBN argument, Wu & Johnson 2021).

    Gamma and beta are untouched; so is each layer's mode and momentum.
    """
    layers = bn_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no batch-norm layer to recompute")
    moments: dict[nn.Module, tuple | None] = {bn: None for _, bn in layers}  # (count, mean, M2) per layer

    def accumulate(bn, inputs):
        moments[bn] = merge_moments(moments[bn], batch_moments(inputs[0]))

    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for _, bn in layers}
    hooks = [bn.register_forward_pre_hook(accumulate) for _, bn in layers]
    device = next(model.parameters()).device
    batches = 0
    try:
        model.eval()
        for _, bn in layers:
            bn.train()
            bn.momentum = 0.0  # use batch statistics but leave the buffers alone during the pass
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            batches += 1
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
        for bn, momentum in momenta.items():
            bn.momentum = momentum
    if batches == 0:
        raise ValueError("recompute_bn_stats got no batches from the loader")
    for _, bn in layers:
        n, mean, m2 = moments[bn]
        var = m2 / max(n - 1, 1)  # unbiased, as PyTorch stores it
        if bn.running_mean is None:
            raise ValueError("a BN layer was built with track_running_stats=False and has no buffers to fill")
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
        bn.num_batches_tracked.fill_(batches)
    return model


# --------------------------------------------------------------------------- freezing

def _head_name(model: nn.Module, head: str | None) -> str:
    if head is not None:
        return head
    for name in ("fc", "classifier", "head"):
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise ValueError(f"cannot tell which module of {type(model).__name__} is the head; pass head='name'")


def freeze(model: nn.Module, strategy: str, *, head: str | None = None) -> nn.Module:
    """Choose which parameters train (``requires_grad``); returns ``model``.

    - ``"head"``: only the head (``model.fc`` for a ResNet) trains;
    - ``"head+bn"``: the head and every norm layer's gamma/beta train, the rest is
      frozen (fastai's default: ``train_bn=True``); "norm layer" because after
      :func:`~course_utils.swap_norm` the network's BN layers may be GN or LN;
    - ``"none"``: everything trains (full fine-tuning).

    Freezing touches parameters only. A frozen BN layer in train mode still
    updates its running statistics: use :func:`set_bn_mode` for those.
    """
    if strategy not in FREEZE_STRATEGIES:
        raise ValueError(f"unknown freezing strategy {strategy!r}; choose one of {FREEZE_STRATEGIES}")
    head_module = getattr(model, _head_name(model, head))
    for p in model.parameters():
        p.requires_grad_(strategy == "none")
    for p in head_module.parameters():
        p.requires_grad_(True)
    if strategy == "head+bn":
        for _, norm in norm_layers(model):
            for p in norm.parameters(recurse=False):
                p.requires_grad_(True)
    return model


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that will train."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


# --------------------------------------------------------------------------- input layers

class InputLayerNorm(nn.Module):
    """Layer norm of each image over all of (C, H, W), with a per-channel affine; any image size.

    y[n, c] = (x[n, c] - mean_n) / sqrt(var_n + eps) * weight[c] + bias[c], where
    mean_n and var_n (biased) are taken over the C*H*W values of image n.
    Equal to ``F.layer_norm(x, x.shape[1:])`` before the affine, and to
    ``nn.GroupNorm(1, C)`` (which is how it is computed). Unlike
    ``nn.LayerNorm((C, H, W))`` it does not fix the image size, and it has C
    affine pairs instead of C*H*W.
    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, num_channels, eps=eps, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"InputLayerNorm expects images (N, C, H, W), got shape {tuple(x.shape)}")
        return self.norm(x)


def make_input_layer(kind: str, num_channels: int = 3) -> nn.Module | None:
    """The normalization layer to put in front of conv1, or None for ``"none"``.

    - ``"batchnorm"``: ``nn.BatchNorm2d(C)``: per channel over the batch and the pixels;
    - ``"layernorm"``: :class:`InputLayerNorm`: per image over (C, H, W);
    - ``"instancenorm"``: ``nn.InstanceNorm2d(C, affine=True)``: per image and
      channel over the pixels, then one gamma and beta per channel. It computes
      what ``nn.GroupNorm(C, C)`` computes: a group norm with one channel per group
      is instance norm. With C = 3 input channels the only group norms are that
      one and ``GroupNorm(1, 3)``, which is the layer norm above.

    The option once called ``"groupnorm"`` was this instance norm; that name now
    raises a ``ValueError`` giving the new one.
    """
    if kind in RENAMED_INPUT_LAYERS:
        raise ValueError(f"the input layer {kind!r} is now called {RENAMED_INPUT_LAYERS[kind]!r}: "
                         f"GroupNorm(C, C), one channel per group, is instance norm")
    if kind not in INPUT_LAYERS:
        raise ValueError(f"unknown input layer {kind!r}; choose one of {INPUT_LAYERS}")
    if kind == "none":
        return None
    if kind == "batchnorm":
        return nn.BatchNorm2d(num_channels)
    if kind == "layernorm":
        return InputLayerNorm(num_channels)
    return nn.InstanceNorm2d(num_channels, affine=True)


def add_input_layer(model: nn.Module, kind: str, *, first: str = "conv1") -> nn.Module:
    """Put a normalization layer in front of ``model.<first>`` (ResNet's conv1); returns ``model``.

    The layer and the old conv become ``model.conv1 = Sequential(norm=..., conv=...)``,
    so the conv's weights keep their values (under the new name ``conv1.conv.weight``).
    ``"none"`` leaves the model as it is.
    """
    conv = getattr(model, first, None)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"model.{first} should be the first Conv2d, got {type(conv).__name__}; "
                         "was an input layer added already?")
    layer = make_input_layer(kind, conv.in_channels)
    if layer is None:
        return model
    device = conv.weight.device
    setattr(model, first, nn.Sequential(OrderedDict(norm=layer.to(device), conv=conv)))
    return model


# --------------------------------------------------------------------------- weight distances

def _state(x: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return dict(x.named_parameters()) if isinstance(x, nn.Module) else x


@torch.no_grad()
def weight_distance(before: nn.Module | Mapping[str, torch.Tensor], after: nn.Module | Mapping[str, torch.Tensor],
                    *, weights_only: bool = True) -> dict[str, float]:
    """Relative L2 distance ||after - before|| / ||before|| of every parameter both have in common.

    Takes models (their parameters) or state dicts. ``weights_only`` keeps
    tensors named ``*.weight`` (conv, linear and BN gamma), the usual per-layer
    view. Parameters whose shapes differ (a new head) are skipped; so are
    integer buffers.
    """
    a, b = _state(before), _state(after)
    out = {}
    for name, w0 in a.items():
        if name not in b or (weights_only and not name.endswith("weight")):
            continue
        w1 = b[name]
        if w0.shape != w1.shape or not w0.is_floating_point():
            continue
        w0d, w1d = w0.detach().double().cpu(), w1.detach().double().cpu()
        out[name] = ((w1d - w0d).norm() / w0d.norm().clamp_min(1e-12)).item()
    return out
