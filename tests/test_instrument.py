"""LayerProbe: one value per layer, activation std and update ratio against hand computations, sampling, no leaks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from depthstudy.instrument import LayerProbe, grad_norms
from depthstudy.models import FCNet, build_model, weight_layers
from depthstudy.params import FCParams, ResNetParams


def layers_of(model: nn.Module) -> list[nn.Module]:
    return [m for _, m in weight_layers(model)]


def hand_std(h: torch.Tensor) -> torch.Tensor:
    """Std of each column over the rows (population), averaged over the columns."""
    return ((h - h.mean(dim=0)) ** 2).mean(dim=0).sqrt().mean()


def train_steps(model: nn.Module, probe: LayerProbe, steps: int, lr: float = 1e-3) -> dict[str, list[float]]:
    """``steps`` Adam steps on random batches, instrumented as train_epoch would be → probe.epoch_end()."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    probe.epoch_start()
    for i in range(steps):
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        probe.step(i)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        probe.after_backward()
        optimizer.step()
    return probe.epoch_end()


@pytest.mark.parametrize(
    "spec",
    [FCParams(depth=5, width=16), FCParams(depth=7, width=16, norm="batchnorm", residual=True), ResNetParams()],
    ids=["fc", "fc-batchnorm-residual", "resnet18"],
)
def test_probe_gives_one_positive_finite_value_per_layer(spec):
    torch.manual_seed(0)
    model = build_model(spec)
    layers = layers_of(model)
    with LayerProbe(layers, every=2) as probe:
        result = train_steps(model, probe, steps=3)
    assert set(result) == {"grad_norm", "act_std", "update_ratio"}
    for name, values in result.items():
        assert len(values) == len(layers), name
        assert all(0 < v < float("inf") for v in values), name


def test_activation_std_is_the_linear_output_before_the_in_place_relu():
    torch.manual_seed(0)
    model = FCNet(3, 8, dropout=0.0).eval()
    x1, x2 = torch.randn(5, 3, 32, 32), torch.randn(5, 3, 32, 32)
    with torch.no_grad():  # by hand: each layer's output, computed without the model's in-place ReLU
        h1 = [model.layers[1](x.flatten(1)) for x in (x1, x2)]
        h2 = [model.layers[4](torch.relu(h)) for h in h1]
        h3 = [model.layers[7](torch.relu(h)) for h in h2]
    expected = [(hand_std(a) + hand_std(b)) / 2 for a, b in (h1, h2, h3)]
    with LayerProbe(layers_of(model), every=1) as probe:
        probe.epoch_start()
        for i, x in enumerate((x1, x2)):
            probe.step(i)
            model(x)
        got = probe.epoch_end()["act_std"]
    assert got == pytest.approx([e.item() for e in expected], rel=1e-5)


def test_sampling_every_k_steps_uses_exactly_those_steps():
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    xs = [torch.randn(5, 6) * (i + 1) for i in range(10)]  # every step's std differs
    with LayerProbe([model], every=3) as probe:
        probe.epoch_start()
        norms = []
        for i, x in enumerate(xs):
            probe.step(i)
            model.zero_grad(set_to_none=True)
            model(x).pow(2).sum().backward()
            probe.after_backward()
            norms.append(model.weight.grad.norm())
        result = probe.epoch_end()
    sampled = [0, 3, 6, 9]
    assert probe.samples == len(sampled)
    with torch.no_grad():
        expected_std = torch.stack([hand_std(model(xs[i])) for i in sampled]).mean()
    assert result["act_std"] == pytest.approx([expected_std.item()], rel=1e-5)
    assert result["grad_norm"] == pytest.approx([torch.stack([norms[i] for i in sampled]).mean().item()], rel=1e-5)


def test_update_ratio_matches_a_hand_computed_sgd_step():
    torch.manual_seed(0)
    model, lr = nn.Linear(3, 2), 0.1
    x = torch.randn(4, 3)
    w = model.weight.detach().clone()
    with LayerProbe([model]) as probe:
        probe.epoch_start()
        model(x).sum().backward()  # d(sum)/dW[i, j] = Σ_n x[n, j] for both rows i
        torch.optim.SGD(model.parameters(), lr=lr).step()
        ratio = probe.epoch_end()["update_ratio"]
    expected = lr * (2 ** 0.5) * x.sum(dim=0).norm() / w.norm()  # ΔW = −lr · [Σx; Σx]; the bias is left out
    assert ratio == pytest.approx([expected.item()], rel=1e-6)


@pytest.mark.parametrize("how", ["requires_grad", "lr0"])
def test_update_ratio_is_exactly_zero_for_a_frozen_layer(how):
    torch.manual_seed(0)
    model = FCNet(4, 16, dropout=0.5)
    layers = layers_of(model)
    frozen = layers[1]
    if how == "requires_grad":
        frozen.requires_grad_(False)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    else:
        others = [p for p in model.parameters() if all(p is not q for q in frozen.parameters())]
        optimizer = torch.optim.Adam([{"params": others}, {"params": list(frozen.parameters()), "lr": 0.0}], lr=1e-2)
    with LayerProbe(layers) as probe:
        probe.epoch_start()
        for i in range(3):
            probe.step(i)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
            probe.after_backward()
            optimizer.step()
        result = probe.epoch_end()
    assert result["update_ratio"][1] == 0.0
    assert all(r > 0 for j, r in enumerate(result["update_ratio"]) if j != 1)
    assert (result["grad_norm"][1] == 0.0) == (how == "requires_grad")  # no gradient at all vs one that is unused


def test_hooks_are_removed_on_exit_even_after_an_error():
    model = FCNet(4, 8, dropout=0.5)
    with pytest.raises(ZeroDivisionError):
        with LayerProbe(layers_of(model)) as probe:
            assert all(len(m._forward_hooks) == 1 for m in probe.layers)
            1 / 0
    assert all(not m._forward_hooks for m in model.modules())


def test_grad_norms_match_a_norm_per_layer_and_read_zero_without_a_gradient():
    torch.manual_seed(0)
    model = FCNet(4, 8, dropout=0.5)
    layers = layers_of(model)
    layers[0].requires_grad_(False)
    F.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
    expected = [0.0] + [torch.linalg.vector_norm(m.weight.grad).item() for m in layers[1:]]
    assert grad_norms(layers).tolist() == pytest.approx(expected, rel=1e-6)


def test_epoch_end_needs_epoch_start():
    with LayerProbe([nn.Linear(2, 2)]) as probe, pytest.raises(RuntimeError, match="epoch_start"):
        probe.epoch_end()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_snapshot_on_the_cpu_gives_the_same_ratios_as_on_the_gpu():
    torch.manual_seed(0)
    model = FCNet(4, 64, dropout=0.5).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gpu, cpu = LayerProbe(layers_of(model)), LayerProbe(layers_of(model), snapshot_device="cpu")
    for probe in (gpu, cpu):
        probe.epoch_start()
    x, y = torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert cpu.epoch_end()["update_ratio"] == pytest.approx(gpu.epoch_end()["update_ratio"], rel=1e-5)
    gpu.close()
    cpu.close()
