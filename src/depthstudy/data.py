"""The prepared splits: saved as .npy arrays, loaded back as tensors, batched and normalised on the device.

A split directory holds ``<split>_images.npy`` (N, 3, 32, 32) uint8, ``<split>_labels.npy`` (N,) int64 and
``meta.json``. numpy's format has no pickle and equal arrays give equal bytes (torch.save's do not: each file
carries a random id), so re-running preprocess on the same data changes no hash that DVC compares.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Split:
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64


def save_splits(out_dir: Path, splits: dict[str, Split], meta: dict) -> None:
    """Write each split's images and labels as .npy, and ``meta.json``, into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        np.save(out_dir / f"{name}_images.npy", split.images.contiguous().numpy())
        np.save(out_dir / f"{name}_labels.npy", split.labels.numpy())
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_split(data_dir: Path, name: str) -> Split:
    """Load one prepared split (plain arrays: nothing is unpickled)."""
    arrays = [np.load(Path(data_dir) / f"{name}_{part}.npy", allow_pickle=False) for part in ("images", "labels")]
    return Split(*map(torch.from_numpy, arrays))


def load_meta(data_dir: Path) -> dict:
    return json.loads((Path(data_dir) / "meta.json").read_text())


def to_device(split: Split, device: torch.device) -> Split:
    """The whole split on ``device``, still uint8 (CIFAR-10's 60k images are 184 MB): no copy per batch."""
    return Split(split.images.to(device), split.labels.to(device))


class Normalize:
    """Turn a batch of uint8 images (B, 3, 32, 32) into float32, standardised with the training split's stats.

    ``channels_last`` lays the batch out NHWC, the fast layout for convolutions on CUDA (same values).
    """

    def __init__(self, mean: list[float], std: list[float], device: torch.device, channels_last: bool = False):
        self.scale = (1 / (255 * torch.tensor(std, device=device))).view(1, 3, 1, 1)
        self.shift = (-torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mul_(self.scale).add_(self.shift).contiguous(memory_format=self.memory_format)


def batches(
    split: Split, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches, shuffled by ``generator`` when given; the last batch may be short."""
    n = len(split.labels)
    if generator is None:
        for start in range(0, n, batch_size):
            yield split.images[start : start + batch_size], split.labels[start : start + batch_size]
        return
    # index_select, not images[idx]: the same rows, ~20× faster per batch (benchmarks/RESULTS.md)
    order = torch.randperm(n, generator=generator).to(split.images.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield split.images.index_select(0, idx), split.labels.index_select(0, idx)
