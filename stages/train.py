"""Stages `train_fc20`, `train_fc56`, `train_resnet18`: train one model, logging every epoch with dvclive.

Reads params.yaml (`train`, `models.<MODEL>`) and the prepared train/val splits (never the test split); writes the
final weights (a state_dict with the model's params and the data's channel stats, loadable with
torch.load(weights_only=True)) and, in LIVE_DIR: metrics.json (the final train/val metrics and gradient ratios,
the DVC metrics), run.json (device, versions, threads, wall clock) and plots/ (dvclive's per-epoch curves and
layers.tsv: every weight layer's gradient norm, activation std and relative weight update per epoch).
With --resume, the end-of-epoch state goes to that path (not a DVC output): a killed run picks up after its last
finished epoch when params, data, code, device and threads are unchanged; a finished run deletes it.
Run: python stages/train.py fc20 data/prepared/trainval data/models/fc20.pt metrics/fc20 \
         --resume data/checkpoints/fc20.pt
"""

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library (see README)

import torch  # noqa: E402

from depthstudy import resume  # noqa: E402
from depthstudy.data import Normalize, load_meta, load_split, to_device  # noqa: E402
from depthstudy.errors import UserError, run_stage  # noqa: E402
from depthstudy.models import build_model, count_parameters, weight_layers  # noqa: E402
from depthstudy.params import load_params  # noqa: E402
from depthstudy.runtime import pick_device, place_model, seed_everything, set_threads  # noqa: E402
from depthstudy.tracking import EpochLog  # noqa: E402
from depthstudy.train import Epoch, fit, make_optimizer  # noqa: E402
from depthstudy.weights import save_weights  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model name under `models` in params.yaml")
    parser.add_argument("data_dir", type=Path, help="the prepared train/val splits (preprocess's output)")
    parser.add_argument("weights", type=Path, help="where to write the final weights")
    parser.add_argument("live_dir", type=Path, help="the directory for this model's metrics, curves and run info")
    parser.add_argument("--resume", type=Path, help="end-of-epoch state to resume from after a crash")
    args = parser.parse_args(argv)

    params = load_params()
    model_params = params.model(args.model)
    seed_everything(params.train.seed)
    threads = set_threads(params.train.threads)
    device = pick_device(params.train.device)
    meta = load_meta(args.data_dir)
    train, val = (to_device(load_split(args.data_dir, name), device) for name in ("train", "val"))
    model, channels_last = place_model(build_model(model_params), device, params.train.compile)
    t = params.train
    optimizer = make_optimizer(model, t.lr, device, t.optimizer, t.momentum, t.weight_decay)
    generator = torch.Generator().manual_seed(t.seed)
    # The augmentation's own stream (seed + 1): turning it on leaves the shuffling and the default path unchanged.
    augment = torch.Generator().manual_seed(t.seed + 1) if t.augment else None
    layer_names = [name for name, _ in weight_layers(model)]
    print(f"{args.model}: {count_parameters(model):,} parameters, {len(layer_names)} weight layers, on {device}")

    prov = resume.provenance(args.model, model_params, params.train, args.data_dir, Path(__file__), device, threads)
    state = resume.load(args.resume, prov, device) if args.resume else None
    history = [Epoch(**h) for h in resume.restore(state, model, optimizer, generator, augment)] if state else []
    del state

    run_info = {"model": args.model, "params_count": count_parameters(model), "device": str(device),
                "torch_version": torch.__version__, "data_source": meta["source"], "threads": threads}
    with EpochLog(args.live_dir, args.model, layer_names, run_info) as log:
        # On resume the dvclive directory is rebuilt from the saved history: whatever a kill interrupted, it then
        # holds exactly one row per finished epoch.
        for epoch, result in enumerate(history, start=1):
            log.log_epoch(epoch, result)

        def finish_epoch(epoch: int, result: Epoch) -> None:
            log.log_epoch(epoch, result)
            history.append(result)
            if args.resume:
                resume.save(args.resume, prov, model, optimizer, generator, [dataclasses.asdict(h) for h in history],
                            augment)
            shown = " ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
            print(f"{args.model} epoch {epoch}/{params.train.epochs}: {shown} ({result.seconds:.1f} s)", flush=True)

        normalize = Normalize(meta["mean"], meta["std"], device, channels_last)
        try:
            fit(model, optimizer, generator, train, val, params.train, normalize, device, finish_epoch,
                start_epoch=len(history) + 1, name=args.model, augment=augment)
        except UserError as e:
            raise UserError(f"{args.model}: {e}") from None

    save_weights(args.weights, model, args.model, model_params, params.train.epochs, meta)
    if args.resume:
        args.resume.unlink(missing_ok=True)  # finished: a forced re-run trains from scratch


if __name__ == "__main__":
    sys.exit(run_stage(main))
