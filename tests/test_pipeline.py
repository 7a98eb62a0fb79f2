"""End to end through the real `dvc` binary in a temporary git repo, on the digits sample at reduced settings."""

import json
import re

import matplotlib.image
import pandas as pd
import pytest

from conftest import E2E_EPOCHS, ROOT_PLOTS, dvc

pytestmark = pytest.mark.e2e

ALL_STAGES = {"download", "preprocess", "train_fc20", "train_fc56", "train_resnet18", "evaluate", "report"}
MODELS = ("fc20", "fc56", "resnet18")
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/precision", "val/recall",
           "train/images_per_s", "grad/log10_first_over_last")


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@-]+)'", output))


def test_repro_runs_all_seven_stages_then_is_up_to_date(pipeline):
    repo, first_output = pipeline
    assert stages_run(first_output) == ALL_STAGES
    second = dvc(repo, "repro")
    assert stages_run(second) == set()
    assert "up to date" in second


def test_dvclive_logs_one_row_per_epoch_and_resnet_beats_fc56(pipeline):
    repo, _ = pipeline
    final = {}
    for model in MODELS:
        for metric in METRICS:
            tsv = pd.read_csv(repo / "metrics" / model / "plots" / "metrics" / f"{metric}.tsv", sep="\t")
            assert tsv["step"].tolist() == list(range(E2E_EPOCHS)), (model, metric)
        final[model] = json.loads((repo / "metrics" / model / "metrics.json").read_text())[model]["val"]
    # The science, measured: the residual net learns the digits, the 56-layer plain net stays near chance.
    assert final["resnet18"] > final["fc56"] + 0.3


def test_metrics_show_has_val_and_test_metrics_for_every_model(pipeline):
    repo, _ = pipeline
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))[""]["data"]
    # DVC lists every dvc.yaml's metrics: the paper pipeline's too, not run here (README, "The paper's experiment")
    shown = {path: value for path, value in shown.items() if not path.startswith("paper/")}
    assert set(shown) == {f"metrics/{m}/metrics.json" for m in (*MODELS, "evaluate")}
    test = shown["metrics/evaluate/metrics.json"]["data"]
    for model in MODELS:
        assert set(test[model]) == {"test", "precision", "recall", "f1"}
        assert 0 <= test[model]["test"] <= 1
        assert 0 <= shown[f"metrics/{model}/metrics.json"]["data"][model]["val"] <= 1
    assert test["resnet18"]["test"] > test["fc56"]["test"]


def test_report_has_a_row_per_model_and_real_figures(pipeline):
    repo, _ = pipeline
    report = (repo / "plots" / "report" / "report.md").read_text()
    test_rows = report.split("## Test metrics")[1].split("##")[0]
    for model in MODELS:
        assert re.search(rf"^\| {model} \| 0\.\d{{4}} \|", test_rows, re.M), model
    assert "(chance: 1/10; one-sided exact binomial test per seed, p < 0.05)" in report  # depthstudy.findings
    assert re.search(r"^- fc56, epoch 1: .*the first layer('s weights did not move| barely moved| moved)", report, re.M)
    for png in ("learning_curves.png", "layers.png", "confusion.png"):
        path = repo / "plots" / "report" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 200 and pixels.std() > 0.05, png  # decodes, and is not a blank canvas
        assert f"]({png})" in report


def test_lr_variant_reruns_exactly_the_trainings_and_downstream(pipeline):
    repo, _ = pipeline
    output = dvc(repo, "exp", "run", "-n", "small-lr", "-S", "train.lr=0.0001")
    assert stages_run(output) == ALL_STAGES - {"download", "preprocess"}
    diff = json.loads(dvc(repo, "plots", "diff", "HEAD", "small-lr", "--json", "--targets", ROOT_PLOTS))
    assert not diff.get("errors"), diff.get("errors")
    for name, renders in diff["data"].items():
        assert {"HEAD", "small-lr"} <= {rev for r in renders for rev in r["revisions"]}, name


def test_one_model_change_reruns_only_that_training_and_downstream(pipeline):
    repo, _ = pipeline
    output = dvc(repo, "exp", "run", "-S", "models.fc56.width=48")
    assert stages_run(output) == {"train_fc56", "evaluate", "report"}
