"""Crash-resume: the end-of-epoch state a killed training run picks up from.

The state is not a DVC output: DVC never reads or deletes it, so it costs nothing where DVC rebuilds a workspace
(a queued experiment, a fresh clone, `dvc exp apply`) and leaves the run-cache on. It is tied to its run by a
provenance record — params, the training data's bytes, the code the stage runs (its import closure, the same files
dvc.yaml lists as the stage's deps), the device type, the CPU thread count and the number of processes (both decide
the order of float sums) — and is resumed only when all of them match. Under torchrun every rank reads the state
and rank 0 writes it, with every rank's random state. All loads use weights_only=True.
"""

import hashlib
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from depthstudy.distributed import World, restore_rng_state
from depthstudy.errors import UserError
from depthstudy.files import atomic_path
from depthstudy.params import ModelParams, TrainParams
from depthstudy.provenance import code_digests


def provenance(
    model_name: str,
    model_params: ModelParams,
    train_params: TrainParams,
    data_dir: Path,
    script: Path,
    device: torch.device,
    threads: int,
    world_size: int = 1,
) -> dict:
    """Everything that decides a training run's numbers, as comparable values."""
    data = {}
    for path in sorted(Path(data_dir).iterdir()):
        with open(path, "rb") as f:
            data[path.name] = hashlib.file_digest(f, "sha256").hexdigest()
    return {
        "params": {"model": model_name, **asdict(model_params), **asdict(train_params)},
        "data": data,
        "code": code_digests(script),
        "runtime": {"device": device.type, "threads": threads, "processes": world_size},
    }


def _differences(old: dict, new: dict) -> str:
    """What changed between two provenance records, in words (the first few keys of each kind)."""
    found = []
    for kind in ("params", "data", "code", "runtime"):
        a, b = old.get(kind, {}), new[kind]
        keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if keys:
            shown = ", ".join(keys[:3]) + (", …" if len(keys) > 3 else "")
            found.append(f"{kind} ({shown})")
    return "; ".join(found)


def save(
    path: Path,
    prov: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    rng: list[dict[str, torch.Tensor]],
    history: list[dict],
    augment: torch.Generator | None = None,
) -> None:
    """Write the state after ``len(history)`` finished epochs, atomically: a kill leaves the previous one intact.

    ``rng``: every rank's random state, in rank order (distributed.rng_states); the shuffling ``generator`` is the
    same on every rank, and so is ``augment``, the augmentation's (None when training does not augment).
    """
    state = {
        "provenance": prov,
        "epoch": len(history),
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"shuffle": generator.get_state(), "augment": augment.get_state() if augment else None, "ranks": rng},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: Path, prov: dict, device: torch.device) -> dict | None:
    """The state at ``path`` if it belongs to this run; None if there is none or it is stale (made with other params,
    data, code or runtime: said in one line). Any other failure to read it is a UserError: a state that cannot be
    read right now (no memory, an I/O error) is never silently replaced."""
    if not path.exists():
        return None
    try:
        # mmap: FC56's state is ~10 GiB; map it instead of reading a second copy into memory
        state = torch.load(path, map_location=device, weights_only=True, mmap=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: cannot read the resume state ({reason}); delete it to train from scratch") from None
    old = state.get("provenance") if isinstance(state, dict) else None
    if not isinstance(old, dict) or old != prov:
        why = f"it was made with different {_differences(old, prov)}" if isinstance(old, dict) else "an older format"
        print(f"not resuming from {path}: {why}; starting fresh", flush=True)
        return None
    print(f"resuming from {path}: {state['epoch']} epoch(s) done", flush=True)
    return state


def restore(
    state: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    world: World,
    device: torch.device,
    augment: torch.Generator | None = None,
) -> list:
    """Load ``state`` into the live objects (this rank's random state among the saved ones); returns the finished
    epochs' history."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"]["shuffle"].cpu())
    if augment is not None:  # the provenance matched, so train.augment did too: the state holds its generator
        augment.set_state(state["rng"]["augment"].cpu())
    restore_rng_state(state["rng"]["ranks"], world, device)
    return list(state["history"])
