"""FiLM (Perez et al. 2018): a question-conditioned residual CNN, laid out like the paper's Figure 3.

question ──► FiLMGenerator (embedding + GRU) ──► (gamma, beta) per channel per block
image ──► stem (raw pixels, frozen ResNet-101 conv4, or the scene graph's state map) ──► FiLMedResBlock × N
      ──► Classifier ──► answer logits
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from avalanche.models import DynamicModule
from torch import Tensor, nn

from clbench.core.errors import ConfigError
from clbench.data.inputs import FiLMInput
from clbench.data.scene_maps import CHANNELS as SCENE_CHANNELS
from clbench.data.vocab import SPECIALS, UNK

_UNK_INDEX = SPECIALS.index(UNK)

# ImageNet statistics: the raw-pixel stem learns its own scale, but both stems see the same normalised input.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Every choice the paper makes, named; the `paper` preset holds the paper's values."""

    image_height: int = 224  # the input's size: pixels, or the scene map's rows and columns with stem=scene
    image_width: int = 224
    # "pixels" (the raw-pixel variant), "resnet101" (frozen conv4 features) or "scene" (the state-description
    # oracle: the scene graph drawn as per-location attributes, see clbench.data.scene_maps)
    stem: str = "pixels"
    # resnet101 only: "imagenet" (torchvision's IMAGENET1K_V1, as in the paper) or "random" (a fixed random init:
    # the feature-cache path on machines without the pretrained file; features that mean nothing)
    stem_weights: str = "imagenet"
    stem_layers: int = 4  # raw-pixel stem: conv(k4, s2, p1) + BN + ReLU, each halving the resolution
    stem_dim: int = 128
    word_embedding_dim: int = 200
    gru_hidden_dim: int = 4096
    num_modules: int = 4
    module_dim: int = 128
    gamma_offset: float = 1.0  # gamma = gamma_offset + predicted: the reference code's gamma baseline
    use_coords: bool = True  # x, y coordinate maps appended before each 1×1 conv
    classifier_proj_dim: int = 512
    classifier_fc_dim: int = 1024
    dropout: float = 0.0
    channels_last: bool = False


def model_identity(config: ModelConfig) -> dict:
    """The model config as cache keys and shipped models read it: fields that cannot matter to a stem are left
    out, so older keys hold."""
    model = asdict(config)
    if config.stem != "resnet101":  # only it has weights to choose: the other stems' keys stay as they were
        model.pop("stem_weights")
    return model


class GrowingEmbedding(DynamicModule):
    """Word embedding that grows when an experience brings new words, keeping every old row.

    Grown through Avalanche's model adaptation: before each experience (training or evaluation) it reads the
    largest token index the experience's dataset uses (its `question_max_token` attribute).
    """

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, dim, padding_idx=0)

    @property
    def num_embeddings(self) -> int:
        return self.embedding.num_embeddings

    def adaptation(self, experience) -> None:  # type: ignore[override]
        dataset = getattr(experience, "dataset", None)
        attribute = getattr(dataset, "question_max_token", None)
        if attribute is not None:
            self.grow_to(int(max(attribute.uniques)) + 1)

    def grow_to(self, num_embeddings: int) -> None:
        old = self.embedding
        if num_embeddings <= old.num_embeddings:
            return
        # Made without its own initialisation, and the new rows drawn from a generator of their own: growing
        # (which may happen at evaluation time, on one rank of a torchrun job only) neither depends on nor
        # changes what the run has drawn from the global RNG.
        new = nn.utils.skip_init(
            nn.Embedding, num_embeddings, old.embedding_dim, padding_idx=0, device=old.weight.device
        )
        rows = torch.randn(
            num_embeddings - old.num_embeddings, old.embedding_dim, generator=self._rows_rng(num_embeddings)
        )
        with torch.no_grad():
            new.weight[: old.num_embeddings] = old.weight
            new.weight[old.num_embeddings :] = rows.to(new.weight)
        new.weight.requires_grad_(old.weight.requires_grad)
        self.embedding = new

    @staticmethod
    def _rows_rng(num_embeddings: int) -> torch.Generator:
        return torch.Generator().manual_seed(num_embeddings)

    def forward(self, tokens: Tensor) -> Tensor:
        # Words newer than this embedding read as <UNK>: what they are to a model that never saw them. Only a
        # copy kept from an earlier experience (LwF's teacher, an old model in a buffer method) meets them.
        return self.embedding(tokens.where(tokens < self.embedding.num_embeddings, _UNK_INDEX))


