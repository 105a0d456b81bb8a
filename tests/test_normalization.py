"""Input normalization: known values, clear errors, streaming statistics, the contract guard, folding."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

import course_utils as cu
from course_utils import normalization as N

GEN = torch.Generator().manual_seed(0)
CONTRACT = cu.Contract(mean=(0.24,) * 3, std=(0.34,) * 3, resize_size=32, crop_size=32,
                       categories=tuple("abcde"), source="test")
IMAGENET = cu.Contract.from_weights(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)


def pixels(*shape, seed=0):
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- scalings

def test_to_unit_matches_totensor_bit_for_bit():
    img = pixels(3, 5, 7)
    pil = torchvision.transforms.functional.to_pil_image(img)
    expected = torchvision.transforms.ToTensor()(pil)
    out = N.to_unit(img)
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    assert N.to_unit(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2)).flatten().tolist() == [0.0, 1.0]


@pytest.mark.parametrize("bad, exc, match", [
    (torch.rand(3, 4, 4), TypeError, "uint8"),
    (torch.zeros(4, 4, dtype=torch.uint8), ValueError, "unsqueeze"),
    (torch.zeros(4, 4, 3, 2, 1, dtype=torch.uint8), ValueError, "shape"),
    ([[1, 2]], TypeError, "Tensor"),
])
def test_to_unit_rejects_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        N.to_unit(bad)


def test_min_max_known_values_and_per_image():
    x = torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])  # (2, 1, 2, 2)
    out = N.min_max(x)
    torch.testing.assert_close(out[0].flatten(), torch.tensor([0.0, 0.25, 0.5, 1.0]))
    assert torch.equal(out[1], torch.zeros(1, 2, 2)), "a constant image becomes zeros"
    torch.testing.assert_close(N.min_max(pixels(3, 4, 4)).amax(), torch.tensor(1.0))


def test_to_minus_one_one_known_values_and_errors():
    x = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 3)
    torch.testing.assert_close(N.to_minus_one_one(x).flatten(), torch.tensor([-1.0, -0.5, 1.0]))
    u8 = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2)
    torch.testing.assert_close(N.to_minus_one_one(u8).flatten(), torch.tensor([-1.0, 1.0]))
    with pytest.raises(ValueError, match="0-255"):
        N.to_minus_one_one(torch.full((1, 2, 2), 200.0))


@pytest.mark.parametrize("per_channel", [False, True])
def test_per_image_zscore(per_channel):
    x = torch.rand(4, 3, 6, 6, generator=GEN) * torch.tensor([1.0, 0.5, 0.2, 0.9]).view(4, 1, 1, 1)
    z = N.per_image_zscore(x, eps=0, per_channel=per_channel)
    dims = (2, 3) if per_channel else (1, 2, 3)
    torch.testing.assert_close(z.mean(dim=dims), torch.zeros(z.mean(dim=dims).shape), atol=1e-6, rtol=0)
    torch.testing.assert_close(z.std(dim=dims, correction=0), torch.ones(z.mean(dim=dims).shape), atol=1e-5, rtol=0)
    # brightness and contrast are erased: an affine change of an image gives the same output
    torch.testing.assert_close(N.per_image_zscore(0.3 * x + 0.2, eps=0, per_channel=per_channel), z,
                               atol=1e-5, rtol=1e-5)
    single = N.per_image_zscore(x[0], eps=0, per_channel=per_channel)  # (C, H, W) works too
    torch.testing.assert_close(single, z[0])


def test_channel_normalize_matches_torchvision_normalize():
    x = torch.rand(2, 3, 5, 5, generator=GEN)
    expected = torchvision.transforms.Normalize(cu.IMAGENET_MEAN, cu.IMAGENET_STD)(x)
    torch.testing.assert_close(N.channel_normalize(x, cu.IMAGENET_MEAN, cu.IMAGENET_STD), expected)
    torch.testing.assert_close(N.channel_normalize(x[0], cu.IMAGENET_MEAN, cu.IMAGENET_STD), expected[0])


@pytest.mark.parametrize("x, mean, std, exc, match", [
    (pixels(3, 4, 4), (0.5,) * 3, (0.2,) * 3, TypeError, "to_unit"),
    (torch.full((3, 4, 4), 128.0), (0.5,) * 3, (0.2,) * 3, ValueError, "0-255"),
    (torch.rand(3, 4, 4), (0.5,) * 2, (0.2,) * 3, ValueError, "3 channels"),
    (torch.rand(3, 4, 4), (0.5,) * 3, (0.2, 0.0, 0.2), ValueError, "positive"),
    (torch.rand(4, 4), (0.5,), (0.2,), ValueError, "unsqueeze"),
    (torch.rand(3, 4, 4).int(), (0.5,) * 3, (0.2,) * 3, TypeError, "float"),
])
def test_channel_normalize_errors(x, mean, std, exc, match):
    with pytest.raises(exc, match=match):
        N.channel_normalize(x, mean, std)


def test_bgr_and_gray():
    x = torch.arange(3 * 2 * 2).view(1, 3, 2, 2)
    assert torch.equal(N.bgr_to_rgb(x)[0, 0], x[0, 2]) and torch.equal(N.bgr_to_rgb(x)[0, 2], x[0, 0])
    assert torch.equal(N.bgr_to_rgb(N.bgr_to_rgb(x)), x)
    assert torch.equal(N.bgr_to_rgb(x[0]), N.bgr_to_rgb(x)[0])
    assert N.rgb_to_bgr is N.bgr_to_rgb
    gray = pixels(2, 1, 3, 3)
    rgb = N.gray_to_rgb(gray)
    assert rgb.shape == (2, 3, 3, 3) and rgb.dtype == torch.uint8
    assert all(torch.equal(rgb[:, c], gray[:, 0]) for c in range(3))
    assert N.gray_to_rgb(gray[0]).shape == (3, 3, 3)
    with pytest.raises(ValueError, match="3 channels"):
        N.bgr_to_rgb(gray)
    with pytest.raises(ValueError, match="1 channel"):
        N.gray_to_rgb(rgb)


# --------------------------------------------------------------------------- streaming statistics

def _direct(x):
    x = x.double() / 255 if x.dtype == torch.uint8 else x.double()
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3), correction=0)


def _batches(x, sizes):
    start = 0
    for s in sizes:
        yield x[start:start + s]
        start += s


@pytest.mark.parametrize("name, data", [
    ("uint8 pixels", pixels(301, 3, 6, 6)),
    ("float32 around 1e4", 1e4 + torch.randn(301, 3, 6, 6, generator=GEN) * torch.tensor([1.0, 0.1, 3.0]).view(1, 3, 1, 1)),
    ("float64 around 1e8", 1e8 + torch.randn(301, 2, 6, 6, generator=GEN, dtype=torch.float64)),
])
def test_channel_stats_matches_direct_computation_with_uneven_batches(name, data):
    ref_mean, ref_std = _direct(data)
    for sizes in ([301], [1, 100, 7, 193], [64] * 4 + [45]):
        mean, std = N.channel_stats(_batches(data, sizes))
        assert mean.dtype == torch.float64 and mean.shape == (data.shape[1],)
        torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=0)
        torch.testing.assert_close(std, ref_std, rtol=1e-7, atol=0)
    # the naive E[x^2] - E[x]^2 in float64 fails on the same data far from zero (so the test can tell)
    if name == "float64 around 1e8":
        x = data.double()
        naive = ((x ** 2).mean(dim=(0, 2, 3)) - x.mean(dim=(0, 2, 3)) ** 2).clamp(min=0).sqrt()
        assert not torch.allclose(naive, ref_std, rtol=1e-3)


def test_channel_stats_tensor_and_loader_inputs():
    x = pixels(50, 3, 4, 4)
    labels = torch.zeros(50, dtype=torch.int64)
    ref = _direct(x)
    for got in (N.channel_stats(x, batch_size=7), N.channel_stats([(x[:20], labels[:20]), (x[20:], labels[20:])])):
        torch.testing.assert_close(got[0], ref[0])
        torch.testing.assert_close(got[1], ref[1])
    with pytest.raises(ValueError, match="no data"):
        N.channel_stats(iter([]))
    with pytest.raises(ValueError, match="N, C, H, W"):
        N.channel_stats(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        N.channel_stats([torch.zeros(2, 3, 2, 2), torch.zeros(2, 1, 2, 2)])


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=6), offset=st.sampled_from([0.0, 1e3, 1e6]))
def test_channel_stats_any_split(sizes, offset):
    n = sum(sizes)
    x = offset + torch.randn(n, 2, 3, 3, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    mean, std = N.channel_stats(_batches(x, sizes))
    ref_mean, ref_std = _direct(x)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, ref_std, rtol=1e-8, atol=1e-12)


# --------------------------------------------------------------------------- the contract guard

def _good_batch(n=64):
    """Images whose pixels have mean ~0.24 and std ~0.34 (like the course's), normalized with CONTRACT."""
    g = torch.Generator().manual_seed(1)
    x01 = (torch.rand(n, 1, 16, 16, generator=g) < 0.3).float() * torch.rand(n, 1, 16, 16, generator=g) * 0.2 + \
        (torch.rand(n, 1, 16, 16, generator=g) < 0.3).float() * 0.6
    x01 = x01.clamp(0, 1).expand(-1, 3, -1, -1)
    mean, std = N.channel_stats(x01)
    contract = cu.Contract(mean=tuple(mean.tolist()), std=tuple(std.tolist()), resize_size=16, crop_size=16,
                           categories=("a",), source="test")
    return x01, contract


def test_guard_passes_a_good_batch_silently():
    x01, contract = _good_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert N.check_input_batch(contract.normalize(x01), contract) == []
        assert N.check_input_batch(contract.normalize(x01[:1]), contract) == []
        assert N.check_input_batch(contract.normalize(x01)) == []   # without a contract too


@pytest.mark.parametrize("mistake, match", [
    ("uint8", "uint8"),
    ("0-255", "0-255"),
    ("unnormalized", "mean near 0"),
    ("imagenet stats", "another dataset"),
    ("minus one one", r"\[-1, 1\]"),
    ("per-image z", "per-image z-score"),
    ("one channel", "gray_to_rgb"),
    ("nan", "NaN"),
    ("no batch dim", "unsqueeze"),
])
def test_guard_names_each_mistake(mistake, match):
    x01, contract = _good_batch()
    pix = (x01 * 255).round().to(torch.uint8)
    bad = {
        "uint8": lambda: pix,
        "0-255": lambda: pix.float(),
        "unnormalized": lambda: x01,
        "imagenet stats": lambda: N.channel_normalize(x01, cu.IMAGENET_MEAN, cu.IMAGENET_STD),
        "minus one one": lambda: N.to_minus_one_one(x01),
        "per-image z": lambda: N.per_image_zscore(x01),
        "one channel": lambda: contract.normalize(x01)[:, :1],
        "nan": lambda: contract.normalize(x01).index_fill(0, torch.tensor([3]), float("nan")),
        "no batch dim": lambda: contract.normalize(x01)[0],
    }[mistake]()
    with pytest.warns(N.InputContractWarning, match=match):
        problems = N.check_input_batch(bad, contract)
    assert problems and any(__import__("re").search(match, p) for p in problems)
    assert N.check_input_batch(bad, contract, warn=False) == problems


def test_guard_cannot_see_bgr_and_says_so_in_its_docstring():
    x01, contract = _good_batch()
    swapped = contract.normalize(N.bgr_to_rgb(x01))
    assert torch.equal(swapped, contract.normalize(x01))   # gray x3: BGR is the same tensor
    assert N.check_input_batch(swapped, contract, warn=False) == []
    assert "BGR" in N.check_input_batch.__doc__


def test_guard_accepts_a_mean_std_pair_and_rejects_non_tensors():
    x01, contract = _good_batch()
    assert N.check_input_batch(contract.normalize(x01), (contract.mean, contract.std), warn=False) == []
    with pytest.raises(TypeError):
        N.check_input_batch([[0.0]])


def test_guard_on_imagenet_contract():
    x01 = torch.rand(8, 3, 32, 32, generator=GEN)
    assert N.check_input_batch(IMAGENET.normalize(x01), IMAGENET, warn=False) == []
    assert N.check_input_batch(x01 * 255, IMAGENET, warn=False)


# --------------------------------------------------------------------------- folding

def _conv(padding, padding_mode="zeros", bias=True, stride=1):
    torch.manual_seed(0)
    return nn.Conv2d(3, 8, 5, stride=stride, padding=padding, padding_mode=padding_mode, bias=bias).double()


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _reference(conv, x01):
    return conv(N.channel_normalize(x01, MEAN, STD))


@pytest.mark.parametrize("padding, mode, bias, stride", [
    (0, "zeros", True, 1), (2, "zeros", False, 2), (2, "reflect", True, 1), (2, "replicate", False, 1),
    (1, "circular", True, 2),
])
def test_fold_is_exact(padding, mode, bias, stride):
    conv = _conv(padding, mode, bias, stride)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    x01 = torch.rand(2, 3, 12, 12, generator=GEN, dtype=torch.float64)
    folded = N.fold_normalization_into_conv(conv, MEAN, STD)
    with torch.no_grad():
        torch.testing.assert_close(folded(x01), _reference(conv, x01), rtol=1e-10, atol=1e-10)
    assert all(torch.equal(before[k], v) for k, v in conv.state_dict().items()), "the original conv must not change"


def test_fold_zero_padding_exact_with_mean_padding_approximate_without():
    conv = _conv(2)
    x01 = torch.rand(2, 3, 12, 12, generator=GEN, dtype=torch.float64)
    with torch.no_grad():
        ref = _reference(conv, x01)
        exact = N.fold_normalization_into_conv(conv, MEAN, STD)(x01)
        plain = N.fold_normalization_into_conv(conv, MEAN, STD, exact_padding=False)(x01)
    torch.testing.assert_close(exact, ref, rtol=1e-10, atol=1e-10)
    diff = (plain - ref).abs().amax(dim=(0, 1))          # (H, W)
    assert diff[2:-2, 2:-2].max() < 1e-10, "zero padding is exact away from the border"
    assert diff[0].max() > 1e-2 and diff[:, -1].max() > 1e-2, "and wrong in the border"


def test_fold_resnet_conv1_float32():
    conv = torchvision.models.resnet18().conv1
    x01 = torch.rand(2, 3, 32, 32, generator=GEN)
    with torch.no_grad():
        torch.testing.assert_close(N.fold_normalization_into_conv(conv, MEAN, STD)(x01),
                                   conv(N.channel_normalize(x01, MEAN, STD)), rtol=1e-4, atol=1e-4)


def test_fold_errors():
    with pytest.raises(TypeError, match="Conv2d"):
        N.fold_normalization_into_conv(nn.Linear(3, 3), MEAN, STD)
    with pytest.raises(ValueError, match="input channels"):
        N.fold_normalization_into_conv(_conv(0), (0.5,), (0.2,))
    with pytest.raises(ValueError, match="positive"):
        N.fold_normalization_into_conv(_conv(0), MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="groups"):
        N.fold_normalization_into_conv(nn.Conv2d(3, 6, 3, groups=3), MEAN, STD)


def test_names_are_exported():
    for name in ("to_unit", "min_max", "to_minus_one_one", "channel_normalize", "bgr_to_rgb", "gray_to_rgb",
                 "check_input_batch", "InputContractWarning", "fold_normalization_into_conv", "channel_stats"):
        assert getattr(cu, name) is getattr(N, name), name
