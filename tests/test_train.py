"""The train stage: bit-identical metrics on CPU for identical params, one row per epoch, a clear stop on divergence."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import assert_one_line_error, load_stage, params_dict, run_script, write_params
from depthstudy.data import build_digits_archive, prepare, save_splits
from depthstudy.params import parse_params

WALL_CLOCK = {"epoch_time_s", "images_per_s"}  # the only figures allowed to differ between identical runs
EPOCHS = 2
REDUCED = {"data.source": "digits", "data.train_limit": 240, "train.epochs": EPOCHS, "train.threads": 1,
           "models.fc20.width": 32, "models.fc56.width": 32}
train_stage = load_stage("train")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory with a reduced params.yaml and the digits sample prepared (240 train+val images)."""
    d = tmp_path_factory.mktemp("train")
    write_params(d, REDUCED)
    build_digits_archive(d / "archive.tar.gz")
    save_splits(d / "prepared", *prepare(d / "archive.tar.gz", parse_params(params_dict(REDUCED)).data))
    return d


def train(workdir: Path, model: str, out: str) -> Path:
    train_stage.main([model, str(workdir / "prepared"), str(workdir / out / "model.pt"), str(workdir / out / "live")])
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
    assert len(compared) >= 9  # 6 train/val metrics, 2 gradient summaries, grad_norms.tsv


@pytest.mark.parametrize("model", ["fc56", "resnet18"])
def test_same_params_give_bit_identical_metrics(workdir, monkeypatch, model):
    monkeypatch.chdir(workdir)
    first, second = train(workdir, model, f"{model}-a"), train(workdir, model, f"{model}-b")
    assert_same_metrics(logged_tables(first), logged_tables(second))


def test_every_metric_has_one_row_per_epoch(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    live = train(workdir, "fc20", "fc20")
    tables = logged_tables(live)
    expected = {f"plots/metrics/{m}.tsv" for m in (
        "train/loss", "train/acc", "val/loss", "val/acc", "val/precision", "val/recall",
        "train/images_per_s", "epoch_time_s", "grad/first_layer", "grad/last_layer",
    )}
    assert expected <= tables.keys()
    for name in expected:
        assert tables[name]["step"].tolist() == list(range(EPOCHS)), name
    grads = tables["grad_norms.tsv"]
    assert grads.groupby("epoch")["layer"].apply(list).tolist() == [list(range(20))] * EPOCHS
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["data_source"] == "digits" and summary["device"] == "cpu"
    assert summary["params_count"] > 0 and summary["torch_version"]
    checkpoint = torch.load(workdir / "fc20" / "model.pt", weights_only=True)
    assert checkpoint["model_name"] == "fc20" and checkpoint["model_params"]["depth"] == 20


def test_non_finite_loss_stops_with_model_epoch_and_step_and_no_weights(tmp_path, workdir):
    write_params(tmp_path, {**REDUCED, "train.lr": 1e12, "models.fc20.init": "kaiming"})
    done = run_script("train", "fc20", workdir / "prepared", tmp_path / "model.pt", tmp_path / "live", cwd=tmp_path)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "fc20", "non-finite", "epoch 1", "step", "train.lr")
    assert not (tmp_path / "model.pt").exists()
