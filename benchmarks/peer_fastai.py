"""Our trainer and input pipeline against the peer, fastai, in one invocation.

(a) The demo's six Emphysema runs (config.yaml: synthetic chest phantoms, EfficientNet-Lite0 from the
packaged ImageNet weights, recipe onecycle-finetune-imagenet-transfer, n 50/100/200 x seeds 0/1, the demo's
train settings) in our trainer (the library calls of the finetune job: fit, then the test and validation
passes with test-time augmentation) and the same runs written in fastai: the same model object and initial
weights (one copy each), the same training subset, validation and test sets (the cached images, in memory),
fit_one_cycle with our max_lr / div / final_div / pct_start / moms, torch's AdamW with our weight decay on
every parameter, the best epoch by validation loss (SaveModelCallback), the same augmentation as one affine
resampling (random crop, flip, rotation +-10 degrees, zero padding), the same format (channels_last /
bf16 as the job measures it) and the same TTA (the centre crop plus 4 views, averaged: ``tta(beta=1/5)``).
Ours and fastai alternate run by run (the first of each pair alternates too) so that both share the
machine's noise. Wall time per run = training + evaluation with TTA, without the one-time data preparation
(dataset, cache, splits, subsets, weights), the model build and the data loaders; the process's CPU time
over the same span is printed next to it (other processes on a shared machine move it less). Target:
fastai/ours >= 1.3 at test AUCs within noise. --profile adds one more run of ours under cProfile.

(b) The input pipeline at the paper's settings (width 250, crop 236, flip, rotation 10, batch 16): images/s
delivered by our cached pipeline (the uint8 memmap of smalldl.data.cache, a batch read per step, and
smalldl.data.transforms' to_tensor + augment as the trainer calls them) against fastai's DataLoader from PNG
files (DataBlock with Resize(250) + RandomCrop(236), Flip, Rotate(10); --workers worker processes, which
fastai's DataLoader starts anew every epoch) on the same images, each with 1 and with --workers torch
threads in the process that augments (ours: its only one; fastai: the main one, where batch transforms run),
the best of each. Batches after a warm-up count. Target: ours >= 5x fastai.

fastai is an optional extra: ``pip install -e ".[bench]"``.

    python benchmarks/peer_fastai.py              # both parts: 7 min on 2 CPU cores at load 4, 25 at load 13
    python benchmarks/peer_fastai.py --quick      # one run of (a) and short pipeline runs: a smoke test
    python benchmarks/peer_fastai.py --runs 2 --workers 4
"""

import argparse
import contextlib
import copy
import functools
import gc
import io
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

INSTALL_HINT = (
    "fastai is not installed; this benchmark needs the optional 'bench' extra:\n"
    '    pip install -e ".[bench]"      (from the repository root)'
)
TASK, ARCH, RECIPE = "emphysema", "efficientnet_lite0", "onecycle-finetune-imagenet-transfer"
TARGET_TRAINING, TARGET_PIPELINE = 1.3, 5.0
#: the paper's input settings (part b)
PAPER_WIDTH, PAPER_CROP, PAPER_ROTATE, PAPER_BATCH = 250, 236, 10.0, 16


def fastai_missing() -> bool:
    """True when fastai cannot be imported (it is imported here only, and only when a benchmark runs)."""
    try:
        import fastai  # noqa: F401
    except ImportError:
        return True
    return False


def tta_beta(views: int) -> float:
    """fastai's ``tta`` returns ``lerp(mean of the augmented views, the plain prediction, beta)``; ours is the
    mean of the plain prediction and ``views`` augmented views: equal with beta = 1 / (views + 1)."""
    return 1.0 / (views + 1)


def run_pairs(pairs: list[tuple[int, int]], limit: int | None) -> list[tuple[int, int]]:
    return pairs if limit is None else pairs[:limit]


def run_plan(pairs: list[tuple[int, int]], repeats: int) -> list[tuple[int, int, int]]:
    """(n, seed, repeat) in the order run: every pair once (repeat 0, the runs the demo makes), then again
    with repeat 1, and so on; repeat r runs with the job's run seed + r (another head and another training
    draw on the same subset)."""
    return [(n, seed, r) for r in range(repeats) for n, seed in pairs]


