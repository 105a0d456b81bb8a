"""cu.swap_norm: every BatchNorm2d of a model replaced, pretrained tensors carried where they fit."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18
from torchvision.ops import FrozenBatchNorm2d

import course_utils as cu


def pretrained_like_resnet18(seed: int = 0) -> nn.Module:
    """ResNet-18 with non-trivial BN tensors (weights, biases, running statistics), as after pretraining."""
    torch.manual_seed(seed)
    model = resnet18(num_classes=5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(100)
    return model


def bn_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


class SmallCNN(nn.Module):
    """BN inside nn.Sequential, as a named attribute, and a BatchNorm1d in the head (left alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.extra = nn.Conv2d(16, 16, 1, bias=False)
        self.extra_bn = nn.BatchNorm2d(16)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.BatchNorm1d(4))

    def forward(self, x):
        x = self.features(x)
        x = F.relu(self.extra_bn(self.extra(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1))


X = torch.rand(4, 3, 32, 32)


@pytest.mark.parametrize("kind,cls", [("batchnorm", nn.BatchNorm2d), ("frozen", FrozenBatchNorm2d),
                                      ("groupnorm", nn.GroupNorm), ("layernorm", nn.GroupNorm),
                                      ("instancenorm", nn.GroupNorm), ("none", nn.Identity)])
def test_every_kind_replaces_all_twenty_layers_and_the_model_still_trains(kind, cls):
    model = pretrained_like_resnet18()
    old = dict(model.named_modules())
    names = bn_names(model)
    assert len(names) == 20
    cu.swap_norm(model, kind, probe=X, verbose=False)
    report = model.norm_swap_report
    assert [s.name for s in report] == names
    for name in names:
        new = model.get_submodule(name)
        assert isinstance(new, cls) and new is not old[name], name
    model.train()
    loss = F.cross_entropy(model(X), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_batchnorm_and_frozen_keep_the_pretrained_model_exactly_in_eval_mode():
    reference = pretrained_like_resnet18().eval()
    with torch.no_grad():
        expected = reference(X)
    for kind in ("batchnorm", "frozen"):
        model = cu.swap_norm(pretrained_like_resnet18(), kind, verbose=False).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(X), expected, rtol=1e-5, atol=1e-5)
    # frozen statistics are used in train mode too, and no BN tensor is a parameter any more
    frozen = cu.swap_norm(pretrained_like_resnet18(), "frozen", verbose=False).train()
    with torch.no_grad():
        torch.testing.assert_close(frozen(X), expected, rtol=1e-5, atol=1e-5)
    assert not any("bn" in n or "downsample.1" in n for n, _ in frozen.named_parameters())


def test_affine_is_carried_and_statistics_are_reported_as_not_carried():
    source = pretrained_like_resnet18()
    old = {n: source.get_submodule(n) for n in bn_names(source)}
    model = cu.swap_norm(pretrained_like_resnet18(), "groupnorm", verbose=False)
    for row in model.norm_swap_report:
        new = model.get_submodule(row.name)
        torch.testing.assert_close(new.weight, old[row.name].weight, rtol=0, atol=0)
        torch.testing.assert_close(new.bias, old[row.name].bias, rtol=0, atol=0)
        assert row.carried == ["weight", "bias"] and row.dropped == ["running_mean", "running_var"]
    gone = cu.swap_norm(pretrained_like_resnet18(), "none", verbose=False).norm_swap_report
    assert all(r.carried == [] and r.dropped == ["weight", "bias", "running_mean", "running_var"] for r in gone)
    kept = cu.swap_norm(pretrained_like_resnet18(), "frozen", verbose=False).norm_swap_report
    assert all(r.carried == ["weight", "bias", "running_mean", "running_var"] and not r.dropped for r in kept)


def test_the_report_is_a_table_naming_each_module():
    model = pretrained_like_resnet18()
    cu.swap_norm(model, "groupnorm", groups=16, verbose=False)
    text = str(model.norm_swap_report)
    for needle in ("module", "carried", "layer1.0.bn1", "layer2.0.downsample.1",
                   "GroupNorm(16, 128", "running_mean, running_var"):
        assert needle in text, needle
    assert len(text.splitlines()) == 21  # header and twenty rows


def test_layernorm_kind_is_layer_norm_over_chw_with_a_per_channel_affine():
    torch.manual_seed(0)
    c, h, w = 6, 5, 7
    layer = cu.norm_layer("layernorm", c)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.normal_()
    x = torch.randn(3, c, h, w) * 3 + 1
    per_channel = (layer.weight.view(1, c, 1, 1), layer.bias.view(1, c, 1, 1))
    torch.testing.assert_close(layer(x), F.layer_norm(x, (c, h, w)) * per_channel[0] + per_channel[1])
    # nn.LayerNorm([C, H, W]) is the same layer once its per-element affine repeats the per-channel one
    ln = nn.LayerNorm([c, h, w])
    with torch.no_grad():
        ln.weight.copy_(layer.weight.view(c, 1, 1).expand(c, h, w))
        ln.bias.copy_(layer.bias.view(c, 1, 1).expand(c, h, w))
    torch.testing.assert_close(layer(x), ln(x))
    # nn.LayerNorm(C) on channels-last normalizes each pixel over its channels: another layer
    per_pixel = nn.LayerNorm(c)(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert (per_pixel - F.layer_norm(x, (c, h, w))).abs().max() > 0.1


def test_instancenorm_needs_a_probe_and_uses_layer_norm_on_one_by_one_maps():
    with pytest.raises(ValueError, match="probe"):
        cu.swap_norm(pretrained_like_resnet18(), "instancenorm", verbose=False)
    # the reason: PyTorch's instance norm refuses 1x1 maps in train mode, and GN(C, C) outputs its bias there
    with pytest.raises((ValueError, RuntimeError), match="spatial"):
        nn.InstanceNorm2d(4, affine=True).train()(torch.randn(2, 4, 1, 1))
    gn = nn.GroupNorm(4, 4)
    with torch.no_grad():
        gn.bias.normal_()  # whatever the input, the output is the bias, up to the rounding of x - mean(x),
        # which dividing by sqrt(eps) amplifies some 300 times
        torch.testing.assert_close(gn(torch.randn(2, 4, 1, 1) * 5), gn.bias.view(1, 4, 1, 1).expand(2, 4, 1, 1),
                                   rtol=0, atol=1e-3)
    inorm = nn.InstanceNorm2d(4, affine=True)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(cu.norm_layer("instancenorm", 4)(x), inorm(x))
    model = cu.swap_norm(pretrained_like_resnet18(), "instancenorm", probe=X, verbose=False)
    for row in model.norm_swap_report:
        new = model.get_submodule(row.name)
        one_by_one = row.name.startswith("layer4")  # 32x32 input: layer4 works on 1x1 maps
        assert new.num_groups == (1 if one_by_one else new.num_channels), row.name
        assert bool(row.note) == one_by_one
    assert "1x1" in str(model.norm_swap_report)


def test_groups_that_do_not_divide_a_layer_are_refused_naming_the_channel_count():
    model = pretrained_like_resnet18()
    with pytest.raises(ValueError, match=r"groups=3 .* 64 channels"):
        cu.swap_norm(model, "groupnorm", groups=3, verbose=False)
    assert len(bn_names(model)) == 20, "a refused swap leaves the model as it was"
    with pytest.raises(ValueError, match="unknown norm kind"):
        cu.swap_norm(model, "batch", verbose=False)


def test_a_by_hand_factory_matches_torch_and_bad_factories_are_refused_before_any_change():
    reference = pretrained_like_resnet18().eval()
    model = cu.swap_norm(pretrained_like_resnet18(), lambda c: cu.BatchNorm2d(c), verbose=False).eval()
    assert all(isinstance(model.get_submodule(n), cu.BatchNorm2d) for n in bn_names(reference))
    with torch.no_grad():
        torch.testing.assert_close(model(X), reference(X), rtol=1e-4, atol=1e-5)
    gn = cu.swap_norm(pretrained_like_resnet18(), lambda c: cu.GroupNorm(8, c), probe=X, verbose=False)
    assert gn.norm_swap_report[0].carried == ["weight", "bias"]

    class Cast(nn.Module):
        def forward(self, x):
            return x.double()

    for factory, match in ((lambda c: nn.Conv2d(c, c + 1, 1), "shape"), (lambda c: Cast(), "dtype"),
                           (lambda c: nn.LayerNorm(c), "fails on an input"), (lambda c: "bn", "nn.Module")):
        model = pretrained_like_resnet18()
        with pytest.raises((ValueError, TypeError), match=match):
            cu.swap_norm(model, factory, probe=X, verbose=False)
        assert len(bn_names(model)) == 20


def test_small_cnn_with_sequential_named_submodule_and_a_batchnorm1d_head():
    torch.manual_seed(0)
    model = SmallCNN()
    cu.swap_norm(model, "groupnorm", groups=4, verbose=False)
    assert isinstance(model.features[1], nn.GroupNorm) and isinstance(model.features[4], nn.GroupNorm)
    assert isinstance(model.extra_bn, nn.GroupNorm) and isinstance(model.head[2], nn.BatchNorm1d)
    assert model.norm_swap_report.untouched == ["head.2"] and "head.2" in str(model.norm_swap_report)
    assert model(torch.rand(3, 3, 8, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match="model is one itself"):
        cu.swap_norm(nn.BatchNorm2d(3), "groupnorm", groups=1, verbose=False)


def test_new_layers_take_the_dtype_and_mode_of_the_layers_they_replace():
    model = pretrained_like_resnet18().double().eval()
    cu.swap_norm(model, "groupnorm", verbose=False)
    new = model.get_submodule("layer1.0.bn1")
    assert new.weight.dtype == torch.float64 and not new.training
    assert model(X.double()).dtype == torch.float64


def test_head_plus_bn_freezing_trains_the_swapped_norm_layers_affine():
    model = cu.swap_norm(pretrained_like_resnet18(), "groupnorm", verbose=False)
    trainable = cu.trainable_names(cu.freeze(model, "head+bn"))
    assert "layer1.0.bn1.weight" in trainable and "layer2.0.downsample.1.bias" in trainable
    assert "layer1.0.conv1.weight" not in trainable and "fc.weight" in trainable
    assert len(cu.norm_layers(model)) == 20 and not cu.bn_layers(model)
