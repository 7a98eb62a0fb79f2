"""`python -m depthstudy.aggregate` on hand-made `dvc exp show --json` files (grouping, counting, skipping, errors),
and end to end on two queued seeds in the shared repo with the real dvc."""

import json
import os
import re
import subprocess
import sys
import time

import matplotlib.image
import pytest

from conftest import REPO, VENV_ENV, assert_one_line_error, dvc, git, params_dict
from depthstudy.aggregate import main, split_sizes
from depthstudy.archive import build_digits_archive
from depthstudy.errors import run_stage
from depthstudy.params import DataParams
from depthstudy.prepare import prepare


def state(seed=0, acc=None, code="c0", **overrides) -> dict:
    """One revision as `dvc exp show --json` writes it: params.yaml, each model's and evaluate's metrics, deps."""
    params = params_dict({"data.source": "digits", "train.seed": seed, **overrides})
    metrics = {}
    for model, (val, test) in (acc or {"fc56": (0.1, 0.1)}).items():
        metrics[f"metrics/{model}/metrics.json"] = {"data": {model: {"val": val, "loss": {"val": 2.3}}}}
        evaluate = metrics.setdefault("metrics/evaluate/metrics.json", {"data": {}})
        evaluate["data"][model] = {"test": test, "precision": {"test": 0.1}}
    deps = {"stages/train.py": {"hash": code, "size": 1, "nfiles": None}, "data/prepared/trainval": {"hash": "d"}}
    data = {"rev": "x", "timestamp": None, "params": {"params.yaml": {"data": params}}, "metrics": metrics,
            "deps": deps, "outs": {}, "meta": {}}
    return {"rev": "0" * 40, "name": None, "data": data, "error": None, "experiments": None}


def exp(name: str, revision: dict, executor: str | None = "success") -> dict:
    revision = {**revision, "rev": f"{abs(hash(name)):040x}"[:40], "name": name}
    return {"revs": [revision], "name": name, "executor": executor and {"state": executor, "name": None}}


def shown(baseline: dict, experiments: list[dict], workspace: dict | None = None) -> list:
    rows = [{**(workspace or baseline), "rev": "workspace"}]
    return rows + [{**baseline, "rev": "a1b2c3d" + "0" * 33, "name": "main", "experiments": experiments}]


