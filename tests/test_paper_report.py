"""The paper report's notes on scale and recipe: what a run at the paper's settings says, and what a departure says."""

import dataclasses

from depthstudy.paper_report import PAPER_RECIPE, lr_drop_epochs, scale_notes
from depthstudy.params import CifarResNetParams, Params

CIFAR = {"source": "cifar10", "counts": {"train": 45_000, "val": 5_000, "test": 10_000}}
NETS = {"plain20": CifarResNetParams(depth=20, residual=False), "resnet20": CifarResNetParams(depth=20)}


def test_the_papers_settings_on_cifar10_are_reported_as_such():
    notes = scale_notes(Params(train=PAPER_RECIPE, models=NETS), CIFAR)
    assert notes[0].startswith("Images: 45,000 train / 5,000 val / 10,000 test")
    assert "64,064 (182 epochs × 352 steps of 128 images), lr 0.1, × 0.1 after 32,032, 48,048 updates" in notes[1]
    assert not any(n.startswith("`train.") for n in notes)  # no departure from the recipe to report
    assert lr_drop_epochs(Params(train=PAPER_RECIPE), 45_000) == [91.0, 136.5]


def test_departures_and_other_data_are_named():
    train = dataclasses.replace(PAPER_RECIPE, augment=False, optimizer="adam", seed=3, epochs=2)
    notes = scale_notes(Params(train=train, models=NETS), {**CIFAR, "source": "digits"})
    assert notes[0].startswith("Data: the offline `digits` sample, not CIFAR-10")
    assert "`train.augment` is False (the paper's recipe: True)." in notes
    assert "`train.optimizer` is adam (the paper's recipe: sgd)." in notes
    assert not any("train.seed" in n or "train.epochs" in n for n in notes)  # the run's length has its own note
