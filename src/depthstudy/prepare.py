"""Split the archive's records into train / val / test, with train-only channel statistics.

Preprocess writes two outputs: train + val (what training reads) and test (what only `evaluate` reads), so that a
change to the test split (`data.test_limit`) leaves the training data byte-identical and retrains nothing.
"""

from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from depthstudy.archive import NUM_CLASSES, read_cifar10
from depthstudy.data import Split
from depthstudy.errors import UserError
from depthstudy.params import DataParams

OUTPUTS = {"trainval": ("train", "val"), "test": ("test",)}  # preprocess's output directories → the splits in each


def _stratified_subset(labels: np.ndarray, size: int, seed: int, what: str) -> np.ndarray:
    """Indices of a stratified, seeded subset of ``size`` items (all of them when ``size`` == len)."""
    if size > len(labels):
        raise UserError(f"params.yaml: {what} is {size}, but the archive has only {len(labels)} such images")
    if size == len(labels):
        return np.arange(len(labels))
    try:
        keep, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed)
    except ValueError as e:
        raise UserError(f"params.yaml: {what} = {size} cannot be split by class: {e}") from None
    return np.sort(keep)


def prepare(archive: Path, params: DataParams) -> tuple[dict[str, Split], dict]:
    """Parse ``archive`` and split it → ({"train", "val", "test"} → Split, metadata of all three splits)."""
    records = read_cifar10(archive)
    train_x, train_y = records.train_images, records.train_labels
    test_x, test_y = records.test_images, records.test_labels
    if params.train_limit is not None:
        keep = _stratified_subset(train_y, params.train_limit, params.seed, "data.train_limit")
        train_x, train_y = train_x[keep], train_y[keep]
    if params.test_limit is not None:
        keep = _stratified_subset(test_y, params.test_limit, params.seed, "data.test_limit")
        test_x, test_y = test_x[keep], test_y[keep]
    try:
        train_idx, val_idx = train_test_split(
            np.arange(len(train_y)), test_size=params.val_fraction, stratify=train_y, random_state=params.seed
        )
    except ValueError as e:
        what = f"data.val_fraction = {params.val_fraction}"
        raise UserError(f"params.yaml: {what} cannot be split by class: {e}") from None
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    splits = {
        "train": Split(torch.from_numpy(train_x[train_idx]), torch.from_numpy(train_y[train_idx])),
        "val": Split(torch.from_numpy(train_x[val_idx]), torch.from_numpy(train_y[val_idx])),
        "test": Split(torch.from_numpy(test_x), torch.from_numpy(test_y)),
    }
    mean, std = channel_stats(splits["train"].images)
    meta = {
        "source": params.source,
        "classes": records.classes,
        "counts": {name: len(s.labels) for name, s in splits.items()},
        "class_counts": {
            name: np.bincount(s.labels.numpy(), minlength=NUM_CLASSES).tolist() for name, s in splits.items()
        },
        "mean": mean,
        "std": std,
    }
    return splits, meta


def output_meta(meta: dict, names: tuple[str, ...]) -> dict:
    """The part of ``meta`` that belongs with the splits ``names``: their counts; the channel stats go with train."""
    part = {
        "source": meta["source"],
        "classes": meta["classes"],
        "counts": {name: meta["counts"][name] for name in names},
        "class_counts": {name: meta["class_counts"][name] for name in names},
    }
    if "train" in names:
        part.update(mean=meta["mean"], std=meta["std"])
    return part


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, 3, H, W), on the 0-1 scale, without a float copy of all N."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    n = len(images) * images.shape[2] * images.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()
