"""The data layer: sources tried in order, the error when none works, corrupt files, the loader."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

import course_utils as cu
from course_utils import data as cdata

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_system_fashion = pytest.mark.skipif(not SYSTEM_FASHION.exists(),
                                          reason="Debian's dataset-fashion-mnist is not installed")


def _write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor in the MNIST idx format (magic 0x08, ndim, big-endian sizes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.numpy().tobytes())


def _fake_system_copy(folder: Path, n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny Fashion-MNIST-format system copy (test fixture data, clearly not the real dataset)."""
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n, dtype=torch.uint8) % 10
    for split in ("train", "t10k"):
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            raw = folder / f"{split}-{kind}-ubyte"
            _write_idx(raw, arr)
            with open(raw, "rb") as src, gzip.open(str(raw) + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            raw.unlink()
    return images, labels


@pytest.fixture(autouse=True)
def _fresh_cache():
    cdata._load_cached.cache_clear()
    yield
    cdata._load_cached.cache_clear()


@pytest.fixture
def fake_system(tmp_path, monkeypatch):
    system = tmp_path / "system" / "fashion-mnist"
    images, labels = _fake_system_copy(system)
    spec = cdata.DATASETS["fashion-mnist"]
    monkeypatch.setitem(cdata.DATASETS, "fashion-mnist",
                        cdata.DatasetSpec(**{**spec.__dict__, "system_dirs": (str(system),)}))
    return system, images, labels


def _forbid_download(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("download must not be attempted")
    monkeypatch.setattr(cdata, "_download", boom)


def test_system_copy_is_used_and_installed_locally(tmp_path, fake_system, monkeypatch):
    system, images, labels = fake_system
    _forbid_download(monkeypatch)
    root = tmp_path / "data"
    ds = cu.load_dataset("fashion-mnist", root=root)
    assert ds.source.startswith(f"system copy in {system}")
    assert torch.equal(ds.images[:, 0], images) and torch.equal(ds.labels, labels.long())
    assert (root / "FashionMNIST" / "raw").is_dir()
    # no temporary folder is left behind
    assert [p.name for p in root.iterdir()] == ["FashionMNIST"]


def test_local_copy_wins_over_system(tmp_path, fake_system, monkeypatch):
    root = tmp_path / "data"
    cu.load_dataset("fashion-mnist", root=root)
    cdata._load_cached.cache_clear()
    monkeypatch.setattr(cdata, "_try_system", lambda *a, **k: pytest.fail("system copy consulted"))
    ds = cu.load_dataset("fashion-mnist", root=root)
    assert ds.source == f"local copy in {root.resolve()}"


def test_download_is_tried_after_system_and_installs_atomically(tmp_path, monkeypatch):
    spec = cdata.DATASETS["fashion-mnist"]
    monkeypatch.setitem(cdata.DATASETS, "fashion-mnist",
                        cdata.DatasetSpec(**{**spec.__dict__, "system_dirs": (str(tmp_path / "none"),)}))
    calls = []

    def fake_tv_download(spec_, root, train, download=False):
        calls.append((root, download))
        assert download, "only the download path should reach torchvision without a local copy"
        _fake_system_copy(root / "FashionMNIST" / "gz")  # stage files where torchvision would
        raw = root / "FashionMNIST" / "raw"
        raw.mkdir()
        for gz in (root / "FashionMNIST" / "gz").iterdir():
            with gzip.open(gz) as src, open(raw / gz.name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
        shutil.rmtree(root / "FashionMNIST" / "gz")

    real_tv = cdata._tv_dataset
    monkeypatch.setattr(cdata, "_tv_dataset",
                        lambda s, r, t, download=False: fake_tv_download(s, r, t, True) if download else real_tv(s, r, t))
    root = tmp_path / "data"
    ds = cu.load_dataset("fashion-mnist", root=root)
    assert ds.source.startswith("downloaded by torchvision")
    assert calls and calls[0][0].name.startswith(".partial-fashion-mnist-")  # built in a temp folder
    assert [p.name for p in root.iterdir()] == ["FashionMNIST"]


def test_no_source_gives_one_paragraph_naming_three_ways(tmp_path, monkeypatch):
    spec = cdata.DATASETS["fashion-mnist"]
    monkeypatch.setitem(cdata.DATASETS, "fashion-mnist",
                        cdata.DatasetSpec(**{**spec.__dict__, "system_dirs": (str(tmp_path / "none"),)}))

    def offline(spec_, root, train, download=False):
        if download:
            (root / "FashionMNIST").mkdir()  # a half-finished download...
            (root / "FashionMNIST" / "partial.gz").write_bytes(b"\x1f\x8b")
            raise OSError("Name or service not known")
        raise AssertionError("unreachable")

    monkeypatch.setattr(cdata, "_tv_dataset", offline)
    root = tmp_path / "data"
    with pytest.raises(cu.DatasetNotFoundError) as info:
        cu.load_dataset("fashion-mnist", root=root)
    msg = str(info.value)
    assert "\n" not in msg, "the error is one paragraph"
    for way in ("(1)", "COURSE_DATA_DIR", "(2)", "dataset-fashion-mnist", "(3)", "download"):
        assert way in msg
    assert "Name or service not known" in msg
    # ...leaves nothing behind in the data directory
    assert list(root.iterdir()) == []


def test_download_false_skips_download(tmp_path, monkeypatch):
    spec = cdata.DATASETS["cifar10"]
    monkeypatch.setattr(cdata, "_download", lambda *a, **k: pytest.fail("download attempted"))
    with pytest.raises(cu.DatasetNotFoundError, match="download not allowed"):
        cu.load_dataset("cifar10", root=tmp_path, download=False)
    assert spec.folder == "cifar-10-batches-py"


def test_corrupt_local_copy_is_reported_with_the_fix(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in cdata.DATASETS["fashion-mnist"].system_files:
        (raw / name[:-3]).write_bytes(b"\x00\x00\x08\x03 not an idx file")
    with pytest.raises(cu.DatasetCorruptError) as info:
        cu.load_dataset("fashion-mnist", root=tmp_path, download=False)
    assert "Delete that folder" in str(info.value) and str(tmp_path / "FashionMNIST") in str(info.value)


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(KeyError, match="fashion-mnist"):
        cu.load_dataset("imagenet-21k")


@needs_system_fashion
def test_real_fashion_mnist_domains():
    src, tgt = cu.load_domain("source", train=False), cu.load_domain("target", train=False)
    assert src.images.shape == (5000, 3, 32, 32) and tgt.images.shape == (5000, 3, 32, 32)
    assert set(src.labels.tolist()) == set(range(5)) == set(tgt.labels.tolist())
    assert src.classes[0] == "T-shirt/top" and tgt.classes[0] == "Sandal"
    # the target is shown as negatives: its mean pixel is far brighter
    assert tgt.images.float().mean() > 2 * src.images.float().mean()
    # padding keeps a 2-pixel border of background
    assert src.images[:, :, :2].max() == 0 and tgt.images[:, :, :2].min() == 255


def test_image_tensors_rejects_floats():
    with pytest.raises(TypeError, match="uint8"):
        cu.ImageTensors(torch.rand(2, 3, 4, 4), torch.zeros(2, dtype=torch.long), ("a",), "x")


def test_loader_normalizes_in_one_op_like_the_reference():
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.arange(50)
    mean, std = (0.2, 0.4, 0.6), (0.3, 0.2, 0.1)
    loader = cu.TensorLoader(images, labels, 16, normalize=(mean, std))
    xs, ys = zip(*loader)
    x = torch.cat(xs)
    ref = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat(ys), labels)
    assert [len(y) for y in ys] == [16, 16, 16, 2] and len(loader) == 4


def test_loader_shuffles_reproducibly_and_differently_each_epoch():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    loader = cu.TensorLoader(images, torch.arange(40), 10, shuffle=True, seed=3, drop_last=True)
    epoch1 = torch.cat([y for _, y in loader])
    epoch2 = torch.cat([y for _, y in loader])
    again = torch.cat([y for _, y in cu.TensorLoader(images, torch.arange(40), 10, shuffle=True, seed=3)])
    assert sorted(epoch1.tolist()) == list(range(40))
    assert not torch.equal(epoch1, epoch2)
    assert torch.equal(epoch1, again)


def test_loader_flips_only_horizontally_and_keeps_labels_aligned():
    images = torch.arange(64, dtype=torch.uint8).view(4, 1, 4, 4).repeat(8, 1, 1, 1)
    loader = cu.TensorLoader(images, torch.arange(32), 32, augment=True, seed=0)
    x, y = next(iter(loader))
    raw = images.float() / 255
    flipped = [bool(torch.equal(x[i], raw[i].flip(-1))) for i in range(32)]
    same = [bool(torch.equal(x[i], raw[i])) for i in range(32)]
    assert all(f or s for f, s in zip(flipped, same)) and 0 < sum(flipped) < 32


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "positive"),
    ({"batch_size": 100}, "larger than the dataset"),
])
def test_loader_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cu.TensorLoader(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.zeros(10, dtype=torch.long), **kwargs)


def test_loader_rejects_float_images():
    with pytest.raises(TypeError, match="uint8"):
        cu.TensorLoader(torch.zeros(10, 1, 2, 2), torch.zeros(10, dtype=torch.long), 2)
