"""The train stage: bit-identical metrics on CPU for identical params, one row per epoch, a clear stop on divergence."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import assert_one_line_error, load_stage, prepare_digits, run_script, write_params
from depthstudy import train as train_lib
from depthstudy.data import Normalize, Split
from depthstudy.models import FCNet

WALL_CLOCK = {"images_per_s"}  # the only curve allowed to differ between identical runs
EPOCHS = 2
REDUCED = {"data.source": "digits", "data.train_limit": 240, "train.epochs": EPOCHS, "train.threads": 1,
           "models.fc20.width": 32, "models.fc56.width": 32}
train_stage = load_stage("train")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory with a reduced params.yaml and the digits sample prepared (240 train+val images)."""
    d = tmp_path_factory.mktemp("train")
    prepare_digits(d, REDUCED)
    return d


def train(workdir: Path, model: str, out: str) -> Path:
    data = workdir / "prepared" / "trainval"
    train_stage.main([model, str(data), str(workdir / out / "model.pt"), str(workdir / out / "live")])
    return workdir / out / "live"


def logged_tables(live: Path) -> dict[str, pd.DataFrame]:
    tables = {str(p.relative_to(live)): pd.read_csv(p, sep="\t") for p in sorted(live.rglob("*.tsv"))}
    return {name: df.drop(columns=["timestamp"], errors="ignore") for name, df in tables.items()}


def assert_same_metrics(first: dict[str, pd.DataFrame], second: dict[str, pd.DataFrame]) -> None:
    """Every logged table equal to the bit, wall-clock figures aside."""
    assert first.keys() == second.keys()
    compared = [name for name in first if Path(name).stem not in WALL_CLOCK]
    for name in compared:
        pd.testing.assert_frame_equal(first[name], second[name], check_exact=True, obj=name)
    assert len(compared) >= 9  # 6 train/val metrics, the gradient and update ratios, layers.tsv


@pytest.mark.parametrize("model", ["fc56", "resnet18"])
def test_same_params_give_bit_identical_metrics(workdir, monkeypatch, model):
    monkeypatch.chdir(workdir)
    first, second = train(workdir, model, f"{model}-a"), train(workdir, model, f"{model}-b")
    assert_same_metrics(logged_tables(first), logged_tables(second))
    # what `dvc metrics diff` compares: byte-identical, so a forced re-run shows no change
    assert (first / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()


def test_every_metric_has_one_row_per_epoch(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    live = train(workdir, "fc20", "fc20")
    tables = logged_tables(live)
    expected = {f"plots/metrics/{m}.tsv" for m in (
        "train/loss", "train/acc", "val/loss", "val/acc", "val/precision", "val/recall",
        "train/images_per_s", "grad/log10_first_over_last", "update/log10_first_over_last",
    )}
    assert expected <= tables.keys()
    for name in expected:
        assert tables[name]["step"].tolist() == list(range(EPOCHS)), name
    layers = tables["plots/layers.tsv"]
    assert layers.groupby("epoch")["layer"].apply(list).tolist() == [list(range(20))] * EPOCHS
    assert list(layers.columns) == ["step", "epoch", "layer", "name", "grad_norm", "act_std", "update_ratio"]
    assert (layers[["grad_norm", "act_std", "update_ratio"]] >= 0).all().all()
    info = json.loads((live / "run.json").read_text())
    assert info["data_source"] == "digits" and info["device"] == "cpu" and info["threads"] == 1
    assert info["params_count"] > 0 and info["torch_version"] and len(info["epoch_seconds"]) == EPOCHS
    weights = torch.load(workdir / "fc20" / "model.pt", weights_only=True)
    assert weights["model_name"] == "fc20" and weights["model_params"]["depth"] == 20
    assert len(weights["mean"]) == len(weights["std"]) == 3  # the channel stats travel with the weights


def test_declared_metrics_are_numbers_that_compare(workdir, monkeypatch):
    """metrics.json: the final figures only, keyed by model; run info and wall clock live in run.json."""
    monkeypatch.chdir(workdir)
    live = train(workdir, "fc56", "fc56-keys")
    (model, summary), = json.loads((live / "metrics.json").read_text()).items()
    assert model == "fc56"
    assert set(summary) == {"train", "val", "loss", "precision", "recall", "grad", "update"}
    val_acc = pd.read_csv(live / "plots/metrics/val/acc.tsv", sep="\t")["acc"]
    assert summary["val"] == val_acc.iloc[-1]  # accuracy, the headline, is <model>.<split>
    assert set(summary["loss"]) == {"train", "val"}
    ratio = summary["grad"]["log10_first_over_last"]
    grads = pd.read_csv(live / "plots/layers.tsv", sep="\t")
    first_epoch = grads[grads["epoch"] == 1].sort_values("layer")["grad_norm"].to_numpy()
    assert ratio["epoch1"] == pytest.approx(math.log10(first_epoch[0] / first_epoch[-1]), rel=1e-5)
    assert ratio["epoch1"] < -3  # FC56 with PyTorch's default init: the first layer's gradient is orders smaller

    def numbers(tree):
        return all(numbers(v) if isinstance(v, dict) else isinstance(v, float) for v in tree.values())

    assert numbers(summary)


def test_non_finite_loss_stops_with_model_epoch_and_step_and_no_weights(tmp_path, workdir):
    write_params(tmp_path, {**REDUCED, "train.lr": 1e12, "models.fc20.init": "kaiming"})
    data = workdir / "prepared" / "trainval"
    done = run_script("train", "fc20", data, tmp_path / "model.pt", tmp_path / "live", cwd=tmp_path)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "fc20", "non-finite", "epoch 1", "step", "train.lr")
    assert not (tmp_path / "model.pt").exists()


def test_a_non_finite_loss_stops_the_epoch_within_a_bounded_number_of_steps():
    """The device's flag is read every SYNC_EVERY steps: a diverged run does not train out the epoch."""
    torch.manual_seed(0)
    model = FCNet(depth=3, width=16, dropout=0.0)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        model.layers[-1].bias.fill_(math.nan)  # every logit is NaN from step 0 on
    n = 8 * train_lib.SYNC_EVERY * 4  # 8 × SYNC_EVERY steps of batch 4
    split = Split(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.arange(n) % 10)
    cpu = torch.device("cpu")
    result = train_lib.train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.1), split, 4,
                                   torch.Generator().manual_seed(0), Normalize([0.5] * 3, [0.25] * 3, cpu), cpu)
    assert result["bad_step"] == 0
    assert len(calls) == train_lib.SYNC_EVERY  # stopped at the first read, not after all 8 × SYNC_EVERY steps
