"""The data half: parse CIFAR-10 binary archives the tests generate, split, stats, refusals, the digits sample."""

import json
import tarfile

import numpy as np
import pytest
import torch

from conftest import (
    CLASSES,
    assert_one_line_error,
    file_entry,
    load_stage,
    run_script,
    tiny,
    write_entries,
    write_params,
)
from depthstudy import archive as cifar
from depthstudy import data, prepare
from depthstudy.errors import UserError, run_stage
from depthstudy.params import DataParams

# 200 train images with unequal classes, so a split that ignores the labels would show
COUNTS = np.array([40, 30, 30, 20, 20, 20, 10, 10, 10, 10])


def unbalanced(seed=0, **kwargs):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(10), COUNTS))
    return tiny(sizes=(40,) * 5, test_size=100, train_labels=labels, test_labels=np.arange(100) % 10, **kwargs)


def source_rows(split_images: torch.Tensor, source_images: np.ndarray) -> np.ndarray:
    """For each image of a split, its row in the source array (random 32×32×3 images are unique)."""
    index = {img.tobytes(): i for i, img in enumerate(source_images)}
    return np.array([index[img.tobytes()] for img in split_images.numpy()])


# --- parsing -----------------------------------------------------------------------------------------------------


def test_record_layout_label_then_rgb_planes_row_major():
    y, x = np.mgrid[0:32, 0:32]
    planes = np.stack([y * 8 + x % 8, 100 + x, 200 + (y % 7) * 7]).astype(np.uint8)  # R, G, B all different
    payload = bytes([3]) + planes.tobytes() + bytes([9]) + planes[::-1].tobytes()  # second record: B, G, R
    images, labels = cifar.parse_records("x.bin", payload)
    assert images.dtype == np.uint8 and images.shape == (2, 3, 32, 32)
    assert labels.dtype == np.int64 and labels.tolist() == [3, 9]
    for c in range(3):
        np.testing.assert_array_equal(images[0, c], planes[c])
        np.testing.assert_array_equal(images[1, c], planes[2 - c])
    assert images[0, 0, 1, 0] == 8 and images[0, 0, 0, 1] == 1  # row-major: [y, x]
    assert cifar.encode_records(planes[None], np.array([3])) == payload[: cifar.RECORD]


def test_record_count_comes_from_the_file_size(tmp_path):
    t = tiny(sizes=(7, 9, 11, 13, 15), test_size=17)
    members = t.members()
    for name, n in zip(cifar.TRAIN_MEMBERS, t.sizes):
        images, labels = cifar.parse_records(name, members[name])
        assert images.shape == (n, 3, 32, 32) and labels.shape == (n,)
    assert cifar.parse_records("empty.bin", b"")[0].shape == (0, 3, 32, 32)
    splits, meta = prepare.prepare(t.write(tmp_path / "a.tar.gz"), DataParams(val_fraction=0.2))
    assert meta["counts"] == {"train": 44, "val": 11, "test": 17}
    assert {k: len(s.labels) for k, s in splits.items()} == meta["counts"]


def test_prepare_round_trips_images_and_labels(tmp_path):
    t = tiny(sizes=(8, 8, 8, 8, 8), test_size=10)
    splits, meta = prepare.prepare(t.write(tmp_path / "a.tar.gz"), DataParams(val_fraction=0.25))
    assert meta["classes"] == CLASSES
    rows = {}
    for name in ("train", "val"):
        s = splits[name]
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (3, 32, 32) and s.labels.dtype == torch.int64
        rows[name] = source_rows(s.images, t.train_images)
        np.testing.assert_array_equal(s.labels.numpy(), t.train_labels[rows[name]])
    assert sorted([*rows["train"], *rows["val"]]) == list(range(40))  # disjoint, and together all of them
    np.testing.assert_array_equal(splits["test"].images.numpy(), t.test_images)  # the test batch, in order
    np.testing.assert_array_equal(splits["test"].labels.numpy(), t.test_labels)
    for name, s in splits.items():
        assert meta["class_counts"][name] == np.bincount(s.labels.numpy(), minlength=10).tolist()


