"""The visual front-end the paper's main model reads: ResNet-101 up to conv4, frozen, its ImageNet weights (never
downloaded where nothing answers), the pixel statistics both stems share, and the stem over its features."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from clbench.core.errors import ConfigError

if TYPE_CHECKING:
    from clbench.model.film import ModelConfig


# ImageNet statistics: the raw-pixel stem learns its own scale, but both stems see the same normalised input.
_MEAN = (0.485, 0.456, 0.406)


_STD = (0.229, 0.224, 0.225)


def resnet_feature_size(size: tuple[int, int]) -> tuple[int, int]:
    """conv1, max-pool, layer2, layer3: four stride-2 steps of ceil(n / 2) (224 → 14)."""
    height, width = size
    for _ in range(4):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


RESNET_CHANNELS = 1024  # ResNet-101 conv4 (layer3): what the paper's main model reads, 1024×14×14 at 224×224


RESNET_WEIGHTS = ("imagenet", "random")


FEATURE_DTYPE = torch.float16  # how the feature cache stores them (half the bytes; ample for post-ReLU features)


_RANDOM_WEIGHTS_SEED = 0


_RANDOM_RESIDUAL_SCALE = 0.2  # keeps random features at pretrained ones' scale (max ~2)


def normalise_pixels(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 RGB [B, 3, H, W] → the ImageNet-normalised floats both the pixel stem and ResNet-101 read."""
    return (images.float() - mean) / std


def pixel_statistics(device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """ImageNet mean and std on the 0–255 scale, shaped to broadcast over [B, 3, H, W]."""
    mean = torch.tensor(_MEAN, device=device).view(1, 3, 1, 1) * 255
    return mean, torch.tensor(_STD, device=device).view(1, 3, 1, 1) * 255


def resnet_backbone(weights: str) -> nn.Module:
    """ResNet-101 up to conv4 (layer3), frozen, in eval mode: the function the feature cache stores.

    "imagenet" reads torchvision's pretrained file and never downloads it where nothing can be reached (a
    one-line error instead of a hang); "random" is the same architecture at a fixed seed, drawn without touching
    the run's random state, so a machine without the file can run (and test) the whole feature-cache path; each
    residual branch's last batch norm is scaled to 0.2 so its features stay at the pretrained ones' scale.
    """
    from torchvision.models import ResNet101_Weights, resnet101

    if weights == "random":
        from torchvision.models.resnet import Bottleneck

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_RANDOM_WEIGHTS_SEED)
            backbone = resnet101(weights=None)
        for block in backbone.modules():  # unscaled, activations grow past fp16's range over layer3's 23 blocks
            if isinstance(block, Bottleneck):
                nn.init.constant_(block.bn3.weight, _RANDOM_RESIDUAL_SCALE)
    elif weights == "imagenet":
        backbone = resnet101(weights=_imagenet_weights(ResNet101_Weights.IMAGENET1K_V1))
    else:
        raise ConfigError(f"unknown model.stem_weights {weights!r}", f"use {' or '.join(RESNET_WEIGHTS)}")
    return nn.Sequential(*list(backbone.children())[:-3]).eval().requires_grad_(False)


def require_weights(weights: str) -> None:
    """Fail in one line, before anything is built, when the backbone's weights can be neither read nor fetched."""
    if weights == "imagenet":
        from torchvision.models import ResNet101_Weights

        _imagenet_weights(ResNet101_Weights.IMAGENET1K_V1)


def _imagenet_weights(weights):
    """The weights enum when its file is cached or can be downloaded; a one-line error otherwise (a quick probe
    of the host: torchvision's download has no timeout and would hang where nothing answers)."""
    import socket
    from urllib.parse import urlparse

    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not file.is_file():
        host = urlparse(weights.url).hostname or ""
        try:
            socket.create_connection((host, 443), timeout=5).close()
        except OSError:
            raise ConfigError(
                f"ResNet-101 ImageNet weights are not in {file.parent} and {host} cannot be reached",
                f"put {file.name} there, or copy a feature cache made elsewhere (python -m clbench data features), "
                "or run with model.stem=pixels",
            ) from None
    return weights


class Unowned:
    """A value a module uses without owning it: not a submodule or buffer, so in no state dict and no optimiser, and
    shared rather than copied when the model is (LwF's teacher, a strategy's old model)."""

    def __init__(self, value) -> None:
        self.value = value

    def __deepcopy__(self, memo) -> Unowned:
        return self


class ResNetStem(nn.Module):
    """The paper's stem over ResNet-101 conv4 features: 3×3 conv + BN + ReLU to the module width.

    It reads features (1024 channels, from the feature cache), rows of a feature bank (int64: the cache held on the
    training device, `attach_bank`), or pixels, which go through the frozen backbone first (`attach_backbone`).
    The backbone is a fixed function of the image, as the cache is: it is held outside the module tree (`Unowned`),
    so it is neither a parameter (no optimiser, EWC importance or DDP bucket for its 27M frozen weights) nor in
    state dicts and checkpoints, which are the same whichever input the stem reads.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(RESNET_CHANNELS, config.module_dim, kernel_size=3, padding=1),
            nn.BatchNorm2d(config.module_dim),
            nn.ReLU(inplace=True),
        )
        self._backbone: Unowned | None = None
        self._bank: Unowned | None = None

    def attach_backbone(self, backbone: nn.Module) -> None:
        self._backbone = Unowned(backbone)

    def attach_bank(self, bank) -> None:
        """`bank.tensor`: [rows, 1024, h, w] features on the training device, which int64 inputs index."""
        self._bank = Unowned(bank)

    def rows(self, rows: Tensor) -> Tensor:
        if self._bank is None:
            raise RuntimeError("ResNetStem got feature-bank rows but has no bank: attach_bank(...)")
        bank = self._bank.value.tensor
        return bank[rows.to(bank.device)].to(rows.device)

    def features(self, pixels: Tensor) -> Tensor:
        """The backbone's features as the cache stores them: computed in float32 (outside any autocast, as the
        extraction does) and rounded to float16. A run then reads the same numbers with or without the cache: the
        cache is a shortcut, not another experiment."""
        if self._backbone is None:
            raise RuntimeError("ResNetStem got pixels but has no backbone: attach_backbone(resnet_backbone(...))")
        backbone = self._backbone.value
        if next(backbone.parameters()).device != pixels.device:  # moved once, for every copy of the model
            self._backbone.value = backbone = backbone.to(pixels.device, memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(pixels.device.type, enabled=False):
            return backbone(pixels.float()).to(FEATURE_DTYPE).float()

    def forward(self, x: Tensor) -> Tensor:
        if x.size(1) != RESNET_CHANNELS:
            x = self.features(x)
        return self.proj(x)