def aggregate(tmp_path, capsys, rows: list, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "exps.json"
    path.write_text(json.dumps(rows))
    code = run_stage(lambda: main(["--json-file", str(path), "--plot", str(tmp_path / "agg.png"), *args]))
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[tuple[str, str], list[str]]:
    """(configuration, model) → the table row's cells."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    return {(row[0], row[1]): row[2:] for row in cells[1:]}


def test_seeds_of_one_configuration_pool_and_other_configurations_stay_apart(tmp_path, capsys):
    models = lambda v, t: {"fc56": (v, t), "resnet18": (0.9, 0.88)}  # noqa: E731
    base = state(0, models(0.10, 0.11))
    rows = shown(base, [exp("seed-1", state(1, models(0.12, 0.13))), exp("seed-2", state(2, models(0.14, 0.15))),
                        exp("layernorm", state(0, models(0.2, 0.21), **{"models.fc56.norm": "layernorm"}))])
    code, out, _ = aggregate(tmp_path, capsys, rows)
    assert code == 0
    rows = table(out)
    assert rows["reference: main", "fc56"] == ["3", "0, 1, 2", "0.120 ± 0.020", "0.130 ± 0.020"]
    assert rows["reference: main", "resnet18"] == ["3", "0, 1, 2", "0.900 ± 0.000", "0.880 ± 0.000"]
    assert rows["models.fc56.norm=layernorm", "fc56"] == ["1", "0", "0.200 ± –", "0.210 ± –"]  # n = 1: no std
    assert "4 run(s) in 2 configuration(s)" in out
    # the workspace holds the baseline's results: one result, counted once
    assert "note: workspace repeats main (same configuration, code and seed 0, the same accuracies)" in out
    assert "fc56 across configurations" in out and "resnet18 across configurations" not in out
    pixels = matplotlib.image.imread(tmp_path / "agg.png")
    assert pixels.shape[0] > 200 and pixels.std() > 0.05


def test_queued_running_and_failed_experiments_are_skipped_with_a_note(tmp_path, capsys):
    rows = shown(state(0), [exp("done", state(1)), exp("waiting", state(2), "queued"),
                            exp("busy", state(3), "running"), exp("broken", state(4), "failed")])
    _, out, _ = aggregate(tmp_path, capsys, rows)
    assert table(out)["reference: main", "fc56"][:2] == ["2", "0, 1"]
    for note in ("skipped queued experiment(s): waiting", "skipped running experiment(s): busy",
                 "skipped failed experiment(s): broken"):
        assert f"note: {note}" in out


def test_threads_and_device_pool_but_other_code_is_another_configuration(tmp_path, capsys):
    rows = shown(state(0), [exp("t", state(1, **{"train.threads": 1, "train.device": "cpu"})),
                            exp("patched", state(2, code="c1"))])
    _, out, _ = aggregate(tmp_path, capsys, rows)
    rows = table(out)
    assert rows["reference: main", "fc56"][:2] == ["2", "0, 1"]
    [patched] = [key for key in rows if key[0].startswith("code ")]
    assert rows[patched][:2] == ["1", "2"]


def test_a_repeated_seed_counts_once_and_says_when_its_accuracies_differ(tmp_path, capsys):
    rows = shown(state(0, {"fc56": (0.3, 0.3)}), [exp("again", state(0, {"fc56": (0.31, 0.3)}))])
    _, out, _ = aggregate(tmp_path, capsys, rows)
    assert table(out)["reference: main", "fc56"][:3] == ["1", "0", "0.300 ± –"]
    assert "note: again repeats main (same configuration, code and seed 0, different accuracies" in out


def test_rows_without_metrics_are_skipped_and_a_model_can_be_chosen(tmp_path, capsys):
    empty = {**state(1), "data": {**state(1)["data"], "metrics": {}}}
    two = {"fc20": (0.2, 0.2), "fc56": (0.1, 0.1)}
    _, out, _ = aggregate(tmp_path, capsys, shown(state(0, two), [exp("empty", empty)]), "--model", "fc56")
    assert "note: skipped empty: no such model with both a val and a test accuracy" in out
    assert {model for _, model in table(out)} == {"fc56"}


@pytest.mark.parametrize("data", [
    {"source": "digits"},
    {"source": "digits", "train_limit": 333, "val_fraction": 0.15, "test_limit": 100},  # ceil(49.95) = 50
    {"source": "digits", "train_limit": 200, "val_fraction": 0.3, "seed": 3},
])
def test_split_sizes_are_what_preprocess_makes(tmp_path_factory, data):
    archive = tmp_path_factory.getbasetemp() / "digits.tar.gz"
    if not archive.exists():
        build_digits_archive(archive)
    _, meta = prepare(archive, DataParams(**data))
    assert split_sizes({f"data.{k}": v for k, v in data.items()}) == (meta["counts"]["val"], meta["counts"]["test"])


@pytest.mark.parametrize("text, fragment", [
    (None, "cannot read"),
    ("{not json", "is not JSON"),
    ("[1, 2]", "is not `dvc exp show --json` output"),
    (json.dumps({"workspace": {}}), "is not `dvc exp show --json` output"),
])
def test_input_that_is_not_dvcs_is_one_line_error(tmp_path, capsys, text, fragment):
    if text is not None:
        (tmp_path / "exps.json").write_text(text)
    assert run_stage(lambda: main(["--json-file", str(tmp_path / "exps.json")])) == 2
    assert_one_line_error(capsys.readouterr().err, fragment)


def test_no_finished_experiment_is_one_line_error(tmp_path, capsys):
    baseline = {**state(0), "data": None, "error": {"msg": "no dvc.lock", "type": ""}}
    code, _, err = aggregate(tmp_path, capsys, shown(baseline, [exp("q", state(1), "queued")]))
    assert code == 2
    assert_one_line_error(err, "no finished experiments", "skipped queued experiment(s): q", "no dvc.lock")


def test_without_dvc_on_path_it_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert run_stage(lambda: main([])) == 2
    assert_one_line_error(capsys.readouterr().err, "dvc not found on PATH", "--json-file")


def test_help_states_the_rules():
    done = subprocess.run([sys.executable, "-m", "depthstudy.aggregate", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0 and "train.seed" in done.stdout and "--json-file" in done.stdout


# --- end to end: two queued seeds of the baseline's configuration --------------------------------------------------

SEEDS = {"agg-seed-1": 1, "agg-seed-2": 2}
TIMEOUT_S = 900


def wait_for(repo, names) -> dict[str, str]:
    """Name → Success / Failed once every one of ``names`` has finished, from `dvc queue status`."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        states = {p[1]: p[-1] for p in map(str.split, dvc(repo, "queue", "status").splitlines())
                  if len(p) >= 4 and p[1] in names}
        if len(states) == len(names) and all(s in ("Success", "Failed") for s in states.values()):
            return states
        assert time.monotonic() < deadline, f"queued seeds not done after {TIMEOUT_S} s: {states}"
        time.sleep(5)


def restore(repo) -> None:
    """The committed baseline: tracked files (and the index) and DVC's outputs, as tests/test_dvc_contract.py does."""
    git(repo, "reset", "-q", "--hard")
    dvc(repo, "checkout", "--force", "dvc.yaml")


@pytest.mark.e2e
def test_aggregate_pools_the_baseline_and_two_queued_seeds(pipeline, tmp_path):
    repo, _ = pipeline
    restore(repo)  # an earlier test's `dvc exp run` may have left its params in the workspace, which --queue takes
    try:
        for name, seed in SEEDS.items():  # the baseline's params but the seed: one configuration
            dvc(repo, "exp", "run", "--queue", "-n", name, "-S", f"train.seed={seed}")
        dvc(repo, "queue", "start", "-j", "2")
        states = wait_for(repo, SEEDS)
        assert states == {name: "Success" for name in SEEDS}, {n: dvc(repo, "queue", "logs", n) for n in SEEDS}
        command = [sys.executable, "-m", "depthstudy.aggregate", "--plot", str(tmp_path / "agg.png")]
        env = {**VENV_ENV, "PYTHONPATH": str(REPO / "src")}  # this checkout's library, as in the stages
        done = subprocess.run(command, cwd=repo, capture_output=True, text=True, env=env)
    finally:
        dvc(repo, "queue", "stop", "--kill")
        subprocess.run(["dvc", "exp", "remove", *SEEDS], cwd=repo, env=VENV_ENV, capture_output=True)  # if queued
        restore(repo)
    assert done.returncode == 0, done.stderr
    rows = {model: cells for (config, model), cells in table(done.stdout).items() if config.startswith("reference")}
    assert set(rows) == {"fc20", "fc56", "resnet18"}, done.stdout
    for model, (n, seeds, val, test) in rows.items():
        assert (n, seeds) == ("3", "0, 1, 2"), (model, done.stdout)
        for cell in (val, test):
            assert re.fullmatch(r"0\.\d{3} ± 0\.\d{3}", cell), (model, cell)
    assert matplotlib.image.imread(tmp_path / "agg.png").std() > 0.05
