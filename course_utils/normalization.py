"""Input normalization: from uint8 pixels to what a model expects, and a guard for the contract.

Every function here takes images as tensors, channels first: one image (C, H, W)
or a batch (N, C, H, W). The scale conventions:

- ``uint8``: raw pixels, 0-255, as a PNG or JPEG decodes to;
- "unit" float: pixels / 255, on [0, 1] (what ``torchvision.transforms.ToTensor`` returns);
- normalized float: whatever a model's contract maps the unit floats to.

Functions that expect unit floats refuse uint8 input and float input that still
looks like 0-255, with a message saying how to fix it.

``channel_stats`` computes the mean and standard deviation of every channel in
one streaming pass, merging per-batch results with Chan et al.'s parallel
formula in float64, so it is exact for data far from zero and never holds the
dataset in floating point at once.
"""
from __future__ import annotations

import copy
import warnings
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# Float input whose largest value exceeds this is taken for 0-255 pixels that were never divided by 255.
_UNIT_LIMIT = 1.0 + 1e-3


class InputContractWarning(UserWarning):
    """A batch does not look like what the model's input contract asks for."""


# --------------------------------------------------------------------------- input checks

def _expect_image(x, fn: str) -> None:
    """Raise unless ``x`` is a tensor shaped like one image (C, H, W) or a batch (N, C, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor of shape (C, H, W) or (N, C, H, W), got "
                        f"{type(x).__name__}. For a PIL image use torchvision.transforms.functional.pil_to_tensor.")
    if x.ndim not in (3, 4):
        hint = (" A (H, W, C) array from PIL or OpenCV needs .permute(2, 0, 1) first." if x.ndim == 3 else
                " A (H, W) grayscale image needs .unsqueeze(0) to become (1, H, W)." if x.ndim == 2 else "")
        raise ValueError(f"{fn}: expected an image (C, H, W) or a batch (N, C, H, W), got shape "
                         f"{tuple(x.shape)}.{hint}")


def _expect_unit_float(x: torch.Tensor, fn: str) -> None:
    """Raise unless ``x`` is a float tensor on the [0, 1] scale (not uint8, not 0-255 floats)."""
    _expect_image(x, fn)
    if x.dtype == torch.uint8:
        raise TypeError(f"{fn}: got uint8 pixels (0-255); convert them first with cu.to_unit(x) "
                        f"(the same scaling as torchvision's ToTensor).")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a float tensor on [0, 1], got dtype {x.dtype}.")
    if x.numel() and x.max().item() > _UNIT_LIMIT:
        raise ValueError(f"{fn}: values reach {x.max().item():.4g}, but [0, 1] was expected: this looks like "
                         f"0-255 pixels stored as floats. Divide by 255 first.")


def _channel_dim(x: torch.Tensor) -> int:
    return x.ndim - 3  # 0 for (C, H, W), 1 for (N, C, H, W)


def _per_channel(values: Sequence[float] | torch.Tensor, x: torch.Tensor, name: str, fn: str) -> torch.Tensor:
    """``values`` as a tensor that broadcasts over ``x``'s channel axis."""
    v = torch.as_tensor(values, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
    channels = x.shape[_channel_dim(x)]
    if v.ndim != 1 or v.numel() != channels:
        raise ValueError(f"{fn}: {name} has {v.numel()} values but the input has {channels} channels "
                         f"(shape {tuple(x.shape)}); give one {name} per channel.")
    return v.view(-1, 1, 1)


# --------------------------------------------------------------------------- scalings

def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (C, H, W) or (N, C, H, W) -> float32 on [0, 1]: ``x / 255``.

    The same arithmetic as ``torchvision.transforms.ToTensor`` (float32, then divide
    by 255), so the results agree bit for bit; unlike ToTensor it takes a tensor that is
    already channels first. Float input is refused: it has been scaled already (or not,
    and then the caller should decide).
    """
    _expect_image(x, "to_unit")
    if x.dtype != torch.uint8:
        raise TypeError(f"to_unit: expected uint8 pixels (0-255), got dtype {x.dtype}. Float images are "
                        f"already scaled; if yours hold 0-255 values, use x / 255.")
    return x.to(torch.float32).div(255)


def min_max(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Stretch each image to [0, 1] on its own: (x - min) / (max - min + eps), min and max over (C, H, W).

    Keeps the shape of the histogram; throws away the absolute brightness and contrast,
    and one unusually bright or dark pixel changes the whole image. A constant image
    becomes all zeros. Accepts uint8 or float; returns float32 (or the float dtype given).
    """
    _expect_image(x, "min_max")
    x = x.float() if not x.is_floating_point() else x
    dims = tuple(range(x.ndim - 3, x.ndim))
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo + eps)


