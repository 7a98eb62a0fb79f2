"""The CIFAR-10 binary archive: build the offline digits sample, parse records safely, split, save as tensors.

A record is 3,073 bytes: one label byte (0-9), then 1,024 R, 1,024 G and 1,024 B bytes, each plane row-major
32×32. Nothing here unpickles downloaded bytes: records are parsed with numpy, splits are saved as plain tensors.
"""

import gzip
import io
import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from depthstudy.errors import UserError
from depthstudy.params import DataParams

PREFIX = "cifar-10-batches-bin"
TRAIN_MEMBERS = tuple(f"{PREFIX}/data_batch_{i}.bin" for i in range(1, 6))
TEST_MEMBER = f"{PREFIX}/test_batch.bin"
META_MEMBER = f"{PREFIX}/batches.meta.txt"
EXPECTED = (*TRAIN_MEMBERS, TEST_MEMBER, META_MEMBER)
RECORD = 1 + 3 * 32 * 32
NUM_CLASSES = 10
MAX_MEMBER_BYTES = 64 << 20  # the official batches are 30.7 MB; anything far larger is refused unread
CHUNK_BYTES = 1 << 20
MAX_MEMBERS = 1000  # the official archive has 9
MAX_ARCHIVE_BYTES = 1 << 30  # all members together (the official archive unpacks to 185 MB): a bomb guard
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64


# --- the offline sample ------------------------------------------------------------------------------------------

DIGITS_TEST_SIZE = 297  # fixed: 1,797 digits → 1,500 train + 297 test


def build_digits_archive(dest: Path) -> None:
    """Write scikit-learn's 1,797 handwritten digits as a CIFAR-10 binary archive (deterministic bytes).

    Each 8×8 image (values 0-16) is scaled to 0-255, upscaled 4× by pixel repetition to 32×32 and copied to
    the three colour planes. The train/test split is stratified with a fixed seed, so it never changes.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    pixels = pixels.repeat(4, axis=1).repeat(4, axis=2)  # (1797, 32, 32)
    images = np.repeat(pixels[:, None], 3, axis=1)  # (1797, 3, 32, 32)
    labels = digits.target.astype(np.uint8)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=0
    )
    members = {
        name: encode_records(images[part], labels[part])
        for name, part in zip(TRAIN_MEMBERS, np.array_split(np.sort(train_idx), len(TRAIN_MEMBERS)))
    }
    members[TEST_MEMBER] = encode_records(images[np.sort(test_idx)], labels[np.sort(test_idx)])
    members[META_MEMBER] = "".join(f"{name}\n" for name in digits.target_names.astype(str)).encode()
    write_tar_gz(dest, members)


def encode_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """(N, 3, 32, 32) uint8 images and (N,) labels → N records of the CIFAR-10 binary format."""
    return np.concatenate([labels.reshape(-1, 1), images.reshape(len(labels), -1)], axis=1).astype(np.uint8).tobytes()


def write_tar_gz(dest: Path, members: dict[str, bytes]) -> None:
    """Write ``members`` (name → bytes) as a .tar.gz with fixed metadata, so equal inputs give equal bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(payload), 0o644, 0
            tar.addfile(info, io.BytesIO(payload))
    with open(dest, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())


# --- reading the archive -----------------------------------------------------------------------------------------


def read_archive(path: Path) -> tuple[dict[str, bytes], list[str]]:
    """Read the expected members of the archive at ``path`` without extracting anything to disk.

    Returns (member name → bytes for the batch files, class names). Refuses links, devices, absolute or ``..``
    names, duplicated, missing or oversized expected members, and truncated or corrupt gzip data.
    """
    found: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for count, member in enumerate(tar, start=1):
                name = member.name.removeprefix("./")  # as `tar czf x.tgz ./dir` writes names
                total += max(member.size, 0)
                _check_member(path, member, name, count, total)
                if name not in EXPECTED:
                    continue
                if name in found:
                    raise UserError(f"{path}: member {name!r} appears twice")
                found[name] = tar.extractfile(member).read()
            # tarfile stops at the end-of-archive block; read on to the gzip trailer so its CRC is checked
            # (bounded: the padding after the last member is at most a few blocks in a real archive).
            while tar.fileobj.read(CHUNK_BYTES):
                total += CHUNK_BYTES
                if total > MAX_ARCHIVE_BYTES:
                    raise UserError(f"{path}: over {MAX_ARCHIVE_BYTES} bytes of data; refusing to read on")
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"{path}: not a readable .tar.gz archive ({e or type(e).__name__})") from None
    missing = [name for name in EXPECTED if name not in found]
    if missing:
        raise UserError(f"{path}: missing member(s) {', '.join(missing)}")
    try:
        classes = found.pop(META_MEMBER).decode("utf-8").split()
    except UnicodeDecodeError:
        raise UserError(f"{path}: {META_MEMBER} is not UTF-8 text") from None
    if len(classes) != NUM_CLASSES:
        raise UserError(f"{path}: {META_MEMBER} names {len(classes)} classes, expected {NUM_CLASSES}")
    return found, classes


