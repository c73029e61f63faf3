"""The figures (seaborn). Plot settings come from config['plots'] and only the plotting rule reads them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator  # noqa: E402

from smalldl.utils import atomic_path  # noqa: E402


def auc_vs_size(
    summary: pd.DataFrame,
    options: Mapping[str, Any],
    outputs: Sequence[str | Path],
    title: str = "Test AUC vs training size",
) -> None:
    """Test AUC against training-set size, one line per recipe (mean over seeds with a band),
    one panel per task and a column per architecture."""
    sns.set_theme(style=options["style"], context=options["context"])
    data = summary.copy()
    data["recipe"] = data["recipe"].astype(str)
    tasks = list(dict.fromkeys(data["task"]))
    archs = list(dict.fromkeys(data["arch"]))
    fig, axes = plt.subplots(
        len(archs), len(tasks), figsize=(4.2 * len(tasks), 3.4 * len(archs)), squeeze=False, sharex=True
    )
    errorbar = options["errorbar"] if options["errorbar"] != "ci" else ("ci", 95)
    for i, arch in enumerate(archs):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            part = data[(data["task"] == task) & (data["arch"] == arch)]
            sns.lineplot(
                data=part,
                x="n",
                y="test_auc",
                hue="recipe",
                marker="o",
                errorbar=errorbar,
                ax=ax,
                legend=(i == 0 and j == len(tasks) - 1),
            )
            ax.set_xscale("log")
            sizes = sorted(part["n"].unique())
            ax.xaxis.set_major_locator(FixedLocator(sizes))
            ax.xaxis.set_major_formatter(FixedFormatter([str(v) for v in sizes]))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_title(f"{task} ({arch})")
            ax.set_xlabel("training images")
            ax.set_ylabel("test AUC" if j == 0 else "")
    handles = axes[0][-1].get_legend()
    if handles is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="recipe", frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    for out in outputs:
        out = Path(out)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=options["dpi"], bbox_inches="tight", format=out.suffix.lstrip("."))
    plt.close(fig)
