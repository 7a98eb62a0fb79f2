"""The study's figures, drawn with matplotlib into PNG files: learning curves, per-layer evidence, confusion matrices
and the multi-seed aggregate's error bars.

Each function takes plain tables (pandas, dicts) and a path, draws, and returns; it decides nothing about what the
numbers mean (that is depthstudy.findings) and writes no text around them (depthstudy.report, depthstudy.aggregate).
"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

CURVES = ["train/loss", "val/loss", "train/acc", "val/acc"]
# plots/layers.tsv's evidence columns → the layer panel's title and y-axis label
LAYER_PANELS = {
    "grad_norm": ("Gradient norm", "mean L2 norm of the weight gradient"),
    "act_std": ("Activation std", "mean std of the layer's output"),
    "update_ratio": ("Relative weight update", "‖ΔW‖ / ‖W‖ over the epoch"),
}


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(histories: dict[str, pd.DataFrame], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation; ``histories``: model → one row per epoch (index 1, 2, …)."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, metric in zip(axes.flat, CURVES):
        for name, history in histories.items():
            ax.plot(history.index, history[metric], marker="o", markersize=3, label=name)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend()
    _save(fig, path)


def plot_layers(layers: dict[str, pd.DataFrame], path: Path) -> None:
    """Per weight layer, one panel per evidence column (log y): epoch 1 solid, the last epoch dashed, a colour per
    model. ``layers``: model → plots/layers.tsv. Values ≤ 0 or not finite have no place on a log axis: they are left
    out (gaps in the line), and a panel with no positive value at all says so instead of drawing an empty log axis.
    """
    fig, axes = plt.subplots(1, len(LAYER_PANELS), figsize=(16, 4.8), sharex=True)
    for ax, (column, (title, ylabel)) in zip(axes, LAYER_PANELS.items()):
        drawn = False
        for i, (name, table) in enumerate(layers.items()):
            last = table["epoch"].max()
            for epoch, style in ((1, "-"), (last, "--")) if last > 1 else ((1, "-"),):
                rows = table[table["epoch"] == epoch].sort_values("layer")
                values = rows[column].to_numpy(dtype=float)
                values = np.where(np.isfinite(values) & (values > 0), values, np.nan)
                drawn |= bool(np.isfinite(values).any())
                ax.plot(rows["layer"], values, style, color=f"C{i}", marker=".", label=f"{name}, epoch {epoch}")
        if drawn:
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no value above 0", transform=ax.transAxes, ha="center", va="center")
        ax.set_title(title)
        ax.set_xlabel("weight layer (0 = nearest the input)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    _save(fig, path)


def plot_confusions(confusions: dict[str, tuple[list[list[int]], float]], classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrices (rows = true class), one panel per model; ``confusions``: model →
    (confusion matrix, test accuracy for the title)."""
    fig, axes = plt.subplots(1, len(confusions), figsize=(4.6 * len(confusions), 4.4), squeeze=False)
    for ax, (name, (matrix, acc)) in zip(axes[0], confusions.items()):
        cm = np.asarray(matrix, dtype=float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{name}: test acc {acc:.2f}")
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    _save(fig, path)


def plot_aggregate(seeds: pd.DataFrame, path: Path, chance: float | None = None) -> None:
    """Accuracy per configuration (one row each) and model over seeds: each seed a small circle, the mean a dot with
    a ±1 sample std bar (no bar for one seed). ``seeds``: one row per run and model, columns config (its label),
    model, val, test. One panel per split; ``chance`` draws a dotted line at 1/num_classes.
    """
    configs = list(dict.fromkeys(seeds["config"]))
    models = list(dict.fromkeys(seeds["model"]))
    height = 0.8 / len(models)  # the models of one configuration stacked around its row
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.2 + 0.5 * len(configs) * max(1, len(models) / 2)), sharey=True)
    for ax, split in zip(axes, ("val", "test")):
        for j, model in enumerate(models):
            for k, config in enumerate(configs):
                values = seeds[(seeds["config"] == config) & (seeds["model"] == model)][split].dropna().to_numpy()
                if not len(values):
                    continue
                y = k + (j - (len(models) - 1) / 2) * height
                std = values.std(ddof=1) if len(values) > 1 else math.nan
                # the seeds just below their mean's bar, so that neither hides the other
                ax.scatter(values, np.full(len(values), y + 0.3 * height), s=18, facecolors="none", edgecolors=f"C{j}")
                ax.errorbar(values.mean(), y, xerr=None if math.isnan(std) else std, fmt="o", color=f"C{j}",
                            capsize=4, label=model if k == 0 else None)
        if chance is not None:
            ax.axvline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_title(f"{split} accuracy: mean ± std over seeds (circles: seeds)", fontsize=10)
        ax.set_xlabel("accuracy")
        ax.set_xlim(0, 1.02)  # the whole scale, so that configurations and splits compare at a glance
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(configs)), [c.replace(", ", "\n") for c in configs], fontsize=8)
    axes[0].invert_yaxis()  # the first configuration (the reference) on top, as in the table
    axes[1].legend(fontsize=8, loc="best")
    _save(fig, path)


def plot_errors(nets: list[tuple[str, int, bool, pd.DataFrame]], path: Path, lr_drops: list[float] = ()) -> None:
    """He et al. 2015's Fig. 6: training and validation error per epoch, one colour per depth, dashed for plain nets;
    dotted grey lines where the learning rate drops. ``nets``: (label, depth, residual, history) per model."""
    colour = {depth: f"C{i}" for i, depth in enumerate(sorted({depth for _, depth, _, _ in nets}))}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, metric, title in ((axes[0], "train/acc", "training error (running, augmented batches)"),
                              (axes[1], "val/acc", "validation error")):
        for name, depth, residual, history in nets:
            ax.plot(history.index, 100 * (1 - history[metric]), "-" if residual else "--", color=colour[depth],
                    label=name)
        for epoch in lr_drops:  # + 0.5: an epoch's point (x = k) stands for its middle update, (k - 0.5) × steps
            ax.axvline(epoch + 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error (%)")
    axes[1].legend()
    _save(fig, path)

