"""The pretrained loader: ImageNet when it can be had, the course's own checkpoint otherwise, never retraining a cache.

Nothing here downloads or trains: the ImageNet download is replaced at the function
torchvision calls, and the course checkpoint is a small fixture written by the test
(untrained weights, labelled as such in its contract), with pretraining made to fail
if anyone calls it.
"""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

import course_utils as cu
from course_utils import models as cmodels

IMAGENET = torchvision.models.ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture
def no_training(monkeypatch):
    """Make any attempt to pretrain or fit fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("pretraining was called, but a cached or downloaded model should have been used")
    monkeypatch.setattr(cmodels, "pretrain_course_resnet18", refuse)
    monkeypatch.setattr(cu.train, "fit", refuse)


def _patch_download(monkeypatch, fn):
    # torchvision's weights call the name it imported from torch.hub; patch both places.
    import torchvision.models._api as tv_api
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fn)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fn)


@pytest.fixture
def course_cache(tmp_path, monkeypatch):
    """COURSE_DATA_DIR=tmp_path holding a course checkpoint: fresh (untrained) weights, honestly labelled."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_QUICK", "1")
    monkeypatch.delenv("COURSE_PRETRAINED", raising=False)
    weights_path, contract_path = cmodels.course_checkpoint_paths()
    weights_path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    model = cu.resnet18_for(5)
    torch.save(model.state_dict(), weights_path)
    contract = cu.Contract(mean=(0.25,) * 3, std=(0.35,) * 3, resize_size=32, crop_size=32,
                           categories=("a", "b", "c", "d", "e"),
                           source="test fixture: untrained weights (not pretrained)",
                           metrics={"fashion-mnist-source test": {"acc@1": None}})
    contract.to_json(contract_path)
    return model, contract


def test_imagenet_source_used_when_download_works(monkeypatch, tmp_path, no_training):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))  # no course checkpoint there
    monkeypatch.delenv("COURSE_PRETRAINED", raising=False)
    torch.manual_seed(0)
    fresh = torchvision.models.resnet18().state_dict()  # stands in for the downloaded file
    calls = []

    def fake_download(url, *args, **kwargs):
        calls.append(url)
        return fresh

    _patch_download(monkeypatch, fake_download)
    model, contract = cu.load_pretrained_resnet18("auto", verbose=False)
    assert calls == [IMAGENET.url]
    assert contract.source.startswith("torchvision") and "IMAGENET1K_V1" in contract.source
    assert contract.mean == cu.IMAGENET_MEAN and contract.std == cu.IMAGENET_STD
    assert (contract.resize_size, contract.crop_size) == (256, 224)
    assert len(contract.categories) == 1000 and model.fc.out_features == 1000
    assert torch.equal(model.state_dict()["conv1.weight"], fresh["conv1.weight"])
    assert not model.training
    assert not any(tmp_path.rglob("*.pt")), "nothing should be written when ImageNet weights load"


def test_offline_falls_back_to_course_checkpoint(monkeypatch, course_cache, no_training, capsys):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    _patch_download(monkeypatch, offline)
    model, contract = cu.load_pretrained_resnet18("auto")
    expected_model, expected_contract = course_cache
    assert contract == expected_contract
    assert "test fixture" in capsys.readouterr().out  # it prints the source it used
    for name, tensor in expected_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert model.fc.out_features == 5 and not model.training


def test_imagenet_source_raises_offline(monkeypatch, course_cache):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    _patch_download(monkeypatch, offline)
    with pytest.raises(cu.PretrainedUnavailable, match="ImageNet"):
        cu.load_pretrained_resnet18("imagenet", verbose=False)


def test_cached_course_checkpoint_is_reused_not_retrained(course_cache, no_training):
    for _ in range(2):
        model, contract = cu.load_pretrained_resnet18("course", verbose=False)
        assert contract == course_cache[1]
        assert torch.equal(model.conv1.weight, course_cache[0].conv1.weight)


def test_environment_variable_chooses_source(monkeypatch, course_cache, no_training):
    def must_not_download(url, *args, **kwargs):
        raise AssertionError("COURSE_PRETRAINED=course must not try ImageNet")

    _patch_download(monkeypatch, must_not_download)
    monkeypatch.setenv("COURSE_PRETRAINED", "course")
    _, contract = cu.load_pretrained_resnet18(verbose=False)
    assert contract.source.startswith("test fixture")


def test_missing_checkpoint_without_pretraining_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(cu.PretrainedUnavailable, match="no course checkpoint"):
        cu.load_course_resnet18(quick=True, pretrain=False)


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match="unknown pretrained source"):
        cu.load_pretrained_resnet18("cifar")


def test_contract_json_round_trip(tmp_path):
    contract = cu.Contract(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), resize_size=40, crop_size=32,
                           categories=("x", "y"), source="test", description="round trip",
                           metrics={"acc@1": 12.5})
    path = tmp_path / "contract.json"
    contract.to_json(path)
    again = cu.Contract.from_json(path)
    assert again == contract
    assert isinstance(again.mean, tuple) and isinstance(again.categories, tuple)


def test_contract_from_imagenet_weights_needs_no_download():
    contract = cu.Contract.from_weights(IMAGENET)
    assert contract.mean == (0.485, 0.456, 0.406) and contract.std == (0.229, 0.224, 0.225)
    assert (contract.resize_size, contract.crop_size) == (256, 224)
    assert len(contract.categories) == 1000
    preset = contract.transforms()
    reference = IMAGENET.transforms()
    assert (preset.mean, preset.std, preset.crop_size, preset.resize_size) == \
        (reference.mean, reference.std, reference.crop_size, reference.resize_size)


def test_contract_normalize_matches_torchvision():
    contract = cu.Contract.from_weights(IMAGENET)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = torchvision.transforms.Normalize(contract.mean, contract.std)(x)
    torch.testing.assert_close(contract.normalize(x), expected)
