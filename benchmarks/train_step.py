"""Part 2, the training step: the project's train_epoch / fit vs a bare PyTorch loop on the same model and data.

The bare loop reads the same batches through the same batches() + Normalize, so the ratio isolates what the
project adds per step: the per-layer gradient norms, the loss/accuracy/non-finite sums, and (for fit) the
validation pass with scikit-learn's precision/recall.
"""

import functools
import time

import torch
import torch.nn.functional as F

from benchmarks.common import header, interleave, median, pair_ratios, paired_ratio, rate, spread, table
from benchmarks.data_path import MEAN, STD, synthetic_split
from depthstudy.data import Normalize, Split, batches
from depthstudy.models import build_model, weight_layers
from depthstudy.params import FCParams, ModelParams, ResNetParams, TrainParams
from depthstudy.train import fit, make_optimizer, train_epoch

BATCH, LR = 32, 1e-3
CPU = torch.device("cpu")


def models(width: int) -> dict[str, ModelParams]:
    """The three models of the study, the FC nets at ``width`` units (the stages' default is 4096)."""
    return {
        "fc20": FCParams(depth=20, width=width),
        "fc56": FCParams(depth=56, width=width),
        "resnet18": ResNetParams(stem="imagenet"),
    }


def bare_train(model, optimizer, split: Split, normalize: Normalize) -> None:
    """The minimal loop: forward, cross-entropy, zero_grad, backward, Adam step; nothing recorded."""
    model.train()
    for images, labels in batches(split, BATCH, torch.Generator().manual_seed(0)):
        loss = F.cross_entropy(model(normalize(images)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def bare_eval(model, split: Split, normalize: Normalize) -> None:
    """The minimal validation pass: eval mode, forward, argmax."""
    model.eval()
    for images, _ in batches(split, BATCH):
        model(normalize(images)).argmax(dim=1)


def project_train(model, optimizer, split: Split, normalize: Normalize) -> None:
    """train_epoch exactly as fit calls it (grad norms, loss/acc sums, non-finite check)."""
    train_epoch(model, optimizer, split, BATCH, torch.Generator().manual_seed(0), normalize, CPU)


def project_fit(model, optimizer, train: Split, val: Split, normalize: Normalize) -> None:
    """One epoch of fit: train_epoch, then predict + precision/recall on ``val``; the logger does nothing."""
    params = TrainParams(epochs=1, batch_size=BATCH, lr=LR)
    fit(model, optimizer, torch.Generator().manual_seed(0), train, val, params, normalize, CPU, lambda *a: None)


def fresh_run(spec: ModelParams, epoch, warm: Split, train: Split) -> float:
    """Build the model (seed 0) and its fused Adam, run ``epoch(model, optimizer, warm)`` once (Adam allocates its
    state on the first step), then time ``epoch(model, optimizer, train)`` → seconds. All variants start alike."""
    torch.manual_seed(0)
    model = build_model(spec)
    optimizer = make_optimizer(model, LR, CPU)
    epoch(model, optimizer, warm)
    start = time.perf_counter()
    epoch(model, optimizer, train)
    return time.perf_counter() - start


def compare(spec: ModelParams, steps: int, repeats: int, normalize: Normalize) -> dict:
    """Interleave the four variants on one model → median img/s and paired ratios (bare time ÷ project time)."""
    train, warm = synthetic_split(steps * BATCH, seed=1), synthetic_split(BATCH, seed=2)
    val = synthetic_split(max(BATCH, steps * BATCH // 9), seed=3)  # a 90/10 split, as data.val_fraction
    epochs = {
        "bare": lambda m, o, s: bare_train(m, o, s, normalize),
        "train_epoch": lambda m, o, s: project_train(m, o, s, normalize),
        "bare+eval": lambda m, o, s: (bare_train(m, o, s, normalize), bare_eval(m, val, normalize)),
        "fit": lambda m, o, s: project_fit(m, o, s, val, normalize),
    }
    seconds = interleave({k: functools.partial(fresh_run, spec, fn, warm, train) for k, fn in epochs.items()}, repeats)
    n = len(train.labels)
    return {
        "bare": rate(n, seconds["bare"]),
        "train_epoch": rate(n, seconds["train_epoch"]),
        "ratio": paired_ratio(seconds["bare"], seconds["train_epoch"]),
        "ratio_spread": spread(pair_ratios(seconds["bare"], seconds["train_epoch"])),
        "bare_eval_s": median(seconds["bare+eval"]),
        "fit_s": median(seconds["fit"]),
        "fit_ratio": paired_ratio(seconds["bare+eval"], seconds["fit"]),
        "fit_ratio_spread": spread(pair_ratios(seconds["bare+eval"], seconds["fit"])),
        "fit_extra_ms": 1e3 * median([f - b for f, b in zip(seconds["fit"], seconds["bare+eval"])]),
    }


def step_costs(spec: ModelParams, normalize: Normalize, rounds: int = 15) -> dict[str, float]:
    """Median milliseconds of a bare step and of what train_epoch adds to it, each timed alone right after a
    backward pass, as in train_epoch (short timings: far less exposed to other processes than whole epochs).

    The additions are train_epoch's lines, copied: the per-layer grad norms, and the loss/non-finite/accuracy sums.
    """
    torch.manual_seed(0)
    model = build_model(spec).train()
    optimizer = make_optimizer(model, LR, CPU)
    images, labels = next(batches(synthetic_split(BATCH), BATCH))
    x, y = normalize(images), labels
    layers = [m for _, m in weight_layers(model)]
    grad_sum, loss_sum = torch.zeros(len(layers), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    correct, bad_step = torch.zeros((), dtype=torch.int64), torch.full((), -1, dtype=torch.int64)

    def step():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return logits, loss

    def norms():
        grad_sum.add_(torch.stack([torch.linalg.vector_norm(m.weight.grad) for m in layers]).double())

    def sums():
        nonlocal bad_step
        loss_sum.add_(loss.detach().double() * len(y))
        bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), 0, bad_step)
        correct.add_((logits.argmax(dim=1) == y).sum())

    costs: dict[str, list[float]] = {"bare step": [], "grad norms": [], "metric sums": []}
    for _ in range(rounds):
        start = time.perf_counter()
        logits, loss = step()
        optimizer.step()
        costs["bare step"].append(time.perf_counter() - start)
        logits, loss = step()
        for name, fn in (("grad norms", norms), ("metric sums", sums)):
            start = time.perf_counter()
            fn()
            costs[name].append(time.perf_counter() - start)
    return {name: 1e3 * median(v) for name, v in costs.items()}


def run(width: int, steps: dict[str, int], repeats: int) -> dict:
    """Compare every model → model name → compare()'s figures; prints one row per model."""
    threads = torch.get_num_threads()
    header(f"2. Training step: batch {BATCH}, fused Adam, FC width {width}, {threads} threads, {repeats} rounds")
    normalize = Normalize(MEAN, STD, CPU)
    rows = [["model", "steps", "bare img/s", "train_epoch img/s", "speed ratio (range)",
             "bare+eval s", "fit s", "speed ratio (range)", "fit extra ms"]]
    results = {}
    for name, spec in models(width).items():
        r = results[name] = compare(spec, steps[name], repeats, normalize)
        rows.append([name, steps[name], f"{r['bare']:.1f}", f"{r['train_epoch']:.1f}",
                     f"{r['ratio']:.3f} ({r['ratio_spread']})", f"{r['bare_eval_s']:.2f}", f"{r['fit_s']:.2f}",
                     f"{r['fit_ratio']:.3f} ({r['fit_ratio_spread']})", f"{r['fit_extra_ms']:.0f}"])
    table(rows)
    print("speed ratio = bare seconds ÷ project seconds, median of the rounds' pairs (1 = no overhead);")
    print("fit extra ms = median of (fit − bare train+eval) per epoch: train_epoch's additions + validation's")
    print("\nWhat train_epoch adds per step, each part timed alone (median ms; % of a bare step):")
    rows = [["model", "bare step", "grad norms", "metric sums", "estimated speed ratio"]]
    for name, spec in models(width).items():
        c = results[name]["costs"] = step_costs(spec, normalize)
        estimate = results[name]["estimated_ratio"] = c["bare step"] / sum(c.values())
        rows.append([name, f"{c['bare step']:.1f}", *(f"{c[k]:.2f} ({c[k] / c['bare step']:.1%})"
                     for k in ("grad norms", "metric sums")), f"{estimate:.3f}"])
    table(rows)
    return results
