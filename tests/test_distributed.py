"""Data-parallel training on the CPU, the library's training loop (train.fit) in 2 gloo processes: it follows the
single-process optimisation, resumes exactly, and fails fast when a rank dies or hangs; sharding, loss scaling and
the queue worker's GPU, checked without processes. tests/test_ddp_stage.py runs the stage itself under torchrun."""

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from depthstudy.archive import build_digits_archive
from depthstudy.data import Normalize, Split
from depthstudy.distributed import (
    World,
    cuda_device,
    per_rank_batch,
    process_group,
    queue_worker,
    rank_batches,
    rank_loss,
    restore_rng_state,
    rng_states,
    seed_rank,
    shard,
    sync_batchnorm,
    world_from_env,
    wrap,
)
from depthstudy.errors import UserError
from depthstudy.models import FCNet
from depthstudy.params import DataParams, TrainParams
from depthstudy.prepare import prepare
from depthstudy.train import fit, make_optimizer

CPU = torch.device("cpu")
SEED = 0
BATCH = 32
EPOCHS = 2
TRAIN_IMAGES = 8 * BATCH + 1  # the last global batch holds 1 image: rank 0 trains on it, rank 1 on an empty shard
# DDP vs one process, same global batches: the ranks' gradients are summed by gloo's all-reduce where one process
# sums over the whole batch, so each step differs by float rounding. Measured over the 18 steps here: final weights
# (|w| <= 0.19) at most 3.0e-8 apart, val loss 1.2e-7 relative, accuracies equal. The tolerances leave
# ~30× margin and stay ~5000× below a real mistake: per-rank mean losses instead of rank_loss's scaling (which
# halves the last, 1-image batch's gradient) moved the weights by 4.7e-3; dropping that batch, by 2.7e-2.
WEIGHT_TOL = 1e-6
LOSS_RTOL = 1e-6
KILL_TIMEOUT_S = 3  # the process group's timeout in the kill tests


# --- pure: batch sizes, shards, loss scaling ---------------------------------------------------------------------


def test_per_rank_batch_splits_the_global_batch_or_refuses_in_one_line():
    assert per_rank_batch(32, 8) == 4
    with pytest.raises(UserError) as e:
        per_rank_batch(32, 3)
    assert "train.batch_size = 32" in str(e.value) and "3 processes" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("n, batch, size", [(100, 32, 4), (257, 32, 2), (70, 8, 8), (5, 4, 4)])
def test_shards_are_disjoint_and_concatenate_to_the_single_process_batch(n, batch, size):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    for start in range(0, n, batch):
        parts = [shard(order[start : start + batch], World(rank, size)) for rank in range(size)]
        assert torch.equal(torch.cat(parts), order[start : start + batch])  # disjoint, complete, in order
        assert len(parts[0]) > 0 and max(map(len, parts)) - min(map(len, parts)) <= 1
    sizes = [len(shard(order[:batch], World(r, size))) for r in range(size)]
    assert sizes == [batch // size] * size  # full batches split evenly


def test_rank_batches_follow_one_permutation_with_the_global_step_size():
    split = Split(torch.arange(70, dtype=torch.uint8).view(70, 1, 1, 1), torch.arange(70))
    steps = [list(rank_batches(split, 8, torch.Generator().manual_seed(SEED), World(r, 4))) for r in range(4)]
    order = torch.randperm(70, generator=torch.Generator().manual_seed(SEED))
    assert len({len(s) for s in steps}) == 1  # every rank takes the same number of steps
    for i, per_rank in enumerate(zip(*steps)):
        assert torch.equal(torch.cat([labels for _, labels, _ in per_rank]), order[8 * i : 8 * i + 8])
        assert {count for _, _, count in per_rank} == {min(8, 70 - 8 * i)}
        assert all(torch.equal(images.view(-1), labels.to(torch.uint8)) for images, labels, _ in per_rank)


def test_rank_losses_average_to_the_global_mean_gradient_even_with_uneven_and_empty_shards():
    torch.manual_seed(0)
    model = FCNet(depth=3, width=16, dropout=0.0)
    x, y = torch.randn(3, 3, 32, 32), torch.randint(0, 10, (3,))
    expected = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    size, idx = 4, torch.arange(3)  # shards of 1, 1, 1 and 0 images
    per_rank = []
    for rank in range(size):
        part = shard(idx, World(rank, size))
        loss, _ = rank_loss(model(x[part]), y[part], len(idx), World(rank, size))
        per_rank.append(torch.autograd.grad(loss, list(model.parameters())))
    for want, grads in zip(expected, zip(*per_rank)):
        torch.testing.assert_close(torch.stack(grads).mean(0), want)  # what DDP's averaging all-reduce computes


def test_rank_loss_in_a_world_of_one_is_the_mean_to_the_bit():
    logits, labels = torch.randn(13, 10, requires_grad=True), torch.randint(0, 10, (13,))
    loss, total = rank_loss(logits, labels, 13, World())
    mean = F.cross_entropy(logits, labels)
    assert torch.equal(loss, mean) and torch.equal(total, F.cross_entropy(logits, labels, reduction="sum"))
    assert torch.equal(*(torch.autograd.grad(t, logits)[0] for t in (loss, mean)))


# --- pure: the environment, devices, BatchNorm, RNG ----------------------------------------------------------------


def test_world_comes_from_torchruns_environment():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "h"}
    assert world_from_env(env) == World(rank=5, size=8, local_rank=1, local_size=4)
    assert world_from_env({}) == World() and World().is_main and not world_from_env(env).is_main


