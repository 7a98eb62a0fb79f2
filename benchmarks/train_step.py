"""Part 2, the training step: the project's train_epoch / fit vs a bare PyTorch loop on the same model and data.

The bare loop reads the same batches through the same batches() + Normalize, so the ratio isolates what the
project adds: the per-layer evidence (depthstudy.instrument.LayerProbe), the loss/accuracy/non-finite sums, the
progress bar, and (for fit) the validation pass with scikit-learn's precision/recall. Some of it is paid once per
epoch (the probe's weight snapshot), so each variant runs at two lengths and the ratio of a CIFAR-10 epoch is
extrapolated from both.
"""

import functools
import time

import torch
import torch.nn.functional as F

from benchmarks import instrument
from benchmarks.common import (
    BATCH,
    CPU,
    LR,
    STEPS_PER_EPOCH,
    fresh_run,
    header,
    interleave,
    median,
    pair_ratios,
    paired_ratio,
    rate,
    spread,
    table,
)
from benchmarks.data_path import MEAN, STD, synthetic_split
from depthstudy.data import Normalize, Split, batches
from depthstudy.models import build_model
from depthstudy.params import FCParams, ModelParams, ResNetParams, TrainParams
from depthstudy.train import PROBE_EVERY, fit, make_optimizer, train_epoch


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
    """train_epoch exactly as fit calls it (LayerProbe, loss/acc sums, non-finite check)."""
    train_epoch(model, optimizer, split, BATCH, torch.Generator().manual_seed(0), normalize, CPU)


def project_fit(model, optimizer, train: Split, val: Split, normalize: Normalize) -> None:
    """One epoch of fit: train_epoch, then predict + precision/recall on ``val``; the logger does nothing."""
    params = TrainParams(epochs=1, batch_size=BATCH, lr=LR)
    fit(model, optimizer, torch.Generator().manual_seed(0), train, val, params, normalize, CPU, lambda *a: None)


