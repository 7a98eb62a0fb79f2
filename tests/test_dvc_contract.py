"""DVC's contract, the way a user meets it: a stage re-runs only when something it reads changed — in the workspace,
in a queued experiment, from the run-cache, and in a teammate's clone after `dvc pull`.

The import-closure test is static and fast; the rest drive the real `dvc` in the shared end-to-end repo and leave
it as they found it (params, results and outputs of the committed baseline).
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, ROOT_PLOTS, dvc, git, update_params
from depthstudy.provenance import import_closure

TRAININGS = {"train_fc20", "train_fc56", "train_resnet18"}
DVC_FILES = ("dvc.yaml", "paper/dvc.yaml")  # the root pipeline and the paper's (README, "The paper's experiment")


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@-]+)'", output))


# --- deps: exactly the code each stage imports -----------------------------------------------------------------


def code_deps_mismatch(root: Path, dvcfile: str = "dvc.yaml") -> dict[str, tuple[list[str], list[str]]]:
    """{stage: (imported but not listed, listed but not imported)} for every stage of ``root``/``dvcfile`` that runs
    a script under stages/; empty when each stage's .py deps are exactly its script's import closure. Paths are
    relative to the dvc.yaml's folder, where DVC runs its stages (paper/dvc.yaml: ../stages/train.py)."""
    wdir = (root / dvcfile).parent
    mismatch = {}
    for name, stage in yaml.safe_load((root / dvcfile).read_text())["stages"].items():
        script = re.search(r"python ((?:\.\./)*stages/\S+\.py)", stage["cmd"])
        assert script, f"{name}: cmd does not run a script under stages/"
        closure = {os.path.relpath(p, wdir) for p in import_closure(wdir / script.group(1), root / "src")}
        listed = {d for d in stage.get("deps", []) if d.endswith(".py")}
        if closure != listed:
            mismatch[name] = (sorted(closure - listed), sorted(listed - closure))
    return mismatch


@pytest.mark.parametrize("dvcfile", DVC_FILES)
def test_every_stage_lists_exactly_the_code_it_imports(dvcfile):
    assert code_deps_mismatch(REPO, dvcfile) == {}


def test_the_check_fails_when_dvc_yaml_lags_behind_the_code(tmp_path):
    """A new import that dvc.yaml does not list, and a listed module no longer imported, are both reported."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "src" / "depthstudy").mkdir(parents=True)
    for module in ("__init__", "a", "b", "c"):
        (tmp_path / "src" / "depthstudy" / f"{module}.py").write_text("")
    (tmp_path / "src" / "depthstudy" / "a.py").write_text("def f():\n    from depthstudy.b import g\n")  # lazy
    (tmp_path / "stages" / "s.py").write_text("from depthstudy import a\n")
    deps = ["stages/s.py", "src/depthstudy/__init__.py", "src/depthstudy/a.py", "src/depthstudy/c.py", "data/x"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "python stages/s.py", "deps": deps}}}))
    assert code_deps_mismatch(tmp_path) == {"s": (["src/depthstudy/b.py"], ["src/depthstudy/c.py"])}


@pytest.mark.parametrize("dvcfile", DVC_FILES)
def test_training_never_reads_the_test_split_or_the_report_code(dvcfile):
    stages = yaml.safe_load((REPO / dvcfile).read_text())["stages"]
    trainings = [name for name in stages if name.startswith("train_")]
    assert len(trainings) >= 3
    for name in trainings:
        deps, cmd = stages[name]["deps"], stages[name]["cmd"]
        assert not any(d.endswith("data/prepared/test") for d in deps) and "data/prepared/test" not in cmd, name
        assert not any(d.endswith("report.py") for d in deps), name
        assert any(d.endswith("src/depthstudy/metrics.py") for d in deps)  # validation metrics are computed there


@pytest.mark.parametrize("dvcfile", DVC_FILES)
def test_no_output_is_persistent_and_only_the_report_skips_the_cache(dvcfile):
    """What keeps DVC's run-cache on (DVC 3: stage/cache.py `_can_hash`, stage/__init__.py `no_cache_outs`) and
    usable in a fresh clone: restoring a run replaces its outputs, and DVC refuses to replace a file it cannot find
    in its cache, as a git-tracked (`cache: false`) output of another run is in a teammate's clone."""
    for name, stage in yaml.safe_load((REPO / dvcfile).read_text())["stages"].items():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path, flags = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            assert not flags.get("persist"), (name, path)
            assert flags.get("cache", True) or name == "report", (name, path)


# --- end to end --------------------------------------------------------------------------------------------------


@pytest.fixture
def repo(pipeline):
    """The shared end-to-end repo; afterwards, back to the committed baseline (tracked files and DVC outputs)."""
    repo, _ = pipeline
    yield repo
    git(repo, "reset", "-q", "--hard")  # also the index: DVC's autostage stages dvc.lock
    # The root pipeline's outputs: without a target DVC would also fail on the paper pipeline's, never made here.
    dvc(repo, "checkout", "--force", "dvc.yaml")
    assert stages_run(dvc(repo, "repro")) == set(), "the baseline is not up to date after the test"


def changed_stages(repo: Path) -> set[str]:
    """The stages of the root pipeline `dvc status` reports as changed (without running anything). Without the target
    it would list the paper pipeline's too (paper/dvc.yaml; it never ran here)."""
    status = json.loads(dvc(repo, "status", "--json", "dvc.yaml"))
    return {name.split(":")[-1] for name in status}