def _check_member(path: Path, member: tarfile.TarInfo, name: str, count: int, total: int) -> None:
    """Refuse what no CIFAR-10 archive holds: odd sizes, unsafe names or types, too many or too large members."""
    if member.size < 0:  # tarfile would step back to the same header, forever
        raise UserError(f"{path}: member {name!r} has a negative size")
    if count > MAX_MEMBERS:
        raise UserError(f"{path}: over {MAX_MEMBERS} members; refusing to read on")
    if total > MAX_ARCHIVE_BYTES:
        raise UserError(f"{path}: members add up to over {MAX_ARCHIVE_BYTES} bytes; refusing to read on")
    if name.startswith("/") or ".." in Path(name).parts:
        raise UserError(f"{path}: refusing member {name!r}: absolute or '..' path")
    if not (member.isfile() or member.isdir()):
        raise UserError(f"{path}: refusing member {name!r}: links and device files are not allowed")
    if name in EXPECTED and not member.isfile():
        raise UserError(f"{path}: member {name!r} is not a regular file")
    if name in EXPECTED and member.size > MAX_MEMBER_BYTES:
        raise UserError(f"{path}: member {name!r} is {member.size} bytes, over the {MAX_MEMBER_BYTES} cap")


def parse_records(name: str, payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse CIFAR-10 binary records → ((N, 3, 32, 32) uint8 images, (N,) int64 labels)."""
    if len(payload) % RECORD:
        raise UserError(f"{name}: {len(payload)} bytes is not a multiple of the {RECORD}-byte record size")
    records = np.frombuffer(payload, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if len(labels) and labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise UserError(f"{name}: record {bad} has label {labels[bad]}, labels must be 0-{NUM_CLASSES - 1}")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


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
    """Parse ``archive`` and split it → ({"train", "val", "test"} → Split, metadata for meta.json)."""
    members, classes = read_archive(archive)
    train_x, train_y = _concat([parse_records(name, members[name]) for name in TRAIN_MEMBERS])
    test_x, test_y = parse_records(TEST_MEMBER, members[TEST_MEMBER])
    if len(train_y) == 0 or len(test_y) == 0:
        raise UserError(f"{archive}: no {'training' if len(train_y) == 0 else 'test'} records")
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
        "test": Split(torch.from_numpy(np.array(test_x)), torch.from_numpy(test_y)),  # a copy: frombuffer is read-only
    }
    mean, std = channel_stats(splits["train"].images)
    meta = {
        "source": params.source,
        "classes": classes,
        "counts": {name: len(s.labels) for name, s in splits.items()},
        "class_counts": {
            name: np.bincount(s.labels.numpy(), minlength=NUM_CLASSES).tolist() for name, s in splits.items()
        },
        "mean": mean,
        "std": std,
    }
    return splits, meta


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


# --- the prepared splits -----------------------------------------------------------------------------------------


def save_splits(out_dir: Path, splits: dict[str, Split], meta: dict) -> None:
    """Write ``<split>.pt`` (uint8 images + int64 labels, plain tensors) and ``meta.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        torch.save({"images": split.images.contiguous(), "labels": split.labels}, out_dir / f"{name}.pt")
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_split(data_dir: Path, name: str) -> Split:
    """Load one prepared split (weights_only: plain tensors, nothing unpickled)."""
    blob = torch.load(Path(data_dir) / f"{name}.pt", weights_only=True)
    return Split(blob["images"], blob["labels"])


def load_meta(data_dir: Path) -> dict:
    return json.loads((Path(data_dir) / "meta.json").read_text())
