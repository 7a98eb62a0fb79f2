"""Shared helpers: tiny CIFAR-format archives, params.yaml files, and running the stage scripts."""

import gzip
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from depthstudy import archive as cifar
from depthstudy import data

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def params_dict(overrides: dict | None = None, base: Path = REPO / "params.yaml") -> dict:
    """``base`` (the repo's params.yaml) as a dict, with ``{"train.lr": 0.1, ...}`` (dotted keys) set on top."""
    raw = yaml.safe_load(base.read_text())
    for dotted, value in (overrides or {}).items():
        *parents, last = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return raw


def write_params(directory: Path, overrides: dict | None = None) -> Path:
    """Write ``directory``/params.yaml: the repo's params with ``overrides``."""
    path = Path(directory) / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict(overrides), sort_keys=False))
    return path


def update_params(directory: Path, overrides: dict) -> None:
    """Change some keys of ``directory``/params.yaml in place, as a user editing it would."""
    path = Path(directory) / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict(overrides, base=path), sort_keys=False))


@dataclass
class Tiny:
    """A tiny CIFAR-10 binary dataset: train batches of ``sizes`` records and one test batch."""

    train_images: np.ndarray  # (N, 3, 32, 32) uint8, the five train batches concatenated in order
    train_labels: np.ndarray  # (N,) uint8
    test_images: np.ndarray
    test_labels: np.ndarray
    sizes: tuple[int, ...]

    def members(self, classes: list[str] = CLASSES) -> dict[str, bytes]:
        bounds = np.cumsum(self.sizes)[:-1]
        parts = zip(np.split(self.train_images, bounds), np.split(self.train_labels, bounds))
        members = {name: cifar.encode_records(x, y) for name, (x, y) in zip(cifar.TRAIN_MEMBERS, parts)}
        members[cifar.TEST_MEMBER] = cifar.encode_records(self.test_images, self.test_labels)
        members[cifar.META_MEMBER] = "".join(f"{c}\n" for c in classes).encode()
        return members

    def write(self, path: Path) -> Path:
        cifar.write_tar_gz(path, self.members())
        return path


def tiny(sizes=(7, 7, 7, 7, 7), test_size=7, seed=0, train_labels=None, test_labels=None) -> Tiny:
    """Random images whose R, G and B planes lie in 0-84, 85-169 and 170-254; labels cycle through 0-9."""
    rng = np.random.default_rng(seed)

    def images(n):
        planes = [rng.integers(low, low + 85, (n, 1, 32, 32)) for low in (0, 85, 170)]
        return np.concatenate(planes, axis=1).astype(np.uint8)

    def labels(n, given):
        return np.asarray(given if given is not None else rng.permutation(np.arange(n) % 10), dtype=np.uint8)

    n = sum(sizes)
    return Tiny(images(n), labels(n, train_labels), images(test_size), labels(test_size, test_labels), tuple(sizes))


def write_entries(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """Write raw tar entries (links, duplicates, odd names: what write_tar_gz cannot express) as a .tar.gz."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, payload in entries:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


def file_entry(name: str, payload: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def load_stage(name: str):
    """Import ``stages/<name>.py`` as a module (its ``main(argv)`` runs in-process)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``stages/<name>.py`` as dvc would, in ``cwd`` (which holds params.yaml)."""
    cmd = [sys.executable, str(REPO / "stages" / f"{name}.py"), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    """stderr is exactly one line, ``error: ...`` naming every fragment, and no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def prepare_digits(directory: Path, overrides: dict) -> Path:
    """``directory``/params.yaml with ``overrides``, and the digits sample prepared under ``directory``/prepared as
    preprocess writes it → the train/val directory the train stage reads."""
    from depthstudy.params import parse_params
    from depthstudy.prepare import OUTPUTS, output_meta, prepare

    write_params(directory, overrides)
    cifar.build_digits_archive(directory / "archive.tar.gz")
    splits, meta = prepare(directory / "archive.tar.gz", parse_params(params_dict(overrides)).data)
    for output, names in OUTPUTS.items():
        data.save_splits(directory / "prepared" / output, {n: splits[n] for n in names}, output_meta(meta, names))
    return directory / "prepared" / "trainval"


# --- end to end: the real dvc in a temporary git repo -----------------------------------------------------------

E2E_EPOCHS = 3
E2E_PARAMS = {  # the digits sample at settings that train in seconds
    "data.source": "digits",
    "data.train_limit": 400,
    "data.test_limit": 100,
    "train.epochs": E2E_EPOCHS,
    "models.fc20.width": 64,
    "models.fc56.width": 64,
}


# `dvc plots show` targets (`dvc plots diff --targets`) that keep one pipeline's plots: without them DVC draws every
# dvc.yaml's and reports each missing file of a pipeline not run. A target is a regex matched at the start of
# "<dvc.yaml>::<plot title>".
ROOT_PLOTS, PAPER_PLOTS = "dvc.yaml::", "paper/dvc.yaml::"

# The environment for dvc and the stages it runs: this venv's tools (dvc, python) first on PATH.
VENV_ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def dvc(repo: Path, *args: str) -> str:
    """Run the real dvc CLI in ``repo``; fail the test with its output if it exits non-zero."""
    done = subprocess.run(["dvc", *args], cwd=repo, env=VENV_ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def copy_project(dest: Path) -> Path:
    """Copy the project's git-tracked and unignored files (no .venv, data/, .git) into a new git repo."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git(dest, "init", "-q")
    git(dest, "config", "user.name", "depthstudy tests")
    git(dest, "config", "user.email", "tests@localhost")
    return dest


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """A repo copy after one full `dvc repro` on reduced settings, results committed as the baseline.

    Shared by the end-to-end tests, which run in file order; later ones see the experiments earlier ones ran.
    """
    repo = copy_project(tmp_path_factory.mktemp("repo"))
    write_params(repo, E2E_PARAMS)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "reduced settings")
    output = dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline run")
    return repo, output