def to_minus_one_one(x: torch.Tensor) -> torch.Tensor:
    """Pixels to [-1, 1]: 2 * x - 1 for unit floats (uint8 is divided by 255 first).

    One fixed affine map for every image and channel (the same as
    ``Normalize(mean=0.5, std=0.5)``): nothing is lost, nothing is adapted to the data.
    """
    _expect_image(x, "to_minus_one_one")
    if x.dtype == torch.uint8:
        x = to_unit(x)
    _expect_unit_float(x, "to_minus_one_one")
    return 2 * x - 1


def per_image_zscore(x: torch.Tensor, eps: float = 1e-6, *, per_channel: bool = False) -> torch.Tensor:
    """Standardize each image with its own statistics: (x - mean) / (std + eps).

    ``mean`` and the population ``std`` are taken over (C, H, W) of each image, or over
    (H, W) of each channel with ``per_channel=True``. Every output image has mean 0
    and std 1 (a constant image becomes zeros), so any difference in brightness or
    contrast between images is erased. Accepts uint8 or float; the scale does not matter.
    """
    _expect_image(x, "per_image_zscore")
    x = x.float() if not x.is_floating_point() else x
    dims = tuple(range(x.ndim - 2, x.ndim)) if per_channel else tuple(range(x.ndim - 3, x.ndim))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, correction=0)
    return (x - mean) / (std + eps)


def channel_normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel standardization with fixed statistics: (x - mean[c]) / std[c].

    ``x``: unit floats (C, H, W) or (N, C, H, W); ``mean``, ``std``: one value per
    channel on the [0, 1] scale, as torchvision's ``Normalize`` and weights record them.
    Equal to ``torchvision.transforms.Normalize(mean, std)(x)``.
    """
    _expect_unit_float(x, "channel_normalize")
    m = _per_channel(mean, x, "mean", "channel_normalize")
    s = _per_channel(std, x, "std", "channel_normalize")
    if (s <= 0).any():
        raise ValueError(f"channel_normalize: every std must be positive, got {list(map(float, s.flatten()))}.")
    return (x - m) / s


def bgr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Reverse the channel order (BGR <-> RGB); its own inverse.

    OpenCV's ``cv2.imread`` returns BGR; torchvision and PIL use RGB.
    """
    _expect_image(x, "bgr_to_rgb")
    dim = _channel_dim(x)
    if x.shape[dim] != 3:
        raise ValueError(f"bgr_to_rgb: expected 3 channels, got {x.shape[dim]} (shape {tuple(x.shape)}).")
    return x.flip(dim)


rgb_to_bgr = bgr_to_rgb  # the same swap, named for the other direction
swap_rb = bgr_to_rgb


def gray_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """One grayscale channel -> three identical channels, for models built for RGB input.

    (1, H, W) -> (3, H, W) or (N, 1, H, W) -> (N, 3, H, W), any dtype. Like
    ``torchvision.transforms.Grayscale(num_output_channels=3)`` applied to an image
    that is gray already.
    """
    _expect_image(x, "gray_to_rgb")
    dim = _channel_dim(x)
    if x.shape[dim] != 1:
        raise ValueError(f"gray_to_rgb: expected 1 channel, got {x.shape[dim]} (shape {tuple(x.shape)}). "
                         f"For an RGB image there is nothing to do; to make it gray use "
                         f"torchvision.transforms.functional.rgb_to_grayscale.")
    repeat = [1] * x.ndim
    repeat[dim] = 3
    return x.repeat(*repeat)


