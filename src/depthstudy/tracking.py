"""What a training run records: per-epoch curves through dvclive, the final metrics DVC compares, and run info.

In the model's directory (``live_dir``, e.g. metrics/fc20):

- ``plots/metrics/<split>/<name>.tsv`` — dvclive's per-epoch curves (train/loss, val/acc, …, the first ÷ last
  layer ratios of gradient norm and weight update, and train/images_per_s: a wall-clock figure, plotted but never a
  declared metric);
- ``plots/layers.tsv`` — every weight layer's evidence per epoch (step, epoch, layer, name, grad_norm, act_std,
  update_ratio: see ``train.Epoch``): one table rather than dvclive metrics per layer, which would flood
  `dvc exp show`;
- ``metrics.json`` — the DVC metrics: only figures that are equal when the run is repeated on the same machine,
  keyed by the model's name so that `dvc exp show` headers stay short and unique (``fc20.val`` is its accuracy);
- ``run.json`` — how the numbers were made (device, versions, parameters, threads, data) and the wall clock.
"""

import json
import math
from pathlib import Path

from dvclive import Live

from depthstudy.train import Epoch

LAYERS = Path("plots") / "layers.tsv"
EVIDENCE = ("grad_norm", "act_std", "update_ratio")  # the columns of LAYERS after step, epoch, layer, name
RATIOS = {"grad": "grad_norm", "update": "update_ratio"}  # dvclive/metrics name → the layer evidence it compares


def log10_ratio(first: float, last: float) -> float | None:
    """log10(first / last), or None when either norm is zero or not finite (no ratio to speak of)."""
    if not (first > 0 and last > 0 and math.isfinite(first) and math.isfinite(last)):
        return None
    return math.log10(first / last)


def final_metrics(model: str, epochs: list[Epoch]) -> dict:
    """The declared metrics after the last epoch, keyed so that `dvc exp show` headers are short and unique.

    Accuracy, the headline figure, is ``<model>.<split>`` (``fc20.val``); the rest is ``<model>.<metric>.<split>``
    (``fc20.loss.val``), and the first ÷ last layer ratios of gradient norm and weight update, at epoch 1 and at the
    end, ``<model>.{grad,update}.log10_first_over_last.{epoch1,final}``.
    """
    last = epochs[-1]
    summary: dict = {}
    for name, value in last.metrics.items():
        split, metric = name.split("/")
        if metric == "acc":
            summary[split] = value
        else:
            summary.setdefault(metric, {})[split] = value
    for name, column in RATIOS.items():
        first, final = epochs[0].layers[column], last.layers[column]
        summary[name] = {"log10_first_over_last": {
            "epoch1": log10_ratio(first[0], first[-1]), "final": log10_ratio(final[0], final[-1])}}
    return {model: summary}


class EpochLog:
    """One dvclive step per epoch in ``live_dir``; on a clean exit, ``metrics.json`` and ``run.json``.

    Opening it clears the directory's curves, as dvclive does without ``resume``: a resumed run replays its
    history instead (see stages/train.py), so each finished epoch is logged exactly once.
    """

    def __init__(self, live_dir: Path, model: str, layer_names: list[str], run_info: dict):
        self.dir, self.model, self.layer_names, self.run_info = Path(live_dir), model, layer_names, run_info
        self.live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False)
        self.epochs: list[Epoch] = []
        (self.dir / LAYERS).parent.mkdir(parents=True, exist_ok=True)
        self.table = open(self.dir / LAYERS, "w")
        self.table.write("\t".join(("step", "epoch", "layer", "name", *EVIDENCE)) + "\n")

    def log_epoch(self, epoch: int, result: Epoch) -> None:
        for name, value in result.metrics.items():
            self.live.log_metric(name, value)
        for name, column in RATIOS.items():
            ratio = log10_ratio(result.layers[column][0], result.layers[column][-1])
            self.live.log_metric(f"{name}/log10_first_over_last", math.nan if ratio is None else ratio)
        self.live.log_metric("train/images_per_s", result.images_per_s)
        columns = zip(*(result.layers[c] for c in EVIDENCE))
        self.table.writelines(
            f"{self.live.step}\t{epoch}\t{i}\t{name}\t" + "\t".join(f"{v:.6e}" for v in values) + "\n"
            for i, (name, values) in enumerate(zip(self.layer_names, columns))
        )
        self.table.flush()
        self.live.next_step()
        self.epochs.append(result)

    def __enter__(self) -> "EpochLog":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.table.close()
        self.live.end()
        if exc_type is None and self.epochs:
            # dvclive's own summary adds its step counter and the wall-clock figures: replace it with what DVC
            # should compare.
            (self.dir / "metrics.json").write_text(json.dumps(final_metrics(self.model, self.epochs), indent=2) + "\n")
            timing = {"epoch_seconds": [e.seconds for e in self.epochs],
                      "images_per_s": [e.images_per_s for e in self.epochs]}
            (self.dir / "run.json").write_text(json.dumps({**self.run_info, **timing}, indent=2) + "\n")
