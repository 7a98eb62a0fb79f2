"""The train stage under torchrun (`train.nproc: 2`, gloo on the CPU), as `dvc repro` runs it: it follows the
single-process run, fails fast when a rank is killed, and a killed run resumes to the bit of an unbroken one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from conftest import REPO, VENV_ENV, prepare_digits, update_params

BASE = {"data.source": "digits", "data.train_limit": 240, "train.epochs": 2, "train.threads": 1,
        "models.fc20.depth": 4, "models.fc20.width": 32, "models.fc20.dropout": 0.0}
# Two ranks vs one process with the same global batches: gloo sums the ranks' gradients where one process sums over
# the whole batch, so results differ by float rounding only (tests/test_distributed.py measured ≤ 3e-8 on weights of
# a model like this); a real mistake in the loss scaling or the sharding moves the weights by ~1e-3.
TOLERANCE = 1e-6
FAIL_WITHIN_S = 30  # a killed rank: torchrun notices at once and stops the others; this bounds a loaded machine


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return prepare_digits(tmp_path_factory.mktemp("ddp-data"), BASE)


def stage(workdir: Path, data: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, str(REPO / "stages" / "train.py"), "fc20", str(data), str(workdir / "model.pt"),
           str(workdir / "live")]
    return cmd + (["--resume", str(workdir / "resume.pt")] if resume else [])


def run(workdir: Path, data: Path, overrides: dict, resume: bool = False) -> subprocess.CompletedProcess:
    workdir.mkdir(exist_ok=True)
    prepare_params(workdir, overrides)
    done = subprocess.run(stage(workdir, data, resume), cwd=workdir, env=VENV_ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def prepare_params(workdir: Path, overrides: dict) -> None:
    (workdir / "params.yaml").write_text((REPO / "params.yaml").read_text())
    update_params(workdir, {**BASE, **overrides})


def results(workdir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    metrics = json.loads((workdir / "live" / "metrics.json").read_text())["fc20"]
    weights = torch.load(workdir / "model.pt", weights_only=True)["model"]
    return metrics, {k: v.numpy() for k, v in weights.items()}


def test_two_processes_follow_the_single_process_run(data, tmp_path):
    run(tmp_path / "one", data, {"train.nproc": 1})
    two = run(tmp_path / "two", data, {"train.nproc": 2})
    assert "torch.distributed.run --standalone --nproc-per-node=2" in two.stdout
    assert json.loads((tmp_path / "two" / "live" / "run.json").read_text())["processes"] == 2
    (m1, w1), (m2, w2) = results(tmp_path / "one"), results(tmp_path / "two")
    for name, want in w1.items():
        np.testing.assert_allclose(w2[name], want, rtol=0, atol=TOLERANCE, err_msg=name)
    assert m2["train"] == m1["train"] and m2["val"] == m1["val"]  # accuracies: counts, equal
    for split in ("train", "val"):
        assert m2["loss"][split] == pytest.approx(m1["loss"][split], rel=TOLERANCE)


def test_a_batch_size_the_processes_cannot_share_is_one_line_before_anything_starts(data, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    prepare_params(tmp_path, {"train.nproc": 3})
    done = subprocess.run(stage(tmp_path, data), cwd=tmp_path, env=VENV_ENV, capture_output=True, text=True)
    assert done.returncode == 2 and "torch.distributed.run" not in done.stdout
    assert done.stderr.strip() == (
        "error: params.yaml: train.batch_size must be a multiple of train.nproc = 3 (each process takes an equal "
        "share) (got 32)")


def start(workdir: Path, data: Path, overrides: dict) -> subprocess.Popen:
    workdir.mkdir(exist_ok=True)
    prepare_params(workdir, overrides)
    return subprocess.Popen(stage(workdir, data, resume=True), cwd=workdir, env=VENV_ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_first_epoch(proc: subprocess.Popen, workdir: Path) -> None:
    deadline = time.monotonic() + 300
    while not (workdir / "resume.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no resume state after 300 s"
        time.sleep(0.05)


def rank_process(proc: subprocess.Popen, rank: int) -> psutil.Process:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "train.py" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no rank {rank} among the stage's processes")


LONG = {"train.nproc": 2, "train.epochs": 40, "models.fc20.width": 256}  # seconds of training: time to kill it


def test_a_killed_rank_fails_the_stage_within_seconds(data, tmp_path):
    proc = start(tmp_path, data, LONG)
    try:
        wait_for_first_epoch(proc, tmp_path)
        rank_process(proc, 1).kill()
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=FAIL_WITHIN_S + 30)
        elapsed = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and elapsed < FAIL_WITHIN_S, (elapsed, out, err)
    assert "SIGKILL" in err  # torchrun's summary names the rank that died and how
    assert not (tmp_path / "model.pt").exists()


def test_a_killed_ddp_run_resumes_and_matches_an_unbroken_one(data, tmp_path):
    overrides = {**LONG, "train.epochs": 20, "models.fc20.dropout": 0.3}  # dropout: each rank's stream must resume
    proc = start(tmp_path / "killed", data, overrides)
    try:
        wait_for_first_epoch(proc, tmp_path / "killed")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole stage: torchrun and both ranks
        proc.communicate()
    assert not (tmp_path / "killed" / "model.pt").exists(), "the run finished before it could be killed"
    resumed = run(tmp_path / "killed", data, overrides, resume=True)
    assert "resuming from" in resumed.stdout
    run(tmp_path / "unbroken", data, overrides, resume=True)
    (m1, w1), (m2, w2) = results(tmp_path / "killed"), results(tmp_path / "unbroken")
    assert m1 == m2
    for name, want in w2.items():
        np.testing.assert_array_equal(w1[name], want, err_msg=name)
    curves = [pd.read_csv(tmp_path / r / "live/plots/metrics/val/loss.tsv", sep="\t") for r in ("killed", "unbroken")]
    pd.testing.assert_frame_equal(*curves)  # one row per epoch, none twice or missing