# --------------------------------------------------------------------------- dataset statistics

def _as_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float64 on [0, 1]; float input is taken as it is."""
    if batch.dtype == torch.uint8:
        return batch.double() / 255.0
    if not batch.is_floating_point():
        raise TypeError(f"expected uint8 pixels or a float tensor, got {batch.dtype}")
    return batch.double()


def channel_stats(data: torch.Tensor | Iterable, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of images (N, C, H, W), in one streaming pass.

    ``data`` is a tensor or an iterable of batches (tensors, or ``(images, labels)``
    pairs as loaders yield). uint8 is read as pixels / 255. Returns two float64
    tensors of shape (C,).

    Each batch gives a count n_b, mean m_b and sum of squared deviations M2_b per
    channel; two partial results merge as (Chan et al., 1979)
    delta = m_b - m_a;  m = m_a + delta * n_b / n;  M2 = M2_a + M2_b + delta^2 * n_a * n_b / n.
    """
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(data.shape)}")
        images = data
        data = (images[i:i + batch_size] for i in range(0, images.shape[0], batch_size))
    moments = None
    for batch in data:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if batch.ndim != 4:
            raise ValueError(f"expected batches of shape (N, C, H, W), got {tuple(batch.shape)}")
        moments = merge_moments(moments, batch_moments(_as_unit_float(batch)))
    if moments is None or moments[0] == 0:
        raise ValueError("channel_stats got no data")
    count, mean, m2 = moments
    return mean, (m2 / count).sqrt()


Moments = tuple  # (count, mean (C,), M2 (C,)): M2 is the sum of squared deviations from the mean


def batch_moments(x: torch.Tensor) -> Moments:
    """(count, mean, M2) per channel of ``x`` (N, C, *), in float64, centered (two-pass)."""
    flat = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)  # (C, N·H·W)
    count = flat.shape[1]
    mean = flat.mean(dim=1) if count else flat.new_zeros(x.shape[1])
    return count, mean, ((flat - mean[:, None]) ** 2).sum(dim=1)


def merge_moments(a: Moments | None, b: Moments) -> Moments:
    """Combine two partial (count, mean, M2) results (Chan et al., 1979): exact, and no E[x²] - E[x]²,
    which loses every digit when the mean is large next to the spread.

        delta = mean_b - mean_a;  mean = mean_a + delta · n_b / n;  M2 = M2_a + M2_b + delta² · n_a · n_b / n
    """
    if a is None or a[0] == 0:
        return b
    if b[0] == 0:
        return a
    (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) = a, b
    if mean_b.shape != mean_a.shape:
        raise ValueError(f"a batch has {mean_b.numel()} channels, earlier ones had {mean_a.numel()}")
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), m2_a + m2_b + delta ** 2 * (n_a * n_b / n)


# --------------------------------------------------------------------------- the contract guard

