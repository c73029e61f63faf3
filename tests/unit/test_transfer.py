"""Transfer methods: feature extractor, fine-tune all, discriminative lrs + gradual unfreezing; the
three layer groups of each architecture."""

import math

import pytest
import torch
from torch import nn

from smalldl import models, train
from smalldl.config import train_settings

from .test_train import blobs

SETTINGS = train_settings({"epochs": 4, "batch_size": 8, "max_lr": 0.01, "crop": 20})


def group_params(model):
    return [[p for m in g for p in m.parameters()] for g in models.layer_groups(model)]


def snapshot(params):
    return [p.detach().clone() for p in params]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_layer_groups_are_the_papers_for_densenet121_and_resnet50():
    d = models.build("densenet121", 3)
    g1, g2, g3 = models.layer_groups(d)
    feats = list(d.body.features.children())
    assert g1 == feats[:7] and g2 == feats[7:] and g3 == [d.head]
    assert d.head.out_features == 3 and d.head.in_features == 1024
    r = models.build("resnet50", 1)
    g1, g2, g3 = models.layer_groups(r)
    b = r.body
    assert g1 == [b.conv1, b.bn1, b.relu, b.maxpool, b.layer1, b.layer2] and g2 == [b.layer3, b.layer4]
    assert g3 == [r.head] and r.head.in_features == 2048
    for arch in ("densenet121", "resnet50", "smallcnn", "efficientnet_lite0", "mobilenet_v3_small", "vgg11"):
        m = models.build(arch, 2)
        groups = group_params(m)
        ids = [id(p) for g in groups for p in g]
        assert len(ids) == len(set(ids)) == len(list(m.parameters())), arch  # a partition of the parameters
        assert all(groups), arch
        assert m(torch.rand(2, 1, 64, 64)).shape == (2, 2)


def test_head_is_new_randomly_initialised_and_sized_for_the_task():
    torch.manual_seed(0)
    a = models.build("resnet18", 5)
    torch.manual_seed(1)
    b = models.build("resnet18", 5)
    assert a.head.out_features == 5 and not torch.equal(a.head.weight, b.head.weight)


def test_feature_extractor_trains_only_the_head_and_freezes_batchnorm_statistics():
    model = models.build("smallcnn", 1)
    g1, g2, g3 = group_params(model)
    body_before = {k: v.clone() for k, v in model.body.state_dict().items()}  # incl. BN running stats
    head_before = snapshot(g3)
    train.fit(
        model,
        blobs(32, 0),
        blobs(16, 1),
        SETTINGS,
        train.Run(task_type="binary", labels=["y"], seed=0, transfer="extractor"),
    )
    for k, v in model.body.state_dict().items():
        assert torch.equal(v, body_before[k]), k
    assert not same(head_before, g3)


def test_finetune_trains_every_group_from_the_first_step():
    model = models.build("smallcnn", 1)
    groups = group_params(model)
    before = [snapshot(g) for g in groups]
    changed = {}

    def on_step(i, m, opt):
        if i == 0:
            changed.update({g: not same(before[g], groups[g]) for g in range(3)})

    result = train.fit(
        model,
        blobs(32, 0),
        blobs(16, 1),
        SETTINGS,
        train.Run(task_type="binary", labels=["y"], seed=0),
        train.Hooks(on_step=on_step),
    )
    assert changed == {0: True, 1: True, 2: True}
    steps = [r for r in result["history"] if r["kind"] == "step"]
    assert {r["trainable"] for r in steps} == {"1,2,3"}
    assert all(r["lr_group1"] == r["lr_group2"] == r["lr_group3"] == r["lr"] for r in steps)


def test_gradual_unfreezing_frozen_groups_are_bit_identical_until_their_step_and_lrs_are_divided():
    settings = train_settings({**SETTINGS, "epochs": 5})
    model = models.build("smallcnn", 1)
    groups = group_params(model)
    bn = [m for m in models.layer_groups(model)[0] if isinstance(m, nn.BatchNorm2d)][0]
    initial = [snapshot(g) for g in groups]
    initial_bn = bn.running_mean.clone()
    trace = []

    def on_step(i, m, opt):
        trace.append(
            [not same(initial[g], groups[g]) for g in range(3)] + [not torch.equal(bn.running_mean, initial_bn)]
        )

    data = blobs(40, 0)
    result = train.fit(
        model,
        data,
        blobs(16, 1),
        settings,
        train.Run(task_type="binary", labels=["y"], seed=0, transfer="gradual"),
        train.Hooks(on_step=on_step),
    )
    T = result["steps"]
    u1, u2 = math.ceil(0.2 * T), math.ceil(0.1 * T)
    for i, (c1, c2, c3, bn_moved) in enumerate(trace):
        assert c3  # the head trains from the first step
        assert c2 == (i >= u2), (i, u2)  # group 2 unchanged before its unfreeze step, changed from it on
        assert c1 == (i >= u1), (i, u1)
        assert bn_moved == (i >= u1)  # BatchNorm statistics of a frozen group stay frozen too
    steps = [r for r in result["history"] if r["kind"] == "step"]
    for r in steps:
        assert r["lr_group1"] == pytest.approx(r["lr"] / 9, rel=1e-12)
        assert r["lr_group2"] == pytest.approx(r["lr"] / 3, rel=1e-12)
        assert r["lr_group3"] == r["lr"]
        expected = "1,2,3" if r["step"] >= u1 else ("2,3" if r["step"] >= u2 else "3")
        assert r["trainable"] == expected


def test_plan_of_each_transfer_method():
    s = train_settings({})
    assert train.make_plan("finetune", 100, s).trainable(0) == (1, 2, 3)
    ext = train.make_plan("extractor", 100, s)
    assert ext.trainable(0) == ext.trainable(10**9) == (3,)
    g = train.make_plan("gradual", 100, s)
    assert g.divisors == (9, 3, 1)
    assert (g.trainable(9), g.trainable(10), g.trainable(19), g.trainable(20)) == ((3,), (2, 3), (2, 3), (1, 2, 3))
    with pytest.raises(ValueError):
        train.make_plan("partial", 10, s)
