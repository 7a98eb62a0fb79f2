"""Stages `train_fc20`, `train_fc56`, `train_resnet18`: train one model, logging every epoch with dvclive.

Reads params.yaml (`train`, `models.<MODEL>`) and the prepared splits; writes the final weights (a state_dict
checkpoint loadable with torch.load(weights_only=True)) and a dvclive directory: metrics.json (final values and
run info), plots/metrics/<split>/<name>.tsv (one row per epoch), params.yaml, and grad_norms.tsv (every
Linear/Conv layer's mean weight-gradient L2 norm, per epoch). With --resume, also the end-of-epoch state
(model, optimizer, RNG, history) that a killed run resumes from; a finished run leaves a small marker there.
Run: python stages/train.py fc20 data/prepared data/models/fc20.pt metrics/fc20 --resume data/checkpoints/fc20.pt
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from depthstudy import checkpoint
from depthstudy.data import load_meta, load_split
from depthstudy.errors import UserError, run_stage
from depthstudy.models import build_model, count_parameters, weight_layers
from depthstudy.params import load_params
from depthstudy.tracking import EpochLog
from depthstudy.train import Normalize, fit, make_optimizer, pick_device, place_model, seed_everything, to_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model name under `models` in params.yaml")
    parser.add_argument("data_dir", type=Path, help="the prepared splits (preprocess's output)")
    parser.add_argument("checkpoint", type=Path, help="where to write the final weights")
    parser.add_argument("live_dir", type=Path, help="the dvclive directory for this model")
    parser.add_argument("--resume", type=Path, help="end-of-epoch state to resume from after a crash")
    args = parser.parse_args(argv)

    params = load_params()
    model_params = params.model(args.model)
    threads = seed_everything(params.train.seed, params.train.threads)
    device = pick_device(params.train.device)
    meta = load_meta(args.data_dir)
    train, val = (to_device(load_split(args.data_dir, name), device) for name in ("train", "val"))
    model, channels_last = place_model(build_model(model_params), device, params.train.compile)
    optimizer = make_optimizer(model, params.train.lr, device)
    generator = torch.Generator().manual_seed(params.train.seed)
    layer_names = [name for name, _ in weight_layers(model)]
    print(f"{args.model}: {count_parameters(model):,} parameters, {len(layer_names)} weight layers, on {device}")

    data_files = [args.data_dir / f for f in ("train.pt", "val.pt", "meta.json")]
    fp = checkpoint.fingerprint(args.model, model_params, params.train, data_files)
    state = checkpoint.load(args.resume, fp, device) if args.resume else None
    history = checkpoint.restore(state, model, optimizer, generator) if state else []
    del state

    run_params = {"model": args.model, **dataclasses.asdict(model_params), **dataclasses.asdict(params.train)}
    summary = {"params_count": count_parameters(model), "device": str(device), "torch_version": torch.__version__,
               "data_source": meta["source"], "threads": threads}
    with EpochLog(args.live_dir, layer_names, run_params, summary) as log:
        # On resume the dvclive directory is rebuilt from the checkpoint's history: whatever a kill interrupted,
        # it then holds exactly one row per finished epoch.
        for epoch, (metrics, grad_norms) in enumerate(history, start=1):
            log.log_epoch(epoch, metrics, grad_norms)

        def finish_epoch(epoch: int, metrics: dict[str, float], grad_norms: list[float]) -> None:
            log.log_epoch(epoch, metrics, grad_norms)
            history.append((metrics, grad_norms))
            if args.resume:
                checkpoint.save(args.resume, fp, model, optimizer, generator, history)
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"{args.model} epoch {epoch}/{params.train.epochs}: {shown}", flush=True)

        normalize = Normalize(meta["mean"], meta["std"], device, channels_last)
        try:
            fit(model, optimizer, generator, train, val, params.train, normalize, device, finish_epoch,
                start_epoch=len(history) + 1)
        except UserError as e:
            raise UserError(f"{args.model}: {e}") from None

    checkpoint.save_weights(args.checkpoint, model, args.model, model_params, params.train.epochs)
    if args.resume:
        checkpoint.mark_finished(args.resume, fp)


if __name__ == "__main__":
    sys.exit(run_stage(main))
