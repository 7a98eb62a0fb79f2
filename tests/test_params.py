"""params.yaml → frozen dataclasses: the defaults parse; unknown keys, wrong types and bad values name the key."""

import dataclasses
import re

import pytest

from conftest import REPO, params_dict, write_params
from depthstudy.errors import UserError
from depthstudy.params import (
    CIFAR10_MD5,
    CIFAR10_URL,
    DataParams,
    FCParams,
    ResNetParams,
    TrainParams,
    load_params,
    parse_params,
)


def test_repo_params_yaml_parses_to_the_seed_settings():
    p = load_params(REPO / "params.yaml")
    assert p.data == DataParams(source="cifar10", url=CIFAR10_URL, md5=CIFAR10_MD5, val_fraction=0.1, seed=0)
    assert (p.data.train_limit, p.data.test_limit) == (None, None)
    assert p.train == TrainParams(epochs=30, batch_size=32, lr=0.001, seed=0, device="auto", threads=0)
    assert p.models == {
        "fc20": FCParams(arch="fc", depth=20, width=4096, dropout=0.5, init="default"),
        "fc56": FCParams(arch="fc", depth=56, width=4096, dropout=0.5, init="default"),
        "resnet18": ResNetParams(arch="resnet18", stem="imagenet"),
    }
    assert p.model("fc56").depth == 56
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.train.lr = 1.0


def test_missing_groups_take_the_dataclass_defaults():
    p = parse_params({})
    assert (p.data, p.train, p.models) == (DataParams(), TrainParams(), {})


def test_unknown_model_name_lists_the_defined_ones():
    with pytest.raises(UserError, match=r"no model 'fc99'.*fc20, fc56, resnet18"):
        parse_params(params_dict()).model("fc99")


@pytest.mark.parametrize(
    "key, allowed",
    [
        ("train.lrr", TrainParams),
        ("data.urll", DataParams),
        ("models.fc20.dept", FCParams),
        ("models.resnet18.depth", ResNetParams),  # a valid FC key is still unknown for a ResNet
    ],
)
def test_unknown_key_is_named_with_the_allowed_keys(key, allowed):
    with pytest.raises(UserError) as e:
        parse_params(params_dict({key: 1}))
    message = str(e.value)
    assert f"unknown key {key} " in message
    for field in dataclasses.fields(allowed):
        assert field.name in message.split("allowed:")[1]


def test_unknown_top_level_key():
    with pytest.raises(UserError, match=r"unknown key trian \(allowed: data, train, models\)"):
        parse_params(params_dict({"trian": {"lr": 0.1}}))


@pytest.mark.parametrize(
    "key, value",
    [
        ("train.lr", "fast"),
        ("train.lr", True),
        ("train.epochs", 1.5),
        ("train.epochs", True),  # YAML `true` is a bool, not the integer 1
        ("train.batch_size", "32"),
        ("train.device", 0),
        ("data.val_fraction", False),
        ("data.train_limit", 100.0),
        ("data.seed", None),
        ("data.url", 123),
        ("models.fc20.depth", 20.0),
        ("models.fc20.dropout", "0.5"),
        ("models.fc20.residual", 1),
        ("models.fc20.residual", "true"),
        ("models.fc20.norm", False),
    ],
)
def test_wrong_type_names_the_key(key, value):
    with pytest.raises(UserError, match=rf"params\.yaml: {key} must be of type .*\(got {re.escape(repr(value))}\)"):
        parse_params(params_dict({key: value}))


@pytest.mark.parametrize(
    "key, value",
    [
        ("train.lr", 0.0),
        ("train.lr", -0.001),
        ("train.lr", float("nan")),
        ("train.epochs", 0),
        ("train.batch_size", 0),
        ("train.threads", -1),
        ("train.device", "tpu"),
        ("models.fc20.depth", 1),
        ("models.fc20.width", 0),
        ("models.fc20.dropout", 1.0),
        ("models.fc20.dropout", -0.1),
        ("models.fc20.init", "xavier"),
        ("models.fc20.norm", "group"),
        ("models.fc20.norm", "BatchNorm"),
        ("models.fc20.arch", "vgg"),
        ("models.resnet18.stem", "cifar100"),
        ("data.val_fraction", 0.0),
        ("data.val_fraction", 1.0),
        ("data.source", "mnist"),
        ("data.md5", "c32a1d4ab5d03f1284b67883e8d8753"),  # 31 digits
        ("data.md5", "z" * 32),
        ("data.url", ""),
        ("data.train_limit", 19),
        ("data.test_limit", 0),
    ],
)
def test_out_of_range_value_names_the_key(key, value):
    with pytest.raises(UserError, match=rf"params\.yaml: {key} must be .*\(got {re.escape(repr(value))}\)"):
        parse_params(params_dict({key: value}))


@pytest.mark.parametrize(
    "key, value, parsed",
    [
        ("train.lr", 1, 1.0),  # an int is accepted where a float is expected, and becomes a float
        ("train.epochs", 1, 1),
        ("train.batch_size", 1, 1),
        ("train.device", "cpu", "cpu"),
        ("models.fc20.depth", 2, 2),
        ("models.fc20.dropout", 0, 0.0),
        ("models.fc20.init", "kaiming", "kaiming"),
        ("models.fc20.norm", "batchnorm", "batchnorm"),
        ("models.fc20.norm", "layernorm", "layernorm"),
        ("models.fc56.residual", True, True),
        ("models.resnet18.stem", "cifar", "cifar"),
        ("data.val_fraction", 0.5, 0.5),
        ("data.train_limit", 20, 20),
        ("data.source", "digits", "digits"),
        ("data.md5", CIFAR10_MD5.upper(), CIFAR10_MD5.upper()),
    ],
)
def test_boundary_values_are_accepted(key, value, parsed):
    p = parse_params(params_dict({key: value}))
    group, *rest = key.split(".")
    obj = p.models[rest[0]] if group == "models" else getattr(p, group)
    got = getattr(obj, rest[-1])
    assert got == parsed and type(got) is type(parsed)


def test_model_without_arch_is_rejected():
    raw = params_dict()
    del raw["models"]["fc20"]["arch"]
    with pytest.raises(UserError, match=r"models\.fc20\.arch must be one of fc, resnet18, cifar_resnet \(got None\)"):
        parse_params(raw)


def test_load_params_file_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- a list\n")
    with pytest.raises(UserError, match="the top level must be a mapping"):
        load_params(tmp_path / "params.yaml")


def test_load_params_reads_overrides_from_the_file(tmp_path):
    path = write_params(tmp_path, {"train.lr": 0.05, "data.train_limit": 40})
    p = load_params(path)
    assert (p.train.lr, p.data.train_limit, p.train.epochs) == (0.05, 40, 30)


def test_exponent_float_as_dvc_writes_it(tmp_path):
    path = write_params(tmp_path)
    path.write_text(path.read_text().replace("lr: 0.001", "lr: 1e-05"))
    assert load_params(path).train.lr == 1e-5


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("models.fc56.norm", "group", "models.fc56.norm must be one of none, batchnorm, layernorm (got 'group')"),
        ("models.fc56.residual", 1, "models.fc56.residual must be of type bool (got 1)"),
    ],
)
def test_fc_ablation_errors_are_one_line_naming_key_and_allowed_values(key, value, message):
    with pytest.raises(UserError) as e:
        parse_params(params_dict({key: value}))
    assert str(e.value) == f"params.yaml: {message}"

