"""Scoring a model on a split in eval mode: the one pass that validation (during training) and `evaluate` share."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depthstudy.data import Normalize, Split, batches


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, batch_size: int, normalize: Normalize, device: torch.device, amp: bool = False
) -> tuple[float, np.ndarray]:
    """Eval-mode pass → (mean cross-entropy, (N,) predicted classes as a numpy array)."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    preds = []
    for images, labels in batches(split, batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(normalize(images.to(device)))
        loss_sum += F.cross_entropy(logits.float(), labels.to(device), reduction="sum").double()
        preds.append(logits.argmax(dim=1).cpu())
    return loss_sum.item() / len(split.labels), torch.cat(preds).numpy()
