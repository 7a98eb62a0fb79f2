"""Part 2c, per-layer instrumentation (issue 10): what depthstudy.instrument adds to a bare training step.

Target: all instrumentation together ≤ 5% of a training step. Two views, as in part 2: whole loops side by side
(interleaved, paired ratios), and each addition timed alone right after a backward pass (far less noisy), with the
per-epoch update ratio spread over a real epoch (45,000 CIFAR-10 training images / batch 32 = 1,407 steps).
"""

import functools
import time

import torch
import torch.nn.functional as F
from torch.linalg import vector_norm

from benchmarks.common import BATCH, CPU, LR, STEPS_PER_EPOCH, fresh_run, header, interleave, median, pair_ratios, table
from benchmarks.data_path import MEAN, STD, synthetic_split
from depthstudy.data import Normalize, Split, batches
from depthstudy.instrument import LayerProbe, grad_norms, response_std
from depthstudy.models import build_model, weight_layers
from depthstudy.params import FCParams
from depthstudy.train import make_optimizer

# Each adds to the one before, except the last: the LayerProbe alone, gradient norms sampled like the rest.
VARIANTS = ("bare", "+grad norms", "+act std", "+update ratio", "probe, all every k")


def instrumented_train(model, optimizer, split: Split, normalize: Normalize, variant: str, every: int) -> None:
    """The bare loop of part 2 plus ``variant``'s instrumentation, called the way train_epoch would call it."""
    level = VARIANTS.index(variant)
    layers = [m for _, m in weight_layers(model)]
    grad_sum = torch.zeros(len(layers))
    probe = LayerProbe(layers, every) if level >= 2 else None
    if level >= 3:
        probe.epoch_start()
    model.train()
    for i, (images, labels) in enumerate(batches(split, BATCH, torch.Generator().manual_seed(0))):
        if probe:
            probe.step(i)
        loss = F.cross_entropy(model(normalize(images)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if 1 <= level <= 3:
            grad_sum += grad_norms(layers)  # every step, as train_epoch does today
        elif level == 4:
            probe.after_backward()  # sampled steps only
        optimizer.step()
    if level >= 3:
        probe.epoch_end()
    if probe:
        probe.close()


def compare(spec: FCParams, steps: int, repeats: int, every: int, normalize: Normalize) -> dict[str, tuple]:
    """Whole loops of ``steps`` steps, interleaved → variant → (median of time ÷ bare − 1 over rounds, its range)."""
    train, warm = synthetic_split(steps * BATCH, seed=1), synthetic_split(BATCH, seed=2)
    loops = {v: functools.partial(instrumented_train, normalize=normalize, variant=v, every=every) for v in VARIANTS}
    runs = {v: functools.partial(fresh_run, spec, loop, warm, train) for v, loop in loops.items()}
    seconds = interleave(runs, repeats)
    overheads = {v: [r - 1 for r in pair_ratios(seconds[v], seconds["bare"])] for v in VARIANTS[1:]}
    return {v: (median(o), f"{min(o):+.1%} to {max(o):+.1%}") for v, o in overheads.items()}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def part_costs(spec: FCParams, every: int, normalize: Normalize, rounds: int = 15) -> dict[str, float]:
    """Median ms of a bare step and of each addition timed alone; act std and the update ratio per step, amortised
    over ``every`` and STEPS_PER_EPOCH steps; "idle hooks": what the probe's hooks add to an unsampled forward."""
    torch.manual_seed(0)
    model = build_model(spec).train()
    optimizer = make_optimizer(model, LR, CPU)
    images, y = next(batches(synthetic_split(BATCH), BATCH))
    x = normalize(images)
    layers = [m for _, m in weight_layers(model)]
    outputs = []  # each layer's output, cloned before the in-place ReLU changes it
    handles = [m.register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone())) for m in layers]
    model(x)
    for h in handles:
        h.remove()

    def backward():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    costs: dict[str, list[float]] = {k: [] for k in ("bare step", "grad norms (list)", "grad norms (foreach)",
                                                     "act std", "update ratio")}
    probe = LayerProbe(layers, every)
    probe.close()  # no hooks: only its epoch_start + epoch_end are timed here
    for _ in range(rounds):
        costs["bare step"].append(timed(lambda: (backward(), optimizer.step())))
        backward()
        costs["grad norms (list)"].append(timed(lambda: torch.stack([vector_norm(m.weight.grad) for m in layers])))
        costs["grad norms (foreach)"].append(timed(lambda: grad_norms(layers)))
        costs["act std"].append(timed(lambda: sum(response_std(o) for o in outputs)) / every)
        start = timed(probe.epoch_start)
        optimizer.step()  # so that the weights moved, as after an epoch
        costs["update ratio"].append((start + timed(probe.epoch_end)) / STEPS_PER_EPOCH)
    return {"idle hooks": 1e3 * len(layers) * idle_hook_seconds()} | {k: 1e3 * median(v) for k, v in costs.items()}


