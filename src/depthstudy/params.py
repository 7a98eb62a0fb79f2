"""params.yaml, read once into frozen dataclasses and validated: bad input names the key and what is allowed."""

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from depthstudy.errors import UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
SOURCES = ("cifar10", "digits")
DEVICES = ("auto", "cpu", "cuda", "mps")
FC_INITS = ("default", "kaiming")
FC_NORMS = ("none", "batchnorm", "layernorm")
RESNET_STEMS = ("imagenet", "cifar")
OPTIMIZERS = ("adam", "sgd")


def _fail(key: str, allowed: str, value) -> typing.NoReturn:
    raise UserError(f"params.yaml: {key} must be {allowed} (got {value!r})")


@dataclass(frozen=True)
class DataParams:
    source: str = "cifar10"
    url: str = CIFAR10_URL
    md5: str = CIFAR10_MD5
    val_fraction: float = 0.1
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0

    def check(self, key: str) -> None:
        if self.source not in SOURCES:
            _fail(f"{key}.source", f"one of {', '.join(SOURCES)}", self.source)
        if not self.url:
            _fail(f"{key}.url", "an http(s):// or file:// URL or a local path", self.url)
        if len(self.md5) != 32 or any(c not in "0123456789abcdef" for c in self.md5.lower()):
            _fail(f"{key}.md5", "32 hexadecimal digits", self.md5)
        if not 0 < self.val_fraction < 1:
            _fail(f"{key}.val_fraction", "in (0, 1)", self.val_fraction)
        for name in ("train_limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and value < 20:
                _fail(f"{key}.{name}", "null (all images) or an integer >= 20 (2 per class)", value)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.001
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    amp: bool = False  # bf16 autocast: faster on recent GPUs, changes the numbers
    compile: bool = False  # torch.compile (CUDA graphs on CUDA): faster steps after a warm-up, changes the numbers
    nproc: int = 1  # processes per training (torchrun, DistributedDataParallel): each takes batch_size / nproc images
    sync_batchnorm: bool = False  # with nproc > 1 on CUDA: BatchNorm statistics over the global batch, not each shard
    # The recipe's other knobs; the defaults are the seed's (Adam, constant lr, no augmentation), paper/params.yaml
    # sets He et al. 2015's (SGD, momentum 0.9, weight decay 1e-4, lr ÷10 at 1/2 and 3/4 of the run, crop + flip).
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD's; Adam has none
    weight_decay: float = 0.0  # L2 penalty added to every parameter's gradient, by either optimizer
    lr_milestones: tuple[float, ...] = ()  # fractions of the run's updates at which the lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    augment: bool = False  # 4-px pad + random 32×32 crop + horizontal flip of every training batch

    def check(self, key: str) -> None:
        if self.epochs < 1:
            _fail(f"{key}.epochs", "an integer >= 1", self.epochs)
        if self.batch_size < 1:
            _fail(f"{key}.batch_size", "an integer >= 1", self.batch_size)
        if self.nproc < 1:
            _fail(f"{key}.nproc", "an integer >= 1", self.nproc)
        if self.batch_size % self.nproc:
            _fail(f"{key}.batch_size", f"a multiple of {key}.nproc = {self.nproc} (each process takes an equal share)",
                  self.batch_size)
        if not self.lr > 0:
            _fail(f"{key}.lr", "a number > 0", self.lr)
        if self.device not in DEVICES:
            _fail(f"{key}.device", f"one of {', '.join(DEVICES)}", self.device)
        if self.threads < 0:
            _fail(f"{key}.threads", "0 (auto) or a positive integer", self.threads)
        if self.optimizer not in OPTIMIZERS:
            _fail(f"{key}.optimizer", f"one of {', '.join(OPTIMIZERS)}", self.optimizer)
        if not 0 <= self.momentum < 1:
            _fail(f"{key}.momentum", "in [0, 1)", self.momentum)
        if not self.weight_decay >= 0:
            _fail(f"{key}.weight_decay", "a number >= 0", self.weight_decay)
        m = self.lr_milestones
        if not all(0 < x < 1 for x in m) or any(a >= b for a, b in zip(m, m[1:])):
            _fail(f"{key}.lr_milestones", "increasing fractions of the run in (0, 1), e.g. [0.5, 0.75], or []", list(m))
        if not 0 < self.lr_gamma <= 1:
            _fail(f"{key}.lr_gamma", "in (0, 1]", self.lr_gamma)


@dataclass(frozen=True)
class FCParams:
    """A fully connected net: ``depth`` Linear layers, ``depth - 1`` of them followed by [Norm] + ReLU + Dropout;
    ``residual`` adds identity skips around pairs of hidden layers. New keys need defaults: old checkpoints lack them.
    """

    arch: str = "fc"
    depth: int = 20
    width: int = 4096
    dropout: float = 0.5
    init: str = "default"
    norm: str = "none"
    residual: bool = False

    def check(self, key: str) -> None:
        if self.depth < 2:
            _fail(f"{key}.depth", "an integer >= 2", self.depth)
        if self.width < 1:
            _fail(f"{key}.width", "an integer >= 1", self.width)
        if not 0 <= self.dropout < 1:
            _fail(f"{key}.dropout", "in [0, 1)", self.dropout)
        if self.init not in FC_INITS:
            _fail(f"{key}.init", f"one of {', '.join(FC_INITS)}", self.init)
        if self.norm not in FC_NORMS:
            _fail(f"{key}.norm", f"one of {', '.join(FC_NORMS)}", self.norm)


@dataclass(frozen=True)
class ResNetParams:
    """torchvision's ResNet-18 with a 10-way head; ``stem`` picks the ImageNet or the CIFAR first layers."""

    arch: str = "resnet18"
    stem: str = "imagenet"

    def check(self, key: str) -> None:
        if self.stem not in RESNET_STEMS:
            _fail(f"{key}.stem", f"one of {', '.join(RESNET_STEMS)}", self.stem)


@dataclass(frozen=True)
class CifarResNetParams:
    """He et al. 2015's CIFAR-10 net (§4.2): ``depth`` = 6n+2 weight layers; ``residual: false`` is its plain twin."""

    arch: str = "cifar_resnet"
    depth: int = 20
    residual: bool = True

    def check(self, key: str) -> None:
        # the rule of cifar_resnet.blocks_per_stage, restated: importing that module would load torch into every stage
        if self.depth < 8 or (self.depth - 2) % 6:
            _fail(f"{key}.depth", "6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...)", self.depth)


ModelParams = FCParams | ResNetParams | CifarResNetParams
ARCHS: dict[str, type] = {"fc": FCParams, "resnet18": ResNetParams, "cifar_resnet": CifarResNetParams}


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    train: TrainParams = field(default_factory=TrainParams)
    models: dict[str, ModelParams] = field(default_factory=dict)

    def model(self, name: str) -> ModelParams:
        if name not in self.models:
            raise UserError(f"params.yaml: no model {name!r} under models (defined: {', '.join(self.models)})")
        return self.models[name]


def _check_type(key: str, value, hint):
    """Return ``value`` if it matches the annotation ``hint`` (ints are accepted where floats are; a YAML list where
    a tuple of floats is, returned as a tuple)."""
    if typing.get_origin(hint) is tuple:
        if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return tuple(float(v) for v in value)
        _fail(key, "a list of numbers", value)
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for t in allowed:
        if t is type(None) and value is None:
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t in (int, str) and isinstance(value, t) and not isinstance(value, bool):
            return value
        if t is bool and isinstance(value, bool):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    _fail(key, f"of type {names}", value)


def _build(cls, raw, key: str):
    """Build the frozen dataclass ``cls`` from the mapping ``raw`` found at ``key``, rejecting unknown keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(key, "a mapping of keys to values", raw)
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for name in raw:
        if name not in known:
            raise UserError(f"params.yaml: unknown key {key}.{name} (allowed: {', '.join(known)})")
    obj = cls(**{name: _check_type(f"{key}.{name}", value, hints[name]) for name, value in raw.items()})
    obj.check(key)
    return obj


def parse_params(raw) -> Params:
    """Validate the parsed contents of params.yaml."""
    if not isinstance(raw, dict):
        _fail("the top level", "a mapping with keys data, train, models", raw)
    for name in raw:
        if name not in ("data", "train", "models"):
            raise UserError(f"params.yaml: unknown key {name} (allowed: data, train, models)")
    models_raw = raw.get("models") or {}
    if not isinstance(models_raw, dict):
        _fail("models", "a mapping of model names to their settings", models_raw)
    models = {}
    for name, spec in models_raw.items():
        arch = spec.get("arch") if isinstance(spec, dict) else None
        if arch not in ARCHS:
            _fail(f"models.{name}.arch", f"one of {', '.join(ARCHS)}", arch)
        models[name] = _build(ARCHS[arch], spec, f"models.{name}")
    return Params(
        data=_build(DataParams, raw.get("data"), "data"),
        train=_build(TrainParams, raw.get("train"), "train"),
        models=models,
    )


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML (YAML 1.1) reads ``1e-05`` — as DVC's ``-S train.lr=1e-5`` writes it — as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; every problem is a one-line ``UserError`` naming the key."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run from the project root, where params.yaml lives)") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_params(raw)
