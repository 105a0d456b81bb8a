"""Datasets from layered sources, held as uint8 tensors, served in normalized batches.

Every dataset is read through torchvision's own dataset class, from the first
source that can provide it:

1. a local copy: ``root`` if given, else ``cu.data_dir()`` (``COURSE_DATA_DIR``
   or the checkout's ``data/``);
2. a system copy, where the machine has one (Debian's ``dataset-fashion-mnist``
   puts the real Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``);
3. torchvision's download, when online;
4. otherwise :class:`DatasetNotFoundError`, naming all three ways to provide it.

Copies and downloads are assembled in a hidden temporary folder inside the
data directory and renamed into place only when complete, so a failure never
leaves half a dataset behind.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
import torchvision

from .config import data_dir


class DatasetNotFoundError(FileNotFoundError):
    """No source could provide the dataset; the message lists the ways to provide it."""


class DatasetCorruptError(RuntimeError):
    """A copy of the dataset exists but cannot be read."""


@dataclass(frozen=True)
class DatasetSpec:
    """What the course knows about a dataset and where to look for it."""

    name: str
    tv_class: Callable  # torchvision dataset class
    folder: str  # torchvision's folder under root, which must exist for a local copy
    classes: tuple[str, ...]
    channels: int
    size: int
    mean: tuple[float, ...]  # published per-channel statistics of the training split, on [0, 1]
    std: tuple[float, ...]
    system_dirs: tuple[str, ...] = ()
    system_files: tuple[str, ...] = ()  # files a system copy must have, gzip-compressed
    note: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        tv_class=torchvision.datasets.FashionMNIST,
        folder="FashionMNIST",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        channels=1,
        size=28,
        mean=(0.2860,),
        std=(0.3530,),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        system_files=("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                      "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        note="Debian: sudo apt-get install dataset-fashion-mnist",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        tv_class=torchvision.datasets.CIFAR10,
        folder="cifar-10-batches-py",
        classes=("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"),
        channels=3,
        size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        system_dirs=("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
    ),
}

# ImageNet's statistics, as torchvision's weights carry them (computed on a random
# subset of the training set: pytorch/vision issue 1439).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageTensors:
    """A whole dataset in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str
    source: str = "memory"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise TypeError(
                f"ImageTensors.images must be uint8 with shape (N, C, H, W); got {self.images.dtype} "
                f"{tuple(self.images.shape)}. Keep pixels as 0-255 bytes; the loader normalizes per batch."
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"ImageTensors({self.name!r}: {n} images, {c}x{h}x{w} uint8, {len(self.classes)} classes, from {self.source})"

    def take(self, n: int | None, seed: int = 0) -> "ImageTensors":
        """A random subset of ``n`` images (all of them when ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return replace(self, images=self.images[idx], labels=self.labels[idx])

    def loader(self, batch_size: int = 128, **kwargs) -> "TensorLoader":
        """A :class:`TensorLoader` over this dataset."""
        return TensorLoader(self.images, self.labels, batch_size, **kwargs)


# --------------------------------------------------------------------------- sources

def _tv_dataset(spec: DatasetSpec, root: Path, train: bool, download: bool = False):
    return spec.tv_class(root=str(root), train=train, download=download)


def _to_image_tensors(spec: DatasetSpec, ds, source: str) -> ImageTensors:
    data = ds.data
    if not isinstance(data, torch.Tensor):  # CIFAR keeps a numpy (N, H, W, C) array
        data = torch.from_numpy(data)
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ImageTensors(images.contiguous(), labels, spec.classes, spec.name, source)


def _read_local(spec: DatasetSpec, root: Path, train: bool) -> ImageTensors | None:
    if not (root / spec.folder).exists():
        return None
    try:
        ds = _tv_dataset(spec, root, train)
        return _to_image_tensors(spec, ds, f"local copy in {root}")
    except Exception as err:  # noqa: BLE001 - torchvision raises many kinds for a bad file
        raise DatasetCorruptError(
            f"The local copy of {spec.name} in {root / spec.folder} cannot be read "
            f"({type(err).__name__}: {err}). Delete that folder and run again to fetch a fresh copy."
        ) from err


def _atomic_install(spec: DatasetSpec, root: Path, fill: Callable[[Path], None]) -> None:
    """Build ``root/spec.folder`` in a temporary folder and rename it into place when complete."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{spec.name}-", dir=root))
    try:
        fill(tmp)
        built = tmp / spec.folder
        if not built.exists():
            raise DatasetCorruptError(f"expected {built} after fetching {spec.name}")
        try:
            os.replace(built, root / spec.folder)
        except OSError:
            if not (root / spec.folder).exists():  # another process may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_system(spec: DatasetSpec, system_dir: Path) -> Callable[[Path], None]:
    def fill(tmp: Path) -> None:
        raw = tmp / spec.folder / "raw"
        raw.mkdir(parents=True)
        for name in spec.system_files:
            # torchvision looks for the uncompressed files in <folder>/raw
            with gzip.open(system_dir / name, "rb") as src, open(raw / name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
    return fill


def _try_system(spec: DatasetSpec, root: Path, train: bool, reasons: list[str]) -> ImageTensors | None:
    for d in spec.system_dirs:
        system_dir = Path(d)
        if not all((system_dir / f).exists() for f in spec.system_files) or not spec.system_files:
            reasons.append(f"no system copy in {system_dir}")
            continue
        try:
            _atomic_install(spec, root, _copy_system(spec, system_dir))
            data = _read_local(spec, root, train)
            if data is not None:
                return replace(data, source=f"system copy in {system_dir} (copied to {root})")
        except (OSError, EOFError, DatasetCorruptError) as err:
            reasons.append(f"system copy in {system_dir} unreadable: {err}")
    return None


def _download(spec: DatasetSpec, root: Path, train: bool) -> ImageTensors:
    """torchvision's own download into a temporary folder, renamed into place when complete."""
    _atomic_install(spec, root, lambda tmp: _tv_dataset(spec, tmp, train, download=True))
    data = _read_local(spec, root, train)
    assert data is not None
    return replace(data, source=f"downloaded by torchvision to {root}")


def _not_found_message(spec: DatasetSpec, root: Path, reasons: Sequence[str]) -> str:
    system = spec.system_dirs[0] if spec.system_dirs else "a system dataset folder"
    extra = f" ({spec.note})" if spec.note else ""
    return (
        f"Dataset {spec.name!r} could not be found. Tried, in order: {'; '.join(reasons)}. "
        f"Provide it in one of three ways: (1) put torchvision's copy in {root / spec.folder} "
        f"or point COURSE_DATA_DIR at a folder that holds {spec.folder}/; (2) install a system copy "
        f"in {system}{extra}; (3) go online and let torchvision download it (load_dataset(..., download=True))."
    )


def load_dataset(name: str, train: bool = True, *, root: str | Path | None = None,
                 download: bool = True) -> ImageTensors:
    """Load a registered dataset (see ``DATASETS``) as uint8 tensors, from the first source that works.

    The result's ``source`` says where it came from; notebooks print it.
    """
    key = name.lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise KeyError(f"Unknown dataset {name!r}; the course knows {sorted(DATASETS)}.")
    root_path = Path(root) if root is not None else data_dir()
    return _load_cached(key, bool(train), root_path.resolve(), bool(download))


@lru_cache(maxsize=8)
def _load_cached(key: str, train: bool, root: Path, download: bool) -> ImageTensors:
    spec = DATASETS[key]
    reasons: list[str] = []
    local = _read_local(spec, root, train)
    if local is not None:
        return local
    reasons.append(f"no local copy in {root / spec.folder}")
    system = _try_system(spec, root, train, reasons)
    if system is not None:
        return system
    if download:
        try:
            return _download(spec, root, train)
        except Exception as err:  # noqa: BLE001 - offline shows up as many error types
            reasons.append(f"download failed ({type(err).__name__}: {err})")
    else:
        reasons.append("download not allowed")
    raise DatasetNotFoundError(_not_found_message(spec, root, reasons))


# --------------------------------------------------------------------------- domains

SOURCE_CLASSES = (0, 1, 2, 3, 4)  # T-shirt/top, Trouser, Pullover, Dress, Coat
TARGET_CLASSES = (5, 6, 7, 8, 9)  # Sandal, Shirt, Sneaker, Bag, Ankle boot


def to_rgb32(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) uint8 -> (N, 3, 32, 32) uint8: zero-pad to 32 (as LeNet did) and repeat the channel."""
    padded = F.pad(images, (2, 2, 2, 2))
    return padded.expand(-1, 3, -1, -1).contiguous()


def load_domain(domain: str, train: bool = True, *, root: str | Path | None = None) -> ImageTensors:
    """The two real domains the course's transfer-learning experiments use, built from Fashion-MNIST.

    - ``"source"``: the five clothing classes (T-shirt/top, Trouser, Pullover, Dress,
      Coat), light garments on a dark background as Fashion-MNIST stores them. The
      course pretrains its own ResNet-18 here when ImageNet weights are not at hand.
    - ``"target"``: the other five classes (Sandal, Shirt, Sneaker, Bag, Ankle boot),
      shown as negatives, dark on light, the way product photographs look. New
      classes and shifted pixel statistics: a different domain.

    Both as (N, 3, 32, 32) uint8, labels 0-4.
    """
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    fm = load_dataset("fashion-mnist", train=train, root=root)
    keep = SOURCE_CLASSES if domain == "source" else TARGET_CLASSES
    mask = torch.isin(fm.labels, torch.tensor(keep))
    images = to_rgb32(fm.images[mask])
    if domain == "target":
        images = 255 - images
    labels = fm.labels[mask] - keep[0]
    classes = tuple(fm.classes[i] for i in keep)
    return ImageTensors(images, labels, classes, f"fashion-mnist-{domain}", fm.source, {"domain": domain})


# --------------------------------------------------------------------------- loader

class TensorLoader:
    """Batches from a uint8 tensor held on the device, normalized in one operation per batch.

    The usual pipeline decodes and normalizes image by image in worker processes;
    here the whole dataset sits on the device as bytes (a quarter of float32's
    memory) and each batch is gathered, converted and normalized at once.

    Args:
        images: uint8 (N, C, H, W).  labels: int64 (N,).
        batch_size: images per batch.
        normalize: ``(mean, std)`` per channel on the [0, 1] scale (fused into one
            multiply-add from bytes), or a callable taking a float batch in [0, 1],
            or None for plain [0, 1] inputs.
        device: where batches live (default: the images' device).
        shuffle, seed: a new permutation each epoch, drawn from ``seed + epoch``.
        augment: random horizontal flips, per image, on the device.
        channels_last: return batches in channels_last memory format.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128, *,
                 normalize=None, device: torch.device | str | None = None, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, augment: bool = False,
                 channels_last: bool = False) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > images.shape[0]:
            raise ValueError(f"batch_size={batch_size} is larger than the dataset ({images.shape[0]} images); "
                             "use a smaller batch size or more data.")
        device = torch.device(device) if device is not None else images.device
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.augment, self.channels_last = drop_last, augment, channels_last
        self.device = device
        self.epoch = 0
        self.normalize = normalize
        self._scale = self._shift = None
        if isinstance(normalize, (tuple, list)):
            mean, std = (torch.as_tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1) for v in normalize)
            # (x / 255 - mean) / std == x * scale + shift: one fused op per batch
            self._scale, self._shift = 1.0 / (255.0 * std), -mean / std

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch(self, idx: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalized float batch for the given indices (``gen`` draws the flips)."""
        raw = self.images[idx]
        if self.augment:
            gen = gen or torch.Generator().manual_seed(self.seed)
            flip = (torch.rand(raw.shape[0], generator=gen) < 0.5).to(raw.device).view(-1, 1, 1, 1)
            raw = torch.where(flip, raw.flip(-1), raw)
        if self._scale is not None:
            x = torch.addcmul(self._shift, raw.float(), self._scale)
        else:
            x = raw.float().div_(255.0)
            if self.normalize is not None:
                x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.images.shape[0]
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            order = torch.randperm(n, generator=gen).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        self.epoch += 1
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            yield self.batch(order[start:start + self.batch_size], gen)