def test_cuda_device_gives_each_queue_worker_and_local_rank_its_own_gpu():
    assert cuda_device(World(), None, 8) == torch.device("cuda", 0)
    assert [cuda_device(World(), n, 4).index for n in (1, 2, 3, 4, 5)] == [0, 1, 2, 3, 0]  # -j 5 on 4 GPUs shares
    ranks = [World(r, 4, r, 4) for r in range(4)]
    assert [cuda_device(w, n, 8).index for n in (1, 2) for w in ranks] == list(range(8))  # 2 workers × 4 ranks


def test_sync_batchnorm_keeps_state_dict_keys_and_refuses_the_cpu():
    def net():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())

    model = net()
    assert sync_batchnorm(model, World(), CPU) is model
    with pytest.raises(UserError, match="CUDA only"):
        sync_batchnorm(net(), World(0, 2), CPU)
    synced = sync_batchnorm(net(), World(0, 2), torch.device("cuda", 0))  # converting needs no GPU
    assert isinstance(synced[1], nn.SyncBatchNorm)
    net().load_state_dict(synced.state_dict())  # strict: the evaluate stage loads these weights into the plain model


def test_each_rank_gets_its_own_dropout_stream_and_rank_0_keeps_the_single_process_one():
    draws = []
    for rank in range(3):
        torch.manual_seed(SEED)
        seed_rank(SEED, World(rank, 3))
        draws.append(torch.rand(4))
    torch.manual_seed(SEED)
    assert torch.equal(draws[0], torch.rand(4))
    assert not torch.equal(draws[1], draws[0]) and not torch.equal(draws[2], draws[1])


def test_rng_state_round_trips_in_a_world_of_one():
    states = rng_states(World(), CPU)
    expected = torch.rand(3)
    torch.manual_seed(123)
    restore_rng_state(states, World(), CPU)
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(UserError, match="written by 1 processes, this run has 2"):
        restore_rng_state(states, World(0, 2), CPU)


# --- the queue worker this process runs under ----------------------------------------------------------------------


def test_queue_worker_is_the_recorded_worker_among_this_process_ancestors(tmp_path):
    """DVC's records under .dvc/tmp/exps/celery; a stage runs in a child of its worker (here: of this process)."""
    celery = tmp_path / ".dvc" / "tmp" / "exps" / "celery"
    celery.mkdir(parents=True)
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # alive, not an ancestor
    try:
        records = {
            1: {"pid": os.getpid(), "returncode": 0},  # finished: its pid may since belong to another process
            2: {"pid": sibling.pid, "returncode": None},
            3: {"pid": os.getpid(), "returncode": None},
            4: {"pid": sibling.pid + 10**6, "returncode": None},  # a killed worker's record stays behind
        }
        for n, info in records.items():
            (celery / f"dvc-exp-worker-{n}.json").write_text(json.dumps(info))
        (celery / "dvc-exp-worker-5.json").write_text("{not json")
        code = "from depthstudy.distributed import queue_worker; print(queue_worker())"
        env = {**os.environ, "DVC_ROOT": str(tmp_path)}
        child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert child.stdout.strip() == "3"
        assert queue_worker({"DVC_ROOT": str(tmp_path)}) is None  # this process is the worker, not run by it
        assert queue_worker({}) is None  # not run by dvc
    finally:
        sibling.kill()
        sibling.wait()


