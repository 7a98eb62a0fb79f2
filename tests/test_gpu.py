"""The CUDA fast path: data resident on the GPU as uint8, channels_last ResNet, bf16 autocast, torch.compile.

Skipped without a CUDA device (CI and the developers' machines have none)."""

import pytest
import torch

from depthstudy.data import Normalize, Split, to_device
from depthstudy.models import build_model
from depthstudy.params import FCParams, ResNetParams, TrainParams
from depthstudy.runtime import place_model
from depthstudy.train import fit, make_optimizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def synthetic(n: int) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                 torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("spec", [FCParams(depth=20, width=256), ResNetParams()], ids=["fc20", "resnet18"])
def test_cuda_training_runs_with_every_fast_path_option(spec, amp, compile):
    device = torch.device("cuda")
    train, val = to_device(synthetic(320), device), to_device(synthetic(64), device)
    assert train.images.dtype == torch.uint8 and train.images.is_cuda
    model, channels_last = place_model(build_model(spec), device, compile)
    assert channels_last == isinstance(spec, ResNetParams)
    params = TrainParams(epochs=2, amp=amp, compile=compile)
    logged = []
    fit(model, make_optimizer(model, params.lr, device), torch.Generator().manual_seed(0), train, val, params,
        Normalize([0.5] * 3, [0.25] * 3, device, channels_last), device, lambda *a: logged.append(a))
    assert [epoch for epoch, _ in logged] == [1, 2]
    for _, result in logged:
        assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
        assert all(g > 0 for g in result.layers["grad_norm"])
