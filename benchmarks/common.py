"""Shared helpers: interleaved repeats, medians and paired ratios, PASS/FAIL checks, the machine's description."""

import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from depthstudy.data import Split
from depthstudy.models import build_model
from depthstudy.params import ModelParams
from depthstudy.train import make_optimizer

ROOT = Path(__file__).resolve().parents[1]  # the project's root
DVC = str(Path(sys.executable).parent / "dvc")  # the dvc of the environment running the benchmarks
BATCH, LR = 32, 1e-3  # the seed's batch size and Adam learning rate: parts 2 and 2c
STEPS_PER_EPOCH = math.ceil(45_000 / BATCH)  # CIFAR-10's 50,000 training images minus data.val_fraction 0.1
CPU = torch.device("cpu")


def child_command(module: str, call: str) -> list[str]:
    """The command line that runs ``benchmarks.<module>.<call>`` in a fresh Python process."""
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks import {module}; {module}.{call}"
    return [sys.executable, "-c", code]


def interleave(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every variant ``repeats`` times, round by round, reversing the order each round (AB BA AB …).

    Each variant returns the seconds it measured itself, so its setup (building a model, say) stays untimed.
    Returns name → seconds per repeat. Interleaving spreads the load of other processes over all variants.
    """
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            seconds[name].append(variants[name]())
    return seconds


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


def median(values: list[float]) -> float:
    return statistics.median(values)


def rate(units: float, seconds: list[float]) -> float:
    """Median throughput in units per second over the repeats."""
    return median([units / s for s in seconds])


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator[i] / denominator[i]: the two ran side by side, so load hits both alike."""
    return median(pair_ratios(numerator, denominator))


def pair_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator)]


def spread(values: list[float]) -> str:
    """'min–max' of the repeats, to show how noisy a median is."""
    return f"{min(values):.3g}–{max(values):.3g}"


@dataclass
class Check:
    """A measured figure against its target: ``value >= target`` (or ``<=`` when ``at_most``)."""

    name: str
    value: float
    target: float
    at_most: bool = False

    @property
    def passed(self) -> bool:
        return self.value <= self.target if self.at_most else self.value >= self.target

    def line(self) -> str:
        op = "<=" if self.at_most else ">="
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict}  {self.name}: {self.value:.3g} (target {op} {self.target:g})"


def mem_available_gib() -> float:
    """MemAvailable from /proc/meminfo, in GiB."""
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 2**20


def machine() -> dict[str, str]:
    """Where the numbers were made: CPU model, cores, memory, load, torch/dvc versions, threads, GPU."""
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    dvc = subprocess.run([DVC, "--version"], capture_output=True, text=True).stdout.strip() or "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{cpu}, nproc {os.cpu_count()}",
        "memory": f"{mem_available_gib():.1f} GiB available",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": f"{torch.__version__}, {torch.get_num_threads()} threads in this process",
        "OpenMP env": " ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")),
        "dvc": dvc,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    }


def header(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 100 - len(title)), flush=True)


def table(rows: list[list[str]]) -> None:
    """Print rows as left-aligned columns (the first row is the heading)."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip(), flush=True)