def auc_verdict(diff: np.ndarray, level: float = 0.95) -> tuple[float, float, str]:
    """The two-sided ``level`` t-interval of the mean paired difference ours - fastai of test AUCs, and the
    verdict it supports: "within noise" when it covers 0, else "ours lower" or "ours higher" (fewer than two
    runs: no interval, "one run: no verdict")."""
    from scipy import stats

    if len(diff) < 2:
        return math.nan, math.nan, "one run: no verdict"
    half = float(stats.t.ppf(0.5 + level / 2, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff)))
    low, high = float(diff.mean()) - half, float(diff.mean()) + half
    return low, high, "ours lower" if high < 0 else "ours higher" if low > 0 else "within noise"


# ------------------------------------------------------------------------------------------ data (a)


def prepare_demo(folder: Path, config: dict, workers: int, pairs: list[tuple[int, int]]) -> None:
    """The demo's Emphysema data as the workflow makes it, in ``folder``: synthetic chest phantoms, their
    index and cache (preprocess.width), the patient-level split, the training subsets of ``pairs`` (n, seed)
    and the ImageNet weights as a source checkpoint (``config``: the loaded demo config). The phantoms and
    the cache are kept when ``folder`` holds them already (--workdir)."""
    from smalldl.jobs import data as data_jobs
    from smalldl.jobs import pretrain as pretrain_jobs
    from smalldl.jobs import splits as split_jobs
    from smalldl.utils import derive_seed

    task = config["tasks"][TASK]
    name = task["dataset"]
    dataset = config["datasets"][name]
    quiet = contextlib.redirect_stderr(io.StringIO())
    with quiet:
        raw = folder / "raw"
        if not (raw / "index.csv").is_file():
            seed = derive_seed(config["seed"], "dataset", name)
            data_jobs.generate_synthetic(dataset=dataset, out_dir=raw, seed=seed, workers=workers)
        data_jobs.index(dataset_name=name, dataset=dataset, raw=raw, out_parquet=folder / "index.parquet")
        if not (folder / "cache.json").is_file():
            data_jobs.cache(
                index_parquet=folder / "index.parquet",
                out_npy=folder / "cache.npy",
                out_meta=folder / "cache.json",
                width=config["preprocess"]["width"],
                aspect=config["preprocess"]["aspect"],
                workers=workers,
            )
        split_jobs.split(
            task_name=TASK,
            task=task,
            global_seed=config["seed"],
            index_parquet=folder / "index.parquet",
            excluded_from=[],
            out_split=folder / "split.parquet",
            out_manifest=folder / "manifest.json",
        )
        for n, seed in pairs:
            split_jobs.subset(
                task_name=TASK,
                task=task,
                global_seed=config["seed"],
                split_parquet=folder / "split.parquet",
                n=n,
                seed=seed,
                out_csv=folder / f"subset_n{n}_s{seed}.csv",
                out_json=folder / f"subset_n{n}_s{seed}.json",
            )
        source = config["sources"]["imagenet"]
        pretrain_jobs.imagenet_weights(
            source="imagenet",
            arch=ARCH,
            files=source.get("files") or {},
            out_ckpt=folder / "imagenet.pt",
            out_metrics=folder / "imagenet.json",
        )


# ------------------------------------------------------------------------------------------- ours (a)


def run_ours(model, train, val, test, settings, *, labels, device, run_seed, max_lr, checkpoint) -> dict:
    """What the finetune job does after building the model: fit (best epoch by validation loss, a resume
    checkpoint per epoch when settings say so), then one test pass (centre crop + TTA views) and the
    validation TTA pass. Returns wall seconds and the test AUCs."""
    from smalldl.evaluate import evaluate, evaluate_views
    from smalldl.train import Hooks, Run, fit
    from smalldl.utils import derive_seed

    kind, views = "binary", int(settings["tta"])
    t0, c0 = time.perf_counter(), time.process_time()
    with open(os.devnull, "w") as log:
        result = fit(
            model,
            train,
            val,
            settings,
            Run(task_type=kind, labels=labels, seed=run_seed, max_lr=max_lr, checkpoint=checkpoint, signature="b"),
            Hooks(log=log),
        )
    tta_seed = derive_seed(run_seed, "tta")
    test_sc, test_tta = evaluate_views(
        model, test, settings, device=device, task_type=kind, labels=labels, tta=views, seed=tta_seed
    )
    if views > 0:
        evaluate(model, val, settings, device=device, task_type=kind, labels=labels, tta=views, seed=tta_seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "auc": test_sc["auc"],
        "auc_tta": test_tta["auc"] if test_tta else test_sc["auc"],
        "best_epoch": result["best_epoch"],
    }


