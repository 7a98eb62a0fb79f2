"""Part 2b, CPU threads: a bare training step at 1 thread and at PyTorch's default thread count (one per core), the
latter also with OpenMP told to sleep sooner at barriers; each in a fresh process (OpenMP reads its settings once).

PyTorch's OpenMP threads spin at every barrier while they wait for each other. When another process holds one of
the cores, and especially another PyTorch process doing the same, the thread they wait for is descheduled and a
step can take tens of times longer. OMP_WAIT_POLICY=PASSIVE (sleep at once) or a small GOMP_SPINCOUNT (spin
briefly, then sleep) trade a little speed on a quiet machine for none of that. With --contention the suite
starts such a competitor itself (a 2-thread PyTorch training loop): this slows everyone else on the machine too.
"""

import contextlib
import json
import os
import subprocess
import time

import torch
import torch.nn.functional as F

from benchmarks.common import child_command, header, interleave, median, table

STEPS, WARMUP = 4, 1
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def train_steps(model: str, steps: int | None) -> list[float]:
    """Bare training steps of ``model`` (FC width 512) at batch 32 → seconds per step; ``None`` = until killed."""
    from benchmarks.data_path import MEAN, STD, synthetic_split
    from benchmarks.train_step import models
    from depthstudy.data import Normalize
    from depthstudy.models import build_model
    from depthstudy.train import make_optimizer

    torch.manual_seed(0)
    net = build_model(models(512)[model])
    optimizer = make_optimizer(net, 1e-3, torch.device("cpu"))
    x, y = Normalize(MEAN, STD, torch.device("cpu"))(synthetic_split(32).images), torch.arange(32) % 10
    times = []
    while steps is None or len(times) < steps:
        start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def child(model: str, threads: int) -> None:
    """(In the subprocess) print the median seconds of STEPS steps after WARMUP."""
    torch.set_num_threads(threads)
    print(json.dumps(median(train_steps(model, STEPS + WARMUP)[WARMUP:])))


def step_ms(model: str, threads: int, env: dict[str, str]) -> float:
    """Median ms per step of ``model`` in a fresh process, the OpenMP variables set to ``env`` only."""
    base = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    command = child_command("threads", f"child({model!r}, {threads})")
    done = subprocess.run(command, env=base | env, capture_output=True, text=True, timeout=900, check=True)
    return 1e3 * float(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def competitor():
    """A second PyTorch process training FC20 at the default threads and OpenMP settings, for the block's duration."""
    base = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    hog = subprocess.Popen(child_command("threads", "train_steps('fc20', None)"), env=base)
    try:
        time.sleep(3)  # its imports
        yield
    finally:
        hog.kill()
        hog.wait()


def measure(settings: dict, models: tuple[str, ...], repeats: int) -> dict[str, dict[str, float]]:
    """model → setting → median ms per step, the settings interleaved."""
    results = {}
    for model in models:
        variants = {k: (lambda t=t, e=e: step_ms(model, t, e)) for k, (t, e) in settings.items()}
        results[model] = {k: median(v) for k, v in interleave(variants, repeats).items()}
    return results


def run(repeats: int, contention: bool = False, models: tuple[str, ...] = ("fc20", "resnet18")) -> dict:
    """Measure as the machine is now (and beside a competitor with ``contention``) → scenario → model → ms."""
    n = os.cpu_count()
    settings = {"1 thread": (1, {}), f"{n} threads": (n, {}),
                f"{n}, OMP_WAIT_POLICY=PASSIVE": (n, {"OMP_WAIT_POLICY": "PASSIVE"}),
                f"{n}, GOMP_SPINCOUNT=1000": (n, {"GOMP_SPINCOUNT": "1000"})}
    header(f"2b. CPU threads: ms per bare step, batch 32 (FC width 512), {repeats} rounds")
    scenarios = {"as the machine is": contextlib.nullcontext}
    if contention:
        scenarios["beside a 2-thread PyTorch training"] = competitor
    rows, results = [["scenario", "model", *settings]], {}
    for scenario, context in scenarios.items():
        with context():
            results[scenario] = measure(settings, models, repeats)
            load = os.getloadavg()[0]  # the last minute's, as the scenario ends
        for model, ms in results[scenario].items():
            rows.append([f"{scenario} (load {load:.1f})", model, *(f"{v:.0f}" for v in ms.values())])
    table(rows)
    return results
