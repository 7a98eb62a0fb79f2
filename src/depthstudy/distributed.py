"""Data-parallel training under torchrun: the process group, one global batch cut into per-rank shards, rank-0 duties,
per-rank RNG for resuming, and one GPU per `dvc queue` worker.

torchrun starts one process (rank) per device, each running the same stage. The optimisation stays the single-process
one: every rank draws the same seeded permutation per epoch, each step's global batch (``train.batch_size`` images)
is cut into contiguous per-rank shards, DDP averages the gradients, and each rank's loss is scaled so that this
average is the gradient of the global batch's mean loss. Weights and metrics then match a single-process run up to
the order of float additions (tests/test_distributed.py measures how far).

Evaluation runs on rank 0 alone, over the whole split, through the unwrapped model: the same code and batches as a
single process, so val metrics follow from the weights exactly; the other ranks wait at their next collective.
"""

import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from depthstudy.data import Split
from depthstudy.errors import UserError

# How long a collective may wait for the slowest rank before it fails. A rank that dies is noticed at once (gloo's
# TCP connection resets; torchrun kills the other ranks within its 0.1 s monitor interval); this bounds a rank that
# hangs. It must exceed what rank 0 does alone between two collectives: validation and writing the resume state
# (FC56's is ~10 GiB). NCCL enforces it through its watchdog, which by default (TORCH_NCCL_ASYNC_ERROR_HANDLING=3)
# ends the process on a timeout; gloo applies it to every collective. Ten minutes is NCCL's default; gloo's is 30.
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """Where this process sits among torchrun's processes; outside torchrun, rank 0 of a world of 1."""

    rank: int = 0  # 0 … size-1 over all nodes
    size: int = 1
    local_rank: int = 0  # 0 … local_size-1 on this node: which of the node's GPUs this rank drives
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, evaluates, and writes dvclive metrics, the weights and the resume state."""
        return self.rank == 0


def world_from_env(environ: Mapping[str, str] = os.environ) -> World:
    """The ``World`` torchrun describes in RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; ``World()`` without."""
    if "WORLD_SIZE" not in environ:
        return World()
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    return World(*(int(environ[k]) for k in keys))


@contextmanager
def process_group(world: World, device: torch.device, timeout: timedelta = TIMEOUT) -> Iterator[None]:
    """Join torchrun's process group for the ``with`` block (nothing to join in a world of 1).

    NCCL on CUDA (``device`` must be this rank's GPU, see ``cuda_device``), gloo on the CPU. MASTER_ADDR and
    MASTER_PORT come from torchrun's environment. After an error the group is left as it is: the process exits and
    torchrun stops the other ranks, whereas tearing down a group whose peer is gone can itself block.
    """
    if world.size == 1:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    elif device.type == "cpu":
        dist.init_process_group("gloo", timeout=timeout)
    else:
        raise UserError(f"params.yaml: train.device is {device.type}, but torchrun runs on cuda or cpu only")
    yield
    dist.barrier()  # tear down in step: rank 0 validates and writes the outputs after the last collective
    dist.destroy_process_group()


def exit_with_launcher(world: World, poll_s: float = 1.0) -> None:
    """Under torchrun, end this rank as soon as torchrun (its parent) is gone.

    torchrun starts each rank in a session of its own, so a SIGKILL to the stage's process group (a lost terminal,
    `kill -9`, a queue worker killed) ends torchrun but not the ranks: orphans that would train on and write the
    weights and the resume state after DVC has given the stage up. A daemon thread watching the parent pid ends them
    within ``poll_s`` instead. (torchrun forwards SIGTERM and SIGINT itself.)
    """
    if world.size == 1:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        print(f"error: rank {world.rank}: torchrun is gone; stopping", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-torchrun", daemon=True).start()


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global batch; refuses a batch size the world size does not divide."""
    if batch_size % world_size:
        raise UserError(
            f"params.yaml: train.batch_size = {batch_size} cannot be split evenly among {world_size} processes "
            f"(torchrun's world size); use a multiple of {world_size}"
        )
    return batch_size // world_size


