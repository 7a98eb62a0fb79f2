"""The training loop: uint8 batches (optionally augmented) normalised on the device, Adam or SGD with a step schedule,
cross-entropy, per-layer learning evidence."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from depthstudy.augment import crop_flip, draw
from depthstudy.data import Normalize, Split
from depthstudy.distributed import World, all_reduce, rank_batches, rank_loss, shard, unwrap
from depthstudy.errors import UserError
from depthstudy.evaluation import predict
from depthstudy.instrument import LayerProbe
from depthstudy.metrics import classification_metrics
from depthstudy.models import NUM_CLASSES, weight_layers
from depthstudy.params import TrainParams
from depthstudy.schedule import lr_at

# Steps between reads of the device's running figures: the only host syncs inside an epoch. They bound how far
# a diverged run goes on (at most this many steps past the first non-finite loss) and refresh the progress bar.
SYNC_EVERY = 25
# Steps between samples of the per-layer gradient norms and activation stds (the relative weight update covers every
# step): all the instrumentation together then costs < 1% of a step (benchmarks/RESULTS.md, part 2c).
PROBE_EVERY = 10


@dataclass
class Epoch:
    """What one epoch produced: the figures to compare across runs, and the wall-clock ones kept apart."""

    metrics: dict[str, float]  # train/loss, train/acc, val/loss, val/acc, val/precision, val/recall
    # per weight layer (as ``weight_layers`` orders them), LayerProbe's evidence: "grad_norm" (mean L2 norm of the
    # weight gradient), "act_std" (mean std of the layer's output), "update_ratio" (‖ΔW‖ / ‖W‖ over the epoch)
    layers: dict[str, list[float]]
    seconds: float  # the epoch's wall clock, training and validation
    images_per_s: float  # training throughput


def make_optimizer(
    model: nn.Module, lr: float, device: torch.device, kind: str = "adam", momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam (the seed's) or SGD with momentum (He et al. 2015's); ``weight_decay`` is an L2 penalty on every
    parameter, BatchNorm's included, as the paper's Caffe/Torch recipes apply it."""
    # fused: updates in place, one kernel per parameter group: the least memory and the fastest here (SGD's step
    # for ResNet-20 on one CPU thread: 0.57 ms fused vs 1.14 ms foreach, against a ~500 ms forward + backward).
    fused = device.type in ("cpu", "cuda", "mps")
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


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
    world: World = World(),
    augment: torch.Generator | None = None,
    lr_of_step: Callable[[int], float] | None = None,
) -> dict:
    """One pass over ``split`` in train mode → loss, accuracy, throughput, the per-layer evidence (``Epoch.layers``),
    and the index of the first step whose loss was not finite (-1 if none; the pass then stops within SYNC_EVERY
    steps).

    ``augment``: crop and flip every batch (``augment.crop_flip``), drawing from this CPU generator.
    ``lr_of_step(i)``: the learning rate of the epoch's step i, set before its update.

    Under torchrun (``model`` wrapped in DDP) each rank trains on its shard of every global batch of ``batch_size``
    images and the figures are summed over the ranks; in a world of 1 this is the plain loop. A progress bar (steps,
    img/s, running loss) shows on rank 0's terminal only, so logs and `dvc queue logs` stay clean.
    """
    model.train()
    probe = LayerProbe([m for _, m in weight_layers(unwrap(model))], every=PROBE_EVERY)
    probe.epoch_start()
    total = -(-len(split.labels) // batch_size)  # steps in the epoch; also "no bad step" below (a MIN over ranks)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    bad_step = torch.full((), total, device=device, dtype=torch.int64)  # first step with a non-finite loss
    steps, seen = 0, 0
    start = time.perf_counter()
    with probe, tqdm(total=total, desc=desc, unit="step", leave=False, disable=None if world.is_main else True) as bar:
        for images, labels, count in rank_batches(split, batch_size, generator, world):
            if lr_of_step is not None:
                set_lr(optimizer, lr_of_step(steps))
            images = images.to(device, non_blocking=True)
            if augment is not None:
                # On the uint8 batch, before normalising: the padding is black (pixel 0), as with torchvision's
                # RandomCrop(32, padding=4) on images; the paper does not say what its padding holds. Crops and
                # flips are drawn for the whole global batch and each rank takes its shard's: as one process would.
                offsets, flips = draw(count, augment)
                images = crop_flip(images, shard(offsets, world), shard(flips, world))
            x, y = normalize(images), labels.to(device, non_blocking=True)
            probe.step(steps)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
                loss, batch_loss_sum = rank_loss(logits, y, count, world)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            probe.after_backward()  # sums stay on the device (no sync per step), read once at the epoch's end
            optimizer.step()
            loss_sum += batch_loss_sum.double()
            bad_step = torch.where((bad_step == total) & ~torch.isfinite(batch_loss_sum), steps, bad_step)
            correct += (logits.argmax(dim=1) == y).sum()
            steps, seen = steps + 1, seen + count
            if steps % SYNC_EVERY == 0 or steps == total:
                # every rank stops at the same step: the first non-finite loss on any of them
                if all_reduce(bad_step, world, dist.ReduceOp.MIN).item() < total:
                    break
                rate = seen / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{loss_sum.item() * world.size / seen:.4g}", img_s=f"{rate:.0f}", refresh=False)
                bar.update(steps - bar.n)
        layers = probe.epoch_end()
    for t in (loss_sum, correct):
        all_reduce(t, world)
    seconds = time.perf_counter() - start
    return {
        "loss": loss_sum.item() / seen,
        "acc": correct.item() / seen,
        "images_per_s": seen / seconds,
        "bad_step": int(bad_step.item()) if bad_step.item() < total else -1,
        "layers": layers,
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
    world: World = World(),
    augment: torch.Generator | None = None,
) -> None:
    """Train ``model`` from ``start_epoch`` to ``params.epochs``; after each epoch, ``log(epoch, Epoch)``.

    ``generator`` drives the shuffling, ``augment`` (given when ``params.augment``) the crops and flips. The learning
    rate follows ``schedule.lr_at`` of the update's index in the whole run, so a run resumed at any epoch continues
    the schedule where it stopped. A non-finite training loss stops training with a UserError before ``log``.
    Under torchrun, every rank trains and calls ``log`` (the resume state gathers every rank's random state); rank 0
    alone validates, over the whole split through the unwrapped model, so only its ``Epoch`` has val metrics.
    """
    steps_per_epoch = -(-len(train.labels) // params.batch_size)
    total = steps_per_epoch * params.epochs
    for epoch in range(start_epoch, params.epochs + 1):
        start = time.perf_counter()
        desc = f"{name} epoch {epoch}/{params.epochs}"
        done = (epoch - 1) * steps_per_epoch  # updates before this epoch

        def lr_of_step(i: int) -> float:
            return lr_at(done + i, total, params.lr, params.lr_milestones, params.lr_gamma)

        tr = train_epoch(model, optimizer, train, params.batch_size, generator, normalize, device, params.amp, desc,
                         world, augment, lr_of_step)
        if tr["bad_step"] >= 0:
            raise UserError(
                f"training diverged: the loss became non-finite at epoch {epoch}, step {tr['bad_step'] + 1} "
                f"(train.lr = {params.lr:g}; try a smaller train.lr)"
            )
        metrics = {"train/loss": tr["loss"], "train/acc": tr["acc"]}
        if world.is_main:
            val_loss, val_preds = predict(unwrap(model), val, params.batch_size, normalize, device, params.amp)
            va = classification_metrics(val.labels.cpu().numpy(), val_preds, NUM_CLASSES)
            metrics |= {"val/loss": val_loss, "val/acc": va["acc"], "val/precision": va["precision"],
                        "val/recall": va["recall"]}
        log(epoch, Epoch(metrics, tr["layers"], time.perf_counter() - start, tr["images_per_s"]))