# ----------------------------------------------------------------------------------------- fastai (a)


def fastai_loaders(train, val, test, settings, device, eval_bs: int, seed: int):
    """fastai DataLoaders on the same cached images (in memory, uint8): batch transforms IntToFloatTensor,
    then one affine resampling: for training the random crop of ``crop`` (a fixed zoom with a random centre),
    flip p=0.5, rotation +-rotate degrees, zero padding; for validation and test the centre crop. fastai's
    random state (its loaders' shuffling) from ``seed``. Returns (dls, test_dl)."""
    import torch
    from fastai.vision.all import (
        Datasets,
        Flip,
        IntToFloatTensor,
        Rotate,
        TensorImageBW,
        Zoom,
        set_seed,
        setup_aug_tfms,
    )

    set_seed(seed)  # python's random (the loaders' shuffling), numpy and torch
    crop, rotate = int(settings["crop"]), float(settings["rotate"])
    images = np.concatenate([train.images, val.images, test.images])
    targets = np.concatenate([train.targets, val.targets, test.targets]).astype(np.float32)
    n_tr, n_va = len(train), len(val)
    h, w = images.shape[1:3]

    def get_x(i):
        return TensorImageBW(torch.from_numpy(images[i]).unsqueeze(0))

    def get_y(i):
        return torch.from_numpy(targets[i].reshape(-1))

    class CropZoom(Zoom):
        """The crop as a fixed zoom (crop/width of the image, a random centre) for training, and the centre
        crop for validation and test: fastai's affine transforms resample those with the identity at their
        output size, which would resize the whole image to the crop instead."""

        def _get_affine_mat(self, x):
            if not self.split_idx:
                return super()._get_affine_mat(x)
            mat = torch.zeros(x.size(0), 2, 3, device=x.device, dtype=x.dtype)
            mat[:, 0, 0] = mat[:, 1, 1] = crop / w  # square images: no aspect correction
            return mat

    pad = {"pad_mode": "zeros", "align_corners": False}
    augment = [
        CropZoom(min_zoom=w / crop, max_zoom=w / crop, p=1.0, size=crop, **pad),  # first: the merge keeps its size
        *([Flip(p=0.5, **pad)] if settings["flip"] else []),
        *([Rotate(max_deg=rotate, p=1.0, **pad)] if rotate else []),
    ]
    assert h == w, "square cache images"
    dsets = Datasets(
        list(range(n_tr + n_va)),
        tfms=[[get_x], [get_y]],
        splits=(list(range(n_tr)), list(range(n_tr, n_tr + n_va))),
    )
    dls = dsets.dataloaders(
        bs=int(settings["batch_size"]),
        val_bs=eval_bs,
        after_batch=[IntToFloatTensor(), *setup_aug_tfms(augment)],  # one resampling per batch
        drop_last=False,  # as ours: every training image every epoch
        num_workers=0,  # in memory, as ours: no worker processes
        device=device,
    )
    test_dl = dls.test_dl(list(range(n_tr + n_va, len(images))), with_labels=True, bs=eval_bs)
    return dls, test_dl


