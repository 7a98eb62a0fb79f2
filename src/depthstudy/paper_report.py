"""The paper pipeline's report (paper/dvc.yaml): He et al. 2015's Fig. 6 and Table 6 beside what we measured.

Fig. 6 plots training error (thin) and test error (bold) against iterations for plain-20/56 and ResNet-20/56 on
CIFAR-10; Table 6 gives ResNet test errors. Here: training error (running, in train mode, on augmented batches) and
validation error per epoch, the final test error from `evaluate`, and how the run differs from the paper's.

Reads only what the stages wrote, through report.py's loaders (``load_run``, ``merge_meta``), and params; shares
report.py's Markdown helpers. It never runs a model.
"""

from dataclasses import fields
from pathlib import Path

import pandas as pd

from depthstudy.errors import UserError
from depthstudy.figures import plot_errors
from depthstudy.findings import ALPHA, format_p, sampling_p_value
from depthstudy.params import CifarResNetParams, Params, TrainParams
from depthstudy.report import Run, bullets, markdown, run_info
from depthstudy.schedule import milestone_steps

# Test error (%) of He et al. 2015, Table 6 (CIFAR-10, 45k/5k split, 64k iterations), by (net, depth); for 110 layers
# the best of 5 runs (their mean: 6.61 ± 0.16). The plain nets appear only in Fig. 6, as curves, not numbers.
TABLE6 = {("ResNet", 20): 8.75, ("ResNet", 32): 7.51, ("ResNet", 44): 7.17, ("ResNet", 56): 6.97,
          ("ResNet", 110): 6.43}
PAPER_UPDATES, PAPER_TRAIN_IMAGES = 64_000, 45_000
# §4.2's recipe in this project's terms: 182 epochs of 352 updates = 64,064 ≈ 64k iterations at batch 128.
PAPER_RECIPE = TrainParams(epochs=182, batch_size=128, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                           lr_milestones=(0.5, 0.75), lr_gamma=0.1, augment=True)
RUNTIME_KEYS = {"seed", "device", "threads"}  # decide where and which run, not what the recipe is


def net_of(spec: CifarResNetParams) -> tuple[str, int]:
    """("plain" | "ResNet", depth): where a model sits in Fig. 6 and Table 6."""
    return ("ResNet" if spec.residual else "plain", spec.depth)


def label(spec: CifarResNetParams) -> str:
    net, depth = net_of(spec)
    return f"{net}-{depth}"


def error_table(runs: list[Run], test: dict, params: Params) -> pd.DataFrame:
    """Per model: final training and validation error, the best validation error, our test error, Table 6's."""
    rows = []
    for run in runs:
        h, spec = run.history, params.models[run.name]
        best = h["val/acc"].idxmax()
        paper = TABLE6.get(net_of(spec))
        rows.append({
            "Model": f"{label(spec)} (`{run.name}`)",
            "Parameters": f"{run.info['params_count']:,}",
            "Train error % (last epoch)": f"{100 * (1 - h['train/acc'].iloc[-1]):.2f}",
            "Val error % (last epoch)": f"{100 * (1 - h['val/acc'].iloc[-1]):.2f}",
            "Val error % (best, epoch)": f"{100 * (1 - h['val/acc'].max()):.2f} ({best})",
            "Test error % (ours)": f"{100 * (1 - test[run.name]['acc']):.2f}",
            "Test error % (He et al., Table 6)": f"{paper:.2f}" if paper else "— (Fig. 6 only)",
        })
    return pd.DataFrame(rows)


