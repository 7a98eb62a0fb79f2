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


# These params may have run to the end before (an earlier test): then the stage is up to date, or DVC would restore
# that run from its run-cache, and there would be nothing to kill or resume. So the first run is forced (--force
# --single-item: this stage alone), and the resumed one told not to use the run-cache.
REPRO = ("repro", "--no-run-cache")


def start_repro(repo: Path) -> subprocess.Popen:
    return subprocess.Popen(["dvc", "repro", "--force", "--single-item", STAGE], cwd=repo, env=VENV_ENV,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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
    assert (repo / CHECKPOINT).exists(), "the run finished before it could be killed"
    return torch.load(repo / CHECKPOINT, weights_only=True)["epoch"]


def test_killed_training_resumes_and_matches_an_uninterrupted_run(pipeline):
    repo, _ = pipeline
    update_params(repo, {"train.epochs": EPOCHS})
    done = kill_after_first_epoch(repo)
    assert 1 <= done < EPOCHS
    assert not (repo / "data/models/resnet18.pt").exists()

    resumed_output = dvc(repo, *REPRO, STAGE)
    assert f"resuming from {CHECKPOINT}: {done} epoch(s) done" in resumed_output
    resumed = logged_tables(repo / LIVE)
    assert resumed["plots/metrics/val/acc.tsv"]["step"].tolist() == list(range(EPOCHS))  # none missing or twice

    assert not (repo / CHECKPOINT).exists()  # a finished run leaves no resume state: a forced re-run starts over
    fresh_output = dvc(repo, "repro", "--force", "--single-item", STAGE)
    assert "epoch(s) done" not in fresh_output
    assert_same_metrics(resumed, logged_tables(repo / LIVE))


def test_resume_state_from_other_params_is_not_resumed(pipeline):
    repo, _ = pipeline
    update_params(repo, {"train.epochs": EPOCHS})
    kill_after_first_epoch(repo)
    update_params(repo, {"train.lr": 0.0005})
    output = dvc(repo, *REPRO, STAGE)
    assert "it was made with different params (lr); starting fresh" in output
    assert pd.read_csv(repo / LIVE / "plots/metrics/val/acc.tsv", sep="\t")["step"].tolist() == list(range(EPOCHS))


def test_resume_state_from_other_code_is_not_resumed(pipeline):
    """Fix the training code between a kill and the re-run: the epochs trained by the old code are not reused."""
    repo, _ = pipeline
    update_params(repo, {"train.epochs": EPOCHS})
    kill_after_first_epoch(repo)
    metrics_py = repo / "src/depthstudy/metrics.py"
    original = metrics_py.read_text()
    metrics_py.write_text(original + "\n# a fix made after the kill\n")
    try:
        output = dvc(repo, *REPRO, STAGE)
    finally:
        metrics_py.write_text(original)  # the later tests share this repo
    assert "it was made with different code (src/depthstudy/metrics.py); starting fresh" in output
    assert "epoch(s) done" not in output  # no "resuming from …: N epoch(s) done"


def test_an_unreadable_resume_state_stops_the_stage_and_is_kept(pipeline):
    """Only a stale state is replaced; one that cannot be read is reported, never silently overwritten."""
    repo, _ = pipeline
    (repo / CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
    (repo / CHECKPOINT).write_bytes(b"not a checkpoint")
    done = subprocess.run(["dvc", "repro", "--force", "--single-item", STAGE], cwd=repo, env=VENV_ENV,
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert f"error: {CHECKPOINT}: cannot read the resume state" in done.stderr
    assert "delete it to train from scratch" in done.stderr
    assert (repo / CHECKPOINT).read_bytes() == b"not a checkpoint"
    (repo / CHECKPOINT).unlink()