def run_fastai(model, dls, test_dl, settings, *, formats, run_seed, max_lr, folder) -> dict:
    """The run in fastai: Learner(model, BCE with logits, torch's AdamW, wd on every parameter, the ROC AUC
    on validation every epoch), fit_one_cycle, the best epoch by validation loss, TTA on test and validation."""
    import torch
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.fp16 import AMPMode, MixedPrecision
    from fastai.metrics import ActivationType
    from fastai.vision.all import (
        BCEWithLogitsLossFlat,
        Callback,
        Learner,
        OptimWrapper,
        SaveModelCallback,
        partial,
        skm_to_fastai,
    )
    from sklearn.metrics import roc_auc_score

    from smalldl.metrics import roc_auc_score as our_auc

    class CpuBf16(Callback):  # fastai's MixedPrecision autocasts CUDA only; the job's bf16 on a CPU
        order = MixedPrecision.order

        def before_batch(self):
            self.ctx = torch.autocast("cpu", dtype=torch.bfloat16)
            self.ctx.__enter__()

        def after_loss(self):
            self.ctx.__exit__(None, None, None)

    views = int(settings["tta"])
    cbs = [SaveModelCallback(monitor="valid_loss", fname="best", with_opt=False)]
    if formats["channels_last"] == "on":
        cbs.append(ChannelsLast())
    if formats["amp"] == "bf16":
        cbs.append(MixedPrecision(AMPMode.BF16) if dls.device.type == "cuda" else CpuBf16())
    torch.manual_seed(run_seed)
    t0, c0 = time.perf_counter(), time.process_time()
    learn = Learner(
        dls,
        model,
        loss_func=BCEWithLogitsLossFlat(),
        opt_func=partial(OptimWrapper, opt=torch.optim.AdamW),
        wd=settings["weight_decay"],
        wd_bn_bias=True,  # as ours: weight decay on every parameter
        metrics=[skm_to_fastai(roc_auc_score, is_class=False, activation=ActivationType.Sigmoid)],
        path=folder,
        model_dir=".",
        cbs=cbs,
    )
    m0, m1 = settings["moms"]
    with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(io.StringIO()):  # "Better model found"
        learn.fit_one_cycle(
            int(settings["epochs"]),
            lr_max=max_lr,
            div=settings["div_factor"],
            div_final=settings["final_div"],
            pct_start=settings["pct_start"],
            moms=(m0, m1, m0),
        )
        prob, y = learn.tta(dl=test_dl, n=views, beta=tta_beta(views))
        if views > 0:
            learn.tta(dl=dls.valid, n=views, beta=tta_beta(views))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "auc_tta": our_auc(y.numpy().ravel(), prob.float().numpy().ravel())}


# ---------------------------------------------------------------------------------------------- part a


def part_a(args, folder: Path) -> dict:

    from smalldl.config import Recipe
    from smalldl.config import load as load_config
    from smalldl.evaluate import eval_batch_size
    from smalldl.jobs._shared import build_recipe_model, choose_formats, target_data, training_torch
    from smalldl.utils import derive_seed

    t_prep = time.perf_counter()
    config = load_config(args.config)
    pairs = run_pairs([(n, s) for n in config["study"]["sizes"] for s in config["study"]["seeds"]], args.runs)
    plan = run_plan(pairs, args.repeats)
    prepare_demo(folder, config, args.workers, pairs)
    task = config["tasks"][TASK]
    settings = dict(config["train"])
    threads = args.threads if args.threads is not None else int(settings["threads"])
    recipe = Recipe.parse(RECIPE)
    print(f"(a) data prepared in {time.perf_counter() - t_prep:.0f} s (not timed below)", flush=True)
    rows = []

    def setup(n: int, seed: int, device, repeat: int = 0):
        """What the finetune job does before fit: the run's data from the cache, its model (the ImageNet
        body, a new head, seeded by the run's seed, + ``repeat``) and its measured formats."""
        _, train, val, test = target_data(
            task=task,
            split_parquet=folder / "split.parquet",
            subset_csv=folder / f"subset_n{n}_s{seed}.csv",
            cache_npy=folder / "cache.npy",
            cache_meta=folder / "cache.json",
            n=n,
        )
        run_seed = derive_seed(config["seed"], "run", TASK, ARCH, RECIPE, n, seed) + repeat
        model, _, _ = build_recipe_model(
            task=task, arch=ARCH, recipe=recipe, source_ckpt=folder / "imagenet.pt", seed=run_seed
        )
        model = model.to(device)
        with contextlib.redirect_stderr(io.StringIO()):
            run_settings, formats = choose_formats(settings, model=model, device=device, arch=ARCH)
        return train, val, test, run_seed, model, run_settings, formats

    def ours(train, val, test, run_seed, model, run_settings, device):
        ckpt = folder / "resume.pt" if run_settings["checkpoint"] else None  # as the job: one per run
        out = run_ours(
            model, train, val, test, run_settings, labels=list(task["labels"]), device=device, run_seed=run_seed,
            max_lr=float(run_settings["max_lr"]), checkpoint=ckpt,
        )  # fmt: skip
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
        return out

    with training_torch(settings, threads, job="peer benchmark") as (_, device, _slot):
        for k, (n, seed, repeat) in enumerate(plan):
            train, val, test, run_seed, model, run_settings, formats = setup(n, seed, device, repeat)
            peer_model = copy.deepcopy(model)  # the same model object and initial weights for fastai
            dls, test_dl = fastai_loaders(
                train, val, test, run_settings, device, eval_batch_size(run_settings, device), run_seed
            )
            if k == 0:
                fmt = ("bf16" if formats["amp"] == "bf16" else "fp32") + (
                    "+channels_last" if formats["channels_last"] == "on" else ""
                )
                print(
                    f"(a) {TASK}, {ARCH}, {RECIPE}: {settings['epochs']} epochs, batch {settings['batch_size']}, "
                    f"crop {settings['crop']} of width {config['preprocess']['width']}, max_lr {settings['max_lr']}, "
                    f"TTA {settings['tta']}; val {len(val)}, test {len(test)} images; {device}, {threads} "
                    f"thread(s), {fmt}; fastai {fastai_version()}",
                    flush=True,
                )
                print(f"{'':>21} {'wall s':^26} {'CPU s':^26} {'test AUC (TTA)':^21}")
                print(f"{'n':>5} {'seed':>4} {'rep':>3} {'first':>6} " + f"{'ours':>8} {'fastai':>8} {'ratio':>8} " * 2
                      + f"{'ours':>10} {'fastai':>10}")  # fmt: skip
            jobs = {
                "ours": functools.partial(ours, train, val, test, run_seed, model, run_settings, device),
                "fastai": functools.partial(
                    run_fastai, peer_model, dls, test_dl, run_settings, formats=formats, run_seed=run_seed,
                    max_lr=float(run_settings["max_lr"]), folder=folder,
                ),
            }  # fmt: skip
            order = ["ours", "fastai"] if k % 2 == 0 else ["fastai", "ours"]
            out = {}
            for name in order:  # the garbage of the previous run (fastai's Learner holds cycles) collected untimed
                gc.collect()
                out[name] = jobs[name]()
            a, b = out["ours"], out["fastai"]
            row = {"n": n, "seed": seed, "repeat": repeat, "first": order[0], "ours": a, "fastai": b}
            rows.append(row)
            times = "".join(f"{a[t]:8.1f} {b[t]:8.1f} {b[t] / a[t]:8.2f} " for t in ("wall_s", "cpu_s"))
            print(
                f"{n:>5} {seed:>4} {repeat:>3} {order[0]:>6} {times}{a['auc_tta']:10.4f} {b['auc_tta']:10.4f}",
                flush=True,
            )
            del model, peer_model, dls, test_dl, jobs
        summary = summarise_a(rows)
        if args.profile:  # one more run of ours, the first (n, seed), under cProfile; not in the totals
            import cProfile
            import pstats

            *run, model, run_settings, _ = setup(*pairs[0], device)
            profile = cProfile.Profile()
            profile.runcall(ours, *run, model, run_settings, device)
            print(f"(a) where our time goes (cProfile of one more run, n={pairs[0][0]} seed={pairs[0][1]}):")
            pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)
    return summary