def compare(spec: ModelParams, steps: int, repeats: int, normalize: Normalize) -> dict:
    """Interleave the four variants on one model, each as a loop of ``steps`` steps and of 1 step → median img/s and
    paired ratios (bare time ÷ project time), of the loops as run and of a CIFAR-10 epoch extrapolated from both."""
    loops = {n: (synthetic_split(n * BATCH, seed=1), synthetic_split(max(BATCH, n * BATCH // 9), seed=3))
             for n in (steps, 1)}  # train and val splits, 90/10 as data.val_fraction
    warm = synthetic_split(BATCH, seed=2)
    variants = {
        "bare": lambda val: lambda m, o, s: bare_train(m, o, s, normalize),
        "train_epoch": lambda val: lambda m, o, s: project_train(m, o, s, normalize),
        "bare+eval": lambda val: lambda m, o, s: (bare_train(m, o, s, normalize), bare_eval(m, val, normalize)),
        "fit": lambda val: lambda m, o, s: project_fit(m, o, s, val, normalize),
    }
    seconds = interleave({f"{k}/{n}": functools.partial(fresh_run, spec, make(val), warm, train)
                          for k, make in variants.items() for n, (train, val) in loops.items()}, repeats)
    epoch = {k: epoch_seconds(seconds[f"{k}/{steps}"], seconds[f"{k}/1"], steps) for k in variants}
    out = {"bare": rate(steps * BATCH, seconds[f"bare/{steps}"]),
           "train_epoch": rate(steps * BATCH, seconds[f"train_epoch/{steps}"])}
    for name, (bare, project) in {"": ("bare", "train_epoch"), "fit_": ("bare+eval", "fit")}.items():
        loop = pair_ratios(seconds[f"{bare}/{steps}"], seconds[f"{project}/{steps}"])
        out |= {f"{name}loop_ratio": median(loop), f"{name}loop_spread": spread(loop),
                f"{name}ratio": paired_ratio(epoch[bare], epoch[project]),
                f"{name}spread": spread(pair_ratios(epoch[bare], epoch[project]))}
    fixed = [per_epoch(f, f1, steps) - per_epoch(b, b1, steps) for f, f1, b, b1 in
             zip(seconds[f"fit/{steps}"], seconds["fit/1"], seconds[f"bare+eval/{steps}"], seconds["bare+eval/1"])]
    return out | {"fit_per_epoch_ms": 1e3 * median(fixed)}


def per_epoch(long: float, short: float, steps: int) -> float:
    """Seconds a loop spends once per epoch, whatever its length: a 0-step loop's, extrapolated from loops of
    ``steps`` steps and of 1 step (for the project: the LayerProbe's weight snapshot and update ratio, say)."""
    return short - (long - short) / (steps - 1)


def epoch_seconds(long: list[float], short: list[float], steps: int) -> list[float]:
    """Per round, the seconds of a STEPS_PER_EPOCH-step epoch: the per-epoch work once, the per-step cost measured
    between the two loop lengths for every step. Short loops weigh the per-epoch work up to 1,407× a real epoch."""
    return [per_epoch(lo, sh, steps) + STEPS_PER_EPOCH * (lo - sh) / (steps - 1) for lo, sh in zip(long, short)]


def step_costs(spec: ModelParams, normalize: Normalize, rounds: int = 15) -> dict[str, float]:
    """Median milliseconds of a bare step and of what train_epoch adds to it, each timed alone right after a
    backward pass, as in train_epoch (short timings: far less exposed to other processes than whole epochs).

    "metric sums" are train_epoch's loss/non-finite/accuracy lines, copied; "probe" is the LayerProbe as train_epoch
    runs it (every PROBE_EVERY-th step, its update ratio spread over a CIFAR-10 epoch), from part 2c's timings.
    """
    torch.manual_seed(0)
    model = build_model(spec).train()
    optimizer = make_optimizer(model, LR, CPU)
    images, labels = next(batches(synthetic_split(BATCH), BATCH))
    x, y = normalize(images), labels
    total, steps = STEPS_PER_EPOCH, 0
    loss_sum, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
    bad_step = torch.full((), total, dtype=torch.int64)

    def step():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return logits, loss

    def sums():
        nonlocal bad_step
        batch_loss_sum = loss.detach() * len(y)
        loss_sum.add_(batch_loss_sum.double())
        bad_step = torch.where((bad_step == total) & ~torch.isfinite(batch_loss_sum), steps, bad_step)
        correct.add_((logits.argmax(dim=1) == y).sum())

    costs: dict[str, list[float]] = {"bare step": [], "metric sums": []}
    for _ in range(rounds):
        start = time.perf_counter()
        logits, loss = step()
        optimizer.step()
        costs["bare step"].append(time.perf_counter() - start)
        logits, loss = step()
        start = time.perf_counter()
        sums()
        costs["metric sums"].append(time.perf_counter() - start)
    parts = instrument.part_costs(spec, PROBE_EVERY, normalize, rounds)
    return {name: 1e3 * median(v) for name, v in costs.items()} | {"probe": instrument.sampled_ms(parts, PROBE_EVERY)}


def run(width: int, steps: dict[str, int], repeats: int) -> dict:
    """Compare every model → model name → compare()'s figures and step_costs(); prints the tables."""
    threads = torch.get_num_threads()
    header(f"2. Training step: batch {BATCH}, fused Adam, FC width {width}, {threads} threads, {repeats} rounds")
    normalize = Normalize(MEAN, STD, CPU)
    rows = [["model", "steps", "bare img/s", "train_epoch img/s", "loop ratio (range)", "epoch ratio (range)",
             "fit: loop ratio (range)", "epoch ratio (range)", "fit per-epoch ms"]]
    results = {}
    for name, spec in models(width).items():
        r = results[name] = compare(spec, steps[name], repeats, normalize)
        rows.append([name, steps[name], f"{r['bare']:.1f}", f"{r['train_epoch']:.1f}",
                     *(f"{r[k + 'ratio']:.3f} ({r[k + 'spread']})" for k in ("loop_", "", "fit_loop_", "fit_")),
                     f"{r['fit_per_epoch_ms']:.0f}"])
    table(rows)
    print("ratio = bare seconds ÷ project seconds (a speed; 1 = no overhead), median of the rounds' pairs: of the "
          f"loops as run, and of a {STEPS_PER_EPOCH}-step")
    print("CIFAR-10 epoch extrapolated from loops of that many steps and of 1 step; fit per-epoch ms = what fit spends")
    print("once per epoch beyond the bare train+eval loop (the LayerProbe's weight snapshot and update ratio, the")
    print("validation metrics), extrapolated the same way")
    print("\nWhat train_epoch adds per step, each part timed alone (median ms; % of a bare step):")
    rows = [["model", "bare step", "probe", "metric sums", "estimated speed ratio"]]
    for name, spec in models(width).items():
        c = results[name]["costs"] = step_costs(spec, normalize)
        estimate = results[name]["estimated_ratio"] = c["bare step"] / sum(c.values())
        rows.append([name, f"{c['bare step']:.1f}", *(f"{c[k]:.2f} ({c[k] / c['bare step']:.1%})"
                     for k in ("probe", "metric sums")), f"{estimate:.3f}"])
    table(rows)
    return results
