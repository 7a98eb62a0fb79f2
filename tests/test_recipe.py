"""He et al. 2015's recipe in the training loop (issue 11): its params, the step schedule the loop applies, the
augmentation's own random stream, and crash-resume with augmentation on — bit-identical to an unbroken run."""

import re

import pytest
import torch
from test_train import assert_same_metrics, logged_tables

from conftest import REPO, load_stage, params_dict, prepare_digits
from depthstudy import resume
from depthstudy import train as train_lib
from depthstudy.cifar_resnet import CifarResNet
from depthstudy.data import Normalize, Split
from depthstudy.errors import UserError
from depthstudy.paper_report import PAPER_RECIPE
from depthstudy.params import CifarResNetParams, TrainParams, load_params, parse_params
from depthstudy.schedule import lr_at

CPU = torch.device("cpu")

# --- params -------------------------------------------------------------------------------------------------------


def test_the_seed_keeps_its_recipe_and_paper_params_yaml_is_the_papers():
    seed = load_params(REPO / "params.yaml").train
    assert (seed.optimizer, seed.weight_decay, seed.lr_milestones, seed.augment) == ("adam", 0.0, (), False)
    paper = load_params(REPO / "paper" / "params.yaml")
    assert paper.train == PAPER_RECIPE  # what the report compares a run against
    assert PAPER_RECIPE.epochs * -(-45_000 // PAPER_RECIPE.batch_size) == 64_064  # ≈ the paper's 64k iterations
    assert paper.models == {f"{'resnet' if residual else 'plain'}{depth}": CifarResNetParams(depth=depth,
                                                                                           residual=residual)
                            for residual in (False, True) for depth in (20, 56)}


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("train.optimizer", "adagrad", "one of adam, sgd"),
        ("train.momentum", 1.0, "in [0, 1)"),
        ("train.momentum", -0.1, "in [0, 1)"),
        ("train.weight_decay", -1e-4, "a number >= 0"),
        ("train.lr_milestones", [0.75, 0.5], "increasing fractions of the run in (0, 1)"),
        ("train.lr_milestones", [0.5, 0.5], "increasing fractions of the run in (0, 1)"),
        ("train.lr_milestones", [1.0], "increasing fractions of the run in (0, 1)"),
        ("train.lr_milestones", [0], "increasing fractions of the run in (0, 1)"),
        ("train.lr_milestones", 0.5, "a list of numbers"),
        ("train.lr_milestones", ["0.5"], "a list of numbers"),
        ("train.lr_milestones", [True], "a list of numbers"),
        ("train.lr_gamma", 0.0, "in (0, 1]"),
        ("train.lr_gamma", 10, "in (0, 1]"),
        ("train.augment", "yes", "of type bool"),
        ("models.net.depth", 21, "6n+2 with n >= 1"),
        ("models.net.depth", 2, "6n+2 with n >= 1"),
        ("models.net.residual", 1, "of type bool"),
    ],
)
def test_bad_recipe_values_are_one_line_errors_naming_the_key(key, value, allowed):
    raw = params_dict({"models.net": {"arch": "cifar_resnet"}, key: value})
    with pytest.raises(UserError) as e:
        parse_params(raw)
    message = str(e.value)
    assert message.startswith(f"params.yaml: {key} must be {allowed}") and "\n" not in message, message


def test_recipe_values_that_are_allowed():
    p = parse_params(params_dict({"train.optimizer": "sgd", "train.momentum": 0, "train.weight_decay": 0,
                                  "train.lr_milestones": [0.3, 0.6, 0.9], "train.lr_gamma": 1,
                                  "models.net": {"arch": "cifar_resnet", "depth": 8, "residual": False}}))
    assert p.train.lr_milestones == (0.3, 0.6, 0.9) and p.train.lr_gamma == 1.0 and p.train.momentum == 0.0
    assert p.models["net"] == CifarResNetParams(depth=8, residual=False)
    with pytest.raises(UserError, match=r"unknown key models\.net\.width \(allowed: arch, depth, residual\)"):
        parse_params(params_dict({"models.net": {"arch": "cifar_resnet", "width": 16}}))


# --- the loop -----------------------------------------------------------------------------------------------------


def tiny_split(n: int, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10)


def applied_lrs(params: TrainParams, start_epoch: int = 1) -> list[float]:
    """The learning rate the optimizer held at each update of a tiny ``fit`` (CifarResNet-8, 10 images, batch 4)."""
    torch.manual_seed(0)
    model = CifarResNet(8, residual=True)
    optimizer = train_lib.make_optimizer(model, params.lr, CPU, params.optimizer, params.momentum, params.weight_decay)
    lrs = []
    optimizer.register_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    train_lib.fit(model, optimizer, torch.Generator().manual_seed(0), tiny_split(10), tiny_split(4, 1), params,
                  Normalize([0.5] * 3, [0.25] * 3, CPU), CPU, lambda *_: None, start_epoch=start_epoch)
    return lrs


