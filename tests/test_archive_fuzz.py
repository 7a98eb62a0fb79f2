"""Fuzzing the archive reader and the preprocess stage: random bytes and mutated archives end as a parsed dataset
or a one-line UserError, never another exception, never a hang, never a file outside the output directory.

Examples are derandomised (the same inputs every run, no example database written) so that the suite is
deterministic; the bugs they found have minimal examples of their own at the end of the file.
"""

import contextlib
import gzip
import io
import os
import signal
import tarfile
import tempfile
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from conftest import file_entry, load_stage, tiny, write_entries, write_params
from depthstudy import archive as cifar
from depthstudy import prepare
from depthstudy.errors import UserError
from depthstudy.params import DataParams

TIME_LIMIT_S = 10  # per example: far above the ~20 ms one takes, so only a real hang trips it


def fuzz(max_examples: int):
    return settings(
        max_examples=max_examples,
        deadline=timedelta(seconds=2),
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- the valid archive every mutation starts from ----------------------------------------------------------------

PARAMS = DataParams(val_fraction=0.2)
TRAIN_LABELS = [0, 1] * 5  # 2 records per train batch; two classes so that the stratified val split works
TEST_LABELS = [1, 0]


def base_members() -> dict[str, bytes]:
    """Every expected member, 2 records each; images with little entropy, so the .tar.gz is small (~1 KB)."""
    t = tiny(sizes=(2,) * 5, test_size=2, train_labels=TRAIN_LABELS, test_labels=TEST_LABELS)
    pattern = (np.arange(3 * 32 * 32).reshape(3, 32, 32) % 13).astype(np.uint8)
    t.train_images[:] = pattern + 10 * np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    t.test_images[:] = pattern
    return t.members()


MEMBERS = base_members()
NAMES = list(MEMBERS)


def tar_bytes(members: dict[str, bytes], fmt: int, extra: bool = False) -> bytes:
    """An uncompressed tar of ``members``; ``extra`` adds an unexpected member with a long name and pax headers,
    so that GNU long-name and pax extended headers are there to mutate too."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(payload), 0
            tar.addfile(info, io.BytesIO(payload))
        if extra:
            info = tarfile.TarInfo(f"{cifar.PREFIX}/{'x' * 120}.html")
            info.size, info.pax_headers = 5, {"comment": "extended header"}
            tar.addfile(info, io.BytesIO(b"hello"))
    return raw.getvalue()


TARS = {
    "ustar": tar_bytes(MEMBERS, tarfile.USTAR_FORMAT),
    "gnu": tar_bytes(MEMBERS, tarfile.GNU_FORMAT, extra=True),
    "pax": tar_bytes(MEMBERS, tarfile.PAX_FORMAT, extra=True),
}
VALID = gzip.compress(TARS["ustar"], mtime=0)
# Random images do not compress: ~37 KB of deflate data, most of it read after tarfile's first 8 KB buffer.
NOISY = gzip.compress(tar_bytes(tiny(sizes=(2,) * 5, test_size=2, train_labels=TRAIN_LABELS,
                                     test_labels=TEST_LABELS).members(), tarfile.USTAR_FORMAT), mtime=0)  # fmt: skip


def header_offsets(raw: bytes) -> list[int]:
    """Where each 512-byte header block starts: members' own headers and their extended (long-name, pax) ones."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return sorted({o for m in tar for o in (m.offset, m.offset_data - tarfile.BLOCKSIZE)})


HEADERS = {kind: header_offsets(raw) for kind, raw in TARS.items()}


# --- running one example -----------------------------------------------------------------------------------------


class Hang(Exception):
    """An example ran past TIME_LIMIT_S (deliberately not an OSError, which read_archive would swallow)."""


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT_S):
    """Raise Hang in the block after ``seconds``, and again every 0.25 s until it ends: a signal handler's exception
    can be swallowed (it may land in a gc callback, whose exceptions Python only reports as unraisable)."""
    active = True

    def fire(signum, frame):
        if active:
            raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)
    try:
        yield
    finally:
        try:
            active = False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def sandbox():
    """A fresh directory tree for one example: yields (root, work), with ``work`` the working directory.

    Archive names with ``..`` resolve from ``work`` into ``root``, and absolute names the tests make point into
    ``root`` too, so whatever an extraction could write lands where ``tree(root)`` sees it.
    """
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        previous = os.getcwd()
        os.chdir(work)
        try:
            yield root, work
        finally:
            os.chdir(previous)


