"""Why a run scores below chance (AUC < 0.5) on its test set: the run trained again with its real labels
and with ``--permutations`` shufflings of its training labels (whole label rows, so co-occurrence is kept),
each scored on the test set on the centre crop, with the run's TTA and with many TTA views; and what its
head learned: how close the head's change from its initialisation is to "every weight down by the same
amount" (cosine with -1) and how well the logits follow minus the sum of the pooled features.

If the permuted runs score as low as the real one, the below-chance AUC carries no information about the
labels: it is the test AUC of the score the training procedure gives whatever the labels (docs/usage.md,
"Below-chance results"). Needs a finished (or partly run) workflow folder: its config, the task's split and
training subset, the dataset's cache; an ImageNet source is made from the installed weights, another source
is read from ``results/models/source``.

    python benchmarks/below_chance.py WORKDIR [--task cxr14 --recipe regular-extractor-imagenet-transfer
                                               --n 50 --seed 0 --permutations 4 --views 24]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from smalldl import config as config_mod  # noqa: E402
from smalldl import layout  # noqa: E402
from smalldl.config import Recipe  # noqa: E402
from smalldl.data.transforms import center_crop, to_tensor  # noqa: E402
from smalldl.evaluate import predict_views  # noqa: E402
from smalldl.jobs._shared import build_recipe_model, choose_formats, target_data  # noqa: E402
from smalldl.metrics import auc_per_label, mean_auc  # noqa: E402
from smalldl.utils import derive_seed  # noqa: E402


def source_checkpoint(cfg: dict, workdir: Path, recipe: Recipe, arch: str, tmp: Path) -> Path | None:
    if recipe.source == config_mod.NO_SOURCE:
        return None
    spec = cfg["sources"][recipe.source]
    if spec.get("weights") == "imagenet":
        from smalldl.jobs.pretrain import imagenet_weights

        out = tmp / f"{recipe.source}_{arch}.pt"
        files = spec.get("files", {})
        metrics = out.with_suffix(".json")
        imagenet_weights(source=recipe.source, arch=arch, files=files, out_ckpt=out, out_metrics=metrics)
        return out
    path = workdir / layout.MODELS / "source" / recipe.source / f"{arch}.pt"
    if not path.exists():
        raise SystemExit(f"error: {path} is missing: run the workflow (or its pretrain rule) first")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--config", type=Path, help="the study's config (default: WORKDIR/config.yaml)")
    parser.add_argument("--task", default="cxr14")
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--recipe", default="regular-extractor-imagenet-transfer")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--permutations", type=int, default=4)
    parser.add_argument("--views", type=int, default=24, help="TTA views of the many-view score")
    args = parser.parse_args(argv)

    import torch

    from smalldl.data.arrays import Data
    from smalldl.train import Hooks, Run, fit

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cfg = config_mod.load(args.config or args.workdir / "config.yaml")
    task, settings = cfg["tasks"][args.task], dict(cfg["train"])
    settings["device"] = "cpu"
    labels, kind, width = list(task["labels"]), task["type"], cfg["preprocess"]["width"]
    cache = args.workdir / layout.CACHE / task["dataset"]
    _, train, val, test = target_data(
        task=task,
        split_parquet=args.workdir / layout.SPLITS / args.task / "split.parquet",
        subset_csv=args.workdir / layout.SPLITS / args.task / f"train_n{args.n}_s{args.seed}.csv",
        cache_npy=cache / f"w{width}.npy",
        cache_meta=cache / f"w{width}.json",
        n=args.n,
    )
    recipe = Recipe.parse(args.recipe)
    run_seed = derive_seed(cfg["seed"], "run", args.task, args.arch, args.recipe, args.n, args.seed)
    tta_seed = derive_seed(run_seed, "tta")
    device = torch.device("cpu")
    y = test.targets

    def auc(prob: np.ndarray) -> float:
        return mean_auc(auc_per_label(y, prob, labels))

    print(f"{args.task} {args.arch} {args.recipe} n={args.n} seed={args.seed}: test {len(test)} images")
    print("training labels   test AUC: centre   TTA   TTA x views | head: cos(dW, -1)  corr(logit, -sum f)")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = source_checkpoint(cfg, args.workdir, recipe, args.arch, Path(tmp))
        for k in range(args.permutations + 1):
            targets = train.targets
            if k:
                targets = targets[np.random.default_rng(k).permutation(len(train))]
            data = Data(images=train.images, targets=targets, image_ids=train.image_ids)
            model, _, _ = build_recipe_model(task=task, arch=args.arch, recipe=recipe, source_ckpt=ckpt, seed=run_seed)
            head0 = model.head.weight.detach().clone()
            st, _ = choose_formats(settings, model=model, device=device, arch=args.arch)
            run = Run(task_type=kind, labels=labels, seed=run_seed, schedule=recipe.schedule, transfer=recipe.transfer)
            fit(model, data, val, st, run, Hooks(log=io.StringIO()))
            plain, tta = predict_views(model, test, st, device=device, task_type=kind, tta=st["tta"], seed=tta_seed)
            _, many = predict_views(model, test, st, device=device, task_type=kind, tta=args.views, seed=tta_seed)
            dw = (model.head.weight.detach() - head0).numpy()
            cos = float(np.mean(-dw.sum(1) / np.linalg.norm(dw, axis=1) / np.sqrt(dw.shape[1])))
            model.eval()
            with torch.no_grad():
                x = center_crop(to_tensor(test.images, device), st["crop"]).expand(-1, 3, -1, -1)
                feats = model.body((x - model.mean) / model.std)
                logits = model.head(feats).numpy()
            mass = -feats.sum(1).numpy()
            corr = float(np.mean([np.corrcoef(logits[:, j], mass)[0, 1] for j in range(logits.shape[1])]))
            name = "real" if k == 0 else f"permutation {k}"
            print(
                f"{name:17s} {auc(plain):17.3f} {auc(tta):5.3f} {auc(many):5.3f} x {args.views:<3d}"
                f"| {cos:21.3f} {corr:20.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
