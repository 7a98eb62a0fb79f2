"""Turn the metrics files into the study's report: tables (pandas), figures (matplotlib), computed findings.

Reads only what the stages wrote (dvclive directories, evaluate's JSON, the data's meta.json) and params;
it never runs a model.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from depthstudy.params import DataParams, FCParams, Params, ResNetParams, TrainParams  # noqa: E402

HISTORY = ["train/loss", "val/loss", "train/acc", "val/acc", "val/precision", "val/recall"]
SEED_COLUMNS = ["Train Loss", "Val Loss", "Train Accuracy", "Val Accuracy", "Precision", "Recall"]
SEED_EPOCHS = 5  # the seed report tabulated its first five epochs


@dataclass
class Run:
    """Everything the train stage recorded for one model."""

    name: str
    history: pd.DataFrame  # one row per epoch (1-based index), columns HISTORY
    grads: pd.DataFrame  # plots/layers.tsv: step, epoch, layer, name, grad_norm, act_std, update_ratio
    info: dict  # run.json: params_count, device, torch_version, data_source, threads, epoch_seconds, images_per_s


def merge_meta(paths: list[Path]) -> dict:
    """One description of the data from the split directories' meta.json files (counts of every split)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    meta = {**parts[0], "counts": {}, "class_counts": {}}
    for part in parts:
        meta["counts"].update(part["counts"])
        meta["class_counts"].update(part["class_counts"])
    return meta


def load_run(live_dir: Path) -> Run:
    columns = {}
    for metric in HISTORY:
        tsv = pd.read_csv(live_dir / "plots" / "metrics" / f"{metric}.tsv", sep="\t")
        columns[metric] = tsv.set_index("step")[metric.split("/")[-1]]
    history = pd.DataFrame(columns)
    history.index = history.index + 1  # dvclive counts steps from 0; epochs count from 1
    history.index.name = "epoch"
    return Run(
        name=live_dir.name,
        history=history,
        grads=pd.read_csv(live_dir / "plots" / "layers.tsv", sep="\t"),
        info=json.loads((live_dir / "run.json").read_text()),
    )


# --- tables -----------------------------------------------------------------------------------------------------------


def epoch_table(runs: list[Run]) -> pd.DataFrame:
    """The seed's table: each model's first five epochs, then its final and its best (by val accuracy) epoch."""
    rows = []
    for run in runs:
        h = run.history
        picks = [(str(e), e) for e in h.index[:SEED_EPOCHS]]
        picks += [(f"final ({h.index[-1]})", h.index[-1]), (f"best ({h['val/acc'].idxmax()})", h["val/acc"].idxmax())]
        for label, epoch in picks:
            rows.append({"Model": run.name, "Epoch": label, **dict(zip(SEED_COLUMNS, h.loc[epoch, HISTORY]))})
    return pd.DataFrame(rows)


def test_table(test: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [{"Model": name, "Accuracy": m["acc"], "Precision": m["precision"], "Recall": m["recall"], "F1": m["f1"]}
         for name, m in test.items()]
    )


