"""Turn the metrics files into the study's report: load the runs, tabulate them, assemble the Markdown.

Reads only what the stages wrote (dvclive directories, evaluate's JSON, the data's meta.json) and params; it never
runs a model. What the numbers allow us to claim is decided in depthstudy.findings, the figures are drawn by
depthstudy.figures.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from depthstudy.figures import LAYER_PANELS, plot_confusions, plot_curves, plot_layers
from depthstudy.findings import ModelEvidence, findings
from depthstudy.params import DataParams, FCParams, Params, ResNetParams, TrainParams

HISTORY = ["train/loss", "val/loss", "train/acc", "val/acc", "val/precision", "val/recall"]
SEED_COLUMNS = ["Train Loss", "Val Loss", "Train Accuracy", "Val Accuracy", "Precision", "Recall"]
SEED_EPOCHS = 5  # the seed report tabulated its first five epochs


@dataclass
class Run:
    """Everything the train stage recorded for one model."""

    name: str
    history: pd.DataFrame  # one row per epoch (1-based index), columns HISTORY
    layers: pd.DataFrame  # plots/layers.tsv: step, epoch, layer, name, grad_norm, act_std, update_ratio
    info: dict  # run.json: params_count, device, torch_version, data_source, threads, epoch_seconds, images_per_s


def merge_meta(paths: list[Path]) -> dict:
    """One description of the data from the split directories' meta.json files (counts of every split)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    meta = {**parts[0], "counts": {}, "class_counts": {}}
    for part in parts:
        meta["counts"].update(part["counts"])
        meta["class_counts"].update(part["class_counts"])
    return meta


def load_results(live_dirs: list[Path], eval_dir: Path, meta_files: list[Path]) -> tuple[list[Run], dict, dict, dict]:
    """What a report stage reads → (runs, evaluate's per-model test figures, its seconds per model, the data's meta)."""
    test = json.loads((eval_dir / "per_class.json").read_text())
    eval_seconds = json.loads((eval_dir / "run.json").read_text())["seconds"]
    return [load_run(d) for d in live_dirs], test, eval_seconds, merge_meta(meta_files)


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
        layers=pd.read_csv(live_dir / "plots" / "layers.tsv", sep="\t"),
        info=json.loads((live_dir / "run.json").read_text()),
    )


# --- evidence -------------------------------------------------------------------------------------------------------


def evidence(run: Run, test: dict, meta: dict) -> ModelEvidence:
    """What depthstudy.findings decides from, for one model and one seed: the final validation accuracy (the curve's
    last epoch), the test accuracy (evaluate's per_class.json), the split sizes (meta.json), and the first and last
    weight layer's gradient norm and relative weight update in epoch 1 (layers.tsv)."""
    epoch1 = run.layers[run.layers["epoch"] == 1].sort_values("layer")
    ends = {}
    if len(epoch1):
        for column, key in (("grad_norm", "grad"), ("update_ratio", "update")):
            ends[f"{key}_first"], ends[f"{key}_last"] = map(float, epoch1[column].iloc[[0, -1]])
    return ModelEvidence(
        name=run.name,
        val_acc=(float(run.history["val/acc"].iloc[-1]),),
        n_val=int(meta["counts"]["val"]),
        test_acc=(float(test[run.name]["acc"]),),
        n_test=int(meta["counts"]["test"]),
        num_layers=int(run.layers["layer"].nunique()) or None,
        **ends,
    )


def undrawn(runs: list[Run]) -> list[str]:
    """The layer figure's points that a log axis cannot show (0, negative or not finite), one line per model and
    panel: the figure leaves them out, so the text must say where they are."""
    notes = []
    for run in runs:
        shown = run.layers[run.layers["epoch"].isin({1, run.layers["epoch"].max()})]
        for column, (title, _) in LAYER_PANELS.items():
            values = shown[column].to_numpy(dtype=float)
            bad = shown[~(np.isfinite(values) & (values > 0))]
            for epoch, rows in bad.groupby("epoch"):
                zeros = int((rows[column] == 0).sum())
                what = "exactly 0" if zeros == len(rows) else f"0 ({zeros}) or not finite ({len(rows) - zeros})"
                notes.append(f"{run.name}, epoch {epoch}: {title.lower()} is {what} in {len(rows)} of "
                             f"{run.layers['layer'].nunique()} layers (layers {_spans(rows['layer'])}); not drawn.")
    return notes


def _spans(layers: pd.Series) -> str:
    """0, 1, 2, 5 → "0-2, 5"."""
    spans: list[list[int]] = []
    for layer in sorted(int(x) for x in layers):
        if spans and layer == spans[-1][1] + 1:
            spans[-1][1] = layer
        else:
            spans.append([layer, layer])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


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
    # FCParams' defaults are the seed's nets (no norm, no skips): an ablation (norm, residual, init) is named here.
    seed_models = {"fc20": FCParams(depth=20), "fc56": FCParams(depth=56), "resnet18": ResNetParams()}
    for name, spec in params.models.items():
        for key, value in asdict(spec).items():
            seed_value = getattr(seed_models.get(name), key, value)
            if value != seed_value:
                notes.append(f"`models.{name}.{key}` is {value} (the seed used {seed_value}).")
    notes.append("The seed does not state its dropout probability; this study assumes 0.5 unless params say otherwise.")
    return notes


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
    plot_curves({r.name: r.history for r in runs}, out_dir / "learning_curves.png")
    plot_layers({r.name: r.layers for r in runs}, out_dir / "layers.png")
    confusions = {name: (m["confusion"], m["acc"]) for name, m in test.items()}
    plot_confusions(confusions, meta["classes"], out_dir / "confusion.png")
    evidences = [evidence(run, test, meta) for run in runs]
    gaps = undrawn(runs) or ["none: every value is above 0."]
    text = f"""# Depth study: plain fully connected nets vs ResNet-18

After a student's report on He et al. 2015, "Deep Residual Learning for Image Recognition". Made by the
`report` stage from the metrics files; every number below is read from them.

## Findings

Decided by tests at the splits' sizes (one seed per model here; `python -m depthstudy.aggregate` pools seeds):

{bullets(findings(evidences, len(meta["classes"])))}

## Per-epoch metrics (validation split; precision and recall are macro averages)

{markdown(epoch_table(runs))}

## Test metrics

{markdown(test_table(test))}

## Learning curves

![learning curves](learning_curves.png)

## Per-layer learning evidence

For each weight layer (0 = nearest the input), in epoch 1 (solid) and the last epoch (dashed): the mean L2 norm of
its weight gradient and the mean std of its output over the sampled training steps, and its relative weight update
‖W_end − W_start‖ / ‖W_start‖ over the epoch. The gradient is what backpropagation delivers to a layer; how far the
layer's weights moved is the third panel: Adam divides each gradient by its running RMS, so a small gradient alone
does not mean a layer stands still. Values a log axis cannot show (0 or not finite), left out of the figure:

{bullets(gaps)}

![per-layer evidence](layers.png)

## Confusion matrices (test split, rows normalised)

![confusion matrices](confusion.png)

## Run info

{bullets(run_info(runs, eval_seconds, params, meta))}

## Caveats

{bullets(caveats(params, meta))}
"""
    (out_dir / "report.md").write_text(text)