def summarise_a(rows: list[dict]) -> dict:
    """Totals, the ratio fastai/ours of wall time (the target's) and of CPU time (the work, less sensitive to
    other processes on the machine), and the mean test AUCs (with TTA) with the mean paired difference, its
    95% interval and the verdict on it (``auc_verdict``: the noise the target is judged against)."""
    ours = sum(r["ours"]["wall_s"] for r in rows)
    peer = sum(r["fastai"]["wall_s"] for r in rows)
    cpu_ratio = sum(r["fastai"]["cpu_s"] for r in rows) / sum(r["ours"]["cpu_s"] for r in rows)
    auc_ours = np.array([r["ours"]["auc_tta"] for r in rows])
    auc_peer = np.array([r["fastai"]["auc_tta"] for r in rows])
    diff = auc_ours - auc_peer
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
    ratio = peer / ours
    print(
        f"(a) total wall time: ours {ours:.1f} s, fastai {peer:.1f} s over {len(rows)} run(s): fastai/ours "
        f"{ratio:.2f} (target >= {TARGET_TRAINING}); CPU time fastai/ours {cpu_ratio:.2f}"
    )
    low, high, verdict = auc_verdict(diff)
    print(
        f"(a) mean test AUC with TTA: ours {auc_ours.mean():.4f}, fastai {auc_peer.mean():.4f}; "
        f"paired difference {diff.mean():+.4f} (sd {sd:.4f}, 95% interval {low:+.4f} to {high:+.4f} over "
        f"{len(diff)} run(s)): {verdict}"
    )
    return {
        "auc_verdict": verdict,
        "auc_interval": (low, high),
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "ours_s": ours,
        "fastai_s": peer,
        "auc_ours": auc_ours,
        "auc_fastai": auc_peer,
    }


