"""Named sizes of the generated dataset, with the knobs that set how hard it is."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SynthPreset:
    """Everything that decides the generated files, besides the seed (it goes into the manifest whole).

    Difficulty knobs: fewer objects, a higher camera, less ``relation_prob``/``two_hop_prob`` and a larger
    image make the CLEVR split easier; ``humans_novel_share`` sets how much of the humans split is new
    reasoning (extremes, distinct counts, "are all ...") rather than paraphrase.
    """

    name: str
    train_images: int
    val_images: int
    test_images: int
    questions_per_image: int
    min_objects: int
    max_objects: int
    image_width: int
    image_height: int
    humans_train: int
    humans_val: int
    humans_test: int
    # Scene and camera.
    camera_elevation_deg: float = 50.0  # 90 is top-down; lower is more oblique (more overlap)
    min_gap: float = 0.3  # clear ground between two objects, in scene units
    direction_margin: float = 0.45  # every pair is at least this far apart along left/right and front/behind
    max_occlusion: float = 0.3  # share of an object's screen box that nearer objects may cover
    supersample: int = 2  # antialiasing: render this many times larger, then box-filter down
    # Questions.
    relation_prob: float = 0.3  # share of questions built around a relate (one hop)
    two_hop_prob: float = 0.15  # of those, share whose anchor is itself described by a relation
    balance_candidates: int = 8  # candidates per question; the one with the rarest answer so far wins
    humans_novel_share: float = 0.5  # humans split: new kinds of reasoning vs paraphrases of CLEVR questions


PRESETS: dict[str, SynthPreset] = {
    "tiny": SynthPreset(
        name="tiny",
        train_images=40,
        val_images=16,
        test_images=8,
        questions_per_image=6,
        min_objects=3,
        max_objects=6,
        image_width=96,
        image_height=64,
        humans_train=80,
        humans_val=40,
        humans_test=40,
    ),
    "small": SynthPreset(
        name="small",
        train_images=2500,
        val_images=500,
        test_images=100,
        questions_per_image=9,
        min_objects=3,
        max_objects=5,
        image_width=96,
        image_height=64,
        humans_train=3000,
        humans_val=1000,
        humans_test=1000,
        relation_prob=0.2,  # mostly direct questions: learnable in a couple of CPU minutes
        humans_novel_share=0.75,  # mostly new reasoning: fine-tuning on it visibly pulls the model off CLEVR
    ),
}

# The small world's distribution with 40× its training images: what the shipped first-task models are pretrained
# on. Its val and test splits are the small world's own (their scenes and questions are drawn from streams of
# their own), and its first 2,500 training images and their questions are the small world's; the rest are new.
# FiLM needs millions of samples, and on 22,500 questions that many would be memorised, not learned.
PRESETS["small-100k"] = replace(PRESETS["small"], name="small-100k", train_images=100_000)
