"""The training loop: uint8 tensors batched and normalised on the device, Adam, cross-entropy, per-layer grad norms."""

import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depthstudy.data import Split
from depthstudy.errors import UserError
from depthstudy.metrics import classification_metrics
from depthstudy.models import NUM_CLASSES, weight_layers
from depthstudy.params import TrainParams


def pick_device(name: str) -> torch.device:
    """``auto`` = CUDA, then Apple's MPS, then the CPU; an explicit device that is absent is an error."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available[name]:
        raise UserError(f"params.yaml: train.device is {name!r}, but this machine has no {name} device (try auto)")
    return torch.device(name)


def seed_everything(seed: int, threads: int = 0) -> int:
    """Seed Python, numpy and torch, and set the CPU thread count; returns the count in effect.

    ``threads`` 0 = auto: PyTorch's default (one per core), divided among the workers when this process runs a
    queued experiment (`dvc queue start -j N`), so that N parallel runs share the cores instead of thrashing them.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if not threads and (workers := dvc_queue_workers()) > 1:
        threads = max(1, torch.get_num_threads() // workers)
        print(f"train.threads = 0 (auto): {workers} DVC queue workers, so {threads} CPU thread(s) each", flush=True)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def dvc_queue_workers(cwd: str | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """How many `dvc queue` workers are alive, if this process runs a queued experiment; 0 otherwise.

    DVC 3.x runs a queued experiment in a copy at $DVC_ROOT/.dvc/tmp/exps/tmp*/, with DVC_ROOT set to the
    project's root (dvc/repo/experiments/queue/base.py, stage/run.py); `dvc queue start -j N` records each worker
    it spawns in .dvc/tmp/exps/celery/dvc-exp-worker-<n>.json, {"pid": …, "returncode": null while it runs}
    (dvc_task's ManagedProcess). Anything else (a workspace run, another layout) counts as no queue.
    """
    root = environ.get("DVC_ROOT")
    if not root:
        return 0
    exps = Path(os.path.realpath(root)) / ".dvc" / "tmp" / "exps"
    if not Path(os.path.realpath(cwd or os.getcwd())).is_relative_to(exps):
        return 0
    alive = 0
    for info in (exps / "celery").glob("dvc-exp-worker-*.json"):
        try:
            state = json.loads(info.read_text())
            pid = state["pid"]
            if state["returncode"] is not None or not isinstance(pid, int) or pid <= 0:
                continue
            os.kill(pid, 0)  # signal 0: only asks whether the process exists (a killed worker leaves its file)
        except PermissionError:
            pass  # it exists, as another user's process
        except (OSError, ValueError, KeyError, TypeError):
            continue
        alive += 1
    return alive


def to_device(split: Split, device: torch.device) -> Split:
    """The whole split on ``device``, still uint8 (CIFAR-10's 60k images are 184 MB): no copy per batch."""
    return Split(split.images.to(device), split.labels.to(device))


def place_model(model: nn.Module, device: torch.device, compile: bool = False) -> tuple[nn.Module, bool]:
    """Move ``model`` to ``device`` with the fast settings there → (model, whether inputs should be channels_last).

    On CUDA, conv nets run NHWC and cuDNN picks its fastest kernels; ``compile`` uses torch.compile, with CUDA
    graphs on CUDA (at batch 32 a ResNet-18 step is bound by kernel launches). On the CPU nothing changes.
    """
    model = model.to(device)
    channels_last = device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    if compile:
        model.compile(mode="max-autotune" if device.type == "cuda" else None)
    return model, channels_last


class Normalize:
    """Turn a batch of uint8 images (B, 3, 32, 32) into float32, standardised with the training split's stats.

    ``channels_last`` lays the batch out NHWC, the fast layout for convolutions on CUDA (same values).
    """

    def __init__(self, mean: list[float], std: list[float], device: torch.device, channels_last: bool = False):
        self.scale = (1 / (255 * torch.tensor(std, device=device))).view(1, 3, 1, 1)
        self.shift = (-torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mul_(self.scale).add_(self.shift).contiguous(memory_format=self.memory_format)


def batches(
    split: Split, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches, shuffled by ``generator`` when given; the last batch may be short."""
    n = len(split.labels)
    if generator is None:
        for start in range(0, n, batch_size):
            yield split.images[start : start + batch_size], split.labels[start : start + batch_size]
        return
    # index_select, not images[idx]: the same rows, ~20× faster per batch (benchmarks/RESULTS.md)
    order = torch.randperm(n, generator=generator).to(split.images.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield split.images.index_select(0, idx), split.labels.index_select(0, idx)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    batch_size: int,
    generator: torch.Generator,
    normalize: Normalize,
    device: torch.device,
    amp: bool = False,
) -> dict:
    """One pass over ``split`` in train mode → loss, accuracy, throughput, each layer's mean grad norm, and the
    index of the first step whose loss was not finite (-1 if none)."""
    model.train()
    layers = [m for _, m in weight_layers(model)]
    grad_sum = torch.zeros(len(layers), device=device, dtype=torch.float64)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    bad_step = torch.full((), -1, device=device, dtype=torch.int64)  # first step with a non-finite loss
    steps = 0
    start = time.perf_counter()
    for images, labels in batches(split, batch_size, generator):
        x, y = normalize(images.to(device, non_blocking=True)), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Sums stay on the device (no sync per step); the epoch's mean is read once at the end.
        grad_sum += torch.stack([torch.linalg.vector_norm(m.weight.grad) for m in layers]).double()
        optimizer.step()
        loss_sum += loss.detach().double() * len(y)
        bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), steps, bad_step)
        correct += (logits.argmax(dim=1) == y).sum()
        steps += 1
    loss_value = loss_sum.item()
    seconds = time.perf_counter() - start
    n = len(split.labels)
    return {
        "loss": loss_value / n,
        "acc": correct.item() / n,
        "images_per_s": n / seconds,
        "bad_step": int(bad_step.item()),
        "grad_norms": (grad_sum / max(steps, 1)).tolist(),
    }


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, batch_size: int, normalize: Normalize, device: torch.device, amp: bool = False
):
    """Eval-mode pass → (mean cross-entropy, (N,) predicted classes as a numpy array)."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    preds = []
    for images, labels in batches(split, batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(normalize(images.to(device)))
        loss_sum += F.cross_entropy(logits.float(), labels.to(device), reduction="sum").double()
        preds.append(logits.argmax(dim=1).cpu())
    return loss_sum.item() / len(split.labels), torch.cat(preds).numpy()


EpochLogger = Callable[[int, dict[str, float], list[float]], None]


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    # fused Adam updates in place, one kernel per parameter group: the least memory and the fastest here.
    return torch.optim.Adam(model.parameters(), lr=lr, fused=device.type in ("cpu", "cuda", "mps"))


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    train: Split,
    val: Split,
    params: TrainParams,
    normalize: Normalize,
    device: torch.device,
    log: EpochLogger,
    start_epoch: int = 1,
) -> None:
    """Train ``model`` from ``start_epoch`` to ``params.epochs``; after each epoch, ``log(epoch, metrics, grad_norms)``.

    ``generator`` drives the shuffling. ``metrics`` uses dvclive's names (train/loss, val/acc, …);
    ``grad_norms[i]`` is the mean L2 norm of layer i's weight gradient over the epoch's steps (layers as
    ``weight_layers`` orders them). A non-finite training loss stops training with a UserError before ``log``.
    """
    for epoch in range(start_epoch, params.epochs + 1):
        start = time.perf_counter()
        tr = train_epoch(model, optimizer, train, params.batch_size, generator, normalize, device, params.amp)
        if tr["bad_step"] >= 0:
            raise UserError(
                f"training diverged: the loss became non-finite at epoch {epoch}, step {tr['bad_step'] + 1} "
                f"(train.lr = {params.lr:g}; try a smaller train.lr)"
            )
        val_loss, val_preds = predict(model, val, params.batch_size, normalize, device, params.amp)
        va = classification_metrics(val.labels.cpu().numpy(), val_preds, NUM_CLASSES)
        metrics = {
            "train/loss": tr["loss"],
            "train/acc": tr["acc"],
            "val/loss": val_loss,
            "val/acc": va["acc"],
            "val/precision": va["precision"],
            "val/recall": va["recall"],
            "train/images_per_s": tr["images_per_s"],
            "epoch_time_s": time.perf_counter() - start,
        }
        log(epoch, metrics, tr["grad_norms"])
