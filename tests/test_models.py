"""Models: shapes, parameter counts, one optimisation step, and the vanishing gradient measured at init."""

import pytest
import torch
import torch.nn.functional as F

from depthstudy.models import FCNet, build_model, count_parameters, weight_layers
from depthstudy.params import FCParams, ResNetParams

MODEL_SPECS = [
    FCParams(depth=2, width=16),
    FCParams(depth=5, width=32, dropout=0.0, init="kaiming"),
    ResNetParams(stem="imagenet"),
    ResNetParams(stem="cifar"),
]


@pytest.mark.parametrize("spec", MODEL_SPECS, ids=str)
def test_output_shape(spec):
    model = build_model(spec).eval()
    assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 10)


@pytest.mark.parametrize("depth", [20, 56])
def test_fc_parameter_count_matches_arithmetic(depth):
    width, n_in = 4096, 3 * 32 * 32
    expected = (n_in * width + width) + (depth - 2) * (width * width + width) + (width * 10 + 10)
    with torch.device("meta"):  # count without allocating 1-4 GB
        model = FCNet(depth, width, dropout=0.5)
    assert count_parameters(model) == expected
    assert len(weight_layers(model)) == depth


def test_fc56_has_about_919m_parameters():
    with torch.device("meta"):
        assert round(count_parameters(FCNet(56, 4096, 0.5)) / 1e6, 1) == 918.8


def test_cifar_stem_keeps_resolution():
    imagenet, cifar = build_model(ResNetParams("resnet18", "imagenet")), build_model(ResNetParams("resnet18", "cifar"))
    x = torch.zeros(1, 3, 32, 32)
    assert imagenet.maxpool(imagenet.conv1(x)).shape[-1] == 8
    assert cifar.maxpool(cifar.conv1(x)).shape[-1] == 32


@pytest.mark.parametrize("spec", MODEL_SPECS[:3], ids=str)
def test_one_adam_step_lowers_the_loss_on_a_fixed_batch(spec):
    torch.manual_seed(0)
    model = build_model(spec)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    before = eval_loss()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert eval_loss() < before


def first_over_last_grad(init: str, depth: int = 56, width: int = 512) -> float:
    """First ÷ last Linear layer's weight-gradient norm at init, train mode, one batch of random inputs."""
    torch.manual_seed(0)
    model = FCNet(depth, width, dropout=0.5, init=init).train()
    F.cross_entropy(model(torch.randn(64, 3, 32, 32)), torch.randint(0, 10, (64,))).backward()
    layers = [m for _, m in weight_layers(model)]
    return (layers[0].weight.grad.norm() / layers[-1].weight.grad.norm()).item()


def test_default_init_fc56_gradient_vanishes_towards_the_input():
    assert first_over_last_grad("default") < 1e-6  # orders of magnitude, not a few percent


def test_kaiming_init_closes_the_gap_by_orders_of_magnitude():
    default, kaiming = first_over_last_grad("default"), first_over_last_grad("kaiming")
    assert kaiming / default > 1e4