def _contract_numbers(contract) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, std) float64 tensors from a Contract, a ``(mean, std)`` pair, or None."""
    if contract is None:
        return None
    if hasattr(contract, "mean") and hasattr(contract, "std"):
        mean, std = contract.mean, contract.std
    else:
        mean, std = contract
    return torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)


def check_input_batch(x: torch.Tensor, contract=None, *, warn: bool = True,
                      tolerance: float = 0.05) -> list[str]:
    """Look at a batch about to enter a model and say, in plain words, what looks wrong.

    ``contract``: a :class:`course_utils.Contract` (or anything with ``mean`` and ``std``,
    or a ``(mean, std)`` pair) giving the normalization the model was trained with;
    without one only the generic checks run. Returns the list of problems found (empty
    for a batch that looks right) and, unless ``warn=False``, emits them as one
    :class:`InputContractWarning`.

    What it checks, in order (a problem that makes the later checks meaningless stops there):

    1. shape (N, C, H, W); 2. a float dtype (not uint8 pixels); 3. no NaN or inf;
    4. the channel count (the contract's, else 3);
    5. values in the hundreds: 0-255 pixels never divided by 255;
    6. (contract) values outside the range the contract gives pixels in [0, 1]:
       pixel 0 maps to -mean/std and pixel 1 to (1 - mean)/std, so anything beyond that
       (plus ``tolerance`` of the range) was normalized with other statistics;
    7. (contract) every image with mean 0 and std 1 on its own: a per-image z-score
       where the contract asks for fixed dataset statistics (checked before 6);
    8. per-channel batch mean far from 0 (|mean| > 1.5) or std far from 1 (off by more
       than a factor 2.5): no normalization or the wrong one.

    It cannot see everything: swapped colour channels (BGR) keep every statistic
    plausible, and a small batch of unusual images can trip check 8 on its own.
    """
    problems: list[str] = []

    def done() -> list[str]:
        if problems and warn:
            warnings.warn("the input batch does not look like what the model expects:\n  - "
                          + "\n  - ".join(problems), InputContractWarning, stacklevel=3)
        return problems

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"check_input_batch: expected a torch.Tensor batch, got {type(x).__name__}")
    if x.ndim != 4:
        problems.append(f"shape {tuple(x.shape)} is not a batch (N, C, H, W)"
                        + ("; add the batch dimension with x.unsqueeze(0)" if x.ndim == 3 else ""))
        return done()
    if not x.is_floating_point():
        problems.append(f"dtype is {x.dtype}, not float: these are raw pixels. Convert with cu.to_unit(x) "
                        f"(0-255 -> [0, 1]) and then normalize")
        return done()
    finite = torch.isfinite(x)
    if not finite.all():
        bad = (~finite).sum().item()
        problems.append(f"{bad} value(s) are NaN or infinite; check the loading and any division by a zero std")
        return done()
    numbers = _contract_numbers(contract)
    channels = x.shape[1]
    expected_channels = numbers[0].numel() if numbers is not None else 3
    if channels != expected_channels:
        hint = " (grayscale? repeat it with cu.gray_to_rgb)" if channels == 1 else ""
        problems.append(f"{channels} channel(s), but the model expects {expected_channels}{hint}")
        return done()

    xd = x.detach().double()
    lo_seen, hi_seen = xd.min().item(), xd.max().item()
    if max(abs(lo_seen), abs(hi_seen)) > 20:
        problems.append(f"values reach {hi_seen:.1f}: this looks like 0-255 pixels that were never divided "
                        f"by 255 (use cu.to_unit, or ToTensor, before normalizing)")
        return done()

    if numbers is not None:
        mean, std = numbers
        per_image = xd.flatten(1)
        img_mean, img_std = per_image.mean(1), per_image.std(1, correction=0)
        lo, hi = (-mean / std).min().item(), ((1 - mean) / std).max().item()
        slack = tolerance * (hi - lo)
        if (img_mean.abs() < 1e-3).all() and ((img_std - 1).abs() < 1e-2).all():
            problems.append("every image has mean 0 and std 1 on its own: a per-image z-score, but the "
                            "contract asks for its fixed dataset statistics, the same for every image")
        elif lo_seen < lo - slack or hi_seen > hi + slack:
            problems.append(f"values span [{lo_seen:.2f}, {hi_seen:.2f}], but the contract (mean "
                            f"{_fmt(mean)}, std {_fmt(std)}) maps pixels in [0, 1] to [{lo:.2f}, {hi:.2f}]: "
                            f"normalized some other way ([-1, 1], another dataset's statistics)?")

    ch = xd.transpose(0, 1).reshape(channels, -1)
    ch_mean, ch_std = ch.mean(1), ch.std(1, correction=0)
    off = [c for c in range(channels)
           if abs(ch_mean[c].item()) > 1.5 or not (1 / 2.5 < ch_std[c].item() < 2.5)]
    if off:
        problems.append(f"per-channel mean {_fmt(ch_mean)} and std {_fmt(ch_std)}: a normalized batch has "
                        f"mean near 0 and std near 1 (no normalization, or the wrong one?)")
    return done()


def _fmt(v: torch.Tensor) -> str:
    return "(" + ", ".join(f"{float(a):.2f}" for a in v.flatten()) + ")"


# --------------------------------------------------------------------------- folding

class MeanPad2d(nn.Module):
    """Pad each channel with its own constant (the dataset mean), as zero padding of normalized input would.

    ``padding``: (left, right, top, bottom) as ``F.pad`` takes it; ``value``: (C,).
    """

    def __init__(self, padding: tuple[int, int, int, int], value: Sequence[float]) -> None:
        super().__init__()
        self.padding = tuple(int(p) for p in padding)
        self.register_buffer("value", torch.as_tensor(value, dtype=torch.float64).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pad(x - v, 0) + v puts v in the border and leaves the inside unchanged
        value = self.value.to(x.dtype)
        return F.pad(x - value, self.padding) + value

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={[round(v, 4) for v in self.value.flatten().tolist()]}"


def fold_normalization_into_conv(conv: nn.Conv2d, mean: Sequence[float], std: Sequence[float], *,
                                 exact_padding: bool = True) -> nn.Module:
    """A module that takes unit-float images and computes ``conv((x - mean) / std)``; ``conv`` is not changed.

    The normalization is an affine map per input channel, so it folds into the
    weights: W'[o, c] = W[o, c] / std[c] and b'[o] = b[o] - sum_{c, i, j} W[o, c, i, j] mean[c] / std[c].
    Shapes: weight (C_out, C_in, kH, kW), bias (C_out,), mean and std (C_in,).

    Padding is the subtle part. The original conv pads the *normalized* image with
    zeros, which is a pixel equal to the mean; the folded conv sees raw pixels, so
    its zero padding would be pixel 0, a different value, and the border outputs
    would change. So:

    - no padding, or ``padding_mode`` reflect / replicate / circular (these commute
      with a per-channel affine map): a plain folded ``nn.Conv2d``, exact everywhere;
    - zero padding and ``exact_padding=True`` (default): ``nn.Sequential(MeanPad2d,
      folded conv without padding)``, exact everywhere;
    - zero padding and ``exact_padding=False``: the folded conv with zero padding;
      exact in the interior, different in a border as wide as the padding.
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"fold_normalization_into_conv: expected an nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError("fold_normalization_into_conv: only convs with groups=1 are supported "
                         "(the first conv of an image model normally is one)")
    if isinstance(conv.padding, str):
        raise ValueError(f"fold_normalization_into_conv: padding={conv.padding!r} is not supported; "
                         f"give the padding in pixels")
    w = conv.weight
    mean_t = torch.as_tensor(mean, dtype=torch.float64)
    std_t = torch.as_tensor(std, dtype=torch.float64)
    for name, v in (("mean", mean_t), ("std", std_t)):
        if v.ndim != 1 or v.numel() != conv.in_channels:
            raise ValueError(f"fold_normalization_into_conv: {name} has {v.numel()} values but the conv takes "
                             f"{conv.in_channels} input channels")
    if (std_t <= 0).any():
        raise ValueError(f"fold_normalization_into_conv: every std must be positive, got {std_t.tolist()}")

    with torch.no_grad():
        w64 = w.double()
        new_w = w64 / std_t.view(1, -1, 1, 1)                                    # (C_out, C_in, kH, kW)
        shift = (w64 * (mean_t / std_t).view(1, -1, 1, 1)).sum(dim=(1, 2, 3))   # (C_out,)
        old_b = conv.bias.double() if conv.bias is not None else torch.zeros_like(shift)
        folded = copy.deepcopy(conv)
        if folded.bias is None:
            folded.bias = nn.Parameter(torch.empty(conv.out_channels, dtype=w.dtype, device=w.device))
        folded.weight.copy_(new_w.to(w.dtype))
        folded.bias.copy_((old_b - shift).to(w.dtype))

    pads = any(p != 0 for p in conv.padding)
    if not pads or conv.padding_mode != "zeros" or not exact_padding:
        return folded
    ph, pw = conv.padding
    folded.padding = (0, 0)
    return nn.Sequential(MeanPad2d((pw, pw, ph, ph), mean_t.tolist()), folded)
