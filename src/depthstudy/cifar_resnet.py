"""The CIFAR-10 nets of He et al. 2015, §4.2: 6n+2 weight layers, residual or plain, with identical parameters.

A 3×3 conv (16 filters), then three stages of n basic blocks at 32, 16 and 8 px with 16, 32 and 64 filters (the
first block of stages 2 and 3 halves the size with stride 2), then a global average pool and a 10-way Linear:
1 + 6n + 1 weight layers. Option A shortcuts (§3.3) carry no parameters, so ``residual=False`` — the same net
without the shortcuts — has exactly the same parameters: 269,722 for depth 20, 853,018 for depth 56.
"""

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (16, 32, 64)  # filters of the three stages, whose feature maps are 32, 16 and 8 px across


def blocks_per_stage(depth: int) -> int:
    """n of a 6n+2-layer net (3 for depth 20, 9 for depth 56); any other depth is a ValueError."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), not {depth!r}")
    return (depth - 2) // 6


def shortcut_a(x: torch.Tensor, channels: int, stride: int) -> torch.Tensor:
    """Option A shortcut of He et al. 2015 (§3.3): identity, subsampled by ``stride``, new channels zero.

    (B, C, H, W) → (B, ``channels``, H/stride, W/stride): every ``stride``-th pixel — the ones a 3×3 conv of that
    stride with padding 1 centres on — and channels C.. ``channels``-1 padded with zeros.
    """
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    return F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))  # F.pad's pairs run last dim first: (W, H, C)


class BasicBlock(nn.Module):
    """Two 3×3 conv + BatchNorm layers (He et al. 2015, Fig. 2); ``residual`` adds the option A shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int, residual: bool):
        super().__init__()
        # No conv bias: the BatchNorm after each conv subtracts the mean, which would cancel it.
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.stride, self.residual = stride, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.residual:  # the paper adds the shortcut before the second ReLU
            out = out + shortcut_a(x, out.shape[1], self.stride)
        return F.relu(out)

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class CifarResNet(nn.Module):
    """ResNet-``depth`` for CIFAR-10 (He et al. 2015, §4.2), or with ``residual=False`` its plain twin."""

    def __init__(self, depth: int, residual: bool, num_classes: int = 10):
        super().__init__()
        n = blocks_per_stage(depth)
        self.conv = nn.Conv2d(3, WIDTHS[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(WIDTHS[0])
        blocks, in_channels = [], WIDTHS[0]
        for stage, channels in enumerate(WIDTHS):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_channels, channels, stride, residual))
                in_channels = channels
        # Defined in forward order, so named_modules() (and models.weight_layers) list the layers input → output.
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init, Var(W) = 2 / fan_out: the form that keeps the *gradients'* scale through ReLU layers
                # (He et al. 2015b, "Delving Deep", §2.2), as torchvision's ResNet and fb.resnet.torch use it.
                # fan_in would keep the activations' scale instead; the two differ only where the channel count
                # changes (the stem: 27 vs 144; each stage's first conv: 2×), and BatchNorm rescales activations.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # BatchNorm starts at weight 1, bias 0 and the Linear keeps PyTorch's default init, as in torchvision.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.conv(x))))  # (B, 3, 32, 32) → (B, 64, 8, 8)
        return self.fc(x.mean(dim=(2, 3)))  # global average pool → (B, 64) → (B, num_classes)
