"""The embedded default dataset: CLEVR-style scenes, images and questions, written in the real CLEVR formats.

``generate`` writes a dataset root (``CLEVR_v1.0/`` + ``CLEVR-Humans/``, or ``CLEVR_CoGenT_v1.0/`` for the
cogent world) that the CLEVR readers read unchanged; ``ensure_default_data`` makes the default one on first
use and reuses it afterwards.
"""

from clbench.synth.dataset import (
    MANIFEST_NAME,
    SYNTH_VERSION,
    WORLDS,
    default_data_root,
    ensure_default_data,
    generate,
    is_complete,
    read_manifest,
    resolve_preset,
    split_sizes,
)
from clbench.synth.presets import PRESETS, SynthPreset

__all__ = [
    "MANIFEST_NAME",
    "PRESETS",
    "SYNTH_VERSION",
    "WORLDS",
    "SynthPreset",
    "default_data_root",
    "ensure_default_data",
    "generate",
    "is_complete",
    "read_manifest",
    "resolve_preset",
    "split_sizes",
]
