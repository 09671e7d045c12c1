"""FiLM (Perez et al. 2018): a question-conditioned residual CNN, laid out like the paper's Figure 3.

question ──► FiLMGenerator (embedding + GRU) ──► (gamma, beta) per channel per block
image ──► stem (raw pixels, frozen ResNet-101 conv4, or the scene graph's state map) ──► FiLMedResBlock × N
      ──► Classifier ──► answer logits
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from avalanche.models import DynamicModule
from avalanche.models.base_model import BaseModel
from torch import Tensor, nn

from clbench.core.errors import ConfigError
from clbench.data.inputs import FiLMInput
from clbench.data.scene_maps import CHANNELS as SCENE_CHANNELS
from clbench.data.vocab import SPECIALS, UNK
from clbench.model.backbone import ResNetStem, normalise_pixels, pixel_statistics, resnet_feature_size

_UNK_INDEX = SPECIALS.index(UNK)


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

    def features(self, x: Tensor) -> Tensor:
        """What the answer layer reads: the pooled map after the hidden FC layer."""
        x = self.proj(_with_coords(x, self.use_coords))
        return self.mlp[:-1](torch.amax(x, dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp[-1](self.features(x))


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


# What the FiLMed network reads (`model.stem`): each builds the stem from the config.
STEMS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "pixels": pixel_stem,
    "resnet101": ResNetStem,
    "scene": _scene_stem,
}


class FiLM(nn.Module, BaseModel):
    """The whole model: generator, stem, FiLMed blocks, classifier.

    An Avalanche `BaseModel`: `get_features` gives what the answer layer reads, which feature-distillation
    methods compare between the old and the new model; `features` keeps those of the latest forward pass, where
    Avalanche's FeatureDistillationPlugin reads them (LFL calls `get_features`).

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
        self.features: Tensor | None = None
        for parameter in self.parameters():
            if parameter.dim() == 4:  # convolution weights
                parameter.register_post_accumulate_grad_hook(_contiguous_grad)

    def __getstate__(self) -> dict:
        """Copies (a plugin's snapshot of the old model) leave out the latest features: they may hang on the graph
        of a training step, which `copy.deepcopy` refuses to copy."""
        return {**super().__getstate__(), "features": None}

    def filmed_network(self) -> list[nn.Module]:
        """Everything the generator conditions: stem, FiLMed blocks and classifier."""
        return [self.stem, self.blocks, self.classifier]

    def forward(self, inputs: FiLMInput) -> Tensor:
        self.features = self.classifier.features(self._filmed(inputs))
        return self.classifier.mlp[-1](self.features)

    def get_features(self, inputs: FiLMInput) -> Tensor:
        return self.classifier.features(self._filmed(inputs))

    def _filmed(self, inputs: FiLMInput) -> Tensor:
        """The FiLMed blocks' output map for the inputs (and `last_film` set to their gammas and betas)."""
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
        return x


def _contiguous_grad(parameter: Tensor) -> None:
    """CPU convolutions may leave channels-last weight gradients; A-GEM and GEM flatten gradients with
    `grad.view(-1)`, which needs them contiguous. Same values, another layout: the arithmetic is unchanged."""
    if parameter.grad is not None and not parameter.grad.is_contiguous():
        parameter.grad = parameter.grad.contiguous()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
