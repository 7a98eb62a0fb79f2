"""The CIFAR-10 nets of He et al. 2015 §4.2: shapes, parameter counts, option A shortcuts, plain really plain."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from depthstudy.cifar_resnet import BasicBlock, CifarResNet, blocks_per_stage, shortcut_a
from depthstudy.models import count_parameters, weight_layers

VARIANTS = [True, False]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared; these nets are small
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("residual", VARIANTS)
@pytest.mark.parametrize("depth", [20, 56])
def test_output_shape(depth, residual):
    model = CifarResNet(depth, residual).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


# Exact counts for 3×3 convs without bias, BatchNorm (2 per channel) and the Linear; the paper's Table 6 rounds them.
@pytest.mark.parametrize(
    "depth, exact, paper",
    [(20, 269_722, 0.27), (32, 464_154, 0.46), (44, 658_586, 0.66), (56, 853_018, 0.85), (110, 1_727_962, 1.7)],
)
def test_parameter_counts_match_the_paper_and_plain_equals_residual(depth, exact, paper):
    residual, plain = count_parameters(CifarResNet(depth, True)), count_parameters(CifarResNet(depth, False))
    assert residual == plain == exact
    assert round(exact / 1e6, len(str(paper)) - 2) == paper  # to as many decimals as the paper gives


@pytest.mark.parametrize("depth", [8, 20, 56])
def test_6n_plus_2_weight_layers_listed_input_to_output(depth):
    model = CifarResNet(depth, residual=True)
    layers = [m for _, m in weight_layers(model)]
    assert len(layers) == depth == 6 * blocks_per_stage(depth) + 2
    assert layers[0].in_channels == 3 and isinstance(layers[-1], nn.Linear)
    called = []  # the order the forward pass actually runs them in
    for m in layers:
        m.register_forward_hook(lambda m, args, out: called.append(m))
    model.eval()(torch.zeros(1, 3, 32, 32))
    assert called == layers


@pytest.mark.parametrize("depth", [21, 2, 0, -4, 7, 20.0, True])
def test_depth_not_6n_plus_2_is_refused(depth):
    with pytest.raises(ValueError, match=r"6n\+2 with n >= 1"):
        CifarResNet(depth, residual=True)


def test_feature_maps_are_32_16_8_px_with_16_32_64_filters():
    model = CifarResNet(20, residual=True).eval()
    shapes = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape[1:])))
    model(torch.zeros(1, 3, 32, 32))
    assert shapes == [(16, 32, 32)] * 3 + [(32, 16, 16)] * 3 + [(64, 8, 8)] * 3


@pytest.mark.parametrize("c_in, c_out, size", [(16, 32, 32), (32, 64, 16)])
def test_option_a_shortcut_subsamples_and_zero_pads(c_in, c_out, size):
    x = torch.randn(4, c_in, size, size)
    out = shortcut_a(x, c_out, stride=2)
    assert out.shape == (4, c_out, size // 2, size // 2)
    assert torch.equal(out[:, :c_in], x[:, :, ::2, ::2])
    assert not out[:, c_in:].any()


def test_option_a_shortcut_is_the_identity_within_a_stage():
    x = torch.randn(2, 16, 32, 32)
    assert torch.equal(shortcut_a(x, 16, stride=1), x)


def zero_convs(c_in: int, c_out: int, stride: int, residual: bool) -> BasicBlock:
    """A block in eval mode whose two convs output zeros: what is left of it is the shortcut, if any."""
    block = BasicBlock(c_in, c_out, stride, residual)
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv2.weight.zero_()
    return block.eval()


@pytest.mark.parametrize("c_in, c_out, stride", [(16, 16, 1), (16, 32, 2)])
def test_a_block_with_zero_convs_outputs_zero_if_plain_and_its_shortcut_if_residual(c_in, c_out, stride):
    x = torch.rand(2, c_in, 32, 32)  # >= 0, as the ReLU before every block makes it
    assert not zero_convs(c_in, c_out, stride, residual=False)(x).any()
    assert torch.equal(zero_convs(c_in, c_out, stride, residual=True)(x), shortcut_a(x, c_out, stride))


def test_residual_and_plain_twins_share_a_state_dict_but_not_their_outputs():
    torch.manual_seed(0)
    residual = CifarResNet(20, residual=True).eval()
    plain = CifarResNet(20, residual=False).eval()
    plain.load_state_dict(residual.state_dict())  # same keys and shapes: the twins differ only in the shortcuts
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(plain(x), residual(x))


def test_convs_have_he_init_fan_out():
    torch.manual_seed(0)
    conv = CifarResNet(20, residual=True).blocks[-1].conv2  # 64 → 64 channels, 36,864 weights
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.03)
    stem = CifarResNet(20, residual=True).conv  # fan_in 27, fan_out 144: tells the two modes apart
    assert stem.weight.std().item() == pytest.approx(math.sqrt(2 / 144), rel=0.15)


@pytest.mark.parametrize("residual", VARIANTS)
def test_one_sgd_step_lowers_the_loss_on_a_fixed_batch(residual):
    torch.manual_seed(0)
    model = CifarResNet(8, residual)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    before = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    before.backward()
    optimizer.step()
    assert F.cross_entropy(model(x), y).item() < before.item()
