"""The performance benchmarks of depthstudy (issues 6, 10 and 11): data path, training step, per-layer
instrumentation, CPU threads, DVC pipeline, memory, GPU, the paper's augmentation and its training step. Run from the
project root with the project's environment:

    python benchmarks/run.py                  # parts 1, 2, 2b, 2c, 3, 5, 6, 7: ~10-13 min on 2 shared cores
    python benchmarks/run.py --quick          # fewer images, steps and repeats: ~5-6 min, more under load
    python benchmarks/run.py --only train     # some parts: data, train, instrument, threads, pipeline, memory, gpu,
                                              # augment, paper
    python benchmarks/run.py --memory         # also part 4: FC56 at width 4096, 1-2 minutes and ~15 GiB of RAM
    python benchmarks/run.py --only threads --contention   # part 2b beside a competing PyTorch process too

Every comparison runs its variants interleaved (AB BA AB …) and reports medians over the repeats; ratios are
medians of side-by-side pairs. Parts 1 and 2 run in this process at --threads (1 by default: on a machine shared
with other work, 2 OpenMP threads stall each other; part 2b measures that). Part 3 runs the stages as dvc.yaml does,
with params.yaml's thread setting and this environment's OpenMP variables. Targets are printed as PASS/FAIL last.
benchmarks/RESULTS.md holds the figures of a run on the project's 2-core machine and what they showed.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` as a package, run as a script too

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.common import Check  # noqa: E402

PARTS = ("data", "train", "instrument", "threads", "pipeline", "memory", "gpu", "augment", "paper")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, steps and repeats")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--memory", action="store_true", help="also run part 4 (FC56 at width 4096, ~15 GiB)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for parts 1-2 (0 = PyTorch's default)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats per comparison (default 5, quick 3)")
    parser.add_argument("--contention", action="store_true",
                        help="part 2b also beside a 2-thread PyTorch process it starts (slows the whole machine)")
    parser.add_argument("--keep", action="store_true", help="keep part 3's temporary repo (its path is printed)")
    return parser.parse_args(argv)


def selected(args: argparse.Namespace) -> list[str]:
    if args.only:
        return [p for p in PARTS if p in args.only]
    return [p for p in PARTS if p != "memory" or args.memory]


def run_part(part: str, args: argparse.Namespace):
    """Run one part at the sizes --quick picks → its results (None when skipped)."""
    quick, repeats = args.quick, args.repeats or (3 if args.quick else 5)
    if part == "data":
        from benchmarks import data_path

        return data_path.run(images=2_000 if quick else 10_000, repeats=repeats)
    if part == "train":
        from benchmarks import train_step

        steps = {"fc20": 10, "fc56": 6, "resnet18": 3} if quick else {"fc20": 20, "fc56": 12, "resnet18": 6}
        return train_step.run(width=512, steps=steps, repeats=repeats)
    if part == "instrument":
        from benchmarks import instrument

        steps = {"fc20": 10, "fc56": 6} if quick else {"fc20": 20, "fc56": 12}
        return instrument.run(width=512, steps=steps, repeats=repeats)
    if part == "threads":
        from benchmarks import threads

        return threads.run(repeats=args.repeats or (1 if quick else 3), contention=args.contention)
    if part == "pipeline":
        from benchmarks import pipeline

        return pipeline.run(repeats=args.repeats or (5 if quick else 9), keep=args.keep)  # ~1 s a pair
    if part == "memory":
        from benchmarks import memory

        return memory.run()
    if part == "augment":
        from benchmarks import augment

        return augment.run(batches=3 if quick else 5, repeats=repeats)
    if part == "paper":
        from benchmarks import paper_step

        # >= 10 steps: train_epoch probes every 10th (PROBE_EVERY), so shorter runs overstate its cost
        steps = {"resnet20": 10, "resnet56": 10} if quick else {"resnet20": 20, "resnet56": 10}
        return paper_step.run(steps=steps, repeats=repeats)
    from benchmarks import gpu

    return gpu.run(quick)


def checks(results: dict) -> list[Check]:
    """The targets of issues 6 and 10, for the parts that ran."""
    out = []
    data, train = results.get("data"), results.get("train")
    if data:
        out.append(Check("data path: project ÷ best torchvision-style DataLoader", data["min_speedup"], 20))
    if data and train:
        for name, r in train.items():
            out.append(Check(f"data path img/s ÷ {name} training img/s", data["project"] / r["train_epoch"], 10))
    for name, r in (train or {}).items():
        # Per CIFAR-10 epoch (extrapolated from two loop lengths): a loop of a few steps pays train_epoch's per-epoch
        # work (the LayerProbe's weight snapshot) hundreds of times more often than training does.
        out.append(Check(f"{name}: train_epoch ÷ bare loop, a CIFAR-10 epoch, as a speed", r["ratio"], 0.95))
        out.append(Check(f"{name}: the same, estimated from the per-step parts", r["estimated_ratio"], 0.95))
        out.append(Check(f"{name}: fit ÷ bare train+eval, a CIFAR-10 epoch, as a speed", r["fit_ratio"], 0.95))
    for name, r in (results.get("instrument") or {}).items():
        # As train_epoch runs it: the LayerProbe, gradient norms and activation stds every k-th step, the update ratio
        # amortised over an epoch. Not the whole loops: they pay the update ratio once per few steps, not per epoch.
        out.append(Check(f"{name}: instrumentation ÷ bare step (parts timed alone)", r["overhead_sampled"], 0.05, True))
    for name, r in (results.get("paper") or {}).items():
        out.append(Check(f"{name}, the paper's recipe: train_epoch img/s ÷ bare loop img/s", r["ratio"], 0.95))
    if results.get("augment") and results.get("paper"):
        from benchmarks.augment import PROJECT

        share = results["augment"]["ms_per_batch"][PROJECT] / results["paper"]["resnet20"]["ms_per_step"]
        out.append(Check("crop + flip of a batch of 128 ÷ a ResNet-20 step (bare)", share, 0.01, True))
    if results.get("pipeline"):
        out.append(Check("no-op `dvc repro` time ÷ `dvc status` time", results["pipeline"]["noop_ratio"], 1.5, True))
    if results.get("memory"):
        out.append(Check("FC56@4096 peak RSS ÷ (weights + grads + 2 Adam states)", results["memory"]["ratio"], 1.15,
                         True))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    common.header("Machine")
    common.table([[k, v] for k, v in common.machine().items()])
    results = {part: run_part(part, args) for part in selected(args)}
    common.header("Targets")
    found = checks(results)
    for check in found:
        print(check.line())
    if "gpu" in results and results["gpu"] is None:
        print("NOT MEASURED  GPU step times (no CUDA device)")
    if not found:
        print("(no targeted figures in the parts that ran)")


if __name__ == "__main__":
    main()
