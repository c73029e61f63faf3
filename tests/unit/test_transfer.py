"""Transfer methods: feature extractor, fine-tune all, discriminative lrs + gradual unfreezing; the
three layer groups of each architecture."""

import math

import pytest
import torch
from torch import nn

from smalldl import models, train
from smalldl.config import train_settings
from smalldl.errors import InputError

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


def body_batchnorms(model):
    return [m for m in model.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("frozen_bn", ["adapt", "fixed"])
def test_feature_extractor_trains_only_the_head_and_frozen_bn_says_whether_body_statistics_adapt(frozen_bn):
    """adapt (the authors' model.train() on the whole model): the running statistics of every body
    BatchNorm layer move at every step, also after each epoch's evaluation put the model in eval mode,
    while every body parameter stays bit-identical; fixed: the whole body state stays bit-identical."""
    settings = train_settings({**SETTINGS, "frozen_bn": frozen_bn})
    model = models.build("smallcnn", 1)
    g1, g2, g3 = group_params(model)
    body_params = {k: v.detach().clone() for k, v in model.body.named_parameters()}
    body_before = {k: v.clone() for k, v in model.body.state_dict().items()}  # incl. BN running stats
    head_before = snapshot(g3)
    bns = body_batchnorms(model)
    assert len(bns) == 4
    prev = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    trace = []

    def on_step(i, m, opt):
        moved = [
            not torch.equal(bn.running_mean, mean) and not torch.equal(bn.running_var, var)
            for bn, (mean, var) in zip(bns, prev, strict=True)
        ]
        prev[:] = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
        body_modes = {sub.training for g in models.layer_groups(m)[:2] for mod in g for sub in mod.modules()}
        trace.append((i, moved, body_modes, m.head.training))

    result = train.fit(
        model,
        blobs(32, 0),
        blobs(16, 1),
        settings,
        train.Run(task_type="binary", labels=["y"], seed=0, transfer="extractor"),
        train.Hooks(on_step=on_step),
    )
    assert result["epochs_run"] == 4 and len(trace) == result["steps"] == 16
    for k, v in model.body.named_parameters():
        assert torch.equal(v, body_params[k]), k  # weights and biases (BN ones too) never get a gradient
    assert not same(head_before, g3)
    for i, moved, body_modes, head_training in trace:
        assert head_training, i
        if frozen_bn == "adapt":
            assert all(moved) and body_modes == {True}, i  # every step, epochs 2-4 (after an evaluation) too
        else:
            assert not any(moved) and body_modes == {False}, i
    if frozen_bn == "fixed":
        for k, v in model.body.state_dict().items():
            assert torch.equal(v, body_before[k]), k
    else:
        for bn in bns:
            assert int(bn.num_batches_tracked) > 0


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


@pytest.mark.parametrize("frozen_bn", ["adapt", "fixed"])
def test_gradual_unfreezing_frozen_groups_are_bit_identical_until_their_step_and_lrs_are_divided(frozen_bn):
    settings = train_settings({**SETTINGS, "epochs": 5, "frozen_bn": frozen_bn})
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
        # BatchNorm statistics of a frozen group: adapt from the first step, or stay frozen until its unfreezing
        assert bn_moved == (frozen_bn == "adapt" or i >= u1), (i, u1)
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


def test_frozen_bn_setting_defaults_to_adapt_and_is_checked():
    assert train_settings({})["frozen_bn"] == "adapt"
    assert train_settings({"frozen_bn": "fixed"})["frozen_bn"] == "fixed"
    with pytest.raises(InputError):
        train_settings({"frozen_bn": "frozen"})


def test_set_trainable_modes_of_frozen_groups_after_an_evaluation():
    """evaluate() leaves the model in eval mode; set_trainable (every epoch's start) puts it back: adapt,
    every module in train mode; fixed, the frozen groups' modules (and all their submodules) in eval mode.
    Either way only the trainable groups' parameters require gradients."""
    model = models.build("resnet18", 1)
    groups = models.layer_groups(model)
    for frozen_bn in ("adapt", "fixed", "adapt"):
        for trainable in ((3,), (2, 3), (1, 2, 3)):
            model.eval()
            train.set_trainable(model, groups, trainable, frozen_bn=frozen_bn)
            assert model.training
            for g, modules in enumerate(groups, start=1):
                on = g in trainable
                assert all(p.requires_grad == on for m in modules for p in m.parameters()), (frozen_bn, g)
                modes = {sub.training for m in modules for sub in m.modules()}
                assert modes == {on or frozen_bn == "adapt"}, (frozen_bn, trainable, g)
    with pytest.raises(ValueError, match="frozen_bn"):
        train.set_trainable(model, groups, (3,), frozen_bn="frozen")