def test_val_split_is_stratified_and_seeded(tmp_path):
    t = unbalanced()
    archive = t.write(tmp_path / "a.tar.gz")

    def val_rows(seed):
        splits, meta = prepare.prepare(archive, DataParams(val_fraction=0.2, seed=seed))
        assert np.abs(np.array(meta["class_counts"]["val"]) - 0.2 * COUNTS).max() <= 1
        assert meta["counts"]["val"] == 40 and meta["counts"]["train"] == 160
        return sorted(source_rows(splits["val"].images, t.train_images))

    assert val_rows(0) == val_rows(0)
    assert val_rows(0) != val_rows(1)


def test_limits_take_stratified_subsets(tmp_path):
    t = unbalanced()
    archive = t.write(tmp_path / "a.tar.gz")
    params = DataParams(val_fraction=0.2, train_limit=100, test_limit=20)
    splits, meta = prepare.prepare(archive, params)
    assert meta["counts"] == {"train": 80, "val": 20, "test": 20}
    kept = np.array(meta["class_counts"]["train"]) + meta["class_counts"]["val"]
    assert np.abs(kept - COUNTS / 2).max() <= 1
    assert meta["class_counts"]["test"] == [2] * 10
    test_rows = source_rows(splits["test"].images, t.test_images)  # a subset of the real test images
    np.testing.assert_array_equal(splits["test"].labels.numpy(), t.test_labels[test_rows])
    other, _ = prepare.prepare(archive, DataParams(val_fraction=0.2, train_limit=100, test_limit=20, seed=1))
    assert set(test_rows) != set(source_rows(other["test"].images, t.test_images))


@pytest.mark.parametrize("key, limit, have", [("train_limit", 201, 200), ("test_limit", 101, 100)])
def test_limit_larger_than_the_data_is_a_user_error(tmp_path, key, limit, have):
    archive = unbalanced().write(tmp_path / "a.tar.gz")
    with pytest.raises(UserError, match=rf"data\.{key} is {limit}, but the archive has only {have}"):
        prepare.prepare(archive, DataParams(**{key: limit}))


# --- statistics and saved splits ---------------------------------------------------------------------------------


def numpy_stats(images: torch.Tensor):
    x = images.numpy().astype(np.float64) / 255
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def test_channel_stats_come_from_the_train_split_only(tmp_path):
    params = DataParams(val_fraction=0.2)
    t = unbalanced()
    splits, _ = prepare.prepare(t.write(tmp_path / "a.tar.gz"), params)
    # The split depends on labels and seed only: make exactly those val images, and every test image, extreme.
    val = source_rows(splits["val"].images, t.train_images)
    t.train_images[val] = 255
    t.test_images[:] = 0
    splits, meta = prepare.prepare(t.write(tmp_path / "b.tar.gz"), params)
    assert (splits["val"].images == 255).all() and (splits["train"].images < 255).all()
    mean, std = numpy_stats(splits["train"].images)
    assert meta["mean"] == pytest.approx(mean.tolist(), abs=1e-9)
    assert meta["std"] == pytest.approx(std.tolist(), abs=1e-9)
    assert meta["mean"][0] < 85 / 255 < meta["mean"][1] < 170 / 255 < meta["mean"][2]  # R, G, B in order


def test_channel_stats_in_chunks_match_numpy():
    images = torch.from_numpy(tiny(sizes=(3, 3, 3, 3, 4)).train_images)
    mean, std = numpy_stats(images)
    got_mean, got_std = prepare.channel_stats(images, chunk=3)  # 16 images: five full chunks and a partial one
    assert got_mean == pytest.approx(mean.tolist(), abs=1e-12)
    assert got_std == pytest.approx(std.tolist(), abs=1e-12)


