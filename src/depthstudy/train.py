"""The training loop: uint8 tensors batched and normalised on the device, Adam, cross-entropy, per-layer grad norms."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from depthstudy.data import Normalize, Split, batches
from depthstudy.errors import UserError
from depthstudy.evaluation import predict
from depthstudy.metrics import classification_metrics
from depthstudy.models import NUM_CLASSES, weight_layers
from depthstudy.params import TrainParams

# Steps between reads of the device's running figures: the only host syncs inside an epoch. They bound how far
# a diverged run goes on (at most this many steps past the first non-finite loss) and refresh the progress bar.
SYNC_EVERY = 25


@dataclass
class Epoch:
    """What one epoch produced: the figures to compare across runs, and the wall-clock ones kept apart."""

    metrics: dict[str, float]  # train/loss, train/acc, val/loss, val/acc, val/precision, val/recall
    grad_norms: list[float]  # per weight layer (as ``weight_layers`` orders them): mean L2 norm of its gradient
    seconds: float  # the epoch's wall clock, training and validation
    images_per_s: float  # training throughput


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    # fused Adam updates in place, one kernel per parameter group: the least memory and the fastest here.
    return torch.optim.Adam(model.parameters(), lr=lr, fused=device.type in ("cpu", "cuda", "mps"))


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    batch_size: int,
    generator: torch.Generator,
    normalize: Normalize,
    device: torch.device,
    amp: bool = False,
    desc: str = "",
) -> dict:
    """One pass over ``split`` in train mode → loss, accuracy, throughput, each layer's mean grad norm, and the
    index of the first step whose loss was not finite (-1 if none; the pass then stops within SYNC_EVERY steps).

    A progress bar (steps, img/s, running loss) shows on a terminal only, so logs and `dvc queue logs` stay clean.
    """
    model.train()
    layers = [m for _, m in weight_layers(model)]
    grad_sum = torch.zeros(len(layers), device=device, dtype=torch.float64)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    bad_step = torch.full((), -1, device=device, dtype=torch.int64)  # first step with a non-finite loss
    steps, seen = 0, 0
    start = time.perf_counter()
    total = -(-len(split.labels) // batch_size)
    with tqdm(total=total, desc=desc, unit="step", leave=False, disable=None) as bar:
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
            steps, seen = steps + 1, seen + len(y)
            if steps % SYNC_EVERY == 0 or steps == total:
                if bad_step.item() >= 0:
                    break
                rate = seen / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4g}", img_s=f"{rate:.0f}", refresh=False)
                bar.update(steps - bar.n)
    seconds = time.perf_counter() - start
    return {
        "loss": loss_sum.item() / seen,
        "acc": correct.item() / seen,
        "images_per_s": seen / seconds,
        "bad_step": int(bad_step.item()),
        "grad_norms": (grad_sum / max(steps, 1)).tolist(),
    }


EpochLogger = Callable[[int, Epoch], None]


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
    name: str = "",
) -> None:
    """Train ``model`` from ``start_epoch`` to ``params.epochs``; after each epoch, ``log(epoch, Epoch)``.

    ``generator`` drives the shuffling. A non-finite training loss stops training with a UserError before ``log``.
    """
    for epoch in range(start_epoch, params.epochs + 1):
        start = time.perf_counter()
        desc = f"{name} epoch {epoch}/{params.epochs}"
        tr = train_epoch(model, optimizer, train, params.batch_size, generator, normalize, device, params.amp, desc)
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
        }
        log(epoch, Epoch(metrics, tr["grad_norms"], time.perf_counter() - start, tr["images_per_s"]))