def sampled_ms(costs: dict[str, float], every: int) -> float:
    """Milliseconds per step of the LayerProbe as train_epoch runs it, from part_costs(): gradient norms and act std
    on every ``every``-th step, the hooks' call on every step, the update ratio once per epoch."""
    return costs["grad norms (foreach)"] / every + costs["act std"] + costs["idle hooks"] + costs["update ratio"]


def idle_hook_seconds(calls: int = 2000, repeats: int = 7) -> float:
    """Seconds a LayerProbe hook adds to one layer's call on an unsampled step (no kernel, only Python): timed on a
    1×1 Linear, where it is not lost in the noise of a matmul; fastest of ``repeats`` runs of ``calls`` calls."""
    layer, x = torch.nn.Linear(1, 1), torch.zeros(1, 1)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):  # interleaved, as everywhere here
        seconds[False].append(timed(lambda: [layer(x) for _ in range(calls)]))
        with LayerProbe([layer]):
            seconds[True].append(timed(lambda: [layer(x) for _ in range(calls)]))
    return (min(seconds[True]) - min(seconds[False])) / calls


def run(width: int, steps: dict[str, int], repeats: int, every: int = 10) -> dict:
    """FC20 and FC56 at ``width`` → model name → {"loops": compare(), "costs": part_costs(), "overhead": …}."""
    threads = torch.get_num_threads()
    header(f"2c. Instrumentation: batch {BATCH}, fused Adam, FC width {width}, {threads} threads, sampling every "
           f"{every} steps, {repeats} rounds")
    normalize = Normalize(MEAN, STD, CPU)
    specs = {"fc20": FCParams(depth=20, width=width), "fc56": FCParams(depth=56, width=width)}
    results = {name: {"loops": compare(spec, steps[name], repeats, every, normalize)} for name, spec in specs.items()}
    rows = [["model", "steps"] + [f"{v} (range)" for v in VARIANTS[1:]]]
    for name, r in results.items():
        rows.append([name, steps[name], *(f"{r['loops'][v][0]:+.1%} ({r['loops'][v][1]})" for v in VARIANTS[1:])])
    table(rows)
    print("whole loops: median over rounds of (variant seconds ÷ bare seconds) − 1; each adds to the one before but")
    print("the last (the probe alone, grad norms sampled too). The last two run the update ratio once per loop of "
          f"{steps['fc20']}/{steps['fc56']} steps: up to {STEPS_PER_EPOCH / min(steps.values()):.0f}× its weight in a "
          "real epoch.")
    print(f"\nEach addition alone (median ms per step; act std ÷ {every}, update ratio ÷ {STEPS_PER_EPOCH} steps):")
    rows = [["model", "bare step", "grad norms list", "grad norms foreach", "act std", "idle hooks", "update ratio",
             "all, grads every step", "all, every k"]]
    for name, spec in specs.items():
        c = results[name]["costs"] = part_costs(spec, every, normalize)
        grads_every_step = sampled_ms(c, every) + c["grad norms (foreach)"] * (1 - 1 / every)
        every_step = results[name]["overhead"] = grads_every_step / c["bare step"]
        sampled = results[name]["overhead_sampled"] = sampled_ms(c, every) / c["bare step"]
        rows.append([name, f"{c['bare step']:.1f}", *(f"{c[k]:.3f} ({c[k] / c['bare step']:.2%})" for k in
                     ("grad norms (list)", "grad norms (foreach)", "act std", "idle hooks", "update ratio")),
                     f"{every_step:.2%}", f"{sampled:.2%}"])
    table(rows)
    return results