def fastai_version() -> str:
    import fastai

    return str(fastai.__version__)


# ---------------------------------------------------------------------------------------------- part b


def write_pngs(folder: Path, n: int, size: int) -> list[str]:
    """``n`` greyscale PNGs of ``size`` px: smooth anatomy-like structure plus noise (as radiographs
    compress), as benchmarks/cache_throughput.py writes them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cache_throughput", ROOT / "benchmarks" / "cache_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder.mkdir(parents=True, exist_ok=True)
    return module.make_images(folder, n, size)


def ours_pipeline_rate(arr: np.ndarray, *, batches: int, warmup: int, threads: int, seed: int = 0) -> float:
    """Images/s of our input pipeline over ``arr`` (the cache memmap): shuffled batches as ``make_batches``
    draws them, each read from the cache and augmented by ``to_tensor`` + ``augment`` at the paper's crop,
    flip and rotation, as ``train_one_epoch`` does; ``warmup`` batches first, not counted."""
    import torch

    from smalldl.data.transforms import augment, to_tensor
    from smalldl.train import make_batches

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    order: list[np.ndarray] = []
    done = images = 0
    t0 = 0.0
    while done < warmup + batches:
        if not order:
            order = make_batches(len(arr), PAPER_BATCH, rng)
        idx = order.pop(0)
        x = augment(to_tensor(arr[idx], device), PAPER_CROP, True, PAPER_ROTATE, gen)
        done += 1
        if done == warmup:
            t0 = time.perf_counter()
        elif done > warmup:
            images += x.shape[0]
    return images / (time.perf_counter() - t0)


def fastai_pipeline_rate(paths: list[str], *, batches: int, warmup: int, workers: int, threads: int) -> float:
    """Images/s of fastai's DataLoader from the PNG files: DataBlock(ImageBlock(PILImageBW)), item
    transforms Resize(250) + RandomCrop(236), batch transforms IntToFloatTensor + Flip + Rotate(10) (one
    affine resampling, zero padding, in the main process with ``threads`` torch threads); ``workers`` worker
    processes (fastai's DataLoader makes a new torch iterator every epoch, so they start anew each epoch:
    torch's persistent_workers cannot apply)."""
    import pandas as pd
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        ColReader,
        DataBlock,
        Flip,
        ImageBlock,
        IndexSplitter,
        PILImageBW,
        RandomCrop,
        Resize,
        Rotate,
        setup_aug_tfms,
    )

    torch.set_num_threads(threads)
    pad = {"pad_mode": "zeros", "align_corners": False}
    table = pd.DataFrame({"path": paths, "label": [i % 2 for i in range(len(paths))]})
    block = DataBlock(
        blocks=(ImageBlock(cls=PILImageBW), CategoryBlock),
        get_x=ColReader("path"),
        get_y=ColReader("label"),
        splitter=IndexSplitter([len(paths) - 1]),  # one validation image: only the training loader is timed
        item_tfms=[Resize(PAPER_WIDTH), RandomCrop(PAPER_CROP)],
        batch_tfms=setup_aug_tfms([Flip(p=0.5, **pad), Rotate(max_deg=PAPER_ROTATE, p=1.0, **pad)]),
    )
    dls = block.dataloaders(table, bs=PAPER_BATCH, num_workers=workers, device=torch.device("cpu"))
    done = images = 0
    t0 = 0.0
    while done < warmup + batches:
        for x, _ in dls.train:
            done += 1
            if done == warmup:
                t0 = time.perf_counter()
            elif done > warmup:
                images += x.shape[0]
            if done >= warmup + batches:
                break
    return images / (time.perf_counter() - t0)


