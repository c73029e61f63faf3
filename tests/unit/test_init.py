"""Moment-preserving random init (Raghu et al. 2019) and standard transfer."""

import functools

import numpy as np
import pytest
import torch
from torch import nn

from smalldl import init, models

NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
#: tensors at least this large are checked strictly against their sampling errors
MIN_NUMEL = 64
#: bound on each standardised error (~N(0, 1)); P(|z| > 5.5) ~ 4e-8, so hundreds of checks stay reliable
Z_MAX = 5.5


def _keys(body, kinds, param):
    return {f"{n}.{param}" if n else param for n, m in body.named_modules() if isinstance(m, kinds)}


def conv_weight_keys(body):
    return _keys(body, nn.Conv2d, "weight")


def bn_param_keys(body):
    return _keys(body, nn.BatchNorm2d, "weight") | _keys(body, nn.BatchNorm2d, "bias")


@functools.cache
def pretrained_like(arch="resnet18", seed=0):
    """A 'pretrained' body whose tensors all have distinctive, non-default moments: every weight and
    bias gets its own mean and std (BatchNorm weights centred in [0.3, 1.3], not at 1), running
    variances are positive and not 1, running means not 0, and the batch count is not 0.
    Cached: the tests only read it."""
    torch.manual_seed(seed)
    m = models.build(arch, 1)
    bn_weights = _keys(m.body, nn.BatchNorm2d, "weight")
    gen = torch.Generator().manual_seed(seed + 1)

    def u():
        return float(torch.rand(1, generator=gen))

    state = {}
    for k, v in m.body.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.full_like(v, 1234)
        elif k.endswith("running_var"):
            state[k] = 0.5 + torch.rand(v.shape, generator=gen)
        elif v.is_floating_point():
            mean = 0.3 + u() if k in bn_weights else u() * 0.2 - 0.1
            std = 0.01 + u() * 0.2
            state[k] = torch.randn(v.shape, generator=gen) * std + mean
        else:
            state[k] = v.clone()
    return state


def standardised_errors(src, new):
    """How far a redrawn tensor is from i.i.d. N(mean(src), std(src)^2): the errors of its mean and
    std and its correlation with src, each divided by its standard error (so each is ~N(0, 1))."""
    s, n = src.double().flatten(), new.detach().double().flatten()
    k = s.numel()
    sd = float(s.std(unbiased=False))
    z_mean = float(n.mean() - s.mean()) / (sd / np.sqrt(k))
    z_std = (float(n.std(unbiased=False)) / sd - 1) * np.sqrt(2 * (k - 1))  # std is the std (not the mean)
    z_corr = float(torch.corrcoef(torch.stack([s, n]))[0, 1]) * np.sqrt(k)
    return np.array([z_mean, z_std, z_corr])


def assert_redrawn_from_moments(src, new, keys):
    """Each tensor of ``keys`` differs from its source, keeps its mean and std within sampling error
    and is uncorrelated with it (tensors of >= MIN_NUMEL elements); returns the standardised errors."""
    errors = []
    for k in sorted(keys):
        assert not torch.equal(new[k], src[k]), k
        if src[k].numel() >= MIN_NUMEL:
            z = standardised_errors(src[k], new[k])
            assert np.all(np.abs(z) < Z_MAX), (k, z)
            errors.append(z)
    return np.array(errors)


