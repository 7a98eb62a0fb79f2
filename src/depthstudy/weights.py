"""The final weights a train stage hands to `evaluate`: a state_dict with what it takes to rebuild and feed the model.

``{"model": state_dict, "model_name", "model_params", "epoch", "mean", "std"}``: the model is rebuilt through the
model table, and the channel statistics it was trained with travel with it, so evaluating a model needs no file
of the training data. Loaded with weights_only=True.
"""

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from depthstudy.errors import UserError
from depthstudy.files import atomic_path
from depthstudy.models import build_model
from depthstudy.params import ARCHS, ModelParams


def save_weights(path: Path, model: nn.Module, name: str, params: ModelParams, epoch: int, meta: dict) -> None:
    """Write the weights atomically; ``meta`` is the training data's meta.json (its channel ``mean`` and ``std``)."""
    state = {"model": model.state_dict(), "model_name": name, "model_params": asdict(params), "epoch": epoch,
             "mean": meta["mean"], "std": meta["std"]}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_weights(path: Path, device: torch.device) -> tuple[str, nn.Module, dict]:
    """Rebuild a model saved by ``save_weights`` → (model name, model in eval mode on ``device``, {mean, std})."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such weights file (run its train stage first)") from None
    spec = ckpt["model_params"]
    model = build_model(ARCHS[spec["arch"]](**spec))
    model.load_state_dict(ckpt["model"])
    return ckpt["model_name"], model.to(device).eval(), {"mean": ckpt["mean"], "std": ckpt["std"]}
