"""Part 7, the paper's training step: ResNet-20 and ResNet-56 (He et al. 2015, §4.2) under the paper's recipe —
batch 128, SGD with momentum 0.9 and weight decay 1e-4, the step schedule, crop + flip of every batch — through the
project's train_epoch vs a bare PyTorch loop.

The bare loop does what a minimal script does for the same recipe: shuffled batches, random_crop_flip, Normalize,
forward, cross-entropy, zero_grad, backward, the lr set for the step, SGD's step. Both read the same batches from the
same seeded generators, so the ratio is what train_epoch adds: the per-layer probe, the loss / accuracy / non-finite
sums, the progress bar. Alone, from the project root: python -m benchmarks.paper_step (1 thread).
"""

import functools
import time

import torch
import torch.nn.functional as F

from benchmarks.common import header, interleave, pair_ratios, paired_ratio, rate, spread, table
from benchmarks.data_path import MEAN, STD, synthetic_split
from depthstudy.augment import random_crop_flip
from depthstudy.data import Normalize, Split, batches
from depthstudy.models import build_model
from depthstudy.params import CifarResNetParams, TrainParams
from depthstudy.schedule import lr_at
from depthstudy.train import make_optimizer, set_lr, train_epoch

CPU = torch.device("cpu")
RECIPE = TrainParams(batch_size=128, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                     lr_milestones=(0.5, 0.75), augment=True)
MODELS = {"resnet20": CifarResNetParams(depth=20), "resnet56": CifarResNetParams(depth=56)}


def lr_of(total: int):
    """The recipe's lr of step i of a ``total``-step run (the benchmark's epoch is the whole run)."""
    return lambda i: lr_at(i, total, RECIPE.lr, RECIPE.lr_milestones, RECIPE.lr_gamma)


def bare_train(model, optimizer, split: Split, normalize: Normalize) -> None:
    """The minimal loop for the recipe; nothing recorded."""
    model.train()
    shuffle, augment = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    lr = lr_of(-(-len(split.labels) // RECIPE.batch_size))
    for step, (images, labels) in enumerate(batches(split, RECIPE.batch_size, shuffle)):
        set_lr(optimizer, lr(step))
        loss = F.cross_entropy(model(normalize(random_crop_flip(images, augment))), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def project_train(model, optimizer, split: Split, normalize: Normalize) -> None:
    """train_epoch as fit calls it for the recipe."""
    total = -(-len(split.labels) // RECIPE.batch_size)
    train_epoch(model, optimizer, split, RECIPE.batch_size, torch.Generator().manual_seed(0), normalize, CPU,
                augment=torch.Generator().manual_seed(1), lr_of_step=lr_of(total))


def fresh_run(spec: CifarResNetParams, epoch, warm: Split, train: Split, normalize: Normalize) -> float:
    """Build the net (seed 0) and its fused SGD, run one warm-up step, then time ``epoch`` over ``train`` → s."""
    torch.manual_seed(0)
    model = build_model(spec)
    optimizer = make_optimizer(model, RECIPE.lr, CPU, RECIPE.optimizer, RECIPE.momentum, RECIPE.weight_decay)
    epoch(model, optimizer, warm, normalize)
    start = time.perf_counter()
    epoch(model, optimizer, train, normalize)
    return time.perf_counter() - start


def run(steps: dict[str, int], repeats: int) -> dict:
    """Compare both nets, interleaved → name → {bare, train_epoch: img/s; ratio: bare s ÷ train_epoch s}."""
    threads = torch.get_num_threads()
    header(f"7. The paper's step: batch {RECIPE.batch_size}, fused SGD + schedule + crop/flip, {threads} threads, "
           f"{repeats} rounds")
    normalize = Normalize(MEAN, STD, CPU)
    rows = [["model", "steps", "bare img/s", "train_epoch img/s", "speed ratio (range)"]]
    results = {}
    for name, spec in MODELS.items():
        train, warm = synthetic_split(steps[name] * RECIPE.batch_size, seed=1), synthetic_split(RECIPE.batch_size, 2)
        seconds = interleave({k: functools.partial(fresh_run, spec, fn, warm, train, normalize)
                              for k, fn in (("bare", bare_train), ("train_epoch", project_train))}, repeats)
        n = len(train.labels)
        r = results[name] = {
            "bare": rate(n, seconds["bare"]),
            "train_epoch": rate(n, seconds["train_epoch"]),
            "ratio": paired_ratio(seconds["bare"], seconds["train_epoch"]),
            "ratio_spread": spread(pair_ratios(seconds["bare"], seconds["train_epoch"])),
            "ms_per_step": 1e3 * min(seconds["bare"]) / steps[name],
        }
        rows.append([name, steps[name], f"{r['bare']:.1f}", f"{r['train_epoch']:.1f}",
                     f"{r['ratio']:.3f} ({r['ratio_spread']})"])
    table(rows)
    print("speed ratio = bare seconds ÷ project seconds, median of the rounds' pairs (1 = no overhead)")
    return results


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(steps={"resnet20": 10, "resnet56": 10}, repeats=3)