def note(outcome: str) -> None:
    """Count outcomes in hypothesis's statistics (pytest --hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(outcome)


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def prepare_outcome(archive: Path, params: DataParams = PARAMS):
    """``prepare`` → (splits, meta), checked; or its UserError. Any other exception fails the example."""
    with time_limit():
        try:
            splits, meta = prepare.prepare(archive, params)
        except UserError as e:
            assert str(e) and "\n" not in str(e), repr(e)  # the stage prints it as one line
            note("UserError")
            return e
    note("parsed")
    assert len(meta["classes"]) == cifar.NUM_CLASSES
    for name, split in splits.items():
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (meta["counts"][name],)
        assert len(split.images) == len(split.labels)
        assert ((split.labels >= 0) & (split.labels < cifar.NUM_CLASSES)).all()
    assert meta["counts"]["train"] > 0 and meta["counts"]["val"] > 0
    return splits, meta


def check_archive(make) -> object:
    """Write ``make(root)`` (the archive's bytes) in a sandbox, run ``prepare`` on it, and check that nothing but
    the archive is left in the sandbox afterwards."""
    with sandbox() as (root, work):
        archive = work / "a.tar.gz"
        archive.write_bytes(make(root))
        result = prepare_outcome(archive)
        assert tree(root) == {"work", "work/a.tar.gz"}
    return result


def test_the_unmutated_archives_parse():
    for kind, raw in TARS.items():
        splits, meta = check_archive(lambda root: gzip.compress(raw, mtime=0))
        assert meta["counts"] == {"train": 8, "val": 2, "test": 2}, kind


# --- random bytes ------------------------------------------------------------------------------------------------

GZIP_HEADER = gzip.compress(b"", mtime=0)[:10]


@fuzz(max_examples=120)
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=2048).map(lambda b: GZIP_HEADER + b),  # a gzip header, then garbage deflate data
        st.binary(max_size=4096).map(lambda b: gzip.compress(b, mtime=0)),  # valid gzip of a garbage tar
        st.binary(max_size=2048).map(lambda b: gzip.compress(TARS["ustar"][:512] + b, mtime=0)),  # header, garbage
    )
)
def test_random_bytes(payload):
    result = check_archive(lambda root: payload)
    assert isinstance(result, UserError)


# --- byte-level mutations, of the compressed file and of the tar inside ------------------------------------------

POSITION = st.integers(min_value=0, max_value=1 << 20)
EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), POSITION, st.integers(0, 7)),
        st.tuples(st.just("set"), POSITION, st.integers(0, 255)),
        st.tuples(st.just("insert"), POSITION, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), POSITION, st.integers(1, 600)),
        st.tuples(st.just("truncate"), POSITION),
    ),
    min_size=1,
    max_size=3,
)


def apply_edits(blob: bytes, edits) -> bytes:
    b = bytearray(blob)
    for op, position, *arg in edits:
        at = position % (len(b) + 1)
        if op == "insert":
            b[at:at] = arg[0]
        elif op == "truncate":
            del b[at:]
        elif at < len(b):
            if op == "flip":
                b[at] ^= 1 << arg[0]
            elif op == "set":
                b[at] = arg[0]
            else:
                del b[at : at + arg[0]]
    return bytes(b)


@fuzz(max_examples=150)
@given(st.sampled_from([VALID, NOISY]), EDITS)
def test_mutated_compressed_file(archive, edits):
    check_archive(lambda root: apply_edits(archive, edits))


@fuzz(max_examples=120)
@given(st.sampled_from(sorted(TARS)), EDITS)
def test_mutated_tar_stream(kind, edits):
    # The gzip layer stays valid, so every edit reaches tarfile: header checksums, extended headers, data.
    check_archive(lambda root: gzip.compress(apply_edits(TARS[kind], edits), mtime=0))


# --- header fields, with a valid checksum so that tarfile believes them ------------------------------------------

FIELDS = {  # name → (offset, width) in a ustar header block
    "name": (0, 100), "mode": (100, 8), "uid": (108, 8), "size": (124, 12), "mtime": (136, 12),
    "typeflag": (156, 1), "linkname": (157, 100), "magic": (257, 8), "devmajor": (329, 8), "prefix": (345, 155),
}  # fmt: skip
SIZES = [0, 1, 511, 512, 513, cifar.RECORD, 2 * cifar.RECORD, cifar.MAX_MEMBER_BYTES + 1, cifar.MAX_ARCHIVE_BYTES + 1,
         8**11 - 1]  # fmt: skip


def octal(n: int, width: int) -> bytes:
    return f"{n:0{width - 1}o}".encode()[-(width - 1):] + b"\0"


def base256(n: int, width: int) -> bytes:
    return bytes([0o200]) + n.to_bytes(width - 1, "big")  # GNU's encoding of large (positive) numbers


def field_values(field: str):
    width = FIELDS[field][1]
    values = [st.binary(min_size=0, max_size=width)]
    if field == "size":
        values += [st.sampled_from(SIZES).map(lambda n: octal(n, width)),
                   st.integers(0, 1 << 40).map(lambda n: base256(n, width))]  # fmt: skip
    if field == "typeflag":
        values += [st.sampled_from([bytes([c]) for c in b"0123456\0KLxgSVMDZ"])]
    if field in ("name", "prefix", "linkname"):
        names = ["/" + NAMES[0], "../" + NAMES[0], "./" + NAMES[0], NAMES[1], "/tmp", "..", "../escaped", ""]
        values += [st.sampled_from(names).map(str.encode)]
    if field == "magic":
        values += [st.sampled_from([b"ustar\x0000", b"ustar  \0", b"\0" * 8])]
    return st.one_of(values)


@st.composite
def header_edits(draw):
    kind = draw(st.sampled_from(sorted(TARS)))
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(sorted(FIELDS)))
        value = draw(field_values(field))
        edits.append((draw(st.sampled_from(HEADERS[kind])), field, value, draw(st.booleans())))
    return kind, edits


def edit_headers(raw: bytes, edits) -> bytes:
    b = bytearray(raw)
    for header, field, value, fix_checksum in edits:
        start, width = FIELDS[field]
        b[header + start : header + start + width] = value[:width].ljust(width, b"\0")
        if fix_checksum:
            block = b[header : header + tarfile.BLOCKSIZE]
            block[148:156] = b" " * 8
            b[header + 148 : header + 156] = b"%06o\0 " % sum(block)
    return bytes(b)


@fuzz(max_examples=150)
@given(header_edits())
def test_mutated_header_fields(case):
    kind, edits = case
    check_archive(lambda root: gzip.compress(edit_headers(TARS[kind], edits), mtime=0))


# --- members: types, names, duplicates, missing ------------------------------------------------------------------

TYPES = {
    "regular": tarfile.REGTYPE, "old regular": tarfile.AREGTYPE, "contiguous": tarfile.CONTTYPE,
    "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE, "dir": tarfile.DIRTYPE, "unknown": b"Z",
}  # fmt: skip
# "{root}" is replaced by the sandbox's root: absolute names that would land there if anything extracted them.
RENAMES = ["/{name}", "{root}/escaped", "../{name}", "../escaped", "./{name}", "./../{name}", "a/../{name}",
           "{name}/", ".//{name}", "{prefix}//{base}", "{prefix}/./{base}", "{name}.bin", "{upper}", "",
           "{long}/{name}"]  # fmt: skip
LINK_TARGETS = ["{other}", "/etc/passwd", "{root}/escaped", "../escaped", ".", ""]


def fill(template: str, name: str, root: Path) -> str:
    prefix, _, base = name.rpartition("/")
    other = NAMES[(NAMES.index(name) + 1) % len(NAMES)] if name in NAMES else NAMES[0]
    return template.format(name=name, root=root, prefix=prefix, base=base, upper=name.upper(), other=other,
                           long="d" * 150)  # fmt: skip


MEMBER_EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("type"), st.integers(0, 6), st.sampled_from(sorted(TYPES)), st.sampled_from(LINK_TARGETS)),
        st.tuples(st.just("rename"), st.integers(0, 6), st.sampled_from(RENAMES)),
        st.tuples(st.just("duplicate"), st.integers(0, 6), st.integers(0, 6)),  # a second copy, another's payload
        st.tuples(st.just("drop"), st.integers(0, 6)),
        st.tuples(st.just("swap"), st.integers(0, 6), st.integers(0, 6)),
        st.tuples(st.just("add"), st.sampled_from(sorted(TYPES)), st.sampled_from([*RENAMES, cifar.PREFIX]),
                  st.sampled_from(LINK_TARGETS)),  # fmt: skip
    ),
    min_size=1,
    max_size=4,
)


def entry(name: str, kind: str, payload: bytes, link: str) -> tuple[tarfile.TarInfo, bytes | None]:
    if TYPES[kind] in tarfile.REGULAR_TYPES:
        info, payload = file_entry(name, payload)
        info.type = TYPES[kind]
        return info, payload
    info = tarfile.TarInfo(name)
    info.type, info.linkname = TYPES[kind], link
    return info, None


def member_entries(edits, root: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members = [(name, "regular", payload, "") for name, payload in MEMBERS.items()]  # name, type, payload, link
    for op, *args in edits:
        if op == "add":
            kind, template, link = args
            members.append((fill(template, NAMES[0], root), kind, b"", fill(link, NAMES[0], root)))
            continue
        if not members:
            break
        i = args[0] % len(members)
        name, kind, payload, link = members[i]
        if op == "type":
            members[i] = (name, args[1], payload, fill(args[2], name, root))
        elif op == "rename":
            members[i] = (fill(args[1], name, root), kind, payload, link)
        elif op == "duplicate":
            members.insert(i + 1, (name, kind, members[args[1] % len(members)][2], link))
        elif op == "drop":
            del members[i]
        else:
            j = args[1] % len(members)
            members[i], members[j] = members[j], members[i]
    return [entry(*m) for m in members]


@fuzz(max_examples=150)
@given(MEMBER_EDITS)
def test_mutated_members(edits):
    def make(root: Path) -> bytes:
        path = root / "build.tar.gz"
        write_entries(path, member_entries(edits, root))
        blob = path.read_bytes()
        path.unlink()
        return blob

    check_archive(make)


# --- contents: record payload lengths, labels, class names -------------------------------------------------------

CLASS_FILES = st.one_of(
    st.binary(max_size=300),  # including invalid UTF-8
    st.lists(st.text(max_size=12), max_size=14).map(lambda names: "\n".join(names).encode()),
    st.lists(st.sampled_from(["cat", "dog", " ", "\t", "\r\n", "\u2028", "\x0b", "é", "\0"]), max_size=40).map(
        lambda parts: "".join(parts).encode()
    ),
    st.just(MEMBERS[cifar.META_MEMBER]),
)


@st.composite
def content_edits(draw):
    record = cifar.RECORD
    lengths = draw(st.dictionaries(st.sampled_from(NAMES[:-1]), st.integers(-3 * record - 2, 2 * record + 2),
                                   max_size=3))  # fmt: skip
    labels = draw(st.lists(st.tuples(st.sampled_from(NAMES[:-1]), st.integers(0, 3), st.integers(0, 255)), max_size=3))
    classes = draw(CLASS_FILES)
    params = DataParams(val_fraction=draw(st.floats(0.05, 0.95)), seed=draw(st.integers(0, 3)))
    return lengths, labels, classes, params


def edit_contents(lengths, labels, classes) -> dict[str, bytes]:
    members = dict(MEMBERS)
    for name, delta in lengths.items():  # shorter, or longer by repeating the payload (records stay plausible)
        payload = members[name]
        members[name] = payload[: max(len(payload) + delta, 0)] if delta < 0 else (payload * 3)[: len(payload) + delta]
    for name, record, label in labels:
        payload = bytearray(members[name])
        if record * cifar.RECORD < len(payload):
            payload[record * cifar.RECORD] = label
        members[name] = bytes(payload)
    members[cifar.META_MEMBER] = classes
    return members


@fuzz(max_examples=150)
@given(content_edits())
def test_mutated_contents(case):
    lengths, labels, classes, params = case
    members = edit_contents(lengths, labels, classes)
    with sandbox() as (root, work):
        archive = work / "a.tar.gz"
        cifar.write_tar_gz(archive, members)
        result = prepare_outcome(archive, params)
        assert tree(root) == {"work", "work/a.tar.gz"}
    if isinstance(result, tuple):  # parsed: it must be exactly what the archive holds
        splits, meta = result
        records = {name: len(members[name]) // cifar.RECORD for name in NAMES[:-1]}
        assert meta["counts"]["train"] + meta["counts"]["val"] == sum(records[n] for n in cifar.TRAIN_MEMBERS)
        assert meta["counts"]["test"] == records[cifar.TEST_MEMBER]
        assert meta["classes"] == classes.decode().split()


# --- the preprocess stage: its output directory, and nothing else ------------------------------------------------


@pytest.fixture(scope="module")
def preprocess():
    return load_stage("preprocess")


STAGE_INPUTS = st.one_of(
    st.tuples(st.just("bytes"), EDITS),
    st.tuples(st.just("headers"), header_edits()),
    st.tuples(st.just("contents"), content_edits()),
    st.just(("valid", None)),
)


def stage_archive(kind: str, case) -> bytes:
    if kind == "bytes":
        return apply_edits(VALID, case)
    if kind == "headers":
        return gzip.compress(edit_headers(TARS[case[0]], case[1]), mtime=0)
    if kind == "contents":
        return gzip.compress(tar_bytes(edit_contents(*case[:3]), tarfile.USTAR_FORMAT), mtime=0)
    return VALID


OUTPUTS = {f"prepared/trainval/{split}_{part}.npy" for split in ("train", "val") for part in ("images", "labels")}
OUTPUTS |= {"prepared/trainval/meta.json", "prepared/test/test_images.npy", "prepared/test/test_labels.npy",
            "prepared/test/meta.json", "prepared/trainval", "prepared/test"}


@fuzz(max_examples=60)
@given(STAGE_INPUTS)
def test_preprocess_stage_writes_its_output_directory_or_nothing(preprocess, case):
    with sandbox() as (root, work):
        write_params(work, {"data.val_fraction": 0.2})
        (work / "a.tar.gz").write_bytes(stage_archive(*case))
        (work / "prepared" / "trainval").mkdir(parents=True)
        (work / "prepared" / "trainval" / "old.txt").write_text("an earlier run's output")
        before = tree(root)
        with time_limit():
            try:
                preprocess.main(["a.tar.gz", "prepared/trainval", "prepared/test"])
                ok = True
            except UserError:
                ok = False
        note("parsed" if ok else "refused")
        if ok:  # the old output replaced as a whole, nothing left beside it
            assert tree(root) == before - {"work/prepared/trainval/old.txt"} | {f"work/{p}" for p in OUTPUTS}
        else:  # the old output untouched, no temporary directory left behind
            assert tree(root) == before
            assert (work / "prepared" / "trainval" / "old.txt").read_text() == "an earlier run's output"


# --- bugs found by the properties above: minimal examples --------------------------------------------------------


def test_negative_member_size_is_a_user_error_not_a_hang(tmp_path):
    info = tarfile.TarInfo("readme.html")  # an unexpected name: read_archive skips it and asks tarfile for the next
    info.size = -512  # GNU base-256; the next header is then this one again
    archive = write_entries(tmp_path / "a.tar.gz", [file_entry("a", b""), (info, None)])
    with time_limit(1), pytest.raises(UserError):
        cifar.read_archive(archive)


def corrupt_deflate(raw: bytes) -> bytes:
    """``raw`` gzip-compressed, then a deflate block of the reserved type 3: "invalid block type" on reading."""
    compressor = zlib.compressobj(wbits=31)  # 31: the gzip wrapper
    return compressor.compress(raw) + compressor.flush(zlib.Z_FULL_FLUSH) + b"\x07"


@pytest.mark.parametrize("where", ["inside a member", "after the last member"])
def test_corrupt_deflate_data_is_a_user_error(tmp_path, where):
    members = dict(MEMBERS, **{cifar.TRAIN_MEMBERS[0]: MEMBERS[cifar.TRAIN_MEMBERS[0]] * 4})  # 8 records, 24 KB
    raw = tar_bytes(members, tarfile.USTAR_FORMAT)
    # Past the 8 KB that tarfile's header reads buffer, so the error comes out of a member's or the trailer's read.
    raw = raw[: 512 + 20_000] if where == "inside a member" else raw + bytes(64 * 1024)
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(corrupt_deflate(raw))
    with pytest.raises(UserError):
        cifar.read_archive(archive)


def test_empty_test_batch_is_a_user_error(tmp_path):
    archive = tmp_path / "a.tar.gz"
    cifar.write_tar_gz(archive, dict(MEMBERS, **{cifar.TEST_MEMBER: b""}))
    with pytest.raises(UserError):
        prepare.prepare(archive, PARAMS)
