"""Checkpoints: the final weights a train stage hands to evaluate, and the end-of-epoch state a killed run
resumes from, tied by a fingerprint to the params and data it came from. All load with weights_only=True."""

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from depthstudy.errors import UserError
from depthstudy.files import atomic_path
from depthstudy.models import build_model
from depthstudy.params import ARCHS, ModelParams, TrainParams


def save_weights(path: Path, model: nn.Module, name: str, params: ModelParams, epoch: int) -> None:
    """The final weights, with what it takes to rebuild the model through the model table."""
    with atomic_path(path) as tmp:
        state = {"model": model.state_dict(), "model_name": name, "model_params": asdict(params), "epoch": epoch}
        torch.save(state, tmp)


def load_weights(path: Path, device: torch.device) -> tuple[str, nn.Module]:
    """Rebuild a model saved by ``save_weights`` → (model name, model in eval mode on ``device``)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint (run its train stage first)") from None
    spec = ckpt["model_params"]
    model = build_model(ARCHS[spec["arch"]](**spec))
    model.load_state_dict(ckpt["model"])
    return ckpt["model_name"], model.to(device).eval()


# --- resuming ------------------------------------------------------------------------------------------------------

# Changes to what the wall clock measures never make a run different; everything else does.
FINGERPRINT_IGNORES = ("threads",)


def fingerprint(model_name: str, model_params: ModelParams, train_params: TrainParams, data_files: list[Path]) -> str:
    """A hash of everything that decides a training run's numbers: model, params and the input files' bytes."""
    train = {k: v for k, v in asdict(train_params).items() if k not in FINGERPRINT_IGNORES}
    h = hashlib.sha256(json.dumps([model_name, asdict(model_params), train], sort_keys=True).encode())
    for path in data_files:
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def save(
    path: Path,
    fp: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    history: list[tuple[dict, list[float]]],
) -> None:
    """Write the state after ``len(history)`` finished epochs, atomically: a kill leaves the previous one intact."""
    state = {
        "fingerprint": fp,
        "epoch": len(history),
        "history": [{"metrics": m, "grad_norms": g} for m, g in history],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "shuffle": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def mark_finished(path: Path, fp: str) -> None:
    """Replace the checkpoint with a small marker: a finished run is never resumed, only re-run."""
    with atomic_path(path) as tmp:
        torch.save({"fingerprint": fp, "finished": True}, tmp)


def load(path: Path, fp: str, device: torch.device) -> dict | None:
    """The checkpoint at ``path`` if it belongs to this run (same fingerprint, unfinished), else None."""
    if not path.exists():
        return None
    try:
        # mmap: FC56's state is ~10 GiB; map it instead of reading a second copy into memory
        state = torch.load(path, map_location=device, weights_only=True, mmap=True)
    except Exception as e:  # a torn or foreign file is a reason to start over, not to fail
        print(f"ignoring checkpoint {path}: unreadable ({type(e).__name__}); starting fresh")
        return None
    if state.get("finished"):
        return None
    if state.get("fingerprint") != fp:
        print(f"ignoring checkpoint {path}: it was made with other params or data; starting fresh")
        return None
    print(f"resuming from {path}: {state['epoch']} epoch(s) done")
    return state


def restore(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> list:
    """Load ``state`` into the live objects; returns the finished epochs' history."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"].cpu())
    generator.set_state(state["rng"]["shuffle"].cpu())
    if state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
    return [(h["metrics"], h["grad_norms"]) for h in state["history"]]
