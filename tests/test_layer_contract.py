"""The by-hand layers as drop-in twins of their references, on the inputs that break naive versions.

test_layers.py checks values on well-behaved random inputs. Here every layer meets
the edge cases a real network hands it (an all-zero channel after ReLU, a constant
channel, one sample, 1x1 maps, a 1e4 offset) and must give the reference's outputs
AND gradients with no NaN or inf; then the contract a student relies on when putting
a layer into a model: dtype in = dtype out (bfloat16 too), empty batches, sizes given
as numpy integers, zero channels, and reset_parameters().
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import layers as L

timm_grn = pytest.importorskip("timm.layers.grn")

F64 = torch.float64


@dataclass
class Twin:
    """A by-hand layer and its reference, built by ``make(C, H, W, **factory)``."""
    name: str
    make: Callable[..., tuple[nn.Module, nn.Module]]
    channels_last: bool = False    # input is (N, H, W, C)
    train_needs: str = ""          # "batch": >1 value per channel over N·H·W; "spatial": H·W > 1


TWINS = [
    Twin("BatchNorm2d", lambda c, h, w, **f: (L.BatchNorm2d(c, **f), nn.BatchNorm2d(c, **f)), train_needs="batch"),
    Twin("LayerNorm", lambda c, h, w, **f: (L.LayerNorm((c, h, w), **f), nn.LayerNorm((c, h, w), **f))),
    Twin("RMSNorm", lambda c, h, w, **f: (L.RMSNorm((c, h, w), **f), nn.RMSNorm((c, h, w), **f))),
    Twin("RMSNorm(W)", lambda c, h, w, **f: (L.RMSNorm(w, eps=1e-6, **f), nn.RMSNorm(w, eps=1e-6, **f))),
    Twin("GroupNorm(1)", lambda c, h, w, **f: (L.GroupNorm(1, c, **f), nn.GroupNorm(1, c, **f))),
    Twin("GroupNorm(C)", lambda c, h, w, **f: (L.GroupNorm(c, c, **f), nn.GroupNorm(c, c, **f))),
    Twin("InstanceNorm2d", lambda c, h, w, **f: (L.InstanceNorm2d(c, affine=True, track_running_stats=True, **f),
                                                 nn.InstanceNorm2d(c, affine=True, track_running_stats=True, **f)),
         train_needs="spatial"),
    Twin("LocalResponseNorm", lambda c, h, w, **f: (L.LocalResponseNorm(3, alpha=0.5), nn.LocalResponseNorm(3, alpha=0.5))),
    Twin("GRN", lambda c, h, w, **f: (L.GlobalResponseNorm(c, channels_last=False, **f),
                                      timm_grn.GlobalResponseNorm(c, channels_last=False, **f))),
    Twin("GRN channels_last", lambda c, h, w, **f: (L.GlobalResponseNorm(c, **f), timm_grn.GlobalResponseNorm(c, **f)),
         channels_last=True),
]
IDS = [t.name for t in TWINS]


def edge_input(case: str, dtype=F64) -> torch.Tensor:
    """(N, C, H, W) inputs that break naive normalization code."""
    g = torch.Generator().manual_seed(0)
    shapes = {"zero channel": (3, 4, 5, 5), "constant channel": (3, 4, 5, 5), "one sample": (1, 4, 5, 5),
              "1x1 maps": (6, 4, 1, 1), "offset 1e4": (3, 4, 5, 5), "all zeros": (2, 4, 3, 3)}
    x = torch.randn(shapes[case], generator=g, dtype=F64)
    if case == "zero channel":
        x = x.relu()
        x[:, 1] = 0.0          # a dead ReLU channel
        x[0, 2] = 0.0          # dead in one sample only
    elif case == "constant channel":
        x[:, 1] = 5.0
    elif case == "offset 1e4":
        x = x + 1e4
    elif case == "all zeros":
        x = torch.zeros_like(x)
    return x.to(dtype)


def randomize(*modules: nn.Module) -> None:
    """The same non-trivial parameters in each twin (GRN starts as the identity otherwise)."""
    g = torch.Generator().manual_seed(1)
    params = dict(modules[0].named_parameters())
    values = {k: torch.rand(p.shape, generator=g, dtype=F64) + 0.5 for k, p in params.items()}
    with torch.no_grad():
        for m in modules:
            for k, p in m.named_parameters():
                p.copy_(values[k])


def layout(twin: Twin, x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous() if twin.channels_last else x


def run(layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    """Output and gradients (input and each parameter) of ``sum(layer(x) · upstream)``."""
    x = x.clone().requires_grad_()
    y = layer(x)
    (y * upstream).sum().backward()
    grads = {"x": x.grad}
    grads.update({k: p.grad for k, p in layer.named_parameters()})
    return y, grads


def train_mode_defined(twin: Twin, x: torch.Tensor) -> bool:
    n, _, h, w = x.shape
    if twin.train_needs == "batch":
        return n * h * w > 1
    if twin.train_needs == "spatial":
        return h * w > 1
    return True


@pytest.mark.parametrize("case", ["zero channel", "constant channel", "one sample", "1x1 maps", "offset 1e4",
                                  "all zeros"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("twin", TWINS, ids=IDS)
def test_outputs_and_gradients_match_on_edge_inputs(twin: Twin, mode: str, case: str) -> None:
    x = layout(twin, edge_input(case))
    ours, ref = twin.make(*edge_input(case).shape[1:], dtype=F64)
    randomize(ours, ref)
    for m in (ours, ref):
        m.train(mode == "train")
    if mode == "eval" and getattr(ref, "running_mean", None) is not None:
        # eval with statistics that came from training on ordinary data
        warm = torch.randn(8, edge_input(case).shape[1], 3, 3, dtype=F64) * 2 + 1
        for m in (ours, ref):
            m.train()(warm)
            m.eval()
    if mode == "train" and not train_mode_defined(twin, edge_input(case)):
        for m in (ours, ref):  # both refuse: one value has no variance
            with pytest.raises(ValueError, match="more than 1"):
                m(x)
        return
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    (y_ours, g_ours), (y_ref, g_ref) = run(ours, x, upstream), run(ref, x, upstream)
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-7, atol=1e-9)
    assert g_ours.keys() == g_ref.keys()
    for k in g_ref:
        assert torch.isfinite(g_ours[k]).all(), f"{twin.name}: NaN or inf in the gradient of {k} on '{case}'"
        torch.testing.assert_close(g_ours[k], g_ref[k], rtol=1e-6, atol=1e-7, msg=lambda m: f"grad {k}: {m}")
    assert torch.isfinite(y_ours).all()
    for name in ("running_mean", "running_var"):
        if getattr(ref, name, None) is not None:
            torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-10, atol=1e-12)


def naive_grn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRN with the norm written as sqrt of a sum of squares: what the course's layer must not do."""
    energy = x.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
    relative = energy / (energy.mean(dim=1, keepdim=True) + eps)
    return weight.view(1, -1, 1, 1) * (x * relative) + bias.view(1, -1, 1, 1) + x