def test_saved_splits_load_back_equal(tmp_path):
    splits, meta = prepare.prepare(tiny().write(tmp_path / "a.tar.gz"), DataParams(val_fraction=0.3))
    data.save_splits(tmp_path / "out", splits, meta)
    names = [f"{split}_{part}.npy" for split in ("test", "train", "val") for part in ("images", "labels")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["meta.json", *names]
    for name, s in splits.items():
        loaded = data.load_split(tmp_path / "out", name)
        assert loaded.images.dtype == torch.uint8 and loaded.labels.dtype == torch.int64
        assert torch.equal(loaded.images, s.images) and torch.equal(loaded.labels, s.labels)
    assert data.load_meta(tmp_path / "out") == json.loads(json.dumps(meta))


# --- archives that must be refused -------------------------------------------------------------------------------


def _entries(members, replace=None, drop=(), extra=()):
    entries = [
        (replace or {}).get(name) or file_entry(name, payload) for name, payload in members.items() if name not in drop
    ]
    return [*entries, *extra]


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


B1, B2, B3 = cifar.TRAIN_MEMBERS[:3]
TEST = cifar.TEST_MEMBER


def _truncated(path):
    tiny().write(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _raw(**kwargs):
    return lambda path: write_entries(path, _entries(tiny().members(), **kwargs))


BAD_ARCHIVES = {
    "truncated gzip": (_truncated, ["a.tar.gz", "not a readable .tar.gz archive"]),
    "not gzip": (lambda p: p.write_bytes(b"<html>404 not found</html>"), ["a.tar.gz", "not a readable"]),
    "size not a multiple of 3073": (
        lambda p: cifar.write_tar_gz(p, {**tiny().members(), B3: tiny().members()[B3] + bytes(100)}),
        ["data_batch_3.bin", "21611 bytes is not a multiple of the 3073-byte record size"],
    ),
    "label 10": (
        lambda p: tiny(test_labels=[0, 1, 2, 3, 10, 5, 6]).write(p),
        ["test_batch.bin", "record 4 has label 10"],
    ),
    "../x member": (_raw(extra=[file_entry("../x", b"x")]), ["'../x'", "absolute or '..' path"]),
    "nested .. member": (
        _raw(extra=[file_entry("cifar-10-batches-bin/../../x", b"x")]),
        ["'cifar-10-batches-bin/../../x'"],
    ),
    "absolute member": (_raw(extra=[file_entry("/tmp/evil", b"x")]), ["'/tmp/evil'", "absolute"]),
    "symlink member": (
        _raw(replace={B1: _link(B1, "/etc/passwd", tarfile.SYMTYPE)}),
        [f"'{B1}'", "links and device files are not allowed"],
    ),
    "hardlink member": (
        _raw(replace={TEST: _link(TEST, B1, tarfile.LNKTYPE)}),
        [f"'{TEST}'", "links and device files are not allowed"],
    ),
    "missing member": (_raw(drop=[TEST]), [f"missing member(s) {TEST}"]),
    "duplicated member": (_raw(extra=[file_entry(B2, tiny().members()[B2])]), [f"'{B2}' appears twice"]),
    "9 class names": (
        lambda p: cifar.write_tar_gz(p, tiny().members(CLASSES[:9])),
        ["batches.meta.txt names 9 classes, expected 10"],
    ),
    "class names not UTF-8": (
        lambda p: cifar.write_tar_gz(p, {**tiny().members(), cifar.META_MEMBER: b"\xff\xfe" * 10}),
        ["batches.meta.txt is not UTF-8"],
    ),
}


@pytest.fixture(scope="module")
def preprocess():
    return load_stage("preprocess")


@pytest.mark.parametrize("case", BAD_ARCHIVES)
def test_bad_archive_is_one_line_error_and_writes_nothing(case, tmp_path, monkeypatch, capsys, preprocess):
    build, fragments = BAD_ARCHIVES[case]
    build(tmp_path / "a.tar.gz")
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "prepared"
    rc = run_stage(lambda: preprocess.main([str(tmp_path / "a.tar.gz"), str(out / "trainval"), str(out / "test")]))
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["truncated gzip", "symlink member"])
def test_preprocess_script_refuses_bad_archive(case, tmp_path):
    build, fragments = BAD_ARCHIVES[case]
    build(tmp_path / "a.tar.gz")
    write_params(tmp_path)
    out = tmp_path / "out"
    result = run_script("preprocess", tmp_path / "a.tar.gz", out / "trainval", out / "test", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, *fragments)
    assert not (tmp_path / "out").exists()


def test_preprocess_script_writes_train_val_and_test_apart(tmp_path):
    write_params(tmp_path, {"data.val_fraction": 0.2})
    tiny(sizes=(7, 9, 11, 13, 15), test_size=17).write(tmp_path / "a.tar.gz")
    trainval, test = tmp_path / "out" / "trainval", tmp_path / "out" / "test"
    trainval.mkdir(parents=True)
    (trainval / "stale.npy").write_bytes(b"old")  # a previous run's output is replaced, not merged
    result = run_script("preprocess", tmp_path / "a.tar.gz", trainval, test, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in trainval.iterdir()) == [
        "meta.json", "train_images.npy", "train_labels.npy", "val_images.npy", "val_labels.npy"]
    assert sorted(p.name for p in test.iterdir()) == ["meta.json", "test_images.npy", "test_labels.npy"]
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []  # no temporary directory
    trainval_meta, test_meta = data.load_meta(trainval), data.load_meta(test)
    assert trainval_meta["counts"] == {"train": 44, "val": 11} and test_meta["counts"] == {"test": 17}
    assert "mean" in trainval_meta and "mean" not in test_meta  # the test split's meta is about the test split only
    assert data.load_split(test, "test").images.shape == (17, 3, 32, 32)


def test_a_changed_test_split_leaves_the_train_split_byte_identical(tmp_path):
    """What keeps `dvc repro` from retraining when only data.test_limit changes."""
    tiny(sizes=(20,) * 5, test_size=60).write(tmp_path / "a.tar.gz")
    digests = []
    for test_limit in (None, 30):
        write_params(tmp_path, {"data.val_fraction": 0.2, "data.test_limit": test_limit})
        out = tmp_path / f"out-{test_limit}"
        result = run_script("preprocess", tmp_path / "a.tar.gz", out / "trainval", out / "test", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        digests.append({p.name: p.read_bytes() for p in (out / "trainval").iterdir()})
        assert data.load_meta(out / "test")["counts"]["test"] == (test_limit or 60)
    assert digests[0] == digests[1]


@pytest.mark.parametrize(
    "cap, limit, message",
    [
        ("MAX_MEMBER_BYTES", 3 * cifar.RECORD, f"'{B1}' is 21511 bytes, over the"),
        ("MAX_ARCHIVE_BYTES", 30 * cifar.RECORD, "members add up to over"),
    ],
)
def test_size_caps_refuse_before_reading(tmp_path, monkeypatch, cap, limit, message):
    archive = tiny().write(tmp_path / "a.tar.gz")  # members of 7 records = 21,511 bytes each
    monkeypatch.setattr(cifar, cap, limit)
    with pytest.raises(UserError, match=message):
        cifar.read_archive(archive)


def test_directory_with_an_expected_name_is_a_user_error(tmp_path):
    info = tarfile.TarInfo(B1)
    info.type = tarfile.DIRTYPE
    archive = write_entries(tmp_path / "a.tar.gz", _entries(tiny().members(), replace={B1: (info, None)}))
    with pytest.raises(UserError, match="data_batch_1.bin"):
        cifar.read_archive(archive)


def test_corrupt_gzip_data_is_a_user_error(tmp_path):
    archive = tiny().write(tmp_path / "a.tar.gz")
    corrupt = bytearray(archive.read_bytes())
    corrupt[len(corrupt) // 2] ^= 1  # one flipped bit inside the compressed image data
    archive.write_bytes(corrupt)
    with pytest.raises(UserError, match="not a readable .tar.gz archive"):
        cifar.read_archive(archive)


# --- the offline digits sample -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    cifar.build_digits_archive(root / "one.tar.gz")
    cifar.build_digits_archive(root / "two.tar.gz")
    return root


def test_digits_archive_is_byte_identical_when_rebuilt(digits):
    assert (digits / "one.tar.gz").read_bytes() == (digits / "two.tar.gz").read_bytes()


def test_digits_archive_parses_to_the_fixed_split(digits):
    splits, meta = prepare.prepare(digits / "one.tar.gz", DataParams(source="digits"))
    assert meta["counts"]["train"] + meta["counts"]["val"] == 1500 and meta["counts"]["test"] == 297
    assert meta["classes"] == [str(d) for d in range(10)]
    for name, s in splits.items():
        assert min(meta["class_counts"][name]) > 0, name
        assert torch.equal(s.images[:, 0], s.images[:, 1]) and torch.equal(s.images[:, 1], s.images[:, 2])
    assert splits["train"].images.max() == 255 and splits["train"].images.min() == 0