@pytest.mark.e2e
def test_editing_the_report_code_retrains_nothing_and_the_metrics_code_reruns_what_computes_metrics(repo):
    report_py = repo / "src/depthstudy/report.py"
    report_py.write_text(report_py.read_text() + "\n# an edit\n")
    assert changed_stages(repo) == {"report"}
    git(repo, "checkout", "HEAD", "--", "src")
    metrics_py = repo / "src/depthstudy/metrics.py"
    metrics_py.write_text(metrics_py.read_text() + "\n# an edit\n")
    assert changed_stages(repo) == TRAININGS | {"evaluate"}  # report follows once their outputs change


@pytest.mark.e2e
def test_changing_the_test_split_trains_nothing(repo):
    output = dvc(repo, "exp", "run", "-S", "data.test_limit=50")
    assert stages_run(output) == {"preprocess", "evaluate", "report"}


@pytest.mark.e2e
def test_params_set_back_to_values_already_run_restore_from_the_run_cache(repo):
    dvc(repo, "exp", "run", "-S", "train.lr=0.0005")
    git(repo, "checkout", "HEAD", "--", "params.yaml")  # the baseline's params; dvc.lock, outputs: the variant's
    output = dvc(repo, "repro")
    assert stages_run(output) <= {"report"}  # the report is kept in git, so it is not in the run-cache
    for stage in TRAININGS | {"evaluate"}:
        assert f"Stage '{stage}' is cached - skipping run" in output
    # the restored results are the baseline's, to the bit: nothing to show between them and the commit
    assert json.loads(dvc(repo, "metrics", "diff", "--json")) == {}


@pytest.mark.e2e
def test_a_forced_deterministic_rerun_leaves_metrics_diff_empty(repo):
    output = dvc(repo, "repro", "--force", "train_fc20")
    assert "train_fc20" in stages_run(output)
    assert json.loads(dvc(repo, "metrics", "diff", "--json")) == {}
    assert dvc(repo, "metrics", "diff").strip() == ""


def wait_for_queue(repo: Path, name: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while True:
        row = [line.split() for line in dvc(repo, "queue", "status").splitlines() if f" {name} " in f" {line} "]
        if row and row[0][-1] in ("Success", "Failed"):
            return row[0][-1]
        assert time.monotonic() < deadline, f"queued experiment {name} not done after {timeout} s"
        time.sleep(3)


@pytest.mark.e2e
def test_a_queued_one_model_variant_trains_only_that_model(repo):
    dvc(repo, "exp", "run", "--queue", "-n", "queued-fc56-kaiming", "-S", "models.fc56.init=kaiming")
    try:
        dvc(repo, "queue", "start", "-j", "1")
        state = wait_for_queue(repo, "queued-fc56-kaiming")
        log = dvc(repo, "queue", "logs", "queued-fc56-kaiming")
    finally:
        dvc(repo, "queue", "stop", "--kill")
    assert state == "Success", log
    assert stages_run(log) == {"train_fc56", "evaluate", "report"}, log


@pytest.mark.e2e
def test_a_teammate_clones_pulls_and_nothing_reruns(repo, tmp_path):
    """README, "Sharing results": a git remote and a local-directory DVC remote; push the results and the run-cache,
    push an experiment; a fresh clone pulls and is up to date, and the experiment's params restore from the
    run-cache instead of training."""
    origin, storage, clone = tmp_path / "origin.git", tmp_path / "storage", tmp_path / "clone"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(repo, "remote", "add", "origin", str(origin))
    dvc(repo, "remote", "add", "--force", "-d", "teamstore", str(storage))
    git(repo, "commit", "-qm", "a default DVC remote", ".dvc/config")
    git(repo, "push", "-q", "origin", "HEAD:main")
    dvc(repo, "push", "--run-cache")
    dvc(repo, "exp", "run", "-n", "shared-lr", "-S", "train.lr=0.002")
    dvc(repo, "exp", "push", "--run-cache", "origin", "shared-lr")  # its git ref and the outputs it made
    git(repo, "reset", "-q", "--hard")
    dvc(repo, "checkout", "--force", "dvc.yaml")

    subprocess.run(["git", "clone", "-q", "--branch", "main", str(origin), str(clone)], check=True)
    assert not (clone / "data" / "prepared").exists() and not (clone / "metrics/fc20/plots").exists()
    dvc(clone, "pull", "--run-cache", "dvc.yaml")  # the root pipeline's results (the paper's were never made here)
    assert "Data and pipelines are up to date" in dvc(clone, "status", "dvc.yaml")  # the paper's never ran here
    assert stages_run(dvc(clone, "repro")) == set()
    assert json.loads(dvc(clone, "metrics", "diff", "--json")) == {}  # the metrics are the pushed ones
    shown = json.loads(dvc(clone, "plots", "show", "--json", ROOT_PLOTS))
    assert "errors" not in shown, shown.get("errors")

    update_params(clone, {"train.lr": 0.002})
    output = dvc(clone, "repro", "--pull")  # --pull: fetch the outputs of a run restored from the run-cache
    assert not stages_run(output) & TRAININGS, output
    assert all(f"Stage '{stage}' is cached - skipping run" in output for stage in TRAININGS)
