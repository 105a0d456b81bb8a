"""ResNet-18 with a named pretrained source, and the normalization contract that comes with it.

Sources, tried in order by ``load_pretrained_resnet18("auto")``:

1. ``"imagenet"``: torchvision's ``ResNet18_Weights.IMAGENET1K_V1``, from torch's
   cache or downloaded when online;
2. ``"course"``: a ResNet-18 the course pretrains itself on a real source domain
   (five Fashion-MNIST classes, see :func:`course_utils.data.load_domain`), cached
   after the first run with its contract in a JSON file beside it.

Never random weights: if neither can be had, an error says so.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from .config import checkpoint_dir, get_device, pick, quick_mode, seed_everything

SOURCES = ("auto", "imagenet", "course")


class PretrainedUnavailable(RuntimeError):
    """No pretrained weights could be had from the requested source."""


@dataclass
class Contract:
    """What a pretrained model expects of its input, in the form torchvision's weights record it.

    ``mean``/``std`` per channel on the [0, 1] scale, ``resize_size`` then
    ``crop_size`` pixels, RGB channel order, and the ``categories`` it predicts.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_size: int
    crop_size: int
    categories: tuple[str, ...]
    source: str
    description: str = ""
    metrics: dict = field(default_factory=dict)

    def transforms(self) -> ImageClassification:
        """The same preset torchvision's ``weights.transforms()`` returns, with this contract's numbers."""
        return ImageClassification(crop_size=self.crop_size, resize_size=self.resize_size,
                                   mean=list(self.mean), std=list(self.std),
                                   interpolation=InterpolationMode.BILINEAR)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float in [0, 1] -> standardized with this contract's mean and std."""
        mean = torch.as_tensor(self.mean, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
        return (x01 - mean) / std

    @classmethod
    def from_weights(cls, weights: torchvision.models.WeightsEnum) -> "Contract":
        """Read the contract off a torchvision weights object (works offline: no download)."""
        t = weights.transforms()
        return cls(mean=tuple(t.mean), std=tuple(t.std), resize_size=int(t.resize_size[0]),
                   crop_size=int(t.crop_size[0]), categories=tuple(weights.meta["categories"]),
                   source=f"torchvision {weights}", description=weights.meta.get("_docs", "").strip(),
                   metrics=dict(weights.meta.get("_metrics", {})))

    def to_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_json(cls, path: Path) -> "Contract":
        d = json.loads(Path(path).read_text())
        d["mean"], d["std"], d["categories"] = tuple(d["mean"]), tuple(d["std"]), tuple(d["categories"])
        return cls(**d)


def resnet18_for(num_classes: int, *, weights=None) -> nn.Module:
    """torchvision's ResNet-18 with a fresh ``num_classes``-way head."""
    model = torchvision.models.resnet18(weights=weights)
    return replace_head(model, num_classes)


def replace_head(model: nn.Module, num_classes: int, *, seed: int = 0) -> nn.Module:
    """Swap a ResNet's final linear layer for a new, seeded, ``num_classes``-way one."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    torch.random.set_rng_state(gen_state)
    return model


# --------------------------------------------------------------------------- ImageNet

IMAGENET_WEIGHTS = torchvision.models.ResNet18_Weights.IMAGENET1K_V1


def imagenet_weights_cached() -> bool:
    """True when torchvision's ImageNet ResNet-18 file is already in torch's cache."""
    fname = os.path.basename(IMAGENET_WEIGHTS.url)
    return (Path(torch.hub.get_dir()) / "checkpoints" / fname).exists()


def load_imagenet_resnet18() -> tuple[nn.Module, Contract]:
    """torchvision's ImageNet ResNet-18 (cache, else download); :class:`PretrainedUnavailable` if offline."""
    try:
        state = IMAGENET_WEIGHTS.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # noqa: BLE001 - offline shows up as URLError, OSError, ...
        raise PretrainedUnavailable(
            f"torchvision's ImageNet ResNet-18 is neither cached in {torch.hub.get_dir()} nor downloadable "
            f"({type(err).__name__}: {err})") from err
    model = torchvision.models.resnet18()
    model.load_state_dict(state)
    return model, Contract.from_weights(IMAGENET_WEIGHTS)


# --------------------------------------------------------------------------- the course's own

def course_checkpoint_paths(quick: bool | None = None) -> tuple[Path, Path]:
    """(weights file, contract file) of the course-pretrained ResNet-18; quick mode keeps its own pair."""
    quick = quick_mode() if quick is None else quick
    stem = "resnet18-fashion-source" + ("-quick" if quick else "")
    d = checkpoint_dir()
    return d / f"{stem}.pt", d / f"{stem}.json"


def pretrain_course_resnet18(*, quick: bool | None = None, device: torch.device | None = None,
                             progress: bool = True) -> tuple[nn.Module, Contract]:
    """Train ResNet-18 from scratch on the source domain and cache it with its contract.

    Quick mode: 12,000 images, one epoch (about a minute on two CPU cores).
    Full mode: all 30,000 source images, four epochs with flips; measured at
    93.3% test accuracy on the five source classes (13 s on an H100; 4.4 minutes
    on two CPU cores in CI, up to eight on a busier machine). Quick mode measured 88.9%.
    """
    from .data import load_domain
    from .normalization import channel_stats
    from .train import evaluate, fit

    quick = quick_mode() if quick is None else quick
    device = device or get_device()
    seed_everything(0)
    train = load_domain("source", train=True)
    test = load_domain("source", train=False)
    n_train, epochs = (12_000, 1) if quick else (len(train), 4)
    train = train.take(n_train, seed=0)
    mean, std = (t.tolist() for t in channel_stats(train.images))
    contract = Contract(mean=tuple(round(m, 4) for m in mean), std=tuple(round(s, 4) for s in std),
                        resize_size=32, crop_size=32, categories=train.classes,
                        source="course: ResNet-18 pretrained on Fashion-MNIST source classes"
                               + (" (quick)" if quick else ""),
                        description=(f"ResNet-18 (torchvision architecture) trained from scratch by the course on "
                                     f"{n_train} Fashion-MNIST images of the classes {', '.join(train.classes)}, "
                                     f"zero-padded to 32x32 and repeated to 3 channels, {epochs} epoch(s), Adam."))
    model = resnet18_for(len(train.classes))
    train_loader = train.loader(128, normalize=(contract.mean, contract.std), device=device, shuffle=True,
                                augment=not quick, seed=0)
    test_loader = test.loader(500, normalize=(contract.mean, contract.std), device=device)
    start = time.perf_counter()
    fit(model, train_loader, epochs=epochs, lr=2e-3, optimizer="adam", device=device, progress=progress)
    acc = evaluate(model, test_loader)["acc"]
    contract.metrics = {"fashion-mnist-source test": {"acc@1": round(100 * acc, 2)},
                        "train_seconds": round(time.perf_counter() - start, 1)}
    model.cpu().eval()
    weights_path, contract_path = course_checkpoint_paths(quick)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    # write to temporary names and rename, so an interrupted run leaves no half checkpoint
    fd, tmp = tempfile.mkstemp(dir=weights_path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(model.state_dict(), tmp)
    contract.to_json(Path(tmp + ".json"))
    os.replace(tmp + ".json", contract_path)
    os.replace(tmp, weights_path)
    return model, contract


@contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` (POSIX), so parallel processes pretrain only once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock, the atomic rename still keeps the cache whole
        yield
        return
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_course_resnet18(*, quick: bool | None = None, pretrain: bool = True,
                         progress: bool = True) -> tuple[nn.Module, Contract]:
    """The course-pretrained ResNet-18: from its cache, else pretrained now (and cached)."""
    weights_path, contract_path = course_checkpoint_paths(quick)
    with _exclusive(weights_path.with_suffix(".lock")):
        if weights_path.exists() and contract_path.exists():
            contract = Contract.from_json(contract_path)
            model = resnet18_for(len(contract.categories))
            model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
            return model.eval(), contract
        if not pretrain:
            raise PretrainedUnavailable(f"no course checkpoint at {weights_path} and pretraining not allowed")
        return pretrain_course_resnet18(quick=quick, progress=progress)


def load_pretrained_resnet18(source: str = "auto", *, verbose: bool = True,
                             progress: bool = True) -> tuple[nn.Module, Contract]:
    """A pretrained ResNet-18 and its :class:`Contract`, from a named source (see module docs).

    ``source``: ``"auto"`` (ImageNet if it can be had, else the course's own),
    ``"imagenet"`` or ``"course"``; the environment variable
    ``COURSE_PRETRAINED`` overrides ``"auto"``. Returns the model in eval mode
    on the CPU; prints which source it used.
    """
    if source == "auto":
        source = os.environ.get("COURSE_PRETRAINED", "auto")
    if source not in SOURCES:
        raise ValueError(f"unknown pretrained source {source!r}; choose one of {SOURCES}")
    notes = []
    if source in ("auto", "imagenet"):
        try:
            model, contract = load_imagenet_resnet18()
        except PretrainedUnavailable as err:
            if source == "imagenet":
                raise
            notes.append(str(err))
        else:
            if verbose:
                print(f"Pretrained source: {contract.source}")
            return model.eval(), contract
    model, contract = load_course_resnet18(progress=progress)
    if verbose:
        why = " (ImageNet weights unavailable offline)" if notes else ""
        acc = contract.metrics.get("fashion-mnist-source test", {}).get("acc@1")
        print(f"Pretrained source: {contract.source}{why}; test accuracy {acc}%")
    return model.eval(), contract