# --- real processes: 2 gloo ranks --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, size: int, port: int, timeout_s: float, job, args: tuple, out: Path) -> None:
    """One rank, started as torchrun starts it (its environment variables, then the process group); writes
    out/<rank>.pkl: (job's return value or None, None or the traceback, the time.time() it ended)."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    world = world_from_env()
    try:
        with process_group(world, CPU, timedelta(seconds=timeout_s)):
            result = (job(world, *args), None)
    except Exception:
        result = (None, traceback.format_exc())
    (out / f"{rank}.pkl").write_bytes(pickle.dumps((*result, time.time())))


def run_ranks(out: Path, job, *args, size: int = 2, timeout_s: float = 60, wait_s: float = 60) -> dict[int, tuple]:
    """Run ``job(world, *args)`` on ``size`` fresh processes → {rank: (return value, error, end)} for the ranks that
    finished (files, not a pipe: a rank blocked writing a large result to a pipe nobody reads would never exit)."""
    out.mkdir()
    # Every rank forks from one server that imported torch, torch._dynamo (which the first optimizer imports) and
    # this module once, ~6 s on a busy 2-core machine, instead of importing them anew in each rank as "spawn" would.
    # The server is a fresh process that never ran torch code, so forking it is safe.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", __name__])
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, size, port, timeout_s, job, args, out)) for r in range(size)]
    for p in procs:
        p.start()
    procs[0].join(wait_s)
    for p in procs[1:]:  # the others finish with rank 0 (which evaluates last), unless a test killed or stopped one
        p.join(2)
    for p in procs:
        if p.is_alive():  # hung: the test fails on its missing result, the process does not outlive the test
            p.kill()
            p.join()
    return {int(f.stem): pickle.loads(f.read_bytes()) for f in out.glob("*.pkl")}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Split, Split]:
    """(train, val) from the digits sample: TRAIN_IMAGES = 8 full batches + 1 image, and 64 validation images."""
    archive = tmp_path_factory.mktemp("digits") / "archive.tar.gz"
    build_digits_archive(archive)
    splits, _ = prepare(archive, DataParams(source="digits", train_limit=330, val_fraction=0.2))
    train = splits["train"]
    return Split(train.images[:TRAIN_IMAGES], train.labels[:TRAIN_IMAGES]), splits["val"]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs: the same kernels, so only the reduction order differs
    yield
    torch.set_num_threads(before)


def fresh_run(world: World, dropout: float):
    """Model, optimizer and shuffling generator as stages/train.py builds them, seeded alike on every rank."""
    torch.manual_seed(SEED)
    model = FCNet(depth=4, width=32, dropout=dropout)
    seed_rank(SEED, world)
    return model, wrap(model, world, CPU), make_optimizer(model, 1e-3, CPU), torch.Generator().manual_seed(SEED)


def train(world, model, ddp, optimizer, generator, data, epochs, start_epoch=1) -> list[dict]:
    """The project's loop (train.fit) from ``start_epoch`` to ``epochs`` → each epoch's metrics (val on rank 0)."""
    train_split, val = data
    params = TrainParams(epochs=epochs, batch_size=BATCH, lr=1e-3, seed=SEED)
    history = []
    fit(ddp, optimizer, generator, train_split, val, params, Normalize([0.3] * 3, [0.3] * 3, CPU), CPU,
        lambda epoch, result: history.append(result.metrics), start_epoch=start_epoch, world=world)
    return history


def weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _train_job(world: World, data, dropout: float, epochs: int):
    model, ddp, optimizer, generator = fresh_run(world, dropout)
    history = train(world, model, ddp, optimizer, generator, data, epochs)
    return weights(model), history


def finished(ranks: dict[int, tuple], size: int = 2) -> list:
    """Every rank's return value; fails with the ranks' errors when one did not finish."""
    assert sorted(ranks) == list(range(size)) and all(error is None for _, error, _ in ranks.values()), ranks
    return [ranks[r][0] for r in range(size)]


def test_two_gloo_ranks_follow_the_single_process_run(digits, one_thread, tmp_path):
    single_weights, single_history = _train_job(World(), digits, 0.0, EPOCHS)
    (ddp_weights, ddp_history), (rank1_weights, _) = finished(
        run_ranks(tmp_path / "out", _train_job, digits, 0.0, EPOCHS)
    )
    for name, want in single_weights.items():
        np.testing.assert_array_equal(rank1_weights[name], ddp_weights[name])  # the ranks stay in lockstep
        np.testing.assert_allclose(ddp_weights[name], want, rtol=0, atol=WEIGHT_TOL, err_msg=name)
    for single, ddp in zip(single_history, ddp_history, strict=True):
        assert single.keys() == ddp.keys()
        assert ddp["val/acc"] == single["val/acc"] and ddp["train/acc"] == single["train/acc"]
        for name in ("train/loss", "val/loss"):
            assert ddp[name] == pytest.approx(single[name], rel=LOSS_RTOL), name


def _save_after_one_epoch_job(world: World, data, path: Path):
    """Two epochs unbroken, then a fresh run that stops after one and leaves a resume state (rank 0 writes it)."""
    model, ddp, optimizer, generator = fresh_run(world, dropout=0.3)
    train(world, model, ddp, optimizer, generator, data, EPOCHS)
    unbroken = weights(model)
    model, ddp, optimizer, generator = fresh_run(world, dropout=0.3)
    train(world, model, ddp, optimizer, generator, data, 1)
    states = rng_states(world, CPU)  # every rank's dropout stream: a collective, so before rank 0 alone writes
    if world.is_main:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "shuffle": generator.get_state(),
            "rng": states,
        }
        torch.save(state, path)
    return unbroken


def _resume_job(world: World, data, path: Path):
    model, ddp, optimizer, generator = fresh_run(world, dropout=0.3)
    torch.manual_seed(1234 + world.rank)  # a different stream, so only restoring can make the runs agree
    state = torch.load(path, weights_only=True)  # every rank reads the state rank 0 wrote
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["shuffle"])
    restore_rng_state(state["rng"], world, CPU)
    train(world, model, ddp, optimizer, generator, data, EPOCHS, start_epoch=2)
    return weights(model)


def test_resuming_under_ddp_matches_an_unbroken_ddp_run_to_the_bit(digits, tmp_path):
    path = tmp_path / "resume.pt"
    unbroken, _ = finished(run_ranks(tmp_path / "first", _save_after_one_epoch_job, digits, path))
    resumed, _ = finished(run_ranks(tmp_path / "resumed", _resume_job, digits, path))
    for name, want in unbroken.items():
        np.testing.assert_array_equal(resumed[name], want, err_msg=name)


def _dying_job(world: World, data, how: str, stamp: Path):
    steps = []

    def die(*_) -> None:  # a forward pre-hook: runs before each of the model's forward passes
        steps.append(1)
        if world.rank == 1 and len(steps) == 4:
            stamp.write_text(str(time.time()))
            if how == "exit":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGSTOP)  # hangs, as a rank stuck in a driver call or a deadlock does

    model, ddp, optimizer, generator = fresh_run(world, dropout=0.0)
    model.register_forward_pre_hook(die)
    train(world, model, ddp, optimizer, generator, data, EPOCHS)


@pytest.mark.parametrize(
    "how, message, within_s",
    [("exit", "Connection", (0, 1)), ("stop", f"Timed out waiting {KILL_TIMEOUT_S}000ms", (KILL_TIMEOUT_S, 5))],
)
def test_a_dead_or_hung_rank_makes_the_other_fail_within_the_timeout(digits, tmp_path, how, message, within_s):
    """A dead rank's connections reset at once; a hung one is given up on after the process group's timeout."""
    stamp = tmp_path / "rank1_stopped_at"
    ranks = run_ranks(tmp_path / "out", _dying_job, digits, how, stamp, timeout_s=KILL_TIMEOUT_S, wait_s=30)
    assert list(ranks) == [0], ranks  # rank 1 died (exit) or hung until killed (stop), without a result
    _, error, failed_at = ranks[0]
    assert error and message in error, ranks
    assert within_s[0] <= failed_at - float(stamp.read_text()) < within_s[1], error
