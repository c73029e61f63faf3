"""Moment-preserving random init (Raghu et al. 2019) and standard transfer."""

import numpy as np
import pytest
import torch
from torch import nn

from smalldl import init, models


def pretrained_like(arch="resnet18", seed=0):
    """A 'pretrained' body whose tensors have distinctive, non-default moments."""
    torch.manual_seed(seed)
    m = models.build(arch, 1)
    gen = torch.Generator().manual_seed(seed + 1)
    state = {}
    for k, v in m.body.state_dict().items():
        if v.is_floating_point():
            mean = float(torch.rand(1, generator=gen)) * 0.2 - 0.1
            std = 0.01 + float(torch.rand(1, generator=gen)) * 0.2
            state[k] = torch.randn(v.shape, generator=gen) * std + mean
        else:
            state[k] = v.clone()
    return state


@pytest.mark.parametrize("arch", ["resnet18", "smallcnn"])
def test_moment_preserving_keeps_mean_and_std_and_destroys_the_features(arch):
    src = pretrained_like(arch)
    model = models.build(arch, 1)
    info = init.initialise(model, "moments", src, seed=3)
    assert info["redrawn"] > 0
    checked = 0
    for mod_name, module in model.body.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            key = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, nn.BatchNorm2d):
                continue
            s, n = src[key].double().flatten(), p.detach().double().flatten()
            if s.numel() < 100:
                continue
            se_mean = s.std() / np.sqrt(s.numel())
            assert abs(n.mean() - s.mean()) < 5 * se_mean + 1e-12, key
            rel_se_std = np.sqrt(2 / s.numel())
            assert abs(n.std() / s.std() - 1) < 5 * rel_se_std, key  # std is the std (not the mean)
            corr = float(torch.corrcoef(torch.stack([s, n]))[0, 1])
            assert abs(corr) < 5 / np.sqrt(s.numel()), key
            checked += 1
    assert checked >= 4
    for m in model.body.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)


def test_conv_only_variant_redraws_conv_weights_and_leaves_the_rest_at_default():
    src = pretrained_like("resnet18")
    torch.manual_seed(5)
    default = models.build("resnet18", 1)
    torch.manual_seed(5)
    model = models.build("resnet18", 1)
    init.initialise(model, "momentsconv", src, seed=3)
    conv = model.body.conv1.weight.detach().double()
    assert abs(conv.std() / src["conv1.weight"].double().std() - 1) < 0.05
    assert not torch.equal(model.body.conv1.weight, default.body.conv1.weight)
    assert torch.all(model.body.bn1.weight == 1) and torch.all(model.body.bn1.running_var == 1)


def test_transfer_loads_the_source_body_exactly_and_default_touches_nothing():
    src = pretrained_like("smallcnn")
    model = models.build("smallcnn", 2)
    head = model.head.weight.clone()
    init.initialise(model, "transfer", src, seed=0)
    for k, v in model.body.state_dict().items():
        assert torch.equal(v, src[k])
    assert torch.equal(model.head.weight, head)  # the head stays new
    torch.manual_seed(1)
    a = models.build("smallcnn", 1)
    torch.manual_seed(1)
    b = models.build("smallcnn", 1)
    assert init.initialise(b, "default", None, seed=0) == {}
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with pytest.raises(ValueError):
        init.initialise(b, "moments", None, seed=0)


def test_moment_preserving_is_seeded():
    src = pretrained_like("smallcnn")
    a, b, c = (models.build("smallcnn", 1) for _ in range(3))
    init.initialise(a, "moments", src, seed=1)
    init.initialise(b, "moments", src, seed=1)
    init.initialise(c, "moments", src, seed=2)
    assert torch.equal(a.body.features[0].weight, b.body.features[0].weight)
    assert not torch.equal(a.body.features[0].weight, c.body.features[0].weight)
