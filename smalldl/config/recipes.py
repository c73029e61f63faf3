"""Recipe names and the architectures: the vocabulary a config's recipes, sources and archs are
checked against (``Recipe``), the default recipes and sources.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smalldl.errors import InputError

#: Values of each recipe axis (PAPER.md): training method, transfer method, source, initialisation.
SCHEDULES = ("onecycle", "regular")


#: extractor = only the new head trains; finetune = all layers; gradual = discriminative lr + gradual unfreezing
TRANSFERS = ("extractor", "finetune", "gradual")


#: default = PyTorch's init; transfer = the source's weights; moments = every parameter tensor of the body
#: (BatchNorm weights and biases included) redrawn from the source tensor's mean and std (Raghu et al. 2019),
#: running stats kept from the source; momentsconv = the source's weights with only the conv weights
#: redrawn (smalldl/init.py).
INITS = ("default", "transfer", "moments", "momentsconv")


NO_SOURCE = "none"


#: The recipe axes, in the order of a recipe's name.
AXES = ("schedule", "transfer", "source", "init")


#: Radiomics feature sets and classifiers (smalldl/radiomics.py; the rules' wildcard values).
RADIOMICS_FEATURESETS = ("paper79", "pyradiomics")


RADIOMICS_MODELS = ("l1", "l2", "elasticnet", "rf")


@dataclass(frozen=True)
class Recipe:
    """How one model is trained: schedule x transfer method x source x init (``a-b-c-d``), and for how
    many epochs when not ``train.epochs`` (``a-b-c-d-e<N>``: a stage's ``epochs``, or a listed recipe)."""

    schedule: str
    transfer: str
    source: str
    init: str
    epochs: int | None = None

    @property
    def name(self) -> str:
        return self.axes_name + (f"-e{self.epochs}" if self.epochs is not None else "")

    @property
    def axes_name(self) -> str:
        """The name without the epochs: the lr finder's recipe (its sweep does not depend on epochs)."""
        return f"{self.schedule}-{self.transfer}-{self.source}-{self.init}"

    @classmethod
    def parse(cls, name: str, sources: Mapping[str, Any] | None = None, where: str | None = None) -> Recipe:
        parts = name.split("-")
        where = f"{where or 'study.recipes'}: {name!r}"
        epochs = None
        if len(parts) == 5 and re.fullmatch(r"e[1-9][0-9]*", parts[4]):
            epochs = int(parts.pop()[1:])
        if len(parts) != 4:
            raise InputError(
                f"{where} must be schedule-transfer-source-init, e.g. onecycle-finetune-none-default "
                "(optionally -e<epochs>, e.g. onecycle-finetune-none-default-e10)"
            )
        recipe = cls(*parts, epochs=epochs)
        _check_choice(where, "schedule", recipe.schedule, SCHEDULES)
        _check_choice(where, "transfer method", recipe.transfer, TRANSFERS)
        _check_choice(where, "init", recipe.init, INITS)
        if recipe.source == NO_SOURCE:
            if recipe.init != "default":
                raise InputError(f"{where}: source 'none' only goes with init 'default'")
            if recipe.transfer != "finetune":
                raise InputError(f"{where}: without a source there is nothing to freeze; use transfer 'finetune'")
        else:
            if sources is not None and recipe.source not in sources:
                known = ", ".join(sorted(sources)) or "none defined"
                raise InputError(f"{where}: source {recipe.source!r} is not under 'sources' ({known})")
            if recipe.init == "default":
                raise InputError(f"{where}: a source needs an init that uses it (e.g. 'transfer')")
        return recipe

    def replace(self, axis: str, value: str) -> Recipe:
        """This recipe with one axis changed, kept valid: a source with init 'default' gets 'transfer',
        source 'none' gets init 'default' and transfer 'finetune'."""
        parts = {a: getattr(self, a) for a in AXES}
        parts[axis] = value
        if parts["source"] == NO_SOURCE:
            parts["init"], parts["transfer"] = "default", "finetune"
        elif parts["init"] == "default":
            parts["init"] = "transfer"
        return Recipe(**parts, epochs=self.epochs)

    def with_epochs(self, epochs: int | None) -> Recipe:
        """This recipe trained for ``epochs`` (None: ``train.epochs``)."""
        return dataclasses.replace(self, epochs=epochs)

    def with_set(self, values: Mapping[str, str]) -> Recipe:
        """This recipe with several axes set (a stage's ``set:``): the source first (it decides which
        transfer and init are valid), then the other axes in recipe order."""
        recipe = self
        for axis in sorted(values, key=lambda a: (a != "source", AXES.index(a))):
            recipe = recipe.replace(axis, values[axis])
        return recipe


#: How a source with a task is pretrained unless sources.<name>.recipe says otherwise: from scratch.
DEFAULT_SOURCE_RECIPE = "onecycle-finetune-none-default"


#: The source implied when the config defines none of that name: the published ImageNet weights.
IMAGENET = "imagenet"


IMAGENET_SOURCE = {"weights": "imagenet"}


#: The provenance recorded for weights read from a file the config names (sources.<name>.files), and for
#: source models trained here from them: nothing here knows what they were trained on (the imagenet_weights
#: and pretrain jobs write it; source_models.csv, the answer and the run's log say so).
UNVERIFIED = "unverified weights file"


#: The recipes of a study that lists none (and no stages): training from scratch, and from ImageNet with
#: fine-tuning of all layers and with gradual unfreezing; none needs data beyond the study's own. Every
#: source the config defines adds onecycle-finetune-<source>-transfer (``default_recipes``).
BASE_RECIPES = (
    "onecycle-finetune-none-default",
    "onecycle-finetune-imagenet-transfer",
    "onecycle-gradual-imagenet-transfer",
)


#: torchvision's classification models (torchvision.models.list_models(module=torchvision.models) of the
#: pinned torchvision; a test keeps the two equal), named here so that the DAG build checks an
#: architecture without importing torch.
TORCHVISION_ARCHS = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121",
    "densenet161", "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
    "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf",
    "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf", "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf",
    "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf", "resnet101",
    "resnet152", "resnet18", "resnet34", "resnet50", "resnext101_32x8d", "resnext101_64x4d",
    "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16",
    "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
)  # fmt: skip


#: Every architecture study.archs may name (smalldl/models.py builds each).
ARCHS = ("smallcnn", "efficientnet_lite0", *TORCHVISION_ARCHS)


def _check_choice(where: str, axis: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{where}: unknown {axis} {value!r} (choose from {', '.join(allowed)})")