def shard(indices: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's contiguous slice of one global batch: the ranks' slices, in rank order, concatenate to ``indices``.

    A full batch splits evenly; a short last batch of m images into slices of ⌈m/W⌉ or ⌊m/W⌋, the longer first, so
    rank 0's slice is never empty and a rank's is empty when m < W (it then still runs forward and backward).
    """
    return torch.tensor_split(indices, world.size)[world.rank]


def rank_batches(
    split: Split, batch_size: int, generator: torch.Generator, world: World
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Yield this rank's (uint8 images, labels, global batch size) for each step of one shuffled epoch.

    The permutation is drawn as depthstudy.train.batches draws it (one ``randperm`` per epoch from ``generator``,
    seeded alike on every rank), so in a world of 1 these are its batches. Every rank takes the same number of steps.
    """
    per_rank_batch(batch_size, world.size)
    n = len(split.labels)
    order = torch.randperm(n, generator=generator).to(split.images.device)
    for start in range(0, n, batch_size):
        idx = shard(order[start : start + batch_size], world)
        yield split.images.index_select(0, idx), split.labels.index_select(0, idx), min(batch_size, n - start)


def rank_loss(
    logits: torch.Tensor, labels: torch.Tensor, global_count: int, world: World
) -> tuple[torch.Tensor, torch.Tensor]:
    """→ (the loss this rank backpropagates, the sum of its per-image losses, detached, for the epoch's metrics).

    DDP averages gradients, (1/W) Σ_r ∇L_r. With L_r = (Σ_{i in shard r} loss_i) · W / m that is the gradient of
    the global batch's mean loss (1/m) Σ_i loss_i, whatever the shard sizes; per-rank means would weight a 1-image
    shard like a 16-image one. An empty shard gives L_r = 0, zero gradients, and still joins DDP's all-reduce.
    In a world of 1 this is F.cross_entropy's mean to the bit (sum / m), on the CPU at least.
    """
    total = F.cross_entropy(logits, labels, reduction="sum")
    return total / (global_count / world.size), total.detach()


def all_reduce(t: torch.Tensor, world: World, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """``t`` reduced over the ranks, in place (unchanged in a world of 1): epoch totals such as loss sums and correct
    counts (SUM), or the first non-finite step (MIN, with "none" encoded as a large number)."""
    if world.size > 1:
        dist.all_reduce(t, op)
    return t


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks (it broadcasts rank 0's initial weights and
    buffers), else ``model`` itself. Keep the unwrapped model for state_dict, weight_layers and evaluation: DDP's
    forward broadcasts BatchNorm buffers, a collective that would hang when rank 0 evaluates alone."""
    if world.size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sync_batchnorm(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """Replace BatchNorm layers with SyncBatchNorm, which normalises over the global batch instead of each shard.

    Under DDP each rank's BatchNorm sees only its B/W images: ResNet-18 at batch 32 on 8 GPUs normalises over 4
    images (noisier statistics than the seed's 32: a different, regularised optimisation), and a 1-image shard at
    1×1 spatial size (ResNet-18's layer4 on 32×32 inputs with the ImageNet stem) is an error in training mode.
    The running statistics kept for evaluation are rank 0's, which DDP broadcasts at every forward. SyncBatchNorm
    all-reduces each layer's mean and variance, so training matches a single process again, at the cost of two
    small collectives per BatchNorm layer per step. It runs on GPUs only; state_dict keys are unchanged, so the
    weights load into the plain model for evaluation. A world of 1 needs nothing and gets ``model`` back.
    """
    if world.size == 1:
        return model
    if device.type != "cuda":
        raise UserError("SyncBatchNorm runs on CUDA only (PyTorch's implementation); train on cuda or without it")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


# --- random state: one dropout stream per rank, saved and restored per rank ----------------------------------------


def seed_rank(seed: int, world: World) -> None:
    """Give every rank > 0 its own dropout stream (rank 0 keeps the single-process one); call after building the model.

    Seeded alike, all ranks would draw the same dropout masks for their shards' i-th images: masks correlated
    across the global batch, unlike a single process. The shuffling generator stays shared (it must be identical).
    """
    if world.rank > 0:
        # (seed, rank) mixed into 32 bits, all the CPU generator keeps: seed + rank would repeat run seed+1's stream
        torch.manual_seed(int(np.random.SeedSequence([seed, world.rank]).generate_state(1)[0]))


def rng_states(world: World, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Every rank's torch RNG state (CPU, and its CUDA device's), in rank order, on rank 0; [] on the others.

    A collective: all ranks call it at the same point, e.g. when rank 0 is about to write the resume state.
    """
    mine = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    if world.size == 1:
        return [mine]
    gathered = [None] * world.size if world.is_main else None
    dist.gather_object(mine, gathered, dst=0)
    return gathered or []


def restore_rng_state(states: list[dict[str, torch.Tensor]], world: World, device: torch.device) -> None:
    """Set this rank's RNG state from ``rng_states``' list (as loaded from the resume state by every rank)."""
    if len(states) != world.size:
        raise UserError(f"the resume state was written by {len(states)} processes, this run has {world.size}")
    mine = states[world.rank]
    torch.set_rng_state(mine["cpu"].cpu())
    if device.type == "cuda" and mine["cuda"] is not None:
        torch.cuda.set_rng_state(mine["cuda"].cpu(), device)


# --- one GPU per `dvc queue` worker --------------------------------------------------------------------------------


def queue_worker(environ: Mapping[str, str] = os.environ) -> int | None:
    """The number n of the `dvc queue` worker (dvc-exp-worker-<n>, n = 1 … N for `dvc queue start -j N`) whose
    process tree this process runs in; None outside a queued experiment.

    DVC 3 spawns each worker as `dvc exp queue-worker` and records its pid in
    $DVC_ROOT/.dvc/tmp/exps/celery/dvc-exp-worker-<n>.json (dvc_task's ManagedProcess); the worker runs the
    experiment as a child (`dvc exp exec-run`), which runs the stage's command. So the worker whose pid is among this
    process's ancestors is ours; a leftover record of a dead worker cannot match a live ancestor.
    """
    root = environ.get("DVC_ROOT")
    if not root:
        return None
    import psutil  # a dependency of dvc; needed only here

    ancestors = {p.pid for p in psutil.Process().parents()}
    for record in sorted((Path(root) / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json")):
        try:
            state = json.loads(record.read_text())
            n = int(record.stem.removeprefix("dvc-exp-worker-"))
        except (OSError, ValueError):
            continue
        # returncode is null while the worker runs; a finished worker's pid may since belong to another process
        if isinstance(state, dict) and state.get("returncode") is None and state.get("pid") in ancestors:
            return n
    return None


def cuda_device(world: World, worker: int | None, device_count: int) -> torch.device:
    """The GPU this process trains on: queue worker n (1-based) owns the n-th block of ``world.local_size`` GPUs and
    local rank r takes GPU r of its block, wrapping around when there are fewer GPUs than that.

    One process: cuda:0; `dvc queue start -j 4` on 4 GPUs: worker n on cuda:n-1; torchrun --nproc-per-node 4 under
    `-j 2` on 8 GPUs: worker 1 on cuda:0-3, worker 2 on cuda:4-7.
    """
    block = (worker - 1 if worker else 0) * world.local_size
    return torch.device("cuda", (block + world.local_rank) % device_count)
