"""The paper's pipeline (paper/dvc.yaml) end to end through the real `dvc`, on the digits sample at tiny settings: it
reuses the root pipeline's data stages, trains the four nets, reports them beside Table 6, draws Fig. 6 in
`dvc plots show`, runs experiments on paper/params.yaml — and leaves the root pipeline as it was."""

import json
import re

import matplotlib.image
import pytest
import vl_convert
import yaml

from conftest import E2E_PARAMS, PAPER_PLOTS, copy_project, dvc, git, update_params, write_params

pytestmark = pytest.mark.e2e

MODELS = ("plain20", "plain56", "resnet20", "resnet56")
PAPER_STAGES = {f"paper/dvc.yaml:{s}" for s in (*(f"train_{m}" for m in MODELS), "evaluate", "report")}
ROOT_AFTER_DATA = {"train_fc20", "train_fc56", "train_resnet18", "evaluate", "report"}
PAPER_EPOCHS = 2
PAPER_TINY = {"train.epochs": PAPER_EPOCHS}  # batch 128 on the 360 training images: 3 updates per epoch


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """A repo copy after `dvc repro paper/dvc.yaml` (the root's download and preprocess included), committed."""
    repo = copy_project(tmp_path_factory.mktemp("paper"))
    write_params(repo, E2E_PARAMS)
    update_params(repo / "paper", PAPER_TINY)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "reduced settings")
    output = dvc(repo, "repro", "paper/dvc.yaml")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "paper run")
    return repo, output


def test_repro_runs_the_data_stages_and_the_paper_stages_then_nothing(paper):
    repo, output = paper
    assert stages_run(output) == {"download", "preprocess"} | PAPER_STAGES
    assert not (repo / "metrics" / "fc20").exists()  # the root's trainings are not upstream of the paper's
    assert stages_run(dvc(repo, "repro", "paper/dvc.yaml")) == set()


def test_all_four_nets_trained_with_equal_parameters_plain_and_residual(paper):
    repo, _ = paper
    test = json.loads((repo / "paper/metrics/evaluate/metrics.json").read_text())
    counts = {}
    for model in MODELS:
        assert (repo / "paper/data/models" / f"{model}.pt").stat().st_size > 0
        val = json.loads((repo / "paper/metrics" / model / "metrics.json").read_text())[model]["val"]
        assert 0 <= val <= 1 and 0 <= test[model]["test"] <= 1  # keyed <model>.<split>, like the root's
        acc = (repo / "paper/metrics" / model / "plots/metrics/val/acc.tsv").read_text().splitlines()
        assert len(acc) == 1 + PAPER_EPOCHS
        counts[model] = json.loads((repo / "paper/metrics" / model / "run.json").read_text())["params_count"]
    assert counts == {"plain20": 269_722, "resnet20": 269_722, "plain56": 853_018, "resnet56": 853_018}


def test_report_sets_our_test_errors_beside_table_6(paper):
    repo, _ = paper
    report = (repo / "paper/plots/report/report.md").read_text()
    test = json.loads((repo / "paper/metrics/evaluate/metrics.json").read_text())
    for model, paper_error in {"plain20": "— (Fig. 6 only)", "plain56": "— (Fig. 6 only)",
                               "resnet20": "8.75", "resnet56": "6.97"}.items():
        ours = f"{100 * (1 - test[model]['test']):.2f}"
        assert re.search(rf"^\| \S+ \(`{model}`\) \|.* \| {re.escape(ours)} \| {re.escape(paper_error)} \|$",
                         report, re.M), model
    assert "the offline `digits` sample, not CIFAR-10" in report  # the scale actually run, said plainly
    assert f"({PAPER_EPOCHS} epochs × 3 steps of 128 images)" in report
    png = repo / "paper/plots/report/fig6_errors.png"
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] > 200 and pixels.std() > 0.05 and "](fig6_errors.png)" in report


def test_plots_show_draws_fig_6_one_colour_per_depth_dashed_for_plain(paper):
    repo, _ = paper
    shown = json.loads(dvc(repo, "plots", "show", "--json", PAPER_PLOTS))
    assert "errors" not in shown, shown.get("errors")
    titles = [title for entry in yaml.safe_load((repo / "paper/dvc.yaml").read_text())["plots"] for title in entry]
    assert list(shown["data"]) == titles
    for title in titles:
        svg = vl_convert.vegalite_to_svg(shown["data"][title][0]["content"])  # what the page draws
        lines = {re.search(r"model: (\w+)", tag).group(1): tag
                 for tag in re.findall(r'<path [^>]*aria-roledescription="line mark"[^>]*>', svg)}
        assert set(lines) == set(MODELS), title
        colour = {m: re.search(r'stroke="([^"]+)"', tag).group(1) for m, tag in lines.items()}
        dashed = {m: re.search(r'stroke-dasharray="([^"]+)"', tag).group(1) != "1,0" for m, tag in lines.items()}
        assert colour["plain20"] == colour["resnet20"] != colour["plain56"] == colour["resnet56"], title
        assert dashed == {"plain20": True, "plain56": True, "resnet20": False, "resnet56": False}, title


def test_the_root_pipeline_is_not_affected(paper):
    """The root `dvc repro` runs its own stages on the shared data, and the two pipelines then leave each other up to
    date."""
    repo, _ = paper
    assert stages_run(dvc(repo, "repro")) == ROOT_AFTER_DATA
    assert stages_run(dvc(repo, "repro", "paper/dvc.yaml")) == set()
    assert stages_run(dvc(repo, "repro", "--all-pipelines")) == set()
    assert "Data and pipelines are up to date" in dvc(repo, "status")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "root run")


def test_an_experiment_on_paper_params_reruns_that_model_and_params_set_back_restore_from_the_run_cache(paper):
    repo, _ = paper
    # README's form: the target names the pipeline, -S the params file (without one, -S means the root's params.yaml)
    output = dvc(repo, "exp", "run", "paper/dvc.yaml", "-n", "plain32",
                 "-S", "paper/params.yaml:models.plain56.depth=32")
    assert stages_run(output) == {"paper/dvc.yaml:train_plain56", "paper/dvc.yaml:evaluate", "paper/dvc.yaml:report"}
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    exp = next(e for b in shown for e in b.get("experiments") or [] if e["name"] == "plain32")["revs"][0]["data"]
    assert exp["params"]["paper/params.yaml"]["data"]["models"]["plain56"]["depth"] == 32
    assert "plain56" in exp["metrics"]["paper/metrics/plain56/metrics.json"]["data"]
    assert "| plain-32 (`plain56`) | 464,154 |" in (repo / "paper/plots/report/report.md").read_text()

    git(repo, "checkout", "HEAD", "--", "paper/params.yaml")
    output = dvc(repo, "repro", "paper/dvc.yaml")
    assert "Stage 'paper/dvc.yaml:train_plain56' is cached - skipping run" in output
    assert json.loads(dvc(repo, "metrics", "diff", "--json")) == {}  # restored to the bit