def markdown(df: pd.DataFrame) -> str:
    """A pipe table (without pandas' optional tabulate dependency); floats to 4 decimals."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


# --- findings ---------------------------------------------------------------------------------------------------------


def grad_ratio(run: Run, epoch: int) -> tuple[float, float]:
    """(first layer's, last layer's) mean weight-gradient norm in ``epoch``."""
    g = run.grads[run.grads["epoch"] == epoch].sort_values("layer")["grad_norm"].to_numpy()
    return float(g[0]), float(g[-1])


def findings(runs: list[Run], test: dict, num_classes: int) -> list[str]:
    """Sentences computed from the numbers, one per observation."""
    chance = 1 / num_classes
    lines = []
    for run in runs:
        final = run.history["val/acc"].iloc[-1]
        best_epoch = run.history["val/acc"].idxmax()
        verdict = "at chance" if final < 1.5 * chance else f"{final / chance:.1f}× chance"
        lines.append(
            f"{run.name} val accuracy {final:.2f} after {len(run.history)} epochs — {verdict} for {num_classes} "
            f"classes ({chance:.2f}); best {run.history['val/acc'].max():.2f} at epoch {best_epoch}; "
            f"test accuracy {test[run.name]['acc']:.2f}."
        )
    for run in runs:
        first, last = grad_ratio(run, 1)
        orders = math.log10(last / first) if first > 0 and last > 0 else math.inf
        if orders >= 6:
            state = f"{orders:.0f} orders of magnitude below its last layer's ({last:.1e}): the gradient vanishes"
        elif orders >= 1:
            state = f"{orders:.1f} orders of magnitude below its last layer's ({last:.1e}): the gradient shrinks"
        else:
            state = f"{first / last:.2g}× its last layer's ({last:.1e}): the gradient reaches the input"
        n = run.grads["layer"].nunique()
        lines.append(f"{run.name}, epoch 1: the first of {n} weight layers gets a mean gradient norm of {first:.1e}, "
                     f"{state}.")
    ranked = sorted(runs, key=lambda r: test[r.name]["acc"], reverse=True)
    lines.append("Test accuracy ranks " + " > ".join(f"{r.name} ({test[r.name]['acc']:.3f})" for r in ranked) + ".")
    return lines


def caveats(params: Params, meta: dict) -> list[str]:
    """Where this run departs from the seed's settings (which are params.yaml's defaults)."""
    notes = []
    if meta["source"] != "cifar10":
        source = meta["source"]
        notes.append(f"Data: the offline `{source}` sample, not CIFAR-10: numbers are not comparable to the seed's.")
    for group, seed in (("data", DataParams()), ("train", TrainParams())):
        for key, value in asdict(getattr(params, group)).items():
            if key not in ("url", "md5", "source", "device", "threads") and value != getattr(seed, key):
                notes.append(f"`{group}.{key}` is {value} (the seed used {getattr(seed, key)}).")
    seed_models = {"fc20": FCParams(depth=20), "fc56": FCParams(depth=56), "resnet18": ResNetParams()}
    for name, spec in params.models.items():
        for key, value in asdict(spec).items():
            seed_value = getattr(seed_models.get(name), key, value)
            if value != seed_value:
                notes.append(f"`models.{name}.{key}` is {value} (the seed used {seed_value}).")
    notes.append("The seed does not state its dropout probability; this study assumes 0.5 unless params say otherwise.")
    return notes


# --- figures ----------------------------------------------------------------------------------------------------------


def plot_curves(runs: list[Run], path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, metric in zip(axes.flat, ["train/loss", "val/loss", "train/acc", "val/acc"]):
        for run in runs:
            ax.plot(run.history.index, run.history[metric], marker="o", markersize=3, label=run.name)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_grads(runs: list[Run], path: Path) -> None:
    """Mean weight-gradient norm per layer (log scale), first epoch solid, last epoch dashed."""
    fig, ax = plt.subplots(figsize=(11, 5))
    for i, run in enumerate(runs):
        colour = f"C{i}"
        last = run.grads["epoch"].max()
        for epoch, style in ((1, "-"), (last, "--")):
            g = run.grads[run.grads["epoch"] == epoch].sort_values("layer")
            ax.plot(g["layer"], g["grad_norm"], style, color=colour, marker=".", label=f"{run.name}, epoch {epoch}")
    ax.set_yscale("log")
    ax.set_xlabel("weight layer (0 = nearest the input)")
    ax.set_ylabel("mean L2 norm of the weight gradient")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusions(test: dict, classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrices (rows = true class), one panel per model."""
    fig, axes = plt.subplots(1, len(test), figsize=(4.6 * len(test), 4.4), squeeze=False)
    for ax, (name, m) in zip(axes[0], test.items()):
        cm = np.asarray(m["confusion"], dtype=float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{name}: test acc {m['acc']:.2f}")
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the report -------------------------------------------------------------------------------------------------------


def run_info(runs: list[Run], eval_seconds: dict[str, float], params: Params, meta: dict) -> list[str]:
    first = runs[0].info
    lines = [
        f"data: `{meta['source']}`, " + ", ".join(f"{k} {v}" for k, v in meta["counts"].items()) + " images",
        f"device: {first['device']}, torch {first['torch_version']}, {first['threads']} CPU thread(s)",
        f"train: {asdict(params.train)}",
    ]
    for run in runs:
        lines.append(
            f"{run.name}: {asdict(params.models[run.name])}, {run.info['params_count']:,} parameters, "
            f"training {sum(run.info['epoch_seconds']):.1f} s, evaluation {eval_seconds[run.name]:.1f} s"
        )
    return lines


def bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def write_report(
    out_dir: Path, runs: list[Run], test: dict, eval_seconds: dict[str, float], params: Params, meta: dict
) -> None:
    """Write report.md and its PNG figures into ``out_dir``."""
    plot_curves(runs, out_dir / "learning_curves.png")
    plot_grads(runs, out_dir / "grad_norms.png")
    plot_confusions(test, meta["classes"], out_dir / "confusion.png")
    text = f"""# Depth study: plain fully connected nets vs ResNet-18

After a student's report on He et al. 2015, "Deep Residual Learning for Image Recognition". Made by the
`report` stage from the metrics files; every number below is read from them.

## Findings

{bullets(findings(runs, test, len(meta["classes"])))}

## Per-epoch metrics (validation split; precision and recall are macro averages)

{markdown(epoch_table(runs))}

## Test metrics

{markdown(test_table(test))}

## Learning curves

![learning curves](learning_curves.png)

## Gradient flow

Mean L2 norm of each weight layer's gradient over an epoch's steps, first epoch (solid) and last (dashed).
A first layer many orders of magnitude below the last means the early layers barely learn.

![gradient norms](grad_norms.png)

## Confusion matrices (test split, rows normalised)

![confusion matrices](confusion.png)

## Run info

{bullets(run_info(runs, eval_seconds, params, meta))}

## Caveats

{bullets(caveats(params, meta))}
"""
    (out_dir / "report.md").write_text(text)
