"""course_utils.layers against their PyTorch / timm twins: forward, gradients, buffers, errors.

Randomized with hypothesis (derandomized, few examples: the file runs in seconds).
Tolerances: relative error (max |diff| / max |reference|) <= 1e-5 in float32
and 1e-10 in float64.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import course_utils as cu
from course_utils import layers as L

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
CONDITION = {torch.float32: 100.0, torch.float64: 1e5}
FEW = settings(max_examples=20, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])


def rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.isfinite(actual).all()
    return cu.relative_error(actual, expected)


def assert_rel(actual, expected, dtype, what=""):
    err = rel(actual, expected)
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e}"


def make_input(seed: int, shape, dtype, offset: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)


def well_posed(dtype, offset: float, scale: float) -> tuple[float, float]:
    """Keep offset/std within what the dtype can resolve at the tolerance asked for.

    Normalizing subtracts the mean, so the error is about (spacing of floats near the
    values) / std: float32 values near 1e4 are 9.8e-4 apart, float64 ones 1.8e-12. No
    implementation (PyTorch's included) does better. So float32 cases keep offset/std
    <= 10 (the 1e4 offset at std 1 in float32 has its own test, with the bound float32
    allows), and float64 cases keep it <= 1e4 (errors ~1e-12).
    """
    if dtype == torch.float32:
        return (offset if offset <= 10 * scale else 0.0), scale
    return offset, max(scale, offset / 1e4)


def assume_resolvable(x: torch.Tensor, dims) -> None:
    """Skip the rare draw where a tiny group happens to have almost no spread (ill-conditioned).

    max|x| / min group std bounds the rounding error; 100 (float32) and 1e5 (float64)
    keep it below 1e-5 and 1e-10.
    """
    std = x.double().std(dim=dims, unbiased=False)
    assume(x.abs().max().item() / max(std.min().item(), 1e-300) <= CONDITION[x.dtype])


def randomize_affine(*modules, seed: int = 1) -> None:
    """Give twin modules the same non-trivial weight and bias."""
    g = torch.Generator().manual_seed(seed)
    ref = modules[0]
    if getattr(ref, "weight", None) is None:
        return
    w = torch.rand(ref.weight.shape, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(ref.bias.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        for m in modules:
            m.weight.copy_(w)
            m.bias.copy_(b)


# shapes (N, C, H, W) with at least two values per channel, so train-mode BN is defined
image_shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.integers(1, 5)).filter(
    lambda s: s[0] * s[2] * s[3] > 1)
dtypes = st.sampled_from([torch.float32, torch.float64])
seeds = st.integers(0, 2**31 - 1)
scales = st.sampled_from([0.01, 1.0, 30.0])


# ---------------------------------------------------------------- batch norm

@FEW
@given(shape=image_shapes, dtype=dtypes, seed=seeds, scale=scales, offset=st.sampled_from([0.0, 3.0, 1e4]))
def test_batch_norm_train_forward_and_buffers(shape, dtype, seed, scale, offset):
    offset, scale = well_posed(dtype, offset, scale)
    x = make_input(seed, shape, dtype, offset, scale)
    assume_resolvable(x, (0, 2, 3))
    ours, ref = L.BatchNorm2d(shape[1], dtype=dtype), nn.BatchNorm2d(shape[1], dtype=dtype)
    randomize_affine(ours, ref)
    assert_rel(ours(x), ref(x), dtype, "output")
    assert_rel(ours.running_mean, ref.running_mean, dtype, "running_mean")
    assert_rel(ours.running_var, ref.running_var, dtype, "running_var")
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 1


@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_norm_running_buffers_after_several_steps(momentum, dtype):
    ours = L.BatchNorm2d(3, momentum=momentum, dtype=dtype)
    ref = nn.BatchNorm2d(3, momentum=momentum, dtype=dtype)
    for step, shape in enumerate([(4, 3, 5, 5), (1, 3, 2, 3), (7, 3, 1, 1), (2, 3, 4, 4), (3, 3, 6, 2)]):
        x = make_input(step, shape, dtype, offset=step - 2.0, scale=1.0 + step)
        assert_rel(ours(x), ref(x), dtype, f"output at step {step}")
    assert_rel(ours.running_mean, ref.running_mean, dtype, "running_mean")
    assert_rel(ours.running_var, ref.running_var, dtype, "running_var")
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 5
    ours.eval(), ref.eval()
    x = make_input(99, (2, 3, 4, 4), dtype)
    assert_rel(ours(x), ref(x), dtype, "eval output")
    assert int(ours.num_batches_tracked) == 5  # eval does not count batches


def test_batch_norm_momentum_none_is_the_cumulative_average():
    bn = L.BatchNorm2d(2, momentum=None)
    batches = [make_input(s, (3, 2, 4, 4), torch.float64) * (s + 1) for s in range(4)]
    for x in batches:
        bn(x.float())
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches])          # (steps, C)
    unbiased = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in batches])
    torch.testing.assert_close(bn.running_mean.double(), means.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), unbiased.mean(0), rtol=1e-5, atol=1e-6)


def test_batch_norm_normalizes_with_biased_and_tracks_unbiased_variance():
    x = make_input(0, (2, 1, 2, 2), torch.float64)        # m = 8 values
    bn = L.BatchNorm2d(1, momentum=1.0, eps=0.0, dtype=torch.float64)
    y = bn(x)
    assert abs(y.pow(2).mean().item() - 1.0) < 1e-12   # biased variance: mean of squares is exactly 1
    torch.testing.assert_close(bn.running_var, x.var(unbiased=True).view(1))


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (1, 3, 4, 4), (6, 2, 1, 1), (1, 2, 1, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_norm_gradients(shape, dtype):
    x = make_input(0, shape, dtype, offset=2.0, scale=3.0)
    upstream = make_input(1, shape, dtype)
    results = []
    for layer in (L.BatchNorm2d(shape[1], dtype=dtype), nn.BatchNorm2d(shape[1], dtype=dtype)):
        randomize_affine(layer)
        xi = x.clone().requires_grad_()
        (layer(xi) * upstream).sum().backward()
        results.append((xi.grad, layer.weight.grad, layer.bias.grad))
    tol = {torch.float32: 1e-4, torch.float64: 1e-10}[dtype]  # gradients cancel more than outputs do
    for name, a, e in zip(("x", "weight", "bias"), *results):
        assert rel(a, e) <= tol, f"grad {name}: {rel(a, e):.2e}"


def test_batch_norm_no_grad_still_updates_running_stats_in_train_mode():
    bn = L.BatchNorm2d(3)
    with torch.no_grad():
        bn(make_input(0, (4, 3, 2, 2), torch.float32, offset=5.0))
    assert int(bn.num_batches_tracked) == 1
    assert (bn.running_mean > 0.4).all()  # 0.1 * ~5


def test_batch_norm_eval_uses_buffers_even_when_tracking_flag_is_turned_off():
    ours, ref = L.BatchNorm2d(3), nn.BatchNorm2d(3)
    for m in (ours, ref):
        m.running_mean.fill_(2.0)
        m.running_var.fill_(4.0)
        m.track_running_stats = False
        m.eval()
    x = make_input(0, (2, 3, 3, 3), torch.float32)
    assert_rel(ours(x), ref(x), torch.float32, "eval with buffers, flag off")
    torch.testing.assert_close(ours(x), (x - 2.0) / math.sqrt(4.0 + 1e-5))


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_without_running_stats_uses_batch_stats(train):
    ours, ref = L.BatchNorm2d(2, track_running_stats=False), nn.BatchNorm2d(2, track_running_stats=False)
    ours.train(train), ref.train(train)
    x = make_input(0, (3, 2, 4, 4), torch.float32, offset=1.0)
    assert_rel(ours(x), ref(x), torch.float32, "output")
    assert ours.running_mean is None and "running_mean" not in ours.state_dict()


def test_batch_norm_state_dict_is_interchangeable_with_torch():
    ref = nn.BatchNorm2d(4)
    ref(make_input(0, (5, 4, 3, 3), torch.float32, offset=3.0))
    ours = L.BatchNorm2d(4)
    ours.load_state_dict(ref.state_dict())
    ours.eval(), ref.eval()
    x = make_input(1, (2, 4, 3, 3), torch.float32)
    assert_rel(ours(x), ref(x), torch.float32, "eval after load_state_dict")
    assert set(ours.state_dict()) == set(ref.state_dict())


# ---------------------------------------------------------------- layer, group, instance norm

@FEW
@given(shape=image_shapes, dtype=dtypes, seed=seeds, scale=scales, offset=st.sampled_from([0.0, 1e4]),
       trailing=st.integers(1, 3))
def test_layer_norm_forward(shape, dtype, seed, scale, offset, trailing):
    offset, scale = well_posed(dtype, offset, scale)
    x = make_input(seed, shape, dtype, offset, scale)
    normalized = shape[-trailing:]
    assume_resolvable(x, tuple(range(-trailing, 0)))
    ours, ref = L.LayerNorm(normalized, dtype=dtype), nn.LayerNorm(normalized, dtype=dtype)
    randomize_affine(ours, ref)
    assert_rel(ours(x), ref(x), dtype, f"LayerNorm{normalized}")


def test_layer_norm_without_bias_and_without_affine():
    x = make_input(0, (3, 4, 5), torch.float64)
    for kwargs in ({"bias": False}, {"elementwise_affine": False}):
        ours, ref = L.LayerNorm(5, dtype=torch.float64, **kwargs), nn.LayerNorm(5, dtype=torch.float64, **kwargs)
        assert_rel(ours(x), ref(x), torch.float64, str(kwargs))


def test_layer_norm_of_c_on_nchw_normalizes_over_w_only():
    x = make_input(0, (2, 4, 3, 4), torch.float64)        # C = W = 4, so nn.LayerNorm(4) accepts it
    y = nn.LayerNorm(4, dtype=torch.float64)(x)
    torch.testing.assert_close(y.mean(dim=-1), torch.zeros(2, 4, 3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert y.mean(dim=1).abs().max() > 1e-3                 # not normalized over channels


@FEW
@given(shape=image_shapes, dtype=dtypes, seed=seeds, scale=scales, offset=st.sampled_from([0.0, 1e4]),
       data=st.data())
def test_group_norm_forward(shape, dtype, seed, scale, offset, data):
    offset, scale = well_posed(dtype, offset, scale)
    c = shape[1]
    groups = data.draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]), label="groups")
    x = make_input(seed, shape, dtype, offset, scale)
    assume_resolvable(x.reshape(shape[0], groups, -1), -1)
    ours, ref = L.GroupNorm(groups, c, dtype=dtype), nn.GroupNorm(groups, c, dtype=dtype)
    randomize_affine(ours, ref)
    assert_rel(ours(x), ref(x), dtype, f"GroupNorm({groups}, {c})")


def test_group_norm_on_other_ranks():
    for shape in [(3, 6), (3, 6, 5), (2, 6, 2, 3, 2)]:
        x = make_input(0, shape, torch.float64)
        assert_rel(L.group_norm(x, 3), F.group_norm(x, 3), torch.float64, str(shape))


def test_group_norm_extremes_equal_layer_norm_and_instance_norm():
    x = make_input(0, (3, 6, 4, 5), torch.float64, offset=1.0)
    assert_rel(L.GroupNorm(1, 6, dtype=torch.float64)(x),
               nn.LayerNorm((6, 4, 5), elementwise_affine=False, dtype=torch.float64)(x), torch.float64, "G=1")
    assert_rel(L.GroupNorm(6, 6, dtype=torch.float64)(x), nn.InstanceNorm2d(6)(x), torch.float64, "G=C")


@FEW
@given(shape=image_shapes.filter(lambda s: s[2] * s[3] > 1), dtype=dtypes, seed=seeds, scale=scales,
       offset=st.sampled_from([0.0, 1e4]), affine=st.booleans())
def test_instance_norm_forward(shape, dtype, seed, scale, offset, affine):
    offset, scale = well_posed(dtype, offset, scale)
    x = make_input(seed, shape, dtype, offset, scale)
    assume_resolvable(x, (2, 3))
    ours = L.InstanceNorm2d(shape[1], affine=affine, dtype=dtype)
    ref = nn.InstanceNorm2d(shape[1], affine=affine, dtype=dtype)
    randomize_affine(ours, ref)
    assert_rel(ours(x), ref(x), dtype, "InstanceNorm2d")


def test_instance_norm_running_stats_and_eval():
    ours = L.InstanceNorm2d(3, affine=True, track_running_stats=True, momentum=0.3)
    ref = nn.InstanceNorm2d(3, affine=True, track_running_stats=True, momentum=0.3)
    randomize_affine(ours, ref)
    for step in range(3):
        x = make_input(step, (2 + step, 3, 4, 3), torch.float32, offset=step, scale=step + 1.0)
        assert_rel(ours(x), ref(x), torch.float32, f"train step {step}")
    assert_rel(ours.running_mean, ref.running_mean, torch.float32, "running_mean")
    assert_rel(ours.running_var, ref.running_var, torch.float32, "running_var")
    ours.eval(), ref.eval()
    x = make_input(9, (2, 3, 4, 4), torch.float32)
    assert_rel(ours(x), ref(x), torch.float32, "eval")


@pytest.mark.parametrize("make", [
    lambda d: (L.LayerNorm((3, 4, 5), dtype=d), nn.LayerNorm((3, 4, 5), dtype=d)),
    lambda d: (L.GroupNorm(3, 3, dtype=d), nn.GroupNorm(3, 3, dtype=d)),
    lambda d: (L.GroupNorm(1, 3, dtype=d), nn.GroupNorm(1, 3, dtype=d)),
    lambda d: (L.InstanceNorm2d(3, affine=True, dtype=d), nn.InstanceNorm2d(3, affine=True, dtype=d)),
], ids=["layer", "group3", "group1", "instance"])
def test_per_sample_norm_gradients(make):
    dtype = torch.float64
    x = make_input(0, (2, 3, 4, 5), dtype, offset=1.0, scale=2.0)
    upstream = make_input(1, x.shape, dtype)
    grads = []
    for layer in make(dtype):
        randomize_affine(layer)
        xi = x.clone().requires_grad_()
        (layer(xi) * upstream).sum().backward()
        grads.append((xi.grad, layer.weight.grad, layer.bias.grad))
    for name, a, e in zip(("x", "weight", "bias"), *grads):
        assert_rel(a, e, dtype, f"grad {name}")


# ---------------------------------------------------------------- RMS norm

def randomize_weight(*modules, seed: int = 1) -> None:
    """Give twin RMS norms the same non-trivial weight (they have no bias)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(modules[0].weight.shape, generator=g, dtype=torch.float64) + 0.5
    with torch.no_grad():
        for m in modules:
            m.weight.copy_(w)


@FEW
@given(shape=image_shapes, dtype=dtypes, seed=seeds, scale=scales, offset=st.sampled_from([0.0, 3.0, 1e4]),
       trailing=st.integers(1, 3), eps=st.sampled_from([None, 0.0, 1e-6, 0.1]), affine=st.booleans())
def test_rms_norm_forward(shape, dtype, seed, scale, offset, trailing, eps, affine):
    x = make_input(seed, shape, dtype, offset, scale)     # no mean is subtracted: any offset is well posed
    normalized = shape[-trailing:]
    ours = L.RMSNorm(normalized, eps=eps, elementwise_affine=affine, dtype=dtype)
    ref = nn.RMSNorm(normalized, eps=eps, elementwise_affine=affine, dtype=dtype)
    if affine:
        randomize_weight(ours, ref)
    assert_rel(ours(x), ref(x), dtype, f"RMSNorm{normalized} eps={eps}")
    assert_rel(L.rms_norm(x, normalized, ref.weight, eps), F.rms_norm(x, normalized, ref.weight, eps), dtype,
               "rms_norm")


@pytest.mark.parametrize("normalized", [(5,), (4, 5), (3, 4, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rms_norm_gradients(normalized, dtype):
    x = make_input(0, (2, 3, 4, 5), dtype, offset=1.0, scale=2.0)
    upstream = make_input(1, x.shape, dtype)
    grads = []
    for layer in (L.RMSNorm(normalized, dtype=dtype), nn.RMSNorm(normalized, dtype=dtype)):
        randomize_weight(layer)
        xi = x.clone().requires_grad_()
        (layer(xi) * upstream).sum().backward()
        grads.append((xi.grad, layer.weight.grad))
    for name, a, e in zip(("x", "weight"), *grads):
        assert_rel(a, e, dtype, f"grad {name}")


@pytest.mark.parametrize("dtype, expected", [
    (torch.float16, torch.finfo(torch.float32).eps), (torch.bfloat16, torch.finfo(torch.float32).eps),
    (torch.float32, torch.finfo(torch.float32).eps), (torch.float64, torch.finfo(torch.float64).eps),
])
def test_rms_norm_default_eps_is_the_compute_dtypes_machine_epsilon(dtype, expected):
    # rows of 1e-4: mean of squares 1e-8, so eps = 1.2e-7 (float32's) gives 0.278, 2.2e-16 gives ~1,
    # and bfloat16's own epsilon (7.8e-3) would give 1e-3: the output tells which eps was used
    x = torch.full((2, 4), 1e-4, dtype=torch.float64)
    exact = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + expected)
    ref, ours = F.rms_norm(x.to(dtype), (4,)), L.rms_norm(x.to(dtype), 4)
    resolution = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
    torch.testing.assert_close(ref.double(), exact, rtol=resolution, atol=0)   # what PyTorch does
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    assert L.RMSNorm(4).eps is None and "eps=None" in repr(L.RMSNorm(4))


def test_rms_norm_explicit_eps_is_used_as_given_even_zero():
    x = make_input(0, (3, 6), torch.float64, scale=1e-3)
    for eps in (0.0, 1e-6, 1.0):
        assert_rel(L.rms_norm(x, 6, eps=eps), F.rms_norm(x, (6,), eps=eps), torch.float64, f"eps={eps}")
    zero = torch.zeros(2, 6)
    assert torch.isnan(F.rms_norm(zero, (6,), eps=0.0)).all() and torch.isnan(L.rms_norm(zero, 6, eps=0.0)).all()


def naive_rms_norm(x, eps=1e-6):
    """eps added outside the square root: d sqrt(s)/ds is infinite at s = 0, so a zero row gets NaN gradients."""
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps)


@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rms_norm_zero_row_has_a_finite_gradient_equal_to_torchs(eps, dtype):
    x = make_input(0, (2, 5, 8), dtype)                   # (batch, tokens, features)
    x[0, 3] = 0.0                                         # a padding token: an all-zero row
    upstream = make_input(1, x.shape, dtype)
    grads = []
    for layer in (L.RMSNorm(8, eps=eps, dtype=dtype), nn.RMSNorm(8, eps=eps, dtype=dtype)):
        randomize_weight(layer)
        xi = x.clone().requires_grad_()
        y = layer(xi)
        assert torch.equal(y[0, 3], torch.zeros(8, dtype=dtype))
        (y * upstream).sum().backward()
        grads.append((xi.grad, layer.weight.grad, layer.weight.detach()))
    (gx, gw, w), (gx_ref, gw_ref, _) = grads
    assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
    assert_rel(gx, gx_ref, dtype, "grad x")
    assert_rel(gw, gw_ref, dtype, "grad weight")
    e = eps if eps is not None else torch.finfo(dtype).eps
    # on the zero row y = x · w / sqrt(eps), so dL/dx = upstream · w / sqrt(eps) there
    assert_rel(gx[0, 3], upstream[0, 3] * w / math.sqrt(e), dtype, "grad on the zero row")
    xi = x.clone().requires_grad_()
    naive_rms_norm(xi).sum().backward()
    assert torch.isnan(xi.grad[0, 3]).any()                # the case can fail


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # PyTorch's unfused path
@pytest.mark.parametrize("weight_dtype", [torch.float32, "input", None], ids=["float32 weight", "same", "no weight"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_rms_norm_half_precision_outputs_and_gradients_match_torch(dtype, weight_dtype):
    # float32 statistic, cast back at the end: PyTorch 2.14's CPU results exactly (see the module
    # docstring); asserted here to one step of the half format, so other versions/devices pass
    step = {torch.bfloat16: 2**-7, torch.float16: 2**-10}[dtype]
    x = make_input(0, (8, 16, 64), torch.float32, offset=1.0, scale=3.0).to(dtype)
    upstream = make_input(1, x.shape, torch.float32).to(dtype)
    w0 = None if weight_dtype is None else (make_input(2, (64,), torch.float32).abs() + 0.5).to(
        dtype if weight_dtype == "input" else weight_dtype)
    results = []
    for fn in (L.rms_norm, F.rms_norm):
        xi = x.clone().requires_grad_()
        w = None if w0 is None else w0.clone().requires_grad_()
        y = fn(xi, (64,), w)
        (y * upstream).float().sum().backward()
        results.append((y, xi.grad, w))
    (y, gx, w), (y_ref, gx_ref, w_ref) = results
    assert y.dtype == y_ref.dtype == dtype and gx.dtype == dtype
    for name, a, e in (("output", y, y_ref), ("grad x", gx, gx_ref)) + (
            (("grad weight", w.grad, w_ref.grad),) if w is not None else ()):
        err = rel(a.float(), e.float())
        assert err <= step, f"{name}: relative error {err:.2e} > one {dtype} step {step:.1e}"
    # and it rounds where PyTorch does: casting to the half dtype before the weight product
    # (or computing in it) moves ~25% of the outputs by a step; float32 throughout moves none
    differ = (y != y_ref).float().mean().item()
    assert differ <= 0.01, f"{differ:.1%} of the outputs differ from PyTorch's by a rounding step"


def test_rms_norm_is_a_drop_in_for_torchs():
    ref = nn.RMSNorm((4, 5), eps=1e-5)
    randomize_weight(ref)
    ours = L.RMSNorm((4, 5), eps=1e-5)
    ours.load_state_dict(ref.state_dict())
    assert set(ours.state_dict()) == set(ref.state_dict()) == {"weight"}
    assert not hasattr(ref, "bias") and not hasattr(ours, "bias")
    assert repr(ours) == repr(ref)
    x = make_input(0, (3, 4, 5), torch.float32)
    assert_rel(ours(x), ref(x), torch.float32, "after load_state_dict")
    bare = L.RMSNorm(5, elementwise_affine=False)
    assert bare.weight is None and list(bare.parameters()) == [] and set(bare.state_dict()) == set()


def test_rms_norm_by_hand_delegates_to_no_library_rms_norm(monkeypatch):
    x = make_input(0, (2, 3, 8), torch.float32)
    expected = F.rms_norm(x, (8,))

    def refused(*args, **kwargs):
        raise AssertionError("the by-hand RMSNorm called torch's rms_norm")

    for owner in (F, torch):
        monkeypatch.setattr(owner, "rms_norm", refused)
    got_module, got_function = cu.RMSNorm(8)(x), cu.rms_norm(x, 8)
    assert_rel(got_module, expected, torch.float32, "module")
    assert_rel(got_function, expected, torch.float32, "function")
    with pytest.raises(cu.CheckFailed, match="course_utils"):  # an exercise may not call the course's own either
        with cu.by_hand("rms-norm", "rms_norm"):
            cu.RMSNorm(8)(x)


# ---------------------------------------------------------------- precision at a large offset

def naive_batch_norm(x, eps=1e-5):
    """The one-pass E[x²] - E[x]² variance our layers must NOT use."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = (x * x).mean(dim=(0, 2, 3), keepdim=True) - mean * mean
    return (x - mean) / torch.sqrt(var + eps)


@pytest.mark.parametrize("shape", [(8, 4, 6, 6), (2, 3, 5, 5)])
def test_large_offset_float64_matches_torch_and_naive_formula_does_not(shape):
    x = make_input(0, shape, torch.float64, offset=1e4)
    ref = F.batch_norm(x, None, None, training=True)
    assert_rel(L.batch_norm2d(x, None, None, training=True), ref, torch.float64, "batch_norm2d")
    assert_rel(L.layer_norm(x, shape[1:]), F.layer_norm(x, shape[1:]), torch.float64, "layer_norm")
    assert_rel(L.group_norm(x, shape[1]), F.group_norm(x, shape[1]), torch.float64, "group_norm")
    assert_rel(L.instance_norm2d(x), F.instance_norm(x), torch.float64, "instance_norm2d")
    assert_rel(L.rms_norm(x, shape[1:]), F.rms_norm(x, shape[1:]), torch.float64, "rms_norm")
    assert rel(naive_batch_norm(x), ref) > TOL[torch.float64]  # the check can fail


def test_large_offset_float32_is_as_accurate_as_float32_allows():
    # float32 values near 1e4 are spaced 2**-10 ~ 1e-3 apart: no float32 code (PyTorch's
    # included) can place the mean closer than that, so the bound here is 2e-3, measured
    # against the exact (float64) result for the same float32 input.
    x = make_input(0, (8, 4, 6, 6), torch.float32, offset=1e4)
    exact = L.batch_norm2d(x.double(), None, None, training=True)
    torch_err = rel(F.batch_norm(x, None, None, training=True).double(), exact)
    ours_err = rel(L.batch_norm2d(x, None, None, training=True).double(), exact)
    assert torch_err < 2e-3 and ours_err < 2e-3, (ours_err, torch_err)
    for fn, ref in ((lambda t: L.layer_norm(t, t.shape[1:]), lambda t: F.layer_norm(t, t.shape[1:])),
                    (lambda t: L.group_norm(t, 2), lambda t: F.group_norm(t, 2)),
                    (L.instance_norm2d, F.instance_norm)):
        assert rel(fn(x).double(), fn(x.double())) < 2e-3
    # no mean is subtracted, so RMS norm keeps float32's full precision at any offset
    rms = L.rms_norm(x, x.shape[1:])
    assert_rel(rms, F.rms_norm(x, x.shape[1:]), torch.float32, "rms_norm at 1e4")
    assert rel(rms.double(), L.rms_norm(x.double(), x.shape[1:])) < 1e-6
    naive = naive_batch_norm(x)
    assert not torch.isfinite(naive).all() or rel(naive.double(), exact) > 0.1  # naive formula collapses


# ---------------------------------------------------------------- response norms

@FEW
@given(n=st.integers(1, 3), c=st.integers(1, 9), spatial=st.sampled_from([(), (4,), (3, 5), (2, 2, 3)]),
       size=st.integers(1, 7), alpha=st.sampled_from([1e-4, 0.1, 2.0]), beta=st.sampled_from([0.5, 0.75, 1.0]),
       k=st.sampled_from([1.0, 2.0]), dtype=dtypes, seed=seeds)
def test_local_response_norm_matches_torch(n, c, spatial, size, alpha, beta, k, dtype, seed):
    shape = (n, c) + spatial if spatial else (n, c, 3)
    x = make_input(seed, shape, dtype, scale=3.0)
    ours = L.LocalResponseNorm(size, alpha, beta, k)(x)
    ref = nn.LocalResponseNorm(size, alpha, beta, k)(x)
    assert_rel(ours, ref, dtype, f"LRN size={size}")


def test_local_response_norm_gradient_and_alexnet_conversion():
    x = make_input(0, (2, 7, 3, 3), torch.float64, scale=4.0).requires_grad_()
    upstream = make_input(1, x.shape, torch.float64)
    (L.local_response_norm(x, 5, 0.1) * upstream).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    (F.local_response_norm(x, 5, 0.1) * upstream).sum().backward()
    assert_rel(ours, x.grad, torch.float64, "grad")
    # AlexNet: b = a / (2 + 1e-4 · Σ a²)^0.75 without /n  ==  PyTorch with alpha = 5e-4, k = 2
    a = x.detach()
    padded = F.pad(a.pow(2), (0, 0, 0, 0, 2, 2))
    alexnet = a / (2 + 1e-4 * sum(padded[:, i:i + 7] for i in range(5))).pow(0.75)
    assert_rel(nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)(a), alexnet, torch.float64, "AlexNet")


timm_grn = pytest.importorskip("timm.layers.grn")


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_global_response_norm_matches_timm(channels_last, dtype):
    for seed, (n, c, h, w) in enumerate([(2, 5, 4, 3), (1, 8, 7, 7), (3, 1, 2, 2), (2, 4, 1, 1)]):
        shape = (n, h, w, c) if channels_last else (n, c, h, w)
        x = make_input(seed, shape, dtype, offset=0.5, scale=2.0)
        ours = L.GlobalResponseNorm(c, channels_last=channels_last, dtype=dtype)
        ref = timm_grn.GlobalResponseNorm(c, channels_last=channels_last, dtype=dtype)
        assert ours.weight.shape == ref.weight.shape and set(ours.state_dict()) == set(ref.state_dict())
        assert_rel(ours(x), ref(x), dtype, "GRN at init (identity)")
        assert torch.equal(ours(x), x)
        randomize_affine(ours, ref, seed=seed)
        assert_rel(ours(x), ref(x), dtype, f"GRN {shape}")


def test_global_response_norm_gradients_match_timm():
    x = make_input(0, (2, 6, 4, 4), torch.float64)
    upstream = make_input(1, x.shape, torch.float64)
    grads = []
    for layer in (L.GlobalResponseNorm(6, channels_last=False, dtype=torch.float64),
                  timm_grn.GlobalResponseNorm(6, channels_last=False, dtype=torch.float64)):
        randomize_affine(layer)
        xi = x.clone().requires_grad_()
        (layer(xi) * upstream).sum().backward()
        grads.append((xi.grad, layer.weight.grad, layer.bias.grad))
    for name, a, e in zip(("x", "weight", "bias"), *grads):
        assert_rel(a, e, torch.float64, f"grad {name}")


# ---------------------------------------------------------------- folding

@pytest.mark.parametrize("conv_kwargs", [
    {"bias": False}, {"bias": True}, {"bias": True, "stride": 2, "padding": 1}, {"groups": 2, "bias": False},
])
@pytest.mark.parametrize("bn_cls", [nn.BatchNorm2d, L.BatchNorm2d])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fold_bn_into_conv_is_exact(conv_kwargs, bn_cls, dtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, dtype=dtype, **conv_kwargs)
    bn = bn_cls(6, dtype=dtype)
    randomize_affine(bn)
    bn.train()
    for s in range(3):  # give the BN real running statistics
        bn(conv(make_input(s, (4, 4, 9, 9), dtype, offset=1.0, scale=2.0)))
    bn.eval()
    before = conv.weight.clone()
    fused = L.fold_bn_into_conv(conv, bn)
    x = make_input(7, (3, 4, 9, 9), dtype)
    with torch.no_grad():
        assert_rel(fused(x), bn(conv(x)), dtype, "folded conv")
    assert torch.equal(conv.weight, before)  # the original conv is untouched
    assert fused.stride == conv.stride and fused.groups == conv.groups
    # PyTorch's own fusion (what to use in practice) gives the same conv
    library = torch.nn.utils.fusion.fuse_conv_bn_eval(conv.eval(), bn)
    assert_rel(fused.weight, library.weight, dtype, "weight vs fuse_conv_bn_eval")
    assert_rel(fused.bias, library.bias, dtype, "bias vs fuse_conv_bn_eval")


def test_fold_bn_refuses_bn_without_running_stats_and_channel_mismatch():
    conv = nn.Conv2d(3, 4, 1)
    with pytest.raises(ValueError, match="running statistics"):
        L.fold_bn_into_conv(conv, nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="output channels"):
        L.fold_bn_into_conv(conv, nn.BatchNorm2d(5))


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("call, exc, words", [
    (lambda: L.BatchNorm2d(3)(torch.randn(3, 4, 4)), ValueError, "unsqueeze(0)"),
    (lambda: L.BatchNorm2d(3)(torch.randn(2, 4, 4, 4)), ValueError, "built for 3"),
    (lambda: L.BatchNorm2d(3)(torch.randn(1, 3, 1, 1)), ValueError, "more than 1 value per channel"),
    (lambda: L.BatchNorm2d(3)(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)), TypeError, "/ 255"),
    (lambda: L.BatchNorm2d(3)(torch.randn(2, 3, 4, 4).numpy()), TypeError, "torch.Tensor"),
    (lambda: L.batch_norm2d(torch.randn(2, 3, 4, 4), torch.zeros(4), torch.ones(4)), ValueError, "(3,)"),
    (lambda: L.GroupNorm(4, 6), ValueError, "does not divide"),
    (lambda: L.group_norm(torch.randn(2, 6, 3, 3), 4), ValueError, "[1, 2, 3, 6]"),
    (lambda: L.GroupNorm(2, 6)(torch.randn(2, 4, 3, 3)), ValueError, "built for 6"),
    (lambda: L.LayerNorm((3, 4, 4))(torch.randn(2, 4, 4, 3)), ValueError, "normalized_shape"),
    (lambda: L.RMSNorm(8)(torch.randn(2, 5, 6)), ValueError, "normalized_shape=(6,)"),
    (lambda: L.RMSNorm((3, 4))(torch.randn(4)), ValueError, "at least 2 dimensions"),
    (lambda: L.rms_norm(torch.randn(2, 6), 6, torch.ones(5)), ValueError, "expected normalized_shape (6,)"),
    (lambda: L.RMSNorm(4)(torch.zeros(2, 4, dtype=torch.int64)), TypeError, "floating-point"),
    (lambda: L.RMSNorm(4.0), ValueError, "integer"),
    (lambda: L.InstanceNorm2d(3)(torch.randn(2, 3, 1, 1)), ValueError, "spatial element"),
    (lambda: L.InstanceNorm2d(3)(torch.randn(2, 5, 4, 4)), ValueError, "built for 3"),
    (lambda: L.LocalResponseNorm(3)(torch.randn(4, 5)), ValueError, "at least 3"),
    (lambda: L.GlobalResponseNorm(8)(torch.randn(2, 8, 4, 4)), ValueError, "channels_last=False"),
    (lambda: L.GlobalResponseNorm(8, channels_last=False)(torch.randn(2, 8, 4)), ValueError, "4-D"),
], ids=["bn-rank", "bn-channels", "bn-one-value", "bn-uint8", "bn-numpy", "bn-buffer-shape",
        "gn-groups", "gn-groups-functional", "gn-channels", "ln-shape", "rms-shape", "rms-rank", "rms-weight-shape",
        "rms-int", "rms-float-size", "in-1x1", "in-channels",
        "lrn-rank", "grn-layout", "grn-rank"])
def test_clear_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words.lower() in str(info.value).lower(), str(info.value)


def test_eval_mode_bn_accepts_one_value_per_channel():
    bn = L.BatchNorm2d(3).eval()
    assert bn(torch.randn(1, 3, 1, 1)).shape == (1, 3, 1, 1)


def test_plot_norm_axes_draws_each_kind():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4)
    counts = {}
    for ax, kind in zip(axes, ["bn", "ln", "in", "gn"]):
        cu.plot_norm_axes(ax, kind)
        counts[kind] = sum(p.get_facecolor()[:3] != (1.0, 1.0, 1.0) for p in ax.patches)
    plt.close(fig)
    # instance norm shades the fewest cells, layer norm the most
    assert counts["in"] < counts["gn"] < counts["ln"] and counts["in"] < counts["bn"]
    with pytest.raises(ValueError, match="unknown kind"):
        cu.plot_norm_axes(axes[0], "weight")


# ------------------------------------------------------------------ keywords and layouts torch.nn takes too

BIAS_FREE = {
    "BatchNorm2d": (lambda: L.BatchNorm2d(3, bias=False), lambda: nn.BatchNorm2d(3, bias=False)),
    "GroupNorm": (lambda: L.GroupNorm(3, 6, bias=False), lambda: nn.GroupNorm(3, 6, bias=False)),
    "InstanceNorm2d": (lambda: L.InstanceNorm2d(3, affine=True, bias=False),
                       lambda: nn.InstanceNorm2d(3, affine=True, bias=False)),
}


@pytest.mark.parametrize("name", list(BIAS_FREE))
def test_bias_false_learns_a_weight_only_as_torch_does(name):
    make_ours, make_ref = BIAS_FREE[name]
    ours, ref = make_ours(), make_ref()
    assert ours.bias is None and ref.bias is None and ours.weight is not None
    assert set(ours.state_dict()) == set(ref.state_dict())
    torch.manual_seed(0)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
    ours.load_state_dict(ref.state_dict())
    channels = ours.weight.shape[0]
    x = make_input(1, (4, channels, 5, 5), torch.float32, offset=2.0).requires_grad_()
    y_ours, y_ref = ours(x), ref(x)
    assert_rel(y_ours, y_ref, torch.float32, f"{name}(bias=False)")
    g = torch.randn_like(y_ref)
    got = torch.autograd.grad((y_ours * g).sum(), [x, ours.weight])
    want = torch.autograd.grad((y_ref * g).sum(), [x, ref.weight])
    for a, b, what in zip(got, want, ("input", "weight")):
        assert_rel(a, b, torch.float32, f"{name}(bias=False), gradient of the {what}")


@pytest.mark.parametrize("affine, track", [(False, False), (True, False), (True, True)])
def test_instance_norm_takes_one_unbatched_image_as_torch_does(affine, track):
    ours = L.InstanceNorm2d(3, affine=affine, track_running_stats=track, momentum=0.3)
    ref = nn.InstanceNorm2d(3, affine=affine, track_running_stats=track, momentum=0.3)
    image = make_input(2, (3, 6, 5), torch.float64, offset=3.0).float()
    y = ours(image)  # once each: in train mode with tracking, every call updates the running statistics
    assert y.shape == (3, 6, 5)
    assert_rel(y, ref(image), torch.float32, "InstanceNorm2d on (C, H, W)")
    for a, b in zip(ours.buffers(), ref.buffers()):
        torch.testing.assert_close(a, b)
    ours.eval(), ref.eval()
    assert_rel(ours(image), ref(image), torch.float32, "InstanceNorm2d on (C, H, W), eval mode")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ours(torch.randn(5, 5))