def test_the_loop_applies_the_schedule_at_every_update_and_continues_it_after_a_resume():
    params = TrainParams(epochs=4, batch_size=4, lr=0.1, optimizer="sgd", lr_milestones=(0.5, 0.75))
    total = 4 * 3  # 3 updates per epoch: batches of 4, 4 and 2 images
    expected = [lr_at(step, total, 0.1, (0.5, 0.75), 0.1) for step in range(total)]
    assert expected == [0.1] * 6 + [pytest.approx(0.01)] * 3 + [pytest.approx(0.001)] * 3
    assert applied_lrs(params) == expected
    assert applied_lrs(params, start_epoch=3) == expected[6:]  # a run resumed after epoch 2 picks up at update 6
    assert applied_lrs(TrainParams(epochs=2, batch_size=4, lr=0.1)) == [0.1] * 6  # no milestones: constant


def test_sgd_is_the_papers_and_fused():
    model = CifarResNet(8, residual=True)
    sgd = train_lib.make_optimizer(model, 0.1, CPU, "sgd", 0.9, 1e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["fused"]
    assert (sgd.defaults["momentum"], sgd.defaults["weight_decay"], sgd.defaults["nesterov"]) == (0.9, 1e-4, False)
    adam = train_lib.make_optimizer(model, 1e-3, CPU)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["weight_decay"] == 0.0


def one_epoch(augment: torch.Generator | None) -> torch.Generator:
    """One train_epoch of a tiny net → the shuffling generator afterwards."""
    torch.manual_seed(0)
    model = CifarResNet(8, residual=True)
    shuffle = torch.Generator().manual_seed(0)
    train_lib.train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.01), tiny_split(10), 4, shuffle,
                          Normalize([0.5] * 3, [0.25] * 3, CPU), CPU, augment=augment)
    return shuffle


def test_without_augment_no_crop_is_drawn_and_the_shuffle_draws_only_its_permutation(monkeypatch):
    reference = torch.Generator().manual_seed(0)
    torch.randperm(10, generator=reference)
    with monkeypatch.context() as m:
        m.setattr(train_lib, "crop_flip", lambda *_: pytest.fail("augmented with train.augment off"))
        assert torch.equal(one_epoch(None).get_state(), reference.get_state())
    # With augmentation on, crops come from their own generator: the shuffling is the same as without.
    augment = torch.Generator().manual_seed(1)
    assert torch.equal(one_epoch(augment).get_state(), reference.get_state())
    assert not torch.equal(augment.get_state(), torch.Generator().manual_seed(1).get_state())  # it did draw


# --- crash-resume with augmentation, through the train stage -------------------------------------------------------

EPOCHS = 3
RECIPE = {"data.source": "digits", "data.train_limit": 240, "train.epochs": EPOCHS, "train.threads": 1,
          "train.batch_size": 32, "train.lr": 0.05, "train.optimizer": "sgd", "train.weight_decay": 1e-4,
          "train.lr_milestones": [0.5, 0.75], "train.augment": True,
          "models.tiny": {"arch": "cifar_resnet", "depth": 8, "residual": True}}
train_stage = load_stage("train")


class Killed(Exception):
    """Stands in for a kill right after an epoch's resume state was written."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipe")
    prepare_digits(d, RECIPE)
    return d


def run_stage(workdir, out: str):
    """Train "tiny" with a resume state, as dvc.yaml runs it → (its logged tables, its final state_dict)."""
    d = workdir / out
    train_stage.main(["tiny", str(workdir / "prepared" / "trainval"), str(d / "model.pt"), str(d / "live"),
                      "--resume", str(d / "state.pt")])
    return logged_tables(d / "live"), torch.load(d / "model.pt", weights_only=True)["model"]


def run_killed_after_epoch(workdir, monkeypatch, name: str, epoch: int = 1) -> None:
    """Run the stage as ``name`` and kill it right after it saved its resume state for ``epoch``."""
    save = resume.save

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        if len(args[6]) == epoch:  # history: the finished epochs
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(resume, "save", save_then_die)
        with pytest.raises(Killed):
            run_stage(workdir, name)


def test_a_run_killed_and_resumed_with_augmentation_equals_an_unbroken_one(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    unbroken, unbroken_weights = run_stage(workdir, "unbroken")
    run_killed_after_epoch(workdir, monkeypatch, "resumed")
    capsys.readouterr()
    resumed, resumed_weights = run_stage(workdir, "resumed")
    assert re.search(r"resuming from \S+state\.pt: 1 epoch\(s\) done", capsys.readouterr().out)
    assert_same_metrics(unbroken, resumed)
    assert all(torch.equal(unbroken_weights[k], resumed_weights[k]) for k in unbroken_weights)


def test_the_augmentation_stream_is_part_of_the_resume_state(workdir, monkeypatch):
    """The check above has teeth: resuming everything but the augmentation's generator changes the numbers."""
    monkeypatch.chdir(workdir)
    unbroken, _ = run_stage(workdir, "unbroken-2")
    run_killed_after_epoch(workdir, monkeypatch, "forgetful")
    restore = resume.restore
    monkeypatch.setattr(resume, "restore", lambda *args: restore(*args[:-1]))  # all but the augmentation's
    forgetful, _ = run_stage(workdir, "forgetful")
    val_loss = "plots/metrics/val/loss.tsv"
    assert unbroken[val_loss]["loss"].iloc[0] == forgetful[val_loss]["loss"].iloc[0]  # epoch 1: the saved one
    assert unbroken[val_loss]["loss"].iloc[-1] != forgetful[val_loss]["loss"].iloc[-1]
