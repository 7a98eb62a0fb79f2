"""The report on hand-made metrics files: findings come from depthstudy.findings with the right evidence, the layer
figure survives zeros (and the text says what it left out), and the caveats name the FC ablations."""

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from depthstudy.figures import plot_layers
from depthstudy.params import FCParams, Params, ResNetParams
from depthstudy.report import HISTORY, caveats, evidence, load_run, undrawn, write_report

CLASSES = [str(i) for i in range(10)]
META = {"source": "digits", "classes": CLASSES, "counts": {"train": 1350, "val": 150, "test": 297}}
SEED_MODELS = {"fc20": FCParams(depth=20), "fc56": FCParams(depth=56), "resnet18": ResNetParams()}


def write_run(live_dir: Path, val_acc: list[float], layers: dict[str, np.ndarray]) -> Path:
    """A train stage's files: dvclive curves, plots/layers.tsv (``layers``: column → (epochs, layers)), run.json."""
    epochs = len(val_acc)
    for metric in HISTORY:
        path = live_dir / "plots" / "metrics" / f"{metric}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        values = val_acc if metric == "val/acc" else [0.5] * epochs
        pd.DataFrame({"step": range(epochs), metric.split("/")[1]: values}).to_csv(path, sep="\t", index=False)
    n_layers = next(iter(layers.values())).shape[1]
    rows = [{"step": e, "epoch": e + 1, "layer": i, "name": f"layers.{i}", **{c: v[e, i] for c, v in layers.items()}}
            for e in range(epochs) for i in range(n_layers)]
    pd.DataFrame(rows).to_csv(live_dir / "plots" / "layers.tsv", sep="\t", index=False)
    info = {"params_count": 1000, "device": "cpu", "torch_version": "x", "threads": 1, "epoch_seconds": [1.0] * epochs}
    (live_dir / "run.json").write_text(json.dumps(info))
    return live_dir


def evidence_columns(epochs: int, n_layers: int, **overrides) -> dict[str, np.ndarray]:
    columns = {c: np.full((epochs, n_layers), v) for c, v in (("grad_norm", 0.1), ("act_std", 1.0),
                                                             ("update_ratio", 0.01))}
    for column, (epoch, layer, value) in overrides.items():
        columns[column][epoch, layer] = value
    return columns


def evaluated(acc: float) -> dict:
    matrix = np.eye(10, dtype=int).tolist()
    return {"acc": acc, "precision": acc, "recall": acc, "f1": acc, "confusion": matrix}


def test_evidence_is_epoch_1s_first_and_last_layer_and_the_final_val_accuracy(tmp_path):
    layers = evidence_columns(3, 4)
    layers["grad_norm"][0] = [1e-9, 1e-5, 1e-3, 0.2]
    layers["update_ratio"][0] = [1e-7, 1e-4, 1e-3, 0.03]
    run = load_run(write_run(tmp_path / "fc56", [0.1, 0.12, 0.14], layers))
    ev = evidence(run, {"fc56": evaluated(0.11)}, META)
    assert (ev.name, ev.val_acc, ev.n_val, ev.test_acc, ev.n_test) == ("fc56", (0.14,), 150, (0.11,), 297)
    assert (ev.grad_first, ev.grad_last, ev.update_first, ev.update_last) == pytest.approx((1e-9, 0.2, 1e-7, 0.03))
    assert ev.num_layers == 4


def test_report_with_zero_norms_and_updates_renders_and_says_what_it_left_out(tmp_path):
    live = tmp_path / "metrics"
    fc56 = write_run(live / "fc56", [0.1, 0.1], evidence_columns(2, 5, grad_norm=(0, 0, 0.0),
                                                                update_ratio=(0, 0, 0.0)))
    flat = evidence_columns(2, 3)
    flat["update_ratio"][:] = 0.0  # every update 0: a log panel with nothing to draw
    fc20 = write_run(live / "fc20", [0.3, 0.4], flat)
    runs = [load_run(fc20), load_run(fc56)]
    test = {"fc20": evaluated(0.35), "fc56": evaluated(0.1)}
    out = tmp_path / "report"
    out.mkdir()
    params = Params(models={"fc20": SEED_MODELS["fc20"], "fc56": replace(SEED_MODELS["fc56"], norm="layernorm")})
    write_report(out, runs, test, {"fc20": 1.0, "fc56": 2.0}, params, META)
    text = (out / "report.md").read_text()
    assert "first weight layer's gradient is exactly 0 throughout" in text  # findings.py's sentence, no "inf"
    assert "the first layer's weights did not move at all" in text
    assert "fc56, epoch 1: gradient norm is exactly 0 in 1 of 5 layers (layers 0); not drawn." in text
    assert "fc20, epoch 2: relative weight update is exactly 0 in 3 of 3 layers (layers 0-2); not drawn." in text
    assert "barely learn" not in text and not re.search(r"\b(inf|nan)\b", text, re.IGNORECASE)
    assert "`models.fc56.norm` is layernorm (the seed used none)." in text
    for png in ("learning_curves.png", "layers.png", "confusion.png"):
        pixels = matplotlib.image.imread(out / png)
        assert pixels.shape[0] > 200 and pixels.std() > 0.05, png
        assert f"]({png})" in text


def test_undrawn_counts_non_finite_values_apart_from_zeros(tmp_path):
    layers = evidence_columns(1, 4)
    layers["act_std"][0] = [0.0, math.nan, 1.0, math.inf]
    run = load_run(write_run(tmp_path / "fc20", [0.2], layers))
    assert undrawn([run]) == ["fc20, epoch 1: activation std is 0 (1) or not finite (2) in 3 of 4 layers "
                              "(layers 0-1, 3); not drawn."]


def test_caveats_name_each_fc_ablation_and_nothing_for_the_seeds_nets():
    seed = caveats(Params(models=SEED_MODELS), {"source": "cifar10"})
    assert not [line for line in seed if "models." in line]
    ablated = {**SEED_MODELS, "fc56": replace(SEED_MODELS["fc56"], norm="batchnorm", residual=True, init="kaiming")}
    lines = caveats(Params(models=ablated), {"source": "cifar10"})
    assert "`models.fc56.norm` is batchnorm (the seed used none)." in lines
    assert "`models.fc56.residual` is True (the seed used False)." in lines
    assert "`models.fc56.init` is kaiming (the seed used default)." in lines
    assert not [line for line in lines if "fc20" in line]


def test_a_layer_panel_with_no_positive_value_is_drawn_without_a_log_axis(tmp_path):
    layers = evidence_columns(2, 3)
    layers["update_ratio"][:] = 0.0
    layers["grad_norm"][:] = math.nan
    plot_layers({"fc56": load_run(write_run(tmp_path / "fc56", [0.1, 0.1], layers)).layers}, tmp_path / "l.png")
    assert matplotlib.image.imread(tmp_path / "l.png").shape[0] > 200
