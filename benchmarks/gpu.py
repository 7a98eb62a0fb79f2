"""Part 5, the GPU fast path: each model's training step on CUDA against a memory-bandwidth floor.

Skipped, with a line saying so, when torch sees no CUDA device. The floor counts fp32 bytes moved per parameter
and step: forward reads W (4), backward reads W and writes dW (8), fused Adam reads p, g, m, v and writes p, m, v
(28) — 40 B/param, ≈37 GB per step for FC56 at width 4096 — at the bandwidth a large device copy reaches.
Activations are ignored, so the floor is only meaningful for the FC nets (ResNet-18 is launch-bound at batch 32).
"""

import time

import torch

from benchmarks.common import header, table
from benchmarks.data_path import MEAN, STD, synthetic_split
from benchmarks.train_step import models
from depthstudy.data import Normalize, to_device
from depthstudy.models import build_model, count_parameters
from depthstudy.runtime import place_model
from depthstudy.train import make_optimizer, train_epoch

BYTES_PER_PARAM = 40


def copy_bandwidth(device: torch.device, repeats: int = 10) -> float:
    """Bytes per second a 1 GiB device-to-device copy moves (each byte read once and written once)."""
    x = torch.empty(2**28, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        y.copy_(x)
    torch.cuda.synchronize(device)
    return repeats * 2 * x.nbytes / (time.perf_counter() - start)


def step_ms(spec, device: torch.device, steps: int) -> tuple[float, int]:
    """(mean ms per train_epoch step over ``steps`` batches of 32 on ``device``, parameter count), set up as
    stages/train.py does it, after one warm-up epoch (cuDNN autotuning, Adam's state). train_epoch ends with .item(),
    so the timing is synchronised."""
    torch.manual_seed(0)
    model, channels_last = place_model(build_model(spec), device)
    optimizer = make_optimizer(model, 1e-3, device)
    normalize = Normalize(MEAN, STD, device, channels_last)
    split = to_device(synthetic_split(32 * steps), device)
    train_epoch(model, optimizer, split, 32, torch.Generator().manual_seed(0), normalize, device)
    start = time.perf_counter()
    train_epoch(model, optimizer, split, 32, torch.Generator().manual_seed(1), normalize, device)
    return 1e3 * (time.perf_counter() - start) / steps, count_parameters(model)


def run(quick: bool) -> dict | None:
    """Step time vs the floor for the three models at the seed's settings → model → figures; None without CUDA."""
    header("5. GPU fast path: training step vs the memory-bandwidth floor (seed's settings, FC width 4096)")
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device here (torch.cuda.is_available() is False); GPU step times are not measured")
        return None
    device = torch.device("cuda")
    bandwidth = copy_bandwidth(device)
    print(f"{torch.cuda.get_device_name(device)}: device copy {bandwidth / 1e9:.0f} GB/s")
    rows, results = [["model", "parameters", "ms/step", "floor ms", "step ÷ floor", "img/s"]], {}
    for name, spec in models(4096).items():
        ms, params = step_ms(spec, device, steps=10 if quick else 30)
        floor = 1e3 * BYTES_PER_PARAM * params / bandwidth
        results[name] = {"ms_per_step": ms, "floor_ms": floor, "ratio": ms / floor}
        rows.append([name, f"{params:,}", f"{ms:.1f}", f"{floor:.2f}", f"{ms / floor:.1f}", f"{32e3 / ms:,.0f}"])
        torch.cuda.empty_cache()
    table(rows)
    return results
