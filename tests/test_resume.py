"""Crash-resume: `dvc repro` killed with SIGKILL mid-training resumes after the last finished epoch, and its
per-epoch metrics equal an uninterrupted run's to the bit (wall-clock figures aside)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_train import assert_same_metrics, logged_tables

from conftest import VENV_ENV, dvc, update_params

pytestmark = pytest.mark.e2e

STAGE = "train_resnet18"  # the slowest of the three: seconds per epoch, so there is time to kill it mid-run
CHECKPOINT = Path("data/checkpoints/resnet18.pt")
LIVE = Path("metrics/resnet18")
EPOCHS = 4


def start_repro(repo: Path) -> subprocess.Popen:
    return subprocess.Popen(["dvc", "repro", STAGE], cwd=repo, env=VENV_ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_after_first_epoch(repo: Path) -> int:
    """Start `dvc repro`, SIGKILL its whole process group once an epoch's checkpoint exists; → epochs done."""
    (repo / CHECKPOINT).unlink(missing_ok=True)
    proc = start_repro(repo)
    deadline = time.monotonic() + 300
    while not (repo / CHECKPOINT).exists():
        assert proc.poll() is None, "dvc repro ended before the first epoch's checkpoint appeared"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(repo / CHECKPOINT, weights_only=True)
    assert not state.get("finished"), "the run finished before it could be killed"
    return state["epoch"]


def test_killed_training_resumes_and_matches_an_uninterrupted_run(pipeline):
    repo, _ = pipeline
    update_params(repo, {"train.epochs": EPOCHS})
    done = kill_after_first_epoch(repo)
    assert 1 <= done < EPOCHS
    assert not (repo / "data/models/resnet18.pt").exists()

    resumed_output = dvc(repo, "repro", STAGE)
    assert f"resuming from {CHECKPOINT}: {done} epoch(s) done" in resumed_output
    resumed = logged_tables(repo / LIVE)
    assert resumed["plots/metrics/val/acc.tsv"]["step"].tolist() == list(range(EPOCHS))  # none missing or twice

    fresh_output = dvc(repo, "repro", "--force", STAGE)  # the finished marker is never resumed
    assert "resuming" not in fresh_output
    assert_same_metrics(resumed, logged_tables(repo / LIVE))


def test_checkpoint_from_other_params_is_ignored(pipeline):
    repo, _ = pipeline
    update_params(repo, {"train.epochs": EPOCHS})
    kill_after_first_epoch(repo)
    update_params(repo, {"train.lr": 0.0005})
    output = dvc(repo, "repro", STAGE)
    assert "made with other params or data; starting fresh" in output
    assert pd.read_csv(repo / LIVE / "plots/metrics/val/acc.tsv", sep="\t")["step"].tolist() == list(range(EPOCHS))

