"""Stage `evaluate`: score every trained model on the test split.

Reads params.yaml (`train.batch_size`, `train.device`, `train.threads`, `train.amp`), the prepared test split and the
checkpoints; writes OUT_DIR/metrics.json (per model: test acc, macro precision/recall/F1 — the DVC metrics),
OUT_DIR/per_class.json (per-class precision/recall/support, confusion matrix, timing) and
OUT_DIR/confusion/<model>.json (actual/predicted pairs for DVC's confusion plot).
Run: python stages/evaluate.py data/prepared metrics/evaluate data/models/fc20.pt data/models/fc56.pt ...
"""

import argparse
import json
import sys
import time
from pathlib import Path

from depthstudy.checkpoint import load_weights
from depthstudy.data import load_meta, load_split
from depthstudy.errors import run_stage
from depthstudy.files import atomic_dir
from depthstudy.metrics import classification_metrics, confusion_records, per_class_metrics
from depthstudy.params import load_params
from depthstudy.train import Normalize, pick_device, place_model, predict, seed_everything, to_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="the prepared splits (preprocess's output)")
    parser.add_argument("out_dir", type=Path, help="where to write the test metrics")
    parser.add_argument("checkpoints", type=Path, nargs="+", help="checkpoints written by the train stages")
    args = parser.parse_args(argv)

    params = load_params().train
    seed_everything(params.seed, params.threads)
    device = pick_device(params.device)
    meta = load_meta(args.data_dir)
    test = to_device(load_split(args.data_dir, "test"), device)
    labels = test.labels.cpu().numpy()
    summary, details, confusions = {}, {}, {}
    for path in args.checkpoints:
        start = time.perf_counter()
        name, model = load_weights(path, device)
        model, channels_last = place_model(model, device)
        normalize = Normalize(meta["mean"], meta["std"], device, channels_last)
        _, preds = predict(model, test, params.batch_size, normalize, device, params.amp)
        del model  # FC56 at full width is 3.4 GiB: free it before loading the next
        summary[name] = classification_metrics(labels, preds, len(meta["classes"]))
        details[name] = {**summary[name], **per_class_metrics(labels, preds, meta["classes"]),
                         "seconds": time.perf_counter() - start, "device": str(device)}
        confusions[name] = confusion_records(labels, preds, meta["classes"])
        print(f"{name}: test " + " ".join(f"{k}={v:.4f}" for k, v in summary[name].items()))

    with atomic_dir(args.out_dir) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "per_class.json").write_text(json.dumps(details, indent=2) + "\n")
        (tmp / "confusion").mkdir()
        for name, records in confusions.items():
            (tmp / "confusion" / f"{name}.json").write_text(json.dumps(records) + "\n")


if __name__ == "__main__":
    sys.exit(run_stage(main))
