"""Score trained models on the test split: overall and per-class metrics and the confusion matrix."""

from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn

from depthstudy.errors import UserError
from depthstudy.models import build_model
from depthstudy.params import ARCHS


def load_checkpoint(path: Path, device: torch.device) -> tuple[str, nn.Module]:
    """Rebuild a model from a checkpoint written by the train stage → (model name, model in eval mode)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint (run its train stage first)") from None
    spec = ckpt["model_params"]
    model = build_model(ARCHS[spec["arch"]](**spec))
    model.load_state_dict(ckpt["model"])
    return ckpt["model_name"], model.to(device).eval()


def test_metrics(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-class precision/recall and the confusion matrix (rows = true)."""
    ids = list(range(len(classes)))
    scores = partial(precision_recall_fscore_support, labels, preds, labels=ids, zero_division=0)
    precision, recall, f1, _ = scores(average="macro")
    per_p, per_r, _, support = scores(average=None)
    return {
        "acc": float((labels == preds).mean()),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "support": int(s)}
            for name, p, r, s in zip(classes, per_p, per_r, support)
        },
        "confusion": confusion_matrix(labels, preds, labels=ids).tolist(),
    }


def confusion_records(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> list[dict[str, str]]:
    """One {"actual", "predicted"} record per test image: the input of DVC's ``confusion`` plot template."""
    return [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(labels.tolist(), preds.tolist())]