def part_b(args, folder: Path) -> dict:
    import pandas as pd

    from smalldl.data import cache

    n = 64 if args.quick else args.images
    batches, warmup = (8, 2) if args.quick else (args.batches, 4)
    paths = sorted(str(p) for p in (folder / "png").glob("*.png"))
    if len(paths) != n:
        paths = write_pngs(folder / "png", n, args.png_size)
    index = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "path": paths})
    (folder / "b.json").unlink(missing_ok=True)
    with contextlib.redirect_stderr(io.StringIO()):
        cache.build_cache(index, folder / "b.npy", folder / "b.json", width=PAPER_WIDTH, aspect=None, workers=1)
    arr, _ = cache.open_cache(folder / "b.npy", folder / "b.json")
    print(
        f"(b) input pipeline: {n} PNGs of {args.png_size} px, width {PAPER_WIDTH}, crop {PAPER_CROP}, flip, "
        f"rotation {PAPER_ROTATE:g}, batch {PAPER_BATCH}, {args.workers} worker(s); {batches} batches after "
        f"{warmup} of warm-up",
        flush=True,
    )
    # Torch threads of the process that augments (ours: the only one; fastai: the main one, where its batch
    # transforms run): 1 and --workers, the same for both; on a loaded machine one thread can beat two.
    # Alternated, best of each.
    best = {"ours": (0.0, 0), "fastai": (0.0, 0)}
    for rep in range(1 if args.quick else 2):
        for threads in sorted({1, args.workers}):
            for name in ("ours", "fastai") if rep % 2 == 0 else ("fastai", "ours"):
                if name == "ours":
                    rate = ours_pipeline_rate(arr, batches=batches, warmup=warmup, threads=threads, seed=rep)
                else:
                    rate = fastai_pipeline_rate(
                        paths, batches=batches, warmup=warmup, workers=args.workers, threads=threads
                    )
                best[name] = max(best[name], (rate, threads))
                print(f"    {name:>6}, {threads} thread(s): {rate:9.1f} images/s", flush=True)
    (ours_best, ours_t), (peer_best, peer_t) = best["ours"], best["fastai"]
    ratio = ours_best / peer_best
    print(
        f"(b) ours (cache, {ours_t} thread(s)) {ours_best:.0f} images/s, fastai (PNG, {args.workers} workers, "
        f"{peer_t} thread(s)) {peer_best:.0f} images/s: ours/fastai "
        f"{ratio:.1f} (target >= {TARGET_PIPELINE:g})"
    )
    return {"ratio": ratio, "ours": ours_best, "fastai": peer_best}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one run of (a), short pipeline runs (a smoke test)")
    ap.add_argument("--runs", type=int, default=None, help="runs of (a), in order n 50/100/200 x seeds (default all 6)")
    ap.add_argument(
        "--repeats", type=int, default=1, metavar="R",
        help="(a): run each (n, seed) R times, with the run's seed + 0..R-1 (more runs, a narrower AUC interval)",
    )  # fmt: skip
    ap.add_argument("--workers", type=int, default=2, help="(b): fastai's worker processes")
    ap.add_argument(
        "--threads", type=int, default=None, help="(a): torch threads (default: the config's train.threads)"
    )
    ap.add_argument("--images", type=int, default=500, help="(b): PNGs written")
    ap.add_argument("--png-size", type=int, default=PAPER_WIDTH, help="(b): side of the PNGs")
    ap.add_argument("--batches", type=int, default=120, help="(b): batches timed per pipeline")
    ap.add_argument("--only", choices=["a", "b"], default=None, help="run one part only")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml", help="the demo's config")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the prepared data here (default: a temp dir)")
    ap.add_argument(
        "--profile", type=int, nargs="?", const=15, default=0, metavar="N",
        help="(a): profile one more run of ours with cProfile and print its N most expensive functions (15)",
    )  # fmt: skip
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.quick and args.runs is None:
        args.runs = 1
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, not {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if fastai_missing():
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min), "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    misses = []
    keep = contextlib.nullcontext(str(args.workdir)) if args.workdir else None
    with keep or tempfile.TemporaryDirectory(prefix="peer_fastai_") as tmp:
        if args.only in (None, "a"):
            a = part_a(args, Path(tmp) / "a")
            if a["ratio"] < TARGET_TRAINING:
                misses.append(f"(a) fastai/ours {a['ratio']:.2f} < {TARGET_TRAINING}")
            if a["auc_verdict"] == "ours lower":
                low, high = a["auc_interval"]
                misses.append(f"(a) ours' test AUC lower than fastai's (95% interval {low:+.4f} to {high:+.4f})")
        if args.only in (None, "b"):
            b = part_b(args, Path(tmp) / "b")
            if b["ratio"] < TARGET_PIPELINE:
                misses.append(f"(b) ours/fastai {b['ratio']:.1f} < {TARGET_PIPELINE:g}")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    print("FAIL: " + "; ".join(misses) if misses else "PASS: targets met")
    return 1 if misses and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
