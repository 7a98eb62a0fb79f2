"""The CIFAR-10 binary archive: read and parse its records safely, and build the offline digits sample in its layout.

A record is 3,073 bytes: one label byte (0-9), then 1,024 R, 1,024 G and 1,024 B bytes, each plane row-major
32×32. Nothing here unpickles downloaded bytes: records are parsed with numpy.
"""

import gzip
import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depthstudy.errors import UserError

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


@dataclass
class Records:
    """An archive's parsed contents: images (N, 3, 32, 32) uint8 and labels (N,) int64 per part, class names."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


# --- the offline sample ------------------------------------------------------------------------------------------

DIGITS_TEST_SIZE = 297  # fixed: 1,797 digits → 1,500 train + 297 test


def build_digits_archive(dest: Path) -> None:
    """Write scikit-learn's 1,797 handwritten digits as a CIFAR-10 binary archive (deterministic bytes).

    Each 8×8 image (values 0-16) is scaled to 0-255, upscaled 4× by pixel repetition to 32×32 and copied to
    the three colour planes. The train/test split is stratified with a fixed seed, so it never changes.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

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


def read_cifar10(path: Path) -> Records:
    """Read and parse every record of the archive at ``path``: the five training batches in order, the test batch."""
    members, classes = read_archive(path)
    train = [parse_records(name, members[name]) for name in TRAIN_MEMBERS]
    test_images, test_labels = parse_records(TEST_MEMBER, members[TEST_MEMBER])
    records = Records(
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=np.array(test_images),  # a copy: frombuffer's arrays are read-only
        test_labels=test_labels,
        classes=classes,
    )
    if len(records.train_labels) == 0 or len(records.test_labels) == 0:
        raise UserError(f"{path}: no {'training' if len(records.train_labels) == 0 else 'test'} records")
    return records
