"""Queued experiments: `dvc queue start -j 2` runs two variants side by side, each with its own params and results,
and `train.threads: 0` (auto) gives each run its share of the cores instead of one thread per core each."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import dvc
from depthstudy.runtime import dvc_queue_workers, set_threads

pytestmark = pytest.mark.e2e

# Two learning rates, one epoch on a smaller subset: the fastest variant that still changes every training.
VARIANTS = {"queued-lr-3e-3": 0.003, "queued-lr-3e-4": 0.0003}
REDUCED = ("-S", "train.epochs=1", "-S", "data.train_limit=100")
MODELS = ("fc20", "fc56", "resnet18")
TIMEOUT_S = 600
AUTO_THREADS = re.compile(r"train\.threads = 0 \(auto\): (\d+) DVC queue workers, so (\d+) CPU thread\(s\) each")


# --- the signal: which processes count as queue workers ----------------------------------------------------------


def fake_queue(root: Path, workers: dict[str, dict]) -> Path:
    """DVC 3's layout for a queued run: worker records under .dvc/tmp/exps/celery → the executor's workspace."""
    celery = root / ".dvc" / "tmp" / "exps" / "celery"
    celery.mkdir(parents=True)
    for name, info in workers.items():
        (celery / f"{name}.json").write_text(json.dumps(info) if isinstance(info, dict) else info)
    workspace = root / ".dvc" / "tmp" / "exps" / "tmpk2x9q_ab"
    workspace.mkdir()
    return workspace


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_queue_workers_counts_live_workers_only_inside_a_queued_run(tmp_path):
    alive = {"pid": os.getpid(), "returncode": None}
    workspace = fake_queue(tmp_path, {
        "dvc-exp-worker-1": alive,
        "dvc-exp-worker-2": {**alive, "pid": os.getppid()},
        "dvc-exp-worker-3": {"pid": os.getpid(), "returncode": 0},  # finished
        "dvc-exp-worker-4": {"pid": dead_pid(), "returncode": None},  # killed: its record stays behind
        "dvc-exp-worker-5": "{not json",
        "dvc-exp-worker-6": {"pid": 0, "returncode": None},  # pid 0 would signal our own process group
        "something-else": alive,
    })
    env = {"DVC_ROOT": str(tmp_path)}
    assert dvc_queue_workers(str(workspace), env) == 2
    assert dvc_queue_workers(str(workspace / "sub"), env) == 2  # a stage with its own wdir
    assert dvc_queue_workers(str(tmp_path), env) == 0  # `dvc repro` / `dvc exp run` in the workspace itself
    assert dvc_queue_workers(str(workspace), {}) == 0  # not run by dvc at all
    assert dvc_queue_workers(str(workspace), {"DVC_ROOT": str(tmp_path / "other")}) == 0


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_auto_threads_split_the_default_among_queue_workers(tmp_path, monkeypatch, restore_threads):
    alive = {"pid": os.getpid(), "returncode": None}
    workspace = fake_queue(tmp_path, {f"dvc-exp-worker-{n}": alive for n in (1, 2, 3)})
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(workspace)
    torch.set_num_threads(7)  # stands in for PyTorch's default: one per core
    assert set_threads(0) == 2  # 7 // 3
    torch.set_num_threads(2)
    assert set_threads(0) == 1  # never below one
    assert set_threads(5) == 5  # an explicit count always wins
    monkeypatch.chdir(tmp_path)  # the same machine, but not a queued run: the default stays
    torch.set_num_threads(7)
    assert set_threads(0) == 7


# --- end to end: the real queue -----------------------------------------------------------------------------------


def queue_states(repo: Path) -> dict[str, str]:
    """Experiment name → Queued / Running / Success / Failed, from `dvc queue status`'s table."""
    states = {}
    for line in dvc(repo, "queue", "status").splitlines():
        parts = line.split()  # task  name  created (one or two words)  status
        if len(parts) >= 4 and parts[1] in VARIANTS:
            states[parts[1]] = parts[-1]
    return states


def wait_for_queue(repo: Path) -> dict[str, str]:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        states = queue_states(repo)
        if len(states) == len(VARIANTS) and all(s in ("Success", "Failed") for s in states.values()):
            return states
        assert time.monotonic() < deadline, f"queued experiments not done after {TIMEOUT_S} s: {states}"
        time.sleep(5)  # each `dvc queue status` costs a second of CPU that the two runs need more


def stop_workers(repo: Path) -> None:
    """`dvc queue stop --kill`, then wait until no worker is left running in the background."""
    dvc(repo, "queue", "stop", "--kill")
    deadline = time.monotonic() + 60
    while "0 active, 0 idle" not in dvc(repo, "queue", "status") and time.monotonic() < deadline:
        time.sleep(1)


def experiments_by_name(repo: Path) -> dict[str, dict]:
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            if exp["name"] in VARIANTS:
                found[exp["name"]] = {"state": (exp.get("executor") or {}).get("state"), **exp["revs"][0]}
    return found


def workspace_state(repo: Path) -> tuple[str, str, str]:
    """params.yaml, dvc.lock and `git status`: what the other end-to-end tests see of the shared repo."""
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    return (repo / "params.yaml").read_text(), (repo / "dvc.lock").read_text(), status.stdout


def test_two_queued_experiments_run_side_by_side_with_their_own_params(pipeline):
    repo, _ = pipeline
    before = workspace_state(repo)
    for name, lr in VARIANTS.items():
        dvc(repo, "exp", "run", "--queue", "-n", name, "-S", f"train.lr={lr}", *REDUCED)
    assert workspace_state(repo) == before  # queueing stashes the variant's params, not the workspace's
    try:
        dvc(repo, "queue", "start", "-j", "2")  # returns at once; the two workers run in the background
        states = wait_for_queue(repo)
        logs = {name: dvc(repo, "queue", "logs", name) for name in VARIANTS}
    finally:
        stop_workers(repo)
    assert states == {name: "Success" for name in VARIANTS}, logs

    for name, log in logs.items():
        # Each training and the evaluation saw both workers and took its share of the cores.
        shares = [tuple(map(int, m)) for m in AUTO_THREADS.findall(log)]
        assert len(shares) == len(MODELS) + 1, log
        for workers, threads in shares:
            assert workers == 2 and 1 <= threads and threads * workers <= max(workers, os.cpu_count()), log

    exps = experiments_by_name(repo)
    assert set(exps) == set(VARIANTS)
    val_loss = {}
    for name, lr in VARIANTS.items():
        exp = exps[name]
        assert exp["state"] == "success" and not exp["error"], exp
        params = exp["data"]["params"]["params.yaml"]["data"]
        assert params["train"]["lr"] == lr and params["train"]["epochs"] == 1 and params["data"]["train_limit"] == 100
        metrics = exp["data"]["metrics"]
        val_loss[name] = tuple(metrics[f"metrics/{m}/metrics.json"]["data"][m]["loss"]["val"] for m in MODELS)
    first, second = val_loss.values()
    assert all(a != b for a, b in zip(first, second)), val_loss  # every model trained with its own lr
    assert workspace_state(repo) == before  # the runs happened in DVC's temporary copies
