"""Models: shapes, parameter counts, one optimisation step, and the vanishing gradient measured at init."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from depthstudy.models import FCNet, ResidualPair, build_model, count_parameters, weight_layers
from depthstudy.params import FC_INITS, FC_NORMS, FCParams, ResNetParams
from depthstudy.weights import load_weights

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


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("depth", [20, 56])
def test_fc_parameter_count_matches_arithmetic(depth, residual):
    width, n_in = 4096, 3 * 32 * 32
    expected = (n_in * width + width) + (depth - 2) * (width * width + width) + (width * 10 + 10)
    with torch.device("meta"):  # count without allocating 1-4 GB
        model = FCNet(depth, width, dropout=0.5, residual=residual)
    assert count_parameters(model) == expected  # the skips are identities: residual adds no parameter
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


FC_OPTIONS = list(itertools.product(FC_NORMS, [False, True], FC_INITS))


def fc_options_id(option) -> str:
    norm, residual, init = option
    return f"{norm}-{'residual' if residual else 'plain'}-{init}"


@pytest.mark.parametrize("option", FC_OPTIONS, ids=fc_options_id)
def test_fc_option_builds_lists_its_layers_in_order_and_trains_a_step(option):
    norm, residual, init = option
    torch.manual_seed(0)
    depth = 7  # 5 hidden width→width layers: two residual pairs and one plain layer left over
    model = build_model(FCParams(depth=depth, width=32, dropout=0.0, init=init, norm=norm, residual=residual))
    layers = [m for _, m in weight_layers(model)]
    assert len(layers) == depth and all(isinstance(m, nn.Linear) for m in layers)
    assert [(m.in_features, m.out_features) for m in layers] == [(3072, 32)] + [(32, 32)] * (depth - 2) + [(32, 10)]
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()  # dropout 0: train mode is deterministic, and BatchNorm normalises with this batch's statistics
    logits = model(x)
    assert logits.shape == (32, 10)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert F.cross_entropy(model(x), y).item() < loss.item()


@pytest.mark.parametrize("depth", [6, 7])
def test_residual_net_has_the_plain_nets_weights_at_the_same_seed(depth):
    nets = []
    for residual in (False, True):
        torch.manual_seed(0)
        nets.append(FCNet(depth, 16, dropout=0.5, residual=residual))
    plain, residual = ([p for p in net.parameters()] for net in nets)
    assert [p.shape for p in plain] == [p.shape for p in residual]
    assert all(torch.equal(a, b) for a, b in zip(plain, residual))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("norm, kind", [("batchnorm", nn.BatchNorm1d), ("layernorm", nn.LayerNorm)])
def test_norm_adds_a_scale_and_a_shift_per_hidden_unit(norm, kind, residual):
    depth, width = 7, 16
    plain = FCNet(depth, width, dropout=0.5, residual=residual)
    normed = FCNet(depth, width, dropout=0.5, norm=norm, residual=residual)
    norms = [m for m in normed.modules() if isinstance(m, kind)]
    assert len(norms) == depth - 1  # after every hidden Linear, the input layer included; not after the output
    assert count_parameters(normed) - count_parameters(plain) == (depth - 1) * 2 * width


def test_checkpoint_saved_before_norm_and_residual_existed_loads_as_the_plain_net(tmp_path):
    torch.manual_seed(0)
    model = FCNet(3, 8, dropout=0.5)
    # the keys such checkpoints hold, and their model_params (asdict(FCParams) as it was then)
    assert list(model.state_dict()) == [f"layers.{i}.{p}" for i in (1, 4, 7) for p in ("weight", "bias")]
    spec = {"arch": "fc", "depth": 3, "width": 8, "dropout": 0.5, "init": "default"}
    stats = {"mean": [0.5] * 3, "std": [0.25] * 3}
    torch.save({"model": model.state_dict(), "model_name": "fc20", "model_params": spec, "epoch": 1, **stats},
               tmp_path / "w.pt")
    _, loaded, _ = load_weights(tmp_path / "w.pt", torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("norm", FC_NORMS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_residual_pairs_with_zero_weights_pass_their_input_through(norm, mode):
    """With every width→width weight and bias zero, the residual net is its input and output layers alone."""
    torch.manual_seed(0)
    model = FCNet(6, 16, dropout=0.5, norm=norm, residual=True).train(mode == "train")
    pairs = [m for m in model.layers if isinstance(m, ResidualPair)]
    assert len(pairs) == 2
    with torch.no_grad():
        for pair in pairs:
            for linear in (pair.linear1, pair.linear2):
                linear.weight.zero_()
                linear.bias.zero_()
    without_pairs = nn.Sequential(*[m for m in model.layers if not isinstance(m, ResidualPair)])
    x = torch.randn(8, 3, 32, 32)
    torch.manual_seed(1)  # the same dropout mask after the input layer in both
    out = model(x)
    torch.manual_seed(1)
    assert torch.allclose(out, without_pairs(x))
    assert out.std(dim=0).min() > 0  # and that still depends on the input


def test_plain_net_with_zero_hidden_weights_forgets_its_input():
    """The contrast to the test above: without skips, zero hidden layers make the output input-independent."""
    model = FCNet(6, 16, dropout=0.5).eval()
    with torch.no_grad():
        for layer in [m for _, m in weight_layers(model)][1:-1]:
            layer.weight.zero_()
            layer.bias.zero_()
        out = model(torch.randn(8, 3, 32, 32))
    assert torch.equal(out, out[:1].expand_as(out))
