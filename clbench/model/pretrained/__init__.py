"""Shipped first-task models: weights trained once by `python -m clbench pretrain`, with a provenance record each.

A record (`NAME.json`, beside `NAME.pt` and its learning curve `NAME.png`) says what the weights are for (the
scenario, the data fingerprint, the model config and the vocabulary of the runs they fit), how they were made
(command, commit, data, samples, wall time, machine) and what they score on the run's own validation set. A run
whose first experience matches a record starts from its weights, as from a cache entry, and says so; the weights
are checked against today's model before they are used, and never loaded into a model they do not fit.

Folders searched: this package's, then those in `CLBENCH_PRETRAINED_PATH` (separated by the OS path separator).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clbench.core.errors import ConfigError
from clbench.core.paths import replace_atomically
from clbench.model.film import model_identity

FOLDER = Path(__file__).resolve().parent
FORMAT = 1
MAX_BYTES = 5 * 1024 * 1024  # a shipped file may not be larger: the package stays small
AUTO, NONE = "auto", "none"


@dataclass(frozen=True)
class Record:
    """One shipped model's record, as read from its JSON."""

    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def weights(self) -> Path:
        return self.path.with_name(self.data["weights"]["file"])

    @property
    def accuracy(self) -> float:
        return float(self.data["validation"]["accuracy"])

    def describe(self) -> str:
        made = self.data["provenance"]
        return (
            f"{self.name} ({100 * self.accuracy:.1f} % on the validation set after "
            f"{made['samples'] / 1e6:.1f}M samples; record {self.path})"
        )


def folders() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("CLBENCH_PRETRAINED_PATH", "").split(os.pathsep) if p]
    return [FOLDER, *extra]


def records() -> list[Record]:
    """Every shipped record, in search order."""
    found = []
    for folder in folders():
        for path in sorted(Path(folder).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise ConfigError(
                    f"shipped model record {path} is unreadable", "restore it from the package, or delete it"
                ) from None
            if isinstance(data, dict) and data.get("format") == FORMAT:
                found.append(Record(path, data))
    return found


def identity(config, scenario: dict[str, Any], bench) -> dict[str, Any]:
    """What a run's first experience is, as records match it: the scenario (its name and what its first experience
    depends on), the data (its fingerprint covers every question file and image), the model, and the vocabulary
    the weights read."""
    return json.loads(
        json.dumps(
            {
                "scenario": scenario,
                "data": bench.fingerprint,
                "max_train_questions": config.data.max_train_questions,
                "model": model_identity(config.model),
                "vocab": bench.vocab.idx_to_token[: bench.first_vocab_size],
                "answers": len(bench.answers),
            },
            default=str,
        )
    )


def find(config, scenario: dict[str, Any], bench) -> Record | None:
    """The record the run starts from: `train.pretrained=auto` takes the first that matches, a name insists on
    that one (one line saying what differs when it does not fit), `none` never starts from one."""
    wanted = config.train.pretrained
    if wanted == NONE:
        return None
    mine = identity(config, scenario, bench)
    known = records()
    if wanted == AUTO:
        return next((r for r in known if r.data["applies_to"] == mine), None)
    named = [r for r in known if r.name == wanted]
    if not named:
        names = ", ".join(r.name for r in known) or "none are installed"
        raise ConfigError(
            f"no shipped model is named {wanted!r}", f"use train.pretrained=auto, none or one of: {names}"
        )
    differ = [k for k in mine if named[0].data["applies_to"].get(k) != mine[k]]
    if differ:
        raise ConfigError(
            f"shipped model {wanted!r} was trained for another first experience ({', '.join(differ)} differ)",
            "run with the settings in its record's applies_to, or train.pretrained=auto/none",
        )
    return named[0]


def load_weights(record: Record, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The record's state dict, in the model's dtypes, after checking it is the file the record describes and that it
    fits today's model (same names and shapes): a model the weights do not fit is refused in one line."""
    try:
        raw = record.weights.read_bytes()
    except OSError:
        raise ConfigError(f"shipped weights {record.weights} are missing", "reinstall clbench") from None
    if hashlib.sha256(raw).hexdigest() != record.data["weights"]["sha256"]:
        raise ConfigError(f"shipped weights {record.weights} do not match their record", "reinstall clbench")
    state = torch.load(record.weights, map_location="cpu", weights_only=True)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or extra or shapes:
        what = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", extra), ("other shapes", shapes))
            if keys
        )
        raise ConfigError(
            f"shipped model {record.name} no longer fits the model code ({what})",
            f"pretrain it again ({record.data['provenance']['command']}), or run with --set train.pretrained=none",
        )
    return {k: state[k].to(expected[k].dtype) for k in expected}


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=FOLDER, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=FOLDER, capture_output=True, text=True
        ).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        cpu = f"{torch.cuda.get_device_name()} (GPU)"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def compact(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """float32 where it fits in MAX_BYTES, else float16 floats (integers kept): the weights as shipped."""
    size = sum(t.numel() * t.element_size() for t in state.values())
    if size < MAX_BYTES - 64 * 1024:
        return state, "float32"
    return {k: t.half() if t.is_floating_point() else t for k, t in state.items()}, "float16"


def write(
    name: str,
    folder: Path,
    *,
    state: dict[str, torch.Tensor],
    applies_to: dict[str, Any],
    provenance: dict[str, Any],
    validation: dict[str, Any],
    curve_png: Path | None,
    dtype: str,
) -> Path:
    """Weights, then the curve, then the record (last: a record names files that exist)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.pt"
    replace_atomically(weights, lambda tmp: torch.save(state, tmp))
    size = weights.stat().st_size
    if size > MAX_BYTES:
        weights.unlink()
        raise ConfigError(f"{name}'s weights take {size / 2**20:.1f} MB", "ship a smaller model (5 MB at most)")
    if curve_png is not None and curve_png.is_file():
        png = curve_png.read_bytes()
        replace_atomically(folder / f"{name}.png", lambda tmp: tmp.write_bytes(png))
    record = {
        "format": FORMAT,
        "applies_to": applies_to,
        "provenance": provenance | {"commit": _commit(), "shipped": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "validation": validation,
        "curve": f"{name}.png",
        "weights": {
            "file": weights.name,
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "bytes": size,
            "dtype": dtype,
        },
    }
    text = json.dumps(record, indent=1) + "\n"
    return replace_atomically(folder / f"{name}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
