"""The models of the depth study: every one maps (N, 3, 32, 32) images to (N, 10) logits."""

from collections.abc import Callable

import torch
from torch import nn

from depthstudy.params import FCParams, ModelParams, ResNetParams

IN_FEATURES = 3 * 32 * 32
NUM_CLASSES = 10


class FCNet(nn.Module):
    """Plain fully connected net of the seed report: ``depth`` Linear layers, each hidden one + ReLU + Dropout."""

    def __init__(self, depth: int, width: int, dropout: float, init: str = "default"):
        super().__init__()
        sizes = [IN_FEATURES] + [width] * (depth - 1) + [NUM_CLASSES]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < depth - 1:
                layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.layers = nn.Sequential(*layers)
        if init == "kaiming":  # He et al. 2015: Var(W) = 2 / fan_in keeps ReLU activations' scale with depth
            for m in self.layers:
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        # "default" keeps nn.Linear's own init, Var(W) = 1 / (3 fan_in): the scale shrinks ~6× per ReLU layer.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def fc(p: FCParams) -> nn.Module:
    return FCNet(p.depth, p.width, p.dropout, p.init)


def resnet18(p: ResNetParams) -> nn.Module:
    """torchvision's ResNet-18 (He et al. 2015), 10 classes, random init; ``stem: cifar`` = 3×3/1 conv, no max-pool."""
    import torchvision  # here, not at the top: it adds ~0.9 s to every FC stage's start-up

    model = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES)
    if p.stem == "cifar":  # keeps 32×32 resolution into layer1 instead of shrinking it to 8×8
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {"fc": fc, "resnet18": resnet18}


def build_model(p: ModelParams) -> nn.Module:
    return MODELS[p.arch](p)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv2d layers in definition order: index 0 is nearest the input, the last is the output."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
