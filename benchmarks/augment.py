"""Part 6, the augmentation: the project's random_crop_flip on whole uint8 batches vs torchvision's transforms one
image at a time, the usual way (a Dataset's transform), on tensors and on PIL images.

All three turn a batch of 128 uint8 images (3×32×32) into a uint8 batch padded by 4, randomly cropped to 32×32 and
randomly mirrored, as He et al. 2015 §4.2 trains. Only the augmentation is timed: not indexing, normalising or a
DataLoader's collation (part 1 times the data path). Alone, from the project root:

    python -m benchmarks.augment      # at 1 thread, like parts 1 and 2 of benchmarks/run.py
"""

import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from benchmarks.common import header, interleave, median, paired_ratio, spread, table
from benchmarks.data_path import synthetic_split
from depthstudy.augment import random_crop_flip

BATCH = 128  # the paper's batch size


def project(images: torch.Tensor, batches: int) -> float:
    """Seconds per batch of random_crop_flip on the whole (B, 3, 32, 32) uint8 batch."""
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(batches):
        random_crop_flip(images, generator)
    return (time.perf_counter() - start) / batches


def per_image_tensors(images: torch.Tensor, batches: int) -> float:
    """Seconds per batch of torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip on each (3, 32, 32)
    uint8 tensor, stacked into a batch."""
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])
    start = time.perf_counter()
    for _ in range(batches):
        torch.stack([augment(image) for image in images])
    return (time.perf_counter() - start) / batches


def per_image_pil(pixels: np.ndarray, batches: int) -> float:
    """The same on PIL images, as torchvision.datasets.CIFAR10 feeds its transform: (32, 32, 3) uint8 array → PIL
    image → crop, flip → PILToTensor (uint8, no normalisation), stacked."""
    augment = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.PILToTensor()]
    )
    start = time.perf_counter()
    for _ in range(batches):
        torch.stack([augment(Image.fromarray(image)) for image in pixels])
    return (time.perf_counter() - start) / batches


PROJECT = "project: random_crop_flip, whole batch"


def run(batches: int, repeats: int) -> dict:
    """Measure the three interleaved → median ms per batch of 128, and the project's speed-up over each."""
    header(f"6. Augmentation: pad 4 + random crop + flip, uint8 batches of {BATCH}, {repeats} interleaved repeats")
    images = synthetic_split(BATCH).images
    pixels = images.permute(0, 2, 3, 1).contiguous().numpy()  # (B, 32, 32, 3), torchvision's CIFAR10 layout
    seconds = interleave(
        {
            PROJECT: lambda: project(images, batches * 10),  # ~10× faster: 10× the batches to time it as reliably
            "torchvision per image, uint8 tensors": lambda: per_image_tensors(images, batches),
            "torchvision per image, PIL images": lambda: per_image_pil(pixels, batches),
        },
        repeats,
    )
    rows = [["augmentation", "ms per batch (median)", "range", "seconds ÷ project's (paired median)"]]
    for name, s in seconds.items():
        ms = [1e3 * x for x in s]
        rows.append([name, f"{median(ms):.3g}", spread(ms), f"{paired_ratio(s, seconds[PROJECT]):.1f}"])
    table(rows)
    others = [name for name in seconds if name != PROJECT]
    return {
        "ms_per_batch": {name: 1e3 * median(s) for name, s in seconds.items()},
        "min_speedup": min(paired_ratio(seconds[name], seconds[PROJECT]) for name in others),
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(batches=5, repeats=5)