def lr_drop_epochs(params: Params, n_train: int) -> list[float]:
    """Where the learning rate drops, in epochs: the first update at each lower rate ÷ updates per epoch."""
    t = params.train
    steps = -(-n_train // t.batch_size)
    return [s / steps for s in milestone_steps(steps * t.epochs, t.lr_milestones)]


def compare(a: Run, b: Run, test: dict, n_test: int, params: Params) -> str:
    """One sentence: b against a — final training error, and test error with Fisher's exact test on the test split."""
    name_a, name_b = label(params.models[a.name]), label(params.models[b.name])
    train_a, train_b = (100 * (1 - r.history["train/acc"].iloc[-1]) for r in (a, b))
    acc_a, acc_b = test[a.name]["acc"], test[b.name]["acc"]
    p = sampling_p_value(acc_a, n_test, acc_b, n_test)
    if p < ALPHA:
        verdict = f"{'higher' if acc_b < acc_a else 'lower'} than {name_a}'s beyond the test split's sampling error"
    else:
        verdict = f"within the test split's sampling error of {name_a}'s"
    return (f"{name_b} vs {name_a}: training error {train_b:.2f}% vs {train_a:.2f}% in the last epoch; test error "
            f"{100 * (1 - acc_b):.2f}% vs {100 * (1 - acc_a):.2f}%, {verdict} (Fisher's exact test on {n_test:,} "
            f"images, {format_p(p)}).")


def observations(runs: list[Run], test: dict, n_test: int, params: Params) -> list[str]:
    """Fig. 6's comparisons that the models run allow: deeper vs shallower of each net, plain vs ResNet per depth."""
    by_net = {net_of(params.models[r.name]): r for r in runs}
    lines = []
    for net in ("plain", "ResNet"):
        depths = sorted(d for n, d in by_net if n == net)
        lines += [compare(by_net[net, lo], by_net[net, hi], test, n_test, params) for lo, hi in zip(depths, depths[1:])]
    for depth in sorted({d for _, d in by_net}):
        if ("plain", depth) in by_net and ("ResNet", depth) in by_net:
            lines.append(compare(by_net["plain", depth], by_net["ResNet", depth], test, n_test, params))
    lines.append("The paper's claims, for comparison: plain-56 has higher training and test error than plain-20 "
                 "(Fig. 6, the degradation problem); ResNet-56 has lower test error than ResNet-20 (Table 6). "
                 "One seed per model here: the spread between seeds is not measured.")
    return lines


def scale_notes(params: Params, meta: dict) -> list[str]:
    """What was run, against the paper's data and recipe."""
    counts, t = meta["counts"], params.train
    steps = -(-counts["train"] // t.batch_size)
    total = steps * t.epochs
    notes = []
    if meta["source"] != "cifar10":
        notes.append(f"Data: the offline `{meta['source']}` sample, not CIFAR-10: no number here can be compared with "
                     "Table 6; only the direction of each comparison can be set beside the paper's.")
    notes.append(f"Images: {counts['train']:,} train / {counts['val']:,} val / {counts['test']:,} test (the paper: "
                 f"{PAPER_TRAIN_IMAGES:,} / 5,000 / 10,000).")
    drops = ", ".join(f"{s:,}" for s in milestone_steps(total, t.lr_milestones))
    schedule = f"× {t.lr_gamma:g} after {drops} updates" if drops else "constant"
    notes.append(f"Updates: {total:,} ({t.epochs} epochs × {steps} steps of {t.batch_size} images), lr {t.lr:g}, "
                 f"{schedule} (the paper: {PAPER_UPDATES:,} updates, lr 0.1, ÷ 10 after 32,000 and 48,000).")
    for f in fields(TrainParams):
        ours, paper = getattr(t, f.name), getattr(PAPER_RECIPE, f.name)
        if f.name not in RUNTIME_KEYS | {"epochs", "batch_size", "lr", "lr_milestones", "lr_gamma"} and ours != paper:
            notes.append(f"`train.{f.name}` is {ours} (the paper's recipe: {paper}).")
    notes.append("Fig. 6 draws test error against iterations; this pipeline measures the validation split after every "
                 "epoch and the test split once, at the end (`evaluate`). Training error is the running error over "
                 "each epoch's augmented batches, in train mode (BatchNorm on batch statistics).")
    return notes


def write_paper_report(
    out_dir: Path, runs: list[Run], test: dict, eval_seconds: dict[str, float], params: Params, meta: dict
) -> None:
    """Write report.md and fig6_errors.png into ``out_dir``."""
    others = [r.name for r in runs if not isinstance(params.models[r.name], CifarResNetParams)]
    if others:
        raise UserError(f"the paper report compares He et al.'s CIFAR nets (arch cifar_resnet) only, not {others}")
    nets = [(label(params.models[r.name]), params.models[r.name].depth, params.models[r.name].residual, r.history)
            for r in runs]
    plot_errors(nets, out_dir / "fig6_errors.png", lr_drop_epochs(params, meta["counts"]["train"]))
    text = f"""# He et al. 2015, §4.2: plain vs residual nets of depth 20 and 56

Made by the paper pipeline's `report` stage (`paper/dvc.yaml`) from the metrics files; every number is read from
them.

## What was run

{bullets(scale_notes(params, meta))}

## Test error beside Table 6

{markdown(error_table(runs, test, params))}

## Observations

{bullets(observations(runs, test, meta["counts"]["test"], params))}

## Training and validation error (after Fig. 6: one colour per depth, dashed = plain, solid = ResNet; dotted: lr ÷ 10)

![training and validation error](fig6_errors.png)

## Run info

{bullets(run_info(runs, eval_seconds, params, meta))}
"""
    (out_dir / "report.md").write_text(text)
