"""BN modes, recomputed statistics, freezing strategies, input layers and weight distances."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import course_utils as cu
from test_train import params, tiny_loader, tiny_net


def one_step(model: nn.Module, lr: float = 0.1) -> None:
    x, y = next(iter(tiny_loader()))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    cu.train_step(model, x, y, opt)


def test_frozen_stats_keeps_buffers_but_trains_gamma_beta():
    model = tiny_net().train()
    cu.set_bn_mode(model, "frozen_stats")
    before = params(model)
    one_step(model)
    after = params(model)
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(before[k], after[k]), f"{k} changed although the statistics are frozen"
    assert not torch.equal(before["1.weight"], after["1.weight"]), "gamma should still train"
    assert model.training and not model[1].training


def test_frozen_keeps_buffers_and_affine():
    model = tiny_net().train()
    cu.set_bn_mode(model, "frozen")
    before = params(model)
    one_step(model)
    after = params(model)
    for k in ("1.running_mean", "1.running_var", "1.weight", "1.bias"):
        assert torch.equal(before[k], after[k]), f"{k} changed although BN is frozen"
    assert not model[1].weight.requires_grad and not torch.equal(before["0.weight"], after["0.weight"])


def test_train_mode_updates_buffers_even_with_requires_grad_false():
    # pytorch/pytorch issue 86590: requires_grad=False does not freeze the statistics
    model = tiny_net().train()
    model[1].requires_grad_(False)
    cu.set_bn_mode(model, "train")
    before = params(model)
    one_step(model)
    assert not torch.equal(before["1.running_mean"], model[1].running_mean)
    assert model[1].num_batches_tracked.item() == 1


def test_model_train_resets_bn_mode_and_fit_reapplies_it():
    model = tiny_net()
    cu.set_bn_mode(model.train(), "frozen_stats")
    model.train()
    assert model[1].training, "model.train() puts BN back in train mode: that is why fit re-applies bn_mode"
    before = cu.bn_state(model)
    cu.fit(model, tiny_loader(), epochs=2, lr=1e-2, bn_mode="frozen_stats", progress=False,
           device=torch.device("cpu"))
    for k, v in cu.bn_state(model).items():
        assert torch.equal(v, before[k]), f"fit(bn_mode='frozen_stats') changed {k}"


def test_bad_bn_modes():
    with pytest.raises(ValueError, match="unknown BN mode"):
        cu.set_bn_mode(tiny_net(), "off")
    with pytest.raises(ValueError, match="loader"):
        cu.set_bn_mode(tiny_net(), "recomputed")
    with pytest.raises(ValueError, match="no batch-norm"):
        cu.set_bn_mode(nn.Linear(2, 2), "frozen")


def test_recompute_bn_stats_equals_the_statistics_of_the_data():
    model = tiny_net().eval()
    loader = tiny_loader(n=48, batch_size=16)
    gamma = model[1].weight.detach().clone()
    cu.recompute_bn_stats(model, loader)
    with torch.no_grad():
        feats = torch.cat([model[0](x) for x, _ in loader])  # what the BN layer sees: (48, 8, 8, 8)
    flat = feats.transpose(0, 1).reshape(8, -1)
    torch.testing.assert_close(model[1].running_mean, flat.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, flat.var(1, unbiased=True), rtol=1e-5, atol=1e-6)
    assert model[1].num_batches_tracked.item() == 3
    assert torch.equal(model[1].weight, gamma) and not model.training and model[1].momentum == 0.1

    # PyTorch's cumulative average (momentum=None) gives the same mean with equal batches
    ref = tiny_net()
    ref[1].reset_running_stats()
    ref[1].momentum = None
    with torch.no_grad():
        for x, _ in loader:
            ref.train()(x)
    torch.testing.assert_close(model[1].running_mean, ref[1].running_mean, rtol=1e-5, atol=1e-6)


def test_recompute_bn_stats_keeps_its_digits_when_the_mean_dwarfs_the_spread():
    # BN inputs with mean 1e8 and std 1 (float64 throughout). One-pass E[x²] - E[x]² in float64 loses
    # all of its digits here; the centered merge keeps seven or more.
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 2, 4, 4, generator=g, dtype=torch.float64) + 1e8, torch.zeros(16)) for _ in range(4)]
    model = nn.Sequential(nn.BatchNorm2d(2, dtype=torch.float64))
    cu.recompute_bn_stats(model, batches)
    flat = torch.cat([x for x, _ in batches]).transpose(0, 1).reshape(2, -1)
    exact_var = (flat - flat.mean(1, keepdim=True)).pow(2).sum(1) / (flat.shape[1] - 1)
    torch.testing.assert_close(model[0].running_var, exact_var, rtol=1e-7, atol=0)  # rounding of a 1e8 mean
    one_pass = ((flat * flat).mean(1) - flat.mean(1) ** 2) * flat.shape[1] / (flat.shape[1] - 1)
    assert (one_pass - exact_var).abs().max() > 1e-3  # the formula it replaced fails this test


def test_recomputed_mode_fills_buffers_then_keeps_them():
    model = tiny_net().train()
    cu.set_bn_mode(model, "recomputed", tiny_loader())
    stats = cu.bn_state(model)
    one_step(model)
    for k, v in cu.bn_state(model).items():
        assert torch.equal(v, stats[k])


@pytest.mark.parametrize("strategy, expected", [
    ("head", lambda n: n.startswith("fc.")),
    ("head+bn", lambda n: n.startswith("fc.") or ".bn" in n or "bn1" in n or "downsample.1" in n),
    ("none", lambda n: True),
])
def test_freeze_strategies(strategy, expected):
    model = cu.resnet18_for(5)
    cu.freeze(model, strategy)
    names = [n for n, _ in model.named_parameters()]
    assert set(cu.trainable_names(model)) == {n for n in names if expected(n)}
    if strategy == "head+bn":
        assert len(cu.trainable_names(model)) == 2 + 2 * 20  # fc weight+bias, 20 BN layers' gamma and beta


def test_freeze_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="strategy"):
        cu.freeze(cu.resnet18_for(5), "half")


@pytest.mark.parametrize("kind", cu.INPUT_LAYERS)
def test_add_input_layer_forward_shape_and_weights_kept(kind):
    model = cu.resnet18_for(5).eval()
    conv_w = model.conv1.weight.detach().clone()
    cu.add_input_layer(model, kind)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5)
    kept = model.conv1.weight if kind == "none" else model.conv1.conv.weight
    assert torch.equal(kept, conv_w)
    if kind != "none":
        with pytest.raises(ValueError, match="already"):
            cu.add_input_layer(model, kind)


@pytest.mark.parametrize("size", [(32, 32), (17, 40)])
def test_input_layernorm_is_layer_norm_over_chw_for_any_size(size):
    x = torch.randn(4, 3, *size) * 3 + 1
    ln = cu.InputLayerNorm(3)
    torch.testing.assert_close(ln(x), F.layer_norm(x, x.shape[1:]), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        ln.norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        ln.norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    expected = F.layer_norm(x, x.shape[1:]) * ln.norm.weight.view(1, 3, 1, 1) + ln.norm.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(ln(x), expected, rtol=1e-5, atol=1e-5)


def test_instancenorm_input_layer_is_instance_norm_and_bn_is_batch_norm():
    x = torch.randn(4, 3, 16, 16) * 2 + 5
    layer = cu.make_input_layer("instancenorm")
    torch.testing.assert_close(layer(x), F.instance_norm(x), rtol=1e-5, atol=1e-5)
    assert [p.shape for p in layer.parameters()] == [(3,), (3,)], "one gamma and one beta per channel"
    with torch.no_grad():  # with a per-channel affine it is GroupNorm with one channel per group
        layer.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        layer.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
        group = nn.GroupNorm(3, 3)
        group.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), group(x), rtol=1e-5, atol=1e-5)
    bn = cu.make_input_layer("batchnorm").train()
    torch.testing.assert_close(bn(x), F.batch_norm(x, None, None, training=True), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown input layer"):
        cu.make_input_layer("lrn")


def test_the_old_groupnorm_name_says_what_it_is_called_now():
    assert "groupnorm" not in cu.INPUT_LAYERS
    with pytest.raises(ValueError, match="now called 'instancenorm'"):
        cu.make_input_layer("groupnorm")
    with pytest.raises(ValueError, match="now called 'instancenorm'"):
        cu.LabConfig(input_layer="groupnorm").validate()


def test_weight_distance():
    a = {"l.weight": torch.tensor([3.0, 4.0]), "l.bias": torch.tensor([1.0]), "fc.weight": torch.ones(2, 2)}
    b = {"l.weight": torch.tensor([3.0, 4.0]) + torch.tensor([0.0, 0.5]), "l.bias": torch.tensor([9.0]),
         "fc.weight": torch.ones(3, 2)}
    d = cu.weight_distance(a, b)
    assert d == {"l.weight": pytest.approx(0.1)}  # bias left out, mismatched head skipped
    assert cu.weight_distance(a, b, weights_only=False)["l.bias"] == pytest.approx(8.0)
    model = tiny_net()
    assert all(v == 0 for v in cu.weight_distance(model, copy.deepcopy(model)).values())
