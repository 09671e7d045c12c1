"""The training template and progress display: an Avalanche template, plus mixed precision.

`LoopAdditions` is mixed into whichever template the strategy runs on (`template_class`): SupervisedTemplate
by default, DER, ER-ACE, MIR, Cumulative or JointTraining where a strategy asks for one. The loop stays
Avalanche's; it adds what no Avalanche template has:
- mixed precision: autocast (bf16/fp16) and a gradient scaler for fp16, by overriding `forward`, `criterion`,
  `backward` and `optimizer_step`;
- an `experience_ending(strategy)` call to plugins that have one, before the template's own end-of-experience
  work. DER updates its buffer there before any plugin's `after_training_exp` runs, so this is the one point
  where the state at an experience's end can be taken (and put back) before anything acts on it;
- evaluation that leaves the random state as it found it;
- under torchrun, training's forward pass goes through a DDP view of the model (`clbench.training.distributed`), and
  evaluation reads whole test sets (rank 0 evaluates alone).
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

import torch
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from tqdm.auto import tqdm

from clbench.training import checkpoints, distributed


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """`auto` → bf16 where the GPU supports it, fp16 otherwise, none on CPU."""
    if amp == "off" or device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


class LoopAdditions:
    """Mixin for an Avalanche template: optional mixed precision, and the `experience_ending` plugin call."""

    def __init__(self, *, amp: torch.dtype | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.amp = amp
        self.scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
        self._ddp: torch.nn.Module | None = None
        self._ddp_parameters: tuple[int, ...] = ()

    def _autocast(self):
        if self.amp is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def forward(self):
        with self._autocast():
            if self.is_training and distributed.active():  # FiLM is no multi-task module: Avalanche calls model(x)
                return self._data_parallel()(self.mb_x)
            return super().forward()

    def _data_parallel(self) -> torch.nn.Module:
        """The DDP view of the current model, made anew when its parameters change: a strategy replacing the model
        (GDumb), or the question encoder's embedding growing with a new experience's words."""
        parameters = tuple(map(id, self.model.parameters()))
        if self._ddp is None or self._ddp_parameters != parameters:
            self._ddp, self._ddp_parameters = distributed.wrap(self.model), parameters
        return self._ddp

    def _check_distributed_training_compatibility(self) -> bool:
        """Avalanche warns about every plugin not marked `supports_distributed`, which is most of its own. Whether
        a strategy's state agrees across ranks is checked on the state itself instead (`AgreementCheck`)."""
        return True

    def eval(self, *args, **kwargs):
        """Evaluation leaves the random state as it found it (its loaders draw seeds from it): training goes on the
        same whether, and how often, it evaluates (the periodic evaluation early stopping reads included), which is
        also what keeps the ranks of a torchrun job, where rank 0 alone evaluates, drawing the same shuffles."""
        state = checkpoints.rng_state()
        try:
            return super().eval(*args, **kwargs)
        finally:
            checkpoints.set_rng_state(state)

    def make_eval_dataloader(self, **kwargs):
        super().make_eval_dataloader(**kwargs)
        self.dataloader.distributed_sampling = False  # rank 0 evaluates alone, on the whole test set

    def criterion(self):
        return super().criterion().float()

    def backward(self):
        if self.scaler is not None:
            self.scaler.scale(self.loss).backward(retain_graph=self.retain_graph)
        else:
            super().backward()

    def optimizer_step(self):
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            super().optimizer_step()

    def _after_training_exp(self, **kwargs):
        if distributed.active():
            distributed.sync_buffers(self.model)
        for plugin in self.plugins:
            if hasattr(plugin, "experience_ending"):
                plugin.experience_ending(self)
        super()._after_training_exp(**kwargs)


def template_class(base: type[SupervisedTemplate] | None = None) -> type[SupervisedTemplate]:
    """`base` (SupervisedTemplate when None) with `LoopAdditions` mixed in."""
    base = base or SupervisedTemplate
    return type(f"FiLM{base.__name__}", (LoopAdditions, base), {})


FiLMTemplate = template_class()


def make_optimizer(config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam at the first experience's learning rate and the config's weight decay: every training in clbench."""
    return torch.optim.Adam(model.parameters(), lr=config.train.lr_of(0), weight_decay=config.train.weight_decay)


def film_template(
    config,
    model: torch.nn.Module,
    device: torch.device,
    *,
    epochs: int,
    base=None,
    train_mb_size=None,
    optimizer: torch.optim.Optimizer | None = None,
    **extra,
) -> SupervisedTemplate:
    """A template the way every training in clbench is set up: `make_optimizer`'s Adam (or the run's, made before
    its plugins), cross-entropy, the config's batch sizes and mixed precision, no periodic evaluation unless `extra`
    asks for it. `extra` goes to the template (plugins, evaluator, a strategy's template arguments)."""
    return template_class(base)(
        model=model,
        optimizer=optimizer or make_optimizer(config, model),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=train_mb_size or config.train.batch_size,
        train_epochs=epochs,
        eval_mb_size=config.train.eval_batch_size,
        device=device,
        amp=amp_dtype(config.train.amp, device),
        **({"eval_every": -1} | extra),
    )


class ProgressBar(SupervisedPlugin):
    """One bar per epoch and per evaluated experience, with the running loss and samples/s.

    Avalanche's InteractiveLogger prints every metric at every step; this shows only what a person watches.
    Off a terminal (CI, log files) it prints one line per epoch instead of redrawing a bar.
    """

    def __init__(self, experience_names: tuple[str, ...], stream=None) -> None:
        super().__init__()
        self.names = experience_names
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self._bar: tqdm | None = None
        self._desc = ""
        self._loss = 0.0
        self._seen = 0
        self._start = 0.0
        self._epochs = 0

    def _name(self, strategy) -> str:
        i = strategy.experience.current_experience
        return self.names[i] if i < len(self.names) else f"exp{i}"

    def _open(self, desc: str, total: int) -> None:
        self._desc = desc
        self._bar = tqdm(
            total=total,
            desc=desc,
            leave=False,
            file=self.stream,
            disable=not self.interactive,
            dynamic_ncols=True,
        )
        self._loss, self._seen, self._start = 0.0, 0, time.perf_counter()

    def _close(self, line: str | None) -> None:
        if self._bar is not None:
            self._bar.close()
        if line and not self.interactive:
            print(line, file=self.stream, flush=True)

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._epochs = 0

    def before_training_epoch(self, strategy, **kwargs) -> None:
        epoch = strategy.clock.train_exp_epochs + 1
        if not self._epochs:  # a resumed experience trains its remaining epochs after the restored clock's ones
            self._epochs = epoch - 1 + strategy.train_epochs
        self._open(f"train {self._name(strategy)} epoch {epoch}/{self._epochs}", len(strategy.dataloader))

    def after_training_iteration(self, strategy, **kwargs) -> None:
        n = len(strategy.mb_y)
        self._loss += strategy.loss.item() * n
        self._seen += n
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{self._loss / self._seen:.3f}", refresh=False)

    def after_training_epoch(self, strategy, **kwargs) -> None:
        rate = self._seen / max(time.perf_counter() - self._start, 1e-9)
        self._close(f"{self._desc}: loss {self._loss / max(self._seen, 1):.4f}, {rate:.0f} samples/s")

    def before_eval_exp(self, strategy, **kwargs) -> None:
        self._open(f"eval {self._name(strategy)}", len(strategy.dataloader))

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def after_eval_exp(self, strategy, **kwargs) -> None:
        self._close(None)
