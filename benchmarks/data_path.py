"""Part 1, the data path: the project's batches() + Normalize vs a torchvision-style Dataset through a DataLoader.

Both turn the same uint8 CIFAR-shaped images into shuffled, normalised float32 batches of 32 on the CPU.
"""

import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchmarks.common import header, interleave, paired_ratio, rate, table
from depthstudy.data import Normalize, Split, batches

BATCH = 32
MEAN, STD = [0.491, 0.482, 0.447], [0.247, 0.243, 0.262]  # CIFAR-10's; the values do not change the cost
CPU = torch.device("cpu")


def synthetic_split(n: int, seed: int = 0) -> Split:
    """``n`` random uint8 images (n, 3, 32, 32) with labels 0-9, as preprocess writes them."""
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10)


class PilDataset(Dataset):
    """What torchvision.datasets.CIFAR10 does: an (N, 32, 32, 3) uint8 array, one PIL image per sample, a transform."""

    def __init__(self, split: Split):
        self.data = split.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = split.labels.tolist()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def project_epoch(split: Split, normalize: Normalize, passes: int = 5) -> float:
    """Seconds per shuffled epoch the way train_epoch reads data: batches(), .to(device), Normalize.

    Averaged over ``passes`` epochs, so one measurement lasts long enough (~0.1 s) to time reliably."""
    start = time.perf_counter()
    for p in range(passes):
        for images, labels in batches(split, BATCH, torch.Generator().manual_seed(p)):
            normalize(images.to(CPU, non_blocking=True))
            labels.to(CPU, non_blocking=True)
    return (time.perf_counter() - start) / passes


def loader_epoch(dataset: Dataset, workers: int) -> float:
    """Seconds for one shuffled epoch through a DataLoader (workers start anew each epoch, the default)."""
    loader = DataLoader(dataset, BATCH, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for x, y in loader:
        pass
    return time.perf_counter() - start


PROJECT = "project: batches() + Normalize"


def run(images: int, repeats: int) -> dict:
    """Measure the paths interleaved → median img/s per path, and the project's speed-up over the DataLoaders."""
    header(f"1. Data path: {images:,} uint8 images (3×32×32), batch {BATCH}, {repeats} interleaved repeats")
    split = synthetic_split(images)
    normalize, dataset = Normalize(MEAN, STD, CPU), PilDataset(split)
    seconds = interleave(
        {
            PROJECT: lambda: project_epoch(split, normalize),
            "torchvision-style, DataLoader 0 workers": lambda: loader_epoch(dataset, 0),
            "torchvision-style, DataLoader 2 workers": lambda: loader_epoch(dataset, 2),
        },
        repeats,
    )
    loaders = [name for name in seconds if name.startswith("torchvision")]
    rows = [["path", "img/s (median)", "seconds ÷ project's (paired median)"]]
    for name, s in seconds.items():
        rows.append([name, f"{rate(images, s):,.0f}", f"{paired_ratio(s, seconds[PROJECT]):.2f}"])
    table(rows)
    return {
        "project": rate(images, seconds[PROJECT]),
        "min_speedup": min(paired_ratio(seconds[name], seconds[PROJECT]) for name in loaders),
        "images_per_s": {name: rate(images, s) for name, s in seconds.items()},
    }