def assert_source_running_stats(body, src):
    """Running statistics are not redrawn: they stay the source's (as in the authors' code)."""
    bns = [(n, m) for n, m in body.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    for name, m in bns:
        prefix = f"{name}." if name else ""
        assert torch.equal(m.running_mean, src[prefix + "running_mean"])
        assert torch.equal(m.running_var, src[prefix + "running_var"])
        assert int(m.num_batches_tracked) == int(src[prefix + "num_batches_tracked"])


@pytest.mark.parametrize("arch", ["resnet18", "smallcnn"])
def test_moments_redraws_every_parameter_keeping_mean_and_std_and_destroying_the_features(arch):
    src = pretrained_like(arch)
    model = models.build(arch, 1)
    info = init.initialise(model, "moments", src, seed=3)
    params = dict(model.body.named_parameters())
    new = model.body.state_dict()
    errors = assert_redrawn_from_moments(src, new, params)
    assert len(errors) >= 4
    assert info["redrawn"] == len(params)
    assert_source_running_stats(model.body, src)  # not redrawn: the source's


@pytest.mark.parametrize("arch", ["densenet121", "resnet50"])
def test_moments_and_momentsconv_differ_on_bodies_of_only_conv_and_batchnorm(arch):
    """DenseNet121 and ResNet50 bodies hold only conv weights and BatchNorm tensors: the variants
    must still differ (they differ in every BatchNorm tensor) while sharing their conv draws."""
    src = pretrained_like(arch)
    torch.manual_seed(7)
    full = models.build(arch, 1)
    torch.manual_seed(7)
    conv = models.build(arch, 1)
    init.initialise(full, "moments", src, seed=3)
    init.initialise(conv, "momentsconv", src, seed=3)
    a, b = full.body.state_dict(), conv.body.state_dict()
    assert {k for k, p in full.body.named_parameters()} == conv_weight_keys(full.body) | bn_param_keys(full.body)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for k in bn_param_keys(full.body):
        assert not torch.equal(a[k], b[k]), k
    for k in conv_weight_keys(full.body):  # the same seed gives the same conv draw in both variants
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("arch", ["densenet121", "resnet50"])
def test_momentsconv_redraws_conv_weights_and_keeps_everything_else_of_the_source(arch):
    src = pretrained_like(arch)
    model = models.build(arch, 1)
    info = init.initialise(model, "momentsconv", src, seed=3)
    new = model.body.state_dict()
    convs = conv_weight_keys(model.body)
    assert set(new) == set(src)
    kept = set(new) - convs
    assert any(k.endswith("running_var") for k in kept) and bn_param_keys(model.body) <= kept
    for k in kept:  # BatchNorm weights, biases, running stats and batch counts: bit-identical
        assert new[k].dtype == src[k].dtype and torch.equal(new[k], src[k]), k
    errors = assert_redrawn_from_moments(src, new, convs)
    assert len(errors) == len(convs)  # every conv weight has >= 64 elements
    assert np.all(np.mean(errors**2, axis=0) < 1.5)
    assert info["redrawn"] == len(convs)


@pytest.mark.parametrize("arch", ["densenet121", "resnet50"])
def test_moments_redraws_batchnorm_weights_and_biases_from_their_moments(arch):
    src = pretrained_like(arch)
    model = models.build(arch, 1)
    init.initialise(model, "moments", src, seed=3)
    new = model.body.state_dict()
    bn = bn_param_keys(model.body)
    errors = assert_redrawn_from_moments(src, new, bn)
    assert len(errors) == len(bn)  # every BatchNorm tensor here has >= 64 elements
    # over the hundreds of tensors, the standardised errors of mean, std and correlation are ~N(0, 1)
    assert np.all(np.mean(errors**2, axis=0) < 1.5) and np.all(np.abs(np.mean(errors, axis=0)) < 0.5)
    for m in model.body.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert not torch.all(m.weight == 1) and not torch.all(m.bias == 0)
    assert_source_running_stats(model.body, src)


def mixed_body():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, bias=True),
        nn.BatchNorm2d(16),
        nn.GroupNorm(4, 16),
        nn.Linear(16, 32),
        nn.LayerNorm(32),
    )


def test_both_variants_on_a_body_with_conv_biases_linear_and_other_norm_layers():
    torch.manual_seed(0)
    template = mixed_body()
    gen = torch.Generator().manual_seed(1)
    src = {}
    for i, (k, v) in enumerate(template.state_dict().items()):
        if k.endswith("num_batches_tracked"):
            src[k] = torch.full_like(v, 99)
        else:
            src[k] = torch.randn(v.shape, generator=gen) * (0.05 + 0.02 * i) + 0.5 - 0.1 * i
    src["1.running_var"] = src["1.running_var"].abs() + 0.1
    params = [k for k, _ in template.named_parameters()]
    assert len(params) == 10

    torch.manual_seed(5)
    default = mixed_body()
    torch.manual_seed(5)
    full = mixed_body()
    info = init.moment_preserving(full, src, seed=2)
    assert info["redrawn"] == len(params)
    new = full.state_dict()
    for k in params:  # every parameter, norm layers' included, is new: neither the source's nor the default
        assert not torch.equal(new[k], src[k]) and not torch.equal(new[k], default.state_dict()[k]), k
    assert abs(float(new["3.weight"].mean()) - float(src["3.weight"].mean())) < 0.05
    assert torch.equal(new["1.running_var"], src["1.running_var"]) and int(new["1.num_batches_tracked"]) == 99

    torch.manual_seed(5)
    conv = mixed_body()
    info = init.moment_preserving(conv, src, seed=2, conv_only=True)
    assert info["redrawn"] == 1
    new = conv.state_dict()
    assert not torch.equal(new["0.weight"], src["0.weight"])
    assert torch.equal(new["0.weight"], full.state_dict()["0.weight"])
    for k in set(src) - {"0.weight"}:  # conv bias, norm layers, linear, running stats: the source's
        assert torch.equal(new[k], src[k]), k


@pytest.mark.parametrize("variant", ["moments", "momentsconv"])
def test_the_head_keeps_its_fresh_init(variant):
    torch.manual_seed(4)
    fresh = models.build("smallcnn", 2)
    torch.manual_seed(4)
    model = models.build("smallcnn", 2)
    init.initialise(model, variant, pretrained_like("smallcnn"), seed=0)
    assert torch.equal(model.head.weight, fresh.head.weight) and torch.equal(model.head.bias, fresh.head.bias)


def test_a_source_of_another_architecture_is_refused():
    with pytest.raises(RuntimeError):
        init.initialise(models.build("smallcnn", 1), "moments", pretrained_like("resnet18"), seed=0)


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


@pytest.mark.parametrize("variant", ["moments", "momentsconv"])
def test_moment_preserving_is_seeded(variant):
    src = pretrained_like("smallcnn")
    a, b, c = (models.build("smallcnn", 1) for _ in range(3))
    init.initialise(a, variant, src, seed=1)
    init.initialise(b, variant, src, seed=1)
    init.initialise(c, variant, src, seed=2)
    pairs = zip(a.body.state_dict().values(), b.body.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
    assert not torch.equal(a.body.features[0].weight, c.body.features[0].weight)
    if variant == "moments":
        assert not torch.equal(a.body.features[1].weight, c.body.features[1].weight)
