"""Stage `evaluate`: score every trained model on the test split.

Reads params.yaml (`train.batch_size`, `train.device`, `train.threads`, `train.amp`), the prepared test split and
the models' weights; writes, in OUT_DIR: metrics.json (per model: test accuracy as <model>.test and macro
precision/recall/F1 as <model>.<metric>.test, the DVC metrics), per_class.json (per-class precision/recall/support
and the confusion matrix), confusion/<model>.json (actual/predicted pairs for DVC's confusion plot) and run.json
(device and seconds per model).
Run: python stages/evaluate.py data/prepared/test metrics/evaluate data/models/fc20.pt data/models/fc56.pt ...
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library (see README)

from depthstudy.data import Normalize, load_meta, load_split, to_device  # noqa: E402
from depthstudy.errors import run_stage  # noqa: E402
from depthstudy.evaluation import predict  # noqa: E402
from depthstudy.files import atomic_dir, atomic_path  # noqa: E402
from depthstudy.metrics import classification_metrics, confusion_records, per_class_metrics  # noqa: E402
from depthstudy.params import load_params  # noqa: E402
from depthstudy.runtime import pick_device, place_model, set_threads  # noqa: E402
from depthstudy.weights import load_weights  # noqa: E402


def write_json(path: Path, value) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="the prepared test split (preprocess's output)")
    parser.add_argument("out_dir", type=Path, help="where to write the test metrics")
    parser.add_argument("weights", type=Path, nargs="+", help="weights written by the train stages")
    args = parser.parse_args(argv)

    params = load_params().train
    set_threads(params.threads)
    device = pick_device(params.device)
    meta = load_meta(args.data_dir)
    test = to_device(load_split(args.data_dir, "test"), device)
    labels = test.labels.cpu().numpy()
    summary, details, confusions, run = {}, {}, {}, {"device": str(device), "seconds": {}}
    for path in args.weights:
        start = time.perf_counter()
        name, model, stats = load_weights(path, device)
        model, channels_last = place_model(model, device)
        normalize = Normalize(stats["mean"], stats["std"], device, channels_last)
        _, preds = predict(model, test, params.batch_size, normalize, device, params.amp)
        del model  # FC56 at full width is 3.4 GiB: free it before loading the next
        scores = classification_metrics(labels, preds, len(meta["classes"]))
        # keyed like the train stages' metrics: accuracy is <model>.test, the rest <model>.<metric>.test
        summary[name] = {"test": scores["acc"], **{k: {"test": v} for k, v in scores.items() if k != "acc"}}
        details[name] = {**scores, **per_class_metrics(labels, preds, meta["classes"])}
        confusions[name] = confusion_records(labels, preds, meta["classes"])
        run["seconds"][name] = time.perf_counter() - start
        print(f"{name}: test " + " ".join(f"{k}={v:.4f}" for k, v in scores.items()))

    # Everything is computed before anything is written; each file appears complete or not at all.
    with atomic_dir(args.out_dir / "confusion") as tmp:
        for name, records in confusions.items():
            (tmp / f"{name}.json").write_text(json.dumps(records) + "\n")
    write_json(args.out_dir / "per_class.json", details)
    write_json(args.out_dir / "run.json", run)
    write_json(args.out_dir / "metrics.json", summary)


if __name__ == "__main__":
    sys.exit(run_stage(main))
