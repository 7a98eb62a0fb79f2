"""Part 4, memory: peak RSS while training FC56 at the seed's width 4096 (batch 32, make_optimizer's fused Adam)
for a few steps through train_epoch, in a fresh process, against weights + gradients + Adam's two states.

Needs ~15 GiB of RAM for 1-2 minutes: it waits until /proc/meminfo says 18 GiB are available, and runs nothing
else meanwhile. Opt-in: `python benchmarks/run.py --memory` (or `--only memory`).
"""

import json
import subprocess
import time

from benchmarks.common import child_command, header, mem_available_gib, table

NEED_GIB, WAIT_S, TRIES = 18.0, 60, 5
STEPS, DEPTH, WIDTH = 3, 56, 4096


def vm_gib(field: str) -> float:
    """A /proc/self/status field (VmRSS now, VmHWM = peak so far), in GiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 2**20


def child() -> None:
    """(In the subprocess) build FC56@4096 + fused Adam, run train_epoch over STEPS batches → prints JSON figures."""
    import torch

    from benchmarks.data_path import MEAN, STD, synthetic_split
    from depthstudy.data import Normalize
    from depthstudy.models import build_model, count_parameters
    from depthstudy.params import FCParams
    from depthstudy.train import make_optimizer, train_epoch

    cpu, figures = torch.device("cpu"), {"rss_after_import_gib": vm_gib("VmRSS")}
    torch.manual_seed(0)
    model = build_model(FCParams(depth=DEPTH, width=WIDTH))
    optimizer = make_optimizer(model, 1e-3, cpu)
    figures["params"] = count_parameters(model)
    figures["peak_after_build_gib"] = vm_gib("VmHWM")
    start = time.perf_counter()
    train_epoch(model, optimizer, synthetic_split(32 * STEPS), 32, torch.Generator().manual_seed(0),
                Normalize(MEAN, STD, cpu), cpu)
    figures["s_per_step"] = (time.perf_counter() - start) / STEPS
    figures["peak_gib"] = vm_gib("VmHWM")
    figures["threads"] = torch.get_num_threads()
    print(json.dumps(figures))


def wait_for_memory() -> bool:
    """True once NEED_GIB are available; tries TRIES times, WAIT_S apart."""
    for attempt in range(TRIES):
        if (free := mem_available_gib()) >= NEED_GIB:
            return True
        print(f"only {free:.1f} GiB available, need {NEED_GIB:g}: waiting {WAIT_S} s ({attempt + 1}/{TRIES})")
        time.sleep(WAIT_S)
    return False


def run() -> dict | None:
    """Measure in a subprocess → figures incl. "ratio" (peak RSS ÷ theory), or None when memory never freed up."""
    header(f"4. Memory: FC{DEPTH} width {WIDTH}, batch 32, fused Adam, {STEPS} steps of train_epoch in a subprocess")
    if not wait_for_memory():
        print(f"SKIPPED: never {NEED_GIB:g} GiB available; not measured")
        return None
    start = time.perf_counter()
    done = subprocess.run(child_command("memory", "child()"), capture_output=True, text=True)
    if done.returncode:  # -9: the kernel's OOM killer
        print(f"FAILED: the subprocess exited with {done.returncode}; not measured\n{done.stderr[-2000:]}")
        return None
    r = json.loads(done.stdout.strip().splitlines()[-1])
    r["wall_s"] = time.perf_counter() - start
    r["theory_gib"] = r["params"] * 4 * 4 / 2**30  # fp32 weights, grads, Adam's exp_avg and exp_avg_sq
    r["ratio"] = r["peak_gib"] / r["theory_gib"]
    table([["figure", "value"],
           ["parameters", f"{r['params']:,}"],
           ["weights + grads + 2 Adam states (GiB)", f"{r['theory_gib']:.2f}"],
           ["RSS after imports (GiB)", f"{r['rss_after_import_gib']:.2f}"],
           ["peak RSS after building model + optimizer (GiB)", f"{r['peak_after_build_gib']:.2f}"],
           ["peak RSS after training (VmHWM, GiB)", f"{r['peak_gib']:.2f}"],
           ["peak ÷ theory", f"{r['ratio']:.3f}"],
           [f"seconds per step ({r['threads']} threads)", f"{r['s_per_step']:.1f}"],
           ["subprocess wall time (s)", f"{r['wall_s']:.0f}"]])
    return r
