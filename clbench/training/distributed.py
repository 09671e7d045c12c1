"""One run on several processes: `torchrun --nproc-per-node N -m clbench run ...`, data-parallel (DDP).

`train.batch_size` stays the run's *global* batch: each of the N ranks trains on batch_size / N questions of
it, and DDP averages the gradients, so a run means the same thing on any number of processes. Rank 0 is the
run's voice: it alone talks to MLflow, evaluates, writes checkpoints and the experience-0 cache, and prints;
what it reads from disk (a checkpoint to resume, the cache) it sends to the other ranks.

Strategy state that must agree across ranks (EWC importances, replay buffers, SI's path integrals) agrees by
construction, and is checked:
- every rank starts from the same seed and the same weights, and DDP keeps the weights equal; batch-norm
  running statistics, each rank's own after the last forward pass, are set to rank 0's at every experience's
  end (`sync_buffers`), before the strategy's hooks read the model;
- every rank sees the whole experience in the strategy's own hooks (importances, buffer selection run over the
  full dataset, not a shard), with the same random draws: the only draws that could differ between ranks are
  rank 0's evaluations, which leave the random state as they found it (`clbench.run.loop._evaluate`), and the
  question encoder's embedding grows without drawing from it;
- the shuffle is drawn from that shared random state (`ShardedRandomSampler`), so the ranks' shards of one epoch
  are disjoint and together are the whole permutation a one-process run would draw;
- at the end of every experience, `AgreementCheck` compares a digest of the weights, optimiser and every tensor
  the strategy's plugins hold, across ranks, and stops the run on the first disagreement.

What differs from one process with the same global batch: batch-norm statistics are each rank's (DDP's
default; `SyncBatchNorm` does not run on CPU), and floating-point sums come in another order.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from avalanche.training.plugins import SupervisedPlugin
from torch.utils.data import DistributedSampler

from clbench.core.errors import ClbenchError, ConfigError

T = TypeVar("T")

# Templates whose training step is Avalanche's plain forward/backward, which `clbench.training.template` routes through
# DDP (None, the default SupervisedTemplate, among them). Others (DER, ER-ACE, MIR) run their own loops.
DATA_PARALLEL_TEMPLATES = ("SupervisedTemplate", "Cumulative", "JointTraining")
_device: str | None = None


def launched() -> bool:
    """Started by torchrun (or any launcher that sets the same variables)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def start(device: str) -> str:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPU); the device this rank trains on."""
    global _device
    if not launched() or active():
        return device
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    dist.init_process_group("nccl" if cuda else "gloo")
    _shard_avalanche_loaders()
    _device = device
    return device


def device() -> str | None:
    """The device `start` chose for this rank, or None outside torchrun."""
    return _device if active() else None


def stop() -> None:
    if active():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int) -> int:
    if batch_size % world():
        raise ConfigError(
            f"train.batch_size {batch_size} does not split evenly over {world()} processes",
            f"give a batch size divisible by {world()} (it is the global batch, shared by all processes)",
        )
    return batch_size // world()


def from_main(read: Callable[[], T]) -> T:
    """`read()` on rank 0, its result (or its one-line error) on every rank."""
    if not active():
        return read()
    payload: Any = None
    if is_main():
        try:
            payload = read()
        except ClbenchError as exc:
            payload = exc
    box = [payload]
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], ClbenchError):
        raise box[0]
    return box[0]


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 does the block first (generating data, say), the others after it, reusing what it made."""
    if active() and not is_main():
        dist.barrier()
    yield
    if active() and is_main():
        dist.barrier()


@contextmanager
def quiet_followers() -> Iterator[None]:
    """Ranks other than 0 print nothing (every line would come N times) but the error that stops one of them."""
    if is_main():
        yield
        return
    with open(os.devnull, "w") as sink:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = sink
        try:
            yield
        except BaseException as exc:
            print(f"rank {rank()}: {type(exc).__name__}: {exc}", file=saved[1])
            raise
        finally:
            sys.stdout, sys.stderr = saved


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank. DDP sends them at each forward pass; after
    the last one each rank has updated its own, and the strategy's end-of-experience hooks must see one model."""
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


class ShardedRandomSampler(DistributedSampler):
    """This rank's share of a permutation drawn afresh each epoch from the global RNG, as `RandomSampler` does.

    Why not DistributedSampler's own shuffle: it seeds with a fixed `seed + epoch`, and Avalanche's loaders make
    a new sampler every epoch without `set_epoch`, so every epoch of every run would see the same order. Drawn
    from the shared random state instead, one process (world 1) takes exactly `RandomSampler`'s permutation, and
    N ranks take disjoint interleaved shares of it: batch k of every rank together is batch k of one process.
    """

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if not self.shuffle:
            order = list(range(n))
        else:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator()
            generator.manual_seed(seed)
            order = torch.randperm(n, generator=generator).tolist()
        total = math.ceil(n / self.num_replicas) * self.num_replicas
        order += order[: total - n]  # pad, as DistributedSampler does, so every rank has as many batches
        return iter(order[self.rank : total : self.num_replicas])


def _shard_avalanche_loaders() -> None:
    """Avalanche's loaders shard with `DistributedSampler` when a process group exists; they get ours instead.

    Avalanche builds every training loader (its own, the replay loader) through one module-level name, so this
    is where the shuffle can be made per-epoch without rewriting the loaders.
    """
    from avalanche.benchmarks.utils import data_loader

    data_loader.DistributedSampler = ShardedRandomSampler


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The DDP view of `model` that training's forward goes through; `model` itself stays what every plugin,
    checkpoint and metric sees (same parameters, same names)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def state_digest(strategy: Any, plugins: list[Any]) -> str:
    """A hash of the weights, the optimiser and every tensor the strategy's `plugins` hold (importances, buffers)."""
    digest = hashlib.sha256()
    for tensor in _tensors([strategy.model.state_dict(), strategy.optimizer.state_dict(), plugins]):
        digest.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _tensors(obj: Any, depth: int = 0, seen: set[int] | None = None) -> Iterator[torch.Tensor]:
    """Tensors inside `obj`: dicts, lists, and the attributes of Avalanche's and clbench's objects, a few levels
    deep (a plugin's buffer dataset and the datasets it wraps are left out: their selection shows in the
    buffer's weights and indices)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _tensors(obj[key], depth + 1, seen)
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item, depth + 1, seen)
    elif type(obj).__module__.startswith(("avalanche.training", "avalanche.models", "clbench")) and hasattr(
        obj, "__dict__"
    ):
        if isinstance(obj, torch.nn.Module | torch.utils.data.Dataset):
            return
        for key in sorted(vars(obj)):
            if key not in ("strategy", "evaluator"):
                yield from _tensors(vars(obj)[key], depth + 1, seen)


class AgreementCheck(SupervisedPlugin):
    """At every experience's end (after the strategy's own hooks), all ranks must hold the same state: the model,
    the optimiser and the strategy's `plugins` (not the run's own: rank 0 alone watches and checkpoints)."""

    def __init__(self, plugins: list[Any]) -> None:
        super().__init__()
        self.plugins = plugins

    def after_training_exp(self, strategy, **kwargs) -> None:
        digests: list[str | None] = [None] * world()
        dist.all_gather_object(digests, state_digest(strategy, self.plugins))
        if len(set(digests)) > 1:
            differing = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RuntimeError(
                f"after experience {strategy.experience.current_experience} the state of rank(s) {differing} "
                "differs from rank 0's: the strategy's state is not kept in step across processes"
            )
