"""Stages `train_fc20`, `train_fc56`, `train_resnet18`: train one model, logging every epoch with dvclive.

Reads params.yaml (`train`, `models.<MODEL>`) and the prepared train/val splits (never the test split); writes the
final weights (a state_dict with the model's params and the data's channel stats, loadable with
torch.load(weights_only=True)) and, in LIVE_DIR: metrics.json (the final train/val metrics and gradient ratios,
the DVC metrics), run.json (device, versions, threads, wall clock) and plots/ (dvclive's per-epoch curves and
layers.tsv: every weight layer's gradient norm, activation std and relative weight update per epoch).
With --resume, the end-of-epoch state goes to that path (not a DVC output): a killed run picks up after its last
finished epoch when params, data, code, device, threads and process count are unchanged; a finished run deletes it.
With `train.nproc` > 1 the stage starts itself again under torchrun, one process per share of the batch; started
by torchrun (several nodes: README, "Scaling out"), it trains as one rank of that world and rank 0 writes.
Run: python stages/train.py fc20 data/prepared/trainval data/models/fc20.pt metrics/fc20 \
         --resume data/checkpoints/fc20.pt
"""

import argparse
import contextlib
import dataclasses
import faulthandler
import os
import sys
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library (see README)

import torch  # noqa: E402

from depthstudy import distributed as ddp  # noqa: E402
from depthstudy import resume  # noqa: E402
from depthstudy.data import Normalize, load_meta, load_split, to_device  # noqa: E402
from depthstudy.errors import UserError, run_stage  # noqa: E402
from depthstudy.models import build_model, count_parameters, weight_layers  # noqa: E402
from depthstudy.params import Params, load_params  # noqa: E402
from depthstudy.runtime import pick_device, place_model, seed_everything, set_threads  # noqa: E402
from depthstudy.tracking import EpochLog  # noqa: E402
from depthstudy.train import Epoch, fit, make_optimizer  # noqa: E402
from depthstudy.weights import save_weights  # noqa: E402


def torchrun(nproc: int, argv: list[str]) -> NoReturn:
    """Become torchrun running this stage as ``nproc`` processes on this machine.

    exec, not a child: the stage's process is torchrun itself, so DVC's signals reach it, and it stops every rank
    as soon as one fails, exiting non-zero with a summary naming it.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", __file__, *argv]
    print(f"train.nproc = {nproc}: " + " ".join(cmd[1:]), flush=True)
    os.execv(sys.executable, cmd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model name under `models` in params.yaml")
    parser.add_argument("data_dir", type=Path, help="the prepared train/val splits (preprocess's output)")
    parser.add_argument("weights", type=Path, help="where to write the final weights")
    parser.add_argument("live_dir", type=Path, help="the directory for this model's metrics, curves and run info")
    parser.add_argument("--resume", type=Path, help="end-of-epoch state to resume from after a crash")
    args = parser.parse_args(argv)

    params = load_params()
    params.model(args.model)  # a model name that is not in params.yaml fails here, before any process starts
    if params.train.nproc > 1 and "WORLD_SIZE" not in os.environ:
        torchrun(params.train.nproc, sys.argv[1:] if argv is None else argv)
    world = ddp.world_from_env()
    faulthandler.enable(sys.__stderr__)  # a crash in native code (a rank aborting in gloo) prints each thread's stack
    ddp.exit_with_launcher(world)
    ddp.per_rank_batch(params.train.batch_size, world.size)
    seed_everything(params.train.seed)
    threads = set_threads(params.train.threads)
    device = pick_device(params.train.device, world)
    with ddp.process_group(world, device):
        train(args, params, world, device, threads)


def train(args: argparse.Namespace, params: Params, world: ddp.World, device: torch.device, threads: int) -> None:
    model_params = params.model(args.model)
    meta = load_meta(args.data_dir)
    train_split, val = (to_device(load_split(args.data_dir, name), device) for name in ("train", "val"))
    model = build_model(model_params)
    if params.train.sync_batchnorm:
        model = ddp.sync_batchnorm(model, world, device)
    model, channels_last = place_model(model, device, params.train.compile)
    t = params.train
    optimizer = make_optimizer(model, t.lr, device, t.optimizer, t.momentum, t.weight_decay)
    generator = torch.Generator().manual_seed(t.seed)
    # The augmentation's own stream (seed + 1): turning it on leaves the shuffling and the default path unchanged.
    augment = torch.Generator().manual_seed(t.seed + 1) if t.augment else None
    ddp.seed_rank(t.seed, world)
    layer_names = [name for name, _ in weight_layers(model)]
    if world.is_main:
        print(f"{args.model}: {count_parameters(model):,} parameters, {len(layer_names)} weight layers, on {device}"
              + (f" × {world.size} processes" if world.size > 1 else ""))

    prov = resume.provenance(args.model, model_params, params.train, args.data_dir, Path(__file__), device, threads,
                             world.size)
    state = resume.load(args.resume, prov, device) if args.resume else None
    history = resume.restore(state, model, optimizer, generator, world, device, augment) if state else []
    history = [Epoch(**h) for h in history]
    del state

    run_info = {"model": args.model, "params_count": count_parameters(model), "device": str(device),
                "torch_version": torch.__version__, "data_source": meta["source"], "threads": threads,
                "processes": world.size}
    logging = EpochLog(args.live_dir, args.model, layer_names, run_info) if world.is_main else contextlib.nullcontext()
    with logging as log:
        # On resume the dvclive directory is rebuilt from the saved history: whatever a kill interrupted, it then
        # holds exactly one row per finished epoch.
        for epoch, result in enumerate(history, start=1):
            if log:
                log.log_epoch(epoch, result)

        def finish_epoch(epoch: int, result: Epoch) -> None:
            history.append(result)
            rng = ddp.rng_states(world, device) if args.resume else []  # a collective: every rank, same point
            if not log:
                return
            log.log_epoch(epoch, result)
            if args.resume:
                resume.save(args.resume, prov, model, optimizer, generator, rng,
                            [dataclasses.asdict(h) for h in history], augment)
            shown = " ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
            print(f"{args.model} epoch {epoch}/{params.train.epochs}: {shown} ({result.seconds:.1f} s)", flush=True)

        normalize = Normalize(meta["mean"], meta["std"], device, channels_last)
        try:
            fit(ddp.wrap(model, world, device), optimizer, generator, train_split, val, params.train, normalize,
                device, finish_epoch, start_epoch=len(history) + 1, name=args.model, world=world, augment=augment)
        except UserError as e:
            raise UserError(f"{args.model}: {e}") from None

    if world.is_main:
        save_weights(args.weights, model, args.model, model_params, params.train.epochs, meta)
        if args.resume:
            args.resume.unlink(missing_ok=True)  # finished: a forced re-run trains from scratch


if __name__ == "__main__":
    sys.exit(run_stage(main))