def test_the_dead_channel_case_catches_the_naive_grn_norm() -> None:
    x = edge_input("zero channel").requires_grad_()
    weight, bias = torch.ones(4, dtype=F64), torch.zeros(4, dtype=F64)
    naive_grn(x, weight, bias).sum().backward()
    assert torch.isnan(x.grad).any()       # the edge case can fail
    x.grad = None
    L.global_response_norm(x, weight, bias, channels_last=False).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("params", ["float32", "same"], ids=["float32 params", "params in the input dtype"])
@pytest.mark.parametrize("in_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("twin", TWINS, ids=IDS)
def test_half_precision_input_gives_the_reference_dtype_and_values(twin: Twin, in_dtype, params) -> None:
    x32 = layout(twin, torch.randn(4, 6, 5, 5, generator=torch.Generator().manual_seed(3)) * 3 + 1)
    ours, ref = twin.make(6, 5, 5)
    randomize(ours, ref)
    if params == "same":  # e.g. model.bfloat16(); mixed float32 parameters are what autocast leaves
        ours, ref = ours.to(in_dtype), ref.to(in_dtype)
    x = x32.to(in_dtype)
    try:
        expected = ref(x)
    except (NotImplementedError, RuntimeError):
        # PyTorch's CPU LRN has no half kernel: the reference is then float32 math, cast like ours
        assert twin.name == "LocalResponseNorm", twin.name
        expected = copy.deepcopy(ref).float()(x.float()).to(in_dtype)
    got = ours(x)
    assert got.dtype == expected.dtype, f"{twin.name}: {in_dtype} in gave {got.dtype}, reference {expected.dtype}"
    # half precision keeps 8 (bf16) or 11 (fp16) bits: compare at that resolution
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("twin", TWINS, ids=IDS)
def test_empty_batch_behaves_as_the_reference(twin: Twin, mode: str) -> None:
    x = layout(twin, torch.randn(0, 4, 3, 3))
    ours, ref = twin.make(4, 3, 3)
    for m in (ours, ref):
        m.train(mode == "train")
    if twin.name == "InstanceNorm2d":
        # PyTorch's affine instance norm raises an IndexError on an empty batch; ours returns the
        # empty output (its docstring says so). Compare with the non-affine reference.
        ref = nn.InstanceNorm2d(4, track_running_stats=True).train(mode == "train")
    y_ours, g_ours = run(ours, x, torch.zeros(x.shape))
    y_ref, _ = run(ref, x, torch.zeros(x.shape))
    assert y_ours.shape == y_ref.shape and y_ours.dtype == y_ref.dtype
    assert g_ours["x"].shape == x.shape
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        if getattr(ref, name, None) is not None and twin.name != "InstanceNorm2d":
            assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    if twin.name == "InstanceNorm2d":
        # PyTorch's tracked instance norm averages over no instances: NaN in its buffers (train mode)
        assert torch.equal(ours.running_mean, torch.zeros(4)) and torch.equal(ours.running_var, torch.ones(4))
        with pytest.raises(IndexError):  # if PyTorch fixes this, the docstring and this branch can go
            nn.InstanceNorm2d(4, affine=True)(torch.randn(0, 4, 3, 3))


@pytest.mark.parametrize("twin", [t for t in TWINS if t.name in ("LayerNorm", "RMSNorm", "InstanceNorm2d",
                                                                 "LocalResponseNorm", "GRN", "GRN channels_last")],
                         ids=lambda t: t.name)
def test_zero_channels_give_an_empty_output_like_the_reference(twin: Twin) -> None:
    x = layout(twin, torch.randn(2, 0, 3, 3))
    ours, ref = twin.make(0, 3, 3)
    if twin.name == "InstanceNorm2d":  # PyTorch's affine instance norm raises an IndexError here
        ref = nn.InstanceNorm2d(0, track_running_stats=True)
    assert ours(x).shape == ref(x).shape == x.shape


@pytest.mark.parametrize("build, words", [
    (lambda: L.BatchNorm2d(0), "at least 1"),        # torch.nn builds it, then fails with an IndexError
    (lambda: L.GroupNorm(1, 0), "at least 1"),       # torch.nn raises "Expected number of channels > 0"
    (lambda: L.GroupNorm(1.5, 3), "integer"),
    (lambda: L.LocalResponseNorm(2.0), "integer"),
], ids=["bn-zero-channels", "gn-zero-channels", "gn-float-groups", "lrn-float-size"])
def test_sizes_that_make_no_sense_are_refused_with_a_clear_error(build, words) -> None:
    with pytest.raises(ValueError, match=words):
        build()


def test_sizes_given_as_numpy_integers_are_accepted() -> None:
    c, four = np.int64(4), np.int32(4)
    pairs = [(L.BatchNorm2d(c), nn.BatchNorm2d(c)), (L.GroupNorm(np.int64(2), c), nn.GroupNorm(np.int64(2), c)),
             (L.InstanceNorm2d(c), nn.InstanceNorm2d(c)), (L.LayerNorm((c, four, four)), nn.LayerNorm((c, 4, 4))),
             (L.LayerNorm(four), nn.LayerNorm(4)), (L.LocalResponseNorm(np.int64(3)), nn.LocalResponseNorm(3)),
             (L.RMSNorm((c, four, four)), nn.RMSNorm((4, 4, 4))), (L.RMSNorm(four), nn.RMSNorm(4)),
             (L.RMSNorm(torch.Size([4, 4])), nn.RMSNorm(torch.Size([4, 4]))),
             (L.GlobalResponseNorm(c, channels_last=False), timm_grn.GlobalResponseNorm(4, channels_last=False))]
    x = torch.randn(2, 4, 4, 4)
    for ours, ref in pairs:
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
        torch.testing.assert_close(ours(x), ref(x))
        assert type(repr(ours)) is str and "np." not in repr(ours)


@pytest.mark.parametrize("twin", [t for t in TWINS if t.name != "LocalResponseNorm"], ids=lambda t: t.name)
def test_reset_parameters_restores_a_fresh_layer(twin: Twin) -> None:
    ours, fresh = twin.make(4, 3, 3)
    ours.train()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.rand(p.shape) + 0.5)
    ours(layout(twin, torch.randn(5, 4, 3, 3) * 3 + 2))  # moves the running statistics, where there are any
    assert any(not torch.equal(a, b) for a, b in zip(ours.state_dict().values(), fresh.state_dict().values()))
    ours.reset_parameters()
    _, fresh = twin.make(4, 3, 3)  # timm's GRN has no reset_parameters: compare with a new reference
    for (k, a), b in zip(ours.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_lrn_has_nothing_to_reset_like_its_reference() -> None:
    assert not hasattr(nn.LocalResponseNorm(3), "reset_parameters")
    assert list(L.LocalResponseNorm(3).parameters()) == []


def test_batch_norm2d_defaults_to_running_statistics_as_torch_does() -> None:
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    mean, var = torch.randn(3), torch.rand(3) + 0.5
    torch.testing.assert_close(L.batch_norm2d(x, mean, var), torch.nn.functional.batch_norm(x, mean, var))
    with pytest.raises(ValueError, match="training=True"):
        L.batch_norm2d(x, None, None)
    with pytest.raises(RuntimeError):  # PyTorch refuses the same call
        torch.nn.functional.batch_norm(x, None, None)
    torch.testing.assert_close(L.batch_norm2d(x, None, None, training=True),
                               torch.nn.functional.batch_norm(x, None, None, training=True))


def test_edge_inputs_hold_the_case_they_are_named_for() -> None:
    assert edge_input("zero channel")[:, 1].abs().max() == 0
    assert edge_input("zero channel")[0, 2].abs().max() == 0 and edge_input("zero channel")[1, 2].abs().max() > 0
    assert edge_input("constant channel")[:, 1].std() == 0
    assert edge_input("offset 1e4").mean() > 9e3