class FiLMGenerator(nn.Module):
    """Question → (gamma, beta) for every channel of every FiLMed block."""

    def __init__(self, vocab_size: int, config: ModelConfig) -> None:
        super().__init__()
        self.num_modules, self.module_dim, self.gamma_offset = (
            config.num_modules,
            config.module_dim,
            config.gamma_offset,
        )
        self.embed = GrowingEmbedding(vocab_size, config.word_embedding_dim)
        self.gru = nn.GRU(config.word_embedding_dim, config.gru_hidden_dim, batch_first=True)
        self.film = nn.Linear(config.gru_hidden_dim, 2 * config.num_modules * config.module_dim)

    def forward(self, questions: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # The GRU reads left to right, so the padding after the batch's longest question cannot change any state
        # it reads: dropping it saves most of the GRU's time (questions are padded to the longest in the data).
        longest = int(lengths.max()) if not torch.compiler.is_compiling() else questions.size(1)
        states, _ = self.gru(self.embed(questions[:, : max(longest, 1)]))  # [B, T, H]
        last = (lengths.clamp(min=1) - 1).view(-1, 1, 1).expand(-1, 1, states.size(2))
        hidden = states.gather(1, last).squeeze(1)  # the GRU state at each question's last token
        film = self.film(hidden).view(-1, self.num_modules, 2, self.module_dim)
        gammas = film[:, :, 0] + self.gamma_offset  # [B, N, C]
        betas = film[:, :, 1]
        return gammas, betas


def _coordinate_maps(x: Tensor) -> Tensor:
    """Two maps of x and y positions in [-1, 1], so 1×1 convs can reason about where things are."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([xs, ys], dim=1)


def _with_coords(x: Tensor, use_coords: bool) -> Tensor:
    return torch.cat([x, _coordinate_maps(x)], dim=1) if use_coords else x


class FiLMedResBlock(nn.Module):
    """[coords] → 1×1 conv + ReLU → 3×3 conv → BN (no affine) → FiLM → ReLU → + residual."""

    def __init__(self, dim: int, use_coords: bool, dropout: float) -> None:
        super().__init__()
        self.use_coords = use_coords
        self.input_proj = nn.Conv2d(dim + 2 * use_coords, dim, kernel_size=1)
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(dim, affine=False)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        residual = F.relu(self.input_proj(_with_coords(x, self.use_coords)))
        out = self.bn(self.conv(self.dropout(residual)))
        out = F.relu(gamma[:, :, None, None] * out + beta[:, :, None, None])
        return out + residual


class SingleSampleSafeBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that normalises a one-sample training batch with its running statistics, and leaves them be.

    The variance of one value is undefined (PyTorch raises), yet the last minibatch of k·batch + 1 questions or a
    replay batch can hold one sample. Only `forward` differs, so state-dict keys and checkpoints stay the same.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.track_running_stats and x.numel() == x.size(1)):
            return super().forward(x)
        # One value per channel: the evaluation-mode computation, which still passes gradients to the input and
        # to weight and bias, and does not update the running statistics.
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


class Classifier(nn.Module):
    """[coords] → 1×1 conv + BN + ReLU → global max-pool → FC + BN + ReLU → FC over answers."""

    def __init__(self, in_dim: int, num_answers: int, config: ModelConfig) -> None:
        super().__init__()
        self.use_coords = config.use_coords
        self.proj = nn.Sequential(
            nn.Conv2d(in_dim + 2 * config.use_coords, config.classifier_proj_dim, kernel_size=1),
            nn.BatchNorm2d(config.classifier_proj_dim),
            nn.ReLU(inplace=True),
        )
        self.mlp = nn.Sequential(
            nn.Linear(config.classifier_proj_dim, config.classifier_fc_dim),
            SingleSampleSafeBatchNorm1d(config.classifier_fc_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity(),
            nn.Linear(config.classifier_fc_dim, num_answers),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(_with_coords(x, self.use_coords))
        return self.mlp(torch.amax(x, dim=(2, 3)))


def resnet_feature_size(size: tuple[int, int]) -> tuple[int, int]:
    """conv1, max-pool, layer2, layer3: four stride-2 steps of ceil(n / 2) (224 → 14)."""
    height, width = size
    for _ in range(4):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


def stem_output_size(config: ModelConfig) -> tuple[int, int]:
    """Height and width of the feature map the FiLMed blocks see, so a config too small for them is refused early."""
    height, width = max(config.image_height, 0), max(config.image_width, 0)
    if config.stem == "resnet101":
        return resnet_feature_size((height, width))
    if config.stem == "scene":  # the map is drawn at the model's input size
        return height, width
    for _ in range(config.stem_layers):  # conv(k4, s2, p1): floor(n / 2); the final 3×3 conv keeps the size
        height, width = height // 2, width // 2
    return height, width


def pixel_stem(config: ModelConfig) -> nn.Sequential:
    """The paper's raw-pixel stem: conv(k4, s2, p1) + BN + ReLU, repeated (224 → 14 with four layers)."""
    layers: list[nn.Module] = []
    in_dim = 3
    for _ in range(config.stem_layers):
        layers += [
            nn.Conv2d(in_dim, config.stem_dim, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(config.stem_dim),
            nn.ReLU(inplace=True),
        ]
        in_dim = config.stem_dim
    layers += [nn.Conv2d(in_dim, config.module_dim, kernel_size=3, padding=1)]
    layers += [nn.BatchNorm2d(config.module_dim), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _scene_stem(config: ModelConfig) -> nn.Sequential:
    """The paper's stem for precomputed features (3×3 conv + BN + ReLU), over the scene map's attribute channels."""
    return nn.Sequential(
        nn.Conv2d(len(SCENE_CHANNELS), config.module_dim, kernel_size=3, padding=1),
        nn.BatchNorm2d(config.module_dim),
        nn.ReLU(inplace=True),
    )


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


# What the FiLMed network reads (`model.stem`): each builds the stem from the config.
STEMS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "pixels": pixel_stem,
    "resnet101": ResNetStem,
    "scene": _scene_stem,
}


class FiLM(nn.Module):
    """The whole model: generator, stem, FiLMed blocks, classifier.

    `last_film` keeps the (gammas, betas) of the latest forward pass, detached, for the gamma/beta analysis.
    """

    def __init__(self, vocab_size: int, num_answers: int, config: ModelConfig) -> None:
        super().__init__()
        if config.stem not in STEMS:
            raise ConfigError(f"unknown stem {config.stem!r}", f"use model.stem={' or '.join(STEMS)}")
        self.config = config
        self.generator = FiLMGenerator(vocab_size, config)
        self.stem = STEMS[config.stem](config)
        self.blocks = nn.ModuleList(
            FiLMedResBlock(config.module_dim, config.use_coords, config.dropout) for _ in range(config.num_modules)
        )
        self.classifier = Classifier(config.module_dim, num_answers, config)
        mean, std = pixel_statistics()
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.last_film: tuple[Tensor, Tensor] | None = None
        for parameter in self.parameters():
            if parameter.dim() == 4:  # convolution weights
                parameter.register_post_accumulate_grad_hook(_contiguous_grad)

    def filmed_network(self) -> list[nn.Module]:
        """Everything the generator conditions: stem, FiLMed blocks and classifier."""
        return [self.stem, self.blocks, self.classifier]

    def forward(self, inputs: FiLMInput) -> Tensor:
        images = inputs.images
        if images.dtype == torch.int64 and isinstance(self.stem, ResNetStem):  # rows of the feature bank
            images = self.stem.rows(images)
        if images.dtype == torch.uint8 and self.config.stem != "scene":  # pixels; scene maps are on a unit scale
            images = normalise_pixels(images, self.pixel_mean, self.pixel_std)
        else:  # scene maps, or the feature cache's fp16 (autocast casts it to its own precision)
            images = images.float()
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        gammas, betas = self.generator(inputs.questions, inputs.lengths)
        self.last_film = (gammas.detach(), betas.detach())
        x = self.stem(images)
        for i, block in enumerate(self.blocks):
            x = block(x, gammas[:, i], betas[:, i])
        return self.classifier(x)


def _contiguous_grad(parameter: Tensor) -> None:
    """CPU convolutions may leave channels-last weight gradients; A-GEM and GEM flatten gradients with
    `grad.view(-1)`, which needs them contiguous. Same values, another layout: the arithmetic is unchanged."""
    if parameter.grad is not None and not parameter.grad.is_contiguous():
        parameter.grad = parameter.grad.contiguous()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
