"""The models of the depth study: every one maps (N, 3, 32, 32) images to (N, 10) logits."""

from collections.abc import Callable

import torch
from torch import nn

from depthstudy.cifar_resnet import CifarResNet
from depthstudy.params import CifarResNetParams, FCParams, ModelParams, ResNetParams

IN_FEATURES = 3 * 32 * 32
NUM_CLASSES = 10


def norm_layer(norm: str, width: int) -> nn.Module:
    """The normalisation after a hidden Linear, (N, width) → (N, width): BatchNorm1d, LayerNorm or nothing."""
    if norm == "batchnorm":
        return nn.BatchNorm1d(width)
    if norm == "layernorm":
        return nn.LayerNorm(width)
    return nn.Identity()


class ResidualPair(nn.Module):
    """Two width→width hidden layers with an identity skip, ReLU after the sum: ResNet's basic block (He et al. 2015).

    Each Linear keeps the plain net's [Norm] → ReLU → Dropout (Dropout commutes with ReLU: it only scales by 0 or
    1/(1−p)); the one change from plain is ``h +`` before the second ReLU. Dropout stays inside the branch, not
    after the sum: a fresh mask on the sum would double the skip's second moment per pair (p = 0.5) and it would
    no longer be an identity. Zero weights make the pair pass h (≥ 0, after a ReLU) through unchanged.
    """

    def __init__(self, width: int, dropout: float, norm: str):
        super().__init__()
        self.linear1 = nn.Linear(width, width)
        self.norm1 = norm_layer(norm, width)
        self.linear2 = nn.Linear(width, width)
        self.norm2 = norm_layer(norm, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (N, width) → (N, width)
        g = self.dropout(torch.relu(self.norm1(self.linear1(h))))
        return torch.relu(h + self.dropout(self.norm2(self.linear2(g))))


class FCNet(nn.Module):
    """Fully connected net of the seed report: ``depth`` Linear layers, each hidden one + [Norm] + ReLU + Dropout.

    ``residual`` wraps the width→width hidden layers in pairs with identity skips (an odd one out stays plain,
    next to the input layer); the input (3072→width) and output (width→10) layers are never skipped, so plain
    and residual nets have the same parameters.
    """

    def __init__(
        self, depth: int, width: int, dropout: float, init: str = "default", norm: str = "none", residual: bool = False
    ):
        super().__init__()
        n_pairs = (depth - 2) // 2 if residual else 0
        n_plain = depth - 1 - 2 * n_pairs  # hidden layers outside any pair, the input layer included
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(n_plain):
            layers.append(nn.Linear(IN_FEATURES if i == 0 else width, width))
            if norm != "none":  # no Identity placeholder: plain nets keep the seed's state_dict keys (layers.1, .4, …)
                layers.append(norm_layer(norm, width))
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers += [ResidualPair(width, dropout, norm) for _ in range(n_pairs)]
        layers.append(nn.Linear(width, NUM_CLASSES))
        self.layers = nn.Sequential(*layers)
        if init == "kaiming":  # He et al. 2015: Var(W) = 2 / fan_in keeps ReLU activations' scale with depth
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        # "default" keeps nn.Linear's own init, Var(W) = 1 / (3 fan_in): the scale shrinks ~6× per ReLU layer.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def fc(p: FCParams) -> nn.Module:
    return FCNet(p.depth, p.width, p.dropout, p.init, p.norm, p.residual)


def resnet18(p: ResNetParams) -> nn.Module:
    """torchvision's ResNet-18 (He et al. 2015), 10 classes, random init; ``stem: cifar`` = 3×3/1 conv, no max-pool."""
    import torchvision  # here, not at the top: it adds ~0.9 s to every FC stage's start-up

    model = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES)
    if p.stem == "cifar":  # keeps 32×32 resolution into layer1 instead of shrinking it to 8×8
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def cifar_resnet(p: CifarResNetParams) -> nn.Module:
    """He et al. 2015's CIFAR-10 ResNet-``depth``, or its plain twin (``residual: false``), with equal parameters."""
    return CifarResNet(p.depth, p.residual, NUM_CLASSES)


MODELS: dict[str, Callable[..., nn.Module]] = {"fc": fc, "resnet18": resnet18, "cifar_resnet": cifar_resnet}


def build_model(p: ModelParams) -> nn.Module:
    return MODELS[p.arch](p)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv2d layers in definition order: index 0 is nearest the input, the last is the output."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
