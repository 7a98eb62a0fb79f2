"""The train stage: bit-identical metrics on CPU for identical params, and every metric logged once per epoch."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from depthstudy.data import build_digits_archive, prepare, save_splits
from depthstudy.params import parse_params

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
import train as train_stage  # noqa: E402

WALL_CLOCK = {"epoch_time_s", "images_per_s"}  # the only figures allowed to differ between identical runs
EPOCHS = 2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory with a reduced params.yaml and the digits sample prepared (240 train+val images)."""
    d = tmp_path_factory.mktemp("train")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="digits", train_limit=240)
    raw["train"].update(epochs=EPOCHS, threads=1)
    for name in ("fc20", "fc56"):
        raw["models"][name]["width"] = 32
    (d / "params.yaml").write_text(yaml.safe_dump(raw))
    build_digits_archive(d / "archive.tar.gz")
    save_splits(d / "prepared", *prepare(d / "archive.tar.gz", parse_params(raw).data))
    return d


def train(workdir: Path, model: str, out: str) -> Path:
    train_stage.main([model, str(workdir / "prepared"), str(workdir / out / "model.pt"), str(workdir / out / "live")])
    return workdir / out / "live"


def logged_tables(live: Path) -> dict[str, pd.DataFrame]:
    tables = {str(p.relative_to(live)): pd.read_csv(p, sep="\t") for p in sorted(live.rglob("*.tsv"))}
    return {name: df.drop(columns=["timestamp"], errors="ignore") for name, df in tables.items()}


@pytest.mark.parametrize("model", ["fc56", "resnet18"])
def test_same_params_give_bit_identical_metrics(workdir, monkeypatch, model):
    monkeypatch.chdir(workdir)
    first, second = logged_tables(train(workdir, model, f"{model}-a")), logged_tables(train(workdir, model, f"{model}-b"))
    assert first.keys() == second.keys()
    compared = 0
    for name, table in first.items():
        if Path(name).stem not in WALL_CLOCK:
            pd.testing.assert_frame_equal(table, second[name], check_exact=True)
            compared += 1
    assert compared >= 9  # 6 train/val metrics, 2 gradient summaries, grad_norms.tsv


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
